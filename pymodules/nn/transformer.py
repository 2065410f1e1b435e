"""BigDL's Attention, FeedForwardNetwork and Transformer ("Attention Is All You Need").

Each is a container of the library's own layers, built from the constructor's arguments in
BigDL's module order, so that ``parameters()`` lists BigDL's arrays in its order and shapes:

- ``Attention``: the query, key, value and output projections, ``Linear(H, H)`` without bias
  (``[W_q, W_k, W_v, W_o]``, each (H, H)), Xavier-initialised; its softmax weights go through
  a ``Dropout``. The heads are computed in place by ``pymodules.engine.transformer``.
- ``FeedForwardNetwork``: ``Linear(H, filter)`` + ReLU, a ``Dropout``, ``Linear(filter, H)``
  (``[W_1 (F, H), b_1, W_2 (H, F), b_2]``), Xavier weights and zero biases.
- ``Transformer``: the embedding ``LookupTable(vocab, H)``; then for each layer a pre-normed,
  residual self-attention block (``LayerNormalization``, ``Attention``), in the decoder of the
  translation type an encoder-decoder attention block, and a feed-forward block
  (``LayerNormalization``, ``FeedForwardNetwork``); then a final ``LayerNormalization``. The
  translation type holds the encoder stack first, then the decoder stack.

The constructor builds the children; a file brings them back through ``add`` (checked against
what the arguments build), which is refused otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.embedding import lookup_table_update_grad_input
from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_scratch_size,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.engine.table import cadd_update_output
from pymodules.engine.transformer import (
    attention_context,
    attention_context_backward,
    attention_scores,
    attention_scores_backward,
    causal_bias,
    padding_bias,
    position_encoding,
    position_update_grad_input,
    position_update_output,
)
from pymodules.nn.activation import ReLU
from pymodules.nn.containers import Container, _acc_and_pass, _update_grad_input
from pymodules.nn.dropout import Dropout
from pymodules.nn.embedding import LookupTable
from pymodules.nn.init import Xavier, Zeros
from pymodules.nn.initializable import _held
from pymodules.nn.layer_norm import LayerNormalization
from pymodules.nn.linear import Linear
from pymodules.nn.module import Module, float_dtype, whole

_NO_PADDING = -1.0  # never equal to a token index, all of which are >= 0


def _rate(owner, what, p):
    """A dropout rate in [0, 1)."""
    p = float(p)
    if not 0 <= p < 1:
        raise ValueError(f"{owner}: {what} is the probability of dropping an element and must "
                         f"lie in [0, 1), got {p} (BigDL passed 1 - {what} to its Dropout, so "
                         f"that 1.0 meant no dropout there: here that is 0.0)")
    return p


def _dense(inputSize, outputSize, withBias, dtype):
    """BigDL's TransformerOperation.dense: a Linear with Xavier weights and zero biases."""
    return Linear(inputSize, outputSize, withBias=withBias, dtype=dtype).setInitMethod(
        Xavier(), Zeros())


def _dropping(drop) -> bool:
    """Whether a Dropout changes anything now (training with p > 0): otherwise it is skipped,
    its output being its input."""
    return drop._train and drop.p > 0


def _array(owner, x, what, rank, last=None):
    """``x``, an ndarray of ``rank`` dimensions (and ``last`` values on the last axis)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != rank or (last is not None and x.shape[-1] != last):
        want = "(batch, time)" if rank == 2 else f"(batch, time, {last})"
        raise ValueError(f"{what} has shape {x.shape}, expected {want}")
    return x


class _Built(Container):
    """A container whose children its constructor builds (``_plan``); ``add`` only restores
    them from a file, in order, each of the class and parameter shapes planned."""

    _tables = True

    def __init__(self, dtype):
        super().__init__()
        self.dtype = float_dtype(dtype)
        # While a file is being read (pymodules.nn.initializable.restoring), the children are
        # the file's, added next: building them here would allocate what the file replaces.
        self._restoring = getattr(_held, "arrays", None) is not None

    def _build(self):
        if not self._restoring:
            for i in range(self._count()):
                Container.add(self, self._planned(i)[2]())

    def _plan(self):
        """[(class, parameter shapes, factory)] of the children, in order."""
        raise NotImplementedError

    def _count(self):
        """How many children the arguments build."""
        return len(self._plan())

    def _planned(self, i):
        """Entry ``i`` of the plan (computed without the others where that matters: a file
        may claim any number of layers)."""
        return self._plan()[i]

    def add(self, module):
        i = len(self.modules)
        if not self._restoring or i >= self._count():
            raise ValueError(f"{self.getName()}: builds its own layers from its arguments; "
                             f"add only brings them back from a file")
        cls, shapes, _ = self._planned(i)
        got = [tuple(w.shape) for w in module.parameters()[0]] \
            if isinstance(module, Module) else None
        if type(module) is not cls or got != shapes:
            raise ValueError(f"{self.getName()}: layer {i} must be a {cls.__name__} with "
                             f"parameters {shapes}, got {module}")
        super().add(module)
        self._restoring = len(self.modules) < self._count()
        return self

    def _complete(self):
        if self._restoring:
            raise ValueError(f"{self.getName()}: holds {len(self.modules)} of its "
                             f"{self._count()} layers (an incomplete file)")

    def _label(self):
        return str(self)

    __str__ = Module.__str__
    __repr__ = Module.__repr__


class Attention(_Built):
    """Multi-head attention of queries ``x`` over a memory ``y``, BigDL's ``Attention``.

    Input: a table ``[x, y, bias]``: ``x`` (batch, tq, hiddenSize) the queries, ``y``
    (batch, tk, hiddenSize) the memory the keys and values come from (``y`` is ``x`` for
    self-attention), ``bias`` added to the logits, (batch or 1, numHeads or 1, tq or 1, tk)
    as BigDL's padding (batch, 1, 1, tk) or causal (1, 1, tq, tk) biases, -1e9 where masked.
    Output (batch, tq, hiddenSize):

        q = x W_q^T * depth^-0.5,  k = y W_k^T,  v = y W_v^T      (depth = hidden / heads)
        out = concat_h(dropout(softmax(q_h k_h^T + bias)) v_h) W_o^T

    The gradient is the table ``[dx, dy, dbias]`` (dbias summed over its broadcast axes).
    ``attentionDropout`` is the probability of dropping a softmax weight in training (a fix:
    BigDL passed 1 - attentionDropout to its Dropout).
    """

    _scratch = ("_probs", "_dropped", "_context", "_gradProbs", "_gradValue", "_gradScores",
                "_gradQuery", "_gradKey", "_gradBias", "_gradY", "_parts")

    def __init__(self, hiddenSize, numHeads, attentionDropout, dtype=np.float32):
        super().__init__(dtype)
        self.hiddenSize = whole(self, "hiddenSize", hiddenSize)
        self.numHeads = whole(self, "numHeads", numHeads)
        if self.hiddenSize <= 0 or self.numHeads <= 0:
            raise ValueError(f"Attention: hiddenSize and numHeads must be > 0, got "
                             f"{hiddenSize}, {numHeads}")
        if self.hiddenSize % self.numHeads:
            raise ValueError(f"Attention: hiddenSize {self.hiddenSize} is not divisible by "
                             f"numHeads {self.numHeads}")
        self.attentionDropout = _rate("Attention", "attentionDropout", attentionDropout)
        self.depth = self.hiddenSize // self.numHeads
        self.scale = self.depth ** -0.5
        for attr in self._scratch:
            setattr(self, attr, None)
        self.gradInput = []
        self._build()

    def _plan(self):
        h, d = self.hiddenSize, self.dtype
        dense = (Linear, [(h, h)], lambda: _dense(h, h, False, d))
        return [dense, dense, dense, dense,
                (Dropout, [], lambda: Dropout(self.attentionDropout, dtype=d))]

    def _table(self, input, what="input"):
        if not isinstance(input, (list, tuple)) or len(input) != 3:
            raise TypeError(f"{what} must be a table [x, y, bias] (queries, memory, logit "
                            f"bias), got {type(input).__name__}"
                            + (f" of {len(input)}" if isinstance(input, (list, tuple)) else ""))
        h = self.hiddenSize
        x = _array(self, input[0], f"{what} x", 3, h)
        y = _array(self, input[1], f"{what} y", 3, h)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{what} y has batch {y.shape[0]}, x has {x.shape[0]}")
        bias = input[2]
        if not isinstance(bias, np.ndarray):
            raise TypeError(f"{what} bias must be a numpy.ndarray, got {type(bias).__name__}")
        return x, y, bias

    def updateOutput(self, input):
        self._complete()
        x, y, bias = self._table(input)
        q_layer, k_layer, v_layer, o_layer, drop = self.modules
        (b, tq, h), tk = x.shape, y.shape[1]
        x2, y2 = x.reshape(b * tq, h), y.reshape(b * tk, h)
        q = q_layer.forward(x2).reshape(b, tq, h)
        k = k_layer.forward(y2).reshape(b, tk, h)
        v = v_layer.forward(y2).reshape(b, tk, h)
        probs = self._probs = resized(self._probs, (b, self.numHeads, tq, tk), -1, self.dtype)
        attention_scores(q, k, bias, probs, self.scale)
        dropped = self._dropped = drop.forward(probs) if _dropping(drop) else probs
        ctx = self._context = resized(self._context, (b, tq, h), -1, self.dtype)
        attention_context(dropped, v, ctx)
        self._parts = (x2, y2, q, k, v)
        self.output = o_layer.forward(ctx.reshape(b * tq, h)).reshape(b, tq, h)
        return self.output

    def _walk_back(self, input, gradOutput, step):
        x, y, bias = self._table(input)
        if self._parts is None or self._probs is None:
            raise ValueError("backward before forward: forward must run first")
        _array(self, gradOutput, "gradOutput", 3, self.hiddenSize)
        if gradOutput.shape != x.shape:
            raise ValueError(f"gradOutput has shape {gradOutput.shape}, expected {x.shape}")
        q_layer, k_layer, v_layer, o_layer, drop = self.modules
        x2, y2, q, k, v = self._parts
        (b, tq, h), tk = x.shape, y.shape[1]
        dt, probs = self.dtype, self._probs
        gctx = step(o_layer, self._context.reshape(b * tq, h), gradOutput.reshape(b * tq, h))
        gp = self._gradProbs = resized(self._gradProbs, probs)
        gv = self._gradValue = resized(self._gradValue, (b, tk, h), -1, dt)
        attention_context_backward(self._dropped, v, gctx.reshape(b, tq, h), gp, gv)
        if self._dropped is not probs:
            gp = step(drop, probs, gp)
        gs = self._gradScores = resized(self._gradScores, probs)
        gq = self._gradQuery = resized(self._gradQuery, (b, tq, h), -1, dt)
        gk = self._gradKey = resized(self._gradKey, (b, tk, h), -1, dt)
        gb = self._gradBias = resized(self._gradBias, bias.shape, -1, dt)
        attention_scores_backward(probs, gp, q, k, gs, gq, gk, gb, self.scale)
        gx = step(q_layer, x2, gq.reshape(b * tq, h))
        gy_k = step(k_layer, y2, gk.reshape(b * tk, h))
        gy_v = step(v_layer, y2, gv.reshape(b * tk, h))
        gy = self._gradY = resized(self._gradY, gy_k)
        cadd_update_output([gy_k, gy_v], gy)
        gi = self.gradInput = resized_list(self.gradInput, 3)
        gi[0], gi[1], gi[2] = gx.reshape(x.shape), gy.reshape(y.shape), gb
        return gi

    def extraRepr(self):
        return f"{self.hiddenSize}, {self.numHeads} heads" + (
            f", dropout {self.attentionDropout}" if self.attentionDropout else "")


class FeedForwardNetwork(_Built):
    """BigDL's position-wise ``FeedForwardNetwork`` on (batch, time, hiddenSize):
    ``y = W_2 dropout(relu(W_1 x + b_1)) + b_2``, W_1 (filterSize, hiddenSize), W_2
    (hiddenSize, filterSize); ``reluDropout`` is the probability of dropping a ReLU output in
    training (a fix: BigDL passed 1 - reluDropout to its Dropout)."""

    _tables = False
    _scratch = ("_input2d",)

    def __init__(self, hiddenSize, filterSize, reluDropout, dtype=np.float32):
        super().__init__(dtype)
        self.hiddenSize = whole(self, "hiddenSize", hiddenSize)
        self.filterSize = whole(self, "filterSize", filterSize)
        if self.hiddenSize <= 0 or self.filterSize <= 0:
            raise ValueError(f"FeedForwardNetwork: hiddenSize and filterSize must be > 0, got "
                             f"{hiddenSize}, {filterSize}")
        self.reluDropout = _rate("FeedForwardNetwork", "reluDropout", reluDropout)
        self._input2d = None
        self._build()

    def _plan(self):
        h, f, d = self.hiddenSize, self.filterSize, self.dtype
        return [(Linear, [(f, h), (f,)], lambda: _dense(h, f, True, d)),
                (ReLU, [], lambda: ReLU(dtype=d)),
                (Dropout, [], lambda: Dropout(self.reluDropout, dtype=d)),
                (Linear, [(h, f), (h,)], lambda: _dense(f, h, True, d))]

    def updateOutput(self, input):
        self._complete()
        x = _array(self, input, "input", 3, self.hiddenSize)
        filt, relu, drop, out = self.modules
        x2 = self._input2d = x.reshape(-1, self.hiddenSize)
        r = relu.forward(filt.forward(x2))
        d = drop.forward(r) if _dropping(drop) else r
        self.output = out.forward(d).reshape(x.shape)
        return self.output

    def _walk_back(self, input, gradOutput, step):
        x = _array(self, input, "input", 3, self.hiddenSize)
        if self._input2d is None:
            raise ValueError("backward before forward: forward must run first")
        _array(self, gradOutput, "gradOutput", 3, self.hiddenSize)
        if gradOutput.shape != x.shape:
            raise ValueError(f"gradOutput has shape {gradOutput.shape}, expected {x.shape}")
        filt, relu, drop, out = self.modules
        r = relu.output
        dropped = _dropping(drop)
        g = step(out, drop.output if dropped else r, gradOutput.reshape(-1, self.hiddenSize))
        if dropped:
            g = step(drop, r, g)
        g = step(relu, filt.output, g)
        return step(filt, self._input2d, g).reshape(x.shape)

    def extraRepr(self):
        return f"{self.hiddenSize} -> {self.filterSize} -> {self.hiddenSize}" + (
            f", dropout {self.reluDropout}" if self.reluDropout else "")


_SELF, _ENCDEC, _FFN = 0, 1, 2
_TYPES = ("languagemodel", "translation")


class Transformer(_Built):
    """BigDL's ``Transformer``: the language model (``transformerType="languagemodel"``), a
    decoder stack over token indices (batch, time), or the encoder-decoder ``"translation"``
    model over ``[encoderInput (batch, ti), decoderInput (batch, to)]``.

    Tokens are 0-based indices in [0, vocabSize) (int arrays, or floats holding whole
    numbers). Embeddings are scaled by sqrt(hiddenSize) and get the sine/cosine position
    encoding added; the decoder's input is shifted right by one step (its step t sees the
    tokens before t) and attends causally. Each block is ``x + dropout(f(norm(x)))``
    (LayerNormalization, eps 1e-6, before each attention and feed-forward network); a final
    LayerNormalization ends each stack. Output: (batch, time, hiddenSize), or with
    ``withShareWeightsLinear`` the logits (batch, time, vocabSize) of ``hidden @ E^T``, E the
    embedding weight (no bias). The gradient of the indices is zero.

    ``paddingValue``: the index of the padding token (None: none). Its embedding is a zero
    vector (BigDL's maskZero) whose row gets no gradient through the lookup, and in the
    translation model the encoder positions holding it are masked (-1e9 logit bias) from the
    encoder's self-attention and the decoder's encoder-decoder attention; the language model
    masks future steps only, as BigDL.

    ``embeddingDropout`` drops elements of the position-encoded embeddings and of each
    block's output before its residual addition (BigDL uses it for both), ``attentionDropout``
    softmax weights, ``ffnDropout`` ReLU outputs; all are probabilities of dropping (a fix:
    BigDL passed 1 - p to its Dropout).
    Fixes: the language model supports ``withShareWeightsLinear`` (BigDL's failed), and the
    shared weight's gradient through the logits adds to the embedding's (BigDL dropped it).
    Parameters, in BigDL's order: the embedding (vocabSize, hiddenSize); per layer the
    self-attention's norm and Attention, [the encoder-decoder attention's norm and Attention,]
    the feed-forward network's norm and FeedForwardNetwork; the final norm (the translation
    type: the encoder's, then the decoder's).
    """

    _scratch = ("_timing", "_causal", "_padBias", "_pos", "_gradEmb", "_logits", "_gradHidden",
                "_transposed", "_grads", "_gradMemory", "_state")

    def __init__(self, vocabSize, hiddenSize, numHeads, filterSize, numHiddenlayers,
                 embeddingDropout, attentionDropout, ffnDropout, paddingValue=0,
                 withShareWeightsLinear=False, transformerType="languagemodel",
                 dtype=np.float32):
        super().__init__(dtype)
        name = "Transformer"
        self.vocabSize = whole(name, "vocabSize", vocabSize)
        self.hiddenSize = whole(name, "hiddenSize", hiddenSize)
        self.numHeads = whole(name, "numHeads", numHeads)
        self.filterSize = whole(name, "filterSize", filterSize)
        self.numHiddenlayers = whole(name, "numHiddenlayers", numHiddenlayers)
        if min(self.vocabSize, self.hiddenSize, self.numHeads, self.filterSize,
               self.numHiddenlayers) <= 0:
            raise ValueError(f"{name}: vocabSize, hiddenSize, numHeads, filterSize and "
                             f"numHiddenlayers must be > 0, got {vocabSize}, {hiddenSize}, "
                             f"{numHeads}, {filterSize}, {numHiddenlayers}")
        if self.hiddenSize % self.numHeads:
            raise ValueError(f"{name}: hiddenSize {self.hiddenSize} is not divisible by "
                             f"numHeads {self.numHeads}")
        self.embeddingDropout = _rate(name, "embeddingDropout", embeddingDropout)
        self.attentionDropout = _rate(name, "attentionDropout", attentionDropout)
        self.ffnDropout = _rate(name, "ffnDropout", ffnDropout)
        if paddingValue is not None:
            pad = whole(name, "paddingValue", paddingValue)
            if not 0 <= pad < self.vocabSize:
                raise ValueError(f"{name}: paddingValue {pad} is not a token index in "
                                 f"[0, {self.vocabSize}) (None: no padding token)")
            paddingValue = pad
        self.paddingValue = paddingValue
        self.withShareWeightsLinear = bool(withShareWeightsLinear)
        if transformerType not in _TYPES:
            raise ValueError(f"{name}: transformerType must be 'languagemodel' or "
                             f"'translation', got {transformerType!r}")
        self.transformerType = transformerType
        self._kinds = ([[_SELF, _FFN], [_SELF, _ENCDEC, _FFN]]
                       if transformerType == "translation" else [[_SELF, _FFN]])
        self._layoutCache = None
        for attr in self._scratch:
            setattr(self, attr, None)
        self._build()

    # -- structure ------------------------------------------------------------------------
    @property
    def _stacks(self):
        """[(input dropout, [(kind, norm, layer, dropout)], final norm)] as child indices:
        the decoder stack alone, or the encoder's then the decoder's."""
        if self._layoutCache is None:
            self._layoutCache = self._layout()
        return self._layoutCache

    def _layout(self):
        stacks, i = [], 1  # child 0: the embedding
        for per_layer in self._kinds:
            start, blocks = i, []
            i += 1
            for _ in range(self.numHiddenlayers):
                for kind in per_layer:
                    blocks.append((kind, i, i + 1, i + 2))
                    i += 3
            stacks.append((start, blocks, i))
            i += 1
        return stacks

    def _count(self):
        return 1 + sum(2 + 3 * len(k) * self.numHiddenlayers for k in self._kinds)

    def _planned(self, i):
        h, d, v = self.hiddenSize, self.dtype, self.vocabSize
        if i == 0:
            return (LookupTable, [(v, h)],
                    lambda: LookupTable(v, h, self.paddingValue, dtype=d))
        j = i - 1
        for kinds in self._kinds:
            size = 2 + 3 * len(kinds) * self.numHiddenlayers
            if j >= size:
                j -= size
                continue
            if j == 0 or (j < size - 1 and (j - 1) % 3 == 2):
                return (Dropout, [], lambda: Dropout(self.embeddingDropout, dtype=d))
            if j == size - 1 or (j - 1) % 3 == 0:
                return (LayerNormalization, [(h,), (h,)],
                        lambda: LayerNormalization(h, dtype=d))
            if kinds[(j - 1) // 3 % len(kinds)] == _FFN:
                f = self.filterSize
                return (FeedForwardNetwork, [(f, h), (f,), (h, f), (h,)],
                        lambda: FeedForwardNetwork(h, self.filterSize, self.ffnDropout,
                                                   dtype=d))
            return (Attention, [(h, h)] * 4,
                    lambda: Attention(h, self.numHeads, self.attentionDropout, dtype=d))
        raise IndexError(i)

    def _padding(self):
        return _NO_PADDING if self.paddingValue is None else float(self.paddingValue)

    def _ids(self, input):
        """The index arrays: (decoder ids,) or (encoder ids, decoder ids)."""
        if self.transformerType == "languagemodel":
            return (_array(self, input, "input", 2),)
        if not isinstance(input, (list, tuple)) or len(input) != 2:
            raise TypeError(f"input must be a table [encoderInput, decoderInput] of token "
                            f"indices (BigDL's beam-search decoding of a single input is not "
                            f"provided), got {type(input).__name__}")
        enc = _array(self, input[0], "encoderInput", 2)
        dec = _array(self, input[1], "decoderInput", 2)
        if enc.shape[0] != dec.shape[0]:
            raise ValueError(f"encoderInput has batch {enc.shape[0]}, decoderInput "
                             f"{dec.shape[0]}")
        return enc, dec

    def _timing_for(self, steps):
        t = self._timing
        if t is None or t.shape[0] < steps or t.dtype != self.dtype:
            t = self._timing = np.empty((steps, self.hiddenSize), self.dtype)
            position_encoding(t)
        return t[:steps]

    def _causal_for(self, steps):
        c = self._causal
        if c is None or c.shape[2] != steps or c.dtype != self.dtype:
            c = self._causal = np.empty((1, 1, steps, steps), self.dtype)
            causal_bias(c)
        return c

    # -- forward --------------------------------------------------------------------------
    def _embed(self, which, ids, shift):
        """The scaled, position-encoded embeddings of ``ids`` (held in ``_pos[which]``)."""
        emb = self.modules[0]
        e = emb.forward(ids)
        pos = self._pos[which] = resized(self._pos[which], e)
        position_update_output(e, ids, self._timing_for(ids.shape[1]), pos,
                               math.sqrt(self.hiddenSize), shift, self._padding())
        return pos

    def _stack(self, s, x, bias, memory=None, memBias=None):
        """Stack ``s`` over its embedded input ``x``; its final norm's output."""
        start, blocks, final = self._stacks[s]
        drop = self.modules[start]
        x = drop.forward(x) if _dropping(drop) else x
        ins, res, tables = self._state[s]
        for j, (kind, n, f, d) in enumerate(blocks):
            ins[j] = x
            normed = self.modules[n].forward(x)
            if kind == _FFN:
                a = self.modules[f].forward(normed)
            else:
                t = tables[j] = resized_list(tables[j], 3)
                t[0], t[1], t[2] = (normed, normed, bias) if kind == _SELF else \
                    (normed, memory, memBias)
                a = self.modules[f].forward(t)
            drop = self.modules[d]
            if _dropping(drop):
                a = drop.forward(a)
            out = res[j] = resized(res[j], x)
            cadd_update_output([x, a], out)
            x = out
        ins[len(blocks)] = x
        return self.modules[final].forward(x)

    def updateOutput(self, input):
        self._complete()
        ids = self._ids(input)
        n = len(self._stacks)
        if self._state is None:
            self._state = [([None] * (len(b) + 1), [None] * len(b), [None] * len(b))
                           for _, b, _ in self._stacks]
            self._pos = [None, None]
        if n == 1:
            h = self._stack(0, self._embed(0, ids[0], True), self._causal_for(ids[0].shape[1]))
        else:
            enc, dec = ids
            # no padding token: a zero bias
            pad = self._padBias = resized(self._padBias, (enc.shape[0], 1, 1, enc.shape[1]),
                                          -1, self.dtype)
            padding_bias(enc, pad, self._padding())
            memory = self._stack(0, self._embed(0, enc, False), pad)
            h = self._stack(1, self._embed(1, dec, True), self._causal_for(dec.shape[1]),
                            memory, pad)
        if not self.withShareWeightsLinear:
            self.output = h
            return h
        b, t, hid = h.shape
        w = self.modules[0].weight
        h2 = h.reshape(b * t, hid)
        logits = self._logits = resized(self._logits, (b * t, self.vocabSize), -1, self.dtype)
        size = linear_scratch_size(h2, w)
        scratch = None
        if size:
            scratch = self._transposed = resized(self._transposed, (size,), -1, self.dtype)
        linear_update_output(h2, logits, w, None, scratch)
        self.output = logits.reshape(b, t, self.vocabSize)
        return self.output

    # -- backward -------------------------------------------------------------------------
    def _stack_back(self, s, g, step):
        """The gradient of stack ``s``'s embedded input, from that of its output ``g``; the
        gradient of the memory (the encoder's output) its encoder-decoder attentions read is
        left in ``_gradMemory``."""
        start, blocks, final = self._stacks[s]
        ins, res, tables = self._state[s]
        g = step(self.modules[final], ins[len(blocks)], g)
        grads = self._grads[s]
        mem = []
        for j in range(len(blocks) - 1, -1, -1):
            kind, n, f, d = blocks[j]
            drop = self.modules[d]
            if _dropping(drop):
                layer_out = self.modules[f].output
                gd = step(drop, layer_out, g)
            else:
                gd = g
            normed = self.modules[n].output
            if kind == _FFN:
                gn = step(self.modules[f], normed, gd)
            else:
                gt = step(self.modules[f], tables[j], gd)
                if kind == _SELF:
                    gn = grads[2 * j + 1] = resized(grads[2 * j + 1], gt[0])
                    cadd_update_output([gt[0], gt[1]], gn)
                else:
                    gn = gt[0]
                    mem.append(gt[1])
            gb = step(self.modules[n], ins[j], gn)
            gx = grads[2 * j] = resized(grads[2 * j], g)
            cadd_update_output([g, gb], gx)
            g = gx
        if mem:
            gm = self._gradMemory = resized(self._gradMemory, mem[0])
            cadd_update_output(mem, gm)
        drop = self.modules[start]
        return step(drop, self._pos[s], g) if _dropping(drop) else g

    def _unembed(self, which, ids, g, shift, step):
        """The embedding's part of the backward of stack input ``which``: the gradient of
        the indices (zeros)."""
        ge = self._gradEmb[which] = resized(self._gradEmb[which], g)
        position_update_grad_input(ids, g, ge, math.sqrt(self.hiddenSize), shift,
                                   self._padding())
        return step(self.modules[0], ids, ge)

    def _walk_back(self, input, gradOutput, step):
        ids = self._ids(input)
        if self._state is None or self._pos[0] is None:
            raise ValueError("backward before forward: forward must run first")
        n = len(self._stacks)
        if self._grads is None:
            self._grads = [[None] * (2 * len(b)) for _, b, _ in self._stacks]
            self._gradEmb = [None, None]
        final = self.modules[self._stacks[-1][2]]
        h = final.output
        want = self.output.shape
        if not isinstance(gradOutput, np.ndarray) or gradOutput.shape != want:
            got = gradOutput.shape if isinstance(gradOutput, np.ndarray) else \
                type(gradOutput).__name__
            raise ValueError(f"gradOutput has shape {got}, expected {want}")
        g = gradOutput
        if self.withShareWeightsLinear:
            b, t, hid = h.shape
            emb = self.modules[0]
            h2, g2 = h.reshape(b * t, hid), gradOutput.reshape(b * t, self.vocabSize)
            if step is not _acc_and_pass:
                gh = self._gradHidden = resized(self._gradHidden, h2)
                linear_update_grad_input(h2, g2, gh, emb.weight)
            if step is not _update_grad_input:
                linear_acc_grad_parameters(h2, g2, emb.gradWeight, None, emb.scaleW, 0.0)
            g = self._gradHidden.reshape(h.shape)
        if n == 1:
            gx = self._stack_back(0, g, step)
            return self._unembed(0, ids[0], gx, True, step)
        enc, dec = ids
        gx = self._stack_back(1, g, step)
        gi = self.gradInput = resized_list(self.gradInput, 2)
        self._unembed(1, dec, gx, True, step)
        gd = gi[1] = resized(gi[1], dec.shape, -1, self.dtype)
        lookup_table_update_grad_input(dec, gd)
        gx = self._stack_back(0, self._gradMemory, step)
        self._unembed(0, enc, gx, False, step)
        ge = gi[0] = resized(gi[0], enc.shape, -1, self.dtype)
        lookup_table_update_grad_input(enc, ge)
        return gi

    def extraRepr(self):
        return (f"{self.transformerType}, vocab {self.vocabSize}, hidden {self.hiddenSize}, "
                f"{self.numHeads} heads, filter {self.filterSize}, {self.numHiddenlayers} "
                f"layers" + (", shared output weights" if self.withShareWeightsLinear else ""))
