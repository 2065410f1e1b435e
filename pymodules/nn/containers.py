"""Containers: modules made of modules. They add the walk and nothing else."""

import copy
import weakref

import numpy as np

from pymodules.engine.buffers import resized, resized_list
from pymodules.engine.table import join, split
from pymodules.facade import REFUSALS, in_use
from pymodules.nn.module import Module, _now, whole
from pymodules.nn.table import axis_of, sum_into


class Container(Module):
    """A module holding an ordered list of children, ``modules``."""

    def __init__(self):
        super().__init__()
        self.modules = []

    def add(self, module):
        """Append ``module`` (not already in this tree); return self.

        O(1) amortised: a container keeps the set of ids of its tree (see ``_tree_ids``),
        so the check costs the size of what is added, not of the tree.
        """
        if not isinstance(module, Module):
            raise TypeError(f"{self.getName()}: can only add a Module, got "
                            f"{type(module).__name__}")
        mine = _tree_ids(self)
        theirs = _tree_ids(module)
        if not mine.isdisjoint(theirs):
            # The sets are kept by add only: confirm on the tree itself before refusing.
            mine = {id(m) for m in self.modules_preorder()}
            for m in module.modules_preorder():
                if id(m) in mine:
                    raise ValueError(f"{self.getName()}: {m.getName()} is already in this "
                                     "tree")
        if not self.modules:
            self.dtype = module.dtype  # a container computes in its first child's dtype
        self.modules.append(module)
        self._flat = None
        mine |= theirs
        self._tree = (_tree_key(self), mine)
        if isinstance(module, Container):
            _hold(self, module)
        _grow_holders(self, theirs)
        return self

    def children(self):
        return self.modules

    def _slots(self):
        for child in self.modules:
            yield from child._slots()

    _tables = True  # its input may be a table, or an array, or a table of tables

    def _label(self):
        # The name only: str() of a container prints the whole tree.
        return self.getName()

    # -- the backward walk: each container says how it runs a step over its children --------
    def _walk_back(self, input, gradOutput, step):
        """Run ``step(child, childInput, childGradOutput)`` over the children (last to first
        where the order matters) and return the gradient of the input."""
        raise NotImplementedError(f"{type(self).__name__} does not define _walk_back")

    def backward(self, input, gradOutput):
        if self._busy:
            raise in_use(self, "backward")
        self._busy = True
        start = _now()
        try:
            self.gradInput = self._walk_back(input, gradOutput, _backward)
        finally:
            self._busy = False
        self.backwardTime += _now() - start
        return self.gradInput

    def updateGradInput(self, input, gradOutput):
        self.gradInput = self._walk_back(input, gradOutput, _update_grad_input)
        return self.gradInput

    def accGradParameters(self, input, gradOutput):
        # Each child needs the gradient of its output, so gradInputs are passed on the way.
        self._walk_back(input, gradOutput, _acc_and_pass)

    def getParametersTable(self):
        table = {}
        for child in self.modules:
            table.update(child.getParametersTable())
        return table

    def setScaleW(self, scale):
        super().setScaleW(scale)
        for child in self.modules:
            child.setScaleW(scale)
        return self

    def setScaleB(self, scale):
        super().setScaleB(scale)
        for child in self.modules:
            child.setScaleB(scale)
        return self

    def reset(self):
        for child in self.modules:
            child.reset()
        return self

    def __str__(self):
        lines = [f"{self.getName()} {{"]
        for i, child in enumerate(self.modules):
            body = str(child).replace("\n", "\n    ")
            lines.append(f"  ({i}): {body}")
        lines.append("}")
        return "\n".join(lines)

    __repr__ = __str__


# Each container keeps ``_tree``: (key, the set of ids of its tree), valid while the key
# (its id, its list of children and that list's length) is unchanged; and ``_held``: (its
# id, weak references to the containers it was added to), through which an add updates the
# sets of the trees holding it. A copy (cloneModule) has another id, so it neither uses the
# original's set nor updates the original's holders; its sets are rebuilt on first use.
def _tree_key(c):
    return id(c), id(c.modules), len(c.modules)


def _tree_ids(m) -> set:
    """The ids of ``m`` and of every module under it (kept by a container)."""
    if not isinstance(m, Container):
        return {id(x) for x in m.modules_preorder()}
    kept = getattr(m, "_tree", None)
    key = _tree_key(m)
    if kept is not None and kept[0] == key:
        return kept[1]
    ids = {id(m)}
    for child in m.children():
        ids |= _tree_ids(child)
        if isinstance(child, Container):
            _hold(m, child)
    m._tree = (key, ids)
    return ids


def _holders(c) -> list:
    held = getattr(c, "_held", None)
    if held is None or held[0] != id(c):
        held = c._held = (id(c), [])
    return held[1]


def _hold(holder, c) -> None:
    refs = _holders(c)
    refs[:] = [r for r in refs if r() is not None]
    if not any(r() is holder for r in refs):
        refs.append(weakref.ref(holder))


def _grow_holders(c, ids) -> None:
    """Add ``ids`` to the kept sets of the containers holding ``c``, up to the roots."""
    seen = {id(c)}
    todo = [c]
    while todo:
        for ref in _holders(todo.pop()):
            h = ref()
            if h is None or id(h) in seen:
                continue
            seen.add(id(h))
            kept = getattr(h, "_tree", None)
            if kept is not None and kept[0] == _tree_key(h):
                kept[1].update(ids)
            todo.append(h)


def _never_ran(output) -> bool:
    """Whether ``output`` is still the empty placeholder a module starts (or is cleared) with:
    no kernel gives an empty result, as every one refuses empty sizes."""
    return type(output) is np.ndarray and output.ndim == 1 and output.size == 0


class Sequential(Container):
    """Feeds each child's output to the next; the last one's output is the output.

    ``Sequential(*modules)`` adds the modules given, as ``add`` does one by one.
    """

    def __init__(self, *modules):
        super().__init__()
        for m in modules:
            self.add(m)

    def updateOutput(self, input):
        # Each child's forward, inlined: Module.forward's steps (the busy flag, the gate, the
        # time) without a call of its own, one clock reading closing a child's time and
        # opening the next one's. A child whose class defines its own forward, or that is
        # busy (whose forward then refuses), is called as it is.
        x = input
        start = _now()
        for child in self.modules:
            if child._busy or not child._inlineForward:
                x = child.forward(x)
                start = _now()
                continue
            child._busy = True
            try:
                x = child._updateOutput(x)
            except REFUSALS as err:
                x = child._refused(err, child.updateOutput, (x,))
            finally:
                child._busy = False
            end = _now()
            child.forwardTime += end - start
            start = end
        self.output = x
        return x

    def _walk_back(self, input, gradOutput, step):
        """Run ``step(child, childInput, gradOutput)`` from the last child to the first."""
        if len(self.modules) > 1 and _never_ran(self.modules[-2].output):
            raise ValueError(f"{self.getName()}: backward before forward: forward must run "
                             f"first (each child's backward reads the output of the one "
                             f"before it)")
        g = gradOutput
        for i in range(len(self.modules) - 1, -1, -1):
            child = self.modules[i]
            g = step(child, self.modules[i - 1].output if i else input, g)
        return g

    def toGraph(self):
        """A Graph running the same children (shared, not copied) in the same order."""
        from pymodules.nn.graph import Graph, Input

        start = node = Input()
        for child in self.modules:
            node = child.inputs(node)
        return Graph(start, node)

    def __str__(self):
        arrows = " -> ".join(f"({i})" for i in range(len(self.modules)))
        head = f"{self.getName()} {{\n  [input -> {arrows} -> output]" if self.modules \
            else f"{self.getName()} {{\n  [input -> output]"
        rest = super().__str__().split("\n", 1)[1]
        return f"{head}\n{rest}"

    __repr__ = __str__


def _backward(child, input, gradOutput):
    return child.backward(input, gradOutput)


def _update_grad_input(child, input, gradOutput):
    return child.updateGradInput(input, gradOutput)


def _acc_and_pass(child, input, gradOutput):
    child.accGradParameters(input, gradOutput)
    return child.gradInput


class _Branches(Container):
    """Containers that feed their one input to every child (Concat, ConcatTable): the
    gradient of the input is the sum of the children's, in a reused buffer."""

    def _child_grads(self, gradOutput):
        """The gradOutput of each child, in order."""
        raise NotImplementedError

    def _walk_back(self, input, gradOutput, step):
        gos = self._child_grads(gradOutput)
        grads = [step(child, input, go) for child, go in zip(self.modules, gos, strict=True)]
        self._gradSum = sum_into(self._gradSum, grads)
        return self._gradSum


class Concat(_Branches):
    """Feeds the input to every child and concatenates their outputs along ``dimension``.

    The gradient of the input is the sum of the children's. ``Concat(dimension, *modules)``
    adds the modules given.
    """

    _scratch = ("_outs", "_gradOutputs", "_gradSum")

    def __init__(self, dimension, *modules):
        super().__init__()
        self.dimension = whole(self, "dimension", dimension)
        self._axis = 0
        self._outs = self._gradOutputs = self._gradSum = None
        for m in modules:
            self.add(m)

    def updateOutput(self, input):
        outs = self._outs = resized_list(self._outs, len(self.modules))
        if not outs:
            raise ValueError(f"{self.getName()}: has no children")
        for i, child in enumerate(self.modules):
            outs[i] = child.forward(input)
        first = outs[0]
        axis = self._axis = axis_of(self.dimension, first.ndim)
        size = sum(o.shape[axis] if o.ndim == first.ndim else 0 for o in outs)
        shape = first.shape[:axis] + (size,) + first.shape[axis + 1:]
        out = self.output = resized(self.output, shape, -1, first.dtype)
        try:
            join(outs, out, axis, 0, False, "child output", "output")
        except ValueError:
            if all(o.flags.c_contiguous for o in outs):
                raise
            join([np.ascontiguousarray(o) for o in outs], out, axis, 0, False,
                 "child output", "output")
        return out

    def _child_grads(self, gradOutput):
        """The band of gradOutput that belongs to each child, as contiguous arrays."""
        if self._outs is None or len(self._outs) != len(self.modules):
            # the bands are the children's outputs: none yet (or not of every child)
            raise ValueError(f"backward before forward: forward must run first, the split "
                             f"of gradOutput along dimension {self.dimension} follows the "
                             f"outputs of the {len(self.modules)} children")
        gos = resized_list(self._gradOutputs, len(self.modules))
        self._gradOutputs = gos
        for i, o in enumerate(self._outs):
            gos[i] = resized(gos[i], o)
        split(gradOutput, gos, self._axis, 0, False, "gradOutput", "child gradOutput")
        return gos

    def __str__(self):
        return f"{super().__str__()[:-1]}}} dimension={self.dimension}"

    __repr__ = __str__


class ConcatTable(_Branches):
    """Feeds the input to every child; the output is the table of their outputs.

    The gradient of the input is the sum of the children's.
    """

    _scratch = ("_gradSum",)

    def __init__(self):
        super().__init__()
        self.output = []
        self._gradSum = None

    def updateOutput(self, input):
        out = self.output = resized_list(self.output, len(self.modules))
        for i, child in enumerate(self.modules):
            out[i] = child.forward(input)
        return out

    def _child_grads(self, gradOutput):
        _check_table(self, gradOutput, len(self.modules), "gradOutput")
        return gradOutput


class _PerEntry(Container):
    """Containers whose member i runs on entry i of the input table (ParallelTable,
    MapTable); the output and the gradient of the input are tables too."""

    def __init__(self):
        super().__init__()
        self.output = []
        self.gradInput = []

    def _members(self, input):
        """The module that runs on each entry of ``input``, in order."""
        raise NotImplementedError

    def updateOutput(self, input):
        members = self._members(input)
        out = self.output = resized_list(self.output, len(members))
        for i, child in enumerate(members):
            out[i] = child.forward(input[i])
        return out

    def _walk_back(self, input, gradOutput, step):
        members = self._members(input)
        _check_table(self, gradOutput, len(members), "gradOutput")
        gi = resized_list(self.gradInput, len(members))
        for i, child in enumerate(members):
            gi[i] = step(child, input[i], gradOutput[i])
        return gi


class ParallelTable(_PerEntry):
    """Child i runs on entry i of the input table; the output is the table of their outputs."""

    def _members(self, input):
        _check_table(self, input, len(self.modules), "input")
        return self.modules


class MapTable(_PerEntry):
    """Applies one module to every entry of the input table.

    Entry i > 0 runs on a clone that shares the module's parameters, gradients and running
    state (BigDL's behaviour), so parameters() lists them once and gradients accumulate
    into the same arrays. The clones follow the module's mode and scales.
    """

    def __init__(self, module=None):
        super().__init__()
        self._clones = []
        if module is not None:
            self.add(module)

    def add(self, module):
        if self.modules:
            raise ValueError(f"{self.getName()}: already maps {self.modules[0].getName()}; "
                             f"a MapTable holds one module")
        super().add(module)
        self._clones = []
        return self

    def _replicas(self, n):
        """The module followed by n - 1 clones, synchronised with it."""
        if not self.modules:
            raise ValueError(f"{self.getName()}: has no module to map")
        base = self.modules[0]
        while len(self._clones) < n - 1:
            shared = {id(a): a for m in base.modules_preorder()
                      for a in _state_arrays(m)}
            self._clones.append(copy.deepcopy(base, shared))
        base_tree = list(base.modules_preorder())
        for clone in self._clones[:n - 1]:
            for b, c in zip(base_tree, clone.modules_preorder(), strict=True):
                for attr in _state_attrs(b):
                    setattr(c, attr, getattr(b, attr))
                c._train, c.scaleW, c.scaleB = b._train, b.scaleW, b.scaleB
        return [base, *self._clones[:n - 1]]

    def _members(self, input):
        _check_table(self, input, None, "input")
        return self._replicas(len(input))

    def _cleared(self):
        return {**super()._cleared(), "_clones": []}

    def _convert(self, dtype):
        self._clones = []
        return super()._convert(dtype)


def _state_attrs(m):
    return [a for pair in m._params for a in pair] + list(m._extra)


def _state_arrays(m):
    return [a for a in (getattr(m, attr, None) for attr in _state_attrs(m)) if a is not None]


def _check_table(module, t, n, what):
    if not isinstance(t, (list, tuple)):
        raise TypeError(f"{module.getName()}: {what} must be a table (a list), "
                        f"got {type(t).__name__}")
    if n is not None and len(t) != n:
        raise ValueError(f"{module.getName()}: {what} has {len(t)} entries, expected {n}")
