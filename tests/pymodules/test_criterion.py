import numpy as np
import pytest

import pymodules as pm
from pymodules.criterion import (
    AbsCriterion,
    BCECriterion,
    ClassNLLCriterion,
    CosineEmbeddingCriterion,
    CrossEntropyCriterion,
    DistKLDivCriterion,
    KLDCriterion,
    MarginCriterion,
    MSECriterion,
    MultiCriterion,
    MultiLabelSoftMarginCriterion,
    ParallelCriterion,
    SmoothL1Criterion,
    TimeDistributedCriterion,
)


def _flat(t):
    return [a for x in t for a in _flat(x)] if isinstance(t, list) else [t]


def assert_loss_gradient(crit, input, target, h=1e-6, tol=1e-6):
    """backward agrees with central differences of forward (float64)."""
    crit.forward(input, target)
    analytic = [np.array(g, copy=True) for g in _flat(crit.backward(input, target))]
    for x, ga in zip(_flat(input), analytic, strict=True):
        num = np.zeros_like(x)
        for i in range(x.size):
            orig = x.flat[i]
            x.flat[i] = orig + h
            plus = crit.forward(input, target)
            x.flat[i] = orig - h
            minus = crit.forward(input, target)
            x.flat[i] = orig
            num.flat[i] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(ga, num, atol=tol, rtol=1e-5)


def _cases(rng):
    x = rng.standard_normal((4, 5))
    y = rng.standard_normal((4, 5))
    p = rng.uniform(0.1, 0.9, (4, 5))
    b = (rng.uniform(size=(4, 5)) > 0.5).astype(np.float64)
    pm_ = np.sign(rng.standard_normal((4, 5)))
    logp = np.log(rng.dirichlet(np.ones(5), 4))
    q = rng.dirichlet(np.ones(5), 4)
    labels = np.array([0, 4, 2, 1])
    w = rng.uniform(0.5, 2, 5)
    return [
        (MSECriterion(), x, y), (MSECriterion(sizeAverage=False), x, y),
        (AbsCriterion(), x, y), (SmoothL1Criterion(), 2 * x, y),
        (BCECriterion(), p, b), (BCECriterion(weights=w), p, b),
        (MarginCriterion(), x, pm_), (MarginCriterion(0.5, False, True), x, pm_),
        (MultiLabelSoftMarginCriterion(), x, b), (DistKLDivCriterion(), logp, q),
        (ClassNLLCriterion(), logp, labels), (ClassNLLCriterion(w, False), logp, labels),
        (ClassNLLCriterion(logProbAsInput=False), np.exp(logp), labels),
        (ClassNLLCriterion(paddingValue=4), logp, labels),
        (CrossEntropyCriterion(), x, labels), (CrossEntropyCriterion(w), x, labels),
        (KLDCriterion(), [x, y], None),
        (CosineEmbeddingCriterion(0.1), [x, y], np.array([1.0, -1, -1, 1])),
    ]


@pytest.mark.parametrize("case", range(18))
def test_finite_differences(case, rng):
    crit, input, target = _cases(rng)[case]
    assert_loss_gradient(crit, input, target)


@pytest.mark.parametrize("name,crit,weighted", [
    ("mse", MSECriterion(), False), ("abs", AbsCriterion(), False),
    ("smoothl1", SmoothL1Criterion(), False), ("bce", BCECriterion(), False),
    ("margin", MarginCriterion(), False), ("softmargin", MultiLabelSoftMarginCriterion(), False),
    ("kldiv", DistKLDivCriterion(), False), ("nll", ClassNLLCriterion(), False),
    ("ce", CrossEntropyCriterion(), False), ("bce", BCECriterion, True),
    ("nll", ClassNLLCriterion, True), ("ce", CrossEntropyCriterion, True),
])
def test_agrees_with_torch(name, crit, weighted, torch, rng):
    x = rng.standard_normal((6, 5))
    w = rng.uniform(0.5, 2, 5) if weighted else None
    if weighted:
        crit = crit(w)
    if name in ("nll", "ce"):
        if name == "nll":
            x = np.log(rng.dirichlet(np.ones(5), 6))
        y = rng.integers(0, 5, 6)
    elif name == "bce":
        x, y = rng.uniform(0.05, 0.95, (6, 5)), rng.uniform(size=(6, 5))
    elif name == "softmargin":
        y = (rng.uniform(size=(6, 5)) > 0.5).astype(np.float64)
    elif name == "margin":
        y = np.sign(rng.standard_normal((6, 5)))
    elif name == "kldiv":
        x, y = np.log(rng.dirichlet(np.ones(5), 6)), rng.dirichlet(np.ones(5), 6)
    else:
        y = rng.standard_normal((6, 5))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y)
    F = torch.nn.functional
    wt = None if w is None else torch.tensor(w)
    ref = {
        "mse": lambda: F.mse_loss(tx, ty), "abs": lambda: F.l1_loss(tx, ty),
        "smoothl1": lambda: F.smooth_l1_loss(tx, ty),
        "bce": lambda: F.binary_cross_entropy(tx, ty, weight=wt),
        "margin": lambda: torch.clamp(1 - tx * ty, min=0).mean(),
        "softmargin": lambda: F.multilabel_soft_margin_loss(tx, ty),
        "kldiv": lambda: F.kl_div(tx, ty, reduction="sum") / tx.numel(),
        "nll": lambda: F.nll_loss(tx, ty, weight=wt),
        "ce": lambda: F.cross_entropy(tx, ty, weight=wt),
    }[name]()
    ref.backward()
    assert crit.forward(x, y) == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(crit.backward(x, y), tx.grad.numpy(), rtol=1e-7, atol=1e-12)


def test_cosine_embedding_agrees_with_torch(torch, rng):
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    y = np.array([1.0, -1, 1, -1, -1])
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.cosine_embedding_loss(ta, tb, torch.tensor(y), margin=-0.2)
    ref.backward()
    c = CosineEmbeddingCriterion(-0.2)
    assert c.forward([a, b], y) == pytest.approx(ref.item(), rel=1e-9)
    ga, gb = c.backward([a, b], y)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_kld_reference(rng):
    mu, lv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    ref = 0.5 * np.sum(np.exp(lv) + mu ** 2 - 1 - lv) / 3
    assert KLDCriterion().forward([mu, lv], None) == pytest.approx(ref)


def test_class_nll_ignore_index_and_one_sample(rng):
    logp = np.log(rng.dirichlet(np.ones(3), 3))
    c = ClassNLLCriterion(paddingValue=-1)
    assert c.forward(logp, np.array([1, -1, 2])) == pytest.approx(
        -(logp[0, 1] + logp[2, 2]) / 2)
    assert c.backward(logp, np.array([1, -1, 2]))[1].tolist() == [0, 0, 0]
    assert ClassNLLCriterion().forward(logp[0], 2) == pytest.approx(-logp[0, 2])
    # float labels holding whole numbers are accepted (BigDL feeds float targets)
    assert c.forward(logp, np.array([1.0, 0, 2])) == pytest.approx(
        -(logp[0, 1] + logp[1, 0] + logp[2, 2]) / 3)


@pytest.mark.parametrize("target,match", [
    (np.array([0, 3, 1]), r"target 3 \(row 1\) is out of range \[0, 3\)"),
    (np.array([0, -2, 1]), r"target -2 \(row 1\) is out of range \[0, 3\)"),
    (np.array([0, 1]), r"target has shape \(2,\), expected \(3,\)"),
    (np.array([0.5, 1, 1]), r"target 0.5 is not a whole class label"),
])
def test_bad_labels_name_the_value(target, match):
    x = np.zeros((3, 3), np.float32)
    for crit in (ClassNLLCriterion(), CrossEntropyCriterion()):
        with pytest.raises(ValueError, match=match):
            crit.forward(x, target)


def test_bad_shapes_and_types():
    with pytest.raises(ValueError, match=r"MSECriterion: target has shape \(2, 3\), expected"):
        MSECriterion().forward(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="MSECriterion: input must be a numpy.ndarray"):
        MSECriterion().forward([1.0], np.zeros(1))
    with pytest.raises(ValueError, match=r"weights has shape \(3,\)"):
        BCECriterion(np.ones(3)).forward(np.full((2, 4), 0.5), np.ones((2, 4)))


def test_float32_and_reused_gradient(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    c = MSECriterion()
    g = c.backward(x, np.zeros((4, 3)))   # float64 target is converted
    assert g.dtype == np.float32
    assert c.backward(x, np.zeros((4, 3), np.float32)) is g
    np.testing.assert_allclose(g, 2 * x / 12, rtol=1e-6)
    # a strided input is accepted
    xt = rng.standard_normal((3, 4)).T
    np.testing.assert_allclose(MSECriterion().backward(xt, np.zeros((4, 3))), 2 * xt / 12)


def test_containers(rng):
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    ya, yb = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    par = ParallelCriterion().add(MSECriterion(), 0.5).add(AbsCriterion(), 2.0)
    assert par.forward([a, b], [ya, yb]) == pytest.approx(
        0.5 * np.mean((a - ya) ** 2) + 2 * np.mean(np.abs(b - yb)))
    assert_loss_gradient(par, [a, b], [ya, yb])
    rep = ParallelCriterion(repeatTarget=True).add(MSECriterion()).add(AbsCriterion())
    assert_loss_gradient(rep, [a, b], ya)
    multi = MultiCriterion().add(MSECriterion(), 0.3).add(SmoothL1Criterion(), 1.5)
    assert multi.forward(a, ya) == pytest.approx(
        0.3 * MSECriterion().forward(a, ya) + 1.5 * SmoothL1Criterion().forward(a, ya))
    assert_loss_gradient(multi, a, ya)


@pytest.mark.parametrize("sizeAverage", [False, True])
def test_time_distributed(sizeAverage, rng):
    x = rng.standard_normal((2, 3, 4))
    y = rng.integers(0, 4, (2, 3))
    td = TimeDistributedCriterion(CrossEntropyCriterion(), sizeAverage)
    ref = sum(CrossEntropyCriterion().forward(np.ascontiguousarray(x[:, t]), y[:, t])
              for t in range(3))
    assert td.forward(x, y) == pytest.approx(ref / 3 if sizeAverage else ref)
    assert_loss_gradient(td, x, y)


def test_exported():
    assert pm.ClassNLLCriterion is ClassNLLCriterion
    assert pm.TimeDistributedCriterion is TimeDistributedCriterion


# -- paddingValue (API.md "More layers": ClassNLLCriterion) -----------------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sizeAverage", [True, False])
@pytest.mark.parametrize("kind", ["nll", "ce"])
def test_padding_value_agrees_with_torch_ignore_index(kind, sizeAverage, weighted, torch, rng):
    x = rng.standard_normal((6, 4))
    target = np.array([2, -1, 0, 3, -1, 1])
    w = rng.uniform(0.5, 2, 4) if weighted else None
    if kind == "nll":
        x = np.log(rng.dirichlet(np.ones(4), 6))
        crit = ClassNLLCriterion(w, sizeAverage)  # paddingValue defaults to -1
        ref = torch.nn.NLLLoss
    else:
        crit = CrossEntropyCriterion(w, sizeAverage)
        ref = torch.nn.CrossEntropyLoss
    tw = None if w is None else torch.tensor(w)
    tx = torch.tensor(x, requires_grad=True)
    tl = ref(weight=tw, ignore_index=-1, reduction="mean" if sizeAverage else "sum")(
        tx, torch.tensor(target))
    tl.backward()
    assert crit.forward(x, target) == pytest.approx(tl.item(), rel=1e-12)
    g = crit.backward(x, target)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert not g[[1, 4]].any()


@pytest.mark.parametrize("crit", [ClassNLLCriterion(), ClassNLLCriterion(np.ones(3) * 2),
                                  CrossEntropyCriterion()])
def test_all_rows_padded_give_zero_loss_and_gradient(crit):
    x = np.log(np.full((3, 3), 1 / 3))
    assert crit.forward(x, np.array([-1, -1, -1])) == 0.0
    assert not crit.backward(x, np.array([-1, -1, -1])).any()


def test_padding_value_is_the_only_label_out_of_range_allowed():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"target -2 \(row 1\) is out of range \[0, 3\)"):
        ClassNLLCriterion().forward(x, np.array([0, -2]))
    c = ClassNLLCriterion(paddingValue=3)
    assert c.forward(x - 1, np.array([0, 3])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"target -1 \(row 1\) is out of range"):
        c.forward(x, np.array([0, -1]))
    with pytest.raises(TypeError, match="ClassNLLCriterion: paddingValue must be an integer"):
        ClassNLLCriterion(paddingValue=0.5)


def test_padding_inside_time_distributed_criterion(torch, rng):
    x = np.log(rng.dirichlet(np.ones(4), (2, 5)))  # (batch, time, classes)
    y = np.array([[1, 2, -1, -1, -1], [0, 3, 3, 1, -1]])
    td = TimeDistributedCriterion(ClassNLLCriterion(), sizeAverage=True)
    nll = torch.nn.NLLLoss(ignore_index=-1)
    steps = [nll(torch.tensor(x[:, t]), torch.tensor(y[:, t])) for t in range(4)]
    # the last step is all padding: it adds 0 (torch gives nan for an empty mean)
    assert td.forward(x, y) == pytest.approx(sum(s.item() for s in steps) / 5, rel=1e-12)
    g = td.backward(x, y)
    assert not g[0, 2:].any() and not g[1, 4].any()
    assert_loss_gradient(td, x, y)


@pytest.mark.parametrize("shape,wshape", [
    ((4, 3), (3,)), ((4, 3, 5), (3, 5)), ((2, 3, 2, 4), (3, 2, 4)), ((4, 3, 5), (5,)),
    ((4, 3, 5), (4, 3, 5)), ((6,), (6,)),
])
def test_bce_weights_broadcast_over_the_batch(shape, wshape, torch, rng):
    p = rng.uniform(0.05, 0.95, shape)
    y = (rng.uniform(size=shape) > 0.5).astype(np.float64)
    w = rng.uniform(0.5, 2, wshape)
    crit = BCECriterion(weights=w)
    tp = torch.tensor(p, requires_grad=True)
    tl = torch.nn.BCELoss(weight=torch.tensor(w))(tp, torch.tensor(y))
    tl.backward()
    # BigDL's log(p + 1e-12) against torch's clamped log: equal to ~1e-11
    assert crit.forward(p, y) == pytest.approx(tl.item(), rel=1e-9)
    np.testing.assert_allclose(crit.backward(p, y), tp.grad.numpy(), rtol=1e-9)


def test_bce_weights_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"BCECriterion: weights has shape \(4, 5\), expected "
                                         r"the trailing part of input's \(2, 3, 5\)"):
        BCECriterion(weights=np.ones((4, 5))).forward(np.full((2, 3, 5), 0.5),
                                                      np.ones((2, 3, 5)))


def test_a_criterion_saved_before_padding_value_loads_with_the_default(tmp_path, rng):
    from pymodules import persistence

    old = ClassNLLCriterion()
    del old.paddingValue
    old.ignoreIndex = -100  # the attribute files of earlier versions hold
    persistence.save_state(tmp_path / "c.pm", {"criterion": old})
    c = persistence.load_state(tmp_path / "c.pm")["criterion"]
    logp = np.log(rng.dirichlet(np.ones(3), 2))
    assert c.forward(logp, np.array([2, -1])) == pytest.approx(-logp[0, 2])


@pytest.mark.parametrize("target,match", [
    (np.array([0.0, np.inf, 1.0]), r"target inf is not a finite class label"),
    (np.array([0.0, -np.inf, 1.0]), r"target -inf is not a finite class label"),
    (np.array([0.0, np.nan, 1.0]), r"target nan is not a finite class label"),
    (np.array([0.0, 1e300, 1.0]), r"target 1e\+300 is not a representable \(int64\) class"),
    (np.array([0.0, 2.0 ** 63, 1.0]), r"target 9.2\d+e\+18 is not a representable"),
    (np.array([0, 2 ** 64 - 1, 1], np.uint64), r"target 18446744073709551615 is too large"),
])
def test_labels_int64_cannot_hold_are_refused_naming_the_value(target, match):
    """Cast, such a label became -9223372036854775808 (or -1, the padding value)."""
    x = np.zeros((3, 3), np.float32)
    for crit in (ClassNLLCriterion(), CrossEntropyCriterion(),
                 TimeDistributedCriterion(CrossEntropyCriterion())):
        with pytest.raises(ValueError, match=match) as info:
            crit.forward(x[None] if isinstance(crit, TimeDistributedCriterion) else x,
                         target[None] if isinstance(crit, TimeDistributedCriterion) else target)
        assert "-9223372036854775808" not in str(info.value)
    for method in (pm.Top1Accuracy(), pm.Top5Accuracy(), pm.Loss()):
        with pytest.raises(ValueError, match=match):
            method(x, target)
