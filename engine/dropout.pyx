"""Kernels of Dropout: draw the mask from a seed, apply it, and the evaluation scaling.

The mask is counter-based: element i is kept when splitmix64(seed + i * golden) lands above
p * 2**64, so one 64-bit seed from the library's generator reproduces the whole mask, no draw
is allocated and the loop has no state to carry between elements.
"""

cimport numpy as cnp
from libc.stdint cimport uint64_t

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, shape_is, disjoint, disjoint_from
from engine._inplace cimport same_or_disjoint

cnp.import_array()


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """The splitmix64 finaliser: a bijection that scrambles every input bit into the output."""
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef int _check(double p, cnp.ndarray out, str out_what, cnp.ndarray src,
                str src_what) except -1:
    """The drop probability, and ``out`` shaped like ``src``: in place or disjoint from it."""
    if not (0 <= p < 1):
        raise ValueError(f"the drop probability must lie in [0, 1), got {p}")
    shape_is(out, out_what, shape(src))
    same_or_disjoint(out, out_what, src, src_what)
    return 0


def dropout_update_output(input, output, noise, double p, bint scale, bint train,
                          uint64_t seed):
    """Training: noise := mask / (1 - p) (or mask, without ``scale``), output := input * noise,
    each element dropped with probability p. Evaluation: output := input, times 1 - p without
    ``scale``; ``noise`` is then unused and may be None. ``output`` may be ``input``.
    """
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray r = None
    _check(p, y, "output", x, "input")
    if train:
        r = array(noise, "noise", t, True)
        shape_is(r, "noise", shape(x))
        disjoint_from(r, "noise", x, "input", y, "output")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef double keep = 1.0 / (1 - p) if scale else 1.0
    cdef double factor = 1.0 if scale else 1 - p
    # Dropped when the top 53 bits of the hash fall below p * 2**53 (exact for double p).
    cdef uint64_t cut = <uint64_t> (p * 9007199254740992.0)
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _forward(f32(x), f32(y), f32(r), n, keep, factor, cut, seed)
        else:
            _forward(f64(x), f64(y), f64(r), n, keep, factor, cut, seed)


cdef void _forward(const floating *x, floating *y, floating *r, Py_ssize_t n, double keep,
                   double factor, uint64_t cut, uint64_t seed) noexcept nogil:
    """Training (a noise buffer r): draw the mask; evaluation (r NULL): scale."""
    if r != NULL:
        _draw(x, y, r, n, <floating> keep, cut, seed)
    else:
        _scale(x, y, n, <floating> factor)


cdef void _draw(const floating *x, floating *y, floating *r, Py_ssize_t n, floating keep,
                uint64_t cut, uint64_t seed) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating m
    for i in range(n):
        m = keep if (_mix(seed + <uint64_t> i * <uint64_t> 0x9E3779B97F4A7C15ULL) >> 11) >= cut \
            else 0
        r[i] = m
        y[i] = x[i] * m


cdef void _scale(const floating *x, floating *y, Py_ssize_t n, floating factor) noexcept nogil:
    cdef Py_ssize_t i
    if factor == 1:
        if x != y:
            for i in range(n):
                y[i] = x[i]
        return
    for i in range(n):
        y[i] = x[i] * factor


def dropout_update_grad_input(grad_output, grad_input, noise, double p, bint scale,
                              bint train):
    """Training: grad_input := grad_output * noise (the forward's). Evaluation: grad_input :=
    grad_output, times 1 - p without ``scale``. ``grad_input`` may be ``grad_output``.
    """
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray r = None
    _check(p, gi, "gradInput", go, "gradOutput")
    if train:
        r = array(noise, "noise", t, False)
        if shape(r) != shape(go):
            raise ValueError(f"gradOutput has shape {shape(go)}, but the forward's mask "
                             f"has {shape(r)}")
        disjoint(gi, "gradInput", r, "noise")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    cdef double factor = 1.0 if scale else 1 - p
    if n == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _backward(f32(go), f32(r), f32(gi), n, factor)
        else:
            _backward(f64(go), f64(r), f64(gi), n, factor)


cdef void _backward(const floating *go, const floating *r, floating *gi, Py_ssize_t n,
                    double factor) noexcept nogil:
    """Training (the forward's noise r): multiply by it; evaluation (r NULL): scale."""
    cdef Py_ssize_t i
    if r == NULL:
        _scale(go, gi, n, <floating> factor)
        return
    for i in range(n):
        gi[i] = go[i] * r[i]
