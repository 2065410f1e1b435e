"""Keras-style layers: output shapes by the Keras 1 rules, numbers against the hand-built
pymodules model and against NumPy with the Keras-laid-out weights, gradients, errors."""

import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm
from pymodules import keras as K


def _seq(*layers):
    model = K.Sequential()
    for layer in layers:
        model.add(layer)
    return model


# (layer, input shape, output shape by the Keras 1.2 rules)
SHAPES = [
    (lambda: K.Dense(7), (5,), (7,)),
    (lambda: K.Dense(7), (3, 5), (3, 7)),
    (lambda: K.Dense(7, input_dim=5), (5,), (7,)),
    (lambda: K.Activation("softmax"), (4,), (4,)),
    (lambda: K.Activation("softmax"), (3, 4), (3, 4)),
    (lambda: K.Activation("relu"), (2, 3, 4), (2, 3, 4)),
    (lambda: K.Dropout(0.3), (6,), (6,)),
    (lambda: K.Flatten(), (3, 4, 5), (60,)),
    (lambda: K.Reshape((4, -1)), (3, 4, 2), (4, 6)),
    (lambda: K.Reshape((2, 12)), (24,), (2, 12)),
    # Convolution1D: (steps, dim) -> (steps', nb_filter)
    (lambda: K.Convolution1D(6, 3), (10, 4), (8, 6)),
    (lambda: K.Convolution1D(6, 3, subsample_length=2), (10, 4), (4, 6)),
    (lambda: K.Convolution1D(6, 4, border_mode="same"), (10, 4), (10, 6)),
    (lambda: K.Convolution1D(6, 3, border_mode="same", subsample_length=3), (10, 4), (4, 6)),
    # Convolution2D "th": (c, h, w); valid floor((h - k) / s) + 1, same ceil(h / s)
    (lambda: K.Convolution2D(5, 3, 3), (2, 9, 8), (5, 7, 6)),
    (lambda: K.Convolution2D(5, 3, 2, subsample=(2, 3)), (2, 9, 8), (5, 4, 3)),
    (lambda: K.Convolution2D(5, 3, 3, border_mode="same"), (2, 9, 8), (5, 9, 8)),
    (lambda: K.Convolution2D(5, 4, 4, border_mode="same", subsample=(2, 2)), (2, 9, 8),
     (5, 5, 4)),
    (lambda: K.Convolution2D(5, 3, 3, dim_ordering="tf"), (9, 8, 2), (7, 6, 5)),
    (lambda: K.Convolution2D(5, 3, 3, border_mode="same", dim_ordering="tf"), (9, 8, 2),
     (9, 8, 5)),
    (lambda: K.Convolution3D(4, 3, 2, 2), (2, 6, 5, 4), (4, 4, 4, 3)),
    (lambda: K.Convolution3D(4, 3, 3, 3, border_mode="same"), (2, 6, 5, 4), (4, 6, 5, 4)),
    (lambda: K.Convolution3D(4, 2, 2, 2, border_mode="same", subsample=(2, 2, 1)),
     (2, 5, 4, 3), (4, 3, 2, 3)),
    # pooling: strides default to the window
    (lambda: K.MaxPooling1D(), (9, 3), (4, 3)),
    (lambda: K.MaxPooling1D(3, 1), (9, 3), (7, 3)),
    (lambda: K.MaxPooling1D(2, border_mode="same"), (9, 3), (5, 3)),
    (lambda: K.AveragePooling1D(3, 2), (9, 3), (4, 3)),
    (lambda: K.AveragePooling1D(2, border_mode="same"), (9, 3), (5, 3)),
    (lambda: K.MaxPooling2D(), (3, 9, 8), (3, 4, 4)),
    (lambda: K.MaxPooling2D((3, 2), (1, 2)), (3, 9, 8), (3, 7, 4)),
    (lambda: K.MaxPooling2D((2, 2), border_mode="same"), (3, 9, 7), (3, 5, 4)),
    (lambda: K.MaxPooling2D(dim_ordering="tf"), (9, 8, 3), (4, 4, 3)),
    (lambda: K.AveragePooling2D((2, 3)), (3, 9, 8), (3, 4, 2)),
    (lambda: K.AveragePooling2D((3, 3), (2, 2), border_mode="same"), (3, 9, 8), (3, 5, 4)),
    (lambda: K.MaxPooling3D(), (2, 5, 4, 6), (2, 2, 2, 3)),
    (lambda: K.AveragePooling3D((2, 1, 3), (1, 1, 3)), (2, 5, 4, 6), (2, 4, 4, 2)),
    (lambda: K.GlobalAveragePooling2D(), (3, 5, 4), (3,)),
    (lambda: K.GlobalMaxPooling2D(dim_ordering="tf"), (5, 4, 3), (3,)),
    (lambda: K.BatchNormalization(), (6,), (6,)),
    (lambda: K.BatchNormalization(), (3, 4, 5), (3, 4, 5)),
    (lambda: K.BatchNormalization(dim_ordering="tf", axis=-1), (4, 5, 3), (4, 5, 3)),
    (lambda: K.ZeroPadding2D(), (2, 4, 5), (2, 6, 7)),
    (lambda: K.ZeroPadding2D((1, 2, 0, 3)), (2, 4, 5), (2, 7, 8)),
    (lambda: K.ZeroPadding2D((1, 2), dim_ordering="tf"), (4, 5, 2), (6, 9, 2)),
    (lambda: K.UpSampling2D(), (2, 3, 4), (2, 6, 8)),
    (lambda: K.UpSampling2D((1, 3), dim_ordering="tf"), (3, 4, 2), (3, 12, 2)),
    (lambda: K.LSTM(6), (5, 4), (6,)),
    (lambda: K.LSTM(6, return_sequences=True), (5, 4), (5, 6)),
    (lambda: K.GRU(6, go_backwards=True), (5, 4), (6,)),
    (lambda: K.SimpleRNN(6, return_sequences=True), (5, 4), (5, 6)),
    (lambda: K.Bidirectional(K.LSTM(6, return_sequences=True)), (5, 4), (5, 12)),
    (lambda: K.Bidirectional(K.GRU(6, return_sequences=True), "sum"), (5, 4), (5, 6)),
    (lambda: K.TimeDistributed(K.Dense(3)), (5, 4), (5, 3)),
    (lambda: K.TimeDistributed(K.Convolution2D(2, 3, 3)), (4, 1, 6, 6), (4, 2, 4, 4)),
]


@pytest.mark.parametrize("make, shape, expected", SHAPES)
def test_output_shape(make, shape, expected, rng):
    layer = make()
    model = K.Sequential().add(K.InputLayer(input_shape=shape)).add(layer)
    assert layer.get_output_shape() == (None, *expected)
    assert layer.get_input_shape() == (None, *shape)
    assert model.get_output_shape() == (None, *expected)
    y = model.forward(rng.standard_normal((2, *shape)).astype(np.float32))
    assert y.shape == (2, *expected)
    model.backward(np.zeros((2, *shape), np.float32), np.ones_like(y))


@pytest.mark.parametrize("make, shape, expected", SHAPES)
def test_save_and_load_every_layer(make, shape, expected, tmp_path, rng):
    model = K.Sequential().add(K.InputLayer(input_shape=shape)).add(make())
    model.evaluate()
    path = str(tmp_path / "m")
    model.save(path)
    again = pm.load(path)
    assert [type(m) for m in again.modules_preorder()] == \
        [type(m) for m in model.modules_preorder()]
    assert again.get_output_shape() == (None, *expected)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    for a, b in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_embedding_shape_and_rows():
    model = _seq(K.Embedding(10, 4, input_shape=(3,)))
    assert model.get_output_shape() == (None, 3, 4)
    x = np.array([[0, 9, 2], [1, 1, 1]], np.float32)
    y = model.forward(x)
    (table,) = model.get_weights()
    np.testing.assert_array_equal(y, table[x.astype(int)])
    assert np.abs(table).max() <= 0.05  # Keras's "uniform" init


@pytest.mark.parametrize("mode, expected", [("sum", (4,)), ("mul", (4,)), ("ave", (4,)),
                                            ("max", (4,)), ("concat", (8,)), ("dot", (1,)),
                                            ("cos", (1,))])
def test_merge_modes(mode, expected, rng):
    a, b = K.Input(shape=(4,)), K.Input(shape=(4,))
    model = K.Model([a, b], K.merge([a, b], mode=mode))
    assert model.get_output_shape() == (None, *expected)
    xa, xb = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    y = model.forward([xa.astype(np.float32), xb.astype(np.float32)])
    ref = {"sum": xa + xb, "mul": xa * xb, "ave": (xa + xb) / 2, "max": np.maximum(xa, xb),
           "concat": np.concatenate([xa, xb], 1), "dot": (xa * xb).sum(1, keepdims=True),
           "cos": (xa * xb).sum(1, keepdims=True) / np.linalg.norm(xa, axis=1,
                                                                  keepdims=True)
           / np.linalg.norm(xb, axis=1, keepdims=True)}[mode]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_merge_concat_axis():
    a, b = K.Input(shape=(2, 3)), K.Input(shape=(5, 3))
    assert K.Model([a, b], K.merge([a, b], mode="concat", concat_axis=1)) \
        .get_output_shape() == (None, 7, 3)
    with pytest.raises(ValueError, match="Merge@.*concat along axis -1"):
        K.merge([a, b], mode="concat")


def test_merge_of_branches_in_a_sequential(rng):
    left = _seq(K.Dense(3, input_shape=(4,)))
    right = _seq(K.Dense(3, input_shape=(5,)))
    model = _seq(K.Merge([left, right], mode="concat"), K.Dense(2))
    assert model.get_input_shape() == [(None, 4), (None, 5)]
    assert model.get_output_shape() == (None, 2)
    xa, xb = rng.standard_normal((6, 4)), rng.standard_normal((6, 5))
    y = model.forward([xa.astype(np.float32), xb.astype(np.float32)])
    w = model.get_weights()
    h = np.concatenate([xa @ w[0] + w[1], xb @ w[2] + w[3]], 1)
    np.testing.assert_allclose(y, h @ w[4] + w[5], rtol=1e-5, atol=1e-5)


# -- the same numbers as the hand-built pymodules model ---------------------------------------
def test_convnet_equals_the_hand_built_model(rng):
    keras = _seq(K.Convolution2D(4, 3, 3, activation="relu", border_mode="same",
                                 input_shape=(1, 8, 8)),
                 K.MaxPooling2D(), K.Flatten(), K.Dense(10, activation="softmax"))
    plain = pm.Sequential(pm.SpatialConvolution(1, 4, 3, 3, 1, 1, -1, -1), pm.ReLU(),
                          pm.SpatialMaxPooling(2, 2, 2, 2), pm.Reshape([64]),
                          pm.Linear(64, 10), pm.SoftMax())
    plain.setWeightsBias(keras.getWeightsBias())
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    g = rng.standard_normal((5, 10)).astype(np.float32)
    np.testing.assert_array_equal(keras.forward(x), plain.forward(x))
    np.testing.assert_array_equal(keras.backward(x, g), plain.backward(x, g))
    for a, b in zip(keras.parameters()[1], plain.parameters()[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_lstm_equals_the_hand_built_model(rng):
    keras = _seq(K.LSTM(5, go_backwards=True, input_shape=(6, 3)))
    plain = pm.Sequential(pm.Reverse(1), pm.Recurrent().add(pm.LSTM(3, 5)), pm.Select(1, -1))
    plain.setWeightsBias(keras.getWeightsBias())
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(keras.forward(x), plain.forward(x))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_dense_keras_weights_against_numpy(rng):
    layer = K.Dense(3, activation="tanh", input_shape=(4,))
    _seq(layer)
    w, b = layer.get_weights()
    assert w.shape == (4, 3) and b.shape == (3,)
    assert np.all(b == 0)  # Keras's zero bias
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(layer.forward(x.astype(np.float32)), np.tanh(x @ w + b),
                               rtol=1e-5, atol=1e-6)


def _run_keras_rnn(kind, weights, x, h_size):
    """Keras 1.2's recurrences with its weight layout, in NumPy."""
    b_, t_, _ = x.shape
    h = np.zeros((b_, h_size))
    c = np.zeros((b_, h_size))
    outs = []
    for t in range(t_):
        xt = x[:, t]
        if kind == "lstm":
            (wi, ui, bi, wc, uc, bc, wf, uf, bf, wo, uo, bo) = weights
            i = _sigmoid(xt @ wi + h @ ui + bi)
            f = _sigmoid(xt @ wf + h @ uf + bf)
            c = f * c + i * np.tanh(xt @ wc + h @ uc + bc)
            h = _sigmoid(xt @ wo + h @ uo + bo) * np.tanh(c)
        elif kind == "gru":
            (wz, uz, bz, wr, ur, br, wh, uh, bh) = weights
            z = _sigmoid(xt @ wz + h @ uz + bz)
            r = _sigmoid(xt @ wr + h @ ur + br)
            hh = np.tanh(xt @ wh + (r * h) @ uh + bh)
            h = z * h + (1 - z) * hh
        else:
            w, u, b = weights
            h = np.tanh(xt @ w + h @ u + b)
        outs.append(h)
    return np.stack(outs, 1)


@pytest.mark.parametrize("kind, make, count", [("lstm", K.LSTM, 12), ("gru", K.GRU, 9),
                                               ("rnn", K.SimpleRNN, 3)])
def test_recurrent_keras_weights_against_numpy(kind, make, count, rng):
    layer = make(4, return_sequences=True, input_shape=(5, 3))
    model = _seq(layer).double()
    weights = [rng.standard_normal(w.shape) * 0.5 for w in layer.get_weights()]
    assert len(weights) == count
    layer.set_weights(weights)
    for a, b in zip(layer.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((2, 5, 3))
    np.testing.assert_allclose(model.forward(x), _run_keras_rnn(kind, weights, x, 4),
                               rtol=1e-10, atol=1e-12)


def test_bidirectional_keras_weights(rng):
    layer = K.Bidirectional(K.SimpleRNN(4, return_sequences=True), input_shape=(5, 3))
    model = _seq(layer).double()
    weights = [rng.standard_normal(w.shape) * 0.5 for w in layer.get_weights()]
    layer.set_weights(weights)
    x = rng.standard_normal((2, 5, 3))
    fwd = _run_keras_rnn("rnn", weights[:3], x, 4)
    bwd = _run_keras_rnn("rnn", weights[3:], x[:, ::-1], 4)[:, ::-1]
    np.testing.assert_allclose(model.forward(x), np.concatenate([fwd, bwd], 2), rtol=1e-10)


def test_conv1d_keras_weights_against_numpy(rng):
    layer = K.Convolution1D(3, 2, border_mode="same", input_shape=(5, 4))
    model = _seq(layer).double()
    w, b = layer.get_weights()
    assert w.shape == (2, 1, 4, 3)
    w = rng.standard_normal(w.shape)
    layer.set_weights([w, b + 0.5])
    x = rng.standard_normal((2, 5, 4))
    xp = np.concatenate([x, np.zeros((2, 1, 4))], 1)  # "same": the odd pad at the end
    ref = np.stack([sum(xp[:, t + k] @ w[k, 0] for k in range(2)) for t in range(5)], 1)
    np.testing.assert_allclose(model.forward(x), ref + b + 0.5, rtol=1e-10)


def test_conv2d_tf_keras_weights_against_th(rng):
    th = _seq(K.Convolution2D(3, 2, 3, input_shape=(2, 5, 6)))
    tf = _seq(K.Convolution2D(3, 2, 3, dim_ordering="tf", input_shape=(5, 6, 2)))
    w, b = th.get_weights()
    tf.set_weights([w.transpose(2, 3, 1, 0), b])
    x = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(tf.forward(x.transpose(0, 2, 3, 1)),
                               th.forward(x).transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_batchnorm_keras_weights_and_momentum(rng):
    layer = K.BatchNormalization(momentum=0.9, input_shape=(3,))
    model = _seq(layer)
    gamma, beta, mean, var = layer.get_weights()
    np.testing.assert_array_equal(gamma, 1)
    np.testing.assert_array_equal(beta, 0)
    x = rng.standard_normal((8, 3)).astype(np.float32) + 2
    model.forward(x)
    # Keras's running average: 0.9 old + 0.1 batch
    np.testing.assert_allclose(layer.get_weights()[2], 0.1 * x.mean(0), rtol=1e-5)


@pytest.mark.parametrize("wrt", ["input", "parameters"])
def test_jacobian_of_a_keras_model(wrt, rng):
    model = _seq(K.Convolution2D(2, 2, 2, activation="tanh", input_shape=(1, 4, 4)),
                 K.Flatten(), K.Dense(3, activation="sigmoid")).double()
    assert_jacobian(model, rng.standard_normal((2, 1, 4, 4)), wrt=wrt)


def test_layer_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"^Dense@\w+: unknown activation 'rleu'"):
        K.Dense(3, activation="rleu")
    with pytest.raises(ValueError, match=r"^Dense@\w+: unknown init 'glorot'"):
        K.Dense(3, init="glorot")
    with pytest.raises(ValueError, match=r"^Dense@\w+: the first layer of a Sequential needs "
                                         r"input_shape"):
        K.Sequential().add(K.Dense(3))
    with pytest.raises(ValueError, match=r"^Convolution2D@\w+: input shape \(5,\) has 1 axes"):
        _seq(K.Dense(5, input_shape=(4,)), K.Convolution2D(2, 3, 3))
    with pytest.raises(ValueError, match=r"^MaxPooling2D@\w+: the input has size 1"):
        _seq(K.InputLayer(input_shape=(2, 1, 4)), K.MaxPooling2D())
    with pytest.raises(ValueError, match=r"^LSTM@\w+: inner_activation 'hard_sigmoid'"):
        K.LSTM(3, inner_activation="hard_sigmoid")
    with pytest.raises(ValueError, match=r"^Dense@\w+: input_shape is \(4,\) but the input "
                                         r"has shape \(5,\)"):
        _seq(K.Dense(5, input_shape=(3,)), K.Dense(2, input_shape=(4,)))
    with pytest.raises(ValueError, match=r"^Dense@\w+: not built yet"):
        K.Dense(3).forward(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"^Sequential@\w+: add takes a Keras layer"):
        K.Sequential().add(pm.Linear(3, 2))


def test_forward_errors_name_the_path():
    model = _seq(K.Dense(3, input_shape=(4,)))
    with pytest.raises(ValueError, match=r"^Sequential@\w+/Dense@\w+/Linear@\w+\(4 -> 3\)"):
        model.forward(np.zeros((2, 5), np.float32))


def test_names_and_file_classes():
    layer = K.Dense(3, name="hidden")
    assert layer.getName() == "hidden"
    assert K.Dropout(0.1).getName().startswith("Dropout@")
    assert type(K.Dropout(0.1)).__name__ == "KerasDropout"  # apart from pymodules.nn's Dropout
