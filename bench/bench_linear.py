"""Linear: pymodules against NumPy done the fast way and torch.nn.Linear, in one run.

    python bench/bench_linear.py [--threads 1 2] [--dtypes float32 float64] [--plot out.png]
    python bench/bench_linear.py --grid [--threads 2]
    python bench/bench_linear.py --packed [--batches 8 64 128]


Each row is one (operation, dtype, threads, shape); times are medians of repeated runs after
warm-up, in microseconds; the ratio columns are other / pymodules (above 1: pymodules faster).
"backward" is timed after an untimed forward; "both" is forward + backward.

--grid measures the rule of the transposed float32 forward instead: for each batch and layer
of a grid, the kernel's forward plain and transposed, interleaved in blocks (a shuffled order
per block), and prints the median time transposed / plain (below 1: transposed faster) with
the rule's choice for this BLAS core. Run it once per core type, each in its own process
(OPENBLAS_CORETYPE=Haswell forces the AVX2 kernels).

--packed measures the three float32 forwards of the kernel on the layers of the MLP
784-256-256-10 (and --layers): plain sgemm, the transposed sgemm and the packed kernel of
engine/_linear.h, 1 thread, interleaved in blocks (a shuffled order per block); a time is the
median over blocks of the process CPU time per call (less disturbed than wall time on a
shared machine), with GFLOP/s (2 n k m per call) and the path the rule takes here.
"""

import argparse
import itertools
import random
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

SHAPES = [(1, 64, 64), (16, 1024, 1024), (32, 128, 128), (64, 784, 256), (128, 1024, 1024),
          (256, 4096, 4096)]
OPS = ("forward", "backward", "both")

try:
    import torch
except ImportError:  # the torch column stays empty
    torch = None


def median_time(fn, budget=0.25, min_reps=5, max_reps=200):
    """Median seconds per call of ``fn(n)``, which runs ``n`` calls back to back."""
    n = 1
    while True:  # grow the inner loop until one sample takes >= 50 µs
        start = time.perf_counter()
        fn(n)
        took = time.perf_counter() - start
        if took >= 5e-5 or n >= 1 << 16:
            break
        n *= 4
    samples, spent = [], 0.0
    while len(samples) < min_reps or (spent < budget and len(samples) < max_reps):
        start = time.perf_counter()
        fn(n)
        took = time.perf_counter() - start
        samples.append(took / n)
        spent += took
    return statistics.median(samples)


def pymodules_case(batch, fan_in, fan_out, dtype, rng):
    m = pm.Linear(fan_in, fan_out, dtype=dtype)
    x = rng.standard_normal((batch, fan_in)).astype(dtype)
    go = rng.standard_normal((batch, fan_out)).astype(dtype)

    def forward(n):
        for _ in range(n):
            m.forward(x)

    def backward(n):
        for _ in range(n):
            m.backward(x, go)

    def both(n):
        for _ in range(n):
            m.forward(x)
            m.backward(x, go)

    forward(1)
    return {"forward": forward, "backward": backward, "both": both}


def numpy_case(batch, fan_in, fan_out, dtype, rng):
    """The same layer in NumPy with every buffer preallocated (out=)."""
    w = rng.uniform(-0.1, 0.1, (fan_out, fan_in)).astype(dtype)
    b = rng.uniform(-0.1, 0.1, fan_out).astype(dtype)
    x = rng.standard_normal((batch, fan_in)).astype(dtype)
    go = rng.standard_normal((batch, fan_out)).astype(dtype)
    y, gi = np.empty((batch, fan_out), dtype), np.empty_like(x)
    gw, gb = np.zeros_like(w), np.zeros_like(b)
    tw, tb = np.empty_like(w), np.empty_like(b)
    wt = w.T

    def fwd():
        np.matmul(x, wt, out=y)
        np.add(y, b, out=y)

    def bwd():
        np.matmul(go, w, out=gi)
        np.matmul(go.T, x, out=tw)
        np.add(gw, tw, out=gw)
        np.sum(go, axis=0, out=tb)
        np.add(gb, tb, out=gb)

    def forward(n):
        for _ in range(n):
            fwd()

    def backward(n):
        for _ in range(n):
            bwd()

    def both(n):
        for _ in range(n):
            fwd()
            bwd()

    return {"forward": forward, "backward": backward, "both": both}


def torch_case(batch, fan_in, fan_out, dtype, rng):
    tdtype = getattr(torch, np.dtype(dtype).name)
    layer = torch.nn.Linear(fan_in, fan_out).to(tdtype)
    x = torch.from_numpy(rng.standard_normal((batch, fan_in)).astype(dtype)).requires_grad_()
    go = torch.from_numpy(rng.standard_normal((batch, fan_out)).astype(dtype))

    def forward(n):
        with torch.no_grad():
            for _ in range(n):
                layer(x)

    def backward(n):
        # Each backward needs a fresh graph: build them all first, then time only backward.
        outs = [layer(x) for _ in range(n)]
        start = time.perf_counter()
        for y in outs:
            y.backward(go)
        return time.perf_counter() - start

    def both(n):
        for _ in range(n):
            layer(x).backward(go)

    return {"forward": forward, "backward": backward, "both": both}


def torch_backward_time(fn, budget=0.25, min_reps=5):
    n, samples, spent = 16, [], 0.0
    while len(samples) < min_reps or spent < budget:
        took = fn(n)
        samples.append(took / n)
        spent += took
        if len(samples) > 200:
            break
    return statistics.median(samples)


def blas_description():
    rows = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            rows.append(f"{info['internal_api']} {info.get('version')} "
                        f"({info.get('architecture')} kernels, {info.get('threading_layer')}) "
                        f"from {info['filepath'].rsplit('/', 1)[-1]}")
    return rows


def run(threads_list, dtypes, shapes):
    rows = []
    rng = np.random.default_rng(0)
    for threads in threads_list:
        with threadpool_limits(threads):
            if torch is not None:
                torch.set_num_threads(threads)
            for dtype in dtypes:
                for shape in shapes:
                    budget = 0.25 if shape[1] * shape[2] < 1 << 22 else 1.0
                    cases = {"pymodules": pymodules_case(*shape, dtype, rng),
                             "numpy": numpy_case(*shape, dtype, rng)}
                    if torch is not None:
                        cases["torch"] = torch_case(*shape, dtype, rng)
                    for op in OPS:
                        times = {}
                        for name, case in cases.items():
                            case[op](2)  # warm-up
                            if name == "torch" and op == "backward":
                                times[name] = torch_backward_time(case[op], budget)
                            else:
                                times[name] = median_time(case[op], budget)
                        rows.append((op, np.dtype(dtype).name, threads, shape, times))
                        print_row(rows[-1])
                        sys.stdout.flush()
    return rows


GRID_BATCHES = (2, 4, 8, 16, 32, 64, 128, 256)
GRID_LAYERS = (64, 128, 256, 512, 1024)


def grid_point(n, k, m, rng):
    """The two forwards of an (n, k) float32 batch into m outputs: {transposed: fn(reps)}."""
    from pymodules.engine.linear import linear_update_output

    x = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    y, s = np.empty((n, m), np.float32), np.empty(n * m, np.float32)

    def timer(flag):
        def fn(reps):
            start = time.perf_counter()
            for _ in range(reps):
                linear_update_output(x, y, w, b, s, flag)
            return (time.perf_counter() - start) / reps
        return fn

    return {False: timer(False), True: timer(True)}


def run_grid(threads, batches=GRID_BATCHES, layers=GRID_LAYERS, rounds=3, blocks=5):
    """Print transposed / plain forward time over the grid, and where the rule disagrees.

    Each round visits every point and times its two forwards in ``blocks`` interleaved blocks
    (shuffled order, >= 1 ms a sample); a point's time is its fastest sample over all rounds,
    the least disturbed by other work on a shared machine."""
    from pymodules.engine.linear import blas_core_name, transposes

    core = blas_core_name()
    rng, order = np.random.default_rng(0), random.Random(0)
    points = list(itertools.product(layers, layers, batches))
    with threadpool_limits(threads):
        fns, reps = {}, {}
        for k, m, n in points:
            fns[n, k, m] = grid_point(n, k, m, rng)
            r = 1
            while fns[n, k, m][False](r) * r < 1e-3 and r < 1 << 14:
                r *= 2
            reps[n, k, m] = r
        best = {(p, flag): float("inf") for p in fns for flag in (False, True)}
        for _ in range(rounds):
            for p in fns:
                for _ in range(blocks):
                    flags = [False, True]
                    order.shuffle(flags)
                    for flag in flags:
                        best[p, flag] = min(best[p, flag], fns[p][flag](reps[p]))
    print(f"core {core}; threads {threads}; cells: transposed / plain forward time "
          "('*' the rule transposes, '!' it disagrees with a gap over 5%); plain us at n=2..")
    print(f"{'(in, out)':<14}" + "".join(f"{f'n={n}':>10}" for n in batches))
    ratios = {}
    for k, m in itertools.product(layers, layers):
        cells = []
        for n in batches:
            ratio = ratios[n, k, m] = best[(n, k, m), True] / best[(n, k, m), False]
            rule = transposes(n, k, m, core)
            wrong = (rule and ratio > 1.05) or (not rule and ratio < 0.95)
            cells.append(f"{ratio:>8.2f}{'*' if rule else ' '}{'!' if wrong else ' '}")
        plain = " ".join(f"{best[(n, k, m), False] * 1e6:.0f}" for n in batches)
        print(f"{str((k, m)):<14}" + "".join(cells) + f"   {plain}")
    sys.stdout.flush()
    return ratios


MLP_LAYERS = ((784, 256), (256, 256), (256, 10))


def run_packed(batches, layers=MLP_LAYERS, blocks=15, budget=2e-3):
    from pymodules.engine.linear import (
        blas_core_name,
        linear_scratch_size,
        linear_update_output,
        packs,
        transposes,
    )

    core = blas_core_name()
    rng, order = np.random.default_rng(0), random.Random(0)
    clock = time.process_time
    print(f"core {core}; 1 thread; float32; us per call (median of {blocks} interleaved blocks "
          "of CPU time) and GFLOP/s")
    print(f"{'(batch, in, out)':<20}{'plain':>18}{'transposed':>18}{'packed':>18}  rule")
    total = {"plain": 0.0, "transposed": 0.0, "packed": 0.0}
    with threadpool_limits(1):
        for n in batches:
            for k, m in layers:
                x = rng.standard_normal((n, k)).astype(np.float32)
                w = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal(m).astype(np.float32)
                y = np.empty((n, m), np.float32)
                s = np.empty(max(n * m, (n + 7) // 8 * 8 * k + 15), np.float32)
                paths = {"plain": (False, False), "transposed": (True, False),
                         "packed": (None, True)}
                if n == 1:  # neither needs nor takes a scratch for a vector-sized batch
                    paths = {"plain": (False, False)}
                reps = 1
                while True:
                    start = clock()
                    for _ in range(reps):
                        linear_update_output(x, y, w, b, s, False)
                    if clock() - start >= budget or reps >= 1 << 14:
                        break
                    reps *= 2
                times = {p: [] for p in paths}
                for _ in range(blocks):
                    names = list(paths)
                    order.shuffle(names)
                    for name in names:
                        tr, pk = paths[name]
                        start = clock()
                        for _ in range(reps):
                            linear_update_output(x, y, w, b, s, tr, pk)
                        times[name].append((clock() - start) / reps)
                flops = 2.0 * n * k * m
                cells = []
                for name in ("plain", "transposed", "packed"):
                    if name in times:
                        t = statistics.median(times[name])
                        if n == 64:
                            total[name] += t
                        cells.append(f"{t * 1e6:>9.1f} {flops / t * 1e-9:>5.1f} GF")
                    else:
                        cells.append(f"{'-':>18}")
                xs = np.empty((n, k), np.float32)
                rule = ("packed" if packs(n, k, m, core) else
                        "transposed" if transposes(n, k, m, core) else "plain")
                assert linear_scratch_size(xs, w) in (0, n * m, (n + 7) // 8 * 8 * k + 15)
                print(f"{str((n, k, m)):<20}" + "".join(cells) + f"  {rule}")
                sys.stdout.flush()
    if 64 in batches and layers == MLP_LAYERS:
        flops = 2.0 * 64 * sum(k * m for k, m in layers)
        print("MLP at batch 64, the three layers: " + ", ".join(
            f"{name} {t * 1e6:.1f} us ({flops / t * 1e-9:.1f} GFLOP/s)"
            for name, t in total.items()))


HEADER = (f"{'op':<9}{'dtype':<8}{'thr':>3}  {'(batch, in, out)':<20}{'pymodules':>11}"
          f"{'numpy':>11}{'torch':>11}{'numpy/pm':>10}{'torch/pm':>10}")


def print_row(row):
    op, dtype, threads, shape, t = row
    us = {k: v * 1e6 for k, v in t.items()}
    torch_us = f"{us['torch']:>11.1f}" if "torch" in us else f"{'-':>11}"
    torch_ratio = f"{t['torch'] / t['pymodules']:>10.2f}" if "torch" in t else f"{'-':>10}"
    print(f"{op:<9}{dtype:<8}{threads:>3}  {str(shape):<20}{us['pymodules']:>11.1f}"
          f"{us['numpy']:>11.1f}{torch_us}{t['numpy'] / t['pymodules']:>10.2f}{torch_ratio}")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(OPS), figsize=(5 * len(OPS), 4.5), sharey=True)
    for ax, op in zip(np.atleast_1d(axes), OPS, strict=True):
        sel = [r for r in rows if r[0] == op]
        labels = [f"{r[1][5:]}/{r[2]}t {r[3][0]}x{r[3][1]}x{r[3][2]}" for r in sel]
        xs = np.arange(len(sel))
        ax.bar(xs - 0.2, [r[4]["numpy"] / r[4]["pymodules"] for r in sel], 0.4, label="numpy")
        if torch is not None:
            ax.bar(xs + 0.2, [r[4]["torch"] / r[4]["pymodules"] for r in sel], 0.4,
                   label="torch")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(xs, labels, rotation=90, fontsize=7)
        ax.set_title(f"Linear {op}: time / pymodules time")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--max-size", type=int, default=4096,
                        help="skip shapes whose fan-in exceeds this")
    parser.add_argument("--plot", metavar="PNG", nargs="?", const="bench/bench_linear.png")
    parser.add_argument("--grid", action="store_true",
                        help="measure the transposed float32 forward against the plain one")
    parser.add_argument("--packed", action="store_true",
                        help="measure the packed float32 forward on the MLP's layers")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128])
    args = parser.parse_args(argv)
    print(f"pymodules {pm.__version__}: {pm.Linear(1, 1).getEngineType()}")
    print("BLAS:", *blas_description(), sep="\n  ")
    if args.grid:
        for threads in args.threads:
            run_grid(threads)
        return
    if args.packed:
        run_packed(args.batches)
        return
    if torch is not None:
        print(f"torch {torch.__version__}")
    shapes = [s for s in SHAPES if s[1] <= args.max_size]
    print(HEADER)
    rows = run(args.threads, [np.dtype(d) for d in args.dtypes], shapes)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
