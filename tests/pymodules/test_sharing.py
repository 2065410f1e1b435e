"""One module computes for one thread at a time: a second caller gets a clear error, never a
wrong answer; different models (cloneModule per thread) run side by side."""

import threading

import numpy as np
import pytest

import pymodules as pm


class _Gate:
    """Two events: ``entered`` (a call arrived), ``release`` (it may go on). A copy of the
    gate is open."""

    def __init__(self, open=False):
        self.entered, self.release = threading.Event(), threading.Event()
        if open:
            self.release.set()

    def passing(self):
        self.entered.set()
        assert self.release.wait(10)

    def __deepcopy__(self, memo):
        return _Gate(open=True)


class Blocking(pm.Module):
    """Passes its input through, holding the forward (or backward) at its gate: the
    kernel call of a layer, made to last until the test says."""

    def __init__(self):
        super().__init__()
        self.gate = _Gate()

    def updateOutput(self, input):
        self.gate.passing()
        self.output = input
        return input

    def updateGradInput(self, input, gradOutput):
        self.gate.passing()
        self.gradInput = gradOutput
        return gradOutput


def _running(fn, *args):
    """Start fn(*args) in a thread; (thread, its outcome list)."""
    outcome = []

    def run():
        try:
            outcome.append(fn(*args))
        except BaseException as err:  # noqa: BLE001 (reported to the test)
            outcome.append(err)

    t = threading.Thread(target=run)
    t.start()
    return t, outcome


@pytest.mark.parametrize("step", ["forward", "backward"])
def test_a_second_thread_on_a_busy_model_gets_a_clear_error(step, rng):
    block = Blocking()
    model = pm.Sequential().add(pm.Linear(4, 3)).add(block).add(pm.ReLU())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    g = np.ones((2, 3), np.float32)
    gate = block.gate
    gate.release.set()
    model.forward(x)  # a plain run, to have the outputs backward needs
    gate.release.clear()
    gate.entered.clear()
    args = (x,) if step == "forward" else (x, g)
    t, outcome = _running(getattr(model, step), *args)
    try:
        assert gate.entered.wait(10)
        with pytest.raises(RuntimeError, match=rf"{model.getName()} is already running .*"
                                               r"cloneModule\(\)"):
            model.forward(x)
        with pytest.raises(RuntimeError, match=rf"{model.getName()} is already running"):
            model.backward(x, g)
        with pytest.raises(RuntimeError, match=rf"{block.getName()} is already running"):
            block.forward(x)
        # A copy made meanwhile is the user's own: idle, and it computes.
        copy = model.cloneModule()
        np.testing.assert_array_equal(copy.forward(x), np.maximum(model.modules[0].output, 0))
    finally:
        gate.release.set()
        t.join(10)
    assert not isinstance(outcome[0], BaseException), outcome
    # the first caller finished normally, and the model is free again
    assert model.forward(x).shape == (2, 3)
    assert model.backward(x, g).shape == (2, 4)


def test_an_error_inside_leaves_the_module_free(rng):
    model = pm.Sequential().add(pm.Linear(4, 3)).add(pm.Linear(3, 2))
    with pytest.raises(ValueError, match="features"):
        model.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError):
        model.backward(np.zeros((2, 4), np.float32), np.zeros((2, 7), np.float32))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    assert model.forward(x).shape == (2, 2)
    assert model.backward(x, np.ones((2, 2), np.float32)).shape == (2, 4)
    # a strided input is retried contiguous inside backward: no false alarm either
    assert model.modules[0].backward(x, np.ones((4, 3), np.float32)[::2]).shape == (2, 4)


def test_maptable_clones_and_graph_nodes_are_no_concurrent_use(rng):
    x = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    table = pm.MapTable(pm.Sequential().add(pm.Linear(3, 2)).add(pm.Dropout(0.5)))
    out = table.forward(x)
    assert len(table.backward(x, [np.ones_like(o) for o in out])) == 3
    inp = pm.Input()
    graph = pm.Graph(inp, pm.Linear(3, 3)(pm.ReLU()(pm.Linear(3, 3)(inp))))
    y = graph.forward(x[0])
    assert graph.backward(x[0], np.ones_like(y)).shape == (2, 3)


def _model(seed):
    pm.setSeed(seed)
    return pm.Sequential().add(pm.Linear(16, 32)).add(pm.Tanh()).add(pm.Linear(32, 8)) \
        .add(pm.LogSoftMax())


def _serve(model, xs):
    outs = []
    for x in xs:
        out = model.forward(x)
        grad = model.backward(x, np.ones_like(out))
        outs.append((out.copy(), grad.copy()))
    return outs


def test_two_models_in_two_threads_give_the_same_results_as_one_after_the_other(rng):
    xs = [rng.standard_normal((3, 16)).astype(np.float32) for _ in range(300)]
    a = _model(1)
    b = a.cloneModule()  # one model per thread: cloneModule shares nothing
    c = _model(2)
    serial = [_serve(a, xs), _serve(c, xs)]
    a2, c2 = a.cloneModule(), c.cloneModule()
    results = [None, None, None]

    def run(i, m):
        results[i] = _serve(m, xs)

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate((a2, c2, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for got, want in zip(results, [serial[0], serial[1], serial[0]], strict=True):
        assert got is not None
        for (o, g), (wo, wg) in zip(got, want, strict=True):
            np.testing.assert_array_equal(o, wo)
            np.testing.assert_array_equal(g, wg)
