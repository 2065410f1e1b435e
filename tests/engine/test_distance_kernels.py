"""Kernels of DotProduct, CosineDistance, PairwiseDistance, MM, MV and Euclidean against NumPy;
outputs start as NaN so that an unwritten element fails; refusals and their messages."""

import numpy as np
import pytest
from pymodules.engine import distance as k

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (4, 6), (0, 3), (3, 0)])
def test_row_wise(shape, dtype, rng):
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    n = shape[0] if len(shape) == 2 else 1
    go = rng.standard_normal(n).astype(dtype)
    a2, b2 = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    a2, b2 = a2.reshape(n, shape[-1]), b2.reshape(n, shape[-1])
    y = _nan(n, dtype)
    k.dot_update_output(a, b, y)
    np.testing.assert_allclose(y, (a2 * b2).sum(1), **_tol(dtype))
    g1, g2 = _nan(shape, dtype), _nan(shape, dtype)
    k.dot_update_grad_input(a, b, go, g1, g2)
    np.testing.assert_allclose(g1.reshape(n, shape[-1]), go[:, None] * b2, **_tol(dtype))
    np.testing.assert_allclose(g2.reshape(n, shape[-1]), go[:, None] * a2, **_tol(dtype))
    na, nb = (a2 * a2).sum(1) + 1e-12, (b2 * b2).sum(1) + 1e-12
    cos = (a2 * b2).sum(1) / np.sqrt(na * nb)
    k.cosine_distance_update_output(a, b, y)
    np.testing.assert_allclose(y, cos, **_tol(dtype))
    k.cosine_distance_update_grad_input(a, b, go, g1, g2)
    w = 1 / np.sqrt(na * nb)
    ref1 = (go * w)[:, None] * (b2 - ((a2 * b2).sum(1) / na)[:, None] * a2)
    np.testing.assert_allclose(g1.reshape(n, shape[-1]), ref1, **_tol(dtype))
    for p in (1, 2, 3):
        d = a2 - b2
        dist = (np.abs(d) ** p).sum(1) ** (1 / p)
        k.pairwise_distance_update_output(a, b, y, p)
        np.testing.assert_allclose(y, dist, **_tol(dtype))
        k.pairwise_distance_update_grad_input(a, b, y, go, g1, g2, p)
        c = go if p == 1 else go / (y.astype(np.float64) + 1e-6) ** (p - 1)
        ref = c[:, None] * (np.sign(d) if p == 1 else d * np.abs(d) ** (p - 2))
        np.testing.assert_allclose(g1.reshape(n, shape[-1]), ref, **_tol(dtype))
        np.testing.assert_array_equal(g2, -g1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("batch, m, kk, n", [(None, 3, 4, 5), (2, 1, 3, 2), (3, 2, 0, 2),
                                             (None, 0, 2, 3), (2, 4, 1, 1)])
def test_mm(batch, m, kk, n, ta, tb, dtype, rng):
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((kk, m) if ta else (m, kk))).astype(dtype)
    b = rng.standard_normal(lead + ((n, kk) if tb else (kk, n))).astype(dtype)
    oa = np.swapaxes(a, -1, -2) if ta else a
    ob = np.swapaxes(b, -1, -2) if tb else b
    y = _nan(lead + (m, n), dtype)
    k.mm_update_output(a, b, y, ta, tb)
    np.testing.assert_allclose(y, oa.astype(np.float64) @ ob, **_tol(dtype))
    g = rng.standard_normal(lead + (m, n)).astype(dtype)
    ga, gb = _nan(a.shape, dtype), _nan(b.shape, dtype)
    k.mm_update_grad_input(a, b, g, ga, gb, ta, tb)
    da = g.astype(np.float64) @ np.swapaxes(ob, -1, -2)
    db = np.swapaxes(oa, -1, -2).astype(np.float64) @ g
    np.testing.assert_allclose(ga, np.swapaxes(da, -1, -2) if ta else da, **_tol(dtype))
    np.testing.assert_allclose(gb, np.swapaxes(db, -1, -2) if tb else db, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("batch, r, c", [(None, 3, 4), (2, 4, 3), (2, 0, 3), (None, 3, 0)])
def test_mv(batch, r, c, trans, dtype, rng):
    lead = () if batch is None else (batch,)
    mat = rng.standard_normal(lead + (r, c)).astype(dtype)
    v = rng.standard_normal(lead + ((r,) if trans else (c,))).astype(dtype)
    om = np.swapaxes(mat, -1, -2) if trans else mat
    y = _nan(lead + (om.shape[-2],), dtype)
    k.mv_update_output(mat, v, y, trans)
    np.testing.assert_allclose(y, (om.astype(np.float64) @ v[..., None])[..., 0], **_tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    gm, gv = _nan(mat.shape, dtype), _nan(v.shape, dtype)
    k.mv_update_grad_input(mat, v, g, gm, gv, trans)
    dm = g.astype(np.float64)[..., :, None] * v[..., None, :]
    np.testing.assert_allclose(gm, np.swapaxes(dm, -1, -2) if trans else dm, **_tol(dtype))
    np.testing.assert_allclose(gv, (np.swapaxes(om, -1, -2).astype(np.float64)
                                    @ g[..., None])[..., 0], **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4,), (3, 4), (0, 4)])
def test_euclidean(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((4, 5)).astype(dtype)
    y = _nan(shape[:-1] + (5,), dtype)
    k.euclidean_update_output(x, y, w)
    d = x.astype(np.float64)[..., :, None] - w
    np.testing.assert_allclose(y, np.sqrt((d * d).sum(-2)), **_tol(dtype))
    go = rng.standard_normal(y.shape).astype(dtype)
    gi, s = _nan(shape, dtype), _nan(5, dtype)
    k.euclidean_update_grad_input(x, y, go, gi, w, s)
    g = go / (y.astype(np.float64) + 1e-7)
    np.testing.assert_allclose(gi, (d * g[..., None, :]).sum(-1), **_tol(dtype))
    gw = np.ones((4, 5), dtype)
    k.euclidean_acc_grad_parameters(x, y, go, gw, w, s, 0.5)
    ref = 1 - 0.5 * (d * g[..., None, :]).reshape(-1, 4, 5).sum(0)
    np.testing.assert_allclose(gw, ref, **_tol(dtype))


def test_nan_propagates():
    a, b = np.array([[1.0, np.nan], [1.0, 2.0]]), np.ones((2, 2))
    y = np.empty(2)
    for f in (k.dot_update_output, k.cosine_distance_update_output):
        f(a, b, y)
        assert np.isnan(y[0]) and not np.isnan(y[1])
    for p in (1, 2, 3):
        k.pairwise_distance_update_output(a, b, y, p)
        assert np.isnan(y[0]) and not np.isnan(y[1])
    out = np.empty((2, 3))
    k.euclidean_update_output(a, out, np.ones((2, 3)))
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()


@pytest.mark.parametrize("call, error, match", [
    (lambda: k.dot_update_output(np.ones((2, 3)), np.ones((2, 4)), np.ones(2)), ValueError,
     r"input 1 has shape \(2, 4\), expected \(2, 3\)"),
    (lambda: k.dot_update_output(np.ones((2, 3)), np.ones((2, 3)), np.ones(3)), ValueError,
     r"output has shape \(3,\), expected \(2,\)"),
    (lambda: k.dot_update_output(np.ones(3), np.ones(3, np.float32), np.ones(1)), TypeError,
     "input 1 has dtype float32, expected float64"),
    (lambda: k.pairwise_distance_update_output(np.ones(3), np.ones(3), np.ones(1), 0),
     ValueError, "norm must be >= 1, got 0"),
    (lambda: k.mm_update_output(np.ones((2, 3)), np.ones((3, 2, 2)), np.ones((2, 2)), 0, 0),
     ValueError, r"input 1 must be 2-D, got 3-D"),
    (lambda: k.mm_update_output(np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 3)), 0, 0),
     ValueError, r"output has shape \(2, 3\), expected \(2, 4\)"),
    (lambda: k.mv_update_output(np.ones((2, 2, 3)), np.ones((3, 3)), np.ones((2, 2)), 0),
     ValueError, "input 0 holds 2 matrices, input 1 3 vectors"),
    (lambda: k.euclidean_update_output(np.ones((2, 3)), np.ones((2, 4)), np.ones((4, 4))),
     ValueError, "input has 3 features, expected 4"),
    (lambda: k.euclidean_update_grad_input(np.ones(4), np.ones(2), np.ones(2), np.ones(4),
                                           np.ones((4, 2)), np.ones(3)),
     ValueError, r"scratch has shape \(3,\), expected \(2,\)"),
])
def test_refusals(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_overlap_is_refused():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match="output overlaps input 0"):
        k.mm_update_output(a, np.ones((3, 3)), a, 0, 0)
    with pytest.raises(ValueError, match="gradInput 0 overlaps gradInput 1"):
        g = np.ones((2, 2, 3))
        k.dot_update_grad_input(a, a, np.ones(2), g[0], g[0])
