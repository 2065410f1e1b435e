"""pymodules.spark on a local[2,4] master: two threads, and a failed task is retried (the 4:
local mode does not retry otherwise)."""

import pickle
import sys

import numpy as np
import pytest
import spark_support as S

import pymodules as pm


@pytest.fixture
def sc():
    return S.session("local[2,4]").sparkContext


def _rdd(sc, x, y, partitions=2):
    return sc.parallelize(S.samples(x, y), partitions)


# -- evaluate, predict, predictClass ------------------------------------------------------
def test_import_pymodules_does_not_import_pyspark():
    import subprocess

    code = "import sys, pymodules; print('pyspark' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("batch", [None, 7, 64])
def test_evaluate_matches_local_evaluate(sc, batch):
    x, y = S.data(n=101)
    model = S.mlp()
    methods = [pm.Top1Accuracy(), pm.Loss(pm.CrossEntropyCriterion()), pm.Top5Accuracy()]
    got = model.evaluate(_rdd(sc, x, y, 3), methods, batch)
    want = model.evaluate((x, y), methods)
    assert not model.isTraining()
    for (r, m), (r0, m0) in zip(got, want, strict=True):
        assert m is not None and type(m) is type(m0)
        assert r.result()[1] == r0.result()[1] == 101
        np.testing.assert_allclose(r.result()[0], r0.result()[0], rtol=1e-12)
    assert got[0][0] == want[0][0]  # the same correct count


def test_predict_keeps_the_order_of_the_samples(sc):
    x, y = S.data(n=50)
    model = S.mlp()
    rdd = _rdd(sc, x, y, 3)
    out = model.predict(rdd)
    assert type(out).__module__.startswith("pyspark")
    pairs = rdd.zip(out).collect()  # zips: same partitions, same counts
    want = model.predict(x)
    assert len(pairs) == 50
    for i, (s, o) in enumerate(pairs):
        np.testing.assert_array_equal(s.features, x[i])
        np.testing.assert_allclose(o, want[i], rtol=1e-12)
    classes = model.predictClass(rdd, batchSize=4).collect()
    assert classes == model.predictClass(x).tolist()
    assert all(type(c) is int for c in classes)


def test_evaluate_and_predict_in_float32(sc):
    x, y = S.data(n=20, dtype=np.float32)
    model = S.mlp(np.float32)
    out = np.stack(model.predict(_rdd(sc, x, y)).collect())
    assert out.dtype == np.float32
    # the partitions' batches and the whole array may run different float32 Linear kernels
    # (the packed forward takes 8 to 128 rows): the same sums in another order
    whole = model.predict(x)
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5 * float(np.abs(whole).max()))


def test_evaluate_errors(sc):
    x, y = S.data(n=10)
    model = S.mlp()
    with pytest.raises(ValueError, match="RDD is empty"):
        model.evaluate(sc.parallelize([], 2), [pm.Top1Accuracy()])
    with pytest.raises(ValueError, match="batchSize must be a positive int"):
        model.evaluate(_rdd(sc, x, y), [pm.Top1Accuracy()], 0)


# -- training -------------------------------------------------------------------------------
def _local_reference(model, x, y, seed, method, epochs, partitions, per):
    """The local Optimizer fed the batches in the documented distributed order."""
    from pymodules import spark

    parts = np.array_split(np.arange(len(x)), partitions)
    n = len(parts[0])
    epoch = [0]

    def batches():
        e = epoch[0]
        epoch[0] += 1
        orders = [part[spark.order(seed, p, e, n)] for p, part in enumerate(parts)]
        for j in range(n // per):
            idx = np.concatenate([o[j * per:(j + 1) * per] for o in orders])
            yield pm.MiniBatch(x[idx], y[idx])

    summary = pm.TrainSummary()
    opt = pm.Optimizer(model, pm.DataSet.iterable(batches), pm.CrossEntropyCriterion(),
                       method, pm.MaxEpoch(epochs), per * partitions)
    opt.setTrainSummary(summary).optimize()
    return summary.readScalar("Loss")[:, 1]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_training_matches_the_local_optimizer(sc, dtype, tol):
    x, y = S.data(n=48, dtype=dtype)
    a = S.mlp(dtype)
    b = S.mlp(dtype)
    b.setWeightsBias([w.copy() for w in a.getWeightsBias()])
    summary = pm.TrainSummary()
    opt = pm.Optimizer(a, _rdd(sc, x, y, 2), pm.CrossEntropyCriterion(),
                       pm.SGD(0.5, momentum=0.9), pm.MaxEpoch(2), 8)
    opt.setTrainSummary(summary).optimize()
    assert opt.state["iteration"] == 12 and opt.state["epoch"] == 2  # 48 / 8 per epoch
    losses = _local_reference(b, x, y, opt._source.seed, pm.SGD(0.5, momentum=0.9), 2, 2, 4)
    np.testing.assert_allclose(summary.readScalar("Loss")[:, 1], losses, rtol=tol)
    np.testing.assert_allclose(a.getParameters()[0], b.getParameters()[0], rtol=tol,
                               atol=tol)
    assert losses[-1] < losses[0]


def test_a_recurrent_model_trains_on_spark_as_locally(sc):
    """An LSTM over (batch, time, features) sequences: the distributed run ends with the
    weights of the local Optimizer fed the same batches."""
    x, y = S.data(n=48, k=6)
    seqs = x.reshape(48, 3, 2)  # three steps of two features

    def model():
        pm.setSeed(5)
        return (pm.Sequential().add(pm.Recurrent().add(pm.LSTM(2, 4))).add(pm.Select(1, -1))
                .add(pm.Linear(4, 3)).double())

    a, b = model(), model()
    np.testing.assert_array_equal(a.getParameters()[0], b.getParameters()[0])
    summary = pm.TrainSummary()
    opt = pm.Optimizer(a, _rdd(sc, seqs, y, 2), pm.CrossEntropyCriterion(), pm.SGD(0.5),
                       pm.MaxEpoch(2), 8)
    opt.setTrainSummary(summary).optimize()
    losses = _local_reference(b, seqs, y, opt._source.seed, pm.SGD(0.5), 2, 2, 4)
    np.testing.assert_allclose(summary.readScalar("Loss")[:, 1], losses, rtol=1e-10)
    np.testing.assert_allclose(a.getParameters()[0], b.getParameters()[0], rtol=1e-10,
                               atol=1e-12)
    assert losses[-1] < losses[0]


def test_running_statistics_come_back_to_the_driver(sc):
    # BatchNormalization on the data: its running mean depends on the batches only, and the
    # mean over partitions of equal shares is the mean of the whole batch.
    x, y = S.data(n=48)
    x = x * 3 + 1

    def model():
        return pm.Sequential().add(pm.BatchNormalization(6)).add(pm.Linear(6, 3)).double()

    a, b = model(), model()
    opt = pm.Optimizer(a, _rdd(sc, x, y, 2), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxEpoch(1), 8)
    opt.optimize()
    _local_reference(b, x, y, opt._source.seed, pm.SGD(0.1), 1, 2, 4)
    mean = a.modules[0].runningMean
    assert np.abs(mean).max() > 0.1  # moved from its initial zeros
    np.testing.assert_allclose(mean, b.modules[0].runningMean, rtol=1e-12)


def test_training_is_reproducible_with_set_seed(sc):
    x, y = S.data(n=40)
    rdd = _rdd(sc, x, y, 2).cache()
    results = []
    for _ in range(2):
        pm.setSeed(11)
        model = S.mlp()
        pm.Optimizer(model, rdd, pm.CrossEntropyCriterion(), pm.Adam(0.05),
                     pm.MaxIteration(7), 6).optimize()
        results.append(model.getParameters()[0].copy())
    np.testing.assert_array_equal(*results)


def test_validation_checkpoint_and_summaries_on_spark(sc, tmp_path):
    x, y = S.data(n=48, dtype=np.float32)
    xv, yv = S.data(n=30, seed=1, dtype=np.float32)
    model = S.mlp(np.float32)
    vsum = pm.ValidationSummary()
    folder = f"memory://spark-ckpt-{tmp_path.name}"
    opt = pm.Optimizer(model, _rdd(sc, x, y), pm.CrossEntropyCriterion(),
                       pm.SGD(0.5, momentum=0.9), pm.MaxEpoch(2), 8)
    opt.setValidation(pm.EveryEpoch(), _rdd(sc, xv, yv, 3), [pm.Top1Accuracy()])
    opt.setValidationSummary(vsum).setCheckpoint(folder, pm.SeveralIteration(4))
    opt.optimize()
    acc = vsum.readScalar("Top1Accuracy")
    assert acc[:, 0].tolist() == [6, 12]
    want = model.evaluate((xv, yv), [pm.Top1Accuracy()])[0][0].result()[0]
    assert acc[-1, 1] == want == opt.state["score"]
    saved = pm.load(f"{folder}/model.12")
    np.testing.assert_array_equal(saved.getParameters()[0], model.getParameters()[0])

    # resume at iteration 8 in a new Optimizer: same end as the uninterrupted run
    other = S.mlp(np.float32)
    resumed = pm.Optimizer(other, _rdd(sc, x, y), pm.CrossEntropyCriterion(), pm.SGD(),
                           pm.MaxEpoch(2), 8).loadCheckpoint(folder, 8)
    resumed.optimize()
    assert resumed.state["iteration"] == 12
    np.testing.assert_array_equal(other.getParameters()[0], model.getParameters()[0])


def test_modules_are_never_pickled(sc, monkeypatch):
    x, y = S.data(n=24)
    model = S.mlp()

    def refuse(self):
        raise TypeError(f"{self} must not be pickled")

    monkeypatch.setattr(pm.Module, "__reduce__", refuse)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(model)
    rdd = _rdd(sc, x, y)
    assert model.evaluate(rdd, [pm.Top1Accuracy()])[0][0].result()[1] == 24
    assert len(model.predict(rdd).collect()) == 24
    opt = pm.Optimizer(model, rdd, pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxIteration(3), 4)
    opt.setValidation(pm.SeveralIteration(2), rdd, [pm.Top1Accuracy()])
    opt.optimize()
    assert opt.state["iteration"] == 3
    # the partitions were converted to arrays once, and stay cached for the next call
    converted = opt._source._data
    assert converted.is_cached
    opt.setEndWhen(pm.MaxIteration(5)).optimize()
    assert opt.state["iteration"] == 5 and opt._source._data is converted


# -- failures -----------------------------------------------------------------------------
def test_a_failed_task_is_retried_with_the_same_result(sc, tmp_path):
    x, y = S.data(n=32)
    rdd = _rdd(sc, x, y)
    ends = []
    for crit in (pm.CrossEntropyCriterion(), S.FailOnce(str(tmp_path / "failed"))):
        pm.setSeed(21)
        model = S.mlp()
        pm.Optimizer(model, rdd, crit, pm.SGD(0.3, momentum=0.9), pm.MaxIteration(6),
                     8).optimize()
        ends.append(model.getParameters()[0].copy())
    assert (tmp_path / "failed").exists()  # the failure did happen
    np.testing.assert_array_equal(ends[0], ends[1])


def test_batch_size_must_be_a_multiple_of_the_partitions(sc):
    x, y = S.data(n=30)
    with pytest.raises(ValueError, match="batchSize 8 is not a positive multiple of the 3 "
                                         "partitions"):
        pm.Optimizer(S.mlp(), _rdd(sc, x, y, 3), pm.CrossEntropyCriterion(), pm.SGD(),
                     pm.MaxIteration(2), 8)
    with pytest.raises(ValueError, match="batchSize must be a positive int"):
        pm.Optimizer(S.mlp(), _rdd(sc, x, y, 3), pm.CrossEntropyCriterion(), pm.SGD(),
                     pm.MaxIteration(2), 0)


def test_an_empty_partition_stops_before_training(sc):
    x, y = S.data(n=2)
    model = S.mlp()
    before = model.getParameters()[0].copy()
    opt = pm.Optimizer(model, _rdd(sc, x, y, 3), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxIteration(2), 3)
    with pytest.raises(ValueError, match=r"partition\(s\) \[0\] of the training RDD are "
                                         r"empty \(records per partition: \[0, 1, 1\]\)"):
        opt.optimize()
    assert opt.state["iteration"] == 0
    np.testing.assert_array_equal(model.getParameters()[0], before)


# -- several inputs, what Spark is handed, what stays on the driver ------------------------------
def _two_inputs(n=48, seed=0):
    rng = np.random.default_rng(seed)
    xa, xb = rng.standard_normal((n, 4)), rng.standard_normal((n, 3))
    y = (xa[:, :3] + xb).argmax(axis=1)
    a, b = pm.Input(), pm.Input()
    s = pm.CAddTable()(pm.Linear(4, 5)(a), pm.Linear(3, 5)(b))
    model = pm.Graph([a, b], pm.Linear(5, 3)(pm.Tanh()(s))).double()
    return model, xa, xb, y


def test_a_two_input_graph_on_spark_matches_local(sc):
    model, xa, xb, y = _two_inputs()
    rdd = sc.parallelize([pm.Sample([xa[i], xb[i]], y[i]) for i in range(48)], 2)
    methods = [pm.Top1Accuracy(), pm.Loss(pm.CrossEntropyCriterion())]
    for (r, _), (r0, _) in zip(model.evaluate(rdd, methods, 8),
                               model.evaluate(([xa, xb], y), methods), strict=True):
        assert r.result()[1] == 48
        np.testing.assert_allclose(r.result()[0], r0.result()[0], rtol=1e-12)
    out = np.stack(model.predict(rdd).collect())
    np.testing.assert_allclose(out, model.predict([xa, xb]), rtol=1e-12)
    assert model.predictClass(rdd).collect() == model.predictClass([xa, xb]).tolist()
    local = model.cloneModule()
    summary = pm.TrainSummary()
    opt = pm.Optimizer(model, rdd, pm.CrossEntropyCriterion(), pm.SGD(0.5), pm.MaxEpoch(2), 8)
    opt.setValidation(pm.EveryEpoch(), rdd, [pm.Top1Accuracy()])
    opt.setTrainSummary(summary).setProgressBar(False).optimize()
    assert opt.state["iteration"] == 12

    # the same batches, in the documented distributed order, trained locally
    from pymodules import spark

    parts = np.array_split(np.arange(48), 2)
    epoch = [0]

    def batches():
        e = epoch[0]
        epoch[0] += 1
        orders = [part[spark.order(opt._source.seed, p, e, 24)] for p, part in enumerate(parts)]
        for j in range(6):
            idx = np.concatenate([o[j * 4:(j + 1) * 4] for o in orders])
            yield pm.MiniBatch([xa[idx], xb[idx]], y[idx])

    ref = pm.TrainSummary()
    pm.Optimizer(local, pm.DataSet.iterable(batches), pm.CrossEntropyCriterion(), pm.SGD(0.5),
                 pm.MaxEpoch(2), 8).setTrainSummary(ref).setProgressBar(False).optimize()
    np.testing.assert_allclose(summary.readScalar("Loss")[:, 1], ref.readScalar("Loss")[:, 1],
                               rtol=1e-10)
    np.testing.assert_allclose(model.getParameters()[0], local.getParameters()[0], rtol=1e-10,
                               atol=1e-12)


def test_a_dataframe_names_pymodules_spark_ml(sc):
    from pyspark.sql import SparkSession

    df = SparkSession.builder.getOrCreate().createDataFrame([(1.0, 2.0, 0), (0.5, 1.0, 1)],
                                                            ["a", "b", "label"])
    model = pm.Sequential().add(pm.Linear(2, 2))
    for call in (lambda: model.evaluate(df, [pm.Top1Accuracy()]), lambda: model.predict(df),
                 lambda: pm.Optimizer(model, df, pm.CrossEntropyCriterion()),
                 lambda: pm.Optimizer(model, (np.ones((2, 2)), np.zeros(2)),
                                      pm.CrossEntropyCriterion()).setValidation(
                     pm.EveryEpoch(), df, [pm.Top1Accuracy()])):
        with pytest.raises(TypeError, match=r"got a Spark DataFrame; train and predict on "
                                            r"DataFrames with pymodules\.spark\.ml .*"
                                            r"df\.rdd\.map"):
            call()


def test_spark_training_leaves_the_model_and_its_checkpoints_whole(sc, tmp_path):
    x, y = S.data(n=48)
    model = S.mlp()
    opt = pm.Optimizer(model, _rdd(sc, x, y), pm.CrossEntropyCriterion(), pm.SGD(0.1),
                       pm.MaxIteration(2), 8).setProgressBar(False)
    opt.setCheckpoint(str(tmp_path), pm.SeveralIteration(1)).optimize()
    assert model.modules[0].propagateBack
    loaded = pm.Module.load(str(tmp_path / "model.2"))
    assert loaded.modules[0].propagateBack
    loaded.forward(x[:3])
    assert loaded.backward(x[:3], np.ones((3, 3))).shape == (3, 6)


def test_tasks_use_spark_task_cpus_threads(sc, tmp_path):
    """spark.task.cpus is 1 here: every task computes on one BLAS thread, whatever the
    default of its Python worker (the cores of the machine)."""
    x, y = S.data(n=48)
    path = str(tmp_path / "threads")
    crit = S.RecordThreads(path)
    sc.parallelize(range(8), 8).foreach(S.two_blas_threads)  # what a worker may be left with
    pm.Optimizer(S.mlp(), _rdd(sc, x, y), crit, pm.SGD(0.1), pm.MaxIteration(3),
                 8).setProgressBar(False).optimize()
    S.mlp().evaluate(_rdd(sc, x, y), [pm.Loss(crit)], 48)
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 3 * 2 + 2  # 3 iterations of 2 partitions, then evaluate
    assert all(line.endswith(" [1]") for line in lines), lines
    assert sc.getConf().get("spark.task.cpus", "1") == "1"


def test_several_outputs_and_targets_on_spark(sc):
    rng = np.random.default_rng(2)
    xa, xb = rng.standard_normal((24, 4)), rng.standard_normal((24, 3))
    ya, yb = rng.integers(0, 3, 24), rng.integers(0, 2, 24)
    a, b = pm.Input(), pm.Input()
    model = pm.Graph([a, b], [pm.Linear(4, 3)(a), pm.Linear(3, 2)(b)]).double()
    crit = pm.ParallelCriterion().add(pm.CrossEntropyCriterion()).add(
        pm.CrossEntropyCriterion(), 0.5)
    rdd = sc.parallelize([pm.Sample([xa[i], xb[i]], [np.array(ya[i]), np.array(yb[i])])
                          for i in range(24)], 2)
    [(got, _)] = model.evaluate(rdd, [pm.Loss(crit)], 8)
    [(want, _)] = model.evaluate(([xa, xb], [ya, yb]), [pm.Loss(crit)])
    assert got.result()[1] == 24
    np.testing.assert_allclose(got.result()[0], want.result()[0], rtol=1e-12)
    outs = rdd.zip(model.predict(rdd)).collect()
    np.testing.assert_allclose(outs[5][1][1], model.predict([xa, xb])[1][5], rtol=1e-12)
    opt = pm.Optimizer(model, rdd, crit, pm.SGD(0.5), pm.MaxEpoch(5), 8).setProgressBar(False)
    opt.optimize()
    [(after, _)] = model.evaluate(rdd, [pm.Loss(crit)], 8)
    assert after.result()[0] < want.result()[0]
