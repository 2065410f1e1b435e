"""Kernels of the criteria over rows or pairs: cosine distance and Dice coefficient of
(input, target) rows, the margin ranking loss of a pair of inputs, and the L1 hinge
embedding loss of two arrays. Losses are summed in double; NaN is never hidden (every
``max(0, d)`` is ``0 if d <= 0 else d``), and hinge gradients flow where d >= 0, as
PyTorch's clamp gives them.
"""

cimport numpy as cnp
from libc.math cimport fabs, sqrt

from engine.blas cimport floating, dot
from engine._check cimport (
    float_type, array, f32, f64, ndim, dim, shape, shape_is, disjoint, disjoint_from,
)

cnp.import_array()

cdef double COS_EPS = 1e-12


cdef int _rows(cnp.ndarray x, cnp.ndarray y, cnp.npy_intp *n, int *k) except -1:
    """Rows and row length of input (k,) or (n, k); target must have its shape."""
    cdef int nd = ndim(x, "input", 1, 2)
    if shape(y) != shape(x):
        raise ValueError(f"target has shape {shape(y)}, expected the input's {shape(x)}")
    k[0] = dim(x, nd - 1)
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    return 0


cdef cnp.ndarray _grad_of(object grad_input, int t, cnp.ndarray x, cnp.ndarray y):
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", y, "target")
    return g


# -- cosine distance ------------------------------------------------------------------------

def cosine_distance_update_output(input, target, bint size_average):
    """sum over rows of 1 - cos(input_i, target_i), cos = x.y / sqrt((x.x + 1e-12)
    (y.y + 1e-12)); divided by the rows if averaged. (k,) or (n, k) -> float."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n
    cdef int k
    _rows(x, y, &n, &k)
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _cosine(f32(x), f32(y), NULL, n, k, 1.0)
        else:
            loss = _cosine(f64(x), f64(y), NULL, n, k, 1.0)
    return loss / n if size_average else loss


def cosine_distance_update_grad_input(input, target, grad_input, bint size_average):
    """grad_input := d cosine_distance_update_output / d input (the target is constant)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n
    cdef int k
    _rows(x, y, &n, &k)
    cdef cnp.ndarray g = _grad_of(grad_input, t, x, y)
    if n == 0:
        return
    cdef double scale = 1.0 / n if size_average else 1.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine(f32(x), f32(y), f32(g), n, k, scale)
        else:
            _cosine(f64(x), f64(y), f64(g), n, k, scale)


cdef double _cosine(const floating *x, const floating *y, floating *g, cnp.npy_intp n, int k,
                    double scale) noexcept nogil:
    """The summed loss; with g also its gradient times ``scale``."""
    cdef double s = 0, dxy, dxx, dyy, root, cos
    cdef cnp.npy_intp i
    cdef int j
    cdef const floating *a
    cdef const floating *b
    for i in range(n):
        a = x + i * k
        b = y + i * k
        if k > 0:
            dxy = dot(k, a, 1, b, 1)
            dxx = dot(k, a, 1, a, 1) + COS_EPS
            dyy = dot(k, b, 1, b, 1) + COS_EPS
        else:
            dxy, dxx, dyy = 0, COS_EPS, COS_EPS
        root = sqrt(dxx * dyy)
        cos = dxy / root
        s += 1 - cos
        if g == NULL:
            continue
        # d(1 - cos)/dx = cos x / (x.x) - y / root
        for j in range(k):
            g[i * k + j] = <floating> (scale * (cos / dxx * a[j] - b[j] / root))
    return s


# -- Dice coefficient -----------------------------------------------------------------------

def dice_update_output(input, target, double epsilon, bint size_average):
    """sum over rows of 1 - (2 x.y + eps) / (sum x + sum y + eps); divided by the rows if
    averaged. (k,) or (n, k) -> float."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n
    cdef int k
    _rows(x, y, &n, &k)
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _dice(f32(x), f32(y), NULL, n, k, epsilon, 1.0)
        else:
            loss = _dice(f64(x), f64(y), NULL, n, k, epsilon, 1.0)
    return loss / n if size_average else loss


def dice_update_grad_input(input, target, grad_input, double epsilon, bint size_average):
    """grad_input := d dice_update_output / d input (the target is constant)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n
    cdef int k
    _rows(x, y, &n, &k)
    cdef cnp.ndarray g = _grad_of(grad_input, t, x, y)
    if n == 0:
        return
    cdef double scale = 1.0 / n if size_average else 1.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _dice(f32(x), f32(y), f32(g), n, k, epsilon, scale)
        else:
            _dice(f64(x), f64(y), f64(g), n, k, epsilon, scale)


cdef double _dice(const floating *x, const floating *y, floating *g, cnp.npy_intp n, int k,
                  double eps, double scale) noexcept nogil:
    """The summed loss; with g also its gradient times ``scale``."""
    cdef double s = 0, num, den, sx, sy
    cdef cnp.npy_intp i
    cdef int j
    cdef const floating *a
    cdef const floating *b
    for i in range(n):
        a = x + i * k
        b = y + i * k
        num = 2 * (dot(k, a, 1, b, 1) if k > 0 else 0) + eps
        sx = 0
        sy = 0
        for j in range(k):
            sx += a[j]
            sy += b[j]
        den = sx + sy + eps
        s += 1 - num / den
        if g == NULL:
            continue
        # d(1 - num/den)/dx = -2 y / den + num / den^2
        for j in range(k):
            g[i * k + j] = <floating> (scale * (num / (den * den) - 2 * b[j] / den))
    return s


# -- margin ranking -------------------------------------------------------------------------

cdef Py_ssize_t _ranking_args(cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray y) except -1:
    if shape(x2) != shape(x1):
        raise ValueError(f"input[1] has shape {shape(x2)}, expected input[0]'s {shape(x1)}")
    if cnp.PyArray_SIZE(y) != cnp.PyArray_SIZE(x1):
        raise ValueError(f"target has {cnp.PyArray_SIZE(y)} elements (shape {shape(y)}), "
                         f"expected one +1/-1 per element of the inputs {shape(x1)}")
    return cnp.PyArray_SIZE(x1)


def margin_ranking_update_output(input1, input2, target, double margin, bint size_average):
    """sum max(0, margin - y (x1 - x2)), divided by the number of pairs if averaged."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef Py_ssize_t n = _ranking_args(x1, x2, y)
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _ranking(f32(x1), f32(x2), f32(y), n, margin)
        else:
            loss = _ranking(f64(x1), f64(x2), f64(y), n, margin)
    return loss / n if size_average else loss


cdef double _ranking(const floating *x1, const floating *x2, const floating *y, Py_ssize_t n,
                     double margin) noexcept nogil:
    cdef double s = 0, d
    cdef Py_ssize_t i
    for i in range(n):
        d = margin - y[i] * (<double> x1[i] - x2[i])
        s += 0 if d <= 0 else d
    return s


def margin_ranking_update_grad_input(input1, input2, target, grad_input1, grad_input2,
                                     double margin, bint size_average):
    """grad_input1 := -y [d >= 0] / N, grad_input2 := -grad_input1, d = margin - y (x1 - x2)
    (N the pairs if averaged, else 1)."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef Py_ssize_t n = _ranking_args(x1, x2, y)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput[0]", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput[1]", t, True)
    shape_is(g1, "gradInput[0]", shape(x1))
    shape_is(g2, "gradInput[1]", shape(x1))
    disjoint_from(g1, "gradInput[0]", x1, "input[0]", x2, "input[1]", y, "target")
    disjoint_from(g2, "gradInput[1]", x1, "input[0]", x2, "input[1]", y, "target")
    disjoint(g1, "gradInput[0]", g2, "gradInput[1]")
    if n == 0:
        return
    cdef double scale = 1.0 / n if size_average else 1.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _ranking_grad(f32(x1), f32(x2), f32(y), f32(g1), f32(g2), n, margin, scale)
        else:
            _ranking_grad(f64(x1), f64(x2), f64(y), f64(g1), f64(g2), n, margin, scale)


cdef void _ranking_grad(const floating *x1, const floating *x2, const floating *y,
                        floating *g1, floating *g2, Py_ssize_t n, double margin,
                        double scale) noexcept nogil:
    cdef double v
    cdef Py_ssize_t i
    for i in range(n):
        v = -y[i] * scale if margin - y[i] * (<double> x1[i] - x2[i]) >= 0 else 0
        g1[i] = <floating> v
        g2[i] = <floating> -v


# -- L1 hinge embedding ---------------------------------------------------------------------

cdef Py_ssize_t _l1_hinge_args(cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray y) except -1:
    if shape(x2) != shape(x1):
        raise ValueError(f"input[1] has shape {shape(x2)}, expected input[0]'s {shape(x1)}")
    if cnp.PyArray_SIZE(y) != 1:
        raise ValueError(f"target has shape {shape(y)}, expected one element (1 or -1)")
    return cnp.PyArray_SIZE(x1)


def l1_hinge_embedding_update_output(input1, input2, target, double margin):
    """d = sum |x1 - x2|: d if the target is not -1, else max(0, margin - d)."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef Py_ssize_t n = _l1_hinge_args(x1, x2, y)
    cdef double d, label
    with nogil:
        if t == cnp.NPY_FLOAT32:
            d = _l1(f32(x1), f32(x2), n)
            label = f32(y)[0]
        else:
            d = _l1(f64(x1), f64(x2), n)
            label = f64(y)[0]
    if label != -1:
        return d
    d = margin - d
    return 0.0 if d <= 0 else d


cdef double _l1(const floating *a, const floating *b, Py_ssize_t n) noexcept nogil:
    cdef double s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += fabs(<double> a[i] - b[i])
    return s


def l1_hinge_embedding_update_grad_input(input1, input2, target, grad_input1, grad_input2,
                                         double margin):
    """grad_input1 := sign(x1 - x2) (negated for the target -1, and 0 there once
    margin - d < 0); grad_input2 := -grad_input1. sign(0) is 0."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef Py_ssize_t n = _l1_hinge_args(x1, x2, y)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput[0]", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput[1]", t, True)
    shape_is(g1, "gradInput[0]", shape(x1))
    shape_is(g2, "gradInput[1]", shape(x1))
    disjoint_from(g1, "gradInput[0]", x1, "input[0]", x2, "input[1]", y, "target")
    disjoint_from(g2, "gradInput[1]", x1, "input[0]", x2, "input[1]", y, "target")
    disjoint(g1, "gradInput[0]", g2, "gradInput[1]")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _l1_hinge_grad(f32(x1), f32(x2), f32(y)[0], f32(g1), f32(g2), n, margin)
        else:
            _l1_hinge_grad(f64(x1), f64(x2), f64(y)[0], f64(g1), f64(g2), n, margin)


cdef void _l1_hinge_grad(const floating *x1, const floating *x2, double label, floating *g1,
                         floating *g2, Py_ssize_t n, double margin) noexcept nogil:
    cdef double c = 1, d
    cdef Py_ssize_t i
    if label == -1:
        c = -1 if margin - _l1(x1, x2, n) >= 0 else 0
    for i in range(n):
        d = <double> x1[i] - x2[i]
        d = c * (1 if d > 0 else (-1 if d < 0 else 0))
        g1[i] = <floating> d
        g2[i] = <floating> -d
