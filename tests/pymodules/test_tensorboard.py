"""TrainSummary and ValidationSummary: TensorBoard event files read back by TensorBoard's own
reader (EventAccumulator), readScalar from the files and from memory, summary triggers and
parameter histograms, copies that hold no open file, the Optimizer and the Spark optimizer
writing them."""

import copy
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import pymodules as pm
from pymodules.optim import summary as summary_module


@pytest.fixture
def accumulator():
    """EventAccumulator(folder), loaded; the tests that read event files skip without
    tensorboard."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def load(folder):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        return acc

    return load


def _data(n=48, k=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = (x @ rng.standard_normal((k, classes))).argmax(axis=1)
    return x, y


def _model():
    return pm.Sequential(pm.Linear(6, 5).setName("fc1"), pm.Tanh().setName("tanh"),
                         pm.Linear(5, 3).setName("fc2"))


def _train(train, val, epochs=2, batch=16, seed=7):
    """Two epochs of 3 iterations, validating (Top1Accuracy, Loss) at each epoch's end."""
    pm.setSeed(seed)
    x, y = _data()
    model = _model()
    opt = pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(epochs), batch)
    opt.setValidation(pm.EveryEpoch(), (x, y),
                      [pm.Top1Accuracy(), pm.Loss(pm.CrossEntropyCriterion())])
    if train is not None:
        opt.setTrainSummary(train)
    if val is not None:
        opt.setValidationSummary(val)
    opt.setProgressBar(False).setLogInterval(0).optimize()
    return opt, model


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# -- event files --------------------------------------------------------------------------
def test_the_optimizer_writes_event_files_tensorboard_reads(tmp_path, accumulator):
    ts, vs = pm.TrainSummary(tmp_path, "app"), pm.ValidationSummary(tmp_path, "app")
    opt, _ = _train(ts, vs)
    # the same run, in memory, gives the values to expect (float32, as TensorBoard keeps them)
    mts, mvs = pm.TrainSummary(), pm.ValidationSummary()
    _train(mts, mvs)
    assert ts.folder == os.path.join(str(tmp_path), "app", "train")
    train = accumulator(tmp_path / "app" / "train")
    assert set(train.Tags()["scalars"]) == {"Loss", "Throughput", "LearningRate"}
    for tag in ("Loss", "LearningRate"):
        got = _scalars(train, tag)
        want = mts.readScalar(tag)
        assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6] == want[:, 0].tolist()
        np.testing.assert_array_equal([v for _, v in got], want[:, 1].astype(np.float32))
    assert [v for _, v in _scalars(train, "LearningRate")] == [pytest.approx(0.1)] * 6
    assert _scalars(train, "Loss")[-1][1] == np.float32(opt.state["loss"])
    throughput = _scalars(train, "Throughput")
    assert [s for s, _ in throughput] == [1, 2, 3, 4, 5, 6]
    assert all(v > 0 for _, v in throughput)
    assert train.Tags()["histograms"] == []  # no "Parameters" trigger: none
    val = accumulator(tmp_path / "app" / "validation")
    assert set(val.Tags()["scalars"]) == {"Top1Accuracy", "Loss"}
    for tag in ("Top1Accuracy", "Loss"):
        got = _scalars(val, tag)
        want = mvs.readScalar(tag)
        assert [s for s, _ in got] == [3, 6] == want[:, 0].tolist()
        np.testing.assert_array_equal([v for _, v in got], want[:, 1].astype(np.float32))
    assert _scalars(val, "Top1Accuracy")[-1][1] == np.float32(opt.state["score"])
    walls = [e.wall_time for e in train.Scalars("Loss")]
    assert walls == sorted(walls) and abs(walls[-1] - __import__("time").time()) < 600


def test_readScalar_reads_the_files_and_a_new_summary_reads_an_old_run(tmp_path, accumulator):
    ts, vs = pm.TrainSummary(tmp_path, "app"), pm.ValidationSummary(tmp_path, "app")
    _train(ts, vs)
    loss = ts.readScalar("Loss")
    assert loss.shape == (6, 3) and loss.dtype == np.float64
    files = [(e.step, e.value, e.wall_time)
             for e in accumulator(tmp_path / "app" / "train").Scalars("Loss")]
    np.testing.assert_array_equal(loss, np.array(files))
    ts.close()
    vs.close()
    fresh = pm.TrainSummary(str(tmp_path), "app")
    np.testing.assert_array_equal(fresh.readScalar("Loss"), loss)
    np.testing.assert_array_equal(pm.ValidationSummary(tmp_path, "app").readScalar("Loss"),
                                  vs.readScalar("Loss"))
    assert fresh.tags() == ["LearningRate", "Loss", "Throughput"]
    assert fresh.readScalar("Top1Accuracy").shape == (0, 3)
    # a second run on the same folder: both runs, by step (the older first at equal steps)
    _train(fresh, None, epochs=1)
    both = pm.TrainSummary(tmp_path, "app").readScalar("Loss")
    assert both[:, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 5, 6]
    np.testing.assert_array_equal(both[[0, 2, 4], :], loss[:3])
    assert len(os.listdir(tmp_path / "app" / "train")) == 2


def test_parameter_histograms_at_their_trigger(tmp_path, accumulator):
    ts = pm.TrainSummary(tmp_path, "app").setSummaryTrigger("Parameters",
                                                            pm.SeveralIteration(2))
    assert isinstance(ts.getSummaryTrigger("Parameters"), pm.SeveralIteration)
    _, model = _train(ts, None)  # 6 iterations: histograms at 2, 4, 6
    acc = accumulator(tmp_path / "app" / "train")
    names = {f"{layer}/{p}" for layer in ("fc1", "fc2")
             for p in ("weight", "bias", "gradWeight", "gradBias")}
    assert set(acc.Tags()["histograms"]) == names
    fc1 = model.apply("fc1")
    for tag, array in (("fc1/weight", fc1.weight), ("fc1/gradWeight", fc1.gradWeight),
                       ("fc1/bias", fc1.bias)):
        events = acc.Histograms(tag)
        assert [e.step for e in events] == [2, 4, 6]
        last = events[-1].histogram_value  # after the last update: the model's arrays now
        assert last.num == array.size
        assert last.min == array.min() and last.max == array.max()
        assert last.sum == pytest.approx(float(array.astype(np.float64).sum()), rel=1e-12,
                                         abs=1e-12)
        assert sum(last.bucket) == array.size
    rows = ts.readHistogram("fc1/weight")
    assert [r[0] for r in rows] == [2, 4, 6] and rows[-1][4] == fc1.weight.size
    # the weights moved between the records
    assert acc.Histograms("fc1/weight")[0].histogram_value.sum != \
        acc.Histograms("fc1/weight")[-1].histogram_value.sum


def test_summary_triggers(tmp_path, accumulator):
    ts = pm.TrainSummary(tmp_path, "app")
    ts.setSummaryTrigger("Loss", pm.SeveralIteration(2))
    ts.setSummaryTrigger("Throughput", pm.EveryEpoch())
    ts.setSummaryTrigger("LearningRate", None)
    _train(ts, None)
    assert ts.readScalar("Loss")[:, 0].tolist() == [2, 4, 6]
    assert ts.readScalar("Throughput")[:, 0].tolist() == [3, 6]
    assert ts.readScalar("LearningRate").shape == (0, 3)
    assert set(accumulator(tmp_path / "app" / "train").Tags()["scalars"]) == \
        {"Loss", "Throughput"}
    with pytest.raises(ValueError, match="'Accuracy' is not one of LearningRate, Loss"):
        ts.setSummaryTrigger("Accuracy", pm.EveryEpoch())
    with pytest.raises(TypeError, match="must be a Trigger"):
        ts.setSummaryTrigger("Loss", 3)


def test_in_memory_without_logDir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ts, vs = pm.TrainSummary(), pm.ValidationSummary()
    assert ts.folder is None and ts.logDir is None
    opt, model = _train(ts.setSummaryTrigger("Parameters", pm.EveryEpoch()), vs)
    assert os.listdir(tmp_path) == []  # nothing written
    loss = ts.readScalar("Loss")
    assert loss[:, 0].tolist() == [1, 2, 3, 4, 5, 6] and loss[-1, 1] == opt.state["loss"]
    assert vs.readScalar("Top1Accuracy")[-1, 1] == opt.state["score"]  # float64, exact
    assert ts.tags() == sorted(["Loss", "LearningRate", "Throughput", "fc1/weight",
                                "fc1/bias", "fc1/gradWeight", "fc1/gradBias", "fc2/weight",
                                "fc2/bias", "fc2/gradWeight", "fc2/gradBias"])
    step, _, lo, hi, num, total, squares, limits, counts = ts.readHistogram("fc2/weight")[-1]
    w = model.apply("fc2").weight.astype(np.float64)
    assert step == 6 and (lo, hi, num) == (w.min(), w.max(), w.size)
    assert total == pytest.approx(w.sum()) and squares == pytest.approx((w * w).sum())
    assert limits[-1] == hi and sum(counts) == w.size
    s = pm.TrainSummary().addScalar("x", 2.5, 3).addScalar("x", 1.5, 1)
    assert s.readScalar("x")[:, :2].tolist() == [[1, 1.5], [3, 2.5]]  # by step


def test_histogram_of_non_finite_and_constant_arrays():
    s = pm.TrainSummary()
    s.addHistogram("h", np.array([np.nan, np.inf, 2.0, 2.0]), 1)
    s.addHistogram("h", np.array([np.nan]), 2)  # nothing finite: nothing recorded
    (row,) = s.readHistogram("h")
    assert row[0] == 1 and row[2:5] == (2.0, 2.0, 2) and row[7:] == ([2.0], [2.0])


def test_close_flushes_and_a_later_record_opens_a_new_file(tmp_path, accumulator):
    s = pm.ValidationSummary(tmp_path, "app")
    s.addScalar("Top1Accuracy", 0.5, 10)
    s.close()
    assert _scalars(accumulator(tmp_path / "app" / "validation"), "Top1Accuracy") == \
        [(10, 0.5)]
    s.addScalar("Top1Accuracy", 0.75, 20).close()
    assert s.readScalar("Top1Accuracy")[:, :2].tolist() == [[10, 0.5], [20, 0.75]]
    assert len(os.listdir(tmp_path / "app" / "validation")) == 2


def test_copies_hold_no_open_file(tmp_path, accumulator):
    s = pm.TrainSummary(tmp_path, "app").addScalar("Loss", 1.0, 1).flush()
    assert s._writer is not None
    for other in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert other._writer is None and other.folder == s.folder
        assert other.readScalar("Loss")[:, :2].tolist() == [[1, 1.0]]
    clone = pickle.loads(pickle.dumps(s))
    clone.addScalar("Loss", 2.0, 2).close()  # its own file in the same folder
    assert s.readScalar("Loss")[:, :2].tolist() == [[1, 1.0], [2, 2.0]]
    assert sorted(_scalars(accumulator(tmp_path / "app" / "train"), "Loss")) == \
        [(1, 1.0), (2, 2.0)]


def test_import_pymodules_does_not_import_tensorboard():
    code = ("import sys, pymodules; pymodules.TrainSummary().addScalar('a', 1, 1); "
            "print('tensorboard' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_without_tensorboard_a_logDir_says_what_to_install(tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n.split(".")[0] == "tensorboard"] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(summary_module, "_TB", {})
    with pytest.raises(ImportError, match=r"TrainSummary: .*pymodules\[tensorboard\]"):
        pm.TrainSummary(tmp_path, "app")
    pm.TrainSummary().addScalar("Loss", 1.0, 1)  # in memory: no need of it
    with pytest.raises(TypeError, match="appName must be a non-empty str"):
        pm.ValidationSummary(tmp_path, "")


def test_the_spark_optimizer_writes_event_files(tmp_path, accumulator):
    import spark_support as S

    sc = S.session("local[2,4]").sparkContext
    x, y = S.data(n=32)
    ts, vs = pm.TrainSummary(tmp_path, "spark"), pm.ValidationSummary(tmp_path, "spark")
    ts.setSummaryTrigger("Parameters", pm.EveryEpoch())
    model = S.mlp()
    opt = pm.Optimizer(model, sc.parallelize(S.samples(x, y), 2), pm.CrossEntropyCriterion(),
                       pm.SGD(0.1), pm.MaxEpoch(2), 8)
    opt.setValidation(pm.EveryEpoch(), (x, y), [pm.Top1Accuracy()])
    opt.setTrainSummary(ts).setValidationSummary(vs).setProgressBar(False).optimize()
    train = accumulator(tmp_path / "spark" / "train")
    assert [e.step for e in train.Scalars("Loss")] == list(range(1, 9))
    assert train.Scalars("Loss")[-1].value == np.float32(opt.state["loss"])
    name, table = next(iter(model.getParametersTable().items()))
    tag, weight = f"{name}/weight", table["weight"]
    assert tag in train.Tags()["histograms"]
    assert [e.step for e in train.Histograms(tag)] == [4, 8]
    assert train.Histograms(tag)[-1].histogram_value.num == weight.size
    val = accumulator(tmp_path / "spark" / "validation")
    assert [(e.step, e.value) for e in val.Scalars("Top1Accuracy")][-1] == \
        (8, np.float32(opt.state["score"]))
