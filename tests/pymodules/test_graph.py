import numpy as np
import pytest
from gradcheck import assert_jacobian

import pymodules as pm


def lin(i, o):
    return pm.Linear(i, o, dtype=np.float64)


def _two_input_graph():
    """x -> A, y -> B; A feeds both the sum and C (a shared consumer of two paths)."""
    x, y = pm.Input(), pm.Input()
    a, b = lin(4, 3)(x), lin(2, 3)(y)
    s = pm.CAddTable()(a, b)
    c = lin(3, 3)(a)
    out = pm.CMulTable()([s, c])
    return pm.Graph([x, y], out), (x, y, a, b, s, c, out)


def test_nodes_link_both_ways():
    x = pm.Input()
    layer = lin(4, 3)
    n = layer(x)
    assert isinstance(n, pm.Node) and n.element is layer
    assert n.prevNodes == [x] and x.nextNodes == [n]
    m = pm.CAddTable()
    for node in (m.inputs(x, n), pm.CAddTable()([x, n])):
        assert node.prevNodes == [x, n]
    with pytest.raises(TypeError, match="use forward"):
        lin(4, 3)(np.ones(4))
    assert pm.Model is pm.Graph


def test_two_input_graph_numbers_and_jacobians(rng):
    g, (x, y, a, b, s, c, out) = _two_input_graph()
    xs = [rng.standard_normal((2, 4)), rng.standard_normal((2, 2))]
    A, B, C = a.element, b.element, c.element
    ha = xs[0] @ A.weight.T + A.bias
    hs = ha + xs[1] @ B.weight.T + B.bias
    hc = ha @ C.weight.T + C.bias
    np.testing.assert_allclose(g.forward(xs), hs * hc)
    go = rng.standard_normal((2, 3))
    gx, gy = g.backward(xs, go)
    g_a = go * hc + (go * hs) @ C.weight  # the two consumers of A, summed
    np.testing.assert_allclose(gx, g_a @ A.weight)
    np.testing.assert_allclose(gy, (go * hc) @ B.weight)
    assert_jacobian(g, xs)
    assert_jacobian(g, xs, wrt="parameters")


def test_gradient_sums_reuse_their_buffer(rng):
    g, _ = _two_input_graph()
    xs = [rng.standard_normal((2, 4)), rng.standard_normal((2, 2))]
    g.forward(xs)
    g.backward(xs, np.ones((2, 3)))
    sums = [id(s) for s in g._sums]
    assert any(s is not None for s in g._sums)
    g.forward(xs)
    g.backward(xs, np.ones((2, 3)))
    assert [id(s) for s in g._sums] == sums


def test_graph_equals_sequential(rng):
    seq = pm.Sequential().add(lin(4, 5)).add(pm.Reshape([5, 1])).add(pm.Squeeze(2)) \
        .add(lin(5, 3)).add(pm.Concat(1).add(lin(3, 2)).add(lin(3, 1)))
    graph = seq.cloneModule()
    graph = graph.toGraph()
    x, go = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    for m in (seq, graph):
        m.zeroGradParameters()
        m.forward(x)
        m.backward(x, go)
    np.testing.assert_array_equal(seq.output, graph.output)
    np.testing.assert_array_equal(seq.gradInput, graph.gradInput)
    np.testing.assert_array_equal(seq.getParameters()[0], graph.getParameters()[0])
    np.testing.assert_array_equal(seq.getParameters()[1], graph.getParameters()[1])
    # toGraph shares the children
    g2 = seq.toGraph()
    assert [m for m in g2.modules[1:]] == seq.modules


def test_multiple_outputs_and_unused_branches(rng):
    x = pm.Input()
    h = lin(4, 3)(x)
    o1, o2 = lin(3, 2)(h), pm.Identity()(h)
    dead = lin(3, 7)(h)   # reaches no output: left out
    g = pm.Graph(x, [o1, o2])
    assert dead.element not in g.modules
    xv = rng.standard_normal((2, 4))
    out = g.forward(xv)
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 2), (2, 3)]
    assert_jacobian(g, xv)
    with pytest.raises(ValueError, match="gradOutput must be a list of 2 arrays"):
        g.backward(xv, np.ones((2, 2)))


def test_a_node_fed_twice_by_the_same_node(rng):
    x = pm.Input()
    sq = pm.CMulTable()(x, x)
    g = pm.Graph(x, sq)
    xv = rng.standard_normal((3,))
    np.testing.assert_allclose(g.forward(xv), xv * xv)
    np.testing.assert_allclose(g.backward(xv, np.ones(3)), 2 * xv)


def test_node_stop_gradient_and_freeze(rng):
    g, (x, y, a, b, s, c, out) = _two_input_graph()
    assert g.node(c.element.getName()) is c
    with pytest.raises(ValueError, match="no node named 'nope'"):
        g.node("nope")
    xs = [rng.standard_normal((2, 4)), rng.standard_normal((2, 2))]
    go = rng.standard_normal((2, 3))
    g.forward(xs)
    g.zeroGradParameters()
    g.backward(xs, go)
    full_a = a.element.gradWeight.copy()
    g.stopGradient([c.element.getName()])
    g.zeroGradParameters()
    g.forward(xs)
    g.backward(xs, go)
    assert np.any(c.element.gradWeight != 0)          # C still learns
    A, C = a.element, c.element
    hc = (xs[0] @ A.weight.T + A.bias) @ C.weight.T + C.bias
    np.testing.assert_allclose(A.gradWeight, (go * hc).T @ xs[0])   # only the sum path
    assert not np.allclose(full_a, A.gradWeight)
    g.stopGradient([s.element.getName(), c.element.getName()])
    g.forward(xs)
    gx, gy = g.backward(xs, go)
    assert np.all(gx == 0) and np.all(gy == 0)
    g.stopGradient([])
    g.freeze([a.element.getName(), b.element.getName()])
    assert A.scaleW == 0 and b.element.scaleW == 0 and C.scaleW == 1
    g.unFreeze()
    assert A.scaleW == 1


def test_duplicate_names_are_rejected():
    x = pm.Input()
    a = lin(4, 3).setName("dense")
    b = lin(3, 3).setName("dense")
    with pytest.raises(ValueError, match="two nodes are named 'dense'"):
        pm.Graph(x, b(a(x)))


def test_a_module_in_two_nodes_is_rejected():
    x = pm.Input()
    layer = lin(3, 3)
    with pytest.raises(ValueError, match="is in two nodes"):
        pm.Graph(x, layer(layer(x)))


def test_a_cycle_is_rejected():
    x = pm.Input()
    add = pm.CAddTable()
    n1 = lin(3, 3)(x)
    n2 = add(n1)
    n3 = lin(3, 3)(n2)
    n2.prevNodes.append(n3)
    n3.nextNodes.append(n2)
    with pytest.raises(ValueError, match="a cycle runs through"):
        pm.Graph(x, n3)


def test_an_input_that_reaches_no_output_is_rejected():
    x, y = pm.Input(), pm.Input()
    with pytest.raises(ValueError, match=r"input Input@\w+ reaches no output"):
        pm.Graph([x, y], lin(3, 3)(x))
    with pytest.raises(ValueError, match="is not an input of the graph"):
        pm.Graph(x, pm.CAddTable()(x, y))


def test_the_wrong_number_of_inputs_is_rejected(rng):
    g, _ = _two_input_graph()
    with pytest.raises(ValueError, match=r"Graph@\w+: got 3 inputs, expected 2"):
        g.forward([rng.standard_normal((2, 4))] * 3)
    with pytest.raises(TypeError, match=r"Graph@\w+: expected a list of 2 inputs"):
        g.forward(rng.standard_normal((2, 4)))


def test_a_failing_node_is_named_by_its_path(rng):
    x = pm.Input()
    g = pm.Graph(x, lin(3, 2)(lin(4, 3)(x)))
    with pytest.raises(ValueError, match=r"^Graph@\w+/Linear@\w+\(4 -> 3\): input has 5 "
                                         r"features, expected 4"):
        g.forward(rng.standard_normal((2, 5)))
    with pytest.raises(TypeError, match="built from nodes"):
        g.add(lin(2, 2))


def test_graph_inside_a_sequential(rng):
    x = pm.Input()
    inner = pm.Graph(x, pm.JoinTable(1)(pm.ConcatTable().add(lin(4, 2)).add(lin(4, 1))(x)))
    m = pm.Sequential().add(inner).add(lin(3, 2))
    xv = rng.standard_normal((2, 4))
    assert_jacobian(m, xv)
    assert_jacobian(m, xv, wrt="parameters")


def test_clear_state_then_run_again(rng):
    x = pm.Input()
    a = pm.Linear(3, 3, dtype=np.float64)(x)
    out = pm.CAddTable()(pm.Linear(3, 2, dtype=np.float64)(a), pm.Linear(3, 2, dtype=np.float64)(a))
    g = pm.Graph(x, out)
    data, go = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    y = g.forward(data).copy()
    gi = g.backward(data, go).copy()
    g.clearState()
    np.testing.assert_array_equal(g.forward(data), y)
    np.testing.assert_array_equal(g.backward(data, go), gi)
