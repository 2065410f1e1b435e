"""Kernels of Sum, Mean, Max and Min: a reduction over one axis.

A C-contiguous input seen along ``axis`` is (outer, size, inner); the output is (outer, inner),
shaped as the input without that axis or with 1 there (both are accepted). Sums accumulate in
double whatever the dtype: along a row in eight partial chains (inner = 1), otherwise over
blocks of up to 256 columns held in a double buffer on the stack. Max and Min keep the
position of the extremum on the axis (the first one; a NaN wins, as torch.max's) for the
backward, which scatters the gradient there.
"""

cimport numpy as cnp

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, ndim, disjoint_from

cnp.import_array()

cdef enum:
    BLOCK = 256  # columns summed at once when inner > 1 (a 2 KiB double buffer)


cdef int _split(cnp.ndarray x, str what, Py_ssize_t axis, Py_ssize_t *outer, Py_ssize_t *size,
                Py_ssize_t *inner) except -1:
    """(outer, size, inner) of ``x`` seen along ``axis``."""
    cdef int nd = ndim(x, what, 1, 64), k
    if axis < 0 or axis >= nd:
        raise ValueError(f"axis {axis} is out of range for {what} of {nd} dimensions "
                         f"(shape {shape(x)})")
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    outer[0], size[0], inner[0] = 1, d[axis], 1
    for k in range(axis):
        outer[0] *= d[k]
    for k in range(axis + 1, nd):
        inner[0] *= d[k]
    return 0


cdef int _reduced(cnp.ndarray y, str what, cnp.ndarray x, Py_ssize_t axis) except -1:
    """``y`` has the shape of ``x`` without ``axis``, or with 1 there."""
    cdef tuple s = shape(x)
    cdef tuple dropped = s[:axis] + s[axis + 1:]
    cdef tuple kept = s[:axis] + (1,) + s[axis + 1:]
    if shape(y) != dropped and shape(y) != kept:
        raise ValueError(f"{what} has shape {shape(y)}, expected {dropped} or {kept} "
                         f"(input {s} reduced over axis {axis})")
    return 0


# -- Sum and Mean ----------------------------------------------------------------------------

def sum_update_output(input, output, Py_ssize_t axis, double divisor=1.0):
    """output := input summed over ``axis``, divided by ``divisor`` (Mean: the axis' size).

    (outer, size, inner) -> (outer, inner), shaped as the input without ``axis`` or with 1
    there.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t outer, size, inner
    _split(x, "input", axis, &outer, &size, &inner)
    _reduced(y, "output", x, axis)
    disjoint_from(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _sum_output(f32(x), f32(y), outer, size, inner, divisor)
        else:
            _sum_output(f64(x), f64(y), outer, size, inner, divisor)


cdef inline double _row_sum(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        a0 += x[i]
        a1 += x[i + 1]
        a2 += x[i + 2]
        a3 += x[i + 3]
        a4 += x[i + 4]
        a5 += x[i + 5]
        a6 += x[i + 6]
        a7 += x[i + 7]
        i += 8
    while i < n:
        a0 += x[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


cdef void _sum_output(const floating *x, floating *y, Py_ssize_t outer, Py_ssize_t size,
                      Py_ssize_t inner, double divisor) noexcept nogil:
    cdef Py_ssize_t o, k, i, i0, w
    cdef double acc[BLOCK]
    cdef const floating *row
    if inner == 1:
        for o in range(outer):
            y[o] = <floating> (_row_sum(x + o * size, size) / divisor)
        return
    for o in range(outer):
        i0 = 0
        while i0 < inner:
            w = inner - i0 if inner - i0 < BLOCK else BLOCK
            for i in range(w):
                acc[i] = 0
            for k in range(size):
                row = x + (o * size + k) * inner + i0
                for i in range(w):
                    acc[i] += row[i]
            for i in range(w):
                y[o * inner + i0 + i] = <floating> (acc[i] / divisor)
            i0 += w


def sum_update_grad_input(grad_output, grad_input, Py_ssize_t axis, double divisor=1.0):
    """grad_input := grad_output / divisor, repeated along ``axis`` (Sum's and Mean's
    backward); grad_output is shaped as the forward's output."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t outer, size, inner
    _split(gi, "gradInput", axis, &outer, &size, &inner)
    _reduced(go, "gradOutput", gi, axis)
    disjoint_from(gi, "gradInput", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _sum_grad_input(f32(go), f32(gi), outer, size, inner, divisor)
        else:
            _sum_grad_input(f64(go), f64(gi), outer, size, inner, divisor)


cdef void _sum_grad_input(const floating *go, floating *gi, Py_ssize_t outer, Py_ssize_t size,
                          Py_ssize_t inner, double divisor) noexcept nogil:
    cdef Py_ssize_t o, k, i
    cdef floating v
    cdef floating *row
    cdef const floating *g
    for o in range(outer):
        if inner == 1:
            v = <floating> (go[o] / divisor)
            row = gi + o * size
            for k in range(size):
                row[k] = v
            continue
        g = go + o * inner
        for k in range(size):
            row = gi + (o * size + k) * inner
            if divisor == 1:
                for i in range(inner):
                    row[i] = g[i]
            else:
                for i in range(inner):
                    row[i] = <floating> (g[i] / divisor)


# -- Max and Min -----------------------------------------------------------------------------

cdef int _extremum(object input, object output, object indices, Py_ssize_t axis,
                   bint minimum) except -1:
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INTP, True)
    cdef Py_ssize_t outer, size, inner
    _split(x, "input", axis, &outer, &size, &inner)
    _reduced(y, "output", x, axis)
    if shape(idx) != shape(y):
        raise ValueError(f"indices has shape {shape(idx)}, expected {shape(y)}")
    if size == 0 and outer * inner != 0:
        raise ValueError(f"input has no values on axis {axis} to take the "
                         f"{'min' if minimum else 'max'} of (shape {shape(x)})")
    disjoint_from(y, "output", x, "input", idx, "indices")
    disjoint_from(idx, "indices", x, "input")
    cdef Py_ssize_t *ip = <Py_ssize_t *> cnp.PyArray_DATA(idx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _extremum_output(f32(x), f32(y), ip, outer, size, inner, minimum)
        else:
            _extremum_output(f64(x), f64(y), ip, outer, size, inner, minimum)
    return 0


def max_update_output(input, output, indices, Py_ssize_t axis):
    """output := the max of input over ``axis``; indices (intp) := its position there (the
    first; a NaN wins). (outer, size, inner) -> (outer, inner)."""
    _extremum(input, output, indices, axis, False)


def min_update_output(input, output, indices, Py_ssize_t axis):
    """output := the min of input over ``axis``; indices (intp) := its position there (the
    first; a NaN wins). (outer, size, inner) -> (outer, inner)."""
    _extremum(input, output, indices, axis, True)


cdef inline bint _better(floating v, floating best, bint minimum) noexcept nogil:
    """Whether ``v`` replaces ``best``: beyond it, or the first NaN."""
    if v != v:
        return best == best
    return v < best if minimum else v > best


cdef void _extremum_output(const floating *x, floating *y, Py_ssize_t *idx, Py_ssize_t outer,
                           Py_ssize_t size, Py_ssize_t inner, bint minimum) noexcept nogil:
    cdef Py_ssize_t o, k, i, bi
    cdef floating best, v
    cdef const floating *row
    cdef floating *yo
    cdef Py_ssize_t *io
    if size == 0:
        return
    for o in range(outer):
        if inner == 1:
            row = x + o * size
            best, bi = row[0], 0
            for k in range(1, size):
                if best != best:
                    break
                v = row[k]
                if _better(v, best, minimum):
                    best, bi = v, k
            y[o], idx[o] = best, bi
            continue
        yo = y + o * inner
        io = idx + o * inner
        row = x + o * size * inner
        for i in range(inner):
            yo[i] = row[i]
            io[i] = 0
        for k in range(1, size):
            row = x + (o * size + k) * inner
            for i in range(inner):
                v = row[i]
                if _better(v, yo[i], minimum):
                    yo[i] = v
                    io[i] = k


cdef int _scatter_args(object grad_output, object grad_input, object indices, Py_ssize_t axis
                       ) except -1:
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INTP, False)
    cdef Py_ssize_t outer, size, inner
    _split(gi, "gradInput", axis, &outer, &size, &inner)
    _reduced(go, "gradOutput", gi, axis)
    if shape(idx) != shape(go):
        raise ValueError(f"indices has shape {shape(idx)}, expected {shape(go)}")
    disjoint_from(gi, "gradInput", go, "gradOutput", idx, "indices")
    cdef const Py_ssize_t *ip = <const Py_ssize_t *> cnp.PyArray_DATA(idx)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scatter(f32(go), f32(gi), ip, outer, size, inner)
        else:
            _scatter(f64(go), f64(gi), ip, outer, size, inner)
    return 0


def max_update_grad_input(grad_output, grad_input, indices, Py_ssize_t axis):
    """grad_input := 0 but grad_output at the forward's ``indices`` on ``axis``."""
    _scatter_args(grad_output, grad_input, indices, axis)


def min_update_grad_input(grad_output, grad_input, indices, Py_ssize_t axis):
    """grad_input := 0 but grad_output at the forward's ``indices`` on ``axis``."""
    _scatter_args(grad_output, grad_input, indices, axis)


cdef void _scatter(const floating *go, floating *gi, const Py_ssize_t *idx, Py_ssize_t outer,
                   Py_ssize_t size, Py_ssize_t inner) noexcept nogil:
    cdef Py_ssize_t o, i, k, n = outer * size * inner
    for i in range(n):
        gi[i] = 0
    for o in range(outer):
        for i in range(inner):
            k = idx[o * inner + i]
            if 0 <= k < size:  # a position from another input is ignored, never written
                gi[(o * size + k) * inner + i] = go[o * inner + i]
