"""Softmax criteria: Caffe's SoftmaxWithLoss over the class axis of (batch, classes, ...)
with 0-based labels, and the cross-entropy of scores against one-hot (distribution) rows."""

import numpy as np

from pymodules.criterion.base import Criterion, class_labels
from pymodules.engine import loss_class as C
from pymodules.engine.buffers import resized
from pymodules.nn.module import whole

_MODES = {"FULL": C.FULL, "VALID": C.VALID, "BATCH_SIZE": C.BATCH_SIZE, "NONE": C.NONE}


class _Softmax(Criterion):
    """A criterion whose forward keeps log softmax(input) in a scratch buffer."""

    _scratch = ("_logProb",)

    def __init__(self):
        super().__init__(True)
        self._logProb = np.empty(0, np.float32)

    def _log_prob(self, input):
        lp = self._logProb = resized(self._logProb, input, -1,
                                     getattr(input, "dtype", np.float32))
        return lp


class SoftmaxWithCriterion(_Softmax):
    """Multinomial logistic loss of softmax over axis 1 of input (batch, classes, d1, ...),
    against 0-based labels (batch, d1, ...): -sum log softmax(input)[label], divided by
    max(1, N), N as ``normalizeMode`` says: "FULL" (every position), "VALID" (the positions
    not ignored), "BATCH_SIZE" or "NONE" (1).

    Positions labelled ``ignoreLabel`` add nothing to the loss or to a VALID count and get
    a zero gradient; None ignores the padding label -1 (as ClassNLLCriterion's default
    paddingValue). Any other label outside [0, classes) raises.
    """

    def __init__(self, ignoreLabel=None, normalizeMode="VALID"):
        super().__init__()
        self.ignoreLabel = None if ignoreLabel is None else whole(self, "ignoreLabel",
                                                                  ignoreLabel)
        mode = normalizeMode.upper() if isinstance(normalizeMode, str) else normalizeMode
        if mode not in _MODES:
            raise ValueError(f"SoftmaxWithCriterion: normalizeMode must be one of "
                             f"{', '.join(_MODES)}, got {normalizeMode!r}")
        self.normalizeMode = mode

    def _ignored(self):
        return -1 if self.ignoreLabel is None else self.ignoreLabel

    def _convert_target(self, target, input):
        return class_labels(target)

    def updateOutput(self, input, target):
        return C.softmax_with_update_output(input, target, self._log_prob(input),
                                            self._ignored(), _MODES[self.normalizeMode])

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        C.softmax_with_update_grad_input(input, target, g, self._ignored(),
                                         _MODES[self.normalizeMode])
        return g

    def extraRepr(self):
        return f"ignoreLabel={self.ignoreLabel}, normalizeMode={self.normalizeMode}"


class CategoricalCrossEntropy(_Softmax):
    """CrossEntropyCriterion with one-hot targets: input (batch, classes) of scores, target
    of the same shape; -sum_j target_j log softmax(input)_j per row, averaged over the rows.
    A row that is not one-hot counts as the distribution it holds (Keras's categorical
    cross-entropy, PyTorch's cross_entropy of class probabilities)."""

    def __init__(self):
        super().__init__()

    def updateOutput(self, input, target):
        return C.categorical_cross_entropy_update_output(input, target, self._log_prob(input))

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        C.categorical_cross_entropy_update_grad_input(input, target, g)
        return g
