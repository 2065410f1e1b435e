"""The convolution kernels against NumPy references (patch sums and their adjoints)."""

import numpy as np
import pytest
from pymodules.engine import conv as K
from tolerance import assert_reduction_close

DTYPES = [np.float32, np.float64]
TOL64 = 1e-11


def close(actual, expected, dtype, k, *factors, extra=0.0):
    """``actual`` is a sum of at most ``k`` products of entries of ``factors`` (arrays or
    numbers), plus terms no larger than ``extra``; float64 to TOL64."""
    top = [float(np.max(np.abs(f), initial=0)) for f in factors]
    magnitude = k * float(np.prod(top)) + float(np.max(np.abs(extra), initial=0))
    assert_reduction_close(actual, expected, dtype, k + 1, magnitude, TOL64)


# -- references -------------------------------------------------------------------------------

def pads(size, k, s, p, d):
    """(lead, trail, out) by brute force over window starts, independent of the helper."""
    span = d * (k - 1) + 1
    if p == -1:
        out = -(-size // s)
        total = max(0, (out - 1) * s + span - size)
        return total // 2, total - total // 2, out
    out = len(range(-p, size + p - span + 1, s))
    return p, p, out


def patches(x, kh, kw, s, lead, out, d):
    """(N, C, kh, kw, oH, oW): the taps of every window, zero outside ``x``."""
    (pt, pl), (oh, ow) = lead, out
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + pt + d[0] * kh + s[0] * oh, w + pl + d[1] * kw + s[1] * ow), x.dtype)
    xp[:, :, pt:pt + h, pl:pl + w] = x
    p = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            p[:, :, i, j] = xp[:, :, i * d[0]:i * d[0] + s[0] * oh:s[0],
                               j * d[1]:j * d[1] + s[1] * ow:s[1]]
    return p


def conv_ref(x, w, s, lead, out, d, g):
    """grid = weight @ im2col(image), per group."""
    p = patches(x, w.shape[2], w.shape[3], s, lead, out, d)
    m, cg = w.shape[0] // g, w.shape[1]
    return np.concatenate([
        np.einsum("ncijhw,ocij->nohw", p[:, r * cg:(r + 1) * cg], w[r * m:(r + 1) * m])
        for r in range(g)], axis=1)


def conv_adjoint_ref(y, w, image_shape, s, lead, d, g):
    """image = col2im(weight.T @ grid): scatter every tap back."""
    n, _, oh, ow = y.shape
    c, h, wd = image_shape
    kh, kw = w.shape[2:]
    (pt, pl) = lead
    xp = np.zeros((n, c, h + pt + d[0] * kh + s[0] * oh, wd + pl + d[1] * kw + s[1] * ow))
    m, cg = w.shape[0] // g, w.shape[1]
    for r in range(g):
        taps = np.einsum("nohw,ocij->ncijhw", y[:, r * m:(r + 1) * m], w[r * m:(r + 1) * m])
        for i in range(kh):
            for j in range(kw):
                xp[:, r * cg:(r + 1) * cg, i * d[0]:i * d[0] + s[0] * oh:s[0],
                   j * d[1]:j * d[1] + s[1] * ow:s[1]] += taps[:, :, i, j]
    return xp[:, :, pt:pt + h, pl:pl + wd]


def weight_grad_ref(x, y, wshape, s, lead, d, g):
    """d<grid, y>/dweight with grid = conv(image x)."""
    p = patches(x, wshape[2], wshape[3], s, lead, y.shape[2:], d)
    m, cg = wshape[0] // g, wshape[1]
    return np.concatenate([
        np.einsum("nohw,ncijhw->ocij", y[:, r * m:(r + 1) * m], p[:, r * cg:(r + 1) * cg])
        for r in range(g)], axis=0)


# -- output size ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 5, 7, 8, 28])
@pytest.mark.parametrize("k,s,p,d", [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 0, 1), (2, 3, 0, 1),
                                     (5, 2, 2, 1), (3, 1, 0, 2), (3, 2, -1, 1), (4, 3, -1, 1)])
def test_output_size_floor_and_same(size, k, s, p, d):
    assert K.output_size(size, k, s, p, d) == pads(size, k, s, p, d)[2]


@pytest.mark.parametrize("size,k,s,p,expected", [
    (5, 2, 2, 0, 3), (6, 2, 2, 0, 3), (7, 3, 2, 1, 4), (3, 2, 4, 0, 1), (8, 3, 3, 1, 3)])
def test_output_size_ceil(size, k, s, p, expected):
    # ceil((size + 2p - k) / s) + 1, less a window starting past the input and leading pad
    assert K.output_size(size, k, s, p, 1, True) == expected


def test_output_size_too_small_and_bad_window():
    assert K.output_size(2, 3) == 0
    assert K.output_size(2, 3, 1, 1) == 2
    with pytest.raises(ValueError, match="bad window"):
        K.output_size(5, 0)
    assert K.full_output_size(4, 3, 2, 1, 1) == 8


# -- SpatialConvolution kernels ---------------------------------------------------------------

CASES = [  # (N, C, H, W), O, (kh, kw), stride (h, w), pad (h, w), dilation (h, w), groups
    ((2, 4, 9, 8), 6, (3, 2), (2, 1), (1, 0), (1, 1), 2),
    ((1, 3, 7, 7), 5, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((3, 2, 10, 11), 4, (3, 3), (1, 2), (2, 1), (2, 3), 1),
    ((2, 3, 6, 7), 2, (3, 3), (2, 2), (-1, -1), (1, 1), 1),
    ((2, 2, 5, 5), 3, (5, 5), (1, 1), (0, 0), (1, 1), 1),
    ((0, 2, 5, 5), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # unit strides, rows as wide as the image's: im2col copies shifted planes
    ((2, 4, 7, 6), 6, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    ((2, 3, 8, 9), 4, (3, 5), (1, 1), (1, 2), (2, 1), 1),
    ((2, 2, 6, 5), 3, (3, 3), (1, 1), (-1, -1), (1, 1), 1),
    ((1, 2, 4, 3), 2, (2, 3), (1, 1), (3, 1), (1, 1), 1),
    # few planes (no BLAS): whole 4-plane blocks over 16-pixel runs, then a tail
    ((2, 3, 8, 4), 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 3, 6, 6), 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),
]


def _geometry(xshape, k, s, p, d):
    (lh, _, oh), (lw, _, ow) = (pads(xshape[2], k[0], s[0], p[0], d[0]),
                                pads(xshape[3], k[1], s[1], p[1], d[1]))
    return (lh, lw), (oh, ow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,s,p,d,g", CASES)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_against_reference(xshape, o, k, s, p, d, g, dtype, batched, rng):
    if not batched:  # a single (C, H, W) sample, checked as the batch of one
        xshape = (1,) + xshape[1:]
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((o, xshape[1] // g) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    lead, (oh, ow) = _geometry(xshape, k, s, p, d)
    args = (s[1], s[0], p[1], p[0], d[1], d[0], g)
    cols = np.full((xshape[1] * k[0] * k[1], oh * ow), np.nan, dtype)
    y = np.full((xshape[0], o, oh, ow), np.nan, dtype)
    xs, ys = (x, y) if batched else (x[0], y[0])
    K.conv_update_output(xs, ys, w, b, cols, *args)
    expected = conv_ref(x, w, s, lead, (oh, ow), d, g) + b[:, None, None]
    patch = xshape[1] // g * k[0] * k[1]
    close(y, expected, dtype, patch, x, w, extra=b)

    go = rng.standard_normal(y.shape).astype(dtype)
    gi = np.full_like(x, np.nan)
    K.conv_update_grad_input(xs, go if batched else go[0], gi if batched else gi[0], w, cols,
                             *args)
    close(gi, conv_adjoint_ref(go, w, xshape[1:], s, lead, d, g), dtype,
          o // g * k[0] * k[1], go, w)

    gw, gb = np.ones_like(w), np.ones_like(b)
    K.conv_acc_grad_parameters(xs, go if batched else go[0], gw, gb, cols, *args, 0.5, 2.0)
    pixels = xshape[0] * oh * ow
    close(gw, 1 + 0.5 * weight_grad_ref(x, go, w.shape, s, lead, d, g), dtype, pixels,
          0.5, x, go, extra=1.0)
    close(gb, 1 + 2.0 * go.sum(axis=(0, 2, 3)), dtype, pixels, 2.0, go, extra=1.0)


def test_conv_scale_zero_skips_and_no_bias(rng):
    x = rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    y = np.empty((2, 3, 3, 3))
    cols = np.empty((18, 9))
    K.conv_update_output(x, y, w, None, cols, 1, 1, 0, 0, 1, 1, 1)
    np.testing.assert_allclose(y, conv_ref(x, w, (1, 1), (0, 0), (3, 3), (1, 1), 1))
    gw, gb = np.full_like(w, 7.0), np.full(3, 7.0)
    K.conv_acc_grad_parameters(x, y, gw, gb, cols, 1, 1, 0, 0, 1, 1, 1, 0.0, 0.0)
    assert (gw == 7).all() and (gb == 7).all()
    K.conv_acc_grad_parameters(x, y, gw, None, cols, 1, 1, 0, 0, 1, 1, 1, 1.0, 1.0)
    assert not (gw == 7).all()


def _conv_args(dtype=np.float64):
    x = np.zeros((2, 3, 6, 6), dtype)
    return x, np.zeros((2, 4, 4, 4), dtype), np.zeros((4, 3, 3, 3), dtype), \
        np.zeros(4, dtype), np.zeros((27, 16), dtype)


def test_conv_rejects_bad_arguments():
    x, y, w, b, cols = _conv_args()
    geo = (1, 1, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="input has 2 channels, expected 3"):
        K.conv_update_output(x[:, :2].copy(), y, w, b, cols, *geo)
    with pytest.raises(ValueError, match=r"input is 2x6, smaller than the 3x3 kernel"):
        K.conv_update_output(x[:, :, :2].copy(), y, w, b, cols, *geo)
    with pytest.raises(ValueError, match=r"input must be 3-D to 4-D"):
        K.conv_update_output(x[0, 0], y, w, b, cols, *geo)
    with pytest.raises(TypeError, match="input has dtype float32, expected float64"):
        K.conv_update_output(x.astype(np.float32), y, w, b, cols, *geo)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        K.conv_update_output(x.tolist(), y, w, b, cols, *geo)
    with pytest.raises(ValueError, match="not C-contiguous"):
        K.conv_update_output(np.zeros((2, 3, 6, 12))[..., ::2], y, w, b, cols, *geo)
    with pytest.raises(ValueError, match="output has shape"):
        K.conv_update_output(x, y[:, :3].copy(), w, b, cols, *geo)
    with pytest.raises(ValueError, match="columns has shape"):
        K.conv_update_output(x, y, w, b, cols[:20].copy(), *geo)
    with pytest.raises(ValueError, match="bias has shape"):
        K.conv_update_output(x, y, w, b[:3], cols, *geo)
    with pytest.raises(ValueError, match="read-only"):
        ro = y.copy()
        ro.flags.writeable = False
        K.conv_update_output(x, ro, w, b, cols, *geo)
    with pytest.raises(ValueError, match="strides must be >= 1"):
        K.conv_update_output(x, y, w, b, cols, 0, 1, 0, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="pads must be >= 0"):
        K.conv_update_output(x, y, w, b, cols, 1, 1, -1, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="groups do not divide"):
        K.conv_update_output(x, y, w, b, cols, 1, 1, 0, 0, 1, 1, 3)


def test_conv_rejects_aliasing():
    x, y, w, b, cols = _conv_args()
    geo = (1, 1, 0, 0, 1, 1, 1)
    buf = np.zeros(x.size + y.size)
    with pytest.raises(ValueError, match="output overlaps input"):
        K.conv_update_output(buf[:x.size].reshape(x.shape), buf[:y.size].reshape(y.shape), w,
                             b, cols, *geo)
    with pytest.raises(ValueError, match="columns overlaps input"):
        big = np.zeros(cols.size)
        K.conv_update_output(big[:x.size].reshape(x.shape), y, w, b, big.reshape(cols.shape),
                             *geo)
    with pytest.raises(ValueError, match="gradInput overlaps gradOutput"):
        g = np.zeros(x.size)
        K.conv_update_grad_input(x, g[:y.size].reshape(y.shape), g.reshape(x.shape), w, cols,
                                 *geo)
    with pytest.raises(ValueError, match="gradWeight overlaps gradBias"):
        K.conv_acc_grad_parameters(x, y, w, w.reshape(-1)[:4], cols, *geo, 1.0, 1.0)



# The transposed forward: float32, one group, patches of >= 128 numbers, and >= 24 output
# planes or grids of <= 64 pixels (>= 10 planes).
TRANSPOSED = [  # (N, C, H, W), O, (kh, kw), stride (h, w), pad (h, w), dilation (h, w)
    ((3, 16, 9, 7), 24, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 15, 11, 13), 25, (3, 3), (2, 2), (1, 1), (1, 1)),
    ((2, 10, 7, 9), 24, (3, 5), (1, 2), (2, 0), (1, 1)),
    ((2, 15, 9, 8), 24, (3, 3), (2, 2), (-1, -1), (1, 1)),
    ((2, 16, 10, 11), 24, (3, 3), (1, 1), (2, 1), (2, 1)),
    ((2, 16, 10, 11), 24, (3, 3), (1, 2), (1, 3), (1, 2)),
    ((2, 16, 6, 6), 12, (3, 3), (1, 1), (0, 0), (1, 1)),
    ((1, 16, 5, 4), 24, (3, 3), (1, 1), (1, 1), (1, 1)),
    ((0, 16, 5, 5), 24, (3, 3), (1, 1), (1, 1), (1, 1)),
]


def _transposed_args(xshape, o, k, s, p, d, dtype, rng, bias=True):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((o, xshape[1]) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    lead, (oh, ow) = _geometry(xshape, k, s, p, d)
    args = (s[1], s[0], p[1], p[0], d[1], d[0], 1)
    cols = np.full((xshape[1] * k[0] * k[1], oh * ow), np.nan, dtype)
    y = np.full((xshape[0], o, oh, ow), np.nan, dtype)
    expected = conv_ref(x, w, s, lead, (oh, ow), d, 1)
    if bias:
        expected += b[:, None, None]
    return x, w, b, cols, y, args, expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,s,p,d", TRANSPOSED)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transposed_forward_against_reference(xshape, o, k, s, p, d, dtype, bias, rng):
    x, w, b, cols, y, args, expected = _transposed_args(xshape, o, k, s, p, d, dtype, rng,
                                                        bias)
    size = K.conv_scratch_size(x, w, *args)
    if dtype == np.float32:
        assert size > 0  # the case reaches the transposed forward
    else:
        assert size == 0  # float64 keeps the plain one (its GEMM is not faster transposed)
    scratch = np.full(size, np.nan, dtype)
    K.conv_update_output(x, y, w, b, cols, *args, scratch)
    patch = xshape[1] * k[0] * k[1]
    close(y, expected, dtype, patch, x, w, extra=b if bias else 0.0)
    plain = np.full_like(y, np.nan)
    K.conv_update_output(x, plain, w, b, cols, *args)
    close(y, plain, dtype, patch, 2.0, x, w, extra=2 * b if bias else 0.0)  # both within one
    if xshape[0] == 1:  # the same sample as (C, H, W)
        assert K.conv_scratch_size(x[0], w, *args) == size
        single = np.full_like(y[0], np.nan)
        K.conv_update_output(x[0], single, w, b, cols, *args, scratch)
        close(single, expected[0], dtype, patch, x, w, extra=b if bias else 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,s,p,d", TRANSPOSED)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transposed_weight_gradient_against_reference(xshape, o, k, s, p, d, dtype, bias,
                                                           rng):
    x, w, _, cols, y, args, _ = _transposed_args(xshape, o, k, s, p, d, dtype, rng)
    go = rng.standard_normal(y.shape).astype(dtype)
    lead = _geometry(xshape, k, s, p, d)[0]
    gw0 = rng.standard_normal(w.shape).astype(dtype)
    gb0 = rng.standard_normal(o).astype(dtype)
    gw, gb = gw0.copy(), gb0.copy() if bias else None
    size = K.conv_scratch_size(x, w, *args)
    assert (size > 0) == (dtype == np.float32)
    scratch = np.full(size, np.nan, dtype)
    K.conv_acc_grad_parameters(x, go, gw, gb, cols, *args, 0.5, 2.0, scratch)
    expected = gw0 + 0.5 * weight_grad_ref(x, go, w.shape, s, lead, d, 1)
    pixels = go.shape[0] * go.shape[2] * go.shape[3]
    close(gw, expected, dtype, pixels, 0.5, x, go, extra=gw0)
    if bias:
        close(gb, gb0 + 2.0 * go.sum(axis=(0, 2, 3)), dtype, pixels, 2.0, go, extra=gb0)
    plain, plain_b = gw0.copy(), gb0.copy() if bias else None
    K.conv_acc_grad_parameters(x, go, plain, plain_b, cols, *args, 0.5, 2.0)
    close(gw, plain, dtype, pixels, 1.0, x, go, extra=2 * gw0)  # both within one bound
    if xshape[0] == 1:  # the same sample as (C, H, W)
        single = gw0.copy()
        K.conv_acc_grad_parameters(x[0], go[0], single, None, cols, *args, 0.5, 0.0, scratch)
        close(single, expected, dtype, pixels, 0.5, x, go, extra=gw0)
    skipped = gw0.copy()  # scale 0 leaves the weight gradient alone
    K.conv_acc_grad_parameters(x, go, skipped, None, cols, *args, 0.0, 0.0, scratch)
    np.testing.assert_array_equal(skipped, gw0)


def test_conv_weight_gradient_rejects_bad_scratch(rng):
    x, w, _, cols, y, args, _ = _transposed_args((2, 16, 6, 6), 24, (3, 3), (1, 1), (1, 1),
                                                 (1, 1), np.float32, rng)
    go = rng.standard_normal(y.shape).astype(np.float32)
    gw, gb = np.zeros_like(w), np.zeros(24, np.float32)
    size = K.conv_scratch_size(x, w, *args)

    def acc(scratch, x=x, go=go, gw=gw, gb=gb, cols=cols):
        K.conv_acc_grad_parameters(x, go, gw, gb, cols, *args, 1.0, 1.0, scratch)

    with pytest.raises(ValueError, match=rf"scratch has shape \({size + 1},\), expected"):
        acc(np.zeros(size + 1, np.float32))
    with pytest.raises(TypeError, match="scratch has dtype float64, expected float32"):
        acc(np.zeros(size))
    buf = np.zeros(size + max(x.size, go.size, gw.size, cols.size), np.float32)
    with pytest.raises(ValueError, match="scratch overlaps gradWeight"):
        acc(buf[:size], gw=buf[size - 1:size - 1 + gw.size].reshape(gw.shape))
    with pytest.raises(ValueError, match="scratch overlaps gradBias"):
        acc(buf[:size], gb=buf[size - 1:size + 23])
    with pytest.raises(ValueError, match="scratch overlaps gradOutput"):
        acc(buf[:size], go=buf[size - 1:size - 1 + go.size].reshape(go.shape))
    with pytest.raises(ValueError, match="scratch overlaps columns"):
        acc(buf[:size], cols=buf[size - 1:size - 1 + cols.size].reshape(cols.shape))
    assert not gw.any()  # nothing ran


def test_conv_scratch_size_zero_where_the_plain_forward_runs(rng):
    def size(xshape, o, k, g=1, pad=1, dtype=np.float32):
        x = np.zeros(xshape, dtype)
        w = np.zeros((o, xshape[1] // g, k, k), dtype)
        return K.conv_scratch_size(x, w, 1, 1, pad, pad, 1, 1, g)

    # (16, 32, 3x3, pad 1 on 28x28): padded 30x30x16 image, 784x32 output, 32x144 weight
    assert size((2, 16, 28, 28), 32, 3) == 30 * 30 * 16 + 784 * 32 + 32 * 144
    assert size((2, 16, 28, 28), 32, 3, dtype=np.float64) == 0
    assert size((2, 16, 28, 28), 32, 3, g=2) == 0
    assert size((2, 160, 28, 28), 32, 1, pad=0) == 0  # 1x1: the image is read in place
    assert size((2, 8, 28, 28), 32, 3) == 0  # patches of 72 numbers
    assert size((2, 16, 28, 28), 16, 3) == 0  # few planes on a big grid
    assert size((2, 16, 8, 8), 16, 3) > 0  # few planes on a small grid
    assert size((2, 16, 8, 8), 8, 3) == 0


def test_conv_rejects_bad_scratch(rng):
    x, w, b, cols, y, args, _ = _transposed_args((2, 16, 6, 6), 24, (3, 3), (1, 1), (1, 1),
                                                 (1, 1), np.float32, rng)
    size = K.conv_scratch_size(x, w, *args)
    with pytest.raises(ValueError, match=rf"scratch has shape \({size - 1},\), expected"):
        K.conv_update_output(x, y, w, b, cols, *args, np.zeros(size - 1, np.float32))
    with pytest.raises(TypeError, match="scratch has dtype float64, expected float32"):
        K.conv_update_output(x, y, w, b, cols, *args, np.zeros(size))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros(size, np.float32)
        ro.flags.writeable = False
        K.conv_update_output(x, y, w, b, cols, *args, ro)
    buf = np.zeros(size + min(x.size, y.size, cols.size) - 1, np.float32)  # overlap by 1+
    with pytest.raises(ValueError, match="scratch overlaps output"):
        K.conv_update_output(x, buf[-y.size:].reshape(y.shape), w, b, cols, *args,
                             buf[:size])
    with pytest.raises(ValueError, match="scratch overlaps columns"):
        K.conv_update_output(x, y, w, b, buf[-cols.size:].reshape(cols.shape), *args,
                             buf[:size])
    with pytest.raises(ValueError, match="scratch overlaps input"):
        K.conv_update_output(buf[-x.size:].reshape(x.shape), y, w, b, cols, *args,
                             buf[:size])


# -- blocks of samples: columns (K + M, B * P) --------------------------------------------------

BLOCKED = [c for c in CASES if c[0][0] > 0 and c[2] != (1, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,s,p,d,g", BLOCKED)
@pytest.mark.parametrize("block", [2, 3, 5])
def test_conv_blocks_against_reference(xshape, o, k, s, p, d, g, block, dtype, rng):
    # blocks of 2 and 3 over batches of 1 to 3: whole blocks, a last partial one, one short
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((o, xshape[1] // g) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    lead, (oh, ow) = _geometry(xshape, k, s, p, d)
    args = (s[1], s[0], p[1], p[0], d[1], d[0], g)
    patch = xshape[1] // g * k[0] * k[1]
    cols = np.full((xshape[1] * k[0] * k[1] + o, block * oh * ow), np.nan, dtype)
    y = np.full((xshape[0], o, oh, ow), np.nan, dtype)
    K.conv_update_output(x, y, w, b, cols, *args)
    close(y, conv_ref(x, w, s, lead, (oh, ow), d, g) + b[:, None, None], dtype, patch, x, w,
          extra=b)
    K.conv_update_output(x, y, w, None, cols, *args)
    close(y, conv_ref(x, w, s, lead, (oh, ow), d, g), dtype, patch, x, w)

    go = rng.standard_normal(y.shape).astype(dtype)
    gi = np.full_like(x, np.nan)
    cols[:] = np.nan
    K.conv_update_grad_input(x, go, gi, w, cols, *args)
    close(gi, conv_adjoint_ref(go, w, xshape[1:], s, lead, d, g), dtype,
          o // g * k[0] * k[1], go, w)

    gw, gb = np.ones_like(w), np.ones_like(b)
    cols[:] = np.nan
    K.conv_acc_grad_parameters(x, go, gw, gb, cols, *args, 0.5, 2.0)
    pixels = xshape[0] * oh * ow
    close(gw, 1 + 0.5 * weight_grad_ref(x, go, w.shape, s, lead, d, g), dtype, pixels,
          0.5, x, go, extra=1.0)
    close(gb, 1 + 2.0 * go.sum(axis=(0, 2, 3)), dtype, pixels, 2.0, go, extra=1.0)


def test_conv_columns_shape_picks_blocks():
    def shape(xshape, o, k, pad=0, dtype=np.float32, g=1):
        x = np.zeros(xshape, dtype)
        w = np.zeros((o, xshape[-3] // g, k, k), dtype)
        return K.conv_columns_shape(x, w, 1, 1, pad, pad, 1, 1, g)

    # few planes: one sample at a time (the forward runs without BLAS, see _panel.h)
    assert shape((64, 1, 28, 28), 6, 5, 2) == (25, 784) == shape((1, 28, 28), 6, 5, 2)
    assert shape((64, 6, 14, 14), 16, 5) == (150, 100)
    # more planes on small grids: several samples' columns and grids per block, at most all
    assert shape((3, 16, 7, 7), 32, 3, 1) == (144 + 32, 3 * 49)
    b32, b64 = shape((64, 16, 7, 7), 32, 3, 1), shape((64, 16, 7, 7), 32, 3, 1, np.float64)
    assert b32[0] == b64[0] == 176 and b32[1] > b64[1] >= 2 * 49 and b64[1] % 49 == 0
    assert shape((1, 16, 7, 7), 32, 3, 1) == (144, 49)
    assert shape((8, 4, 6, 6), 4, 1) == (4, 36)  # 1x1: the image is the columns
    assert shape((2, 64, 224, 224), 64, 3, 1) == (576, 224 * 224)  # one sample fills a block
    assert shape((0, 2, 5, 5), 3, 3) == (18, 9)
    assert shape((8, 4, 6, 6), 40, 3, 1, g=2) == (36 + 40, 8 * 36)


def test_conv_rejects_bad_blocks():
    x, y, w, b, cols = _conv_args()
    geo = (1, 1, 0, 0, 1, 1, 1)
    for bad in [(27 + 4, 16), (27 + 4, 40), (27 + 3, 32), (27, 32)]:
        with pytest.raises(ValueError, match=r"columns has shape .* expected \(27, 16\)"):
            K.conv_update_output(x, y, w, b, np.zeros(bad), *geo)
    blocked = np.zeros((31, 32))
    with pytest.raises(ValueError, match="columns overlaps gradOutput"):
        g = np.zeros(blocked.size)
        K.conv_update_grad_input(x, g[:y.size].reshape(y.shape), np.zeros_like(x), w,
                                 g.reshape(blocked.shape), *geo)
    # the transposed convolution keeps one sample's columns
    with pytest.raises(ValueError, match="columns has shape"):
        K.full_conv_update_output(y, np.zeros((2, 3, 6, 6)), w, None, np.zeros((31, 32)),
                                  1, 1, 0, 0, 0, 0, 1)


# -- SpatialFullConvolution kernels -----------------------------------------------------------

FULL = [  # (N, C, H, W), O, (kh, kw), stride, pad, adj, groups
    ((2, 4, 5, 4), 6, (3, 2), (2, 1), (1, 0), (1, 0), 2),
    ((1, 3, 4, 4), 2, (3, 3), (3, 2), (1, 1), (2, 1), 1),
    ((2, 2, 3, 3), 2, (1, 1), (1, 1), (0, 0), (0, 0), 1),
    ((0, 2, 3, 3), 2, (2, 2), (2, 2), (0, 0), (0, 0), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,o,k,s,p,a,g", FULL)
def test_full_conv_against_reference(xshape, o, k, s, p, a, g, dtype, rng):
    x = rng.standard_normal(xshape).astype(dtype)
    w = rng.standard_normal((xshape[1], o // g) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    oh, ow = (K.full_output_size(xshape[2 + i], k[i], s[i], p[i], a[i]) for i in range(2))
    args = (s[1], s[0], p[1], p[0], a[1], a[0], g)
    cols = np.empty((o * k[0] * k[1], xshape[2] * xshape[3]), dtype)
    y = np.full((xshape[0], o, oh, ow), np.nan, dtype)
    K.full_conv_update_output(x, y, w, b, cols, *args)
    expected = conv_adjoint_ref(x, w, (o, oh, ow), s, p, (1, 1), g) + b[:, None, None]
    close(y, expected, dtype, xshape[1] // g * k[0] * k[1], x, w, extra=b)

    go = rng.standard_normal(y.shape).astype(dtype)
    gi = np.full_like(x, np.nan)
    K.full_conv_update_grad_input(x, go, gi, w, cols, *args)
    close(gi, conv_ref(go, w, s, p, xshape[2:], (1, 1), g), dtype, o // g * k[0] * k[1], go, w)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    K.full_conv_acc_grad_parameters(x, go, gw, gb, cols, *args, 1.0, 1.0)
    pixels = xshape[0] * oh * ow
    close(gw, weight_grad_ref(go, x, w.shape, s, p, (1, 1), g), dtype, pixels, x, go)
    close(gb, go.sum(axis=(0, 2, 3)), dtype, pixels, go)


def test_full_conv_rejects_bad_arguments():
    x, w = np.zeros((1, 2, 3, 3)), np.zeros((2, 3, 3, 3))
    y, cols = np.zeros((1, 3, 5, 5)), np.zeros((27, 9))
    with pytest.raises(ValueError, match="input has 3 channels, expected 2"):
        K.full_conv_update_output(np.zeros((1, 3, 3, 3)), y, w, None, cols, 1, 1, 0, 0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"adjustments must lie in \[0, stride\)"):
        K.full_conv_update_output(x, y, w, None, cols, 1, 1, 0, 0, 1, 0, 1)
    with pytest.raises(ValueError, match="the output would be"):
        K.full_conv_update_output(x, y, w, None, cols, 1, 1, 3, 3, 0, 0, 1)


# -- TemporalConvolution kernels --------------------------------------------------------------

def temporal_ref(x, w, kw, dw):
    t_out = (x.shape[1] - kw) // dw + 1
    win = np.stack([x[:, t * dw:t * dw + kw].reshape(x.shape[0], -1) for t in range(t_out)], 1)
    return win, win @ w.T


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,t,c,o,kw,dw", [(2, 10, 3, 4, 3, 1), (1, 9, 2, 3, 2, 3),
                                           (2, 7, 1, 1, 4, 2), (3, 5, 2, 2, 5, 1),
                                           (0, 5, 2, 2, 2, 1)])
def test_temporal_conv_against_reference(n, t, c, o, kw, dw, dtype, rng):
    x = rng.standard_normal((n, t, c)).astype(dtype)
    w = rng.standard_normal((o, kw * c)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    win, ref = temporal_ref(x, w, kw, dw) if n else (None, np.zeros((0, (t - kw) // dw + 1, o)))
    y = np.full(ref.shape, np.nan, dtype)
    K.temporal_conv_update_output(x, y, w, b, kw, dw)
    close(y, ref + b, dtype, kw * c, x, w, extra=b)
    go = rng.standard_normal(y.shape).astype(dtype)
    gi = np.full_like(x, np.nan)
    K.temporal_conv_update_grad_input(x, go, gi, w, kw, dw)
    expected = np.zeros_like(x)
    for f in range(y.shape[1]):
        expected[:, f * dw:f * dw + kw] += (go[:, f] @ w).reshape(n, kw, c)
    close(gi, expected, dtype, o * kw, go, w)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    K.temporal_conv_acc_grad_parameters(x, go, gw, gb, kw, dw, 1.0, 1.0)
    if n:
        close(gw, np.einsum("nto,ntk->ok", go, win), dtype, n * y.shape[1], go, x)
    close(gb, go.sum(axis=(0, 1)), dtype, n * y.shape[1], go)
    if n == 1:  # a single sequence is the batch of one
        y1 = np.empty(y.shape[1:], dtype)
        K.temporal_conv_update_output(x[0], y1, w, b, kw, dw)
        np.testing.assert_array_equal(y1, y[0])


def test_temporal_conv_rejects_bad_arguments():
    w = np.zeros((4, 6))
    with pytest.raises(ValueError, match="input has 2 features per frame, expected 3"):
        K.temporal_conv_update_output(np.zeros((5, 2)), np.zeros((4, 4)), w, None, 2, 1)
    with pytest.raises(ValueError, match="input has 1 frames, fewer than the kernel width 2"):
        K.temporal_conv_update_output(np.zeros((1, 3)), np.zeros((0, 4)), w, None, 2, 1)
    with pytest.raises(ValueError, match="expected \\(outputFrameSize, 4 \\* inputFrameSize\\)"):
        K.temporal_conv_update_output(np.zeros((5, 3)), np.zeros((2, 4)), w, None, 4, 1)
