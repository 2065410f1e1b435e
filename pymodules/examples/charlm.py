"""A character-level language model: BigDL's Transformer trained on the Gettysburg Address.

The text (public domain, bundled as gettysburg.txt) is cut into windows of ``--length``
characters; the language-model Transformer shifts its input right by one step and attends
causally, so the output at step t predicts character t from the characters before it and
the targets are the windows themselves. Run

    python -m pymodules.examples.charlm [--epochs 15] [--out charlm-out]

It trains with the Optimizer and Adam on one thread (about a minute at the defaults),
prints the loss per epoch (nats per character), generates a sample from a prompt, and saves
and reloads the model, checking that the reloaded one gives identical outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import pymodules as pm

TEXT = Path(__file__).with_name("gettysburg.txt")


def load_text():
    """The text with its lines joined, and its alphabet (sorted characters)."""
    text = " ".join(TEXT.read_text(encoding="utf-8").split())
    return text, sorted(set(text))


def windows(codes, length):
    """Every window of ``length`` consecutive character codes, (n, length) float64."""
    n = len(codes) - length + 1
    return np.stack([codes[i:i + length] for i in range(n)]).astype(np.float64)


def build(vocab, hidden, heads, layers, dropout):
    """Transformer language model with output weights shared with the embedding, then the
    log-probabilities of each step."""
    transformer = pm.Transformer(vocab, hidden, heads, 2 * hidden, layers, dropout, dropout,
                                 dropout, paddingValue=None, withShareWeightsLinear=True)
    # The embedding is also the output layer here: BigDL's normal(0, 1) start would give
    # logits of about sqrt(hidden) standard deviations; the original model's normal(0,
    # hidden^-0.5) starts near the uniform distribution.
    transformer.modules[0].setInitMethod(pm.RandomNormal(0.0, hidden ** -0.5))
    return pm.Sequential(transformer, pm.TimeDistributed(pm.LogSoftMax()))


def generate(model, alphabet, prompt, count, length, rng, temperature=0.6):
    """``prompt`` followed by ``count`` characters sampled from the model, each from the
    distribution at the step after the last ``length - 1`` characters."""
    index = {c: i for i, c in enumerate(alphabet)}
    codes = [index[c] for c in prompt]
    model.evaluate()
    for _ in range(count):
        context = codes[-(length - 1):] + [0]  # the last step sees the tokens before it
        log_prob = model.forward(np.array([context], np.float64))[0, -1]
        p = np.exp(log_prob.astype(np.float64) / temperature)
        codes.append(int(rng.choice(len(p), p=p / p.sum())))
    return "".join(alphabet[c] for c in codes)


def main(argv=None):
    """Run the example; (per-epoch losses, sample) or None when the reloaded model's
    outputs differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--length", type=int, default=32, help="characters per window")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--sample", type=int, default=200, help="characters to generate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="charlm-out", help="folder for the saved model")
    args = parser.parse_args(argv)
    pm.setNumThreads(1)
    pm.setSeed(args.seed)
    text, alphabet = load_text()
    codes = np.array([alphabet.index(c) for c in text])
    x = windows(codes, args.length)
    print(f"{TEXT.name}: {len(text)} characters, alphabet of {len(alphabet)}, "
          f"{len(x)} windows of {args.length}")
    model = build(len(alphabet), args.hidden, args.heads, args.layers, args.dropout)
    print(f"model: {model.modules[0]}, {model.getParameters()[0].size} parameters")

    summary = pm.TrainSummary()
    optimizer = pm.Optimizer(model, pm.DataSet.array(x, x),
                             pm.TimeDistributedCriterion(pm.ClassNLLCriterion(), True),
                             pm.Adam(learningRate=3e-3), pm.MaxEpoch(args.epochs), args.batch)
    optimizer.setTrainSummary(summary)
    start = time.perf_counter()
    optimizer.optimize()
    seconds = time.perf_counter() - start
    losses = [float(chunk.mean()) for chunk in
              np.array_split(summary.readScalar("Loss")[:, 1], args.epochs)]
    print(f"trained {args.epochs} epochs in {seconds:.1f} s on {pm.getNumThreads()} thread; "
          f"loss per epoch (nats per character):")
    for e, loss in enumerate(losses, 1):
        print(f"  epoch {e:3d}  {loss:.3f}  {'#' * int(round(loss * 12))}")

    sample = generate(model, alphabet, "Four score", args.sample, args.length,
                      np.random.default_rng(args.seed))
    print(f"sample: {sample!r}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "charlm.model")
    model.save(path, overWrite=True)
    again = pm.load(path)
    same = np.array_equal(again.predict(x[:16]), model.predict(x[:16]))
    print(f"saved to {path} and reloaded: identical outputs: {same}")
    return (losses, sample) if same else None


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
