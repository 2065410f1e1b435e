"""LookupTable: an embedding, rows of a weight (nIndex, nOutput) picked by 0-based indices."""

import sys

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.embedding import (
    lookup_table_acc_grad_parameters,
    lookup_table_update_grad_input,
    lookup_table_update_output,
)
from pymodules.facade import shape_of
from pymodules.nn.init import RandomNormal
from pymodules.nn.initializable import Initializable
from pymodules.nn.module import whole

DOUBLEMAX = sys.float_info.max


class LookupTable(Initializable):
    """``y[..., :] = weight[x[...], :]``: indices (n,) -> (n, nOutput), (b, n) -> (b, n, nOutput).

    Indices are 0-based ints (or floats holding whole numbers, as in BigDL); one outside
    [0, nIndex) raises ValueError. ``paddingValue`` is an index whose row gets no gradient
    (None: none; BigDL's default 0 meant none in its 1-based indexing). With a finite
    ``maxNorm``, rows looked up are first rescaled in place to a ``normType``-norm of at most
    maxNorm. ``shouldScaleGradByFreq`` divides each row's gradient by its count in the batch.
    Default init: weight normal(0, 1).
    """

    _scratch = ("_counts",)

    def __init__(self, nIndex, nOutput, paddingValue=None, maxNorm=DOUBLEMAX, normType=2.0,
                 shouldScaleGradByFreq=False, wRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        nIndex, nOutput = whole(self, "nIndex", nIndex), whole(self, "nOutput", nOutput)
        if nIndex <= 0 or nOutput < 0:
            raise ValueError(f"LookupTable: sizes must be nIndex > 0, nOutput >= 0, got "
                             f"{nIndex}, {nOutput}")
        self.nIndex, self.nOutput = nIndex, nOutput
        if paddingValue is not None and \
                not 0 <= whole(self, "paddingValue", paddingValue) < self.nIndex:
            raise ValueError(f"LookupTable: paddingValue {paddingValue} is out of range "
                             f"[0, {self.nIndex})")
        self.paddingValue = None if paddingValue is None else int(paddingValue)
        self.maxNorm, self.normType = float(maxNorm), float(normType)
        self.shouldScaleGradByFreq = bool(shouldScaleGradByFreq)
        self.wRegularizer = wRegularizer
        self._counts = None
        self._fans = (self.nIndex, self.nOutput)
        self._build((self.nIndex, self.nOutput), None, weightInit=RandomNormal(0.0, 1.0))

    def updateOutput(self, input):
        out = self.output = resized(self.output, shape_of(input) + (self.nOutput,), -1,
                                    self.dtype)
        lookup_table_update_output(input, out, self.weight, self.maxNorm, self.normType)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        lookup_table_update_grad_input(input, gi)
        return gi

    def accGradParameters(self, input, gradOutput):
        counts = None
        if self.shouldScaleGradByFreq:
            if self._counts is None or self._counts.dtype != np.float64:
                self._counts = np.zeros(self.nIndex, np.float64)
            counts = self._counts
        padding = -1 if self.paddingValue is None else self.paddingValue
        lookup_table_acc_grad_parameters(input, gradOutput, self.gradWeight, padding,
                                         counts, self.scaleW)
        self._regularize()

    def extraRepr(self):
        return f"{self.nIndex}, {self.nOutput}" + (
            "" if self.paddingValue is None else f", padding {self.paddingValue}")
