"""Kernels of the noise layers, Masking, the copying shape modules and RReLU: results against
NumPy into outputs pre-filled with NaN, empty sizes, and refusals with their messages."""

import numpy as np
import pytest
from pymodules.engine import activation, noise, shape_ops

DTYPES = [np.float32, np.float64]


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ys", [((2, 1, 3), (2, 4, 3)), ((1,), (5,)),
                                   ((3, 1, 1, 2), (3, 2, 4, 2)), ((1, 1), (3, 4)),
                                   ((2, 3), (2, 3)), ((1, 3), (0, 3))])
def test_expand_against_numpy(xs, ys, dtype, rng):
    x = rng.standard_normal(xs).astype(dtype)
    y = _nan(ys, dtype)
    shape_ops.expand_update_output(x, y)
    np.testing.assert_array_equal(y, np.broadcast_to(x, ys))
    g = rng.standard_normal(ys).astype(dtype)
    gi = _nan(xs, dtype)
    shape_ops.expand_update_grad_input(g, gi)
    axes = tuple(i for i, (a, b) in enumerate(zip(xs, ys, strict=True)) if a != b)
    np.testing.assert_allclose(gi, g.astype(np.float64).sum(axis=axes, keepdims=True),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim", [((4, 5), 0), ((4, 5), 1), ((2, 3, 4), 1), ((0, 2), 0)])
def test_reverse_and_index_against_numpy(shape, dim, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y = _nan(shape, dtype)
    shape_ops.reverse_update_output(x, y, dim)
    np.testing.assert_array_equal(y, np.flip(x, dim))
    if shape[dim] == 0:
        return
    ix = np.array([shape[dim] - 1, 0, shape[dim] - 1], np.int64)
    out_shape = shape[:dim] + (3,) + shape[dim + 1:]
    y = _nan(out_shape, dtype)
    shape_ops.index_update_output(x, ix, y, dim)
    np.testing.assert_array_equal(y, np.take(x, ix, axis=dim))
    gi = _nan(shape, dtype)
    shape_ops.index_update_grad_input(ix, y, gi, dim)
    want = np.zeros(shape)
    np.add.at(np.moveaxis(want, dim, 0), ix, np.moveaxis(y.astype(np.float64), dim, 0))
    np.testing.assert_allclose(gi, want, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spatial_dropout_kernel_fills_the_mask(dtype, rng):
    x = rng.standard_normal((4, 6, 3)).astype(dtype)
    y, r = _nan(x.shape, dtype), _nan((4, 1, 3), dtype)
    noise.spatial_dropout_update_output(x, y, r, 0.5, True, 12345)
    assert set(np.unique(r)) <= {0, 1}
    np.testing.assert_array_equal(y, x * r)
    y2, r2 = _nan(x.shape, dtype), _nan((4, 1, 3), dtype)
    noise.spatial_dropout_update_output(x, y2, r2, 0.5, True, 12345)
    np.testing.assert_array_equal(r2, r)  # one seed, one mask
    noise.spatial_dropout_update_output(x, y, None, 0.5, False, 0)
    np.testing.assert_allclose(y, 0.5 * x)


def test_counter_based_draws_are_uniform_and_independent():
    x = -np.ones(200000)
    y, r = np.empty_like(x), np.empty_like(x)
    activation.rrelu_update_output(x, y, r, 0.0, 1.0, True, 99)
    assert abs(r.mean() - 0.5) < 5 * np.sqrt(1 / 12 / r.size)
    assert abs(np.corrcoef(r[:-1], r[1:])[0, 1]) < 5 / np.sqrt(r.size)
    z = np.empty_like(x)
    noise.gaussian_noise_update_output(np.zeros_like(x), z, 1.0, True, 99)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / np.sqrt(z.size)
    assert abs(np.corrcoef(z, r)[0, 1]) < 5 / np.sqrt(z.size)


def test_masking_kernel(rng):
    x = rng.standard_normal((2, 3, 4))
    x[1, 1] = 2.0
    y = _nan(x.shape, np.float64)
    noise.masking_update_output(x, y, 2.0)
    np.testing.assert_array_equal(y, np.where((x == 2.0).all(-1, keepdims=True), 0, x))


def test_empty_sizes_run_nothing():
    for f, args in [
        (noise.masking_update_output, (np.empty((0, 3)), np.empty((0, 3)), 0.0)),
        (noise.spatial_dropout_update_output, (np.empty((0, 3, 2)), np.empty((0, 3, 2)),
                                               np.empty((0, 1, 2)), 0.5, True, 1)),
        (noise.gaussian_dropout_update_output, (np.empty(0), np.empty(0), np.empty(0), 0.5,
                                                True, 1)),
        (shape_ops.expand_update_output, (np.empty((1, 0)), np.empty((3, 0)))),
        (activation.rrelu_update_output, (np.empty(0), np.empty(0), np.empty(0), 0.1, 0.2,
                                          True, 1)),
    ]:
        f(*args)


def _refusals():
    x = np.zeros((2, 3))
    y = np.zeros((2, 3))
    ro = np.zeros((2, 3))
    ro.flags.writeable = False
    big = np.zeros((2, 6))
    return [
        (shape_ops.expand_update_output, (x, np.zeros((2, 4))), ValueError,
         r"input of shape \(2, 3\) does not expand to output's \(2, 4\)"),
        (shape_ops.expand_update_output, (x, np.zeros((2, 3, 1))), ValueError,
         "input has 2 dimensions, output 3"),
        (shape_ops.expand_update_output, (x, ro), ValueError, "output is read-only"),
        (shape_ops.expand_update_output, (x, x), ValueError, "output overlaps input"),
        (shape_ops.expand_update_output, (x, np.zeros((2, 3), np.float32)), TypeError,
         "output has dtype float32, expected float64"),
        (shape_ops.reverse_update_output, (big[:, ::2], y, 0), ValueError,
         "input is not C-contiguous"),
        (shape_ops.reverse_update_output, (big[:, :3].reshape(-1)[:6].reshape(2, 3), big[:, 3:]
                                           .copy(), 2), ValueError, "dimension 2 is out of "
                                                                    "range"),
        (shape_ops.reverse_update_output, (big[:, :].reshape(-1)[1:7].reshape(2, 3),
                                           big.reshape(-1)[:6].reshape(2, 3), 0), ValueError,
         "output overlaps input"),
        (shape_ops.index_update_output, (x, np.array([0, 3], np.int64), np.zeros((2, 2)), 1),
         ValueError, r"index 3 \(position 1\) is out of range for dimension 1 of size 3"),
        (shape_ops.index_update_output, (x, np.array([0, 1], np.int32), np.zeros((2, 2)), 1),
         TypeError, "indices has dtype int32, expected int64"),
        (shape_ops.index_update_output, (x, np.array([0], np.int64), np.zeros((2, 2)), 1),
         ValueError, r"output has shape \(2, 2\), expected \(2, 1\)"),
        (noise.spatial_dropout_update_output, (x, y, np.zeros((2, 2)), 0.5, True, 1),
         ValueError, r"noise has shape \(2, 2\), which does not broadcast"),
        (noise.spatial_dropout_update_output, (x, y, np.zeros(3), 0.5, True, 1),
         ValueError, r"noise has shape \(3,\), which does not broadcast"),
        (noise.spatial_dropout_update_output, (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)),
                                               np.zeros((1, 3, 1)), 0.5, True, 1),
         ValueError, "does not broadcast to the input's"),
        (noise.spatial_dropout_update_output, (x, y, None, 1.5, False, 1), ValueError,
         r"the drop probability must lie in \[0, 1\], got 1.5"),
        (noise.spatial_dropout_update_output, (x, y, None, 0.5, True, 1), TypeError,
         "noise must be a numpy.ndarray, got NoneType"),
        (noise.gaussian_dropout_update_output, (x, y, np.zeros(6), 0.5, True, 1), ValueError,
         r"noise has shape \(6,\), expected \(2, 3\)"),
        (noise.gaussian_noise_update_output, (x, y, -1.0, True, 1), ValueError,
         "the standard deviation must be >= 0"),
        (noise.masking_update_output, (np.zeros(3), np.zeros(3), 0.0), ValueError,
         "input must be 2-D to 64-D, got 1-D"),
        (activation.rrelu_update_output, (x, y, None, 0.1, 0.2, True, 1), TypeError,
         "noise must be a numpy.ndarray"),
        (activation.rrelu_update_output, (x, y, np.zeros((3, 2)), 0.1, 0.2, True, 1),
         ValueError, r"noise has shape \(3, 2\), expected \(2, 3\)"),
        (activation.rrelu_update_output, (x, y, None, 0.3, 0.2, False, 1), ValueError,
         "0 <= lower <= upper"),
        (activation.rrelu_update_grad_input, (x, y, np.zeros((2, 3)), np.zeros(6), 0.1, 0.2,
                                              True), ValueError,
         r"the forward's noise has \(6,\)"),
    ]


@pytest.mark.parametrize("f,args,error,match", _refusals())
def test_refusals(f, args, error, match):
    with pytest.raises(error, match=match):
        f(*args)
