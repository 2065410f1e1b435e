"""Spark sessions and fault injection for the tests of pymodules.spark.

One SparkContext per process: ``session(master)`` stops the running one when another
master is asked for. The helpers below run inside Spark's Python workers: they are shipped
by value (cloudpickle), since the workers cannot import this test-only module.
"""

import os
import signal
import sys

import numpy as np
import pytest

import pymodules as pm

_current = {}


def session(master):
    """A SparkSession on ``master`` (local[2,4], local-cluster[2,1,1024]); skips the test
    only when pyspark is not installed."""
    pytest.importorskip("pyspark")
    from pyspark import SparkContext, cloudpickle
    from pyspark.sql import SparkSession

    spark = _current.get(master)
    if spark is not None and SparkContext._active_spark_context is spark.sparkContext:
        return spark
    if SparkContext._active_spark_context is not None:
        SparkSession.builder.getOrCreate().stop()
    _current.clear()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spark = (SparkSession.builder.master(master).appName("pymodules-tests")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.default.parallelism", "2")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.executor.memory", "768m")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    _current[master] = spark
    return spark


def stop():
    for spark in _current.values():
        spark.stop()
    _current.clear()


def data(n=48, k=6, classes=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(dtype)
    w = rng.standard_normal((k, classes))
    y = (x @ w).argmax(axis=1)  # learnable labels
    return x, y


def samples(x, y):
    return [pm.Sample(a, b) for a, b in zip(x, y, strict=True)]


def mlp(dtype=np.float64, k=6, hidden=5, classes=3):
    model = (pm.Sequential().add(pm.Linear(k, hidden)).add(pm.Tanh())
             .add(pm.Linear(hidden, classes)))
    return model.double() if np.dtype(dtype) == np.float64 else model


def _first_time(marker):
    """True for the one caller that creates ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _executor_jvm():
    """The pid of the executor JVM that runs this Python worker (its nearest ancestor
    running CoarseGrainedExecutorBackend)."""
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"CoarseGrainedExecutorBackend" in f.read():
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise RuntimeError("this Python worker runs under no executor JVM (local mode?)")


class FailOnce(pm.CrossEntropyCriterion):
    """CrossEntropyCriterion whose first forward anywhere (``marker`` decides) fails:
    ``how="raise"`` raises in the task, ``how="kill"`` SIGKILLs the executor JVM."""

    def __init__(self, marker, how="raise"):
        super().__init__()
        self.marker, self.how = marker, how

    def updateOutput(self, input, target):
        if _first_time(self.marker):
            if self.how == "kill":
                pid = _executor_jvm()
                with open(self.marker, "w") as f:
                    f.write(str(pid))
                os.kill(pid, signal.SIGKILL)
                os._exit(1)
            raise RuntimeError("injected task failure")
        return super().updateOutput(input, target)


class RecordThreads(pm.CrossEntropyCriterion):
    """CrossEntropyCriterion that appends, at every forward, the BLAS threads of the process
    it runs in to the file ``path``."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def updateOutput(self, input, target):
        from threadpoolctl import threadpool_info

        counts = sorted({lib["num_threads"] for lib in threadpool_info()
                         if lib["user_api"] == "blas"})
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()} {counts}\n")
        return super().updateOutput(input, target)


def two_blas_threads(_):
    """Leave this Python worker's BLAS (the engine's included) on two threads."""
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(2, user_api="blas")
