"""BigDL's Attention, FeedForwardNetwork and Transformer: against a NumPy reference written
from BigDL's formulas (Attention.scala, FeedForwardNetwork.scala, Transformer.scala,
TransformerOperation.scala), float64 Jacobians, float32, the PyTorch oracle for the
attention core, dropout, padding, causality, save/load and refusals."""

import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm

# -- the NumPy reference --------------------------------------------------------------------


def ln(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * w + b


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(x, y, bias, wq, wk, wv, wo, heads):
    """BigDL's Attention graph: dense q, k, v (no bias), SplitHeads (q times depth^-0.5),
    MM(transB), CAddTable(bias), SoftMax, MM, CombineHeads, dense output."""
    b, tq, h = x.shape
    d = h // heads

    def split(a):
        return a.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)

    q, k, v = split(x @ wq.T) * d ** -0.5, split(y @ wk.T), split(y @ wv.T)
    logits = q @ k.transpose(0, 1, 3, 2)
    if bias is not None:
        logits = logits + bias
    ctx = softmax(logits) @ v
    return ctx.transpose(0, 2, 1, 3).reshape(b, tq, h) @ wo.T


def ffn(x, w1, b1, w2, b2):
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def timing(steps, channels):
    """TransformerOperation.getPositionEncode."""
    half = channels // 2
    inc = np.log(1e4) / max(half - 1, 1)
    scaled = np.arange(steps)[:, None] * np.exp(-np.arange(half) * inc)[None, :]
    out = np.zeros((steps, channels))
    out[:, :half], out[:, half:2 * half] = np.sin(scaled), np.cos(scaled)
    return out


def embed(ids, table, pad, shift):
    """LookupTable (maskZero: padding rows zero) * sqrt(hidden), PositionEncode(WithShift)."""
    e = table[ids.astype(int)] * np.sqrt(table.shape[1])
    if pad is not None:
        e[ids == pad] = 0
    if shift:
        e = np.concatenate([np.zeros_like(e[:, :1]), e[:, :-1]], axis=1)
    return e + timing(ids.shape[1], table.shape[1])


def stack(x, params, layers, heads, bias, memory=None, memory_bias=None):
    """Transformer.block: per layer the pre-normed residual self-attention,
    [encoder-decoder attention,] feed-forward blocks; then a LayerNormalization."""
    for _ in range(layers):
        w, b = next(params), next(params)
        n = ln(x, w, b)
        x = x + attention(n, n, bias, *(next(params) for _ in range(4)), heads)
        if memory is not None:
            w, b = next(params), next(params)
            x = x + attention(ln(x, w, b), memory, memory_bias,
                              *(next(params) for _ in range(4)), heads)
        w, b = next(params), next(params)
        x = x + ffn(ln(x, w, b), *(next(params) for _ in range(4)))
    w, b = next(params), next(params)
    return ln(x, w, b)


def causal(t):
    return np.triu(np.full((t, t), -1e9), 1)[None, None]


def transformer(m, input):
    """The reference output of Transformer ``m`` (dropout 0), reading its parameters in
    BigDL's order."""
    params = iter(np.asarray(p, np.float64) for p in m.parameters()[0])
    table = next(params)
    pad, heads, layers = m.paddingValue, m.numHeads, m.numHiddenlayers
    if m.transformerType == "languagemodel":
        ids = input
        out = stack(embed(ids, table, pad, True), params, layers, heads, causal(ids.shape[1]))
    else:
        enc, dec = input
        bias = None if pad is None else np.where(enc == pad, -1e9, 0.0)[:, None, None, :]
        memory = stack(embed(enc, table, pad, False), params, layers, heads, bias)
        out = stack(embed(dec, table, pad, True), params, layers, heads,
                    causal(dec.shape[1]), memory, bias)
    assert next(params, None) is None  # every parameter was read, in order
    return out @ table.T if m.withShareWeightsLinear else out


# -- helpers --------------------------------------------------------------------------------
@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _randomize(m, rng, scale=0.5):
    """Parameters away from their init (LayerNormalization's 1 and 0 included)."""
    for w in m.parameters()[0]:
        w[...] = rng.standard_normal(w.shape) * scale
    return m


def _lm(dtype=np.float64, share=False, pad=0, layers=2, **kw):
    pm.setSeed(1)
    return pm.Transformer(7, 8, 2, 12, layers, 0.0, 0.0, 0.0, pad, share, "languagemodel",
                          dtype=dtype, **kw)


def _mt(dtype=np.float64, share=False, pad=0, layers=1):
    pm.setSeed(2)
    return pm.Transformer(7, 8, 2, 12, layers, 0.0, 0.0, 0.0, pad, share, "translation",
                          dtype=dtype)


def _ids(rng, b, t, vocab=7, low=1):
    return rng.integers(low, vocab, (b, t))


# -- structure ------------------------------------------------------------------------------
def test_parameters_follow_bigdl_order_and_shapes():
    h, f = 8, 12
    norm, att, ff = [(h,), (h,)], [(h, h)] * 4, [(f, h), (f,), (h, f), (h,)]
    m = _lm(layers=2)
    assert [w.shape for w in m.parameters()[0]] == \
        [(7, h)] + (norm + att + norm + ff) * 2 + norm
    t = _mt(layers=2)
    encoder = (norm + att + norm + ff) * 2 + norm
    decoder = (norm + att + norm + att + norm + ff) * 2 + norm
    assert [w.shape for w in t.parameters()[0]] == [(7, h)] + encoder + decoder
    assert [w.shape for w in pm.Attention(h, 2, 0.0).parameters()[0]] == att
    assert [w.shape for w in pm.FeedForwardNetwork(h, f, 0.0).parameters()[0]] == ff
    assert m.getParameters()[0].size == sum(w.size for w in m.parameters()[0])


def test_initialisation_follows_bigdl():
    pm.setSeed(3)
    a = pm.Attention(64, 4, 0.0)
    bound = np.sqrt(6 / 128)  # Xavier of a (64, 64) Linear
    for w in a.parameters()[0]:
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    f = pm.FeedForwardNetwork(16, 32, 0.0)
    w1, b1, w2, b2 = f.parameters()[0]
    assert not b1.any() and not b2.any()
    assert np.abs(w1).max() <= np.sqrt(6 / 48)
    m = _lm()
    norms = [p for p in m.parameters()[0] if p.ndim == 1 and p.size == 8]
    assert all(np.all(p == 1) or np.all(p == 0) for p in norms)


# -- Attention ------------------------------------------------------------------------------
@pytest.mark.parametrize("bias_shape", [(2, 1, 1, 5), (1, 1, 3, 5), (2, 2, 3, 5),
                                        (1, 2, 1, 5)])
def test_attention_matches_the_reference(rng, bias_shape):
    m = pm.Attention(8, 2, 0.0, dtype=np.float64)
    x, y = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 5, 8))
    bias = rng.standard_normal(bias_shape)
    out = m.forward([x, y, bias])
    np.testing.assert_allclose(out, attention(x, y, bias, *m.parameters()[0], 2),
                               rtol=1e-12, atol=1e-12)


def test_attention_masks_with_bigdl_biases(rng):
    m = pm.Attention(8, 4, 0.0, dtype=np.float64)
    x = rng.standard_normal((2, 4, 8))
    y = rng.standard_normal((2, 6, 8))
    bias = np.zeros((2, 1, 1, 6))
    bias[0, ..., 4:] = -1e9
    out = m.forward([x, y, bias]).copy()
    # what the masked keys hold does not matter
    y2 = y.copy()
    y2[0, 4:] = 100
    np.testing.assert_allclose(m.forward([x, y2, bias]), out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[0], m.forward([x[:1], y[:1, :4], bias[:1, ..., :4]])[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", ["input", "parameters"])
def test_attention_jacobians(rng, wrt):
    m = _randomize(pm.Attention(6, 3, 0.0, dtype=np.float64), rng)
    x, y = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 4, 6))
    assert_jacobian(m, [x, y, rng.standard_normal((2, 1, 3, 4))], wrt)
    assert_jacobian(m, [x, x.copy(), rng.standard_normal((1, 1, 3, 3))], wrt)  # self-attention


def test_attention_gradient_is_a_table_with_the_bias_gradient(rng):
    m = pm.Attention(4, 2, 0.0, dtype=np.float64)
    x, y, bias = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), \
        np.zeros((1, 1, 1, 5))
    out = m.forward([x, y, bias])
    gx, gy, gb = m.backward([x, y, bias], np.ones_like(out))
    assert gx.shape == x.shape and gy.shape == y.shape and gb.shape == bias.shape
    # a bias constant along a softmax row has zero gradient: the rows sum to one
    np.testing.assert_allclose(gb.sum(), 0, atol=1e-10)


def test_attention_float32_is_close_to_float64(rng):
    m = pm.Attention(16, 4, 0.0, dtype=np.float64)
    x, y = rng.standard_normal((3, 5, 16)), rng.standard_normal((3, 7, 16))
    bias = np.where(rng.random((3, 1, 1, 7)) < 0.3, -1e9, 0.0)
    g = rng.standard_normal((3, 5, 16))
    want = m.forward([x, y, bias]).copy()
    want_g = [a.copy() for a in m.backward([x, y, bias], g)[:2]]
    m.float()
    f32 = [a.astype(np.float32) for a in (x, y, bias)]
    np.testing.assert_allclose(m.forward(f32), want, rtol=1e-4, atol=1e-5)
    got = m.backward(f32, g.astype(np.float32))
    assert got[0].dtype == np.float32
    for a, b in zip(got[:2], want_g, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_attention_matches_torch(rng):
    torch = pytest.importorskip("torch")
    h, heads = 8, 2
    m = pm.Attention(h, heads, 0.0, dtype=np.float64)
    wq, wk, wv, wo = m.parameters()[0]
    t = torch.nn.MultiheadAttention(h, heads, bias=False, batch_first=True).double()
    with torch.no_grad():
        t.in_proj_weight.copy_(torch.from_numpy(np.concatenate([wq, wk, wv])))
        t.out_proj.weight.copy_(torch.from_numpy(wo))
    x, y = rng.standard_normal((2, 4, h)), rng.standard_normal((2, 6, h))
    mask = np.where(rng.random((4, 6)) < 0.3, -1e9, 0.0)
    g = rng.standard_normal((2, 4, h))
    out = m.forward([x, y, mask[None, None]]).copy()
    gx, gy, _ = m.backward([x, y, mask[None, None]], g)
    tx, ty = (torch.from_numpy(a).requires_grad_() for a in (x, y))
    to, _ = t(tx, ty, ty, attn_mask=torch.from_numpy(mask), need_weights=False)
    to.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, to.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-10, atol=1e-12)
    grads = m.parameters()[1]
    tgq, tgk, tgv = np.split(t.in_proj_weight.grad.numpy(), 3)
    for a, b in zip(grads, [tgq, tgk, tgv, t.out_proj.weight.grad.numpy()], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# -- FeedForwardNetwork ---------------------------------------------------------------------
def test_ffn_matches_the_reference_and_its_jacobians(rng):
    m = _randomize(pm.FeedForwardNetwork(6, 10, 0.0, dtype=np.float64), rng)
    x = rng.standard_normal((2, 3, 6))
    np.testing.assert_allclose(m.forward(x), ffn(x, *m.parameters()[0]), rtol=1e-12,
                               atol=1e-12)
    assert_jacobian(m, x, "input")
    assert_jacobian(m, x, "parameters")


def test_ffn_float32(rng):
    m = pm.FeedForwardNetwork(16, 32, 0.0)
    x = rng.standard_normal((4, 5, 16)).astype(np.float32)
    p = [w.astype(np.float64) for w in m.parameters()[0]]
    out = m.forward(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ffn(x.astype(np.float64), *p), rtol=1e-4, atol=1e-5)


# -- Transformer ----------------------------------------------------------------------------
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("pad", [0, None])
def test_language_model_matches_the_reference(rng, share, pad):
    m = _randomize(_lm(share=share, pad=pad), rng)
    ids = _ids(rng, 3, 5, low=0)
    ids[0, 3:] = 0  # padding, where pad is 0
    out = m.forward(ids)
    assert out.shape == ((3, 5, 7) if share else (3, 5, 8))
    np.testing.assert_allclose(out, transformer(m, ids), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("pad", [0, None])
def test_translation_matches_the_reference(rng, share, pad):
    m = _randomize(_mt(share=share, pad=pad, layers=2), rng)
    enc, dec = _ids(rng, 2, 6, low=0), _ids(rng, 2, 4)
    enc[1, 4:] = 0
    out = m.forward([enc, dec])
    assert out.shape == ((2, 4, 7) if share else (2, 4, 8))
    np.testing.assert_allclose(out, transformer(m, [enc, dec]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", [lambda: _lm(layers=1), lambda: _lm(share=True, layers=1),
                                  lambda: _mt(), lambda: _mt(share=True)],
                         ids=["lm", "lm-shared", "translation", "translation-shared"])
def test_transformer_jacobians(rng, make):
    m = _randomize(make(), rng, 0.4)
    # indices as float64 whole numbers, as BigDL takes them
    if m.transformerType == "languagemodel":
        ids = _ids(rng, 2, 3, low=0).astype(np.float64)
        ids[1, 2] = 0
    else:
        ids = [_ids(rng, 2, 3, low=0).astype(np.float64), _ids(rng, 2, 2).astype(np.float64)]
        ids[0][1, 2] = 0
    assert_jacobian(m, ids, "parameters")
    # the indices have a zero gradient, shaped as they are (BigDL's)
    gi = m.backward(ids, np.ones_like(m.forward(ids)))
    for g, i in zip(gi if isinstance(gi, list) else [gi],
                    ids if isinstance(ids, list) else [ids], strict=True):
        assert g.shape == i.shape and not g.any()


def test_transformer_float32(rng):
    m = _lm(np.float32, share=True)
    ids = _ids(rng, 4, 6)
    out = m.forward(ids)
    assert out.dtype == np.float32
    m64 = m.cloneModule().double()
    np.testing.assert_allclose(out, m64.forward(ids), rtol=2e-4, atol=2e-4)
    g = rng.standard_normal(out.shape).astype(np.float32)
    m.backward(ids, g)
    m64.backward(ids, g.astype(np.float64))
    for a, b in zip(m.parameters()[1], m64.parameters()[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)
    t = _mt(np.float32)
    enc, dec = _ids(rng, 2, 5), _ids(rng, 2, 3)
    np.testing.assert_allclose(t.forward([enc, dec]), t.cloneModule().double().forward(
        [enc, dec]), rtol=2e-4, atol=2e-4)


def test_language_model_is_causal_and_shifted(rng):
    m = _randomize(_lm(pad=None), rng)
    ids = _ids(rng, 1, 6)
    base = m.forward(ids).copy()
    for t in range(6):
        changed = ids.copy()
        changed[0, t] = (changed[0, t] + 1) % 7
        diff = np.abs(m.forward(changed) - base).max(-1)[0]
        assert not diff[:t + 1].any()  # step s sees tokens before s only
        if t < 5:
            assert diff[t + 1:].all()


def test_padding_tokens(rng):
    m = _randomize(_mt(), rng)
    enc, dec = _ids(rng, 2, 4), _ids(rng, 2, 3)
    out = m.forward([enc, dec]).copy()
    # padding appended to the encoder input changes nothing
    padded = np.concatenate([enc, np.zeros((2, 3), int)], axis=1)
    np.testing.assert_allclose(m.forward([padded, dec]), out, rtol=1e-12, atol=1e-12)
    # the padding token's embedding row is not read, and gets no gradient
    m.modules[0].weight[0] = 50
    np.testing.assert_allclose(m.forward([padded, dec]), out, rtol=1e-12, atol=1e-12)
    m.zeroGradParameters()
    m.backward([padded, dec], np.ones_like(out))
    assert not m.modules[0].gradWeight[0].any() and m.modules[0].gradWeight[1:].any()


def test_dropout_in_training_only(rng):
    m = pm.Transformer(7, 8, 2, 12, 1, 0.3, 0.3, 0.3, dtype=np.float64)
    ids = _ids(rng, 2, 5)
    pm.setSeed(4)
    a = m.forward(ids).copy()
    pm.setSeed(4)
    np.testing.assert_array_equal(m.forward(ids), a)
    b = m.forward(ids).copy()
    assert not np.array_equal(a, b)
    m.backward(ids, np.ones_like(b))  # the masks of the forward before
    m.evaluate()
    ev = m.forward(ids).copy()
    ref = pm.Transformer(7, 8, 2, 12, 1, 0.0, 0.0, 0.0, dtype=np.float64)
    ref.setWeightsBias(m.getWeightsBias())
    np.testing.assert_allclose(ev, ref.forward(ids), rtol=1e-12)


def test_accumulation_and_separate_protocol_calls(rng):
    m = _randomize(_mt(share=True), rng)
    ids = [_ids(rng, 2, 3), _ids(rng, 2, 4)]
    g = rng.standard_normal(m.forward(ids).shape)
    m.zeroGradParameters()
    m.backward(ids, g)
    once = m.getParameters()[1].copy()
    m.forward(ids)
    m.updateGradInput(ids, g)
    m.accGradParameters(ids, g)
    np.testing.assert_allclose(m.getParameters()[1], 2 * once, rtol=1e-12, atol=1e-14)


# -- save/load and refusals -----------------------------------------------------------------
def test_save_and_load(rng, tmp_path):
    for m, ids in ((_lm(share=True), _ids(rng, 2, 4)),
                   (_mt(), [_ids(rng, 2, 4), _ids(rng, 2, 3)])):
        _randomize(m, rng)
        m.save(tmp_path / "t.pm", overWrite=True)
        r = pm.load(tmp_path / "t.pm")
        assert str(r) == str(m)
        np.testing.assert_array_equal(r.forward(ids), m.forward(ids))
        with pytest.raises(ValueError, match="builds its own layers"):
            r.add(pm.Linear(2, 2))


@pytest.mark.parametrize("make, match", [
    (lambda: pm.Attention(10, 3, 0.0), r"Attention: hiddenSize 10 is not divisible by "
                                        r"numHeads 3"),
    (lambda: pm.Transformer(5, 10, 4, 8, 1, 0.0, 0.0, 0.0), "Transformer: hiddenSize 10 is "
                                                            "not divisible by numHeads 4"),
    (lambda: pm.Attention(8, 2, 1.0), r"attentionDropout .* \[0, 1\)"),
    (lambda: pm.FeedForwardNetwork(8, 4, -0.1), r"reluDropout"),
    (lambda: pm.Transformer(5, 8, 2, 8, 1, 0.0, 0.0, 0.0, paddingValue=5),
     r"paddingValue 5 is not a token index in \[0, 5\)"),
    (lambda: pm.Transformer(5, 8, 2, 8, 1, 0.0, 0.0, 0.0, transformerType="LanguageModel2"),
     "transformerType"),
    (lambda: pm.Transformer(5, 8, 2, 8, 0, 0.0, 0.0, 0.0), "must be > 0"),
])
def test_constructor_refusals(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _refused(m, x, match, error=ValueError):
    with pytest.raises(error, match=match) as info:
        m.forward(x)
    assert str(info.value).startswith(str(m)), str(info.value)


def test_input_refusals_name_the_module(rng):
    a = pm.Attention(8, 2, 0.0)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    _refused(a, x, r"table \[x, y, bias\]", TypeError)
    bias = np.zeros((1, 1, 1, 3), np.float32)
    _refused(a, [x, x, None], r"must be a numpy.ndarray, got NoneType", TypeError)
    _refused(a, [x[0], x, bias], r"x has shape \(3, 8\), expected \(batch, time, 8\)")
    _refused(a, [x, x[..., :4], bias], r"y has shape")
    _refused(a, [x, x, np.zeros((2, 2, 3, 4), np.float32)], r"bias has shape \(2, 2, 3, 4\)")
    _refused(pm.FeedForwardNetwork(8, 4, 0.0), x[0], r"expected \(batch, time, 8\)")
    m = pm.Transformer(5, 8, 2, 8, 1, 0.0, 0.0, 0.0)
    _refused(m, np.array([[1, 2, 5]]), r"index 5 at position \(0, 2\) is out of range \[0, 5\)")
    _refused(m, np.array([[1, -1]]), r"out of range")
    _refused(m, np.array([[1.5, 2]]), r"not a whole number")
    _refused(m, np.array([1, 2]), r"expected \(batch, time\)")
    t = pm.Transformer(5, 8, 2, 8, 1, 0.0, 0.0, 0.0, transformerType="translation")
    _refused(t, np.array([[1, 2]]), r"\[encoderInput, decoderInput\]", TypeError)
    _refused(t, [np.ones((2, 3), int), np.ones((3, 3), int)], "encoderInput has batch 2")


def test_backward_before_forward_is_refused(rng):
    a = pm.Attention(4, 2, 0.0, dtype=np.float64)
    x = rng.standard_normal((1, 2, 4))
    with pytest.raises(ValueError, match="forward must run first"):
        a.backward([x, x, np.zeros((1, 1, 1, 2))], x)


def test_a_file_rebuilds_the_layers_it_holds_only():
    """While a file is read, the constructor builds nothing (the file's layers come through
    add, each checked against the plan): a file claiming 10**12 layers costs nothing and is
    refused as incomplete."""
    from pymodules.nn.initializable import restoring

    with restoring({}):
        m = pm.Transformer(5, 8, 2, 8, 10**12, 0.0, 0.0, 0.0)
    assert m.modules == []
    with pytest.raises(ValueError, match="must be a LookupTable"):
        m.add(pm.Linear(8, 5))
    m.add(pm.LookupTable(5, 8, 0))
    with pytest.raises(ValueError, match=r"layer 2 must be a LayerNormalization with "
                                         r"parameters \[\(8,\), \(8,\)\]"):
        m.add(pm.Dropout(0.0)).add(pm.LayerNormalization(4))
    with pytest.raises(ValueError, match="holds 2 of its 6000000000003 layers"):
        m.forward(np.zeros((1, 2)))
