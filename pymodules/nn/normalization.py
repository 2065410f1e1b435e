"""Normalization layers: batch normalization, Lp normalization and local response norm."""

import math
import sys

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.normalization import (
    FEATURES,
    NCHW,
    NHWC,
    batchnorm_acc_grad_parameters,
    batchnorm_update_grad_input,
    batchnorm_update_output,
    lrn_update_grad_input,
    lrn_update_output,
    normalize_update_grad_input,
    normalize_update_output,
)
from pymodules.facade import shape_of
from pymodules.nn.init import RandomUniform, Zeros
from pymodules.nn.initializable import Initializable, parameter
from pymodules.nn.module import Module, whole


class BatchNormalization(Initializable):
    """``y = (x - mean) / sqrt(var + eps) * weight + bias`` per feature of a batch (n, nOutput).

    Training normalises with the batch statistics and updates
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance), as BigDL
    and PyTorch do; evaluation uses the running statistics and also takes a single sample
    (nOutput,). Default init: weight uniform in [0, 1], bias 0, runningMean 0, runningVar 1.
    """

    _extra = ("runningMean", "runningVar")
    _scratch = ("_saveMean", "_saveInvstd")
    _layout = FEATURES

    def __init__(self, nOutput, eps=1e-5, momentum=0.1, affine=True, initWeight=None,
                 initBias=None, initGradWeight=None, initGradBias=None, dtype=np.float32):
        super().__init__(dtype)
        if whole(self, "nOutput", nOutput) <= 0:
            raise ValueError(f"{type(self).__name__}: nOutput must be > 0, got {nOutput}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must lie in [0, 1], "
                             f"got {momentum}")
        self.nOutput, self.eps, self.momentum = int(nOutput), float(eps), float(momentum)
        self.affine = bool(affine)
        n = self.nOutput
        self.runningMean = parameter(self, "runningMean", n, 0)
        self.runningVar = parameter(self, "runningVar", n, 1)
        self._saveMean = self._saveInvstd = None
        self._fans = (n, n)
        shape = n if self.affine else None
        self._build(shape, shape, (initWeight, initBias, initGradWeight, initGradBias),
                    RandomUniform(0, 1), Zeros())

    def _saved(self):
        n = (self.nOutput,)
        self._saveMean = resized(self._saveMean, n, -1, self.dtype)
        self._saveInvstd = resized(self._saveInvstd, n, -1, self.dtype)
        return self._saveMean, self._saveInvstd

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        batchnorm_update_output(input, out, self.weight, self.bias, self.runningMean,
                                self.runningVar, *self._saved(), self._layout, self._train,
                                self.momentum, self.eps)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        batchnorm_update_grad_input(input, gradOutput, gi, self.weight, self._saveMean,
                                    self._saveInvstd, self._layout, self._train)
        return gi

    def accGradParameters(self, input, gradOutput):
        if not self.affine:
            return
        batchnorm_acc_grad_parameters(input, gradOutput, self.gradWeight, self.gradBias,
                                      self._saveMean, self._saveInvstd, self._layout,
                                      self.scaleW, self.scaleB)

    def extraRepr(self):
        return f"{self.nOutput}, {self.eps}, {self.momentum}, {self.affine}"


class SpatialBatchNormalization(BatchNormalization):
    """BatchNormalization per channel of images (n, c, h, w) (dataFormat "NCHW") or
    (n, h, w, c) ("NHWC"); a single image (3-D) in evaluation only."""

    def __init__(self, nOutput, eps=1e-5, momentum=0.1, affine=True, initWeight=None,
                 initBias=None, initGradWeight=None, initGradBias=None, dataFormat="NCHW",
                 dtype=np.float32):
        if dataFormat not in ("NCHW", "NHWC"):
            raise ValueError(f"SpatialBatchNormalization: dataFormat must be 'NCHW' or "
                             f"'NHWC', got {dataFormat!r}")
        super().__init__(nOutput, eps, momentum, affine, initWeight, initBias, initGradWeight,
                         initGradBias, dtype)
        self.dataFormat = dataFormat
        self._layout = NCHW if dataFormat == "NCHW" else NHWC


class Normalize(Module):
    """``y = x / ||x||_p`` with ``||x||_p = (sum |x|^p + eps)^(1/p)`` (``max |x| + eps`` for
    p = inf or the largest double), over the features of (n,) and (b, n) and the channels of
    (b, c, h, w)."""

    _scratch = ("_norm",)

    def __init__(self, p, eps=1e-10, dtype=np.float32):
        super().__init__(dtype)
        if not p > 0:
            raise ValueError(f"Normalize: p must be > 0, got {p}")
        self.p = float(p)
        self.eps = float(eps)
        self._norm = None

    def _lines(self, input):
        shape = shape_of(input)
        axis = 0 if len(shape) == 1 else 1
        return (math.prod(shape[:axis] + shape[axis + 1:]),)

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        norm = self._norm = resized(self._norm, self._lines(input), -1, self.dtype)
        normalize_update_output(input, out, norm, self.p, self.eps)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        normalize_update_grad_input(input, gradOutput, gi, self._norm, self.p)
        return gi

    def extraRepr(self):
        p = "inf" if self.p >= sys.float_info.max else f"{self.p}"
        return f"{p}, {self.eps}"


class SpatialCrossMapLRN(Module):
    """``y = x / (k + alpha / size * sum x^2)^beta``, the sum over the ``size`` (odd) channels
    centred on each channel; images (c, h, w) or (b, c, h, w)."""

    _scratch = ("_scale",)

    def __init__(self, size=5, alpha=1.0, beta=0.75, k=1.0, dtype=np.float32):
        super().__init__(dtype)
        if whole(self, "size", size) < 1 or size % 2 == 0:
            raise ValueError(f"SpatialCrossMapLRN: size must be odd and positive, got {size}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)
        self._scale = None

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        scale = self._scale = resized(self._scale, input, -1, self.dtype)
        lrn_update_output(input, out, scale, self.size, self.alpha, self.beta, self.k)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        lrn_update_grad_input(input, self.output, gradOutput, gi, self._scale, self.size,
                              self.alpha, self.beta)
        return gi

    def extraRepr(self):
        return f"{self.size}, {self.alpha}, {self.beta}, {self.k}"
