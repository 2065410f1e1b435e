"""3-D layers on (C, T, H, W) volumes or (N, C, T, H, W) batches: VolumetricConvolution,
VolumetricFullConvolution (transposed), VolumetricMaxPooling, VolumetricAveragePooling.

The convolutions are vol2col + GEMM (engine/volumetric.pyx), their output and column shapes
worked out once per input shape, so a steady stream of same-shaped batches allocates
nothing.
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.conv import full_output_size, output_size
from pymodules.engine.volumetric import (
    avg_pool3d_update_grad_input,
    avg_pool3d_update_output,
    conv3d_acc_grad_parameters,
    conv3d_scratch_size,
    conv3d_update_grad_input,
    conv3d_update_output,
    max_pool3d_update_grad_input,
    max_pool3d_update_output,
    pool3d_output_size,
)
from pymodules.facade import shape_of
from pymodules.nn.conv import _NO_PLAN, _integers, _positive, _Weighted
from pymodules.nn.module import Module, whole
from pymodules.nn.pooling import _MaxIndices

_NOT_SEEN = object()
_BLAS_LIMIT = 2**31 - 1  # the sizes of a GEMM are ints


class _Volumetric(_Weighted):
    """What the two 3-D convolutions share; a subclass sets ``_full`` and ``_args``."""

    _scratch = ("_columns", "_rows")
    _full = False

    def _layout(self, input):
        shape = input.shape
        if len(shape) not in (4, 5):
            return _NO_PLAN
        k = (self.kT, self.kH, self.kW)
        d, p = (self.dT, self.dH, self.dW), (self.padT, self.padH, self.padW)
        if self._full:
            a = (self.adjT, self.adjH, self.adjW)
            size = tuple(max(full_output_size(shape[-3 + i], k[i], d[i], p[i], a[i]), 0)
                         for i in range(3))
            planes, image, grid = self.nOutputPlane, self.nOutputPlane, shape[-3:]
        else:
            size = tuple(output_size(shape[-3 + i], k[i], d[i], p[i]) for i in range(3))
            planes, image, grid = self.nOutputPlane, self.nInputPlane, size
        columns = (image * k[0] * k[1] * k[2], grid[0] * grid[1] * grid[2])
        for what, n in (("a column length", columns[0]), ("a column count", columns[1])):
            if n > _BLAS_LIMIT:  # before any buffer of that size is allocated
                raise ValueError(f"{self}: {what} of {n} exceeds the BLAS limit {_BLAS_LIMIT}")
        rows = 0 if self._full else conv3d_scratch_size(input, self.weight, self._args)
        return shape[:-4] + (planes,) + size, columns, rows

    def _rows_scratch(self, size):
        if not size:
            return None
        rows = self._rows = resized(self._rows, (size,), -1, self.dtype)
        return rows

    def updateOutput(self, input):
        shape, columns, rows = self._plan(input)
        out = self._output(shape)
        conv3d_update_output(input, out, self.weight, self.bias, self._cols(columns),
                             self._full, self._args, self._rows_scratch(rows))
        return out

    def updateGradInput(self, input, gradOutput):
        _, columns, rows = self._plan(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        conv3d_update_grad_input(input, gradOutput, gi, self.weight, self._cols(columns),
                                 self._full, self._args, self._rows_scratch(rows))
        return gi

    def accGradParameters(self, input, gradOutput):
        _, columns, rows = self._plan(input)
        conv3d_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                   self._cols(columns), self._full, self._args, self.scaleW,
                                   self.scaleB, self._rows_scratch(rows))
        self._regularize()

    def _window(self, name, kT, kW, kH, dT, dW, dH, padT, padW, padH):
        _positive(name, kT=kT, kW=kW, kH=kH, dT=dT, dW=dW, dH=dH)
        _integers(name, padT=padT, padW=padW, padH=padH)
        if min(padT, padW, padH) < 0:
            raise ValueError(f"{name}: pads must be >= 0, got {padT}, {padW}, {padH}")
        self.kT, self.kW, self.kH = int(kT), int(kW), int(kH)
        self.dT, self.dW, self.dH = int(dT), int(dW), int(dH)
        self.padT, self.padW, self.padH = int(padT), int(padW), int(padH)

    def _window_repr(self):
        return (f"{self.nInputPlane} -> {self.nOutputPlane}, {self.kT}x{self.kW}x{self.kH}, "
                f"{self.dT}, {self.dW}, {self.dH}, {self.padT}, {self.padW}, {self.padH}")


class VolumetricConvolution(_Volumetric):
    """3-D convolution of (nInputPlane, T, H, W) volumes, or a batch of them.

    weight is (nOutputPlane, nInputPlane, kT, kH, kW), bias (nOutputPlane,). Output size
    floor((T + 2 padT - kT) / dT) + 1 along time, and alike along height and width. Default
    init (BigDL's): weight and bias uniform in +-1/sqrt(kT * kW * kH * nInputPlane).
    """

    def __init__(self, nInputPlane, nOutputPlane, kT, kW, kH, dT=1, dW=1, dH=1, padT=0,
                 padW=0, padH=0, withBias=True, wRegularizer=None, bRegularizer=None,
                 dtype=np.float32):
        super().__init__(dtype)
        name = "VolumetricConvolution"
        _positive(name, nInputPlane=nInputPlane, nOutputPlane=nOutputPlane)
        self._window(name, kT, kW, kH, dT, dW, dH, padT, padW, padH)
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.withBias = bool(withBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._columns = self._rows = None
        self._args = (self.dT, self.dW, self.dH, self.padT, self.padW, self.padH, 0, 0, 0, 1)
        k = self.kT * self.kH * self.kW
        self._fans = (self.nInputPlane * k, self.nOutputPlane * k)
        shape = (self.nOutputPlane, self.nInputPlane, self.kT, self.kH, self.kW)
        self._build(shape, self.nOutputPlane if self.withBias else None, 1, (None,) * 4)

    def extraRepr(self):
        return self._window_repr() + ("" if self.withBias else ", no bias")


class VolumetricFullConvolution(_Volumetric):
    """Transposed 3-D convolution (the gradient of VolumetricConvolution with respect to its
    input).

    weight is (nInputPlane, nOutputPlane / nGroup, kT, kH, kW), bias (nOutputPlane,). Output
    size (T - 1) * dT - 2 padT + kT + adjT along time, with 0 <= adjT < dT, and alike along
    height and width. Default init: uniform in +-1/sqrt(kT * kW * kH * nInputPlane).
    """

    _full = True

    def __init__(self, nInputPlane, nOutputPlane, kT, kW, kH, dT=1, dW=1, dH=1, padT=0,
                 padW=0, padH=0, adjT=0, adjW=0, adjH=0, nGroup=1, noBias=False,
                 wRegularizer=None, bRegularizer=None, dtype=np.float32):
        super().__init__(dtype)
        name = "VolumetricFullConvolution"
        _positive(name, nInputPlane=nInputPlane, nOutputPlane=nOutputPlane, nGroup=nGroup)
        self._window(name, kT, kW, kH, dT, dW, dH, padT, padW, padH)
        _integers(name, adjT=adjT, adjW=adjW, adjH=adjH)
        if not (0 <= adjT < dT and 0 <= adjW < dW and 0 <= adjH < dH):
            raise ValueError(f"{name}: adjT, adjW, adjH must lie in [0, stride), got {adjT}, "
                             f"{adjW}, {adjH} with strides {dT}, {dW}, {dH}")
        if nInputPlane % nGroup or nOutputPlane % nGroup:
            raise ValueError(f"{name}: {nGroup} groups do not divide {nInputPlane} input and "
                             f"{nOutputPlane} output planes")
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.adjT, self.adjW, self.adjH = int(adjT), int(adjW), int(adjH)
        self.nGroup, self.noBias = int(nGroup), bool(noBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._columns = self._rows = None
        self._args = (self.dT, self.dW, self.dH, self.padT, self.padW, self.padH, self.adjT,
                      self.adjW, self.adjH, self.nGroup)
        k = self.kT * self.kH * self.kW
        self._fans = (self.nInputPlane * k, self.nOutputPlane * k)
        shape = (self.nInputPlane, self.nOutputPlane // self.nGroup, self.kT, self.kH, self.kW)
        self._build(shape, None if self.noBias else self.nOutputPlane, self.nGroup, (None,) * 4)

    def extraRepr(self):
        s = self._window_repr() + f", {self.adjT}, {self.adjW}, {self.adjH}"
        if self.nGroup != 1:
            s += f", {self.nGroup} groups"
        return s + (", no bias" if self.noBias else "")


class _Pooling3D(Module):
    """Window bookkeeping of the 3-D poolings."""

    _persist = ("ceilMode",)  # set by ceil() and floor()

    def _window(self, kT, kW, kH, dT, dW, dH, padT, padW, padH, ceilMode):
        name = type(self).__name__
        kT, kW, kH = whole(self, "kT", kT), whole(self, "kW", kW), whole(self, "kH", kH)
        dT = kT if dT is None else whole(self, "dT", dT)
        dW = kW if dW is None else whole(self, "dW", dW)
        dH = kH if dH is None else whole(self, "dH", dH)
        padT, padW, padH = (whole(self, "padT", padT), whole(self, "padW", padW),
                            whole(self, "padH", padH))
        if min(kT, kW, kH, dT, dW, dH) < 1:
            raise ValueError(f"{name}: kernel and strides must be >= 1, got {kT}x{kW}x{kH}, "
                             f"{dT}, {dW}, {dH}")
        if min(padT, padW, padH) < 0:
            raise ValueError(f"{name}: pads must be >= 0, got {padT}, {padW}, {padH}")
        if padT > kT // 2 or padW > kW // 2 or padH > kH // 2:
            raise ValueError(f"{name}: pads {padT}, {padW}, {padH} exceed half the "
                             f"{kT}x{kW}x{kH} kernel")
        self.kT, self.kW, self.kH, self.dT, self.dW, self.dH = kT, kW, kH, dT, dW, dH
        self.padT, self.padW, self.padH = padT, padW, padH
        self.ceilMode = bool(ceilMode)
        self._seen = _NOT_SEEN

    @property
    def _args(self):
        return (self.kT, self.kW, self.kH, self.dT, self.dW, self.dH, self.padT, self.padW,
                self.padH)

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

    def _plan(self, input):
        """The output shape for ``input``'s shape, remembered."""
        shape = shape_of(input)
        if shape != self._seen:
            if len(shape) in (4, 5):
                k, d, p = (self.kT, self.kH, self.kW), (self.dT, self.dH, self.dW), \
                    (self.padT, self.padH, self.padW)
                self._planned = shape[:-3] + tuple(
                    max(pool3d_output_size(shape[-3 + i], k[i], d[i], p[i], self.ceilMode), 0)
                    for i in range(3))
            else:
                self._planned = (0,)  # the kernel names the problem
            self._seen = shape
        return self._planned

    def extraRepr(self):
        return (f"{self.kT}x{self.kW}x{self.kH}, {self.dT}, {self.dW}, {self.dH}, "
                f"{self.padT}, {self.padW}, {self.padH}" + (", ceil" if self.ceilMode else ""))


class VolumetricMaxPooling(_MaxIndices, _Pooling3D):
    """Maximum over kT x kW x kH windows moved by dT, dW, dH, plane by plane: (C, T, H, W)
    or (N, C, T, H, W).

    Output size floor((T + 2 padT - kT) / dT) + 1, or ceil after ``ceil()``; strides default
    to the kernel size; pads may not exceed half the kernel.
    """

    def __init__(self, kT, kW, kH, dT=None, dW=None, dH=None, padT=0, padW=0, padH=0,
                 dtype=np.float32):
        super().__init__(dtype)
        self._window(kT, kW, kH, dT, dW, dH, padT, padW, padH, False)

    def _pooledShape(self, input):
        return self._plan(input)

    def _max(self, input, output, indices):
        max_pool3d_update_output(input, output, indices, self._args, self.ceilMode)

    def _scatter(self, input, gradOutput, gradInput, indices):
        max_pool3d_update_grad_input(input, gradOutput, gradInput, indices)


class VolumetricAveragePooling(_Pooling3D):
    """Mean over kT x kW x kH windows moved by dT, dW, dH, plane by plane: (C, T, H, W) or
    (N, C, T, H, W).

    The divisor is the window size including the padding it covers (``countIncludePad``) or
    only the input it covers. Sizes as in VolumetricMaxPooling.
    """

    def __init__(self, kT, kW, kH, dT=None, dW=None, dH=None, padT=0, padW=0, padH=0,
                 countIncludePad=True, ceilMode=False, dtype=np.float32):
        super().__init__(dtype)
        self._window(kT, kW, kH, dT, dW, dH, padT, padW, padH, ceilMode)
        self.countIncludePad = bool(countIncludePad)

    def updateOutput(self, input):
        out = self.output = resized(self.output, self._plan(input), -1, self.dtype)
        avg_pool3d_update_output(input, out, self._args, self.ceilMode, self.countIncludePad)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        avg_pool3d_update_grad_input(input, gradOutput, gi, self._args, self.ceilMode,
                                     self.countIncludePad)
        return gi

    def extraRepr(self):
        return super().extraRepr() + ("" if self.countIncludePad else ", exclude pad")
