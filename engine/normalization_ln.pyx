"""Kernels of LayerNormalization: each row of n values (the last axis) normalised on its own.

    y = (x - mean) * invstd * weight + bias,   invstd = 1 / sqrt(biased var + eps)

An input of any rank is seen as (rows, n). The forward keeps each row's mean and invstd for
the backward. The backward of a row needs two sums over it, a = sum(go * w) and
b = sum(go * w * xhat):

    gi = invstd * (go * w - a / n - xhat * b / n),   xhat = (x - mean) * invstd

and the parameter gradients are column sums over the rows, dw = sum(go * xhat), db = sum(go).
They are gathered into ``sums``, a (2, n) float64 buffer the caller owns, either in the same
row pass that writes gi (the row is then read from memory once for both) or on their own;
layernorm_acc_grad_parameters then adds them, scaled, to the gradients. The loops are in
vecmath.h (pm_ln_*, compiled for AVX-512, AVX2 and the baseline): sums along a row accumulate
in double (vector partial sums); the column sums in the data's type over blocks of 16 rows,
each block's sums then added in double.
"""

cimport numpy as cnp
from libc.string cimport memset

from engine._check cimport (
    shape, float_type, array, f64, ndim, vector_of, shape_is, disjoint_from,
)
from engine.vecmath cimport pm_ln_fwd, pm_ln_bwd, pm_ln_sums, pm_ln_acc

cnp.import_array()


cdef Py_ssize_t _rows(cnp.ndarray x, Py_ssize_t n) except -1:
    """Rows of an input whose last axis holds the n normalised values."""
    cdef int d = ndim(x, "input", 1, 64)
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(x)
    if dims[d - 1] != n:
        raise ValueError(f"input has {dims[d - 1]} values on its last axis, expected {n} "
                         f"(shape {shape(x)})")
    cdef Py_ssize_t rows = 1
    cdef int k
    for k in range(d - 1):
        rows *= dims[k]
    return rows


cdef cnp.ndarray _vec(object obj, str what, int t, bint writeable, Py_ssize_t n):
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    vector_of(a, what, n)
    return a


cdef cnp.ndarray _sums(object obj, Py_ssize_t n):
    """The (2, n) float64 buffer of the parameter sums."""
    cdef cnp.ndarray s = array(obj, "sums", cnp.NPY_FLOAT64, True)
    shape_is(s, "sums", (2, n))
    return s


# -- forward ---------------------------------------------------------------------------------

def layernorm_update_output(input, output, weight, bias, save_mean, save_invstd, double eps):
    """output := (input - mean) * invstd * weight + bias along the last axis (n = weight's size);
    save_mean, save_invstd := each row's mean and 1 / sqrt(biased var + eps), (rows,)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    ndim(w, "weight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(w)[0]
    cdef cnp.ndarray b = _vec(bias, "bias", t, False, n)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t rows = _rows(x, n)
    cdef cnp.ndarray y = array(output, "output", t, True)
    shape_is(y, "output", shape(x))
    cdef cnp.ndarray sm = _vec(save_mean, "saveMean", t, True, rows)
    cdef cnp.ndarray si = _vec(save_invstd, "saveInvstd", t, True, rows)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias", sm, "saveMean",
                  si, "saveInvstd")
    disjoint_from(sm, "saveMean", x, "input", w, "weight", b, "bias", si, "saveInvstd")
    disjoint_from(si, "saveInvstd", x, "input", w, "weight", b, "bias")
    if n == 0 or rows == 0:
        return
    with nogil:
        pm_ln_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(y),
                  cnp.PyArray_DATA(w), cnp.PyArray_DATA(b), cnp.PyArray_DATA(sm),
                  cnp.PyArray_DATA(si), rows, n, eps)


# -- backward --------------------------------------------------------------------------------

cdef tuple _backward_args(object input, object grad_output, object save_mean,
                          object save_invstd, int t, Py_ssize_t n):
    """(input, gradOutput, saveMean, saveInvstd, rows), checked."""
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t rows = _rows(x, n)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    shape_is(go, "gradOutput", shape(x))
    return (x, go, _vec(save_mean, "saveMean", t, False, rows),
            _vec(save_invstd, "saveInvstd", t, False, rows), rows)


def layernorm_update_grad_input(input, grad_output, grad_input, weight, save_mean, save_invstd,
                                sums=None):
    """grad_input := invstd * (go * w - mean(go * w) - xhat * mean(go * w * xhat)) per row,
    from the forward's save_mean and save_invstd.

    ``sums``, a (2, n) float64 array or None: when given, also := [sum(go * xhat),
    sum(go)] over the rows, in the same pass (layernorm_acc_grad_parameters adds them).
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    ndim(w, "weight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(w)[0], rows
    cdef cnp.ndarray x, go, sm, si
    x, go, sm, si, rows = _backward_args(input, grad_output, save_mean, save_invstd, t, n)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    shape_is(gi, "gradInput", shape(x))
    cdef cnp.ndarray s = None if sums is None else _sums(sums, n)
    disjoint_from(gi, "gradInput", x, "input", go, "gradOutput", w, "weight", sm, "saveMean",
                  si, "saveInvstd")
    disjoint_from(s, "sums", x, "input", go, "gradOutput", w, "weight", gi, "gradInput")
    disjoint_from(s, "sums", sm, "saveMean", si, "saveInvstd")
    cdef double *sp = NULL if s is None else f64(s)
    if sp != NULL:
        memset(sp, 0, 2 * n * sizeof(double))
    if n == 0 or rows == 0:
        return
    with nogil:
        pm_ln_bwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                  cnp.PyArray_DATA(gi), cnp.PyArray_DATA(w), cnp.PyArray_DATA(sm),
                  cnp.PyArray_DATA(si), sp, rows, n)


def layernorm_param_sums(input, grad_output, save_mean, save_invstd, sums):
    """sums := [sum(go * xhat), sum(go)] over the rows, (2, n) float64."""
    cdef int t = float_type(save_mean, "saveMean")
    cdef cnp.ndarray s = array(sums, "sums", cnp.NPY_FLOAT64, True)
    ndim(s, "sums", 2, 2)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(s)[1], rows
    _sums(s, n)
    cdef cnp.ndarray x, go, sm, si
    x, go, sm, si, rows = _backward_args(input, grad_output, save_mean, save_invstd, t, n)
    disjoint_from(s, "sums", x, "input", go, "gradOutput", sm, "saveMean", si, "saveInvstd")
    memset(f64(s), 0, 2 * n * sizeof(double))
    if n == 0 or rows == 0:
        return
    with nogil:
        pm_ln_sums(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(x), cnp.PyArray_DATA(go),
                   cnp.PyArray_DATA(sm), cnp.PyArray_DATA(si), f64(s), rows, n)


def layernorm_acc_grad_parameters(sums, grad_weight, grad_bias, double scale_w,
                                  double scale_b):
    """grad_weight += scale_w * sums[0]; grad_bias += scale_b * sums[1]; a scale of 0 skips
    its term."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    ndim(gw, "gradWeight", 1, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(gw)[0]
    cdef cnp.ndarray gb = _vec(grad_bias, "gradBias", t, True, n)
    cdef cnp.ndarray s = _sums(sums, n)
    disjoint_from(gw, "gradWeight", gb, "gradBias", s, "sums")
    disjoint_from(gb, "gradBias", s, "sums")
    with nogil:
        pm_ln_acc(t == cnp.NPY_FLOAT64, f64(s), cnp.PyArray_DATA(gw), cnp.PyArray_DATA(gb),
                  scale_w, scale_b, n)
