"""Tile, Reverse, Index, ExpandSize and Pack."""

import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

NAME = r"@\w+(\(.*?\))?: "
DTYPES = [np.float32, np.float64]


def _round_trip(m, x, g):
    """(output, gradInput) copies."""
    y = m.forward(x)
    y = [a.copy() for a in y] if isinstance(y, list) else y.copy()
    gi = m.backward(x, g)
    return y, ([a.copy() for a in gi] if isinstance(gi, list) else gi.copy())


# -- Tile --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dim,copies", [((4,), 0, 3), ((2, 3), 0, 2), ((2, 3), 1, 4),
                                              ((2, 3, 4), 1, 2), ((2, 3, 4), -1, 3),
                                              ((2, 0, 3), 1, 2), ((2, 3), 1, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_matches_numpy(shape, dim, copies, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    m = pm.Tile(dim, copies)
    reps = [1] * len(shape)
    reps[dim] = copies
    y = m.forward(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.tile(x, reps))
    g = rng.standard_normal(y.shape).astype(dtype)
    want = sum(np.split(g.astype(np.float64), copies, axis=dim))
    np.testing.assert_allclose(m.backward(x, g), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,dim", [((3,), 0), ((2, 3), 1), ((2, 3, 2), 0), ((2, 3, 2), 2)])
def test_tile_jacobian(shape, dim, rng):
    assert_jacobian(pm.Tile(dim, 3, dtype=np.float64), rng.standard_normal(shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_matches_torch(dtype, torch, rng):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    g = rng.standard_normal((2, 9, 4)).astype(dtype)
    y, gi = _round_trip(pm.Tile(1, 3), x, g)
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = t.repeat(1, 3, 1)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gi, t.grad.numpy(), rtol=1e-6)


def test_tile_defaults_and_errors():
    m = pm.Tile()
    assert (m.dim, m.copies) == (0, 2)
    with pytest.raises(ValueError, match="Tile: copies must be >= 1"):
        pm.Tile(0, 0)
    assert_refusal_names_the_module(lambda: pm.Tile(2), np.zeros((2, 3), np.float32),
                                    "dimension 2 is out of range for an input of 2 dimensions")
    m = pm.Tile(1)
    m.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="Tile" + NAME + r"gradOutput has shape \(2, 3\), "
                                         r"expected \(2, 6\)"):
        m.backward(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))


# -- Reverse -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dim", [((5,), 0), ((3, 4), 0), ((3, 4), 1), ((2, 3, 4), 1),
                                       ((2, 3, 5), -1), ((2, 1, 3), 1), ((0, 3), 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reverse_matches_numpy(shape, dim, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, gi = _round_trip(pm.Reverse(dim), x, g)
    np.testing.assert_array_equal(y, np.flip(x, dim))
    np.testing.assert_array_equal(gi, np.flip(g, dim))


@pytest.mark.parametrize("shape,dim", [((3, 4), 0), ((2, 3, 4), 2)])
def test_reverse_jacobian(shape, dim, rng):
    assert_jacobian(pm.Reverse(dim, dtype=np.float64), rng.standard_normal(shape))


@pytest.mark.parametrize("size", [4, 5])
def test_reverse_in_place(size, rng):
    x = rng.standard_normal((3, size, 2)).astype(np.float32)
    g = rng.standard_normal((3, size, 2)).astype(np.float32)
    want_y, want_g = np.flip(x, 1).copy(), np.flip(g, 1).copy()
    m = pm.Reverse(1, True)
    assert m.forward(x) is x
    np.testing.assert_array_equal(x, want_y)
    assert m.backward(x, g) is g
    np.testing.assert_array_equal(g, want_g)


def test_reverse_matches_torch(torch, rng):
    x = rng.standard_normal((2, 3, 4))
    g = rng.standard_normal((2, 3, 4))
    y, gi = _round_trip(pm.Reverse(2, dtype=np.float64), x, g)
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.flip(t, [2])
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(gi, t.grad.numpy())


def test_reverse_defaults_and_errors():
    m = pm.Reverse()
    assert (m.dimension, m.isInplace) == (0, False)
    assert_refusal_names_the_module(lambda: pm.Reverse(3), np.zeros((2, 3), np.float32),
                                    "dimension 3 is out of range")
    assert_refusal_names_the_module(lambda: pm.Reverse(), np.zeros((2, 3), np.int64),
                                    "input has dtype int64, expected float32 or float64", TypeError)
    m = pm.Reverse(1)
    m.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="Reverse" + NAME + r"gradOutput has shape \(3, 2\), "
                                         r"expected \(2, 3\)"):
        m.backward(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float64))


# -- Index -------------------------------------------------------------------------------------

class _FixedIndices(pm.Module):
    """Index with its indices held fixed: the Jacobian with respect to the tensor alone."""

    def __init__(self, index, indices):
        super().__init__(np.float64)
        self.index, self.indices = index, indices

    def updateOutput(self, input):
        self.output = self.index.forward([input, self.indices])
        return self.output

    def updateGradInput(self, input, gradOutput):
        self.gradInput = self.index.backward([input, self.indices], gradOutput)[0]
        return self.gradInput


@pytest.mark.parametrize("shape,dim,idx", [((5,), 0, [4, 0, 2]), ((3, 4), 0, [2, 2, 0, 1]),
                                           ((3, 4), 1, [3, 1]), ((2, 3, 4), 1, [0, 2, 0]),
                                           ((2, 3, 4), -1, [1]), ((2, 3), 1, [])])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32, np.float64, np.float32])
def test_index_matches_numpy(shape, dim, idx, dtype, idx_dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    ix = np.array(idx, idx_dtype)
    m = pm.Index(dim)
    y = m.forward([x, ix])
    np.testing.assert_array_equal(y, np.take(x, np.array(idx, np.int64), axis=dim))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gix = m.backward([x, ix], g)
    want = np.zeros(shape)
    np.add.at(np.moveaxis(want, dim, 0), np.array(idx, np.int64),
              np.moveaxis(g.astype(np.float64), dim, 0))
    np.testing.assert_allclose(gx, want, rtol=1e-6, atol=1e-7)
    assert gix.shape == ix.shape and not gix.any() and gix.dtype == dtype


@pytest.mark.parametrize("shape,dim,idx", [((4,), 0, [3, 3, 1]), ((3, 4), 1, [0, 3, 0]),
                                           ((2, 3, 2), 1, [2, 0])])
def test_index_jacobian(shape, dim, idx, rng):
    m = _FixedIndices(pm.Index(dim, dtype=np.float64), np.array(idx))
    assert_jacobian(m, rng.standard_normal(shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_matches_torch(dtype, torch, rng):
    x = rng.standard_normal((3, 5, 2)).astype(dtype)
    idx = np.array([4, 0, 4, 2])
    g = rng.standard_normal((3, 4, 2)).astype(dtype)
    m = pm.Index(1)
    y = m.forward([x, idx]).copy()
    gi = m.backward([x, idx], g)[0]
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.index_select(t, 1, torch.from_numpy(idx))
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gi, t.grad.numpy(), rtol=1e-6)


def test_index_nan_in_the_tensor_comes_out(rng):
    x = rng.standard_normal((3, 4))
    x[1, 2] = np.nan
    y = pm.Index(1, dtype=np.float64).forward([x, np.array([2, 0])])
    assert np.isnan(y[1, 0]) and np.isnan(y).sum() == 1


@pytest.mark.parametrize("idx, error, match", [
    (np.array([0, 4]), ValueError, r"index 4 \(position 1\) is out of range for dimension 1 "
                                   r"of size 4"),
    (np.array([-1]), ValueError, "index -1 .* out of range"),
    (np.array([0.5]), ValueError, "indices must be whole numbers, got 0.5 at position 0"),
    (np.array([np.nan]), ValueError, "indices must be whole numbers"),
    (np.array([[0, 1]]), ValueError, r"indices must be 1-D, got shape \(1, 2\)"),
    (np.array(["a"]), TypeError, "indices have dtype <U1, expected float32, float64, int32 "
                                 "or int64"),
    (np.array([1, 2], np.uint8), TypeError, "indices have dtype uint8"),
    (np.array([0.0, np.inf], np.float32), ValueError, "whole numbers, got inf at position 1"),
    (np.array([1e30]), ValueError, "whole numbers, got 1e[+]?30 at position 0"),
])
def test_index_refuses_bad_indices(idx, error, match):
    assert_refusal_names_the_module(lambda: pm.Index(1), [np.zeros((3, 4), np.float32), idx],
                                    match, error)


def test_index_input_must_be_a_pair():
    assert_refusal_names_the_module(lambda: pm.Index(0), np.zeros(3, np.float32),
                                    r"input must be a table \[tensor, indices\], got ndarray",
                                    TypeError)
    assert_refusal_names_the_module(lambda: pm.Index(0), [np.zeros(3, np.float32)],
                                    "got 1 entries", TypeError)


# -- ExpandSize --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,sizes,expected", [
    ((1, 4, 1), [3, -1, 5], (3, 4, 5)), ((2, 1), [2, 6], (2, 6)), ((1,), [7], (7,)),
    ((3, 1, 1, 2), [3, 4, 5, 2], (3, 4, 5, 2)), ((1, 1), [1, 1], (1, 1)),
    ((2, 3), [-1, -1], (2, 3)), ((1, 3), [0, 3], (0, 3)), ((1, 3, 1), [2, 3, 1], (2, 3, 1)),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_expand_size_matches_numpy(shape, sizes, expected, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    m = pm.ExpandSize(sizes)
    y = m.forward(x)
    assert y.flags.c_contiguous and not np.shares_memory(y, x)
    np.testing.assert_array_equal(y, np.broadcast_to(x, expected))
    g = rng.standard_normal(expected).astype(dtype)
    axes = tuple(i for i, (a, b) in enumerate(zip(shape, expected, strict=True)) if a != b)
    want = g.astype(np.float64).sum(axis=axes, keepdims=True)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(m.backward(x, g), want.reshape(shape), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape,sizes", [((1, 3, 1), [2, 3, 4]), ((2, 1), [2, 3])])
def test_expand_size_jacobian(shape, sizes, rng):
    assert_jacobian(pm.ExpandSize(sizes, dtype=np.float64), rng.standard_normal(shape))


def test_expand_size_matches_torch(torch, rng):
    x = rng.standard_normal((1, 3, 1))
    g = rng.standard_normal((4, 3, 5))
    y, gi = _round_trip(pm.ExpandSize([4, -1, 5], dtype=np.float64), x, g)
    t = torch.from_numpy(x.copy()).requires_grad_()
    ty = t.expand(4, -1, 5)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(gi, t.grad.numpy(), rtol=1e-13)


def test_expand_size_errors():
    assert_refusal_names_the_module(lambda: pm.ExpandSize([2, 3]), np.zeros((1, 1, 3),
                                                                            np.float32),
                                    r"input has 3 dimensions \(shape \(1, 1, 3\)\), expected 2")
    assert_refusal_names_the_module(lambda: pm.ExpandSize([2, 3]), np.zeros((2, 2), np.float32),
                                    r"input of shape \(2, 2\) does not expand to output's "
                                    r"\(2, 3\): dimension 1 has size 2, not 1 or 3")
    with pytest.raises(ValueError, match="sizes must be >= 0 or -1"):
        pm.ExpandSize([2, -3])
    assert pm.ExpandSize(4).targetSizes == (4,)


# -- Pack --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dim", [((3,), 0), ((3,), 1), ((3,), -1), ((2, 3), 0),
                                       ((2, 3), 1), ((2, 3), 2), ((2, 3), -2), ((2, 3, 2), 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_matches_numpy(shape, dim, dtype, rng):
    xs = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    m = pm.Pack(dim)
    y = m.forward(xs)
    np.testing.assert_array_equal(y, np.stack(xs, axis=dim))
    g = rng.standard_normal(y.shape).astype(dtype)
    gi = m.backward(xs, g)
    assert isinstance(gi, list) and len(gi) == 3
    for k in range(3):
        np.testing.assert_array_equal(gi[k], np.take(g, k, axis=dim))


def test_pack_of_one_array(rng):
    x = rng.standard_normal((2, 3))
    m = pm.Pack(1, dtype=np.float64)
    y = m.forward(x)
    np.testing.assert_array_equal(y, x[:, None, :])
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(m.backward(x, g), g[:, 0, :])
    assert_jacobian(pm.Pack(-1, dtype=np.float64), x)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_pack_jacobian(dim, rng):
    xs = [rng.standard_normal((2, 3)) for _ in range(2)]
    assert_jacobian(pm.Pack(dim, dtype=np.float64), xs)


def test_pack_matches_torch(torch, rng):
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    g = rng.standard_normal((2, 3, 3)).astype(np.float32)
    m = pm.Pack(-1)
    y = m.forward(xs).copy()
    gi = m.backward(xs, g)
    ts = [torch.from_numpy(a.copy()).requires_grad_() for a in xs]
    ty = torch.stack(ts, -1)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    for a, t in zip(gi, ts, strict=True):
        np.testing.assert_array_equal(a, t.grad.numpy())


def test_pack_errors(rng):
    assert_refusal_names_the_module(lambda: pm.Pack(3), [np.zeros((2, 3), np.float32)] * 2,
                                    "dimension 3 is out of range for stacking arrays of 2 "
                                    "dimensions")
    assert_refusal_names_the_module(lambda: pm.Pack(0),
                                    [np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)],
                                    "input 1")
    assert_refusal_names_the_module(lambda: pm.Pack(0), [], "empty table", TypeError)


def test_buffers_are_reused(rng):
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    cases = [(pm.Tile(1, 2), x), (pm.Reverse(2), x), (pm.ExpandSize([2, 4, 3]), x),
             (pm.Index(2), [x, np.array([2.0, 0.0])]), (pm.Pack(0), [x, x])]
    for m, inp in cases:
        y1 = m.forward(inp)
        g = np.ones_like(y1)
        g1 = m.backward(inp, g)
        assert m.forward(inp) is y1
        g2 = m.backward(inp, g)
        assert g2 is g1 or all(a is b for a, b in zip(g2, g1, strict=True))
