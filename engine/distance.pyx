"""Kernels of the products and distances of tables and of Euclidean: DotProduct,
CosineDistance, PairwiseDistance, MM, MV, Euclidean.

The row-wise ones (DotProduct, CosineDistance, PairwiseDistance) take two inputs of one shape,
a vector (d,) or a batch (n, d), and give (1,) or (n,). MM and MV take a matrix (or a batch of
them) and run on the BLAS wrapper, one GEMM or GEMV per matrix; Euclidean measures each input
against the columns of its (inputSize, outputSize) weight directly (no expansion of
|x|^2 + |w|^2 - 2 x.w, which loses the small distances to cancellation).
"""

cimport numpy as cnp
from libc.math cimport sqrt, fabs, pow
from libc.string cimport memset

from engine.blas cimport floating, gemm, gemv, ger, NoTrans, Trans, BLAS_Trans
from engine._check cimport (
    shape, float_type, array, f32, f64, ndim, dim, vector_of, shape_is, disjoint_from,
)

cnp.import_array()

cdef double COSINE_EPS = 1e-12       # added to each squared norm (CosineDistance)
cdef double PAIRWISE_EPS = 1e-6      # added to the distance in the gradient (PairwiseDistance)
cdef double EUCLIDEAN_EPS = 1e-7     # added to the distance in the gradient (Euclidean)


# -- two inputs row by row ---------------------------------------------------------------
cdef int _pair(cnp.ndarray x1, cnp.ndarray x2, cnp.ndarray y, str y_what,
               Py_ssize_t *n, Py_ssize_t *d) except -1:
    """Sizes of a row-wise pair: x1, x2 both (d,) or both (n, d); y (1,) or (n,)."""
    cdef int nd = ndim(x1, "input 0", 1, 2)
    shape_is(x2, "input 1", shape(x1))
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x1)[0]
    d[0] = cnp.PyArray_DIMS(x1)[nd - 1]
    vector_of(y, y_what, n[0])
    return 0


def dot_update_output(input1, input2, output):
    """output[r] := input1[r] . input2[r]: (n, d), (n, d) -> (n,); (d,), (d,) -> (1,)."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, y, "output", &n, &d)
    disjoint_from(y, "output", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _dot(f32(x1), f32(x2), f32(y), n, d)
        else:
            _dot(f64(x1), f64(x2), f64(y), n, d)


cdef void _dot(const floating *a, const floating *b, floating *y, Py_ssize_t n,
               Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double s
    for r in range(n):
        s = 0
        for i in range(d):
            s += <double> a[r * d + i] * b[r * d + i]
        y[r] = <floating> s


cdef int _pair_grads(cnp.ndarray x1, cnp.ndarray go, cnp.ndarray g1, cnp.ndarray g2,
                     cnp.ndarray y, Py_ssize_t n) except -1:
    vector_of(go, "gradOutput", n)
    shape_is(g1, "gradInput 0", shape(x1))
    shape_is(g2, "gradInput 1", shape(x1))
    disjoint_from(g1, "gradInput 0", g2, "gradInput 1", go, "gradOutput", y, "output")
    return 0


def dot_update_grad_input(input1, input2, grad_output, grad_input1, grad_input2):
    """grad_input1[r] := grad_output[r] * input2[r], grad_input2[r] := grad_output[r] * input1[r]
    (from DotProduct's output = sum(input1 * input2, last axis))."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput 1", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, go, "gradOutput", &n, &d)
    _pair_grads(x1, go, g1, g2, None, n)
    disjoint_from(g1, "gradInput 0", x1, "input 0", x2, "input 1")
    disjoint_from(g2, "gradInput 1", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _dot_bwd(f32(x1), f32(x2), f32(go), f32(g1), f32(g2), n, d)
        else:
            _dot_bwd(f64(x1), f64(x2), f64(go), f64(g1), f64(g2), n, d)


cdef void _dot_bwd(const floating *a, const floating *b, const floating *go, floating *ga,
                   floating *gb, Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef floating g
    for r in range(n):
        g = go[r]
        for i in range(d):
            ga[r * d + i] = g * b[r * d + i]
            gb[r * d + i] = g * a[r * d + i]


def cosine_distance_update_output(input1, input2, output):
    """output[r] := a.b / sqrt((|a|^2 + 1e-12) (|b|^2 + 1e-12)), a = input1[r], b = input2[r]."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, y, "output", &n, &d)
    disjoint_from(y, "output", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine(f32(x1), f32(x2), f32(y), NULL, NULL, NULL, n, d)
        else:
            _cosine(f64(x1), f64(x2), f64(y), NULL, NULL, NULL, n, d)


cdef void _cosine(const floating *a, const floating *b, floating *y, const floating *go,
                  floating *ga, floating *gb, Py_ssize_t n, Py_ssize_t d) noexcept nogil:
    """The forward into y, or (go given) the backward into ga, gb."""
    cdef Py_ssize_t r, i
    cdef double ab, aa, bb, ia, ib, w, ca, cb
    cdef const floating *ar
    cdef const floating *br
    for r in range(n):
        ar = a + r * d
        br = b + r * d
        ab = aa = bb = 0
        for i in range(d):
            ab += <double> ar[i] * br[i]
            aa += <double> ar[i] * ar[i]
            bb += <double> br[i] * br[i]
        ia = 1 / (aa + COSINE_EPS)
        ib = 1 / (bb + COSINE_EPS)
        w = sqrt(ia * ib)
        if go == NULL:
            y[r] = <floating> (ab * w)
            continue
        # d/da = w (b - (a.b) a / (|a|^2 + eps)), and alike for b
        ca = go[r] * w
        cb = ab * ia
        for i in range(d):
            ga[r * d + i] = <floating> (ca * (br[i] - cb * ar[i]))
        cb = ab * ib
        for i in range(d):
            gb[r * d + i] = <floating> (ca * (ar[i] - cb * br[i]))


def cosine_distance_update_grad_input(input1, input2, grad_output, grad_input1, grad_input2):
    """The gradients of cosine_distance_update_output's result (its sums are computed again)."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput 1", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, go, "gradOutput", &n, &d)
    _pair_grads(x1, go, g1, g2, None, n)
    disjoint_from(g1, "gradInput 0", x1, "input 0", x2, "input 1")
    disjoint_from(g2, "gradInput 1", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _cosine(f32(x1), f32(x2), NULL, f32(go), f32(g1), f32(g2), n, d)
        else:
            _cosine(f64(x1), f64(x2), NULL, f64(go), f64(g1), f64(g2), n, d)


def pairwise_distance_update_output(input1, input2, output, int norm):
    """output[r] := (sum |input1[r] - input2[r]|^norm)^(1/norm), norm >= 1."""
    if norm < 1:
        raise ValueError(f"norm must be >= 1, got {norm}")
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, y, "output", &n, &d)
    disjoint_from(y, "output", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _pdist(f32(x1), f32(x2), f32(y), n, d, norm)
        else:
            _pdist(f64(x1), f64(x2), f64(y), n, d, norm)


cdef void _pdist(const floating *a, const floating *b, floating *y, Py_ssize_t n, Py_ssize_t d,
                 int p) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double s, e
    for r in range(n):
        s = 0
        if p == 1:
            for i in range(d):
                s += fabs(<double> a[r * d + i] - b[r * d + i])
        elif p == 2:
            for i in range(d):
                e = <double> a[r * d + i] - b[r * d + i]
                s += e * e
            s = sqrt(s)
        else:
            for i in range(d):
                s += pow(fabs(<double> a[r * d + i] - b[r * d + i]), p)
            s = pow(s, 1.0 / p)
        y[r] = <floating> s


def pairwise_distance_update_grad_input(input1, input2, output, grad_output, grad_input1,
                                        grad_input2, int norm):
    """grad_input1[r] := grad_output[r] e |e|^(norm-2) / (output[r] + 1e-6)^(norm-1),
    e = input1[r] - input2[r] (sign(e) for norm 1, 0 at 0); grad_input2 := -grad_input1."""
    if norm < 1:
        raise ValueError(f"norm must be >= 1, got {norm}")
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray x1 = array(input1, "input 0", t, False)
    cdef cnp.ndarray x2 = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g1 = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray g2 = array(grad_input2, "gradInput 1", t, True)
    cdef Py_ssize_t n, d
    _pair(x1, x2, go, "gradOutput", &n, &d)
    vector_of(y, "output", n)
    _pair_grads(x1, go, g1, g2, y, n)
    disjoint_from(g1, "gradInput 0", x1, "input 0", x2, "input 1")
    disjoint_from(g2, "gradInput 1", x1, "input 0", x2, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _pdist_bwd(f32(x1), f32(x2), f32(y), f32(go), f32(g1), f32(g2), n, d, norm)
        else:
            _pdist_bwd(f64(x1), f64(x2), f64(y), f64(go), f64(g1), f64(g2), n, d, norm)


cdef void _pdist_bwd(const floating *a, const floating *b, const floating *y,
                     const floating *go, floating *ga, floating *gb, Py_ssize_t n, Py_ssize_t d,
                     int p) noexcept nogil:
    cdef Py_ssize_t r, i
    cdef double c, e, g
    for r in range(n):
        c = go[r] if p == 1 else go[r] / pow(<double> y[r] + PAIRWISE_EPS, p - 1)
        for i in range(d):
            e = <double> a[r * d + i] - b[r * d + i]
            if p == 1:
                g = c * ((e > 0) - (e < 0)) if e == e else e
            elif p == 2:
                g = c * e
            else:
                g = c * e * pow(fabs(e), p - 2)
            ga[r * d + i] = <floating> g
            gb[r * d + i] = <floating> -g


# -- MM and MV --------------------------------------------------------------------------
cdef void _mm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k, const floating *a, int lda,
              const floating *b, int ldb, floating *c, int ldc) noexcept nogil:
    """C := op(A) @ op(B), (m, k) x (k, n); zero for k = 0."""
    if m == 0 or n == 0:
        return
    if k == 0:
        memset(c, 0, <size_t> m * n * sizeof(floating))
        return
    gemm(ta, tb, m, n, k, <floating> 1, a, lda, b, ldb, <floating> 0, c, ldc)


cdef int _matrices(cnp.ndarray a, str a_what, cnp.ndarray b, str b_what,
                   Py_ssize_t *batch) except -1:
    """Both 2-D, or both 3-D with one batch size; return the rank."""
    cdef int nd = ndim(a, a_what, 2, 3)
    ndim(b, b_what, nd, nd)
    batch[0] = 1
    if nd == 3:
        batch[0] = dim(a, 0)
        if dim(b, 0) != batch[0]:
            raise ValueError(f"{a_what} holds {batch[0]} matrices, {b_what} {dim(b, 0)}")
    return nd


cdef tuple _mm_sizes(cnp.ndarray a, cnp.ndarray b, bint ta, bint tb, Py_ssize_t *batch):
    """(rank, m, k, n) of op(a) (m, k) @ op(b) (k, n)."""
    cdef int nd = _matrices(a, "input 0", b, "input 1", batch)
    cdef int ra = dim(a, nd - 2), ca = dim(a, nd - 1), rb = dim(b, nd - 2), cb = dim(b, nd - 1)
    cdef int m = ca if ta else ra, k = ra if ta else ca
    cdef int k2 = cb if tb else rb, n = rb if tb else cb
    if k != k2:
        raise ValueError(f"matrix sizes do not match: input 0 {shape(a)}"
                         f"{' transposed' if ta else ''} against input 1 {shape(b)}"
                         f"{' transposed' if tb else ''}")
    return nd, m, k, n


def mm_update_output(input1, input2, output, bint trans_a, bint trans_b):
    """output := op(input1) @ op(input2), per matrix of a batch: (m, k) x (k, n) -> (m, n),
    (b, m, k) x (b, k, n) -> (b, m, n); op transposes when its flag is set."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray a = array(input1, "input 0", t, False)
    cdef cnp.ndarray b = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t batch
    cdef int nd, m, k, n
    nd, m, k, n = _mm_sizes(a, b, trans_a, trans_b, &batch)
    shape_is(y, "output", <tuple> (m, n) if nd == 2 else <tuple> (batch, m, n))
    disjoint_from(y, "output", a, "input 0", b, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mm_fwd(f32(a), f32(b), f32(y), batch, m, k, n, trans_a, trans_b)
        else:
            _mm_fwd(f64(a), f64(b), f64(y), batch, m, k, n, trans_a, trans_b)


cdef inline int _ld(int v) noexcept nogil:
    return v if v > 1 else 1


cdef void _mm_fwd(const floating *a, const floating *b, floating *y, Py_ssize_t batch, int m,
                  int k, int n, bint ta, bint tb) noexcept nogil:
    cdef Py_ssize_t i, sa = <Py_ssize_t> m * k, sb = <Py_ssize_t> k * n, sy = <Py_ssize_t> m * n
    for i in range(batch):
        _mm(Trans if ta else NoTrans, Trans if tb else NoTrans, m, n, k, a + i * sa,
            _ld(m if ta else k), b + i * sb, _ld(k if tb else n), y + i * sy, _ld(n))


def mm_update_grad_input(input1, input2, grad_output, grad_input1, grad_input2, bint trans_a,
                         bint trans_b):
    """The gradients of mm_update_output: grad_input1 shaped as input1, grad_input2 as input2."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray a = array(input1, "input 0", t, False)
    cdef cnp.ndarray b = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray ga = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray gb = array(grad_input2, "gradInput 1", t, True)
    cdef Py_ssize_t batch
    cdef int nd, m, k, n
    nd, m, k, n = _mm_sizes(a, b, trans_a, trans_b, &batch)
    shape_is(go, "gradOutput", <tuple> (m, n) if nd == 2 else <tuple> (batch, m, n))
    shape_is(ga, "gradInput 0", shape(a))
    shape_is(gb, "gradInput 1", shape(b))
    disjoint_from(ga, "gradInput 0", a, "input 0", b, "input 1", go, "gradOutput", gb,
                  "gradInput 1")
    disjoint_from(gb, "gradInput 1", a, "input 0", b, "input 1", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mm_bwd(f32(a), f32(b), f32(go), f32(ga), f32(gb), batch, m, k, n, trans_a, trans_b)
        else:
            _mm_bwd(f64(a), f64(b), f64(go), f64(ga), f64(gb), batch, m, k, n, trans_a, trans_b)


cdef void _mm_bwd(const floating *a, const floating *b, const floating *g, floating *ga,
                  floating *gb, Py_ssize_t batch, int m, int k, int n, bint ta,
                  bint tb) noexcept nogil:
    """C = op(A) op(B): dA = G op(B)^T (stored transposed when ta), dB = op(A)^T G (likewise)."""
    cdef Py_ssize_t i, sa = <Py_ssize_t> m * k, sb = <Py_ssize_t> k * n, sy = <Py_ssize_t> m * n
    cdef int lda = _ld(m if ta else k), ldb = _ld(k if tb else n)
    for i in range(batch):
        if ta:  # dA^T = op(B) G^T, (k, m)
            _mm(Trans if tb else NoTrans, Trans, k, m, n, b + i * sb, ldb, g + i * sy, _ld(n),
                ga + i * sa, _ld(m))
        else:   # dA = G op(B)^T, (m, k)
            _mm(NoTrans, NoTrans if tb else Trans, m, k, n, g + i * sy, _ld(n), b + i * sb, ldb,
                ga + i * sa, _ld(k))
        if tb:  # dB^T = G^T op(A), (n, k)
            _mm(Trans, Trans if ta else NoTrans, n, k, m, g + i * sy, _ld(n), a + i * sa, lda,
                gb + i * sb, _ld(k))
        else:   # dB = op(A)^T G, (k, n)
            _mm(NoTrans if ta else Trans, NoTrans, k, n, m, a + i * sa, lda, g + i * sy, _ld(n),
                gb + i * sb, _ld(n))


cdef tuple _mv_sizes(cnp.ndarray mat, cnp.ndarray v, bint trans, Py_ssize_t *batch):
    """(rank of mat, rows, cols, length of v, length of the result)."""
    cdef int nd = ndim(mat, "input 0", 2, 3)
    ndim(v, "input 1", nd - 1, nd - 1)
    batch[0] = 1
    if nd == 3:
        batch[0] = dim(mat, 0)
        if dim(v, 0) != batch[0]:
            raise ValueError(f"input 0 holds {batch[0]} matrices, input 1 {dim(v, 0)} vectors")
    cdef int r = dim(mat, nd - 2), c = dim(mat, nd - 1), lv = dim(v, nd - 2)
    if lv != (r if trans else c):
        raise ValueError(f"matrix and vector sizes do not match: input 0 {shape(mat)}"
                         f"{' transposed' if trans else ''} against input 1 {shape(v)}")
    return nd, r, c, lv, (c if trans else r)


def mv_update_output(input1, input2, output, bint trans):
    """output := op(input1) @ input2 per matrix: (r, c) x (c,) -> (r,); (b, r, c) x (b, c) ->
    (b, r); with ``trans``, op(input1) is input1 transposed."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray mat = array(input1, "input 0", t, False)
    cdef cnp.ndarray v = array(input2, "input 1", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t batch
    cdef int nd, r, c, ly
    nd, r, c, _, ly = _mv_sizes(mat, v, trans, &batch)
    shape_is(y, "output", <tuple> (ly,) if nd == 2 else <tuple> (batch, ly))
    disjoint_from(y, "output", mat, "input 0", v, "input 1")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mv_fwd(f32(mat), f32(v), f32(y), batch, r, c, trans)
        else:
            _mv_fwd(f64(mat), f64(v), f64(y), batch, r, c, trans)


cdef void _mv(BLAS_Trans ta, int r, int c, const floating *mat, const floating *x,
              floating *y) noexcept nogil:
    """y := op(M) x, M (r, c) row-major."""
    cdef int ly = c if ta == Trans else r, lx = r if ta == Trans else c
    if ly == 0:
        return
    if lx == 0:
        memset(y, 0, <size_t> ly * sizeof(floating))
        return
    gemv(ta, r, c, <floating> 1, mat, c, x, 1, <floating> 0, y, 1)


cdef void _mv_fwd(const floating *mat, const floating *v, floating *y, Py_ssize_t batch, int r,
                  int c, bint trans) noexcept nogil:
    cdef Py_ssize_t i, lv = r if trans else c, ly = c if trans else r
    for i in range(batch):
        _mv(Trans if trans else NoTrans, r, c, mat + i * r * c, v + i * lv, y + i * ly)


def mv_update_grad_input(input1, input2, grad_output, grad_input1, grad_input2, bint trans):
    """grad_input1 := grad_output outer input2 (input2 outer grad_output with ``trans``),
    grad_input2 := op(input1)^T grad_output, per matrix."""
    cdef int t = float_type(input1, "input 0")
    cdef cnp.ndarray mat = array(input1, "input 0", t, False)
    cdef cnp.ndarray v = array(input2, "input 1", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gm = array(grad_input1, "gradInput 0", t, True)
    cdef cnp.ndarray gv = array(grad_input2, "gradInput 1", t, True)
    cdef Py_ssize_t batch
    cdef int nd, r, c, ly
    nd, r, c, _, ly = _mv_sizes(mat, v, trans, &batch)
    shape_is(go, "gradOutput", <tuple> (ly,) if nd == 2 else <tuple> (batch, ly))
    shape_is(gm, "gradInput 0", shape(mat))
    shape_is(gv, "gradInput 1", shape(v))
    disjoint_from(gm, "gradInput 0", mat, "input 0", v, "input 1", go, "gradOutput", gv,
                  "gradInput 1")
    disjoint_from(gv, "gradInput 1", mat, "input 0", v, "input 1", go, "gradOutput")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _mv_bwd(f32(mat), f32(v), f32(go), f32(gm), f32(gv), batch, r, c, trans)
        else:
            _mv_bwd(f64(mat), f64(v), f64(go), f64(gm), f64(gv), batch, r, c, trans)


cdef void _mv_bwd(const floating *mat, const floating *v, const floating *g, floating *gm,
                  floating *gv, Py_ssize_t batch, int r, int c, bint trans) noexcept nogil:
    cdef Py_ssize_t i, lv = r if trans else c, ly = c if trans else r
    for i in range(batch):
        if r and c:
            memset(gm + i * r * c, 0, <size_t> r * c * sizeof(floating))
            if trans:   # y = M^T v: dM = v g^T, (r, c)
                ger(r, c, <floating> 1, v + i * lv, 1, g + i * ly, 1, gm + i * r * c, c)
            else:       # y = M v: dM = g v^T
                ger(r, c, <floating> 1, g + i * ly, 1, v + i * lv, 1, gm + i * r * c, c)
        _mv(NoTrans if trans else Trans, r, c, mat + i * r * c, g + i * ly, gv + i * lv)


# -- Euclidean --------------------------------------------------------------------------
cdef int _euclidean(cnp.ndarray x, cnp.ndarray w, str w_what, cnp.ndarray y, str y_what,
                    Py_ssize_t *n, Py_ssize_t *k, Py_ssize_t *m) except -1:
    """x (k,) or (n, k), w (k, m), y (m,) or (n, m); return the rank of x."""
    ndim(w, w_what, 2, 2)
    k[0] = cnp.PyArray_DIMS(w)[0]
    m[0] = cnp.PyArray_DIMS(w)[1]
    cdef int nd = ndim(x, "input", 1, 2)
    if cnp.PyArray_DIMS(x)[nd - 1] != k[0]:
        raise ValueError(f"input has {cnp.PyArray_DIMS(x)[nd - 1]} features, expected {k[0]}")
    n[0] = 1 if nd == 1 else cnp.PyArray_DIMS(x)[0]
    shape_is(y, y_what, <tuple> (m[0],) if nd == 1 else <tuple> (n[0], m[0]))
    return nd


def euclidean_update_output(input, output, weight):
    """output[r, j] := |input[r] - weight[:, j]|: (n, k), (k, m) -> (n, m); (k,) -> (m,)."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef Py_ssize_t n, k, m
    _euclidean(x, w, "weight", y, "output", &n, &k, &m)
    disjoint_from(y, "output", x, "input", w, "weight")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _euclid_fwd(f32(x), f32(w), f32(y), n, k, m)
        else:
            _euclid_fwd(f64(x), f64(w), f64(y), n, k, m)


cdef void _euclid_fwd(const floating *x, const floating *w, floating *y, Py_ssize_t n,
                      Py_ssize_t k, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t r, i, j
    cdef floating xi, e
    cdef floating *yr
    for r in range(n):
        yr = y + r * m
        for j in range(m):
            yr[j] = 0
        for i in range(k):  # rows of w are contiguous: accumulate a row of squares at a time
            xi = x[r * k + i]
            for j in range(m):
                e = xi - w[i * m + j]
                yr[j] += e * e
        for j in range(m):
            yr[j] = sqrt(yr[j])


cdef int _euclid_grads(cnp.ndarray w, cnp.ndarray x, cnp.ndarray y, cnp.ndarray go,
                       cnp.ndarray g, Py_ssize_t *n, Py_ssize_t *k, Py_ssize_t *m) except -1:
    _euclidean(x, w, "weight", y, "output", n, k, m)
    shape_is(go, "gradOutput", shape(y))
    vector_of(g, "scratch", m[0])
    disjoint_from(g, "scratch", w, "weight", x, "input", y, "output", go, "gradOutput")
    return 0


def euclidean_update_grad_input(input, output, grad_output, grad_input, weight, scratch):
    """grad_input[r, i] := sum_j (input[r, i] - weight[i, j]) g[r, j], with
    g = grad_output / (output + 1e-7); ``scratch`` (m,) holds a row of g."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g = array(scratch, "scratch", t, True)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef Py_ssize_t n, k, m
    _euclid_grads(w, x, y, go, g, &n, &k, &m)
    shape_is(gi, "gradInput", shape(x))
    disjoint_from(gi, "gradInput", w, "weight", y, "output", go, "gradOutput", g, "scratch")
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _euclid_bwd(f32(x), f32(y), f32(go), f32(w), f32(g), f32(gi), NULL, 0, n, k, m)
        else:
            _euclid_bwd(f64(x), f64(y), f64(go), f64(w), f64(g), f64(gi), NULL, 0, n, k, m)


def euclidean_acc_grad_parameters(input, output, grad_output, grad_weight, weight, scratch,
                                  double scale):
    """grad_weight[i, j] -= scale * sum_r (input[r, i] - weight[i, j]) g[r, j] (g as in
    euclidean_update_grad_input); a scale of 0 skips it."""
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray g = array(scratch, "scratch", t, True)
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef Py_ssize_t n, k, m
    _euclid_grads(w, x, y, go, g, &n, &k, &m)
    shape_is(gw, "gradWeight", shape(w))
    disjoint_from(gw, "gradWeight", w, "weight", x, "input", y, "output", go, "gradOutput", g,
                  "scratch")
    if scale == 0:
        return
    with nogil:
        if t == cnp.NPY_FLOAT32:
            _euclid_bwd(f32(x), f32(y), f32(go), f32(w), f32(g), NULL, f32(gw), <float> scale,
                        n, k, m)
        else:
            _euclid_bwd(f64(x), f64(y), f64(go), f64(w), f64(g), NULL, f64(gw), scale, n, k, m)


cdef void _euclid_bwd(const floating *x, const floating *y, const floating *go,
                      const floating *w, floating *g, floating *gi, floating *gw,
                      floating scale, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept nogil:
    """gi (when given) := the input gradient; gw (when given) -= scale * the weight gradient."""
    cdef Py_ssize_t r, i, j
    cdef floating xi, s
    for r in range(n):
        for j in range(m):
            g[j] = go[r * m + j] / (y[r * m + j] + <floating> EUCLIDEAN_EPS)
        for i in range(k):
            xi = x[r * k + i]
            if gi != NULL:
                s = 0
                for j in range(m):
                    s = s + (xi - w[i * m + j]) * g[j]
                gi[r * k + i] = s
            if gw != NULL:
                for j in range(m):
                    gw[i * m + j] -= scale * (xi - w[i * m + j]) * g[j]
