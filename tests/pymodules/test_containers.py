import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm

NAME = r"@\w+(\(.*?\))?"


def lin(i, o):
    return pm.Linear(i, o, dtype=np.float64)


def _nested():
    inner = pm.Sequential().add(lin(4, 5)).add(lin(5, 3))
    return pm.Sequential().add(lin(4, 4)).add(inner).add(lin(3, 2))


def test_concat(rng, torch):
    a, b = lin(4, 3), lin(4, 2)
    m = pm.Concat(1).add(a).add(b)
    x = rng.standard_normal((5, 4))
    out = m.forward(x)
    np.testing.assert_allclose(out, np.concatenate([x @ a.weight.T + a.bias,
                                                    x @ b.weight.T + b.bias], 1))
    go = rng.standard_normal(out.shape)
    gi = m.backward(x, go)
    np.testing.assert_allclose(gi, go[:, :3] @ a.weight + go[:, 3:] @ b.weight)
    np.testing.assert_allclose(a.gradWeight, go[:, :3].T @ x)
    np.testing.assert_allclose(b.gradBias, go[:, 3:].sum(0))
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")


def test_concat_update_grad_input_then_acc_equals_backward(rng):
    x, go = rng.standard_normal((5, 4)), rng.standard_normal((5, 5))
    m1 = pm.Concat(1).add(lin(4, 3)).add(lin(4, 2))
    m2 = m1.cloneModule()
    m1.forward(x)
    g1 = m1.backward(x, go).copy()
    m2.forward(x)
    g2 = m2.updateGradInput(x, go)
    m2.accGradParameters(x, go)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(m1.getParameters()[1], m2.getParameters()[1])


def test_concat_table_and_join_table(rng, torch):
    m = pm.Sequential().add(pm.ConcatTable().add(lin(4, 3)).add(lin(4, 2))).add(
        pm.JoinTable(1))
    x = rng.standard_normal((2, 4))
    assert m.forward(x).shape == (2, 5)
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")
    ct = pm.ConcatTable().add(lin(4, 3)).add(pm.Identity())
    out = ct.forward(x)
    assert out[1] is x
    gi = ct.backward(x, [np.ones((2, 3)), np.ones((2, 4))])
    np.testing.assert_allclose(gi, np.ones((2, 3)) @ ct.modules[0].weight + 1)
    with pytest.raises(ValueError, match="ConcatTable" + NAME + ": gradOutput has 1 entries, "
                                         "expected 2"):
        ct.backward(x, [np.ones((2, 3))])


def test_parallel_table(rng):
    a, b = lin(4, 3), lin(2, 3)
    m = pm.ParallelTable().add(a).add(b)
    xs = [rng.standard_normal((2, 4)), rng.standard_normal((2, 2))]
    out = m.forward(xs)
    np.testing.assert_allclose(out[1], xs[1] @ b.weight.T + b.bias)
    assert_jacobian(m, xs)
    assert_jacobian(m, xs, wrt="parameters")
    full = pm.Sequential().add(m).add(pm.CAddTable())
    assert_jacobian(full, xs, wrt="parameters")
    with pytest.raises(ValueError, match="ParallelTable" + NAME + ": input has 1 entries, "
                                         "expected 2"):
        m.forward(xs[:1])


def test_map_table_shares_parameters(rng):
    base = lin(4, 3)
    m = pm.MapTable(base)
    xs = [rng.standard_normal((2, 4)) for _ in range(3)]
    out = m.forward(xs)
    for x, o in zip(xs, out, strict=True):
        np.testing.assert_allclose(o, x @ base.weight.T + base.bias)
    assert len(m.parameters()[0]) == 2
    gos = [rng.standard_normal((2, 3)) for _ in range(3)]
    m.zeroGradParameters()
    m.backward(xs, gos)
    np.testing.assert_allclose(base.gradWeight, sum(g.T @ x for g, x in zip(gos, xs, strict=True)))
    assert_jacobian(m, xs)
    assert_jacobian(m, xs, wrt="parameters")   # getParameters views reach the clones
    m.evaluate()
    assert all(not c.isTraining() for c in m._replicas(3))
    m.freeze()
    m.forward(xs)
    before = base.gradWeight.copy()
    m.backward(xs, gos)
    np.testing.assert_array_equal(base.gradWeight, before)
    with pytest.raises(ValueError, match="a MapTable holds one module"):
        m.add(lin(4, 3))


def test_nested_sequential_jacobians(rng):
    m = _nested()
    x = rng.standard_normal((3, 4))
    assert_jacobian(m, x)
    assert_jacobian(m, x, wrt="parameters")


@pytest.mark.parametrize("make", [
    _nested,
    lambda: pm.Concat(1).add(lin(4, 3)).add(pm.Sequential().add(lin(4, 2))),
    lambda: pm.ConcatTable().add(lin(4, 3)).add(pm.Sequential().add(lin(4, 2))),
    lambda: pm.Sequential().add(lin(4, 3)).add(lin(3, 3)).toGraph(),
])
def test_container_rules(make, rng):
    m = make()
    leaves = [c for c in m.modules_preorder() if isinstance(c, pm.Linear)]
    # mode recurses
    m.evaluate()
    assert not any(c.isTraining() for c in m.modules_preorder())
    m.training()
    assert all(c.isTraining() for c in m.modules_preorder())
    # parameters and tables concatenate the children's
    w, g = m.parameters()
    assert len(w) == 2 * len(leaves)
    assert all(a is b for a, b in zip(w, [p for leaf in leaves for p in leaf.parameters()[0]],
                                      strict=True))
    table = m.getParametersTable()
    assert set(table) == {leaf.getName() for leaf in leaves}
    assert m.getExtraParameter() == []
    # scales and freeze reach every child
    m.setScaleW(0.5)
    assert all(c.getScaleW() == 0.5 for c in m.modules_preorder())
    m.setScaleB(0.25)
    assert all(c.getScaleB() == 0.25 for c in m.modules_preorder())
    m.freeze()
    assert all(leaf.scaleW == 0 and leaf.scaleB == 0 for leaf in leaves)
    m.unFreeze()
    assert all(leaf.scaleW == 0.5 for leaf in leaves)
    m.freeze(leaves[0].getName())
    assert leaves[0].scaleW == 0 and leaves[1].scaleW == 0.5
    # apply searches the tree and refuses duplicates
    assert m.apply(leaves[-1].getName()) is leaves[-1]
    assert m.apply("nothing") is None
    leaves[1].setName(leaves[0].getName())
    with pytest.raises(ValueError, match="2 modules are named"):
        m.apply(leaves[0].getName())
    # clearState and reset recurse
    x = rng.standard_normal((2, 4))
    m.forward(x)
    m.clearState()
    assert all(isinstance(c.output, list) or c.output.size == 0 for c in m.modules_preorder())
    before = leaves[0].weight.copy()
    m.reset()
    assert not np.array_equal(before, leaves[0].weight)


def test_adding_a_module_twice_raises():
    a = lin(4, 4)
    s = pm.Sequential().add(a)
    with pytest.raises(ValueError, match="already in this tree"):
        s.add(a)
    with pytest.raises(ValueError, match="already in this tree"):
        s.add(pm.Sequential().add(pm.Concat(1).add(a)))
    for c in (pm.Concat(1), pm.ConcatTable(), pm.ParallelTable()):
        c.add(a)
        with pytest.raises(ValueError, match="already in this tree"):
            c.add(a)


def test_a_failing_child_is_named_by_its_path(rng):
    bad = lin(3, 2)
    inner = pm.ConcatTable().add(bad)
    m = pm.Sequential().add(pm.Concat(1).add(pm.Sequential().add(inner).add(
        pm.SelectTable(0))))
    names = [m.getName(), m.modules[0].getName(), m.modules[0].modules[0].getName(),
             inner.getName()]
    with pytest.raises(ValueError, match="^" + "/".join(names) + "/Linear@" +
                       r"\w+\(3 -> 2\): input has 4 features, expected 3"):
        m.forward(rng.standard_normal((2, 4)))


def test_get_times_reports_exclusive_time(rng):
    m = _nested()
    x = rng.standard_normal((3, 4))
    for _ in range(3):
        m.forward(x)
        m.backward(x, np.ones((3, 2)))
    rows = m.getTimes()
    assert [r[0] for r in rows] == [m.modules[0], m.modules[1].modules[0],
                                    m.modules[1].modules[1], m.modules[1], m.modules[2], m]
    assert sum(r[1] for r in rows) == m.forwardTime
    assert sum(r[2] for r in rows) == m.backwardTime
    assert all(r[1] > 0 and r[2] > 0 for r in rows)


# -- habits from PyTorch, answered kindly ----------------------------------------------
def test_sequential_and_concat_take_their_children(rng, tmp_path):
    a, b, c, d = pm.Linear(4, 8), pm.ReLU(), pm.Linear(8, 2), pm.Linear(8, 3)
    m = pm.Sequential(a, b, pm.Concat(1, c, d))
    assert m.modules[:2] == [a, b] and m.modules[2].modules == [c, d]
    assert m.modules[2].dimension == 1
    x = rng.standard_normal((2, 4)).astype(np.float32)
    ref = pm.Sequential().add(a).add(b)
    h = ref.forward(x)
    np.testing.assert_array_equal(m.forward(x), np.concatenate(
        [c.forward(h), d.forward(h)], axis=1))
    m.save(tmp_path / "m.pm")
    r = pm.load(tmp_path / "m.pm")
    assert [x.getName() for x in r.modules_preorder()] == \
        [x.getName() for x in m.modules_preorder()]
    np.testing.assert_array_equal(r.forward(x), m.forward(x))
    with pytest.raises(TypeError, match=r"^Sequential@\w+: can only add a Module, got int$"):
        pm.Sequential(pm.Linear(2, 2), 3)


def test_train_and_eval_calls_name_the_pymodules_spelling():
    m = pm.Sequential(pm.Linear(2, 2), pm.Dropout())
    assert m.train and m.train == True and m.isTraining()  # noqa: E712 - the point
    with pytest.raises(TypeError, match=rf"^{m.getName()}: train is the mode \(True\), not a "
                                        r"method; .*training\(\).*evaluate\(\)"):
        m.train()
    with pytest.raises(TypeError, match=rf"^{m.getName()}: eval\(\) is PyTorch's spelling; "
                                        r".*evaluate\(\)"):
        m.eval()
    m.evaluate()
    assert not m.train and m.train == False and not m.modules[1].train  # noqa: E712
    assert repr(m.train) == "False"
    m.train = True
    assert m.train and not m.modules[0].train


def test_predict_shape_errors_name_the_path_not_the_printed_model(rng):
    m = pm.Sequential(pm.Linear(4, 8), pm.ReLU())
    with pytest.raises(ValueError) as err:
        m.predict(rng.standard_normal((3, 5)).astype(np.float32))
    assert str(err.value) == (f"{m.getName()}/{m.modules[0].getName()}(4 -> 8): input has 5 "
                              f"features, expected 4")
    # a container's own refusal: its children's outputs do not join
    bad = pm.Sequential(pm.Linear(4, 2), pm.Concat(0, pm.Linear(2, 3), pm.View([3, 2])))
    with pytest.raises(ValueError) as err:
        bad.predict(rng.standard_normal((3, 4)).astype(np.float32))
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"{bad.getName()}/{bad.modules[1].getName()}: ")
    # an output that is not batch-first
    flat = pm.Sequential(pm.Linear(4, 2), pm.Select(0, 0))
    with pytest.raises(ValueError) as err:
        flat.predict(rng.standard_normal((3, 4)).astype(np.float32))
    assert str(err.value).startswith(f"predict: {flat.getName()} returned shape (2,)")


def test_concat_backward_before_forward_says_forward_must_run_first(rng):
    x, go = rng.standard_normal((3, 4)), rng.standard_normal((3, 5))
    m = pm.Concat(1).add(lin(4, 3)).add(lin(4, 2))
    msg = r"^Concat@\w+: backward before forward: forward must run first"
    for method in (m.backward, m.updateGradInput, m.accGradParameters):
        with pytest.raises(ValueError, match=msg):
            method(x, go)
    m.forward(x)
    m.backward(x, go)
    m.clearState()  # the children's outputs are gone again
    with pytest.raises(ValueError, match=msg):
        m.backward(x, go)
    m.forward(x)
    m.add(lin(4, 1))  # a child without an output yet
    with pytest.raises(ValueError, match=msg):
        m.backward(x, rng.standard_normal((3, 6)))
    with pytest.raises(ValueError, match=r"^Sequential@\w+/Concat@\w+: backward before forward"):
        pm.Sequential(pm.Concat(1).add(lin(4, 3))).backward(x, go[:, :3])


def test_concat_table_backward_before_forward_needs_no_forward(rng):
    x = rng.standard_normal((3, 4))
    go = [rng.standard_normal((3, 3)), rng.standard_normal((3, 4))]
    a = lin(4, 3)
    m = pm.ConcatTable().add(a).add(pm.Identity())
    np.testing.assert_allclose(m.backward(x, go), go[0] @ a.weight + go[1])


@pytest.mark.parametrize("build", ["sequential", "graph"])
def test_backward_before_forward_says_so(build):
    seq = pm.Sequential().add(pm.Linear(3, 4)).add(pm.ReLU()).add(pm.Linear(4, 2)).setName("net")
    model = seq if build == "sequential" else seq.toGraph().setName("net")
    x, g = np.ones((2, 3), np.float32), np.ones((2, 2), np.float32)
    for call in (model.backward, model.updateGradInput):
        with pytest.raises(ValueError, match="^net: backward before forward: forward must run"):
            call(x, g)
    model.forward(x)
    assert model.backward(x, g).shape == (2, 3)
    model.clearState()
    with pytest.raises(ValueError, match="^net: backward before forward"):
        model.backward(x, g)
