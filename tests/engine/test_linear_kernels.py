"""Linear's kernels against NumPy: both dtypes, vector and batch, empty sizes, refusals."""

import numpy as np
import pytest

from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_scratch_size,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.engine.regularizer import acc_regularization

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _r(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape", [(4,), (1, 4), (5, 4), (0, 4)])
@pytest.mark.parametrize("withBias", [True, False])
def test_against_numpy(dtype, xshape, withBias, rng):
    w, b = _r(rng, (3, 4), dtype), _r(rng, 3, dtype) if withBias else None
    x = _r(rng, xshape, dtype)
    go = _r(rng, xshape[:-1] + (3,), dtype)
    y = np.full(xshape[:-1] + (3,), np.nan, dtype)
    linear_update_output(x, y, w, b)
    expected = x.astype(np.float64) @ w.T + (b if withBias else 0)
    np.testing.assert_allclose(y, expected, rtol=TOL[dtype], atol=TOL[dtype])

    gi = np.full(xshape, np.nan, dtype)
    linear_update_grad_input(x, go, gi, w)
    np.testing.assert_allclose(gi, go.astype(np.float64) @ w, rtol=TOL[dtype], atol=TOL[dtype])

    gw, gb = _r(rng, (3, 4), dtype), _r(rng, 3, dtype) if withBias else None
    gw0, gb0 = gw.copy(), None if gb is None else gb.copy()
    linear_acc_grad_parameters(x, go, gw, gb, 0.5, 2.0)
    go2, x2 = go.reshape(-1, 3).astype(np.float64), x.reshape(-1, 4)
    np.testing.assert_allclose(gw, gw0 + 0.5 * go2.T @ x2, rtol=TOL[dtype], atol=TOL[dtype])
    if withBias:
        np.testing.assert_allclose(gb, gb0 + 2.0 * go2.sum(0), rtol=TOL[dtype], atol=TOL[dtype])


def test_scale_zero_skips(rng):
    x, go = _r(rng, (2, 4), np.float64), _r(rng, (2, 3), np.float64)
    gw, gb = np.full((3, 4), np.nan), np.full(3, np.nan)
    linear_acc_grad_parameters(x, go, gw, gb, 0.0, 0.0)  # nan stays nan: nothing was touched
    assert np.isnan(gw).all() and np.isnan(gb).all()


def test_empty_features(rng):
    y = np.full((2, 3), np.nan)
    linear_update_output(np.zeros((2, 0)), y, np.zeros((3, 0)), None)
    np.testing.assert_array_equal(y, 0)
    b = _r(rng, 3, np.float64)
    linear_update_output(np.zeros((2, 0)), y, np.zeros((3, 0)), b)
    np.testing.assert_array_equal(y, np.tile(b, (2, 1)))


def _args(rng):
    w, b = _r(rng, (3, 4), np.float64), _r(rng, 3, np.float64)
    return _r(rng, (2, 4), np.float64), np.zeros((2, 3)), w, b


@pytest.mark.parametrize("mutate, error, match", [
    (lambda a: a.update(x=np.zeros((2, 5))), ValueError, "input has 5 features, expected 4"),
    (lambda a: a.update(x=np.zeros((2, 2, 4))), ValueError, r"input must be 1-D to 2-D, got 3-D"),
    (lambda a: a.update(x=np.float64(1.0)), TypeError, "input must be a numpy.ndarray"),
    (lambda a: a.update(x=np.zeros(())), ValueError, "got 0-D"),
    (lambda a: a.update(x=np.zeros((2, 4), np.int64)), TypeError,
     "input has dtype int64, expected float64"),
    (lambda a: a.update(x=np.zeros((2, 4), np.float32)), TypeError,
     "input has dtype float32, expected float64"),
    (lambda a: a.update(x=None), TypeError, "input must be a numpy.ndarray, got NoneType"),
    (lambda a: a.update(y=np.zeros((2, 4))), ValueError,
     r"output has shape \(2, 4\), expected \(2, 3\)"),
    (lambda a: a.update(y=np.zeros((3, 2)).T), ValueError, "output is not C-contiguous"),
    (lambda a: a.update(b=np.zeros(4)), ValueError, r"bias has shape \(4,\), expected \(3,\)"),
    (lambda a: a.update(w=np.zeros(12)), ValueError, "weight must be 2-D, got 1-D"),
])
def test_update_output_refusals(mutate, error, match, rng):
    x, y, w, b = _args(rng)
    a = dict(x=x, y=y, w=w, b=b)
    mutate(a)
    with pytest.raises(error, match=match):
        linear_update_output(a["x"], a["y"], a["w"], a["b"])


def test_read_only_and_aliasing(rng):
    x, y, w, b = _args(rng)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="output is read-only"):
        linear_update_output(x, y, w, b)
    sq_w = _r(rng, (4, 4), np.float64)
    x4 = _r(rng, (2, 4), np.float64)
    with pytest.raises(ValueError, match="output overlaps input"):
        linear_update_output(x4, x4, sq_w, None)
    with pytest.raises(ValueError, match="gradInput overlaps gradOutput"):
        linear_update_grad_input(x4, x4, x4, sq_w)
    flat = np.zeros(15)
    gw, gb = flat[:12].reshape(3, 4), flat[11:14]
    with pytest.raises(ValueError, match="gradWeight overlaps gradBias"):
        linear_acc_grad_parameters(x, np.zeros((2, 3)), gw, gb, 1.0, 1.0)
    # Adjacent views of one buffer (as getParameters makes them) are fine.
    linear_acc_grad_parameters(x, np.ones((2, 3)), flat[:12].reshape(3, 4), flat[12:15], 1.0, 1.0)
    np.testing.assert_allclose(flat[12:], 2.0)


def test_grad_shapes_checked(rng):
    x, _, w, _ = _args(rng)
    with pytest.raises(ValueError, match=r"gradOutput has shape \(2, 2\), expected \(2, 3\)"):
        linear_update_grad_input(x, np.zeros((2, 2)), np.zeros((2, 4)), w)
    with pytest.raises(ValueError, match=r"gradInput has shape \(2, 3\), expected \(2, 4\)"):
        linear_update_grad_input(x, np.zeros((2, 3)), np.zeros((2, 3)), w)
    with pytest.raises(ValueError, match=r"gradBias has shape \(2,\), expected \(3,\)"):
        linear_acc_grad_parameters(x, np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(2), 1, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regularization(dtype, rng):
    w = _r(rng, (3, 4), dtype)
    w[0, 0] = 0
    g = _r(rng, (3, 4), dtype)
    expected = g + 0.5 * (0.1 * np.sign(w) + 0.2 * w)
    acc_regularization(w, g, 0.1, 0.2, 0.5)
    np.testing.assert_allclose(g, expected, rtol=TOL[dtype], atol=TOL[dtype])
    with pytest.raises(ValueError, match="gradWeight overlaps weight"):
        acc_regularization(w, w, 0.1, 0.2, 1.0)
    with pytest.raises(ValueError, match=r"gradWeight has shape \(4, 3\), expected \(3, 4\)"):
        acc_regularization(w, np.zeros((4, 3), dtype), 0.1, 0.2, 1.0)


@pytest.mark.parametrize(("n", "k", "m", "transposed"), [
    (16, 128, 128, True), (4, 1024, 256, True), (64, 784, 256, True), (2, 1024, 1024, True),
    (127, 1024, 1024, True), (4, 784, 256, False), (64, 64, 64, False), (128, 1024, 1024, False),
    (32, 256, 10, False)])
def test_scratch_size_rule(n, k, m, transposed, rng):
    x, w = _r(rng, (n, k), np.float32), _r(rng, (m, k), np.float32)
    assert linear_scratch_size(x, w) == (n * m if transposed else 0)
    assert linear_scratch_size(x.astype(np.float64), w.astype(np.float64)) == 0
    assert linear_scratch_size(x[0], w) == 0
    assert linear_scratch_size(x, w[:, :-1]) == 0
    assert linear_scratch_size(x.tolist(), w) == 0


@pytest.mark.parametrize(("n", "k", "m"), [(16, 128, 128), (5, 1024, 256), (64, 784, 256)])
@pytest.mark.parametrize("withBias", [True, False])
def test_transposed_forward_against_numpy(n, k, m, withBias, rng):
    x, w = _r(rng, (n, k), np.float32), _r(rng, (m, k), np.float32)
    b = _r(rng, m, np.float32) if withBias else None
    scratch = np.full(linear_scratch_size(x, w) + 3, np.nan, np.float32)
    assert scratch.size == n * m + 3
    y = np.full((n, m), np.nan, np.float32)
    linear_update_output(x, y, w, b, scratch)
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    plain = np.empty_like(y)
    linear_update_output(x, plain, w, b)
    np.testing.assert_allclose(y, plain, rtol=1e-5, atol=1e-5)


def test_transposed_forward_refusals(rng):
    x, w = _r(rng, (16, 128), np.float32), _r(rng, (128, 128), np.float32)
    y = np.zeros((16, 128), np.float32)
    good = np.zeros(16 * 128, np.float32)
    for scratch, error, match in [
            (np.zeros(16 * 128 - 1, np.float32), ValueError, "scratch has 2047 elements"),
            (np.zeros(16 * 128, np.float64), TypeError, "scratch"),
            (np.zeros((16, 128), np.float32), ValueError, "scratch"),
            (y.reshape(-1), ValueError, "scratch"),
            (x.reshape(-1), ValueError, "scratch"),
            ([0.0] * (16 * 128), TypeError, "scratch")]:
        y[...] = 7
        with pytest.raises(error, match=match):
            linear_update_output(x, y, w, None, scratch)
        assert np.all(y == 7)
    ro = good.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="scratch"):
        linear_update_output(x, y, w, None, ro)
    # where the forward does not run transposed, the scratch is not used at all
    small = _r(rng, (4, 8), np.float32)
    out = np.zeros((4, 128), np.float32)
    linear_update_output(small, out, _r(rng, (128, 8), np.float32), None, np.zeros(0, np.float32))
