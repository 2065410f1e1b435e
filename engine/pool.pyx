"""The engine's threads: one pool per process (engine/_pool.h) that kernels cut their large
products across.

``set_threads(n, blas_threads)`` says how many threads may share a task (1: the calling thread
alone, the default) and on how many threads the BLAS runs each call: a BLAS product is cut only
when that is 1, kernels of their own (the packed forward of Linear) whatever it is. Kernel
modules reach the pool through the capsule ``api`` (see _pool_client.h and engine/blas.pxd's
``attach_pool``); a product too small to pay for the hand-over (about a microsecond) stays on
the calling thread.
"""

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "_pool.h" nogil:
    ctypedef void (*pm_pool_fn)(void *arg, int chunk, int chunks) noexcept nogil
    int pm_pool_parts()
    int pm_pool_split_blas()
    void pm_pool_set_parts(int n)
    void pm_pool_run(pm_pool_fn fn, void *arg, int chunks)
    void pm_pool_set_blas_single(int single)
    enum: PM_POOL_MOST

cdef extern from "_pool_client.h" nogil:
    ctypedef struct pm_pool_api:
        int (*parts)() noexcept nogil
        int (*split_blas)() noexcept nogil
        void (*run)(pm_pool_fn fn, void *arg, int chunks) noexcept nogil

cdef pm_pool_api _api
_api.parts = pm_pool_parts
_api.split_blas = pm_pool_split_blas
_api.run = pm_pool_run

api = PyCapsule_New(<void *> &_api, "pymodules.engine.pool.api", NULL)

#: The most threads a task may be shared by.
MOST = PM_POOL_MOST


def set_threads(n, blas_threads=1):
    """Let a task be shared by ``n`` threads (at most MOST); the BLAS runs each call on
    ``blas_threads``."""
    for v, what in ((n, "n"), (blas_threads, "blas_threads")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"set_threads: {what} must be a positive int, got {v!r}")
    if n > PM_POOL_MOST:
        raise ValueError(f"set_threads: n must be at most {PM_POOL_MOST}, got {n}")
    pm_pool_set_blas_single(blas_threads == 1)
    pm_pool_set_parts(n)


def get_threads():
    """(n, blas_threads == 1): the threads a task may be shared by, and whether BLAS products
    are cut."""
    return pm_pool_parts(), bool(pm_pool_split_blas())
