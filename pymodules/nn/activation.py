"""Activations: elementwise transfer functions, PReLU and the softmax family.

Every elementwise layer calls the engine's pair of kernels named after its function
(``tanh_update_output``, ``tanh_update_grad_input``). Layers with an in-place flag (``ip`` /
``inplace``) write their output into the input and, in backward, their gradInput into
gradOutput, as Torch does: the caller's arrays are then overwritten.
"""

import numpy as np

from pymodules.engine.activation import (
    abs_update_grad_input,
    abs_update_output,
    elu_update_grad_input,
    elu_update_output,
    exp_update_grad_input,
    exp_update_output,
    hard_sigmoid_update_grad_input,
    hard_sigmoid_update_output,
    hard_tanh_update_grad_input,
    hard_tanh_update_output,
    leaky_relu_update_grad_input,
    leaky_relu_update_output,
    log_update_grad_input,
    log_update_output,
    power_update_grad_input,
    power_update_output,
    prelu_acc_grad_parameters,
    prelu_update_grad_input,
    prelu_update_output,
    sigmoid_update_grad_input,
    sigmoid_update_output,
    soft_plus_update_grad_input,
    soft_plus_update_output,
    soft_sign_update_grad_input,
    soft_sign_update_output,
    sqrt_update_grad_input,
    sqrt_update_output,
    square_update_grad_input,
    square_update_output,
    tanh_update_grad_input,
    tanh_update_output,
    threshold_update_grad_input,
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
from pymodules.nn.module import Module, whole


class _Elementwise(Module):
    """y = f(x) elementwise on any shape: the engine's kernels ``_forward`` and ``_backward``
    (static methods: f_update_output and f_update_grad_input) with the scalars ``_abc``."""

    _forward = _backward = None

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


class Threshold(_Elementwise):
    """``y = x if x > th else v``."""

    _forward = staticmethod(threshold_update_output)
    _backward = staticmethod(threshold_update_grad_input)

    def __init__(self, th=1e-6, v=0.0, ip=False, dtype=np.float32):
        # In place, the backward reads the gate from the overwritten input: a replaced value
        # v above th would open it.
        if ip and v > th:
            raise ValueError(f"Threshold: in place needs v <= th, got v {v} > th {th}")
        super().__init__(ip, (th, v), dtype)
        self.th, self.v = float(th), float(v)

    def extraRepr(self):
        return f"{self.th}, {self.v}" + (", inplace" if self.inplace else "")


class ReLU(Threshold):
    """``y = max(0, x)`` (Threshold(0, 0))."""

    def __init__(self, ip=False, dtype=np.float32):
        super().__init__(0.0, 0.0, ip, dtype)

    def extraRepr(self):
        return "inplace" if self.inplace else ""


class HardTanh(_Elementwise):
    """``y = min(max(x, minValue), maxValue)``."""

    _forward = staticmethod(hard_tanh_update_output)
    _backward = staticmethod(hard_tanh_update_grad_input)

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


class LeakyReLU(_Elementwise):
    """``y = x if x > 0 else negval * x``."""

    _forward = staticmethod(leaky_relu_update_output)
    _backward = staticmethod(leaky_relu_update_grad_input)

    def __init__(self, negval=0.01, inplace=False, dtype=np.float32):
        super().__init__(inplace, (negval,), dtype)
        self.negval = float(negval)

    def extraRepr(self):
        return f"{self.negval}" + (", inplace" if self.inplace else "")


class ELU(_Elementwise):
    """``y = x if x > 0 else alpha * (exp(x) - 1)``."""

    _forward = staticmethod(elu_update_output)
    _backward = staticmethod(elu_update_grad_input)

    def __init__(self, alpha=1.0, inplace=False, dtype=np.float32):
        super().__init__(inplace, (alpha,), dtype)
        self.alpha = float(alpha)

    def extraRepr(self):
        return f"{self.alpha}" + (", inplace" if self.inplace else "")


class Tanh(_Unary):
    _forward = staticmethod(tanh_update_output)
    _backward = staticmethod(tanh_update_grad_input)


class Sigmoid(_Unary):
    """``y = 1 / (1 + exp(-x))``."""

    _forward = staticmethod(sigmoid_update_output)
    _backward = staticmethod(sigmoid_update_grad_input)


class HardSigmoid(_Unary):
    """``y = min(max(0.2 x + 0.5, 0), 1)`` (BigDL's, as Keras; not PyTorch's x / 6 + 0.5)."""

    _forward = staticmethod(hard_sigmoid_update_output)
    _backward = staticmethod(hard_sigmoid_update_grad_input)


class SoftPlus(_Elementwise):
    """``y = log(1 + exp(beta x)) / beta``; linear where ``beta x > 20``."""

    _forward = staticmethod(soft_plus_update_output)
    _backward = staticmethod(soft_plus_update_grad_input)
    threshold = 20.0

    def __init__(self, beta=1.0, dtype=np.float32):
        if beta == 0:
            raise ValueError("SoftPlus: beta must be non-zero")
        super().__init__(False, (beta, self.threshold), dtype)
        self.beta = float(beta)

    def extraRepr(self):
        return f"{self.beta}"


class SoftSign(_Unary):
    """``y = x / (1 + |x|)``."""

    _forward = staticmethod(soft_sign_update_output)
    _backward = staticmethod(soft_sign_update_grad_input)


class Abs(_Unary):
    _forward = staticmethod(abs_update_output)
    _backward = staticmethod(abs_update_grad_input)


class Power(_Elementwise):
    """``y = (shift + scale * x) ** power``."""

    _forward = staticmethod(power_update_output)
    _backward = staticmethod(power_update_grad_input)

    def __init__(self, power, scale=1.0, shift=0.0, dtype=np.float32):
        super().__init__(False, (power, scale, shift), dtype)
        self.power, self.scale, self.shift = float(power), float(scale), float(shift)

    def extraRepr(self):
        return f"{self.power}, {self.scale}, {self.shift}"


class Square(_Unary):
    _forward = staticmethod(square_update_output)
    _backward = staticmethod(square_update_grad_input)


class Sqrt(_Unary):
    _forward = staticmethod(sqrt_update_output)
    _backward = staticmethod(sqrt_update_grad_input)


class Exp(_Unary):
    _forward = staticmethod(exp_update_output)
    _backward = staticmethod(exp_update_grad_input)


class Log(_Unary):
    _forward = staticmethod(log_update_output)
    _backward = staticmethod(log_update_grad_input)


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
        self.weight = np.empty(size, self.dtype)
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
