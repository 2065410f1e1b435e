"""Kernels of the recurrent cells (LSTM, GRU, RnnCell, LSTMPeephole) over whole sequences.

The modules' sequences are batch-first, (batch, time, features); inside, the kernels keep
each step's rows together so that BLAS reads them in place. Every loop over a sequence runs
here, without the GIL, on buffers the caller keeps and reuses: nothing is allocated.

GRU, RnnCell, LSTMPeephole: time-major buffers (T, B, width). A forward is
``recurrent_project`` (the input-to-hidden projection of the whole sequence, one GEMM,
(T*B, I) @ W_ih.T + b_ih (+ b_hh)), then ``<cell>_steps``: per step one GEMM adds
h(t-1) @ U.T into that step's gates (GRU two, its reset gate applies before U_n), and one fused
pass per row activates the gates in place (vecmath's vectorised sigmoid and tanh) and updates
the state. Backward: ``<cell>_bptt`` (per step one pass and one GEMM, dh(t-1) = dG(t) @ U) into
``d_gates``; then ``recurrent_update_grad_input`` (one GEMM) and the weight gradients,
``recurrent_acc_input`` and ``recurrent_acc_hidden``, each one GEMM over all steps (K = T*B).

LSTM: feature-major buffers (width, T, B), where each step's hidden GEMM is W_hh (4H, H) @
h(t-1) (H, B), about 1.7x faster than the batch-major product for a batch of 16 with OpenBLAS
0.3.30's Haswell kernels (``lstm_project``, ``lstm_steps``, ``lstm_bptt``, ``lstm_grad_input``,
``lstm_acc_grad_parameters``; ``swap_outer`` converts the batch-first sequences). For the
batches ``lstm_step_kernel`` picks (16, 32), each step's product runs on engine/_narrow.h
instead, without BLAS's per-call copy of W_hh, over contiguous copies of h(t-1) and dG(t).

LSTM in float32 without masks: ``lstm_xh_forward``, ``lstm_xh_backward``, ``lstm_xh_acc``,
time-major (T, B, ...): the rows [x(t), h(t-1)] of each step side by side, so that each step
is ONE product each way on [W_ih W_hh] packed once per call into 24-column panels, 48 on a
core with AVX-512 (no projection GEMM over the sequence, no input-gradient GEMM, no strided
step columns, no repacking per step as BLAS does); the forward's gates are activated in one
vectorised pass per row; the weight gradients and the bias's are one pass over all steps,
without BLAS (it packed all of dG again for each of the two GEMMs). The kernels are in
engine/_recurrent.h.

Gate blocks (rows of W_ih): LSTM i, g, f, o; GRU r, z, n; LSTMPeephole i, f, g, o; RnnCell
one block. Activations of RnnCell: ACT_TANH, ACT_SIGMOID, ACT_RELU.
"""

cimport numpy as cnp
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, axpy, NoTrans, Trans
from engine._check cimport (
    float_type, array, array_or_none, f32, f64, ndim, shape, shape_is, vector_of,
    int_limit, disjoint_from,
)
from engine.vecmath cimport pm_sigmoid_fwd, pm_tanh_fwd, pm_threshold_fwd

cnp.import_array()

# The backward pass of one LSTM step over one row of the batch, in C so that the compiler
# knows the runs do not overlap (restrict) and vectorises the loop over the batch.
cdef extern from *:
    """
    #define PM_LSTM_BWD_ROW(NAME, T)                                                        \
    static void NAME(Py_ssize_t n, const T *restrict si, const T *restrict sg,          \
                     const T *restrict sf, const T *restrict so, const T *restrict th,  \
                     const T *restrict go, const T *restrict cp, const T *restrict dh,  \
                     T *restrict dc, T *restrict di, T *restrict dgg, T *restrict df,   \
                     T *restrict dob) {                                                 \
        Py_ssize_t b;                                                                   \
        if (cp != NULL) {                                                               \
            for (b = 0; b < n; b++) {                                                   \
                T iv = si[b], gv = sg[b], fv = sf[b], ov = so[b], tv = th[b];           \
                T dv = dh[b] + go[b];                                                   \
                T dcell = dv * ov * (1 - tv * tv) + dc[b];                              \
                di[b] = dcell * gv * iv * (1 - iv);                                     \
                dgg[b] = dcell * iv * (1 - gv * gv);                                    \
                df[b] = dcell * cp[b] * fv * (1 - fv);                                  \
                dob[b] = dv * tv * ov * (1 - ov);                                       \
                dc[b] = dcell * fv;                                                     \
            }                                                                           \
        } else {                                                                        \
            for (b = 0; b < n; b++) {                                                   \
                T iv = si[b], gv = sg[b], fv = sf[b], ov = so[b], tv = th[b];           \
                T dv = dh[b] + go[b];                                                   \
                T dcell = dv * ov * (1 - tv * tv) + dc[b];                              \
                di[b] = dcell * gv * iv * (1 - iv);                                     \
                dgg[b] = dcell * iv * (1 - gv * gv);                                    \
                df[b] = dcell * 0 * fv * (1 - fv);                                      \
                dob[b] = dv * tv * ov * (1 - ov);                                       \
                dc[b] = dcell * fv;                                                     \
            }                                                                           \
        }                                                                               \
    }
    PM_LSTM_BWD_ROW(pm_lstm_bwd_row_f32, float)
    PM_LSTM_BWD_ROW(pm_lstm_bwd_row_f64, double)
    """
    void pm_lstm_bwd_row_f32(Py_ssize_t n, const float *si, const float *sg, const float *sf,
                             const float *so, const float *th, const float *go,
                             const float *cp, const float *dh, float *dc, float *di,
                             float *dgg, float *df, float *dob) noexcept nogil
    void pm_lstm_bwd_row_f64(Py_ssize_t n, const double *si, const double *sg,
                             const double *sf, const double *so, const double *th,
                             const double *go, const double *cp, const double *dh, double *dc,
                             double *di, double *dgg, double *df, double *dob) noexcept nogil

cdef extern from "_narrow.h" nogil:
    void pm_narrow_f(int M, int N, int K, const float *a, size_t lda, const float *b,
                     size_t ldb, const float *c, size_t ldc, float *y, size_t ldy)
    void pm_narrow_d(int M, int N, int K, const double *a, size_t lda, const double *b,
                     size_t ldb, const double *c, size_t ldc, double *y, size_t ldy)

cdef enum:
    TANH = 0
    SIGMOID = 1
    RELU = 2

ACT_TANH = TANH
ACT_SIGMOID = SIGMOID
ACT_RELU = RELU


cdef int _sizes(cnp.ndarray a, str what, Py_ssize_t width, Py_ssize_t *b,
                Py_ssize_t *t) except -1:
    """Batch and time of a (batch, time, width) sequence, checked for the BLAS int limits."""
    if cnp.PyArray_NDIM(a) != 3:
        raise ValueError(f"{what} must be 3-D (batch, time, features), got "
                         f"{cnp.PyArray_NDIM(a)}-D (shape {shape(a)})")
    cdef Py_ssize_t feats = cnp.PyArray_DIMS(a)[2]
    if feats != width:
        raise ValueError(f"{what} has {feats} features, expected {width}")
    b[0], t[0] = cnp.PyArray_DIMS(a)[0], cnp.PyArray_DIMS(a)[1]
    int_limit(b[0] * t[0], f"{what}: batch * time")
    return 0


cdef int _seq(cnp.ndarray a, str what, Py_ssize_t b, Py_ssize_t t, Py_ssize_t w) except -1:
    shape_is(a, what, (b, t, w))
    int_limit(t * w, f"{what}: time * width")
    return 0


cdef int _matrix(cnp.ndarray a, str what, Py_ssize_t m, Py_ssize_t k) except -1:
    shape_is(a, what, (m, k))
    return 0


cdef int _act_code(int act) except -1:
    if act != TANH and act != SIGMOID and act != RELU:
        raise ValueError(f"activation code {act} is not one of tanh (0), sigmoid (1), relu (2)")
    return 0


# -- the input projection and the gradients that are one GEMM over the sequence ---------------

def recurrent_project(input, gates, w_ih, b_ih, b_hh=None, Py_ssize_t offset=0):
    """gates[..., offset:offset + G] := input @ w_ih.T + b_ih + b_hh: (B, T, I) x (G, I) ->
    columns of (B, T, W); either bias (G,) may be None."""
    cdef int t = float_type(w_ih, "W_ih")
    cdef cnp.ndarray w = array(w_ih, "W_ih", t, False)
    ndim(w, "W_ih", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(w)[0], i = cnp.PyArray_DIMS(w)[1], nb, nt, gw
    cdef cnp.ndarray x = array(input, "input", t, False)
    _sizes(x, "input", i, &nb, &nt)
    cdef cnp.ndarray y = array(gates, "gates", t, True)
    ndim(y, "gates", 3, 3)
    gw = cnp.PyArray_DIMS(y)[2]
    _columns(offset, g, gw, "gates")
    _seq(y, "gates", nb, nt, gw)
    int_limit(gw, "gates width")
    cdef cnp.ndarray b1 = array_or_none(b_ih, "b_ih", t, False)
    cdef cnp.ndarray b2 = array_or_none(b_hh, "b_hh", t, False)
    if b1 is not None:
        vector_of(b1, "b_ih", g)
    if b2 is not None:
        vector_of(b2, "b_hh", g)
    int_limit(g, "gate width")
    int_limit(i, "input width")
    disjoint_from(y, "gates", x, "input", w, "W_ih", b1, "b_ih", b2, "b_hh")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _project(f32(x), f32(y) + offset, f32(w), f32(b1), f32(b2), nb * nt, i, g, gw)
        else:
            _project(f64(x), f64(y) + offset, f64(w), f64(b1), f64(b2), nb * nt, i, g, gw)


cdef int _columns(Py_ssize_t offset, Py_ssize_t m, Py_ssize_t width, str what) except -1:
    if offset < 0 or offset + m > width:
        raise ValueError(f"columns {offset}:{offset + m} are outside the {width} of {what}")
    return 0


cdef void _project(const floating *x, floating *y, const floating *w, const floating *b1,
                   const floating *b2, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m,
                   Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef floating *row
    if n == 0 or m == 0:
        return
    for r in range(n):
        row = y + r * ld
        if b1 != NULL and b2 != NULL:
            for j in range(m):
                row[j] = b1[j] + b2[j]
        elif b1 != NULL:
            memcpy(row, b1, m * sizeof(floating))
        elif b2 != NULL:
            memcpy(row, b2, m * sizeof(floating))
        else:
            memset(row, 0, m * sizeof(floating))
    if k > 0:
        gemm(NoTrans, Trans, <int> n, <int> m, <int> k, <floating> 1, x, <int> k, w, <int> k,
             <floating> 1, y, <int> ld)


def recurrent_update_grad_input(d_gates, grad_input, w_ih, Py_ssize_t offset=0):
    """grad_input := d_gates[..., offset:offset + G] @ w_ih: (B, T, W) x (G, I) ->
    (B, T, I)."""
    cdef int t = float_type(w_ih, "W_ih")
    cdef cnp.ndarray w = array(w_ih, "W_ih", t, False)
    ndim(w, "W_ih", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(w)[0], i = cnp.PyArray_DIMS(w)[1], nb, nt, gw
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    ndim(dg, "d_gates", 3, 3)
    gw = cnp.PyArray_DIMS(dg)[2]
    _columns(offset, g, gw, "d_gates")
    _sizes(dg, "d_gates", gw, &nb, &nt)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    _seq(gi, "gradInput", nb, nt, i)
    int_limit(gw, "gate width")
    int_limit(i, "input width")
    disjoint_from(gi, "gradInput", dg, "d_gates", w, "W_ih")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _grad_input(f32(dg) + offset, f32(gi), f32(w), nb * nt, i, g, gw)
        else:
            _grad_input(f64(dg) + offset, f64(gi), f64(w), nb * nt, i, g, gw)


cdef void _grad_input(const floating *dg, floating *gi, const floating *w, Py_ssize_t n,
                      Py_ssize_t k, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    if n == 0 or k == 0:
        return
    if m == 0:
        memset(gi, 0, n * k * sizeof(floating))
        return
    gemm(NoTrans, NoTrans, <int> n, <int> k, <int> m, <floating> 1, dg, <int> ld, w, <int> k,
         <floating> 0, gi, <int> k)


def recurrent_acc_input(input, d_gates, grad_w_ih, grad_b_ih, grad_b_hh, double scale_w,
                        double scale_b, Py_ssize_t offset=0):
    """grad_w_ih += scale_w * d_gates[..., offset:offset + G].T @ input ((G, I), one GEMM
    over all steps); grad_b_ih and grad_b_hh (G,) += scale_b * the sum of those columns of
    d_gates over batch and time. Either bias may be None; a scale of 0 skips its terms."""
    cdef int t = float_type(grad_w_ih, "gradW_ih")
    cdef cnp.ndarray gw = array(grad_w_ih, "gradW_ih", t, True)
    ndim(gw, "gradW_ih", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(gw)[0], i = cnp.PyArray_DIMS(gw)[1], nb, nt, ld
    cdef cnp.ndarray x = array(input, "input", t, False)
    _sizes(x, "input", i, &nb, &nt)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    ndim(dg, "d_gates", 3, 3)
    ld = cnp.PyArray_DIMS(dg)[2]
    _columns(offset, g, ld, "d_gates")
    _seq(dg, "d_gates", nb, nt, ld)
    int_limit(ld, "d_gates width")
    cdef cnp.ndarray gb1 = array_or_none(grad_b_ih, "gradB_ih", t, True)
    cdef cnp.ndarray gb2 = array_or_none(grad_b_hh, "gradB_hh", t, True)
    if gb1 is not None:
        vector_of(gb1, "gradB_ih", g)
    if gb2 is not None:
        vector_of(gb2, "gradB_hh", g)
    int_limit(g, "gate width")
    int_limit(i, "input width")
    disjoint_from(gw, "gradW_ih", x, "input", dg, "d_gates", gb1, "gradB_ih", gb2, "gradB_hh")
    disjoint_from(gb1, "gradB_ih", x, "input", dg, "d_gates", gb2, "gradB_hh")
    disjoint_from(gb2, "gradB_hh", x, "input", dg, "d_gates")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _acc_input(f32(x), f32(dg) + offset, f32(gw), f32(gb1), f32(gb2), <float> scale_w,
                       <float> scale_b, nb * nt, i, g, ld)
        else:
            _acc_input(f64(x), f64(dg) + offset, f64(gw), f64(gb1), f64(gb2), scale_w,
                       scale_b, nb * nt, i, g, ld)


cdef void _acc_input(const floating *x, const floating *dg, floating *gw, floating *gb1,
                     floating *gb2, floating scale_w, floating scale_b, Py_ssize_t n,
                     Py_ssize_t k, Py_ssize_t m, Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t r
    if n == 0 or m == 0:
        return
    if scale_w != 0 and k != 0:
        gemm(Trans, NoTrans, <int> m, <int> k, <int> n, scale_w, dg, <int> ld, x, <int> k,
             <floating> 1, gw, <int> k)
    if scale_b != 0:
        for r in range(n):
            if gb1 != NULL:
                axpy(<int> m, scale_b, dg + r * ld, 1, gb1, 1)
            if gb2 != NULL:
                axpy(<int> m, scale_b, dg + r * ld, 1, gb2, 1)


def recurrent_acc_hidden(states, d_gates, Py_ssize_t offset, grad_u, double scale,
                         Py_ssize_t state_offset=0):
    """grad_u += scale * d_gates[..., offset:offset + M].T @ states[..., state_offset:
    state_offset + H]: (B, T, G) and (B, T, S) -> (M, H), one GEMM over all steps
    (``states`` holds what U multiplied at each step: h(t-1), r * h(t-1) for GRU's U_n, or
    the dropped h(t-1) of each gate side by side, S = 4H, for LSTMPeephole in training)."""
    cdef int t = float_type(grad_u, "gradU")
    cdef cnp.ndarray gu = array(grad_u, "gradU", t, True)
    ndim(gu, "gradU", 2, 2)
    cdef Py_ssize_t m = cnp.PyArray_DIMS(gu)[0], h = cnp.PyArray_DIMS(gu)[1], nb, nt, g, sw
    cdef cnp.ndarray s = array(states, "states", t, False)
    ndim(s, "states", 3, 3)
    sw = cnp.PyArray_DIMS(s)[2]
    if state_offset < 0 or state_offset + h > sw:
        raise ValueError(f"state columns {state_offset}:{state_offset + h} are outside the "
                         f"{sw} of states")
    _sizes(s, "states", sw, &nb, &nt)
    int_limit(sw, "state width")
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    ndim(dg, "d_gates", 3, 3)
    g = cnp.PyArray_DIMS(dg)[2]
    _seq(dg, "d_gates", nb, nt, g)
    if offset < 0 or offset + m > g:
        raise ValueError(f"gate columns {offset}:{offset + m} are outside the {g} of d_gates")
    int_limit(g, "gate width")
    int_limit(h, "hidden width")
    disjoint_from(gu, "gradU", s, "states", dg, "d_gates")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _acc_hidden(f32(s) + state_offset, f32(dg), f32(gu), <float> scale, nb * nt, h,
                        sw, g, offset, m)
        else:
            _acc_hidden(f64(s) + state_offset, f64(dg), f64(gu), scale, nb * nt, h, sw, g,
                        offset, m)


cdef void _acc_hidden(const floating *s, const floating *dg, floating *gu, floating scale,
                      Py_ssize_t n, Py_ssize_t h, Py_ssize_t sw, Py_ssize_t g,
                      Py_ssize_t offset, Py_ssize_t m) noexcept nogil:
    if n == 0 or m == 0 or h == 0 or scale == 0:
        return
    gemm(Trans, NoTrans, <int> m, <int> h, <int> n, scale, dg + offset, <int> g, s, <int> sw,
         <floating> 1, gu, <int> h)


# -- LSTM: gates i, g, f, o; c = f c + i g; h = o tanh(c) ---------------------------------

cdef int _cell_buffers(cnp.ndarray u, str u_what, int t, cnp.ndarray y, str y_what, int blocks,
                       Py_ssize_t *nb, Py_ssize_t *nt, Py_ssize_t *h) except -1:
    """Sizes from the hidden weight u (blocks * H, H) and a (B, T, H) sequence y."""
    ndim(u, u_what, 2, 2)
    h[0] = cnp.PyArray_DIMS(u)[1]
    _matrix(u, u_what, blocks * h[0], h[0])
    _sizes(y, y_what, h[0], nb, nt)
    int_limit(blocks * h[0] * nt[0], "time * gate width")
    return 0


def lstm_step_kernel(Py_ssize_t batch, Py_ssize_t hidden):
    """Whether the per-step products of lstm_steps and lstm_bptt should run on _narrow.h
    (the caller then gives them ``h_step`` and ``dg_step``) rather than on BLAS, for this
    batch and hidden size. Measured per step product (W_hh @ h(t-1) and W_hh.T @ dG(t), CPU
    time, OpenBLAS 0.3.30 Haswell kernels, AVX2): a batch of 16 is 1.2-1.4x faster than
    sgemm with H = 128 and 256, a batch of 32 1.05-1.3x; batches with a column tail (not a
    multiple of 16), 8 or below, or 48 and above are not faster, and BLAS keeps them. The
    hidden size does not change the choice: BLAS copies all of W_hh at each call, which
    only grows with it."""
    return hidden > 0 and (batch == 16 or batch == 32)


cdef inline void _narrow(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a,
                         Py_ssize_t lda, const floating *b, Py_ssize_t ldb, const floating *c,
                         Py_ssize_t ldc, floating *y, Py_ssize_t ldy) noexcept nogil:
    """y (m, n) := c + a (m, k) @ b (k, n) (c NULL: 0; c may be y), rows lda, ldb, ldc, ldy
    apart (_narrow.h)."""
    if floating is float:
        pm_narrow_f(<int> m, <int> n, <int> k, a, lda, b, ldb, c, ldc, y, ldy)
    else:
        pm_narrow_d(<int> m, <int> n, <int> k, a, lda, b, ldb, c, ldc, y, ldy)


def lstm_steps(proj, gates_t, cell, tanh_cell, states, w_hh, h_mask=None, dropped=None,
               h_step=None):
    """Run an LSTM feature-major over the sequence whose projected input (biases included)
    is ``proj`` (4H, T, B; blocks i, g, f, o): each step one GEMM, gates_t[t] (4H, B) =
    W_hh (4H, H) @ h(t-1) (H, B), then one pass that adds the step's projection and
    activates the gates in place. ``cell`` and ``tanh_cell`` (T, H, B) get c(t) and
    tanh(c(t)), ``states`` (H, T, B) h(t).

    With ``h_mask`` (4H, B; the scaled dropout masks of h, a block per gate, the same at
    every step), gate k of step t reads W_hh[k] (h(t-1) * h_mask[k]) instead, one GEMM per
    gate: ``dropped`` (4H, T, B) gets those products, h(t) * h_mask at column t (t < T - 1),
    for the weight gradient.

    With ``h_step`` (H, B; see lstm_step_kernel) and without masks, each step's product
    runs on _narrow.h instead of BLAS: it reads W_hh in place and a contiguous copy of
    h(t-1) that the step before leaves in ``h_step`` (a column of ``states`` has its rows
    T * B apart), and adds the step's projection as it stores (no copy first)."""
    cdef int t = float_type(w_hh, "W_hh")
    cdef cnp.ndarray u = array(w_hh, "W_hh", t, False)
    ndim(u, "W_hh", 2, 2)
    cdef Py_ssize_t h = cnp.PyArray_DIMS(u)[1]
    _matrix(u, "W_hh", 4 * h, h)
    cdef cnp.ndarray xp = array(proj, "proj", t, False)
    ndim(xp, "proj", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(xp)[1], nb = cnp.PyArray_DIMS(xp)[2]
    _seq(xp, "proj", 4 * h, nt, nb)
    cdef cnp.ndarray gt = array(gates_t, "gates_t", t, True)
    cdef cnp.ndarray c = array(cell, "cell", t, True)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, True)
    cdef cnp.ndarray hs = array(states, "states", t, True)
    _seq(gt, "gates_t", nt, 4 * h, nb)
    _seq(c, "cell", nt, h, nb)
    _seq(tc, "tanh_cell", nt, h, nb)
    _seq(hs, "states", h, nt, nb)
    int_limit(4 * h * nb, "gate width * batch")
    for a, what in ((gt, "gates_t"), (c, "cell"), (tc, "tanh_cell"), (hs, "states")):
        disjoint_from(a, what, xp, "proj", u, "W_hh")
    disjoint_from(gt, "gates_t", c, "cell", tc, "tanh_cell", hs, "states")
    disjoint_from(c, "cell", tc, "tanh_cell", hs, "states")
    disjoint_from(tc, "tanh_cell", hs, "states")
    cdef cnp.ndarray hm = array_or_none(h_mask, "h_mask", t, False)
    cdef cnp.ndarray hd = array_or_none(dropped, "dropped", t, True)
    if (hm is None) != (hd is None):
        raise ValueError("h_mask and dropped go together: give both or neither")
    if hm is not None:
        _matrix(hm, "h_mask", 4 * h, nb)
        _seq(hd, "dropped", 4 * h, nt, nb)
        for a, what in ((gt, "gates_t"), (c, "cell"), (tc, "tanh_cell"), (hs, "states")):
            disjoint_from(hd, "dropped", a, what, xp, "proj", u, "W_hh", hm, "h_mask")
            disjoint_from(a, what, hm, "h_mask")
    cdef cnp.ndarray hc = array_or_none(h_step, "h_step", t, True)
    if hc is not None:
        _matrix(hc, "h_step", h, nb)
        disjoint_from(hc, "h_step", gt, "gates_t", c, "cell", tc, "tanh_cell", hs, "states",
                      xp, "proj")
        disjoint_from(hc, "h_step", u, "W_hh", hm, "h_mask", hd, "dropped")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _lstm_steps(f32(xp), f32(gt), f32(c), f32(tc), f32(hs), f32(u), f32(hm), f32(hd),
                        f32(hc), nb, nt, h)
        else:
            _lstm_steps(f64(xp), f64(gt), f64(c), f64(tc), f64(hs), f64(u), f64(hm), f64(hd),
                        f64(hc), nb, nt, h)


cdef void _lstm_steps(const floating *xp, floating *gt, floating *c, floating *tc,
                      floating *hs, const floating *u, const floating *hm, floating *hd,
                      floating *hc, Py_ssize_t nb, Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef bint d = floating is double
    cdef Py_ssize_t gw = 4 * h, hb = h * nb, tb = nt * nb, t, b, j, q
    cdef floating *s
    cdef floating *sr
    cdef floating *cs
    cdef floating *tcs
    cdef const floating *cp
    if nb == 0 or nt == 0 or h == 0:
        return
    if hm != NULL:
        hc = NULL
    for t in range(nt):
        s = gt + t * gw * nb
        if t > 0 and hc != NULL:
            _narrow(gw, nb, h, u, h, hc, nb, xp + t * nb, tb, s, nb)
        else:
            # the step's projection first, then the hidden GEMM accumulates onto it (beta 1:
            # no separate pass that zeroes or adds)
            for q in range(gw):
                memcpy(s + q * nb, xp + q * tb + t * nb, nb * sizeof(floating))
        if t > 0 and hc == NULL:
            if hm == NULL:
                gemm(NoTrans, NoTrans, <int> gw, <int> nb, <int> h, <floating> 1, u, <int> h,
                     hs + (t - 1) * nb, <int> tb, <floating> 1, s, <int> nb)
            else:
                _drop_states(hs + (t - 1) * nb, hm, hd + (t - 1) * nb, nb, tb, h)
                for q in range(4):
                    gemm(NoTrans, NoTrans, <int> h, <int> nb, <int> h, <floating> 1,
                         u + q * h * h, <int> h, hd + q * h * tb + (t - 1) * nb, <int> tb,
                         <floating> 1, s + q * h * nb, <int> nb)
        pm_sigmoid_fwd(d, s, s, hb)
        pm_tanh_fwd(d, s + hb, s + hb, hb)
        pm_sigmoid_fwd(d, s + 2 * hb, s + 2 * hb, 2 * hb)
        cs = c + t * hb
        if t > 0:
            cp = c + (t - 1) * hb
            for q in range(hb):
                cs[q] = s[2 * hb + q] * cp[q] + s[q] * s[hb + q]
        else:
            for q in range(hb):
                cs[q] = s[q] * s[hb + q]
        tcs = tc + t * hb
        pm_tanh_fwd(d, cs, tcs, hb)
        for j in range(h):
            sr = hs + j * tb + t * nb
            for b in range(nb):
                sr[b] = s[3 * hb + j * nb + b] * tcs[j * nb + b]
            if hc != NULL:
                for b in range(nb):  # a loop, not memcpy: a call per row of 16 costs more
                    hc[j * nb + b] = sr[b]


cdef void _drop_states(const floating *hp, const floating *hm, floating *hd, Py_ssize_t nb,
                       Py_ssize_t tb, Py_ssize_t h) noexcept nogil:
    """One step's dropped states, feature-major: hd[k*H + j, b] = hp[j, b] * hm[k*H + j, b]
    for the four gates k (rows of hp and hd ``tb`` apart, of hm ``nb``)."""
    cdef Py_ssize_t k, j, b
    cdef const floating *src
    cdef const floating *m
    cdef floating *dst
    for k in range(4):
        for j in range(h):
            src = hp + j * tb
            m = hm + (k * h + j) * nb
            dst = hd + (k * h + j) * tb
            for b in range(nb):
                dst[b] = src[b] * m[b]


def lstm_bptt(grad_states, gates_t, cell, tanh_cell, w_hh, w_hh_t, d_gates, dh, dc,
              h_mask=None, dh_parts=None, dg_step=None):
    """Back through time of lstm_steps, feature-major: from the gradient of the states
    (H, T, B), the gradient of every gate pre-activation into ``d_gates`` (4H, T, B); each
    step one pass and one GEMM, dh(t-1) = W_hh.T @ dG(t), run on ``w_hh_t`` (H, 4H), which
    first gets the transpose of W_hh (the plain product of the copy is about twice as fast
    as the transposed product of W_hh for small batches, OpenBLAS 0.3.30 Haswell kernels).
    dh and dc (H, B) are carries. With the forward's ``h_mask`` (4H, B), dh(t-1) = sum_k
    (W_hh[k].T @ dG_k(t)) * h_mask[k], each product into its block of ``dh_parts`` (4H, B).

    With ``dg_step`` (4H, B; see lstm_step_kernel), each step's products run on _narrow.h
    instead of BLAS, over a contiguous copy of dG(t) made there (a column of ``d_gates`` has
    its rows T * B apart)."""
    cdef int t = float_type(w_hh, "W_hh")
    cdef cnp.ndarray u = array(w_hh, "W_hh", t, False)
    ndim(u, "W_hh", 2, 2)
    cdef Py_ssize_t h = cnp.PyArray_DIMS(u)[1]
    _matrix(u, "W_hh", 4 * h, h)
    cdef cnp.ndarray go = array(grad_states, "gradOutput", t, False)
    ndim(go, "gradOutput", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(go)[1], nb = cnp.PyArray_DIMS(go)[2]
    _seq(go, "gradOutput", h, nt, nb)
    cdef cnp.ndarray gt = array(gates_t, "gates_t", t, False)
    cdef cnp.ndarray c = array(cell, "cell", t, False)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, False)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, True)
    cdef cnp.ndarray dhv = array(dh, "dh", t, True)
    cdef cnp.ndarray dcv = array(dc, "dc", t, True)
    cdef cnp.ndarray ut = array(w_hh_t, "W_hh_t", t, True)
    _matrix(ut, "W_hh_t", h, 4 * h)
    _seq(gt, "gates_t", nt, 4 * h, nb)
    _seq(c, "cell", nt, h, nb)
    _seq(tc, "tanh_cell", nt, h, nb)
    _seq(dg, "d_gates", 4 * h, nt, nb)
    _matrix(dhv, "dh", h, nb)
    _matrix(dcv, "dc", h, nb)
    int_limit(4 * h * nb, "gate width * batch")
    for a, what in ((dg, "d_gates"), (dhv, "dh"), (dcv, "dc"), (ut, "W_hh_t")):
        disjoint_from(a, what, go, "gradOutput", gt, "gates_t", c, "cell", tc, "tanh_cell",
                      u, "W_hh")
    disjoint_from(dg, "d_gates", dhv, "dh", dcv, "dc", ut, "W_hh_t")
    disjoint_from(dhv, "dh", dcv, "dc", ut, "W_hh_t")
    disjoint_from(dcv, "dc", ut, "W_hh_t")
    cdef cnp.ndarray hm = array_or_none(h_mask, "h_mask", t, False)
    cdef cnp.ndarray dp = array_or_none(dh_parts, "dh_parts", t, True)
    if (hm is None) != (dp is None):
        raise ValueError("h_mask and dh_parts go together: give both or neither")
    if hm is not None:
        _matrix(hm, "h_mask", 4 * h, nb)
        _matrix(dp, "dh_parts", 4 * h, nb)
        for a, what in ((dg, "d_gates"), (dhv, "dh"), (dcv, "dc"), (ut, "W_hh_t")):
            disjoint_from(a, what, hm, "h_mask", dp, "dh_parts")
        disjoint_from(dp, "dh_parts", go, "gradOutput", gt, "gates_t", c, "cell", tc,
                      "tanh_cell", u, "W_hh")
        disjoint_from(dp, "dh_parts", hm, "h_mask")
    cdef cnp.ndarray ds = array_or_none(dg_step, "dg_step", t, True)
    if ds is not None:
        _matrix(ds, "dg_step", 4 * h, nb)
        disjoint_from(ds, "dg_step", go, "gradOutput", gt, "gates_t", c, "cell", tc,
                      "tanh_cell", u, "W_hh")
        disjoint_from(ds, "dg_step", dg, "d_gates", dhv, "dh", dcv, "dc", ut, "W_hh_t")
        disjoint_from(ds, "dg_step", hm, "h_mask", dp, "dh_parts")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _transpose(f32(u), f32(ut), 4 * h, h)
            _lstm_bptt(f32(go), f32(gt), f32(c), f32(tc), f32(ut), f32(dg), f32(dhv),
                       f32(dcv), f32(hm), f32(dp), f32(ds), nb, nt, h)
        else:
            _transpose(f64(u), f64(ut), 4 * h, h)
            _lstm_bptt(f64(go), f64(gt), f64(c), f64(tc), f64(ut), f64(dg), f64(dhv),
                       f64(dcv), f64(hm), f64(dp), f64(ds), nb, nt, h)


cdef void _transpose(const floating *a, floating *at, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """at (n, m) := a (m, n).T."""
    _tiled_transpose(a, n, at, m, m, n)


cdef void _lstm_bptt(const floating *go, const floating *gt, const floating *c,
                     const floating *tc, const floating *ut, floating *dg, floating *dh,
                     floating *dc, const floating *hm, floating *dp, floating *ds,
                     Py_ssize_t nb, Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef Py_ssize_t gw = 4 * h, hb = h * nb, tb = nt * nb, t, j, k, o, q, b
    cdef const floating *s
    cdef const floating *tcs
    cdef const floating *cp
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(dh, 0, hb * sizeof(floating))
    memset(dc, 0, hb * sizeof(floating))
    for t in range(nt - 1, -1, -1):
        s = gt + t * gw * nb
        tcs = tc + t * hb
        cp = c + (t - 1) * hb if t > 0 else NULL
        for j in range(h):
            k = j * nb
            o = j * tb + t * nb
            if floating is float:
                pm_lstm_bwd_row_f32(nb, s + k, s + hb + k, s + 2 * hb + k, s + 3 * hb + k,
                                    tcs + k, go + o, cp + k if cp != NULL else NULL, dh + k,
                                    dc + k, dg + o, dg + o + h * tb, dg + o + 2 * h * tb,
                                    dg + o + 3 * h * tb)
            else:
                pm_lstm_bwd_row_f64(nb, s + k, s + hb + k, s + 2 * hb + k, s + 3 * hb + k,
                                    tcs + k, go + o, cp + k if cp != NULL else NULL, dh + k,
                                    dc + k, dg + o, dg + o + h * tb, dg + o + 2 * h * tb,
                                    dg + o + 3 * h * tb)
        if t > 0 and ds != NULL:
            for q in range(gw):
                for b in range(nb):
                    ds[q * nb + b] = dg[q * tb + t * nb + b]
            if hm == NULL:
                _narrow(h, nb, gw, ut, gw, ds, nb, <floating *> NULL, 0, dh, nb)
            else:
                for q in range(4):
                    _narrow(h, nb, h, ut + q * h, gw, ds + q * hb, nb, <floating *> NULL, 0,
                            dp + q * hb, nb)
        elif t > 0 and hm == NULL:
            gemm(NoTrans, NoTrans, <int> h, <int> nb, <int> gw, <floating> 1, ut, <int> gw,
                 dg + t * nb, <int> tb, <floating> 0, dh, <int> nb)
        elif t > 0:
            for q in range(4):
                gemm(NoTrans, NoTrans, <int> h, <int> nb, <int> h, <floating> 1, ut + q * h,
                     <int> gw, dg + q * h * tb + t * nb, <int> tb, <floating> 0,
                     dp + q * hb, <int> nb)
        if t > 0 and hm != NULL:
            for k in range(hb):
                dh[k] = dp[k] * hm[k] + dp[hb + k] * hm[hb + k] + \
                    dp[2 * hb + k] * hm[2 * hb + k] + dp[3 * hb + k] * hm[3 * hb + k]


def lstm_project(states, proj, w_ih, b_ih, b_hh=None):
    """proj := w_ih @ states + b_ih + b_hh down the rows: (G, I) x (I, T, B) -> (G, T, B), one
    GEMM over the whole sequence, feature-major; either bias (G,) may be None."""
    cdef int t = float_type(w_ih, "W_ih")
    cdef cnp.ndarray w = array(w_ih, "W_ih", t, False)
    ndim(w, "W_ih", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(w)[0], i = cnp.PyArray_DIMS(w)[1]
    cdef cnp.ndarray x = array(states, "input", t, False)
    ndim(x, "input", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(x)[1], nb = cnp.PyArray_DIMS(x)[2]
    _seq(x, "input", i, nt, nb)
    cdef cnp.ndarray y = array(proj, "proj", t, True)
    _seq(y, "proj", g, nt, nb)
    cdef cnp.ndarray b = array_or_none(b_ih, "b_ih", t, False)
    cdef cnp.ndarray b2 = array_or_none(b_hh, "b_hh", t, False)
    if b is not None:
        vector_of(b, "b_ih", g)
    if b2 is not None:
        vector_of(b2, "b_hh", g)
    int_limit(nt * nb, "time * batch")
    int_limit(g, "gate width")
    int_limit(i, "input width")
    disjoint_from(y, "proj", x, "input", w, "W_ih", b, "b_ih", b2, "b_hh")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _fm_project(f32(x), f32(y), f32(w), f32(b), f32(b2), g, i, nt * nb)
        else:
            _fm_project(f64(x), f64(y), f64(w), f64(b), f64(b2), g, i, nt * nb)


cdef void _fm_project(const floating *x, floating *y, const floating *w, const floating *b,
                      const floating *b2, Py_ssize_t g, Py_ssize_t i,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef floating v
    if g == 0 or n == 0:
        return
    for r in range(g):
        v = b[r] if b != NULL else 0
        if b2 != NULL:
            v = v + b2[r]
        for j in range(n):
            y[r * n + j] = v
    if i > 0:
        gemm(NoTrans, NoTrans, <int> g, <int> n, <int> i, <floating> 1, w, <int> i, x, <int> n,
             <floating> 1, y, <int> n)


def lstm_grad_input(d_gates, grad_states, w_ih):
    """grad_states := w_ih.T @ d_gates: (G, I) and (G, T, B) -> (I, T, B), one GEMM."""
    cdef int t = float_type(w_ih, "W_ih")
    cdef cnp.ndarray w = array(w_ih, "W_ih", t, False)
    ndim(w, "W_ih", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(w)[0], i = cnp.PyArray_DIMS(w)[1]
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    ndim(dg, "d_gates", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(dg)[1], nb = cnp.PyArray_DIMS(dg)[2]
    _seq(dg, "d_gates", g, nt, nb)
    cdef cnp.ndarray gi = array(grad_states, "gradInput", t, True)
    _seq(gi, "gradInput", i, nt, nb)
    int_limit(nt * nb, "time * batch")
    int_limit(g, "gate width")
    disjoint_from(gi, "gradInput", dg, "d_gates", w, "W_ih")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _fm_grad_input(f32(dg), f32(gi), f32(w), g, i, nt * nb)
        else:
            _fm_grad_input(f64(dg), f64(gi), f64(w), g, i, nt * nb)


cdef void _fm_grad_input(const floating *dg, floating *gi, const floating *w, Py_ssize_t g,
                         Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    if i == 0 or n == 0:
        return
    if g == 0:
        memset(gi, 0, i * n * sizeof(floating))
        return
    gemm(Trans, NoTrans, <int> i, <int> n, <int> g, <floating> 1, w, <int> i, dg, <int> n,
         <floating> 0, gi, <int> n)


def lstm_acc_grad_parameters(states, hidden, d_gates, grad_w_ih, grad_b_ih, grad_w_hh,
                             double scale_w, double scale_b, grad_b_hh=None):
    """Feature-major weight gradients, each one GEMM over all steps: grad_w_ih += scale_w *
    dG @ x.T, grad_b_ih (and grad_b_hh) += scale_b * the sum of dG over time and batch,
    grad_w_hh += scale_w * dG(t) @ hidden(t-1).T summed over t >= 1; states (I, T, B),
    hidden (H, T, B) what the hidden weight multiplied at the next step (h(t), or its dropped
    copy), d_gates (G, T, B). Either bias may be None; a scale of 0 skips its terms."""
    cdef int t = float_type(grad_w_ih, "gradW_ih")
    cdef cnp.ndarray gw = array(grad_w_ih, "gradW_ih", t, True)
    cdef cnp.ndarray gu = array(grad_w_hh, "gradW_hh", t, True)
    ndim(gw, "gradW_ih", 2, 2)
    ndim(gu, "gradW_hh", 2, 2)
    cdef Py_ssize_t g = cnp.PyArray_DIMS(gw)[0], i = cnp.PyArray_DIMS(gw)[1]
    cdef Py_ssize_t h = cnp.PyArray_DIMS(gu)[1]
    _matrix(gu, "gradW_hh", g, h)
    cdef cnp.ndarray x = array(states, "input", t, False)
    ndim(x, "input", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(x)[1], nb = cnp.PyArray_DIMS(x)[2]
    _seq(x, "input", i, nt, nb)
    cdef cnp.ndarray hs = array(hidden, "states", t, False)
    _seq(hs, "states", h, nt, nb)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    _seq(dg, "d_gates", g, nt, nb)
    cdef cnp.ndarray gb = array_or_none(grad_b_ih, "gradB_ih", t, True)
    cdef cnp.ndarray gb2 = array_or_none(grad_b_hh, "gradB_hh", t, True)
    if gb is not None:
        vector_of(gb, "gradB_ih", g)
    if gb2 is not None:
        vector_of(gb2, "gradB_hh", g)
    int_limit(nt * nb, "time * batch")
    int_limit(g, "gate width")
    for a, what in ((gw, "gradW_ih"), (gu, "gradW_hh"), (gb, "gradB_ih"), (gb2, "gradB_hh")):
        disjoint_from(a, what, x, "input", hs, "states", dg, "d_gates")
    disjoint_from(gw, "gradW_ih", gu, "gradW_hh", gb, "gradB_ih", gb2, "gradB_hh")
    disjoint_from(gu, "gradW_hh", gb, "gradB_ih", gb2, "gradB_hh")
    disjoint_from(gb, "gradB_ih", gb2, "gradB_hh")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _fm_acc(f32(x), f32(hs), f32(dg), f32(gw), f32(gb), f32(gb2), f32(gu),
                    <float> scale_w, <float> scale_b, g, i, h, nt, nb)
        else:
            _fm_acc(f64(x), f64(hs), f64(dg), f64(gw), f64(gb), f64(gb2), f64(gu), scale_w,
                    scale_b, g, i, h, nt, nb)


cdef void _fm_acc(const floating *x, const floating *hs, const floating *dg, floating *gw,
                  floating *gb, floating *gb2, floating *gu, floating scale_w,
                  floating scale_b, Py_ssize_t g, Py_ssize_t i, Py_ssize_t h, Py_ssize_t nt,
                  Py_ssize_t nb) noexcept nogil:
    cdef Py_ssize_t n = nt * nb, r
    cdef double acc
    if g == 0 or n == 0:
        return
    if scale_w != 0:
        if i > 0:
            gemm(NoTrans, Trans, <int> g, <int> i, <int> n, scale_w, dg, <int> n, x, <int> n,
                 <floating> 1, gw, <int> i)
        if h > 0 and nt > 1:
            gemm(NoTrans, Trans, <int> g, <int> h, <int> (n - nb), scale_w, dg + nb, <int> n,
                 hs, <int> n, <floating> 1, gu, <int> h)
    if scale_b != 0 and (gb != NULL or gb2 != NULL):
        for r in range(g):
            acc = _row_sum(dg + r * n, n)
            if gb != NULL:
                gb[r] += scale_b * <floating> acc
            if gb2 != NULL:
                gb2[r] += scale_b * <floating> acc


cdef double _row_sum(const floating *x, Py_ssize_t n) noexcept nogil:
    """The sum of x[:n] in double, in eight independent lanes (which the compiler turns into
    vector adds; a single running sum would be one scalar chain)."""
    cdef double lanes[8]
    cdef Py_ssize_t j, q, m = n - n % 8
    for q in range(8):
        lanes[q] = 0
    for j in range(0, m, 8):
        for q in range(8):
            lanes[q] += x[j + q]
    for j in range(m, n):
        lanes[0] += x[j]
    return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + \
        ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))


def swap_outer(input, output, Py_ssize_t features=-1):
    """output[k, t, a] := input[a, t, k]: (A, T, K) -> (K, T, A), a batch-first sequence to
    the feature-major layout of the LSTM kernels and back. With ``features`` >= 0 the input
    must be a (batch, time, features) sequence of that many features."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t na, nt
    if features >= 0:
        _sizes(x, "input", features, &na, &nt)
    else:
        ndim(x, "input", 3, 3)
    na, nt = cnp.PyArray_DIMS(x)[0], cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t nk = cnp.PyArray_DIMS(x)[2]
    cdef cnp.ndarray y = array(output, "output", t, True)
    shape_is(y, "output", (nk, nt, na))
    disjoint_from(y, "output", x, "input")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _swap_outer(f32(x), f32(y), na, nt, nk)
        else:
            _swap_outer(f64(x), f64(y), na, nt, nk)


cdef void _swap_outer(const floating *x, floating *y, Py_ssize_t na, Py_ssize_t nt,
                      Py_ssize_t nk) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(nt):
        _tiled_transpose(x + t * nk, nt * nk, y + t * na, nt * na, na, nk)


cdef void _tiled_transpose(const floating *x, Py_ssize_t ldx, floating *y, Py_ssize_t ldy,
                           Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """y[k, a] := x[a, k] for a < m, k < n (rows ldx and ldy apart), in tiles of 16 x 16
    through a local copy: each tile's source rows are read, and its target rows written, a
    cache line at a time. Transposing in place between the two would keep 16 lines of each
    side live at once, and where the rows are a multiple of 4 KiB apart (the sequences here:
    T * B floats) those lines share a few cache sets and evict each other at every element."""
    cdef floating tile[256]
    cdef Py_ssize_t a0, k0, a, k, a1, k1
    for a0 in range(0, m, 16):
        a1 = a0 + 16 if a0 + 16 < m else m
        for k0 in range(0, n, 16):
            k1 = k0 + 16 if k0 + 16 < n else n
            for a in range(a0, a1):
                for k in range(k0, k1):
                    tile[(k - k0) * 16 + a - a0] = x[a * ldx + k]
            for k in range(k0, k1):
                for a in range(a0, a1):
                    y[k * ldy + a] = tile[(k - k0) * 16 + a - a0]


# -- GRU: gates r, z, n; n = tanh(x_n + U_n (r h)); h = (1 - z) n + z h -----------------------

def gru_steps(output, gates, rh, h_prev, u_rz, u_n, h_mask=None, dropped=None):
    """Run a GRU over the sequence whose projected input is in ``gates`` (T, B, 3H, blocks
    r, z, n); the gates are activated in place, r * h(t-1) goes to ``rh`` and h(t-1) to
    ``h_prev`` (both (T, B, H)), h(t) to ``output`` (B, T, H); u_rz (2H, H), u_n (H, H).

    With ``h_mask`` (B, 3H; the scaled dropout masks, the same at every step, blocks r, z,
    n), gate r reads U_r (h(t-1) * m_r), gate z U_z (h(t-1) * m_z) (two GEMMs; ``dropped``
    (T, B, 2H) keeps those products, zero at step 0) and n reads U_n (r * h(t-1) * m_n),
    which goes to ``rh``."""
    cdef int t = float_type(u_rz, "U_rz")
    cdef cnp.ndarray urz = array(u_rz, "U_rz", t, False)
    cdef cnp.ndarray un = array(u_n, "U_n", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(urz, "U_rz", t, y, "output", 2, &nb, &nt, &h)
    _matrix(un, "U_n", h, h)
    cdef cnp.ndarray g = array(gates, "gates", t, True)
    cdef cnp.ndarray rhv = array(rh, "rh", t, True)
    cdef cnp.ndarray hp = array(h_prev, "h_prev", t, True)
    _seq(g, "gates", nt, nb, 3 * h)
    _seq(rhv, "rh", nt, nb, h)
    _seq(hp, "h_prev", nt, nb, h)
    int_limit(3 * h * nt, "time * gate width")
    disjoint_from(y, "output", g, "gates", rhv, "rh", hp, "h_prev", urz, "U_rz", un, "U_n")
    disjoint_from(g, "gates", rhv, "rh", hp, "h_prev", urz, "U_rz", un, "U_n")
    disjoint_from(rhv, "rh", hp, "h_prev", urz, "U_rz", un, "U_n")
    disjoint_from(hp, "h_prev", urz, "U_rz", un, "U_n")
    cdef cnp.ndarray hm = array_or_none(h_mask, "h_mask", t, False)
    cdef cnp.ndarray hd = array_or_none(dropped, "dropped", t, True)
    if (hm is None) != (hd is None):
        raise ValueError("h_mask and dropped go together: give both or neither")
    if hm is not None:
        _matrix(hm, "h_mask", nb, 3 * h)
        _seq(hd, "dropped", nt, nb, 2 * h)
        for a, what in ((y, "output"), (g, "gates"), (rhv, "rh"), (hp, "h_prev")):
            disjoint_from(a, what, hm, "h_mask", hd, "dropped")
        disjoint_from(hd, "dropped", urz, "U_rz", un, "U_n", hm, "h_mask")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gru_steps(f32(y), f32(g), f32(rhv), f32(hp), f32(urz), f32(un), f32(hm), f32(hd),
                       nb, nt, h)
        else:
            _gru_steps(f64(y), f64(g), f64(rhv), f64(hp), f64(urz), f64(un), f64(hm), f64(hd),
                       nb, nt, h)


cdef void _gru_steps(floating *y, floating *g, floating *rh, floating *hp, const floating *urz,
                     const floating *un, const floating *hm, floating *hd, Py_ssize_t nb,
                     Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef bint d = floating is double
    cdef Py_ssize_t gw = 3 * h, t, b, j, r
    cdef floating *row
    cdef floating *yr
    cdef floating *hpr
    cdef floating *rhr
    cdef floating *dr
    cdef floating zv
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(hp, 0, nb * h * sizeof(floating))
    if hd != NULL:
        memset(hd, 0, nb * 2 * h * sizeof(floating))
    for t in range(nt):
        if t > 0 and hd == NULL:
            gemm(NoTrans, Trans, <int> nb, <int> (2 * h), <int> h, <floating> 1,
                 hp + t * nb * h, <int> h, urz, <int> h, <floating> 1, g + t * nb * gw, <int> gw)
        elif t > 0:
            for b in range(nb):
                hpr = hp + (t * nb + b) * h
                dr = hd + (t * nb + b) * 2 * h
                for j in range(h):
                    dr[j] = hpr[j] * hm[b * gw + j]
                    dr[h + j] = hpr[j] * hm[b * gw + h + j]
            for j in range(2):
                gemm(NoTrans, Trans, <int> nb, <int> h, <int> h, <floating> 1,
                     hd + t * nb * 2 * h + j * h, <int> (2 * h), urz + j * h * h, <int> h,
                     <floating> 1, g + t * nb * gw + j * h, <int> gw)
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            pm_sigmoid_fwd(d, row, row, 2 * h)
            hpr = hp + r * h
            rhr = rh + r * h
            if hm == NULL:
                for j in range(h):
                    rhr[j] = row[j] * hpr[j]
            else:
                for j in range(h):
                    rhr[j] = row[j] * hpr[j] * hm[b * gw + 2 * h + j]
        if t > 0:
            gemm(NoTrans, Trans, <int> nb, <int> h, <int> h, <floating> 1, rh + t * nb * h,
                 <int> h, un, <int> h, <floating> 1, g + t * nb * gw + 2 * h, <int> gw)
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            pm_tanh_fwd(d, row + 2 * h, row + 2 * h, h)
            hpr = hp + r * h
            yr = y + (b * nt + t) * h
            for j in range(h):
                zv = row[h + j]
                yr[j] = (1 - zv) * row[2 * h + j] + zv * hpr[j]
            if t + 1 < nt:
                memcpy(hp + (r + nb) * h, yr, h * sizeof(floating))


def gru_bptt(grad_output, gates, h_prev, u_rz, u_n, d_gates, dh, drh, h_mask=None,
             dh_parts=None):
    """Back through time of gru_steps: the gradient of every gate pre-activation into
    ``d_gates`` (T, B, 3H), from gradOutput (B, T, H); dh and drh (B, H) are carries. With
    the forward's ``h_mask`` (B, 3H), the masks enter as in the forward; ``dh_parts``
    (B, 2H) takes dG_r U_r and dG_z U_z."""
    cdef int t = float_type(u_rz, "U_rz")
    cdef cnp.ndarray urz = array(u_rz, "U_rz", t, False)
    cdef cnp.ndarray un = array(u_n, "U_n", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(urz, "U_rz", t, go, "gradOutput", 2, &nb, &nt, &h)
    _matrix(un, "U_n", h, h)
    cdef cnp.ndarray g = array(gates, "gates", t, False)
    cdef cnp.ndarray hp = array(h_prev, "h_prev", t, False)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, True)
    cdef cnp.ndarray dhv = array(dh, "dh", t, True)
    cdef cnp.ndarray drhv = array(drh, "drh", t, True)
    _seq(g, "gates", nt, nb, 3 * h)
    _seq(hp, "h_prev", nt, nb, h)
    _seq(dg, "d_gates", nt, nb, 3 * h)
    _matrix(dhv, "dh", nb, h)
    _matrix(drhv, "drh", nb, h)
    int_limit(3 * h * nt, "time * gate width")
    disjoint_from(dg, "d_gates", go, "gradOutput", g, "gates", hp, "h_prev", urz, "U_rz",
                  un, "U_n")
    disjoint_from(dhv, "dh", dg, "d_gates", go, "gradOutput", drhv, "drh", urz, "U_rz")
    disjoint_from(drhv, "drh", dg, "d_gates", go, "gradOutput", un, "U_n", hp, "h_prev")
    cdef cnp.ndarray hm = array_or_none(h_mask, "h_mask", t, False)
    cdef cnp.ndarray dp = array_or_none(dh_parts, "dh_parts", t, True)
    if (hm is None) != (dp is None):
        raise ValueError("h_mask and dh_parts go together: give both or neither")
    if hm is not None:
        _matrix(hm, "h_mask", nb, 3 * h)
        _matrix(dp, "dh_parts", nb, 2 * h)
        for a, what in ((dg, "d_gates"), (dhv, "dh"), (drhv, "drh")):
            disjoint_from(a, what, hm, "h_mask", dp, "dh_parts")
        disjoint_from(dp, "dh_parts", go, "gradOutput", g, "gates", hp, "h_prev", urz, "U_rz",
                      un, "U_n")
        disjoint_from(dp, "dh_parts", hm, "h_mask")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gru_bptt(f32(go), f32(g), f32(hp), f32(urz), f32(un), f32(dg), f32(dhv),
                      f32(drhv), f32(hm), f32(dp), nb, nt, h)
        else:
            _gru_bptt(f64(go), f64(g), f64(hp), f64(urz), f64(un), f64(dg), f64(dhv),
                      f64(drhv), f64(hm), f64(dp), nb, nt, h)


cdef void _gru_bptt(const floating *go, const floating *g, const floating *hp,
                    const floating *urz, const floating *un, floating *dg, floating *dh,
                    floating *drh, const floating *hm, floating *dp, Py_ssize_t nb,
                    Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef Py_ssize_t gw = 3 * h, t, b, j, r
    cdef const floating *row
    cdef floating *drow
    cdef floating *dhr
    cdef floating *drhr
    cdef const floating *gor
    cdef const floating *hpr
    cdef floating rv, zv, nv, dv
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(dh, 0, nb * h * sizeof(floating))
    for t in range(nt - 1, -1, -1):
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            drow = dg + r * gw
            gor = go + (b * nt + t) * h
            hpr = hp + r * h
            dhr = dh + b * h
            for j in range(h):
                zv = row[h + j]
                nv = row[2 * h + j]
                dv = gor[j] + dhr[j]
                drow[2 * h + j] = dv * (1 - zv) * (1 - nv * nv)
                drow[h + j] = dv * (hpr[j] - nv) * zv * (1 - zv)
                dhr[j] = dv * zv
        gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> h, <floating> 1,
             dg + t * nb * gw + 2 * h, <int> gw, un, <int> h, <floating> 0, drh, <int> h)
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            drow = dg + r * gw
            hpr = hp + r * h
            dhr = dh + b * h
            drhr = drh + b * h
            if hm != NULL:
                for j in range(h):
                    drhr[j] = drhr[j] * hm[b * gw + 2 * h + j]
            for j in range(h):
                rv = row[j]
                drow[j] = drhr[j] * hpr[j] * rv * (1 - rv)
                dhr[j] += drhr[j] * rv
        if t > 0 and hm == NULL:
            gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> (2 * h), <floating> 1,
                 dg + t * nb * gw, <int> gw, urz, <int> h, <floating> 1, dh, <int> h)
        elif t > 0:
            for j in range(2):
                gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> h, <floating> 1,
                     dg + t * nb * gw + j * h, <int> gw, urz + j * h * h, <int> h,
                     <floating> 0, dp + j * h, <int> (2 * h))
            for b in range(nb):
                dhr = dh + b * h
                for j in range(h):
                    dhr[j] += dp[b * 2 * h + j] * hm[b * gw + j] + \
                        dp[b * 2 * h + h + j] * hm[b * gw + h + j]


# -- RnnCell: h = act(x W_ih.T + b_ih + h W_hh.T + b_hh) ---------------------------------

def rnn_steps(output, gates, h_prev, w_hh, int act):
    """Run a simple RNN over the sequence whose projected input (biases included) is in
    ``gates`` (T, B, H); each step adds W_hh h(t-1) and applies the activation ``act``
    (ACT_TANH, ACT_SIGMOID, ACT_RELU) in place; h(t) goes to ``output`` (B, T, H) and
    h(t-1) to ``h_prev`` (T, B, H)."""
    _act_code(act)
    cdef int t = float_type(w_hh, "W_hh")
    cdef cnp.ndarray u = array(w_hh, "W_hh", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(u, "W_hh", t, y, "output", 1, &nb, &nt, &h)
    cdef cnp.ndarray g = array(gates, "gates", t, True)
    cdef cnp.ndarray hp = array(h_prev, "h_prev", t, True)
    _seq(g, "gates", nt, nb, h)
    _seq(hp, "h_prev", nt, nb, h)
    disjoint_from(y, "output", g, "gates", hp, "h_prev", u, "W_hh")
    disjoint_from(g, "gates", hp, "h_prev", u, "W_hh")
    disjoint_from(hp, "h_prev", u, "W_hh")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _rnn_steps(f32(y), f32(g), f32(hp), f32(u), nb, nt, h, act)
        else:
            _rnn_steps(f64(y), f64(g), f64(hp), f64(u), nb, nt, h, act)


cdef void _rnn_steps(floating *y, floating *g, floating *hp, const floating *u, Py_ssize_t nb,
                     Py_ssize_t nt, Py_ssize_t h, int act) noexcept nogil:
    cdef bint d = floating is double
    cdef Py_ssize_t t, b, r
    cdef floating *row
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(hp, 0, nb * h * sizeof(floating))
    for t in range(nt):
        if t > 0:
            gemm(NoTrans, Trans, <int> nb, <int> h, <int> h, <floating> 1, hp + t * nb * h,
                 <int> h, u, <int> h, <floating> 1, g + t * nb * h, <int> h)
        row = g + t * nb * h
        if act == TANH:
            pm_tanh_fwd(d, row, row, nb * h)
        elif act == SIGMOID:
            pm_sigmoid_fwd(d, row, row, nb * h)
        else:
            pm_threshold_fwd(d, row, row, nb * h, 0, 0)
        if t + 1 < nt:
            memcpy(hp + (t + 1) * nb * h, row, nb * h * sizeof(floating))
        for b in range(nb):
            r = t * nb + b
            memcpy(y + (b * nt + t) * h, g + r * h, h * sizeof(floating))


def rnn_bptt(grad_output, gates, w_hh, d_gates, dh, int act):
    """Back through time of rnn_steps: the gradient of the pre-activations into ``d_gates``
    (T, B, H), from gradOutput (B, T, H) and the activated ``gates`` (T, B, H); dh (B, H) is
    the carry."""
    _act_code(act)
    cdef int t = float_type(w_hh, "W_hh")
    cdef cnp.ndarray u = array(w_hh, "W_hh", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(u, "W_hh", t, go, "gradOutput", 1, &nb, &nt, &h)
    cdef cnp.ndarray y = array(gates, "gates", t, False)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, True)
    cdef cnp.ndarray dhv = array(dh, "dh", t, True)
    _seq(y, "gates", nt, nb, h)
    _seq(dg, "d_gates", nt, nb, h)
    _matrix(dhv, "dh", nb, h)
    disjoint_from(dg, "d_gates", go, "gradOutput", y, "gates", u, "W_hh")
    disjoint_from(dhv, "dh", dg, "d_gates", go, "gradOutput", y, "gates", u, "W_hh")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _rnn_bptt(f32(go), f32(y), f32(u), f32(dg), f32(dhv), nb, nt, h, act)
        else:
            _rnn_bptt(f64(go), f64(y), f64(u), f64(dg), f64(dhv), nb, nt, h, act)


cdef void _rnn_bptt(const floating *go, const floating *y, const floating *u, floating *dg,
                    floating *dh, Py_ssize_t nb, Py_ssize_t nt, Py_ssize_t h,
                    int act) noexcept nogil:
    cdef Py_ssize_t t, b, j, r, o
    cdef floating dv, yv
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(dh, 0, nb * h * sizeof(floating))
    for t in range(nt - 1, -1, -1):
        for b in range(nb):
            r = (t * nb + b) * h
            o = (b * nt + t) * h
            if act == TANH:
                for j in range(h):
                    yv = y[r + j]
                    dg[r + j] = (go[o + j] + dh[b * h + j]) * (1 - yv * yv)
            elif act == SIGMOID:
                for j in range(h):
                    yv = y[r + j]
                    dg[r + j] = (go[o + j] + dh[b * h + j]) * yv * (1 - yv)
            else:
                for j in range(h):
                    dv = go[o + j] + dh[b * h + j]
                    dg[r + j] = dv if y[r + j] > 0 else 0
        if t > 0:
            gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> h, <floating> 1, dg + t * nb * h,
                 <int> h, u, <int> h, <floating> 0, dh, <int> h)


# -- LSTMPeephole: gates i, f, g, o; peepholes p_i, p_f on c(t-1), p_o on c(t) -------------

def peephole_steps(output, gates, cell, tanh_cell, h_prev, u_packed, u_i, u_f, u_g, u_o,
                   p_i, p_f, p_o, h_noise=None, h_dropped=None):
    """Run an LSTM with peepholes over the sequence whose projected input is in ``gates``
    (T, B, 4H, blocks i, f, g, o). The four (H, H) hidden weights are first copied into
    ``u_packed`` (4H, H), so that each step is one GEMM; buffers as lstm_steps.

    With ``h_noise`` (T, B, 4H; the scaled dropout masks of h(t-1), one block per gate
    i, f, g, o), gate k of step t reads U_k (h(t-1) * h_noise[t, :, k]) instead: each step
    writes those dropped states into ``h_dropped`` (T, B, 4H; zero at step 0, kept for the
    weight gradients) and runs one GEMM per gate."""
    cdef int t = float_type(u_i, "U_i")
    cdef cnp.ndarray up = array(u_packed, "U_packed", t, True)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(up, "U_packed", t, y, "output", 4, &nb, &nt, &h)
    cdef cnp.ndarray ui = array(u_i, "U_i", t, False)
    cdef cnp.ndarray uf = array(u_f, "U_f", t, False)
    cdef cnp.ndarray ug = array(u_g, "U_g", t, False)
    cdef cnp.ndarray uo = array(u_o, "U_o", t, False)
    cdef cnp.ndarray pi = array(p_i, "p_i", t, False)
    cdef cnp.ndarray pf = array(p_f, "p_f", t, False)
    cdef cnp.ndarray po = array(p_o, "p_o", t, False)
    for a, what in ((ui, "U_i"), (uf, "U_f"), (ug, "U_g"), (uo, "U_o")):
        _matrix(a, what, h, h)
    for a, what in ((pi, "p_i"), (pf, "p_f"), (po, "p_o")):
        vector_of(a, what, h)
    cdef cnp.ndarray g = array(gates, "gates", t, True)
    cdef cnp.ndarray c = array(cell, "cell", t, True)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, True)
    cdef cnp.ndarray hp = array(h_prev, "h_prev", t, True)
    _seq(g, "gates", nt, nb, 4 * h)
    _seq(c, "cell", nt, nb, h)
    _seq(tc, "tanh_cell", nt, nb, h)
    _seq(hp, "h_prev", nt, nb, h)
    for a, what in ((y, "output"), (g, "gates"), (c, "cell"), (tc, "tanh_cell"),
                    (hp, "h_prev"), (up, "U_packed")):
        disjoint_from(a, what, ui, "U_i", uf, "U_f", ug, "U_g", uo, "U_o")
        disjoint_from(a, what, pi, "p_i", pf, "p_f", po, "p_o")
    disjoint_from(y, "output", g, "gates", c, "cell", tc, "tanh_cell", hp, "h_prev", up,
                  "U_packed")
    disjoint_from(g, "gates", c, "cell", tc, "tanh_cell", hp, "h_prev", up, "U_packed")
    disjoint_from(c, "cell", tc, "tanh_cell", hp, "h_prev", up, "U_packed")
    disjoint_from(tc, "tanh_cell", hp, "h_prev", up, "U_packed")
    disjoint_from(hp, "h_prev", up, "U_packed")
    cdef cnp.ndarray hn = array_or_none(h_noise, "h_noise", t, False)
    cdef cnp.ndarray hd = array_or_none(h_dropped, "h_dropped", t, True)
    if (hn is None) != (hd is None):
        raise ValueError("h_noise and h_dropped go together: give both or neither")
    if hn is not None:
        _seq(hn, "h_noise", nt, nb, 4 * h)
        _seq(hd, "h_dropped", nt, nb, 4 * h)
        for a, what in ((y, "output"), (g, "gates"), (c, "cell"), (tc, "tanh_cell"),
                        (hp, "h_prev"), (up, "U_packed"), (hn, "h_noise")):
            disjoint_from(hd, "h_dropped", a, what)
        disjoint_from(hd, "h_dropped", ui, "U_i", uf, "U_f", ug, "U_g", uo, "U_o")
        disjoint_from(hd, "h_dropped", pi, "p_i", pf, "p_f", po, "p_o")
        disjoint_from(hn, "h_noise", y, "output", g, "gates", c, "cell", tc, "tanh_cell")
        disjoint_from(hn, "h_noise", hp, "h_prev", up, "U_packed")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _pack(f32(up), f32(ui), f32(uf), f32(ug), f32(uo), h)
            _peephole_steps(f32(y), f32(g), f32(c), f32(tc), f32(hp), f32(up), f32(pi),
                            f32(pf), f32(po), f32(hn), f32(hd), nb, nt, h)
        else:
            _pack(f64(up), f64(ui), f64(uf), f64(ug), f64(uo), h)
            _peephole_steps(f64(y), f64(g), f64(c), f64(tc), f64(hp), f64(up), f64(pi),
                            f64(pf), f64(po), f64(hn), f64(hd), nb, nt, h)


cdef void _pack(floating *up, const floating *ui, const floating *uf, const floating *ug,
                const floating *uo, Py_ssize_t h) noexcept nogil:
    cdef size_t block = h * h * sizeof(floating)
    if h == 0:
        return
    memcpy(up, ui, block)
    memcpy(up + h * h, uf, block)
    memcpy(up + 2 * h * h, ug, block)
    memcpy(up + 3 * h * h, uo, block)


cdef void _drop_hidden(const floating *hp, const floating *hn, floating *hd, Py_ssize_t nb,
                       Py_ssize_t h) noexcept nogil:
    """One step's dropped states: hd[b, k*H + j] = hp[b, j] * hn[b, k*H + j], k < 4."""
    cdef Py_ssize_t b, k, j, o
    for b in range(nb):
        for k in range(4):
            o = b * 4 * h + k * h
            for j in range(h):
                hd[o + j] = hp[b * h + j] * hn[o + j]


cdef void _peephole_steps(floating *y, floating *g, floating *c, floating *tc, floating *hp,
                          const floating *up, const floating *pi, const floating *pf,
                          const floating *po, const floating *hn, floating *hd, Py_ssize_t nb,
                          Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef bint d = floating is double
    cdef Py_ssize_t gw = 4 * h, t, b, j, r, k
    cdef floating *row
    cdef floating *cr
    cdef floating *tcr
    cdef floating *yr
    cdef const floating *cp
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(hp, 0, nb * h * sizeof(floating))
    if hd != NULL:
        memset(hd, 0, nb * gw * sizeof(floating))
    for t in range(nt):
        if t > 0 and hd == NULL:
            gemm(NoTrans, Trans, <int> nb, <int> gw, <int> h, <floating> 1, hp + t * nb * h,
                 <int> h, up, <int> h, <floating> 1, g + t * nb * gw, <int> gw)
        elif t > 0:
            _drop_hidden(hp + t * nb * h, hn + t * nb * gw, hd + t * nb * gw, nb, h)
            for k in range(4):
                gemm(NoTrans, Trans, <int> nb, <int> h, <int> h, <floating> 1,
                     hd + t * nb * gw + k * h, <int> gw, up + k * h * h, <int> h,
                     <floating> 1, g + t * nb * gw + k * h, <int> gw)
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            cr = c + r * h
            if t > 0:
                cp = c + (r - nb) * h
                for j in range(h):
                    row[j] += pi[j] * cp[j]
                    row[h + j] += pf[j] * cp[j]
            pm_sigmoid_fwd(d, row, row, 2 * h)
            pm_tanh_fwd(d, row + 2 * h, row + 2 * h, h)
            if t > 0:
                for j in range(h):
                    cr[j] = row[h + j] * cp[j] + row[j] * row[2 * h + j]
                    row[3 * h + j] += po[j] * cr[j]
            else:
                for j in range(h):
                    cr[j] = row[j] * row[2 * h + j]
                    row[3 * h + j] += po[j] * cr[j]
            pm_sigmoid_fwd(d, row + 3 * h, row + 3 * h, h)
            tcr = tc + r * h
            pm_tanh_fwd(d, cr, tcr, h)
            yr = y + (b * nt + t) * h
            for j in range(h):
                yr[j] = row[3 * h + j] * tcr[j]
            if t + 1 < nt:
                memcpy(hp + (r + nb) * h, yr, h * sizeof(floating))


def peephole_bptt(grad_output, gates, cell, tanh_cell, u_packed, p_i, p_f, p_o, d_gates, dh,
                  dc, h_noise=None, dh_parts=None):
    """Back through time of peephole_steps (``u_packed`` as it left): the gradient of every
    gate pre-activation into ``d_gates`` (T, B, 4H); dh and dc (B, H) are carries. With the
    forward's ``h_noise`` (T, B, 4H), dh(t-1) = sum_k (dG_k(t) U_k) * h_noise[t, :, k], each
    product into its block of ``dh_parts`` (B, 4H)."""
    cdef int t = float_type(u_packed, "U_packed")
    cdef cnp.ndarray up = array(u_packed, "U_packed", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef Py_ssize_t nb, nt, h
    _cell_buffers(up, "U_packed", t, go, "gradOutput", 4, &nb, &nt, &h)
    cdef cnp.ndarray pi = array(p_i, "p_i", t, False)
    cdef cnp.ndarray pf = array(p_f, "p_f", t, False)
    cdef cnp.ndarray po = array(p_o, "p_o", t, False)
    for a, what in ((pi, "p_i"), (pf, "p_f"), (po, "p_o")):
        vector_of(a, what, h)
    cdef cnp.ndarray g = array(gates, "gates", t, False)
    cdef cnp.ndarray c = array(cell, "cell", t, False)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, False)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, True)
    cdef cnp.ndarray dhv = array(dh, "dh", t, True)
    cdef cnp.ndarray dcv = array(dc, "dc", t, True)
    _seq(g, "gates", nt, nb, 4 * h)
    _seq(c, "cell", nt, nb, h)
    _seq(tc, "tanh_cell", nt, nb, h)
    _seq(dg, "d_gates", nt, nb, 4 * h)
    _matrix(dhv, "dh", nb, h)
    _matrix(dcv, "dc", nb, h)
    for a, what in ((dg, "d_gates"), (dhv, "dh"), (dcv, "dc")):
        disjoint_from(a, what, go, "gradOutput", g, "gates", c, "cell", tc, "tanh_cell",
                      up, "U_packed")
        disjoint_from(a, what, pi, "p_i", pf, "p_f", po, "p_o")
    disjoint_from(dg, "d_gates", dhv, "dh", dcv, "dc")
    disjoint_from(dhv, "dh", dcv, "dc")
    cdef cnp.ndarray hn = array_or_none(h_noise, "h_noise", t, False)
    cdef cnp.ndarray dp = array_or_none(dh_parts, "dh_parts", t, True)
    if (hn is None) != (dp is None):
        raise ValueError("h_noise and dh_parts go together: give both or neither")
    if hn is not None:
        _seq(hn, "h_noise", nt, nb, 4 * h)
        _matrix(dp, "dh_parts", nb, 4 * h)
        for a, what in ((dg, "d_gates"), (dhv, "dh"), (dcv, "dc")):
            disjoint_from(a, what, hn, "h_noise", dp, "dh_parts")
        disjoint_from(dp, "dh_parts", go, "gradOutput", g, "gates", c, "cell", tc,
                      "tanh_cell", up, "U_packed")
        disjoint_from(dp, "dh_parts", pi, "p_i", pf, "p_f", po, "p_o", hn, "h_noise")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _peephole_bptt(f32(go), f32(g), f32(c), f32(tc), f32(up), f32(pi), f32(pf),
                           f32(po), f32(dg), f32(dhv), f32(dcv), f32(hn), f32(dp), nb, nt, h)
        else:
            _peephole_bptt(f64(go), f64(g), f64(c), f64(tc), f64(up), f64(pi), f64(pf),
                           f64(po), f64(dg), f64(dhv), f64(dcv), f64(hn), f64(dp), nb, nt, h)


cdef void _peephole_bptt(const floating *go, const floating *g, const floating *c,
                         const floating *tc, const floating *up, const floating *pi,
                         const floating *pf, const floating *po, floating *dg, floating *dh,
                         floating *dc, const floating *hn, floating *dp, Py_ssize_t nb,
                         Py_ssize_t nt, Py_ssize_t h) noexcept nogil:
    cdef Py_ssize_t gw = 4 * h, t, b, j, r, k, o
    cdef const floating *row
    cdef floating *drow
    cdef floating iv, fv, gv, ov, th, dv, dcell, cpv, dai, daf, dao
    if nb == 0 or nt == 0 or h == 0:
        return
    memset(dh, 0, nb * h * sizeof(floating))
    memset(dc, 0, nb * h * sizeof(floating))
    for t in range(nt - 1, -1, -1):
        for b in range(nb):
            r = t * nb + b
            row = g + r * gw
            drow = dg + r * gw
            for j in range(h):
                iv = row[j]
                fv = row[h + j]
                gv = row[2 * h + j]
                ov = row[3 * h + j]
                th = tc[r * h + j]
                cpv = c[(r - nb) * h + j] if t > 0 else 0
                dv = go[(b * nt + t) * h + j] + dh[b * h + j]
                dao = dv * th * ov * (1 - ov)
                dcell = dv * ov * (1 - th * th) + dc[b * h + j] + dao * po[j]
                dai = dcell * gv * iv * (1 - iv)
                daf = dcell * cpv * fv * (1 - fv)
                drow[j] = dai
                drow[h + j] = daf
                drow[2 * h + j] = dcell * iv * (1 - gv * gv)
                drow[3 * h + j] = dao
                dc[b * h + j] = dcell * fv + dai * pi[j] + daf * pf[j]
        if t > 0 and dp == NULL:
            gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> gw, <floating> 1,
                 dg + t * nb * gw, <int> gw, up, <int> h, <floating> 0, dh, <int> h)
        elif t > 0:
            for k in range(4):
                gemm(NoTrans, NoTrans, <int> nb, <int> h, <int> h, <floating> 1,
                     dg + t * nb * gw + k * h, <int> gw, up + k * h * h, <int> h,
                     <floating> 0, dp + k * h, <int> gw)
            for b in range(nb):
                o = (t * nb + b) * gw
                for j in range(h):
                    dh[b * h + j] = dp[b * gw + j] * hn[o + j] + \
                        dp[b * gw + h + j] * hn[o + h + j] + \
                        dp[b * gw + 2 * h + j] * hn[o + 2 * h + j] + \
                        dp[b * gw + 3 * h + j] * hn[o + 3 * h + j]


def peephole_acc(cell, d_gates, grad_p_i, grad_p_f, grad_p_o, double scale):
    """grad_p_i += scale * sum(dG_i * c(t-1)), grad_p_f likewise with dG_f, grad_p_o +=
    scale * sum(dG_o * c(t)), sums over batch and time; cell (B, T, H), d_gates (B, T, 4H)."""
    cdef int t = float_type(grad_p_i, "gradP_i")
    cdef cnp.ndarray gpi = array(grad_p_i, "gradP_i", t, True)
    cdef cnp.ndarray gpf = array(grad_p_f, "gradP_f", t, True)
    cdef cnp.ndarray gpo = array(grad_p_o, "gradP_o", t, True)
    ndim(gpi, "gradP_i", 1, 1)
    cdef Py_ssize_t h = cnp.PyArray_DIMS(gpi)[0], nb, nt
    vector_of(gpf, "gradP_f", h)
    vector_of(gpo, "gradP_o", h)
    cdef cnp.ndarray c = array(cell, "cell", t, False)
    _sizes(c, "cell", h, &nt, &nb)
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    _seq(dg, "d_gates", nt, nb, 4 * h)
    for a, what in ((gpi, "gradP_i"), (gpf, "gradP_f"), (gpo, "gradP_o")):
        disjoint_from(a, what, c, "cell", dg, "d_gates")
    disjoint_from(gpi, "gradP_i", gpf, "gradP_f", gpo, "gradP_o")
    disjoint_from(gpf, "gradP_f", gpo, "gradP_o")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _peephole_acc(f32(c), f32(dg), f32(gpi), f32(gpf), f32(gpo), <float> scale, nb,
                          nt, h)
        else:
            _peephole_acc(f64(c), f64(dg), f64(gpi), f64(gpf), f64(gpo), scale, nb, nt, h)


cdef void _peephole_acc(const floating *c, const floating *dg, floating *gpi, floating *gpf,
                        floating *gpo, floating scale, Py_ssize_t nb, Py_ssize_t nt,
                        Py_ssize_t h) noexcept nogil:
    cdef Py_ssize_t gw = 4 * h, t, b, j, r
    cdef const floating *drow
    cdef const floating *cr
    cdef const floating *cp
    if scale == 0:
        return
    for t in range(nt):
        for b in range(nb):
            r = t * nb + b
            drow = dg + r * gw
            cr = c + r * h
            for j in range(h):
                gpo[j] += scale * drow[3 * h + j] * cr[j]
            if t > 0:
                cp = c + (r - nb) * h
                for j in range(h):
                    gpi[j] += scale * drow[j] * cp[j]
                    gpf[j] += scale * drow[h + j] * cp[j]


# -- time reversal (BiRecurrent) ----------------------------------------------------------

def reverse_time(input, output):
    """output[:, t] := input[:, T - 1 - t], (B, T, F)."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    ndim(x, "input", 3, 3)
    cdef Py_ssize_t nb = cnp.PyArray_DIMS(x)[0], nt = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t w = cnp.PyArray_DIMS(x)[2]
    cdef cnp.ndarray y = array(output, "output", t, True)
    _seq(y, "output", nb, nt, w)
    disjoint_from(y, "output", x, "input")
    with nogil:
        _reverse(<char *> cnp.PyArray_DATA(x), <char *> cnp.PyArray_DATA(y), nb, nt,
                 w * cnp.PyArray_ITEMSIZE(x))


cdef void _reverse(const char *x, char *y, Py_ssize_t nb, Py_ssize_t nt,
                   Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t b, t
    if row == 0:
        return
    for b in range(nb):
        for t in range(nt):
            memcpy(y + (b * nt + t) * row, x + (b * nt + nt - 1 - t) * row, row)


def add_reversed(a, b, output):
    """output[:, t] := a[:, t] + b[:, T - 1 - t], (B, T, F)."""
    cdef int t = float_type(a, "a")
    cdef cnp.ndarray x = array(a, "a", t, False)
    ndim(x, "a", 3, 3)
    cdef Py_ssize_t nb = cnp.PyArray_DIMS(x)[0], nt = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t w = cnp.PyArray_DIMS(x)[2]
    cdef cnp.ndarray z = array(b, "b", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    _seq(z, "b", nb, nt, w)
    _seq(y, "output", nb, nt, w)
    disjoint_from(y, "output", x, "a", z, "b")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _add_reversed(f32(x), f32(z), f32(y), nb, nt, w)
        else:
            _add_reversed(f64(x), f64(z), f64(y), nb, nt, w)


cdef void _add_reversed(const floating *a, const floating *b, floating *y, Py_ssize_t nb,
                        Py_ssize_t nt, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t i, t, j
    cdef const floating *ar
    cdef const floating *br
    cdef floating *yr
    for i in range(nb):
        for t in range(nt):
            ar = a + (i * nt + t) * w
            br = b + (i * nt + nt - 1 - t) * w
            yr = y + (i * nt + t) * w
            for j in range(w):
                yr[j] = ar[j] + br[j]


# -- batch-first <-> time-major ------------------------------------------------------------

def swap_time_batch(input, output, Py_ssize_t features=-1):
    """output[j, i] := input[i, j]: (A, C, F) -> (C, A, F), the batch-first sequence to the
    time-major layout of the kernels above and back. With ``features`` >= 0 the input must
    be a (batch, time, features) sequence of that many features."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef Py_ssize_t na, nc
    if features >= 0:
        _sizes(x, "input", features, &na, &nc)
    else:
        ndim(x, "input", 3, 3)
    na, nc = cnp.PyArray_DIMS(x)[0], cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t w = cnp.PyArray_DIMS(x)[2]
    cdef cnp.ndarray y = array(output, "output", t, True)
    shape_is(y, "output", (nc, na, w))
    disjoint_from(y, "output", x, "input")
    with nogil:
        _swap(<char *> cnp.PyArray_DATA(x), <char *> cnp.PyArray_DATA(y), na, nc,
              w * cnp.PyArray_ITEMSIZE(x))


cdef void _swap(const char *x, char *y, Py_ssize_t na, Py_ssize_t nc,
                Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t i, j
    if row == 0:
        return
    for i in range(na):
        for j in range(nc):
            memcpy(y + (j * na + i) * row, x + (i * nc + j) * row, row)


# -- dropout masks that hold over the whole sequence ---------------------------------------

def mask_over_time(input, mask, output):
    """output[k, a, t, c] := input[a, t, c] * mask[k, a, c]: K masked copies of a (A, T, C)
    sequence, each mask the same at every step t."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray m = array(mask, "mask", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(x, "input", 3, 3)
    ndim(m, "mask", 3, 3)
    cdef Py_ssize_t na = cnp.PyArray_DIMS(x)[0], nt = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t nc = cnp.PyArray_DIMS(x)[2], nk = cnp.PyArray_DIMS(m)[0]
    shape_is(m, "mask", (nk, na, nc))
    shape_is(y, "output", (nk, na, nt, nc))
    disjoint_from(y, "output", x, "input", m, "mask")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mask_over_time(f32(x), f32(m), f32(y), nk, na, nt, nc)
        else:
            _mask_over_time(f64(x), f64(m), f64(y), nk, na, nt, nc)


cdef void _mask_over_time(const floating *x, const floating *m, floating *y, Py_ssize_t nk,
                          Py_ssize_t na, Py_ssize_t nt, Py_ssize_t nc) noexcept nogil:
    cdef Py_ssize_t k, a, t, c
    cdef const floating *xr
    cdef const floating *mr
    cdef floating *yr
    for k in range(nk):
        for a in range(na):
            mr = m + (k * na + a) * nc
            for t in range(nt):
                xr = x + (a * nt + t) * nc
                yr = y + ((k * na + a) * nt + t) * nc
                for c in range(nc):
                    yr[c] = xr[c] * mr[c]


def masked_sum_over_time(parts, mask, output):
    """output[a, t, c] := sum_k parts[k, a, t, c] * mask[k, a, c] (the adjoint of
    mask_over_time); ``mask`` None sums the parts as they are."""
    cdef int t = float_type(parts, "parts")
    cdef cnp.ndarray x = array(parts, "parts", t, False)
    cdef cnp.ndarray m = array_or_none(mask, "mask", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(x, "parts", 4, 4)
    cdef Py_ssize_t nk = cnp.PyArray_DIMS(x)[0], na = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(x)[2], nc = cnp.PyArray_DIMS(x)[3]
    if m is not None:
        shape_is(m, "mask", (nk, na, nc))
    shape_is(y, "output", (na, nt, nc))
    disjoint_from(y, "output", x, "parts", m, "mask")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _masked_sum(f32(x), f32(m), f32(y), nk, na, nt, nc)
        else:
            _masked_sum(f64(x), f64(m), f64(y), nk, na, nt, nc)


cdef void _masked_sum(const floating *x, const floating *m, floating *y, Py_ssize_t nk,
                      Py_ssize_t na, Py_ssize_t nt, Py_ssize_t nc) noexcept nogil:
    cdef Py_ssize_t k, a, t, c, size = na * nt * nc
    cdef const floating *xr
    cdef const floating *mr
    cdef floating *yr
    memset(y, 0, size * sizeof(floating))
    for k in range(nk):
        for a in range(na):
            mr = m + (k * na + a) * nc if m != NULL else NULL
            for t in range(nt):
                xr = x + ((k * na + a) * nt + t) * nc
                yr = y + (a * nt + t) * nc
                if mr != NULL:
                    for c in range(nc):
                        yr[c] += xr[c] * mr[c]
                else:
                    for c in range(nc):
                        yr[c] += xr[c]


def stack_rows(output, blocks):
    """output := the 2-D arrays of ``blocks`` (a tuple) stacked down the rows (the gate
    blocks of separate weights as one matrix)."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(y, "output", 2, 2)
    cdef Py_ssize_t rows = 0, cols = cnp.PyArray_DIMS(y)[1], k
    cdef cnp.ndarray a
    checked = []
    for k, blk in enumerate(blocks):
        what = f"blocks[{k}]"
        a = array(blk, what, t, False)
        ndim(a, what, 2, 2)
        if cnp.PyArray_DIMS(a)[1] != cols:
            raise ValueError(f"{what} has {cnp.PyArray_DIMS(a)[1]} columns, expected {cols}")
        disjoint_from(y, "output", a, what)
        rows += cnp.PyArray_DIMS(a)[0]
        checked.append(a)
    if rows != cnp.PyArray_DIMS(y)[0]:
        raise ValueError(f"blocks have {rows} rows in all, output {cnp.PyArray_DIMS(y)[0]}")
    cdef char *dst = <char *> cnp.PyArray_DATA(y)
    cdef Py_ssize_t n
    for a in checked:
        n = cnp.PyArray_NBYTES(a)
        with nogil:
            if n > 0:
                memcpy(dst, cnp.PyArray_DATA(a), n)
        dst += n


# -- LSTM over [x(t), h(t-1)]: one product per step each way, on packed weights (float32) ----

cdef extern from "_recurrent.h" nogil:
    void pm_rec_wgrad_w(int W, int N, int G, int I, int H, const float *dg, size_t ldg,
                        const float *xh, size_t ldx, float scale, float *gw, size_t ldw,
                        float *gu, size_t ldu, float *gb, float scale_b, int n_h)
    void pm_rec_xh_forward(Py_ssize_t nb, Py_ssize_t nt, Py_ssize_t ni, Py_ssize_t h,
                           Py_ssize_t np_, int W, const float *x, const float *wi,
                           const float *wh, const float *bi, float *pk, size_t pk_size,
                           float *pb, float *xh, float *z, float *c, float *tc, float *y)
    void pm_rec_xh_backward(Py_ssize_t nb, Py_ssize_t nt, Py_ssize_t ni, Py_ssize_t h,
                            Py_ssize_t np_, int W, Py_ssize_t gw, const float *go,
                            const float *wi, const float *wh, float *pk, size_t pk_size,
                            const float *z, const float *c, const float *tc, float *dg,
                            float *dxh, size_t dxh_size, float *dc, float *gi)
    float *pm_rec_gate_rows(float *z, size_t n, size_t gw, int H, int W)
    int pm_rec_width()
    void pm_rec_allow_wide(int allow)


def lstm_xh_panels(Py_ssize_t input_size, Py_ssize_t hidden):
    """(forward panels, backward panels, width) of lstm_xh_forward's and lstm_xh_backward's
    packed weights on this core: panels of W = 48 columns where it has AVX-512 (three
    64-byte vectors a row), else 24; ceil(4H / W) and ceil((I + H) / W) + 1 (one panel of
    room in which the panels start on a 64-byte boundary); their buffers are (panels, I + H,
    W) and (panels, 4H, W), the forward's bias (W * panels,), the backward's ``dxh`` (B,
    W * panels); ``gates`` and ``d_gates`` are (T, B, W * forward panels)."""
    cdef Py_ssize_t w = pm_rec_width()
    return (4 * hidden + w - 1) // w, (input_size + hidden + w - 1) // w + 1, w


def lstm_xh_allow_wide(bint allow):
    """For tests: False gives every core the 24-column panels, True gives the core its
    choice back (buffers follow lstm_xh_panels)."""
    pm_rec_allow_wide(allow)


cdef int _xh_sizes(cnp.ndarray wi, cnp.ndarray wh, Py_ssize_t *i, Py_ssize_t *h) except -1:
    ndim(wi, "W_ih", 2, 2)
    ndim(wh, "W_hh", 2, 2)
    h[0] = cnp.PyArray_DIMS(wh)[1]
    i[0] = cnp.PyArray_DIMS(wi)[1]
    _matrix(wh, "W_hh", 4 * h[0], h[0])
    _matrix(wi, "W_ih", 4 * h[0], i[0])
    int_limit((4 * h[0] + 48) * (i[0] + h[0] + 96), "packed weights")
    return 0


def lstm_xh_forward(input, w_ih, w_hh, b_ih, packed, packed_bias, xh, gates, cell, tanh_cell,
                    output):
    """float32 LSTM forward (gates i, g, f, o) with one product per step over the rows
    [x(t), h(t-1)] of ``xh`` (T, B, I + H; filled here, h(-1) = 0): gates[t] (B, 24 * P) =
    xh[t] @ [W_ih W_hh].T + b_ih on ``packed`` (P, I + H, 24; the weights packed here, once
    per call) and ``packed_bias`` (24 * P), then activated in place (one vectorised pass per
    row, engine/_recurrent.h); ``cell`` and ``tanh_cell`` (T, B, H) get c(t) and tanh(c(t)),
    ``output`` (B, T, H) h(t)."""
    cdef int t = cnp.NPY_FLOAT32
    cdef cnp.ndarray wi = array(w_ih, "W_ih", t, False)
    cdef cnp.ndarray wh = array(w_hh, "W_hh", t, False)
    cdef Py_ssize_t i, h, nb, nt
    _xh_sizes(wi, wh, &i, &h)
    cdef int W = pm_rec_width()
    cdef Py_ssize_t k = i + h, np_ = (4 * h + W - 1) // W
    cdef cnp.ndarray x = array(input, "input", t, False)
    _sizes(x, "input", i, &nb, &nt)
    cdef cnp.ndarray bi = array(b_ih, "b_ih", t, False)
    vector_of(bi, "b_ih", 4 * h)
    cdef cnp.ndarray pk = array(packed, "packed", t, True)
    shape_is(pk, "packed", (np_, k, W))
    cdef cnp.ndarray pb = array(packed_bias, "packed_bias", t, True)
    vector_of(pb, "packed_bias", W * np_)
    cdef cnp.ndarray a = array(xh, "xh", t, True)
    shape_is(a, "xh", (nt, nb, k))
    cdef cnp.ndarray z = array(gates, "gates", t, True)
    shape_is(z, "gates", (nt, nb, W * np_))
    cdef cnp.ndarray c = array(cell, "cell", t, True)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, True)
    shape_is(c, "cell", (nt, nb, h))
    shape_is(tc, "tanh_cell", (nt, nb, h))
    cdef cnp.ndarray y = array(output, "output", t, True)
    _seq(y, "output", nb, nt, h)
    int_limit(nt * nb * W * np_, "time * batch * gate width")
    outs = ((pk, "packed"), (pb, "packed_bias"), (a, "xh"), (z, "gates"), (c, "cell"),
            (tc, "tanh_cell"), (y, "output"))
    for q, (o, what) in enumerate(outs):
        disjoint_from(o, what, x, "input", wi, "W_ih", wh, "W_hh", bi, "b_ih")
        for o2, what2 in outs[q + 1:]:
            disjoint_from(o, what, o2, what2)
    with nogil:
        pm_rec_xh_forward(nb, nt, i, h, np_, W, f32(x), f32(wi), f32(wh), f32(bi), f32(pk),
                          np_ * k * W, f32(pb), f32(a), f32(z), f32(c), f32(tc), f32(y))


def lstm_xh_backward(grad_output, w_ih, w_hh, packed, gates, cell, tanh_cell, d_gates, dxh, dc,
                     grad_input):
    """Back through time of lstm_xh_forward: per step one pass, dG(t) into ``d_gates``
    (T, B, 24 * forward panels: rows as wide as ``gates``'s, so that they do not fall
    on the same cache sets; columns past 4H unused), then one product [dx(t) dh(t-1)] =
    dG(t) @ [W_ih W_hh] into ``dxh`` (B, 24 * (P + 1)) on ``packed`` (P + 1, 4H, 24; the P
    panels packed here from the first 64-byte boundary in it, P = ceil((I + H) / 24); the
    first step computes dx(0) only), dx(t) to ``grad_input`` (B, T, I); ``dc`` (B, H) is the
    cell's carry."""
    cdef int t = cnp.NPY_FLOAT32
    cdef cnp.ndarray wi = array(w_ih, "W_ih", t, False)
    cdef cnp.ndarray wh = array(w_hh, "W_hh", t, False)
    cdef Py_ssize_t i, h, nb, nt
    _xh_sizes(wi, wh, &i, &h)
    cdef int W = pm_rec_width()
    cdef Py_ssize_t k = i + h, np_ = (k + W - 1) // W, gw = W * ((4 * h + W - 1) // W)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    _sizes(go, "gradOutput", h, &nb, &nt)
    cdef cnp.ndarray pk = array(packed, "packed", t, True)
    shape_is(pk, "packed", (np_ + 1, 4 * h, W))
    cdef cnp.ndarray z = array(gates, "gates", t, False)
    shape_is(z, "gates", (nt, nb, gw))
    cdef cnp.ndarray c = array(cell, "cell", t, False)
    cdef cnp.ndarray tc = array(tanh_cell, "tanh_cell", t, False)
    shape_is(c, "cell", (nt, nb, h))
    shape_is(tc, "tanh_cell", (nt, nb, h))
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, True)
    shape_is(dg, "d_gates", (nt, nb, gw))
    cdef cnp.ndarray d = array(dxh, "dxh", t, True)
    _matrix(d, "dxh", nb, W * (np_ + 1))
    cdef cnp.ndarray dcv = array(dc, "dc", t, True)
    _matrix(dcv, "dc", nb, h)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    _seq(gi, "gradInput", nb, nt, i)
    int_limit(nt * nb * gw, "time * batch * gate width")
    outs = ((pk, "packed"), (dg, "d_gates"), (d, "dxh"), (dcv, "dc"), (gi, "gradInput"))
    for q, (o, what) in enumerate(outs):
        disjoint_from(o, what, go, "gradOutput", wi, "W_ih", wh, "W_hh", z, "gates")
        disjoint_from(o, what, c, "cell", tc, "tanh_cell")
        for o2, what2 in outs[q + 1:]:
            disjoint_from(o, what, o2, what2)
    with nogil:
        pm_rec_xh_backward(nb, nt, i, h, np_, W, gw, f32(go), f32(wi), f32(wh), f32(pk),
                           (np_ + 1) * 4 * h * W, f32(z), f32(c), f32(tc), f32(dg), f32(d),
                           nb * W * (np_ + 1), f32(dcv), f32(gi))


def lstm_xh_acc(xh, d_gates, grad_w_ih, grad_b_ih, grad_w_hh, double scale_w, double scale_b):
    """The weight gradients of lstm_xh_backward in one pass over all steps (engine/
    _recurrent.h's pm_rec_wgrad): grad_w_ih += scale_w * dG.T @ x, grad_w_hh += scale_w *
    dG.T @ h(t-1) (the columns of ``xh``, (T, B, I + H), whose first step's h(-1) = 0 is not
    read), grad_b_ih += scale_b * the column sums of dG (``d_gates``, (T, B, W), its first
    4H columns)."""
    cdef int t = cnp.NPY_FLOAT32
    cdef cnp.ndarray gw = array(grad_w_ih, "gradW_ih", t, True)
    cdef cnp.ndarray gu = array(grad_w_hh, "gradW_hh", t, True)
    cdef Py_ssize_t i, h
    _xh_sizes(gw, gu, &i, &h)
    cdef cnp.ndarray gb = array(grad_b_ih, "gradB_ih", t, True)
    vector_of(gb, "gradB_ih", 4 * h)
    cdef cnp.ndarray a = array(xh, "xh", t, False)
    ndim(a, "xh", 3, 3)
    cdef Py_ssize_t nt = cnp.PyArray_DIMS(a)[0], nb = cnp.PyArray_DIMS(a)[1]
    shape_is(a, "xh", (nt, nb, i + h))
    cdef cnp.ndarray dg = array(d_gates, "d_gates", t, False)
    ndim(dg, "d_gates", 3, 3)
    cdef Py_ssize_t w = cnp.PyArray_DIMS(dg)[2]
    if w < 4 * h:
        raise ValueError(f"d_gates has {w} columns, fewer than the 4 * {h} gates")
    shape_is(dg, "d_gates", (nt, nb, w))
    int_limit(nt * nb, "time * batch")
    int_limit(w, "d_gates width")
    for o, what in ((gw, "gradW_ih"), (gu, "gradW_hh"), (gb, "gradB_ih")):
        disjoint_from(o, what, a, "xh", dg, "d_gates")
    disjoint_from(gw, "gradW_ih", gu, "gradW_hh", gb, "gradB_ih")
    disjoint_from(gu, "gradW_hh", gb, "gradB_ih")
    cdef int W = pm_rec_width()
    cdef bint own = W == 48 or (nt * nb) * (4 * h) * (i + h) <= XH_OWN_WGRAD
    cdef float *d
    with nogil:
        d = pm_rec_gate_rows(f32(dg), nt * nb, w, <int> h, W)
        if scale_w != 0 and not own:
            _xh_acc_blas(f32(a), d, f32(gw), f32(gu), <float> scale_w, nt * nb, i, h, w)
        if scale_w != 0 and own or scale_b != 0:
            # scale_w = 0 or BLAS's products: the bias only (no columns)
            pm_rec_wgrad_w(W, <int> (nt * nb), <int> (4 * h),
                           <int> i if scale_w != 0 and own else 0,
                           <int> h if scale_w != 0 and own else 0, d, w, f32(a), i + h,
                           <float> scale_w, f32(gw), i, f32(gu), h,
                           f32(gb) if scale_b != 0 else NULL, <float> scale_b, <int> nb)


# Multiply-adds (T B x 4H x (I + H)) up to which lstm_xh_acc's weight gradients run on
# pm_rec_wgrad rather than two BLAS GEMMs: at batch 16, 64 -> 128 (50M) it ran in about 0.92
# of OpenBLAS 0.3.30 Haswell's time; at batch 128, 256 -> 256 (2.1G) in 1.1 of it. With the
# 48-column panels (AVX-512) it runs at every size: on a Zen 5 core 0.44-0.46 ms and 21 ms
# for those two, OpenBLAS 0.97 and 40 with its Haswell kernels, 0.55 and 22 with SkylakeX.
XH_OWN_WGRAD = 1 << 27


cdef void _xh_acc_blas(const float *xh, const float *dg, float *gw, float *gu, float scale_w,
                       Py_ssize_t n, Py_ssize_t i, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t g = 4 * h, k = i + h
    if n == 0:
        return
    if i > 0:
        gemm(Trans, NoTrans, <int> g, <int> i, <int> n, scale_w, dg, <int> w, xh, <int> k,
             <float> 1, gw, <int> i)
    if h > 0:
        gemm(Trans, NoTrans, <int> g, <int> h, <int> n, scale_w, dg, <int> w, xh + i, <int> k,
             <float> 1, gu, <int> h)
