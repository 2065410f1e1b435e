"""Saving and loading modules, weights and optimizer state, in one safe file format.

A file is a zip archive of stored (uncompressed) entries:

- ``definition.json``: what the file holds. For a module: its class name, constructor
  arguments, name, mode, scales, frozen state, dtype, parameters, children and graph nodes,
  with the format version and the version of pymodules that wrote it.
- ``arrays/<n>.npy``: every array, in NumPy's .npy format, written and read without pickle.
- ``checksum.json``: the size and CRC-32 of every other entry, written last.

Loading never unpickles and never imports a name found in the file: classes are looked up
in a registry of pymodules' own classes (``register`` adds others). Every problem with a
file (not a zip, truncated, garbled, oversized, a wrong checksum, an unknown class, a newer
format version) raises ``FileFormatError`` saying why.

A module is rebuilt by calling its class with the constructor arguments recorded by
``pymodules.recorded.Recorded`` (bound to the signature, so stored by name), then restoring
the parameters (``_params``), the non-trainable state (``_extra``), name, mode and scales,
and adding the children that the constructor did not receive. Gradients are not saved: a
loaded module's gradients are zero.

Paths are local paths or fsspec URLs (``s3://bucket/key``, ``hdfs://host:port/path``,
``memory://``); fsspec is imported only for URLs. Writes are atomic: a local file is written
to a temporary file in the same folder, synced, then renamed (``overWrite=False`` links it
in place, which fails if the path exists, so two racing saves cannot both win); object
stores receive whole objects; other filesystems a temporary file that is then moved.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import io
import json
import logging
import os
import re
import secrets
import struct
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pymodules.engine.checksum import crc32
from pymodules.nn.init import skipped
from pymodules.nn.module import Module

_log = logging.getLogger("pymodules.persistence")

FORMAT = "pymodules"
#: Version of the file layout; a file from a newer version is refused.
FORMAT_VERSION = 1

_DEFINITION = "definition.json"
_CHECKSUM = "checksum.json"
_MAX_JSON = 64 << 20  # bytes of definition.json or checksum.json
_MAX_NPY_HEADER = 1 << 16
_MAX_DEPTH = 256  # nesting of encoded values
_CHUNK = 4 << 20  # bytes per read or write call on array data (and per CRC step)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_ENTRY_NAME = re.compile(r"definition\.json|checksum\.json|arrays/(0|[1-9][0-9]{0,8})\.npy")

# dtypes an array entry may have: no objects, no structured or void types.
_DTYPES = {np.dtype(t).str: np.dtype(t) for t in (
    np.float16, np.float32, np.float64, np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64)}
_DTYPE_NAMES = {d.name: d for d in _DTYPES.values()}

# fsspec protocols whose uploads appear whole when closed; other filesystems get a
# temporary file and a move.
_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory",
                  "oss", "r2"}


class FileFormatError(ValueError):
    """A file that pymodules cannot or will not load, with the reason."""


# -- the registry of rebuildable classes ------------------------------------------------
_registered: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow files to rebuild ``cls`` (a Module subclass, or a small value class such as
    an init method whose state is its attributes); return it, so it works as a decorator.

    pymodules' own exported classes are registered already.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register takes a class, got {type(cls).__name__}")
    known = _registry().get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(f"another class named {cls.__name__!r} is registered already")
    _registered[cls.__name__] = cls
    return cls


def _registry() -> dict[str, type]:
    """{class name: class} of every class that files may name: the Module and value
    classes defined in the pymodules package (exported ones first, where two share a
    name), and those given to ``register``.

    Computed on each save or load, so classes added to the library later are covered
    without a list to maintain here.
    """
    import pymodules

    bases = (Module, *_value_bases())
    found = {}
    for name in pymodules.__all__:
        obj = getattr(pymodules, name, None)
        if isinstance(obj, type) and issubclass(obj, bases) and _ours(obj):
            found.setdefault(obj.__name__, obj)
    for base in bases:
        stack = [base]
        while stack:
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            if _ours(cls):
                found.setdefault(cls.__name__, cls)
    found.update(_registered)
    return found


def _ours(cls: type) -> bool:
    return cls.__module__ == "pymodules" or cls.__module__.startswith("pymodules.")


def _value_bases() -> tuple[type, ...]:
    """Base classes of the objects saved as their attributes: init methods, regularizers,
    criteria (where a module takes one), optim methods and their schedules, triggers."""
    from pymodules.nn.init import InitializationMethod
    from pymodules.nn.regularizers import L1L2Regularizer

    bases = [InitializationMethod, L1L2Regularizer]
    with contextlib.suppress(ImportError):
        from pymodules.criterion import Criterion

        bases.append(Criterion)
    with contextlib.suppress(ImportError):
        from pymodules.optim.methods import OptimMethod
        from pymodules.optim.schedules import LearningRateSchedule
        from pymodules.optim.triggers import Trigger

        bases.extend((OptimMethod, LearningRateSchedule, Trigger))
    return tuple(bases)


def _is_node(value) -> bool:
    return all(hasattr(value, a) for a in ("element", "prevNodes", "nextNodes"))


# -- public functions -------------------------------------------------------------------
def save(module: Module, path, overWrite: bool = False, *, storage_options=None) -> Module:
    """Write ``module`` (definition, names, mode, weights) to ``path``; return it."""
    if not isinstance(module, Module):
        raise TypeError(f"save takes a Module, got {type(module).__name__}")
    w = _Writer()
    root = w.encode(module)
    w.definition = {"kind": "module", "root": root, "modules": w.modules, "nodes": w.nodes}
    _write(w, path, overWrite, storage_options)
    return module


def load(path, *, storage_options=None) -> Module:
    """Rebuild the module saved at ``path``, with its names, mode and weights."""
    with _open_read(path, storage_options) as archive:
        definition = archive.definition("module")
        with _refusing(archive):
            return _Decoder(archive, definition).value(definition.get("root"))


def saveWeights(module: Module, path, overWrite: bool = False, *, storage_options=None):
    """Write the parameters and running statistics of ``module``, by module name, with
    each module's position in the tree (for loading into a model named otherwise)."""
    w = _Writer()
    table, positions = _weight_table(module)
    w.definition = {"kind": "weights", "weights": {
        name: {attr: w.encode(a) for attr, a in arrays.items()}
        for name, arrays in table.items()}, "positions": positions}
    _write(w, path, overWrite, storage_options)
    return module


def loadWeights(module: Module, path, matchAll: bool = True, *, storage_options=None):
    """Copy the weights saved at ``path`` into the modules of the same names, or, when no
    name matches, of the same positions in a tree of the same structure."""
    with _open_read(path, storage_options) as archive:
        definition = archive.definition("weights")
        table = definition.get("weights")
        if not isinstance(table, dict) or not all(isinstance(t, dict) for t in table.values()):
            raise FileFormatError(f"{archive.where}: the weight table is garbled")
        positions = definition.get("positions")  # absent from files of earlier versions
        if positions is not None and not (
                isinstance(positions, dict) and set(positions) == set(table)
                and all(_is_position(p) for p in positions.values())):
            raise FileFormatError(f"{archive.where}: the weight positions are garbled")
        dec = _Decoder(archive, definition)
        with _refusing(archive):
            table = {name: {attr: dec.array(ref) for attr, ref in arrays.items()}
                     for name, arrays in table.items()}
    _copy_weights(module, table, positions, matchAll, path)
    return module


def loadModelWeights(module: Module, src: Module, matchAll: bool = True):
    """Copy the weights of ``src``'s modules into the modules of ``module`` of the same
    names, or, when no name matches, of the same positions in a tree of the same structure."""
    if not isinstance(src, Module):
        raise TypeError(f"{module}: loadModelWeights takes a Module, got {type(src).__name__}")
    _copy_weights(module, *_weight_table(src), matchAll, src.getName())
    return module


def save_state(path, state: dict, overWrite: bool = False, *, storage_options=None) -> None:
    """Write ``state`` (a dict of arrays, numbers, strings and nested lists/dicts of them,
    such as an optim method's state) in the same safe format."""
    if not isinstance(state, dict):
        raise TypeError(f"save_state takes a dict, got {type(state).__name__}")
    w = _Writer(modules=False)
    w.definition = {"kind": "state", "state": w.encode(state)}
    _write(w, path, overWrite, storage_options)


def load_state(path, *, storage_options=None) -> dict:
    """The dict written by ``save_state``."""
    with _open_read(path, storage_options) as archive:
        definition = archive.definition("state")
        with _refusing(archive):
            return _Decoder(archive, definition, modules=False).value(definition.get("state"))


@contextlib.contextmanager
def _refusing(archive):
    """Any failure to rebuild from what the file says is the file's: FileFormatError."""
    try:
        yield
    except FileFormatError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError, MemoryError) as err:
        raise archive.error(f"cannot rebuild what the file describes ({type(err).__name__}: "
                            f"{err})"[:400]) from None


# -- weights by name --------------------------------------------------------------------
def _state_attrs(m: Module) -> list[str]:
    return [v for v, _ in m._params if getattr(m, v, None) is not None] + list(m._extra)


def _holders(module: Module):
    """(position, module) of every module of the tree holding parameters or state, in
    preorder. A position is [path of child indices from the root ("" for the root, "0.2"
    for the third child of the first child), class name]."""
    stack = [("", module)]
    while stack:
        path, m = stack.pop()
        if _state_attrs(m):
            yield [path, type(m).__name__], m
        children = m.children()
        for i in range(len(children) - 1, -1, -1):
            stack.append((f"{path}.{i}" if path else str(i), children[i]))


def _is_position(p) -> bool:
    return isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)


def _weight_table(module: Module):
    """({module name: {attribute: live array}}, {module name: position}) of every module
    holding parameters or state."""
    table, positions = {}, {}
    for position, m in _holders(module):
        if m.getName() in table:
            raise ValueError(f"{module.getName()}: several modules are named "
                             f"{m.getName()!r}; weights are matched by name")
        table[m.getName()] = {a: getattr(m, a) for a in _state_attrs(m)}
        positions[m.getName()] = position
    return table, positions


def _match(module: Module, table: dict, positions: dict | None):
    """(rule, [(module, its source entry or None)]): by name; when no name matches and
    ``positions`` describe a tree of the same structure (the same classes holding weights
    at the same positions), by position."""
    holders = list(_holders(module))
    pairs = [(m, table.get(m.getName())) for _, m in holders]
    if any(src is not None for _, src in pairs) or not positions:
        return "name", pairs
    by_position = {tuple(p): name for name, p in positions.items()}
    if len(by_position) != len(holders) or \
            any(tuple(p) not in by_position for p, _ in holders):
        return "name", pairs
    return "position", [(m, table[by_position[tuple(p)]]) for p, m in holders]


def _copy_weights(module: Module, table: dict, positions, matchAll: bool, source) -> None:
    """Check every shape first, then copy, so that a refused load changes nothing."""
    rule, pairs = _match(module, table, positions)
    hint = " (no name matches, and the trees differ in structure, so positions do not " \
        "either)" if positions is not None and all(s is None for _, s in pairs) else ""
    copies = []
    loaded = 0
    for m, src in pairs:
        attrs = _state_attrs(m)
        if src is None:
            if matchAll:
                raise ValueError(f"{m}: {source} has no weights for a module of this name"
                                 f"{hint}")
            continue
        loaded += 1
        for attr in attrs:
            dst = getattr(m, attr)
            if attr not in src:
                if matchAll:
                    raise ValueError(f"{m}: {source} has no {attr} for it")
                continue
            a = np.asarray(src[attr])
            if a.shape != dst.shape:
                raise ValueError(
                    f"{m}: {attr} in {source} has shape {a.shape}, expected {dst.shape}")
            copies.append((dst, a))
    if pairs and not loaded:
        raise ValueError(f"{module.getName()}: no module matches {source} by name{hint}")
    for dst, a in copies:
        if dst is not a:
            dst[...] = a
    _log.info("%s: loaded the weights of %d of %d modules from %s, matched by %s",
              module.getName(), loaded, len(pairs), source, rule)


# -- writing ----------------------------------------------------------------------------
def _bound_arguments(m: Module):
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


class _Writer:
    """Turns values into JSON with references to array entries, then writes the zip."""

    def __init__(self, modules=True):
        self.registry = _registry()
        self.arrays: list[np.ndarray] = []
        self.modules: list[dict] = []
        self.nodes: list[dict] = []
        self._module_ids: dict[int, int] = {}
        self._node_ids: dict[int, int] = {}
        self._keep = []  # objects whose id() is a key above stay alive until written
        self._allow_modules = modules
        self._seen = None  # modules met while encoding one module's arguments
        self.definition = None

    def encode(self, v, depth=0):
        if depth > _MAX_DEPTH:
            raise ValueError(f"cannot save values nested more than {_MAX_DEPTH} deep")
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
        if _is_node(v) and self._allow_modules:
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
        if a.dtype.str not in _DTYPES:
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
            args, kwargs = _bound_arguments(m)
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

    def write_to(self, f, seekable: bool) -> None:
        """Stream the archive into the binary file ``f``."""
        from pymodules import __version__

        definition = {"format": FORMAT, "formatVersion": FORMAT_VERSION,
                      "libraryVersion": __version__, **self.definition}
        with _ZipWriter(f, seekable) as zw:
            zw.entry(_DEFINITION, [json.dumps(definition, separators=(",", ":")).encode()])
            for i, a in enumerate(self.arrays):
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    head, np.lib.format.header_data_from_array_1_0(a))
                data = a.reshape(-1).view(np.uint8)
                zw.entry(f"arrays/{i}.npy", [head.getvalue()] + [
                    memoryview(data[j:j + _CHUNK]) for j in range(0, data.size, _CHUNK)])
            sums = {name: {"size": size, "crc32": crc} for name, _, size, crc in zw.entries}
            checksum = {"algorithm": "crc32", "entries": sums}
            zw.entry(_CHECKSUM, [json.dumps(checksum, separators=(",", ":")).encode()])


class _ZipWriter:
    """Writes a zip of stored entries (zip64 records throughout, as Python's zipfile and
    unzip read them). The CRC-32 of an entry (zlib's, by the engine's folding kernel) is
    computed on a worker thread while the entry is written (both release the GIL), then patched into the local header when the
    file is seekable, or written after the data (a data descriptor) when it is not.
    """

    _DATE = (1 << 5) | 1  # 1980-01-01, so that equal content gives equal files

    def __init__(self, f, seekable: bool):
        self.f, self.seekable = f, seekable
        self.offset = 0
        self.entries = []  # (name, header offset, size, crc)
        self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if self._pool is not None:
            self._pool.shutdown()
        if kind is None:
            self._central_directory()

    def _put(self, b) -> None:
        self.f.write(b)
        self.offset += len(b)

    @staticmethod
    def _crc(chunks) -> int:
        crc = 0
        for c in chunks:
            crc = crc32(c, crc)
        return crc

    def entry(self, name: str, chunks) -> None:
        size = sum(len(c) for c in chunks)
        raw = name.encode("ascii")
        start = self.offset
        flags = 0 if self.seekable else 0x08
        self._put(_LOCAL_HEADER.pack(b"PK\x03\x04", 45, flags, 0, 0, self._DATE, 0,
                                     0xFFFFFFFF, 0xFFFFFFFF, len(raw), 20))
        self._put(raw + struct.pack("<HHQQ", 1, 16, size, size))
        if size >= _CHUNK:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="pymodules-crc")
            crc_job = self._pool.submit(self._crc, chunks)
            try:
                for c in chunks:
                    self._put(c)
            finally:
                crc = crc_job.result()
        else:
            crc = self._crc(chunks)
            for c in chunks:
                self._put(c)
        if self.seekable:
            self.f.seek(start + 14)
            self.f.write(struct.pack("<L", crc))
            self.f.seek(self.offset)
        else:
            self._put(struct.pack("<4sLQQ", b"PK\x07\x08", crc, size, size))
        self.entries.append((name, start, size, crc))

    def _central_directory(self) -> None:
        cd_start = self.offset
        flags = 0 if self.seekable else 0x08
        for name, start, size, crc in self.entries:
            raw = name.encode("ascii")
            self._put(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", (3 << 8) | 45, 45, flags, 0, 0,
                                  self._DATE, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(raw), 28, 0,
                                  0, 0, 0o100644 << 16, 0xFFFFFFFF))
            self._put(raw + struct.pack("<HHQQQ", 1, 24, size, size, start))
        cd_size = self.offset - cd_start
        end64 = self.offset
        n = len(self.entries)
        self._put(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size,
                              cd_start))
        self._put(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
        self._put(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, min(n, 0xFFFF),
                              min(n, 0xFFFF), min(cd_size, 0xFFFFFFFF), 0xFFFFFFFF, 0))


def _write(writer: _Writer, path, overWrite: bool, storage_options) -> None:
    with _open_write(path, overWrite, storage_options) as (f, seekable):
        writer.write_to(f, seekable)


def _is_url(path) -> bool:
    return isinstance(path, str) and "://" in path


@contextlib.contextmanager
def _open_write(path, overWrite, storage_options):
    """(binary file, seekable) to write ``path`` through; what it holds appears at ``path``
    only when the block ends without an exception, and whole."""
    if _is_url(path):
        yield from _remote_write(path, overWrite, storage_options)
        return
    if storage_options:
        raise TypeError("storage_options apply to URLs only, not to local path "
                        f"{os.fspath(path)!r}")
    path = os.path.abspath(os.fspath(path))
    if not overWrite and os.path.lexists(path):
        raise _exists(path)
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield _WritingBack(f), True
            f.flush()
            os.fsync(f.fileno())
        if overWrite:
            replaced = _hold(path)
            try:
                os.replace(tmp, path)
            finally:
                _release_later(replaced)
        else:
            _link_exclusive(tmp, path)
        _fsync_folder(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _sync_file_range():
    """Linux's sync_file_range(2), which starts the writeback of a byte range without
    waiting for it; None where the C library lacks it."""
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, ImportError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_start_writeback = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2
_WRITEBACK_STEP = 32 << 20


class _WritingBack:
    """A local file being written that hands each 32 MiB it receives to the disk at once,
    so that the fsync which ends a save waits for the last step only, not for the whole
    file: the disk writes while the next arrays are copied into the page cache. A step the
    kernel refuses only loses that overlap; the fsync still covers every byte."""

    def __init__(self, f):
        self.f, self.fd = f, f.fileno()
        self.done = self.pos = 0  # bytes handed to the disk; bytes written

    def write(self, b) -> int:
        n = self.f.write(b)
        self.pos += n
        if _start_writeback is not None and self.pos - self.done >= _WRITEBACK_STEP:
            self.f.flush()
            _start_writeback(self.fd, self.done, self.pos - self.done, _SYNC_FILE_RANGE_WRITE)
            self.done = self.pos
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = self.f.seek(offset, whence)
        return self.pos


def _hold(path: str) -> int | None:
    """An open descriptor on the file at ``path``, if any: while it is open, replacing the
    file does not free the old one's blocks."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO: no wait
    except OSError:
        return None


def _release_later(fd: int | None) -> None:
    """Close ``fd`` on a thread: the last close of a replaced file frees its blocks, which
    for a large file takes as long as writing a good part of it, and the save need not
    wait for that. A process that exits first closes it all the same."""
    if fd is not None:
        threading.Thread(target=os.close, args=(fd,), name="pymodules-release").start()


def _link_exclusive(tmp: str, path: str) -> None:
    """Put ``tmp`` at ``path`` unless something is there; of two racing calls, one wins."""
    try:
        os.link(tmp, path)  # atomic, and fails when path exists
    except FileExistsError:
        raise _exists(path) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                             errno.EXDEV, errno.ENOSYS):
            raise
        # No hard links on this filesystem: reserve the name exclusively, then replace
        # the (briefly empty) reservation with the complete file.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise _exists(path) from None
        os.replace(tmp, path)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exists(path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "File exists (pass overWrite=True to replace it)",
                           str(path))


def _filesystem(url, storage_options):
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"{url}: URLs need fsspec (pip install 'pymodules[s3]' for S3, "
                          "'pymodules[hdfs]' for HDFS)") from None
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def _remote_write(url, overWrite, storage_options):
    fs, path = _filesystem(url, storage_options)
    if not overWrite and fs.exists(path):
        raise _exists(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & _OBJECT_STORES:
        # An object appears whole when its upload completes; "xb" makes the store itself
        # refuse an existing key where it can (S3 conditional writes).
        f = fs.open(path, "wb" if overWrite else _exclusive_mode(fs), autocommit=True)
        try:
            yield f, False
        except BaseException:
            with contextlib.suppress(Exception):
                f.discard()
            f.closed = True  # a close() now would upload the partial object
            raise
        f.close()
        return
    # A filesystem whose files are visible while written: write aside, then move.
    folder, base = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = f"{folder}/.{base}.{secrets.token_hex(6)}.part" if folder else \
        f".{base}.{secrets.token_hex(6)}.part"
    try:
        with fs.open(tmp, "wb") as f:
            yield f, False
        if not overWrite and fs.exists(path):
            raise _exists(url)
        fs.mv(tmp, path)
    finally:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)


def _exclusive_mode(fs) -> str:
    return "xb" if type(fs).__module__.startswith("s3fs") else "wb"


# -- reading ----------------------------------------------------------------------------
@contextlib.contextmanager
def _open_read(path, storage_options):
    if _is_url(path):
        fs, p = _filesystem(path, storage_options)
        with fs.open(p, "rb") as f:
            archive = _Archive(f, fs.size(p), path)
            try:
                yield archive
            finally:
                archive.close()
        return
    if storage_options:
        raise TypeError(f"storage_options apply to URLs only, not to local path {path!r}")
    with open(os.fspath(path), "rb") as f:
        archive = _Archive(f, os.fstat(f.fileno()).st_size, os.fspath(path))
        try:
            yield archive
        finally:
            archive.close()


class _Archive:
    """A checked view of a pymodules zip: nothing is read before its size is known."""

    def __init__(self, f, size: int, where: str):
        self.f, self.size, self.where = f, size, where
        self._pool = None
        try:
            infos = zipfile.ZipFile(f).infolist()
        except Exception as err:  # zipfile raises many kinds on a crafted directory
            if isinstance(err, FileNotFoundError):
                raise
            raise self.error(f"not a pymodules file (not a readable zip archive: {err})") \
                from None
        self.infos = {}
        total = 0
        for info in infos:
            if info.filename in self.infos:
                raise self.error(f"entry {info.filename} appears twice")
            if not _ENTRY_NAME.fullmatch(info.filename):
                raise self.error(f"unexpected entry {info.filename[:80]!r} (pymodules writes "
                                 "only definition.json, checksum.json and arrays/<n>.npy)")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise self.error(f"entry {info.filename} is compressed or encrypted")
            if info.compress_size != info.file_size or info.header_offset < 0 or \
                    info.header_offset + _LOCAL_HEADER.size + info.file_size > size:
                raise self.error(f"entry {info.filename} declares {info.file_size} bytes, "
                                 f"more than the file holds ({size} bytes)")
            total += info.file_size
            self.infos[info.filename] = info
        if total > size:
            raise self.error(f"entries declare {total} bytes, more than the file holds")
        for name in (_DEFINITION, _CHECKSUM):
            if name not in self.infos:
                raise self.error(f"no {name} (truncated, or not a pymodules file)")
            if self.infos[name].file_size > _MAX_JSON:
                raise self.error(f"{name} is {self.infos[name].file_size} bytes, "
                                 f"more than the limit of {_MAX_JSON}")
        checksum = self._json(_CHECKSUM)
        if not isinstance(checksum, dict):
            raise self.error("checksum.json is garbled")
        entries = checksum.get("entries")
        if checksum.get("algorithm") != "crc32" or not isinstance(entries, dict):
            raise self.error("checksum.json is garbled")
        if set(entries) != set(self.infos) - {_CHECKSUM}:
            extra = sorted(set(self.infos) - {_CHECKSUM} - set(entries))
            missing = sorted(set(entries) - set(self.infos))
            raise self.error(f"entries do not match the checksum list (unlisted {extra[:5]}, "
                             f"missing {missing[:5]})")
        for name, s in entries.items():
            info = self.infos[name]
            if not isinstance(s, dict) or s.get("size") != info.file_size or \
                    s.get("crc32") != info.CRC:
                raise self.error(f"checksum mismatch: {name} differs from checksum.json")

    def error(self, reason: str) -> FileFormatError:
        return FileFormatError(f"{self.where}: {reason}")

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="pymodules-crc")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def definition(self, kind: str) -> dict:
        d = self._json(_DEFINITION)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise self.error("not a pymodules file (no pymodules definition)")
        version = d.get("formatVersion")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise self.error(f"garbled format version {version!r}")
        if version > FORMAT_VERSION:
            raise self.error(
                f"written in format version {version} by pymodules "
                f"{d.get('libraryVersion')}; this pymodules reads up to version "
                f"{FORMAT_VERSION}: upgrade pymodules")
        if d.get("kind") != kind:
            raise self.error(f"holds {d.get('kind')!r}, not {kind!r}")
        return d

    def _json(self, name):
        entry = _Entry(self, self.infos[name])
        data = entry.read(entry.left)
        entry.finish()
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise self.error(f"{name} is garbled ({type(err).__name__}: {err})"[:300]) \
                from None

    def array(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """The array in entry ``name``, read into ``out`` when given (same shape)."""
        info = self.infos.get(name) if isinstance(name, str) else None
        if info is None or not name.startswith("arrays/"):
            raise self.error(f"reference to a missing array entry {name!r}")
        entry = _Entry(self, info)
        shape, dtype = entry.npy_header()
        count = 1
        for s in shape:
            count *= s
        if count * dtype.itemsize != entry.left:
            raise self.error(f"{name}: header says {shape} {dtype} ({count * dtype.itemsize} "
                             f"bytes), the entry holds {entry.left}")
        if out is not None and (out.shape != shape or not out.flags.c_contiguous
                                or not out.flags.writeable):
            raise self.error(f"{name} has shape {shape}, expected {out.shape}")
        if out is None or out.dtype != dtype:
            a = np.empty(shape, dtype)
        else:
            a = out
        entry.readinto(a.reshape(-1).view(np.uint8))
        entry.finish()
        if a is not out and out is not None:
            out[...] = a
            return out
        return a


class _Entry:
    """Reads one stored entry in order, checking its size and CRC-32 on the way."""

    def __init__(self, archive: _Archive, info: zipfile.ZipInfo):
        self.archive, self.info = archive, info
        f = archive.f
        f.seek(info.header_offset)
        head = f.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise archive.error(f"{info.filename}: truncated")
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != b"PK\x03\x04" or fields[3] != zipfile.ZIP_STORED:
            raise archive.error(f"{info.filename}: garbled entry header")
        start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
        if start + info.file_size > archive.size:
            raise archive.error(f"{info.filename}: declares more bytes than the file holds")
        f.seek(start)
        self.left = info.file_size
        self.crc = 0

    def readinto(self, mv) -> None:
        mv = memoryview(mv).cast("B")
        n = len(mv)
        if n > self.left:
            raise self.archive.error(f"{self.info.filename}: shorter than its header says")
        # Large reads check the CRC of one chunk on a worker while the next one is read.
        pool = self.archive.pool() if n >= 2 * _CHUNK else None
        last = None
        done = 0
        try:
            while done < n:
                part = mv[done:min(n, done + _CHUNK)]
                got = self.archive.f.readinto(part)
                if not got:
                    raise self.archive.error(f"{self.info.filename}: truncated")
                if pool is None:
                    self._update(part[:got])
                else:
                    last = pool.submit(self._update, part[:got])  # one worker: in order
                done += got
        finally:
            if last is not None:
                last.result()
        self.left -= n

    def _update(self, part) -> None:
        self.crc = crc32(part, self.crc)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)

    def finish(self) -> None:
        if self.left or self.crc != self.info.CRC:
            raise self.archive.error(f"checksum mismatch in {self.info.filename} "
                                     "(the file is corrupted)")

    def npy_header(self):
        """(shape, dtype) from a .npy header; object and structured dtypes are refused."""
        name = self.info.filename
        if self.left < 10:
            raise self.archive.error(f"{name}: not a .npy array")
        magic = self.read(8)
        if magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
            raise self.archive.error(f"{name}: not a .npy array")
        width = 2 if magic[6] == 1 else 4
        hlen = int.from_bytes(self.read(width), "little")
        if hlen > min(_MAX_NPY_HEADER, self.left):
            raise self.archive.error(f"{name}: .npy header of {hlen} bytes is too long")
        raw = magic + (hlen.to_bytes(width, "little")) + self.read(hlen)
        try:
            bio = io.BytesIO(raw)
            major, _ = np.lib.format.read_magic(bio)
            read = np.lib.format.read_array_header_1_0 if major == 1 else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(bio, max_header_size=_MAX_NPY_HEADER)
        except Exception as err:  # numpy's parser raises many kinds (tokenize, ast, ...)
            raise self.archive.error(f"{name}: garbled .npy header ({err})"[:300]) from None
        if dtype.str not in _DTYPES:
            raise self.archive.error(f"{name}: dtype {dtype} is not allowed in a pymodules "
                                     "file (objects are never unpickled)")
        if fortran:
            raise self.archive.error(f"{name}: Fortran-ordered arrays are not written by "
                                     "pymodules")
        return shape, _DTYPES[dtype.str]


class _Decoder:
    """Rebuilds values, modules and graph nodes from a definition."""

    def __init__(self, archive: _Archive, definition: dict, modules=True):
        self.archive = archive
        self.allow_modules = modules
        self.module_defs = definition.get("modules", []) if modules else []
        self.node_defs = definition.get("nodes", []) if modules else []
        if not isinstance(self.module_defs, list) or not isinstance(self.node_defs, list):
            raise archive.error("garbled module or node table")
        self.built_modules: dict[int, Module] = {}
        self.built_nodes: dict[int, object] = {}
        self.building: set = set()
        self.registry = _registry()

    def error(self, reason):
        return self.archive.error(reason)

    def array(self, ref):
        if not isinstance(ref, dict) or set(ref) != {"$array"}:
            raise self.error(f"expected an array reference, got {str(ref)[:80]}")
        return self.archive.array(ref["$array"])

    def value(self, v, depth=0):
        if depth > _MAX_DEPTH:
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
        return obj

    def _index(self, i, table, what):
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(table):
            raise self.error(f"reference to a missing {what} {str(i)[:20]}")
        if not isinstance(table[i], dict):
            raise self.error(f"garbled {what} {i}")
        return table[i]

    def module(self, i) -> Module:
        d = self._index(i, self.module_defs, "module")
        if i in self.built_modules:
            return self.built_modules[i]
        if ("module", i) in self.building:
            raise self.error(f"module {i} contains itself")
        self.building.add(("module", i))
        cls = self.lookup(d.get("class"))
        if not issubclass(cls, Module):
            raise self.error(f"{cls.__name__} is not a module")
        args = self.value(d.get("args", []))
        kwargs = d.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise self.error(f"garbled arguments of module {i}")
        kwargs = {str(k): self.value(x) for k, x in kwargs.items()}
        try:
            with skipped():  # the parameters are read from the file next
                m = cls(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - whatever the arguments from the file do
            raise self.error(f"cannot rebuild {cls.__name__} from its arguments: {err}") \
                from None
        try:
            self._restore(m, d)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            if isinstance(err, FileFormatError):
                raise
            raise self.error(f"cannot restore {cls.__name__} {d.get('name')!r}: {err}") \
                from None
        self.building.discard(("module", i))
        self.built_modules[i] = m
        return m

    def _restore(self, m: Module, d: dict) -> None:
        dtype = d.get("dtype")
        if dtype not in ("float32", "float64"):
            raise self.error(f"garbled dtype {str(dtype)[:20]}")
        if m.dtype != np.dtype(dtype):
            m._convert(dtype)
        for section, attrs in (("params", [v for v, _ in m._params]), ("extra", m._extra)):
            saved = d.get(section, {})
            if not isinstance(saved, dict):
                raise self.error(f"garbled {section}")
            expected = {a for a in attrs if getattr(m, a, None) is not None}
            if set(saved) != expected:
                raise self.error(f"{m}: the file has {section} {sorted(saved)}, the rebuilt "
                                 f"module has {sorted(expected)}")
            for attr, ref in saved.items():
                if not isinstance(ref, dict) or set(ref) != {"$array"}:
                    raise self.error(f"garbled {attr}")
                self.archive.array(ref["$array"], out=getattr(m, attr))
        state = d.get("state", {})
        declared = set(getattr(m, "_persist", ()))
        # A file from before an attribute was declared lacks it: the rebuilt value stays.
        if not isinstance(state, dict) or not set(state) <= declared:
            raise self.error(f"{m}: the file has state {sorted(state)[:10]}, the class "
                             f"declares {sorted(declared)}")
        for attr, v in state.items():
            setattr(m, attr, self.value(v))
        name, train, frozen = d.get("name"), d.get("train"), d.get("frozen")
        if not isinstance(name, str) or not isinstance(train, bool):
            raise self.error("garbled name or mode")
        m.setName(name)
        if d.get("hasName", True) is False:  # files without it: every name counted as set
            m._named = False
        m.scaleW, m.scaleB = float(d.get("scaleW")), float(d.get("scaleB"))
        if frozen is not None:
            if not isinstance(frozen, list) or len(frozen) != 2:
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

    def node(self, i):
        d = self._index(i, self.node_defs, "node")
        if i in self.built_nodes:
            return self.built_nodes[i]
        if ("node", i) in self.building:
            raise self.error(f"graph node {i} is its own predecessor")
        self.building.add(("node", i))
        prev = d.get("prev", [])
        if not isinstance(prev, list):
            raise self.error(f"garbled graph node {i}")
        prev_nodes = [self.node(p) for p in prev]
        element = self.value(d.get("element"))
        if not isinstance(element, Module):
            raise self.error(f"graph node {i} holds no module")
        n = element.inputs(*prev_nodes)
        self.building.discard(("node", i))
        self.built_nodes[i] = n
        return n
