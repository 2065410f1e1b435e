"""Kernels of the float32 3x3, stride-1 convolution by Winograd's F(4x4, 3x3) (_conv3x3.h).

They compute what conv.pyx's conv_update_output, conv_update_grad_input and
conv_acc_grad_parameters compute for an ungrouped, undilated 3x3 kernel with unit strides and
any padding (SAME included), in one scratch vector of conv3x3_scratch_size(...) numbers.
conv3x3_scratch_size says 0 where they do not apply (float64, other kernels, strides,
dilations or groups) and, with ``rule``, where im2col + GEMM is as fast (see _pays).
"""

cimport numpy as cnp
from libc.limits cimport INT_MAX

from engine._check cimport (
    shape, float_type, array, array_or_none, f32, ndim, dim, vector_of, shape_is,
    disjoint_from,
)
from engine._geometry cimport out_size

cdef extern from "_conv3x3.h" nogil:
    size_t pm_w3_scratch(int C, int O, int oH, int oW)
    void pm_w3_filters(const float *w, int O, int C, ptrdiff_t so, ptrdiff_t si, int flip,
                       float *U)
    void pm_w3_correlate(const float *x, float *y, const float *bias, int n, int C, int H,
                         int W, int O, int oH, int oW, int pT, int pL, float *work)
    void pm_w3_filter_grad(const float *x, const float *gy, float *gw, float scale, int n,
                           int C, int H, int W, int O, int oH, int oW, int pT, int pL,
                           float *work)

cnp.import_array()


cdef struct Shape:
    int N, C, H, W, M, oH, oW, pT, pL


cdef bint _applies(object input, object weight, Py_ssize_t sw, Py_ssize_t sh, Py_ssize_t pw,
                   Py_ssize_t ph, Py_ssize_t dw, Py_ssize_t dh, Py_ssize_t groups):
    """Whether these arguments are a float32 3x3 convolution the kernels here compute."""
    if not (cnp.PyArray_Check(input) and cnp.PyArray_Check(weight)):
        return False
    cdef cnp.ndarray x = <cnp.ndarray> input
    cdef cnp.ndarray w = <cnp.ndarray> weight
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or cnp.PyArray_TYPE(w) != cnp.NPY_FLOAT32:
        return False
    if cnp.PyArray_NDIM(x) not in (3, 4) or cnp.PyArray_NDIM(w) != 4:
        return False
    if sw != 1 or sh != 1 or dw != 1 or dh != 1 or groups != 1:
        return False
    if not ((0 <= pw <= 2 and 0 <= ph <= 2) or (pw == -1 and ph == -1)):
        return False
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(w)
    cdef int nd = cnp.PyArray_NDIM(x)
    return d[2] == 3 and d[3] == 3 and d[0] > 0 and d[1] == cnp.PyArray_DIMS(x)[nd - 3]


cdef int _shape(Shape *s, cnp.ndarray x, cnp.ndarray w, str wwhat, Py_ssize_t pw,
                Py_ssize_t ph) except -1:
    """Fill ``s`` for the convolution of ``x`` by the (M, C, 3, 3) weight ``w``."""
    cdef Py_ssize_t pads[2]
    cdef Py_ssize_t oH, oW, pT
    if not ((0 <= pw <= 2 and 0 <= ph <= 2) or (pw == -1 and ph == -1)):
        raise ValueError(f"pads must lie in [0, 2], or both be -1 for SAME, got {pw}, {ph}")
    cdef int nd = ndim(x, "input", 3, 4)
    ndim(w, wwhat, 4, 4)
    if dim(w, 0) == 0 or dim(w, 2) != 3 or dim(w, 3) != 3:
        raise ValueError(f"{wwhat} has shape {shape(w)}, expected (planes, {dim(x, nd - 3)}, "
                         f"3, 3)")
    s.N = dim(x, 0) if nd == 4 else 1
    s.C, s.H, s.W, s.M = dim(x, nd - 3), dim(x, nd - 2), dim(x, nd - 1), dim(w, 0)
    if s.C == 0 or s.C != dim(w, 1):
        raise ValueError(f"input has {s.C} channels, expected {dim(w, 1)}")
    oH = out_size(s.H, 3, 1, ph, 1, False, pads)
    pT = pads[0]
    oW = out_size(s.W, 3, 1, pw, 1, False, pads)
    if oH <= 0 or oW <= 0:
        raise ValueError(f"input is {s.H}x{s.W} padded by {ph}, {pw}: smaller than the 3x3 "
                         f"kernel")
    for size, what in ((<Py_ssize_t> s.C * s.H * s.W, "an image size"),
                       (<Py_ssize_t> s.M * oH * oW, "an output size"),
                       (<Py_ssize_t> (s.C + 8) * (s.M + 8) * 36, "the transformed weight"),
                       (<Py_ssize_t> (s.H + 8) * (s.W + 8) * (s.C + s.M + 16), "a tile grid")):
        if size > INT_MAX // 2:
            raise ValueError(f"{what} of {size} exceeds the limit {INT_MAX // 2}")
    s.oH, s.oW, s.pT, s.pL = oH, oW, pT, pads[0]
    return 0


cdef Py_ssize_t _size(const Shape *s):
    """Scratch numbers: the larger of the forward's and the input gradient's."""
    cdef size_t a = pm_w3_scratch(s.C, s.M, s.oH, s.oW)
    cdef size_t b = pm_w3_scratch(s.M, s.C, s.H, s.W)
    return <Py_ssize_t> (a if a > b else b)


cdef bint _pays(const Shape *s):
    """Where the Winograd kernels beat im2col + GEMM, forward plus backward (float32, one
    thread, CPU time; bench/bench_layers.py's conv3x3 section prints both for a set of shapes
    and what this rule picks): at least 3 input and 8 output planes (fewer are padded to a
    vector of 8: (16, 3, 32, 32) -> 16 still runs in 0.74-0.91 of im2col's time) and at least
    4 tiles of 4x4 outputs per sample; with 4096 plane pairs or more, at least 25 tiles. The
    products run a sample's tiles as rows, a few at a time, against all the transformed
    filters: with many planes those leave L2 and few tiles do not pay for reading them.
    (32, 16, 8, 8) -> 16 (4 tiles) takes 0.26-0.29 of im2col's time, (32, 16, 28, 28) -> 32
    0.37-0.39, (8, 64, 28, 28) -> 64 (49 tiles) 0.48; (16, 64, 7, 7) -> 64 (4 tiles) 0.89-0.93
    and (16, 64, 14, 14) -> 128 (16 tiles) 0.76-1.18 about break even, (16, 128, 4, 4) -> 128
    (1 tile) takes 2.1x."""
    cdef Py_ssize_t tiles = <Py_ssize_t> ((s.oH + 3) // 4) * ((s.oW + 3) // 4)
    if s.C < 3 or s.M < 8 or tiles < 4:
        return False
    return tiles >= 25 or <Py_ssize_t> s.C * s.M < 4096


def conv3x3_scratch_size(input, weight, Py_ssize_t stride_w, Py_ssize_t stride_h,
                         Py_ssize_t pad_w, Py_ssize_t pad_h, Py_ssize_t dilation_w,
                         Py_ssize_t dilation_h, Py_ssize_t n_group, bint rule=True):
    """Length of the scratch vector of the kernels here for these conv_update_output arguments;
    0 where they do not apply, or (``rule``) where im2col + GEMM is as fast. Arguments that
    the convolution refuses give 0: conv.pyx's kernels say why."""
    if not _applies(input, weight, stride_w, stride_h, pad_w, pad_h, dilation_w, dilation_h,
                    n_group):
        return 0
    cdef Shape s
    try:
        _shape(&s, <cnp.ndarray> input, <cnp.ndarray> weight, "weight", pad_w, pad_h)
    except ValueError:
        return 0
    if rule and not _pays(&s):
        return 0
    return _size(&s)


cdef tuple _grid(cnp.ndarray x, const Shape *s):
    """Shape of the output for the input ``x``."""
    if cnp.PyArray_NDIM(x) == 4:
        return (s.N, s.M, s.oH, s.oW)
    return (s.M, s.oH, s.oW)


cdef cnp.ndarray _scratch(object scratch, const Shape *s):
    cdef cnp.ndarray sc = array(scratch, "scratch", cnp.NPY_FLOAT32, True)
    vector_of(sc, "scratch", _size(s))
    return sc


def conv3x3_update_output(input, output, weight, bias, scratch, Py_ssize_t pad_w,
                          Py_ssize_t pad_h):
    """output := conv(input, weight) + bias for a (M, C, 3, 3) float32 weight, stride 1.

    (N, C, H, W) -> (N, M, oH, oW), oH = H + 2 pad_h - 2; (C, H, W) -> (M, oH, oW); pads -1,
    -1 mean SAME. ``bias`` may be None; ``scratch`` has conv3x3_scratch_size(...) numbers.
    """
    cdef int t = float_type(weight, "weight")
    if t != cnp.NPY_FLOAT32:
        raise TypeError("weight has dtype float64, expected float32")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef Shape s
    _shape(&s, x, w, "weight", pad_w, pad_h)
    if b is not None:
        vector_of(b, "bias", s.M)
    shape_is(y, "output", _grid(x, &s))
    cdef cnp.ndarray sc = _scratch(scratch, &s)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", sc, "scratch")
    disjoint_from(sc, "scratch", x, "input", w, "weight", b, "bias")
    with nogil:
        if s.N:
            pm_w3_filters(f32(w), s.M, s.C, <ptrdiff_t> s.C * 9, 9, 0, f32(sc))
            pm_w3_correlate(f32(x), f32(y), f32(b), s.N, s.C, s.H, s.W, s.M, s.oH, s.oW, s.pT,
                            s.pL, f32(sc))


def conv3x3_update_grad_input(input, grad_output, grad_input, weight, scratch,
                              Py_ssize_t pad_w, Py_ssize_t pad_h):
    """grad_input := the adjoint of conv3x3_update_output applied to grad_output."""
    cdef int t = float_type(weight, "weight")
    if t != cnp.NPY_FLOAT32:
        raise TypeError("weight has dtype float64, expected float32")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Shape s
    _shape(&s, x, w, "weight", pad_w, pad_h)
    shape_is(go, "gradOutput", _grid(x, &s))
    shape_is(gi, "gradInput", shape(x))
    cdef cnp.ndarray sc = _scratch(scratch, &s)
    disjoint_from(gi, "gradInput", go, "gradOutput", w, "weight", sc, "scratch")
    disjoint_from(sc, "scratch", go, "gradOutput", w, "weight")
    with nogil:
        if s.N:
            pm_w3_filters(f32(w), s.C, s.M, 9, <ptrdiff_t> s.C * 9, 1, f32(sc))
            pm_w3_correlate(f32(go), f32(gi), NULL, s.N, s.M, s.oH, s.oW, s.C, s.H, s.W,
                            2 - s.pT, 2 - s.pL, f32(sc))


def conv3x3_acc_grad_parameters(input, grad_output, grad_weight, grad_bias, scratch,
                                Py_ssize_t pad_w, Py_ssize_t pad_h, double scale_w,
                                double scale_b):
    """grad_weight += scale_w * dL/dweight; grad_bias += scale_b * grad_output summed per plane.

    A scale of 0 skips its term; ``grad_bias`` may be None.
    """
    cdef int t = float_type(grad_weight, "gradWeight")
    if t != cnp.NPY_FLOAT32:
        raise TypeError("gradWeight has dtype float64, expected float32")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef Shape s
    _shape(&s, x, gw, "gradWeight", pad_w, pad_h)
    if gb is not None:
        vector_of(gb, "gradBias", s.M)
    shape_is(go, "gradOutput", _grid(x, &s))
    cdef cnp.ndarray sc = _scratch(scratch, &s)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias",
                  sc, "scratch")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput", gw, "gradWeight",
                  sc, "scratch")
    disjoint_from(sc, "scratch", x, "input", go, "gradOutput")
    with nogil:
        if s.N and scale_w != 0:
            pm_w3_filter_grad(f32(x), f32(go), f32(gw), <float> scale_w, s.N, s.C, s.H, s.W,
                              s.M, s.oH, s.oW, s.pT, s.pL, f32(sc))
        if s.N and scale_b != 0 and gb is not None:
            _bias_grad(f32(go), f32(gb), s.N, s.M, <size_t> s.oH * s.oW, <float> scale_b)


cdef void _bias_grad(const float *go, float *gb, int n, int planes, size_t size,
                     float scale) noexcept nogil:
    """gb[p] += scale * sum(go[:, p]), over eight running sums (one vector register)."""
    cdef int p
    cdef size_t i
    cdef float a0, a1, a2, a3, a4, a5, a6, a7
    for _ in range(n):
        for p in range(planes):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0
            i = 0
            while i + 8 <= size:
                a0 += go[i]
                a1 += go[i + 1]
                a2 += go[i + 2]
                a3 += go[i + 3]
                a4 += go[i + 4]
                a5 += go[i + 5]
                a6 += go[i + 6]
                a7 += go[i + 7]
                i += 8
            while i < size:
                a0 += go[i]
                i += 1
            gb[p] += scale * (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)))
            go += size
