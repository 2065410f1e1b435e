"""Kernels of the arithmetic layers: AddConstant, MulConstant and Negative (one affine map),
and the table layers CDivTable, CMinTable and CAveTable.

The affine kernels take arrays of any shape; ``output`` may be ``input`` and ``grad_input``
may be ``grad_output`` (in place), as the layers' ``inplace`` flag asks. The table kernels
take every operand of one shape and dtype; CMinTable's backward is CMaxTable's
(``engine.table.cmax_update_grad_input``: the gradient goes to the recorded input).
"""

cimport numpy as cnp
from libc.stdlib cimport malloc, free

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, shape_is, disjoint, disjoint_from
from engine._inplace cimport same_or_disjoint

cnp.import_array()


# -- y = x * scale + shift -------------------------------------------------------------------

def affine_update_output(input, output, double scale, double shift):
    """output := input * scale + shift elementwise (a product by 1 or a sum with 0 is not
    taken, so that -0.0 and the exact input stay); ``output`` may be ``input``."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    shape_is(y, "output", shape(x))
    same_or_disjoint(y, "output", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _affine(f32(x), f32(y), n, <float> scale, <float> shift)
        else:
            _affine(f64(x), f64(y), n, scale, shift)


def affine_update_grad_input(grad_output, grad_input, double scale):
    """grad_input := grad_output * scale; ``grad_input`` may be ``grad_output``."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    shape_is(gi, "gradInput", shape(go))
    same_or_disjoint(gi, "gradInput", go, "gradOutput")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _affine(f32(go), f32(gi), n, <float> scale, <float> 0)
        else:
            _affine(f64(go), f64(gi), n, scale, 0)


cdef void _affine(const floating *x, floating *y, Py_ssize_t n, floating scale,
                  floating shift) noexcept nogil:
    cdef Py_ssize_t i
    if scale == 1 and shift == 0:
        if x != y:
            for i in range(n):
                y[i] = x[i]
    elif scale == 1:
        for i in range(n):
            y[i] = x[i] + shift
    elif shift == 0:
        for i in range(n):
            y[i] = x[i] * scale
    else:
        for i in range(n):
            y[i] = x[i] * scale + shift


# -- CDivTable -------------------------------------------------------------------------------

def cdiv_update_output(input0, input1, output):
    """output := input0 / input1 elementwise."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray a = array(input0, "input 0", t, False)
    cdef cnp.ndarray b = array(input1, "input 1", t, False)
    _same(b, "input 1", a, "input 0")
    _same(y, "output", a, "input 0")
    disjoint_from(y, "output", a, "input 0", b, "input 1")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _div(f32(a), f32(b), f32(y), n)
        else:
            _div(f64(a), f64(b), f64(y), n)


cdef void _div(const floating *a, const floating *b, floating *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = a[i] / b[i]


def cdiv_update_grad_input(input0, input1, grad_output, grad_input0, grad_input1):
    """grad_input0 := grad_output / input1; grad_input1 := -grad_input0 * input0 / input1."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray a = array(input0, "input 0", t, False)
    cdef cnp.ndarray b = array(input1, "input 1", t, False)
    cdef cnp.ndarray g0 = array(grad_input0, "gradInput 0", t, True)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 1", t, True)
    _same(a, "input 0", go, "gradOutput")
    _same(b, "input 1", go, "gradOutput")
    _same(g0, "gradInput 0", go, "gradOutput")
    _same(g1, "gradInput 1", go, "gradOutput")
    disjoint_from(g0, "gradInput 0", go, "gradOutput", a, "input 0", b, "input 1",
                  g1, "gradInput 1")
    disjoint_from(g1, "gradInput 1", go, "gradOutput", a, "input 0", b, "input 1")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _div_grad(f32(a), f32(b), f32(go), f32(g0), f32(g1), n)
        else:
            _div_grad(f64(a), f64(b), f64(go), f64(g0), f64(g1), n)


cdef void _div_grad(const floating *a, const floating *b, const floating *go, floating *g0,
                    floating *g1, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating q
    for i in range(n):
        q = go[i] / b[i]
        g0[i] = q
        g1[i] = -q * a[i] / b[i]


# -- tables of one shape ---------------------------------------------------------------------

cdef int _same(cnp.ndarray x, str what, cnp.ndarray like, str like_what) except -1:
    if shape(x) != shape(like):
        raise ValueError(f"{what} has shape {shape(x)}, expected {shape(like)} "
                         f"(the shape of {like_what})")
    return 0


cdef list _operands(object parts, str what, int t, bint writeable, cnp.ndarray like,
                    str like_what):
    """``parts`` as a non-empty list of C-contiguous arrays of type ``t`` shaped like ``like``
    (the first part when ``like`` is None)."""
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"{what} must be a list of numpy.ndarray, got {type(parts).__name__}")
    if len(parts) == 0:
        raise ValueError(f"{what} is an empty list")
    cdef list xs = [array(p, f"{what} {i}", t, writeable) for i, p in enumerate(parts)]
    if like is None:
        like, like_what = <cnp.ndarray> xs[0], f"{what} 0"
    for i, x in enumerate(xs):
        _same(<cnp.ndarray> x, f"{what} {i}", like, like_what)
    return xs


cdef void **_pointers(list xs) except NULL:
    cdef void **p = <void **> malloc((len(xs) + 1) * sizeof(void *))
    if p == NULL:
        raise MemoryError()
    for i, x in enumerate(xs):
        p[i] = cnp.PyArray_DATA(<cnp.ndarray> x)
    return p


def cmin_update_output(inputs, output, indices):
    """output := elementwise min of inputs; indices (int32) := which input, the first on ties;
    a NaN wins, as torch.minimum's."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INT32, True)
    cdef list xs = _operands(inputs, "input", t, False, None, None)
    _same(y, "output", <cnp.ndarray> xs[0], "input 0")
    _same(idx, "indices", <cnp.ndarray> xs[0], "input 0")
    disjoint(y, "output", idx, "indices")
    for i, x in enumerate(xs):
        disjoint(y, "output", x, f"input {i}")
        disjoint(idx, "indices", x, f"input {i}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y), n = len(xs)
    cdef void **p = _pointers(xs)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _min(<const float **> p, n, f32(y), <int *> cnp.PyArray_DATA(idx), size)
        else:
            _min(<const double **> p, n, f64(y), <int *> cnp.PyArray_DATA(idx), size)
    free(p)


cdef void _min(const floating **x, Py_ssize_t n, floating *y, int *idx,
               Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *a = x[0]
    for j in range(size):
        y[j] = a[j]
        idx[j] = 0
    for i in range(1, n):
        a = x[i]
        for j in range(size):
            # the first NaN stays: a NaN in y makes both tests false
            if a[j] < y[j] or (a[j] != a[j] and y[j] == y[j]):
                y[j] = a[j]
                idx[j] = <int> i


def cave_update_output(inputs, output):
    """output := (inputs[0] + inputs[1] + ...) / len(inputs), elementwise."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef list xs = _operands(inputs, "input", t, False, None, None)
    _same(y, "output", <cnp.ndarray> xs[0], "input 0")
    for i, x in enumerate(xs):
        disjoint(y, "output", x, f"input {i}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y), n = len(xs)
    cdef void **p = _pointers(xs)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _average(<const float **> p, n, f32(y), size)
        else:
            _average(<const double **> p, n, f64(y), size)
    free(p)


cdef void _average(const floating **x, Py_ssize_t n, floating *y, Py_ssize_t size
                   ) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *a = x[0]
    cdef floating count = <floating> n
    for j in range(size):
        y[j] = a[j]
    for i in range(1, n):
        a = x[i]
        for j in range(size):
            y[j] += a[j]
    for j in range(size):
        y[j] = y[j] / count


def cave_update_grad_input(grad_output, grad_inputs):
    """grad_inputs[i] := grad_output / len(grad_inputs) for every i."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef list gs = _operands(grad_inputs, "gradInput", t, True, go, "gradOutput")
    for i, g in enumerate(gs):
        disjoint(g, f"gradInput {i}", go, "gradOutput")
        for j in range(i):
            disjoint(g, f"gradInput {i}", gs[j], f"gradInput {j}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(go), n = len(gs), k
    cdef void **q = _pointers(gs)
    with nogil:
        for k in range(n):
            if t == cnp.NPY_FLOAT32:
                _quotient(f32(go), <float *> q[k], <float> n, size)
            else:
                _quotient(f64(go), <double *> q[k], <double> n, size)
    free(q)


cdef void _quotient(const floating *go, floating *g, floating count,
                    Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(size):
        g[j] = go[j] / count
