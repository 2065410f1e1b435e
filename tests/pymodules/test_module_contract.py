"""The Module contract of API.md, on Linear and Sequential."""

import re
import tracemalloc

import numpy as np
import pytest

import pymodules as pm


def _mlp(dtype=np.float64):
    return pm.Sequential().add(pm.Linear(4, 3, dtype=dtype)).add(pm.Linear(3, 2, dtype=dtype))


def test_forward_backward_return_the_cached_buffers(rng):
    m = pm.Linear(4, 3)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    y = m.forward(x)
    assert y is m.output
    gi = m.backward(x, np.ones((2, 3), np.float32))
    assert gi is m.gradInput
    assert m.forward(x) is y  # reused in place by the next call


def test_accumulation_over_two_backward_calls(rng):
    m = pm.Linear(4, 3, dtype=np.float64)
    x, go = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    m.forward(x)
    m.backward(x, go)
    once = [g.copy() for g in m.parameters()[1]]
    m.backward(x, go)
    for g, g1 in zip(m.parameters()[1], once, strict=True):
        np.testing.assert_allclose(g, 2 * g1)
    grads = m.parameters()[1]
    m.zeroGradParameters()
    assert all(not g.any() for g in grads)
    assert all(a is b for a, b in zip(grads, m.parameters()[1], strict=True))  # zeroed in place


def test_scales_and_freeze(rng):
    m = pm.Linear(4, 3, dtype=np.float64)
    x, go = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    m.forward(x)
    m.backward(x, go)
    ref_w, ref_b = m.gradWeight.copy(), m.gradBias.copy()
    m.zeroGradParameters()
    m.setScaleW(0.5).setScaleB(3.0)
    assert (m.getScaleW(), m.getScaleB()) == (0.5, 3.0)
    m.backward(x, go)
    np.testing.assert_allclose(m.gradWeight, 0.5 * ref_w)
    np.testing.assert_allclose(m.gradBias, 3.0 * ref_b)

    m.zeroGradParameters()
    m.freeze()
    gi = m.backward(x, go).copy()
    assert not m.gradWeight.any() and not m.gradBias.any()
    np.testing.assert_allclose(gi, go @ m.weight)  # gradInput still flows
    m.unFreeze()
    assert (m.getScaleW(), m.getScaleB()) == (0.5, 3.0)  # back to the scales it had


def test_container_scales_and_freeze_by_name():
    seq = _mlp()
    first, second = seq.modules
    seq.setScaleW(0.25)
    assert first.getScaleW() == second.getScaleW() == 0.25
    seq.freeze(second.getName())
    assert (second.scaleW, second.scaleB) == (0.0, 0.0)
    assert first.scaleW == 0.25
    seq.unFreeze()
    assert second.scaleW == 0.25
    with pytest.raises(ValueError, match="no module named 'nope'"):
        seq.freeze("nope")


def test_names_are_unique_and_settable():
    a, b = pm.Linear(2, 2), pm.Linear(2, 2)
    assert re.fullmatch(r"Linear@[0-9a-f]+", a.getName())
    # BigDL: the default name does not count as a name until setName
    assert a.getName() != b.getName() and not a.hasName()
    assert a.setName("encoder") is a and a.getName() == "encoder" and a.hasName()
    assert str(a) == "encoder(2 -> 2)"
    with pytest.raises(TypeError):
        a.setName("")


def test_apply_searches_the_tree():
    seq = _mlp()
    inner = pm.Sequential().add(pm.Linear(2, 2).setName("deep"))
    seq.add(inner)
    assert seq.apply("deep") is inner.modules[0]
    assert seq.apply(seq.getName()) is seq
    assert seq.apply("absent") is None
    seq.modules[0].setName("deep")
    with pytest.raises(ValueError, match="2 modules are named 'deep'"):
        seq.apply("deep")


def test_get_parameters_flattens_into_views(rng):
    seq = _mlp()
    w, g = seq.getParameters()
    assert w.shape == g.shape == (4 * 3 + 3 + 3 * 2 + 2,)
    weights, grads = seq.parameters()
    np.testing.assert_array_equal(w, np.concatenate([a.ravel() for a in weights]))
    for a in weights + grads:
        assert np.shares_memory(a, w) or np.shares_memory(a, g)
    w[:] = 0.5  # updating the flat vector updates the layers
    assert (seq.modules[1].bias == 0.5).all()
    x = rng.standard_normal((3, 4))
    seq.forward(x)
    seq.backward(x, np.ones((3, 2)))
    np.testing.assert_array_equal(g, np.concatenate([a.ravel() for a in seq.parameters()[1]]))
    w2, g2 = seq.getParameters()  # a second call copies nothing
    assert w2 is w and g2 is g
    seq.zeroGradParameters()
    assert not g.any()


def test_get_parameters_refuses_mixed_dtypes():
    seq = pm.Sequential().add(pm.Linear(2, 2)).add(pm.Linear(2, 2, dtype=np.float64))
    with pytest.raises(TypeError, match="parameters mix dtypes"):
        seq.getParameters()


def test_parameters_table_and_weights_bias():
    lin = pm.Linear(4, 3)
    table = lin.getParametersTable()
    assert set(table) == {lin.getName()}
    assert table[lin.getName()]["weight"] is lin.weight
    assert set(table[lin.getName()]) == {"weight", "bias", "gradWeight", "gradBias"}
    nobias = pm.Linear(4, 3, withBias=False)
    assert set(nobias.getParametersTable()[nobias.getName()]) == {"weight", "gradWeight"}
    seq = _mlp()
    assert set(seq.getParametersTable()) == {m.getName() for m in seq.modules}

    new = [np.full((3, 4), 2.0, np.float32), np.full(3, 1.0, np.float32)]
    lin.setWeightsBias(new)
    assert lin.getWeightsBias()[0] is lin.weight and (lin.weight == 2).all()
    with pytest.raises(ValueError, match=r"array 0 has shape \(4, 3\), expected \(3, 4\)"):
        lin.setWeightsBias([np.zeros((4, 3)), np.zeros(3)])
    with pytest.raises(ValueError, match="got 1 arrays, expected 2"):
        lin.setWeightsBias([np.zeros((3, 4))])
    assert (lin.weight == 2).all()  # a refused call changes nothing


def test_mode_is_recursive():
    seq = _mlp()
    assert seq.isTraining() and all(m.isTraining() for m in seq.modules)
    assert seq.evaluate() is seq
    assert not seq.isTraining() and not any(m.isTraining() for m in seq.modules)
    seq.training()
    assert all(m.isTraining() for m in seq.modules)


def test_clear_state_keeps_parameters(rng):
    seq = _mlp()
    x = rng.standard_normal((3, 4))
    seq.forward(x)
    seq.backward(x, np.ones((3, 2)))
    weights = [w.copy() for w in seq.parameters()[0]]
    assert seq.clearState() is seq
    assert all(m.output.size == 0 and m.gradInput.size == 0 for m in [seq, *seq.modules])
    for w, w0 in zip(seq.parameters()[0], weights, strict=True):
        np.testing.assert_array_equal(w, w0)
    np.testing.assert_allclose(seq.forward(x), x @ seq.modules[0].weight.T @ seq.modules[1]
                               .weight.T + seq.modules[0].bias @ seq.modules[1].weight.T
                               + seq.modules[1].bias)


def test_extra_parameters_and_copy_status():
    lin = pm.Linear(2, 2)
    assert lin.getExtraParameter() == []
    assert lin.copyStatus(pm.Linear(2, 2)) is lin
    with pytest.raises(ValueError, match="got 1 arrays, expected 0"):
        lin.setExtraParameter([np.zeros(2)])


def test_times(rng):
    seq = _mlp()
    x = rng.standard_normal((3, 4))
    seq.forward(x)
    seq.backward(x, np.ones((3, 2)))
    rows = seq.getTimes()
    assert [r[0] for r in rows] == [*seq.modules, seq]
    assert all(f > 0 and b > 0 for _, f, b in rows[:2])
    assert all(f >= 0 and b >= 0 for _, f, b in rows)
    assert sum(f for _, f, _ in rows) == seq.forwardTime  # exclusive times add up
    seq.resetTimes()
    assert all(f == 0 and b == 0 for _, f, b in seq.getTimes())


def test_reset_reinitialises_in_place():
    lin = pm.Linear(100, 50)
    w = lin.weight
    before = w.copy()
    lin.reset()
    assert lin.weight is w and not np.array_equal(before, w)
    assert np.abs(w).max() <= 0.1 and np.abs(lin.bias).max() <= 0.1


def test_clone_is_deep_and_keeps_names(rng):
    seq = _mlp()
    clone = seq.cloneModule()
    assert [m.getName() for m in clone.modules_preorder()] == \
        [m.getName() for m in seq.modules_preorder()]
    clone.modules[0].weight[:] = 0
    assert seq.modules[0].weight.any()
    x = rng.standard_normal((2, 4))
    assert not np.allclose(seq.forward(x), clone.forward(x))


def test_float_and_double_convert_the_tree(rng):
    seq = _mlp(np.float32)
    w32 = seq.modules[0].weight.copy()
    assert seq.double() is seq
    assert all(a.dtype == np.float64 for a in seq.parameters()[0] + seq.parameters()[1])
    assert seq.modules[0].dtype == np.float64
    np.testing.assert_array_equal(seq.modules[0].weight, w32)
    y = seq.forward(rng.standard_normal((2, 4)))
    assert y.dtype == np.float64
    seq.float()
    assert seq.forward(rng.standard_normal((2, 4)).astype(np.float32)).dtype == np.float32


def test_engine_type_names_the_blas():
    assert "BLAS" in pm.Linear(1, 1).getEngineType() or "blas" in pm.Linear(1, 1).getEngineType()


def test_repr_is_readable():
    seq = _mlp()
    text = repr(seq)
    assert text.startswith(f"{seq.getName()} {{")
    assert "[input -> (0) -> (1) -> output]" in text
    assert f"(0): {seq.modules[0].getName()}(4 -> 3)" in text


def test_sequential_add_refuses_repeats():
    lin = pm.Linear(2, 2)
    seq = pm.Sequential().add(lin)
    with pytest.raises(ValueError, match="already in this tree"):
        seq.add(lin)
    with pytest.raises(ValueError, match="already in this tree"):
        seq.add(seq)
    with pytest.raises(TypeError, match="can only add a Module"):
        seq.add(np.zeros(2))


def test_sequential_names_the_failing_child(rng):
    seq = _mlp()
    inner = pm.Sequential().add(pm.Linear(2, 5, dtype=np.float64))
    seq.add(inner)
    with pytest.raises(ValueError) as err:
        seq.forward(rng.standard_normal((2, 5)))
    assert str(err.value) == \
        f"{seq.getName()}/{seq.modules[0]}: input has 5 features, expected 4"
    with pytest.raises(ValueError, match="backward before forward"):
        seq.backward(rng.standard_normal((2, 4)), np.ones((2, 3)))
    ok = pm.Sequential().add(pm.Linear(4, 3, dtype=np.float64))
    inner = pm.Sequential().add(pm.Linear(3, 2, dtype=np.float64))
    ok.add(inner)
    x = rng.standard_normal((2, 4))
    ok.forward(x)
    with pytest.raises(ValueError) as err:
        ok.backward(x, np.ones((2, 5)))
    assert str(err.value).startswith(f"{ok.getName()}/{inner.getName()}/")


@pytest.mark.parametrize(("batch", "sizes"), [(32, (64, 64, 16)), (16, (256, 256, 16))])
def test_steady_state_allocates_nothing(batch, sizes, rng):
    """After warm-up, forward+backward allocate no array memory, not even transiently (the
    second case runs its first forward transposed, through a kept scratch)."""
    seq = pm.Sequential().add(pm.Linear(*sizes[:2])).add(pm.Linear(*sizes[1:]))
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)  # buffers >= 1 KiB
    go = rng.standard_normal((batch, sizes[-1])).astype(np.float32)
    tracemalloc.start()
    try:
        for _ in range(3):
            seq.forward(x)
            seq.backward(x, go)
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(20):
            seq.forward(x)
            seq.backward(x, go)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024, f"peak grew by {peak - base} bytes"
    assert current - base < 1024


def test_container_takes_its_first_childs_dtype():
    seq = pm.Sequential().add(pm.Linear(2, 2, dtype=np.float64))
    assert seq.dtype == np.float64
    assert pm.Sequential().dtype == np.float32


def test_conversion_drops_uninitialised_buffers(rng):
    seq = _mlp(np.float64)
    seq.forward(rng.standard_normal((2, 4)))
    seq.modules[0].output[...] = 1e300  # out of float32's range: a cast would warn
    seq.float()  # warnings are errors in this suite
    assert seq.modules[0].output.size == 0


def test_gradients_are_made_on_first_use_in_the_weights_dtype():
    m = pm.Linear(4, 3)
    assert "gradWeight" not in vars(m)
    m.double()
    assert m.gradWeight.dtype == np.float64 and m.gradWeight.shape == (3, 4)
    assert m.gradWeight is m.gradWeight and not m.gradBias.any()
    assert pm.Linear(4, 3, withBias=False).gradBias is None
    with pytest.raises(AttributeError, match="no attribute 'gradWhatever'"):
        _ = m.gradWhatever


def test_zeroing_leaves_unmade_gradients_unmade():
    m = pm.Sequential().add(pm.Linear(4, 3)).add(pm.PReLU(3))
    m.zeroGradParameters()
    m.reset()
    assert not any("grad" + n in vars(c) for c in m.modules for n in ("Weight", "Bias"))
    m.modules[0].gradWeight += 1
    m.zeroGradParameters()
    assert not m.modules[0].gradWeight.any()
    assert "gradWeight" not in vars(m.modules[1])


@pytest.mark.parametrize("make,what,value", [
    (lambda v: pm.Linear(v, 3), "inputSize", 4.5),
    (lambda v: pm.Linear(4, v), "outputSize", "3"),
    (lambda v: pm.Linear(v, 3), "inputSize", True),
    (lambda v: pm.SpatialConvolution(3, 4, v, 2), "kernelW", 2.5),
    (lambda v: pm.SpatialConvolution(3, 4, 2, 2, padW=v), "padW", 0.5),
    (lambda v: pm.SpatialFullConvolution(3, 4, 2, 2, adjW=v, dW=2), "adjW", 0.5),
    (lambda v: pm.TemporalConvolution(3, 4, 2, strideW=v), "strideW", 1.5),
    (lambda v: pm.SpatialMaxPooling(2, 2, dW=v), "dW", 1.5),
    (lambda v: pm.LookupTable(v, 3), "nIndex", 5.5),
    (lambda v: pm.BatchNormalization(v), "nOutput", 3.2),
    (lambda v: pm.PReLU(v), "nOutputPlane", 2.5),
    (lambda v: pm.View([2, v]), "sizes", 1.5),
    (lambda v: pm.Reshape([v]), "size", 2.5),
    (lambda v: pm.Select(1, v), "index", 0.5),
    (lambda v: pm.Narrow(1, 0, v), "length", 1.5),
    (lambda v: pm.JoinTable(v), "dimension", 1.5),
    (lambda v: pm.SelectTable(v), "index", 0.5),
    (lambda v: pm.Concat(v), "dimension", 1.5),
    (lambda v: pm.TimeDistributedCriterion(pm.MSECriterion(), dimension=v), "dimension", 1.5),
])
def test_sizes_must_be_integers(make, what, value):
    with pytest.raises(TypeError, match=rf"\w+: {what} must be an integer, got "
                                        rf"{re.escape(repr(value))}"):
        make(value)


def test_integer_sizes_accept_numpy_integers_and_whole_floats():
    assert str(pm.Linear(np.int64(4), np.int32(3))).endswith("(4 -> 3)")
    m = pm.Linear(4.0, np.float32(3))
    assert (m.inputSize, m.outputSize) == (4, 3) and type(m.inputSize) is int
    assert pm.SpatialConvolution(3, 4, 2.0, 2).kernelW == 2


def test_clone_keeps_values_shared_with_scratch_attributes():
    """cloneModule drops cached buffers, not every object a scratch attribute happens to
    share (a flag False in _scratch must not turn the copy's other False values into None)."""

    class Flagged(pm.Identity):
        _scratch = ("_flag",)

        def __init__(self):
            super().__init__()
            self._flag = False

    m = Flagged()
    m.propagateBack = False
    c = m.cloneModule()
    assert c.propagateBack is False and c._named is False
