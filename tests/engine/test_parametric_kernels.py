"""Kernels of Cosine, Maxout, Highway and Bilinear against NumPy (outputs start as NaN so
that an unwritten element fails); refusals and their messages."""

import numpy as np
import pytest
from pymodules.engine import parametric as k

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4,), (1, 4), (5, 4), (0, 4)])
def test_cosine(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((3, 4)).astype(dtype)
    n = shape[0] if len(shape) == 2 else 1
    y, wn, xn = _nan(shape[:-1] + (3,), dtype), _nan(3, dtype), _nan(n, dtype)
    k.cosine_update_output(x, y, w, wn, xn)
    x2, w64 = x.reshape(n, 4).astype(np.float64), w.astype(np.float64)
    rwn = np.sqrt((w64 ** 2).sum(1)) + 1e-12
    rxn = np.sqrt((x2 ** 2).sum(1)) + 1e-12
    ry = x2 @ w64.T / rwn / rxn[:, None]
    np.testing.assert_allclose(y.reshape(n, 3), ry, **_tol(dtype))
    np.testing.assert_allclose(wn, rwn, **_tol(dtype))
    go = rng.standard_normal(y.shape).astype(dtype)
    g2 = go.reshape(n, 3).astype(np.float64)
    gi, s = _nan(shape, dtype), _nan((n, 3), dtype)
    k.cosine_update_grad_input(x, y, go, gi, w, wn, xn, s)
    dot = (g2 * ry).sum(1)
    ref = ((g2 / rwn) @ w64 - x2 * (dot / rxn)[:, None]) / rxn[:, None]
    np.testing.assert_allclose(gi.reshape(n, 4), ref, **_tol(dtype))
    gw = np.ones((3, 4), dtype)
    k.cosine_acc_grad_parameters(x, y, go, gw, w, wn, xn, s, _nan((n, 4), dtype), 2.0)
    u = (g2 * ry).sum(0) / rwn
    refw = (g2 / rwn).T @ (x2 / rxn[:, None]) - w64 * (u / rwn)[:, None]
    np.testing.assert_allclose(gw, 1 + 2.0 * refw, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6,), (4, 6), (0, 6)])
def test_maxout_select_and_scatter(shape, dtype, rng):
    pieces, m = 3, 2
    z = rng.standard_normal(shape).astype(dtype)
    y = _nan(shape[:-1] + (m,), dtype)
    idx = np.full(y.shape, -1, np.int32)
    k.maxout_update_output(z, y, idx, pieces)
    v = z.reshape(shape[:-1] + (pieces, m))
    np.testing.assert_array_equal(y, v.max(-2))
    np.testing.assert_array_equal(idx, v.argmax(-2))
    go = rng.standard_normal(y.shape).astype(dtype)
    gz = _nan(shape, dtype)
    k.maxout_update_grad_input(go, idx, gz, pieces)
    ref = np.zeros(shape[:-1] + (pieces, m))
    np.put_along_axis(ref, idx[..., None, :].astype(np.intp), go[..., None, :], -2)
    np.testing.assert_array_equal(gz, ref.reshape(shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4,), (3, 4)])
def test_highway(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    zt = rng.standard_normal(shape).astype(dtype)
    h = rng.standard_normal(shape).astype(dtype)
    gate, y = zt.copy(), _nan(shape, dtype)
    k.highway_update_output(x, gate, h, y)
    t = 1 / (1 + np.exp(-zt.astype(np.float64)))
    np.testing.assert_allclose(gate, t, **_tol(dtype))
    np.testing.assert_allclose(y, t * h + (1 - t) * x, **_tol(dtype))
    go = rng.standard_normal(shape).astype(dtype)
    gi, gg, gh = _nan(shape, dtype), _nan(shape, dtype), _nan(shape, dtype)
    k.highway_update_grad_input(x, gate, h, go, gi, gg, gh)
    g = gate.astype(np.float64)
    np.testing.assert_allclose(gi, go * (1 - g), **_tol(dtype))
    np.testing.assert_allclose(gg, go * (h - x) * g * (1 - g), **_tol(dtype))
    np.testing.assert_allclose(gh, go * g, **_tol(dtype))
    wt = rng.standard_normal((4, 4)).astype(dtype)
    wh = rng.standard_normal((4, 4)).astype(dtype)
    before = gi.astype(np.float64)
    k.highway_acc_grad_input(gg, gh, wt, wh, gi)
    np.testing.assert_allclose(gi, before + gg.astype(np.float64) @ wt + gh @ wh.astype(
        np.float64), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [None, 1, 4, 0])
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear(n, bias, dtype, rng):
    lead = () if n is None else (n,)
    rows = 1 if n is None else n
    x1 = rng.standard_normal(lead + (3,)).astype(dtype)
    x2 = rng.standard_normal(lead + (5,)).astype(dtype)
    w = rng.standard_normal((2, 3, 5)).astype(dtype)
    b = rng.standard_normal(2).astype(dtype) if bias else None
    y, s = _nan(lead + (2,), dtype), _nan((rows, 2, 5), dtype)
    k.bilinear_update_output(x1, x2, y, w, b, s)
    w64 = w.astype(np.float64)
    ref = np.einsum("...i,oij,...j->...o", x1.astype(np.float64), w64, x2) + (0 if b is None
                                                                            else b)
    np.testing.assert_allclose(y, ref, **_tol(dtype))
    go = rng.standard_normal(y.shape).astype(dtype)
    g1, g2 = _nan(x1.shape, dtype), _nan(x2.shape, dtype)
    k.bilinear_update_grad_input(x1, x2, go, g1, g2, w, s)
    np.testing.assert_allclose(g1, np.einsum("...o,oij,...j->...i", go.astype(np.float64), w64,
                                             x2), **_tol(dtype))
    np.testing.assert_allclose(g2, np.einsum("...o,oij,...i->...j", go.astype(np.float64), w64,
                                             x1), **_tol(dtype))
    gw, gb = np.ones((2, 3, 5), dtype), np.ones(2, dtype)
    k.bilinear_acc_grad_parameters(x1, x2, go, gw, gb, s, 0.5, 2.0)
    outer = np.einsum("ro,ri,rj->oij", go.reshape(rows, 2).astype(np.float64),
                      x1.reshape(rows, 3), x2.reshape(rows, 5))
    np.testing.assert_allclose(gw, 1 + 0.5 * outer, **_tol(dtype))
    np.testing.assert_allclose(gb, 1 + 2.0 * go.reshape(rows, 2).sum(0), **_tol(dtype))


@pytest.mark.parametrize("call, error, match", [
    (lambda: k.cosine_update_output(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 3)),
                                    np.ones(2), np.ones(3)),
     ValueError, r"inputNorm has shape \(3,\), expected \(2,\)"),
    (lambda: k.maxout_update_output(np.ones((2, 5)), np.ones((2, 2)),
                                    np.ones((2, 2), np.int32), 2),
     ValueError, "pre has 5 features, not a multiple of 2 pieces"),
    (lambda: k.maxout_update_output(np.ones((2, 4)), np.ones((2, 2)), np.ones((2, 2)), 2),
     TypeError, "indices has dtype float64, expected int32"),
    (lambda: k.maxout_update_grad_input(np.ones((1, 2)), np.full((1, 2), 5, np.int32),
                                        np.ones((1, 4)), 2),
     ValueError, r"indices holds 5 at 0, outside \[0, 2\)"),
    (lambda: k.highway_update_output(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)),
                                     np.ones((2, 3))),
     ValueError, r"transform has shape \(2, 4\), expected \(2, 3\)"),
    (lambda: k.highway_acc_grad_input(np.ones((2, 3)), np.ones((2, 3)), np.ones((3, 3)),
                                      np.ones((3, 2)), np.ones((2, 3))),
     ValueError, r"weightH has shape \(3, 2\), expected \(3, 3\)"),
    (lambda: k.bilinear_update_output(np.ones((2, 3)), np.ones((2, 5)), np.ones((2, 2)),
                                      np.ones((2, 3, 4)), None, np.ones((2, 2, 4))),
     ValueError, "input 1 has 5 features, expected 4"),
    (lambda: k.bilinear_update_output(np.ones((2, 3)), np.ones(4), np.ones((2, 2)),
                                      np.ones((2, 3, 4)), None, np.ones((2, 2, 4))),
     ValueError, "input 1 must be 2-D, got 1-D"),
])
def test_refusals(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_overlap_is_refused():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="output overlaps input"):
        k.highway_update_output(x, np.ones((2, 3)), np.ones((2, 3)), x)
    s = np.ones((2, 2, 4))
    with pytest.raises(ValueError, match="output overlaps scratch"):
        k.bilinear_update_output(x, np.ones((2, 4)), s.reshape(-1)[:4].reshape(2, 2),
                                 np.ones((2, 3, 4)), None, s)
