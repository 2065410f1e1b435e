"""Class criteria: negative log-likelihood and cross-entropy over 0-based class labels."""

import numpy as np

from pymodules.criterion.base import Criterion, class_labels
from pymodules.criterion.pointwise import _weights
from pymodules.engine import criterion as K
from pymodules.nn.module import whole


class _ClassCriterion(Criterion):
    # Criteria are saved as their attributes: one saved before paddingValue existed (it had
    # ignoreIndex, default -100) loads with BigDL's default.
    paddingValue = -1

    def __init__(self, weights, sizeAverage, paddingValue):
        super().__init__(sizeAverage)
        self.weights = _weights(weights, type(self).__name__)
        self.paddingValue = whole(self, "paddingValue", paddingValue)

    def _convert_target(self, target, input):
        return class_labels(target)


class ClassNLLCriterion(_ClassCriterion):
    """Negative log-likelihood of 0-based class labels.

    Input (batch, nClasses) or (nClasses,) of log-probabilities (probabilities when
    ``logProbAsInput`` is False; they are clamped to [1e-8, 1 - 1e-8] before the log).
    ``weights`` (nClasses,) rescale each class; with sizeAverage the loss is divided by the
    total weight of the counted rows. Rows labelled ``paddingValue`` (padding of a sequence,
    as BigDL's; PyTorch's ``ignore_index``) add nothing to the loss, to the divisor or to
    the gradient; all rows padded gives 0. Any other label outside [0, nClasses) raises.
    """

    def __init__(self, weights=None, sizeAverage=True, logProbAsInput=True, paddingValue=-1):
        super().__init__(weights, sizeAverage, paddingValue)
        self.logProbAsInput = bool(logProbAsInput)

    def updateOutput(self, input, target):
        return K.class_nll_update_output(input, target, self._weights_for(input),
                                         self.paddingValue, self.sizeAverage,
                                         self.logProbAsInput)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        K.class_nll_update_grad_input(input, target, g, self._weights_for(input),
                                      self.paddingValue, self.sizeAverage,
                                      self.logProbAsInput)
        return g


class CrossEntropyCriterion(_ClassCriterion):
    """LogSoftMax then ClassNLLCriterion, fused: input holds unnormalised scores.

    Rows labelled ``paddingValue`` count for nothing, as in ClassNLLCriterion.
    """

    _scratch = ("_logProb",)

    def __init__(self, weights=None, sizeAverage=True, paddingValue=-1):
        super().__init__(weights, sizeAverage, paddingValue)
        self._logProb = np.empty(0, np.float32)

    def updateOutput(self, input, target):
        lp = self._logProb = self._grad_like_attr("_logProb", input)
        return K.cross_entropy_update_output(input, target, lp, self._weights_for(input),
                                             self.paddingValue, self.sizeAverage)

    def updateGradInput(self, input, target):
        # Assumes updateOutput(input, target) ran before, as Module.backward does.
        g = self.gradInput = self._grad_like(input)
        K.cross_entropy_update_grad_input(self._logProb, target, g,
                                          self._weights_for(input), self.paddingValue,
                                          self.sizeAverage)
        return g

    def _grad_like_attr(self, attr, input):
        from pymodules.engine.buffers import resized

        return resized(getattr(self, attr), input, -1, getattr(input, "dtype", np.float32))
