"""Recurrent(LSTM) and Recurrent(GRU) against torch.nn.LSTM / torch.nn.GRU (eager), one run.

    python bench/bench_recurrent.py [--blocks 15] [--dtype float32] [--phases] [--only 'LSTM b16']

One thread for both libraries (threadpoolctl, applied after torch is imported, and
torch.set_num_threads(1)). Each case times forward + backward (gradients of the input and of
every parameter) on the same data, in interleaved blocks: each block runs pymodules and torch
in a shuffled order, a few calls each, and the figure is the median over blocks of the
process CPU time per call (on a shared machine wall time also counts the other processes'
turns; with one thread each the two agree on a quiet one). The ratio is torch / pymodules
(above 1: pymodules faster). BigDL's GRU differs from torch's (the reset gate before U_n),
but the work per step is the same. For the LSTM cases a
third run times only the GEMMs of pymodules' forward + backward (same shapes, same OpenBLAS),
in the same interleaved blocks: what the feature-major design would cost on BLAS alone. Each
LSTM line says where its per-step products ran: float32 runs one product per step each way
over [x(t), h(t-1)] on engine's packed-panel kernel (lstm_xh_forward / lstm_xh_backward, any
batch; panels of 24 columns, 48 on a core with AVX-512) where ``XH_PANELS`` allows; float64
the feature-major kernels (_narrow.h for the batches that
``lstm_step_kernel`` picks, else BLAS).

``--phases`` adds, for each LSTM case (float32), the CPU time of each kernel call of one
forward + backward on the module's own buffers (interleaved blocks, medians): the forward
(packing the weights, one product per step over [x(t), h(t-1)], the gate passes), the
backward (packing, gate-backward passes, one product per step giving dx(t) and dh(t-1)) and
the weight gradients (W_ih, W_hh and the bias in one pass over all steps, engine/_recurrent.h's
pm_rec_wgrad, or two BLAS GEMMs and the bias pass for the largest sizes); "module" is the
whole call through Recurrent, whose excess over the sum is the Python layers' share.
"""

import argparse
import random
import statistics
import time

import numpy as np

try:
    import torch
except ImportError:  # the bench needs the oracle
    torch = None

from pymodules.engine.recurrent import lstm_step_kernel  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import pymodules as pm  # noqa: E402
from pymodules.nn import recurrent  # noqa: E402

CASES = [("LSTM", 16, 32, 64, 128), ("LSTM", 128, 32, 256, 256), ("GRU", 16, 32, 64, 128),
         ("GRU", 128, 32, 256, 256)]
# The targets of the figures: (cell, batch, time, input, hidden) -> minimum ratio.
TARGETS = {("LSTM", 16, 32, 64, 128): 1.5, ("LSTM", 128, 32, 256, 256): 1.0}


def pymodules_case(cell, batch, steps, fan_in, hidden, dtype, rng):
    rec = pm.Recurrent().add(getattr(pm, cell)(fan_in, hidden, dtype=dtype))
    x = rng.standard_normal((batch, steps, fan_in)).astype(dtype)
    go = rng.standard_normal((batch, steps, hidden)).astype(dtype)

    def run(n):
        for _ in range(n):
            rec.forward(x)
            rec.backward(x, go)
    return run


def torch_case(cell, batch, steps, fan_in, hidden, dtype, rng):
    t = getattr(torch.nn, cell)(fan_in, hidden, batch_first=True).to(getattr(torch, dtype))
    x = torch.from_numpy(rng.standard_normal((batch, steps, fan_in)).astype(dtype))
    x.requires_grad_()
    go = torch.from_numpy(rng.standard_normal((batch, steps, hidden)).astype(dtype))

    def run(n):
        for _ in range(n):
            x.grad = None
            y = t(x)[0]
            y.backward(go)
    return run


def lstm_gemms_case(cell, batch, steps, fan_in, hidden, dtype, rng):
    """Only the GEMMs of Recurrent(LSTM) forward + backward, with their shapes and operand
    orders (feature-major, as engine/recurrent.pyx runs them), through SciPy's BLAS wrappers
    on the same OpenBLAS: the floor that the passes around them add to. Each per-step product
    reads contiguous copies instead of strided columns, and each call pays the wrapper's
    overhead (about 2 us), which the kernels do not."""
    from scipy.linalg import blas

    gemm = blas.sgemm if dtype == "float32" else blas.dgemm
    g, n = 4 * hidden, steps * batch

    def a(*shape):
        return rng.standard_normal(shape).astype(dtype)

    w, u, ut, x = a(g, fan_in), a(g, hidden), a(hidden, g), a(fan_in, n)
    proj, dg, hs, gi = a(g, n), a(g, n), a(hidden, n), a(fan_in, n)
    step, dstep, h, dh = a(g, batch), a(g, batch), a(hidden, batch), a(hidden, batch)
    gw, gu = a(g, fan_in), a(g, hidden)

    def mm(c, left, right, trans_left=False, trans_right=False, beta=0.0):
        # row-major c = op(left) @ op(right) is column-major c.T = op(right).T @ op(left).T
        gemm(1.0, right.T, left.T, beta=beta, c=c.T, overwrite_c=True,
             trans_a=trans_right, trans_b=trans_left)

    def run(k):
        for _ in range(k):
            mm(proj, w, x)  # projection of the sequence
            for _ in range(steps - 1):
                mm(step, u, h)  # W_hh @ h(t-1)
            for _ in range(steps - 1):
                mm(dh, ut, dstep)  # W_hh.T @ dG(t), on the transposed copy
            mm(gi, w, dg, trans_left=True)  # gradInput
            mm(gw, dg, x, trans_right=True, beta=1.0)  # gradW_ih
            mm(gu, dg[:, batch:], hs[:, :n - batch], trans_right=True, beta=1.0)  # gradW_hh
    return run


def lstm_phases(batch, steps, fan_in, hidden, dtype, rng):
    """The kernel calls of one Recurrent(LSTM) forward + backward (p = 0, float32: the
    one-product-per-step kernels over [x(t), h(t-1)]), each on its own, on the buffers the
    module keeps: name -> run(n)."""
    from pymodules.engine import recurrent as R

    cell = pm.LSTM(fan_in, hidden, dtype=dtype)
    rec = pm.Recurrent().add(cell)
    x = rng.standard_normal((batch, steps, fan_in)).astype(dtype)
    go = rng.standard_normal((batch, steps, hidden)).astype(dtype)
    rec.forward(x)
    rec.backward(x, go)
    c = cell
    out, gi = np.empty((batch, steps, hidden), dtype), np.empty((batch, steps, fan_in), dtype)
    calls = {
        "forward (pack, products, gates)": lambda: R.lstm_xh_forward(
            x, c.weight, c.hiddenWeight, c.bias, c._packed, c._packedBias, c._xh, c._gatesT,
            c._cell, c._tanhCell, out),
        "backward (pack, gates, products)": lambda: R.lstm_xh_backward(
            go, c.weight, c.hiddenWeight, c._packedBack, c._gatesT, c._cell, c._tanhCell,
            c._dgates, c._dxh, c._dc, gi),
        "weight + bias gradients": lambda: R.lstm_xh_acc(
            c._xh, c._dgates, c.gradWeight, c.gradBias, c.gradHiddenWeight, 1.0, 1.0),
        "module (all, through Recurrent)": lambda: (rec.forward(x), rec.backward(x, go)),
    }

    def runner(f):
        def run(n):
            for _ in range(n):
                f()
        return run
    return {name: runner(f) for name, f in calls.items()}


def measure(runs, blocks, calls):
    """Median CPU seconds per call of each run, interleaved in blocks of shuffled order."""
    samples = {name: [] for name in runs}
    for run in runs.values():
        run(2)  # warm-up: buffers, lazy initialisation
    for _ in range(blocks):
        order = list(runs)
        random.shuffle(order)
        for name in order:
            start = time.process_time()
            runs[name](calls)
            samples[name].append((time.process_time() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--only", default="",
                        help="run only the cases whose name contains this, e.g. 'LSTM b16'")
    parser.add_argument("--phases", action="store_true",
                        help="also time each kernel call of the LSTM cases on its own")
    args = parser.parse_args()
    if torch is None:
        raise SystemExit("bench_recurrent needs torch")
    torch.set_num_threads(1)
    random.seed(0)
    with threadpool_limits(limits=1):
        blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                for i in threadpool_info()]
        print(f"BLAS pools (api, kernel, threads): {blas}; torch threads "
              f"{torch.get_num_threads()}; {args.dtype}")
        print(f"{'case':<34} {'pymodules ms':>12} {'torch ms':>10} {'ratio':>7}  target")
        ok = True
        for case in CASES:
            if args.only not in f"{case[0]} b{case[1]} t{case[2]} {case[3]}->{case[4]}":
                continue
            rng = np.random.default_rng(0)
            runs = {"pymodules": pymodules_case(*case, args.dtype, rng),
                    "torch": torch_case(*case, args.dtype, rng)}
            if case[0] == "LSTM":
                runs["gemms"] = lstm_gemms_case(*case, args.dtype, rng)
            t = measure(runs, args.blocks, args.calls)
            ratio = t["torch"] / t["pymodules"]
            target = TARGETS.get(case)
            mark = "" if target is None else f">= {target} " + ("ok" if ratio >= target
                                                               else "MISSED")
            ok &= target is None or ratio >= target
            name = f"{case[0]} b{case[1]} t{case[2]} {case[3]}->{case[4]} fwd+bwd"
            steps = ""
            if case[0] == "LSTM":
                own = recurrent.OWN_PRODUCTS and lstm_step_kernel(case[1], case[4])
                panels = args.dtype == "float32" and recurrent.XH_PANELS
                width = recurrent.lstm_xh_panels(case[3], case[4])[2]
                steps = "  (steps on " + (f"packed [x, h] panels of {width})" if panels
                                          else "_narrow.h)" if own else "BLAS)")
            print(f"{name:<34} {t['pymodules'] * 1e3:12.3f} {t['torch'] * 1e3:10.3f} "
                  f"{ratio:7.2f}  {mark}{steps}")
            if "gemms" in t:
                print(f"{'  its GEMMs alone (SciPy BLAS)':<34} {t['gemms'] * 1e3:12.3f} "
                      f"{'':>10} {t['torch'] / t['gemms']:7.2f}  (torch / GEMMs)")
            if args.phases and case[0] == "LSTM" and args.dtype == "float32":
                p = measure(lstm_phases(*case[1:], args.dtype, np.random.default_rng(0)),
                            args.blocks, args.calls)
                parts = sum(v for k, v in p.items() if not k.startswith("module"))
                for name, v in p.items():
                    print(f"    {name:<32} {v * 1e3:10.3f} ms")
                print(f"    {'sum of the kernel calls':<32} {parts * 1e3:10.3f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
