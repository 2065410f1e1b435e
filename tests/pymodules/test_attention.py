"""MultiHeadAttention and TransformerEncoderLayer: Jacobians, NumPy references, the PyTorch
oracle (torch.nn.MultiheadAttention / TransformerEncoderLayer, batch_first), masks, dropout,
parameters in torch's state_dict order, and errors naming the module."""

import math

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

# -- NumPy references (float64) ---------------------------------------------------------------


def _softmax_rows(s):
    hidden = np.all(s == -np.inf, axis=-1, keepdims=True)
    s = np.where(hidden, 0.0, s)
    e = np.exp(s - s.max(-1, keepdims=True))
    return np.where(hidden, 0.0, e / e.sum(-1, keepdims=True))


def mha_reference(params, heads, q, k, v, mask=None):
    """torch's multi-head attention in NumPy; mask (batch|1, time_q|1, time_k) bool."""
    w_in, b_in, w_out, b_out = (None if p is None else np.asarray(p, np.float64)
                                for p in params)
    e = w_in.shape[1]
    d = e // heads
    proj = []
    for i, x in enumerate((q, k, v)):
        y = np.asarray(x, np.float64) @ w_in[i * e:(i + 1) * e].T
        if b_in is not None:
            y = y + b_in[i * e:(i + 1) * e]
        b, t, _ = y.shape
        proj.append(y.reshape(b, t, heads, d).transpose(0, 2, 1, 3))
    s = proj[0] @ proj[1].transpose(0, 1, 3, 2) / math.sqrt(d)
    if mask is not None:
        s = np.where(mask[:, None], -np.inf, s)
    ctx = _softmax_rows(s) @ proj[2]
    b, _, t, _ = ctx.shape
    out = ctx.transpose(0, 2, 1, 3).reshape(b, t, e) @ w_out.T
    return out if b_out is None else out + b_out


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * w + b


def encoder_reference(m, x, mask=None):
    """TransformerEncoderLayer's forward (dropout 0) in NumPy from m's parameters."""
    p = [np.asarray(a, np.float64) for a in m.parameters()[0]]
    x = np.asarray(x, np.float64)
    from scipy.special import erf

    def ffn(z):
        f = z @ p[4].T + p[5]
        f = np.maximum(f, 0) if m.activation == "relu" else 0.5 * f * (1 + erf(f / math.sqrt(2)))
        return f @ p[6].T + p[7]

    def attn(z):
        return mha_reference(p[:4], m.numHeads, z, z, z, mask)

    eps = m.layerNormEps
    if m.normFirst:
        h = x + attn(_layer_norm(x, p[8], p[9], eps))
        return h + ffn(_layer_norm(h, p[10], p[11], eps))
    h = _layer_norm(x + attn(x), p[8], p[9], eps)
    return _layer_norm(h + ffn(h), p[10], p[11], eps)


def _randomised(m, rng, scale=0.5):
    """``m`` with every parameter drawn at random (biases and norms included), for tests that
    must see each of them."""
    for w in m.parameters()[0]:
        w[...] = rng.standard_normal(w.shape) * scale
    return m


class _Masked(pm.Module):
    """``inner`` with a fixed mask appended to its input (x or [query, key, value]), for the
    Jacobians with respect to the inputs that have one (its parameters are inner's)."""

    _tables = True

    def __init__(self, inner, mask):
        super().__init__(inner.dtype)
        self.inner, self.mask = inner, mask

    def _full(self, input):
        return (list(input) if isinstance(input, list) else [input]) + [self.mask]

    def _slots(self):
        yield from self.inner._slots()

    def updateOutput(self, input):
        self.output = self.inner.forward(self._full(input))
        return self.output

    def updateGradInput(self, input, gradOutput):
        gi = self.inner.updateGradInput(self._full(input), gradOutput)[:-1]
        self.gradInput = gi if isinstance(input, list) else gi[0]
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        self.inner.accGradParameters(self._full(input), gradOutput)


# -- MultiHeadAttention ---------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_mha_jacobians_self_attention(bias, rng):
    m = _randomised(pm.MultiHeadAttention(4, 2, bias=bias, dtype=np.float64), rng)
    x = rng.standard_normal((2, 3, 4))
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("kind", ["none", "attn", "padding"])
def test_mha_jacobians_of_query_key_value_with_a_fixed_mask(kind, rng):
    m = _randomised(pm.MultiHeadAttention(6, 3, dtype=np.float64), rng)
    q, k, v = (rng.standard_normal((2, t, 6)) for t in (3, 4, 4))
    mask = {"none": None, "attn": rng.random((3, 4)) < 0.4,
            "padding": np.array([[False, True, False, True], [False, False, True, True]])}[kind]
    if mask is None:
        assert_jacobian(m, [q, k, v])
        assert_jacobian(m, [q, k, v], wrt="parameters")
        return
    mask[..., 0] = False
    assert_jacobian(_Masked(m, mask), [q, k, v])
    assert_jacobian(_Masked(m, mask), [q, k, v], wrt="parameters")


def test_mha_jacobian_with_dropout_under_a_fixed_seed(rng):
    m = _randomised(pm.MultiHeadAttention(4, 2, dropout=0.3, dtype=np.float64), rng)
    x = rng.standard_normal((2, 5, 4))
    assert_jacobian(m, x, seed=11)
    assert_jacobian(m, x, wrt="parameters", seed=11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mha_against_numpy(dtype, rng):
    m = _randomised(pm.MultiHeadAttention(8, 2, dtype=dtype), rng)
    q, k, v = (rng.standard_normal((3, t, 8)).astype(dtype) for t in (5, 6, 6))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-11,
                                                                     "atol": 1e-12}
    params = m.parameters()[0]
    np.testing.assert_allclose(m.forward(q), mha_reference(params, 2, q, q, q), **tol)
    np.testing.assert_allclose(m.forward([q, k, v]), mha_reference(params, 2, q, k, v), **tol)
    attn = rng.random((5, 6)) < 0.5
    np.testing.assert_allclose(m.forward([q, k, v, attn]),
                               mha_reference(params, 2, q, k, v, attn[None]), **tol)
    pad = rng.random((3, 6)) < 0.5
    pad[1] = True  # every key of batch 1 hidden: its queries attend to nothing
    y = m.forward([q, k, v, pad])
    np.testing.assert_allclose(y, mha_reference(params, 2, q, k, v, pad[:, None]), **tol)
    np.testing.assert_allclose(y[1], np.broadcast_to(m.outProjBias, (5, 8)), **tol)
    # the 3-D forms of the masks broadcast alike
    np.testing.assert_array_equal(m.forward([q, k, v, pad[:, None]]), y)


def test_mha_a_square_mask_when_batch_equals_time_is_the_attention_mask(rng):
    m = pm.MultiHeadAttention(4, 1, dtype=np.float64)
    x = rng.standard_normal((3, 3, 4))
    mask = np.triu(np.ones((3, 3), bool), 1)
    np.testing.assert_allclose(m.forward([x, x, x, mask]),
                               mha_reference(m.parameters()[0], 1, x, x, x, mask[None]),
                               rtol=1e-12, atol=1e-13)


def _torch_mha(m, torch):
    t = torch.nn.MultiheadAttention(m.embedDim, m.numHeads, dropout=m.dropout, bias=m.withBias,
                                    batch_first=True,
                                    dtype=torch.float64 if m.dtype == np.float64 else
                                    torch.float32)
    return t


def _copy_from_torch(m, t, torch):
    """torch's flat parameters (state_dict order) into m's getParameters() vector."""
    flat = torch.cat([p.detach().reshape(-1) for p in t.state_dict().values()]).numpy()
    m.getParameters()[0][...] = flat


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["self", "cross", "attn", "padding", "no bias"])
def test_mha_matches_torch(dtype, case, torch, rng):
    m = pm.MultiHeadAttention(8, 4, bias=case != "no bias", dtype=dtype)
    t = _torch_mha(m, torch)
    assert [tuple(w.shape) for w in m.parameters()[0]] == \
        [tuple(p.shape) for p in t.state_dict().values()]
    _copy_from_torch(m, t, torch)
    if m.withBias:  # torch starts its biases at zero: give them values that count
        with torch.no_grad():
            t.in_proj_bias.normal_()
            t.out_proj.bias.normal_()
        _copy_from_torch(m, t, torch)
    q = rng.standard_normal((2, 5, 8)).astype(dtype)
    k = q if case in ("self", "no bias") else rng.standard_normal((2, 7, 8)).astype(dtype)
    v = q if case in ("self", "no bias") else rng.standard_normal((2, 7, 8)).astype(dtype)
    g = rng.standard_normal((2, 5, 8)).astype(dtype)
    kwargs, mask = {}, None
    if case == "attn":
        mask = rng.random((5, 7)) < 0.4
        kwargs["attn_mask"] = torch.from_numpy(mask)
    if case == "padding":
        mask = rng.random((2, 7)) < 0.4
        mask[0] = True
        kwargs["key_padding_mask"] = torch.from_numpy(mask)
    inp = q if case in ("self", "no bias") else [q, k, v] + ([mask] if mask is not None else [])
    y = m.forward(inp).copy()
    gi = m.backward(inp, g)
    gi = [a.copy() for a in gi[:3]] if isinstance(gi, list) else [gi.copy()]
    tq = torch.from_numpy(q.copy()).requires_grad_()
    tk = tq if k is q else torch.from_numpy(k.copy()).requires_grad_()
    tv = tq if v is q else torch.from_numpy(v.copy()).requires_grad_()
    ty = t(tq, tk, tv, need_weights=False, **kwargs)[0]
    ty.backward(torch.from_numpy(g))
    tol = {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10,
                                                                     "atol": 1e-12}
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    for a, b in zip(gi, [tq, tk, tv] if len(gi) == 3 else [tq], strict=True):
        np.testing.assert_allclose(a, b.grad.numpy(), **tol)
    for a, p in zip(m.parameters()[1], t.parameters(), strict=True):
        np.testing.assert_allclose(a, p.grad.numpy(), **tol)


def test_mha_parameters_follow_torch_state_dict():
    m = pm.MultiHeadAttention(6, 2)
    w, g = m.parameters()
    assert [a.shape for a in w] == [(18, 6), (18,), (6, 6), (6,)]
    assert w[0] is m.inProjWeight and g[3] is m.gradOutProjBias
    assert [a.shape for a in pm.MultiHeadAttention(6, 2, bias=False).parameters()[0]] == \
        [(18, 6), (6, 6)]
    # torch's initialisation: xavier in_proj_weight, U(+-1/sqrt(E)) out_proj, zero biases
    m = pm.MultiHeadAttention(64, 4)
    assert np.abs(m.inProjWeight).max() <= math.sqrt(6 / (64 + 192))
    assert np.abs(m.inProjWeight).max() > 0.9 * math.sqrt(6 / (64 + 192))
    assert np.abs(m.outProjWeight).max() <= 1 / 8
    assert not m.inProjBias.any() and not m.outProjBias.any()
    assert str(m).endswith("(64, 4 heads)")
    assert "dropout 0.1, no bias" in str(pm.MultiHeadAttention(4, 2, 0.1, False))


def test_mha_gradients_accumulate_and_scale(rng):
    m = _randomised(pm.MultiHeadAttention(4, 2, dtype=np.float64), rng)
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    m.forward(x)
    m.backward(x, g)
    once = [a.copy() for a in m.parameters()[1]]
    m.backward(x, g)
    for a, b in zip(m.parameters()[1], once, strict=True):
        # (the key bias's gradient is zero but for rounding: softmax ignores a shift)
        np.testing.assert_allclose(a, 2 * b, rtol=1e-12, atol=1e-14)
    m.zeroGradParameters()
    m.setScaleW(0.5).setScaleB(0.0)
    m.backward(x, g)
    np.testing.assert_allclose(m.gradInProjWeight, 0.5 * once[0])
    assert not m.gradInProjBias.any() and not m.gradOutProjBias.any()


def test_mha_grad_input_of_a_list_is_a_list_with_zeros_for_the_mask(rng):
    m = pm.MultiHeadAttention(4, 2, dtype=np.float64)
    q, k = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    mask = np.zeros((2, 5), bool)
    g = rng.standard_normal((2, 3, 4))
    m.forward([q, k, k])
    gi = m.backward([q, k, k], g)
    assert isinstance(gi, list) and [a.shape for a in gi] == [(2, 3, 4), (2, 5, 4), (2, 5, 4)]
    m.forward([q, k, k, mask])
    gm = m.backward([q, k, k, mask], g)
    assert len(gm) == 4 and gm[3].shape == (2, 5) and gm[3].dtype == np.float64
    assert not gm[3].any()
    for a, b in zip(gi[:3], gm[:3], strict=True):
        np.testing.assert_allclose(a, b)
    # the same key and value array: their gradients are apart, each its own
    total = rng.standard_normal((2, 5, 4))
    m.forward([q, total, total])
    split = [a.copy() for a in m.backward([q, total, total], g)]
    assert not np.allclose(split[1], split[2])


def test_mha_dropout_in_training_only(rng):
    m = pm.MultiHeadAttention(8, 2, dropout=0.5, dtype=np.float64)
    x = rng.standard_normal((2, 6, 8))
    plain = pm.MultiHeadAttention(8, 2, dtype=np.float64)
    plain.getParameters()[0][...] = m.getParameters()[0]
    want = plain.forward(x).copy()
    pm.setSeed(3)
    a = m.forward(x).copy()
    pm.setSeed(3)
    np.testing.assert_array_equal(m.forward(x), a)  # the seed fixes the mask
    assert not np.allclose(a, want)
    assert not np.allclose(m.forward(x), a)  # a new mask each forward
    m.evaluate()
    np.testing.assert_allclose(m.forward(x), want, rtol=1e-12, atol=1e-13)


def test_mha_strided_inputs_give_the_same_results(rng):
    m = pm.MultiHeadAttention(4, 2, dtype=np.float64)
    x = rng.standard_normal((2, 4, 3)).transpose(0, 2, 1).copy()
    strided = np.asfortranarray(x)
    np.testing.assert_array_equal(m.forward(strided).copy(), m.forward(x))


# -- TransformerEncoderLayer -------------------------------------------------------------------

LAYERS = [(False, "relu"), (False, "gelu"), (True, "relu"), (True, "gelu")]


@pytest.mark.parametrize(("normFirst", "activation"), LAYERS)
def test_encoder_jacobians(normFirst, activation, rng):
    m = _randomised(pm.TransformerEncoderLayer(4, 2, 6, 0.0, activation, normFirst=normFirst,
                                               dtype=np.float64), rng)
    x = rng.standard_normal((2, 3, 4))
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("normFirst", [False, True])
def test_encoder_jacobians_with_a_mask_and_with_dropout(normFirst, rng):
    m = _randomised(pm.TransformerEncoderLayer(4, 2, 6, 0.0, normFirst=normFirst,
                                               dtype=np.float64), rng)
    x = rng.standard_normal((2, 3, 4))
    mask = np.array([[False, True, False], [False, False, True]])
    assert_jacobian(_Masked(m, mask), x)
    assert_jacobian(_Masked(m, mask), x, wrt="parameters")
    d = _randomised(pm.TransformerEncoderLayer(4, 2, 6, 0.4, normFirst=normFirst,
                                               dtype=np.float64), rng)
    assert_jacobian(d, x, seed=5)
    assert_jacobian(d, x, wrt="parameters", seed=5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("normFirst", "activation"), LAYERS)
def test_encoder_against_numpy(dtype, normFirst, activation, rng):
    m = _randomised(pm.TransformerEncoderLayer(8, 2, 12, 0.0, activation, 1e-3,
                                               normFirst, dtype=dtype), rng)
    x = rng.standard_normal((3, 5, 8)).astype(dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-11,
                                                                     "atol": 1e-11}
    np.testing.assert_allclose(m.forward(x), encoder_reference(m, x), **tol)
    mask = rng.random((3, 5)) < 0.4
    np.testing.assert_allclose(m.forward([x, mask]), encoder_reference(m, x, mask[:, None]),
                               **tol)
    causal = np.triu(np.ones((5, 5), bool), 1)
    np.testing.assert_allclose(m.forward([x, causal]), encoder_reference(m, x, causal[None]),
                               **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("normFirst", "activation"), LAYERS)
@pytest.mark.parametrize("masked", [False, True])
def test_encoder_matches_torch(dtype, normFirst, activation, masked, torch, rng):
    m = pm.TransformerEncoderLayer(8, 2, 16, 0.0, activation, 1e-5, normFirst, dtype=dtype)
    t = torch.nn.TransformerEncoderLayer(8, 2, 16, 0.0, activation, 1e-5, batch_first=True,
                                         norm_first=normFirst,
                                         dtype=torch.float64 if dtype == np.float64 else
                                         torch.float32)
    assert [tuple(w.shape) for w in m.parameters()[0]] == \
        [tuple(p.shape) for p in t.state_dict().values()]
    with torch.no_grad():  # every parameter away from its initial value
        for p in t.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * 0.5 + (1 if p.ndim == 1 else 0))
    _copy_from_torch(m, t, torch)
    x = rng.standard_normal((3, 6, 8)).astype(dtype)
    g = rng.standard_normal((3, 6, 8)).astype(dtype)
    mask = rng.random((3, 6)) < 0.3
    inp = [x, mask] if masked else x
    y = m.forward(inp).copy()
    gi = m.backward(inp, g)
    gi = (gi[0] if masked else gi).copy()
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx, src_key_padding_mask=torch.from_numpy(mask) if masked else None)
    ty.backward(torch.from_numpy(g))
    tol = {"rtol": 5e-4, "atol": 5e-4} if dtype == np.float32 else {"rtol": 1e-9,
                                                                     "atol": 1e-10}
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gi, tx.grad.numpy(), **tol)
    for a, p in zip(m.parameters()[1], t.parameters(), strict=True):
        np.testing.assert_allclose(a, p.grad.numpy(), **tol)


def test_encoder_parameters_and_initialisation():
    m = pm.TransformerEncoderLayer(16, 4, 32)
    shapes = [(48, 16), (48,), (16, 16), (16,), (32, 16), (32,), (16, 32), (16,),
              (16,), (16,), (16,), (16,)]
    assert [w.shape for w in m.parameters()[0]] == shapes
    assert m.getParameters()[0].size == sum(int(np.prod(s)) for s in shapes)
    assert np.abs(m.linear1Weight).max() <= 0.25
    assert np.abs(m.linear2Bias).max() <= 1 / math.sqrt(32)
    assert (m.norm1Weight == 1).all() and not m.norm2Bias.any()
    assert m.dropout == 0.1 and m.activation == "relu" and not m.normFirst
    assert str(m).endswith("(16, 4 heads, feed-forward 32, relu, dropout 0.1)")
    assert str(pm.TransformerEncoderLayer(4, 2, 8, 0.0, "gelu", normFirst=True)).endswith(
        "gelu, dropout 0.0, norm first)")


def test_encoder_dropout_in_training_only(rng):
    m = pm.TransformerEncoderLayer(8, 2, 16, 0.3, dtype=np.float64)
    plain = pm.TransformerEncoderLayer(8, 2, 16, 0.0, dtype=np.float64)
    plain.getParameters()[0][...] = m.getParameters()[0]
    x = rng.standard_normal((2, 5, 8))
    pm.setSeed(4)
    a = m.forward(x).copy()
    pm.setSeed(4)
    np.testing.assert_array_equal(m.forward(x), a)
    assert not np.allclose(a, plain.forward(x))
    m.evaluate()
    np.testing.assert_allclose(m.forward(x), plain.forward(x), rtol=1e-12, atol=1e-12)


def test_encoder_gradients_accumulate_and_grad_input_of_a_list(rng):
    m = _randomised(pm.TransformerEncoderLayer(4, 2, 6, 0.0, dtype=np.float64), rng)
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    m.forward(x)
    gx = m.backward(x, g).copy()
    once = [a.copy() for a in m.parameters()[1]]
    m.backward(x, g)
    for a, b in zip(m.parameters()[1], once, strict=True):
        # (the key bias's gradient is zero but for rounding: softmax ignores a shift)
        np.testing.assert_allclose(a, 2 * b, rtol=1e-12, atol=1e-14)
    mask = np.zeros((3, 3), bool)
    m.forward([x, mask])
    gi = m.backward([x, mask], g)
    assert isinstance(gi, list) and len(gi) == 2 and not gi[1].any() and gi[1].shape == (3, 3)
    np.testing.assert_allclose(gi[0], gx)
    m.zeroGradParameters()
    m.freeze()
    m.backward(x, g)
    assert not any(a.any() for a in m.parameters()[1])


# -- errors ---------------------------------------------------------------------------------------

def test_constructor_errors():
    with pytest.raises(ValueError, match="MultiHeadAttention: embedDim 6 is not divisible by "
                                         "numHeads 4"):
        pm.MultiHeadAttention(6, 4)
    with pytest.raises(ValueError, match="TransformerEncoderLayer: embedDim 10 is not "
                                         "divisible by numHeads 3"):
        pm.TransformerEncoderLayer(10, 3)
    with pytest.raises(ValueError, match="embedDim and numHeads must be > 0"):
        pm.MultiHeadAttention(0, 1)
    with pytest.raises(TypeError, match="MultiHeadAttention: numHeads must be an integer"):
        pm.MultiHeadAttention(4, 2.5)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\), got 1"):
        pm.MultiHeadAttention(4, 2, 1)
    with pytest.raises(ValueError, match="activation must be one of"):
        pm.TransformerEncoderLayer(4, 2, activation="tanh")
    with pytest.raises(ValueError, match="dimFeedforward must be > 0"):
        pm.TransformerEncoderLayer(4, 2, 0)
    with pytest.raises(ValueError, match="layerNormEps must be > 0"):
        pm.TransformerEncoderLayer(4, 2, layerNormEps=0)


def _x(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize(("x", "error", "match"), [
    (_x(3, 8), ValueError, r"input has shape \(3, 8\), expected 3-D \(batch, time, 8\)"),
    (_x(2, 3, 6), ValueError, r"input has shape \(2, 3, 6\), expected 3-D"),
    ([_x(2, 3, 8), _x(2, 4, 8)], TypeError, "a list \\[query, key, value\\]"),
    ([_x(2, 3, 8), _x(3, 4, 8), _x(3, 4, 8)], ValueError, "key has batch 3, query 2"),
    ([_x(2, 3, 8), _x(2, 4, 8), _x(2, 5, 8)], ValueError, r"value has shape \(2, 5, 8\), "
                                                          r"expected the key's \(2, 4, 8\)"),
    ([_x(2, 3, 8), _x(2, 4, 8), _x(2, 4, 8), _x(3, 4)], TypeError,
     "mask has dtype float32, expected bool"),
    ([_x(2, 3, 8), _x(2, 4, 8), _x(2, 4, 8), np.zeros((4, 3), bool)], ValueError,
     r"mask has shape \(4, 3\), expected \(time_q, time_k\) = \(3, 4\) or \(batch, time_k\) "
     r"= \(2, 4\)"),
    ([_x(2, 3, 8), _x(2, 4, 8), _x(2, 4, 8), [[True]]], TypeError, "must be a "
                                                                   "numpy.ndarray"),
    (_x(2, 3, 8, dtype=np.float64), TypeError, "input has dtype float64, expected float32"),
])
def test_mha_refusals_name_the_module(x, error, match):
    assert_refusal_names_the_module(lambda: pm.MultiHeadAttention(8, 2), x, match, error)


@pytest.mark.parametrize(("x", "error", "match"), [
    (_x(2, 3, 8, 1), ValueError, r"input has shape \(2, 3, 8, 1\), expected 3-D"),
    ([_x(2, 3, 8)], TypeError, r"a list \[x, mask\]"),
    ([_x(2, 3, 8), np.zeros((2, 2), bool)], ValueError, r"mask has shape \(2, 2\), expected "
                                                        r"\(time_q, time_k\) = \(3, 3\)"),
    ([_x(2, 3, 8), np.zeros((3, 3), np.int8)], TypeError, "mask has dtype int8"),
])
def test_encoder_refusals_name_the_module(x, error, match):
    assert_refusal_names_the_module(lambda: pm.TransformerEncoderLayer(8, 2, 16), x, match,
                                    error)


def test_backward_refusals_name_the_module(rng):
    m = pm.MultiHeadAttention(8, 2)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    m.forward(x)
    with pytest.raises(ValueError, match=r"gradOutput has shape an array of shape \(2, 3, 4\)"
                                         r", expected the output's \(2, 3, 8\)") as info:
        m.backward(x, _x(2, 3, 4))
    assert str(info.value).startswith(str(m))
    e = pm.TransformerEncoderLayer(8, 2, 16)
    e.forward(x)
    with pytest.raises(ValueError, match="gradOutput has shape") as info:
        e.backward(x, _x(2, 4, 8))
    assert str(info.value).startswith(str(e))
    fresh = pm.MultiHeadAttention(8, 2)
    fresh.forward(x)
    with pytest.raises(ValueError, match="reads the gradients of updateGradInput"):
        fresh.accGradParameters(x, x)
