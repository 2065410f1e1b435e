"""Kernels of the criteria: the loss of (input, target) and its gradient w.r.t. the input.

Elementwise losses share one loop per method, selected by an op code (the constants below);
the class losses (negative log-likelihood, cross-entropy), the Gaussian KL divergence and
the cosine embedding loss have their own. Losses are summed in double.

NaN is never hidden: a NaN input or target gives a NaN loss (each ``max(0, d)`` is written
``0 if d <= 0 else d``, false for NaN), and the gradients follow PyTorch's (NaN where its
loss functions give NaN).
"""

cimport numpy as cnp
from libc.math cimport fabs, log, exp, sqrt, log1p, isnan
from libc.stdint cimport int64_t
from libc.string cimport memset

from engine.blas cimport floating, dot
from engine._check cimport (
    float_type, array, f32, f64, ndim, dim, shape, shape_is, disjoint, disjoint_from,
)

cnp.import_array()

# Elementwise ops of pointwise_update_output / pointwise_update_grad_input.
cpdef enum:
    MSE = 0           # (x - y)^2
    ABS = 1           # |x - y|
    SMOOTH_L1 = 2     # 0.5 (x - y)^2 if |x - y| < 1 else |x - y| - 0.5
    BCE = 3           # -(y log(x + eps) + (1 - y) log(1 - x + eps))
    MARGIN = 4        # max(0, param - x y)
    MARGIN_SQ = 5     # max(0, param - x y)^2
    SOFT_MARGIN = 6   # -(y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))
    DIST_KL = 7       # y (log y - x) where y > 0
    _N_OPS = 8

cdef double BCE_EPS = 1e-12
cdef double PROB_LO = 1e-8
cdef double PROB_HI = 1.0 - 1e-8


cdef Py_ssize_t _pair(cnp.ndarray x, cnp.ndarray y) except -1:
    """Elements of input, which target must match in shape."""
    if shape(x) != shape(y):
        raise ValueError(f"target has shape {shape(y)}, expected the input's {shape(x)}")
    return cnp.PyArray_SIZE(x)


cdef cnp.ndarray _weights(object weights, int t, cnp.ndarray x):
    """Per-class weights: a vector as long as input's last axis, or None."""
    if weights is None:
        return None
    cdef cnp.ndarray w = array(weights, "weights", t, False)
    cdef int nd = cnp.PyArray_NDIM(x)
    cdef cnp.npy_intp last = cnp.PyArray_DIMS(x)[nd - 1] if nd else 1
    if cnp.PyArray_NDIM(w) != 1 or cnp.PyArray_DIMS(w)[0] != last:
        raise ValueError(f"weights has shape {shape(w)}, expected {(last,)} "
                         f"(one per element of input's last axis)")
    return w


cdef cnp.ndarray _trailing_weights(object weights, int t, cnp.ndarray x):
    """Elementwise weights: an array shaped like a trailing part of input's shape (the
    per-sample shape, the last axis, or the whole input), repeated over the leading axes,
    or None. Row-major, element i of input then takes weight i % weights.size."""
    if weights is None:
        return None
    cdef cnp.ndarray w = array(weights, "weights", t, False)
    cdef int nd = cnp.PyArray_NDIM(x), nw = cnp.PyArray_NDIM(w)
    if nw < 1 or nw > max(nd, 1) or shape(w) != shape(x)[nd - nw:]:
        raise ValueError(f"weights has shape {shape(w)}, expected the trailing part of "
                         f"input's {shape(x)} (such as the per-sample {shape(x)[1:]})")
    return w


cdef int _op(int op) except -1:
    if op < 0 or op >= _N_OPS:
        raise ValueError(f"unknown elementwise loss {op}")
    return 0


def pointwise_update_output(int op, input, target, weights, double param, bint size_average):
    """The loss sum_i w[i % c] * f_op(input[i], target[i]), divided by the count if averaged.

    ``weights`` of a trailing part of input's shape (c elements), or None; ``param`` is the
    margin of MARGIN ops.
    """
    _op(op)
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef Py_ssize_t n = _pair(x, y)
    cdef cnp.ndarray w = _trailing_weights(weights, t, x)
    cdef Py_ssize_t c = cnp.PyArray_SIZE(w) if w is not None else 1
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _pointwise_loss(op, f32(x), f32(y), f32(w), n, c, param)
        else:
            loss = _pointwise_loss(op, f64(x), f64(y), f64(w), n, c, param)
    return loss / n if size_average else loss


cdef double _pointwise_loss(int op, const floating *x, const floating *y, const floating *w,
                            Py_ssize_t n, Py_ssize_t c, double param) noexcept nogil:
    cdef double s = 0, d, a, xi, yi, term
    cdef Py_ssize_t i
    for i in range(n):
        xi = x[i]
        yi = y[i]
        if op == MSE:
            d = xi - yi
            term = d * d
        elif op == ABS:
            term = fabs(xi - yi)
        elif op == SMOOTH_L1:
            d = xi - yi
            a = fabs(d)
            term = 0.5 * d * d if a < 1 else a - 0.5  # NaN: a - 0.5
        elif op == BCE:
            term = -(yi * log(xi + BCE_EPS) + (1 - yi) * log(1 - xi + BCE_EPS))
        elif op == MARGIN:
            d = param - xi * yi
            term = 0 if d <= 0 else d
        elif op == MARGIN_SQ:
            d = param - xi * yi
            term = 0 if d <= 0 else d * d
        elif op == SOFT_MARGIN:
            # max(x, 0) - x y + log(1 + exp(-|x|)): no overflow for any x
            term = (xi if xi > 0 else 0) - xi * yi + log1p(exp(-fabs(xi)))
        else:  # DIST_KL: nothing where y = 0 (x may be -inf there), unless x or y is NaN
            if yi > 0:
                term = yi * (log(yi) - xi)
            else:
                term = xi + yi if isnan(xi) or isnan(yi) else 0
        if w != NULL:
            term *= w[i % c]
        s += term
    return s


def pointwise_update_grad_input(int op, input, target, grad_input, weights, double param,
                                bint size_average):
    """grad_input := d loss / d input of pointwise_update_output, same shape as input."""
    _op(op)
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t n = _pair(x, y)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", y, "target")
    cdef cnp.ndarray w = _trailing_weights(weights, t, x)
    cdef Py_ssize_t c = cnp.PyArray_SIZE(w) if w is not None else 1
    cdef double scale = 1.0 / n if size_average and n > 0 else 1.0
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _pointwise_grad(op, f32(x), f32(y), f32(g), f32(w), n, c, param, scale)
        else:
            _pointwise_grad(op, f64(x), f64(y), f64(g), f64(w), n, c, param, scale)


cdef void _pointwise_grad(int op, const floating *x, const floating *y, floating *g,
                          const floating *w, Py_ssize_t n, Py_ssize_t c, double param,
                          double scale) noexcept nogil:
    cdef double d, xi, yi, v
    cdef Py_ssize_t i
    for i in range(n):
        xi = x[i]
        yi = y[i]
        if op == MSE:
            v = 2 * (xi - yi)
        elif op == ABS:
            d = xi - yi
            v = 1 if d > 0 else (-1 if d < 0 else 0)
        elif op == SMOOTH_L1:
            d = xi - yi
            v = 1 if d >= 1 else (-1 if d <= -1 else d)  # NaN: d
        elif op == BCE:
            v = -(yi - xi) / ((1 - xi + BCE_EPS) * (xi + BCE_EPS))
        elif op == MARGIN:
            v = -yi if param - xi * yi > 0 else 0
        elif op == MARGIN_SQ:
            d = param - xi * yi
            v = -2 * yi * d if d > 0 else 0
        elif op == SOFT_MARGIN:
            # sigmoid(x) - y, sigmoid evaluated on the side that cannot overflow
            if xi >= 0:
                v = 1 / (1 + exp(-xi)) - yi
            else:
                d = exp(xi)
                v = d / (1 + d) - yi
        else:  # DIST_KL
            v = 0 if yi <= 0 else -yi
        if w != NULL:
            v *= w[i % c]
        g[i] = <floating> (v * scale)


# -- class targets ------------------------------------------------------------------------

cdef int _classes(cnp.ndarray x, object target, int64_t ignore_index,
                  cnp.npy_intp *n, cnp.npy_intp *k) except -1:
    """Rows and classes of input (k,) or (n, k); target (n,) of int64 labels in [0, k)."""
    cdef int nd = ndim(x, "input", 1, 2)
    k[0] = cnp.PyArray_DIMS(x)[nd - 1]
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    if not cnp.PyArray_Check(target) or cnp.PyArray_TYPE(<cnp.ndarray> target) != cnp.NPY_INT64:
        raise TypeError("target must be an int64 numpy.ndarray of class labels")
    cdef cnp.ndarray tg = <cnp.ndarray> target
    if not cnp.PyArray_IS_C_CONTIGUOUS(tg):
        raise ValueError("target is not C-contiguous")
    if cnp.PyArray_SIZE(tg) != n[0] or cnp.PyArray_NDIM(tg) > 1:
        raise ValueError(f"target has shape {shape(tg)}, expected {(n[0],)} "
                         f"(one class label per row of input {shape(x)})")
    cdef const int64_t *lab = <const int64_t *> cnp.PyArray_DATA(tg)
    cdef cnp.npy_intp i
    for i in range(n[0]):
        if (lab[i] < 0 or lab[i] >= k[0]) and lab[i] != ignore_index:
            raise ValueError(f"target {lab[i]} (row {i}) is out of range [0, {k[0]})")
    return 0


cdef inline cnp.ndarray _class_output(object out, str out_what, cnp.ndarray x, str x_what,
                                      object target, int64_t ignore_index, cnp.npy_intp *n,
                                      cnp.npy_intp *k):
    """An array a class loss writes, shaped like its input ``x`` (checked with the target by
    _classes) and sharing no memory with it."""
    cdef cnp.ndarray a = array(out, out_what, cnp.PyArray_TYPE(x), True)
    _classes(x, target, ignore_index, n, k)
    shape_is(a, out_what, shape(x))
    disjoint(a, out_what, x, x_what)
    return a


def class_nll_update_output(input, target, weights, int64_t ignore_index, bint size_average,
                            bint log_prob_as_input):
    """-sum_i w[t_i] * input[i, t_i] (log-probabilities; -log of clamped probabilities
    otherwise), divided by sum_i w[t_i] if averaged. Rows labelled ``ignore_index`` count
    for nothing. (n, k), (n,) -> float; (k,), (1,) -> float.
    """
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k
    _classes(x, target, ignore_index, &n, &k)
    cdef cnp.ndarray w = _weights(weights, t, x)
    cdef double loss, total
    cdef const int64_t *lab = _labels(target)
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _nll(f32(x), lab, f32(w), n, k, ignore_index, log_prob_as_input, &total)
        else:
            loss = _nll(f64(x), lab, f64(w), n, k, ignore_index, log_prob_as_input, &total)
    return _average(loss, total, size_average)


cdef inline const int64_t *_labels(object target) noexcept:
    """The labels of a target _classes checked."""
    return <const int64_t *> cnp.PyArray_DATA(<cnp.ndarray> target)


cdef inline double _average(double loss, double total, bint size_average) noexcept:
    """A summed class loss, divided by the total weight of its rows if averaged."""
    if size_average:
        return loss / total if total > 0 else 0.0
    return loss


cdef inline double _clamp(double p) noexcept nogil:
    return PROB_LO if p < PROB_LO else (PROB_HI if p > PROB_HI else p)


cdef double _nll(const floating *x, const int64_t *lab, const floating *w, cnp.npy_intp n,
                 cnp.npy_intp k, int64_t ignore, bint log_prob, double *total) noexcept nogil:
    cdef double s = 0, wi, v
    cdef cnp.npy_intp i
    total[0] = 0
    for i in range(n):
        if lab[i] == ignore:
            continue
        wi = w[lab[i]] if w != NULL else 1.0
        v = x[i * k + lab[i]]
        s -= wi * (v if log_prob else log(_clamp(v)))
        total[0] += wi
    return s


def class_nll_update_grad_input(input, target, grad_input, weights, int64_t ignore_index,
                                bint size_average, bint log_prob_as_input):
    """grad_input := d class_nll_update_output / d input (zero off the target classes)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k
    cdef cnp.ndarray g = _class_output(grad_input, "gradInput", x, "input", target,
                                       ignore_index, &n, &k)
    cdef cnp.ndarray w = _weights(weights, t, x)
    cdef const int64_t *lab = _labels(target)
    if n == 0 or k == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _nll_grad(f32(x), lab, f32(g), f32(w), n, k, ignore_index, size_average,
                      log_prob_as_input)
        else:
            _nll_grad(f64(x), lab, f64(g), f64(w), n, k, ignore_index, size_average,
                      log_prob_as_input)


cdef double _norm(const int64_t *lab, const floating *w, cnp.npy_intp n, int64_t ignore,
                  bint size_average) noexcept nogil:
    """The divisor of an averaged class loss: the total weight of the labelled rows."""
    cdef double total = 0
    cdef cnp.npy_intp i
    if not size_average:
        return 1.0
    for i in range(n):
        if lab[i] != ignore:
            total += w[lab[i]] if w != NULL else 1.0
    return total if total > 0 else 1.0


cdef void _nll_grad(const floating *x, const int64_t *lab, floating *g, const floating *w,
                    cnp.npy_intp n, cnp.npy_intp k, int64_t ignore, bint size_average,
                    bint log_prob) noexcept nogil:
    cdef double norm = _norm(lab, w, n, ignore, size_average), wi, v
    cdef cnp.npy_intp i
    memset(g, 0, <size_t> (n * k) * sizeof(floating))
    for i in range(n):
        if lab[i] == ignore:
            continue
        wi = (w[lab[i]] if w != NULL else 1.0) / norm
        if log_prob:
            g[i * k + lab[i]] = <floating> -wi
        else:
            v = x[i * k + lab[i]]
            # zero where the clamp holds the probability, NaN for NaN (1 / p, as log p)
            g[i * k + lab[i]] = <floating> (0 if v < PROB_LO or v > PROB_HI else -wi / v)


def cross_entropy_update_output(input, target, log_prob, weights, int64_t ignore_index,
                                bint size_average):
    """log_prob := log_softmax(input) by rows; return its class NLL (class_nll_update_output)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k
    cdef cnp.ndarray lp = _class_output(log_prob, "logProb", x, "input", target, ignore_index,
                                        &n, &k)
    cdef cnp.ndarray w = _weights(weights, t, x)
    cdef const int64_t *lab = _labels(target)
    cdef double loss, total
    if n == 0:
        return 0.0
    if k == 0:
        raise ValueError("input has 0 classes")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _cross_entropy(f32(x), f32(lp), lab, f32(w), n, k, ignore_index, &total)
        else:
            loss = _cross_entropy(f64(x), f64(lp), lab, f64(w), n, k, ignore_index, &total)
    return _average(loss, total, size_average)


cdef double _cross_entropy(const floating *x, floating *lp, const int64_t *lab,
                           const floating *w, cnp.npy_intp n, cnp.npy_intp k, int64_t ignore,
                           double *total) noexcept nogil:
    _log_softmax(x, lp, n, k)
    return _nll(lp, lab, w, n, k, ignore, True, total)


cdef void _log_softmax(const floating *x, floating *y, cnp.npy_intp n,
                       cnp.npy_intp k) noexcept nogil:
    cdef cnp.npy_intp i, j
    cdef double mx, s, lse
    for i in range(n):
        mx = x[i * k]
        for j in range(1, k):
            if x[i * k + j] > mx:
                mx = x[i * k + j]
        s = 0
        for j in range(k):
            s += exp(x[i * k + j] - mx)
        lse = mx + log(s)
        for j in range(k):
            y[i * k + j] = <floating> (x[i * k + j] - lse)


def cross_entropy_update_grad_input(log_prob, target, grad_input, weights, int64_t ignore_index,
                                    bint size_average):
    """grad_input := w[t_i] (softmax(input_i) - onehot(t_i)) / norm, from the log_prob of
    cross_entropy_update_output."""
    cdef int t = float_type(log_prob, "logProb")
    cdef cnp.ndarray lp = array(log_prob, "logProb", t, False)
    cdef cnp.npy_intp n, k
    cdef cnp.ndarray g = _class_output(grad_input, "gradInput", lp, "logProb", target,
                                       ignore_index, &n, &k)
    cdef cnp.ndarray w = _weights(weights, t, lp)
    cdef const int64_t *lab = _labels(target)
    if n == 0 or k == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cross_entropy_grad(f32(lp), lab, f32(g), f32(w), n, k, ignore_index, size_average)
        else:
            _cross_entropy_grad(f64(lp), lab, f64(g), f64(w), n, k, ignore_index, size_average)


cdef void _cross_entropy_grad(const floating *lp, const int64_t *lab, floating *g,
                              const floating *w, cnp.npy_intp n, cnp.npy_intp k,
                              int64_t ignore, bint size_average) noexcept nogil:
    cdef double norm = _norm(lab, w, n, ignore, size_average), wi
    cdef cnp.npy_intp i, j
    for i in range(n):
        if lab[i] == ignore:
            memset(g + i * k, 0, <size_t> k * sizeof(floating))
            continue
        wi = (w[lab[i]] if w != NULL else 1.0) / norm
        for j in range(k):
            g[i * k + j] = <floating> (wi * exp(lp[i * k + j]))
        g[i * k + lab[i]] -= <floating> wi


# -- Gaussian KL divergence (variational auto-encoders) -----------------------------------

cdef cnp.npy_intp _kld_rows(cnp.ndarray mean, cnp.ndarray log_var) except -1:
    ndim(mean, "mean", 1, 2)
    if shape(mean) != shape(log_var):
        raise ValueError(f"logVar has shape {shape(log_var)}, expected the mean's {shape(mean)}")
    return 1 if cnp.PyArray_NDIM(mean) == 1 else cnp.PyArray_DIMS(mean)[0]


def kld_update_output(mean, log_var, bint size_average):
    """0.5 * sum(exp(logVar) + mean^2 - 1 - logVar), divided by the batch if averaged."""
    cdef int t = float_type(mean, "mean")
    cdef cnp.ndarray mu = array(mean, "mean", t, False)
    cdef cnp.ndarray lv = array(log_var, "logVar", t, False)
    cdef cnp.npy_intp rows = _kld_rows(mu, lv), n = cnp.PyArray_SIZE(mu)
    cdef double s
    with nogil:
        if t == cnp.NPY_FLOAT32:
            s = _kld(f32(mu), f32(lv), n)
        else:
            s = _kld(f64(mu), f64(lv), n)
    return 0.5 * s / (rows if size_average and rows > 0 else 1)


cdef double _kld(const floating *mu, const floating *lv, cnp.npy_intp n) noexcept nogil:
    cdef double s = 0
    cdef cnp.npy_intp i
    for i in range(n):
        s += exp(lv[i]) + <double> mu[i] * mu[i] - 1 - lv[i]
    return s


def kld_update_grad_input(mean, log_var, grad_mean, grad_log_var, bint size_average):
    """grad_mean := mean / b; grad_log_var := 0.5 (exp(logVar) - 1) / b (b: batch if averaged)."""
    cdef int t = float_type(mean, "mean")
    cdef cnp.ndarray mu = array(mean, "mean", t, False)
    cdef cnp.ndarray lv = array(log_var, "logVar", t, False)
    cdef cnp.ndarray gm = array(grad_mean, "gradMean", t, True)
    cdef cnp.ndarray gl = array(grad_log_var, "gradLogVar", t, True)
    cdef cnp.npy_intp rows = _kld_rows(mu, lv), n = cnp.PyArray_SIZE(mu)
    shape_is(gm, "gradMean", shape(mu))
    shape_is(gl, "gradLogVar", shape(mu))
    disjoint_from(gm, "gradMean", mu, "mean", lv, "logVar")
    disjoint_from(gl, "gradLogVar", mu, "mean", lv, "logVar")
    disjoint(gm, "gradMean", gl, "gradLogVar")
    cdef double b = rows if size_average and rows > 0 else 1
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _kld_grad(f32(mu), f32(lv), f32(gm), f32(gl), n, b)
        else:
            _kld_grad(f64(mu), f64(lv), f64(gm), f64(gl), n, b)


cdef void _kld_grad(const floating *mu, const floating *lv, floating *gm, floating *gl,
                    cnp.npy_intp n, double b) noexcept nogil:
    cdef cnp.npy_intp i
    for i in range(n):
        gm[i] = <floating> (mu[i] / b)
        gl[i] = <floating> (0.5 * (exp(lv[i]) - 1) / b)


# -- cosine embedding ---------------------------------------------------------------------

cdef double COS_EPS = 1e-12


cdef int _cosine_args(cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray y,
                      cnp.npy_intp *n, int *k) except -1:
    cdef int nd = ndim(x1, "input[0]", 1, 2)
    if shape(x1) != shape(x2):
        raise ValueError(f"input[1] has shape {shape(x2)}, expected input[0]'s {shape(x1)}")
    k[0] = dim(x1, nd - 1)
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x1)[0]
    if cnp.PyArray_NDIM(y) > 1 or cnp.PyArray_SIZE(y) != n[0]:
        raise ValueError(f"target has shape {shape(y)}, expected {(n[0],)} (one +1/-1 per row)")
    return 0


def cosine_embedding_update_output(input1, input2, target, double margin, bint size_average):
    """sum_i (1 - cos_i if y_i = 1 else max(0, cos_i - margin)), divided by n if averaged."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n
    cdef int k
    _cosine_args(x1, x2, y, &n, &k)
    cdef double loss
    if n == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _cosine(f32(x1), f32(x2), f32(y), NULL, NULL, n, k, margin, 1.0)
        else:
            loss = _cosine(f64(x1), f64(x2), f64(y), NULL, NULL, n, k, margin, 1.0)
    return loss / n if size_average else loss


def cosine_embedding_update_grad_input(input1, input2, target, grad_input1, grad_input2,
                                       double margin, bint size_average):
    """grad_input1, grad_input2 := d cosine_embedding_update_output / d input1, input2."""
    cdef int t = float_type(input1, "input[0]")
    cdef cnp.ndarray x1 = array(input1, "input[0]", t, False)
    cdef cnp.ndarray x2 = array(input2, "input[1]", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput[0]", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput[1]", t, True)
    cdef cnp.npy_intp n
    cdef int k
    _cosine_args(x1, x2, y, &n, &k)
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
            _cosine(f32(x1), f32(x2), f32(y), f32(g1), f32(g2), n, k, margin, scale)
        else:
            _cosine(f64(x1), f64(x2), f64(y), f64(g1), f64(g2), n, k, margin, scale)


cdef double _cosine(const floating *x1, const floating *x2, const floating *y,
                    floating *g1, floating *g2, cnp.npy_intp n, int k, double margin,
                    double scale) noexcept nogil:
    """The summed loss; with g1, g2 also its gradient times ``scale``."""
    cdef double s = 0, d12, d11, d22, cos, c1, cg
    cdef cnp.npy_intp i
    cdef int j
    cdef const floating *a
    cdef const floating *b
    for i in range(n):
        a = x1 + i * k
        b = x2 + i * k
        if k > 0:
            d12 = dot(k, a, 1, b, 1)
            d11 = dot(k, a, 1, a, 1) + COS_EPS
            d22 = dot(k, b, 1, b, 1) + COS_EPS
        else:
            d12, d11, d22 = 0, COS_EPS, COS_EPS
        cos = d12 / sqrt(d11 * d22)
        # cg: d loss / d cos
        if y[i] > 0:
            s += 1 - cos
            cg = -1
        elif cos <= margin:
            cg = 0
        else:  # cos > margin, or NaN
            s += cos - margin
            cg = 1
        if g1 == NULL:
            continue
        cg *= scale
        c1 = cg / sqrt(d11 * d22)
        for j in range(k):
            g1[i * k + j] = <floating> (c1 * b[j] - cg * cos / d11 * a[j])
            g2[i * k + j] = <floating> (c1 * a[j] - cg * cos / d22 * b[j])
    return s
