"""Elementwise criteria: regression losses, binary cross-entropy, margins, KL divergence."""

import numpy as np

from pymodules.criterion.base import Criterion
from pymodules.engine import criterion as K


def _weights(weights, what, vector=True):
    """``weights`` as an array (a vector unless not ``vector``), or None."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if (w.ndim != 1) if vector else (w.ndim < 1):
        kind = "a vector" if vector else "an array of at least one axis"
        raise ValueError(f"{what}: weights must be {kind}, got shape {w.shape}")
    return w


class _Pointwise(Criterion):
    """One loss term per element, summed (divided by the element count when averaged)."""

    _op = None
    _param = 0.0
    weights = None

    def updateOutput(self, input, target):
        return K.pointwise_update_output(self._op, input, target, self._weights_for(input),
                                         self._param, self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        K.pointwise_update_grad_input(self._op, input, target, g, self._weights_for(input),
                                      self._param, self.sizeAverage)
        return g


class MSECriterion(_Pointwise):
    """sum (x - y)^2, averaged over elements when sizeAverage."""

    _op = K.MSE


class AbsCriterion(_Pointwise):
    """sum |x - y|, averaged over elements when sizeAverage."""

    _op = K.ABS


class SmoothL1Criterion(_Pointwise):
    """Huber loss with threshold 1: 0.5 d^2 if |d| < 1 else |d| - 0.5."""

    _op = K.SMOOTH_L1


class BCECriterion(_Pointwise):
    """Binary cross-entropy of probabilities x against targets y in [0, 1].

    ``weights`` rescale each term: shaped like one sample (``input.shape[1:]``), like
    the input, or like its last axis; repeated over the batch, for any input rank (BigDL).
    """

    _op = K.BCE

    def __init__(self, weights=None, sizeAverage=True):
        super().__init__(sizeAverage)
        self.weights = _weights(weights, "BCECriterion", vector=False)


class MarginCriterion(_Pointwise):
    """Hinge loss max(0, margin - x y) for targets y = +-1 (squared when ``squared``)."""

    def __init__(self, margin=1.0, sizeAverage=True, squared=False):
        super().__init__(sizeAverage)
        self.margin = self._param = float(margin)
        self.squared = bool(squared)
        self._op = K.MARGIN_SQ if self.squared else K.MARGIN

    def extraRepr(self):
        return f"margin={self.margin}" + (", squared" if self.squared else "")


class MultiLabelSoftMarginCriterion(_Pointwise):
    """Binary cross-entropy of sigmoid(x) against 0/1 targets, computed stably from x;
    averaged over all elements when sizeAverage."""

    _op = K.SOFT_MARGIN

    def __init__(self, weights=None, sizeAverage=True):
        super().__init__(sizeAverage)
        self.weights = _weights(weights, "MultiLabelSoftMarginCriterion")


class DistKLDivCriterion(_Pointwise):
    """KL divergence sum y (log y - x) of log-probabilities x from probabilities y."""

    _op = K.DIST_KL
