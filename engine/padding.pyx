"""Kernels of padding, cropping and resizing: SpatialZeroPadding, Padding, Cropping2D/3D,
UpSampling1D/2D/3D (nearest, integer factors) and ResizeBilinear.

A C-contiguous array seen from ``axis`` on is (outer, n0, n1, n2, inner): up to three
*windowed* axes, then everything after them flattened into ``inner``. A layer with fewer
windowed axes gets leading ones of size 1. So NCHW images window (H, W) with inner 1, NHWC
images window (H, W) with inner C, and sequences (N, T, F) window T with inner F: one kernel
each, whatever the layout. Runs along the last windowed axis are contiguous (times inner),
which is what the loops copy, fill or sum.
"""

cimport numpy as cnp
from libc.string cimport memcpy

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, ndim, disjoint

cnp.import_array()


cdef struct Win:
    Py_ssize_t outer, inner
    Py_ssize_t n[3]    # input sizes of the windowed axes
    Py_ssize_t m[3]    # output sizes of the windowed axes
    Py_ssize_t off[3]  # output index minus input index (leading padding; < 0 crops)


cdef tuple _ints(object values, str what, int lo, int hi):
    if not isinstance(values, tuple) or not lo <= len(values) <= hi:
        raise TypeError(f"{what} must be a tuple of {lo} to {hi} ints, got {values!r}")
    return tuple(int(v) for v in values)


cdef int _window(Win *w, cnp.ndarray x, cnp.ndarray y, str ywhat, Py_ssize_t axis, int k,
                 str xwhat="input") except -1:
    """Fill the outer, inner and input sizes of ``w`` for ``k`` windowed axes of ``x`` from
    ``axis``; check that ``y`` agrees with ``x`` outside them and store its windowed sizes."""
    cdef int nd = cnp.PyArray_NDIM(x), i
    if axis < 0 or axis + k > nd:
        raise ValueError(f"{xwhat} has shape {shape(x)}: no {k} axes from axis {axis}")
    if cnp.PyArray_NDIM(y) != nd:
        raise ValueError(f"{ywhat} has shape {shape(y)}, expected {nd} axes")
    cdef cnp.npy_intp *dx = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *dy = cnp.PyArray_DIMS(y)
    w.outer = 1
    w.inner = 1
    for i in range(nd):
        if axis <= i < axis + k:
            continue
        if dx[i] != dy[i]:
            raise ValueError(f"{ywhat} has shape {shape(y)}, {xwhat} {shape(x)}: they differ "
                             f"on axis {i}")
        if i < axis:
            w.outer *= dx[i]
        else:
            w.inner *= dx[i]
    for i in range(3):
        w.n[i] = w.m[i] = 1
        w.off[i] = 0
    for i in range(k):
        w.n[3 - k + i] = dx[axis + i]
        w.m[3 - k + i] = dy[axis + i]
    return 0


cdef inline void _fill(floating *y, Py_ssize_t n, floating v) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = v


# -- padding and cropping ---------------------------------------------------------------------

def pad_update_output(input, output, Py_ssize_t axis, tuple before, tuple after, double value):
    """output := input with before[i] entries of ``value`` put in front of axis ``axis + i`` and
    after[i] behind it; a negative count crops that many entries instead.

    Up to three axes; output has input's shape but on them, where it is
    n + before[i] + after[i] (at least 1).
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Win w
    _pads(&w, x, y, "output", axis, before, after, "input")
    disjoint(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _shift(f32(x), f32(y), &w, <float> value)
        else:
            _shift(f64(x), f64(y), &w, value)


def pad_update_grad_input(input, grad_output, grad_input, Py_ssize_t axis, tuple before,
                          tuple after):
    """grad_input := the entries of grad_output that input's entries went to (0 where they
    were cropped): the adjoint of pad_update_output. Shapes as there."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Win w, back
    cdef int i
    _pads(&w, x, go, "gradOutput", axis, before, after, "input")
    if shape(gi) != shape(x):
        raise ValueError(f"gradInput has shape {shape(gi)}, expected {shape(x)}")
    disjoint(gi, "gradInput", go, "gradOutput")
    back.outer, back.inner = w.outer, w.inner
    for i in range(3):
        back.n[i], back.m[i], back.off[i] = w.m[i], w.n[i], -w.off[i]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _shift(f32(go), f32(gi), &back, 0)
        else:
            _shift(f64(go), f64(gi), &back, 0)


cdef int _pads(Win *w, cnp.ndarray x, cnp.ndarray y, str ywhat, Py_ssize_t axis, tuple before,
               tuple after, str xwhat) except -1:
    before = _ints(before, "before", 1, 3)
    after = _ints(after, "after", len(before), len(before))
    cdef int k = len(before), i, j
    _window(w, x, y, ywhat, axis, k, xwhat)
    for i in range(k):
        j = 3 - k + i
        if w.n[j] + before[i] + after[i] < 1:
            raise ValueError(f"{xwhat} axis {axis + i} of size {w.n[j]}, padded by {before[i]} "
                             f"and {after[i]}, leaves nothing")
        if w.m[j] != w.n[j] + before[i] + after[i]:
            raise ValueError(f"{ywhat} has shape {shape(y)}, expected size "
                             f"{w.n[j] + before[i] + after[i]} on axis {axis + i}")
        w.off[j] = before[i]
    return 0


cdef void _shift(const floating *x, floating *y, const Win *w, floating value) noexcept nogil:
    """y[o, a, b, c, :] := x[o, a - off0, b - off1, c - off2, :], ``value`` outside x."""
    cdef Py_ssize_t o, a, b, ia, ib, ni = w.inner
    cdef Py_ssize_t row_x = w.n[2] * ni, row_y = w.m[2] * ni
    cdef Py_ssize_t lo = min(max(w.off[2], 0), w.m[2])
    cdef Py_ssize_t hi = max(min(w.off[2] + w.n[2], w.m[2]), lo)
    cdef const floating *xo
    cdef floating *yr
    for o in range(w.outer):
        xo = x + o * w.n[0] * w.n[1] * row_x
        for a in range(w.m[0]):
            ia = a - w.off[0]
            for b in range(w.m[1]):
                ib = b - w.off[1]
                yr = y + ((o * w.m[0] + a) * w.m[1] + b) * row_y
                if ia < 0 or ia >= w.n[0] or ib < 0 or ib >= w.n[1] or lo == hi:
                    _fill(yr, row_y, value)
                    continue
                _fill(yr, lo * ni, value)
                memcpy(yr + lo * ni, xo + (ia * w.n[1] + ib) * row_x + (lo - w.off[2]) * ni,
                       (hi - lo) * ni * sizeof(floating))
                _fill(yr + hi * ni, (w.m[2] - hi) * ni, value)


# -- Padding: a block inserted inside an axis -------------------------------------------------

def insert_update_output(input, output, Py_ssize_t axis, Py_ssize_t at, double value):
    """output := input with entries of ``value`` inserted along ``axis`` before entry ``at``.

    output has input's shape but on ``axis``, where it is longer: by the count inserted.
    0 <= at <= input.shape[axis].
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Win w
    _insert(&w, x, y, "output", axis, at)
    disjoint(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _insert_core(f32(x), f32(y), &w, at, <float> value, False)
        else:
            _insert_core(f64(x), f64(y), &w, at, value, False)


def insert_update_grad_input(input, grad_output, grad_input, Py_ssize_t axis, Py_ssize_t at):
    """grad_input := grad_output without the inserted entries (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Win w
    _insert(&w, x, go, "gradOutput", axis, at)
    if shape(gi) != shape(x):
        raise ValueError(f"gradInput has shape {shape(gi)}, expected {shape(x)}")
    disjoint(gi, "gradInput", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _insert_core(f32(gi), f32(go), &w, at, 0, True)
        else:
            _insert_core(f64(gi), f64(go), &w, at, 0, True)


cdef int _insert(Win *w, cnp.ndarray x, cnp.ndarray y, str ywhat, Py_ssize_t axis,
                 Py_ssize_t at) except -1:
    _window(w, x, y, ywhat, axis, 1)
    if w.m[2] < w.n[2]:
        raise ValueError(f"{ywhat} has shape {shape(y)}, shorter than input {shape(x)} on "
                         f"axis {axis}")
    if at < 0 or at > w.n[2]:
        raise ValueError(f"insertion point {at} lies outside [0, {w.n[2]}]")
    return 0


cdef void _insert_core(floating *x, floating *y, const Win *w, Py_ssize_t at, floating value,
                       bint adjoint) noexcept nogil:
    """y[o, :at] = x[o, :at], y[o, at:at+p] = value, y[o, at+p:] = x[o, at:]; or, with
    ``adjoint``, x := y with those entries removed."""
    cdef Py_ssize_t o, ni = w.inner, p = w.m[2] - w.n[2]
    cdef floating *xr
    cdef floating *yr
    for o in range(w.outer):
        xr = x + o * w.n[2] * ni
        yr = y + o * w.m[2] * ni
        if adjoint:
            memcpy(xr, yr, at * ni * sizeof(floating))
            memcpy(xr + at * ni, yr + (at + p) * ni, (w.n[2] - at) * ni * sizeof(floating))
        else:
            memcpy(yr, xr, at * ni * sizeof(floating))
            _fill(yr + at * ni, p * ni, value)
            memcpy(yr + (at + p) * ni, xr + at * ni, (w.n[2] - at) * ni * sizeof(floating))


# -- UpSampling: nearest, integer factors ------------------------------------------------------

def upsample_update_output(input, output, Py_ssize_t axis, tuple scales):
    """output[..., a*s0 + i, b*s1 + j, c*s2 + k, ...] := input[..., a, b, c, ...] for the
    axes from ``axis`` on, one factor each in ``scales`` (up to three, each >= 1)."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Win w
    _scales(&w, x, y, "output", axis, scales)
    disjoint(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _upsample(f32(x), f32(y), &w)
        else:
            _upsample(f64(x), f64(y), &w)


def upsample_update_grad_input(input, grad_output, grad_input, Py_ssize_t axis, tuple scales):
    """grad_input[..., a, b, c, ...] := the sum of grad_output over the block input's entry
    was copied to (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Win w
    _scales(&w, x, go, "gradOutput", axis, scales)
    if shape(gi) != shape(x):
        raise ValueError(f"gradInput has shape {shape(gi)}, expected {shape(x)}")
    disjoint(gi, "gradInput", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _upsample_back(f32(go), f32(gi), &w)
        else:
            _upsample_back(f64(go), f64(gi), &w)


cdef int _scales(Win *w, cnp.ndarray x, cnp.ndarray y, str ywhat, Py_ssize_t axis,
                 tuple scales) except -1:
    scales = _ints(scales, "scales", 1, 3)
    cdef int k = len(scales), i, j
    _window(w, x, y, ywhat, axis, k)
    for i in range(k):
        j = 3 - k + i
        if scales[i] < 1:
            raise ValueError(f"scale factors must be >= 1, got {scales}")
        if w.m[j] != w.n[j] * scales[i]:
            raise ValueError(f"{ywhat} has shape {shape(y)}, expected size "
                             f"{w.n[j] * scales[i]} on axis {axis + i}")
    return 0


cdef void _upsample(const floating *x, floating *y, const Win *w) noexcept nogil:
    """Each input row (along the last windowed axis) is widened once into its first output
    row, which is then copied to the other rows of its block: one pass of arithmetic, the
    rest memcpy."""
    cdef Py_ssize_t ni = w.inner, o, a, b, c, r, e, i
    cdef Py_ssize_t s0 = w.m[0] // w.n[0] if w.n[0] else 1
    cdef Py_ssize_t s1 = w.m[1] // w.n[1] if w.n[1] else 1
    cdef Py_ssize_t s2 = w.m[2] // w.n[2] if w.n[2] else 1
    cdef Py_ssize_t row_x = w.n[2] * ni, row_y = w.m[2] * ni, plane_y = w.m[1] * row_y
    cdef const floating *xr = x
    cdef floating *yp
    cdef floating *yr
    cdef floating v
    if row_y == 0:
        return
    for o in range(w.outer):
        for a in range(w.n[0]):
            yp = y + (o * w.m[0] + a * s0) * plane_y
            for b in range(w.n[1]):
                yr = yp + b * s1 * row_y
                if ni == 1 and s2 == 2:
                    for c in range(w.n[2]):
                        v = xr[c]
                        yr[2 * c] = v
                        yr[2 * c + 1] = v
                elif ni == 1:
                    for c in range(w.n[2]):
                        v = xr[c]
                        for r in range(s2):
                            yr[c * s2 + r] = v
                else:
                    for c in range(w.n[2]):
                        for r in range(s2):
                            for e in range(ni):
                                yr[(c * s2 + r) * ni + e] = xr[c * ni + e]
                for i in range(1, s1):
                    memcpy(yr + i * row_y, yr, row_y * sizeof(floating))
                xr += row_x
            for i in range(1, s0):
                memcpy(yp + i * plane_y, yp, plane_y * sizeof(floating))


cdef void _upsample_back(const floating *go, floating *gi, const Win *w) noexcept nogil:
    cdef Py_ssize_t ni = w.inner, o, a, b, c, r, e, i, j
    cdef Py_ssize_t s0 = w.m[0] // w.n[0] if w.n[0] else 1
    cdef Py_ssize_t s1 = w.m[1] // w.n[1] if w.n[1] else 1
    cdef Py_ssize_t s2 = w.m[2] // w.n[2] if w.n[2] else 1
    cdef Py_ssize_t row_x = w.n[2] * ni, row_y = w.m[2] * ni, plane_y = w.m[1] * row_y
    cdef floating *gr = gi
    cdef const floating *src
    cdef floating s
    for o in range(w.outer):
        for a in range(w.n[0]):
            for b in range(w.n[1]):
                _fill(gr, row_x, <floating> 0)
                for i in range(s0):
                    for j in range(s1):
                        src = go + (o * w.m[0] + a * s0 + i) * plane_y + (b * s1 + j) * row_y
                        if ni == 1 and s2 == 2:
                            for c in range(w.n[2]):
                                gr[c] += src[2 * c] + src[2 * c + 1]
                        elif ni == 1:
                            for c in range(w.n[2]):
                                s = 0
                                for r in range(s2):
                                    s = s + src[c * s2 + r]
                                gr[c] += s
                        else:
                            for c in range(w.n[2]):
                                for r in range(s2):
                                    for e in range(ni):
                                        gr[c * ni + e] += src[(c * s2 + r) * ni + e]
                gr += row_x


# -- ResizeBilinear ---------------------------------------------------------------------------

def resize_bilinear_update_output(input, output, bint align_corners, bint channels_last):
    """output := input resized by bilinear interpolation to output's height and width.

    (N, C, H, W) -> (N, C, oH, oW), or NHWC with ``channels_last``. Output row y reads input
    row y * scale, scale = (H - 1) / (oH - 1) with ``align_corners`` (and oH > 1), else H / oH
    (TensorFlow's resize_bilinear without half-pixel centres, as BigDL); columns alike.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Win w
    _bilinear(&w, x, y, "output", channels_last)
    disjoint(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _resize(f32(x), f32(y), &w, align_corners, False)
        else:
            _resize(f64(x), f64(y), &w, align_corners, False)


def resize_bilinear_update_grad_input(input, grad_output, grad_input, bint align_corners,
                                      bint channels_last):
    """grad_input := the adjoint of the resize applied to grad_output (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Win w
    _bilinear(&w, x, go, "gradOutput", channels_last)
    if shape(gi) != shape(x):
        raise ValueError(f"gradInput has shape {shape(gi)}, expected {shape(x)}")
    disjoint(gi, "gradInput", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _resize(f32(gi), f32(go), &w, align_corners, True)
        else:
            _resize(f64(gi), f64(go), &w, align_corners, True)


cdef int _bilinear(Win *w, cnp.ndarray x, cnp.ndarray y, str ywhat,
                   bint channels_last) except -1:
    ndim(x, "input", 4, 4)
    _window(w, x, y, ywhat, 1 if channels_last else 2, 2)
    if w.n[1] < 1 or w.n[2] < 1:
        raise ValueError(f"input has shape {shape(x)}: an empty image cannot be resized")
    return 0


cdef inline double _scale(Py_ssize_t n, Py_ssize_t m, bint align) noexcept nogil:
    if align and m > 1:
        return <double> (n - 1) / <double> (m - 1)
    return <double> n / <double> m


cdef void _resize(floating *x, floating *y, const Win *w, bint align,
                  bint adjoint) noexcept nogil:
    """y := bilinear resize of x; or, ``adjoint``, x := its transpose applied to y."""
    cdef Py_ssize_t H = w.n[1], W = w.n[2], oH = w.m[1], oW = w.m[2], ni = w.inner
    cdef double sh = _scale(H, oH, align), sw = _scale(W, oW, align), f
    cdef Py_ssize_t o, yy, xx, e, y0, y1, x0, x1
    cdef floating ly, lx, top, bottom, g
    cdef floating *xp
    cdef floating *yr
    cdef floating *r0
    cdef floating *r1
    if adjoint:
        _fill(x, w.outer * H * W * ni, <floating> 0)
    for o in range(w.outer):
        xp = x + o * H * W * ni
        for yy in range(oH):
            f = yy * sh
            y0 = min(<Py_ssize_t> f, H - 1)
            y1 = min(y0 + 1, H - 1)
            ly = <floating> (f - y0)
            r0 = xp + y0 * W * ni
            r1 = xp + y1 * W * ni
            yr = y + ((o * oH) + yy) * oW * ni
            for xx in range(oW):
                f = xx * sw
                x0 = min(<Py_ssize_t> f, W - 1)
                x1 = min(x0 + 1, W - 1)
                lx = <floating> (f - x0)
                for e in range(ni):
                    if adjoint:
                        g = yr[xx * ni + e]
                        r0[x0 * ni + e] += g * (1 - ly) * (1 - lx)
                        r0[x1 * ni + e] += g * (1 - ly) * lx
                        r1[x0 * ni + e] += g * ly * (1 - lx)
                        r1[x1 * ni + e] += g * ly * lx
                    else:
                        top = r0[x0 * ni + e] + (r0[x1 * ni + e] - r0[x0 * ni + e]) * lx
                        bottom = r1[x0 * ni + e] + (r1[x1 * ni + e] - r1[x0 * ni + e]) * lx
                        yr[xx * ni + e] = top + (bottom - top) * ly
