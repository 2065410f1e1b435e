"""Python-callable, validating entry points to the row-major BLAS wrapper in blas.pxd.

The kernels cimport the inline wrapper directly; these exist so that the wrapper itself is
tested against NumPy (transposes, both dtypes, empty sizes, bad arguments).
"""

cimport numpy as cnp

from engine.blas cimport (
    BLAS_Trans, gemm, gemv, ger, axpy, scal, dot, copy, NoTrans, Trans,
)
from engine._check cimport shape, float_type, array, ndim, dim, shape_is, disjoint

cnp.import_array()


cdef inline void *_p(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef tuple _vectors(x, y, str xw, str yw, bint y_writeable):
    cdef int t = float_type(x, xw)
    cdef cnp.ndarray a = array(x, xw, t, False)
    cdef cnp.ndarray b = array(y, yw, t, y_writeable)
    ndim(a, xw, 1, 1)
    ndim(b, yw, 1, 1)
    shape_is(b, yw, shape(a))
    if y_writeable:
        disjoint(b, yw, a, xw)
    return t, a, b, dim(a, 0)


def gemm_checked(bint trans_a, bint trans_b, double alpha, a, b, double beta, c):
    """c := alpha * op(a) @ op(b) + beta * c, all 2-D row-major."""
    cdef int t = float_type(c, "c")
    cdef cnp.ndarray A = array(a, "a", t, False), B = array(b, "b", t, False)
    cdef cnp.ndarray C = array(c, "c", t, True)
    ndim(A, "a", 2, 2)
    ndim(B, "b", 2, 2)
    ndim(C, "c", 2, 2)
    cdef int m = dim(A, 1 if trans_a else 0), k = dim(A, 0 if trans_a else 1)
    cdef int kb = dim(B, 1 if trans_b else 0), n = dim(B, 0 if trans_b else 1)
    if kb != k:
        raise ValueError(f"op(a) is ({m}, {k}) but op(b) is ({kb}, {n})")
    shape_is(C, "c", (m, n))
    disjoint(C, "c", A, "a")
    disjoint(C, "c", B, "b")
    if m == 0 or n == 0:
        return
    if k == 0:
        # No terms: op(a) @ op(b) is zero, and beta = 0 overwrites as BLAS does.
        C[...] = 0 if beta == 0 else C * beta
        return
    cdef BLAS_Trans ta = Trans if trans_a else NoTrans, tb = Trans if trans_b else NoTrans
    cdef int lda = dim(A, 1), ldb = dim(B, 1)
    if t == cnp.NPY_FLOAT32:
        gemm(ta, tb, m, n, k, <float> alpha, <float *> _p(A), lda, <float *> _p(B), ldb,
             <float> beta, <float *> _p(C), n)
    else:
        gemm(ta, tb, m, n, k, alpha, <double *> _p(A), lda, <double *> _p(B), ldb,
             beta, <double *> _p(C), n)


def gemv_checked(bint trans_a, double alpha, a, x, double beta, y):
    """y := alpha * op(a) @ x + beta * y, a 2-D row-major."""
    cdef int t = float_type(y, "y")
    cdef cnp.ndarray A = array(a, "a", t, False), X = array(x, "x", t, False)
    cdef cnp.ndarray Y = array(y, "y", t, True)
    ndim(A, "a", 2, 2)
    ndim(X, "x", 1, 1)
    ndim(Y, "y", 1, 1)
    cdef int m = dim(A, 0), n = dim(A, 1)
    shape_is(X, "x", ((m if trans_a else n),))
    shape_is(Y, "y", ((n if trans_a else m),))
    disjoint(Y, "y", A, "a")
    disjoint(Y, "y", X, "x")
    if dim(Y, 0) == 0:
        return
    if dim(X, 0) == 0:
        Y[...] = 0 if beta == 0 else Y * beta
        return
    cdef BLAS_Trans ta = Trans if trans_a else NoTrans
    if t == cnp.NPY_FLOAT32:
        gemv(ta, m, n, <float> alpha, <float *> _p(A), n, <float *> _p(X), 1,
             <float> beta, <float *> _p(Y), 1)
    else:
        gemv(ta, m, n, alpha, <double *> _p(A), n, <double *> _p(X), 1,
             beta, <double *> _p(Y), 1)


def ger_checked(double alpha, x, y, a):
    """a := alpha * outer(x, y) + a, a 2-D row-major."""
    cdef int t = float_type(a, "a")
    cdef cnp.ndarray A = array(a, "a", t, True)
    cdef cnp.ndarray X = array(x, "x", t, False), Y = array(y, "y", t, False)
    ndim(A, "a", 2, 2)
    ndim(X, "x", 1, 1)
    ndim(Y, "y", 1, 1)
    cdef int m = dim(A, 0), n = dim(A, 1)
    shape_is(X, "x", (m,))
    shape_is(Y, "y", (n,))
    disjoint(A, "a", X, "x")
    disjoint(A, "a", Y, "y")
    if m == 0 or n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        ger(m, n, <float> alpha, <float *> _p(X), 1, <float *> _p(Y), 1, <float *> _p(A), n)
    else:
        ger(m, n, alpha, <double *> _p(X), 1, <double *> _p(Y), 1, <double *> _p(A), n)


def axpy_checked(double alpha, x, y):
    """y := alpha * x + y"""
    t, X, Y, n = _vectors(x, y, "x", "y", True)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        axpy(<int> n, <float> alpha, <float *> _p(X), 1, <float *> _p(Y), 1)
    else:
        axpy(<int> n, alpha, <double *> _p(X), 1, <double *> _p(Y), 1)


def scal_checked(double alpha, x):
    """x := alpha * x"""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray X = array(x, "x", t, True)
    ndim(X, "x", 1, 1)
    cdef int n = dim(X, 0)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        scal(n, <float> alpha, <float *> _p(X), 1)
    else:
        scal(n, alpha, <double *> _p(X), 1)


def dot_checked(x, y):
    """return x . y"""
    t, X, Y, n = _vectors(x, y, "x", "y", False)
    if n == 0:
        return 0.0
    if t == cnp.NPY_FLOAT32:
        return dot(<int> n, <float *> _p(X), 1, <float *> _p(Y), 1)
    return dot(<int> n, <double *> _p(X), 1, <double *> _p(Y), 1)


def copy_checked(x, y):
    """y := x"""
    t, X, Y, n = _vectors(x, y, "x", "y", True)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        copy(<int> n, <float *> _p(X), 1, <float *> _p(Y), 1)
    else:
        copy(<int> n, <double *> _p(X), 1, <double *> _p(Y), 1)
