"""Kernels on the engine's threads (engine/pool.pyx): Linear's and SGD's give the results of
one thread, from any thread of the process and in a forked child."""

import multiprocessing
import threading

import numpy as np
import pytest
from pymodules.engine.linear import (
    blas_core_name,
    linear_acc_grad_parameters,
    linear_scratch_size,
    linear_update_grad_input,
    linear_update_output,
    packs,
)
from pymodules.engine.optim import sgd_update
from pymodules.engine.pool import get_threads, set_threads
from tolerance import abs_gemm, assert_reduction_close

# (batch, in, out): the MLP's layers at batch 64 (packed forward where the BLAS is
# OpenBLAS's AVX2 one), a batch past the packed kernel's range, odd sizes.
SHAPES = [(64, 784, 256), (64, 256, 10), (200, 300, 500), (37, 129, 83)]


@pytest.fixture
def threads():
    yield set_threads
    set_threads(1)


def _step(x, w, b, go, scratch):
    """forward (with the scratch), gradInput and the weight and bias gradients."""
    n, k = x.shape
    m = w.shape[0]
    y, gi = np.full((n, m), np.nan, x.dtype), np.full((n, k), np.nan, x.dtype)
    gw, gb = np.ones((m, k), x.dtype), np.zeros(m, x.dtype)
    linear_update_output(x, y, w, b, scratch)
    linear_update_grad_input(x, go, gi, w)
    linear_acc_grad_parameters(x, go, gw, gb, 0.5, 1.0)
    return y, gi, gw, gb


def _arrays(rng, n, k, m, dtype):
    x, w = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((m, k)).astype(dtype)
    b, go = rng.standard_normal(m).astype(dtype), rng.standard_normal((n, m)).astype(dtype)
    return x, w, b, go, np.empty(max(linear_scratch_size(x, w), 1), np.float32)


def _check(results, x, w, b, go):
    y, gi, gw, gb = results
    k, n = x.shape[1], x.shape[0]
    assert_reduction_close(y, x.astype(np.float64) @ w.T + b, x.dtype, k, abs_gemm(x, w.T))
    assert_reduction_close(gi, go.astype(np.float64) @ w, x.dtype, w.shape[0], abs_gemm(go, w))
    assert_reduction_close(gw, 1 + 0.5 * go.T.astype(np.float64) @ x, x.dtype, n,
                           1 + abs_gemm(go.T, x))
    np.testing.assert_allclose(gb, go.sum(0, dtype=np.float64), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("parts", [2, 3])
def test_threads_give_the_results_of_one(threads, dtype, shape, parts, rng):
    x, w, b, go, s = _arrays(rng, *shape, dtype)
    one = _step(x, w, b, go, s)
    threads(parts)
    assert get_threads() == (parts, True)
    many = _step(x, w, b, go, s)
    _check(many, x, w, b, go)
    if dtype == np.float32 and packs(*shape, blas_core_name()):
        # The packed forward is cut by weight rows: each output is the same sum, bit for bit.
        np.testing.assert_array_equal(many[0], one[0])


def test_a_blas_on_threads_keeps_its_products_whole(threads, rng):
    x, w, b, go, s = _arrays(rng, 64, 784, 256, np.float32)
    one = _step(x, w, b, go, s)
    threads(2, blas_threads=2)
    _check(_step(x, w, b, go, s), x, w, b, go)
    assert get_threads() == (2, False) and one is not None


def test_calls_from_several_threads_at_once(threads, rng):
    """Two threads of the process calling at once: one holds the pool, the other runs its
    chunks alone; both get their own results."""
    threads(2)
    jobs = [_arrays(np.random.default_rng(i), 64, 784, 256, np.float32) for i in range(2)]
    failures = []

    def run(job):
        try:
            for _ in range(20):
                _check(_step(*job), *job[:4])
        except Exception as err:  # reported by the main thread
            failures.append(err)

    workers = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures, failures


def _child(queue):
    rng = np.random.default_rng(7)
    x, w, b, go, s = _arrays(rng, 64, 784, 256, np.float32)
    try:
        _check(_step(x, w, b, go, s), x, w, b, go)
        queue.put(("ok", get_threads()[0]))
    except Exception as err:
        queue.put(("failed", repr(err)))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_starts_its_own_workers(threads, rng):
    threads(2)
    x, w, b, go, s = _arrays(rng, 64, 784, 256, np.float32)
    _step(x, w, b, go, s)  # the parent's workers run
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(60)
    assert result == ("ok", 2) and child.exitcode == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_refuses(bad):
    with pytest.raises(ValueError, match="set_threads: n must be a positive int"):
        set_threads(bad)
    with pytest.raises(ValueError, match="blas_threads must be a positive int"):
        set_threads(1, blas_threads=bad)
    assert get_threads() == (1, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [270_000, 100_003])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_threads_is_bit_for_bit_one_thread(threads, dtype, n, momentum, rng):
    x0 = rng.standard_normal(n).astype(dtype)
    g0 = rng.standard_normal(n).astype(dtype)
    b0 = rng.standard_normal(n).astype(dtype)
    results = []
    for parts in (1, 2, 3):
        threads(parts)
        x, g, b = x0.copy(), g0.copy(), b0.copy()
        for first in (True, False):
            sgd_update(x, g, b, 0.01, 1e-4, momentum, 0.0, False, first, clear_grad=False)
        sgd_update(x, g, b, 0.01, 1e-4, momentum, 0.0, True, False, clear_grad=True)
        results.append((x, g, b))
    for x, g, b in results[1:]:
        np.testing.assert_array_equal(x, results[0][0])
        np.testing.assert_array_equal(b, results[0][2])
        assert not g.any()
