import numpy as np
import pytest

import pymodules as pm
from pymodules.optim.optimizer import load_state, save_state


def _quadratic(x):
    return float(x @ x), 2 * x


def test_sgd_torch7_reference():
    x = np.array([10.0])
    sgd = pm.SGD(learningRate=0.1, learningRateDecay=5e-7, weightDecay=0.01, momentum=0.002)
    for _ in range(10):
        x, losses = sgd.optimize(_quadratic, x)
    assert x[0] == pytest.approx(1.0591906190415, abs=1e-12)
    assert sgd.state["neval"] == 10 and isinstance(losses, list) and len(losses) == 1


def _rosenbrock(x):
    a, b = x[0], x[1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
    return float(f), g


@pytest.mark.parametrize("method,steps", [
    (lambda: pm.SGD(learningRate=1e-3, momentum=0.9, dampening=0.0), 20000),
    (lambda: pm.Adam(learningRate=0.01), 20000),
    (lambda: pm.LBFGS(maxIter=100, learningRate=1.0), 10),
])
def test_solves_rosenbrock(method, steps):
    opt = method()
    x = np.zeros(2)
    for _ in range(steps):
        opt.optimize(_rosenbrock, x)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-2)


def _torch_run(torch, make, x0, grads):
    p = torch.nn.Parameter(torch.tensor(x0.copy()))
    opt = make([p])
    for g in grads:
        opt.zero_grad()
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


@pytest.mark.parametrize("ours,theirs", [
    (lambda: pm.SGD(0.1, 0.0, 0.01, 0.9, 0.1), lambda t, p: t.optim.SGD(
        p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (lambda: pm.SGD(0.1, momentum=0.9, dampening=0.0, nesterov=True), lambda t, p: t.optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True)),
    (lambda: pm.Adagrad(0.1, 0.01, 0.02), lambda t, p: t.optim.Adagrad(
        p, lr=0.1, lr_decay=0.01, weight_decay=0.02)),
    (lambda: pm.RMSprop(0.01, decayRate=0.9), lambda t, p: t.optim.RMSprop(
        p, lr=0.01, alpha=0.9, eps=1e-8)),
    (lambda: pm.Adadelta(0.9, 1e-6), lambda t, p: t.optim.Adadelta(p, rho=0.9, eps=1e-6)),
    (lambda: pm.Adamax(0.01, epsilon=1e-8), lambda t, p: t.optim.Adamax(p, lr=0.01, eps=1e-8)),
    (lambda: pm.Adam(0.01, epsilon=1e-12), lambda t, p: t.optim.Adam(p, lr=0.01, eps=1e-12)),
    (lambda: pm.AdamW(0.01, epsilon=1e-12, weightDecay=0.1), lambda t, p: t.optim.AdamW(
        p, lr=0.01, eps=1e-12, weight_decay=0.1)),
])
def test_agrees_with_torch(ours, theirs, torch, rng):
    x0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(6)]
    x = x0.copy()
    opt = ours()
    it = iter(grads)
    for _ in grads:
        opt.optimize(lambda _x: (0.0, next(it)), x)
    ref = _torch_run(torch, lambda p: theirs(torch, p), x0, grads)
    np.testing.assert_allclose(x, ref, rtol=1e-7, atol=1e-9)


def test_float32_updates_in_place():
    x = np.ones(4, np.float32)
    out, _ = pm.Adam(0.1).optimize(lambda v: (1.0, np.ones(4, np.float32)), x)
    assert out is x and x.dtype == np.float32 and (x < 1).all()


def test_bad_gradient_names_the_method():
    with pytest.raises(ValueError, match=r"SGD\(.*\): grad has shape \(3,\), expected \(4,\)"):
        pm.SGD().optimize(lambda v: (0.0, np.zeros(3)), np.zeros(4))
    with pytest.raises(TypeError, match="flat 1-D parameter vector"):
        pm.SGD().optimize(lambda v: (0.0, v), np.zeros((2, 2)))


@pytest.mark.parametrize("schedule,rates", [
    (pm.Default(), [0.1, 0.1 / 1.5, 0.1 / 2]),
    (pm.Step(2, 0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (pm.MultiStep([1, 3], 0.1), [0.1, 0.01, 0.01, 0.001]),
    (pm.Exponential(2, 0.5), [0.1, 0.1 * 0.5 ** 0.5, 0.05]),
    (pm.Exponential(2, 0.5, stairCase=True), [0.1, 0.1, 0.05]),
    (pm.Poly(2, 4), [0.1, 0.1 * 0.75 ** 2, 0.1 * 0.25, 0.1 * 0.0625, 0.0, 0.0]),
    (pm.Warmup(0.01), [0.1, 0.11, 0.12]),
    (pm.SequentialSchedule(10).add(pm.Warmup(0.05), 2).add(pm.Step(1, 0.5), 10),
     [0.1, 0.15, 0.1, 0.05, 0.025]),
])
def test_schedules(schedule, rates):
    sgd = pm.SGD(0.1, learningRateDecay=0.5, learningRateSchedule=schedule)
    got = []
    x = np.zeros(1)
    for _ in rates:
        got.append(sgd.getLearningRate())
        sgd.optimize(lambda v: (0.0, np.zeros(1)), x)
    np.testing.assert_allclose(got, rates, rtol=1e-12)


def test_plateau_reduces_after_patience():
    plateau = pm.Plateau("Loss", factor=0.5, patience=2, mode="min")
    sgd = pm.SGD(0.1, learningRateSchedule=plateau)
    got = []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.95, 0.95, 0.95], start=1):
        sgd.state.update(epoch=epoch, Loss=loss)
        got.append(sgd.getLearningRate())
    assert got == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]


def test_state_is_plain_and_round_trips(tmp_path):
    sgd = pm.SGD(0.1, momentum=0.9, learningRateSchedule=pm.Plateau("Loss", patience=1))
    x = np.ones(3)
    sgd.optimize(_quadratic, x)
    sgd.state.update(epoch=1, Loss=1.0)
    sgd.getLearningRate()
    state = sgd.getState()
    assert all(isinstance(v, (np.ndarray, int, float, str, type(None))) for v in state.values())
    save_state(tmp_path / "s.npz", state)
    loaded = load_state(tmp_path / "s.npz")
    a, b = x.copy(), x.copy()
    sgd.optimize(_quadratic, a)
    other = pm.SGD(0.1, momentum=0.9, learningRateSchedule=pm.Plateau("Loss", patience=1))
    other.loadState(loaded)
    other.optimize(_quadratic, b)
    np.testing.assert_array_equal(a, b)
    assert other.state["neval"] == 2


def test_adam_state_round_trip():
    a, b = pm.Adam(0.1), pm.Adam(0.1)
    x = np.ones(3)
    a.optimize(_quadratic, x)
    b.loadState(a.getState())
    y = x.copy()
    a.optimize(_quadratic, x)
    b.optimize(_quadratic, y)
    np.testing.assert_array_equal(x, y)
