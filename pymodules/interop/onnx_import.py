"""ONNX import: ``pm.loadONNX(path)`` builds a ``pm.Graph`` of pymodules layers from an ONNX model.

Reading is protobuf parsing (``onnx.ModelProto.ParseFromString``), never unpickling. Tensors
stored as external data are read from files inside the model's folder only, each checked
against the size its shape and type give.

Each ONNX node becomes one layer, or a few (a 1-D convolution runs as a 2-D one of height 1;
asymmetric padding is a SpatialZeroPadding in front of the convolution). Values known when
the file is read (initializers, Constant, and the shape arithmetic of ``Shape -> Gather ->
Concat -> Reshape`` chains) are folded; a dimension that is only known when the model runs
(the batch axis) is carried as a symbol, so a batch-dependent Reshape keeps it
(``InferReshape`` with 0 or -1 there). The model is returned in evaluation mode, as the file
describes inference; ``model.training()`` makes it train (BatchNormalization then uses batch
statistics, Dropout drops).

An operator, or an attribute value, with no exact pymodules equivalent raises
``NotImplementedError`` naming the operator type and the node.
"""

from __future__ import annotations

import math
import os
import posixpath

import numpy as np

_MAX_BYTES = 2 ** 31 - 1  # protobuf's limit on one message
_INT_HUGE = 2 ** 62  # ONNX's Slice "to the end" values are near INT64_MAX


# -- values --------------------------------------------------------------------------------------
class _Dim:
    """A size known only when the model runs (the batch axis, a dynamic length)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


class _Tensor:
    """A computed value: the graph node that makes it and its shape (ints and _Dims).

    ``via`` records a pure axis shuffle that made it: ("swap01", source) or
    ("unsqueeze", axes, source), so that the inverse shuffle can return the source instead of
    adding a layer (PyTorch's batch-first LSTM is written Transpose, LSTM, Squeeze, Transpose).
    """

    __slots__ = ("node", "shape", "via")

    def __init__(self, node, shape, via=None):
        self.node, self.shape, self.via = node, tuple(shape), via


class _Sym:
    """A 1-D integer vector known when the file is read except for some _Dim entries (what
    ``Shape`` gives for a computed tensor)."""

    __slots__ = ("items", "scalar")

    def __init__(self, items, scalar=False):
        self.items, self.scalar = tuple(items), scalar


class _Fill:
    """``ConstantOfShape`` of a shape holding _Dims: only a zero initial state may use it."""

    __slots__ = ("shape", "value")

    def __init__(self, shape, value):
        self.shape, self.value = shape, value


def _known(d):
    return isinstance(d, (int, np.integer))


# -- reading ---------------------------------------------------------------------------------------
def _read_bytes(path, storage_options, what, offset=0, length=None):
    from pymodules.persistence.storage import open_read

    limit = _MAX_BYTES
    with open_read(path, storage_options) as (f, size, name):
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"loadONNX: {what} {name} has {size} bytes; bytes "
                             f"[{offset}, {offset + length}) lie outside it")
        if length > limit:
            raise ValueError(f"loadONNX: {what} {name} is {length} bytes, more than the "
                             f"{limit} a protobuf message may hold")
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise ValueError(f"loadONNX: {what} {name}: read {len(data)} bytes, expected {length}")
    return data


def _folder_of(path):
    from pymodules.persistence.storage import is_url

    if is_url(path):
        return path.rsplit("/", 1)[0] if "/" in path.split("://", 1)[1] else path
    return os.path.dirname(os.path.abspath(os.fspath(path)))


def _external_path(folder, location, tensor_name, is_url):
    """The file of an external tensor: a relative path that stays inside ``folder``."""
    loc = location.replace("\\", "/")
    norm = posixpath.normpath(loc)
    if (not loc or loc.startswith("/") or norm == ".." or norm.startswith("../")
            or ":" in loc.split("/")[0]):
        raise ValueError(f"loadONNX: tensor {tensor_name!r} refers to external data "
                         f"{location!r} outside the model's folder; refused")
    if is_url:
        return folder.rstrip("/") + "/" + norm
    full = os.path.realpath(os.path.join(folder, norm))
    root = os.path.realpath(folder)
    if os.path.commonpath([full, root]) != root:
        raise ValueError(f"loadONNX: tensor {tensor_name!r} refers to external data "
                         f"{location!r}, which resolves outside the model's folder; refused")
    return full


def _load_external(onnx, model, path, storage_options):
    from pymodules.persistence.storage import is_url

    folder, url = _folder_of(path), is_url(path)
    tensors = list(model.graph.initializer)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                tensors.append(a.t)
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        if "location" not in info:
            raise ValueError(f"loadONNX: external tensor {t.name!r} names no location")
        itemsize = _itemsize(onnx, t)
        expected = math.prod(t.dims) * itemsize
        try:
            offset = int(info.get("offset", 0))
            length = int(info.get("length", expected))
        except ValueError:
            raise ValueError(f"loadONNX: external tensor {t.name!r} has a bad offset or "
                             f"length: {info}") from None
        if length != expected:
            raise ValueError(f"loadONNX: external tensor {t.name!r} of shape {list(t.dims)} "
                             f"needs {expected} bytes, its entry says {length}")
        file = _external_path(folder, info["location"], t.name, url)
        t.raw_data = _read_bytes(file, storage_options, f"external data of {t.name!r}",
                                 offset=offset, length=length)
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _itemsize(onnx, t):
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise NotImplementedError(f"loadONNX: tensor {t.name!r} has an unsupported data "
                                  f"type {t.data_type}") from None


def _to_array(onnx, t):
    from onnx import numpy_helper

    if t.HasField("raw_data"):
        need = math.prod(t.dims) * _itemsize(onnx, t)
        if len(t.raw_data) != need:
            raise ValueError(f"loadONNX: tensor {t.name!r} of shape {list(t.dims)} holds "
                             f"{len(t.raw_data)} bytes, expected {need}")
    try:
        return np.array(numpy_helper.to_array(t))
    except (ValueError, TypeError) as err:
        raise ValueError(f"loadONNX: tensor {t.name!r} of shape {list(t.dims)}: {err}") \
            from err


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("loadONNX needs the onnx package (pip install 'pymodules[onnx]')") \
            from None
    return onnx


def loadONNX(path, dtype=np.float32, storage_options=None):
    """A ``pm.Graph`` computing the ONNX model at ``path`` (a local path or an fsspec URL).

    Its inputs are the graph inputs that are not initializers, in the file's order; its
    outputs the graph outputs. Parameters are imported as ``dtype`` (float32 or float64).
    The model is in evaluation mode. ``NotImplementedError`` names an operator (and its node)
    that has no pymodules equivalent.
    """
    onnx = _require_onnx()
    dtype = np.dtype(dtype).type
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"loadONNX: dtype must be float32 or float64, got {np.dtype(dtype)}")
    data = _read_bytes(path, storage_options, "ONNX file")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as err:  # protobuf's DecodeError has no stable import path
        raise ValueError(f"loadONNX: {path} is not an ONNX model: {err}") from None
    if not model.HasField("graph"):
        raise ValueError(f"loadONNX: {path} holds no graph")
    _load_external(onnx, model, path, storage_options)
    return _Importer(onnx, model, dtype).build()


# -- the importer ----------------------------------------------------------------------------------
class _Importer:
    def __init__(self, onnx, model, dtype):
        self.onnx, self.model, self.graph = onnx, model, model.graph
        self.dtype = dtype
        self.opset = 1
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = o.version
        for o in model.opset_import:
            if o.domain not in ("", "ai.onnx"):
                used = any(n.domain == o.domain for n in self.graph.node)
                if used:
                    raise NotImplementedError(f"loadONNX: operators of domain {o.domain!r} "
                                              f"are not supported")
        self.values = {}
        self.names = set()
        self.consumers = {}
        self.skip = set()
        for n in self.graph.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        for o in self.graph.output:
            self.consumers.setdefault(o.name, []).append(None)

    # -- helpers --
    def refuse(self, node, why):
        name = node.name or "(unnamed)"
        raise NotImplementedError(f"loadONNX: {node.op_type} node {name!r}: {why}")

    def unique(self, base):
        base = base or "node"
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}/{k}"
        self.names.add(name)
        return name

    def add(self, onnx_node, module, inputs, shape, via=None):
        """A graph node running ``module`` on the _Tensors ``inputs``; its _Tensor."""
        module.setName(self.unique(onnx_node.name or onnx_node.op_type))
        prev = [t.node for t in inputs]
        node = module(*prev) if len(prev) <= 1 else module(prev)
        return _Tensor(node, shape, via)

    def chain(self, onnx_node, x, steps):
        """``x`` through ``steps``: a list of (module, output shape)."""
        for module, shape in steps:
            x = self.add(onnx_node, module, [x], shape)
        return x

    def attrs(self, node):
        from onnx import helper

        out = {}
        for a in node.attribute:
            if a.type == self.onnx.AttributeProto.TENSOR:
                out[a.name] = _to_array(self.onnx, a.t)
            elif a.type == self.onnx.AttributeProto.GRAPH:
                self.refuse(node, f"attribute {a.name} holds a subgraph")
            else:
                v = helper.get_attribute_value(a)
                if isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, list):
                    v = [x.decode() if isinstance(x, bytes) else x for x in v]
                out[a.name] = v
        return out

    def const(self, node, v, what):
        if isinstance(v, np.ndarray):
            return v
        if isinstance(v, _Sym) and all(_known(d) for d in v.items):
            return np.array(v.items, np.int64)
        self.refuse(node, f"{what} must be a constant (an initializer or Constant), not a "
                          f"value computed by the model")

    def tensor(self, node, v, what="input"):
        if isinstance(v, _Tensor):
            return v
        self.refuse(node, f"{what} must be a computed tensor here")

    def param(self, a):
        return np.ascontiguousarray(a, dtype=self.dtype)

    # -- build --
    def build(self):
        import pymodules as pm

        g = self.graph
        for t in g.initializer:
            self.values[t.name] = _to_array(self.onnx, t)
        inputs, dims = [], {}
        for vi in g.input:
            if vi.name in self.values:
                continue
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                raise NotImplementedError(f"loadONNX: input {vi.name!r} has no shape; its "
                                          f"rank must be known")
            shape = []
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(int(d.dim_value))
                else:
                    key = d.dim_param or f"{vi.name}:{k}"
                    shape.append(dims.setdefault(key, _Dim(key)))
            node = pm.Input(name=self.unique(vi.name))
            self.values[vi.name] = _Tensor(node, shape)
            inputs.append(node)
        if not inputs:
            raise ValueError("loadONNX: the graph has no input")
        for node in g.node:
            if id(node) in self.skip:
                continue
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                self.refuse(node, "operator not supported by pymodules' ONNX import")
            ins = []
            for name in node.input:
                if not name:
                    ins.append(None)
                elif name not in self.values:
                    raise ValueError(f"loadONNX: {node.op_type} node {node.name!r} reads "
                                     f"{name!r}, which no earlier node makes")
                else:
                    ins.append(self.values[name])
            try:
                outs = handler(node, ins, self.attrs(node))
            except (ValueError, TypeError, IndexError, KeyError) as err:
                # a malformed node: shapes that do not fit its layer, a missing attribute
                if str(err).startswith("loadONNX"):
                    raise
                raise ValueError(f"loadONNX: {node.op_type} node {node.name!r}: "
                                 f"{type(err).__name__}: {err}") from err
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for name, v in zip(node.output, outs, strict=False):
                if name:
                    self.values[name] = v
            for name in node.output[len(outs):]:
                if name and self.consumers.get(name):
                    self.refuse(node, f"output {name!r} is used but has no equivalent")
        outputs = []
        for vi in g.output:
            v = self.values.get(vi.name)
            if not isinstance(v, _Tensor):
                raise NotImplementedError(f"loadONNX: output {vi.name!r} is a constant, not "
                                          f"computed from the inputs")
            if v.node in inputs or v.node in outputs:
                v = self.add(_Named(vi.name), pm.Identity(dtype=self.dtype), [v], v.shape)
            outputs.append(v.node)
        model = pm.Graph(inputs, outputs)
        if self.dtype == np.float64:
            model.double()
        model.evaluate()
        return model

    # -- constants and shape arithmetic --
    def op_Constant(self, node, ins, a):
        if "value" in a:
            return a["value"]
        for key, kind in (("value_float", np.float32), ("value_floats", np.float32),
                          ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.array(a[key], kind)
        self.refuse(node, f"attributes {sorted(a)} are not supported")

    def op_Identity(self, node, ins, a):
        return ins[0]

    def op_Shape(self, node, ins, a):
        v = ins[0]
        shape = v.shape if isinstance(v, _Tensor) else np.shape(v)
        shape = shape[a.get("start", 0):a.get("end", len(shape))]
        if all(_known(d) for d in shape):
            return np.array(shape, np.int64)
        return _Sym(shape)

    def op_Cast(self, node, ins, a):
        v = ins[0]
        to = self.onnx.helper.tensor_dtype_to_np_dtype(a["to"])
        if isinstance(v, np.ndarray):
            return v.astype(to)
        if isinstance(v, _Sym):
            return v
        if np.issubdtype(to, np.floating):
            return v
        self.refuse(node, f"a computed tensor cast to {np.dtype(to)}")

    def op_ConstantOfShape(self, node, ins, a):
        value = a.get("value", np.zeros(1, np.float32))
        shape = ins[0]
        if isinstance(shape, _Sym):
            return _Fill(shape.items, value.reshape(-1)[0])
        shape = self.const(node, shape, "the shape")
        return np.full(tuple(int(s) for s in shape), value.reshape(-1)[0], value.dtype)

    def op_Gather(self, node, ins, a):
        data, idx = ins[0], ins[1]
        axis = a.get("axis", 0)
        if isinstance(data, (np.ndarray, _Sym)) and isinstance(idx, np.ndarray):
            if isinstance(data, np.ndarray):
                return np.take(data, idx, axis=axis)
            out = np.array(data.items, dtype=object)[idx]
            if all(_known(d) for d in np.reshape(out, -1)):
                return np.array(out, np.int64)
            return _Sym(out.reshape(-1)) if idx.ndim else _Sym([out], scalar=True)
        if isinstance(data, np.ndarray) and isinstance(idx, _Tensor):
            return self.embedding(node, data, idx, axis)
        x = self.tensor(node, data, "data")
        idx = self.const(node, idx, "the indices")
        axis = axis % len(x.shape)
        import pymodules as pm

        if idx.ndim == 0:
            shape = x.shape[:axis] + x.shape[axis + 1:]
            return self.add(node, pm.Select(axis, int(idx), dtype=self.dtype), [x], shape)
        if idx.ndim == 1 and idx.size == 1:
            shape = x.shape[:axis] + (1,) + x.shape[axis + 1:]
            return self.add(node, pm.Narrow(axis, int(idx[0]), 1, dtype=self.dtype), [x],
                            shape)
        self.refuse(node, f"gathering {idx.size} indices of shape {idx.shape} from a computed "
                          f"tensor")

    def embedding(self, node, table, idx, axis):
        import pymodules as pm

        if axis != 0 or table.ndim != 2:
            self.refuse(node, f"a lookup needs a 2-D table gathered along axis 0, got a "
                              f"{table.ndim}-D table along axis {axis}")
        m = pm.LookupTable(table.shape[0], table.shape[1], dtype=self.dtype)
        np.copyto(m.weight, self.param(table))
        return self.add(node, m, [idx], idx.shape + (table.shape[1],))

    def axes(self, a, ins):
        if self.opset < 13:
            return None if a.get("axes") is None else np.array(a["axes"], np.int64)
        return ins[1] if len(ins) > 1 else None

    def op_Unsqueeze(self, node, ins, a):
        axes = self.axes(a, ins)
        axes = [int(x) for x in self.const(node, axes, "axes").reshape(-1)] \
            if axes is not None else self.refuse(node, "no axes")
        v = ins[0]
        if isinstance(v, np.ndarray):
            return np.expand_dims(v, tuple(axes))
        if isinstance(v, _Sym):
            if v.scalar and len(axes) == 1:
                return _Sym(v.items)
            self.refuse(node, "unsqueezing a vector of sizes")
        x = self.tensor(node, v)
        rank = len(x.shape) + len(axes)
        axes = sorted(ax % rank for ax in axes)
        import pymodules as pm

        shape = list(x.shape)
        steps = []
        for ax in axes:
            shape.insert(ax, 1)
            steps.append((pm.Unsqueeze(ax, dtype=self.dtype), tuple(shape)))
        y = self.chain(node, x, steps)
        y.via = ("unsqueeze", tuple(axes), x)
        return y

    def op_Squeeze(self, node, ins, a):
        axes = self.axes(a, ins)
        v = ins[0]
        if isinstance(v, np.ndarray):
            return np.squeeze(v, None if axes is None else tuple(
                int(x) for x in self.const(node, axes, "axes").reshape(-1)))
        x = self.tensor(node, v)
        rank = len(x.shape)
        if axes is not None and x.via and x.via[0] == "unsqueeze" and \
                sorted(int(ax) % rank for ax in np.reshape(axes, -1)) == list(x.via[1]):
            return x.via[2]
        if axes is None:
            if not all(_known(d) for d in x.shape):
                self.refuse(node, f"no axes given and the shape {x.shape} is not fully known")
            axes = [k for k, d in enumerate(x.shape) if d == 1]
        else:
            axes = sorted({int(ax) % rank for ax in self.const(node, axes, "axes").reshape(-1)})
        for ax in axes:
            if _known(x.shape[ax]) and x.shape[ax] != 1:
                self.refuse(node, f"axis {ax} of shape {x.shape} is not of size 1")
        import pymodules as pm

        shape = tuple(d for k, d in enumerate(x.shape) if k not in axes)
        return self.add(node, pm.Squeeze(list(axes), dtype=self.dtype), [x], shape)

    def op_Concat(self, node, ins, a):
        axis = a["axis"]
        if all(isinstance(v, (np.ndarray, _Sym)) for v in ins):
            if any(isinstance(v, _Sym) for v in ins):
                items = []
                for v in ins:
                    items += list(v.items) if isinstance(v, _Sym) else \
                        [int(x) for x in v.reshape(-1)]
                return _Sym(items)
            return np.concatenate(ins, axis=axis)
        xs = [self.tensor(node, v) for v in ins]
        rank = len(xs[0].shape)
        axis %= rank
        sizes = [x.shape[axis] for x in xs]
        total = sum(sizes) if all(_known(s) for s in sizes) else _Dim(f"{node.name}:{axis}")
        shape = xs[0].shape[:axis] + (total,) + xs[0].shape[axis + 1:]
        import pymodules as pm

        if len(xs) == 1:
            return xs[0]
        return self.add(node, pm.JoinTable(axis, dtype=self.dtype), xs, shape)

    def op_Reshape(self, node, ins, a):
        v, target = ins[0], ins[1]
        if isinstance(v, np.ndarray):
            t = self.const(node, target, "the shape")
            return v.reshape([v.shape[k] if s == 0 else s for k, s in enumerate(t)])
        x = self.tensor(node, v)
        items = target.items if isinstance(target, _Sym) else \
            [int(s) for s in self.const(node, target, "the shape").reshape(-1)]
        if a.get("allowzero", 0) and any(_known(s) and s == 0 for s in items):
            self.refuse(node, "allowzero with a 0 in the shape")
        sizes, shape = [], []
        for k, s in enumerate(items):
            if isinstance(s, _Dim):
                if k < len(x.shape) and x.shape[k] is s:
                    sizes.append(0)
                    shape.append(s)
                else:
                    sizes.append(-1)
                    shape.append(None)
            elif s == 0:
                sizes.append(0)
                shape.append(x.shape[k])
            else:
                sizes.append(int(s))
                shape.append(None if s == -1 else int(s))
        if sizes.count(-1) > 1:
            self.refuse(node, f"the shape {list(items)} leaves more than one size unknown")
        if -1 in sizes:
            k = sizes.index(-1)
            shape[k] = self.infer_size(x.shape, shape, k, node)
        return self.reshape(node, x, sizes, tuple(shape))

    def infer_size(self, src, dst, k, node):
        """The size at ``dst[k]`` that keeps the element count of ``src``, or a new _Dim."""
        unknown_src = [d for d in src if not _known(d)]
        unknown_dst = [d for j, d in enumerate(dst) if j != k and not _known(d)]
        if sorted(map(id, unknown_src)) == sorted(map(id, unknown_dst)):
            n = math.prod(d for d in src if _known(d))
            m = math.prod(d for j, d in enumerate(dst) if j != k and _known(d))
            if m and n % m == 0:
                return n // m
        return _Dim(f"{node.name}:{k}")

    def reshape(self, node, x, sizes, shape):
        import pymodules as pm

        if list(sizes) == [0] * len(x.shape) or tuple(shape) == tuple(x.shape):
            return x
        return self.add(node, pm.InferReshape(list(sizes), dtype=self.dtype), [x], shape)

    def reshape_to(self, node, x, shape):
        """Reshape ``x`` to ``shape`` (ints and _Dims; at most one _Dim not at its place)."""
        sizes = []
        for k, d in enumerate(shape):
            if _known(d):
                sizes.append(int(d))
            elif k < len(x.shape) and x.shape[k] is d:
                sizes.append(0)
            else:
                sizes.append(-1)
        if sizes.count(-1) > 1:
            self.refuse(node, f"cannot reshape {x.shape} to {shape}: more than one unknown "
                              f"size")
        return self.reshape(node, x, sizes, shape)

    def op_Flatten(self, node, ins, a):
        v = ins[0]
        axis = a.get("axis", 1)
        if isinstance(v, np.ndarray):
            axis %= max(v.ndim, 1)
            return v.reshape(math.prod(v.shape[:axis]), -1)
        x = self.tensor(node, v)
        axis = axis % len(x.shape) if axis else 0
        before, after = x.shape[:axis], x.shape[axis:]
        if all(_known(d) for d in after):
            m = math.prod(after)
            lead = math.prod(before) if all(_known(d) for d in before) else (
                before[0] if len(before) == 1 else _Dim(f"{node.name}:0"))
            return self.reshape(node, x, [-1, m], (lead, m))
        if all(_known(d) for d in before):
            m = math.prod(before)
            tail = after[0] if len(after) == 1 else _Dim(f"{node.name}:1")
            return self.reshape(node, x, [m, -1], (m, tail))
        self.refuse(node, f"flattening shape {x.shape} at axis {axis} with unknown sizes on "
                          f"both sides")

    def op_Transpose(self, node, ins, a):
        v = ins[0]
        perm = a.get("perm")
        if isinstance(v, np.ndarray):
            return np.transpose(v, perm)
        x = self.tensor(node, v)
        rank = len(x.shape)
        perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
        cur, swaps = list(range(rank)), []
        for i in range(rank):
            j = cur.index(perm[i])
            if j != i:
                cur[i], cur[j] = cur[j], cur[i]
                swaps.append((i, j))
        if not swaps:
            return x
        if swaps == [(0, 1)] and x.via and x.via[0] == "swap01":
            return x.via[1]
        return self.swap(node, x, swaps, tuple(x.shape[p] for p in perm))

    def swap(self, node, x, swaps, shape):
        import pymodules as pm

        y = self.add(node, pm.Transpose(swaps, dtype=self.dtype), [x], shape)
        if swaps == [(0, 1)]:
            y.via = ("swap01", x)
        return y

    def op_Split(self, node, ins, a):
        x = self.tensor(node, ins[0])
        axis = a.get("axis", 0) % len(x.shape)
        split = (None if a.get("split") is None else np.array(a["split"], np.int64)) \
            if self.opset < 13 else (ins[1] if len(ins) > 1 else None)
        n = len(node.output)
        size = x.shape[axis]
        if split is None:
            if not _known(size):
                self.refuse(node, f"splitting an axis of unknown size ({size}) without sizes")
            if "num_outputs" in a:
                n = a["num_outputs"]
                step = -(-size // n)
                split = [min(step, size - k * step) for k in range(n)]
            else:
                split = [size // n] * n
        else:
            split = [int(s) for s in self.const(node, split, "split").reshape(-1)]
        import pymodules as pm

        outs, offset = [], 0
        for length in split:
            shape = x.shape[:axis] + (length,) + x.shape[axis + 1:]
            outs.append(self.add(node, pm.Narrow(axis, offset, length, dtype=self.dtype), [x],
                                 shape))
            offset += length
        return outs

    def op_Slice(self, node, ins, a):
        v = ins[0]
        if self.opset < 10:
            starts, ends = a["starts"], a["ends"]
            axes, steps = a.get("axes"), None
        else:
            starts = self.const(node, ins[1], "starts")
            ends = self.const(node, ins[2], "ends")
            axes = self.const(node, ins[3], "axes") if len(ins) > 3 and ins[3] is not None \
                else None
            steps = self.const(node, ins[4], "steps") if len(ins) > 4 and ins[4] is not None \
                else None
        starts = [int(s) for s in np.reshape(starts, -1)]
        ends = [int(e) for e in np.reshape(ends, -1)]
        axes = list(range(len(starts))) if axes is None else [int(x) for x in np.reshape(axes,
                                                                                         -1)]
        steps = [1] * len(starts) if steps is None else [int(s) for s in np.reshape(steps, -1)]
        if isinstance(v, (np.ndarray, _Sym)):
            items = np.array(v.items, dtype=object) if isinstance(v, _Sym) else v
            index = [slice(None)] * items.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
                index[ax] = slice(s, e, st)
            out = items[tuple(index)]
            return _Sym(out) if isinstance(v, _Sym) else out
        x = self.tensor(node, v)
        if any(st != 1 for st in steps):
            self.refuse(node, f"steps {steps}: only step 1 is supported")
        import pymodules as pm

        for s, e, ax, _ in zip(starts, ends, axes, steps, strict=True):
            ax %= len(x.shape)
            size = x.shape[ax]
            if _known(size):
                start, stop, _ = slice(s, e).indices(size)
                length = max(stop - start, 0)
                if start == 0 and length == size:
                    continue
                offset, arg, out_size = start, length, length
            else:
                if e >= _INT_HUGE:
                    arg = -1
                elif e < 0:
                    arg = e - 1
                elif s >= 0:
                    arg = e - s
                else:
                    self.refuse(node, f"slice [{s}, {e}) of an axis of unknown size")
                offset = s
                if s == 0 and arg == -1:
                    continue
                out_size = arg if arg >= 0 else _Dim(f"{node.name}:{ax}")
            shape = x.shape[:ax] + (out_size,) + x.shape[ax + 1:]
            x = self.add(node, pm.Narrow(ax, offset, arg, dtype=self.dtype), [x], shape)
        return x

    # -- arithmetic --
    def binary(self, node, ins, fold, table, with_const):
        u, v = ins[0], ins[1]
        if isinstance(u, np.ndarray) and isinstance(v, np.ndarray):
            return fold(u, v)
        if isinstance(u, (_Sym, np.ndarray)) and isinstance(v, (_Sym, np.ndarray)):
            uu = np.array(u.items if isinstance(u, _Sym) else u, dtype=object)
            vv = np.array(v.items if isinstance(v, _Sym) else v, dtype=object)
            if any(isinstance(d, _Dim) for d in list(uu.reshape(-1)) + list(vv.reshape(-1))):
                self.refuse(node, "arithmetic on a size known only when the model runs")
            return fold(uu.astype(np.int64), vv.astype(np.int64))
        if isinstance(u, _Tensor) and isinstance(v, _Tensor):
            import pymodules as pm

            shape = _broadcast(u.shape, v.shape)
            if shape is None:
                self.refuse(node, f"shapes {u.shape} and {v.shape} do not broadcast")
            return self.add(node, getattr(pm, table)(dtype=self.dtype), [u, v], shape)
        if isinstance(u, _Tensor):
            return with_const(self.const(node, v, "the operand"), u, False)
        return with_const(self.const(node, u, "the operand"), self.tensor(node, v), True)

    def const_operand(self, node, c, x):
        """``c`` as a scalar (float) or an array shaped to broadcast over ``x``."""
        c = np.asarray(c, dtype=np.float64)
        if c.size == 1 and c.ndim <= len(x.shape):
            return float(c.reshape(-1)[0])
        if c.ndim > len(x.shape):
            self.refuse(node, f"a constant of shape {c.shape} broadcasts over a tensor of "
                              f"shape {x.shape}")
        c = c.reshape((1,) * (len(x.shape) - c.ndim) + c.shape)
        for cd, xd in zip(c.shape, x.shape, strict=True):
            if cd != 1 and not (_known(xd) and xd == cd):
                self.refuse(node, f"a constant of shape {c.shape} does not broadcast over "
                                  f"a tensor of shape {x.shape} without growing it")
        if c.shape[0] != 1:
            self.refuse(node, f"a constant of shape {c.shape} varies along the batch axis")
        return c

    def parametric(self, cls, c):
        import pymodules as pm

        m = getattr(pm, cls)(list(c.shape), dtype=self.dtype)
        np.copyto(m.weight if cls == "CMul" else m.bias, self.param(c))
        return m

    def op_Add(self, node, ins, a):
        import pymodules as pm

        def with_const(c, x, _):
            c = self.const_operand(node, c, x)
            if isinstance(c, float):
                return self.add(node, pm.AddConstant(c, dtype=self.dtype), [x], x.shape)
            return self.add(node, self.parametric("CAdd", c), [x], x.shape)
        return self.binary(node, ins, np.add, "CAddTable", with_const)

    def op_Sub(self, node, ins, a):
        import pymodules as pm

        def with_const(c, x, const_first):
            c = self.const_operand(node, c, x)
            if const_first:  # c - x
                x = self.add(node, pm.Negative(dtype=self.dtype), [x], x.shape)
                c_add = c
            else:
                c_add = -c
            if isinstance(c_add, float):
                return self.add(node, pm.AddConstant(c_add, dtype=self.dtype), [x], x.shape)
            return self.add(node, self.parametric("CAdd", c_add), [x], x.shape)
        return self.binary(node, ins, np.subtract, "CSubTable", with_const)

    def op_Mul(self, node, ins, a):
        import pymodules as pm

        def with_const(c, x, _):
            c = self.const_operand(node, c, x)
            if isinstance(c, float):
                return self.add(node, pm.MulConstant(c, dtype=self.dtype), [x], x.shape)
            return self.add(node, self.parametric("CMul", c), [x], x.shape)
        return self.binary(node, ins, np.multiply, "CMulTable", with_const)

    def op_Div(self, node, ins, a):
        import pymodules as pm

        def fold(u, v):
            if np.issubdtype(u.dtype, np.integer) and np.issubdtype(v.dtype, np.integer):
                return (np.trunc(u / v)).astype(u.dtype)
            return u / v

        def with_const(c, x, const_first):
            c = self.const_operand(node, c, x)
            if const_first:  # c / x
                x = self.add(node, pm.Power(-1.0, dtype=self.dtype), [x], x.shape)
                if isinstance(c, float):
                    return self.add(node, pm.MulConstant(c, dtype=self.dtype), [x], x.shape)
                return self.add(node, self.parametric("CMul", c), [x], x.shape)
            if isinstance(c, float):
                return self.add(node, pm.MulConstant(1.0 / c, dtype=self.dtype), [x], x.shape)
            return self.add(node, self.parametric("CMul", 1.0 / c), [x], x.shape)
        return self.binary(node, ins, fold, "CDivTable", with_const)

    def op_Max(self, node, ins, a):
        return self.n_ary(node, ins, "CMaxTable", np.maximum)

    def op_Min(self, node, ins, a):
        return self.n_ary(node, ins, "CMinTable", np.minimum)

    def op_Sum(self, node, ins, a):
        return self.n_ary(node, ins, "CAddTable", np.add)

    def n_ary(self, node, ins, table, fold):
        if all(isinstance(v, np.ndarray) for v in ins):
            out = ins[0]
            for v in ins[1:]:
                out = fold(out, v)
            return out
        xs = [self.tensor(node, v) for v in ins]
        if len(xs) == 1:
            return xs[0]
        shape = xs[0].shape
        for x in xs[1:]:
            shape = _broadcast(shape, x.shape)
            if shape is None:
                self.refuse(node, "the shapes do not broadcast")
        import pymodules as pm

        return self.add(node, getattr(pm, table)(dtype=self.dtype), xs, shape)

    def op_Pow(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        p = self.const(node, ins[1], "the exponent")
        if p.size != 1:
            self.refuse(node, "the exponent must be a scalar")
        return self.add(node, pm.Power(float(p.reshape(-1)[0]), dtype=self.dtype), [x],
                        x.shape)

    # -- elementwise layers --
    def unary(self, node, ins, module):
        x = self.tensor(node, ins[0])
        return self.add(node, module, [x], x.shape)

    def op_LeakyRelu(self, node, ins, a):
        import pymodules as pm
        return self.unary(node, ins, pm.LeakyReLU(a.get("alpha", 0.01), dtype=self.dtype))

    def op_Elu(self, node, ins, a):
        import pymodules as pm
        return self.unary(node, ins, pm.ELU(a.get("alpha", 1.0), dtype=self.dtype))

    def op_Reciprocal(self, node, ins, a):
        import pymodules as pm
        return self.unary(node, ins, pm.Power(-1.0, dtype=self.dtype))

    def op_PRelu(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        slope = self.const(node, ins[1], "the slope").reshape(-1)
        n = slope.size if slope.size > 1 else 0
        m = pm.PReLU(n, dtype=self.dtype)
        np.copyto(m.weight, self.param(slope).reshape(m.weight.shape))
        return self.add(node, m, [x], x.shape)

    def op_HardSigmoid(self, node, ins, a):
        import pymodules as pm

        alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
        x = self.tensor(node, ins[0])
        if np.float32(alpha) == np.float32(0.2) and np.float32(beta) == np.float32(0.5):
            return self.add(node, pm.HardSigmoid(dtype=self.dtype), [x], x.shape)
        return self.chain(node, x, [
            (pm.MulConstant(alpha, dtype=self.dtype), x.shape),
            (pm.AddConstant(beta, dtype=self.dtype), x.shape),
            (pm.HardTanh(0.0, 1.0, dtype=self.dtype), x.shape)])

    def op_Clip(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        if self.opset < 11:
            lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        else:
            lo = float(self.const(node, ins[1], "min").reshape(-1)[0]) \
                if len(ins) > 1 and ins[1] is not None else -np.inf
            hi = float(self.const(node, ins[2], "max").reshape(-1)[0]) \
                if len(ins) > 2 and ins[2] is not None else np.inf
        if lo == 0 and hi == 6:
            m = pm.ReLU6(dtype=self.dtype)
        elif lo == 0 and hi == np.inf:
            m = pm.ReLU(dtype=self.dtype)
        else:
            m = pm.HardTanh(float(lo), float(hi), dtype=self.dtype)
        return self.add(node, m, [x], x.shape)

    def op_Dropout(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        if self.opset < 12:
            p = a.get("ratio", 0.5)
        else:
            p = float(self.const(node, ins[1], "ratio").reshape(-1)[0]) \
                if len(ins) > 1 and ins[1] is not None else 0.5
        return self.add(node, pm.Dropout(p, dtype=self.dtype), [x], x.shape)

    def softmax(self, node, ins, a, cls):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        rank = len(x.shape)
        axis = a.get("axis", -1 if self.opset >= 13 else 1) % rank
        if cls == "SoftMax" and rank == 4 and axis == 1 and self.opset >= 13:
            return self.add(node, pm.SoftMax(dtype=self.dtype), [x], x.shape)
        if axis == rank - 1 and rank <= 2:
            return self.add(node, getattr(pm, cls)(dtype=self.dtype), [x], x.shape)
        shape = x.shape
        if self.opset >= 13 and axis != rank - 1:
            shape = list(x.shape)
            shape[axis], shape[-1] = shape[-1], shape[axis]
            shape = tuple(shape)
            x = self.add(node, pm.Transpose([(axis, rank - 1)], dtype=self.dtype), [x], shape)
            block = shape[-1:]
        else:
            block = shape[axis:]
        if not all(_known(d) for d in block):
            self.refuse(node, f"normalising over axes of unknown size {block}")
        m = math.prod(block)
        y = self.reshape(node, x, [-1, m], (None, m))
        y = self.add(node, getattr(pm, cls)(dtype=self.dtype), [y], y.shape)
        y = self.reshape_to(node, y, shape)
        if self.opset >= 13 and axis != rank - 1:
            y = self.add(node, pm.Transpose([(axis, rank - 1)], dtype=self.dtype), [y],
                         tuple(ins[0].shape))
        return y

    def op_Softmax(self, node, ins, a):
        return self.softmax(node, ins, a, "SoftMax")

    def op_LogSoftmax(self, node, ins, a):
        return self.softmax(node, ins, a, "LogSoftMax")

    def reduce(self, node, ins, a, kind):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        rank = len(x.shape)
        takes_input = self.opset >= 18 or (kind == "Sum" and self.opset >= 13)
        axes = (ins[1] if len(ins) > 1 else None) if takes_input else a.get("axes")
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(rank))
        axes = sorted({int(ax) % rank for ax in np.reshape(self.const(
            node, np.asarray(axes) if isinstance(axes, list) else axes, "axes"), -1)})
        keep = bool(a.get("keepdims", 1))
        for ax in reversed(axes):  # from the last, so the earlier axes keep their numbers
            kept = x.shape[:ax] + (1,) + x.shape[ax + 1:]
            dropped = x.shape[:ax] + x.shape[ax + 1:]
            if kind in ("Max", "Min"):  # these always drop the axis
                x = self.add(node, getattr(pm, kind)(ax, dtype=self.dtype), [x], dropped)
                if keep:
                    x = self.add(node, pm.Unsqueeze(ax, dtype=self.dtype), [x], kept)
            else:
                m = getattr(pm, kind)(ax, squeeze=not keep, dtype=self.dtype)
                x = self.add(node, m, [x], kept if keep else dropped)
        return x

    def op_ReduceMean(self, node, ins, a):
        return self.reduce(node, ins, a, "Mean")

    def op_ReduceSum(self, node, ins, a):
        return self.reduce(node, ins, a, "Sum")

    def op_ReduceMax(self, node, ins, a):
        return self.reduce(node, ins, a, "Max")

    def op_ReduceMin(self, node, ins, a):
        return self.reduce(node, ins, a, "Min")

    def op_LRN(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        if len(x.shape) != 4 or a["size"] % 2 == 0:
            self.refuse(node, f"an even size {a['size']} or an input of shape {x.shape}; "
                              f"4-D images and odd sizes only")
        m = pm.SpatialCrossMapLRN(a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75),
                                  a.get("bias", 1.0), dtype=self.dtype)
        return self.add(node, m, [x], x.shape)

    def op_Pad(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        rank = len(x.shape)
        mode = a.get("mode", "constant")
        if mode != "constant":
            self.refuse(node, f"mode {mode!r}: only 'constant' is supported")
        if self.opset < 11:
            pads, value, axes = a["pads"], a.get("value", 0.0), None
        else:
            pads = self.const(node, ins[1], "pads")
            value = float(self.const(node, ins[2], "constant_value").reshape(-1)[0]) \
                if len(ins) > 2 and ins[2] is not None else 0.0
            axes = self.const(node, ins[3], "axes") if len(ins) > 3 and ins[3] is not None \
                else None
        pads = [int(p) for p in np.reshape(pads, -1)]
        axes = list(range(rank)) if axes is None else \
            [int(ax) % rank for ax in np.reshape(axes, -1)]
        n = len(axes)
        if any(p < 0 for p in pads):
            self.refuse(node, f"negative pads {pads} (cropping)")
        for j, ax in enumerate(axes):
            for pad in (-pads[j], pads[j + n]):  # before the first entry, after the last
                if pad:
                    shape = list(x.shape)
                    shape[ax] = shape[ax] + abs(pad) if _known(shape[ax]) else \
                        _Dim(f"{node.name}:{ax}")
                    x = self.add(node, pm.Padding(ax, pad, rank - 1, value, dtype=self.dtype),
                                 [x], tuple(shape))
        return x

    def op_Resize(self, node, ins, a):
        x = self.tensor(node, ins[0])
        scales = ins[2] if len(ins) > 2 else None
        sizes = ins[3] if len(ins) > 3 else None
        if isinstance(scales, np.ndarray) and scales.size == 0:
            scales = None
        return self.upsample(node, x, a, scales, sizes)

    def op_Upsample(self, node, ins, a):
        x = self.tensor(node, ins[0])
        scales = a.get("scales") if self.opset < 9 else ins[1]
        return self.upsample(node, x, a, np.asarray(self.const(node, scales, "scales"),
                                                    np.float64), None)

    def upsample(self, node, x, a, scales, sizes):
        """Nearest upsampling by whole factors of the spatial axes of (N, C, ...)."""
        import pymodules as pm

        mode = a.get("mode", "nearest")
        coords = a.get("coordinate_transformation_mode", "half_pixel")
        if mode != "nearest" or coords not in ("asymmetric", "half_pixel",
                                               "pytorch_half_pixel"):
            self.refuse(node, f"mode {mode!r} with coordinate_transformation_mode {coords!r}: "
                              f"only nearest upsampling by whole factors is supported")
        rank = len(x.shape)
        axes = [int(ax) % rank for ax in a.get("axes", range(rank))]
        if scales is not None:
            given = [float(f) for f in np.reshape(self.const(node, scales, "scales"), -1)]
        else:
            sizes = [int(d) for d in np.reshape(self.const(node, sizes, "sizes"), -1)]
            if not all(_known(x.shape[ax]) for ax in axes):
                self.refuse(node, f"sizes {sizes} for axes {axes} of shape {x.shape}: the "
                                  f"sizes must be known before the model runs")
            given = [o / x.shape[ax] for o, ax in zip(sizes, axes, strict=True)]
        if len(given) != len(axes):
            self.refuse(node, f"{len(given)} scales or sizes for {len(axes)} axes")
        factors = [1.0] * rank
        for ax, v in zip(axes, given, strict=True):
            factors[ax] = v
        if len(factors) != rank or factors[:2] != [1.0, 1.0] or \
                any(f != int(f) or f < 1 for f in factors[2:]) or rank not in (3, 4, 5):
            self.refuse(node, f"scales {factors}: whole factors of the spatial axes of a 3-D, "
                              f"4-D or 5-D input only")
        f = [int(v) for v in factors[2:]]
        shape = x.shape[:2] + tuple(d * k if _known(d) else _Dim(f"{node.name}:{j}")
                                    for j, (d, k) in enumerate(zip(x.shape[2:], f,
                                                                   strict=True)))
        if rank == 3:
            y = self.to_2d(node, x)
            y = self.add(node, pm.UpSampling2D([1, f[0]], dtype=self.dtype), [y],
                         y.shape[:3] + shape[2:])
            return self.from_2d(node, y)
        m = pm.UpSampling2D(f, dtype=self.dtype) if rank == 4 else \
            pm.UpSampling3D(f, dtype=self.dtype)
        return self.add(node, m, [x], shape)

    # -- linear layers --
    def op_Gemm(self, node, ins, a):
        x = self.tensor(node, ins[0])
        if a.get("transA", 0):
            self.refuse(node, "transA=1 on the computed input")
        w = self.const(node, ins[1], "B (the weight)").astype(np.float64)
        if w.ndim != 2 or len(x.shape) != 2:
            self.refuse(node, f"A {x.shape} and B {w.shape} must be matrices")
        w = (w if a.get("transB", 0) else w.T) * a.get("alpha", 1.0)
        c = ins[2] if len(ins) > 2 else None
        bias = None
        if c is not None:
            c = self.const(node, c, "C (the bias)").astype(np.float64) * a.get("beta", 1.0)
            try:
                bias = np.broadcast_to(c, (1, w.shape[0]))[0]
            except ValueError:
                self.refuse(node, f"C of shape {c.shape} is not a bias of {w.shape[0]} outputs")
            if c.ndim == 2 and c.shape[0] != 1:
                self.refuse(node, f"C of shape {c.shape} varies along the batch axis")
        return self.linear(node, x, w, bias, (x.shape[0], w.shape[0]))

    def linear(self, node, x, w, bias, shape):
        import pymodules as pm

        m = pm.Linear(w.shape[1], w.shape[0], withBias=bias is not None, dtype=self.dtype)
        np.copyto(m.weight, self.param(w))
        if bias is not None:
            np.copyto(m.bias, self.param(bias))
        if len(x.shape) == 3:
            m = pm.TimeDistributed(m)
        return self.add(node, m, [x], shape)

    def op_MatMul(self, node, ins, a):
        x = self.tensor(node, ins[0], "A (a computed input times a constant matrix)")
        w = self.const(node, ins[1], "B (the weight)").astype(np.float64)
        if w.ndim != 2 or len(x.shape) not in (2, 3):
            self.refuse(node, f"A {x.shape} times B {w.shape}: A must have 2 or 3 axes and B 2")
        bias, out = None, node.output[0]
        users = self.consumers.get(out, [])
        if len(users) == 1 and users[0] is not None and users[0].op_type == "Add":
            add = users[0]
            other = [n for n in add.input if n != out]
            c = self.values.get(other[0]) if len(other) == 1 else None
            if isinstance(c, np.ndarray) and c.size == w.shape[1] and \
                    c.shape[-1:] == (w.shape[1],) and c.ndim <= len(x.shape):
                bias = c.reshape(-1).astype(np.float64)
                self.skip.add(id(add))
                node = _Named(add.name or node.name, node.op_type)
                result = self.linear(node, x, w.T, bias, x.shape[:-1] + (w.shape[1],))
                self.values[add.output[0]] = result
                return result
        return self.linear(node, x, w.T, None, x.shape[:-1] + (w.shape[1],))

    # -- convolutions and poolings --
    def window(self, node, x, a, k):
        """(kernel, strides, pads begin, pads end, dilations) for ``k`` spatial axes."""
        n = len(k)
        strides = list(a.get("strides", [1] * n))
        dil = list(a.get("dilations", [1] * n))
        pads = list(a.get("pads", [0] * 2 * n))
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            spatial = x.shape[2:]
            if not all(_known(d) for d in spatial):
                self.refuse(node, f"auto_pad {auto} on spatial sizes {spatial} not known "
                                  f"before the model runs")
            pads = [0] * 2 * n
            for i in range(n):
                out = -(-spatial[i] // strides[i])
                total = max((out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - spatial[i], 0)
                small, big = total // 2, total - total // 2
                pads[i], pads[i + n] = (small, big) if auto == "SAME_UPPER" else (big, small)
        elif auto == "VALID":
            pads = [0] * 2 * n
        elif auto != "NOTSET":
            self.refuse(node, f"auto_pad {auto!r}")
        return list(k), strides, pads[:n], pads[n:], dil

    def to_2d(self, node, x):
        """A (N, C, L) tensor viewed as (N, C, 1, L) for the 2-D layers."""
        import pymodules as pm

        shape = x.shape[:2] + (1,) + x.shape[2:]
        return self.add(node, pm.Unsqueeze(2, dtype=self.dtype), [x], shape)

    def from_2d(self, node, y):
        import pymodules as pm

        return self.add(node, pm.Squeeze([2], dtype=self.dtype), [y], y.shape[:2] + y.shape[3:])

    def op_Conv(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        w = self.const(node, ins[1], "the weight")
        b = self.const(node, ins[2], "the bias") if len(ins) > 2 and ins[2] is not None \
            else None
        nd = w.ndim - 2
        if nd not in (1, 2, 3) or len(x.shape) != nd + 2:
            self.refuse(node, f"a {nd}-D kernel on an input of shape {x.shape}")
        k, s, p0, p1, dil = self.window(node, x, a, list(w.shape[2:]))
        g = a.get("group", 1)
        c_out, c_in = w.shape[0], w.shape[1] * g
        one_d = nd == 1
        if one_d:
            x = self.to_2d(node, x)
            k, s, p0, p1, dil = [1] + k, [1] + s, [0] + p0, [0] + p1, [1] + dil
            w = w[:, :, None, :]
            nd = 2
        spatial = [_out_size(x.shape[2 + i], k[i], s[i], p0[i] + p1[i], dil[i])
                   for i in range(nd)]
        shape = (x.shape[0], c_out) + tuple(spatial)
        if nd == 2:
            if p0 != p1:
                padded = tuple(d + p0[i] + p1[i] if _known(d) else _Dim(f"{node.name}:p{i}")
                               for i, d in enumerate(x.shape[2:]))
                x = self.add(node, pm.SpatialZeroPadding(p0[1], p1[1], p0[0], p1[0],
                                                         dtype=self.dtype), [x],
                             x.shape[:2] + padded)
                p0 = [0, 0]
            if dil != [1, 1]:
                if g != 1:
                    self.refuse(node, f"dilations {dil} with {g} groups")
                m = pm.SpatialDilatedConvolution(c_in, c_out, k[1], k[0], s[1], s[0], p0[1],
                                                 p0[0], dil[1], dil[0], dtype=self.dtype)
                if b is None:
                    b = np.zeros(c_out)
            else:
                m = pm.SpatialConvolution(c_in, c_out, k[1], k[0], s[1], s[0], p0[1], p0[0],
                                          nGroup=g, withBias=b is not None, dtype=self.dtype)
        else:
            if p0 != p1:
                self.refuse(node, f"asymmetric pads {p0 + p1} on a 3-D convolution")
            if dil != [1, 1, 1] or g != 1:
                self.refuse(node, f"dilations {dil} or groups {g} on a 3-D convolution")
            m = pm.VolumetricConvolution(c_in, c_out, k[0], k[2], k[1], s[0], s[2], s[1],
                                         p0[0], p0[2], p0[1], withBias=b is not None,
                                         dtype=self.dtype)
        np.copyto(m.weight, self.param(w).reshape(m.weight.shape))
        if b is not None:
            np.copyto(m.bias, self.param(b))
        y = self.add(node, m, [x], shape)
        return self.from_2d(node, y) if one_d else y

    def op_ConvTranspose(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        w = self.const(node, ins[1], "the weight")
        b = self.const(node, ins[2], "the bias") if len(ins) > 2 and ins[2] is not None \
            else None
        nd = w.ndim - 2
        if nd not in (1, 2, 3) or len(x.shape) != nd + 2:
            self.refuse(node, f"a {nd}-D kernel on an input of shape {x.shape}")
        if "output_shape" in a:
            self.refuse(node, "output_shape is not supported (give pads and output_padding)")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.refuse(node, f"auto_pad {a['auto_pad']}")
        k = list(w.shape[2:])
        s = list(a.get("strides", [1] * nd))
        pads = list(a.get("pads", [0] * 2 * nd))
        adj = list(a.get("output_padding", [0] * nd))
        if any(d != 1 for d in a.get("dilations", [1] * nd)):
            self.refuse(node, f"dilations {a['dilations']}")
        if pads[:nd] != pads[nd:]:
            self.refuse(node, f"asymmetric pads {pads}")
        g = a.get("group", 1)
        c_in, c_out = w.shape[0], w.shape[1] * g
        one_d = nd == 1
        if one_d:
            x = self.to_2d(node, x)
            k, s, pads, adj, w, nd = [1] + k, [1] + s, [0] + pads[:1], [0] + adj, \
                w[:, :, None, :], 2
        p = pads[:nd]
        spatial = tuple((d - 1) * s[i] - 2 * p[i] + k[i] + adj[i] if _known(d)
                        else _Dim(f"{node.name}:{i}") for i, d in enumerate(x.shape[2:]))
        shape = (x.shape[0], c_out) + spatial
        if nd == 2:
            m = pm.SpatialFullConvolution(c_in, c_out, k[1], k[0], s[1], s[0], p[1], p[0],
                                          adj[1], adj[0], nGroup=g, noBias=b is None,
                                          dtype=self.dtype)
        else:
            m = pm.VolumetricFullConvolution(c_in, c_out, k[0], k[2], k[1], s[0], s[2], s[1],
                                             p[0], p[2], p[1], adj[0], adj[2], adj[1],
                                             nGroup=g, noBias=b is None, dtype=self.dtype)
        np.copyto(m.weight, self.param(w).reshape(m.weight.shape))
        if b is not None:
            np.copyto(m.bias, self.param(b))
        y = self.add(node, m, [x], shape)
        return self.from_2d(node, y) if one_d else y

    def pool(self, node, ins, a, kind):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        nd = len(x.shape) - 2
        if nd not in (1, 2, 3):
            self.refuse(node, f"pooling an input of shape {x.shape}")
        k, s, p0, p1, dil = self.window(node, x, a, list(a["kernel_shape"]))
        if any(d != 1 for d in dil):
            self.refuse(node, f"dilations {dil}")
        if p0 != p1:
            self.refuse(node, f"asymmetric pads {p0 + p1}")
        ceil = bool(a.get("ceil_mode", 0))
        one_d = nd == 1
        if one_d:
            x = self.to_2d(node, x)
            k, s, p0, nd = [1] + k, [1] + s, [0] + p0, 2
        spatial = tuple(_out_size(x.shape[2 + i], k[i], s[i], 2 * p0[i], 1, ceil, p0[i])
                        for i in range(nd))
        shape = x.shape[:2] + spatial
        include = bool(a.get("count_include_pad", 0))
        if nd == 2:
            if kind == "max":
                m = pm.SpatialMaxPooling(k[1], k[0], s[1], s[0], p0[1], p0[0], toCeil=ceil,
                                         dtype=self.dtype)
            else:
                m = pm.SpatialAveragePooling(k[1], k[0], s[1], s[0], p0[1], p0[0],
                                             ceilMode=ceil, countIncludePad=include,
                                             dtype=self.dtype)
        else:
            cls = pm.VolumetricMaxPooling if kind == "max" else pm.VolumetricAveragePooling
            m = cls(k[0], k[2], k[1], s[0], s[2], s[1], p0[0], p0[2], p0[1], dtype=self.dtype)
            if ceil:
                m.ceil()
            if kind == "avg":
                if not include and any(p0):
                    self.refuse(node, "count_include_pad=0 with pads on a 3-D average pooling")
        y = self.add(node, m, [x], shape)
        return self.from_2d(node, y) if one_d else y

    def op_MaxPool(self, node, ins, a):
        if len(node.output) > 1 and self.consumers.get(node.output[1]):
            self.refuse(node, "the Indices output is not supported")
        if a.get("storage_order", 0):
            self.refuse(node, "storage_order=1")
        return self.pool(node, ins, a, "max")

    def op_AveragePool(self, node, ins, a):
        return self.pool(node, ins, a, "avg")

    def global_pool(self, node, ins, kind):
        x = self.tensor(node, ins[0])
        spatial = x.shape[2:]
        if not all(_known(d) for d in spatial):
            self.refuse(node, f"global pooling over spatial sizes {spatial} not known before "
                              f"the model runs")
        return self.pool(node, ins, {"kernel_shape": list(spatial)}, kind)

    def op_GlobalAveragePool(self, node, ins, a):
        return self.global_pool(node, ins, "avg")

    def op_GlobalMaxPool(self, node, ins, a):
        return self.global_pool(node, ins, "max")

    def op_BatchNormalization(self, node, ins, a):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        if a.get("training_mode", 0):
            self.refuse(node, "training_mode=1")
        scale, bias, mean, var = (self.const(node, v, w) for v, w in
                                  zip(ins[1:5], ("scale", "B", "mean", "var"), strict=True))
        c = scale.size
        rank = len(x.shape)
        eps, momentum = a.get("epsilon", 1e-5), 1.0 - a.get("momentum", 0.9)
        cls = pm.BatchNormalization if rank == 2 else pm.SpatialBatchNormalization
        m = cls(c, eps=eps, momentum=momentum, dtype=self.dtype)
        for attr, v in (("weight", scale), ("bias", bias), ("runningMean", mean),
                        ("runningVar", var)):
            np.copyto(getattr(m, attr), self.param(v).reshape(-1))
        if rank in (2, 4):
            return self.add(node, m, [x], x.shape)
        if rank < 2:
            self.refuse(node, f"an input of shape {x.shape}")
        y = self.reshape(node, x, [0, 0, -1, 1], x.shape[:2] + (None, 1))
        y = self.add(node, m, [y], y.shape)
        return self.reshape_to(node, y, x.shape)

    # -- recurrent layers --
    def recurrent(self, node, ins, a, kind):
        import pymodules as pm

        x = self.tensor(node, ins[0])
        w, r = self.const(node, ins[1], "W"), self.const(node, ins[2], "R")

        def get(i):
            return ins[i] if len(ins) > i else None
        direction = a.get("direction", "forward")
        if direction not in ("forward", "bidirectional"):
            self.refuse(node, f"direction {direction!r}: only 'forward' and 'bidirectional' "
                              f"are supported")
        if "clip" in a:
            self.refuse(node, "clip is not supported")
        if get(4) is not None:
            self.refuse(node, "sequence_lens is not supported (all sequences run to the end)")
        for i in (5, 6):
            h0 = get(i)
            zero = (isinstance(h0, _Fill) and h0.value == 0) or \
                (isinstance(h0, np.ndarray) and not h0.any())
            if h0 is not None and not zero:
                self.refuse(node, "a non-zero initial state is not supported")
        if get(7) is not None and self.const(node, get(7), "P").any():
            self.refuse(node, "peepholes are not supported")
        if a.get("input_forget", 0):
            self.refuse(node, "input_forget=1 is not supported")
        if kind == "GRU" and a.get("linear_before_reset", 0):
            self.refuse(node, "linear_before_reset=1 (PyTorch's GRU) applies the reset gate "
                              "after the hidden matrix; pymodules' GRU (BigDL's) applies it "
                              "before (linear_before_reset=0), so there is no exact "
                              "equivalent")
        hsize = a.get("hidden_size", r.shape[-1])
        dirs = w.shape[0]
        b = get(3)
        b = np.zeros((dirs, 2 * w.shape[1])) if b is None else self.const(node, b, "B")
        cells = [self.cell(node, kind, a, w[d].astype(np.float64), r[d].astype(np.float64),
                           b[d].astype(np.float64), hsize) for d in range(dirs)]
        if dirs == 1:
            layer = pm.Recurrent().add(cells[0])
        else:
            layer = pm.BiRecurrent(pm.JoinTable(2)).add(cells[0])
            layer.add(cells[1])
        if self.dtype == np.float64:
            layer.double()
        layout = a.get("layout", 0)
        if layout == 0:
            if x.via and x.via[0] == "swap01":
                x = x.via[1]
            else:
                x = self.swap(node, x, [(0, 1)], (x.shape[1], x.shape[0]) + x.shape[2:])
        batch, steps = x.shape[0], x.shape[1]
        seq = self.add(node, layer, [x], (batch, steps, dirs * hsize))
        outs = [None, None]
        if node.output and self.consumers.get(node.output[0]):
            if dirs == 1:
                if layout == 0:
                    y = self.swap(node, seq, [(0, 1)], (steps, batch, hsize))
                    outs[0] = self.add(node, pm.Unsqueeze(1, dtype=self.dtype), [y],
                                       (steps, 1, batch, hsize), ("unsqueeze", (1,), y))
                else:
                    outs[0] = self.add(node, pm.Unsqueeze(2, dtype=self.dtype), [seq],
                                       (batch, steps, 1, hsize), ("unsqueeze", (2,), seq))
            else:
                y = self.reshape_to(node, seq, (batch, steps, 2, hsize))
                if layout == 0:  # (batch, time, 2, H) -> (time, 2, batch, H)
                    y = self.add(node, pm.Transpose([(0, 1), (1, 2)], dtype=self.dtype), [y],
                                 (steps, 2, batch, hsize))
                outs[0] = y
        if len(node.output) > 1 and self.consumers.get(node.output[1]):
            finals = []
            for d in range(dirs):  # the forward direction ends at the last step, the other at 0
                t = self.add(node, pm.Select(1, -1 if d == 0 else 0, dtype=self.dtype), [seq],
                             (batch, dirs * hsize))
                if dirs > 1:
                    t = self.add(node, pm.Narrow(1, d * hsize, hsize, dtype=self.dtype), [t],
                                 (batch, hsize))
                ax = 0 if layout == 0 else 1
                shape = (1, batch, hsize) if layout == 0 else (batch, 1, hsize)
                finals.append(self.add(node, pm.Unsqueeze(ax, dtype=self.dtype), [t], shape))
            outs[1] = finals[0] if dirs == 1 else self.add(
                node, pm.JoinTable(0 if layout == 0 else 1, dtype=self.dtype), finals,
                (2, batch, hsize) if layout == 0 else (batch, 2, hsize))
        if len(node.output) > 2 and self.consumers.get(node.output[2]):
            self.refuse(node, "the cell state output Y_c is not supported")
        return outs

    def cell(self, node, kind, a, w, r, b, hsize):
        """The pymodules cell of one direction, its weights copied in."""
        import pymodules as pm

        defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                    "RNN": ["Tanh"]}[kind]
        n_dirs = 2 if a.get("direction") == "bidirectional" else 1
        acts = a.get("activations", defaults * n_dirs)
        acts = [s.lower() for s in acts]
        if kind != "RNN" and acts != [s.lower() for s in defaults] * n_dirs:
            self.refuse(node, f"activations {acts}: only {defaults} are supported")
        n = w.shape[0] // hsize
        wb, rb = b[:n * hsize], b[n * hsize:]
        isize = w.shape[1]

        def blocks(m, order):
            return np.concatenate([m[j * hsize:(j + 1) * hsize] for j in order])
        if kind == "LSTM":
            cell = pm.LSTM(isize, hsize, dtype=self.dtype)
            order = (0, 3, 2, 1)  # ONNX i, o, f, c -> i, g, f, o
            arrays = {"weight": blocks(w, order), "bias": blocks(wb + rb, order),
                      "hiddenWeight": blocks(r, order)}
        elif kind == "GRU":
            # With linear_before_reset=0 the hidden bias of each gate adds outside its
            # matrix product, so it joins the input bias.
            cell = pm.GRU(isize, hsize, dtype=self.dtype)
            order = (1, 0, 2)  # ONNX z, r, h -> r, z, n
            arrays = {"weight": blocks(w, order), "bias": blocks(wb + rb, order),
                      "hiddenWeightRZ": blocks(r, (1, 0)), "hiddenWeightN": blocks(r, (2,))}
        else:
            act = {"tanh": pm.Tanh, "sigmoid": pm.Sigmoid, "relu": pm.ReLU}.get(acts[0])
            if act is None or len(set(acts)) != 1:
                self.refuse(node, f"activations {acts}: only Tanh, Sigmoid or Relu")
            cell = pm.RnnCell(isize, hsize, act(dtype=self.dtype), dtype=self.dtype)
            arrays = {"weight": w, "bias": wb, "hiddenWeight": r, "hiddenBias": rb}
        for attr, v in arrays.items():
            np.copyto(getattr(cell, attr), self.param(v))
        return cell

    def op_LSTM(self, node, ins, a):
        return self.recurrent(node, ins, a, "LSTM")

    def op_GRU(self, node, ins, a):
        return self.recurrent(node, ins, a, "GRU")

    def op_RNN(self, node, ins, a):
        return self.recurrent(node, ins, a, "RNN")


#: ONNX operators that are one pymodules element-wise layer without arguments
_ELEMENTWISE = {
    "Relu": "ReLU",
    "Tanh": "Tanh",
    "Sigmoid": "Sigmoid",
    "Softplus": "SoftPlus",
    "Softsign": "SoftSign",
    "Abs": "Abs",
    "Exp": "Exp",
    "Log": "Log",
    "Sqrt": "Sqrt",
    "Neg": "Negative",
}


def _elementwise(name):
    """The importer's handler of an operator that is the layer ``pm.<name>``."""
    def op(self, node, ins, a):
        import pymodules as pm

        return self.unary(node, ins, getattr(pm, name)(dtype=self.dtype))

    return op


for _op, _name in _ELEMENTWISE.items():
    setattr(_Importer, f"op_{_op}", _elementwise(_name))


class _Named:
    """A stand-in ONNX node for the layers made for a graph output or a fused pair."""

    def __init__(self, name, op_type="Identity"):
        self.name, self.op_type = name, op_type


def _out_size(d, k, s, pad, dil=1, ceil=False, pad_begin=0):
    if not _known(d):
        return _Dim(f"conv:{id(d)}")
    span = d + pad - dil * (k - 1) - 1
    n = (-(-span // s) if ceil else span // s) + 1
    if ceil and (n - 1) * s >= d + pad_begin:  # the last window must start inside
        n -= 1
    return n


def _broadcast(a, b):
    out = []
    for x, y in zip(((None,) * (len(b) - len(a))) + tuple(a),
                    ((None,) * (len(a) - len(b))) + tuple(b), strict=True):
        if x is None or (_known(x) and x == 1):
            out.append(y)
        elif y is None or (_known(y) and y == 1) or x is y or \
                (_known(x) and _known(y) and x == y):
            out.append(x)
        elif not _known(x) or not _known(y):
            out.append(x if not _known(x) else y)
        else:
            return None
    return tuple(out)
