# Row-major BLAS over scipy.linalg.cython_blas (Fortran, column-major): nothing to link.
#
# A row-major (m, n) matrix is the column-major (n, m) matrix of the same memory, so
# C = op(A) @ op(B) row-major is C^T = op(B)^T @ op(A)^T column-major: swap the operands
# and the sizes, keep the transposes. Every function assumes checked input (the
# Python-callable layer validates); all are inline so that kernels cimport them without
# a runtime import of this module.

from cpython.pycapsule cimport PyCapsule_GetPointer
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


cdef inline void gemm1(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                       floating alpha, const floating *a, int lda,
                       const floating *b, int ldb,
                       floating beta, floating *c, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, with op(A) (m, k), op(B) (k, n), C (m, n), on
    the calling thread."""
    cdef char ta_ = ta
    cdef char tb_ = tb
    if floating is float:
        sgemm(&tb_, &ta_, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb_, &ta_, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


# -- products on the engine's threads (engine/pool.pyx) -------------------------------------

cdef extern from "_pool_client.h" nogil:
    ctypedef void (*pm_pool_fn)(void *arg, int chunk, int chunks) noexcept nogil
    bint pm_pool_client_ready()
    void pm_pool_client_set(const void *api)
    int pm_pool_client_parts()
    bint pm_pool_client_split_blas()
    void pm_pool_client_run(pm_pool_fn fn, void *arg, int chunks)

cdef enum:
    # Multiply-adds below which a product stays on the calling thread: 2^18 take about 5 us
    # on one core, several times the hand-over.
    PARALLEL_MULTS = 1 << 18


cdef inline void attach_pool() noexcept with gil:
    """Point this module at the engine's pool, once: the first product large enough to cut
    asks for it. A module that cannot reach it keeps its products on the calling thread."""
    cdef const void *table = NULL
    try:
        import importlib
        for name in ("pymodules.engine.pool", "engine.pool"):
            try:
                table = PyCapsule_GetPointer(importlib.import_module(name).api,
                                             "pymodules.engine.pool.api")
                break
            except ImportError:
                pass
    except Exception:
        table = NULL
    pm_pool_client_set(table)


cdef inline int threads_for(double mults) noexcept nogil:
    """Threads a task of ``mults`` multiply-adds is cut for (1: the calling thread)."""
    if not pm_pool_client_ready():
        attach_pool()
    cdef int parts = pm_pool_client_parts()
    return parts if parts > 1 and mults >= PARALLEL_MULTS else 1


cdef inline int cut(int size, int c, int chunks, int align) noexcept nogil:
    """Start of range ``c`` of [0, size) cut in ``chunks`` near-equal ranges whose bounds are
    multiples of ``align`` (range ``chunks`` starts at size)."""
    if c >= chunks:
        return size
    cdef Py_ssize_t at = (<Py_ssize_t> size * c // chunks + align // 2) // align * align
    return <int> (at if at < size else size)


cdef inline void run_parts(pm_pool_fn fn, void *arg, int chunks) noexcept nogil:
    """fn(arg, c, chunks) for every c, shared by the engine's threads."""
    pm_pool_client_run(fn, arg, chunks)


cdef struct Product:
    # A product of gemm and the side of C it is cut along.
    bint f64
    bint columns
    BLAS_Trans ta
    BLAS_Trans tb
    int m, n, k, lda, ldb, ldc
    double alpha, beta
    const void *a
    const void *b
    void *c


cdef inline void _product_part(void *arg, int i, int chunks) noexcept nogil:
    cdef Product *p = <Product *> arg
    cdef int lo, hi, m = p.m, n = p.n
    cdef size_t ao = 0, bo = 0, co
    if p.columns:
        lo, hi = cut(p.n, i, chunks, 16), cut(p.n, i + 1, chunks, 16)
        n = hi - lo
        bo = <size_t> lo if p.tb == NoTrans else <size_t> lo * p.ldb
        co = <size_t> lo
    else:
        lo, hi = cut(p.m, i, chunks, 4), cut(p.m, i + 1, chunks, 4)
        m = hi - lo
        ao = <size_t> lo * p.lda if p.ta == NoTrans else <size_t> lo
        co = <size_t> lo * p.ldc
    if m <= 0 or n <= 0:
        return
    if p.f64:
        gemm1(p.ta, p.tb, m, n, p.k, p.alpha, <const double *> p.a + ao, p.lda,
              <const double *> p.b + bo, p.ldb, p.beta, <double *> p.c + co, p.ldc)
    else:
        gemm1(p.ta, p.tb, m, n, p.k, <float> p.alpha, <const float *> p.a + ao, p.lda,
              <const float *> p.b + bo, p.ldb, <float> p.beta, <float *> p.c + co, p.ldc)


cdef inline void gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """gemm1, cut along the longer side of C across the engine's threads when it is large
    and the BLAS runs on one thread (each part is one BLAS call on its thread)."""
    cdef int parts = threads_for(<double> m * n * k)
    if parts < 2 or not pm_pool_client_split_blas():
        gemm1(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    cdef Product p
    p.f64 = floating is double
    p.columns = n >= m
    p.ta, p.tb, p.m, p.n, p.k, p.lda, p.ldb, p.ldc = ta, tb, m, n, k, lda, ldb, ldc
    p.alpha, p.beta, p.a, p.b, p.c = alpha, beta, a, b, c
    run_parts(_product_part, &p, parts)


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
