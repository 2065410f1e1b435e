"""Weights by module name or tree position: saveWeights, loadWeights, loadModelWeights.

A weight table maps each module name to that module's arrays (``weight_attributes``); a
load copies them into the modules of the same names, or, when no name matches and the two
trees have the same structure, of the same positions. Every shape is checked before any
array is copied, so a refused load changes nothing.
"""

from __future__ import annotations

import logging

import numpy as np

from pymodules.nn.module import Module

_log = logging.getLogger("pymodules.persistence")


def weight_attributes(m: Module) -> list[str]:
    """Names of the arrays of ``m`` that travel as its weights: its parameters that are
    set, then its non-trainable state (running statistics)."""
    return [v for v, _ in m._params if getattr(m, v, None) is not None] + list(m._extra)


def _holders(module: Module):
    """(position, module) of every module of the tree holding parameters or state, in
    preorder. A position is [path of child indices from the root ("" for the root, "0.2"
    for the third child of the first child), class name]."""
    stack = [("", module)]
    while stack:
        path, m = stack.pop()
        if weight_attributes(m):
            yield [path, type(m).__name__], m
        children = m.children()
        for i in range(len(children) - 1, -1, -1):
            stack.append((f"{path}.{i}" if path else str(i), children[i]))


def is_position(p) -> bool:
    return isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)


def weight_table(module: Module):
    """({module name: {attribute: live array}}, {module name: position}) of every module
    holding parameters or state."""
    table, positions = {}, {}
    for position, m in _holders(module):
        if m.getName() in table:
            raise ValueError(f"{module.getName()}: several modules are named "
                             f"{m.getName()!r}; weights are matched by name")
        table[m.getName()] = {a: getattr(m, a) for a in weight_attributes(m)}
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


def copy_weights(module: Module, table: dict, positions, matchAll: bool, source) -> None:
    """Check every shape first, then copy, so that a refused load changes nothing."""
    rule, pairs = _match(module, table, positions)
    hint = " (no name matches, and the trees differ in structure, so positions do not " \
        "either)" if positions is not None and all(s is None for _, s in pairs) else ""
    copies = []
    loaded = 0
    for m, src in pairs:
        attrs = weight_attributes(m)
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
            _check_values(m, attr, a, dst.dtype, source)
            copies.append((dst, a))
    if pairs and not loaded:
        raise ValueError(f"{module.getName()}: no module matches {source} by name{hint}")
    for dst, a in copies:
        if dst is not a:
            dst[...] = a
    _log.info("%s: loaded the weights of %d of %d modules from %s, matched by %s",
              module.getName(), loaded, len(pairs), source, rule)


_CHUNK = 1 << 20  # elements converted at a time when checking for overflow


def _check_values(m: Module, attr: str, a: np.ndarray, dtype: np.dtype, source) -> None:
    """Refuse what the copy would change silently: integers, bools and float16 (not
    weights), and finite values beyond the range of ``dtype`` (they would become inf)."""
    if a.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{m}: {attr} in {source} has dtype {a.dtype}, expected float32 "
                         f"or float64")
    if a.dtype.itemsize <= dtype.itemsize:
        return
    flat = a.reshape(-1)
    with np.errstate(over="raise"):
        try:
            for start in range(0, flat.size, _CHUNK):
                flat[start:start + _CHUNK].astype(dtype)
        except FloatingPointError:
            raise ValueError(f"{m}: values of {attr} in {source} overflow its dtype "
                             f"{dtype}") from None
