"""Shape modules that copy: Tile, Reverse, Index, ExpandSize and Pack.

Like the modules of ``pymodules.nn.shape`` they follow the dtype of their input and take
0-based dimensions that count the batch axis (negative ones count from the end). Their
results are contiguous arrays of their own (ExpandSize too, where BigDL returns a view of
stride 0), so that the next kernel reads them as they are.
"""

import math

import numpy as np

from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.shape_ops import (
    expand_update_grad_input,
    expand_update_output,
    index_positions,
    index_update_grad_input,
    index_update_output,
    reverse_update_grad_input,
    reverse_update_output,
)
from pymodules.engine.table import join, split
from pymodules.facade import require_array
from pymodules.nn.module import Module, whole
from pymodules.nn.table import axis_of


def _grad_output(gradOutput, shape):
    """``gradOutput``, an array of ``shape`` (the forward's output); ValueError otherwise."""
    g = require_array(gradOutput, "gradOutput")
    if g.shape != shape:
        raise ValueError(f"gradOutput has shape {g.shape}, expected {shape}")
    return g


class Tile(Module):
    """Repeats the input ``copies`` times along axis ``dim``: the whole input again after
    itself (numpy's ``tile``), so that axis grows ``copies`` times. The gradient sums the
    copies."""

    def __init__(self, dim=0, copies=2, dtype=np.float32):
        super().__init__(dtype)
        self.dim, self.copies = whole(self, "dim", dim), whole(self, "copies", copies)
        if self.copies < 1:
            raise ValueError(f"Tile: copies must be >= 1, got {copies}")
        self._split = (1, 1)  # (outer, rest) of the input around the axis, set by forward

    def updateOutput(self, input):
        x = require_array(input)
        axis = axis_of(self.dim, x.ndim)
        outer, rest = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
        self._split = (outer, rest)
        shape = x.shape[:axis] + (x.shape[axis] * self.copies,) + x.shape[axis + 1:]
        out = self.output = resized(self.output, shape, -1, x.dtype)
        expand_update_output(x.reshape(outer, 1, rest), out.reshape(outer, self.copies, rest))
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        g = _grad_output(gradOutput, self.output.shape)
        outer, rest = self._split
        gi = self.gradInput = resized(self.gradInput, x)
        expand_update_grad_input(g.reshape(outer, self.copies, rest), gi.reshape(outer, 1, rest))
        return gi

    def extraRepr(self):
        return f"dim={self.dim}, copies={self.copies}"


class Reverse(Module):
    """The input with axis ``dimension`` in reverse order; the gradient reversed back. With
    ``isInplace``, output is the input and gradInput the gradOutput, reversed in place."""

    def __init__(self, dimension=0, isInplace=False, dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self.isInplace = bool(isInplace)

    def updateOutput(self, input):
        x = require_array(input)
        out = x if self.isInplace else resized(self.output, x)
        reverse_update_output(x, out, axis_of(self.dimension, x.ndim))
        self.output = out
        return out

    def updateGradInput(self, input, gradOutput):
        g = _grad_output(gradOutput, require_array(input).shape)
        gi = g if self.isInplace else resized(self.gradInput, g)
        reverse_update_grad_input(g, gi, axis_of(self.dimension, g.ndim))
        self.gradInput = gi
        return gi

    def extraRepr(self):
        return f"dimension={self.dimension}" + (", inplace" if self.isInplace else "")


class Index(Module):
    """Input ``[t, indices]``: the slices ``indices`` (0-based positions, a 1-D array of
    whole numbers, integer or float) of ``t`` along axis ``dimension``, in that order
    (numpy's ``take``). The gradient of ``t`` adds each slice's gradient back at its
    position (repeats sum); that of ``indices`` is zero."""

    _tables = True
    _scratch = ("_positions",)

    def __init__(self, dimension, dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self.output = np.empty(0, self.dtype)
        self.gradInput = []
        self._positions = None

    def _operands(self, input):
        if not isinstance(input, (list, tuple)) or len(input) != 2:
            what = f"{len(input)} entries" if isinstance(input, (list, tuple)) else \
                type(input).__name__
            raise TypeError(f"input must be a table [tensor, indices], got {what}")
        t = require_array(input[0], "input 0")
        ix = require_array(input[1], "input 1")
        return t, ix, axis_of(self.dimension, t.ndim)

    def _int_positions(self, ix):
        """``ix`` as int64 positions, through a reused buffer unless they are int64."""
        if ix.dtype == np.int64:
            return ix
        p = self._positions = resized(self._positions, ix.shape, -1, np.dtype(np.int64))
        index_positions(ix, p)
        return p

    def updateOutput(self, input):
        t, ix, axis = self._operands(input)
        p = self._int_positions(ix)
        shape = t.shape[:axis] + p.shape[:1] + t.shape[axis + 1:]
        out = self.output = resized(self.output, shape, -1, t.dtype)
        index_update_output(t, p, out, axis)
        return out

    def updateGradInput(self, input, gradOutput):
        t, ix, axis = self._operands(input)
        p = self._int_positions(ix)
        gi = self.gradInput = resized_list(self.gradInput, 2)
        gt = gi[0] = resized(gi[0], t)
        gix = gi[1] = resized(gi[1], ix.shape, -1, t.dtype)
        index_update_grad_input(p, gradOutput, gt, axis)
        gix.fill(0)
        return gi

    def extraRepr(self):
        return f"{self.dimension}"


class ExpandSize(Module):
    """The input repeated along its axes of size 1 to ``targetSizes`` (one size per axis of
    the input, batch included; -1 keeps that axis' size). The gradient sums the copies."""

    def __init__(self, targetSizes, dtype=np.float32):
        super().__init__(dtype)
        sizes = (targetSizes,) if np.isscalar(targetSizes) else targetSizes
        self.targetSizes = tuple(whole(self, "targetSizes", s) for s in sizes)
        if any(s < -1 for s in self.targetSizes):
            raise ValueError(f"ExpandSize: sizes must be >= 0 or -1, got {list(sizes)}")

    def updateOutput(self, input):
        x = require_array(input)
        if len(self.targetSizes) != x.ndim:
            raise ValueError(f"input has {x.ndim} dimensions (shape {x.shape}), expected "
                             f"{len(self.targetSizes)} for sizes {list(self.targetSizes)}")
        shape = tuple(n if s == -1 else s for s, n in zip(self.targetSizes, x.shape,
                                                           strict=True))
        out = self.output = resized(self.output, shape, -1, x.dtype)
        expand_update_output(x, out)
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        g = _grad_output(gradOutput, self.output.shape)
        gi = self.gradInput = resized(self.gradInput, x)
        expand_update_grad_input(g, gi)
        return gi

    def extraRepr(self):
        return "x".join(map(str, self.targetSizes))


class Pack(Module):
    """Stacks the arrays of a table (all of one shape) along a new axis ``dimension`` of
    the result (numpy's ``stack``; negative: from the end of the result). One array is a
    table of one. The gradient is the result's slices."""

    _tables = True
    _scratch = ("_grads",)

    def __init__(self, dimension, dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self._grads = None  # the gradient buffers, one per array of the table

    def _parts(self, input):
        if isinstance(input, np.ndarray):
            return [input]
        if not isinstance(input, (list, tuple)) or not input:
            what = "an empty table" if isinstance(input, (list, tuple)) else \
                type(input).__name__
            raise TypeError(f"input must be an array or a table of arrays, got {what}")
        return [require_array(a, f"input {i}") for i, a in enumerate(input)]

    def _axis(self, nd):
        axis = self.dimension + nd + 1 if self.dimension < 0 else self.dimension
        if not 0 <= axis <= nd:
            raise ValueError(f"dimension {self.dimension} is out of range for stacking "
                             f"arrays of {nd} dimensions")
        return axis

    def updateOutput(self, input):
        parts = self._parts(input)
        first = parts[0]
        axis = self._axis(first.ndim)
        shape = first.shape[:axis] + (len(parts),) + first.shape[axis:]
        out = self.output = resized(self.output, shape, -1, first.dtype)
        join(parts, out, axis, 0, True, "input", "output")
        return out

    def updateGradInput(self, input, gradOutput):
        parts = self._parts(input)
        axis = self._axis(parts[0].ndim)
        gi = self._grads = resized_list(self._grads, len(parts))
        for i, x in enumerate(parts):
            gi[i] = resized(gi[i], x)
        split(gradOutput, gi, axis, 0, True, "gradOutput", "gradInput")
        self.gradInput = gi[0] if isinstance(input, np.ndarray) else gi
        return self.gradInput

    def extraRepr(self):
        return f"{self.dimension}"
