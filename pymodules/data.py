"""Data: samples, mini-batches and datasets that shuffle and batch them.

A dataset yields ``MiniBatch``es. ``DataSet.array`` holds arrays in memory, reshuffles
them every epoch from the library generator (``pm.setSeed`` makes it reproducible) and
gathers each batch into a buffer that is reused; the last, partial batch is kept.
``DataSet.iterable`` streams from a factory that returns a fresh iterable per epoch, for
data that does not fit in memory.
"""

from __future__ import annotations

import numpy as np

from pymodules import random as _random

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Sample:
    """One record: ``features`` (an array) and ``label`` (an array or a number)."""

    def __init__(self, features, label=None):
        self.features = np.asarray(features)
        self.label = None if label is None else np.asarray(label)

    @classmethod
    def from_ndarray(cls, features, label=None):
        return cls(features, label)

    def __repr__(self):
        label = "" if self.label is None else f", label={self.label.tolist()}"
        return f"Sample(features {self.features.shape} {self.features.dtype}{label})"


class MiniBatch:
    """A batch: ``input`` (batch, ...) and ``target`` (batch, ...) or None."""

    def __init__(self, input, target=None):
        self.input, self.target = input, target

    def getInput(self):
        return self.input

    def getTarget(self):
        return self.target

    def size(self) -> int:
        return len(self.input)

    def __repr__(self):
        target = "" if self.target is None else f", target {np.shape(self.target)}"
        return f"MiniBatch(input {np.shape(self.input)}{target})"


def _float_features(features, dtype):
    """``features`` as a C-contiguous float array of ``dtype`` (copied only if needed)."""
    return np.ascontiguousarray(features, dtype=dtype)


class DataSet:
    """A source of mini-batches; build one with ``DataSet.array`` or ``DataSet.iterable``."""

    @staticmethod
    def array(features, labels=None) -> ArrayDataSet:
        return ArrayDataSet(features, labels)

    @staticmethod
    def iterable(factory, size=None) -> IterableDataSet:
        return IterableDataSet(factory, size)

    def size(self) -> int | None:
        raise NotImplementedError

    def batches(self, batchSize, shuffle=False, dtype=None):
        """Yield the MiniBatches of one epoch."""
        for batch, _ in self.epoch(batchSize, shuffle, dtype):
            yield batch

    def epoch(self, batchSize, shuffle=False, dtype=None):
        """Yield (MiniBatch, isLast) over one epoch."""
        raise NotImplementedError


def _check_batch_size(batchSize):
    if not isinstance(batchSize, (int, np.integer)) or batchSize <= 0:
        raise ValueError(f"batchSize must be a positive int, got {batchSize!r}")
    return int(batchSize)


class ArrayDataSet(DataSet):
    """In-memory features (n, ...) and labels (n, ...) or None."""

    def __init__(self, features, labels=None):
        features = np.asarray(features)
        if features.ndim == 0 or len(features) == 0:
            raise ValueError(f"DataSet: features has shape {features.shape}: the dataset is "
                             f"empty, expected at least one sample")
        if features.dtype.kind not in "fiub":
            raise TypeError(f"DataSet: features has dtype {features.dtype}, expected numbers")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim == 0 or len(labels) != len(features):
                raise ValueError(f"DataSet: labels has shape {labels.shape}, expected "
                                 f"{len(features)} labels (one per sample of features "
                                 f"{features.shape})")
            if labels.dtype.kind not in "fiub":
                raise TypeError(f"DataSet: labels has dtype {labels.dtype}, expected numbers")
            if labels.dtype.kind == "f" and not np.isfinite(labels).all():
                bad = labels.ravel()[~np.isfinite(labels.ravel())][0]
                raise ValueError(f"DataSet: labels hold {bad}, expected finite values")
            labels = np.ascontiguousarray(labels)
        self.features, self.labels = features, labels
        self._cast = {}
        self._buffers = {}

    def size(self):
        return len(self.features)

    def _features(self, dtype):
        """The features in ``dtype``, converted once and cached."""
        if dtype is None:
            dtype = self.features.dtype if self.features.dtype in _FLOATS else np.float32
        dtype = np.dtype(dtype)
        if dtype not in self._cast:
            self._cast[dtype] = _float_features(self.features, dtype)
        return self._cast[dtype]

    def _buffer(self, name, like, rows):
        buf = self._buffers.get(name)
        shape = (rows,) + like.shape[1:]
        if buf is None or buf.shape != shape or buf.dtype != like.dtype:
            buf = self._buffers[name] = np.empty(shape, like.dtype)
        return buf

    def epoch(self, batchSize, shuffle=False, dtype=None):
        batchSize = _check_batch_size(batchSize)
        x = self._features(dtype)
        y = self.labels
        n = len(x)
        if not shuffle:
            # Row slices of C-contiguous arrays are contiguous views: nothing is copied.
            for start in range(0, n, batchSize):
                stop = min(start + batchSize, n)
                yield (MiniBatch(x[start:stop], None if y is None else y[start:stop]),
                       stop == n)
            return
        order = _random.generator().permutation(n)
        xb = self._buffer("x", x, min(batchSize, n))
        yb = None if y is None else self._buffer("y", y, min(batchSize, n))
        for start in range(0, n, batchSize):
            stop = min(start + batchSize, n)
            idx = order[start:stop]
            m = stop - start
            np.take(x, idx, axis=0, out=xb[:m])
            if y is not None:
                np.take(y, idx, axis=0, out=yb[:m])
            yield MiniBatch(xb[:m], None if y is None else yb[:m]), stop == n

    def __repr__(self):
        labels = "" if self.labels is None else f", labels {self.labels.shape}"
        return f"DataSet.array(features {self.features.shape}{labels})"


def _record(item):
    """(features, label) of one record from a Sample, a pair or a bare feature array."""
    if isinstance(item, Sample):
        return item.features, item.label
    if isinstance(item, tuple) and len(item) == 2:
        return np.asarray(item[0]), None if item[1] is None else np.asarray(item[1])
    return np.asarray(item), None


class IterableDataSet(DataSet):
    """Records streamed from ``factory()``, called once per epoch: it returns an iterable
    of Samples, (features, label) pairs, or ready MiniBatches. Shuffling is the factory's."""

    def __init__(self, factory, size=None):
        if not callable(factory):
            raise TypeError(f"DataSet.iterable: factory must be callable (returning a fresh "
                            f"iterable per epoch), got {type(factory).__name__}")
        self.factory = factory
        self._size = None if size is None else int(size)

    def size(self):
        return self._size

    def _batches(self, batchSize, dtype):
        feats, labels = [], []

        def flush():
            x = np.ascontiguousarray(np.stack(feats), dtype=dtype or np.float32)
            y = None if labels[0] is None else np.ascontiguousarray(np.stack(labels))
            feats.clear()
            labels.clear()
            return MiniBatch(x, y)

        for item in self.factory():
            if isinstance(item, MiniBatch):
                if feats:
                    yield flush()
                yield MiniBatch(np.ascontiguousarray(item.input, dtype=dtype or np.float32),
                                item.target)
                continue
            f, lab = _record(item)
            if feats and (f.shape != feats[0].shape or (lab is None) != (labels[0] is None)):
                raise ValueError(f"DataSet.iterable: record {f.shape} differs from the "
                                 f"first of its batch {feats[0].shape}")
            feats.append(f)
            labels.append(lab)
            if len(feats) == batchSize:
                yield flush()
        if feats:
            yield flush()

    def epoch(self, batchSize, shuffle=False, dtype=None):
        batchSize = _check_batch_size(batchSize)
        it = self._batches(batchSize, dtype)
        pending = next(it, None)
        if pending is None:
            raise ValueError("DataSet.iterable: the factory yielded no samples: the dataset "
                             "is empty")
        for batch in it:
            yield pending, False
            pending = batch
        yield pending, True

    def __repr__(self):
        return f"DataSet.iterable({getattr(self.factory, '__name__', self.factory)!r})"


def to_dataset(data, what="dataset", need_labels=False) -> DataSet:
    """A DataSet from any local form: a DataSet, a features array, an (features, labels)
    pair, or a list of Samples."""
    if isinstance(data, DataSet):
        return data
    if isinstance(data, np.ndarray):
        if need_labels:
            raise ValueError(f"{what}: a features array has no labels; pass (features, "
                             f"labels), a list of Sample or a DataSet")
        return ArrayDataSet(data)
    if isinstance(data, tuple) and len(data) == 2:
        return ArrayDataSet(data[0], data[1])
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{what}: the list of samples is empty")
        if not all(isinstance(s, Sample) for s in data):
            bad = next(s for s in data if not isinstance(s, Sample))
            raise TypeError(f"{what}: a list must hold Samples, found {type(bad).__name__}")
        shapes = {s.features.shape for s in data}
        if len(shapes) > 1:
            raise ValueError(f"{what}: samples have different feature shapes {sorted(shapes)}")
        has = {s.label is not None for s in data}
        if len(has) > 1:
            raise ValueError(f"{what}: some samples have a label and some do not")
        features = np.stack([s.features for s in data])
        labels = np.stack([s.label for s in data]) if has.pop() else None
        return ArrayDataSet(features, labels)
    if type(data).__module__.startswith("pyspark"):
        raise NotImplementedError(f"{what}: an RDD needs pymodules.spark (not available here)")
    raise TypeError(f"{what}: expected a DataSet, a numpy array, a (features, labels) pair "
                    f"or a list of Sample, got {type(data).__name__}")
