"""NaN is never hidden: a NaN in what a layer or a criterion reads comes out as NaN.

Every layer class (built as ``EXAMPLES`` of test_persistence.py builds it) and every criterion
class: a NaN put at an input position that the output depends on gives a NaN output (a NaN
loss for a criterion). The elementwise layers also match PyTorch's NaN, inf and boundary
behaviour in forward and backward.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import pymodules as pm


def _persistence():
    path = pathlib.Path(__file__).with_name("test_persistence.py")
    spec = importlib.util.spec_from_file_location("_persistence_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLES = _persistence().EXAMPLES

# Layers whose input is not data a NaN can be part of: LookupTable reads indices (a NaN
# index is refused, test_nan_index_is_refused).
NOT_DATA = (pm.LookupTable,
            pm.Index)  # its indices are positions: a NaN or a 40 there is refused
NOT_DATA += (pm.Transformer,)  # reads token indices, as LookupTable


def _leaves(x):
    return [a for v in x for a in _leaves(v)] if isinstance(x, list) else [x]


def _copy(x):
    return [_copy(v) for v in x] if isinstance(x, list) else np.array(x, copy=True)


def _cast(x, dtype):
    return [_cast(v, dtype) for v in x] if isinstance(x, list) else x.astype(dtype)


def _has_nan(x):
    return any(np.isnan(a).any() for a in _leaves(x) if isinstance(a, np.ndarray)) \
        if isinstance(x, list) else bool(np.isnan(x).any())


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(
        np.shape(p) == np.shape(q) and np.array_equal(p, q, equal_nan=True)
        for p, q in zip(la, lb, strict=True))


def _positions(x, rng, most=48):
    """(leaf, flat index) of the input positions to try, at most ``most`` of them."""
    pos = [(i, j) for i, a in enumerate(_leaves(x)) for j in range(a.size)]
    if len(pos) > most:
        pos = [pos[k] for k in sorted(rng.choice(len(pos), most, replace=False))]
    return pos


def _with(x, at, value):
    y = _copy(x)
    i, j = at
    _leaves(y)[i].flat[j] = value
    return y


def _layer_cases():
    for cls, makers in EXAMPLES.items():
        if cls in NOT_DATA:
            continue
        for i, (make, make_input) in enumerate(makers):
            if make_input is not None:
                for dtype in ("float32", "float64"):
                    yield pytest.param(make, make_input, dtype, id=f"{cls.__name__}{i}-{dtype}")


def _run(m, x):
    pm.setSeed(3)  # Dropout draws the same mask every time
    return _copy(m.forward(x))


@pytest.mark.parametrize(("make", "make_input", "dtype"), list(_layer_cases()))
def test_a_nan_in_the_input_of_a_layer_comes_out(make, make_input, dtype, rng):
    """Where setting one input value to +-40 changes the output, a NaN there gives a NaN."""
    m = make()
    if dtype == "float64":
        m.double()
    x = _cast(make_input(rng), m.dtype)
    base = _run(m, x)
    assert not _has_nan(base)
    tried = 0
    for at in _positions(x, rng):
        if all(_same(_run(m, _with(x, at, v)), base) for v in (40.0, -40.0)):
            continue  # the output does not depend on this position (Narrow, Select, ...)
        tried += 1
        xn = _with(x, at, np.nan)
        out = _run(m, xn)
        assert _has_nan(out), f"NaN at {at} of the input is hidden by {m}"
        # backward runs on it too, and a NaN input makes no error
        m.backward(xn, [np.ones_like(o) for o in out] if isinstance(out, list)
                   else np.ones_like(out))
    assert tried


def test_nan_index_is_refused():
    m = pm.LookupTable(10, 3)
    with pytest.raises(ValueError, match="(?i)nan"):
        m.forward(np.array([[1.0, np.nan]]))


# -- criteria --------------------------------------------------------------------------------

def _u(rng, lo, hi, shape=(3, 4)):
    return rng.uniform(lo, hi, shape)


def _criterion_cases():
    """(make, input, target, the positions that must give NaN or None for all)."""
    sign = lambda r: np.sign(r.standard_normal((3, 4))) + 0.0  # noqa: E731
    labels = lambda r: np.array([0, 3, 2])  # noqa: E731
    probs = lambda r: r.dirichlet(np.ones(4), 3)  # noqa: E731
    some_zero = lambda r: np.where(np.arange(12).reshape(3, 4) % 3 == 0, 0.0,  # noqa: E731
                                   r.dirichlet(np.ones(4), 3))
    normal = lambda r, *s: r.standard_normal(s or (3, 4))  # noqa: E731
    target_entries = [(0, 0), (0, 7), (0, 10)]  # labels 0, 3, 2 of rows 0, 1, 2
    return {
        pm.MSECriterion: [(pm.MSECriterion, normal, normal, None)],
        pm.AbsCriterion: [(pm.AbsCriterion, normal, normal, None)],
        pm.SmoothL1Criterion: [(pm.SmoothL1Criterion, normal, normal, None)],
        pm.BCECriterion: [(pm.BCECriterion, lambda r: _u(r, 0.1, 0.9),
                           lambda r: (_u(r, 0, 1) > 0.5) + 0.0, None)],
        pm.MarginCriterion: [(pm.MarginCriterion, lambda r: 3 * normal(r), sign, None),
                             (lambda: pm.MarginCriterion(squared=True),
                              lambda r: 3 * normal(r), sign, None)],
        pm.MultiLabelSoftMarginCriterion: [(pm.MultiLabelSoftMarginCriterion, normal,
                                            lambda r: (_u(r, 0, 1) > 0.5) + 0.0, None)],
        pm.DistKLDivCriterion: [(pm.DistKLDivCriterion, lambda r: np.log(probs(r)),
                                 some_zero, None)],
        pm.ClassNLLCriterion: [(pm.ClassNLLCriterion, lambda r: np.log(probs(r)), labels,
                                target_entries),
                               (lambda: pm.ClassNLLCriterion(logProbAsInput=False), probs,
                                labels, target_entries)],
        pm.CrossEntropyCriterion: [(pm.CrossEntropyCriterion, normal, labels, None)],
        pm.KLDCriterion: [(pm.KLDCriterion, lambda r: [normal(r), normal(r)],
                           lambda r: None, None)],
        pm.CosineEmbeddingCriterion: [(lambda: pm.CosineEmbeddingCriterion(0.5),
                                       lambda r: [normal(r), normal(r)],
                                       lambda r: np.array([1.0, -1.0, -1.0]), None)],
        pm.MultiCriterion: [(lambda: pm.MultiCriterion().add(pm.MSECriterion())
                             .add(pm.MarginCriterion(), 0.5), normal, sign, None)],
        pm.ParallelCriterion: [(lambda: pm.ParallelCriterion().add(pm.MSECriterion())
                                .add(pm.AbsCriterion(), 2.0),
                                lambda r: [normal(r), normal(r)],
                                lambda r: [normal(r), normal(r)], None)],
        pm.TimeDistributedCriterion: [(lambda: pm.TimeDistributedCriterion(
            pm.MarginCriterion(), True), lambda r: normal(r, 2, 3, 4),
            lambda r: np.sign(normal(r, 2, 3, 4)), None)],
        pm.SoftMarginCriterion: [(pm.SoftMarginCriterion, normal, sign, None)],
        pm.HingeEmbeddingCriterion: [(pm.HingeEmbeddingCriterion, normal, sign, None)],
        pm.MultiMarginCriterion: [(pm.MultiMarginCriterion, normal, labels, None),
                                  (lambda: pm.MultiMarginCriterion(2), normal, labels, None)],
        pm.MultiLabelMarginCriterion: [(pm.MultiLabelMarginCriterion, normal,
                                        lambda r: np.array([[0, 2, -1, -1], [3, -1, 0, 0],
                                                            [1, 0, -1, 0]]), None)],
        pm.L1Cost: [(pm.L1Cost, normal, lambda r: None, None)],
        pm.L1HingeEmbeddingCriterion: [(pm.L1HingeEmbeddingCriterion,
                                        lambda r: [normal(r), normal(r)],
                                        lambda r: np.array([1.0]), None)],
        pm.CosineDistanceCriterion: [(pm.CosineDistanceCriterion, normal, normal, None)],
        pm.MarginRankingCriterion: [(pm.MarginRankingCriterion,
                                     lambda r: [normal(r), normal(r)], sign, None)],
        pm.SoftmaxWithCriterion: [(pm.SoftmaxWithCriterion, normal, labels, None)],
        pm.DiceCoefficientCriterion: [(pm.DiceCoefficientCriterion, lambda r: _u(r, 0, 1),
                                       lambda r: (_u(r, 0, 1) > 0.5) + 0.0, None)],
        pm.PoissonCriterion: [(pm.PoissonCriterion, lambda r: _u(r, 0.1, 3),
                               lambda r: _u(r, 0, 3), None)],
        pm.MeanAbsolutePercentageCriterion: [(pm.MeanAbsolutePercentageCriterion, normal,
                                              normal, None)],
        pm.MeanSquaredLogarithmicCriterion: [(pm.MeanSquaredLogarithmicCriterion,
                                              lambda r: _u(r, 0.1, 3), lambda r: _u(r, 0, 3),
                                              None)],
        pm.KullbackLeiblerDivergenceCriterion: [(pm.KullbackLeiblerDivergenceCriterion, probs,
                                                 probs, None)],
        pm.CategoricalCrossEntropy: [(pm.CategoricalCrossEntropy, normal,
                                      lambda r: np.eye(4)[[0, 3, 2]], None)],
        pm.GaussianCriterion: [(pm.GaussianCriterion, lambda r: [normal(r), normal(r)], normal,
                                None)],
    }


def _criterion_classes():
    return sorted({obj for name in pm.__all__
                   if isinstance(obj := getattr(pm, name), type)
                   and issubclass(obj, pm.Criterion) and obj is not pm.Criterion},
                  key=lambda c: c.__name__)


def test_every_criterion_class_has_a_case():
    missing = [c.__name__ for c in _criterion_classes() if c not in _criterion_cases()]
    assert not missing, f"add NaN cases for {missing}"


def _criterion_params():
    for cls, cases in _criterion_cases().items():
        for i, case in enumerate(cases):
            for dtype in ("float32", "float64"):
                yield pytest.param(*case, dtype, id=f"{cls.__name__}{i}-{dtype}")


@pytest.mark.parametrize(("make", "make_input", "make_target", "positions", "dtype"),
                         list(_criterion_params()))
def test_a_nan_in_the_input_of_a_criterion_gives_a_nan_loss(make, make_input, make_target,
                                                            positions, dtype, rng):
    """Any NaN input gives a NaN loss (as torch's losses), but for the class NLL, which reads
    only the target class of each row; backward runs on it (its gradient: below)."""
    crit = make()
    x = _cast(make_input(rng), dtype)
    t = make_target(rng)
    assert np.isfinite(crit.forward(x, t))
    n = sum(a.size for a in _leaves(x))
    width = _leaves(x)[0].size
    for k in range(n) if positions is None else [i * width + j for i, j in positions]:
        at = (k // width, k % width)
        xn = _with(x, at, np.nan)
        loss = crit.forward(xn, t)
        assert np.isnan(loss), f"NaN at {at} gives the loss {loss} in {crit}"
        crit.backward(xn, t)


def _torch_losses(torch, rng):
    """(criterion, torch's loss of (x, t), input, target) with NaN in the input."""
    F = torch.nn.functional
    x = rng.standard_normal((3, 4))
    x[0, 1] = x[2, 3] = np.nan
    y = rng.standard_normal((3, 4))
    b = (rng.uniform(size=(3, 4)) > 0.5) + 0.0
    s = np.sign(rng.standard_normal((3, 4))) + 0.0
    q = np.where(np.arange(12).reshape(3, 4) % 3 == 0, 0.0, rng.dirichlet(np.ones(4), 3))
    p = rng.uniform(0.1, 0.9, (3, 4))
    p[1, 2] = np.nan
    labels = np.array([1, 2, 3])
    tl = torch.from_numpy(labels)
    return [
        (pm.MSECriterion(), F.mse_loss, x, y),
        (pm.AbsCriterion(), F.l1_loss, x, y),
        (pm.SmoothL1Criterion(), F.smooth_l1_loss, 3 * x, y),
        # (torch's binary_cross_entropy refuses a NaN probability)
        (pm.BCECriterion(), lambda a, t: -(t * torch.log(a) + (1 - t) * torch.log(1 - a)).mean(),
         p, b),
        (pm.MultiLabelSoftMarginCriterion(), F.binary_cross_entropy_with_logits, x, b),
        (pm.DistKLDivCriterion(), lambda a, t: F.kl_div(a, t, reduction="sum") / a.numel(),
         x, q),
        (pm.MarginCriterion(), lambda a, t: torch.clamp(1 - a * t, min=0).mean(), x, s),
        (pm.ClassNLLCriterion(), lambda a, t: F.nll_loss(a, tl), x, labels),
        (pm.ClassNLLCriterion(logProbAsInput=False),
         lambda a, t: F.nll_loss(torch.log(a), tl), p, labels),
        (pm.CrossEntropyCriterion(), lambda a, t: F.cross_entropy(a, tl), x, labels),
    ]


def test_criteria_give_nan_losses_and_gradients_as_torch(torch, rng):
    for crit, f, x, t in _torch_losses(torch, rng):
        loss, g = crit.forward(x, t), crit.backward(x, t).copy()
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tloss = f(tx, torch.from_numpy(t))
        tloss.backward()
        assert np.isnan(loss) and np.isnan(tloss.item()), crit
        np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-6, atol=1e-12,
                                   err_msg=str(crit))


def test_cosine_embedding_gives_nan_as_torch(torch, rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    a[1, 2] = np.nan
    y = np.array([1.0, -1.0, -1.0])
    crit = pm.CosineEmbeddingCriterion(0.5)
    loss, (ga, gb) = crit.forward([a, b], y), crit.backward([a, b], y)
    ta, tb = (torch.from_numpy(v.copy()).requires_grad_() for v in (a, b))
    tloss = torch.nn.functional.cosine_embedding_loss(ta, tb, torch.from_numpy(y), 0.5)
    tloss.backward()
    assert np.isnan(loss) and np.isnan(tloss.item())
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("crit", [pm.MSECriterion(), pm.AbsCriterion(),
                                  pm.SmoothL1Criterion(), pm.MarginCriterion(),
                                  pm.DistKLDivCriterion()])
def test_a_nan_target_gives_a_nan_loss(crit, rng):
    x = rng.standard_normal((3, 4))
    t = np.abs(rng.standard_normal((3, 4)))
    t[1, 2] = np.nan
    assert np.isnan(crit.forward(x, t))


def test_dist_kl_div_keeps_zero_for_a_zero_target_of_finite_input():
    x = np.log(np.array([[0.5, 0.5, 1e-30]]))
    t = np.array([[0.5, 0.5, 0.0]])
    assert np.isfinite(pm.DistKLDivCriterion().forward(x, t))
    x[0, 2] = -np.inf  # log of a zero probability, where the target is zero too
    assert pm.DistKLDivCriterion().forward(x, t) == pytest.approx(0.0)
    assert np.array_equal(pm.DistKLDivCriterion().backward(x, t)[0], [-0.5 / 3, -0.5 / 3, 0])


# -- the elementwise layers against PyTorch -----------------------------------------------------

def _oracles(torch):
    F = torch.nn.functional
    return [
        (pm.ReLU(), F.relu),
        (pm.Threshold(0.5, -2.0), lambda x: F.threshold(x, 0.5, -2.0)),
        (pm.ReLU6(), F.relu6),
        (pm.HardTanh(-0.5, 0.7), lambda x: F.hardtanh(x, -0.5, 0.7)),
        (pm.Clamp(-0.5, 0.5), lambda x: F.hardtanh(x, -0.5, 0.5)),  # BigDL's: a HardTanh
        (pm.LeakyReLU(0.2), lambda x: F.leaky_relu(x, 0.2)),
        (pm.ELU(0.7), lambda x: F.elu(x, 0.7)),
        (pm.Abs(), torch.abs),
        (pm.Exp(), torch.exp),
        (pm.Log(), torch.log),
        (pm.Sqrt(), torch.sqrt),
        (pm.Square(), torch.square),
        (pm.Power(2.0, 0.5, 0.1), lambda x: (0.1 + 0.5 * x) ** 2),
        (pm.Power(3.0, 0.5, 0.1), lambda x: (0.1 + 0.5 * x) ** 3),
        (pm.Sigmoid(), torch.sigmoid),
        (pm.Tanh(), torch.tanh),
        (pm.SoftPlus(2.0), lambda x: F.softplus(x, 2.0, 20.0)),
        # torch's softsign is x / (1 + |x|) by autograd: NaN at +-inf, where the gradient's
        # limit (and ours) is 0; compared on the other inputs
        (pm.SoftSign(), F.softsign, "finite backward"),
        # BigDL's HardSigmoid (Keras'), not torch's x / 6 + 1/2
        (pm.HardSigmoid(), lambda x: F.hardtanh(0.2 * x + 0.5, 0.0, 1.0)),
        (pm.SoftMax(), lambda x: torch.softmax(x, -1)),
        (pm.SoftMin(), lambda x: F.softmin(x, -1)),
        (pm.LogSoftMax(), lambda x: torch.log_softmax(x, -1)),
        (pm.LogSigmoid(), F.logsigmoid),
        (pm.SoftShrink(0.7), lambda x: F.softshrink(x, 0.7)),
        (pm.HardShrink(0.5), lambda x: F.hardshrink(x, 0.5)),
        (pm.TanhShrink(), F.tanhshrink),
        (pm.RReLU(0.1, 0.3).evaluate(), lambda x: F.rrelu(x, 0.1, 0.3, training=False)),
    ]


def _special(dtype):
    """Rows of NaN, infinities, the boundaries of the kernels' branches and plain values."""
    v = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 0.7, 1.0, -1.0, 2.5, -2.5, 6.0, 20.0,
         10.0, -10.0, 0.3, -0.3, 3.0, -3.0]
    x = np.array(v, dtype).reshape(4, 5)
    return np.concatenate([x, np.nan_to_num(x, nan=1.5, posinf=4.0, neginf=-4.0)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_layers_treat_nan_and_inf_as_torch(dtype, torch):
    """Forward and backward at NaN, infinities and the kernels' boundaries. Torch's kernels
    run 40 values vectorised (a few scalars take another path in some of them)."""
    x = _special(dtype)
    g = np.linspace(-1, 1, x.size).reshape(x.shape).astype(dtype)
    for m, f, *only in _oracles(torch):
        if dtype == "float64":
            m.double()
        with np.errstate(all="ignore"):
            y, gi = _copy(m.forward(x)), _copy(m.backward(x, g))
        tx = torch.from_numpy(x.copy()).requires_grad_()
        ty = f(tx)
        ty.backward(torch.from_numpy(g))
        want = tx.grad.numpy()
        if only:
            want = np.where(np.isinf(x), gi, want)
        # (atol: ELU's gradient from its output cancels where exp(x) is small)
        tol = {"rtol": 2e-6, "atol": 1e-7} if dtype == "float32" else \
            {"rtol": 1e-12, "atol": 1e-15}
        np.testing.assert_allclose(y, ty.detach().numpy(), err_msg=f"{m} forward", **tol)
        np.testing.assert_allclose(gi, want, err_msg=f"{m} backward", **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prelu_treats_nan_as_torch(dtype, torch):
    x = _special(dtype).reshape(2, 4, 5, 1)
    g = np.linspace(-1, 1, x.size).reshape(x.shape).astype(dtype)
    m = pm.PReLU(4, dtype=np.dtype(dtype))
    m.weight[:] = [0.25, -0.5, 0.1, 2.0]
    m.zeroGradParameters()
    with np.errstate(all="ignore"):
        y, gi = _copy(m.forward(x)), _copy(m.backward(x, g))
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tw = torch.from_numpy(m.weight.copy()).requires_grad_()
    ty = torch.nn.functional.prelu(tx, tw)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(gi, tx.grad.numpy(), rtol=1e-6)
    np.testing.assert_allclose(m.gradWeight, tw.grad.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_max_pooling_and_cmax_table_return_the_nan_of_a_window(dtype, torch):
    x = np.arange(2 * 1 * 4 * 4, dtype=dtype).reshape(2, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan  # not first in its window, and a larger value after it
    x[1, 0, 3, 3] = np.nan  # last in its window
    y = pm.SpatialMaxPooling(2, 2, 2, 2, dtype=np.dtype(dtype)).forward(x)
    ty = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2)
    np.testing.assert_array_equal(y, ty.numpy())
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[1, 0, 1, 1])
    t = np.arange(2 * 6 * 3, dtype=dtype).reshape(2, 6, 3)
    t[0, 1, 0] = np.nan
    y = pm.TemporalMaxPooling(2, dtype=np.dtype(dtype)).forward(t)
    assert np.isnan(y[0, 0, 0]) and not np.isnan(y[0, 1:, :]).any()
    a = np.array([[1.0, np.nan, 3.0, np.nan]], dtype)
    b = np.array([[np.nan, 5.0, 0.0, np.nan]], dtype)
    c = np.array([[7.0, 7.0, 7.0, 1.0]], dtype)
    y = pm.CMaxTable().forward([a, b, c])
    np.testing.assert_array_equal(
        y, torch.maximum(torch.maximum(*map(torch.from_numpy, (a, b))),
                         torch.from_numpy(c)).numpy())
