"""SpatialConvolution on its direct forward (few planes, 5x5: LeNet's convolutions)."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from tolerance import assert_reduction_close

import pymodules as pm

DTYPES = [np.float32, np.float64]


def _top(a):
    return float(np.max(np.abs(a), initial=0))


@pytest.mark.parametrize("wrt", ["input", "weight", "bias"])
@pytest.mark.parametrize("batched", [True, False])
def test_direct_jacobian(wrt, batched, rng):
    m = pm.SpatialConvolution(2, 6, 5, 5, 1, 1, 1, 2, dtype=np.float64)
    x = rng.standard_normal((2, 2, 6, 5) if batched else (2, 6, 5))
    m.forward(x)
    assert m._direct is not None and m._columns is None  # the direct forward ran
    assert_jacobian(m, x, wrt=wrt)


def _with_torch_twin(torch, c, o, pad, dtype):
    """A 5x5 SpatialConvolution and the torch Conv2d with its weights."""
    m = pm.SpatialConvolution(c, o, 5, 5, 1, 1, pad, pad, dtype=dtype)
    tm = torch.nn.Conv2d(c, o, 5, 1, pad).to(torch.float32 if dtype == np.float32
                                             else torch.float64)
    with torch.no_grad():
        tm.weight.copy_(torch.tensor(m.weight))
        tm.bias.copy_(torch.tensor(m.bias))
    return m, tm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,o,pad", [(6, 16, 0), (6, 12, 0), (3, 10, 2)])
@pytest.mark.parametrize("batched", [True, False])
def test_direct_matches_torch(torch, dtype, c, o, pad, batched, rng):
    m, tm = _with_torch_twin(torch, c, o, pad, dtype)
    x = rng.standard_normal((3, c, 14, 13) if batched else (c, 14, 13)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    y = m.forward(x)
    assert m._direct is not None
    taps = c * 25
    assert_reduction_close(y, yt.detach().numpy(), dtype, taps + 1,
                           2 * taps * _top(x) * _top(m.weight) + _top(m.bias), 1e-10)
    go = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    gi = m.backward(x, go)  # the backward is the im2col one, after a direct forward
    assert_reduction_close(gi, xt.grad.numpy(), dtype, o * 25, 2 * o * 25 * _top(go)
                           * _top(m.weight), 1e-10)
    pixels = y.size // o
    assert_reduction_close(m.gradWeight, tm.weight.grad.numpy(), dtype, pixels,
                           2 * pixels * _top(x) * _top(go), 1e-10)


def test_direct_scratch_is_reused_and_dropped(rng):
    m = pm.SpatialConvolution(6, 16, 5, 5)
    x = rng.standard_normal((2, 6, 14, 14)).astype(np.float32)
    y = m.forward(x)
    scratch = m._direct
    assert scratch is not None and m._columns is None
    assert m.forward(x) is y and m._direct is scratch
    m.backward(x, np.ones_like(y))
    assert m._columns is not None and m.forward(x) is y and m._direct is scratch
    m.clearState()
    assert m._direct is None and m._columns is None
    m.double()
    assert m.forward(x.astype(np.float64)).dtype == np.float64
    assert m._direct.dtype == np.float64


def test_direct_not_for_one_vector_of_planes_on_short_rows_or_strides(rng):
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    m = pm.SpatialConvolution(1, 6, 5, 5, 1, 1, 2, 2)  # LeNet's first: output rows in lanes
    m.forward(x)
    assert m._direct is not None and m._columns is None
    m = pm.SpatialConvolution(1, 6, 5, 5)  # 15-pixel rows, under two float32 vectors: panel
    m.forward(x[:, :, :19, :19])
    assert m._direct is None and m._columns is not None
    m = pm.SpatialConvolution(1, 16, 5, 5, 2, 2)
    m.forward(x)
    assert m._direct is None


# The output rows in the lanes (one vector of planes or fewer, rows of two vectors or more):
# blocks of up to 6 planes, a row's last block overlapping the one before where its length
# is not a multiple of two vectors.
@pytest.mark.parametrize("wrt", ["input", "weight", "bias"])
@pytest.mark.parametrize("batched", [True, False])
def test_direct_rows_jacobian(wrt, batched, rng):
    m = pm.SpatialConvolution(2, 3, 4, 4, 1, 1, 1, 0, dtype=np.float64)
    x = rng.standard_normal((2, 2, 5, 12) if batched else (2, 5, 12))  # 11-pixel rows
    m.forward(x)
    assert m._direct is not None and m._columns is None
    assert_jacobian(m, x, wrt=wrt)


@pytest.mark.parametrize("dtype,c,o,pad,width", [
    (np.float32, 1, 6, 2, 28), (np.float32, 1, 8, 0, 20), (np.float32, 2, 7, 1, 18),
    (np.float32, 3, 1, 2, 33), (np.float64, 1, 4, 2, 28), (np.float64, 2, 3, 0, 12),
    (np.float64, 3, 1, 1, 10)])
@pytest.mark.parametrize("batched", [True, False])
def test_direct_rows_matches_torch(torch, dtype, c, o, pad, width, batched, rng):
    m, tm = _with_torch_twin(torch, c, o, pad, dtype)
    x = rng.standard_normal((3, c, 9, width) if batched else (c, 9, width)).astype(dtype)
    y = m.forward(x)
    assert m._direct is not None and m._columns is None
    taps = c * 25
    assert_reduction_close(y, tm(torch.tensor(x)).detach().numpy(), dtype, taps + 1,
                           2 * taps * _top(x) * _top(m.weight) + _top(m.bias), 1e-10)
    assert not np.shares_memory(y, m._direct)


def test_direct_rows_propagates_nan(rng):
    m = pm.SpatialConvolution(1, 6, 5, 5, 1, 1, 2, 2)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    x[1, 0, 10, 27] = np.nan
    y = m.forward(x)
    assert m._direct is not None
    bad = np.isnan(y)
    assert not bad[0].any()
    assert bad[1, :, 8:13, 25:28].all() and bad[1].sum() == 6 * 5 * 3


def test_direct_refusal_names_the_module(rng):
    m = pm.SpatialConvolution(6, 16, 5, 5).setName("c2")
    m.forward(rng.standard_normal((2, 6, 14, 14)).astype(np.float32))
    with pytest.raises(ValueError, match=r"^c2\(6 -> 16.*input has 5 channels, expected 6"):
        m.forward(np.zeros((2, 5, 14, 14), np.float32))
