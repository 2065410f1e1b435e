"""Kernels of the table modules and containers: copies along an axis, n-ary elementwise ops.

``join``/``split`` move blocks between one array (``whole``) and a list of arrays (``parts``)
laid side by side along ``dim``: Concat, JoinTable, SplitTable, Narrow and Select all reduce
to them. A C-contiguous array seen along ``dim`` is (outer, size, inner): each part takes
a (outer, c_i, inner) band, so the copy is one memcpy per (outer row, part). Bytes are
moved, so they need no dtype dispatch.

The elementwise kernels (CAddTable, CSubTable, CMulTable, CMaxTable, and the gradient sums
of containers and graphs) take every operand of one shape and dtype.
"""

cimport numpy as cnp
from libc.stdlib cimport malloc, free, qsort
from libc.string cimport memcpy, memset

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, disjoint, disjoint_from

cnp.import_array()


cdef int _axis(Py_ssize_t dim, int nd, str what) except -1:
    if dim < 0 or dim >= nd:
        raise ValueError(f"dimension {dim} is out of range for {what} of {nd} dimensions")
    return <int> dim


cdef list _parts(object parts, str what, int t, bint writeable):
    """``parts`` as a list of arrays of type ``t``, C-contiguous (writeable if asked).

    Messages are formatted only on failure: a table may hold hundreds of arrays.
    """
    if not isinstance(parts, (list, tuple)):
        raise TypeError(f"{what} must be a list of numpy.ndarray, got {type(parts).__name__}")
    if len(parts) == 0:
        raise ValueError(f"{what} is an empty list")
    cdef cnp.ndarray a
    for i, p in enumerate(parts):
        if cnp.PyArray_Check(p):
            a = <cnp.ndarray> p
            if cnp.PyArray_TYPE(a) == t and cnp.PyArray_IS_C_CONTIGUOUS(a) and \
                    (not writeable or cnp.PyArray_ISWRITEABLE(a)):
                continue
        array(p, f"{what} {i}", t, writeable)  # raises with the reason
    return parts if type(parts) is list else list(parts)


ctypedef struct _Span:
    char *start
    char *end
    Py_ssize_t index


cdef int _by_start(const void *a, const void *b) noexcept nogil:
    cdef char *x = (<_Span *> a).start
    cdef char *y = (<_Span *> b).start
    return -1 if x < y else (1 if x > y else 0)


cdef int _disjoint_all(list written, str what, object other, str other_what) except -1:
    """No array of ``written`` overlaps another one or ``other`` (which may be None).

    Sorting by address makes this O(n log n) for tables of many arrays.
    """
    cdef Py_ssize_t n = len(written), i, k = 0
    cdef cnp.ndarray a
    cdef char *o0 = NULL
    cdef char *o1 = NULL
    if other is not None:
        o0 = <char *> cnp.PyArray_DATA(<cnp.ndarray> other)
        o1 = o0 + cnp.PyArray_NBYTES(<cnp.ndarray> other)
    cdef _Span *spans = <_Span *> malloc(n * sizeof(_Span) + 1)
    if spans == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            a = <cnp.ndarray> written[i]
            if cnp.PyArray_NBYTES(a) == 0:
                continue
            spans[k].start = <char *> cnp.PyArray_DATA(a)
            spans[k].end = spans[k].start + cnp.PyArray_NBYTES(a)
            spans[k].index = i
            if o0 != o1 and spans[k].start < o1 and o0 < spans[k].end:
                disjoint(a, f"{what} {i}", other, other_what)
            k += 1
        qsort(spans, k, sizeof(_Span), _by_start)
        for i in range(1, k):
            if spans[i].start < spans[i - 1].end:
                disjoint(written[spans[i].index], f"{what} {spans[i].index}",
                         written[spans[i - 1].index], f"{what} {spans[i - 1].index}")
    finally:
        free(spans)
    return 0


cdef Py_ssize_t _check_bands(list parts, str parts_what, cnp.ndarray whole, str whole_what,
                             Py_ssize_t dim, Py_ssize_t offset, bint stacked,
                             Py_ssize_t *counts) except -1:
    """Check that ``parts`` fit ``whole`` along ``dim`` from ``offset``; fill ``counts``.

    Stacked parts lack the axis ``dim`` and take one slot each. Returns the slots used.
    """
    cdef int nd = cnp.PyArray_NDIM(whole), pnd = nd - 1 if stacked else nd, k
    _axis(dim, nd, whole_what)
    cdef cnp.npy_intp *wd = cnp.PyArray_DIMS(whole)
    cdef cnp.npy_intp *pd
    cdef Py_ssize_t total = 0, i
    cdef cnp.ndarray p
    cdef bint ok
    for i in range(len(parts)):
        p = <cnp.ndarray> parts[i]
        pd = cnp.PyArray_DIMS(p)
        ok = cnp.PyArray_NDIM(p) == pnd
        if ok:
            for k in range(dim):
                ok = ok and pd[k] == wd[k]
            for k in range(dim + 1, nd):
                ok = ok and pd[k - 1 if stacked else k] == wd[k]
        if not ok:
            ws = shape(whole)
            if stacked:
                want = str(ws[:dim] + ws[dim + 1:])
            else:
                want = "(" + ", ".join("*" if j == dim else str(ws[j])
                                       for j in range(nd)) + ")"
                want += f" (any size on dimension {dim})"
            raise ValueError(f"{parts_what} {i} has shape {shape(p)}, expected {want}")
        counts[i] = 1 if stacked else pd[dim]
        total += counts[i]
    if offset < 0 or offset + total > wd[dim]:
        raise ValueError(f"{parts_what} span {total} on dimension {dim} from offset {offset}, "
                         f"but {whole_what} has {wd[dim]} there (shape {shape(whole)})")
    return total


cdef void _move(char *whole, char **parts, Py_ssize_t *counts, Py_ssize_t n,
                Py_ssize_t outer, Py_ssize_t size, Py_ssize_t inner, Py_ssize_t offset,
                Py_ssize_t itemsize, bint to_whole) noexcept nogil:
    """Copy each (outer, counts[i], inner) part to or from its band of (outer, size, inner)."""
    cdef Py_ssize_t o, i, pos, row = size * inner * itemsize, nbytes
    cdef char *w
    for o in range(outer):
        w = whole + o * row + offset * inner * itemsize
        pos = 0
        for i in range(n):
            nbytes = counts[i] * inner * itemsize
            if nbytes:
                if to_whole:
                    memcpy(w + pos, parts[i] + o * nbytes, nbytes)
                else:
                    memcpy(parts[i] + o * nbytes, w + pos, nbytes)
            pos += nbytes


cdef void _zero_rest(char *whole, Py_ssize_t outer, Py_ssize_t size, Py_ssize_t inner,
                     Py_ssize_t offset, Py_ssize_t total, Py_ssize_t itemsize) noexcept nogil:
    """Zero the slots of (outer, size, inner) outside [offset, offset + total) on axis 1."""
    cdef Py_ssize_t o, row = size * inner * itemsize, step = inner * itemsize
    cdef char *w
    for o in range(outer):
        w = whole + o * row
        if offset:
            memset(w, 0, offset * step)
        if offset + total < size:
            memset(w + (offset + total) * step, 0, (size - offset - total) * step)


cdef int _disjoint_whole(list ps, str parts_what, cnp.ndarray w, str whole_what) except -1:
    """``w`` (written) overlaps none of ``ps``; names are formatted only for the culprit."""
    cdef char *w0 = <char *> cnp.PyArray_DATA(w)
    cdef char *w1 = w0 + cnp.PyArray_NBYTES(w)
    cdef char *p0
    cdef cnp.ndarray p
    for i in range(len(ps)):
        p = <cnp.ndarray> ps[i]
        p0 = <char *> cnp.PyArray_DATA(p)
        if w0 < p0 + cnp.PyArray_NBYTES(p) and p0 < w1:
            disjoint(w, whole_what, p, f"{parts_what} {i}")
    return 0


cdef int _transfer(object parts, object whole, Py_ssize_t dim, Py_ssize_t offset, bint stacked,
                   str parts_what, str whole_what, bint to_whole) except -1:
    cdef int t = float_type(whole, whole_what)
    cdef cnp.ndarray w = array(whole, whole_what, t, to_whole)
    cdef list ps = _parts(parts, parts_what, t, not to_whole)
    cdef Py_ssize_t n = len(ps), i, total
    if to_whole:
        _disjoint_all([w], whole_what, None, "")
        _disjoint_whole(ps, parts_what, w, whole_what)
    else:
        _disjoint_all(ps, parts_what, w, whole_what)
    cdef Py_ssize_t *counts = <Py_ssize_t *> malloc(n * sizeof(Py_ssize_t))
    cdef char **ptrs = <char **> malloc(n * sizeof(char *))
    if counts == NULL or ptrs == NULL:
        free(counts)
        free(ptrs)
        raise MemoryError()
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(w)
    cdef int nd = cnp.PyArray_NDIM(w), k
    cdef Py_ssize_t outer = 1, inner = 1, size
    try:
        total = _check_bands(ps, parts_what, w, whole_what, dim, offset, stacked, counts)
        for k in range(dim):
            outer *= d[k]
        for k in range(dim + 1, nd):
            inner *= d[k]
        size = d[dim]
        for i in range(n):
            ptrs[i] = <char *> cnp.PyArray_DATA(<cnp.ndarray> ps[i])
        with nogil:
            if outer and inner:
                _move(<char *> cnp.PyArray_DATA(w), ptrs, counts, n, outer, size, inner,
                      offset, cnp.PyArray_ITEMSIZE(w), to_whole)
                if to_whole and total < size:
                    _zero_rest(<char *> cnp.PyArray_DATA(w), outer, size, inner, offset,
                               total, cnp.PyArray_ITEMSIZE(w))
    finally:
        free(counts)
        free(ptrs)
    return 0


def join(parts, whole, Py_ssize_t dim, Py_ssize_t offset=0, bint stacked=False,
         str parts_what="input", str whole_what="output"):
    """whole[..., offset:offset + sum(c_i), ...] := parts side by side along ``dim``; zero the rest.

    A part has whole's shape with c_i on ``dim``, or, ``stacked``, whole's shape without
    ``dim`` (c_i = 1). (n_0, ..., c_0, ...), (n_0, ..., c_1, ...) -> (n_0, ..., size, ...).
    """
    _transfer(parts, whole, dim, offset, stacked, parts_what, whole_what, True)


def split(whole, parts, Py_ssize_t dim, Py_ssize_t offset=0, bint stacked=False,
          str whole_what="input", str parts_what="output"):
    """parts := consecutive bands of ``whole`` along ``dim`` from ``offset`` (join's inverse)."""
    _transfer(parts, whole, dim, offset, stacked, parts_what, whole_what, False)


# -- n-ary elementwise ------------------------------------------------------------------

cdef int _operands(list xs, str what, cnp.ndarray like, str like_what) except -1:
    cdef tuple s = shape(like)
    for i, x in enumerate(xs):
        if shape(<cnp.ndarray> x) != s:
            raise ValueError(f"{what} {i} has shape {shape(<cnp.ndarray> x)}, expected {s} "
                             f"(the shape of {like_what})")
    return 0


cdef int _same(cnp.ndarray x, str what, cnp.ndarray like, str like_what) except -1:
    if shape(x) != shape(like):
        raise ValueError(f"{what} has shape {shape(x)}, expected {shape(like)} "
                         f"(the shape of {like_what})")
    return 0


cdef list _inputs(object inputs, cnp.ndarray y, int t):
    """The inputs of an n-ary op into ``y``: arrays of its type, shape and none overlapping it."""
    cdef list xs = _parts(inputs, "input", t, False)
    _operands(xs, "input", <cnp.ndarray> xs[0], "input 0")
    _same(y, "output", <cnp.ndarray> xs[0], "input 0")
    for i, x in enumerate(xs):
        disjoint(y, "output", x, f"input {i}")
    return xs


cdef void **_pointers(list xs) except NULL:
    cdef void **p = <void **> malloc((len(xs) + 1) * sizeof(void *))
    if p == NULL:
        raise MemoryError()
    for i, x in enumerate(xs):
        p[i] = cnp.PyArray_DATA(<cnp.ndarray> x)
    return p


def cadd_update_output(inputs, output):
    """output := inputs[0] + inputs[1] + ..., all of one shape."""
    _fold(inputs, output, False)


cdef int _fold(object inputs, object output, bint product) except -1:
    """output := the sum, or the ``product``, of the inputs."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef list xs = _inputs(inputs, y, t)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y), n = len(xs)
    cdef void **p = _pointers(xs)
    with nogil:
        if t == cnp.NPY_FLOAT32 and product:
            _prod(<const float **> p, n, -1, f32(y), NULL, size)
        elif t == cnp.NPY_FLOAT32:
            _sum(<const float **> p, n, f32(y), size)
        elif product:
            _prod(<const double **> p, n, -1, f64(y), NULL, size)
        else:
            _sum(<const double **> p, n, f64(y), size)
    free(p)
    return 0


cdef void _sum(const floating **x, Py_ssize_t n, floating *y, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *a
    cdef const floating *b
    if n == 1:
        memcpy(y, x[0], size * sizeof(floating))
        return
    a, b = x[0], x[1]
    for j in range(size):
        y[j] = a[j] + b[j]
    for i in range(2, n):
        a = x[i]
        for j in range(size):
            y[j] += a[j]


def cadd_update_grad_input(grad_output, grad_inputs):
    """grad_inputs[i] := grad_output for every i."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef list gs = _parts(grad_inputs, "gradInput", t, True)
    _operands(gs, "gradInput", go, "gradOutput")
    for i, g in enumerate(gs):
        disjoint(g, f"gradInput {i}", go, "gradOutput")
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(go)
    cdef const char *src = <const char *> cnp.PyArray_DATA(go)
    for g in gs:
        if nbytes:
            memcpy(cnp.PyArray_DATA(<cnp.ndarray> g), src, nbytes)


def csub_update_output(input0, input1, output):
    """output := input0 - input1."""
    _binary(input0, input1, output, False)


def cdiv_update_output(input0, input1, output):
    """output := input0 / input1 (CDivTable)."""
    _binary(input0, input1, output, True)


cdef int _binary(object input0, object input1, object output, bint divide) except -1:
    """output := input0 - input1, or input0 / input1 when ``divide``."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray a = array(input0, "input 0", t, False)
    cdef cnp.ndarray b = array(input1, "input 1", t, False)
    _same(b, "input 1", a, "input 0")
    _same(y, "output", a, "input 0")
    disjoint_from(y, "output", a, "input 0", b, "input 1")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y)
    with nogil:
        if t == cnp.NPY_FLOAT32 and divide:
            _div(f32(a), f32(b), f32(y), size)
        elif t == cnp.NPY_FLOAT32:
            _sub(f32(a), f32(b), f32(y), size)
        elif divide:
            _div(f64(a), f64(b), f64(y), size)
        else:
            _sub(f64(a), f64(b), f64(y), size)
    return 0


cdef void _div(const floating *a, const floating *b, floating *y,
               Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(size):
        y[j] = a[j] / b[j]


cdef void _sub(const floating *a, const floating *b, floating *y,
               Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(size):
        y[j] = a[j] - b[j]


def csub_update_grad_input(grad_output, grad_input0, grad_input1):
    """grad_input0 := grad_output; grad_input1 := -grad_output."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g0 = array(grad_input0, "gradInput 0", t, True)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 1", t, True)
    _operands([g0, g1], "gradInput", go, "gradOutput")
    disjoint(g0, "gradInput 0", go, "gradOutput")
    disjoint(g1, "gradInput 1", go, "gradOutput")
    disjoint(g0, "gradInput 0", g1, "gradInput 1")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _neg_copy(f32(go), f32(g0), f32(g1), size)
        else:
            _neg_copy(f64(go), f64(g0), f64(g1), size)


cdef void _neg_copy(const floating *go, floating *g0, floating *g1,
                    Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(size):
        g0[j] = go[j]
        g1[j] = -go[j]


def cmul_update_output(inputs, output):
    """output := inputs[0] * inputs[1] * ..., elementwise."""
    _fold(inputs, output, True)


cdef void _prod(const floating **x, Py_ssize_t n, Py_ssize_t skip, floating *y,
                const floating *scale, Py_ssize_t size) noexcept nogil:
    """y := (scale or 1) * product of x[i] for i != skip."""
    cdef Py_ssize_t i, j
    cdef const floating *a
    if scale != NULL:
        memcpy(y, scale, size * sizeof(floating))
    else:
        for j in range(size):
            y[j] = 1
    for i in range(n):
        if i == skip:
            continue
        a = x[i]
        for j in range(size):
            y[j] *= a[j]


def cmul_update_grad_input(inputs, grad_output, grad_inputs):
    """grad_inputs[i] := grad_output * product of inputs[j] for j != i.

    Products are taken directly rather than divided out, so zeros in the inputs are exact.
    """
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef list xs = _parts(inputs, "input", t, False)
    cdef list gs = _parts(grad_inputs, "gradInput", t, True)
    if len(gs) != len(xs):
        raise ValueError(f"gradInput has {len(gs)} arrays, expected {len(xs)}")
    _operands(xs, "input", go, "gradOutput")
    _operands(gs, "gradInput", go, "gradOutput")
    for i, g in enumerate(gs):
        disjoint(g, f"gradInput {i}", go, "gradOutput")
        for j, x in enumerate(xs):
            disjoint(g, f"gradInput {i}", x, f"input {j}")
        for j in range(i):
            disjoint(g, f"gradInput {i}", gs[j], f"gradInput {j}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(go), n = len(xs), k
    cdef void **p = _pointers(xs)
    cdef void **q
    try:
        q = _pointers(gs)
    except MemoryError:
        free(p)
        raise
    with nogil:
        for k in range(n):
            if t == cnp.NPY_FLOAT32:
                _prod(<const float **> p, n, k, <float *> q[k], f32(go), size)
            else:
                _prod(<const double **> p, n, k, <double *> q[k], f64(go), size)
    free(p)
    free(q)


def cmax_update_output(inputs, output, indices):
    """output := elementwise max of inputs; indices (int32) := which input, the first on ties."""
    _extremum(inputs, output, indices, False)


cdef int _extremum(object inputs, object output, object indices, bint minimum) except -1:
    """output := the elementwise max (min when ``minimum``) of inputs, indices := which."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INT32, True)
    cdef list xs = _inputs(inputs, y, t)
    _same(idx, "indices", y, "output")
    disjoint(y, "output", idx, "indices")
    for i, x in enumerate(xs):
        disjoint(idx, "indices", x, f"input {i}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y), n = len(xs)
    cdef int *which = <int *> cnp.PyArray_DATA(idx)
    cdef void **p = _pointers(xs)
    with nogil:
        if t == cnp.NPY_FLOAT32 and minimum:
            _min(<const float **> p, n, f32(y), which, size)
        elif t == cnp.NPY_FLOAT32:
            _max(<const float **> p, n, f32(y), which, size)
        elif minimum:
            _min(<const double **> p, n, f64(y), which, size)
        else:
            _max(<const double **> p, n, f64(y), which, size)
    free(p)
    return 0


cdef void _max(const floating **x, Py_ssize_t n, floating *y, int *idx,
               Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *a
    memcpy(y, x[0], size * sizeof(floating))
    memset(idx, 0, size * sizeof(int))
    for i in range(1, n):
        a = x[i]
        for j in range(size):
            if a[j] > y[j] or a[j] != a[j]:  # a NaN wins, as torch.maximum's
                y[j] = a[j]
                idx[j] = <int> i


def cmax_update_grad_input(grad_output, grad_inputs, indices):
    """grad_inputs[i] := grad_output where indices == i, else 0."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INT32, False)
    cdef list gs = _parts(grad_inputs, "gradInput", t, True)
    _operands(gs, "gradInput", go, "gradOutput")
    if shape(idx) != shape(go):
        raise ValueError(f"indices has shape {shape(idx)}, expected {shape(go)}")
    for i, g in enumerate(gs):
        disjoint(g, f"gradInput {i}", go, "gradOutput")
        disjoint(g, f"gradInput {i}", idx, "indices")
        for j in range(i):
            disjoint(g, f"gradInput {i}", gs[j], f"gradInput {j}")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(go), n = len(gs)
    cdef void **q = _pointers(gs)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scatter(f32(go), <float **> q, n, <int *> cnp.PyArray_DATA(idx), size)
        else:
            _scatter(f64(go), <double **> q, n, <int *> cnp.PyArray_DATA(idx), size)
    free(q)


cdef void _scatter(const floating *go, floating **g, Py_ssize_t n, const int *idx,
                   Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef int k
    for i in range(n):
        memset(g[i], 0, size * sizeof(floating))
    for j in range(size):
        k = idx[j]
        if 0 <= k < n:
            g[k][j] = go[j]


# -- CDivTable's gradient, CMinTable, CAveTable --------------------------------------------

def cdiv_update_grad_input(input0, input1, grad_output, grad_input0, grad_input1):
    """grad_input0 := grad_output / input1; grad_input1 := -grad_input0 * input0 / input1."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray a = array(input0, "input 0", t, False)
    cdef cnp.ndarray b = array(input1, "input 1", t, False)
    cdef cnp.ndarray g0 = array(grad_input0, "gradInput 0", t, True)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 1", t, True)
    _operands([a, b], "input", go, "gradOutput")
    _operands([g0, g1], "gradInput", go, "gradOutput")
    disjoint_from(g0, "gradInput 0", go, "gradOutput", a, "input 0", b, "input 1",
                  g1, "gradInput 1")
    disjoint_from(g1, "gradInput 1", go, "gradOutput", a, "input 0", b, "input 1")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _div_grad(f32(a), f32(b), f32(go), f32(g0), f32(g1), size)
        else:
            _div_grad(f64(a), f64(b), f64(go), f64(g0), f64(g1), size)


cdef void _div_grad(const floating *a, const floating *b, const floating *go, floating *g0,
                    floating *g1, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating q
    for j in range(size):
        q = go[j] / b[j]
        g0[j] = q
        g1[j] = -q * a[j] / b[j]


def cmin_update_output(inputs, output, indices):
    """output := elementwise min of inputs; indices (int32) := which input, the first on ties;
    a NaN wins, as torch.minimum's. The backward is cmax_update_grad_input's."""
    _extremum(inputs, output, indices, True)


cdef void _min(const floating **x, Py_ssize_t n, floating *y, int *idx,
               Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *a
    memcpy(y, x[0], size * sizeof(floating))
    memset(idx, 0, size * sizeof(int))
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
    cdef list xs = _inputs(inputs, y, t)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(y), n = len(xs)
    cdef void **p = _pointers(xs)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _sum(<const float **> p, n, f32(y), size)
            _quotient(f32(y), f32(y), <float> n, size)
        else:
            _sum(<const double **> p, n, f64(y), size)
            _quotient(f64(y), f64(y), <double> n, size)
    free(p)


def cave_update_grad_input(grad_output, grad_inputs):
    """grad_inputs[i] := grad_output / len(grad_inputs) for every i."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef list gs = _parts(grad_inputs, "gradInput", t, True)
    _operands(gs, "gradInput", go, "gradOutput")
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


cdef void _quotient(const floating *x, floating *y, floating count,
                    Py_ssize_t size) noexcept nogil:
    """y := x / count (y may be x)."""
    cdef Py_ssize_t j
    for j in range(size):
        y[j] = x[j] / count
