"""Spark: distributed evaluate and the per-iteration overhead of distributed training.

1. evaluate (Top1Accuracy) of an MLP 128-256-10 over 100k samples: the RDD (cached, two
   partitions) on local[2], against the same model's local single-process evaluate over the
   arrays at its default batch; the RDD at its default total batch (4 x partitions, as
   BigDL) and at 1024.
2. training of an MLP 100-256-10 (SGD with momentum, batch 256): ms per iteration of the
   Optimizer on an RDD on local[2] (two partitions of 10k samples), against the same
   iteration of the local Optimizer; the difference is the overhead of Spark (the weights
   to the tasks of the training stage over its socket, the gradients back, the sum). The
   iterations are timed in the steady state (from the end of each run's first iteration:
   the start of the run's Spark stage is reported on its own line). Beside it, the floor
   of a Spark job per iteration: an empty Spark job of the same shape (one task per cached
   partition returning a gradient-sized array, then the same reduce), timed in blocks
   that alternate with the training iterations. The goal: an overhead of at most 25 ms.

Fixed seeds, warm-up, median of several runs. Spark's executors are Python processes of
their own; 1 BLAS thread everywhere (OPENBLAS_NUM_THREADS for the workers).
Usage: python bench/bench_spark.py [--runs 5] [--iterations 30]
"""

import argparse
import functools
import itertools
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import pymodules as pm  # noqa: E402


def median_s(fn, runs, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def mlp(sizes):
    model = pm.Sequential()
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        model.add(pm.Linear(a, b))
        if i < len(sizes) - 2:
            model.add(pm.ReLU())
    return model


def data(n, k, classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = (x[:, :classes] + 0.5 * rng.standard_normal((n, classes))).argmax(axis=1)
    return x, y


def bench_evaluate(sc, runs):
    n, k = 100_000, 128
    x, y = data(n, k, 10, 0)
    pm.setSeed(0)
    model = mlp((k, 256, 10))
    rdd = sc.parallelize([pm.Sample(a, b) for a, b in zip(x, y, strict=True)], 2).cache()
    rdd.count()
    methods = [pm.Top1Accuracy()]
    local = median_s(lambda: model.evaluate((x, y), methods), runs)
    rows = []
    for batch in (None, 1024):
        dist = median_s(lambda b=batch: model.evaluate(rdd, methods, b), runs)
        assert model.evaluate(rdd, methods, batch)[0][0] == \
            model.evaluate((x, y), methods)[0][0]
        total = "4 x partitions" if batch is None else batch
        rows.append((f"evaluate 100k, MLP 128-256-10, batch {total}", "float32", local * 1e3,
                     dist * 1e3))
    rdd.unpersist()
    return rows


class Stamps(pm.MaxIteration):
    """MaxIteration that notes the time whenever the Optimizer asks it (before the first
    iteration and after every one)."""

    def __init__(self, n):
        super().__init__(n)
        self.times = []

    def __call__(self, state):
        self.times.append(time.perf_counter())
        return super().__call__(state)


def _empty_partition(items, size):
    """One gradient-sized array per partition, computing nothing."""
    for _ in items:
        yield np.zeros(size, np.float32), 0.0, []


def empty_job(data, size):
    """The floor of a training iteration: the job without the work."""
    from pymodules.spark import _sum_gradients

    job = functools.partial(_empty_partition, size=size)
    return data.mapPartitions(job).treeReduce(_sum_gradients)


def bench_training(sc, iterations, runs):
    n, k, batch = 20_000, 100, 256
    x, y = data(n, k, 10, 1)
    rdd = sc.parallelize([pm.Sample(a, b) for a, b in zip(x, y, strict=True)], 2).cache()
    rdd.count()

    def optimizer(training_set):
        pm.setSeed(1)
        model = mlp((k, 256, 10))
        opt = pm.Optimizer(model, training_set, pm.CrossEntropyCriterion(),
                           pm.SGD(0.05, momentum=0.9), pm.MaxIteration(5), batch)
        opt.setProgressBar(False)
        opt.optimize()  # warm-up: conversion and caching of the partitions, first jobs
        return opt

    starts = []

    def block(opt, r):
        """Seconds per iteration in the steady state of one optimize() run."""
        stamps = Stamps(5 + (r + 1) * (iterations + 1))
        opt.setEndWhen(stamps)
        t0 = time.perf_counter()
        opt.optimize()
        total = time.perf_counter() - t0
        t = stamps.times  # before the start, before the first iteration, then after each
        steady = (t[-1] - t[2]) / iterations
        if opt is dist:  # the rest of the run: the stage's start and end
            starts.append(total - (iterations + 1) * steady)
        return steady

    local, dist = optimizer((x, y)), optimizer(rdd)
    cached = dist._source._data  # the partitions as the training tasks read them
    size = dist.model.getParameters()[0].size
    empty_job(cached, size)
    times = {"local": [], "spark": [], "empty": []}
    for r in range(runs):  # the contenders in alternating blocks
        times["local"].append(block(local, r))
        times["spark"].append(block(dist, r))
        t0 = time.perf_counter()
        for _ in range(iterations):
            empty_job(cached, size)
        times["empty"].append((time.perf_counter() - t0) / iterations)
    med = {key: float(np.median(v)) * 1e3 for key, v in times.items()}
    med["start"] = float(np.median(starts)) * 1e3
    med["mode"] = dist._source.mode
    rdd.unpersist()
    return [(f"train iteration, MLP {k}-256-10, batch {batch}", "float32", med["local"],
             med["spark"])], med


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--training-only", action="store_true")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("pymodules-bench")
             .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.memory", "4g")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    with threadpool_limits(1):
        blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture')}, "
                f"{i['num_threads']} thread)" for i in threadpool_info()]
        print("BLAS:", "; ".join(blas))
        import pyspark

        print(f"pyspark {pyspark.__version__}, master local[2]\n")
        rows = [] if args.training_only else bench_evaluate(spark.sparkContext, args.runs)
        train_rows, med = bench_training(spark.sparkContext, args.iterations, args.runs)
        rows += train_rows
    spark.stop()
    print(f"{'operation':52s} {'dtype':8s} {'local ms':>10s} {'spark ms':>10s} "
          f"{'spark/local':>11s} {'overhead ms':>11s}")
    for name, dtype, local, dist in rows:
        print(f"{name:52s} {dtype:8s} {local:10.1f} {dist:10.1f} {dist / local:11.2f} "
              f"{dist - local:11.1f}")
    overhead = med["spark"] - med["local"]
    print(f"\nempty Spark job of the same shape (the floor): {med['empty']:.1f} ms; training "
          f"overhead {overhead:.1f} ms = {overhead / med['empty']:.2f} x the floor")
    print(f"training on Spark: {med['mode']}; its start and end, once per optimize() run: "
          f"{med['start']:.0f} ms")
    print(f"goal, an overhead of at most 25 ms per iteration: "
          f"{'met' if overhead <= 25 else 'NOT met'} ({overhead:.1f} ms)")


if __name__ == "__main__":
    main()
