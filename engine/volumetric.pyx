"""Kernels of the 3-D layers: convolution and its transpose (vol2col + GEMM), max and average
pooling.

Volumetric input is (C, T, H, W) or a batch (N, C, T, H, W). As in conv.pyx, a convolution
reads an *image* through windows and writes a *grid* of window positions, and the transposed
convolution runs the same steps the other way round; with groups g the weight is (grid
planes, image planes / g, kT, kH, kW): VolumetricConvolution's (O, C, kT, kH, kW) and the
transposed one's (C, O/g, kT, kH, kW). One sample's columns, (image planes / g * kT * kH * kW
per group, grid volume), live in a buffer the caller owns; each group is one GEMM.

Every size and offset is Py_ssize_t; only the three sizes of a GEMM (and its leading
dimensions) are ints, checked against INT_MAX before anything runs.

Pooling works plane by plane; max pooling records, as an intp array shaped like the output,
the flat position (t * H + h) * W + w of each maximum in its plane, or writes only the maxima
when that array is None (inference). The first of equal maxima wins; a NaN in a window wins
(the first NaN's position).
"""

cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.string cimport memset

from engine.blas cimport floating, gemm, gemv, BLAS_Trans, NoTrans, Trans
from engine._check cimport (
    shape, float_type, array, array_or_none, f32, f64, intp, ndim, vector_of, shape_is,
    disjoint, disjoint_from,
)
from engine._geometry cimport out_size, full_size, window_args
from engine._max_row cimport max_row_taps

cdef extern from "_transpose.h" nogil:
    void pm_transpose_f(const float *src, size_t lds, float *dst, size_t ldd, int rows,
                        int cols, const float *add)

cnp.import_array()


cdef struct Vol:
    Py_ssize_t C, T, H, W          # image: planes and size
    Py_ssize_t M, oT, oH, oW       # grid: planes and size
    Py_ssize_t kT, kH, kW, sT, sH, sW, pT, pH, pW
    Py_ssize_t G                   # groups
    bint direct                    # the columns are the image itself (1x1x1, stride 1, no pad)


cdef int _blas(Py_ssize_t v, str what) except -1:
    if v > INT_MAX:
        raise ValueError(f"{what} of {v} exceeds the BLAS limit {INT_MAX}")
    return 0


cdef int _window3(Py_ssize_t kt, Py_ssize_t kw, Py_ssize_t kh, Py_ssize_t st, Py_ssize_t sw,
                  Py_ssize_t sh, Py_ssize_t pt, Py_ssize_t pw, Py_ssize_t ph) except -1:
    if min(kt, kw, kh) < 1 or min(st, sw, sh) < 1:
        raise ValueError(f"kernel and strides must be >= 1, got {kt}x{kw}x{kh}, "
                         f"{st}, {sw}, {sh}")
    if min(pt, pw, ph) < 0:
        raise ValueError(f"pads must be >= 0, got {pt}, {pw}, {ph}")
    window_args(kt, st, pt, 1)
    window_args(kw, sw, pw, 1)
    window_args(kh, sh, ph, 1)
    return 0


cdef int _weight(Vol *g, cnp.ndarray w, str what, Py_ssize_t groups) except -1:
    ndim(w, what, 5, 5)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(w)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if d[0] == 0 or d[1] == 0 or d[2] == 0 or d[3] == 0 or d[4] == 0:
        raise ValueError(f"{what} has shape {shape(w)}, with an empty size")
    if d[0] % groups:
        raise ValueError(f"{what} has {d[0]} planes, which {groups} groups do not divide")
    g.M, g.kT, g.kH, g.kW, g.G = d[0], d[2], d[3], d[4], groups
    return 0


cdef int _finish(Vol *g) except -1:
    """The GEMM sizes fit BLAS's ints; the columns are the image for a pointwise kernel."""
    _blas(g.C // g.G * g.kT * g.kH * g.kW, "a column length")
    _blas(g.oT * g.oH * g.oW, "a column count")
    _blas(g.M, "a plane count")
    g.direct = (g.kT == 1 and g.kH == 1 and g.kW == 1 and g.sT == 1 and g.sH == 1
                and g.sW == 1 and g.pT == 0 and g.pH == 0 and g.pW == 0)
    return 0


cdef Py_ssize_t _conv_geometry(Vol *g, cnp.ndarray x, cnp.ndarray w, str wwhat,
                               Py_ssize_t st, Py_ssize_t sw, Py_ssize_t sh, Py_ssize_t pt,
                               Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t groups) except -1:
    """Fill ``g`` for the convolution of ``x`` (the image) by ``w``; return the batch size."""
    cdef Py_ssize_t pads[2]
    _window3(1, 1, 1, st, sw, sh, pt, pw, ph)
    cdef int nd = ndim(x, "input", 4, 5)
    _weight(g, w, wwhat, groups)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    g.C, g.T, g.H, g.W = d[nd - 4], d[nd - 3], d[nd - 2], d[nd - 1]
    if g.C != cnp.PyArray_DIMS(w)[1] * groups:
        raise ValueError(f"input has {g.C} channels, expected {cnp.PyArray_DIMS(w)[1] * groups}")
    window_args(g.kT, st, pt, 1)
    window_args(g.kW, sw, pw, 1)
    window_args(g.kH, sh, ph, 1)
    g.oT = out_size(g.T, g.kT, st, pt, 1, False, pads)
    g.oH = out_size(g.H, g.kH, sh, ph, 1, False, pads)
    g.oW = out_size(g.W, g.kW, sw, pw, 1, False, pads)
    if g.oT <= 0 or g.oH <= 0 or g.oW <= 0:
        padded = f" (padded by {pt}, {ph}, {pw})" if pt or ph or pw else ""
        raise ValueError(f"input is {g.T}x{g.H}x{g.W}{padded}, smaller than the "
                         f"{g.kT}x{g.kH}x{g.kW} kernel")
    g.sT, g.sH, g.sW, g.pT, g.pH, g.pW = st, sh, sw, pt, ph, pw
    _finish(g)
    return d[0] if nd == 5 else 1


cdef Py_ssize_t _full_geometry(Vol *g, cnp.ndarray x, cnp.ndarray w, str wwhat,
                               Py_ssize_t st, Py_ssize_t sw, Py_ssize_t sh, Py_ssize_t pt,
                               Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t at, Py_ssize_t aw,
                               Py_ssize_t ah, Py_ssize_t groups) except -1:
    """Fill ``g`` for the transposed convolution of ``x`` (the grid); return the batch size."""
    _window3(1, 1, 1, st, sw, sh, pt, pw, ph)
    if not (0 <= at < st and 0 <= aw < sw and 0 <= ah < sh):
        raise ValueError(f"adjustments must lie in [0, stride), got {at}, {aw}, {ah} with "
                         f"strides {st}, {sw}, {sh}")
    cdef int nd = ndim(x, "input", 4, 5)
    _weight(g, w, wwhat, groups)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    if d[nd - 4] != g.M:
        raise ValueError(f"input has {d[nd - 4]} channels, expected {g.M}")
    window_args(g.kT, st, pt, 1)
    window_args(g.kW, sw, pw, 1)
    window_args(g.kH, sh, ph, 1)
    g.oT, g.oH, g.oW = d[nd - 3], d[nd - 2], d[nd - 1]
    g.C = cnp.PyArray_DIMS(w)[1] * groups
    g.T = full_size(g.oT, g.kT, st, pt, at)
    g.H = full_size(g.oH, g.kH, sh, ph, ah)
    g.W = full_size(g.oW, g.kW, sw, pw, aw)
    if g.T <= 0 or g.H <= 0 or g.W <= 0:
        raise ValueError(f"input is {g.oT}x{g.oH}x{g.oW}: with the {g.kT}x{g.kH}x{g.kW} "
                         f"kernel, strides {st}, {sh}, {sw} and pads {pt}, {ph}, {pw} the "
                         f"output would be {g.T}x{g.H}x{g.W}")
    g.sT, g.sH, g.sW, g.pT, g.pH, g.pW = st, sh, sw, pt, ph, pw
    _finish(g)
    return d[0] if nd == 5 else 1


cdef tuple _image_shape(cnp.ndarray like, const Vol *g):
    cdef tuple s = (g.C, g.T, g.H, g.W)
    return ((<object> like).shape[0],) + s if cnp.PyArray_NDIM(like) == 5 else s


cdef tuple _grid_shape(cnp.ndarray like, const Vol *g):
    cdef tuple s = (g.M, g.oT, g.oH, g.oW)
    return ((<object> like).shape[0],) + s if cnp.PyArray_NDIM(like) == 5 else s


cdef tuple _columns(const Vol *g):
    return (g.C * g.kT * g.kH * g.kW, g.oT * g.oH * g.oW)


# -- cores (checked input) --------------------------------------------------------------------

cdef inline void _span(Py_ssize_t start, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t n,
                       Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the k in [0, n) with 0 <= start + k * stride < size."""
    cdef Py_ssize_t a = 0, b = 0
    if start < 0:
        a = (-start + stride - 1) // stride
    if size - start > 0:
        b = (size - start + stride - 1) // stride
    b = min(b, n)
    lo[0] = min(a, b)
    hi[0] = b


cdef void _vol2col(const floating *x, floating *cols, const Vol *g) noexcept nogil:
    """cols[(c, i, j, k), (t, y, x)] := image[c, t*sT - pT + i, y*sH - pH + j, x*sW - pW + k],
    0 outside the image. A row of the columns is copied one output row (oW numbers) at a
    time."""
    cdef Py_ssize_t c, i, j, k, ot, oy, ox, it, iy, lo, hi, tlo, thi, ylo, yhi
    cdef Py_ssize_t P = g.oT * g.oH * g.oW, plane = g.oH * g.oW
    cdef floating *row = cols
    cdef floating *dst
    cdef const floating *src
    for c in range(g.C):
        for i in range(g.kT):
            _span(i - g.pT, g.sT, g.T, g.oT, &tlo, &thi)
            for j in range(g.kH):
                _span(j - g.pH, g.sH, g.H, g.oH, &ylo, &yhi)
                for k in range(g.kW):
                    _span(k - g.pW, g.sW, g.W, g.oW, &lo, &hi)
                    if tlo == thi or ylo == yhi or lo == hi:
                        memset(row, 0, P * sizeof(floating))
                        row += P
                        continue
                    memset(row, 0, tlo * plane * sizeof(floating))
                    memset(row + thi * plane, 0, (g.oT - thi) * plane * sizeof(floating))
                    for ot in range(tlo, thi):
                        it = ot * g.sT - g.pT + i
                        dst = row + ot * plane
                        memset(dst, 0, ylo * g.oW * sizeof(floating))
                        memset(dst + yhi * g.oW, 0, (g.oH - yhi) * g.oW * sizeof(floating))
                        for oy in range(ylo, yhi):
                            iy = oy * g.sH - g.pH + j
                            src = x + ((c * g.T + it) * g.H + iy) * g.W + k - g.pW
                            dst = row + ot * plane + oy * g.oW
                            for ox in range(lo):
                                dst[ox] = 0
                            if g.sW == 1:
                                for ox in range(lo, hi):
                                    dst[ox] = src[ox]
                            else:
                                for ox in range(lo, hi):
                                    dst[ox] = src[ox * g.sW]
                            for ox in range(hi, g.oW):
                                dst[ox] = 0
                    row += P


cdef void _col2vol(const floating *cols, floating *x, const Vol *g) noexcept nogil:
    """image[c, t, y, x] += every column entry whose tap lands there (adjoint of _vol2col)."""
    cdef Py_ssize_t c, i, j, k, ot, oy, ox, it, iy, lo, hi, tlo, thi, ylo, yhi
    cdef Py_ssize_t P = g.oT * g.oH * g.oW, plane = g.oH * g.oW
    cdef const floating *row = cols
    cdef const floating *src
    cdef floating *dst
    for c in range(g.C):
        for i in range(g.kT):
            _span(i - g.pT, g.sT, g.T, g.oT, &tlo, &thi)
            for j in range(g.kH):
                _span(j - g.pH, g.sH, g.H, g.oH, &ylo, &yhi)
                for k in range(g.kW):
                    _span(k - g.pW, g.sW, g.W, g.oW, &lo, &hi)
                    for ot in range(tlo, thi):
                        it = ot * g.sT - g.pT + i
                        for oy in range(ylo, yhi):
                            iy = oy * g.sH - g.pH + j
                            dst = x + ((c * g.T + it) * g.H + iy) * g.W + k - g.pW
                            src = row + ot * plane + oy * g.oW
                            if g.sW == 1:
                                for ox in range(lo, hi):
                                    dst[ox] += src[ox]
                            else:
                                for ox in range(lo, hi):
                                    dst[ox * g.sW] += src[ox]
                    row += P


cdef inline void _mm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k, floating alpha,
                     const floating *a, int lda, const floating *b, int ldb,
                     floating beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C; on gemv when C is one column or one row."""
    if n == 1:
        if ta == NoTrans:
            gemv(NoTrans, m, k, alpha, a, lda, b, ldb if tb == NoTrans else 1, beta, c, ldc)
        else:
            gemv(Trans, k, m, alpha, a, lda, b, ldb if tb == NoTrans else 1, beta, c, ldc)
    elif m == 1:
        if tb == NoTrans:
            gemv(Trans, k, n, alpha, b, ldb, a, 1 if ta == NoTrans else lda, beta, c, 1)
        else:
            gemv(NoTrans, n, k, alpha, b, ldb, a, 1 if ta == NoTrans else lda, beta, c, 1)
    else:
        gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef void _grid_from_image(const floating *x, floating *y, const floating *w,
                           const floating *b, floating *cols, const Vol *g,
                           Py_ssize_t n) noexcept nogil:
    """grid := weight @ vol2col(image) (+ bias per grid plane), sample by sample."""
    cdef int P = <int> (g.oT * g.oH * g.oW), Kg = <int> (g.C // g.G * g.kT * g.kH * g.kW)
    cdef int Mg = <int> (g.M // g.G)
    cdef Py_ssize_t xs = g.C * g.T * g.H * g.W, ys = g.M * P, s, r, p, q
    cdef const floating *src
    cdef floating *yn
    cdef floating beta
    for s in range(n):
        src = x + s * xs
        if not g.direct:
            _vol2col(src, cols, g)
            src = cols
        yn = y + s * ys
        beta = 0
        if b != NULL:
            for p in range(g.M):
                for q in range(P):
                    yn[p * P + q] = b[p]
            beta = 1
        for r in range(g.G):
            _mm(NoTrans, NoTrans, Mg, P, Kg, <floating> 1, w + r * Mg * Kg, Kg,
                src + r * Kg * P, P, beta, yn + r * Mg * P, P)


cdef void _image_from_grid(const floating *y, floating *x, const floating *w, floating *cols,
                           const Vol *g, Py_ssize_t n) noexcept nogil:
    """image := col2vol(weight.T @ grid), sample by sample (the adjoint of _grid_from_image)."""
    cdef int P = <int> (g.oT * g.oH * g.oW), Kg = <int> (g.C // g.G * g.kT * g.kH * g.kW)
    cdef int Mg = <int> (g.M // g.G)
    cdef Py_ssize_t xs = g.C * g.T * g.H * g.W, ys = g.M * P, s, r
    cdef floating *xn
    cdef floating *dst
    for s in range(n):
        xn = x + s * xs
        dst = xn if g.direct else cols
        for r in range(g.G):
            _mm(Trans, NoTrans, Kg, P, Mg, <floating> 1, w + r * Mg * Kg, Kg,
                y + s * ys + r * Mg * P, P, <floating> 0, dst + r * Kg * P, P)
        if not g.direct:
            memset(xn, 0, xs * sizeof(floating))
            _col2vol(cols, xn, g)


cdef void _acc_weight(const floating *x, const floating *y, floating *gw, floating *cols,
                      const Vol *g, Py_ssize_t n, floating scale) noexcept nogil:
    """gw += scale * grid @ vol2col(image).T, summed over the samples."""
    cdef int P = <int> (g.oT * g.oH * g.oW), Kg = <int> (g.C // g.G * g.kT * g.kH * g.kW)
    cdef int Mg = <int> (g.M // g.G)
    cdef Py_ssize_t xs = g.C * g.T * g.H * g.W, ys = g.M * P, s, r
    cdef const floating *src
    for s in range(n):
        src = x + s * xs
        if not g.direct:
            _vol2col(src, cols, g)
            src = cols
        for r in range(g.G):
            _mm(NoTrans, Trans, Mg, Kg, P, scale, y + s * ys + r * Mg * P, P,
                src + r * Kg * P, P, <floating> 1, gw + r * Mg * Kg, Kg)


cdef void _acc_planes(const floating *go, floating *gb, Py_ssize_t n, Py_ssize_t planes,
                      Py_ssize_t size, floating scale) noexcept nogil:
    """gb[p] += scale * sum over the samples of go[s, p, :]."""
    cdef Py_ssize_t _s, p, i
    cdef floating a0, a1, a2, a3
    for _s in range(n):
        for p in range(planes):
            a0 = a1 = a2 = a3 = 0
            i = 0
            while i + 4 <= size:
                a0 += go[i]
                a1 += go[i + 1]
                a2 += go[i + 2]
                a3 += go[i + 3]
                i += 4
            while i < size:
                a0 += go[i]
                i += 1
            gb[p] += scale * ((a0 + a1) + (a2 + a3))
            go += size


# The transposed forward (float32, one group, not pointwise): the GEMMs write the output as
# (positions, planes) from patch rows, then one pass transposes it into NCTHW with the bias
# added. OpenBLAS sgemm packs the big operand far better so: with 8 planes from 108-long
# patches over 4096 positions, 8 samples took 3.2-3.8 ms as weight @ columns and 1.0-1.4 ms
# as patch rows @ weight.T (one thread, loaded machine). The patches come from a zero-padded
# channels-last (T, H, W, C) copy of the sample, the weight reordered to (i, j, k, c) to
# match. A patch is not written whole: its part of one time tap i, (j, k, c), is the same
# for every output frame that reads input frame t = ot * dT + i, so the rows are cut once per
# padded input frame, (frames, oH * oW, kH * kW * C), and each time tap is one GEMM over the
# frames it reads, accumulating (kT times fewer copies: 1.1 -> 0.5 ms of copying in the
# case above). float64 stays plain (dgemm gains nothing so, and the plain forward already
# beats PyTorch's).

cdef inline Py_ssize_t _padded(Py_ssize_t out, Py_ssize_t kernel,
                               Py_ssize_t stride) noexcept nogil:
    """Input entries the windows reach along an axis, from the first padded one."""
    return (out - 1) * stride + kernel


cdef Py_ssize_t _rows_scratch(const Vol *g):
    """Length of the transposed forward's scratch: the padded channels-last sample, the
    frame rows, the (positions, planes) output and the reordered weight; 0 where that
    forward does not run (groups, a pointwise kernel read in place, or a buffer past an
    int)."""
    cdef Py_ssize_t P = g.oT * g.oH * g.oW, K = g.C * g.kT * g.kH * g.kW
    cdef Py_ssize_t Tp = _padded(g.oT, g.kT, g.sT)
    cdef Py_ssize_t padded = (Tp * _padded(g.oH, g.kH, g.sH) * _padded(g.oW, g.kW, g.sW)
                              * g.C)
    cdef Py_ssize_t rows = Tp * g.oH * g.oW * g.kH * g.kW * g.C
    if g.G != 1 or g.direct or padded > INT_MAX or rows > INT_MAX:
        return 0
    return padded + rows + P * g.M + g.M * K


cdef void _pad_thwc(const float *x, float *xp, const Vol *g, Py_ssize_t Tp, Py_ssize_t Hp,
                    Py_ssize_t Wp) noexcept nogil:
    """xp[tt, yy, xx, c] := image[c, tt - pT, yy - pH, xx - pW], 0 outside; a row at a time."""
    cdef Py_ssize_t tt, yy, it, iy, row = Wp * g.C
    cdef Py_ssize_t lo = min(g.pW, Wp), hi = min(g.pW + g.W, Wp)
    cdef float *dst
    for tt in range(Tp):
        it = tt - g.pT
        for yy in range(Hp):
            iy = yy - g.pH
            dst = xp + (tt * Hp + yy) * row
            if it < 0 or it >= g.T or iy < 0 or iy >= g.H:
                memset(dst, 0, row * sizeof(float))
                continue
            memset(dst, 0, lo * g.C * sizeof(float))
            memset(dst + hi * g.C, 0, (Wp - hi) * g.C * sizeof(float))
            if hi > lo:
                pm_transpose_f(x + (it * g.H + iy) * g.W + lo - g.pW, g.T * g.H * g.W,
                               dst + lo * g.C, g.C, <int> g.C, <int> (hi - lo), NULL)


cdef void _frame_rows(const float *xp, float *rows, const Vol *g, Py_ssize_t Tp,
                      Py_ssize_t Hp, Py_ssize_t Wp) noexcept nogil:
    """rows[tt, (y, x), (j, k, c)] := xp[tt, y*sH + j, x*sW + k, c]."""
    cdef Py_ssize_t tt, oy, ox, j, e, KW = g.kW * g.C
    cdef float *dst = rows
    cdef const float *src
    for tt in range(Tp):
        for oy in range(g.oH):
            for ox in range(g.oW):
                for j in range(g.kH):
                    src = xp + ((tt * Hp + oy * g.sH + j) * Wp + ox * g.sW) * g.C
                    for e in range(KW):
                        dst[e] = src[e]
                    dst += KW


cdef void _weight_thwc(const float *w, float *wr, const Vol *g) noexcept nogil:
    """wr[m, (i, j, k, c)] := w[m, c, i, j, k]."""
    cdef Py_ssize_t m, c, t, T = g.kT * g.kH * g.kW
    cdef const float *src
    cdef float *dst
    for m in range(g.M):
        src = w + m * g.C * T
        dst = wr + m * g.C * T
        for c in range(g.C):
            for t in range(T):
                dst[t * g.C + c] = src[c * T + t]


cdef void _grid_from_image_t(const float *x, float *y, const float *w, const float *b,
                             float *scratch, const Vol *g, Py_ssize_t n) noexcept nogil:
    """_grid_from_image of an ungrouped, not pointwise float32 convolution, transposed."""
    cdef int M = <int> g.M, K = <int> (g.C * g.kT * g.kH * g.kW)
    cdef int KR = <int> (g.C * g.kH * g.kW), F = <int> (g.oH * g.oW)
    cdef int P = <int> (g.oT * F)
    cdef Py_ssize_t Tp = _padded(g.oT, g.kT, g.sT), Hp = _padded(g.oH, g.kH, g.sH)
    cdef Py_ssize_t Wp = _padded(g.oW, g.kW, g.sW), s, i, ot
    cdef float *xp = scratch
    cdef float *rows = xp + Tp * Hp * Wp * g.C
    cdef float *yt = rows + Tp * F * KR
    cdef float *wr = yt + <Py_ssize_t> P * M
    _weight_thwc(w, wr, g)
    for s in range(n):
        _pad_thwc(x + s * g.C * g.T * g.H * g.W, xp, g, Tp, Hp, Wp)
        _frame_rows(xp, rows, g, Tp, Hp, Wp)
        for i in range(g.kT):
            if g.sT == 1:  # the frames of every output frame, one after another
                _mm(NoTrans, Trans, P, M, KR, <float> 1, rows + i * F * KR, KR, wr + i * KR,
                    K, <float> (i > 0), yt, M)
                continue
            for ot in range(g.oT):
                _mm(NoTrans, Trans, F, M, KR, <float> 1, rows + (ot * g.sT + i) * F * KR, KR,
                    wr + i * KR, K, <float> (i > 0), yt + ot * F * M, M)
        pm_transpose_f(yt, M, y + s * M * <Py_ssize_t> P, P, P, M, b)


# The weight gradient of the same convolutions (float32, where the transposed forward runs,
# in the same scratch): each time tap's block of the reordered weight gradient sums
# gradOutput (M, positions) @ the frame rows (positions, kH * kW * C) it read, over the
# samples; the sum is folded into gradWeight once per call.

cdef void _acc_weight_t(const float *x, const float *go, float *gw, float *scratch,
                        const Vol *g, Py_ssize_t n, float scale) noexcept nogil:
    """_acc_weight of an ungrouped, not pointwise float32 convolution, on frame rows."""
    cdef int M = <int> g.M, K = <int> (g.C * g.kT * g.kH * g.kW)
    cdef int KR = <int> (g.C * g.kH * g.kW), F = <int> (g.oH * g.oW)
    cdef int P = <int> (g.oT * F)
    cdef Py_ssize_t Tp = _padded(g.oT, g.kT, g.sT), Hp = _padded(g.oH, g.kH, g.sH)
    cdef Py_ssize_t Wp = _padded(g.oW, g.kW, g.sW), s, i, ot, m, c, t, T = g.kT * g.kH * g.kW
    cdef float *xp = scratch
    cdef float *rows = xp + Tp * Hp * Wp * g.C
    cdef float *gwr = rows + Tp * F * KR + <Py_ssize_t> P * M
    cdef const float *gs
    memset(gwr, 0, <size_t> M * K * sizeof(float))
    for s in range(n):
        _pad_thwc(x + s * g.C * g.T * g.H * g.W, xp, g, Tp, Hp, Wp)
        _frame_rows(xp, rows, g, Tp, Hp, Wp)
        gs = go + s * M * <Py_ssize_t> P
        for i in range(g.kT):
            if g.sT == 1:
                _mm(NoTrans, NoTrans, M, KR, P, <float> 1, gs, P, rows + i * F * KR, KR,
                    <float> 1, gwr + i * KR, K)
                continue
            for ot in range(g.oT):
                _mm(NoTrans, NoTrans, M, KR, F, <float> 1, gs + ot * F, P,
                    rows + (ot * g.sT + i) * F * KR, KR, <float> 1, gwr + i * KR, K)
    for m in range(M):
        for c in range(g.C):
            for t in range(T):
                gw[(m * g.C + c) * T + t] += scale * gwr[m * K + t * g.C + c]


# And the input gradient (float32, where the transposed forward runs, in the same scratch):
# the adjoint of that forward step by step. gradOutput is transposed to (positions, planes);
# each time tap adds its GEMM into the frame rows; the frame rows are added into the padded
# channels-last sample, whose inside is transposed back into NCTHW.

cdef void _rows_to_padded(const float *rows, float *xp, const Vol *g, Py_ssize_t Tp,
                          Py_ssize_t Hp, Py_ssize_t Wp) noexcept nogil:
    """xp[tt, y*sH + j, x*sW + k, c] += rows[tt, (y, x), (j, k, c)] (adjoint of _frame_rows),
    xp zeroed first."""
    cdef Py_ssize_t tt, oy, ox, j, e, KW = g.kW * g.C
    cdef const float *src = rows
    cdef float *dst
    memset(xp, 0, Tp * Hp * Wp * g.C * sizeof(float))
    for tt in range(Tp):
        for oy in range(g.oH):
            for ox in range(g.oW):
                for j in range(g.kH):
                    dst = xp + ((tt * Hp + oy * g.sH + j) * Wp + ox * g.sW) * g.C
                    for e in range(KW):
                        dst[e] += src[e]
                    src += KW


cdef void _unpad_thwc(const float *xp, float *x, const Vol *g, Py_ssize_t Tp, Py_ssize_t Hp,
                      Py_ssize_t Wp) noexcept nogil:
    """image[c, t, y, x] := xp[t + pT, y + pH, x + pW, c] where the windows reached it, else
    0 (adjoint of _pad_thwc)."""
    cdef Py_ssize_t it, iy, tt, yy, lo = min(g.pW, Wp), hi = min(g.pW + g.W, Wp)
    cdef Py_ssize_t plane = g.T * g.H * g.W, c
    for it in range(g.T):
        tt = it + g.pT
        for iy in range(g.H):
            yy = iy + g.pH
            if tt >= Tp or yy >= Hp or hi <= lo:
                for c in range(g.C):
                    memset(x + c * plane + (it * g.H + iy) * g.W, 0, g.W * sizeof(float))
                continue
            pm_transpose_f(xp + ((tt * Hp + yy) * Wp + lo) * g.C, g.C,
                           x + (it * g.H + iy) * g.W + lo - g.pW, plane, <int> (hi - lo),
                           <int> g.C, NULL)
            if hi - g.pW < g.W:
                for c in range(g.C):
                    memset(x + c * plane + (it * g.H + iy) * g.W + hi - g.pW, 0,
                           (g.W - hi + g.pW) * sizeof(float))


cdef void _image_from_grid_t(const float *go, float *gi, const float *w, float *scratch,
                             const Vol *g, Py_ssize_t n) noexcept nogil:
    """_image_from_grid of an ungrouped, not pointwise float32 convolution, transposed."""
    cdef int M = <int> g.M, K = <int> (g.C * g.kT * g.kH * g.kW)
    cdef int KR = <int> (g.C * g.kH * g.kW), F = <int> (g.oH * g.oW)
    cdef int P = <int> (g.oT * F)
    cdef Py_ssize_t Tp = _padded(g.oT, g.kT, g.sT), Hp = _padded(g.oH, g.kH, g.sH)
    cdef Py_ssize_t Wp = _padded(g.oW, g.kW, g.sW), s, i, ot
    cdef float *xp = scratch
    cdef float *rows = xp + Tp * Hp * Wp * g.C
    cdef float *yt = rows + Tp * F * KR
    cdef float *wr = yt + <Py_ssize_t> P * M
    _weight_thwc(w, wr, g)
    for s in range(n):
        pm_transpose_f(go + s * M * <Py_ssize_t> P, P, yt, M, M, P, NULL)
        memset(rows, 0, Tp * F * KR * sizeof(float))
        for i in range(g.kT):
            if g.sT == 1:
                _mm(NoTrans, NoTrans, P, KR, M, <float> 1, yt, M, wr + i * KR, K, <float> 1,
                    rows + i * F * KR, KR)
                continue
            for ot in range(g.oT):
                _mm(NoTrans, NoTrans, F, KR, M, <float> 1, yt + ot * F * M, M, wr + i * KR, K,
                    <float> 1, rows + (ot * g.sT + i) * F * KR, KR)
        _rows_to_padded(rows, xp, g, Tp, Hp, Wp)
        _unpad_thwc(xp, gi + s * g.C * g.T * g.H * g.W, g, Tp, Hp, Wp)


def conv3d_scratch_size(input, weight, tuple args):
    """Length of conv3d_update_output's ``scratch`` for a convolution with these arguments;
    0 when it takes none (float64, groups, a pointwise kernel)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Vol g
    _shapes(&g, False, x, w, "weight", None, None, None, None, None, args)
    return _rows_scratch(&g) if t == cnp.NPY_FLOAT32 else 0


# -- VolumetricConvolution, VolumetricFullConvolution -----------------------------------------
#
# The convolution and its transpose share their entries: ``full`` picks the transposed one,
# whose input is the grid and whose output the image.

cdef Py_ssize_t _shapes(Vol *g, bint full, cnp.ndarray x, cnp.ndarray w, str w_what,
                        cnp.ndarray b, str b_what, cnp.ndarray out, str out_what,
                        cnp.ndarray cols, tuple args) except -1:
    """Fill ``g``; check the bias (or None), the array shaped like the output and the columns
    against it (unless None); return the batch size."""
    st, sw, sh, pt, pw, ph, at, aw, ah, groups = args
    cdef Py_ssize_t n
    if full:
        n = _full_geometry(g, x, w, w_what, st, sw, sh, pt, pw, ph, at, aw, ah, groups)
    else:
        if at or aw or ah:
            raise ValueError(f"a convolution takes no adjustments, got {at}, {aw}, {ah}")
        n = _conv_geometry(g, x, w, w_what, st, sw, sh, pt, pw, ph, groups)
    if b is not None:
        vector_of(b, b_what, g.C if full else g.M)
    if out is not None:
        shape_is(out, out_what, _image_shape(x, g) if full else _grid_shape(x, g))
        shape_is(cols, "columns", _columns(g))
    return n


def conv3d_update_output(input, output, weight, bias, columns, bint full, tuple args,
                         scratch=None):
    """output := the convolution of input by weight (+ bias), or, ``full``, its transpose.

    (N, C, T, H, W) x (O, C/g, kT, kH, kW) -> (N, O, oT, oH, oW), or the 4-D sample alone;
    transposed: (N, C, T, H, W) x (C, O/g, kT, kH, kW) -> (N, O, oT, oH, oW) with
    oT = (T - 1) * dT - 2 padT + kT + adjT. ``args`` = (dT, dW, dH, padT, padW, padH, adjT,
    adjW, adjH, nGroup), adjustments 0 for a convolution; ``columns`` is scratch shaped as
    (image planes / g * kT * kH * kW, grid volume); ``bias`` may be None. ``scratch``, a
    vector of conv3d_scratch_size(...) numbers, runs the faster transposed forward of a
    convolution where that size is not 0; None keeps the plain one.
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef Vol g
    cdef Py_ssize_t n = _shapes(&g, full, x, w, "weight", b, "bias", y, "output", cols, args)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", cols, "columns")
    disjoint_from(cols, "columns", x, "input", w, "weight", b, "bias")
    cdef cnp.ndarray sc = None
    cdef Py_ssize_t size = _rows_scratch(&g) if t == cnp.NPY_FLOAT32 and not full else 0
    if scratch is not None:
        sc = array(scratch, "scratch", t, True)
        vector_of(sc, "scratch", size)
        disjoint_from(sc, "scratch", x, "input", w, "weight", b, "bias", y, "output",
                      cols, "columns")
    with nogil:
        if sc is not None and size and n:
            _grid_from_image_t(f32(x), f32(y), f32(w), f32(b), f32(sc), &g, n)
        elif t == cnp.NPY_FLOAT32:
            _forward(f32(x), f32(y), f32(w), f32(b), f32(cols), &g, n, full)
        else:
            _forward(f64(x), f64(y), f64(w), f64(b), f64(cols), &g, n, full)


cdef void _forward(const floating *x, floating *y, const floating *w, const floating *b,
                   floating *cols, const Vol *g, Py_ssize_t n, bint full) noexcept nogil:
    cdef Py_ssize_t size = g.T * g.H * g.W, s, p, i
    if not full:
        _grid_from_image(x, y, w, b, cols, g, n)
        return
    _image_from_grid(x, y, w, cols, g, n)
    if b != NULL:
        for s in range(n):
            for p in range(g.C):
                for i in range(size):
                    y[(s * g.C + p) * size + i] += b[p]


def conv3d_update_grad_input(input, grad_output, grad_input, weight, columns, bint full,
                             tuple args, scratch=None):
    """grad_input := the adjoint of the (transposed, if ``full``) convolution applied to
    grad_output (shape of input). ``scratch``, as for conv3d_update_output, runs the faster
    transposed adjoint of a convolution where its size is not 0."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef Vol g
    cdef Py_ssize_t n = _shapes(&g, full, x, w, "weight", None, None, go, "gradOutput", cols,
                                args)
    shape_is(gi, "gradInput", shape(x))
    disjoint_from(gi, "gradInput", go, "gradOutput", w, "weight", cols, "columns")
    disjoint_from(cols, "columns", go, "gradOutput", w, "weight")
    cdef cnp.ndarray sc = None
    cdef Py_ssize_t size = _rows_scratch(&g) if t == cnp.NPY_FLOAT32 and not full else 0
    if scratch is not None:
        sc = array(scratch, "scratch", t, True)
        vector_of(sc, "scratch", size)
        disjoint_from(sc, "scratch", go, "gradOutput", gi, "gradInput", w, "weight",
                      cols, "columns")
    with nogil:
        if sc is not None and size and n:
            _image_from_grid_t(f32(go), f32(gi), f32(w), f32(sc), &g, n)
        elif t == cnp.NPY_FLOAT32:
            _backward(f32(go), f32(gi), f32(w), f32(cols), &g, n, full)
        else:
            _backward(f64(go), f64(gi), f64(w), f64(cols), &g, n, full)


cdef void _backward(const floating *go, floating *gi, const floating *w, floating *cols,
                    const Vol *g, Py_ssize_t n, bint full) noexcept nogil:
    if full:
        _grid_from_image(go, gi, w, NULL, cols, g, n)
    else:
        _image_from_grid(go, gi, w, cols, g, n)


def conv3d_acc_grad_parameters(input, grad_output, grad_weight, grad_bias, columns, bint full,
                               tuple args, double scale_w, double scale_b, scratch=None):
    """grad_weight += scale_w * dL/dweight; grad_bias += scale_b * grad_output summed per
    plane. A scale of 0 skips its term; ``grad_bias`` may be None. ``scratch``, as for
    conv3d_update_output, runs the faster transposed weight gradient where its size is
    not 0."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef Vol g
    cdef Py_ssize_t n = _shapes(&g, full, x, gw, "gradWeight", gb, "gradBias", go,
                                "gradOutput", cols, args)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias",
                  cols, "columns")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput", gw, "gradWeight",
                  cols, "columns")
    disjoint_from(cols, "columns", x, "input", go, "gradOutput")
    cdef cnp.ndarray sc = None
    cdef Py_ssize_t size = _rows_scratch(&g) if t == cnp.NPY_FLOAT32 and not full else 0
    if scratch is not None:
        sc = array(scratch, "scratch", t, True)
        vector_of(sc, "scratch", size)
        disjoint_from(sc, "scratch", x, "input", go, "gradOutput", gw, "gradWeight",
                      gb, "gradBias", cols, "columns")
    with nogil:
        if sc is not None and size and n:
            if scale_w != 0:
                _acc_weight_t(f32(x), f32(go), f32(gw), f32(sc), &g, n, <float> scale_w)
            _acc(f32(x), f32(go), f32(gw), f32(gb), f32(cols), &g, n, full, 0,
                 <float> scale_b)
        elif t == cnp.NPY_FLOAT32:
            _acc(f32(x), f32(go), f32(gw), f32(gb), f32(cols), &g, n, full, <float> scale_w,
                 <float> scale_b)
        else:
            _acc(f64(x), f64(go), f64(gw), f64(gb), f64(cols), &g, n, full, scale_w, scale_b)


cdef void _acc(const floating *x, const floating *go, floating *gw, floating *gb,
               floating *cols, const Vol *g, Py_ssize_t n, bint full, floating scale_w,
               floating scale_b) noexcept nogil:
    """The weight gradient sums grid (x) image over the samples; the bias gradient sums
    grad_output, the grid of a convolution and the image of a transposed one, per plane."""
    if scale_w != 0:
        if full:
            _acc_weight(go, x, gw, cols, g, n, scale_w)
        else:
            _acc_weight(x, go, gw, cols, g, n, scale_w)
    if scale_b != 0 and gb != NULL:
        if full:
            _acc_planes(go, gb, n, g.C, g.T * g.H * g.W, scale_b)
        else:
            _acc_planes(go, gb, n, g.M, g.oT * g.oH * g.oW, scale_b)


# -- VolumetricMaxPooling, VolumetricAveragePooling -------------------------------------------

cdef struct Pool3:
    Py_ssize_t planes
    Py_ssize_t T, H, W, oT, oH, oW
    Py_ssize_t kT, kH, kW, sT, sH, sW
    Py_ssize_t pT, pH, pW       # leading pads
    Py_ssize_t eT, eH, eW       # trailing pads


def pool3d_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride, Py_ssize_t pad,
                       bint ceil_mode):
    """Window positions of a pooling along an axis of ``size`` (<= 0: none fits)."""
    cdef Py_ssize_t pads[2]
    window_args(kernel, stride, pad, 1)
    return out_size(size, kernel, stride, pad, 1, ceil_mode, pads)


cdef int _pool_geometry(Pool3 *p, cnp.ndarray x, tuple window, bint ceil_mode) except -1:
    """Fill ``p`` for input ``x`` (C, T, H, W) or (N, C, T, H, W); ``window`` = (kT, kW, kH,
    dT, dW, dH, padT, padW, padH)."""
    cdef Py_ssize_t pads[2]
    kt, kw, kh, st, sw, sh, pt, pw, ph = window
    _window3(kt, kw, kh, st, sw, sh, pt, pw, ph)
    if pt > kt // 2 or pw > kw // 2 or ph > kh // 2:
        raise ValueError(f"pads {pt}, {pw}, {ph} exceed half the {kt}x{kw}x{kh} kernel")
    cdef int nd = ndim(x, "input", 4, 5)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    p.T, p.H, p.W = d[nd - 3], d[nd - 2], d[nd - 1]
    p.planes = d[0] * d[1] if nd == 5 else d[0]
    p.oT = out_size(p.T, kt, st, pt, 1, ceil_mode, pads)
    p.pT, p.eT = pads[0], pads[1]
    p.oH = out_size(p.H, kh, sh, ph, 1, ceil_mode, pads)
    p.pH, p.eH = pads[0], pads[1]
    p.oW = out_size(p.W, kw, sw, pw, 1, ceil_mode, pads)
    p.pW, p.eW = pads[0], pads[1]
    if p.oT <= 0 or p.oH <= 0 or p.oW <= 0:
        padded = f" (padded by {pt}, {ph}, {pw})" if pt or ph or pw else ""
        raise ValueError(f"input is {p.T}x{p.H}x{p.W}{padded}, smaller than the "
                         f"{kt}x{kh}x{kw} kernel")
    p.kT, p.kH, p.kW, p.sT, p.sH, p.sW = kt, kh, kw, st, sh, sw
    return 0


cdef tuple _pooled(cnp.ndarray x, const Pool3 *p):
    cdef int nd = cnp.PyArray_NDIM(x)
    return shape(x)[:nd - 3] + (p.oT, p.oH, p.oW)


def max_pool3d_update_output(input, output, indices, tuple window, bint ceil_mode):
    """output := the maximum of each window; indices := its flat position in the plane, or
    only the maxima where ``indices`` is None (inference: nothing will scatter back).

    (N, C, T, H, W) -> (N, C, oT, oH, oW), or one sample; ``window`` = (kT, kW, kH, dT, dW,
    dH, padT, padW, padH). Padding never wins; a NaN does.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array_or_none(indices, "indices", cnp.NPY_INTP, True)
    cdef Pool3 p
    _pool_geometry(&p, x, window, ceil_mode)
    shape_is(y, "output", _pooled(x, &p))
    disjoint(y, "output", x, "input")
    if idx is not None:
        shape_is(idx, "indices", _pooled(x, &p))
        disjoint_from(idx, "indices", x, "input", y, "output")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _max3(f32(x), f32(y), intp(idx), &p)
        else:
            _max3(f64(x), f64(y), intp(idx), &p)


cdef void _max3(const floating *x, floating *y, cnp.npy_intp *idx,
                const Pool3 *p) noexcept nogil:
    # One output row (ot, oy) at a time, each input row of its windows folded in by
    # _max_row.pxd's tap sweep, in the per-window loop's order: the same tap wins a tie, and
    # the first NaN wins. Float32 (4, 8, 8, 16, 16) by 2x2x2: 260-360 us with a loop and a
    # branch per window, 205-257 us this way (82-155 without indices).
    cdef Py_ssize_t _q, ot, oy, ox, t0, t1, h0, h1, w0, it, iy
    cdef size_t vol = <size_t> p.T * p.H * p.W, out = <size_t> p.oT * p.oH * p.oW
    cdef const floating *row
    cdef floating *yr
    cdef cnp.npy_intp *ir = NULL
    for _q in range(p.planes):
        for ot in range(p.oT):
            t0 = ot * p.sT - p.pT
            t1 = min(t0 + p.kT, p.T)
            t0 = max(t0, 0)
            for oy in range(p.oH):
                h0 = oy * p.sH - p.pH
                h1 = min(h0 + p.kH, p.H)
                h0 = max(h0, 0)
                yr = y + (<size_t> ot * p.oH + oy) * p.oW
                if idx != NULL:  # NULL: the maxima only
                    ir = idx + (<size_t> ot * p.oH + oy) * p.oW
                row = x + (<size_t> t0 * p.H + h0) * p.W
                for ox in range(p.oW):
                    w0 = max(ox * p.sW - p.pW, 0)  # the window's first tap inside the input
                    yr[ox] = row[w0]
                    if idx != NULL:
                        ir[ox] = (t0 * p.H + h0) * p.W + w0
                for it in range(t0, t1):
                    for iy in range(h0, h1):
                        max_row_taps(x + (<size_t> it * p.H + iy) * p.W, yr, ir,
                                     (it * p.H + iy) * p.W, p.W, p.kW, p.sW, p.pW, p.oW, True)
        x += vol
        y += out
        if idx != NULL:
            idx += out


def max_pool3d_update_grad_input(input, grad_output, grad_input, indices):
    """grad_input := grad_output added into the positions in indices (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INTP, False)
    cdef int nd = ndim(x, "input", 4, 5)
    if cnp.PyArray_NDIM(go) != nd or shape(go)[:nd - 3] != shape(x)[:nd - 3]:
        raise ValueError(f"gradOutput has shape {shape(go)}, expected {shape(x)[:nd - 3]} + "
                         f"(outputTime, outputHeight, outputWidth)")
    shape_is(idx, "indices", shape(go))
    shape_is(gi, "gradInput", shape(x))
    disjoint_from(gi, "gradInput", go, "gradOutput", idx, "indices")
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *e = cnp.PyArray_DIMS(go)
    cdef Py_ssize_t vol = d[nd - 3] * d[nd - 2] * d[nd - 1]
    cdef Py_ssize_t out = e[nd - 3] * e[nd - 2] * e[nd - 1]
    cdef Py_ssize_t planes = cnp.PyArray_SIZE(x) // vol if vol else 0
    cdef cnp.npy_intp *ix = intp(idx)
    cdef Py_ssize_t j, n = cnp.PyArray_SIZE(idx)
    cdef Py_ssize_t bad = -1
    with nogil:
        for j in range(n if planes else 0):
            if ix[j] < 0 or ix[j] >= vol:
                bad = j
                break
    if bad >= 0:
        raise ValueError(f"indices holds {ix[bad]}, outside [0, {vol})")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scatter(f32(go), f32(gi), ix, planes, vol, out)
        else:
            _scatter(f64(go), f64(gi), ix, planes, vol, out)


cdef void _scatter(const floating *go, floating *gi, const cnp.npy_intp *idx, Py_ssize_t planes,
                   Py_ssize_t vol, Py_ssize_t out) noexcept nogil:
    cdef Py_ssize_t _q, j
    memset(gi, 0, planes * vol * sizeof(floating))
    for _q in range(planes):
        for j in range(out):
            gi[idx[j]] += go[j]
        go += out
        gi += vol
        idx += out


def avg_pool3d_update_output(input, output, tuple window, bint ceil_mode,
                             bint count_include_pad):
    """output := the mean of each window; the divisor counts the padding the window covers
    when ``count_include_pad``, else only the input. Shapes as for max pooling."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Pool3 p
    _pool_geometry(&p, x, window, ceil_mode)
    shape_is(y, "output", _pooled(x, &p))
    disjoint(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _avg3(f32(x), f32(y), &p, count_include_pad, False)
        else:
            _avg3(f64(x), f64(y), &p, count_include_pad, False)


def avg_pool3d_update_grad_input(input, grad_output, grad_input, tuple window, bint ceil_mode,
                                 bint count_include_pad):
    """grad_input := each window's gradient shared out over the window (shape of input)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Pool3 p
    _pool_geometry(&p, x, window, ceil_mode)
    shape_is(go, "gradOutput", _pooled(x, &p))
    shape_is(gi, "gradInput", shape(x))
    disjoint(gi, "gradInput", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _avg3(f32(gi), f32(go), &p, count_include_pad, True)
        else:
            _avg3(f64(gi), f64(go), &p, count_include_pad, True)


cdef void _avg3(floating *x, floating *y, const Pool3 *p, bint include_pad,
                bint adjoint) noexcept nogil:
    """y := window means of x; or, ``adjoint``, x := the transpose applied to y."""
    cdef Py_ssize_t _q, ot, oy, ox, t0, t1, h0, h1, w0, w1, it, iy, ix
    cdef Py_ssize_t ct0, ct1, ch0, ch1, cw0, cw1
    cdef Py_ssize_t vol = p.T * p.H * p.W, out = p.oT * p.oH * p.oW
    cdef floating s, count
    cdef floating *row
    if adjoint:
        memset(x, 0, p.planes * vol * sizeof(floating))
    for _q in range(p.planes):
        for ot in range(p.oT):
            t0 = ot * p.sT - p.pT
            t1 = min(t0 + p.kT, p.T + p.eT)
            ct0, ct1 = max(t0, 0), min(t1, p.T)
            for oy in range(p.oH):
                h0 = oy * p.sH - p.pH
                h1 = min(h0 + p.kH, p.H + p.eH)
                ch0, ch1 = max(h0, 0), min(h1, p.H)
                for ox in range(p.oW):
                    w0 = ox * p.sW - p.pW
                    w1 = min(w0 + p.kW, p.W + p.eW)
                    cw0, cw1 = max(w0, 0), min(w1, p.W)
                    # in floating, like the sum: a window may hold more than 2**31 taps
                    if include_pad:
                        count = (<floating> (t1 - t0) * <floating> (h1 - h0)
                                 * <floating> (w1 - w0))
                    else:
                        count = (<floating> (ct1 - ct0) * <floating> (ch1 - ch0)
                                 * <floating> (cw1 - cw0))
                    if adjoint:
                        s = y[(ot * p.oH + oy) * p.oW + ox] / count
                        for it in range(ct0, ct1):
                            for iy in range(ch0, ch1):
                                row = x + (it * p.H + iy) * p.W
                                for ix in range(cw0, cw1):
                                    row[ix] += s
                    else:
                        s = 0
                        for it in range(ct0, ct1):
                            for iy in range(ch0, ch1):
                                row = x + (it * p.H + iy) * p.W
                                for ix in range(cw0, cw1):
                                    s = s + row[ix]
                        y[(ot * p.oH + oy) * p.oW + ox] = s / count
        x += vol
        y += out
