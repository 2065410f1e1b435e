"""Noise layers (SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout) and Masking.

The noise layers draw from a generator of their own (``pymodules.random.Stream``), as
Dropout does: what they draw depends on ``setSeed`` and the order of construction only, not
on what other models or threads draw. Backward in evaluation gives the gradient of the
evaluation map (BigDL refuses it).
"""

import math

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.noise import (
    gaussian_dropout_update_grad_input,
    gaussian_dropout_update_output,
    gaussian_noise_update_grad_input,
    gaussian_noise_update_output,
    masking_update_grad_input,
    masking_update_output,
    spatial_dropout_update_grad_input,
    spatial_dropout_update_output,
)
from pymodules.facade import require_array
from pymodules.nn.module import Module
from pymodules.random import Stream

_FORMATS = ("NCHW", "NHWC")


class _SpatialDropout(Module):
    """Drops whole feature maps: in training each map of each sample is kept (unchanged) or
    zeroed, with probability ``initP`` of being dropped, a fresh draw each forward;
    ``noise`` keeps the 0/1 mask for backward. Evaluation: ``y = x * (1 - p)``. As BigDL:
    the kept maps are not rescaled in training, the output is scaled in evaluation instead
    (PyTorch's Dropout2d does the reverse), so BigDL's models give BigDL's outputs.
    """

    _scratch = ("noise",)
    _ranks = ()  # (rank of one sample, rank of a batch)

    def __init__(self, initP=0.5, format="NCHW", dtype=np.float32):  # noqa: A002 - BigDL's
        super().__init__(dtype)
        if not 0 <= initP <= 1:
            raise ValueError(f"{type(self).__name__}: the drop probability must lie in "
                             f"[0, 1], got {initP}")
        if format not in _FORMATS:
            raise ValueError(f"{type(self).__name__}: format must be 'NCHW' or 'NHWC', got "
                             f"{format!r}")
        self.initP = self.p = float(initP)
        self.format = format
        self.noise = None
        self._rng = Stream()

    def _noise_shape(self, shape):
        """The mask's shape for an input of ``shape``: one value per (sample, channel)."""
        single, batch = self._ranks
        if len(shape) not in self._ranks:
            raise ValueError(f"input must be {single}-D (one sample) or {batch}-D (a batch), "
                             f"got {len(shape)}-D (shape {shape})")
        lead = shape[:len(shape) - single]  # the batch axis, if any
        sample = shape[len(lead):]
        if self.format == "NCHW":  # channels first
            return lead + sample[:1] + (1,) * (single - 1)
        return lead + (1,) * (single - 1) + sample[-1:]

    def updateOutput(self, input):
        x = require_array(input)
        out = self.output = resized(self.output, x, -1, self.dtype)
        if self._train:
            self.noise = resized(self.noise, self._noise_shape(x.shape), -1, self.dtype)
            seed = self._rng.generator.bit_generator.random_raw()
        else:
            seed = 0
        spatial_dropout_update_output(x, out, self.noise, self.p, self._train, seed)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        spatial_dropout_update_grad_input(gradOutput, gi, self.noise, self.p, self._train)
        return gi

    def extraRepr(self):
        return f"{self.p}" + ("" if self.format == "NCHW" else f", {self.format}")


class SpatialDropout1D(_SpatialDropout):
    """Drops whole 1-D feature maps (channels): input (time, channels) or (batch, time,
    channels), the mask (1, channels) or (batch, 1, channels)."""

    _ranks = (2, 3)

    def __init__(self, initP=0.5, dtype=np.float32):
        super().__init__(initP, "NHWC", dtype)

    def _noise_shape(self, shape):
        if len(shape) not in self._ranks:
            raise ValueError(f"input must be 2-D (time, channels) or 3-D (batch, time, "
                             f"channels), got {len(shape)}-D (shape {shape})")
        return shape[:-2] + (1,) + shape[-1:]

    def extraRepr(self):
        return f"{self.p}"


class SpatialDropout2D(_SpatialDropout):
    """Drops whole 2-D feature maps: input (C, H, W) or (N, C, H, W) for "NCHW", (H, W, C)
    or (N, H, W, C) for "NHWC"."""

    _ranks = (3, 4)


class SpatialDropout3D(_SpatialDropout):
    """Drops whole 3-D feature maps: input (C, D, H, W) or (N, C, D, H, W) for "NCHW",
    (D, H, W, C) or (N, D, H, W, C) for "NHWC" (channels last)."""

    _ranks = (4, 5)


class GaussianNoise(Module):
    """Training: ``y = x + stddev * z``, z standard normal, fresh each forward; the gradient
    passes unchanged. Evaluation: ``y = x``."""

    def __init__(self, stddev, dtype=np.float32):
        super().__init__(dtype)
        if not stddev >= 0:
            raise ValueError(f"GaussianNoise: stddev must be >= 0, got {stddev}")
        self.stddev = float(stddev)
        self._rng = Stream()

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        seed = self._rng.generator.bit_generator.random_raw() if self._train else 0
        gaussian_noise_update_output(input, out, self.stddev, self._train, seed)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        gaussian_noise_update_grad_input(gradOutput, gi)
        return gi

    def extraRepr(self):
        return f"{self.stddev}"


class GaussianDropout(Module):
    """Training: ``y = x * (1 + s * z)``, z standard normal, ``s = sqrt(rate / (1 - rate))``,
    a fresh draw each forward; ``noise`` keeps the factors, and backward multiplies by them
    (**fix:** BigDL's backward draws new ones). Evaluation: ``y = x``."""

    _scratch = ("noise",)

    def __init__(self, rate, dtype=np.float32):
        super().__init__(dtype)
        if not 0 <= rate < 1:
            raise ValueError(f"GaussianDropout: rate must lie in [0, 1), got {rate}")
        self.rate = float(rate)
        self.stddev = math.sqrt(self.rate / (1 - self.rate))
        self.noise = None
        self._rng = Stream()

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        if self._train:
            self.noise = resized(self.noise, input, -1, self.dtype)
            seed = self._rng.generator.bit_generator.random_raw()
        else:
            seed = 0
        gaussian_dropout_update_output(input, out, self.noise, self.stddev, self._train, seed)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        gaussian_dropout_update_grad_input(gradOutput, gi, self.noise, self._train)
        return gi

    def extraRepr(self):
        return f"{self.rate}"


class Masking(Module):
    """Skips time steps: for an input (batch, time, ...), a step whose values all equal
    ``maskValue`` gives zeros in the output and a zero gradient; other steps pass."""

    def __init__(self, maskValue=0.0, dtype=np.float32):
        super().__init__(dtype)
        self.maskValue = float(maskValue)

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, -1, self.dtype)
        masking_update_output(input, out, self.maskValue)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        masking_update_grad_input(input, gradOutput, gi, self.maskValue)
        return gi

    def extraRepr(self):
        return f"{self.maskValue}"
