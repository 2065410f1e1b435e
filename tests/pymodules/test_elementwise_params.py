"""Element-wise and small parametric layers: CMul, CAdd, Scale, Add, Mul (numbers, gradients,
initialisation, errors)."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

# (size, input shape): element by element, over a batch, per channel, several repeated axes
SHAPES = [((4,), (4,)), ((4,), (3, 4)), ((2, 3), (5, 2, 3)), ((1, 3, 1, 1), (2, 3, 4, 5)),
          ((3, 1, 5), (2, 3, 4, 5)), ((2, 1), (3, 2, 4)), ((6,), (2, 3)), ((1,), (3, 2))]


def _expand(p, shape):
    """NumPy reference of how a parameter applies to an input of ``shape``."""
    if p.size == int(np.prod(shape)):
        return p.reshape(shape)
    q = p.reshape((1,) * (len(shape) - p.ndim) + p.shape)
    return np.broadcast_to(q, shape)


def _sum_back(g, p, shape):
    """NumPy reference of a parameter gradient: g summed where the parameter repeats."""
    if p.size == int(np.prod(shape)):
        return g.reshape(p.shape)
    lead = len(shape) - p.ndim
    q = g.sum(axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(p.shape) if n == 1 and q.shape[i] != 1)
    return q.sum(axis=axes, keepdims=True).reshape(p.shape)


@pytest.mark.parametrize("size, shape", SHAPES)
@pytest.mark.parametrize("cls", [pm.CMul, pm.CAdd, pm.Scale])
def test_jacobians(cls, size, shape, rng):
    m = cls(list(size), dtype=np.float64)
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size, shape", SHAPES)
def test_scale_against_numpy(size, shape, dtype, rng):
    m = pm.Scale(size, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    w, b = m.weight.astype(np.float64), m.bias.astype(np.float64)
    tol = dict(rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6 if dtype == np.float32
               else 1e-13)
    y = m.forward(x)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, x * _expand(w, shape) + _expand(b, shape), **tol)
    np.testing.assert_allclose(m.backward(x, go), go * _expand(w, shape), **tol)
    # reductions over at most 120 terms of size ~1
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m.gradWeight, _sum_back(go * x, w, shape), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(m.gradBias, _sum_back(go.astype(np.float64), b, shape),
                               rtol=rtol, atol=rtol)
    # accumulation, with the scales
    m.setScaleW(0.5).setScaleB(2.0)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 1.5 * _sum_back(go * x, w, shape), rtol=rtol,
                               atol=rtol)
    np.testing.assert_allclose(m.gradBias, 3.0 * _sum_back(go.astype(np.float64), b, shape),
                               rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cmul_cadd_against_torch(dtype, torch, rng):
    size, shape = (1, 3, 1, 1), (2, 3, 4, 5)
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    for m in (pm.CMul(size, dtype=dtype), pm.CAdd(size, dtype=dtype)):
        p = torch.from_numpy(m.parameters()[0][0].copy()).requires_grad_()
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = tx * p if isinstance(m, pm.CMul) else tx + p
        ty.backward(torch.from_numpy(go))
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(m.forward(x), ty.detach().numpy(), **tol)
        np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), **tol)
        np.testing.assert_allclose(m.parameters()[1][0], p.grad.numpy(), **tol)


def test_scale_weight_gradient_reads_the_input(rng):
    """The weight gradient of Scale is sum(gradOutput * input), not of the output."""
    m = pm.Scale([3], dtype=np.float64)
    x, go = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    m.forward(x)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, (go * x).sum(0))
    assert [a.shape for a in m.parameters()[0]] == [(3,), (3,)]
    assert m.parameters()[0][0] is m.weight and m.parameters()[0][1] is m.bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 5, 1), (0, 5)])
def test_add(shape, dtype, rng):
    m = pm.Add(5, dtype=dtype)
    x, go = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    b = m.bias.reshape((1,) * (len(shape) - 1) + (5,) if len(shape) < 3 else (1, 5, 1))
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m.forward(x), x + b, rtol=tol, atol=tol)
    np.testing.assert_array_equal(m.backward(x, go), go)
    np.testing.assert_allclose(m.gradBias, go.reshape(-1, 5).sum(0) if shape != (2, 5, 1)
                               else go.sum(axis=(0, 2)), rtol=10 * tol, atol=10 * tol)
    if shape[0] and dtype == np.float64:
        assert_jacobian(m, x, wrt="input")
        assert_jacobian(m, x, wrt="parameters")


def test_add_of_one_is_a_scalar(rng):
    m = pm.Add(1, dtype=np.float64)
    x, go = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(m.forward(x), x + m.bias[0])
    m.backward(x, go)
    np.testing.assert_allclose(m.gradBias, [go.sum()])
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (2, 3, 4)])
def test_mul(shape, dtype, rng):
    m = pm.Mul(dtype=dtype)
    assert m.weight.shape == (1,) and -1 <= m.weight[0] <= 1
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(m.forward(x), m.weight[0] * x, rtol=1e-6)
    np.testing.assert_allclose(m.backward(x, go), m.weight[0] * go, rtol=1e-6)
    np.testing.assert_allclose(m.gradWeight, [np.sum(x.astype(np.float64) * go)], rtol=1e-5,
                               atol=1e-5)
    if dtype == np.float64:
        assert_jacobian(m, x, wrt="input")
        assert_jacobian(m, x, wrt="parameters")


def test_default_init_and_layout():
    big = pm.CMul([20, 20], dtype=np.float64)
    assert big.weight.shape == (20, 20) and big.bias is None
    assert 0.045 < np.abs(big.weight).max() <= 1 / 20
    c = pm.CAdd([2, 50])
    assert c.weight is None and c.bias.shape == (2, 50) and np.abs(c.bias).max() <= 0.1
    s = pm.Scale([100])
    assert np.abs(s.weight).max() <= 0.1 and np.abs(s.bias).max() <= 0.1
    a = pm.Add(400)
    assert a.bias.shape == (400,) and 0.045 < np.abs(a.bias).max() <= 0.05
    for m, n in ((big, 1), (c, 1), (s, 2), (a, 1), (pm.Mul(), 1)):
        assert len(m.parameters()[0]) == n
    assert pm.CMul(3).size == (3,)
    assert str(pm.CMul([1, 3])).endswith("([1, 3])")
    assert str(pm.Add(4)).endswith("(4)")


def test_cmul_regularizer(rng):
    m = pm.CMul([3], wRegularizer=pm.L2Regularizer(0.5), dtype=np.float64)
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    m.forward(x)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, (x * go).sum(0) + 0.5 * m.weight)
    c = pm.CAdd([3], bRegularizer=pm.L1Regularizer(0.1), dtype=np.float64)
    c.forward(x)
    c.backward(x, go)
    np.testing.assert_allclose(c.gradBias, go.sum(0) + 0.1 * np.sign(c.bias))


def test_frozen_parameters_do_not_learn(rng):
    m = pm.Scale([3], dtype=np.float64).freeze()
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    m.forward(x)
    np.testing.assert_allclose(m.backward(x, go), go * m.weight)
    assert not m.gradWeight.any() and not m.gradBias.any()


def test_strided_input(rng):
    m = pm.CMul([4], dtype=np.float64)
    x = rng.standard_normal((3, 8))[:, ::2]
    np.testing.assert_allclose(m.forward(x), x * m.weight)


@pytest.mark.parametrize("make, x, match", [
    (lambda: pm.CMul([3]), np.zeros((2, 4), np.float32),
     r"weight of shape \(3,\) does not apply to input of shape \(2, 4\): size 3 against 4 "
     r"on dimension 1"),
    (lambda: pm.CAdd([2, 3]), np.zeros((5,), np.float32),
     r"bias of shape \(2, 3\) does not apply to input of shape \(5,\): it needs 2 or 3 "
     r"dimensions"),
    (lambda: pm.Scale([3]), np.zeros((2, 3), np.float64),
     "input has dtype float64, expected float32"),
    (lambda: pm.Add(3), np.zeros((2, 4), np.float32),
     r"bias of shape \(3,\) does not apply to input of shape \(2, 4\)"),
    (lambda: pm.Mul(), np.zeros(3, np.int64), "input has dtype int64, expected float32"),
    (lambda: pm.Maxout(4, 3, 2), np.zeros((2, 5), np.float32),
     "input has 5 features, expected 4"),
])
def test_refusals_name_the_module(make, x, match):
    error = TypeError if "dtype" in match else ValueError
    assert_refusal_names_the_module(make, x, match, error)


def test_non_array_input_is_refused():
    for m in (pm.Add(3), pm.Mul()):
        with pytest.raises(TypeError, match="input must be a numpy.ndarray, got list"):
            m.forward([1.0, 2.0, 3.0])


@pytest.mark.parametrize("make", [lambda: pm.CMul([0]), lambda: pm.CAdd([]),
                                  lambda: pm.Scale([2, -1])])
def test_bad_sizes(make):
    with pytest.raises(ValueError, match="size must be one or more sizes > 0"):
        make()
    with pytest.raises(TypeError, match="size must be an integer"):
        pm.CMul([2.5])


# -- Cosine ---------------------------------------------------------------------------------
def _cosine_ref(x, w):
    x2 = np.atleast_2d(x).astype(np.float64)
    wn = np.sqrt((w.astype(np.float64) ** 2).sum(1)) + 1e-12
    xn = np.sqrt((x2 ** 2).sum(1)) + 1e-12
    y = x2 @ w.T.astype(np.float64) / wn / xn[:, None]
    return y if x.ndim == 2 else y[0]


@pytest.mark.parametrize("shape", [(4,), (3, 4), (1, 4)])
def test_cosine_jacobians(shape, rng):
    m = pm.Cosine(4, 5, dtype=np.float64)
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="weight")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cosine_against_numpy_and_torch(dtype, rng):
    m = pm.Cosine(6, 4, dtype=dtype)
    assert m.weight.shape == (4, 6) and np.abs(m.weight).max() <= 0.5  # 1/sqrt(outputSize)
    x = rng.standard_normal((5, 6)).astype(dtype)
    go = rng.standard_normal((5, 4)).astype(dtype)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(m.forward(x), _cosine_ref(x, m.weight), **tol)
    gi = m.backward(x, go)
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tw = torch.from_numpy(m.weight.astype(np.float64)).requires_grad_()
    ty = (tx @ tw.T) / (tw.norm(dim=1) + 1e-12) / (tx.norm(dim=1, keepdim=True) + 1e-12)
    ty.backward(torch.from_numpy(go.astype(np.float64)))
    np.testing.assert_allclose(gi, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy(), **tol)


def test_cosine_scale_and_refusal(rng):
    m = pm.Cosine(3, 2, dtype=np.float64)
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
    m.forward(x)
    m.backward(x, go)
    once = m.gradWeight.copy()
    m.setScaleW(0.5).backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 1.5 * once)
    assert_refusal_names_the_module(lambda: pm.Cosine(3, 2), np.zeros((2, 4), np.float32),
                                    "input has 4 features, expected 3")


# -- Maxout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (3, 4)])
@pytest.mark.parametrize("withBias", [True, False])
def test_maxout_jacobians(shape, withBias, rng):
    m = pm.Maxout(4, 3, 2, withBias=withBias, dtype=np.float64)
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_maxout_against_numpy_and_torch(dtype, rng):
    m = pm.Maxout(5, 3, 4, dtype=dtype)
    assert m.weight.shape == (12, 5) and m.bias.shape == (12,)
    assert np.abs(m.weight).max() <= 1 / np.sqrt(5)
    x = rng.standard_normal((6, 5)).astype(dtype)
    go = rng.standard_normal((6, 3)).astype(dtype)
    z = x.astype(np.float64) @ m.weight.T.astype(np.float64) + m.bias
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward(x), z.reshape(6, 4, 3).max(1), **tol)
    torch = pytest.importorskip("torch")
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tw = torch.from_numpy(m.weight.copy()).requires_grad_()
    tb = torch.from_numpy(m.bias.copy()).requires_grad_()
    ty = torch.nn.functional.linear(tx, tw, tb).view(6, 4, 3).max(1).values
    ty.backward(torch.from_numpy(go))
    np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradBias, tb.grad.numpy(), **tol)


def test_maxout_nan_wins_and_ties_take_the_first():
    m = pm.Maxout(1, 1, 3, dtype=np.float64, initWeight=np.ones((3, 1)),
                  initBias=np.array([0.0, 1.0, 1.0]))
    x = np.array([[1.0]])
    np.testing.assert_array_equal(m.forward(x), [[2.0]])
    m.backward(x, np.array([[1.0]]))
    np.testing.assert_array_equal(m.gradBias, [0.0, 1.0, 0.0])
    assert np.isnan(m.forward(np.array([[np.nan]]))).all()


# -- Highway --------------------------------------------------------------------------------
def _highway_ref(m, x, act=lambda z: z):
    x = x.astype(np.float64)
    bt = 0 if m.biasT is None else m.biasT
    bh = 0 if m.biasH is None else m.biasH
    t = 1 / (1 + np.exp(-(x @ m.weightT.T + bt)))
    return t * act(x @ m.weightH.T + bh) + (1 - t) * x


@pytest.mark.parametrize("shape", [(4,), (3, 4)])
@pytest.mark.parametrize("withBias", [True, False])
@pytest.mark.parametrize("activation", [None, "tanh"])
def test_highway_jacobians(shape, withBias, activation, rng):
    act = pm.Tanh() if activation else None
    m = pm.Highway(4, withBias=withBias, activation=act, dtype=np.float64)
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(m.forward(x),
                               _highway_ref(m, x, np.tanh if activation else lambda z: z),
                               rtol=1e-12, atol=1e-12)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


def test_highway_layout():
    m = pm.Highway(5)
    assert [a.shape for a in m.parameters()[0]] == [(5, 5), (5,), (5, 5), (5,)]
    assert m.parameters()[0][0] is m.weightT and m.parameters()[0][3] is m.biasH
    assert all(np.abs(a).max() <= 1 / np.sqrt(5) for a in m.parameters()[0])
    assert [a.shape for a in pm.Highway(5, False).parameters()[0]] == [(5, 5), (5, 5)]
    assert set(m.getParametersTable()[m.getName()]) >= {"weight0", "gradient3"}
    act = pm.Tanh()
    h = pm.Highway(3, activation=act, dtype=np.float64)
    assert act.dtype == np.float64 and h.children() == [act]
    assert str(h).endswith("(3, Tanh)")
    h.float()
    assert act.dtype == np.float32
    with pytest.raises(TypeError, match="activation must be a layer"):
        pm.Highway(3, activation="tanh")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_highway_against_torch(dtype, torch, rng):
    m = pm.Highway(6, activation=pm.ReLU(), dtype=dtype)
    x = rng.standard_normal((4, 6)).astype(dtype)
    go = rng.standard_normal((4, 6)).astype(dtype)
    ps = [torch.from_numpy(a.copy()).requires_grad_() for a in m.parameters()[0]]
    tx = torch.from_numpy(x.copy()).requires_grad_()
    t = torch.sigmoid(torch.nn.functional.linear(tx, ps[0], ps[1]))
    ty = t * torch.relu(torch.nn.functional.linear(tx, ps[2], ps[3])) + (1 - t) * tx
    ty.backward(torch.from_numpy(go))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward(x), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), **tol)
    for g, p in zip(m.parameters()[1], ps, strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), **tol)


def test_highway_regularizers_and_scales(rng):
    m = pm.Highway(3, wRegularizer=pm.L2Regularizer(0.5), dtype=np.float64)
    plain = pm.Highway(3, dtype=np.float64)
    plain.setWeightsBias(m.getWeightsBias())
    x, go = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for mod in (m, plain):
        mod.forward(x)
        mod.backward(x, go)
    np.testing.assert_allclose(m.gradWeightT, plain.gradWeightT + 0.5 * m.weightT)
    np.testing.assert_allclose(m.gradBiasH, plain.gradBiasH)
    m.zeroGradParameters()
    m.freeze().backward(x, go)
    assert not any(g.any() for g in m.parameters()[1])


def test_highway_refusal_names_the_module():
    assert_refusal_names_the_module(lambda: pm.Highway(3), np.zeros((2, 4), np.float32),
                                    "input has 4 features, expected 3")
    m = pm.Highway(3)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"^Highway@\w+\(3\): accGradParameters reads the gate"):
        m.accGradParameters(x, x)


# -- Bilinear -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [None, 1, 3])
@pytest.mark.parametrize("biasRes", [True, False])
def test_bilinear_jacobians(n, biasRes, rng):
    m = pm.Bilinear(4, 3, 2, biasRes=biasRes, dtype=np.float64)
    lead = () if n is None else (n,)
    x = [rng.standard_normal(lead + (4,)), rng.standard_normal(lead + (3,))]
    y = m.forward(x)
    ref = np.einsum("...i,oij,...j->...o", x[0], m.weight, x[1]) + (m.bias if biasRes else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bilinear_against_torch(dtype, torch, rng):
    m = pm.Bilinear(5, 4, 3, dtype=dtype)
    assert m.weight.shape == (3, 5, 4) and np.abs(m.weight).max() <= 1 / np.sqrt(5)
    x1 = rng.standard_normal((6, 5)).astype(dtype)
    x2 = rng.standard_normal((6, 4)).astype(dtype)
    go = rng.standard_normal((6, 3)).astype(dtype)
    t1, t2 = (torch.from_numpy(a.copy()).requires_grad_() for a in (x1, x2))
    tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (m.weight, m.bias))
    ty = torch.nn.functional.bilinear(t1, t2, tw, tb)
    ty.backward(torch.from_numpy(go))
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward([x1, x2]), ty.detach().numpy(), **tol)
    g1, g2 = m.backward([x1, x2], go)
    np.testing.assert_allclose(g1, t1.grad.numpy(), **tol)
    np.testing.assert_allclose(g2, t2.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradBias, tb.grad.numpy(), **tol)


@pytest.mark.parametrize("x, match", [
    ([np.zeros((2, 4), np.float32), np.zeros((3, 3), np.float32)], "input 0 has 2 rows, input 1 3"),
    ([np.zeros((2, 5), np.float32), np.zeros((2, 3), np.float32)],
     "input 0 has 5 features, expected 4"),
    ([np.zeros((2, 4), np.float32)], "input has 1 entries, expected at least 2"),
])
def test_bilinear_refusals(x, match):
    assert_refusal_names_the_module(lambda: pm.Bilinear(4, 3, 2), x, match)


@pytest.mark.parametrize("make", [lambda: pm.Cosine(0, 2), lambda: pm.Maxout(3, 2, 0),
                                  lambda: pm.Highway(0), lambda: pm.Bilinear(2, 0, 1)])
def test_sizes_must_be_positive(make):
    with pytest.raises(ValueError, match="must be > 0"):
        make()


def _steady_cases():
    def a(*shape):
        return lambda rng: rng.standard_normal(shape).astype(np.float32)

    def t(*shapes):
        return lambda rng: [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return [
        (lambda: pm.CMul([1, 16, 1]), a(16, 16, 8)), (lambda: pm.CAdd([16, 1]), a(16, 16, 8)),
        (lambda: pm.Scale([64]), a(32, 64)), (lambda: pm.Add(64), a(32, 8, 8)),
        (lambda: pm.Mul(), a(32, 64)), (lambda: pm.Cosine(64, 32), a(32, 64)),
        (lambda: pm.Maxout(64, 16, 3), a(32, 64)),
        (lambda: pm.Highway(64, activation=pm.Tanh()), a(32, 64)),
        (lambda: pm.Bilinear(32, 16, 8), t((32, 32), (32, 16))),
        (lambda: pm.Euclidean(64, 16), a(32, 64)), (lambda: pm.DotProduct(), t((32, 64), (32, 64))),
        (lambda: pm.CosineDistance(), t((32, 64), (32, 64))),
        (lambda: pm.PairwiseDistance(), t((32, 64), (32, 64))),
        (lambda: pm.MM(True), t((4, 16, 8), (4, 16, 8))), (lambda: pm.MV(), t((4, 16, 8), (4, 8))),
    ]


@pytest.mark.parametrize("make, make_input", _steady_cases())
def test_steady_state_allocates_nothing(make, make_input, rng):
    """After warm-up, forward+backward allocate no array memory, not even transiently."""
    import tracemalloc

    m, x = make(), make_input(rng)
    y = m.forward(x)
    go = np.ones_like(y)
    tracemalloc.start()
    try:
        for _ in range(3):
            m.forward(x)
            m.backward(x, go)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10):
            m.forward(x)
            m.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024, f"{m}: peak grew by {peak - base} bytes"
    assert current - base < 1024
