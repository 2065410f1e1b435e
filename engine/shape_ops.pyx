"""Kernels of the shape modules that copy: Tile and ExpandSize (expand), Reverse, Index.

``expand`` repeats an array along its axes of size 1 (NumPy's broadcasting, materialised);
its backward sums over them. Tile is an expand of the input seen as (outer, 1, rest) to
(outer, copies, rest). The copies go by contiguous runs (memcpy); the sums by runs too.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, shape_is, same_shape, disjoint
from engine._inplace cimport same_or_disjoint

cnp.import_array()

cdef enum:
    MAXDIMS = 64  # NumPy 2's NPY_MAXDIMS


cdef int _expanded(cnp.ndarray x, str xw, cnp.ndarray y, str yw, Py_ssize_t *sizes,
                   Py_ssize_t *strides) except -1:
    """The loop of an expand of ``x`` to ``y``'s shape, in as few dimensions as possible:
    ``sizes`` (the output's) and ``strides`` (the input's, in elements; 0 along a repeated
    axis). Returns their count (at least 1)."""
    cdef int nd = cnp.PyArray_NDIM(y), i, n = 0, kind, last = -1
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *yd = cnp.PyArray_DIMS(y)
    cdef Py_ssize_t block[MAXDIMS]
    if cnp.PyArray_NDIM(x) != nd:
        raise ValueError(f"{xw} has {cnp.PyArray_NDIM(x)} dimensions, {yw} {nd}: "
                         f"shapes {shape(x)} and {shape(y)}")
    for i in range(nd):
        if xd[i] != yd[i] and xd[i] != 1:
            raise ValueError(f"{xw} of shape {shape(x)} does not expand to {yw}'s "
                             f"{shape(y)}: dimension {i} has size {xd[i]}, not 1 or {yd[i]}")
    # merge neighbouring axes of one kind (copied: 1, repeated: 0); drop axes of size 1
    for i in range(nd):
        if yd[i] == 1:
            continue
        kind = 1 if xd[i] == yd[i] else 0
        if kind == last:
            sizes[n - 1] *= yd[i]
            block[n - 1] *= xd[i]
        else:
            sizes[n] = yd[i]
            block[n] = xd[i]
            strides[n] = kind
            n += 1
            last = kind
    if n == 0:
        sizes[0], strides[0] = 1, 1
        return 1
    cdef Py_ssize_t step = 1
    for i in range(n - 1, -1, -1):
        if strides[i]:
            strides[i] = step
            step *= block[i]
    return n


def expand_update_output(input, output):
    """output := input repeated along its axes of size 1 to output's shape."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t sizes[MAXDIMS]
    cdef Py_ssize_t strides[MAXDIMS]
    cdef int n = _expanded(x, "input", y, "output", sizes, strides)
    disjoint(y, "output", x, "input")
    if cnp.PyArray_SIZE(y) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _expand(f32(x), f32(y), n, sizes, strides, False)
        else:
            _expand(f64(x), f64(y), n, sizes, strides, False)


def expand_update_grad_input(grad_output, grad_input):
    """grad_input := grad_output summed over the axes along which grad_input's shape has
    size 1 (the backward of expand_update_output)."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t sizes[MAXDIMS]
    cdef Py_ssize_t strides[MAXDIMS]
    cdef int n = _expanded(gi, "gradInput", go, "gradOutput", sizes, strides)
    disjoint(gi, "gradInput", go, "gradOutput")
    if cnp.PyArray_SIZE(gi) == 0:
        return
    memset(cnp.PyArray_DATA(gi), 0, cnp.PyArray_NBYTES(gi))
    if cnp.PyArray_SIZE(go) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _expand(f32(gi), f32(go), n, sizes, strides, True)
        else:
            _expand(f64(gi), f64(go), n, sizes, strides, True)


cdef void _expand(floating *x, floating *y, int n, Py_ssize_t *sizes, Py_ssize_t *strides,
                  bint backward) noexcept nogil:
    """Forward: y (of ``sizes``) := x (read with ``strides``). Backward: x += y's values."""
    cdef Py_ssize_t idx[MAXDIMS]
    cdef Py_ssize_t inner = sizes[n - 1], outer = 1, o, k, off = 0
    cdef bint run = strides[n - 1] != 0
    cdef floating *row
    cdef floating s
    cdef int d
    for d in range(n - 1):
        outer *= sizes[d]
        idx[d] = 0
    for o in range(outer):
        row = y + o * inner
        if not backward:
            if run:
                memcpy(row, x + off, inner * sizeof(floating))
            else:
                for k in range(inner):
                    row[k] = x[off]
        elif run:
            for k in range(inner):
                x[off + k] += row[k]
        else:
            s = 0
            for k in range(inner):
                s = s + row[k]
            x[off] += s
        d = n - 2
        while d >= 0:  # the next output row: an odometer over the outer axes
            idx[d] += 1
            off += strides[d]
            if idx[d] < sizes[d]:
                break
            off -= strides[d] * sizes[d]
            idx[d] = 0
            d -= 1


# -- Reverse -----------------------------------------------------------------------------------

cdef int _bands(cnp.ndarray x, Py_ssize_t dim, Py_ssize_t *outer, Py_ssize_t *size,
                Py_ssize_t *inner) except -1:
    """(outer, size, inner) of ``x`` seen along axis ``dim``."""
    cdef int nd = cnp.PyArray_NDIM(x), i
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    if not 0 <= dim < nd:
        raise ValueError(f"dimension {dim} is out of range for an input of {nd} dimensions")
    outer[0] = inner[0] = 1
    size[0] = d[dim]
    for i in range(nd):
        if i < dim:
            outer[0] *= d[i]
        elif i > dim:
            inner[0] *= d[i]
    return 0


def reverse_update_output(input, output, Py_ssize_t dim):
    """output := input with axis ``dim`` in reverse order; ``output`` may be ``input``."""
    _reversed(input, "input", output, "output", dim)


def reverse_update_grad_input(grad_output, grad_input, Py_ssize_t dim):
    """grad_input := grad_output with axis ``dim`` in reverse order; ``grad_input`` may be
    ``grad_output``."""
    _reversed(grad_output, "gradOutput", grad_input, "gradInput", dim)


cdef int _reversed(src, str src_what, dst, str dst_what, Py_ssize_t dim) except -1:
    cdef int t = float_type(src, src_what)
    cdef cnp.ndarray x = array(src, src_what, t, False)
    cdef cnp.ndarray y = array(dst, dst_what, t, True)
    cdef Py_ssize_t outer, size, inner
    _bands(x, dim, &outer, &size, &inner)
    shape_is(y, dst_what, shape(x))
    cdef bint inplace = same_or_disjoint(y, dst_what, x, src_what)
    if cnp.PyArray_SIZE(x) == 0:
        return 0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _reverse(f32(x), f32(y), outer, size, inner, inplace)
        else:
            _reverse(f64(x), f64(y), outer, size, inner, inplace)
    return 0


cdef void _reverse(const floating *x, floating *y, Py_ssize_t outer, Py_ssize_t size,
                   Py_ssize_t inner, bint inplace) noexcept nogil:
    cdef Py_ssize_t o, s, k
    cdef floating *a
    cdef floating *b
    cdef floating v
    for o in range(outer):
        if inplace:
            for s in range(size // 2):
                a = y + (o * size + s) * inner
                b = y + (o * size + size - 1 - s) * inner
                for k in range(inner):
                    v = a[k]
                    a[k] = b[k]
                    b[k] = v
        else:
            for s in range(size):
                memcpy(y + (o * size + s) * inner, x + (o * size + size - 1 - s) * inner,
                       inner * sizeof(floating))


# -- Index -------------------------------------------------------------------------------------

cdef cnp.ndarray _indices(object indices, Py_ssize_t size, Py_ssize_t dim):
    """``indices``: a 1-D int64 array of positions in [0, size) along ``dim``."""
    cdef cnp.ndarray ix = array(indices, "indices", cnp.NPY_INT64, False)
    if cnp.PyArray_NDIM(ix) != 1:
        raise ValueError(f"indices must be 1-D, got shape {shape(ix)}")
    cdef const int64_t *p = <const int64_t *> cnp.PyArray_DATA(ix)
    cdef Py_ssize_t k, n = cnp.PyArray_SIZE(ix)
    for k in range(n):
        if not 0 <= p[k] < size:
            raise ValueError(f"index {p[k]} (position {k}) is out of range for dimension "
                             f"{dim} of size {size}")
    return ix


def index_positions(indices, positions):
    """positions := indices as int64, for 1-D indices of float32, float64, int32 or int64
    that hold whole numbers (BigDL's indices are float tensors); ValueError otherwise."""
    if not cnp.PyArray_Check(indices):
        raise TypeError(f"indices must be a numpy.ndarray, got {type(indices).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray> indices)
    if t not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64, cnp.NPY_INT32, cnp.NPY_INT64):
        raise TypeError(f"indices have dtype {(<object> indices).dtype}, expected float32, "
                        f"float64, int32 or int64")
    cdef cnp.ndarray ix = array(indices, "indices", t, False)
    cdef cnp.ndarray p = array(positions, "positions", cnp.NPY_INT64, True)
    if cnp.PyArray_NDIM(ix) != 1:
        raise ValueError(f"indices must be 1-D, got shape {shape(ix)}")
    same_shape(p, "positions", ix)
    disjoint(p, "positions", ix, "indices")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(ix), bad
    cdef void *src = cnp.PyArray_DATA(ix)
    cdef int64_t *dst = <int64_t *> cnp.PyArray_DATA(p)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            bad = _whole(<const float *> src, dst, n)
        elif t == cnp.NPY_FLOAT64:
            bad = _whole(<const double *> src, dst, n)
        else:
            bad = _widen(src, t == cnp.NPY_INT64, dst, n)
    if bad >= 0:
        raise ValueError(f"indices must be whole numbers, got {(<object> ix)[bad]} at "
                         f"position {bad}")


cdef Py_ssize_t _whole(const floating *src, int64_t *dst, Py_ssize_t n) noexcept nogil:
    """dst := src as integers; the first position that is not a whole number in the int64
    range (NaN included), or -1."""
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = src[i]
        if not (-9.2e18 < v < 9.2e18) or v != <floating> <int64_t> v:
            return i
        dst[i] = <int64_t> v
    return -1


cdef Py_ssize_t _widen(const void *src, bint wide, int64_t *dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if wide:
        memcpy(dst, src, n * sizeof(int64_t))
    else:
        for i in range(n):
            dst[i] = (<const int *> src)[i]
    return -1


def index_update_output(input, indices, output, Py_ssize_t dim):
    """output := input's slices ``indices`` along axis ``dim``, in that order (numpy's
    ``take``): output's shape is input's with that axis of size len(indices)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t outer, size, inner
    _bands(x, dim, &outer, &size, &inner)
    cdef cnp.ndarray ix = _indices(indices, size, dim)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(ix)
    shape_is(y, "output", shape(x)[:dim] + (n,) + shape(x)[dim + 1:])
    disjoint(y, "output", x, "input")
    disjoint(y, "output", ix, "indices")
    if cnp.PyArray_SIZE(y) == 0:
        return
    cdef const int64_t *p = <const int64_t *> cnp.PyArray_DATA(ix)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _take(f32(x), p, f32(y), outer, size, inner, n)
        else:
            _take(f64(x), p, f64(y), outer, size, inner, n)


cdef void _take(const floating *x, const int64_t *p, floating *y, Py_ssize_t outer,
                Py_ssize_t size, Py_ssize_t inner, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t o, k
    for o in range(outer):
        for k in range(n):
            memcpy(y + (o * n + k) * inner, x + (o * size + p[k]) * inner,
                   inner * sizeof(floating))


def index_update_grad_input(indices, grad_output, grad_input, Py_ssize_t dim):
    """grad_input := 0, then grad_input's slice indices[k] along ``dim`` += grad_output's
    slice k (a repeated index sums)."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t outer, size, inner
    _bands(gi, dim, &outer, &size, &inner)
    cdef cnp.ndarray ix = _indices(indices, size, dim)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(ix)
    shape_is(go, "gradOutput", shape(gi)[:dim] + (n,) + shape(gi)[dim + 1:])
    disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", ix, "indices")
    if cnp.PyArray_SIZE(gi) == 0:
        return
    memset(cnp.PyArray_DATA(gi), 0, cnp.PyArray_NBYTES(gi))
    cdef const int64_t *p = <const int64_t *> cnp.PyArray_DATA(ix)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _index_add(f32(go), p, f32(gi), outer, size, inner, n)
        else:
            _index_add(f64(go), p, f64(gi), outer, size, inner, n)


cdef void _index_add(const floating *go, const int64_t *p, floating *gi, Py_ssize_t outer,
                     Py_ssize_t size, Py_ssize_t inner, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t o, k, j
    cdef floating *dst
    cdef const floating *src
    for o in range(outer):
        for k in range(n):
            dst = gi + (o * size + p[k]) * inner
            src = go + (o * n + k) * inner
            for j in range(inner):
                dst[j] += src[j]
