"""pm.fromTorch, Module.toTorchStateDict and Module.setFlatParameters."""

import numpy as np
import pytest
from tolerance import reduction_tol

import pymodules as pm
from pymodules.interop.torch import ConversionError

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(autouse=True)
def _torch_seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def _run_torch(m, x):
    with torch.no_grad():
        y = m(torch.from_numpy(np.ascontiguousarray(x)))
    return (y[0] if isinstance(y, tuple) else y).numpy()


def _agree(torch_model, x, k, dtype=np.float32):
    """fromTorch(torch_model) gives torch's output at ``x``: float64 to 1e-10; float32 as a
    length-``k`` reduction against the float64 result of the same weights."""
    torch_model = torch_model.to(torch.float64 if dtype == np.float64 else torch.float32)
    ours = pm.fromTorch(torch_model, dtype)
    y = ours.forward(x.astype(dtype)).copy()
    assert y.dtype == dtype
    ref = _run_torch(torch_model.double(), x.astype(np.float64))
    assert y.shape == ref.shape
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    else:
        rtol, atol = reduction_tol(dtype, k, np.abs(ref).max() + 1)
        np.testing.assert_allclose(y, ref, rtol=rtol, atol=float(atol))
    return ours


def _bn(m):
    """Non-trivial running statistics and affine parameters."""
    with torch.no_grad():
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2.0)
        if m.affine:
            m.weight.normal_()
            m.bias.normal_()
    return m


IMAGE = (2, 3, 9, 10)
CASES = [
    ("linear", lambda: nn.Linear(7, 5), (4, 7), 8),
    ("linear-nobias", lambda: nn.Linear(7, 5, bias=False), (4, 7), 8),
    ("conv1d", lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 11), 10),
    ("conv1d-groups", lambda: nn.Conv1d(4, 6, 3, groups=2, padding="same"), (2, 4, 9), 8),
    ("conv1d-dilated", lambda: nn.Conv1d(3, 4, 3, dilation=2), (2, 3, 12), 10),
    ("conv2d", lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0)), IMAGE, 20),
    ("conv2d-groups", lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False), (2, 4, 7, 7), 20),
    ("conv2d-dilated", lambda: nn.Conv2d(3, 2, 3, dilation=2, padding=2), IMAGE, 28),
    ("conv3d", lambda: nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 0)),
     (2, 2, 4, 5, 6), 26),
    ("convT2d", lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
     IMAGE, 30),
    ("convT2d-groups", lambda: nn.ConvTranspose2d(4, 2, 2, stride=2, groups=2), (2, 4, 5, 5),
     10),
    ("maxpool1d", lambda: nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 10), 1),
    ("avgpool1d", lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
     (2, 3, 10), 4),
    ("maxpool2d", lambda: nn.MaxPool2d(2), IMAGE, 1),
    ("maxpool2d-ceil", lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), IMAGE, 1),
    ("avgpool2d", lambda: nn.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1)), IMAGE, 7),
    ("avgpool2d-exclude", lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True,
                                               count_include_pad=False), IMAGE, 10),
    ("maxpool3d", lambda: nn.MaxPool3d(2, stride=(1, 2, 2)), (2, 2, 4, 5, 6), 1),
    ("avgpool3d", lambda: nn.AvgPool3d((2, 3, 3), padding=(1, 1, 1)), (2, 2, 4, 5, 6), 19),
    ("adaptive-avg", lambda: nn.AdaptiveAvgPool2d((1, 1)), IMAGE, 91),
    ("bn1d", lambda: _bn(nn.BatchNorm1d(5, eps=1e-3, momentum=0.3)).eval(), (4, 5), 2),
    ("bn1d-noaffine", lambda: _bn(nn.BatchNorm1d(5, affine=False)).eval(), (4, 5), 2),
    ("bn2d", lambda: _bn(nn.BatchNorm2d(3)).eval(), IMAGE, 2),
    ("relu", lambda: nn.ReLU(), (3, 6), 1),
    ("tanh", lambda: nn.Tanh(), (3, 6), 1),
    ("sigmoid", lambda: nn.Sigmoid(), (3, 6), 1),
    ("leaky", lambda: nn.LeakyReLU(0.2), (3, 6), 1),
    ("elu", lambda: nn.ELU(0.7), (3, 6), 1),
    ("softmax", lambda: nn.Softmax(dim=1), (3, 6), 6),
    ("softmax-images", lambda: nn.Softmax(dim=1), IMAGE, 3),
    ("logsoftmax", lambda: nn.LogSoftmax(dim=-1), (3, 6), 6),
    ("dropout-eval", lambda: nn.Dropout(0.3).eval(), (3, 6), 1),
    ("identity", lambda: nn.Identity(), (3, 6), 1),
    ("flatten", lambda: nn.Flatten(), IMAGE, 1),
    ("flatten-2", lambda: nn.Flatten(2), IMAGE, 1),
    ("layernorm", lambda: nn.LayerNorm(6, eps=1e-6), (2, 3, 6), 12),
    ("lstm", lambda: nn.LSTM(4, 5, batch_first=True), (3, 6, 4), 40),
    ("lstm-nobias", lambda: nn.LSTM(4, 5, batch_first=True, bias=False), (3, 6, 4), 40),
    ("lstm-stacked", lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True, dropout=0.2).eval(),
     (3, 6, 4), 60),
    ("lstm-bi", lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True),
     (3, 6, 4), 80),
    ("lstm-time-first", lambda: nn.LSTM(4, 5, num_layers=2), (6, 3, 4), 60),
    ("rnn", lambda: nn.RNN(4, 5, batch_first=True), (3, 6, 4), 40),
    ("rnn-time-first-bi", lambda: nn.RNN(4, 5, bidirectional=True), (6, 3, 4), 40),
    ("rnn-relu-bi", lambda: nn.RNN(4, 3, num_layers=2, nonlinearity="relu", batch_first=True,
                                   bidirectional=True), (3, 6, 4), 40),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, make, shape, k", CASES, ids=[c[0] for c in CASES])
def test_each_layer_agrees_with_torch(name, make, shape, k, dtype, rng):
    _agree(make(), rng.standard_normal(shape), k, dtype)


def test_layernorm_weights_are_copied(rng):
    m = nn.LayerNorm(6, eps=1e-6)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    _agree(m, rng.standard_normal((4, 6)), 12, np.float64)


def test_embedding_agrees_with_torch(rng):
    m = nn.Embedding(10, 4, padding_idx=2)
    ours = pm.fromTorch(m)
    idx = rng.integers(0, 10, (3, 5))
    np.testing.assert_array_equal(ours.forward(idx), _run_torch(m, idx))
    assert ours.paddingValue == 2


def _lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10), nn.LogSoftmax(dim=1))


def _convnet():
    features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(nn.BatchNorm2d(8)), nn.ReLU(),
                             nn.AvgPool2d(2))
    return nn.Sequential(features, nn.Dropout(0.5), nn.Flatten(), nn.Linear(8 * 4 * 5, 16),
                         _bn(nn.BatchNorm1d(16)), nn.Tanh(), nn.Linear(16, 3), nn.Softmax(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_models_agree_in_evaluation(dtype, rng):
    _agree(_lenet().eval(), rng.standard_normal((5, 1, 28, 28)), 400, dtype)
    ours = _agree(_convnet().eval(), rng.standard_normal((4, 3, 8, 10)), 160, dtype)
    assert not any(m.isTraining() for m in ours.modules_preorder())


def test_batchnorm_in_training_uses_and_updates_batch_statistics(rng):
    tm = nn.Sequential(nn.Linear(6, 5), _bn(nn.BatchNorm1d(5, momentum=0.25)), nn.ReLU()).double()
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), _bn(nn.BatchNorm2d(3, eps=1e-3))).double()
    for model, shape in ((tm, (8, 6)), (conv, (4, 2, 6, 6))):
        model.train()
        ours = pm.fromTorch(model)
        assert ours.isTraining()
        x = rng.standard_normal(shape)
        for _ in range(2):  # twice: the running statistics move on both sides alike
            np.testing.assert_allclose(ours.forward(x), _run_torch(model, x), rtol=1e-10,
                                       atol=1e-10)
        bn_t = model[1]
        bn_o = ours.modules[1]
        np.testing.assert_allclose(bn_o.runningMean, bn_t.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(bn_o.runningVar, bn_t.running_var.numpy(), rtol=1e-12)


def test_modes_follow_torch():
    tm = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    tm[1].eval()
    ours = pm.fromTorch(tm)
    assert ours.isTraining() and ours.modules[0].isTraining()
    assert not ours.modules[1].isTraining()


# -- state dicts --------------------------------------------------------------------------
def _fresh_copy(model):
    """The same architecture with other weights (torch's init under another seed)."""
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
        for b in clone.buffers():
            if b.is_floating_point():
                b.add_(0.5)
    return clone


ROUND_TRIPS = {
    "lenet": (_lenet, (2, 1, 28, 28)),
    "convnet": (_convnet, (2, 3, 8, 10)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.MaxPool1d(2),
                                     nn.Conv1d(4, 2, 2, bias=False), nn.AvgPool1d(2)),
               (2, 3, 14)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 3, 2), nn.MaxPool3d(2)),
               (1, 2, 5, 5, 5)),
    "convT": (lambda: nn.Sequential(nn.ConvTranspose2d(4, 2, 3, stride=2, groups=2),
                                    nn.LayerNorm(15, eps=1e-6)), (2, 4, 7, 7)),
    "lstm": (lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True, bidirectional=True),
             (2, 5, 4)),
    "rnn": (lambda: nn.RNN(4, 5, num_layers=2, batch_first=True, dropout=0.1), (2, 5, 4)),
    "lstm-time-first": (lambda: nn.LSTM(4, 5, num_layers=2, bidirectional=True), (5, 2, 4)),
    "rnn-time-first": (lambda: nn.RNN(4, 5), (5, 2, 4)),
    "embedding": (lambda: nn.Sequential(nn.Embedding(9, 4), nn.Flatten(), nn.Linear(12, 2)),
                  None),
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_state_dict_round_trip(name, rng):
    make, shape = ROUND_TRIPS[name]
    tm = make().double().eval()
    ours = pm.fromTorch(tm)
    sd = ours.toTorchStateDict()
    assert list(sd) == [k for k in tm.state_dict() if k in sd]
    other = _fresh_copy(tm).eval()
    other.load_state_dict(sd, strict=True)
    x = rng.integers(0, 9, (2, 3)) if shape is None else rng.standard_normal(shape)
    np.testing.assert_allclose(_run_torch(other, x), _run_torch(tm, x), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(ours.forward(x), _run_torch(tm, x), rtol=1e-10, atol=1e-12)
    # and back: the torch model loaded from our dict converts to the same parameters
    again = pm.fromTorch(other)
    for a, b in zip(again.parameters()[0], ours.parameters()[0], strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_dict_of_a_hand_built_model_is_positional():
    model = pm.Sequential().add(pm.Linear(4, 3)).add(pm.ReLU()).add(pm.Linear(3, 2)) \
        .add(pm.Sequential().add(pm.SpatialBatchNormalization(2)))
    sd = model.toTorchStateDict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "3.0.weight", "3.0.bias",
                        "3.0.running_mean", "3.0.running_var", "3.0.num_batches_tracked"]
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd["0.weight"].dtype == torch.float32
    sd["0.weight"][0, 0] = 99.0  # a copy: the model keeps its weights
    assert model.modules[0].weight[0, 0] != 99.0


def test_lstm_bias_is_summed_and_blocks_reordered():
    tm = nn.LSTM(2, 3, batch_first=True)
    ours = pm.fromTorch(tm).modules[0]
    b = (tm.bias_ih_l0 + tm.bias_hh_l0).detach().numpy()
    i, f, g, o = np.split(b, 4)
    np.testing.assert_allclose(ours.bias, np.concatenate([i, g, f, o]), rtol=1e-6)
    sd = pm.Recurrent().add(ours).toTorchStateDict()
    np.testing.assert_allclose(sd["bias_ih_l0"].numpy(), b, rtol=1e-6)
    assert not sd["bias_hh_l0"].any()


# -- refusals -----------------------------------------------------------------------------
class _Custom(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("model, cls, where", [
    (nn.Sequential(nn.Linear(2, 2), nn.GRU(2, 2, batch_first=True)), "GRU", "'1'"),
    (nn.Sequential(nn.Sequential(nn.ReLU(), nn.ReLU(), _Custom())), "_Custom", "'0.2'"),
    (nn.Sequential(nn.BatchNorm3d(3)), "BatchNorm3d", "'0'"),
    (nn.LayerNorm(4), "LayerNorm", "the model itself"),
    (nn.LSTM(2, 3, proj_size=2), "LSTM", "proj_size"),
    (nn.Sequential(nn.Softmax(dim=-1)), "Softmax", "dim=1"),
    (nn.Sequential(nn.Conv2d(1, 1, 3, padding_mode="reflect")), "Conv2d", "'reflect'"),
    (nn.Sequential(nn.Conv2d(1, 1, 4, padding="same")), "Conv2d", "unevenly"),
    (nn.Sequential(nn.BatchNorm1d(3, momentum=None)), "BatchNorm1d", "momentum"),
    (nn.AdaptiveAvgPool2d(2), "AdaptiveAvgPool2d", "(1, 1)"),
    (nn.GELU(), "GELU", "no pymodules equivalent"),
])
def test_refusals_name_class_and_path(model, cls, where):
    with pytest.raises(ConversionError) as info:
        pm.fromTorch(model)
    assert cls in str(info.value) and where in str(info.value)


def test_refuses_mixed_or_integer_dtypes():
    with pytest.raises(ConversionError, match="float16"):
        pm.fromTorch(nn.Linear(2, 2).half())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        pm.fromTorch(np.zeros(3))


def test_state_dict_refuses_modules_without_torch_equivalent():
    model = pm.Sequential().add(pm.Linear(2, 2)).add(pm.CMul([2]))
    with pytest.raises(ConversionError, match=r"CMul.*'1'"):
        model.toTorchStateDict()


# -- flat parameters ----------------------------------------------------------------------
def _mlp(dtype=np.float32):
    return pm.Sequential().add(pm.Linear(5, 4, dtype=dtype)).add(pm.Tanh(dtype=dtype)) \
        .add(pm.Linear(4, 3, dtype=dtype))


def test_set_flat_parameters_copies_in_parameters_order(tmp_path, rng):
    src, dst = _mlp(), _mlp()
    flat, _ = src.getParameters()
    # the recipe of the README: BigDL's getParameters() saved with numpy, loaded here
    np.save(tmp_path / "w.npy", flat.astype(np.float64))
    assert dst.setFlatParameters(np.load(tmp_path / "w.npy")) is dst
    x = rng.standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_array_equal(dst.forward(x), src.forward(x))
    offset = 0
    for w in dst.parameters()[0]:
        np.testing.assert_array_equal(w.ravel(), flat[offset:offset + w.size])
        offset += w.size


def test_set_flat_parameters_updates_the_flat_views():
    m = _mlp(np.float64)
    flat, _ = m.getParameters()
    values = np.arange(flat.size, dtype=np.float64)
    m.setFlatParameters(values)
    np.testing.assert_array_equal(flat, values)
    assert m.getParameters()[0] is flat


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros(42, np.float32), ValueError, "got 42 values, the model has 39"),
    (np.zeros((39, 1), np.float32), ValueError, "1-D array, got shape"),
    (np.zeros(39, np.int64), TypeError, "float32 or float64 array, got int64"),
])
def test_set_flat_parameters_refuses(bad, err, match):
    m = _mlp()
    before = [w.copy() for w in m.parameters()[0]]
    with pytest.raises(err, match=match) as info:
        m.setFlatParameters(bad)
    assert "Sequential" in str(info.value)
    for a, b in zip(before, m.parameters()[0], strict=True):
        np.testing.assert_array_equal(a, b)
