"""Python-callable, validating entry points to the row-major BLAS wrapper in blas.pxd.

The kernels cimport the inline wrapper directly; these exist so that the wrapper itself is
tested against NumPy (transposes, both dtypes, empty sizes, bad arguments).
"""

cimport numpy as cnp

from engine.blas cimport (
    BLAS_Trans, gemm, gemv, ger, axpy, scal, dot, copy, NoTrans, Trans,
)
from engine._check cimport shape, float_type, array, f32, f64, ndim, dim, shape_is, disjoint

cnp.import_array()


cdef cnp.ndarray _operand(object obj, str what, int t, bint writeable, int nd):
    """``obj`` checked as an ``nd``-D array of type ``t``."""
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    ndim(a, what, nd, nd)
    return a


cdef tuple _vectors(x, y, str xw, str yw, bint y_writeable):
    cdef int t = float_type(x, xw)
    cdef cnp.ndarray a = _operand(x, xw, t, False, 1)
    cdef cnp.ndarray b = _operand(y, yw, t, y_writeable, 1)
    shape_is(b, yw, shape(a))
    if y_writeable:
        disjoint(b, yw, a, xw)
    return t, a, b, dim(a, 0)


def gemm_checked(bint trans_a, bint trans_b, double alpha, a, b, double beta, c):
    """c := alpha * op(a) @ op(b) + beta * c, all 2-D row-major."""
    cdef int t = float_type(c, "c")
    cdef cnp.ndarray A = _operand(a, "a", t, False, 2), B = _operand(b, "b", t, False, 2)
    cdef cnp.ndarray C = _operand(c, "c", t, True, 2)
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
        gemm(ta, tb, m, n, k, <float> alpha, f32(A), lda, f32(B), ldb, <float> beta, f32(C), n)
    else:
        gemm(ta, tb, m, n, k, alpha, f64(A), lda, f64(B), ldb, beta, f64(C), n)


def gemv_checked(bint trans_a, double alpha, a, x, double beta, y):
    """y := alpha * op(a) @ x + beta * y, a 2-D row-major."""
    cdef int t = float_type(y, "y")
    cdef cnp.ndarray A = _operand(a, "a", t, False, 2), X = _operand(x, "x", t, False, 1)
    cdef cnp.ndarray Y = _operand(y, "y", t, True, 1)
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
        gemv(ta, m, n, <float> alpha, f32(A), n, f32(X), 1, <float> beta, f32(Y), 1)
    else:
        gemv(ta, m, n, alpha, f64(A), n, f64(X), 1, beta, f64(Y), 1)


def ger_checked(double alpha, x, y, a):
    """a := alpha * outer(x, y) + a, a 2-D row-major."""
    cdef int t = float_type(a, "a")
    cdef cnp.ndarray A = _operand(a, "a", t, True, 2)
    cdef cnp.ndarray X = _operand(x, "x", t, False, 1), Y = _operand(y, "y", t, False, 1)
    cdef int m = dim(A, 0), n = dim(A, 1)
    shape_is(X, "x", (m,))
    shape_is(Y, "y", (n,))
    disjoint(A, "a", X, "x")
    disjoint(A, "a", Y, "y")
    if m == 0 or n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        ger(m, n, <float> alpha, f32(X), 1, f32(Y), 1, f32(A), n)
    else:
        ger(m, n, alpha, f64(X), 1, f64(Y), 1, f64(A), n)


def axpy_checked(double alpha, x, y):
    """y := alpha * x + y"""
    t, X, Y, n = _vectors(x, y, "x", "y", True)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        axpy(<int> n, <float> alpha, f32(X), 1, f32(Y), 1)
    else:
        axpy(<int> n, alpha, f64(X), 1, f64(Y), 1)


def scal_checked(double alpha, x):
    """x := alpha * x"""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray X = _operand(x, "x", t, True, 1)
    cdef int n = dim(X, 0)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        scal(n, <float> alpha, f32(X), 1)
    else:
        scal(n, alpha, f64(X), 1)


def dot_checked(x, y):
    """return x . y"""
    t, X, Y, n = _vectors(x, y, "x", "y", False)
    if n == 0:
        return 0.0
    if t == cnp.NPY_FLOAT32:
        return dot(<int> n, f32(X), 1, f32(Y), 1)
    return dot(<int> n, f64(X), 1, f64(Y), 1)


def copy_checked(x, y):
    """y := x"""
    t, X, Y, n = _vectors(x, y, "x", "y", True)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        copy(<int> n, f32(X), 1, f32(Y), 1)
    else:
        copy(<int> n, f64(X), 1, f64(Y), 1)
