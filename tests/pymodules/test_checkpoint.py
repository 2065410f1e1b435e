"""Optim methods saved and loaded; checkpoints from which a run resumes exactly."""

import numpy as np
import pytest

import pymodules as pm
from pymodules.random import generator


def _quadratic(x):
    return float(x @ x), 2 * x


# {class: [method factory]}; an OptimMethod exported by pm without one fails below.
METHODS = {
    pm.SGD: [lambda: pm.SGD(0.1, momentum=0.9, nesterov=True, dampening=0.0),
             lambda: pm.SGD(0.1, learningRateSchedule=pm.Plateau("Loss", patience=1)),
             lambda: pm.SGD(0.1, learningRateSchedule=pm.SequentialSchedule(2).add(
                 pm.Warmup(0.01), 2).add(pm.Poly(0.5, 100), 50))],
    pm.Adam: [lambda: pm.Adam(0.01)],
    pm.AdamW: [lambda: pm.AdamW(0.01)],
    pm.Adagrad: [lambda: pm.Adagrad(0.1)],
    pm.RMSprop: [lambda: pm.RMSprop(0.01)],
    pm.Adadelta: [lambda: pm.Adadelta()],
    pm.Adamax: [lambda: pm.Adamax(0.01)],
    pm.LBFGS: [lambda: pm.LBFGS(maxIter=3)],
}


def _method_classes():
    return sorted({obj for name in pm.__all__ if isinstance(obj := getattr(pm, name), type)
                   and issubclass(obj, pm.OptimMethod) and obj is not pm.OptimMethod},
                  key=lambda c: c.__name__)


def test_every_optim_method_has_an_example():
    missing = [c.__name__ for c in _method_classes() if c not in METHODS]
    assert not missing, f"add save/load examples for {missing} to METHODS"


@pytest.mark.parametrize("make", [pytest.param(make, id=f"{cls.__name__}{i}")
                                  for cls in _method_classes()
                                  for i, make in enumerate(METHODS.get(cls, []))])
def test_optim_method_round_trip(make, tmp_path):
    method = make()
    x = np.linspace(-1.0, 2.0, 5)
    for _ in range(3):
        method.optimize(_quadratic, x)
    method.state.update(epoch=1, Loss=0.5)
    assert method.save(tmp_path / "m") is method
    with pytest.raises(FileExistsError):
        method.save(tmp_path / "m")
    loaded = pm.OptimMethod.load(tmp_path / "m")
    assert type(loaded) is type(method) and repr(loaded) == repr(method)
    a, b = x.copy(), x.copy()
    for _ in range(3):
        method.optimize(_quadratic, a)
        loaded.optimize(_quadratic, b)
    np.testing.assert_array_equal(a, b)
    assert loaded.getLearningRate() == method.getLearningRate()


def test_optim_method_load_refuses_other_files(tmp_path):
    pm.Linear(2, 2).save(tmp_path / "model")
    with pytest.raises(pm.FileFormatError, match="holds 'module', not 'state'"):
        pm.OptimMethod.load(tmp_path / "model")


# -- resuming a run -------------------------------------------------------------------------
def _setup(method, end, seed):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    pm.setSeed(seed)
    model = pm.Sequential().add(pm.Linear(6, 5)).add(pm.Linear(5, 3))
    opt = pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), method, end, 16)
    return model, opt.setProgressBar(False)


@pytest.mark.parametrize("make", [lambda: pm.SGD(0.1, momentum=0.9),
                                  lambda: pm.Adam(0.01)])
@pytest.mark.parametrize("at", [4, 6, 8, None])  # mid-epoch, epoch end, the latest
@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_resumed_run_continues_exactly(make, at, where, tmp_path):
    path = str(tmp_path) if where == "local" else f"memory://ckpt-{tmp_path.name}"
    # 40 records in batches of 16: 3 iterations an epoch
    model, opt = _setup(make(), pm.MaxIteration(11), seed=0)
    opt.setCheckpoint(path, pm.SeveralIteration(2)).optimize()
    expected_weights = [np.copy(w) for w in model.parameters()[0]]
    expected_state = dict(opt.state)
    expected_draws = generator().random(4)

    resumed, opt2 = _setup(make(), pm.MaxIteration(11), seed=99)  # other initial weights
    opt2.loadCheckpoint(path, at)
    assert opt2.state["iteration"] == (at or 10)
    opt2.optimize()
    for a, b in zip(expected_weights, resumed.parameters()[0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert opt2.state == expected_state
    np.testing.assert_array_equal(generator().random(4), expected_draws)
    if where == "memory":
        import fsspec

        fsspec.filesystem("memory").rm(path.split("://")[1], recursive=True)


def test_load_checkpoint_without_one(tmp_path):
    _, opt = _setup(pm.SGD(0.1), pm.MaxIteration(1), seed=0)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        opt.loadCheckpoint(tmp_path)


# -- what a checkpoint holds ------------------------------------------------------------------
def test_a_checkpointed_model_propagates_back(tmp_path):
    """The Optimizer skips the first layer's gradInput while it trains; a model loaded from
    a checkpoint is the user's model, whose backward gives the full gradInput."""
    model, opt = _setup(pm.SGD(0.1), pm.MaxIteration(2), seed=0)
    opt.setCheckpoint(str(tmp_path), pm.SeveralIteration(1)).optimize()
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    for it in (1, 2):
        loaded = pm.Module.load(str(tmp_path / f"model.{it}"))
        assert loaded.modules[0].propagateBack
        out = loaded.forward(x)
        assert loaded.backward(x, np.ones_like(out)).shape == (4, 6)


def test_optimize_that_raises_leaves_the_flag_as_it_was(rng):
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    y[30:] = 7  # out of range: the criterion raises in the middle of the epoch
    for before in (True, False):
        model = pm.Sequential().add(pm.Linear(6, 5)).add(pm.Linear(5, 3))
        model.modules[0].propagateBack = before
        opt = pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                           pm.MaxEpoch(2), 8).setProgressBar(False)
        pm.setSeed(0)
        with pytest.raises(ValueError):
            opt.optimize()
        assert opt.state["iteration"] < 10  # it stopped in the middle
        assert model.modules[0].propagateBack is before
