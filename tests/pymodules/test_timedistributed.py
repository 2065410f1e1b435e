"""TimeDistributed (a layer on every time step) and TimeDistributedCriterion around it."""

import tracemalloc

import numpy as np
import pytest
from gradcheck import assert_jacobian
from tolerance import abs_gemm, assert_reduction_close

import pymodules as pm

NAME = r"TimeDistributed@\w+"


def _linear(dtype=np.float64, sizes=(4, 3)):
    return pm.TimeDistributed(pm.Linear(*sizes, dtype=dtype))


# -- forward and backward against NumPy, both dtypes ----------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 4), (1, 1, 4), (3, 7, 4), (0, 2, 4)])
def test_linear_on_every_step_matches_numpy(shape, dtype, rng):
    m = _linear(dtype)
    w, b = m.layer.weight, m.layer.bias
    x = rng.standard_normal(shape).astype(dtype)
    y = m.forward(x)
    assert y.shape == shape[:2] + (3,) and y.dtype == dtype  # a batch of one stays (1, 1, 3)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = np.stack([x64[:, t] @ w64.T + b for t in range(shape[1])], axis=1).reshape(y.shape)
    assert_reduction_close(y, ref, dtype, k=5, magnitude=abs_gemm(x, w.T) + abs(b))
    go = rng.standard_normal(y.shape).astype(dtype)
    gi = m.backward(x, go)
    assert gi.shape == shape and gi.dtype == dtype
    assert_reduction_close(gi, go.astype(np.float64) @ w64, dtype, k=4,
                           magnitude=abs_gemm(go, w))
    rows = shape[0] * shape[1]
    g2, x2 = go.reshape(rows, 3).astype(np.float64), x64.reshape(rows, 4)
    assert_reduction_close(m.layer.gradWeight, g2.T @ x2, dtype, k=rows + 1,
                           magnitude=abs_gemm(g2.T, x2))
    assert_reduction_close(m.layer.gradBias, g2.sum(0), dtype, k=rows + 1,
                           magnitude=np.abs(g2).sum(0))


def test_time_length_may_change_between_calls(rng):
    m = _linear()
    for time in (5, 2, 9, 1):
        x = rng.standard_normal((3, time, 4))
        np.testing.assert_allclose(m.forward(x), x @ m.layer.weight.T + m.layer.bias,
                                   rtol=1e-12, atol=1e-12)
        assert m.backward(x, np.ones((3, time, 3))).shape == x.shape


def test_gradients_accumulate_and_follow_the_scales(rng):
    m = _linear()
    x, go = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 3))
    m.forward(x)
    m.backward(x, go)
    once = m.layer.gradWeight.copy(), m.layer.gradBias.copy()
    m.setScaleW(0.5).setScaleB(0.0)
    assert m.layer.scaleW == 0.5 and m.layer.scaleB == 0.0
    m.backward(x, go)
    np.testing.assert_allclose(m.layer.gradWeight, 1.5 * once[0], rtol=1e-12)
    np.testing.assert_allclose(m.layer.gradBias, once[1], rtol=1e-12)
    # updateGradInput alone leaves the parameters' gradients; accGradParameters adds to them
    m.setScaleW(1.0).setScaleB(1.0).zeroGradParameters()
    m.updateGradInput(x, go)
    assert not m.layer.gradWeight.any()
    m.accGradParameters(x, go)
    np.testing.assert_allclose(m.layer.gradWeight, once[0], rtol=1e-12)


# -- the PyTorch oracle: torch applies Linear, log_softmax and conv on the folded batch ------
def test_linear_agrees_with_torch(torch, rng):
    m = _linear()
    x, go = rng.standard_normal((2, 6, 4)), rng.standard_normal((2, 6, 3))
    y, gi = m.forward(x).copy(), m.backward(x, go).copy()
    lin = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(m.layer.weight))
        lin.bias.copy_(torch.tensor(m.layer.bias))
    tx = torch.tensor(x, requires_grad=True)
    ty = lin(tx)
    ty.backward(torch.tensor(go))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gi, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.layer.gradWeight, lin.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.layer.gradBias, lin.bias.grad.numpy(), rtol=1e-12)


def test_log_softmax_on_every_step_agrees_with_torch(torch, rng):
    m = pm.TimeDistributed(pm.LogSoftMax(dtype=np.float64))
    x, go = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.log_softmax(tx, dim=-1)
    ty.backward(torch.tensor(go))
    np.testing.assert_allclose(m.forward(x), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.backward(x, go), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_a_convolution_on_every_frame_agrees_with_torch(torch, rng):
    conv = pm.SpatialConvolution(2, 3, 3, 3, 1, 1, 1, 1).double()
    m = pm.TimeDistributed(conv)
    x = rng.standard_normal((2, 3, 2, 5, 5))  # (batch, time, channels, height, width)
    y = m.forward(x).copy()
    assert y.shape == (2, 3, 3, 5, 5)
    go = rng.standard_normal(y.shape)
    gi = m.backward(x, go).copy()
    tx = torch.tensor(x.reshape(6, 2, 5, 5), requires_grad=True)
    tw = torch.tensor(conv.weight.reshape(3, 2, 3, 3), requires_grad=True)
    tb = torch.tensor(conv.bias, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
    ty.backward(torch.tensor(go.reshape(6, 3, 5, 5)))
    np.testing.assert_allclose(y.reshape(6, 3, 5, 5), ty.detach().numpy(), rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(gi.reshape(6, 2, 5, 5), tx.grad.numpy(), rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(conv.gradWeight.reshape(3, 2, 3, 3), tw.grad.numpy(),
                               rtol=1e-11, atol=1e-12)


# -- Jacobians (float64) -------------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [
    (lambda: _linear(), (2, 3, 4)),
    (lambda: pm.TimeDistributed(pm.Sequential(pm.Linear(4, 5), pm.Tanh(), pm.Linear(5, 2))
                                ).double(), (2, 2, 4)),
    (lambda: pm.TimeDistributed(pm.SpatialConvolution(1, 2, 2, 2)).double(), (2, 2, 1, 3, 3)),
])
def test_jacobians(make, shape, rng):
    m = make()
    x = rng.standard_normal(shape)
    assert_jacobian(m, x, wrt="input")
    assert_jacobian(m, x, wrt="parameters")


# -- parameters, names, modes and files ----------------------------------------------------
def test_the_parameters_are_the_layers(rng):
    inner = pm.Sequential(pm.Linear(4, 5), pm.ReLU(), pm.Linear(5, 2)).double()
    m = pm.TimeDistributed(inner)
    for ours, theirs in zip(m.parameters(), inner.parameters(), strict=True):
        assert all(a is b for a, b in zip(ours, theirs, strict=True))
    assert [w.shape for w in m.parameters()[0]] == [(5, 4), (5,), (2, 5), (2,)]
    assert m.getParametersTable().keys() == inner.getParametersTable().keys()
    flat, _ = m.getParameters()
    assert flat.size == 4 * 5 + 5 + 5 * 2 + 2
    flat[:] = 0.5  # the layer's arrays are views of the flat vector
    assert (inner.modules[0].weight == 0.5).all()
    assert m.dtype == np.float64 and m.layer is inner
    m.evaluate()
    assert not inner.modules[0].isTraining()
    m.training()
    assert inner.modules[2].isTraining()


def test_dropout_inside_follows_the_mode(rng):
    m = pm.TimeDistributed(pm.Dropout(0.5))
    x = np.ones((2, 3, 8), np.float32)
    assert (m.forward(x) == 0).any()
    m.evaluate()
    np.testing.assert_array_equal(m.forward(x), x)


def test_save_load_and_clone(tmp_path, rng):
    m = pm.TimeDistributed(pm.Linear(4, 3).setName("step")).double()
    x = rng.standard_normal((2, 5, 4))
    m.save(tmp_path / "td.pm")
    r = pm.load(tmp_path / "td.pm")
    assert type(r) is pm.TimeDistributed and r.layer.getName() == "step"
    np.testing.assert_array_equal(r.forward(x), m.forward(x))
    c = m.cloneModule()
    c.layer.weight[...] = 0
    assert m.layer.weight.any()


def test_steady_state_allocates_nothing(rng):
    m = pm.TimeDistributed(pm.Linear(64, 64))
    x = rng.standard_normal((8, 16, 64)).astype(np.float32)
    go = rng.standard_normal((8, 16, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        for _ in range(3):
            m.forward(x)
            m.backward(x, go)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            m.forward(x)
            m.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 4096, f"peak grew by {peak - base} bytes"
    assert current - base < 1024


def test_a_strided_input_is_folded_through_a_copy(rng):
    m = _linear()
    strided = rng.standard_normal((4, 3, 4)).transpose(1, 0, 2)  # (3, 4, 4), not contiguous
    assert not strided.flags.c_contiguous
    np.testing.assert_allclose(m.forward(strided), strided @ m.layer.weight.T + m.layer.bias,
                               rtol=1e-12, atol=1e-12)
    go = rng.standard_normal((3, 4, 3))
    np.testing.assert_allclose(m.backward(strided, go), go @ m.layer.weight, rtol=1e-12)


# -- errors name the module ----------------------------------------------------------------
def test_inputs_without_a_time_axis_are_refused(rng):
    with pytest.raises(ValueError, match=r"^" + NAME + r": input has 2 dimensions \(2, 4\), "
                                         r"expected at least 3 \(batch, time, \.\.\.\)"):
        _linear().forward(rng.standard_normal((2, 4)))
    with pytest.raises(TypeError, match=r"^" + NAME + ": input must be a numpy.ndarray, got list"):
        _linear().forward([rng.standard_normal((2, 3, 4))])


def test_the_wrapped_layers_refusal_names_the_path(rng):
    m = pm.TimeDistributed(pm.Linear(4, 3).setName("fc")).setName("td")
    with pytest.raises(ValueError, match=r"^td/fc\(4 -> 3\): input has 5 features, expected 4"):
        m.forward(rng.standard_normal((2, 3, 5)).astype(np.float32))


def test_a_layer_that_changes_the_leading_axis_is_refused(rng):
    m = pm.TimeDistributed(pm.Transpose([(0, 1)]))
    with pytest.raises(ValueError, match=r"^" + NAME + r": Transpose@\w+ turned \(6, 4\) into "
                                         r"\(4, 6\); it must keep the leading axis of 6 "
                                         r"\(batch 2 x time 3\)"):
        m.forward(rng.standard_normal((2, 3, 4)))


def test_a_gradient_of_another_shape_is_refused(rng):
    m = _linear()
    x = rng.standard_normal((2, 3, 4))
    m.forward(x)
    with pytest.raises(ValueError, match=r"^" + NAME + r": gradOutput has shape \(3, 2, 3\), "
                                         r"expected \(batch, time\) = \(2, 3\)"):
        m.backward(x, np.ones((3, 2, 3)))
    with pytest.raises(ValueError, match=r"^" + NAME + r"/Linear@\w+\(4 -> 3\): gradOutput"):
        m.backward(x, np.ones((2, 3, 5)))


def test_it_holds_one_layer():
    m = _linear()
    with pytest.raises(ValueError, match=NAME + r": already wraps Linear@\w+; a TimeDistributed "
                                               r"holds one layer"):
        m.add(pm.Linear(3, 2))
    with pytest.raises(TypeError, match="can only add a Module, got int"):
        pm.TimeDistributed(3)


# -- with TimeDistributedCriterion: a per-step classifier ------------------------------------
def _tagger(dtype=np.float64):
    return pm.Sequential(pm.TimeDistributed(pm.Linear(4, 5, dtype=dtype)),
                         pm.TimeDistributed(pm.LogSoftMax(dtype=dtype)))


@pytest.mark.parametrize("sizeAverage", [False, True])
def test_a_per_step_classifier_agrees_with_torch(sizeAverage, torch, rng):
    model = _tagger()
    crit = pm.TimeDistributedCriterion(pm.ClassNLLCriterion(), sizeAverage)
    x = rng.standard_normal((3, 4, 4))
    y = np.array([[0, 4, -1, 2], [1, -1, -1, -1], [3, 3, 0, -1]])  # -1: padding, per step
    loss = crit.forward(model.forward(x), y)
    model.backward(x, crit.backward(model.output, y))
    lin = model.modules[0].layer
    tw = torch.tensor(lin.weight, requires_grad=True)
    tb = torch.tensor(lin.bias, requires_grad=True)
    lp = torch.log_softmax(torch.tensor(x) @ tw.T + tb, dim=-1)
    nll = torch.nn.NLLLoss(ignore_index=-1)  # the mean over each step's unpadded rows
    steps = [nll(lp[:, t], torch.tensor(y[:, t])) for t in range(4)]
    tl = sum(steps) / 4 if sizeAverage else sum(steps)
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(lin.gradWeight, tw.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lin.gradBias, tb.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_a_per_step_classifier_matches_numpy_and_trains(rng):
    model = _tagger(np.float32)
    crit = pm.TimeDistributedCriterion(pm.ClassNLLCriterion(), sizeAverage=True)
    x = rng.standard_normal((16, 6, 4)).astype(np.float32)
    y = (x[:, :, 0] > 0).astype(np.int64) + 2 * (x[:, :, 1] > 0)  # 4 classes per step
    lin = model.modules[0].layer
    z = x.astype(np.float64) @ lin.weight.T.astype(np.float64) + lin.bias
    lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ref = -np.mean([lp[np.arange(16), t, y[:, t]].mean() for t in range(6)])
    first = crit.forward(model.forward(x), y)
    assert first == pytest.approx(ref, rel=1e-5)
    w, g = model.getParameters()
    for _ in range(200):
        g.fill(0)
        crit.forward(model.forward(x), y)
        model.backward(x, crit.backward(model.output, y))
        w -= 0.5 * g
    assert crit.forward(model.forward(x), y) < 0.5 * first


def test_a_tagger_on_a_recurrent_layer(rng):
    """Recurrent output (batch, time, hidden) tagged step by step; Jacobians through both."""
    model = pm.Sequential(pm.Recurrent().add(pm.LSTM(3, 4)),
                          pm.TimeDistributed(pm.Linear(4, 2))).double()
    x = rng.standard_normal((2, 3, 3))
    assert model.forward(x).shape == (2, 3, 2)
    assert_jacobian(model, x, wrt="input")
    assert_jacobian(model, x, wrt="parameters")
    lin = model.modules[1].layer
    model.forward(x)  # the Jacobians left the last perturbed forward in the buffers
    hidden = model.modules[0].output
    np.testing.assert_allclose(model.output, hidden @ lin.weight.T + lin.bias, rtol=1e-12,
                               atol=1e-12)
