"""The padding, upsampling and resize kernels against NumPy; their refusals."""

import numpy as np
import pytest
from pymodules.engine import padding as K

DTYPES = [np.float32, np.float64]


def _nan(shape, dtype):
    """An output pre-filled with NaN, so that an element the kernel does not write fails."""
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis,before,after,shape", [
    (1, (2,), (-1,), (2, 5, 3)),
    (2, (1, -2), (0, 3), (2, 3, 4, 5)),
    (1, (0, 1, -1), (1, -1, 2), (2, 3, 4, 5, 2)),  # three axes, inner 2
    (0, (3,), (1,), (0,)),  # an empty axis padded
])
def test_pad_matches_numpy(dtype, axis, before, after, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    ref = x
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        ax = axis + i
        ref = np.take(ref, range(max(-b, 0), ref.shape[ax] - max(-a, 0)), axis=ax)
        widths = [(0, 0)] * ref.ndim
        widths[ax] = (max(b, 0), max(a, 0))
        ref = np.pad(ref, widths, constant_values=-7.0)
    y = _nan(ref.shape, dtype)
    K.pad_update_output(x, y, axis, before, after, -7.0)
    np.testing.assert_array_equal(y, ref)
    g = rng.standard_normal(ref.shape).astype(dtype)
    gi = _nan(x.shape, dtype)
    K.pad_update_grad_input(x, g, gi, axis, before, after)
    # adjoint: <g, pad(x) - pad(0)> == <gi, x>
    y0 = _nan(ref.shape, dtype)
    K.pad_update_output(np.zeros_like(x), y0, axis, before, after, -7.0)
    np.testing.assert_allclose(np.vdot(g, (y - y0).astype(np.float64)),
                               np.vdot(gi.astype(np.float64), x), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_insert_matches_numpy(dtype, rng):
    x = rng.standard_normal((2, 5, 3)).astype(dtype)
    for at in range(6):
        y = _nan((2, 7, 3), dtype)
        K.insert_update_output(x, y, 1, at, 2.5)
        ref = np.concatenate([x[:, :at], np.full((2, 2, 3), 2.5, dtype), x[:, at:]], axis=1)
        np.testing.assert_array_equal(y, ref)
        gi = _nan(x.shape, dtype)
        K.insert_update_grad_input(x, y, gi, 1, at)
        np.testing.assert_array_equal(gi, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis,scales,shape", [
    (2, (2, 2), (2, 3, 4, 5)),
    (2, (3, 1), (2, 3, 4, 5)),
    (1, (2, 3), (2, 4, 5, 3)),
    (1, (4,), (2, 3, 2)),
    (2, (2, 1, 3), (1, 2, 3, 4, 5)),
    (2, (2, 2), (0, 3, 4, 5)),
])
def test_upsample_matches_numpy(dtype, axis, scales, shape, rng):
    x = rng.standard_normal(shape).astype(dtype)
    ref = x
    for i, s in enumerate(scales):
        ref = np.repeat(ref, s, axis=axis + i)
    y = _nan(ref.shape, dtype)
    K.upsample_update_output(x, y, axis, scales)
    np.testing.assert_array_equal(y, ref)
    g = rng.standard_normal(ref.shape)
    gref = g.reshape(shape[:axis] + sum(((n, s) for n, s in zip(shape[axis:], scales,
                                                                 strict=False)), ())
                     + shape[axis + len(scales):])
    gref = gref.sum(axis=tuple(axis + 2 * i + 1 for i in range(len(scales))))
    gi = _nan(shape, dtype)
    K.upsample_update_grad_input(x, g.astype(dtype), gi, axis, scales)
    np.testing.assert_allclose(gi, gref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_resize_writes_every_element_and_is_adjoint(dtype, channels_last, rng):
    shape = (2, 4, 5, 3) if channels_last else (2, 3, 4, 5)
    out = (2, 7, 2, 3) if channels_last else (2, 3, 7, 2)
    x = rng.standard_normal(shape).astype(dtype)
    for align in (False, True):
        y = _nan(out, dtype)
        K.resize_bilinear_update_output(x, y, align, channels_last)
        assert np.isfinite(y).all()
        g = rng.standard_normal(out).astype(dtype)
        gi = _nan(shape, dtype)
        K.resize_bilinear_update_grad_input(x, g, gi, align, channels_last)
        np.testing.assert_allclose(np.vdot(g.astype(np.float64), y),
                                   np.vdot(gi.astype(np.float64), x), rtol=1e-5)


def test_refusals_name_the_argument_and_numbers():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="input has dtype float64, expected float32"):
        K.pad_update_output(x.astype(np.float64), np.zeros((2, 3, 5), np.float32), 2, (1,),
                            (0,), 0.0)
    with pytest.raises(ValueError, match=r"output has shape \(2, 3, 4\), expected size 5 on "
                                         r"axis 2"):
        K.pad_update_output(x, np.zeros((2, 3, 4), np.float32), 2, (1,), (0,), 0.0)
    with pytest.raises(ValueError, match="they differ on axis 1"):
        K.pad_update_output(x, np.zeros((2, 2, 5), np.float32), 2, (1,), (0,), 0.0)
    with pytest.raises(ValueError, match="input is not C-contiguous"):
        K.upsample_update_output(np.zeros((2, 3, 8), np.float32)[:, :, ::2],
                                 np.zeros((2, 3, 8), np.float32), 2, (2,))
    with pytest.raises(ValueError, match="scale factors must be >= 1"):
        K.upsample_update_output(x, np.zeros((2, 3, 0), np.float32), 2, (0,))
    with pytest.raises(ValueError, match="insertion point 5 lies outside"):
        K.insert_update_output(x, np.zeros((2, 3, 5), np.float32), 2, 5, 0.0)
    with pytest.raises(ValueError, match="input must be 4-D"):
        K.resize_bilinear_update_output(x, np.zeros((2, 3, 4), np.float32), False, False)
    with pytest.raises(TypeError, match="before.*tuple"):
        K.pad_update_output(x, x, 2, [1], (0,), 0.0)
    buf = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match="output overlaps input"):
        K.upsample_update_output(buf[:24].reshape(2, 3, 4), buf[12:60].reshape(2, 3, 8), 2, (2,))
