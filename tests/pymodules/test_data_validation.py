import numpy as np
import pytest

import pymodules as pm


def test_array_dataset_shuffles_per_epoch_and_keeps_the_partial_batch(rng):
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    y = np.arange(10)
    ds = pm.DataSet.array(x, y)
    pm.setSeed(5)
    first = [(b.getInput().ravel().tolist(), b.getTarget().tolist(), b.size())
             for b in ds.batches(4, shuffle=True)]
    assert [s for *_, s in first] == [4, 4, 2]
    seen = sorted(v for xs, _, _ in first for v in xs)
    assert seen == list(range(10))
    assert all(xs == ys for xs, ys, _ in first)  # features stay with their labels
    second = [b.getInput().ravel().tolist() for b in ds.batches(4, shuffle=True)]
    assert second != [xs for xs, _, _ in first]
    pm.setSeed(5)
    again = [b.getInput().ravel().tolist() for b in ds.batches(4, shuffle=True)]
    assert again == [xs for xs, _, _ in first]
    plain = [b.getInput().ravel().tolist() for b in ds.batches(4)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_features_convert_to_the_requested_dtype():
    ds = pm.DataSet.array(np.arange(6).reshape(3, 2), np.zeros(3))
    b = next(ds.batches(2, dtype=np.float64))
    assert b.getInput().dtype == np.float64
    assert next(ds.batches(2)).getInput().dtype == np.float32


def test_bad_datasets_name_the_value():
    with pytest.raises(ValueError, match=r"features has shape \(0, 3\).*empty"):
        pm.DataSet.array(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match=r"labels has shape \(4,\), expected 3 labels"):
        pm.DataSet.array(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="labels hold nan"):
        pm.DataSet.array(np.zeros((2, 2)), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="empty"):
        list(pm.DataSet.iterable(lambda: iter([])).batches(4))
    with pytest.raises(ValueError, match="batchSize must be a positive int, got -1"):
        list(pm.DataSet.array(np.zeros((2, 2))).batches(-1))
    with pytest.raises(TypeError, match="factory must be callable"):
        pm.DataSet.iterable([1, 2])


def test_iterable_dataset_batches_samples_and_pairs():
    def factory():
        for i in range(5):
            yield pm.Sample(np.full(3, i), i % 2) if i % 2 else (np.full(3, i), i % 2)

    batches = list(pm.DataSet.iterable(factory).batches(2))
    assert [b.size() for b in batches] == [2, 2, 1]
    assert batches[0].getInput().dtype == np.float32
    assert batches[1].getTarget().tolist() == [0, 1]
    # a second epoch calls the factory again
    assert [b.size() for b in pm.DataSet.iterable(factory).batches(5)] == [5]


def test_minibatch_and_sample():
    mb = pm.MiniBatch(np.zeros((3, 2)), np.ones(3))
    assert mb.size() == 3 and mb.getTarget().tolist() == [1, 1, 1]
    s = pm.Sample(np.zeros(2), 1)
    assert s.label.tolist() == 1 and "Sample" in repr(s)


def _classifier():
    pm.setSeed(0)
    return pm.Sequential().add(pm.Linear(4, 3))


@pytest.mark.parametrize("form", ["array", "pair", "samples", "dataset"])
def test_predict_on_every_local_form(form, rng):
    m = _classifier()
    x = rng.standard_normal((300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    data = {"array": x, "pair": (x, y),
            "samples": [pm.Sample(a, b) for a, b in zip(x, y, strict=True)],
            "dataset": pm.DataSet.array(x, y)}[form]
    ref = x @ m.modules[0].weight.T + m.modules[0].bias
    m.training()
    out = m.predict(data, batchSize=128)
    assert not m.isTraining()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m.predictClass(data), ref.argmax(1))
    assert m.predictClass(data).dtype == np.int64


def test_a_batch_of_one_is_not_squeezed(rng):
    m = _classifier()
    x = rng.standard_normal((1, 4)).astype(np.float32)
    assert m.predict(x).shape == (1, 3)
    assert m.predictClass(x).shape == (1,)


def test_evaluate_returns_results_and_methods(rng):
    m = _classifier()
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    out = x @ m.modules[0].weight.T + m.modules[0].bias
    res = m.evaluate((x, y), [pm.Top1Accuracy(), pm.Top5Accuracy(),
                              pm.Loss(pm.CrossEntropyCriterion())], 16)
    (top1, meth1), (top5, _), (loss, _) = res
    assert isinstance(meth1, pm.Top1Accuracy)
    assert top1.result() == (pytest.approx((out.argmax(1) == y).mean()), 50)
    assert top5.result() == (1.0, 50)
    lsm = out - np.log(np.exp(out).sum(1, keepdims=True))
    assert loss.result()[0] == pytest.approx(-lsm[np.arange(50), y].mean(), rel=1e-5)
    assert "Accuracy(correct:" in str(top1) and "count: 50" in str(top1)


def test_results_add():
    a = pm.Top1Accuracy()(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    b = pm.Top1Accuracy()(np.array([[0.9, 0.1]]), np.array([0]))
    assert (a + b).result() == (pytest.approx(2 / 3), 3)
    assert sum([a, b]).result() == (a + b).result()
    m = pm.MAE()(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    assert (m + m).result() == (1.5, 2)


def test_top5_and_tree_accuracy():
    out = np.tile(np.arange(7.0), (2, 1))
    assert pm.Top5Accuracy()(out, np.array([2, 1])).result() == (0.5, 2)
    tree = np.zeros((2, 3, 4))
    tree[0, 0, 2] = tree[1, 0, 1] = 1
    assert pm.TreeNNAccuracy()(tree, np.array([[2, 0, 0], [3, 0, 0]])).result() == (0.5, 2)


def test_validation_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"target 5 \(row 1\) is out of range \[0, 3\)"):
        pm.Top1Accuracy()(np.zeros((2, 3)), np.array([0, 5]))
    with pytest.raises(ValueError, match="target has 3 labels, expected 2"):
        pm.Top1Accuracy()(np.zeros((2, 3)), np.array([0, 1, 2]))
    m = _classifier()
    with pytest.raises(ValueError, match="a features array has no labels"):
        m.evaluate(np.zeros((2, 4), np.float32), [pm.Top1Accuracy()])


# -- padding: one rule for every criterion and validation method of class targets ----------
def _padded(rng, n=12, k=4):
    out = rng.standard_normal((n, k))
    y = rng.integers(0, k, n)
    y[[1, 4, 5]] = -1
    return out, y


def test_accuracy_skips_padded_rows_as_the_criteria_do(rng):
    out, y = _padded(rng)
    keep = y != -1
    top1 = pm.Top1Accuracy()(out, y)
    assert top1 == pm.Top1Accuracy()(out[keep], y[keep])
    assert top1.count == 9
    top5 = pm.Top5Accuracy()(np.tile(np.arange(7.0), (3, 1)), np.array([2, -1, 1]))
    assert top5.result() == (0.5, 2)
    tree = np.zeros((3, 2, 4))
    tree[0, 0, 2] = tree[2, 0, 1] = 1
    assert pm.TreeNNAccuracy()(tree, np.array([[2, 0], [-1, 0], [3, 0]])).result() == (0.5, 2)
    # one column, 0/1 targets
    assert pm.Top1Accuracy()(np.array([[0.9], [0.2], [0.7]]), np.array([1, -1, 0])) \
        .result() == (0.5, 2)
    # every row padded: nothing counted, as the criteria's loss 0
    assert pm.Top1Accuracy()(out, np.full(len(out), -1)).result() == (0.0, 0)
    assert pm.ClassNLLCriterion().forward(out, np.full(len(out), -1)) == 0.0


def test_the_padding_value_is_a_constructor_argument(rng):
    out, y = _padded(rng)
    y[y == -1] = 3  # padding 3: a label in range that counts for nothing
    keep = y != 3
    for method in (pm.Top1Accuracy(paddingValue=3), pm.Top5Accuracy(paddingValue=3)):
        assert method(out, y) == type(method)()(out[keep], y[keep])
    nll = pm.ClassNLLCriterion(paddingValue=3)
    assert nll.forward(out, y) == pytest.approx(pm.ClassNLLCriterion().forward(out[keep],
                                                                               y[keep]))
    with pytest.raises(TypeError, match="paddingValue must be an integer"):
        pm.Top1Accuracy(paddingValue=0.5)


@pytest.mark.parametrize("make", [
    pm.Top1Accuracy, pm.Top5Accuracy,
    lambda: (lambda o, t: pm.ClassNLLCriterion().forward(o, t)),
    lambda: (lambda o, t: pm.CrossEntropyCriterion().forward(o, t)),
    lambda: (lambda o, t: pm.TimeDistributedCriterion(pm.ClassNLLCriterion())
             .forward(o[:, None, :], t[:, None])),
    lambda: (lambda o, t: pm.Loss()(o, t)),
], ids=["Top1", "Top5", "ClassNLL", "CrossEntropy", "TimeDistributed", "Loss"])
def test_minus_100_is_not_special(make, rng):
    out = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="-100"):
        make()(out, np.array([0, -100, 2]))
    make()(out, np.array([0, -1, 2]))  # the padding value is


def test_loss_counts_the_rows_the_criterion_counts(rng):
    out, y = _padded(rng, n=16)
    y[8:] = -1  # the second batch is all padding
    m = pm.Identity()
    ds = pm.DataSet.array(out.astype(np.float32), y)
    [(loss, _), (top1, _)] = m.evaluate(ds, [pm.Loss(pm.CrossEntropyCriterion()),
                                             pm.Top1Accuracy()], 8)
    keep = y != -1
    assert loss.result() == (pytest.approx(pm.CrossEntropyCriterion().forward(
        out[keep].astype(np.float32), y[keep]), rel=1e-6), 5)
    assert top1.result()[1] == 5
