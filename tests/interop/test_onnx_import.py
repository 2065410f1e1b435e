"""pm.loadONNX: models exported by torch.onnx.export and hand-built graphs of each supported
operator import and agree with ONNX Runtime on the same file; the imported model trains."""

import warnings

import numpy as np
import pytest
from gradcheck import assert_jacobian
from tolerance import assert_reduction_close

import pymodules as pm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F32 = np.float32
BATCHES = (1, 7)


# -- helpers ---------------------------------------------------------------------------------------
def vi(name, shape, elem=TensorProto.FLOAT):
    if shape is None:  # an output: its type is left to ONNX Runtime
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, elem, shape)


def make(nodes, inputs, outputs, inits=None, opset=17):
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types the outputs
    onnx.checker.check_model(model)
    return model


def save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return str(path)


def run_ort(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def agree(model, tmp_path, samples, k, magnitude=None, int_inputs=()):
    """The imported model's forward equals ONNX Runtime's at batches 1 and 7."""
    path = save(model, tmp_path)
    net = pm.loadONNX(path)
    assert isinstance(net, pm.Graph)
    rng = np.random.default_rng(0)
    names = [i.name for i in model.graph.input
             if i.name not in {t.name for t in model.graph.initializer}]
    for b in BATCHES:
        xs = []
        for name, shape in zip(names, samples, strict=True):
            # None marks the batch axis; without one it leads
            full = tuple(b if d is None else d for d in shape) if None in shape else \
                (b,) + shape
            if name in int_inputs:
                xs.append(rng.integers(0, int_inputs[name], full).astype(np.int64))
            else:
                xs.append(rng.standard_normal(full).astype(F32))
        refs = run_ort(path, dict(zip(names, xs, strict=True)))
        ys = net.forward(xs[0] if len(xs) == 1 else xs)
        ys = ys if isinstance(ys, list) else [ys]
        assert len(ys) == len(refs)
        for y, ref in zip(ys, refs, strict=True):
            assert y.shape == ref.shape
            m = np.abs(ref).max() + 1.0 if magnitude is None else magnitude
            assert_reduction_close(y, ref, F32, k=k, magnitude=m)
    return net


def rand(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


# -- operators, one hand-built graph each ----------------------------------------------------------
def _unary(op, **attrs):
    return (make([helper.make_node(op, ["x"], ["y"], name=f"{op}_0", **attrs)],
                 [vi("x", ["N", 3, 4])], [vi("y", None)]), [(3, 4)], 4)


def _chain(ops, shape=("N", 5), inits=None, sample=None, opset=17, k=8):
    """A graph x -> ops[0] -> ops[1] ...; ``ops`` are (op, extra inputs, attrs)."""
    nodes, prev = [], "x"
    for j, (op, extra, attrs) in enumerate(ops):
        out = "y" if j == len(ops) - 1 else f"t{j}"
        nodes.append(helper.make_node(op, [prev, *extra], [out], name=f"n{j}", **attrs))
        prev = out
    return (make(nodes, [vi("x", list(shape))], [vi("y", None)], inits, opset),
            [sample or tuple(shape[1:])], k)


def _lstm_like(op, n_gates, seq=5, i=3, h=4, dirs=1, **attrs):
    w, r = rand(dirs, n_gates * h, i, seed=2) * 0.5, rand(dirs, n_gates * h, h, seed=3) * 0.5
    b = rand(dirs, 2 * n_gates * h, seed=4) * 0.5
    node = helper.make_node(op, ["x", "W", "R", "B"], ["Y", "Yh"], name=op, hidden_size=h,
                            **attrs)
    return (make([node], [vi("x", [seq, "N", i])], [vi("Y", None), vi("Yh", None)],
                 {"W": w, "R": r, "B": b}), [(seq, None, i)], 40)


OPERATORS = {
    "Relu": lambda: _unary("Relu"),
    "Tanh": lambda: _unary("Tanh"),
    "Sigmoid": lambda: _unary("Sigmoid"),
    "LeakyRelu": lambda: _unary("LeakyRelu", alpha=0.2),
    "Elu": lambda: _unary("Elu", alpha=0.5),
    "Softplus": lambda: _unary("Softplus"),
    "Softsign": lambda: _unary("Softsign"),
    "Abs": lambda: _unary("Abs"),
    "Exp": lambda: _unary("Exp"),
    "Neg": lambda: _unary("Neg"),
    "Identity": lambda: _unary("Identity"),
    "HardSigmoid": lambda: _unary("HardSigmoid"),
    "HardSigmoid-alpha": lambda: _unary("HardSigmoid", alpha=0.3, beta=0.4),
    "Log-Sqrt-Reciprocal": lambda: _chain(
        [("Abs", [], {}), ("Add", ["one"], {}), ("Log", [], {}), ("Add", ["one"], {}),
         ("Sqrt", [], {}), ("Reciprocal", [], {}), ("Pow", ["two"], {})],
        inits={"one": np.array(1.0, F32), "two": np.array(2.0, F32)}),
    "Clip-ReLU6": lambda: _chain([("Clip", ["lo", "hi"], {})],
                                 inits={"lo": np.array(0.0, F32), "hi": np.array(6.0, F32)}),
    "Clip": lambda: _chain([("Clip", ["lo", "hi"], {})],
                           inits={"lo": np.array(-1.0, F32), "hi": np.array(0.5, F32)}),
    "PRelu": lambda: _chain([("PRelu", ["s"], {})], shape=("N", 3, 4, 4),
                            inits={"s": rand(3, 1, 1, seed=5)}),
    "Dropout": lambda: _chain([("Dropout", ["ratio"], {})],
                              inits={"ratio": np.array(0.3, F32)}),
    "Softmax": lambda: _chain([("Softmax", [], {"axis": -1})]),
    "Softmax-channels": lambda: _chain([("Softmax", [], {"axis": 1})], shape=("N", 3, 2, 2)),
    "Softmax-middle": lambda: _chain([("Softmax", [], {"axis": 1})], shape=("N", 3, 4)),
    "Softmax-opset11": lambda: _chain([("Softmax", [], {"axis": 1})], shape=("N", 3, 4),
                                      opset=11),
    "LogSoftmax": lambda: _chain([("LogSoftmax", [], {"axis": 1})]),
    "LogSoftmax-3d": lambda: _chain([("LogSoftmax", [], {"axis": -1})], shape=("N", 3, 4)),
    "Gemm": lambda: _chain([("Gemm", ["w", "b"], {"transB": 1, "alpha": 0.5, "beta": 2.0})],
                           inits={"w": rand(3, 5), "b": rand(3, seed=2)}),
    "Gemm-noTransB": lambda: _chain([("Gemm", ["w", "b"], {})],
                                    inits={"w": rand(5, 3), "b": rand(1, 3, seed=2)}),
    "MatMul-Add": lambda: _chain([("MatMul", ["w"], {}), ("Add", ["b"], {})],
                                 inits={"w": rand(5, 3), "b": rand(3, seed=2)}),
    "MatMul-3d": lambda: _chain([("MatMul", ["w"], {}), ("Add", ["b"], {})],
                                shape=("N", 4, 5), inits={"w": rand(5, 3), "b": rand(3)}),
    "MatMul": lambda: _chain([("MatMul", ["w"], {})], inits={"w": rand(5, 3)}),
    "Conv-groups-pads": lambda: _chain(
        [("Conv", ["w", "b"], {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]})],
        shape=("N", 4, 7, 6), inits={"w": rand(6, 2, 3, 3), "b": rand(6, seed=2)}, k=40),
    "Conv-same-nobias": lambda: _chain(
        [("Conv", ["w"], {"auto_pad": "SAME_UPPER", "strides": [2, 2]})],
        shape=("N", 2, 7, 6), inits={"w": rand(3, 2, 3, 3)}, k=40),
    "Conv-dilated": lambda: _chain(
        [("Conv", ["w", "b"], {"dilations": [2, 1], "pads": [2, 1, 2, 1]})],
        shape=("N", 2, 7, 6), inits={"w": rand(3, 2, 3, 3), "b": rand(3)}, k=40),
    "Conv-1d": lambda: _chain([("Conv", ["w", "b"], {"pads": [1, 1], "strides": [2]})],
                              shape=("N", 2, 9), inits={"w": rand(4, 2, 3), "b": rand(4)}),
    "Conv-3d": lambda: _chain([("Conv", ["w", "b"], {"pads": [1, 0, 1, 1, 0, 1]})],
                              shape=("N", 2, 4, 5, 5),
                              inits={"w": rand(3, 2, 2, 3, 3), "b": rand(3)}, k=80),
    "ConvTranspose": lambda: _chain(
        [("ConvTranspose", ["w", "b"], {"strides": [2, 2], "pads": [1, 1, 1, 1],
                                        "output_padding": [1, 0]})],
        shape=("N", 4, 3, 4), inits={"w": rand(4, 3, 3, 3), "b": rand(3)}, k=40),
    "ConvTranspose-groups-1d": lambda: _chain(
        [("ConvTranspose", ["w"], {"strides": [2], "group": 2})],
        shape=("N", 4, 5), inits={"w": rand(4, 1, 3)}, k=40),
    "ConvTranspose-3d": lambda: _chain(
        [("ConvTranspose", ["w", "b"], {"strides": [1, 2, 2]})],
        shape=("N", 2, 3, 3, 3), inits={"w": rand(2, 3, 2, 2, 2), "b": rand(3)}, k=40),
    "MaxPool": lambda: _chain([("MaxPool", [], {"kernel_shape": [3, 2], "strides": [2, 2],
                                                "pads": [1, 1, 1, 1], "ceil_mode": 1})],
                              shape=("N", 2, 7, 6)),
    "MaxPool-1d": lambda: _chain([("MaxPool", [], {"kernel_shape": [2]})],
                                 shape=("N", 3, 8)),
    "MaxPool-3d": lambda: _chain([("MaxPool", [], {"kernel_shape": [2, 2, 2],
                                                   "strides": [2, 2, 2]})],
                                 shape=("N", 2, 4, 4, 6)),
    "AveragePool": lambda: _chain([("AveragePool", [], {"kernel_shape": [3, 3],
                                                        "pads": [1, 1, 1, 1]})],
                                  shape=("N", 2, 5, 6)),
    "AveragePool-include": lambda: _chain(
        [("AveragePool", [], {"kernel_shape": [3, 3], "strides": [2, 2],
                              "pads": [1, 1, 1, 1], "count_include_pad": 1})],
        shape=("N", 2, 5, 6)),
    "AveragePool-3d": lambda: _chain([("AveragePool", [], {"kernel_shape": [2, 2, 2]})],
                                     shape=("N", 2, 3, 4, 4)),
    "GlobalAveragePool": lambda: _chain([("GlobalAveragePool", [], {})],
                                        shape=("N", 3, 4, 5), k=20),
    "GlobalMaxPool": lambda: _chain([("GlobalMaxPool", [], {})], shape=("N", 3, 4, 5)),
    "BatchNormalization": lambda: _chain(
        [("BatchNormalization", ["s", "b", "m", "v"], {"epsilon": 1e-3})],
        shape=("N", 3, 4, 4),
        inits={"s": rand(3), "b": rand(3, seed=2), "m": rand(3, seed=3),
               "v": np.abs(rand(3, seed=4)) + 0.5}),
    "BatchNormalization-2d": lambda: _chain(
        [("BatchNormalization", ["s", "b", "m", "v"], {})], shape=("N", 3),
        inits={"s": rand(3), "b": rand(3, seed=2), "m": rand(3, seed=3),
               "v": np.abs(rand(3, seed=4)) + 0.5}),
    "BatchNormalization-3d": lambda: _chain(
        [("BatchNormalization", ["s", "b", "m", "v"], {})], shape=("N", 3, 5),
        inits={"s": rand(3), "b": rand(3, seed=2), "m": rand(3, seed=3),
               "v": np.abs(rand(3, seed=4)) + 0.5}),
    "Reshape": lambda: _chain([("Reshape", ["s"], {})], shape=("N", 3, 4),
                              inits={"s": np.array([0, 2, -1], np.int64)}),
    "Reshape-batch-first": lambda: _chain([("Reshape", ["s"], {})], shape=("N", 3, 4),
                                          inits={"s": np.array([-1, 12], np.int64)}),
    "Flatten": lambda: _chain([("Flatten", [], {"axis": 1})], shape=("N", 2, 3, 2)),
    "Flatten-2": lambda: _chain([("Flatten", [], {"axis": 2})], shape=("N", 2, 3, 2)),
    "Transpose": lambda: _chain([("Transpose", [], {"perm": [0, 2, 3, 1]})],
                                shape=("N", 2, 3, 4)),
    "Transpose-batch": lambda: _chain([("Transpose", [], {"perm": [2, 0, 1]})],
                                      shape=("N", 2, 3)),
    "Squeeze-Unsqueeze": lambda: _chain([("Unsqueeze", ["a"], {}), ("Squeeze", ["b"], {})],
                                        shape=("N", 2, 3),
                                        inits={"a": np.array([1, -1], np.int64),
                                               "b": np.array([4], np.int64)}),
    "Squeeze-opset11": lambda: _chain([("Unsqueeze", [], {"axes": [2]}),
                                       ("Squeeze", [], {"axes": [2]})],
                                      shape=("N", 2, 3), opset=11),
    "Split-opset11": lambda: (make([helper.make_node("Split", ["x"], ["p", "q"], name="split",
                                                      axis=1, split=[1, 4]),
                                     helper.make_node("Concat", ["q", "p"], ["y"], name="cat",
                                                      axis=1)],
                                    [vi("x", ["N", 5])], [vi("y", None)], opset=11),
                               [(5,)], 1),
    "Split-even": lambda: (make([helper.make_node("Split", ["x"], ["p", "q"], name="split",
                                                  axis=-1),
                                 helper.make_node("Sub", ["q", "p"], ["y"], name="sub")],
                                [vi("x", ["N", 3, 4])], [vi("y", None)]), [(3, 4)], 1),
    "ReduceMean": lambda: _chain([("ReduceMean", [], {"axes": [1], "keepdims": 0})],
                                 shape=("N", 3, 4), opset=17),
    "ReduceMean-keep-2axes": lambda: _chain([("ReduceMean", [], {"axes": [2, 3]})],
                                            shape=("N", 3, 4, 2), opset=17),
    "ReduceSum": lambda: _chain([("ReduceSum", ["a"], {"keepdims": 1})], shape=("N", 3, 4),
                                inits={"a": np.array([-1], np.int64)}),
    "ReduceMax": lambda: _chain([("ReduceMax", [], {"axes": [1], "keepdims": 1})],
                                shape=("N", 3, 4)),
    "ReduceMin": lambda: _chain([("ReduceMin", ["a"], {"keepdims": 0})], shape=("N", 3, 4),
                                inits={"a": np.array([2], np.int64)}, opset=18),
    "LRN": lambda: _chain([("LRN", [], {"size": 3, "alpha": 0.01, "beta": 0.6,
                                        "bias": 1.5})], shape=("N", 5, 3, 3)),
    "Pad": lambda: _chain([("Pad", ["p", "v"], {})], shape=("N", 2, 3, 4),
                          inits={"p": np.array([0, 1, 0, 2, 0, 0, 1, 0], np.int64),
                                 "v": np.array(0.5, F32)}),
    "Pad-axes-opset18": lambda: _chain([("Pad", ["p", "", "a"], {})], shape=("N", 2, 3),
                                       inits={"p": np.array([1, 2], np.int64),
                                              "a": np.array([-1], np.int64)}, opset=18),
    "Resize-nearest": lambda: _chain([("Resize", ["", "s"], {"mode": "nearest"})],
                                     shape=("N", 2, 3, 4),
                                     inits={"s": np.array([1, 1, 2, 3], F32)}),
    "Resize-sizes-1d": lambda: _chain(
        [("Resize", ["", "", "z"], {"mode": "nearest",
                                    "coordinate_transformation_mode": "asymmetric",
                                    "nearest_mode": "floor", "axes": [2]})],
        shape=("N", 2, 3), inits={"z": np.array([6], np.int64)}, opset=18),
    "Resize-3d": lambda: _chain([("Resize", ["", "s"], {"mode": "nearest"})],
                                shape=("N", 1, 2, 2, 3),
                                inits={"s": np.array([1, 1, 2, 1, 2], F32)}),
    "Slice": lambda: _chain([("Slice", ["s", "e", "a"], {})], shape=("N", 6, 5),
                            inits={"s": np.array([1, -4], np.int64),
                                   "e": np.array([2 ** 63 - 1, -1], np.int64),
                                   "a": np.array([1, 2], np.int64)}),
    "Slice-unknown-length": lambda: _chain([("Slice", ["s", "e", "a"], {})],
                                           shape=("N", "L"), sample=(6,),
                                           inits={"s": np.array([1], np.int64),
                                                  "e": np.array([-1], np.int64),
                                                  "a": np.array([1], np.int64)}),
    "Gather-select": lambda: _chain([("Gather", ["i"], {"axis": 1})], shape=("N", 4, 3),
                                    inits={"i": np.array(-1, np.int64)}),
    "Add-scalar": lambda: _chain([("Add", ["c"], {})], inits={"c": np.array(1.5, F32)}),
    "Sub-scalar": lambda: _chain([("Sub", ["c"], {})], inits={"c": np.array(1.5, F32)}),
    "Mul-scalar": lambda: _chain([("Mul", ["c"], {})], inits={"c": np.array([2.5], F32)}),
    "Div-scalar": lambda: _chain([("Div", ["c"], {})], inits={"c": np.array(4.0, F32)}),
    "Add-channels": lambda: _chain([("Add", ["c"], {})], shape=("N", 3, 2, 2),
                                   inits={"c": rand(3, 1, 1)}),
    "Sub-vector": lambda: _chain([("Sub", ["c"], {})], inits={"c": rand(5)}),
    "Mul-channels": lambda: _chain([("Mul", ["c"], {})], shape=("N", 3, 2, 2),
                                   inits={"c": rand(1, 3, 1, 1)}),
    "Div-vector": lambda: _chain([("Div", ["c"], {})],
                                 inits={"c": np.abs(rand(5)) + 0.5}),
    "Constant": lambda: (make([helper.make_node("Constant", [], ["c"], name="c",
                                                value=numpy_helper.from_array(rand(5))),
                               helper.make_node("Mul", ["x", "c"], ["y"], name="m")],
                              [vi("x", ["N", 5])], [vi("y", None)]), [(5,)], 2),
    "LSTM": lambda: _lstm_like("LSTM", 4),
    "GRU": lambda: _lstm_like("GRU", 3),
    "RNN": lambda: _lstm_like("RNN", 1),
    "RNN-relu": lambda: _lstm_like("RNN", 1, activations=["Relu"]),
    "LSTM-bidirectional": lambda: _lstm_like("LSTM", 4, dirs=2, direction="bidirectional"),
    "GRU-bidirectional": lambda: _lstm_like("GRU", 3, dirs=2, direction="bidirectional"),
}


def _two_inputs(op, shape_b=("N", 5)):
    return make([helper.make_node(op, ["a", "b"], ["y"], name=op)],
                [vi("a", ["N", 5]), vi("b", list(shape_b))], [vi("y", None)])


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operator_agrees_with_onnxruntime(name, tmp_path):
    model, samples, k = OPERATORS[name]()
    agree(model, tmp_path, samples, k)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"])
def test_two_tensors_make_table_layers(op, tmp_path):
    model = _two_inputs(op)
    path = save(model, tmp_path)
    net = pm.loadONNX(path)
    rng = np.random.default_rng(3)
    for b in BATCHES:
        a, c = rng.standard_normal((2, b, 5)).astype(F32)
        c = c + np.sign(c) if op == "Div" else c
        (ref,) = run_ort(path, {"a": a, "b": c})
        np.testing.assert_allclose(net.forward([a, c]), ref, rtol=4 * 1.2e-7, atol=1e-7)


def test_constant_first_sub_and_div(tmp_path):
    c = np.abs(rand(5)) + 1.0
    model = make([helper.make_node("Sub", ["c", "x"], ["t"], name="s"),
                  helper.make_node("Div", ["c", "t"], ["y"], name="d")],
                 [vi("x", ["N", 5])], [vi("y", None)], {"c": c})
    path = save(model, tmp_path)
    net = pm.loadONNX(path)
    x = -np.abs(rand(4, 5, seed=3))
    (ref,) = run_ort(path, {"x": x})
    np.testing.assert_allclose(net.forward(x), ref, rtol=1e-6)


def test_concat_split_and_shape_arithmetic(tmp_path):
    # x.view(x.size(0), -1) as torch writes it, then a split and a concat back
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="batch", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="n1"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="flat"),
        helper.make_node("Split", ["flat", "sizes"], ["p", "q"], name="split", axis=1),
        helper.make_node("Relu", ["q"], ["rq"], name="relu"),
        helper.make_node("Concat", ["rq", "p"], ["y"], name="concat", axis=1),
    ]
    model = make(nodes, [vi("x", ["N", 2, 3])], [vi("y", None)],
                 {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
                  "minus1": np.array([-1], np.int64), "sizes": np.array([2, 4], np.int64)})
    net = agree(model, tmp_path, [(2, 3)], 1)
    kinds = {type(m).__name__ for m in net.modules}
    assert "InferReshape" in kinds and "JoinTable" in kinds


def test_embedding_gather_becomes_lookup_table(tmp_path):
    table = rand(10, 4)
    model = make([helper.make_node("Gather", ["table", "ids"], ["e"], name="embed", axis=0),
                  helper.make_node("Tanh", ["e"], ["y"], name="tanh")],
                 [vi("ids", ["N", 6], TensorProto.INT64)], [vi("y", None)], {"table": table})
    net = agree(model, tmp_path, [(6,)], 1, int_inputs={"ids": 10})
    assert any(isinstance(m, pm.LookupTable) for m in net.modules)


def test_lstm_with_layout_1_and_zero_initial_state(tmp_path):
    # ONNX Runtime has no batch-first LSTM: compare with the same weights in layout 0.
    h, i = 4, 3
    w, r, b = rand(1, 4 * h, i), rand(1, 4 * h, h, seed=2), rand(1, 8 * h, seed=3)
    inits = {"W": w, "R": r, "B": b, "h0": np.zeros((1, 1, h), F32)}
    first = make([helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0"], ["Y", "Yh"],
                                   name="lstm", hidden_size=h, layout=1)],
                 [vi("x", ["N", 5, i])], [vi("Y", None), vi("Yh", None)], inits)
    net = pm.loadONNX(save(first, tmp_path, "first.onnx"))
    del inits["h0"]
    model, _, _ = _lstm_like("LSTM", 4)
    ref_path = save(make([helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y", "Yh"],
                                           name="lstm", hidden_size=h)],
                         [vi("x", [5, "N", i])], [vi("Y", None), vi("Yh", None)], inits),
                    tmp_path, "ref.onnx")
    x = rand(7, 5, i, seed=4)
    y, yh = net.forward(x)
    ref_y, ref_yh = run_ort(ref_path, {"x": np.ascontiguousarray(x.transpose(1, 0, 2))})
    assert y.shape == (7, 5, 1, h) and yh.shape == (7, 1, h)
    assert_reduction_close(y, ref_y.transpose(2, 0, 1, 3), F32, k=40, magnitude=2.0)
    assert_reduction_close(yh, ref_yh.transpose(1, 0, 2), F32, k=40, magnitude=2.0)


# -- models exported by torch ----------------------------------------------------------------------
def _export(torch, module, sample, tmp_path, name="t.onnx", **options):
    path = str(tmp_path / name)
    module.eval()
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(sample),), path, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          opset_version=17, dynamo=False, **options)
    return path


def _torch_agrees(torch, module, sample_shape, tmp_path, k, **options):
    torch.manual_seed(0)
    path = _export(torch, module, rand(2, *sample_shape), tmp_path, **options)
    net = pm.loadONNX(path)
    for b in BATCHES:
        x = rand(b, *sample_shape, seed=b)
        (ref,) = run_ort(path, {"x": x})
        y = net.forward(x)
        assert y.shape == ref.shape
        assert_reduction_close(y, ref, F32, k=k, magnitude=np.abs(ref).max() + 1.0)
    return net, path


def _mlp(torch):
    nn = torch.nn
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 10), nn.LogSoftmax(dim=1))


def _lenet(torch):
    nn = torch.nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
            self.f1, self.f2, self.f3 = nn.Linear(400, 120), nn.Linear(120, 84), \
                nn.Linear(84, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.nn.functional.avg_pool2d(torch.tanh(self.c2(x)), 2)
            x = x.view(x.size(0), -1)
            x = torch.relu(self.f2(torch.relu(self.f1(x))))
            return torch.log_softmax(self.f3(x), dim=1)
    return LeNet()


def _resblock(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            for bn in (self.b1, self.b2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.data.uniform_(0.5, 1.5)
                bn.bias.data.uniform_(-0.5, 0.5)

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + x)
    return Block()


def _lstm_classifier(torch):
    nn = torch.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 8, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1, :])
    return Classifier()


def test_torch_mlp(torch, tmp_path):
    _torch_agrees(torch, _mlp(torch), (20,), tmp_path, k=60)


def test_torch_lenet(torch, tmp_path):
    net, _ = _torch_agrees(torch, _lenet(torch), (1, 28, 28), tmp_path, k=800)
    kinds = {type(m).__name__ for m in net.modules}
    assert {"SpatialConvolution", "SpatialMaxPooling", "SpatialAveragePooling",
            "Linear"} <= kinds


@pytest.mark.parametrize("folding", [True, False])
def test_torch_resnet_block(torch, tmp_path, folding):
    # With constant folding the exporter merges each batch norm into its convolution.
    net, _ = _torch_agrees(torch, _resblock(torch), (4, 6, 6), tmp_path, k=100,
                           do_constant_folding=folding)
    kinds = [type(m).__name__ for m in net.modules]
    assert "CAddTable" in kinds
    assert kinds.count("SpatialBatchNormalization") == (0 if folding else 2)


def test_torch_bidirectional_lstm(torch, tmp_path):
    class Bi(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(6, 5, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.lstm(x)[0]
    net, _ = _torch_agrees(torch, Bi(), (4, 6), tmp_path, k=100)
    assert any(isinstance(m, pm.BiRecurrent) for m in net.modules)


def test_torch_conv1d_upsample_model(torch, tmp_path):
    nn = torch.nn
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Upsample(scale_factor=2), nn.MaxPool1d(2), nn.Dropout(0.2),
                          nn.Flatten(), nn.Linear(32, 5), nn.Softmax(dim=1))
    _torch_agrees(torch, model, (3, 8), tmp_path, k=60, do_constant_folding=False)


def test_torch_cnn_upsample_global_pool(torch, tmp_path):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), nn.ELU(),
                          nn.Upsample(scale_factor=2), nn.ConvTranspose2d(4, 3, 2, stride=2),
                          nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(3, 4), nn.Hardtanh(-0.5, 0.5))
    _torch_agrees(torch, model, (2, 6, 6), tmp_path, k=60)


def test_torch_lstm_classifier(torch, tmp_path):
    net, _ = _torch_agrees(torch, _lstm_classifier(torch), (5, 6), tmp_path, k=100)
    assert any(isinstance(m, pm.Recurrent) for m in net.modules)


def test_imported_model_saves_and_loads(torch, tmp_path):
    net, _ = _torch_agrees(torch, _lenet(torch), (1, 28, 28), tmp_path, k=800)
    net.save(str(tmp_path / "lenet.pm"))
    back = pm.load(str(tmp_path / "lenet.pm"))
    x = rand(3, 1, 28, 28, seed=5)
    np.testing.assert_array_equal(back.forward(x), net.forward(x))


# -- training --------------------------------------------------------------------------------------
def test_imported_model_trains(torch, tmp_path):
    torch.manual_seed(0)
    path = _export(torch, _mlp(torch), rand(2, 20), tmp_path)
    net = pm.loadONNX(path).training()
    weights, grads = net.parameters()
    assert len(weights) == 6 and [w.shape for w in weights[:2]] == [(16, 20), (16,)]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 20)).astype(F32)
    labels = rng.integers(0, 10, 32)
    crit = pm.ClassNLLCriterion()
    losses = []
    for _ in range(20):
        net.zeroGradParameters()
        losses.append(crit.forward(net.forward(x), labels))
        net.backward(x, crit.backward(net.output, labels))
        for w, g in zip(weights, grads, strict=True):
            w -= 0.5 * g
    assert losses[-1] < 0.7 * losses[0]


def test_gradients_match_finite_differences_float64(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"],
                              name="bn"),
             helper.make_node("Tanh", ["n"], ["t"], name="tanh"),
             helper.make_node("Flatten", ["t"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    model = make(nodes, [vi("x", ["N", 2, 3, 3])], [vi("y", None)],
                 {"w": rand(3, 2, 3, 3), "b": rand(3), "s": rand(3), "bb": rand(3),
                  "m": rand(3), "v": np.abs(rand(3)) + 1, "fw": rand(4, 27), "fb": rand(4)})
    net = pm.loadONNX(save(model, tmp_path), dtype=np.float64)
    assert all(w.dtype == np.float64 for w in net.parameters()[0])
    x = np.random.default_rng(2).standard_normal((2, 2, 3, 3))
    assert_jacobian(net, x, wrt="input")
    assert_jacobian(net, x, wrt="parameters")


def test_gradients_through_shape_and_table_layers_float64(tmp_path):
    nodes = [helper.make_node("Mul", ["x", "scale"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "shift"], ["a"], name="shift"),
             helper.make_node("Split", ["a", "sizes"], ["p", "q"], name="split", axis=2),
             helper.make_node("Mul", ["p", "q"], ["pq"], name="prod"),
             helper.make_node("Sigmoid", ["q"], ["sq"], name="sig"),
             helper.make_node("Concat", ["pq", "sq"], ["c"], name="cat", axis=2),
             helper.make_node("Transpose", ["c"], ["t"], name="tr", perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["r"], name="flat"),
             helper.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1)]
    model = make(nodes, [vi("x", ["N", 3, 4])], [vi("y", None)],
                 {"scale": rand(3, 1), "shift": rand(4, seed=2),
                  "sizes": np.array([2, 2], np.int64), "shape": np.array([0, -1], np.int64)})
    net = pm.loadONNX(save(model, tmp_path), dtype=np.float64)
    assert {"CMul", "CAdd", "CMulTable", "JoinTable", "Narrow", "Transpose",
            "InferReshape"} <= {type(m).__name__ for m in net.modules}
    x = np.random.default_rng(2).standard_normal((2, 3, 4))
    assert_jacobian(net, x, wrt="input")
    assert_jacobian(net, x, wrt="parameters")


def test_gradients_of_imported_lstm_float64(tmp_path):
    model, _, _ = _lstm_like("LSTM", 4, seq=3)
    net = pm.loadONNX(save(model, tmp_path), dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((3, 2, 3))
    assert_jacobian(net, x, wrt="input")
    assert_jacobian(net, x, wrt="parameters")


# -- refusals --------------------------------------------------------------------------------------
def test_unsupported_operator_names_op_and_node(tmp_path):
    model = make([helper.make_node("Relu", ["x"], ["r"], name="first"),
                  helper.make_node("TopK", ["r", "k"], ["v", "i"], name="pick_best", axis=1)],
                 [vi("x", ["N", 5])], [vi("v", None), vi("i", None, TensorProto.INT64)],
                 {"k": np.array([2], np.int64)})
    with pytest.raises(NotImplementedError, match=r"TopK node 'pick_best'"):
        pm.loadONNX(save(model, tmp_path))


def test_gru_linear_before_reset_is_refused(tmp_path):
    model, _, _ = _lstm_like("GRU", 3, linear_before_reset=1)
    with pytest.raises(NotImplementedError, match=r"GRU node 'GRU'.*linear_before_reset"):
        pm.loadONNX(save(model, tmp_path))


def test_torch_gru_is_refused(torch, tmp_path):
    class G(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return self.gru(x)[0]
    path = _export(torch, G(), rand(2, 5, 3), tmp_path)
    with pytest.raises(NotImplementedError, match="linear_before_reset"):
        pm.loadONNX(path)


def test_malformed_node_names_the_node(tmp_path):
    model = make([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv1")],
                 [vi("x", ["N", 2, 5, 5])], [vi("y", None)],
                 {"w": rand(3, 2, 3, 3), "b": rand(3)})
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(rand(4), "b"))
    with pytest.raises(ValueError, match=r"Conv node 'conv1'"):
        pm.loadONNX(save(model, tmp_path))


def test_initializer_of_the_wrong_size_is_refused(tmp_path):
    model, _, _ = OPERATORS["Gemm"]()
    w = model.graph.initializer[0]
    w.raw_data = w.raw_data[:-4]
    with pytest.raises(ValueError, match=r"tensor 'w' of shape \[3, 5\] holds 56 bytes"):
        pm.loadONNX(save(model, tmp_path))
    w.ClearField("raw_data")
    w.float_data.extend([1.0] * 7)
    with pytest.raises(ValueError, match=r"tensor 'w' of shape \[3, 5\]"):
        pm.loadONNX(save(model, tmp_path))


def test_a_file_above_the_size_limit_is_refused(tmp_path, monkeypatch):
    from pymodules.interop import onnx_import

    model, _, _ = OPERATORS["Gemm"]()
    path = save(model, tmp_path)
    monkeypatch.setattr(onnx_import, "_MAX_BYTES", 64)
    with pytest.raises(ValueError, match=r"bytes, more than the 64"):
        pm.loadONNX(path)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ValueError, match="not an ONNX model"):
        pm.loadONNX(str(bad))


def _external_model(tmp_path, location):
    w = rand(3, 5)
    tensor = numpy_helper.from_array(w, "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"),
                       ("length", str(w.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc",
                                                transB=1)],
                              "g", [vi("x", ["N", 5])], [vi("y", None)], initializer=[tensor])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w


def test_external_data_inside_the_folder_loads(tmp_path):
    model, w = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(w.tobytes())
    net = pm.loadONNX(save(model, tmp_path))
    x = rand(2, 5, seed=3)
    np.testing.assert_allclose(net.forward(x), x @ w.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    sub = tmp_path / "model"
    sub.mkdir()
    model, w = _external_model(sub, location)
    (tmp_path / "outside.bin").write_bytes(w.tobytes())
    with pytest.raises(ValueError, match="outside the model's folder"):
        pm.loadONNX(save(model, sub))


def test_external_data_of_the_wrong_size_is_refused(tmp_path):
    model, w = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(w.tobytes()[:-4])
    with pytest.raises(ValueError, match="outside it"):
        pm.loadONNX(save(model, tmp_path))


def test_fsspec_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    model, samples, _ = OPERATORS["Gemm"]()
    with fsspec.open("memory://onnx_import/m.onnx", "wb") as f:
        f.write(model.SerializeToString())
    net = pm.loadONNX("memory://onnx_import/m.onnx")
    local = pm.loadONNX(save(model, tmp_path))
    x = rand(3, 5)
    np.testing.assert_array_equal(net.forward(x), local.forward(x))


def test_import_pymodules_does_not_import_onnx():
    import subprocess
    import sys

    code = "import sys, pymodules; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
