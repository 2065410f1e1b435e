"""Max pooling over whole 2x2 windows moved by 2 (the vectorised rows of _pool2.h) against
the scalar rule: the first tap, then (0, 1), (1, 0), (1, 1), a later tap winning where it is
larger or NaN."""

import numpy as np
import pytest
from pymodules.engine import pooling as K


def reference(x):
    n, c, h, w = x.shape
    oh, ow = h // 2, w // 2
    y = np.empty((n, c, oh, ow), x.dtype)
    idx = np.empty((n, c, oh, ow), np.intp)
    for a in range(oh):
        for b in range(ow):
            m = x[:, :, 2 * a, 2 * b].copy()
            i = np.full(m.shape, 2 * a * w + 2 * b, np.intp)
            for di, dj in ((0, 1), (1, 0), (1, 1)):
                v = x[:, :, 2 * a + di, 2 * b + dj]
                take = (v > m) | np.isnan(v)
                m = np.where(take, v, m)
                i = np.where(take, (2 * a + di) * w + 2 * b + dj, i)
            y[:, :, a, b], idx[:, :, a, b] = m, i
    return y, idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(28, 28), (10, 10), (4, 33), (3, 16), (6, 7), (2, 9), (5, 2)])
def test_2x2_against_the_scalar_rule(dtype, hw, rng):
    x = rng.standard_normal((2, 3) + hw).astype(dtype)
    x[..., ::3, 1::2] = x[..., ::3, : hw[1] // 2 * 2:2]  # ties: the first tap stays
    x[0, 1, 1, :: 2] = x[0, 1, 0, :: 2]
    x.flat[rng.integers(0, x.size, 7)] = np.nan  # a NaN wins, the first NaN tap
    x.flat[rng.integers(0, x.size, 3)] = -np.inf
    oh, ow = hw[0] // 2, hw[1] // 2
    y = np.full((2, 3, oh, ow), 7, dtype)
    idx = np.full((2, 3, oh, ow), -1, np.intp)
    K.max_pool_update_output(x, y, idx, 2, 2, 2, 2, 0, 0, False)
    ry, ri = reference(x)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ri)
    y1 = np.empty_like(y[0])
    i1 = np.empty_like(idx[0])
    K.max_pool_update_output(x[1], y1, i1, 2, 2, 2, 2, 0, 0, False)
    np.testing.assert_array_equal(y1, ry[1])
    np.testing.assert_array_equal(i1, ri[1])
