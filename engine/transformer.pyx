"""Kernels of BigDL's Attention and Transformer (pymodules.nn.transformer).

Multi-head attention on (batch, time, hidden) arrays whose hidden axis holds numHeads heads of
depth hidden / numHeads side by side. Head h of a batch entry is then the (time, depth) matrix
at column h * depth with leading dimension hidden, so every GEMM below reads and writes the
heads in place: no split or combine copies.

    probs[b, h]   = softmax(scale * Q_bh @ K_bh^T + bias[b, h])      (tq, tk), rows
    context_bh    = probs[b, h] @ V_bh                              (tq, depth)

``bias`` is (b0, h0, q0, tk) with each of b0, h0, q0 either 1 (broadcast) or the full size:
BigDL's padding bias is (batch, 1, 1, tk), its causal bias (1, 1, tq, tk). The softmax rows are
vecmath.h's (pm_softmax_fwd / pm_softmax_bwd).

The position kernels add the timing signal of "Attention Is All You Need" (section 3.5; sines
then cosines of t / 10000^(i / (channels / 2 - 1))) to embeddings scaled by sqrt(hidden),
optionally shifted right by one step (the decoder's input), with the rows of padding tokens
masked to zero.
"""

cimport numpy as cnp
from libc.math cimport sin, cos, exp, log
from libc.string cimport memset

from engine.blas cimport floating, gemm, NoTrans, Trans
from engine._check cimport (
    shape, float_type, array, array_or_none, f32, f64, ndim, dim, shape_is, disjoint_from,
)
from engine.vecmath cimport pm_softmax_fwd, pm_softmax_bwd

cnp.import_array()

MASK_VALUE = -1e9  # BigDL's value of a masked logit


# -- arguments --------------------------------------------------------------------------------
cdef int _nonempty(cnp.ndarray a, str what) except -1:
    if cnp.PyArray_SIZE(a) == 0:
        raise ValueError(f"{what} is empty (shape {shape(a)})")
    return 0


cdef tuple _heads(cnp.ndarray q, cnp.ndarray k, cnp.ndarray probs):
    """(batch, tq, tk, hidden, heads, depth) of query (b, tq, H), key (b, tk, H) and the
    probabilities (b, heads, tq, tk), checked against each other."""
    ndim(q, "query", 3, 3)
    ndim(k, "key", 3, 3)
    ndim(probs, "probs", 4, 4)
    _nonempty(q, "query")
    _nonempty(k, "key")
    cdef int b = dim(q, 0), tq = dim(q, 1), hidden = dim(q, 2), tk = dim(k, 1)
    cdef int heads = dim(probs, 1)
    if dim(k, 0) != b or dim(k, 2) != hidden:
        raise ValueError(f"key has shape {shape(k)}, expected ({b}, time, {hidden}) like the "
                         f"query {shape(q)}")
    if heads < 1 or hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    shape_is(probs, "probs", (b, heads, tq, tk))
    return b, tq, tk, hidden, heads, hidden // heads


cdef tuple _bias_dims(cnp.ndarray bias, int b, int heads, int tq, int tk):
    """(b0, h0, q0) of a bias broadcast to (b, heads, tq, tk)."""
    ndim(bias, "bias", 4, 4)
    cdef tuple s = shape(bias)
    if not (s[0] in (1, b) and s[1] in (1, heads) and s[2] in (1, tq) and s[3] == tk):
        raise ValueError(f"bias has shape {s}, expected ({b} or 1, {heads} or 1, {tq} or 1, "
                         f"{tk}) to add to the (batch, heads, query time, key time) logits")
    return s[0], s[1], s[2]


# -- attention --------------------------------------------------------------------------------
def attention_scores(query, key, bias, probs, double scale):
    """probs[b, h] := softmax over each row of (scale * Q_bh @ K_bh^T + bias[b, h]).

    query (b, tq, H), key (b, tk, H), bias (b or 1, heads or 1, tq or 1, tk) or None,
    probs (b, heads, tq, tk); heads divides H.
    """
    cdef int t = float_type(probs, "probs")
    cdef cnp.ndarray p = array(probs, "probs", t, True)
    cdef cnp.ndarray q = array(query, "query", t, False)
    cdef cnp.ndarray k = array(key, "key", t, False)
    cdef cnp.ndarray bb = array_or_none(bias, "bias", t, False)
    cdef int b, tq, tk, hidden, heads, depth, b0 = 0, h0 = 0, q0 = 0
    b, tq, tk, hidden, heads, depth = _heads(q, k, p)
    if bb is not None:
        b0, h0, q0 = _bias_dims(bb, b, heads, tq, tk)
    disjoint_from(p, "probs", q, "query", k, "key", bb, "bias")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scores(f32(q), f32(k), f32(bb), f32(p), b, tq, tk, hidden, heads, depth, b0, h0,
                    q0, scale)
        else:
            _scores(f64(q), f64(k), f64(bb), f64(p), b, tq, tk, hidden, heads, depth, b0, h0,
                    q0, scale)


cdef inline Py_ssize_t _bias_row(int i, int h, int r, int b0, int h0, int q0,
                                 int tk) noexcept nogil:
    """Offset of the bias row added to row r of head h of batch entry i."""
    return ((<Py_ssize_t> (i if b0 > 1 else 0) * h0 + (h if h0 > 1 else 0)) * q0
            + (r if q0 > 1 else 0)) * tk


cdef void _scores(const floating *q, const floating *k, const floating *bias, floating *p,
                  int b, int tq, int tk, int hidden, int heads, int depth, int b0, int h0,
                  int q0, double scale) noexcept nogil:
    cdef Py_ssize_t i, h, r, j
    cdef floating *s
    cdef const floating *row
    for i in range(b):
        for h in range(heads):
            s = p + (i * heads + h) * <Py_ssize_t> tq * tk
            gemm(NoTrans, Trans, tq, tk, depth, <floating> scale,
                 q + i * <Py_ssize_t> tq * hidden + h * depth, hidden,
                 k + i * <Py_ssize_t> tk * hidden + h * depth, hidden, 0, s, tk)
            if bias != NULL:
                for r in range(tq):
                    row = bias + _bias_row(i, h, r, b0, h0, q0, tk)
                    for j in range(tk):
                        s[r * tk + j] += row[j]
            pm_softmax_fwd(floating is double, s, s, tq, tk, 1, 1.0, 0)


def attention_context(probs, value, context):
    """context[b, :, head h] := probs[b, h] @ V_bh: probs (b, heads, tq, tk), value (b, tk, H),
    context (b, tq, H)."""
    cdef int t = float_type(context, "context")
    cdef cnp.ndarray c = array(context, "context", t, True)
    cdef cnp.ndarray p = array(probs, "probs", t, False)
    cdef cnp.ndarray v = array(value, "value", t, False)
    cdef int b, tq, tk, hidden, heads, depth
    ndim(c, "context", 3, 3)
    b, tk, hidden, heads, depth = _context_sizes(p, v)
    tq = dim(p, 2)
    shape_is(c, "context", (b, tq, hidden))
    disjoint_from(c, "context", p, "probs", v, "value")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _context(f32(p), f32(v), f32(c), b, tq, tk, hidden, heads, depth)
        else:
            _context(f64(p), f64(v), f64(c), b, tq, tk, hidden, heads, depth)


cdef tuple _context_sizes(cnp.ndarray p, cnp.ndarray v):
    """(batch, tk, hidden, heads, depth) of probs (b, heads, tq, tk) and value (b, tk, H)."""
    ndim(p, "probs", 4, 4)
    ndim(v, "value", 3, 3)
    _nonempty(p, "probs")
    _nonempty(v, "value")
    cdef int b = dim(p, 0), heads = dim(p, 1), tk = dim(p, 3), hidden = dim(v, 2)
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
    shape_is(v, "value", (b, tk, hidden))
    return b, tk, hidden, heads, hidden // heads


cdef void _context(const floating *p, const floating *v, floating *c, int b, int tq, int tk,
                   int hidden, int heads, int depth) noexcept nogil:
    cdef Py_ssize_t i, h
    for i in range(b):
        for h in range(heads):
            gemm(NoTrans, NoTrans, tq, depth, tk, 1, p + (i * heads + h) * <Py_ssize_t> tq * tk,
                 tk, v + i * <Py_ssize_t> tk * hidden + h * depth, hidden, 0,
                 c + i * <Py_ssize_t> tq * hidden + h * depth, hidden)


def attention_context_backward(probs, value, grad_context, grad_probs, grad_value):
    """The gradients of attention_context: grad_probs[b, h] := G_bh @ V_bh^T and
    grad_value[b, :, head h] := probs[b, h]^T @ G_bh, G = grad_context (b, tq, H)."""
    cdef int t = float_type(grad_probs, "gradProbs")
    cdef cnp.ndarray gp = array(grad_probs, "gradProbs", t, True)
    cdef cnp.ndarray gv = array(grad_value, "gradValue", t, True)
    cdef cnp.ndarray p = array(probs, "probs", t, False)
    cdef cnp.ndarray v = array(value, "value", t, False)
    cdef cnp.ndarray gc = array(grad_context, "gradContext", t, False)
    cdef int b, tq, tk, hidden, heads, depth
    b, tk, hidden, heads, depth = _context_sizes(p, v)
    tq = dim(p, 2)
    shape_is(gc, "gradContext", (b, tq, hidden))
    shape_is(gp, "gradProbs", shape(p))
    shape_is(gv, "gradValue", shape(v))
    disjoint_from(gp, "gradProbs", p, "probs", v, "value", gc, "gradContext", gv, "gradValue")
    disjoint_from(gv, "gradValue", p, "probs", v, "value", gc, "gradContext")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _context_back(f32(p), f32(v), f32(gc), f32(gp), f32(gv), b, tq, tk, hidden, heads,
                          depth)
        else:
            _context_back(f64(p), f64(v), f64(gc), f64(gp), f64(gv), b, tq, tk, hidden, heads,
                          depth)


cdef void _context_back(const floating *p, const floating *v, const floating *gc,
                        floating *gp, floating *gv, int b, int tq, int tk, int hidden,
                        int heads, int depth) noexcept nogil:
    cdef Py_ssize_t i, h, off
    for i in range(b):
        for h in range(heads):
            off = (i * heads + h) * <Py_ssize_t> tq * tk
            gemm(NoTrans, Trans, tq, tk, depth, 1, gc + i * <Py_ssize_t> tq * hidden + h * depth,
                 hidden, v + i * <Py_ssize_t> tk * hidden + h * depth, hidden, 0, gp + off, tk)
            gemm(Trans, NoTrans, tk, depth, tq, 1, p + off, tk,
                 gc + i * <Py_ssize_t> tq * hidden + h * depth, hidden, 0,
                 gv + i * <Py_ssize_t> tk * hidden + h * depth, hidden)


def attention_scores_backward(probs, grad_probs, query, key, grad_scores, grad_query, grad_key,
                              grad_bias, double scale):
    """The gradients of attention_scores, from probs (its output) and grad_probs:
    grad_scores := the softmax backward of each row, grad_query[head h] := scale * S_bh @ K_bh,
    grad_key[head h] := scale * S_bh^T @ Q_bh, and grad_bias (the bias's shape, or None) :=
    grad_scores summed over the axes the bias is broadcast along."""
    cdef int t = float_type(grad_scores, "gradScores")
    cdef cnp.ndarray gs = array(grad_scores, "gradScores", t, True)
    cdef cnp.ndarray gq = array(grad_query, "gradQuery", t, True)
    cdef cnp.ndarray gk = array(grad_key, "gradKey", t, True)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef cnp.ndarray p = array(probs, "probs", t, False)
    cdef cnp.ndarray gp = array(grad_probs, "gradProbs", t, False)
    cdef cnp.ndarray q = array(query, "query", t, False)
    cdef cnp.ndarray k = array(key, "key", t, False)
    cdef int b, tq, tk, hidden, heads, depth, b0 = 0, h0 = 0, q0 = 0
    b, tq, tk, hidden, heads, depth = _heads(q, k, p)
    shape_is(gp, "gradProbs", shape(p))
    shape_is(gs, "gradScores", shape(p))
    shape_is(gq, "gradQuery", shape(q))
    shape_is(gk, "gradKey", shape(k))
    if gb is not None:
        b0, h0, q0 = _bias_dims(gb, b, heads, tq, tk)
    disjoint_from(gs, "gradScores", p, "probs", gp, "gradProbs", q, "query", k, "key")
    for out, what in ((gq, "gradQuery"), (gk, "gradKey"), (gb, "gradBias")):
        disjoint_from(out, what, p, "probs", gp, "gradProbs", q, "query", k, "key")
        disjoint_from(out, what, gs, "gradScores")
    disjoint_from(gq, "gradQuery", gk, "gradKey", gb, "gradBias")
    disjoint_from(gk, "gradKey", gb, "gradBias")
    if gb is not None:
        memset(cnp.PyArray_DATA(gb), 0, cnp.PyArray_NBYTES(gb))
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _scores_back(f32(p), f32(gp), f32(q), f32(k), f32(gs), f32(gq), f32(gk), f32(gb),
                         b, tq, tk, hidden, heads, depth, b0, h0, q0, scale)
        else:
            _scores_back(f64(p), f64(gp), f64(q), f64(k), f64(gs), f64(gq), f64(gk), f64(gb),
                         b, tq, tk, hidden, heads, depth, b0, h0, q0, scale)


cdef void _scores_back(const floating *p, const floating *gp, const floating *q,
                       const floating *k, floating *gs, floating *gq, floating *gk,
                       floating *gb, int b, int tq, int tk, int hidden, int heads, int depth,
                       int b0, int h0, int q0, double scale) noexcept nogil:
    cdef Py_ssize_t i, h, r, j, off
    cdef floating *row
    for i in range(b):
        for h in range(heads):
            off = (i * heads + h) * <Py_ssize_t> tq * tk
            pm_softmax_bwd(floating is double, p + off, gp + off, gs + off, tq, tk, 1, 1.0, 0)
            gemm(NoTrans, NoTrans, tq, depth, tk, <floating> scale, gs + off, tk,
                 k + i * <Py_ssize_t> tk * hidden + h * depth, hidden, 0,
                 gq + i * <Py_ssize_t> tq * hidden + h * depth, hidden)
            gemm(Trans, NoTrans, tk, depth, tq, <floating> scale, gs + off, tk,
                 q + i * <Py_ssize_t> tq * hidden + h * depth, hidden, 0,
                 gk + i * <Py_ssize_t> tk * hidden + h * depth, hidden)
            if gb != NULL:
                for r in range(tq):
                    row = gb + _bias_row(i, h, r, b0, h0, q0, tk)
                    for j in range(tk):
                        row[j] += gs[off + r * tk + j]


# -- biases -----------------------------------------------------------------------------------
def causal_bias(output):
    """output (1, 1, t, t) := 0 on and below the diagonal, -1e9 above it: step i attends to
    steps j <= i only (BigDL's attentionBiasLowerTriangle)."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(y, "output", 4, 4)
    _nonempty(y, "output")
    cdef int n = dim(y, 3)
    shape_is(y, "output", (1, 1, n, n))
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _causal(f32(y), n)
        else:
            _causal(f64(y), n)


cdef void _causal(floating *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(n):
            y[i * n + j] = 0 if j <= i else <floating> -1e9


# The indices of tokens: int32, int64, or (as BigDL) float32/float64 holding whole numbers.
ctypedef fused index_t:
    int
    long long
    float
    double


cdef int _index_kind(object obj, str what) except -1:
    """0 int32, 1 int64, 2 float32, 3 float64, of a C-contiguous (batch, time) index array."""
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{what} must be a numpy.ndarray of token indices, got "
                        f"{type(obj).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray> obj
    cdef int t = cnp.PyArray_TYPE(a), size = cnp.PyArray_ITEMSIZE(a), kind
    if cnp.PyArray_ISSIGNED(a) and cnp.PyArray_ISINTEGER(a) and size in (4, 8):
        kind = 0 if size == 4 else 1
    elif t == cnp.NPY_FLOAT32:
        kind = 2
    elif t == cnp.NPY_FLOAT64:
        kind = 3
    else:
        raise TypeError(f"{what} has dtype {a.dtype}, expected token indices as int32, int64, "
                        f"float32 or float64")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{what} is not C-contiguous (shape {shape(a)})")
    ndim(a, what, 2, 2)
    _nonempty(a, what)
    return kind


cdef inline bint _is(const void *ids, int kind, Py_ssize_t i, double v) noexcept nogil:
    """Whether index i of the array equals v."""
    if kind == 0:
        return (<const int *> ids)[i] == v
    if kind == 1:
        return (<const long long *> ids)[i] == v
    if kind == 2:
        return (<const float *> ids)[i] == v
    return (<const double *> ids)[i] == v


def padding_bias(ids, output, double padding):
    """output (b, 1, 1, t) := -1e9 where ids (b, t) equals ``padding``, else 0 (BigDL's
    getPaddingBias: keys at padding tokens get no attention)."""
    cdef int kind = _index_kind(ids, "ids")
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray x = <cnp.ndarray> ids
    shape_is(y, "output", (dim(x, 0), 1, 1, dim(x, 1)))
    disjoint_from(y, "output", x, "ids")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef const void *px = cnp.PyArray_DATA(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _padding(px, kind, f32(y), n, padding)
        else:
            _padding(px, kind, f64(y), n, padding)


cdef void _padding(const void *ids, int kind, floating *y, Py_ssize_t n,
                   double padding) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = <floating> -1e9 if _is(ids, kind, i, padding) else 0


# -- positions --------------------------------------------------------------------------------
def position_encoding(output):
    """output (t, channels) := the timing signal: sin(s * w_i) in column i and cos(s * w_i) in
    column channels / 2 + i for step s, w_i = exp(-i log(1e4) / max(channels / 2 - 1, 1));
    an odd last column is 0."""
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(y, "output", 2, 2)
    _nonempty(y, "output")
    cdef Py_ssize_t steps = dim(y, 0), channels = dim(y, 1)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _timing(f32(y), steps, channels)
        else:
            _timing(f64(y), steps, channels)


cdef void _timing(floating *y, Py_ssize_t steps, Py_ssize_t channels) noexcept nogil:
    cdef Py_ssize_t s, i, half = channels // 2
    cdef double inc = log(1.0e4) / (half - 1 if half > 1 else 1), a
    for s in range(steps):
        for i in range(half):
            a = s * exp(-i * inc)
            y[s * channels + i] = <floating> sin(a)
            y[s * channels + half + i] = <floating> cos(a)
        if channels % 2:
            y[s * channels + channels - 1] = 0


cdef int _position_args(cnp.ndarray e, str e_what, cnp.ndarray timing, int kind,
                        cnp.ndarray ids) except -1:
    ndim(e, e_what, 3, 3)
    _nonempty(e, e_what)
    shape_is(timing, "timing", (dim(e, 1), dim(e, 2)))
    shape_is(ids, "ids", (dim(e, 0), dim(e, 1)))
    return 0


def position_update_output(embedded, ids, timing, output, double scale, bint shift,
                           double padding):
    """output[b, s] := timing[s] + scale * embedded[b, s - shift], where the row of a token
    ``ids[b, s - shift]`` equal to ``padding`` counts as zero, and so does the step before the
    first when ``shift`` (the decoder's input, shifted right by one).

    embedded and output (b, t, H), ids (b, t), timing (t, H).
    """
    cdef int kind = _index_kind(ids, "ids")
    cdef int t = float_type(output, "output")
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray e = array(embedded, "embedded", t, False)
    cdef cnp.ndarray tm = array(timing, "timing", t, False)
    cdef cnp.ndarray x = <cnp.ndarray> ids
    _position_args(e, "embedded", tm, kind, x)
    shape_is(y, "output", shape(e))
    disjoint_from(y, "output", e, "embedded", tm, "timing", x, "ids")
    cdef int b = dim(e, 0), steps = dim(e, 1), h = dim(e, 2)
    cdef const void *px = cnp.PyArray_DATA(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _position(f32(e), px, kind, f32(tm), f32(y), b, steps, h, scale, shift, padding)
        else:
            _position(f64(e), px, kind, f64(tm), f64(y), b, steps, h, scale, shift, padding)


cdef void _position(const floating *e, const void *ids, int kind, const floating *tm,
                    floating *y, Py_ssize_t b, Py_ssize_t steps, Py_ssize_t h, double scale,
                    bint shift, double padding) noexcept nogil:
    cdef Py_ssize_t i, s, j, src
    cdef floating c = <floating> scale
    cdef floating *row
    cdef const floating *er
    for i in range(b):
        for s in range(steps):
            row = y + (i * steps + s) * h
            src = s - 1 if shift else s
            if src < 0 or _is(ids, kind, i * steps + src, padding):
                for j in range(h):
                    row[j] = tm[s * h + j]
            else:
                er = e + (i * steps + src) * h
                for j in range(h):
                    row[j] = tm[s * h + j] + c * er[j]


def position_update_grad_input(ids, grad_output, grad_embedded, double scale, bint shift,
                               double padding):
    """The gradient of position_update_output with respect to ``embedded``:
    grad_embedded[b, s] := scale * grad_output[b, s + shift], 0 at padding tokens and, with
    ``shift``, at the last step (it feeds no output)."""
    cdef int kind = _index_kind(ids, "ids")
    cdef int t = float_type(grad_embedded, "gradEmbedded")
    cdef cnp.ndarray gi = array(grad_embedded, "gradEmbedded", t, True)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray x = <cnp.ndarray> ids
    ndim(go, "gradOutput", 3, 3)
    _nonempty(go, "gradOutput")
    shape_is(x, "ids", (dim(go, 0), dim(go, 1)))
    shape_is(gi, "gradEmbedded", shape(go))
    disjoint_from(gi, "gradEmbedded", go, "gradOutput", x, "ids")
    cdef int b = dim(go, 0), steps = dim(go, 1), h = dim(go, 2)
    cdef const void *px = cnp.PyArray_DATA(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _position_back(px, kind, f32(go), f32(gi), b, steps, h, scale, shift, padding)
        else:
            _position_back(px, kind, f64(go), f64(gi), b, steps, h, scale, shift, padding)


cdef void _position_back(const void *ids, int kind, const floating *go, floating *gi,
                         Py_ssize_t b, Py_ssize_t steps, Py_ssize_t h, double scale, bint shift,
                         double padding) noexcept nogil:
    cdef Py_ssize_t i, s, j, dst
    cdef floating c = <floating> scale
    cdef floating *row
    cdef const floating *gr
    for i in range(b):
        for s in range(steps):
            row = gi + (i * steps + s) * h
            dst = s + 1 if shift else s
            if dst >= steps or _is(ids, kind, i * steps + s, padding):
                for j in range(h):
                    row[j] = 0
            else:
                gr = go + (i * steps + dst) * h
                for j in range(h):
                    row[j] = c * gr[j]
