"""Arithmetic layers: a constant added or multiplied, negation, and the elementwise quotient,
minimum and average of a table.

With ``inplace``, AddConstant, MulConstant and Negative write their output into the input and
their gradInput into gradOutput, as Torch does; AddConstant and MulConstant then also undo
their change to the input in updateGradInput (BigDL's behaviour), up to rounding. The table
layers follow the dtype of their input.
"""

import numpy as np

from pymodules.engine.arithmetic import affine_update_grad_input, affine_update_output
from pymodules.engine.buffers import resized
from pymodules.engine.table import (
    cave_update_grad_input,
    cave_update_output,
    cdiv_update_grad_input,
    cdiv_update_output,
    cmax_update_grad_input,
    cmin_update_output,
)
from pymodules.nn.module import Module
from pymodules.nn.table import _grad_buffers, _table, _TableModule


class _Affine(Module):
    """``y = x * scale + shift``, ``gradInput = gradOutput * scale``."""

    def __init__(self, scale, shift, inplace, dtype):
        super().__init__(dtype)
        self.inplace = bool(inplace)
        self._scale, self._shift = float(scale), float(shift)

    def updateOutput(self, input):
        out = input if self.inplace else resized(self.output, input, -1, self.dtype)
        affine_update_output(input, out, self._scale, self._shift)
        self.output = out
        return out

    def updateGradInput(self, input, gradOutput):
        gi = gradOutput if self.inplace else resized(self.gradInput, input, -1, self.dtype)
        affine_update_grad_input(gradOutput, gi, self._scale)
        self.gradInput = gi
        return gi


class AddConstant(_Affine):
    """``y = x + constant_scalar``."""

    def __init__(self, constant_scalar, inplace=False, dtype=np.float32):
        super().__init__(1.0, constant_scalar, inplace, dtype)
        self.constant_scalar = float(constant_scalar)

    def updateGradInput(self, input, gradOutput):
        gi = super().updateGradInput(input, gradOutput)
        if self.inplace:
            affine_update_output(input, input, 1.0, -self.constant_scalar)
        return gi

    def extraRepr(self):
        return f"{self.constant_scalar}" + (", inplace" if self.inplace else "")


class MulConstant(_Affine):
    """``y = scalar * x``."""

    def __init__(self, scalar, inplace=False, dtype=np.float32):
        # In place, the backward divides the input by the scalar to restore it.
        if inplace and float(scalar) == 0:
            raise ValueError("MulConstant: in place needs a scalar other than 0")
        super().__init__(scalar, 0.0, inplace, dtype)
        self.scalar = float(scalar)

    def updateGradInput(self, input, gradOutput):
        gi = super().updateGradInput(input, gradOutput)
        if self.inplace:
            affine_update_output(input, input, 1.0 / self.scalar, 0.0)
        return gi

    def extraRepr(self):
        return f"{self.scalar}" + (", inplace" if self.inplace else "")


class Negative(_Affine):
    """``y = -x``."""

    def __init__(self, inplace=False, dtype=np.float32):
        super().__init__(-1.0, 0.0, inplace, dtype)

    def extraRepr(self):
        return "inplace" if self.inplace else ""


class CDivTable(_TableModule):
    """Elementwise quotient of a two-array table: [x0, x1] -> x0 / x1."""

    def updateOutput(self, input):
        x = _pair(self, input)
        out = self.output = resized(self.output, x[0])
        cdiv_update_output(x[0], x[1], out)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _pair(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        cdiv_update_grad_input(x[0], x[1], gradOutput, gi[0], gi[1])
        return gi


def _pair(module, input):
    x = _table(module, input, 2)
    if len(x) != 2:
        raise ValueError(f"input has {len(x)} entries, expected 2")
    return x


class CMinTable(_TableModule):
    """Elementwise minimum of the arrays of a table; the gradient goes to the (first) argmin,
    and a NaN is the minimum, as in torch.minimum."""

    _scratch = ("_indices",)

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._indices = None

    def updateOutput(self, input):
        x = _table(self, input)
        out = self.output = resized(self.output, x[0])
        idx = self._indices = resized(self._indices, x[0].shape, -1, np.dtype(np.int32))
        cmin_update_output(x, out, idx)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        cmax_update_grad_input(gradOutput, gi, self._indices)
        return gi


class CAveTable(_TableModule):
    """Elementwise average of the arrays of a table (of one shape).

    ``inplace`` is accepted as in BigDL; the average is always written to this module's own
    buffer (as CAddTable's sum).
    """

    def __init__(self, inplace=False, dtype=np.float32):
        super().__init__(dtype)
        self.inplace = bool(inplace)

    def updateOutput(self, input):
        x = _table(self, input)
        out = self.output = resized(self.output, x[0])
        cave_update_output(x, out)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        cave_update_grad_input(gradOutput, gi)
        return gi
