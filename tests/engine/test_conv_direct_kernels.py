"""The direct forward of few-plane convolutions (conv_direct_*) against NumPy and the
im2col path."""

import numpy as np
import pytest
from pymodules.engine import conv as K
from tolerance import assert_reduction_close

DTYPES = [np.float32, np.float64]

# (input shape, output planes, kernel (kH, kW), pads (pH, pW)): LeNet's 6 -> 16 and 6 -> 12,
# pads, SAME, odd planes (a partial vector of lanes), rows crossed by the pixel blocks,
# fewer pixels than a block, an oblong kernel.
CASES = [
    ((3, 6, 14, 14), 16, (5, 5), (0, 0)),
    ((2, 6, 12, 12), 12, (5, 5), (0, 0)),
    ((2, 3, 9, 11), 17, (5, 5), (1, 2)),
    ((2, 2, 7, 6), 9, (5, 5), (-1, -1)),
    ((1, 16, 6, 5), 32, (5, 5), (2, 2)),
    ((2, 4, 5, 5), 24, (5, 5), (0, 0)),
    ((2, 2, 10, 9), 10, (4, 6), (1, 0)),
    # rows in several blocks of one length (27 = 3 x 9 with one vector of planes, 5 x 6 with
    # two, the last overlapping the one before)
    ((1, 2, 8, 30), 9, (4, 4), (0, 0)),
    ((1, 2, 8, 30), 20, (4, 4), (0, 0)),
    # one vector of planes or fewer, output rows of 16 pixels or more (the pixels of a row in
    # the lanes): LeNet's 1 -> 6 with pad 2, rows of one 64-byte vector, of one and a bit
    # (the two vectors overlap), of two and more (the last block overlaps the one before)
    ((2, 1, 28, 28), 6, (5, 5), (2, 2)),
    ((1, 2, 19, 19), 5, (4, 4), (0, 0)),
    ((2, 1, 6, 21), 8, (4, 4), (0, 0)),
    ((1, 3, 9, 45), 3, (5, 5), (1, 1)),
    ((1, 1, 8, 35), 1, (2, 8), (0, 0)),
]


@pytest.fixture(autouse=True, params=["core's vectors", "32-byte vectors"])
def width(request):
    """Every test with the core's widest direct kernels and with the 32-byte ones."""
    K.direct_allow_wide(request.param == "core's vectors")
    yield request.param
    K.direct_allow_wide(True)


def reference(x, w, b, pad):
    """Brute force: every output pixel as a sum over its window (zero outside ``x``)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    if pad == (-1, -1):  # SAME, stride 1: the odd pad at the end
        (pt, pb), (pl, pr) = ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), \
            ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    else:
        (pt, pb), (pl, pr) = (pad[0], pad[0]), (pad[1], pad[1])
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr), np.float64)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh, ow = h + pt + pb - kh + 1, wd + pl + pr - kw + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
    return y + b[:, None, None]


def run(x, w, b, pad):
    size = K.conv_direct_size(x, w, 1, 1, pad[1], pad[0], 1, 1, 1)
    assert size > 0
    lead = x.shape[:-3]
    oh = K.output_size(x.shape[-2], w.shape[2], 1, pad[0])
    ow = K.output_size(x.shape[-1], w.shape[3], 1, pad[1])
    y = np.full(lead + (w.shape[0], oh, ow), np.nan, x.dtype)
    K.conv_direct_update_output(x, y, w, b, np.full(size, np.nan, x.dtype), 1, 1, pad[1],
                                pad[0], 1, 1, 1)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,pad", CASES)
def test_direct_against_reference_and_im2col(xshape, o, k, pad, dtype, rng):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((o, xshape[1]) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    y = run(x, w, b, pad)
    expected = reference(x, w, b, pad)
    taps = xshape[1] * k[0] * k[1]
    magnitude = taps * np.abs(x).max() * np.abs(w).max() + np.abs(b).max()
    assert_reduction_close(y, expected, dtype, taps + 1, magnitude, 1e-11)
    # the im2col path, same arguments
    cols = np.empty((taps, y.shape[2] * y.shape[3]), dtype)
    y2 = np.empty_like(y)
    K.conv_update_output(x, y2, w, b, cols, 1, 1, pad[1], pad[0], 1, 1, 1)
    assert_reduction_close(y, y2, dtype, 2 * taps + 2, 2 * magnitude, 1e-11)
    # one (C, H, W) sample, and no bias
    y1 = run(x[0], w, None, pad)
    assert_reduction_close(y1, expected[0] - b[:, None, None], dtype, taps + 1, magnitude,
                           1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_propagates_nan(dtype, rng):
    x = rng.standard_normal((2, 6, 14, 14)).astype(dtype)
    w = rng.standard_normal((16, 6, 5, 5)).astype(dtype)
    x[1, 2, 7, 7] = np.nan
    y = run(x, w, np.zeros(16, dtype), (0, 0))
    bad = np.zeros((14, 14), bool)
    bad[3:8, 3:8] = True  # the windows that hold the NaN
    assert np.isnan(y[1][:, bad[:10, :10]]).all()
    assert not np.isnan(y[1][:, ~bad[:10, :10]]).any() and not np.isnan(y[0]).any()
    w[3, 0, 0, 0] = np.inf  # inf * 0 is NaN in that plane only
    x[:] = 0
    y = run(x, w, np.zeros(16, dtype), (0, 0))
    assert np.isnan(y[:, 3]).all() and not np.isnan(np.delete(y, 3, axis=1)).any()


def test_direct_size_where_it_runs():
    def size(c, o, k=(5, 5), s=1, d=1, g=1, dtype=np.float32, pad=0, hw=(14, 14)):
        x = np.zeros((2, c) + hw, dtype)
        w = np.zeros((o, c // g) + k, dtype)
        return K.conv_direct_size(x, w, s, s, pad, pad, d, d, g)

    # weight (150, 16) transposed, output (100, 16) transposed, no padded copy
    assert size(6, 16) == 150 * 16 + 100 * 16
    # 12 planes fill 16 float32 lanes (12 doubles: 12); a padded 18x18 copy with pad 2 (room
    # for planes in 64-byte vectors of float32 on any core: 16 lanes)
    assert size(6, 12, pad=2) == 150 * 16 + 196 * 16 + 6 * 18 * 18
    assert size(6, 12, dtype=np.float64) == 150 * 12 + 100 * 12
    assert size(1, 6) == 0  # one vector of planes: the panel is as fast
    assert size(1, 6, dtype=np.float64) > 0
    assert size(6, 16, k=(3, 3)) == 0 and size(6, 16, k=(1, 1)) == 0
    assert size(6, 16, s=2) == 0 and size(6, 16, d=2) == 0 and size(6, 16, g=2) == 0
    assert size(17, 16) == 0 and size(6, 33) == 0


def test_direct_rejects_bad_arguments(rng):
    x = rng.standard_normal((2, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = np.zeros(16, np.float32)
    size = K.conv_direct_size(x, w, 1, 1, 0, 0, 1, 1, 1)
    y = np.zeros((2, 16, 10, 10), np.float32)
    sc = np.zeros(size, np.float32)
    args = (1, 1, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match=rf"scratch has shape \({size - 1},\), expected"):
        K.conv_direct_update_output(x, y, w, b, sc[1:], *args)
    with pytest.raises(TypeError, match="scratch has dtype float64, expected float32"):
        K.conv_direct_update_output(x, y, w, b, sc.astype(np.float64), *args)
    with pytest.raises(TypeError, match="input has dtype float64, expected float32"):
        K.conv_direct_update_output(x.astype(np.float64), y, w, b, sc, *args)
    with pytest.raises(ValueError, match="output has shape"):
        K.conv_direct_update_output(x, y[:, :, 1:].copy(), w, b, sc, *args)
    with pytest.raises(ValueError, match="input has 5 channels, expected 6"):
        K.conv_direct_update_output(x[:, :5].copy(), y, w, b, sc, *args)
    with pytest.raises(ValueError, match="bias has shape"):
        K.conv_direct_update_output(x, y, w, b[1:], sc, *args)
    with pytest.raises(ValueError, match="contiguous"):
        K.conv_direct_update_output(x[:, :, :, ::-1], y, w, b, sc, *args)
    with pytest.raises(ValueError, match="direct forward does not run for a 6 -> 16, 5x5 "
                                         "convolution with strides 2, 2"):
        K.conv_direct_update_output(x, np.zeros((2, 16, 5, 5), np.float32), w, b, sc, 2, 2,
                                    0, 0, 1, 1, 1)
    buf = np.zeros(size + y.size - 1, np.float32)  # overlap by one number
    with pytest.raises(ValueError, match="output overlaps scratch"):
        K.conv_direct_update_output(x, buf[-y.size:].reshape(y.shape), w, b, buf[:size],
                                    *args)
    with pytest.raises(ValueError, match="scratch overlaps input"):
        xb = np.zeros(size + x.size - 1, np.float32)
        K.conv_direct_update_output(xb[-x.size:].reshape(x.shape), y, w, b, xb[:size],
                                    *args)


@pytest.mark.parametrize("xshape,o,k,pad", CASES)
def test_the_numbers_do_not_depend_on_the_vector_width(xshape, o, k, pad, rng):
    """On a core with AVX-512 the float32 direct kernels run in 64-byte vectors: each output
    is the same sum in the same order as in the 32-byte kernels, so the same bits."""
    x = rng.standard_normal(xshape).astype(np.float32)
    w = rng.standard_normal((o, xshape[1]) + k).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    got = []
    for allow in (True, False):
        K.direct_allow_wide(allow)
        got.append(run(x, w, b, pad))
    np.testing.assert_array_equal(*got)
