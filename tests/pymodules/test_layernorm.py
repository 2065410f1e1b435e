import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from tolerance import assert_reduction_close

import pymodules as pm


def _ref(x, w, b, eps=1e-6):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _ref_backward(x, g, w, eps=1e-6):
    """(gradInput, gradWeight, gradBias) in float64, from the formula."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    n = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    invstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    gw = g * w
    gi = invstd * (gw - gw.sum(-1, keepdims=True) / n - xhat * (gw * xhat).sum(-1, keepdims=True)
                   / n)
    axes = tuple(range(x.ndim - 1))
    return gi, (g * xhat).sum(axis=axes), g.sum(axis=axes)


def _layer(n, dtype, rng):
    m = pm.LayerNormalization(n, dtype=dtype)
    m.weight[:] = rng.uniform(0.5, 1.5, n)
    m.bias[:] = rng.standard_normal(n)
    return m


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5), (2, 1, 3, 5)])
def test_jacobian(shape, rng):
    m = _layer(shape[-1], np.float64, rng)
    x = rng.standard_normal(shape) * 2 + 1
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 7), (3, 4, 33), (2, 768)])
def test_against_numpy(dtype, shape, rng):
    n = shape[-1]
    m = _layer(n, dtype, rng)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = m.forward(x)
    assert y.dtype == dtype and y.shape == shape
    gi = m.backward(x, g)
    want_gi, want_gw, want_gb = _ref_backward(x, g, m.weight)
    if dtype == np.float64:
        np.testing.assert_allclose(y, _ref(x, m.weight, m.bias), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gi, want_gi, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m.gradWeight, want_gw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(m.gradBias, want_gb, rtol=1e-10, atol=1e-12)
        return
    rows = int(np.prod(shape[:-1]))
    xhat = np.abs(_ref(x, 1.0, 0.0))
    # each output: a row's statistics (length n), then one product and one sum
    assert_reduction_close(y, _ref(x, m.weight, m.bias), dtype, k=2 * n,
                           magnitude=xhat * m.weight + np.abs(m.bias))
    assert_reduction_close(gi, want_gi, dtype, k=2 * n,
                           magnitude=np.abs(g * m.weight).sum(-1, keepdims=True)
                           * (1 + xhat) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) / n
                           + np.abs(g * m.weight) / np.sqrt(x.var(-1, keepdims=True) + 1e-6))
    assert_reduction_close(m.gradWeight, want_gw, dtype, k=rows + 2 * n,
                           magnitude=np.abs(g * xhat).reshape(-1, n).sum(0))
    assert_reduction_close(m.gradBias, want_gb, dtype, k=rows,
                           magnitude=np.abs(g).reshape(-1, n).sum(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(dtype, torch, rng):
    shape = (3, 4, 10)
    m = _layer(10, dtype, rng)
    x = (rng.standard_normal(shape) * 2 - 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, gi = m.forward(x).copy(), m.backward(x, g).copy()
    tw = torch.from_numpy(m.weight.copy()).requires_grad_()
    tb = torch.from_numpy(m.bias.copy()).requires_grad_()
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.nn.functional.layer_norm(tx, (10,), tw, tb, eps=1e-6)
    ty.backward(torch.from_numpy(g))
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gi, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy(), **tol)
    np.testing.assert_allclose(m.gradBias, tb.grad.numpy(), **tol)


def test_defaults_parameters_and_tables():
    m = pm.LayerNormalization(4)
    assert m.weight.dtype == np.float32 and m.weight.shape == (4,) and m.bias.shape == (4,)
    np.testing.assert_array_equal(m.weight, 1)
    np.testing.assert_array_equal(m.bias, 0)
    w, g = m.parameters()
    assert w[0] is m.weight and w[1] is m.bias and g[0] is m.gradWeight and g[1] is m.gradBias
    flat, _ = m.getParameters()
    assert flat.shape == (8,)
    assert set(m.getParametersTable()[m.getName()]) == {"weight", "bias", "gradWeight",
                                                        "gradBias"}
    m.weight[:] = 3
    m.reset()
    np.testing.assert_array_equal(m.weight, 1)
    assert str(m).endswith("(4)")


def test_gradients_accumulate_with_scales(rng):
    m = _layer(6, np.float64, rng)
    x, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    m.forward(x)
    m.backward(x, g)
    once = [a.copy() for a in m.parameters()[1]]
    m.backward(x, g)
    np.testing.assert_allclose(m.gradWeight, 2 * once[0])
    np.testing.assert_allclose(m.gradBias, 2 * once[1])
    m.zeroGradParameters()
    m.setScaleW(0.5).setScaleB(0.0)
    m.backward(x, g)
    np.testing.assert_allclose(m.gradWeight, 0.5 * once[0])
    assert not m.gradBias.any()
    m.freeze()
    m.zeroGradParameters()
    gi = m.backward(x, g).copy()
    assert not m.gradWeight.any() and not m.gradBias.any()
    np.testing.assert_allclose(gi, _ref_backward(x, g, m.weight)[0])


def test_acc_grad_parameters_alone_and_after_update_grad_input_agree(rng):
    """The sums gathered in the gradInput pass serve only the call that follows it with the
    same arrays; any other accGradParameters computes its own."""
    m = _layer(6, np.float64, rng)
    x, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    m.forward(x)
    m.backward(x, g)
    fused = [a.copy() for a in m.parameters()[1]]
    m.zeroGradParameters()
    m.updateGradInput(x, g)
    m.accGradParameters(x, g.copy())  # other arrays: computed again
    np.testing.assert_allclose(m.gradWeight, fused[0], rtol=1e-14)
    m.zeroGradParameters()
    m.accGradParameters(x, g)  # no updateGradInput before
    np.testing.assert_allclose(m.gradWeight, fused[0], rtol=1e-14)
    np.testing.assert_allclose(m.gradBias, fused[1], rtol=1e-14)
    m.zeroGradParameters()
    m.updateGradInput(x, 2 * g)
    m.accGradParameters(x, g)
    np.testing.assert_allclose(m.gradWeight, fused[0], rtol=1e-14)
    m.zeroGradParameters()
    m.propagateBack = False
    m.backward(x, g)
    np.testing.assert_allclose(m.gradBias, fused[1], rtol=1e-14)


def test_rows_are_independent_and_nan_stays_in_its_row(rng):
    m = _layer(5, np.float64, rng)
    x = rng.standard_normal((3, 5))
    x[1, 2] = np.nan
    y = m.forward(x)
    assert np.isnan(y[1]).all() and not np.isnan(y[[0, 2]]).any()
    np.testing.assert_allclose(y[[0, 2]], _ref(x[[0, 2]], m.weight, m.bias), rtol=1e-12)
    gi = m.backward(x, np.ones_like(x))
    assert np.isnan(gi[1]).all() and not np.isnan(gi[[0, 2]]).any()


def test_a_constant_row_gives_the_bias(rng):
    m = _layer(4, np.float32, rng)
    y = m.forward(np.full((2, 4), 7.0, np.float32))
    np.testing.assert_allclose(y, np.broadcast_to(m.bias, (2, 4)), atol=1e-6)


def test_buffers_are_reused(rng):
    m = _layer(8, np.float32, rng)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    g = rng.standard_normal((4, 8)).astype(np.float32)
    m.forward(x)
    m.backward(x, g)
    held = (m.output, m.gradInput, m._saveMean, m._saveInvstd, m._sums)
    m.forward(x)
    m.backward(x, g)
    assert all(a is b for a, b in zip(held, (m.output, m.gradInput, m._saveMean,
                                            m._saveInvstd, m._sums), strict=True))
    m.clearState()
    assert m._saveMean is None and m._summed is None


def test_refusals_name_the_module(rng):
    assert_refusal_names_the_module(lambda: pm.LayerNormalization(5),
                                    rng.standard_normal((2, 4)).astype(np.float32),
                                    r"input has 4 values on its last axis, expected 5")
    assert_refusal_names_the_module(lambda: pm.LayerNormalization(5),
                                    rng.standard_normal((2, 5)),
                                    r"input has dtype float64, expected float32", TypeError)
    assert_refusal_names_the_module(lambda: pm.LayerNormalization(5), np.float32(1.0),
                                    r"must be a numpy.ndarray|must be 1-D", (TypeError,
                                                                             ValueError))
    m = pm.LayerNormalization(5)
    m.forward(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"^LayerNormalization@\w+\(5\): gradOutput has shape"):
        m.backward(np.ones((2, 5), np.float32), np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="hiddenSize must be > 0"):
        pm.LayerNormalization(0)
    with pytest.raises(TypeError, match="hiddenSize must be an integer"):
        pm.LayerNormalization(2.5)


def test_strided_input_is_made_contiguous(rng):
    m = _layer(5, np.float64, rng)
    x = rng.standard_normal((4, 10))[:, ::2]
    np.testing.assert_allclose(m.forward(x), _ref(x, m.weight, m.bias), rtol=1e-12)
