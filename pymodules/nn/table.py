"""Table modules: layers whose input or output is a table (a list of arrays).

They have no parameters and follow the dtype of their input (all arrays of one table must
share it). Dimensions and indices are 0-based; a dimension counts the batch axis. Where
BigDL takes ``nInputDims`` (the rank of one sample), an input of exactly that rank is a
single sample: it has no batch axis, so ``dimension`` (written for the batched input) is
one less on it.
"""

import numpy as np

from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.table import (
    cadd_update_grad_input,
    cadd_update_output,
    cmax_update_grad_input,
    cmax_update_output,
    cmul_update_grad_input,
    cmul_update_output,
    csub_update_grad_input,
    csub_update_output,
    join,
    split,
)
from pymodules.facade import require_array
from pymodules.nn.module import Module, whole


# -- helpers shared with the containers and the graph -----------------------------------------
def zeros_like(buf, t):
    """A table shaped like ``t`` holding zeros, reusing ``buf``'s arrays where they fit."""
    if isinstance(t, (list, tuple)):
        return [zeros_like(b, x) for b, x in zip(resized_list(buf, len(t)), t, strict=True)]
    z = resized(buf, t)
    z.fill(0)
    return z


def sum_into(buf, grads):
    """The elementwise sum of the tables ``grads`` (one structure), written into ``buf``.

    One table is returned as is. The result reuses ``buf`` (the previous result) when its
    arrays fit, so a steady state allocates nothing.
    """
    first = grads[0]
    if len(grads) == 1:
        return first
    if isinstance(first, (list, tuple)):
        old = resized_list(buf, len(first))
        for g in grads:
            if not isinstance(g, (list, tuple)) or len(g) != len(first):
                raise ValueError(f"gradients to sum differ in structure: {len(first)}-table "
                                 f"and {_describe(g)}")
        return [sum_into(old[i], [g[i] for g in grads]) for i in range(len(first))]
    out = resized(buf, first)
    try:
        cadd_update_output(grads, out)
    except ValueError:
        if all(isinstance(g, np.ndarray) and g.flags.c_contiguous for g in grads):
            raise
        cadd_update_output([np.ascontiguousarray(g) for g in grads], out)
    return out


def _describe(t):
    if isinstance(t, (list, tuple)):
        return f"a {len(t)}-table"
    return f"an array of shape {t.shape}" if isinstance(t, np.ndarray) else type(t).__name__


def axis_of(dim, ndim, nInputDims=None, what="dimension"):
    """The numpy axis that ``dim`` designates on an input of rank ``ndim``.

    Negative dims count from the end. With ``nInputDims`` (the rank of one sample) an input
    of that rank has no batch axis, so the dim, written for the batched input, is one less.
    """
    dim = int(dim)
    if dim < 0:
        axis = ndim + dim
    elif nInputDims is not None and 0 < nInputDims == ndim:
        axis = dim - 1
    else:
        axis = dim
    if not 0 <= axis < ndim:
        batch = nInputDims is not None and 0 < nInputDims == ndim
        raise ValueError(f"{what} {dim} is out of range for an input of {ndim} dimensions"
                         + (" (a single sample: no batch axis)" if batch else ""))
    return axis


def _table(module, input, lo=1, arrays=True):
    """``input`` as a list of at least ``lo`` items, arrays unless ``arrays`` is False (items
    may then be tables too); TypeError/ValueError otherwise."""
    if not isinstance(input, (list, tuple)):
        raise TypeError(f"input must be a table (a list of arrays), got {type(input).__name__}")
    if len(input) < lo:
        raise ValueError(f"input has {len(input)} entries, expected at least {lo}")
    for i, a in enumerate(input if arrays else ()):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"input {i} must be a numpy.ndarray, got {type(a).__name__}")
    return input


def _grad_buffers(buf, like):
    """A list of arrays shaped like the arrays of ``like``, reusing ``buf``'s."""
    old = resized_list(buf, len(like))
    return [resized(b, x.shape, -1, x.dtype) for b, x in zip(old, like, strict=True)]


class _TableModule(Module):
    """A parameterless module whose buffers take the dtype of its input."""

    _tables = True

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self.output = []
        self.gradInput = []


# -- elementwise -------------------------------------------------------------------------------
class CAddTable(_TableModule):
    """Sum of the arrays of a table: [x0, x1, ...] -> x0 + x1 + ...

    Arrays of one shape take the Cython path; otherwise they must broadcast (NumPy rules) to
    the shape of the largest, and each gradient is summed back to its input's shape.
    ``inplace`` is accepted as in BigDL; the sum is always written to this module's own buffer.
    """

    def __init__(self, inplace=False, dtype=np.float32):
        super().__init__(dtype)
        self.inplace = bool(inplace)

    def updateOutput(self, input):
        x = _table(self, input)
        first = x[0]
        if any(a.shape != first.shape for a in x):
            return self._broadcast_output(x)
        out = self.output = resized(self.output, first)
        cadd_update_output(x, out)
        return out

    def _broadcast_output(self, x):
        return _broadcast_output(self, x, np.add)

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        if any(a.shape != require_array(gradOutput, "gradOutput").shape for a in x):
            for g in gi:
                _sum_to(gradOutput, g)
            return gi
        cadd_update_grad_input(gradOutput, gi)
        return gi


def _broadcast_output(module, x, op):
    """module.output := op(...op(x[0], x[1])..., x[-1]) under NumPy's broadcasting rules."""
    try:
        shape = np.broadcast_shapes(*[a.shape for a in x])
    except ValueError:  # the facade puts the module's name in front
        raise ValueError(f"input shapes {[a.shape for a in x]} do not broadcast") from None
    out = module.output = resized(module.output, shape, -1, x[0].dtype)
    np.copyto(out, x[0])
    for a in x[1:]:
        op(out, a, out=out)
    return out


def _scalar_operand(x):
    """Whether the table mixes shapes through operands of shape () or (1,)."""
    return any(np.shape(a) in ((), (1,)) for a in x) and \
        any(np.shape(a) != np.shape(x[0]) for a in x)


def _sum_to(g, out):
    """out := g summed over the axes that broadcasting added or stretched to reach g."""
    lead = g.ndim - out.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(out.shape) if n == 1 and g.shape[lead + i] != 1)
    np.copyto(out, np.sum(g, axis=axes).reshape(out.shape) if axes else g)


class CSubTable(_TableModule):
    """Difference of a two-array table: [x0, x1] -> x0 - x1."""

    def updateOutput(self, input):
        x = _table(self, input, 2)
        if len(x) != 2:
            raise ValueError(f"input has {len(x)} entries, expected 2")
        out = self.output = resized(self.output, x[0])
        csub_update_output(x[0], x[1], out)
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = _grad_buffers(self.gradInput, _table(self, input, 2)[:2])
        csub_update_grad_input(gradOutput, gi[0], gi[1])
        return gi


class CMulTable(_TableModule):
    """Elementwise product of the arrays of a table.

    Arrays of one shape take the Cython path. As in BigDL, an operand of shape () or (1,)
    is a scalar that multiplies everything (its gradient is summed back to one element);
    other shapes must agree.
    """

    def updateOutput(self, input):
        x = _table(self, input)
        if _scalar_operand(x):
            return _broadcast_output(self, x, np.multiply)
        out = self.output = resized(self.output, x[0])
        cmul_update_output(x, out)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        if _scalar_operand(x):
            for i, g in enumerate(gi):
                others = gradOutput
                for j, a in enumerate(x):
                    if j != i:
                        others = others * a
                _sum_to(others, g)
            return gi
        cmul_update_grad_input(x, gradOutput, gi)
        return gi


class CMaxTable(_TableModule):
    """Elementwise maximum of the arrays of a table; the gradient goes to the (first) argmax."""

    _scratch = ("_indices",)

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._indices = None

    def updateOutput(self, input):
        x = _table(self, input)
        out = self.output = resized(self.output, x[0])
        idx = self._indices = resized(self._indices, x[0].shape, -1, np.dtype(np.int32))
        cmax_update_output(x, out, idx)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        cmax_update_grad_input(gradOutput, gi, self._indices)
        return gi


# -- joining and splitting ---------------------------------------------------------------------
class _AlongDimension(_TableModule):
    """Join and split: along ``dimension``; ``nInputDims``, the rank of one sample (see the
    module docstring), -1 for none."""

    def __init__(self, dimension, nInputDims=-1, dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self.nInputDims = whole(self, "nInputDims", nInputDims)
        self._axis = 0

    def extraRepr(self):
        return f"dimension={self.dimension}"


class JoinTable(_AlongDimension):
    """Concatenates the arrays of a table along ``dimension``."""

    def updateOutput(self, input):
        x = _table(self, input)
        first = x[0]
        axis = self._axis = axis_of(self.dimension, first.ndim, self.nInputDims)
        size = 0
        for a in x:
            size += a.shape[axis] if a.ndim == first.ndim else 0
        shape = first.shape[:axis] + (size,) + first.shape[axis + 1:]
        out = self.output = resized(self.output, shape, -1, first.dtype)
        join(x, out, axis)
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input)
        gi = self.gradInput = _grad_buffers(self.gradInput, x)
        split(gradOutput, gi, self._axis, 0, False, "gradOutput", "gradInput")
        return gi


class SplitTable(_AlongDimension):
    """Splits an array along ``dimension`` into a table of its slices (the axis removed)."""

    def updateOutput(self, input):
        axis = self._axis = axis_of(self.dimension, require_array(input).ndim, self.nInputDims)
        shape = input.shape[:axis] + input.shape[axis + 1:]
        out, n = self.output, input.shape[axis]
        # The slices are made together, so the first one speaks for all of them.
        if not (isinstance(out, list) and len(out) == n and n and
                out[0].shape == shape and out[0].dtype == input.dtype):
            out = self.output = [np.empty(shape, input.dtype) for _ in range(n)]
        if out:
            split(input, out, axis, 0, True, "input", "output")
        return out

    def updateGradInput(self, input, gradOutput):
        gi = self.gradInput = resized(self.gradInput, input)
        if not isinstance(gradOutput, (list, tuple)):
            raise TypeError(f"gradOutput must be a table (a list of arrays), "
                            f"got {type(gradOutput).__name__}")
        if len(gradOutput) != input.shape[self._axis]:
            raise ValueError(f"gradOutput has {len(gradOutput)} entries, "
                             f"expected {input.shape[self._axis]}")
        if gradOutput:
            join(gradOutput, gi, self._axis, 0, True, "gradOutput", "gradInput")
        return gi


# -- selecting ---------------------------------------------------------------------------------
def _index(module, i, n, what="index"):
    j = i + n if i < 0 else i
    if not 0 <= j < n:
        raise IndexError(f"{module}: {what} {i} is out of range for a table of {n} entries")
    return j


class SelectTable(Module):
    """Entry ``index`` of a table (negative counts from the end); the entry is not copied.

    The gradient is zero for the other entries (tables of zeros for nested ones).
    """

    _tables = True

    def __init__(self, index, dtype=np.float32):
        super().__init__(dtype)
        self.index = whole(self, "index", index)

    def updateOutput(self, input):
        x = _table(self, input, arrays=False)
        self.output = x[_index(self, self.index, len(x))]
        return self.output

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input, arrays=False)
        i = _index(self, self.index, len(x))
        gi = self.gradInput = resized_list(self.gradInput, len(x))
        for j, a in enumerate(x):
            gi[j] = gradOutput if j == i else zeros_like(gi[j], a)
        return gi

    def extraRepr(self):
        return f"index={self.index}"


class NarrowTable(Module):
    """Entries ``offset`` to ``offset + length`` of a table (not copied).

    A negative ``length`` counts back from the end: -1 takes every entry from ``offset``.
    """

    _tables = True

    def __init__(self, offset, length=1, dtype=np.float32):
        super().__init__(dtype)
        self.offset = whole(self, "offset", offset)
        self.length = whole(self, "length", length)

    def _span(self, n):
        start = _index(self, self.offset, n, "offset")
        length = n - start + self.length + 1 if self.length < 0 else self.length
        if length < 0 or start + length > n:
            raise IndexError(f"{self}: entries {start} to {start + length} are out of range "
                             f"for a table of {n} entries")
        return start, length

    def updateOutput(self, input):
        x = _table(self, input, arrays=False)
        start, length = self._span(len(x))
        out = self.output = resized_list(self.output, length)
        out[:] = x[start:start + length]
        return out

    def updateGradInput(self, input, gradOutput):
        x = _table(self, input, arrays=False)
        start, length = self._span(len(x))
        if not isinstance(gradOutput, (list, tuple)) or len(gradOutput) != length:
            raise ValueError(f"{self}: gradOutput must be a table of {length} entries, "
                             f"got {_describe(gradOutput)}")
        gi = self.gradInput = resized_list(self.gradInput, len(x))
        for j, a in enumerate(x):
            in_span = start <= j < start + length
            gi[j] = gradOutput[j - start] if in_span else zeros_like(gi[j], a)
        return gi

    def extraRepr(self):
        return f"offset={self.offset}, length={self.length}"


class FlattenTable(Module):
    """A nested table flattened to a list of its arrays, depth first (not copied)."""

    _tables = True

    def updateOutput(self, input):
        _table(self, input, 0, arrays=False)
        out = self.output = self.output if isinstance(self.output, list) else []
        out.clear()
        _flatten(input, out)
        return out

    def updateGradInput(self, input, gradOutput):
        n = len(self.output) if isinstance(self.output, list) else 0
        if not isinstance(gradOutput, (list, tuple)) or len(gradOutput) != n:
            raise ValueError(f"{self}: gradOutput must be a table of {n} entries, "
                             f"got {_describe(gradOutput)}")
        it = iter(gradOutput)
        self.gradInput = _nest(input, it)
        return self.gradInput


def _flatten(t, out):
    if isinstance(t, (list, tuple)):
        for x in t:
            _flatten(x, out)
    else:
        out.append(t)


def _nest(like, it):
    if isinstance(like, (list, tuple)):
        return [_nest(x, it) for x in like]
    return next(it)
