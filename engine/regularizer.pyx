"""Kernel of the L1/L2 regularizers, added to a gradient inside accGradParameters."""

cimport numpy as cnp

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, shape_is, disjoint

cnp.import_array()


def acc_regularization(weight, grad_weight, double l1, double l2, double scale):
    """grad_weight += scale * (l1 * sign(weight) + l2 * weight), any shape."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray g = array(grad_weight, "gradWeight", t, True)
    shape_is(g, "gradWeight", shape(w))
    disjoint(g, "gradWeight", w, "weight")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(w)
    if scale == 0 or (l1 == 0 and l2 == 0):
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _acc_regularization(f32(w), f32(g), <float> (scale * l1), <float> (scale * l2), n)
        else:
            _acc_regularization(f64(w), f64(g), scale * l1, scale * l2, n)


cdef void _acc_regularization(const floating *w, floating *g, floating a1, floating a2,
                              Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = w[i]
        g[i] += a2 * v + (a1 if v > 0 else (-a1 if v < 0 else 0))
