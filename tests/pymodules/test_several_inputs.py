"""Models with several inputs or targets: Sample, MiniBatch, DataSet.array, the Optimizer,
evaluate, predict and predictClass take lists of arrays (one per input or target)."""

import numpy as np
import pytest

import pymodules as pm


def _graph():
    """Two inputs (4 and 3 features) summed after a Linear each, then 3 classes."""
    a, b = pm.Input(), pm.Input()
    s = pm.CAddTable()(pm.Linear(4, 5)(a), pm.Linear(3, 5)(b))
    return pm.Graph([a, b], pm.Linear(5, 3)(pm.Tanh()(s)))


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    xa = rng.standard_normal((n, 4)).astype(np.float32)
    xb = rng.standard_normal((n, 3)).astype(np.float32)
    y = (xa[:, :3] + xb).argmax(axis=1)  # learnable
    return xa, xb, y


def _forms(xa, xb, y):
    return {"pair": ([xa, xb], y), "dataset": pm.DataSet.array([xa, xb], y),
            "samples": [pm.Sample([xa[i], xb[i]], y[i]) for i in range(len(y))],
            "iterable": pm.DataSet.iterable(
                lambda: (pm.Sample([xa[i], xb[i]], y[i]) for i in range(len(y))), len(y))}


def test_sample_and_minibatch_take_lists():
    xa, xb, y = _data()
    s = pm.Sample([xa[0], xb[0]], y[0])
    assert isinstance(s.features, list) and [f.shape for f in s.features] == [(4,), (3,)]
    assert "(4,) float32" in repr(s) and "(3,) float32" in repr(s)
    s2 = pm.Sample(xa[0], [np.array(1), np.ones(2)])
    assert isinstance(s2.label, list) and s2.label[1].shape == (2,)
    # a list of numbers is still one array
    assert pm.Sample([1.0, 2.0], 0).features.shape == (2,)
    mb = pm.MiniBatch([xa[:5], xb[:5]], y[:5])
    assert mb.size() == 5 and mb.getInput()[1] is not None
    with pytest.raises(ValueError, match=r"the inputs have \[5, 4\] rows"):
        pm.MiniBatch([xa[:5], xb[:4]])


def test_dataset_array_batches_each_input_in_the_same_order():
    xa, xb, y = _data(n=10)
    ds = pm.DataSet.array([xa, xb], [y, y * 2.0])
    assert ds.size() == 10
    seen = []
    for batch in ds.batches(4, shuffle=True):
        a, b = batch.input
        t0, t1 = batch.target
        assert a.shape[1:] == (4,) and b.shape[1:] == (3,) and len(a) == len(b) == len(t0)
        # the rows of every input and target come from the same records
        for i in range(len(a)):
            k = int(np.flatnonzero((xa == a[i]).all(axis=1))[0])
            np.testing.assert_array_equal(b[i], xb[k])
            assert t0[i] == y[k] and t1[i] == 2.0 * y[k]
            seen.append(k)
    assert sorted(seen) == list(range(10))
    with pytest.raises(ValueError, match=r"features\[1\] has shape \(9, 3\), expected 10 rows"):
        pm.DataSet.array([xa, xb[:9]], y)
    with pytest.raises(ValueError, match=r"labels\[1\] has shape \(9,\), expected 10 labels"):
        pm.DataSet.array([xa, xb], [y, y[:9]])


@pytest.mark.parametrize("form", ["pair", "dataset", "samples", "iterable"])
def test_a_two_input_graph_trains_validates_and_predicts(form):
    xa, xb, y = _data()
    data = _forms(xa, xb, y)[form]
    pm.setSeed(3)
    model = _graph()
    [(before, _)] = model.evaluate(data, [pm.Top1Accuracy()])
    opt = pm.Optimizer(model, data, pm.CrossEntropyCriterion(), pm.SGD(0.5, momentum=0.9),
                       pm.MaxEpoch(30), 8).setProgressBar(False)
    vs = pm.ValidationSummary()
    opt.setValidation(pm.EveryEpoch(), data, [pm.Top1Accuracy()]).setValidationSummary(vs)
    opt.optimize()
    assert vs.readScalar("Top1Accuracy").shape == (30, 3)
    [(after, _)] = model.evaluate(data, [pm.Top1Accuracy()])
    assert after.result()[0] > max(0.8, before.result()[0])
    out = model.predict([xa, xb])
    assert out.shape == (40, 3)
    np.testing.assert_array_equal(model.predictClass([xa, xb]), out.argmax(axis=1))
    if form != "pair":
        # batches of 7 and of 40 may run different float32 Linear kernels (the packed
        # forward takes 8 to 128 rows): the same sums in another order
        np.testing.assert_allclose(model.predict(data, batchSize=7), out, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(out).max()))


def test_the_same_weights_as_a_hand_written_loop():
    from pymodules.random import Stream

    xa, xb, y = _data(n=24)
    a = _graph()
    b = a.cloneModule()
    crit = pm.CrossEntropyCriterion()
    pm.setSeed(11)
    pm.Optimizer(a, ([xa, xb], y), crit, pm.SGD(0.1), pm.MaxEpoch(1), 8).optimize()
    pm.setSeed(11)
    order = Stream().generator.permutation(24)  # the Optimizer's: the first stream made
    w, g = b.getParameters()
    method = pm.SGD(0.1)
    for start in range(0, 24, 8):
        idx = order[start:start + 8]
        inp, t = [xa[idx], xb[idx]], y[idx]

        def feval(_w, inp=inp, t=t):
            g.fill(0)
            out = b.forward(inp)
            loss = crit.forward(out, t)
            b.backward(inp, crit.backward(out, t))
            return loss, g

        method.optimize(feval, w)
    np.testing.assert_array_equal(a.getParameters()[0], w)


def test_several_outputs_and_targets_with_a_parallel_criterion():
    xa, xb, y = _data()
    a, b = pm.Input(), pm.Input()
    ha, hb = pm.Linear(4, 3)(a), pm.Linear(3, 2)(b)
    model = pm.Graph([a, b], [ha, hb])
    target2 = (xb[:, 0] > 0).astype(np.int64)
    crit = pm.ParallelCriterion().add(pm.CrossEntropyCriterion()).add(
        pm.CrossEntropyCriterion(), 0.5)
    labels = [y, target2]
    [(before, _)] = model.evaluate(([xa, xb], labels), [pm.Loss(crit)])
    pm.Optimizer(model, ([xa, xb], labels), crit, pm.SGD(0.5), pm.MaxEpoch(20),
                 10).setProgressBar(False).optimize()
    # scalar labels as 0-d arrays: a list of arrays is several, a list of numbers one
    samples = [pm.Sample([xa[i], xb[i]], [np.array(y[i]), np.array(target2[i])])
               for i in range(len(y))]
    [(after, _)] = model.evaluate(samples, [pm.Loss(crit)])
    assert after.result()[1] == 40 and after.result()[0] < 0.7 * before.result()[0]
    out = model.predict([xa, xb])
    assert [o.shape for o in out] == [(40, 3), (40, 2)]
