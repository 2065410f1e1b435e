import numpy as np
import pytest
from pymodules.engine import table as kernels

DTYPES = [np.float32, np.float64]


def _parts(rng, shape, dim, sizes, dtype):
    return [rng.standard_normal(shape[:dim] + (c,) + shape[dim + 1:]).astype(dtype)
            for c in sizes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,dim,sizes", [
    ((3, 0, 4), 1, [2, 3, 1]), ((3, 0, 4), 0, [2, 0, 1]), ((2, 5, 3), 2, [1, 2]),
    ((0, 4), 1, [1, 3]), ((2, 3), 1, [0, 0]), ((6,), 0, [2, 4]),
])
def test_join_and_split_match_numpy(dtype, shape, dim, sizes, rng):
    parts = _parts(rng, shape, dim, sizes, dtype)
    whole_shape = shape[:dim] + (sum(sizes),) + shape[dim + 1:]
    whole = np.full(whole_shape, np.nan, dtype)
    kernels.join(parts, whole, dim)
    np.testing.assert_array_equal(whole, np.concatenate(parts, axis=dim))
    back = [np.full_like(p, np.nan) for p in parts]
    kernels.split(whole, back, dim)
    for a, b in zip(back, parts, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_join_with_offset_zeroes_the_rest(dtype, rng):
    part = rng.standard_normal((2, 2, 3)).astype(dtype)
    whole = np.full((2, 5, 3), np.nan, dtype)
    kernels.join([part], whole, 1, 2)
    expected = np.zeros((2, 5, 3), dtype)
    expected[:, 2:4] = part
    np.testing.assert_array_equal(whole, expected)
    out = np.empty((2, 2, 3), dtype)
    kernels.split(whole, [out], 1, 2)
    np.testing.assert_array_equal(out, part)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stacked_parts_lack_the_axis(dtype, rng):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    parts = [np.empty((2, 4), dtype) for _ in range(3)]
    kernels.split(x, parts, 1, 0, True)
    for i, p in enumerate(parts):
        np.testing.assert_array_equal(p, x[:, i])
    whole = np.empty_like(x)
    kernels.join(parts, whole, 1, 0, True)
    np.testing.assert_array_equal(whole, x)
    one = np.empty((2, 4), dtype)
    kernels.split(x, [one], 1, 2, True)
    np.testing.assert_array_equal(one, x[:, 2])


def test_join_rejects_bad_arguments(rng):
    a, b = np.ones((2, 3)), np.ones((2, 2))
    with pytest.raises(ValueError, match=r"input 1 has shape \(3, 2\), expected \(2, \*\)"):
        kernels.join([a, np.ones((3, 2))], np.empty((2, 5)), 1)
    with pytest.raises(ValueError, match="span 5 on dimension 1 from offset 0, but output has 4"):
        kernels.join([a, b], np.empty((2, 4)), 1)
    with pytest.raises(ValueError, match="dimension 2 is out of range"):
        kernels.join([a, b], np.empty((2, 5)), 2)
    with pytest.raises(TypeError, match="input 1 has dtype float32, expected float64"):
        kernels.join([a, b.astype(np.float32)], np.empty((2, 5)), 1)
    with pytest.raises(ValueError, match="input 0 is not C-contiguous"):
        kernels.join([np.ones((3, 2)).T, b], np.empty((2, 5)), 1)
    with pytest.raises(ValueError, match="output is read-only"):
        out = np.empty((2, 5))
        out.flags.writeable = False
        kernels.join([a, b], out, 1)
    with pytest.raises(TypeError, match="must be a list"):
        kernels.join(a, np.empty((2, 3)), 1)
    with pytest.raises(ValueError, match="empty list"):
        kernels.join([], np.empty((2, 3)), 1)
    with pytest.raises(TypeError, match="input 0 must be a numpy.ndarray, got int"):
        kernels.join([3], np.empty((2, 3)), 1)
    whole = np.zeros((2, 5))
    with pytest.raises(ValueError, match="output overlaps input 0"):
        kernels.join([whole[:1]], whole, 0)
    with pytest.raises(ValueError, match="output 1 overlaps output 0"):
        buf = np.empty(12)
        kernels.split(whole, [buf[:6].reshape(2, 3), buf[4:8].reshape(2, 2)], 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_cadd(dtype, n, rng):
    xs = [rng.standard_normal((3, 4)).astype(dtype) for _ in range(n)]
    out = np.empty((3, 4), dtype)
    kernels.cadd_update_output(xs, out)
    np.testing.assert_allclose(out, sum(xs), rtol=1e-6)
    gs = [np.empty((3, 4), dtype) for _ in range(n)]
    go = rng.standard_normal((3, 4)).astype(dtype)
    kernels.cadd_update_grad_input(go, gs)
    for g in gs:
        np.testing.assert_array_equal(g, go)


@pytest.mark.parametrize("dtype", DTYPES)
def test_csub(dtype, rng):
    a, b = (rng.standard_normal((2, 0, 3)).astype(dtype) for _ in range(2))
    out = np.empty_like(a)
    kernels.csub_update_output(a, b, out)
    a, b = (rng.standard_normal((2, 3)).astype(dtype) for _ in range(2))
    out = np.empty_like(a)
    kernels.csub_update_output(a, b, out)
    np.testing.assert_array_equal(out, a - b)
    g0, g1 = np.empty_like(a), np.empty_like(a)
    kernels.csub_update_grad_input(a, g0, g1)
    np.testing.assert_array_equal(g0, a)
    np.testing.assert_array_equal(g1, -a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_cmul_with_zeros(dtype, n, rng):
    xs = [rng.standard_normal((5, 3)).astype(dtype) for _ in range(n)]
    xs[0][0, 0] = 0
    out = np.empty((5, 3), dtype)
    kernels.cmul_update_output(xs, out)
    np.testing.assert_allclose(out, np.prod(xs, axis=0), rtol=1e-6)
    go = rng.standard_normal((5, 3)).astype(dtype)
    gs = [np.empty((5, 3), dtype) for _ in range(n)]
    kernels.cmul_update_grad_input(xs, go, gs)
    for i, g in enumerate(gs):
        others = np.prod([x for j, x in enumerate(xs) if j != i], axis=0) if n > 1 else 1
        np.testing.assert_allclose(g, go * others, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cmax_takes_the_first_on_ties(dtype, rng):
    xs = [rng.standard_normal((4, 3)).astype(dtype) for _ in range(3)]
    xs[2][0, 0] = xs[1][0, 0] = xs[0][0, 0] + 5
    out, idx = np.empty((4, 3), dtype), np.empty((4, 3), np.int32)
    kernels.cmax_update_output(xs, out, idx)
    np.testing.assert_array_equal(out, np.max(xs, axis=0))
    np.testing.assert_array_equal(idx, np.argmax(xs, axis=0))
    assert idx[0, 0] == 1
    go = rng.standard_normal((4, 3)).astype(dtype)
    gs = [np.full((4, 3), np.nan, dtype) for _ in range(3)]
    kernels.cmax_update_grad_input(go, gs, idx)
    for i, g in enumerate(gs):
        np.testing.assert_array_equal(g, np.where(idx == i, go, 0))


def test_elementwise_kernels_reject_bad_arguments():
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"input 1 has shape \(3, 2\), expected \(2, 3\)"):
        kernels.cadd_update_output([a, np.ones((3, 2))], np.empty((2, 3)))
    with pytest.raises(ValueError, match="output overlaps input 0"):
        kernels.cadd_update_output([a, np.ones((2, 3))], a)
    with pytest.raises(TypeError, match="indices has dtype"):
        kernels.cmax_update_output([a], np.empty((2, 3)), np.empty((2, 3)))
    with pytest.raises(ValueError, match="gradInput has 1 arrays, expected 2"):
        kernels.cmul_update_grad_input([a, a], a, [np.empty((2, 3))])
    with pytest.raises(ValueError, match="gradInput 0 overlaps gradOutput"):
        kernels.cadd_update_grad_input(a, [a])
    with pytest.raises(TypeError, match="input 0 has dtype float32, expected float64"):
        kernels.csub_update_output(a.astype(np.float32), a, np.empty((2, 3)))
