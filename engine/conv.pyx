"""Kernels of the convolutions: im2col + GEMM, one sample at a time.

Spatial input is (C, H, W) or a batch (N, C, H, W). A convolution reads an *image* through
windows and writes a *grid* of window positions; the transposed convolution runs the same two
steps the other way round, so both share the cores below. With groups g, the weight is
(grid planes, image planes / g, kH, kW): SpatialConvolution's (O, C/g, kH, kW) and the
transposed one's (C, O/g, kH, kW), and each group is one GEMM.

A sample's columns, (image planes * kH * kW, grid height * grid width), live in a buffer the
caller owns and reuses; one sample's worth stays in cache between the im2col that writes it and
the GEMM that reads it. A 1x1 kernel with stride 1 and no padding reads the image in place.
Where it pays, a float32 forward runs transposed instead (see _grid_from_image_t).

Temporal input is (T, C) or (N, T, C) and the weight (O, kW * C): a window of kW frames is
kW * C contiguous numbers, so windows are GEMM rows read in place, no im2col.
"""

cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, gemv, BLAS_Trans, NoTrans, Trans
from engine._check cimport (
    shape, float_type, array, array_or_none, f32, f64, ndim, dim, int_limit, vector_of,
    shape_is, same_shape, dims_are, disjoint_from,
)
from engine._geometry cimport out_size, full_size, window_args, window_positions

cdef extern from "_panel.h" nogil:
    void pm_panel_f(int R, int K, int P, const float *a, ptrdiff_t ar, ptrdiff_t ak,
                    const float *b, size_t ldb, const float *bias, int acc, float *y, size_t ldy)
    void pm_panel_d(int R, int K, int P, const double *a, ptrdiff_t ar, ptrdiff_t ak,
                    const double *b, size_t ldb, const double *bias, int acc, double *y,
                    size_t ldy)

cdef extern from "_panel.h" nogil:
    void pm_direct_f(int C, int kH, int kW, int oH, int oW, const float *x, size_t hw, size_t ws,
                     const float *wt, int ML, float *yt)
    void pm_direct_d(int C, int kH, int kW, int oH, int oW, const double *x, size_t hw,
                     size_t ws, const double *wt, int ML, double *yt)
    void pm_direct_rows_f(int C, int M, int kH, int kW, int oH, int oW, const float *x,
                          size_t hw, size_t ws, const float *w, const float *bias, float *y)
    void pm_direct_rows_d(int C, int M, int kH, int kW, int oH, int oW, const double *x,
                          size_t hw, size_t ws, const double *w, const double *bias, double *y)
    int pm_direct_lanes_f(int M)
    int pm_panel_wide()
    void pm_panel_allow_wide(int allow)

cdef extern from "_transpose.h" nogil:
    void pm_transpose_f(const float *src, size_t lds, float *dst, size_t ldd, int rows,
                        int cols, const float *add)

cnp.import_array()


# -- geometry ---------------------------------------------------------------------------------

def output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride=1, Py_ssize_t pad=0,
                Py_ssize_t dilation=1, bint ceil_mode=False):
    """Window positions along an axis of ``size`` (convolution and pooling); 0 if none fits.

    ``pad = -1`` is SAME padding; ``ceil_mode`` counts a last partial window.
    """
    return window_positions(size, kernel, stride, pad, dilation, ceil_mode)


def full_output_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride=1, Py_ssize_t pad=0,
                     Py_ssize_t adj=0):
    """Output length of a transposed convolution, (size - 1) * stride - 2 * pad + kernel + adj."""
    window_args(kernel, stride, pad, 1)
    int_limit(adj, "adj")
    return full_size(size, kernel, stride, pad, adj)


cdef struct Geom:
    int C, H, W        # image: planes and size
    int M, oH, oW      # grid: planes and size
    int kH, kW, sH, sW, pT, pL, dH, dW
    int G              # groups
    bint direct        # the columns are the image itself (1x1, stride 1, no padding)
    int B              # samples per block of columns (1: one sample at a time)


cdef int _check_int(Py_ssize_t v, str what) except -1:
    if v > INT_MAX:
        raise ValueError(f"{what} of {v} exceeds the BLAS limit {INT_MAX}")
    return 0


cdef int _strides(Py_ssize_t sw, Py_ssize_t sh, Py_ssize_t dw, Py_ssize_t dh,
                  Py_ssize_t groups) except -1:
    if sw < 1 or sh < 1:
        raise ValueError(f"strides must be >= 1, got {sw}, {sh}")
    if dw < 1 or dh < 1:
        raise ValueError(f"dilations must be >= 1, got {dw}, {dh}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    _check_int(groups, "groups")
    return 0


cdef int _weight(Geom *g, cnp.ndarray w, str what, Py_ssize_t groups) except -1:
    """Kernel size and grid planes from a (M, image planes / g, kH, kW) weight."""
    ndim(w, what, 4, 4)
    g.M, g.kH, g.kW, g.G = dim(w, 0), dim(w, 2), dim(w, 3), <int> groups
    if g.M == 0 or dim(w, 1) == 0 or g.kH == 0 or g.kW == 0:
        raise ValueError(f"{what} has shape {shape(w)}, with an empty size")
    if g.M % groups:
        raise ValueError(f"{what} has {g.M} planes, which {groups} groups do not divide")
    return 0


cdef str _padding(Py_ssize_t pw, Py_ssize_t ph):
    return " (SAME padding)" if pw == -1 else (f" (padded by {ph}, {pw})" if pw or ph else "")


cdef int _finish(Geom *g, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t oH,
                 Py_ssize_t oW, Py_ssize_t pT, Py_ssize_t pL, Py_ssize_t sw, Py_ssize_t sh,
                 Py_ssize_t dw, Py_ssize_t dh) except -1:
    """Check the sizes, worked out in Py_ssize_t, against the ints of the loops and of BLAS,
    then store them. The padded extent the windows reach bounds every offset the loops
    form (oy * sH - pT + i * dH and the like), so none of them overflows an int."""
    window_args(g.kW, sw, pL, dw)
    window_args(g.kH, sh, pT, dh)
    _check_int(C * g.kH * g.kW, "a column length")
    _check_int(oH * oW, "a grid size")
    _check_int(C * H * W, "an image size")
    _check_int((oH - 1) * sh + (g.kH - 1) * dh + 1, "the padded height the windows reach")
    _check_int((oW - 1) * sw + (g.kW - 1) * dw + 1, "the padded width the windows reach")
    _check_int(H + pT + sh, "the padded input height")
    _check_int(W + pL + sw, "the padded input width")
    g.C, g.H, g.W, g.oH, g.oW, g.pT, g.pL = C, H, W, oH, oW, pT, pL
    g.sW, g.sH, g.dW, g.dH = sw, sh, dw, dh
    g.direct = (g.kH == 1 and g.kW == 1 and sw == 1 and sh == 1 and g.pT == 0 and g.pL == 0
                and g.oH == g.H and g.oW == g.W)
    return 0


cdef int _conv_geometry(Geom *g, cnp.ndarray x, cnp.ndarray w, str wwhat, Py_ssize_t sw,
                        Py_ssize_t sh, Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t dw,
                        Py_ssize_t dh, Py_ssize_t groups) except -1:
    """Fill ``g`` for the convolution of ``x`` (the image) by ``w``; return the batch size."""
    cdef Py_ssize_t pads[2]
    cdef Py_ssize_t C, H, W, oH, oW, pT
    _strides(sw, sh, dw, dh, groups)
    if not ((pw >= 0 and ph >= 0) or (pw == -1 and ph == -1)):
        raise ValueError(f"pads must be >= 0, or both -1 for SAME, got {pw}, {ph}")
    window_args(1, sw, pw, dw)
    window_args(1, sh, ph, dh)
    cdef int nd = ndim(x, "input", 3, 4)
    _weight(g, w, wwhat, groups)
    C, H, W = dim(x, nd - 3), dim(x, nd - 2), dim(x, nd - 1)
    if C != dim(w, 1) * groups:
        raise ValueError(f"input has {C} channels, expected {dim(w, 1) * groups}")
    oH = out_size(H, g.kH, sh, ph, dh, False, pads)
    pT = pads[0]
    oW = out_size(W, g.kW, sw, pw, dw, False, pads)
    if oH <= 0 or oW <= 0:
        dil = f" dilated by {dh}, {dw}" if dh > 1 or dw > 1 else ""
        raise ValueError(f"input is {H}x{W}{_padding(pw, ph)}, smaller than the "
                         f"{g.kH}x{g.kW} kernel{dil}")
    _finish(g, C, H, W, oH, oW, pT, pads[0], sw, sh, dw, dh)
    return dim(x, 0) if nd == 4 else 1


cdef int _full_geometry(Geom *g, cnp.ndarray x, cnp.ndarray w, str wwhat, Py_ssize_t sw,
                        Py_ssize_t sh, Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t aw,
                        Py_ssize_t ah, Py_ssize_t groups) except -1:
    """Fill ``g`` for the transposed convolution of ``x`` (the grid); return the batch size."""
    cdef Py_ssize_t C, H, W, oH, oW
    _strides(sw, sh, 1, 1, groups)
    if pw < 0 or ph < 0:
        raise ValueError(f"pads must be >= 0, got {pw}, {ph}")
    if aw < 0 or ah < 0 or aw >= sw or ah >= sh:
        raise ValueError(f"adjustments must lie in [0, stride), got {aw}, {ah} "
                         f"with strides {sw}, {sh}")
    window_args(1, sw, pw, 1)
    window_args(1, sh, ph, 1)
    cdef int nd = ndim(x, "input", 3, 4)
    _weight(g, w, wwhat, groups)
    if dim(x, nd - 3) != g.M:
        raise ValueError(f"input has {dim(x, nd - 3)} channels, expected {g.M}")
    oH, oW = dim(x, nd - 2), dim(x, nd - 1)
    C = dim(w, 1) * groups
    H = full_size(oH, g.kH, sh, ph, ah)
    W = full_size(oW, g.kW, sw, pw, aw)
    if H <= 0 or W <= 0:
        raise ValueError(f"input is {oH}x{oW}: with the {g.kH}x{g.kW} kernel, strides "
                         f"{sh}, {sw} and pads {ph}, {pw} the output would be {H}x{W}")
    _finish(g, C, H, W, oH, oW, ph, pw, sw, sh, 1, 1)
    return dim(x, 0) if nd == 4 else 1


cdef int _sized_is(cnp.ndarray a, str what, cnp.ndarray like, Py_ssize_t planes,
                   Py_ssize_t h, Py_ssize_t w) except -1:
    """``a`` has the shape (planes, h, w), after ``like``'s batch size when ``like`` is 4-D
    (compared in C: the tuples are built for the error only)."""
    cdef cnp.npy_intp dims[4]
    cdef int nd = 0
    if cnp.PyArray_NDIM(like) == 4:
        dims[0] = dim(like, 0)
        nd = 1
    dims[nd], dims[nd + 1], dims[nd + 2] = planes, h, w
    return dims_are(a, what, nd + 3, dims)


cdef int _vector(cnp.ndarray b, str what, int n) except -1:
    if b is not None:
        vector_of(b, what, n)
    return 0


# -- cores (checked input) --------------------------------------------------------------------

cdef inline void _span(Py_ssize_t start, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t n,
                       int *lo, int *hi) noexcept nogil:
    """[lo, hi): the k in [0, n) with 0 <= start + k * stride < size."""
    cdef Py_ssize_t a = 0, b = 0
    if start < 0:
        a = (-start + stride - 1) // stride
    if size - start > 0:
        b = (size - start + stride - 1) // stride
    if b > n:
        b = n
    if a > b:
        a = b
    lo[0] = <int> a
    hi[0] = <int> b


cdef void _im2col(const floating *x, floating *cols, const Geom *g, size_t ld) noexcept nogil:
    """cols[(c, i, j), (y, x)] := image[c, y*sH - pT + i*dH, x*sW - pL + j*dW], 0 outside;
    the rows of ``cols`` are ``ld`` apart (a block of samples side by side).

    With unit strides and rows as wide as the image's (SAME-like padding), a tap's column
    row is the plane shifted by a constant: one copy, then the wrapped ends of its rows
    zeroed. A forward with one output plane (im2col + gemv) on (32, 16, 28, 28) float32,
    3x3, pad 1: 770 us row by row, 560 us so (minimum of 41, loaded machine). Rows under 8
    numbers are copied by a loop the compiler unrolls, longer ones by memcpy (LeNet's
    6 -> 16, 5x5 on 14x14, rows of 10: the forward's instructions 73.5M -> 61.1M).
    """
    cdef int c, i, j, oy, ox, iy, ix0, lo, hi, ylo, yhi
    cdef size_t P = <size_t> g.oH * g.oW
    cdef floating *row = cols
    cdef floating *dst
    cdef const floating *src
    cdef bint shift = g.sW == 1 and g.sH == 1 and g.oW == g.W
    for c in range(g.C):
        for i in range(g.kH):
            _span(i * g.dH - g.pT, g.sH, g.H, g.oH, &ylo, &yhi)
            for j in range(g.kW):
                ix0 = j * g.dW - g.pL
                _span(ix0, g.sW, g.W, g.oW, &lo, &hi)
                if ylo == yhi or lo == hi:
                    memset(row, 0, P * sizeof(floating))
                    row += ld
                    continue
                memset(row, 0, <size_t> ylo * g.oW * sizeof(floating))
                memset(row + <size_t> yhi * g.oW, 0,
                       <size_t> (g.oH - yhi) * g.oW * sizeof(floating))
                if shift:
                    # from (ylo, lo) to (yhi - 1, hi): reads stay inside the plane
                    src = x + (<size_t> c * g.H + ylo + i * g.dH - g.pT) * g.W + ix0
                    dst = row + <size_t> ylo * g.oW
                    memcpy(dst + lo, src + lo,
                           (<size_t> (yhi - ylo - 1) * g.oW + hi - lo) * sizeof(floating))
                    for oy in range(ylo, yhi):
                        dst = row + <size_t> oy * g.oW
                        for ox in range(lo):
                            dst[ox] = 0
                        for ox in range(hi, g.oW):
                            dst[ox] = 0
                    row += ld
                    continue
                for oy in range(ylo, yhi):
                    dst = row + <size_t> oy * g.oW
                    iy = oy * g.sH - g.pT + i * g.dH
                    src = x + (<size_t> c * g.H + iy) * g.W + ix0
                    for ox in range(lo):
                        dst[ox] = 0
                    if g.sW == 1 and hi - lo >= 8:
                        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
                    elif g.sW == 1:
                        for ox in range(lo, hi):
                            dst[ox] = src[ox]
                    else:
                        for ox in range(lo, hi):
                            dst[ox] = src[ox * g.sW]
                    for ox in range(hi, g.oW):
                        dst[ox] = 0
                row += ld


cdef void _col2im(const floating *cols, floating *x, const Geom *g, size_t ld) noexcept nogil:
    """image[c, iy, ix] += every column entry whose tap lands there (the adjoint of _im2col;
    the rows of ``cols`` are ``ld`` apart)."""
    cdef int c, i, j, oy, ox, iy, ix0, lo, hi
    cdef const floating *row = cols
    cdef const floating *src
    cdef floating *dst
    for c in range(g.C):
        for i in range(g.kH):
            for j in range(g.kW):
                ix0 = j * g.dW - g.pL
                _span(ix0, g.sW, g.W, g.oW, &lo, &hi)
                for oy in range(g.oH):
                    iy = oy * g.sH - g.pT + i * g.dH
                    if iy < 0 or iy >= g.H:
                        continue
                    src = row + <size_t> oy * g.oW
                    dst = x + (<size_t> c * g.H + iy) * g.W + ix0
                    if g.sW == 1:
                        for ox in range(lo, hi):
                            dst[ox] += src[ox]
                    else:
                        for ox in range(lo, hi):
                            dst[ox * g.sW] += src[ox]
                row += ld


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


# Output planes per group up to which _panel runs in place of BLAS (see _panel.h).
cdef int PANEL_ROWS = 16


cdef inline void _panel(int R, int K, int P, const floating *a, ptrdiff_t ar, ptrdiff_t ak,
                        const floating *b, size_t ldb, const floating *bias, bint acc,
                        floating *y, size_t ldy) noexcept nogil:
    """y[r, :] := bias[r] (+ y[r, :]) + sum_k a(r, k) * b[k, :] for R rows (_panel.h)."""
    if floating is float:
        pm_panel_f(R, K, P, a, ar, ak, b, ldb, bias, acc, y, ldy)
    else:
        pm_panel_d(R, K, P, a, ar, ak, b, ldb, bias, acc, y, ldy)


cdef void _fill_planes(floating *y, const floating *b, int planes, size_t size,
                       bint add) noexcept nogil:
    """y[p, :] := b[p] (+= with ``add``) for a (planes, size) block."""
    cdef int p
    cdef size_t i
    cdef floating v
    for p in range(planes):
        v = b[p]
        if add:
            for i in range(size):
                y[i] += v
        else:
            for i in range(size):
                y[i] = v
        y += size


cdef inline floating _sum(const floating *x, size_t n) noexcept nogil:
    """sum(x[:n]) over eight running sums, which the compiler keeps in one vector register
    (a single running sum is a serial chain it may not reorder)."""
    cdef floating a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef size_t i = 0
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


cdef void _acc_planes(const floating *go, floating *gb, int planes, size_t size,
                      floating scale) noexcept nogil:
    """gb[p] += scale * sum(go[p, :]) for a (planes, size) block."""
    cdef int p
    for p in range(planes):
        gb[p] += scale * _sum(go, size)
        go += size


cdef void _grid_from_image(const floating *x, floating *y, const floating *w,
                           const floating *b, floating *cols, const Geom *g,
                           int n) noexcept nogil:
    """grid := weight @ im2col(image) (+ bias per grid plane), sample by sample."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, s, r
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P
    cdef const floating *src
    cdef floating *yn
    cdef floating beta
    if g.B > 1:
        _grid_from_image_blocked(x, y, w, b, cols, g, n)
        return
    for s in range(n):
        src = x + s * xs
        if not g.direct:
            _im2col(src, cols, g, P)
            src = cols
        yn = y + s * ys
        if Mg <= PANEL_ROWS:
            for r in range(g.G):
                _panel(Mg, Kg, P, w + <size_t> r * Mg * Kg, Kg, 1, src + <size_t> r * Kg * P, P,
                       NULL if b == NULL else b + r * Mg, False, yn + <size_t> r * Mg * P, P)
            continue
        beta = 0
        if b != NULL:
            _fill_planes(yn, b, g.M, P, False)
            beta = 1
        for r in range(g.G):
            _mm(NoTrans, NoTrans, Mg, P, Kg, <floating> 1, w + <size_t> r * Mg * Kg, Kg,
                src + <size_t> r * Kg * P, P, beta, yn + <size_t> r * Mg * P, P)


# -- blocks of samples ------------------------------------------------------------------------
#
# One sample's GEMM is small where the grid has few planes or few pixels (LeNet's 1 -> 6,
# 5x5 on 28x28 is (6, 25) @ (25, 784)), and BLAS spends much of such a call packing. With
# columns of shape (K + M, B * P), B samples' columns lie side by side in the first K rows
# (row stride B * P) and the last M rows stage the grid of the block as one (M, B * P)
# matrix: one GEMM per group covers B samples, and one pass moves the staged grid to or from
# the (N, M, oH, oW) layout (adding the bias on the way out). conv_columns_shape picks B.

cdef inline void _block_grid_out(const floating *stage, floating *y, const floating *b,
                                 const Geom *g, int nb, size_t ld) noexcept nogil:
    """y[k, m, :] := stage[m, k*P : (k+1)*P] (+ b[m]) for the nb samples of a block."""
    cdef size_t P = <size_t> g.oH * g.oW, i
    cdef int k, m
    cdef const floating *src
    cdef floating v
    for k in range(nb):
        for m in range(g.M):
            src = stage + <size_t> m * ld + <size_t> k * P
            v = b[m] if b != NULL else 0
            for i in range(P):
                y[i] = src[i] + v
            y += P


cdef inline void _block_grid_in(const floating *y, floating *stage, const Geom *g, int nb,
                                size_t ld) noexcept nogil:
    """stage[m, k*P : (k+1)*P] := y[k, m, :] for the nb samples of a block."""
    cdef size_t P = <size_t> g.oH * g.oW
    cdef int k, m
    for k in range(nb):
        for m in range(g.M):
            memcpy(stage + <size_t> m * ld + <size_t> k * P, y, P * sizeof(floating))
            y += P


cdef inline void _block_columns(const floating *x, floating *cols, const Geom *g, int nb,
                                size_t ld) noexcept nogil:
    """The columns of nb samples side by side, rows ``ld`` apart."""
    cdef size_t P = <size_t> g.oH * g.oW, xs = <size_t> g.C * g.H * g.W
    cdef int k
    for k in range(nb):
        _im2col(x + k * xs, cols + k * P, g, ld)


# Bytes of a block's columns and staged grid: they stay in L2 between the im2col and the GEMM.
cdef Py_ssize_t BLOCK_BYTES = 256 * 1024


cdef int _block_of(const Geom *g, int n, int itemsize) noexcept:
    """Samples per block of columns for a batch of n; 1 for one sample at a time, and where
    _panel runs the forward (few planes per group)."""
    cdef Py_ssize_t per = (<Py_ssize_t> g.C * g.kH * g.kW + g.M) * g.oH * g.oW * itemsize
    cdef Py_ssize_t B = BLOCK_BYTES // per
    if g.direct or n < 2 or B < 2 or g.M // g.G <= PANEL_ROWS:
        return 1
    if B > n:
        B = n
    if B * g.oH * g.oW > INT_MAX:
        B = INT_MAX // (<Py_ssize_t> g.oH * g.oW)
    return <int> B


cdef void _grid_from_image_blocked(const floating *x, floating *y, const floating *w,
                                   const floating *b, floating *cols, const Geom *g,
                                   int n) noexcept nogil:
    """_grid_from_image, g.B samples per GEMM."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, r, nb, s = 0
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P, ld
    cdef floating *stage = cols + <size_t> g.G * Kg * g.B * P
    while s < n:
        nb = g.B if n - s > g.B else n - s
        ld = <size_t> nb * P
        _block_columns(x + s * xs, cols, g, nb, ld)
        for r in range(g.G):
            _mm(NoTrans, NoTrans, Mg, <int> ld, Kg, <floating> 1, w + <size_t> r * Mg * Kg, Kg,
                cols + <size_t> r * Kg * ld, <int> ld, <floating> 0,
                stage + <size_t> r * Mg * ld, <int> ld)
        _block_grid_out(stage, y + s * ys, b, g, nb, ld)
        s += nb


cdef void _image_from_grid_blocked(const floating *y, floating *x, const floating *w,
                                   floating *cols, const Geom *g, int n) noexcept nogil:
    """_image_from_grid, g.B samples per GEMM."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, r, k, nb, s = 0
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P, ld
    cdef floating *stage = cols + <size_t> g.G * Kg * g.B * P
    cdef floating *xn
    while s < n:
        nb = g.B if n - s > g.B else n - s
        ld = <size_t> nb * P
        _block_grid_in(y + s * ys, stage, g, nb, ld)
        for r in range(g.G):
            _mm(Trans, NoTrans, Kg, <int> ld, Mg, <floating> 1, w + <size_t> r * Mg * Kg, Kg,
                stage + <size_t> r * Mg * ld, <int> ld, <floating> 0,
                cols + <size_t> r * Kg * ld, <int> ld)
        for k in range(nb):
            xn = x + (s + k) * xs
            memset(xn, 0, xs * sizeof(floating))
            _col2im(cols + <size_t> k * P, xn, g, ld)
        s += nb


cdef void _acc_weight_blocked(const floating *x, const floating *y, floating *gw,
                              floating *cols, const Geom *g, int n,
                              floating scale) noexcept nogil:
    """_acc_weight, g.B samples per GEMM (the sum over the block is the GEMM's)."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, r, nb, s = 0
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P, ld
    cdef floating *stage = cols + <size_t> g.G * Kg * g.B * P
    while s < n:
        nb = g.B if n - s > g.B else n - s
        ld = <size_t> nb * P
        _block_columns(x + s * xs, cols, g, nb, ld)
        _block_grid_in(y + s * ys, stage, g, nb, ld)
        for r in range(g.G):
            _mm(NoTrans, Trans, Mg, Kg, <int> ld, scale, stage + <size_t> r * Mg * ld, <int> ld,
                cols + <size_t> r * Kg * ld, <int> ld, <floating> 1,
                gw + <size_t> r * Mg * Kg, Kg)
        s += nb

# The transposed forward (float32, one group, where _rows_scratch says it pays): the GEMM
# writes the output as (pixels, planes), then one pass transposes it into NCHW with the bias
# added. OpenBLAS then packs the big operand (the patches, a pixel's patch one contiguous row)
# in long contiguous runs, and only the small weight in strided ones: at (32, 16, 28, 28),
# 16 -> 32, 3x3, pad 1 its packing drops from ~19% to ~6% of the forward. The patches are cut
# from a zero-padded (H, W, C) copy of the sample, in (i, j, c) order, the weight reordered to
# match: with a unit column dilation a kernel row of a patch is kW * C contiguous numbers.
# The forward goes 3.8 -> 3.3 ms (median of runs on a shared machine). float64 stays plain:
# its GEMM is slower transposed (OpenBLAS dgemm at M=32, P=784, K=144: 152 -> 172 us).

cdef inline int _padded(int out, Py_ssize_t kernel, Py_ssize_t stride,
                        Py_ssize_t dilation) noexcept nogil:
    """Image rows (or columns) the windows reach, from the first padded one."""
    return (out - 1) * stride + (kernel - 1) * dilation + 1


cdef Py_ssize_t _rows_scratch(const Geom *g):
    """Length of the transposed forward's scratch: padded (H, W, C) image, (P, M) output,
    (M, kH*kW*C) reordered weight; 0 where that forward does not run.

    It runs for patches of >= 128 numbers and either >= 24 output planes or small grids
    (<= 64 pixels, >= 10 planes); elsewhere its copies cost about what the GEMM saves, or
    more. Forward ms, plain -> transposed, float32, 3x3 pad 1 unless said:
      runs:  N32 C16 28x28 M32 3.87 -> 3.48, N16 C32 14x14 M24 0.84 -> 0.75,
             N32 C64 7x7 M64 1.91 -> 1.66, N64 C6 12x12 M12 5x5 0.49 -> 0.32,
             N16 C128 4x4 M16 0.37 -> 0.14, N16 C16 10x10 M12 pad 0 0.12 -> 0.07;
      not:   N16 C16 12x12 M16 0.17 -> 0.21, N16 C32 14x14 M16 0.43 -> 0.53,
             N16 C8 28x28 M12 0.31 -> 0.61, N64 C1 28x28 M6 5x5 0.30 -> 0.94,
             N8 C16 28x28 M8 0.23 -> 0.41 (N16 C16 28x28 M16 0.82x, M12 1.05x)."""
    if (g.G != 1 or g.direct or g.C * g.kH * g.kW < 128 or g.M < 10
            or (g.M < 24 and g.oH * g.oW > 64)):
        return 0
    return (<Py_ssize_t> _padded(g.oH, g.kH, g.sH, g.dH) * _padded(g.oW, g.kW, g.sW, g.dW) * g.C
            + <Py_ssize_t> g.oH * g.oW * g.M + <Py_ssize_t> g.M * g.C * g.kH * g.kW)


cdef void _pad_hwc(const float *x, float *xp, const Geom *g, int Hp, int Wp) noexcept nogil:
    """xp[yy, xx, c] := image[c, yy - pT, xx - pL], 0 outside; one padded row at a time."""
    cdef int yy, iy, lo, hi
    cdef size_t row = <size_t> Wp * g.C
    cdef float *dst
    lo = g.pL if g.pL < Wp else Wp
    hi = g.pL + g.W if g.pL + g.W < Wp else Wp
    for yy in range(Hp):
        dst = xp + yy * row
        iy = yy - g.pT
        if iy < 0 or iy >= g.H:
            memset(dst, 0, row * sizeof(float))
            continue
        memset(dst, 0, <size_t> lo * g.C * sizeof(float))
        memset(dst + <size_t> hi * g.C, 0, <size_t> (Wp - hi) * g.C * sizeof(float))
        pm_transpose_f(x + <size_t> iy * g.W, <size_t> g.H * g.W, dst + <size_t> lo * g.C, g.C,
                       g.C, hi - lo, NULL)


cdef void _im2row(const float *xp, float *rows, const Geom *g, int Wp) noexcept nogil:
    """rows[(y, x), (i, j, c)] := xp[y*sH + i*dH, x*sW + j*dW, c]."""
    cdef int oy, ox, i, j, k, KW = g.kW * g.C
    cdef size_t tap = <size_t> g.C * sizeof(float)
    cdef float *dst = rows
    cdef const float *src
    for oy in range(g.oH):
        for ox in range(g.oW):
            for i in range(g.kH):
                src = xp + ((<size_t> oy * g.sH + i * g.dH) * Wp + <size_t> ox * g.sW) * g.C
                if g.dW == 1:
                    for k in range(KW):
                        dst[k] = src[k]
                    dst += KW
                else:
                    for j in range(g.kW):
                        memcpy(dst, src + <size_t> j * g.dW * g.C, tap)
                        dst += g.C


cdef void _weight_hwc(const float *w, float *wr, const Geom *g) noexcept nogil:
    """wr[m, (i, j, c)] := w[m, c, i, j]."""
    cdef int m, c, t, T = g.kH * g.kW
    cdef const float *src
    cdef float *dst
    for m in range(g.M):
        src = w + <size_t> m * g.C * T
        dst = wr + <size_t> m * g.C * T
        for c in range(g.C):
            for t in range(T):
                dst[<size_t> t * g.C + c] = src[<size_t> c * T + t]


cdef void _grid_from_image_t(const float *x, float *y, const float *w, const float *b,
                             float *rows, float *scratch, const Geom *g, int n) noexcept nogil:
    """_grid_from_image of an ungrouped, not direct float32 convolution, transposed."""
    cdef int P = g.oH * g.oW, K = g.C * g.kH * g.kW, s
    cdef int Hp = _padded(g.oH, g.kH, g.sH, g.dH), Wp = _padded(g.oW, g.kW, g.sW, g.dW)
    cdef float *xp = scratch
    cdef float *yt = xp + <size_t> Hp * Wp * g.C
    cdef float *wr = yt + <size_t> P * g.M
    _weight_hwc(w, wr, g)
    for s in range(n):
        _pad_hwc(x + <size_t> s * g.C * g.H * g.W, xp, g, Hp, Wp)
        _im2row(xp, rows, g, Wp)
        _mm(NoTrans, Trans, P, g.M, K, <float> 1, rows, K, wr, K, <float> 0, yt, g.M)
        pm_transpose_f(yt, g.M, y + <size_t> s * g.M * P, P, P, g.M, b)


cdef void _image_from_grid(const floating *y, floating *x, const floating *w, floating *cols,
                           const Geom *g, int n) noexcept nogil:
    """image := col2im(weight.T @ grid), sample by sample (the adjoint of _grid_from_image)."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, s, r
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P
    cdef floating *xn
    cdef floating *dst
    if g.B > 1:
        _image_from_grid_blocked(y, x, w, cols, g, n)
        return
    for s in range(n):
        xn = x + s * xs
        dst = xn if g.direct else cols
        for r in range(g.G):
            _mm(Trans, NoTrans, Kg, P, Mg, <floating> 1, w + <size_t> r * Mg * Kg, Kg,
                y + s * ys + <size_t> r * Mg * P, P, <floating> 0, dst + <size_t> r * Kg * P, P)
        if not g.direct:
            memset(xn, 0, xs * sizeof(floating))
            _col2im(cols, xn, g, P)


cdef void _acc_weight(const floating *x, const floating *y, floating *gw, floating *cols,
                      const Geom *g, int n, floating scale) noexcept nogil:
    """gw += scale * grid @ im2col(image).T, summed over the samples."""
    cdef int P = g.oH * g.oW, Kg = g.C // g.G * g.kH * g.kW, Mg = g.M // g.G, s, r
    cdef size_t xs = <size_t> g.C * g.H * g.W, ys = <size_t> g.M * P
    cdef const floating *src
    if g.B > 1:
        _acc_weight_blocked(x, y, gw, cols, g, n, scale)
        return
    for s in range(n):
        src = x + s * xs
        if not g.direct:
            _im2col(src, cols, g, P)
            src = cols
        for r in range(g.G):
            _mm(NoTrans, Trans, Mg, Kg, P, scale, y + s * ys + <size_t> r * Mg * P, P,
                src + <size_t> r * Kg * P, P, <floating> 1, gw + <size_t> r * Mg * Kg, Kg)


# The transposed weight gradient (float32, where _rows_scratch says the transposed forward
# runs, in the same scratch): gw.T (K, M) += columns (K, P) @ grid.T (P, M), summed over the
# samples in the scratch and folded into gw once per call. OpenBLAS sgemm at M=32, K=144,
# P=784: 103 us per sample as gw += grid @ columns.T, 82 us so (the (M, P) -> (P, M) copy of
# the grid costs a few us); gw += grid @ patch rows (P, K) gains nothing (102 us).

cdef void _acc_weight_t(const float *x, const float *y, float *gw, float *cols,
                        float *scratch, const Geom *g, int n, float scale) noexcept nogil:
    """_acc_weight of an ungrouped, not direct float32 convolution, transposed."""
    cdef int P = g.oH * g.oW, K = g.C * g.kH * g.kW, s, k, m
    cdef int Hp = _padded(g.oH, g.kH, g.sH, g.dH), Wp = _padded(g.oW, g.kW, g.sW, g.dW)
    cdef float *yt = scratch + <size_t> Hp * Wp * g.C
    cdef float *gwt = yt + <size_t> P * g.M
    memset(gwt, 0, <size_t> K * g.M * sizeof(float))
    for s in range(n):
        _im2col(x + <size_t> s * g.C * g.H * g.W, cols, g, P)
        pm_transpose_f(y + <size_t> s * g.M * P, P, yt, g.M, g.M, P, NULL)
        _mm(NoTrans, NoTrans, K, g.M, P, <float> 1, cols, P, yt, g.M, <float> 1, gwt, g.M)
    for m in range(g.M):
        for k in range(K):
            gw[<size_t> m * K + k] += scale * gwt[<size_t> k * g.M + m]


# -- SpatialConvolution, SpatialDilatedConvolution, SpatialFullConvolution --------------------
#
# The convolution and its transpose share their entries: ``full`` picks the transposed one,
# whose input is the grid and whose (a, b) window arguments are adjustments, not dilations.

cdef int _geometry(Geom *g, bint full, cnp.ndarray x, cnp.ndarray w, str wwhat, Py_ssize_t sw,
                   Py_ssize_t sh, Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t aw, Py_ssize_t ah,
                   Py_ssize_t groups) except -1:
    """Fill ``g`` for the (transposed, if ``full``) convolution of ``x``; return the batch."""
    if full:
        return _full_geometry(g, x, w, wwhat, sw, sh, pw, ph, aw, ah, groups)
    return _conv_geometry(g, x, w, wwhat, sw, sh, pw, ph, aw, ah, groups)


cdef int _shapes(Geom *g, bint full, cnp.ndarray x, cnp.ndarray w, str w_what, cnp.ndarray b,
                 str b_what, cnp.ndarray out, str out_what, cnp.ndarray cols, Py_ssize_t sw,
                 Py_ssize_t sh, Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t aw, Py_ssize_t ah,
                 Py_ssize_t groups) except -1:
    """Fill ``g`` (_geometry); check the bias (or None), the array shaped like the output and
    the columns against it; return the batch size."""
    cdef int n = _geometry(g, full, x, w, w_what, sw, sh, pw, ph, aw, ah, groups)
    _vector(b, b_what, g.C if full else g.M)
    if full:
        _sized_is(out, out_what, x, g.C, g.H, g.W)
    else:
        _sized_is(out, out_what, x, g.M, g.oH, g.oW)
    _columns(g, cols, full)
    return n


cdef int _columns(Geom *g, cnp.ndarray cols, bint full) except -1:
    """Check the columns, (K, P) or, for a convolution that reads them, (K + M, B * P) with
    B >= 2 (a block of B samples); set g.B."""
    cdef Py_ssize_t K = <Py_ssize_t> g.C * g.kH * g.kW, P = <Py_ssize_t> g.oH * g.oW
    g.B = 1
    if (not full and not g.direct and cnp.PyArray_NDIM(cols) == 2 and dim(cols, 0) == K + g.M
            and dim(cols, 1) >= 2 * P and dim(cols, 1) % P == 0):
        _check_int(dim(cols, 1), "a block of columns")
        g.B = <int> (dim(cols, 1) // P)
        return 0
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = K, P
    dims_are(cols, "columns", 2, dims)
    return 0


def conv_scratch_size(input, weight, Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                      Py_ssize_t pad_h, Py_ssize_t dilation_w, Py_ssize_t dilation_h,
                      Py_ssize_t n_group):
    """Length of conv_update_output's ``scratch`` for these arguments; 0 when it takes none
    (float64, groups, a 1x1 kernel read in place, or sizes where the plain forward is as fast;
    see _rows_scratch)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Geom g
    _conv_geometry(&g, x, w, "weight", stride_w, stride_h, pad_w, pad_h, dilation_w,
                   dilation_h, n_group)
    return _rows_scratch(&g) if t == cnp.NPY_FLOAT32 else 0


def conv_columns_shape(input, weight, Py_ssize_t stride_w, Py_ssize_t stride_h,
                       Py_ssize_t pad_w, Py_ssize_t pad_h, Py_ssize_t dilation_w,
                       Py_ssize_t dilation_h, Py_ssize_t n_group):
    """Shape of the ``columns`` the convolution kernels run fastest with for these arguments:
    (K + M, B * P) for blocks of B >= 2 samples (see _block_of), else (K, P), with K the
    column length C * kH * kW, M the output planes and P the output pixels."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Geom g
    cdef int n = _conv_geometry(&g, x, w, "weight", stride_w, stride_h, pad_w, pad_h,
                                dilation_w, dilation_h, n_group)
    cdef Py_ssize_t K = <Py_ssize_t> g.C * g.kH * g.kW, P = <Py_ssize_t> g.oH * g.oW
    cdef int B = _block_of(&g, n, 4 if t == cnp.NPY_FLOAT32 else 8)
    if B < 2:
        return (K, P)
    return (K + g.M, B * P)


def conv_update_output(input, output, weight, bias, columns, Py_ssize_t stride_w,
                       Py_ssize_t stride_h, Py_ssize_t pad_w, Py_ssize_t pad_h,
                       Py_ssize_t dilation_w, Py_ssize_t dilation_h, Py_ssize_t n_group,
                       scratch=None):
    """output := conv(input, weight) + bias.

    (N, C, H, W) x (O, C/g, kH, kW) -> (N, O, oH, oW); (C, H, W) -> (O, oH, oW). ``columns`` is
    scratch of shape (C*kH*kW, oH*oW); ``bias`` may be None; pads -1, -1 mean SAME. ``scratch``,
    a vector of conv_scratch_size(...) numbers, runs the faster transposed forward where that
    size is not 0; None keeps the plain one.
    """
    _forward(input, output, weight, bias, columns, stride_w, stride_h, pad_w, pad_h, dilation_w,
             dilation_h, n_group, False, scratch)


def full_conv_update_output(input, output, weight, bias, columns, Py_ssize_t stride_w,
                            Py_ssize_t stride_h, Py_ssize_t pad_w, Py_ssize_t pad_h,
                            Py_ssize_t adj_w, Py_ssize_t adj_h, Py_ssize_t n_group):
    """output := the transposed convolution of input by weight, + bias.

    (N, C, H, W) x (C, O/g, kH, kW) -> (N, O, oH, oW), oH = (H - 1) * stride_h - 2 * pad_h
    + kH + adj_h; (C, H, W) -> (O, oH, oW). ``columns`` is scratch of shape (O*kH*kW, H*W).
    """
    _forward(input, output, weight, bias, columns, stride_w, stride_h, pad_w, pad_h, adj_w,
             adj_h, n_group, True, None)


cdef int _forward(input, output, weight, bias, columns, Py_ssize_t sw, Py_ssize_t sh, Py_ssize_t pw,
                  Py_ssize_t ph, Py_ssize_t aw, Py_ssize_t ah, Py_ssize_t groups, bint full,
                  scratch) except -1:
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef Geom g
    cdef int n = _shapes(&g, full, x, w, "weight", b, "bias", y, "output", cols, sw, sh, pw, ph,
                         aw, ah, groups)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", cols, "columns")
    disjoint_from(cols, "columns", x, "input", w, "weight", b, "bias")
    cdef cnp.ndarray sc = None
    cdef Py_ssize_t size = _rows_scratch(&g) if t == cnp.NPY_FLOAT32 else 0
    if scratch is not None:
        sc = array(scratch, "scratch", t, True)
        vector_of(sc, "scratch", size)
        disjoint_from(sc, "scratch", x, "input", w, "weight", b, "bias", y, "output",
                      cols, "columns")
    with nogil:
        if sc is not None and size and n:
            _grid_from_image_t(f32(x), f32(y), f32(w), f32(b), f32(cols), f32(sc), &g, n)
        elif t == cnp.NPY_FLOAT32:
            _forward_core(f32(x), f32(y), f32(w), f32(b), f32(cols), &g, n, full)
        else:
            _forward_core(f64(x), f64(y), f64(w), f64(b), f64(cols), &g, n, full)
    return 0


cdef void _forward_core(const floating *x, floating *y, const floating *w, const floating *b,
                        floating *cols, const Geom *g, int n, bint full) noexcept nogil:
    cdef int s
    cdef size_t size = <size_t> g.H * g.W
    if not full:
        _grid_from_image(x, y, w, b, cols, g, n)
        return
    _image_from_grid(x, y, w, cols, g, n)
    if b != NULL:
        for s in range(n):
            _fill_planes(y + s * g.C * size, b, g.C, size, True)


def conv_update_grad_input(input, grad_output, grad_input, weight, columns, Py_ssize_t stride_w,
                           Py_ssize_t stride_h, Py_ssize_t pad_w, Py_ssize_t pad_h,
                           Py_ssize_t dilation_w, Py_ssize_t dilation_h, Py_ssize_t n_group):
    """grad_input := the adjoint of the convolution applied to grad_output (shape of input)."""
    _backward(input, grad_output, grad_input, weight, columns, stride_w, stride_h, pad_w, pad_h,
              dilation_w, dilation_h, n_group, False)


def full_conv_update_grad_input(input, grad_output, grad_input, weight, columns,
                                Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                                Py_ssize_t pad_h, Py_ssize_t adj_w, Py_ssize_t adj_h,
                                Py_ssize_t n_group):
    """grad_input := the convolution of grad_output by weight (shape of input)."""
    _backward(input, grad_output, grad_input, weight, columns, stride_w, stride_h, pad_w, pad_h,
              adj_w, adj_h, n_group, True)


cdef int _backward(input, grad_output, grad_input, weight, columns, Py_ssize_t sw, Py_ssize_t sh,
                   Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t aw, Py_ssize_t ah, Py_ssize_t groups,
                   bint full) except -1:
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef Geom g
    cdef int n = _shapes(&g, full, x, w, "weight", None, None, go, "gradOutput", cols, sw, sh,
                         pw, ph, aw, ah, groups)
    same_shape(gi, "gradInput", x)
    disjoint_from(gi, "gradInput", go, "gradOutput", w, "weight", cols, "columns")
    disjoint_from(cols, "columns", go, "gradOutput", w, "weight")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _backward_core(f32(go), f32(gi), f32(w), f32(cols), &g, n, full)
        else:
            _backward_core(f64(go), f64(gi), f64(w), f64(cols), &g, n, full)
    return 0


cdef void _backward_core(const floating *go, floating *gi, const floating *w, floating *cols,
                         const Geom *g, int n, bint full) noexcept nogil:
    if full:
        _grid_from_image(go, gi, w, NULL, cols, g, n)
    else:
        _image_from_grid(go, gi, w, cols, g, n)


def conv_acc_grad_parameters(input, grad_output, grad_weight, grad_bias, columns,
                             Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                             Py_ssize_t pad_h, Py_ssize_t dilation_w, Py_ssize_t dilation_h,
                             Py_ssize_t n_group, double scale_w, double scale_b, scratch=None):
    """grad_weight += scale_w * dL/dweight; grad_bias += scale_b * grad_output summed per plane.

    A scale of 0 skips its term; ``grad_bias`` may be None. ``scratch``, as for
    conv_update_output, runs the faster transposed weight gradient where its size is not 0.
    """
    _acc(input, grad_output, grad_weight, grad_bias, columns, stride_w, stride_h, pad_w, pad_h,
         dilation_w, dilation_h, n_group, scale_w, scale_b, False, scratch)


def full_conv_acc_grad_parameters(input, grad_output, grad_weight, grad_bias, columns,
                                  Py_ssize_t stride_w, Py_ssize_t stride_h, Py_ssize_t pad_w,
                                  Py_ssize_t pad_h, Py_ssize_t adj_w, Py_ssize_t adj_h,
                                  Py_ssize_t n_group, double scale_w, double scale_b):
    """grad_weight += scale_w * input @ im2col(grad_output).T; grad_bias += scale_b * sums.

    A scale of 0 skips its term; ``grad_bias`` may be None.
    """
    _acc(input, grad_output, grad_weight, grad_bias, columns, stride_w, stride_h, pad_w, pad_h,
         adj_w, adj_h, n_group, scale_w, scale_b, True, None)


cdef int _acc(input, grad_output, grad_weight, grad_bias, columns, Py_ssize_t sw, Py_ssize_t sh,
              Py_ssize_t pw, Py_ssize_t ph, Py_ssize_t aw, Py_ssize_t ah, Py_ssize_t groups,
              double scale_w, double scale_b, bint full, scratch) except -1:
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray cols = array(columns, "columns", t, True)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef Geom g
    cdef int n = _shapes(&g, full, x, gw, "gradWeight", gb, "gradBias", go, "gradOutput", cols,
                         sw, sh, pw, ph, aw, ah, groups)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias",
                  cols, "columns")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput", gw, "gradWeight",
                  cols, "columns")
    disjoint_from(cols, "columns", x, "input", go, "gradOutput", gw, "gradWeight",
                  gb, "gradBias")
    cdef cnp.ndarray sc = None
    cdef Py_ssize_t size = _rows_scratch(&g) if t == cnp.NPY_FLOAT32 else 0
    if scratch is not None:
        sc = array(scratch, "scratch", t, True)
        vector_of(sc, "scratch", size)
        disjoint_from(sc, "scratch", x, "input", go, "gradOutput", gw, "gradWeight",
                      gb, "gradBias", cols, "columns")
    with nogil:
        if sc is not None and size and n:
            if scale_w != 0:
                _acc_weight_t(f32(x), f32(go), f32(gw), f32(cols), f32(sc), &g, n,
                              <float> scale_w)
            _acc_core(f32(x), f32(go), f32(gw), f32(gb), f32(cols), &g, n, full, 0,
                      <float> scale_b)
        elif t == cnp.NPY_FLOAT32:
            _acc_core(f32(x), f32(go), f32(gw), f32(gb), f32(cols), &g, n, full,
                      <float> scale_w, <float> scale_b)
        else:
            _acc_core(f64(x), f64(go), f64(gw), f64(gb), f64(cols), &g, n, full, scale_w,
                      scale_b)
    return 0


cdef void _acc_core(const floating *x, const floating *go, floating *gw, floating *gb,
                    floating *cols, const Geom *g, int n, bint full, floating scale_w,
                    floating scale_b) noexcept nogil:
    """The weight gradient sums grid (x) image over the samples; the bias gradient sums
    grad_output, the grid of a convolution and the image of a transposed one, per plane."""
    cdef int s, planes = g.C if full else g.M
    cdef size_t size = <size_t> g.H * g.W if full else <size_t> g.oH * g.oW
    if scale_w != 0:
        if full:
            _acc_weight(go, x, gw, cols, g, n, scale_w)
        else:
            _acc_weight(x, go, gw, cols, g, n, scale_w)
    if scale_b != 0 and gb != NULL:
        for s in range(n):
            _acc_planes(go + s * planes * size, gb, planes, size, scale_b)


# -- the direct forward of few-plane convolutions ---------------------------------------------
#
# A convolution with few input and output planes, a kernel of 16 taps or more (5x5: LeNet's),
# stride 1, no dilation and one group runs its forward without im2col (pm_direct_* in
# _panel.h): each tap read in place from the image (a zero-padded copy of it where there are
# pads), the output planes in vector lanes, then one transposing pass adds the bias into NCHW.
# Forward, float32, one thread, CPU time on a shared machine, im2col + panel -> direct, 6 -> 16
# on 14x14: 25 -> 15 us at batch 1, 1.97 -> 0.44 ms at batch 64 (float64: 2.3 -> 1.5 ms).
# A scratch vector of conv_direct_size numbers holds the transposed weight, the transposed
# output and the padded image.
#
# With one vector of output planes or fewer (LeNet's 1 -> 6 float32) and output rows of two
# vectors or more, the pixels of an output row go in the lanes instead (pm_direct_rows_*): the
# weight read as it lies, the sums stored into NCHW from the bias, the scratch only the padded
# image. LeNet's 1 -> 6, 5x5, pad 2 on 28x28, float32, one thread, CPU time on a shared
# machine: im2col + panel 0.98 ms -> 0.28 ms at batch 64.

cdef int _lanes(const Geom *g, int itemsize) noexcept nogil:
    """The output planes rounded up to whole vectors of the direct forward's kernel: 64 bytes
    for float32 on a core with AVX-512, else 32."""
    cdef int L = 32 // itemsize
    if itemsize == 4:
        return pm_direct_lanes_f(g.M)
    return (g.M + L - 1) // L * L


def direct_allow_wide(bint allow):
    """False: the direct convolutions run their 32-byte kernels on any core (tests compare
    the two); True: the core's widest (64-byte ones where it has AVX-512)."""
    pm_panel_allow_wide(allow)


def direct_wide():
    """Whether the float32 direct convolutions run their 64-byte kernels on this core."""
    return bool(pm_panel_wide())


cdef Py_ssize_t _direct_size(const Geom *g, int itemsize):
    """Length of the direct forward's scratch; 0 where it does not run (see above): at most
    16 input and 32 output planes, where a GEMM has too little to work on to pay its packing,
    and more than one vector of output planes (with one, LeNet's 1 -> 6 float32, the panel
    over im2col was as fast: 0.63 -> 0.76 ms at batch 64, 13 -> 9 us at batch 1)."""
    if (g.G != 1 or g.sW != 1 or g.sH != 1 or g.dW != 1 or g.dH != 1 or g.kH * g.kW < 16
            or g.C > 16 or g.M > 32):
        return 0
    if _direct_rows(g, itemsize):
        if _direct_padded(g):
            return <Py_ssize_t> g.C * (g.oH + g.kH - 1) * (g.oW + g.kW - 1)
        return 1  # nothing to hold, but the direct forward runs
    if g.M * itemsize <= 32:
        return 0
    # room for the planes in float32's 64-byte vectors, the widest either kernel uses
    cdef Py_ssize_t V = 16 if itemsize == 4 else 32 // itemsize
    cdef Py_ssize_t ML = (g.M + V - 1) // V * V
    cdef Py_ssize_t K = <Py_ssize_t> g.C * g.kH * g.kW
    cdef Py_ssize_t padded = 0
    if _direct_padded(g):
        padded = <Py_ssize_t> g.C * (g.oH + g.kH - 1) * (g.oW + g.kW - 1)
    return K * ML + <Py_ssize_t> g.oH * g.oW * ML + padded


cdef inline bint _direct_rows(const Geom *g, int itemsize) noexcept nogil:
    """Whether the direct forward puts the pixels of an output row in the lanes: one vector
    of output planes or fewer, rows of two vectors or more (pm_direct_rows_*)."""
    return g.M * itemsize <= 32 and g.oW * itemsize >= 64


cdef inline bint _direct_padded(const Geom *g) noexcept nogil:
    """Whether the windows reach outside the image (then they read a zero-padded copy)."""
    return g.pT > 0 or g.pL > 0 or g.oH + g.kH - 1 > g.H or g.oW + g.kW - 1 > g.W


cdef void _pad_image(const floating *x, floating *xp, const Geom *g, int Hp,
                     int Wp) noexcept nogil:
    """xp[c, yy, xx] := image[c, yy - pT, xx - pL], 0 outside, for yy < Hp, xx < Wp."""
    cdef int c, yy, iy, lo, hi
    cdef floating *dst
    lo = g.pL if g.pL < Wp else Wp
    hi = g.pL + g.W if g.pL + g.W < Wp else Wp
    for c in range(g.C):
        for yy in range(Hp):
            dst = xp + (<size_t> c * Hp + yy) * Wp
            iy = yy - g.pT
            if iy < 0 or iy >= g.H or hi <= lo:
                memset(dst, 0, Wp * sizeof(floating))
                continue
            memset(dst, 0, lo * sizeof(floating))
            memcpy(dst + lo, x + (<size_t> c * g.H + iy) * g.W, (hi - lo) * sizeof(floating))
            memset(dst + hi, 0, (Wp - hi) * sizeof(floating))


cdef void _direct_forward(const floating *x, floating *y, const floating *w,
                          const floating *b, floating *scratch, const Geom *g,
                          int n) noexcept nogil:
    """output := conv(input, weight) + bias by pm_direct_*, sample by sample."""
    cdef int ML = _lanes(g, sizeof(floating)), P = g.oH * g.oW, T = g.kH * g.kW
    cdef int K = g.C * T, s, m, k, p
    cdef int Hp = g.oH + g.kH - 1, Wp = g.oW + g.kW - 1
    cdef bint pad = _direct_padded(g)
    cdef floating *wt = scratch
    cdef floating *yt = wt + <size_t> K * ML
    cdef floating *xp = yt + <size_t> P * ML
    cdef const floating *src
    cdef const floating *row
    cdef floating *yn
    cdef floating v
    if _direct_rows(g, sizeof(floating)):
        for s in range(n):
            src = x + <size_t> s * g.C * g.H * g.W
            if pad:
                _pad_image(src, scratch, g, Hp, Wp)
                src = scratch
            yn = y + <size_t> s * g.M * P
            if floating is float:
                pm_direct_rows_f(g.C, g.M, g.kH, g.kW, g.oH, g.oW, src,
                                 <size_t> (Hp if pad else g.H) * (Wp if pad else g.W),
                                 Wp if pad else g.W, w, b, yn)
            else:
                pm_direct_rows_d(g.C, g.M, g.kH, g.kW, g.oH, g.oW, src,
                                 <size_t> (Hp if pad else g.H) * (Wp if pad else g.W),
                                 Wp if pad else g.W, w, b, yn)
        return
    # wt[k, m] := w[m, k], 0 in the lanes past M
    if floating is float:
        pm_transpose_f(w, K, wt, ML, g.M, K, NULL)
    else:
        for m in range(g.M):
            for k in range(K):
                wt[<size_t> k * ML + m] = w[<size_t> m * K + k]
    if ML > g.M:
        for k in range(K):
            memset(wt + <size_t> k * ML + g.M, 0, (ML - g.M) * sizeof(floating))
    for s in range(n):
        src = x + <size_t> s * g.C * g.H * g.W
        if pad:
            _pad_image(src, xp, g, Hp, Wp)
            src = xp
        if floating is float:
            pm_direct_f(g.C, g.kH, g.kW, g.oH, g.oW, src, <size_t> (Hp if pad else g.H) *
                        (Wp if pad else g.W), Wp if pad else g.W, wt, ML, yt)
        else:
            pm_direct_d(g.C, g.kH, g.kW, g.oH, g.oW, src, <size_t> (Hp if pad else g.H) *
                        (Wp if pad else g.W), Wp if pad else g.W, wt, ML, yt)
        yn = y + <size_t> s * g.M * P
        if floating is float:
            pm_transpose_f(yt, ML, yn, P, P, g.M, b)
        else:
            for m in range(g.M):
                v = b[m] if b != NULL else 0
                row = yt + m
                for p in range(P):
                    yn[p] = row[<size_t> p * ML] + v
                yn += P


def conv_direct_size(input, weight, Py_ssize_t stride_w, Py_ssize_t stride_h,
                     Py_ssize_t pad_w, Py_ssize_t pad_h, Py_ssize_t dilation_w,
                     Py_ssize_t dilation_h, Py_ssize_t n_group):
    """Length of conv_direct_update_output's ``scratch`` for these arguments; 0 where the
    direct forward does not run (more than 16 input or 32 output planes, one vector of output
    planes or less with output rows shorter than two vectors, a kernel of fewer than 16 taps,
    strides, dilations or groups)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Geom g
    _conv_geometry(&g, x, w, "weight", stride_w, stride_h, pad_w, pad_h, dilation_w,
                   dilation_h, n_group)
    return _direct_size(&g, 4 if t == cnp.NPY_FLOAT32 else 8)


def conv_direct_update_output(input, output, weight, bias, scratch, Py_ssize_t stride_w,
                              Py_ssize_t stride_h, Py_ssize_t pad_w, Py_ssize_t pad_h,
                              Py_ssize_t dilation_w, Py_ssize_t dilation_h, Py_ssize_t n_group):
    """output := conv(input, weight) + bias, as conv_update_output, without im2col: for the
    arguments where conv_direct_size is not 0, with ``scratch`` a vector of that many
    numbers. ``bias`` may be None."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef cnp.ndarray sc = array(scratch, "scratch", t, True)
    cdef Geom g
    cdef int n = _conv_geometry(&g, x, w, "weight", stride_w, stride_h, pad_w, pad_h,
                                dilation_w, dilation_h, n_group)
    _vector(b, "bias", g.M)
    _sized_is(y, "output", x, g.M, g.oH, g.oW)
    cdef Py_ssize_t size = _direct_size(&g, 4 if t == cnp.NPY_FLOAT32 else 8)
    if size == 0:
        raise ValueError(f"the direct forward does not run for a {g.C} -> {g.M}, "
                         f"{g.kH}x{g.kW} convolution with strides {stride_w}, {stride_h}, "
                         f"dilations {dilation_w}, {dilation_h} and {n_group} groups")
    vector_of(sc, "scratch", size)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", sc, "scratch")
    disjoint_from(sc, "scratch", x, "input", w, "weight", b, "bias")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _direct_forward(f32(x), f32(y), f32(w), f32(b), f32(sc), &g, n)
        else:
            _direct_forward(f64(x), f64(y), f64(w), f64(b), f64(sc), &g, n)


# -- TemporalConvolution ----------------------------------------------------------------------

cdef struct Seq:
    int T, C, To, O, kW, dW
    int span     # output frames apart in one GEMM, so that its input windows do not overlap


cdef int _temporal_geometry(Seq *q, cnp.ndarray x, cnp.ndarray w, str wwhat, Py_ssize_t kernel_w,
                            Py_ssize_t stride_w) except -1:
    """Fill ``q`` for ``x`` (T, C) or (N, T, C) and ``w`` (O, kW*C); return the batch size."""
    cdef Py_ssize_t pads[2]
    if kernel_w < 1 or stride_w < 1:
        raise ValueError(f"kernel width and stride must be >= 1, got {kernel_w}, {stride_w}")
    window_args(kernel_w, stride_w, 0, 1)
    cdef int nd = ndim(x, "input", 2, 3)
    ndim(w, wwhat, 2, 2)
    q.O, q.kW, q.dW = dim(w, 0), kernel_w, stride_w
    if q.O == 0 or dim(w, 1) == 0 or dim(w, 1) % kernel_w:
        raise ValueError(f"{wwhat} has shape {shape(w)}, expected (outputFrameSize, "
                         f"{kernel_w} * inputFrameSize)")
    q.C = dim(w, 1) // kernel_w
    q.T = dim(x, nd - 2)
    if dim(x, nd - 1) != q.C:
        raise ValueError(f"input has {dim(x, nd - 1)} features per frame, expected {q.C}")
    q.To = out_size(q.T, kernel_w, stride_w, 0, 1, False, pads)
    if q.To <= 0:
        raise ValueError(f"input has {q.T} frames, fewer than the kernel width {kernel_w}")
    q.span = (kernel_w - 1) // stride_w + 1
    _check_int(<Py_ssize_t> q.span * stride_w * q.C, "a frame stride")
    _check_int(<Py_ssize_t> q.T * q.C, "a sequence size")
    _check_int(<Py_ssize_t> q.To * q.O, "an output size")
    return dim(x, 0) if nd == 3 else 1


cdef tuple _seq_shape(cnp.ndarray like, int frames, Py_ssize_t size):
    if cnp.PyArray_NDIM(like) == 3:
        return (dim(like, 0), frames, size)
    return (frames, size)


cdef int _seq_shapes(Seq *q, cnp.ndarray x, cnp.ndarray w, str w_what, cnp.ndarray b,
                     str b_what, cnp.ndarray out, str out_what, Py_ssize_t kernel_w,
                     Py_ssize_t stride_w) except -1:
    """Fill ``q`` (_temporal_geometry); check the bias (or None) and the array shaped like the
    output; return the batch size."""
    cdef int n = _temporal_geometry(q, x, w, w_what, kernel_w, stride_w)
    _vector(b, b_what, q.O)
    shape_is(out, out_what, _seq_shape(x, q.To, q.O))
    return n


def temporal_conv_update_output(input, output, weight, bias, Py_ssize_t kernel_w,
                                Py_ssize_t stride_w):
    """output[t] := weight @ input[t*dW : t*dW + kW].ravel() + bias.

    (N, T, C) x (O, kW*C) -> (N, T', O), T' = (T - kW) // dW + 1; (T, C) -> (T', O).
    ``bias`` may be None.
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef Seq q
    cdef int n = _seq_shapes(&q, x, w, "weight", b, "bias", y, "output", kernel_w, stride_w)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _temporal_forward(f32(x), f32(y), f32(w), f32(b), &q, n)
        else:
            _temporal_forward(f64(x), f64(y), f64(w), f64(b), &q, n)


cdef void _temporal_forward(const floating *x, floating *y, const floating *w,
                            const floating *b, const Seq *q, int n) noexcept nogil:
    cdef int K = q.kW * q.C, s, k, f, frames
    cdef int ldx = q.span * q.dW * q.C, ldy = q.span * q.O
    cdef const floating *xn
    cdef floating *yn
    cdef floating beta
    for s in range(n):
        xn = x + <size_t> s * q.T * q.C
        yn = y + <size_t> s * q.To * q.O
        beta = 0
        if b != NULL:
            for f in range(q.To):
                memcpy(yn + <size_t> f * q.O, b, q.O * sizeof(floating))
            beta = 1
        for k in range(min(q.span, q.To)):
            frames = (q.To - k + q.span - 1) // q.span
            _mm(NoTrans, Trans, frames, q.O, K, <floating> 1, xn + <size_t> k * q.dW * q.C, ldx,
                w, K, beta, yn + <size_t> k * q.O, ldy)


def temporal_conv_update_grad_input(input, grad_output, grad_input, weight, Py_ssize_t kernel_w,
                                    Py_ssize_t stride_w):
    """grad_input[window t] += grad_output[t] @ weight, from zero (shape of input)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Seq q
    cdef int n = _seq_shapes(&q, x, w, "weight", None, None, go, "gradOutput", kernel_w,
                             stride_w)
    same_shape(gi, "gradInput", x)
    disjoint_from(gi, "gradInput", go, "gradOutput", w, "weight")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _temporal_backward(f32(go), f32(gi), f32(w), &q, n)
        else:
            _temporal_backward(f64(go), f64(gi), f64(w), &q, n)


cdef void _temporal_backward(const floating *go, floating *gi, const floating *w,
                             const Seq *q, int n) noexcept nogil:
    cdef int K = q.kW * q.C, s, k, frames
    cdef int ldx = q.span * q.dW * q.C, ldy = q.span * q.O
    cdef floating *gin
    for s in range(n):
        gin = gi + <size_t> s * q.T * q.C
        memset(gin, 0, <size_t> q.T * q.C * sizeof(floating))
        for k in range(min(q.span, q.To)):
            frames = (q.To - k + q.span - 1) // q.span
            _mm(NoTrans, NoTrans, frames, K, q.O, <floating> 1,
                go + <size_t> s * q.To * q.O + <size_t> k * q.O, ldy, w, K, <floating> 1,
                gin + <size_t> k * q.dW * q.C, ldx)


def temporal_conv_acc_grad_parameters(input, grad_output, grad_weight, grad_bias,
                                      Py_ssize_t kernel_w, Py_ssize_t stride_w, double scale_w,
                                      double scale_b):
    """grad_weight += scale_w * sum_t grad_output[t] outer window t; grad_bias += scale_b * sums.

    A scale of 0 skips its term; ``grad_bias`` may be None.
    """
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef Seq q
    cdef int n = _seq_shapes(&q, x, gw, "gradWeight", gb, "gradBias", go, "gradOutput",
                             kernel_w, stride_w)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput", gw, "gradWeight")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _temporal_acc(f32(x), f32(go), f32(gw), f32(gb), &q, n, <float> scale_w,
                          <float> scale_b)
        else:
            _temporal_acc(f64(x), f64(go), f64(gw), f64(gb), &q, n, scale_w, scale_b)


cdef void _temporal_acc(const floating *x, const floating *go, floating *gw, floating *gb,
                        const Seq *q, int n, floating scale_w, floating scale_b) noexcept nogil:
    cdef int K = q.kW * q.C, s, k, f, o, frames
    cdef int ldx = q.span * q.dW * q.C, ldy = q.span * q.O
    cdef const floating *gon
    for s in range(n):
        gon = go + <size_t> s * q.To * q.O
        if scale_w != 0:
            for k in range(min(q.span, q.To)):
                frames = (q.To - k + q.span - 1) // q.span
                _mm(Trans, NoTrans, q.O, K, frames, scale_w, gon + <size_t> k * q.O, ldy,
                    x + <size_t> s * q.T * q.C + <size_t> k * q.dW * q.C, ldx, <floating> 1,
                    gw, K)
        if scale_b != 0 and gb != NULL:
            for f in range(q.To):
                for o in range(q.O):
                    gb[o] += scale_b * gon[<size_t> f * q.O + o]
