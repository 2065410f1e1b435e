"""Linear's kernels against NumPy: both dtypes, vector and batch, empty sizes, refusals."""

import numpy as np
import pytest
from pymodules.engine.linear import (
    blas_core_name,
    linear_acc_grad_parameters,
    linear_scratch_size,
    linear_update_grad_input,
    linear_update_output,
    packs,
    transposes,
)
from pymodules.engine.regularizer import acc_regularization
from tolerance import abs_gemm, assert_reduction_close

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _r(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape", [(4,), (1, 4), (5, 4), (0, 4)])
@pytest.mark.parametrize("withBias", [True, False])
def test_against_numpy(dtype, xshape, withBias, rng):
    w, b = _r(rng, (3, 4), dtype), _r(rng, 3, dtype) if withBias else None
    x = _r(rng, xshape, dtype)
    go = _r(rng, xshape[:-1] + (3,), dtype)
    y = np.full(xshape[:-1] + (3,), np.nan, dtype)
    linear_update_output(x, y, w, b)
    expected = x.astype(np.float64) @ w.T + (b if withBias else 0)
    assert_reduction_close(y, expected, dtype, 5, abs_gemm(x, w.T) + (abs(b) if withBias else 0),
                           TOL[np.float64])

    gi = np.full(xshape, np.nan, dtype)
    linear_update_grad_input(x, go, gi, w)
    assert_reduction_close(gi, go.astype(np.float64) @ w, dtype, 3, abs_gemm(go, w),
                           TOL[np.float64])

    gw, gb = _r(rng, (3, 4), dtype), _r(rng, 3, dtype) if withBias else None
    gw0, gb0 = gw.copy(), None if gb is None else gb.copy()
    linear_acc_grad_parameters(x, go, gw, gb, 0.5, 2.0)
    go2, x2 = go.reshape(-1, 3).astype(np.float64), x.reshape(-1, 4)
    n = go2.shape[0]
    assert_reduction_close(gw, gw0 + 0.5 * go2.T @ x2, dtype, n + 1,
                           abs(gw0) + 0.5 * abs_gemm(go2.T, x2), TOL[np.float64])
    if withBias:
        assert_reduction_close(gb, gb0 + 2.0 * go2.sum(0), dtype, n + 1,
                               abs(gb0) + 2.0 * abs(go2).sum(0), TOL[np.float64])


def test_scale_zero_skips(rng):
    x, go = _r(rng, (2, 4), np.float64), _r(rng, (2, 3), np.float64)
    gw, gb = np.full((3, 4), np.nan), np.full(3, np.nan)
    linear_acc_grad_parameters(x, go, gw, gb, 0.0, 0.0)  # nan stays nan: nothing was touched
    assert np.isnan(gw).all() and np.isnan(gb).all()


def test_empty_features(rng):
    y = np.full((2, 3), np.nan)
    linear_update_output(np.zeros((2, 0)), y, np.zeros((3, 0)), None)
    np.testing.assert_array_equal(y, 0)
    b = _r(rng, 3, np.float64)
    linear_update_output(np.zeros((2, 0)), y, np.zeros((3, 0)), b)
    np.testing.assert_array_equal(y, np.tile(b, (2, 1)))


def _args(rng):
    w, b = _r(rng, (3, 4), np.float64), _r(rng, 3, np.float64)
    return _r(rng, (2, 4), np.float64), np.zeros((2, 3)), w, b


@pytest.mark.parametrize("mutate, error, match", [
    (lambda a: a.update(x=np.zeros((2, 5))), ValueError, "input has 5 features, expected 4"),
    (lambda a: a.update(x=np.zeros((2, 2, 4))), ValueError, r"input must be 1-D to 2-D, got 3-D"),
    (lambda a: a.update(x=np.float64(1.0)), TypeError, "input must be a numpy.ndarray"),
    (lambda a: a.update(x=np.zeros(())), ValueError, "got 0-D"),
    (lambda a: a.update(x=np.zeros((2, 4), np.int64)), TypeError,
     "input has dtype int64, expected float64"),
    (lambda a: a.update(x=np.zeros((2, 4), np.float32)), TypeError,
     "input has dtype float32, expected float64"),
    (lambda a: a.update(x=None), TypeError, "input must be a numpy.ndarray, got NoneType"),
    (lambda a: a.update(y=np.zeros((2, 4))), ValueError,
     r"output has shape \(2, 4\), expected \(2, 3\)"),
    (lambda a: a.update(y=np.zeros((3, 2)).T), ValueError, "output is not C-contiguous"),
    (lambda a: a.update(b=np.zeros(4)), ValueError, r"bias has shape \(4,\), expected \(3,\)"),
    (lambda a: a.update(w=np.zeros(12)), ValueError, "weight must be 2-D, got 1-D"),
])
def test_update_output_refusals(mutate, error, match, rng):
    x, y, w, b = _args(rng)
    a = dict(x=x, y=y, w=w, b=b)
    mutate(a)
    with pytest.raises(error, match=match):
        linear_update_output(a["x"], a["y"], a["w"], a["b"])


def test_read_only_and_aliasing(rng):
    x, y, w, b = _args(rng)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="output is read-only"):
        linear_update_output(x, y, w, b)
    sq_w = _r(rng, (4, 4), np.float64)
    x4 = _r(rng, (2, 4), np.float64)
    with pytest.raises(ValueError, match="output overlaps input"):
        linear_update_output(x4, x4, sq_w, None)
    with pytest.raises(ValueError, match="gradInput overlaps gradOutput"):
        linear_update_grad_input(x4, x4, x4, sq_w)
    flat = np.zeros(15)
    gw, gb = flat[:12].reshape(3, 4), flat[11:14]
    with pytest.raises(ValueError, match="gradWeight overlaps gradBias"):
        linear_acc_grad_parameters(x, np.zeros((2, 3)), gw, gb, 1.0, 1.0)
    # Adjacent views of one buffer (as getParameters makes them) are fine.
    linear_acc_grad_parameters(x, np.ones((2, 3)), flat[:12].reshape(3, 4), flat[12:15], 1.0, 1.0)
    np.testing.assert_allclose(flat[12:], 2.0)


def test_grad_shapes_checked(rng):
    x, _, w, _ = _args(rng)
    with pytest.raises(ValueError, match=r"gradOutput has shape \(2, 2\), expected \(2, 3\)"):
        linear_update_grad_input(x, np.zeros((2, 2)), np.zeros((2, 4)), w)
    with pytest.raises(ValueError, match=r"gradInput has shape \(2, 3\), expected \(2, 4\)"):
        linear_update_grad_input(x, np.zeros((2, 3)), np.zeros((2, 3)), w)
    with pytest.raises(ValueError, match=r"gradBias has shape \(2,\), expected \(3,\)"):
        linear_acc_grad_parameters(x, np.zeros((2, 3)), np.zeros((3, 4)), np.zeros(2), 1, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regularization(dtype, rng):
    w = _r(rng, (3, 4), dtype)
    w[0, 0] = 0
    g = _r(rng, (3, 4), dtype)
    expected = g + 0.5 * (0.1 * np.sign(w) + 0.2 * w)
    acc_regularization(w, g, 0.1, 0.2, 0.5)
    np.testing.assert_allclose(g, expected, rtol=TOL[dtype], atol=TOL[dtype])
    with pytest.raises(ValueError, match="gradWeight overlaps weight"):
        acc_regularization(w, w, 0.1, 0.2, 1.0)
    with pytest.raises(ValueError, match=r"gradWeight has shape \(4, 3\), expected \(3, 4\)"):
        acc_regularization(w, np.zeros((4, 3), dtype), 0.1, 0.2, 1.0)


# (n, k, m): transposed with SkylakeX kernels, with Haswell kernels (bench_linear.py --grid).
RULE = [
    ((16, 128, 128), True, True), ((4, 1024, 256), True, True), ((64, 784, 256), True, True),
    ((2, 1024, 1024), True, True), ((127, 1024, 1024), True, True),
    ((128, 1024, 1024), True, False), ((4, 784, 256), False, True), ((2, 64, 64), False, True),
    ((8, 128, 128), False, True), ((32, 64, 1024), False, True), ((32, 64, 256), False, True),
    ((32, 128, 64), True, True),
    ((64, 64, 512), False, False), ((64, 128, 256), False, True), ((64, 128, 128), False, False),
    ((64, 64, 64), False, False), ((64, 256, 1024), False, True), ((256, 1024, 1024), False, False),
    ((32, 256, 10), False, False), ((1, 1024, 1024), False, False)]


@pytest.mark.parametrize(("shape", "skylakex", "haswell"), RULE)
def test_transposes_rule_per_core(shape, skylakex, haswell):
    n, k, m = shape
    assert transposes(n, k, m, "SkylakeX") is skylakex
    assert transposes(n, k, m, "Cooperlake") is skylakex  # the same kernels
    assert transposes(n, k, m, "Haswell") is haswell
    assert transposes(n, k, m, "Zen") is haswell
    # a core of unknown kernels: only where both agree it pays
    assert transposes(n, k, m, None) is (skylakex and haswell)
    assert transposes(n, k, m, "Sandybridge") is (skylakex and haswell)


def test_blas_core_name_is_the_one_scipy_runs():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.cython_blas  # noqa: F401

    cores = {info["filepath"]: info.get("architecture")
             for info in threadpoolctl.threadpool_info() if info["internal_api"] == "openblas"}
    scipys = [core for path, core in cores.items() if "scipy.libs" in path or
              ("scipy_openblas" in path and "64_" not in path)]
    if not scipys:
        pytest.skip(f"scipy's BLAS is not a known OpenBLAS here: {cores}")
    assert blas_core_name() == scipys[0]


@pytest.mark.parametrize(("shape", "skylakex", "haswell"), RULE)
def test_scratch_size_rule(shape, skylakex, haswell, rng):
    n, k, m = shape
    x, w = _r(rng, (n, k), np.float32), _r(rng, (m, k), np.float32)
    core = blas_core_name()
    transposed = transposes(n, k, m, core)
    packed_size = (n + 7) // 8 * 8 * k + 15  # + 15: the pack starts on a 64-byte line
    assert linear_scratch_size(x, w) == (packed_size if packs(n, k, m, core) else
                                         n * m if transposed else 0)
    assert linear_scratch_size(x.astype(np.float64), w.astype(np.float64)) == 0
    assert linear_scratch_size(x[0], w) == 0
    assert linear_scratch_size(x, w[:, :-1]) == 0
    assert linear_scratch_size(x.tolist(), w) == 0


@pytest.mark.parametrize(("n", "k", "m"), [(16, 128, 128), (5, 1024, 256), (64, 784, 256),
                                           (3, 7, 5), (128, 1024, 1024)])
@pytest.mark.parametrize("withBias", [True, False])
def test_transposed_forward_against_numpy(n, k, m, withBias, rng):
    """Both forwards, forced, whatever the rule of this core says."""
    x, w = _r(rng, (n, k), np.float32), _r(rng, (m, k), np.float32)
    b = _r(rng, m, np.float32) if withBias else None
    scratch = np.full(n * m + 3, np.nan, np.float32)
    y = np.full((n, m), np.nan, np.float32)
    linear_update_output(x, y, w, b, scratch, True)
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    magnitude = abs_gemm(x, w.T) + (0 if b is None else abs(b))
    assert_reduction_close(y, expected, np.float32, k + 1, magnitude)
    assert np.isnan(scratch[n * m:]).all()
    plain = np.full_like(y, np.nan)
    linear_update_output(x, plain, w, b, scratch, False)
    assert_reduction_close(plain, expected, np.float32, k + 1, magnitude)
    # each within the bound of the exact result, so within twice of each other
    assert_reduction_close(y, plain, np.float32, k + 1, 2 * magnitude)
    default = np.full_like(y, np.nan)
    if not packs(n, k, m, blas_core_name()):
        linear_update_output(x, default, w, b, scratch)
        np.testing.assert_array_equal(default, y if transposes(n, k, m, blas_core_name())
                                      else plain)


def test_forced_transposed_refusals(rng):
    x, w = _r(rng, (16, 128), np.float32), _r(rng, (128, 128), np.float32)
    y, s = np.full((16, 128), 7, np.float32), np.zeros(16 * 128, np.float32)
    for args, match in [
            ((x.astype(np.float64), y.astype(np.float64), w.astype(np.float64), None,
              s.astype(np.float64)), "float32 .* got float64 input of shape \\(16, 128\\)"),
            ((x[0], y[0], w, None, s), r"got float32 input of shape \(128,\)"),
            ((x, y, w, None, None), "and no scratch"),
            ((x[:0], y[:0], w, None, s), r"n, k >= 1")]:
        with pytest.raises(ValueError, match=match):
            linear_update_output(*args, True)
        assert np.all(y == 7)
    linear_update_output(x, y, w, None, None, False)  # forced plain needs no scratch
    assert_reduction_close(y, x.astype(np.float64) @ w.T, np.float32, 128, abs_gemm(x, w.T))


def test_transposed_forward_refusals(rng):
    x, w = _r(rng, (16, 128), np.float32), _r(rng, (128, 128), np.float32)
    y = np.zeros((16, 128), np.float32)
    good = np.zeros(16 * 128, np.float32)
    for scratch, error, match in [
            (np.zeros(16 * 128 - 1, np.float32), ValueError, "scratch has 2047 elements"),
            (np.zeros(16 * 128, np.float64), TypeError, "scratch"),
            (np.zeros((16, 128), np.float32), ValueError, "scratch"),
            (y.reshape(-1), ValueError, "scratch"),
            (x.reshape(-1), ValueError, "scratch"),
            ([0.0] * (16 * 128), TypeError, "scratch")]:
        y[...] = 7
        with pytest.raises(error, match=match):
            linear_update_output(x, y, w, None, scratch)
        assert np.all(y == 7)
    ro = good.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="scratch"):
        linear_update_output(x, y, w, None, ro)
    # where the forward does not run transposed, the scratch is not used at all
    small = _r(rng, (4, 8), np.float32)
    out = np.zeros((4, 128), np.float32)
    linear_update_output(small, out, _r(rng, (128, 8), np.float32), None, np.zeros(0, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_bias_gradient_adds_the_column_sums(dtype, scale):
    """gradBias += scale * the sum of gradOutput's rows, onto what it holds (37 rows, 19
    columns: vector tails), and a scale of 0 leaves it alone."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((37, 5)).astype(dtype)
    go = rng.standard_normal((37, 19)).astype(dtype)
    gw, gb = np.zeros((19, 5), dtype), rng.standard_normal(19).astype(dtype)
    want = gb.astype(np.float64) + scale * go.astype(np.float64).sum(0)
    linear_acc_grad_parameters(x, go, gw, gb, 1.0, scale)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gb, want, rtol=tol, atol=tol)
    before = gb.copy()
    linear_acc_grad_parameters(x, go, gw, gb, 1.0, 0.0)
    np.testing.assert_array_equal(gb, before)
