"""The 3x3 Winograd kernels (conv3x3.pyx) against a float64 NumPy reference, the im2col + GEMM
kernels of conv.pyx and PyTorch; their float32 error against float64; where the layer uses
them."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from pymodules.engine import conv as K
from pymodules.engine import conv3x3 as W

import pymodules as pm

# float32 within REL of the float64 result, relative to the largest float64 output (the
# accuracy the Winograd path promises; a direct float32 sum is near 1e-6 here).
REL = 1e-4


def reference(x, w, b, p):
    """float64 correlation of (N, C, H, W) by (M, C, 3, 3), pads p = (top, left), + b."""
    n, c, h, wd = x.shape
    pt, pl = p
    oh, ow = h + 2 * pt - 2, wd + 2 * pl - 2
    xp = np.zeros((n, c, h + 2 * pt + 2, wd + 2 * pl + 2))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    y = np.zeros((n, w.shape[0], oh, ow))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j])
    return y if b is None else y + np.asarray(b, np.float64)[None, :, None, None]


def reference_grads(x, w, g, p):
    """float64 (gradInput, gradWeight) of ``reference`` for the output gradient g."""
    n, c, h, wd = x.shape
    pt, pl = p
    oh, ow = g.shape[2:]
    xp = np.zeros((n, c, h + 2 * pt + 2, wd + 2 * pl + 2))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    gxp = np.zeros_like(xp)
    gw = np.zeros(w.shape)
    for i in range(3):
        for j in range(3):
            gxp[:, :, i:i + oh, j:j + ow] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
            gw[:, :, i, j] = np.einsum("nohw,nchw->oc", g, xp[:, :, i:i + oh, j:j + ow])
    return gxp[:, :, pt:pt + h, pl:pl + wd], gw


def _scratch(x, w, p):
    size = W.conv3x3_scratch_size(x, w, 1, 1, p, p, 1, 1, 1, rule=False)
    assert size > 0
    return np.empty(size, np.float32)


def _run(x, w, b, g, p):
    """The three Winograd kernels: (output, gradInput, gradWeight, gradBias)."""
    m, oh, ow = w.shape[0], x.shape[-2] + 2 * p - 2, x.shape[-1] + 2 * p - 2
    sc = _scratch(x, w, p)
    y = np.empty(x.shape[:-3] + (m, oh, ow), np.float32)
    W.conv3x3_update_output(x, y, w, b, sc, p, p)
    gi = np.empty_like(x)
    W.conv3x3_update_grad_input(x, g, gi, w, sc, p, p)
    gw = np.zeros_like(w)
    gb = np.zeros(m, np.float32)
    W.conv3x3_acc_grad_parameters(x, g, gw, gb, sc, p, p, 1.0, 1.0)
    return y, gi, gw, gb


def _near(actual, expected, rel=REL):
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rel * scale, f"error {err:.3g} against a scale of {scale:.3g}"


SHAPES = [  # (N, C, H, W, M, pad)
    (2, 16, 28, 28, 32, 1),   # the benchmark's planes on a smaller batch
    (3, 5, 7, 9, 11, 0),      # odd sizes, planes not a multiple of 8
    (2, 9, 13, 6, 3, 2),
    (1, 8, 12, 12, 8, 1),     # batch one
    (2, 3, 3, 3, 4, 0),       # a 3x3 image: one output pixel
    (2, 3, 3, 3, 4, 1),
    (1, 2, 4, 5, 3, 2),       # tiny image, pad 2
    (1, 1, 4, 5, 1, 1),       # one plane in, one out
    (2, 40, 10, 11, 24, 1),   # many planes
]


@pytest.mark.parametrize("n,c,h,wd,m,p", SHAPES)
def test_against_float64_reference(n, c, h, wd, m, p, rng):
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    g = rng.standard_normal((n, m, h + 2 * p - 2, wd + 2 * p - 2)).astype(np.float32)
    y, gi, gw, gb = _run(x, w, b, g, p)
    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    _near(y, reference(x64, w64, b, (p, p)))
    gi_ref, gw_ref = reference_grads(x64, w64, g64, (p, p))
    _near(gi, gi_ref)
    _near(gw, gw_ref)
    _near(gb, g64.sum(axis=(0, 2, 3)), 1e-5)


@pytest.mark.parametrize("n,c,h,wd,m,p", SHAPES[:4])
def test_against_im2col(n, c, h, wd, m, p, rng):
    """The same results as conv.pyx's kernels, within float32 Winograd error."""
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    g = rng.standard_normal((n, m, h + 2 * p - 2, wd + 2 * p - 2)).astype(np.float32)
    y, gi, gw, gb = _run(x, w, b, g, p)
    cols = np.empty((c * 9, g.shape[2] * g.shape[3]), np.float32)
    y2 = np.empty_like(y)
    K.conv_update_output(x, y2, w, b, cols, 1, 1, p, p, 1, 1, 1)
    gi2 = np.empty_like(x)
    K.conv_update_grad_input(x, g, gi2, w, cols, 1, 1, p, p, 1, 1, 1)
    gw2, gb2 = np.zeros_like(w), np.zeros(m, np.float32)
    K.conv_acc_grad_parameters(x, g, gw2, gb2, cols, 1, 1, p, p, 1, 1, 1, 1.0, 1.0)
    for ours, theirs in ((y, y2), (gi, gi2), (gw, gw2), (gb, gb2)):
        _near(ours, theirs.astype(np.float64))


def test_unbatched_same_padding_and_scales(rng):
    """(C, H, W) input, SAME padding (-1, -1: one each side for 3x3, stride 1), scales and
    accumulation into the gradients, no bias."""
    x = rng.standard_normal((6, 9, 7)).astype(np.float32)
    w = rng.standard_normal((10, 6, 3, 3)).astype(np.float32)
    g = rng.standard_normal((10, 9, 7)).astype(np.float32)
    size = W.conv3x3_scratch_size(x, w, 1, 1, -1, -1, 1, 1, 1, rule=False)
    sc = np.empty(size, np.float32)
    y = np.empty((10, 9, 7), np.float32)
    W.conv3x3_update_output(x, y, w, None, sc, -1, -1)
    x64, w64, g64 = x[None].astype(np.float64), w.astype(np.float64), g[None].astype(np.float64)
    _near(y, reference(x64, w64, None, (1, 1))[0])
    gi = np.empty_like(x)
    W.conv3x3_update_grad_input(x, g, gi, w, sc, -1, -1)
    gi_ref, gw_ref = reference_grads(x64, w64, g64, (1, 1))
    _near(gi, gi_ref[0])
    gw0 = rng.standard_normal(w.shape).astype(np.float32)
    gw = gw0.copy()
    W.conv3x3_acc_grad_parameters(x, g, gw, None, sc, -1, -1, 0.5, 1.0)
    _near(gw, gw0 + 0.5 * gw_ref)
    gw = gw0.copy()
    W.conv3x3_acc_grad_parameters(x, g, gw, None, sc, -1, -1, 0.0, 1.0)
    np.testing.assert_array_equal(gw, gw0)


def test_float32_error_of_the_benchmark_shape(rng):
    """The benchmark's convolution (a batch of 4): float32 within 1e-4 relative of float64,
    elementwise against the output's scale, for all three results."""
    x = rng.standard_normal((4, 16, 28, 28)).astype(np.float32)
    w = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    g = rng.standard_normal((4, 32, 28, 28)).astype(np.float32)
    y, gi, gw, _ = _run(x, w, b, g, 1)
    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    _near(y, reference(x64, w64, b, (1, 1)))
    gi_ref, gw_ref = reference_grads(x64, w64, g64, (1, 1))
    _near(gi, gi_ref)
    _near(gw, gw_ref)


def test_jacobian_of_the_winograd_kernels(rng):
    """gradInput is the transpose of the forward's Jacobian, and gradWeight the Jacobian in
    the weight applied to gradOutput: both maps are linear, so their Jacobians are the
    responses to basis vectors (float32, against each other)."""
    n, c, h, wd, m, p = 1, 2, 5, 4, 3, 1
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    sc = _scratch(x, w, p)
    oshape = (n, m, h + 2 * p - 2, wd + 2 * p - 2)
    y = np.empty(oshape, np.float32)
    jac_x = np.empty((y.size, x.size))
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = 1
        W.conv3x3_update_output(e, y, w, None, sc, p, p)
        jac_x[:, j] = y.ravel()
    jac_w = np.empty((y.size, w.size))
    for j in range(w.size):
        e = np.zeros_like(w)
        e.flat[j] = 1
        W.conv3x3_update_output(x, y, e, None, sc, p, p)
        jac_w[:, j] = y.ravel()
    gi = np.empty_like(x)
    for i in range(y.size):
        e = np.zeros(oshape, np.float32)
        e.flat[i] = 1
        W.conv3x3_update_grad_input(x, e, gi, w, sc, p, p)
        np.testing.assert_allclose(gi.ravel(), jac_x[i], atol=1e-5 * np.abs(w).max())
        gw = np.zeros_like(w)
        W.conv3x3_acc_grad_parameters(x, e, gw, None, sc, p, p, 1.0, 0.0)
        np.testing.assert_allclose(gw.ravel(), jac_w[i], atol=1e-5 * np.abs(x).max())


def test_nan_reaches_the_outputs_of_its_windows(rng):
    x = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    x[0, 3, 4, 5] = np.nan
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    g = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    y, _, gw, _ = _run(x, w, None, g, 1)
    window = np.zeros((9, 9), bool)
    window[3:6, 4:7] = True
    assert np.isnan(y[0][:, window]).all()
    assert np.isnan(gw[:, 3]).any()
    g[0, 2, 1, 1] = np.nan
    _, gi, _, _ = _run(np.nan_to_num(x), w, None, g, 1)
    assert np.isnan(gi[0][:, 0:3, 0:3]).all()


def test_scratch_size_says_where_the_kernels_apply(rng):
    x = rng.standard_normal((2, 16, 28, 28)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    assert W.conv3x3_scratch_size(x, w, 1, 1, 1, 1, 1, 1, 1) > 0
    assert W.conv3x3_scratch_size(x, w, 1, 1, -1, -1, 1, 1, 1) > 0
    assert W.conv3x3_scratch_size(x.astype(np.float64), w.astype(np.float64),
                                  1, 1, 1, 1, 1, 1, 1) == 0
    assert W.conv3x3_scratch_size(x, w, 2, 2, 1, 1, 1, 1, 1) == 0  # stride
    assert W.conv3x3_scratch_size(x, w, 1, 1, 1, 1, 2, 2, 1) == 0  # dilation
    assert W.conv3x3_scratch_size(x, w, 1, 1, 3, 3, 1, 1, 1) == 0  # pad beyond 2
    assert W.conv3x3_scratch_size(x, w[:, :8], 1, 1, 1, 1, 1, 1, 2) == 0  # groups
    assert W.conv3x3_scratch_size(x, w[:, :, :2], 1, 1, 1, 1, 1, 1, 1) == 0  # 2x3 kernel
    assert W.conv3x3_scratch_size(x, w[:, :8], 1, 1, 1, 1, 1, 1, 1) == 0  # planes differ
    # the rule: few planes or small outputs stay on im2col + GEMM, rule=False does not ask
    small = x[:, :2].copy()
    assert W.conv3x3_scratch_size(small, w[:, :2].copy(), 1, 1, 1, 1, 1, 1, 1) == 0
    assert W.conv3x3_scratch_size(small, w[:, :2].copy(), 1, 1, 1, 1, 1, 1, 1, rule=False) > 0
    assert W.conv3x3_scratch_size(x[:, :3].copy(), w[:, :3].copy(), 1, 1, 1, 1, 1, 1, 1) > 0
    assert W.conv3x3_scratch_size(x, w[:4].copy(), 1, 1, 1, 1, 1, 1, 1) == 0  # 4 planes out
    tiny = x[:, :, :6, :6].copy()  # 6x6 output: 4 tiles
    assert W.conv3x3_scratch_size(tiny, w, 1, 1, 1, 1, 1, 1, 1) > 0
    assert W.conv3x3_scratch_size(tiny[:, :, :4, :4].copy(), w, 1, 1, 1, 1, 1, 1, 1) == 0
    wide = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    assert W.conv3x3_scratch_size(tiny[:, :1].repeat(64, 1), wide, 1, 1, 1, 1, 1, 1, 1) == 0
    mid = x[:, :1, :16, :16].repeat(64, 1)  # 16 tiles: not with 4096 plane pairs
    assert W.conv3x3_scratch_size(mid, wide, 1, 1, 1, 1, 1, 1, 1) == 0
    assert W.conv3x3_scratch_size(x[:, :1].repeat(64, 1), wide, 1, 1, 1, 1, 1, 1, 1) > 0


def test_rejects_bad_arguments(rng):
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    sc = _scratch(x, w, 1)
    y = np.empty((2, 8, 9, 9), np.float32)
    with pytest.raises(TypeError, match="float32"):
        W.conv3x3_update_output(x.astype(np.float64), y, w.astype(np.float64), None, sc, 1, 1)
    with pytest.raises(ValueError, match="scratch has shape"):
        W.conv3x3_update_output(x, y, w, None, sc[1:], 1, 1)
    with pytest.raises(ValueError, match="output has shape"):
        W.conv3x3_update_output(x, y[:, :4].copy(), w, None, sc, 1, 1)
    with pytest.raises(ValueError, match="channels"):
        W.conv3x3_update_output(x[:, :4].copy(), y, w, None, sc, 1, 1)
    with pytest.raises(ValueError, match="pads"):
        W.conv3x3_update_output(x, y, w, None, sc, 3, 3)
    with pytest.raises(ValueError, match="smaller than the 3x3"):
        W.conv3x3_update_output(x[:, :, :2].copy(), y, w, None, sc, 0, 0)
    with pytest.raises(ValueError, match="bias has shape"):
        W.conv3x3_update_output(x, y, w, np.zeros(3, np.float32), sc, 1, 1)
    with pytest.raises(ValueError, match="overlaps"):
        W.conv3x3_update_output(x, sc[:y.size].reshape(y.shape), w, None, sc, 1, 1)
    with pytest.raises(ValueError, match="not C-contiguous"):
        W.conv3x3_update_output(x[..., ::-1], y, w, None, sc, 1, 1)
    gi = np.empty_like(x)
    with pytest.raises(ValueError, match="gradOutput has shape"):
        W.conv3x3_update_grad_input(x, y[:1], gi, w, sc, 1, 1)
    with pytest.raises(ValueError, match="gradInput overlaps"):
        W.conv3x3_update_grad_input(x, y, y, w, sc, 1, 1)
    gw = np.zeros_like(w)
    with pytest.raises(ValueError, match="gradBias has shape"):
        W.conv3x3_acc_grad_parameters(x, y, gw, np.zeros(3, np.float32), sc, 1, 1, 1.0, 1.0)
    with pytest.raises(ValueError, match="gradWeight is read-only"):
        gw.flags.writeable = False
        W.conv3x3_acc_grad_parameters(x, y, gw, None, sc, 1, 1, 1.0, 1.0)


# -- the layer --------------------------------------------------------------------------------

LAYER_SHAPES = [(2, 8, 10, 9, 8, 1), (1, 16, 12, 12, 24, 0), (2, 8, 11, 8, 12, 2)]


@pytest.mark.parametrize("n,c,h,wd,m,p", LAYER_SHAPES)
def test_layer_runs_winograd_and_matches_reference(n, c, h, wd, m, p, rng):
    conv = pm.SpatialConvolution(c, m, 3, 3, 1, 1, p, p)
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    g = rng.standard_normal((n, m, h + 2 * p - 2, wd + 2 * p - 2)).astype(np.float32)
    y = conv.forward(x)
    assert conv._wino is not None and conv._columns is None  # the fast path ran
    gi = conv.backward(x, g)
    x64, w64, g64 = x.astype(np.float64), conv.weight.astype(np.float64), g.astype(np.float64)
    _near(y, reference(x64, w64, conv.bias, (p, p)))
    gi_ref, gw_ref = reference_grads(x64, w64, g64, (p, p))
    _near(gi, gi_ref)
    _near(conv.gradWeight, gw_ref)
    _near(conv.gradBias, g64.sum(axis=(0, 2, 3)), 1e-5)
    scratch = conv._wino
    conv.forward(x)
    conv.backward(x, g)
    assert conv._wino is scratch  # steady state: no new scratch


@pytest.mark.parametrize("n,c,h,wd,m,p", LAYER_SHAPES)
def test_layer_float64_jacobians(n, c, h, wd, m, p, rng):
    """float64 keeps im2col + GEMM: its finite-difference Jacobians on the same shapes."""
    conv = pm.SpatialConvolution(c, m, 3, 3, 1, 1, p, p, dtype=np.float64)
    x = rng.standard_normal((1, c, min(h, 6), min(wd, 5)))
    assert_jacobian(conv, x, wrt="input")
    assert_jacobian(conv, x, wrt="parameters")
    conv.forward(x)
    assert conv._wino is None


def test_layer_falls_back_where_winograd_does_not_apply(rng):
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    for conv in (pm.SpatialConvolution(8, 8, 3, 3, 2, 2, 1, 1),     # stride
                 pm.SpatialConvolution(8, 8, 3, 3, 1, 1, 1, 1, 2),  # groups
                 pm.SpatialDilatedConvolution(8, 8, 3, 3, 1, 1, 2, 2, 2, 2),
                 pm.SpatialConvolution(8, 8, 5, 5, 1, 1, 2, 2),
                 pm.SpatialConvolution(2, 8, 3, 3, 1, 1, 1, 1)):    # few planes (the rule)
        xin = x[:, :conv.nInputPlane].copy()
        y = conv.forward(xin)
        conv.backward(xin, np.ones_like(y))
        assert conv._wino is None
    dil = pm.SpatialDilatedConvolution(8, 8, 3, 3, 1, 1, 1, 1)  # dilation 1: the fast path
    dil.forward(x)
    assert dil._wino is not None


def test_layer_against_torch(rng):
    torch = pytest.importorskip("torch")
    from torch_oracle import assert_matches_torch

    conv = pm.SpatialConvolution(16, 32, 3, 3, 1, 1, 1, 1)
    x = rng.standard_normal((2, 16, 14, 13)).astype(np.float32)
    g = rng.standard_normal((2, 32, 14, 13)).astype(np.float32)
    w, b = torch.from_numpy(conv.weight.copy()), torch.from_numpy(conv.bias.copy())
    assert_matches_torch(conv, lambda t: torch.nn.functional.conv2d(t, w, b, 1, 1), x, g,
                         rtol=1e-4, atol=1e-4)
    assert conv._wino is not None
    tx, tw = torch.from_numpy(x), torch.from_numpy(conv.weight.copy()).requires_grad_()
    torch.nn.functional.conv2d(tx, tw, None, 1, 1).backward(torch.from_numpy(g))
    _near(conv.gradWeight, tw.grad.numpy().astype(np.float64))
