"""BigDL's Attention and a Transformer language model step against PyTorch eager, one thread.

Attention: forward + backward of [x, x, causal bias] against torch.nn.MultiheadAttention
(bias=False, the same weights, an additive float mask). Transformer: one training step
(forward, a per-step ClassNLL loss, backward) of the language model (pymodules only).
Medians of interleaved blocks, float32.
Run: python bench/bench_transformer.py
"""

import timeit

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the PyTorch column stays empty
    torch = None


def _median_ms(fns, repeat=15):
    """Median ms of each function, timed in alternating blocks."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, f in enumerate(fns):
            times[i].append(timeit.timeit(f, number=1))
    return [float(np.median(t)) * 1e3 for t in times]


def attention(batch, time, hidden, heads):
    rng = np.random.default_rng(0)
    m = pm.Attention(hidden, heads, 0.0)
    x = rng.standard_normal((batch, time, hidden)).astype(np.float32)
    bias = np.triu(np.full((time, time), -1e9, np.float32), 1)
    g = rng.standard_normal(x.shape).astype(np.float32)
    table = [x, x, bias[None, None]]

    def ours():
        m.forward(table)
        m.backward(table, g)

    fns = [ours]
    if torch is not None:
        t = torch.nn.MultiheadAttention(hidden, heads, bias=False, batch_first=True)
        with torch.no_grad():
            t.in_proj_weight.copy_(torch.from_numpy(np.concatenate(m.parameters()[0][:3])))
            t.out_proj.weight.copy_(torch.from_numpy(m.parameters()[0][3]))
        tx, tm, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(bias), \
            torch.from_numpy(g)

        def theirs():
            out, _ = t(tx, tx, tx, attn_mask=tm, need_weights=False)
            out.backward(tg)

        fns.append(theirs)
    return _median_ms(fns)


def lm_step(batch, time, vocab, hidden, heads, layers):
    rng = np.random.default_rng(0)
    m = pm.Transformer(vocab, hidden, heads, 4 * hidden, layers, 0.0, 0.0, 0.0, None, True)
    model = pm.Sequential(m, pm.TimeDistributed(pm.LogSoftMax()))
    crit = pm.TimeDistributedCriterion(pm.ClassNLLCriterion(), True)
    ids = rng.integers(0, vocab, (batch, time)).astype(np.float32)

    def ours():
        y = model.forward(ids)
        crit.forward(y, ids)
        model.zeroGradParameters()
        model.backward(ids, crit.backward(y, ids))

    return _median_ms([ours])


def main():
    for info in threadpool_info():
        print(f"# {info.get('internal_api')} {info.get('version')} "
              f"{info.get('architecture')}")
    with threadpool_limits(1):
        print("| op | shape | pymodules ms | torch ms | ratio torch/pymodules |")
        print("| --- | --- | --- | --- | --- |")
        for b, t, h, heads in ((8, 64, 256, 4), (32, 128, 256, 4), (1, 512, 256, 4)):
            row = attention(b, t, h, heads)
            ratio = f"{row[1] / row[0]:.2f}" if len(row) > 1 else ""
            torch_ms = f"{row[1]:.2f}" if len(row) > 1 else ""
            print(f"| Attention fwd+bwd | ({b}, {t}, {h}), {heads} heads | {row[0]:.2f} | "
                  f"{torch_ms} | {ratio} |")
        (ms,) = lm_step(32, 32, 35, 64, 4, 2)
        print(f"| Transformer LM step | (32, 32), H 64, 2 layers | {ms:.2f} | | |")


if __name__ == "__main__":
    main()
