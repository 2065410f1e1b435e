"""Padding, cropping and resizing: SpatialZeroPadding, Padding, Cropping2D, Cropping3D,
UpSampling1D, UpSampling2D, UpSampling3D, ResizeBilinear.

None has parameters. Each method is one kernel call of engine/padding.pyx, which sees the
input from its first resized axis on (the axes after them, such as NHWC's channels, ride
along); the layer only works out that axis and the output shape.
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.padding import (
    insert_update_grad_input,
    insert_update_output,
    pad_update_grad_input,
    pad_update_output,
    resize_bilinear_update_grad_input,
    resize_bilinear_update_output,
    upsample_update_grad_input,
    upsample_update_output,
)
from pymodules.facade import shape_of
from pymodules.nn.module import Module, whole


def _rank(owner, shape, ranks):
    """The rank of an input of ``shape``, which must be one of ``ranks``."""
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"{owner}: input must be {want}, got {len(shape)}-D (shape {shape})")
    return len(shape)


def _name(owner):
    return owner if isinstance(owner, str) else type(owner).__name__


def _format(owner, value, formats):
    owner = _name(owner)
    if value not in formats:
        raise ValueError(f"{owner}: dataFormat must be one of {', '.join(formats)}, got "
                         f"{value!r}")
    return value


def _pair(owner, what, value, n=2, low=0):
    """``value`` as a tuple of ``n`` integers >= ``low``."""
    owner = _name(owner)
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{owner}: {what} must be a list of {n} integers, got {value!r}") from None
    if len(items) != n:
        raise ValueError(f"{owner}: {what} must hold {n} integers, got {value!r}")
    out = tuple(whole(owner, what, v) for v in items)
    if min(out) < low:
        raise ValueError(f"{owner}: {what} must be >= {low}, got {value!r}")
    return out


class _Window(Module):
    """A layer that pads or crops its windowed axes: ``_plan(shape)`` gives (axis, before,
    after); the kernel checks the rest."""

    def _plan(self, shape):
        raise NotImplementedError

    def _out_shape(self, shape, axis, before, after):
        if len(shape) < axis + len(before):
            return (0,)  # not an array: the kernel says so
        out = list(shape)
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out[axis + i] = max(shape[axis + i] + b + a, 0)
        return tuple(out)

    def updateOutput(self, input):
        shape = shape_of(input)
        axis, before, after = self._plan(shape)
        out = self.output = resized(self.output, self._out_shape(shape, axis, before, after),
                                    -1, self.dtype)
        pad_update_output(input, out, axis, before, after, self._value)
        return out

    def updateGradInput(self, input, gradOutput):
        axis, before, after = self._plan(shape_of(input))
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        pad_update_grad_input(input, gradOutput, gi, axis, before, after)
        return gi


class SpatialZeroPadding(_Window):
    """Zeros around each plane of (C, H, W) or (N, C, H, W): padLeft columns on the left,
    padRight on the right, padTop rows above, padBottom below. A negative pad crops."""

    _value = 0.0

    def __init__(self, padLeft, padRight, padTop, padBottom, dtype=np.float32):
        super().__init__(dtype)
        self.padLeft, self.padRight = whole(self, "padLeft", padLeft), whole(self, "padRight",
                                                                              padRight)
        self.padTop, self.padBottom = whole(self, "padTop", padTop), whole(self, "padBottom",
                                                                           padBottom)

    def _plan(self, shape):
        nd = _rank(self, shape, (3, 4)) if shape else 3
        return nd - 2, (self.padTop, self.padLeft), (self.padBottom, self.padRight)

    def extraRepr(self):
        return f"l={self.padLeft}, r={self.padRight}, t={self.padTop}, b={self.padBottom}"


class Cropping2D(_Window):
    """Crops heightCrop = [top, bottom] rows and widthCrop = [left, right] columns off each
    image of a 4-D batch, NCHW or NHWC."""

    _value = 0.0

    def __init__(self, heightCrop, widthCrop, dataFormat="NCHW", dtype=np.float32):
        super().__init__(dtype)
        self.heightCrop = _pair(self, "heightCrop", heightCrop)
        self.widthCrop = _pair(self, "widthCrop", widthCrop)
        self.dataFormat = _format(self, dataFormat, ("NCHW", "NHWC"))

    def _plan(self, shape):
        if shape:
            _rank(self, shape, (4,))
        (t, b), (left, r) = self.heightCrop, self.widthCrop
        return 2 if self.dataFormat == "NCHW" else 1, (-t, -left), (-b, -r)

    def extraRepr(self):
        return f"{list(self.heightCrop)}, {list(self.widthCrop)}, {self.dataFormat}"


class Cropping3D(_Window):
    """Crops dim1Crop, dim2Crop, dim3Crop = [front, back] entries off the three spatial axes
    of a 5-D batch, NCDHW or NDHWC."""

    _value = 0.0

    def __init__(self, dim1Crop, dim2Crop, dim3Crop, dataFormat="NCDHW", dtype=np.float32):
        super().__init__(dtype)
        self.dim1Crop = _pair(self, "dim1Crop", dim1Crop)
        self.dim2Crop = _pair(self, "dim2Crop", dim2Crop)
        self.dim3Crop = _pair(self, "dim3Crop", dim3Crop)
        self.dataFormat = _format(self, dataFormat, ("NCDHW", "NDHWC"))

    def _plan(self, shape):
        if shape:
            _rank(self, shape, (5,))
        crops = (self.dim1Crop, self.dim2Crop, self.dim3Crop)
        return (2 if self.dataFormat == "NCDHW" else 1, tuple(-c[0] for c in crops),
                tuple(-c[1] for c in crops))

    def extraRepr(self):
        return (f"{list(self.dim1Crop)}, {list(self.dim2Crop)}, {list(self.dim3Crop)}, "
                f"{self.dataFormat}")


class Padding(Module):
    """|pad| entries of ``value`` added to axis ``dim``: after the last entry for pad > 0,
    before the first for pad < 0.

    ``dim`` is an axis of a batched input; an input of exactly ``nInputDim`` axes (one
    sample) is padded on axis dim - 1. With ``nIndex`` > 1 the padding goes nIndex - 1
    entries in from that end (BigDL's, Torch7's index).
    """

    def __init__(self, dim, pad, nInputDim, value=0.0, nIndex=1, dtype=np.float32):
        super().__init__(dtype)
        self.dim, self.pad = whole(self, "dim", dim), whole(self, "pad", pad)
        self.nInputDim = whole(self, "nInputDim", nInputDim)
        self.value = float(value)
        self.nIndex = whole(self, "nIndex", nIndex)
        if self.nIndex < 1:
            raise ValueError(f"{self}: nIndex must be >= 1, got {nIndex}")

    def _plan(self, shape):
        """(axis, insertion point) for an input of ``shape``."""
        if not shape:
            return 0, 0
        axis = self.dim - 1 if len(shape) == self.nInputDim else self.dim
        if not 0 <= axis < len(shape):
            raise ValueError(f"{self}: dim {self.dim} is out of range for an input of shape "
                             f"{shape}")
        n = shape[axis]
        at = n - self.nIndex + 1 if self.pad > 0 else self.nIndex - 1
        if not 0 <= at <= n:
            raise ValueError(f"{self}: nIndex {self.nIndex} is out of range for {n} entries "
                             f"on axis {axis}")
        return axis, at

    def updateOutput(self, input):
        shape = shape_of(input)
        axis, at = self._plan(shape)
        out_shape = tuple(s + abs(self.pad) if i == axis else s for i, s in enumerate(shape))
        out = self.output = resized(self.output, out_shape, -1, self.dtype)
        insert_update_output(input, out, axis, at, self.value)
        return out

    def updateGradInput(self, input, gradOutput):
        axis, at = self._plan(shape_of(input))
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        insert_update_grad_input(input, gradOutput, gi, axis, at)
        return gi

    def extraRepr(self):
        return f"{self.dim}, {self.pad}, {self.nInputDim}, {self.value}, {self.nIndex}"


class _UpSampling(Module):
    """Nearest upsampling by integer factors ``self._scales`` of the axes from ``_axis``."""

    _ranks = ()

    def _axis(self, shape):
        raise NotImplementedError

    def _plan(self, shape):
        if not shape:
            return (0,), 0
        _rank(self, shape, self._ranks)
        axis = self._axis(shape)
        out = list(shape)
        for i, s in enumerate(self._scales):
            out[axis + i] *= s
        return tuple(out), axis

    def updateOutput(self, input):
        shape, axis = self._plan(shape_of(input))
        out = self.output = resized(self.output, shape, -1, self.dtype)
        upsample_update_output(input, out, axis, self._scales)
        return out

    def updateGradInput(self, input, gradOutput):
        axis = self._plan(shape_of(input))[1]
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        upsample_update_grad_input(input, gradOutput, gi, axis, self._scales)
        return gi


class UpSampling1D(_UpSampling):
    """Repeats each step of a (N, T, F) sequence ``length`` times: (N, T * length, F)."""

    _ranks = (3,)

    def __init__(self, length, dtype=np.float32):
        super().__init__(dtype)
        self.length = whole(self, "length", length)
        if self.length < 1:
            raise ValueError(f"UpSampling1D: length must be >= 1, got {length}")
        self._scales = (self.length,)

    def _axis(self, shape):
        return 1

    def extraRepr(self):
        return str(self.length)


class UpSampling2D(_UpSampling):
    """Nearest upsampling of a 4-D batch of images by size = [rows, columns] (integers):
    (N, C, H, W) -> (N, C, H * size[0], W * size[1]), or NHWC alike."""

    _ranks = (4,)

    def __init__(self, size, dataFormat="NCHW", dtype=np.float32):
        super().__init__(dtype)
        self.size = _pair(self, "size", size, 2, 1)
        self.dataFormat = _format(self, dataFormat, ("NCHW", "NHWC"))
        self._scales = self.size

    def _axis(self, shape):
        return 2 if self.dataFormat == "NCHW" else 1

    def extraRepr(self):
        return f"{list(self.size)}, {self.dataFormat}"


class UpSampling3D(_UpSampling):
    """Nearest upsampling of a (N, C, D, H, W) batch by size = [depth, rows, columns]."""

    _ranks = (5,)

    def __init__(self, size, dtype=np.float32):
        super().__init__(dtype)
        self.size = _pair(self, "size", size, 3, 1)
        self._scales = self.size

    def _axis(self, shape):
        return 2

    def extraRepr(self):
        return str(list(self.size))


class ResizeBilinear(Module):
    """Bilinear resize of a 4-D batch of images to outputHeight x outputWidth (NCHW or NHWC).

    Output row y samples input row y * H / outputHeight, or y * (H - 1) / (outputHeight - 1)
    with ``alignCorners`` (TensorFlow's resize_bilinear without half-pixel centres, as
    BigDL); columns alike.
    """

    def __init__(self, outputHeight, outputWidth, alignCorners=False, dataFormat="NCHW",
                 dtype=np.float32):
        super().__init__(dtype)
        self.outputHeight = whole(self, "outputHeight", outputHeight)
        self.outputWidth = whole(self, "outputWidth", outputWidth)
        if self.outputHeight < 1 or self.outputWidth < 1:
            raise ValueError(f"ResizeBilinear: output size must be >= 1, got {outputHeight}x"
                             f"{outputWidth}")
        self.alignCorners = bool(alignCorners)
        self.dataFormat = _format(self, dataFormat, ("NCHW", "NHWC"))

    def updateOutput(self, input):
        shape = shape_of(input)
        if shape:
            _rank(self, shape, (4,))
            last = self.dataFormat == "NHWC"
            shape = shape[:1] + ((self.outputHeight, self.outputWidth, shape[3]) if last else
                                 (shape[1], self.outputHeight, self.outputWidth))
        out = self.output = resized(self.output, shape or (0,), -1, self.dtype)
        resize_bilinear_update_output(input, out, self.alignCorners, self.dataFormat == "NHWC")
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        resize_bilinear_update_grad_input(input, gradOutput, gi, self.alignCorners,
                                          self.dataFormat == "NHWC")
        return gi

    def extraRepr(self):
        return (f"{self.outputHeight}, {self.outputWidth}, alignCorners={self.alignCorners}, "
                f"{self.dataFormat}")
