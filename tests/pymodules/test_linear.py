"""Linear: numbers, gradients, initialisation, regularizers, errors."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from pymodules.engine.linear import linear_scratch_size
from tolerance import abs_gemm, assert_reduction_close

import pymodules as pm

JACOBIAN_CASES = [(shape, bias, wrt) for shape in [(4,), (3, 4)] for bias in [True, False]
                  for wrt in ["input", "weight", "parameters"] + (["bias"] if bias else [])]


@pytest.mark.parametrize("shape, withBias, wrt", JACOBIAN_CASES)
def test_jacobian(shape, withBias, wrt, rng):
    m = pm.Linear(4, 5, withBias=withBias, dtype=np.float64)
    assert_jacobian(m, rng.standard_normal(shape), wrt=wrt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4,), (1, 4), (6, 4)])
def test_against_numpy(dtype, shape, rng):
    m = pm.Linear(4, 3, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    go = rng.standard_normal(shape[:-1] + (3,)).astype(dtype)
    w, b = m.weight.astype(np.float64), m.bias.astype(np.float64)
    y = m.forward(x)
    assert y.dtype == dtype and y.shape == shape[:-1] + (3,)
    assert_reduction_close(y, x @ w.T + b, dtype, 5, abs_gemm(x, w.T) + abs(b))
    gi = m.backward(x, go)
    assert_reduction_close(gi, go @ w, dtype, 3, abs_gemm(go, w))
    go2, x2 = go.reshape(-1, 3), x.reshape(-1, 4)
    assert_reduction_close(m.gradWeight, go2.T @ x2, dtype, len(x2), abs_gemm(go2.T, x2))
    assert_reduction_close(m.gradBias, go2.sum(0), dtype, len(x2), abs(go2).sum(0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_against_torch(dtype, torch, rng):
    m = pm.Linear(7, 5, dtype=dtype)
    t = torch.nn.Linear(7, 5).to(getattr(torch, dtype))
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight))
        t.bias.copy_(torch.from_numpy(m.bias))
    x = rng.standard_normal((9, 7)).astype(dtype)
    go = rng.standard_normal((9, 5)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx)
    ty.backward(torch.from_numpy(go))
    # both float32 results within a reduction's bound of the exact one: twice the magnitude
    w = m.weight
    assert_reduction_close(m.forward(x), ty.detach().numpy(), dtype, 8,
                           2 * (abs_gemm(x, w.T) + abs(m.bias)))
    assert_reduction_close(m.backward(x, go), tx.grad.numpy(), dtype, 5, 2 * abs_gemm(go, w))
    assert_reduction_close(m.gradWeight, t.weight.grad.numpy(), dtype, 9, 2 * abs_gemm(go.T, x))
    assert_reduction_close(m.gradBias, t.bias.grad.numpy(), dtype, 9, 2 * abs(go).sum(0))


@pytest.mark.parametrize(("batch", "sizes"), [(16, (128, 128)), (40, (784, 256)), (3, (1024, 512))])
def test_transposed_forward_of_small_float32_batches(batch, sizes, torch, rng):
    """Small float32 batches into wide layers run the forward transposed or packed (a kept
    scratch); the results are torch's, and a batch shape change resizes the scratch."""
    m = pm.Linear(*sizes)
    t = torch.nn.Linear(*sizes)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight))
        t.bias.copy_(torch.from_numpy(m.bias))
    for n in (batch, batch + 1, batch):
        x = rng.standard_normal((n, sizes[0])).astype(np.float32)
        expected = t(torch.from_numpy(x)).detach().numpy()
        assert_reduction_close(m.forward(x), expected, np.float32, sizes[0] + 1,
                               2 * (abs_gemm(x, m.weight.T) + abs(m.bias)))
        size = linear_scratch_size(x, m.weight)
        assert size in (n * sizes[1], (n + 7) // 8 * 8 * sizes[0] + 15)
        assert m._transposed is not None and m._transposed.size == size
    m.clearState()
    assert m._transposed is None


def test_zero_row_batch():
    m = pm.Linear(4, 3)
    y = m.forward(np.zeros((0, 4), np.float32))
    assert y.shape == (0, 3)
    gi = m.backward(np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32))
    assert gi.shape == (0, 4) and not m.gradWeight.any()


def test_strided_input_is_accepted(rng):
    m = pm.Linear(4, 3, dtype=np.float64)
    big = rng.standard_normal((5, 8))
    x = big[:, ::2]
    np.testing.assert_allclose(m.forward(x), x @ m.weight.T + m.bias)
    np.testing.assert_allclose(m.backward(x, np.ones((5, 3))), np.ones((5, 3)) @ m.weight)


@pytest.mark.parametrize("make, error, message", [
    (lambda: np.zeros((2, 5), np.float32), ValueError, "input has 5 features, expected 4"),
    (lambda: np.float32(1.0), TypeError, "input must be a numpy.ndarray, got float32"),
    (lambda: np.zeros((), np.float32), ValueError, "input must be 1-D to 2-D, got 0-D (shape ())"),
    (lambda: np.zeros((2, 3, 4), np.float32), ValueError,
     "input must be 1-D to 2-D, got 3-D (shape (2, 3, 4))"),
    (lambda: np.zeros((2, 4), np.int64), TypeError, "input has dtype int64, expected float32"),
    (lambda: np.zeros((2, 4), np.float64), TypeError,
     "input has dtype float64, expected float32"),
    (lambda: None, TypeError, "input must be a numpy.ndarray, got NoneType"),
    (lambda: [[1.0] * 4], TypeError, "input must be a numpy.ndarray, got list"),
])
def test_bad_input_names_module_and_numbers(make, error, message):
    m = pm.Linear(4, 3)
    with pytest.raises(error) as err:
        m.forward(make())
    assert str(err.value) == f"{m.getName()}(4 -> 3): {message}"


def test_bad_grad_output_and_read_only_output(rng):
    m = pm.Linear(4, 3)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    m.forward(x)
    with pytest.raises(ValueError, match=r"\(4 -> 3\): gradOutput has shape \(2, 2\), expected"):
        m.backward(x, np.zeros((2, 2), np.float32))
    m.output.flags.writeable = False
    with pytest.raises(ValueError, match=r"Linear@\w+\(4 -> 3\): output is read-only"):
        m.forward(x)


def test_default_init_and_seed():
    pm.setSeed(7)
    a = pm.Linear(16, 8)
    pm.setSeed(7)
    b = pm.Linear(16, 8)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    big = pm.Linear(400, 300)
    assert np.abs(big.weight).max() <= 1 / 20 and np.abs(big.weight).max() > 0.049
    assert np.abs(big.bias).max() <= 1 / 20


@pytest.mark.parametrize("method, check", [
    (pm.Zeros(), lambda w: not w.any()),
    (pm.Ones(), lambda w: (w == 1).all()),
    (pm.ConstInitMethod(0.25), lambda w: (w == 0.25).all()),
    (pm.RandomUniform(-2, -1), lambda w: (w >= -2).all() and (w <= -1).all()),
    (pm.RandomNormal(3.0, 0.1), lambda w: abs(w.mean() - 3.0) < 0.01 and abs(w.std() - 0.1) < 0.01),
    (pm.Xavier(), lambda w: np.abs(w).max() <= np.sqrt(6 / 500) and w.std() > 0.04),
    (pm.MsraFiller(), lambda w: abs(w.std() - np.sqrt(2 / 300)) < 0.005),
    (pm.MsraFiller(False), lambda w: abs(w.std() - np.sqrt(2 / 200)) < 0.005),
])
def test_init_methods(method, check):
    m = pm.Linear(300, 200, dtype=np.float64).setInitMethod(method, pm.Zeros())
    assert check(m.weight)
    assert not m.bias.any()


def test_init_arrays(rng):
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    m = pm.Linear(4, 3, initWeight=w, initBias=b, initGradWeight=np.ones((3, 4)),
                  initGradBias=np.ones(3), dtype=np.float64)
    np.testing.assert_array_equal(m.weight, w)
    np.testing.assert_array_equal(m.bias, b)
    assert (m.gradWeight == 1).all() and (m.gradBias == 1).all()
    with pytest.raises(ValueError, match=r"initWeight has shape \(4, 3\), expected \(3, 4\)"):
        pm.Linear(4, 3, initWeight=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="initBias given, but there is no bias"):
        pm.Linear(4, 3, withBias=False, initBias=np.zeros(3))


@pytest.mark.parametrize("reg, l1, l2", [
    (pm.L1Regularizer(0.1), 0.1, 0.0),
    (pm.L2Regularizer(0.2), 0.0, 0.2),
    (pm.L1L2Regularizer(0.1, 0.2), 0.1, 0.2),
])
def test_regularizers(reg, l1, l2, rng):
    plain = pm.Linear(4, 3, dtype=np.float64)
    m = pm.Linear(4, 3, wRegularizer=reg, bRegularizer=reg, dtype=np.float64)
    m.setWeightsBias(plain.getWeightsBias())
    x, go = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    for mod in (plain, m):
        mod.setScaleW(0.5)
        mod.forward(x)
        mod.backward(x, go)
    w, b = m.weight, m.bias
    np.testing.assert_allclose(m.gradWeight,
                               plain.gradWeight + 0.5 * (l1 * np.sign(w) + l2 * w))
    np.testing.assert_allclose(m.gradBias, plain.gradBias + l1 * np.sign(b) + l2 * b)
    m.zeroGradParameters()
    m.freeze()
    m.backward(x, go)
    assert not m.gradWeight.any() and not m.gradBias.any()  # scale 0 skips the penalty too
    with pytest.raises(ValueError, match="must be >= 0"):
        pm.L1Regularizer(-1)


def test_str():
    m = pm.Linear(4, 3)
    assert str(m) == f"{m.getName()}(4 -> 3)"
    assert str(pm.Linear(4, 3, withBias=False)).endswith("(4 -> 3, no bias)")


def test_without_propagate_back_only_parameters_learn(rng):
    m = pm.Linear(4, 3, dtype=np.float64)
    ref = pm.Linear(4, 3, dtype=np.float64)
    ref.setWeightsBias(m.getWeightsBias())
    x, go = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    m.propagateBack = False
    for mod in (m, ref):
        mod.forward(x)
        mod.backward(x, go)
    assert m.gradInput.size == 0  # never computed
    np.testing.assert_array_equal(m.gradWeight, ref.gradWeight)
    np.testing.assert_array_equal(m.gradBias, ref.gradBias)


def test_parameters_start_on_a_cache_line(tmp_path):
    """Constructors allocate weights and biases 64-byte aligned (one cache line per 64-byte
    load along a row), also when a file sizes them; the arrays behave as any other."""
    models = [pm.Linear(400, 120), pm.SpatialConvolution(6, 16, 5, 5), pm.LSTM(7, 9)]
    for m in models:
        for w in m.parameters()[0]:
            assert w.ctypes.data % 64 == 0 and w.flags.c_contiguous and w.flags.writeable
    path = str(tmp_path / "m.pm")
    seq = pm.Sequential(pm.Linear(30, 17), pm.ReLU(), pm.Linear(17, 5))
    seq.save(path)
    loaded = pm.Module.load(path)
    for w, v in zip(loaded.parameters()[0], seq.parameters()[0], strict=True):
        assert w.ctypes.data % 64 == 0
        np.testing.assert_array_equal(w, v)
