"""Kernels of the elementwise activations (ReLU, Tanh, ..., Power) and of PReLU.

One pair of kernels per function, named after it: ``tanh_update_output(input, output)`` and
``tanh_update_grad_input(input, output, grad_output, grad_input)``, with the function's scalars
after the arrays. Arrays of any shape, float32 or float64; ``output`` may be ``input`` and
``grad_input`` may be ``grad_output`` (in place). Every backward takes the forward's input, output
and scalars, whichever its derivative reads (Tanh, Sigmoid, Sqrt and Exp read the output, ELU
both), so that one call serves every layer.
The loops are in vecmath.h (pm_tanh_fwd, pm_tanh_bwd, ..., pm_prelu_fwd), vectorised, with the
functions of the exponential family written there.
"""

cimport numpy as cnp

from engine._check cimport (
    GIL_FREE_WORK, shape, float_type, array, ndim, shape_is, same_shape, disjoint,
)
from engine._inplace cimport same_or_disjoint
from engine.vecmath cimport (
    pm_threshold_fwd, pm_threshold_bwd, pm_leaky_relu_fwd, pm_leaky_relu_bwd, pm_elu_fwd,
    pm_elu_bwd, pm_hard_tanh_fwd, pm_hard_tanh_bwd, pm_tanh_fwd, pm_tanh_bwd, pm_sigmoid_fwd,
    pm_sigmoid_bwd, pm_hard_sigmoid_fwd, pm_hard_sigmoid_bwd, pm_soft_plus_fwd, pm_soft_plus_bwd,
    pm_soft_sign_fwd, pm_soft_sign_bwd, pm_abs_fwd, pm_abs_bwd, pm_square_fwd, pm_square_bwd,
    pm_sqrt_fwd, pm_sqrt_bwd, pm_exp_fwd, pm_exp_bwd, pm_log_fwd, pm_log_bwd, pm_power_fwd,
    pm_power_bwd, pm_prelu_fwd, pm_prelu_bwd, pm_prelu_acc,
)

cnp.import_array()


cdef struct Arrays:
    # The checked arrays of an elementwise kernel: their dtype, size (may be 0) and data.
    bint f64
    Py_ssize_t n
    void *x   # input
    void *y   # output
    void *go  # gradOutput
    void *gi  # gradInput


cdef Arrays forward_arrays(input, output) except *:
    """The arrays of a forward, checked.

    Same shape, C-contiguous, ``output``'s dtype (float32 or float64), ``output`` writeable
    and either ``input`` itself or disjoint from it.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    same_shape(y, "output", x)
    same_or_disjoint(y, "output", x, "input")
    cdef Arrays a
    a.f64 = t == cnp.NPY_FLOAT64
    a.n = cnp.PyArray_SIZE(x)
    a.x = cnp.PyArray_DATA(x)
    a.y = cnp.PyArray_DATA(y)
    return a


cdef Arrays backward_arrays(input, output, grad_output, grad_input) except *:
    """The arrays of a backward, checked.

    Same shape, C-contiguous, ``grad_input``'s dtype, ``grad_input`` writeable, either
    ``grad_output`` itself or disjoint from it, and disjoint from ``input`` and ``output``.
    """
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    same_shape(y, "output", x)
    same_shape(go, "gradOutput", x)
    same_shape(gi, "gradInput", x)
    same_or_disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", x, "input")
    disjoint(gi, "gradInput", y, "output")
    cdef Arrays a
    a.f64 = t == cnp.NPY_FLOAT64
    a.n = cnp.PyArray_SIZE(x)
    a.x = cnp.PyArray_DATA(x)
    a.y = cnp.PyArray_DATA(y)
    a.go = cnp.PyArray_DATA(go)
    a.gi = cnp.PyArray_DATA(gi)
    return a


def threshold_update_output(input, output, double th, double v):
    """output := input > th ? input : v (ReLU: th = v = 0)."""
    cdef Arrays a = forward_arrays(input, output)
    if a.n < GIL_FREE_WORK:  # a small batch's ReLU: the GIL is kept (see _check.pxd)
        pm_threshold_fwd(a.f64, a.x, a.y, a.n, th, v)
        return
    with nogil:
        pm_threshold_fwd(a.f64, a.x, a.y, a.n, th, v)


def threshold_update_grad_input(input, output, grad_output, grad_input, double th, double v):
    """grad_input := input > th ? grad_output : 0."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    if a.n < GIL_FREE_WORK:
        pm_threshold_bwd(a.f64, a.x, a.go, a.gi, a.n, th)
        return
    with nogil:
        pm_threshold_bwd(a.f64, a.x, a.go, a.gi, a.n, th)


def leaky_relu_update_output(input, output, double negval):
    """output := input > 0 ? input : negval * input."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_leaky_relu_fwd(a.f64, a.x, a.y, a.n, negval)


def leaky_relu_update_grad_input(input, output, grad_output, grad_input, double negval):
    """grad_input := input > 0 ? grad_output : negval * grad_output."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_leaky_relu_bwd(a.f64, a.x, a.go, a.gi, a.n, negval)


def elu_update_output(input, output, double alpha):
    """output := input > 0 ? input : alpha * (exp(input) - 1)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_elu_fwd(a.f64, a.x, a.y, a.n, alpha)


def elu_update_grad_input(input, output, grad_output, grad_input, double alpha):
    """grad_input := input > 0 ? grad_output : grad_output * (output + alpha)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_elu_bwd(a.f64, a.x, a.y, a.go, a.gi, a.n, alpha)


def hard_tanh_update_output(input, output, double min_value, double max_value):
    """output := min(max(input, min_value), max_value)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_hard_tanh_fwd(a.f64, a.x, a.y, a.n, min_value, max_value)


def hard_tanh_update_grad_input(input, output, grad_output, grad_input, double min_value,
                                double max_value):
    """grad_input := min_value < input < max_value ? grad_output : 0."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_hard_tanh_bwd(a.f64, a.x, a.go, a.gi, a.n, min_value, max_value)


def tanh_update_output(input, output):
    """output := tanh(input)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_tanh_fwd(a.f64, a.x, a.y, a.n)


def tanh_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output * (1 - output^2)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_tanh_bwd(a.f64, a.y, a.go, a.gi, a.n)


def sigmoid_update_output(input, output):
    """output := 1 / (1 + exp(-input))."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_sigmoid_fwd(a.f64, a.x, a.y, a.n)


def sigmoid_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output * output * (1 - output)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_sigmoid_bwd(a.f64, a.y, a.go, a.gi, a.n)


def hard_sigmoid_update_output(input, output):
    """output := min(max(0.2 * input + 0.5, 0), 1)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_hard_sigmoid_fwd(a.f64, a.x, a.y, a.n)


def hard_sigmoid_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := -2.5 < input < 2.5 ? 0.2 * grad_output : 0."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_hard_sigmoid_bwd(a.f64, a.x, a.go, a.gi, a.n)


def soft_plus_update_output(input, output, double beta, double threshold):
    """output := beta * input > threshold ? input : log(1 + exp(beta * input)) / beta."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_soft_plus_fwd(a.f64, a.x, a.y, a.n, beta, threshold)


def soft_plus_update_grad_input(input, output, grad_output, grad_input, double beta,
                                double threshold):
    """grad_input := grad_output * sigmoid(beta * input), or grad_output above the threshold."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_soft_plus_bwd(a.f64, a.x, a.go, a.gi, a.n, beta, threshold)


def soft_sign_update_output(input, output):
    """output := input / (1 + |input|)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_soft_sign_fwd(a.f64, a.x, a.y, a.n)


def soft_sign_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output / (1 + |input|)^2."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_soft_sign_bwd(a.f64, a.x, a.go, a.gi, a.n)


def abs_update_output(input, output):
    """output := |input|."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_abs_fwd(a.f64, a.x, a.y, a.n)


def abs_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := sign(input) * grad_output (0 at 0)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_abs_bwd(a.f64, a.x, a.go, a.gi, a.n)


def square_update_output(input, output):
    """output := input^2."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_square_fwd(a.f64, a.x, a.y, a.n)


def square_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := 2 * input * grad_output."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_square_bwd(a.f64, a.x, a.go, a.gi, a.n)


def sqrt_update_output(input, output):
    """output := sqrt(input)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_sqrt_fwd(a.f64, a.x, a.y, a.n)


def sqrt_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output / (2 * output)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_sqrt_bwd(a.f64, a.y, a.go, a.gi, a.n)


def exp_update_output(input, output):
    """output := exp(input)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_exp_fwd(a.f64, a.x, a.y, a.n)


def exp_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output * output."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_exp_bwd(a.f64, a.y, a.go, a.gi, a.n)


def log_update_output(input, output):
    """output := log(input)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_log_fwd(a.f64, a.x, a.y, a.n)


def log_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output / input."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_log_bwd(a.f64, a.x, a.go, a.gi, a.n)


def power_update_output(input, output, double power, double scale, double shift):
    """output := (shift + scale * input) ** power."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_power_fwd(a.f64, a.x, a.y, a.n, power, scale, shift)


def power_update_grad_input(input, output, grad_output, grad_input, double power, double scale,
                            double shift):
    """grad_input := power * scale * (shift + scale * input) ** (power - 1) * grad_output."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_power_bwd(a.f64, a.x, a.go, a.gi, a.n, power, scale, shift)


# -- PReLU ------------------------------------------------------------------------------------

cdef int _prelu_layout(cnp.ndarray x, cnp.ndarray w, bint shared,
                       Py_ssize_t *outer, Py_ssize_t *ch, Py_ssize_t *inner) except -1:
    """(outer, channels, inner) of ``x``: 1-D (C,), 2-D (N, C), 3-D (C, H, W), 4-D (N, C, H, W).

    A shared weight (one slope) sees any input as a single channel.
    """
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp nw = cnp.PyArray_SIZE(w)
    cdef int nd
    if cnp.PyArray_NDIM(w) != 1:
        raise ValueError(f"weight must be 1-D, got shape {shape(w)}")
    if shared:
        if nw != 1:
            raise ValueError(f"a shared weight has 1 element, got {nw}")
        outer[0], ch[0], inner[0] = 1, 1, cnp.PyArray_SIZE(x)
        return 0
    nd = ndim(x, "input", 1, 4)
    if nd == 1:
        outer[0], ch[0], inner[0] = 1, d[0], 1
    elif nd == 2:
        outer[0], ch[0], inner[0] = d[0], d[1], 1
    elif nd == 3:
        outer[0], ch[0], inner[0] = 1, d[0], d[1] * d[2]
    else:
        outer[0], ch[0], inner[0] = d[0], d[1], d[2] * d[3]
    if ch[0] != nw:
        raise ValueError(f"input has {ch[0]} channels, expected {nw} (shape {shape(x)})")
    return 0


def prelu_update_output(input, output, weight, bint shared):
    """output := input > 0 ? input : weight[c] * input, c the channel (see the layout)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t outer, ch, inner
    _prelu_layout(x, w, shared, &outer, &ch, &inner)
    same_shape(y, "output", x)
    disjoint(y, "output", x, "input")
    disjoint(y, "output", w, "weight")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_prelu_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y),
                     cnp.PyArray_DATA(w), outer, ch, inner)


def prelu_update_grad_input(input, grad_output, grad_input, weight, bint shared):
    """grad_input := input > 0 ? grad_output : weight[c] * grad_output."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t outer, ch, inner
    _prelu_layout(x, w, shared, &outer, &ch, &inner)
    same_shape(go, "gradOutput", x)
    same_shape(gi, "gradInput", x)
    disjoint(gi, "gradInput", x, "input")
    disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", w, "weight")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_prelu_bwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                     cnp.PyArray_DATA(gi), cnp.PyArray_DATA(w), outer, ch, inner)


def prelu_acc_grad_parameters(input, grad_output, grad_weight, bint shared, double scale):
    """grad_weight[c] += scale * sum(input * grad_output where input <= 0) over channel c."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t outer, ch, inner
    _prelu_layout(x, gw, shared, &outer, &ch, &inner)
    same_shape(go, "gradOutput", x)
    disjoint(gw, "gradWeight", x, "input")
    disjoint(gw, "gradWeight", go, "gradOutput")
    if scale == 0 or cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        pm_prelu_acc(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                     cnp.PyArray_DATA(gw), scale, outer, ch, inner)


# -- LogSigmoid, the shrinks, BinaryThreshold, RReLU ----------------------------------------
# Where a vecmath.h loop computes the function (LogSigmoid is SoftPlus with beta -1, RReLU in
# evaluation a LeakyReLU, BinaryThreshold's gradient Threshold's), it runs; the rest are loops
# of their own, one fused instance per dtype, with their selects written as bit masks
# (pm_select): a branch on random signs costs more than the arithmetic. NaN: every select is
# written so that a NaN input gives a NaN output.

from libc.math cimport INFINITY
from libc.stdint cimport uint64_t

from engine.blas cimport floating
from engine._check cimport f32, f64
from engine._hash cimport uniform01
from engine.vecmath cimport pm_select_f32, pm_select_f64

cdef extern from "vecmath.h" nogil:
    float pm_tanh_f32(float x)
    double pm_tanh_f64(double x)
    float pm_expm1_neg_f32(float x)
    double pm_expm1_neg_f64(double x)


cdef inline floating _select(bint take_a, floating a, floating b) noexcept nogil:
    """a if take_a else b, without a branch."""
    if floating is float:
        return pm_select_f32(-<Py_ssize_t> take_a, a, b)
    else:
        return pm_select_f64(-<Py_ssize_t> take_a, a, b)


def log_sigmoid_update_output(input, output):
    """output := log(1 / (1 + exp(-input))) = -softplus(-input)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        pm_soft_plus_fwd(a.f64, a.x, a.y, a.n, -1.0, INFINITY)


def log_sigmoid_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output / (1 + exp(input)) = grad_output * -expm1(output), from the
    output (output <= 0, where expm1 is exact to rounding), as Torch keeps a buffer of the
    forward's exponentials: no exponential of the input again."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        if a.gi == a.go:  # in place: one pass
            if a.f64:
                _log_sigmoid_bwd(<const double *> a.y, <const double *> a.go, <double *> a.gi,
                                 a.n)
            else:
                _log_sigmoid_bwd(<const float *> a.y, <const float *> a.go, <float *> a.gi,
                                 a.n)
        else:  # -expm1(output) by ELU's vectorised loop (alpha -1, output <= 0), times
            pm_elu_fwd(a.f64, a.y, a.gi, a.n, -1.0)
            if a.f64:
                _times(<const double *> a.go, <const double *> a.gi, <double *> a.gi, a.n)
            else:
                _times(<const float *> a.go, <const float *> a.gi, <float *> a.gi, a.n)


cdef void _log_sigmoid_bwd(const floating *y, const floating *go, floating *gi,
                           Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if floating is float:
            gi[i] = -go[i] * pm_expm1_neg_f32(y[i])
        else:
            gi[i] = -go[i] * pm_expm1_neg_f64(y[i])


cdef void _minus(const floating *x, floating *y, Py_ssize_t n) noexcept nogil:
    """y := x - y."""
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = x[i] - y[i]


cdef void _soft_shrink_fwd(const floating *x, floating *y, Py_ssize_t n,
                           floating lam) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = _select(v > lam, v - lam, _select(v < -lam, v + lam, v * 0))  # NaN * 0: NaN


def soft_shrink_update_output(input, output, double the_lambda):
    """output := input - lambda above lambda, input + lambda below -lambda, else 0 (NaN
    stays NaN)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        if a.f64:
            _soft_shrink_fwd(<const double *> a.x, <double *> a.y, a.n, the_lambda)
        else:
            _soft_shrink_fwd(<const float *> a.x, <float *> a.y, a.n, <float> the_lambda)


cdef void _shrink_bwd(const floating *x, const floating *go, floating *gi, Py_ssize_t n,
                      floating lam) noexcept nogil:
    # both shrinks: the gradient outside [-lam, lam], zero inside (and at NaN, as Torch's
    # vectorised kernels: its scalar remainder loop passes the gradient there)
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        gi[i] = _select((v < -lam) | (v > lam), go[i], <floating> 0)


cdef void _hard_shrink_fwd(const floating *x, floating *y, Py_ssize_t n,
                           floating lam) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = _select(((v >= -lam) & (v <= lam)) ^ 1, v, <floating> 0)


def soft_shrink_update_grad_input(input, output, grad_output, grad_input, double the_lambda):
    """grad_input := |input| > lambda ? grad_output : 0 (NaN: 0)."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        if a.f64:
            _shrink_bwd(<const double *> a.x, <const double *> a.go, <double *> a.gi, a.n,
                        the_lambda)
        else:
            _shrink_bwd(<const float *> a.x, <const float *> a.go, <float *> a.gi, a.n,
                        <float> the_lambda)


def hard_shrink_update_output(input, output, double the_lambda):
    """output := -lambda <= input <= lambda ? 0 : input."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        if a.f64:
            _hard_shrink_fwd(<const double *> a.x, <double *> a.y, a.n, the_lambda)
        else:
            _hard_shrink_fwd(<const float *> a.x, <float *> a.y, a.n, <float> the_lambda)


def hard_shrink_update_grad_input(input, output, grad_output, grad_input, double the_lambda):
    """grad_input := |input| > lambda ? grad_output : 0 (NaN: 0)."""
    soft_shrink_update_grad_input(input, output, grad_output, grad_input, the_lambda)


cdef void _tanh_shrink_bwd(const floating *x, const floating *go, floating *gi,
                           Py_ssize_t n) noexcept nogil:
    # from the input: x - y would cancel where |x| is large
    cdef Py_ssize_t i
    cdef floating t
    for i in range(n):
        if floating is float:
            t = pm_tanh_f32(x[i])
        else:
            t = pm_tanh_f64(x[i])
        gi[i] = go[i] * t * t


cdef void _square_times(const floating *go, floating *gi, Py_ssize_t n) noexcept nogil:
    """gi := go * gi^2."""
    cdef Py_ssize_t i
    for i in range(n):
        gi[i] = go[i] * gi[i] * gi[i]


def tanh_shrink_update_output(input, output):
    """output := input - tanh(input)."""
    cdef Arrays a = forward_arrays(input, output)
    if a.x == a.y:
        raise ValueError("output must not be input: tanh is written before the difference")
    with nogil:
        pm_tanh_fwd(a.f64, a.x, a.y, a.n)
        if a.f64:
            _minus(<const double *> a.x, <double *> a.y, a.n)
        else:
            _minus(<const float *> a.x, <float *> a.y, a.n)


def tanh_shrink_update_grad_input(input, output, grad_output, grad_input):
    """grad_input := grad_output * tanh(input)^2."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        if a.gi == a.go:  # in place: one pass, the scalar tanh
            if a.f64:
                _tanh_shrink_bwd(<const double *> a.x, <const double *> a.go, <double *> a.gi,
                                 a.n)
            else:
                _tanh_shrink_bwd(<const float *> a.x, <const float *> a.go, <float *> a.gi,
                                 a.n)
        else:  # tanh(input) into grad_input by the vectorised loop, then the product
            pm_tanh_fwd(a.f64, a.x, a.gi, a.n)
            if a.f64:
                _square_times(<const double *> a.go, <double *> a.gi, a.n)
            else:
                _square_times(<const float *> a.go, <float *> a.gi, a.n)


cdef void _binary_threshold_fwd(const floating *x, floating *y, Py_ssize_t n,
                                floating th) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        y[i] = 1 if v > th else (0 if v <= th else v)  # NaN stays NaN


def binary_threshold_update_output(input, output, double th):
    """output := input > th ? 1 : 0 (NaN stays NaN)."""
    cdef Arrays a = forward_arrays(input, output)
    with nogil:
        if a.f64:
            _binary_threshold_fwd(<const double *> a.x, <double *> a.y, a.n, th)
        else:
            _binary_threshold_fwd(<const float *> a.x, <float *> a.y, a.n, <float> th)


def binary_threshold_update_grad_input(input, output, grad_output, grad_input, double th):
    """grad_input := input <= th ? 0 : grad_output: BigDL's straight-through gradient (the
    step's own derivative is zero almost everywhere). In place, ``input`` holds the forward's
    0/1 output, which gives the same gate for 0 <= th < 1."""
    cdef Arrays a = backward_arrays(input, output, grad_output, grad_input)
    with nogil:
        pm_threshold_bwd(a.f64, a.x, a.go, a.gi, a.n, th)


cdef int _rrelu_bounds(double lower, double upper) except -1:
    if not (0 <= lower <= upper):
        raise ValueError(f"the slopes must satisfy 0 <= lower <= upper, got lower {lower}, "
                         f"upper {upper}")
    return 0


def rrelu_update_output(input, output, noise, double lower, double upper, bint train,
                        uint64_t seed):
    """Training: each input <= 0 gets a slope r uniform in [lower, upper) (draw i of ``seed``
    for element i), output := r * input, noise := r; elsewhere output := input, noise := 1.
    Evaluation: output := input > 0 ? input : (lower + upper) / 2 * input; ``noise`` is then
    unused and may be None. ``output`` may be ``input``.
    """
    _rrelu_bounds(lower, upper)
    cdef Arrays a = forward_arrays(input, output)
    cdef int t = cnp.NPY_FLOAT64 if a.f64 else cnp.NPY_FLOAT32
    cdef cnp.ndarray r = None
    if train:
        r = array(noise, "noise", t, True)
        shape_is(r, "noise", shape(<cnp.ndarray> input))
        disjoint(r, "noise", input, "input")
        disjoint(r, "noise", output, "output")
    with nogil:
        if not train:
            pm_leaky_relu_fwd(a.f64, a.x, a.y, a.n, (lower + upper) / 2)
        elif a.f64:
            _rrelu_fwd(<const double *> a.x, <double *> a.y, f64(r), a.n, lower, upper, seed)
        else:
            _rrelu_fwd(<const float *> a.x, <float *> a.y, f32(r), a.n, lower, upper, seed)


cdef void _rrelu_fwd(const floating *x, floating *y, floating *r, Py_ssize_t n, double lower,
                     double upper, uint64_t seed) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, s
    for i in range(n):
        v = x[i]
        # a slope for every element, kept where the input is not positive (NaN: 1, as Torch)
        s = _select(v <= 0, <floating> (lower + (upper - lower) * uniform01(seed, <uint64_t> i)),
                    <floating> 1)
        r[i] = s
        y[i] = v * s


def rrelu_update_grad_input(input, grad_output, grad_input, noise, double lower, double upper,
                            bint train):
    """Training: grad_input := grad_output * noise (the forward's slopes). Evaluation:
    grad_input := input > 0 ? grad_output : (lower + upper) / 2 * grad_output (``noise`` may
    be None). ``grad_input`` may be ``grad_output``.
    """
    _rrelu_bounds(lower, upper)
    cdef Arrays a = backward_arrays(input, input, grad_output, grad_input)
    cdef int t = cnp.NPY_FLOAT64 if a.f64 else cnp.NPY_FLOAT32
    cdef cnp.ndarray r = None
    if train:
        r = array(noise, "noise", t, False)
        if shape(r) != shape(<cnp.ndarray> input):
            raise ValueError(f"input has shape {shape(<cnp.ndarray> input)}, but the "
                             f"forward's noise has {shape(r)}")
        disjoint(grad_input, "gradInput", r, "noise")
    with nogil:
        if not train:
            pm_leaky_relu_bwd(a.f64, a.x, a.go, a.gi, a.n, (lower + upper) / 2)
        elif a.f64:
            _times(<const double *> a.go, f64(r), <double *> a.gi, a.n)
        else:
            _times(<const float *> a.go, f32(r), <float *> a.gi, a.n)


cdef void _times(const floating *go, const floating *r, floating *gi,
                 Py_ssize_t n) noexcept nogil:
    """gi := go * r."""
    cdef Py_ssize_t i
    for i in range(n):
        gi[i] = go[i] * r[i]
