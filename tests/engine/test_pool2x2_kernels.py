"""Max pooling over whole 2x2 windows moved by 2 (the vectorised rows of _pool2.h) against
the scalar rule: the first tap, then (0, 1), (1, 0), (1, 1), a later tap winning where it is
larger or NaN."""

import ctypes
import mmap

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
    # without indices (inference): the same maxima, NaNs and signed zeros included
    y0 = np.full_like(y, 7)
    K.max_pool_update_output(x, y0, None, 2, 2, 2, 2, 0, 0, False)
    np.testing.assert_array_equal(y0.view(np.uint8), y.view(np.uint8))


@pytest.mark.parametrize("hw", [(10, 10), (4, 9), (12, 30)])
def test_2x2_rows_shorter_than_a_vector_read_only_the_input(hw, rng):
    """A row of fewer than 8 outputs reads 16 columns of its two rows (past the row's end,
    into the rows after it) except where that would pass the input's end: a view ending
    at a page boundary, before an unmapped page, would fault."""
    h, w = hw
    page = mmap.PAGESIZE
    n = h * w * 4
    buf = mmap.mmap(-1, 2 * page + n)
    base = (page - n % page) % page  # the image ends where the second page starts
    x = np.frombuffer(buf, np.float32, h * w, base).reshape(1, 1, h, w)
    x[...] = rng.standard_normal(hw)
    libc = ctypes.CDLL(None)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + base + n
    assert addr % page == 0
    assert libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(page), 0) == 0
    try:
        y = np.empty((1, 1, h // 2, w // 2), np.float32)
        idx = np.empty(y.shape, np.intp)
        K.max_pool_update_output(x, y, idx, 2, 2, 2, 2, 0, 0, False)
        ry, ri = reference(np.array(x))
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_array_equal(idx, ri)
        K.max_pool_update_output(x, y, None, 2, 2, 2, 2, 0, 0, False)
        np.testing.assert_array_equal(y, ry)
    finally:
        libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(page), 3)

