"""Linear: y = W x + b."""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_grad_input_scratch_size,
    linear_grad_scratch_size,
    linear_scratch_size,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.nn.initializable import Initializable
from pymodules.nn.module import whole


class Linear(Initializable):
    """``y = W x + b`` on a vector (inputSize,) or a batch (batch, inputSize).

    weight is (outputSize, inputSize), bias (outputSize,). Default init: both uniform in
    +-1/sqrt(inputSize). Regularizers add their gradient inside accGradParameters.
    """

    def __init__(self, inputSize, outputSize, withBias=True, wRegularizer=None,
                 bRegularizer=None, initWeight=None, initBias=None, initGradWeight=None,
                 initGradBias=None, dtype=np.float32):
        super().__init__(dtype)
        inputSize, outputSize = whole(self, "inputSize", inputSize), whole(self, "outputSize",
                                                                           outputSize)
        if inputSize < 0 or outputSize < 0:
            raise ValueError(f"Linear: sizes must be >= 0, got {inputSize} -> {outputSize}")
        self.inputSize, self.outputSize = inputSize, outputSize
        self.withBias = bool(withBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._fans = (self.inputSize, self.outputSize)
        self._build((self.outputSize, self.inputSize), self.outputSize if self.withBias else None,
                    (initWeight, initBias, initGradWeight, initGradBias))

    _scratch = ("_transposed", "_packedGrad", "_packedGradInput")
    _transposed = None  # the scratch of a float32 batch whose forward runs packed or transposed
    _packedGrad = None  # the scratch of a float32 batch whose weight gradient runs packed
    _packedGradInput = None  # the same for its gradInput

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, self.outputSize, self.dtype)
        scratch = self._kept("_transposed", linear_scratch_size(input, self.weight))
        linear_update_output(input, out, self.weight, self.bias, scratch)
        return out

    def _kept(self, name, size):
        """The scratch kept as ``name``, of ``size`` elements (None when the kernel takes
        none)."""
        if not size:
            return None
        buf = resized(getattr(self, name), (size,), -1, self.dtype)
        setattr(self, name, buf)
        return buf

    def updateGradInput(self, input, gradOutput):
        if not self.propagateBack:
            return self.gradInput
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        scratch = self._kept("_packedGradInput",
                             linear_grad_input_scratch_size(gradOutput, self.weight))
        linear_update_grad_input(input, gradOutput, gi, self.weight, scratch)
        return gi

    def accGradParameters(self, input, gradOutput):
        scratch = self._kept("_packedGrad", linear_grad_scratch_size(input, self.gradWeight))
        linear_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                   self.scaleW, self.scaleB, scratch)
        self._regularize()

    def extraRepr(self):
        return f"{self.inputSize} -> {self.outputSize}" + ("" if self.withBias else ", no bias")
