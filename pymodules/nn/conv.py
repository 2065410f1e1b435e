"""Convolutions: SpatialConvolution, SpatialDilatedConvolution, SpatialFullConvolution
(transposed) on NCHW images, TemporalConvolution on (frames, features) sequences.

Each method is one kernel call. The output and im2col shapes are worked out once per input
shape (the last one seen is remembered), so a steady stream of same-shaped batches allocates
nothing and does no Python arithmetic.
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.conv import (
    conv_acc_grad_parameters,
    conv_columns_shape,
    conv_direct_size,
    conv_direct_update_output,
    conv_scratch_size,
    conv_update_grad_input,
    conv_update_output,
    full_conv_acc_grad_parameters,
    full_conv_update_grad_input,
    full_conv_update_output,
    full_output_size,
    output_size,
    temporal_conv_acc_grad_parameters,
    temporal_conv_update_grad_input,
    temporal_conv_update_output,
)
from pymodules.engine.conv3x3 import (
    conv3x3_acc_grad_parameters,
    conv3x3_scratch_size,
    conv3x3_update_grad_input,
    conv3x3_update_output,
)
from pymodules.nn.initializable import Initializable
from pymodules.nn.module import whole

_NOT_SEEN = object()
_ndarray = np.ndarray  # a global read costs less than numpy's attribute
# The plan of an input that is not an array of the right rank: the kernel refuses it and says why.
_NO_PLAN = ((0,), (0, 0), 0)


def _positive(owner, **sizes):
    for name, value in sizes.items():
        if whole(owner, name, value) < 1:
            raise ValueError(f"{owner}: {name} must be >= 1, got {value}")


def _integers(owner, **values):
    for name, value in values.items():
        whole(owner, name, value)


class _Weighted(Initializable):
    """What the convolutions share: BigDL's grouped initWeight, the per-shape plan.

    Default init (BigDL's): weight and bias uniform in +-1/sqrt(fanIn).
    """

    _no_plan = _NO_PLAN

    def _build(self, shape, biasSize, groups, inits):
        self._groups = groups
        self._seen = _NOT_SEEN
        super()._build(shape, biasSize, inits)

    def _accepts(self, target, value):
        # BigDL keeps a group axis in front: (nGroup, rows / nGroup, ...) is the same memory.
        g = self._groups
        grouped = (g, target.shape[0] // g) + target.shape[1:] if target.ndim > 1 else None
        return value.shape in (target.shape, grouped)

    def _plan(self, input):
        """(output shape, columns shape, ...) for ``input``'s shape and the module's dtype; the
        last one is remembered."""
        key = (input.shape if isinstance(input, _ndarray) else (), self.dtype)  # shape_of
        if key != self._seen:
            self._planned = self._layout(input) if key[0] else self._no_plan
            self._seen = key
        return self._planned

    def _output(self, shape):
        out = self.output = resized(self.output, shape, -1, self.dtype)
        return out

    def _cols(self, shape):
        cols = self._columns = resized(self._columns, shape, -1, self.dtype)
        return cols


class _Spatial(_Weighted):
    """im2col + GEMM convolution over (C, H, W) or (N, C, H, W); see SpatialConvolution.

    Its plan is (output shape, columns shape, transposed forward's scratch, Winograd
    scratch, direct forward's scratch): where the 3x3 Winograd kernels (conv3x3_scratch_size)
    or the direct forward (few planes, conv_direct_size) run, the forward takes no columns.
    """

    _scratch = ("_columns", "_rows", "_wino", "_direct")
    _no_plan = _NO_PLAN + (0, 0)

    def _setup(self, nInputPlane, nOutputPlane, kernelW, kernelH, strideW, strideH, padW,
               padH, dilationW, dilationH, nGroup, withBias, inits):
        name = type(self).__name__
        _positive(name, nInputPlane=nInputPlane, nOutputPlane=nOutputPlane, kernelW=kernelW,
                  kernelH=kernelH, strideW=strideW, strideH=strideH, dilationW=dilationW,
                  dilationH=dilationH, nGroup=nGroup)
        _integers(name, padW=padW, padH=padH)
        if not ((padW >= 0 and padH >= 0) or (padW == -1 and padH == -1)):
            raise ValueError(f"{name}: pads must be >= 0, or both -1 for SAME, got {padW}, {padH}")
        if nInputPlane % nGroup or nOutputPlane % nGroup:
            raise ValueError(f"{name}: {nGroup} groups do not divide {nInputPlane} input and "
                             f"{nOutputPlane} output planes")
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.kernelW, self.kernelH = int(kernelW), int(kernelH)
        self.strideW, self.strideH = int(strideW), int(strideH)
        self.padW, self.padH = int(padW), int(padH)
        self.dilationW, self.dilationH = int(dilationW), int(dilationH)
        self.nGroup = int(nGroup)
        self.withBias = bool(withBias)
        self._columns = self._rows = self._wino = self._direct = None
        k = self.kernelH * self.kernelW
        self._fans = (self.nInputPlane * k, self.nOutputPlane * k)
        shape = (self.nOutputPlane, self.nInputPlane // self.nGroup, self.kernelH, self.kernelW)
        self._build(shape, self.nOutputPlane if self.withBias else None, self.nGroup, inits)

    def _layout(self, input):
        shape = input.shape
        if len(shape) not in (3, 4):
            return self._no_plan
        h = output_size(shape[-2], self.kernelH, self.strideH, self.padH, self.dilationH)
        w = output_size(shape[-1], self.kernelW, self.strideW, self.padW, self.dilationW)
        columns = conv_columns_shape(input, self.weight, self.strideW, self.strideH, self.padW,
                                     self.padH, self.dilationW, self.dilationH, self.nGroup)
        rows = conv_scratch_size(input, self.weight, self.strideW, self.strideH, self.padW,
                                 self.padH, self.dilationW, self.dilationH, self.nGroup)
        wino = conv3x3_scratch_size(input, self.weight, self.strideW, self.strideH, self.padW,
                                    self.padH, self.dilationW, self.dilationH, self.nGroup)
        direct = conv_direct_size(input, self.weight, self.strideW, self.strideH, self.padW,
                                  self.padH, self.dilationW, self.dilationH, self.nGroup)
        return shape[:-3] + (self.nOutputPlane, h, w), columns, rows, wino, direct

    def _winograd(self, input):
        """The 3x3 Winograd kernels' scratch for ``input`` (conv3x3.pyx), None where
        they do not run."""
        wino = self._plan(input)[3]
        if not wino:
            return None
        wino = self._wino = resized(self._wino, (wino,), -1, self.dtype)
        return wino

    def _rows_scratch(self, size):
        if not size:
            return None
        rows = self._rows = resized(self._rows, (size,), -1, self.dtype)
        return rows

    def updateOutput(self, input):
        shape, columns, rows, wino, direct = self._plan(input)  # one plan lookup a call
        out = self.output = resized(self.output, shape, -1, self.dtype)
        if wino:
            wino = self._wino = resized(self._wino, (wino,), -1, self.dtype)
            conv3x3_update_output(input, out, self.weight, self.bias, wino, self.padW, self.padH)
            return out
        if direct:
            scratch = self._direct = resized(self._direct, (direct,), -1, self.dtype)
            conv_direct_update_output(input, out, self.weight, self.bias, scratch,
                                      self.strideW, self.strideH, self.padW, self.padH,
                                      self.dilationW, self.dilationH, self.nGroup)
            return out
        conv_update_output(input, out, self.weight, self.bias, self._cols(columns),
                           self.strideW, self.strideH, self.padW, self.padH,
                           self.dilationW, self.dilationH, self.nGroup,
                           self._rows_scratch(rows))
        return out

    def updateGradInput(self, input, gradOutput):
        if not self.propagateBack:
            return self.gradInput
        columns = self._plan(input)[1]
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        wino = self._winograd(input)
        if wino is not None:
            conv3x3_update_grad_input(input, gradOutput, gi, self.weight, wino, self.padW,
                                      self.padH)
            return gi
        conv_update_grad_input(input, gradOutput, gi, self.weight, self._cols(columns),
                               self.strideW, self.strideH, self.padW, self.padH,
                               self.dilationW, self.dilationH, self.nGroup)
        return gi

    def accGradParameters(self, input, gradOutput):
        _, columns, rows = self._plan(input)[:3]
        wino = self._winograd(input)
        if wino is not None:
            conv3x3_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias, wino,
                                        self.padW, self.padH, self.scaleW, self.scaleB)
            self._regularize()
            return
        conv_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                 self._cols(columns), self.strideW, self.strideH,
                                 self.padW, self.padH, self.dilationW, self.dilationH,
                                 self.nGroup, self.scaleW, self.scaleB,
                                 self._rows_scratch(rows))
        self._regularize()

    def extraRepr(self):
        s = (f"{self.nInputPlane} -> {self.nOutputPlane}, {self.kernelW}x{self.kernelH}, "
             f"{self.strideW}, {self.strideH}, {self.padW}, {self.padH}")
        if self.dilationW != 1 or self.dilationH != 1:
            s += f", dilation {self.dilationW}, {self.dilationH}"
        if self.nGroup != 1:
            s += f", {self.nGroup} groups"
        return s + ("" if self.withBias else ", no bias")


class SpatialConvolution(_Spatial):
    """2-D convolution of (nInputPlane, H, W) images, or a batch (N, nInputPlane, H, W).

    weight is (nOutputPlane, nInputPlane / nGroup, kernelH, kernelW), bias (nOutputPlane,).
    Output size floor((H + 2 padH - kernelH) / strideH) + 1; padW = padH = -1 is SAME padding
    (ceil(H / strideH), the odd pad at the end). Default init: uniform in
    +-1/sqrt(kernelW * kernelH * nInputPlane). Without propagateBack, gradInput is not computed.
    """

    def __init__(self, nInputPlane, nOutputPlane, kernelW, kernelH, strideW=1, strideH=1,
                 padW=0, padH=0, nGroup=1, propagateBack=True, wRegularizer=None,
                 bRegularizer=None, initWeight=None, initBias=None, initGradWeight=None,
                 initGradBias=None, withBias=True, dtype=np.float32):
        super().__init__(dtype)
        self.propagateBack = bool(propagateBack)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._setup(nInputPlane, nOutputPlane, kernelW, kernelH, strideW, strideH, padW, padH,
                    1, 1, nGroup, withBias, (initWeight, initBias, initGradWeight, initGradBias))


class SpatialDilatedConvolution(_Spatial):
    """2-D convolution whose kernel taps are dilationW, dilationH pixels apart (atrous).

    weight is (nOutputPlane, nInputPlane, kH, kW). Output size
    floor((H + 2 padH - dilationH * (kH - 1) - 1) / dH) + 1. Default init as
    SpatialConvolution's.
    """

    def __init__(self, nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=0,
                 dilationW=1, dilationH=1, wRegularizer=None, bRegularizer=None,
                 dtype=np.float32):
        super().__init__(dtype)
        if padW < 0 or padH < 0:
            raise ValueError(f"SpatialDilatedConvolution: pads must be >= 0, got {padW}, {padH}")
        self.propagateBack = True
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._setup(nInputPlane, nOutputPlane, kW, kH, dW, dH, padW, padH, dilationW,
                    dilationH, 1, True, (None,) * 4)


class SpatialFullConvolution(_Weighted):
    """Transposed 2-D convolution (the gradient of SpatialConvolution with respect to its input).

    weight is (nInputPlane, nOutputPlane / nGroup, kH, kW), bias (nOutputPlane,). Output size
    (H - 1) * dH - 2 padH + kH + adjH, with 0 <= adjH < dH. Default init: uniform in
    +-1/sqrt(kW * kH * nInputPlane) (BigDL's).
    """

    _scratch = ("_columns",)

    def __init__(self, nInputPlane, nOutputPlane, kW, kH, dW=1, dH=1, padW=0, padH=0, adjW=0,
                 adjH=0, nGroup=1, noBias=False, wRegularizer=None, bRegularizer=None,
                 dtype=np.float32):
        super().__init__(dtype)
        _positive("SpatialFullConvolution", nInputPlane=nInputPlane, nOutputPlane=nOutputPlane,
                  kW=kW, kH=kH, dW=dW, dH=dH, nGroup=nGroup)
        _integers("SpatialFullConvolution", padW=padW, padH=padH, adjW=adjW, adjH=adjH)
        if padW < 0 or padH < 0:
            raise ValueError(f"SpatialFullConvolution: pads must be >= 0, got {padW}, {padH}")
        if not (0 <= adjW < dW and 0 <= adjH < dH):
            raise ValueError(f"SpatialFullConvolution: adjW, adjH must lie in [0, stride), got "
                             f"{adjW}, {adjH} with strides {dW}, {dH}")
        if nInputPlane % nGroup or nOutputPlane % nGroup:
            raise ValueError(f"SpatialFullConvolution: {nGroup} groups do not divide "
                             f"{nInputPlane} input and {nOutputPlane} output planes")
        self.nInputPlane, self.nOutputPlane = int(nInputPlane), int(nOutputPlane)
        self.kW, self.kH, self.dW, self.dH = int(kW), int(kH), int(dW), int(dH)
        self.padW, self.padH, self.adjW, self.adjH = int(padW), int(padH), int(adjW), int(adjH)
        self.nGroup, self.noBias = int(nGroup), bool(noBias)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._columns = None
        k = self.kW * self.kH
        self._fans = (self.nInputPlane * k, self.nOutputPlane * k)
        shape = (self.nInputPlane, self.nOutputPlane // self.nGroup, self.kH, self.kW)
        self._build(shape, None if self.noBias else self.nOutputPlane, self.nGroup, (None,) * 4)

    def _layout(self, input):
        shape = input.shape
        if len(shape) not in (3, 4):
            return (0,), (0, 0)
        h = max(full_output_size(shape[-2], self.kH, self.dH, self.padH, self.adjH), 0)
        w = max(full_output_size(shape[-1], self.kW, self.dW, self.padW, self.adjW), 0)
        columns = (self.nOutputPlane * self.kH * self.kW, shape[-2] * shape[-1])
        return shape[:-3] + (self.nOutputPlane, h, w), columns

    def _args(self):
        return (self.dW, self.dH, self.padW, self.padH, self.adjW, self.adjH, self.nGroup)

    def updateOutput(self, input):
        shape, columns = self._plan(input)
        out = self._output(shape)
        full_conv_update_output(input, out, self.weight, self.bias, self._cols(columns),
                                *self._args())
        return out

    def updateGradInput(self, input, gradOutput):
        _, columns = self._plan(input)
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        full_conv_update_grad_input(input, gradOutput, gi, self.weight, self._cols(columns),
                                    *self._args())
        return gi

    def accGradParameters(self, input, gradOutput):
        _, columns = self._plan(input)
        full_conv_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                      self._cols(columns), *self._args(), self.scaleW,
                                      self.scaleB)
        self._regularize()

    def extraRepr(self):
        s = (f"{self.nInputPlane} -> {self.nOutputPlane}, {self.kW}x{self.kH}, {self.dW}, "
             f"{self.dH}, {self.padW}, {self.padH}, {self.adjW}, {self.adjH}")
        if self.nGroup != 1:
            s += f", {self.nGroup} groups"
        return s + (", no bias" if self.noBias else "")


class TemporalConvolution(_Weighted):
    """1-D convolution over (T, inputFrameSize) sequences, or a batch (N, T, inputFrameSize).

    output[t] = weight @ input[t*strideW : t*strideW + kernelW].ravel() + bias, with weight
    (outputFrameSize, kernelW * inputFrameSize) and T' = (T - kernelW) // strideW + 1 frames.
    Default init: uniform in +-1/sqrt(kernelW * inputFrameSize).
    """

    def __init__(self, inputFrameSize, outputFrameSize, kernelW, strideW=1, propagateBack=True,
                 wRegularizer=None, bRegularizer=None, initWeight=None, initBias=None,
                 initGradWeight=None, initGradBias=None, dtype=np.float32):
        super().__init__(dtype)
        _positive("TemporalConvolution", inputFrameSize=inputFrameSize,
                  outputFrameSize=outputFrameSize, kernelW=kernelW, strideW=strideW)
        self.inputFrameSize, self.outputFrameSize = int(inputFrameSize), int(outputFrameSize)
        self.kernelW, self.strideW = int(kernelW), int(strideW)
        self.propagateBack = bool(propagateBack)
        self.wRegularizer, self.bRegularizer = wRegularizer, bRegularizer
        self._fans = (self.kernelW * self.inputFrameSize, self.kernelW * self.outputFrameSize)
        self._build((self.outputFrameSize, self.kernelW * self.inputFrameSize),
                    self.outputFrameSize, 1,
                    (initWeight, initBias, initGradWeight, initGradBias))

    def _layout(self, input):
        shape = input.shape
        if len(shape) not in (2, 3):
            return (0,), None
        frames = output_size(shape[-2], self.kernelW, self.strideW)
        return shape[:-2] + (frames, self.outputFrameSize), None

    def updateOutput(self, input):
        out = self._output(self._plan(input)[0])
        temporal_conv_update_output(input, out, self.weight, self.bias, self.kernelW,
                                    self.strideW)
        return out

    def updateGradInput(self, input, gradOutput):
        if not self.propagateBack:
            return self.gradInput
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        temporal_conv_update_grad_input(input, gradOutput, gi, self.weight, self.kernelW,
                                        self.strideW)
        return gi

    def accGradParameters(self, input, gradOutput):
        temporal_conv_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                          self.kernelW, self.strideW, self.scaleW,
                                          self.scaleB)
        self._regularize()

    def extraRepr(self):
        return (f"{self.inputFrameSize} -> {self.outputFrameSize}, {self.kernelW}, "
                f"{self.strideW}")
