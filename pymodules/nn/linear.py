"""Linear: y = W x + b."""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.linear import (
    linear_acc_grad_parameters,
    linear_update_grad_input,
    linear_update_output,
)
from pymodules.nn.init import RandomUniform
from pymodules.nn.module import Module


class Linear(Module):
    """``y = W x + b`` on a vector (inputSize,) or a batch (batch, inputSize).

    weight is (outputSize, inputSize), bias (outputSize,). Default init: both uniform in
    +-1/sqrt(inputSize). Regularizers add their gradient inside accGradParameters.
    """

    _params = (("weight", "gradWeight"), ("bias", "gradBias"))

    def __init__(self, inputSize, outputSize, withBias=True, wRegularizer=None,
                 bRegularizer=None, initWeight=None, initBias=None, initGradWeight=None,
                 initGradBias=None, dtype=np.float32):
        super().__init__(dtype)
        if int(inputSize) < 0 or int(outputSize) < 0:
            raise ValueError(f"Linear: sizes must be >= 0, got {inputSize} -> {outputSize}")
        self.inputSize, self.outputSize = int(inputSize), int(outputSize)
        self.withBias = bool(withBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self.weightInitMethod = RandomUniform()
        self.biasInitMethod = RandomUniform()
        shape = (self.outputSize, self.inputSize)
        self.weight = np.empty(shape, self.dtype)
        self.gradWeight = np.zeros(shape, self.dtype)
        self.bias = np.empty(self.outputSize, self.dtype) if self.withBias else None
        self.gradBias = np.zeros(self.outputSize, self.dtype) if self.withBias else None
        self.reset()
        for name, value in (("weight", initWeight), ("bias", initBias),
                            ("gradWeight", initGradWeight), ("gradBias", initGradBias)):
            if value is not None:
                self._init_from(name, value)

    def _init_from(self, name, value):
        target = getattr(self, name)
        if target is None:
            raise ValueError(f"{self}: init{name[0].upper()}{name[1:]} given without a bias")
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"{self}: init{name[0].upper()}{name[1:]} has shape "
                             f"{value.shape}, expected {target.shape}")
        target[...] = value

    def setInitMethod(self, weightInitMethod=None, biasInitMethod=None):
        """Replace the init methods (None keeps one) and re-initialise."""
        if weightInitMethod is not None:
            self.weightInitMethod = weightInitMethod
        if biasInitMethod is not None:
            self.biasInitMethod = biasInitMethod
        return self.reset()

    def reset(self):
        self.weightInitMethod(self.weight, self.inputSize, self.outputSize)
        if self.bias is not None:
            self.biasInitMethod(self.bias, self.inputSize, self.outputSize)
        self.zeroGradParameters()
        return self

    def updateOutput(self, input):
        try:
            out = self.output = resized(self.output, input, self.outputSize, self.dtype)
            linear_update_output(input, out, self.weight, self.bias)
        except (TypeError, ValueError, AttributeError) as err:
            return self._recover(err, self.updateOutput, input)
        return out

    def updateGradInput(self, input, gradOutput):
        if not self.propagateBack:
            return self.gradInput
        try:
            gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
            linear_update_grad_input(input, gradOutput, gi, self.weight)
        except (TypeError, ValueError, AttributeError) as err:
            return self._recover(err, self.updateGradInput, input, gradOutput)
        return gi

    def accGradParameters(self, input, gradOutput):
        try:
            linear_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                       self.scaleW, self.scaleB)
        except (TypeError, ValueError, AttributeError) as err:
            return self._recover(err, self.accGradParameters, input, gradOutput)
        if self.wRegularizer is not None:
            self.wRegularizer.accRegularization(self.weight, self.gradWeight, self.scaleW)
        if self.bRegularizer is not None and self.bias is not None:
            self.bRegularizer.accRegularization(self.bias, self.gradBias, self.scaleB)

    def extraRepr(self):
        return f"{self.inputSize} -> {self.outputSize}" + ("" if self.withBias else ", no bias")
