"""Pooling: SpatialMaxPooling, SpatialAveragePooling on NCHW images, TemporalMaxPooling on
(frames, features) sequences.

Output sizes come from the shared ``output_size`` helper (floor or ceil mode; pads -1, -1 are
SAME padding), worked out once per input shape. Max pooling keeps the argmax of each window in
``indices`` (reused; dropped by clearState) for backward; in evaluation its forward writes only
the maxima, and a backward then finds the argmax from the input it is given.
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.pooling import (
    avg_pool_update_grad_input,
    avg_pool_update_output,
    max_pool_update_grad_input,
    max_pool_update_output,
    output_size,
    temporal_max_pool_update_grad_input,
    temporal_max_pool_update_output,
)
from pymodules.facade import shape_of
from pymodules.nn.module import Module, whole

_NOT_SEEN = object()
_ndarray = np.ndarray  # a global read costs less than numpy's attribute

_INDEX = np.dtype(np.intp)  # the argmax indices of max pooling


def _check_window(owner, kW, kH, dW, dH, padW, padH):
    if min(kW, kH, dW, dH) < 1:
        raise ValueError(f"{owner}: kernel and strides must be >= 1, got {kW}x{kH}, {dW}, {dH}")
    if not ((padW >= 0 and padH >= 0) or (padW == -1 and padH == -1)):
        raise ValueError(f"{owner}: pads must be >= 0, or both -1 for SAME, got {padW}, {padH}")
    if padW > kW // 2 or padH > kH // 2:
        raise ValueError(f"{owner}: pads {padW}, {padH} exceed half the {kW}x{kH} kernel")


class _MaxIndices(Module):
    """What the max poolings share: the argmax of each window kept in ``indices`` by a
    forward in training, for backward to scatter into; a forward in evaluation writes only
    the maxima, and a backward after it finds the argmax from the input it is given (until
    then ``indices`` is None, or a training forward's). A subclass gives
    ``_pooledShape(input)``, ``_max(input, output, indices or None)`` and
    ``_scatter(input, gradOutput, gradInput, indices)``, each one kernel call."""

    _scratch = ("indices", "_maxima")

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self.indices = self._maxima = None
        self._indexed = True  # whether indices belong to the last forward

    def updateOutput(self, input):
        shape = self._pooledShape(input)
        out = self.output = resized(self.output, shape, -1, self.dtype)
        idx = None
        if self._train:  # in evaluation only the maxima: a backward finds the indices
            idx = self.indices = resized(self.indices, shape, -1, _INDEX)
        self._indexed = self._train
        self._max(input, out, idx)
        return out

    def updateGradInput(self, input, gradOutput):
        if not self._indexed:
            self._findIndices(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        self._scatter(input, gradOutput, gi, self.indices)
        return gi

    def _findIndices(self, input):
        """The argmax of each window of ``input`` (the forward's, as backward's contract has
        it) after a forward in evaluation, which kept none; the maxima go to a scratch array
        (reused: input gradients of a model in evaluation, call after call), as ``output``
        may have been changed in place since."""
        shape = self._pooledShape(input)
        idx = self.indices = resized(self.indices, shape, -1, _INDEX)
        self._maxima = resized(self._maxima, shape, -1, self.dtype)
        self._max(input, self._maxima, idx)
        self._indexed = True


class _Pooling(Module):
    """Window bookkeeping shared by the spatial poolings."""

    _persist = ("ceilMode",)  # set by ceil() and floor()

    def _window(self, kW, kH, dW, dH, padW, padH, ceilMode):
        self.kW, self.kH = whole(self, "kW", kW), whole(self, "kH", kH)
        self.dW = self.kW if dW is None else whole(self, "dW", dW)
        self.dH = self.kH if dH is None else whole(self, "dH", dH)
        self.padW, self.padH = whole(self, "padW", padW), whole(self, "padH", padH)
        self.ceilMode = bool(ceilMode)
        self._seen = _NOT_SEEN

    def ceil(self):
        """Count a last partial window (ceil rounding of the output size)."""
        self.ceilMode = True
        self._seen = _NOT_SEEN
        return self

    def floor(self):
        """Drop a last partial window (floor rounding, the default)."""
        self.ceilMode = False
        self._seen = _NOT_SEEN
        return self

    def _kernel(self, shape):
        return self.kW, self.kH

    def _plan(self, input):
        """(output shape, kernel width, kernel height) for ``input``'s shape, remembered."""
        shape = input.shape if isinstance(input, _ndarray) else ()  # shape_of, inline
        if shape != self._seen:
            self._planned = self._layout(shape)
            self._seen = shape
        return self._planned

    def _layout(self, shape):
        if len(shape) not in (3, 4):
            return (0,), self.kW, self.kH  # the kernel names the problem
        kW, kH = self._kernel(shape)
        h = output_size(shape[-2], kH, self.dH, self.padH, 1, self.ceilMode)
        w = output_size(shape[-1], kW, self.dW, self.padW, 1, self.ceilMode)
        return shape[:-2] + (h, w), kW, kH

    def extraRepr(self):
        return f"{self.kW}, {self.kH}, {self.dW}, {self.dH}, {self.padW}, {self.padH}" + (
            ", ceil" if self.ceilMode else "")


class SpatialMaxPooling(_MaxIndices, _Pooling):
    """Maximum over kW x kH windows moved by dW, dH, plane by plane: (C, H, W) or (N, C, H, W).

    Output size floor((H + 2 padH - kH) / dH) + 1, or ceil with ``ceil()`` / ``toCeil``; the last
    window must start inside the input or its leading pad. Strides default to the kernel
    size. Pads may not exceed half the kernel; padW = padH = -1 is SAME padding.
    """

    def __init__(self, kW, kH, dW=None, dH=None, padW=0, padH=0, toCeil=False,
                 dtype=np.float32):
        super().__init__(dtype)
        _check_window("SpatialMaxPooling", kW, kH, kW if dW is None else dW,
                      kH if dH is None else dH, padW, padH)
        self._window(kW, kH, dW, dH, padW, padH, toCeil)

    def _pooledShape(self, input):
        return self._plan(input)[0]

    def _max(self, input, output, indices):
        max_pool_update_output(input, output, indices, self.kW, self.kH, self.dW, self.dH,
                               self.padW, self.padH, self.ceilMode)

    def _scatter(self, input, gradOutput, gradInput, indices):
        max_pool_update_grad_input(input, gradOutput, gradInput, indices)


class SpatialAveragePooling(_Pooling):
    """Mean over kW x kH windows moved by dW, dH, plane by plane: (C, H, W) or (N, C, H, W).

    ``globalPooling`` pools each whole plane. The divisor is the window size including the
    padding it covers (``countIncludePad``) or only the input it covers; without ``divide``
    the mean is multiplied by kW * kH (BigDL). Sizes as in SpatialMaxPooling.
    """

    def __init__(self, kW, kH, dW=1, dH=1, padW=0, padH=0, globalPooling=False,
                 ceilMode=False, countIncludePad=True, divide=True, dtype=np.float32):
        super().__init__(dtype)
        _check_window("SpatialAveragePooling", kW, kH, dW, dH, padW, padH)
        self._window(kW, kH, dW, dH, padW, padH, ceilMode)
        self.globalPooling = bool(globalPooling)
        self.countIncludePad = bool(countIncludePad)
        self.divide = bool(divide)

    def setCountIncludePad(self):
        self.countIncludePad = True
        return self

    def setCountExcludePad(self):
        self.countIncludePad = False
        return self

    def _kernel(self, shape):
        return (shape[-1], shape[-2]) if self.globalPooling else (self.kW, self.kH)

    def updateOutput(self, input):
        shape, kW, kH = self._plan(input)
        out = self.output = resized(self.output, shape, -1, self.dtype)
        avg_pool_update_output(input, out, kW, kH, self.dW, self.dH, self.padW, self.padH,
                               self.ceilMode, self.countIncludePad, self.divide)
        return out

    def updateGradInput(self, input, gradOutput):
        _, kW, kH = self._plan(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        avg_pool_update_grad_input(input, gradOutput, gi, kW, kH, self.dW, self.dH,
                                   self.padW, self.padH, self.ceilMode,
                                   self.countIncludePad, self.divide)
        return gi

    def extraRepr(self):
        return "global" if self.globalPooling else super().extraRepr()


class TemporalMaxPooling(_MaxIndices):
    """Maximum over windows of kW frames moved by dW: (T, C) -> (T', C), or batched (N, T, C).

    T' = (T - kW) // dW + 1; dW = -1 (the default) means dW = kW.
    """

    def __init__(self, kW, dW=-1, dtype=np.float32):
        super().__init__(dtype)
        dW = kW if dW == -1 else dW
        if kW < 1 or dW < 1:
            raise ValueError(f"TemporalMaxPooling: kW and dW must be >= 1 (dW -1: kW), got "
                             f"{kW}, {dW}")
        self.kW, self.dW = whole(self, "kW", kW), whole(self, "dW", dW)

    def _pooledShape(self, input):
        shape = shape_of(input)
        if len(shape) in (2, 3):
            shape = shape[:-2] + (output_size(shape[-2], self.kW, self.dW), shape[-1])
        return shape

    def _max(self, input, output, indices):
        temporal_max_pool_update_output(input, output, indices, self.kW, self.dW)

    def _scatter(self, input, gradOutput, gradInput, indices):
        temporal_max_pool_update_grad_input(input, gradOutput, gradInput, indices)

    def extraRepr(self):
        return f"{self.kW}, {self.dW}"
