import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm

NAME = r"@\w+(\(.*?\))?: "


def test_identity_passes_arrays_and_tables(rng):
    x = [rng.standard_normal(3), rng.standard_normal(2)]
    m = pm.Identity()
    assert m.forward(x) is x
    assert m.backward(x, x) is x
    assert_jacobian(m, rng.standard_normal((2, 3)))


@pytest.mark.parametrize("shape,size,batchMode,expected", [
    ((2, 6), (3, 4), None, (3, 4)),        # same element count: whole input
    ((2, 6), (3, 2), None, (2, 3, 2)),     # counts differ by the batch: keep it
    ((1, 6), (6,), None, (1, 6)),          # BigDL: a leading 1 is a batch of one
    ((2, 6), (6,), True, (2, 6)),
    ((1, 6), (6,), False, (6,)),
    ((4, 2, 3), (6,), None, (4, 6)),
])
def test_reshape(shape, size, batchMode, expected, rng):
    x = rng.standard_normal(shape)
    m = pm.Reshape(size, batchMode)
    out = m.forward(x)
    assert out.shape == expected
    np.testing.assert_array_equal(out.ravel(), x.ravel())
    assert np.shares_memory(out, x)
    g = m.backward(x, rng.standard_normal(expected))
    assert g.shape == shape
    assert_jacobian(m, x)


def test_reshape_errors(rng):
    with pytest.raises(ValueError, match="Reshape" + NAME + r"input of shape \(2, 5\)"):
        pm.Reshape([3]).forward(rng.standard_normal((2, 5)))


@pytest.mark.parametrize("shape,sizes,n,expected", [
    ((2, 6), [3, 4], 0, (3, 4)),
    ((2, 6), [3, 2], 0, (2, 3, 2)),
    ((2, 6), [-1, 2], 0, (6, 2)),
    ((2, 6), [3, -1], 1, (2, 3, 2)),
    ((6,), [3, 2], 1, (3, 2)),
    ((2, 2, 6), [12], 2, (2, 12)),
])
def test_view(shape, sizes, n, expected, rng):
    x = rng.standard_normal(shape)
    m = pm.View(sizes, n)
    assert m.forward(x).shape == expected
    assert_jacobian(m, x)


@pytest.mark.parametrize("dim,offset,length,band", [
    (0, 1, 2, (1, 3)), (1, 0, 2, (0, 2)), (2, -2, 2, (2, 4)), (1, 1, -1, (1, 3)),
    (-1, 0, 1, (0, 1)),
])
def test_narrow(dim, offset, length, band, rng, torch):
    x = rng.standard_normal((3, 3, 4))
    m = pm.Narrow(dim, offset, length)
    out = m.forward(x)
    ref = torch.tensor(x).narrow(dim, band[0], band[1] - band[0]).numpy()
    np.testing.assert_array_equal(out, ref)
    assert out.flags.c_contiguous
    go = rng.standard_normal(out.shape)
    gi = m.backward(x, go)
    expected = np.zeros_like(x)
    axis = dim % 3
    expected[(slice(None),) * axis + (slice(*band),)] = go
    np.testing.assert_array_equal(gi, expected)
    assert_jacobian(m, x)


def test_narrow_batch_band_is_a_view_and_copies_never_write_into_inputs(rng):
    x = rng.standard_normal((4, 3))
    m = pm.Narrow(0, 1, 2)
    assert np.shares_memory(m.forward(x), x)
    keep = x.copy()
    y = rng.standard_normal((2, 3))
    m2 = pm.Narrow(1, 0, 1)
    m2.forward(rng.standard_normal((2, 3)))
    m.forward(x)
    m2.forward(y)
    np.testing.assert_array_equal(x, keep)
    with pytest.raises(ValueError, match="Narrow" + NAME + r"band \[2, 4\) is out of range"):
        pm.Narrow(1, 2, 2).forward(x)


@pytest.mark.parametrize("dim,index", [(0, 1), (1, 2), (2, -1), (-2, 0)])
def test_select(dim, index, rng, torch):
    x = rng.standard_normal((2, 3, 4))
    m = pm.Select(dim, index)
    out = m.forward(x)
    np.testing.assert_array_equal(out, torch.tensor(x).select(dim, index).numpy())
    assert out.flags.c_contiguous
    go = rng.standard_normal(out.shape)
    gi = m.backward(x, go)
    expected = np.zeros_like(x)
    expected[(slice(None),) * (dim % 3) + (index,)] = go
    np.testing.assert_array_equal(gi, expected)
    assert_jacobian(m, x)
    with pytest.raises(ValueError, match="Select" + NAME + "index 5 is out of range"):
        pm.Select(1, 5).forward(x)


@pytest.mark.parametrize("dim,n,shape,expected", [
    (None, pm.nn.shape.INTMIN, (1, 3, 1), (3,)),
    (None, 2, (1, 3, 1), (1, 3)),        # batch of one kept
    (2, pm.nn.shape.INTMIN, (1, 3, 1), (1, 3)),
    (1, pm.nn.shape.INTMIN, (1, 3, 1), (1, 3, 1)),   # size 3: nothing to squeeze
    ([0, 2], pm.nn.shape.INTMIN, (1, 3, 1), (3,)),
    (2, 2, (3, 1), (3,)),                # a single sample: dimension 2 is axis 1
])
def test_squeeze(dim, n, shape, expected, rng):
    x = rng.standard_normal(shape)
    m = pm.Squeeze(dim, n)
    assert m.forward(x).shape == expected
    assert m.backward(x, np.ones(expected)).shape == shape
    assert_jacobian(m, x)


@pytest.mark.parametrize("pos,n,shape,expected", [
    (0, pm.nn.shape.INTMIN, (2, 3), (1, 2, 3)), (2, pm.nn.shape.INTMIN, (2, 3), (2, 3, 1)),
    (-1, pm.nn.shape.INTMIN, (2, 3), (2, 3, 1)), (1, 1, (2, 3), (2, 1, 3)),
    (1, 1, (3,), (1, 3)),
])
def test_unsqueeze(pos, n, shape, expected, rng):
    x = rng.standard_normal(shape)
    m = pm.Unsqueeze(pos, n)
    assert m.forward(x).shape == expected
    assert_jacobian(m, x)


def test_transpose(rng, torch):
    x = rng.standard_normal((2, 3, 4))
    m = pm.Transpose([(0, 2), (1, 2)])
    out = m.forward(x)
    ref = torch.tensor(x).transpose(0, 2).transpose(1, 2).contiguous().numpy()
    np.testing.assert_array_equal(out, ref)
    assert out.flags.c_contiguous
    go = rng.standard_normal(out.shape)
    t = torch.tensor(x, requires_grad=True)
    t.transpose(0, 2).transpose(1, 2).backward(torch.tensor(go))
    np.testing.assert_array_equal(m.backward(x, go), t.grad.numpy())
    assert_jacobian(m, x)


@pytest.mark.parametrize("dim,nDim,shape,expected", [
    (0, pm.nn.shape.INTMAX, (2, 3), (4, 2, 3)), (1, pm.nn.shape.INTMAX, (2, 3), (2, 4, 3)),
    (1, 1, (2, 3), (2, 4, 3)), (1, 1, (3,), (4, 3)),
])
def test_replicate(dim, nDim, shape, expected, rng):
    x = rng.standard_normal(shape)
    m = pm.Replicate(4, dim, nDim)
    out = m.forward(x)
    assert out.shape == expected
    axis = expected.index(4)
    np.testing.assert_array_equal(out, np.repeat(np.expand_dims(x, axis), 4, axis))
    go = rng.standard_normal(expected)
    np.testing.assert_allclose(m.backward(x, go), go.sum(axis=axis))
    assert_jacobian(m, x)


def test_contiguous(rng):
    x = rng.standard_normal((3, 4))
    keep = x.copy()
    m = pm.Contiguous()
    assert m.forward(x) is x
    out = m.forward(x.T)
    assert out.flags.c_contiguous and not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, x.T)
    np.testing.assert_array_equal(m.backward(x.T, x.T), x.T)
    m.forward(x)        # a later copy never lands in an earlier input
    m.forward(x[::-1].T)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("make,ndim,match", [
    (lambda: pm.Narrow(1, 0, 1), 1, r"dimension 1 is out of range for an input of 1 dimensions"),
    (lambda: pm.Narrow(-2, 0, 1), 1, r"dimension -2 is out of range for an input of 1 dim"),
    (lambda: pm.Narrow(0, 0, 1), 0, r"dimension 0 is out of range for an input of 0 dim"),
    (lambda: pm.Select(2, 0), 2, r"dimension 2 is out of range for an input of 2 dimensions"),
    (lambda: pm.Select(0, 0), 0, r"dimension 0 is out of range for an input of 0 dimensions"),
    (lambda: pm.Squeeze(1), 1, r"dimension 1 is out of range for an input of 1 dimensions"),
    (lambda: pm.Squeeze([0, 3]), 2, r"dimension 3 is out of range for an input of 2 dim"),
    (lambda: pm.Unsqueeze(3), 1, r"pos 3 is out of range for an input of 2 dimensions"),
    (lambda: pm.Unsqueeze(-4), 1, r"pos -4 is out of range for an input of 2 dimensions"),
])
def test_too_few_dimensions_name_the_module_and_the_numbers(make, ndim, match):
    """A ValueError led by the module, in forward and in a backward before any forward."""
    x = np.zeros((2,) * ndim, np.float32)
    m = make()
    with pytest.raises(ValueError, match=match) as info:
        m.forward(x)
    assert str(info.value).startswith(str(m))
    if isinstance(m, (pm.Narrow, pm.Select)):
        m = make()  # nothing located yet (a gradOutput of one element used to fit silently)
        with pytest.raises(ValueError, match="backward before forward: forward must run "
                                             "first, it locates the") as info:
            m.backward(x, np.zeros((1,) * ndim, np.float32))
        assert str(info.value).startswith(str(m))
