import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm


@pytest.mark.parametrize("scale", [True, False])
def test_train_masks_and_scales(scale, rng):
    x = rng.uniform(1, 2, (200, 50)).astype(np.float32)
    m = pm.Dropout(0.3, scale=scale)
    y = m.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], (x / 0.7 if scale else x)[kept], rtol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(m.backward(x, g), np.where(kept, g / 0.7 if scale else g, 0),
                               rtol=1e-6)


@pytest.mark.parametrize("scale", [True, False])
def test_eval_is_identity_or_expectation(scale, rng):
    x = rng.standard_normal((4, 5))
    m = pm.Dropout(0.25, scale=scale, dtype=np.float64).evaluate()
    np.testing.assert_allclose(m.forward(x), x if scale else 0.75 * x)
    assert_jacobian(m, x)


def test_jacobian_in_training_with_a_fixed_seed(rng):
    assert_jacobian(pm.Dropout(0.4, dtype=np.float64), rng.standard_normal((3, 4)), seed=7)


def test_seed_reproduces_the_mask_and_masks_differ_between_calls(rng):
    x = np.ones(1000, np.float32)
    m = pm.Dropout(0.5)
    pm.setSeed(3)
    a = m.forward(x).copy()
    b = m.forward(x).copy()
    pm.setSeed(3)
    np.testing.assert_array_equal(m.forward(x), a)
    assert not np.array_equal(a, b)


def test_inplace(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    m = pm.Dropout(0.5, inplace=True)
    x0 = x.copy()
    y = m.forward(x)
    assert y is x
    np.testing.assert_allclose(x, x0 * m.noise)
    assert m.backward(x, g) is g


def test_p_zero_keeps_everything_and_bad_p_raises(rng):
    x = rng.standard_normal(50).astype(np.float32)
    np.testing.assert_array_equal(pm.Dropout(0.0).forward(x), x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pm.Dropout(1.0)
    assert pm.Dropout().getP() == 0.5 and pm.Dropout().setP(0.2).getP() == 0.2
