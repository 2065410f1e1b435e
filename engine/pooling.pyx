"""Kernels of the pooling layers: max (with argmax indices) and average, spatial and temporal.

Spatial input is (C, H, W) or (N, C, H, W), pooled plane by plane; temporal input is (T, C)
or (N, T, C), pooled along T. Max pooling records where each maximum came from, as an intp
array shaped like the output: the flat position within the plane (spatial) or the frame
(temporal); backward scatters through it. Given None for that array (inference) it writes only
the maxima. The first of equal maxima wins; a NaN in a window wins, as in PyTorch (the last
NaN's position).
"""

cimport numpy as cnp
from libc.string cimport memcpy, memset

from engine.blas cimport floating
from engine._check cimport (
    GIL_FREE_WORK, shape, float_type, array, array_or_none, f32, f64, intp, ndim, shape_is,
    same_shape, dims_are, disjoint, disjoint_from,
)
from engine.vecmath cimport pm_select
from engine._geometry cimport out_size, window_args, window_positions
from engine._max_row cimport max_row_taps

cdef extern from "_pool2.h" nogil:
    void pm_max2x2_row_f(const float *r0, const float *r1, float *y, cnp.npy_intp *idx,
                         cnp.npy_intp at, cnp.npy_intp W, cnp.npy_intp n, const float *end)
    void pm_max2x2_row_d(const double *r0, const double *r1, double *y, cnp.npy_intp *idx,
                         cnp.npy_intp at, cnp.npy_intp W, cnp.npy_intp n, const double *end)

cnp.import_array()


def output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride=1, Py_ssize_t pad=0,
                Py_ssize_t dilation=1, bint ceil_mode=False):
    """Window positions along an axis of ``size``; 0 if none fits (as conv.output_size).

    ``pad = -1`` is SAME padding; ``ceil_mode`` counts a last partial window.
    """
    return window_positions(size, kernel, stride, pad, dilation, ceil_mode)


# Sizes, offsets and window counts are Py_ssize_t: a plane, a window (kH * kW) and the index
# of a tap in the plane may all pass 2**31 (a 65536 x 32769 window once overflowed its count
# and its offsets in ints, and crashed).

cdef struct Pool:
    Py_ssize_t planes          # N * C
    Py_ssize_t H, W, oH, oW
    Py_ssize_t kH, kW, sH, sW
    Py_ssize_t pT, pL, pB, pR  # leading and trailing pads


cdef int _pool_geometry(Pool *p, cnp.ndarray x, Py_ssize_t kw, Py_ssize_t kh, Py_ssize_t sw,
                        Py_ssize_t sh, Py_ssize_t pw, Py_ssize_t ph, bint ceil_mode) except -1:
    """Fill ``p`` for input ``x`` (C, H, W) or (N, C, H, W)."""
    cdef Py_ssize_t pads[2]
    if kw < 1 or kh < 1 or sw < 1 or sh < 1:
        raise ValueError(f"kernel and strides must be >= 1, got {kw}x{kh}, {sw}, {sh}")
    if not ((pw >= 0 and ph >= 0) or (pw == -1 and ph == -1)):
        raise ValueError(f"pads must be >= 0, or both -1 for SAME, got {pw}, {ph}")
    if pw > kw // 2 or ph > kh // 2:
        raise ValueError(f"pads {pw}, {ph} exceed half the {kw}x{kh} kernel")
    window_args(kw, sw, pw, 1)
    window_args(kh, sh, ph, 1)
    cdef int nd = ndim(x, "input", 3, 4)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    p.H, p.W = d[nd - 2], d[nd - 1]
    p.planes = d[0] * d[1] if nd == 4 else d[0]
    p.oH = out_size(p.H, kh, sh, ph, 1, ceil_mode, pads)
    p.pT, p.pB = pads[0], pads[1]
    p.oW = out_size(p.W, kw, sw, pw, 1, ceil_mode, pads)
    p.pL, p.pR = pads[0], pads[1]
    if p.oH <= 0 or p.oW <= 0:
        padding = " (SAME padding)" if pw == -1 else (
            f" (padded by {ph}, {pw})" if pw or ph else "")
        raise ValueError(f"input is {p.H}x{p.W}{padding}, smaller than the {kh}x{kw} kernel")
    p.kH, p.kW, p.sH, p.sW = kh, kw, sh, sw
    return 0


cdef tuple _lead(cnp.ndarray a):
    """The shape of ``a`` but its last two dimensions (a slice that needs no wraparound)."""
    cdef int nd = cnp.PyArray_NDIM(a)
    return shape(a)[:nd - 2 if nd > 2 else 0]


cdef int _pooled_is(cnp.ndarray a, str what, cnp.ndarray x, const Pool *p) except -1:
    """``a`` has the pooled shape of ``x``: its leading sizes, then (oH, oW)."""
    cdef int nd = cnp.PyArray_NDIM(x), i
    cdef cnp.npy_intp dims[4]
    for i in range(nd - 2):
        dims[i] = cnp.PyArray_DIMS(x)[i]
    dims[nd - 2], dims[nd - 1] = p.oH, p.oW
    return dims_are(a, what, nd, dims)


cdef int _index_range(cnp.ndarray idx, Py_ssize_t bound) except -1:
    """Every index lies in [0, bound): backward writes through them."""
    cdef cnp.npy_intp *i = intp(idx)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(idx), j
    cdef bint bad = False
    with nogil:
        for j in range(n):
            if i[j] < 0 or i[j] >= bound:
                bad = True
                break
    if bad:
        raise ValueError(f"indices holds {i[j]}, outside [0, {bound})")
    return 0


# -- SpatialMaxPooling ------------------------------------------------------------------------

def max_pool_update_output(input, output, indices, Py_ssize_t kernel_w, Py_ssize_t kernel_h,
                           Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                           Py_ssize_t pad_h, bint ceil_mode):
    """output := the maximum of each window; indices := its flat position in the plane, or
    only the maxima where ``indices`` is None (inference: nothing will scatter back).

    (N, C, H, W) -> (N, C, oH, oW); (C, H, W) -> (C, oH, oW). Padding never wins; pads -1, -1
    mean SAME.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array_or_none(indices, "indices", cnp.NPY_INTP, True)
    cdef Pool p
    _pool_geometry(&p, x, kernel_w, kernel_h, stride_w, stride_h, pad_w, pad_h, ceil_mode)
    _pooled_is(y, "output", x, &p)
    disjoint(y, "output", x, "input")
    if idx is not None:
        _pooled_is(idx, "indices", x, &p)
        disjoint_from(idx, "indices", x, "input", y, "output")
    if cnp.PyArray_SIZE(x) < GIL_FREE_WORK:  # a small batch: the GIL is kept (_check.pxd)
        if t == cnp.NPY_FLOAT32:
            _max_forward(f32(x), f32(y), intp(idx), &p)
        else:
            _max_forward(f64(x), f64(y), intp(idx), &p)
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _max_forward(f32(x), f32(y), intp(idx), &p)
        else:
            _max_forward(f64(x), f64(y), intp(idx), &p)


cdef inline bint _halves(const Pool *p) noexcept nogil:
    """A 2x2 window moved by 2 and every window whole: _max_2x2 runs."""
    return (p.kH == 2 and p.kW == 2 and p.sH == 2 and p.sW == 2 and p.pT == 0 and p.pL == 0
            and 2 * p.oH <= p.H and 2 * p.oW <= p.W)


cdef void _max_forward(const floating *x, floating *y, cnp.npy_intp *idx,
                       const Pool *p) noexcept nogil:
    # One output row at a time, each input row of its windows folded in by _max_row.pxd's
    # tap sweep. The branchy per-window loop took 1140 us on (64, 6, 24, 24) float32 (torch
    # 1170 us), this one 480 us (the same per-window loop with masks: 540 us, its chain of
    # dependent taps is the limit).
    cdef Py_ssize_t _plane, oy, ox, h0, h1, iy, w0
    cdef size_t plane = <size_t> p.H * p.W, out = <size_t> p.oH * p.oW
    cdef const floating *row
    cdef floating *yr
    cdef cnp.npy_intp *ir = NULL
    if _halves(p):
        _max_2x2(x, y, idx, p)
        return
    for _plane in range(p.planes):
        for oy in range(p.oH):
            h0 = oy * p.sH - p.pT
            h1 = min(h0 + p.kH, p.H)
            h0 = max(h0, 0)
            yr = y + <size_t> oy * p.oW
            if idx != NULL:  # NULL: the maxima only
                ir = idx + <size_t> oy * p.oW
            row = x + <size_t> h0 * p.W
            for ox in range(p.oW):
                w0 = max(ox * p.sW - p.pL, 0)  # the window's first tap inside the input
                yr[ox] = row[w0]
                if idx != NULL:
                    ir[ox] = h0 * p.W + w0
            for iy in range(h0, h1):
                max_row_taps(x + <size_t> iy * p.W, yr, ir, iy * p.W, p.W, p.kW, p.sW, p.pL,
                             p.oW, False)
        x += plane
        y += out
        if idx != NULL:
            idx += out


cdef void _max_2x2(const floating *x, floating *y, cnp.npy_intp *idx,
                   const Pool *p) noexcept nogil:
    """_max_forward of whole 2x2 windows moved by 2, a row of outputs at a time in vectors
    (_pool2.h), in the general loop's order (so the same tap wins a tie or a NaN). float32,
    minimum of 300 on a shared machine, general loop -> four taps in registers: (64, 6, 28,
    28) 529 -> 225 us, (64, 16, 10, 10) 275 -> 77 us, (1, 6, 28, 28) 12 -> 4.3 us; then in
    vectors (CPU time): (64, 6, 28, 28) 300 -> 90 us."""
    cdef Py_ssize_t _plane, oy, W = p.W, oW = p.oW
    cdef size_t plane = <size_t> p.H * p.W, out = <size_t> p.oH * p.oW
    cdef const floating *r0
    cdef const floating *end = x + plane * p.planes
    cdef cnp.npy_intp *ir = NULL
    for _plane in range(p.planes):
        for oy in range(p.oH):
            r0 = x + <size_t> 2 * oy * W
            if idx != NULL:
                ir = idx + oy * oW
            if floating is float:
                pm_max2x2_row_f(r0, r0 + W, y + oy * oW, ir, 2 * oy * W, W, oW, end)
            else:
                pm_max2x2_row_d(r0, r0 + W, y + oy * oW, ir, 2 * oy * W, W, oW, end)
        x += plane
        y += out
        if idx != NULL:
            idx += out


def max_pool_update_grad_input(input, grad_output, grad_input, indices):
    """grad_input := grad_output scattered (added) to the positions in indices.

    (N, C, oH, oW) -> (N, C, H, W), shaped like input; indices as from max_pool_update_output.
    """
    _max_backward(input, grad_output, grad_input, indices, False)


cdef int _max_backward(input, grad_output, grad_input, indices, bint temporal) except -1:
    """The backward of spatial or ``temporal`` max pooling: check, then _scatter_back."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INTP, False)
    cdef int nd = ndim(x, "input", 2 + (not temporal), 3 + (not temporal))
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    if temporal and (cnp.PyArray_NDIM(go) != nd or _lead(go) != _lead(x)
                     or cnp.PyArray_DIMS(go)[nd - 1] != d[nd - 1]):
        raise ValueError(f"gradOutput has shape {shape(go)}, expected {_lead(x)} + "
                         f"(outputFrames, {d[nd - 1]})")
    if not temporal and (cnp.PyArray_NDIM(go) != nd or _lead(go) != _lead(x)):
        raise ValueError(f"gradOutput has shape {shape(go)}, expected {_lead(x)} + "
                         f"(outputHeight, outputWidth)")
    same_shape(idx, "indices", go)
    same_shape(gi, "gradInput", x)
    disjoint_from(gi, "gradInput", go, "gradOutput", idx, "indices")
    # temporal: frames, channels
    cdef Py_ssize_t H = d[nd - 2], W = d[nd - 1]
    cdef cnp.npy_intp *e = cnp.PyArray_DIMS(go)
    cdef Py_ssize_t blocks
    if temporal:
        _index_range(idx, H)
        blocks = (d[0] if nd == 3 else 1) if W else 0
        _scatter_back(t, go, gi, idx, blocks, <size_t> H * W, <size_t> e[nd - 2] * W, W, W)
    else:
        _index_range(idx, H * W)
        blocks = cnp.PyArray_SIZE(x) // (H * W) if H and W else 0
        _scatter_back(t, go, gi, idx, blocks, <size_t> H * W, <size_t> e[nd - 2] * e[nd - 1],
                      1, 1)
    return 0


cdef void _scatter_back(int t, cnp.ndarray go, cnp.ndarray gi, cnp.ndarray idx,
                        Py_ssize_t blocks, size_t in_block, size_t out_block, size_t stride,
                        size_t lanes) noexcept:
    """The backward of a max pooling, on checked arguments: _scatter of t's type."""
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scatter(f32(go), f32(gi), intp(idx), blocks, in_block, out_block, stride,
                     lanes)
        else:
            _scatter(f64(go), f64(gi), intp(idx), blocks, in_block, out_block, stride,
                     lanes)


cdef void _scatter(const floating *go, floating *gi, const cnp.npy_intp *idx,
                   Py_ssize_t blocks, size_t in_block, size_t out_block, size_t stride,
                   size_t lanes) noexcept nogil:
    """gi[block][idx[j] * stride + j % lanes] += go[block][j], gi zeroed first."""
    cdef Py_ssize_t _block
    cdef size_t j
    memset(gi, 0, blocks * in_block * sizeof(floating))
    for _block in range(blocks):
        if lanes == 1:
            for j in range(out_block):
                gi[idx[j]] += go[j]
        else:
            for j in range(out_block):
                gi[<size_t> idx[j] * stride + j % lanes] += go[j]
        go += out_block
        gi += in_block
        idx += out_block


# -- SpatialAveragePooling --------------------------------------------------------------------

def avg_pool_update_output(input, output, Py_ssize_t kernel_w, Py_ssize_t kernel_h,
                           Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                           Py_ssize_t pad_h, bint ceil_mode, bint count_include_pad, bint divide):
    """output := the mean of each window.

    The divisor counts the padding inside the window when ``count_include_pad``; without
    ``divide`` the mean is multiplied by kW * kH (BigDL). Shapes as for max pooling.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Pool p
    _pool_geometry(&p, x, kernel_w, kernel_h, stride_w, stride_h, pad_w, pad_h, ceil_mode)
    _pooled_is(y, "output", x, &p)
    disjoint(y, "output", x, "input")
    _avg_of(t, x, y, &p, count_include_pad, divide, False)


def avg_pool_update_grad_input(input, grad_output, grad_input, Py_ssize_t kernel_w,
                               Py_ssize_t kernel_h, Py_ssize_t stride_w, Py_ssize_t stride_h,
                               Py_ssize_t pad_w, Py_ssize_t pad_h, bint ceil_mode,
                               bint count_include_pad, bint divide):
    """grad_input := each window's gradient shared out over the window (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Pool p
    _pool_geometry(&p, x, kernel_w, kernel_h, stride_w, stride_h, pad_w, pad_h, ceil_mode)
    _pooled_is(go, "gradOutput", x, &p)
    same_shape(gi, "gradInput", x)
    disjoint(gi, "gradInput", go, "gradOutput")
    _avg_of(t, gi, go, &p, count_include_pad, divide, True)


cdef void _avg_of(int t, cnp.ndarray x, cnp.ndarray y, const Pool *p, bint include_pad,
                  bint divide, bint adjoint) noexcept:
    """_avg of t's type on checked arguments."""
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _avg(f32(x), f32(y), p, include_pad, divide, adjoint)
        else:
            _avg(f64(x), f64(y), p, include_pad, divide, adjoint)


cdef void _avg(floating *x, floating *y, const Pool *p, bint include_pad, bint divide,
               bint adjoint) noexcept nogil:
    """y := window means of x; or, ``adjoint``, x := the transpose applied to y."""
    cdef Py_ssize_t _plane, oy, ox, h0, h1, w0, w1, h0c, h1c, w0c, w1c, iy, ix
    cdef size_t plane = <size_t> p.H * p.W, out = <size_t> p.oH * p.oW
    cdef floating s, count, scale = <floating> (p.kH * p.kW) if not divide else 1
    cdef Py_ssize_t W = p.W
    cdef floating *row
    if adjoint:
        memset(x, 0, p.planes * plane * sizeof(floating))
    for _plane in range(p.planes):
        for oy in range(p.oH):
            h0 = oy * p.sH - p.pT
            h1 = min(h0 + p.kH, p.H + p.pB)
            for ox in range(p.oW):
                w0 = ox * p.sW - p.pL
                w1 = min(w0 + p.kW, p.W + p.pR)
                # in floating, like the sum: the window may hold more than 2**31 taps
                count = <floating> (h1 - h0) * <floating> (w1 - w0)
                h0c, w0c = max(h0, 0), max(w0, 0)
                h1c, w1c = min(h1, p.H), min(w1, p.W)
                if not include_pad:
                    count = <floating> (h1c - h0c) * <floating> (w1c - w0c)
                if adjoint:
                    s = y[oy * p.oW + ox] * scale / count
                    for iy in range(h0c, h1c):
                        row = x + iy * W
                        for ix in range(w0c, w1c):
                            row[ix] += s
                else:
                    s = 0
                    for iy in range(h0c, h1c):
                        row = x + iy * W
                        for ix in range(w0c, w1c):
                            s = s + row[ix]
                    y[oy * p.oW + ox] = s * scale / count
        x += plane
        y += out


# -- TemporalMaxPooling -----------------------------------------------------------------------

cdef Py_ssize_t _frames(cnp.ndarray x, Py_ssize_t kernel_w, Py_ssize_t stride_w,
                        int *nd) except -1:
    """Output frames for input ``x`` (T, C) or (N, T, C)."""
    cdef Py_ssize_t pads[2]
    if kernel_w < 1 or stride_w < 1:
        raise ValueError(f"kernel width and stride must be >= 1, got {kernel_w}, {stride_w}")
    window_args(kernel_w, stride_w, 0, 1)
    nd[0] = ndim(x, "input", 2, 3)
    cdef Py_ssize_t T = cnp.PyArray_DIMS(x)[nd[0] - 2]
    cdef Py_ssize_t To = out_size(T, kernel_w, stride_w, 0, 1, False, pads)
    if To <= 0:
        raise ValueError(f"input has {T} frames, fewer than the kernel width {kernel_w}")
    return To


def temporal_max_pool_update_output(input, output, indices, Py_ssize_t kernel_w,
                                    Py_ssize_t stride_w):
    """output[t, c] := max of input[t*dW : t*dW + kW, c]; indices := the frame it came from,
    or only the maxima where ``indices`` is None (inference: nothing will scatter back).

    (N, T, C) -> (N, T', C), T' = (T - kW) // dW + 1; (T, C) -> (T', C).
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array_or_none(indices, "indices", cnp.NPY_INTP, True)
    cdef int nd
    cdef Py_ssize_t To = _frames(x, kernel_w, stride_w, &nd)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    expected = _lead(x) + (To, d[nd - 1])
    shape_is(y, "output", expected)
    disjoint(y, "output", x, "input")
    if idx is not None:
        shape_is(idx, "indices", expected)
        disjoint_from(idx, "indices", x, "input", y, "output")
    cdef Py_ssize_t n = d[0] if nd == 3 else 1, T = d[nd - 2], C = d[nd - 1]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _temporal_max(f32(x), f32(y), intp(idx), n, T, C, To, kernel_w, stride_w)
        else:
            _temporal_max(f64(x), f64(y), intp(idx), n, T, C, To, kernel_w, stride_w)


cdef void _temporal_max(const floating *x, floating *y, cnp.npy_intp *idx, Py_ssize_t n,
                        Py_ssize_t T, Py_ssize_t C, Py_ssize_t To, Py_ssize_t kW,
                        Py_ssize_t dW) noexcept nogil:
    # A frame at a time, the larger value or a NaN taken lane by lane by masks, not by a
    # branch (as _max_forward): the loops run in vectors. Float32 (16, 100, 64) by 3 with
    # stride 2 took 535-540 us with a branch per lane; by masks 93-114 us with the indices,
    # 47-57 us without.
    cdef Py_ssize_t s, t, f, _f, c
    cdef const floating *row
    cdef floating *yt
    cdef cnp.npy_intp *it
    cdef floating v, m
    cdef cnp.npy_intp take, at
    for s in range(n):
        for t in range(To):
            yt = y + (<size_t> s * To + t) * C
            row = x + (<size_t> s * T + t * dW) * C
            memcpy(yt, row, C * sizeof(floating))
            if idx == NULL:  # the maxima only
                for _f in range(1, kW):
                    row += C
                    for c in range(C):
                        v = row[c]
                        m = yt[c]
                        yt[c] = pm_select(-<cnp.npy_intp> ((v > m) | (v != v)), v, m)
                continue
            it = idx + (<size_t> s * To + t) * C
            for c in range(C):
                it[c] = t * dW
            for f in range(1, kW):
                row += C
                at = t * dW + f
                for c in range(C):
                    v = row[c]
                    m = yt[c]
                    take = -<cnp.npy_intp> ((v > m) | (v != v))  # 0 or -1
                    yt[c] = pm_select(take, v, m)
                    it[c] ^= (it[c] ^ at) & take


def temporal_max_pool_update_grad_input(input, grad_output, grad_input, indices):
    """grad_input[indices[t, c], c] += grad_output[t, c], from zero (shape of input)."""
    _max_backward(input, grad_output, grad_input, indices, True)
