"""Save and load: every module class round-trips; weights by name; the format refuses
what it should, and never runs code from a file."""

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from poison import poisoned

import pymodules as pm
from pymodules import persistence
from pymodules.persistence import archive, codec, registry, storage, weights

# -- one example of every module class ----------------------------------------------------
# {class: [(module factory, input factory or None for classes that do not compute alone)]}.
# A Module class exported by pm without an entry fails test_every_class_has_an_example.


def _a(*shape):
    return lambda rng: rng.standard_normal(shape)


def _table(*shapes):
    return lambda rng: [rng.standard_normal(s) for s in shapes]


def _positive(*shape):
    return lambda rng: np.abs(rng.standard_normal(shape)) + 0.5


def _warm(m, shape):
    """``m`` after a training forward, so that its running statistics are not the initial."""
    m.forward(np.random.default_rng(1).standard_normal(shape).astype(m.dtype))
    return m


def _linear_variants():
    return [
        lambda: pm.Linear(4, 3),
        lambda: pm.Linear(4, 3, withBias=False),
        lambda: pm.Linear(4, 3, wRegularizer=pm.L1L2Regularizer(0.1, 0.2),
                          bRegularizer=pm.L2Regularizer(0.3)),
        lambda: pm.Linear(4, 3, initWeight=np.arange(12.0).reshape(3, 4), initBias=np.ones(3)),
    ]


def _sequential():
    s = pm.Sequential().add(pm.Linear(4, 5)).add(pm.Sequential().add(pm.Linear(5, 3)))
    s.modules[1].modules[0].setName("inner")
    s.modules[0].setScaleW(0.5).setScaleB(0.25)
    return s


def _graph():
    """Two inputs, a shared input feeding two layers, a join and two outputs."""
    x, y = pm.Input(), pm.Input("second")
    a, b = pm.Linear(4, 3)(x), pm.Linear(4, 3).setName("b")(x)
    c = pm.Linear(4, 3)(y)
    s = pm.CAddTable()(a, b, c)
    out = pm.Linear(3, 2)(s)
    return pm.Graph([x, y], [out, pm.Identity()(s)])


def _graph_of_graphs():
    """A graph holding a graph and a Sequential, stopped gradient and a frozen layer."""
    x = pm.Input()
    inner_in = pm.Input()
    inner = pm.Graph(inner_in, pm.Linear(3, 3)(pm.Linear(4, 3)(inner_in)))
    h = inner(x)
    k = pm.Sequential().add(pm.Linear(4, 3)).add(pm.Identity()).setName("seq")(x)
    j = pm.JoinTable(1)([h, k])
    g = pm.Model(x, pm.Linear(6, 2).setName("head")(j))
    return g.stopGradient(["seq"]).freeze("head")


EXAMPLES = {
    pm.Module: [(lambda: pm.Module(), None)],
    pm.Container: [(lambda: pm.Container().add(pm.Linear(4, 3)), None)],
    pm.Linear: [(make, _a(2, 4)) for make in _linear_variants()],
    pm.Sequential: [(_sequential, _a(2, 4)),
                    (lambda: _sequential().freeze("inner"), _a(2, 4)),
                    (lambda: _sequential().evaluate(), _a(2, 4))],
    pm.Concat: [(lambda: pm.Concat(1).add(pm.Linear(4, 3)).add(pm.Linear(4, 2)), _a(3, 4))],
    pm.ConcatTable: [(lambda: pm.ConcatTable().add(pm.Linear(4, 3)).add(pm.Identity()),
                      _a(3, 4))],
    pm.ParallelTable: [(lambda: pm.ParallelTable().add(pm.Linear(4, 3)).add(pm.Linear(2, 3)),
                        _table((3, 4), (3, 2)))],
    pm.MapTable: [(lambda: pm.MapTable(pm.Linear(4, 3)), _table((3, 4), (3, 4))),
                  (lambda: pm.MapTable().add(pm.Linear(4, 3)), _table((3, 4), (3, 4)))],
    pm.Graph: [(_graph, _table((3, 4), (3, 4))), (_graph_of_graphs, _a(3, 4))],
    pm.Identity: [(lambda: pm.Identity(), _a(3, 4))],
    pm.Reshape: [(lambda: pm.Reshape([2, 2]), _a(3, 4))],
    pm.View: [(lambda: pm.View([2, 2]), _a(3, 4))],
    pm.Squeeze: [(lambda: pm.Squeeze(1), _a(3, 1, 4))],
    pm.Unsqueeze: [(lambda: pm.Unsqueeze(1), _a(3, 4))],
    pm.Narrow: [(lambda: pm.Narrow(1, 1, 2), _a(3, 4))],
    pm.Select: [(lambda: pm.Select(1, 2), _a(3, 4))],
    pm.Transpose: [(lambda: pm.Transpose([(0, 1)]), _a(3, 4))],
    pm.Replicate: [(lambda: pm.Replicate(3), _a(3, 4))],
    pm.Contiguous: [(lambda: pm.Contiguous(), _a(3, 4))],
    pm.CAddTable: [(lambda: pm.CAddTable(), _table((3, 4), (3, 4)))],
    pm.CSubTable: [(lambda: pm.CSubTable(), _table((3, 4), (3, 4)))],
    pm.CMulTable: [(lambda: pm.CMulTable(), _table((3, 4), (3, 4)))],
    pm.CMaxTable: [(lambda: pm.CMaxTable(), _table((3, 4), (3, 4)))],
    pm.JoinTable: [(lambda: pm.JoinTable(1), _table((3, 4), (3, 2)))],
    pm.SplitTable: [(lambda: pm.SplitTable(1), _a(3, 4))],
    pm.SelectTable: [(lambda: pm.SelectTable(1), _table((3, 4), (3, 2)))],
    pm.NarrowTable: [(lambda: pm.NarrowTable(0, 2), _table((3, 4), (3, 2), (2,)))],
    pm.FlattenTable: [(lambda: pm.FlattenTable(),
                       lambda rng: [rng.standard_normal(3), [rng.standard_normal(2),
                                                             rng.standard_normal(4)]])],
    # activations
    pm.Abs: [(lambda: pm.Abs(), _a(3, 4))],
    pm.Clamp: [(lambda: pm.Clamp(-0.5, 0.5), _a(3, 4))],
    pm.ELU: [(lambda: pm.ELU(0.7), _a(3, 4))],
    pm.Exp: [(lambda: pm.Exp(), _a(3, 4))],
    pm.HardSigmoid: [(lambda: pm.HardSigmoid(), _a(3, 4))],
    pm.HardTanh: [(lambda: pm.HardTanh(-0.5, 0.7), _a(3, 4))],
    pm.LeakyReLU: [(lambda: pm.LeakyReLU(0.2), _a(3, 4))],
    pm.Log: [(lambda: pm.Log(), _positive(3, 4))],
    pm.LogSoftMax: [(lambda: pm.LogSoftMax(), _a(3, 4))],
    pm.Power: [(lambda: pm.Power(2.0, 0.5, 0.1), _a(3, 4))],
    pm.PReLU: [(lambda: pm.PReLU(4), _a(3, 4)), (lambda: pm.PReLU(), _a(3, 4))],
    pm.ReLU: [(lambda: pm.ReLU(), _a(3, 4))],
    pm.ReLU6: [(lambda: pm.ReLU6(), _a(3, 4))],
    pm.Sigmoid: [(lambda: pm.Sigmoid(), _a(3, 4))],
    pm.SoftMax: [(lambda: pm.SoftMax(), _a(3, 4))],
    pm.SoftMin: [(lambda: pm.SoftMin(), _a(3, 4))],
    pm.SoftPlus: [(lambda: pm.SoftPlus(2.0), _a(3, 4))],
    pm.SoftSign: [(lambda: pm.SoftSign(), _a(3, 4))],
    pm.Sqrt: [(lambda: pm.Sqrt(), _positive(3, 4))],
    pm.Square: [(lambda: pm.Square(), _a(3, 4))],
    pm.Tanh: [(lambda: pm.Tanh(), _a(3, 4))],
    pm.Threshold: [(lambda: pm.Threshold(0.1, -1.0), _a(3, 4))],
    # dropout, normalization, embedding
    pm.Dropout: [(lambda: pm.Dropout(0.3), _a(3, 4)), (lambda: pm.Dropout().setP(0.2), _a(3, 4))],
    pm.BatchNormalization: [(lambda: _warm(pm.BatchNormalization(4), (5, 4)), _a(5, 4)),
                            (lambda: _warm(pm.BatchNormalization(4, affine=False),
                                           (5, 4)).evaluate(), _a(5, 4))],
    pm.SpatialBatchNormalization: [(lambda: _warm(pm.SpatialBatchNormalization(3),
                                                  (2, 3, 4, 4)), _a(2, 3, 4, 4))],
    pm.Normalize: [(lambda: pm.Normalize(2.0), _a(3, 4))],
    pm.SpatialCrossMapLRN: [(lambda: pm.SpatialCrossMapLRN(3), _a(2, 4, 5, 5))],
    pm.LookupTable: [(lambda: pm.LookupTable(10, 3),
                      lambda rng: rng.integers(0, 10, (2, 3)).astype(np.float64))],
    # convolution and pooling
    pm.SpatialConvolution: [
        (lambda: pm.SpatialConvolution(3, 4, 3, 3), _a(2, 3, 6, 6)),
        (lambda: pm.SpatialConvolution(4, 4, 3, 2, 2, 1, 1, 0, nGroup=2,
                                       propagateBack=False), _a(2, 4, 6, 6))],
    pm.SpatialDilatedConvolution: [(lambda: pm.SpatialDilatedConvolution(3, 2, 3, 3, 1, 1, 2, 2,
                                                                         2, 2), _a(2, 3, 7, 7))],
    pm.SpatialFullConvolution: [(lambda: pm.SpatialFullConvolution(3, 2, 3, 3, 2, 2),
                                 _a(2, 3, 4, 4))],
    pm.TemporalConvolution: [(lambda: pm.TemporalConvolution(4, 3, 2), _a(2, 5, 4))],
    pm.SpatialMaxPooling: [(lambda: pm.SpatialMaxPooling(2, 2), _a(2, 3, 5, 5)),
                           (lambda: pm.SpatialMaxPooling(2, 2).ceil(), _a(2, 3, 5, 5))],
    pm.SpatialAveragePooling: [(lambda: pm.SpatialAveragePooling(2, 2, 2, 2).ceil(),
                                _a(2, 3, 5, 5))],
    pm.TemporalMaxPooling: [(lambda: pm.TemporalMaxPooling(2), _a(2, 6, 4))],
    # layer normalization, reductions and arithmetic
    pm.LayerNormalization: [(lambda: pm.LayerNormalization(4), _a(2, 3, 4))],
    pm.Sum: [(lambda: pm.Sum(1), _a(3, 4)),
             (lambda: pm.Sum(2, 2, sizeAverage=True, squeeze=False), _a(2, 3, 4))],
    pm.Mean: [(lambda: pm.Mean(-1, squeeze=False), _a(3, 4))],
    pm.Max: [(lambda: pm.Max(1), _a(3, 4)), (lambda: pm.Max(2, 2), _a(3, 4))],
    pm.Min: [(lambda: pm.Min(0), _a(3, 4))],
    pm.AddConstant: [(lambda: pm.AddConstant(1.5), _a(3, 4))],
    pm.MulConstant: [(lambda: pm.MulConstant(-2.0), _a(3, 4))],
    pm.Negative: [(lambda: pm.Negative(), _a(3, 4))],
    pm.CDivTable: [(lambda: pm.CDivTable(), lambda rng: [rng.standard_normal((3, 4)),
                                                         rng.uniform(0.5, 2, (3, 4))])],
    pm.CMinTable: [(lambda: pm.CMinTable(), _table((3, 4), (3, 4)))],
    pm.CAveTable: [(lambda: pm.CAveTable(), _table((3, 4), (3, 4), (3, 4)))],
    # element-wise parameters
    pm.CMul: [(lambda: pm.CMul([1, 3, 1]), _a(2, 3, 4)),
              (lambda: pm.CMul([4], wRegularizer=pm.L2Regularizer(0.1)), _a(2, 4))],
    pm.CAdd: [(lambda: pm.CAdd([3, 1]), _a(2, 3, 4))],
    pm.Scale: [(lambda: pm.Scale([4]), _a(3, 4))],
    pm.Add: [(lambda: pm.Add(4), _a(3, 4))],
    pm.Mul: [(lambda: pm.Mul(), _a(3, 4))],
    # products and distances
    pm.DotProduct: [(lambda: pm.DotProduct(), _table((3, 4), (3, 4)))],
    pm.CosineDistance: [(lambda: pm.CosineDistance(), _table((3, 4), (3, 4)))],
    pm.PairwiseDistance: [(lambda: pm.PairwiseDistance(3), _table((3, 4), (3, 4)))],
    pm.MM: [(lambda: pm.MM(True, False), _table((2, 4, 3), (2, 4, 5)))],
    pm.MV: [(lambda: pm.MV(True), _table((2, 4, 3), (2, 4)))],
    pm.Euclidean: [(lambda: pm.Euclidean(4, 3), _a(2, 4))],
    pm.Cosine: [(lambda: pm.Cosine(4, 3), _a(2, 4))],
    pm.Maxout: [(lambda: pm.Maxout(4, 3, 2), _a(2, 4)),
                (lambda: pm.Maxout(4, 3, 2, withBias=False), _a(2, 4))],
    pm.Highway: [(lambda: pm.Highway(4), _a(2, 4)),
                 (lambda: pm.Highway(4, False, pm.Tanh(), pm.L2Regularizer(0.1)), _a(2, 4))],
    pm.Bilinear: [(lambda: pm.Bilinear(4, 3, 2), _table((2, 4), (2, 3))),
                  (lambda: pm.Bilinear(4, 3, 2, biasRes=False), _table((2, 4), (2, 3)))],
    # padding, cropping, resizing
    pm.SpatialZeroPadding: [(lambda: pm.SpatialZeroPadding(1, -1, 2, 0), _a(2, 3, 4, 5))],
    pm.Padding: [(lambda: pm.Padding(1, -2, 2, 0.5, 2), _a(2, 3, 4))],
    pm.Cropping2D: [(lambda: pm.Cropping2D([1, 0], [0, 2], "NHWC"), _a(2, 4, 5, 3))],
    pm.Cropping3D: [(lambda: pm.Cropping3D([1, 0], [0, 1], [1, 1]), _a(2, 2, 3, 4, 5))],
    pm.UpSampling1D: [(lambda: pm.UpSampling1D(2), _a(2, 3, 4))],
    pm.UpSampling2D: [(lambda: pm.UpSampling2D([2, 3]), _a(2, 3, 4, 5))],
    pm.UpSampling3D: [(lambda: pm.UpSampling3D([1, 2, 2]), _a(2, 2, 3, 4, 5))],
    pm.ResizeBilinear: [(lambda: pm.ResizeBilinear(5, 3, True), _a(2, 3, 4, 5))],
    # 3-D
    pm.VolumetricConvolution: [(lambda: pm.VolumetricConvolution(2, 3, 2, 2, 2, 1, 2, 1, 1),
                                _a(2, 2, 3, 4, 4))],
    pm.VolumetricFullConvolution: [(lambda: pm.VolumetricFullConvolution(
        2, 4, 2, 2, 2, 2, 1, 1, 0, 0, 0, 1, 0, 0, nGroup=2), _a(2, 2, 3, 3, 3))],
    pm.VolumetricMaxPooling: [(lambda: pm.VolumetricMaxPooling(2, 2, 2).ceil(),
                               _a(2, 2, 3, 4, 5))],
    pm.VolumetricAveragePooling: [(lambda: pm.VolumetricAveragePooling(
        2, 2, 2, 1, 2, 2, 1, 0, 1, countIncludePad=False), _a(2, 2, 3, 4, 5))],
    # more activations, noise and copying shape modules
    pm.LogSigmoid: [(lambda: pm.LogSigmoid(), _a(3, 4))],
    pm.SoftShrink: [(lambda: pm.SoftShrink(0.3), _a(3, 4))],
    pm.HardShrink: [(lambda: pm.HardShrink(0.3), _a(3, 4))],
    pm.TanhShrink: [(lambda: pm.TanhShrink(), _a(3, 4))],
    pm.BinaryThreshold: [(lambda: pm.BinaryThreshold(0.1), _a(3, 4))],
    pm.RReLU: [(lambda: pm.RReLU(0.1, 0.3), _a(3, 4)), (lambda: pm.RReLU().evaluate(), _a(3, 4))],
    pm.SpatialDropout1D: [(lambda: pm.SpatialDropout1D(0.3), _a(2, 5, 4))],
    pm.SpatialDropout2D: [(lambda: pm.SpatialDropout2D(0.4), _a(2, 3, 4, 4)),
                          (lambda: pm.SpatialDropout2D(0.4, "NHWC").evaluate(), _a(2, 4, 4, 3))],
    pm.SpatialDropout3D: [(lambda: pm.SpatialDropout3D(0.4, "NHWC"), _a(2, 3, 2, 2, 3))],
    pm.GaussianNoise: [(lambda: pm.GaussianNoise(0.2), _a(3, 4))],
    pm.GaussianDropout: [(lambda: pm.GaussianDropout(0.3), _a(3, 4))],
    pm.Masking: [(lambda: pm.Masking(0.5),
                  lambda rng: np.where(np.arange(24).reshape(2, 3, 4) < 4, 0.5,
                                       rng.standard_normal((2, 3, 4))))],
    pm.Tile: [(lambda: pm.Tile(1, 3), _a(2, 3, 2))],
    pm.Reverse: [(lambda: pm.Reverse(1), _a(3, 4)), (lambda: pm.Reverse(-1), _a(2, 3, 4))],
    pm.Index: [(lambda: pm.Index(1), lambda rng: [rng.standard_normal((3, 4)),
                                                  np.array([3.0, 0.0, 3.0])])],
    pm.ExpandSize: [(lambda: pm.ExpandSize([3, -1, 4]), _a(1, 2, 1))],
    pm.Pack: [(lambda: pm.Pack(1), _table((3, 4), (3, 4), (3, 4)))],
    # recurrent
    pm.LSTM: [(lambda: pm.LSTM(4, 3), _a(2, 5, 4))],
    pm.GRU: [(lambda: pm.GRU(4, 3), _a(2, 5, 4))],
    pm.RnnCell: [(lambda: pm.RnnCell(4, 3, pm.ReLU(), isHiddenWithBias=False), _a(2, 5, 4))],
    pm.LSTMPeephole: [(lambda: pm.LSTMPeephole(4, 3), _a(1, 5, 4))],
    pm.Recurrent: [(lambda: pm.Recurrent().add(pm.LSTM(4, 3)), _a(2, 5, 4)),
                   (lambda: pm.Recurrent().add(pm.GRU(4, 3)).evaluate(), _a(1, 2, 4))],
    pm.BiRecurrent: [(lambda: pm.BiRecurrent().add(pm.GRU(4, 3)), _a(2, 5, 4)),
                     (lambda: _bi_reverse_trained(pm.BiRecurrent(pm.JoinTable(2))
                                                  .add(pm.LSTM(4, 3))), _a(2, 5, 4))],
    # sequences
    pm.TimeDistributed: [(lambda: pm.TimeDistributed(pm.Linear(4, 3)), _a(2, 3, 4)),
                         (lambda: pm.TimeDistributed(pm.Sequential(pm.Linear(4, 3), pm.Tanh())
                                                     ).setName("td"), _a(2, 3, 4))],
    pm.InferReshape: [(lambda: pm.InferReshape([0, -1]), _a(3, 2, 2)),
                      (lambda: pm.InferReshape([-1, 2], True), _a(3, 4))],
}
# dropout in a recurrent cell: training-mode masks from the cell's own stream
EXAMPLES[pm.LSTMPeephole].append(
    (lambda: pm.Recurrent().add(pm.LSTMPeephole(4, 3, p=0.3)), _a(2, 5, 4)))
# attention and the Transformer (token indices: whole numbers, cast to the model's dtype)
EXAMPLES[pm.Attention] = [(lambda: pm.Attention(4, 2, 0.0), _table((2, 3, 4), (2, 5, 4),
                                                                   (2, 1, 1, 5))),
                          (lambda: pm.Attention(4, 2, 0.3), _table((2, 3, 4), (2, 3, 4),
                                                                   (1, 1, 3, 3)))]
EXAMPLES[pm.FeedForwardNetwork] = [(lambda: pm.FeedForwardNetwork(4, 6, 0.2), _a(2, 3, 4))]
EXAMPLES[pm.Transformer] = [
    (lambda: pm.Transformer(6, 4, 2, 6, 2, 0.1, 0.1, 0.1),
     lambda rng: rng.integers(0, 6, (2, 4))),
    (lambda: pm.Transformer(6, 4, 2, 6, 1, 0.0, 0.0, 0.0, None, True, "translation"),
     lambda rng: [rng.integers(0, 6, (2, 4)), rng.integers(0, 6, (2, 3))])]
# attention (a bool mask would be cast to the dtype here: the inputs carry none)
EXAMPLES[pm.MultiHeadAttention] = [
    (lambda: pm.MultiHeadAttention(8, 2), _a(2, 3, 8)),
    (lambda: pm.MultiHeadAttention(8, 2, 0.2, False), _table((2, 3, 8), (2, 4, 8), (2, 4, 8)))]
EXAMPLES[pm.TransformerEncoderLayer] = [
    (lambda: pm.TransformerEncoderLayer(8, 2, 16), _a(2, 3, 8)),
    (lambda: pm.TransformerEncoderLayer(8, 2, 16, 0.0, "gelu", normFirst=True), _a(2, 3, 8))]
EXAMPLES[pm.LSTM].append((lambda: pm.Recurrent().add(pm.LSTM(4, 3, p=0.3)), _a(2, 5, 4)))
EXAMPLES[pm.GRU].append((lambda: pm.Recurrent().add(pm.GRU(4, 3, p=0.3)), _a(2, 5, 4)))


def _bi_reverse_trained(bi):
    """A BiRecurrent whose reverse direction no longer equals the forward one."""
    for w in bi.modules[1].parameters()[0]:
        w[...] = np.linspace(-0.5, 0.5, w.size).reshape(w.shape)
    return bi


def _module_classes():
    return sorted({obj for name in pm.__all__
                   if isinstance(obj := getattr(pm, name), type) and issubclass(obj, pm.Module)},
                  key=lambda c: c.__name__)


def test_every_class_has_an_example():
    missing = [c.__name__ for c in _module_classes() if c not in EXAMPLES]
    assert not missing, f"add save/load examples for {missing} to EXAMPLES"


def _cases():
    for cls in _module_classes():
        for i, (make, shape) in enumerate(EXAMPLES.get(cls, [])):
            for dtype in ("float32", "float64"):
                yield pytest.param(make, shape, dtype, id=f"{cls.__name__}{i}-{dtype}")


def _snapshot(m):
    return [(type(x), x.getName(), x.train, x.scaleW, x.scaleB, x._frozen, x.dtype, str(x))
            for x in m.modules_preorder()]


def _copy(v):
    return [_copy(x) for x in v] if isinstance(v, list) else np.copy(v)


def _cast(v, dtype):
    return [_cast(x, dtype) for x in v] if isinstance(v, list) else v.astype(dtype)


def _like(v, rng):
    return [_like(x, rng) for x in v] if isinstance(v, list) else \
        rng.standard_normal(v.shape).astype(v.dtype)


def _equal(a, b):
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_equal, a, b))
    return a.dtype == b.dtype and np.array_equal(a, b)


def _run(m, x, g):
    """forward and backward from zeroed gradients, with the same random stream."""
    m.zeroGradParameters()
    pm.setSeed(7)
    y = _copy(m.forward(x))
    gi = _copy(m.backward(x, g))
    return [y, gi, [np.copy(a) for a in m.parameters()[1]]]


@pytest.mark.parametrize(("make", "make_input", "dtype"), list(_cases()))
def test_round_trip(make, make_input, dtype, tmp_path, rng):
    m = make()
    if dtype == "float64":
        m.double()
    path = tmp_path / "m.pm"
    assert m.save(path) is m
    r = pm.load(path)
    assert type(r) is type(m)
    assert _snapshot(r) == _snapshot(m)
    assert _equal(m.parameters()[0] + m.getExtraParameter(),
                  r.parameters()[0] + r.getExtraParameter())
    assert all(not g.any() for g in r.parameters()[1])  # gradients are not saved
    if make_input is None:
        return
    x = _cast(make_input(rng), m.dtype)
    g = _like(m.forward(x), rng)
    assert _equal(_run(r, x, g), _run(m, x, g))
    # and the reloaded module saves to the same definition
    r.save(tmp_path / "again.pm")
    assert _definition(tmp_path / "again.pm") == _definition(path)


def _definition(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("definition.json"))


def test_round_trip_keeps_float64_given_to_the_constructor(tmp_path):
    m = pm.Linear(3, 2, dtype=np.float64)
    m.save(tmp_path / "m.pm")
    r = pm.load(tmp_path / "m.pm")
    assert r.dtype == np.float64 and r.weight.dtype == np.float64
    assert np.array_equal(r.weight, m.weight)


@pytest.mark.parametrize(("make", "make_input", "dtype"), list(_cases()))
def test_load_ignores_what_unset_arrays_held(make, make_input, dtype, tmp_path, monkeypatch):
    """Loading rebuilds each module with its parameters unset, then reads the file's in;
    whatever those unset arrays held, even a NaN that traps when converted, is not read."""
    m = make()._convert(dtype)
    m.save(tmp_path / "m.pm")
    with monkeypatch.context() as patched:
        patched.setattr(np, "empty", poisoned(np.empty))
        r = pm.load(tmp_path / "m.pm")
    assert _equal(m.parameters()[0] + m.getExtraParameter(),
                  r.parameters()[0] + r.getExtraParameter())


def test_converting_a_signalling_nan_gives_a_nan(monkeypatch):
    monkeypatch.setattr(np, "empty", poisoned(np.empty))
    m = pm.Linear(2, 2)
    m.weight = np.empty((2, 2), np.float32)
    assert np.isnan(m.double().weight).all()


def test_load_is_a_classmethod_that_checks_the_class(tmp_path):
    pm.Linear(3, 2).save(tmp_path / "m.pm")
    assert isinstance(pm.Module.load(tmp_path / "m.pm"), pm.Linear)
    assert isinstance(pm.Linear.load(tmp_path / "m.pm"), pm.Linear)
    with pytest.raises(TypeError, match="not a Sequential"):
        pm.Sequential.load(tmp_path / "m.pm")


def test_overwrite(tmp_path):
    path = tmp_path / "m.pm"
    a, b = pm.Linear(3, 2), pm.Linear(3, 2)
    a.save(path)
    with pytest.raises(FileExistsError):
        b.save(path)
    assert pm.load(path).getName() == a.getName()
    b.save(path, overWrite=True)
    assert pm.load(path).getName() == b.getName()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pm"]  # no temporary file left


def test_save_refuses_what_it_cannot_encode(tmp_path):
    m = pm.Linear(3, 2)
    m.wRegularizer = object()
    m._ctor = ((3, 2), {"wRegularizer": object()})
    with pytest.raises(TypeError, match="cannot save a object"):
        m.save(tmp_path / "m.pm")
    assert not (tmp_path / "m.pm").exists()
    assert list(tmp_path.iterdir()) == []


def test_unregistered_classes_are_refused_then_registered(tmp_path):
    class Twice(pm.Module):
        def __init__(self, factor=2.0, dtype=np.float32):
            super().__init__(dtype)
            self.factor = factor

    with pytest.raises(TypeError, match="not registered"):
        Twice(3.0).save(tmp_path / "t.pm")
    persistence.register(Twice)
    try:
        Twice(3.0).save(tmp_path / "t.pm")
        assert pm.load(tmp_path / "t.pm").factor == 3.0
    finally:
        registry._registered.pop("Twice")
    with pytest.raises(pm.FileFormatError, match="unknown class 'Twice'"):
        pm.load(tmp_path / "t.pm")


# -- weights by name ------------------------------------------------------------------------
def _pair():
    a = pm.Sequential().add(pm.Linear(4, 3).setName("fc1")).add(pm.Linear(3, 2).setName("fc2"))
    b = pm.Sequential().add(pm.Linear(4, 3).setName("fc1")).add(pm.Linear(3, 2).setName("fc2"))
    return a, b


def test_save_and_load_weights(tmp_path):
    a, b = _pair()
    assert a.saveWeights(tmp_path / "w.pm") is a
    assert b.loadWeights(tmp_path / "w.pm") is b
    for x, y in zip(a.parameters()[0], b.parameters()[0], strict=True):
        assert np.array_equal(x, y)
    with pytest.raises(FileExistsError):
        a.saveWeights(tmp_path / "w.pm")


def test_load_weights_casts_to_the_model_dtype(tmp_path):
    a, b = _pair()
    a.double().saveWeights(tmp_path / "w.pm")
    b.loadWeights(tmp_path / "w.pm")
    assert b.modules[0].weight.dtype == np.float32
    assert np.array_equal(b.modules[0].weight, a.modules[0].weight.astype(np.float32))


def test_match_all_raises_on_a_missing_module_and_changes_nothing(tmp_path):
    a, b = _pair()
    b.add(pm.Linear(2, 2).setName("fc3"))
    a.saveWeights(tmp_path / "w.pm")
    before = [np.copy(w) for w in b.parameters()[0]]
    with pytest.raises(ValueError, match="fc3.*no weights"):
        b.loadWeights(tmp_path / "w.pm")
    assert all(np.array_equal(x, y) for x, y in zip(before, b.parameters()[0], strict=True))
    b.loadWeights(tmp_path / "w.pm", matchAll=False)
    assert np.array_equal(b.modules[1].weight, a.modules[1].weight)
    assert np.array_equal(b.modules[2].weight, before[4])


@pytest.mark.parametrize("matchAll", [True, False])
def test_shape_mismatch_always_raises(matchAll, tmp_path):
    a, _ = _pair()
    b = pm.Sequential().add(pm.Linear(4, 3).setName("fc1")).add(pm.Linear(3, 5).setName("fc2"))
    a.saveWeights(tmp_path / "w.pm")
    before = np.copy(b.modules[0].weight)
    with pytest.raises(ValueError, match=r"weight .* has shape \(2, 3\), expected \(5, 3\)"):
        b.loadWeights(tmp_path / "w.pm", matchAll=matchAll)
    with pytest.raises(ValueError, match=r"has shape \(2, 3\), expected \(5, 3\)"):
        b.loadModelWeights(a, matchAll=matchAll)
    assert np.array_equal(b.modules[0].weight, before)


def test_load_model_weights(tmp_path):
    a, b = _pair()
    b.modules[1].setName("other")
    with pytest.raises(ValueError, match="other.*no weights"):
        b.loadModelWeights(a)
    assert b.loadModelWeights(a, matchAll=False) is b
    assert np.array_equal(b.modules[0].weight, a.modules[0].weight)
    assert not np.array_equal(b.modules[1].weight, a.modules[1].weight)


def test_weights_include_extra_state(tmp_path):
    """Running statistics (``_extra``) travel with the weights and the module."""
    class WithStats(pm.Linear):
        _extra = ("runningMean",)

        def __init__(self, inputSize, outputSize, dtype=np.float32):
            super().__init__(inputSize, outputSize, dtype=dtype)
            self.runningMean = np.zeros(outputSize, self.dtype)

    persistence.register(WithStats)
    try:
        a, b = WithStats(3, 2).setName("s"), WithStats(3, 2).setName("s")
        a.runningMean[...] = [1.5, -2.0]
        a.saveWeights(tmp_path / "w.pm")
        b.loadWeights(tmp_path / "w.pm")
        assert np.array_equal(b.runningMean, a.runningMean)
        a.save(tmp_path / "m.pm")
        r = pm.load(tmp_path / "m.pm")
        assert np.array_equal(r.runningMean, a.runningMean)
        b.runningMean[...] = 0
        b.loadModelWeights(a)
        assert np.array_equal(b.runningMean, a.runningMean)
    finally:
        registry._registered.pop("WithStats")


def test_duplicate_names_cannot_be_saved_by_name(tmp_path):
    s = pm.Sequential().add(pm.Linear(2, 2).setName("x")).add(pm.Linear(2, 2).setName("x"))
    with pytest.raises(ValueError, match="several modules are named 'x'"):
        s.saveWeights(tmp_path / "w.pm")


# -- optimizer state ------------------------------------------------------------------------
def test_state_round_trip(tmp_path):
    state = {"evalCounter": 7, "learningRate": 0.01, "dfdx": np.arange(5.0),
             "nested": {"m": np.ones((2, 3), np.float32), 3: [1, 2.5, "x", None, True]},
             "pair": (1, 2)}
    persistence.save_state(tmp_path / "s.pm", state)
    got = persistence.load_state(tmp_path / "s.pm")
    assert got.keys() == state.keys()
    assert got["evalCounter"] == 7 and got["learningRate"] == 0.01 and got["pair"] == (1, 2)
    assert np.array_equal(got["dfdx"], state["dfdx"])
    assert got["nested"][3] == [1, 2.5, "x", None, True]
    assert got["nested"]["m"].dtype == np.float32
    with pytest.raises(pm.FileFormatError, match="holds 'state', not 'module'"):
        pm.load(tmp_path / "s.pm")
    with pytest.raises(TypeError):
        persistence.save_state(tmp_path / "t.pm", {"model": pm.Linear(2, 2)})


# -- refusing bad files ---------------------------------------------------------------------
def _craft(path, entries, checksum=True):
    """A zip of ``entries`` ({name: bytes}) with a matching checksum.json."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        sums = {}
        for name, data in entries.items():
            zf.writestr(name, data)
            sums[name] = {"size": len(data), "crc32": zipfile.crc32(data)}
        if checksum:
            zf.writestr("checksum.json", json.dumps({"algorithm": "crc32", "entries": sums}))


def _entries(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n != "checksum.json"}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.pm"
    pm.Sequential().add(pm.Linear(4, 3)).save(path)
    return path


def test_not_a_zip(tmp_path):
    (tmp_path / "x.pm").write_bytes(b"\x80\x04K\x01." * 100)
    with pytest.raises(pm.FileFormatError, match="not a readable zip"):
        pm.load(tmp_path / "x.pm")


def test_truncated_files(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        (tmp_path / "t.pm").write_bytes(data[:cut])
        with pytest.raises(pm.FileFormatError):
            pm.load(tmp_path / "t.pm")


def test_every_flipped_byte_is_caught_or_harmless(saved, tmp_path):
    """A corrupted byte anywhere gives FileFormatError, or (in zip bookkeeping that no
    reader uses, such as timestamps) a module identical to the saved one."""
    data = saved.read_bytes()
    good = pm.load(saved)
    for i in range(0, len(data), 7):
        bad = bytearray(data)
        bad[i] ^= 0x41
        (tmp_path / "f.pm").write_bytes(bytes(bad))
        try:
            r = pm.load(tmp_path / "f.pm")
        except pm.FileFormatError:
            continue
        assert _snapshot(r) == _snapshot(good), i
        assert np.array_equal(r.modules[0].weight, good.modules[0].weight), i


def test_wrong_checksum(saved, tmp_path):
    entries = _entries(saved)
    with zipfile.ZipFile(tmp_path / "c.pm", "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr("checksum.json", json.dumps({"algorithm": "crc32", "entries": {
            n: {"size": len(d), "crc32": 1234} for n, d in entries.items()}}))
    with pytest.raises(pm.FileFormatError, match="checksum mismatch"):
        pm.load(tmp_path / "c.pm")


def test_array_data_corrupted(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as zf:
        info = zf.getinfo("arrays/0.npy")
    nlen, xlen = struct.unpack_from("<2H", data, info.header_offset + 26)
    data[info.header_offset + 30 + nlen + xlen + 140] ^= 1  # inside the weights
    (tmp_path / "c.pm").write_bytes(bytes(data))
    with pytest.raises(pm.FileFormatError, match="checksum mismatch in arrays/0.npy"):
        pm.load(tmp_path / "c.pm")


def test_newer_format_version(saved, tmp_path):
    entries = _entries(saved)
    d = json.loads(entries["definition.json"])
    d["formatVersion"] = persistence.FORMAT_VERSION + 1
    entries["definition.json"] = json.dumps(d).encode()
    _craft(tmp_path / "n.pm", entries)
    with pytest.raises(pm.FileFormatError, match="format version 2 .* upgrade pymodules"):
        pm.load(tmp_path / "n.pm")


@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "builtins.eval",
                                  "pymodules.nn.linear.Linear", "Module.__subclasses__",
                                  "FileFormatError"])
def test_unknown_class(name, saved, tmp_path):
    entries = _entries(saved)
    d = json.loads(entries["definition.json"])
    d["modules"][1]["class"] = name
    entries["definition.json"] = json.dumps(d).encode()
    _craft(tmp_path / "u.pm", entries)
    with pytest.raises(pm.FileFormatError, match="unknown class"):
        pm.load(tmp_path / "u.pm")


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payloads_do_nothing(saved, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    assert not marker.exists()
    # 1. an object array: a .npy header with dtype |O followed by a pickle
    head = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    head += b" " * (63 - len(head) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + payload
    entries = _entries(saved)
    entries["arrays/0.npy"] = npy
    _craft(tmp_path / "p1.pm", entries)
    # 2. a pickle where the definition should be
    entries = _entries(saved)
    entries["definition.json"] = payload
    _craft(tmp_path / "p2.pm", entries)
    # 3. an extra pickled entry, as other formats carry
    entries = _entries(saved)
    entries["data.pkl"] = payload
    _craft(tmp_path / "p3.pm", entries)
    # 4. a registered value class whose state smuggles a pickle
    entries = _entries(saved)
    d = json.loads(entries["definition.json"])
    d["modules"][1]["kwargs"]["wRegularizer"] = {"$object": "L2Regularizer",
                                                 "state": {"__reduce__": payload.hex()}}
    d["modules"][1]["kwargs"]["bRegularizer"] = {"$pickle": payload.hex()}
    entries["definition.json"] = json.dumps(d).encode()
    _craft(tmp_path / "p4.pm", entries)
    for i, reason in ((1, "dtype object is not allowed"), (2, "definition.json is garbled"),
                      (3, "unexpected entry 'data.pkl'"), (4, "garbled value")):
        with pytest.raises(pm.FileFormatError, match=reason):
            pm.load(tmp_path / f"p{i}.pm")
    assert not marker.exists()


def test_zip_bombs_and_oversized_entries_are_refused_before_reading(saved, tmp_path):
    # a compressed entry: 1 GB of zeros in a few kB
    with zipfile.ZipFile(tmp_path / "b.pm", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("arrays/0.npy", "w", force_zip64=True) as f:
            zero = bytes(1 << 20)
            for _ in range(1024):
                f.write(zero)
    assert (tmp_path / "b.pm").stat().st_size < 10 << 20
    with pytest.raises(pm.FileFormatError, match="compressed"):
        pm.load(tmp_path / "b.pm")
    # an entry declaring more bytes than the file holds
    data = bytearray(saved.read_bytes())
    cd = data.index(b"arrays/0.npy", data.index(b"PK\x01\x02")) - 46
    data[cd + 20:cd + 28] = (2**31).to_bytes(4, "little") * 2
    (tmp_path / "o.pm").write_bytes(bytes(data))
    with pytest.raises(pm.FileFormatError, match="declares 2147483648 bytes"):
        pm.load(tmp_path / "o.pm")
    # a .npy header promising a huge array in a small entry
    entries = _entries(saved)
    head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    head += b" " * (63 - len(head) % 64) + b"\n"
    entries["arrays/0.npy"] = b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head
    _craft(tmp_path / "h.pm", entries)
    with pytest.raises(pm.FileFormatError, match="header says"):
        pm.load(tmp_path / "h.pm")
    # a definition too long to be read
    entries = _entries(saved)
    entries["definition.json"] = b" " * (archive.MAX_JSON + 1)
    _craft(tmp_path / "j.pm", entries)
    with pytest.raises(pm.FileFormatError, match="more than the limit"):
        pm.load(tmp_path / "j.pm")


def test_deeply_nested_definition(saved, tmp_path):
    entries = _entries(saved)
    d = json.loads(entries["definition.json"])
    d["modules"][1]["kwargs"]["wRegularizer"] = "NESTED"
    entries["definition.json"] = json.dumps(d).replace(
        '"NESTED"', "[" * 100000 + "]" * 100000).encode()
    _craft(tmp_path / "d.pm", entries)
    with pytest.raises(pm.FileFormatError, match="too deep|garbled"):
        pm.load(tmp_path / "d.pm")


def test_missing_checksum_or_unlisted_entry(saved, tmp_path):
    _craft(tmp_path / "a.pm", _entries(saved), checksum=False)
    with pytest.raises(pm.FileFormatError, match="no checksum.json"):
        pm.load(tmp_path / "a.pm")
    entries = _entries(saved)
    with zipfile.ZipFile(tmp_path / "b.pm", "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        zf.writestr("checksum.json", json.dumps({"algorithm": "crc32", "entries": {}}))
    with pytest.raises(pm.FileFormatError, match="do not match the checksum list"):
        pm.load(tmp_path / "b.pm")


# -- concurrency and crashes ------------------------------------------------------------
@pytest.mark.parametrize("overWrite", [False, True])
def test_racing_threads_leave_one_valid_file(overWrite, tmp_path):
    path = tmp_path / "m.pm"
    models = [pm.Linear(300, 200).setName(f"m{i}") for i in range(6)]
    outcomes = [None] * len(models)
    barrier = threading.Barrier(len(models))

    def save(i):
        barrier.wait()
        try:
            models[i].save(path, overWrite=overWrite)
            outcomes[i] = "saved"
        except FileExistsError:
            outcomes[i] = "exists"

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = pm.load(path)
    winner = models[int(r.getName()[1:])]
    assert np.array_equal(r.weight, winner.weight)
    if overWrite:
        assert outcomes == ["saved"] * len(models)
    else:
        assert sorted(outcomes) == ["exists"] * (len(models) - 1) + ["saved"]
        assert outcomes[int(r.getName()[1:])] == "saved"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pm"]


_CHILD = """
import sys, numpy as np, pymodules as pm
pm.setSeed(int(sys.argv[2]))
m = pm.Linear(300, 200).setName("p" + sys.argv[2])
try:
    m.save(sys.argv[1], overWrite=sys.argv[3] == "1")
    print("saved")
except FileExistsError:
    print("exists")
"""


@pytest.mark.parametrize("overWrite", [False, True])
def test_racing_processes_leave_one_valid_file(overWrite, tmp_path):
    path = tmp_path / "m.pm"
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(i),
                               str(int(overWrite))], stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    outcomes = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    r = pm.load(path)
    i = int(r.getName()[1:])
    pm.setSeed(i)
    assert np.array_equal(r.weight, pm.Linear(300, 200).weight)
    assert outcomes[i] == "saved"
    if not overWrite:
        assert sorted(outcomes) == ["exists"] * 3 + ["saved"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.pm"]


_KILLED = """
import sys, pymodules as pm
from pymodules.persistence import archive
put = archive._ZipWriter._put
def pause_midway(self, data):
    put(self, data)
    if self.offset > 1 << 20:
        print("midway", flush=True)
        sys.stdin.read()  # wait here for SIGKILL
archive._ZipWriter._put = pause_midway
archive.CHUNK = 1 << 18
pm.Linear(2000, 1000).setName("new").save(sys.argv[1], overWrite=True)
"""


def test_a_save_killed_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.pm"
    old = pm.Linear(20, 10).setName("old").save(path)
    before = path.read_bytes()
    p = subprocess.Popen([sys.executable, "-c", _KILLED, str(path)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "midway"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
        p.stdin.close()
        p.stdout.close()
    assert p.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    r = pm.load(path)
    assert r.getName() == "old" and np.array_equal(r.weight, old.weight)


def test_chunked_reads_and_writes_check_the_crc(tmp_path, monkeypatch):
    """Large arrays are written and read in chunks, their CRC on a worker thread."""
    monkeypatch.setattr(archive, "CHUNK", 4096)
    m = pm.Linear(300, 200)
    m.save(tmp_path / "m.pm")
    r = pm.load(tmp_path / "m.pm")
    assert np.array_equal(r.weight, m.weight)
    data = bytearray((tmp_path / "m.pm").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "c.pm").write_bytes(bytes(data))
    with pytest.raises(pm.FileFormatError, match="checksum mismatch in arrays/0.npy"):
        pm.load(tmp_path / "c.pm")


def test_files_are_those_zlib_crc32_would_write(tmp_path, monkeypatch):
    """The engine's CRC-32 leaves the format as it was: zip readers verify it with zlib's,
    and a save that used zlib.crc32 writes the same bytes."""
    monkeypatch.setattr(archive, "CHUNK", 4096)  # several chunks, on the worker
    m = pm.Sequential().add(pm.Linear(300, 200)).add(pm.Linear(200, 7))
    m.save(tmp_path / "a.pm")
    with zipfile.ZipFile(tmp_path / "a.pm") as zf:
        assert zf.testzip() is None
        sums = json.loads(zf.read("checksum.json"))["entries"]
        for info in zf.infolist():
            if info.filename != "checksum.json":
                assert sums[info.filename]["crc32"] == zlib.crc32(zf.read(info)) == info.CRC
    monkeypatch.setattr(archive, "crc32", zlib.crc32)
    m.save(tmp_path / "b.pm")
    assert (tmp_path / "a.pm").read_bytes() == (tmp_path / "b.pm").read_bytes()
    assert np.array_equal(pm.load(tmp_path / "a.pm").modules[0].weight, m.modules[0].weight)


def test_loading_draws_no_random_numbers(tmp_path):
    pm.Sequential().add(pm.Linear(30, 20)).add(pm.Linear(20, 2)).save(tmp_path / "m.pm")
    pm.setSeed(3)
    expected = pm.random.generator().random(5)
    pm.setSeed(3)
    pm.load(tmp_path / "m.pm")
    assert np.array_equal(pm.random.generator().random(5), expected)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"inputSize": 10**7, "outputSize": 10**7}, "cannot rebuild Linear"),
    ({"inputSize": 5, "outputSize": 3}, r"has shape \(3, 4\), expected \(3, 5\)"),
    ({"inputSize": "4", "outputSize": [3]}, "cannot rebuild Linear"),
    ({"inputSize": 4, "outputSize": 3, "withBias": False}, "the file has params"),
    ({"inputSize": 4, "outputSize": 3, "nonsense": 1}, "cannot rebuild Linear"),
])
def test_arguments_that_do_not_fit_the_arrays(kwargs, reason, saved, tmp_path):
    entries = _entries(saved)
    d = json.loads(entries["definition.json"])
    d["modules"][1]["kwargs"] = kwargs
    entries["definition.json"] = json.dumps(d).encode()
    _craft(tmp_path / "a.pm", entries)
    with pytest.raises(pm.FileFormatError, match=reason):
        pm.load(tmp_path / "a.pm")


def test_batch_normalization_weights_carry_running_statistics(tmp_path):
    a = pm.Sequential().add(pm.Linear(4, 3).setName("fc")).add(
        _warm(pm.BatchNormalization(3).setName("bn"), (6, 3)))
    b = pm.Sequential().add(pm.Linear(4, 3).setName("fc")).add(
        pm.BatchNormalization(3).setName("bn"))
    assert not np.array_equal(a.modules[1].runningMean, b.modules[1].runningMean)
    a.saveWeights(tmp_path / "w.pm")
    b.loadWeights(tmp_path / "w.pm")
    for name in ("weight", "bias", "runningMean", "runningVar"):
        assert np.array_equal(getattr(b.modules[1], name), getattr(a.modules[1], name)), name
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    assert np.array_equal(a.evaluate().forward(x), b.evaluate().forward(x))


def test_loading_allocates_the_weights_once_and_no_gradients(tmp_path):
    """A loaded model holds its weights only: at most 1.2x their bytes are traced while it
    loads, and gradients appear on first use."""
    m = pm.Sequential().add(pm.Linear(500, 400, dtype=np.float64)) \
        .add(pm.Linear(400, 300, dtype=np.float64))
    m.save(tmp_path / "m.pm")
    params = sum(w.nbytes for w in m.parameters()[0])
    tracemalloc.start()
    try:
        r = pm.load(tmp_path / "m.pm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert params < peak <= 1.2 * params
    first = r.modules[0]
    assert "gradWeight" not in vars(first) and "gradBias" not in vars(first)
    assert first.gradWeight.shape == (400, 500) and first.gradWeight.dtype == np.float64
    assert not first.gradWeight.any() and first.gradWeight is first.gradWeight
    x = np.ones((2, 500))
    r.forward(x)
    r.backward(x, np.ones((2, 300), np.float64))
    assert r.modules[1].gradBias.dtype == np.float64 and np.all(r.modules[1].gradBias == 2)


def test_an_overwritten_file_is_released(tmp_path):
    """Saving over a file holds the replaced one open only until a thread closes it."""
    fds = os.path.join("/proc", str(os.getpid()), "fd")
    if not os.path.isdir(fds):
        pytest.skip("needs /proc to count open files")
    m = pm.Linear(300, 200)
    m.save(tmp_path / "m.pm")
    before = len(os.listdir(fds))
    for _ in range(5):
        m.save(tmp_path / "m.pm", overWrite=True)
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        m.save(tmp_path / "d", overWrite=True)  # a failed replace releases its hold too
    for t in threading.enumerate():
        if t.name == "pymodules-release":
            t.join()
    assert len(os.listdir(fds)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "m.pm"]
    assert np.array_equal(pm.load(tmp_path / "m.pm").weight, m.weight)


def test_writeback_steps_cover_the_file(tmp_path, monkeypatch):
    """With a small writeback step, a save hands every byte to the disk in order."""
    if storage._start_writeback is None:
        pytest.skip("no sync_file_range here")
    ranges = []
    real = storage._start_writeback

    def record(fd, offset, length, flags):
        ranges.append((offset, length))
        return real(fd, offset, length, flags)

    monkeypatch.setattr(storage, "_start_writeback", record)
    monkeypatch.setattr(storage, "_WRITEBACK_STEP", 64 << 10)
    monkeypatch.setattr(archive, "CHUNK", 16 << 10)
    m = pm.Linear(300, 200, dtype=np.float64)
    m.save(tmp_path / "m.pm")
    assert len(ranges) >= 7
    assert ranges[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    assert ranges[-1][0] + ranges[-1][1] <= os.path.getsize(tmp_path / "m.pm")
    assert np.array_equal(pm.load(tmp_path / "m.pm").weight, m.weight)


# -- initial arrays are not pinned, reset keeps them, hasName survives -------------------
def test_initial_arrays_are_not_pinned_and_saved_once(tmp_path, rng):
    import weakref

    w = rng.standard_normal((1000, 1000)).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32)
    ref = weakref.ref(w)
    m = pm.Linear(1000, 1000, initWeight=w, initBias=b)
    np.testing.assert_array_equal(m.weight, w)
    del w
    assert ref() is None  # neither the layer nor its constructor record keeps it
    m.save(tmp_path / "m.pm")
    size = os.path.getsize(tmp_path / "m.pm")
    assert 4_004_000 <= size < 4_004_000 + 64_000  # the weights once: 4 MB, not 8
    r = pm.load(tmp_path / "m.pm")
    np.testing.assert_array_equal(r.weight, m.weight)
    r.reset()  # the loaded layer keeps BigDL's rule too
    np.testing.assert_array_equal(r.weight, m.weight)
    np.testing.assert_array_equal(r.bias, b)


def test_reset_keeps_explicit_initial_arrays(rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    m = pm.Linear(4, 3, initWeight=w)
    bias = m.bias.copy()
    m.gradWeight += 1
    assert m.reset() is m
    np.testing.assert_array_equal(m.weight, w)  # given: kept
    assert not np.array_equal(m.bias, bias)      # drawn: drawn again
    assert not m.gradWeight.any()
    b = rng.standard_normal(3)
    m = pm.Linear(4, 3, initBias=b, dtype=np.float64).reset()
    np.testing.assert_array_equal(m.bias, b)
    c = pm.SpatialConvolution(2, 3, 2, 2, initWeight=np.ones((3, 2, 2, 2))).reset()
    assert (c.weight == 1).all()


def test_has_name_is_false_until_set_name_and_survives_save(tmp_path):
    model = pm.Sequential().add(pm.Linear(2, 2).setName("enc")).add(pm.ReLU())
    assert not model.hasName() and model.modules[0].hasName()
    assert not model.modules[1].hasName()
    assert not pm.Input().element.hasName() and pm.Input("x").element.hasName()
    model.save(tmp_path / "m.pm")
    r = pm.load(tmp_path / "m.pm")
    assert [m.hasName() for m in r.modules_preorder()] == [False, True, False]
    assert [m.getName() for m in r.modules_preorder()] == \
        [m.getName() for m in model.modules_preorder()]
    assert not model.cloneModule().hasName() and model.cloneModule().modules[0].hasName()


# -- clearState releases every cache; cloneModule copies none ----------------------------
def _kept_state(m):
    """Attribute names of ``m`` that are state, not cache."""
    names = {a for pair in m._params for a in pair} | set(m._extra) | set(m._persist)
    return names | {"_ctor", "modules", "_clones"}


def _cached_arrays(module):
    """Every ndarray reachable from the tree's modules outside their declared state
    (parameters, gradients, extra, persisted attributes), with where it was found."""
    found, seen = [], set()

    def walk(v, where, depth=0):
        if id(v) in seen or depth > 12:
            return
        seen.add(id(v))
        if isinstance(v, np.ndarray):
            found.append((where, v))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]", depth + 1)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}[{k!r}]", depth + 1)

    for m in module.modules_preorder():
        for attr, v in vars(m).items():
            if attr not in _kept_state(m) and not isinstance(v, pm.Module):
                walk(v, f"{m.getName()}.{attr}")
    return found


def _forward_backward(model, x):
    out = model.forward(x)
    go = [np.ones_like(o) for o in out] if isinstance(out, list) else np.ones_like(out)
    if any(isinstance(o, list) for o in (out if isinstance(out, list) else [])):
        return out
    model.backward(x, go)
    return out


def _is_or_views(a, targets):
    base = a
    while base is not None:
        if any(base is t for t in targets):
            return True
        base = base.base
    return False


@pytest.mark.parametrize("make,make_input", [
    pytest.param(make, make_input, id=f"{cls.__name__}{i}")
    for cls, cases in EXAMPLES.items() for i, (make, make_input) in enumerate(cases)
    if make_input is not None])
def test_clear_state_releases_every_cache(make, make_input, rng):
    model = make()
    x = make_input(rng)
    x = _cast(x, model.dtype)
    _forward_backward(model, x)
    out = model.output
    callers = [a for a in (x if isinstance(x, list) else [x]) if isinstance(a, np.ndarray)]
    assert model.clearState() is model
    left = [(w, a.nbytes) for w, a in _cached_arrays(model) if a.nbytes]
    assert left == []
    outs = out if isinstance(out, list) else [out]
    for where, a in _cached_arrays(model):
        assert not _is_or_views(a, callers + [o for o in outs if isinstance(o, np.ndarray)]), \
            where
    _forward_backward(model, x)  # and it runs again after


def test_graph_clear_state_drops_the_callers_input(rng):
    import weakref

    x = pm.Input()
    g = pm.Graph(x, pm.Linear(300, 2)(pm.ReLU()(pm.Linear(1000, 300)(x))))
    data = rng.standard_normal((1000, 1000)).astype(np.float32)  # 4 MB
    g.forward(data)
    g.backward(data, np.ones((1000, 2), np.float32))
    ref = weakref.ref(data)
    del data
    g.clearState()
    assert ref() is None  # no per-node list keeps the caller's input
    assert sum(a.nbytes for _, a in _cached_arrays(g)) == 0


def test_clone_of_a_model_that_ran_copies_no_cache(rng):
    x = pm.Input()
    g = pm.Graph(x, pm.Linear(300, 2)(pm.ReLU()(pm.Linear(1000, 300)(x))))
    data = rng.standard_normal((500, 1000)).astype(np.float32)
    g.forward(data)
    g.backward(data, np.ones((500, 2), np.float32))
    tracemalloc.start()
    try:
        c = g.cloneModule()
        copied = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    weights = sum(w.nbytes for w in g.parameters()[0]) * 2  # weights and their gradients
    assert copied < weights + 200_000  # the caches (2 MB of input, outputs) are not copied
    assert sum(a.nbytes for _, a in _cached_arrays(c)) == 0
    assert g.output.size and c.forward(data).shape == (500, 2)
    assert [m.getName() for m in c.modules_preorder()] == \
        [m.getName() for m in g.modules_preorder()]


# -- weights by position, when no name matches ---------------------------------------
def _fresh():
    x = pm.Input()
    h = pm.Sequential(pm.Linear(4, 5), pm.ReLU(), pm.BatchNormalization(5))(x)
    return pm.Graph(x, pm.Linear(5, 2)(h))


def _weights_of(m):
    return [np.copy(w) for w in m.parameters()[0] + m.getExtraParameter()]


@pytest.mark.parametrize("matchAll", [True, False])
@pytest.mark.parametrize("via", ["file", "model"])
def test_two_fresh_models_of_one_structure_exchange_weights(via, matchAll, tmp_path, caplog):
    a, b = _fresh(), _fresh()
    a.modules[1].modules[2].runningMean[...] = 3.0
    assert not any(m.getName() in {n.getName() for n in a.modules_preorder()}
                   for m in b.modules_preorder())
    with caplog.at_level("INFO", logger="pymodules.persistence"):
        if via == "file":
            a.saveWeights(tmp_path / "w.pm")
            assert b.loadWeights(tmp_path / "w.pm", matchAll=matchAll) is b
        else:
            assert b.loadModelWeights(a, matchAll=matchAll) is b
    for x, y in zip(_weights_of(a), _weights_of(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert [r.getMessage() for r in caplog.records] == [
        f"{b.getName()}: loaded the weights of 3 of 3 modules from "
        f"{tmp_path / 'w.pm' if via == 'file' else a.getName()}, matched by position"]


def test_names_win_over_positions_and_the_log_says_so(tmp_path, caplog):
    a, b = _pair()
    a.modules.reverse()  # names still match, positions do not
    a.saveWeights(tmp_path / "w.pm")
    with caplog.at_level("INFO", logger="pymodules.persistence"):
        b.loadWeights(tmp_path / "w.pm")
    assert np.array_equal(b.modules[0].weight, a.modules[1].weight)
    assert caplog.records[-1].getMessage().endswith("loaded the weights of 2 of 2 modules "
                                                    f"from {tmp_path / 'w.pm'}, matched by name")


@pytest.mark.parametrize("matchAll", [True, False])
def test_a_load_that_matches_nothing_raises(matchAll, tmp_path):
    a = pm.Sequential(pm.Linear(4, 3), pm.Linear(3, 2))
    b = pm.Sequential(pm.Linear(4, 3), pm.ReLU(), pm.Linear(3, 2))  # another structure
    a.saveWeights(tmp_path / "w.pm")
    before = _weights_of(b)
    for load in (lambda: b.loadWeights(tmp_path / "w.pm", matchAll=matchAll),
                 lambda: b.loadModelWeights(a, matchAll=matchAll)):
        with pytest.raises(ValueError, match=r"no name matches, and the trees differ in "
                                             r"structure"):
            load()
    assert all(np.array_equal(x, y) for x, y in zip(before, _weights_of(b), strict=True))


def test_weight_files_without_positions_still_load_by_name(tmp_path):
    a, b = _pair()
    enc = codec.Encoder()  # the layout of files written before positions were saved
    table, _ = weights.weight_table(a)
    definition = {"kind": "weights", "weights": {name: {attr: enc.encode(x) for attr, x in
                                                        arrays.items()}
                                                  for name, arrays in table.items()}}
    persistence._write(tmp_path / "old.pm", definition, enc.arrays, False, None)
    b.loadWeights(tmp_path / "old.pm")
    assert all(np.array_equal(x, y) for x, y in zip(_weights_of(a), _weights_of(b), strict=True))
    c = pm.Sequential(pm.Linear(4, 3), pm.Linear(3, 2))
    with pytest.raises(ValueError, match=r"no module matches .*old.pm by name$"):
        c.loadWeights(tmp_path / "old.pm", matchAll=False)


def test_files_record_the_version_the_package_is_installed_as(tmp_path):
    """pymodules.__version__ is the one source: pyproject.toml reads it, files record it."""
    import importlib.metadata

    pm.Linear(2, 2).save(tmp_path / "m.pm")
    assert _definition(tmp_path / "m.pm")["libraryVersion"] == pm.__version__
    assert importlib.metadata.version("pymodules") == pm.__version__
