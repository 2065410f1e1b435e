"""Kernels of multi-head attention: scores, masked softmax, dropout and the weighted sum of
values, per (batch, head), in one pass over blocks of queries; and the backward likewise.

Layout (torch's ``batch_first`` and BigDL's Attention alike): query (B, Tq, E), key and value
(B, Tk, E), E = heads * D; head h reads the columns h*D .. h*D + D of every row, so the heads
are strided sub-matrices (leading dimension E) that the GEMMs read in place, without a
transposed copy. For each (b, h) and each block of ``rows`` queries:

    S = scale * Q K^T (+ bias)        (rows, Tk), one GEMM into the block
    S[mask] = -inf                     mask True: the key is not attended
    P = softmax(S) along Tk            (vecmath.h's row softmax; a row masked throughout is 0)
    P' = P * keep / (1 - p)            dropout in training, keep drawn as below
    O = P' V                           (rows, D), one GEMM into the output's columns

so the only (.., Tk) temporary is one block (``scratch``; the backward's two), unless the
caller asks to keep the probabilities (``probs``, (B, H, Tq, Tk)). The backward recomputes
each block's P (one more GEMM and a softmax) or reads the kept ones, then

    dV += P'^T dO;  dP = (dO V^T) * keep / (1 - p);  dS = P * (dP - rowsum(P * dP))
    dQ = scale * dS K;  dK += scale * dS^T Q

The dropout mask needs no storage: element (b, h, i, j) of the (B, H, Tq, Tk) probabilities,
at flat index n, is kept when its 32 bits, the low (n even) or high (n odd) half of
splitmix64(seed + (n // 2) * golden), land at or above p * 2**32, so the backward draws the
same mask from the same seed. (engine/dropout.pyx draws one hash per element; two per hash
halve the cost of the masks, about 3 ns an element here.)

Masks and biases broadcast: ``mask`` is a bool (B or 1, Tq or 1, Tk) array (torch's attn_mask
is (1, Tq, Tk), its key_padding_mask (B, 1, Tk)); ``bias``, of the data's dtype and the same
shapes, is added to the scaled scores (BigDL's Attention adds its attention bias so; it gets no
gradient). Either may be None.

Blocks: ``block`` query rows at a time (0: ``attention_block_rows``'s choice, measured with
bench/bench_attention.py --grid: blocks of 1 MiB of scores, a whole head up to 512 x 512 in
float32). Keeping the probabilities instead of recomputing them saved 3-12% of the kernels'
time there; the modules recompute, holding one block pair per call.
"""

cimport numpy as cnp
from libc.math cimport INFINITY, erf, erff, exp, expf
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, gemv, NoTrans, Trans
from engine._check cimport (
    shape, float_type, array, array_or_none, f32, f64, ndim, dim, shape_is, disjoint,
    disjoint_from,
)
from engine._inplace cimport same_or_disjoint
from engine.vecmath cimport pm_softmax_fwd, pm_softmax_bwd

cnp.import_array()

cdef enum:
    # Bytes of one block of scores that the automatic choice aims at (attention_block_rows).
    BLOCK_BYTES = 1 << 20
    BLOCK_MIN_ROWS = 64


# The masks' counter step (2**64 / the golden ratio, as engine/dropout.pyx steps).
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """The splitmix64 finaliser (engine/dropout.pyx's too)."""
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EBULL
    return z ^ (z >> 31)


def attention_block_rows(Py_ssize_t time_q, Py_ssize_t time_k, Py_ssize_t itemsize):
    """Query rows per block when ``block`` is 0: as many as keep a block of scores near
    1 MiB, at least 64, at most time_q (a whole head when it fits).

    bench/bench_attention.py --grid, 1 thread, float32, OpenBLAS 0.3.30 Haswell kernels (AMD
    EPYC), embed 256, 4 heads, dropout 0.1, forward+backward in CPU ms, by rows per block:
                      16     64    256  whole  whole, probabilities kept
      batch 8 x 64   7.1    5.5    5.6    5.6   4.9
      32 x 256       439    314    289    290   279
      4 x 1024       786    561    487    539   671 (16 rows)
    Small blocks lose: the backward's dK and dV GEMMs then sum over few rows. Past a whole
    head of 256 x 256, 256-row blocks (1 MiB) beat the whole 4 MiB head. Keeping the
    probabilities saves 3-12% at these sizes, for a (batch, heads, time, time) array: the
    modules recompute them."""
    if time_q <= 0:
        return 0
    cdef Py_ssize_t rows = BLOCK_BYTES // max(time_k * itemsize, 1)
    rows = max(rows, BLOCK_MIN_ROWS)
    return min(rows, time_q)


cdef Py_ssize_t _rows_of(Py_ssize_t block, Py_ssize_t tq, Py_ssize_t tk, int t):
    if block > 0:
        return min(block, tq)
    return attention_block_rows(tq, tk, 4 if t == cnp.NPY_FLOAT32 else 8)


def attention_scratch_size(query, key, Py_ssize_t block=0, bint backward=True):
    """Elements of the ``scratch`` that attention_update_grad_input (``backward``: two blocks
    of rows x time_k) or attention_update_output alone (one block) needs for these arguments.
    Arguments it cannot judge give 0; the kernels then say what is wrong."""
    if not (cnp.PyArray_Check(query) and cnp.PyArray_Check(key)):
        return 0
    cdef cnp.ndarray q = <cnp.ndarray> query, k = <cnp.ndarray> key
    if cnp.PyArray_NDIM(q) != 3 or cnp.PyArray_NDIM(k) != 3 or block < 0:
        return 0
    cdef int t = cnp.PyArray_TYPE(q)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        return 0
    cdef Py_ssize_t tq = cnp.PyArray_DIMS(q)[1], tk = cnp.PyArray_DIMS(k)[1]
    return (2 if backward else 1) * _rows_of(block, tq, tk, t) * tk


cdef struct Geometry:
    # The checked sizes of a call and the broadcast strides of mask and bias (elements).
    Py_ssize_t b, tq, tk, rows
    int e, heads, d
    Py_ssize_t msb, msq, bsb, bsq


cdef cnp.ndarray _broadcast(object obj, str what, int t, Geometry *g, Py_ssize_t *sb,
                            Py_ssize_t *sq):
    """A mask (t = NPY_BOOL) or bias of shape (B or 1, Tq or 1, Tk), and its strides."""
    if obj is None:
        return None
    cdef cnp.ndarray a = array(obj, what, t, False)
    ndim(a, what, 3, 3)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    if (d[0] != 1 and d[0] != g.b) or (d[1] != 1 and d[1] != g.tq) or d[2] != g.tk:
        raise ValueError(f"{what} has shape {shape(a)}, expected (batch or 1, time_q or 1, "
                         f"time_k) = ({g.b} or 1, {g.tq} or 1, {g.tk})")
    sq[0] = g.tk if d[1] == g.tq and g.tq != 1 else 0
    sb[0] = d[1] * g.tk if d[0] == g.b and g.b != 1 else 0
    return a


cdef tuple _inputs(object query, object key, object value, object mask, object bias,
                   int num_heads, Py_ssize_t block, int t, Geometry *g):
    """(query, key, value, mask, bias), checked, and the geometry of the call."""
    cdef cnp.ndarray q = array(query, "query", t, False)
    cdef cnp.ndarray k = array(key, "key", t, False)
    cdef cnp.ndarray v = array(value, "value", t, False)
    ndim(q, "query", 3, 3)
    ndim(k, "key", 3, 3)
    ndim(v, "value", 3, 3)
    if num_heads <= 0:
        raise ValueError(f"num_heads must be > 0, got {num_heads}")
    if block < 0:
        raise ValueError(f"block must be >= 0 (0: automatic), got {block}")
    g.b, g.tq, g.e = dim(q, 0), dim(q, 1), dim(q, 2)
    g.tk = dim(k, 1)
    if g.e % num_heads != 0:
        raise ValueError(f"embedding size {g.e} is not divisible by num_heads {num_heads}")
    g.heads, g.d = num_heads, g.e // num_heads
    if dim(k, 0) != g.b or dim(k, 2) != g.e:
        raise ValueError(f"key has shape {shape(k)}, expected ({g.b}, time_k, {g.e}) as the "
                         f"query {shape(q)}")
    shape_is(v, "value", shape(k))
    cdef cnp.ndarray m = _broadcast(mask, "mask", cnp.NPY_BOOL, g, &g.msb, &g.msq)
    cdef cnp.ndarray bi = _broadcast(bias, "bias", t, g, &g.bsb, &g.bsq)
    g.rows = _rows_of(block, g.tq, g.tk, t)
    return q, k, v, m, bi


cdef cnp.ndarray _probs(object probs, int t, bint writeable, Geometry *g):
    if probs is None:
        return None
    cdef cnp.ndarray pr = array(probs, "probs", t, writeable)
    shape_is(pr, "probs", (g.b, g.heads, g.tq, g.tk))
    return pr


cdef cnp.ndarray _scratch(object scratch, int t, Geometry *g, int blocks):
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    ndim(s, "scratch", 1, 1)
    if cnp.PyArray_DIMS(s)[0] < blocks * g.rows * g.tk:
        raise ValueError(f"scratch has {cnp.PyArray_DIMS(s)[0]} elements, expected at least "
                         f"{blocks * g.rows * g.tk} (attention_scratch_size)")
    return s


cdef int _scalars(double p, double scale) except -1:
    if not 0 <= p < 1:
        raise ValueError(f"the drop probability must lie in [0, 1), got {p}")
    if scale != scale:
        raise ValueError("scale is NaN")
    return 0


def attention_update_output(query, key, value, mask, bias, output, probs, scratch,
                            int num_heads, double scale, double p, bint train, uint64_t seed,
                            Py_ssize_t block=0):
    """output := softmax(scale * Q K^T + bias, masked) (dropped out) V, head by head:
    (B, Tq, E), (B, Tk, E), (B, Tk, E) -> (B, Tq, E).

    mask: None or bool (B|1, Tq|1, Tk), True = not attended; bias: None or (B|1, Tq|1, Tk)
    of the data's dtype, added to the scaled scores. probs: None, or (B, H, Tq, Tk) to keep the
    probabilities (before dropout) for the backward. scratch: 1-D, at least
    attention_scratch_size(query, key, block, False) elements (one block). Dropout with
    probability p when ``train`` (p > 0), its mask drawn from ``seed`` (pass the same seed to
    the backward).
    A query whose keys are all masked (every score -inf) attends to nothing: zeros, as torch
    gives; time_k 0 likewise.
    """
    cdef int t = float_type(query, "query")
    cdef Geometry g
    cdef cnp.ndarray q, k, v, m, bi
    q, k, v, m, bi = _inputs(query, key, value, mask, bias, num_heads, block, t, &g)
    cdef cnp.ndarray y = array(output, "output", t, True)
    shape_is(y, "output", shape(q))
    cdef cnp.ndarray pr = _probs(probs, t, True, &g)
    cdef cnp.ndarray s = _scratch(scratch, t, &g, 1)
    _scalars(p, scale)
    disjoint_from(y, "output", q, "query", k, "key", v, "value", m, "mask", bi, "bias")
    disjoint_from(y, "output", pr, "probs", s, "scratch")
    disjoint_from(pr, "probs", q, "query", k, "key", v, "value", m, "mask", bi, "bias")
    disjoint_from(s, "scratch", q, "query", k, "key", v, "value", m, "mask", bi, "bias")
    disjoint(s, "scratch", pr, "probs")
    cdef bint drop = train and p > 0
    cdef const unsigned char *mp = NULL if m is None else \
        <const unsigned char *> cnp.PyArray_DATA(m)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _forward(f32(q), f32(k), f32(v), mp, f32(bi), f32(y), f32(pr), f32(s), &g,
                     <float> scale, p, drop, seed)
        else:
            _forward(f64(q), f64(k), f64(v), mp, f64(bi), f64(y), f64(pr), f64(s), &g,
                     scale, p, drop, seed)


cdef inline uint64_t _cut(double p) noexcept nogil:
    """Dropped when the 32 bits drawn for an element fall below p * 2**32."""
    return <uint64_t> (p * 4294967296.0)


cdef void _scores(const floating *q, const floating *k, const unsigned char *m,
                  const floating *bi, floating *s, const Geometry *g, Py_ssize_t b,
                  Py_ssize_t i0, Py_ssize_t r, floating scale) noexcept nogil:
    """s := the masked softmax of the scores of query rows i0 .. i0 + r of one head, (r, Tk);
    q and k point at that head's first row and column."""
    cdef Py_ssize_t tk = g.tk, i, j
    cdef floating *row
    cdef const unsigned char *mr
    cdef const floating *br
    if r == 1:
        gemv(NoTrans, <int> tk, g.d, scale, k, g.e, q + i0 * g.e, 1, <floating> 0, s, 1)
    else:
        gemm(NoTrans, Trans, <int> r, <int> tk, g.d, scale, q + i0 * g.e, g.e, k, g.e,
             <floating> 0, s, <int> tk)
    if bi != NULL:
        for i in range(r):
            row = s + i * tk
            br = bi + b * g.bsb + (i0 + i) * g.bsq
            for j in range(tk):
                row[j] += br[j]
    if m != NULL:
        for i in range(r):
            row = s + i * tk
            mr = m + b * g.msb + (i0 + i) * g.msq
            for j in range(tk):
                row[j] = -INFINITY if mr[j] else row[j]
    # Softmax over runs of rows; a row masked throughout (every score -inf) gets zeros, as
    # torch's attention gives it, instead of the NaN of 0 / 0.
    i = 0
    while i < r:
        if _hidden(s + i * tk, tk):
            memset(s + i * tk, 0, tk * sizeof(floating))
            i += 1
            continue
        j = i + 1
        while j < r and not _hidden(s + j * tk, tk):
            j += 1
        pm_softmax_fwd(floating is double, s + i * tk, s + i * tk, j - i, tk, 1, 1.0, False)
        i = j


cdef inline bint _hidden(const floating *row, Py_ssize_t n) noexcept nogil:
    """Whether every value of the row is -inf (usually told by its first one)."""
    cdef Py_ssize_t j
    for j in range(n):
        if row[j] != -INFINITY:
            return False
    return True


cdef void _drop(const floating *src, floating *dst, const floating *add, Py_ssize_t n,
                uint64_t first, floating keep, uint64_t cut, uint64_t seed) noexcept nogil:
    """dst := add + src * keep where element first + i of the mask is kept, add + 0 where it
    is dropped (add NULL: none). Elements 2j and 2j + 1 take the low and high 32 bits of
    splitmix64(seed + j * golden)."""
    cdef Py_ssize_t i = 0
    cdef uint64_t z, at = seed + (first >> 1) * <uint64_t> GOLDEN
    if n <= 0:
        return
    if first & 1:
        z = _mix(at)
        at += <uint64_t> GOLDEN
        dst[0] = _kept(src[0], keep, z >> 32, cut, add, 0)
        i = 1
    while i + 1 < n:
        z = _mix(at)
        at += <uint64_t> GOLDEN
        dst[i] = _kept(src[i], keep, z & 0xFFFFFFFFULL, cut, add, i)
        dst[i + 1] = _kept(src[i + 1], keep, z >> 32, cut, add, i + 1)
        i += 2
    if i < n:
        dst[i] = _kept(src[i], keep, _mix(at) & 0xFFFFFFFFULL, cut, add, i)


cdef inline floating _kept(floating v, floating keep, uint64_t bits, uint64_t cut,
                           const floating *add, Py_ssize_t i) noexcept nogil:
    cdef floating d = v * keep if bits >= cut else 0
    return d if add == NULL else add[i] + d


cdef void _forward(const floating *q, const floating *k, const floating *v,
                   const unsigned char *m, const floating *bi, floating *y, floating *pr,
                   floating *s, const Geometry *g, floating scale, double p, bint drop,
                   uint64_t seed) noexcept nogil:
    cdef Py_ssize_t b, i0, r, tq = g.tq, tk = g.tk, rows = g.rows
    cdef int h, e = g.e, d = g.d
    cdef const floating *qh
    cdef const floating *kh
    cdef const floating *vh
    cdef floating *yh
    cdef floating *sb
    cdef floating *pb
    cdef floating keep = <floating> (1 / (1 - p))
    cdef uint64_t cut = _cut(p)
    if g.b == 0 or tq == 0 or e == 0:
        return
    if tk == 0:
        memset(y, 0, g.b * tq * e * sizeof(floating))
        return
    for b in range(g.b):
        for h in range(g.heads):
            qh = q + b * tq * e + h * d
            kh = k + b * tk * e + h * d
            vh = v + b * tk * e + h * d
            yh = y + b * tq * e + h * d
            i0 = 0
            while i0 < tq:
                r = min(rows, tq - i0)
                sb = s if pr == NULL else pr + ((b * g.heads + h) * tq + i0) * tk
                _scores(qh, kh, m, bi, sb, g, b, i0, r, scale)
                pb = sb
                if drop:  # in place, unless the probabilities before it are kept
                    pb = sb if pr == NULL else s
                    _drop(sb, pb, NULL, r * tk, <uint64_t> ((b * g.heads + h) * tq + i0) * tk,
                          keep, cut, seed)
                if r == 1:
                    gemv(Trans, <int> tk, d, <floating> 1, vh, e, pb, 1, <floating> 0,
                         yh + i0 * e, 1)
                else:
                    gemm(NoTrans, NoTrans, <int> r, d, <int> tk, <floating> 1, pb, <int> tk,
                         vh, e, <floating> 0, yh + i0 * e, e)
                i0 += rows


def attention_update_grad_input(query, key, value, mask, bias, grad_output, grad_query,
                                grad_key, grad_value, probs, scratch, int num_heads,
                                double scale, double p, bint train, uint64_t seed,
                                Py_ssize_t block=0):
    """grad_query, grad_key, grad_value := the gradients of attention_update_output's output
    at grad_output (B, Tq, E), for the same arguments (the same seed: the same dropout mask).

    probs: the forward's kept probabilities, or None to recompute each block's. bias gets
    no gradient. The three gradients are written, not accumulated.
    """
    cdef int t = float_type(query, "query")
    cdef Geometry g
    cdef cnp.ndarray q, k, v, m, bi
    q, k, v, m, bi = _inputs(query, key, value, mask, bias, num_heads, block, t, &g)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    shape_is(go, "gradOutput", shape(q))
    cdef cnp.ndarray gq = array(grad_query, "gradQuery", t, True)
    cdef cnp.ndarray gk = array(grad_key, "gradKey", t, True)
    cdef cnp.ndarray gv = array(grad_value, "gradValue", t, True)
    shape_is(gq, "gradQuery", shape(q))
    shape_is(gk, "gradKey", shape(k))
    shape_is(gv, "gradValue", shape(k))
    cdef cnp.ndarray pr = _probs(probs, t, False, &g)
    cdef cnp.ndarray s = _scratch(scratch, t, &g, 2)
    _scalars(p, scale)
    cdef cnp.ndarray out
    cdef str what
    for out, what in ((gq, "gradQuery"), (gk, "gradKey"), (gv, "gradValue"),
                      (s, "scratch")):
        disjoint_from(out, what, q, "query", k, "key", v, "value", m, "mask", bi, "bias")
        disjoint_from(out, what, go, "gradOutput", pr, "probs")
    disjoint_from(gq, "gradQuery", gk, "gradKey", gv, "gradValue", s, "scratch")
    disjoint_from(gk, "gradKey", gv, "gradValue", s, "scratch")
    disjoint(gv, "gradValue", s, "scratch")
    cdef bint drop = train and p > 0
    cdef const unsigned char *mp = NULL if m is None else \
        <const unsigned char *> cnp.PyArray_DATA(m)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _backward(f32(q), f32(k), f32(v), mp, f32(bi), f32(go), f32(gq), f32(gk), f32(gv),
                      f32(pr), f32(s), &g, <float> scale, p, drop, seed)
        else:
            _backward(f64(q), f64(k), f64(v), mp, f64(bi), f64(go), f64(gq), f64(gk),
                      f64(gv), f64(pr), f64(s), &g, scale, p, drop, seed)


cdef void _backward(const floating *q, const floating *k, const floating *v,
                    const unsigned char *m, const floating *bi, const floating *go,
                    floating *gq, floating *gk, floating *gv, const floating *pr, floating *s,
                    const Geometry *g, floating scale, double p, bint drop,
                    uint64_t seed) noexcept nogil:
    cdef Py_ssize_t b, i0, r, tq = g.tq, tk = g.tk, rows = g.rows
    cdef int h, e = g.e, d = g.d
    cdef const floating *qh
    cdef const floating *kh
    cdef const floating *vh
    cdef const floating *goh
    cdef floating *gqh
    cdef floating *gkh
    cdef floating *gvh
    cdef const floating *pb
    cdef const floating *pd
    cdef floating *gb = s + rows * tk
    cdef floating keep = <floating> (1 / (1 - p))
    cdef floating beta
    cdef uint64_t cut = _cut(p), first
    if g.b == 0 or e == 0:
        return
    if tq == 0 or tk == 0:
        # no query attends (dK = dV = 0) or nothing is attended (the output is constant)
        memset(gq, 0, g.b * tq * e * sizeof(floating))
        memset(gk, 0, g.b * tk * e * sizeof(floating))
        memset(gv, 0, g.b * tk * e * sizeof(floating))
        return
    for b in range(g.b):
        for h in range(g.heads):
            qh = q + b * tq * e + h * d
            kh = k + b * tk * e + h * d
            vh = v + b * tk * e + h * d
            goh = go + b * tq * e + h * d
            gqh = gq + b * tq * e + h * d
            gkh = gk + b * tk * e + h * d
            gvh = gv + b * tk * e + h * d
            i0 = 0
            while i0 < tq:
                r = min(rows, tq - i0)
                beta = 0 if i0 == 0 else 1
                first = <uint64_t> ((b * g.heads + h) * tq + i0) * tk
                if pr != NULL:
                    pb = pr + first
                else:
                    _scores(qh, kh, m, bi, s, g, b, i0, r, scale)
                    pb = s
                # dV += P'^T dO, with P' the dropped-out probabilities
                pd = pb
                if drop:
                    _drop(pb, gb, NULL, r * tk, first, keep, cut, seed)
                    pd = gb
                gemm(Trans, NoTrans, <int> tk, d, <int> r, <floating> 1, pd, <int> tk,
                     goh + i0 * e, e, beta, gvh, e)
                # dP = dO V^T (through the dropout), then dS = P * (dP - rowsum(P * dP))
                gemm(NoTrans, Trans, <int> r, <int> tk, d, <floating> 1, goh + i0 * e, e, vh, e,
                     <floating> 0, gb, <int> tk)
                if drop:
                    _drop(gb, gb, NULL, r * tk, first, keep, cut, seed)
                pm_softmax_bwd(floating is double, pb, gb, gb, r, tk, 1, 1.0, False)
                # dQ = scale dS K; dK += scale dS^T Q
                gemm(NoTrans, NoTrans, <int> r, d, <int> tk, scale, gb, <int> tk, kh, e,
                     <floating> 0, gqh + i0 * e, e)
                gemm(Trans, NoTrans, <int> tk, d, <int> r, scale, gb, <int> tk, qh + i0 * e, e,
                     beta, gkh, e)
                i0 += rows


cdef inline cnp.ndarray _like(object obj, str what, int t, bint writeable, cnp.ndarray like):
    """``obj`` checked as an array of type t shaped like ``like``."""
    cdef cnp.ndarray a = array(obj, what, t, writeable)
    shape_is(a, what, shape(like))
    return a


# -- the gradient of projections that share an input, and of skip connections ------------

def stacked_linear_grad_input(grad_outputs, grad_input, weight, residual=None):
    """grad_input := residual + sum_i grad_outputs[i] @ W_i, W_i the i-th of len(grad_outputs)
    equal row blocks of weight (m * parts, k): the gradient of an input x projected by each
    block (torch's packed in_proj_weight [Wq; Wk; Wv] of a self-attention: three parts).
    grad_outputs: a list of (..., m) arrays alike; grad_input (..., k) with the same leading
    axes; residual None or alike (a skip connection's gradient, added in the same pass; it
    may be grad_input itself)."""
    if not isinstance(grad_outputs, (list, tuple)) or not grad_outputs:
        raise TypeError(f"grad_outputs must be a non-empty list of arrays, got "
                        f"{type(grad_outputs).__name__}")
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    ndim(w, "weight", 2, 2)
    cdef int parts = len(grad_outputs), i
    cdef int k = dim(w, 1)
    if dim(w, 0) % parts != 0:
        raise ValueError(f"weight has {dim(w, 0)} rows, not {parts} equal blocks")
    cdef int m = dim(w, 0) // parts
    cdef cnp.ndarray first = array(grad_outputs[0], "gradOutput 0", t, False)
    cdef int d = ndim(first, "gradOutput 0", 1, 32)
    cdef tuple lead = shape(first)[:d - 1]
    if shape(first)[d - 1] != m:
        raise ValueError(f"gradOutput 0 has shape {shape(first)}, expected (..., {m})")
    cdef list gos = [first]
    for i in range(1, parts):
        gos.append(array(grad_outputs[i], f"gradOutput {i}", t, False))
        shape_is(gos[i], f"gradOutput {i}", shape(first))
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    shape_is(gi, "gradInput", lead + (k,))
    cdef cnp.ndarray res = array_or_none(residual, "residual", t, False)
    if res is not None:
        shape_is(res, "residual", lead + (k,))
        same_or_disjoint(gi, "gradInput", res, "residual")
    disjoint(gi, "gradInput", w, "weight")
    for i in range(parts):
        disjoint(gi, "gradInput", gos[i], f"gradOutput {i}")
    cdef Py_ssize_t n = 1
    for i in range(d - 1):
        n *= cnp.PyArray_DIMS(first)[i]
    if n > 2147483647:
        raise ValueError(f"gradOutput 0 has {n} rows, beyond the BLAS limit 2147483647")
    cdef Py_ssize_t size = n * k
    if size == 0:
        return
    cdef bint copy = res is not None and res is not gi, acc = res is not None
    cdef cnp.ndarray go
    for i in range(parts):
        go = <cnp.ndarray> gos[i]
        with nogil:
            if t == cnp.NPY_FLOAT32:
                if copy:
                    _copy(f32(res), f32(gi), size)
                _project_back(f32(go), f32(gi), f32(w) + <Py_ssize_t> i * m * k, <int> n, m, k,
                              acc)
            else:
                if copy:
                    _copy(f64(res), f64(gi), size)
                _project_back(f64(go), f64(gi), f64(w) + <Py_ssize_t> i * m * k, <int> n, m, k,
                              acc)
        copy, acc = False, True


cdef void _copy(const floating *src, floating *dst, Py_ssize_t n) noexcept nogil:
    memcpy(dst, src, n * sizeof(floating))


cdef void _project_back(const floating *go, floating *gi, const floating *w, int n, int m,
                        int k, bint acc) noexcept nogil:
    """gi (+)= go @ w: (n, m) x (m, k)."""
    if m == 0:
        if not acc:
            memset(gi, 0, <Py_ssize_t> n * k * sizeof(floating))
        return
    gemm(NoTrans, NoTrans, n, k, m, <floating> 1, go, m, w, k,
         <floating> 1 if acc else <floating> 0, gi, k)


def residual_dropout_update_output(input, branch, output, double p, bint train, uint64_t seed):
    """output := input + dropout(branch): a skip connection around a branch whose output is
    dropped out (training, p > 0: each element kept with probability 1 - p and scaled by
    1 / (1 - p), the mask drawn from ``seed`` as the attention's, from flat index 0; otherwise
    output := input + branch). No mask is stored: the backward draws it again from the seed.
    ``output`` may be ``input``."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray br = _like(branch, "branch", t, False, x)
    cdef cnp.ndarray y = _like(output, "output", t, True, x)
    same_or_disjoint(y, "output", x, "input")
    disjoint(y, "output", br, "branch")
    if not 0 <= p < 1:
        raise ValueError(f"the drop probability must lie in [0, 1), got {p}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef bint drop = train and p > 0
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _residual(f32(x), f32(br), f32(y), n, drop, <float> (1 / (1 - p)), _cut(p), seed)
        else:
            _residual(f64(x), f64(br), f64(y), n, drop, 1 / (1 - p), _cut(p), seed)


cdef void _residual(const floating *x, const floating *br, floating *y, Py_ssize_t n, bint drop,
                    floating keep, uint64_t cut, uint64_t seed) noexcept nogil:
    cdef Py_ssize_t i
    if drop:
        _drop(br, y, x, n, 0, keep, cut, seed)
        return
    for i in range(n):
        y[i] = x[i] + br[i]


def residual_dropout_update_grad_input(grad_output, grad_branch, double p, bint train,
                                       uint64_t seed):
    """grad_branch := the gradient of residual_dropout_update_output's output at grad_output
    with respect to its branch (the same seed: the same mask). The input's gradient is
    grad_output itself. ``grad_branch`` may be ``grad_output``."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gb = _like(grad_branch, "gradBranch", t, True, go)
    same_or_disjoint(gb, "gradBranch", go, "gradOutput")
    if not 0 <= p < 1:
        raise ValueError(f"the drop probability must lie in [0, 1), got {p}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(go)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            if train and p > 0:
                _drop(f32(go), f32(gb), NULL, n, 0, <float> (1 / (1 - p)), _cut(p), seed)
            elif f32(gb) != f32(go):
                _copy(f32(go), f32(gb), n)
        else:
            if train and p > 0:
                _drop(f64(go), f64(gb), NULL, n, 0, 1 / (1 - p), _cut(p), seed)
            elif f64(gb) != f64(go):
                _copy(f64(go), f64(gb), n)


# -- GELU (the exact one: torch's default) -----------------------------------------------------

def gelu_update_output(input, output):
    """output := 0.5 * x * (1 + erf(x / sqrt(2))), any shape; ``output`` may be ``input``."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = _like(output, "output", t, True, x)
    same_or_disjoint(y, "output", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gelu(f32(x), f32(y), n)
        else:
            _gelu(f64(x), f64(y), n)


cdef void _gelu(const floating *x, floating *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        if floating is float:
            y[i] = 0.5 * v * (1 + erff(v * <float> 0.7071067811865476))
        else:
            y[i] = 0.5 * v * (1 + erf(v * 0.7071067811865476))


def gelu_update_grad_input(input, grad_output, grad_input):
    """grad_input := grad_output * (Phi(x) + x * phi(x)), Phi and phi the standard normal's
    distribution and density; ``grad_input`` may be ``grad_output``."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = _like(grad_output, "gradOutput", t, False, x)
    cdef cnp.ndarray gi = _like(grad_input, "gradInput", t, True, x)
    same_or_disjoint(gi, "gradInput", go, "gradOutput")
    disjoint(gi, "gradInput", x, "input")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gelu_grad(f32(x), f32(go), f32(gi), n)
        else:
            _gelu_grad(f64(x), f64(go), f64(gi), n)


cdef void _gelu_grad(const floating *x, const floating *go, floating *gi,
                     Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        if floating is float:
            gi[i] = go[i] * (0.5 * (1 + erff(v * <float> 0.7071067811865476))
                             + v * expf(-0.5 * v * v) * <float> 0.3989422804014327)
        else:
            gi[i] = go[i] * (0.5 * (1 + erf(v * 0.7071067811865476))
                             + v * exp(-0.5 * v * v) * 0.3989422804014327)
