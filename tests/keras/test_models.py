"""Keras-style models: compile, fit, evaluate, predict, summary, weights, save/load, Spark."""

import numpy as np
import pytest

import pymodules as pm
from pymodules import keras as K


def _blobs(rng, n=300, classes=3, dim=4):
    centers = rng.standard_normal((classes, dim)) * 3
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.standard_normal((n, dim)) * 0.5).astype(np.float32)
    return x, y


def _mlp(dim=4, classes=3):
    model = K.Sequential()
    model.add(K.Dense(16, activation="relu", input_shape=(dim,)))
    model.add(K.Dense(classes, activation="softmax"))
    return model


def test_fit_evaluate_predict(rng):
    x, y = _blobs(rng)
    model = _mlp().compile(pm.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    loss0, acc0 = model.evaluate(x, y)
    model.fit(x, y, batch_size=16, nb_epoch=8, validation_data=(x[:50], y[:50]))
    loss, acc = model.evaluate(x, y, batch_size=64)
    assert loss < loss0 / 3 and acc > 0.95 > acc0
    p = model.predict(x)
    assert p.shape == (300, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    classes = model.predict_classes(x)
    assert classes.dtype == np.int64 and set(classes) <= {0, 1, 2}
    np.testing.assert_array_equal(classes, p.argmax(1))
    assert np.mean(classes == y) == pytest.approx(acc)
    # the loss of evaluate is the criterion's mean over the samples
    crit = pm.ClassNLLCriterion(logProbAsInput=False)
    assert loss == pytest.approx(crit.forward(p, y), rel=1e-5)


def test_categorical_crossentropy_is_sparse_on_one_hot_rows(rng):
    x, y = _blobs(rng, n=64)
    one_hot = np.eye(3, dtype=np.float32)[y]
    pm.setSeed(7)
    a = _mlp().compile(pm.SGD(0.1), "categorical_crossentropy", ["accuracy"])
    before = a.evaluate(x, one_hot)
    a.fit(x, one_hot, batch_size=8, nb_epoch=2)
    pm.setSeed(7)
    b = _mlp().compile(pm.SGD(0.1), "sparse_categorical_crossentropy", ["accuracy"])
    assert before == pytest.approx(b.evaluate(x, y), rel=1e-6)
    b.fit(x, y, batch_size=8, nb_epoch=2)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    soft = one_hot * 0.8 + 0.2 / 3
    with pytest.raises(ValueError, match="target row 0 is not one-hot"):
        a.evaluate(x, soft)


def test_fit_equals_the_optimizer(rng):
    """fit is the Optimizer's training: the same seed gives the same weights."""
    x, y = _blobs(rng, n=96)
    pm.setSeed(3)
    a = _mlp().compile(pm.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    a.fit(x, y, batch_size=16, nb_epoch=3)
    pm.setSeed(3)
    b = _mlp()
    pm.Optimizer(b, (x, y), pm.ClassNLLCriterion(logProbAsInput=False),
                 pm.SGD(0.05, momentum=0.9), pm.MaxEpoch(3), 16).optimize()
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_regression_losses_and_dataset(rng):
    x = rng.standard_normal((200, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    model = K.Sequential().add(K.Dense(1, input_shape=(3,)))
    model.compile(pm.SGD(0.1), "mse", ["mae"])
    model.fit(pm.DataSet.array(x, y), batch_size=20, nb_epoch=30)
    mse, mae = model.evaluate(x, y)
    assert mse < 1e-4 and mae < 1e-2
    w, b = model.get_weights()
    np.testing.assert_allclose(w[:, 0], [1.0, -2.0, 0.5], atol=1e-2)
    np.testing.assert_allclose(b, [0.3], atol=1e-2)


def test_functional_model_with_two_inputs(rng):
    a, b = K.Input(shape=(4,)), K.Input(shape=(2,))
    h = K.merge([K.Dense(8, activation="relu")(a), K.Dense(8, activation="relu")(b)],
                mode="concat")
    out = K.Dense(3, activation="softmax")(h)
    model = K.Model([a, b], out).compile(pm.Adam(0.01), "sparse_categorical_crossentropy",
                                         ["accuracy"])
    x, y = _blobs(rng, dim=6)
    xs = [x[:, :4], x[:, 4:]]
    model.fit(xs, y, batch_size=16, nb_epoch=8)
    assert model.evaluate(xs, y)[1] > 0.95
    assert model.predict(xs).shape == (300, 3)
    assert len(model.layers) == 6


def test_summary_counts(capsys):
    model = K.Sequential()
    model.add(K.Convolution2D(4, 3, 3, input_shape=(1, 8, 8), name="conv"))
    model.add(K.BatchNormalization())
    model.add(K.Flatten())
    model.add(K.Dense(10, name="out"))
    text = model.summary()
    assert text in capsys.readouterr().out
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert "(None, 4, 6, 6)" in rows["conv"] and rows["conv"].split()[-1] == "40"
    assert rows["out"].split()[-1] == str(144 * 10 + 10)
    # trainable: conv 40, BN 8, dense 1450; non-trainable: BN's running mean and variance
    assert "Total params: 1,506" in text
    assert "Trainable params: 1,498" in text and "Non-trainable params: 8" in text


def test_get_set_weights(rng):
    model = _mlp()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 16), (16,), (16, 3), (3,)]
    new = [rng.standard_normal(w.shape) for w in weights]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(model.layers[0].modules[0].modules[0].weight, new[0].T,
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"^Sequential@\w+: set_weights got 3 arrays, "
                                         r"expected 4"):
        model.set_weights(new[:3])
    with pytest.raises(ValueError, match=r"^Dense@\w+: set_weights array 0 has shape "
                                         r"\(16, 4\), expected \(4, 16\)"):
        model.set_weights([new[0].T] + new[1:])


def test_save_and_load(tmp_path, rng):
    model = K.Sequential()
    model.add(K.Convolution2D(3, 3, 3, activation="relu", input_shape=(1, 6, 6)))
    model.add(K.MaxPooling2D())
    model.add(K.Flatten())
    model.add(K.Dropout(0.2))
    model.add(K.Dense(4, activation="softmax"))
    model.compile("sgd", "categorical_crossentropy")
    x = rng.standard_normal((5, 1, 6, 6)).astype(np.float32)
    model.save(str(tmp_path / "m"))
    again = pm.load(str(tmp_path / "m"))
    assert type(again) is K.Sequential
    assert [type(m) for m in again.layers] == [type(m) for m in model.layers]
    assert again.get_output_shape() == (None, 4)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # a loaded model trains on
    again.compile("sgd", "sparse_categorical_crossentropy")
    again.fit(x, np.arange(5) % 4, batch_size=5, nb_epoch=1)


def test_save_and_load_a_graph_model(tmp_path, rng):
    a = K.Input(shape=(5, 3))
    h = K.Bidirectional(K.LSTM(4, return_sequences=True))(a)
    h = K.TimeDistributed(K.Dense(2))(h)
    b = K.Input(shape=(5, 2))
    model = K.Model([a, b], K.merge([h, b], mode="sum"))
    xs = [rng.standard_normal((3, 5, 3)).astype(np.float32),
          rng.standard_normal((3, 5, 2)).astype(np.float32)]
    model.save(str(tmp_path / "g"))
    again = K.Model.load(str(tmp_path / "g"))
    np.testing.assert_array_equal(again.forward(xs), model.forward(xs))
    assert again.get_input_shape() == [(None, 5, 3), (None, 5, 2)]
    assert [w.shape for w in again.get_weights()] == [w.shape for w in model.get_weights()]


def test_model_errors():
    model = _mlp()
    with pytest.raises(ValueError, match=r"^Sequential@\w+: fit needs compile"):
        model.fit(np.zeros((2, 4), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match=r"^Sequential@\w+: unknown loss 'crossentropy'"):
        model.compile("sgd", "crossentropy")
    with pytest.raises(ValueError, match=r"^Sequential@\w+: unknown optimizer 'sgdd'"):
        model.compile("sgdd", "mse")
    with pytest.raises(ValueError, match=r"^Sequential@\w+: unknown metric 'precision'"):
        model.compile("sgd", "mse", ["precision"])
    with pytest.raises(ValueError, match=r"^Sequential@\w+: evaluate needs compile"):
        model.evaluate(np.zeros((2, 4), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match=r"^InputLayer@\w+: Input needs shape"):
        K.Input()
    with pytest.raises(TypeError, match="the Keras functional API links Keras layers"):
        K.Dense(3)(pm.Input())


def test_keras_model_is_a_module(rng):
    model = _mlp()
    assert isinstance(model, pm.Sequential) and isinstance(model, pm.Module)
    w, g = model.getParameters()
    assert w.size == 4 * 16 + 16 + 16 * 3 + 3
    clone = model.cloneModule()
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(x), model.forward(x))
    # Module.evaluate with validation methods still works
    (acc, _), = model.evaluate((x, np.array([0, 1])), [pm.Top1Accuracy()])
    assert acc.count == 2
    (acc, _), = model.evaluate((x, np.array([0, 1])), vMethods=[pm.Top1Accuracy()],
                               batchSize=1)
    assert acc.count == 2
    np.testing.assert_allclose(model.predict(x, batchSize=1), model.predict(x), rtol=1e-6)


def test_fit_on_spark(rng):
    spark_support = pytest.importorskip("spark_support")
    sc = spark_support.session("local[2]").sparkContext
    x, y = _blobs(rng, n=128)
    rdd = sc.parallelize([pm.Sample(a, b) for a, b in zip(x, y, strict=True)], 2)
    model = _mlp().compile(pm.Adam(0.02), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(rdd, batch_size=32, nb_epoch=10, validation_data=rdd)
    assert model.evaluate(x, y)[1] > 0.9
    assert model.evaluate(rdd)[1] > 0.9
    model.fit(x, y, batch_size=32, nb_epoch=1, distributed=True)
    preds = model.predict(rdd).collect()
    assert len(preds) == 128


def test_save_and_load_merged_branches(tmp_path, rng):
    left = K.Sequential().add(K.Dense(3, input_shape=(4,)))
    right = K.Sequential().add(K.Dense(3, input_shape=(5,)))
    model = K.Sequential().add(K.Merge([left, right], mode="concat")).add(K.Dense(2))
    model.save(str(tmp_path / "m"))
    again = pm.load(str(tmp_path / "m"))
    xs = [rng.standard_normal((2, 4)).astype(np.float32),
          rng.standard_normal((2, 5)).astype(np.float32)]
    np.testing.assert_array_equal(again.forward(xs), model.forward(xs))
    assert again.get_input_shape() == [(None, 4), (None, 5)]
