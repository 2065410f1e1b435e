"""Kernels of LookupTable: rows of a weight (nIndex, nOutput) gathered by 0-based indices.

Indices come as an int32/int64 array or, as in BigDL, a float array of whole numbers; every
index is checked before any row is read or written.
"""

cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.math cimport pow, fabs, sqrt
from libc.string cimport memcpy, memset

from engine.blas cimport floating, axpy
from engine._check cimport shape, float_type, array, f32, f64, ndim, dim, shape_is, disjoint_from

cnp.import_array()

ctypedef fused index_t:
    int
    long long
    float
    double


cdef int _index_kind(object obj) except -1:
    """0 int32, 1 int64, 2 float32, 3 float64."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"input must be a numpy.ndarray of indices, got {type(obj).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray> obj
    cdef int t = cnp.PyArray_TYPE(a)
    cdef int size = cnp.PyArray_ITEMSIZE(a)
    if cnp.PyArray_ISSIGNED(a) and cnp.PyArray_ISINTEGER(a) and size in (4, 8):
        kind = 0 if size == 4 else 1
    elif t == cnp.NPY_FLOAT32:
        kind = 2
    elif t == cnp.NPY_FLOAT64:
        kind = 3
    else:
        raise TypeError(f"input has dtype {a.dtype}, expected indices as int32, int64, "
                        f"float32 or float64")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"input is not C-contiguous (shape {shape(a)})")
    ndim(a, "input", 1, 2)
    return kind


cdef Py_ssize_t _first_bad(const index_t *idx, Py_ssize_t n, Py_ssize_t n_index) noexcept nogil:
    """Position of the first index outside [0, n_index) or not whole; -1 if none."""
    cdef Py_ssize_t i
    for i in range(n):
        if not (idx[i] >= 0 and idx[i] < n_index):
            return i
        if index_t is float or index_t is double:
            if idx[i] != <long long> idx[i]:
                return i
    return -1


cdef int _check_indices(cnp.ndarray a, int kind, Py_ssize_t n_index) except -1:
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a), bad
    cdef void *p = cnp.PyArray_DATA(a)
    if n == 0:
        return 0
    with nogil:
        if kind == 0:
            bad = _first_bad(<int *> p, n, n_index)
        elif kind == 1:
            bad = _first_bad(<long long *> p, n, n_index)
        elif kind == 2:
            bad = _first_bad(<float *> p, n, n_index)
        else:
            bad = _first_bad(<double *> p, n, n_index)
    if bad < 0:
        return 0
    import numpy
    pos = tuple(int(i) for i in numpy.unravel_index(bad, shape(a)))
    value = (<object> a).flat[bad].item()
    if isinstance(value, float) and value == int(value):
        value = int(value)
    if isinstance(value, float) and 0 <= value < n_index:
        raise ValueError(f"index {value} at position {pos} is not a whole number")
    raise ValueError(f"index {value} at position {pos} is out of range [0, {n_index})")


cdef inline Py_ssize_t _at(void *p, int kind, Py_ssize_t i) noexcept nogil:
    if kind == 0:
        return (<int *> p)[i]
    if kind == 1:
        return <Py_ssize_t> (<long long *> p)[i]
    if kind == 2:
        return <Py_ssize_t> (<float *> p)[i]
    return <Py_ssize_t> (<double *> p)[i]


cdef Py_ssize_t _table(cnp.ndarray w, str w_what, cnp.ndarray rows, str rows_what,
                       cnp.ndarray x) except -1:
    """Rows of a (nIndex, d) table ``w``, whose ``rows`` are shaped like the indices x + (d,)."""
    ndim(w, w_what, 2, 2)
    shape_is(rows, rows_what, shape(x) + (dim(w, 1),))
    return dim(w, 0)


def lookup_table_update_output(input, output, weight, double max_norm, double norm_type):
    """output[..., :] := weight[input[...], :]: (n,) -> (n, d), (b, n) -> (b, n, d).

    With max_norm below DBL_MAX, each row looked up whose norm_type-norm exceeds max_norm is
    first rescaled in place to max_norm / (norm + 1e-7) of itself (weight is then written).
    """
    cdef int t = float_type(weight, "weight")
    cdef bint renorm = max_norm < DBL_MAX
    cdef cnp.ndarray w = array(weight, "weight", t, renorm)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef int kind = _index_kind(input)
    cdef cnp.ndarray x = <cnp.ndarray> input
    cdef Py_ssize_t n_index = _table(w, "weight", y, "output", x), d = dim(w, 1)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    disjoint_from(y, "output", w, "weight", x, "input")
    if renorm and not norm_type > 0:
        raise ValueError(f"normType must be > 0, got {norm_type}")
    _check_indices(x, kind, n_index)
    if n == 0 or d == 0:
        return
    cdef void *p = cnp.PyArray_DATA(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _lookup(p, kind, n, f32(w), f32(y), d, renorm, max_norm, norm_type)
        else:
            _lookup(p, kind, n, f64(w), f64(y), d, renorm, max_norm, norm_type)


cdef void _lookup(void *idx, int kind, Py_ssize_t n, floating *w, floating *y, Py_ssize_t d,
                  bint renorm, double max_norm, double norm_type) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating *row
    cdef double s, r
    for i in range(n):
        row = w + _at(idx, kind, i) * d
        if renorm:
            # Rescaling leaves the norm just below max_norm, so a repeated index is a no-op.
            s = 0
            for j in range(d):
                s += fabs(row[j]) if norm_type == 1 else (
                    row[j] * row[j] if norm_type == 2 else pow(fabs(row[j]), norm_type))
            s = s if norm_type == 1 else (sqrt(s) if norm_type == 2 else pow(s, 1 / norm_type))
            if s > max_norm:
                r = max_norm / (s + 1e-7)
                for j in range(d):
                    row[j] = <floating> (row[j] * r)
        memcpy(y + i * d, row, d * sizeof(floating))


def lookup_table_update_grad_input(input, grad_input):
    """grad_input := 0 with the shape of the indices: indices have no gradient."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    _index_kind(input)
    shape_is(gi, "gradInput", shape(<cnp.ndarray> input))
    if cnp.PyArray_SIZE(gi):
        memset(cnp.PyArray_DATA(gi), 0, cnp.PyArray_NBYTES(gi))


def lookup_table_acc_grad_parameters(input, grad_output, grad_weight, Py_ssize_t padding,
                                     counts, double scale):
    """grad_weight[input[i]] += scale * grad_output[i], skipping the index ``padding`` (-1 for
    none). With a ``counts`` buffer (nIndex,) float64, each term is divided by how often its
    index occurs in the input (BigDL's shouldScaleGradByFreq).
    """
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef int kind = _index_kind(input)
    cdef cnp.ndarray x = <cnp.ndarray> input
    cdef Py_ssize_t n_index = _table(gw, "gradWeight", go, "gradOutput", x), d = dim(gw, 1)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    disjoint_from(gw, "gradWeight", go, "gradOutput", x, "input")
    cdef cnp.ndarray cnt = None
    if counts is not None:
        cnt = array(counts, "counts", cnp.NPY_FLOAT64, True)
        shape_is(cnt, "counts", (n_index,))
    _check_indices(x, kind, n_index)
    if n == 0 or d == 0 or scale == 0:
        return
    cdef void *p = cnp.PyArray_DATA(x)
    cdef double *cp = NULL if cnt is None else f64(cnt)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _acc(p, kind, n, f32(go), f32(gw), d, padding, cp, scale)
        else:
            _acc(p, kind, n, f64(go), f64(gw), d, padding, cp, scale)


cdef void _acc(void *idx, int kind, Py_ssize_t n, const floating *go, floating *gw,
               Py_ssize_t d, Py_ssize_t padding, double *counts, double scale) noexcept nogil:
    cdef Py_ssize_t i, k
    if counts != NULL:
        for i in range(n):
            counts[_at(idx, kind, i)] = 0
        for i in range(n):
            counts[_at(idx, kind, i)] += 1
    for i in range(n):
        k = _at(idx, kind, i)
        if k == padding:
            continue
        axpy(<int> d, <floating> (scale if counts == NULL else scale / counts[k]),
             go + i * d, 1, gw + k * d, 1)
