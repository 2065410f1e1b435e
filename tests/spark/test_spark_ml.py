"""pymodules.spark.ml on local[2,4]: NNEstimator and NNClassifier on DataFrames, inside
Pipelines, persisted with Spark ML's save and load."""

import numpy as np
import pytest
import spark_support as S

import pymodules as pm


@pytest.fixture
def spark():
    return S.session("local[2,4]")


def _frame(spark, x, y, partitions=2):
    """A DataFrame with one double column per feature (f0, f1, ...) and an int label."""
    rows = [(*map(float, a), int(b)) for a, b in zip(x, y, strict=True)]
    names = [f"f{i}" for i in range(x.shape[1])]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions),
                                 [*names, "label"])


def _vectors(spark, x, y, partitions=2):
    from pyspark.ml.linalg import Vectors

    rows = [(Vectors.dense(a), int(b)) for a, b in zip(x, y, strict=True)]
    return spark.createDataFrame(spark.sparkContext.parallelize(rows, partitions),
                                 ["features", "label"])


def _assembler(k):
    from pyspark.ml.feature import VectorAssembler

    return VectorAssembler(inputCols=[f"f{i}" for i in range(k)], outputCol="features")


def _distributed(spark, x, y, batch, epochs, lr, partitions=2):
    """The weights of pm.Optimizer on an RDD of Sample laid out as the DataFrame."""
    model = _classifier_model()
    rdd = spark.sparkContext.parallelize(S.samples(x, y), partitions)
    pm.setSeed(6)
    pm.Optimizer(model, rdd, pm.ClassNLLCriterion(), pm.SGD(lr), pm.MaxEpoch(epochs),
                 batch).setProgressBar(False).optimize()
    return model


def _classifier_model():
    pm.setSeed(5)
    return S.mlp().add(pm.LogSoftMax()).double()


def test_pipeline_fit_matches_the_distributed_optimizer_and_transforms(spark):
    from pyspark.ml import Pipeline

    from pymodules.spark.ml import NNClassifier, NNClassifierModel

    x, y = S.data(n=48)
    df = _frame(spark, x, y)
    model = _classifier_model()
    clf = NNClassifier(model).setBatchSize(8).setMaxEpoch(3).setLearningRate(0.2)
    pm.setSeed(6)
    fitted = Pipeline(stages=[_assembler(6), clf]).fit(df)
    stage = fitted.stages[-1]
    assert isinstance(stage, NNClassifierModel) and stage.model is model

    want = _distributed(spark, x, y, 8, 3, 0.2)
    np.testing.assert_array_equal(model.getParameters()[0], want.getParameters()[0])

    out = fitted.transform(df).select("label", "prediction").collect()
    assert [r.label for r in out] == y.tolist()  # rows keep their order
    assert [r.prediction for r in out] == [float(c) for c in model.predictClass(x)]
    assert all(type(r.prediction) is float for r in out)


def test_nnmodel_appends_the_flattened_output(spark):
    from pymodules.spark.ml import NNModel

    x, y = S.data(n=13)
    model = S.mlp()
    out = NNModel(model).setBatchSize(5).transform(_vectors(spark, x, y, 3)).collect()
    np.testing.assert_allclose(np.array([r.prediction for r in out]), model.predict(x),
                               rtol=1e-12)
    assert [list(r.features) for r in out] == x.tolist()


def test_estimator_with_array_labels_feature_size_and_standard_scaler(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler

    from pymodules.spark.ml import NNEstimator, NNModel

    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6))
    t = np.stack([x[:, :3].sum(1), x[:, 3:].sum(1)], axis=1)
    rows = [(*map(float, a), [float(v) for v in b]) for a, b in zip(x, t, strict=True)]
    df = spark.createDataFrame(rows, [*(f"f{i}" for i in range(6)), "target"])
    pm.setSeed(2)
    model = pm.Sequential().add(pm.Reshape([6])).add(pm.Linear(6, 2)).double()
    est = (NNEstimator(model, pm.MSECriterion(), featureSize=[2, 3], labelSize=[2])
           .setFeaturesCol("scaled").setLabelCol("target").setBatchSize(8).setMaxEpoch(30)
           .setLearningRate(0.1).setPredictionCol("y"))
    scaler = StandardScaler(inputCol="features", outputCol="scaled", withMean=True)
    fitted = Pipeline(stages=[_assembler(6), scaler, est]).fit(df)
    assert isinstance(fitted.stages[-1], NNModel)
    got = fitted.transform(df).select("scaled", "y").collect()
    scaled = np.array([r.scaled.toArray() for r in got])
    pred = np.array([r.y for r in got])
    np.testing.assert_allclose(pred, model.forward(scaled.reshape(-1, 2, 3)), rtol=1e-12)
    first = float(np.mean((pm.Sequential().add(pm.Reshape([6])).add(pm.Linear(6, 2)).double()
                           .forward(scaled.reshape(-1, 2, 3)) - t) ** 2))
    assert np.mean((pred - t) ** 2) < 0.1 * first  # it learned


def test_several_feature_columns_feed_a_two_input_graph(spark):
    from pymodules.spark.ml import NNClassifier

    x, y = S.data(n=32)
    rows = [([float(v) for v in a[:4]], [float(v) for v in a[4:]], int(b))
            for a, b in zip(x, y, strict=True)]
    df = spark.createDataFrame(rows, ["a", "b", "label"])
    pm.setSeed(4)
    ia, ib = pm.Input(), pm.Input()
    joined = pm.JoinTable(1)([pm.Linear(4, 3)(ia), pm.Linear(2, 3)(ib)])
    graph = pm.Graph([ia, ib], [pm.LogSoftMax()(pm.Linear(6, 3)(pm.Tanh()(joined)))]).double()
    clf = NNClassifier(graph).setFeaturesCol(["a", "b"]).setBatchSize(8).setMaxEpoch(2)
    out = clf.fit(df).transform(df).collect()
    assert [r.prediction for r in out] == \
        [float(c) for c in graph.predictClass([x[:, :4], x[:, 4:]])]


def test_batch_size_not_a_multiple_of_the_partitions_coalesces(spark):
    from pymodules.spark.ml import NNClassifier

    x, y = S.data(n=30)
    model = _classifier_model()
    pm.setSeed(6)
    NNClassifier(model).setBatchSize(3).setMaxEpoch(1).fit(_vectors(spark, x, y, 2))
    want = _distributed(spark, x, y, 3, 1, 1e-3, partitions=1)
    np.testing.assert_array_equal(model.getParameters()[0], want.getParameters()[0])


def test_validation_and_summaries(spark):
    from pymodules.spark.ml import NNClassifier

    x, y = S.data(n=48)
    df = _vectors(spark, x, y)
    train, val = pm.TrainSummary(), pm.ValidationSummary()
    clf = (NNClassifier(_classifier_model()).setBatchSize(8).setMaxEpoch(2)
           .setOptimMethod(pm.SGD(0.1, momentum=0.5))
           .setValidation(pm.EveryEpoch(), df, [pm.Top1Accuracy()], 16)
           .setTrainSummary(train).setValidationSummary(val))
    clf.fit(df)
    assert len(train.readScalar("Loss")) == 12  # 6 iterations an epoch, 2 epochs
    accuracy = val.readScalar("Top1Accuracy")
    assert len(accuracy) == 2 and 0.0 <= accuracy[-1][1] <= 1.0


def test_pipeline_model_and_estimator_save_and_load(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    from pymodules.spark.ml import NNClassifier, NNClassifierModel

    x, y = S.data(n=24)
    df = _frame(spark, x, y)
    clf = (NNClassifier(_classifier_model()).setBatchSize(4).setMaxEpoch(2)
           .setOptimMethod(pm.SGD(0.3)).setPredictionCol("cls"))
    pipeline = Pipeline(stages=[_assembler(6), clf])
    pm.setSeed(6)
    fitted = pipeline.fit(df)
    fitted.save(str(tmp_path / "fitted"))
    loaded = PipelineModel.load(str(tmp_path / "fitted"))
    stage = loaded.stages[-1]
    assert isinstance(stage, NNClassifierModel) and stage.getPredictionCol() == "cls"
    assert stage.uid == fitted.stages[-1].uid
    assert loaded.transform(df).select("cls").collect() == \
        fitted.transform(df).select("cls").collect()

    pipeline.save(str(tmp_path / "pipeline"))
    again = Pipeline.load(str(tmp_path / "pipeline")).getStages()[-1]
    assert type(again) is NNClassifier and again.getBatchSize() == 4
    assert again.getMaxEpoch() == 2 and again.optimMethod.learningRate == 0.3
    assert type(again.criterion) is pm.ClassNLLCriterion
    np.testing.assert_array_equal(again.model.getParameters()[0],
                                  clf.model.getParameters()[0])


def test_bad_rows_name_the_column_and_the_sizes(spark):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType

    from pymodules.spark.ml import NNClassifier, NNModel

    model = _classifier_model()
    schema = StructType([StructField("features", ArrayType(DoubleType()), True),
                         StructField("label", LongType(), True)])
    good = [[0.1] * 6, 1]
    nulls = spark.createDataFrame([good, [None, 0], good], schema)
    with pytest.raises(ValueError, match=r"pymodules\.spark\.ml: column 'features' is null "
                                         r"in row \d+ of partition \d+"):
        NNClassifier(model).setBatchSize(1).fit(nulls)
    wrong = spark.createDataFrame([good, [[0.5] * 5, 0]], schema)
    with pytest.raises(ValueError, match=r"column 'features' holds a value of size 5 in row "
                                         r"\d+ of partition \d+, expected 6"):
        NNClassifier(model, featureSize=[6]).setBatchSize(1).fit(wrong)
    with pytest.raises(ValueError, match=r"column 'label' is null"):
        NNClassifier(model).setBatchSize(1).fit(
            spark.createDataFrame([good, [[0.5] * 6, None]], schema))
    vec = spark.createDataFrame([(Vectors.dense([1.0] * 6), 0), (Vectors.dense([1.0] * 7), 0)],
                                ["features", "label"])
    with pytest.raises(ValueError, match=r"size 7 in row \d+ of partition \d+, expected 6"):
        NNClassifier(model).setBatchSize(1).fit(vec)
    with pytest.raises(ValueError, match=r"has no column\(s\) \['pixels'\]"):
        NNModel(model).setFeaturesCol("pixels").transform(vec)
    with pytest.raises(TypeError, match="model must be a pymodules Module"):
        NNClassifier("not a model")
