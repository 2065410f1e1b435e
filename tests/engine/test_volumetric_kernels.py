"""The 3-D convolution and pooling kernels against NumPy; their refusals."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from pymodules.engine import volumetric as K

DTYPES = [np.float32, np.float64]
NO_ADJ = (1, 1, 1, 0, 0, 0, 0, 0, 0, 1)  # dT, dW, dH, padT, padW, padH, adjT, adjW, adjH, groups


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


def _conv(x, w, b):
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3, 4))
    return np.einsum("ncthwijk,ocijk->nothw", win, w) + b[:, None, None, None]


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolution_and_its_adjoints(dtype, rng):
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    ref = _conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    y = _nan(ref.shape, dtype)
    cols = _nan((3 * 12, 3 * 3 * 5), dtype)
    K.conv3d_update_output(x, y, w, b, cols, False, NO_ADJ)
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * 10)
    # gradInput and gradWeight are the adjoints: <g, conv(x)> = <gradInput, x> = <gradW, w>
    g = rng.standard_normal(ref.shape).astype(dtype)
    gi = _nan(x.shape, dtype)
    K.conv3d_update_grad_input(x, g, gi, w, cols, False, NO_ADJ)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    K.conv3d_acc_grad_parameters(x, g, gw, gb, cols, False, NO_ADJ, 1.0, 1.0)
    lin = np.vdot(g.astype(np.float64), ref - b[:, None, None, None])
    np.testing.assert_allclose(np.vdot(gi.astype(np.float64), x), lin, rtol=rtol * 10)
    np.testing.assert_allclose(np.vdot(gw.astype(np.float64), w), lin, rtol=rtol * 10)
    np.testing.assert_allclose(gb, g.astype(np.float64).sum(axis=(0, 2, 3, 4)), rtol=rtol,
                               atol=rtol * 100)
    # the transposed convolution of g is the gradInput above
    full = _nan(x.shape, dtype)
    K.conv3d_update_output(g, full, w, None, cols, True, NO_ADJ)
    np.testing.assert_allclose(full, gi, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_empty_batch_is_a_no_op(dtype):
    x = np.zeros((0, 2, 3, 3, 3), dtype)
    w = np.ones((2, 2, 2, 2, 2), dtype)
    y = np.zeros((0, 2, 2, 2, 2), dtype)
    K.conv3d_update_output(x, y, w, None, np.zeros((16, 8), dtype), False, NO_ADJ)
    out, idx = np.zeros((0, 2, 1, 1, 1), dtype), np.zeros((0, 2, 1, 1, 1), np.intp)
    K.max_pool3d_update_output(x, out, idx, (2, 2, 2, 2, 2, 2, 0, 0, 0), False)
    gi = np.zeros_like(x)
    K.max_pool3d_update_grad_input(x, out, gi, idx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_writes_every_element(dtype, rng):
    x = rng.standard_normal((2, 3, 5, 6, 7)).astype(dtype)
    window = (3, 2, 2, 2, 2, 1, 1, 1, 0)  # kT, kW, kH, dT, dW, dH, padT, padW, padH
    y, idx = _nan((2, 3, 3, 5, 4), dtype), np.full((2, 3, 3, 5, 4), -1, np.intp)
    K.max_pool3d_update_output(x, y, idx, window, True)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, np.take_along_axis(x.reshape(6, -1), idx.reshape(6, -1),
                                                        axis=1).reshape(y.shape))
    a = _nan(y.shape, dtype)
    K.avg_pool3d_update_output(x, a, window, True, False)
    assert np.isfinite(a).all()


def _max3_loops(x, window, ceil):
    """The per-window reference: the taps in (t, y, x) order, the first largest wins, and the
    first NaN wins over everything."""
    kt, kw, kh, st, sw, sh, pt, pw, ph = window
    lead, (T, H, W) = x.shape[:-3], x.shape[-3:]
    sizes = [K.pool3d_output_size(n, k, d, pad, ceil)
             for n, k, d, pad in ((T, kt, st, pt), (H, kh, sh, ph), (W, kw, sw, pw))]
    y, idx = np.empty(lead + tuple(sizes), x.dtype), np.empty(lead + tuple(sizes), np.intp)
    for q in np.ndindex(*lead):
        for o in np.ndindex(*sizes):
            lo = [o[i] * (st, sh, sw)[i] - (pt, ph, pw)[i] for i in range(3)]
            taps = [range(max(lo[i], 0), min(lo[i] + (kt, kh, kw)[i], (T, H, W)[i]))
                    for i in range(3)]
            best = None
            for t in taps[0]:
                for r in taps[1]:
                    for c in taps[2]:
                        v = x[q + (t, r, c)]
                        if best is None or v > best[0] or (v != v and best[0] == best[0]):
                            best = (v, (t * H + r) * W + c)
            y[q + o], idx[q + o] = best
    return y, idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window,ceil", [
    ((2, 2, 2, 2, 2, 2, 0, 0, 0), False),
    ((3, 3, 2, 2, 1, 2, 1, 1, 1), True),   # overlapping along W, padded, ceil
    ((2, 3, 3, 1, 2, 3, 1, 1, 0), False),
    ((1, 4, 1, 1, 3, 1, 0, 2, 0), True),
])
def test_max_pooling_against_the_per_window_loop(window, ceil, dtype, rng):
    """Ties (small integers) and NaNs: the same winner as the per-window loop, with and
    without indices."""
    x = rng.integers(-3, 4, (2, 2, 5, 6, 7)).astype(dtype)
    x.flat[rng.choice(x.size, 25, replace=False)] = np.nan
    ref, ref_idx = _max3_loops(x, window, ceil)
    y, idx = _nan(ref.shape, dtype), np.full(ref.shape, -1, np.intp)
    K.max_pool3d_update_output(x, y, idx, window, ceil)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    bare = _nan(ref.shape, dtype)
    K.max_pool3d_update_output(x, bare, None, window, ceil)
    np.testing.assert_array_equal(bare, ref)
    with pytest.raises(ValueError, match=r"output has shape"):
        K.max_pool3d_update_output(x, np.empty((1,) + ref.shape[1:], dtype), None, window, ceil)


def test_refusals_name_the_argument_and_numbers():
    x = np.zeros((1, 2, 4, 4, 4), np.float32)
    w = np.zeros((3, 2, 2, 2, 2), np.float32)
    cols = np.zeros((16, 27), np.float32)
    with pytest.raises(ValueError, match=r"output has shape \(1, 3, 4, 4, 4\), expected "
                                         r"\(1, 3, 3, 3, 3\)"):
        K.conv3d_update_output(x, np.zeros((1, 3, 4, 4, 4), np.float32), w, None, cols, False,
                               NO_ADJ)
    with pytest.raises(ValueError, match=r"columns has shape \(16, 26\)"):
        K.conv3d_update_output(x, np.zeros((1, 3, 3, 3, 3), np.float32), w, None,
                               np.zeros((16, 26), np.float32), False, NO_ADJ)
    with pytest.raises(ValueError, match="a convolution takes no adjustments"):
        K.conv3d_update_output(x, np.zeros((1, 3, 3, 3, 3), np.float32), w, None, cols, False,
                               (1, 1, 1, 0, 0, 0, 1, 0, 0, 1))
    with pytest.raises(TypeError, match="input has dtype float32, expected float64"):
        K.conv3d_update_output(x, np.zeros((1, 3, 3, 3, 3), np.float32), w.astype(np.float64),
                               None, cols, False, NO_ADJ)
    with pytest.raises(ValueError, match=r"weight has shape \(3, 2, 0, 2, 2\), with an empty"):
        K.conv3d_update_output(x, np.zeros((1, 3, 3, 3, 3), np.float32),
                               np.zeros((3, 2, 0, 2, 2), np.float32), None, cols, False, NO_ADJ)
    with pytest.raises(ValueError, match="pads 2, 0, 0 exceed half the 2x2x2 kernel"):
        K.avg_pool3d_update_output(x, np.zeros((1, 2, 4, 2, 2), np.float32),
                                   (2, 2, 2, 2, 2, 2, 2, 0, 0), False, True)
    idx = np.full((1, 2, 2, 2, 2), 64, np.intp)
    with pytest.raises(ValueError, match=r"indices holds 64, outside \[0, 64\)"):
        K.max_pool3d_update_grad_input(x, np.zeros((1, 2, 2, 2, 2), np.float32),
                                       np.zeros_like(x), idx)


@pytest.mark.parametrize("args,shape", [
    (NO_ADJ, (2, 3, 4, 5, 6)),
    ((2, 1, 2, 1, 0, 1, 0, 0, 0, 1), (2, 3, 5, 6, 7)),
    ((1, 3, 1, 0, 2, 1, 0, 0, 0, 1), (3, 4, 5, 6)),
])
def test_transposed_forward_agrees_with_the_plain_one(args, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((5, 3, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    size = K.conv3d_scratch_size(x, w, args)
    assert size > 0 and K.conv3d_scratch_size(x.astype(np.float64), w.astype(np.float64),
                                                args) == 0
    plain = ()
    for scratch in (None, np.full(size, np.nan, np.float32)):
        st, sw, sh, pt, pw, ph = args[:6]
        out = [(n + 2 * p - k) // d + 1 for n, k, d, p in
               zip(shape[-3:], (2, 3, 2), (st, sh, sw), (pt, ph, pw), strict=True)]
        y = np.full(shape[:-4] + (5,) + tuple(out), np.nan, np.float32)
        cols = np.full((3 * 12, int(np.prod(out))), np.nan, np.float32)
        K.conv3d_update_output(x, y, w, b, cols, False, args, scratch)
        g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        gi = np.full(x.shape, np.nan, np.float32)
        K.conv3d_update_grad_input(x, g, gi, w, cols, False, args, scratch)
        gw, gb = np.ones_like(w), np.ones_like(b)
        K.conv3d_acc_grad_parameters(x, g, gw, gb, cols, False, args, 0.5, 2.0, scratch)
        if scratch is None:
            plain = (y, gi, gw, gb)
        else:
            for got, want in zip((y, gi, gw, gb), plain, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=rf"scratch has shape \({size - 1},\), expected "
                                         rf"\({size},\)"):
        K.conv3d_update_output(x, y, w, b, cols, False, args,
                               np.zeros(size - 1, np.float32))
