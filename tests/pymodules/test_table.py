import functools

import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm

NAME = r"@\w+(\(.*?\))?: "


def _table(rng, n, shape=(3, 4)):
    return [rng.standard_normal(shape) for _ in range(n)]


def _torch_grads(torch, fn, xs, go):
    """Outputs and input gradients of ``fn`` under torch autograd (float64)."""
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    out = fn(ts)
    outs = out if isinstance(out, (list, tuple)) else [out]
    gos = go if isinstance(go, list) else [go]
    torch.autograd.backward(list(outs), [torch.tensor(g) for g in gos])
    return [o.detach().numpy() for o in outs], [t.grad.numpy() for t in ts]


# -- elementwise ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3])
def test_cadd_table(n, rng, torch):
    xs, go = _table(rng, n), rng.standard_normal((3, 4))
    m = pm.CAddTable()
    np.testing.assert_allclose(m.forward(xs), sum(xs), rtol=1e-12)
    gi = m.backward(xs, go)
    assert len(gi) == n and all(g is not go for g in gi)
    (out,), grads = _torch_grads(torch, lambda t: sum(t[1:], t[0]), xs, go)
    np.testing.assert_allclose(m.output, out, rtol=1e-12)
    for g, t in zip(gi, grads, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-12)
    assert_jacobian(m, xs)


def test_cadd_table_broadcasts(rng, torch):
    xs = [rng.standard_normal((3, 4)), rng.standard_normal((1, 4)), rng.standard_normal(4)]
    go = rng.standard_normal((3, 4))
    m = pm.CAddTable()
    np.testing.assert_allclose(m.forward(xs), xs[0] + xs[1] + xs[2])
    gi = m.backward(xs, go)
    (out,), grads = _torch_grads(torch, lambda t: t[0] + t[1] + t[2], xs, go)
    for g, t, x in zip(gi, grads, xs, strict=True):
        assert g.shape == x.shape
        np.testing.assert_allclose(g, t, rtol=1e-12)
    assert_jacobian(m, xs)


def test_csub_table(rng, torch):
    xs, go = _table(rng, 2), rng.standard_normal((3, 4))
    m = pm.CSubTable()
    np.testing.assert_array_equal(m.forward(xs), xs[0] - xs[1])
    gi = m.backward(xs, go)
    np.testing.assert_array_equal(gi[0], go)
    np.testing.assert_array_equal(gi[1], -go)
    assert_jacobian(m, xs)
    with pytest.raises(ValueError, match="CSubTable" + NAME + "input has 3 entries, expected 2"):
        m.forward(_table(rng, 3))


@pytest.mark.parametrize("n", [2, 3])
def test_cmul_table(n, rng, torch):
    xs, go = _table(rng, n), rng.standard_normal((3, 4))
    xs[1][0, 0] = 0.0
    m = pm.CMulTable()
    m.forward(xs)
    gi = m.backward(xs, go)
    (out,), grads = _torch_grads(torch, lambda t: torch.stack(t).prod(0), xs, go)
    np.testing.assert_allclose(m.output, out, rtol=1e-12)
    for g, t in zip(gi, grads, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-12, atol=1e-15)
    assert_jacobian(m, xs)


@pytest.mark.parametrize("shapes", [
    [(3, 4), ()], [(), (3, 4)], [(3, 4), (1,)], [(1,), (3, 4), (3, 4)], [(2, 3, 4), (1,)],
])
def test_cmul_table_broadcasts_a_scalar_operand(shapes, rng, torch):
    xs = [rng.standard_normal(s) for s in shapes]
    m = pm.CMulTable()
    out = m.forward(xs)
    go = rng.standard_normal(out.shape)
    gi = m.backward(xs, go)
    (ref,), grads = _torch_grads(torch, lambda t: functools.reduce(lambda a, b: a * b, t), xs, go)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    for g, t, x in zip(gi, grads, xs, strict=True):
        assert g.shape == x.shape
        np.testing.assert_allclose(g, t, rtol=1e-12)
    assert_jacobian(m, xs)
    with pytest.raises(ValueError, match=r"CMulTable@\w+: input shapes \[\(3, 4\), \(1,\), "
                                         r"\(2,\)\] do not broadcast"):
        m.forward([rng.standard_normal((3, 4)), np.ones(1), np.ones(2)])


def test_cmax_table(rng, torch):
    xs, go = _table(rng, 3), rng.standard_normal((3, 4))
    m = pm.CMaxTable()
    m.forward(xs)
    gi = m.backward(xs, go)
    (out,), grads = _torch_grads(
        torch, lambda t: torch.maximum(torch.maximum(t[0], t[1]), t[2]), xs, go)
    np.testing.assert_array_equal(m.output, out)
    for g, t in zip(gi, grads, strict=True):
        np.testing.assert_array_equal(g, t)
    assert_jacobian(m, xs)


@pytest.mark.parametrize("cls", [pm.CAddTable, pm.CMulTable, pm.CMaxTable, pm.CSubTable])
def test_elementwise_errors_name_the_module(cls, rng):
    m = cls()
    name = cls.__name__ + NAME
    with pytest.raises(TypeError, match=name + "input must be a table"):
        m.forward(rng.standard_normal(3))
    with pytest.raises(TypeError, match=name + "input 1 must be a numpy.ndarray"):
        m.forward([rng.standard_normal(3), 3.0])
    if cls is not pm.CAddTable:  # CAddTable broadcasts instead
        with pytest.raises(ValueError, match=name + r"input 1 has shape \(2,\)"):
            m.forward([rng.standard_normal(3), rng.standard_normal(2)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_table_modules_follow_the_input_dtype_and_take_strided_input(dtype, rng):
    xs = [rng.standard_normal((4, 3)).astype(dtype).T for _ in range(2)]
    for m in (pm.CAddTable(), pm.CMulTable(), pm.CMaxTable(), pm.CSubTable(), pm.JoinTable(1)):
        out = m.forward(xs)
        assert out.dtype == dtype
        gi = m.backward(xs, np.ones_like(out))
        assert [g.shape for g in gi] == [(3, 4), (3, 4)]
    with pytest.raises(TypeError, match=r"CAddTable" + NAME + r"input 1 has dtype"):
        pm.CAddTable().forward([np.ones(3, np.float32), np.ones(3)])


def test_buffers_are_reused(rng):
    xs, go = _table(rng, 2), rng.standard_normal((3, 4))
    for m in (pm.CAddTable(), pm.CMulTable(), pm.JoinTable(0)):
        out = m.forward(xs)
        g = m.backward(xs, go if m.output.shape == go.shape else np.ones_like(out))
        ids = [id(out)] + [id(a) for a in g]
        out2 = m.forward(_table(rng, 2))
        g2 = m.backward(xs, go if m.output.shape == go.shape else np.ones_like(out))
        assert [id(out2)] + [id(a) for a in g2] == ids


# -- joining and splitting --------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_join_table(dim, rng, torch):
    shapes = [(2, 3, 4), (2, 3, 4)]
    sizes = [1, 3]
    xs = []
    for s, c in zip(shapes, sizes, strict=True):
        s = list(s)
        s[dim] = c
        xs.append(rng.standard_normal(s))
    m = pm.JoinTable(dim)
    out = m.forward(xs)
    go = rng.standard_normal(out.shape)
    gi = m.backward(xs, go)
    (ref,), grads = _torch_grads(torch, lambda t: torch.cat(t, dim), xs, go)
    np.testing.assert_array_equal(out, ref)
    for g, t in zip(gi, grads, strict=True):
        np.testing.assert_array_equal(g, t)
    assert_jacobian(m, xs)


def test_join_table_nInputDims(rng):
    # dimension 1 is written for batched input; a single sample (rank nInputDims) uses axis 0
    m = pm.JoinTable(1, 1)
    batch = [rng.standard_normal((2, 3)), rng.standard_normal((2, 4))]
    assert m.forward(batch).shape == (2, 7)
    single = [rng.standard_normal(3), rng.standard_normal(4)]
    np.testing.assert_array_equal(m.forward(single), np.concatenate(single))
    np.testing.assert_array_equal(m.backward(single, np.arange(7.0))[1], np.arange(3.0, 7.0))
    with pytest.raises(ValueError, match="JoinTable" + NAME + "dimension 0 is out of range"):
        pm.JoinTable(0, 1).forward(single)
    with pytest.raises(ValueError, match=r"JoinTable" + NAME + r"input 1 has shape \(3, 4\), "
                                         r"expected \(2, \*\)"):
        pm.JoinTable(1).forward([rng.standard_normal((2, 3)), rng.standard_normal((3, 4))])


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_split_table(dim, rng, torch):
    x = rng.standard_normal((2, 3, 4))
    m = pm.SplitTable(dim)
    out = m.forward(x)
    go = [rng.standard_normal(o.shape) for o in out]
    gi = m.backward(x, go)
    refs, (grad,) = _torch_grads(torch, lambda t: torch.unbind(t[0], dim), [x], go)
    assert len(out) == x.shape[dim]
    for o, r in zip(out, refs, strict=True):
        assert o.flags.c_contiguous
        np.testing.assert_array_equal(o, r)
    np.testing.assert_array_equal(gi, grad)
    assert_jacobian(m, x)


def test_split_table_nInputDims(rng):
    x = rng.standard_normal((3, 4))
    assert len(pm.SplitTable(1, 2).forward(x)) == 3   # a single sample: axis 0
    assert len(pm.SplitTable(1, 1).forward(x)) == 4   # a batch of vectors: axis 1
    with pytest.raises(ValueError, match=r"SplitTable" + NAME + r"gradOutput has 2 entries, "
                                         r"expected 4"):
        m = pm.SplitTable(1)
        m.forward(x)
        m.backward(x, [np.zeros(3)] * 2)


# -- selecting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [0, 2, -1])
def test_select_table(index, rng):
    xs = [rng.standard_normal((2, 3)), [rng.standard_normal(4), rng.standard_normal(1)],
          rng.standard_normal(5)]
    m = pm.SelectTable(index)
    assert m.forward(xs) is xs[index]
    go = rng.standard_normal(5) if index != 0 else rng.standard_normal((2, 3))
    gi = m.backward(xs, go)
    np.testing.assert_array_equal(gi[index], go)
    assert np.all(gi[1][0] == 0) and np.all(gi[1][1] == 0) and gi[1][0].shape == (4,)
    assert_jacobian(m, xs)
    with pytest.raises(IndexError, match=r"SelectTable" + NAME + r"index 3 is out of range for a "
                                         r"table of 3 entries"):
        pm.SelectTable(3).forward(xs)


@pytest.mark.parametrize("offset,length,span", [(1, 2, (1, 3)), (0, 1, (0, 1)),
                                                (1, -1, (1, 4)), (-2, 2, (2, 4))])
def test_narrow_table(offset, length, span, rng):
    xs = _table(rng, 4, (2,))
    m = pm.NarrowTable(offset, length)
    out = m.forward(xs)
    assert len(out) == span[1] - span[0]
    assert all(a is b for a, b in zip(out, xs[span[0]:span[1]], strict=True))
    go = [rng.standard_normal(2) for _ in out]
    gi = m.backward(xs, go)
    for j, g in enumerate(gi):
        expected = go[j - span[0]] if span[0] <= j < span[1] else np.zeros(2)
        np.testing.assert_array_equal(g, expected)
    assert_jacobian(m, xs)


def test_flatten_table(rng):
    xs = [rng.standard_normal(2), [rng.standard_normal(3), [rng.standard_normal(1)]],
          rng.standard_normal(4)]
    m = pm.FlattenTable()
    out = m.forward(xs)
    assert [o.shape for o in out] == [(2,), (3,), (1,), (4,)]
    go = [rng.standard_normal(o.shape) for o in out]
    gi = m.backward(xs, go)
    assert gi[1][1][0] is go[2] and gi[2] is go[3]
    assert_jacobian(m, xs)
