"""Shape modules: they move or re-view data and compute nothing.

A result that is a contiguous view of the input is returned as that view (no copy, as in
Torch): Reshape, View, Squeeze, Unsqueeze, and Narrow/Select when the band is contiguous.
Otherwise it is copied into a reused buffer, so the next kernel gets a contiguous array.
These modules follow the dtype of their input. Dimensions are 0-based and count the batch
axis; see ``pymodules.nn.table`` for the meaning of BigDL's ``nInputDims`` arguments.
"""

import math

import numpy as np

from pymodules.engine.buffers import resized
from pymodules.engine.table import join, split
from pymodules.facade import require_array
from pymodules.nn.module import Module, whole
from pymodules.nn.table import axis_of

INTMAX = 2147483647
INTMIN = -2147483648


def _before_forward(what, dim):
    """The ValueError of a backward that needs ``what`` forward locates on axis ``dim``."""
    raise ValueError(f"backward before forward: forward must run first, it locates the "
                     f"{what} of dimension {dim} in the input")


def _sizes(owner, what, size):
    sizes = (size,) if np.isscalar(size) else size
    return tuple(whole(owner, what, s) for s in sizes)


class Identity(Module):
    """output = input, gradInput = gradOutput (arrays or tables, not copied)."""

    def updateOutput(self, input):
        self.output = input
        return input

    def updateGradInput(self, input, gradOutput):
        self.gradInput = gradOutput
        return gradOutput


class _Reshaping(Module):
    """Output is the input re-viewed as ``self._shape(input)``; gradInput the reverse."""

    def _shape(self, x):
        raise NotImplementedError

    def updateOutput(self, input):
        x = require_array(input)
        self.output = x.reshape(self._shape(x))
        return self.output

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        g = require_array(gradOutput, "gradOutput")
        if g.size != x.size:
            raise ValueError(f"{self}: gradOutput has shape {g.shape}, expected "
                             f"{self._shape(x)}")
        self.gradInput = g.reshape(x.shape)
        return self.gradInput

    @staticmethod
    def _fits(shape, x, as_what):
        """``shape`` if it holds exactly ``x``'s elements, else a ValueError."""
        if math.prod(shape) != x.size:
            raise ValueError(f"input of shape {x.shape} ({x.size} elements) cannot be "
                             f"{as_what}")
        return shape


class Reshape(_Reshaping):
    """Reshapes to ``size`` (per sample in batch mode).

    ``batchMode``: True keeps the leading (batch) axis, False reshapes the whole input, None
    infers, as BigDL does: batch mode unless the input has exactly prod(size) elements and a
    leading size other than 1.
    """

    def __init__(self, size, batchMode=None, dtype=np.float32):
        super().__init__(dtype)
        self.size = _sizes(self, "size", size)
        self.batchMode = batchMode
        self._n = math.prod(self.size)

    def _shape(self, x):
        whole = self.batchMode is False or (
            self.batchMode is None and x.size == self._n and (x.ndim == 0 or x.shape[0] != 1))
        shape = self.size if whole else (x.shape[0] if x.ndim else 1,) + self.size
        return self._fits(shape, x, f"reshaped to {shape}")

    def extraRepr(self):
        return "x".join(map(str, self.size))


class View(_Reshaping):
    """Views the input as ``sizes`` (one entry may be -1, inferred).

    ``numInputDims`` > 0: the last that many axes form one sample and the leading ones
    collapse into one batch axis. 0: an input with a multiple of prod(sizes) elements gets
    a leading batch axis of the quotient.
    """

    def __init__(self, sizes, numInputDims=0, dtype=np.float32):
        super().__init__(dtype)
        self.sizes = _sizes(self, "sizes", sizes)
        self.numInputDims = whole(self, "numInputDims", numInputDims)
        if sum(s == -1 for s in self.sizes) > 1:
            raise ValueError(f"{self}: at most one size may be -1, got {self.sizes}")
        self._n = math.prod(s for s in self.sizes if s != -1)

    def _shape(self, x):
        n = self.numInputDims
        if n > 0 and x.ndim > n:
            batch = (math.prod(x.shape[:x.ndim - n]),)
            per_sample = math.prod(x.shape[x.ndim - n:])
        elif n > 0 or -1 in self.sizes or x.size == self._n or self._n == 0:
            batch, per_sample = (), x.size
        else:
            batch, per_sample = (x.size // self._n,), self._n
        sizes = self.sizes
        if -1 in sizes:
            if self._n == 0 or per_sample % self._n:
                raise ValueError(f"{self}: {per_sample} elements per sample do not fill "
                                 f"{sizes}")
            sizes = tuple(per_sample // self._n if s == -1 else s for s in sizes)
        return self._fits(batch + sizes, x, f"viewed as {sizes}")

    def extraRepr(self):
        return "x".join(map(str, self.sizes))


class InferReshape(_Reshaping):
    """Reshapes to ``size``, where -1 (at most one) is inferred from the element count and
    0 keeps the input's size at that position: (4, 5, 6, 7) with [4, 0, 3, -1] becomes
    (4, 5, 3, 14).

    ``batchMode``: the leading (batch) axis is kept and ``size`` describes one sample, its
    0 entries keeping the sizes of the sample's axes. (BigDL reads input axis i for entry i
    there, the batch axis for the first entry; a sample's axis i is input axis i + 1.)
    """

    _scratch = ("_last",)

    def __init__(self, size, batchMode=False, dtype=np.float32):
        super().__init__(dtype)
        self.size = _sizes(self, "size", size)
        self.batchMode = bool(batchMode)
        if any(s < -1 for s in self.size) or sum(s == -1 for s in self.size) > 1:
            raise ValueError(f"{self}: sizes are positive, 0 (keep the input's) or -1 "
                             f"(inferred, at most one), got {list(self.size)}")

    def _shape(self, x):
        # the last input shape's answer: a model's steady state skips the loop below
        key = (x.shape, self.size, self.batchMode)
        last = getattr(self, "_last", None)
        if last is not None and last[0] == key:
            return last[1]
        shape = self._infer(x)
        self._last = (key, shape)
        return shape

    def _infer(self, x):
        lead = x.shape[:1] if self.batchMode else ()
        if self.batchMode and not lead:
            raise ValueError(f"{self}: batchMode needs a batch axis, got an input of shape "
                             f"{x.shape}")
        axes = x.shape[len(lead):]
        shape = []
        for i, s in enumerate(self.size):
            if s == 0:
                if i >= len(axes):
                    raise ValueError(f"{self}: size entry {i} is 0 (keep) but the input "
                                     f"{x.shape} has no axis {i + len(lead)}")
                s = axes[i]
            shape.append(s)
        if -1 in shape:
            count = math.prod(axes)  # per sample: an empty batch infers as well
            known = math.prod(s for s in shape if s != -1)
            if known == 0 or count % known:
                per = " per sample" if lead else ""
                raise ValueError(f"{self}: input of shape {x.shape} cannot be reshaped to "
                                 f"{lead + tuple(shape)}: its {count} elements{per} are not "
                                 f"a multiple of {known}")
            shape[shape.index(-1)] = count // known
        shape = lead + tuple(shape)
        return self._fits(shape, x, f"reshaped to {shape}")

    def extraRepr(self):
        return "x".join(map(str, self.size)) + (", batchMode" if self.batchMode else "")


class Squeeze(_Reshaping):
    """Removes axis ``dim`` if it has size 1 (an int or a list; None: every size-1 axis).

    With ``numInputDims`` a batched input keeps its batch axis even when it has size 1.
    """

    def __init__(self, dim=None, numInputDims=INTMIN, dtype=np.float32):
        super().__init__(dtype)
        self.dim = None if dim is None else _sizes(self, "dim", dim)
        self.numInputDims = whole(self, "numInputDims", numInputDims)

    def _shape(self, x):
        n = self.numInputDims
        if self.dim is None:
            keep_batch = 0 < n and x.ndim == n + 1
            return tuple(s for i, s in enumerate(x.shape) if s != 1 or (keep_batch and i == 0))
        axes = {axis_of(d, x.ndim, n) for d in self.dim}
        return tuple(s for i, s in enumerate(x.shape) if s != 1 or i not in axes)

    def extraRepr(self):
        return "" if self.dim is None else f"dim={list(self.dim)}"


class Unsqueeze(_Reshaping):
    """Inserts an axis of size 1 at ``pos`` (negative counts from the end of the result)."""

    def __init__(self, pos, numInputDims=INTMIN, dtype=np.float32):
        super().__init__(dtype)
        self.pos = whole(self, "pos", pos)
        self.numInputDims = whole(self, "numInputDims", numInputDims)

    def _shape(self, x):
        pos = axis_of(self.pos, x.ndim + 1, self.numInputDims if self.numInputDims <= 0
                      else self.numInputDims + 1, "pos")
        return x.shape[:pos] + (1,) + x.shape[pos:]

    def extraRepr(self):
        return f"pos={self.pos}"


class Narrow(Module):
    """The band [offset, offset + length) of axis ``dimension``.

    A negative offset counts from the end; a negative length too: -1 runs to the end.
    The gradient is zero outside the band.
    """

    _scratch = ("_copy",)

    def __init__(self, dimension, offset, length=1, dtype=np.float32):
        super().__init__(dtype)
        self.dimension = whole(self, "dimension", dimension)
        self.offset, self.length = whole(self, "offset", offset), whole(self, "length", length)
        self._band = None  # (axis, start, length), located by forward
        self._copy = None

    def _locate(self, x):
        axis = axis_of(self.dimension, x.ndim)
        size = x.shape[axis]
        start = self.offset + size if self.offset < 0 else self.offset
        length = size - start + self.length + 1 if self.length < 0 else self.length
        if start < 0 or length < 0 or start + length > size:
            raise ValueError(f"{self}: band [{start}, {start + length}) is out of range for "
                             f"dimension {axis} of size {size} (input shape {x.shape})")
        return axis, start, length

    def updateOutput(self, input):
        x = require_array(input)
        axis, start, length = self._band = self._locate(x)
        if math.prod(x.shape[:axis]) <= 1:  # a contiguous band: a view, as in Torch
            self.output = x[(slice(None),) * axis + (slice(start, start + length),)]
            return self.output
        shape = x.shape[:axis] + (length,) + x.shape[axis + 1:]
        out = self.output = self._copy = resized(self._copy, shape, -1, x.dtype)
        split(x, [out], axis, start, False, "input", "output")
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        axis, start, _ = self._band or _before_forward("band", self.dimension)
        gi = self.gradInput = resized(self.gradInput, x)
        join([gradOutput], gi, axis, start, False, "gradOutput", "gradInput")
        return gi

    def extraRepr(self):
        return f"dimension={self.dimension}, offset={self.offset}, length={self.length}"


class Select(Module):
    """Slice ``index`` of axis ``dim``, that axis removed (negative values count from the end).

    The gradient is zero outside the slice.
    """

    _scratch = ("_copy",)

    def __init__(self, dim, index, dtype=np.float32):
        super().__init__(dtype)
        self.dim, self.index = whole(self, "dim", dim), whole(self, "index", index)
        self._at = None  # (axis, index), located by forward
        self._copy = None

    def updateOutput(self, input):
        x = require_array(input)
        axis = axis_of(self.dim, x.ndim)
        size = x.shape[axis]
        index = self.index + size if self.index < 0 else self.index
        if not 0 <= index < size:
            raise ValueError(f"{self}: index {self.index} is out of range for dimension "
                             f"{axis} of size {size} (input shape {x.shape})")
        self._at = (axis, index)
        if math.prod(x.shape[:axis]) <= 1:
            self.output = x[(slice(None),) * axis + (index,)]
            return self.output
        shape = x.shape[:axis] + x.shape[axis + 1:]
        out = self.output = self._copy = resized(self._copy, shape, -1, x.dtype)
        split(x, [out], axis, index, True, "input", "output")
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        axis, index = self._at or _before_forward("slice", self.dim)
        gi = self.gradInput = resized(self.gradInput, x)
        join([gradOutput], gi, axis, index, True, "gradOutput", "gradInput")
        return gi

    def extraRepr(self):
        return f"dim={self.dim}, index={self.index}"


class Transpose(Module):
    """Swaps the axes of each pair in ``permutations`` in turn; the result is contiguous."""

    def __init__(self, permutations, dtype=np.float32):
        super().__init__(dtype)
        self.permutations = [(whole(self, "permutations", a), whole(self, "permutations", b))
                             for a, b in permutations]
        self._perm = self._inverse = None

    def _axes(self, nd):
        perm = list(range(nd))
        for a, b in self.permutations:
            a, b = axis_of(a, nd), axis_of(b, nd)
            perm[a], perm[b] = perm[b], perm[a]
        return tuple(perm)

    def updateOutput(self, input):
        x = require_array(input)
        if self._perm is None or len(self._perm) != x.ndim:
            self._perm = self._axes(x.ndim)
            self._inverse = tuple(np.argsort(self._perm))
        xt = x.transpose(self._perm)
        out = self.output = resized(self.output, xt.shape, -1, x.dtype)
        np.copyto(out, xt)
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        g = require_array(gradOutput, "gradOutput")
        if g.shape != self.output.shape:
            raise ValueError(f"{self}: gradOutput has shape {g.shape}, "
                             f"expected {self.output.shape}")
        gi = self.gradInput = resized(self.gradInput, x)
        np.copyto(gi, g.transpose(self._inverse))
        return gi

    def extraRepr(self):
        return ", ".join(f"{a}<->{b}" for a, b in self.permutations)


class Replicate(Module):
    """Repeats the input ``nFeatures`` times along a new axis ``dim``.

    ``nDim`` is the rank of one sample: an input of that rank has no batch axis and the new
    axis goes at ``dim - 1``. The gradient sums over the copies.
    """

    def __init__(self, nFeatures, dim=0, nDim=INTMAX, dtype=np.float32):
        super().__init__(dtype)
        self.nFeatures = whole(self, "nFeatures", nFeatures)
        self.dim, self.nDim = whole(self, "dim", dim), whole(self, "nDim", nDim)
        self._axis = 0

    def updateOutput(self, input):
        x = require_array(input)
        axis = self._axis = axis_of(self.dim, x.ndim + 1,
                                    self.nDim + 1 if 0 < self.nDim < INTMAX else None)
        shape = x.shape[:axis] + (self.nFeatures,) + x.shape[axis:]
        out = self.output = resized(self.output, shape, -1, x.dtype)
        np.copyto(out, np.expand_dims(x, axis))
        return out

    def updateGradInput(self, input, gradOutput):
        x = require_array(input)
        g = require_array(gradOutput, "gradOutput")
        if g.shape != self.output.shape:
            raise ValueError(f"{self}: gradOutput has shape {g.shape}, "
                             f"expected {self.output.shape}")
        gi = self.gradInput = resized(self.gradInput, x)
        np.sum(g, axis=self._axis, out=gi)
        return gi

    def extraRepr(self):
        return f"{self.nFeatures}, dim={self.dim}"


class Contiguous(Module):
    """The input as a C-contiguous array: itself when it already is, else a copy."""

    _scratch = ("_copy", "_gradCopy")

    def __init__(self, dtype=np.float32):
        super().__init__(dtype)
        self._copy = self._gradCopy = None

    def updateOutput(self, input):
        self.output = _contiguous(self, input, "_copy", "input")
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = _contiguous(self, gradOutput, "_gradCopy", "gradOutput")
        return self.gradInput


def _contiguous(module, x, attr, what):
    """``x`` if C-contiguous, else its copy in the private buffer ``attr``."""
    x = require_array(x, what)
    if x.flags.c_contiguous:
        return x
    out = resized(getattr(module, attr), x)
    setattr(module, attr, out)
    np.copyto(out, x)
    return out
