"""Kernels of the class criteria of the second catalogue: the multi-class and multi-label
margin losses, the softmax loss over an axis with inner positions (Caffe's SoftmaxWithLoss),
and the cross-entropy of scores against a distribution (one-hot) target.

Labels are 0-based int64; a label equal to the padding value counts for nothing (no loss,
no share of a VALID divisor, a zero gradient), any other label outside [0, classes) is
refused naming it and its position. Losses are summed in double; NaN is never hidden (a
hinge term is ``0 if z <= 0 else z``), and the hinge gradients are PyTorch's (they flow
where z > 0).
"""

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memset

from engine.blas cimport floating
from engine._check cimport float_type, array, f32, f64, ndim, shape, shape_is, disjoint_from
from engine.vecmath cimport pm_softmax_fwd

cnp.import_array()

# Divisors of softmax_with_update_output (Caffe's normalisation modes).
cpdef enum:
    FULL = 0        # every position, ignored or not
    VALID = 1       # the positions not ignored
    BATCH_SIZE = 2  # the first axis
    NONE = 3        # 1
    _N_MODES = 4

cdef int64_t _NO_LABEL = 0


cdef const int64_t *_labels(object target, str what, cnp.npy_intp count) except NULL:
    """The data of ``target``, an int64 C-contiguous array of ``count`` labels."""
    if not cnp.PyArray_Check(target) or cnp.PyArray_TYPE(<cnp.ndarray> target) != cnp.NPY_INT64:
        raise TypeError(f"{what} must be an int64 numpy.ndarray of class labels")
    cdef cnp.ndarray tg = <cnp.ndarray> target
    if not cnp.PyArray_IS_C_CONTIGUOUS(tg):
        raise ValueError(f"{what} is not C-contiguous")
    if cnp.PyArray_SIZE(tg) != count:
        raise ValueError(f"{what} has shape {shape(tg)}, expected {count} class labels")
    cdef const int64_t *lab = <const int64_t *> cnp.PyArray_DATA(tg)
    # a valid pointer even for no labels (NULL is the error value)
    return lab if count else <const int64_t *> &_NO_LABEL


cdef int _in_range(const int64_t *lab, cnp.npy_intp n, cnp.npy_intp k, int64_t padding,
                   cnp.npy_intp inner) except -1:
    """Every label is in [0, k) or is ``padding``; position i is row i // inner."""
    cdef cnp.npy_intp i
    for i in range(n):
        if (lab[i] < 0 or lab[i] >= k) and lab[i] != padding:
            where = f"row {i}" if inner == 1 else f"row {i // inner}, position {i % inner}"
            raise ValueError(f"target {lab[i]} ({where}) is out of range [0, {k})")
    return 0


# -- multi-class margin ---------------------------------------------------------------------

cdef cnp.ndarray _multi_margin_args(cnp.ndarray x, object target, object weights, int p,
                                    int t, int64_t padding, cnp.npy_intp *n,
                                    cnp.npy_intp *k, const int64_t **lab):
    """Checks the arguments; returns the weights (None when unweighted)."""
    cdef int nd = ndim(x, "input", 1, 2)
    k[0] = cnp.PyArray_DIMS(x)[nd - 1]
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    if p != 1 and p != 2:
        raise ValueError(f"p is {p}, expected 1 or 2")
    if cnp.PyArray_Check(target) and cnp.PyArray_NDIM(<cnp.ndarray> target) > 1:
        raise ValueError(f"target has shape {shape(<cnp.ndarray> target)}, expected "
                         f"{(n[0],)} (one class label per row of input {shape(x)})")
    lab[0] = _labels(target, "target", n[0])
    _in_range(lab[0], n[0], k[0], padding, 1)
    if weights is None:
        return None
    cdef cnp.ndarray w = array(weights, "weights", t, False)
    if shape(w) != (k[0],):
        raise ValueError(f"weights has shape {shape(w)}, expected {(k[0],)} (one per class)")
    return w


def multi_margin_update_output(input, target, weights, int p, double margin, int64_t padding,
                               bint size_average):
    """sum over rows i, classes d != y_i of w[y_i] max(0, margin - x[i, y_i] + x[i, d])^p,
    divided by the classes, and by the rows not padded if averaged. (n, k), (n,) or (k,),
    (1,) -> float."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k, counted
    cdef const int64_t *lab
    cdef cnp.ndarray w = _multi_margin_args(x, target, weights, p, t, padding, &n, &k, &lab)
    cdef double loss
    if n == 0 or k == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _multi_margin(f32(x), lab, f32(w), NULL, n, k, p, margin, padding, 0,
                                 &counted)
        else:
            loss = _multi_margin(f64(x), lab, f64(w), NULL, n, k, p, margin, padding, 0,
                                 &counted)
    loss /= k
    if size_average:
        return loss / counted if counted else 0.0
    return loss


def multi_margin_update_grad_input(input, target, grad_input, weights, int p, double margin,
                                   int64_t padding, bint size_average):
    """grad_input := d multi_margin_update_output / d input (zero rows where padded)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k, counted = 0, i
    cdef const int64_t *lab
    cdef cnp.ndarray w = _multi_margin_args(x, target, weights, p, t, padding, &n, &k, &lab)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", w, "weights", target, "target")
    if n == 0 or k == 0:
        return
    for i in range(n):
        counted += lab[i] != padding
    cdef double scale = 1.0 / k / (counted if size_average and counted else 1)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _multi_margin(f32(x), lab, f32(w), f32(g), n, k, p, margin, padding, scale,
                          &counted)
        else:
            _multi_margin(f64(x), lab, f64(w), f64(g), n, k, p, margin, padding, scale,
                          &counted)


cdef double _multi_margin(const floating *x, const int64_t *lab, const floating *w,
                          floating *g, cnp.npy_intp n, cnp.npy_intp k, int p, double margin,
                          int64_t padding, double scale, cnp.npy_intp *counted) noexcept nogil:
    """The summed loss (not yet divided); with g also its gradient times ``scale``."""
    cdef double s = 0, z, h, wy, gy
    cdef cnp.npy_intp i, d
    cdef int64_t y
    cdef const floating *row
    counted[0] = 0
    for i in range(n):
        y = lab[i]
        if g != NULL:
            memset(g + i * k, 0, <size_t> k * sizeof(floating))
        if y == padding:
            continue
        counted[0] += 1
        row = x + i * k
        wy = w[y] if w != NULL else 1.0
        gy = 0
        for d in range(k):
            if d == y:
                continue
            z = margin - row[y] + row[d]
            if g == NULL:
                s += wy * (0 if z <= 0 else (z if p == 1 else z * z))
            elif z > 0:
                h = wy * scale * (1 if p == 1 else 2 * z)
                g[i * k + d] = <floating> h
                gy -= h
        if g != NULL:
            g[i * k + y] = <floating> gy
    return s


# -- multi-label margin ---------------------------------------------------------------------

cdef cnp.ndarray _multi_label_args(cnp.ndarray x, object target, object is_target, int t,
                                   cnp.npy_intp *n, cnp.npy_intp *k, const int64_t **lab):
    """Checks the arguments; returns the scratch flags (k,)."""
    cdef int nd = ndim(x, "input", 1, 2)
    k[0] = cnp.PyArray_DIMS(x)[nd - 1]
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    if cnp.PyArray_Check(target) and shape(<cnp.ndarray> target) != shape(x):
        raise ValueError(f"target has shape {shape(<cnp.ndarray> target)}, expected the "
                         f"input's {shape(x)} (each row: class labels, then -1s)")
    lab[0] = _labels(target, "target", n[0] * k[0])
    cdef cnp.npy_intp i
    for i in range(n[0] * k[0]):
        if lab[0][i] < -1 or lab[0][i] >= k[0]:
            raise ValueError(f"target {lab[0][i]} (row {i // k[0]}, position {i % k[0]}) is "
                             f"out of range [-1, {k[0]})")
    cdef cnp.ndarray flags = array(is_target, "isTarget", t, True)
    shape_is(flags, "isTarget", (k[0],))
    disjoint_from(flags, "isTarget", x, "input", target, "target")
    return flags


def multi_label_margin_update_output(input, target, is_target, bint size_average):
    """sum over rows i, labels j of row i (those before its first -1), classes d not among
    them of max(0, 1 - x[i, j] + x[i, d]), divided by the classes, and by the rows if
    averaged. ``is_target`` (k,) of input's dtype is scratch. (n, k), (n, k) -> float."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k
    cdef const int64_t *lab
    cdef cnp.ndarray flags = _multi_label_args(x, target, is_target, t, &n, &k, &lab)
    cdef double loss
    if n == 0 or k == 0:
        return 0.0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            loss = _multi_label(f32(x), lab, f32(flags), NULL, n, k, 0)
        else:
            loss = _multi_label(f64(x), lab, f64(flags), NULL, n, k, 0)
    return loss / k / (n if size_average else 1)


def multi_label_margin_update_grad_input(input, target, grad_input, is_target,
                                         bint size_average):
    """grad_input := d multi_label_margin_update_output / d input."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp n, k
    cdef const int64_t *lab
    cdef cnp.ndarray flags = _multi_label_args(x, target, is_target, t, &n, &k, &lab)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", target, "target", flags, "isTarget")
    if n == 0 or k == 0:
        return
    cdef double scale = 1.0 / k / (n if size_average else 1)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _multi_label(f32(x), lab, f32(flags), f32(g), n, k, scale)
        else:
            _multi_label(f64(x), lab, f64(flags), f64(g), n, k, scale)


cdef double _multi_label(const floating *x, const int64_t *lab, floating *flags, floating *g,
                         cnp.npy_intp n, cnp.npy_intp k, double scale) noexcept nogil:
    """The summed loss (not yet divided); with g also its gradient times ``scale``."""
    cdef double s = 0, z
    cdef cnp.npy_intp i, j, d, y
    cdef const floating *row
    cdef const int64_t *labels
    for i in range(n):
        row = x + i * k
        labels = lab + i * k
        memset(flags, 0, <size_t> k * sizeof(floating))
        if g != NULL:
            memset(g + i * k, 0, <size_t> k * sizeof(floating))
        for j in range(k):
            if labels[j] < 0:
                break
            flags[labels[j]] = 1
        for j in range(k):
            y = labels[j]
            if y < 0:
                break
            for d in range(k):
                if flags[d] != 0:
                    continue
                z = 1 - row[y] + row[d]
                if g == NULL:
                    s += 0 if z <= 0 else z
                elif z > 0:
                    g[i * k + y] -= <floating> scale
                    g[i * k + d] += <floating> scale
    return s


# -- softmax over an axis with inner positions ----------------------------------------------

cdef int _softmax_args(cnp.ndarray x, object target, int64_t ignore, int mode,
                       cnp.npy_intp *outer, cnp.npy_intp *c, cnp.npy_intp *inner,
                       const int64_t **lab) except -1:
    """(outer, classes, inner) of an input (n, c, d1, ...): labels (n, d1, ...)."""
    cdef int nd = cnp.PyArray_NDIM(x), i
    if nd < 2:
        raise ValueError(f"input must be at least 2-D (batch, classes, ...), got {nd}-D "
                         f"(shape {shape(x)})")
    if mode < 0 or mode >= _N_MODES:
        raise ValueError(f"unknown normalize mode {mode}")
    outer[0] = cnp.PyArray_DIMS(x)[0]
    c[0] = cnp.PyArray_DIMS(x)[1]
    inner[0] = 1
    for i in range(2, nd):
        inner[0] *= cnp.PyArray_DIMS(x)[i]
    cdef tuple want = (outer[0],) + shape(x)[2:]
    if cnp.PyArray_Check(target) and cnp.PyArray_SIZE(<cnp.ndarray> target) != \
            outer[0] * inner[0]:
        raise ValueError(f"target has shape {shape(<cnp.ndarray> target)}, expected {want} "
                         f"(one class label per position of input {shape(x)})")
    lab[0] = _labels(target, "target", outer[0] * inner[0])
    _in_range(lab[0], outer[0] * inner[0], c[0], ignore, inner[0])
    return 0


cdef double _normalizer(int mode, cnp.npy_intp outer, cnp.npy_intp inner,
                        cnp.npy_intp valid) noexcept:
    cdef double v
    if mode == FULL:
        v = outer * inner
    elif mode == VALID:
        v = valid
    elif mode == BATCH_SIZE:
        v = outer
    else:
        v = 1
    return v if v > 1 else 1


def softmax_with_update_output(input, target, log_prob, int64_t ignore_label,
                               int normalize_mode):
    """log_prob := log softmax(input) along axis 1; return -sum over positions (i, j) of
    log_prob[i, label, j], labels equal to ``ignore_label`` skipped, divided by max(1, the
    normalize_mode count)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp outer, c, inner, valid = 0
    cdef const int64_t *lab
    _softmax_args(x, target, ignore_label, normalize_mode, &outer, &c, &inner, &lab)
    cdef cnp.ndarray lp = array(log_prob, "logProb", t, True)
    shape_is(lp, "logProb", shape(x))
    disjoint_from(lp, "logProb", x, "input", target, "target")
    cdef double loss = 0
    with nogil:
        if outer * inner > 0 and c > 0:
            pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(lp),
                           outer, c, inner, 1, True)
        if t == cnp.NPY_FLOAT32:
            loss = _picked(f32(lp), lab, outer, c, inner, ignore_label, &valid)
        else:
            loss = _picked(f64(lp), lab, outer, c, inner, ignore_label, &valid)
    return loss / _normalizer(normalize_mode, outer, inner, valid)


cdef double _picked(const floating *lp, const int64_t *lab, cnp.npy_intp outer,
                    cnp.npy_intp c, cnp.npy_intp inner, int64_t ignore,
                    cnp.npy_intp *valid) noexcept nogil:
    """-sum of the log-probabilities of the labels not ignored; ``valid`` counts them."""
    cdef double s = 0
    cdef cnp.npy_intp i, j
    cdef int64_t y
    valid[0] = 0
    for i in range(outer):
        for j in range(inner):
            y = lab[i * inner + j]
            if y != ignore:
                valid[0] += 1
                s -= lp[(i * c + y) * inner + j]
    return s


def softmax_with_update_grad_input(input, target, grad_input, int64_t ignore_label,
                                   int normalize_mode):
    """grad_input := (softmax(input) - onehot(label)) / normalizer, zero at ignored
    positions."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.npy_intp outer, c, inner, valid = 0, i
    cdef const int64_t *lab
    _softmax_args(x, target, ignore_label, normalize_mode, &outer, &c, &inner, &lab)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", target, "target")
    for i in range(outer * inner):
        valid += lab[i] != ignore_label
    cdef double scale = 1.0 / _normalizer(normalize_mode, outer, inner, valid)
    if outer * inner == 0 or c == 0:
        return
    with nogil:
        pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(g), outer,
                       c, inner, 1, False)
        if t == cnp.NPY_FLOAT32:
            _minus_onehot(f32(g), lab, outer, c, inner, ignore_label, scale)
        else:
            _minus_onehot(f64(g), lab, outer, c, inner, ignore_label, scale)


cdef void _minus_onehot(floating *g, const int64_t *lab, cnp.npy_intp outer, cnp.npy_intp c,
                        cnp.npy_intp inner, int64_t ignore, double scale) noexcept nogil:
    """g := (g - onehot(label)) * scale along axis 1, zero where the label is ignored."""
    cdef cnp.npy_intp i, j, m, n = outer * c * inner
    cdef int64_t y
    cdef floating s = <floating> scale
    for i in range(outer):
        for j in range(inner):
            y = lab[i * inner + j]
            if y == ignore:
                for m in range(c):
                    g[(i * c + m) * inner + j] = 0
            else:
                g[(i * c + y) * inner + j] -= 1
    for i in range(n):
        g[i] *= s


# -- cross-entropy against a distribution ---------------------------------------------------

cdef int _distribution_args(cnp.ndarray x, cnp.ndarray y, cnp.npy_intp *n,
                            cnp.npy_intp *k) except -1:
    cdef int nd = ndim(x, "input", 1, 2)
    if shape(y) != shape(x):
        raise ValueError(f"target has shape {shape(y)}, expected the input's {shape(x)} "
                         f"(one-hot rows)")
    k[0] = cnp.PyArray_DIMS(x)[nd - 1]
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    return 0


def categorical_cross_entropy_update_output(input, target, log_prob):
    """log_prob := log softmax(input) by rows; return -sum_ij target[i, j] log_prob[i, j]
    / rows. (n, k), (n, k) -> float."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n, k
    _distribution_args(x, y, &n, &k)
    cdef cnp.ndarray lp = array(log_prob, "logProb", t, True)
    shape_is(lp, "logProb", shape(x))
    disjoint_from(lp, "logProb", x, "input", y, "target")
    cdef double loss
    if n == 0 or k == 0:
        return 0.0
    with nogil:
        pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(lp), n, k,
                       1, 1, True)
        if t == cnp.NPY_FLOAT32:
            loss = _weighted_sum(f32(y), f32(lp), n * k)
        else:
            loss = _weighted_sum(f64(y), f64(lp), n * k)
    return -loss / n


cdef double _weighted_sum(const floating *w, const floating *v, cnp.npy_intp n) noexcept nogil:
    cdef double s = 0
    cdef cnp.npy_intp i
    for i in range(n):
        s += <double> w[i] * v[i]
    return s


def categorical_cross_entropy_update_grad_input(input, target, grad_input):
    """grad_input := (softmax(input_i) sum_j target[i, j] - target_i) / rows."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(target, "target", t, False)
    cdef cnp.npy_intp n, k
    _distribution_args(x, y, &n, &k)
    cdef cnp.ndarray g = array(grad_input, "gradInput", t, True)
    shape_is(g, "gradInput", shape(x))
    disjoint_from(g, "gradInput", x, "input", y, "target")
    if n == 0 or k == 0:
        return
    with nogil:
        pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(g), n, k, 1,
                       1, False)
        if t == cnp.NPY_FLOAT32:
            _softmax_minus_target(f32(y), f32(g), n, k, 1.0 / n)
        else:
            _softmax_minus_target(f64(y), f64(g), n, k, 1.0 / n)


cdef void _softmax_minus_target(const floating *y, floating *g, cnp.npy_intp n, cnp.npy_intp k,
                                double scale) noexcept nogil:
    """g_i := scale * (g_i sum(y_i) - y_i) for each row i of softmax probabilities g."""
    cdef double total
    cdef floating a, b
    cdef cnp.npy_intp i, j
    cdef const floating *t
    cdef floating *r
    for i in range(n):
        t = y + i * k
        r = g + i * k
        total = 0
        for j in range(k):
            total += t[j]
        a = <floating> (scale * total)
        b = <floating> scale
        for j in range(k):
            r[j] = a * r[j] - b * t[j]
