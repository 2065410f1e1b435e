"""Linear's packed float32 forward (engine/_linear.h) against NumPy and the BLAS path: odd
sizes on every edge of its blocks, NaN and infinities, refusals, the rule, no allocation."""

import tracemalloc

import numpy as np
import pytest
from pymodules.engine.linear import (
    allow_wide,
    blas_core_name,
    linear_scratch_size,
    linear_update_output,
    packs,
)
from tolerance import abs_gemm, assert_reduction_close

import pymodules as pm


def _r(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def _pack_size(n, k):
    """The batch rounded up to 8 rows, and 15 floats to start it on a 64-byte line."""
    return (n + 7) // 8 * 8 * k + 15


@pytest.fixture(params=["core's blocks", "8-float blocks"])
def blocks(request):
    """The packed forward as this core runs it, then (on a core with AVX-512 another path)
    with the 8-float blocks."""
    allow_wide(request.param == "core's blocks")
    yield request.param
    allow_wide(True)


def _packed(x, w, b, extra=5):
    """The forced packed forward into NaN-filled output, its scratch padded with NaN that
    must stay untouched."""
    n, k = x.shape
    scratch = np.full(_pack_size(n, k) + extra, np.nan, np.float32)
    y = np.full((n, w.shape[0]), np.nan, np.float32)
    linear_update_output(x, y, w, b, scratch, None, True)
    assert np.isnan(scratch[_pack_size(n, k):]).all()
    return y


# batch: every rest modulo the 8-row vectors and 16-row panels, and 1..70 across the edges;
# features: not a multiple of 8 (the packing's scalar tail), under 8, long; outputs: every
# rest modulo the 6 weight rows of a block, and blocks of 12 (on a core with AVX-512) whole,
# with 1, 5, 7 and 11 rows over
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 47, 48, 49,
                               63, 64, 65, 70])
@pytest.mark.parametrize(("k", "m"), [(1, 1), (5, 3), (13, 6), (16, 4), (33, 7), (100, 10),
                                      (257, 9), (20, 5), (40, 11), (9, 8), (12, 2),
                                      (40, 12), (33, 13), (20, 17), (19, 19), (130, 23),
                                      (8, 24)])
@pytest.mark.parametrize("withBias", [True, False])
def test_packed_against_numpy_and_blas(n, k, m, withBias, blocks, rng):
    x, w = _r(rng, (n, k)), _r(rng, (m, k))
    b = _r(rng, m) if withBias else None
    y = _packed(x, w, b)
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    magnitude = abs_gemm(x, w.T) + (0 if b is None else abs(b))
    assert_reduction_close(y, expected, np.float32, k + 1, magnitude)
    plain = np.full_like(y, np.nan)
    linear_update_output(x, plain, w, b, None, False)
    assert_reduction_close(y, plain, np.float32, k + 1, 2 * magnitude)


@pytest.mark.parametrize(("n", "k", "m"), [(64, 784, 256), (64, 256, 256), (64, 256, 10),
                                           (128, 1024, 130)])
def test_packed_layer_sizes(n, k, m, rng):
    x, w, b = _r(rng, (n, k)), _r(rng, (m, k)), _r(rng, m)
    y = _packed(x, w, b)
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert_reduction_close(y, expected, np.float32, k + 1, abs_gemm(x, w.T) + abs(b))


@pytest.mark.parametrize(("n", "k", "m"), [(16, 784, 256), (64, 256, 256), (64, 33, 12),
                                           (48, 100, 30), (512, 20, 13), (100, 50, 24),
                                           (80, 7, 36), (128, 3, 11), (64, 256, 10), (32, 40, 7)])
def test_the_numbers_do_not_depend_on_the_blocks(n, k, m, rng):
    """The 64-byte blocks (AVX-512: 6 weight rows x 64 batch rows, 12 x 16, then the edges)
    run each sum as the 8-float blocks do on that core: the same bits."""
    x, w, b = _r(rng, (n, k)), _r(rng, (m, k)), _r(rng, m)
    core = _packed(x, w, b)
    allow_wide(False)
    try:
        narrow = _packed(x, w, b)
    finally:
        allow_wide(True)
    np.testing.assert_array_equal(core, narrow)


def test_packed_reads_the_current_weights(rng):
    """Nothing of the weight is kept between calls: a write into it shows in the next."""
    x, w, b = _r(rng, (16, 40)), _r(rng, (12, 40)), _r(rng, 12)
    first = _packed(x, w, b)
    w[5, 7] += 1.0
    b[3] -= 2.0
    second = _packed(x, w, b)
    changed = np.abs(second - first) > 1e-6
    assert changed[:, 5].all() and changed[:, 3].all()
    assert not changed[:, [0, 1, 2, 4, 6, 7, 8, 9, 10, 11]].any()


def test_nan_and_infinity_propagate(rng):
    n, k, m = 30, 21, 9
    x, w, b = _r(rng, (n, k)), _r(rng, (m, k)), _r(rng, m)
    x[2, 4] = np.nan        # row 2 of the output: all NaN
    w[6, 0] = np.inf        # column 6: inf or NaN (inf - inf cannot happen: one inf term)
    b[8] = np.nan           # column 8: all NaN
    x[27, 20] = np.inf      # row 27: +-inf where w[:, 20] != 0
    y = _packed(x, w, b)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = x.astype(np.float64) @ w.T.astype(np.float64) + b
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    np.testing.assert_array_equal(np.sign(y[np.isinf(y)]), np.sign(expected[np.isinf(expected)]))
    assert np.isnan(y[2]).all() and np.isnan(y[:, 8]).all()
    finite = np.isfinite(expected)
    assert_reduction_close(y[finite], expected[finite], np.float32, k + 1,
                           (abs_gemm(np.nan_to_num(x), np.nan_to_num(w).T) + abs(b))[finite])


def test_float64_and_vectors_stay_on_blas(rng):
    """The packed kernel is float32 only; float64 and a single vector run as before."""
    x, w, b = _r(rng, (16, 33), np.float64), _r(rng, (10, 33), np.float64), _r(rng, 10, np.float64)
    assert linear_scratch_size(x, w) == 0
    y = np.full((16, 10), np.nan)
    linear_update_output(x, y, w, b, None)
    assert_reduction_close(y, x @ w.T + b, np.float64, 34, abs_gemm(x, w.T) + abs(b))
    with pytest.raises(ValueError, match="packed forward needs a float32"):
        linear_update_output(x, y, w, b, np.zeros(_pack_size(16, 33)), None, True)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    assert linear_scratch_size(x32[0], w32) == 0
    with pytest.raises(ValueError, match=r"got float32 input of shape \(33,\)"):
        linear_update_output(x32[0], np.zeros(10, np.float32), w32, None,
                             np.zeros(_pack_size(1, 33), np.float32), None, True)


def test_packed_refusals(rng):
    x, w = _r(rng, (20, 30)), _r(rng, (11, 30))
    y = np.full((20, 11), 7, np.float32)
    need = _pack_size(20, 30)
    for args, error, match in [
            ((x, y, w, None, np.zeros(need - 1, np.float32)), ValueError,
             f"scratch has {need - 1} elements, the packed forward needs {need}"),
            ((x, y, w, None, None), ValueError, "packed forward .* and no scratch"),
            ((x[:0], y[:0], w, None, np.zeros(need, np.float32)), ValueError, "n, k >= 1"),
            ((x, y, w, None, np.zeros(need, np.float64)), TypeError, "scratch"),
            ((x, y, w, None, np.zeros((need, 1), np.float32)), ValueError, "scratch"),
            ((x[:, ::2], y, np.ascontiguousarray(w[:, :15]), None, np.zeros(need, np.float32)),
             ValueError, "input is not C-contiguous"),
            ((np.asfortranarray(x), y, w, None, np.zeros(need, np.float32)), ValueError,
             "input"),
            ((x, y[:, ::-1], w, None, np.zeros(need, np.float32)), ValueError, "output"),
            ((x, y, np.asfortranarray(w), None, np.zeros(need, np.float32)), ValueError,
             "weight")]:
        with pytest.raises(error, match=match):
            linear_update_output(*args, None, True)
        assert np.all(y == 7)
    with pytest.raises(ValueError, match="either packed or transposed"):
        linear_update_output(x, y, w, None, np.zeros(need, np.float32), True, True)
    big = np.zeros(need + 20 * 11, np.float32)  # the scratch may not overlap another argument
    with pytest.raises(ValueError, match="scratch"):
        linear_update_output(x, big[need:].reshape(20, 11), w, None, big, None, True)
    assert np.all(y == 7)


def test_rule_and_scratch_size(rng):
    """The rule picks the packed kernel beside OpenBLAS's AVX2 kernels, and beside its
    AVX-512 ones for layers of 256 outputs and more on a core that runs the 64-byte blocks
    (measured there); the scratch size follows it."""
    for wide in (False, True):
        assert not packs(64, 784, 256, None, wide) and not packs(64, 256, 10, "SkylakeX", wide)
        assert packs(64, 784, 256, "Haswell", wide) and packs(64, 256, 10, "Zen", wide)
        assert not packs(1, 784, 256, "Haswell", wide)
    assert packs(64, 784, 256, "SkylakeX", True) and not packs(64, 784, 256, "SkylakeX", False)
    assert not packs(256, 784, 256, "Cooperlake", True) and packs(8, 30, 300, "Cooperlake", True)
    assert packs(512, 784, 10, "Haswell", True) and not packs(512, 784, 10, "Haswell", False)
    assert not packs(513, 784, 10, "Haswell", True)
    core = blas_core_name()
    for n, k, m in [(64, 784, 256), (8, 13, 3), (1, 5, 5), (500, 20, 20)]:
        x, w = _r(rng, (n, k)), _r(rng, (m, k))
        if packs(n, k, m, core):
            assert linear_scratch_size(x, w) == _pack_size(n, k)
            scratch = np.zeros(_pack_size(n, k), np.float32)
            default, forced = np.zeros((n, m), np.float32), np.zeros((n, m), np.float32)
            linear_update_output(x, default, w, None, scratch)
            linear_update_output(x, forced, w, None, scratch, None, True)
            np.testing.assert_array_equal(default, forced)


@pytest.mark.parametrize("batch", [8, 64, 70])
def test_linear_module_steady_state_allocates_nothing(batch, rng):
    """Linear's forward keeps its packing scratch: no array memory after the first call,
    whichever path the rule takes."""
    m = pm.Linear(33, 17)
    x = _r(rng, (batch, 33))
    m.forward(x)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10):
            m.forward(x)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024 and current - base < 1024
    expected = x.astype(np.float64) @ m.weight.T.astype(np.float64) + m.bias
    assert_reduction_close(m.output, expected, np.float32, 34,
                           abs_gemm(x, m.weight.T) + abs(m.bias))


def test_linear_module_follows_in_place_weight_writes(rng):
    m = pm.Linear(50, 20)
    x = _r(rng, (32, 50))
    before = m.forward(x).copy()
    m.weight[...] *= 2
    m.bias[...] *= 2
    np.testing.assert_allclose(m.forward(x), 2 * before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("offset", range(16))
def test_packed_scratch_at_any_alignment(offset, rng):
    """The pack starts on the scratch's first 64-byte line: wherever the scratch begins, the
    numbers are the same bit for bit and nothing outside the scratch is written."""
    n, k, m = 37, 29, 13
    x, w, b = _r(rng, (n, k)), _r(rng, (m, k)), _r(rng, m)
    need = _pack_size(n, k)
    results = []
    for start in (offset, 16 + offset):
        whole = np.full(need + 48, np.nan, np.float32)
        y = np.full((n, m), np.nan, np.float32)
        linear_update_output(x, y, w, b, whole[start:start + need], None, True)
        assert np.isnan(whole[:start]).all() and np.isnan(whole[start + need:]).all()
        results.append(y)
    np.testing.assert_array_equal(results[0], results[1])
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert_reduction_close(results[0], expected, np.float32, k + 1, abs_gemm(x, w.T) + abs(b))
