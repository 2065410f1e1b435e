"""Kernels of the elementwise criteria of the second catalogue: margins over +-1 targets,
the L1 cost, and the Keras-style regression losses (Poisson, percentage error, squared log
error, KL divergence of probabilities), plus the Gaussian log-likelihood of [mean, logVar].

One loop per method, selected by an op code (below); a loss is the sum of the terms, summed
in double, divided as the ``norm`` code says. The soft margin loss has its own entries, on
the vectorised softplus and sigmoid of vecmath.h. NaN is never hidden: every ``max(0, d)``
is written ``0 if d <= 0 else d`` and every clip ``lo if v < lo else (hi if v > hi else v)``,
which keep NaN; gradients follow PyTorch's where it has the loss (a clamp passes its
gradient on [lo, hi], a hinge on d >= 0).
"""

cimport numpy as cnp
from libc.math cimport fabs, log, exp, M_PI, INFINITY
from libc.float cimport DBL_MAX

from engine.blas cimport floating
from engine._check cimport float_type, array, f32, f64, shape, disjoint, disjoint_from
from engine.vecmath cimport pm_soft_plus_fwd, pm_sigmoid_fwd

cnp.import_array()

# Elementwise ops of elementwise_update_output / elementwise_update_grad_input.
cpdef enum:
    HINGE_EMBEDDING = 0  # x where y != -1, plus max(0, param - x) where y != 1
    L1_COST = 1          # |x| (no target)
    POISSON = 2          # x - y log(x + 1e-7)
    PERCENTAGE = 3       # 100 |x - y| / clip(|y|, 1e-7, DBL_MAX)
    SQUARED_LOG = 4      # (log(clip(y) + 1) - log(clip(x) + 1))^2, clip to [1e-7, DBL_MAX]
    KL_DIVERGENCE = 5    # y log(clip(y) / clip(x)), clip to [1e-8, 1]
    _N_OPS = 6

# How a summed loss is divided (``norm``).
cpdef enum:
    SUM = 0      # not at all
    MEAN = 1     # by the number of elements
    PER_ROW = 2  # by the size of the first axis (1 for a vector or a scalar)
    _N_NORMS = 3

cdef double KERAS_EPS = 1e-7
cdef double KL_EPS = 1e-8


cdef inline double _clip(double v, double lo, double hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline double _sign(double v) noexcept nogil:
    return 1 if v > 0 else (-1 if v < 0 else 0)


cdef double _divisor(cnp.ndarray x, int norm):
    """What the summed loss of ``x`` is divided by (never 0)."""
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(x)
    if norm == MEAN:
        return n if n > 0 else 1
    if norm == PER_ROW and cnp.PyArray_NDIM(x) > 1:
        n = cnp.PyArray_DIMS(x)[0]
        return n if n > 0 else 1
    return 1


cdef cnp.ndarray _target(object target, int op, int t, cnp.ndarray x):
    """The target array (None for L1_COST, which has none), shaped like the input."""
    if op == L1_COST:
        return None
    cdef cnp.ndarray y = array(target, "target", t, False)
    if shape(y) != shape(x):
        raise ValueError(f"target has shape {shape(y)}, expected the input's {shape(x)}")
    return y


cdef int _codes(int op, int norm) except -1:
    if op < 0 or op >= _N_OPS:
        raise ValueError(f"unknown elementwise loss {op}")
    if norm < 0 or norm >= _N_NORMS:
        raise ValueError(f"unknown normalisation {norm}")
    return 0


def elementwise_update_output(int op, input, target, double param, int norm):
    """The loss sum_i f_op(input[i], target[i]) divided as ``norm`` says (SUM, MEAN, PER_ROW);
    ``param`` is the margin of HINGE_EMBEDDING; ``target`` (input's shape) is None for
    L1_COST."""
    _codes(op, norm)
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = _target(target, op, t, x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _loss(op, f32(x), f32(y), n, param)
        else:
            loss = _loss(op, f64(x), f64(y), n, param)
    return loss / _divisor(x, norm)


cdef double _loss(int op, const floating *x, const floating *y, Py_ssize_t n,
                  double param) noexcept nogil:
    cdef double s = 0, xi, yi = 0, z, term
    cdef Py_ssize_t i
    for i in range(n):
        xi = x[i]
        if y != NULL:
            yi = y[i]
        if op == HINGE_EMBEDDING:
            term = 0
            if yi != -1:
                term = xi
            if yi != 1:
                z = param - xi
                term += 0 if z <= 0 else z
        elif op == L1_COST:
            term = fabs(xi)
        elif op == POISSON:
            term = xi - yi * log(xi + KERAS_EPS)
        elif op == PERCENTAGE:
            term = 100 * fabs(xi - yi) / _clip(fabs(yi), KERAS_EPS, DBL_MAX)
        elif op == SQUARED_LOG:
            z = log(_clip(yi, KERAS_EPS, DBL_MAX) + 1) - log(_clip(xi, KERAS_EPS, DBL_MAX) + 1)
            term = z * z
        else:  # KL_DIVERGENCE: the unclipped target weighs the term (0 where it is 0)
            term = yi * (log(_clip(yi, KL_EPS, 1)) - log(_clip(xi, KL_EPS, 1)))
        s += term
    return s


def elementwise_update_grad_input(int op, input, target, grad_input, double param, int norm):
    """grad_input := d elementwise_update_output / d input, shaped like input."""
    _codes(op, norm)
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = _target(target, op, t, x)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    if shape(g) != shape(x):
        raise ValueError(f"gradInput has shape {shape(g)}, expected {shape(x)}")
    disjoint_from(g, "gradInput", x, "input", y, "target")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef double scale = 1.0 / _divisor(x, norm)
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _grad(op, f32(x), f32(y), f32(g), n, param, scale)
        else:
            _grad(op, f64(x), f64(y), f64(g), n, param, scale)


cdef void _grad(int op, const floating *x, const floating *y, floating *g, Py_ssize_t n,
                double param, double scale) noexcept nogil:
    cdef double xi, yi = 0, z, v
    cdef Py_ssize_t i
    for i in range(n):
        xi = x[i]
        if y != NULL:
            yi = y[i]
        if op == HINGE_EMBEDDING:
            v = 0
            if yi != -1:
                v = 1
            if yi != 1 and param - xi >= 0:
                v -= 1
        elif op == L1_COST:
            v = _sign(xi)
        elif op == POISSON:
            v = 1 - yi / (xi + KERAS_EPS)
        elif op == PERCENTAGE:
            v = 100 * _sign(xi - yi) / _clip(fabs(yi), KERAS_EPS, DBL_MAX)
        elif op == SQUARED_LOG:
            if xi >= KERAS_EPS and xi <= DBL_MAX:
                z = log(_clip(yi, KERAS_EPS, DBL_MAX) + 1) - log(xi + 1)
                v = -2 * z / (xi + 1)
            else:
                v = 0
        else:  # KL_DIVERGENCE
            v = -yi / xi if xi >= KL_EPS and xi <= 1 else 0
        g[i] = <floating> (v * scale)


# -- soft margin: the vectorised softplus and sigmoid of vecmath.h -------------------------

cdef cnp.ndarray _soft_margin_args(object input, object target, object out, str out_what):
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    if shape(y) != shape(x):
        raise ValueError(f"target has shape {shape(y)}, expected the input's {shape(x)}")
    cdef cnp.ndarray o = array(out, out_what, t, True)
    if shape(o) != shape(x):
        raise ValueError(f"{out_what} has shape {shape(o)}, expected {shape(x)}")
    disjoint_from(o, out_what, x, "input", y, "target")
    return o


def soft_margin_update_output(input, target, buffer, bint size_average):
    """sum log(1 + exp(-target * input)), divided by the element count if averaged;
    ``buffer`` (input's shape and dtype) is scratch."""
    cdef cnp.ndarray b = _soft_margin_args(input, target, buffer, "buffer")
    cdef cnp.ndarray x = <cnp.ndarray> input, y = <cnp.ndarray> target
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef double s
    if n == 0:
        return 0.0
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
            s = _soft_margin(f32(x), f32(y), f32(b), n)
        else:
            s = _soft_margin(f64(x), f64(y), f64(b), n)
    return s / n if size_average else s


def soft_margin_update_grad_input(input, target, grad_input, bint size_average):
    """grad_input := -target sigmoid(-target * input), divided by the element count if
    averaged."""
    cdef cnp.ndarray g = _soft_margin_args(input, target, grad_input, "gradInput")
    cdef cnp.ndarray x = <cnp.ndarray> input, y = <cnp.ndarray> target
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef double scale = 1.0 / n if size_average and n > 0 else 1.0
    if n == 0:
        return
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
            _soft_margin_grad(f32(x), f32(y), f32(g), n, scale)
        else:
            _soft_margin_grad(f64(x), f64(y), f64(g), n, scale)


cdef double _soft_margin(const floating *x, const floating *y, floating *b,
                         Py_ssize_t n) noexcept nogil:
    _negated_product(x, y, b, n, 1)
    pm_soft_plus_fwd(floating is double, b, b, n, 1, INFINITY)
    return _sum(b, n)


cdef void _soft_margin_grad(const floating *x, const floating *y, floating *g, Py_ssize_t n,
                            double scale) noexcept nogil:
    _negated_product(x, y, g, n, 1)
    pm_sigmoid_fwd(floating is double, g, g, n)
    _negated_product(g, y, g, n, scale)


cdef void _negated_product(const floating *a, const floating *b, floating *out, Py_ssize_t n,
                           double scale) noexcept nogil:
    """out := -(a * b) * scale (out may be a)."""
    cdef floating c = <floating> -scale
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = c * (a[i] * b[i])


cdef double _sum(const floating *a, Py_ssize_t n) noexcept nogil:
    cdef double s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i]
    return s


# -- Gaussian log-likelihood ----------------------------------------------------------------

cdef double HALF_LOG_2PI = 0.5 * log(2 * M_PI)


cdef int _gaussian_args(cnp.ndarray mu, cnp.ndarray lv, cnp.ndarray x) except -1:
    if shape(lv) != shape(mu):
        raise ValueError(f"logVar has shape {shape(lv)}, expected the mean's {shape(mu)}")
    if shape(x) != shape(mu):
        raise ValueError(f"target has shape {shape(x)}, expected the mean's {shape(mu)}")
    return 0


def gaussian_update_output(mean, log_var, target):
    """sum 0.5 logVar + 0.5 log(2 pi) + 0.5 (target - mean)^2 / exp(logVar): the negative
    log-likelihood of target under N(mean, exp(logVar)), summed (never averaged)."""
    cdef int t = float_type(mean, "mean")
    cdef cnp.ndarray mu = array(mean, "mean", t, False)
    cdef cnp.ndarray lv = array(log_var, "logVar", t, False)
    cdef cnp.ndarray x = array(target, "target", t, False)
    _gaussian_args(mu, lv, x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(mu)
    cdef double s
    with nogil:
        if t == cnp.NPY_FLOAT32:
            s = _gaussian(f32(mu), f32(lv), f32(x), n)
        else:
            s = _gaussian(f64(mu), f64(lv), f64(x), n)
    return s


cdef double _gaussian(const floating *mu, const floating *lv, const floating *x,
                      Py_ssize_t n) noexcept nogil:
    cdef double s = 0, d
    cdef Py_ssize_t i
    for i in range(n):
        d = <double> x[i] - mu[i]
        s += 0.5 * lv[i] + HALF_LOG_2PI + 0.5 * d * d * exp(-<double> lv[i])
    return s


def gaussian_update_grad_input(mean, log_var, target, grad_mean, grad_log_var):
    """grad_mean := (mean - target) / exp(logVar);
    grad_log_var := 0.5 - 0.5 (target - mean)^2 / exp(logVar)."""
    cdef int t = float_type(mean, "mean")
    cdef cnp.ndarray mu = array(mean, "mean", t, False)
    cdef cnp.ndarray lv = array(log_var, "logVar", t, False)
    cdef cnp.ndarray x = array(target, "target", t, False)
    cdef cnp.ndarray gm = array(grad_mean, "gradMean", t, True)
    cdef cnp.ndarray gl = array(grad_log_var, "gradLogVar", t, True)
    _gaussian_args(mu, lv, x)
    if shape(gm) != shape(mu):
        raise ValueError(f"gradMean has shape {shape(gm)}, expected {shape(mu)}")
    if shape(gl) != shape(mu):
        raise ValueError(f"gradLogVar has shape {shape(gl)}, expected {shape(mu)}")
    disjoint_from(gm, "gradMean", mu, "mean", lv, "logVar", x, "target")
    disjoint_from(gl, "gradLogVar", mu, "mean", lv, "logVar", x, "target")
    disjoint(gm, "gradMean", gl, "gradLogVar")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(mu)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gaussian_grad(f32(mu), f32(lv), f32(x), f32(gm), f32(gl), n)
        else:
            _gaussian_grad(f64(mu), f64(lv), f64(x), f64(gm), f64(gl), n)


cdef void _gaussian_grad(const floating *mu, const floating *lv, const floating *x,
                         floating *gm, floating *gl, Py_ssize_t n) noexcept nogil:
    cdef double d, iv
    cdef Py_ssize_t i
    for i in range(n):
        d = <double> mu[i] - x[i]
        iv = exp(-<double> lv[i])
        gm[i] = <floating> (d * iv)
        gl[i] = <floating> (0.5 - 0.5 * d * d * iv)
