"""Kernels of CMul, CAdd, Scale, Add and Mul against NumPy; refusals and their messages."""

import numpy as np
import pytest
from pymodules.engine import elementwise as k

DTYPES = [np.float32, np.float64]
CASES = [((4,), (4,)), ((4,), (3, 4)), ((1, 3, 1, 1), (2, 3, 4, 5)), ((3, 1, 5), (2, 3, 4, 5)),
         ((2, 1, 1), (2, 7, 1)), ((6,), (2, 3)), ((1,), (3, 2)), ((1, 1), (1, 1)),
         ((3,), (0, 3)), ((2, 1), (0, 2, 4))]


def _ref(p, shape):
    if p.size == int(np.prod(shape)):
        return p.reshape(shape).astype(np.float64)
    return np.broadcast_to(p.reshape((1,) * (len(shape) - p.ndim) + p.shape), shape)


def _sum_back(g, p, shape):
    if p.size == int(np.prod(shape)):
        return g.reshape(p.shape)
    lead = len(shape) - p.ndim
    q = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(p.shape) if n == 1 and q.shape[i] != 1)
    return q.sum(axis=axes, keepdims=True).reshape(p.shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, shape", CASES)
def test_match_numpy(size, shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal(size).astype(dtype)
    b = rng.standard_normal(size).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for wa, ba in ((w, b), (w, None), (None, b), (None, None)):
        y = np.full(shape, np.nan, dtype)
        k.scale_update_output(x, y, wa, ba)
        expected = x.astype(np.float64)
        if wa is not None:
            expected = expected * _ref(wa, shape)
        if ba is not None:
            expected = expected + _ref(ba, shape)
        np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
    gi = np.full(shape, np.nan, dtype)
    k.scale_update_grad_input(go, gi, w)
    np.testing.assert_allclose(gi, go * _ref(w, shape), rtol=tol, atol=tol)
    k.scale_update_grad_input(go, gi, None)
    np.testing.assert_array_equal(gi, go)
    gw, gb = np.ones(size, dtype), np.ones(size, dtype)
    k.scale_acc_grad_parameters(x, go, gw, gb, 0.5, 2.0)
    x64, go64 = x.astype(np.float64), go.astype(np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gw, 1 + 0.5 * _sum_back(x64 * go64, w, shape), rtol=rtol,
                               atol=rtol)
    np.testing.assert_allclose(gb, 1 + 2.0 * _sum_back(go64, b, shape), rtol=rtol, atol=rtol)


def test_zero_scale_skips_and_none_gradients(rng):
    x = rng.standard_normal((3, 4))
    gw, gb = np.zeros(4), np.zeros(4)
    k.scale_acc_grad_parameters(x, x, gw, gb, 0.0, 1.0)
    assert not gw.any() and gb.any()
    k.scale_acc_grad_parameters(x, x, None, None, 1.0, 1.0)
    k.scale_acc_grad_parameters(x, x, gw, None, 1.0, 1.0)
    np.testing.assert_allclose(gw, (x * x).sum(0))


def test_nan_propagates():
    x = np.array([[1.0, np.nan], [2.0, 3.0]])
    y = np.empty_like(x)
    k.scale_update_output(x, y, np.array([2.0, 1.0]), np.array([0.0, 1.0]))
    assert np.isnan(y[0, 1]) and y[1, 0] == 4.0
    gw = np.zeros(1)
    k.scale_acc_grad_parameters(x.reshape(-1), np.ones(4), gw, None, 1.0, 0.0)
    assert np.isnan(gw[0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: k.scale_update_output(np.ones((2, 3)), np.ones((2, 3)), np.ones(4), None),
     ValueError, r"weight of shape \(4,\) does not apply to input of shape \(2, 3\): size 4 "
                 r"against 3 on dimension 1"),
    (lambda: k.scale_update_output(np.ones((2, 3)), np.ones((2, 3)), np.ones((1, 1, 1, 3)),
                                   None),
     ValueError, r"needs 4 or 5 dimensions"),
    (lambda: k.scale_update_output(np.ones((2, 3)), np.ones((3, 2)), np.ones(3), None),
     ValueError, r"output has shape \(3, 2\), expected \(2, 3\)"),
    (lambda: k.scale_update_output(np.ones((2, 3)), np.ones((2, 3)), np.ones(3), np.ones(2)),
     ValueError, r"bias has shape \(2,\), expected \(3,\) \(the shape of weight\)"),
    (lambda: k.scale_update_output(np.ones((2, 3)), np.ones((2, 3), np.float32), None, None),
     TypeError, "output has dtype float32, expected float64"),
    (lambda: k.scale_update_output(np.ones((2, 6))[:, ::2], np.ones((2, 3)), None, None),
     ValueError, "input is not C-contiguous"),
    (lambda: k.scale_update_output([1.0], np.ones(1), None, None),
     TypeError, "input must be a numpy.ndarray, got list"),
    (lambda: k.scale_update_grad_input(np.ones(3), np.ones(4), None),
     ValueError, r"gradOutput has shape \(3,\), expected \(4,\)"),
    (lambda: k.scale_acc_grad_parameters(np.ones(3), np.ones(3), np.ones(2), None, 1, 1),
     ValueError, r"gradWeight of shape \(2,\) does not apply to input of shape \(3,\)"),
])
def test_refusals(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_overlap_and_read_only_are_refused():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="output overlaps input"):
        k.scale_update_output(x, x, np.ones(3), None)
    w = np.ones(3)
    with pytest.raises(ValueError, match="gradWeight overlaps input"):
        k.scale_acc_grad_parameters(w, np.ones(3), w, None, 1.0, 0.0)
    y = np.ones((2, 3))
    y.flags.writeable = False
    with pytest.raises(ValueError, match="output is read-only"):
        k.scale_update_output(x, y, None, None)
