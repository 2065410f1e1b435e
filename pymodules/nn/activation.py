"""Activations: elementwise transfer functions, PReLU and the softmax family.

Every elementwise layer calls the engine's pair of kernels named after its function
(``tanh_update_output``, ``tanh_update_grad_input``). Layers with an in-place flag (``ip`` /
``inplace``) write their output into the input and, in backward, their gradInput into
gradOutput, as Torch does: the caller's arrays are then overwritten.
"""

import numpy as np

from pymodules.engine import activation as _kernels
from pymodules.engine.activation import (
    prelu_acc_grad_parameters,
    prelu_update_grad_input,
    prelu_update_output,
    threshold_update_output,
)
from pymodules.engine.buffers import resized
from pymodules.engine.softmax import (
    log_softmax_update_grad_input,
    log_softmax_update_output,
    softmax_update_grad_input,
    softmax_update_output,
)
from pymodules.nn.init import ConstInitMethod
from pymodules.nn.initializable import parameter
from pymodules.nn.module import Module, whole


class _Elementwise(Module):
    """y = f(x) elementwise on any shape, with the scalars ``_abc``: a subclass names f, as
    ``class Tanh(_Unary, kernel="tanh")``, and runs the engine's ``tanh_update_output`` and
    ``tanh_update_grad_input``."""

    _forward = _backward = None

    def __init_subclass__(cls, kernel=None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kernel is not None:
            cls._forward = staticmethod(getattr(_kernels, f"{kernel}_update_output"))
            cls._backward = staticmethod(getattr(_kernels, f"{kernel}_update_grad_input"))

    def __init__(self, inplace=False, scalars=(), dtype=np.float32):
        super().__init__(dtype)
        self.inplace = bool(inplace)
        self._abc = tuple(float(s) for s in scalars)

    def updateOutput(self, input):
        out = input if self.inplace else resized(self.output, input, -1, self.dtype)
        self._forward(input, out, *self._abc)
        self.output = out
        return out

    def updateGradInput(self, input, gradOutput):
        gi = gradOutput if self.inplace else resized(self.gradInput, input, -1, self.dtype)
        self._backward(input, self.output, gradOutput, gi, *self._abc)
        self.gradInput = gi
        return gi

    def extraRepr(self):
        return "inplace" if self.inplace else ""


class _Unary(_Elementwise):
    """An elementwise layer whose only argument is its dtype."""

    def __init__(self, dtype=np.float32):
        super().__init__(dtype=dtype)


class Threshold(_Elementwise, kernel="threshold"):
    """``y = x if x > th else v``."""

    def __init__(self, th=1e-6, v=0.0, ip=False, dtype=np.float32):
        # In place, the backward reads the gate from the overwritten input: a replaced value
        # v above th would open it.
        if ip and v > th:
            raise ValueError(f"Threshold: in place needs v <= th, got v {v} > th {th}")
        super().__init__(ip, (th, v), dtype)
        self.th, self.v = float(th), float(v)

    def updateOutput(self, input):
        # _Elementwise's, with the kernel and its two scalars named: ReLU runs in most
        # models, and a call through a class attribute with *scalars costs it a quarter.
        out = input if self.inplace else resized(self.output, input, -1, self.dtype)
        th, v = self._abc
        threshold_update_output(input, out, th, v)
        self.output = out
        return out

    def extraRepr(self):
        return f"{self.th}, {self.v}" + (", inplace" if self.inplace else "")


class ReLU(Threshold):
    """``y = max(0, x)`` (Threshold(0, 0))."""

    def __init__(self, ip=False, dtype=np.float32):
        super().__init__(0.0, 0.0, ip, dtype)

    def extraRepr(self):
        return "inplace" if self.inplace else ""


class HardTanh(_Elementwise, kernel="hard_tanh"):
    """``y = min(max(x, minValue), maxValue)``."""

    def __init__(self, minValue=-1.0, maxValue=1.0, inplace=False, dtype=np.float32):
        if maxValue < minValue:
            raise ValueError(f"{type(self).__name__}: maxValue {maxValue} is below minValue "
                             f"{minValue}")
        super().__init__(inplace, (minValue, maxValue), dtype)
        self.minValue, self.maxValue = float(minValue), float(maxValue)

    def extraRepr(self):
        return f"{self.minValue}, {self.maxValue}" + (", inplace" if self.inplace else "")


class ReLU6(HardTanh):
    """``y = min(max(x, 0), 6)``."""

    def __init__(self, inplace=False, dtype=np.float32):
        super().__init__(0.0, 6.0, inplace, dtype)

    def extraRepr(self):
        return "inplace" if self.inplace else ""


class Clamp(HardTanh):
    """``y = min(max(x, min), max)`` (HardTanh without the in-place flag)."""

    def __init__(self, min, max, dtype=np.float32):  # noqa: A002 - BigDL's names
        super().__init__(min, max, False, dtype)


class LeakyReLU(_Elementwise, kernel="leaky_relu"):
    """``y = x if x > 0 else negval * x``."""

    def __init__(self, negval=0.01, inplace=False, dtype=np.float32):
        super().__init__(inplace, (negval,), dtype)
        self.negval = float(negval)

    def extraRepr(self):
        return f"{self.negval}" + (", inplace" if self.inplace else "")


class ELU(_Elementwise, kernel="elu"):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``."""

    def __init__(self, alpha=1.0, inplace=False, dtype=np.float32):
        super().__init__(inplace, (alpha,), dtype)
        self.alpha = float(alpha)

    def extraRepr(self):
        return f"{self.alpha}" + (", inplace" if self.inplace else "")


class Tanh(_Unary, kernel="tanh"):
    """``y = tanh(x)``."""


class Sigmoid(_Unary, kernel="sigmoid"):
    """``y = 1 / (1 + exp(-x))``."""


class HardSigmoid(_Unary, kernel="hard_sigmoid"):
    """``y = min(max(0.2 x + 0.5, 0), 1)`` (BigDL's, as Keras; not PyTorch's x / 6 + 0.5)."""


class SoftPlus(_Elementwise, kernel="soft_plus"):
    """``y = log(1 + exp(beta x)) / beta``; linear where ``beta x > 20``."""

    threshold = 20.0

    def __init__(self, beta=1.0, dtype=np.float32):
        if beta == 0:
            raise ValueError("SoftPlus: beta must be non-zero")
        super().__init__(False, (beta, self.threshold), dtype)
        self.beta = float(beta)

    def extraRepr(self):
        return f"{self.beta}"


class SoftSign(_Unary, kernel="soft_sign"):
    """``y = x / (1 + |x|)``."""


class Abs(_Unary, kernel="abs"):
    """``y = |x|``."""


class Power(_Elementwise, kernel="power"):
    """``y = (shift + scale * x) ** power``."""

    def __init__(self, power, scale=1.0, shift=0.0, dtype=np.float32):
        super().__init__(False, (power, scale, shift), dtype)
        self.power, self.scale, self.shift = float(power), float(scale), float(shift)

    def extraRepr(self):
        return f"{self.power}, {self.scale}, {self.shift}"


class Square(_Unary, kernel="square"):
    """``y = x * x``."""


class Sqrt(_Unary, kernel="sqrt"):
    """``y = sqrt(x)``."""


class Exp(_Unary, kernel="exp"):
    """``y = exp(x)``."""


class Log(_Unary, kernel="log"):
    """``y = log(x)``."""


class PReLU(Module):
    """``y = x if x > 0 else w[c] * x``, one learnt slope per channel (nOutputPlane > 0) or
    one shared by all (nOutputPlane = 0).

    Channels: (C,), (N, C), (C, H, W), (N, C, H, W). Default init: every slope 0.25.
    """

    _params = (("weight", "gradWeight"),)

    def __init__(self, nOutputPlane=0, dtype=np.float32):
        super().__init__(dtype)
        self.nOutputPlane = whole(self, "nOutputPlane", nOutputPlane)
        if self.nOutputPlane < 0:
            raise ValueError(f"PReLU: nOutputPlane must be >= 0, got {nOutputPlane}")
        self._shared = self.nOutputPlane == 0
        size = max(self.nOutputPlane, 1)
        self.weight = parameter(self, "weight", size)
        self.weightInitMethod = ConstInitMethod(0.25)
        self.reset()

    def setInitMethod(self, weightInitMethod=None, biasInitMethod=None):
        if weightInitMethod is not None:
            self.weightInitMethod = weightInitMethod
        return self.reset()

    def reset(self):
        self.weightInitMethod(self.weight, self.weight.size, self.weight.size)
        self.zeroGradParameters()
        return self

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        prelu_update_output(input, out, self.weight, self._shared)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        prelu_update_grad_input(input, gradOutput, gi, self.weight, self._shared)
        return gi

    def accGradParameters(self, input, gradOutput):
        prelu_acc_grad_parameters(input, gradOutput, self.gradWeight, self._shared,
                                  self.scaleW)

    def extraRepr(self):
        return f"{self.nOutputPlane}"


class _SoftMaxBase(Module):
    """Shared facade of SoftMax and SoftMin: along the features of (n,) and (b, n), along the
    channels of (c, h, w) and (b, c, h, w)."""

    _negate = False

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        softmax_update_output(input, out, self._negate)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        softmax_update_grad_input(self.output, gradOutput, gi, self._negate)
        return gi


class SoftMax(_SoftMaxBase):
    """``y = exp(x) / sum(exp(x))``; see _SoftMaxBase for the axis."""


class SoftMin(_SoftMaxBase):
    """``y = exp(-x) / sum(exp(-x))``; see _SoftMaxBase for the axis."""

    _negate = True


class LogSoftMax(Module):
    """``y = x - log(sum(exp(x)))`` along the features of a vector (n,) or a batch (b, n)."""

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        log_softmax_update_output(input, out)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        log_softmax_update_grad_input(self.output, gradOutput, gi)
        return gi


# -- LogSigmoid, the shrinks, BinaryThreshold, RReLU ------------------------------------------
from pymodules.random import Stream  # noqa: E402 - this section's own import


class LogSigmoid(_Unary, kernel="log_sigmoid"):
    """``y = log(1 / (1 + exp(-x)))``."""


class TanhShrink(_Unary, kernel="tanh_shrink"):
    """``y = x - tanh(x)``."""


class SoftShrink(_Elementwise, kernel="soft_shrink"):
    """``y = x - the_lambda`` above ``the_lambda``, ``x + the_lambda`` below ``-the_lambda``,
    0 between."""

    def __init__(self, the_lambda=0.5, dtype=np.float32):
        if not the_lambda >= 0:
            raise ValueError(f"{type(self).__name__}: the_lambda must be >= 0, got {the_lambda}")
        super().__init__(False, (the_lambda,), dtype)
        self.the_lambda = float(the_lambda)

    def extraRepr(self):
        return f"{self.the_lambda}"


class HardShrink(SoftShrink, kernel="hard_shrink"):
    """``y = x`` where ``|x| > the_lambda``, 0 elsewhere."""


class BinaryThreshold(_Elementwise, kernel="binary_threshold"):
    """``y = 1 if x > th else 0`` (NaN stays NaN).

    Backward passes ``gradOutput`` where ``x > th`` and 0 elsewhere, as BigDL: a
    straight-through gradient (the step's derivative is zero almost everywhere).
    """

    def __init__(self, th=1e-6, ip=False, dtype=np.float32):
        # In place, the backward reads the gate from the 0/1 output left in the input.
        if ip and not 0 <= th < 1:
            raise ValueError(f"BinaryThreshold: in place needs 0 <= th < 1, got th {th}")
        super().__init__(ip, (th,), dtype)
        self.th = float(th)

    def extraRepr(self):
        return f"{self.th}" + (", inplace" if self.inplace else "")


class RReLU(Module):
    """Randomized leaky ReLU: ``y = x if x > 0 else a * x``.

    Training: a fresh slope ``a`` uniform in ``[lower, upper)`` for each element that is not
    positive, at each forward (``noise`` keeps the slopes, 1 where x > 0, for backward).
    Evaluation: the mean slope ``(lower + upper) / 2``, a LeakyReLU. With ``inplace``,
    output is the input and gradInput the gradOutput.

    The slopes come from a generator of the layer's own (``pymodules.random.Stream``), as
    Dropout's masks: they depend on ``setSeed`` and the order of construction only.
    """

    _scratch = ("noise",)

    def __init__(self, lower=1.0 / 8, upper=1.0 / 3, inplace=False, dtype=np.float32):
        super().__init__(dtype)
        if not 0 <= lower <= upper:
            raise ValueError(f"RReLU: the slopes must satisfy 0 <= lower <= upper, got lower "
                             f"{lower}, upper {upper}")
        self.lower, self.upper = float(lower), float(upper)
        self.inplace = bool(inplace)
        self.noise = None
        self._rng = Stream()

    def updateOutput(self, input):
        out = input if self.inplace else resized(self.output, input, -1, self.dtype)
        if self._train:
            self.noise = resized(self.noise, input, -1, self.dtype)
            seed = self._rng.generator.bit_generator.random_raw()
        else:
            seed = 0
        _kernels.rrelu_update_output(input, out, self.noise, self.lower, self.upper,
                                     self._train, seed)
        self.output = out
        return out

    def updateGradInput(self, input, gradOutput):
        gi = gradOutput if self.inplace else resized(self.gradInput, input, -1, self.dtype)
        _kernels.rrelu_update_grad_input(input, gradOutput, gi, self.noise, self.lower,
                                         self.upper, self._train)
        self.gradInput = gi
        return gi

    def extraRepr(self):
        return f"{self.lower}, {self.upper}" + (", inplace" if self.inplace else "")
