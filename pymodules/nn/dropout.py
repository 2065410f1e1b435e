"""Dropout: zero each element with probability p in training, scaling the rest by 1/(1-p)."""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.dropout import dropout_update_grad_input, dropout_update_output
from pymodules.nn.module import Module
from pymodules.random import Stream


class Dropout(Module):
    """Training: ``y = x * mask / (1 - p)`` (``mask / 1`` without ``scale``), a fresh mask
    each forward. Evaluation: ``y = x`` (``x * (1 - p)`` without ``scale``). With
    ``inplace``, output is the input and gradInput the gradOutput.

    Backward in evaluation gives the gradient of the evaluation map (BigDL refuses it).

    The masks come from a generator of the layer's own (``pymodules.random.Stream``), whose
    seed is derived from the global seed when the layer is constructed: they depend on
    ``setSeed`` and the order of construction only, not on what other models or threads
    draw. A copy (``cloneModule``, MapTable's clones) draws a stream of its own.
    """

    _scratch = ("noise",)
    _persist = ("p",)  # set by setP

    def __init__(self, initP=0.5, inplace=False, scale=True, dtype=np.float32):
        super().__init__(dtype)
        self.initP = float(initP)
        self.inplace = bool(inplace)
        self.scale = bool(scale)
        self.noise = None
        self._rng = Stream()
        self.setP(initP)

    def getP(self):
        return self.p

    def setP(self, p):
        if not 0 <= p < 1:
            raise ValueError(f"{self.getName()}: the drop probability must lie in [0, 1), got {p}")
        self.p = float(p)
        return self

    def updateOutput(self, input):
        out = input if self.inplace else resized(self.output, input, -1, self.dtype)
        if self._train:
            self.noise = resized(self.noise, input, -1, self.dtype)
            seed = self._rng.generator.bit_generator.random_raw()
        else:
            seed = 0
        dropout_update_output(input, out, self.noise, self.p, self.scale, self._train, seed)
        self.output = out
        return out

    def updateGradInput(self, input, gradOutput):
        gi = gradOutput if self.inplace else resized(self.gradInput, gradOutput, -1,
                                                     self.dtype)
        dropout_update_grad_input(gradOutput, gi, self.noise, self.p, self.scale,
                                  self._train)
        self.gradInput = gi
        return gi

    def extraRepr(self):
        return f"{self.p}" + (", inplace" if self.inplace else "") + \
            ("" if self.scale else ", no scale")
