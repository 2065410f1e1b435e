"""The pooling kernels against NumPy loops over the windows."""

import numpy as np
import pytest
from pymodules.engine import pooling as P
from pymodules.engine.conv import output_size

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def windows(h, w, k, s, p, ceil):
    """[(output position, rows slice, cols slice, divisor with pad)] clipped to the input."""
    kh, kw = k
    oh = output_size(h, kh, s[0], p[0], 1, ceil)
    ow = output_size(w, kw, s[1], p[1], 1, ceil)
    lead = [(0 if p[i] != -1 else max(0, (o - 1) * s[i] + k[i] - n) // 2)
            for i, (o, n) in enumerate(((oh, h), (ow, w)))]
    trail = [p[i] if p[i] != -1 else max(0, (o - 1) * s[i] + k[i] - n) - lead[i]
             for i, (o, n) in enumerate(((oh, h), (ow, w)))]
    lead = [p[i] if p[i] != -1 else lead[i] for i in range(2)]
    out = []
    for y in range(oh):
        for x in range(ow):
            h0, w0 = y * s[0] - lead[0], x * s[1] - lead[1]
            h1, w1 = min(h0 + kh, h + trail[0]), min(w0 + kw, w + trail[1])
            out.append(((y, x), slice(max(h0, 0), min(h1, h)), slice(max(w0, 0), min(w1, w)),
                        (h1 - h0) * (w1 - w0)))
    return (oh, ow), out


SPATIAL = [  # (N, C, H, W), kernel (h, w), stride, pad, ceil
    ((2, 3, 9, 8), (3, 2), (2, 2), (1, 1), True),
    ((1, 2, 6, 6), (2, 2), (2, 2), (0, 0), False),
    ((2, 2, 7, 5), (3, 3), (2, 2), (1, 0), True),
    ((1, 1, 3, 3), (2, 2), (4, 4), (0, 0), True),
    ((2, 2, 7, 6), (3, 3), (2, 2), (-1, -1), False),
    ((0, 2, 4, 4), (2, 2), (2, 2), (0, 0), False),
    # 2x2 by 2 on odd sizes: whole windows only (the 2x2 kernel), then a partial last one
    ((2, 3, 7, 9), (2, 2), (2, 2), (0, 0), False),
    ((2, 3, 7, 9), (2, 2), (2, 2), (0, 0), True),
    ((1, 2, 8, 34), (2, 2), (2, 2), (1, 1), False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,k,s,p,ceil", SPATIAL)
@pytest.mark.parametrize("batched", [True, False])
def test_max_pool_against_loops(xshape, k, s, p, ceil, dtype, batched, rng):
    if not batched:
        xshape = xshape[1:]
    x = rng.standard_normal(xshape).astype(dtype)
    (oh, ow), wins = windows(xshape[-2], xshape[-1], k, s, p, ceil)
    y = np.full(xshape[:-2] + (oh, ow), np.nan, dtype)
    idx = np.full(y.shape, -1, np.intp)
    P.max_pool_update_output(x, y, idx, k[1], k[0], s[1], s[0], p[1], p[0], ceil)
    go = rng.standard_normal(y.shape).astype(dtype)
    ref = np.empty_like(y)
    gref = np.zeros_like(x)
    flat = x.reshape(x.shape[:-2] + (x.shape[-2] * x.shape[-1],))
    for (oy, ox), rows, cols, _ in wins:
        ref[..., oy, ox] = x[..., rows, cols].max(axis=(-2, -1))
        for lead in np.ndindex(*x.shape[:-2]):
            win = x[lead][rows, cols]
            r, c = np.unravel_index(np.argmax(win), win.shape)
            gref[lead][rows.start + r, cols.start + c] += go[lead][oy, ox]
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, idx.reshape(flat.shape[:-1] + (oh * ow,)), -1).reshape(y.shape), y)
    gi = np.full_like(x, np.nan)
    P.max_pool_update_grad_input(x, go, gi, idx)
    np.testing.assert_allclose(gi, gref, rtol=tol(dtype), atol=tol(dtype))


def test_max_pool_nan_wins_and_padding_never_does():
    x = np.array([[[-5.0, -4.0], [np.nan, -3.0]]])
    y, idx = np.empty((1, 3, 3)), np.empty((1, 3, 3), np.intp)
    P.max_pool_update_output(x, y, idx, 2, 2, 1, 1, 1, 1, False)
    assert np.isnan(y[0, 1, 0]) and np.isnan(y[0, 1, 1]) and y[0, 0, 0] == -5.0
    assert idx[0, 0, 0] == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,k,s,p,ceil", SPATIAL + [((3, 2, 8, 9), (2, 3), (1, 2), (1, 1),
                                                          False)])
def test_max_pool_ties_go_to_the_first_tap_and_nans_to_the_last(xshape, k, s, p, ceil, dtype,
                                                                 rng):
    # few distinct values: many ties; some NaNs, several in a window
    x = rng.integers(0, 3, xshape).astype(dtype)
    x[rng.random(xshape) < 0.1] = np.nan
    (oh, ow), wins = windows(xshape[-2], xshape[-1], k, s, p, ceil)
    y = np.empty(xshape[:-2] + (oh, ow), dtype)
    idx = np.empty(y.shape, np.intp)
    P.max_pool_update_output(x, y, idx, k[1], k[0], s[1], s[0], p[1], p[0], ceil)
    for lead in np.ndindex(*x.shape[:-2]):
        for (oy, ox), rows, cols, _ in wins:
            best = None
            for r in range(rows.start, rows.stop):  # taps in row-major order
                for c in range(cols.start, cols.stop):
                    v = x[lead][r, c]
                    if best is None or v > x[lead].flat[best] or np.isnan(v):
                        best = r * xshape[-1] + c
            assert idx[lead][oy, ox] == best
            np.testing.assert_array_equal(y[lead][oy, ox], x[lead].flat[best])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,k,s,p,ceil", SPATIAL)
@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("divide", [True, False])
def test_avg_pool_against_loops(xshape, k, s, p, ceil, include_pad, divide, dtype, rng):
    x = rng.standard_normal(xshape).astype(dtype)
    (oh, ow), wins = windows(xshape[-2], xshape[-1], k, s, p, ceil)
    y = np.full(xshape[:-2] + (oh, ow), np.nan, dtype)
    args = (k[1], k[0], s[1], s[0], p[1], p[0], ceil, include_pad, divide)
    P.avg_pool_update_output(x, y, *args)
    go = rng.standard_normal(y.shape).astype(dtype)
    ref, gref = np.empty_like(y), np.zeros_like(x)
    mult = 1 if divide else k[0] * k[1]
    for (oy, ox), rows, cols, size in wins:
        div = size if include_pad else (rows.stop - rows.start) * (cols.stop - cols.start)
        ref[..., oy, ox] = x[..., rows, cols].sum(axis=(-2, -1)) * mult / div
        gref[..., rows, cols] += (go[..., oy, ox] * mult / div)[..., None, None]
    np.testing.assert_allclose(y, ref, rtol=tol(dtype), atol=tol(dtype))
    gi = np.full_like(x, np.nan)
    P.avg_pool_update_grad_input(x, go, gi, *args)
    np.testing.assert_allclose(gi, gref, rtol=tol(dtype), atol=tol(dtype))


def test_pooling_rejects_bad_arguments():
    x = np.zeros((1, 2, 4, 4))
    y, idx = np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), np.intp)
    with pytest.raises(ValueError, match="input is 4x4, smaller than the 5x5 kernel"):
        P.max_pool_update_output(x, y, idx, 5, 5, 1, 1, 0, 0, False)
    with pytest.raises(ValueError, match="pads 2, 2 exceed half the 2x2 kernel"):
        P.max_pool_update_output(x, y, idx, 2, 2, 2, 2, 2, 2, False)
    with pytest.raises(TypeError, match="input has dtype float32, expected float64"):
        P.max_pool_update_output(x.astype(np.float32), y, idx, 2, 2, 2, 2, 0, 0, False)
    with pytest.raises(TypeError, match="indices has dtype"):
        P.max_pool_update_output(x, y, idx.astype(np.int32), 2, 2, 2, 2, 0, 0, False)
    with pytest.raises(ValueError, match="output overlaps input"):
        P.avg_pool_update_output(x, x.reshape(-1)[:8].reshape(y.shape), 2, 2, 2, 2, 0, 0,
                                 False, True, True)
    with pytest.raises(ValueError, match="indices has shape"):
        P.max_pool_update_output(x, y, idx[:, :1].copy(), 2, 2, 2, 2, 0, 0, False)
    with pytest.raises(ValueError, match=r"indices holds 16, outside \[0, 16\)"):
        P.max_pool_update_grad_input(x, y, np.zeros_like(x), np.full_like(idx, 16))
    with pytest.raises(ValueError, match="gradOutput has shape"):
        P.max_pool_update_grad_input(x, y[0], np.zeros_like(x), idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kw,dw", [((2, 9, 3), 3, 3), ((8, 2), 2, 1), ((3, 7, 1), 4, 2),
                                         ((0, 5, 2), 2, 2), ((2, 4, 0), 2, 2)])
def test_temporal_max_pool_against_loops(shape, kw, dw, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    t_out = (shape[-2] - kw) // dw + 1
    y = np.full(shape[:-2] + (t_out, shape[-1]), np.nan, dtype)
    idx = np.full(y.shape, -1, np.intp)
    P.temporal_max_pool_update_output(x, y, idx, kw, dw)
    go = rng.standard_normal(y.shape).astype(dtype)
    gref = np.zeros_like(x)
    for t in range(t_out):
        win = x[..., t * dw:t * dw + kw, :]
        np.testing.assert_array_equal(y[..., t, :], win.max(axis=-2))
        best = win.argmax(axis=-2) + t * dw
        np.testing.assert_array_equal(idx[..., t, :], best)
        np.put_along_axis(gref, best[..., None, :],
                          np.take_along_axis(gref, best[..., None, :], -2)
                          + go[..., t:t + 1, :], -2)
    gi = np.full_like(x, np.nan)
    P.temporal_max_pool_update_grad_input(x, go, gi, idx)
    np.testing.assert_allclose(gi, gref, rtol=tol(dtype), atol=tol(dtype))


def _temporal_loops(x, kw, dw):
    """The per-window reference: frames in order, the first of equal maxima wins, a later NaN
    replaces a NaN held."""
    lead, (T, C) = x.shape[:-2], x.shape[-2:]
    shape = lead + ((T - kw) // dw + 1, C)
    y, idx = np.empty(shape, x.dtype), np.empty(shape, np.intp)
    for q in np.ndindex(*lead):
        for t in range(shape[-2]):
            for c in range(C):
                best = None
                for f in range(t * dw, t * dw + kw):
                    v = x[q + (f, c)]
                    if best is None or v > best[0] or v != v:
                        best = (v, f)
                y[q + (t, c)], idx[q + (t, c)] = best
    return y, idx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kw,dw", [((2, 9, 35), 3, 3), ((8, 2), 2, 1), ((3, 7, 1), 4, 2),
                                         ((2, 11, 19), 4, 1), ((0, 5, 2), 2, 2),
                                         ((2, 4, 0), 2, 2)])
def test_temporal_max_pool_ties_and_nans_against_the_loop(shape, kw, dw, dtype, rng):
    """Small integers (ties) and NaNs: the per-window loop's maxima and frames; indices None
    (evaluation) writes the same maxima, every one of them."""
    x = rng.integers(-3, 4, shape).astype(dtype)
    if x.size:
        x.flat[rng.choice(x.size, max(1, x.size // 7), replace=False)] = np.nan
    ref, ref_idx = _temporal_loops(x, kw, dw)
    y, idx = np.full(ref.shape, 7, dtype), np.full(ref.shape, -1, np.intp)
    P.temporal_max_pool_update_output(x, y, idx, kw, dw)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    bare = np.full(ref.shape, 7, dtype)
    P.temporal_max_pool_update_output(x, bare, None, kw, dw)
    np.testing.assert_array_equal(bare, ref)
    short = np.empty(ref.shape[:-2] + (ref.shape[-2] + 1, ref.shape[-1]), dtype)
    with pytest.raises(ValueError, match=r"output has shape"):
        P.temporal_max_pool_update_output(x, short, None, kw, dw)


def test_temporal_max_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="input has 2 frames, fewer than the kernel width 3"):
        P.temporal_max_pool_update_output(np.zeros((2, 4)), np.zeros((0, 4)),
                                          np.zeros((0, 4), np.intp), 3, 1)
    with pytest.raises(ValueError, match=r"indices holds -1, outside \[0, 4\)"):
        P.temporal_max_pool_update_grad_input(np.zeros((4, 2)), np.zeros((2, 2)),
                                              np.zeros((4, 2)), np.full((2, 2), -1, np.intp))


def test_pooling_gives_the_same_output_size_as_conv():
    from pymodules.engine import conv

    for size in range(0, 9):
        for k in range(1, 4):
            for s in range(1, 3):
                for p in (-1, 0, 1):
                    for ceil in (False, True):
                        assert P.output_size(size, k, s, p, 1, ceil) == \
                            conv.output_size(size, k, s, p, 1, ceil)
    assert P.output_size(7, 3) == 5
    with pytest.raises(ValueError, match="bad window: size 4, kernel 0"):
        P.output_size(4, 0)
