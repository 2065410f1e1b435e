"""The Criterion contract: a loss of (input, target) and its gradient w.r.t. the input."""

from __future__ import annotations

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.recorded import Recorded


class Criterion(Recorded):
    """Base of every criterion (BigDL's AbstractCriterion).

    ``forward(input, target)`` returns the loss as a float (kept in ``output``);
    ``backward(input, target)`` returns ``gradInput``, reused in place by the next call.
    """

    def __init__(self, sizeAverage=True):
        self.sizeAverage = bool(sizeAverage)
        self.output = 0.0
        self.gradInput = np.empty(0, np.float32)

    def forward(self, input, target) -> float:
        self.output = float(self.updateOutput(input, target))
        return self.output

    def backward(self, input, target):
        self.gradInput = self.updateGradInput(input, target)
        return self.gradInput

    def updateOutput(self, input, target) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not define updateOutput")

    def updateGradInput(self, input, target):
        raise NotImplementedError(f"{type(self).__name__} does not define updateGradInput")

    def cloneCriterion(self) -> Criterion:
        import copy

        return copy.deepcopy(self)

    # -- buffers and errors --------------------------------------------------------------
    def _grad_like(self, input) -> np.ndarray:
        """gradInput reshaped to ``input``, reused when it already fits."""
        return resized(self.gradInput, input, -1, getattr(input, "dtype", np.float32))

    def _recover(self, err: Exception, method, input, target):
        """A kernel refused (input, target): retry with a contiguous input and a target of the
        input's float type (a label vector becomes int64), otherwise re-raise with our name."""
        if not isinstance(input, np.ndarray):
            raise TypeError(f"{self}: input must be a numpy.ndarray, got "
                            f"{type(input).__name__}") from None
        if input.dtype not in (np.float32, np.float64):
            raise TypeError(f"{self}: input has dtype {input.dtype}, expected float32 or "
                            f"float64") from None
        fixed_input = np.ascontiguousarray(input)
        fixed_target = self._convert_target(target, input)
        if fixed_input is not input or fixed_target is not target:
            return method(fixed_input, fixed_target)
        raise type(err)(f"{self}: {err}") from None

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
    """``target`` as a contiguous int64 label vector; float labels must be whole numbers."""
    if isinstance(target, np.ndarray) and target.dtype == np.int64 \
            and target.flags.c_contiguous:
        return target
    t = np.asarray(target)
    if t.dtype.kind == "f":
        bad = np.flatnonzero(t.ravel() != np.round(t.ravel()))
        if bad.size:
            raise ValueError(f"{what} {t.ravel()[bad[0]]} is not a whole class label")
    elif t.dtype.kind not in "iub":
        raise TypeError(f"{what} has dtype {t.dtype}, expected integer class labels")
    return np.ascontiguousarray(t, dtype=np.int64)
