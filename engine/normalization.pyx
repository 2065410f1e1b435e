"""Kernels of BatchNormalization, SpatialBatchNormalization, Normalize and SpatialCrossMapLRN.

Every input is seen as (outer, channels, inner): the statistic of a channel runs over outer
and inner. Sums accumulate in double whatever the dtype. The batch-normalisation and LRN loops
are in vecmath.h (vectorised partial sums; features run a block of channels along each row;
LRN slides its window over a block of neighbouring positions at once).
"""

cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.math cimport sqrt, pow, fabs

from engine.blas cimport floating
from engine._check cimport (
    shape, float_type, array, f32, f64, ndim, int_limit, vector_of, shape_is, disjoint,
    disjoint_from,
)
from engine.vecmath cimport pm_bn_fwd, pm_bn_bwd, pm_bn_acc, pm_lrn_fwd, pm_lrn_bwd

cnp.import_array()

#: BatchNormalization layouts: features (n, c) or (c,); images (n, c, h, w) or (c, h, w) in
#: NCHW or NHWC.
FEATURES, NCHW, NHWC = 0, 1, 2


cdef int _bn_layout(cnp.ndarray x, int layout, bint train, Py_ssize_t c_expected,
                    Py_ssize_t *outer, Py_ssize_t *ch, Py_ssize_t *inner) except -1:
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef int nd
    if layout == FEATURES:
        nd = ndim(x, "input", 1, 2)
        if train and nd != 2:
            raise ValueError(f"input must be 2-D (batch, features) in training, got shape "
                             f"{shape(x)}; a single sample is accepted in evaluation only")
        outer[0], ch[0], inner[0] = (1 if nd == 1 else d[0]), d[nd - 1], 1
        if ch[0] != c_expected:
            raise ValueError(f"input has {ch[0]} features, expected {c_expected}")
        return 0
    if layout != NCHW and layout != NHWC:
        raise ValueError(f"unknown layout {layout}")
    nd = ndim(x, "input", 3, 4)
    if train and nd != 4:
        raise ValueError(f"input must be 4-D (batch, channels, height, width) in training, got "
                         f"shape {shape(x)}; a single image is accepted in evaluation only")
    if layout == NCHW:
        outer[0], ch[0], inner[0] = (1 if nd == 3 else d[0]), d[nd - 3], d[nd - 2] * d[nd - 1]
    else:
        outer[0], ch[0], inner[0] = cnp.PyArray_SIZE(x) // max(d[nd - 1], 1), d[nd - 1], 1
    if ch[0] != c_expected:
        raise ValueError(f"input has {ch[0]} channels, expected {c_expected}")
    return 0


cdef cnp.ndarray _bn_input(object input, int t, int layout, bint train, Py_ssize_t c,
                           Py_ssize_t *outer, Py_ssize_t *ch, Py_ssize_t *inner):
    """The input of a batch normalisation, its (outer, channels, inner) sizes filled."""
    cdef cnp.ndarray x = array(input, "input", t, False)
    _bn_layout(x, layout, train, c, outer, ch, inner)
    return x


cdef cnp.ndarray _shaped_like(object obj, str what, int t, bint writeable, cnp.ndarray x):
    """An array of type ``t`` shaped like ``x``."""
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    shape_is(a, what, shape(x))
    return a


cdef cnp.ndarray _vec(object obj, str what, int t, bint writeable, Py_ssize_t c):
    if obj is None:
        return None
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    vector_of(a, what, c)
    return a


cdef inline void *_ptr(cnp.ndarray a):
    """The data of an optional array; NULL for None."""
    return NULL if a is None else cnp.PyArray_DATA(a)


def batchnorm_update_output(input, output, weight, bias, running_mean, running_var,
                            save_mean, save_invstd, int layout, bint train, double momentum,
                            double eps):
    """output := (input - mean) * invstd * weight + bias per channel, invstd = 1/sqrt(var + eps).

    Training: mean and biased var of the batch, saved in save_mean/save_invstd, and
    running := (1 - momentum) * running + momentum * (mean, unbiased var). Evaluation: the
    running statistics, also saved for the backward. weight and bias may be None (no affine).
    """
    cdef int t = float_type(running_mean, "runningMean")
    cdef cnp.ndarray rm = array(running_mean, "runningMean", t, True)
    cdef Py_ssize_t c = cnp.PyArray_SIZE(rm)
    cdef cnp.ndarray rv = _vec(running_var, "runningVar", t, True, c)
    vector_of(rm, "runningMean", c)
    cdef cnp.ndarray sm = _vec(save_mean, "saveMean", t, True, c)
    cdef cnp.ndarray si = _vec(save_invstd, "saveInvstd", t, True, c)
    cdef cnp.ndarray w = _vec(weight, "weight", t, False, c)
    cdef cnp.ndarray b = _vec(bias, "bias", t, False, c)
    cdef Py_ssize_t outer, ch, inner
    cdef cnp.ndarray x = _bn_input(input, t, layout, train, c, &outer, &ch, &inner)
    cdef cnp.ndarray y = _shaped_like(output, "output", t, True, x)
    if train and outer * inner <= 1:
        raise ValueError(f"training needs more than one value per channel, got input shape "
                         f"{shape(x)}")
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", rm, "runningMean",
                  rv, "runningVar")
    disjoint_from(y, "output", sm, "saveMean", si, "saveInvstd")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    cdef void *wp = _ptr(w)
    cdef void *bp = _ptr(b)
    if c == 0:
        return
    with nogil:
        pm_bn_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y), wp, bp,
                  cnp.PyArray_DATA(rm), cnp.PyArray_DATA(rv), cnp.PyArray_DATA(sm),
                  cnp.PyArray_DATA(si), outer, ch, inner, train, momentum, eps)


def batchnorm_update_grad_input(input, grad_output, grad_input, weight, save_mean,
                                save_invstd, int layout, bint train):
    """Training: grad_input := (go - mean(go) - xhat * mean(go * xhat)) * invstd * weight,
    xhat = (x - mean) * invstd, with the forward's saved statistics. Evaluation (fixed
    statistics): grad_input := go * invstd * weight.
    """
    cdef int t = float_type(save_mean, "saveMean")
    cdef cnp.ndarray sm = array(save_mean, "saveMean", t, False)
    cdef Py_ssize_t c = cnp.PyArray_SIZE(sm)
    vector_of(sm, "saveMean", c)
    cdef cnp.ndarray si = _vec(save_invstd, "saveInvstd", t, False, c)
    cdef cnp.ndarray w = _vec(weight, "weight", t, False, c)
    cdef Py_ssize_t outer, ch, inner
    cdef cnp.ndarray x = _bn_input(input, t, layout, train, c, &outer, &ch, &inner)
    cdef cnp.ndarray go = _shaped_like(grad_output, "gradOutput", t, False, x)
    cdef cnp.ndarray gi = _shaped_like(grad_input, "gradInput", t, True, x)
    disjoint_from(gi, "gradInput", x, "input", go, "gradOutput", w, "weight", sm, "saveMean",
                  si, "saveInvstd")
    cdef void *wp = _ptr(w)
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_bn_bwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                  cnp.PyArray_DATA(gi), wp, cnp.PyArray_DATA(sm), cnp.PyArray_DATA(si), outer,
                  ch, inner, train)


def batchnorm_acc_grad_parameters(input, grad_output, grad_weight, grad_bias, save_mean,
                                  save_invstd, int layout, double scale_w, double scale_b):
    """grad_weight += scale_w * sum(go * xhat); grad_bias += scale_b * sum(go), per channel."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef Py_ssize_t c = cnp.PyArray_SIZE(gw)
    vector_of(gw, "gradWeight", c)
    cdef cnp.ndarray gb = _vec(grad_bias, "gradBias", t, True, c)
    cdef cnp.ndarray sm = _vec(save_mean, "saveMean", t, False, c)
    cdef cnp.ndarray si = _vec(save_invstd, "saveInvstd", t, False, c)
    cdef Py_ssize_t outer, ch, inner
    cdef cnp.ndarray x = _bn_input(input, t, layout, False, c, &outer, &ch, &inner)
    cdef cnp.ndarray go = _shaped_like(grad_output, "gradOutput", t, False, x)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput")
    cdef void *gbp = _ptr(gb)
    if cnp.PyArray_SIZE(x) == 0 or (scale_w == 0 and scale_b == 0):
        return
    with nogil:
        pm_bn_acc(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                  cnp.PyArray_DATA(gw), gbp, cnp.PyArray_DATA(sm), cnp.PyArray_DATA(si), outer,
                  ch, inner, scale_w, scale_b)


# -- Normalize --------------------------------------------------------------------------------

cdef int _lines(cnp.ndarray x, Py_ssize_t *outer, Py_ssize_t *n, Py_ssize_t *inner) except -1:
    """Normalize's layout: rows of (d,) and (b, d); channels of (b, c, h, w)."""
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef int nd = ndim(x, "input", 1, 4)
    if nd == 3:
        raise ValueError(f"input must be 1-D, 2-D or 4-D, got 3-D (shape {shape(x)})")
    if nd == 1:
        outer[0], n[0], inner[0] = 1, d[0], 1
    elif nd == 2:
        outer[0], n[0], inner[0] = d[0], d[1], 1
    else:
        outer[0], n[0], inner[0] = d[0], d[1], d[2] * d[3]
    return 0


cdef int _output_with(cnp.ndarray y, cnp.ndarray x, cnp.ndarray aux, str aux_what,
                      tuple aux_shape) except -1:
    """The output, shaped like the input, and a second array the forward writes (``aux``,
    kept for the backward), none overlapping another."""
    shape_is(y, "output", shape(x))
    shape_is(aux, aux_what, aux_shape)
    disjoint(y, "output", x, "input")
    disjoint_from(aux, aux_what, x, "input", y, "output")
    return 0


def normalize_update_output(input, output, norm, double p, double eps):
    """output := input / ||input||_p along each line, ||x||_p = (sum |x|^p + eps)^(1/p), or
    max |x| + eps for p = inf (or DBL_MAX). ``norm`` (outer * inner,) receives the norms.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray nm = array(norm, "norm", t, True)
    cdef Py_ssize_t outer, n, inner
    _lines(x, &outer, &n, &inner)
    _output_with(y, x, nm, "norm", (outer * inner,))
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _normalize(f32(x), f32(y), f32(nm), outer, n, inner, p, eps)
        else:
            _normalize(f64(x), f64(y), f64(nm), outer, n, inner, p, eps)


cdef inline double _abs_pow(double v, double p) noexcept nogil:
    v = fabs(v)
    return v if p == 1 else (v * v if p == 2 else pow(v, p))


cdef void _normalize(const floating *x, floating *y, floating *nm, Py_ssize_t outer,
                     Py_ssize_t n, Py_ssize_t inner, double p, double eps) noexcept nogil:
    cdef Py_ssize_t o, j, k, base
    cdef double s, v
    cdef floating r
    cdef bint inf = p >= DBL_MAX
    for o in range(outer):
        for j in range(inner):
            base = o * n * inner + j
            s = 0
            for k in range(n):
                if inf:
                    v = fabs(x[base + k * inner])
                    if v > s:
                        s = v
                else:
                    s += _abs_pow(x[base + k * inner], p)
            s = s + eps if inf else (sqrt(s + eps) if p == 2 else pow(s + eps, 1 / p))
            nm[o * inner + j] = <floating> s
            r = <floating> (1 / s)
            for k in range(n):
                y[base + k * inner] = x[base + k * inner] * r


def normalize_update_grad_input(input, grad_output, grad_input, norm, double p):
    """grad_input := go / N - (go . x) * |x|^(p-1) sign(x) / N^(p+1), N the saved norm; for
    p = inf the second term falls on the first arg max of |x| only, as sign(x) / N^2.
    """
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray nm = array(norm, "norm", t, False)
    cdef Py_ssize_t outer, n, inner
    _lines(x, &outer, &n, &inner)
    shape_is(go, "gradOutput", shape(x))
    shape_is(gi, "gradInput", shape(x))
    vector_of(nm, "norm", outer * inner)
    disjoint_from(gi, "gradInput", x, "input", go, "gradOutput", nm, "norm")
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _normalize_grad(f32(x), f32(go), f32(gi), f32(nm), outer, n, inner, p)
        else:
            _normalize_grad(f64(x), f64(go), f64(gi), f64(nm), outer, n, inner, p)


cdef void _normalize_grad(const floating *x, const floating *go, floating *gi,
                          const floating *nm, Py_ssize_t outer, Py_ssize_t n,
                          Py_ssize_t inner, double p) noexcept nogil:
    cdef Py_ssize_t o, j, k, idx, base, arg
    cdef double dot, big, v, s, coef, s_term
    cdef bint inf = p >= DBL_MAX
    for o in range(outer):
        for j in range(inner):
            base = o * n * inner + j
            s = nm[o * inner + j]
            dot = 0
            big = -1
            arg = 0
            for k in range(n):
                idx = base + k * inner
                dot += go[idx] * x[idx]
                if inf and fabs(x[idx]) > big:
                    big = fabs(x[idx])
                    arg = k
            if inf:
                for k in range(n):
                    gi[base + k * inner] = <floating> (go[base + k * inner] / s)
                idx = base + arg * inner
                v = x[idx]
                gi[idx] -= <floating> (dot / (s * s) * (1 if v > 0 else (-1 if v < 0 else 0)))
                continue
            coef = dot / pow(s, p + 1)
            for k in range(n):
                idx = base + k * inner
                v = x[idx]
                if p == 2:
                    s_term = v
                elif v == 0:
                    s_term = 0
                else:
                    s_term = pow(fabs(v), p - 1) * (1 if v > 0 else -1)
                gi[idx] = <floating> (go[idx] / s - coef * s_term)


# -- SpatialCrossMapLRN -----------------------------------------------------------------------

cdef int _images(cnp.ndarray x, Py_ssize_t *outer, Py_ssize_t *ch, Py_ssize_t *inner) except -1:
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef int nd = ndim(x, "input", 3, 4)
    outer[0], ch[0], inner[0] = (1 if nd == 3 else d[0]), d[nd - 3], d[nd - 2] * d[nd - 1]
    return 0


def lrn_update_output(input, output, scale, Py_ssize_t size, double alpha, double beta,
                      double k):
    """output := input * scale^-beta, scale := k + alpha / size * (sum of input^2 over the
    ``size`` channels centred on each one, clipped at the edges). (c, h, w) or (b, c, h, w).
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray sc = array(scale, "scale", t, True)
    cdef Py_ssize_t outer, ch, inner
    _images(x, &outer, &ch, &inner)
    _output_with(y, x, sc, "scale", shape(x))
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be odd and positive, got {size}")
    int_limit(size, "size")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_lrn_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y),
                   cnp.PyArray_DATA(sc), outer, ch, inner, size, alpha, beta, k)


def lrn_update_grad_input(input, output, grad_output, grad_input, scale, Py_ssize_t size,
                          double alpha, double beta):
    """grad_input := go * scale^-beta - 2 alpha beta / size * x * (sum over the window of
    go * y / scale), with the forward's output y and scale.
    """
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray sc = array(scale, "scale", t, False)
    cdef Py_ssize_t outer, ch, inner
    _images(x, &outer, &ch, &inner)
    cdef tuple s = shape(x)
    for a, what in ((y, "output"), (go, "gradOutput"), (gi, "gradInput"), (sc, "scale")):
        shape_is(a, what, s)
    disjoint_from(gi, "gradInput", x, "input", y, "output", go, "gradOutput", sc, "scale")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be odd and positive, got {size}")
    int_limit(size, "size")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_lrn_bwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y),
                   cnp.PyArray_DATA(go), cnp.PyArray_DATA(gi), cnp.PyArray_DATA(sc), outer, ch,
                   inner, size, alpha, beta)
