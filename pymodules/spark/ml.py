"""Spark ML: pymodules models as Estimators and Transformers on DataFrames (BigDL's NNFrames).

``NNEstimator(model, criterion)`` and ``NNClassifier(model)`` are ``pyspark.ml`` Estimators:
``fit(df)`` trains the model with the distributed ``Optimizer`` (pymodules.spark) on the
DataFrame's feature and label columns and returns an ``NNModel`` / ``NNClassifierModel``, a
Transformer whose ``transform(df)`` appends the prediction column. They take part in a
``pyspark.ml.Pipeline`` like Spark's own stages and persist with Spark ML's ``save``/``load``:
Spark's metadata beside the pymodules model in pymodules' own file format (never pickled).

Columns. A feature column holds ``pyspark.ml.linalg`` vectors, arrays of numbers or numbers;
``featuresCol`` may name several columns, one per input of the model. ``featureSize`` gives
the shape of one sample's features (several: one shape per column); a column's values are
reshaped to it (C order), and when it is omitted each value is a flat vector whose length is
taken from the first row. Labels: numbers (0-based classes for the classifier) or arrays
(``labelSize`` as ``featureSize``). A null, a value of another size or a value that is not a
number, vector or array raises ``ValueError`` naming the column, the row and the sizes.

Training. The rows become ``Sample``s and train data-parallel as an RDD of Sample does
(data order, retries and the exactness of the weights as in pymodules.spark). The batch is
split evenly over the partitions, so when ``batchSize`` is not a multiple of the partition
count the rows are coalesced into ``gcd(batchSize, partitions)`` partitions. The defaults
are BigDL's: ``batchSize`` 1, ``maxEpoch`` 50, ``SGD`` with ``learningRate`` 1e-3.

Predictions. ``NNModel`` appends each sample's output flattened to an array of doubles;
``NNClassifierModel`` appends the arg-max class, 0-based, as a double (Spark ML's
convention for a prediction column). The model runs in evaluation mode on the executors,
``batchSize`` rows at a time, shipped once per ``transform`` as its file.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)

from pymodules.criterion import ClassNLLCriterion, Criterion
from pymodules.data import Sample
from pymodules.nn.module import Module
from pymodules.optim import SGD, MaxEpoch, Optimizer, OptimMethod, Trigger
from pymodules.spark import _Shipped, _task_threads

__all__ = ["NNClassifier", "NNClassifierModel", "NNEstimator", "NNModel"]

_WHERE = "pymodules.spark.ml"


# -- parameters ------------------------------------------------------------------------
def _columns(value):
    """One column name, or a non-empty list of them."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(c, str) for c in value):
        return list(value)
    raise TypeError(f"{_WHERE}: a column parameter takes a name or a list of names, got "
                    f"{value!r}")


def _shape(value):
    """A sample's shape (a list of positive ints), several shapes (a list of them) or None."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{_WHERE}: a size is a list of positive ints (or a list of such "
                        f"lists for several columns), got {value!r}")
    if all(isinstance(v, (list, tuple)) for v in value):
        return [_shape(v) for v in value]
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
               for v in value):
        raise ValueError(f"{_WHERE}: a size holds positive ints, got {value!r}")
    return [int(v) for v in value]


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{_WHERE}: expected a positive int, got {value!r}")
    return int(value)


class _NNParams(Params):
    """The columns, sizes and batch of NNEstimator and NNModel."""

    featuresCol = Param(Params._dummy(), "featuresCol",
                        "feature column name, or a list of names (one per model input)",
                        typeConverter=TypeConverters.identity)
    labelCol = Param(Params._dummy(), "labelCol",
                     "label column name, or a list of names (one per target)",
                     typeConverter=TypeConverters.identity)
    predictionCol = Param(Params._dummy(), "predictionCol", "prediction column name",
                          typeConverter=TypeConverters.toString)
    featureSize = Param(Params._dummy(), "featureSize",
                        "shape of one sample's features (a list of shapes for several "
                        "columns); None: a flat vector", typeConverter=TypeConverters.identity)
    batchSize = Param(Params._dummy(), "batchSize", "rows per batch",
                      typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(featuresCol="features", labelCol="label",
                         predictionCol="prediction", featureSize=None, batchSize=1)

    def setFeaturesCol(self, value):
        return self._set(featuresCol=_columns(value))

    def getFeaturesCol(self):
        return self.getOrDefault(self.featuresCol)

    def setLabelCol(self, value):
        return self._set(labelCol=_columns(value))

    def getLabelCol(self):
        return self.getOrDefault(self.labelCol)

    def setPredictionCol(self, value):
        return self._set(predictionCol=value)

    def getPredictionCol(self):
        return self.getOrDefault(self.predictionCol)

    def setFeatureSize(self, value):
        return self._set(featureSize=_shape(value))

    def getFeatureSize(self):
        return self.getOrDefault(self.featureSize)

    def setBatchSize(self, value):
        return self._set(batchSize=_positive_int(value))

    def getBatchSize(self):
        return self.getOrDefault(self.batchSize)


# -- rows to arrays ----------------------------------------------------------------------
def _names(col):
    return [col] if isinstance(col, str) else list(col)


def _shapes_for(names, size, what):
    """One shape (or None) per column."""
    if size is None:
        return [None] * len(names)
    several = isinstance(size[0], list)
    if len(names) == 1 and not several:
        return [size]
    if not several or len(size) != len(names):
        raise ValueError(f"{_WHERE}: {what} {size} does not give one shape for each of the "
                         f"{len(names)} columns {names}")
    return size


def _value(value, column, where, shape, dtype):
    """The array of one cell, reshaped to ``shape``, or the reason it cannot be."""
    if value is None:
        return f"column {column!r} is null in {where}"
    if hasattr(value, "toArray"):  # pyspark.ml.linalg / mllib vectors, dense or sparse
        array = np.asarray(value.toArray(), dtype=dtype)
    elif isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            return f"column {column!r} holds an array with a null in {where}"
        try:
            array = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError):
            return f"column {column!r} holds an array that is not numbers in {where}"
    elif isinstance(value, (bool, int, float, np.number)):
        array = np.asarray(value, dtype=dtype)
    else:
        return (f"column {column!r} holds a {type(value).__name__} in {where}; expected a "
                f"vector, an array of numbers or a number")
    if shape is None:
        return array
    if array.size != math.prod(shape):
        return (f"column {column!r} holds a value of size {array.size} in {where}, expected "
                f"{math.prod(shape)} (shape {shape})")
    return array.reshape(shape)


def _cells(row, names, shapes, where, dtype):
    values = []
    for name, shape in zip(names, shapes, strict=True):
        v = _value(row[name], name, where, shape, dtype)
        if isinstance(v, str):
            return v
        values.append(v)
    return values[0] if len(values) == 1 else values


def _samples(index, rows, features, labels, dtype):
    """Sample of each row (features and label), or the message of the first bad row."""
    (fnames, fshapes), (lnames, lshapes) = features, labels
    for i, row in enumerate(rows):
        where = f"row {i} of partition {index}"
        x = _cells(row, fnames, fshapes, where, dtype)
        if isinstance(x, str):
            yield x
            return
        y = _cells(row, lnames, lshapes, where, dtype)
        if isinstance(y, str):
            yield y
            return
        yield Sample(x, y)


def _is_message(record):
    return isinstance(record, str)


def _flat_sizes(df, names, shapes):
    """Each column's shape: the given one, else the flat size of the first row's value."""
    if all(s is not None for s in shapes):
        return shapes
    first = df.select(*names).first()
    if first is None:
        raise ValueError(f"{_WHERE}: the DataFrame has no rows")
    out = []
    for name, shape in zip(names, shapes, strict=True):
        if shape is not None:
            out.append(shape)
            continue
        v = _value(first[name], name, "the first row", None, np.float64)
        if isinstance(v, str):
            raise ValueError(f"{_WHERE}: {v}")
        out.append([int(v.size)] if v.ndim else [])
    return out


def _sample_rdd(df, featuresCol, featureSize, labelCol, labelSize, dtype):
    """The DataFrame's rows as an RDD of Sample, after checking every row."""
    fnames, lnames = _names(featuresCol), _names(labelCol)
    missing = [c for c in fnames + lnames if c not in df.columns]
    if missing:
        raise ValueError(f"{_WHERE}: the DataFrame has no column(s) {missing}; its columns are "
                         f"{df.columns}")
    fshapes = _flat_sizes(df, fnames, _shapes_for(fnames, featureSize, "featureSize"))
    lshapes = _shapes_for(lnames, labelSize, "labelSize")
    job = functools.partial(_samples, features=(fnames, fshapes), labels=(lnames, lshapes),
                            dtype=np.dtype(dtype))
    return df.select(*fnames, *lnames).rdd.mapPartitionsWithIndex(job)


def _checked(rdd):
    """``rdd`` once no record of it is the message of a bad row."""
    bad = rdd.filter(_is_message).take(1)
    if bad:
        raise ValueError(f"{_WHERE}: {bad[0]}")
    return rdd


def _even(rdd, batchSize):
    """``rdd`` with a partition count that divides ``batchSize``."""
    p = rdd.getNumPartitions()
    return rdd if batchSize % p == 0 else rdd.coalesce(math.gcd(batchSize, p))


# -- the estimators ----------------------------------------------------------------------
class NNEstimator(Estimator, _NNParams, MLWritable, MLReadable):
    """NNEstimator(model, criterion, featureSize=None, labelSize=None): trains ``model``
    (a pymodules Module) with ``criterion`` on a DataFrame; ``fit`` returns an NNModel."""

    labelSize = Param(Params._dummy(), "labelSize",
                      "shape of one sample's label (a list of shapes for several columns); "
                      "None: as the column holds it", typeConverter=TypeConverters.identity)
    maxEpoch = Param(Params._dummy(), "maxEpoch", "epochs to train when no end trigger is set",
                     typeConverter=TypeConverters.toInt)
    learningRate = Param(Params._dummy(), "learningRate",
                         "learning rate of the default optim method (SGD)",
                         typeConverter=TypeConverters.toFloat)
    cachingSample = Param(Params._dummy(), "cachingSample",
                          "keep the decoded samples cached during fit",
                          typeConverter=TypeConverters.toBoolean)

    def __init__(self, model, criterion, featureSize=None, labelSize=None):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"{type(self).__name__}: model must be a pymodules Module, got "
                            f"{type(model).__name__}")
        if not isinstance(criterion, Criterion):
            raise TypeError(f"{type(self).__name__}: criterion must be a pymodules Criterion, "
                            f"got {type(criterion).__name__}")
        self.model, self.criterion = model, criterion
        self.optimMethod = None
        self.endWhen = None
        self.validation = None
        self.trainSummary = self.validationSummary = None
        self.checkpoint = None
        self._setDefault(labelSize=None, maxEpoch=50, learningRate=1e-3, cachingSample=True)
        self._set(featureSize=_shape(featureSize), labelSize=_shape(labelSize))

    # BigDL's setters ------------------------------------------------------------------------
    def setLabelSize(self, value):
        return self._set(labelSize=_shape(value))

    def getLabelSize(self):
        return self.getOrDefault(self.labelSize)

    def setMaxEpoch(self, value):
        return self._set(maxEpoch=_positive_int(value))

    def getMaxEpoch(self):
        return self.getOrDefault(self.maxEpoch)

    def setLearningRate(self, value):
        return self._set(learningRate=float(value))

    def getLearningRate(self):
        return self.getOrDefault(self.learningRate)

    def setCachingSample(self, value):
        return self._set(cachingSample=bool(value))

    def isCachingSample(self):
        return self.getOrDefault(self.cachingSample)

    def setEndWhen(self, trigger):
        if not isinstance(trigger, Trigger):
            raise TypeError(f"{_WHERE}: setEndWhen takes a Trigger, got "
                            f"{type(trigger).__name__}")
        self.endWhen = trigger
        return self

    def setOptimMethod(self, method):
        if not isinstance(method, OptimMethod):
            raise TypeError(f"{_WHERE}: setOptimMethod takes an OptimMethod, got "
                            f"{type(method).__name__}")
        self.optimMethod = method
        return self

    def setValidation(self, trigger, df, methods, batchSize):
        """Validate with ``methods`` on the DataFrame ``df`` whenever ``trigger`` fires."""
        self.validation = (trigger, df, methods, _positive_int(batchSize))
        return self

    def setTrainSummary(self, summary):
        self.trainSummary = summary
        return self

    def setValidationSummary(self, summary):
        self.validationSummary = summary
        return self

    def setCheckpoint(self, path, trigger, isOverWrite=True):
        self.checkpoint = (path, trigger, bool(isOverWrite))
        return self

    # training -------------------------------------------------------------------------------
    def _rdd(self, df):
        return _sample_rdd(df, self.getFeaturesCol(), self.getFeatureSize(),
                           self.getLabelCol(), self.getLabelSize(), self.model.dtype)

    def _fit(self, dataset):
        rdd = self._rdd(dataset)
        if self.isCachingSample():
            rdd = rdd.cache()
        try:
            batch = self.getBatchSize()
            rdd = _even(_checked(rdd), batch)
            method = self.optimMethod if self.optimMethod is not None else \
                SGD(learningRate=self.getLearningRate())
            end = self.endWhen if self.endWhen is not None else MaxEpoch(self.getMaxEpoch())
            optimizer = Optimizer(self.model, rdd, self.criterion, method, end, batch)
            if self.validation is not None:
                trigger, df, methods, vbatch = self.validation
                optimizer.setValidation(trigger, _checked(self._rdd(df)), methods, vbatch)
            if self.trainSummary is not None:
                optimizer.setTrainSummary(self.trainSummary)
            if self.validationSummary is not None:
                optimizer.setValidationSummary(self.validationSummary)
            if self.checkpoint is not None:
                path, trigger, overwrite = self.checkpoint
                optimizer.setCheckpoint(path, trigger, overwrite)
            optimizer.setProgressBar(False)
            optimizer.optimize()
        finally:
            rdd.unpersist()
        return self._copyValues(self._model_class()(self.model))

    def _model_class(self):
        return NNModel

    # persistence ----------------------------------------------------------------------------
    def write(self):
        return _Writer(self)

    @classmethod
    def read(cls):
        return _Reader(cls)


class NNClassifier(NNEstimator):
    """NNClassifier(model, criterion=ClassNLLCriterion(), featureSize=None): an NNEstimator
    for classification; labels are 0-based classes; ``fit`` returns an NNClassifierModel."""

    def __init__(self, model, criterion=None, featureSize=None):
        super().__init__(model, criterion if criterion is not None else ClassNLLCriterion(),
                         featureSize)

    def _model_class(self):
        return NNClassifierModel


# -- the models --------------------------------------------------------------------------
def _eval_mode(module):
    return module.evaluate()


def _predictions(rows, shipped, names, shapes, batch, classify, dtype):
    """Each row with the model's prediction appended, ``batch`` rows per forward."""
    from pymodules.data import stack

    _task_threads()
    model = None
    chunk = []

    def flush():
        inputs = []
        for i, row in enumerate(chunk):
            x = _cells(row, names, shapes, f"row {i} of a batch", dtype)
            if isinstance(x, str):
                raise ValueError(f"{_WHERE}: {x}")
            inputs.append(x)
        out = model.forward(stack(inputs, dtype))
        if isinstance(out, list):
            raise ValueError(f"{_WHERE}: {model.getName()} has several outputs; an NNModel "
                             f"appends one prediction column")
        out = out.reshape(len(chunk), -1)
        if classify:
            preds = [float(c) for c in np.argmax(out, axis=1)]
        else:
            preds = [[float(v) for v in r] for r in out]
        result = [(*row, p) for row, p in zip(chunk, preds, strict=True)]
        chunk.clear()
        return result

    for row in rows:
        if model is None:
            model = shipped.get(_eval_mode)
        chunk.append(row)
        if len(chunk) == batch:
            yield from flush()
    if chunk:
        yield from flush()


class NNModel(Model, _NNParams, MLWritable, MLReadable):
    """NNModel(model, featureSize=None): a Transformer appending ``model``'s output for the
    features of each row (flattened, an array of doubles) as ``predictionCol``."""

    _classify = False

    def __init__(self, model, featureSize=None):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"{type(self).__name__}: model must be a pymodules Module, got "
                            f"{type(model).__name__}")
        self.model = model
        self._setDefault(batchSize=4)  # BigDL's NNModel default
        if featureSize is not None:
            self._set(featureSize=_shape(featureSize))

    def _transform(self, dataset):
        from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

        names = _names(self.getFeaturesCol())
        missing = [c for c in names if c not in dataset.columns]
        if missing:
            raise ValueError(f"{_WHERE}: the DataFrame has no column(s) {missing}; its "
                             f"columns are {dataset.columns}")
        out = self.getPredictionCol()
        if out in dataset.columns:
            raise ValueError(f"{_WHERE}: the DataFrame has a column {out!r} already; choose "
                             f"another predictionCol")
        shapes = _flat_sizes(dataset, names, _shapes_for(names, self.getFeatureSize(),
                                                          "featureSize")) \
            if dataset.take(1) else _shapes_for(names, self.getFeatureSize(), "featureSize")
        kind = DoubleType() if self._classify else ArrayType(DoubleType(), False)
        schema = StructType([*dataset.schema.fields, StructField(out, kind, False)])
        shipped = _Shipped(dataset.sparkSession.sparkContext, self.model)
        job = functools.partial(_predictions, shipped=shipped, names=names, shapes=shapes,
                                batch=self.getBatchSize(), classify=self._classify,
                                dtype=np.dtype(self.model.dtype))
        return dataset.sparkSession.createDataFrame(dataset.rdd.mapPartitions(job), schema)

    def write(self):
        return _Writer(self)

    @classmethod
    def read(cls):
        return _Reader(cls)


class NNClassifierModel(NNModel):
    """NNClassifierModel(model, featureSize=None): appends the arg-max class of ``model``'s
    output, 0-based, as a double."""

    _classify = True


# -- persistence -------------------------------------------------------------------------
def _join(path, name):
    return path.rstrip("/") + "/" + name


class _Writer(MLWriter):
    """Spark's metadata (the params) under ``path/metadata``; the pymodules model in
    ``path/model``; an estimator's criterion, optim method and end trigger in
    ``path/training``, all in pymodules' own format."""

    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def saveImpl(self, path):
        from pymodules.persistence import save_state

        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc)
        self.instance.model.save(_join(path, "model"), overWrite=True)
        if isinstance(self.instance, NNEstimator):
            save_state(_join(path, "training"), {
                "criterion": self.instance.criterion, "optimMethod": self.instance.optimMethod,
                "endWhen": self.instance.endWhen}, overWrite=True)


class _Reader(MLReader):
    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        from pymodules.persistence import load, load_state

        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        expected = f"{self.cls.__module__}.{self.cls.__name__}"
        if metadata["class"] != expected:
            raise ValueError(f"{_WHERE}: {path} holds a {metadata['class']}, not a {expected}")
        model = load(_join(path, "model"))
        if issubclass(self.cls, NNEstimator):
            training = load_state(_join(path, "training"))
            instance = self.cls.__new__(self.cls)
            NNEstimator.__init__(instance, model, training["criterion"])
            if training.get("optimMethod") is not None:
                instance.setOptimMethod(training["optimMethod"])
            if training.get("endWhen") is not None:
                instance.setEndWhen(training["endWhen"])
        else:
            instance = self.cls(model)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance

