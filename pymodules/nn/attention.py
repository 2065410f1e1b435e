"""PyTorch-style attention: MultiHeadAttention and TransformerEncoderLayer, (batch, time, embed).

Both follow torch.nn.MultiheadAttention(batch_first=True) and
torch.nn.TransformerEncoderLayer(batch_first=True): the same results given the same weights,
and parameters() in the order and shapes of torch's state_dict(), so that torch's flat
parameters copy in. The attention itself runs on engine/attention.pyx (scores, mask, softmax,
dropout and the weighted sum per head over blocks of queries); the projections on Linear's
kernels, the normalisations on LayerNormalization's and the feed-forward dropout on Dropout's.
"""

import math

import numpy as np

from pymodules.engine.activation import threshold_update_grad_input, threshold_update_output
from pymodules.engine.attention import (
    attention_scratch_size,
    attention_update_grad_input,
    attention_update_output,
    gelu_update_grad_input,
    gelu_update_output,
    residual_dropout_update_grad_input,
    residual_dropout_update_output,
    stacked_linear_grad_input,
)
from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.dropout import dropout_update_grad_input, dropout_update_output
from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.engine.normalization_ln import (
    layernorm_acc_grad_parameters,
    layernorm_update_grad_input,
    layernorm_update_output,
)
from pymodules.nn.init import RandomUniform, Xavier
from pymodules.nn.initializable import parameter
from pymodules.nn.module import Module, attribute, whole
from pymodules.random import Stream

_ATTENTION_PARAMS = (("inProjWeight", "gradInProjWeight"), ("inProjBias", "gradInProjBias"),
                     ("outProjWeight", "gradOutProjWeight"), ("outProjBias", "gradOutProjBias"))
# Buffers of the attention steps: projected q, k, v; the heads' output; their gradients; the
# kernel's block scratch; the output projection; the mask's zero gradient.
_ATTENTION_SCRATCH = ("_q", "_k", "_v", "_ctx", "_gq", "_gk", "_gv", "_gctx", "_block",
                      "_attn", "_gx", "_gQuery", "_gKey", "_gValue", "_gMask")


def _rank3(owner, what, a):
    """``a``'s shape, which must be that of a (batch, time, embedDim) array."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(a).__name__}")
    if a.ndim != 3 or a.shape[2] != owner.embedDim:
        raise ValueError(f"{what} has shape {a.shape}, expected 3-D (batch, time, "
                         f"{owner.embedDim})")
    return a.shape


class _Attending(Module):
    """The multi-head attention steps, on the arrays of ``_ATTENTION_PARAMS`` (in_proj_weight
    [Wq; Wk; Wv] (3E, E), in_proj_bias (3E), out_proj weight (E, E) and bias (E); no biases
    without ``bias``), shared by MultiHeadAttention and TransformerEncoderLayer."""

    def _init_attention(self, embedDim, numHeads, dropout, bias):
        name = type(self).__name__
        self.embedDim = whole(self, "embedDim", embedDim)
        self.numHeads = whole(self, "numHeads", numHeads)
        if self.embedDim <= 0 or self.numHeads <= 0:
            raise ValueError(f"{name}: embedDim and numHeads must be > 0, got {embedDim} and "
                             f"{numHeads}")
        if self.embedDim % self.numHeads:
            raise ValueError(f"{name}: embedDim {self.embedDim} is not divisible by numHeads "
                             f"{self.numHeads}")
        self.headDim = self.embedDim // self.numHeads
        self.dropout = float(dropout)
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{name}: dropout must lie in [0, 1), got {dropout}")
        self.withBias = bool(bias)
        e = self.embedDim
        self.inProjWeight = parameter(self, "inProjWeight", (3 * e, e))
        self.inProjBias = parameter(self, "inProjBias", 3 * e) if self.withBias else None
        self.outProjWeight = parameter(self, "outProjWeight", (e, e))
        self.outProjBias = parameter(self, "outProjBias", e) if self.withBias else None
        for attr in _ATTENTION_SCRATCH:
            setattr(self, attr, None)
        self._mask = None  # the (batch|1, time_q|1, time_k) view of the forward's mask
        self._selfInput = None  # whether the forward attended its one input to itself
        self._attnSeed = 0
        self._attnRng = Stream()

    def _reset_attention(self):
        """torch's initialisation: xavier-uniform in_proj_weight, out_proj weight uniform in
        +-1/sqrt(embedDim), zero biases."""
        e = self.embedDim
        Xavier()(self.inProjWeight, e, 3 * e)
        RandomUniform()(self.outProjWeight, e, e)
        for b in (self.inProjBias, self.outProjBias):
            if b is not None:
                b.fill(0)

    def _split_input(self, input):
        """(query, key, value, mask view) of a forward's input: x alone (key = value = query
        = x, flagged by key None), [q, k, v] or [q, k, v, mask]."""
        if isinstance(input, np.ndarray):
            _rank3(self, "input", input)
            return input, None, None, None
        if not isinstance(input, (list, tuple)) or len(input) not in (3, 4):
            raise TypeError(f"input must be an array x (batch, time, {self.embedDim}), a list "
                            f"[query, key, value] or [query, key, value, mask], got "
                            f"{_describe(input)}")
        q, k, v = input[:3]
        bq, tq, _ = _rank3(self, "query", q)
        bk, tk, _ = _rank3(self, "key", k)
        if bk != bq:
            raise ValueError(f"key has batch {bk}, query {bq}")
        if _rank3(self, "value", v) != k.shape:
            raise ValueError(f"value has shape {v.shape}, expected the key's {k.shape}")
        mask = self._mask_view(input[3], bq, tq, tk) if len(input) == 4 else None
        return q, k, v, mask

    def _mask_view(self, mask, b, tq, tk):
        """The bool mask as a (batch|1, time_q|1, time_k) view: (time_q, time_k) is torch's
        attn_mask (read so when batch == time_q too), (batch, time_k) its key_padding_mask, and
        3-D masks of that broadcast shape pass as they are."""
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy.ndarray of bool, got {type(mask).__name__}")
        if mask.dtype != np.bool_:
            raise TypeError(f"mask has dtype {mask.dtype}, expected bool (True: not attended)")
        if mask.ndim == 2 and mask.shape == (tq, tk):
            return mask.reshape(1, tq, tk)
        if mask.ndim == 2 and mask.shape == (b, tk):
            return mask.reshape(b, 1, tk)
        if mask.ndim == 3 and mask.shape[0] in (1, b) and mask.shape[1] in (1, tq) and \
                mask.shape[2] == tk:
            return mask
        raise ValueError(f"mask has shape {mask.shape}, expected (time_q, time_k) = ({tq}, "
                         f"{tk}) or (batch, time_k) = ({b}, {tk})")

    def _attend(self, q_in, k_in, v_in, mask):
        """The attention's output (batch, time_q, E) into ``_attn``; key None: q_in attends to
        itself."""
        e, dt = self.embedDim, self.dtype
        w, b = self.inProjWeight, self.inProjBias
        self._selfInput = k_in is None
        if k_in is None:
            k_in = v_in = q_in
        q = self._q = resized(self._q, q_in, -1, dt)
        k = self._k = resized(self._k, k_in, -1, dt)
        v = self._v = resized(self._v, v_in, -1, dt)
        for i, (x, y) in enumerate(((q_in, q), (k_in, k), (v_in, v))):
            linear_update_output(x.reshape(-1, e), y.reshape(-1, e), w[i * e:(i + 1) * e],
                                 None if b is None else b[i * e:(i + 1) * e], None)
        ctx = self._ctx = resized(self._ctx, q_in, -1, dt)
        train = self._train and self.dropout > 0
        self._attnSeed = seed = self._attnRng.generator.bit_generator.random_raw() if train \
            else 0
        self._mask = mask
        # In training the block scratch is sized for the backward that follows (two blocks).
        size = attention_scratch_size(q, k, 0, self._train)
        block = self._block = resized(self._block, (size,), -1, dt)
        attention_update_output(q, k, v, mask, None, ctx, None, block, self.numHeads,
                                1 / math.sqrt(self.headDim), self.dropout, train, seed)
        out = self._attn = resized(self._attn, q_in, -1, dt)
        linear_update_output(ctx.reshape(-1, e), out.reshape(-1, e), self.outProjWeight,
                             self.outProjBias, None)
        return out

    def _attend_grad(self, gradOutput):
        """The gradients of the projected q, k, v (``_gq``, ``_gk``, ``_gv``) at gradOutput
        of the forward's _attend."""
        e, dt = self.embedDim, self.dtype
        if not isinstance(gradOutput, np.ndarray) or gradOutput.shape != self._ctx.shape:
            raise ValueError(f"gradOutput has shape {_describe(gradOutput)}, expected the "
                             f"output's {self._ctx.shape}")
        gctx = self._gctx = resized(self._gctx, self._ctx, -1, dt)
        linear_update_grad_input(self._ctx.reshape(-1, e), gradOutput.reshape(-1, e),
                                 gctx.reshape(-1, e), self.outProjWeight)
        size = attention_scratch_size(self._q, self._k)
        self._block = resized(self._block, (size,), -1, dt)
        gq = self._gq = resized(self._gq, self._q, -1, dt)
        gk = self._gk = resized(self._gk, self._k, -1, dt)
        gv = self._gv = resized(self._gv, self._v, -1, dt)
        attention_update_grad_input(self._q, self._k, self._v, self._mask, None, gctx, gq, gk,
                                    gv, None, self._block, self.numHeads,
                                    1 / math.sqrt(self.headDim), self.dropout,
                                    self._train and self.dropout > 0, self._attnSeed)

    def _attend_input_grad(self, q_in, k_in, v_in, residual=None):
        """The gradient of the attention's input: x's (plus ``residual``) into ``out`` for a
        self-attention, else [query's, key's, value's]."""
        e, w = self.embedDim, self.inProjWeight
        if self._selfInput:
            gx = self._gx = resized(self._gx, q_in, -1, self.dtype)
            stacked_linear_grad_input([self._gq, self._gk, self._gv], gx, w, residual)
            return gx
        self._gQuery = resized(self._gQuery, q_in, -1, self.dtype)
        self._gKey = resized(self._gKey, k_in, -1, self.dtype)
        self._gValue = resized(self._gValue, v_in, -1, self.dtype)
        grads = (self._gQuery, self._gKey, self._gValue)
        for i, (x, g, gi) in enumerate(zip((q_in, k_in, v_in), (self._gq, self._gk, self._gv),
                                           grads, strict=True)):
            linear_update_grad_input(x.reshape(-1, e), g.reshape(-1, e), gi.reshape(-1, e),
                                     w[i * e:(i + 1) * e])
        return grads

    def _attend_acc(self, q_in, k_in, v_in, gradOutput):
        """Accumulate the projections' parameter gradients from the forward's arrays and the
        gradients _attend_grad left."""
        if self._gq is None:
            raise ValueError("accGradParameters reads the gradients of updateGradInput, which "
                             "has not run")
        e, sw, sb = self.embedDim, self.scaleW, self.scaleB
        if k_in is None:
            k_in = v_in = q_in
        gw, gb = self.gradInProjWeight, self.gradInProjBias if self.withBias else None
        for i, (x, g) in enumerate(((q_in, self._gq), (k_in, self._gk), (v_in, self._gv))):
            linear_acc_grad_parameters(x.reshape(-1, e), g.reshape(-1, e),
                                       gw[i * e:(i + 1) * e],
                                       None if gb is None else gb[i * e:(i + 1) * e], sw, sb)
        linear_acc_grad_parameters(self._ctx.reshape(-1, e), gradOutput.reshape(-1, e),
                                   self.gradOutProjWeight,
                                   self.gradOutProjBias if self.withBias else None, sw, sb)


def _describe(a):
    if isinstance(a, np.ndarray):
        return f"an array of shape {a.shape}"
    if isinstance(a, (list, tuple)):
        return f"a {type(a).__name__} of {len(a)}"
    return type(a).__name__


class MultiHeadAttention(_Attending):
    """torch.nn.MultiheadAttention(embedDim, numHeads, dropout, bias, batch_first=True) with
    need_weights=False, on (batch, time, embedDim).

    Input: x (self-attention: query = key = value = x), ``[query, key, value]`` or
    ``[query, key, value, mask]``, mask a bool array, True where a key is not attended:
    (time_q, time_k) as torch's attn_mask, (batch, time_k) as its key_padding_mask (a 2-D
    mask whose shape could be either, batch == time_q, is read as attn_mask; give a
    key-padding mask as (batch, 1, time_k) then). A query whose keys are all masked attends
    to nothing (zeros before the output projection), as in torch. Output (batch, time_q,
    embedDim).

    Parameters in torch's state_dict order: in_proj_weight (3E, E) ([Wq; Wk; Wv]),
    in_proj_bias (3E), out_proj.weight (E, E), out_proj.bias (E); without ``bias`` the two
    weights only. torch's initialisation. In training, dropout (probability ``dropout``)
    drops attention weights.

    gradInput: for x, one array (the three projections' gradients summed); for a list, a list
    [gradQuery, gradKey, gradValue] (the same array objects each call), followed by zeros
    shaped like the mask (in the module's dtype) when a mask was given: a mask has no
    gradient, and zeros keep containers that add gradients working.
    """

    _params = _ATTENTION_PARAMS
    _scratch = _ATTENTION_SCRATCH
    _tables = True

    def __init__(self, embedDim, numHeads, dropout=0.0, bias=True, dtype=np.float32):
        super().__init__(dtype)
        self._init_attention(embedDim, numHeads, dropout, bias)
        self.reset()

    def reset(self):
        self._reset_attention()
        self.zeroGradParameters()
        return self

    def updateOutput(self, input):
        q, k, v, mask = self._split_input(input)
        self.output = self._attend(q, k, v, mask)
        return self.output

    def updateGradInput(self, input, gradOutput):
        q, k, v, _ = self._split_input(input)
        self._attend_grad(gradOutput)
        if not self.propagateBack:
            return self.gradInput
        if k is None:
            self.gradInput = self._attend_input_grad(q, k, v)
            return self.gradInput
        grads = self._attend_input_grad(q, k, v)
        out = self.gradInput = resized_list(self.gradInput, len(input))
        out[:3] = grads
        if len(input) == 4:
            gm = self._gMask = resized(self._gMask, input[3].shape, -1, self.dtype)
            gm.fill(0)
            out[3] = gm
        return out

    def accGradParameters(self, input, gradOutput):
        q, k, v, _ = self._split_input(input)
        self._attend_acc(q, k, v, gradOutput)

    def extraRepr(self):
        return f"{self.embedDim}, {self.numHeads} heads" + \
            (f", dropout {self.dropout}" if self.dropout else "") + \
            ("" if self.withBias else ", no bias")


_ACTIVATIONS = ("relu", "gelu")


class TransformerEncoderLayer(_Attending):
    """torch.nn.TransformerEncoderLayer(dModel, nHead, dimFeedforward, dropout, activation,
    layerNormEps, batch_first=True, norm_first=normFirst) on (batch, time, dModel): self-
    attention and a feed-forward block ``linear2(dropout(activation(linear1(.))))``, each
    with a skip connection around its dropout (probability ``dropout``, also the attention's)
    and a layer normalisation, after each skip connection (post-norm, torch's default) or,
    with ``normFirst``, on each block's input (pre-norm). ``activation`` "relu" or "gelu"
    (the exact one, torch's default).

    Input: x, or [x, mask] with a bool mask as MultiHeadAttention takes it (torch's src_mask
    (time, time) or src_key_padding_mask (batch, time)); gradInput: x's, or [x's, zeros
    shaped like the mask].

    Parameters in torch's state_dict order: the self-attention's in_proj_weight (3E, E),
    in_proj_bias, out_proj weight and bias, linear1 weight (F, E) and bias (F), linear2
    weight (E, F) and bias (E), norm1 weight and bias, norm2 weight and bias (E each), with
    torch's initialisation (the norms' weights 1, biases 0).
    """

    _params = _ATTENTION_PARAMS + (
        ("linear1Weight", "gradLinear1Weight"), ("linear1Bias", "gradLinear1Bias"),
        ("linear2Weight", "gradLinear2Weight"), ("linear2Bias", "gradLinear2Bias"),
        ("norm1Weight", "gradNorm1Weight"), ("norm1Bias", "gradNorm1Bias"),
        ("norm2Weight", "gradNorm2Weight"), ("norm2Bias", "gradNorm2Bias"))
    # x -> n1 (pre-norm: norm1(x)) -> attention -> h = x + dropout(attention) -> ...;
    # f1 = linear1(.), a1 = activation(f1) (f1 itself for relu), d = dropout(a1) (noise its
    # mask), f2 = linear2(d); h2 the second sum (post-norm); gradients g*; mean/invstd and the
    # parameter sums of both norms.
    _scratch = _ATTENTION_SCRATCH + (
        "_n1", "_h", "_n2", "_h2", "_f1", "_a1", "_d", "_noise", "_f2", "_mean1", "_invstd1",
        "_mean2", "_invstd2", "_sums1", "_sums2", "_gh", "_gh2", "_ga", "_gf2", "_gd", "_gz",
        "_gIn", "_dIn")
    _tables = True

    def __init__(self, dModel, nHead, dimFeedforward=2048, dropout=0.1, activation="relu",
                 layerNormEps=1e-5, normFirst=False, dtype=np.float32):
        super().__init__(dtype)
        self._init_attention(dModel, nHead, dropout, True)
        self.dModel, self.nHead = self.embedDim, self.numHeads
        self.dimFeedforward = whole(self, "dimFeedforward", dimFeedforward)
        if self.dimFeedforward <= 0:
            raise ValueError(f"TransformerEncoderLayer: dimFeedforward must be > 0, got "
                             f"{dimFeedforward}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerEncoderLayer: activation must be one of "
                             f"{_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.layerNormEps = float(layerNormEps)
        if not self.layerNormEps > 0:
            raise ValueError(f"TransformerEncoderLayer: layerNormEps must be > 0, got "
                             f"{layerNormEps}")
        self.normFirst = bool(normFirst)
        e, f = self.embedDim, self.dimFeedforward
        self.linear1Weight = parameter(self, "linear1Weight", (f, e))
        self.linear1Bias = parameter(self, "linear1Bias", f)
        self.linear2Weight = parameter(self, "linear2Weight", (e, f))
        self.linear2Bias = parameter(self, "linear2Bias", e)
        for name in ("norm1Weight", "norm1Bias", "norm2Weight", "norm2Bias"):
            setattr(self, name, parameter(self, name, e))
        for attr in self._scratch[len(_ATTENTION_SCRATCH):]:
            setattr(self, attr, None)
        self._seeds = (0, 0, 0)  # the forward's dropout seeds: skip 1, feed-forward, skip 2
        self._rng = Stream()
        self.reset()

    def reset(self):
        self._reset_attention()
        e, f = self.embedDim, self.dimFeedforward
        for w, b, fan_in, fan_out in ((self.linear1Weight, self.linear1Bias, e, f),
                                      (self.linear2Weight, self.linear2Bias, f, e)):
            RandomUniform()(w, fan_in, fan_out)
            RandomUniform()(b, fan_in, fan_out)
        for w, b in ((self.norm1Weight, self.norm1Bias), (self.norm2Weight, self.norm2Bias)):
            w.fill(1)
            b.fill(0)
        self.zeroGradParameters()
        return self

    # -- helpers -------------------------------------------------------------------------
    def _split(self, input):
        """(x, mask view or None) of an input x or [x, mask]."""
        if isinstance(input, np.ndarray):
            _rank3(self, "input", input)
            return input, None
        if not isinstance(input, (list, tuple)) or len(input) != 2:
            raise TypeError(f"input must be an array x (batch, time, {self.embedDim}) or a "
                            f"list [x, mask], got {_describe(input)}")
        b, t, _ = _rank3(self, "input", input[0])
        return input[0], self._mask_view(input[1], b, t, t)

    def _norm(self, x, which):
        """Layer normalisation ``which`` (1 or 2) of x, into a buffer."""
        dt = self.dtype
        rows = (x.size // self.embedDim,)
        mean = resized(getattr(self, attribute("_mean", which)), rows, -1, dt)
        invstd = resized(getattr(self, attribute("_invstd", which)), rows, -1, dt)
        setattr(self, attribute("_mean", which), mean)
        setattr(self, attribute("_invstd", which), invstd)
        return mean, invstd

    def _layernorm(self, x, out, which):
        mean, invstd = self._norm(x, which)
        layernorm_update_output(x, out, getattr(self, f"norm{which}Weight"),
                                getattr(self, f"norm{which}Bias"), mean, invstd,
                                self.layerNormEps)
        return out

    def _layernorm_grad(self, x, go, gi, which):
        """gi := the gradient of norm ``which`` at go; its parameter sums kept for
        accGradParameters."""
        sums = resized(getattr(self, attribute("_sums", which)), (2, self.embedDim), -1,
                       np.dtype(np.float64))
        setattr(self, attribute("_sums", which), sums)
        layernorm_update_grad_input(x, go, gi, getattr(self, f"norm{which}Weight"),
                                    getattr(self, attribute("_mean", which)),
                                    getattr(self, attribute("_invstd", which)), sums)
        return gi

    def _dropping(self):
        return self._train and self.dropout > 0

    def _feed_forward(self, z):
        """linear2(dropout(activation(linear1(z)))) into ``_f2``."""
        e, f, dt = self.embedDim, self.dimFeedforward, self.dtype
        f1 = self._f1 = resized(self._f1, z, f, dt)
        linear_update_output(z.reshape(-1, e), f1.reshape(-1, f), self.linear1Weight,
                             self.linear1Bias, None)
        if self.activation == "relu":
            threshold_update_output(f1, f1, 0.0, 0.0)
            a1 = f1
        else:
            a1 = self._a1 = resized(self._a1, f1, -1, dt)
            gelu_update_output(f1, a1)
        d = a1
        if self._dropping():
            d = self._d = resized(self._d, a1, -1, dt)
            noise = self._noise = resized(self._noise, a1, -1, dt)
            dropout_update_output(a1, d, noise, self.dropout, True, True, self._seeds[1])
        self._dIn = d
        f2 = self._f2 = resized(self._f2, z, -1, dt)
        linear_update_output(d.reshape(-1, f), f2.reshape(-1, e), self.linear2Weight,
                             self.linear2Bias, None)
        return f2

    def _feed_forward_grad(self, gf2, residual):
        """The gradient of the feed-forward block's input at gf2 (+ residual), into ``_gz``;
        the gradient of linear1's output stays in ``_gd``."""
        e, f, dt = self.embedDim, self.dimFeedforward, self.dtype
        gd = self._gd = resized(self._gd, self._f1, -1, dt)
        linear_update_grad_input(self._dIn.reshape(-1, f), gf2.reshape(-1, e),
                                 gd.reshape(-1, f), self.linear2Weight)
        if self._dropping():
            dropout_update_grad_input(gd, gd, self._noise, self.dropout, True, True)
        if self.activation == "relu":
            threshold_update_grad_input(self._f1, self._f1, gd, gd, 0.0, 0.0)
        else:
            gelu_update_grad_input(self._f1, gd, gd)
        gz = self._gz = resized(self._gz, gf2, -1, dt)
        stacked_linear_grad_input([gd.reshape(-1, f)], gz.reshape(-1, e), self.linear1Weight,
                                  None if residual is None else residual.reshape(-1, e))
        return gz

    # -- the protocol --------------------------------------------------------------------
    def updateOutput(self, input):
        x, mask = self._split(input)
        dt, p, train = self.dtype, self.dropout, self._dropping()
        raw = self._rng.generator.bit_generator.random_raw
        self._seeds = (raw(), raw(), raw()) if train else (0, 0, 0)
        h = self._h = resized(self._h, x, -1, dt)
        out = self.output = resized(self.output, x, -1, dt)
        if self.normFirst:
            n1 = self._n1 = self._layernorm(x, resized(self._n1, x, -1, dt), 1)
            residual_dropout_update_output(x, self._attend(n1, None, None, mask), h, p, train,
                                           self._seeds[0])
            n2 = self._n2 = self._layernorm(h, resized(self._n2, x, -1, dt), 2)
            residual_dropout_update_output(h, self._feed_forward(n2), out, p, train,
                                           self._seeds[2])
        else:
            residual_dropout_update_output(x, self._attend(x, None, None, mask), h, p, train,
                                           self._seeds[0])
            n1 = self._n1 = self._layernorm(h, resized(self._n1, x, -1, dt), 1)
            h2 = self._h2 = resized(self._h2, x, -1, dt)
            residual_dropout_update_output(n1, self._feed_forward(n1), h2, p, train,
                                           self._seeds[2])
            self._layernorm(h2, out, 2)
        return out

    def updateGradInput(self, input, gradOutput):
        x, mask = self._split(input)
        dt, p, train = self.dtype, self.dropout, self._dropping()
        if not isinstance(gradOutput, np.ndarray) or gradOutput.shape != x.shape:
            raise ValueError(f"gradOutput has shape {_describe(gradOutput)}, expected the "
                             f"output's {x.shape}")
        gh = self._gh = resized(self._gh, x, -1, dt)
        ga = self._ga = resized(self._ga, x, -1, dt)
        gf2 = self._gf2 = resized(self._gf2, x, -1, dt)
        if self.normFirst:
            residual_dropout_update_grad_input(gradOutput, gf2, p, train, self._seeds[2])
            gn2 = self._feed_forward_grad(gf2, None)
            self._layernorm_grad(self._h, gn2, gh, 2)
            residual_dropout_update_output(gh, gradOutput, gh, 0.0, False, 0)
            residual_dropout_update_grad_input(gh, ga, p, train, self._seeds[0])
            self._attend_grad(ga)
            gn1 = self._attend_input_grad(self._n1, None, None)
            gx = self._gIn = resized(self._gIn, x, -1, dt)
            self._layernorm_grad(x, gn1, gx, 1)
            residual_dropout_update_output(gx, gh, gx, 0.0, False, 0)
        else:
            gh2 = self._gh2 = resized(self._gh2, x, -1, dt)
            self._layernorm_grad(self._h2, gradOutput, gh2, 2)
            residual_dropout_update_grad_input(gh2, gf2, p, train, self._seeds[2])
            gn1 = self._feed_forward_grad(gf2, gh2)
            self._layernorm_grad(self._h, gn1, gh, 1)
            residual_dropout_update_grad_input(gh, ga, p, train, self._seeds[0])
            self._attend_grad(ga)
            gx = self._attend_input_grad(x, None, None, gh)
        if mask is None:
            self.gradInput = gx
            return gx
        gm = self._gMask = resized(self._gMask, input[1].shape, -1, dt)
        gm.fill(0)
        out = self.gradInput = resized_list(self.gradInput, 2)
        out[0], out[1] = gx, gm
        return out

    def accGradParameters(self, input, gradOutput):
        x, _ = self._split(input)
        if self._gd is None or self._sums1 is None:
            raise ValueError("accGradParameters reads the gradients of updateGradInput, which "
                             "has not run")
        e, f, sw, sb = self.embedDim, self.dimFeedforward, self.scaleW, self.scaleB
        z = self._n2 if self.normFirst else self._n1
        linear_acc_grad_parameters(self._dIn.reshape(-1, f), self._gf2.reshape(-1, e),
                                   self.gradLinear2Weight, self.gradLinear2Bias, sw, sb)
        linear_acc_grad_parameters(z.reshape(-1, e), self._gd.reshape(-1, f),
                                   self.gradLinear1Weight, self.gradLinear1Bias, sw, sb)
        self._attend_acc(self._n1 if self.normFirst else x, None, None, self._ga)
        layernorm_acc_grad_parameters(self._sums1, self.gradNorm1Weight, self.gradNorm1Bias,
                                      sw, sb)
        layernorm_acc_grad_parameters(self._sums2, self.gradNorm2Weight, self.gradNorm2Bias,
                                      sw, sb)

    def extraRepr(self):
        return (f"{self.embedDim}, {self.numHeads} heads, feed-forward {self.dimFeedforward}, "
                f"{self.activation}, dropout {self.dropout}"
                + (", norm first" if self.normFirst else ""))
