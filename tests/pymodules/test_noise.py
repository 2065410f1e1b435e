"""SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout and Masking."""

import math

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

# (factory, input shape, the mask's shape for it): one mask value per (sample, channel)
SPATIAL = {
    "1D": (lambda p, d: pm.SpatialDropout1D(p, dtype=d), (40, 30, 50), (40, 1, 50)),
    "1D-single": (lambda p, d: pm.SpatialDropout1D(p, dtype=d), (30, 800), (1, 800)),
    "2D": (lambda p, d: pm.SpatialDropout2D(p, dtype=d), (40, 50, 3, 4), (40, 50, 1, 1)),
    "2D-single": (lambda p, d: pm.SpatialDropout2D(p, dtype=d), (900, 2, 3), (900, 1, 1)),
    "2D-NHWC": (lambda p, d: pm.SpatialDropout2D(p, "NHWC", d), (40, 3, 4, 50),
                (40, 1, 1, 50)),
    "2D-NHWC-single": (lambda p, d: pm.SpatialDropout2D(p, "NHWC", d), (3, 2, 900),
                       (1, 1, 900)),
    "3D": (lambda p, d: pm.SpatialDropout3D(p, dtype=d), (40, 50, 2, 3, 2), (40, 50, 1, 1, 1)),
    "3D-single": (lambda p, d: pm.SpatialDropout3D(p, dtype=d), (900, 2, 2, 3),
                  (900, 1, 1, 1)),
    "3D-NHWC": (lambda p, d: pm.SpatialDropout3D(p, "NHWC", d), (40, 2, 3, 2, 50),
                (40, 1, 1, 1, 50)),
    "3D-NHWC-single": (lambda p, d: pm.SpatialDropout3D(p, "NHWC", d), (2, 2, 3, 900),
                       (1, 1, 1, 900)),
}


@pytest.mark.parametrize("name", SPATIAL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spatial_dropout_drops_whole_maps(name, dtype, rng):
    make, shape, mask_shape = SPATIAL[name]
    x = rng.uniform(1, 2, shape).astype(dtype)
    m = make(0.3, dtype)
    y = m.forward(x)
    assert m.noise.shape == mask_shape
    assert set(np.unique(m.noise)) <= {0.0, 1.0}
    # BigDL: the kept maps are the input itself, not rescaled
    np.testing.assert_array_equal(y, x * m.noise)
    kept = np.broadcast_to(m.noise, shape) != 0
    np.testing.assert_array_equal(y != 0, kept)
    # each map is kept with probability 0.7: within 5 standard errors
    n = m.noise.size
    assert abs(m.noise.mean() - 0.7) < 5 * math.sqrt(0.21 / n)
    g = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(m.backward(x, g), g * m.noise)


@pytest.mark.parametrize("name", ["1D", "2D", "2D-NHWC", "3D-single"])
def test_spatial_dropout_evaluation_scales_by_the_keep_probability(name, rng):
    make, shape, _ = SPATIAL[name]
    x = rng.standard_normal(shape)
    m = make(0.25, np.float64).evaluate()
    np.testing.assert_allclose(m.forward(x), 0.75 * x, rtol=1e-15)
    np.testing.assert_allclose(m.backward(x, x), 0.75 * x, rtol=1e-15)


@pytest.mark.parametrize("name", ["1D", "2D-single", "2D-NHWC", "3D"])
def test_spatial_dropout_jacobian(name, rng):
    make, shape, _ = SPATIAL[name]
    x = rng.standard_normal(tuple(min(s, 3) for s in shape))
    assert_jacobian(make(0.5, np.float64), x, seed=3)
    assert_jacobian(make(0.5, np.float64).evaluate(), x)


def test_spatial_dropout_matches_torch_statistics(torch, rng):
    """Torch's Dropout2d drops the same things, whole (sample, channel) maps, as often; it
    rescales the kept ones by 1 / (1 - p) in training where BigDL scales by 1 - p in
    evaluation."""
    x = rng.uniform(1, 2, (200, 100, 2, 3))
    p = 0.35
    ours = pm.SpatialDropout2D(p, dtype=np.float64).forward(x)
    theirs = torch.nn.functional.dropout2d(torch.from_numpy(x), p, training=True).numpy()
    for y, scale in ((ours, 1.0), (theirs, 1 / (1 - p))):
        dropped = (y == 0).all(axis=(2, 3))
        kept = ~dropped
        np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-12)
        assert (y[dropped] == 0).all()
        assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / dropped.size)
    # the two fractions agree with each other to sampling error
    d1, d2 = (ours == 0).all(axis=(2, 3)).mean(), (theirs == 0).all(axis=(2, 3)).mean()
    assert abs(d1 - d2) < 5 * math.sqrt(2 * p * (1 - p) / (200 * 100))


def test_spatial_dropout_seed_reproduces_and_masks_differ(rng):
    x = np.ones((8, 64, 2, 2), np.float32)
    m = pm.SpatialDropout2D()
    pm.setSeed(4)
    a = m.forward(x).copy()
    b = m.forward(x).copy()
    pm.setSeed(4)
    np.testing.assert_array_equal(m.forward(x), a)
    assert not np.array_equal(a, b)


def test_spatial_dropout_extremes(rng):
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(pm.SpatialDropout2D(0.0).forward(x), x)
    np.testing.assert_array_equal(pm.SpatialDropout2D(1.0).forward(x), 0 * x)


@pytest.mark.parametrize("make, shape, match", [
    (lambda: pm.SpatialDropout1D(), (2, 3, 4, 5), r"input must be 2-D \(time, channels\) or "
                                                  r"3-D \(batch, time, channels\), got 4-D"),
    (lambda: pm.SpatialDropout2D(), (2, 3), r"input must be 3-D \(one sample\) or 4-D "
                                            r"\(a batch\), got 2-D"),
    (lambda: pm.SpatialDropout3D(0.2, "NHWC"), (2, 3, 4), "must be 4-D .* or 5-D"),
])
def test_spatial_dropout_wrong_rank_names_the_module(make, shape, match):
    assert_refusal_names_the_module(make, np.zeros(shape, np.float32), match)


def test_spatial_dropout_bad_arguments():
    with pytest.raises(ValueError, match=r"SpatialDropout2D: the drop probability must lie "
                                         r"in \[0, 1\], got 1.5"):
        pm.SpatialDropout2D(1.5)
    with pytest.raises(ValueError, match="format must be 'NCHW' or 'NHWC', got 'NWHC'"):
        pm.SpatialDropout3D(0.5, "NWHC")
    assert (pm.SpatialDropout1D().p, pm.SpatialDropout2D().format) == (0.5, "NCHW")
    assert pm.SpatialDropout3D(initP=0.2, format="NHWC").p == 0.2


# -- GaussianNoise, GaussianDropout ------------------------------------------------------------

def _normal_cdf(z):
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _ks_normal(z):
    """Kolmogorov-Smirnov distance of the sample ``z`` from the standard normal."""
    z = np.sort(np.asarray(z, np.float64).ravel())
    n = z.size
    c = _normal_cdf(z)
    return max(np.max(np.arange(1, n + 1) / n - c), np.max(c - np.arange(n) / n))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_noise_adds_normal_noise_in_training_only(dtype, rng):
    x = rng.standard_normal((200, 100)).astype(dtype)
    m = pm.GaussianNoise(0.3, dtype=dtype)
    z = (m.forward(x).astype(np.float64) - x) / 0.3
    # the 1% point of the KS distance for n = 20000 is 1.63 / sqrt(n)
    assert _ks_normal(z) < 1.63 / math.sqrt(z.size)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(m.backward(x, g), g)
    m.evaluate()
    np.testing.assert_array_equal(m.forward(x), x)
    np.testing.assert_array_equal(m.backward(x, g), g)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_dropout_multiplies_by_normal_noise_around_one(dtype, rng):
    x = rng.uniform(1, 2, (200, 100)).astype(dtype)
    rate = 0.2
    s = math.sqrt(rate / (1 - rate))
    m = pm.GaussianDropout(rate, dtype=dtype)
    y = m.forward(x)
    np.testing.assert_allclose(y, x * m.noise, rtol=1e-6)
    assert _ks_normal((m.noise.astype(np.float64) - 1) / s) < 1.63 / math.sqrt(x.size)
    g = rng.standard_normal(x.shape).astype(dtype)
    # fix: the gradient uses the forward's noise (BigDL draws new noise in backward)
    np.testing.assert_array_equal(m.backward(x, g), g * m.noise)
    m.evaluate()
    np.testing.assert_array_equal(m.forward(x), x)
    np.testing.assert_array_equal(m.backward(x, g), g)


def test_gaussian_jacobians_with_a_fixed_seed(rng):
    x = rng.standard_normal((3, 4))
    assert_jacobian(pm.GaussianDropout(0.4, dtype=np.float64), x, seed=2)
    assert_jacobian(pm.GaussianNoise(0.5, dtype=np.float64), x, seed=2)
    assert_jacobian(pm.GaussianDropout(0.4, dtype=np.float64).evaluate(), x)
    assert_jacobian(pm.GaussianNoise(0.5, dtype=np.float64).evaluate(), x)


def test_gaussian_noise_matches_torch_statistics(torch, rng):
    """The same distribution as torch.randn: mean, variance and tails agree."""
    x = np.zeros(100000)
    ours = pm.GaussianNoise(1.0, dtype=np.float64).forward(x)
    theirs = torch.randn(x.size, dtype=torch.float64).numpy()
    for v in (ours, theirs):
        assert abs(v.mean()) < 5 / math.sqrt(v.size)
        assert abs(v.var() - 1) < 5 * math.sqrt(2 / v.size)
        assert abs((np.abs(v) > 2).mean() - 0.0455) < 0.004


@pytest.mark.parametrize("make", [lambda: pm.GaussianNoise(0.2), lambda: pm.GaussianDropout(0.3)])
def test_gaussian_seed_reproduces_and_draws_differ(make):
    x = np.ones(1000, np.float32)
    m = make()
    pm.setSeed(8)
    a = m.forward(x).copy()
    b = m.forward(x).copy()
    pm.setSeed(8)
    np.testing.assert_array_equal(m.forward(x), a)
    assert not np.array_equal(a, b)


def test_gaussian_bad_arguments_and_errors():
    with pytest.raises(ValueError, match=r"GaussianDropout: rate must lie in \[0, 1\)"):
        pm.GaussianDropout(1.0)
    with pytest.raises(ValueError, match="GaussianNoise: stddev must be >= 0"):
        pm.GaussianNoise(-1.0)
    assert pm.GaussianDropout(0.5).stddev == 1.0
    assert pm.GaussianDropout(0.0).forward(np.ones(3, np.float32)).tolist() == [1, 1, 1]
    for make in (lambda: pm.GaussianNoise(0.1), lambda: pm.GaussianDropout(0.1)):
        assert_refusal_names_the_module(make, np.zeros(3), "input has dtype float64, "
                                        "expected float32", TypeError)
        m = make()
        m.forward(np.zeros((2, 3), np.float32))
        with pytest.raises(ValueError, match=r"@\w+\(.*\): gradOutput has shape \(3, 2\)"):
            m.backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))


# -- Masking -----------------------------------------------------------------------------------

def _masking_ref(x, v):
    steps = (x == v).reshape(x.shape[0], x.shape[1], -1).all(axis=2)
    return steps.reshape(steps.shape + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 4), (2, 4, 3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masking_matches_numpy(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(shape[0], shape[1], -1)
    flat[0, 1] = 0.5
    flat[1, 3] = 0.5
    if flat.shape[2] > 1:
        flat[1, 0, 0] = 0.5  # one value of the step only: not masked
    m = pm.Masking(0.5, dtype=dtype)
    masked = _masking_ref(x, np.asarray(0.5, dtype))
    assert masked.sum() == 2
    np.testing.assert_array_equal(m.forward(x), np.where(masked, 0, x))
    g = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(m.backward(x, g), np.where(masked, 0, g))


def test_masking_jacobian_and_nan(rng):
    x = rng.standard_normal((2, 4, 3))
    x[0, 0, :2] = 0.0  # (a step all of the mask value is a point of discontinuity)
    assert_jacobian(pm.Masking(dtype=np.float64), x)
    x[1, 2] = 0.0
    x[1, 2, 1] = np.nan  # not equal to the mask value: the step passes, NaN with it
    y = pm.Masking(dtype=np.float64).forward(x)
    assert np.isnan(y[1, 2, 1]) and (y[1, 2, [0, 2]] == 0).all()
    np.testing.assert_array_equal(y[0, 0], x[0, 0])


def test_masking_needs_batch_and_time(rng):
    assert_refusal_names_the_module(lambda: pm.Masking(), np.zeros(4, np.float32),
                                    r"input must be 2-D to 64-D, got 1-D")
    assert pm.Masking().maskValue == 0.0


def test_buffers_are_reused(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    for m in (pm.SpatialDropout2D(), pm.GaussianDropout(0.2), pm.GaussianNoise(0.1),
              pm.Masking()):
        y1, g1 = m.forward(x), m.backward(x, x)
        n1 = getattr(m, "noise", None)
        assert m.forward(x) is y1 and m.backward(x, x) is g1
        assert getattr(m, "noise", None) is n1


@pytest.mark.parametrize("make", [lambda: pm.SpatialDropout1D(), lambda: pm.GaussianNoise(1.0),
                                  lambda: pm.GaussianDropout(0.5), lambda: pm.RReLU()])
def test_a_clone_draws_a_stream_of_its_own(make):
    x = -np.ones((4, 50, 8), np.float32)
    m = make()
    c = m.cloneModule()
    assert not np.array_equal(m.forward(x), c.forward(x))
