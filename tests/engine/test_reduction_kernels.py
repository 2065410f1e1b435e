"""Kernels of LayerNormalization, the reductions and the arithmetic layers: results against
NumPy (outputs pre-filled with NaN, so that an unwritten element fails), empty shapes, and
refusals before any work."""

import numpy as np
import pytest
from pymodules.engine.arithmetic import affine_update_grad_input, affine_update_output
from pymodules.engine.normalization_ln import (
    layernorm_acc_grad_parameters,
    layernorm_param_sums,
    layernorm_update_grad_input,
    layernorm_update_output,
)
from pymodules.engine.reduction import (
    max_update_grad_input,
    max_update_output,
    min_update_output,
    sum_update_grad_input,
    sum_update_output,
)
from pymodules.engine.table import (
    cave_update_grad_input,
    cave_update_output,
    cdiv_update_output,
    cmin_update_output,
)

DTYPES = [np.float32, np.float64]


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((5,), 0), ((3, 300), 1), ((3, 300), 0),
                                             ((2, 3, 4), 1), ((2, 600, 3), 2)])
def test_sum_and_max_against_numpy(dtype, shape, axis, rng):
    x = rng.standard_normal(shape).astype(dtype)
    out_shape = shape[:axis] + shape[axis + 1:]
    y = _nan(out_shape, dtype)
    sum_update_output(x, y, axis, 2.0)
    np.testing.assert_allclose(y, x.astype(np.float64).sum(axis) / 2,
                               rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-5)
    idx = np.full(out_shape, -7, np.intp)
    max_update_output(x, y, idx, axis)
    np.testing.assert_array_equal(y, x.max(axis))
    np.testing.assert_array_equal(idx, x.argmax(axis))
    min_update_output(x, y, idx, axis)
    np.testing.assert_array_equal(idx, x.argmin(axis))
    g = rng.standard_normal(out_shape).astype(dtype)
    gi = _nan(shape, dtype)
    max_update_grad_input(g, gi, idx, axis)
    want = np.zeros(shape, dtype)
    np.put_along_axis(want, np.expand_dims(idx, axis), np.expand_dims(g, axis), axis)
    np.testing.assert_array_equal(gi, want)
    sum_update_grad_input(g, gi, axis, 4.0)
    np.testing.assert_array_equal(gi, np.broadcast_to(np.expand_dims(g / dtype(4), axis), shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_kernels_against_numpy(dtype, rng):
    x = (rng.standard_normal((4, 3, 21)) * 2 + 3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    w, b = rng.standard_normal(21).astype(dtype), rng.standard_normal(21).astype(dtype)
    y, sm, si = _nan(x.shape, dtype), _nan(12, dtype), _nan(12, dtype)
    layernorm_update_output(x, y, w, b, sm, si, 1e-6)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(-1), x64.var(-1)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(sm, mean.ravel(), **tol)
    np.testing.assert_allclose(si, 1 / np.sqrt(var.ravel() + 1e-6), **tol)
    xhat = (x64 - mean[..., None]) / np.sqrt(var[..., None] + 1e-6)
    np.testing.assert_allclose(y, xhat * w + b, **tol)
    gi, sums = _nan(x.shape, dtype), _nan((2, 21), np.float64)
    layernorm_update_grad_input(x, g, gi, w, sm, si, sums)
    gw = g * w
    want = (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True)) \
        / np.sqrt(var[..., None] + 1e-6)
    np.testing.assert_allclose(gi, want, **tol)
    np.testing.assert_allclose(sums, [(g * xhat).sum((0, 1)), g.sum((0, 1))], **tol)
    alone = _nan((2, 21), np.float64)
    layernorm_param_sums(x, g, sm, si, alone)
    np.testing.assert_allclose(alone, sums, rtol=1e-12)
    gwt, gbt = np.ones(21, dtype), np.ones(21, dtype)
    layernorm_acc_grad_parameters(sums, gwt, gbt, 0.5, 0.0)
    np.testing.assert_allclose(gwt, 1 + 0.5 * sums[0], **tol)
    np.testing.assert_array_equal(gbt, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_arithmetic_kernels(dtype, rng):
    a, b, c = (rng.standard_normal((3, 5)).astype(dtype) for _ in range(3))
    y = _nan((3, 5), dtype)
    affine_update_output(a, y, 2.0, 1.0)
    np.testing.assert_array_equal(y, a * dtype(2) + dtype(1))
    affine_update_grad_input(a, y, -3.0)
    np.testing.assert_array_equal(y, a * dtype(-3))
    cdiv_update_output(a, b, y)
    np.testing.assert_array_equal(y, a / b)
    idx = np.full((3, 5), -1, np.int32)
    cmin_update_output([a, b, c], y, idx)
    np.testing.assert_array_equal(y, np.minimum.reduce([a, b, c]))
    np.testing.assert_array_equal(idx, np.argmin(np.stack([a, b, c]), 0))
    cave_update_output([a, b, c], y)
    np.testing.assert_allclose(y, (a + b + c) / 3, rtol=1e-6)
    gs = [_nan((3, 5), dtype) for _ in range(2)]
    cave_update_grad_input(a, gs)
    for gg in gs:
        np.testing.assert_array_equal(gg, a / dtype(2))


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0), (2, 0, 3)])
def test_empty_shapes(shape):
    x = np.empty(shape, np.float32)
    for axis in range(len(shape)):
        out = np.empty(shape[:axis] + shape[axis + 1:], np.float32)
        sum_update_output(x, out, axis)
        np.testing.assert_array_equal(out, 0)
        sum_update_grad_input(out, np.empty(shape, np.float32), axis)
    affine_update_output(x, np.empty_like(x), 2.0, 1.0)
    if shape[-1]:
        n = shape[-1]
        layernorm_update_output(x, np.empty_like(x), np.ones(n, np.float32),
                                np.zeros(n, np.float32), np.empty(0, np.float32),
                                np.empty(0, np.float32), 1e-6)


def test_refusals_before_any_work(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = _nan(3, np.float32)
    with pytest.raises(ValueError, match=r"axis 2 is out of range for input of 2 dimensions"):
        sum_update_output(x, y, 2)
    with pytest.raises(ValueError, match=r"output has shape \(3,\), expected \(4,\) or "
                                         r"\(1, 4\)"):
        sum_update_output(x, y, 0)
    with pytest.raises(TypeError, match="input has dtype float64, expected float32"):
        sum_update_output(x.astype(np.float64), y, 1)
    with pytest.raises(ValueError, match="input is not C-contiguous"):
        sum_update_output(np.asfortranarray(x), y, 1)
    with pytest.raises(ValueError, match="output overlaps input"):
        sum_update_output(x, x.ravel()[:3], 1)
    assert np.isnan(y).all()
    with pytest.raises(TypeError, match="indices has dtype int32"):
        max_update_output(x, y, np.zeros(3, np.int32), 1)
    with pytest.raises(ValueError, match="no values on axis 1 to take the max"):
        max_update_output(np.empty((3, 0), np.float32), y, np.zeros(3, np.intp), 1)
    w, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    s = np.empty(3, np.float32)
    with pytest.raises(ValueError, match="input has 4 values on its last axis, expected 5"):
        layernorm_update_output(x, np.empty_like(x), np.ones(5, np.float32),
                                np.zeros(5, np.float32), s, s.copy(), 1e-6)
    with pytest.raises(ValueError, match=r"saveMean has shape \(2,\), expected \(3,\)"):
        layernorm_update_output(x, np.empty_like(x), w, b, s[:2], s.copy(), 1e-6)
    with pytest.raises(ValueError, match="eps must be > 0"):
        layernorm_update_output(x, np.empty_like(x), w, b, s, s.copy(), 0.0)
    with pytest.raises(ValueError, match="saveMean overlaps saveInvstd"):
        layernorm_update_output(x, np.empty_like(x), w, b, s, s, 1e-6)
    with pytest.raises(ValueError, match=r"sums has shape \(2, 3\), expected \(2, 4\)"):
        layernorm_update_grad_input(x, x, np.empty_like(x), w, s, s.copy(), np.empty((2, 3)))
    with pytest.raises(TypeError, match="sums has dtype float32, expected float64"):
        layernorm_acc_grad_parameters(np.empty((2, 4), np.float32), w.copy(), b.copy(), 1, 1)
    with pytest.raises(ValueError, match="output overlaps input"):
        buf = np.zeros(13, np.float32)
        affine_update_output(buf[:12], buf[1:], 1.0, 1.0)
    affine_update_output(x, x, 1.0, 1.0)  # in place is allowed
    with pytest.raises(ValueError, match=r"input 1 has shape \(3, 5\), expected \(3, 4\)"):
        cave_update_output([x, np.ones((3, 5), np.float32)], np.empty_like(x))
    with pytest.raises(ValueError, match="input is an empty list"):
        cmin_update_output([], np.empty_like(x), np.zeros((3, 4), np.int32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [300, 2100])  # column blocks of 256; beyond the fused width
def test_layernorm_parameter_sums_over_blocks_of_rows(dtype, n, rng):
    rows = 37  # blocks of 16 rows and a partial one
    x = rng.standard_normal((rows, n)).astype(dtype)
    g = rng.standard_normal((rows, n)).astype(dtype)
    w, b = np.ones(n, dtype), np.zeros(n, dtype)
    sm, si = np.empty(rows, dtype), np.empty(rows, dtype)
    layernorm_update_output(x, np.empty_like(x), w, b, sm, si, 1e-6)
    x64 = x.astype(np.float64)
    xhat = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-6)
    want = np.array([(g * xhat).sum(0), g.sum(0)])
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
    fused, alone = _nan((2, n), np.float64), _nan((2, n), np.float64)
    layernorm_update_grad_input(x, g, np.empty_like(x), w, sm, si, fused)
    layernorm_param_sums(x, g, sm, si, alone)
    np.testing.assert_allclose(fused, want, **tol)
    np.testing.assert_allclose(alone, want, **tol)
