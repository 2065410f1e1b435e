"""engine.attention against NumPy: the blocked attention forward and backward (masks, biases,
dropout, kept probabilities, block sizes, empty sizes), the stacked projections' gradient,
the residual dropout, GELU, and the refusals of every entry."""

import math

import numpy as np
import pytest
from pymodules.engine.attention import (
    attention_block_rows,
    attention_scratch_size,
    attention_update_grad_input,
    attention_update_output,
    gelu_update_grad_input,
    gelu_update_output,
    residual_dropout_update_grad_input,
    residual_dropout_update_output,
    stacked_linear_grad_input,
)
from tolerance import abs_gemm, assert_reduction_close

DTYPES = [np.float32, np.float64]
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def keep_mask(seed, p, shape):
    """The kept elements of a mask drawn from ``seed``: element n takes the low (n even) or
    high (n odd) 32 bits of splitmix64(seed + (n // 2) * golden), kept at or above p * 2**32."""
    n = np.arange(int(np.prod(shape)), dtype=np.uint64)
    z = np.uint64(seed) + (n >> np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    bits = np.where(n & np.uint64(1), z >> np.uint64(32), z & np.uint64(0xFFFFFFFF))
    return (bits >= np.uint64(int(p * 2.0**32))).reshape(shape)


def _heads(a, h):
    b, t, e = a.shape
    return np.asarray(a, np.float64).reshape(b, t, h, e // h).transpose(0, 2, 1, 3)


def _merge(a):
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def reference(q, k, v, h, scale, mask=None, bias=None, p=0.0, seed=0):
    """(output, probabilities, the dropped-out probabilities) in float64."""
    qh, kh, vh = _heads(q, h), _heads(k, h), _heads(v, h)
    s = scale * qh @ kh.transpose(0, 1, 3, 2)
    if bias is not None:
        s = s + np.asarray(bias, np.float64)[:, None]
    if mask is not None:
        s = np.where(mask[:, None], -np.inf, s)
    hidden = np.all(s == -np.inf, axis=-1, keepdims=True)
    s = np.where(hidden, 0.0, s)
    e = np.exp(s - s.max(-1, keepdims=True))
    probs = np.where(hidden, 0.0, e / e.sum(-1, keepdims=True))
    dropped = probs * keep_mask(seed, p, probs.shape) / (1 - p) if p else probs
    return _merge(dropped @ vh), probs, dropped


def reference_grad(q, k, v, go, h, scale, mask=None, bias=None, p=0.0, seed=0):
    qh, kh, vh, goh = _heads(q, h), _heads(k, h), _heads(v, h), _heads(go, h)
    _, probs, dropped = reference(q, k, v, h, scale, mask, bias, p, seed)
    gv = dropped.transpose(0, 1, 3, 2) @ goh
    gp = goh @ vh.transpose(0, 1, 3, 2)
    if p:
        gp = gp * keep_mask(seed, p, probs.shape) / (1 - p)
    gs = probs * (gp - (gp * probs).sum(-1, keepdims=True))
    return _merge(scale * gs @ kh), _merge(scale * gs.transpose(0, 1, 3, 2) @ qh), _merge(gv)


def _r(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _run(q, k, v, h, scale, mask=None, bias=None, p=0.0, seed=0, train=True, block=0,
         keep=False):
    """The kernels' output and gradients (at a fixed gradOutput), buffers prefilled with NaN."""
    dtype = q.dtype
    b, tq, e = q.shape
    tk = k.shape[1]
    out = np.full(q.shape, np.nan, dtype)
    probs = np.full((b, h, tq, tk), np.nan, dtype) if keep else None
    scratch = np.full(attention_scratch_size(q, k, block), np.nan, dtype)
    attention_update_output(q, k, v, mask, bias, out, probs, scratch, h, scale, p, train, seed,
                            block)
    go = _r(np.random.default_rng(5), q.shape, dtype)
    gq, gk, gv = (np.full(a.shape, np.nan, dtype) for a in (q, k, v))
    attention_update_grad_input(q, k, v, mask, bias, go, gq, gk, gv, probs, scratch, h, scale,
                                p, train, seed, block)
    return out, go, gq, gk, gv, probs


def _check(q, k, v, h, scale, mask=None, bias=None, p=0.0, seed=0, **kw):
    dtype = q.dtype
    out, go, gq, gk, gv, probs = _run(q, k, v, h, scale, mask, bias, p, seed, **kw)
    want, want_p, dropped = reference(q, k, v, h, scale, mask, bias, p, seed)
    tq, tk, d = q.shape[1], k.shape[1], q.shape[2] // h
    # float32: scores of length d, a softmax of tk terms, then sums of tk products
    tol = {"f64": 1e-10} if dtype == np.float64 else {}
    assert_reduction_close(out, want, dtype, k=tk + d + 8,
                           magnitude=_merge(np.abs(dropped) @ np.abs(_heads(v, h))) + 1e-6,
                           **tol)
    if probs is not None:
        assert_reduction_close(probs, want_p, dtype, k=tk + d + 8, magnitude=want_p + 1e-7,
                               **tol)
    wq, wk, wv = reference_grad(q, k, v, go, h, scale, mask, bias, p, seed)
    big = (np.abs(go).max() * (np.abs(v).max() + 1) * (np.abs(q).max() + np.abs(k).max() + 1)
           * scale * 4 / (1 - p))
    for got, want_g in ((gq, wq), (gk, wk), (gv, wv)):
        assert_reduction_close(got, want_g, dtype, k=2 * (tq + tk + d) + 8, magnitude=big,
                               **tol)
    return out, gq, gk, gv


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "tq", "tk", "e", "h"),
                         [(2, 5, 7, 8, 2), (1, 1, 4, 6, 3), (3, 4, 1, 4, 1), (1, 9, 9, 12, 4)])
def test_against_numpy(dtype, b, tq, tk, e, h, rng):
    q, k, v = _r(rng, (b, tq, e), dtype), _r(rng, (b, tk, e), dtype), _r(rng, (b, tk, e), dtype)
    _check(q, k, v, h, 1 / math.sqrt(e // h))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_shape", [(1, 5, 7), (2, 1, 7), (2, 5, 7), (1, 1, 7)])
def test_masks_and_biases(dtype, mask_shape, rng):
    q, k, v = _r(rng, (2, 5, 8), dtype), _r(rng, (2, 7, 8), dtype), _r(rng, (2, 7, 8), dtype)
    mask = rng.random(mask_shape) < 0.4
    mask[..., 0] = False
    _check(q, k, v, 2, 0.5, mask=mask)
    bias = _r(rng, mask_shape, dtype)
    _check(q, k, v, 2, 0.5, bias=bias)
    _check(q, k, v, 2, 0.5, mask=mask, bias=bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_query_with_every_key_masked_attends_to_nothing(dtype, rng):
    q, k, v = _r(rng, (2, 3, 4), dtype), _r(rng, (2, 5, 4), dtype), _r(rng, (2, 5, 4), dtype)
    mask = np.zeros((2, 3, 5), bool)
    mask[0, 1] = True  # query 1 of batch 0 sees no key
    bias = np.zeros((1, 1, 5), dtype)
    bias[..., 2] = -np.inf  # key 2 hidden from every query by an infinite bias
    out, gq, gk, gv = _check(q, k, v, 2, 0.7, mask=mask, bias=bias)
    assert not out[0, 1].any() and not gq[0, 1].any() and np.isfinite(out).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.25, 0.6])
@pytest.mark.parametrize("tq", [6, 3])  # blocks starting at odd mask indices too
def test_dropout_follows_the_seed(dtype, p, tq, rng):
    q, k, v = _r(rng, (2, tq, 8), dtype), _r(rng, (2, 5, 8), dtype), _r(rng, (2, 5, 8), dtype)
    mask = rng.random((2, 1, 5)) < 0.3
    a = _check(q, k, v, 2, 0.4, mask=mask, p=p, seed=123, block=4)
    b = _check(q, k, v, 2, 0.4, mask=mask, p=p, seed=123, keep=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-13)
    other = _run(q, k, v, 2, 0.4, mask=mask, p=p, seed=124)[0]
    assert not np.allclose(a[0], other)
    # evaluation (train False) ignores p
    out = _run(q, k, v, 2, 0.4, mask=mask, p=p, seed=123, train=False)[0]
    np.testing.assert_allclose(out, reference(q, k, v, 2, 0.4, mask)[0],
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block", [1, 2, 3, 7, 100])
def test_blocks_and_kept_probabilities_agree(dtype, block, rng):
    q, k, v = _r(rng, (2, 7, 8), dtype), _r(rng, (2, 9, 8), dtype), _r(rng, (2, 9, 8), dtype)
    mask = rng.random((7, 9))[None] < 0.3
    mask[..., 0] = False
    whole = _run(q, k, v, 4, 0.3, mask=mask, block=0)
    for keep in (False, True):
        part = _run(q, k, v, 4, 0.3, mask=mask, block=block, keep=keep)
        for x, y in zip(whole[:5], part[:5], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6 if dtype == np.float32 else 1e-14)


def test_block_rows_and_scratch_size():
    assert attention_block_rows(1024, 1024, 4) == 256  # 1 MiB of scores
    assert attention_block_rows(64, 64, 4) == 64  # a whole head fits
    assert attention_block_rows(4096, 4096, 8) == 64  # at least 64 rows
    assert attention_block_rows(0, 5, 4) == 0
    q, k = np.zeros((2, 512, 8), np.float32), np.zeros((2, 300, 8), np.float32)
    assert attention_scratch_size(q, k) == 2 * attention_block_rows(512, 300, 4) * 300
    assert attention_scratch_size(q, k, 5) == 2 * 5 * 300
    assert attention_scratch_size(q, k, 5, False) == 5 * 300  # the forward's one block
    assert attention_scratch_size(q, k.astype(np.int32)) == 2 * attention_block_rows(512, 300, 4) \
        * 300
    assert attention_scratch_size(q[0], k) == 0 and attention_scratch_size(None, k) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "tq", "tk"), [(0, 3, 4), (2, 0, 4), (2, 3, 0)])
def test_empty_sizes(dtype, b, tq, tk, rng):
    q, k, v = _r(rng, (b, tq, 4), dtype), _r(rng, (b, tk, 4), dtype), _r(rng, (b, tk, 4), dtype)
    out, _, gq, gk, gv, _ = _run(q, k, v, 2, 0.5)
    for a in (out, gq, gk, gv):
        assert not np.isnan(a).any() and not a.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_comes_out(dtype, rng):
    q, k, v = _r(rng, (1, 3, 4), dtype), _r(rng, (1, 5, 4), dtype), _r(rng, (1, 5, 4), dtype)
    k[0, 2, 1] = np.nan  # every query's score of key 2 in head 0
    out = _run(q, k, v, 2, 0.5)[0]
    assert np.isnan(out[..., :2]).all() and not np.isnan(out[..., 2:]).any()
    q[0, 1, 3] = np.nan  # query 1, head 1
    out = _run(q, k, v, 2, 0.5)[0]
    assert np.isnan(out[0, 1, 2:]).all()


def _args(dtype=np.float32, b=2, tq=3, tk=4, e=4):
    rng = np.random.default_rng(0)
    q, k, v = _r(rng, (b, tq, e), dtype), _r(rng, (b, tk, e), dtype), _r(rng, (b, tk, e), dtype)
    return {"query": q, "key": k, "value": v, "mask": None, "bias": None,
            "output": np.zeros_like(q), "probs": None,
            "scratch": np.zeros(attention_scratch_size(q, k), dtype), "num_heads": 2,
            "scale": 0.5, "p": 0.0, "train": True, "seed": 0}


def _grad_args(**kw):
    a = _args(**kw)
    del a["output"]
    a["grad_output"] = np.zeros_like(a["query"])
    a["grad_query"] = np.zeros_like(a["query"])
    a["grad_key"] = np.zeros_like(a["key"])
    a["grad_value"] = np.zeros_like(a["value"])
    return a


def _bad_forward():
    a = _args()
    q = a["query"]
    return [
        ({"query": q.astype(np.float16)}, TypeError, "query has dtype float16"),
        ({"key": a["key"].astype(np.float64)}, TypeError, "key has dtype float64, expected "
                                                           "float32"),
        ({"value": [1.0]}, TypeError, "value must be a numpy.ndarray, got list"),
        ({"query": q[0]}, ValueError, r"query must be 3-D, got 2-D \(shape \(3, 4\)\)"),
        ({"key": a["key"][:1]}, ValueError, r"key has shape \(1, 4, 4\), expected \(2, "
                                            r"time_k, 4\)"),
        ({"value": a["value"][:, :3].copy()}, ValueError, r"value has shape \(2, 3, 4\), expected "
                                                   r"\(2, 4, 4\)"),
        ({"num_heads": 3}, ValueError, "embedding size 4 is not divisible by num_heads 3"),
        ({"num_heads": 0}, ValueError, "num_heads must be > 0, got 0"),
        ({"mask": np.zeros((1, 3, 4), np.float32)}, TypeError, "mask has dtype float32, "
                                                               "expected bool"),
        ({"mask": np.zeros((3, 4), bool)}, ValueError, r"mask must be 3-D, got 2-D"),
        ({"mask": np.zeros((1, 2, 4), bool)}, ValueError,
         r"mask has shape \(1, 2, 4\), expected \(batch or 1, time_q or 1, time_k\) = \(2 or "
         r"1, 3 or 1, 4\)"),
        ({"bias": np.zeros((3, 1, 4), np.float32)}, ValueError, r"bias has shape \(3, 1, 4\)"),
        ({"output": np.zeros((2, 3, 5), np.float32)}, ValueError, r"output has shape "
                                                                  r"\(2, 3, 5\), expected"),
        ({"output": np.zeros((2, 4, 3), np.float32).transpose(0, 2, 1)}, ValueError,
         "output is not C-contiguous"),
        (lambda a: {"output": a["query"]}, ValueError, "output overlaps query in memory"),
        (lambda a: {"output": a["scratch"][40:64].reshape(2, 3, 4)}, ValueError,
         "output overlaps scratch"),
        (lambda a: {"probs": a["scratch"][:48].reshape(2, 2, 3, 4)}, ValueError,
         "scratch overlaps probs"),
        ({"probs": np.zeros((2, 2, 3, 5), np.float32)}, ValueError, r"probs has shape "
                                                                    r"\(2, 2, 3, 5\)"),
        ({"scratch": np.zeros(3, np.float32)}, ValueError, "scratch has 3 elements, expected "
                                                           "at least"),
        ({"scratch": np.zeros((2, 20), np.float32)}, ValueError, "scratch must be 1-D"),
        ({"p": 1.0}, ValueError, r"the drop probability must lie in \[0, 1\), got 1.0"),
        ({"scale": float("nan")}, ValueError, "scale is NaN"),
    ]


@pytest.mark.parametrize(("change", "error", "match"), _bad_forward())
def test_forward_refusals(change, error, match):
    a = _args()
    out = a["output"]
    if callable(change):
        a["scratch"] = np.zeros(96, np.float32)
        change = change(a)
    a.update(change)
    before = out.copy()
    with pytest.raises(error, match=match):
        attention_update_output(**a)
    np.testing.assert_array_equal(out, before)  # refused before any C ran


def test_forward_refuses_a_block_below_zero_and_read_only_output():
    a = _args()
    with pytest.raises(ValueError, match="block must be >= 0"):
        attention_update_output(**a, block=-1)
    a["output"].flags.writeable = False
    with pytest.raises(ValueError, match="output is read-only"):
        attention_update_output(**a)


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"grad_output": np.zeros((2, 3, 3), np.float32)}, ValueError, r"gradOutput has shape"),
    ({"grad_key": np.zeros((2, 3, 4), np.float32)}, ValueError, r"gradKey has shape \(2, 3, "
                                                                r"4\), expected \(2, 4, 4\)"),
    ({"grad_value": np.zeros((2, 4, 4), np.float64)}, TypeError, "gradValue has dtype float64"),
    ({"grad_query": "x"}, TypeError, "gradQuery must be a numpy.ndarray, got str"),
    ({"probs": np.zeros((2, 2, 3, 3), np.float32)}, ValueError, "probs has shape"),
])
def test_backward_refusals(change, error, match):
    a = _grad_args()
    a.update(change)
    with pytest.raises(error, match=match):
        attention_update_grad_input(**a)


def test_the_forward_takes_one_block_and_the_backward_two():
    a = _grad_args(tq=3, tk=4)
    one = np.zeros(attention_scratch_size(a["query"], a["key"], 0, False), np.float32)
    f = _args(tq=3, tk=4)
    f["scratch"] = one
    attention_update_output(**f)
    a["scratch"] = one
    with pytest.raises(ValueError, match="scratch has 12 elements, expected at least 24"):
        attention_update_grad_input(**a)


def test_backward_refuses_overlaps():
    a = _grad_args()
    a["grad_query"] = a["grad_output"]
    with pytest.raises(ValueError, match="gradQuery overlaps gradOutput"):
        attention_update_grad_input(**a)
    a = _grad_args(tq=4)
    a["grad_key"] = a["grad_query"]
    with pytest.raises(ValueError, match="gradQuery overlaps gradKey"):
        attention_update_grad_input(**a)
    a = _grad_args()
    a["grad_value"] = a["value"]
    with pytest.raises(ValueError, match="gradValue overlaps value"):
        attention_update_grad_input(**a)


# -- stacked projections, residual dropout, GELU ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("parts", [1, 3])
@pytest.mark.parametrize("lead", [(5,), (2, 3), (0,)])
def test_stacked_linear_grad_input(dtype, parts, lead, rng):
    m, k = 4, 6
    w = _r(rng, (parts * m, k), dtype)
    gos = [_r(rng, lead + (m,), dtype) for _ in range(parts)]
    want = sum(np.asarray(g, np.float64) @ w[i * m:(i + 1) * m] for i, g in enumerate(gos))
    mag = sum(abs_gemm(g.reshape(-1, m), w[i * m:(i + 1) * m]).reshape(lead + (k,))
              for i, g in enumerate(gos))
    gi = np.full(lead + (k,), np.nan, dtype)
    stacked_linear_grad_input(gos, gi, w)
    assert_reduction_close(gi, want, dtype, k=parts * m, magnitude=mag)
    res = _r(rng, lead + (k,), dtype)
    stacked_linear_grad_input(gos, gi, w, res)
    assert_reduction_close(gi, want + res, dtype, k=parts * m + 1, magnitude=mag + abs(res))
    gi2 = res.copy()
    stacked_linear_grad_input(gos, gi2, w, gi2)  # the residual in place
    np.testing.assert_array_equal(gi2, gi)


def test_stacked_linear_grad_input_refusals(rng):
    w = _r(rng, (12, 6), np.float32)
    go = [_r(rng, (5, 4), np.float32) for _ in range(3)]
    gi = np.zeros((5, 6), np.float32)
    for args, error, match in [
        ((go[0], gi, w), TypeError, "grad_outputs must be a non-empty list of arrays, got "
                                    "ndarray"),
        (([], gi, w), TypeError, "non-empty list"),
        ((go[:2], gi, w), ValueError, r"gradOutput 0 has shape \(5, 4\), expected \(\.\.\., "
                                      r"6\)"),
        ((go[:1] * 5, gi, w), ValueError, "weight has 12 rows, not 5 equal blocks"),
        (([go[0], go[1][:4], go[2]], gi, w), ValueError, r"gradOutput 1 has shape \(4, 4\)"),
        ((go, gi[:4], w), ValueError, r"gradInput has shape \(4, 6\), expected \(5, 6\)"),
        ((go, gi.astype(np.float64), w), TypeError, "gradInput has dtype float64"),
        ((go, gi, w, gi[:, :5]), ValueError, "residual is not C-contiguous"),
        ((go, w[:5, :6], w), ValueError, "gradInput overlaps weight"),
    ]:
        with pytest.raises(error, match=match):
            stacked_linear_grad_input(*args)
    flat = np.zeros(60, np.float32)
    with pytest.raises(ValueError, match="residual overlaps gradInput|gradInput overlaps "
                                         "residual"):
        stacked_linear_grad_input(go, flat[:30].reshape(5, 6), w, flat[6:36].reshape(5, 6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("p", "train"), [(0.0, True), (0.3, True), (0.3, False)])
def test_residual_dropout(dtype, p, train, rng):
    x, br, go = (_r(rng, (4, 51), dtype) for _ in range(3))
    keep = keep_mask(77, p, x.shape) / (1 - p) if train and p else np.ones(x.shape)
    y = np.full_like(x, np.nan)
    residual_dropout_update_output(x, br, y, p, train, 77)
    np.testing.assert_allclose(y, x + br * keep.astype(dtype), rtol=1e-6)
    gb = np.full_like(x, np.nan)
    residual_dropout_update_grad_input(go, gb, p, train, 77)
    np.testing.assert_allclose(gb, go * keep.astype(dtype), rtol=1e-6)
    residual_dropout_update_output(x, br, x, p, train, 77)  # in place
    np.testing.assert_array_equal(x, y)
    residual_dropout_update_grad_input(go, go, p, train, 77)
    np.testing.assert_array_equal(go, gb)
    if train and p:
        assert 0.2 < 1 - (keep > 0).mean() < 0.4


def test_residual_dropout_refusals(rng):
    x = _r(rng, (3, 4), np.float32)
    with pytest.raises(ValueError, match=r"branch has shape \(3, 3\), expected \(3, 4\)"):
        residual_dropout_update_output(x, x[:, :3].copy(), x.copy(), 0.1, True, 0)
    with pytest.raises(ValueError, match="output overlaps branch"):
        b = x.copy()
        residual_dropout_update_output(x, b, b, 0.1, True, 0)
    with pytest.raises(ValueError, match=r"the drop probability must lie in \[0, 1\)"):
        residual_dropout_update_output(x, x.copy(), x.copy(), -0.1, True, 0)
    with pytest.raises(TypeError, match="gradBranch has dtype float64"):
        residual_dropout_update_grad_input(x, x.astype(np.float64), 0.1, True, 0)
    with pytest.raises(ValueError, match=r"the drop probability must lie in \[0, 1\), got 1.5"):
        residual_dropout_update_grad_input(x, x.copy(), 1.5, True, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu(dtype, rng):
    from scipy.special import erf

    x = np.concatenate([_r(rng, 200, dtype) * 3, np.array([0, -40, 40, np.nan], dtype)])
    x64 = x.astype(np.float64)
    y = np.full_like(x, -1)
    gelu_update_output(x, y)
    tol = {"rtol": 2e-6, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-14,
                                                                     "atol": 1e-15}
    np.testing.assert_allclose(y, 0.5 * x64 * (1 + erf(x64 / math.sqrt(2))), **tol)
    go = _r(rng, x.shape, dtype)
    gi = np.full_like(x, -1)
    gelu_update_grad_input(x, go, gi)
    d = 0.5 * (1 + erf(x64 / math.sqrt(2))) + x64 * np.exp(-x64 ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(gi, go * d, **tol)
    assert np.isnan(y[-1]) and np.isnan(gi[-1])
    gelu_update_output(x, x)  # in place
    np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"output has shape \(3,\), expected \(204,\)"):
        gelu_update_output(x, y[:3].copy())
    with pytest.raises(ValueError, match="gradInput overlaps input"):
        gelu_update_grad_input(x, go, x)
    with pytest.raises(TypeError, match="input has dtype int64"):
        gelu_update_output(np.arange(3), np.zeros(3))
