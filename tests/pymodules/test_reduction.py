import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module
from tolerance import assert_reduction_close

import pymodules as pm

DTYPES = [np.float32, np.float64]


# -- Sum and Mean ------------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "shape", "axis", "mean", "out_shape"), [
    (lambda d: pm.Sum(dtype=d), (3, 4), 0, False, (4,)),
    (lambda d: pm.Sum(1, dtype=d), (3, 4), 1, False, (3,)),
    (lambda d: pm.Sum(1, squeeze=False, dtype=d), (3, 4), 1, False, (3, 1)),
    (lambda d: pm.Sum(1, sizeAverage=True, dtype=d), (2, 3, 4), 1, True, (2, 4)),
    (lambda d: pm.Sum(-1, dtype=d), (2, 3, 4), 2, False, (2, 3)),
    (lambda d: pm.Sum(2, nInputDims=2, dtype=d), (3, 4), 1, False, (3,)),  # one sample
    (lambda d: pm.Sum(2, nInputDims=2, dtype=d), (2, 3, 4), 2, False, (2, 3)),  # a batch
    (lambda d: pm.Sum(0, dtype=d), (5,), 0, False, ()),
    (lambda d: pm.Sum(1, dtype=d), (1, 6), 1, False, (1,)),  # a batch of one stays one
    (lambda d: pm.Mean(dtype=d), (3, 4), 0, True, (4,)),
    (lambda d: pm.Mean(1, squeeze=False, dtype=d), (2, 300, 3), 1, True, (2, 1, 3)),
    (lambda d: pm.Mean(2, 2, dtype=d), (3, 4), 1, True, (3,)),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_and_mean_against_numpy(make, shape, axis, mean, out_shape, dtype, rng):
    m = make(dtype)
    x = (rng.standard_normal(shape) + 0.5).astype(dtype)
    y = m.forward(x)
    assert y.shape == out_shape and y.dtype == dtype
    x64 = x.astype(np.float64)
    want = (x64.mean if mean else x64.sum)(axis=axis).reshape(out_shape)
    scale = shape[axis] if mean else 1
    assert_reduction_close(y, want, dtype, k=shape[axis],
                           magnitude=np.abs(x64).sum(axis=axis).reshape(out_shape) / scale)
    g = np.asarray(rng.standard_normal(out_shape), dtype)
    gi = m.backward(x, g)
    want_gi = np.broadcast_to(np.expand_dims(g.astype(np.float64).reshape(
        np.delete(shape, axis)), axis) / scale, shape)
    np.testing.assert_allclose(gi, want_gi, rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("make", [lambda: pm.Sum(1, dtype=np.float64),
                                  lambda: pm.Mean(0, squeeze=False, dtype=np.float64),
                                  lambda: pm.Sum(2, sizeAverage=True, dtype=np.float64)])
def test_sum_jacobian(make, rng):
    assert_jacobian(make(), rng.standard_normal((3, 4, 5)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_matches_torch(dtype, torch, rng):
    from torch_oracle import assert_matches_torch

    x = rng.standard_normal((4, 1000)).astype(dtype)
    g = rng.standard_normal(4).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12}
    assert_matches_torch(pm.Sum(1, dtype=dtype), lambda t: t.sum(1), x, g, **tol)
    x3 = rng.standard_normal((3, 5, 7)).astype(dtype)
    g3 = rng.standard_normal((3, 1, 7)).astype(dtype)
    assert_matches_torch(pm.Mean(1, squeeze=False, dtype=dtype),
                         lambda t: t.mean(1, keepdim=True), x3, g3, **tol)


def test_sum_of_an_empty_axis_is_zero_and_its_mean_nan():
    x = np.empty((3, 0), np.float32)
    np.testing.assert_array_equal(pm.Sum(1).forward(x), np.zeros(3))
    with np.errstate(invalid="ignore"):
        assert np.isnan(pm.Mean(1).forward(x)).all()


def test_sum_refusals_name_the_module(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert_refusal_names_the_module(lambda: pm.Sum(2), x,
                                    r"dimension 2 is out of range for an input of 2 dim")
    assert_refusal_names_the_module(lambda: pm.Sum(3, 2), x,
                                    r"dimension 3 is out of range .* no batch axis")
    assert_refusal_names_the_module(lambda: pm.Sum(), x.astype(np.float64),
                                    r"input has dtype float64, expected float32", TypeError)
    assert_refusal_names_the_module(lambda: pm.Mean(), [x], r"must be a numpy.ndarray",
                                    TypeError)
    m = pm.Sum(1)
    m.forward(x)
    with pytest.raises(ValueError, match=r"^Sum@\w+\(dimension=1\): gradOutput has shape "
                                         r"\(4,\), expected \(3,\) or \(3, 1\)"):
        m.backward(x, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="dimension must be an integer"):
        pm.Sum(0.5)


# -- Max and Min -------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "np_arg", "np_red"), [(pm.Max, np.argmax, np.max),
                                                       (pm.Min, np.argmin, np.min)])
@pytest.mark.parametrize(("args", "shape", "axis", "out_shape"), [
    ((), (4, 5), 0, (5,)),
    ((1,), (4, 5), 1, (4,)),
    ((1,), (2, 3, 4), 1, (2, 4)),
    ((-1,), (2, 3, 4), 2, (2, 3)),
    ((2, 2), (3, 4), 1, (3,)),  # one sample of 2 dims: dim 2 of the batch is axis 1
    ((0,), (6,), 0, (1,)),  # BigDL: a 1-D input gives (1,)
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_min_against_numpy(cls, np_arg, np_red, args, shape, axis, out_shape, dtype, rng):
    m = cls(*args, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = m.forward(x)
    assert y.shape == out_shape
    np.testing.assert_array_equal(y, np_red(x, axis=axis).reshape(out_shape))
    g = rng.standard_normal(out_shape).astype(dtype)
    gi = m.backward(x, g)
    want = np.zeros_like(x)
    idx = np.expand_dims(np_arg(x, axis=axis), axis)
    np.put_along_axis(want, idx, np.expand_dims(g.reshape(np.delete(shape, axis)), axis),
                      axis)
    np.testing.assert_array_equal(gi, want)


@pytest.mark.parametrize("cls", [pm.Max, pm.Min])
def test_max_min_jacobian(cls, rng):
    assert_jacobian(cls(1, dtype=np.float64), rng.standard_normal((3, 4, 5)))
    assert_jacobian(cls(0, dtype=np.float64), rng.standard_normal(7))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_min_match_torch_with_ties_and_nan(dtype, torch, rng):
    x = rng.integers(0, 3, (4, 6, 5)).astype(dtype)  # many ties
    x[1, 3, 2] = x[2, 0, 4] = x[2, 4, 4] = np.nan
    g = rng.standard_normal((4, 5)).astype(dtype)
    for m, f in ((pm.Max(1, dtype=dtype), lambda t: t.max(1)),
                 (pm.Min(1, dtype=dtype), lambda t: t.min(1))):
        y, gi = m.forward(x).copy(), m.backward(x, g).copy()
        tx = torch.from_numpy(x.copy()).requires_grad_()
        values, indices = f(tx)
        values.backward(torch.from_numpy(g))
        np.testing.assert_array_equal(y, values.detach().numpy())
        assert np.isnan(y[1, 2]) and np.isnan(y[2, 4])
        nan_free = ~np.isnan(y)
        # ties: torch's index is its kernel's choice; ours is the first
        is_max = type(m) is pm.Max
        first = (np.argmax if is_max else np.argmin)(
            np.nan_to_num(x, nan=np.inf if is_max else -np.inf), axis=1)
        np.testing.assert_array_equal(m._indices, first)
        np.testing.assert_array_equal(m._indices[~nan_free], indices.numpy()[~nan_free])
        np.testing.assert_array_equal(gi.sum(1), g)  # one position per slice takes it
        np.testing.assert_array_equal(np.count_nonzero(gi, axis=1), (g != 0) * 1)


def test_max_of_an_empty_axis_is_refused():
    assert_refusal_names_the_module(lambda: pm.Max(1), np.empty((2, 0), np.float32),
                                    r"input has no values on axis 1 to take the max of")


def test_max_buffers_are_reused(rng):
    m = pm.Min(1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    m.forward(x)
    m.backward(x, np.ones(3, np.float32))
    held = (m.output, m.gradInput, m._indices)
    m.forward(x)
    m.backward(x, np.ones(3, np.float32))
    assert all(a is b for a, b in zip(held, (m.output, m.gradInput, m._indices), strict=True))
