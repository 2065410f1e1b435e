"""ONNX export: each covered class, exported to a file, passes onnx.checker and ONNX Runtime
reproduces ``forward`` in evaluation mode at batch 1 and batch 5 (the batch axis is dynamic)."""

import numpy as np
import pytest

import pymodules as pm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tolerance import reduction_tol  # noqa: E402


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _sample(kind, shape, rng, dtype):
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape).astype(dtype)
    if kind.startswith("indices"):
        return rng.integers(0, int(kind.split(":")[1]), shape).astype(dtype)
    if kind == "wide":
        return (rng.standard_normal(shape) * 15).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _inputs(shape, batch, kind, rng, dtype):
    if isinstance(shape, list) and shape and isinstance(shape[0], (list, tuple)):
        return [_inputs(s, batch, kind, rng, dtype) for s in shape]
    return _sample(kind, (batch, *shape), rng, dtype)


def _flat(v):
    return [a for x in v for a in _flat(x)] if isinstance(v, list) else [v]


def _feeds(x):
    arrays = _flat(x)
    if not isinstance(x, list):
        return {"input": np.asarray(x, np.float32)}
    return {f"input{i}": np.asarray(a, np.float32) for i, a in enumerate(arrays)}


def check(model, shape, tmp_path, k=1, kind="normal", opset=17, dtype=np.float32):
    """Export ``model``, check the file, and compare ONNX Runtime with forward."""
    if dtype == np.float64:
        model.double()
    model.evaluate()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "model.onnx"
    assert model.saveONNX(str(path), shape, opset=opset) is model
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = _session(path)
    rng = np.random.default_rng(7)
    for batch in (1, 5):
        x = _inputs(shape, batch, kind, rng, dtype)
        got = session.run(None, _feeds(x))
        expected = _flat(model.forward(x))
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert g.shape == e.shape, (g.shape, e.shape)
            e = np.asarray(e, np.float64)
            rtol, atol = reduction_tol(np.float32, k, 1 + np.max(np.abs(e), initial=0))
            np.testing.assert_allclose(g, e, rtol=rtol, atol=float(atol))
    return proto


def _lstm_recurrent(cell):
    return pm.Recurrent().add(cell)


def _running(bn):
    rng = np.random.default_rng(3)
    bn.runningMean[:] = rng.standard_normal(bn.runningMean.shape)
    bn.runningVar[:] = rng.uniform(0.5, 2.0, bn.runningVar.shape)
    if bn.weight is not None:
        bn.bias[:] = rng.standard_normal(bn.bias.shape)
    return bn


def _table(*branches, merge):
    ct = pm.ConcatTable()
    for b in branches:
        ct.add(b)
    return pm.Sequential(ct, merge)


def _two_linear(merge, n=4):
    return _table(pm.Linear(n, 3), pm.Linear(n, 3), merge=merge)


def _graph_two_in_two_out():
    a, c = pm.Input(), pm.Input()
    h1 = pm.Linear(4, 5)(a)
    h2 = pm.Linear(3, 5)(c)
    s = pm.CAddTable()(h1, h2)
    t = pm.Tanh()(s)
    j = pm.JoinTable(1)(t, h2)
    return pm.Graph([a, c], [j, t])


def _peephole():
    cell = pm.LSTMPeephole(4, 5)
    rng = np.random.default_rng(5)
    for w in (cell.peepholeI, cell.peepholeF, cell.peepholeO):
        w[:] = rng.standard_normal(w.shape)
    return pm.Recurrent().add(cell)


# (id, factory, per-sample input shape, reduction length, input kind)
CASES = [
    ("Linear", lambda: pm.Linear(6, 4), (6,), 6, "normal"),
    ("Linear-nobias", lambda: pm.Linear(6, 4, withBias=False), (6,), 6, "normal"),
    ("MLP", lambda: pm.Sequential(pm.Linear(20, 16), pm.ReLU(), pm.Linear(16, 10),
                                  pm.LogSoftMax()), (20,), 60, "normal"),
    ("ReLU", pm.ReLU, (7,), 1, "normal"),
    ("Threshold", lambda: pm.Threshold(0.5, -2.0), (7,), 1, "normal"),
    ("HardTanh", lambda: pm.HardTanh(-0.5, 0.7), (7,), 1, "normal"),
    ("ReLU6", pm.ReLU6, (7,), 1, "wide"),
    ("Clamp", lambda: pm.Clamp(-1.0, 1.5), (7,), 1, "normal"),
    ("LeakyReLU", lambda: pm.LeakyReLU(0.1), (7,), 1, "normal"),
    ("ELU", lambda: pm.ELU(0.7), (7,), 1, "normal"),
    ("Tanh", pm.Tanh, (7,), 1, "normal"),
    ("Sigmoid", pm.Sigmoid, (7,), 1, "normal"),
    ("HardSigmoid", pm.HardSigmoid, (7,), 1, "wide"),
    ("SoftPlus", pm.SoftPlus, (7,), 1, "wide"),
    ("SoftPlus-beta", lambda: pm.SoftPlus(2.0), (7,), 1, "wide"),
    ("SoftSign", pm.SoftSign, (7,), 1, "normal"),
    ("Abs", pm.Abs, (7,), 1, "normal"),
    ("Power", lambda: pm.Power(2.5, 0.5, 1.0), (7,), 1, "positive"),
    ("Square", pm.Square, (7,), 1, "normal"),
    ("Sqrt", pm.Sqrt, (7,), 1, "positive"),
    ("Exp", pm.Exp, (7,), 1, "normal"),
    ("Log", pm.Log, (7,), 1, "positive"),
    ("PReLU-shared", pm.PReLU, (3, 4, 4), 1, "normal"),
    ("PReLU-channels", lambda: pm.PReLU(3), (3, 4, 4), 1, "normal"),
    ("PReLU-features", lambda: pm.PReLU(5), (5,), 1, "normal"),
    ("SoftMax", pm.SoftMax, (7,), 7, "normal"),
    ("SoftMax-images", pm.SoftMax, (3, 4, 4), 3, "normal"),
    ("SoftMin", pm.SoftMin, (7,), 7, "normal"),
    ("LogSoftMax", pm.LogSoftMax, (7,), 7, "normal"),
    ("LogSigmoid", pm.LogSigmoid, (7,), 1, "wide"),
    ("TanhShrink", pm.TanhShrink, (7,), 1, "normal"),
    ("SoftShrink", lambda: pm.SoftShrink(0.3), (7,), 1, "normal"),
    ("HardShrink", lambda: pm.HardShrink(0.3), (7,), 1, "normal"),
    ("BinaryThreshold", lambda: pm.BinaryThreshold(0.1), (7,), 1, "normal"),
    ("RReLU", pm.RReLU, (7,), 1, "normal"),
    ("Dropout", lambda: pm.Dropout(0.3), (7,), 1, "normal"),
    ("Dropout-noscale", lambda: pm.Dropout(0.3, scale=False), (7,), 1, "normal"),
    ("SpatialDropout1D", lambda: pm.SpatialDropout1D(0.25), (4, 3), 1, "normal"),
    ("SpatialDropout2D", lambda: pm.SpatialDropout2D(0.25), (3, 4, 4), 1, "normal"),
    ("GaussianNoise", lambda: pm.GaussianNoise(0.5), (7,), 1, "normal"),
    ("GaussianDropout", lambda: pm.GaussianDropout(0.5), (7,), 1, "normal"),
    ("Masking", lambda: pm.Masking(1.0), (4, 3), 1, "indices:2"),
    ("BatchNormalization", lambda: _running(pm.BatchNormalization(5)), (5,), 2, "normal"),
    ("BatchNormalization-noaffine",
     lambda: _running(pm.BatchNormalization(5, affine=False)), (5,), 2, "normal"),
    ("SpatialBatchNormalization", lambda: _running(pm.SpatialBatchNormalization(3)),
     (3, 4, 4), 2, "normal"),
    ("SpatialBatchNormalization-NHWC",
     lambda: _running(pm.SpatialBatchNormalization(3, dataFormat="NHWC")), (4, 4, 3), 2,
     "normal"),
    ("LayerNormalization", lambda: pm.LayerNormalization(6), (4, 6), 12, "normal"),
    ("Normalize-2", lambda: pm.Normalize(2.0), (6,), 6, "normal"),
    ("Normalize-1-images", lambda: pm.Normalize(1.0), (3, 4, 4), 3, "normal"),
    ("Normalize-inf", lambda: pm.Normalize(float("inf")), (6,), 6, "normal"),
    ("SpatialCrossMapLRN", lambda: pm.SpatialCrossMapLRN(3, 0.5, 0.75, 2.0), (5, 4, 4), 3,
     "normal"),
    ("LookupTable", lambda: pm.LookupTable(10, 4), (6,), 1, "indices:10"),
    ("LookupTable-maxNorm", lambda: pm.LookupTable(10, 4, maxNorm=1.0), (6,), 4,
     "indices:10"),
    ("SpatialConvolution", lambda: pm.SpatialConvolution(3, 4, 3, 3), (3, 8, 8), 27,
     "normal"),
    ("SpatialConvolution-stride-pad",
     lambda: pm.SpatialConvolution(3, 4, 3, 2, 2, 2, 1, 1), (3, 9, 8), 27, "normal"),
    ("SpatialConvolution-groups", lambda: pm.SpatialConvolution(4, 6, 3, 3, nGroup=2),
     (4, 6, 6), 18, "normal"),
    ("SpatialConvolution-same", lambda: pm.SpatialConvolution(3, 4, 3, 3, 2, 2, -1, -1),
     (3, 7, 8), 27, "normal"),
    ("SpatialConvolution-nobias",
     lambda: pm.SpatialConvolution(3, 4, 2, 2, withBias=False), (3, 5, 5), 12, "normal"),
    ("SpatialDilatedConvolution",
     lambda: pm.SpatialDilatedConvolution(3, 4, 3, 3, 1, 1, 2, 2, 2, 2), (3, 9, 9), 27,
     "normal"),
    ("SpatialFullConvolution",
     lambda: pm.SpatialFullConvolution(3, 2, 3, 3, 2, 2, 1, 1, 1, 1), (3, 4, 5), 27,
     "normal"),
    ("SpatialFullConvolution-groups",
     lambda: pm.SpatialFullConvolution(4, 6, 3, 3, nGroup=2, noBias=True), (4, 4, 4), 18,
     "normal"),
    ("TemporalConvolution", lambda: pm.TemporalConvolution(5, 4, 3, 2), (9, 5), 15,
     "normal"),
    ("SpatialMaxPooling", lambda: pm.SpatialMaxPooling(2, 2), (3, 6, 6), 1, "normal"),
    ("SpatialMaxPooling-ceil-pad", lambda: pm.SpatialMaxPooling(3, 3, 2, 2, 1, 1, True),
     (3, 8, 7), 1, "normal"),
    ("SpatialMaxPooling-same", lambda: pm.SpatialMaxPooling(3, 3, 2, 2, -1, -1),
     (3, 7, 8), 1, "normal"),
    ("SpatialAveragePooling", lambda: pm.SpatialAveragePooling(2, 2, 2, 2), (3, 6, 6), 4,
     "normal"),
    ("SpatialAveragePooling-ceil-include",
     lambda: pm.SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceilMode=True), (2, 8, 7), 9,
     "normal"),
    ("SpatialAveragePooling-ceil-exclude",
     lambda: pm.SpatialAveragePooling(3, 3, 2, 2, 1, 1, ceilMode=True,
                                      countIncludePad=False), (2, 8, 7), 9, "normal"),
    ("SpatialAveragePooling-same",
     lambda: pm.SpatialAveragePooling(3, 3, 2, 2, -1, -1), (2, 7, 8), 9, "normal"),
    ("SpatialAveragePooling-nodivide",
     lambda: pm.SpatialAveragePooling(2, 2, 1, 1, divide=False), (2, 5, 5), 4, "normal"),
    ("SpatialAveragePooling-global",
     lambda: pm.SpatialAveragePooling(1, 1, globalPooling=True), (3, 5, 4), 20, "normal"),
    ("TemporalMaxPooling", lambda: pm.TemporalMaxPooling(2), (8, 3), 1, "normal"),
    ("VolumetricConvolution",
     lambda: pm.VolumetricConvolution(2, 3, 2, 3, 2, 1, 2, 1, 1, 1, 0), (2, 4, 5, 6), 24,
     "normal"),
    ("VolumetricFullConvolution",
     lambda: pm.VolumetricFullConvolution(2, 3, 2, 3, 2, 2, 1, 2), (2, 3, 4, 3), 24,
     "normal"),
    ("VolumetricMaxPooling", lambda: pm.VolumetricMaxPooling(2, 3, 2, 1, 2, 2, 1, 1, 1),
     (2, 5, 6, 5), 1, "normal"),
    ("VolumetricAveragePooling",
     lambda: pm.VolumetricAveragePooling(2, 2, 2, 2, 2, 2, 1, 1, 1), (2, 5, 4, 5), 8,
     "normal"),
    ("SpatialZeroPadding", lambda: pm.SpatialZeroPadding(1, 2, -1, 0), (2, 4, 5), 1,
     "normal"),
    ("Cropping2D", lambda: pm.Cropping2D([1, 0], [1, 2]), (2, 5, 6), 1, "normal"),
    ("Cropping3D", lambda: pm.Cropping3D([1, 0], [0, 1], [1, 1]), (2, 3, 4, 5), 1, "normal"),
    ("Padding-after", lambda: pm.Padding(1, 2, 2, 0.5), (3, 4), 1, "normal"),
    ("Padding-before", lambda: pm.Padding(2, -1, 2, -1.0), (3, 4), 1, "normal"),
    ("Padding-inside", lambda: pm.Padding(1, 2, 2, 0.5, nIndex=2), (3, 4), 1, "normal"),
    ("UpSampling1D", lambda: pm.UpSampling1D(2), (3, 4), 1, "normal"),
    ("UpSampling2D", lambda: pm.UpSampling2D([2, 3]), (2, 3, 4), 1, "normal"),
    ("UpSampling3D", lambda: pm.UpSampling3D([2, 1, 2]), (2, 2, 3, 2), 1, "normal"),
    ("View", lambda: pm.View([12], 2), (3, 4), 1, "normal"),
    ("View-infer", lambda: pm.View([-1, 2], 2), (3, 4), 1, "normal"),
    ("Reshape", lambda: pm.Reshape([2, 6]), (3, 4), 1, "normal"),
    ("InferReshape", lambda: pm.InferReshape([0, -1], True), (3, 4, 2), 1, "normal"),
    ("Squeeze", lambda: pm.Squeeze(2), (3, 1, 4), 1, "normal"),
    ("Unsqueeze", lambda: pm.Unsqueeze(1), (3, 4), 1, "normal"),
    ("Transpose", lambda: pm.Transpose([(1, 2)]), (3, 4), 1, "normal"),
    ("Select", lambda: pm.Select(1, -1), (3, 4), 1, "normal"),
    ("Narrow", lambda: pm.Narrow(2, 1, 2), (3, 4), 1, "normal"),
    ("Replicate", lambda: pm.Replicate(3, 1), (4,), 1, "normal"),
    ("Replicate-last", lambda: pm.Replicate(2, -1), (2, 2), 1, "normal"),
    ("Identity", pm.Identity, (4,), 1, "normal"),
    ("Contiguous", lambda: pm.Sequential(pm.Transpose([(1, 2)]), pm.Contiguous()), (3, 4), 1,
     "normal"),
    ("Concat", lambda: pm.Concat(1, pm.Linear(4, 3), pm.Linear(4, 2)), (4,), 4, "normal"),
    ("ConcatTable-JoinTable", lambda: _two_linear(pm.JoinTable(1)), (4,), 4, "normal"),
    ("CAddTable", lambda: _two_linear(pm.CAddTable()), (4,), 5, "normal"),
    ("CSubTable", lambda: _two_linear(pm.CSubTable()), (4,), 5, "normal"),
    ("CMulTable", lambda: _two_linear(pm.CMulTable()), (4,), 5, "normal"),
    ("CDivTable", lambda: _table(pm.Exp(), pm.Exp(), merge=pm.CDivTable()), (4,), 1,
     "normal"),
    ("CMaxTable", lambda: _two_linear(pm.CMaxTable()), (4,), 4, "normal"),
    ("CMinTable", lambda: _two_linear(pm.CMinTable()), (4,), 4, "normal"),
    ("CAveTable", lambda: _two_linear(pm.CAveTable()), (4,), 5, "normal"),
    ("ConcatTable-outputs", lambda: _table(pm.Linear(4, 3), pm.Tanh(), merge=pm.Identity()),
     (4,), 4, "normal"),
    ("SplitTable", lambda: pm.SplitTable(1), (3, 4), 1, "normal"),
    ("ConcatTable-same-output-twice", lambda: pm.Sequential(
        pm.Tanh(), pm.ConcatTable().add(pm.Identity()).add(pm.Identity())), (4,), 1,
     "normal"),
    ("ConcatTable-input-as-output", lambda: pm.ConcatTable().add(pm.Identity()).add(
        pm.Tanh()), (4,), 1, "normal"),
    ("SelectTable", lambda: pm.Sequential(pm.SplitTable(1), pm.SelectTable(-1)), (3, 4), 1,
     "normal"),
    ("NarrowTable", lambda: pm.Sequential(pm.SplitTable(2), pm.NarrowTable(1, 2)), (3, 4), 1,
     "normal"),
    ("FlattenTable", lambda: pm.Sequential(
        _table(pm.SplitTable(1), pm.Identity(), merge=pm.FlattenTable())), (2, 3), 1,
     "normal"),
    ("ParallelTable", lambda: pm.ParallelTable().add(pm.Linear(4, 2)).add(pm.Tanh()),
     [(4,), (3,)], 4, "normal"),
    ("ParallelTable-nested", lambda: pm.ParallelTable().add(
        pm.ParallelTable().add(pm.Tanh()).add(pm.Sigmoid())).add(pm.Linear(4, 2)),
     [[(3,), (2,)], (4,)], 4, "normal"),
    ("MapTable", lambda: pm.MapTable(pm.Linear(4, 2)), [(4,), (4,)], 4, "normal"),
    ("Graph", _graph_two_in_two_out, [(4,), (3,)], 8, "normal"),
    ("AddConstant", lambda: pm.AddConstant(1.5), (7,), 1, "normal"),
    ("MulConstant", lambda: pm.MulConstant(-2.5), (7,), 1, "normal"),
    ("Negative", pm.Negative, (7,), 1, "normal"),
    ("Sum", lambda: pm.Sum(1), (3, 4), 3, "normal"),
    ("Sum-average-keep", lambda: pm.Sum(2, sizeAverage=True, squeeze=False), (3, 4), 4,
     "normal"),
    ("Mean", lambda: pm.Mean(-1), (3, 4), 4, "normal"),
    ("Max", lambda: pm.Max(1), (3, 4), 1, "normal"),
    ("Min", lambda: pm.Min(2), (3, 4), 1, "normal"),
    ("CMul-channels", lambda: pm.CMul([1, 3, 1, 1]), (3, 4, 4), 1, "normal"),
    ("CMul-sample", lambda: pm.CMul([3, 4]), (3, 4), 1, "normal"),
    ("CAdd", lambda: pm.CAdd([5]), (5,), 1, "normal"),
    ("Scale", lambda: pm.Scale([1, 3, 1, 1]), (3, 4, 4), 2, "normal"),
    ("Add", lambda: pm.Add(5), (5,), 1, "normal"),
    ("Mul", pm.Mul, (5,), 1, "normal"),
    ("Maxout", lambda: pm.Maxout(4, 3, 2), (4,), 4, "normal"),
    ("Highway", lambda: pm.Highway(4, True, pm.Tanh()), (4,), 6, "normal"),
    ("Highway-plain", lambda: pm.Highway(4, False), (4,), 6, "normal"),
    ("Cosine", lambda: pm.Cosine(5, 3), (5,), 10, "normal"),
    ("Bilinear", lambda: pm.Bilinear(3, 4, 2), [(3,), (4,)], 12, "normal"),
    ("Euclidean", lambda: pm.Euclidean(4, 3), (4,), 8, "normal"),
    ("DotProduct", pm.DotProduct, [(5,), (5,)], 5, "normal"),
    ("CosineDistance", pm.CosineDistance, [(5,), (5,)], 10, "normal"),
    ("PairwiseDistance-1", lambda: pm.PairwiseDistance(1), [(5,), (5,)], 5, "normal"),
    ("PairwiseDistance-2", pm.PairwiseDistance, [(5,), (5,)], 5, "normal"),
    ("PairwiseDistance-3", lambda: pm.PairwiseDistance(3), [(5,), (5,)], 10, "normal"),
    ("MM", lambda: pm.MM(True, False), [(3, 4), (3, 2)], 3, "normal"),
    ("MM-transB", lambda: pm.MM(False, True), [(3, 4), (2, 4)], 4, "normal"),
    ("MV", pm.MV, [(3, 4), (4,)], 4, "normal"),
    ("MV-trans", lambda: pm.MV(True), [(3, 4), (3,)], 3, "normal"),
    ("ResizeBilinear", lambda: pm.ResizeBilinear(5, 7), (2, 3, 4), 4, "normal"),
    ("ResizeBilinear-align", lambda: pm.ResizeBilinear(5, 7, True), (2, 3, 4), 4, "normal"),
    ("ResizeBilinear-NHWC", lambda: pm.ResizeBilinear(2, 3, dataFormat="NHWC"), (3, 5, 2),
     4, "normal"),
    ("Reverse", lambda: pm.Reverse(1), (3, 4), 1, "normal"),
    ("Tile", lambda: pm.Tile(1, 3), (2, 3), 1, "normal"),
    ("Pack", lambda: _two_linear(pm.Pack(1)), (4,), 4, "normal"),
    ("Pack-last", lambda: _two_linear(pm.Pack(-1)), (4,), 4, "normal"),
    ("ExpandSize", lambda: pm.ExpandSize([-1, 3, 4]), (1, 4), 1, "normal"),
    ("LSTM", lambda: _lstm_recurrent(pm.LSTM(4, 6)), (5, 4), 40, "normal"),
    ("LSTM-cell-alone", lambda: pm.LSTM(3, 4), (6, 3), 40, "normal"),
    ("GRU", lambda: _lstm_recurrent(pm.GRU(4, 6)), (5, 4), 40, "normal"),
    ("RnnCell-tanh", lambda: _lstm_recurrent(pm.RnnCell(4, 6)), (5, 4), 40, "normal"),
    ("RnnCell-sigmoid", lambda: _lstm_recurrent(pm.RnnCell(4, 6, pm.Sigmoid(), False)),
     (5, 4), 40, "normal"),
    ("RnnCell-relu", lambda: _lstm_recurrent(pm.RnnCell(4, 6, pm.ReLU(), True, False)),
     (5, 4), 40, "normal"),
    ("LSTMPeephole", _peephole, (5, 4), 40, "normal"),
    ("LSTMPeephole-dropout", lambda: pm.Recurrent().add(pm.LSTMPeephole(4, 5, p=0.3)),
     (5, 4), 40, "normal"),
    ("BiRecurrent-sum", lambda: pm.BiRecurrent().add(pm.LSTM(4, 5)), (6, 4), 40, "normal"),
    ("BiRecurrent-join", lambda: pm.BiRecurrent(pm.JoinTable(2)).add(pm.GRU(4, 5)), (6, 4),
     40, "normal"),
    ("TimeDistributed", lambda: pm.TimeDistributed(pm.Linear(4, 3)), (5, 4), 4, "normal"),
    ("LSTM-classifier", lambda: pm.Sequential(
        pm.LookupTable(20, 8), pm.Recurrent().add(pm.LSTM(8, 6)), pm.Select(1, -1),
        pm.Linear(6, 3), pm.LogSoftMax()), (7,), 80, "indices:20"),
    ("LeNet", lambda: pm.Sequential(
        pm.Reshape([1, 28, 28]), pm.SpatialConvolution(1, 6, 5, 5), pm.Tanh(),
        pm.SpatialMaxPooling(2, 2, 2, 2), pm.SpatialConvolution(6, 12, 5, 5), pm.Tanh(),
        pm.SpatialMaxPooling(2, 2, 2, 2), pm.Reshape([12 * 4 * 4]), pm.Linear(192, 100),
        pm.Tanh(), pm.Linear(100, 10), pm.LogSoftMax()), (28, 28), 600, "normal"),
]


@pytest.mark.parametrize("make, shape, k, kind", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_export_matches_forward(make, shape, k, kind, tmp_path):
    check(make(), shape, tmp_path, k, kind)


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_other_opsets(opset, tmp_path):
    onnx_ops = {n.op_type for n in check(
        pm.Sequential(pm.Linear(6, 5), pm.LayerNormalization(5), pm.Normalize(float("inf")),
                      pm.Mean(1, squeeze=False), pm.Max(1)), (6,), tmp_path, 12,
        opset=opset).graph.node}
    assert ("LayerNormalization" in onnx_ops) == (opset >= 17)


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_other_opsets_sequences_and_images(opset, tmp_path):
    check(pm.Sequential(pm.Recurrent().add(pm.GRU(3, 4)), pm.SplitTable(1), pm.CAddTable()),
          (5, 3), tmp_path / "a", 40, opset=opset)
    check(pm.Sequential(pm.SpatialConvolution(2, 3, 3, 3), pm.SpatialAveragePooling(
        3, 3, 2, 2, 1, 1, ceilMode=True), pm.SpatialMaxPooling(2, 2, 1, 1), pm.Normalize(2.0),
        pm.Padding(2, 1, 3), pm.UpSampling2D([2, 2])), (2, 9, 9), tmp_path / "b", 40,
          opset=opset)


def test_float64_model_exports_as_float32(tmp_path):
    model = pm.Sequential(pm.Linear(8, 6), pm.Tanh(), pm.Linear(6, 3), pm.SoftMax())
    proto = check(model, (8,), tmp_path, 16, dtype=np.float64)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)
    assert model.dtype == np.float64  # the model itself is unchanged


def test_batch_axis_is_dynamic(tmp_path):
    path = tmp_path / "m.onnx"
    pm.Linear(3, 2).saveONNX(str(path), [3])
    graph = onnx.load(str(path)).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] \
        == ["batch", 3]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] \
        == ["batch", 2]


def test_model_is_left_as_it_was(tmp_path):
    bn = _running(pm.BatchNormalization(4))
    model = pm.Sequential(pm.Linear(3, 4), bn, pm.Dropout(0.5))
    mean = bn.runningMean.copy()
    model.saveONNX(str(tmp_path / "m.onnx"), (3,))
    assert model.isTraining() and bn.isTraining()
    np.testing.assert_array_equal(bn.runningMean, mean)


def test_map_table_shares_its_weights(tmp_path):
    proto = check(pm.MapTable(pm.Linear(4, 2)), [(4,), (4,), (4,)], tmp_path, 4)
    assert len([t for t in proto.graph.initializer if list(t.dims) == [2, 4]]) == 1


def test_import_pymodules_does_not_import_onnx():
    import subprocess
    import sys

    code = "import sys, pymodules; print(any(m.split('.')[0] in ('onnx', 'onnxruntime') " \
           "for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_unsupported_module_is_named(tmp_path):
    index = pm.Index(1).setName("pick")
    model = pm.Sequential(pm.ConcatTable().add(pm.Linear(5, 4)).add(pm.Identity()), index)
    with pytest.raises(ValueError, match=r"saveONNX: pick \(pymodules\.nn\.shape_ops\.Index\)"
                                         r" in Sequential@\w+ has no ONNX equivalent"):
        model.saveONNX(str(tmp_path / "m.onnx"), (5,))
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def test_subclass_is_not_taken_for_its_base(tmp_path):
    class Doubled(pm.Linear):
        def updateOutput(self, input):
            return super().updateOutput(input) * 2

    with pytest.raises(ValueError, match="Doubled.*has no ONNX equivalent"):
        Doubled(3, 2).saveONNX(str(tmp_path / "m.onnx"), (3,))


def test_batch_of_one_keeps_its_axis(tmp_path):
    """View without numInputDims reads a batch of one as one sample; the file keeps the
    batch axis there, with the same values."""
    model = pm.Sequential(pm.View([12]), pm.Linear(12, 2)).evaluate()
    path = tmp_path / "m.onnx"
    model.saveONNX(str(path), (3, 4))
    x = np.random.default_rng(1).standard_normal((1, 3, 4)).astype(np.float32)
    (got,) = _session(path).run(None, {"input": x})
    expected = model.forward(x)
    assert expected.shape == (2,) and got.shape == (1, 2)
    np.testing.assert_allclose(got[0], expected, rtol=1e-5, atol=1e-6)


def test_softmax_over_the_batch_axis_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"SoftMax@\w+ .*3-D input"):
        pm.SoftMax().saveONNX(str(tmp_path / "m.onnx"), (4, 5))


def test_axis_along_batch_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Sum@\w+ .*batch axis"):
        pm.Sum(0).saveONNX(str(tmp_path / "m.onnx"), (4,))


@pytest.mark.parametrize("shape, error", [("abc", TypeError), ([3, -1], ValueError),
                                          ([3, 2.5], TypeError)])
def test_bad_input_shape(shape, error, tmp_path):
    with pytest.raises(error, match="inputShape"):
        pm.Linear(3, 2).saveONNX(str(tmp_path / "m.onnx"), shape)


def test_bad_opset(tmp_path):
    with pytest.raises(ValueError, match="opset must lie in"):
        pm.Linear(3, 2).saveONNX(str(tmp_path / "m.onnx"), (3,), opset=9)


def test_wrong_input_shape_names_the_model(tmp_path):
    with pytest.raises(ValueError, match=r"saveONNX: .*Linear@\w+.*input has 4 features"):
        pm.Sequential(pm.Linear(3, 2)).saveONNX(str(tmp_path / "m.onnx"), (4,))


def test_existing_file_and_overwrite(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        pm.Linear(3, 2).saveONNX(str(path), (3,))
    assert path.read_bytes() == b"old"
    pm.Linear(3, 2).saveONNX(str(path), (3,), overWrite=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def test_fsspec_url():
    fsspec = pytest.importorskip("fsspec")
    model = pm.Linear(3, 2).evaluate()
    model.saveONNX("memory://onnx_export/m.onnx", (3,))
    with fsspec.open("memory://onnx_export/m.onnx", "rb") as f:
        data = f.read()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.forward(x),
                               rtol=1e-6, atol=1e-6)
    fsspec.filesystem("memory").rm("/onnx_export", recursive=True)


def test_every_case_class_is_exported():
    """The classes named in CASES are the exporter's: a renamed class fails here."""
    from pymodules.interop import onnx_export

    covered = set(onnx_export._LEAVES) | set(onnx_export._CONTAINERS)
    names = {c.__name__ for c in covered}
    for case in CASES:
        assert case[0].split("-")[0] in names or case[0] in ("MLP", "LeNet")
