"""Model summaries: each module's name, class, output shape and parameter count, and the
totals, as ``model.summary(inputShape)`` or ``pymodules.summary(model, inputShape)`` print.

The output shapes come from one forward of the model itself on zeros of ``inputShape`` with
a batch axis of 1 in front (a list of shapes for a model of several inputs), in evaluation
mode. The model is left as it was: each module's mode, forward time and caches (output,
gradInput and the scratch buffers, what ``clearState`` drops) are put back afterwards, the
same objects with the same contents, since the dry forward runs on fresh caches of its own;
the library's and the modules' random generators are put back too. (A layer that changes its
weights in forward, as LookupTable with ``maxNorm`` renormalising rows, does so here too.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pymodules import random as _random


@dataclass
class LayerRow:
    """One module of the tree: ``depth`` below the model, its name and class, the shape of
    its output in the dry forward (a tuple, a list of them for a table, None when unknown),
    its parameters (a container: those of its whole subtree) and whether they are frozen."""

    depth: int
    name: str
    className: str
    outputShape: object
    params: int
    frozen: bool
    container: bool


@dataclass
class ModelOverview:
    """What ``summary`` prints: ``rows`` in pre-order (a Graph's nodes in the order they
    run) and the totals; ``str()`` is the table."""

    rows: list
    total: int
    trainable: int
    frozen: int
    bytes: int
    dtype: str
    runningState: int
    inputShape: object

    def __str__(self):
        head = ("Layer", "Class", "Output shape", "Params")
        body = [("  " * r.depth + r.name, r.className, _shape_text(r.outputShape),
                 f"{r.params:,}") for r in self.rows]
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(4)]

        def line(cells, frozen=False):
            text = "  ".join([*(c.ljust(w) for c, w in zip(cells[:3], widths, strict=False)),
                              cells[3].rjust(widths[3])])
            return (text + "  frozen" if frozen else text).rstrip()

        rule = "-" * (sum(widths) + 6)
        lines = [line(head), rule,
                 *(line(cells, r.frozen) for cells, r in zip(body, self.rows, strict=True)),
                 rule]
        lines.append(f"Total params: {self.total:,}")
        lines.append(f"Trainable params: {self.trainable:,}")
        lines.append(f"Frozen params: {self.frozen:,}" +
                     (" (scaleW = scaleB = 0)" if self.frozen else ""))
        lines.append(f"Parameter memory: {self.bytes:,} bytes ({self.bytes / 2**20:.2f} MiB), "
                     f"{self.dtype}")
        if self.runningState:
            lines.append(f"Running state (not trained): {self.runningState:,} values")
        if self.inputShape is None:
            lines.append("Output shapes: of the last forward (? where none ran); give "
                         "inputShape for a forward on zeros")
        else:
            lines.append(f"Output shapes: one forward on zeros of {_shape_text(self.inputShape)}"
                         f" (batch axis 1 included)")
        return "\n".join(lines)

    __repr__ = __str__


def _shape_text(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _own_arrays(module):
    """The parameter arrays this module holds itself (a container holds none)."""
    return [getattr(m, v) for m, v, _ in module._slots() if m is module]


def _unique(arrays):
    seen, out = set(), []
    for a in arrays:
        if id(a) not in seen:
            seen.add(id(a))
            out.append(a)
    return out


def numParameters(module) -> int:
    """The number of trainable values of ``module``'s tree (each array counted once), read
    from the arrays as they are: nothing is moved into one flat vector as getParameters
    does."""
    return int(sum(a.size for a in _unique(getattr(m, v) for m, v, _ in module._slots())))


def _is_frozen(module) -> bool:
    return module.scaleW == 0 and module.scaleB == 0


def _shape_of(output):
    if isinstance(output, np.ndarray):
        return None if output.ndim == 1 and output.size == 0 else tuple(output.shape)
    if isinstance(output, (list, tuple)) and output:
        return [_shape_of(o) for o in output]
    return None


def _input_shapes(model, inputShape):
    """One shape (a tuple of ints) or a list of shapes, checked; the batch axis is not in
    them."""
    who = f"{model.getName()}.summary"

    def one(shape):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (list, tuple)) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                for d in shape):
            raise ValueError(f"{who}: inputShape must be a shape (positive ints, without "
                             f"the batch axis) or a list of shapes, got {inputShape!r}")
        return tuple(int(d) for d in shape)

    if isinstance(inputShape, (list, tuple)) and inputShape and \
            all(isinstance(s, (list, tuple)) for s in inputShape):
        return [one(s) for s in inputShape]
    return one(inputShape)


def _dry_forward(model, shapes):
    """Forward zeros of ``shapes`` (batch 1 added) through ``model`` in evaluation mode on
    fresh caches; return {id(module): output shape}; the model is put back as it was."""
    modules = list(model.modules_preorder())
    kept = []
    for m in modules:
        attrs = {"train": bool(m.isTraining()), "forwardTime": m.forwardTime}
        cleared = m._cleared()
        attrs.update((a, getattr(m, a, None)) for a in cleared)
        kept.append((m, attrs, cleared))
    rng = _random.generator().bit_generator.state
    streams = [(s, s.state) for s in _random.module_streams(model)]
    dtype = model.dtype
    x = [np.zeros((1, *s), dtype) for s in shapes] if isinstance(shapes, list) \
        else np.zeros((1, *shapes), dtype)
    try:
        for m, _, cleared in kept:
            for a, value in cleared.items():
                setattr(m, a, value)
            m.train = False
        try:
            model.forward(x)
        except (ValueError, TypeError) as err:
            given = _shape_text([a.shape for a in x] if isinstance(x, list) else x.shape)
            raise type(err)(f"{model.getName()}.summary: the forward on zeros of shape "
                            f"{given} failed (is inputShape the model's, without the batch "
                            f"axis?): {err}") from err
        return {id(m): _shape_of(m.output) for m in modules}
    finally:
        for m, attrs, _ in kept:
            for a, value in attrs.items():
                setattr(m, a, value)
        _random.generator().bit_generator.state = rng
        for s, state in streams:
            s.state = state


def _class_name(module):
    from pymodules.nn.graph import _InputLayer

    return "Input" if isinstance(module, _InputLayer) else type(module).__name__


def overview(model, inputShape=None) -> ModelOverview:
    """The rows and totals ``summary`` prints, as a ModelOverview."""
    from pymodules.nn.containers import Container

    if inputShape is None:
        shapes = None
        outputs = {id(m): _shape_of(m.output) for m in model.modules_preorder()}
    else:
        shapes = _input_shapes(model, inputShape)
        outputs = _dry_forward(model, shapes)
    rows = []

    def walk(m, depth):
        container = isinstance(m, Container)
        arrays = _unique(getattr(o, v) for o, v, _ in m._slots()) if container \
            else _own_arrays(m)
        rows.append(LayerRow(depth, m.getName(), _class_name(m), outputs.get(id(m)),
                             int(sum(a.size for a in arrays)),
                             bool(arrays) and not container and _is_frozen(m), container))
        for child in m.children():
            walk(child, depth + 1)

    walk(model, 0)
    total = trainable = nbytes = 0
    dtypes = set()
    seen = set()
    for m in model.modules_preorder():
        for a in _own_arrays(m):
            if id(a) in seen:
                continue
            seen.add(id(a))
            total += a.size
            nbytes += a.nbytes
            dtypes.add(str(a.dtype))
            if not _is_frozen(m):
                trainable += a.size
    running = int(sum(np.asarray(e).size for e in model.getExtraParameter()))
    return ModelOverview(rows, int(total), int(trainable), int(total - trainable), int(nbytes),
                         "/".join(sorted(dtypes)) or str(np.dtype(model.dtype)), running,
                         shapes)


def summary(model, inputShape=None, printFn=print):
    """Print the table of ``model``'s modules (name, class, output shape, parameters; a
    container's row counts its whole subtree) and the totals (trainable and frozen
    parameters, their memory) through ``printFn``, line by line; return None, as Keras.
    ``overview(model, inputShape)`` gives the same as data.

    ``inputShape``: the shape of one input record, without the batch axis (a list of shapes
    for a model of several inputs); the output shapes are those of one forward on zeros
    with a batch axis of 1, after which the model is as before (see the module's
    documentation). None: no forward; the shapes of the last forward, where there was one.
    """
    for line in str(overview(model, inputShape)).split("\n"):
        printFn(line)
