"""The Keras-style layers (Keras 1.2 names, arguments and defaults, as BigDL's Python
``bigdl.dllib.keras.layers`` has them), each built on the pymodules module that computes it.

Shapes leave out the batch axis. ``dim_ordering`` "th" (channels first, BigDL's default) runs
the NCHW kernels directly; "tf" (channels last) transposes around them. ``border_mode``
"same" pads as TensorFlow does (the odd pad at the end).
"""

from __future__ import annotations

import math

import numpy as np

from pymodules import nn
from pymodules.keras.engine import (
    ACTIVATIONS,
    KerasLayer,
    activation_module,
    init_method,
    with_activation,
)
from pymodules.nn.module import whole


def _positive(layer, what, value):
    n = whole(layer.getName(), what, value)
    if n < 1:
        raise ValueError(f"{layer.getName()}: {what} must be >= 1, got {value}")
    return n


def _tuple(layer, what, value, n):
    values = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != n:
        raise ValueError(f"{layer.getName()}: {what} must have {n} entries, got {value!r}")
    return tuple(_positive(layer, what, v) for v in values)


def _choice(layer, what, value, choices):
    if value not in choices:
        raise ValueError(f"{layer.getName()}: {what} must be one of "
                         f"{', '.join(map(repr, choices))}, got {value!r}")
    return value


def _activation_name(layer, name):
    if name is not None and (not isinstance(name, str) or name.lower() not in ACTIVATIONS):
        raise ValueError(f"{layer.getName()}: unknown activation {name!r}; known: "
                         f"{', '.join(sorted(ACTIVATIONS))}")
    return name


def _rank(layer, shape, ranks, what):
    if len(shape) not in ranks:
        raise ValueError(f"{layer.getName()}: input shape {shape} has {len(shape)} axes, "
                         f"expected {what}")


def _out_size(layer, size, kernel, stride, border_mode, what="input"):
    """The output size of a window over ``size`` (Keras 1 rules)."""
    if border_mode == "same":
        return -(-size // stride)
    out = (size - kernel) // stride + 1
    if out < 1:
        raise ValueError(f"{layer.getName()}: the {what} has size {size} along an axis, less "
                         f"than the window {kernel}")
    return out


def _same_pads(size, kernel, stride):
    """(before, after) padding of TensorFlow's 'same' along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _paddings(pads, first_axis, rank):
    """Padding modules putting ``pads`` [(before, after), ...] on the axes from
    ``first_axis`` (of a batched input whose samples have ``rank`` axes)."""
    mods = []
    for i, (before, after) in enumerate(pads):
        if before:
            mods.append(nn.Padding(first_axis + i, -before, rank))
        if after:
            mods.append(nn.Padding(first_axis + i, after, rank))
    return mods


def _chain(*mods):
    mods = [m for m in mods if m is not None]
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


_TO_NCHW = [(1, 3), (2, 3)]   # (b, h, w, c) -> (b, c, h, w)
_TO_NHWC = [(1, 2), (2, 3)]   # (b, c, h, w) -> (b, h, w, c)


def _channels_first(layer, dim_ordering, shape):
    """(channels, rows, cols) of an image input of either ordering."""
    _rank(layer, shape, (3,), "3 (an image)")
    return shape if dim_ordering == "th" else (shape[2], shape[0], shape[1])


def _ordered(dim_ordering, core, shape_chw):
    """``core`` (on NCHW) wrapped in transposes for "tf"; the output shape in the layer's
    ordering from ``shape_chw``."""
    if dim_ordering == "th":
        return core, shape_chw
    c, h, w = shape_chw
    return nn.Sequential(nn.Transpose(_TO_NCHW), core, nn.Transpose(_TO_NHWC)), (h, w, c)


def _find(module, cls):
    return next(m for m in module.modules_preorder() if isinstance(m, cls))


# -- core layers ---------------------------------------------------------------------------
class InputLayer(KerasLayer):
    """The entry point of a model: passes its input on (``Input`` makes a graph node of
    one)."""

    def __init__(self, input_shape=None, name=None):
        super().__init__(input_shape, name)

    def _build(self, s):
        return nn.Identity(), s


class Dense(KerasLayer):
    """A densely connected layer: ``activation(x W + b)`` over the last axis (a Linear;
    on inputs of more axes, on every position of the others). Keras weights: ``[W (in,
    out), b (out,)]``."""

    def __init__(self, output_dim, init="glorot_uniform", activation=None,
                 W_regularizer=None, b_regularizer=None, bias=True, input_dim=None,
                 input_shape=None, name=None):
        if input_dim is not None:
            input_shape = (input_dim,)
        super().__init__(input_shape, name)
        self.output_dim = _positive(self, "output_dim", output_dim)
        self.init = init_method(self.getName(), init)
        self.activation = _activation_name(self, activation)
        self.W_regularizer, self.b_regularizer = W_regularizer, b_regularizer
        self.bias = bool(bias)

    def _build(self, s):
        out = s[:-1] + (self.output_dim,)
        linear = nn.Linear(s[-1], self.output_dim, self.bias, self.W_regularizer,
                           self.b_regularizer)
        if len(s) > 1:  # every position of the leading axes, folded into the batch
            linear = nn.Sequential(nn.InferReshape([-1, s[-1]]), linear,
                                   nn.InferReshape([-1, *out]))
        return with_activation(linear, activation_module(self.getName(), self.activation,
                                                         out)), out

    def _initialize(self, labor):
        _find(labor, nn.Linear).setInitMethod(self.init, nn.Zeros())

    def _keras_weights(self, arrays):
        return [arrays[0].T, *arrays[1:]]

    _bigdl_weights = _keras_weights


class Activation(KerasLayer):
    """An activation by name: 'tanh', 'relu', 'sigmoid', 'softmax', 'softplus',
    'softsign', 'hard_sigmoid', 'relu6', 'tanh_shrink', 'softmin', 'log_sigmoid',
    'log_softmax', 'linear'."""

    def __init__(self, activation, input_shape=None, name=None):
        super().__init__(input_shape, name)
        if activation is None:
            raise ValueError(f"{self.getName()}: activation is required")
        self.activation = _activation_name(self, activation)

    def _build(self, s):
        m = activation_module(self.getName(), self.activation, s)
        return (nn.Identity() if m is None else m), s


class Dropout(KerasLayer):
    """Drops a fraction ``p`` of the inputs in training (scaled by 1 / (1 - p))."""

    def __init__(self, p, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.p = float(p)
        if not 0 <= self.p < 1:
            raise ValueError(f"{self.getName()}: p must lie in [0, 1), got {p}")

    def _build(self, s):
        return nn.Dropout(self.p), s


class Flatten(KerasLayer):
    """Flattens each sample to one axis."""

    def __init__(self, input_shape=None, name=None):
        super().__init__(input_shape, name)

    def _build(self, s):
        return nn.InferReshape([-1], batchMode=True), (math.prod(s),)


class Reshape(KerasLayer):
    """Reshapes each sample to ``target_shape`` (one entry may be -1, inferred)."""

    def __init__(self, target_shape, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.target_shape = tuple(whole(self.getName(), "target_shape", t)
                                  for t in target_shape)
        if sum(t == -1 for t in self.target_shape) > 1 or \
                any(t < 1 and t != -1 for t in self.target_shape):
            raise ValueError(f"{self.getName()}: target_shape holds positive sizes and at "
                             f"most one -1, got {target_shape!r}")

    def _build(self, s):
        n, known = math.prod(s), math.prod(t for t in self.target_shape if t != -1)
        out = tuple(n // known if t == -1 else t for t in self.target_shape)
        if math.prod(out) != n:
            raise ValueError(f"{self.getName()}: input shape {s} ({n} elements) cannot be "
                             f"reshaped to {self.target_shape}")
        return nn.InferReshape(list(out), batchMode=True), out


# -- convolutions --------------------------------------------------------------------------
class Convolution1D(KerasLayer):
    """Convolution over the steps of (steps, input_dim) sequences (TemporalConvolution).
    Keras weights: ``[W (filter_length, 1, input_dim, nb_filter), b (nb_filter,)]``."""

    def __init__(self, nb_filter, filter_length, init="glorot_uniform", activation=None,
                 border_mode="valid", subsample_length=1, W_regularizer=None,
                 b_regularizer=None, bias=True, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.nb_filter = _positive(self, "nb_filter", nb_filter)
        self.filter_length = _positive(self, "filter_length", filter_length)
        self.init = init_method(self.getName(), init)
        self.activation = _activation_name(self, activation)
        self.border_mode = _choice(self, "border_mode", border_mode, ("valid", "same"))
        self.subsample_length = _positive(self, "subsample_length", subsample_length)
        self.W_regularizer, self.b_regularizer = W_regularizer, b_regularizer
        if not bias:
            raise ValueError(f"{self.getName()}: bias=False is not available: the temporal "
                             f"convolution always has a bias")

    def _build(self, s):
        _rank(self, s, (2,), "2 (steps, input_dim)")
        steps, dim = s
        k, st = self.filter_length, self.subsample_length
        length = _out_size(self, steps, k, st, self.border_mode)
        pads = _paddings([_same_pads(steps, k, st)], 1, 2) if self.border_mode == "same" \
            else []
        conv = nn.TemporalConvolution(dim, self.nb_filter, k, st,
                                      wRegularizer=self.W_regularizer,
                                      bRegularizer=self.b_regularizer)
        out = (length, self.nb_filter)
        return _chain(*pads, with_activation(conv, activation_module(
            self.getName(), self.activation, out))), out

    def _initialize(self, labor):
        _find(labor, nn.TemporalConvolution).setInitMethod(self.init, nn.Zeros())

    def _keras_weights(self, arrays):
        w = arrays[0].reshape(self.nb_filter, self.filter_length, -1)
        return [w.transpose(1, 2, 0)[:, None], *arrays[1:]]

    def _bigdl_weights(self, arrays):
        w = np.asarray(arrays[0])[:, 0].transpose(2, 0, 1).reshape(self.nb_filter, -1)
        return [w, *arrays[1:]]


class Convolution2D(KerasLayer):
    """2-D convolution of images (SpatialConvolution). Keras weights: ``[W, b]``, W
    (nb_filter, stack, nb_row, nb_col) for "th", (nb_row, nb_col, stack, nb_filter) for
    "tf"."""

    def __init__(self, nb_filter, nb_row, nb_col, init="glorot_uniform", activation=None,
                 border_mode="valid", subsample=(1, 1), dim_ordering="th",
                 W_regularizer=None, b_regularizer=None, bias=True, input_shape=None,
                 name=None):
        super().__init__(input_shape, name)
        self.nb_filter = _positive(self, "nb_filter", nb_filter)
        self.nb_row, self.nb_col = _positive(self, "nb_row", nb_row), \
            _positive(self, "nb_col", nb_col)
        self.init = init_method(self.getName(), init)
        self.activation = _activation_name(self, activation)
        self.border_mode = _choice(self, "border_mode", border_mode, ("valid", "same"))
        self.subsample = _tuple(self, "subsample", subsample, 2)
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))
        self.W_regularizer, self.b_regularizer = W_regularizer, b_regularizer
        self.bias = bool(bias)

    def _build(self, s):
        c, h, w = _channels_first(self, self.dim_ordering, s)
        (sh, sw), same = self.subsample, self.border_mode == "same"
        oh = _out_size(self, h, self.nb_row, sh, self.border_mode)
        ow = _out_size(self, w, self.nb_col, sw, self.border_mode)
        pad = -1 if same else 0
        conv = nn.SpatialConvolution(c, self.nb_filter, self.nb_col, self.nb_row, sw, sh,
                                     pad, pad, wRegularizer=self.W_regularizer,
                                     bRegularizer=self.b_regularizer, withBias=self.bias)
        core = with_activation(conv, activation_module(self.getName(), self.activation,
                                                       (self.nb_filter, oh, ow)))
        return _ordered(self.dim_ordering, core, (self.nb_filter, oh, ow))

    def _initialize(self, labor):
        _find(labor, nn.SpatialConvolution).setInitMethod(self.init, nn.Zeros())

    def _keras_weights(self, arrays):
        if self.dim_ordering == "th":
            return arrays
        return [arrays[0].transpose(2, 3, 1, 0), *arrays[1:]]

    def _bigdl_weights(self, arrays):
        if self.dim_ordering == "th":
            return arrays
        return [np.asarray(arrays[0]).transpose(3, 2, 0, 1), *arrays[1:]]


class Convolution3D(KerasLayer):
    """3-D convolution of (channels, dim1, dim2, dim3) volumes (VolumetricConvolution),
    "th" ordering. Keras weights: ``[W (nb_filter, stack, k1, k2, k3), b]``."""

    def __init__(self, nb_filter, kernel_dim1, kernel_dim2, kernel_dim3,
                 init="glorot_uniform", activation=None, border_mode="valid",
                 subsample=(1, 1, 1), dim_ordering="th", W_regularizer=None,
                 b_regularizer=None, bias=True, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.nb_filter = _positive(self, "nb_filter", nb_filter)
        self.kernel = (_positive(self, "kernel_dim1", kernel_dim1),
                       _positive(self, "kernel_dim2", kernel_dim2),
                       _positive(self, "kernel_dim3", kernel_dim3))
        self.init = init_method(self.getName(), init)
        self.activation = _activation_name(self, activation)
        self.border_mode = _choice(self, "border_mode", border_mode, ("valid", "same"))
        self.subsample = _tuple(self, "subsample", subsample, 3)
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th",))
        self.W_regularizer, self.b_regularizer = W_regularizer, b_regularizer
        self.bias = bool(bias)

    def _build(self, s):
        _rank(self, s, (4,), "4 (channels, dim1, dim2, dim3)")
        c, dims = s[0], s[1:]
        out = tuple(_out_size(self, d, k, st, self.border_mode)
                    for d, k, st in zip(dims, self.kernel, self.subsample, strict=True))
        pads = [_same_pads(d, k, st) for d, k, st in
                zip(dims, self.kernel, self.subsample, strict=True)] \
            if self.border_mode == "same" else [(0, 0)] * 3
        symmetric = all(a == b for a, b in pads)
        before = [] if symmetric else _paddings(pads, 2, 4)
        p = [a for a, _ in pads] if symmetric else [0, 0, 0]
        (k1, k2, k3), (s1, s2, s3) = self.kernel, self.subsample
        conv = nn.VolumetricConvolution(c, self.nb_filter, k1, k3, k2, s1, s3, s2, p[0], p[2],
                                        p[1], self.bias, self.W_regularizer,
                                        self.b_regularizer)
        shape = (self.nb_filter, *out)
        return _chain(*before, with_activation(conv, activation_module(
            self.getName(), self.activation, shape))), shape

    def _initialize(self, labor):
        _find(labor, nn.VolumetricConvolution).setInitMethod(self.init, nn.Zeros())


# -- pooling -------------------------------------------------------------------------------
class _Pooling1D(KerasLayer):
    _max = True

    def __init__(self, pool_length=2, stride=None, border_mode="valid", input_shape=None,
                 name=None):
        super().__init__(input_shape, name)
        self.pool_length = _positive(self, "pool_length", pool_length)
        self.stride = self.pool_length if stride is None or stride == -1 else \
            _positive(self, "stride", stride)
        self.border_mode = _choice(self, "border_mode", border_mode, ("valid", "same"))

    def _build(self, s):
        _rank(self, s, (2,), "2 (steps, features)")
        steps, dim = s
        length = _out_size(self, steps, self.pool_length, self.stride, self.border_mode)
        pad = -1 if self.border_mode == "same" else 0
        # (b, steps, dim) seen as one plane of steps x dim, pooled along the steps only
        pool = nn.SpatialMaxPooling(1, self.pool_length, 1, self.stride, pad, pad) \
            if self._max else \
            nn.SpatialAveragePooling(1, self.pool_length, 1, self.stride, pad, pad,
                                     countIncludePad=False)
        return nn.Sequential(nn.InferReshape([1, steps, dim], batchMode=True), pool,
                             nn.InferReshape([length, dim], batchMode=True)), (length, dim)


class MaxPooling1D(_Pooling1D):
    """Max over windows of ``pool_length`` steps moved by ``stride`` (default the
    window)."""


class AveragePooling1D(_Pooling1D):
    """Mean over windows of ``pool_length`` steps ("same": of the steps inside)."""

    _max = False


class _Pooling2D(KerasLayer):
    _max = True

    def __init__(self, pool_size=(2, 2), strides=None, border_mode="valid",
                 dim_ordering="th", input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.pool_size = _tuple(self, "pool_size", pool_size, 2)
        self.strides = self.pool_size if strides is None else _tuple(self, "strides", strides,
                                                                      2)
        self.border_mode = _choice(self, "border_mode", border_mode, ("valid", "same"))
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))

    def _build(self, s):
        c, h, w = _channels_first(self, self.dim_ordering, s)
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        oh = _out_size(self, h, ph, sh, self.border_mode)
        ow = _out_size(self, w, pw, sw, self.border_mode)
        pad = -1 if self.border_mode == "same" else 0
        pool = nn.SpatialMaxPooling(pw, ph, sw, sh, pad, pad) if self._max else \
            nn.SpatialAveragePooling(pw, ph, sw, sh, pad, pad, countIncludePad=False)
        return _ordered(self.dim_ordering, pool, (c, oh, ow))


class MaxPooling2D(_Pooling2D):
    """Max over ``pool_size`` windows moved by ``strides`` (default the window)."""


class AveragePooling2D(_Pooling2D):
    """Mean over ``pool_size`` windows ("same": of the pixels inside the image)."""

    _max = False


class _Pooling3D(KerasLayer):
    _max = True

    def __init__(self, pool_size=(2, 2, 2), strides=None, dim_ordering="th",
                 input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.pool_size = _tuple(self, "pool_size", pool_size, 3)
        self.strides = self.pool_size if strides is None else _tuple(self, "strides", strides,
                                                                      3)
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th",))

    def _build(self, s):
        _rank(self, s, (4,), "4 (channels, dim1, dim2, dim3)")
        out = tuple(_out_size(self, d, k, st, "valid")
                    for d, k, st in zip(s[1:], self.pool_size, self.strides, strict=True))
        (k1, k2, k3), (s1, s2, s3) = self.pool_size, self.strides
        cls = nn.VolumetricMaxPooling if self._max else nn.VolumetricAveragePooling
        return cls(k1, k3, k2, s1, s3, s2), (s[0], *out)


class MaxPooling3D(_Pooling3D):
    """Max over ``pool_size`` windows of volumes, "valid" windows only (as BigDL's)."""


class AveragePooling3D(_Pooling3D):
    """Mean over ``pool_size`` windows of volumes, "valid" windows only (as BigDL's)."""

    _max = False


class _GlobalPooling2D(KerasLayer):
    _max = True

    def __init__(self, dim_ordering="th", input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))

    def _build(self, s):
        c, h, w = _channels_first(self, self.dim_ordering, s)
        pool = nn.SpatialMaxPooling(w, h, w, h) if self._max else \
            nn.SpatialAveragePooling(w, h, w, h)
        core = nn.Sequential(pool, nn.InferReshape([c], batchMode=True))
        if self.dim_ordering == "tf":
            core = nn.Sequential(nn.Transpose(_TO_NCHW), core)
        return core, (c,)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over each whole feature map: (channels,)."""


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over each whole feature map: (channels,)."""

    _max = False


# -- normalisation, embedding, padding, upsampling -------------------------------------------
class BatchNormalization(KerasLayer):
    """Normalises each feature (of a vector input) or channel (of an image) with the batch
    statistics in training and running averages in evaluation. ``momentum`` is Keras's:
    the weight of the running average (the module's momentum is 1 - momentum). Keras
    weights: ``[gamma, beta, running_mean, running_var]``."""

    def __init__(self, epsilon=0.001, mode=0, axis=1, momentum=0.99, beta_init="zero",
                 gamma_init="one", dim_ordering="th", input_shape=None, name=None):
        super().__init__(input_shape, name)
        if mode != 0:
            raise ValueError(f"{self.getName()}: only mode=0 (feature-wise) is available")
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))
        if (dim_ordering == "th" and axis != 1) or (dim_ordering == "tf" and axis not in (-1,
                                                                                          3)):
            raise ValueError(f"{self.getName()}: axis {axis} is not the channel axis of "
                             f"{dim_ordering!r} ordering")
        self.epsilon, self.momentum = float(epsilon), float(momentum)
        if not 0 <= self.momentum <= 1:
            raise ValueError(f"{self.getName()}: momentum must lie in [0, 1], got {momentum}")
        self.beta_init = init_method(self.getName(), beta_init)
        self.gamma_init = init_method(self.getName(), gamma_init)

    def _build(self, s):
        _rank(self, s, (1, 3), "1 (features) or 3 (an image)")
        if len(s) == 1:
            return nn.BatchNormalization(s[0], self.epsilon, 1 - self.momentum), s
        c = s[0] if self.dim_ordering == "th" else s[2]
        return nn.SpatialBatchNormalization(
            c, self.epsilon, 1 - self.momentum,
            dataFormat="NCHW" if self.dim_ordering == "th" else "NHWC"), s

    def _initialize(self, labor):
        labor.setInitMethod(self.gamma_init, self.beta_init)


class Embedding(KerasLayer):
    """Turns 0-based indices (sequences of ``input_shape``) into rows of a (input_dim,
    output_dim) table (LookupTable)."""

    def __init__(self, input_dim, output_dim, init="uniform", W_regularizer=None,
                 input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.input_dim = _positive(self, "input_dim", input_dim)
        self.output_dim = _positive(self, "output_dim", output_dim)
        self.init = init_method(self.getName(), init)
        self.W_regularizer = W_regularizer

    def _build(self, s):
        return nn.LookupTable(self.input_dim, self.output_dim,
                              wRegularizer=self.W_regularizer), (*s, self.output_dim)

    def _initialize(self, labor):
        labor.setInitMethod(self.init)


class ZeroPadding2D(KerasLayer):
    """Zeros around images: ``padding`` (rows, cols) on both sides, or (top, bottom, left,
    right)."""

    def __init__(self, padding=(1, 1), dim_ordering="th", input_shape=None, name=None):
        super().__init__(input_shape, name)
        pads = tuple(whole(self.getName(), "padding", p) for p in padding)
        if len(pads) == 2:
            pads = (pads[0], pads[0], pads[1], pads[1])
        if len(pads) != 4 or min(pads) < 0:
            raise ValueError(f"{self.getName()}: padding is 2 or 4 sizes >= 0, got "
                             f"{padding!r}")
        self.padding = pads
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))

    def _build(self, s):
        c, h, w = _channels_first(self, self.dim_ordering, s)
        top, bottom, left, right = self.padding
        core = nn.SpatialZeroPadding(left, right, top, bottom)
        return _ordered(self.dim_ordering, core, (c, h + top + bottom, w + left + right))


class UpSampling2D(KerasLayer):
    """Repeats the rows and columns of images ``size`` times."""

    def __init__(self, size=(2, 2), dim_ordering="th", input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.size = _tuple(self, "size", size, 2)
        self.dim_ordering = _choice(self, "dim_ordering", dim_ordering, ("th", "tf"))

    def _build(self, s):
        _rank(self, s, (3,), "3 (an image)")
        r, c = self.size
        fmt = "NCHW" if self.dim_ordering == "th" else "NHWC"
        out = (s[0], s[1] * r, s[2] * c) if fmt == "NCHW" else (s[0] * r, s[1] * c, s[2])
        return nn.UpSampling2D(list(self.size), fmt), out


# -- recurrent -----------------------------------------------------------------------------
class _Recurrent(KerasLayer):
    _kinds = ("tanh",)  # the activations the fused kernels compute

    def __init__(self, output_dim, activation, inner_activation, return_sequences,
                 go_backwards, W_regularizer, U_regularizer, b_regularizer, input_shape, name):
        super().__init__(input_shape, name)
        self.output_dim = _positive(self, "output_dim", output_dim)
        if activation not in self._kinds:
            raise ValueError(f"{self.getName()}: activation {activation!r} is not available: "
                             f"the fused kernel computes {' or '.join(map(repr, self._kinds))}")
        if inner_activation not in (None, "sigmoid"):
            raise ValueError(f"{self.getName()}: inner_activation {inner_activation!r} is not "
                             f"available: the fused kernel's gates are 'sigmoid' (the "
                             f"default here)")
        self.activation, self.inner_activation = activation, inner_activation
        self.return_sequences, self.go_backwards = bool(return_sequences), bool(go_backwards)
        self.W_regularizer, self.U_regularizer = W_regularizer, U_regularizer
        self.b_regularizer = b_regularizer

    def _cell(self, inputSize):
        raise NotImplementedError

    def _build(self, s):
        _rank(self, s, (2,), "2 (steps, features)")
        rec = nn.Recurrent().add(self._cell(s[1]))
        mods = [nn.Reverse(1)] if self.go_backwards else []
        mods.append(rec)
        if not self.return_sequences:
            mods.append(nn.Select(1, -1))
        out = (s[0], self.output_dim) if self.return_sequences else (self.output_dim,)
        return _chain(*mods), out

    # Keras weights: per gate (Keras's order) [W (in, H), U (H, H), b (H)]
    _gates = ()

    def _keras_weights(self, arrays):
        return self._to_keras(arrays)

    def _bigdl_weights(self, arrays):
        return self._from_keras(arrays)


class SimpleRNN(_Recurrent):
    """A fully connected recurrent layer (RnnCell): ``h = activation(x W + h U + b)``.
    Keras weights: ``[W (in, H), U (H, H), b (H,)]``."""

    _kinds = ("tanh", "sigmoid", "relu")

    def __init__(self, output_dim, activation="tanh", return_sequences=False,
                 go_backwards=False, W_regularizer=None, U_regularizer=None,
                 b_regularizer=None, input_shape=None, name=None):
        super().__init__(output_dim, activation, None, return_sequences, go_backwards,
                         W_regularizer, U_regularizer, b_regularizer, input_shape, name)

    def _cell(self, inputSize):
        return nn.RnnCell(inputSize, self.output_dim, self.activation, True, False,
                          self.W_regularizer, self.U_regularizer, self.b_regularizer)

    @staticmethod
    def _to_keras(a):
        return [a[0].T, a[2].T, a[1]]

    @staticmethod
    def _from_keras(a):
        return [np.asarray(a[0]).T, a[2], np.asarray(a[1]).T]


class LSTM(_Recurrent):
    """Long short-term memory (the LSTM cell in a Recurrent). ``inner_activation`` is
    'sigmoid' (Keras 1.2's default 'hard_sigmoid' is refused: the fused kernel's gates are
    sigmoids). Keras weights: ``[W_i, U_i, b_i, W_c, U_c, b_c, W_f, U_f, b_f, W_o, U_o,
    b_o]``, W (in, H), U (H, H)."""

    def __init__(self, output_dim, activation="tanh", inner_activation="sigmoid",
                 return_sequences=False, go_backwards=False, W_regularizer=None,
                 U_regularizer=None, b_regularizer=None, input_shape=None, name=None):
        super().__init__(output_dim, activation, inner_activation, return_sequences,
                         go_backwards, W_regularizer, U_regularizer, b_regularizer,
                         input_shape, name)

    def _cell(self, inputSize):
        return nn.LSTM(inputSize, self.output_dim, wRegularizer=self.W_regularizer,
                       uRegularizer=self.U_regularizer, bRegularizer=self.b_regularizer)

    @staticmethod
    def _to_keras(a):
        w, b, u = a
        h = len(b) // 4
        out = []
        for k in range(4):  # the cell's blocks i, g, f, o are Keras's i, c, f, o
            rows = slice(k * h, (k + 1) * h)
            out += [w[rows].T, u[rows].T, b[rows]]
        return out

    @staticmethod
    def _from_keras(a):
        a = [np.asarray(x) for x in a]
        w = np.concatenate([a[3 * k].T for k in range(4)])
        u = np.concatenate([a[3 * k + 1].T for k in range(4)])
        b = np.concatenate([a[3 * k + 2] for k in range(4)])
        return [w, b, u]


class GRU(_Recurrent):
    """Gated recurrent unit (the GRU cell in a Recurrent; the reset gate applies before the
    hidden matrix, as in Keras 1). ``inner_activation`` is 'sigmoid'. Keras weights:
    ``[W_z, U_z, b_z, W_r, U_r, b_r, W_h, U_h, b_h]``."""

    def __init__(self, output_dim, activation="tanh", inner_activation="sigmoid",
                 return_sequences=False, go_backwards=False, W_regularizer=None,
                 U_regularizer=None, b_regularizer=None, input_shape=None, name=None):
        super().__init__(output_dim, activation, inner_activation, return_sequences,
                         go_backwards, W_regularizer, U_regularizer, b_regularizer,
                         input_shape, name)

    def _cell(self, inputSize):
        return nn.GRU(inputSize, self.output_dim, wRegularizer=self.W_regularizer,
                      uRegularizer=self.U_regularizer, bRegularizer=self.b_regularizer)

    @staticmethod
    def _to_keras(a):
        w, b, urz, un = a
        h = len(b) // 3
        r, z, n = slice(0, h), slice(h, 2 * h), slice(2 * h, 3 * h)
        return [w[z].T, urz[z].T, b[z], w[r].T, urz[r].T, b[r], w[n].T, un.T, b[n]]

    @staticmethod
    def _from_keras(a):
        a = [np.asarray(x) for x in a]
        wz, uz, bz, wr, ur, br, wh, uh, bh = a
        return [np.concatenate([wr.T, wz.T, wh.T]), np.concatenate([br, bz, bh]),
                np.concatenate([ur.T, uz.T]), uh.T]


_MERGES = {"sum": lambda axis: nn.CAddTable(), "mul": lambda axis: nn.CMulTable(),
           "ave": lambda axis: nn.CAveTable(), "max": lambda axis: nn.CMaxTable(),
           "concat": lambda axis: nn.JoinTable(axis)}


class Bidirectional(KerasLayer):
    """A recurrent layer (LSTM, GRU, SimpleRNN with return_sequences=True, as BigDL asks)
    run forward and over the reversed sequence, merged by ``merge_mode`` ('concat', 'sum',
    'mul', 'ave'). Keras weights: the forward layer's, then the backward one's."""

    def __init__(self, layer, merge_mode="concat", input_shape=None, name=None):
        super().__init__(input_shape, name)
        if not isinstance(layer, _Recurrent):
            raise TypeError(f"{self.getName()}: wraps an LSTM, GRU or SimpleRNN, got "
                            f"{type(layer).__name__}")
        if not layer.return_sequences or layer.go_backwards:
            raise ValueError(f"{self.getName()}: the wrapped {layer.getName()} must have "
                             f"return_sequences=True and go_backwards=False")
        self.layer = layer
        self.merge_mode = _choice(self, "merge_mode", merge_mode,
                                  ("concat", "sum", "mul", "ave"))

    def _build(self, s):
        _rank(self, s, (2,), "2 (steps, features)")
        h = self.layer.output_dim
        merge = None if self.merge_mode == "sum" else _MERGES[self.merge_mode](2)
        bi = nn.BiRecurrent(merge).add(self.layer._cell(s[1]))
        return bi, (s[0], 2 * h if self.merge_mode == "concat" else h)

    def _keras_weights(self, arrays):
        half = len(arrays) // 2
        return self.layer._to_keras(arrays[:half]) + self.layer._to_keras(arrays[half:])

    def _bigdl_weights(self, arrays):
        half = len(arrays) // 2
        return self.layer._from_keras(arrays[:half]) + self.layer._from_keras(arrays[half:])


class TimeDistributed(KerasLayer):
    """``layer`` applied to every step of (steps, ...) inputs (time folded into the
    batch). Keras weights: the layer's."""

    def __init__(self, layer, input_shape=None, name=None):
        super().__init__(input_shape, name)
        if not isinstance(layer, KerasLayer):
            raise TypeError(f"{self.getName()}: wraps a Keras layer, got "
                            f"{type(layer).__name__}")
        self.layer = layer

    def _build(self, s):
        if len(s) < 2:
            raise ValueError(f"{self.getName()}: input shape {s} has no step axis in front "
                             f"of the wrapped layer's input")
        out = self.layer.build(s[1:])
        return nn.TimeDistributed(self.layer), (s[0], *out)

    def get_weights(self):
        return self.layer.get_weights()

    def set_weights(self, arrays):
        self.layer.set_weights(arrays)
        return self


class Merge(KerasLayer):
    """Merges several inputs: 'sum', 'mul', 'ave', 'max' (same shapes), 'concat' (along
    ``concat_axis``, which counts the batch axis as Keras's: -1 is the last), 'dot' and
    'cos' (of vectors, output (1,)). In a Sequential, ``layers`` are the branches whose
    outputs are merged (the model then takes a list of inputs, one per branch); in a graph,
    call it on the nodes (or use ``merge``)."""

    _several = True

    def __init__(self, layers=None, mode="sum", concat_axis=-1, input_shape=None, name=None):
        super().__init__(input_shape, name)
        self.mode = _choice(self, "mode", mode, ("sum", "mul", "concat", "ave", "max", "dot",
                                                 "cos"))
        self.concat_axis = whole(self.getName(), "concat_axis", concat_axis)
        self.layers = None if layers is None else list(layers)
        if self.layers is not None:
            if len(self.layers) < 2:
                raise ValueError(f"{self.getName()}: merges at least two layers, got "
                                 f"{len(self.layers)}")
            shapes = []
            for layer in self.layers:
                shape = getattr(layer, "_inputShape", None)
                if shape is None and isinstance(layer, KerasLayer) and \
                        layer._givenShape is not None:
                    layer.build(layer._givenShape)
                    shape = layer._inputShape
                if shape is None:
                    raise ValueError(f"{self.getName()}: {layer.getName()} has no input "
                                     f"shape (give its first layer input_shape)")
                shapes.append(shape)
            if self._givenShape is None:
                self._givenShape = shapes

    def _build(self, shapes):
        if len(shapes) < 2:
            raise ValueError(f"{self.getName()}: merges at least two inputs, got {shapes}")
        branch = [getattr(x, "_outputShape", None) for x in self.layers] \
            if self.layers is not None else shapes
        out = self._merged(branch)
        op = self._op(branch[0])
        if self.layers is None:
            return op, out
        branches = nn.ParallelTable()
        for layer in self.layers:
            branches.add(layer)
        return nn.Sequential(branches, op), out

    def _merged(self, shapes):
        first = shapes[0]
        if self.mode in ("dot", "cos"):
            if any(len(s) != 1 for s in shapes) or len(set(shapes)) != 1 or len(shapes) != 2:
                raise ValueError(f"{self.getName()}: mode {self.mode!r} takes two vectors of "
                                 f"one size, got {shapes}")
            return (1,)
        if self.mode != "concat":
            if len(set(shapes)) != 1:
                raise ValueError(f"{self.getName()}: mode {self.mode!r} takes inputs of one "
                                 f"shape, got {shapes}")
            return first
        axis = self._axis(first) - 1
        if any(len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] +
               first[axis + 1:] for s in shapes):
            raise ValueError(f"{self.getName()}: concat along axis {self.concat_axis} takes "
                             f"shapes equal but on that axis, got {shapes}")
        return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]

    def _axis(self, shape):
        axis = self.concat_axis if self.concat_axis >= 0 else len(shape) + 1 + \
            self.concat_axis
        if not 1 <= axis <= len(shape):
            raise ValueError(f"{self.getName()}: concat_axis {self.concat_axis} is not an "
                             f"axis of the samples {shape} (the batch axis is 0)")
        return axis

    def _op(self, first):
        if self.mode == "dot":
            return nn.Sequential(nn.DotProduct(), nn.InferReshape([-1, 1]))
        if self.mode == "cos":
            return nn.Sequential(nn.CosineDistance(), nn.InferReshape([-1, 1]))
        return _MERGES[self.mode](self._axis(first) if self.mode == "concat" else 0)

    def get_weights(self):
        if self.layers is None:
            return []
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, arrays):
        arrays = list(arrays)
        for layer in self.layers or ():
            n = len(layer.get_weights())
            layer.set_weights(arrays[:n])
            arrays = arrays[n:]
        if arrays:
            raise ValueError(f"{self.getName()}: set_weights got {len(arrays)} arrays too "
                             f"many")
        return self


def merge(inputs, mode="sum", concat_axis=-1, name=None):
    """Merge graph nodes (not layers) into one node: ``Merge(mode=..., concat_axis=...)``
    called on ``inputs``."""
    return Merge(mode=mode, concat_axis=concat_axis, name=name)(list(inputs))
