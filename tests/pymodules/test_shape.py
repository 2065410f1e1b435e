import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

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


# -- InferReshape: -1 inferred, 0 keeps the input's size (BigDL's InferReshape) ---------------
@pytest.mark.parametrize("shape,size,batchMode,expected", [
    ((4, 5, 6, 7), [4, 0, 3, -1], False, (4, 5, 3, 14)),  # BigDL's documented example
    ((2, 16, 4, 8), [0, 4, -1, 0], False, (2, 4, 16, 8)),
    ((2, 16, 4, 8), [-1, 4], False, (256, 4)),
    ((1, 18, 5, 3), [2, -1], False, (2, 135)),
    ((2, 3), [-1, 2], False, (3, 2)),
    ((1, 2, 3), [3, -1], False, (3, 2)),
    ((3, 1, 6), [3, -1], True, (3, 3, 2)),               # batch mode keeps the batch axis
    ((1, 1, 6), [-1, 2], True, (1, 3, 2)),               # a batch of one stays one
    ((4, 2, 3, 5), [0, -1], True, (4, 2, 15)),           # 0 keeps the sample's first axis
    ((2, 3, 4), [6, 4], False, (6, 4)),                  # no -1: a plain reshape
    ((0, 3, 4), [0, -1], True, (0, 3, 4)),                # an empty batch infers as well
    ((0, 3), [2, -1], False, (2, 0)),
])
def test_infer_reshape(shape, size, batchMode, expected, rng, torch):
    x = rng.standard_normal(shape)
    m = pm.InferReshape(size, batchMode)
    out = m.forward(x)
    assert out.shape == expected
    assert np.shares_memory(out, x) or x.size == 0
    np.testing.assert_array_equal(out, torch.tensor(x).reshape(expected).numpy())
    go = rng.standard_normal(expected)
    gi = m.backward(x, go)
    assert gi.shape == shape
    np.testing.assert_array_equal(gi, go.reshape(shape))
    if x.size:
        assert_jacobian(m, x)


def test_infer_reshape_follows_the_batch_and_copies_a_strided_input(rng):
    m = pm.InferReshape([-1, 2], True)
    for batch in (1, 4, 2):
        assert m.forward(rng.standard_normal((batch, 1, 6))).shape == (batch, 3, 2)
    strided = rng.standard_normal((6, 4)).T  # (4, 6)
    out = m.forward(strided)
    np.testing.assert_array_equal(out, np.ascontiguousarray(strided).reshape(4, 3, 2))
    assert str(pm.InferReshape([2, -1, 0])).endswith("(2x-1x0)")
    assert str(pm.InferReshape([-1], True)).endswith("(-1, batchMode)")


@pytest.mark.parametrize("size,batchMode,shape,match", [
    ([3, -1], True, (2, 2), r"input of shape \(2, 2\) cannot be reshaped to \(2, 3, -1\): "
                            r"its 2 elements per sample are not a multiple of 3"),
    ([3, -1], True, (3, 2, 2), r"cannot be reshaped to \(3, 3, -1\)"),
    ([-1, 2], True, (3, 1), r"cannot be reshaped to \(3, -1, 2\): its 1 elements per sample"),
    ([-1, 0], False, (2, 0), r"its 0 elements are not a multiple of 0"),
    ([0, 0, 0, -1], False, (6, 2), r"size entry 2 is 0 \(keep\) but the input \(6, 2\) has "
                                   r"no axis 2"),
    ([0, 0, -1], True, (6, 2), r"size entry 1 is 0 \(keep\) but the input \(6, 2\) has no "
                               r"axis 2"),
    ([5, 3], False, (2, 6), r"input of shape \(2, 6\) \(12 elements\) cannot be reshaped to "
                            r"\(5, 3\)"),
    ([-1], True, (), r"batchMode needs a batch axis, got an input of shape \(\)"),
])
def test_infer_reshape_refusals_name_the_module(size, batchMode, shape, match, rng):
    assert_refusal_names_the_module(lambda: pm.InferReshape(size, batchMode),
                                    rng.standard_normal(shape), match)


def test_infer_reshape_checks_its_sizes():
    with pytest.raises(ValueError, match=r"InferReshape@\w+\(-1x2x-1\): sizes are positive, 0 "
                                         r"\(keep the input's\) or -1 \(inferred, at most one\)"):
        pm.InferReshape([-1, 2, -1])
    with pytest.raises(ValueError, match=r"got \[2, -3\]"):
        pm.InferReshape([2, -3])
    with pytest.raises(TypeError, match="InferReshape: size must be an integer, got 1.5"):
        pm.InferReshape([1.5, -1])
    with pytest.raises(ValueError, match=r"InferReshape@\w+\(-1\): gradOutput has shape "
                                         r"\(5,\), expected \(6,\)"):
        m = pm.InferReshape([-1])
        m.forward(np.zeros((2, 3)))
        m.backward(np.zeros((2, 3)), np.zeros(5))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_infer_reshape_and_negative_indices_round_trip(dtype, tmp_path, rng):
    for m in (pm.InferReshape([0, -1], True), pm.Select(1, -1), pm.Narrow(1, -3, -1)):
        m = m.double() if dtype == "float64" else m
        x = rng.standard_normal((2, 4, 3)).astype(dtype)
        m.save(tmp_path / "m.pm", overWrite=True)
        r = pm.load(tmp_path / "m.pm")
        assert str(r) == str(m)
        np.testing.assert_array_equal(r.forward(x), m.forward(x))


# -- negative indices: Select(1, -1) is the last time step; BigDL's negative Narrow length ---
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_select_minus_one_is_the_last_time_step(dtype, rng, torch):
    x = rng.standard_normal((3, 5, 4)).astype(dtype)  # (batch, time, features)
    m = pm.Select(1, -1)
    out = m.forward(x)
    assert out.shape == (3, 4) and out.dtype == dtype
    np.testing.assert_array_equal(out, x[:, 4])
    np.testing.assert_array_equal(out, torch.tensor(x)[:, -1].numpy())
    go = rng.standard_normal((3, 4)).astype(dtype)
    gi = m.backward(x, go)
    np.testing.assert_array_equal(gi[:, 4], go)
    assert not gi[:, :4].any()
    assert m.forward(x[:, :2].copy()).shape == (3, 4)  # the last step of a shorter sequence
    np.testing.assert_array_equal(m.output, x[:, 1])
    np.testing.assert_array_equal(pm.Select(1, -5).forward(x), x[:, 0])
    np.testing.assert_array_equal(pm.Select(-1, -2).forward(x), x[:, :, 2])


@pytest.mark.parametrize("index,dim", [(-6, 1), (5, 1), (-4, 2)])
def test_select_out_of_range_negative_index_names_the_numbers(index, dim, rng):
    size = (3, 5, 3)[dim]
    assert_refusal_names_the_module(
        lambda: pm.Select(dim, index), rng.standard_normal((3, 5, 3)),
        rf"index {index} is out of range for dimension {dim} of size {size} "
        rf"\(input shape \(3, 5, 3\)\)")


@pytest.mark.parametrize("offset,length,band", [
    (0, -1, (0, 6)),    # -1 runs to the end (BigDL: size - offset + length + 1, 0-based)
    (1, -2, (1, 5)),    # -2 stops one before the end
    (-3, 2, (3, 5)),    # a negative offset counts from the end
    (-3, -1, (3, 6)),   # the last three steps
    (-1, 1, (5, 6)),
    (2, -4, (2, 3)),
    (2, 0, (2, 2)),     # an empty band
])
def test_narrow_negative_offset_and_length(offset, length, band, rng, torch):
    x = rng.standard_normal((2, 6, 3))
    m = pm.Narrow(1, offset, length)
    out = m.forward(x)
    np.testing.assert_array_equal(out, x[:, band[0]:band[1]])
    np.testing.assert_array_equal(
        out, torch.tensor(x).narrow(1, band[0], band[1] - band[0]).numpy())
    go = rng.standard_normal(out.shape)
    gi = m.backward(x, go)
    expected = np.zeros_like(x)
    expected[:, band[0]:band[1]] = go
    np.testing.assert_array_equal(gi, expected)
    if out.size:
        assert_jacobian(m, x)
    # the same band along the time axis of a longer sequence moves with its end
    longer = rng.standard_normal((2, 9, 3))
    shift = 3 if offset < 0 else 0
    end = band[1] + 3 if length < 0 or offset < 0 else band[1]
    np.testing.assert_array_equal(m.forward(longer), longer[:, band[0] + shift:end])


@pytest.mark.parametrize("offset,length,match", [
    (-7, 1, r"band \[-1, 0\) is out of range for dimension 1 of size 6"),
    (4, -4, r"band \[4, 3\) is out of range for dimension 1 of size 6"),
    (5, 2, r"band \[5, 7\) is out of range for dimension 1 of size 6"),
])
def test_narrow_out_of_range_names_the_numbers(offset, length, match, rng):
    assert_refusal_names_the_module(lambda: pm.Narrow(1, offset, length),
                                    rng.standard_normal((2, 6, 3)), match)
