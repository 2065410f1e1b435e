"""Element-wise and small parametric layers: CMul, CAdd, Scale, Add, Mul.

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
from pymodules.facade import require_array
from pymodules.nn.init import RandomUniform
from pymodules.nn.initializable import Initializable
from pymodules.nn.module import whole


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
