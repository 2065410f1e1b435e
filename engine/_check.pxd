# Argument checks shared by every Python-callable kernel. They hold the GIL, raise with the
# numbers, and run before any C touches the data; the nogil code after them assumes them.
#
# The entry of a kernel checks its arrays, then dispatches on the dtype in one line pair:
#
#     if t == cnp.NPY_FLOAT32:
#         _core(f32(x), f32(y), n)
#     else:
#         _core(f64(x), f64(y), n)
#
# where ``_core`` is a fused (float/double) nogil function and f32/f64 give the data of a
# checked array (or NULL for None) as the pointer type of that instance.

cimport numpy as cnp
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from libc.limits cimport INT_MAX

cnp.import_array()


cdef inline tuple shape(cnp.ndarray a):
    """The shape as a Python tuple (``a.shape`` on a typed ndarray is the C array)."""
    return (<object> a).shape


cdef inline str _dtype_name(int typenum):
    return str(cnp.PyArray_DescrFromType(typenum))


cdef inline int float_type(object obj, str what) except -1:
    """The NumPy type number of ``obj``, which must be a float32 or float64 ndarray."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(obj).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray> obj)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{what} has dtype {_dtype_name(t)}, expected float32 or float64")
    return t


cdef inline cnp.ndarray array(object obj, str what, int typenum, bint writeable):
    """``obj`` as an ndarray of type ``typenum``, C-contiguous, writeable if asked."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(obj).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray> obj
    cdef int t = cnp.PyArray_TYPE(a)
    if t != typenum:
        raise TypeError(f"{what} has dtype {_dtype_name(t)}, expected {_dtype_name(typenum)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{what} is not C-contiguous (shape {shape(a)}, "
                         f"strides {(<object> a).strides})")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{what} is read-only")
    return a


cdef inline cnp.ndarray array_or_none(object obj, str what, int typenum, bint writeable):
    """None for None (an optional argument), else ``array(obj, what, typenum, writeable)``."""
    if obj is None:
        return None
    return array(obj, what, typenum, writeable)


cdef inline float *f32(cnp.ndarray a) noexcept nogil:
    """The data of a checked float32 array; NULL for None."""
    return NULL if a is None else <float *> cnp.PyArray_DATA(a)


cdef inline double *f64(cnp.ndarray a) noexcept nogil:
    """The data of a checked float64 array; NULL for None."""
    return NULL if a is None else <double *> cnp.PyArray_DATA(a)


cdef inline cnp.npy_intp *intp(cnp.ndarray a) noexcept nogil:
    """The data of a checked intp array (indices); NULL for None."""
    return NULL if a is None else <cnp.npy_intp *> cnp.PyArray_DATA(a)


cdef inline int ndim(cnp.ndarray a, str what, int lo, int hi) except -1:
    """The rank of ``a``, which must lie in [lo, hi]."""
    cdef int d = cnp.PyArray_NDIM(a)
    if d < lo or d > hi:
        want = f"{lo}-D" if lo == hi else f"{lo}-D to {hi}-D"
        raise ValueError(f"{what} must be {want}, got {d}-D (shape {shape(a)})")
    return d


cdef inline int dim(cnp.ndarray a, int axis) except -1:
    """Size of ``axis`` as a BLAS int."""
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(a)[axis]
    if n > INT_MAX:
        raise ValueError(f"axis {axis} of size {n} exceeds the BLAS limit {INT_MAX}")
    return <int> n


cdef inline int int_limit(Py_ssize_t v, str what) except -1:
    """``v``, a size or window argument the C loops hold in an int, is at most INT_MAX."""
    if v > INT_MAX:
        raise ValueError(f"{what} {v} exceeds the limit {INT_MAX}")
    return 0


cdef inline int vector_of(cnp.ndarray a, str what, cnp.npy_intp n) except -1:
    """``a`` has shape (n,)."""
    if cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIMS(a)[0] != n:
        raise ValueError(f"{what} has shape {shape(a)}, expected {(n,)}")
    return 0


cdef inline int rows_of(cnp.ndarray a, str what, int nd, cnp.npy_intp n, cnp.npy_intp k) except -1:
    """``a`` has shape (n, k) when nd is 2, (k,) when nd is 1."""
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    if cnp.PyArray_NDIM(a) != nd or d[nd - 1] != k or (nd == 2 and d[0] != n):
        expected = <tuple> (n, k) if nd == 2 else <tuple> (k,)
        raise ValueError(f"{what} has shape {shape(a)}, expected {expected}")
    return 0


cdef inline int shape_is(cnp.ndarray a, str what, tuple expected) except -1:
    """``a`` has the shape ``expected``, a tuple of sizes: compared in C where its entries
    are ints (no tuple of ``a``'s shape is built then), else as tuples."""
    cdef Py_ssize_t nd = len(expected), i
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    cdef object e
    cdef int overflow
    if nd == cnp.PyArray_NDIM(a):
        for i in range(nd):
            e = expected[i]
            if not PyLong_CheckExact(e) or PyLong_AsLongLongAndOverflow(e, &overflow) != d[i] \
                    or overflow:
                break
        else:
            return 0
    if shape(a) != expected:
        raise ValueError(f"{what} has shape {shape(a)}, expected {expected}")
    return 0


cdef inline int dims_are(cnp.ndarray a, str what, int nd, const cnp.npy_intp *dims) except -1:
    """``a`` has the shape ``dims[:nd]`` (``shape_is`` on a shape worked out in C: the
    tuples are built for the error only)."""
    cdef int i
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    if nd == cnp.PyArray_NDIM(a):
        for i in range(nd):
            if d[i] != dims[i]:
                break
        else:
            return 0
    expected = tuple([dims[i] for i in range(nd)])
    raise ValueError(f"{what} has shape {shape(a)}, expected {expected}")


cdef inline int same_shape(cnp.ndarray a, str what, cnp.ndarray b) except -1:
    """``a`` has ``b``'s shape (``shape_is(a, what, shape(b))``, compared in C: the tuples
    are built for the error only)."""
    return dims_are(a, what, cnp.PyArray_NDIM(b), cnp.PyArray_DIMS(b))


# Below this many elements (or multiply-adds) a kernel runs with the GIL held: releasing it
# and taking it back costs about 400 instructions, more than such a loop gains for other
# threads (a ReLU of 120 floats runs in about 130).
cdef enum:
    GIL_FREE_WORK = 16384


cdef inline int disjoint(object out, str out_what, object other, str other_what) except -1:
    """``out`` (written) shares no byte with ``other``; either may be None."""
    if out is None or other is None:
        return 0
    cdef char *a0 = <char *> cnp.PyArray_DATA(<cnp.ndarray> out)
    cdef char *b0 = <char *> cnp.PyArray_DATA(<cnp.ndarray> other)
    cdef cnp.npy_intp na = cnp.PyArray_NBYTES(<cnp.ndarray> out)
    cdef cnp.npy_intp nb = cnp.PyArray_NBYTES(<cnp.ndarray> other)
    if na and nb and a0 < b0 + nb and b0 < a0 + na:
        raise ValueError(f"{out_what} overlaps {other_what} in memory")
    return 0


cdef inline int disjoint_from(object out, str out_what, object a, str a_what,
                              object b=None, str b_what=None, object c=None, str c_what=None,
                              object d=None, str d_what=None, object e=None,
                              str e_what=None) except -1:
    """``out`` (written) shares no byte with any of a, b, c, d, e (each may be None)."""
    disjoint(out, out_what, a, a_what)
    disjoint(out, out_what, b, b_what)
    disjoint(out, out_what, c, c_what)
    disjoint(out, out_what, d, d_what)
    disjoint(out, out_what, e, e_what)
    return 0
