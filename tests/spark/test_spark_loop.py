"""Distributed training in one Spark stage per run (pymodules.spark._loop) on local[2,4]:
the stage is the default, it gives the weights of a Spark job per iteration, it makes way
for other jobs, task errors surface, and more partitions than task slots fall back to a
job per iteration."""

import socket
import struct
import sys
import threading
import time

import numpy as np
import pytest
import spark_support as S

import pymodules as pm

pytest.importorskip("pyspark")
from pyspark import cloudpickle  # noqa: E402

from pymodules import spark  # noqa: E402
from pymodules.spark import _loop  # noqa: E402

# the helpers below run in Spark's Python workers, which cannot import this module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def sc():
    return S.session("local[2,4]").sparkContext


def _rdd(sc, x, y, partitions=2):
    return sc.parallelize(S.samples(x, y), partitions)


def _train(sc, rdd, iterations, persistent=True, seed=3, batch=8, group=None):
    """(weights after training, the Optimizer, ids of the Spark jobs it ran from this
    thread) with the barrier stage allowed or not."""
    pm.setSeed(seed)
    model = S.mlp()
    opt = pm.Optimizer(model, rdd, pm.CrossEntropyCriterion(), pm.SGD(0.3, momentum=0.9),
                       pm.MaxIteration(iterations), batch).setProgressBar(False)
    opt._source.persistent = persistent
    group = group or f"probe-{time.monotonic_ns()}"
    sc.setJobGroup(group, "test")
    try:
        opt.optimize()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return model.getParameters()[0].copy(), opt, sc.statusTracker().getJobIdsForGroup(group)


def _no_loop_threads():
    names = {"pymodules-spark-loop", "pymodules-spark-stage"}
    return not [t for t in threading.enumerate() if t.name in names and t.is_alive()]


def test_training_runs_in_one_stage_by_default_with_the_same_weights(sc):
    x, y = S.data(n=48)
    rdd = _rdd(sc, x, y).cache()
    stage, opt, jobs = _train(sc, rdd, 12)
    assert opt._source.mode == "one stage" and opt._source.stages == 1
    assert len(jobs) <= 1  # the conversion of the partitions; no job per iteration
    per_job, ref, ref_jobs = _train(sc, rdd, 12, persistent=False)
    assert ref._source.mode == "job per iteration" and len(ref_jobs) >= 12
    np.testing.assert_array_equal(stage, per_job)
    assert _no_loop_threads()


class JobInTrigger(pm.MaxIteration):
    """MaxIteration that runs a Spark job of its own on the driver at iteration 3."""

    def __init__(self, n, sc):
        super().__init__(n)
        self.sc, self.counted = sc, None

    def __call__(self, state):
        if state["iteration"] == 3:
            self.counted = self.sc.parallelize(range(10), 2).map(lambda v: v + 1).sum()
        return super().__call__(state)


def test_a_job_of_the_users_own_during_training_does_not_wait_forever(sc):
    x, y = S.data(n=48)
    rdd = _rdd(sc, x, y).cache()
    want, _, _ = _train(sc, rdd, 6)
    pm.setSeed(3)
    model = S.mlp()
    trigger = JobInTrigger(6, sc)
    opt = pm.Optimizer(model, rdd, pm.CrossEntropyCriterion(), pm.SGD(0.3, momentum=0.9),
                       trigger, 8).setProgressBar(False)
    opt.optimize()
    assert trigger.counted == 55
    assert opt._source.stages == 2  # stopped for the job, started again at the next batch
    np.testing.assert_array_equal(model.getParameters()[0], want)


class Broken(pm.CrossEntropyCriterion):
    """CrossEntropyCriterion whose forward always fails in the task."""

    def updateOutput(self, input, target):
        raise ValueError("broken criterion 4711")


def test_a_task_error_stops_training_with_its_text(sc):
    x, y = S.data(n=32)
    model = S.mlp()
    before = model.getParameters()[0].copy()
    opt = pm.Optimizer(model, _rdd(sc, x, y), Broken(), pm.SGD(0.1), pm.MaxIteration(3), 8)
    opt.setProgressBar(False)
    start = time.monotonic()
    with pytest.raises(_loop.TaskError, match=r"partition \d failed on batch 0.*\n"
                                              r"(.*\n)*ValueError: broken criterion 4711"):
        opt.optimize()
    assert time.monotonic() - start < 120  # a bound against hanging, not a timing
    assert opt._source.mode == "one stage"
    np.testing.assert_array_equal(model.getParameters()[0], before)
    assert _no_loop_threads()
    assert sc.parallelize(range(4), 2).count() == 4  # the slots are free


class NanLoss(pm.CrossEntropyCriterion):
    def updateOutput(self, input, target):
        super().updateOutput(input, target)
        return float("nan")


def test_an_error_in_the_driver_loop_stops_the_stage(sc):
    x, y = S.data(n=32)
    opt = pm.Optimizer(S.mlp(), _rdd(sc, x, y), NanLoss(), pm.SGD(0.1), pm.MaxIteration(3), 8)
    with pytest.raises(FloatingPointError, match="the loss is nan at iteration 1"):
        opt.setProgressBar(False).optimize()
    assert _no_loop_threads()
    assert sc.parallelize(range(4), 2).count() == 4


def test_more_partitions_than_task_slots_fall_back_to_a_job_per_iteration(sc):
    x, y = S.data(n=48)
    rdd = _rdd(sc, x, y, 4).cache()
    got, opt, jobs = _train(sc, rdd, 6)
    assert opt._source.mode == "job per iteration" and len(jobs) >= 6
    # the documented data order, trained by the local Optimizer
    seed, parts = opt._source.seed, np.array_split(np.arange(48), 4)
    orders = [part[spark.order(seed, p, 0, 12)] for p, part in enumerate(parts)]
    batches = [pm.MiniBatch(x[i], y[i]) for i in
               (np.concatenate([o[j * 2:(j + 1) * 2] for o in orders]) for j in range(6))]
    pm.setSeed(3)
    model = S.mlp()
    pm.Optimizer(model, pm.DataSet.iterable(lambda: iter(batches)), pm.CrossEntropyCriterion(),
                 pm.SGD(0.3, momentum=0.9), pm.MaxIteration(6), 8).setProgressBar(False).optimize()
    np.testing.assert_allclose(got, model.getParameters()[0], rtol=1e-10, atol=1e-12)


def test_an_rdd_that_spark_refuses_in_a_barrier_stage_trains_a_job_per_iteration(sc):
    """A union of RDDs of one partition each: Spark runs no barrier stage over it."""
    x, y = S.data(n=48)
    rdd = _rdd(sc, x[:24], y[:24], 1).union(_rdd(sc, x[24:], y[24:], 1))
    assert rdd.getNumPartitions() == 2
    got, opt, _ = _train(sc, rdd, 6)
    assert opt._source.mode == "job per iteration"
    want, _, _ = _train(sc, rdd, 6, persistent=False)
    np.testing.assert_array_equal(got, want)


# -- the protocol, without Spark -------------------------------------------------------------
def test_arrays_round_trip_and_bad_frames_are_refused():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.0]),
              np.zeros((0,))]
    buf = b"".join(_loop.pack_arrays(arrays))
    back, end = _loop.unpack_arrays(bytearray(buf), 0)
    assert end == len(buf)
    for a, b in zip(arrays, back, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="dtype object"):
        _loop.pack_arrays([np.array([None])])
    with pytest.raises(ValueError, match="shorter than the arrays it declares"):
        _loop.unpack_arrays(bytearray(buf[:-4]), 0)
    bad = bytearray(buf)
    bad[4:5] = b"q"  # an int64 array: never read
    with pytest.raises(ValueError, match="dtype code"):
        _loop.unpack_arrays(bad, 0)


class _FakeContext:
    """What GradientLoop asks of a SparkContext, for a loop whose "stage" is two threads."""

    def __init__(self):
        self.cancelled = []

    def getConf(self):
        return {"spark.driver.host": "127.0.0.1"}

    def setJobGroup(self, *args, **kwargs):
        pass

    def cancelJobGroup(self, group):
        self.cancelled.append(group)

    def statusTracker(self):
        return self

    def getJobIdsForGroup(self, group):
        return []

    def getActiveJobsIds(self):
        return []


def test_the_loop_refuses_a_wrong_token_and_sums_in_partition_order():
    def compute(partition):
        return lambda batch, arrays: (float(partition), [arrays[0] * (partition + 1) + batch])

    def run_job(address, token):
        # a stranger first: refused, the connection closed without a word
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(struct.pack("<BQ", 1, 48) + b"\0" * 32 + struct.pack("<qq", 0, 0))
            assert s.recv(1) == b""
        tasks = [threading.Thread(target=_loop.serve, args=(
            address, token, p, p, compute(p), 1 << 16)) for p in range(3)]
        for t in tasks:
            t.start()
        for t in tasks:
            t.join(30)

    loop = _loop.GradientLoop(_FakeContext(), 3, run_job, 1 << 16)
    try:
        for batch in range(3):
            out = loop.request(batch, [np.array([1.0, 2.0])])
            assert [loss for loss, _ in out] == [0.0, 1.0, 2.0]
            for p, (_, (a,)) in enumerate(out):
                np.testing.assert_array_equal(a, np.array([1.0, 2.0]) * (p + 1) + batch)
        assert loop.jobs == 1
    finally:
        loop.close()
    assert _no_loop_threads()
