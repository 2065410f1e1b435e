"""Keras names of optimizers, losses and metrics, and the objects ``compile`` makes of them.

``categorical_crossentropy`` takes probabilities (a model ending in softmax, as in Keras)
and one-hot target rows: it is ClassNLLCriterion(logProbAsInput=False) (probabilities
clamped to [1e-8, 1 - 1e-8] before the log) on the classes of the one-hot rows, which is
``-mean(sum(target * log(p)))`` for one-hot targets. Rows that are not one-hot are refused
(the kernel takes class labels). ``sparse_categorical_crossentropy`` is the same criterion
on 0-based class labels. ``accuracy`` takes either kind of target.
"""

from __future__ import annotations

import numpy as np

from pymodules import criterion as C
from pymodules.criterion.base import Criterion
from pymodules.optim import methods as M
from pymodules.validation import MAE, Loss, Top1Accuracy, Top5Accuracy, ValidationMethod

OPTIMIZERS = {
    "sgd": lambda: M.SGD(learningRate=0.01),
    "adam": M.Adam,
    "adagrad": lambda: M.Adagrad(learningRate=0.01),
    "rmsprop": lambda: M.RMSprop(learningRate=0.001, decayRate=0.9),
    "adadelta": lambda: M.Adadelta(decayRate=0.95, epsilon=1e-8),
    "adamax": lambda: M.Adamax(epsilon=1e-8),
}


def one_hot_labels(target, input, what):
    """The 0-based classes of one-hot ``target`` rows (class labels pass as they are)."""
    t = np.asarray(target)
    if t.ndim != np.ndim(input) or t.ndim == 0:
        return target
    flat = t.reshape(-1, t.shape[-1])
    labels = flat.argmax(axis=1)
    picked = flat[np.arange(len(flat)), labels]
    if not (np.all(picked == 1) and np.all(flat.sum(axis=1) == 1)):
        bad = int(np.flatnonzero((picked != 1) | (flat.sum(axis=1) != 1))[0])
        raise ValueError(f"{what}: target row {bad} is not one-hot ({flat[bad][:10]}...); "
                         f"categorical_crossentropy takes one-hot rows (class labels: "
                         f"sparse_categorical_crossentropy)")
    return labels.reshape(t.shape[:-1])


class KerasCategoricalCrossEntropy(Criterion):
    """Keras's categorical cross-entropy: probabilities (batch, classes) against one-hot
    rows (see the module docstring)."""

    def __init__(self):
        super().__init__(True)
        self._nll = C.ClassNLLCriterion(logProbAsInput=False)

    def updateOutput(self, input, target):
        return self._nll.forward(input, one_hot_labels(target, input, "categorical_crossentropy"))

    def updateGradInput(self, input, target):
        return self._nll.backward(input, one_hot_labels(target, input,
                                                        "categorical_crossentropy"))


LOSSES = {
    "categorical_crossentropy": KerasCategoricalCrossEntropy,
    "sparse_categorical_crossentropy": lambda: C.ClassNLLCriterion(logProbAsInput=False),
    "mse": C.MSECriterion, "mean_squared_error": C.MSECriterion,
    "mae": C.AbsCriterion, "mean_absolute_error": C.AbsCriterion,
    "binary_crossentropy": C.BCECriterion,
    "hinge": C.MarginCriterion,
    "squared_hinge": lambda: C.MarginCriterion(squared=True),
    "mape": C.MeanAbsolutePercentageCriterion,
    "mean_absolute_percentage_error": C.MeanAbsolutePercentageCriterion,
    "msle": C.MeanSquaredLogarithmicCriterion,
    "mean_squared_logarithmic_error": C.MeanSquaredLogarithmicCriterion,
    "kld": C.KullbackLeiblerDivergenceCriterion,
    "kullback_leibler_divergence": C.KullbackLeiblerDivergenceCriterion,
    "poisson": C.PoissonCriterion,
}


class Accuracy(Top1Accuracy):
    """Keras's "accuracy": Top1Accuracy of class labels or of one-hot rows."""

    def __call__(self, output, target):
        return super().__call__(output, one_hot_labels(target, output, "accuracy"))

    def name(self):
        return "Top1Accuracy"


METRICS = {"accuracy": Accuracy, "acc": Accuracy, "top5accuracy": Top5Accuracy,
           "top5_accuracy": Top5Accuracy, "mae": MAE}


def _named(owner, kind, table, value):
    if not isinstance(value, str):
        return value
    maker = table.get(value.lower())
    if maker is None:
        raise ValueError(f"{owner}: unknown {kind} {value!r}; known: "
                         f"{', '.join(sorted(table))}")
    return maker()


def optimizer(owner, value):
    v = _named(owner, "optimizer", OPTIMIZERS, value)
    if not isinstance(v, M.OptimMethod):
        raise TypeError(f"{owner}: optimizer must be a name or an OptimMethod, got "
                        f"{type(v).__name__}")
    return v


def loss(owner, value):
    v = _named(owner, "loss", LOSSES, value)
    if not isinstance(v, Criterion):
        raise TypeError(f"{owner}: loss must be a name or a Criterion, got "
                        f"{type(v).__name__}")
    return v


def metrics(owner, values, criterion):
    """The validation methods of ``values`` (names or ValidationMethods); "loss" is the
    compiled loss."""
    if values is None:
        return []
    values = [values] if isinstance(values, (str, ValidationMethod)) else list(values)
    out = []
    for v in values:
        if isinstance(v, str) and v.lower() == "loss":
            out.append(Loss(criterion))
            continue
        m = _named(owner, "metric", METRICS, v)
        if not isinstance(m, ValidationMethod):
            raise TypeError(f"{owner}: a metric is a name or a ValidationMethod, got "
                            f"{type(m).__name__}")
        out.append(m)
    return out
