import numpy as np
import pytest
from gradcheck import assert_jacobian
from torch_oracle import assert_matches_torch

import pymodules as pm


def _bn_ref(x, w, b, axes, eps=1e-5):
    shape = [1] * x.ndim
    shape[1] = -1
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w.reshape(shape) + b.reshape(shape)


@pytest.mark.parametrize("cls,shape", [(pm.BatchNormalization, (6, 3)),
                                       (pm.SpatialBatchNormalization, (3, 2, 3, 4))])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_jacobian(cls, shape, affine, train, rng):
    m = cls(shape[1], affine=affine, dtype=np.float64)
    m.runningMean[...] = rng.standard_normal(shape[1])
    m.runningVar[...] = rng.uniform(0.5, 2, shape[1])
    if not train:
        m.evaluate()
    x = rng.standard_normal(shape)
    assert_jacobian(m, x)
    if affine:
        assert_jacobian(m, x, wrt="parameters")


def test_train_output_and_running_statistics(rng):
    x = rng.standard_normal((8, 4)) * 3 + 1
    m = pm.BatchNormalization(4, momentum=0.2, dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), _bn_ref(x, m.weight, m.bias, 0), rtol=1e-12)
    np.testing.assert_allclose(m.runningMean, 0.2 * x.mean(0))
    np.testing.assert_allclose(m.runningVar, 0.8 + 0.2 * x.var(0, ddof=1))


def test_eval_uses_running_statistics_and_takes_a_single_sample(rng):
    m = pm.BatchNormalization(3, dtype=np.float64).evaluate()
    m.runningMean[...] = [1, 2, 3]
    m.runningVar[...] = [4, 5, 6]
    x = rng.standard_normal(3)
    want = (x - [1, 2, 3]) / np.sqrt(np.array([4, 5, 6]) + 1e-5) * m.weight + m.bias
    np.testing.assert_allclose(m.forward(x), want)
    assert_jacobian(m, x)


def test_defaults_and_tables():
    m = pm.BatchNormalization(5)
    assert (m.eps, m.momentum, m.affine) == (1e-5, 0.1, True)
    assert np.all((m.weight >= 0) & (m.weight <= 1)) and not m.bias.any()
    np.testing.assert_array_equal(m.runningVar, 1)
    table = m.getParametersTable()[m.getName()]
    assert set(table) == {"weight", "bias", "gradWeight", "gradBias", "runningMean",
                          "runningVar"}
    assert table["runningMean"] is m.runningMean
    assert m.getExtraParameter()[1] is m.runningVar
    assert pm.BatchNormalization(5, affine=False).parameters() == ([], [])


def test_copy_status_and_set_extra_parameter(rng):
    a = pm.SpatialBatchNormalization(2)
    a.forward(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    b = pm.SpatialBatchNormalization(2).copyStatus(a)
    np.testing.assert_array_equal(b.runningMean, a.runningMean)
    np.testing.assert_array_equal(b.runningVar, a.runningVar)
    b.setExtraParameter([np.ones(2), np.full(2, 3.0)])
    np.testing.assert_array_equal(b.runningVar, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 3), (4, 3, 5, 2)])
def test_matches_torch(dtype, shape, torch, rng):
    cls = pm.BatchNormalization if len(shape) == 2 else pm.SpatialBatchNormalization
    tcls = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    m = cls(3, momentum=0.3, dtype=dtype)
    t = tcls(3, momentum=0.3).to(torch.float32 if dtype == np.float32 else torch.float64)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(m.weight))
        t.bias.copy_(torch.from_numpy(m.bias))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for _ in range(2):
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        m.zeroGradParameters()
        t.zero_grad()
        assert_matches_torch(m, t, x, g, **tol)
        np.testing.assert_allclose(m.gradWeight, t.weight.grad.numpy(), **tol)
        np.testing.assert_allclose(m.gradBias, t.bias.grad.numpy(), **tol)
        np.testing.assert_allclose(m.runningMean, t.running_mean.numpy(), **tol)
        np.testing.assert_allclose(m.runningVar, t.running_var.numpy(), **tol)
    m.evaluate()
    t.eval()
    x = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(m.forward(x), t(torch.from_numpy(x)).detach().numpy(), **tol)


def test_nhwc_equals_nchw(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    a = pm.SpatialBatchNormalization(3, dtype=np.float64)
    b = pm.SpatialBatchNormalization(3, dataFormat="NHWC", dtype=np.float64)
    b.weight[...], b.bias[...] = a.weight, a.bias
    np.testing.assert_allclose(b.forward(x.transpose(0, 2, 3, 1).copy()).transpose(0, 3, 1, 2),
                               a.forward(x), rtol=1e-12)
    np.testing.assert_allclose(b.runningVar, a.runningVar, rtol=1e-12)


def test_errors(rng):
    with pytest.raises(ValueError, match=r"input has 4 channels, expected 3"):
        pm.SpatialBatchNormalization(3).forward(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNormalization@\w+\(3, .*\): input has 5 "
                                         r"features, expected 3"):
        pm.BatchNormalization(3).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="in evaluation only"):
        pm.BatchNormalization(3).forward(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="more than one value per channel"):
        pm.BatchNormalization(3).forward(np.zeros((1, 3), np.float32))


def test_accumulates_with_scales(rng):
    m = pm.BatchNormalization(3, dtype=np.float64)
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    m.forward(x)
    m.backward(x, g)
    w, b = m.gradWeight.copy(), m.gradBias.copy()
    np.testing.assert_allclose(b, g.sum(0))
    m.setScaleW(2).setScaleB(0)
    m.backward(x, g)
    np.testing.assert_allclose(m.gradWeight, 3 * w)
    np.testing.assert_allclose(m.gradBias, b)


# -- Normalize ------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 1.5, np.inf])
@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 2, 2)])
def test_normalize(p, shape, rng):
    x = rng.standard_normal(shape) + 0.1
    axis = 0 if len(shape) == 1 else 1
    if np.isinf(p):
        norm = np.abs(x).max(axis=axis, keepdims=True) + 1e-10
    else:
        norm = ((np.abs(x) ** p).sum(axis=axis, keepdims=True) + 1e-10) ** (1 / p)
    m = pm.Normalize(p, dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), x / norm, rtol=1e-12)
    assert_jacobian(m, x)


def test_normalize_matches_torch(torch, rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    want = torch.nn.functional.normalize(torch.from_numpy(x), p=2.0, dim=1).numpy()
    np.testing.assert_allclose(pm.Normalize(2).forward(x), want, rtol=1e-6)
    with pytest.raises(ValueError, match="1-D, 2-D or 4-D"):
        pm.Normalize(2).forward(np.zeros((2, 2, 2), np.float32))


# -- SpatialCrossMapLRN --------------------------------------------------------------------

def _lrn_ref(x, size, alpha, beta, k):
    c = x.shape[-3]
    sq = x ** 2
    out = np.empty_like(x)
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i + size // 2 + 1)
        s = k + alpha / size * sq[..., lo:hi, :, :].sum(axis=-3)
        out[..., i, :, :] = x[..., i, :, :] / s ** beta
    return out


@pytest.mark.parametrize("shape", [(6, 3, 2), (2, 4, 3, 3)])
@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(shape, size, rng):
    x = rng.standard_normal(shape)
    m = pm.SpatialCrossMapLRN(size, 0.5, 0.75, 2.0, dtype=np.float64)
    np.testing.assert_allclose(m.forward(x), _lrn_ref(x, size, 0.5, 0.75, 2.0), rtol=1e-12)
    assert_jacobian(m, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lrn_matches_torch(dtype, torch, rng):
    x = rng.standard_normal((2, 7, 4, 4)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    m = pm.SpatialCrossMapLRN(5, 1e-2, 0.75, 1.0, dtype=dtype)
    y, gi = m.forward(x).copy(), m.backward(x, g).copy()
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.nn.functional.local_response_norm(t, 5, 1e-2, 0.75, 1.0)
    ty.backward(torch.from_numpy(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(gi, t.grad.numpy(), rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="odd"):
        pm.SpatialCrossMapLRN(4)
