"""model.summary / pymodules.summary and numParameters against hand-counted numbers: an MLP,
a LeNet, a Graph of two inputs, a frozen layer and a Recurrent; the dry forward leaves the
model as it was."""

import numpy as np
import pytest

import pymodules as pm
from pymodules.nn.overview import overview


def _rows(model, shape):
    """{name: (class, output shape, params, frozen)} and the names in order."""
    o = overview(model, shape)
    return o, [r.name for r in o.rows], {r.name: (r.className, r.outputShape, r.params,
                                                  r.frozen) for r in o.rows}


def _lines(model, shape):
    lines = []
    assert model.summary(shape, printFn=lines.append) is None
    return lines


def _mlp():
    return pm.Sequential(pm.Linear(784, 100).setName("fc1"), pm.ReLU().setName("relu"),
                         pm.Linear(100, 10).setName("fc2"),
                         pm.LogSoftMax().setName("out")).setName("mlp")


def test_mlp():
    model = _mlp()
    o, names, rows = _rows(model, (784,))
    assert names == ["mlp", "fc1", "relu", "fc2", "out"]
    # fc1: 784 * 100 + 100; fc2: 100 * 10 + 10
    assert rows["fc1"] == ("Linear", (1, 100), 78500, False)
    assert rows["relu"] == ("ReLU", (1, 100), 0, False)
    assert rows["fc2"] == ("Linear", (1, 10), 1010, False)
    assert rows["out"] == ("LogSoftMax", (1, 10), 0, False)
    assert rows["mlp"] == ("Sequential", (1, 10), 79510, False)  # its subtree
    assert (o.total, o.trainable, o.frozen) == (79510, 79510, 0)
    assert o.bytes == 79510 * 4 and o.dtype == "float32"
    assert model.numParameters() == 79510
    text = "\n".join(_lines(model, (784,)))
    assert "Total params: 79,510" in text and "Trainable params: 79,510" in text
    assert "Frozen params: 0" in text
    assert "Parameter memory: 318,040 bytes (0.30 MiB), float32" in text
    assert any(line.split() == ["fc1", "Linear", "(1,", "100)", "78,500"]
               for line in text.split("\n"))
    assert any(line.split() == ["mlp", "Sequential", "(1,", "10)", "79,510"]
               for line in text.split("\n"))
    printed = []
    pm.summary(model, [784], printFn=printed.append)
    assert printed == text.split("\n")


def test_prints_by_default(capsys):
    pm.Linear(3, 2).setName("l").summary(3)
    out = capsys.readouterr().out
    assert "Total params: 8" in out and out.split("\n")[2].split() == \
        ["l", "Linear", "(1,", "2)", "8"]


def test_lenet():
    model = pm.Sequential(
        pm.Reshape([1, 28, 28]).setName("reshape"),
        pm.SpatialConvolution(1, 6, 5, 5).setName("conv1"), pm.Tanh().setName("tanh1"),
        pm.SpatialMaxPooling(2, 2, 2, 2).setName("pool1"),
        pm.SpatialConvolution(6, 12, 5, 5).setName("conv2"), pm.Tanh().setName("tanh2"),
        pm.SpatialMaxPooling(2, 2, 2, 2).setName("pool2"),
        pm.Reshape([12 * 4 * 4]).setName("flat"),
        pm.Linear(12 * 4 * 4, 100).setName("fc1"), pm.Tanh().setName("tanh3"),
        pm.Linear(100, 10).setName("fc2"), pm.LogSoftMax().setName("out")).setName("lenet")
    o, names, rows = _rows(model, (28, 28))
    want = {"reshape": (1, 1, 28, 28), "conv1": (1, 6, 24, 24), "pool1": (1, 6, 12, 12),
            "conv2": (1, 12, 8, 8), "pool2": (1, 12, 4, 4), "flat": (1, 192),
            "fc1": (1, 100), "fc2": (1, 10), "out": (1, 10), "lenet": (1, 10)}
    assert {n: rows[n][1] for n in want} == want
    counts = {"conv1": 6 * 1 * 5 * 5 + 6, "conv2": 12 * 6 * 5 * 5 + 12,
              "fc1": 192 * 100 + 100, "fc2": 100 * 10 + 10}
    assert {n: rows[n][2] for n in counts} == counts
    assert counts == {"conv1": 156, "conv2": 1812, "fc1": 19300, "fc2": 1010}
    assert o.total == rows["lenet"][2] == 22278 == model.numParameters()
    assert names[0] == "lenet" and names[1:] == list(rows)[1:]
    assert [r.depth for r in o.rows] == [0] + [1] * 12


def test_graph_with_two_inputs():
    a, b = pm.Input("a"), pm.Input("b")
    ha = pm.Linear(4, 3).setName("la")(a)
    hb = pm.Linear(5, 3).setName("lb")(b)
    s = pm.CAddTable().setName("sum")(ha, hb)
    out = pm.Linear(3, 2).setName("head")(s)
    pair = pm.ConcatTable().setName("pair")
    pair.add(pm.Identity().setName("i1")).add(pm.Identity().setName("i2"))
    both = pair(out)
    model = pm.Graph([a, b], both).setName("g")
    o, names, rows = _rows(model, [(4,), (5,)])
    assert rows["a"] == ("Input", (1, 4), 0, False)
    assert rows["b"] == ("Input", (1, 5), 0, False)
    assert rows["la"] == ("Linear", (1, 3), 15, False)  # 4 * 3 + 3
    assert rows["lb"] == ("Linear", (1, 3), 18, False)  # 5 * 3 + 3
    assert rows["sum"] == ("CAddTable", (1, 3), 0, False)
    assert rows["head"] == ("Linear", (1, 2), 8, False)  # 3 * 2 + 2
    assert rows["pair"] == ("ConcatTable", [(1, 2), (1, 2)], 0, False)  # a table: two shapes
    assert rows["g"] == ("Graph", [(1, 2), (1, 2)], 41, False)
    # the nodes in the order they run: each after what feeds it
    nodes = names[1:names.index("pair") + 1]
    assert nodes == [m.getName() for m in model.modules]
    for before, after in (("a", "la"), ("b", "lb"), ("la", "sum"), ("lb", "sum"),
                          ("sum", "head"), ("head", "pair")):
        assert names.index(before) < names.index(after)
    assert names[-2:] == ["i1", "i2"] and o.total == 41 == model.numParameters()
    text = "\n".join(_lines(model, [[4], [5]]))
    assert "[(1, 2), (1, 2)]" in text and "one forward on zeros of [(4,), (5,)]" in text


def test_a_frozen_layer():
    model = _mlp().freeze("fc1")
    o, _, rows = _rows(model, (784,))
    assert rows["fc1"][2:] == (78500, True) and rows["fc2"][2:] == (1010, False)
    assert (o.total, o.trainable, o.frozen) == (79510, 1010, 78500)
    text = "\n".join(_lines(model, (784,)))
    assert "Trainable params: 1,010" in text and "Frozen params: 78,500" in text
    assert any(line.split() == ["fc1", "Linear", "(1,", "100)", "78,500", "frozen"]
               for line in text.split("\n"))
    model.unFreeze()
    assert overview(model, (784,)).frozen == 0
    model.apply("fc2").setScaleW(0)  # the weight only: not frozen
    assert overview(model, (784,)).frozen == 0


def test_recurrent():
    cell = pm.LSTM(3, 4).setName("lstm")
    model = pm.Sequential(pm.Recurrent().setName("rec").add(cell),
                          pm.Select(1, -1).setName("last"),
                          pm.Linear(4, 2).setName("fc")).setName("seq")
    o, names, rows = _rows(model, (5, 3))  # 5 steps of 3 features
    assert names == ["seq", "rec", "lstm", "last", "fc"]
    # LSTM: input weights 4H x I, bias 4H, hidden weights 4H x H with H = 4, I = 3
    assert rows["lstm"] == ("LSTM", (1, 5, 4), 4 * 4 * 3 + 4 * 4 + 4 * 4 * 4, False)
    assert rows["rec"] == ("Recurrent", (1, 5, 4), 128, False)
    assert rows["last"][1] == (1, 4) and rows["fc"] == ("Linear", (1, 2), 10, False)
    assert o.total == 138 == model.numParameters() == model.getParameters()[0].size
    assert [r.depth for r in o.rows] == [0, 1, 2, 1, 1]


def test_running_state_is_counted_apart():
    model = pm.Sequential(pm.Linear(4, 3), pm.BatchNormalization(3))
    o = overview(model, 4)
    assert (o.total, o.runningState) == (15 + 6, 6)  # BN: weight, bias; mean, var
    assert "Running state (not trained): 6 values" in str(o)


def test_the_model_is_left_as_it_was():
    model = pm.Sequential(pm.Linear(6, 5), pm.Dropout(0.5), pm.BatchNormalization(5),
                          pm.Linear(5, 3))
    x = np.random.default_rng(0).standard_normal((7, 6)).astype(np.float32)
    y = model.forward(x)
    model.backward(x, np.ones_like(y))
    outputs = [(m, m.output, m.output.copy(), m.gradInput, m.gradInput.copy())
               for m in model.modules_preorder()]
    running = [e.copy() for e in model.getExtraParameter()]
    times = [m.forwardTime for m in model.modules_preorder()]
    streams = [s.state for s in pm.random.module_streams(model)]
    draw = pm.random.generator().bit_generator.state
    o = overview(model, (6,))
    assert [r.outputShape for r in o.rows] == [(1, 3), (1, 5), (1, 5), (1, 5), (1, 3)]
    assert model.isTraining() and all(m.isTraining() for m in model.modules_preorder())
    for m, out, out_copy, gin, gin_copy in outputs:
        assert m.output is out and m.gradInput is gin
        np.testing.assert_array_equal(out, out_copy)
        np.testing.assert_array_equal(gin, gin_copy)
    for e, before in zip(model.getExtraParameter(), running, strict=True):
        np.testing.assert_array_equal(e, before)
    assert [m.forwardTime for m in model.modules_preorder()] == times
    assert [s.state for s in pm.random.module_streams(model)] == streams
    assert pm.random.generator().bit_generator.state == draw
    # evaluation mode stays too; a later training step works as before
    model.evaluate()
    overview(model, (6,))
    assert not any(m.isTraining() for m in model.modules_preorder())
    model.training()
    y2 = model.forward(x)
    assert y2.shape == (7, 3)


def test_without_inputShape_the_last_forward_shapes():
    model = _mlp()
    o = overview(model, None)
    assert all(r.outputShape is None for r in o.rows) and o.total == 79510
    assert [line.split()[2] for line in str(o).split("\n")[2:7]] == ["?"] * 5
    model.forward(np.zeros((7, 784), np.float32))
    assert overview(model).rows[0].outputShape == (7, 10)


def test_numParameters_does_not_relayout():
    model = _mlp()
    weights = model.parameters()[0]
    assert model.numParameters() == 79510
    assert model._flat is None
    assert all(a is b for a, b in zip(model.parameters()[0], weights, strict=True))
    flat, _ = model.getParameters()
    assert model.numParameters() == flat.size == 79510
    assert pm.Tanh().numParameters() == 0
    assert pm.Sequential().numParameters() == 0


def test_errors_name_the_model():
    model = _mlp()
    with pytest.raises(ValueError, match=r"mlp\.summary: the forward on zeros of shape "
                                         r"\(1, 783\) failed"):
        model.summary((783,), printFn=lambda s: None)
    with pytest.raises(ValueError, match=r"mlp\.summary: inputShape must be a shape"):
        model.summary((784, 0))
    with pytest.raises(ValueError, match="inputShape must be a shape"):
        model.summary("784")
    # the failed forward left the model as it was
    assert model.isTraining() and model.output.size == 0
