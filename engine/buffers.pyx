"""Output buffers: reuse the caller's array when its shape already fits."""

cimport numpy as cnp

cnp.import_array()


def resized(buf, like, Py_ssize_t last, dtype):
    """``buf`` if it is ``like.shape[:-1] + (last,)`` of ``dtype``, else a new empty array.

    ``last < 0`` means ``like``'s own last size. A ``like`` that is not an array of rank 1 or
    more returns ``buf`` unchanged: the kernel that follows rejects it with the reason.
    """
    if not cnp.PyArray_Check(like):
        return buf
    cdef cnp.ndarray x = <cnp.ndarray> like
    cdef int nd = cnp.PyArray_NDIM(x), i
    if nd == 0:
        return buf
    cdef cnp.npy_intp *dx = cnp.PyArray_DIMS(x)
    if last < 0:
        last = dx[nd - 1]
    cdef cnp.ndarray b
    cdef cnp.npy_intp *db
    cdef int t = (<cnp.dtype> dtype).type_num
    if cnp.PyArray_Check(buf):
        b = <cnp.ndarray> buf
        db = cnp.PyArray_DIMS(b)
        # Layout and write access are the kernel's to check, with the reason in its error.
        if cnp.PyArray_NDIM(b) == nd and cnp.PyArray_TYPE(b) == t and db[nd - 1] == last:
            for i in range(nd - 1):
                if db[i] != dx[i]:
                    break
            else:
                return buf
    return cnp.PyArray_EMPTY(nd, dx, t, 0) if last == dx[nd - 1] else \
        _empty(nd, dx, last, t)


cdef cnp.ndarray _empty(int nd, cnp.npy_intp *dx, cnp.npy_intp last, int t):
    cdef cnp.npy_intp dims[64]
    cdef int i
    for i in range(nd - 1):
        dims[i] = dx[i]
    dims[nd - 1] = last
    return cnp.PyArray_EMPTY(nd, dims, t, 0)
