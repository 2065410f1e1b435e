import logging

import numpy as np
import pytest

import pymodules as pm
from pymodules.random import generator


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
    done = 0
    while done < iterations:
        order = generator().permutation(len(x))
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
    assert any("[Iteration 2] loss" in m and "records/s" in m and "learning rate" in m
               for m in lines)
    assert any("Top1Accuracy is Accuracy(correct" in m for m in lines)


def test_summary_writes_csv(tmp_path, rng):
    x, y = _data(rng)
    ts = pm.TrainSummary(str(tmp_path), "run")
    pm.Optimizer(_model(), (x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1), pm.MaxIteration(2),
                 16).setTrainSummary(ts).optimize()
    ts.close()
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("Loss,1,")


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
