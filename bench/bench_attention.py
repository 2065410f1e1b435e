"""TransformerEncoderLayer and the attention kernel against torch eager, one run, one thread.

    python bench/bench_attention.py [--blocks 7] [--dtype float32]
    python bench/bench_attention.py --grid      # block sizes, kept vs recomputed probabilities

One thread for both libraries (threadpoolctl, applied after torch is imported, and
torch.set_num_threads(1)). Each case times forward + backward (gradients of the input and of
every parameter) in training mode on the same data and weights, in interleaved blocks: each
block runs pymodules and torch in a shuffled order, and the figure is the median over blocks
of the time per call, in CPU time of the process (time.process_time: on a shared machine wall
time also counts the waits for a core; both libraries run in this one thread, torch's
backward included). The ratio is torch / pymodules (above 1: pymodules faster). Where a
target is missed, the time of the layer's GEMMs alone (the same sgemm calls through scipy's
BLAS, one after the other) is printed: the floor of any implementation on that BLAS.

Memory: the peak of what Python-visible allocations (tracemalloc; NumPy reports its buffers
to it) the attention forward at (batch 1, time 512, embed 256, 4 heads) adds, for the kernel
step alone and for MultiHeadAttention's first and second forward.
"""

import argparse
import math
import random
import statistics
import time
import tracemalloc

import numpy as np

try:
    import torch
except ImportError:  # the bench needs the oracle
    torch = None

from pymodules.engine.attention import (  # noqa: E402
    attention_block_rows,
    attention_scratch_size,
    attention_update_grad_input,
    attention_update_output,
)
from scipy.linalg import blas as _blas  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import pymodules as pm  # noqa: E402

E, HEADS, FFN = 256, 4, 1024
# (batch, time, dropout) -> the minimum ratio torch / pymodules
CASES = [(8, 64, 0.1), (32, 256, 0.1), (8, 64, 0.0), (32, 256, 0.0)]
TARGETS = {(8, 64, 0.1): 1.2, (32, 256, 0.1): 1.0}


def encoder_cases(batch, steps, p, dtype, rng):
    """(pymodules run, torch run) of TransformerEncoderLayer(256, 4, 1024, p) forward+backward
    with the same weights."""
    m = pm.TransformerEncoderLayer(E, HEADS, FFN, p, dtype=dtype)
    t = torch.nn.TransformerEncoderLayer(E, HEADS, FFN, p, batch_first=True).to(
        getattr(torch, dtype))
    flat = torch.cat([a.detach().reshape(-1) for a in t.state_dict().values()]).numpy()
    m.getParameters()[0][...] = flat
    x = rng.standard_normal((batch, steps, E)).astype(dtype)
    go = rng.standard_normal((batch, steps, E)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tgo = torch.from_numpy(go)

    def ours(n):
        for _ in range(n):
            m.forward(x)
            m.backward(x, go)

    def theirs(n):
        for _ in range(n):
            tx.grad = None
            t(tx).backward(tgo)
    return ours, theirs


def measure(runs, blocks, calls, clock=time.process_time):
    """Median seconds per call of each run, interleaved in blocks of shuffled order."""
    samples = {name: [] for name in runs}
    for run in runs.values():
        run(1)  # warm-up: buffers, lazy initialisation
    for _ in range(blocks):
        order = list(runs)
        random.shuffle(order)
        for name in order:
            start = clock()
            runs[name](calls)
            samples[name].append((clock() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def gemm_floor(batch, steps, dtype, blocks):
    """Seconds of the GEMMs of one forward+backward of the layer, run alone through scipy's
    BLAS (the same library as the kernels): projections, feed-forward, and per head the
    scores, weighted sum and their gradients (the backward recomputes the scores)."""
    gemm = _blas.sgemm if dtype == "float32" else _blas.dgemm
    n, d = batch * steps, E // HEADS
    rng = np.random.default_rng(1)

    def mat(r, c):
        return np.asfortranarray(rng.standard_normal((r, c)).astype(dtype))
    # (m, k, n, count): C (m, n) = A (m, k) B (k, n), count times per forward+backward
    shapes = [(n, E, E, 4), (n, E, FFN, 1), (n, FFN, E, 1),          # forward projections
              (n, E, E, 4), (E, n, E, 4), (n, FFN, E, 1), (FFN, n, E, 1),  # their gradients
              (n, E, FFN, 1), (E, n, FFN, 1)]
    heads = [(steps, d, steps, 2 * batch * HEADS),    # scores (forward, recomputed)
             (steps, steps, d, 4 * batch * HEADS),    # P V, dO V^T, dS K, dS^T Q
             (steps, steps, d, batch * HEADS)]        # P^T dO
    total = 0.0
    for m_, k, n_, count in shapes + heads:
        a, b = mat(m_, k), mat(k, n_)
        gemm(1.0, a, b)
        best = []
        for _ in range(blocks):
            start = time.process_time()
            gemm(1.0, a, b)
            best.append(time.process_time() - start)
        total += statistics.median(best) * count
    return total


def memory(dtype):
    """Bytes (peak tracemalloc) added by the attention forward at (1, 512, 256), 4 heads."""
    rng = np.random.default_rng(2)
    b, t = 1, 512
    q, k, v = (rng.standard_normal((b, t, E)).astype(dtype) for _ in range(3))
    out = np.empty_like(q)
    item = np.dtype(dtype).itemsize
    rows = attention_block_rows(t, t, item)
    tracemalloc.start()
    tracemalloc.reset_peak()
    scratch = np.empty(attention_scratch_size(q, k, 0, False), dtype)
    attention_update_output(q, k, v, None, None, out, None, scratch, HEADS,
                            1 / math.sqrt(E // HEADS), 0.0, False, 0)
    step = tracemalloc.get_traced_memory()[1]
    del scratch
    m = pm.MultiHeadAttention(E, HEADS, dtype=dtype).evaluate()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    m.forward(q)
    first = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    m.forward(q)
    second = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    size = q.nbytes
    block = rows * t * item
    scores = b * HEADS * t * t * item
    print(f"\nattention forward, batch {b}, time {t}, embed {E}, {HEADS} heads, {dtype}: "
          f"q, k, v {3 * size / 2**10:.0f} KiB, output {size / 2**10:.0f} KiB, a block of "
          f"scores ({rows} x {t}) {block / 2**10:.0f} KiB, all heads' scores "
          f"{scores / 2**10:.0f} KiB")
    print(f"  kernel step (scratch + call): peak {step / 2**10:.0f} KiB = "
          f"{step / block:.2f} blocks")
    print(f"  MultiHeadAttention.forward (evaluation), first call: peak "
          f"{first / 2**10:.0f} KiB (its q, k, v, heads' output and output buffers "
          f"{5 * size / 2**10:.0f} KiB + "
          f"{(first - 5 * size) / block:.2f} blocks); second call: {second / 2**10:.1f} KiB")
    slack = 2**14  # tracemalloc's own entries, the arrays' headers
    ok = step <= block + slack and first <= 5 * size + block + slack
    print("  at most the inputs (and the buffers the layer keeps) plus one block of scores: "
          + ("ok" if ok else "MISSED"))
    return ok


def grid(dtype, blocks):
    """The kernel's forward+backward per block size and with kept probabilities."""
    rng = np.random.default_rng(3)
    print(f"\nattention kernel forward+backward (embed {E}, {HEADS} heads, dropout 0.1, "
          f"{dtype}), ms; 'auto' is attention_block_rows")
    print(f"{'batch x time':>14} " + " ".join(f"{c:>9}" for c in
                                               ("auto", "16", "64", "256", "whole", "kept")))
    for b, t in [(8, 64), (32, 256), (4, 1024)]:
        q, k, v, go = (rng.standard_normal((b, t, E)).astype(dtype) for _ in range(4))
        out, gq, gk, gv = (np.empty_like(q) for _ in range(4))
        probs = np.empty((b, HEADS, t, t), dtype)
        scale = 1 / math.sqrt(E // HEADS)

        def case(block, keep, q=q, k=k, v=v, go=go, out=out, gq=gq, gk=gk, gv=gv,
                 probs=probs, scale=scale):
            scratch = np.empty(attention_scratch_size(q, k, block), dtype)
            pr = probs if keep else None

            def run(n):
                for _ in range(n):
                    attention_update_output(q, k, v, None, None, out, pr, scratch, HEADS,
                                            scale, 0.1, True, 5, block)
                    attention_update_grad_input(q, k, v, None, None, go, gq, gk, gv, pr,
                                                scratch, HEADS, scale, 0.1, True, 5, block)
            return run
        runs = {"auto": case(0, False), "16": case(16, False), "64": case(64, False),
                "256": case(256, False), "whole": case(t, False), "kept": case(0, True)}
        res = measure(runs, blocks, 1)
        print(f"{f'{b} x {t}':>14} " + " ".join(f"{res[c] * 1e3:9.2f}" for c in runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--grid", action="store_true", help="block sizes and kept "
                                                            "probabilities of the kernel")
    args = parser.parse_args()
    if torch is None:
        raise SystemExit("bench_attention needs torch")
    torch.set_num_threads(1)
    random.seed(0)
    with threadpool_limits(limits=1):
        blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                for i in threadpool_info()]
        print(f"BLAS pools (api, kernel, threads): {blas}; torch {torch.__version__} threads "
              f"{torch.get_num_threads()}; {args.dtype}")
        if args.grid:
            grid(args.dtype, args.blocks)
            return 0
        print(f"{'TransformerEncoderLayer(256, 4, 1024)':<44} {'pymodules ms':>12} "
              f"{'torch ms':>10} {'ratio':>7}  target")
        ok = True
        for batch, steps, p in CASES:
            rng = np.random.default_rng(0)
            ours, theirs = encoder_cases(batch, steps, p, args.dtype, rng)
            calls = max(1, 2 ** 12 // (batch * steps))
            t = measure({"pymodules": ours, "torch": theirs}, args.blocks, calls)
            ratio = t["torch"] / t["pymodules"]
            target = TARGETS.get((batch, steps, p))
            hit = target is None or ratio >= target
            mark = "" if target is None else f">= {target} " + ("ok" if hit else "MISSED")
            name = f"batch {batch}, time {steps}, dropout {p}, fwd+bwd"
            print(f"{name:<44} {t['pymodules'] * 1e3:12.2f} {t['torch'] * 1e3:10.2f} "
                  f"{ratio:7.2f}  {mark}")
            if not hit:
                floor = gemm_floor(batch, steps, args.dtype, args.blocks)
                print(f"{'  its GEMMs alone (scipy BLAS)':<44} {floor * 1e3:12.2f}")
            ok &= hit
        ok &= memory(args.dtype)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
