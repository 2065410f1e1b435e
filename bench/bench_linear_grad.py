"""Linear's float32 weight gradient and gradInput: the packed kernels of engine/_linear_grad.h
against the sgemm calls they replace, in one run.

    python bench/bench_linear_grad.py [--blocks 20] [--reps 25]

For each (batch, in, out) both paths run ``linear_acc_grad_parameters`` on the same arrays
(gradWeight += gradOutput.T @ input, the bias left out), then ``linear_update_grad_input``
(gradInput = gradOutput @ weight), in interleaved blocks of ``--reps``
calls (a shuffled order per block), each call timed by the thread's CPU clock; a time is the
median over all calls, in microseconds. The packed time includes its packing. One thread
(threadpoolctl on the BLAS libraries, the engine's pool at 1). The last column is what the
rule of engine/linear.pyx (``grad_packs``) picks on this machine's BLAS kernels.
"""

import argparse
import random
import statistics
import time

import numpy as np
from pymodules.engine.linear import (
    blas_core_name,
    grad_packs,
    linear_acc_grad_parameters,
    linear_grad_scratch_size,
    linear_update_grad_input,
)
from pymodules.engine.pool import set_threads
from threadpoolctl import threadpool_info, threadpool_limits

SHAPES = [(8, 784, 256), (16, 784, 256), (32, 784, 256), (64, 784, 256), (64, 256, 256),
          (64, 256, 10), (64, 400, 120), (64, 120, 84), (64, 84, 10), (128, 784, 256),
          (128, 256, 256), (256, 784, 256), (64, 1024, 1024)]


def interleaved(calls, blocks, reps):
    """Median thread CPU time in microseconds of each call, taken in shuffled blocks."""
    times = {name: [] for name in calls}
    for f in calls.values():
        for _ in range(3):
            f()
    for _ in range(blocks):
        order = list(calls)
        random.shuffle(order)
        for name in order:
            f = calls[name]
            for _ in range(reps):
                t = time.thread_time_ns()
                f()
                times[name].append(time.thread_time_ns() - t)
    return {name: statistics.median(v) / 1e3 for name, v in times.items()}


def _size(t, k, rows):
    """The packed kernels' scratch: strips of 24 columns of t rows, groups of 4 rows."""
    return t * 24 * -(-k // 24) + t * 4 * -(-rows // 4)


def weight_gradient(n, k, m, blocks, reps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    go = rng.standard_normal((n, m)).astype(np.float32)
    gw_packed, gw_blas = np.zeros((m, k), np.float32), np.zeros((m, k), np.float32)
    scratch = np.zeros(linear_grad_scratch_size(x, gw_packed) or _size(n, k, m), np.float32)
    return interleaved({
        "packed": lambda: linear_acc_grad_parameters(x, go, gw_packed, None, 1.0, 0.0,
                                                     scratch, True),
        "sgemm": lambda: linear_acc_grad_parameters(x, go, gw_blas, None, 1.0, 0.0, None,
                                                    False)}, blocks, reps)


def grad_input(n, k, m, blocks, reps):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k)).astype(np.float32)
    go = rng.standard_normal((n, m)).astype(np.float32)
    w = rng.standard_normal((m, k)).astype(np.float32)
    gi_packed, gi_blas = np.zeros((n, k), np.float32), np.zeros((n, k), np.float32)
    scratch = np.zeros(_size(m, k, n), np.float32)
    return interleaved({
        "packed": lambda: linear_update_grad_input(x, go, gi_packed, w, scratch, True),
        "sgemm": lambda: linear_update_grad_input(x, go, gi_blas, w, None, False)},
        blocks, reps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--reps", type=int, default=25)
    args = parser.parse_args(argv)
    random.seed(0)
    core = blas_core_name()
    with threadpool_limits(1, user_api="blas"):
        set_threads(1)
        kernels = ", ".join(f"{i['internal_api']} {i['version']} {i.get('architecture')}"
                            for i in threadpool_info() if i["user_api"] == "blas")
        print(f"BLAS: {kernels}; rule for core {core!r}\n")
        for title, run in (("weight gradient", weight_gradient), ("gradInput", grad_input)):
            print(f"{title + ' (batch, in, out)':<34}{'sgemm us':>10}{'packed us':>11}"
                  f"{'GFLOP/s':>9}{'packed/sgemm':>14}  rule")
            for n, k, m in SHAPES:
                t = run(n, k, m, args.blocks, args.reps)
                gflops = 2.0 * n * k * m / t["packed"] / 1e3
                picked = "packed" if grad_packs(n, k, m, core) else "sgemm"
                print(f"{str((n, k, m)):<34}{t['sgemm']:>10.1f}{t['packed']:>11.1f}"
                      f"{gflops:>9.1f}{t['packed'] / t['sgemm']:>14.2f}  {picked}")
            print()


if __name__ == "__main__":
    main()
