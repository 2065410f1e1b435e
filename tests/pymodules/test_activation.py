import numpy as np
import pytest
from gradcheck import assert_jacobian
from torch_oracle import assert_matches_torch

import pymodules as pm

# (factory, NumPy reference, input transform keeping points off kinks and domains)
AWAY = lambda x: x + np.sign(x) * 0.1  # noqa: E731 - off the kink at 0
POS = lambda x: np.abs(x) + 0.5  # noqa: E731 - in the domain of Sqrt, Log
ELEMENTWISE = {
    "ReLU": (lambda d: pm.ReLU(dtype=d), lambda x: np.maximum(x, 0), AWAY),
    "ReLU6": (lambda d: pm.ReLU6(dtype=d), lambda x: np.clip(x, 0, 6), lambda x: AWAY(x) * 4),
    "LeakyReLU": (lambda d: pm.LeakyReLU(0.2, dtype=d), lambda x: np.where(x > 0, x, 0.2 * x),
                  AWAY),
    "ELU": (lambda d: pm.ELU(1.5, dtype=d), lambda x: np.where(x > 0, x, 1.5 * np.expm1(x)),
            AWAY),
    "Tanh": (lambda d: pm.Tanh(dtype=d), np.tanh, None),
    "Sigmoid": (lambda d: pm.Sigmoid(dtype=d), lambda x: 1 / (1 + np.exp(-x)), None),
    "HardTanh": (lambda d: pm.HardTanh(-0.5, 0.7, dtype=d), lambda x: np.clip(x, -0.5, 0.7),
                 None),
    "HardSigmoid": (lambda d: pm.HardSigmoid(dtype=d),
                    lambda x: np.clip(0.2 * x + 0.5, 0, 1), lambda x: x * 2),
    "SoftPlus": (lambda d: pm.SoftPlus(2.0, dtype=d), lambda x: np.log1p(np.exp(2 * x)) / 2,
                 None),
    "SoftSign": (lambda d: pm.SoftSign(dtype=d), lambda x: x / (1 + np.abs(x)), None),
    "Threshold": (lambda d: pm.Threshold(0.3, -2.0, dtype=d), lambda x: np.where(x > 0.3, x, -2),
                  lambda x: AWAY(x - 0.3) + 0.3),
    "Abs": (lambda d: pm.Abs(dtype=d), np.abs, AWAY),
    "Square": (lambda d: pm.Square(dtype=d), np.square, None),
    "Sqrt": (lambda d: pm.Sqrt(dtype=d), np.sqrt, POS),
    "Exp": (lambda d: pm.Exp(dtype=d), np.exp, None),
    "Log": (lambda d: pm.Log(dtype=d), np.log, POS),
    "Power": (lambda d: pm.Power(3.0, 0.5, 2.0, dtype=d), lambda x: (2 + 0.5 * x) ** 3, None),
    "Power2": (lambda d: pm.Power(2.0, 2.0, 1.0, dtype=d), lambda x: (1 + 2 * x) ** 2, None),
    "PowerHalf": (lambda d: pm.Power(0.5, 1.0, 3.0, dtype=d), lambda x: np.sqrt(3 + x), None),
    "Clamp": (lambda d: pm.Clamp(-1, 2, dtype=d), lambda x: np.clip(x, -1, 2), lambda x: x * 2),
}


def _input(name, shape, dtype, rng):
    x = rng.standard_normal(shape)
    fix = ELEMENTWISE[name][2]
    return (fix(x) if fix else x).astype(dtype)


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2, 2)])
def test_elementwise_jacobian(name, shape, rng):
    assert_jacobian(ELEMENTWISE[name][0](np.float64), _input(name, shape, np.float64, rng))


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_matches_numpy(name, dtype, rng):
    make, ref, _ = ELEMENTWISE[name]
    x = _input(name, (4, 7), dtype, rng)
    y = make(dtype).forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=1e-6 if dtype == np.float32
                               else 1e-13, atol=1e-7 if dtype == np.float32 else 1e-14)


TORCH = {
    "ReLU": lambda F, t: F.relu(t), "ReLU6": lambda F, t: F.relu6(t),
    "LeakyReLU": lambda F, t: F.leaky_relu(t, 0.2), "ELU": lambda F, t: F.elu(t, 1.5),
    "Tanh": lambda F, t: t.tanh(), "Sigmoid": lambda F, t: t.sigmoid(),
    "HardTanh": lambda F, t: F.hardtanh(t, -0.5, 0.7),
    "SoftPlus": lambda F, t: F.softplus(t, beta=2.0), "SoftSign": lambda F, t: F.softsign(t),
    "Threshold": lambda F, t: F.threshold(t, 0.3, -2.0), "Abs": lambda F, t: t.abs(),
    "Square": lambda F, t: t * t, "Sqrt": lambda F, t: t.sqrt(), "Exp": lambda F, t: t.exp(),
    "Log": lambda F, t: t.log(), "Power": lambda F, t: (2 + 0.5 * t) ** 3,
    "Clamp": lambda F, t: t.clamp(-1, 2),
}


@pytest.mark.parametrize("name", TORCH)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_matches_torch(name, dtype, torch, rng):
    x = _input(name, (3, 5, 4), dtype, rng)
    g = rng.standard_normal(x.shape).astype(dtype)
    m = ELEMENTWISE[name][0](dtype)
    y = m.forward(x)
    gi = m.backward(x, g)
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = TORCH[name](torch.nn.functional, t)
    ty.backward(torch.from_numpy(g))
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gi, t.grad.numpy(), **tol)


@pytest.mark.parametrize("make", [
    lambda: pm.ReLU(True), lambda: pm.ReLU6(True), lambda: pm.LeakyReLU(0.1, True),
    lambda: pm.ELU(1.0, True), lambda: pm.HardTanh(-1, 1, True), lambda: pm.Threshold(0, 0, True),
])
def test_inplace_aliases_input_and_grad_output(make, rng):
    x = (rng.standard_normal((3, 4)) * 3).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    m_ref = make()
    m_ref.inplace = False
    want_y = m_ref.forward(x.copy()).copy()
    want_gi = m_ref.backward(x.copy(), g.copy()).copy()
    m = make()
    y = m.forward(x)
    assert y is x
    np.testing.assert_array_equal(x, want_y)
    gi = m.backward(x, g)
    assert gi is g
    np.testing.assert_array_equal(g, want_gi)


def test_threshold_inplace_needs_value_not_above_threshold():
    with pytest.raises(ValueError, match="v <= th"):
        pm.Threshold(0.0, 1.0, True)


def test_defaults_follow_bigdl():
    assert (pm.Threshold().th, pm.Threshold().v) == (1e-6, 0.0)
    assert pm.LeakyReLU().negval == 0.01 and pm.ELU().alpha == 1.0 and pm.SoftPlus().beta == 1.0
    assert (pm.HardTanh().minValue, pm.HardTanh().maxValue) == (-1.0, 1.0)
    assert (pm.Power(2).scale, pm.Power(2).shift) == (1.0, 0.0)
    np.testing.assert_array_equal(pm.PReLU().weight, [0.25])
    np.testing.assert_array_equal(pm.PReLU(3).weight, [0.25] * 3)


def test_activation_errors_name_the_module():
    m = pm.Tanh()
    with pytest.raises(TypeError, match=r"Tanh@\w+: input has dtype float64, expected float32"):
        m.forward(np.zeros(3))
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        m.forward([1.0, 2.0])
    m.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"gradOutput has shape \(3, 2\), expected \(2, 3\)"):
        m.backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))


def test_strided_input_is_accepted(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(pm.ReLU().forward(x[:, ::2]), np.maximum(x[:, ::2], 0))


# -- PReLU ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n,shape", [(0, (3, 4)), (4, (4,)), (4, (2, 4)), (3, (3, 2, 2)),
                                     (3, (2, 3, 2, 2))])
@pytest.mark.parametrize("wrt", ["input", "weight"])
def test_prelu_jacobian(n, shape, wrt, rng):
    m = pm.PReLU(n, dtype=np.float64)
    m.weight[...] = rng.uniform(0.1, 0.5, m.weight.shape)
    assert_jacobian(m, AWAY(rng.standard_normal(shape)), wrt=wrt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prelu_matches_torch(dtype, torch, rng):
    m = pm.PReLU(3, dtype=dtype)
    m.weight[...] = [0.1, 0.2, 0.3]
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y = m.forward(x)
    gi = m.backward(x, g)
    t = torch.from_numpy(x.copy()).requires_grad_()
    w = torch.from_numpy(m.weight.copy()).requires_grad_()
    ty = torch.nn.functional.prelu(t, w)
    ty.backward(torch.from_numpy(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gi, t.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(m.gradWeight, w.grad.numpy(), rtol=tol, atol=tol)


def test_prelu_accumulates_with_scale(rng):
    m = pm.PReLU(2, dtype=np.float64)
    x, g = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    m.forward(x)
    m.backward(x, g)
    once = m.gradWeight.copy()
    m.setScaleW(0.5)
    m.backward(x, g)
    np.testing.assert_allclose(m.gradWeight, 1.5 * once)
    want = np.sum(np.where(x <= 0, x * g, 0), axis=0)
    np.testing.assert_allclose(once, want)


def test_prelu_wrong_channel_count():
    with pytest.raises(ValueError, match=r"PReLU@\w+\(3\): input has 4 channels, expected 3"):
        pm.PReLU(3).forward(np.zeros((2, 4, 5, 5), np.float32))


# -- SoftMax, SoftMin, LogSoftMax -----------------------------------------------------------

def _softmax_ref(x, axis, sign=1):
    z = sign * x - np.max(sign * x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


AXES = {(6,): 0, (3, 6): 1, (4, 2, 3): 0, (2, 4, 2, 3): 1}


@pytest.mark.parametrize("shape", list(AXES))
@pytest.mark.parametrize("cls,sign", [(pm.SoftMax, 1), (pm.SoftMin, -1)])
def test_softmax_family(shape, cls, sign, rng):
    x = rng.standard_normal(shape)
    m = cls(dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), _softmax_ref(x, AXES[shape], sign), rtol=1e-13)
    assert_jacobian(cls(dtype=np.float64), x)


@pytest.mark.parametrize("shape", [(6,), (3, 6)])
def test_log_softmax(shape, rng):
    x = rng.standard_normal(shape) * 10
    m = pm.LogSoftMax(dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), np.log(_softmax_ref(x, -1)), rtol=1e-12)
    assert_jacobian(pm.LogSoftMax(dtype=np.float64), x)


def test_log_softmax_rejects_images():
    with pytest.raises(ValueError, match="must be 1-D to 2-D, got 3-D"):
        pm.LogSoftMax().forward(np.zeros((2, 3, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 7), (2, 4, 3, 3)])
def test_softmax_matches_torch(dtype, shape, torch, rng):
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    F = torch.nn.functional
    cases = [(pm.SoftMax, lambda t: F.softmax(t, 1)), (pm.SoftMin, lambda t: F.softmin(t, 1))]
    if len(shape) == 2:
        cases.append((pm.LogSoftMax, lambda t: F.log_softmax(t, 1)))
    for cls, f in cases:
        assert_matches_torch(cls(dtype=dtype), f, x, g, **tol)


def test_softmax_is_stable_for_large_inputs():
    y = pm.SoftMax().forward(np.array([[1000.0, 1000.0, -1000.0]], np.float32))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])
