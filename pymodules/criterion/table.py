"""Criteria over a list of two inputs: Gaussian KL divergence and cosine embedding."""

import numpy as np

from pymodules.criterion.base import Criterion
from pymodules.engine import criterion as K
from pymodules.engine.buffers import resized


def _pair(criterion, input, names):
    if not isinstance(input, (list, tuple)) or len(input) != 2:
        raise TypeError(f"{criterion}: input must be a list [{names}], got "
                        f"{type(input).__name__}"
                        + (f" of {len(input)}" if isinstance(input, (list, tuple)) else ""))
    a, b = input
    for x in (a, b):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{criterion}: inputs must be numpy.ndarray, got {type(x).__name__}")
    return a, b


class _TableCriterion(Criterion):
    def __init__(self, sizeAverage):
        super().__init__(sizeAverage)
        self.gradInput = [np.empty(0, np.float32), np.empty(0, np.float32)]

    def _grads(self, a, b):
        g = self.gradInput
        g[0] = resized(g[0], a, -1, a.dtype)
        g[1] = resized(g[1], b, -1, b.dtype)
        return g

    def _fixed(self, args):
        """[x1, x2] contiguous, x2 in x1's dtype, and the target too; None if they were."""
        input, target = args
        a, b = _pair(self, input, "x1, x2")
        fixed = [np.ascontiguousarray(a), np.ascontiguousarray(b, dtype=a.dtype)]
        t = target if target is None else self._convert_target(target, a)
        if fixed[0] is a and fixed[1] is b and t is target:
            return None
        return [fixed, t]


class KLDCriterion(_TableCriterion):
    """KL divergence of N(mean, exp(logVar)) from N(0, 1): input [mean, logVar], target
    unused; divided by the batch size when sizeAverage."""

    def __init__(self, sizeAverage=True):
        super().__init__(sizeAverage)

    def updateOutput(self, input, target=None):
        mean, log_var = _pair(self, input, "mean, logVar")
        return K.kld_update_output(mean, log_var, self.sizeAverage)

    def updateGradInput(self, input, target=None):
        mean, log_var = _pair(self, input, "mean, logVar")
        g = self._grads(mean, log_var)
        K.kld_update_grad_input(mean, log_var, g[0], g[1], self.sizeAverage)
        return g


class CosineEmbeddingCriterion(_TableCriterion):
    """Input [x1, x2], target y = +-1 per row: 1 - cos(x1, x2) for y = 1,
    max(0, cos(x1, x2) - margin) for y = -1; averaged over rows when sizeAverage."""

    def __init__(self, margin=0.0, sizeAverage=True):
        super().__init__(sizeAverage)
        self.margin = float(margin)

    def updateOutput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        return K.cosine_embedding_update_output(a, b, target, self.margin, self.sizeAverage)

    def updateGradInput(self, input, target):
        a, b = _pair(self, input, "x1, x2")
        g = self._grads(a, b)
        K.cosine_embedding_update_grad_input(a, b, target, g[0], g[1], self.margin,
                                             self.sizeAverage)
        return g

    def extraRepr(self):
        return f"margin={self.margin}"
