"""Element-wise and small parametric layers: CMul, CAdd, Scale, Add, Mul (numbers, gradients,
initialisation, errors)."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

# (size, input shape): element by element, over a batch, per channel, several repeated axes
SHAPES = [((4,), (4,)), ((4,), (3, 4)), ((2, 3), (5, 2, 3)), ((1, 3, 1, 1), (2, 3, 4, 5)),
          ((3, 1, 5), (2, 3, 4, 5)), ((2, 1), (3, 2, 4)), ((6,), (2, 3)), ((1,), (3, 2))]


def _expand(p, shape):
    """NumPy reference of how a parameter applies to an input of ``shape``."""
    if p.size == int(np.prod(shape)):
        return p.reshape(shape)
    q = p.reshape((1,) * (len(shape) - p.ndim) + p.shape)
    return np.broadcast_to(q, shape)


def _sum_back(g, p, shape):
    """NumPy reference of a parameter gradient: g summed where the parameter repeats."""
    if p.size == int(np.prod(shape)):
        return g.reshape(p.shape)
    lead = len(shape) - p.ndim
    q = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(p.shape) if n == 1 and q.shape[i] != 1)
    return q.sum(axis=axes, keepdims=True).reshape(p.shape)


@pytest.mark.parametrize("size, shape", SHAPES)
@pytest.mark.parametrize("cls", [pm.CMul, pm.CAdd, pm.Scale])
def test_jacobians(cls, size, shape, rng):
    m = cls(list(size), dtype=np.float64)
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, shape", SHAPES)
def test_scale_against_numpy(size, shape, dtype, rng):
    m = pm.Scale(size, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    w, b = m.weight.astype(np.float64), m.bias.astype(np.float64)
    tol = dict(rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6 if dtype == np.float32
               else 1e-13)
    y = m.forward(x)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, x * _expand(w, shape) + _expand(b, shape), **tol)
    np.testing.assert_allclose(m.backward(x, go), go * _expand(w, shape), **tol)
    # reductions over at most 120 terms of size ~1
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m.gradWeight, _sum_back(go * x, w, shape), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(m.gradBias, _sum_back(go.astype(np.float64), b, shape),
                               rtol=rtol, atol=rtol)
    # accumulation, with the scales
    m.setScaleW(0.5).setScaleB(2.0)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 1.5 * _sum_back(go * x, w, shape), rtol=rtol,
                               atol=rtol)
    np.testing.assert_allclose(m.gradBias, 3.0 * _sum_back(go.astype(np.float64), b, shape),
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cmul_cadd_against_torch(dtype, torch, rng):
    size, shape = (1, 3, 1, 1), (2, 3, 4, 5)
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    for m in (pm.CMul(size, dtype=dtype), pm.CAdd(size, dtype=dtype)):
        p = torch.from_numpy(m.parameters()[0][0].copy()).requires_grad_()
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = tx * p if isinstance(m, pm.CMul) else tx + p
        ty.backward(torch.from_numpy(go))
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.forward(x), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), **tol)
        np.testing.assert_allclose(m.parameters()[1][0], p.grad.numpy(), **tol)


def test_scale_weight_gradient_reads_the_input(rng):
    """The weight gradient of Scale is sum(gradOutput * input), not of the output."""
    m = pm.Scale([3], dtype=np.float64)
    x, go = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    m.forward(x)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, (go * x).sum(0))
    assert [a.shape for a in m.parameters()[0]] == [(3,), (3,)]
    assert m.parameters()[0][0] is m.weight and m.parameters()[0][1] is m.bias


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 5, 1), (0, 5)])
def test_add(shape, rng):
    m = pm.Add(5, dtype=np.float64)
    x, go = rng.standard_normal(shape), rng.standard_normal(shape)
    b = m.bias.reshape((1,) * (len(shape) - 1) + (5,) if len(shape) < 3 else (1, 5, 1))
    np.testing.assert_allclose(m.forward(x), x + b)
    np.testing.assert_array_equal(m.backward(x, go), go)
    np.testing.assert_allclose(m.gradBias, go.reshape(-1, 5).sum(0) if shape != (2, 5, 1)
                               else go.sum(axis=(0, 2)))
    if shape[0]:
        assert_jacobian(m, x, wrt="input")
        assert_jacobian(m, x, wrt="parameters")


def test_add_of_one_is_a_scalar(rng):
    m = pm.Add(1, dtype=np.float64)
    x, go = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(m.forward(x), x + m.bias[0])
    m.backward(x, go)
    np.testing.assert_allclose(m.gradBias, [go.sum()])
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (2, 3, 4)])
def test_mul(shape, dtype, rng):
    m = pm.Mul(dtype=dtype)
    assert m.weight.shape == (1,) and -1 <= m.weight[0] <= 1
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(m.forward(x), m.weight[0] * x, rtol=1e-6)
    np.testing.assert_allclose(m.backward(x, go), m.weight[0] * go, rtol=1e-6)
    np.testing.assert_allclose(m.gradWeight, [np.sum(x.astype(np.float64) * go)], rtol=1e-5,
                               atol=1e-5)
    if dtype == np.float64:
        assert_jacobian(m, x, wrt="input")
        assert_jacobian(m, x, wrt="parameters")


def test_default_init_and_layout():
    big = pm.CMul([20, 20], dtype=np.float64)
    assert big.weight.shape == (20, 20) and big.bias is None
    assert 0.045 < np.abs(big.weight).max() <= 1 / 20
    c = pm.CAdd([2, 50])
    assert c.weight is None and c.bias.shape == (2, 50) and np.abs(c.bias).max() <= 0.1
    s = pm.Scale([100])
    assert np.abs(s.weight).max() <= 0.1 and np.abs(s.bias).max() <= 0.1
    a = pm.Add(400)
    assert a.bias.shape == (400,) and 0.045 < np.abs(a.bias).max() <= 0.05
    for m, n in ((big, 1), (c, 1), (s, 2), (a, 1), (pm.Mul(), 1)):
        assert len(m.parameters()[0]) == n
    assert pm.CMul(3).size == (3,)
    assert str(pm.CMul([1, 3])).endswith("([1, 3])")
    assert str(pm.Add(4)).endswith("(4)")


def test_cmul_regularizer(rng):
    m = pm.CMul([3], wRegularizer=pm.L2Regularizer(0.5), dtype=np.float64)
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    m.forward(x)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, (x * go).sum(0) + 0.5 * m.weight)
    c = pm.CAdd([3], bRegularizer=pm.L1Regularizer(0.1), dtype=np.float64)
    c.forward(x)
    c.backward(x, go)
    np.testing.assert_allclose(c.gradBias, go.sum(0) + 0.1 * np.sign(c.bias))


def test_frozen_parameters_do_not_learn(rng):
    m = pm.Scale([3], dtype=np.float64).freeze()
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    m.forward(x)
    np.testing.assert_allclose(m.backward(x, go), go * m.weight)
    assert not m.gradWeight.any() and not m.gradBias.any()


def test_strided_input(rng):
    m = pm.CMul([4], dtype=np.float64)
    x = rng.standard_normal((3, 8))[:, ::2]
    np.testing.assert_allclose(m.forward(x), x * m.weight)


@pytest.mark.parametrize("make, x, match", [
    (lambda: pm.CMul([3]), np.zeros((2, 4), np.float32),
     r"weight of shape \(3,\) does not apply to input of shape \(2, 4\): size 3 against 4 "
     r"on dimension 1"),
    (lambda: pm.CAdd([2, 3]), np.zeros((5,), np.float32),
     r"bias of shape \(2, 3\) does not apply to input of shape \(5,\): it needs 2 or 3 "
     r"dimensions"),
    (lambda: pm.Scale([3]), np.zeros((2, 3), np.float64),
     "input has dtype float64, expected float32"),
    (lambda: pm.Add(3), np.zeros((2, 4), np.float32),
     r"bias of shape \(3,\) does not apply to input of shape \(2, 4\)"),
])
def test_refusals_name_the_module(make, x, match):
    error = TypeError if "dtype" in match else ValueError
    assert_refusal_names_the_module(make, x, match, error)


def test_non_array_input_is_refused():
    for m in (pm.Add(3), pm.Mul()):
        with pytest.raises(TypeError, match="input must be a numpy.ndarray, got list"):
            m.forward([1.0, 2.0, 3.0])


@pytest.mark.parametrize("make", [lambda: pm.CMul([0]), lambda: pm.CAdd([]),
                                  lambda: pm.Scale([2, -1])])
def test_bad_sizes(make):
    with pytest.raises(ValueError, match="size must be one or more sizes > 0"):
        make()
    with pytest.raises(TypeError, match="size must be an integer"):
        pm.CMul([2.5])
