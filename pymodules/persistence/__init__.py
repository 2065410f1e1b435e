"""Saving and loading modules, weights and optimizer state, in one safe file format.

Loading never unpickles and never imports a name found in the file: classes are looked up
in a registry of pymodules' own classes (``register`` adds others). Every problem with a
file (not a zip, truncated, garbled, oversized, a wrong checksum, an unknown class, a newer
format version) raises ``FileFormatError`` saying why.

The parts, one job each: ``registry`` (the classes a file may name), ``codec`` (values
and modules as JSON with array references), ``archive`` (the zip container: entries,
checksums, limits), ``storage`` (local paths and URLs, atomic writes), ``weights``
(weights by module name or position).
"""

from __future__ import annotations

import contextlib

from pymodules.nn.module import Module
from pymodules.persistence import archive, storage
from pymodules.persistence.archive import FORMAT_VERSION, FileFormatError
from pymodules.persistence.codec import Decoder, Encoder, refusing
from pymodules.persistence.registry import register
from pymodules.persistence.weights import copy_weights, is_position, weight_table

__all__ = ["FORMAT_VERSION", "FileFormatError", "load", "loadModelWeights", "loadWeights",
           "load_state", "register", "save", "saveWeights", "save_state"]


def save(module: Module, path, overWrite: bool = False, *, storage_options=None) -> Module:
    """Write ``module`` (definition, names, mode, weights) to ``path``; return it."""
    if not isinstance(module, Module):
        raise TypeError(f"save takes a Module, got {type(module).__name__}")
    enc = Encoder()
    root = enc.encode(module)
    _write(path, {"kind": "module", "root": root, "modules": enc.modules, "nodes": enc.nodes},
           enc.arrays, overWrite, storage_options)
    return module


def load(path, *, storage_options=None) -> Module:
    """Rebuild the module saved at ``path``, with its names, mode and weights."""
    with _reading(path, storage_options) as file:
        definition = file.definition("module")
        with refusing(file):
            root = Decoder(file, definition).value(definition.get("root"))
        if not isinstance(root, Module):
            raise file.error(f"holds a {type(root).__name__} at its root, not a module")
        return root


def saveWeights(module: Module, path, overWrite: bool = False, *, storage_options=None):
    """Write the parameters and running statistics of ``module``, by module name, with
    each module's position in the tree (for loading into a model named otherwise)."""
    enc = Encoder()
    table, positions = weight_table(module)
    _write(path, {"kind": "weights", "weights": {
        name: {attr: enc.encode(a) for attr, a in arrays.items()}
        for name, arrays in table.items()}, "positions": positions},
        enc.arrays, overWrite, storage_options)
    return module


def loadWeights(module: Module, path, matchAll: bool = True, *, storage_options=None):
    """Copy the weights saved at ``path`` into the modules of the same names, or, when no
    name matches, of the same positions in a tree of the same structure."""
    with _reading(path, storage_options) as file:
        definition = file.definition("weights")
        table = definition.get("weights")
        if not isinstance(table, dict) or not all(isinstance(t, dict) for t in table.values()):
            raise file.error("the weight table is garbled")
        positions = definition.get("positions")  # absent from files of earlier versions
        if positions is not None and not (
                isinstance(positions, dict) and set(positions) == set(table)
                and all(is_position(p) for p in positions.values())):
            raise file.error("the weight positions are garbled")
        dec = Decoder(file, definition)
        with refusing(file):
            table = {name: {attr: dec.array(ref) for attr, ref in arrays.items()}
                     for name, arrays in table.items()}
    copy_weights(module, table, positions, matchAll, path)
    return module


def loadModelWeights(module: Module, src: Module, matchAll: bool = True):
    """Copy the weights of ``src``'s modules into the modules of ``module`` of the same
    names, or, when no name matches, of the same positions in a tree of the same structure."""
    if not isinstance(src, Module):
        raise TypeError(f"{module}: loadModelWeights takes a Module, got {type(src).__name__}")
    copy_weights(module, *weight_table(src), matchAll, src.getName())
    return module


def save_state(path, state: dict, overWrite: bool = False, *, storage_options=None) -> None:
    """Write ``state`` (a dict of arrays, numbers, strings and nested lists/dicts of them,
    such as an optim method's state) in the same safe format."""
    if not isinstance(state, dict):
        raise TypeError(f"save_state takes a dict, got {type(state).__name__}")
    enc = Encoder(modules=False)
    _write(path, {"kind": "state", "state": enc.encode(state)}, enc.arrays, overWrite,
           storage_options)


def load_state(path, *, storage_options=None) -> dict:
    """The dict written by ``save_state``."""
    with _reading(path, storage_options) as file:
        definition = file.definition("state")
        with refusing(file):
            dec = Decoder(file, definition, modules=False)
            return dec.checked(dec.value(definition.get("state")))


def _write(path, definition: dict, arrays: list, overWrite: bool, storage_options) -> None:
    with storage.open_write(path, overWrite, storage_options) as (f, seekable):
        archive.write(f, seekable, definition, arrays)


@contextlib.contextmanager
def _reading(path, storage_options):
    with storage.open_read(path, storage_options) as (f, size, where), \
            archive.Archive(f, size, where) as file:
        yield file
