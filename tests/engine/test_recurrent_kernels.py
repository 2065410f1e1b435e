"""Kernels of the recurrent cells against NumPy: layouts, projections, steps, backward through
time, weight gradients, refusals and empty sizes. Outputs start as NaN so that an unwritten
element fails."""

import numpy as np
import pytest
from pymodules.engine import recurrent as R
from tolerance import abs_gemm, assert_reduction_close

DTYPES = [np.float32, np.float64]


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


def _sig(a):
    return 1 / (1 + np.exp(-a))


def _tol(dtype):
    return dict(rtol=3e-5, atol=3e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 4), (1, 1, 7), (0, 3, 2), (2, 0, 3), (17, 3, 19)])
def test_layout_kernels(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    y = _nan(shape[::-1], dtype)
    R.swap_outer(x, y, shape[2])
    np.testing.assert_array_equal(y, x.transpose(2, 1, 0))
    z = _nan((shape[1], shape[0], shape[2]), dtype)
    R.swap_time_batch(x, z, shape[2])
    np.testing.assert_array_equal(z, x.transpose(1, 0, 2))
    r = _nan(shape, dtype)
    R.reverse_time(x, r)
    np.testing.assert_array_equal(r, x[:, ::-1])
    b = rng.standard_normal(shape).astype(dtype)
    s = _nan(shape, dtype)
    R.add_reversed(x, b, s)
    np.testing.assert_array_equal(s, x + b[:, ::-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("biases", [(True, True), (True, False), (False, True), (False, False)])
def test_projection_and_its_gradients(dtype, biases, rng):
    a, c, i, g = 3, 4, 5, 8
    x = rng.standard_normal((a, c, i)).astype(dtype)
    w = rng.standard_normal((g, i)).astype(dtype)
    b1, b2 = (rng.standard_normal(g).astype(dtype) if on else None for on in biases)
    y = _nan((a, c, g), dtype)
    R.recurrent_project(x, y, w, b1, b2)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b1 is None else b1) + \
        (0 if b2 is None else b2)
    assert_reduction_close(y, want, dtype, i + 2, abs_gemm(x.reshape(-1, i), w.T).reshape(y.shape)
                           + 2)
    dg = rng.standard_normal((a, c, g)).astype(dtype)
    gi = _nan((a, c, i), dtype)
    R.recurrent_update_grad_input(dg, gi, w)
    np.testing.assert_allclose(gi, dg @ w, **_tol(dtype))
    gw = np.ones((g, i), dtype)
    gb1, gb2 = (np.ones(g, dtype) if on else None for on in biases)
    R.recurrent_acc_input(x, dg, gw, gb1, gb2, 0.5, 2.0)
    d2, x2 = dg.reshape(-1, g).astype(np.float64), x.reshape(-1, i).astype(np.float64)
    np.testing.assert_allclose(gw, 1 + 0.5 * d2.T @ x2, **_tol(dtype))
    for gb in (gb1, gb2):
        if gb is not None:
            np.testing.assert_allclose(gb, 1 + 2 * d2.sum(0), **_tol(dtype))
    gu = np.ones((3, 6), dtype)
    s = rng.standard_normal((a, c, 6)).astype(dtype)
    R.recurrent_acc_hidden(s, dg, 2, gu, 1.5)
    np.testing.assert_allclose(gu, 1 + 1.5 * d2[:, 2:5].T @ s.reshape(-1, 6), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_feature_major_projection_and_gradients(dtype, rng):
    i, t, b, h = 5, 4, 3, 2
    g = 4 * h
    x = rng.standard_normal((i, t, b)).astype(dtype)
    w = rng.standard_normal((g, i)).astype(dtype)
    bias = rng.standard_normal(g).astype(dtype)
    p = _nan((g, t, b), dtype)
    R.lstm_project(x, p, w, bias)
    np.testing.assert_allclose(p, np.einsum("gi,itb->gtb", w, x) + bias[:, None, None],
                               **_tol(dtype))
    dg = rng.standard_normal((g, t, b)).astype(dtype)
    gi = _nan((i, t, b), dtype)
    R.lstm_grad_input(dg, gi, w)
    np.testing.assert_allclose(gi, np.einsum("gi,gtb->itb", w, dg), **_tol(dtype))
    hs = rng.standard_normal((h, t, b)).astype(dtype)
    gw, gb, gu = np.ones((g, i), dtype), np.ones(g, dtype), np.ones((g, h), dtype)
    R.lstm_acc_grad_parameters(x, hs, dg, gw, gb, gu, 0.5, 2.0)
    np.testing.assert_allclose(gw, 1 + 0.5 * np.einsum("gtb,itb->gi", dg, x), **_tol(dtype))
    np.testing.assert_allclose(gb, 1 + 2 * dg.sum((1, 2)), **_tol(dtype))
    want = 1 + 0.5 * np.einsum("gtb,htb->gh", dg[:, 1:], hs[:, :-1])
    np.testing.assert_allclose(gu, want, **_tol(dtype))


def _lstm_numpy(xp, u):
    """Feature-major LSTM forward and backward in float64: xp (4H, T, B) projected input."""
    g4, t_, b_ = xp.shape
    h_ = g4 // 4
    hs, cs, gates = np.zeros((h_, t_, b_)), np.zeros((h_, t_, b_)), []
    h, c = np.zeros((h_, b_)), np.zeros((h_, b_))
    for t in range(t_):
        z = xp[:, t] + u @ h
        i, g, f, o = _sig(z[:h_]), np.tanh(z[h_:2 * h_]), _sig(z[2 * h_:3 * h_]), _sig(z[3 * h_:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[:, t], cs[:, t] = h, c
        gates.append((i, g, f, o))
    return hs, cs, gates


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "t", "h"), [(3, 4, 2), (1, 5, 3), (4, 1, 2)])
def test_lstm_steps_and_bptt(b, t, h, dtype, rng):
    xp = rng.standard_normal((4 * h, t, b)).astype(dtype)
    u = (rng.standard_normal((4 * h, h)) * 0.5).astype(dtype)
    gt, c, tc, hs = (_nan(s, dtype) for s in [(t, 4 * h, b), (t, h, b), (t, h, b), (h, t, b)])
    R.lstm_steps(xp, gt, c, tc, hs, u)
    want_h, want_c, gates = _lstm_numpy(xp.astype(np.float64), u.astype(np.float64))
    np.testing.assert_allclose(hs, want_h, **_tol(dtype))
    np.testing.assert_allclose(c.transpose(1, 0, 2), want_c, **_tol(dtype))
    np.testing.assert_allclose(tc, np.tanh(c), **_tol(dtype))
    go = rng.standard_normal((h, t, b)).astype(dtype)
    dg = _nan((4 * h, t, b), dtype)
    R.lstm_bptt(go, gt, c, tc, u, _nan((h, 4 * h), dtype), dg, _nan((h, b), dtype),
                _nan((h, b), dtype))
    # the NumPy backward through time
    u64, want = u.astype(np.float64), np.zeros((4 * h, t, b))
    dh, dc = np.zeros((h, b)), np.zeros((h, b))
    for s in range(t - 1, -1, -1):
        i, g, f, o = gates[s]
        cp = want_c[:, s - 1] if s else 0
        tcs = np.tanh(want_c[:, s])
        dv = go[:, s] + dh
        dcs = dv * o * (1 - tcs ** 2) + dc
        want[:, s] = np.concatenate([dcs * g * i * (1 - i), dcs * i * (1 - g ** 2),
                                     dcs * cp * f * (1 - f), dv * tcs * o * (1 - o)])
        dc, dh = dcs * f, u64.T @ want[:, s]
    np.testing.assert_allclose(dg, want, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_and_rnn_steps(dtype, rng):
    b, t, h = 3, 4, 2
    x = rng.standard_normal((t, b, 3 * h)).astype(dtype)
    urz = (rng.standard_normal((2 * h, h)) * 0.5).astype(dtype)
    un = (rng.standard_normal((h, h)) * 0.5).astype(dtype)
    g, y, rh, hp = x.copy(), _nan((b, t, h), dtype), _nan((t, b, h), dtype), _nan((t, b, h),
                                                                                  dtype)
    R.gru_steps(y, g, rh, hp, urz, un)
    hv = np.zeros((b, h))
    for s in range(t):
        rz = _sig(x[s, :, :2 * h] + hv @ urz.T)
        n = np.tanh(x[s, :, 2 * h:] + (rz[:, :h] * hv) @ un.T)
        np.testing.assert_allclose(hp[s], hv, **_tol(dtype))
        hv = (1 - rz[:, h:]) * n + rz[:, h:] * hv
        np.testing.assert_allclose(y[:, s], hv, **_tol(dtype))
    u = (rng.standard_normal((h, h)) * 0.5).astype(dtype)
    for act, f in ((R.ACT_TANH, np.tanh), (R.ACT_SIGMOID, _sig),
                   (R.ACT_RELU, lambda a: np.maximum(a, 0))):
        xr = rng.standard_normal((t, b, h)).astype(dtype)
        g, y, hp = xr.copy(), _nan((b, t, h), dtype), _nan((t, b, h), dtype)
        R.rnn_steps(y, g, hp, u, act)
        hv = np.zeros((b, h))
        for s in range(t):
            hv = f(xr[s] + hv @ u.T)
            np.testing.assert_allclose(y[:, s], hv, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_peephole_steps(dtype, rng):
    b, t, h = 2, 3, 2
    x = rng.standard_normal((t, b, 4 * h)).astype(dtype)
    us = [(rng.standard_normal((h, h)) * 0.5).astype(dtype) for _ in range(4)]  # i, f, g, o
    ps = [rng.standard_normal(h).astype(dtype) for _ in range(3)]  # i, f, o
    g = x.copy()
    y, c, tc, hp = _nan((b, t, h), dtype), *(_nan((t, b, h), dtype) for _ in range(3))
    up = _nan((4 * h, h), dtype)
    R.peephole_steps(y, g, c, tc, hp, up, *us, *ps)
    np.testing.assert_array_equal(up, np.concatenate(us))
    hv, cv = np.zeros((b, h)), np.zeros((b, h))
    for s in range(t):
        z = x[s] + hv @ np.concatenate(us).T
        i = _sig(z[:, :h] + ps[0] * cv)
        f = _sig(z[:, h:2 * h] + ps[1] * cv)
        cv = f * cv + i * np.tanh(z[:, 2 * h:3 * h])
        hv = _sig(z[:, 3 * h:] + ps[2] * cv) * np.tanh(cv)
        np.testing.assert_allclose(y[:, s], hv, **_tol(dtype))


def test_empty_sequences_write_nothing_and_pass():
    for b, t in ((0, 3), (2, 0)):
        xp = np.zeros((8, t, b))
        R.lstm_steps(xp, np.zeros((t, 8, b)), np.zeros((t, 2, b)), np.zeros((t, 2, b)),
                     np.zeros((2, t, b)), np.zeros((8, 2)))
        R.recurrent_project(np.zeros((b, t, 3)), np.zeros((b, t, 4)), np.zeros((4, 3)), None)


def test_refusals():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"input must be 3-D \(batch, time, features\)"):
        R.swap_outer(np.zeros((2, 4), np.float32), np.zeros((4, 3, 2), np.float32), 4)
    with pytest.raises(ValueError, match="input has 4 features, expected 5"):
        R.swap_outer(x, np.zeros((4, 3, 2), np.float32), 5)
    with pytest.raises(TypeError, match="input has dtype float64, expected float32"):
        R.swap_outer(x.astype(np.float64), np.zeros((4, 3, 2), np.float32), 4)
    with pytest.raises(ValueError, match="output has shape"):
        R.swap_outer(x, np.zeros((4, 3, 3), np.float32), 4)
    with pytest.raises(ValueError, match="not C-contiguous"):
        R.reverse_time(np.zeros((2, 6, 4), np.float32)[:, ::2], x)
    with pytest.raises(ValueError, match="output overlaps input"):
        R.reverse_time(x, x)
    with pytest.raises(ValueError, match="read-only"):
        y = np.zeros((2, 3, 4), np.float32)
        y.flags.writeable = False
        R.reverse_time(x, y)
    with pytest.raises(ValueError, match="activation code 7"):
        R.rnn_steps(np.zeros((2, 3, 4)), np.zeros((3, 2, 4)), np.zeros((3, 2, 4)),
                    np.zeros((4, 4)), 7)
    with pytest.raises(ValueError, match=r"W_hh has shape \(4, 4\), expected \(16, 4\)"):
        R.lstm_steps(np.zeros((16, 3, 2)), np.zeros((3, 16, 2)), np.zeros((3, 4, 2)),
                     np.zeros((3, 4, 2)), np.zeros((4, 3, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"gates has shape"):
        R.gru_steps(np.zeros((2, 3, 4)), np.zeros((3, 2, 8)), np.zeros((3, 2, 4)),
                    np.zeros((3, 2, 4)), np.zeros((8, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="gate columns 2:6 are outside the 4"):
        R.recurrent_acc_hidden(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 2, np.zeros((4, 4)),
                               1.0)
    with pytest.raises(TypeError, match="must be a numpy.ndarray"):
        R.recurrent_project([[1.0]], np.zeros((1, 1, 2)), np.zeros((2, 1)), None)


# -- LSTMPeephole with dropout masks on h(t-1), one block per gate ---------------------------
def _peephole_masked_reference(x, us, ps, hn, go):
    """Forward outputs (B, T, H) and the gate gradients (T, B, 4H) of the masked steps, float64,
    by hand: gate k reads U_k (h * hn[t, :, k])."""
    t_, b_, g4 = x.shape
    h_ = g4 // 4
    x, hn, go = (np.asarray(a, np.float64) for a in (x, hn, go))
    us, ps = [np.asarray(u, np.float64) for u in us], [np.asarray(p, np.float64) for p in ps]
    hv, cv = np.zeros((b_, h_)), np.zeros((b_, h_))
    keep = []
    y = np.zeros((b_, t_, h_))
    for s in range(t_):
        hd = [hv * hn[s][:, k * h_:(k + 1) * h_] for k in range(4)]
        z = x[s] + np.concatenate([hd[k] @ us[k].T for k in range(4)], axis=1)
        cp = cv
        i = _sig(z[:, :h_] + ps[0] * cp)
        f = _sig(z[:, h_:2 * h_] + ps[1] * cp)
        g = np.tanh(z[:, 2 * h_:3 * h_])
        cv = f * cp + i * g
        o = _sig(z[:, 3 * h_:] + ps[2] * cv)
        th = np.tanh(cv)
        hv = o * th
        y[:, s] = hv
        keep.append((i, f, g, o, cp, cv, th))
    dg = np.zeros_like(x)
    dh, dc = np.zeros((b_, h_)), np.zeros((b_, h_))
    for s in range(t_ - 1, -1, -1):
        i, f, g, o, cp, cv, th = keep[s]
        dv = go[:, s] + dh
        dao = dv * th * o * (1 - o)
        dcell = dv * o * (1 - th * th) + dc + dao * ps[2]
        dai, daf = dcell * g * i * (1 - i), dcell * cp * f * (1 - f)
        dg[s] = np.concatenate([dai, daf, dcell * i * (1 - g * g), dao], axis=1)
        dc = dcell * f + dai * ps[0] + daf * ps[1]
        dh = sum((dg[s][:, k * h_:(k + 1) * h_] @ us[k]) * hn[s][:, k * h_:(k + 1) * h_]
                 for k in range(4))
    return y, dg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "t", "h"), [(2, 3, 2), (1, 4, 5), (3, 1, 3)])
def test_peephole_steps_and_bptt_with_hidden_masks(b, t, h, dtype, rng):
    x = rng.standard_normal((t, b, 4 * h)).astype(dtype)
    us = [(rng.standard_normal((h, h)) * 0.5).astype(dtype) for _ in range(4)]
    ps = [rng.standard_normal(h).astype(dtype) for _ in range(3)]
    hn = (rng.random((t, b, 4 * h)) > 0.4).astype(dtype) / dtype(0.6)
    go = rng.standard_normal((b, t, h)).astype(dtype)
    g = x.copy()
    y, c, tc, hp = _nan((b, t, h), dtype), *(_nan((t, b, h), dtype) for _ in range(3))
    up, hd = _nan((4 * h, h), dtype), _nan((t, b, 4 * h), dtype)
    R.peephole_steps(y, g, c, tc, hp, up, *us, *ps, hn, hd)
    want_y, want_dg = _peephole_masked_reference(x, us, ps, hn, go)
    np.testing.assert_allclose(y, want_y, **_tol(dtype))
    hp64 = np.asarray(hp, np.float64)
    np.testing.assert_allclose(hd, np.tile(hp64, (1, 1, 4)) * hn, **_tol(dtype))
    assert not hd[0].any()
    dg, dh, dc, dp = _nan((t, b, 4 * h), dtype), _nan((b, h), dtype), _nan((b, h), dtype), \
        _nan((b, 4 * h), dtype)
    R.peephole_bptt(go, g, c, tc, up, ps[0], ps[1], ps[2], dg, dh, dc, hn, dp)
    np.testing.assert_allclose(dg, want_dg, rtol=1e-4 if dtype == np.float32 else 1e-11,
                               atol=1e-5 if dtype == np.float32 else 1e-12)
    # the weight gradient of U_k reads block k of the dropped states
    for k in range(4):
        gu = np.zeros((h, h), dtype)
        R.recurrent_acc_hidden(hd, dg, k * h, gu, 1.0, k * h)
        want = dg.reshape(-1, 4 * h)[:, k * h:(k + 1) * h].astype(np.float64).T @ \
            hd.reshape(-1, 4 * h)[:, k * h:(k + 1) * h].astype(np.float64)
        np.testing.assert_allclose(gu, want, **_tol(dtype))


def test_masked_peephole_refusals():
    b, t, h = 2, 3, 2
    y, g = np.zeros((b, t, h)), np.zeros((t, b, 4 * h))
    c, tc, hp = (np.zeros((t, b, h)) for _ in range(3))
    up, us, ps = np.zeros((4 * h, h)), [np.zeros((h, h))] * 4, [np.zeros(h)] * 3
    with pytest.raises(ValueError, match="h_noise and h_dropped go together"):
        R.peephole_steps(y, g, c, tc, hp, up, *us, *ps, np.zeros((t, b, 4 * h)), None)
    with pytest.raises(ValueError, match=r"h_noise has shape \(3, 2, 4\), expected"):
        R.peephole_steps(y, g, c, tc, hp, up, *us, *ps, np.zeros((t, b, 4)),
                         np.zeros((t, b, 4 * h)))
    hn = np.zeros((t, b, 4 * h))
    with pytest.raises(ValueError, match="h_dropped overlaps h_noise"):
        R.peephole_steps(y, g, c, tc, hp, up, *us, *ps, hn, hn)
    with pytest.raises(ValueError, match="h_noise and dh_parts go together"):
        R.peephole_bptt(y, g, c, tc, up, *ps, np.zeros_like(g), np.zeros((b, h)),
                        np.zeros((b, h)), hn, None)
    with pytest.raises(ValueError, match=r"dh_parts has shape \(2, 2\), expected \(2, 8\)"):
        R.peephole_bptt(y, g, c, tc, up, *ps, np.zeros_like(g), np.zeros((b, h)),
                        np.zeros((b, h)), hn, np.zeros((b, h)))
    with pytest.raises(ValueError, match="state columns 6:10 are outside the 8 of states"):
        R.recurrent_acc_hidden(hn, g, 0, np.zeros((h, 4)), 1.0, 6)


# -- masks that hold over the sequence (LSTM and GRU with dropout), column blocks ------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_mask_over_time_and_its_adjoint(dtype, rng):
    x = rng.standard_normal((3, 5, 4)).astype(dtype)
    m = rng.standard_normal((2, 3, 4)).astype(dtype)
    y = _nan((2, 3, 5, 4), dtype)
    R.mask_over_time(x, m, y)
    np.testing.assert_array_equal(y, x[None] * m[:, :, None, :])
    s = _nan((3, 5, 4), dtype)
    R.masked_sum_over_time(y, m, s)
    np.testing.assert_allclose(s, (y * m[:, :, None, :]).sum(0), **_tol(dtype))
    R.masked_sum_over_time(y, None, s)
    np.testing.assert_allclose(s, y.sum(0), **_tol(dtype))
    out = _nan((7, 4), dtype)
    a, b = rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal((4, 4)).astype(dtype)
    R.stack_rows(out, (a, b))
    np.testing.assert_array_equal(out, np.concatenate([a, b]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_blocks_of_the_projection_and_its_gradients(dtype, rng):
    t, b, i, h = 3, 2, 5, 4
    x = rng.standard_normal((t, b, i)).astype(dtype)
    w = rng.standard_normal((h, i)).astype(dtype)
    bias = rng.standard_normal(h).astype(dtype)
    g = np.zeros((t, b, 3 * h), dtype)
    R.recurrent_project(x, g, w, bias, None, h)
    want = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    np.testing.assert_allclose(g[..., h:2 * h], want, **_tol(dtype))
    assert not g[..., :h].any() and not g[..., 2 * h:].any()
    dg = rng.standard_normal((t, b, 3 * h)).astype(dtype)
    gi = _nan((t, b, i), dtype)
    R.recurrent_update_grad_input(dg, gi, w, 2 * h)
    np.testing.assert_allclose(gi, dg[..., 2 * h:].astype(np.float64) @ w, **_tol(dtype))
    gw, gb = np.zeros_like(w), np.zeros_like(bias)
    R.recurrent_acc_input(x, dg, gw, gb, None, 1.0, 1.0, h)
    blk = dg[..., h:2 * h].reshape(-1, h).astype(np.float64)
    np.testing.assert_allclose(gw, blk.T @ x.reshape(-1, i), **_tol(dtype))
    np.testing.assert_allclose(gb, blk.sum(0), **_tol(dtype))
    with pytest.raises(ValueError, match="columns 10:14 are outside the 12 of gates"):
        R.recurrent_project(x, g, w, bias, None, 10)


def _lstm_masked_reference(xp, u, hm):
    """Feature-major LSTM over the projection xp (4H, T, B) with hidden masks hm (4H, B)."""
    g4, t_, b_ = xp.shape
    h_ = g4 // 4
    h = np.zeros((h_, b_))
    c = np.zeros((h_, b_))
    hs = np.zeros((h_, t_, b_))
    for t in range(t_):
        z = xp[:, t].astype(np.float64).copy()
        for k in range(4):
            z[k * h_:(k + 1) * h_] += u[k * h_:(k + 1) * h_] @ (h * hm[k * h_:(k + 1) * h_])
        i, g, f, o = _sig(z[:h_]), np.tanh(z[h_:2 * h_]), _sig(z[2 * h_:3 * h_]), _sig(z[3 * h_:])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[:, t] = h
    return hs


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_lstm_steps(dtype, rng):
    h, t, b = 3, 4, 2
    xp = rng.standard_normal((4 * h, t, b)).astype(dtype)
    u = rng.standard_normal((4 * h, h)).astype(dtype)
    hm = (rng.random((4 * h, b)) > 0.4).astype(dtype) / dtype(0.6)
    gt, c, tc = _nan((t, 4 * h, b), dtype), _nan((t, h, b), dtype), _nan((t, h, b), dtype)
    hs, hd = _nan((h, t, b), dtype), _nan((4 * h, t, b), dtype)
    R.lstm_steps(xp, gt, c, tc, hs, u, hm, hd)
    np.testing.assert_allclose(hs, _lstm_masked_reference(xp, u.astype(np.float64), hm),
                               **_tol(dtype))
    for k in range(4):
        np.testing.assert_allclose(hd[k * h:(k + 1) * h, :t - 1],
                                   hs[:, :t - 1] * hm[k * h:(k + 1) * h, None], **_tol(dtype))
    with pytest.raises(ValueError, match="h_mask and dropped go together"):
        R.lstm_steps(xp, gt, c, tc, hs, u, hm, None)
    with pytest.raises(ValueError, match="h_mask and dh_parts go together"):
        R.lstm_bptt(hs, gt, c, tc, u, np.zeros((h, 4 * h), dtype), np.zeros_like(xp),
                    np.zeros((h, b), dtype), np.zeros((h, b), dtype), hm, None)
    with pytest.raises(ValueError, match=r"h_mask has shape \(12, 3\), expected \(12, 2\)"):
        R.lstm_steps(xp, gt, c, tc, hs, u, np.zeros((4 * h, 3), dtype), hd)


def test_masked_gru_refusals():
    b, t, h = 2, 3, 2
    y, g, rh, hp = np.zeros((b, t, h)), np.zeros((t, b, 3 * h)), np.zeros((t, b, h)), \
        np.zeros((t, b, h))
    urz, un = np.zeros((2 * h, h)), np.zeros((h, h))
    with pytest.raises(ValueError, match="h_mask and dropped go together"):
        R.gru_steps(y, g, rh, hp, urz, un, np.zeros((b, 3 * h)), None)
    with pytest.raises(ValueError, match=r"dropped has shape \(3, 2, 2\), expected"):
        R.gru_steps(y, g, rh, hp, urz, un, np.zeros((b, 3 * h)), np.zeros((t, b, h)))
    with pytest.raises(ValueError, match=r"dh_parts has shape \(2, 2\), expected \(2, 4\)"):
        R.gru_bptt(y, g, hp, urz, un, np.zeros_like(g), np.zeros((b, h)), np.zeros((b, h)),
                   np.zeros((b, 3 * h)), np.zeros((b, h)))
    with pytest.raises(ValueError, match="blocks have 3 rows in all, output 4"):
        R.stack_rows(np.zeros((4, 2)), (np.zeros((1, 2)), np.zeros((2, 2))))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3, 3\), expected \(2, 3, 4\)"):
        R.mask_over_time(np.zeros((3, 5, 4)), np.zeros((2, 3, 3)), np.zeros((2, 3, 5, 4)))
