"""Kernels of Linear: y = x @ W.T + b, for a vector (k,) or a batch (n, k).

A batch of one runs its forward and gradInput on gemv, which beats a 1-row gemm by an order
of magnitude on small layers; its weight gradient, an outer product, stays a gemm with k = 1,
faster than ger (see _acc_grad_parameters). Larger batches fold the bias into the gemm as
beta = 1.

A float32 forward of a small batch into a wide layer runs transposed: y.T = W x.T into a
scratch the caller keeps (``linear_scratch_size`` says when and how large), then one
transposing copy into y. Where that pays depends on the BLAS kernels, so the rule (``_rule``)
is chosen at import by the core type of scipy's OpenBLAS (``blas_core_name``); ``transposes``
gives it for any core. Measured by bench/bench_linear.py --grid (batch 2-256, layers 64-1024,
1 and 2 threads, OpenBLAS 0.3.30), transposed / plain forward time:
  SkylakeX: plain small batches run OpenBLAS's small-matrix kernels and win until the output
    has about 2048 numbers (n=2, 256 -> 256: 1.27); beyond, transposed wins (n=2, 1024 ->
    1024: 0.27; n=16, 128 -> 128: 0.76; n=64, 1024 -> 512: 0.74) up to n=128 on the widest
    layers (0.86); at n=64 it loses for fan-in 64 (1.04-1.32).
  Haswell: no small-matrix kernels, transposed wins for every layer up to n=32 (0.26-0.93),
    at n=64 from fan-in 128 and 2^15 weights (0.76-0.97; fan-in 64: 0.92-1.13); from n=128
    on it gains under 10% at 1 thread and loses at 2 (0.91-1.45).
A core of other kernels gets only what both rules allow. float64 and the backward gemms
showed no such gap.

Beside OpenBLAS's AVX2 kernels (core Haswell or Zen) a float32 batch of 8 to 128 rows runs
instead the packed kernel of _linear.h (``packs`` gives the rule): no BLAS, the weight read
where it lies, only the batch packed into the scratch, the bias added and the output written
in the same pass. Measured by bench/bench_linear.py --packed (the MLP 784-256-256-10 at
batch 64, 1 thread, AMD EPYC Zen 3, OpenBLAS 0.3.30 Haswell kernels, 6 x 16 blocks): 784 ->
256 at 87 GFLOP/s against 60 (plain sgemm) and 69 (transposed); 256 -> 256 at 81 against 54
and 60; 256 -> 10 at 48 against 30 and 17. On a grid of batches 2-256 and layers 64-1024 it won
from batch 8 to 64 everywhere (0.45-0.98 of the best BLAS call), was even at 128 and lost
at 2-4 (to the transposed call) and at 256 on narrow inputs. On a core with AVX-512 (``WIDE``)
the kernel runs 64-byte blocks: on a Zen 5 core about 220 GFLOP/s on the MLP's layers at
batches 16 to 512, 1.8-1.9x OpenBLAS's Haswell kernels at every batch from 8 to 512 (so up
to 512 rows there), and beside its SkylakeX kernels 3-40% faster than their best call with
256 outputs at batches 8 to 128, slower with 10 outputs (their small-matrix kernels) and even
from batch 256: there the packed kernel takes batches of 8 to 128 through 256 outputs or more.

Beside the same kernels, the float32 weight gradient (with scale_w 1) and gradInput of a batch
of 8 to 128 rows run the packed kernel of _linear_grad.h (``grad_packs`` gives the rule):
both operands packed in one pass each, the sums in registers, added to (or stored into) the
result where it lies. Measured by
bench/bench_linear_grad.py (1 thread, AMD EPYC Zen 3, OpenBLAS 0.3.30 Haswell kernels,
interleaved calls, packing included), packed / sgemm time, two runs: weight gradient of the
MLP's 784 -> 256 at batch 64 0.91-0.94, 256 -> 256 0.91-1.02, 256 -> 10 0.54-0.61, LeNet's
400 -> 120, 120 -> 84, 84 -> 10 at batch 64 0.73-0.98, 784 -> 256 at batch 8 to 32
0.85-0.96 and at 128 0.94-1.03; gradInput 0.51-0.73 at batch 8 to 32, 0.91-0.98 at 64,
0.94 at 128. Batch 256 (0.94-1.08) stays on BLAS, with the forward's bound. In a training
step of that MLP at batch 64 the two save 0-6%.
"""

import ctypes
import glob
import os

cimport numpy as cnp
from libc.string cimport memcpy, memset

from engine.blas cimport floating, gemm, gemv, NoTrans, Trans, cut, run_parts, threads_for
from engine._check cimport (
    float_type, array, array_or_none, f32, f64, ndim, dim, vector_of, rows_of, disjoint_from,
)

cdef extern from "_transpose.h" nogil:
    void pm_transpose_f(const float *src, size_t lds, float *dst, size_t ldd, int rows,
                        int cols, const float *add)

cdef extern from "_linear.h" nogil:
    enum: PM_LINEAR_ROWS
    size_t pm_linear_pack_size(size_t M, size_t K)
    int pm_linear_panels(int M)
    void pm_linear_pack_panels(int M, int K, const float *x, float *pack, int p0, int p1)
    void pm_linear_rows(int M, int N, int K, const float *w, const float *bias,
                        const float *pack, float *y, int r0, int r1)
    int pm_linear_wide()
    void pm_linear_allow_wide(int allow)
    int pm_linear_one(int M, int K, const float *w, const float *x, const float *bias,
                      float *y)

cdef extern from "_linear_grad.h" nogil:
    size_t pm_linear_grad_pack_size(size_t n, int k, int m)
    size_t pm_linear_grad_gp_at(size_t n, int k)
    int pm_linear_grad_strips(int k)
    int pm_linear_grad_groups(int m)
    void pm_linear_grad_pack_go(int n, int m, const float *go, float *gp, int q0, int q1)
    void pm_linear_grad_pack_x(int n, int k, const float *x, float *xp, int s0, int s1)
    void pm_linear_grad_pack_rows(int n, int m, const float *go, float *gp, int q0, int q1)
    void pm_linear_grad_rows(int t, int k, const float *xp, const float *gp, float *out,
                             int r0, int r1, int add)

cnp.import_array()


cdef int _rows(cnp.ndarray x, str what, int k) except -1:
    """Rows of a (k,) or (n, k) argument."""
    cdef int d = ndim(x, what, 1, 2)
    cdef int feats = dim(x, d - 1)
    if feats != k:
        raise ValueError(f"{what} has {feats} features, expected {k}")
    return 1 if d == 1 else dim(x, 0)


cdef inline int _layer(cnp.ndarray w, str w_what, cnp.ndarray b, str b_what, cnp.ndarray x,
                       cnp.ndarray y, str y_what, int *n, int *k) except -1:
    """Sizes of a Linear call: w (m, k), b (m,) or None, x (k,) or (n, k) and y (m,) or
    (n, m) alike; return m."""
    ndim(w, w_what, 2, 2)
    cdef int m = dim(w, 0)
    k[0] = dim(w, 1)
    if b is not None:
        vector_of(b, b_what, m)
    n[0] = _rows(x, "input", k[0])
    rows_of(y, y_what, cnp.PyArray_NDIM(x), n[0], m)
    return m


# OpenBLAS core types by the kernels they run; the rule of the transposed forward is chosen by
# the family of the core scipy's OpenBLAS picked (it can differ from the CPU's best: the
# OPENBLAS_CORETYPE environment variable overrides it).
_AVX512_CORES = frozenset(("skylakex", "cooperlake", "sapphirerapids"))
_AVX2_CORES = frozenset(("haswell", "zen"))

cdef enum:
    FAMILY_UNKNOWN = 0
    FAMILY_AVX512 = 1
    FAMILY_AVX2 = 2


def blas_core_name():
    """The core type whose kernels scipy's OpenBLAS runs ("SkylakeX", "Haswell", ...), asked of
    the library itself; None where that cannot be told (another BLAS, no such symbol)."""
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library asked below)

    libs = os.path.dirname(os.path.abspath(scipy.__file__)) + ".libs"
    paths = sorted(p for p in glob.glob(os.path.join(libs, "*openblas*")) if "64_" not in p)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()  # address perms offset dev inode [path]
                path = fields[5] if len(fields) > 5 else ""
                if "openblas" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename", "openblas_get_corename"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                name = fn()
                return name.decode("ascii", "replace").strip() if name else None
    return None


cdef int _family(core):
    """The kernel family of an OpenBLAS core name; FAMILY_UNKNOWN for None or any other."""
    if not isinstance(core, str):
        return FAMILY_UNKNOWN
    name = core.strip().lower()
    if name in _AVX512_CORES:
        return FAMILY_AVX512
    if name in _AVX2_CORES:
        return FAMILY_AVX2
    return FAMILY_UNKNOWN


cdef bint _rule(int family, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept nogil:
    """Whether an (n, k) float32 batch through an (m, k) weight runs transposed, for a kernel
    family: the rules measured on the grid of the module doc."""
    if family == FAMILY_AVX512:
        # The plain sgemm of a small batch takes OpenBLAS's small-matrix kernels, which beat
        # the transposed call until the output has about 2048 numbers.
        if n < 2:
            return False
        if n < 32:
            return n * m >= 2048 or (k >= 1024 and n * m >= 1024)
        if n < 64:
            return k >= 128 and n * m >= 2048
        if n < 128:
            return k >= 512 and m >= 128
        return n < 256 and k >= 1024 and m >= 256
    if family == FAMILY_AVX2:
        # No small-matrix kernels: the transposed call wins for any small batch.
        if n < 2 or k < 64 or m < 64:
            return False
        if n < 64:
            return True
        return n < 128 and k >= 128 and k * m >= 1 << 15
    return _rule(FAMILY_AVX512, n, k, m) and _rule(FAMILY_AVX2, n, k, m)


cdef int _core_family = _family(blas_core_name())


def own_kernels(core):
    """Whether the engine's AVX2-wide float32 product kernels (the LSTM's [x, h] panels and
    _narrow.h) run beside OpenBLAS core type ``core`` (a name as blas_core_name gives): beside
    its AVX2 kernels they were measured faster; beside its AVX-512 ones OpenBLAS's products
    are (None or an unknown name: never). Linear's packed forward has its own rule (packs)."""
    return _family(core) == FAMILY_AVX2


#: own_kernels of the core this process's OpenBLAS runs
OWN_KERNELS = _core_family == FAMILY_AVX2

cdef enum:
    PACKED_MIN_BATCH = 8
    PACKED_MAX_BATCH = 128
    # With the 64-byte blocks beside OpenBLAS's AVX2 kernels: 1.8-1.9x faster than its best
    # call at every batch measured, 8 to 512 (Zen 5)
    PACKED_MAX_WIDE = 512


def transposes(n, k, m, core):
    """Whether the float32 forward of an (n, k) batch through an (m, k) weight runs transposed
    with the kernels of OpenBLAS core type ``core`` (a name as blas_core_name gives; None or
    an unknown name: the rule for any core)."""
    return bool(_rule(_family(core), n, k, m))


cdef bint _transposes(int t, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept:
    """Whether the forward of an (n, k) batch through an (m, k) weight runs transposed here."""
    return t == cnp.NPY_FLOAT32 and _rule(_core_family, n, k, m)


cdef bint _wide = pm_linear_wide()

#: Whether this core runs the packed forward's 64-byte blocks (AVX-512, _linear.h)
WIDE = bool(_wide)


def allow_wide(bint allow):
    """For tests: False makes the packed forward run its 8-float blocks on any core (the
    rule still reads WIDE), True gives the core its choice back."""
    pm_linear_allow_wide(allow)


cdef bint _packs_rule(int family, bint wide, Py_ssize_t n, Py_ssize_t k,
                      Py_ssize_t m) noexcept nogil:
    """Whether an (n, k) float32 batch through an (m, k) weight runs the packed kernel of
    _linear.h rather than BLAS, for a kernel family of OpenBLAS and whether the core runs
    the kernel's 64-byte blocks: the rule measured by bench/bench_linear.py --packed (see
    the module doc)."""
    if family == FAMILY_AVX2:
        return PACKED_MIN_BATCH <= n <= (PACKED_MAX_WIDE if wide else PACKED_MAX_BATCH) \
            and k >= 1 and m >= 1
    if family == FAMILY_AVX512 and wide:
        # Beside the SkylakeX kernels, on a Zen 5 core: 3-40% faster than OpenBLAS's best
        # call with 256 outputs (batch 8-128), 1.3-2x slower with 10, where its small-matrix
        # kernels run.
        return PACKED_MIN_BATCH <= n <= PACKED_MAX_BATCH and k >= 1 and m >= 256
    return False


def packs(n, k, m, core, wide=None):
    """Whether the float32 forward of an (n, k) batch through an (m, k) weight runs the packed
    kernel (no BLAS) beside OpenBLAS core type ``core`` (a name as blas_core_name gives; None
    or an unknown name: never) on a core that runs its 64-byte blocks or not (``wide``;
    None: this core, WIDE)."""
    return bool(_packs_rule(_family(core), _wide if wide is None else wide, n, k, m))


cdef bint _packs(int t, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept:
    """Whether the forward of an (n, k) batch through an (m, k) weight runs packed here."""
    return t == cnp.NPY_FLOAT32 and _packs_rule(_core_family, _wide, n, k, m)


def linear_scratch_size(input, weight):
    """Elements of the scratch linear_update_output needs for these arguments (0: none).
    Arguments it cannot judge give 0; linear_update_output then says what is wrong."""
    if not (cnp.PyArray_Check(input) and cnp.PyArray_Check(weight)):
        return 0
    cdef cnp.ndarray x = <cnp.ndarray> input, w = <cnp.ndarray> weight
    if cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_NDIM(w) != 2 or \
            cnp.PyArray_TYPE(x) != cnp.PyArray_TYPE(w):
        return 0
    cdef Py_ssize_t n = cnp.PyArray_DIMS(x)[0], k = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t m = cnp.PyArray_DIMS(w)[0]
    cdef int t = cnp.PyArray_TYPE(w)
    if cnp.PyArray_DIMS(w)[1] != k:
        return 0
    if _packs(t, n, k, m):
        return pm_linear_pack_size(n, k)
    if _transposes(t, n, k, m):
        return n * m
    return 0


cdef cnp.ndarray _scratch_for(object scratch, str path, Py_ssize_t need, object a,
                              str a_what, object b, str b_what, object c, str c_what,
                              object d=None, str d_what=None):
    """Check the scratch of a packed or transposed path (``path``, as an error names it):
    float32, 1-D, writable, ``need`` elements or more, apart from every other argument."""
    cdef cnp.ndarray s = array(scratch, "scratch", cnp.NPY_FLOAT32, True)
    ndim(s, "scratch", 1, 1)
    if dim(s, 0) < need:
        raise ValueError(f"scratch has {dim(s, 0)} elements, the {path} needs {need}")
    disjoint_from(s, "scratch", a, a_what, b, b_what, c, c_what, d, d_what)
    return s


cdef bint _float32_pair(object a, object b) noexcept:
    """Whether a and b are both 2-D float32 arrays (the packed gradients' operands)."""
    return (cnp.PyArray_Check(a) and cnp.PyArray_Check(b)
            and cnp.PyArray_NDIM(<cnp.ndarray> a) == 2 and cnp.PyArray_NDIM(<cnp.ndarray> b) == 2
            and cnp.PyArray_TYPE(<cnp.ndarray> a) == cnp.NPY_FLOAT32
            and cnp.PyArray_TYPE(<cnp.ndarray> b) == cnp.NPY_FLOAT32)


def linear_update_output(input, output, weight, bias, scratch=None, transposed=None,
                         packed=None):
    """output := input @ weight.T + bias: (n, k) x (m, k) + (m,) -> (n, m); (k,) -> (m,).

    ``bias`` may be None. ``scratch``, a 1-D array of linear_scratch_size(input, weight)
    elements or more, lets a float32 batch run the packed kernel or the transposed BLAS call
    where the rule of this machine says that is faster; None runs plain BLAS.
    ``packed`` or ``transposed`` True or False overrides the rule (for measuring it): True
    needs a float32 (n, k) batch with n, k >= 1 and a scratch (packed: of
    (n rounded up to 8) * k + 15 elements; transposed: n * m); ``transposed`` given alone
    means not packed.
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray y = array(output, "output", t, True)
    cdef cnp.ndarray b = array_or_none(bias, "bias", t, False)
    cdef int n, k, m = _layer(w, "weight", b, "bias", x, y, "output", &n, &k)
    disjoint_from(y, "output", x, "input", w, "weight", b, "bias")
    cdef cnp.ndarray s = None
    cdef bint batch = cnp.PyArray_NDIM(x) == 2
    if packed is None:
        packed = transposed is None and scratch is not None and batch and _packs(t, n, k, m)
    if transposed is None:
        transposed = (not packed and scratch is not None and batch
                      and _transposes(t, n, k, m))
    if packed and transposed:
        raise ValueError("the forward runs either packed or transposed, not both")
    cdef str path = "packed" if packed else "transposed"
    if (packed or transposed) and (t != cnp.NPY_FLOAT32 or not batch or n == 0 or k == 0
                                   or scratch is None):
        raise ValueError(f"the {path} forward needs a float32 (n, k) batch with n, k >= 1 "
                         f"and a scratch, got {(<object> x).dtype} input of shape "
                         f"{(<object> x).shape}"
                         + (" and no scratch" if scratch is None else ""))
    if packed:
        s = _scratch_for(scratch, "packed forward", pm_linear_pack_size(n, k), y, "output", x,
                         "input", w, "weight", b, "bias")
    elif transposed:
        s = _scratch_for(scratch, "transposed forward", <Py_ssize_t> n * m, y, "output", x,
                         "input", w, "weight", b, "bias")
    cdef bint pack = packed
    with nogil:
        if pack:
            if m > 0:
                _packed_forward(n, m, k, f32(x), f32(w), f32(b), f32(s), f32(y))
        elif s is not None:
            _update_output_t(f32(x), f32(y), f32(w), f32(b), f32(s), n, k, m)
        elif t == cnp.NPY_FLOAT32:
            _update_output(f32(x), f32(y), f32(w), f32(b), n, k, m)
        else:
            _update_output(f64(x), f64(y), f64(w), f64(b), n, k, m)


cdef void _update_output(const floating *x, floating *y, const floating *w,
                         const floating *b, int n, int k, int m) noexcept nogil:
    cdef int i
    cdef floating beta = 0
    if n == 0 or m == 0:
        return
    if floating is float:  # a batch of one on a core with AVX-512: _linear.h's dot products
        if n == 1 and k > 0 and pm_linear_one(m, k, w, x, b, y):
            return
    if b != NULL:
        for i in range(n):
            memcpy(y + <size_t> i * m, b, m * sizeof(floating))
        beta = 1
    elif k == 0:
        memset(y, 0, <size_t> n * m * sizeof(floating))
    if k == 0:
        return
    if n == 1:
        gemv(NoTrans, m, k, <floating> 1, w, k, x, 1, beta, y, 1)
    else:
        gemm(NoTrans, Trans, n, m, k, <floating> 1, x, k, w, k, beta, y, m)


cdef void _update_output_t(const float *x, float *y, const float *w, const float *b,
                           float *yt, int n, int k, int m) noexcept nogil:
    """y.T = W x.T (+ b down each row of y.T) into yt, (m, n); then y = yt.T. k, n >= 1."""
    cdef int i, j
    cdef float beta = 0
    cdef float bi
    if b != NULL:
        for i in range(m):
            bi = b[i]
            for j in range(n):
                yt[<size_t> i * n + j] = bi
        beta = 1
    gemm(NoTrans, Trans, m, n, k, <float> 1, w, k, x, k, beta, yt, n)
    pm_transpose_f(yt, n, y, m, m, n, NULL)


def linear_grad_input_scratch_size(grad_output, weight):
    """Elements of the scratch linear_update_grad_input needs for these arguments to run
    packed (0: it runs on BLAS). Arguments it cannot judge give 0; linear_update_grad_input
    then says what is wrong."""
    if not _float32_pair(grad_output, weight):
        return 0
    cdef cnp.ndarray go = <cnp.ndarray> grad_output, w = <cnp.ndarray> weight
    cdef Py_ssize_t n = cnp.PyArray_DIMS(go)[0], m = cnp.PyArray_DIMS(go)[1]
    cdef Py_ssize_t k = cnp.PyArray_DIMS(w)[1]
    if cnp.PyArray_DIMS(w)[0] != m or not _grad_packs_rule(_core_family, n, k, m):
        return 0
    return pm_linear_grad_pack_size(m, k, n)


def linear_update_grad_input(input, grad_output, grad_input, weight, scratch=None,
                             packed=None):
    """grad_input := grad_output @ weight: (n, m) x (m, k) -> (n, k); (m,) -> (k,).

    ``scratch``, a 1-D float32 array of linear_grad_input_scratch_size(grad_output, weight)
    elements or more, lets a float32 batch run the packed kernel of _linear_grad.h where the
    rule of this machine says that is faster; None runs BLAS. ``packed`` True or False
    overrides the rule (for measuring it): True needs a float32 (n, m) batch with n, k, m >= 1
    and a scratch.
    """
    cdef int t = float_type(weight, "weight")
    cdef cnp.ndarray w = array(weight, "weight", t, False)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gi = array(grad_input, "gradInput", t, True)
    cdef int n, k, m = _layer(w, "weight", None, None, x, go, "gradOutput", &n, &k)
    rows_of(gi, "gradInput", cnp.PyArray_NDIM(x), n, k)
    disjoint_from(gi, "gradInput", go, "gradOutput", w, "weight")
    cdef bint batch = cnp.PyArray_NDIM(x) == 2
    if packed is None:
        packed = (scratch is not None and batch and t == cnp.NPY_FLOAT32
                  and _grad_packs_rule(_core_family, n, k, m))
    cdef cnp.ndarray s = None
    if packed:
        if t != cnp.NPY_FLOAT32 or not batch or n == 0 or k == 0 or m == 0 or scratch is None:
            raise ValueError(
                "the packed gradInput needs a float32 (n, m) gradOutput with n, k, m >= 1 and "
                f"a scratch, got {(<object> go).dtype} gradOutput of shape "
                f"{(<object> go).shape}, weight of shape {(<object> w).shape}"
                + (" and no scratch" if scratch is None else ""))
        s = _scratch_for(scratch, "packed gradInput", pm_linear_grad_pack_size(m, k, n), gi,
                         "gradInput", go, "gradOutput", w, "weight")
    cdef bint pack = packed
    with nogil:
        if pack:
            _packed_product(n, m, k, f32(go), f32(w), f32(gi), f32(s), False)
        elif t == cnp.NPY_FLOAT32:
            _update_grad_input(f32(go), f32(gi), f32(w), n, k, m)
        else:
            _update_grad_input(f64(go), f64(gi), f64(w), n, k, m)


cdef void _update_grad_input(const floating *go, floating *gi, const floating *w,
                             int n, int k, int m) noexcept nogil:
    if n == 0 or k == 0:
        return
    if m == 0:
        memset(gi, 0, <size_t> n * k * sizeof(floating))
    elif n == 1:
        gemv(Trans, m, k, <floating> 1, w, k, go, 1, <floating> 0, gi, 1)
    else:
        gemm(NoTrans, NoTrans, n, k, m, <floating> 1, go, m, w, k, <floating> 0, gi, k)


cdef bint _grad_packs_rule(int family, Py_ssize_t n, Py_ssize_t k, Py_ssize_t m) noexcept nogil:
    """Whether the float32 gradients of a batch of n rows through an (m, k) weight (the weight
    gradient and gradInput) run the packed kernel of _linear_grad.h rather than BLAS, for a
    kernel family of OpenBLAS: the rule measured by bench/bench_linear_grad.py (see the
    module doc)."""
    if family == FAMILY_AVX2:
        return PACKED_MIN_BATCH <= n <= PACKED_MAX_BATCH and k >= 1 and m >= 1
    return False


def grad_packs(n, k, m, core):
    """Whether the float32 weight gradient and gradInput of a batch of n rows through an
    (m, k) weight run the packed kernel (no BLAS) beside OpenBLAS core type ``core`` (a name
    as blas_core_name gives; None or an unknown name: never)."""
    return bool(_grad_packs_rule(_family(core), n, k, m))


def linear_grad_scratch_size(input, grad_weight):
    """Elements of the scratch linear_acc_grad_parameters needs for these arguments to run
    packed (0: it runs on BLAS). Arguments it cannot judge give 0; linear_acc_grad_parameters
    then says what is wrong."""
    if not _float32_pair(input, grad_weight):
        return 0
    cdef cnp.ndarray x = <cnp.ndarray> input, gw = <cnp.ndarray> grad_weight
    cdef Py_ssize_t n = cnp.PyArray_DIMS(x)[0], k = cnp.PyArray_DIMS(x)[1]
    cdef Py_ssize_t m = cnp.PyArray_DIMS(gw)[0]
    if cnp.PyArray_DIMS(gw)[1] != k or not _grad_packs_rule(_core_family, n, k, m):
        return 0
    return pm_linear_grad_pack_size(n, k, m)


def linear_acc_grad_parameters(input, grad_output, grad_weight, grad_bias,
                               double scale_w, double scale_b, scratch=None, packed=None):
    """grad_weight += scale_w * grad_output.T @ input; grad_bias += scale_b * sum(grad_output).

    (n, k), (n, m) -> (m, k), (m,). A scale of 0 skips its term; ``grad_bias`` may be None.
    ``scratch``, a 1-D float32 array of linear_grad_scratch_size(input, grad_weight) elements
    or more, lets a float32 batch with scale_w 1 run the packed kernel where the rule of this
    machine says that is faster; None runs BLAS. ``packed`` True or False overrides the rule
    (for measuring it): True needs a float32 (n, k) batch with n, k, m >= 1, scale_w 1 and a
    scratch.
    """
    cdef int t = float_type(grad_weight, "gradWeight")
    cdef cnp.ndarray gw = array(grad_weight, "gradWeight", t, True)
    cdef cnp.ndarray x = array(input, "input", t, False)
    cdef cnp.ndarray go = array(grad_output, "gradOutput", t, False)
    cdef cnp.ndarray gb = array_or_none(grad_bias, "gradBias", t, True)
    cdef int n, k, m = _layer(gw, "gradWeight", gb, "gradBias", x, go, "gradOutput", &n, &k)
    disjoint_from(gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias")
    disjoint_from(gb, "gradBias", x, "input", go, "gradOutput")
    cdef bint batch = cnp.PyArray_NDIM(x) == 2
    if packed is None:
        packed = (scratch is not None and batch and t == cnp.NPY_FLOAT32 and scale_w == 1
                  and _grad_packs_rule(_core_family, n, k, m))
    cdef cnp.ndarray s = None
    if packed:
        if t != cnp.NPY_FLOAT32 or not batch or n == 0 or k == 0 or m == 0 or scale_w != 1 \
                or scratch is None:
            raise ValueError(
                "the packed weight gradient needs a float32 (n, k) batch with n, k >= 1, "
                f"m >= 1, scale_w 1 and a scratch, got {(<object> x).dtype} input of shape "
                f"{(<object> x).shape}, gradWeight of shape {(<object> gw).shape}, scale_w "
                f"{scale_w}" + (" and no scratch" if scratch is None else ""))
        s = _scratch_for(scratch, "packed weight gradient", pm_linear_grad_pack_size(n, k, m),
                         gw, "gradWeight", x, "input", go, "gradOutput", gb, "gradBias")
    cdef bint pack = packed
    with nogil:
        if pack:
            _packed_product(n, m, k, f32(go), f32(x), f32(gw), f32(s), True)
            _acc_grad_parameters(f32(x), f32(go), NULL, f32(gb), 0, <float> scale_b, n, k, m)
        elif t == cnp.NPY_FLOAT32:
            _acc_grad_parameters(f32(x), f32(go), f32(gw), f32(gb), <float> scale_w,
                                 <float> scale_b, n, k, m)
        else:
            _acc_grad_parameters(f64(x), f64(go), f64(gw), f64(gb), scale_w, scale_b, n, k, m)


cdef void _acc_grad_parameters(const floating *x, const floating *go, floating *gw,
                               floating *gb, floating scale_w, floating scale_b,
                               int n, int k, int m) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating *row
    if n == 0 or m == 0:
        return
    if scale_w != 0 and k != 0:
        # For one row this is the outer product; OpenBLAS's gemm with k = 1 runs it about
        # 1.7x faster than its ger (measured on 0.3.30, SkylakeX kernels).
        gemm(Trans, NoTrans, m, k, n, scale_w, go, m, x, k, <floating> 1, gw, k)
    if scale_b != 0 and gb != NULL:
        # The rows added one after the other, as n axpy calls would, in one loop: the MLP
        # 784-256-256-10 at batch 64 spent about 35k instructions a step in 192 axpy calls.
        if scale_b == 1:
            for i in range(n):
                row = go + i * m
                for j in range(m):
                    gb[j] += row[j]
        else:
            for i in range(n):
                row = go + i * m
                for j in range(m):
                    gb[j] += scale_b * row[j]


# -- the packed forward on the engine's threads ---------------------------------------------
# Cut by weight rows (after the batch panels are packed, cut the same way): each output is
# still one sum in k order, so the numbers are those of one thread, bit for bit.

cdef struct Packed:
    # The packed forward's arguments: x (n, k), w (m, k), bias (m,) or NULL, y (n, m).
    int n, m, k
    const float *x
    const float *w
    const float *b
    float *pack
    float *y


cdef void _pack_part(void *arg, int c, int chunks) noexcept nogil:
    cdef Packed *t = <Packed *> arg
    cdef int panels = pm_linear_panels(t.n)
    pm_linear_pack_panels(t.n, t.k, t.x, t.pack, cut(panels, c, chunks, 1),
                          cut(panels, c + 1, chunks, 1))


cdef void _rows_part(void *arg, int c, int chunks) noexcept nogil:
    cdef Packed *t = <Packed *> arg
    cdef int lo = cut(t.m, c, chunks, PM_LINEAR_ROWS)
    cdef int hi = cut(t.m, c + 1, chunks, PM_LINEAR_ROWS)
    if hi > lo:
        pm_linear_rows(t.n, t.m, t.k, t.w, t.b, t.pack, t.y, lo, hi)


cdef void _packed_forward(int n, int m, int k, const float *x, const float *w,
                          const float *b, float *pack, float *y) noexcept nogil:
    """y := x w.T + b on the packed kernel of _linear.h."""
    cdef Packed t
    t.n, t.m, t.k, t.x, t.w, t.b, t.pack, t.y = n, m, k, x, w, b, pack, y
    cdef int parts = threads_for(<double> n * m * k)
    cdef int panels = pm_linear_panels(n)
    if parts < 2:
        _pack_part(&t, 0, 1)
        _rows_part(&t, 0, 1)
        return
    run_parts(_pack_part, &t, parts if parts < panels else panels)
    run_parts(_rows_part, &t, parts)


# -- the packed gradients, on the engine's threads where they are large --------------------
# Both are out[r, c] (+)= sum_t a[t, r] b[t, c] with a from gradOutput: the operands are packed
# in parts, then out is cut by rows: each element is still one sum in t order, the numbers
# of one thread, bit for bit.

cdef struct Product:
    # The weight gradient (add): out = gw (m, k) += go.T x, t = n, go packed by columns,
    # b = x (n, k). gradInput: out = gi (n, k) := go w, t = m, go packed by rows, b = w (m, k).
    # go is (n, m) either way; bp and ap: the packed b and go in the scratch.
    int n, m, k, add
    const float *go
    const float *b
    float *out
    float *bp
    float *ap


cdef void _product_pack_part(void *arg, int c, int chunks) noexcept nogil:
    cdef Product *p = <Product *> arg
    cdef int t = p.n if p.add else p.m, rows = p.m if p.add else p.n
    cdef int groups = pm_linear_grad_groups(rows), strips = pm_linear_grad_strips(p.k)
    cdef int q0 = cut(groups, c, chunks, 1), q1 = cut(groups, c + 1, chunks, 1)
    if p.add:
        pm_linear_grad_pack_go(p.n, p.m, p.go, p.ap, q0, q1)
    else:
        pm_linear_grad_pack_rows(p.n, p.m, p.go, p.ap, q0, q1)
    pm_linear_grad_pack_x(t, p.k, p.b, p.bp, cut(strips, c, chunks, 1),
                          cut(strips, c + 1, chunks, 1))


cdef void _product_rows_part(void *arg, int c, int chunks) noexcept nogil:
    cdef Product *p = <Product *> arg
    cdef int t = p.n if p.add else p.m, rows = p.m if p.add else p.n
    cdef int lo = cut(rows, c, chunks, 4), hi = cut(rows, c + 1, chunks, 4)
    if hi > lo:
        pm_linear_grad_rows(t, p.k, p.bp, p.ap, p.out, lo, hi, p.add)


cdef void _packed_product(int n, int m, int k, const float *go, const float *b, float *out,
                          float *scratch, bint add) noexcept nogil:
    """gw += go.T x (add; b = x) or gi := go w (b = w) on the packed kernel of
    _linear_grad.h (n, k, m >= 1)."""
    cdef Product p
    p.n, p.m, p.k, p.add, p.go, p.b, p.out = n, m, k, add, go, b, out
    p.bp, p.ap = scratch, scratch + pm_linear_grad_gp_at(n if add else m, k)
    cdef int parts = threads_for(<double> n * m * k)
    if parts < 2:
        _product_pack_part(&p, 0, 1)
        _product_rows_part(&p, 0, 1)
        return
    run_parts(_product_pack_part, &p, parts)
    run_parts(_product_rows_part, &p, parts)
