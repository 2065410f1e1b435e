"""The LSTM's per-step products on engine's own kernel (_narrow.h, taken when lstm_steps gets
``h_step`` and lstm_bptt ``dg_step``) against the BLAS path of the same kernels and a NumPy
float64 reference: odd hidden sizes (M = 4H and K = H not multiples of the 6-row and 8- or
16-column blocks), batches 1 to 20 (every column tail), masks, NaN, and a module that runs
it allocating nothing in the steady state."""

import tracemalloc

import numpy as np
import pytest
from pymodules.engine import recurrent as R
from tolerance import EPS32

import pymodules as pm
from pymodules.nn import recurrent


@pytest.fixture(autouse=True)
def _own_products(monkeypatch):
    """The layer runs _narrow.h beside OpenBLAS's AVX2 kernels only; here, on any core."""
    monkeypatch.setattr(recurrent, "OWN_PRODUCTS", True)

DTYPES = [np.float32, np.float64]


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


def _sig(a):
    return 1 / (1 + np.exp(-a))


def _tol(dtype, k):
    """float32: a length-k reduction's bound (values here are of order 1), over the steps the
    recurrence carries it through; float64 fixed."""
    if dtype == np.float64:
        return dict(rtol=1e-11, atol=1e-12)
    return dict(rtol=(k + 2) * EPS32 * 4, atol=(k + 2) * EPS32 * 4)


def _reference(xp, u, go, hm=None):
    """Feature-major LSTM forward and backward in float64 (xp (4H, T, B) projected input,
    u (4H, H), go (H, T, B), hm (4H, B) hidden masks or None): states and gate gradients."""
    g4, nt, nb = xp.shape
    h = g4 // 4
    m = np.ones((g4, nb)) if hm is None else hm
    hs, cs, gates = np.zeros((h, nt, nb)), np.zeros((h, nt, nb)), []
    hp, c = np.zeros((h, nb)), np.zeros((h, nb))
    for t in range(nt):
        z = xp[:, t] + np.concatenate([u[k * h:(k + 1) * h] @ (hp * m[k * h:(k + 1) * h])
                                       for k in range(4)])
        i, g, f, o = _sig(z[:h]), np.tanh(z[h:2 * h]), _sig(z[2 * h:3 * h]), _sig(z[3 * h:])
        c = f * c + i * g
        hp = o * np.tanh(c)
        hs[:, t], cs[:, t] = hp, c
        gates.append((i, g, f, o))
    dg = np.zeros((g4, nt, nb))
    dh, dc = np.zeros((h, nb)), np.zeros((h, nb))
    for t in range(nt - 1, -1, -1):
        i, g, f, o = gates[t]
        cp = cs[:, t - 1] if t else 0
        th = np.tanh(cs[:, t])
        dv = go[:, t] + dh
        dcs = dv * o * (1 - th ** 2) + dc
        dg[:, t] = np.concatenate([dcs * g * i * (1 - i), dcs * i * (1 - g ** 2),
                                   dcs * cp * f * (1 - f), dv * th * o * (1 - o)])
        dc = dcs * f
        dh = sum((u[k * h:(k + 1) * h].T @ dg[k * h:(k + 1) * h, t]) * m[k * h:(k + 1) * h]
                 for k in range(4))
    return hs, dg


def _run(xp, u, go, own, hm=None):
    """lstm_steps then lstm_bptt, on the own kernel (own) or BLAS: (states, d_gates)."""
    g4, nt, nb = xp.shape
    h, dt = g4 // 4, xp.dtype
    gt, c, tc, hs = (_nan(s, dt) for s in [(nt, g4, nb), (nt, h, nb), (nt, h, nb), (h, nt, nb)])
    hd = None if hm is None else _nan((g4, nt, nb), dt)
    R.lstm_steps(xp, gt, c, tc, hs, u, hm, hd, h_step=_nan((h, nb), dt) if own else None)
    dg = _nan((g4, nt, nb), dt)
    parts = None if hm is None else _nan((g4, nb), dt)
    R.lstm_bptt(go, gt, c, tc, u, _nan((h, g4), dt), dg, _nan((h, nb), dt), _nan((h, nb), dt),
                hm, parts, dg_step=_nan((g4, nb), dt) if own else None)
    return hs, dg


def _data(rng, h, nt, nb, dtype):
    xp = rng.standard_normal((4 * h, nt, nb)).astype(dtype)
    u = (rng.standard_normal((4 * h, h)) / np.sqrt(h)).astype(dtype)
    go = rng.standard_normal((h, nt, nb)).astype(dtype)
    return xp, u, go


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", [1, 5, 13])
@pytest.mark.parametrize("nb", list(range(1, 21)))
def test_own_step_products_match_blas_and_numpy(nb, h, dtype, rng):
    nt = 4
    xp, u, go = _data(rng, h, nt, nb, dtype)
    own_h, own_dg = _run(xp, u, go, True)
    blas_h, blas_dg = _run(xp, u, go, False)
    want_h, want_dg = _reference(xp.astype(np.float64), u.astype(np.float64),
                                 go.astype(np.float64))
    k = 4 * h * nt  # the longest reduction (dh: K = 4H) times the steps that carry it
    for got in (own_h, blas_h):
        np.testing.assert_allclose(got, want_h, **_tol(dtype, k))
    for got in (own_dg, blas_dg):
        np.testing.assert_allclose(got, want_dg, **_tol(dtype, k))
    np.testing.assert_allclose(own_h, blas_h, **_tol(dtype, k))
    np.testing.assert_allclose(own_dg, blas_dg, **_tol(dtype, k))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("h", "nb"), [(7, 16), (32, 16), (9, 20), (3, 32)])
def test_own_backward_products_with_hidden_masks(h, nb, dtype, rng):
    """With h_mask the forward keeps BLAS (one product per gate on the dropped states); the
    backward runs each gate's product on the own kernel."""
    nt = 3
    xp, u, go = _data(rng, h, nt, nb, dtype)
    hm = (rng.random((4 * h, nb)) > 0.3).astype(dtype) / dtype(0.7)
    own_h, own_dg = _run(xp, u, go, True, hm)
    blas_h, blas_dg = _run(xp, u, go, False, hm)
    want_h, want_dg = _reference(xp.astype(np.float64), u.astype(np.float64),
                                 go.astype(np.float64), hm.astype(np.float64))
    k = 4 * h * nt
    np.testing.assert_allclose(own_h, want_h, **_tol(dtype, k))
    np.testing.assert_allclose(own_dg, want_dg, **_tol(dtype, k))
    np.testing.assert_allclose(own_h, blas_h, **_tol(dtype, k))
    np.testing.assert_allclose(own_dg, blas_dg, **_tol(dtype, k))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nb", [3, 16, 19])
def test_nan_takes_the_same_paths_as_blas(nb, dtype, rng):
    """A NaN in one hidden weight reaches, from step 1 on, every state of the batch through
    that weight's gate row; a NaN in one projected input only its own column (batch row).
    Both paths give NaN at the same places."""
    h, nt = 5, 3
    xp, u, go = _data(rng, h, nt, nb, dtype)
    u[2 * h + 1, 3] = np.nan  # forget gate of unit 1, reading unit 3
    xp[4, 0, nb - 1] = np.nan  # gate i of unit 4, step 0, last batch row
    own_h, own_dg = _run(xp, u, go, True)
    blas_h, blas_dg = _run(xp, u, go, False)
    np.testing.assert_array_equal(np.isnan(own_h), np.isnan(blas_h))
    np.testing.assert_array_equal(np.isnan(own_dg), np.isnan(blas_dg))
    assert np.isnan(own_h[:, 2]).any() and np.isnan(own_h[:, 0, nb - 1]).any()
    assert not np.isnan(own_h[:, 0, :nb - 1]).any()
    assert np.isnan(own_dg).any()


def test_step_buffers_are_checked():
    h, nt, nb = 2, 3, 4
    xp, u = np.zeros((4 * h, nt, nb)), np.zeros((4 * h, h))
    gt, c, tc, hs = np.zeros((nt, 4 * h, nb)), np.zeros((nt, h, nb)), np.zeros((nt, h, nb)), \
        np.zeros((h, nt, nb))
    with pytest.raises(ValueError, match=r"h_step has shape \(2, 3\), expected \(2, 4\)"):
        R.lstm_steps(xp, gt, c, tc, hs, u, h_step=np.zeros((h, 3)))
    with pytest.raises(TypeError, match="h_step"):
        R.lstm_steps(xp, gt, c, tc, hs, u, h_step=np.zeros((h, nb), np.float32))
    with pytest.raises(ValueError, match="h_step overlaps cell in memory"):
        R.lstm_steps(xp, gt, c, tc, hs, u, h_step=c[0])
    dg, dh, dc = np.zeros((4 * h, nt, nb)), np.zeros((h, nb)), np.zeros((h, nb))
    with pytest.raises(ValueError, match=r"dg_step has shape \(2, 4\), expected \(8, 4\)"):
        R.lstm_bptt(hs, gt, c, tc, u, np.zeros((h, 4 * h)), dg, dh, dc,
                    dg_step=np.zeros((h, nb)))
    with pytest.raises(ValueError, match="dg_step overlaps gates_t in memory"):
        R.lstm_bptt(hs, gt, c, tc, u, np.zeros((h, 4 * h)), dg, dh, dc, dg_step=gt[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_module_batch_on_the_own_kernel_matches_its_halves_on_blas(dtype, rng):
    """Recurrent(LSTM) with a batch of 16 (own kernel, lstm_step_kernel) gives what its two
    halves of 8 (BLAS) give, and its parameter gradient is their sum."""
    assert R.lstm_step_kernel(16, 11) and not R.lstm_step_kernel(8, 11)
    cell = pm.LSTM(6, 11, dtype=dtype)
    rec = pm.Recurrent().add(cell)
    x = rng.standard_normal((16, 5, 6)).astype(dtype)
    go = rng.standard_normal((16, 5, 11)).astype(dtype)
    rec.zeroGradParameters()
    y = rec.forward(x).copy()
    gi = rec.backward(x, go).copy()
    grads = [g.copy() for g in rec.parameters()[1]]
    rec.zeroGradParameters()
    halves_y, halves_gi = [], []
    for s in (slice(0, 8), slice(8, 16)):
        halves_y.append(rec.forward(x[s]).copy())
        halves_gi.append(rec.backward(x[s], go[s]).copy())
    k = 4 * 11 * 5
    np.testing.assert_allclose(y, np.concatenate(halves_y), **_tol(dtype, k))
    np.testing.assert_allclose(gi, np.concatenate(halves_gi), **_tol(dtype, k))
    for got, want in zip(grads, rec.parameters()[1], strict=True):
        np.testing.assert_allclose(got, want, **_tol(dtype, k * 16))


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_steady_state_on_the_own_kernel_allocates_nothing(p, rng):
    rec = pm.Recurrent().add(pm.LSTM(24, 40, p=p))
    x = rng.standard_normal((16, 12, 24)).astype(np.float32)
    go = rng.standard_normal((16, 12, 40)).astype(np.float32)
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
