"""Recurrent, BiRecurrent and the cells LSTM, GRU, RnnCell, LSTMPeephole: a NumPy reference,
the PyTorch oracle (LSTM, RnnCell), Jacobians, layouts, errors, buffers and training."""

import tracemalloc

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm


# -- the NumPy reference (float64), BigDL's formulas ----------------------------------------
def _sig(a):
    return 1 / (1 + np.exp(-a))


def _acts(name):
    return {"Tanh": np.tanh, "Sigmoid": _sig, "ReLU": lambda a: np.maximum(a, 0)}[name]


def reference(cell, x):
    """The output (B, T, H) of ``cell`` over ``x`` (B, T, I), step by step in float64."""
    p = [np.asarray(a, np.float64) for a in cell.parameters()[0]]
    x = np.asarray(x, np.float64)
    b_, t_, _ = x.shape
    h_ = cell.hiddenSize
    h = np.zeros((b_, h_))
    c = np.zeros((b_, h_))
    out = np.zeros((b_, t_, h_))
    for t in range(t_):
        xt = x[:, t]
        if isinstance(cell, pm.LSTMPeephole):
            w, b, pf, uf, pi, ui, ug, po, uo = p
            z = xt @ w.T + b
            i = _sig(z[:, :h_] + h @ ui.T + pi * c)
            f = _sig(z[:, h_:2 * h_] + h @ uf.T + pf * c)
            g = np.tanh(z[:, 2 * h_:3 * h_] + h @ ug.T)
            c = f * c + i * g
            o = _sig(z[:, 3 * h_:] + h @ uo.T + po * c)
            h = o * np.tanh(c)
        elif isinstance(cell, pm.LSTM):
            w, b, u = p
            z = xt @ w.T + b + h @ u.T
            i, g, f, o = (z[:, k * h_:(k + 1) * h_] for k in range(4))
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        elif isinstance(cell, pm.GRU):
            w, b, urz, un = p
            z = xt @ w.T + b
            rz = _sig(z[:, :2 * h_] + h @ urz.T)
            r, zz = rz[:, :h_], rz[:, h_:]
            n = np.tanh(z[:, 2 * h_:] + (r * h) @ un.T)
            h = (1 - zz) * n + zz * h
        else:
            bias = {"weight": 0, "bias": 0, "hiddenWeight": 0, "hiddenBias": 0}
            names = [v for v, _ in cell._params if getattr(cell, v) is not None]
            bias.update(dict(zip(names, p, strict=True)))
            a = xt @ bias["weight"].T + bias["bias"] + h @ bias["hiddenWeight"].T + \
                bias["hiddenBias"]
            h = _acts(type(cell.activation).__name__)(a)
        out[:, t] = h
    return out


def _cells(dtype=np.float64):
    return [
        ("LSTM", lambda: pm.LSTM(3, 4, dtype=dtype)),
        ("GRU", lambda: pm.GRU(3, 4, dtype=dtype)),
        ("RnnCell", lambda: pm.RnnCell(3, 4, dtype=dtype)),
        ("RnnCellSigmoid", lambda: pm.RnnCell(3, 4, pm.Sigmoid(), dtype=dtype)),
        ("RnnCellReLUNoBias", lambda: pm.RnnCell(3, 4, pm.ReLU(), isInputWithBias=False,
                                                 dtype=dtype)),
        ("RnnCellNoHiddenBias", lambda: pm.RnnCell(3, 4, isHiddenWithBias=False, dtype=dtype)),
        ("LSTMPeephole", lambda: pm.LSTMPeephole(3, 4, dtype=dtype)),
    ]


CELLS = _cells()
LAYOUTS = {
    "LSTM": [(16, 3), (16,), (16, 4)],
    "GRU": [(12, 3), (12,), (8, 4), (4, 4)],
    "RnnCell": [(4, 3), (4,), (4, 4), (4,)],
    "LSTMPeephole": [(16, 3), (16,), (4,), (4, 4), (4,), (4, 4), (4, 4), (4,), (4, 4)],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_parameters_in_bigdls_order_and_shapes(name):
    cell = getattr(pm, name)(3, 4)
    rec = pm.Recurrent().add(cell)
    assert [w.shape for w in rec.parameters()[0]] == LAYOUTS[name]
    assert rec.getParameters()[0].size == sum(np.prod(s) for s in LAYOUTS[name])


def test_default_initialisation_is_bigdls_fan_in_bound():
    cell = pm.LSTM(9, 16)
    assert np.abs(cell.weight).max() <= 1 / 3 and np.abs(cell.bias).max() <= 1 / 3
    assert np.abs(cell.hiddenWeight).max() <= 1 / 4
    assert np.abs(cell.weight).max() > 0.25  # drawn over the whole range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "make"), _cells(np.float32), ids=[n for n, _ in CELLS])
def test_against_numpy_reference(name, make, dtype, rng):
    cell = make()
    rec = pm.Recurrent().add(cell.float() if dtype == np.float32 else cell.double())
    for shape in [(2, 5, 3), (1, 7, 3), (3, 1, 3), (2, 3, 3)]:  # lengths vary between calls
        x = rng.standard_normal(shape).astype(dtype)
        y = rec.forward(x)
        assert y.shape == shape[:2] + (4,) and y.dtype == dtype
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, reference(cell, x), rtol=tol, atol=tol)


@pytest.mark.parametrize(("name", "make"), CELLS, ids=[n for n, _ in CELLS])
def test_jacobians(name, make, rng):
    rec = pm.Recurrent().add(make())
    x = rng.standard_normal((2, 3, 3))
    assert_jacobian(rec, x, wrt="input")
    assert_jacobian(rec, x, wrt="parameters")
    cell = rec.modules[0]
    for value, _ in cell._params:
        if getattr(cell, value) is not None:
            assert_jacobian(cell, x, wrt=value)


@pytest.mark.parametrize("merge", [None, "join"])
@pytest.mark.parametrize(("name", "make"), CELLS[:3] + CELLS[-1:],
                         ids=[n for n, _ in CELLS[:3] + CELLS[-1:]])
def test_birecurrent_jacobians(name, make, merge, rng):
    bi = pm.BiRecurrent(None if merge is None else pm.JoinTable(2, dtype=np.float64))
    bi.add(make())
    x = rng.standard_normal((2, 3, 3))
    # directions that differ, so that a mix-up of the two would show
    bi.modules[1].getParameters()[0][:] *= 0.5
    assert_jacobian(bi, x, wrt="input")
    assert_jacobian(bi, x, wrt="parameters")


@pytest.mark.parametrize("merge", [None, "join"])
def test_birecurrent_against_reference(merge, rng):
    bi = pm.BiRecurrent(None if merge is None else pm.JoinTable(2, dtype=np.float64))
    bi.add(pm.GRU(3, 4, dtype=np.float64))
    fwd, rev = bi.modules
    np.testing.assert_array_equal(bi.getParameters()[0][:fwd.getParameters()[0].size],
                                  rev.getParameters()[0])  # both directions start equal
    rev.getParameters()[0][:] = rng.standard_normal(rev.getParameters()[0].size) * 0.3
    x = rng.standard_normal((2, 5, 3))
    yf, yr = reference(fwd, x), reference(rev, x[:, ::-1])[:, ::-1]
    want = yf + yr if merge is None else np.concatenate([yf, yr], axis=2)
    np.testing.assert_allclose(bi.forward(x), want, rtol=1e-12, atol=1e-12)
    assert len(bi.parameters()[0]) == 8


@pytest.mark.parametrize("merge", [None, "join"])
def test_birecurrent_clear_state_reaches_its_merge(merge, rng):
    bi = pm.BiRecurrent(None if merge is None else pm.JoinTable(2)).add(pm.LSTM(3, 4))
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y = bi.forward(x).copy()
    bi.backward(x, np.ones_like(y))
    assert bi._merge.output.size and bi._merge.gradInput
    bi.clearState()
    assert bi._merge.output.size == 0 and not len(bi._merge.gradInput)
    np.testing.assert_array_equal(bi.forward(x), y)


def _torch_lstm(torch, cell, dtype):
    h = cell.hiddenSize
    t = torch.nn.LSTM(cell.inputSize, h, batch_first=True).to(getattr(torch, dtype))
    perm = np.concatenate([np.arange(0, h), np.arange(2 * h, 3 * h), np.arange(h, 2 * h),
                           np.arange(3 * h, 4 * h)])  # i, g, f, o -> i, f, g, o
    with torch.no_grad():
        t.weight_ih_l0.copy_(torch.from_numpy(cell.weight[perm]))
        t.bias_ih_l0.copy_(torch.from_numpy(cell.bias[perm]))
        t.weight_hh_l0.copy_(torch.from_numpy(cell.hiddenWeight[perm]))
        t.bias_hh_l0.zero_()
    return t, np.argsort(perm)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 5])
def test_lstm_against_torch(dtype, batch, torch, rng):
    cell = pm.LSTM(6, 5, dtype=dtype)
    rec = pm.Recurrent().add(cell)
    t, back = _torch_lstm(torch, cell, dtype)
    x = rng.standard_normal((batch, 7, 6)).astype(dtype)
    go = rng.standard_normal((batch, 7, 5)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx)[0]
    ty.backward(torch.from_numpy(go))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    y = rec.forward(x)
    assert y.shape == (batch, 7, 5)  # a batch of one is never squeezed
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(rec.backward(x, go), tx.grad.numpy(), **tol)
    np.testing.assert_allclose(cell.gradWeight, t.weight_ih_l0.grad.numpy()[back], **tol)
    np.testing.assert_allclose(cell.gradBias, t.bias_ih_l0.grad.numpy()[back], **tol)
    np.testing.assert_allclose(cell.gradHiddenWeight, t.weight_hh_l0.grad.numpy()[back], **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_rnn_cell_against_torch(dtype, act, torch, rng):
    cell = pm.RnnCell(6, 5, pm.Tanh() if act == "tanh" else pm.ReLU(), dtype=dtype)
    rec = pm.Recurrent().add(cell)
    t = torch.nn.RNN(6, 5, nonlinearity=act, batch_first=True).to(getattr(torch, dtype))
    with torch.no_grad():
        for name, a in (("weight_ih_l0", cell.weight), ("bias_ih_l0", cell.bias),
                        ("weight_hh_l0", cell.hiddenWeight), ("bias_hh_l0", cell.hiddenBias)):
            getattr(t, name).copy_(torch.from_numpy(a))
    x = rng.standard_normal((3, 8, 6)).astype(dtype)
    go = rng.standard_normal((3, 8, 5)).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx)[0]
    ty.backward(torch.from_numpy(go))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rec.forward(x), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(rec.backward(x, go), tx.grad.numpy(), **tol)
    for name, g in (("weight_ih_l0", cell.gradWeight), ("bias_ih_l0", cell.gradBias),
                    ("weight_hh_l0", cell.gradHiddenWeight), ("bias_hh_l0", cell.gradHiddenBias)):
        np.testing.assert_allclose(g, getattr(t, name).grad.numpy(), **tol)


@pytest.mark.parametrize(("name", "make"), CELLS, ids=[n for n, _ in CELLS])
def test_gradients_accumulate_and_scale(name, make, rng):
    rec = pm.Recurrent().add(make())
    x = rng.standard_normal((2, 4, 3))
    go = rng.standard_normal((2, 4, 4))
    rec.forward(x)
    gi = rec.backward(x, go).copy()
    once = [g.copy() for g in rec.parameters()[1]]
    rec.backward(x, go)
    for g, g1 in zip(rec.parameters()[1], once, strict=True):
        np.testing.assert_allclose(g, 2 * g1, rtol=1e-12, atol=1e-14)
    rec.zeroGradParameters()
    rec.setScaleW(0.5).setScaleB(0.0)
    np.testing.assert_allclose(rec.backward(x, go), gi, rtol=1e-12)
    cell = rec.modules[0]
    for (v, g), g1 in zip([(v, getattr(cell, g)) for v, g in cell._params
                           if getattr(cell, v) is not None], once, strict=True):
        bias = "ias" in v
        np.testing.assert_allclose(g, 0 * g1 if bias else 0.5 * g1, rtol=1e-12, atol=1e-14)


def test_update_grad_input_and_acc_grad_parameters_separately(rng):
    rec = pm.Recurrent().add(pm.LSTM(3, 4, dtype=np.float64))
    x = rng.standard_normal((2, 4, 3))
    go = rng.standard_normal((2, 4, 4))
    rec.forward(x)
    rec.backward(x, go)
    want = [g.copy() for g in rec.parameters()[1]]
    rec.zeroGradParameters()
    rec.modules[0].accGradParameters(x, go)  # without updateGradInput first
    for g, w in zip(rec.parameters()[1], want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.parametrize(("name", "make"), _cells(np.float32), ids=[n for n, _ in CELLS])
def test_errors_name_the_module(name, make, rng):
    assert_refusal_names_the_module(make, rng.standard_normal((2, 3)).astype(np.float32),
                                    r"input must be 3-D \(batch, time, features\), got 2-D")
    assert_refusal_names_the_module(make, rng.standard_normal((2, 3, 5)).astype(np.float32),
                                    "input has 5 features, expected 3")
    rec = pm.Recurrent().add(make())
    with pytest.raises(ValueError, match=r"^Recurrent@\w+/\w+@\w+\(3 -> 4.*\): input has 5"):
        rec.forward(rng.standard_normal((2, 3, 5)).astype(np.float32))
    rec.forward(rng.standard_normal((2, 3, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="gradOutput"):
        rec.backward(rng.standard_normal((2, 3, 3)).astype(np.float32),
                     np.ones((2, 3, 5), np.float32))
    bi = pm.BiRecurrent().add(make())
    with pytest.raises(ValueError, match=r"^BiRecurrent@\w+/\w+@\w+\(3 -> 4.*\): input has 5"):
        bi.forward(rng.standard_normal((2, 3, 5)).astype(np.float32))


def test_constructor_and_container_refusals():
    with pytest.raises(TypeError, match="LSTM: hiddenSize must be an integer"):
        pm.LSTM(3, 2.5)
    with pytest.raises(ValueError, match="RnnCell: activation must be"):
        pm.RnnCell(3, 4, pm.SoftPlus())
    with pytest.raises(TypeError, match="add takes a cell"):
        pm.Recurrent().add(pm.Linear(3, 4))
    rec = pm.Recurrent().add(pm.GRU(3, 4))
    with pytest.raises(ValueError, match="holds a cell already"):
        rec.add(pm.GRU(3, 4))
    bi = pm.BiRecurrent().add(pm.GRU(3, 4))
    with pytest.raises(ValueError, match="same class and sizes"):
        bi.add(pm.GRU(3, 5))
    bi.add(pm.GRU(3, 4))
    with pytest.raises(ValueError, match="once"):
        bi.add(pm.GRU(3, 4))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RnnCell", "LSTMPeephole"])
def test_steady_state_allocates_nothing(name, rng):
    rec = pm.Recurrent().add(getattr(pm, name)(32, 64))
    x = rng.standard_normal((8, 16, 32)).astype(np.float32)
    go = rng.standard_normal((8, 16, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        for _ in range(5):
            rec.forward(x)
            rec.backward(x, go)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10):
            rec.forward(x)
            rec.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 2048, f"peak grew by {peak - base} bytes"
    assert current - base < 1024


def test_buffers_follow_the_sequence_length(rng):
    rec = pm.Recurrent().add(pm.LSTM(3, 4, dtype=np.float64))
    fresh = pm.Recurrent().add(rec.modules[0].cloneModule())
    for t in (5, 2, 5, 1):
        x = rng.standard_normal((3, t, 3))
        go = rng.standard_normal((3, t, 4))
        np.testing.assert_array_equal(rec.forward(x), fresh.forward(x))
        np.testing.assert_array_equal(rec.backward(x, go), fresh.backward(x, go))
        fresh.clearState()


def test_optimizer_trains_a_recurrent_model(rng):
    """Classify whether the sum of a sequence is positive from the last time step."""
    x = rng.standard_normal((256, 6, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int64)
    model = pm.Sequential(pm.Recurrent().add(pm.LSTM(2, 8)), pm.Reshape([48]),
                          pm.Linear(48, 2))
    crit = pm.CrossEntropyCriterion()
    before = crit.forward(model.forward(x), y)
    pm.Optimizer(model, (x, y), crit, pm.Adam(0.02), pm.MaxEpoch(8), 32).optimize()
    after = crit.forward(model.forward(x), y)
    assert after < 0.5 * before, (before, after)


def test_bigdl_flat_parameters_copy_in(rng):
    """A flat vector in BigDL's getParameters() order (W_ih, b_ih, U for LSTM) reproduces the
    cell's numbers when copied into a fresh one."""
    a = pm.Recurrent().add(pm.LSTM(3, 4, dtype=np.float64))
    b = pm.Recurrent().add(pm.LSTM(3, 4, dtype=np.float64))
    flat = a.getParameters()[0].copy()
    b.getParameters()[0][:] = flat
    x = rng.standard_normal((2, 3, 3))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    w = flat[:48].reshape(16, 3)
    np.testing.assert_array_equal(b.modules[0].weight, w)


# -- dropout p > 0: BigDL's per-gate Linears and masks held over time ------------------------
DROP_LAYOUTS = {
    # W_o, b_o, W_f, b_f, W_g, b_g, W_i, b_i, U_o, c_o, U_f, c_f, U_g, c_g, U_i, c_i
    "LSTM": [(4, 3), (4,)] * 4 + [(4, 4), (4,)] * 4,
    # W_z, b_z, W_r, b_r, U_z, U_r, U_n, W_n, b_n
    "GRU": [(4, 3), (4,), (4, 3), (4,), (4, 4), (4, 4), (4, 4), (4, 3), (4,)],
    # p_f, U_f, W_f, b_f, p_i, U_i, W_i, b_i, U_g, W_g, b_g, p_o, U_o, W_o, b_o
    "LSTMPeephole": [(4,), (4, 4), (4, 3), (4,)] * 2 + [(4, 4), (4, 3), (4,)] +
                    [(4,), (4, 4), (4, 3), (4,)],
}
DROP_NAMES = {
    "LSTM": ["weightO", "biasO", "weightF", "biasF", "weightG", "biasG", "weightI", "biasI",
             "hiddenWeightO", "hiddenBiasO", "hiddenWeightF", "hiddenBiasF", "hiddenWeightG",
             "hiddenBiasG", "hiddenWeightI", "hiddenBiasI"],
    "GRU": ["weightZ", "biasZ", "weightR", "biasR", "hiddenWeightZ", "hiddenWeightR",
            "hiddenWeightN", "weightN", "biasN"],
    "LSTMPeephole": ["peepholeF", "hiddenWeightF", "weightF", "biasF", "peepholeI",
                     "hiddenWeightI", "weightI", "biasI", "hiddenWeightG", "weightG", "biasG",
                     "peepholeO", "hiddenWeightO", "weightO", "biasO"],
}


def _dropping(name, dtype=np.float64, p=0.4, i=3, h=4):
    return getattr(pm, name)(i, h, p=p, dtype=dtype)


def dropout_reference(cell, x, masks=True):
    """The cell (p > 0) over ``x`` from its parameters in BigDL's order, with the masks of
    its last training forward (``masks``) or none (evaluation): LSTM's input masks
    (4, I, B) and hidden masks (4H, B) in gate order i, g, f, o; GRU's (3, B, I) and
    (B, 3H) in gate order r, z, n; LSTMPeephole's (4, B, I) and (B, 4H) in gate order
    i, f, g, o. Each mask holds at every step."""
    p = [np.asarray(a, np.float64) for a in cell.parameters()[0]]
    x = np.asarray(x, np.float64)
    b_, t_, i_ = x.shape
    h_ = cell.hiddenSize
    h = np.zeros((b_, h_))
    c = np.zeros((b_, h_))
    out = np.zeros((b_, t_, h_))
    if isinstance(cell, pm.LSTM):
        w = dict(zip("ofgi", zip(p[0:8:2], p[1:8:2], strict=True), strict=True))
        u = dict(zip("ofgi", zip(p[8:16:2], p[9:16:2], strict=True), strict=True))
        mx = np.asarray(cell._inputMask, np.float64) if masks else np.ones((4, i_, b_))
        mh = np.asarray(cell._hiddenMask, np.float64).reshape(4, h_, b_) if masks else \
            np.ones((4, h_, b_))
        for t in range(t_):
            z = {k: (x[:, t] * mx[q].T) @ w[k][0].T + w[k][1] + (h * mh[q].T) @ u[k][0].T +
                 u[k][1] for q, k in enumerate("igfo")}
            c = _sig(z["f"]) * c + _sig(z["i"]) * np.tanh(z["g"])
            h = _sig(z["o"]) * np.tanh(c)
            out[:, t] = h
        return out
    if isinstance(cell, pm.LSTMPeephole):
        pf, uf, wf, bf, pi, ui, wi, bi, ug, wg, bg, po, uo, wo, bo = p
        mx = np.asarray(cell._inputMask, np.float64) if masks else np.ones((4, b_, i_))
        mh = np.asarray(cell._hiddenMask, np.float64) if masks else np.ones((b_, 4 * h_))
        hm = [mh[:, k * h_:(k + 1) * h_] for k in range(4)]  # gates i, f, g, o
        for t in range(t_):
            xk = [x[:, t] * mx[q] for q in range(4)]
            i = _sig(xk[0] @ wi.T + bi + (h * hm[0]) @ ui.T + pi * c)
            f = _sig(xk[1] @ wf.T + bf + (h * hm[1]) @ uf.T + pf * c)
            g = np.tanh(xk[2] @ wg.T + bg + (h * hm[2]) @ ug.T)
            c = f * c + i * g
            o = _sig(xk[3] @ wo.T + bo + (h * hm[3]) @ uo.T + po * c)
            h = o * np.tanh(c)
            out[:, t] = h
        return out
    wz, bz, wr, br, uz, ur, un, wn, bn = p
    mx = np.asarray(cell._inputMask, np.float64) if masks else np.ones((3, b_, i_))
    mh = np.asarray(cell._hiddenMask, np.float64) if masks else np.ones((b_, 3 * h_))
    mr, mz, mn = (mh[:, k * h_:(k + 1) * h_] for k in range(3))
    for t in range(t_):
        xt = x[:, t]
        r = _sig((xt * mx[0]) @ wr.T + br + (h * mr) @ ur.T)
        z = _sig((xt * mx[1]) @ wz.T + bz + (h * mz) @ uz.T)
        n = np.tanh((xt * mx[2]) @ wn.T + bn + (r * h * mn) @ un.T)
        h = (1 - z) * n + z * h
        out[:, t] = h
    return out


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_layouts_are_bigdls(name):
    cell = _dropping(name, np.float32, 0.3)
    rec = pm.Recurrent().add(cell)
    assert [w.shape for w in rec.parameters()[0]] == DROP_LAYOUTS[name]
    assert [v for _, v, _ in cell._slots()] == DROP_NAMES[name]
    assert rec.getParameters()[0].size == sum(int(np.prod(s)) for s in DROP_LAYOUTS[name])
    assert "p=0.3" in str(cell)
    # p = 0 keeps the packed layout
    assert [w.shape for w in getattr(pm, name)(3, 4).parameters()[0]] == LAYOUTS[name]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_against_numpy_reference(name, dtype, rng):
    cell = _dropping(name, dtype)
    rec = pm.Recurrent().add(cell)
    for shape in [(2, 5, 3), (1, 7, 3), (3, 1, 3), (6, 4, 3)]:
        x = rng.standard_normal(shape).astype(dtype)
        y = rec.forward(x)
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, dropout_reference(cell, x), rtol=tol, atol=tol)
    assert (cell._inputMask == 0).any() and (cell._hiddenMask == 0).any()
    rec.evaluate()
    x = rng.standard_normal((2, 5, 3)).astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(rec.forward(x), dropout_reference(cell, x, masks=False),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_jacobians(name, rng):
    """With the masks fixed by the seed, the training-mode map is differentiable."""
    rec = pm.Recurrent().add(_dropping(name))
    x = rng.standard_normal((2, 4, 3))
    assert_jacobian(rec, x, wrt="input", seed=5)
    assert_jacobian(rec, x, wrt="parameters", seed=5)
    cell = rec.modules[0]
    for value, _ in cell._params:
        if getattr(cell, value) is not None:
            assert_jacobian(cell, x, wrt=value, seed=5)
    assert (cell._inputMask == 0).any() and (cell._hiddenMask == 0).any()
    rec.evaluate()
    assert_jacobian(rec, x, wrt="input")
    assert_jacobian(rec, x, wrt="parameters")


def _packed_p0(cell):
    """The p = 0 cell with the same map as ``cell`` (p > 0) in evaluation."""
    p = [np.asarray(a) for a in cell.parameters()[0]]
    plain = type(cell)(3, 4, dtype=cell.dtype)
    if isinstance(cell, pm.LSTM):
        wb = dict(zip("ofgi", zip(p[0:8:2], p[1:8:2], strict=True), strict=True))
        uc = dict(zip("ofgi", zip(p[8:16:2], p[9:16:2], strict=True), strict=True))
        plain.weight[...] = np.concatenate([wb[k][0] for k in "igfo"])
        plain.bias[...] = np.concatenate([wb[k][1] + uc[k][1] for k in "igfo"])
        plain.hiddenWeight[...] = np.concatenate([uc[k][0] for k in "igfo"])
    elif isinstance(cell, pm.LSTMPeephole):
        pf, uf, wf, bf, pi, ui, wi, bi, ug, wg, bg, po, uo, wo, bo = p
        plain.weight[...] = np.concatenate([wi, wf, wg, wo])
        plain.bias[...] = np.concatenate([bi, bf, bg, bo])
        for name, value in (("peepholeF", pf), ("hiddenWeightF", uf), ("peepholeI", pi),
                            ("hiddenWeightI", ui), ("hiddenWeightG", ug),
                            ("peepholeO", po), ("hiddenWeightO", uo)):
            getattr(plain, name)[...] = value
    else:
        wz, bz, wr, br, uz, ur, un, wn, bn = p
        plain.weight[...] = np.concatenate([wr, wz, wn])
        plain.bias[...] = np.concatenate([br, bz, bn])
        plain.hiddenWeightRZ[...] = np.concatenate([ur, uz])
        plain.hiddenWeightN[...] = un
    return plain


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_evaluation_is_the_p0_cell(name, rng):
    drop = _dropping(name)
    plain = _packed_p0(drop)
    x = rng.standard_normal((2, 5, 3))
    go = rng.standard_normal((2, 5, 4))
    drop.evaluate()
    np.testing.assert_allclose(drop.forward(x), plain.forward(x), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(drop.backward(x, go), plain.backward(x, go), rtol=1e-12,
                               atol=1e-13)
    # the gradients are the packed ones, split by gate (biases b_k and c_k alike)
    for got, ref in zip(_packed_grads(drop), (plain.gradWeight, plain.gradBias), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)
    if isinstance(drop, pm.LSTMPeephole):  # the arrays both layouts share
        for k in "IFGO":
            for a in ("gradHiddenWeight" + k,) + (("gradPeephole" + k,) if k != "G" else ()):
                np.testing.assert_allclose(getattr(drop, a), getattr(plain, a), rtol=1e-12,
                                           atol=1e-13)
    drop.training()
    assert not np.allclose(drop.forward(x), plain.forward(x))


def _packed_grads(cell):
    g = [np.asarray(a) for a in cell.parameters()[1]]
    if isinstance(cell, pm.LSTM):
        gw = dict(zip("ofgi", g[0:8:2], strict=True))
        gb = dict(zip("ofgi", g[1:8:2], strict=True))
        gc = dict(zip("ofgi", g[9:16:2], strict=True))
        for k in "ofgi":
            np.testing.assert_array_equal(gb[k], gc[k])
        return np.concatenate([gw[k] for k in "igfo"]), np.concatenate([gb[k] for k in "igfo"])
    if isinstance(cell, pm.LSTMPeephole):
        gw = [g[k] for k in (6, 2, 9, 13)]  # i, f, g, o
        gb = [g[k] for k in (7, 3, 10, 14)]
        return np.concatenate(gw), np.concatenate(gb)
    gwz, gbz, gwr, gbr, _, _, _, gwn, gbn = g
    return np.concatenate([gwr, gwz, gwn]), np.concatenate([gbr, gbz, gbn])


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_masks_rate_scale_and_seed(name, rng):
    p = 0.3
    cell = _dropping(name, p=p, i=16, h=32)
    rec = pm.Recurrent().add(cell)
    x = rng.standard_normal((64, 3, 16))
    pm.setSeed(11)
    a = rec.forward(x).copy()
    for m in (cell._inputMask, cell._hiddenMask):
        kept = m != 0
        assert np.all(m[kept] == 1 / (1 - p))
        frac = 1 - kept.mean()
        assert abs(frac - p) < 5 * np.sqrt(p * (1 - p) / m.size), (frac, p)
    b = rec.forward(x).copy()
    assert not np.array_equal(a, b)  # new masks each forward
    pm.setSeed(11)
    np.testing.assert_array_equal(rec.forward(x), a)


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_gradients_accumulate_and_use_the_masks(name, rng):
    cell = _dropping(name)
    x = rng.standard_normal((2, 4, 3))
    go = rng.standard_normal((2, 4, 4))
    cell.forward(x)
    gi = cell.backward(x, go).copy()
    g1 = cell.getParameters()[1].copy()
    cell.backward(x, go)
    np.testing.assert_allclose(cell.getParameters()[1], 2 * g1, rtol=1e-12, atol=1e-14)
    cell.zeroGradParameters()
    np.testing.assert_array_equal(cell.updateGradInput(x, go), gi)
    cell.accGradParameters(x, go)
    np.testing.assert_allclose(cell.getParameters()[1], g1, rtol=1e-12, atol=1e-14)
    # an input element dropped by every gate's mask gets no gradient
    mx = cell._inputMask  # LSTM (4, I, B), GRU (3, B, I)
    dead = (mx == 0).all(axis=0)
    dead = dead.T if isinstance(cell, pm.LSTM) else dead
    assert np.all(gi[np.broadcast_to(dead[:, None, :], gi.shape)] == 0)


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_steady_state_allocates_nothing(name, rng):
    rec = pm.Recurrent().add(_dropping(name, np.float32, 0.25, 32, 64))
    x = rng.standard_normal((8, 16, 32)).astype(np.float32)
    go = rng.standard_normal((8, 16, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        for _ in range(5):
            rec.forward(x)
            rec.backward(x, go)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(10):
            rec.forward(x)
            rec.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 4096, f"peak grew by {peak - base} bytes"
    assert current - base < 1024


@pytest.mark.parametrize("name", list(DROP_LAYOUTS))
def test_dropout_refusals(name):
    with pytest.raises(ValueError, match=rf"{name}: the drop probability p must lie in "
                                         r"\[0, 1\), got 1.0"):
        getattr(pm, name)(3, 4, p=1)
    with pytest.raises(ValueError, match="got -0.5"):
        getattr(pm, name)(3, 4, p=-0.5)
