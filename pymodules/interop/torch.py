"""PyTorch modules in and out: ``fromTorch`` builds the pymodules equivalent of a
``torch.nn.Module`` with its weights and running statistics; ``to_state_dict`` gives the
``state_dict`` of the equivalent torch model.

torch is imported inside the functions only. The input layout is torch's (NCHW images,
(N, C, L) sequences for the 1-D layers, batch-first (N, T, F) for the recurrent layers);
every input is batched.

Correspondences that are not one layer for one layer:

- ``Conv1d``, ``MaxPool1d``, ``AvgPool1d`` become ``Sequential(Unsqueeze(2), <2-D layer with a
  kernel height of 1>, Squeeze(2))``.
- ``LSTM``/``RNN`` with ``num_layers > 1`` become a ``Sequential`` of one ``Recurrent`` (or
  ``BiRecurrent``) per layer, with a ``Dropout`` between layers when ``dropout > 0``; the
  output is the sequence of hidden states, torch's ``output`` (not ``(h_n, c_n)``). Without
  ``batch_first`` they sit between two ``Transpose([(0, 1)])`` (time-first in and out).
- torch's LSTM has two biases, pymodules' one: ``bias_ih + bias_hh`` becomes the bias, and
  the gate blocks i, f, g, o become i, g, f, o.

Keys of ``to_state_dict`` are torch's for the equivalent model, by position as in
``torch.nn.Sequential``: the ``i``-th child of a Sequential is ``"i."``, so
``Sequential(Linear, ReLU, Linear)`` gives ``0.weight, 0.bias, 2.weight, 2.bias``. A
Sequential of the 1-D pattern above is one torch layer at its own position, and a Sequential
made only of Recurrents (and Dropouts between them) one multi-layer ``torch.nn.LSTM``/``RNN``
(keys ``weight_ih_l0``, ..., ``weight_ih_l1``, ...; ``_reverse`` for BiRecurrent's second
direction), also between the two Transposes of a time-first layer. The single LSTM bias
goes into ``bias_ih_l*``, ``bias_hh_l*`` is zero.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from pymodules.nn.activation import ELU, LeakyReLU, LogSoftMax, ReLU, Sigmoid, SoftMax, Tanh
from pymodules.nn.containers import Sequential
from pymodules.nn.conv import SpatialConvolution, SpatialDilatedConvolution, SpatialFullConvolution
from pymodules.nn.dropout import Dropout
from pymodules.nn.embedding import DOUBLEMAX, LookupTable
from pymodules.nn.layer_norm import EPS as LAYER_NORM_EPS
from pymodules.nn.layer_norm import LayerNormalization
from pymodules.nn.linear import Linear
from pymodules.nn.module import float_dtype
from pymodules.nn.normalization import BatchNormalization, SpatialBatchNormalization
from pymodules.nn.pooling import SpatialAveragePooling, SpatialMaxPooling
from pymodules.nn.recurrent import LSTM, BiRecurrent, Recurrent, RnnCell
from pymodules.nn.shape import Identity, InferReshape, Squeeze, Transpose, Unsqueeze
from pymodules.nn.table import JoinTable
from pymodules.nn.volumetric import (
    VolumetricAveragePooling,
    VolumetricConvolution,
    VolumetricMaxPooling,
)

#: torch's LSTM gate blocks (i, f, g, o) in pymodules' order (i, g, f, o), and back.
_TO_OURS = (0, 2, 1, 3)
_TO_TORCH = (0, 2, 1, 3)  # the swap of f and g is its own inverse


class ConversionError(ValueError):
    """A torch module (or a pymodules module, for to_state_dict) without an equivalent."""


def _where(path):
    return f"'{path}'" if path else "the model itself"


def _refuse(module, path, why):
    raise ConversionError(f"fromTorch: {type(module).__name__} at {_where(path)}: {why}")


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _array(t, dtype):
    return t.detach().cpu().numpy().astype(dtype, copy=True)


def fromTorch(module, dtype=None):
    """The pymodules equivalent of the torch module ``module`` (layers listed in
    ``pymodules.interop.torch``), with copies of its weights and running statistics, each
    module in the mode (training or evaluation) of its torch counterpart. A module without
    an equivalent raises ConversionError naming its class and its path in the model.
    ``dtype`` None: the dtype of the torch parameters (float32 when there are none)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"fromTorch takes a torch.nn.Module, got {type(module).__name__}")
    floats = {p.dtype for p in module.parameters()} | \
        {b.dtype for b in module.buffers() if b.is_floating_point()}
    if floats - {torch.float32, torch.float64} or len(floats) > 1:
        raise ConversionError(f"fromTorch: the model holds {sorted(map(str, floats))}; "
                              f"pymodules takes float32 or float64, one of them")
    if dtype is None:
        dtype = np.float64 if floats == {torch.float64} else np.float32
    dtype = float_dtype(dtype)
    return _convert(module, "", dtype, torch.nn)


def _convert(m, path, dt, nn):
    out = _layer(m, path, dt, nn)
    # the modules made for ``m`` take its mode; a Sequential's children took their own
    for sub in [out] if type(m) is nn.Sequential else out.modules_preorder():
        sub.train = m.training
    return out


def _layer(m, path, dt, nn):  # noqa: C901 - one branch per torch class
    kind = type(m)
    if kind is nn.Sequential:
        seq = Sequential()
        for name, child in m.named_children():
            seq.add(_convert(child, f"{path}.{name}" if path else name, dt, nn))
        return seq
    if kind is nn.Linear:
        out = Linear(m.in_features, m.out_features, withBias=m.bias is not None, dtype=dt)
        return _copy(out, m, dt)
    if kind in (nn.Conv1d, nn.Conv2d):
        return _conv(m, path, dt, kind is nn.Conv1d)
    if kind is nn.Conv3d:
        _plain_conv(m, path, 3)
        (kT, kH, kW), (dT, dH, dW) = m.kernel_size, m.stride
        pT, pH, pW = _padding(m, path, 3)
        out = VolumetricConvolution(m.in_channels, m.out_channels, kT, kW, kH, dT, dW, dH,
                                    pT, pW, pH, withBias=m.bias is not None, dtype=dt)
        return _copy(out, m, dt)
    if kind is nn.ConvTranspose2d:
        if m.padding_mode != "zeros" or _pair(m.dilation) != (1, 1):
            _refuse(m, path, "only zero padding and dilation 1 have an equivalent "
                    "(SpatialFullConvolution)")
        (kH, kW), (dH, dW) = m.kernel_size, m.stride
        (pH, pW), (aH, aW) = m.padding, m.output_padding
        out = SpatialFullConvolution(m.in_channels, m.out_channels, kW, kH, dW, dH, pW, pH,
                                     aW, aH, nGroup=m.groups, noBias=m.bias is None, dtype=dt)
        return _copy(out, m, dt)
    if kind in (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d):
        return _pool(m, path, dt, kind in (nn.MaxPool1d, nn.AvgPool1d),
                     kind in (nn.MaxPool1d, nn.MaxPool2d))
    if kind in (nn.MaxPool3d, nn.AvgPool3d):
        return _pool3d(m, path, dt, kind is nn.MaxPool3d)
    if kind is nn.AdaptiveAvgPool2d:
        if _pair(m.output_size) != (1, 1):
            _refuse(m, path, f"output_size {m.output_size} has no equivalent; only (1, 1) "
                    f"(global average pooling)")
        return SpatialAveragePooling(1, 1, globalPooling=True, dtype=dt)
    if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
        return _batchnorm(m, path, dt, kind is nn.BatchNorm2d)
    if kind is nn.ReLU:
        return ReLU(dtype=dt)
    if kind is nn.Tanh:
        return Tanh(dtype=dt)
    if kind is nn.Sigmoid:
        return Sigmoid(dtype=dt)
    if kind is nn.LeakyReLU:
        return LeakyReLU(m.negative_slope, dtype=dt)
    if kind is nn.ELU:
        return ELU(m.alpha, dtype=dt)
    if kind is nn.Softmax:
        if m.dim not in (None, 1):
            _refuse(m, path, f"dim={m.dim}: pymodules' SoftMax works along axis 1 of "
                    f"(batch, features) and (batch, channels, height, width); use dim=1")
        return SoftMax(dtype=dt)
    if kind is nn.LogSoftmax:
        if m.dim not in (None, 1, -1):
            _refuse(m, path, f"dim={m.dim}: pymodules' LogSoftMax works along the features "
                    f"of (batch, features); use dim=1")
        return LogSoftMax(dtype=dt)
    if kind is nn.Dropout:
        return Dropout(m.p, dtype=dt)
    if kind is nn.Identity:
        return Identity(dtype=dt)
    if kind is nn.Flatten:
        if m.start_dim < 1 or m.end_dim != -1:
            _refuse(m, path, f"start_dim={m.start_dim}, end_dim={m.end_dim}: only "
                    f"start_dim >= 1 with end_dim=-1 has an equivalent (InferReshape)")
        return InferReshape([0] * (m.start_dim - 1) + [-1], batchMode=True, dtype=dt)
    if kind is nn.Embedding:
        if m.sparse:
            _refuse(m, path, "sparse gradients have no equivalent")
        out = LookupTable(m.num_embeddings, m.embedding_dim, paddingValue=m.padding_idx,
                          maxNorm=DOUBLEMAX if m.max_norm is None else m.max_norm,
                          normType=m.norm_type, shouldScaleGradByFreq=m.scale_grad_by_freq,
                          dtype=dt)
        out.weight[...] = _array(m.weight, dt)
        return out
    if kind is nn.LayerNorm:
        return _layer_norm(m, path, dt)
    if kind in (nn.LSTM, nn.RNN):
        return _recurrent(m, path, dt, kind is nn.LSTM)
    _refuse(m, path, "no pymodules equivalent (fromTorch converts Sequential, Linear, "
            "Conv1d/2d/3d, ConvTranspose2d, Max/AvgPool1d/2d/3d, AdaptiveAvgPool2d((1, 1)), "
            "BatchNorm1d/2d, ReLU, Tanh, Sigmoid, LeakyReLU, ELU, Softmax, LogSoftmax, "
            "Dropout, Identity, Flatten, Embedding, LayerNorm, LSTM, RNN)")


def _copy(out, m, dt):
    """Copy torch's weight and bias into ``out``'s arrays of the same shapes."""
    out.weight[...] = _array(m.weight, dt).reshape(out.weight.shape)
    if m.bias is not None:
        out.bias[...] = _array(m.bias, dt)
    return out


def _plain_conv(m, path, n):
    if m.padding_mode != "zeros":
        _refuse(m, path, f"padding_mode {m.padding_mode!r}: only 'zeros' has an equivalent")
    if n == 3 and (m.groups != 1 or _pair(m.dilation, 3) != (1, 1, 1)):
        _refuse(m, path, "groups and dilation have no equivalent (VolumetricConvolution)")


def _padding(m, path, n):
    pad = m.padding
    if pad == "valid":
        return (0,) * n
    if pad == "same":
        # torch pads (k - 1) * dilation in all, the odd one at the end; symmetric only
        dil = _pair(m.dilation, n)
        total = [d * (k - 1) for d, k in zip(dil, m.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            _refuse(m, path, "padding='same' with an even kernel pads unevenly; no equivalent")
        return tuple(t // 2 for t in total)
    return _pair(pad, n)


def _conv(m, path, dt, one_d):
    _plain_conv(m, path, 2)
    n = 1 if one_d else 2
    pads = _padding(m, path, n)
    ks, st, dil = _pair(m.kernel_size, n), _pair(m.stride, n), _pair(m.dilation, n)
    kH, kW = (1, ks[0]) if one_d else ks
    dH, dW = (1, st[0]) if one_d else st
    pH, pW = (0, pads[0]) if one_d else pads
    lH, lW = (1, dil[0]) if one_d else dil
    withBias = m.bias is not None
    if (lH, lW) != (1, 1):
        if m.groups != 1 or not withBias:
            _refuse(m, path, "dilation together with groups or without bias has no "
                    "equivalent (SpatialDilatedConvolution)")
        out = SpatialDilatedConvolution(m.in_channels, m.out_channels, kW, kH, dW, dH, pW,
                                        pH, lW, lH, dtype=dt)
    else:
        out = SpatialConvolution(m.in_channels, m.out_channels, kW, kH, dW, dH, pW, pH,
                                 nGroup=m.groups, withBias=withBias, dtype=dt)
    _copy(out, m, dt)
    return _as_1d(out, dt) if one_d else out


def _as_1d(layer, dt):
    """(N, C, L) through a 2-D layer as (N, C, 1, L)."""
    return Sequential().add(Unsqueeze(2, dtype=dt)).add(layer).add(Squeeze(2, dtype=dt))


def _pool(m, path, dt, one_d, is_max):
    n = 1 if one_d else 2
    ks = _pair(m.kernel_size, n)
    st = _pair(ks if m.stride is None else m.stride, n)
    pads = _pair(m.padding, n)
    kH, kW = (1, ks[0]) if one_d else ks
    dH, dW = (1, st[0]) if one_d else st
    pH, pW = (0, pads[0]) if one_d else pads
    if is_max:
        if _pair(m.dilation, n) != (1,) * n or m.return_indices:
            _refuse(m, path, "dilation and return_indices have no equivalent")
        out = SpatialMaxPooling(kW, kH, dW, dH, pW, pH, toCeil=m.ceil_mode, dtype=dt)
    else:
        if getattr(m, "divisor_override", None) is not None:
            _refuse(m, path, "divisor_override has no equivalent")
        out = SpatialAveragePooling(kW, kH, dW, dH, pW, pH, ceilMode=m.ceil_mode,
                                    countIncludePad=m.count_include_pad, dtype=dt)
    return _as_1d(out, dt) if one_d else out


def _pool3d(m, path, dt, is_max):
    kT, kH, kW = _pair(m.kernel_size, 3)
    dT, dH, dW = _pair(m.kernel_size if m.stride is None else m.stride, 3)
    pT, pH, pW = _pair(m.padding, 3)
    if is_max:
        if _pair(m.dilation, 3) != (1, 1, 1) or m.return_indices:
            _refuse(m, path, "dilation and return_indices have no equivalent")
        out = VolumetricMaxPooling(kT, kW, kH, dT, dW, dH, pT, pW, pH, dtype=dt)
        return out.ceil() if m.ceil_mode else out
    if m.divisor_override is not None:
        _refuse(m, path, "divisor_override has no equivalent")
    return VolumetricAveragePooling(kT, kW, kH, dT, dW, dH, pT, pW, pH,
                                    countIncludePad=m.count_include_pad, ceilMode=m.ceil_mode,
                                    dtype=dt)


def _batchnorm(m, path, dt, spatial):
    if not m.track_running_stats:
        _refuse(m, path, "track_running_stats=False (batch statistics in evaluation) has no "
                "equivalent")
    if m.momentum is None:
        _refuse(m, path, "momentum=None (a cumulative average) has no equivalent; give a "
                "momentum")
    # Both update running = (1 - momentum) * running + momentum * batch (unbiased variance),
    # so torch's momentum is BigDL's as it stands.
    cls = SpatialBatchNormalization if spatial else BatchNormalization
    out = cls(m.num_features, m.eps, m.momentum, m.affine, dtype=dt)
    if m.affine:
        _copy(out, m, dt)
    out.runningMean[...] = _array(m.running_mean, dt)
    out.runningVar[...] = _array(m.running_var, dt)
    return out


def _layer_norm(m, path, dt):
    if len(m.normalized_shape) != 1:
        _refuse(m, path, f"normalized_shape {tuple(m.normalized_shape)}: only one axis has an "
                f"equivalent (LayerNormalization)")
    if m.eps != LAYER_NORM_EPS:
        _refuse(m, path, f"eps={m.eps}: LayerNormalization's is {LAYER_NORM_EPS}; build the "
                f"torch layer with eps={LAYER_NORM_EPS}")
    if not m.elementwise_affine or m.bias is None:
        _refuse(m, path, "LayerNormalization always has a weight and a bias; build the torch "
                "layer with elementwise_affine=True and bias=True")
    out = LayerNormalization(m.normalized_shape[0], dtype=dt)
    return _copy(out, m, dt)


def _recurrent(m, path, dt, lstm):
    if lstm and m.proj_size:
        _refuse(m, path, "proj_size has no equivalent")
    layers = []
    for k in range(m.num_layers):
        inputSize = m.input_size if k == 0 else m.hidden_size * (2 if m.bidirectional else 1)
        dirs = [_cell(m, k, "", inputSize, dt, lstm)]
        if m.bidirectional:
            dirs.append(_cell(m, k, "_reverse", inputSize, dt, lstm))
            rec = BiRecurrent(JoinTable(2, dtype=dt))
            rec.add(dirs[0]).add(dirs[1])
        else:
            rec = Recurrent().add(dirs[0])
        if k and m.dropout:
            layers.append(Dropout(m.dropout, dtype=dt))
        layers.append(rec)
    out = layers[0] if len(layers) == 1 else Sequential(*layers)
    if m.batch_first:
        return out
    # (time, batch, features) in and out: pymodules' recurrent layers are batch-first
    return Sequential(Transpose([(0, 1)], dtype=dt), out, Transpose([(0, 1)], dtype=dt))


def _cell(m, k, suffix, inputSize, dt, lstm):
    def get(name):
        t = getattr(m, f"{name}_l{k}{suffix}", None)
        return None if t is None else _array(t, dt)

    w_ih, w_hh, b_ih, b_hh = get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")
    if lstm:
        cell = LSTM(inputSize, m.hidden_size, dtype=dt)
        cell.weight[...] = _blocks(w_ih, _TO_OURS)
        cell.hiddenWeight[...] = _blocks(w_hh, _TO_OURS)
        cell.bias[...] = _blocks(b_ih + b_hh, _TO_OURS) if m.bias else 0
        return cell
    act = Tanh(dtype=dt) if m.nonlinearity == "tanh" else ReLU(dtype=dt)
    cell = RnnCell(inputSize, m.hidden_size, act, isInputWithBias=m.bias,
                   isHiddenWithBias=m.bias, dtype=dt)
    cell.weight[...], cell.hiddenWeight[...] = w_ih, w_hh
    if m.bias:
        cell.bias[...], cell.hiddenBias[...] = b_ih, b_hh
    return cell


def _blocks(a, order):
    parts = np.split(a, 4)
    return np.concatenate([parts[i] for i in order])


# -- pymodules -> torch state_dict ----------------------------------------------------------
def to_state_dict(model):
    """OrderedDict of torch tensors (copies) with torch's keys for the equivalent model
    (see the module docstring for the naming)."""
    import torch

    entries = []
    _entries(model, "", entries)
    return OrderedDict((k, torch.tensor(np.ascontiguousarray(v))) for k, v in entries)


def _is_1d(seq):
    c = seq.modules
    return (len(c) == 3 and type(c[0]) is Unsqueeze and type(c[2]) is Squeeze
            and isinstance(c[1], (SpatialConvolution, SpatialDilatedConvolution,
                                  SpatialMaxPooling, SpatialAveragePooling)))


def _is_time_first(seq):
    """Sequential(Transpose([(0, 1)]), recurrent layers, Transpose([(0, 1)])): a torch
    recurrent layer without batch_first."""
    c = seq.modules
    return (len(c) == 3 and all(type(t) is Transpose and t.permutations == [(0, 1)]
                                for t in (c[0], c[2]))
            and (isinstance(c[1], (Recurrent, BiRecurrent))
                 or (type(c[1]) is Sequential and _is_stack(c[1]))))


def _is_stack(seq):
    c = seq.modules
    recs = [x for x in c if isinstance(x, (Recurrent, BiRecurrent))]
    return bool(recs) and all(isinstance(x, (Recurrent, BiRecurrent, Dropout)) for x in c) \
        and isinstance(c[0], (Recurrent, BiRecurrent))


def _entries(m, prefix, out):  # noqa: C901 - one branch per class
    kind = type(m)
    if kind is Sequential:
        if _is_1d(m):
            inner = m.modules[1]
            if isinstance(inner, (SpatialConvolution, SpatialDilatedConvolution)):
                out.append((prefix + "weight", inner.weight[:, :, 0, :]))
                if inner.bias is not None:
                    out.append((prefix + "bias", inner.bias))
            return
        if _is_time_first(m):
            m = m.modules[1]
            if isinstance(m, (Recurrent, BiRecurrent)):
                _recurrent_entries(m, prefix, 0, out)
                return
        if _is_stack(m):
            for k, rec in enumerate(x for x in m.modules if not isinstance(x, Dropout)):
                _recurrent_entries(rec, prefix, k, out)
            return
        for i, child in enumerate(m.modules):
            _entries(child, f"{prefix}{i}.", out)
        return
    if isinstance(m, (Recurrent, BiRecurrent)):
        _recurrent_entries(m, prefix, 0, out)
        return
    if kind in (Linear, SpatialConvolution, SpatialDilatedConvolution, SpatialFullConvolution,
                VolumetricConvolution, LayerNormalization, BatchNormalization,
                SpatialBatchNormalization, LookupTable):
        # their weights have torch's shapes (grouped convolutions included)
        if getattr(m, "weight", None) is not None:
            out.append((prefix + "weight", m.weight))
        if getattr(m, "bias", None) is not None:
            out.append((prefix + "bias", m.bias))
        if isinstance(m, BatchNormalization):
            out.append((prefix + "running_mean", m.runningMean))
            out.append((prefix + "running_var", m.runningVar))
            out.append((prefix + "num_batches_tracked", np.array(0, np.int64)))
        return
    if m.parameters()[0] or m.getExtraParameter():
        raise ConversionError(f"toTorchStateDict: {m} at {_where(prefix.rstrip('.'))} has "
                              f"parameters and no torch equivalent")


def _recurrent_entries(rec, prefix, k, out):
    cells = rec.modules
    for cell, suffix in zip(cells, ("", "_reverse"), strict=False):
        if isinstance(cell, LSTM):
            out.append((f"{prefix}weight_ih_l{k}{suffix}", _blocks(cell.weight, _TO_TORCH)))
            out.append((f"{prefix}weight_hh_l{k}{suffix}",
                        _blocks(cell.hiddenWeight, _TO_TORCH)))
            out.append((f"{prefix}bias_ih_l{k}{suffix}", _blocks(cell.bias, _TO_TORCH)))
            out.append((f"{prefix}bias_hh_l{k}{suffix}", np.zeros_like(cell.bias)))
        elif isinstance(cell, RnnCell):
            out.append((f"{prefix}weight_ih_l{k}{suffix}", cell.weight))
            out.append((f"{prefix}weight_hh_l{k}{suffix}", cell.hiddenWeight))
            if cell.bias is not None:
                out.append((f"{prefix}bias_ih_l{k}{suffix}", cell.bias))
            if cell.hiddenBias is not None:
                out.append((f"{prefix}bias_hh_l{k}{suffix}", cell.hiddenBias))
        else:
            raise ConversionError(f"toTorchStateDict: {cell} at {_where(prefix.rstrip('.'))} "
                                  f"has no torch equivalent (LSTM and RnnCell have)")
