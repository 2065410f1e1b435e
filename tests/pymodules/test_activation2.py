"""LogSigmoid, SoftShrink, HardShrink, TanhShrink, BinaryThreshold and RReLU."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from torch_oracle import assert_matches_torch

import pymodules as pm


def _away(x, points):
    """``x`` moved at least 0.05 away from each kink in ``points``."""
    for p in points:
        near = np.abs(x - p) < 0.05
        x = np.where(near, p + np.where(x >= p, 0.05, -0.05), x)
    return x


# (factory, NumPy reference, the kinks to keep inputs away from)
ELEMENTWISE = {
    "LogSigmoid": (lambda d: pm.LogSigmoid(dtype=d), lambda x: -np.logaddexp(0, -x), ()),
    "SoftShrink": (lambda d: pm.SoftShrink(0.7, dtype=d),
                   lambda x: np.where(x > 0.7, x - 0.7, np.where(x < -0.7, x + 0.7, 0)),
                   (-0.7, 0.7)),
    "SoftShrinkDefault": (lambda d: pm.SoftShrink(dtype=d),
                          lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0), (-0.5, 0.5)),
    "HardShrink": (lambda d: pm.HardShrink(0.3, dtype=d),
                   lambda x: np.where(np.abs(x) > 0.3, x, 0), (-0.3, 0.3)),
    "HardShrinkDefault": (lambda d: pm.HardShrink(dtype=d),
                          lambda x: np.where(np.abs(x) > 0.5, x, 0), (-0.5, 0.5)),
    "TanhShrink": (lambda d: pm.TanhShrink(dtype=d), lambda x: x - np.tanh(x), ()),
    "RReLUEval": (lambda d: pm.RReLU(0.1, 0.3, dtype=d).evaluate(),
                  lambda x: np.where(x > 0, x, 0.2 * x), (0,)),
}


def _input(name, shape, dtype, rng):
    x = rng.standard_normal(shape) * 2
    return _away(x, ELEMENTWISE[name][2]).astype(dtype)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2, 2)])
def test_jacobian(name, shape, rng):
    assert_jacobian(ELEMENTWISE[name][0](np.float64), _input(name, shape, np.float64, rng))


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy(name, dtype, rng):
    make, ref, _ = ELEMENTWISE[name]
    x = _input(name, (4, 7), dtype, rng)
    y = make(dtype).forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), **tol)


def test_log_sigmoid_is_stable_at_both_ends():
    x = np.array([-800.0, -40.0, 40.0, 800.0])
    y = pm.LogSigmoid(dtype=np.float64).forward(x)
    np.testing.assert_allclose(y, [-800.0, -40.0, -np.exp(-40.0), 0.0], rtol=1e-13, atol=0)
    g = pm.LogSigmoid(dtype=np.float64)
    g.forward(x)
    np.testing.assert_allclose(g.backward(x, np.ones(4)), [1.0, 1.0, np.exp(-40.0), 0.0],
                               rtol=1e-13)


TORCH = {
    "LogSigmoid": lambda F, t: F.logsigmoid(t),
    "SoftShrink": lambda F, t: F.softshrink(t, 0.7),
    "SoftShrinkDefault": lambda F, t: F.softshrink(t),
    "HardShrink": lambda F, t: F.hardshrink(t, 0.3),
    "HardShrinkDefault": lambda F, t: F.hardshrink(t),
    "TanhShrink": lambda F, t: F.tanhshrink(t),
    "RReLUEval": lambda F, t: F.rrelu(t, 0.1, 0.3, training=False),
}


@pytest.mark.parametrize("name", TORCH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(name, dtype, torch, rng):
    x = _input(name, (3, 5, 4), dtype, rng)
    g = rng.standard_normal(x.shape).astype(dtype)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    assert_matches_torch(ELEMENTWISE[name][0](dtype),
                         lambda t: TORCH[name](torch.nn.functional, t), x, g, **tol)


def test_defaults_follow_bigdl():
    m = pm.RReLU()
    assert (m.lower, m.upper, m.inplace) == (1.0 / 8, 1.0 / 3, False)
    assert pm.SoftShrink().the_lambda == 0.5 and pm.HardShrink().the_lambda == 0.5
    assert (pm.BinaryThreshold().th, pm.BinaryThreshold().inplace) == (1e-6, False)
    assert pm.SoftShrink(the_lambda=0.2).the_lambda == 0.2
    assert pm.RReLU(lower=0.2, upper=0.4, inplace=True).inplace


@pytest.mark.parametrize("make, match", [
    (lambda: pm.SoftShrink(-0.1), "the_lambda must be >= 0"),
    (lambda: pm.HardShrink(float("nan")), "HardShrink: the_lambda must be >= 0"),
    (lambda: pm.RReLU(0.4, 0.2), "0 <= lower <= upper"),
    (lambda: pm.RReLU(-0.1, 0.2), "0 <= lower <= upper"),
    (lambda: pm.BinaryThreshold(1.5, True), "in place needs 0 <= th < 1"),
    (lambda: pm.BinaryThreshold(-0.5, True), "in place needs 0 <= th < 1"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make", [pm.LogSigmoid, pm.TanhShrink, pm.SoftShrink, pm.HardShrink,
                                  pm.BinaryThreshold, pm.RReLU])
def test_errors_name_the_module(make):
    assert_refusal_names_the_module(make, np.zeros((2, 3)), "input has dtype float64, "
                                    "expected float32", TypeError)
    m = make()
    m.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"@\w+(\(.*\))?: gradOutput has shape \(3, 2\)"):
        m.backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))


# -- BinaryThreshold ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_threshold(dtype, rng):
    x = rng.standard_normal((5, 6)).astype(dtype)
    x[0, :3] = [0.3, 0.3 + 1e-6, np.nan]
    g = rng.standard_normal(x.shape).astype(dtype)
    m = pm.BinaryThreshold(0.3, dtype=dtype)
    y, gi = m.forward(x), m.backward(x, g)
    with np.errstate(invalid="ignore"):
        want = np.where(x > 0.3, 1.0, np.where(x <= 0.3, 0.0, np.nan))
    np.testing.assert_array_equal(y, want)
    assert y[0, 0] == 0 and y[0, 1] == 1 and np.isnan(y[0, 2])
    # BigDL's gradient: gradOutput where the input is above the threshold (straight-through)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(gi, np.where(x <= 0.3, 0, g))
    assert gi[0, 2] == g[0, 2]


def test_binary_threshold_in_place(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5)).astype(np.float32)
    ref = pm.BinaryThreshold(0.2)
    want_y, want_gi = ref.forward(x).copy(), ref.backward(x, g).copy()
    m = pm.BinaryThreshold(0.2, True)
    assert m.forward(x) is x
    np.testing.assert_array_equal(x, want_y)
    assert m.backward(x, g) is g
    np.testing.assert_array_equal(g, want_gi)


# -- RReLU -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rrelu_training_draws_slopes_in_the_range(dtype, rng):
    x = rng.standard_normal((300, 400)).astype(dtype)
    x[0, :3] = [0.0, -0.0, 2.0]
    m = pm.RReLU(0.1, 0.4, dtype=dtype)
    y = m.forward(x)
    neg = x <= 0
    np.testing.assert_array_equal(y[~neg], x[~neg])
    np.testing.assert_array_equal(m.noise[~neg], 1)
    slopes = m.noise[neg]
    assert slopes.min() >= np.asarray(0.1, dtype) and slopes.max() <= np.asarray(0.4, dtype)
    np.testing.assert_allclose(y[neg], x[neg] * slopes, rtol=1e-6)
    # uniform on [0.1, 0.4): its deciles within a few standard errors (n ~ 60000)
    deciles = np.quantile(slopes.astype(np.float64), np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(deciles, 0.1 + 0.3 * np.linspace(0.1, 0.9, 9), atol=0.005)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(m.backward(x, g), g * m.noise)


def test_rrelu_slopes_match_torch_statistics(torch, rng):
    x = -np.abs(rng.standard_normal(200000)) - 0.1
    ours = pm.RReLU(dtype=np.float64).forward(x) / x
    theirs = (torch.nn.functional.rrelu(torch.from_numpy(x), training=True) /
              torch.from_numpy(x)).numpy()
    for s in (ours, theirs):
        assert 1 / 8 <= s.min() and s.max() <= 1 / 3
    # the same distribution: means and standard deviations agree to sampling error
    se = (1 / 3 - 1 / 8) / np.sqrt(12 * x.size)
    assert abs(ours.mean() - theirs.mean()) < 6 * se
    assert abs(ours.std() - theirs.std()) < 6 * se


def test_rrelu_jacobian_in_training_with_a_fixed_seed(rng):
    x = _away(rng.standard_normal((3, 4)), (0,))
    assert_jacobian(pm.RReLU(dtype=np.float64), x, seed=11)


def test_rrelu_seed_reproduces_and_draws_differ_between_calls(rng):
    x = -np.ones(500, np.float32)
    m = pm.RReLU()
    pm.setSeed(5)
    a = m.forward(x).copy()
    b = m.forward(x).copy()
    pm.setSeed(5)
    np.testing.assert_array_equal(m.forward(x), a)
    assert not np.array_equal(a, b)
    # a second layer draws a stream of its own
    pm.setSeed(5)
    other, again = pm.RReLU(), pm.RReLU()
    assert not np.array_equal(other.forward(x), again.forward(x))


def test_rrelu_with_equal_bounds_is_leaky_relu(rng):
    x = rng.standard_normal((6, 5))
    m = pm.RReLU(0.25, 0.25, dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), np.where(x > 0, x, 0.25 * x), rtol=1e-15)


@pytest.mark.parametrize("train", [True, False])
def test_rrelu_in_place(train, rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5)).astype(np.float32)
    ref = pm.RReLU(0.1, 0.3)
    m = pm.RReLU(0.1, 0.3, True)
    if not train:
        ref.evaluate()
        m.evaluate()
    pm.setSeed(9)
    want_y = ref.forward(x.copy()).copy()
    want_gi = ref.backward(x.copy(), g.copy()).copy()
    pm.setSeed(9)  # each layer's stream restarts as the first child of seed 9
    assert m.forward(x) is x
    np.testing.assert_array_equal(x, want_y)
    assert m.backward(x, g) is g
    np.testing.assert_array_equal(g, want_gi)


def test_rrelu_eval_then_training_backward(rng):
    """Backward follows the mode of the forward before it."""
    x = rng.standard_normal((3, 4))
    m = pm.RReLU(0.1, 0.3, dtype=np.float64).evaluate()
    m.forward(x)
    np.testing.assert_allclose(m.backward(x, np.ones_like(x)), np.where(x > 0, 1, 0.2))
    m.training()
    m.forward(x)
    np.testing.assert_array_equal(m.backward(x, np.ones_like(x)), m.noise)


def test_strided_input_is_accepted(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(pm.TanhShrink().forward(x[:, ::2]),
                               x[:, ::2] - np.tanh(x[:, ::2]), rtol=1e-5, atol=1e-6)


def test_buffers_are_reused(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for m in (pm.LogSigmoid(), pm.RReLU(), pm.BinaryThreshold()):
        y1, g1 = m.forward(x), m.backward(x, x)
        n1 = getattr(m, "noise", None)
        assert m.forward(x) is y1 and m.backward(x, x) is g1
        assert getattr(m, "noise", None) is n1
