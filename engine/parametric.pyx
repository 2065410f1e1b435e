"""Kernels of Cosine, Maxout, Highway and Bilinear.

Their affine parts that are a Linear's run on engine/linear.pyx (the module calls those
kernels); these are the rest: the normalised products of Cosine, the selection of Maxout's
pieces, the gates of Highway and the bilinear forms, GEMMs on the BLAS wrapper.

Shapes: an input is a vector (k,) or a batch (n, k); row r of a batch is x[r].
"""

cimport numpy as cnp
from libc.math cimport sqrt
from libc.string cimport memset

from engine.blas cimport floating, gemm, gemv, NoTrans, Trans
from engine._check cimport (
    shape, float_type, array, array_or_none, f32, f64, ndim, dim, vector_of, shape_is,
    disjoint_from,
)
from engine.vecmath cimport pm_sigmoid_fwd

cnp.import_array()

cdef double COSINE_EPS = 1e-12  # added to every norm of Cosine


cdef int _rows(cnp.ndarray x, str what, Py_ssize_t k) except -1:
    """Rows of a (k,) or (n, k) argument."""
    cdef int d = ndim(x, what, 1, 2)
    if cnp.PyArray_DIMS(x)[d - 1] != k:
        raise ValueError(f"{what} has {cnp.PyArray_DIMS(x)[d - 1]} features, expected {k}")
    return 1 if d == 1 else dim(x, 0)


cdef int _like_rows(cnp.ndarray a, str what, cnp.ndarray x, Py_ssize_t n, Py_ssize_t m) except -1:
    """``a`` is (m,) when x is a vector, (n, m) when x is a batch."""
    shape_is(a, what, <tuple> (m,) if cnp.PyArray_NDIM(x) == 1 else <tuple> (n, m))
    return 0


cdef void _xwt(const floating *x, const floating *w, floating *y, int n, int k, int m,
               floating beta) noexcept nogil:
    """y := x @ w.T + beta * y, (n, k) x (m, k) -> (n, m)."""
    if n == 0 or m == 0:
        return
    if k == 0:
        if beta == 0:
            memset(y, 0, <size_t> n * m * sizeof(floating))
        return
    if n == 1:
        gemv(NoTrans, m, k, <floating> 1, w, k, x, 1, beta, y, 1)
    else:
        gemm(NoTrans, Trans, n, m, k, <floating> 1, x, k, w, k, beta, y, m)


cdef void _gw(const floating *g, const floating *w, floating *y, int n, int k, int m,
              floating beta) noexcept nogil:
    """y := g @ w + beta * y, (n, m) x (m, k) -> (n, k)."""
    if n == 0 or k == 0:
        return
    if m == 0:
        if beta == 0:
            memset(y, 0, <size_t> n * k * sizeof(floating))
        return
    if n == 1:
        gemv(Trans, m, k, <floating> 1, w, k, g, 1, beta, y, 1)
    else:
        gemm(NoTrans, NoTrans, n, k, m, <floating> 1, g, m, w, k, beta, y, k)


# -- Cosine -----------------------------------------------------------------------------
cdef int _cosine_args(cnp.ndarray x, cnp.ndarray w, cnp.ndarray y, str y_what, cnp.ndarray wn,
                      cnp.ndarray xn, int *n, int *k, int *m) except -1:
    ndim(w, "weight", 2, 2)
    m[0] = dim(w, 0)
    k[0] = dim(w, 1)
    n[0] = _rows(x, "input", k[0])
    _like_rows(y, y_what, x, n[0], m[0])
    vector_of(wn, "weightNorm", m[0])
    vector_of(xn, "inputNorm", n[0])
    return 0


def cosine_update_output(input, output, weight, weight_norm, input_norm):
    """output[r, j] := x[r] . w[j] / ((|w[j]| + 1e-12) (|x[r]| + 1e-12)); the two norms (with
    their 1e-12) are kept in weight_norm (m,) and input_norm (n,) for the backward."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray wn = array(weight_norm, "weightNorm", t, True)
    cdef cnp.ndarray xn = array(input_norm, "inputNorm", t, True)
    cdef int n, k, m
    _cosine_args(x, w, y, "output", wn, xn, &n, &k, &m)
    disjoint_from(y, "output", x, "input", w, "weight", wn, "weightNorm", xn, "inputNorm")
    disjoint_from(wn, "weightNorm", x, "input", w, "weight", xn, "inputNorm")
    disjoint_from(xn, "inputNorm", x, "input", w, "weight")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine_fwd(f32(x), f32(w), f32(y), f32(wn), f32(xn), n, k, m)
        else:
            _cosine_fwd(f64(x), f64(w), f64(y), f64(wn), f64(xn), n, k, m)


cdef void _norms(const floating *a, floating *out, Py_ssize_t rows, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double s
    for r in range(rows):
        s = 0
        for i in range(k):
            s += <double> a[r * k + i] * a[r * k + i]
        out[r] = <floating> (sqrt(s) + COSINE_EPS)


cdef void _cosine_fwd(const floating *x, const floating *w, floating *y, floating *wn,
                      floating *xn, int n, int k, int m) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef floating c
    _norms(w, wn, m, k)
    _norms(x, xn, n, k)
    _xwt(x, w, y, n, k, m, 0)
    for r in range(n):
        c = 1 / xn[r]
        for j in range(m):
            y[r * m + j] = y[r * m + j] * c / wn[j]


def cosine_update_grad_input(input, output, grad_output, grad_input, weight, weight_norm,
                             input_norm, scratch):
    """grad_input[r] := ((grad_output[r] / weight_norm) @ weight - x[r] s[r] / xn[r]) / xn[r],
    s[r] = grad_output[r] . output[r], xn = input_norm (the forward's); scratch is (n, m)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray wn = array(weight_norm, "weightNorm", t, False)
    cdef cnp.ndarray xn = array(input_norm, "inputNorm", t, False)
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    cdef int n, k, m
    _cosine_args(x, w, y, "output", wn, xn, &n, &k, &m)
    _like_rows(go, "gradOutput", x, n, m)
    shape_is(gi, "gradInput", shape(x))
    shape_is(s, "scratch", (n, m))
    disjoint_from(gi, "gradInput", w, "weight", y, "output", go, "gradOutput", s, "scratch")
    disjoint_from(s, "scratch", w, "weight", x, "input", y, "output", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine_bwd(f32(x), f32(y), f32(go), f32(gi), f32(w), f32(wn), f32(xn), f32(s),
                        n, k, m)
        else:
            _cosine_bwd(f64(x), f64(y), f64(go), f64(gi), f64(w), f64(wn), f64(xn), f64(s),
                        n, k, m)


cdef void _cosine_bwd(const floating *x, const floating *y, const floating *go, floating *gi,
                      const floating *w, const floating *wn, const floating *xn, floating *s,
                      int n, int k, int m) noexcept nogil:
    cdef Py_ssize_t r, i, j
    cdef double dot
    cdef floating c, inv
    for r in range(n):
        for j in range(m):
            s[r * m + j] = go[r * m + j] / wn[j]
    _gw(s, w, gi, n, k, m, 0)
    for r in range(n):
        dot = 0
        for j in range(m):
            dot += <double> go[r * m + j] * y[r * m + j]
        inv = 1 / xn[r]
        c = <floating> dot * inv
        for i in range(k):
            gi[r * k + i] = (gi[r * k + i] - x[r * k + i] * c) * inv


def cosine_acc_grad_parameters(input, output, grad_output, grad_weight, weight, weight_norm,
                               input_norm, scratch, input_scratch, double scale):
    """grad_weight[j] += scale * (sum_r g[r, j] x[r] / xn[r] - w[j] u[j] / wn[j]),
    g = grad_output / wn, u[j] = sum_r grad_output[r, j] output[r, j] / wn[j];
    scratch (n, m) and input_scratch (n, k) are work space. A scale of 0 skips it."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray wn = array(weight_norm, "weightNorm", t, False)
    cdef cnp.ndarray xn = array(input_norm, "inputNorm", t, False)
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    cdef cnp.ndarray xs = array(input_scratch, "inputScratch", t, True)
    cdef int n, k, m
    _cosine_args(x, w, y, "output", wn, xn, &n, &k, &m)
    _like_rows(go, "gradOutput", x, n, m)
    shape_is(gw, "gradWeight", shape(w))
    shape_is(s, "scratch", (n, m))
    shape_is(xs, "inputScratch", (n, k))
    disjoint_from(gw, "gradWeight", w, "weight", x, "input", go, "gradOutput", s, "scratch",
                  xs, "inputScratch")
    disjoint_from(s, "scratch", w, "weight", x, "input", y, "output", go, "gradOutput")
    disjoint_from(xs, "inputScratch", w, "weight", x, "input", s, "scratch", go, "gradOutput")
    if scale == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine_acc(f32(x), f32(y), f32(go), f32(gw), f32(w), f32(wn), f32(xn), f32(s),
                        f32(xs), <float> scale, n, k, m)
        else:
            _cosine_acc(f64(x), f64(y), f64(go), f64(gw), f64(w), f64(wn), f64(xn), f64(s),
                        f64(xs), scale, n, k, m)


cdef void _cosine_acc(const floating *x, const floating *y, const floating *go, floating *gw,
                      const floating *w, const floating *wn, const floating *xn, floating *s,
                      floating *xs, floating scale, int n, int k, int m) noexcept nogil:
    cdef Py_ssize_t r, i, j
    cdef double u
    cdef floating c
    if n == 0 or m == 0 or k == 0:
        return
    for r in range(n):
        for j in range(m):
            s[r * m + j] = go[r * m + j] / wn[j]
        c = 1 / xn[r]
        for i in range(k):
            xs[r * k + i] = x[r * k + i] * c
    # gw += scale * s.T @ xs, (m, n) x (n, k)
    gemm(Trans, NoTrans, m, k, n, scale, s, m, xs, k, <floating> 1, gw, k)
    for j in range(m):
        u = 0
        for r in range(n):
            u += <double> s[r * m + j] * y[r * m + j]
        c = <floating> (scale * u) / wn[j]
        for i in range(k):
            gw[j * k + i] -= c * w[j * k + i]


# -- Maxout -----------------------------------------------------------------------------
cdef int _maxout_args(cnp.ndarray pre, str pre_what, cnp.ndarray y, str y_what,
                      cnp.ndarray idx, Py_ssize_t pieces, Py_ssize_t *n,
                      Py_ssize_t *m) except -1:
    """pre (p * m,) or (n, p * m); y and idx (m,) or (n, m)."""
    cdef int d = ndim(pre, pre_what, 1, 2)
    if pieces <= 0:
        raise ValueError(f"maxoutNumber must be > 0, got {pieces}")
    cdef Py_ssize_t width = cnp.PyArray_DIMS(pre)[d - 1]
    if width % pieces:
        raise ValueError(f"{pre_what} has {width} features, not a multiple of {pieces} pieces")
    m[0] = width // pieces
    n[0] = 1 if d == 1 else cnp.PyArray_DIMS(pre)[0]
    shape_is(y, y_what, <tuple> (m[0],) if d == 1 else <tuple> (n[0], m[0]))
    shape_is(idx, "indices", shape(y))
    return 0


def maxout_update_output(pre, output, indices, Py_ssize_t pieces):
    """output[r, j] := max_p pre[r, p * m + j] (NaN wins; the first of equal maxima), its p in
    indices (int32): (n, pieces * m) -> (n, m)."""
    cdef int t = float_type(pre, "pre")
    cdef cnp.ndarray z = array(pre, "pre", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INT32, True)
    cdef Py_ssize_t n, m
    _maxout_args(z, "pre", y, "output", idx, pieces, &n, &m)
    disjoint_from(y, "output", z, "pre", idx, "indices")
    disjoint_from(idx, "indices", z, "pre")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _maxout_fwd(f32(z), f32(y), <int *> cnp.PyArray_DATA(idx), n, m, pieces)
        else:
            _maxout_fwd(f64(z), f64(y), <int *> cnp.PyArray_DATA(idx), n, m, pieces)


cdef void _maxout_fwd(const floating *z, floating *y, int *idx, Py_ssize_t n, Py_ssize_t m,
                      Py_ssize_t pieces) noexcept nogil:
    cdef Py_ssize_t r, j, p
    cdef floating best, v
    cdef int at
    cdef const floating *zr
    for r in range(n):
        zr = z + r * pieces * m
        for j in range(m):
            best = zr[j]
            at = 0
            for p in range(1, pieces):
                v = zr[p * m + j]
                if v > best or (v != v and best == best):
                    best = v
                    at = <int> p
            y[r * m + j] = best
            idx[r * m + j] = at


def maxout_update_grad_input(grad_output, indices, grad_pre, Py_ssize_t pieces):
    """grad_pre[r, p * m + j] := grad_output[r, j] where p = indices[r, j], else 0."""
    cdef int t = float_type(grad_output, "gradOutput")
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray idx = array(indices, "indices", cnp.NPY_INT32, False)
    cdef cnp.ndarray gz = array(grad_pre, "gradPre", t, True)
    cdef Py_ssize_t n, m, r
    _maxout_args(gz, "gradPre", go, "gradOutput", idx, pieces, &n, &m)
    disjoint_from(gz, "gradPre", go, "gradOutput", idx, "indices")
    cdef int *ix = <int *> cnp.PyArray_DATA(idx)
    for r in range(n * m):
        if ix[r] < 0 or ix[r] >= pieces:
            raise ValueError(f"indices holds {ix[r]} at {r}, outside [0, {pieces})")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _maxout_bwd(f32(go), ix, f32(gz), n, m, pieces)
        else:
            _maxout_bwd(f64(go), ix, f64(gz), n, m, pieces)


cdef void _maxout_bwd(const floating *go, const int *idx, floating *gz, Py_ssize_t n,
                      Py_ssize_t m, Py_ssize_t pieces) noexcept nogil:
    cdef Py_ssize_t r, j
    if n * m:
        memset(gz, 0, <size_t> (n * pieces * m) * sizeof(floating))
    for r in range(n):
        for j in range(m):
            gz[r * pieces * m + idx[r * m + j] * m + j] = go[r * m + j]


# -- Highway ----------------------------------------------------------------------------
def highway_update_output(input, gate, transform, output):
    """gate := sigmoid(gate) in place (it holds W_t x + b_t on entry); then
    output := gate * transform + (1 - gate) * input. All of one shape."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray g = array(gate, "gate", t, True)
    cdef cnp.ndarray h = array(transform, "transform", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    ndim(x, "input", 1, 2)
    shape_is(g, "gate", shape(x))
    shape_is(h, "transform", shape(x))
    shape_is(y, "output", shape(x))
    disjoint_from(g, "gate", x, "input", h, "transform", y, "output")
    disjoint_from(y, "output", x, "input", h, "transform")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    with nogil:
        pm_sigmoid_fwd(t == cnp.NPY_FLOAT64, cnp.PyArray_DATA(g), cnp.PyArray_DATA(g), size)
        if t == cnp.NPY_FLOAT32:
            _highway_fwd(f32(x), f32(g), f32(h), f32(y), size)
        else:
            _highway_fwd(f64(x), f64(g), f64(h), f64(y), size)


cdef void _highway_fwd(const floating *x, const floating *g, const floating *h, floating *y,
                       Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        y[i] = g[i] * h[i] + (1 - g[i]) * x[i]


def highway_update_grad_input(input, gate, transform, grad_output, grad_input, grad_gate,
                              grad_transform):
    """From the forward's gate t and transform h: grad_input := grad_output * (1 - t) (the
    carry path), grad_gate := grad_output * (h - x) * t * (1 - t) (at W_t x + b_t),
    grad_transform := grad_output * t (at h). All of one shape."""
    cdef int t = float_type(input, "input")
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray g = array(gate, "gate", t, False)
    cdef cnp.ndarray h = array(transform, "transform", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef cnp.ndarray gg = array(grad_gate, "gradGate", t, True)
    cdef cnp.ndarray gh = array(grad_transform, "gradTransform", t, True)
    ndim(x, "input", 1, 2)
    cdef tuple sx = shape(x)
    shape_is(g, "gate", sx)
    shape_is(h, "transform", sx)
    shape_is(go, "gradOutput", sx)
    shape_is(gi, "gradInput", sx)
    shape_is(gg, "gradGate", sx)
    shape_is(gh, "gradTransform", sx)
    disjoint_from(gi, "gradInput", x, "input", g, "gate", h, "transform", go, "gradOutput",
                  gg, "gradGate")
    disjoint_from(gg, "gradGate", x, "input", g, "gate", h, "transform", go, "gradOutput",
                  gh, "gradTransform")
    disjoint_from(gh, "gradTransform", x, "input", g, "gate", h, "transform", go, "gradOutput",
                  gi, "gradInput")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _highway_bwd(f32(x), f32(g), f32(h), f32(go), f32(gi), f32(gg), f32(gh), size)
        else:
            _highway_bwd(f64(x), f64(g), f64(h), f64(go), f64(gi), f64(gg), f64(gh), size)


cdef void _highway_bwd(const floating *x, const floating *g, const floating *h,
                       const floating *go, floating *gi, floating *gg, floating *gh,
                       Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating t, d
    for i in range(size):
        t = g[i]
        d = go[i]
        gi[i] = d * (1 - t)
        gg[i] = d * (h[i] - x[i]) * t * (1 - t)
        gh[i] = d * t


def highway_acc_grad_input(grad_gate, grad_transform, weight_t, weight_h, grad_input):
    """grad_input += grad_gate @ weight_t + grad_transform @ weight_h, (n, s) x (s, s)."""
    cdef int t = float_type(weight_t, "weightT")
    cdef cnp.ndarray wt = array(weight_t, "weightT", t, False)
    cdef cnp.ndarray wh = array(weight_h, "weightH", t, False)
    cdef cnp.ndarray gg = array(grad_gate, "gradGate", t, False)
    cdef cnp.ndarray gh = array(grad_transform, "gradTransform", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    ndim(wt, "weightT", 2, 2)
    cdef int s = dim(wt, 0)
    shape_is(wt, "weightT", (s, s))
    shape_is(wh, "weightH", (s, s))
    cdef int n = _rows(gi, "gradInput", s)
    shape_is(gg, "gradGate", shape(gi))
    shape_is(gh, "gradTransform", shape(gi))
    disjoint_from(gi, "gradInput", wt, "weightT", wh, "weightH", gg, "gradGate", gh,
                  "gradTransform")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _gw(f32(gg), f32(wt), f32(gi), n, s, s, 1)
            _gw(f32(gh), f32(wh), f32(gi), n, s, s, 1)
        else:
            _gw(f64(gg), f64(wt), f64(gi), n, s, s, 1)
            _gw(f64(gh), f64(wh), f64(gi), n, s, s, 1)


# -- Bilinear ---------------------------------------------------------------------------
cdef int _bilinear_args(cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray w, str w_what,
                        cnp.ndarray b, cnp.ndarray s, int *n, int *k1, int *k2,
                        int *m) except -1:
    """x1 (k1,) or (n, k1), x2 alike with k2, w (m, k1, k2), b (m,) or None, s (n, m, k2)."""
    ndim(w, w_what, 3, 3)
    m[0] = dim(w, 0)
    k1[0] = dim(w, 1)
    k2[0] = dim(w, 2)
    n[0] = _rows(x1, "input 0", k1[0])
    ndim(x2, "input 1", cnp.PyArray_NDIM(x1), cnp.PyArray_NDIM(x1))
    cdef int n2 = _rows(x2, "input 1", k2[0])
    if n2 != n[0]:
        raise ValueError(f"input 0 has {n[0]} rows, input 1 {n2}")
    if b is not None:
        vector_of(b, "bias", m[0])
    if s is not None:
        shape_is(s, "scratch", (n[0], m[0], k2[0]))
    return 0


def bilinear_update_output(input1, input2, output, weight, bias, scratch):
    """output[r, o] := x1[r] @ weight[o] @ x2[r] + bias[o]; scratch (n, m, k2) keeps
    x1[r] @ weight[o] for the backward. ``bias`` may be None."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    cdef int n, k1, k2, m
    _bilinear_args(x1, x2, w, "weight", b, s, &n, &k1, &k2, &m)
    _like_rows(y, "output", x1, n, m)
    disjoint_from(y, "output", x1, "input 0", x2, "input 1", w, "weight", b, "bias", s,
                  "scratch")
    disjoint_from(s, "scratch", x1, "input 0", x2, "input 1", w, "weight", b, "bias")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _bilinear_fwd(f32(x1), f32(x2), f32(y), f32(w), f32(b), f32(s), n, k1, k2, m)
        else:
            _bilinear_fwd(f64(x1), f64(x2), f64(y), f64(w), f64(b), f64(s), n, k1, k2, m)


cdef void _bilinear_fwd(const floating *x1, const floating *x2, floating *y, const floating *w,
                        const floating *b, floating *s, int n, int k1, int k2,
                        int m) noexcept nogil:
    cdef Py_ssize_t r, o, j, ld = <Py_ssize_t> m * k2
    cdef double acc
    if n == 0 or m == 0:
        return
    if k1 == 0:
        memset(s, 0, <size_t> (n * ld) * sizeof(floating))
    elif k2 > 0:
        for o in range(m):  # s[:, o, :] = x1 @ w[o], (n, k1) x (k1, k2)
            if n == 1:
                gemv(Trans, k1, k2, <floating> 1, w + o * k1 * k2, k2, x1, 1, <floating> 0,
                     s + o * k2, 1)
            else:
                gemm(NoTrans, NoTrans, n, k2, k1, <floating> 1, x1, k1, w + o * k1 * k2, k2,
                     <floating> 0, s + o * k2, <int> ld)
    for r in range(n):
        for o in range(m):
            acc = 0 if b == NULL else b[o]
            for j in range(k2):
                acc += <double> s[r * ld + o * k2 + j] * x2[r * k2 + j]
            y[r * m + o] = <floating> acc


def bilinear_update_grad_input(input1, input2, grad_output, grad_input1, grad_input2, weight,
                               scratch):
    """grad_input2[r] := sum_o grad_output[r, o] x1[r] @ weight[o] (the forward's scratch);
    grad_input1[r] := sum_o grad_output[r, o] weight[o] @ x2[r]. The scratch is overwritten."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput 1", t, True)
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    cdef int n, k1, k2, m
    _bilinear_args(x1, x2, w, "weight", None, s, &n, &k1, &k2, &m)
    _like_rows(go, "gradOutput", x1, n, m)
    shape_is(g1, "gradInput 0", shape(x1))
    shape_is(g2, "gradInput 1", shape(x2))
    disjoint_from(g1, "gradInput 0", x1, "input 0", x2, "input 1", w, "weight", go,
                  "gradOutput", s, "scratch")
    disjoint_from(g2, "gradInput 1", x1, "input 0", x2, "input 1", w, "weight", go,
                  "gradOutput", s, "scratch")
    disjoint_from(g1, "gradInput 0", g2, "gradInput 1")
    disjoint_from(s, "scratch", x1, "input 0", x2, "input 1", w, "weight", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _bilinear_bwd(f32(x1), f32(x2), f32(go), f32(g1), f32(g2), f32(w), f32(s), n, k1,
                          k2, m)
        else:
            _bilinear_bwd(f64(x1), f64(x2), f64(go), f64(g1), f64(g2), f64(w), f64(s), n, k1,
                          k2, m)


cdef void _outer_rows(const floating *go, const floating *x2, floating *s, int n, int k2,
                      int m) noexcept nogil:
    """s[r, o, j] := go[r, o] * x2[r, j]."""
    cdef Py_ssize_t r, o, j, ld = <Py_ssize_t> m * k2
    cdef floating g
    for r in range(n):
        for o in range(m):
            g = go[r * m + o]
            for j in range(k2):
                s[r * ld + o * k2 + j] = g * x2[r * k2 + j]


cdef void _bilinear_bwd(const floating *x1, const floating *x2, const floating *go,
                        floating *g1, floating *g2, const floating *w, floating *s, int n,
                        int k1, int k2, int m) noexcept nogil:
    cdef Py_ssize_t r, o, j, ld = <Py_ssize_t> m * k2
    cdef double acc
    if n == 0:
        return
    for r in range(n):
        for j in range(k2):
            acc = 0
            for o in range(m):
                acc += <double> go[r * m + o] * s[r * ld + o * k2 + j]
            g2[r * k2 + j] = <floating> acc
    if k1 == 0:
        return
    memset(g1, 0, <size_t> n * k1 * sizeof(floating))
    if k2 == 0 or m == 0:
        return
    _outer_rows(go, x2, s, n, k2, m)
    for o in range(m):  # g1 += s[:, o, :] @ w[o].T, (n, k2) x (k2, k1)
        if n == 1:
            gemv(NoTrans, k1, k2, <floating> 1, w + o * k1 * k2, k2, s + o * k2, 1,
                 <floating> 1, g1, 1)
        else:
            gemm(NoTrans, Trans, n, k1, k2, <floating> 1, s + o * k2, <int> ld,
                 w + o * k1 * k2, k2, <floating> 1, g1, k1)


def bilinear_acc_grad_parameters(input1, input2, grad_output, grad_weight, grad_bias,
                                 scratch, double scale_w, double scale_b):
    """grad_weight[o] += scale_w * sum_r grad_output[r, o] x1[r] outer x2[r];
    grad_bias += scale_b * sum_r grad_output[r]. The scratch (n, m, k2) is overwritten;
    ``grad_bias`` may be None; a scale of 0 skips its term."""
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray s = array(scratch, "scratch", t, True)
    cdef int n, k1, k2, m
    _bilinear_args(x1, x2, gw, "gradWeight", gb, s, &n, &k1, &k2, &m)
    _like_rows(go, "gradOutput", x1, n, m)
    disjoint_from(gw, "gradWeight", x1, "input 0", x2, "input 1", go, "gradOutput", s,
                  "scratch", gb, "gradBias")
    disjoint_from(gb, "gradBias", x1, "input 0", x2, "input 1", go, "gradOutput", s, "scratch")
    disjoint_from(s, "scratch", x1, "input 0", x2, "input 1", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _bilinear_acc(f32(x1), f32(x2), f32(go), f32(gw), f32(gb), f32(s), <float> scale_w,
                          <float> scale_b, n, k1, k2, m)
        else:
            _bilinear_acc(f64(x1), f64(x2), f64(go), f64(gw), f64(gb), f64(s), scale_w,
                          scale_b, n, k1, k2, m)


cdef void _bilinear_acc(const floating *x1, const floating *x2, const floating *go,
                        floating *gw, floating *gb, floating *s, floating sw, floating sb,
                        int n, int k1, int k2, int m) noexcept nogil:
    cdef Py_ssize_t r, o, ld = <Py_ssize_t> m * k2
    cdef double acc
    if n == 0 or m == 0:
        return
    if sw != 0 and k1 > 0 and k2 > 0:
        _outer_rows(go, x2, s, n, k2, m)
        for o in range(m):  # gw[o] += sw * x1.T @ s[:, o, :], (k1, n) x (n, k2)
            gemm(Trans, NoTrans, k1, k2, n, sw, x1, k1, s + o * k2, <int> ld, <floating> 1,
                 gw + o * k1 * k2, k2)
    if sb != 0 and gb != NULL:
        for o in range(m):
            acc = 0
            for r in range(n):
                acc += go[r * m + o]
            gb[o] += <floating> (sb * acc)
