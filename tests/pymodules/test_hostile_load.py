"""Crafted files that try to make the loader hold much more memory or time than they are
worth (issue 13, items 1 and 3). Each load of a crafted file runs in a child process
with a bounded address space and a time limit, and reports how much its RSS grew."""

import io
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import pymodules as pm
from pymodules.persistence import archive, load_state, save_state

# The child loads, then prints the error (or None) and how many bytes its RSS grew by.
_CHILD = r"""
import json, resource, sys
import pymodules as pm
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/statm") as f:
    vm = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]), hard))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
error = None
try:
    exec(sys.argv[1])
except Exception as err:
    error = f"{type(err).__name__}: {err}"
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"error": error, "grew": grew}))
"""

MiB = 1 << 20


def _in_child(code, address_space=1 << 30, timeout=60):
    """Run ``code`` (``pm`` imported) in a child allowed ``address_space`` more bytes."""
    out = subprocess.run([sys.executable, "-c", _CHILD, code, str(address_space)],
                         capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _craft(path, entries):
    """A zip of ``entries`` ({name: bytes}) with a matching checksum.json."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        sums = {}
        for name, data in entries.items():
            zf.writestr(name, data)
            sums[name] = {"size": len(data), "crc32": zipfile.crc32(data)}
        zf.writestr("checksum.json", json.dumps({"algorithm": "crc32", "entries": sums}))


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _definition(kind, **body):
    return json.dumps({"format": "pymodules", "formatVersion": 1, "libraryVersion": "0.1.0",
                       "kind": kind, **body}).encode()


def _module(cls, args, params=None, children=()):
    return {"class": cls, "args": args, "kwargs": {}, "name": f"{cls}{id(args)}",
            "hasName": False, "train": True, "dtype": "float32", "propagateBack": True,
            "scaleW": 1.0, "scaleB": 1.0, "frozen": None, "params": params or {},
            "extra": {}, "state": {}, "children": list(children)}


# -- item 1: one array read many times --------------------------------------------------
N_REFS = 400
SIDE = 512  # one 1 MiB float32 entry, referenced N_REFS times: 400 MiB if each is read


def _shared_entry_model(path):
    weight = {"$array": "arrays/0.npy"}
    bias = {"$array": "arrays/1.npy"}
    layers = [_module("Linear", [SIDE, SIDE], {"weight": weight, "bias": bias})
              for _ in range(N_REFS)]
    root = _module("Sequential", [], children=[{"$module": i + 1} for i in range(N_REFS)])
    _craft(path, {"definition.json": _definition("module", root={"$module": 0},
                                                 modules=[root, *layers], nodes=[]),
                  "arrays/0.npy": _npy(np.ones((SIDE, SIDE), np.float32)),
                  "arrays/1.npy": _npy(np.ones(SIDE, np.float32))})


def test_many_modules_on_one_entry_are_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "shared.pm"
    _shared_entry_model(path)
    assert os.path.getsize(path) < 2 * MiB
    r = _in_child(f"pm.load({str(path)!r})")
    assert r["error"] is not None and "FileFormatError" in r["error"]
    assert "arrays/0.npy is referenced twice" in r["error"]
    assert r["grew"] < 64 * MiB, r


def test_many_values_on_one_entry_are_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "state.pm"
    refs = [{"$array": "arrays/0.npy"}] * 3000
    _craft(path, {"definition.json": _definition("state", state={"$tuple": refs}),
                  "arrays/0.npy": _npy(np.ones(MiB // 4, np.float32))})
    r = _in_child(f"pm.persistence.load_state({str(path)!r})")
    assert r["error"] is not None and "referenced twice" in r["error"]
    assert r["grew"] < 64 * MiB, r


def test_many_weight_names_on_one_entry_are_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "weights.pm"
    table = {f"layer{i}": {"weight": {"$array": "arrays/0.npy"}} for i in range(1000)}
    _craft(path, {"definition.json": _definition("weights", weights=table),
                  "arrays/0.npy": _npy(np.ones(MiB // 4, np.float32))})
    r = _in_child(f"pm.Linear(2, 2).loadWeights({str(path)!r}, matchAll=False)")
    assert r["error"] is not None and "referenced twice" in r["error"]
    assert r["grew"] < 64 * MiB, r


def test_each_array_entry_is_read_once(saved_model):
    path, _ = saved_model
    reads = []
    original = archive.Archive.array

    def counting(self, name, out=None):
        reads.append(name)
        return original(self, name, out)

    archive.Archive.array = counting
    try:
        pm.load(path)
    finally:
        archive.Archive.array = original
    assert reads and len(reads) == len(set(reads))


# -- item 3: slow structure -------------------------------------------------------------
def test_ten_thousand_children_load_in_under_a_second(tmp_path):
    path = tmp_path / "wide.pm"
    seq = pm.Sequential()
    # CPU time, not wall time: the bound is about the work done, whatever else runs.
    start = time.process_time()
    for _ in range(10_000):
        seq.add(pm.ReLU())
    assert time.process_time() - start < 1.0  # each add walked the tree: 36 s
    seq.save(path)
    r = _in_child(f"""
import time
start = time.process_time()
m = pm.load({str(path)!r})
assert len(m.modules) == 10_000
raise SystemError(time.process_time() - start)
""", timeout=30)
    assert r["error"].startswith("SystemError"), r
    assert float(r["error"].split(": ")[1]) < 1.0, r  # 43 s when each add walked the tree


def test_add_still_refuses_a_module_already_in_the_tree():
    a, b = pm.Linear(2, 2), pm.Linear(2, 2)
    outer, inner = pm.Sequential(), pm.Sequential()
    outer.add(inner)
    inner.add(a)  # after inner joined outer: outer's kept set must learn of it
    with pytest.raises(ValueError, match="already in this tree"):
        outer.add(a)
    with pytest.raises(ValueError, match="already in this tree"):
        outer.add(pm.Sequential().add(pm.Concat(1).add(a)))
    with pytest.raises(ValueError, match="already in this tree"):
        inner.add(outer)
    # built bottom-up: the inner container's set is reused, and still refuses
    deep = pm.Sequential().add(pm.Sequential().add(b))
    top = pm.Sequential().add(deep)
    with pytest.raises(ValueError, match="already in this tree"):
        top.add(b)
    with pytest.raises(ValueError, match="already in this tree"):
        deep.modules[0].add(top)
    # a clone holds its own modules: the original's kept set is not the clone's
    clone = top.cloneModule()
    with pytest.raises(ValueError, match="already in this tree"):
        clone.add(clone.modules[0].modules[0])
    clone.add(b)  # b is not in the clone
    c = pm.Linear(2, 2)
    clone.modules[0].modules[0].add(c)  # into the clone's inner container, after its add
    with pytest.raises(ValueError, match="already in this tree"):
        clone.add(c)
    top.add(c)  # the original tree does not hold it
    # a module may still be in two separate trees, and both learn what it gains
    shared, d = pm.Sequential(), pm.Linear(2, 2)
    left, right = pm.Sequential().add(shared), pm.Sequential().add(shared)
    shared.add(d)
    for tree in (left, right):
        with pytest.raises(ValueError, match="already in this tree"):
            tree.add(d)


def test_nested_containers_built_either_way_load_fast(tmp_path):
    path = tmp_path / "nested.pm"
    seq = pm.Sequential()
    for _ in range(2000):
        inner = pm.Sequential()
        seq.add(inner)
        inner.add(pm.ReLU()).add(pm.Sequential().add(pm.Tanh()))  # top-down
    start = time.process_time()
    seq.save(path)
    m = pm.load(path)  # bottom-up
    assert time.process_time() - start < 5.0
    assert len(list(m.modules_preorder())) == 1 + 2000 * 4


def test_a_definition_of_millions_of_values_is_refused_quickly(tmp_path):
    path = tmp_path / "lists.pm"
    n = 3_000_000  # 9 MB on disk; 19M of them took 44 s and 3.4 GB
    # n + 1 lists, the root list, the definition, its 4 keys and 3 other values
    _craft(path, {"definition.json": b'{"format":"pymodules","formatVersion":1,'
                  b'"kind":"module","root":[' + b"[]," * n + b"[]]}"})
    r = _in_child(f"pm.load({str(path)!r})", timeout=30)
    assert r["error"] is not None and "FileFormatError" in r["error"]
    assert f"up to {n + 10} values, more than the limit of " \
        f"{archive.MAX_JSON_ELEMENTS}" in r["error"]
    assert r["grew"] < 96 * MiB, r


def test_a_deep_definition_is_refused_with_the_numbers(tmp_path):
    path = tmp_path / "deep.pm"
    depth = 5000
    _craft(path, {"definition.json": b'{"format":"pymodules","root":' + b"[" * depth
                  + b"]" * depth + b"}"})
    with pytest.raises(pm.FileFormatError,
                       match=f"too deep \\({depth + 1} levels, more than the limit of "
                             f"{archive.MAX_JSON_DEPTH}\\)"):
        pm.load(path)


def test_an_oversized_definition_is_refused_with_the_numbers(tmp_path, monkeypatch):
    path = tmp_path / "big.pm"
    pm.Sequential().add(pm.Linear(2, 2)).save(path)
    monkeypatch.setattr(archive, "MAX_JSON", 100)
    with pytest.raises(pm.FileFormatError,
                       match=r"definition.json is \d+ bytes, more than the limit of 100"):
        pm.load(path)


def test_brackets_in_names_are_not_nesting(tmp_path):
    path = tmp_path / "names.pm"
    lin = pm.Linear(2, 2).setName("[" * 2000)
    pm.Sequential().add(lin).save(path)
    assert pm.load(path).modules[0].getName() == "[" * 2000


# -- a normal model still round-trips ---------------------------------------------------
@pytest.fixture
def saved_model(tmp_path):
    model = (pm.Sequential().add(pm.Linear(4, 8)).add(pm.BatchNormalization(8))
             .add(pm.ReLU()).add(pm.Concat(1).add(pm.Linear(8, 3)).add(pm.Linear(8, 2))))
    path = tmp_path / "normal.pm"
    model.save(path)
    return path, model


def test_a_normal_model_round_trips(saved_model, tmp_path):
    path, model = saved_model
    loaded = pm.load(path)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    model.evaluate()
    loaded.evaluate()
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    for a, b in zip(loaded.parameters()[0], model.parameters()[0], strict=True):
        np.testing.assert_array_equal(a, b)
    weights = tmp_path / "w.pm"
    model.saveWeights(weights)
    fresh = pm.load(path)
    fresh.loadWeights(weights).evaluate()
    np.testing.assert_array_equal(fresh.forward(x), model.forward(x))
    save_state(tmp_path / "s.pm", {"a": np.ones(3), "b": [np.zeros(2), 1]})
    state = load_state(tmp_path / "s.pm")
    np.testing.assert_array_equal(state["a"], np.ones(3))
