"""Definitions: values, modules and graph nodes as JSON with references to array entries.

``Encoder`` turns what is saved into that JSON (arrays are listed apart, to be written as
entries); ``Decoder`` rebuilds it, calling only registered classes, with the constructor
arguments the module recorded (``pymodules.recorded.Recorded``, bound to the signature so
stored by name), then restoring the parameters (``_params``), the non-trainable state
(``_extra``), name, mode, scales and frozen state, and adding the children that the
constructor did not receive. Gradients are not saved: a loaded module's gradients are zero.
"""

from __future__ import annotations

import contextlib
import inspect
import math

import numpy as np

from pymodules.nn.init import skipped
from pymodules.nn.initializable import restoring
from pymodules.nn.module import Module
from pymodules.persistence.archive import DTYPES, Archive, FileFormatError, _Entry
from pymodules.persistence.registry import registry

MAX_DEPTH = 256  # nesting of encoded values
_DTYPE_NAMES = {d.name: d for d in DTYPES.values()}


def is_node(value) -> bool:
    return all(hasattr(value, a) for a in ("element", "prevNodes", "nextNodes"))


#: What a constructor or a setter raises on values it refuses: the file's fault when they
#: come from a file.
_REBUILD_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
                   RecursionError, MemoryError)


@contextlib.contextmanager
def refusing(archive, what="cannot rebuild what the file describes"):
    """Any failure to rebuild from what the file says is the file's: FileFormatError
    saying ``what`` and the failure."""
    try:
        yield
    except FileFormatError:
        raise
    except _REBUILD_ERRORS as err:
        raise archive.error(f"{what} ({type(err).__name__}: {err})"[:400]) from None


def bound_arguments(m: Module):
    """The recorded constructor call of ``m`` as (positional list, {name: value}).

    Arguments are bound to the signature so that they are stored by name; only what the
    caller passed is kept, defaults are the loading library's.
    """
    args, kwargs = getattr(m, "_ctor", ((), {}))
    sig = inspect.signature(type(m).__init__)
    try:
        bound = sig.bind(None, *args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{m}: its constructor call cannot be replayed ({err})") from None
    params = list(sig.parameters.values())[1:]
    var_pos = any(p.kind is p.VAR_POSITIONAL and p.name in bound.arguments for p in params)
    positional, named = [], {}
    for p in params:
        if p.name not in bound.arguments:
            continue
        value = bound.arguments[p.name]
        if p.kind is p.VAR_POSITIONAL:
            positional.extend(value)
        elif p.kind is p.VAR_KEYWORD:
            named.update(value)
        elif p.kind is p.POSITIONAL_ONLY or (var_pos and p.kind is p.POSITIONAL_OR_KEYWORD):
            positional.append(value)
        else:
            named[p.name] = value
    return positional, named


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _same_kind(rebuilt, value) -> bool:
    """Whether ``value`` from a file may replace ``rebuilt``, the constructor's value of a
    persisted attribute: numbers for numbers, a bool for a bool, a set for a set, ..."""
    if isinstance(rebuilt, bool):
        return isinstance(value, bool)
    if isinstance(rebuilt, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(rebuilt, (set, frozenset)):
        return isinstance(value, (set, frozenset))
    return isinstance(value, type(rebuilt))


class Encoder:
    """Turns values into JSON with references to array entries; ``arrays`` lists the
    arrays referenced, in entry order (``arrays/<n>.npy`` is ``arrays[n]``)."""

    def __init__(self, modules=True):
        self.registry = registry()
        self.arrays: list[np.ndarray] = []
        self.modules: list[dict] = []
        self.nodes: list[dict] = []
        self._module_ids: dict[int, int] = {}
        self._node_ids: dict[int, int] = {}
        self._keep = []  # objects whose id() is a key above stay alive until written
        self._allow_modules = modules
        self._seen = None  # modules met while encoding one module's arguments

    def encode(self, v, depth=0):
        if depth > MAX_DEPTH:
            raise ValueError(f"cannot save values nested more than {MAX_DEPTH} deep")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)) and not isinstance(v, np.bool_):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v)
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.ndarray):
            return {"$array": self.array(v)}
        if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
            d = np.dtype(v)
            if d.name not in _DTYPE_NAMES:
                raise TypeError(f"cannot save dtype {d}")
            return {"$dtype": d.name}
        if isinstance(v, Module) and self._allow_modules:
            return {"$module": self.module(v)}
        if is_node(v) and self._allow_modules:
            return {"$node": self.node(v)}
        if isinstance(v, tuple):
            return {"$tuple": [self.encode(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return [self.encode(x, depth + 1) for x in v]
        if isinstance(v, dict):
            return {"$dict": [[self.encode(k, depth + 1), self.encode(x, depth + 1)]
                              for k, x in v.items()]}
        cls = type(v)
        if isinstance(v, (set, frozenset)):
            tag = "$frozenset" if isinstance(v, frozenset) else "$set"
            return {tag: sorted((self.encode(x, depth + 1) for x in v), key=repr)}
        if self.registry.get(cls.__name__) is cls and not issubclass(cls, Module):
            return {"$object": cls.__name__,
                    "state": {k: self.encode(x, depth + 1) for k, x in vars(v).items()}}
        raise TypeError(f"cannot save a {cls.__name__} ({v!r:.80}): only numbers, strings, "
                        "arrays, lists, tuples, dicts, modules and registered classes")

    def array(self, a: np.ndarray) -> str:
        if a.dtype.str not in DTYPES:
            if a.dtype.name not in _DTYPE_NAMES:
                raise TypeError(f"cannot save an array of dtype {a.dtype}")
            a = a.astype(a.dtype.newbyteorder("<"))
        self.arrays.append(np.ascontiguousarray(a))
        return f"arrays/{len(self.arrays) - 1}.npy"

    def module(self, m: Module) -> int:
        key = id(m)
        if self._seen is not None:
            self._seen.add(key)
        if key in self._module_ids:
            return self._module_ids[key]
        cls = type(m)
        name = cls.__name__
        if self.registry.get(name) is not cls:
            raise TypeError(f"{m}: cannot save a {cls.__module__}.{name}: its class is not "
                            "registered (pymodules.persistence.register)")
        index = len(self.modules)
        self._module_ids[key] = index
        self._keep.append(m)
        d = {"class": name}
        self.modules.append(d)
        outer, self._seen = self._seen, {key}
        try:
            args, kwargs = bound_arguments(m)
            d["args"] = self.encode(args)
            d["kwargs"] = {k: self.encode(v) for k, v in kwargs.items()}
            in_args = self._seen
        finally:
            if outer is not None:
                outer.update(self._seen)
            self._seen = outer
        d.update({
            "name": m.getName(), "hasName": m.hasName(), "train": bool(m.train),
            "dtype": np.dtype(m.dtype).name,
            "propagateBack": bool(getattr(m, "propagateBack", True)),
            "scaleW": float(m.scaleW), "scaleB": float(m.scaleB),
            "frozen": None if m._frozen is None else [float(s) for s in m._frozen],
            "params": {v: self.encode(getattr(m, v)) for v, _ in m._params
                       if getattr(m, v, None) is not None},
            "extra": {e: self.encode(getattr(m, e)) for e in m._extra},
            "state": {a: self.encode(getattr(m, a)) for a in getattr(m, "_persist", ())},
        })
        # Children that the constructor did not receive are added back one by one.
        d["children"] = [self.encode(c) for c in m.children() if id(c) not in in_args]
        return index

    def node(self, n) -> int:
        key = id(n)
        if key in self._node_ids:
            return self._node_ids[key]
        prev = [self.node(p) for p in n.prevNodes]  # predecessors first: ids are topological
        index = len(self.nodes)
        self._node_ids[key] = index
        self._keep.append(n)
        d = {"element": None, "prev": prev}
        self.nodes.append(d)
        d["element"] = self.encode(n.element)
        return index


class Decoder:
    """Rebuilds values, modules and graph nodes from a definition."""

    def __init__(self, archive: Archive, definition: dict, modules=True):
        self.archive = archive
        self.allow_modules = modules
        self.tables = {"module": definition.get("modules", []) if modules else [],
                       "node": definition.get("nodes", []) if modules else []}
        if not all(isinstance(t, list) for t in self.tables.values()):
            raise archive.error("garbled module or node table")
        self.built: dict[tuple[str, int], object] = {}  # ("module" or "node", index): built
        self.building: set = set()
        self.registry = registry()
        self._unchecked: list = []  # value objects built, their ``_restored`` check pending

    def error(self, reason):
        return self.archive.error(reason)

    def array(self, ref):
        if not isinstance(ref, dict) or set(ref) != {"$array"}:
            raise self.error(f"expected an array reference, got {str(ref)[:80]}")
        return self.archive.array(ref["$array"])

    def value(self, v, depth=0):
        if depth > MAX_DEPTH:
            raise self.error("values nested too deep")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x, depth + 1) for x in v]
        if not isinstance(v, dict) or not v:
            raise self.error(f"garbled value {str(v)[:80]}")
        tag = next(iter(v))
        body = v[tag]
        if tag == "$array" and len(v) == 1:
            return self.archive.array(body)
        if tag == "$tuple" and len(v) == 1 and isinstance(body, list):
            return tuple(self.value(x, depth + 1) for x in body)
        if tag == "$dict" and len(v) == 1 and isinstance(body, list):
            out = {}
            for pair in body:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.error("garbled dict entry")
                key = self.value(pair[0], depth + 1)
                try:
                    out[key] = self.value(pair[1], depth + 1)
                except TypeError:
                    raise self.error(f"unhashable dict key {str(key)[:80]}") from None
            return out
        if tag in ("$set", "$frozenset") and len(v) == 1 and isinstance(body, list):
            items = [self.value(x, depth + 1) for x in body]
            try:
                return frozenset(items) if tag == "$frozenset" else set(items)
            except TypeError:
                raise self.error("unhashable set item") from None
        if tag == "$dtype" and len(v) == 1:
            if body not in _DTYPE_NAMES:
                raise self.error(f"unknown dtype {str(body)[:40]}")
            return _DTYPE_NAMES[body].type
        if tag == "$object" and set(v) == {"$object", "state"}:
            return self.object(body, v["state"], depth)
        if tag == "$module" and len(v) == 1 and self.allow_modules:
            return self.module(body)
        if tag == "$node" and len(v) == 1 and self.allow_modules:
            return self.node(body)
        raise self.error(f"garbled value {str(v)[:80]}")

    def lookup(self, name):
        cls = self.registry.get(name) if isinstance(name, str) else None
        if cls is None:
            raise self.error(f"unknown class {str(name)[:80]!r}: not a registered pymodules "
                             "class (pymodules.persistence.register adds one)")
        return cls

    def object(self, name, state, depth):
        cls = self.lookup(name)
        if issubclass(cls, Module) or not isinstance(state, dict):
            raise self.error(f"garbled {name} object")
        # A value class's state is its attributes: set them without running any code.
        obj = cls.__new__(cls)
        obj.__dict__.update({str(k): self.value(x, depth + 1) for k, x in state.items()})
        if callable(getattr(obj, "_restored", None)):
            self._unchecked.append(obj)
        return obj

    def checked(self, result=None):
        """``result``, once every value object built so far has checked the attributes
        set from the file as its constructor would (its ``_restored``): run when a whole
        value is decoded, so that a garbled value is reported as such first."""
        while self._unchecked:
            obj = self._unchecked.pop()
            with refusing(self, f"garbled {type(obj).__name__} object"):
                obj._restored()
        return result

    def _index(self, i, table, what):
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(table):
            raise self.error(f"reference to a missing {what} {str(i)[:20]}")
        if not isinstance(table[i], dict):
            raise self.error(f"garbled {what} {i}")
        return table[i]

    def _once(self, kind: str, i, build, cycle: str):
        """What entry ``i`` of the ``kind`` table builds into, built once; ``cycle`` is the
        error when building it needs itself."""
        d = self._index(i, self.tables[kind], kind)
        key = (kind, i)
        if key in self.built:
            return self.built[key]
        if key in self.building:
            raise self.error(cycle)
        self.building.add(key)
        obj = build(i, d)
        self.building.discard(key)
        self.built[key] = obj
        return obj

    def module(self, i) -> Module:
        return self._once("module", i, self._module, f"module {i} contains itself")

    def node(self, i):
        return self._once("node", i, self._node, f"graph node {i} is its own predecessor")

    def _module(self, i: int, d: dict) -> Module:
        cls = self.lookup(d.get("class"))
        if not issubclass(cls, Module):
            raise self.error(f"{cls.__name__} is not a module")
        args = self.value(d.get("args", []))
        kwargs = d.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise self.error(f"garbled arguments of module {i}")
        kwargs = self.checked({str(k): self.value(x) for k, x in kwargs.items()})
        held = self._held(d)
        try:
            # The parameters are read from the file next; what the arguments size must be
            # what the file holds, checked before it is allocated.
            with skipped(), restoring(held):
                m = cls(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - whatever the arguments from the file do
            raise self.error(f"cannot rebuild {cls.__name__} from its arguments: {err}") \
                from None
        try:
            self._restore(m, d)
        except FileFormatError:
            raise
        except _REBUILD_ERRORS as err:  # as ``refusing``, its message made only on failure
            raise self.error(f"cannot restore {cls.__name__} {str(d.get('name'))[:80]!r} "
                             f"({type(err).__name__}: {err})"[:400]) from None
        return m

    def _held(self, d: dict) -> dict:
        """{attribute: shape} of the parameter and running-state arrays that the file holds
        for module ``d``, from their .npy headers, each checked against its entry's size
        and refused unless float32 or float64: all that its constructor may allocate."""
        held = {}
        for section in ("params", "extra"):
            saved = d.get(section, {})
            if not isinstance(saved, dict):
                raise self.error(f"garbled {section}")
            for attr, ref in saved.items():
                if not isinstance(ref, dict) or set(ref) != {"$array"}:
                    raise self.error(f"garbled {str(attr)[:80]}")
                name = ref["$array"]
                info = self.archive.infos.get(name) if isinstance(name, str) else None
                if info is None or not name.startswith("arrays/"):
                    raise self.error(f"reference to a missing array entry {str(name)[:80]!r}")
                entry = _Entry(self.archive, info)
                shape, dtype = entry.npy_header()
                if math.prod(shape) * dtype.itemsize != entry.left:
                    raise self.error(f"{name}: header says {shape} {dtype}, the entry holds "
                                     f"{entry.left} bytes")
                if dtype.name not in ("float32", "float64"):
                    raise self.error(f"{attr} ({name}) is an array of {dtype}: parameters "
                                     "and running statistics are float32 or float64")
                held[attr] = shape
        return held

    def _restore(self, m: Module, d: dict) -> None:
        dtype = d.get("dtype")
        if dtype not in ("float32", "float64"):
            raise self.error(f"garbled dtype {str(dtype)[:20]}")
        if m.dtype != np.dtype(dtype):
            m._convert(dtype)
        for section, attrs in (("params", m._params), ("extra", m._extra)):
            saved = d.get(section, {})
            if not isinstance(saved, dict):
                raise self.error(f"garbled {section}")
            if not saved and not attrs:  # most layers: nothing held, nothing to compare
                continue
            if section == "params":
                attrs = [v for v, _ in attrs]
            expected = {a for a in attrs if getattr(m, a, None) is not None}
            if set(saved) != expected:
                raise self.error(f"{m}: the file has {section} {sorted(saved)}, the rebuilt "
                                 f"module has {sorted(expected)}")
            for attr, ref in saved.items():
                if not isinstance(ref, dict) or set(ref) != {"$array"}:
                    raise self.error(f"garbled {attr}")
                target = getattr(m, attr)
                try:
                    with np.errstate(over="raise"):  # float64 values beyond float32's range
                        self.archive.array(ref["$array"], out=target)
                except FloatingPointError:
                    raise self.error(f"{m}: values of {attr} overflow its dtype "
                                     f"{target.dtype}") from None
        state = d.get("state", {})
        declared = set(getattr(m, "_persist", ()))
        # A file from before an attribute was declared lacks it: the rebuilt value stays.
        if not isinstance(state, dict) or not set(state) <= declared:
            raise self.error(f"{m}: the file has state {sorted(state)[:10]}, the class "
                             f"declares {sorted(declared)}")
        for attr, v in state.items():
            value, rebuilt = self.checked(self.value(v)), getattr(m, attr, None)
            if rebuilt is not None and not _same_kind(rebuilt, value):
                raise self.error(f"{m}: state {attr} is a {type(value).__name__}, expected a "
                                 f"{type(rebuilt).__name__}")
            # A BigDL setter (setP) checks the value as a call from code would.
            setter = getattr(m, f"set{attr[:1].upper()}{attr[1:]}", None)
            if callable(setter) and not attr.startswith("_"):
                setter(value)
            else:
                setattr(m, attr, value)
        name, train, frozen = d.get("name"), d.get("train"), d.get("frozen")
        if not isinstance(name, str) or not isinstance(train, bool):
            raise self.error("garbled name or mode")
        m.setName(name)
        if d.get("hasName", True) is False:  # files without it: every name counted as set
            m._named = False
        scales = (d.get("scaleW"), d.get("scaleB"))
        if not all(_finite(s) for s in scales):
            raise self.error(f"{m}: scaleW and scaleB must be finite numbers, got "
                             f"{str(scales)[:80]}")
        m.scaleW, m.scaleB = float(scales[0]), float(scales[1])
        if frozen is not None:
            if not isinstance(frozen, list) or len(frozen) != 2 or \
                    not all(_finite(s) for s in frozen):
                raise self.error("garbled frozen state")
            frozen = (float(frozen[0]), float(frozen[1]))
        m._frozen = frozen
        if "propagateBack" in d:
            m.propagateBack = bool(d["propagateBack"])
        children = d.get("children", [])
        if not isinstance(children, list):
            raise self.error("garbled children")
        for c in children:
            child = self.value(c)
            if not isinstance(child, Module):
                raise self.error("a child is not a module")
            m.add(child)
        m.train = train

    def _node(self, i: int, d: dict):
        prev = d.get("prev", [])
        if not isinstance(prev, list):
            raise self.error(f"garbled graph node {i}")
        prev_nodes = [self.node(p) for p in prev]
        element = self.value(d.get("element"))
        if not isinstance(element, Module):
            raise self.error(f"graph node {i} holds no module")
        return element.inputs(*prev_nodes)
