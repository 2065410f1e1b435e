import math

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from tolerance import assert_reduction_close

import pymodules as pm

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 2e-4 if dtype == np.float32 else 1e-10


def _top(a):
    return float(np.max(np.abs(a), initial=0))


def _agree(actual, expected, dtype, k, scale, atol64=None):
    """Two results of a length-k reduction with terms up to ``scale``: float32 ones both
    within the reduction's bound of the exact value; float64 to tol(dtype)."""
    if np.dtype(dtype) == np.float32:
        assert_reduction_close(actual, expected, dtype, k, 2 * k * scale)
    else:
        np.testing.assert_allclose(actual, expected, rtol=tol(dtype),
                                   atol=tol(dtype) if atol64 is None else atol64)


# -- Jacobians (float64) ----------------------------------------------------------------------

JACOBIAN_LAYERS = {
    "conv": lambda: pm.SpatialConvolution(4, 2, 3, 2, 2, 1, 1, 0, nGroup=2, dtype=np.float64),
    "conv-same": lambda: pm.SpatialConvolution(2, 2, 3, 3, 2, 2, -1, -1, dtype=np.float64),
    "conv-1x1": lambda: pm.SpatialConvolution(2, 3, 1, 1, dtype=np.float64),
    "dilated": lambda: pm.SpatialDilatedConvolution(2, 2, 2, 3, 1, 2, 1, 1, 2, 1,
                                                    dtype=np.float64),
    "full": lambda: pm.SpatialFullConvolution(2, 4, 3, 2, 2, 1, 1, 0, 1, 0, nGroup=2,
                                              dtype=np.float64),
}


@pytest.mark.parametrize("layer", sorted(JACOBIAN_LAYERS))
@pytest.mark.parametrize("wrt", ["input", "weight", "bias"])
@pytest.mark.parametrize("batched", [True, False])
def test_spatial_jacobian(layer, wrt, batched, rng):
    m = JACOBIAN_LAYERS[layer]()
    c = m.nInputPlane
    x = rng.standard_normal((2, c, 5, 4) if batched else (c, 5, 4))
    assert_jacobian(m, x, wrt=wrt)


@pytest.mark.parametrize("shape", [(7, 3), (2, 6, 3)])
@pytest.mark.parametrize("wrt", ["input", "weight", "bias", "parameters"])
def test_temporal_jacobian(shape, wrt, rng):
    m = pm.TemporalConvolution(3, 2, 3, 2, dtype=np.float64)
    assert_jacobian(m, rng.standard_normal(shape), wrt=wrt)


# -- the PyTorch oracle -----------------------------------------------------------------------

def _torch_check(torch, m, tm, x, dtype):
    """Forward, gradInput and parameter gradients of ``m`` against torch module ``tm``."""
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    y = m.forward(x)
    planes, bias = y.shape[-3], 0.0 if m.bias is None else _top(m.bias)
    pixels = y.size // planes  # the terms of a weight or bias gradient
    _agree(y, yt.detach().numpy(), dtype, m.weight.size // planes + 1,
           _top(x) * _top(m.weight) + bias)
    go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    m.zeroGradParameters()
    gi = m.backward(x, go)
    _agree(gi, xt.grad.numpy(), dtype, m.weight.size // x.shape[-3], _top(go) * _top(m.weight))
    _agree(m.gradWeight, tm.weight.grad.numpy(), dtype, pixels, _top(x) * _top(go),
           tol(dtype) * 10)
    if m.bias is not None:
        _agree(m.gradBias, tm.bias.grad.numpy(), dtype, pixels, _top(go), tol(dtype) * 10)


def _tdtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,o,k,s,p,g,bias", [
    (3, 6, (5, 5), (1, 1), (0, 0), 1, True),
    (4, 6, (3, 2), (2, 1), (1, 2), 2, True),
    (16, 32, (3, 3), (1, 1), (1, 1), 1, False),
    (15, 24, (3, 3), (2, 2), (1, 2), 1, True),  # float32: the transposed forward
    (6, 12, (5, 5), (1, 1), (0, 0), 1, True),  # the direct forward (few planes, 5x5)
    (3, 4, (1, 1), (1, 1), (0, 0), 1, True),
])
@pytest.mark.parametrize("batched", [True, False])
def test_conv_matches_torch(torch, dtype, c, o, k, s, p, g, bias, batched, rng):
    m = pm.SpatialConvolution(c, o, k[1], k[0], s[1], s[0], p[1], p[0], nGroup=g,
                              withBias=bias, dtype=dtype)
    tm = torch.nn.Conv2d(c, o, k, s, p, groups=g, bias=bias).to(_tdtype(torch, dtype))
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(m.weight))
        if bias:
            tm.bias.copy_(torch.tensor(m.bias))
    x = rng.standard_normal((3, c, 11, 10) if batched else (c, 11, 10)).astype(dtype)
    _torch_check(torch, m, tm, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_same_padding_matches_torch(torch, dtype, rng):
    # SAME: ceil(H / stride) positions, the odd pad at the end (TensorFlow's, as in BigDL)
    m = pm.SpatialConvolution(2, 3, 3, 4, 2, 2, -1, -1, dtype=dtype)
    x = rng.standard_normal((2, 2, 9, 8)).astype(dtype)
    y = m.forward(x)
    assert y.shape == (2, 3, 5, 4)
    F = torch.nn.functional
    # H: 9 -> 5 positions, pad (5-1)*2 + 4 - 9 = 3 as 1 + 2; W: 8 -> 4, pad 1 as 0 + 1
    xt = F.pad(torch.tensor(x), (0, 1, 1, 2))
    yt = F.conv2d(xt, torch.tensor(m.weight), torch.tensor(m.bias), 2)
    _agree(y, yt.numpy(), dtype, m.weight[0].size + 1, _top(x) * _top(m.weight) + _top(m.bias))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dilated_conv_matches_torch(torch, dtype, rng):
    m = pm.SpatialDilatedConvolution(3, 4, 3, 2, 2, 1, 2, 1, 2, 3, dtype=dtype)
    tm = torch.nn.Conv2d(3, 4, (2, 3), (1, 2), (1, 2), (3, 2)).to(_tdtype(torch, dtype))
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(m.weight))
        tm.bias.copy_(torch.tensor(m.bias))
    _torch_check(torch, m, tm, rng.standard_normal((2, 3, 12, 11)).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,o,k,s,p,a,g,nobias", [
    (4, 6, (3, 2), (2, 1), (1, 0), (1, 0), 2, False),
    (3, 2, (4, 4), (2, 2), (1, 1), (0, 0), 1, True),
    (2, 3, (3, 3), (3, 2), (0, 1), (2, 1), 1, False),
])
def test_full_conv_matches_torch(torch, dtype, c, o, k, s, p, a, g, nobias, rng):
    m = pm.SpatialFullConvolution(c, o, k[1], k[0], s[1], s[0], p[1], p[0], a[1], a[0], g,
                                  nobias, dtype=dtype)
    tm = torch.nn.ConvTranspose2d(c, o, k, s, p, a, groups=g, bias=not nobias)
    tm = tm.to(_tdtype(torch, dtype))
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(m.weight))
        if not nobias:
            tm.bias.copy_(torch.tensor(m.bias))
    _torch_check(torch, m, tm, rng.standard_normal((2, c, 5, 4)).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_temporal_conv_matches_torch(torch, dtype, rng):
    m = pm.TemporalConvolution(3, 4, 3, 2, dtype=dtype)
    x = rng.standard_normal((2, 9, 3)).astype(dtype)
    w = torch.tensor(m.weight.reshape(4, 3, 3).transpose(0, 2, 1).copy())
    yt = torch.nn.functional.conv1d(torch.tensor(x).transpose(1, 2), w, torch.tensor(m.bias), 2)
    _agree(m.forward(x), yt.transpose(1, 2).numpy(), dtype, m.weight.shape[1] + 1,
           _top(x) * _top(m.weight) + _top(m.bias))


# -- construction, init, contract ---------------------------------------------------------------

def test_default_init_is_bigdl_uniform():
    m = pm.SpatialConvolution(6, 12, 5, 5)
    bound = 1 / math.sqrt(5 * 5 * 6)
    assert m.weight.shape == (12, 6, 5, 5) and m.bias.shape == (12,)
    assert np.abs(m.weight).max() <= bound and np.abs(m.weight).max() > 0.9 * bound
    assert np.abs(m.bias).max() <= bound
    f = pm.SpatialFullConvolution(4, 6, 3, 3, nGroup=2)
    assert f.weight.shape == (4, 3, 3, 3) and np.abs(f.weight).max() <= 1 / math.sqrt(36)
    t = pm.TemporalConvolution(5, 7, 3)
    assert t.weight.shape == (7, 15) and np.abs(t.weight).max() <= 1 / math.sqrt(15)
    assert pm.SpatialConvolution(2, 3, 3, 3, withBias=False).bias is None
    assert pm.SpatialFullConvolution(2, 3, 3, 3, noBias=True).bias is None


def test_init_arrays_accept_bigdl_group_layout(rng):
    w = rng.standard_normal((2, 3, 2, 3, 3))  # BigDL: (nGroup, out/g, in/g, kH, kW)
    m = pm.SpatialConvolution(4, 6, 3, 3, nGroup=2, initWeight=w, initBias=np.arange(6.0),
                              dtype=np.float64)
    np.testing.assert_array_equal(m.weight, w.reshape(6, 2, 3, 3))
    np.testing.assert_array_equal(m.bias, np.arange(6.0))
    with pytest.raises(ValueError, match=r"initWeight has shape \(6, 4, 3, 3\)"):
        pm.SpatialConvolution(4, 6, 3, 3, nGroup=2, initWeight=np.zeros((6, 4, 3, 3)))


def test_accumulates_with_scales_and_clear_state_drops_columns(rng):
    m = pm.SpatialConvolution(2, 3, 3, 3, dtype=np.float64)
    x = rng.standard_normal((2, 2, 6, 6))
    go = rng.standard_normal((2, 3, 4, 4))
    m.forward(x)
    m.backward(x, go)
    once = m.gradWeight.copy(), m.gradBias.copy()
    m.setScaleW(0.5).setScaleB(0.0)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 1.5 * once[0])
    np.testing.assert_allclose(m.gradBias, once[1])
    assert m._columns is not None
    m.clearState()
    assert m._columns is None and m.output.size == 0
    np.testing.assert_allclose(m.forward(x).shape, (2, 3, 4, 4))


def test_steady_state_reuses_buffers(rng):
    m = pm.SpatialConvolution(2, 3, 3, 3)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = m.forward(x)
    cols = m._columns
    gi = m.backward(x, np.ones_like(y))
    assert m.forward(x) is y and m._columns is cols and m.backward(x, np.ones_like(y)) is gi


def test_transposed_forward_scratch_is_reused_and_dropped(rng):
    m = pm.SpatialConvolution(16, 24, 3, 3, 2, 1, 1, 0)
    x = rng.standard_normal((3, 16, 9, 8)).astype(np.float32)
    expected = m.forward(x[1:2]).copy()
    y = m.forward(x)
    rows = m._rows
    assert rows is not None and rows.dtype == np.float32  # the transposed forward ran
    assert m.forward(x) is y and m._rows is rows
    _agree(y[1:2], expected, np.float32, 16 * 3 * 3 + 1,
           _top(x) * _top(m.weight) + _top(m.bias))
    assert m.forward(np.zeros((0, 16, 9, 8), np.float32)).shape == (0, 24, 7, 4)
    m.double()
    assert m.forward(x.astype(np.float64)).shape == y.shape and m._rows is None
    m.float().forward(x)
    assert m._rows is not None
    m.clearState()
    assert m._rows is None and m._columns is None


def test_propagate_back_false_leaves_grad_input(rng):
    m = pm.SpatialConvolution(2, 3, 3, 3, propagateBack=False, dtype=np.float64)
    x = rng.standard_normal((2, 6, 6))
    m.forward(x)
    assert m.backward(x, np.ones((3, 4, 4))).size == 0
    assert np.abs(m.gradWeight).sum() > 0


def test_regularizer_adds_to_gradient(rng):
    m = pm.SpatialConvolution(1, 1, 2, 2, wRegularizer=pm.L2Regularizer(0.1), dtype=np.float64)
    x = np.zeros((1, 3, 3))
    m.forward(x)
    m.backward(x, np.zeros((1, 2, 2)))
    np.testing.assert_allclose(m.gradWeight, 0.1 * m.weight)


def test_double_and_strided_input(rng):
    m = pm.SpatialConvolution(2, 3, 3, 3).double()
    x = rng.standard_normal((2, 2, 6, 12))[..., ::2]
    np.testing.assert_allclose(m.forward(x), m.forward(np.ascontiguousarray(x)))


def test_str_reads_like_bigdl():
    m = pm.SpatialConvolution(1, 6, 5, 5)
    assert str(m) == f"{m.getName()}(1 -> 6, 5x5, 1, 1, 0, 0)"


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make,x,match", [
    (lambda: pm.SpatialConvolution(3, 4, 3, 3), np.zeros((2, 2, 8, 8), np.float32),
     r"input has 2 channels, expected 3"),
    (lambda: pm.SpatialConvolution(3, 4, 5, 5), np.zeros((3, 4, 8), np.float32),
     r"input is 4x8, smaller than the 5x5 kernel"),
    (lambda: pm.SpatialConvolution(3, 4, 5, 5, 1, 1, 1, 1), np.zeros((3, 2, 8), np.float32),
     r"input is 2x8 \(padded by 1, 1\), smaller than the 5x5 kernel"),
    (lambda: pm.SpatialDilatedConvolution(1, 1, 3, 3, dilationW=3, dilationH=3),
     np.zeros((1, 6, 6), np.float32), r"smaller than the 3x3 kernel dilated by 3, 3"),
    (lambda: pm.SpatialFullConvolution(2, 3, 3, 3), np.zeros((3, 4, 4), np.float32),
     r"input has 3 channels, expected 2"),
    (lambda: pm.TemporalConvolution(3, 4, 5), np.zeros((4, 3), np.float32),
     r"input has 4 frames, fewer than the kernel width 5"),
    (lambda: pm.TemporalConvolution(3, 4, 2), np.zeros((4, 2), np.float32),
     r"input has 2 features per frame, expected 3"),
    (lambda: pm.SpatialConvolution(3, 4, 3, 3), np.zeros((8, 8), np.float32),
     r"input must be 3-D to 4-D, got 2-D"),
])
def test_errors_name_the_module_and_numbers(make, x, match):
    assert_refusal_names_the_module(make, x, match)


def test_type_errors():
    m = pm.SpatialConvolution(1, 1, 2, 2)
    with pytest.raises(TypeError, match=r"input has dtype float64, expected float32"):
        m.forward(np.zeros((1, 3, 3)))
    with pytest.raises(TypeError, match="input must be a numpy.ndarray, got list"):
        m.forward([[[0.0]]])


@pytest.mark.parametrize("make,match", [
    (lambda: pm.SpatialConvolution(3, 4, 0, 3), "kernelW must be >= 1"),
    (lambda: pm.SpatialConvolution(3, 4, 3, 3, padW=-1), "pads must be >= 0, or both -1"),
    (lambda: pm.SpatialConvolution(3, 4, 3, 3, nGroup=2), "2 groups do not divide"),
    (lambda: pm.SpatialFullConvolution(3, 4, 3, 3, 2, 2, adjW=2), r"must lie in \[0, stride\)"),
    (lambda: pm.TemporalConvolution(3, 4, 2, 0), "strideW must be >= 1"),
])
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()
