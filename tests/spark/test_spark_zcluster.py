"""pymodules.spark on local-cluster[2,1,1024]: a standalone master, two workers, and an
executor JVM per worker, as on a real cluster. Runs after the local-mode tests (one
SparkContext per process: their session is stopped first)."""

import os

import numpy as np
import pytest
import spark_support as S

import pymodules as pm


@pytest.fixture(scope="module")
def sc():
    yield S.session("local-cluster[2,1,1024]").sparkContext
    S.stop()


def test_evaluate_and_predict_on_executor_jvms(sc):
    x, y = S.data(n=60)
    model = S.mlp()
    rdd = sc.parallelize(S.samples(x, y), 4)
    got = model.evaluate(rdd, [pm.Top1Accuracy()])[0][0]
    assert got == model.evaluate((x, y), [pm.Top1Accuracy()])[0][0]
    assert model.predictClass(rdd).collect() == model.predictClass(x).tolist()


def test_a_lost_executor_ends_with_the_same_weights(sc, tmp_path):
    x, y = S.data(n=32)
    rdd = sc.parallelize(S.samples(x, y), 2)
    marker = tmp_path / "killed"
    ends = []
    for crit in (pm.CrossEntropyCriterion(), S.FailOnce(str(marker), how="kill")):
        pm.setSeed(8)
        model = S.mlp()
        pm.Optimizer(model, rdd, crit, pm.SGD(0.3, momentum=0.9), pm.MaxIteration(5),
                     8).optimize()
        ends.append(model.getParameters()[0].copy())
    pid = int(marker.read_text())  # the executor JVM that was killed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    np.testing.assert_array_equal(ends[0], ends[1])


def test_a_lost_executor_during_an_nnclassifier_fit_ends_with_the_same_weights(sc, tmp_path):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    from pymodules.spark.ml import NNClassifier

    x, y = S.data(n=32)
    rows = [(Vectors.dense(a), int(b)) for a, b in zip(x, y, strict=True)]
    df = SparkSession.builder.getOrCreate().createDataFrame(sc.parallelize(rows, 2),
                                                            ["features", "label"])
    marker = tmp_path / "killed"
    ends, predictions = [], []
    for crit in (pm.CrossEntropyCriterion(), S.FailOnce(str(marker), how="kill")):
        pm.setSeed(8)
        model = S.mlp()
        fitted = (NNClassifier(model, crit).setBatchSize(8).setMaxEpoch(2)
                  .setOptimMethod(pm.SGD(0.3, momentum=0.9)).fit(df))
        ends.append(model.getParameters()[0].copy())
        predictions.append([r.prediction for r in fitted.transform(df).collect()])
    pid = int(marker.read_text())  # the executor JVM that was killed
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    np.testing.assert_array_equal(ends[0], ends[1])
    assert predictions[0] == predictions[1] == [float(c) for c in model.predictClass(x)]
