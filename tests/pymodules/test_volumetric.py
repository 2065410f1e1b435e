import mmap

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from numpy.lib.stride_tricks import sliding_window_view
from tolerance import assert_reduction_close

import pymodules as pm

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-10


# -- NumPy references (float64) ---------------------------------------------------------------

def np_conv3d(x, w, b, stride=(1, 1, 1), pad=(0, 0, 0)):
    """(N, C, T, H, W) x (O, C, kT, kH, kW) -> (N, O, oT, oH, oW); stride and pad as (t, h, w)."""
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in pad))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3, 4))
    win = win[:, :, ::stride[0], ::stride[1], ::stride[2]]
    y = np.einsum("ncthwijk,ocijk->nothw", win, w)
    return y if b is None else y + b[:, None, None, None]


def np_full3d(x, w, b, stride, pad, adj):
    """The transposed convolution: each input entry scatters weight[c] into the output."""
    n, _, t, h, wd = x.shape
    k = w.shape[2:]
    size = [(s - 1) * d + kk + a for s, d, kk, a in zip((t, h, wd), stride, k, adj, strict=True)]
    y = np.zeros((n, w.shape[1]) + tuple(size))
    for i, j, m in np.ndindex(t, h, wd):
        ti, hj, wm = i * stride[0], j * stride[1], m * stride[2]
        y[:, :, ti:ti + k[0], hj:hj + k[1], wm:wm + k[2]] += np.einsum(
            "nc,coijk->noijk", x[:, :, i, j, m], w)
    out = [s - 2 * p for s, p in zip(size, pad, strict=True)]
    y = y[:, :, pad[0]:pad[0] + out[0], pad[1]:pad[1] + out[1], pad[2]:pad[2] + out[2]]
    return y if b is None else y + b[:, None, None, None]


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


# -- forward against NumPy --------------------------------------------------------------------

CONVS = [  # (layer, input shape, stride (t, h, w), pad (t, h, w))
    (lambda d: pm.VolumetricConvolution(3, 4, 3, 3, 3, dtype=d), (2, 3, 5, 6, 7), (1, 1, 1),
     (0, 0, 0)),
    (lambda d: pm.VolumetricConvolution(2, 3, 2, 3, 2, 2, 1, 2, 1, 0, 1, dtype=d),
     (2, 2, 6, 5, 7), (2, 2, 1), (1, 1, 0)),
    (lambda d: pm.VolumetricConvolution(3, 2, 1, 1, 1, withBias=False, dtype=d), (3, 4, 5, 6),
     (1, 1, 1), (0, 0, 0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CONVS)))
def test_convolution_matches_numpy(case, dtype, rng):
    make, shape, stride, pad = CONVS[case]
    m = make(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    batch = x if x.ndim == 5 else x[None]
    ref = np_conv3d(_f64(batch), _f64(m.weight), _f64(m.bias), stride, pad)
    mag = np_conv3d(np.abs(_f64(batch)), np.abs(_f64(m.weight)),
                    None if m.bias is None else np.abs(_f64(m.bias)), stride, pad)
    y = m.forward(x)
    assert y.dtype == dtype and y.shape == (ref.shape if x.ndim == 5 else ref.shape[1:])
    assert_reduction_close(y.reshape(ref.shape), ref, dtype, m.weight[0].size + 1, mag,
                           f64=tol(np.float64))
    assert m.forward(x) is y  # reused


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_convolution_matches_numpy(dtype, rng):
    m = pm.VolumetricFullConvolution(4, 3, 2, 3, 2, 2, 1, 2, 1, 0, 1, 1, 0, 1, dtype=dtype)
    x = rng.standard_normal((2, 4, 3, 4, 3)).astype(dtype)
    args = ((2, 2, 1), (1, 1, 0), (1, 1, 0))  # stride, pad, adj as (t, h, w)
    ref = np_full3d(_f64(x), _f64(m.weight), _f64(m.bias), *args)
    mag = np_full3d(np.abs(_f64(x)), np.abs(_f64(m.weight)), np.abs(_f64(m.bias)), *args)
    y = m.forward(x)
    assert y.shape == ref.shape == (2, 3, 5, 7, 5)
    assert_reduction_close(y, ref, dtype, m.weight.size // 3 + 1, mag, f64=tol(np.float64))


# -- Jacobians (float64) ----------------------------------------------------------------------

JACOBIAN_LAYERS = {
    "conv": (lambda: pm.VolumetricConvolution(2, 3, 2, 2, 3, 1, 2, 1, 1, 0, 1,
                                              dtype=np.float64), 2),
    "conv-1x1x1": (lambda: pm.VolumetricConvolution(2, 2, 1, 1, 1, dtype=np.float64), 2),
    "full": (lambda: pm.VolumetricFullConvolution(2, 4, 2, 3, 2, 2, 1, 1, 1, 1, 0, 1, 0, 0,
                                                  nGroup=2, dtype=np.float64), 2),
}


@pytest.mark.parametrize("layer", sorted(JACOBIAN_LAYERS))
@pytest.mark.parametrize("wrt", ["input", "weight", "bias"])
@pytest.mark.parametrize("batched", [True, False])
def test_convolution_jacobian(layer, wrt, batched, rng):
    make, c = JACOBIAN_LAYERS[layer]
    shape = (c, 3, 4, 3)
    x = rng.standard_normal((2,) + shape if batched else shape)
    assert_jacobian(make(), x, wrt=wrt)


POOLS = [
    lambda: pm.VolumetricMaxPooling(2, 2, 2, dtype=np.float64),
    lambda: pm.VolumetricMaxPooling(3, 2, 3, 2, 1, 2, 1, 1, 1, dtype=np.float64).ceil(),
    lambda: pm.VolumetricAveragePooling(2, 3, 2, 1, 2, 1, 1, 1, 0, dtype=np.float64),
    lambda: pm.VolumetricAveragePooling(3, 2, 2, 2, 2, 1, 1, 0, 1, countIncludePad=False,
                                        ceilMode=True, dtype=np.float64),
]


@pytest.mark.parametrize("make", POOLS)
@pytest.mark.parametrize("batched", [True, False])
def test_pooling_jacobian(make, batched, rng):
    x = rng.standard_normal((2, 2, 4, 5, 5) if batched else (2, 4, 5, 5))
    assert_jacobian(make(), x, wrt="input")


# -- the PyTorch oracle -----------------------------------------------------------------------

def _top(a):
    return float(np.max(np.abs(a), initial=0))


def _torch_module_check(torch, m, tm, x, dtype):
    """Forward, gradInput and parameter gradients of ``m`` against torch module ``tm``."""
    with torch.no_grad():
        tm.weight.copy_(torch.from_numpy(m.weight))
        if m.bias is not None:
            tm.bias.copy_(torch.from_numpy(m.bias))
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    y = m.forward(x)
    k = m.weight.size // m.weight.shape[0] + 1
    scale = _top(x) * _top(m.weight) * k
    assert_reduction_close(y, yt.detach().numpy(), dtype, k, scale, f64=tol(np.float64))
    go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    m.zeroGradParameters()
    gi = m.backward(x, go)
    assert_reduction_close(gi, xt.grad.numpy(), dtype, m.weight.size, _top(go) *
                           _top(m.weight) * m.weight.size, f64=tol(np.float64))
    n = y.size  # a bound on the terms of each parameter gradient
    assert_reduction_close(m.gradWeight, tm.weight.grad.numpy(), dtype, n,
                           _top(x) * _top(go) * n, f64=1e-9)
    if m.bias is not None:
        assert_reduction_close(m.gradBias, tm.bias.grad.numpy(), dtype, n, _top(go) * n,
                               f64=1e-9)


def _tdtype(torch, dtype):
    return torch.float32 if dtype == np.float32 else torch.float64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batched", [True, False])
def test_convolution_matches_torch(torch, dtype, batched, rng):
    m = pm.VolumetricConvolution(3, 4, 3, 2, 3, 2, 1, 1, 1, 0, 1, dtype=dtype)
    tm = torch.nn.Conv3d(3, 4, (3, 3, 2), (2, 1, 1), (1, 1, 0)).to(_tdtype(torch, dtype))
    x = rng.standard_normal((2, 3, 6, 7, 5) if batched else (3, 6, 7, 5)).astype(dtype)
    _torch_module_check(torch, m, tm, x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_convolution_matches_torch(torch, dtype, rng):
    m = pm.VolumetricFullConvolution(4, 6, 3, 2, 3, 2, 2, 1, 1, 0, 1, 1, 1, 0, nGroup=2,
                                     dtype=dtype)
    tm = torch.nn.ConvTranspose3d(4, 6, (3, 3, 2), (2, 1, 2), (1, 1, 0), (1, 0, 1),
                                  groups=2).to(_tdtype(torch, dtype))
    x = rng.standard_normal((2, 4, 3, 4, 5)).astype(dtype)
    _torch_module_check(torch, m, tm, x, dtype)


def _torch_check(torch, m, fn, x, dtype):
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt)
    y = m.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol(dtype), atol=tol(dtype))
    go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    np.testing.assert_allclose(m.backward(x, go), xt.grad.numpy(), rtol=tol(dtype),
                               atol=tol(dtype))


WINDOWS = [  # kernel (t, h, w), stride, pad, ceil
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), False),
    ((3, 3, 2), (2, 1, 2), (1, 1, 0), True),
    ((3, 2, 3), (1, 2, 2), (0, 1, 1), False),
    ((2, 2, 2), (3, 3, 3), (0, 0, 0), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,ceil", WINDOWS)
def test_max_pooling_matches_torch(torch, dtype, k, s, p, ceil, rng):
    m = pm.VolumetricMaxPooling(k[0], k[2], k[1], s[0], s[2], s[1], p[0], p[2], p[1],
                                dtype=dtype)
    if ceil:
        m.ceil()
    x = rng.standard_normal((2, 3, 7, 8, 9)).astype(dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.max_pool3d(t, k, s, p, ceil_mode=ceil),
                 x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,ceil", WINDOWS)
@pytest.mark.parametrize("include_pad", [True, False])
def test_average_pooling_matches_torch(torch, dtype, k, s, p, ceil, include_pad, rng):
    m = pm.VolumetricAveragePooling(k[0], k[2], k[1], s[0], s[2], s[1], p[0], p[2], p[1],
                                    countIncludePad=include_pad, ceilMode=ceil, dtype=dtype)
    x = rng.standard_normal((2, 3, 7, 8, 9)).astype(dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.avg_pool3d(
        t, k, s, p, ceil_mode=ceil, count_include_pad=include_pad), x, dtype)


def test_pooling_matches_numpy(rng):
    x = rng.standard_normal((2, 3, 4, 6, 8))
    win = sliding_window_view(x, (2, 3, 2), axis=(2, 3, 4))[:, :, ::2, ::3, ::2]
    m = pm.VolumetricMaxPooling(2, 2, 3, dtype=np.float64)
    np.testing.assert_array_equal(m.forward(x), win.max(axis=(-3, -2, -1)))
    a = pm.VolumetricAveragePooling(2, 2, 3, 2, 2, 3, dtype=np.float64)
    np.testing.assert_allclose(a.forward(x), win.mean(axis=(-3, -2, -1)), rtol=1e-13)


def test_max_pooling_returns_the_nan_of_a_window(rng):
    x = rng.standard_normal((1, 1, 4, 4, 4)).astype(np.float32)
    x[0, 0, 1, 2, 3] = np.nan
    m = pm.VolumetricMaxPooling(2, 2, 2)
    y = m.forward(x)
    assert np.isnan(y[0, 0, 0, 1, 1]) and np.isfinite(np.delete(y.ravel(), 3)).all()
    gi = m.backward(x, np.ones_like(y))
    assert gi[0, 0, 1, 2, 3] == 1


# -- contract ---------------------------------------------------------------------------------

def test_parameters_follow_bigdl_layout():
    m = pm.VolumetricConvolution(3, 4, 2, 3, 5)
    assert m.weight.shape == (4, 3, 2, 5, 3) and m.bias.shape == (4,)
    bound = 1 / np.sqrt(3 * 2 * 3 * 5)
    assert np.abs(m.weight).max() <= bound and np.abs(m.bias).max() <= bound
    assert len(m.getParameters()[0]) == 4 * 3 * 30 + 4
    f = pm.VolumetricFullConvolution(4, 6, 2, 3, 5, nGroup=2, noBias=True)
    assert f.weight.shape == (4, 3, 2, 5, 3) and f.bias is None
    assert len(f.parameters()[0]) == 1


def test_defaults_follow_bigdl():
    m = pm.VolumetricConvolution(1, 1, 3, 3, 3)
    assert (m.dT, m.dW, m.dH, m.padT, m.padW, m.padH, m.withBias) == (1, 1, 1, 0, 0, 0, True)
    f = pm.VolumetricFullConvolution(1, 1, 3, 3, 3)
    assert (f.adjT, f.adjW, f.adjH, f.nGroup, f.noBias) == (0, 0, 0, 1, False)
    p = pm.VolumetricMaxPooling(2, 3, 4)
    assert (p.dT, p.dW, p.dH, p.padT, p.ceilMode) == (2, 3, 4, 0, False)
    a = pm.VolumetricAveragePooling(2, 2, 2, 1, 1, 1)
    assert (a.countIncludePad, a.ceilMode) == (True, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_gradients_accumulate_with_scales(dtype, stride, rng):
    m = pm.VolumetricConvolution(2, 3, 2, 2, 2, stride, 1, 1, 1, 1, 1, dtype=dtype)
    x = rng.standard_normal((2, 2, 5, 3, 3)).astype(dtype)
    g = rng.standard_normal(m.forward(x).shape).astype(dtype)
    m.zeroGradParameters()
    m.backward(x, g)
    once = [a.copy() for a in m.parameters()[1]]
    ref = np.einsum("nothw,nthwcijk->ocijk", g,
                    sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1))),
                                        (2, 2, 2), axis=(2, 3, 4))[:, :, ::stride]
                    .transpose(0, 2, 3, 4, 1, 5, 6, 7))
    np.testing.assert_allclose(once[0], ref, rtol=tol(dtype) * 100, atol=tol(dtype) * 100)
    m.setScaleW(0.5)
    m.setScaleB(0)
    m.backward(x, g)
    np.testing.assert_allclose(m.gradWeight, 1.5 * once[0], rtol=tol(dtype) * 10)
    np.testing.assert_allclose(m.gradBias, once[1], rtol=tol(dtype))


def test_buffers_are_reused(rng):
    m = pm.VolumetricConvolution(2, 3, 2, 2, 2)
    x = rng.standard_normal((2, 2, 4, 4, 4)).astype(np.float32)
    y, cols = m.forward(x), m._columns
    gi = m.backward(x, np.ones_like(y))
    assert m.forward(x) is y and m._columns is cols and m.backward(x, np.ones_like(y)) is gi
    m.clearState()
    assert m._columns is None


@pytest.mark.parametrize("make,x,match", [
    (lambda: pm.VolumetricConvolution(2, 3, 3, 3, 3), np.zeros((2, 2, 2, 4, 4), np.float32),
     r"input is 2x4x4, smaller than the 3x3x3 kernel"),
    (lambda: pm.VolumetricConvolution(2, 3, 3, 3, 3), np.zeros((2, 3, 4, 4, 4), np.float32),
     r"input has 3 channels, expected 2"),
    (lambda: pm.VolumetricConvolution(2, 3, 1, 1, 1), np.zeros((2, 4, 4), np.float32),
     r"input must be 4-D to 5-D, got 3-D"),
    (lambda: pm.VolumetricFullConvolution(2, 3, 3, 3, 3, 1, 1, 1, 2, 2, 2),
     np.zeros((2, 1, 1, 1), np.float32), r"the output would be -1x-1x-1"),
    (lambda: pm.VolumetricMaxPooling(2, 2, 2), np.zeros((1, 1, 4, 4), np.float32),
     r"input is 1x4x4, smaller than the 2x2x2 kernel"),
    (lambda: pm.VolumetricAveragePooling(2, 2, 2, 1, 1, 1), np.zeros((4, 4, 4), np.float32),
     r"input must be 4-D to 5-D, got 3-D"),
])
def test_errors_name_the_module_and_numbers(make, x, match):
    assert_refusal_names_the_module(make, x, match)


@pytest.mark.parametrize("make,match", [
    (lambda: pm.VolumetricConvolution(2, 3, 0, 3, 3), "must be >= 1"),
    (lambda: pm.VolumetricConvolution(2, 3, 3, 3, 3, padT=-1), "pads must be >= 0"),
    (lambda: pm.VolumetricFullConvolution(2, 3, 3, 3, 3, 2, 2, 2, adjT=2), "must lie in"),
    (lambda: pm.VolumetricFullConvolution(3, 4, 3, 3, 3, nGroup=2), "2 groups do not divide"),
    (lambda: pm.VolumetricMaxPooling(2, 2, 2, 2, 2, 2, 2, 0, 0), "exceed half the 2x2x2"),
    (lambda: pm.VolumetricAveragePooling(2, 2, 2, 0, 1, 1), "must be >= 1"),
])
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _huge(shape):
    """A C-contiguous float32 zero array that takes no memory until touched; skips where the
    system refuses the address space."""
    nbytes = int(np.prod(shape)) * 4
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(
        mmap, "MAP_NORESERVE", 0)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except (OSError, OverflowError, ValueError) as err:
        pytest.skip(f"cannot reserve {nbytes} bytes of address space: {err}")
    return np.frombuffer(buf, np.float32).reshape(shape)


def test_a_gemm_past_the_blas_limit_is_refused_before_any_buffer():
    # 2**31 + 2**21 output positions: more columns than a GEMM's int can count.
    x = _huge((1, 1, 2049, 1024, 1024))
    m = pm.VolumetricConvolution(1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"a column count of 2148532224 exceeds the BLAS limit"):
        m.forward(x)
    assert m.output.size == 0
