"""The kernels of engine/transformer.pyx against NumPy, and their refusals."""

import numpy as np
import pytest
from pymodules.engine import transformer as k


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _heads(a, heads):
    b, t, h = a.shape
    return a.reshape(b, t, heads, h // heads).transpose(0, 2, 1, 3)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("bias_shape", [(2, 1, 1, 4), (1, 3, 5, 4), (2, 3, 1, 4)])
def test_attention_kernels_against_numpy(rng, dtype, tol, bias_shape):
    b, tq, tk, h, heads = 2, 5, 4, 6, 3
    q, key, v = (rng.standard_normal(s).astype(dtype) for s in
                 ((b, tq, h), (b, tk, h), (b, tk, h)))
    bias = rng.standard_normal(bias_shape).astype(dtype)
    scale = 0.7
    p = _nan((b, heads, tq, tk), dtype)
    k.attention_scores(q, key, bias, p, scale)
    want_p = _softmax(scale * _heads(q, heads) @ _heads(key, heads).transpose(0, 1, 3, 2)
                      + bias)
    np.testing.assert_allclose(p, want_p, rtol=tol, atol=tol)
    c = _nan((b, tq, h), dtype)
    k.attention_context(p, v, c)
    np.testing.assert_allclose(c, (p @ _heads(v, heads)).transpose(0, 2, 1, 3).reshape(b, tq, h),
                               rtol=tol, atol=tol)
    gc = rng.standard_normal((b, tq, h)).astype(dtype)
    gp, gv = _nan(p.shape, dtype), _nan(v.shape, dtype)
    k.attention_context_backward(p, v, gc, gp, gv)
    np.testing.assert_allclose(gp, _heads(gc, heads) @ _heads(v, heads).transpose(0, 1, 3, 2),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(
        gv, (p.transpose(0, 1, 3, 2) @ _heads(gc, heads)).transpose(0, 2, 1, 3).reshape(v.shape),
        rtol=tol, atol=tol)
    gs, gq, gk, gb = (_nan(s, dtype) for s in (p.shape, q.shape, key.shape, bias.shape))
    k.attention_scores_backward(p, gp, q, key, gs, gq, gk, gb, scale)
    want_s = p * (gp - (gp * p).sum(-1, keepdims=True))
    np.testing.assert_allclose(gs, want_s, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        gq, (scale * want_s @ _heads(key, heads)).transpose(0, 2, 1, 3).reshape(q.shape),
        rtol=tol, atol=tol)
    np.testing.assert_allclose(
        gk, (scale * want_s.transpose(0, 1, 3, 2) @ _heads(q, heads)).transpose(0, 2, 1, 3)
        .reshape(key.shape), rtol=tol, atol=tol)
    axes = tuple(i for i in range(3) if bias_shape[i] == 1)
    np.testing.assert_allclose(gb, want_s.sum(axes, keepdims=True), rtol=tol, atol=tol)


def test_nan_propagates(rng):
    q = rng.standard_normal((1, 2, 4))
    q[0, 1, 0] = np.nan
    p = _nan((1, 2, 2, 3), np.float64)
    k.attention_scores(q, rng.standard_normal((1, 3, 4)), np.zeros((1, 1, 1, 3)), p, 1.0)
    assert np.isnan(p[0, 0, 1]).all() and not np.isnan(p[0, :, 0]).any()


def test_biases_and_positions(rng):
    c = _nan((1, 1, 4, 4), np.float32)
    k.causal_bias(c)
    np.testing.assert_array_equal(c[0, 0], np.triu(np.full((4, 4), -1e9, np.float32), 1))
    ids = np.array([[3, 0, 1], [0, 0, 2]])
    pb = _nan((2, 1, 1, 3), np.float64)
    k.padding_bias(ids, pb, 0.0)
    np.testing.assert_array_equal(pb[:, 0, 0], np.where(ids == 0, -1e9, 0))
    t = _nan((5, 7), np.float64)
    k.position_encoding(t)
    inc = np.log(1e4) / 2
    s = np.arange(5)[:, None] * np.exp(-np.arange(3) * inc)
    np.testing.assert_allclose(t, np.concatenate([np.sin(s), np.cos(s), np.zeros((5, 1))], 1),
                               rtol=1e-14, atol=1e-15)
    e = rng.standard_normal((2, 3, 7))
    tm = rng.standard_normal((3, 7))
    for shift in (False, True):
        y = _nan(e.shape, np.float64)
        k.position_update_output(e, ids.astype(np.float32), tm, y, 2.0, shift, 0.0)
        masked = np.where((ids == 0)[..., None], 0, 2 * e)
        if shift:
            masked = np.concatenate([np.zeros((2, 1, 7)), masked[:, :-1]], 1)
        np.testing.assert_allclose(y, tm + masked, rtol=1e-14)
        g = rng.standard_normal(e.shape)
        gi = _nan(e.shape, np.float64)
        k.position_update_grad_input(ids, g, gi, 2.0, shift, 0.0)
        want = 2 * (np.concatenate([g[:, 1:], np.zeros((2, 1, 7))], 1) if shift else g)
        np.testing.assert_allclose(gi, np.where((ids == 0)[..., None], 0, want), rtol=1e-14)


def test_refusals(rng):
    q, key = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    bias, p = np.zeros((2, 1, 1, 5)), np.empty((2, 2, 3, 5))
    with pytest.raises(TypeError, match="query has dtype float32, expected float64"):
        k.attention_scores(q.astype(np.float32), key, bias, p, 1.0)
    with pytest.raises(ValueError, match=r"key has shape \(2, 5, 3\), expected \(2, time, 4\)"):
        k.attention_scores(q, key[..., :3].copy(), bias, p, 1.0)
    with pytest.raises(ValueError, match="hidden size 4 is not divisible by 3 heads"):
        k.attention_scores(q, key, bias, np.empty((2, 3, 3, 5)), 1.0)
    with pytest.raises(ValueError, match=r"bias has shape \(2, 1, 2, 5\)"):
        k.attention_scores(q, key, np.zeros((2, 1, 2, 5)), p, 1.0)
    with pytest.raises(ValueError, match="not C-contiguous"):
        k.attention_scores(q, key, bias, np.empty((2, 2, 5, 3)).transpose(0, 1, 3, 2), 1.0)
    with pytest.raises(ValueError, match="probs overlaps key"):
        buf = np.empty(200)
        k.attention_scores(q, buf[:40].reshape(2, 5, 4), bias, buf[:60].reshape(2, 2, 3, 5), 1.0)
    with pytest.raises(ValueError, match="query is empty"):
        k.attention_scores(np.empty((2, 0, 4)), key, bias, np.empty((2, 2, 0, 5)), 1.0)
    with pytest.raises(ValueError, match=r"context has shape \(2, 3, 5\)"):
        k.attention_context(p, key, np.empty((2, 3, 5)))
    with pytest.raises(TypeError, match="ids has dtype uint8"):
        k.padding_bias(np.zeros((1, 3), np.uint8), np.empty((1, 1, 1, 3)), 0.0)
    with pytest.raises(ValueError, match=r"output has shape \(1, 1, 1, 4\), expected "
                                         r"\(1, 1, 1, 3\)"):
        k.padding_bias(np.zeros((1, 3), int), np.empty((1, 1, 1, 4)), 0.0)
    with pytest.raises(ValueError, match=r"timing has shape \(2, 4\), expected \(3, 4\)"):
        k.position_update_output(q, np.zeros((2, 3), int), np.zeros((2, 4)), np.empty(q.shape),
                                 1.0, True, 0.0)
    with pytest.raises(ValueError, match="ids must be 2-D"):
        k.position_update_grad_input(np.zeros(6, int), q, np.empty(q.shape), 1.0, True, 0.0)
    with pytest.raises(ValueError, match=r"output has shape \(1, 1, 3, 4\)"):
        k.causal_bias(np.empty((1, 1, 3, 4)))
