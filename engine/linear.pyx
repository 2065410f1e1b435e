"""Kernels of Linear: y = x @ W.T + b, for a vector (k,) or a batch (n, k).

A batch of one runs on gemv/ger, which beat a 1-row gemm by an order of magnitude on
small layers; larger batches fold the bias into the gemm as beta = 1.

A float32 forward of a small batch into a wide layer runs transposed: y.T = W x.T into a
scratch the caller keeps (``linear_scratch_size`` says when and how large), then one
transposing copy into y. OpenBLAS's sgemm takes the batch as its short side far better
than as its long one: 10-35% less time at batch 16-64, up to 3.5x at batch 4 on
1024 x 1024 (SkylakeX kernels); float64 and the backward gemms showed no such gap.
"""

cimport numpy as cnp
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, gemv, axpy, NoTrans, Trans
from engine._check cimport float_type, array, ndim, dim, vector_of, rows_of, disjoint

cdef extern from "_transpose.h" nogil:
    void pm_transpose_f(const float *src, size_t lds, float *dst, size_t ldd, int rows,
                        int cols, const float *add)

cnp.import_array()


cdef int _rows(cnp.ndarray x, str what, int k) except -1:
    """Rows of a (k,) or (n, k) argument."""
    cdef int d = ndim(x, what, 1, 2)
    cdef int feats = dim(x, d - 1)
    if feats != k:
        raise ValueError(f"{what} has {feats} features, expected {k}")
    return 1 if d == 1 else dim(x, 0)


cdef bint _transposes(int t, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept:
    """Whether the forward of an (n, k) batch through an (m, k) weight runs transposed: the
    rule measured on a 2-64 batch grid against layers of 64 to 1024 (see the module doc)."""
    cdef Py_ssize_t work = n * k * m
    return t == cnp.NPY_FLOAT32 and 2 <= n < 128 and m >= 2 * n and \
        (work >= 1 << 20 or (n >= 16 and work >= 1 << 18))


def linear_scratch_size(input, weight):
    """Elements of the scratch linear_update_output needs for these arguments (0: none).
    Arguments it cannot judge give 0; linear_update_output then says what is wrong."""
    if not (cnp.PyArray_Check(input) and cnp.PyArray_Check(weight)):
        return 0
    cdef cnp.ndarray x = <cnp.ndarray> input, w = <cnp.ndarray> weight
    if cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_NDIM(w) != 2 or \
            cnp.PyArray_TYPE(x) != cnp.PyArray_TYPE(w):
        return 0
    cdef Py_ssize_t n = cnp.PyArray_DIMS(x)[0], k = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t m = cnp.PyArray_DIMS(w)[0]
    if cnp.PyArray_DIMS(w)[1] != k or not _transposes(cnp.PyArray_TYPE(w), n, k, m):
        return 0
    return n * m


def linear_update_output(input, output, weight, bias, scratch=None):
    """output := input @ weight.T + bias: (n, k) x (m, k) + (m,) -> (n, m); (k,) -> (m,).

    ``bias`` may be None. ``scratch``, a 1-D array of linear_scratch_size(input, weight)
    elements or more, lets the forward run transposed where that is faster; None never does.
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray b = None if bias is None else array(bias, "bias", t, False)
    ndim(w, "weight", 2, 2)
    cdef int m = dim(w, 0), k = dim(w, 1)
    if b is not None:
        vector_of(b, "bias", m)
    cdef int n = _rows(x, "input", k)
    rows_of(y, "output", cnp.PyArray_NDIM(x), n, m)
    disjoint(y, "output", x, "input")
    disjoint(y, "output", w, "weight")
    disjoint(y, "output", b, "bias")
    cdef cnp.ndarray s = None
    if scratch is not None and cnp.PyArray_NDIM(x) == 2 and _transposes(t, n, k, m):
        s = array(scratch, "scratch", t, True)
        ndim(s, "scratch", 1, 1)
        if dim(s, 0) < <Py_ssize_t> n * m:
            raise ValueError(f"scratch has {dim(s, 0)} elements, the transposed forward "
                             f"needs {n * m}")
        for other, what in ((y, "output"), (x, "input"), (w, "weight"), (b, "bias")):
            disjoint(s, "scratch", other, what)
    cdef void *bp = NULL if b is None else cnp.PyArray_DATA(b)
    if s is not None:
        with nogil:
            _update_output_t(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y),
                             <float *> cnp.PyArray_DATA(w), <float *> bp,
                             <float *> cnp.PyArray_DATA(s), n, k, m)
    elif t == cnp.NPY_FLOAT32:
        with nogil:
            _update_output(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y),
                           <float *> cnp.PyArray_DATA(w), <float *> bp, n, k, m)
    else:
        with nogil:
            _update_output(<double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(y),
                           <double *> cnp.PyArray_DATA(w), <double *> bp, n, k, m)


cdef void _update_output(const floating *x, floating *y, const floating *w,
                         const floating *b, int n, int k, int m) noexcept nogil:
    cdef int i
    cdef floating beta = 0
    if n == 0 or m == 0:
        return
    if b != NULL:
        for i in range(n):
            memcpy(y + <size_t> i * m, b, m * sizeof(floating))
        beta = 1
    elif k == 0:
        memset(y, 0, <size_t> n * m * sizeof(floating))
    if k == 0:
        return
    if n == 1:
        gemv(NoTrans, m, k, <floating> 1, w, k, x, 1, beta, y, 1)
    else:
        gemm(NoTrans, Trans, n, m, k, <floating> 1, x, k, w, k, beta, y, m)


cdef void _update_output_t(const float *x, float *y, const float *w, const float *b,
                           float *yt, int n, int k, int m) noexcept nogil:
    """y.T = W x.T (+ b down each row of y.T) into yt, (m, n); then y = yt.T. k, n >= 1."""
    cdef int i, j
    cdef float beta = 0
    cdef float bi
    if b != NULL:
        for i in range(m):
            bi = b[i]
            for j in range(n):
                yt[<size_t> i * n + j] = bi
        beta = 1
    gemm(NoTrans, Trans, m, n, k, <float> 1, w, k, x, k, beta, yt, n)
    pm_transpose_f(yt, n, y, m, m, n, NULL)


def linear_update_grad_input(input, grad_output, grad_input, weight):
    """grad_input := grad_output @ weight: (n, m) x (m, k) -> (n, k); (m,) -> (k,)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    ndim(w, "weight", 2, 2)
    cdef int m = dim(w, 0), k = dim(w, 1)
    cdef int n = _rows(x, "input", k)
    rows_of(go, "gradOutput", cnp.PyArray_NDIM(x), n, m)
    rows_of(gi, "gradInput", cnp.PyArray_NDIM(x), n, k)
    disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", w, "weight")
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _update_grad_input(<float *> cnp.PyArray_DATA(go), <float *> cnp.PyArray_DATA(gi),
                               <float *> cnp.PyArray_DATA(w), n, k, m)
    else:
        with nogil:
            _update_grad_input(<double *> cnp.PyArray_DATA(go), <double *> cnp.PyArray_DATA(gi),
                               <double *> cnp.PyArray_DATA(w), n, k, m)


cdef void _update_grad_input(const floating *go, floating *gi, const floating *w,
                             int n, int k, int m) noexcept nogil:
    if n == 0 or k == 0:
        return
    if m == 0:
        memset(gi, 0, <size_t> n * k * sizeof(floating))
    elif n == 1:
        gemv(Trans, m, k, <floating> 1, w, k, go, 1, <floating> 0, gi, 1)
    else:
        gemm(NoTrans, NoTrans, n, k, m, <floating> 1, go, m, w, k, <floating> 0, gi, k)


def linear_acc_grad_parameters(input, grad_output, grad_weight, grad_bias,
                               double scale_w, double scale_b):
    """grad_weight += scale_w * grad_output.T @ input; grad_bias += scale_b * sum(grad_output).

    (n, k), (n, m) -> (m, k), (m,). A scale of 0 skips its term; ``grad_bias`` may be None.
    """
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gb = None if grad_bias is None else array(grad_bias, "gradBias", t, True)
    ndim(gw, "gradWeight", 2, 2)
    cdef int m = dim(gw, 0), k = dim(gw, 1)
    if gb is not None:
        vector_of(gb, "gradBias", m)
    cdef int n = _rows(x, "input", k)
    rows_of(go, "gradOutput", cnp.PyArray_NDIM(x), n, m)
    disjoint(gw, "gradWeight", x, "input")
    disjoint(gw, "gradWeight", go, "gradOutput")
    disjoint(gw, "gradWeight", gb, "gradBias")
    disjoint(gb, "gradBias", x, "input")
    disjoint(gb, "gradBias", go, "gradOutput")
    cdef void *gbp = NULL if gb is None else cnp.PyArray_DATA(gb)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _acc_grad_parameters(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(go),
                                 <float *> cnp.PyArray_DATA(gw), <float *> gbp,
                                 <float> scale_w, <float> scale_b, n, k, m)
    else:
        with nogil:
            _acc_grad_parameters(<double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(go),
                                 <double *> cnp.PyArray_DATA(gw), <double *> gbp,
                                 scale_w, scale_b, n, k, m)


cdef void _acc_grad_parameters(const floating *x, const floating *go, floating *gw,
                               floating *gb, floating scale_w, floating scale_b,
                               int n, int k, int m) noexcept nogil:
    cdef int i
    if n == 0 or m == 0:
        return
    if scale_w != 0 and k != 0:
        # For one row this is the outer product; OpenBLAS's gemm with k = 1 runs it about
        # 1.7x faster than its ger (measured on 0.3.30, SkylakeX kernels).
        gemm(Trans, NoTrans, m, k, n, scale_w, go, m, x, k, <floating> 1, gw, k)
    if scale_b != 0 and gb != NULL:
        for i in range(n):
            axpy(m, scale_b, go + <size_t> i * m, 1, gb, 1)
