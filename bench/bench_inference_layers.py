"""Where a forward's time goes: pymodules per module against ONNX Runtime per node, batch 64.

    python bench/bench_inference_layers.py [--batch 64] [--reps 200]

The models, weights and ONNX files of bench/bench_inference.py (the MLP 784-256-256-10 and
LeNet-5). One thread, float32. pymodules: each module of the Sequential run alone on the
input the one before it produced, median process CPU time per call over ``--reps`` calls
(after a warm-up), and the whole forward the same way; the modules alone find their weights
in cache more often than inside the whole forward. ONNX Runtime: the median per-node kernel
time of its own profiler (``enable_profiling``, wall clock) over as many runs, and the
median ``model_run``. Microseconds.
"""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
from bench_inference import MODELS, blas_kernels, export
from threadpoolctl import threadpool_limits

import pymodules as pm


def cpu_median(fn, reps):
    for _ in range(max(reps // 10, 5)):
        fn()
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times) * 1e6


def ort_profile(ort, path, x, reps):
    """[(node, op, median us)] in run order, and the median model_run."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(path), "ort_profile")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    warm = max(reps // 10, 5)
    for _ in range(warm + reps):
        sess.run(None, {"x": x})
    profile = sess.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.remove(profile)
    nodes, runs = collections.defaultdict(list), []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            nodes[(e["name"][:-len("_kernel_time")], e["args"].get("op_name", "?"))].append(
                e["dur"])
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            runs.append(e["dur"])
    rows = [(name, op, statistics.median(d[warm:] or d)) for (name, op), d in nodes.items()]
    return rows, statistics.median(runs[warm:] or runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    pm.setNumThreads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    with threadpool_limits(1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        print(f"BLAS: {blas_kernels()}; onnxruntime {ort.__version__}; batch {args.batch}")
        for name, (make, shape) in MODELS.items():
            tm = make(torch.nn).eval()
            ours = pm.fromTorch(tm)
            path = os.path.join(tmp, "model.onnx")
            export(torch, tm, rng.standard_normal((2,) + shape).astype(np.float32), path)
            x = rng.standard_normal((args.batch,) + shape).astype(np.float32)
            print(f"\n{name}: pymodules forward "
                  f"{cpu_median(lambda ours=ours, x=x: ours.forward(x), args.reps):.1f} us (CPU)")
            inp = x
            for m in ours.modules:
                out = m.forward(inp).copy()
                us = cpu_median(lambda m=m, inp=inp: m.forward(inp), args.reps)
                print(f"  {type(m).__name__}({m.extraRepr()}): {us:.1f}")
                inp = out
            rows, run = ort_profile(ort, path, x, args.reps)
            print(f"{name}: ONNX Runtime model_run {run:.1f} us (wall, profiled)")
            for node, op, us in rows:
                print(f"  {op} {node}: {us:.1f}")


if __name__ == "__main__":
    main()
