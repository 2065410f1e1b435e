"""Criteria made of criteria: weighted sums over a table or over one input, and time steps."""

import numpy as np

from pymodules.criterion.base import Criterion
from pymodules.nn.module import whole


def _accumulate(acc, g, weight):
    """acc += weight * g, for arrays or nested lists of arrays (acc updated in place)."""
    if isinstance(g, list):
        for a, b in zip(acc, g, strict=True):
            _accumulate(a, b, weight)
    else:
        acc += weight * g if weight != 1 else g


def _like(g):
    return [_like(a) for a in g] if isinstance(g, list) else np.zeros_like(g)


def _zero(acc, g):
    """``acc`` refilled with zeros in ``g``'s shapes; reused when the shapes agree."""
    if isinstance(g, list):
        if not isinstance(acc, list) or len(acc) != len(g):
            return _like(g)
        return [_zero(a, b) for a, b in zip(acc, g, strict=True)]
    if not isinstance(acc, np.ndarray) or acc.shape != g.shape or acc.dtype != g.dtype:
        return np.zeros_like(g)
    acc.fill(0)
    return acc


class ParallelCriterion(Criterion):
    """sum_i weight_i * criterion_i(input[i], target[i]) (target repeated when repeatTarget)."""

    def __init__(self, repeatTarget=False):
        super().__init__()
        self.repeatTarget = bool(repeatTarget)
        self.criterions, self.weights = [], []
        self.gradInput = []

    def add(self, criterion, weight=1.0):
        self.criterions.append(criterion)
        self.weights.append(float(weight))
        return self

    def _target(self, target, i):
        return target if self.repeatTarget else target[i]

    def _check(self, input):
        if not isinstance(input, (list, tuple)) or len(input) != len(self.criterions):
            got = len(input) if isinstance(input, (list, tuple)) else type(input).__name__
            raise ValueError(f"{self}: input must be a list of {len(self.criterions)} "
                             f"(one per criterion), got {got}")

    def _triples(self, input):
        return zip(self.criterions, self.weights, input, strict=True)

    def updateOutput(self, input, target):
        self._check(input)
        return sum(w * c.forward(x, self._target(target, i))
                   for i, (c, w, x) in enumerate(self._triples(input)))

    def updateGradInput(self, input, target):
        self._check(input)
        grads = self.gradInput if isinstance(self.gradInput, list) else []
        grads = grads[:len(input)] + [None] * (len(input) - len(grads))
        for i, (c, w, x) in enumerate(self._triples(input)):
            g = c.backward(x, self._target(target, i))
            grads[i] = _zero(grads[i], g)
            _accumulate(grads[i], g, w)
        self.gradInput = grads
        return grads

    def extraRepr(self):
        return ", ".join(f"{w} * {c}" for c, w in zip(self.criterions, self.weights, strict=True))


class MultiCriterion(Criterion):
    """sum_i weight_i * criterion_i(input, target): several losses of the same output."""

    def __init__(self):
        super().__init__()
        self.criterions, self.weights = [], []
        self.gradInput = None

    def add(self, criterion, weight=1.0):
        self.criterions.append(criterion)
        self.weights.append(float(weight))
        return self

    def updateOutput(self, input, target):
        pairs = zip(self.criterions, self.weights, strict=True)
        return sum(w * c.forward(input, target) for c, w in pairs)

    def updateGradInput(self, input, target):
        acc = None
        for c, w in zip(self.criterions, self.weights, strict=True):
            g = c.backward(input, target)
            if acc is None:
                acc = self.gradInput = _zero(self.gradInput, g)
            _accumulate(acc, g, w)
        return acc

    def extraRepr(self):
        return ", ".join(f"{w} * {c}" for c, w in zip(self.criterions, self.weights, strict=True))


class TimeDistributedCriterion(Criterion):
    """Apply ``critrn`` to every time step of input and target along ``dimension`` (0-based,
    default 1: (batch, time, ...)); sum the losses, divide by the steps when sizeAverage."""

    def __init__(self, critrn, sizeAverage=False, dimension=1):
        super().__init__(sizeAverage)
        self.critrn = critrn
        self.dimension = whole(self, "dimension", dimension)
        self._steps = []

    def _check(self, input, target):
        if not isinstance(input, np.ndarray):
            raise TypeError(f"{self}: input must be a numpy.ndarray, got {type(input).__name__}")
        if not 0 <= self.dimension < input.ndim:
            raise ValueError(f"{self}: dimension {self.dimension} is out of range for input "
                             f"of shape {input.shape}")
        target = np.asarray(target)
        steps = input.shape[self.dimension]
        if target.ndim <= self.dimension or target.shape[self.dimension] != steps:
            raise ValueError(f"{self}: target has shape {target.shape}, expected "
                             f"{steps} steps along dimension {self.dimension} like input "
                             f"{input.shape}")
        return target, steps

    def _step(self, a, t):
        # A time slice is strided: criteria take contiguous arrays.
        return np.ascontiguousarray(np.take(a, t, axis=self.dimension))

    def updateOutput(self, input, target):
        target, steps = self._check(input, target)
        loss = sum(self.critrn.forward(self._step(input, t), self._step(target, t))
                   for t in range(steps))
        return loss / steps if self.sizeAverage and steps else loss

    def updateGradInput(self, input, target):
        target, steps = self._check(input, target)
        g = self.gradInput = self._grad_like(input)
        scale = 1.0 / steps if self.sizeAverage and steps else 1.0
        idx = [slice(None)] * input.ndim
        for t in range(steps):
            x, y = self._step(input, t), self._step(target, t)
            # the inner criterion may rely on its forward cache (CrossEntropyCriterion)
            self.critrn.forward(x, y)
            idx[self.dimension] = t
            np.multiply(self.critrn.backward(x, y), scale, out=g[tuple(idx)])
        return g

    def extraRepr(self):
        return f"{self.critrn}, dimension={self.dimension}"
