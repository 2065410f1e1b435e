"""ONNX export: ``model.saveONNX(path, inputShape, opset=17)``.

The model is walked once with sample inputs of two batch sizes (a copy in evaluation mode,
so that the model itself is untouched): every module sees the arrays it would see in
``forward``, which fixes each tensor's per-sample shape and tells the batch axis (the one
whose size follows the batch) apart from the others. Each module then becomes the ONNX
nodes that compute what its ``forward`` computes in evaluation mode, with the batch axis of
the graph's inputs and outputs a dynamic dimension ``batch``.

The file is float32 whatever the model's dtype: ONNX Runtime's CPU kernels for Conv, LSTM,
GRU, RNN and pooling are float32 only, so a float64 model is exported with its parameters
rounded to float32. The graph's inputs are ``input`` (``input0``, ``input1``, ... for a
table), its outputs ``output`` (``output0``, ...; nested tables flattened depth first).
LookupTable indices stay float32 in the file, as in pymodules, and are cast to int64 inside.

A module whose class (exactly: a subclass may compute something else) has no conversion
here raises ValueError naming it; so does one whose computation cannot be written with a
dynamic batch axis (SoftMax over the batch axis of a 3-D input, say).
"""

from __future__ import annotations

import math

import numpy as np

_BATCHES = (2, 3)  # the sample batch sizes of the walk (two: the batch axis is what differs)
_MIN_OPSET = 13   # Split, Squeeze, Unsqueeze and ReduceSum take their axes as inputs from 13


class _T:
    """A tensor of the graph: its ONNX name and the arrays it holds at each sample batch."""

    __slots__ = ("name", "traces")

    def __init__(self, name, traces):
        self.name, self.traces = name, traces

    @property
    def shape(self):
        return self.traces[0].shape

    @property
    def rank(self):
        return self.traces[0].ndim

    def batch_axes(self):
        """The axes whose size changes with the batch size."""
        a, b = self.traces
        return [i for i in range(a.ndim) if a.shape[i] != b.shape[i]]


def _names(v):
    return [_names(x) for x in v] if isinstance(v, list) else v.name


def _flat(v):
    if isinstance(v, list):
        return [t for x in v for t in _flat(x)]
    return [v]


class _Builder:
    """The graph being written: nodes, initialisers, fresh names, the path for errors."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes, self.inits = [], []
        self.path = []
        self._used = set()
        self._consts = {}

    # -- names and constants -------------------------------------------------------------------
    def fresh(self, hint):
        base = "".join(c if c.isalnum() or c in "_." else "_" for c in hint)
        name, k = base, 0
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def const(self, value, hint="const", dtype=np.float32, key=None):
        """An initialiser holding ``value`` (float32 unless ``dtype``); the same ``key``
        gives the same initialiser (arrays shared by several modules)."""
        from onnx import numpy_helper

        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.array(value, dtype=dtype, order="C"), name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, values, hint="shape"):
        return self.const(np.asarray(values, np.int64).reshape(-1), hint, np.int64,
                          key=("ints", tuple(int(v) for v in np.ravel(values))))

    def scalar(self, value):
        return self.const(np.float32(value), "scalar", key=("f32", float(value)))

    def op(self, op_type, inputs, outputs=1, **attrs):
        """Add a node; its output name (a list of names for ``outputs`` > 1)."""
        from onnx import helper

        scope = self.path[-1].getName() if self.path else "graph"
        outs = [self.fresh(f"{scope}/{op_type}") for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs,
                                           name=self.fresh(f"{scope}/{op_type}_node"), **attrs))
        return outs[0] if outputs == 1 else outs

    # -- operators whose signature changed between opsets --------------------------------------
    def reduce(self, op_type, x, axes, keepdims):
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def reshape(self, x: _T, traces):
        """``x`` reshaped as ``traces`` (the arrays of the result): the size of the axis that
        follows the batch is -1, the others fixed."""
        target = _target_shape(self, traces)
        return _T(self.op("Reshape", [x.name, self.ints(target)]), traces)

    # -- errors --------------------------------------------------------------------------------
    def refuse(self, module, why):
        where = "/".join(m.getName() for m in self.path[:-1])
        cls = type(module)
        raise ValueError(f"saveONNX: {module.getName()} ({cls.__module__}.{cls.__qualname__})"
                         + (f" in {where}" if where else "") + f" {why}")

    def axis(self, module, x: _T, axis, what="axis"):
        """``axis`` of ``x``, refused when it is the batch axis."""
        if axis in x.batch_axes():
            self.refuse(module, f"works along the batch axis ({what} {axis} of an input of "
                                f"shape {x.shape}), which the file keeps dynamic")
        return axis

    # -- the walk ------------------------------------------------------------------------------
    def convert(self, module, x):
        """The graph value (a _T or a list) of ``module`` applied to the value ``x``."""
        self.path.append(module)
        try:
            cls = type(module)
            if cls in _CONTAINERS:
                return _CONTAINERS[cls](self, module, x)
            conv = _LEAVES.get(cls)
            if conv is None:
                self.refuse(module, "has no ONNX equivalent in pymodules' exporter")
            y = _run(module, x)
            names = conv(self, module, x, y)
            return _bind(names, y)
        finally:
            self.path.pop()


def _target_shape(b, traces):
    a, c = traces[0].shape, traces[1].shape
    moving = [i for i in range(len(a)) if a[i] != c[i]]
    if len(moving) > 1:
        b.refuse(b.path[-1], f"gives shapes {a} and {c} at batch sizes {_BATCHES}: more than "
                             f"one axis follows the batch, which a file with one dynamic "
                             f"axis cannot express")
    return [-1 if i in moving else s for i, s in enumerate(a)]


def _copy(v):
    if isinstance(v, (list, tuple)):
        return [_copy(x) for x in v]
    return np.array(v, copy=True)


def _at(v, k):
    """The arrays of value ``v`` at sample batch ``k`` (copies: a layer may work in place)."""
    return [_at(x, k) for x in v] if isinstance(v, list) else np.array(v.traces[k], copy=True)


def _run(module, x):
    """The module's outputs at each sample batch, as a structure of per-batch lists."""
    outs = [_copy(module.forward(_at(x, k))) for k in range(len(_BATCHES))]
    return _zip(outs)


def _zip(outs):
    if isinstance(outs[0], list):
        return [_zip([o[i] for o in outs]) for i in range(len(outs[0]))]
    return outs


def _bind(names, y):
    if isinstance(names, list):
        return [_bind(n, t) for n, t in zip(names, y, strict=True)]
    return _T(names, y)


_LEAVES = {}
_CONTAINERS = {}


def _leaf(*classes):
    def register(fn):
        for c in classes:
            _LEAVES[c] = fn
        return fn
    return register


def _container(*classes):
    def register(fn):
        for c in classes:
            _CONTAINERS[c] = fn
        return fn
    return register


# -- the entry ---------------------------------------------------------------------------------
def _shapes(inputShape):
    """inputShape as a list of per-sample shapes (tuples), with the structure of the input:
    a shape, or a (nested) list of shapes."""
    def is_shape(s):
        return isinstance(s, (list, tuple)) and all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in s)
    if isinstance(inputShape, (int, np.integer)):
        inputShape = (inputShape,)
    if is_shape(inputShape):
        if any(d < 1 for d in inputShape):
            raise ValueError(f"saveONNX: inputShape sizes must be >= 1, got {list(inputShape)}")
        return tuple(int(d) for d in inputShape)
    if isinstance(inputShape, (list, tuple)) and inputShape:
        return [_shapes(s) for s in inputShape]
    raise TypeError(f"saveONNX: inputShape must be a shape without the batch axis (a list of "
                    f"ints) or a list of shapes, got {inputShape!r}")


def model_proto(model, inputShape, opset=17):
    """The ONNX ModelProto of ``model`` in evaluation mode (see the module docstring)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError as err:
        raise ImportError("saveONNX needs the onnx package: pip install 'pymodules[onnx]'") \
            from err

    from pymodules.nn.module import Module, whole

    if not isinstance(model, Module):
        raise TypeError(f"saveONNX takes a Module, got {type(model).__name__}")
    opset = whole("saveONNX", "opset", opset)
    newest = onnx.defs.onnx_opset_version()
    if not _MIN_OPSET <= opset <= newest:
        raise ValueError(f"saveONNX: opset must lie in [{_MIN_OPSET}, {newest}] (the installed "
                         f"onnx {onnx.__version__}), got {opset}")
    shapes = _shapes(inputShape)
    copy = model.cloneModule().evaluate()
    b = _Builder(opset)

    graph_inputs = []

    def make_input(s, name):
        traces = [np.zeros((n,) + s, copy.dtype) for n in _BATCHES]
        graph_inputs.append(helper.make_tensor_value_info(
            name, TensorProto.FLOAT, ["batch", *s]))
        b._used.add(name)
        return _T(name, traces)

    if isinstance(shapes, tuple):
        x = make_input(shapes, "input")
    else:
        counter = iter(range(1 << 30))

        def nest(s):
            return [nest(t) for t in s] if isinstance(s, list) else \
                make_input(s, f"input{next(counter)}")
        x = nest(shapes)
    try:
        y = b.convert(copy, x)
    except ValueError as err:
        if str(err).startswith("saveONNX"):
            raise
        raise ValueError(f"saveONNX: {model.getName()} does not run on inputs of shape "
                         f"{inputShape} (plus the batch axis): {err}") from err
    outs = _flat(y)
    single = not isinstance(y, list)
    graph_outputs = []
    inputs = {t.name for t in _flat(x)}
    renamed = {}  # a node output that became a graph output: its new name
    for j, t in enumerate(outs):
        name = "output" if single else f"output{j}"
        if t.name in inputs or t.name in renamed:
            source = renamed.get(t.name, t.name)
            b.nodes.append(helper.make_node("Identity", [source], [name], name=f"{name}_node"))
        else:
            _rename(b.nodes, t.name, name)
            renamed[t.name] = name
        shape = ["batch" if t.traces[0].shape[i] != t.traces[1].shape[i] and
                 t.traces[0].shape[i] == _BATCHES[0] else
                 (f"{name}_dim{i}" if t.traces[0].shape[i] != t.traces[1].shape[i] else d)
                 for i, d in enumerate(t.shape)]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(b.nodes, model.getName(), graph_inputs, graph_outputs, b.inits)
    proto = helper.make_model(graph, producer_name="pymodules",
                              opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, _IR_FOR_OPSET.get(opset, proto.ir_version))
    return proto


# The IR version each opset came with: a file says the oldest that holds it, so that older
# runtimes read it.
_IR_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10}


def _rename(nodes, old, new):
    for node in nodes:
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new


def save_onnx(model, path, inputShape, opset=17, overWrite=False, *, storage_options=None):
    """Write ``model`` (evaluation mode) to ``path`` as an ONNX file; return the model."""
    from pymodules.persistence.storage import open_write

    # Converted inside the block: an existing path (overWrite False) is refused first, and
    # a failed conversion leaves nothing behind.
    with open_write(path, overWrite, storage_options) as (f, _):
        f.write(model_proto(model, inputShape, opset).SerializeToString())
    return model


# -- containers --------------------------------------------------------------------------------
def _sequential(b, m, x):
    for child in m.modules:
        x = b.convert(child, x)
    return x


def _concat(b, m, x):
    from pymodules.nn.table import axis_of

    outs = [b.convert(child, x) for child in m.modules]
    if not outs:
        b.refuse(m, "has no children")
    first = outs[0]
    axis = b.axis(m, first, axis_of(m.dimension, first.rank), "dimension")
    traces = [np.concatenate([o.traces[k] for o in outs], axis) for k in range(2)]
    return _T(b.op("Concat", [o.name for o in outs], axis=axis), traces)


def _concat_table(b, m, x):
    return [b.convert(child, x) for child in m.modules]


def _parallel_table(b, m, x):
    if not isinstance(x, list) or len(x) != len(m.modules):
        b.refuse(m, f"needs a table of {len(m.modules)} entries")
    return [b.convert(child, xi) for child, xi in zip(m.modules, x, strict=True)]


def _map_table(b, m, x):
    if not isinstance(x, list):
        b.refuse(m, "needs a table input")
    return [b.convert(m.modules[0], xi) for xi in x]


def _graph(b, g, x):
    from pymodules.nn.graph import _MANY, _SOURCE

    n_in = len(g._inIndex)
    if n_in > 1 and (not isinstance(x, list) or len(x) != n_in):
        b.refuse(g, f"has {n_in} inputs: inputShape must be a list of {n_in} shapes")
    values = [None] * len(g._steps)
    for k, (element, how, src) in enumerate(g._steps):
        if how == _SOURCE:
            v = x[src] if n_in > 1 else x
        elif how == _MANY:
            v = [values[p] for p in src]
        else:
            v = values[src]
        values[k] = b.convert(element, v)
    outs = [values[k] for k in g._outIndex]
    return outs[0] if len(outs) == 1 else outs


def _time_distributed(b, m, x):
    if not isinstance(x, _T) or x.rank < 3:
        b.refuse(m, "needs an input (batch, time, ...)")
    folded = b.reshape(x, [t.reshape((t.shape[0] * t.shape[1],) + t.shape[2:])
                           for t in x.traces])
    y = b.convert(m.modules[0], folded)
    if not isinstance(y, _T):
        b.refuse(m, "wraps a layer whose output is a table")
    return b.reshape(y, [yt.reshape(xt.shape[:2] + yt.shape[1:])
                         for xt, yt in zip(x.traces, y.traces, strict=True)])


def _recurrent(b, m, x):
    return b.convert(m._cell(), x)


def _bi_recurrent(b, m, x):
    fwd, rev = m._cells()
    yf = _rnn(b, fwd, x, "forward")
    yr = _rnn(b, rev, x, "reverse")
    return b.convert(m._merge, [yf, yr])


# -- recurrent cells: ONNX LSTM, GRU and RNN ---------------------------------------------------
def _blocks(a, order, n):
    """The row blocks of ``a`` (n blocks) in ``order``."""
    parts = np.split(np.asarray(a, np.float64), n, axis=0)
    return np.concatenate([parts[i] for i in order], axis=0)


def _rnn(b, cell, x, direction="forward"):
    """The (batch, time, hidden) output of ``cell`` run over ``x`` in ``direction``."""
    from pymodules.nn.recurrent import GRU, LSTM, LSTMPeephole, RnnCell

    pushed = not b.path or b.path[-1] is not cell
    if pushed:
        b.path.append(cell)
    try:
        if type(cell) not in (LSTM, GRU, RnnCell, LSTMPeephole):
            b.refuse(cell, "has no ONNX equivalent in pymodules' exporter")
        if not isinstance(x, _T) or x.rank != 3:
            b.refuse(cell, "needs an input (batch, time, features)")
        reverse = direction == "reverse"
        xs = [t[:, ::-1] if reverse else t for t in x.traces]
        ys = [_copy(cell.forward(np.ascontiguousarray(t))) for t in xs]
        traces = [y[:, ::-1].copy() if reverse else y for y in ys]
        h = cell.hiddenSize
        attrs = {}
        if type(cell) is LSTM:
            op = "LSTM"
            w = _blocks(cell.weight, (0, 3, 2, 1), 4)            # i, g, f, o -> i, o, f, c
            r = _blocks(cell.hiddenWeight, (0, 3, 2, 1), 4)
            bias = np.concatenate([_blocks(cell.bias, (0, 3, 2, 1), 4), np.zeros(4 * h)])
            extra = []
        elif type(cell) is LSTMPeephole:
            op = "LSTM"
            if cell.weight is None:  # p > 0: a Linear per gate, stacked i, o, f, c
                w = np.concatenate([getattr(cell, "weight" + k) for k in "IOFG"])
                b_ih = np.concatenate([getattr(cell, "bias" + k) for k in "IOFG"])
            else:
                w = _blocks(cell.weight, (0, 3, 1, 2), 4)        # i, f, g, o -> i, o, f, c
                b_ih = _blocks(cell.bias, (0, 3, 1, 2), 4)
            r = np.concatenate([cell.hiddenWeightI, cell.hiddenWeightO, cell.hiddenWeightF,
                                cell.hiddenWeightG])
            bias = np.concatenate([b_ih, np.zeros(4 * h)])
            extra = ["", "", "", b.const(np.concatenate(
                [cell.peepholeI, cell.peepholeO, cell.peepholeF])[None], "P")]
        elif type(cell) is GRU:
            # BigDL's GRU applies the reset gate before U_n: ONNX's linear_before_reset=0.
            op = "GRU"
            w = _blocks(cell.weight, (1, 0, 2), 3)               # r, z, n -> z, r, h
            u_r, u_z = np.split(np.asarray(cell.hiddenWeightRZ), 2)
            r = np.concatenate([u_z, u_r, cell.hiddenWeightN])
            bias = np.concatenate([_blocks(cell.bias, (1, 0, 2), 3), np.zeros(3 * h)])
            extra = []
            attrs["linear_before_reset"] = 0
        else:
            op = "RNN"
            w, r = cell.weight, cell.hiddenWeight
            bias = np.concatenate([np.zeros(h) if cell.bias is None else cell.bias,
                                   np.zeros(h) if cell.hiddenBias is None else cell.hiddenBias])
            extra = []
            attrs["activations"] = [type(cell.activation).__name__.replace("ReLU", "Relu")]
        xt = b.op("Transpose", [x.name], perm=[1, 0, 2])
        y = b.op(op, [xt, b.const(np.asarray(w)[None], "W"), b.const(np.asarray(r)[None], "R"),
                      b.const(bias[None], "B"), *extra], hidden_size=h, direction=direction,
                 **attrs)
        y = b.op("Squeeze", [y, b.ints([1], "axes")])
        return _T(b.op("Transpose", [y], perm=[1, 0, 2]), traces)
    finally:
        if pushed:
            b.path.pop()


def _cell_leaf(b, m, x, y):
    # _run already ran the cell; _rnn runs it again on its own, which costs one forward.
    return _rnn(b, m, x).name


# -- layers ------------------------------------------------------------------------------------
def _unary(op_type, **attrs):
    def conv(b, m, x, y):
        return b.op(op_type, [x.name], **attrs)
    return conv


def _identity(b, m, x, y):
    return _names(x)


def _linear(b, m, x, y):
    if x.rank != 2:
        b.refuse(m, f"needs an input (batch, {m.inputSize}), got one of shape {x.shape}")
    ins = [x.name, b.const(m.weight, "weight", key=id(m.weight))]
    if m.bias is not None:
        ins.append(b.const(m.bias, "bias", key=id(m.bias)))
    return b.op("Gemm", ins, transB=1)


def _threshold(b, m, x, y):
    keep = b.op("Greater", [x.name, b.scalar(m.th)])
    return b.op("Where", [keep, x.name, b.scalar(m.v)])


def _clip(b, m, x, y):
    return b.op("Clip", [x.name, b.scalar(m.minValue), b.scalar(m.maxValue)])


def _leaky(b, m, x, y):
    return b.op("LeakyRelu", [x.name], alpha=m.negval)


def _elu(b, m, x, y):
    return b.op("Elu", [x.name], alpha=m.alpha)


def _softplus(b, m, x, y):
    bx = x.name if m.beta == 1 else b.op("Mul", [x.name, b.scalar(m.beta)])
    sp = b.op("Softplus", [bx])
    if m.beta != 1:
        sp = b.op("Div", [sp, b.scalar(m.beta)])
    return b.op("Where", [b.op("Greater", [bx, b.scalar(m.threshold)]), x.name, sp])


def _power(b, m, x, y):
    z = x.name
    if m.scale != 1:
        z = b.op("Mul", [z, b.scalar(m.scale)])
    if m.shift != 0:
        z = b.op("Add", [z, b.scalar(m.shift)])
    return b.op("Pow", [z, b.scalar(m.power)])


def _square(b, m, x, y):
    return b.op("Mul", [x.name, x.name])


def _channel_axis(b, m, x):
    """Axis 1 of a batched (batch, n) or (batch, c, h, w) input; pymodules reads a 3-D
    input as one (c, h, w) sample, whose channels would be the batch axis here."""
    if x.rank not in (2, 4):
        b.refuse(m, f"reads a 3-D input as one (c, h, w) image, normalising across the batch "
                    f"axis; only inputs (batch, n) and (batch, c, h, w) export (got shape "
                    f"{x.shape})")
    return 1


def _prelu(b, m, x, y):
    if m._shared:
        slope = np.asarray(m.weight).reshape(1)
    else:
        _channel_axis(b, m, x)
        slope = np.asarray(m.weight).reshape((-1,) + (1,) * (x.rank - 2))
    return b.op("PRelu", [x.name, b.const(slope, "slope")])


def _softmax(b, m, x, y):
    from pymodules.nn.activation import SoftMin

    axis = _channel_axis(b, m, x)
    z = b.op("Neg", [x.name]) if type(m) is SoftMin else x.name
    return b.op("Softmax", [z], axis=axis)


def _log_softmax(b, m, x, y):
    if x.rank != 2:
        b.refuse(m, f"takes (batch, n) inputs, got shape {x.shape}")
    return b.op("LogSoftmax", [x.name], axis=1)


def _log_sigmoid(b, m, x, y):
    return b.op("Neg", [b.op("Softplus", [b.op("Neg", [x.name])])])


def _tanh_shrink(b, m, x, y):
    return b.op("Sub", [x.name, b.op("Tanh", [x.name])])


def _soft_shrink(b, m, x, y):
    return b.op("Shrink", [x.name], bias=m.the_lambda, lambd=m.the_lambda)


def _hard_shrink(b, m, x, y):
    return b.op("Shrink", [x.name], bias=0.0, lambd=m.the_lambda)


def _binary_threshold(b, m, x, y):
    return b.op("Cast", [b.op("Greater", [x.name, b.scalar(m.th)])], to=1)


def _rrelu(b, m, x, y):
    return b.op("LeakyRelu", [x.name], alpha=(m.lower + m.upper) / 2)


def _dropout(b, m, x, y):
    if m.scale:
        return x.name
    return b.op("Mul", [x.name, b.scalar(1 - m.p)])


def _spatial_dropout(b, m, x, y):
    return b.op("Mul", [x.name, b.scalar(1 - m.p)])


def _masking(b, m, x, y):
    """A time step (axis 1) whose values all equal maskValue becomes zeros."""
    axes = list(range(2, x.rank))
    same = b.op("Cast", [b.op("Equal", [x.name, b.scalar(m.maskValue)])], to=1)
    if axes:
        same = b.reduce("ReduceMin", same, axes, True)
    keep = b.op("Sub", [b.scalar(1.0), same])
    return b.op("Mul", [x.name, keep])


def _batch_norm(b, m, x, y):
    from pymodules.nn.normalization import SpatialBatchNormalization

    n = m.nOutput
    weight = np.ones(n) if m.weight is None else m.weight
    bias = np.zeros(n) if m.bias is None else m.bias
    params = [b.const(weight, "scale"), b.const(bias, "B"), b.const(m.runningMean, "mean"),
              b.const(m.runningVar, "var")]
    nhwc = type(m) is SpatialBatchNormalization and m.dataFormat == "NHWC"
    if x.rank < 2:
        b.refuse(m, f"needs a batch of features, got shape {x.shape}")
    z = b.op("Transpose", [x.name], perm=[0, x.rank - 1, *range(1, x.rank - 1)]) \
        if nhwc else x.name
    z = b.op("BatchNormalization", [z, *params], epsilon=m.eps)
    if nhwc:
        z = b.op("Transpose", [z], perm=[0, *range(2, x.rank), 1])
    return z


def _layer_norm(b, m, x, y):
    from pymodules.nn.layer_norm import EPS

    w, bias = b.const(m.weight, "weight"), b.const(m.bias, "bias")
    if b.opset >= 17:
        return b.op("LayerNormalization", [x.name, w, bias], axis=-1, epsilon=EPS)
    mean = b.reduce("ReduceMean", x.name, [-1], True)
    d = b.op("Sub", [x.name, mean])
    var = b.reduce("ReduceMean", b.op("Mul", [d, d]), [-1], True)
    std = b.op("Sqrt", [b.op("Add", [var, b.scalar(EPS)])])
    return b.op("Add", [b.op("Mul", [b.op("Div", [d, std]), w]), bias])


def _normalize(b, m, x, y):
    import sys

    axis = 1 if x.rank > 1 else b.axis(m, x, 0)
    a = b.op("Abs", [x.name])
    if m.p >= sys.float_info.max:
        norm = b.op("Add", [b.reduce("ReduceMax", a, [axis], True), b.scalar(m.eps)])
    else:
        s = a if m.p == 1 else b.op("Pow", [a, b.scalar(m.p)])
        norm = b.op("Add", [b.reduce("ReduceSum", s, [axis], True), b.scalar(m.eps)])
        if m.p != 1:
            norm = b.op("Pow", [norm, b.scalar(1 / m.p)])
    return b.op("Div", [x.name, norm])


def _lrn(b, m, x, y):
    if x.rank != 4:
        b.refuse(m, f"takes (batch, c, h, w) images, got shape {x.shape}")
    return b.op("LRN", [x.name], size=m.size, alpha=m.alpha, beta=m.beta, bias=m.k)


def _lookup(b, m, x, y):
    w = np.asarray(m.weight, np.float64)
    if m.maxNorm < np.finfo(np.float64).max:
        w = _renormed(w, m.maxNorm, m.normType)
    idx = b.op("Cast", [x.name], to=7)
    return b.op("Gather", [b.const(w, "weight"), idx], axis=0)


def _renormed(w, max_norm, p):
    """Every row of ``w`` rescaled as a lookup rescales the rows it reads (norm at most
    max_norm): the result of each lookup is the same, whichever rows a batch reads."""
    norms = np.sum(np.abs(w) ** p, axis=1) ** (1 / p)
    scale = np.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    return w * scale[:, None]


# -- convolution and pooling -------------------------------------------------------------------
def _pads(size, kernel, stride, pad, dilation=1):
    """(leading, trailing) pads as the engine's window geometry places them."""
    if pad == -1:
        span = dilation * (kernel - 1) + 1
        n = (size + stride - 1) // stride
        total = max((n - 1) * stride + span - size, 0)
        return total // 2, total - total // 2
    return pad, pad


def _conv(b, m, x, y):
    if x.rank != 4:
        b.refuse(m, f"takes (batch, c, h, w) images, got shape {x.shape}")
    h, w = x.shape[2:]
    top, bottom = _pads(h, m.kernelH, m.strideH, m.padH, m.dilationH)
    left, right = _pads(w, m.kernelW, m.strideW, m.padW, m.dilationW)
    ins = [x.name, b.const(m.weight, "weight")]
    if m.bias is not None:
        ins.append(b.const(m.bias, "bias"))
    return b.op("Conv", ins, kernel_shape=[m.kernelH, m.kernelW],
                strides=[m.strideH, m.strideW], pads=[top, left, bottom, right],
                dilations=[m.dilationH, m.dilationW], group=m.nGroup)


def _full_conv(b, m, x, y):
    if x.rank != 4:
        b.refuse(m, f"takes (batch, c, h, w) images, got shape {x.shape}")
    ins = [x.name, b.const(m.weight, "weight")]
    if m.bias is not None:
        ins.append(b.const(m.bias, "bias"))
    return b.op("ConvTranspose", ins, kernel_shape=[m.kH, m.kW], strides=[m.dH, m.dW],
                pads=[m.padH, m.padW, m.padH, m.padW], output_padding=[m.adjH, m.adjW],
                group=m.nGroup)


def _temporal_conv(b, m, x, y):
    if x.rank != 3:
        b.refuse(m, f"takes (batch, frames, features), got shape {x.shape}")
    k, f = m.kernelW, m.inputFrameSize
    w = np.asarray(m.weight).reshape(m.outputFrameSize, k, f).transpose(0, 2, 1)
    xt = b.op("Transpose", [x.name], perm=[0, 2, 1])
    z = b.op("Conv", [xt, b.const(w, "weight"), b.const(m.bias, "bias")], kernel_shape=[k],
             strides=[m.strideW])
    return b.op("Transpose", [z], perm=[0, 2, 1])


def _window_pads(size, out, kernel, stride, pad):
    """ONNX pads (floor mode) giving ``out`` windows as the engine places them: the
    leading pad of its geometry, and at the end what the last window covers."""
    lead = _pads(size, kernel, stride, pad)[0]
    return lead, max(0, (out - 1) * stride + kernel - size - lead)


def _avg_counts(size, out, kernel, stride, pad, include_pad):
    """The engine's divisor along one axis: the window clipped to the padded extent, or to
    the input without ``include_pad``."""
    lead, trail = _pads(size, kernel, stride, pad)
    h0 = np.arange(out) * stride - lead
    h1 = np.minimum(h0 + kernel, size + trail)
    if include_pad:
        return (h1 - h0).astype(np.float64)
    return (np.minimum(h1, size) - np.maximum(h0, 0)).astype(np.float64)


def _pool(b, m, x, y, kernels, strides, pads, average=None):
    """Max pooling, or with ``average`` = (countIncludePad, divide) average pooling, over
    the last len(kernels) axes of a batched (batch, c, ...) input."""
    nd = len(kernels)
    if x.rank != nd + 2:
        b.refuse(m, f"takes batched inputs (batch, c, {nd} spatial axes), got shape {x.shape}")
    sizes, outs = x.shape[2:], y[0].shape[2:]
    edges = [_window_pads(*a) for a in zip(sizes, outs, kernels, strides, pads, strict=True)]
    geometry = dict(kernel_shape=list(kernels), strides=list(strides),
                    pads=[e[0] for e in edges] + [e[1] for e in edges])
    if average is None:
        return b.op("MaxPool", [x.name], **geometry)
    include, divide = average
    # Every window lies inside the padded extent, so AveragePool gives sum / prod(kernel);
    # the engine's divisor (clipped windows, pads counted or not, no division) is a fixed map.
    z = b.op("AveragePool", [x.name], count_include_pad=1, **geometry)
    window = math.prod(kernels)
    factor = np.asarray(window * (1.0 if divide else float(window)))
    for a in zip(sizes, outs, kernels, strides, pads, strict=True):
        factor = np.multiply.outer(factor, 1 / _avg_counts(*a, include))
    if np.all(factor == 1):
        return z
    return b.op("Mul", [z, b.const(factor, "divisor")])


def _max_pool(b, m, x, y):
    return _pool(b, m, x, y, (m.kH, m.kW), (m.dH, m.dW), (m.padH, m.padW))


def _avg_pool(b, m, x, y):
    kernels = x.shape[2:] if m.globalPooling and x.rank == 4 else (m.kH, m.kW)
    return _pool(b, m, x, y, kernels, (m.dH, m.dW), (m.padH, m.padW),
                 (m.countIncludePad, m.divide))


def _max_pool3d(b, m, x, y):
    return _pool(b, m, x, y, (m.kT, m.kH, m.kW), (m.dT, m.dH, m.dW),
                 (m.padT, m.padH, m.padW))


def _avg_pool3d(b, m, x, y):
    return _pool(b, m, x, y, (m.kT, m.kH, m.kW), (m.dT, m.dH, m.dW),
                 (m.padT, m.padH, m.padW), (m.countIncludePad, True))


def _volumetric_conv(b, m, x, y):
    if x.rank != 5:
        b.refuse(m, f"takes (batch, c, t, h, w) volumes, got shape {x.shape}")
    ins = [x.name, b.const(m.weight, "weight")]
    if m.bias is not None:
        ins.append(b.const(m.bias, "bias"))
    sizes, kernels = x.shape[2:], (m.kT, m.kH, m.kW)
    strides, pads = (m.dT, m.dH, m.dW), (m.padT, m.padH, m.padW)
    edges = [_pads(*a) for a in zip(sizes, kernels, strides, pads, strict=True)]
    pads = [e[0] for e in edges] + [e[1] for e in edges]
    if type(m).__name__ == "VolumetricFullConvolution":
        return b.op("ConvTranspose", ins, kernel_shape=list(kernels), strides=list(strides),
                    pads=pads, output_padding=[m.adjT, m.adjH, m.adjW], group=m.nGroup)
    return b.op("Conv", ins, kernel_shape=list(kernels), strides=list(strides), pads=pads)


# -- padding, cropping, upsampling -------------------------------------------------------------
def _window(b, m, x, y):
    axis, before, after = m._plan(x.shape)
    axes = list(range(axis, axis + len(before)))
    for a in axes:
        b.axis(m, x, a)
    z = x.name
    if any(v < 0 for v in (*before, *after)):
        starts = [max(0, -v) for v in before]
        ends = [x.shape[a] - max(0, -v) for a, v in zip(axes, after, strict=True)]
        z = b.op("Slice", [z, b.ints(starts, "starts"), b.ints(ends, "ends"),
                           b.ints(axes, "axes")])
    if any(v > 0 for v in (*before, *after)):
        pads = [0] * (2 * x.rank)
        for a, lo, hi in zip(axes, before, after, strict=True):
            pads[a], pads[x.rank + a] = max(lo, 0), max(hi, 0)
        z = b.op("Pad", [z, b.ints(pads, "pads"), b.scalar(m._value)], mode="constant")
    return z


def _padding(b, m, x, y):
    axis, at = m._plan(x.shape)
    b.axis(m, x, axis)
    n, extra = x.shape[axis], abs(m.pad)
    pads = [0] * (2 * x.rank)
    if at == n:
        pads[x.rank + axis] = extra
        return b.op("Pad", [x.name, b.ints(pads, "pads"), b.scalar(m.value)], mode="constant")
    if at == 0:
        pads[axis] = extra
        return b.op("Pad", [x.name, b.ints(pads, "pads"), b.scalar(m.value)], mode="constant")
    head, tail = b.op("Split", [x.name, b.ints([at, n - at], "split")], outputs=2, axis=axis)
    pads[x.rank + axis] = extra
    head = b.op("Pad", [head, b.ints(pads, "pads"), b.scalar(m.value)], mode="constant")
    return b.op("Concat", [head, tail], axis=axis)


def _upsampling(b, m, x, y):
    _, axis = m._plan(x.shape)
    scales = [1.0] * x.rank
    for i, s in enumerate(m._scales):
        scales[axis + i] = float(s)
    return b.op("Resize", [x.name, "", b.const(np.asarray(scales), "scales")], mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _temporal_max_pool(b, m, x, y):
    if x.rank != 3:
        b.refuse(m, f"takes (batch, frames, features), got shape {x.shape}")
    xt = b.op("Transpose", [x.name], perm=[0, 2, 1])
    z = b.op("MaxPool", [xt], kernel_shape=[m.kW], strides=[m.dW])
    return b.op("Transpose", [z], perm=[0, 2, 1])


# -- shape modules -----------------------------------------------------------------------------
def _reshaping(b, m, x, y):
    return b.reshape(x, y).name


def _narrow(b, m, x, y):
    axis, start, length = m._locate(x.traces[0])
    b.axis(m, x, axis, "dimension")
    return b.op("Slice", [x.name, b.ints([start], "starts"), b.ints([start + length], "ends"),
                          b.ints([axis], "axes")])


def _select(b, m, x, y):
    from pymodules.nn.table import axis_of

    axis = b.axis(m, x, axis_of(m.dim, x.rank), "dim")
    index = m.index + x.shape[axis] if m.index < 0 else m.index
    idx = b.const(np.int64(index), "index", np.int64)
    return b.op("Gather", [x.name, idx], axis=axis)


def _transpose(b, m, x, y):
    return b.op("Transpose", [x.name], perm=list(m._axes(x.rank)))


def _replicate(b, m, x, y):
    from pymodules.nn.shape import INTMAX
    from pymodules.nn.table import axis_of

    axis = axis_of(m.dim, x.rank + 1, m.nDim + 1 if 0 < m.nDim < INTMAX else None)
    z = b.op("Unsqueeze", [x.name, b.ints([axis], "axes")])
    reps = [1] * y[0].ndim
    reps[axis] = m.nFeatures
    return b.op("Tile", [z, b.ints(reps, "repeats")])


# -- table modules -----------------------------------------------------------------------------
def _tensors(b, m, x, lo=1):
    if not isinstance(x, list) or len(x) < lo or not all(isinstance(t, _T) for t in x):
        b.refuse(m, f"needs a table of at least {lo} arrays")
    return x


def _nary(op_type):
    def conv(b, m, x, y):
        xs = _tensors(b, m, x)
        if len(xs) == 1:
            return b.op("Identity", [xs[0].name])
        return b.op(op_type, [t.name for t in xs])
    return conv


def _chain(op_type):
    def conv(b, m, x, y):
        xs = _tensors(b, m, x)
        z = xs[0].name
        if len(xs) == 1:
            return b.op("Identity", [z])
        for t in xs[1:]:
            z = b.op(op_type, [z, t.name])
        return z
    return conv


def _binary(op_type):
    def conv(b, m, x, y):
        xs = _tensors(b, m, x, 2)
        return b.op(op_type, [xs[0].name, xs[1].name])
    return conv


def _join(b, m, x, y):
    from pymodules.nn.table import axis_of

    xs = _tensors(b, m, x)
    axis = b.axis(m, xs[0], axis_of(m.dimension, xs[0].rank, m.nInputDims), "dimension")
    return b.op("Concat", [t.name for t in xs], axis=axis)


def _split(b, m, x, y):
    from pymodules.nn.table import axis_of

    axis = b.axis(m, x, axis_of(m.dimension, x.rank, m.nInputDims), "dimension")
    n = x.shape[axis]
    parts = b.op("Split", [x.name, b.ints([1] * n, "split")], outputs=n, axis=axis)
    parts = [parts] if n == 1 else parts
    return [b.op("Squeeze", [p, b.ints([axis], "axes")]) for p in parts]


def _select_table(b, m, x, y):
    from pymodules.nn.table import _index

    return _names(x[_index(m, m.index, len(x))])


def _narrow_table(b, m, x, y):
    start, length = m._span(len(x))
    return _names(x[start:start + length])


def _flatten_table(b, m, x, y):
    return [t.name for t in _flat(x)]


# -- arithmetic, reductions, parametric elementwise --------------------------------------------
def _affine(b, m, x, y):
    from pymodules.nn.arithmetic import AddConstant, MulConstant

    if type(m) is AddConstant:
        return b.op("Add", [x.name, b.scalar(m.constant_scalar)])
    if type(m) is MulConstant:
        return b.op("Mul", [x.name, b.scalar(m.scalar)])
    return b.op("Neg", [x.name])


def _sum(b, m, x, y):
    from pymodules.nn.table import axis_of

    axis = b.axis(m, x, axis_of(m.dimension, x.rank, m.nInputDims), "dimension")
    op = "ReduceMean" if m.sizeAverage else "ReduceSum"
    return b.reduce(op, x.name, [axis], not m.squeeze)


def _max(b, m, x, y):
    from pymodules.nn.reduction import Min
    from pymodules.nn.table import axis_of

    if x.rank < 2:
        b.refuse(m, "reduces a 1-D input over its batch axis")
    axis = b.axis(m, x, axis_of(m.dim, x.rank, m.numInputDims), "dim")
    return b.reduce("ReduceMin" if type(m) is Min else "ReduceMax", x.name, [axis], False)


def _broadcast_param(b, m, x, a):
    """A parameter of shape ``m.size`` laid out against the batched input ``x`` as the
    engine applies it: element by element when it holds a sample's numbers, else repeated
    where its size is 1 (and over the batch)."""
    a = np.asarray(a).reshape(m.size)
    sample = x.shape[1:]
    if a.size == math.prod(sample) and len(m.size) != x.rank:
        return a.reshape((1,) + sample)
    if len(m.size) < x.rank:
        return a.reshape((1,) * (x.rank - len(m.size)) + a.shape)
    return a


def _scaling(b, m, x, y):
    z = x.name
    if m.weight is not None:
        z = b.op("Mul", [z, b.const(_broadcast_param(b, m, x, m.weight), "weight")])
    if m.bias is not None:
        z = b.op("Add", [z, b.const(_broadcast_param(b, m, x, m.bias), "bias")])
    return z


def _add_bias(b, m, x, y):
    return b.op("Add", [x.name, b.const(np.asarray(m.bias).reshape((1,) + x.shape[1:]),
                                        "bias")])


def _mul_scalar(b, m, x, y):
    return b.op("Mul", [x.name, b.const(np.asarray(m.weight).reshape(1), "weight")])


def _maxout(b, m, x, y):
    ins = [x.name, b.const(m.weight, "weight")]
    if m.bias is not None:
        ins.append(b.const(m.bias, "bias"))
    z = b.op("Gemm", ins, transB=1)
    z = b.op("Reshape", [z, b.ints([-1, m.maxoutNumber, m.outputSize])])
    return b.reduce("ReduceMax", z, [1], False)


def _highway(b, m, x, y):
    def affine(w, bias):
        return b.op("Gemm", [x.name, b.const(w, "weight")] +
                    ([] if bias is None else [b.const(bias, "bias")]), transB=1)
    if x.rank != 2:
        b.refuse(m, f"takes (batch, size) inputs, got shape {x.shape}")
    gate = b.op("Sigmoid", [affine(m.weightT, m.biasT)])
    h = affine(m.weightH, m.biasH)
    if m.activation is not None:
        h = _activation(b, m.activation, h)
    # t * h + (1 - t) * x = x + t * (h - x)
    return b.op("Add", [x.name, b.op("Mul", [gate, b.op("Sub", [h, x.name])])])


def _activation(b, act, name):
    """The nodes of an element-wise layer applied to the tensor ``name``."""
    conv = _LEAVES.get(type(act))
    if conv is None:
        b.refuse(act, "has no ONNX equivalent in pymodules' exporter")
    probe = np.zeros((2, 1), act.dtype)
    return conv(b, act, _T(name, [probe, probe]), [probe, probe])


def _cosine(b, m, x, y):
    if x.rank != 2:
        b.refuse(m, f"takes (batch, inputSize) inputs, got shape {x.shape}")
    w = np.asarray(m.weight, np.float64)
    wn = w / (np.sqrt(np.sum(w * w, axis=1, keepdims=True)) + 1e-12)
    xn = b.op("Add", [b.op("Sqrt", [b.reduce("ReduceSumSquare", x.name, [1], True)]),
                      b.const(np.float64(1e-12).reshape(1), "eps")])
    return b.op("Div", [b.op("Gemm", [x.name, b.const(wn, "weight")], transB=1), xn])


def _bilinear(b, m, x, y):
    x1, x2 = _tensors(b, m, x, 2)[:2]
    z = b.op("Einsum", [x1.name, b.const(m.weight, "weight"), x2.name],
             equation="bi,kij,bj->bk")
    if m.bias is not None:
        z = b.op("Add", [z, b.const(m.bias, "bias")])
    return z


def _euclidean(b, m, x, y):
    if x.rank != 2:
        b.refuse(m, f"takes (batch, inputSize) inputs, got shape {x.shape}")
    d = b.op("Sub", [b.op("Unsqueeze", [x.name, b.ints([2], "axes")]),
                     b.const(np.asarray(m.weight)[None], "weight")])
    return b.op("Sqrt", [b.reduce("ReduceSumSquare", d, [1], False)])


def _rows(b, m, x):
    x1, x2 = _tensors(b, m, x, 2)[:2]
    if x1.rank != 2:
        b.refuse(m, f"takes (batch, d) rows, got shape {x1.shape}")
    return x1.name, x2.name


def _dot(b, m, x, y):
    x1, x2 = _rows(b, m, x)
    return b.reduce("ReduceSum", b.op("Mul", [x1, x2]), [1], False)


def _cosine_distance(b, m, x, y):
    x1, x2 = _rows(b, m, x)
    dot = b.reduce("ReduceSum", b.op("Mul", [x1, x2]), [1], False)
    eps = b.const(np.float64(1e-12).reshape(1), "eps")
    n1 = b.op("Add", [b.reduce("ReduceSumSquare", x1, [1], False), eps])
    n2 = b.op("Add", [b.reduce("ReduceSumSquare", x2, [1], False), eps])
    return b.op("Div", [dot, b.op("Sqrt", [b.op("Mul", [n1, n2])])])


def _pairwise(b, m, x, y):
    x1, x2 = _rows(b, m, x)
    d = b.op("Abs", [b.op("Sub", [x1, x2])])
    if m.norm == 1:
        return b.reduce("ReduceSum", d, [1], False)
    if m.norm == 2:
        return b.op("Sqrt", [b.reduce("ReduceSumSquare", d, [1], False)])
    s = b.reduce("ReduceSum", b.op("Pow", [d, b.scalar(m.norm)]), [1], False)
    return b.op("Pow", [s, b.scalar(1.0 / m.norm)])


def _mm(b, m, x, y):
    a, c = _tensors(b, m, x, 2)[:2]
    if a.rank != 3 or c.rank != 3:
        b.refuse(m, f"takes batches of matrices (batch, r, c), got shapes {a.shape}, "
                    f"{c.shape}")
    an = b.op("Transpose", [a.name], perm=[0, 2, 1]) if m.transA else a.name
    cn = b.op("Transpose", [c.name], perm=[0, 2, 1]) if m.transB else c.name
    return b.op("MatMul", [an, cn])


def _mv(b, m, x, y):
    a, v = _tensors(b, m, x, 2)[:2]
    if a.rank != 3 or v.rank != 2:
        b.refuse(m, f"takes a batch of matrices and of vectors, got shapes {a.shape}, "
                    f"{v.shape}")
    an = b.op("Transpose", [a.name], perm=[0, 2, 1]) if m.trans else a.name
    z = b.op("MatMul", [an, b.op("Unsqueeze", [v.name, b.ints([2], "axes")])])
    return b.op("Squeeze", [z, b.ints([2], "axes")])


def _resize_bilinear(b, m, x, y):
    if x.rank != 4:
        b.refuse(m, f"takes (batch, c, h, w) images, got shape {x.shape}")
    last = m.dataFormat == "NHWC"
    z = b.op("Transpose", [x.name], perm=[0, 3, 1, 2]) if last else x.name
    channels = x.shape[3] if last else x.shape[1]
    batch = b.op("Slice", [b.op("Shape", [z]), b.ints([0], "starts"), b.ints([1], "ends")])
    sizes = b.op("Concat", [batch, b.ints([channels, m.outputHeight, m.outputWidth])], axis=0)
    mode = "align_corners" if m.alignCorners else "asymmetric"
    z = b.op("Resize", [z, "", "", sizes], mode="linear", coordinate_transformation_mode=mode)
    return b.op("Transpose", [z], perm=[0, 2, 3, 1]) if last else z


def _reverse(b, m, x, y):
    from pymodules.nn.table import axis_of

    axis = b.axis(m, x, axis_of(m.dimension, x.rank), "dimension")
    return b.op("Slice", [x.name, b.ints([-1], "starts"), b.ints([-(1 << 62)], "ends"),
                          b.ints([axis], "axes"), b.ints([-1], "steps")])


def _tile(b, m, x, y):
    from pymodules.nn.table import axis_of

    axis = b.axis(m, x, axis_of(m.dim, x.rank), "dim")
    reps = [1] * x.rank
    reps[axis] = m.copies
    return b.op("Tile", [x.name, b.ints(reps, "repeats")])


def _pack(b, m, x, y):
    parts = [x] if isinstance(x, _T) else _tensors(b, m, x)
    axis = m._axis(parts[0].rank)
    if axis == 0:
        b.refuse(m, "stacks along axis 0, the batch axis, which the file keeps dynamic")
    ups = [b.op("Unsqueeze", [t.name, b.ints([axis], "axes")]) for t in parts]
    return ups[0] if len(ups) == 1 else b.op("Concat", ups, axis=axis)


def _expand_size(b, m, x, y):
    if m.targetSizes and m.targetSizes[0] not in (-1,):
        b.refuse(m, f"sets the size of the batch axis ({m.targetSizes[0]}), which the file "
                    f"keeps dynamic; use -1 there")
    shape = [1 if s == -1 else s for s in m.targetSizes]
    return b.op("Expand", [x.name, b.ints(shape, "shape")])


def _register():
    from pymodules import nn
    from pymodules.nn.graph import _InputLayer

    _container(nn.Sequential)(_sequential)
    _container(nn.Concat)(_concat)
    _container(nn.ConcatTable)(_concat_table)
    _container(nn.ParallelTable)(_parallel_table)
    _container(nn.MapTable)(_map_table)
    _container(nn.Graph)(_graph)
    _container(nn.TimeDistributed)(_time_distributed)
    _container(nn.Recurrent)(_recurrent)
    _container(nn.BiRecurrent)(_bi_recurrent)
    _leaf(nn.LSTM, nn.GRU, nn.RnnCell, nn.LSTMPeephole)(_cell_leaf)

    _leaf(nn.Identity, nn.Contiguous, _InputLayer, nn.GaussianNoise,
          nn.GaussianDropout)(_identity)
    _leaf(nn.Linear)(_linear)
    _leaf(nn.ReLU)(_unary("Relu"))
    _leaf(nn.Threshold)(_threshold)
    _leaf(nn.HardTanh, nn.ReLU6, nn.Clamp)(_clip)
    _leaf(nn.LeakyReLU)(_leaky)
    _leaf(nn.ELU)(_elu)
    _leaf(nn.Tanh)(_unary("Tanh"))
    _leaf(nn.Sigmoid)(_unary("Sigmoid"))
    _leaf(nn.HardSigmoid)(_unary("HardSigmoid", alpha=0.2, beta=0.5))
    _leaf(nn.SoftPlus)(_softplus)
    _leaf(nn.SoftSign)(_unary("Softsign"))
    _leaf(nn.Abs)(_unary("Abs"))
    _leaf(nn.Power)(_power)
    _leaf(nn.Square)(_square)
    _leaf(nn.Sqrt)(_unary("Sqrt"))
    _leaf(nn.Exp)(_unary("Exp"))
    _leaf(nn.Log)(_unary("Log"))
    _leaf(nn.PReLU)(_prelu)
    _leaf(nn.SoftMax, nn.SoftMin)(_softmax)
    _leaf(nn.LogSoftMax)(_log_softmax)
    _leaf(nn.LogSigmoid)(_log_sigmoid)
    _leaf(nn.TanhShrink)(_tanh_shrink)
    _leaf(nn.SoftShrink)(_soft_shrink)
    _leaf(nn.HardShrink)(_hard_shrink)
    _leaf(nn.BinaryThreshold)(_binary_threshold)
    _leaf(nn.RReLU)(_rrelu)
    _leaf(nn.Dropout)(_dropout)
    _leaf(nn.SpatialDropout1D, nn.SpatialDropout2D, nn.SpatialDropout3D)(_spatial_dropout)
    _leaf(nn.Masking)(_masking)
    _leaf(nn.BatchNormalization, nn.SpatialBatchNormalization)(_batch_norm)
    _leaf(nn.LayerNormalization)(_layer_norm)
    _leaf(nn.Normalize)(_normalize)
    _leaf(nn.SpatialCrossMapLRN)(_lrn)
    _leaf(nn.LookupTable)(_lookup)
    _leaf(nn.SpatialConvolution, nn.SpatialDilatedConvolution)(_conv)
    _leaf(nn.SpatialFullConvolution)(_full_conv)
    _leaf(nn.TemporalConvolution)(_temporal_conv)
    _leaf(nn.SpatialMaxPooling)(_max_pool)
    _leaf(nn.SpatialAveragePooling)(_avg_pool)
    _leaf(nn.TemporalMaxPooling)(_temporal_max_pool)
    _leaf(nn.VolumetricConvolution, nn.VolumetricFullConvolution)(_volumetric_conv)
    _leaf(nn.VolumetricMaxPooling)(_max_pool3d)
    _leaf(nn.VolumetricAveragePooling)(_avg_pool3d)
    _leaf(nn.SpatialZeroPadding, nn.Cropping2D, nn.Cropping3D)(_window)
    _leaf(nn.Padding)(_padding)
    _leaf(nn.UpSampling1D, nn.UpSampling2D, nn.UpSampling3D)(_upsampling)
    _leaf(nn.Reshape, nn.View, nn.InferReshape, nn.Squeeze, nn.Unsqueeze)(_reshaping)
    _leaf(nn.Narrow)(_narrow)
    _leaf(nn.Select)(_select)
    _leaf(nn.Transpose)(_transpose)
    _leaf(nn.Replicate)(_replicate)
    _leaf(nn.CAddTable)(_nary("Sum"))
    _leaf(nn.CMulTable)(_chain("Mul"))
    _leaf(nn.CMaxTable)(_nary("Max"))
    _leaf(nn.CMinTable)(_nary("Min"))
    _leaf(nn.CAveTable)(_nary("Mean"))
    _leaf(nn.CSubTable)(_binary("Sub"))
    _leaf(nn.CDivTable)(_binary("Div"))
    _leaf(nn.JoinTable)(_join)
    _leaf(nn.SplitTable)(_split)
    _leaf(nn.SelectTable)(_select_table)
    _leaf(nn.NarrowTable)(_narrow_table)
    _leaf(nn.FlattenTable)(_flatten_table)
    _leaf(nn.AddConstant, nn.MulConstant, nn.Negative)(_affine)
    _leaf(nn.Sum, nn.Mean)(_sum)
    _leaf(nn.Max, nn.Min)(_max)
    _leaf(nn.CMul, nn.CAdd, nn.Scale)(_scaling)
    _leaf(nn.Add)(_add_bias)
    _leaf(nn.Mul)(_mul_scalar)
    _leaf(nn.Maxout)(_maxout)
    _leaf(nn.Highway)(_highway)
    _leaf(nn.Cosine)(_cosine)
    _leaf(nn.Bilinear)(_bilinear)
    _leaf(nn.Euclidean)(_euclidean)
    _leaf(nn.DotProduct)(_dot)
    _leaf(nn.CosineDistance)(_cosine_distance)
    _leaf(nn.PairwiseDistance)(_pairwise)
    _leaf(nn.MM)(_mm)
    _leaf(nn.MV)(_mv)
    _leaf(nn.ResizeBilinear)(_resize_bilinear)
    _leaf(nn.Reverse)(_reverse)
    _leaf(nn.Tile)(_tile)
    _leaf(nn.Pack)(_pack)
    _leaf(nn.ExpandSize)(_expand_size)


_register()
