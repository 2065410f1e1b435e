"""Data: samples, mini-batches and datasets that shuffle and batch them.

A dataset yields ``MiniBatch``es. ``DataSet.array`` holds arrays in memory, reshuffles
them every epoch and gathers each batch into a buffer that is reused; the last, partial
batch is kept. The shuffle draws from the generator of the caller (the Optimizer's), or
else from the dataset's own, derived from the global seed when the dataset is created
(``pm.setSeed`` makes either reproducible; ``pymodules.random``).
``DataSet.iterable`` streams from a factory that returns a fresh iterable per epoch, for
data that does not fit in memory.
"""

from __future__ import annotations

import threading

import numpy as np

from pymodules.random import Stream

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def several(value) -> bool:
    """Whether ``value`` is several arrays (one per input or target of a model): a list or
    tuple of NumPy arrays, as BigDL's Python Sample takes them. A list of numbers is one
    array."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and \
        all(isinstance(a, np.ndarray) for a in value)


def each(f, value):
    """``f`` applied to every array of ``value`` (a list for several, else one result)."""
    return [f(a) for a in value] if isinstance(value, list) else f(value)


def rows(value) -> int:
    """The batch size of one array or of several (the first's)."""
    return len(value[0]) if isinstance(value, list) else len(value)


def shapes(value):
    """The shape of one array, or the list of the shapes of several."""
    return [np.shape(a) for a in value] if isinstance(value, list) else np.shape(value)


def _one_or_several(value):
    return [np.asarray(a) for a in value] if several(value) else np.asarray(value)


def stack(values, dtype=None):
    """Records (each one array or a list of several) stacked batch-first, C-contiguous."""
    first = values[0]
    if isinstance(first, list):
        return [np.ascontiguousarray(np.stack([v[i] for v in values]), dtype=dtype)
                for i in range(len(first))]
    return np.ascontiguousarray(np.stack(values), dtype=dtype)


class Sample:
    """One record: ``features`` and ``label`` (or None), each an array (a number works for
    a label) or a list of NumPy arrays, one per input or target of a model with several
    (a 0-d array for a scalar label: a list of numbers is one array)."""

    def __init__(self, features, label=None):
        self.features = _one_or_several(features)
        self.label = None if label is None else _one_or_several(label)

    @classmethod
    def from_ndarray(cls, features, label=None):
        return cls(features, label)

    def __repr__(self):
        def show(v):
            return f"[{', '.join(show(a) for a in v)}]" if isinstance(v, list) else \
                f"{v.shape} {v.dtype}"

        label = "" if self.label is None else f", label={each(np.ndarray.tolist, self.label)}"
        return f"Sample(features {show(self.features)}{label})"


class MiniBatch:
    """A batch: ``input`` (batch, ...) and ``target`` (batch, ...) or None; either may be
    a list of arrays (one per input or target), each batch-first."""

    def __init__(self, input, target=None):
        if several(input) and not isinstance(input, list):
            input = list(input)
        if several(target) and not isinstance(target, list):
            target = list(target)
        if isinstance(input, list) and len({len(a) for a in input}) > 1:
            raise ValueError(f"MiniBatch: the inputs have {[len(a) for a in input]} rows, "
                             f"expected the same batch size for all")
        self.input, self.target = input, target

    def getInput(self):
        return self.input

    def getTarget(self):
        return self.target

    def size(self) -> int:
        return rows(self.input)

    def __repr__(self):
        target = "" if self.target is None else f", target {shapes(self.target)}"
        return f"MiniBatch(input {shapes(self.input)}{target})"


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

    def batches(self, batchSize, shuffle=False, dtype=None, generator=None):
        """Yield the MiniBatches of one epoch."""
        for batch, _ in self.epoch(batchSize, shuffle, dtype, generator):
            yield batch

    def epoch(self, batchSize, shuffle=False, dtype=None, generator=None):
        """Yield (MiniBatch, isLast) over one epoch; a shuffle draws from ``generator``
        (a numpy Generator), by default the dataset's own."""
        raise NotImplementedError


def _check_batch_size(batchSize):
    if not isinstance(batchSize, (int, np.integer)) or batchSize <= 0:
        raise ValueError(f"batchSize must be a positive int, got {batchSize!r}")
    return int(batchSize)


def _check_arrays(value, what, n=None):
    """``value`` (one array or a list of several) checked: numbers, at least one row, the
    same number of rows ``n`` in all; returns (value, n)."""
    parts = value if isinstance(value, list) else [value]
    for i, v in enumerate(parts):
        name = f"{what}[{i}]" if isinstance(value, list) else what
        if n is None and (v.ndim == 0 or len(v) == 0):
            raise ValueError(f"DataSet: {name} has shape {v.shape}: the dataset is empty, "
                             f"expected at least one sample")
        if n is not None and (v.ndim == 0 or len(v) != n):
            raise ValueError(f"DataSet: {name} has shape {v.shape}, expected {n} "
                             f"{'labels' if what == 'labels' else 'rows'} (one per sample "
                             f"of features, {n} samples)")
        if v.dtype.kind not in "fiub":
            raise TypeError(f"DataSet: {name} has dtype {v.dtype}, expected numbers")
        if what == "labels" and v.dtype.kind == "f" and not np.isfinite(v).all():
            bad = v.ravel()[~np.isfinite(v.ravel())][0]
            raise ValueError(f"DataSet: {name} hold {bad}, expected finite values")
        n = len(v)
    return value, n


class ArrayDataSet(DataSet):
    """In-memory features (n, ...) and labels (n, ...) or None; either may be a list of
    arrays (one per input or target), all with n rows.

    Its shuffle stream (``pymodules.random.Stream``) is derived from the global seed when
    it is created; the datasets made on the fly from arrays for an Optimizer, ``evaluate``
    or ``predict`` take none (they are shuffled by the Optimizer's, or not at all), so
    that they leave the streams of the objects created after them as they were."""

    def __init__(self, features, labels=None, *, _stream=True):
        features, n = _check_arrays(_one_or_several(features), "features")
        if labels is not None:
            labels, _ = _check_arrays(_one_or_several(labels), "labels", n)
            labels = each(np.ascontiguousarray, labels)
        self.features, self.labels = features, labels
        self._n = n
        self._cast = {}
        self._buffers = {}
        self._rng = Stream() if _stream else None

    def size(self):
        return self._n

    def _features(self, dtype):
        """The features in ``dtype``, converted once and cached."""
        if dtype is None:
            first = self.features[0] if isinstance(self.features, list) else self.features
            dtype = first.dtype if first.dtype in _FLOATS else np.float32
        dtype = np.dtype(dtype)
        if dtype not in self._cast:
            self._cast[dtype] = each(lambda f: _float_features(f, dtype), self.features)
        return self._cast[dtype]

    @staticmethod
    def _buffer(buffers, name, like, n):
        """Batch buffers shaped like ``like`` (one array or several) with n rows, reused
        from ``buffers`` (a dict) when they fit."""
        if isinstance(like, list):
            return [ArrayDataSet._buffer(buffers, f"{name}{i}", a, n)
                    for i, a in enumerate(like)]
        buf = buffers.get(name)
        shape = (n,) + like.shape[1:]
        if buf is None or buf.shape != shape or buf.dtype != like.dtype:
            buf = buffers[name] = np.empty(shape, like.dtype)
        return buf

    def epoch(self, batchSize, shuffle=False, dtype=None, generator=None):
        batchSize = _check_batch_size(batchSize)
        x = self._features(dtype)
        y = self.labels
        n = self._n

        def part(v, start, stop):
            return None if v is None else each(lambda a: a[start:stop], v)

        if not shuffle:
            # Row slices of C-contiguous arrays are contiguous views: nothing is copied.
            for start in range(0, n, batchSize):
                stop = min(start + batchSize, n)
                yield MiniBatch(part(x, start, stop), part(y, start, stop)), stop == n
            return
        if generator is None:
            if self._rng is None:
                self._rng = Stream()
            generator = self._rng.generator
        order = generator.permutation(n)
        # Gather buffers per thread: an epoch in another thread (another Optimizer on this
        # dataset) gathers into its own.
        buffers = self._buffers.setdefault(threading.get_ident(), {})
        xb = self._buffer(buffers, "x", x, min(batchSize, n))
        yb = None if y is None else self._buffer(buffers, "y", y, min(batchSize, n))

        def gather(v, buf, idx, m):
            if isinstance(v, list):
                for a, b in zip(v, buf, strict=True):
                    np.take(a, idx, axis=0, out=b[:m])
            else:
                np.take(v, idx, axis=0, out=buf[:m])

        for start in range(0, n, batchSize):
            stop = min(start + batchSize, n)
            idx = order[start:stop]
            m = stop - start
            gather(x, xb, idx, m)
            if y is not None:
                gather(y, yb, idx, m)
            yield MiniBatch(part(xb, 0, m), part(yb, 0, m)), stop == n

    def __repr__(self):
        labels = "" if self.labels is None else f", labels {shapes(self.labels)}"
        return f"DataSet.array(features {shapes(self.features)}{labels})"


def _record(item):
    """(features, label) of one record from a Sample, a pair or bare features (each one
    array or a list of several)."""
    if isinstance(item, Sample):
        return item.features, item.label
    if isinstance(item, tuple) and len(item) == 2:
        return _one_or_several(item[0]), None if item[1] is None else _one_or_several(item[1])
    return _one_or_several(item), None


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
            x = stack(feats, dtype or np.float32)
            y = None if labels[0] is None else stack(labels)
            feats.clear()
            labels.clear()
            return MiniBatch(x, y)

        for item in self.factory():
            if isinstance(item, MiniBatch):
                if feats:
                    yield flush()
                yield MiniBatch(each(lambda a: np.ascontiguousarray(a, dtype=dtype or
                                                                    np.float32), item.input),
                                item.target)
                continue
            f, lab = _record(item)
            if feats and (shapes(f) != shapes(feats[0]) or
                          (lab is None) != (labels[0] is None)):
                raise ValueError(f"DataSet.iterable: record {shapes(f)} differs from the "
                                 f"first of its batch {shapes(feats[0])}")
            feats.append(f)
            labels.append(lab)
            if len(feats) == batchSize:
                yield flush()
        if feats:
            yield flush()

    def epoch(self, batchSize, shuffle=False, dtype=None, generator=None):
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


def samples_arrays(records, what, dtype=None, need_labels=False):
    """(features, labels) stacked from records (Sample, (features, label) or bare features),
    each one array or a list of arrays; labels is None when the records have none."""
    feats, labels = zip(*(_record(r) for r in records), strict=True)
    first = shapes(feats[0])
    for f in feats:
        if shapes(f) != first:
            raise ValueError(f"{what}: samples have different feature shapes "
                             f"{[first, shapes(f)]}")
    missing = sum(lab is None for lab in labels)
    if missing:
        if need_labels:
            raise ValueError(f"{what}: {missing} of the {len(labels)} samples have no label")
        if missing < len(labels):
            raise ValueError(f"{what}: some samples have a label and some do not")
        return stack(feats, dtype), None
    first = shapes(labels[0])
    for lab in labels:
        if shapes(lab) != first:
            raise ValueError(f"{what}: samples have different label shapes "
                             f"{[first, shapes(lab)]}")
    return stack(feats, dtype), stack(labels)


def to_dataset(data, what="dataset", need_labels=False) -> DataSet:
    """A DataSet from any local form: a DataSet, features (an array, or a list of arrays
    for a model with several inputs), an (features, labels) pair, or a list of Samples."""
    if isinstance(data, DataSet):
        return data
    if isinstance(data, np.ndarray) or (isinstance(data, list) and several(data)):
        if need_labels:
            raise ValueError(f"{what}: a features array has no labels; pass (features, "
                             f"labels), a list of Sample or a DataSet")
        return ArrayDataSet(data, _stream=False)
    if isinstance(data, tuple) and len(data) == 2:
        return ArrayDataSet(data[0], data[1], _stream=False)
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{what}: the list of samples is empty")
        if not all(isinstance(s, Sample) for s in data):
            bad = next(s for s in data if not isinstance(s, Sample))
            raise TypeError(f"{what}: a list must hold Samples, found {type(bad).__name__}")
        features, labels = samples_arrays(data, what)
        return ArrayDataSet(features, labels, _stream=False)
    if type(data).__module__.startswith("pyspark"):
        if type(data).__name__ == "DataFrame":
            raise TypeError(f"{what}: got a Spark DataFrame; train and predict on DataFrames "
                            f"with pymodules.spark.ml (NNEstimator, NNClassifier, NNModel), "
                            f"or pass an RDD of Sample: df.rdd.map(lambda row: "
                            f"pm.Sample(features, label)), with the features and label taken "
                            f"from the row")
        raise TypeError(f"{what}: got a pyspark {type(data).__name__}; pymodules takes an "
                        f"RDD of Sample")
    raise TypeError(f"{what}: expected a DataSet, a numpy array, a (features, labels) pair "
                    f"or a list of Sample, got {type(data).__name__}")
