"""Training step of an MLP 784-256-256-10 (ReLU, LogSoftMax, ClassNLL, SGD with momentum).

One step = zero the gradients, forward, loss, backward, parameter update: pymodules as the
Optimizer runs it (SGD.optimize on the flat getParameters() vector), against
the same step written in NumPy and in PyTorch eager. One thread, fixed seeds, warm-up,
median of many runs, taken in interleaved blocks of 25 steps.

Then the step at the default threads (pm.getNumThreads(), the cores available), on a quiet
machine and with two busy background processes (pure-Python loops the bench starts, bounded
in time, and stops): the Optimizer's own steps (median over MaxIteration(--runs)), and the
same step with every BLAS thread forced on, to show what the Optimizer's size rule avoids.

    python bench/bench_train.py [--runs 200] [--dtype float32] [--busy 2]
"""

import argparse
import contextlib
import itertools
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

SIZES = (784, 256, 256, 10)


def median_us(steps, runs, warmup=20, block=25):
    """Median time of each step in microseconds (None: skipped), measured in interleaved
    blocks of ``block`` calls so that every implementation sees the same machine state."""
    live = [s for s in steps if s is not None]
    for step in live:
        for _ in range(warmup):
            step()
    times = {id(s): [] for s in live}
    for _ in range(max(1, runs // block)):
        for step in live:
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                times[id(step)].append(time.perf_counter() - t0)
    return [float(np.median(times[id(s)])) * 1e6 if s is not None else float("nan")
            for s in steps]


def mlp(dtype):
    """The benchmark's MLP (SIZES, ReLU between, LogSoftMax last), seeded, in ``dtype``."""
    pm.setSeed(0)
    model = pm.Sequential()
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        model.add(pm.Linear(a, b, dtype=dtype))
        model.add(pm.ReLU() if i < len(SIZES) - 2 else pm.LogSoftMax())
    return model.float() if dtype == np.float32 else model.double()


def pymodules_step(x, y, dtype):
    model = mlp(dtype)
    crit = pm.ClassNLLCriterion()
    method = pm.SGD(0.01, momentum=0.9, dampening=0.0)
    weights, grads = model.getParameters()
    # As the Optimizer does: the layer that reads the data skips the data's gradient.
    model.modules[0].propagateBack = False
    model.training()

    def feval(_):
        grads.fill(0)
        out = model.forward(x)
        loss = crit.forward(out, y)
        model.backward(x, crit.backward(out, y))
        return loss, grads

    return lambda: method.optimize(feval, weights)


def numpy_step(x, y, dtype):
    rng = np.random.default_rng(0)
    ws = [rng.uniform(-1, 1, (b, a)).astype(dtype) / np.sqrt(a)
          for a, b in itertools.pairwise(SIZES)]
    bs = [np.zeros(b, dtype) for b in SIZES[1:]]
    vel = [np.zeros_like(p) for p in ws + bs]
    n = len(x)
    rows = np.arange(n)

    def step():
        acts = [x]
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = acts[-1] @ w.T + b
            acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
        z = acts[-1]
        lse = z.max(1, keepdims=True)
        lsm = z - lse - np.log(np.exp(z - lse).sum(1, keepdims=True))
        g = np.exp(lsm)
        g[rows, y] -= 1
        g /= n
        grads_w, grads_b = [], []
        for i in range(len(ws) - 1, -1, -1):
            grads_w.insert(0, g.T @ acts[i])
            grads_b.insert(0, g.sum(0))
            if i:
                g = (g @ ws[i]) * (acts[i] > 0)
        for p, gp, v in zip(ws + bs, grads_w + grads_b, vel, strict=True):
            v *= 0.9
            v += gp
            p -= 0.01 * v

    return step


def torch_step(x, y, dtype):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        layers.append(torch.nn.Linear(a, b))
        layers.append(torch.nn.ReLU() if i < len(SIZES) - 2 else torch.nn.LogSoftmax(dim=1))
    net = torch.nn.Sequential(*layers).to(torch.float32 if dtype == np.float32 else torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.NLLLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        loss = loss_fn(net(tx), ty)
        loss.backward()
        opt.step()

    return step


@contextlib.contextmanager
def busy_processes(n, seconds=600):
    """``n`` processes spinning on a core each (each stops by itself after ``seconds``)."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def optimizer_step_us(x, y, dtype, runs):
    """Median time of the Optimizer's steps (its TrainSummary throughput) at the default
    threads, in microseconds."""
    model = mlp(dtype)
    summary = pm.TrainSummary()
    opt = pm.Optimizer(model, (x, y), pm.ClassNLLCriterion(),
                       pm.SGD(0.01, momentum=0.9, dampening=0.0),
                       pm.MaxIteration(runs + 20), len(x))
    opt.setTrainSummary(summary).setProgressBar(False).setLogInterval(0).optimize()
    throughput = summary.readScalar("Throughput")[20:, 1]
    return float(np.median(len(x) / throughput)) * 1e6


def threads_rows(dtype, runs, busy, batch=64):
    """The step at the default threads, quiet and against ``busy`` busy processes."""
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], batch)
    n = pm.getNumThreads()
    forced = pymodules_step(x, y, dtype)

    def measure():
        ours = optimizer_step_us(x, y, dtype, runs)
        with threadpool_limits(n):
            all_threads = median_us([forced], runs)[0]
        return ours, all_threads

    quiet = measure()
    with busy_processes(busy):
        loaded = measure()
    print(f"\n{f'train step, default threads ({n})':<34}{'dtype':<9}{'batch':>6}"
          f"{'quiet us':>11}{f'{busy} busy us':>11}{'busy/quiet':>12}")
    for name, q, b in (("Optimizer (size rule)", quiet[0], loaded[0]),
                       (f"every BLAS thread on ({n})", quiet[1], loaded[1])):
        print(f"{name:<34}{dtype.name:<9}{batch:>6}{q:>11.1f}{b:>11.1f}{b / q:>12.2f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--busy", type=int, default=2,
                        help="busy background processes of the threads rows (0: none)")
    args = parser.parse_args()
    missing = [n for n in ("ReLU", "LogSoftMax") if not hasattr(pm, n)]
    if missing:
        sys.exit(f"this build lacks {', '.join(missing)}: the MLP cannot be built")
    dtype = np.dtype(args.dtype)
    with threadpool_limits(1):
        for info in threadpool_info():
            print(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                  f"({info.get('architecture')}, {info.get('num_threads')} thread) "
                  f"{info.get('filepath')}")
        print(f"\n{'operation':<34}{'dtype':<9}{'batch':>6}{'pymodules us':>14}"
              f"{'numpy us':>11}{'torch us':>11}{'numpy/pm':>10}{'torch/pm':>10}")
        for batch in map(int, args.batches.split(",")):
            rng = np.random.default_rng(batch)
            x = rng.standard_normal((batch, SIZES[0])).astype(dtype)
            y = rng.integers(0, SIZES[-1], batch)
            ours, ref, theirs = median_us(
                [pymodules_step(x, y, dtype), numpy_step(x, y, dtype), torch_step(x, y, dtype)],
                args.runs)
            print(f"{'train step MLP 784-256-256-10':<34}{dtype.name:<9}{batch:>6}"
                  f"{ours:>14.1f}{ref:>11.1f}{theirs:>11.1f}{ref / ours:>10.2f}"
                  f"{theirs / ours:>10.2f}")
    if args.busy:
        threads_rows(dtype, args.runs, args.busy)


if __name__ == "__main__":
    main()
