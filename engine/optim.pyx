"""Kernels of the optimisation methods: one fused pass over the flat parameter vector.

Each update reads the gradient and writes the parameters and the method's state buffers in
the same loop, without temporaries. Weight decay is applied on the fly (the gradient array
is left as backward wrote it). Learning-rate schedules and bias corrections are scalars the
caller computes.
"""

cimport numpy as cnp
from libc.math cimport fabs, sqrt
from libc.string cimport memset

from engine.blas cimport floating, dot, scal, run_parts, threads_for
from engine._check cimport float_type, array, f32, f64, vector_of, disjoint, shape

cdef extern from "_sgd.h" nogil:
    void pm_sgd_f32(float *x, float *g, float *buf, Py_ssize_t n, float c, float w, float m,
                    float d1, int nesterov, int first, int clear)
    void pm_sgd_f64(double *x, double *g, double *buf, Py_ssize_t n, double c, double w,
                    double m, double d1, int nesterov, int first, int clear)

cnp.import_array()

# Elements a blocked pass adds before it clears them: 4 KiB of float32 (both vectors together
# stay in a 32 KiB L1 in either dtype).
cdef enum:
    BLOCK = 1024


cdef cnp.ndarray _param(object x, int t):
    cdef cnp.ndarray a = array(x, "x", t, True)
    if cnp.PyArray_NDIM(a) != 1:
        raise ValueError(f"x must be the flat 1-D parameter vector, got shape {shape(a)}")
    return a


cdef cnp.ndarray _grad(object grad, cnp.ndarray x, int t):
    """The gradient: a vector as long as x, of its dtype, sharing no memory with it."""
    cdef cnp.ndarray g = _like(grad, "grad", x, t, False, (), ())
    disjoint(x, "x", g, "grad")
    return g


cdef cnp.ndarray _like(object obj, str what, cnp.ndarray x, int t, bint writeable,
                       tuple others, tuple names):
    """A vector as long as x, of its dtype, sharing no memory with ``others`` when written."""
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    vector_of(a, what, cnp.PyArray_DIMS(x)[0])
    if writeable:
        for o, name in zip(others, names):
            disjoint(a, what, o, name)
    return a


def sgd_update(x, grad, momentum_buffer, double clr, double weight_decay, double momentum,
               double dampening, bint nesterov, bint first, bint clear_grad=False):
    """Torch7's SGD step, with g = grad + weight_decay * x:

    buf := g if first else momentum * buf + (1 - dampening) * g  (momentum != 0 only)
    x -= clr * (g + momentum * buf if nesterov else buf)          (x -= clr * g without momentum)

    ``clear_grad``: grad := 0 in the same pass (the next step's gradient then accumulates
    from zero without a pass of its own to clear it).
    """
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _like(grad, "grad", xa, t, clear_grad, (), ())
    disjoint(xa, "x", g, "grad")
    cdef cnp.ndarray b = None
    if momentum != 0:
        if momentum_buffer is None:
            raise ValueError("momentum != 0 needs a momentum buffer")
        b = _like(momentum_buffer, "momentum buffer", xa, t, True, (xa, g), ("x", "grad"))
    cdef Sgd s
    s.f64, s.n = t == cnp.NPY_FLOAT64, cnp.PyArray_DIMS(xa)[0]
    s.x, s.g = cnp.PyArray_DATA(xa), cnp.PyArray_DATA(g)
    s.b = NULL if b is None else cnp.PyArray_DATA(b)
    s.c, s.w, s.m, s.d1 = clr, weight_decay, momentum, 1 - dampening
    s.nesterov, s.first, s.clear = nesterov, first, clear_grad
    with nogil:
        run_parts(_sgd_part, &s, threads_for(<double> s.n * SGD_COST))


cdef enum:
    # What an element of SGD's pass costs beside a multiply-add of a product (engine/blas.pxd's
    # threads_for): it reads and writes three vectors.
    SGD_COST = 8


cdef struct Sgd:
    # sgd_update's arguments: the data of x, grad and the momentum buffer (or NULL), n, the
    # scalars and flags.
    bint f64
    void *x
    void *g
    void *b
    Py_ssize_t n
    double c, w, m, d1
    int nesterov, first, clear


cdef void _sgd_part(void *arg, int part, int parts) noexcept nogil:
    """Part ``part`` of ``parts`` of sgd_update's pass, cut on whole blocks: each element is
    updated alone, so the parts give the numbers of one pass. The loops are _sgd.h's, one per
    case, in the parameters' own precision (the scalars rounded to it first), so that they
    vectorise."""
    cdef Sgd *s = <Sgd *> arg
    cdef Py_ssize_t blocks = (s.n + BLOCK - 1) // BLOCK
    cdef Py_ssize_t lo = blocks * part // parts * BLOCK
    cdef Py_ssize_t hi = s.n if part == parts - 1 else blocks * (part + 1) // parts * BLOCK
    if hi > s.n:
        hi = s.n
    if hi <= lo:
        return
    if s.f64:
        pm_sgd_f64(<double *> s.x + lo, <double *> s.g + lo,
                   <double *> s.b + lo if s.b != NULL else NULL, hi - lo, s.c, s.w, s.m, s.d1,
                   s.nesterov, s.first, s.clear)
    else:
        pm_sgd_f32(<float *> s.x + lo, <float *> s.g + lo,
                   <float *> s.b + lo if s.b != NULL else NULL, hi - lo, <float> s.c,
                   <float> s.w, <float> s.m, <float> s.d1, s.nesterov, s.first, s.clear)


def add_and_clear(total, part):
    """total += part; part := 0, in one pass (the gradient of a model replica added into
    the model's)."""
    cdef int t = float_type(total, "total")
    cdef cnp.ndarray a = array(total, "total", t, True)
    if cnp.PyArray_NDIM(a) != 1:
        raise ValueError(f"total must be a flat 1-D vector, got shape {shape(a)}")
    cdef cnp.ndarray p = _like(part, "part", a, t, True, (a,), ("total",))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(a)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _add_clear(f32(a), f32(p), n)
        else:
            _add_clear(f64(a), f64(p), n)


cdef void _add_clear(floating *a, floating *p, cnp.npy_intp n) noexcept nogil:
    cdef cnp.npy_intp i = 0, c
    while i < n:
        c = n - i if n - i < BLOCK else BLOCK
        _add(a + i, p + i, c)
        memset(p + i, 0, <size_t> c * sizeof(floating))
        i += c


cdef void _add(floating *a, const floating *p, cnp.npy_intp n) noexcept nogil:
    cdef cnp.npy_intp i
    for i in range(n):
        a[i] += p[i]


def adam_update(x, grad, m, v, double step, double beta1, double beta2, double eps,
                double decay):
    """Adam (Torch7's form), with AdamW's decoupled decay as ``decay`` = lr * weightDecay:

    m := beta1 m + (1 - beta1) g;  v := beta2 v + (1 - beta2) g^2
    x := x (1 - decay) - step * m / (sqrt(v) + eps),  step = clr * sqrt(1 - beta2^t) / (1 - beta1^t)
    """
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _grad(grad, xa, t)
    cdef cnp.ndarray ma = _like(m, "m", xa, t, True, (xa, g), ("x", "grad"))
    cdef cnp.ndarray va = _like(v, "v", xa, t, True, (xa, g, ma), ("x", "grad", "m"))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(xa)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adam(f32(xa), f32(g), f32(ma), f32(va), n, step, beta1, beta2, eps, decay)
        else:
            _adam(f64(xa), f64(g), f64(ma), f64(va), n, step, beta1, beta2, eps, decay)


cdef void _adam(floating *x, const floating *g, floating *m, floating *v, cnp.npy_intp n,
                double step, double b1, double b2, double eps, double decay) noexcept nogil:
    cdef cnp.npy_intp i
    cdef double gi, mi, vi
    for i in range(n):
        gi = g[i]
        mi = b1 * m[i] + (1 - b1) * gi
        vi = b2 * v[i] + (1 - b2) * gi * gi
        m[i] = <floating> mi
        v[i] = <floating> vi
        x[i] = <floating> (x[i] * (1 - decay) - step * mi / (sqrt(vi) + eps))


def adagrad_update(x, grad, variance, double clr, double weight_decay, double eps):
    """var += g^2; x -= clr * g / (sqrt(var) + eps), with g = grad + weight_decay * x."""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _grad(grad, xa, t)
    cdef cnp.ndarray va = _like(variance, "variance", xa, t, True, (xa, g), ("x", "grad"))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(xa)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adagrad(f32(xa), f32(g), f32(va), n, clr, weight_decay, eps)
        else:
            _adagrad(f64(xa), f64(g), f64(va), n, clr, weight_decay, eps)


cdef void _adagrad(floating *x, const floating *g, floating *var, cnp.npy_intp n, double clr,
                   double wd, double eps) noexcept nogil:
    cdef cnp.npy_intp i
    cdef double gi, vi
    for i in range(n):
        gi = g[i] + wd * x[i]
        vi = var[i] + gi * gi
        var[i] = <floating> vi
        x[i] = <floating> (x[i] - clr * gi / (sqrt(vi) + eps))


def rmsprop_update(x, grad, mean_square, double clr, double decay_rate, double eps):
    """ms := rho ms + (1 - rho) g^2; x -= clr * g / (sqrt(ms) + eps)."""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _grad(grad, xa, t)
    cdef cnp.ndarray ms = _like(mean_square, "meanSquare", xa, t, True, (xa, g), ("x", "grad"))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(xa)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _rmsprop(f32(xa), f32(g), f32(ms), n, clr, decay_rate, eps)
        else:
            _rmsprop(f64(xa), f64(g), f64(ms), n, clr, decay_rate, eps)


cdef void _rmsprop(floating *x, const floating *g, floating *ms, cnp.npy_intp n, double clr,
                   double rho, double eps) noexcept nogil:
    cdef cnp.npy_intp i
    cdef double gi, mi
    for i in range(n):
        gi = g[i]
        mi = rho * ms[i] + (1 - rho) * gi * gi
        ms[i] = <floating> mi
        x[i] = <floating> (x[i] - clr * gi / (sqrt(mi) + eps))


def adadelta_update(x, grad, mean_square, mean_delta, double clr, double decay_rate, double eps):
    """ms := rho ms + (1 - rho) g^2; d := sqrt(md + eps) / sqrt(ms + eps) * g; x -= clr * d;
    md := rho md + (1 - rho) d^2."""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _grad(grad, xa, t)
    cdef cnp.ndarray ms = _like(mean_square, "meanSquare", xa, t, True, (xa, g), ("x", "grad"))
    cdef cnp.ndarray md = _like(mean_delta, "meanDelta", xa, t, True, (xa, g, ms),
                                ("x", "grad", "meanSquare"))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(xa)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adadelta(f32(xa), f32(g), f32(ms), f32(md), n, clr, decay_rate, eps)
        else:
            _adadelta(f64(xa), f64(g), f64(ms), f64(md), n, clr, decay_rate, eps)


cdef void _adadelta(floating *x, const floating *g, floating *ms, floating *md, cnp.npy_intp n,
                    double clr, double rho, double eps) noexcept nogil:
    cdef cnp.npy_intp i
    cdef double gi, si, d
    for i in range(n):
        gi = g[i]
        si = rho * ms[i] + (1 - rho) * gi * gi
        ms[i] = <floating> si
        d = sqrt(md[i] + eps) / sqrt(si + eps) * gi
        md[i] = <floating> (rho * md[i] + (1 - rho) * d * d)
        x[i] = <floating> (x[i] - clr * d)


def adamax_update(x, grad, m, u, double step, double beta1, double beta2, double eps):
    """m := beta1 m + (1 - beta1) g; u := max(beta2 u, |g| + eps); x -= step * m / u,
    step = clr / (1 - beta1^t)."""
    cdef int t = float_type(x, "x")
    cdef cnp.ndarray xa = _param(x, t)
    cdef cnp.ndarray g = _grad(grad, xa, t)
    cdef cnp.ndarray ma = _like(m, "m", xa, t, True, (xa, g), ("x", "grad"))
    cdef cnp.ndarray ua = _like(u, "u", xa, t, True, (xa, g, ma), ("x", "grad", "m"))
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(xa)[0]
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _adamax(f32(xa), f32(g), f32(ma), f32(ua), n, step, beta1, beta2, eps)
        else:
            _adamax(f64(xa), f64(g), f64(ma), f64(ua), n, step, beta1, beta2, eps)


cdef void _adamax(floating *x, const floating *g, floating *m, floating *u, cnp.npy_intp n,
                  double step, double b1, double b2, double eps) noexcept nogil:
    cdef cnp.npy_intp i
    cdef double gi, mi, ui, a
    for i in range(n):
        gi = g[i]
        mi = b1 * m[i] + (1 - b1) * gi
        a = fabs(gi) + eps
        ui = b2 * u[i]
        if a > ui:
            ui = a
        m[i] = <floating> mi
        u[i] = <floating> ui
        x[i] = <floating> (x[i] - step * mi / ui)


# -- gradient clipping --------------------------------------------------------------------

def clip_constant(grad, double min_value, double max_value):
    """grad := min(max(grad, min_value), max_value), in place."""
    cdef int t = float_type(grad, "grad")
    cdef cnp.ndarray g = array(grad, "grad", t, True)
    if min_value > max_value:
        raise ValueError(f"clipping range [{min_value}, {max_value}] is empty")
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(g)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _clip(f32(g), n, min_value, max_value)
        else:
            _clip(f64(g), n, min_value, max_value)


cdef void _clip(floating *g, cnp.npy_intp n, double lo, double hi) noexcept nogil:
    cdef cnp.npy_intp i
    for i in range(n):
        if g[i] < lo:
            g[i] = <floating> lo
        elif g[i] > hi:
            g[i] = <floating> hi


def clip_l2_norm(grad, double max_norm):
    """grad *= max_norm / ||grad|| when ||grad|| > max_norm; return ||grad|| before clipping."""
    cdef int t = float_type(grad, "grad")
    cdef cnp.ndarray g = array(grad, "grad", t, True)
    if max_norm <= 0:
        raise ValueError(f"the L2 norm bound must be > 0, got {max_norm}")
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(g)
    cdef double norm
    if n > 0x7FFFFFFF:
        raise ValueError(f"grad of {n} elements exceeds the BLAS limit")
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            norm = _clip_norm(f32(g), <int> n, max_norm)
        else:
            norm = _clip_norm(f64(g), <int> n, max_norm)
    return norm


cdef double _clip_norm(floating *g, int n, double max_norm) noexcept nogil:
    cdef double norm = 0
    cdef int i
    if floating is float:
        # float32 squares summed in double: a long vector would lose digits in sdot
        for i in range(n):
            norm += <double> g[i] * g[i]
    else:
        norm = dot(n, g, 1, g, 1)
    norm = sqrt(norm)
    if norm > max_norm:
        scal(n, <floating> (max_norm / norm), g, 1)
    return norm
