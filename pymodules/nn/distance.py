"""Products and distances: DotProduct, CosineDistance, PairwiseDistance, MM, MV (tables of two
arrays) and Euclidean (distances to learnt centres).

The table modules follow the dtype of their input, as the other table modules do. The row-wise
ones take two vectors (d,) and give (1,), or two batches (n, d) and give (n,).
"""

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.distance import (
    cosine_distance_update_grad_input,
    cosine_distance_update_output,
    dot_update_grad_input,
    dot_update_output,
    euclidean_acc_grad_parameters,
    euclidean_update_grad_input,
    euclidean_update_output,
    mm_update_grad_input,
    mm_update_output,
    mv_update_grad_input,
    mv_update_output,
    pairwise_distance_update_grad_input,
    pairwise_distance_update_output,
)
from pymodules.nn.initializable import Initializable
from pymodules.nn.module import Module, whole
from pymodules.nn.table import _grad_buffers, _table


def _pair(input):
    """The two arrays of a table of two."""
    x = _table(None, input, 2)
    if len(x) != 2:
        raise ValueError(f"input has {len(x)} entries, expected 2")
    return x[0], x[1]


class _PairModule(Module):
    """A parameterless module of a table of two arrays."""

    _tables = True

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self.gradInput = []

    def _grads(self, x1, x2):
        gi = self.gradInput = _grad_buffers(self.gradInput, (x1, x2))
        return gi


class _RowWise(_PairModule):
    """One number per row of two inputs: (d,), (d,) -> (1,); (n, d), (n, d) -> (n,)."""

    _forward = _backward = None

    def _out(self, x1):
        n = x1.shape[0] if x1.ndim == 2 else 1
        out = self.output = resized(self.output, (n,), -1, x1.dtype)
        return out

    def updateOutput(self, input):
        x1, x2 = _pair(input)
        out = self._out(x1)
        self._forward(x1, x2, out, *self._args())
        return out

    def updateGradInput(self, input, gradOutput):
        x1, x2 = _pair(input)
        g1, g2 = self._grads(x1, x2)
        self._backward(x1, x2, gradOutput, g1, g2, *self._args())
        return self.gradInput

    def _args(self):
        return ()


class DotProduct(_RowWise):
    """The dot product of the rows of two inputs: ``[x1, x2] -> sum(x1 * x2, last axis)``."""

    _forward = staticmethod(dot_update_output)
    _backward = staticmethod(dot_update_grad_input)


class CosineDistance(_RowWise):
    """The cosine similarity of the rows of two inputs:
    ``x1 . x2 / sqrt((|x1|^2 + 1e-12) (|x2|^2 + 1e-12))``."""

    _forward = staticmethod(cosine_distance_update_output)
    _backward = staticmethod(cosine_distance_update_grad_input)


class PairwiseDistance(_RowWise):
    """The ``norm``-distance of the rows of two inputs: ``|x1 - x2|_norm`` (norm >= 1).

    The gradient divides by the distance plus 1e-6, as BigDL's; for norm 1 it is the sign of
    the difference (0 where they are equal).
    """

    def __init__(self, norm=2, dtype=np.float32):
        super().__init__(dtype)
        self.norm = whole(self, "norm", norm)
        if self.norm < 1:
            raise ValueError(f"PairwiseDistance: norm must be >= 1, got {norm}")

    def updateOutput(self, input):
        x1, x2 = _pair(input)
        out = self._out(x1)
        pairwise_distance_update_output(x1, x2, out, self.norm)
        return out

    def updateGradInput(self, input, gradOutput):
        x1, x2 = _pair(input)
        g1, g2 = self._grads(x1, x2)
        pairwise_distance_update_grad_input(x1, x2, self.output, gradOutput, g1, g2, self.norm)
        return self.gradInput

    def extraRepr(self):
        return f"{self.norm}"


class MM(_PairModule):
    """Matrix product of a table ``[A, B]``: ``op(A) @ op(B)``, each a matrix or a batch of
    them (b, ., .); op transposes A when ``transA``, B when ``transB``."""

    def __init__(self, transA=False, transB=False, dtype=np.float32):
        super().__init__(dtype)
        self.transA, self.transB = bool(transA), bool(transB)

    def updateOutput(self, input):
        a, b = _pair(input)
        shape = (0,)
        if a.ndim in (2, 3) and b.ndim == a.ndim:
            m = a.shape[-1] if self.transA else a.shape[-2]
            n = b.shape[-2] if self.transB else b.shape[-1]
            shape = a.shape[:-2] + (m, n)
        out = self.output = resized(self.output, shape, -1, a.dtype)
        mm_update_output(a, b, out, self.transA, self.transB)
        return out

    def updateGradInput(self, input, gradOutput):
        a, b = _pair(input)
        ga, gb = self._grads(a, b)
        mm_update_grad_input(a, b, gradOutput, ga, gb, self.transA, self.transB)
        return self.gradInput

    def extraRepr(self):
        return f"transA={self.transA}, transB={self.transB}"


class MV(_PairModule):
    """Matrix-vector product of a table ``[M, v]``: ``op(M) @ v`` for M (r, c) and v, or a
    batch M (b, r, c) and v (b, .); op transposes M when ``trans``."""

    def __init__(self, trans=False, dtype=np.float32):
        super().__init__(dtype)
        self.trans = bool(trans)

    def updateOutput(self, input):
        mat, v = _pair(input)
        shape = (0,)
        if mat.ndim in (2, 3):
            shape = mat.shape[:-2] + (mat.shape[-1] if self.trans else mat.shape[-2],)
        out = self.output = resized(self.output, shape, -1, mat.dtype)
        mv_update_output(mat, v, out, self.trans)
        return out

    def updateGradInput(self, input, gradOutput):
        mat, v = _pair(input)
        gm, gv = self._grads(mat, v)
        mv_update_grad_input(mat, v, gradOutput, gm, gv, self.trans)
        return self.gradInput

    def extraRepr(self):
        return f"trans={self.trans}"


class Euclidean(Initializable):
    """``y[j] = |x - weight[:, j]|``: the distances of an input (inputSize,) or of each row of
    a batch (batch, inputSize) to ``outputSize`` centres, the columns of weight
    (inputSize, outputSize).

    Gradients divide by the distance plus 1e-7, as BigDL's. ``fastBackward`` is accepted as in
    BigDL; backward always reads the output of the forward that ran before it. Default init:
    uniform in +-1/sqrt(inputSize).
    """

    _params = (("weight", "gradWeight"),)
    _scratch = ("_g",)

    def __init__(self, inputSize, outputSize, fastBackward=True, dtype=np.float32):
        super().__init__(dtype)
        self.inputSize = whole(self, "inputSize", inputSize)
        self.outputSize = whole(self, "outputSize", outputSize)
        if self.inputSize <= 0 or self.outputSize <= 0:
            raise ValueError(f"Euclidean: sizes must be > 0, got {inputSize} -> {outputSize}")
        self.fastBackward = bool(fastBackward)
        self._g = None
        self._fans = (self.inputSize, self.outputSize)
        self._build((self.inputSize, self.outputSize), None)

    def _scratch_row(self):
        g = self._g = resized(self._g, (self.outputSize,), -1, self.dtype)
        return g

    def updateOutput(self, input):
        out = self.output = resized(self.output, input, self.outputSize, self.dtype)
        euclidean_update_output(input, out, self.weight)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input, -1, self.dtype)
        euclidean_update_grad_input(input, self.output, gradOutput, gi, self.weight,
                                    self._scratch_row())
        return gi

    def accGradParameters(self, input, gradOutput):
        euclidean_acc_grad_parameters(input, self.output, gradOutput, self.gradWeight,
                                      self.weight, self._scratch_row(), self.scaleW)

    def extraRepr(self):
        return f"{self.inputSize}, {self.outputSize}"
