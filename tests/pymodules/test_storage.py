"""Save and load through fsspec URLs: memory://, hdfs:// (an fsspec filesystem over a temp
folder: no HDFS server runs here) and s3:// (a moto server on 127.0.0.1)."""

import importlib
import os
import threading

import numpy as np
import pytest

import pymodules as pm
from pymodules import persistence

fsspec = pytest.importorskip("fsspec")
from readme_blocks import temp_hdfs_class  # noqa: E402


def _model():
    return pm.Sequential().add(pm.Linear(6, 4).setName("fc1")).add(
        pm.Linear(4, 2, dtype=np.float64).setName("fc2")).evaluate()


def _same(a, b):
    assert [(m.getName(), m.train, str(m)) for m in a.modules_preorder()] == \
        [(m.getName(), m.train, str(m)) for m in b.modules_preorder()]
    for x, y in zip(a.parameters()[0], b.parameters()[0], strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def _round_trip(url, storage_options=None):
    m = _model()
    kw = {} if storage_options is None else {"storage_options": storage_options}
    assert m.save(url, **kw) is m
    _same(pm.load(url, **kw), m)
    with pytest.raises(FileExistsError):
        _model().save(url, **kw)
    _same(pm.load(url, **kw), m)
    other = _model()
    other.save(url, overWrite=True, **kw)
    _same(pm.load(url, **kw), other)
    weights = url + ".weights"
    other.saveWeights(weights, **kw)
    m.loadWeights(weights, **kw)
    for x, y in zip(m.parameters()[0], other.parameters()[0], strict=True):
        assert np.array_equal(x, y)
    persistence.save_state(url + ".state", {"t": 3, "v": np.arange(4.0)}, **kw)
    state = persistence.load_state(url + ".state", **kw)
    assert state["t"] == 3 and np.array_equal(state["v"], np.arange(4.0))


def test_memory_url():
    fs = fsspec.filesystem("memory")
    try:
        _round_trip("memory://pymodules-test/model.pm")
        assert sorted(p.rsplit("/", 1)[1] for p in fs.ls("/pymodules-test", detail=False)) \
            == ["model.pm", "model.pm.state", "model.pm.weights"]
    finally:
        fs.rm("/pymodules-test", recursive=True)


def test_a_failed_upload_leaves_nothing():
    fs = fsspec.filesystem("memory")
    m = _model()
    m.modules[0]._ctor = ((6, 4), {"wRegularizer": object()})  # cannot be encoded
    with pytest.raises(TypeError):
        m.save("memory://pymodules-fail/model.pm")
    assert not fs.exists("/pymodules-fail/model.pm")


def test_local_paths_refuse_storage_options(tmp_path):
    with pytest.raises(TypeError, match="URLs only"):
        _model().save(tmp_path / "m.pm", storage_options={"anon": True})


def test_is_url_and_join():
    from pathlib import Path

    from pymodules.persistence.storage import is_url, join

    assert is_url("s3://bucket/key") and is_url("memory://x") and is_url("hdfs://nn:8020/a")
    assert not is_url("/tmp/models/m.pm") and not is_url("models/m.pm")
    assert not is_url(Path("/tmp/x"))  # a Path is always local
    assert join("s3://bucket/run/", "model.3") == "s3://bucket/run/model.3"
    assert join("hdfs://nn:8020/run", "model.3") == "hdfs://nn:8020/run/model.3"
    assert join("run", "model.3") == os.path.join("run", "model.3")


# -- hdfs:// ----------------------------------------------------------------------------------
@pytest.fixture
def hdfs_root(tmp_path):
    """hdfs://host:port/path served by a local filesystem rooted at a temp folder."""
    root = str(tmp_path / "hdfs")
    os.makedirs(root)
    TempHDFS = temp_hdfs_class(root)

    # registration is process-wide: the previous entry is put back below
    registry = importlib.import_module("fsspec.registry")._registry
    saved = registry.get("hdfs")
    fsspec.register_implementation("hdfs", TempHDFS, clobber=True)
    try:
        yield root
    finally:
        if saved is None:
            registry.pop("hdfs", None)
        else:
            registry["hdfs"] = saved
        TempHDFS.clear_instance_cache()


def test_hdfs_url(hdfs_root):
    os.makedirs(os.path.join(hdfs_root, "models"))
    _round_trip("hdfs://namenode:8020/models/model.pm")
    # written aside and moved into place: no temporary file stays
    assert sorted(os.listdir(os.path.join(hdfs_root, "models"))) == \
        ["model.pm", "model.pm.state", "model.pm.weights"]


# -- s3:// on a moto server -------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield url
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def bucket(s3_endpoint):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    name = f"pymodules-{os.urandom(4).hex()}"
    fs.mkdir(name)
    yield name, fs
    fs.rm(name, recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_round_trip(bucket):
    name, _ = bucket
    _round_trip(f"s3://{name}/models/model.pm")


def test_s3_storage_options(bucket, s3_endpoint):
    name, fs = bucket
    _round_trip(f"s3://{name}/opts/model.pm",
                storage_options={"client_kwargs": {"endpoint_url": s3_endpoint},
                                 "key": "testing", "secret": "testing"})
    assert fs.exists(f"{name}/opts/model.pm")


def test_s3_large_model_in_parts(bucket, monkeypatch):
    """A model larger than one upload block goes up as a multipart upload."""
    name, fs = bucket
    m = pm.Linear(1500, 1000)  # 6 MB, more than the 5 MiB minimum part
    m.save(f"s3://{name}/big.pm")
    assert fs.size(f"{name}/big.pm") > 6_000_000
    r = pm.load(f"s3://{name}/big.pm")
    assert np.array_equal(r.weight, m.weight) and np.array_equal(r.bias, m.bias)


def test_s3_racing_saves_leave_one_object(bucket):
    name, _ = bucket
    url = f"s3://{name}/race.pm"
    models = [pm.Linear(50, 40).setName(f"m{i}") for i in range(4)]
    outcomes = [None] * 4
    barrier = threading.Barrier(4)

    def save(i):
        barrier.wait()
        try:
            models[i].save(url)
            outcomes[i] = "saved"
        except FileExistsError:
            outcomes[i] = "exists"

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = pm.load(url)
    i = int(r.getName()[1:])
    assert np.array_equal(r.weight, models[i].weight)
    assert outcomes.count("saved") == 1 and outcomes[i] == "saved"


def test_url_without_fsspec_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fsspec(name, *args, **kwargs):
        if name == "fsspec" or name.startswith("fsspec."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    with pytest.raises(ImportError, match=r"pymodules\[s3\]"):
        pm.load("s3://bucket/model.pm")

