"""The float32 LSTM over [x(t), h(t-1)] (lstm_xh_forward, lstm_xh_backward, lstm_xh_acc: one
product per step each way on packed weights: panels of 24 columns in blocks of 4 batch rows,
or on a core with AVX-512 of 48 columns in blocks of 8) against the float64 module, which
runs the feature-major kernels: batches 1 to 21 (every row tail of the blocks), sizes whose
I + H and 4H are not multiples of the panels, K beyond one 128 chunk, NaN, and the kernels'
refusals; each with the core's panels and with the 24-column ones. The layer takes this path
beside OpenBLAS's AVX2 kernels or on a core with AVX-512 (``XH_PANELS``); these tests make it
take it on any core."""

import numpy as np
import pytest
from pymodules.engine import recurrent as R
from pymodules.engine.linear import OWN_KERNELS, own_kernels
from tolerance import EPS32

import pymodules as pm
from pymodules.nn import recurrent


@pytest.fixture(autouse=True)
def _xh_panels(monkeypatch):
    """The layer runs the panels beside OpenBLAS's AVX2 kernels or with AVX-512; here, on
    any core."""
    monkeypatch.setattr(recurrent, "XH_PANELS", True)


@pytest.fixture(autouse=True, params=["core's panels", "24-column panels"])
def width(request):
    """The panels as this core runs them, then (on a core with AVX-512 another path) the
    24-column ones."""
    R.lstm_xh_allow_wide(request.param == "core's panels")
    yield R.lstm_xh_panels(1, 1)[2]
    R.lstm_xh_allow_wide(True)


def _pair(i, h):
    r32 = pm.Recurrent().add(pm.LSTM(i, h))
    r64 = pm.Recurrent().add(pm.LSTM(i, h, dtype=np.float64))
    for w32, w64 in zip(r32.parameters()[0], r64.parameters()[0], strict=True):
        w64[...] = w32
    return r32, r64


def _run(rec, x, go):
    rec.zeroGradParameters()
    y = rec.forward(x.astype(rec.modules[0].dtype)).copy()
    gi = rec.backward(x.astype(y.dtype), go.astype(y.dtype)).copy()
    return [y, gi] + [g.copy() for g in rec.parameters()[1]]


def test_the_panels_run_beside_avx2_kernels_or_with_avx512(monkeypatch):
    assert own_kernels("Haswell") and own_kernels("Zen")
    assert not own_kernels("SkylakeX") and not own_kernels("Cooperlake")
    assert not own_kernels(None) and not own_kernels("Prescott")
    monkeypatch.undo()
    R.lstm_xh_allow_wide(True)
    assert recurrent.XH_PANELS == (OWN_KERNELS or R.lstm_xh_panels(1, 1)[2] == 48)


def test_the_numbers_do_not_depend_on_the_panels(rng):
    """The 48-column panels (AVX-512) run each sum as the 24-column ones do on that core: the
    same bits, for batches across the 8- and 4-row blocks and sizes with partial panels."""
    for b, t, i, h in [(16, 5, 64, 128), (5, 3, 7, 13), (1, 4, 30, 9), (21, 3, 25, 24),
                       (9, 3, 50, 100), (13, 2, 1, 1)]:
        x = rng.standard_normal((b, t, i))
        go = rng.standard_normal((b, t, h))
        got = []
        for allow in (True, False):
            R.lstm_xh_allow_wide(allow)
            r32, _ = _pair(i, h)
            r32.modules[0].weight[...] = np.linspace(-1, 1, 4 * h * i).reshape(4 * h, i)
            r32.modules[0].hiddenWeight[...] = np.cos(np.arange(4 * h * h)).reshape(4 * h, h)
            r32.modules[0].bias[...] = np.sin(np.arange(4 * h))
            got.append(_run(r32, x, go))
        R.lstm_xh_allow_wide(True)
        for a, c in zip(*got, strict=True):
            np.testing.assert_array_equal(a, c)


def test_without_the_panels_the_float32_module_runs_the_feature_major_path(monkeypatch, rng):
    r32, _ = _pair(5, 7)
    x, go = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 7))
    want = _run(r32, x, go)
    assert r32.modules[0]._xhRan
    monkeypatch.setattr(recurrent, "XH_PANELS", False)
    got = _run(r32, x, go)
    assert not r32.modules[0]._xhRan
    tol = 4 * ((5 + 4 * 7) * 4 * 3 + 2) * EPS32  # the longest reductions, over the batch
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1, np.abs(w).max()))


@pytest.mark.parametrize(("i", "h", "t"), [(1, 1, 1), (7, 13, 3), (30, 9, 4), (25, 24, 2),
                                           (50, 100, 3)])
@pytest.mark.parametrize("b", list(range(1, 22, 2)) + [16, 20])
def test_float32_xh_path_matches_the_float64_module(b, i, h, t, rng):
    r32, r64 = _pair(i, h)
    x = rng.standard_normal((b, t, i))
    go = rng.standard_normal((b, t, h))
    got, want = _run(r32, x, go), _run(r64, x, go)
    assert r32.modules[0]._xhRan and not r64.modules[0]._xhRan
    k = (i + 4 * h) * t  # the longest reductions, carried over the steps
    for what, g, w in zip(["output", "gradInput", "gradW_ih", "gradB_ih", "gradW_hh"], got,
                          want, strict=True):
        red = k * b if what.startswith("grad") and what != "gradInput" else k
        tol = 4 * (red + 2) * EPS32
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1, np.abs(w).max()),
                                   err_msg=what)


def test_nan_in_one_hidden_weight_reaches_every_later_state(rng):
    b, t, i, h = 6, 3, 5, 7
    r32, _ = _pair(i, h)
    cell = r32.modules[0]
    cell.hiddenWeight[2 * h + 1, 3] = np.nan  # forget gate of unit 1, reading unit 3
    x = rng.standard_normal((b, t, i)).astype(np.float32)
    y = r32.forward(x)
    assert not np.isnan(y[:, 0]).any()
    assert np.isnan(y[:, 1:, 1]).all()
    gi = r32.backward(x, np.ones_like(y))
    assert np.isnan(gi).any()


def test_refusals():
    i, h, b, t = 3, 2, 4, 5
    pf, pb, wd = R.lstm_xh_panels(i, h)
    assert (pf, pb) == (1, 2)  # the backward's: one panel and one of room to align it
    f = np.float32
    w, u, bias = np.zeros((4 * h, i), f), np.zeros((4 * h, h), f), np.zeros(4 * h, f)
    x = np.zeros((b, t, i), f)
    args = [x, w, u, bias, np.zeros((pf, i + h, wd), f), np.zeros(wd * pf, f),
            np.zeros((t, b, i + h), f), np.zeros((t, b, wd * pf), f), np.zeros((t, b, h), f),
            np.zeros((t, b, h), f), np.zeros((b, t, h), f)]
    R.lstm_xh_forward(*args)
    with pytest.raises(TypeError, match="W_ih"):
        R.lstm_xh_forward(x, w.astype(np.float64), *args[2:])
    with pytest.raises(ValueError, match="input has 4 features, expected 3"):
        R.lstm_xh_forward(np.zeros((b, t, 4), f), *args[1:])
    with pytest.raises(ValueError, match=r"packed has shape"):
        R.lstm_xh_forward(*args[:4], np.zeros((pf, i + h, 8), f), *args[5:])
    with pytest.raises(ValueError, match="cell overlaps tanh_cell in memory"):
        R.lstm_xh_forward(*args[:9], args[8], args[10])
    go, gi = np.zeros((b, t, h), f), np.zeros((b, t, i), f)
    bargs = [go, w, u, np.zeros((pb, 4 * h, wd), f), args[7], args[8], args[9],
             np.zeros((t, b, wd * pf), f), np.zeros((b, wd * pb), f), np.zeros((b, h), f), gi]
    R.lstm_xh_backward(*bargs)
    with pytest.raises(ValueError, match=r"dxh has shape"):
        R.lstm_xh_backward(*bargs[:8], np.zeros((b, 8), f), *bargs[9:])
    with pytest.raises(ValueError, match="d_gates overlaps dc in memory"):
        R.lstm_xh_backward(*bargs[:9], bargs[7].reshape(-1)[:b * h].reshape(b, h), gi)
    with pytest.raises(ValueError, match=r"d_gates has shape"):
        R.lstm_xh_backward(*bargs[:7], np.zeros((t, b, 4 * h), f), *bargs[8:])
    with pytest.raises(ValueError, match=r"d_gates has 2 columns, fewer than the 4 \* 2"):
        R.lstm_xh_acc(args[6], np.zeros((t, b, h), f), np.zeros((4 * h, i), f),
                      np.zeros(4 * h, f), np.zeros((4 * h, h), f), 1.0, 1.0)


@pytest.mark.parametrize("own", [True, False])
def test_weight_gradients_by_own_kernel_and_by_blas_agree_with_float64(own, rng, monkeypatch):
    """lstm_xh_acc runs pm_rec_wgrad up to XH_OWN_WGRAD multiply-adds, two GEMMs beyond (the
    48-column panels: the own kernel at any size): both against the float64 module,
    accumulating onto earlier gradients; sizes with a panel across the W_ih / W_hh boundary, a
    partial last panel, 4H not a multiple of the gate rows of a block, and more than one
    128-row chunk of T B."""
    monkeypatch.setattr(R, "XH_OWN_WGRAD", 1 << 62 if own else 0)
    b, t, i, h = 7, 23, 30, 9
    r32, r64 = _pair(i, h)
    x = rng.standard_normal((b, t, i))
    go = rng.standard_normal((b, t, h))
    for rec in (r32, r64):
        rec.zeroGradParameters()
        y = rec.forward(x.astype(rec.modules[0].dtype))
        rec.backward(x.astype(y.dtype), go.astype(y.dtype))
        rec.backward(x.astype(y.dtype), go.astype(y.dtype))  # accumulates
    tol = 4 * ((i + 4 * h) * t * b + 2) * EPS32
    for g, w in zip(r32.parameters()[1], r64.parameters()[1], strict=True):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(1, np.abs(w).max()))


def _at(shape, offset):
    """A zeroed float32 array of ``shape`` starting ``offset`` floats past a 64-byte
    boundary (NumPy's own arrays start on 16 bytes)."""
    n = int(np.prod(shape))
    raw = np.zeros(n + 32, np.float32)
    skip = (-raw.ctypes.data % 64) // 4 + offset
    return raw[skip:skip + n].reshape(shape)


@pytest.mark.parametrize(("i", "h"), [(64, 128), (7, 13), (5, 6), (3, 10)])
def test_results_do_not_depend_on_where_the_buffers_start(i, h, rng):
    """The kernels move the packed panels, dxh's rows and the gate rows to a 64-byte
    boundary where their buffers leave room (4H not a multiple of 24, one spare backward
    panel): the same numbers, bit for bit, from buffers at every 16-byte offset, and
    lstm_xh_acc finds d_gates where lstm_xh_backward left them."""
    b, t = 5, 3
    pf, pb, wd = R.lstm_xh_panels(i, h)
    x = rng.standard_normal((b, t, i)).astype(np.float32)
    go = rng.standard_normal((b, t, h)).astype(np.float32)
    w = (0.3 * rng.standard_normal((4 * h, i))).astype(np.float32)
    u = (0.3 * rng.standard_normal((4 * h, h))).astype(np.float32)
    bias = rng.standard_normal(4 * h).astype(np.float32)
    results = []
    for offset in (0, 4, 8, 12):
        xh, z = _at((t, b, i + h), offset), _at((t, b, wd * pf), offset)
        c, tc = _at((t, b, h), offset), _at((t, b, h), offset)
        y, gi = _at((b, t, h), offset), _at((b, t, i), offset)
        dg = _at((t, b, wd * pf), offset)
        gw, gu, gb = _at((4 * h, i), offset), _at((4 * h, h), offset), _at((4 * h,), offset)
        R.lstm_xh_forward(x, w, u, bias, _at((pf, i + h, wd), offset), _at((wd * pf,), offset),
                          xh, z, c, tc, y)
        R.lstm_xh_backward(go, w, u, _at((pb, 4 * h, wd), offset), z, c, tc, dg,
                           _at((b, wd * pb), offset), _at((b, h), offset), gi)
        R.lstm_xh_acc(xh, dg, gw, gb, gu, 1.0, 1.0)
        results.append([a.copy() for a in (y, c, gi, gw, gu, gb)])
    for other in results[1:]:
        for a, a0 in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(a, a0)
    r64 = pm.Recurrent().add(pm.LSTM(i, h, dtype=np.float64))
    cell = r64.modules[0]
    cell.weight[...], cell.hiddenWeight[...], cell.bias[...] = w, u, bias
    r64.zeroGradParameters()
    want = r64.forward(x.astype(np.float64))
    tol = 4 * ((i + 4 * h) * t + 2) * EPS32
    np.testing.assert_allclose(results[0][0], want, rtol=tol, atol=tol)
