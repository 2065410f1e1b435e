"""Training on model replicas (one per core) and the update that clears the gradient."""

import threading

import numpy as np
import pytest

import pymodules as pm
from pymodules import threads
from pymodules.optim import replicas as R
from pymodules.optim.optimizer import LocalGradient


@pytest.fixture
def restore(monkeypatch):
    monkeypatch.setattr(R, "ENABLED", True)  # the Optimizer replicates by itself
    saved = dict(threads._state)
    yield
    threads._state.update(saved)
    threads.use_threads(threads.getNumThreads())


def test_the_optimizer_does_not_replicate_unless_enabled():
    saved = dict(threads._state)
    try:
        pm.setNumThreads(2)
        source = LocalGradient(None, 48)
        source.start(_mlp(np.float32), pm.ClassNLLCriterion())
        assert not R.ENABLED and not source.replicated()
        source.stop()
        source.start(_mlp(np.float32), pm.ClassNLLCriterion(), 2)  # asked for: replicated
        assert source.replicated()
        source.stop()
    finally:
        threads._state.update(saved)
        threads.use_threads(threads.getNumThreads())


def _mlp(dtype, dropout=False):
    pm.setSeed(3)
    model = pm.Sequential().add(pm.Linear(20, 32)).add(pm.ReLU())
    if dropout:
        model.add(pm.Dropout(0.5))
    model.add(pm.Linear(32, 5)).add(pm.LogSoftMax())
    return model.float() if dtype == np.float32 else model.double()


def _data(dtype, n=96):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 20)).astype(dtype), rng.integers(0, 5, n)


def _train(cores, dtype, batch=48, iterations=6, model=None, summary=None):
    pm.setNumThreads(cores)
    model = model or _mlp(dtype)
    opt = pm.Optimizer(model, _data(dtype), pm.ClassNLLCriterion(),
                       pm.SGD(0.1, momentum=0.9, dampening=0.0), pm.MaxIteration(iterations),
                       batch)
    if summary is not None:
        opt.setTrainSummary(summary)
    opt.setProgressBar(False).setLogInterval(0).optimize()
    return model, opt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_replicas_give_the_weights_of_one(restore, dtype):
    one, _ = _train(1, dtype)
    two, opt = _train(2, dtype)
    w1, w2 = one.getParameters()[0], two.getParameters()[0]
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(w2, w1, **tol)
    assert not np.array_equal(w2, _mlp(dtype).getParameters()[0])  # it trained


def test_replicas_are_deterministic(restore):
    a, _ = _train(2, np.float32)
    b, _ = _train(2, np.float32)
    np.testing.assert_array_equal(a.getParameters()[0], b.getParameters()[0])


def test_which_models_and_batches_are_replicated(restore):
    pm.setNumThreads(2)
    source = LocalGradient(None, 48)
    model = _mlp(np.float32)
    source.start(model, pm.ClassNLLCriterion())
    assert source.replicated() and len(source._replicas.models) == 2
    source.stop()
    assert R.parts_for(48, 2) == 2 and R.parts_for(31, 2) == 1 and R.parts_for(256, 1) == 1
    for cores, batch, m in ((1, 48, _mlp(np.float32)), (2, 16, _mlp(np.float32)),
                            (2, 48, _mlp(np.float32, dropout=True)),
                            (2, 48, pm.Sequential().add(
                                pm.Linear(20, 5, wRegularizer=pm.L2Regularizer(0.1))))):
        source = LocalGradient(None, batch)
        source.start(m, pm.ClassNLLCriterion(), cores)
        assert not source.replicated(), (cores, batch, m)
        source.stop()

    class Mine(pm.Linear):
        pass

    assert not R.replicable(pm.Sequential().add(Mine(3, 2)))
    assert R.replicable(_mlp(np.float32))


def test_the_replica_shares_the_weights_and_keeps_its_own_gradient():
    model = _mlp(np.float64)
    w, g = model.getParameters()
    reps = R.Replicas(model, pm.ClassNLLCriterion(), 2)
    try:
        other = reps.models[1]
        for a, b in zip(model.parameters()[0], other.parameters()[0], strict=True):
            assert a is b
        for a, b in zip(model.parameters()[1], other.parameters()[1], strict=True):
            assert not np.shares_memory(a, b) and np.shares_memory(b, reps.grads[0])
        x, y = _data(np.float64)
        g.fill(0)
        loss = reps.gradient(x, y, 2)
        ref = _mlp(np.float64)
        rw, rg = ref.getParameters()
        crit = pm.ClassNLLCriterion()
        out = ref.forward(x)
        assert loss == pytest.approx(crit.forward(out, y), rel=1e-13)
        ref.backward(x, crit.backward(out, y))
        np.testing.assert_allclose(g, rg, rtol=1e-11, atol=1e-14)
        assert not reps.grads[0].any()  # added into the model's, and cleared
        assert model.modules[0].propagateBack and other.modules[0].propagateBack
        # an odd batch: parts of 48 and 49 rows, the criterion on all 97
        x, y = _data(np.float64, 97)
        g.fill(0)
        rg.fill(0)
        reps.gradient(x, y, 2)
        out = ref.forward(x)
        crit.forward(out, y)
        ref.backward(x, crit.backward(out, y))
        np.testing.assert_allclose(g, rg, rtol=1e-11, atol=1e-14)
    finally:
        reps.close()


def test_a_stage_runs_its_parts_on_two_threads_and_raises_their_errors():
    workers = R._Workers(1)
    try:
        met = threading.Event()
        seen = []

        def first():
            seen.append(threading.current_thread().name)
            assert met.wait(10), "the other part never ran alongside"

        def second():
            seen.append(threading.current_thread().name)
            met.set()

        workers.stage((first, ()), [(second, ())])
        assert len(set(seen)) == 2  # two threads at once

        def fails():
            raise KeyError("part two")

        with pytest.raises(KeyError, match="part two"):
            workers.stage((lambda: None, ()), [(fails, ())])
        workers.stage((lambda: None, ()), [(seen.append, ("after",))])  # still works
        assert seen[-1] == "after"
    finally:
        workers.close()


def test_a_part_no_worker_takes_runs_on_the_callers_thread():
    workers = R._Workers(1)
    workers.close()  # no worker left: the caller runs every part
    seen = []
    workers.stage((seen.append, (1,)), [(seen.append, (2,)), (seen.append, (3,))])
    assert seen == [1, 2, 3]


def test_the_optimizer_clears_the_gradient_in_the_update(restore):
    pm.setNumThreads(1)
    model, _ = _train(1, np.float64, iterations=3)
    g = model.getParameters()[1]
    assert not g.any()  # the last update cleared it
    # the model's own accumulation is untouched: backward adds, zeroGradParameters zeroes
    x, y = _data(np.float64)
    crit = pm.ClassNLLCriterion()
    out = model.forward(x)
    crit.forward(out, y)
    model.backward(x, crit.backward(out, y))
    g1 = g.copy()
    assert g1.any()
    model.backward(x, crit.backward(out, y))
    np.testing.assert_allclose(g, 2 * g1, rtol=1e-12)
    model.zeroGradParameters()
    assert not g.any()


def test_the_clearing_update_trains_as_the_plain_one(restore):
    """Full-batch steps: the Optimizer (cleared gradients) against SGD.optimize by hand."""
    pm.setNumThreads(1)
    x, y = _data(np.float64)
    model, _ = _train(1, np.float64, batch=96, iterations=4)
    ref = _mlp(np.float64)
    w, g = ref.getParameters()
    crit, sgd = pm.ClassNLLCriterion(), pm.SGD(0.1, momentum=0.9, dampening=0.0)

    def feval(_):
        ref.zeroGradParameters()
        out = ref.forward(x)
        loss = crit.forward(out, y)
        ref.backward(x, crit.backward(out, y))
        return loss, g

    for _ in range(4):
        sgd.optimize(feval, w)
    np.testing.assert_allclose(model.getParameters()[0], w, rtol=1e-10, atol=1e-12)


def test_parameter_histograms_see_the_gradient(restore, tmp_path):
    pm.setNumThreads(1)
    summary = pm.TrainSummary(tmp_path, "app").setSummaryTrigger("Parameters",
                                                                 pm.SeveralIteration(1))
    model, _ = _train(1, np.float32, iterations=2, summary=summary)
    assert model.getParameters()[1].any()  # not cleared: the histograms read it


def test_a_subclass_step_is_not_asked_to_clear(restore):
    class Mine(pm.SGD):
        def optimize(self, feval, x):
            return super().optimize(feval, x)

    pm.setNumThreads(1)
    model = _mlp(np.float32)
    opt = pm.Optimizer(model, _data(np.float32), pm.ClassNLLCriterion(), Mine(0.1),
                       pm.MaxIteration(2), 48)
    opt.setProgressBar(False).setLogInterval(0).optimize()
    assert model.getParameters()[1].any()


@pytest.mark.parametrize("count", [2, 3])
def test_an_element_wise_update_split_across_the_threads_is_the_whole_update(count):
    from pymodules.engine import optim as K

    model = _mlp(np.float32)
    reps = R.Replicas(model, pm.ClassNLLCriterion(), count)
    try:
        n = reps.grad.shape[0]
        rng = np.random.default_rng(1)
        x, g, buf = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
        x2, g2, buf2 = x.copy(), g.copy(), buf.copy()
        K.sgd_update(x, g, buf, 0.1, 0.01, 0.9, 0.0, True, False, True)
        reps.split(K.sgd_update, (x2, g2, buf2, 0.1, 0.01, 0.9, 0.0, True, False, True))
        np.testing.assert_array_equal(x2, x)
        np.testing.assert_array_equal(buf2, buf)
        assert not g2.any()
        with pytest.raises(ValueError, match="overlaps"):
            pm.SGD(0.1)._run(K.sgd_update, x2, x2, None, 0.1, 0, 0, 0, False, False,
                             split=reps.split)
    finally:
        reps.close()


def test_late_workers_are_left_out_for_a_while():
    workers = R._Workers(1)
    try:
        seen = []

        def stage():
            started = threading.Event()

            def slow():
                seen.append(threading.current_thread().name)
                started.set()
                threading.Event().wait(0.05)  # far longer than the caller's part

            workers.stage((started.wait, (5,)), [(slow, ())])

        for _ in range(R._Workers.LATE):
            stage()
        caller = threading.current_thread().name
        assert caller not in seen and workers._solo == R._Workers.SOLO
        seen.clear()
        workers.stage((lambda: None, ()), [(seen.append, (caller,))])
        assert seen == [caller] and workers._solo == R._Workers.SOLO - 1
    finally:
        workers.close()


# -- replicas in worker processes --------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no os.fork")


def _reference_gradient(dtype, x, y):
    ref = _mlp(dtype)
    _, rg = ref.getParameters()
    crit = pm.ClassNLLCriterion()
    out = ref.forward(x)
    loss = crit.forward(out, y)
    ref.backward(x, crit.backward(out, y))
    return loss, rg


def _alive(pid):
    import os

    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def _reaped(pid):
    """Whether the child ``pid`` has ended and been waited for (no zombie left)."""
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@needs_fork
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [2, 3])
def test_process_replicas_give_the_gradient_of_one_model(dtype, count):
    model = _mlp(dtype)
    _, g = model.getParameters()
    reps = R.ProcessReplicas(model, pm.ClassNLLCriterion(), count)
    try:
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else \
            dict(rtol=1e-12, atol=1e-14)
        for n in (96, 97, 64):  # odd parts; a smaller batch fits the same workers
            x, y = _data(dtype, n)
            g.fill(0)
            loss = reps.gradient(x, y, count)
            ref_loss, rg = _reference_gradient(dtype, x, y)
            assert loss == pytest.approx(ref_loss, rel=1e-5 if dtype == np.float32 else 1e-13)
            np.testing.assert_allclose(g, rg, **tol)
        assert len(reps.workers) == count - 1 and all(_alive(w.pid) for w in reps.workers)
        assert all(not w.grad.any() for w in reps.workers)  # added in and cleared
        assert model.modules[0].propagateBack
    finally:
        reps.close()


@needs_fork
def test_parts_run_here_give_the_same_numbers_as_in_the_worker():
    model = _mlp(np.float32)
    _, g = model.getParameters()
    reps = R.ProcessReplicas(model, pm.ClassNLLCriterion(), 2)
    try:
        x, y = _data(np.float32)
        g.fill(0)
        reps.gradient(x, y, 2)
        in_worker = g.copy()
        reps._solo = 1  # the next step runs both parts here
        g.fill(0)
        reps.gradient(x, y, 2)
        np.testing.assert_array_equal(g, in_worker)
        assert reps._solo == 0
    finally:
        reps.close()


@needs_fork
def test_training_on_process_replicas_is_deterministic_and_matches_one(restore, monkeypatch):
    monkeypatch.setattr(R, "KIND", "processes")
    a, _ = _train(2, np.float64)
    b, _ = _train(2, np.float64)
    one, _ = _train(1, np.float64)
    np.testing.assert_array_equal(a.getParameters()[0], b.getParameters()[0])
    np.testing.assert_allclose(a.getParameters()[0], one.getParameters()[0], rtol=1e-12,
                               atol=1e-13)


@needs_fork
def test_the_optimizer_ends_its_workers(restore, monkeypatch):
    monkeypatch.setattr(R, "KIND", "processes")
    made = []
    real = R._Worker.__init__

    def spy(self, *args):
        real(self, *args)
        made.append(self.pid)

    monkeypatch.setattr(R._Worker, "__init__", spy)
    _train(2, np.float32)
    assert made and all(_reaped(pid) for pid in made)  # no zombie left


@needs_fork
def test_a_worker_error_surfaces_in_the_caller_and_the_workers_end():
    model = _mlp(np.float64)
    model.getParameters()[1].fill(0)
    reps = R.ProcessReplicas(model, pm.ClassNLLCriterion(), 2)
    try:
        x, y = _data(np.float64)
        reps.gradient(x, y, 2)
        worker = reps.workers[0]
        pid = worker.pid
        worker.ctrl[3] = 10 ** 6  # more rows than the shared memory holds: the worker fails
        worker.go.release()
        with pytest.raises(RuntimeError, match="worker process failed: ValueError"):
            worker.wait()
        reps.close()
        assert _reaped(pid) and reps.workers == []
        reps.gradient(x, y, 2)  # started anew
        assert reps.workers and reps.workers[0].pid != pid
    finally:
        reps.close()


@needs_fork
def test_a_killed_worker_is_reported_not_waited_for():
    import os
    import signal

    model = _mlp(np.float32)
    model.getParameters()[1].fill(0)
    reps = R.ProcessReplicas(model, pm.ClassNLLCriterion(), 2)
    try:
        x, y = _data(np.float32)
        reps.gradient(x, y, 2)
        pid = reps.workers[0].pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="worker process ended"):
            reps.workers[0].wait()
        assert _reaped(pid)
    finally:
        reps.close()


@needs_fork
def test_unreplicable_models_train_on_one_process(restore, monkeypatch):
    monkeypatch.setattr(R, "KIND", "processes")
    pm.setNumThreads(2)
    source = LocalGradient(None, 48)
    source.start(_mlp(np.float32, dropout=True), pm.ClassNLLCriterion(), 2)
    assert not source.replicated()
    source.start(_mlp(np.float32), pm.ClassNLLCriterion(), 2)
    assert isinstance(source._replicas, R.ProcessReplicas)
    source.stop()
