"""Keras-style ``fit`` against the same training through the ``Optimizer``.

One Keras-style MLP 784-256-256-10 (ReLU, softmax, sparse categorical cross-entropy, SGD
with momentum) trained on the same synthetic data, batch and number of epochs, either by
``model.fit(x, y, ...)`` or by ``pm.Optimizer(model, (x, y), criterion, method,
MaxEpoch(n), batch).optimize()``: the runs alternate (fit, Optimizer, Optimizer, fit, ...) on
one thread, and the figures are the ratios of the medians of wall and of CPU time (the
steadier on a shared machine). ``fit`` builds the dataset and an
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
        # one model, trained on by both (each run costs the same whatever the weights)
        net = model()
        net.compile(pm.SGD(0.01, momentum=0.9, dampening=0.0), "sparse_categorical_crossentropy")
        method = pm.SGD(0.01, momentum=0.9, dampening=0.0)
        criterion = pm.ClassNLLCriterion(logProbAsInput=False)

        def with_fit():
            net.fit(x, y, batch_size=args.batch, nb_epoch=args.epochs)

        def with_optimizer():
            pm.Optimizer(net, (x, y), criterion, method, pm.MaxEpoch(args.epochs),
                         args.batch).optimize()

        runs = {with_fit: [], with_optimizer: []}
        cpu = {with_fit: [], with_optimizer: []}
        for step in runs:  # warm-up
            step()
        for i in range(args.runs):
            # which goes first alternates, so that neither always runs after the other
            for step in (with_fit, with_optimizer) if i % 2 == 0 else \
                    (with_optimizer, with_fit):
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                runs[step].append(time.perf_counter() - t0)
                cpu[step].append(time.process_time() - c0)
    fit_s, opt_s = (float(np.median(t)) for t in runs.values())
    fit_c, opt_c = (float(np.median(t)) for t in cpu.values())
    print(f"BLAS: {blas}; 1 thread; {args.samples} samples x {args.epochs} epochs, batch "
          f"{args.batch}, median of {args.runs} interleaved runs")
    print(f"{'':>10} {'wall':>9} {'CPU':>9}")
    print(f"{'fit':>10} {fit_s * 1e3:7.1f}ms {fit_c * 1e3:7.1f}ms")
    print(f"{'Optimizer':>10} {opt_s * 1e3:7.1f}ms {opt_c * 1e3:7.1f}ms")
    # CPU time is the steadier figure on a shared machine (wall time counts the waits)
    print(f"fit / Optimizer: wall {fit_s / opt_s:.3f}, CPU {fit_c / opt_c:.3f} (goal: at "
          f"most 1.05)")


if __name__ == "__main__":
    main()
