"""Kernels of the arithmetic layers AddConstant, MulConstant and Negative: one affine map.

They take arrays of any shape; ``output`` may be ``input`` and ``grad_input`` may be
``grad_output`` (in place), as the layers' ``inplace`` flag asks. The table layers
CDivTable, CMinTable and CAveTable run on ``engine.table``'s n-ary kernels.
"""

cimport numpy as cnp

from engine.blas cimport floating
from engine._check cimport shape, float_type, array, f32, f64, shape_is
from engine._inplace cimport same_or_disjoint

cnp.import_array()


# -- y = x * scale + shift -------------------------------------------------------------------

def affine_update_output(input, output, double scale, double shift):
    """output := input * scale + shift elementwise (a product by 1 or a sum with 0 is not
    taken, so that -0.0 and the exact input stay); ``output`` may be ``input``."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    shape_is(y, "output", shape(x))
    same_or_disjoint(y, "output", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _affine(f32(x), f32(y), n, <float> scale, <float> shift)
        else:
            _affine(f64(x), f64(y), n, scale, shift)


def affine_update_grad_input(grad_output, grad_input, double scale):
    """grad_input := grad_output * scale; ``grad_input`` may be ``grad_output``."""
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    shape_is(gi, "gradInput", shape(go))
    same_or_disjoint(gi, "gradInput", go, "gradOutput")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _affine(f32(go), f32(gi), n, <float> scale, <float> 0)
        else:
            _affine(f64(go), f64(gi), n, scale, 0)


cdef void _affine(const floating *x, floating *y, Py_ssize_t n, floating scale,
                  floating shift) noexcept nogil:
    cdef Py_ssize_t i
    if scale == 1 and shift == 0:
        if x != y:
            for i in range(n):
                y[i] = x[i]
    elif scale == 1:
        for i in range(n):
            y[i] = x[i] + shift
    elif shift == 0:
        for i in range(n):
            y[i] = x[i] * scale
    else:
        for i in range(n):
            y[i] = x[i] * scale + shift
