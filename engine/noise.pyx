"""Kernels of the noise layers (SpatialDropout1D/2D/3D, GaussianDropout, GaussianNoise) and of
Masking.

Draws are counter-based (engine/_hash.pxd): one 64-bit seed from the layer's generator gives
the whole draw, element i from draw i, so a seed reproduces it and nothing is allocated.

The spatial dropouts keep or drop whole feature maps: their ``noise`` has the input's shape
with one block of consecutive axes set to 1 (BigDL's noise shapes: (N, C, 1, 1) for NCHW,
(N, 1, 1, C) for NHWC, (N, 1, C) for 1-D maps), so the input is seen as (A, B, C) and the mask
as (A, C), repeated along B.
"""

cimport numpy as cnp
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, ndim, shape_is, disjoint
from engine._hash cimport draw64, keep_cut, normal01

cnp.import_array()


cdef int _probability(double p) except -1:
    if not (0 <= p <= 1):
        raise ValueError(f"the drop probability must lie in [0, 1], got {p}")
    return 0


cdef int _layout(cnp.ndarray x, cnp.ndarray r, Py_ssize_t *a, Py_ssize_t *b,
                 Py_ssize_t *c) except -1:
    """(A, B, C) of ``x`` for a mask ``r`` shaped like ``x`` but for one block of consecutive
    axes of size 1 (the axes it repeats along); ValueError otherwise."""
    cdef int nd = cnp.PyArray_NDIM(x), i, lo = -1, hi = -1
    cdef cnp.npy_intp *xd = cnp.PyArray_DIMS(x)
    cdef cnp.npy_intp *rd = cnp.PyArray_DIMS(r)
    if cnp.PyArray_NDIM(r) != nd:
        raise ValueError(f"noise has shape {shape(r)}, which does not broadcast to the "
                         f"input's {shape(x)} along one block of axes")
    for i in range(nd):
        if rd[i] != xd[i]:
            if rd[i] != 1 or (hi >= 0 and hi != i - 1):
                raise ValueError(f"noise has shape {shape(r)}, which does not broadcast to "
                                 f"the input's {shape(x)} along one block of axes")
            lo = i if lo < 0 else lo
            hi = i
    if lo < 0:
        lo = hi = nd  # the mask is the input's shape: B = 1
    a[0] = b[0] = c[0] = 1
    for i in range(nd):
        if i < lo:
            a[0] *= xd[i]
        elif i <= hi:
            b[0] *= xd[i]
        else:
            c[0] *= xd[i]
    return 0


# -- spatial dropout ---------------------------------------------------------------------------

def spatial_dropout_update_output(input, output, noise, double p, bint train, uint64_t seed):
    """Training: noise := a mask of 0 and 1, each feature map kept with probability 1 - p,
    output := input * noise (the mask repeated along its size-1 axes; no rescaling, as BigDL).
    Evaluation: output := input * (1 - p); ``noise`` is then unused and may be None.
    """
    _probability(p)
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray r = None
    cdef Py_ssize_t a = 1, b = cnp.PyArray_SIZE(x), c = 1
    shape_is(y, "output", shape(x))
    disjoint(y, "output", x, "input")
    if train:
        r = array(noise, "noise", t, True)
        _layout(x, r, &a, &b, &c)
        disjoint(r, "noise", x, "input")
        disjoint(r, "noise", y, "output")
    cdef uint64_t cut = keep_cut(p)
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _spatial_forward(f32(x), f32(y), f32(r), a, b, c, 1 - p, cut, seed)
        else:
            _spatial_forward(f64(x), f64(y), f64(r), a, b, c, 1 - p, cut, seed)


cdef void _spatial_forward(const floating *x, floating *y, floating *r, Py_ssize_t na,
                           Py_ssize_t nb, Py_ssize_t nc, double keep, uint64_t cut,
                           uint64_t seed) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating f = <floating> keep
    if r == NULL:
        for i in range(na * nb * nc):
            y[i] = x[i] * f
        return
    for i in range(na * nc):
        r[i] = 1 if (draw64(seed, <uint64_t> i) >> 11) >= cut else 0
    _spatial_apply(x, r, y, na, nb, nc)


cdef void _spatial_apply(const floating *x, const floating *r, floating *y, Py_ssize_t na,
                         Py_ssize_t nb, Py_ssize_t nc) noexcept nogil:
    """y[a, b, c] := x[a, b, c] * r[a, c]."""
    cdef Py_ssize_t i, j, k
    cdef const floating *xr
    cdef const floating *rr
    cdef floating *yr
    cdef floating m
    if nc == 1:  # channels first: one factor per run of nb values
        for i in range(na):
            m = r[i]
            xr = x + i * nb
            yr = y + i * nb
            for j in range(nb):
                yr[j] = xr[j] * m
        return
    for i in range(na):
        rr = r + i * nc
        for j in range(nb):
            xr = x + (i * nb + j) * nc
            yr = y + (i * nb + j) * nc
            for k in range(nc):
                yr[k] = xr[k] * rr[k]


def spatial_dropout_update_grad_input(grad_output, grad_input, noise, double p, bint train):
    """Training: grad_input := grad_output * noise (the forward's mask, repeated). Evaluation:
    grad_input := grad_output * (1 - p) (``noise`` may be None)."""
    _probability(p)
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray r = None
    cdef Py_ssize_t a = 1, b = cnp.PyArray_SIZE(go), c = 1
    shape_is(go, "gradOutput", shape(gi))  # gradInput is shaped like the input
    disjoint(gi, "gradInput", go, "gradOutput")
    if train:
        r = array(noise, "noise", t, False)
        _layout(go, r, &a, &b, &c)
        disjoint(gi, "gradInput", r, "noise")
    if cnp.PyArray_SIZE(go) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _spatial_backward(f32(go), f32(r), f32(gi), a, b, c, 1 - p)
        else:
            _spatial_backward(f64(go), f64(r), f64(gi), a, b, c, 1 - p)


cdef void _spatial_backward(const floating *go, const floating *r, floating *gi, Py_ssize_t na,
                            Py_ssize_t nb, Py_ssize_t nc, double keep) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating f = <floating> keep
    if r == NULL:
        for i in range(na * nb * nc):
            gi[i] = go[i] * f
        return
    _spatial_apply(go, r, gi, na, nb, nc)


# -- Gaussian noise ----------------------------------------------------------------------------

cdef int _stddev(double stddev) except -1:
    if not stddev >= 0:
        raise ValueError(f"the standard deviation must be >= 0, got {stddev}")
    return 0


def gaussian_dropout_update_output(input, output, noise, double stddev, bint train,
                                   uint64_t seed):
    """Training: noise := 1 + stddev * z, z standard normal (draw i of ``seed`` for element
    i), output := input * noise. Evaluation: output := input (``noise`` may be None)."""
    _stddev(stddev)
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray r = None
    shape_is(y, "output", shape(x))
    disjoint(y, "output", x, "input")
    if train:
        r = array(noise, "noise", t, True)
        shape_is(r, "noise", shape(x))
        disjoint(r, "noise", x, "input")
        disjoint(r, "noise", y, "output")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gaussian_forward(f32(x), f32(y), f32(r), n, stddev, True, seed)
        else:
            _gaussian_forward(f64(x), f64(y), f64(r), n, stddev, True, seed)


def gaussian_noise_update_output(input, output, double stddev, bint train, uint64_t seed):
    """Training: output := input + stddev * z, z standard normal (draw i of ``seed`` for
    element i). Evaluation: output := input."""
    _stddev(stddev)
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    shape_is(y, "output", shape(x))
    disjoint(y, "output", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gaussian_forward(f32(x), f32(y), NULL, n, stddev if train else 0, False, seed)
        else:
            _gaussian_forward(f64(x), f64(y), NULL, n, stddev if train else 0, False, seed)


cdef void _gaussian_forward(const floating *x, floating *y, floating *r, Py_ssize_t n,
                            double stddev, bint multiply, uint64_t seed) noexcept nogil:
    """multiply: y = x * (1 + stddev z), the factors kept in r (r NULL: y = x); otherwise
    y = x + stddev z (stddev 0: y = x)."""
    cdef Py_ssize_t i
    cdef floating f
    if multiply:
        if r == NULL:
            memcpy(y, x, n * sizeof(floating))
            return
        for i in range(n):
            f = <floating> (1 + stddev * normal01(seed, <uint64_t> i))
            r[i] = f
            y[i] = x[i] * f
        return
    if stddev == 0:
        memcpy(y, x, n * sizeof(floating))
        return
    for i in range(n):
        y[i] = x[i] + <floating> (stddev * normal01(seed, <uint64_t> i))


def gaussian_dropout_update_grad_input(grad_output, grad_input, noise, bint train):
    """Training: grad_input := grad_output * noise (the forward's factors). Evaluation:
    grad_input := grad_output (``noise`` may be None)."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray r = None
    shape_is(go, "gradOutput", shape(gi))  # gradInput is shaped like the input
    disjoint(gi, "gradInput", go, "gradOutput")
    if train:
        r = array(noise, "noise", t, False)
        if shape(r) != shape(go):
            raise ValueError(f"gradOutput has shape {shape(go)}, but the forward's noise "
                             f"has {shape(r)}")
        disjoint(gi, "gradInput", r, "noise")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _multiply(f32(go), f32(r), f32(gi), n)
        else:
            _multiply(f64(go), f64(r), f64(gi), n)


def gaussian_noise_update_grad_input(grad_output, grad_input):
    """grad_input := grad_output (the noise is added: it does not change the gradient)."""
    gaussian_dropout_update_grad_input(grad_output, grad_input, None, False)


cdef void _multiply(const floating *go, const floating *r, floating *gi,
                    Py_ssize_t n) noexcept nogil:
    """gi = go * r, or go for r NULL."""
    cdef Py_ssize_t i
    if r == NULL:
        memcpy(gi, go, n * sizeof(floating))
        return
    for i in range(n):
        gi[i] = go[i] * r[i]


# -- Masking -----------------------------------------------------------------------------------

cdef int _rows(cnp.ndarray x, Py_ssize_t *rows, Py_ssize_t *width) except -1:
    """(batch * time, features) of an input (batch, time, ...) of at least 2 axes."""
    cdef int nd = ndim(x, "input", 2, 64), i
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    rows[0] = d[0] * d[1]
    width[0] = 1
    for i in range(2, nd):
        width[0] *= d[i]
    return 0


def masking_update_output(input, output, double mask_value):
    """For each (batch, time) step of an input (batch, time, ...): output := 0 where every
    value of the step equals ``mask_value``, else output := input."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t rows, width
    _rows(x, &rows, &width)
    shape_is(y, "output", shape(x))
    disjoint(y, "output", x, "input")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mask(f32(x), f32(x), f32(y), rows, width, mask_value)
        else:
            _mask(f64(x), f64(x), f64(y), rows, width, mask_value)


def masking_update_grad_input(input, grad_output, grad_input, double mask_value):
    """grad_input := 0 on the steps of ``input`` that are all ``mask_value``, else
    grad_output."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t rows, width
    _rows(x, &rows, &width)
    shape_is(go, "gradOutput", shape(x))
    shape_is(gi, "gradInput", shape(x))
    disjoint(gi, "gradInput", x, "input")
    disjoint(gi, "gradInput", go, "gradOutput")
    if cnp.PyArray_SIZE(x) == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mask(f32(x), f32(go), f32(gi), rows, width, mask_value)
        else:
            _mask(f64(x), f64(go), f64(gi), rows, width, mask_value)


cdef void _mask(const floating *x, const floating *src, floating *dst, Py_ssize_t rows,
                Py_ssize_t width, double mask_value) noexcept nogil:
    """dst row := 0 where the row of x is all mask_value, else the row of src."""
    cdef Py_ssize_t i, k
    cdef floating v = <floating> mask_value
    cdef bint masked
    for i in range(rows):
        masked = True
        for k in range(width):
            if x[i * width + k] != v:
                masked = False
                break
        if masked:
            memset(dst + i * width, 0, width * sizeof(floating))
        else:
            memcpy(dst + i * width, src + i * width, width * sizeof(floating))
