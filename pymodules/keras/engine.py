"""The Keras-style layer: a container of one pymodules module, built from the input shape.

A ``KerasLayer`` holds its constructor's Keras arguments until the shape of its input is
known (``input_shape`` on the first layer, the previous layer's output shape after that, or
the shapes of the graph nodes it is called on); ``build(shape)`` then makes the pymodules
module that computes it (the "labor": a Linear, a SpatialConvolution, a Recurrent, ...) and
records the output shape. Shapes leave out the batch axis, as in Keras. Forward and backward
are the labor's: there is no second implementation of any layer.

In files a Keras class is named ``Keras<Name>`` (``KerasDense``, ``KerasDropout``): the
persistence registry keys classes by name, and pymodules.nn has a Dropout, an LSTM, ...
The module names stay the Keras ones (``Dense@1a2b``).
"""

from __future__ import annotations

import numpy as np

from pymodules.nn import init as _init
from pymodules.nn.activation import (
    HardSigmoid,
    LogSigmoid,
    LogSoftMax,
    ReLU,
    ReLU6,
    Sigmoid,
    SoftMax,
    SoftMin,
    SoftPlus,
    SoftSign,
    Tanh,
    TanhShrink,
)
from pymodules.nn.containers import Container, Sequential
from pymodules.nn.module import Module, _postfix, whole
from pymodules.nn.timedistributed import TimeDistributed


def shape_tuple(owner, what, shape):
    """``shape`` (a sequence of positive ints) as a tuple, or None."""
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(whole(owner, what, s) for s in shape)
    except TypeError as err:
        raise TypeError(f"{owner}: {what} must be a tuple of ints (one sample's shape, "
                        f"without the batch axis), got {shape!r}") from err
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{owner}: {what} must be a non-empty tuple of positive ints (one "
                         f"sample's shape, without the batch axis), got {shape!r}")
    return dims


def shape_or_shapes(owner, what, shape):
    """One shape, or a list of shapes (the inputs of a merge), checked."""
    if isinstance(shape, list) and shape and all(isinstance(s, (list, tuple)) for s in shape):
        return [shape_tuple(owner, what, s) for s in shape]
    return shape_tuple(owner, what, shape)


# -- activations and init methods by name ------------------------------------------------
#: Keras activation names -> pymodules modules (None: the identity, "linear").
ACTIVATIONS = {
    "tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU, "softmax": SoftMax,
    "softplus": SoftPlus, "softsign": SoftSign, "hard_sigmoid": HardSigmoid,
    "relu6": ReLU6, "tanh_shrink": TanhShrink, "softmin": SoftMin,
    "log_sigmoid": LogSigmoid, "log_softmax": LogSoftMax, "linear": None,
}
# These normalise over the features of a (batch, n) input: on a sequence (batch, time, n)
# they run on every step (time folded into the batch), as Keras's do.
_ROWWISE = ("softmax", "softmin", "log_softmax")


def activation_module(owner, name, input_shape):
    """The module of activation ``name`` for inputs of ``input_shape`` (None for none)."""
    if name is None:
        return None
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"{owner}: unknown activation {name!r}; known: "
                         f"{', '.join(sorted(ACTIVATIONS))}")
    name = name.lower()
    cls = ACTIVATIONS[name]
    if cls is None:
        return None
    if name in _ROWWISE:
        if len(input_shape) == 2:
            return TimeDistributed(cls())
        if len(input_shape) != 1:
            raise ValueError(f"{owner}: activation {name!r} takes inputs of one or two "
                             f"axes (features, or time and features), got shape "
                             f"{input_shape}")
    return cls()


#: Keras init names -> pymodules init methods (Keras 1.2's scales).
INITS = {
    "glorot_uniform": _init.Xavier,
    "uniform": lambda: _init.RandomUniform(-0.05, 0.05),
    "normal": lambda: _init.RandomNormal(0.0, 0.05),
    "zero": _init.Zeros,
    "one": _init.Ones,
    "he_normal": _init.MsraFiller,
}


def init_method(owner, name):
    """The init method of Keras init ``name`` (an InitializationMethod passes as it is)."""
    if isinstance(name, _init.InitializationMethod):
        return name
    if not isinstance(name, str) or name.lower() not in INITS:
        raise ValueError(f"{owner}: unknown init {name!r}; known: {', '.join(sorted(INITS))}")
    return INITS[name.lower()]()


def with_activation(module, activation):
    """``module`` followed by ``activation`` (a module or None) in a Sequential."""
    return module if activation is None else Sequential(module, activation)


def first_leaf(module):
    """The module that reads ``module``'s input: the first child down a chain of containers
    that feed their children one after another."""
    while isinstance(module, (Sequential, KerasLayer)) and module.modules:
        module = module.modules[0]
    return module


def count(module) -> int:
    return sum(w.size for w in module.parameters()[0])


class KerasLayer(Container):
    """Base of the Keras-style layers (see the module docstring).

    A subclass defines ``_build(inputShape) -> (module, outputShape)``; it may define
    ``_keras_weights(arrays)`` / ``_bigdl_weights(arrays)`` to convert its parameters to
    and from Keras's layout, order and shapes (``get_weights``/``set_weights``).
    """

    #: whether the layer takes several inputs (a list of shapes)
    _several = False
    _persist = ("_inputShape", "_outputShape")

    def __init_subclass__(cls, **kwargs):
        if "_kerasName" not in cls.__dict__:
            cls._kerasName = cls.__name__
            cls.__name__ = cls.__qualname__ = "Keras" + cls.__name__
        super().__init_subclass__(**kwargs)

    def __init__(self, input_shape=None, name=None):
        super().__init__()
        self._name = f"{self._kerasName}@{_postfix()}"
        self._givenShape = shape_or_shapes(self._name, "input_shape", input_shape)
        self._inputShape = self._outputShape = None
        if name is not None:
            self.setName(name)

    # -- building --------------------------------------------------------------------------
    def built(self) -> bool:
        return self._outputShape is not None

    def build(self, inputShape):
        """Make the module computing this layer for inputs of ``inputShape`` (no batch
        axis); return the output shape. A built layer only checks the shape."""
        inputShape = shape_or_shapes(self._name, "input shape", inputShape)
        if self.built():
            if inputShape != self._inputShape:
                raise ValueError(f"{self.getName()}: built for input shape "
                                 f"{self._inputShape}, got {inputShape}")
            return self._outputShape
        if self._givenShape is not None and inputShape != self._givenShape:
            raise ValueError(f"{self.getName()}: input_shape is {self._givenShape} but the "
                             f"input has shape {inputShape}")
        if isinstance(inputShape, list) != self._several:
            raise ValueError(f"{self.getName()}: takes " + (
                "several inputs (a list of shapes)" if self._several else "one input") +
                f", got {inputShape}")
        labor, out = self._build(inputShape)
        self._initialize(labor)
        super().add(labor)
        self._inputShape, self._outputShape = inputShape, tuple(out) if not isinstance(
            out, list) else out
        return self._outputShape

    def _build(self, inputShape):
        raise NotImplementedError(f"{type(self).__name__} does not define _build")

    def _initialize(self, labor):
        """Set the Keras init methods on the labor (drawing its parameters)."""

    def add(self, module):
        """The built module (persistence rebuilds a layer this way); once."""
        if self.modules:
            raise ValueError(f"{self.getName()}: is built already; a Keras layer holds one "
                             f"module")
        return super().add(module)

    def reset(self):
        super().reset()
        if self.modules:
            self._initialize(self.modules[0])
        return self

    def _labor(self):
        if not self.modules:
            raise ValueError(f"{self.getName()}: not built yet: add it to a Sequential (the "
                             f"first layer with input_shape) or call it on a graph node")
        return self.modules[0]

    # -- computing: the labor's ------------------------------------------------------------
    def updateOutput(self, input):
        self.output = self._labor().forward(input)
        return self.output

    def _walk_back(self, input, gradOutput, step):
        labor = self._labor()
        if self.propagateBack:
            return step(labor, input, gradOutput)
        # Nothing reads this layer's gradInput (it reads the data): neither does its labor.
        reader = first_leaf(labor)
        before = reader.propagateBack
        reader.propagateBack = False
        try:
            step(labor, input, gradOutput)
        finally:
            reader.propagateBack = before
        return self.gradInput

    # -- graphs ----------------------------------------------------------------------------
    def inputs(self, *nodes):
        """A graph node of this layer fed by ``nodes``, built from their output shapes."""
        from pymodules.nn.graph import Node

        if len(nodes) == 1 and isinstance(nodes[0], (list, tuple)):
            nodes = tuple(nodes[0])
        if nodes:
            shapes = [node_shape(self, n) for n in nodes]
            self.build(shapes if self._several else shapes[0] if len(shapes) == 1
                       else shapes)
        elif not self.built():
            raise ValueError(f"{self.getName()}: called on no node")
        return Node(self, nodes)

    # -- shapes and weights ----------------------------------------------------------------
    def get_input_shape(self):
        """The input shape with the batch axis as None (a list for several inputs)."""
        return batch_shape(self._inputShape)

    def get_output_shape(self):
        return batch_shape(self._outputShape)

    def get_weights(self):
        """This layer's parameters as Keras lays them out (copies)."""
        if not self.modules:
            return []
        return [np.array(a) for a in self._keras_weights(self._bigdl_arrays())]

    def set_weights(self, arrays):
        """Copy Keras-laid-out ``arrays`` into this layer's parameters; count and shapes
        must agree with ``get_weights()``."""
        expected = self.get_weights()
        arrays = [np.asarray(a) for a in arrays]
        if len(arrays) != len(expected):
            raise ValueError(f"{self.getName()}: set_weights got {len(arrays)} arrays, "
                             f"expected {len(expected)} (shapes "
                             f"{[e.shape for e in expected]})")
        for i, (a, e) in enumerate(zip(arrays, expected, strict=True)):
            if a.shape != e.shape:
                raise ValueError(f"{self.getName()}: set_weights array {i} has shape "
                                 f"{a.shape}, expected {e.shape}")
        targets = self._bigdl_arrays()
        for dst, src in zip(targets, self._bigdl_weights(arrays), strict=True):
            dst[...] = src
        return self

    def _bigdl_arrays(self):
        """The labor's parameter arrays, then its running statistics."""
        labor = self.modules[0]
        return labor.parameters()[0] + labor.getExtraParameter()

    def _keras_weights(self, arrays):
        return arrays

    def _bigdl_weights(self, arrays):
        return arrays

    def summary_rows(self):
        """[(name, class, output shape, parameter count)] of this layer."""
        return [(self.getName(), self._kerasName, self.get_output_shape(),
                 count(self.modules[0]) if self.modules else 0)]

    def __str__(self):
        if not self.built():
            return f"{self.getName()}(not built)"
        return f"{self.getName()}({self._inputShape} -> {self._outputShape})"

    __repr__ = __str__


def batch_shape(shape):
    if shape is None:
        return None
    if isinstance(shape, list):
        return [(None, *s) for s in shape]
    return (None, *shape)


def node_shape(layer, node):
    """The output shape of graph ``node`` (a node of a Keras layer)."""
    element = getattr(node, "element", None)
    shape = getattr(element, "_outputShape", None)
    if not isinstance(element, Module) or shape is None:
        raise TypeError(f"{layer.getName()}: the Keras functional API links Keras layers; "
                        f"got a node of {element} (start from pymodules.keras.Input)")
    return shape
