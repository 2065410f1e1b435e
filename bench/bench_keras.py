"""Keras-style ``fit`` against the same training through the ``Optimizer``.

One Keras-style MLP 784-256-256-10 (ReLU, softmax, sparse categorical cross-entropy, SGD
with momentum) trained on the same synthetic data, batch and number of epochs, either by
``model.fit(x, y, ...)`` or by ``pm.Optimizer(model, (x, y), criterion, method,
MaxEpoch(n), batch).optimize()``: the runs alternate (fit, Optimizer, fit, ...) on one
thread, and the figure is the ratio of the medians. ``fit`` builds the dataset and an
Optimizer per call, so what it adds is that set-up; the goal is at most 5%.

    python bench/bench_keras.py [--runs 15] [--epochs 2] [--samples 4096] [--batch 64]
"""

import argparse
import logging
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm
from pymodules import keras as K


def model():
    pm.setSeed(0)
    m = K.Sequential()
    m.add(K.Dense(256, activation="relu", input_shape=(784,)))
    m.add(K.Dense(256, activation="relu"))
    m.add(K.Dense(10, activation="softmax"))
    return m


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    logging.getLogger("pymodules").setLevel(logging.WARNING)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, 784)).astype(np.float32)
    y = rng.integers(0, 10, args.samples)

    with threadpool_limits(1):
        pm.setNumThreads(1)
        blas = ", ".join(f"{i['internal_api']} {i.get('architecture')}"
                         for i in threadpool_info() if i["user_api"] == "blas")
        keras_model, plain_model = model(), model()
        keras_model.compile(pm.SGD(0.01, momentum=0.9, dampening=0.0),
                            "sparse_categorical_crossentropy")
        method = pm.SGD(0.01, momentum=0.9, dampening=0.0)
        criterion = pm.ClassNLLCriterion(logProbAsInput=False)

        def with_fit():
            keras_model.fit(x, y, batch_size=args.batch, nb_epoch=args.epochs)

        def with_optimizer():
            pm.Optimizer(plain_model, (x, y), criterion, method, pm.MaxEpoch(args.epochs),
                         args.batch).setProgressBar(False).optimize()

        runs = {with_fit: [], with_optimizer: []}
        for step in runs:  # warm-up
            step()
        for _ in range(args.runs):
            for step, times in runs.items():
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
    fit_s, opt_s = (float(np.median(t)) for t in runs.values())
    print(f"BLAS: {blas}; 1 thread; {args.samples} samples x {args.epochs} epochs, batch "
          f"{args.batch}, median of {args.runs} interleaved runs")
    print(f"{'fit':>10} {fit_s * 1e3:9.1f} ms")
    print(f"{'Optimizer':>10} {opt_s * 1e3:9.1f} ms")
    print(f"fit / Optimizer: {fit_s / opt_s:.3f} (goal: at most 1.05)")


if __name__ == "__main__":
    main()
