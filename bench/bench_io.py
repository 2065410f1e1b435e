"""Save and load of a 100M-parameter model: pymodules' format against np.save/np.load of
the same arrays (one .npy per array) and, when installed, torch.save/torch.load.

Goal: save + load within 2x of np.save + np.load, and peak extra memory (tracemalloc)
within 1.2x of the model's size. pymodules' save also fsyncs the file before renaming it
into place (atomic writes); the "np.save+fsync" column shows what that costs NumPy.

    python bench/bench_io.py [--repeats 7] [--dir /tmp] [--dtypes float32 float64]
"""

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

LAYERS, WIDTH = 25, 2000  # 25 x Linear(2000, 2000): 100.05M parameters


def model(dtype):
    pm.setSeed(0)
    m = pm.Sequential()
    for _ in range(LAYERS):
        m.add(pm.Linear(WIDTH, WIDTH, dtype=dtype))
    return m


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak(fn):
    """Peak bytes traced while ``fn`` runs, above what was allocated before."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    top = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return top


def np_save(arrays, folder, sync=False):
    """One .npy per array, into new files (as a save to a new path, or pymodules' temporary
    file, writes)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for i, a in enumerate(arrays):
        path = os.path.join(folder, f"{i}.npy")
        with open(path, "wb") as f:
            np.save(f, a, allow_pickle=False)
            if sync:
                f.flush()
                os.fsync(f.fileno())


def np_load(count, folder):
    return [np.load(os.path.join(folder, f"{i}.npy"), allow_pickle=False)
            for i in range(count)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    for lib in threadpool_info():
        print(f"BLAS: {lib.get('internal_api')} {lib.get('version')} "
              f"({lib.get('architecture')}), {lib.get('num_threads')} threads -> 1")
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        with threadpool_limits(1):
            run(root, args.repeats, torch, [np.dtype(d).type for d in args.dtypes])
    finally:
        shutil.rmtree(root)


def run(root, repeats, torch, dtypes):
    print(f"{'operation':<10} {'of':<7}{'dtype':<8} {'model':<18} {'pymodules s':>11} "
          f"{'np.save/load s':>14} {'ratio':>6} {'np+fsync s':>10} {'ratio':>6} "
          f"{'torch s':>8} {'ratio':>6}")
    mem_rows = [bench_dtype(root, dtype, repeats, torch) for dtype in dtypes]
    print()
    print(f"{'dtype':<8} {'params MB':>9} {'save peak':>10} {'load peak':>10} "
          f"{'np.load peak':>12}")
    print(f"{'':<8} {'':>9} {'/params':>10} {'/params':>10} {'/params':>12}")
    for name, params, save_peak, load_peak, np_peak in mem_rows:
        print(f"{name:<8} {params / 1e6:>9.1f} {save_peak / params:>10.3f} "
              f"{load_peak / params:>10.3f} {np_peak / params:>12.3f}")
    print("(a load's peak holds the loaded module itself; its gradients are made on first use)")


def bench_dtype(root, dtype, repeats, torch):
    """Print the timing rows of one dtype; return its memory row."""
    m = model(dtype)
    weights = m.getWeightsBias()
    params = sum(a.nbytes for a in weights)
    shape = f"{LAYERS}x({WIDTH}x{WIDTH})"
    path = os.path.join(root, "model.pm")
    npdir = os.path.join(root, "npy")
    tpath = os.path.join(root, "model.pt")
    tensors = {str(i): torch.from_numpy(a) for i, a in enumerate(weights)} if torch else {}

    def torch_save():
        with contextlib.suppress(FileNotFoundError):
            os.remove(tpath)
        torch.save(tensors, tpath)

    jobs = {
        "pm save": lambda: m.save(path, overWrite=True),
        "pm load": lambda: pm.load(path),
        "np save": lambda: np_save(weights, npdir),
        "np load": lambda: np_load(len(weights), npdir),
        "np sync": lambda: np_save(weights, npdir, sync=True),
    }
    if torch is not None:
        jobs["pt save"] = torch_save
        jobs["pt load"] = lambda: torch.load(tpath, weights_only=True)
    times = {k: [] for k in jobs}
    names = list(jobs)
    order = np.random.default_rng(0)
    for r in range(repeats + 1):  # the first round warms up
        # A shuffled order each round: a large save leaves work behind (the replaced
        # file's blocks being freed, writeback), and on this kind of VM the job right
        # after it was measured up to 5x slower; a fixed order puts that on one column.
        for k in names if r == 0 else order.permutation(names):
            t = timed(jobs[k])
            if r:
                times[k].append(t)
    nan = float("nan")
    for stat in (min, statistics.median):
        t = {k: stat(v) for k, v in times.items()}
        for op, ours, base, sync, pt in (
                ("save", t["pm save"], t["np save"], t["np sync"], t.get("pt save", nan)),
                ("load", t["pm load"], t["np load"], t["np load"], t.get("pt load", nan)),
                ("save+load", t["pm save"] + t["pm load"], t["np save"] + t["np load"],
                 t["np sync"] + t["np load"], t.get("pt save", nan) + t.get("pt load", nan))):
            print(f"{op:<10} {stat.__name__:<7}{np.dtype(dtype).name:<8} {shape:<18} "
                  f"{ours:>11.3f} {base:>14.3f} {ours / base:>6.2f} {sync:>10.3f} "
                  f"{ours / sync:>6.2f} {pt:>8.3f} {ours / pt:>6.2f}")
    return (np.dtype(dtype).name, params, peak(jobs["pm save"]), peak(jobs["pm load"]),
            peak(jobs["np load"]))


if __name__ == "__main__":
    main()
