"""The row-major BLAS wrapper against NumPy, through its validating entry points."""

import numpy as np
import pytest
from pymodules.engine import blas
from tolerance import abs_gemm, assert_reduction_close

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _r(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("mnk", [(3, 4, 5), (1, 7, 2), (0, 3, 4), (3, 0, 4), (3, 4, 0)])
def test_gemm(dtype, ta, tb, mnk, rng):
    m, n, k = mnk
    a = _r(rng, (k, m) if ta else (m, k), dtype)
    b = _r(rng, (n, k) if tb else (k, n), dtype)
    c = _r(rng, (m, n), dtype)
    expected = 0.5 * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b)) + 2.0 * c
    magnitude = 0.5 * abs_gemm(a.T if ta else a, b.T if tb else b) + 2.0 * abs(c)
    blas.gemm_checked(ta, tb, 0.5, a, b, 2.0, c)
    assert_reduction_close(c, expected, dtype, k, magnitude, RTOL[np.float64])


def test_gemm_beta_zero_overwrites_nan(rng):
    a, b = _r(rng, (2, 3), np.float64), _r(rng, (3, 4), np.float64)
    c = np.full((2, 4), np.nan)
    blas.gemm_checked(False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_allclose(c, a @ b)
    c = np.full((2, 4), np.nan)
    blas.gemm_checked(False, False, 1.0, a[:, :0].copy(), b[:0].copy(), 0.0, c)
    assert not c.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("mn", [(3, 5), (1, 4), (4, 1), (0, 3), (3, 0)])
def test_gemv(dtype, ta, mn, rng):
    m, n = mn
    a = _r(rng, (m, n), dtype)
    x = _r(rng, m if ta else n, dtype)
    y = _r(rng, n if ta else m, dtype)
    expected = -1.5 * ((a.T if ta else a).astype(np.float64) @ x) + 0.5 * y
    magnitude = 1.5 * abs_gemm(a.T if ta else a, x) + 0.5 * abs(y)
    blas.gemv_checked(ta, -1.5, a, x, 0.5, y)
    assert_reduction_close(y, expected, dtype, m if ta else n, magnitude, RTOL[np.float64])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn", [(3, 5), (1, 1), (0, 3)])
def test_ger(dtype, mn, rng):
    m, n = mn
    x, y, a = _r(rng, m, dtype), _r(rng, n, dtype), _r(rng, (m, n), dtype)
    expected = 2.0 * np.outer(x, y) + a
    blas.ger_checked(2.0, x, y, a)
    np.testing.assert_allclose(a, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 17])
def test_level1(dtype, n, rng):
    x, y = _r(rng, n, dtype), _r(rng, n, dtype)
    expected = 3.0 * x + y
    blas.axpy_checked(3.0, x, y)
    np.testing.assert_allclose(y, expected, rtol=RTOL[dtype])
    if dtype == np.float32:
        assert_reduction_close(blas.dot_checked(x, y), x.astype(np.float64) @ y, dtype, n,
                               abs_gemm(x, y))
    else:
        np.testing.assert_allclose(blas.dot_checked(x, y), x.astype(np.float64) @ y,
                                   rtol=RTOL[dtype] * 10, atol=RTOL[dtype])
    blas.scal_checked(-2.0, y)
    np.testing.assert_allclose(y, -2.0 * expected, rtol=RTOL[dtype])
    blas.copy_checked(x, y)
    np.testing.assert_array_equal(y, x)


def test_refusals(rng):
    a = _r(rng, (3, 4), np.float64)
    with pytest.raises(ValueError, match=r"op\(a\) is \(3, 4\) but op\(b\) is \(3, 2\)"):
        blas.gemm_checked(False, False, 1.0, a, np.zeros((3, 2)), 0.0, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="b has dtype float32, expected float64"):
        blas.gemm_checked(False, False, 1.0, a, np.zeros((4, 2), np.float32), 0.0,
                          np.zeros((3, 2)))
    with pytest.raises(ValueError, match="a is not C-contiguous"):
        blas.gemm_checked(False, False, 1.0, a[:, ::2], np.zeros((2, 2)), 0.0, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="c overlaps a"):
        sq = _r(rng, (3, 3), np.float64)
        blas.gemm_checked(False, False, 1.0, sq, sq.copy(), 0.0, sq)
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="y is read-only"):
        blas.axpy_checked(1.0, np.ones(4), ro)
    with pytest.raises(ValueError, match=r"y has shape \(3,\), expected \(4,\)"):
        blas.axpy_checked(1.0, np.ones(4), np.ones(3))
    with pytest.raises(TypeError, match="x must be a numpy.ndarray, got list"):
        blas.dot_checked([1.0], np.ones(1))
    with pytest.raises(TypeError, match="x has dtype int64, expected float32 or float64"):
        blas.scal_checked(1.0, np.ones(3, np.int64))
    with pytest.raises(ValueError, match="x must be 1-D, got 2-D"):
        blas.scal_checked(1.0, np.ones((3, 1)))
