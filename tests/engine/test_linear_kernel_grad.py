"""Linear's packed float32 weight gradient and gradInput (engine/_linear_grad.h) against NumPy
and the BLAS path: odd sizes on every edge of their blocks, accumulation, NaN and infinities,
refusals, the rules, threads, no allocation."""

import tracemalloc

import numpy as np
import pytest
from pymodules.engine.linear import (
    blas_core_name,
    grad_packs,
    linear_acc_grad_parameters,
    linear_grad_input_scratch_size,
    linear_grad_scratch_size,
    linear_update_grad_input,
)
from pymodules.engine.pool import set_threads
from tolerance import abs_gemm, assert_reduction_close

import pymodules as pm


def _r(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _pack_size(n, k, m):
    """xp: n rows of 24 per strip of 24 columns; gp: n rows of 4 per group of 4 gw rows."""
    return n * 24 * -(-k // 24) + n * 4 * -(-m // 4)


def _packed(x, go, gw, gb=None, scale_b=1.0, extra=5):
    """The forced packed gradient into gw (and gb), its scratch padded with NaN that must
    stay untouched."""
    n, k = x.shape
    m = go.shape[1]
    need = _pack_size(n, k, m)
    scratch = np.full(need + extra, np.nan, np.float32)
    linear_acc_grad_parameters(x, go, gw, gb, 1.0, scale_b, scratch, True)
    assert np.isnan(scratch[need:]).all()


# batch: 1 to 70 across the blocks' edges; features: every rest modulo the 8-column vectors
# and 24-column strips (the last strip padded); outputs: every rest modulo 4 gw rows
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 23, 24, 25, 63, 64, 65, 70])
@pytest.mark.parametrize(("k", "m"), [(1, 1), (5, 3), (8, 4), (13, 6), (16, 5), (24, 8),
                                      (33, 7), (47, 9), (100, 10), (257, 11)])
def test_packed_against_numpy_and_blas(n, k, m, rng):
    x, go = _r(rng, (n, k)), _r(rng, (n, m))
    start = _r(rng, (m, k))
    gw = start.copy()
    _packed(x, go, gw)
    expected = start.astype(np.float64) + go.T.astype(np.float64) @ x.astype(np.float64)
    magnitude = abs_gemm(go.T, x) + abs(start)
    assert_reduction_close(gw, expected, np.float32, n + 1, magnitude)
    blas = start.copy()
    linear_acc_grad_parameters(x, go, blas, None, 1.0, 0.0, None, False)
    assert_reduction_close(gw, blas, np.float32, n + 1, 2 * magnitude)


@pytest.mark.parametrize(("n", "k", "m"), [(64, 784, 256), (64, 256, 256), (64, 256, 10),
                                           (128, 1024, 130), (64, 400, 120), (64, 84, 10)])
def test_packed_layer_sizes_and_bias(n, k, m, rng):
    x, go = _r(rng, (n, k)), _r(rng, (n, m))
    gw, gb = np.zeros((m, k), np.float32), np.full(m, 0.5, np.float32)
    _packed(x, go, gw, gb, 0.25)
    expected = go.T.astype(np.float64) @ x.astype(np.float64)
    assert_reduction_close(gw, expected, np.float32, n, abs_gemm(go.T, x))
    assert_reduction_close(gb, 0.5 + 0.25 * go.astype(np.float64).sum(0), np.float32, n + 1,
                           0.5 + 0.25 * abs(go).sum(0))


def test_packed_accumulates_over_calls(rng):
    """Each call adds to what the gradient holds, as BLAS's beta = 1 does."""
    x, go = _r(rng, (20, 30)), _r(rng, (20, 9))
    gw = np.zeros((9, 30), np.float32)
    for _ in range(3):
        _packed(x, go, gw)
    expected = 3 * (go.T.astype(np.float64) @ x.astype(np.float64))
    assert_reduction_close(gw, expected, np.float32, 3 * 20, 3 * abs_gemm(go.T, x))


def test_nan_and_infinity_propagate(rng):
    n, k, m = 30, 21, 9
    x, go = _r(rng, (n, k)), _r(rng, (n, m))
    start = np.zeros((m, k), np.float32)
    x[4, 2] = np.nan        # column 2 of gw: all NaN
    go[7, 6] = np.inf       # row 6: inf or NaN
    start[8, 20] = np.nan   # an old NaN stays
    x[27, 19] = np.inf      # column 19: +-inf where go[27] != 0
    gw = start.copy()
    _packed(x, go, gw)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = start + go.T.astype(np.float64) @ x.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(gw), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(gw), np.isinf(expected))
    np.testing.assert_array_equal(np.sign(gw[np.isinf(gw)]),
                                  np.sign(expected[np.isinf(expected)]))
    assert np.isnan(gw[:, 2]).all() and np.isnan(gw[8, 20])
    finite = np.isfinite(expected)
    assert_reduction_close(gw[finite], expected[finite], np.float32, n,
                           abs_gemm(np.nan_to_num(go).T, np.nan_to_num(x))[finite])


def test_packed_refusals(rng):
    x, go = _r(rng, (20, 30)), _r(rng, (20, 11))
    gw = np.full((11, 30), 7, np.float32)
    need = _pack_size(20, 30, 11)
    for args, error, match in [
            ((x, go, gw, None, 1.0, 1.0, np.zeros(need - 1, np.float32)), ValueError,
             f"scratch has {need - 1} elements, the packed weight gradient needs {need}"),
            ((x, go, gw, None, 1.0, 1.0, None), ValueError,
             "packed weight gradient .* and no scratch"),
            ((x, go, gw, None, 0.5, 1.0, np.zeros(need, np.float32)), ValueError,
             "scale_w 0.5"),
            ((x[:0], go[:0], gw, None, 1.0, 1.0, np.zeros(need, np.float32)), ValueError,
             "n, k >= 1"),
            ((x, go, gw, None, 1.0, 1.0, np.zeros(need, np.float64)), TypeError, "scratch"),
            ((x, go, gw, None, 1.0, 1.0, np.zeros((need, 1), np.float32)), ValueError,
             "scratch"),
            ((np.asfortranarray(x), go, gw, None, 1.0, 1.0, np.zeros(need, np.float32)),
             ValueError, "input"),
            ((x, go[:, ::-1], gw, None, 1.0, 1.0, np.zeros(need, np.float32)), ValueError,
             "gradOutput"),
            ((x, go[:, :10], gw, None, 1.0, 1.0, np.zeros(need, np.float32)), ValueError,
             "gradOutput"),
            ((x, go, gw[:, :29], None, 1.0, 1.0, np.zeros(need, np.float32)), ValueError,
             "gradWeight")]:
        with pytest.raises(error, match=match):
            linear_acc_grad_parameters(*args, True)
        assert np.all(gw == 7)
    big = np.zeros(need + 11 * 30, np.float32)  # the scratch may not overlap another argument
    with pytest.raises(ValueError, match="scratch"):
        linear_acc_grad_parameters(x, go, big[need:].reshape(11, 30), None, 1.0, 1.0, big, True)
    x64 = x.astype(np.float64)
    with pytest.raises(ValueError, match="packed weight gradient needs a float32"):
        linear_acc_grad_parameters(x64, go.astype(np.float64), gw.astype(np.float64), None,
                                   1.0, 1.0, np.zeros(need, np.float32), True)
    with pytest.raises(ValueError, match=r"got float32 input of shape \(30,\)"):
        linear_acc_grad_parameters(x[0], go[0], gw, None, 1.0, 1.0,
                                   np.zeros(need, np.float32), True)
    assert np.all(gw == 7)


def test_rule_and_scratch_size(rng):
    """The rule picks the packed kernel only beside OpenBLAS's AVX2 kernels (measured there);
    the scratch size follows it, and the default path gives the forced path's numbers."""
    assert not grad_packs(64, 784, 256, None) and not grad_packs(64, 784, 256, "SkylakeX")
    assert grad_packs(64, 784, 256, "Haswell") and grad_packs(64, 256, 10, "Zen")
    assert not grad_packs(1, 784, 256, "Haswell") and not grad_packs(256, 784, 256, "Haswell")
    core = blas_core_name()
    for n, k, m in [(64, 784, 256), (8, 13, 3), (1, 5, 5), (500, 20, 20)]:
        x, go = _r(rng, (n, k)), _r(rng, (n, m))
        gw = np.zeros((m, k), np.float32)
        size = linear_grad_scratch_size(x, gw)
        assert size == (_pack_size(n, k, m) if grad_packs(n, k, m, core) else 0)
        assert linear_grad_scratch_size(x.astype(np.float64), gw.astype(np.float64)) == 0
        if size:
            scratch = np.zeros(size, np.float32)
            default, forced = np.zeros((m, k), np.float32), np.zeros((m, k), np.float32)
            linear_acc_grad_parameters(x, go, default, None, 1.0, 0.0, scratch)
            linear_acc_grad_parameters(x, go, forced, None, 1.0, 0.0, scratch, True)
            np.testing.assert_array_equal(default, forced)


@pytest.mark.parametrize(("n", "k", "m"), [(64, 784, 256), (64, 256, 256), (96, 300, 70)])
def test_threads_give_one_threads_numbers(n, k, m, rng):
    """Cut across the engine's threads, the gradient has one thread's numbers, bit for bit."""
    x, go = _r(rng, (n, k)), _r(rng, (n, m))
    start = _r(rng, (m, k))
    one, two = start.copy(), start.copy()
    try:
        set_threads(1)
        _packed(x, go, one)
        set_threads(2)
        _packed(x, go, two)
    finally:
        set_threads(1)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("batch", [8, 64, 70])
def test_linear_module_backward_allocates_nothing(batch, rng):
    """Linear keeps its gradients' packing scratches: no array memory after the first step,
    whichever path the rules take; its gradients are the float64 ones."""
    m = pm.Linear(33, 17)
    x, go = _r(rng, (batch, 33)), _r(rng, (batch, 17))
    m.forward(x)
    m.backward(x, go)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10):
            m.forward(x)
            m.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024 and current - base < 1024
    m.zeroGradParameters()
    m.backward(x, go)
    expected = go.T.astype(np.float64) @ x.astype(np.float64)
    assert_reduction_close(m.gradWeight, expected, np.float32, batch, abs_gemm(go.T, x))
    assert_reduction_close(m.gradBias, go.astype(np.float64).sum(0), np.float32, batch,
                           abs(go).sum(0))
    assert_reduction_close(m.gradInput, go.astype(np.float64) @ m.weight.astype(np.float64),
                           np.float32, 17, abs_gemm(go, m.weight))


# -- gradInput = gradOutput @ weight on the same kernel ----------------------------------------

def _packed_gi(go, w, extra=5):
    """The forced packed gradInput into a NaN-filled array (nothing of it may be read), its
    scratch padded with NaN that must stay untouched."""
    n, m = go.shape
    k = w.shape[1]
    need = _pack_size(m, k, n)
    scratch = np.full(need + extra, np.nan, np.float32)
    gi = np.full((n, k), np.nan, np.float32)
    linear_update_grad_input(np.zeros((n, k), np.float32), go, gi, w, scratch, True)
    assert np.isnan(scratch[need:]).all()
    return gi


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 23, 24, 25, 63, 64, 65, 70])
@pytest.mark.parametrize(("k", "m"), [(1, 1), (5, 3), (8, 4), (13, 6), (16, 5), (24, 8),
                                      (33, 7), (47, 9), (100, 10), (257, 11)])
def test_packed_grad_input_against_numpy_and_blas(n, k, m, rng):
    go, w = _r(rng, (n, m)), _r(rng, (m, k))
    gi = _packed_gi(go, w)
    expected = go.astype(np.float64) @ w.astype(np.float64)
    magnitude = abs_gemm(go, w)
    assert_reduction_close(gi, expected, np.float32, m, magnitude)
    blas = np.full_like(gi, np.nan)
    linear_update_grad_input(np.zeros((n, k), np.float32), go, blas, w, None, False)
    assert_reduction_close(gi, blas, np.float32, m, 2 * magnitude)


@pytest.mark.parametrize(("n", "k", "m"), [(64, 784, 256), (64, 256, 256), (64, 256, 10),
                                           (128, 1024, 130), (64, 400, 120)])
def test_packed_grad_input_layer_sizes(n, k, m, rng):
    go, w = _r(rng, (n, m)), _r(rng, (m, k))
    gi = _packed_gi(go, w)
    assert_reduction_close(gi, go.astype(np.float64) @ w.astype(np.float64), np.float32, m,
                           abs_gemm(go, w))


def test_packed_grad_input_nan_and_infinity(rng):
    n, k, m = 30, 21, 9
    go, w = _r(rng, (n, m)), _r(rng, (m, k))
    go[4, 2] = np.nan       # row 4 of gradInput: all NaN
    w[6, 11] = np.inf       # column 11: inf or NaN
    gi = _packed_gi(go, w)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = go.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(gi), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(gi), np.isinf(expected))
    assert np.isnan(gi[4]).all()


def test_packed_grad_input_refusals(rng):
    x, go, w = _r(rng, (20, 30)), _r(rng, (20, 11)), _r(rng, (11, 30))
    gi = np.full((20, 30), 7, np.float32)
    need = _pack_size(11, 30, 20)
    for args, error, match in [
            ((x, go, gi, w, np.zeros(need - 1, np.float32)), ValueError,
             f"scratch has {need - 1} elements, the packed gradInput needs {need}"),
            ((x, go, gi, w, None), ValueError, "packed gradInput .* and no scratch"),
            ((x[:0], go[:0], gi[:0], w, np.zeros(need, np.float32)), ValueError,
             "n, k, m >= 1"),
            ((x, go, gi, w, np.zeros(need, np.float64)), TypeError, "scratch"),
            ((x, go[:, ::-1], gi, w, np.zeros(need, np.float32)), ValueError, "gradOutput"),
            ((x, go, gi[:, :29], w, np.zeros(need, np.float32)), ValueError, "gradInput"),
            ((x, go, gi, np.asfortranarray(w), np.zeros(need, np.float32)), ValueError,
             "weight")]:
        with pytest.raises(error, match=match):
            linear_update_grad_input(*args, True)
        assert np.all(gi == 7)
    big = np.zeros(need + 20 * 30, np.float32)
    with pytest.raises(ValueError, match="scratch"):
        linear_update_grad_input(x, go, big[need:].reshape(20, 30), w, big, True)


def test_grad_input_rule_and_scratch_size(rng):
    assert not grad_packs(64, 256, 256, None)
    assert not grad_packs(64, 256, 256, "SkylakeX")
    assert grad_packs(64, 256, 256, "Haswell")
    assert not grad_packs(1, 256, 256, "Haswell")
    core = blas_core_name()
    for n, k, m in [(64, 256, 256), (8, 13, 3), (1, 5, 5), (500, 20, 20)]:
        x, go, w = _r(rng, (n, k)), _r(rng, (n, m)), _r(rng, (m, k))
        size = linear_grad_input_scratch_size(go, w)
        assert size == (_pack_size(m, k, n) if grad_packs(n, k, m, core) else 0)
        if size:
            scratch = np.zeros(size, np.float32)
            default, forced = np.zeros((n, k), np.float32), np.zeros((n, k), np.float32)
            linear_update_grad_input(x, go, default, w, scratch)
            linear_update_grad_input(x, go, forced, w, scratch, True)
            np.testing.assert_array_equal(default, forced)


@pytest.mark.parametrize(("n", "k", "m"), [(64, 784, 256), (96, 300, 70)])
def test_grad_input_threads_give_one_threads_numbers(n, k, m, rng):
    go, w = _r(rng, (n, m)), _r(rng, (m, k))
    try:
        set_threads(1)
        one = _packed_gi(go, w)
        set_threads(2)
        two = _packed_gi(go, w)
    finally:
        set_threads(1)
    np.testing.assert_array_equal(one, two)
