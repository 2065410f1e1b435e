"""Hostile files: what a file declares is checked against what it holds before anything of
that size is allocated (issue 13, item 2); load returns a module or refuses, and refuses
state that would fail later (item 4); a save removes what killed saves of its path left
behind, and nothing else (item 5)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pymodules as pm
from pymodules import persistence
from pymodules.nn.init import Xavier
from pymodules.optim.methods import SGD, OptimMethod
from pymodules.persistence import archive, codec

FileFormatError = persistence.FileFormatError


def _write(path, definition, arrays):
    """A file holding ``definition`` and ``arrays``, with valid checksums."""
    with open(path, "wb") as f:
        archive.write(f, True, definition, arrays)
    return path


def _crafted(path, module, edit):
    """``module`` saved to ``path`` after ``edit(definition, arrays)`` changed what is
    written (the checksums stay valid: only what the file says is hostile)."""
    enc = codec.Encoder()
    root = enc.encode(module)
    definition = {"kind": "module", "root": root, "modules": enc.modules, "nodes": enc.nodes}
    arrays = list(enc.arrays)
    edit(definition, arrays)
    return _write(path, definition, arrays)


def _entry(definition, section, attr, index=0):
    return int(definition["modules"][index][section][attr]["$array"][7:-4])


# -- item 2: declared sizes ---------------------------------------------------------------
_LIMIT = 1 << 30  # address space of the loading process: far below what the files declare

_LOADER = textwrap.dedent("""
    import json, resource, sys
    import numpy  # noqa: F401 - its import may reserve address space; count it in
    import pymodules as pm
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    try:
        pm.load(sys.argv[1])
        out = {{"error": None}}
    except Exception as err:
        out = {{"error": type(err).__name__, "message": str(err)}}
    # peak RSS of this process since exec (ru_maxrss would count the parent's at fork)
    with open("/proc/self/status") as f:
        out["maxrss_kb"] = int(next(x for x in f if x.startswith("VmHWM")).split()[1])
    print(json.dumps(out))
""")


def _load_bounded(path):
    """Load ``path`` in a process that may hold at most ``_LIMIT`` bytes of address space."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("the peak RSS is read from /proc/self/status (Linux)")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _LOADER.format(limit=_LIMIT), str(path)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _declare(index, dtype=None, **sizes):
    def edit(definition, arrays):
        d = definition["modules"][index]
        d["kwargs"].update(sizes)
        if dtype is not None:
            d["kwargs"]["dtype"] = {"$dtype": dtype}
            d["dtype"] = dtype
    return edit


@pytest.mark.parametrize("module, edit", [
    (lambda: pm.BatchNormalization(2), _declare(0, nOutput=2_000_000_000)),
    (lambda: pm.BatchNormalization(2, affine=False), _declare(0, nOutput=2_000_000_000)),
    (lambda: pm.Linear(3, 2, dtype=np.float64), _declare(0, inputSize=50000, outputSize=50000)),
    (lambda: pm.Sequential().add(pm.Linear(3, 2)),
     _declare(1, inputSize=50000, outputSize=50000)),
    (lambda: pm.SpatialConvolution(2, 2, 3, 3),
     _declare(0, nOutputPlane=50000, kernelW=300, kernelH=300)),
    (lambda: pm.LookupTable(5, 3), _declare(0, nIndex=1_000_000_000)),
    (lambda: pm.PReLU(3), _declare(0, nOutputPlane=2_000_000_000)),
])
def test_declared_sizes_are_matched_before_allocating(tmp_path, module, edit):
    path = _crafted(tmp_path / "m.pm", module(), edit)
    assert path.stat().st_size < 4096
    out = _load_bounded(path)
    assert out["error"] == "FileFormatError", out
    assert "from the arguments" in out["message"] and "Memory" not in out["message"], out
    assert out["maxrss_kb"] < 400 << 10, out  # KiB: the file's few bytes, not gigabytes


def test_an_array_header_larger_than_its_entry_is_refused_before_allocating(tmp_path):
    """A header may not declare more than its entry holds: 50000 x 50000 float64 (20 GB)
    in a few hundred bytes is refused before the constructor sizes anything by it."""
    def edit(definition, arrays):
        _declare(0, "float64", inputSize=50000, outputSize=50000)(definition, arrays)
        arrays[_entry(definition, "params", "weight")] = np.lib.stride_tricks.as_strided(
            np.zeros(1), (50000, 50000), (0, 0))[:1, :1]  # a one-element array
    path = _crafted(tmp_path / "m.pm", pm.Linear(3, 2, dtype=np.float64), edit)
    out = _load_bounded(path)
    assert out["error"] == "FileFormatError", out
    assert "Memory" not in out["message"], out


def test_the_arrays_a_file_holds_still_load(tmp_path):
    m = pm.Sequential().add(pm.Linear(3, 4)).add(pm.BatchNormalization(4)).add(pm.PReLU(4))
    m.save(tmp_path / "m.pm")
    loaded = pm.load(tmp_path / "m.pm")
    for a, b in zip(m.parameters()[0] + m.getExtraParameter(),
                    loaded.parameters()[0] + loaded.getExtraParameter(), strict=True):
        assert np.array_equal(a, b)


# -- item 4: what load returns and accepts --------------------------------------------------
@pytest.mark.parametrize("root", [5, None, "text", [1, 2], {"$array": "arrays/0.npy"},
                                  {"$tuple": [1]}])
def test_load_returns_a_module_or_refuses(tmp_path, root):
    path = _write(tmp_path / "m.pm", {"kind": "module", "root": root, "modules": [],
                                      "nodes": []}, [np.zeros(3, np.float32)])
    with pytest.raises(FileFormatError, match="root"):
        pm.load(path)


def _set(index, key, value):
    def edit(definition, arrays):
        definition["modules"][index][key] = value
    return edit


@pytest.mark.parametrize("edit", [
    _set(0, "scaleW", float("nan")), _set(0, "scaleB", float("inf")),
    _set(0, "scaleW", "1.0"), _set(0, "scaleB", None), _set(0, "scaleW", True),
    _set(0, "frozen", [float("nan"), 1.0]),
])
def test_scales_must_be_finite(tmp_path, edit):
    with pytest.raises(FileFormatError):
        pm.load(_crafted(tmp_path / "m.pm", pm.Linear(2, 2), edit))


@pytest.mark.parametrize("p", [2.0, 1.0, -0.1, float("nan"), "0.5", None, [0.5]])
def test_dropout_p_outside_its_range_is_refused(tmp_path, p):
    def edit(definition, arrays):
        definition["modules"][0]["state"]["p"] = p
    with pytest.raises(FileFormatError):
        pm.load(_crafted(tmp_path / "m.pm", pm.Dropout(0.3), edit))


def test_dropout_p_in_range_loads(tmp_path):
    d = pm.Dropout(0.3).setP(0.7)
    assert pm.load(d.save(tmp_path / "m.pm") and tmp_path / "m.pm").getP() == 0.7


def _regularizer(state=None, cls="L1L2Regularizer"):
    def edit(definition, arrays):
        reg = definition["modules"][0]["kwargs"]["wRegularizer"]
        reg["$object"] = cls
        if state is not None:
            reg["state"] = state
    return edit


@pytest.mark.parametrize("edit", [
    _regularizer({"l1": -1.0, "l2": 0.0}), _regularizer({"l1": "x", "l2": 0.0}),
    _regularizer({"l1": 0.1}), _regularizer({"l1": float("nan"), "l2": 0.0}),
    _regularizer({"l1": 0.1, "l2": 0.2, "accRegularization": 5}),
    _regularizer({"l1": True, "l2": 0.0}), _regularizer({}, cls="Xavier"),
])
def test_malformed_regularizers_are_refused(tmp_path, edit):
    m = pm.Linear(2, 2, wRegularizer=pm.L1L2Regularizer(0.1, 0.2))
    with pytest.raises(FileFormatError):
        pm.load(_crafted(tmp_path / "m.pm", m, edit))


def test_a_regularizer_that_is_not_one_is_refused_in_code():
    with pytest.raises(TypeError, match="wRegularizer"):
        pm.Linear(2, 2, wRegularizer=Xavier())


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float16, np.uint8])
def test_weights_of_other_dtypes_are_refused(tmp_path, dtype):
    def edit(definition, arrays):
        i = _entry(definition, "params", "weight")
        arrays[i] = arrays[i].astype(dtype)
    with pytest.raises(FileFormatError, match="float32 or float64"):
        pm.load(_crafted(tmp_path / "m.pm", pm.Linear(2, 2), edit))


def test_weights_that_overflow_the_module_dtype_are_refused(tmp_path):
    def edit(definition, arrays):
        arrays[_entry(definition, "params", "weight")] = np.full((2, 2), 1e300)
    with pytest.raises(FileFormatError, match="overflow"):
        pm.load(_crafted(tmp_path / "m.pm", pm.Linear(2, 2), edit))
    # values within float32's range still load from float64 arrays
    path = _crafted(tmp_path / "n.pm", pm.Linear(2, 2), lambda d, a: a.__setitem__(
        _entry(d, "params", "weight"), np.full((2, 2), 1e30)))
    assert np.all(pm.load(path).weight == np.float32(1e30))


def _method_file(path, edit):
    enc = codec.Encoder(modules=False)
    sgd = SGD(0.1, momentum=0.9)
    sgd.state["dfdx"] = np.ones(3)
    state = enc.encode({"optimMethod": sgd})
    fields = dict(state["$dict"][0][1]["state"])
    arrays = list(enc.arrays) + [np.arange(3)]  # arrays/1.npy: an integer array
    edit(fields)
    state["$dict"][0][1]["state"] = fields
    return _write(path, {"kind": "state", "state": state}, arrays)


def _field(name, value=None, delete=False):
    def edit(fields):
        if delete:
            del fields[name]
        else:
            fields[name] = value
    return edit


def _in_state(name, value):
    def edit(fields):
        fields["state"]["$dict"] = [p for p in fields["state"]["$dict"] if p[0] != name] + \
            [[name, value]]
    return edit


@pytest.mark.parametrize("edit", [
    _field("learningRateSchedule", {"$object": "Xavier", "state": {}}),
    _field("momentum", delete=True), _field("learningRate", "fast"),
    _field("nesterov", 1), _field("state", [1, 2]), _field("state", delete=True),
    _field("optimize", 5),
    _in_state("neval", "x"), _in_state("neval", -1), _in_state("neval", 1.5),
    _in_state("dfdx", {"$array": "arrays/1.npy"}), _in_state("dfdx", "buffer"),
    _in_state("epoch", {"$object": "Xavier", "state": {}}),
])
def test_malformed_optim_method_state_is_refused_at_load(tmp_path, edit):
    with pytest.raises(FileFormatError):
        OptimMethod.load(_method_file(tmp_path / "sgd.pm", edit))


def test_a_well_formed_optim_method_loads(tmp_path):
    sgd = OptimMethod.load(_method_file(tmp_path / "sgd.pm", lambda fields: None))
    assert isinstance(sgd, SGD) and sgd.momentum == 0.9 and sgd.state["dfdx"].shape == (3,)


@pytest.mark.parametrize("state", [{"neval": "x"}, {"neval": -2}, {"dfdx": np.arange(3)},
                                   {"dfdx": "x"}, {"epoch": Xavier()}, [("neval", 1)]])
def test_load_state_refuses_mistyped_entries(state):
    with pytest.raises(TypeError):
        SGD().loadState(state)


# -- item 5: leftovers of killed saves ------------------------------------------------------
_SLOW_SAVER = textwrap.dedent("""
    import sys, time
    import pymodules as pm
    from pymodules.persistence import archive

    def slow(f, seekable, definition, arrays):
        f.write(b"x" * 4096)
        print("writing", flush=True)
        time.sleep(120)

    archive.write = slow
    pm.Linear(2, 2).save(sys.argv[1], overWrite=True)
""")


def _start_slow_save(path):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def _parts(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".part"))


def test_a_save_removes_the_leftovers_of_killed_saves_of_its_path(tmp_path):
    path = tmp_path / "m.pm"
    killed = _start_slow_save(path)
    leftover = _parts(tmp_path)
    assert len(leftover) == 1 and leftover[0].startswith(".m.pm.")
    _kill(killed)
    assert _parts(tmp_path) == leftover  # SIGKILL leaves it behind
    running = _start_slow_save(path)  # a save of the same path that is still writing
    try:
        mine = set(_parts(tmp_path)) - set(leftover)
        assert len(mine) == 1
        others = [".m.pm.0123456789ab.part.keep", "m.pm.0123456789ab.part",
                  ".m.pm.xyz.part", ".other.pm.0123456789ab.part", ".m.pm.x.0123456789ab.part",
                  ".m.pm.0123456789abc.part", "m.pm.keep"]
        for name in others:
            (tmp_path / name).write_bytes(b"not ours")
        past = time.time() - 3600
        for name in others:
            os.utime(tmp_path / name, (past, past))
        time.sleep(0.05)
        pm.Linear(3, 3).save(path, overWrite=True)
        names = set(os.listdir(tmp_path))
        assert leftover[0] not in names  # the killed save's
        assert mine <= names  # the running save's stays
        assert set(others) <= names  # and everything else
        assert pm.load(path).weight.shape == (3, 3)
    finally:
        _kill(running)
    pm.Linear(4, 4).save(path, overWrite=True)  # now that one is a leftover too
    assert not mine & set(os.listdir(tmp_path))
    assert set(others) <= set(os.listdir(tmp_path))


def test_a_save_that_fails_leaves_nothing_and_a_new_path_saves(tmp_path):
    pm.Linear(2, 2).save(tmp_path / "a.pm")
    with pytest.raises(FileExistsError):
        pm.Linear(2, 2).save(tmp_path / "a.pm")
    assert _parts(tmp_path) == []


# -- loadWeights refuses what a copy would change silently --------------------------------
def _weights_file(path, weight):
    definition = {"kind": "weights",
                  "weights": {"fc": {"weight": {"$array": "arrays/0.npy"},
                                     "bias": {"$array": "arrays/1.npy"}}}}
    return _write(path, definition, [weight, np.zeros(2)])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.float16])
def test_load_weights_refuses_other_dtypes(tmp_path, dtype):
    m = pm.Linear(3, 2).setName("fc")
    before = m.weight.copy()
    path = _weights_file(tmp_path / "w.pm", np.ones((2, 3), dtype))
    with pytest.raises(ValueError, match=r"^fc\(3 -> 2\): weight in .* has dtype .*, expected "
                                         r"float32 or float64"):
        m.loadWeights(path)
    assert np.array_equal(m.weight, before)


def test_load_weights_refuses_values_that_overflow_and_changes_nothing(tmp_path):
    m = pm.Linear(3, 2).setName("fc")
    before = m.weight.copy(), m.bias.copy()
    big = np.ones((2, 3))
    big[1, 2] = 1e300
    with pytest.raises(ValueError, match=r"^fc\(3 -> 2\): values of weight .* overflow its "
                                         r"dtype float32"):
        m.loadWeights(_weights_file(tmp_path / "w.pm", big))
    assert np.array_equal(m.weight, before[0]) and np.array_equal(m.bias, before[1])
    # inf and NaN are values, not overflow; float64 values within range load rounded
    ok = np.array([[np.inf, -np.inf, np.nan], [1e30, -1e-30, 0.1]])
    m.loadWeights(_weights_file(tmp_path / "ok.pm", ok))
    assert np.array_equal(m.weight, ok.astype(np.float32), equal_nan=True)
    src = pm.Linear(3, 2).setName("fc")
    src.weight = np.ones((2, 3), np.int64)
    with pytest.raises(ValueError, match="has dtype int64"):
        m.loadModelWeights(src)
