"""Products and distances: DotProduct, CosineDistance, PairwiseDistance, MM, MV, Euclidean."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from tolerance import abs_gemm, assert_reduction_close

import pymodules as pm

ROW_SHAPES = [(5,), (3, 5), (1, 4)]


def _pair(rng, shape, dtype=np.float64):
    return [rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)]


def _cos(a, b):
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return (a * b).sum(1) / np.sqrt(((a * a).sum(1) + 1e-12) * ((b * b).sum(1) + 1e-12))


def _pdist(a, b, p):
    return (np.abs(np.atleast_2d(a) - np.atleast_2d(b)) ** p).sum(1) ** (1 / p)


ROW_MODULES = [
    (lambda dtype: pm.DotProduct(dtype=dtype), lambda a, b: (np.atleast_2d(a) *
                                                            np.atleast_2d(b)).sum(1)),
    (lambda dtype: pm.CosineDistance(dtype=dtype), _cos),
    (lambda dtype: pm.PairwiseDistance(dtype=dtype), lambda a, b: _pdist(a, b, 2)),
    (lambda dtype: pm.PairwiseDistance(1, dtype=dtype), lambda a, b: _pdist(a, b, 1)),
    (lambda dtype: pm.PairwiseDistance(3, dtype=dtype), lambda a, b: _pdist(a, b, 3)),
]


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("make, ref", ROW_MODULES)
def test_row_wise_jacobian_and_numpy(make, ref, shape, rng):
    m = make(np.float64)
    x = _pair(rng, shape)
    y = m.forward(x)
    n = shape[0] if len(shape) == 2 else 1
    assert y.shape == (n,)
    np.testing.assert_allclose(y, ref(*x), rtol=1e-12, atol=1e-12)
    gi = m.backward(x, np.ones(n))
    assert [g.shape for g in gi] == [shape, shape]
    # the 1e-6 PairwiseDistance adds to the distance in its gradient is below the tolerance
    assert_jacobian(m, x, wrt="input", tol=1e-5 if "Pairwise" not in str(m) else 3e-5)


@pytest.mark.parametrize("make, ref", ROW_MODULES)
def test_row_wise_float32(make, ref, rng):
    m = make(np.float32)
    x = _pair(rng, (4, 6), np.float32)
    y = m.forward(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref(*[a.astype(np.float64) for a in x]), rtol=1e-5, atol=1e-5)
    g = m.backward(x, np.ones(4, np.float32))
    assert all(a.dtype == np.float32 for a in g)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_wise_against_torch(dtype, torch, rng):
    x1, x2 = _pair(rng, (6, 5), dtype)
    go = rng.standard_normal(6).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)
    fs = [(pm.DotProduct(), lambda a, b: (a * b).sum(1)),
          (pm.CosineDistance(), lambda a, b: torch.nn.functional.cosine_similarity(a, b, 1)),
          (pm.PairwiseDistance(2), lambda a, b: torch.norm(a - b, 2, 1)),
          (pm.PairwiseDistance(3), lambda a, b: torch.norm(a - b, 3, 1))]
    for m, f in fs:
        t1 = torch.from_numpy(x1.copy()).requires_grad_()
        t2 = torch.from_numpy(x2.copy()).requires_grad_()
        ty = f(t1, t2)
        ty.backward(torch.from_numpy(go))
        np.testing.assert_allclose(m.forward([x1, x2]), ty.detach().numpy(), **tol)
        g1, g2 = m.backward([x1, x2], go)
        # PairwiseDistance divides by the distance + 1e-6: a relative 1e-6 against torch
        gtol = tol if "Pairwise" not in str(m) else dict(rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g1, t1.grad.numpy(), **gtol)
        np.testing.assert_allclose(g2, t2.grad.numpy(), **gtol)


def test_pairwise_norm_one_gradient_is_the_sign():
    m = pm.PairwiseDistance(1, dtype=np.float64)
    x = [np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])]
    m.forward(x)
    g1, g2 = m.backward(x, np.array([2.0]))
    np.testing.assert_array_equal(g1, [-2.0, 0.0, 2.0])
    np.testing.assert_array_equal(g2, [2.0, 0.0, -2.0])


MM_CASES = [(ta, tb, batch) for ta in (False, True) for tb in (False, True) for batch in (0, 2)]


def _mm_inputs(rng, ta, tb, batch, dtype=np.float64, m=3, k=4, n=5):
    a = rng.standard_normal(((batch,) if batch else ()) + ((k, m) if ta else (m, k)))
    b = rng.standard_normal(((batch,) if batch else ()) + ((n, k) if tb else (k, n)))
    return [a.astype(dtype), b.astype(dtype)]


def _t(a, flag):
    return np.swapaxes(a, -1, -2) if flag else a


@pytest.mark.parametrize("ta, tb, batch", MM_CASES)
def test_mm(ta, tb, batch, rng):
    m = pm.MM(ta, tb, dtype=np.float64)
    x = _mm_inputs(rng, ta, tb, batch)
    np.testing.assert_allclose(m.forward(x), _t(x[0], ta) @ _t(x[1], tb), rtol=1e-12)
    assert_jacobian(m, x, wrt="input")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta, tb, batch", MM_CASES)
def test_mm_against_torch(ta, tb, batch, dtype, torch, rng):
    m = pm.MM(ta, tb)
    a, b = _mm_inputs(rng, ta, tb, batch, dtype)
    go = rng.standard_normal(((batch,) if batch else ()) + (3, 5)).astype(dtype)
    ta_, tb_ = torch.from_numpy(a.copy()).requires_grad_(), torch.from_numpy(b.copy())
    tb_.requires_grad_()
    ty = _t(ta_, ta) @ _t(tb_, tb)
    ty.backward(torch.from_numpy(go))
    oa, ob = _t(a, ta), _t(b, tb)
    assert_reduction_close(m.forward([a, b]), ty.detach().numpy(), dtype, 4,
                           2 * abs_gemm(oa, ob))
    ga, gb = m.backward([a, b], go)
    assert_reduction_close(ga, ta_.grad.numpy(), dtype, 5, 2 * np.abs(ta_.grad.numpy()) + 1)
    assert_reduction_close(gb, tb_.grad.numpy(), dtype, 3, 2 * np.abs(tb_.grad.numpy()) + 1)


def test_mm_empty_inner_size_gives_zeros():
    m = pm.MM(dtype=np.float64)
    y = m.forward([np.zeros((3, 0)), np.zeros((0, 2))])
    np.testing.assert_array_equal(y, np.zeros((3, 2)))


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("batch", [0, 3])
def test_mv(trans, batch, rng):
    m = pm.MV(trans, dtype=np.float64)
    mat = rng.standard_normal(((batch,) if batch else ()) + (4, 3))
    v = rng.standard_normal(((batch,) if batch else ()) + ((4,) if trans else (3,)))
    y = m.forward([mat, v])
    expected = np.einsum("...rc,...r->...c" if trans else "...rc,...c->...r", mat, v)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert_jacobian(m, [mat, v], wrt="input")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mv_against_torch(dtype, torch, rng):
    mat = rng.standard_normal((2, 4, 3)).astype(dtype)
    v = rng.standard_normal((2, 3)).astype(dtype)
    go = rng.standard_normal((2, 4)).astype(dtype)
    tm, tv = torch.from_numpy(mat.copy()).requires_grad_(), torch.from_numpy(v.copy())
    tv.requires_grad_()
    ty = torch.bmm(tm, tv.unsqueeze(2)).squeeze(2)
    ty.backward(torch.from_numpy(go))
    m = pm.MV()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward([mat, v]), ty.detach().numpy(), **tol)
    gm, gv = m.backward([mat, v], go)
    np.testing.assert_allclose(gm, tm.grad.numpy(), **tol)
    np.testing.assert_allclose(gv, tv.grad.numpy(), **tol)


@pytest.mark.parametrize("shape", [(4,), (3, 4)])
def test_euclidean_jacobians(shape, rng):
    m = pm.Euclidean(4, 5, dtype=np.float64)
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input", tol=1e-5)
    assert_jacobian(m, x, wrt="weight", tol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_euclidean_against_numpy(dtype, rng):
    m = pm.Euclidean(6, 3, dtype=dtype)
    assert m.weight.shape == (6, 3) and np.abs(m.weight).max() <= 1 / np.sqrt(6)
    x = rng.standard_normal((5, 6)).astype(dtype)
    go = rng.standard_normal((5, 3)).astype(dtype)
    w = m.weight.astype(np.float64)
    d = x.astype(np.float64)[:, :, None] - w[None]          # (n, k, m)
    y = np.sqrt((d * d).sum(1))
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward(x), y, **tol)
    g = go / (y + 1e-7)
    np.testing.assert_allclose(m.backward(x, go), (d * g[:, None, :]).sum(2), **tol)
    np.testing.assert_allclose(m.gradWeight, -(d * g[:, None, :]).sum(0), **tol)


def test_euclidean_against_torch(torch, rng):
    m = pm.Euclidean(6, 3, dtype=np.float64)
    x = rng.standard_normal((5, 6))
    go = rng.standard_normal((5, 3))
    tw = torch.from_numpy(m.weight.T.copy()).requires_grad_()
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.cdist(tx, tw)
    ty.backward(torch.from_numpy(go))
    np.testing.assert_allclose(m.forward(x), ty.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy().T, rtol=1e-6, atol=1e-6)


def test_euclidean_scale_and_accumulation(rng):
    m = pm.Euclidean(3, 2, dtype=np.float64)
    x, go = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    m.forward(x)
    m.backward(x, go)
    once = m.gradWeight.copy()
    m.setScaleW(0.5)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 1.5 * once)
    m.zeroGradParameters()
    m.setScaleW(0.0)
    m.backward(x, go)
    assert not m.gradWeight.any()


@pytest.mark.parametrize("make, x, match", [
    (lambda: pm.DotProduct(), [np.zeros((2, 3)), np.zeros((2, 4))],
     r"input 1 has shape \(2, 4\), expected \(2, 3\)"),
    (lambda: pm.CosineDistance(), [np.zeros((2, 3, 1)), np.zeros((2, 3, 1))],
     r"input 0 must be 1-D to 2-D, got 3-D"),
    (lambda: pm.PairwiseDistance(), [np.zeros(3)], r"input has 1 entries, expected at least 2"),
    (lambda: pm.MM(), [np.zeros((2, 3)), np.zeros((4, 2))],
     r"matrix sizes do not match: input 0 \(2, 3\) against input 1 \(4, 2\)"),
    (lambda: pm.MM(), [np.zeros((2, 2, 3)), np.zeros((3, 3, 2))],
     r"input 0 holds 2 matrices, input 1 3"),
    (lambda: pm.MV(), [np.zeros((2, 3)), np.zeros(2)],
     r"matrix and vector sizes do not match: input 0 \(2, 3\) against input 1 \(2,\)"),
    (lambda: pm.MV(), [np.zeros((2, 3)), np.zeros((1, 3))], r"input 1 must be 1-D"),
    (lambda: pm.Euclidean(3, 2), np.zeros((2, 4), np.float32),
     r"input has 4 features, expected 3"),
])
def test_refusals_name_the_module(make, x, match):
    assert_refusal_names_the_module(make, x, match)


def test_not_a_table_is_refused():
    with pytest.raises(TypeError, match=r"^DotProduct@\w+: input must be a table"):
        pm.DotProduct().forward(np.zeros(3))


def test_constructor_checks():
    with pytest.raises(ValueError, match="norm must be >= 1"):
        pm.PairwiseDistance(0)
    with pytest.raises(ValueError, match="sizes must be > 0"):
        pm.Euclidean(0, 2)
    assert str(pm.MM(True)).endswith("(transA=True, transB=False)")
    assert str(pm.Euclidean(3, 2)).endswith("(3, 2)")
