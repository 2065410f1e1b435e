import importlib
import logging
import os
import re

import numpy as np
import pytest

import pymodules as pm
from pymodules.random import Stream


def _data(rng, n=50, k=6, classes=3):
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def _model(dtype=np.float32):
    return pm.Sequential().add(pm.Linear(6, 5, dtype=dtype)).add(pm.Linear(5, 3, dtype=dtype))


def _hand_loop(model, x, y, method, batch, iterations, seed):
    """The reference: forward/backward/optimize written out, with the same shuffle."""
    crit = pm.CrossEntropyCriterion()
    w, g = model.getParameters()
    pm.setSeed(seed)
    shuffle = Stream().generator  # the Optimizer's: the first stream made after setSeed
    done = 0
    while done < iterations:
        order = shuffle.permutation(len(x))
        for start in range(0, len(x), batch):
            if done == iterations:
                break
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]

            def feval(_w, xb=xb, yb=yb):
                g.fill(0)
                out = model.forward(xb)
                loss = crit.forward(out, yb)
                model.backward(xb, crit.backward(out, yb))
                return loss, g

            method.optimize(feval, w)
            done += 1
    return w


@pytest.mark.parametrize("make", [lambda: pm.SGD(0.1, momentum=0.9), lambda: pm.Adam(0.01)])
def test_same_weights_as_a_hand_written_loop(make, rng):
    x, y = _data(rng)
    a = _model()
    b = a.cloneModule()
    pm.setSeed(7)
    pm.Optimizer(a, (x, y), pm.CrossEntropyCriterion(), make(), pm.MaxIteration(11),
                 16).optimize()
    ref = _hand_loop(b, x, y, make(), 16, 11, 7)
    np.testing.assert_array_equal(a.getParameters()[0], ref)
    # The first layer skipped the data's gradient during training only.
    assert a.modules[0].propagateBack


def test_continues_where_it_stopped(rng):
    x, y = _data(rng)
    a = _model()
    b = a.cloneModule()
    pm.setSeed(3)
    opt = pm.Optimizer(a, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1, momentum=0.9),
                       pm.MaxIteration(3), 16)
    opt.optimize()
    assert opt.state["iteration"] == 3
    opt.setEndWhen(pm.MaxIteration(6))
    opt.optimize()
    assert opt.state["iteration"] == 6 and opt.optimMethod.state["neval"] == 6
    ref = _hand_loop(b, x, y, pm.SGD(0.1, momentum=0.9), 16, 6, 3)
    np.testing.assert_array_equal(a.getParameters()[0], ref)


def test_epochs_keep_the_last_partial_batch(rng):
    x, y = _data(rng, n=50)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.01),
                       pm.MaxEpoch(2), 16)
    opt.optimize()
    assert opt.state["epoch"] == 2 and opt.state["iteration"] == 8  # 4 batches an epoch


def test_triggers():
    s = {"iteration": 6, "epoch": 2, "epochEnd": True, "loss": 0.5, "score": 0.9}
    assert pm.MaxEpoch(2)(s) and not pm.MaxEpoch(3)(s)
    assert pm.MaxIteration(6)(s) and not pm.MaxIteration(7)(s)
    assert pm.EveryEpoch()(s) and not pm.EveryEpoch()(dict(s, epochEnd=False))
    assert pm.SeveralIteration(3)(s) and not pm.SeveralIteration(4)(s)
    assert pm.MinLoss(0.6)(s) and not pm.MinLoss(0.4)(s)
    assert pm.MaxScore(0.8)(s) and not pm.MaxScore(0.95)(s)
    assert not pm.MaxScore(0.1)(dict(s, score=None))
    assert pm.TriggerAnd(pm.MaxEpoch(1), pm.MinLoss(1))(s)
    assert not pm.TriggerAnd(pm.MaxEpoch(1), pm.MinLoss(0.1))(s)
    assert pm.TriggerOr(pm.MaxEpoch(9), pm.MinLoss(1))(s)


def test_min_loss_ends_training(rng):
    x, y = _data(rng)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.TriggerOr(pm.MinLoss(10.0), pm.MaxEpoch(5)), 16)
    opt.optimize()
    assert opt.state["iteration"] == 1


def test_validation_and_summaries(rng, caplog):
    x, y = _data(rng, n=64)
    ts, vs = pm.TrainSummary(), pm.ValidationSummary()
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(3), 16)
    opt.setValidation(pm.EveryEpoch(), (x, y), [pm.Top1Accuracy(),
                                                pm.Loss(pm.CrossEntropyCriterion())])
    opt.setTrainSummary(ts).setValidationSummary(vs).setLogInterval(2).setProgressBar(False)
    with caplog.at_level(logging.INFO, logger="pymodules.optim"):
        opt.optimize()
    loss = ts.readScalar("Loss")
    assert loss.shape == (12, 3) and loss[:, 0].tolist() == list(range(1, 13))
    assert ts.readScalar("LearningRate")[0, 1] == pytest.approx(0.1)
    acc = vs.readScalar("Top1Accuracy")
    assert acc[:, 0].tolist() == [4, 8, 12] and ((0 <= acc[:, 1]) & (acc[:, 1] <= 1)).all()
    assert vs.readScalar("Loss").shape == (3, 3)
    assert opt.state["score"] == acc[-1, 1]
    lines = [r.getMessage() for r in caplog.records]
    # BigDL's lines: the header, then what was trained and how fast, then the loss
    assert any(re.fullmatch(r"\[Epoch 1 32/64\]\[Iteration 2\]\[Wall Clock [0-9.]+s\] Trained 32 "
                            r"records in [0-9.e-]+ seconds\. Throughput is [0-9.]+ "
                            r"records/second\. Loss is [0-9.]+\. Current learning rate is 0\.1\.",
                            m)
               for m in lines)
    assert any("Top1Accuracy is Accuracy(correct" in m for m in lines)


def test_summary_writes_event_files(tmp_path, rng):
    pytest.importorskip("tensorboard")
    x, y = _data(rng)
    ts = pm.TrainSummary(str(tmp_path), "run")
    pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1), pm.MaxIteration(2),
                 16).setTrainSummary(ts).optimize()
    ts.close()
    (name,) = os.listdir(tmp_path / "run" / "train")
    assert name.startswith("events.out.tfevents.")
    assert pm.TrainSummary(tmp_path, "run").readScalar("Loss")[:, 0].tolist() == [1, 2]


def test_gradient_clipping(rng):
    x, y = _data(rng)
    m = _model()
    w0 = m.getParameters()[0].copy()
    opt = pm.Optimizer(m, (x, y), pm.CrossEntropyCriterion(), pm.SGD(1.0), pm.MaxIteration(1),
                       50)
    opt.setGradientClippingByl2Norm(1e-3)
    pm.setSeed(0)
    opt.optimize()
    assert np.linalg.norm(m.getParameters()[0] - w0) == pytest.approx(1e-3, rel=1e-4)
    m2 = _model()
    w0 = m2.getParameters()[0].copy()
    opt = pm.Optimizer(m2, (x, y), pm.CrossEntropyCriterion(), pm.SGD(1.0), pm.MaxIteration(1),
                       50).setConstantGradientClipping(-1e-4, 1e-4)
    opt.optimize()
    # float32 weights near 0.3 round the 1e-4 step to about 1e-3 relative
    assert np.abs(m2.getParameters()[0] - w0).max() == pytest.approx(1e-4, rel=1e-3)


def test_nan_loss_stops_with_a_clear_error(rng):
    x, y = _data(rng)
    x[3, 0] = np.nan
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(1), 50)
    with pytest.raises(FloatingPointError, match=r"loss is nan at iteration 1 \(epoch 1\)"):
        opt.optimize()


def test_nan_loss_stops_before_the_update(rng):
    x, y = _data(rng)
    x[7, 2] = np.nan
    m = _model()
    w0 = m.getParameters()[0].copy()
    opt = pm.Optimizer(m, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1), pm.MaxEpoch(1), 50)
    with pytest.raises(FloatingPointError, match=r"loss is nan at iteration 1 \(epoch 1\); "
                       r"training stopped before its update\. Check the data"):
        opt.optimize()
    assert np.array_equal(m.getParameters()[0], w0)  # the weights of the last iteration
    assert opt.state["iteration"] == 0


def _infinite_gradient_setup(rng):
    """A finite loss whose gradient is not finite: Sqrt of exactly 0 (d/dx sqrt at 0)."""
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    m = pm.Sequential(pm.Linear(4, 3, initWeight=np.zeros((3, 4)), initBias=np.zeros(3)),
                      pm.Sqrt())
    return m, (x, y)


def test_gradient_that_is_not_finite_stops_with_the_iteration(rng):
    m, data = _infinite_gradient_setup(rng)
    opt = pm.Optimizer(m, data, pm.MSECriterion(), pm.SGD(0.1), pm.MaxIteration(3), 8)
    # without clipping by norm: its update makes the weights non-finite, the next loss says so
    with pytest.raises(FloatingPointError, match=r"loss is nan at iteration 2 .*The weights are "
                       r"not finite: the update of iteration 1 \(or an earlier one\) made"):
        opt.optimize()
    m, data = _infinite_gradient_setup(rng)
    w0 = m.getParameters()[0].copy()
    opt = pm.Optimizer(m, data, pm.MSECriterion(), pm.SGD(0.1), pm.MaxIteration(3), 8)
    opt.setGradientClippingByl2Norm(1.0)  # the norm is computed anyway: checked at once
    with pytest.raises(FloatingPointError, match=r"the gradient is not finite \(its L2 norm is "
                       r"(nan|inf)\) at iteration 1 \(epoch 1\); training stopped before"):
        opt.optimize()
    assert np.array_equal(m.getParameters()[0], w0)


def test_bad_training_data_names_the_value(rng):
    x, y = _data(rng)
    crit = pm.CrossEntropyCriterion()
    with pytest.raises(ValueError, match=r"labels has shape \(49,\), expected 50 labels"):
        pm.Optimizer(_model(), (x, y[:49]), crit, pm.SGD(), pm.MaxEpoch(1), 8)
    with pytest.raises(ValueError, match="empty"):
        pm.Optimizer(_model(), (x[:0], y[:0]), crit, pm.SGD(), pm.MaxEpoch(1), 8)
    bad = y.copy()
    bad[7] = 3
    opt = pm.Optimizer(_model(), (x, bad), crit, pm.SGD(), pm.MaxEpoch(1), 64)
    with pytest.raises(ValueError, match=r"target 3 \(row \d+\) is out of range \[0, 3\)"):
        opt.optimize()
    with pytest.raises(ValueError, match="batchSize must be a positive int, got 0"):
        pm.Optimizer(_model(), (x, y), crit, pm.SGD(), pm.MaxEpoch(1), 0)
    with pytest.raises(TypeError, match="endTrigger must be a Trigger"):
        pm.Optimizer(_model(), (x, y), crit, pm.SGD(), 3, 8)


def test_checkpoint_needs_persistence(rng, tmp_path):
    x, y = _data(rng)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(), pm.MaxEpoch(1))
    if hasattr(pm.Module, "save"):
        opt.setCheckpoint(str(tmp_path), pm.EveryEpoch()).optimize()
        assert (tmp_path / "optimMethod.2").exists() and (tmp_path / "optimizer.2").exists()
    else:
        with pytest.raises(NotImplementedError, match="Module.save"):
            opt.setCheckpoint(str(tmp_path), pm.EveryEpoch())


def test_trains_from_an_iterable_dataset(rng):
    x, y = _data(rng, n=40)

    def records():
        return ((x[i], y[i]) for i in range(len(x)))

    ds = pm.DataSet.iterable(records)
    opt = pm.Optimizer(_model(), ds, pm.CrossEntropyCriterion(), pm.SGD(0.1), pm.MaxEpoch(2), 16)
    opt.optimize()
    assert opt.state["iteration"] == 6 and opt.state["epoch"] == 2


# -- what training shows -------------------------------------------------------------------
def _run_script(code):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)


_TRAIN = """
import numpy as np, pymodules as pm
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 6)).astype(np.float32); y = rng.integers(0, 3, 64)
model = pm.Sequential().add(pm.Linear(6, 3))
opt = pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1), pm.MaxEpoch(2), 16)
opt.setValidation(pm.EveryEpoch(), (x, y), [pm.Top1Accuracy()]).setLogInterval(4)
"""


def test_training_logs_by_default_without_any_logging_setup():
    err = _run_script(_TRAIN + "opt.optimize()").stderr.splitlines()
    trained = [m for m in err if "Trained 64 records" in m]
    assert len(trained) == 2 and all("INFO pymodules.optim: [Epoch " in m for m in trained)
    assert "[Iteration 4]" in trained[0] and "[Iteration 8]" in trained[1]
    assert sum("Top1Accuracy is Accuracy(correct: " in m for m in err) == 2


def test_a_configured_logging_gets_no_second_handler():
    code = ("import logging; logging.basicConfig(format='ROOT %(message)s', "
            "level=logging.INFO)\n" + _TRAIN + "opt.optimize()\n"
            "print(logging.getLogger('pymodules').handlers)")
    out = _run_script(code)
    lines = out.stderr.splitlines()
    assert sum("Trained 64 records" in m for m in lines) == 2
    assert all(m.startswith("ROOT ") for m in lines)  # once each, through the user's handler
    assert out.stdout.strip() == "[]"


class _Terminal:
    """A stream that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = []

    def write(self, s):
        self.text.append(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True

    def screen(self):
        """The lines as a terminal shows them: a carriage return goes back to the start of
        the line, whose characters the next ones overwrite."""
        lines, line, col = [], [], 0
        for ch in re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", "".join(self.text)):
            if ch == "\n":
                lines.append("".join(line).rstrip())
                line, col = [], 0
            elif ch == "\r":
                col = 0
            else:
                if col < len(line):
                    line[col] = ch
                else:
                    line.append(ch)
                col += 1
        return lines + ["".join(line).rstrip()]


def test_the_progress_bar_and_the_log_lines_never_share_a_line(rng, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    import sys

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    handler = logging.StreamHandler(term)  # a user's console handler
    top = logging.getLogger("pymodules")
    top.addHandler(handler)
    x, y = _data(rng, n=64)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(3), 8)
    opt.setValidation(pm.EveryEpoch(), (x, y), [pm.Top1Accuracy()]).setLogInterval(3)
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    try:
        with caplog_level(logging.INFO):
            bar = opt._bar()
            assert bar is not None  # a terminal gets a bar
            bar.close()
            opt.optimize()
    finally:
        top.removeHandler(handler)
    assert handler.stream is term
    shown = term.screen()
    logged = [line for line in shown if "Trained" in line or "Top1Accuracy" in line]
    assert len(logged) == 8 + 3
    for line in logged:
        assert line.startswith("[Epoch ") and "rec/s" not in line and "%|" not in line
    assert any("epoch 1:" in part and "%|" in part for part in term.text)  # the bar was drawn


class caplog_level:  # noqa: N801 (a context like caplog.at_level, for one logger)
    def __init__(self, level):
        self.level = level

    def __enter__(self):
        self.logger = logging.getLogger("pymodules")
        self.saved = self.logger.level
        self.logger.setLevel(self.level)

    def __exit__(self, *exc):
        self.logger.setLevel(self.saved)


def test_the_bar_advances_in_a_terminal(rng, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    import sys

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    x, y = _data(rng, n=64)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(1), 16).setLogInterval(0)
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)
    ticks = iter(float(i) for i in range(10**6))  # every update is a second later
    monkeypatch.setattr(tqdm.std, "time", lambda: next(ticks))
    opt.optimize()
    drawn = re.findall(r"(\d+)/64", "".join(term.text))
    assert [int(d) for d in drawn if int(d) > 0][:4] == [16, 32, 48, 64]


def test_optimize_after_the_end_says_so(rng, caplog):
    x, y = _data(rng)
    model = _model()
    opt = pm.Optimizer(model, (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxIteration(2), 16).setProgressBar(False)
    opt.optimize()
    w = model.getParameters()[0].copy()
    with caplog.at_level(logging.INFO, logger="pymodules.optim"):
        assert opt.optimize() is model
    np.testing.assert_array_equal(model.getParameters()[0], w)
    [record] = [r for r in caplog.records if r.name == "pymodules.optim"]
    assert record.levelno == logging.WARNING
    assert "end trigger" in record.getMessage() and "already fired (iteration 2" in \
        record.getMessage() and "setEndWhen" in record.getMessage()


def test_create_takes_bigdls_python_order(rng):
    x, y = _data(rng)
    a, b = _model(), None
    b = a.cloneModule()
    crit = pm.CrossEntropyCriterion()
    pm.setSeed(5)
    opt = pm.Optimizer.create(a, (x, y), crit, pm.MaxIteration(3), 16, pm.SGD(0.1))
    assert isinstance(opt, pm.Optimizer) and opt.batchSize == 16
    opt.optimize()
    pm.setSeed(5)
    pm.Optimizer(b, (x, y), crit, pm.SGD(0.1), pm.MaxIteration(3), 16).optimize()
    np.testing.assert_array_equal(a.getParameters()[0], b.getParameters()[0])
    default = pm.Optimizer.create(_model(), (x, y), crit)
    assert type(default.optimMethod) is pm.SGD and default.batchSize == 32
    assert isinstance(default.endWhen, pm.MaxEpoch) and default.endWhen.maxEpoch == 1


# -- habits from PyTorch ---------------------------------------------------------------------
@pytest.mark.parametrize("make, says", [
    (lambda: pm.SGD(lr=0.1), r"SGD: no argument 'lr' \(PyTorch's name\).*SGD\(learningRate=0.1\)"),
    (lambda: pm.SGD(0.1, weight_decay=1e-4), r"SGD\(weightDecay=0.0001\)"),
    (lambda: pm.Adam(betas=(0.8, 0.99)), r"Adam\(beta1=0.8, beta2=0.99\)"),
    (lambda: pm.Adam(eps=1e-6), r"Adam\(epsilon=1e-06\)"),
    (lambda: pm.AdamW(lr=0.1, weight_decay=0.1), r"AdamW\(learningRate=0.1\)"),
    (lambda: pm.Adagrad(lr_decay=0.1), r"Adagrad\(learningRateDecay=0.1\)"),
    (lambda: pm.RMSprop(alpha=0.9), r"RMSprop\(decayRate=0.9\)"),
    (lambda: pm.Adadelta(rho=0.95), r"Adadelta\(decayRate=0.95\)"),
    (lambda: pm.LBFGS(max_iter=5), r"LBFGS\(maxIter=5\)"),
])
def test_pytorch_spellings_name_ours(make, says):
    with pytest.raises(TypeError, match=says):
        make()


def test_a_pytorch_spelling_without_a_counterpart_is_python_s_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        pm.SGD(betas=(0.9, 0.99))


@pytest.mark.parametrize("scheme, module, extra", [("s3", "s3fs", "s3"),
                                                    ("hdfs", "pyarrow", "hdfs")])
def test_a_checkpoint_url_without_its_filesystem_names_the_extra(scheme, module, extra, rng,
                                                                monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # not installed
    x, y = _data(rng)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion())
    with pytest.raises(ImportError, match=re.escape(f'pip install "pymodules[{extra}]"')):
        opt.setCheckpoint(f"{scheme}://bucket/run", pm.EveryEpoch())
    assert opt._checkpoint is None


def test_a_local_or_memory_checkpoint_needs_no_extra(rng, tmp_path):
    x, y = _data(rng)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion())
    opt.setCheckpoint(str(tmp_path), pm.EveryEpoch()).setCheckpoint("memory://run", pm.EveryEpoch())
    with pytest.raises(ValueError, match="unknown filesystem nosuch://"):
        opt.setCheckpoint("nosuch://run", pm.EveryEpoch())


def test_the_bar_is_drawn_on_a_terminal_that_reports_no_size():
    """A pty whose size was never set (0 x 0, as under `script` or some IDE consoles)."""
    pytest.importorskip("tqdm")
    import os
    import pty
    import subprocess
    import sys

    # epochs of 20000 records until half a second has passed: the bar refreshes every 0.1 s
    code = _TRAIN.replace("(64, 6)", "(20000, 6)").replace("64)", "20000)") + (
        "import time\n"
        "start = time.perf_counter()\n"
        "while time.perf_counter() - start < 0.5:\n"
        "    opt.setEndWhen(pm.MaxEpoch(opt.state['epoch'] + 1)).optimize()\n")
    master, slave = pty.openpty()
    assert os.get_terminal_size(slave) == (0, 0)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=slave,
                            stdout=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0
    drawn = [int(p) for p in re.findall(rb"epoch \d+: +(\d+)%\|", out)]
    assert drawn and max(drawn) > 0  # drawn, and advancing


def test_a_checkpoint_url_on_a_registered_filesystem_needs_no_extra(rng, monkeypatch, tmp_path):
    import sys

    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.local import LocalFileSystem

    class Mine(LocalFileSystem):
        protocol = ("hdfs",)

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # not installed
    monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, "hdfs", Mine)
    x, y = _data(rng)
    opt = pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion())
    opt.setCheckpoint("hdfs://namenode:8020/run", pm.EveryEpoch())
    assert opt._checkpoint[0] == "hdfs://namenode:8020/run"
    assert fsspec.get_filesystem_class("hdfs") is Mine
