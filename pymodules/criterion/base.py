"""The Criterion contract: a loss of (input, target) and its gradient w.r.t. the input."""

from __future__ import annotations

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.facade import REFUSALS, Facade, contiguous, has_gate, in_use
from pymodules.recorded import Recorded


class Criterion(Facade, Recorded):
    """Base of every criterion (BigDL's AbstractCriterion).

    ``forward(input, target)`` returns the loss as a float (kept in ``output``);
    ``backward(input, target)`` returns ``gradInput``, reused in place by the next call.
    ``updateOutput``/``updateGradInput`` are kernel calls; ``pymodules.facade`` names the
    criterion in a kernel's refusal.
    """

    _GATED = ("updateOutput", "updateGradInput", "forward", "backward")

    def __init__(self, sizeAverage=True):
        self.sizeAverage = bool(sizeAverage)
        self.output = 0.0
        self.gradInput = np.empty(0, np.float32)
        # True while forward or backward runs (see Module.__init__).
        self._busy = False

    @has_gate
    def forward(self, input, target) -> float:
        if self._busy:
            raise in_use(self, "forward")
        self._busy = True
        try:
            loss = self._updateOutput(input, target)
        except REFUSALS as err:
            loss = self._refused(err, self.updateOutput, (input, target))
        finally:
            self._busy = False
        self.output = float(loss)
        return self.output

    @has_gate
    def backward(self, input, target):
        if self._busy:
            raise in_use(self, "backward")
        self._busy = True
        try:
            gradInput = self._updateGradInput(input, target)
        except REFUSALS as err:
            gradInput = self._refused(err, self.updateGradInput, (input, target))
        finally:
            self._busy = False
        self.gradInput = gradInput
        return gradInput

    def updateOutput(self, input, target) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define updateOutput")

    def updateGradInput(self, input, target):
        raise NotImplementedError(f"{type(self).__name__} does not define updateGradInput")

    # The raw methods forward and backward run inside their own gate.
    _updateOutput = updateOutput
    _updateGradInput = updateGradInput

    def cloneCriterion(self) -> Criterion:
        import copy

        clone = copy.deepcopy(self)
        clone._busy = False  # a copy taken while this one runs is idle
        return clone

    #: per-class or per-element weights of the criteria that take them (None: unweighted).
    weights = None

    # -- buffers and errors --------------------------------------------------------------
    def _weights_for(self, input):
        """``weights`` in ``input``'s dtype (converted once, when the dtype changes)."""
        w = self.weights
        if w is not None and w.dtype != getattr(input, "dtype", w.dtype):
            w = self.weights = w.astype(input.dtype)
        return w

    def _grad_like(self, input) -> np.ndarray:
        """gradInput reshaped to ``input``, reused when it already fits."""
        return resized(self.gradInput, input, -1, getattr(input, "dtype", np.float32))

    def _fixed(self, args):
        """(input, target) as the kernels take them: a contiguous float input, a target of
        its dtype; None when they already were."""
        input, target = args
        x = contiguous(input, "input")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"input has dtype {x.dtype}, expected float32 or float64")
        t = self._convert_target(target, x)
        return None if x is input and t is target else [x, t]

    def _convert_target(self, target, input):
        """``target`` as a contiguous array of ``input``'s dtype (or itself if it already is)."""
        if isinstance(target, np.ndarray) and target.dtype == input.dtype \
                and target.flags.c_contiguous:
            return target
        return np.ascontiguousarray(target, dtype=input.dtype)

    def extraRepr(self) -> str:
        return ""

    def __str__(self) -> str:
        extra = self.extraRepr()
        return f"{type(self).__name__}({extra})" if extra else type(self).__name__

    __repr__ = __str__


def class_labels(target, what: str = "target") -> np.ndarray:
    """``target`` as a contiguous int64 label vector; float labels must be whole numbers.

    A label that int64 cannot hold (NaN, an infinity, 1e300, a uint64 above 2^63 - 1) is
    refused naming its value: cast, it would become some other label.
    """
    if isinstance(target, np.ndarray) and target.dtype == np.int64 \
            and target.flags.c_contiguous:
        return target
    t = np.asarray(target)
    if t.dtype.kind == "f":
        label_values_fit(t.ravel(), what)
    elif t.dtype.kind not in "iub":
        raise TypeError(f"{what} has dtype {t.dtype}, expected integer class labels")
    elif t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what} {t.max()} is too large for a class label")
    return np.ascontiguousarray(t, dtype=np.int64)


def label_values_fit(flat: np.ndarray, what: str = "target") -> None:
    """ValueError naming the first of the float labels ``flat`` that is not finite, not
    whole or too large for int64 (class labels and validation targets)."""
    whole = flat == np.round(flat)  # False for NaN
    fits = (flat >= -2.0 ** 63) & (flat < 2.0 ** 63)  # False for NaN and the infinities
    bad = np.flatnonzero(~(whole & fits))
    if bad.size:
        v = flat[bad[0]]
        kind = ("finite" if not np.isfinite(v) else
                "whole" if v != np.round(v) else "representable (int64)")
        raise ValueError(f"{what} {v} is not a {kind} class label")
