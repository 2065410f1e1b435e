"""BigDL's flat parameters copied in: a vector laid out as API.md's "Sequences" section (BigDL
2.4's getParameters() order) is copied with getParameters() into Recurrent(LSTM),
Recurrent(GRU), Recurrent(RnnCell), Recurrent(LSTMPeephole) and BiRecurrent, and the outputs,
input gradients and flat parameter gradients are compared with a NumPy implementation of
BigDL's formulas that reads only that vector (never the modules' arrays); its gradients are
central differences of its own float64 forward."""

import numpy as np
import pytest

import pymodules as pm


def _sig(a):
    return 1 / (1 + np.exp(-a))


class _Reader:
    """Consumes a flat float64 vector in order: take((rows, cols)) or take((n,))."""

    def __init__(self, flat):
        self.flat, self.at = flat, 0

    def take(self, shape):
        n = int(np.prod(shape))
        out = self.flat[self.at:self.at + n].reshape(shape)
        self.at += n
        return out

    def done(self):
        assert self.at == self.flat.size, (self.at, self.flat.size)


def lstm(r, x, i_, h_):
    """API.md: [W_ih (4H, I), b_ih (4H), W_hh (4H, H)], blocks i, g, f, o."""
    w, b, u = r.take((4 * h_, i_)), r.take((4 * h_,)), r.take((4 * h_, h_))
    h = c = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ w.T + b + h @ u.T
        zi, zg, zf, zo = np.split(z, 4, axis=1)
        c = _sig(zf) * c + _sig(zi) * np.tanh(zg)
        h = _sig(zo) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def lstm_dropout_eval(r, x, i_, h_):
    """p > 0 in evaluation: [W_o, b_o, W_f, b_f, W_g, b_g, W_i, b_i, U_o, c_o, U_f, c_f,
    U_g, c_g, U_i, c_i], each gate z_k = W_k x + b_k + U_k h + c_k."""
    wb = {k: (r.take((h_, i_)), r.take((h_,))) for k in "ofgi"}
    uc = {k: (r.take((h_, h_)), r.take((h_,))) for k in "ofgi"}
    h = c = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        z = {k: x[:, t] @ wb[k][0].T + wb[k][1] + h @ uc[k][0].T + uc[k][1] for k in "ofgi"}
        c = _sig(z["f"]) * c + _sig(z["i"]) * np.tanh(z["g"])
        h = _sig(z["o"]) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def gru(r, x, i_, h_):
    """API.md: [W_ih (3H, I), b_ih (3H), U_rz (2H, H), U_n (H, H)], blocks r, z, n; the
    reset gate before U_n; h = (1 - z) n + z h."""
    w, b, urz, un = r.take((3 * h_, i_)), r.take((3 * h_,)), r.take((2 * h_, h_)), \
        r.take((h_, h_))
    h = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        xr, xz, xn = np.split(x[:, t] @ w.T + b, 3, axis=1)
        rz = h @ urz.T
        rg, zg = _sig(xr + rz[:, :h_]), _sig(xz + rz[:, h_:])
        n = np.tanh(xn + (rg * h) @ un.T)
        h = (1 - zg) * n + zg * h
        out.append(h)
    return np.stack(out, 1)


def gru_dropout_eval(r, x, i_, h_):
    """p > 0 in evaluation: [W_z, b_z, W_r, b_r, U_z, U_r, U_n, W_n, b_n]."""
    wz, bz, wr, br = r.take((h_, i_)), r.take((h_,)), r.take((h_, i_)), r.take((h_,))
    uz, ur, un = r.take((h_, h_)), r.take((h_, h_)), r.take((h_, h_))
    wn, bn = r.take((h_, i_)), r.take((h_,))
    h = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        rg = _sig(xt @ wr.T + br + h @ ur.T)
        zg = _sig(xt @ wz.T + bz + h @ uz.T)
        n = np.tanh(xt @ wn.T + bn + (rg * h) @ un.T)
        h = (1 - zg) * n + zg * h
        out.append(h)
    return np.stack(out, 1)


def rnn(r, x, i_, h_):
    """API.md: [W_ih, b_ih, W_hh, b_hh]; h = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    w, b, u, c = r.take((h_, i_)), r.take((h_,)), r.take((h_, h_)), r.take((h_,))
    h = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ w.T + b + h @ u.T + c)
        out.append(h)
    return np.stack(out, 1)


def peephole(r, x, i_, h_):
    """API.md: [W_ih (4H, I) blocks i, f, g, o; b_ih; p_f; U_f; p_i; U_i; U_g; p_o; U_o]."""
    w, b = r.take((4 * h_, i_)), r.take((4 * h_,))
    pf, uf = r.take((h_,)), r.take((h_, h_))
    pi, ui = r.take((h_,)), r.take((h_, h_))
    ug = r.take((h_, h_))
    po, uo = r.take((h_,)), r.take((h_, h_))
    h = c = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        xi, xf, xg, xo = np.split(x[:, t] @ w.T + b, 4, axis=1)
        ig = _sig(xi + h @ ui.T + pi * c)
        fg = _sig(xf + h @ uf.T + pf * c)
        g = np.tanh(xg + h @ ug.T)
        c = fg * c + ig * g
        og = _sig(xo + h @ uo.T + po * c)
        h = og * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def peephole_dropout_eval(r, x, i_, h_):
    """p > 0 in evaluation: [p_f, U_f, W_f, b_f, p_i, U_i, W_i, b_i, U_g, W_g, b_g, p_o, U_o,
    W_o, b_o], each gate x_k = W_k x + b_k, its hidden Linear U_k without a bias."""
    pf, uf, wf, bf = r.take((h_,)), r.take((h_, h_)), r.take((h_, i_)), r.take((h_,))
    pi, ui, wi, bi = r.take((h_,)), r.take((h_, h_)), r.take((h_, i_)), r.take((h_,))
    ug, wg, bg = r.take((h_, h_)), r.take((h_, i_)), r.take((h_,))
    po, uo, wo, bo = r.take((h_,)), r.take((h_, h_)), r.take((h_, i_)), r.take((h_,))
    h = c = np.zeros((x.shape[0], h_))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        ig = _sig(xt @ wi.T + bi + h @ ui.T + pi * c)
        fg = _sig(xt @ wf.T + bf + h @ uf.T + pf * c)
        g = np.tanh(xt @ wg.T + bg + h @ ug.T)
        c = fg * c + ig * g
        og = _sig(xt @ wo.T + bo + h @ uo.T + po * c)
        h = og * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def bidirectional(cell, join):
    """API.md: the forward direction's parameters, then the backward's; the backward runs
    over the reversed sequence and its output is reversed back; summed or joined."""
    def run(r, x, i_, h_):
        fwd = cell(r, x, i_, h_)
        bwd = cell(r, x[:, ::-1], i_, h_)[:, ::-1]
        return np.concatenate([fwd, bwd], 2) if join else fwd + bwd
    return run


I_, H_ = 3, 4
CASES = {
    "LSTM": (lambda dt: pm.Recurrent().add(pm.LSTM(I_, H_, dtype=dt)), lstm),
    "GRU": (lambda dt: pm.Recurrent().add(pm.GRU(I_, H_, dtype=dt)), gru),
    "RnnCell": (lambda dt: pm.Recurrent().add(pm.RnnCell(I_, H_, pm.Tanh(), dtype=dt)), rnn),
    "LSTMPeephole": (lambda dt: pm.Recurrent().add(pm.LSTMPeephole(I_, H_, dtype=dt)),
                     peephole),
    "BiRecurrentLSTM": (lambda dt: pm.BiRecurrent().add(pm.LSTM(I_, H_, dtype=dt)),
                        bidirectional(lstm, False)),
    "BiRecurrentGRUJoin": (lambda dt: pm.BiRecurrent(pm.JoinTable(2)).add(
        pm.GRU(I_, H_, dtype=dt)), bidirectional(gru, True)),
    "LSTMDropoutEvaluate": (lambda dt: pm.Recurrent().add(
        pm.LSTM(I_, H_, p=0.4, dtype=dt)).evaluate(), lstm_dropout_eval),
    "GRUDropoutEvaluate": (lambda dt: pm.Recurrent().add(
        pm.GRU(I_, H_, p=0.4, dtype=dt)).evaluate(), gru_dropout_eval),
    "LSTMPeepholeDropoutEvaluate": (lambda dt: pm.Recurrent().add(
        pm.LSTMPeephole(I_, H_, p=0.4, dtype=dt)).evaluate(), peephole_dropout_eval),
}


def _reference(fn, flat, x):
    r = _Reader(np.asarray(flat, np.float64))
    y = fn(r, np.asarray(x, np.float64), I_, H_)
    r.done()
    return y


def _reference_gradients(fn, flat, x, go, eps=1e-6):
    """d(sum(y * go)) / d(x) and / d(flat) by central differences of the float64 reference."""
    flat, x = np.asarray(flat, np.float64), np.asarray(x, np.float64)

    def loss(f, xx):
        return float((_reference(fn, f, xx) * go).sum())

    gx = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        d = np.zeros_like(x)
        d[idx] = eps
        gx[idx] = (loss(flat, x + d) - loss(flat, x - d)) / (2 * eps)
    gw = np.zeros_like(flat)
    for k in range(flat.size):
        d = np.zeros_like(flat)
        d[k] = eps
        gw[k] = (loss(flat + d, x) - loss(flat - d, x)) / (2 * eps)
    return gx, gw


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_bigdl_flat_parameters_reproduce_bigdls_formulas(name, dtype, rng):
    make, fn = CASES[name]
    model = make(dtype)
    flat = model.getParameters()[0]
    values = rng.uniform(-0.6, 0.6, flat.size)
    flat[:] = values  # BigDL's getParameters() vector, copied in
    x = rng.standard_normal((2, 5, I_))
    go = rng.standard_normal(model.forward(x.astype(dtype)).shape)
    want = _reference(fn, values, x)
    y = model.forward(x.astype(dtype))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    model.zeroGradParameters()
    gi = model.backward(x.astype(dtype), go.astype(dtype))
    gx, gw = _reference_gradients(fn, values, x, go)
    tol = 2e-4 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(gi, gx, rtol=tol, atol=tol)
    np.testing.assert_allclose(model.getParameters()[1], gw, rtol=tol, atol=tol)
