"""Kernels of LayerNormalization: each row of n values (the last axis) normalised on its own.

    y = (x - mean) * invstd * weight + bias,   invstd = 1 / sqrt(biased var + eps)

An input of any rank is seen as (rows, n). The forward keeps each row's mean and invstd for
the backward. The backward of a row needs two sums over it, a = sum(go * w) and
b = sum(go * w * xhat):

    gi = invstd * (go * w - a / n - xhat * b / n),   xhat = (x - mean) * invstd

and the parameter gradients are column sums over the rows, dw = sum(go * xhat), db = sum(go).
They are gathered into ``sums``, a (2, n) float64 buffer the caller owns, either in the same
row pass that writes gi (the row is then read from memory once for both) or on their own;
layernorm_acc_grad_parameters then adds them, scaled, to the gradients. Every sum ends in
double: partial sums in the data's type (vectorisable chains without -ffast-math) over chunks
of 64 values along a row or of 16 rows down a column, then folded into double.
"""

cimport numpy as cnp
from libc.math cimport sqrt
from libc.string cimport memset

from engine.blas cimport floating
from engine._check cimport (
    shape, float_type, array, f32, f64, ndim, vector_of, shape_is, disjoint_from,
)

cnp.import_array()


cdef Py_ssize_t _rows(cnp.ndarray x, Py_ssize_t n) except -1:
    """Rows of an input whose last axis holds the n normalised values."""
    cdef int d = ndim(x, "input", 1, 64)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(x)
    if dims[d - 1] != n:
        raise ValueError(f"input has {dims[d - 1]} values on its last axis, expected {n} "
                         f"(shape {shape(x)})")
    cdef Py_ssize_t rows = 1
    cdef int k
    for k in range(d - 1):
        rows *= dims[k]
    return rows


cdef cnp.ndarray _vec(object obj, str what, int t, bint writeable, Py_ssize_t n):
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    vector_of(a, what, n)
    return a


cdef cnp.ndarray _sums(object obj, Py_ssize_t n):
    """The (2, n) float64 buffer of the parameter sums."""
    cdef cnp.ndarray s = array(obj, "sums", cnp.NPY_FLOAT64, True)
    shape_is(s, "sums", (2, n))
    return s


# -- sums --------------------------------------------------------------------------------------
# Along a row: eight partial sums in double. Down the columns (the parameter gradients): the
# rows of a block summed in the data's type in buffers on the stack (in the gradInput loop
# itself for rows up to WIDE long), each block's sums then added in double.

cdef enum:
    ROWS = 16    # rows whose column sums are gathered in the data's type (see _column_sums)
    COLS = 256   # columns gathered at once
    WIDE = 2048  # rows up to this long gather their column sums in the gradInput loop


cdef inline double _sum(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
        a4 += x[i + 4]
        a5 += x[i + 5]
        a6 += x[i + 6]
        a7 += x[i + 7]
        i += 8
    while i < n:
        a0 += x[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline double _sumsq_dev(const floating *x, Py_ssize_t n, double c) noexcept nogil:
    """sum of (x - c)^2."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef double d0, d1, d2, d3, d4, d5, d6, d7
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        d0 = x[i] - c
        d1 = x[i + 1] - c
        d2 = x[i + 2] - c
        d3 = x[i + 3] - c
        d4 = x[i + 4] - c
        d5 = x[i + 5] - c
        d6 = x[i + 6] - c
        d7 = x[i + 7] - c
        a0 += d0 * d0
        a1 += d1 * d1
        a2 += d2 * d2
        a3 += d3 * d3
        a4 += d4 * d4
        a5 += d5 * d5
        a6 += d6 * d6
        a7 += d7 * d7
        i += 8
    while i < n:
        d0 = x[i] - c
        a0 += d0 * d0
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef inline void _row_sums(const floating *go, const floating *w, const floating *x,
                           Py_ssize_t n, floating m, double *sa, double *sb) noexcept nogil:
    """sa := sum(go * w); sb := sum(go * w * (x - m))."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0
    cdef double g0, g1, g2, g3
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        g0 = go[i] * w[i]
        g1 = go[i + 1] * w[i + 1]
        g2 = go[i + 2] * w[i + 2]
        g3 = go[i + 3] * w[i + 3]
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        b0 += g0 * (x[i] - m)
        b1 += g1 * (x[i + 1] - m)
        b2 += g2 * (x[i + 2] - m)
        b3 += g3 * (x[i + 3] - m)
        i += 4
    while i < n:
        g0 = go[i] * w[i]
        a0 += g0
        b0 += g0 * (x[i] - m)
        i += 1
    sa[0] = (a0 + a1) + (a2 + a3)
    sb[0] = (b0 + b1) + (b2 + b3)


cdef void _column_sums(const floating *x, const floating *go, const floating *sm,
                       const floating *si, double *sums, Py_ssize_t r0, Py_ssize_t r1,
                       Py_ssize_t n) noexcept nogil:
    """sums[0] += sum(go * xhat), sums[1] += sum(go) over rows r0 to r1 (at most ROWS): in the
    data's type within those rows, then in double."""
    cdef floating aw[COLS]
    cdef floating ab[COLS]
    cdef Py_ssize_t c0, j, r, width
    cdef const floating *xr
    cdef const floating *gr
    cdef floating m, s
    cdef double *dw
    cdef double *db
    c0 = 0
    while c0 < n:
        width = n - c0 if n - c0 < COLS else COLS
        for j in range(width):
            aw[j] = 0
            ab[j] = 0
        for r in range(r0, r1):
            xr = x + r * n + c0
            gr = go + r * n + c0
            m = sm[r]
            s = si[r]
            for j in range(width):
                aw[j] += gr[j] * ((xr[j] - m) * s)
                ab[j] += gr[j]
        dw = sums + c0
        db = sums + n + c0
        for j in range(width):
            dw[j] += aw[j]
            db[j] += ab[j]
        c0 += width


# -- forward ---------------------------------------------------------------------------------

def layernorm_update_output(input, output, weight, bias, save_mean, save_invstd, double eps):
    """output := (input - mean) * invstd * weight + bias along the last axis (n = weight's size);
    save_mean, save_invstd := each row's mean and 1 / sqrt(biased var + eps), (rows,)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    ndim(w, "weight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(w)[0]
    cdef cnp.ndarray b = _vec(bias, "bias", t, False, n)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t rows = _rows(x, n)
    cdef cnp.ndarray y = array(output, "output", t, True)
    shape_is(y, "output", shape(x))
    cdef cnp.ndarray sm = _vec(save_mean, "saveMean", t, True, rows)
    cdef cnp.ndarray si = _vec(save_invstd, "saveInvstd", t, True, rows)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", sm, "saveMean",
                  si, "saveInvstd")
    disjoint_from(sm, "saveMean", x, "input", w, "weight", b, "bias", si, "saveInvstd")
    disjoint_from(si, "saveInvstd", x, "input", w, "weight", b, "bias")
    if n == 0 or rows == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _update_output(f32(x), f32(y), f32(w), f32(b), f32(sm), f32(si), rows, n, eps)
        else:
            _update_output(f64(x), f64(y), f64(w), f64(b), f64(sm), f64(si), rows, n, eps)


cdef void _update_output(const floating *x, floating *y, const floating *w, const floating *b,
                         floating *sm, floating *si, Py_ssize_t rows, Py_ssize_t n,
                         double eps) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const floating *xr
    cdef floating *yr
    cdef double mean
    cdef floating m, s
    for r in range(rows):
        xr = x + r * n
        yr = y + r * n
        mean = _sum(xr, n) / n
        m = <floating> mean
        s = <floating> (1.0 / sqrt(_sumsq_dev(xr, n, mean) / n + eps))
        sm[r] = m
        si[r] = s
        for j in range(n):
            yr[j] = (xr[j] - m) * s * w[j] + b[j]


# -- backward --------------------------------------------------------------------------------

cdef tuple _backward_args(object input, object grad_output, object save_mean,
                          object save_invstd, int t, Py_ssize_t n):
    """(input, gradOutput, saveMean, saveInvstd, rows), checked."""
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t rows = _rows(x, n)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    shape_is(go, "gradOutput", shape(x))
    return (x, go, _vec(save_mean, "saveMean", t, False, rows),
            _vec(save_invstd, "saveInvstd", t, False, rows), rows)


def layernorm_update_grad_input(input, grad_output, grad_input, weight, save_mean, save_invstd,
                                sums=None):
    """grad_input := invstd * (go * w - mean(go * w) - xhat * mean(go * w * xhat)) per row,
    from the forward's save_mean and save_invstd.

    ``sums``, a (2, n) float64 array or None: when given, also := [sum(go * xhat),
    sum(go)] over the rows, in the same pass (layernorm_acc_grad_parameters adds them).
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    ndim(w, "weight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(w)[0], rows
    cdef cnp.ndarray x, go, sm, si
    x, go, sm, si, rows = _backward_args(input, grad_output, save_mean, save_invstd, t, n)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    shape_is(gi, "gradInput", shape(x))
    cdef cnp.ndarray s = None if sums is None else _sums(sums, n)
    disjoint_from(gi, "gradInput", x, "input", go, "gradOutput", w, "weight", sm, "saveMean",
                  si, "saveInvstd")
    disjoint_from(s, "sums", x, "input", go, "gradOutput", w, "weight", gi, "gradInput")
    disjoint_from(s, "sums", sm, "saveMean", si, "saveInvstd")
    cdef double *sp = NULL if s is None else f64(s)
    if sp != NULL:
        memset(sp, 0, 2 * n * sizeof(double))
    if n == 0 or rows == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _update_grad_input(f32(x), f32(go), f32(gi), f32(w), f32(sm), f32(si), sp, rows, n)
        else:
            _update_grad_input(f64(x), f64(go), f64(gi), f64(w), f64(sm), f64(si), sp, rows, n)


cdef void _update_grad_input(const floating *x, const floating *go, floating *gi,
                             const floating *w, const floating *sm, const floating *si,
                             double *sums, Py_ssize_t rows, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r, r0, r1, j
    cdef const floating *xr
    cdef const floating *gr
    cdef floating *ir
    cdef double sa, sb
    cdef floating m, s, c, k, xm, gj
    cdef floating bw[WIDE]
    cdef floating bb[WIDE]
    cdef bint fused = sums != NULL and n <= WIDE
    r0 = 0
    while r0 < rows:
        r1 = r0 + ROWS if r0 + ROWS <= rows else rows
        if fused:
            for j in range(n):
                bw[j] = 0
                bb[j] = 0
        for r in range(r0, r1):
            xr = x + r * n
            gr = go + r * n
            ir = gi + r * n
            m = sm[r]
            s = si[r]
            _row_sums(gr, w, xr, n, m, &sa, &sb)
            # gi = s * (go * w - sa / n) - (x - m) * (s^3 * sb / n)
            c = <floating> (s * sa / n)
            k = <floating> (<double> s * s * s * sb / n)
            if fused:
                for j in range(n):
                    gj = gr[j]
                    xm = xr[j] - m
                    ir[j] = s * gj * w[j] - c - xm * k
                    bw[j] += gj * (xm * s)
                    bb[j] += gj
            else:
                for j in range(n):
                    ir[j] = s * gr[j] * w[j] - c - (xr[j] - m) * k
        if fused:
            for j in range(n):
                sums[j] += bw[j]
                sums[n + j] += bb[j]
        elif sums != NULL:  # longer rows: summed again while these rows are in cache
            _column_sums(x, go, sm, si, sums, r0, r1, n)
        r0 = r1


def layernorm_param_sums(input, grad_output, save_mean, save_invstd, sums):
    """sums := [sum(go * xhat), sum(go)] over the rows, (2, n) float64."""
    cdef int t = float_type(save_mean, "saveMean")
    cdef cnp.ndarray s = array(sums, "sums", cnp.NPY_FLOAT64, True)
    ndim(s, "sums", 2, 2)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(s)[1], rows
    _sums(s, n)
    cdef cnp.ndarray x, go, sm, si
    x, go, sm, si, rows = _backward_args(input, grad_output, save_mean, save_invstd, t, n)
    disjoint_from(s, "sums", x, "input", go, "gradOutput", sm, "saveMean", si, "saveInvstd")
    memset(f64(s), 0, 2 * n * sizeof(double))
    if n == 0 or rows == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _param_sums(f32(x), f32(go), f32(sm), f32(si), f64(s), rows, n)
        else:
            _param_sums(f64(x), f64(go), f64(sm), f64(si), f64(s), rows, n)


cdef void _param_sums(const floating *x, const floating *go, const floating *sm,
                      const floating *si, double *sums, Py_ssize_t rows,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r0 = 0, r1
    while r0 < rows:
        r1 = r0 + ROWS if r0 + ROWS <= rows else rows
        _column_sums(x, go, sm, si, sums, r0, r1, n)
        r0 = r1


def layernorm_acc_grad_parameters(sums, grad_weight, grad_bias, double scale_w,
                                  double scale_b):
    """grad_weight += scale_w * sums[0]; grad_bias += scale_b * sums[1]; a scale of 0 skips
    its term."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    ndim(gw, "gradWeight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(gw)[0]
    cdef cnp.ndarray gb = _vec(grad_bias, "gradBias", t, True, n)
    cdef cnp.ndarray s = _sums(sums, n)
    disjoint_from(gw, "gradWeight", gb, "gradBias", s, "sums")
    disjoint_from(gb, "gradBias", s, "sums")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _acc(f64(s), f32(gw), f32(gb), scale_w, scale_b, n)
        else:
            _acc(f64(s), f64(gw), f64(gb), scale_w, scale_b, n)


cdef void _acc(const double *sums, floating *gw, floating *gb, double scale_w, double scale_b,
               Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if scale_w != 0:
        for j in range(n):
            gw[j] += <floating> (scale_w * sums[j])
    if scale_b != 0:
        for j in range(n):
            gb[j] += <floating> (scale_b * sums[n + j])
