"""Kernels of the elementwise activations (ReLU, Tanh, ..., Power) and of PReLU.

One validating entry point per method serves every elementwise function, selected by an op
code from ``OP``; the switch sits outside the loops, so each function is its own tight loop
that the compiler can vectorise. Arrays of any shape; an output may be its input (in place).
Tanh, Sigmoid, Exp, Log, SoftPlus and ELU (forward and backward) run the vectorised loops of
_vecmath.h instead of scalar libm calls.
"""

cimport numpy as cnp
from libc.math cimport sqrt, sqrtf, pow, powf, fabs, fabsf

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, ndim, shape_is, disjoint
from engine._inplace cimport same_or_disjoint
from engine._vecmath cimport (
    pm_vexp_f32, pm_vexp_f64, pm_vlog_f32, pm_vlog_f64, pm_vtanh_f32, pm_vtanh_f64,
    pm_vsigmoid_f32, pm_vsigmoid_f64, pm_vsoftplus_f32, pm_vsoftplus_f64, pm_velu_f32,
    pm_velu_f64, pm_vtanh_bwd_f32, pm_vtanh_bwd_f64, pm_vsigmoid_bwd_f32, pm_vsigmoid_bwd_f64,
    pm_vmul_f32, pm_vmul_f64, pm_velu_bwd_f32, pm_velu_bwd_f64, pm_vsoftplus_bwd_f32,
    pm_vsoftplus_bwd_f64,
)

cnp.import_array()

cdef extern from *:
    """
    /* ReLU is memory-bound, but the baseline x86-64 flags vectorise it with 16-byte SSE2 only,
       about 2x slower than memcpy on AVX2/AVX-512 machines. GCC's target_clones also compiles
       the loop for wider vectors and picks the version at load time. Remove when the build
       targets a wider ISA. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define PM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define PM_CLONES
    #endif
    #define PM_THRESHOLD(T, NAME)                                                          \
    PM_CLONES static void NAME##_fwd(const T *x, T *y, Py_ssize_t n, T th, T v) {          \
        for (Py_ssize_t i = 0; i < n; i++) { T a = x[i]; y[i] = a > th ? a : v; }          \
    }                                                                                      \
    PM_CLONES static void NAME##_bwd(const T *x, const T *go, T *gi, Py_ssize_t n, T th) { \
        for (Py_ssize_t i = 0; i < n; i++) gi[i] = x[i] > th ? go[i] : (T) 0;              \
    }
    PM_THRESHOLD(float, pm_threshold_f32)
    PM_THRESHOLD(double, pm_threshold_f64)
    """
    void pm_threshold_f32_fwd(const float *x, float *y, Py_ssize_t n, float th,
                              float v) noexcept nogil
    void pm_threshold_f64_fwd(const double *x, double *y, Py_ssize_t n, double th,
                              double v) noexcept nogil
    void pm_threshold_f32_bwd(const float *x, const float *go, float *gi, Py_ssize_t n,
                              float th) noexcept nogil
    void pm_threshold_f64_bwd(const double *x, const double *go, double *gi, Py_ssize_t n,
                              double th) noexcept nogil

cdef enum:
    THRESHOLD     # y = x > a ? x : b
    LEAKY_RELU    # y = x > 0 ? x : a x
    ELU           # y = x > 0 ? x : a (exp(x) - 1)
    HARD_TANH     # y = min(max(x, a), b)
    TANH
    SIGMOID
    HARD_SIGMOID  # y = min(max(0.2 x + 0.5, 0), 1)
    SOFT_PLUS     # y = a x > b ? x : log(1 + exp(a x)) / a
    SOFT_SIGN     # y = x / (1 + |x|)
    ABS
    SQUARE
    SQRT
    EXP
    LOG
    POWER         # y = (c + b x) ** a
    N_OPS

#: op codes by name, for the facade.
OP = {
    "threshold": THRESHOLD, "leaky_relu": LEAKY_RELU, "elu": ELU, "hard_tanh": HARD_TANH,
    "tanh": TANH, "sigmoid": SIGMOID, "hard_sigmoid": HARD_SIGMOID, "soft_plus": SOFT_PLUS,
    "soft_sign": SOFT_SIGN, "abs": ABS, "square": SQUARE, "sqrt": SQRT, "exp": EXP, "log": LOG,
    "power": POWER,
}


cdef inline floating _pow(floating v, floating e) noexcept nogil:
    if floating is float:
        return powf(v, e)
    else:
        return pow(v, e)


cdef int _check_op(int op) except -1:
    if op < 0 or op >= N_OPS:
        raise ValueError(f"unknown activation op {op}")
    return 0


def activation_update_output(input, output, int op, double a=0, double b=0, double c=0):
    """output := f(input) elementwise, f chosen by ``op`` with scalars a, b, c; any shape.

    ``output`` may be ``input`` itself (in place); the dtype is ``output``'s.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    _check_op(op)
    shape_is(y, "output", shape(x))
    same_or_disjoint(y, "output", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _update_output(op, <float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y),
                           n, <float> a, <float> b, <float> c)
    else:
        with nogil:
            _update_output(op, <double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(y),
                           n, a, b, c)


cdef void _update_output(int op, const floating *x, floating *y, Py_ssize_t n,
                         floating a, floating b, floating c) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    if op == THRESHOLD:
        if floating is float:
            pm_threshold_f32_fwd(x, y, n, a, b)
        else:
            pm_threshold_f64_fwd(x, y, n, a, b)
    elif op == LEAKY_RELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > 0 else a * v
    elif op == ELU:
        if floating is float:
            pm_velu_f32(x, y, n, a)
        else:
            pm_velu_f64(x, y, n, a)
    elif op == HARD_TANH:
        for i in range(n):
            v = x[i]
            y[i] = a if v < a else (b if v > b else v)
    elif op == TANH:
        if floating is float:
            pm_vtanh_f32(x, y, n)
        else:
            pm_vtanh_f64(x, y, n)
    elif op == SIGMOID:
        if floating is float:
            pm_vsigmoid_f32(x, y, n)
        else:
            pm_vsigmoid_f64(x, y, n)
    elif op == HARD_SIGMOID:
        for i in range(n):
            v = x[i]
            y[i] = 1 if v > 2.5 else (0 if v < -2.5 else <floating> 0.2 * v + <floating> 0.5)
    elif op == SOFT_PLUS:
        if floating is float:
            pm_vsoftplus_f32(x, y, n, a, b)
        else:
            pm_vsoftplus_f64(x, y, n, a, b)
    elif op == SOFT_SIGN:
        for i in range(n):
            v = x[i]
            y[i] = v / (1 + (fabsf(v) if floating is float else fabs(v)))
    elif op == ABS:
        for i in range(n):
            y[i] = fabsf(x[i]) if floating is float else fabs(x[i])
    elif op == SQUARE:
        for i in range(n):
            y[i] = x[i] * x[i]
    elif op == SQRT:
        for i in range(n):
            y[i] = sqrtf(x[i]) if floating is float else sqrt(x[i])
    elif op == EXP:
        if floating is float:
            pm_vexp_f32(x, y, n)
        else:
            pm_vexp_f64(x, y, n)
    elif op == LOG:
        if floating is float:
            pm_vlog_f32(x, y, n)
        else:
            pm_vlog_f64(x, y, n)
    elif op == POWER:
        if a == 1:
            for i in range(n):
                y[i] = c + b * x[i]
        elif a == 2:
            for i in range(n):
                v = c + b * x[i]
                y[i] = v * v
        else:
            for i in range(n):
                y[i] = _pow(c + b * x[i], a)


def activation_update_grad_input(input, output, grad_output, grad_input, int op,
                                 double a=0, double b=0, double c=0):
    """grad_input := f'(input) * grad_output elementwise, for the ``op`` of the forward.

    ``output`` is the forward's (Tanh, Sigmoid, ELU, Exp and Sqrt read it); ``grad_input``
    may be ``grad_output`` itself (in place).
    """
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    _check_op(op)
    cdef tuple s = shape(x)
    shape_is(y, "output", s)
    shape_is(go, "gradOutput", s)
    shape_is(gi, "gradInput", s)
    same_or_disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", x, "input")
    disjoint(gi, "gradInput", y, "output")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _update_grad_input(op, <float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y),
                               <float *> cnp.PyArray_DATA(go), <float *> cnp.PyArray_DATA(gi),
                               n, <float> a, <float> b, <float> c)
    else:
        with nogil:
            _update_grad_input(op, <double *> cnp.PyArray_DATA(x),
                               <double *> cnp.PyArray_DATA(y), <double *> cnp.PyArray_DATA(go),
                               <double *> cnp.PyArray_DATA(gi), n, a, b, c)


cdef void _update_grad_input(int op, const floating *x, const floating *y, const floating *go,
                             floating *gi, Py_ssize_t n,
                             floating a, floating b, floating c) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, g
    if op == THRESHOLD:
        if floating is float:
            pm_threshold_f32_bwd(x, go, gi, n, a)
        else:
            pm_threshold_f64_bwd(x, go, gi, n, a)
    elif op == LEAKY_RELU:
        for i in range(n):
            g = go[i]
            gi[i] = g if x[i] > 0 else a * g
    elif op == ELU:
        # From the output, as Torch does: it survives an in-place forward.
        if floating is float:
            pm_velu_bwd_f32(x, y, go, gi, n, a)
        else:
            pm_velu_bwd_f64(x, y, go, gi, n, a)
    elif op == HARD_TANH:
        for i in range(n):
            v = x[i]
            gi[i] = go[i] if (v > a and v < b) else 0
    elif op == TANH:  # 1 - y^2
        if floating is float:
            pm_vtanh_bwd_f32(y, go, gi, n)
        else:
            pm_vtanh_bwd_f64(y, go, gi, n)
    elif op == SIGMOID:  # y (1 - y)
        if floating is float:
            pm_vsigmoid_bwd_f32(y, go, gi, n)
        else:
            pm_vsigmoid_bwd_f64(y, go, gi, n)
    elif op == HARD_SIGMOID:
        for i in range(n):
            v = x[i]
            gi[i] = <floating> 0.2 * go[i] if (v > -2.5 and v < 2.5) else 0
    elif op == SOFT_PLUS:
        # d/dx log(1 + exp(a x)) / a = sigmoid(a x)
        if floating is float:
            pm_vsoftplus_bwd_f32(x, go, gi, n, a, b)
        else:
            pm_vsoftplus_bwd_f64(x, go, gi, n, a, b)
    elif op == SOFT_SIGN:
        for i in range(n):
            v = 1 + (fabsf(x[i]) if floating is float else fabs(x[i]))
            gi[i] = go[i] / (v * v)
    elif op == ABS:
        for i in range(n):
            v = x[i]
            gi[i] = go[i] if v > 0 else (-go[i] if v < 0 else 0)
    elif op == SQUARE:
        for i in range(n):
            gi[i] = 2 * x[i] * go[i]
    elif op == SQRT:
        for i in range(n):
            gi[i] = <floating> 0.5 * go[i] / y[i]
    elif op == EXP:
        if floating is float:
            pm_vmul_f32(y, go, gi, n)
        else:
            pm_vmul_f64(y, go, gi, n)
    elif op == LOG:
        for i in range(n):
            gi[i] = go[i] / x[i]
    elif op == POWER:
        if a == 1:
            for i in range(n):
                gi[i] = b * go[i]
        elif a == 2:
            for i in range(n):
                gi[i] = 2 * b * (c + b * x[i]) * go[i]
        else:
            for i in range(n):
                gi[i] = a * b * _pow(c + b * x[i], a - 1) * go[i]


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
    shape_is(y, "output", shape(x))
    disjoint(y, "output", x, "input")
    disjoint(y, "output", w, "weight")
    if cnp.PyArray_SIZE(x) == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _prelu_forward(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y),
                           <float *> cnp.PyArray_DATA(w), outer, ch, inner)
    else:
        with nogil:
            _prelu_forward(<double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(y),
                           <double *> cnp.PyArray_DATA(w), outer, ch, inner)


cdef void _prelu_forward(const floating *x, floating *y, const floating *w,
                         Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner) noexcept nogil:
    cdef Py_ssize_t o, k, i, base
    cdef floating a, v
    for o in range(outer):
        for k in range(ch):
            a = w[k]
            base = (o * ch + k) * inner
            for i in range(base, base + inner):
                v = x[i]
                y[i] = v if v > 0 else a * v


def prelu_update_grad_input(input, grad_output, grad_input, weight, bint shared):
    """grad_input := input > 0 ? grad_output : weight[c] * grad_output."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t outer, ch, inner
    _prelu_layout(x, w, shared, &outer, &ch, &inner)
    shape_is(go, "gradOutput", shape(x))
    shape_is(gi, "gradInput", shape(x))
    disjoint(gi, "gradInput", x, "input")
    disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", w, "weight")
    if cnp.PyArray_SIZE(x) == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _prelu_backward(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(go),
                            <float *> cnp.PyArray_DATA(gi), <float *> cnp.PyArray_DATA(w),
                            outer, ch, inner)
    else:
        with nogil:
            _prelu_backward(<double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(go),
                            <double *> cnp.PyArray_DATA(gi), <double *> cnp.PyArray_DATA(w),
                            outer, ch, inner)


cdef void _prelu_backward(const floating *x, const floating *go, floating *gi,
                          const floating *w, Py_ssize_t outer, Py_ssize_t ch,
                          Py_ssize_t inner) noexcept nogil:
    cdef Py_ssize_t o, k, i, base
    cdef floating a
    for o in range(outer):
        for k in range(ch):
            a = w[k]
            base = (o * ch + k) * inner
            for i in range(base, base + inner):
                gi[i] = go[i] if x[i] > 0 else a * go[i]


def prelu_acc_grad_parameters(input, grad_output, grad_weight, bint shared, double scale):
    """grad_weight[c] += scale * sum(input * grad_output where input <= 0) over channel c."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t outer, ch, inner
    _prelu_layout(x, gw, shared, &outer, &ch, &inner)
    shape_is(go, "gradOutput", shape(x))
    disjoint(gw, "gradWeight", x, "input")
    disjoint(gw, "gradWeight", go, "gradOutput")
    if scale == 0 or cnp.PyArray_SIZE(x) == 0:
        return
    if t == cnp.NPY_FLOAT32:
        with nogil:
            _prelu_acc(<float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(go),
                       <float *> cnp.PyArray_DATA(gw), scale, outer, ch, inner)
    else:
        with nogil:
            _prelu_acc(<double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(go),
                       <double *> cnp.PyArray_DATA(gw), scale, outer, ch, inner)


cdef void _prelu_acc(const floating *x, const floating *go, floating *gw, double scale,
                     Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner) noexcept nogil:
    cdef Py_ssize_t o, k, i, base
    cdef double s
    for k in range(ch):
        s = 0
        for o in range(outer):
            base = (o * ch + k) * inner
            for i in range(base, base + inner):
                if x[i] <= 0:
                    s += x[i] * go[i]
        gw[k] += <floating> (scale * s)
