"""pm.setNumThreads / pm.getNumThreads and the Optimizer's rule for when steps use them."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import pymodules as pm
from pymodules import threads


def _blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"}


@pytest.fixture
def restore():
    saved = dict(threads._state)
    yield
    threads._state.update(saved)
    threads.use_threads(threads.getNumThreads())


def test_set_and_get(restore):
    pm.setNumThreads(1)
    assert pm.getNumThreads() == 1
    libs = _blas_threads()
    assert libs and set(libs.values()) == {1}
    assert any("scipy" in path for path in libs)  # the BLAS the engine calls
    pm.setNumThreads(2)
    assert pm.getNumThreads() == 2 and set(_blas_threads().values()) == {2}
    for bad in (0, -1, 1.5, "2", True, None):
        with pytest.raises(ValueError, match=f"n must be a positive int, got {bad!r}"):
            pm.setNumThreads(bad)
    assert pm.getNumThreads() == 2


def test_the_default_is_the_cores_available(restore):
    import os

    threads._state["threads"] = None
    assert pm.getNumThreads() == len(os.sched_getaffinity(0))


def _train(monkeypatch, iterations, batch=16):
    calls = []
    real = threads.use_threads
    monkeypatch.setattr(threads, "use_threads", lambda n: (calls.append(n), real(n))[1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = pm.Sequential().add(pm.Linear(6, 3))
    pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                 pm.MaxIteration(iterations), batch).setProgressBar(False).optimize()
    return calls


def test_short_steps_run_on_one_thread(restore, monkeypatch):
    pm.setNumThreads(2)
    calls = _train(monkeypatch, 12)
    assert calls == [1] * 12  # every step on one
    assert set(_blas_threads().values()) == {2}  # and the BLAS gets its 2 back at the end


def test_long_steps_keep_the_faster_count(restore, monkeypatch):
    pm.setNumThreads(2)
    monkeypatch.setattr(threads, "PARALLEL_STEP", 0.0)  # every step counts as long
    calls = _train(monkeypatch, 12)
    timed = threads.StepThreads.TIMED
    assert calls[:timed + 1] == [1] * (timed + 1) and calls[timed + 1:2 * timed + 1] == [2] * timed
    assert len(set(calls[2 * timed + 1:])) == 1  # then one choice for the rest of the run
    assert set(_blas_threads().values()) == {2}


@pytest.mark.parametrize("one, two, keep", [(0.2, 0.1, 2), (0.2, 0.3, 1)])
def test_the_rule_keeps_the_faster(restore, one, two, keep):
    pm.setNumThreads(2)
    rule = threads.StepThreads()
    seen = []
    for _ in range(12):
        rule.before()
        seen.append(rule.now)
        rule.after(one if rule.now == 1 else two)
    assert seen == [1] * 4 + [2] * 3 + [keep] * 5
    rule.close()


def test_one_thread_set_means_one(restore, monkeypatch):
    pm.setNumThreads(1)
    monkeypatch.setattr(threads, "PARALLEL_STEP", 0.0)
    assert set(_train(monkeypatch, 6)) == {1}


def test_a_tighter_limit_of_threadpoolctl_is_kept(restore, monkeypatch):
    from threadpoolctl import threadpool_limits

    pm.setNumThreads(2)
    monkeypatch.setattr(threads, "PARALLEL_STEP", 0.0)
    with threadpool_limits(1, user_api="blas"):
        assert set(_train(monkeypatch, 6)) == {1}
        assert set(_blas_threads().values()) == {1}
    assert set(_blas_threads().values()) == {2}


def test_evaluate_and_predict_batches_follow_the_rule(restore, monkeypatch):
    pm.setNumThreads(2)
    seen = []

    class Spy(pm.Linear):
        def updateOutput(self, input):
            seen.append(sorted(set(_blas_threads().values())))
            return super().updateOutput(input)

    model = pm.Sequential().add(Spy(6, 3))
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    model.predict(x, batchSize=8)
    model.evaluate((x, np.zeros(40, np.int64)), [pm.Top1Accuracy()], 8)
    assert seen == [[1]] * 10  # short batches: one thread
    assert set(_blas_threads().values()) == {2}
    seen.clear()
    monkeypatch.setattr(threads, "PARALLEL_STEP", 0.0)
    model.predict(x, batchSize=4)  # 10 batches
    timed = threads.StepThreads.TIMED
    assert seen[:2 * timed + 1] == [[1]] * (timed + 1) + [[2]] * timed
