"""pm.setNumThreads / pm.getNumThreads and the Optimizer's rule for when steps use them."""

import numpy as np
import pytest
from pymodules.engine import pool
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
    monkeypatch.setattr(threads, "PARALLEL_TRAIN_STEP", 0.0)  # every step counts as long
    monkeypatch.setattr(threads.StepThreads, "SLOW", float("inf"))  # no step is slow
    calls = _train(monkeypatch, 12)
    timed = threads.StepThreads.TIMED
    assert calls[:timed + 1] == [1] * (timed + 1) and calls[timed + 1:2 * timed + 1] == [2] * timed
    assert len(set(calls[2 * timed + 1:])) == 1  # then one choice until the next timing
    assert set(_blas_threads().values()) == {2}


def test_training_times_threads_from_a_shorter_step_than_predict(restore, monkeypatch):
    pm.setNumThreads(2)
    monkeypatch.setattr(threads, "PARALLEL_TRAIN_STEP", 0.0)
    assert 2 in _train(monkeypatch, 12)
    seen = []
    monkeypatch.setattr(threads, "use_threads", lambda n: seen.append(n))
    model = pm.Sequential().add(pm.Linear(6, 3))
    model.predict(np.zeros((40, 6), np.float32), batchSize=4)  # PARALLEL_STEP: 0.1 s
    assert seen and set(seen) == {1}


def test_training_keeps_the_long_rule_unless_threads_were_set(restore, monkeypatch):
    threads._state["threads"] = None  # never set: the cores available
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    rule = threads.StepThreads(training=True)
    assert rule.least == threads.PARALLEL_STEP  # runs of one seed stay bit for bit equal
    pm.setNumThreads(2)
    assert threads.StepThreads(training=True).least == threads.PARALLEL_TRAIN_STEP
    assert threads.StepThreads().least == threads.PARALLEL_STEP


def _steps(rule, times_of, n):
    """Run ``n`` steps of ``rule``; ``times_of(step, threads)`` is a step's time."""
    seen = []
    for i in range(n):
        rule.before()
        seen.append(rule.now)
        rule.after(times_of(i, rule.now))
    return seen


def test_a_slow_step_on_threads_goes_back_to_one_and_threads_are_timed_again(restore):
    pm.setNumThreads(2)
    rule = threads.StepThreads(training=True)
    # threads win, then the cores get busy at step 20 (a step on threads takes 10x)
    seen = _steps(rule, lambda i, n: 0.01 if n == 1 else (0.005 if i < 20 else 0.1), 300)
    retry, timed = rule.RETRY, rule.TIMED
    assert seen[:2 * timed + 1] == [1] * (timed + 1) + [2] * timed
    assert seen[2 * timed + 1:21] == [2] * (21 - 2 * timed - 1)
    # one slow step (20), then one thread until the retry, whose first step is slow again
    assert seen[21:21 + retry] == [1] * retry and seen[21 + retry] == 2
    assert seen[22 + retry:22 + 3 * retry] == [1] * 2 * retry  # twice as long a wait
    assert seen[22 + 3 * retry] == 2
    rule.close()


def test_threads_that_lose_are_timed_again_later_and_win_when_the_machine_is_quiet(restore):
    pm.setNumThreads(2)
    rule = threads.StepThreads(training=True)
    # threads lose (busy) until step 100, then win
    seen = _steps(rule, lambda i, n: 0.01 if n == 1 else (0.015 if i < 100 else 0.005), 300)
    timed, retry = rule.TIMED, rule.RETRY
    first = 2 * timed + 1
    assert seen[timed + 1:first] == [2] * timed and seen[first:first + retry] == [1] * retry
    assert seen[first + retry:first + retry + timed] == [2] * timed  # timed again: lose
    assert seen[-50:] == [2] * 50  # quiet again: threads kept
    rule.close()


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
    monkeypatch.setattr(threads, "PARALLEL_TRAIN_STEP", 0.0)
    assert set(_train(monkeypatch, 6)) == {1}


def test_a_tighter_limit_of_threadpoolctl_is_kept(restore, monkeypatch):
    from threadpoolctl import threadpool_limits

    pm.setNumThreads(2)
    monkeypatch.setattr(threads, "PARALLEL_TRAIN_STEP", 0.0)
    with threadpool_limits(1, user_api="blas"):
        assert set(_train(monkeypatch, 6)) == {1}
        assert set(_blas_threads().values()) == {1}
    assert set(_blas_threads().values()) == {2}


def test_evaluate_and_predict_batches_follow_the_rule(restore, monkeypatch):
    pm.setNumThreads(2)
    seen = []

    class Spy(pm.Linear):
        def updateOutput(self, input):
            seen.append([pool.get_threads()[0]])  # the engine's threads this batch runs on
            return super().updateOutput(input)

    model = pm.Sequential().add(Spy(6, 3))
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    model.predict(x, batchSize=8)
    model.evaluate((x, np.zeros(40, np.int64)), [pm.Top1Accuracy()], 8)
    assert seen == [[1]] * 10  # short batches: one thread
    assert set(_blas_threads().values()) == {2}
    seen.clear()
    monkeypatch.setattr(threads, "PARALLEL_STEP", 0.0)
    # Steps of a few microseconds: one pre-empted step would look like busy cores to the
    # watchdog, which other tests drive with given times.
    monkeypatch.setattr(threads.StepThreads, "SLOW", float("inf"))
    model.predict(x, batchSize=4)  # 10 batches
    timed = threads.StepThreads.TIMED
    assert seen[:2 * timed + 1] == [[1]] * (timed + 1) + [[2]] * timed
