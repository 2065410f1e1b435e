"""Element-wise and small parametric layers: CMul, CAdd, Scale, Add, Mul, Cosine, Maxout,
Highway, Bilinear.

A parameter of shape ``size`` applies to an input as in BigDL: element by element when both
hold as many numbers, otherwise repeated over the batch axis and over every dimension where
``size`` is 1 (``CMul([1, 3, 1, 1])`` scales the channels of (n, 3, h, w) images).
"""

import math

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.elementwise import (
    scale_acc_grad_parameters,
    scale_update_grad_input,
    scale_update_output,
)
from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.engine.parametric import (
    bilinear_acc_grad_parameters,
    bilinear_update_grad_input,
    bilinear_update_output,
    cosine_acc_grad_parameters,
    cosine_update_grad_input,
    cosine_update_output,
    highway_acc_grad_input,
    highway_update_grad_input,
    highway_update_output,
    maxout_update_grad_input,
    maxout_update_output,
)
from pymodules.facade import require_array, shape_of
from pymodules.nn.distance import _pair
from pymodules.nn.init import RandomUniform
from pymodules.nn.initializable import Initializable, parameter
from pymodules.nn.module import Module, whole
from pymodules.nn.table import _grad_buffers


def _size(owner, size):
    """``size`` (an int or a sequence of ints, each > 0) as a tuple."""
    sizes = (size,) if isinstance(size, (int, np.integer, float)) else tuple(size)
    sizes = tuple(whole(owner, "size", s) for s in sizes)
    if not sizes or any(s <= 0 for s in sizes):
        raise ValueError(f"{type(owner).__name__}: size must be one or more sizes > 0, "
                         f"got {size!r}")
    return sizes


class _Scaling(Initializable):
    """``y = x * weight + bias`` with either parameter optional, repeated over the input."""

    def _setup(self, size, weight, bias, wRegularizer=None, bRegularizer=None, inits=()):
        self.size = _size(self, size)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        n = math.prod(self.size)
        self._fans = (n, n)
        self._build(self.size if weight else None, self.size if bias else None, inits)

    def _view(self, a, what="input"):
        """The array the kernels see for ``a`` (the input, its gradients, the output)."""
        return a

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        scale_update_output(self._view(input), self._view(out), self.weight, self.bias)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        scale_update_grad_input(self._view(gradOutput, "gradOutput"), self._view(gi),
                                self.weight)
        return gi

    def accGradParameters(self, input, gradOutput):
        scale_acc_grad_parameters(self._view(input), self._view(gradOutput, "gradOutput"),
                                  None if self.weight is None else self.gradWeight,
                                  None if self.bias is None else self.gradBias,
                                  self.scaleW, self.scaleB)
        self._regularize()

    def extraRepr(self):
        return f"{list(self.size)}"


class CMul(_Scaling):
    """``y = x * weight``, weight of shape ``size`` repeated over the input (module doc).

    Default init: uniform in +-1/sqrt(number of weights).
    """

    def __init__(self, size, wRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        self._setup(size, True, False, wRegularizer=wRegularizer)


class CAdd(_Scaling):
    """``y = x + bias``, bias of shape ``size`` repeated over the input (module doc).

    Default init: uniform in +-1/sqrt(number of biases).
    """

    def __init__(self, size, bRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        self._setup(size, False, True, bRegularizer=bRegularizer)


class Scale(_Scaling):
    """``y = x * weight + bias`` (CMul then CAdd), both of shape ``size``.

    Parameters ``[weight, bias]``; the weight gradient is ``sum(gradOutput * input)``.
    Default init: both uniform in +-1/sqrt(number of weights).
    """

    def __init__(self, size, dtype=np.float32):
        super().__init__(dtype)
        self._setup(size, True, True)


class Add(_Scaling):
    """``y = x + bias``, bias (inputSize,): a sample (inputSize,) or a batch whose samples
    hold inputSize numbers; with inputSize 1 the bias is a scalar added everywhere.

    Default init: uniform in +-1/sqrt(inputSize).
    """

    def __init__(self, inputSize, dtype=np.float32):
        super().__init__(dtype)
        self.inputSize = whole(self, "inputSize", inputSize)
        self._setup(self.inputSize, False, True)

    def _view(self, a, what="input"):
        a = require_array(a, what)
        if a.size == self.inputSize or a.ndim < 2:
            return a
        return a.reshape(a.shape[0], math.prod(a.shape[1:]))


    def extraRepr(self):
        return f"{self.inputSize}"


class Mul(_Scaling):
    """``y = weight * x`` with one learnt scalar, weight of shape (1,).

    Default init: uniform in [-1, 1].
    """

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self.size = (1,)
        self._fans = (1, 1)
        self._build((1,), None, (), RandomUniform(-1.0, 1.0))

    def _view(self, a, what="input"):
        return require_array(a, what).reshape(-1)


    def extraRepr(self):
        return ""


class Cosine(Initializable):
    """``y[j] = x . w[j] / ((|w[j]| + 1e-12) (|x| + 1e-12))``: the cosine similarity of an input
    (inputSize,) or of each row of a batch (batch, inputSize) to the rows of weight
    (outputSize, inputSize).

    Default init, as BigDL's: uniform in +-1/sqrt(outputSize).
    """

    _params = (("weight", "gradWeight"),)
    _scratch = ("_weightNorm", "_inputNorm", "_scaled", "_inputScaled")

    def __init__(self, inputSize, outputSize, dtype=np.float32):
        super().__init__(dtype)
        self.inputSize = whole(self, "inputSize", inputSize)
        self.outputSize = whole(self, "outputSize", outputSize)
        if self.inputSize <= 0 or self.outputSize <= 0:
            raise ValueError(f"Cosine: sizes must be > 0, got {inputSize} -> {outputSize}")
        self._weightNorm = self._inputNorm = self._scaled = self._inputScaled = None
        self._fans = (self.inputSize, self.outputSize)
        stdv = 1.0 / math.sqrt(self.outputSize)
        self._build((self.outputSize, self.inputSize), None, (), RandomUniform(-stdv, stdv))

    def _rows(self, input):
        shape = shape_of(input)
        return (shape[0],) if len(shape) == 2 else (1,)

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, self.outputSize, self.dtype)
        wn = self._weightNorm = resized(self._weightNorm, (self.outputSize,), -1, self.dtype)
        xn = self._inputNorm = resized(self._inputNorm, self._rows(input), -1, self.dtype)
        cosine_update_output(input, out, self.weight, wn, xn)
        return out

    def _work(self, input):
        s = self._scaled = resized(self._scaled, self._rows(input) + (self.outputSize,), -1,
                                   self.dtype)
        return s

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        cosine_update_grad_input(input, self.output, gradOutput, gi, self.weight,
                                 self._weightNorm, self._inputNorm, self._work(input))
        return gi

    def accGradParameters(self, input, gradOutput):
        xs = self._inputScaled = resized(self._inputScaled,
                                         self._rows(input) + (self.inputSize,), -1, self.dtype)
        cosine_acc_grad_parameters(input, self.output, gradOutput, self.gradWeight, self.weight,
                                   self._weightNorm, self._inputNorm, self._work(input), xs,
                                   self.scaleW)

    def extraRepr(self):
        return f"{self.inputSize}, {self.outputSize}"


class Maxout(Initializable):
    """``y[j] = max_p z[p * outputSize + j]`` over the ``maxoutNumber`` pieces of
    ``z = W x + b``, W (maxoutNumber * outputSize, inputSize): the largest of maxoutNumber
    Linear(inputSize, outputSize). The gradient goes to the (first) largest piece.

    Parameters ``[weight, bias]`` as that Linear's, with its default init.
    """

    _scratch = ("_pre", "_gradPre", "_indices")

    def __init__(self, inputSize, outputSize, maxoutNumber, withBias=True, wRegularizer=None,
                 bRegularizer=None, initWeight=None, initBias=None, dtype=np.float32):
        super().__init__(dtype)
        self.inputSize = whole(self, "inputSize", inputSize)
        self.outputSize = whole(self, "outputSize", outputSize)
        self.maxoutNumber = whole(self, "maxoutNumber", maxoutNumber)
        if min(self.inputSize, self.outputSize, self.maxoutNumber) <= 0:
            raise ValueError(f"Maxout: sizes must be > 0, got {inputSize}, {outputSize}, "
                             f"{maxoutNumber}")
        self.withBias = bool(withBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._pre = self._gradPre = self._indices = None
        width = self.maxoutNumber * self.outputSize
        self._fans = (self.inputSize, width)
        self._build((width, self.inputSize), width if self.withBias else None,
                    (initWeight, initBias))

    def updateOutput(self, input):
        width = self.maxoutNumber * self.outputSize
        pre = self._pre = resized(self._pre, input, width, self.dtype)
        linear_update_output(input, pre, self.weight, self.bias)
        out = self.output = resized(self.output, input, self.outputSize, self.dtype)
        idx = self._indices = resized(self._indices, out.shape, -1, np.dtype(np.int32))
        maxout_update_output(pre, out, idx, self.maxoutNumber)
        return out

    def _scatter(self, gradOutput):
        width = self.maxoutNumber * self.outputSize
        gp = self._gradPre = resized(self._gradPre, gradOutput, width, self.dtype)
        maxout_update_grad_input(gradOutput, self._indices, gp, self.maxoutNumber)
        return gp

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        linear_update_grad_input(input, self._scatter(gradOutput), gi, self.weight)
        return gi

    def accGradParameters(self, input, gradOutput):
        linear_acc_grad_parameters(input, self._scatter(gradOutput), self.gradWeight,
                                   self.gradBias if self.bias is not None else None,
                                   self.scaleW, self.scaleB)
        self._regularize()

    def extraRepr(self):
        return f"{self.inputSize} -> {self.outputSize} x {self.maxoutNumber}"


class Highway(Module):
    """``y = t * h + (1 - t) * x`` with the gate ``t = sigmoid(W_t x + b_t)`` and
    ``h = activation(W_h x + b_h)`` (no activation: the identity), on a vector (size,) or a
    batch (batch, size).

    Parameters ``[W_t (size, size), b_t, W_h (size, size), b_h]`` (no biases without
    ``withBias``), each as a Linear(size, size)'s, with its default init and the regularizers.
    ``activation`` is an element-wise layer (``pm.Tanh()``, ...) that this layer then owns.
    """

    _params = (("weightT", "gradWeightT"), ("biasT", "gradBiasT"),
               ("weightH", "gradWeightH"), ("biasH", "gradBiasH"))
    _scratch = ("_gate", "_pre", "_transform", "_gradGate", "_gradTransform", "_gradPre")

    def __init__(self, size, withBias=True, activation=None, wRegularizer=None,
                 bRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        self.size = whole(self, "size", size)
        if self.size <= 0:
            raise ValueError(f"Highway: size must be > 0, got {size}")
        if activation is not None and not isinstance(activation, Module):
            raise TypeError(f"Highway: activation must be a layer (pm.Tanh(), ...) or None, "
                            f"got {type(activation).__name__}")
        self.withBias = bool(withBias)
        self.activation = activation
        if activation is not None and activation.dtype != self.dtype:
            activation._convert(self.dtype)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        s = self.size
        self.weightT = parameter(self, "weightT", (s, s))
        self.biasT = parameter(self, "biasT", s) if self.withBias else None
        self.weightH = parameter(self, "weightH", (s, s))
        self.biasH = parameter(self, "biasH", s) if self.withBias else None
        for attr in self._scratch:
            setattr(self, attr, None)
        self.reset()

    def children(self):
        return [] if self.activation is None else [self.activation]

    def reset(self):
        init = RandomUniform()
        for _, value, _ in self._slots():
            init(getattr(self, value), self.size, self.size)
        self.zeroGradParameters()
        return self

    def updateOutput(self, input):
        gate = self._gate = resized(self._gate, input, -1, self.dtype)
        linear_update_output(input, gate, self.weightT, self.biasT)
        pre = self._pre = resized(self._pre, input, -1, self.dtype)
        linear_update_output(input, pre, self.weightH, self.biasH)
        h = self._transform = pre if self.activation is None else self.activation.forward(pre)
        out = self.output = resized(self.output, input, -1, self.dtype)
        highway_update_output(input, gate, h, out)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        gg = self._gradGate = resized(self._gradGate, input, -1, self.dtype)
        gh = self._gradTransform = resized(self._gradTransform, input, -1, self.dtype)
        highway_update_grad_input(input, self._gate, self._transform, gradOutput, gi, gg, gh)
        self._gradPre = gh if self.activation is None else \
            self.activation.backward(self._pre, gh)
        highway_acc_grad_input(gg, self._gradPre, self.weightT, self.weightH, gi)
        return gi

    def accGradParameters(self, input, gradOutput):
        """From the gate gradients of the updateGradInput that ran before (as a graph)."""
        if self._gradGate is None or self._gradPre is None:
            raise ValueError("accGradParameters reads the gate gradients of updateGradInput, "
                             "which has not run")
        self._learn(input, self._gradGate, self.weightT, self.gradWeightT, self.biasT,
                    None if self.biasT is None else self.gradBiasT)
        self._learn(input, self._gradPre, self.weightH, self.gradWeightH, self.biasH,
                    None if self.biasH is None else self.gradBiasH)

    def _learn(self, input, grad, weight, gradWeight, bias, gradBias):
        """One Linear's accGradParameters and regularizers, at its gradient ``grad``."""
        linear_acc_grad_parameters(input, grad, gradWeight, gradBias, self.scaleW, self.scaleB)
        if self.wRegularizer is not None:
            self.wRegularizer.accRegularization(weight, gradWeight, self.scaleW)
        if self.bRegularizer is not None and bias is not None:
            self.bRegularizer.accRegularization(bias, gradBias, self.scaleB)

    def extraRepr(self):
        act = "" if self.activation is None else f", {type(self.activation).__name__}"
        return f"{self.size}" + ("" if self.withBias else ", no bias") + act



class Bilinear(Initializable):
    """``y[o] = x1 @ weight[o] @ x2 + bias[o]`` of a table ``[x1, x2]``: vectors (inputSize1,)
    and (inputSize2,), or batches (batch, inputSize1) and (batch, inputSize2).

    Parameters ``[weight (outputSize, inputSize1, inputSize2), bias (outputSize)]`` (no bias
    without ``biasRes``). Default init: both uniform in +-1/sqrt(inputSize1).
    """

    _tables = True
    _scratch = ("_products", "_outer")

    def __init__(self, inputSize1, inputSize2, outputSize, biasRes=True, wRegularizer=None,
                 bRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        self.inputSize1 = whole(self, "inputSize1", inputSize1)
        self.inputSize2 = whole(self, "inputSize2", inputSize2)
        self.outputSize = whole(self, "outputSize", outputSize)
        if min(self.inputSize1, self.inputSize2, self.outputSize) <= 0:
            raise ValueError(f"Bilinear: sizes must be > 0, got {inputSize1}, {inputSize2}, "
                             f"{outputSize}")
        self.biasRes = bool(biasRes)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self.gradInput = []
        self._products = self._outer = None
        self._fans = (self.inputSize1, self.outputSize)
        self._build((self.outputSize, self.inputSize1, self.inputSize2),
                    self.outputSize if self.biasRes else None)

    def _rows(self, x1):
        return (x1.shape[0],) if x1.ndim == 2 else ()

    def _buffer(self, attr, x1):
        n = x1.shape[0] if x1.ndim == 2 else 1
        buf = resized(getattr(self, attr), (n, self.outputSize, self.inputSize2), -1,
                      self.dtype)
        setattr(self, attr, buf)
        return buf

    def updateOutput(self, input):
        x1, x2 = _pair(input)
        out = self.output = resized(self.output, self._rows(x1) + (self.outputSize,), -1,
                                    self.dtype)
        bilinear_update_output(x1, x2, out, self.weight, self.bias,
                               self._buffer("_products", x1))
        return out

    def updateGradInput(self, input, gradOutput):
        x1, x2 = _pair(input)
        g1, g2 = self.gradInput = _grad_buffers(self.gradInput, (x1, x2))
        bilinear_update_grad_input(x1, x2, gradOutput, g1, g2, self.weight, self._products)
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        x1, x2 = _pair(input)
        bilinear_acc_grad_parameters(x1, x2, gradOutput, self.gradWeight,
                                     self.gradBias if self.bias is not None else None,
                                     self._buffer("_outer", x1), self.scaleW, self.scaleB)
        self._regularize()

    def extraRepr(self):
        return f"{self.inputSize1}, {self.inputSize2}, {self.outputSize}, {self.biasRes}"
