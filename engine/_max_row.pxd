# The tap sweep of the max poolings' general kernels (pooling.pyx's _max_forward for 2-D,
# volumetric.pyx's _max3 for 3-D): a row of outputs at a time, each input row of its windows
# folded in tap by tap along the row, whose outputs are independent, the winner taken by masks.
# On random data a branch per tap is a coin toss; these loops run in vectors.

cimport numpy as cnp

from engine.blas cimport floating
from engine._geometry cimport cols_in
from engine.vecmath cimport pm_select


cdef inline void max_row_taps(const floating *row, floating *yr, cnp.npy_intp *ir,
                              Py_ssize_t at, Py_ssize_t W, Py_ssize_t kW, Py_ssize_t sW,
                              Py_ssize_t pad, Py_ssize_t oW, bint nan_first) noexcept nogil:
    """Fold the taps of input ``row`` (W values, its position ``at`` in the plane or volume)
    into the oW outputs ``yr`` of windows of kW moved by sW, ``pad`` leading: yr[ox] takes a
    larger value or a NaN, and ir[ox] (NULL: the maxima only) its position. The taps come in
    window order, so the first of equal maxima wins; a later NaN replaces a NaN held, unless
    ``nan_first`` (then the first NaN's position stays)."""
    cdef Py_ssize_t j, w0, lo, hi, ox, ix
    cdef floating v, m
    cdef cnp.npy_intp take
    cdef bint later = not nan_first
    for j in range(kW):
        w0 = j - pad
        cols_in(w0, sW, W, oW, &lo, &hi)
        if ir == NULL:
            for ox in range(lo, hi):
                v = row[w0 + ox * sW]
                m = yr[ox]
                yr[ox] = pm_select(-<cnp.npy_intp> ((v > m) | ((v != v) & ((m == m) | later))),
                                   v, m)
            continue
        for ox in range(lo, hi):
            ix = w0 + ox * sW
            v = row[ix]
            m = yr[ox]
            take = -<cnp.npy_intp> ((v > m) | ((v != v) & ((m == m) | later)))  # 0 or -1
            yr[ox] = pm_select(take, v, m)
            ir[ox] ^= (ir[ox] ^ (at + ix)) & take
