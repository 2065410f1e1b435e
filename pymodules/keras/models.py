"""Keras-style models: ``Sequential``, ``Model`` (a graph from ``Input`` nodes) and what they
share: ``compile``, ``fit``, ``evaluate``, ``predict``, ``summary``, ``get_weights``.

A Sequential is a pymodules Sequential of Keras layers, a Model a pymodules Graph of them:
forward, backward, parameters, save/load and the Spark paths are the Module ones, and
``fit`` is the Optimizer's training (a Spark RDD trains data-parallel through it).
"""

from __future__ import annotations

import numpy as np

from pymodules import nn
from pymodules.data import DataSet, Sample, several
from pymodules.keras import objectives
from pymodules.keras.engine import KerasLayer, batch_shape
from pymodules.keras.layers import InputLayer
from pymodules.nn.module import _postfix
from pymodules.validation import (
    Loss,
    ValidationMethod,
    evaluate_dataset,
    is_rdd,
    predict_class_dataset,
    predict_dataset,
)


class KerasNet:
    """What the Keras models add to their pymodules container (a mixin)."""

    def __init_subclass__(cls, **kwargs):
        if "_kerasName" not in cls.__dict__:
            cls._kerasName = cls.__name__
            cls.__name__ = cls.__qualname__ = "Keras" + cls.__name__
        super().__init_subclass__(**kwargs)

    def _keras_init(self, name):
        self._name = f"{self._kerasName}@{_postfix()}"
        if name is not None:
            self.setName(name)
        self._optimMethod = self._criterion = None
        self._metrics = []
        self._summaries = (None, None)

    # -- as a layer of another model ------------------------------------------------------
    def built(self) -> bool:
        return self._outputShape is not None

    def build(self, inputShape):
        if inputShape != self._inputShape:
            raise ValueError(f"{self.getName()}: takes input shape {self._inputShape}, got "
                             f"{inputShape}")
        return self._outputShape

    def get_input_shape(self):
        return batch_shape(self._inputShape)

    def get_output_shape(self):
        return batch_shape(self._outputShape)

    # -- training --------------------------------------------------------------------------
    def compile(self, optimizer, loss, metrics=None):
        """Set the optimization method, the loss and the metrics of fit and evaluate: names
        ("sgd", "adam", "categorical_crossentropy", "accuracy", ...; see
        pymodules.keras.objectives) or objects (OptimMethod, Criterion,
        ValidationMethod)."""
        owner = self.getName()
        method = objectives.optimizer(owner, optimizer)
        criterion = objectives.loss(owner, loss)
        methods = objectives.metrics(owner, metrics, criterion)
        self._optimMethod, self._criterion, self._metrics = method, criterion, methods
        return self

    def _compiled(self, what):
        if self._criterion is None:
            raise ValueError(f"{self.getName()}: {what} needs compile(optimizer, loss) first")

    def set_tensorboard(self, log_dir, app_name):
        """Record fit's training scalars (TrainSummary) and validation results
        (ValidationSummary) under ``log_dir/app_name``, for TensorBoard."""
        from pymodules.optim import TrainSummary, ValidationSummary

        self._summaries = (TrainSummary(log_dir, app_name), ValidationSummary(log_dir, app_name))
        return self

    def get_train_summary(self, tag=None):
        """The TrainSummary of set_tensorboard (its scalars of ``tag`` when given)."""
        s = self._summaries[0]
        return s if tag is None or s is None else s.readScalar(tag)

    def get_validation_summary(self, tag=None):
        s = self._summaries[1]
        return s if tag is None or s is None else s.readScalar(tag)

    def fit(self, x, y=None, batch_size=32, nb_epoch=10, validation_data=None,
            distributed=False):
        """Train for ``nb_epoch`` epochs with the compiled method and loss (an Optimizer),
        validating on ``validation_data`` ((x, y), a DataSet or an RDD) after every epoch.

        ``x``: an array, a list of arrays (several inputs) with labels ``y``; a DataSet; or
        an RDD of Sample (then, or with ``distributed``, training is data-parallel on
        Spark). Each call goes on from the weights and the optimization state it finds.
        """
        from pymodules.optim import EveryEpoch, MaxEpoch, Optimizer

        self._compiled("fit")
        data = self._training_data(x, y, distributed)
        optimizer = Optimizer(self, data, self._criterion, self._optimMethod,
                              MaxEpoch(int(nb_epoch)), batch_size)
        if validation_data is not None:
            val = self._validation_data(validation_data, distributed)
            optimizer.setValidation(EveryEpoch(), val, self._methods(), batch_size)
        train_summary, val_summary = self._summaries
        if train_summary is not None:
            optimizer.setTrainSummary(train_summary).setValidationSummary(val_summary)
        optimizer.optimize()
        return self

    def _training_data(self, x, y, distributed):
        if is_rdd(x) or isinstance(x, DataSet):
            if y is not None:
                raise ValueError(f"{self.getName()}: fit takes no y with a DataSet or an "
                                 f"RDD (their samples hold the labels)")
            return x
        if y is None:
            raise ValueError(f"{self.getName()}: fit needs labels y with arrays x")
        if distributed:
            return _to_rdd(x, y)
        # as the Optimizer takes arrays: the same shuffles as Optimizer(model, (x, y), ...)
        return (x, y)

    def _validation_data(self, data, distributed):
        if is_rdd(data) or isinstance(data, DataSet):
            return data
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(f"{self.getName()}: validation_data is (x, y), a DataSet or an "
                             f"RDD of Sample")
        return _to_rdd(*data) if distributed else (data[0], data[1])

    def _methods(self):
        return [Loss(self._criterion), *self._metrics]

    def evaluate(self, x=None, y=None, batch_size=32, *, vMethods=None, batchSize=None):
        """``[loss, metric, ...]`` of the compiled loss and metrics on (x, y) (arrays, a
        list of arrays for several inputs), a DataSet or an RDD of Sample.

        As every Module's: with no data it switches to evaluation mode, and with validation
        methods (in place of y, or as ``vMethods``) it is ``Module.evaluate(dataset,
        vMethods, batchSize)``."""
        if x is None:
            return super().evaluate()
        if vMethods is None and (isinstance(y, ValidationMethod) or (
                isinstance(y, (list, tuple)) and y and
                all(isinstance(m, ValidationMethod) for m in y))):
            vMethods, y = y, None
        if vMethods is not None:
            return super().evaluate(x, vMethods, batchSize if batchSize is not None else
                                    batch_size)
        self._compiled("evaluate")
        if is_rdd(x) or isinstance(x, DataSet):
            data = x
        elif y is None:
            raise ValueError(f"{self.getName()}: evaluate needs labels y with arrays x")
        else:
            data = (x, y)
        results = evaluate_dataset(self, data, self._methods(), batch_size)
        return [r.result()[0] for r, _ in results]

    def predict(self, x, batch_size=32, distributed=False, *, batchSize=None):
        """The outputs for ``x`` (an array, a list of arrays for several inputs, a DataSet,
        or an RDD of Sample, which gives an RDD), batch-first. (``batchSize``: as
        Module.predict takes it.)"""
        return predict_dataset(self, _features(x, distributed),
                               batch_size if batchSize is None else batchSize)

    def predict_classes(self, x, batch_size=32, distributed=False):
        """The 0-based arg-max class of each sample."""
        return predict_class_dataset(self, _features(x, distributed), batch_size)

    # -- layers, weights, summary ----------------------------------------------------------
    @property
    def layers(self):
        return list(self._layers())

    def get_weights(self):
        """Every layer's weights as Keras lays them out (see each layer), layer by layer."""
        return [w for layer in self._layers() for w in layer.get_weights()]

    def set_weights(self, arrays):
        arrays = list(arrays)
        expected = sum(len(layer.get_weights()) for layer in self._layers())
        if len(arrays) != expected:
            raise ValueError(f"{self.getName()}: set_weights got {len(arrays)} arrays, "
                             f"expected {expected}")
        for layer in self._layers():
            n = len(layer.get_weights())
            layer.set_weights(arrays[:n])
            arrays = arrays[n:]
        return self

    def summary_rows(self):
        return [(self.getName(), self._kerasName, self.get_output_shape(),
                 sum(w.size for w in self.parameters()[0]))]

    def summary(self, line_length=100, positions=(0.40, 0.70, 1.0)):
        """Print each layer's name and class, output shape and parameter count, then the
        totals (as Keras's summary); return the text."""
        widths = [int(line_length * p) for p in positions]
        widths = [widths[0]] + [b - a for a, b in zip(widths, widths[1:], strict=False)]
        graph = isinstance(self, nn.Graph)
        if graph:
            widths[-1] = max(widths[-1], 12)
            widths.append(line_length // 3)

        def line(cells):
            return "".join(str(c)[:w - 1].ljust(w) for c, w in zip(cells, widths,
                                                                    strict=False)).rstrip()

        head = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if graph else [])
        width = sum(widths)
        out = [f'Model: "{self.getName()}"', "_" * width, line(head), "=" * width]
        for layer, prev in self._layer_links():
            for name, kind, shape, n in layer.summary_rows():
                out.append(line([f"{name} ({kind})", shape, n] + ([", ".join(prev)] if graph
                                                                   else [])))
                out.append("_" * width)
        out[-1] = "=" * width
        params = self.parameters()[0]
        frozen = {id(w) for m in self.modules_preorder() if m.scaleW == 0 and m.scaleB == 0
                  for w in m.parameters()[0]} if any(
            m._frozen is not None for m in self.modules_preorder()) else set()
        total = sum(w.size for w in params)
        fixed = sum(w.size for w in params if id(w) in frozen) + \
            sum(a.size for a in self.getExtraParameter())
        out += [f"Total params: {total + sum(a.size for a in self.getExtraParameter()):,}",
                f"Trainable params: {total - sum(w.size for w in params if id(w) in frozen):,}",
                f"Non-trainable params: {fixed:,}", "_" * width]
        text = "\n".join(out)
        print(text)
        return text

    def _layer_links(self):
        return [(layer, []) for layer in self._layers()]


class Sequential(KerasNet, nn.Sequential):
    """A linear stack of Keras layers; the first one needs ``input_shape`` (or is an
    InputLayer), the others take the output shape of the one before."""

    def __init__(self, name=None):
        nn.Sequential.__init__(self)
        self._keras_init(name)

    @property
    def _inputShape(self):
        return self.modules[0]._inputShape if self.modules else None

    @property
    def _outputShape(self):
        return self.modules[-1]._outputShape if self.modules else None

    def add(self, layer):
        """Append ``layer`` (a Keras layer, or a Keras model), built for the output shape
        of the layers before it; return self."""
        if not isinstance(layer, (KerasLayer, KerasNet)):
            raise TypeError(f"{self.getName()}: add takes a Keras layer (pymodules.keras), "
                            f"got {type(layer).__name__}")
        if self.modules:
            layer.build(self._outputShape)
        elif not layer.built():
            given = getattr(layer, "_givenShape", None)
            if given is None:
                raise ValueError(f"{layer.getName()}: the first layer of a Sequential needs "
                                 f"input_shape (one sample's shape, without the batch axis)")
            layer.build(given)
        return nn.Sequential.add(self, layer)

    def _layers(self):
        return iter(self.modules)


class Model(KerasNet, nn.Graph):
    """A graph of Keras layers from ``Input`` nodes to output nodes (one node or a list of
    each): ``Model(input, output)``."""

    def __init__(self, input, output, name=None):  # noqa: A002 - Keras's name
        nn.Graph.__init__(self, input, output)
        self._keras_init(name)
        for n in self._order:
            if not isinstance(n.element, (KerasLayer, KerasNet)):
                raise TypeError(f"{self.getName()}: {n.element.getName()} is not a Keras "
                                f"layer; a Model links Keras layers")

    @property
    def _inputShape(self):
        shapes = [n.element._outputShape for n in self._inputNodes]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def _outputShape(self):
        shapes = [n.element._outputShape for n in self._outputNodes]
        return shapes[0] if len(shapes) == 1 else shapes

    def _layers(self):
        return (n.element for n in self._order)

    def _layer_links(self):
        return [(n.element, [p.element.getName() for p in n.prevNodes]) for n in self._order]


def Input(shape=None, name=None):  # noqa: N802 - Keras's name
    """A graph input node for samples of ``shape`` (without the batch axis)."""
    from pymodules.nn.graph import Node

    layer = InputLayer(input_shape=shape, name=name)
    if layer._givenShape is None:
        raise ValueError(f"{layer.getName()}: Input needs shape (one sample's shape, without "
                         f"the batch axis)")
    layer.build(layer._givenShape)
    return Node(layer)


def _to_rdd(x, y):
    """An RDD of Sample of arrays x (or a list of arrays) and labels y, on the active
    SparkContext."""
    from pyspark import SparkContext

    sc = SparkContext.getOrCreate()
    xs = list(x) if several(x) else [np.asarray(x)]
    ys = list(y) if several(y) else [np.asarray(y)]
    n = len(xs[0])

    def pick(arrays, i):
        return [a[i] for a in arrays] if len(arrays) > 1 else arrays[0][i]

    return sc.parallelize([Sample(pick(xs, i), pick(ys, i)) for i in range(n)])


def _features(x, distributed):
    if distributed and not is_rdd(x) and not isinstance(x, DataSet):
        from pyspark import SparkContext

        xs = list(x) if several(x) else [np.asarray(x)]
        rows = [[a[i] for a in xs] if len(xs) > 1 else xs[0][i] for i in range(len(xs[0]))]
        return SparkContext.getOrCreate().parallelize([Sample(r) for r in rows])
    return x
