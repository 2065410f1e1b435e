"""Validation methods, their results, and evaluate/predict over a dataset.

A method maps (output, target) of one batch to a result; results add with ``+`` and
``result()`` gives ``(value, count)``.
"""

from __future__ import annotations

import numpy as np

from pymodules.criterion.base import label_values_fit
from pymodules.data import to_dataset
from pymodules.nn.module import Module
from pymodules.threads import StepThreads, blas_threads, getNumThreads

#: Batch of evaluate/predict when none is given: large enough to keep BLAS busy.
DEFAULT_BATCH = 256

#: What a module without children answers to children().
_LEAF_CHILDREN = Module.children


class ValidationResult:
    def result(self):
        raise NotImplementedError

    def __add__(self, other):
        raise NotImplementedError

    def __radd__(self, other):
        # sum(results) starts from 0
        return self if isinstance(other, int) and other == 0 else NotImplemented


class AccuracyResult(ValidationResult):
    def __init__(self, correct, count):
        self.correct, self.count = int(correct), int(count)

    def result(self):
        return (self.correct / self.count if self.count else 0.0), self.count

    def __add__(self, other):
        if not isinstance(other, AccuracyResult):
            return NotImplemented
        return AccuracyResult(self.correct + other.correct, self.count + other.count)

    def __eq__(self, other):
        return isinstance(other, AccuracyResult) and \
            (self.correct, self.count) == (other.correct, other.count)

    def __repr__(self):
        return (f"Accuracy(correct: {self.correct}, count: {self.count}, "
                f"accuracy: {self.result()[0]:.6g})")


class ContiguousResult(ValidationResult):
    """A sum of per-sample values over ``count`` samples; the value is their mean."""

    def __init__(self, total, count, name="Loss"):
        self.total, self.count, self.name = float(total), int(count), name

    def result(self):
        return (self.total / self.count if self.count else 0.0), self.count

    def __add__(self, other):
        if not isinstance(other, ContiguousResult) or other.name != self.name:
            return NotImplemented
        return ContiguousResult(self.total + other.total, self.count + other.count, self.name)

    def __repr__(self):
        return f"({self.name}: {self.total:.6g}, count: {self.count}, " \
               f"Average {self.name}: {self.result()[0]:.6g})"


LossResult = ContiguousResult


def _rows(output):
    output = np.asarray(output)
    return output.reshape(1, -1) if output.ndim == 1 else output.reshape(len(output), -1)


def _labels(target, n, what):
    t = np.asarray(target).reshape(-1)
    if t.size != n:
        raise ValueError(f"{what}: target has {t.size} labels, expected {n} (one per row "
                         f"of the output)")
    if t.dtype.kind == "f":
        label_values_fit(t, f"{what}: target")
    elif t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what}: target {t.max()} is too large for a class label")
    return t.astype(np.int64, copy=False)


def _check_range(labels, k, what, padding):
    """Raise for a label outside [0, k) other than ``padding``; the mask of the rows that
    count (None when all do)."""
    pad = labels == padding
    bad = ((labels < 0) | (labels >= k)) & ~pad
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: target {labels[i]} (row {i}) is out of range [0, {k}) "
                         f"and is not the padding value {padding}")
    return ~pad if pad.any() else None


class _ClassMethod:
    """A validation method of class targets: rows labelled ``paddingValue`` (API.md, as
    ClassNLLCriterion's: default -1) count for nothing, neither correct nor in the count."""

    def __init__(self, paddingValue=-1):
        from pymodules.nn.module import whole

        self.paddingValue = whole(type(self).__name__, "paddingValue", paddingValue)


class ValidationMethod:
    def __call__(self, output, target) -> ValidationResult:
        raise NotImplementedError

    def name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        return self.name()


class Top1Accuracy(_ClassMethod, ValidationMethod):
    """Share of rows whose arg-max class is the 0-based target (one output column:
    a probability, thresholded at 0.5 against 0/1 targets). Rows labelled
    ``paddingValue`` (default -1) are skipped, as the class criteria skip them."""

    def __call__(self, output, target):
        out = _rows(output)
        labels = _labels(target, len(out), self.name())
        keep = _check_range(labels, 2 if out.shape[1] == 1 else out.shape[1], self.name(),
                            self.paddingValue)
        if keep is not None:
            out, labels = out[keep], labels[keep]
        if out.shape[1] == 1:
            pred = (out[:, 0] >= 0.5).astype(np.int64)
        else:
            pred = out.argmax(axis=1)
        return AccuracyResult(int((pred == labels).sum()), len(out))


class Top5Accuracy(_ClassMethod, ValidationMethod):
    """Share of rows whose target is among the five highest-scoring classes. Rows labelled
    ``paddingValue`` (default -1) are skipped, as the class criteria skip them."""

    def __call__(self, output, target):
        out = _rows(output)
        labels = _labels(target, len(out), self.name())
        keep = _check_range(labels, out.shape[1], self.name(), self.paddingValue)
        if keep is not None:
            out, labels = out[keep], labels[keep]
        k = min(5, out.shape[1])
        # the target's rank: how many classes score strictly higher
        score = out[np.arange(len(out)), labels]
        higher = (out > score[:, None]).sum(axis=1)
        return AccuracyResult(int((higher < k).sum()), len(out))


class TreeNNAccuracy(_ClassMethod, ValidationMethod):
    """Top-1 accuracy at the root of tree-structured output (batch, nodes, classes):
    the first node of each sample against the first label of its target (skipped when it
    is ``paddingValue``, default -1)."""

    def __call__(self, output, target):
        out = np.asarray(output)
        if out.ndim != 3:
            raise ValueError(f"{self.name()}: output has shape {out.shape}, expected "
                             f"(batch, nodes, classes)")
        t = np.asarray(target)
        root = t.reshape(len(t), -1)[:, 0] if t.ndim > 1 else t
        return Top1Accuracy(self.paddingValue)(out[:, 0, :], root)


class Loss(ValidationMethod):
    """The criterion's loss, averaged over samples (ClassNLLCriterion by default). With a
    class criterion, rows labelled its ``paddingValue`` count for nothing, as in the
    criterion."""

    def __init__(self, criterion=None):
        if criterion is None:
            from pymodules.criterion import ClassNLLCriterion

            criterion = ClassNLLCriterion()
        self.criterion = criterion

    def __call__(self, output, target):
        first = output[0] if isinstance(output, list) else output  # several outputs
        n = len(first) if np.ndim(first) > 1 else 1
        loss = self.criterion.forward(output, target)
        padding = getattr(self.criterion, "paddingValue", None)
        if padding is not None and isinstance(target, np.ndarray):
            n = int(np.count_nonzero(target != padding))
        return ContiguousResult(loss * n, n, "Loss")


class MAE(ValidationMethod):
    """Mean absolute error of output against target, per element."""

    def __call__(self, output, target):
        out = np.asarray(output)
        t = np.asarray(target).reshape(out.shape) if np.size(target) == out.size else None
        if t is None:
            raise ValueError(f"MAE: target has shape {np.shape(target)}, expected "
                             f"{out.shape} like the output")
        n = len(out) if out.ndim > 1 else 1
        per_sample = np.abs(out - t).sum() / (out.size / n)
        return ContiguousResult(per_sample, n, "MAE")


def validation_methods(vMethods) -> list[ValidationMethod]:
    """``vMethods`` (one ValidationMethod, a list or tuple of them, or None for
    Top1Accuracy) as a list, each checked."""
    if vMethods is None:
        return [Top1Accuracy()]
    methods = list(vMethods) if isinstance(vMethods, (list, tuple)) else [vMethods]
    for m in methods:
        if not isinstance(m, ValidationMethod):
            raise TypeError(f"vMethods must hold ValidationMethods, got {type(m).__name__}")
    return methods


def is_rdd(data) -> bool:
    """Whether ``data`` is a pyspark RDD, checked without importing pyspark."""
    return type(data).__module__.startswith("pyspark") and hasattr(data, "mapPartitions")


def _batch_size(batchSize):
    return DEFAULT_BATCH if batchSize is None else batchSize


def evaluate_dataset(module, dataset, vMethods, batchSize=None):
    """Eval mode, then every method over the dataset: [(result, method), ...]."""
    methods = validation_methods(vMethods)
    if is_rdd(dataset):
        from pymodules import spark

        return spark.evaluate(module, dataset, methods, batchSize)
    data = to_dataset(dataset, "evaluate", need_labels=True)
    module.evaluate()
    results = [None] * len(methods)
    threads = StepThreads()
    try:
        for batch in data.batches(_batch_size(batchSize), dtype=module.dtype):
            if batch.target is None:
                raise ValueError("evaluate: the dataset has no labels")
            out = threads.run(module.forward, batch.input)
            for i, m in enumerate(methods):
                r = m(out, batch.target)
                results[i] = r if results[i] is None else results[i] + r
    finally:
        threads.close()
    return list(zip(results, methods, strict=True))


def predict_dataset(module, dataset, batchSize=None):
    """Eval mode; the outputs of every sample, batch-first (a batch of one keeps its axis).
    An RDD gives an RDD of per-sample outputs, in the order of its samples."""
    if type(dataset) is np.ndarray and _one_batch(dataset, batchSize):
        return _predict_array(module, dataset)
    if is_rdd(dataset):
        from pymodules import spark

        return spark.predict(module, dataset, batchSize)
    data = to_dataset(dataset, "predict")
    module.evaluate()
    threads = StepThreads()
    try:
        return _predict(module, data, batchSize, threads)
    finally:
        threads.close()


def _one_batch(x, batchSize):
    """Whether the features array ``x`` is one valid, non-empty batch of ``batchSize``."""
    if batchSize is None:
        limit = DEFAULT_BATCH
    elif type(batchSize) is int and batchSize > 0:
        limit = batchSize
    else:
        return False  # the general path names the problem
    return x.ndim > 0 and 0 < len(x) <= limit and x.dtype.kind in "fiub"


def _predict_array(module, x):
    """predict of a features array that fits in one batch: the general path's single step
    (eval mode, one BLAS thread, the output copied) without building a dataset, a batch
    iterator and the threads rule for one step; same results, same errors."""
    if x.dtype != module.dtype or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x, dtype=module.dtype)
    if _in_training(module):
        module.evaluate()
    if _on_one_thread():
        out = module.forward(x)
    else:
        threads = StepThreads()
        threads.before()
        try:
            out = module.forward(x)
        finally:
            threads.close()
    if isinstance(out, list):
        return [np.array(o, copy=True) for o in out]
    return _copied(module, out, len(x))


def _on_one_thread():
    """Whether the BLAS runs on one thread, as the rule's first step does: the process was
    given one (setNumThreads(1) set the BLAS so) or the BLAS uses one already."""
    if getNumThreads() == 1:
        return True
    counts = blas_threads()
    return counts.count(1) == len(counts)


def _in_training(module):
    """Whether a module of the tree is in training mode (a walk without generators, which
    asks only the modules that define children for them: LeNet-5's 14 modules are read in
    2.0 us, 2.6 us when every layer returns its empty list)."""
    stack = [module]
    while stack:
        m = stack.pop()
        if m._train:
            return True
        if type(m).children is not _LEAF_CHILDREN:
            stack.extend(m.children())
    return False


def _copied(module, out, m):
    """A copy of one batch's output (batch, ...) of ``m`` samples."""
    if out.ndim == 0 or (out.ndim == 1 and m > 1):
        raise ValueError(f"predict: {module.getName()} returned shape {out.shape} "
                         f"for a batch of {m}")
    if out.ndim == 1:  # a module that drops the batch axis of a batch of one
        return out.reshape(1, -1).copy()
    return out.copy()


def _predict(module, data, batchSize, threads):
    n = data.size()
    result = None
    parts = []
    start = 0
    for batch in data.batches(_batch_size(batchSize), dtype=module.dtype):
        out = threads.run(module.forward, batch.input)
        m = batch.size()
        if isinstance(out, list):
            parts.append([np.array(o, copy=True) for o in out])
            continue
        if out.ndim == 0 or (out.ndim == 1 and m > 1):
            raise ValueError(f"predict: {module.getName()} returned shape {out.shape} "
                             f"for a batch of {m}")
        if out.ndim == 1:  # a module that drops the batch axis of a batch of one
            out = out.reshape(1, -1)
        if n is None:
            parts.append(np.array(out, copy=True))
            continue
        if result is None:
            result = np.empty((n,) + out.shape[1:], out.dtype)
        result[start:start + m] = out
        start += m
    if parts and isinstance(parts[0], list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    return result if n is not None else np.concatenate(parts)


def predict_class_dataset(module, dataset, batchSize=None):
    """Eval mode; the arg-max class of every sample, 0-based int64 (an RDD of ints for an
    RDD)."""
    if is_rdd(dataset):
        from pymodules import spark

        return spark.predict_class(module, dataset, batchSize)
    out = predict_dataset(module, dataset, batchSize)
    if isinstance(out, list):
        raise ValueError("predictClass: the module has several outputs")
    return out.reshape(len(out), -1).argmax(axis=1)
