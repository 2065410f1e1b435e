"""LayerNormalization: each row of the last axis normalised on its own, then scaled and shifted."""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.normalization_ln import (
    layernorm_acc_grad_parameters,
    layernorm_param_sums,
    layernorm_update_grad_input,
    layernorm_update_output,
)
from pymodules.facade import shape_of
from pymodules.nn.initializable import parameter
from pymodules.nn.module import Module, whole

EPS = 1e-6  # BigDL's constant (its graph adds it to the variance)


class LayerNormalization(Module):
    """``y = (x - mean) / sqrt(var + 1e-6) * weight + bias`` over the last axis (hiddenSize
    values), the biased variance; any input (..., hiddenSize).

    weight (hiddenSize,) starts at 1, bias (hiddenSize,) at 0. Gradients accumulate, as for
    every layer (BigDL's replaced them).
    """

    _params = (("weight", "gradWeight"), ("bias", "gradBias"))
    _scratch = ("_saveMean", "_saveInvstd", "_sums", "_summed")

    def __init__(self, hiddenSize, dtype=np.float32):
        super().__init__(dtype)
        self.hiddenSize = whole(self, "hiddenSize", hiddenSize)
        if self.hiddenSize <= 0:
            raise ValueError(f"LayerNormalization: hiddenSize must be > 0, got {hiddenSize}")
        self.weight = parameter(self, "weight", self.hiddenSize, 1)
        self.bias = parameter(self, "bias", self.hiddenSize, 0)
        self._saveMean = self._saveInvstd = self._sums = None
        # The (input, gradOutput) whose parameter sums updateGradInput gathered in its pass,
        # for the accGradParameters that follows it in backward.
        self._summed = None

    def reset(self):
        self.weight.fill(1)
        self.bias.fill(0)
        self.zeroGradParameters()
        return self

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        shape = shape_of(input)
        rows = (int(np.prod(shape[:-1], dtype=np.int64)),) if shape else (0,)
        self._saveMean = resized(self._saveMean, rows, -1, self.dtype)
        self._saveInvstd = resized(self._saveInvstd, rows, -1, self.dtype)
        layernorm_update_output(input, out, self.weight, self.bias, self._saveMean,
                                self._saveInvstd, EPS)
        return out

    def _sums_buffer(self):
        self._sums = resized(self._sums, (2, self.hiddenSize), -1, np.dtype(np.float64))
        return self._sums

    def updateGradInput(self, input, gradOutput):
        self._summed = None
        if not self.propagateBack:
            return self.gradInput
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        # The parameter sums come almost free in this pass, which reads the rows anyway.
        sums = self._sums_buffer() if self.scaleW or self.scaleB else None
        layernorm_update_grad_input(input, gradOutput, gi, self.weight, self._saveMean,
                                    self._saveInvstd, sums)
        if sums is not None:
            self._summed = (input, gradOutput)
        return gi

    def accGradParameters(self, input, gradOutput):
        summed, self._summed = self._summed, None
        if not (self.scaleW or self.scaleB):
            return
        if summed is None or summed[0] is not input or summed[1] is not gradOutput:
            layernorm_param_sums(input, gradOutput, self._saveMean, self._saveInvstd,
                                 self._sums_buffer())
        layernorm_acc_grad_parameters(self._sums, self.gradWeight, self.gradBias,
                                      self.scaleW, self.scaleB)

    def extraRepr(self):
        return f"{self.hiddenSize}"
