"""Margin criteria: soft margin and hinge embedding over +-1 targets, multi-class and
multi-label hinge losses over 0-based labels, margin ranking and L1 hinge embedding of
input pairs."""

import numpy as np

from pymodules.criterion.base import Criterion, class_labels
from pymodules.criterion.pointwise import _weights
from pymodules.criterion.table import _pair, _TableCriterion
from pymodules.engine import loss_class as C
from pymodules.engine import loss_elementwise as E
from pymodules.engine import loss_rows as R
from pymodules.engine.buffers import resized
from pymodules.nn.module import whole


class _Elementwise(Criterion):
    """One term per element of (input, target): the engine's elementwise loss ``_op``."""

    _op = None
    _param = 0.0

    def _norm(self):
        return E.MEAN if self.sizeAverage else E.SUM

    def updateOutput(self, input, target):
        return E.elementwise_update_output(self._op, input, target, self._param, self._norm())

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        E.elementwise_update_grad_input(self._op, input, target, g, self._param, self._norm())
        return g


class SoftMarginCriterion(Criterion):
    """Two-class logistic loss log(1 + exp(-y x)) of targets y = +-1, averaged over all
    elements when sizeAverage."""

    _scratch = ("_buffer",)

    def __init__(self, sizeAverage=True):
        super().__init__(sizeAverage)
        self._buffer = np.empty(0, np.float32)

    def updateOutput(self, input, target):
        b = self._buffer = resized(self._buffer, input, -1, getattr(input, "dtype", None))
        return E.soft_margin_update_output(input, target, b, self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        E.soft_margin_update_grad_input(input, target, g, self.sizeAverage)
        return g


class HingeEmbeddingCriterion(_Elementwise):
    """x where y = 1, max(0, margin - x) where y = -1 (x: a distance, y = +-1), averaged
    over all elements when sizeAverage."""

    _op = E.HINGE_EMBEDDING

    def __init__(self, margin=1, sizeAverage=True):
        super().__init__(sizeAverage)
        self.margin = self._param = float(margin)

    def extraRepr(self):
        return f"margin={self.margin}"


class MultiMarginCriterion(Criterion):
    """Multi-class hinge loss of 0-based labels: for each row, the sum over the other
    classes d of weights[y] * max(0, margin - x[y] + x[d])^p, divided by the number of
    classes; averaged over the rows when sizeAverage.

    Input (batch, nClasses) or (nClasses,); ``p`` is 1 or 2; ``weights`` (nClasses,)
    rescale each class. Rows labelled ``paddingValue`` count for nothing (no loss, no share
    of the average, a zero gradient row), as in ClassNLLCriterion.
    """

    def __init__(self, p=1, weights=None, margin=1.0, sizeAverage=True, paddingValue=-1):
        super().__init__(sizeAverage)
        self.p = whole(self, "p", p)
        if self.p not in (1, 2):
            raise ValueError(f"MultiMarginCriterion: p must be 1 or 2, got {self.p}")
        self.weights = _weights(weights, "MultiMarginCriterion")
        self.margin = float(margin)
        self.paddingValue = whole(self, "paddingValue", paddingValue)

    def _convert_target(self, target, input):
        return class_labels(target)

    def updateOutput(self, input, target):
        return C.multi_margin_update_output(input, target, self._weights_for(input), self.p,
                                            self.margin, self.paddingValue, self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        C.multi_margin_update_grad_input(input, target, g, self._weights_for(input), self.p,
                                         self.margin, self.paddingValue, self.sizeAverage)
        return g

    def extraRepr(self):
        return f"p={self.p}, margin={self.margin}"


class MultiLabelMarginCriterion(Criterion):
    """Multi-label hinge loss: target, shaped like the input, holds each row's 0-based
    labels followed by -1s (the padding value; the first -1 ends the row's labels). For
    each label j and each class d not among the labels, max(0, 1 - x[j] + x[d]), summed and
    divided by the number of classes; averaged over the rows when sizeAverage."""

    _scratch = ("_isTarget",)

    def __init__(self, sizeAverage=True):
        super().__init__(sizeAverage)
        self._isTarget = np.empty(0, np.float32)

    def _convert_target(self, target, input):
        return class_labels(target)

    def _flags(self, input):
        k = input.shape[-1] if isinstance(input, np.ndarray) and input.ndim else 0
        dtype = getattr(input, "dtype", np.float32)
        b = self._isTarget = resized(self._isTarget, (k,), -1, dtype)
        return b

    def updateOutput(self, input, target):
        return C.multi_label_margin_update_output(input, target, self._flags(input),
                                                  self.sizeAverage)

    def updateGradInput(self, input, target):
        g = self.gradInput = self._grad_like(input)
        C.multi_label_margin_update_grad_input(input, target, g, self._flags(input),
                                               self.sizeAverage)
        return g


class MarginRankingCriterion(_TableCriterion):
    """Input [x1, x2] (same shape), target y = +-1 for each pair (or [y], BigDL's table):
    max(0, margin - y (x1 - x2)), summed, divided by the number of pairs when sizeAverage.
    y = 1 asks x1 to rank above x2."""

    def __init__(self, margin=1.0, sizeAverage=True):
        super().__init__(sizeAverage)
        self.margin = float(margin)

    @staticmethod
    def _y(target):
        if isinstance(target, (list, tuple)) and len(target) == 1 \
                and isinstance(target[0], np.ndarray):
            return target[0]
        return target

    def _convert_target(self, target, input):
        return super()._convert_target(self._y(target), input)

    def updateOutput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        return R.margin_ranking_update_output(a, b, self._y(target), self.margin,
                                              self.sizeAverage)

    def updateGradInput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        g = self._grads(a, b)
        R.margin_ranking_update_grad_input(a, b, self._y(target), g[0], g[1], self.margin,
                                           self.sizeAverage)
        return g

    def extraRepr(self):
        return f"margin={self.margin}"


class L1HingeEmbeddingCriterion(_TableCriterion):
    """Input [x1, x2] (same shape), target one y = +-1: the L1 distance d = sum |x1 - x2|
    for y = 1, max(0, margin - d) for y = -1. Never averaged."""

    def __init__(self, margin=1):
        super().__init__(False)
        self.margin = float(margin)

    def updateOutput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        return R.l1_hinge_embedding_update_output(a, b, target, self.margin)

    def updateGradInput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        g = self._grads(a, b)
        R.l1_hinge_embedding_update_grad_input(a, b, target, g[0], g[1], self.margin)
        return g

    def extraRepr(self):
        return f"margin={self.margin}"
