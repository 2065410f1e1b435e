"""Training step of an MLP 784-256-256-10 (ReLU, LogSoftMax, ClassNLL, SGD with momentum).

One step = forward, loss, backward, parameter update (the gradient cleared in the update's
pass): pymodules as the Optimizer runs it (its LocalGradient and SGD's step on the flat
getParameters() vector), against the same step written in NumPy and in PyTorch eager, and
against its GEMMs alone (the floor: the same GEMM calls through the engine's BLAS wrapper,
same shapes, transposes and beta, taken by the forward and backward of the step). One
thread, fixed seeds, warm-up, median of many runs, taken in interleaved blocks of 25 steps;
the floor ratio in wall time (median) and in CPU time of the thread (block totals).

Then both cores: the step on 1 and 2 threads (pymodules: one model on the engine's two
threads, as the Optimizer runs it after pm.setNumThreads(2) (pymodules.threads.use_threads:
each large product cut in two, every BLAS call on one thread); one model on OpenBLAS's two
threads; two model replicas, one per core, each on a one-thread BLAS, in two processes and in
two threads; torch: torch.set_num_threads), interleaved in the same blocks, and the
Optimizer's own steps (median over MaxIteration(--runs), TrainSummary throughput) with
pm.setNumThreads(1), (2) and (2) with replicas.ENABLED. Last, the Optimizer at the default
threads on a quiet machine and against two busy background processes (pure-Python loops
the bench starts, bounded in time, and stops).

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


class Timed:
    """A step to time: ``step()``; ``enter()`` runs before each block (thread settings)."""

    def __init__(self, step, enter=None):
        self.step, self.enter = step, enter
        self.wall, self.cpu, self.calls = [], 0.0, 0


def median_us(steps, runs, warmup=20, block=25):
    """Median time of each step in microseconds (None: skipped), measured in interleaved
    blocks of ``block`` calls so that every implementation sees the same machine state.
    Steps may be callables or Timed; a Timed also gets its CPU time per call (``cpu_us``)."""
    timed = [s if isinstance(s, Timed) or s is None else Timed(s) for s in steps]
    live = [t for t in timed if t is not None]
    for t in live:
        if t.enter is not None:
            t.enter()
        for _ in range(warmup):
            t.step()
    for _ in range(max(1, runs // block)):
        for t in live:
            if t.enter is not None:
                t.enter()
            step, wall = t.step, t.wall
            c0 = time.thread_time()
            for _ in range(block):
                t0 = time.perf_counter()
                step()
                wall.append(time.perf_counter() - t0)
            t.cpu += time.thread_time() - c0
            t.calls += block
    return [float(np.median(t.wall)) * 1e6 if t is not None else float("nan") for t in timed]


def cpu_us(t):
    """CPU time of the calling thread per call of a Timed, in microseconds."""
    return t.cpu / max(t.calls, 1) * 1e6


def mlp(dtype):
    """The benchmark's MLP (SIZES, ReLU between, LogSoftMax last), seeded, in ``dtype``."""
    pm.setSeed(0)
    model = pm.Sequential()
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        model.add(pm.Linear(a, b, dtype=dtype))
        model.add(pm.ReLU() if i < len(SIZES) - 2 else pm.LogSoftMax())
    return model.float() if dtype == np.float32 else model.double()


def pymodules_step(x, y, dtype, cores=1, kind="processes"):
    """The Optimizer's step on the batch (x, y): its gradient source (on ``cores`` model
    replicas of ``kind``, replicas.KIND) and SGD's update, which clears the gradient in
    its pass."""
    from pymodules.optim import replicas
    from pymodules.optim.optimizer import LocalGradient

    model = mlp(dtype)
    crit = pm.ClassNLLCriterion()
    method = pm.SGD(0.01, momentum=0.9, dampening=0.0)
    weights, _ = model.getParameters()
    model.training()
    source = LocalGradient(None, len(x))
    saved, replicas.KIND = replicas.KIND, kind
    try:
        source.start(model, crit, cores)
    finally:
        replicas.KIND = saved
    n = len(x)

    def feval(_):
        return source.gradient_of(x, y, n), source._grad

    def step():
        method._optimize(feval, weights, True, source.split)
        source.cleared = True

    return step


def gemm_floor(x, dtype):
    """The step's GEMMs alone: the calls Linear's kernels make for the MLP at this batch
    (forward: transposed where linear.transposes says so, bias as beta = 1; backward:
    gradInput of all but the first layer, weight gradients with beta = 1), through the
    engine's BLAS wrapper, on arrays of the same shapes. A forward, weight gradient or
    gradInput that Linear runs on a kernel of its own instead of BLAS (where it has one) is
    timed as the BLAS call it replaces: the floor stays the products at BLAS's speed."""
    from pymodules.engine import blas
    from pymodules.engine import linear as L

    n = len(x)
    core = L.blas_core_name()
    ws = [np.full((b, a), 0.01, dtype) for a, b in itertools.pairwise(SIZES)]
    gws = [np.zeros_like(w) for w in ws]
    acts = [x] + [np.zeros((n, b), dtype) for b in SIZES[1:]]
    outs_t = [np.zeros((b, n), dtype) for b in SIZES[1:]]
    gos = [np.zeros((n, b), dtype) for b in SIZES[1:]]
    gis = [np.zeros((n, a), dtype) for a in SIZES[:-1]]
    calls = []
    for i, (a, b) in enumerate(itertools.pairwise(SIZES)):
        if dtype == np.float32 and L.transposes(n, a, b, core):
            calls.append((False, True, 1.0, ws[i], acts[i], 1.0, outs_t[i]))
        else:
            calls.append((False, True, 1.0, acts[i], ws[i], 1.0, acts[i + 1]))
    for i in range(len(ws) - 1, -1, -1):
        if i:
            calls.append((False, False, 1.0, gos[i], ws[i], 0.0, gis[i]))
        calls.append((True, False, 1.0, gos[i], acts[i], 1.0, gws[i]))
    gemm = blas.gemm_checked

    def step():
        for c in calls:
            gemm(*c)

    return step


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


def torch_step(x, y, dtype, threads=1):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
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
    """Median time of the Optimizer's steps (its TrainSummary throughput) at the threads
    set now, in microseconds."""
    model = mlp(dtype)
    summary = pm.TrainSummary()
    opt = pm.Optimizer(model, (x, y), pm.ClassNLLCriterion(),
                       pm.SGD(0.01, momentum=0.9, dampening=0.0),
                       pm.MaxIteration(runs + 20), len(x))
    opt.setTrainSummary(summary).setProgressBar(False).setLogInterval(0).optimize()
    throughput = summary.readScalar("Throughput")[20:, 1]
    return float(np.median(len(x) / throughput)) * 1e6


def data(batch, dtype):
    rng = np.random.default_rng(batch)
    return (rng.standard_normal((batch, SIZES[0])).astype(dtype),
            rng.integers(0, SIZES[-1], batch))


def floor_rows(dtype, batches, runs):
    """One thread: the step against NumPy, torch and its GEMMs alone."""
    print(f"\n{'one thread':<34}{'dtype':<9}{'batch':>6}{'pymodules us':>14}"
          f"{'numpy us':>11}{'torch us':>11}{'numpy/pm':>10}{'torch/pm':>10}"
          f"{'GEMMs us':>10}{'pm/GEMMs':>10}{'cpu pm/GEMMs':>14}")
    for batch in batches:
        x, y = data(batch, dtype)
        ours, floor = Timed(pymodules_step(x, y, dtype)), Timed(gemm_floor(x, dtype))
        ts = torch_step(x, y, dtype)
        t_ours, t_ref, t_theirs, t_floor = median_us(
            [ours, numpy_step(x, y, dtype), ts and Timed(ts, lambda: _torch_threads(1)),
             floor], runs)
        print(f"{'train step MLP 784-256-256-10':<34}{dtype.name:<9}{batch:>6}"
              f"{t_ours:>14.1f}{t_ref:>11.1f}{t_theirs:>11.1f}{t_ref / t_ours:>10.2f}"
              f"{t_theirs / t_ours:>10.2f}{t_floor:>10.1f}{t_ours / t_floor:>10.2f}"
              f"{cpu_us(ours) / cpu_us(floor):>14.2f}")


def _torch_threads(n):
    import torch

    torch.set_num_threads(n)


def two_thread_rows(dtype, batches, runs):
    """The step on one and two threads, pymodules and torch, interleaved; then the
    Optimizer's steps with pm.setNumThreads(1) and (2).

    pymodules on two cores three ways: two model replicas in two processes (the
    Optimizer's choice, replicas.KIND), two replicas on two threads of this process, and
    one model on OpenBLAS's two threads. Every thread limit is set at the start of each
    block, after every BLAS library (SciPy's, NumPy's, torch's) is loaded."""
    print(f"\n{'both cores':<34}{'dtype':<9}{'batch':>6}{'pm 1t us':>10}{'pm 2t us':>10}"
          f"{'2t/1t':>7}{'blas 2t':>9}{'pm 2p':>9}{'pm 2thr':>9}{'torch 1t':>10}"
          f"{'torch 2t':>10}{'2t/1t':>7}{'torch2t/pm2t':>14}")
    for batch in batches:
        x, y = data(batch, dtype)
        one = Timed(pymodules_step(x, y, dtype, 1), lambda: use_threads(1))
        engine = Timed(pymodules_step(x, y, dtype, 1), lambda: use_threads(2))
        blas2 = Timed(pymodules_step(x, y, dtype, 1), lambda: blas_threads_only(2))
        procs = Timed(pymodules_step(x, y, dtype, 2, "processes"), lambda: use_threads(1))
        thr = Timed(pymodules_step(x, y, dtype, 2, "threads"), lambda: use_threads(1))
        t1, t2 = torch_step(x, y, dtype, 1), torch_step(x, y, dtype, 2)
        p1, pe, pb, p2, pt, q1, q2 = median_us(
            [one, engine, blas2, procs, thr, t1 and Timed(t1, lambda: _torch_threads(1)),
             t2 and Timed(t2, lambda: _torch_threads(2))], runs)
        use_threads(1)
        print(f"{'train step MLP 784-256-256-10':<34}{dtype.name:<9}{batch:>6}{p1:>10.1f}"
              f"{pe:>10.1f}{p1 / pe:>7.2f}{pb:>9.1f}{p2:>9.1f}{pt:>9.1f}{q1:>10.1f}"
              f"{q2:>10.1f}{q1 / q2:>7.2f}{q2 / pe:>14.2f}")
    _torch_threads(1)
    print(f"\n{'Optimizer.optimize()':<34}{'dtype':<9}{'batch':>6}{'setNumThreads(1)':>18}"
          f"{'(2)':>10}{'2t/1t':>7}{'(2) replicas':>14}{'2r/1t':>7}")
    from pymodules.optim import replicas

    saved, enabled = pm.getNumThreads(), replicas.ENABLED
    try:
        for batch in batches:
            x, y = data(batch, dtype)
            times = {1: [], 2: [], "r": []}
            for _ in range(3):  # interleaved: three short runs each
                for n in (1, 2, "r"):
                    replicas.ENABLED = n == "r"  # "r": two replicas (replicas.KIND)
                    pm.setNumThreads(2 if n == "r" else n)
                    times[n].append(optimizer_step_us(x, y, dtype, max(runs // 3, 20)))
            o1, o2, o3 = (float(np.median(times[n])) for n in (1, 2, "r"))
            print(f"{'Optimizer steps (median)':<34}{dtype.name:<9}{batch:>6}{o1:>18.1f}"
                  f"{o2:>10.1f}{o1 / o2:>7.2f}{o3:>14.1f}{o1 / o3:>7.2f}")
    finally:
        replicas.ENABLED = enabled
        pm.setNumThreads(saved)


def busy_rows(dtype, runs, busy, batch=64):
    """The Optimizer at the default threads, quiet and against ``busy`` busy processes."""
    x, y = data(batch, dtype)
    n = pm.getNumThreads()
    quiet = optimizer_step_us(x, y, dtype, runs)
    with busy_processes(busy):
        loaded = optimizer_step_us(x, y, dtype, runs)
    print(f"\n{f'Optimizer, default threads ({n})':<34}{'dtype':<9}{'batch':>6}"
          f"{'quiet us':>11}{f'{busy} busy us':>11}{'busy/quiet':>12}")
    print(f"{'Optimizer steps (median)':<34}{dtype.name:<9}{batch:>6}{quiet:>11.1f}"
          f"{loaded:>11.1f}{loaded / quiet:>12.2f}")


def use_threads(n):
    from pymodules.threads import use_threads as use

    use(n)


def blas_threads_only(n):
    """OpenBLAS on ``n`` threads, the engine's own threads off."""
    from pymodules.engine import pool

    from pymodules.threads import _set_blas

    pool.set_threads(1)
    _set_blas(n)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--busy", type=int, default=2,
                        help="busy background processes of the last rows (0: none)")
    args = parser.parse_args()
    missing = [n for n in ("ReLU", "LogSoftMax") if not hasattr(pm, n)]
    if missing:
        sys.exit(f"this build lacks {', '.join(missing)}: the MLP cannot be built")
    dtype = np.dtype(args.dtype)
    batches = [int(b) for b in args.batches.split(",")]
    with threadpool_limits(1):
        for info in threadpool_info():
            print(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                  f"({info.get('architecture')}, {info.get('num_threads')} thread) "
                  f"{info.get('filepath')}")
        floor_rows(dtype, batches, args.runs)
    two_thread_rows(dtype, batches, args.runs)
    if args.busy:
        busy_rows(dtype, args.runs, args.busy)


if __name__ == "__main__":
    main()
