# Row-major BLAS over scipy.linalg.cython_blas (Fortran, column-major): nothing to link.
#
# A row-major (m, n) matrix is the column-major (n, m) matrix of the same memory, so
# C = op(A) @ op(B) row-major is C^T = op(B)^T @ op(A)^T column-major: swap the operands
# and the sizes, keep the transposes. Every function assumes checked input (the
# Python-callable layer validates); all are inline so that kernels cimport them without
# a runtime import of this module.

from scipy.linalg.cython_blas cimport (
    sgemm, dgemm, sgemv, dgemv, sger, dger, saxpy, daxpy,
    sscal, dscal, sdot, ddot, scopy, dcopy,
)

ctypedef fused floating:
    float
    double

ctypedef enum BLAS_Trans:
    NoTrans = 110  # 'n'
    Trans = 116    # 't'


cdef inline void gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, with op(A) (m, k), op(B) (k, n), C (m, n)."""
    cdef char ta_ = ta
    cdef char tb_ = tb
    if floating is float:
        sgemm(&tb_, &ta_, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb_, &ta_, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


cdef inline void gemv(BLAS_Trans ta, int m, int n, floating alpha,
                      const floating *a, int lda, const floating *x, int incx,
                      floating beta, floating *y, int incy) noexcept nogil:
    """y := alpha * op(A) @ x + beta * y, with A (m, n) row-major."""
    # Row-major A is column-major A^T: flip the transpose, swap the sizes.
    cdef char ta_ = b't' if ta == NoTrans else b'n'
    if floating is float:
        sgemv(&ta_, &n, &m, &alpha, <float *> a, &lda, <float *> x, &incx, &beta, y, &incy)
    else:
        dgemv(&ta_, &n, &m, &alpha, <double *> a, &lda, <double *> x, &incx, &beta, y, &incy)


cdef inline void ger(int m, int n, floating alpha, const floating *x, int incx,
                     const floating *y, int incy, floating *a, int lda) noexcept nogil:
    """A := alpha * x @ y.T + A, with A (m, n) row-major."""
    if floating is float:
        sger(&n, &m, &alpha, <float *> y, &incy, <float *> x, &incx, a, &lda)
    else:
        dger(&n, &m, &alpha, <double *> y, &incy, <double *> x, &incx, a, &lda)


cdef inline void axpy(int n, floating alpha, const floating *x, int incx,
                      floating *y, int incy) noexcept nogil:
    """y := alpha * x + y"""
    if floating is float:
        saxpy(&n, &alpha, <float *> x, &incx, y, &incy)
    else:
        daxpy(&n, &alpha, <double *> x, &incx, y, &incy)


cdef inline void scal(int n, floating alpha, floating *x, int incx) noexcept nogil:
    """x := alpha * x"""
    if floating is float:
        sscal(&n, &alpha, x, &incx)
    else:
        dscal(&n, &alpha, x, &incx)


cdef inline floating dot(int n, const floating *x, int incx,
                         const floating *y, int incy) noexcept nogil:
    """return x . y"""
    if floating is float:
        return sdot(&n, <float *> x, &incx, <float *> y, &incy)
    else:
        return ddot(&n, <double *> x, &incx, <double *> y, &incy)


cdef inline void copy(int n, const floating *x, int incx, floating *y, int incy) noexcept nogil:
    """y := x"""
    if floating is float:
        scopy(&n, <float *> x, &incx, y, &incy)
    else:
        dcopy(&n, <double *> x, &incx, y, &incy)
