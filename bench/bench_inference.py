"""Inference latency: pymodules against ONNX Runtime and torch eager, in one run.

    python bench/bench_inference.py [--blocks 30] [--reps 40] [--clock cpu|wall]

Models: the MLP 784-256-256-10 (ReLU, LogSoftMax) and LeNet-5 (two 5x5 convolutions with
ReLU and 2x2 max pooling, then 400-120-84-10 with ReLU, LogSoftMax) on 28x28 images. The torch
model is built first; pymodules' is ``pm.fromTorch`` of it and ONNX Runtime runs the file
``torch.onnx.export`` (the TorchScript exporter, opset 17, dynamic batch) writes from it, so
all three hold the same weights (their outputs are checked to agree before timing).

One thread everywhere (threadpoolctl on the BLAS libraries, torch.set_num_threads(1), an ORT
session with intra_op_num_threads=1), float32. For each case the contenders run in
interleaved blocks (a shuffled order per block, ``--reps`` calls each, each call timed); a
time is the median over all calls, in microseconds, of the process's CPU time (``--clock
cpu``, the default: on a shared machine another process's time slices do not count) or of
the wall clock. Ratios are other / pymodules (above 1: pymodules is faster). "predict" is
``model.predict(x)`` on one sample against one ORT run. The last lines check the targets:
forward at least 1.2x ORT at batch 1 and 1.0x at batch 64, predict at least 1.0x ORT.

``--layers`` adds, per model at batch 1, each layer's own forward (on the input it gets in
the model) against an Identity's forward on the same input (the cost of the call itself:
Module.forward, the gate, the timing), so that what a layer adds to the call stands out.
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm


def mlp(nn):
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10), nn.LogSoftmax(dim=1))


def lenet(nn):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        nn.LogSoftmax(dim=1))


MODELS = {"MLP 784-256-256-10": (mlp, (784,)), "LeNet-5": (lenet, (1, 28, 28))}


def export(torch, model, sample, path):
    """The TorchScript exporter (dynamo=False, deprecated in torch 2.9 but the one that needs
    no onnxscript) works offline; the batch axis is dynamic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.from_numpy(sample),), path, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          opset_version=17, dynamo=False)


def session(ort, path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def interleaved(contenders, blocks, reps, clock=time.perf_counter):
    """{name: median seconds per call}: every call is timed on its own, so that the calls
    another process pre-empts (a busy machine) fall in the tail, not in the median."""
    times = {name: [] for name in contenders}
    names = list(contenders)
    for fn in contenders.values():  # warm-up
        for _ in range(reps):
            fn()
    for _ in range(blocks):
        random.shuffle(names)
        for name in names:
            fn, out = contenders[name], times[name]
            for _ in range(reps):
                start = clock()
                fn()
                out.append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def layer_times(model, x, blocks, reps, clock):
    """[(layer, input shape, its forward, an Identity's forward)] in seconds, each layer fed
    the input it gets inside ``model`` (a Sequential), interleaved as the models are."""
    model.forward(x)
    rows, inp = [], x
    for child in model.modules:
        identity = pm.Identity()
        t = interleaved({"own": lambda c=child, i=inp: c.forward(i),
                         "identity": lambda c=identity, i=inp: c.forward(i)},
                        max(blocks // 3, 1), reps, clock)
        rows.append((type(child).__name__, tuple(inp.shape), t["own"], t["identity"]))
        inp = child.output
    return rows


def blas_kernels():
    return ", ".join(f"{i['internal_api']} {i['version']} {i.get('architecture', '?')} "
                     f"({os.path.basename(i['filepath'])})"
                     for i in threadpool_info() if i["user_api"] == "blas")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--layers", action="store_true",
                        help="also time each layer of each model at batch 1")
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    pm.setNumThreads(1)
    torch.manual_seed(0)
    random.seed(0)
    rng = np.random.default_rng(0)
    rows, breakdowns = [], []
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    with threadpool_limits(1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        print(f"BLAS: {blas_kernels()}; torch {torch.__version__}, onnxruntime "
              f"{ort.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
        for name, (make, shape) in MODELS.items():
            tm = make(torch.nn).eval()
            ours = pm.fromTorch(tm)
            path = os.path.join(tmp, "model.onnx")
            export(torch, tm, rng.standard_normal((2,) + shape).astype(np.float32), path)
            sess = session(ort, path)
            for batch in (1, 64):
                x = rng.standard_normal((batch,) + shape).astype(np.float32)
                tx = torch.from_numpy(x)
                feed = {"x": x}
                with torch.inference_mode():
                    ref = tm(tx).numpy()
                for got in (ours.forward(x), sess.run(None, feed)[0], ours.predict(x)):
                    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)

                def torch_eager(tm=tm, tx=tx):
                    with torch.inference_mode():
                        tm(tx)

                contenders = {
                    "forward": lambda ours=ours, x=x: ours.forward(x),
                    "ort": lambda sess=sess, feed=feed: sess.run(None, feed),
                    "torch": torch_eager,
                }
                if batch == 1:
                    contenders["predict"] = lambda ours=ours, x=x: ours.predict(x)
                t = interleaved(contenders, args.blocks, args.reps, clock)
                rows.append((name, batch, t))
                if args.layers and batch == 1:
                    breakdowns.append((name, t["forward"],
                                       layer_times(ours, x, args.blocks, args.reps, clock)))
    print(f"\ntimes: median {args.clock} time per call, microseconds")
    print("| model | batch | pm forward | pm predict | ORT | torch eager | ORT / forward | "
          "torch / forward | ORT / predict |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, t in rows:
        us = {k: v * 1e6 for k, v in t.items()}
        pred = f"{us['predict']:.1f}" if "predict" in us else "-"
        pred_ratio = f"{t['ort'] / t['predict']:.2f}" if "predict" in t else "-"
        print(f"| {name} | {batch} | {us['forward']:.1f} | {pred} | {us['ort']:.1f} | "
              f"{us['torch']:.1f} | {t['ort'] / t['forward']:.2f} | "
              f"{t['torch'] / t['forward']:.2f} | {pred_ratio} |")

    for name, total, layers in breakdowns:
        print(f"\n{name}, batch 1, per layer: median {args.clock} time of its forward alone, "
              f"microseconds (an Identity's forward on the same input: the call's own cost)")
        print("| layer | input | forward | Identity |")
        print("|---|---|---:|---:|")
        for label, shape, own, empty in layers:
            print(f"| {label} | {shape} | {own * 1e6:.2f} | {empty * 1e6:.2f} |")
        own = sum(r[2] for r in layers)
        print(f"| sum | | {own * 1e6:.1f} | {sum(r[3] for r in layers) * 1e6:.1f} |")
        print(f"model forward {total * 1e6:.1f} us: {(total - own) * 1e6:+.1f} us beside its "
              f"layers' own (the Sequential's walk, which runs its children's forward steps "
              f"inline, without the call a layer alone pays; and caches the layers alone keep "
              f"warm)")

    print()
    for name, batch, t in rows:
        goal = 1.2 if batch == 1 else 1.0
        ratio = t["ort"] / t["forward"]
        print(f"{name} batch {batch}: ORT / forward {ratio:.2f} (target >= {goal}): "
              f"{'met' if ratio >= goal else 'NOT met'}")
        if "predict" in t:
            ratio = t["ort"] / t["predict"]
            print(f"{name} batch {batch}: ORT / predict {ratio:.2f} (target >= 1.0): "
                  f"{'met' if ratio >= 1.0 else 'NOT met'}")

if __name__ == "__main__":
    main()
