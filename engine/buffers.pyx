"""Output and scratch buffers: the caller's array is reused when its shape already fits.

This is the one buffer rule of the modules (it lives here, compiled, because the check runs
on every call: the Python version, tuple building and comparing, costs two to three times as
much). Layout and write access are the kernel's to check, with the reason in its error.
"""

import numpy as _np

cimport numpy as cnp
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact

cnp.import_array()


def resized(buf, like, Py_ssize_t last=-1, dtype=None):
    """``buf`` if it already has the wanted shape and dtype, else a new empty array.

    ``like`` is a shape (a tuple of ints) or an array; for an array the shape is its own with
    the last size replaced by ``last`` when ``last >= 0``, and ``dtype`` defaults to its dtype.
    A ``like`` that is neither, or an array of rank 0, returns ``buf`` unchanged: the kernel
    that follows refuses it and says why.
    """
    if isinstance(like, tuple):
        if cnp.PyArray_Check(buf) and _shaped(<cnp.ndarray> buf, <tuple> like) and (
                <object> cnp.PyArray_DESCR(<cnp.ndarray> buf) is dtype
                or (<object> buf).dtype == dtype):
            return buf
        return _np.empty(like, dtype)
    if not cnp.PyArray_Check(like):
        return buf
    cdef cnp.ndarray x = <cnp.ndarray> like
    cdef int nd = cnp.PyArray_NDIM(x), i
    if nd == 0:
        return buf
    cdef cnp.npy_intp *dx = cnp.PyArray_DIMS(x)
    if last < 0:
        last = dx[nd - 1]
    cdef int t = cnp.PyArray_TYPE(x) if dtype is None else (<cnp.dtype> dtype).type_num
    cdef cnp.ndarray b
    cdef cnp.npy_intp *db
    if cnp.PyArray_Check(buf):
        b = <cnp.ndarray> buf
        db = cnp.PyArray_DIMS(b)
        if cnp.PyArray_NDIM(b) == nd and cnp.PyArray_TYPE(b) == t and db[nd - 1] == last:
            for i in range(nd - 1):
                if db[i] != dx[i]:
                    break
            else:
                return buf
    return cnp.PyArray_EMPTY(nd, dx, t, 0) if last == dx[nd - 1] else \
        _empty(nd, dx, last, t)


cdef bint _shaped(cnp.ndarray b, tuple like) except -1:
    """Whether ``b.shape == like``, compared in C where ``like`` holds ints (no tuple built)."""
    cdef Py_ssize_t nd = len(like), i
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(b)
    cdef object e
    cdef int overflow
    if nd != cnp.PyArray_NDIM(b):
        return False
    for i in range(nd):
        e = like[i]
        if not PyLong_CheckExact(e):
            return (<object> b).shape == like
        if PyLong_AsLongLongAndOverflow(e, &overflow) != d[i] or overflow:
            return False
    return True


def resized_list(buf, Py_ssize_t n):
    """``buf`` if it is a list of ``n`` slots, else a new list of ``n`` Nones: the reused
    holder of a table's arrays."""
    if type(buf) is list and len(<list> buf) == n:
        return buf
    return [None] * n


cdef cnp.ndarray _empty(int nd, cnp.npy_intp *dx, cnp.npy_intp last, int t):
    cdef cnp.npy_intp dims[64]
    cdef int i
    for i in range(nd - 1):
        dims[i] = dx[i]
    dims[nd - 1] = last
    return cnp.PyArray_EMPTY(nd, dims, t, 0)
