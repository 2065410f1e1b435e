"""A float32 batch of one: on a core with AVX-512 the forward runs engine/_linear.h's dot
products (pm_linear_dots), elsewhere OpenBLAS's gemv; both against NumPy in float64."""

import numpy as np
import pytest
from pymodules.engine.linear import allow_wide, linear_update_output
from tolerance import abs_gemm, assert_reduction_close


@pytest.fixture(autouse=True, params=["core's kernel", "gemv"])
def path(request):
    """The forward as this core runs it, then (on a core with AVX-512 another path) gemv."""
    allow_wide(request.param == "core's kernel")
    yield request.param
    allow_wide(True)


# (k, m): rows of whole 64-byte vectors and of a partial last one (masked), groups of four
# weight rows and the single rows after them, the MLP's and LeNet's layers
SIZES = [(1, 1), (7, 3), (16, 4), (17, 5), (33, 9), (400, 120), (120, 84), (784, 256),
         (84, 10), (1000, 7)]


@pytest.mark.parametrize("k,m", SIZES)
@pytest.mark.parametrize("shape", ["vector", "batch"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_against_numpy(k, m, shape, with_bias, rng):
    w = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if with_bias else None
    x = rng.standard_normal((k,) if shape == "vector" else (1, k)).astype(np.float32)
    y = np.full(x.shape[:-1] + (m,), np.nan, np.float32)
    linear_update_output(x, y, w, b)
    expected = x.astype(np.float64) @ w.T.astype(np.float64) + (b if with_bias else 0)
    magnitude = abs_gemm(x.reshape(1, k), w.T).reshape(y.shape) + (abs(b) if with_bias else 0)
    assert_reduction_close(y, expected, np.float32, k + 1, magnitude, 1e-12)


def test_reads_only_its_rows(rng):
    """The masked last vector of a row reads nothing past it: NaN right after the weight and
    after x would show in the sums."""
    k, m = 21, 6
    buf = np.full(m * k + 16, np.nan, np.float32)
    w = buf[:m * k].reshape(m, k)
    w[...] = rng.standard_normal((m, k))
    x = np.full(k + 16, np.nan, np.float32)[:k]
    x[...] = rng.standard_normal(k)
    y = np.empty(m, np.float32)
    linear_update_output(x, y, w, None)
    assert_reduction_close(y, w.astype(np.float64) @ x, np.float32, k + 1,
                           abs(w) @ abs(x), 1e-12)
