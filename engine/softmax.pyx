"""Kernels of SoftMax, SoftMin and LogSoftMax.

Torch's layout: the function runs along the features of a vector (n,) or a batch (b, n), and
along the channels of an image (c, h, w) or a batch of images (b, c, h, w): the input is seen
as (outer, n, inner) and each of the outer * inner lines of n values, stride inner, is one
distribution. LogSoftMax takes a vector or a batch only, as in BigDL. The loops (vectorised exp,
rows in passes of max / exp / sum / scale, channel lines in contiguous blocks) are
pm_softmax_fwd and pm_softmax_bwd of vecmath.h.
"""

cimport numpy as cnp

from engine._check cimport GIL_FREE_WORK, float_type, array, ndim, same_shape, disjoint
from engine.vecmath cimport pm_softmax_fwd, pm_softmax_bwd

cnp.import_array()


cdef int _layout(cnp.ndarray x, int max_nd, Py_ssize_t *outer, Py_ssize_t *n,
                 Py_ssize_t *inner) except -1:
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(x)
    cdef int nd = ndim(x, "input", 1, max_nd)
    if nd == 1:
        outer[0], n[0], inner[0] = 1, d[0], 1
    elif nd == 2:
        outer[0], n[0], inner[0] = d[0], d[1], 1
    elif nd == 3:
        outer[0], n[0], inner[0] = 1, d[0], d[1] * d[2]
    else:
        outer[0], n[0], inner[0] = d[0], d[1], d[2] * d[3]
    return 0


def softmax_update_output(input, output, bint negate):
    """output := exp(s x) / sum(exp(s x)) along the distribution axis, s = -1 if ``negate``.

    (n,), (b, n), (c, h, w), (b, c, h, w); SoftMin is SoftMax with ``negate``.
    """
    _update_output(input, output, 4, negate, False)


def log_softmax_update_output(input, output):
    """output := x - max(x) - log(sum(exp(x - max(x)))) along the features of (n,) or (b, n)."""
    _update_output(input, output, 2, False, True)


cdef int _update_output(input, output, int max_dims, bint negate, bint take_log) except -1:
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t outer, n, inner
    _layout(x, max_dims, &outer, &n, &inner)
    same_shape(y, "output", x)
    disjoint(y, "output", x, "input")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    if size == 0:
        return 0
    if size < GIL_FREE_WORK:  # a small batch: the GIL is kept (see _check.pxd)
        pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y), outer, n,
                       inner, -1 if negate else 1, take_log)
        return 0
    with nogil:
        pm_softmax_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y), outer, n,
                       inner, -1 if negate else 1, take_log)
    return 0


def softmax_update_grad_input(output, grad_output, grad_input, bint negate):
    """grad_input := s * y * (grad_output - sum(grad_output * y)), y the forward's output."""
    _grad_input(output, grad_output, grad_input, 4, negate, False)


def log_softmax_update_grad_input(output, grad_output, grad_input):
    """grad_input := grad_output - exp(y) * sum(grad_output), y the forward's output."""
    _grad_input(output, grad_output, grad_input, 2, False, True)


cdef int _grad_input(output, grad_output, grad_input, int max_dims, bint negate,
                     bint take_log) except -1:
    cdef int t = float_type(grad_input, "gradInput")
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t outer, n, inner
    _layout(y, max_dims, &outer, &n, &inner)
    same_shape(go, "gradOutput", y)
    same_shape(gi, "gradInput", y)
    disjoint(gi, "gradInput", y, "output")
    disjoint(gi, "gradInput", go, "gradOutput")
    if cnp.PyArray_SIZE(y) == 0:
        return 0
    with nogil:
        pm_softmax_bwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(y), cnp.PyArray_DATA(go),
                       cnp.PyArray_DATA(gi), outer, n, inner, -1 if negate else 1, take_log)
    return 0
