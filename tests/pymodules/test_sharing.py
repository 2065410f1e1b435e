"""One module, two threads: a second forward or backward while the first runs is refused
with an error saying what to do; separate copies in separate threads work as one after the
other."""

import threading

import numpy as np
import pytest

import pymodules as pm


class _Gate:
    """Two events, shared (not copied) by the copies of the module that holds them."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __deepcopy__(self, memo):
        return self


class _Held(pm.Module):
    """Identity that waits inside updateOutput/updateGradInput until released, so that a
    test can call the module again while a first call is certainly running."""

    def __init__(self):
        super().__init__()
        self.gate = _Gate()

    entered = property(lambda self: self.gate.entered)
    release = property(lambda self: self.gate.release)

    def _hold(self):
        self.entered.set()
        assert self.release.wait(10)

    def updateOutput(self, input):
        self._hold()
        self.output = input
        return input

    def updateGradInput(self, input, gradOutput):
        self._hold()
        self.gradInput = gradOutput
        return gradOutput


def _while_running(model, held, call):
    """Run ``call(model)`` in a thread, wait until it is inside ``held``, return a function
    that releases it and returns what the thread got."""
    got = {}

    def first():
        try:
            got["value"] = call(model)
        except BaseException as err:  # reported to the test below
            got["error"] = err

    t = threading.Thread(target=first)
    t.start()
    assert held.entered.wait(10)

    def finish():
        held.release.set()
        t.join(10)
        assert not t.is_alive()
        return got

    return finish


X = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize("first", ["forward", "backward"])
@pytest.mark.parametrize("second", ["forward", "backward"])
def test_a_second_call_while_one_runs_is_refused_naming_the_module(first, second):
    held = _Held().setName("held")
    calls = {"forward": lambda m: m.forward(X), "backward": lambda m: m.backward(X, X)}
    finish = _while_running(held, held, calls[first])
    try:
        with pytest.raises(RuntimeError, match=rf"^held: {second} called while .*cloneModule"):
            calls[second](held)
    finally:
        got = finish()
    assert "error" not in got and np.array_equal(got["value"], X)
    # Refusing did not break the module: it runs again once the first call is over.
    held.entered.clear()
    assert np.array_equal(held.forward(X), X)


@pytest.mark.parametrize("build", ["sequential", "graph"])
def test_a_shared_container_is_refused_too(build):
    held = _Held()
    seq = pm.Sequential().add(pm.Linear(3, 3)).add(held).setName("net")
    model = seq if build == "sequential" else seq.toGraph().setName("net")
    finish = _while_running(model, held, lambda m: m.forward(X))
    try:
        with pytest.raises(RuntimeError, match=r"^net: forward called while"):
            model.forward(X)
        with pytest.raises(RuntimeError, match=r"^net: backward called while"):
            model.backward(X, X)
    finally:
        got = finish()
    assert "error" not in got
    held.entered.clear()
    held.release.set()
    model.forward(X)
    model.backward(X, np.ones((2, 3), np.float32))


def test_a_module_is_free_again_after_its_call_raised():
    m = pm.Linear(3, 2).setName("fc")
    with pytest.raises(ValueError, match="^fc"):
        m.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="^fc"):
        m.backward(np.ones((2, 3), np.float32), np.ones((2, 5), np.float32))
    assert m.forward(X).shape == (2, 2)
    assert m.backward(X, np.ones((2, 2), np.float32)).shape == (2, 3)


def test_a_strided_backward_is_retried_inside_its_own_run():
    """A refused layout is fixed and retried within the call, not refused as a second one."""
    m = pm.Linear(3, 2)
    wide = np.ones((2, 6), np.float32)[:, ::2]
    m.forward(wide)
    assert m.backward(wide, np.ones((2, 4), np.float32)[:, ::2]).shape == (2, 3)
    assert m.gradWeight.sum() == 2 * 6


def test_a_copy_taken_while_the_model_runs_is_free():
    held = _Held()
    model = pm.Sequential().add(held).add(pm.ReLU())
    finish = _while_running(model, held, lambda m: m.forward(X))
    try:
        copy = model.cloneModule()
    finally:
        finish()
    assert np.array_equal(copy.forward(X), X)


def test_copies_in_two_threads_give_the_results_of_one_after_the_other():
    rng = np.random.default_rng(0)
    pm.setSeed(3)
    base = pm.Sequential().add(pm.Linear(32, 64)).add(pm.Tanh()).add(pm.Linear(64, 10)) \
        .add(pm.LogSoftMax())
    xs = [rng.standard_normal((16, 32)).astype(np.float32) for _ in range(50)]
    go = np.ones((16, 10), np.float32)

    def run(model, out):
        for x in xs:
            out.append(model.forward(x).copy())
            out.append(model.backward(x, go).copy())
        out.append(model.parameters()[1][0].copy())

    serial = [[], []]
    for i in range(2):
        run(base.cloneModule(), serial[i])
    together = [[], []]
    threads = [threading.Thread(target=run, args=(base.cloneModule(), together[i]))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(serial, together, strict=True):
        assert len(a) == len(b) == 101
        for u, v in zip(a, b, strict=True):
            assert np.array_equal(u, v)


def test_gradients_are_made_on_first_read_and_kept():
    m = pm.Linear(5, 4, dtype=np.float64)
    assert "gradWeight" not in vars(m)
    g = m.gradWeight
    assert g.shape == (4, 5) and g.dtype == np.float64 and not g.any()
    assert m.gradWeight is g and vars(m)["gradWeight"] is g
    nb = pm.Linear(5, 4, withBias=False)
    assert nb.gradBias is None
    with pytest.raises(AttributeError, match="no attribute 'gradNothing'"):
        m.gradNothing  # noqa: B018


class _HeldLoss(pm.MSECriterion):
    def __init__(self):
        super().__init__()
        self.gate = _Gate()

    def updateOutput(self, input, target):
        self.gate.entered.set()
        assert self.gate.release.wait(10)
        return super().updateOutput(input, target)


def test_a_shared_criterion_is_refused():
    crit = _HeldLoss()
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("loss", crit.forward(X, X)))
    t.start()
    assert crit.gate.entered.wait(10)
    try:
        with pytest.raises(RuntimeError, match=r"^_HeldLoss: backward called while.*"
                                               r"cloneCriterion"):
            crit.backward(X, X)
    finally:
        crit.gate.release.set()
        t.join(10)
    assert got["loss"] == 0.0
    assert crit.backward(X, X).shape == X.shape
