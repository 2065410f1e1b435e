"""Train an LSTM and a GRU on scikit-learn's digits read as sequences (8 steps of 8 pixels).

Each 8x8 image is read row by row: a sequence of 8 time steps with 8 features. The
recurrent layer runs over the rows and the last step's hidden state is classified. The
dataset ships with scikit-learn: nothing is downloaded. Run

    python -m pymodules.examples.sequences [--epochs 15] [--out sequences-out] [--no-progress]

It trains both models with the Optimizer (progress bar and log lines), validates every
epoch with Top1Accuracy and Loss, predicts classes, saves and reloads each model (checking
that the reloaded one gives identical outputs) and writes the loss and accuracy curves to
a PNG (matplotlib), both in the ``--out`` folder.
Needs the extras: ``pip install pymodules[examples,progress]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

import pymodules as pm
from pymodules.examples.digits import load_digits, plot, report, train

STEPS, FEATURES, CLASSES = 8, 8, 10


def recurrent(cell, hidden):
    """(n, 1, 8, 8) images -> (n, 8, 8) sequences of rows -> the cell over the rows -> the
    last step's hidden state -> 10 log-probabilities."""
    return (pm.Sequential()
            .add(pm.InferReshape([-1, FEATURES], True))   # (n, 8 steps, 8 features)
            .add(pm.Recurrent().add(cell))                # (n, 8, hidden)
            .add(pm.Select(1, -1))                        # the last step: (n, hidden)
            .add(pm.Linear(hidden, CLASSES)).add(pm.LogSoftMax()))


def lstm(hidden=64):
    return recurrent(pm.LSTM(FEATURES, hidden), hidden)


def gru(hidden=64):
    return recurrent(pm.GRU(FEATURES, hidden), hidden)


def adam():
    """Adam at 0.01, decayed as 0.01 / (1 + 0.003 t) over the iterations t: without the
    decay the test accuracy of the last epochs swings by a few points."""
    return pm.Adam(learningRate=0.01, learningRateDecay=0.003)


def save_and_reload(name, model, test_x, out_dir):
    """Save ``model``, load it back; True when the reloaded model's outputs are identical."""
    path = os.path.join(out_dir, f"sequences-{name.lower()}.model")
    model.save(path, overWrite=True)
    again = pm.load(path)
    same = np.array_equal(again.predict(test_x), model.predict(test_x))
    print(f"{name}: saved to {path} and reloaded: identical outputs: {same}")
    return same


def main(argv=None):
    """Run the example; the test accuracy of each model trained, by name (None when a
    reloaded model's outputs differ from the model's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="sequences-out",
                        help="folder for the models and the PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    out_dir = args.out
    os.makedirs(out_dir, exist_ok=True)
    pm.setSeed(args.seed)
    (xtr, ytr), (xte, yte) = load_digits()
    train_set, test_set = pm.DataSet.array(xtr, ytr), (xte, yte)
    print(f"digits as sequences: {len(xtr)} training and {len(xte)} test images, each "
          f"{STEPS} steps of {FEATURES} pixels, {CLASSES} classes")

    curves, accuracy, reloaded = {}, {}, {}
    for name, build in (("LSTM", lstm), ("GRU", gru)):
        model, ts, vs = train(name, build(args.hidden), train_set, test_set, args.epochs,
                              args.batch, adam(), not args.no_progress)
        curves[name] = (ts, vs)
        accuracy[name] = report(name, model, test_set)
        reloaded[name] = save_and_reload(name, model, xte, out_dir)
    plot(curves, os.path.join(out_dir, "sequences-curves.png"))
    print("\n" + ", ".join(f"{k}: {v:.2%}" for k, v in accuracy.items()) + " test accuracy")
    return accuracy if all(reloaded.values()) else None


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
