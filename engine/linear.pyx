"""Kernels of Linear: y = x @ W.T + b, for a vector (k,) or a batch (n, k).

A batch of one runs on gemv/ger, which beat a 1-row gemm by an order of magnitude on
small layers; larger batches fold the bias into the gemm as beta = 1.
"""

cimport numpy as cnp
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, gemv, axpy, NoTrans, Trans
from engine._check cimport float_type, array, ndim, dim, vector_of, rows_of, disjoint

cnp.import_array()


cdef int _rows(cnp.ndarray x, str what, int k) except -1:
    """Rows of a (k,) or (n, k) argument."""
    cdef int d = ndim(x, what, 1, 2)
    cdef int feats = dim(x, d - 1)
    if feats != k:
        raise ValueError(f"{what} has {feats} features, expected {k}")
    return 1 if d == 1 else dim(x, 0)


def linear_update_output(input, output, weight, bias):
    """output := input @ weight.T + bias: (n, k) x (m, k) + (m,) -> (n, m); (k,) -> (m,).

    ``bias`` may be None.
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
    cdef void *bp = NULL if b is None else cnp.PyArray_DATA(b)
    if t == cnp.NPY_FLOAT32:
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
