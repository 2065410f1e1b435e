"""Reductions over one axis: Sum, Mean, Max and Min.

``dimension`` (``dim``) is a numpy axis of a batched input, the batch axis 0; negative counts
from the end. With ``nInputDims`` (``numInputDims``), the rank of one sample, an input of
exactly that rank has no batch axis and the axis is one lower, as in the table modules.
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.reduction import (
    max_update_grad_input,
    max_update_output,
    min_update_grad_input,
    min_update_output,
    sum_update_grad_input,
    sum_update_output,
)
from pymodules.facade import require_array
from pymodules.nn.module import Module, whole
from pymodules.nn.table import axis_of


class Sum(Module):
    """The sum of the input over ``dimension`` (divided by its size with ``sizeAverage``).

    ``squeeze`` drops the summed axis from the output, otherwise it stays with size 1. As
    in BigDL, a 1-D input summed with ``squeeze`` gives a 0-d array; unlike it, the output
    keeps every other axis, so a batch of one stays a batch.
    """

    _scratch = ("_axis",)

    def __init__(self, dimension=0, nInputDims=-1, sizeAverage=False, squeeze=True,
                 dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self.nInputDims = whole(self, "nInputDims", nInputDims)
        self.sizeAverage = bool(sizeAverage)
        self.squeeze = bool(squeeze)
        self._axis = None

    def _shape(self, input):
        """(output shape, axis, divisor) for this input."""
        shape = require_array(input).shape
        axis = self._axis = axis_of(self.dimension, len(shape), self.nInputDims)
        kept = () if self.squeeze else (1,)
        divisor = float(shape[axis]) if self.sizeAverage else 1.0
        return shape[:axis] + kept + shape[axis + 1:], axis, divisor

    def updateOutput(self, input):
        shape, axis, divisor = self._shape(input)
        out = self.output = resized(self.output, shape, -1, self.dtype)
        sum_update_output(input, out, axis, divisor)
        return out

    def updateGradInput(self, input, gradOutput):
        _, axis, divisor = self._shape(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        sum_update_grad_input(gradOutput, gi, axis, divisor)
        return gi

    def extraRepr(self):
        return (f"dimension={self.dimension}" + (", sizeAverage" if self.sizeAverage else "")
                + ("" if self.squeeze else ", no squeeze"))


class Mean(Sum):
    """The mean of the input over ``dimension`` (Sum with sizeAverage)."""

    def __init__(self, dimension=0, nInputDims=-1, squeeze=True, dtype=np.float32):
        super().__init__(dimension, nInputDims, True, squeeze, dtype)

    def extraRepr(self):
        return f"dimension={self.dimension}" + ("" if self.squeeze else ", no squeeze")


class Max(Module):
    """The maximum of the input over ``dim``; the gradient goes to the (first) maximum, and a
    NaN is the maximum of its slice, as in torch.max.

    As in BigDL, the axis is dropped, but a 1-D input gives an output of shape (1,).
    """

    _scratch = ("_indices",)
    _forward = staticmethod(max_update_output)
    _backward = staticmethod(max_update_grad_input)

    def __init__(self, dim=0, numInputDims=-1, dtype=np.float32):
        super().__init__(dtype)
        self.dim = whole(self, "dim", dim)
        self.numInputDims = whole(self, "numInputDims", numInputDims)
        self._indices = None

    def _shape(self, input):
        shape = require_array(input).shape
        axis = axis_of(self.dim, len(shape), self.numInputDims, "dim")
        return (shape[:axis] + shape[axis + 1:]) if len(shape) > 1 else (1,), axis

    def updateOutput(self, input):
        shape, axis = self._shape(input)
        out = self.output = resized(self.output, shape, -1, self.dtype)
        idx = self._indices = resized(self._indices, shape, -1, np.dtype(np.intp))
        self._forward(input, out, idx, axis)
        return out

    def updateGradInput(self, input, gradOutput):
        _, axis = self._shape(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        self._backward(gradOutput, gi, self._indices, axis)
        return gi

    def extraRepr(self):
        return f"{self.dim}" + (f", {self.numInputDims}" if self.numInputDims > 0 else "")


class Min(Max):
    """The minimum of the input over ``dim``; the gradient goes to the (first) minimum, and a
    NaN is the minimum of its slice, as in torch.min."""

    _forward = staticmethod(min_update_output)
    _backward = staticmethod(min_update_grad_input)
