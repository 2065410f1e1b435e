"""Container overhead: a Sequential and a Graph of 10 small Linear layers against calling
the same layers directly, forward + backward, per layer. Also JoinTable/SplitTable against
NumPy (concatenate / copies) and PyTorch (cat / unbind + contiguous) when installed.

    python bench/bench_containers.py

One thread (threadpoolctl, torch.set_num_threads(1)); fixed seeds; warm-up; median of many
runs. The figures are noisy on a shared machine: re-run on a quiet one before quoting them.
"""

import statistics
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

try:
    import torch
except ImportError:  # the PyTorch columns are left out
    torch = None

LAYERS, WIDTH, BATCH = 10, 16, 4
REPEAT, INNER = 41, 200


def median_us(fn, repeat=REPEAT, inner=INNER):
    """Median over ``repeat`` runs of the mean time of ``inner`` calls, in microseconds."""
    for _ in range(inner):
        fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter_ns() - start) / inner / 1e3)
    return statistics.median(runs)


def overhead(dtype):
    pm.setSeed(0)
    layers = [pm.Linear(WIDTH, WIDTH, dtype=dtype) for _ in range(LAYERS)]
    seq = pm.Sequential()
    for layer in layers:
        seq.add(layer)
    graph = seq.toGraph()
    x = np.random.default_rng(0).standard_normal((BATCH, WIDTH)).astype(dtype)
    go = np.ones((BATCH, WIDTH), dtype)

    def direct():
        h = x
        for layer in layers:
            h = layer.forward(h)
        g = go
        for i in range(LAYERS - 1, -1, -1):
            g = layers[i].backward(layers[i - 1].output if i else x, g)

    def run(model):
        def step():
            model.forward(x)
            model.backward(x, go)
        return step

    t_direct = median_us(direct)
    rows = []
    for name, model in (("Sequential", seq), ("Graph", graph)):
        t = median_us(run(model))
        rows.append((f"{name} of {LAYERS} Linear({WIDTH},{WIDTH}) fwd+bwd", dtype.__name__,
                     f"({BATCH}, {WIDTH})", t, t_direct, (t - t_direct) / LAYERS))
    return rows


def join_split(dtype, shape, dim, parts):
    rng = np.random.default_rng(0)
    size = shape[dim] // parts
    xs = [rng.standard_normal(shape[:dim] + (size,) + shape[dim + 1:]).astype(dtype)
          for _ in range(parts)]
    join = pm.JoinTable(dim)
    whole = join.forward(xs)
    split = pm.SplitTable(dim)
    out = np.empty_like(whole)
    rows = [("JoinTable.forward", dtype.__name__, str(whole.shape),
             median_us(lambda: join.forward(xs)),
             median_us(lambda: np.concatenate(xs, axis=dim, out=out)))]
    t_torch = None
    if torch is not None:
        ts = [torch.from_numpy(a) for a in xs]
        t_torch = median_us(lambda: torch.cat(ts, dim))
    rows[-1] += (t_torch,)
    rows.append(("SplitTable.forward", dtype.__name__, str(whole.shape),
                 median_us(lambda: split.forward(whole)),
                 median_us(lambda: [np.ascontiguousarray(a)
                                    for a in np.moveaxis(whole, dim, 0)]),
                 median_us(lambda: [t.contiguous() for t in torch.from_numpy(whole).unbind(dim)])
                 if torch is not None else None))
    return rows


def main():
    if torch is not None:
        torch.set_num_threads(1)
    with threadpool_limits(1):
        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')})"
                for i in threadpool_info() if i["user_api"] == "blas"]
        print("BLAS:", "; ".join(blas) or "unknown")
        print()
        print(f"{'operation':48} {'dtype':8} {'shape':9} {'model us':>9} {'direct us':>10} "
              f"{'overhead us/layer':>18}")
        for dtype in (np.float32, np.float64):
            for op, dt, shape, t, t0, per_layer in overhead(dtype):
                print(f"{op:48} {dt:8} {shape:9} {t:9.2f} {t0:10.2f} {per_layer:18.2f}")
        print()
        print(f"{'operation':20} {'dtype':8} {'shape':14} {'pm us':>8} {'numpy us':>9} "
              f"{'pm/numpy':>9} {'torch us':>9} {'pm/torch':>9}")
        for dtype in (np.float32, np.float64):
            for shape, dim in (((32, 256), 1), ((16, 8, 64), 1), ((64, 1024), 0)):
                for op, dt, s, t, t_np, t_torch in join_split(dtype, shape, dim, 4 if dim else 8):
                    tt = f"{t_torch:9.2f} {t / t_torch:9.2f}" if t_torch else f"{'-':>9} {'-':>9}"
                    print(f"{op:20} {dt:8} {s:14} {t:8.2f} {t_np:9.2f} {t / t_np:9.2f} {tt}")


if __name__ == "__main__":
    main()
