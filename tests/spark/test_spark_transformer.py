"""A Transformer language model trains on Spark (local[2,4]) as the local Optimizer does."""

import numpy as np
import pytest
import spark_support as S

import pymodules as pm


@pytest.fixture
def sc():
    return S.session("local[2,4]").sparkContext


def _local_reference(model, x, y, seed, criterion, method, epochs, partitions, per):
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
    opt = pm.Optimizer(model, pm.DataSet.iterable(batches), criterion, method,
                       pm.MaxEpoch(epochs), per * partitions)
    opt.setTrainSummary(summary).optimize()
    return summary.readScalar("Loss")[:, 1]


def test_a_transformer_language_model_trains_on_spark_as_locally(sc):
    """Next-token prediction over sequences of 5 tokens (the model shifts its input right,
    so the targets are the inputs): the distributed run ends with the weights of the local
    Optimizer fed the same batches."""
    rng = np.random.default_rng(0)
    start = rng.integers(0, 6, 48)
    x = ((start[:, None] + np.arange(5)[None, :]) % 6).astype(np.float64)  # counting mod 6

    def model():
        pm.setSeed(5)
        return pm.Sequential(pm.Transformer(6, 8, 2, 8, 1, 0.0, 0.0, 0.0, None, True),
                             pm.TimeDistributed(pm.LogSoftMax())).double()

    def criterion():
        return pm.TimeDistributedCriterion(pm.ClassNLLCriterion(), True)

    a, b = model(), model()
    np.testing.assert_array_equal(a.getParameters()[0], b.getParameters()[0])
    summary = pm.TrainSummary()
    rdd = sc.parallelize(S.samples(x, x), 2)
    opt = pm.Optimizer(a, rdd, criterion(), pm.Adam(0.01), pm.MaxEpoch(3), 8)
    opt.setTrainSummary(summary).optimize()
    losses = _local_reference(b, x, x, opt._source.seed, criterion(), pm.Adam(0.01), 3, 2, 4)
    np.testing.assert_allclose(summary.readScalar("Loss")[:, 1], losses, rtol=1e-9)
    np.testing.assert_allclose(a.getParameters()[0], b.getParameters()[0], rtol=1e-9,
                               atol=1e-11)
    assert losses[-3:].mean() < losses[:3].mean()
