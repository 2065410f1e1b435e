import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("make", [
    lambda: pm.SpatialMaxPooling(2, 2, 2, 2, dtype=np.float64),
    lambda: pm.SpatialMaxPooling(3, 2, 2, 1, 1, 1, dtype=np.float64).ceil(),
    lambda: pm.SpatialAveragePooling(3, 2, 2, 1, 1, 1, ceilMode=True, dtype=np.float64),
    lambda: pm.SpatialAveragePooling(2, 2, 1, 1, countIncludePad=False, divide=False,
                                     dtype=np.float64),
    lambda: pm.SpatialAveragePooling(2, 2, globalPooling=True, dtype=np.float64),
])
@pytest.mark.parametrize("batched", [True, False])
def test_spatial_jacobian(make, batched, rng):
    x = rng.standard_normal((2, 3, 5, 6) if batched else (3, 5, 6))
    assert_jacobian(make(), x, wrt="input")


@pytest.mark.parametrize("shape", [(7, 3), (2, 8, 3)])
def test_temporal_jacobian(shape, rng):
    assert_jacobian(pm.TemporalMaxPooling(3, 2, dtype=np.float64), rng.standard_normal(shape))


def _torch_check(torch, m, fn, x, dtype):
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt)
    y = m.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol(dtype), atol=tol(dtype))
    go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    np.testing.assert_allclose(m.backward(x, go), xt.grad.numpy(), rtol=tol(dtype),
                               atol=tol(dtype))


WINDOWS = [  # kernel (h, w), stride, pad, ceil
    ((2, 2), (2, 2), (0, 0), False),
    ((3, 3), (2, 2), (1, 1), True),
    ((3, 2), (2, 1), (1, 0), False),
    ((2, 2), (3, 3), (0, 0), True),
    ((3, 3), (2, 2), (0, 1), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,ceil", WINDOWS)
@pytest.mark.parametrize("batched", [True, False])
def test_max_pool_matches_torch(torch, dtype, k, s, p, ceil, batched, rng):
    m = pm.SpatialMaxPooling(k[1], k[0], s[1], s[0], p[1], p[0], toCeil=ceil, dtype=dtype)
    x = rng.standard_normal((2, 3, 9, 8) if batched else (3, 9, 8)).astype(dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.max_pool2d(t, k, s, p, ceil_mode=ceil),
                 x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p,ceil", WINDOWS)
@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool_matches_torch(torch, dtype, k, s, p, ceil, include_pad, rng):
    m = pm.SpatialAveragePooling(k[1], k[0], s[1], s[0], p[1], p[0], ceilMode=ceil,
                                 countIncludePad=include_pad, dtype=dtype)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.avg_pool2d(
        t, k, s, p, ceil_mode=ceil, count_include_pad=include_pad), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_and_temporal_max_match_torch(torch, dtype, rng):
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    m = pm.SpatialAveragePooling(1, 1, globalPooling=True, dtype=dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, 1), x, dtype)
    s = rng.standard_normal((2, 10, 4)).astype(dtype)
    m = pm.TemporalMaxPooling(3, 2, dtype=dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.max_pool1d(
        t.transpose(1, 2), 3, 2).transpose(1, 2), s, dtype)


def test_ceil_and_floor_switch_output_size():
    m = pm.SpatialMaxPooling(2, 2, 2, 2)
    x = np.zeros((1, 5, 5), np.float32)
    assert m.forward(x).shape == (1, 2, 2)
    assert m.ceil() is m and m.forward(x).shape == (1, 3, 3)
    assert m.floor().forward(x).shape == (1, 2, 2)
    a = pm.SpatialAveragePooling(2, 2, 2, 2).ceil()
    assert a.forward(x).shape == (1, 3, 3)


def test_same_padding_pools_like_tensorflow():
    # SAME: ceil(5 / 2) = 3 outputs, pad (3 - 1) * 2 + 2 - 5 = 1, all of it at the end
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5)
    m = pm.SpatialMaxPooling(2, 2, 2, 2, -1, -1, dtype=np.float64)
    np.testing.assert_array_equal(m.forward(x)[0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    a = pm.SpatialAveragePooling(2, 2, 2, 2, -1, -1, countIncludePad=False, dtype=np.float64)
    assert a.forward(x)[0, 2, 2] == 24


def test_defaults_follow_bigdl():
    m = pm.SpatialMaxPooling(3, 2)
    assert (m.dW, m.dH, m.padW, m.padH, m.ceilMode) == (3, 2, 0, 0, False)
    a = pm.SpatialAveragePooling(3, 3)
    assert (a.dW, a.dH, a.countIncludePad, a.divide, a.ceilMode) == (1, 1, True, True, False)
    assert pm.TemporalMaxPooling(4).dW == 4


def test_divide_false_multiplies_by_kernel_area():
    x = np.ones((1, 4, 4))
    a = pm.SpatialAveragePooling(2, 2, 2, 2, divide=False, dtype=np.float64)
    np.testing.assert_array_equal(a.forward(x), np.full((1, 2, 2), 4.0))
    a = pm.SpatialAveragePooling(2, 2, 2, 2, globalPooling=True, divide=False, dtype=np.float64)
    np.testing.assert_array_equal(a.forward(x), np.full((1, 1, 1), 16.0))


def test_indices_are_reused_and_dropped_by_clear_state(rng):
    m = pm.SpatialMaxPooling(2, 2, 2, 2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    m.forward(x)
    idx = m.indices
    assert idx.dtype == np.intp and idx.shape == (2, 3, 3, 3)
    m.forward(x)
    assert m.indices is idx
    m.clearState()
    assert m.indices is None


@pytest.mark.parametrize("make,x,match", [
    (lambda: pm.SpatialMaxPooling(5, 5), np.zeros((1, 4, 4), np.float32),
     r"input is 4x4, smaller than the 5x5 kernel"),
    (lambda: pm.SpatialAveragePooling(3, 3, 1, 1, 1, 1), np.zeros((1, 1, 0), np.float32),
     r"input is 1x0 \(padded by 1, 1\), smaller than the 3x3 kernel"),
    (lambda: pm.SpatialMaxPooling(2, 2), np.zeros((4, 4), np.float32),
     r"input must be 3-D to 4-D, got 2-D"),
    (lambda: pm.TemporalMaxPooling(3), np.zeros((2, 4), np.float32),
     r"input has 2 frames, fewer than the kernel width 3"),
])
def test_errors_name_the_module_and_numbers(make, x, match):
    assert_refusal_names_the_module(make, x, match)


@pytest.mark.parametrize("make,match", [
    (lambda: pm.SpatialMaxPooling(2, 2, 2, 2, 2, 2), "exceed half the 2x2 kernel"),
    (lambda: pm.SpatialMaxPooling(2, 2, 0, 2), "must be >= 1"),
    (lambda: pm.SpatialAveragePooling(3, 3, padW=-1), "pads must be >= 0, or both -1"),
    (lambda: pm.TemporalMaxPooling(0), "must be >= 1"),
])
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_backward_before_forward_is_a_named_error():
    m = pm.SpatialMaxPooling(2, 2)
    x = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(TypeError, match="indices must be a numpy.ndarray") as info:
        m.backward(x, np.zeros((1, 2, 2), np.float32))
    assert str(info.value).startswith(str(m))


@pytest.mark.parametrize("make,shape,flip", [
    (lambda: pm.SpatialMaxPooling(2, 2, 2, 2), (2, 3, 10, 10), 2),
    (lambda: pm.SpatialMaxPooling(3, 3, 2, 2, 1, 1), (2, 3, 10, 10), 2),
    (lambda: pm.TemporalMaxPooling(3, 2), (2, 11, 5), 1),
    (lambda: pm.TemporalMaxPooling(2), (9, 4), 0),
    (lambda: pm.VolumetricMaxPooling(2, 2, 2), (2, 3, 4, 6, 6), 3),
    (lambda: pm.VolumetricMaxPooling(3, 2, 3, 2, 1, 2, 1, 1, 1).ceil(), (1, 2, 5, 6, 7), 2),
])
def test_max_pooling_in_evaluation_keeps_no_indices_and_backward_finds_them(make, shape, flip,
                                                                            rng):
    """In evaluation the forward writes only the maxima; a backward then finds the argmax from
    the input it gets, as the training forward would have (the output may have been changed
    in place since: an in-place ReLU after the pooling)."""
    x = rng.standard_normal(shape).astype(np.float32)
    go = rng.standard_normal(make().forward(x).shape).astype(np.float32)
    trained = make()
    y = trained.forward(x).copy()
    gi = trained.backward(x, go).copy()
    m = make().evaluate()
    np.testing.assert_array_equal(m.forward(x), y)
    assert m.indices is None
    m.output[...] = -1  # changed in place after the forward
    np.testing.assert_array_equal(m.backward(x, go), gi)
    np.testing.assert_array_equal(m.indices, trained.indices)
    np.testing.assert_array_equal(m.output, -1)
    # a later forward in evaluation leaves the indices stale: the backward finds them again
    x2 = np.flip(x, flip).copy()
    maxima = m._maxima
    m.forward(x2)
    trained.forward(x2)
    np.testing.assert_array_equal(m.backward(x2, go), trained.backward(x2, go))
    assert m._maxima is maxima  # the backward's scratch is reused, not allocated a call
    # back in training the forward keeps indices again
    m.training()
    m.forward(x)
    trained.forward(x)
    np.testing.assert_array_equal(m.indices, trained.indices)
    m.clearState()
    assert m._maxima is None and m.indices is None
