"""The second catalogue of criteria: margins, ranking, softmax, Keras-style regression
losses, Dice, cosine distance and the Gaussian log-likelihood.

Each is checked against central differences (float64), a NumPy reference (float32 and
float64), the PyTorch oracle where torch has the loss or its parts, a save/load round trip,
its padding labels, NaN, and refusals that name it.
"""

import numpy as np
import pytest
from tolerance import reduction_tol

import pymodules as pm
from pymodules import persistence

# -- NumPy references: (loss, gradient) -----------------------------------------------------


def _log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def ref_soft_margin(x, y, avg=True):
    n = x.size if avg else 1
    return np.log1p(np.exp(-y * x)).sum() / n, -y / (1 + np.exp(y * x)) / n


def ref_hinge(x, y, margin=1.0, avg=True):
    n = x.size if avg else 1
    loss = np.where(y != -1, x, 0) + np.where(y != 1, np.maximum(0, margin - x), 0)
    g = (y != -1).astype(float) - ((y != 1) & (margin - x >= 0))
    return loss.sum() / n, g / n


def ref_multi_margin(x, t, p=1, w=None, margin=1.0, avg=True, pad=-1):
    x2 = np.atleast_2d(x)
    t = np.atleast_1d(t)
    k = x2.shape[1]
    loss, g, rows = 0.0, np.zeros_like(x2), 0
    for i, y in enumerate(t):
        if y == pad:
            continue
        rows += 1
        wy = 1.0 if w is None else w[y]
        for d in range(k):
            z = margin - x2[i, y] + x2[i, d]
            if d != y and z > 0:
                loss += wy * z ** p
                g[i, d] += wy * p * z ** (p - 1)
                g[i, y] -= wy * p * z ** (p - 1)
    div = k * (rows if avg and rows else 1)
    return loss / div, (g / div).reshape(x.shape)


def ref_multi_label(x, t, avg=True):
    x2, t2 = np.atleast_2d(x), np.atleast_2d(t)
    n, k = x2.shape
    loss, g = 0.0, np.zeros_like(x2)
    for i in range(n):
        labels = []
        for v in t2[i]:
            if v < 0:
                break
            labels.append(v)
        for j in labels:
            for d in range(k):
                if d in labels:
                    continue
                z = 1 - x2[i, j] + x2[i, d]
                if z > 0:
                    loss += z
                    g[i, j] -= 1
                    g[i, d] += 1
    div = k * (n if avg else 1)
    return loss / div, (g / div).reshape(x.shape)


def ref_ranking(x, t, margin=1.0, avg=True):
    x1, x2 = x
    n = x1.size if avg else 1
    d = margin - t * (x1 - x2)
    g = -t * (d >= 0) / n
    return np.maximum(0, d).sum() / n, [g, -g]


def ref_l1_hinge(x, t, margin=1.0):
    a, b = x
    d = np.abs(a - b).sum()
    s = np.sign(a - b)
    if np.ravel(t)[0] == -1:
        return max(0.0, margin - d), [-s * (margin - d >= 0), s * (margin - d >= 0)]
    return d, [s, -s]


def ref_cosine_distance(x, y, avg=True):
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    xx = (x2 * x2).sum(1, keepdims=True) + 1e-12
    yy = (y2 * y2).sum(1, keepdims=True) + 1e-12
    root = np.sqrt(xx * yy)
    cos = (x2 * y2).sum(1, keepdims=True) / root
    n = x2.shape[0] if avg else 1
    return (1 - cos).sum() / n, ((cos / xx * x2 - y2 / root) / n).reshape(x.shape)


def ref_dice(x, y, avg=True, eps=1.0):
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    num = 2 * (x2 * y2).sum(1, keepdims=True) + eps
    den = x2.sum(1, keepdims=True) + y2.sum(1, keepdims=True) + eps
    n = x2.shape[0] if avg else 1
    return (1 - num / den).sum() / n, ((num / den ** 2 - 2 * y2 / den) / n).reshape(x.shape)


def ref_softmax_with(x, t, ignore=-1, mode="VALID"):
    lp = _log_softmax(x, axis=1)
    lab = t.reshape((x.shape[0],) + x.shape[2:])
    keep = lab != ignore
    safe = np.where(keep, lab, 0)
    picked = np.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    norm = {"FULL": lab.size, "VALID": keep.sum(), "BATCH_SIZE": x.shape[0], "NONE": 1}[mode]
    norm = max(1, norm)
    onehot = np.zeros_like(x)
    np.put_along_axis(onehot, safe[:, None], 1.0, axis=1)
    g = (np.exp(lp) - onehot) * keep[:, None] / norm
    return -(picked * keep).sum() / norm, g


def ref_categorical(x, t):
    x2, t2 = np.atleast_2d(x), np.atleast_2d(t)
    lp = _log_softmax(x2)
    n = x2.shape[0]
    g = (np.exp(lp) * t2.sum(1, keepdims=True) - t2) / n
    return -(t2 * lp).sum() / n, g.reshape(x.shape)


def ref_l1_cost(x, t=None):
    return np.abs(x).sum(), np.sign(x)


def ref_poisson(x, y):
    return (x - y * np.log(x + 1e-7)).mean(), (1 - y / (x + 1e-7)) / x.size


def ref_mape(x, y):
    den = np.clip(np.abs(y), 1e-7, np.finfo(np.float64).max)
    return 100 * (np.abs(x - y) / den).mean(), 100 * np.sign(x - y) / den / x.size


def ref_msle(x, y):
    big = np.finfo(np.float64).max
    cx = np.clip(x, 1e-7, big)
    d = np.log(np.clip(y, 1e-7, big) + 1) - np.log(cx + 1)
    g = np.where((x >= 1e-7) & (x <= big), -2 * d / (cx + 1), 0) / x.size
    return (d * d).mean(), g


def ref_kl(x, y):
    b = x.shape[0] if x.ndim > 1 else 1
    cx = np.clip(x, 1e-8, 1)
    loss = (y * (np.log(np.clip(y, 1e-8, 1)) - np.log(cx))).sum() / b
    return loss, np.where((x >= 1e-8) & (x <= 1), -y / cx, 0) / b


def ref_gaussian(x, t):
    mu, lv = x
    d = t - mu
    loss = (0.5 * lv + 0.5 * np.log(2 * np.pi) + 0.5 * d * d / np.exp(lv)).sum()
    return loss, [-d / np.exp(lv), 0.5 - 0.5 * d * d / np.exp(lv)]


# -- cases ----------------------------------------------------------------------------------

def _sign(r, *s):
    return np.where(r.uniform(size=s) > 0.5, 1.0, -1.0)


def _probs(r, n, k):
    return r.dirichlet(np.ones(k), n)


def _pair(r, *s):
    return [r.standard_normal(s), r.standard_normal(s)]


def _labels_list(r):
    return np.array([[3, 0, -1, -1, -1], [1, -1, 2, 2, 2], [-1, 0, 0, 0, 0],
                     [0, 1, 2, 3, 4]])


def _segmentation(r):
    t = r.integers(0, 3, (2, 3, 2))
    t[0, 1, 1] = t[1, 0, 0] = -1
    return t


# (id, make, input(rng), target(rng), reference(x, t), its keyword arguments)
CASES = [
    ("soft_margin", pm.SoftMarginCriterion, lambda r: 2 * r.standard_normal((4, 5)),
     lambda r: _sign(r, 4, 5), ref_soft_margin, {}),
    ("soft_margin_sum", lambda: pm.SoftMarginCriterion(False),
     lambda r: r.standard_normal(6), lambda r: _sign(r, 6), ref_soft_margin, {"avg": False}),
    ("hinge", pm.HingeEmbeddingCriterion, lambda r: 2 * r.uniform(-1, 2, (4, 5)),
     lambda r: _sign(r, 4, 5), ref_hinge, {}),
    ("hinge_margin_sum", lambda: pm.HingeEmbeddingCriterion(0.5, False),
     lambda r: r.uniform(-1, 2, (3, 4)), lambda r: _sign(r, 3, 4), ref_hinge,
     {"margin": 0.5, "avg": False}),
    ("multi_margin", pm.MultiMarginCriterion, lambda r: r.standard_normal((5, 4)),
     lambda r: np.array([0, 3, 1, 1, 2]), ref_multi_margin, {}),
    ("multi_margin_p2_weighted", lambda: pm.MultiMarginCriterion(2, np.array([.5, 1, 2, 1.5]),
                                                                0.7, False),
     lambda r: r.standard_normal((5, 4)), lambda r: np.array([0, 3, 1, 1, 2]),
     ref_multi_margin, {"p": 2, "w": np.array([.5, 1, 2, 1.5]), "margin": 0.7, "avg": False}),
    ("multi_margin_padded", pm.MultiMarginCriterion, lambda r: r.standard_normal((5, 4)),
     lambda r: np.array([0, -1, 1, -1, 2]), ref_multi_margin, {}),
    ("multi_margin_vector", pm.MultiMarginCriterion, lambda r: r.standard_normal(6),
     lambda r: np.array([4]), ref_multi_margin, {}),
    ("multi_label", pm.MultiLabelMarginCriterion, lambda r: r.standard_normal((4, 5)),
     _labels_list, ref_multi_label, {}),
    ("multi_label_sum_vector", lambda: pm.MultiLabelMarginCriterion(False),
     lambda r: r.standard_normal(5), lambda r: np.array([2, 4, -1, 0, 0]), ref_multi_label,
     {"avg": False}),
    ("ranking", pm.MarginRankingCriterion, lambda r: _pair(r, 6),
     lambda r: _sign(r, 6), ref_ranking, {}),
    ("ranking_margin_sum", lambda: pm.MarginRankingCriterion(0.3, False),
     lambda r: _pair(r, 6), lambda r: _sign(r, 6), ref_ranking,
     {"margin": 0.3, "avg": False}),
    ("l1_hinge_pos", pm.L1HingeEmbeddingCriterion, lambda r: _pair(r, 5),
     lambda r: np.array([1.0]), ref_l1_hinge, {}),
    ("l1_hinge_neg", lambda: pm.L1HingeEmbeddingCriterion(6.0), lambda r: _pair(r, 5),
     lambda r: np.array([-1.0]), ref_l1_hinge, {"margin": 6.0}),
    ("cosine_distance", pm.CosineDistanceCriterion, lambda r: r.standard_normal((4, 5)),
     lambda r: r.standard_normal((4, 5)), ref_cosine_distance, {}),
    ("cosine_distance_sum_vector", lambda: pm.CosineDistanceCriterion(False),
     lambda r: r.standard_normal(5), lambda r: r.standard_normal(5), ref_cosine_distance,
     {"avg": False}),
    ("dice", pm.DiceCoefficientCriterion, lambda r: r.uniform(0, 1, (4, 6)),
     lambda r: (r.uniform(size=(4, 6)) > 0.5) + 0.0, ref_dice, {}),
    ("dice_sum_eps", lambda: pm.DiceCoefficientCriterion(False, 0.5),
     lambda r: r.uniform(0, 1, 6), lambda r: (r.uniform(size=6) > 0.5) + 0.0, ref_dice,
     {"avg": False, "eps": 0.5}),
    ("softmax_with", pm.SoftmaxWithCriterion, lambda r: r.standard_normal((5, 4)),
     lambda r: np.array([0, 3, -1, 2, 1]), ref_softmax_with, {}),
    ("softmax_with_spatial", pm.SoftmaxWithCriterion,
     lambda r: r.standard_normal((2, 3, 3, 2)), _segmentation, ref_softmax_with, {}),
    ("softmax_with_ignore_full", lambda: pm.SoftmaxWithCriterion(2, "FULL"),
     lambda r: r.standard_normal((2, 3, 4)), lambda r: np.array([[0, 2, 1, 2], [2, 2, 0, 1]]),
     ref_softmax_with, {"ignore": 2, "mode": "FULL"}),
    ("softmax_with_batch", lambda: pm.SoftmaxWithCriterion(normalizeMode="BATCH_SIZE"),
     lambda r: r.standard_normal((2, 3, 4)), lambda r: r.integers(0, 3, (2, 4)),
     ref_softmax_with, {"mode": "BATCH_SIZE"}),
    ("softmax_with_none", lambda: pm.SoftmaxWithCriterion(normalizeMode="NONE"),
     lambda r: r.standard_normal((3, 4)), lambda r: r.integers(0, 4, 3),
     ref_softmax_with, {"mode": "NONE"}),
    ("categorical", pm.CategoricalCrossEntropy, lambda r: r.standard_normal((4, 5)),
     lambda r: np.eye(5)[[0, 4, 2, 2]], ref_categorical, {}),
    ("categorical_soft", pm.CategoricalCrossEntropy, lambda r: r.standard_normal((4, 5)),
     lambda r: _probs(r, 4, 5), ref_categorical, {}),
    ("l1_cost", pm.L1Cost, lambda r: r.standard_normal((3, 4)), lambda r: None,
     ref_l1_cost, {}),
    ("poisson", pm.PoissonCriterion, lambda r: r.uniform(0.1, 3, (3, 4)),
     lambda r: r.poisson(1.5, (3, 4)) + 0.0, ref_poisson, {}),
    ("mape", pm.MeanAbsolutePercentageCriterion, lambda r: r.standard_normal((3, 4)),
     lambda r: r.standard_normal((3, 4)), ref_mape, {}),
    ("msle", pm.MeanSquaredLogarithmicCriterion, lambda r: r.uniform(0.01, 3, (3, 4)),
     lambda r: r.uniform(-0.5, 3, (3, 4)), ref_msle, {}),
    ("kl", pm.KullbackLeiblerDivergenceCriterion, lambda r: 0.1 + 0.6 * _probs(r, 3, 4),
     lambda r: _probs(r, 3, 4), ref_kl, {}),
    ("kl_vector", pm.KullbackLeiblerDivergenceCriterion,
     lambda r: 0.1 + 0.5 * _probs(r, 1, 5)[0],
     lambda r: _probs(r, 1, 5)[0], ref_kl, {}),
    ("gaussian", pm.GaussianCriterion, lambda r: _pair(r, 3, 4),
     lambda r: r.standard_normal((3, 4)), ref_gaussian, {}),
]
IDS = [c[0] for c in CASES]


def _case(name, rng):
    _, make, mx, mt, ref, kw = CASES[IDS.index(name)]
    return make(), mx(rng), mt(rng), ref, kw


def _flat(t):
    return [a for x in t for a in _flat(x)] if isinstance(t, list) else [t]


def _cast(v, dtype):
    return [_cast(a, dtype) for a in v] if isinstance(v, list) else v.astype(dtype)


def _copy(v):
    return [np.array(a) for a in v] if isinstance(v, list) else np.array(v)


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
        np.testing.assert_allclose(ga, num, atol=tol, rtol=1e-5, err_msg=str(crit))


@pytest.mark.parametrize("name", IDS)
def test_finite_differences(name, rng):
    crit, x, t, _, _ = _case(name, rng)
    assert_loss_gradient(crit, x, t)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", IDS)
def test_matches_numpy(name, dtype, rng):
    crit, x, t, ref, kw = _case(name, rng)
    xc = _cast(x, dtype)
    tc = t.astype(dtype) if isinstance(t, np.ndarray) and t.dtype.kind == "f" else t
    # the reference sees the same (rounded) numbers, in float64
    loss, grad = ref(_cast(xc, np.float64),
                     tc.astype(np.float64) if tc is not None and tc.dtype.kind == "f" else tc,
                     **kw)
    got = crit.forward(xc, tc)
    g = crit.backward(xc, tc)
    for a in _flat(g):
        assert a.dtype == dtype
    # Losses and gradients are computed in double from the data; the row dot products of
    # the cosine distance and Dice run in the data's precision: a reduction of the row
    # length (at most every element).
    terms = sum(a.size for a in _flat(x))
    rtol, _ = reduction_tol(dtype, terms, 0)
    assert got == pytest.approx(loss, rel=rtol, abs=rtol)
    for a, b in zip(_flat(g), _flat(grad), strict=True):
        scale = float(np.abs(b).max(initial=0))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=str(crit))


def test_gradient_buffers_are_reused(rng):
    for name in IDS:
        crit, x, t, _, _ = _case(name, rng)
        crit.forward(x, t)
        first = [id(a) for a in _flat(crit.backward(x, t))]
        crit.forward(x, t)
        assert [id(a) for a in _flat(crit.backward(x, t))] == first, name


def test_strided_inputs_are_accepted(rng):
    x = rng.standard_normal((5, 4)).T
    y = _sign(rng, 4, 5)
    crit = pm.SoftMarginCriterion()
    assert crit.forward(x, y) == pytest.approx(ref_soft_margin(np.ascontiguousarray(x), y)[0])
    crit = pm.MultiMarginCriterion()
    labels = np.array([0, 4, 2, 1])
    assert crit.forward(x, [0, 4, 2, 1]) == pytest.approx(ref_multi_margin(x, labels)[0])


# -- the PyTorch oracle ---------------------------------------------------------------------

def _torch_cases(torch):
    F = torch.nn.functional

    def mape(a, t):
        return 100 * ((a - t).abs() / t.abs().clamp(1e-7)).mean()

    def msle(a, t):
        big = float(np.finfo(np.float64).max)
        return ((torch.log(t.clamp(1e-7, big) + 1) - torch.log(a.clamp(1e-7, big) + 1)) ** 2
                ).mean()

    def kl(a, t):
        b = a.shape[0] if a.dim() > 1 else 1
        return (t * torch.log(t.clamp(1e-8, 1) / a.clamp(1e-8, 1))).sum() / b

    def dice(a, t):
        num = 2 * (a * t).sum(-1) + 1.0
        return (1 - num / (a.sum(-1) + t.sum(-1) + 1.0)).mean()

    def softmax_valid(a, t):
        keep = int((t != -1).sum())
        return F.cross_entropy(a, t, ignore_index=-1, reduction="sum") / max(1, keep)

    def l1_hinge(a, b, t):
        d = (a - b).abs().sum()
        return d if t.item() != -1 else (6.0 - d).clamp_min(0)

    return {
        "soft_margin": lambda a, t: F.soft_margin_loss(a, t),
        "soft_margin_sum": lambda a, t: F.soft_margin_loss(a, t, reduction="sum"),
        "hinge": lambda a, t: F.hinge_embedding_loss(a, t),
        "hinge_margin_sum": lambda a, t: F.hinge_embedding_loss(a, t, 0.5, reduction="sum"),
        "multi_margin": lambda a, t: F.multi_margin_loss(a, t),
        "multi_margin_p2_weighted": lambda a, t: F.multi_margin_loss(
            a, t, p=2, margin=0.7, weight=torch.tensor([.5, 1, 2, 1.5], dtype=a.dtype),
            reduction="sum"),
        "multi_label": lambda a, t: F.multilabel_margin_loss(a, t),
        "multi_label_sum_vector": lambda a, t: F.multilabel_margin_loss(a, t, reduction="sum"),
        "ranking": lambda a, b, t: F.margin_ranking_loss(a, b, t, margin=1.0),
        "ranking_margin_sum": lambda a, b, t: F.margin_ranking_loss(a, b, t, margin=0.3,
                                                                    reduction="sum"),
        "l1_hinge_pos": l1_hinge, "l1_hinge_neg": l1_hinge,
        "cosine_distance": lambda a, t: F.cosine_embedding_loss(
            a, t, torch.ones(a.shape[0], dtype=a.dtype)),
        "dice": dice,
        "softmax_with": softmax_valid, "softmax_with_spatial": softmax_valid,
        "softmax_with_batch": lambda a, t: F.cross_entropy(a, t, reduction="sum") / 2,
        "softmax_with_none": lambda a, t: F.cross_entropy(a, t, reduction="sum"),
        "categorical": lambda a, t: F.cross_entropy(a, t),
        "categorical_soft": lambda a, t: F.cross_entropy(a, t),
        "l1_cost": lambda a, t: a.abs().sum(),
        "poisson": lambda a, t: F.poisson_nll_loss(a, t, log_input=False, eps=1e-7),
        "mape": mape, "msle": msle, "kl": kl, "kl_vector": kl,
        "gaussian": lambda m, v, t: F.gaussian_nll_loss(m, t, torch.exp(v), full=True,
                                                        reduction="sum"),
    }


# the cases whose loss torch has (or builds from its parts)
TORCH_IDS = [n for n in IDS if n not in ("multi_margin_padded", "multi_margin_vector",
                                         "softmax_with_ignore_full", "dice_sum_eps",
                                         "cosine_distance_sum_vector")]


@pytest.mark.parametrize("name", TORCH_IDS)
def test_agrees_with_torch(name, torch, rng):
    fn = _torch_cases(torch)[name]
    crit, x, t, _, _ = _case(name, rng)
    loss = crit.forward(x, t)
    grads = [np.array(g) for g in _flat(crit.backward(x, t))]
    tx = [torch.tensor(a, requires_grad=True) for a in _flat(x)]
    tt = None if t is None else torch.tensor(t)
    ref = fn(*tx, tt)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-9, abs=1e-12)
    for g, a in zip(grads, tx, strict=True):
        np.testing.assert_allclose(g, a.grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=name)


def test_margin_ranking_takes_a_table_target(rng):
    x = _pair(rng, 4)
    y = _sign(rng, 4)
    crit = pm.MarginRankingCriterion()
    assert crit.forward(x, [y]) == pytest.approx(crit.forward(x, y))
    np.testing.assert_array_equal(crit.backward(x, [y])[0], ref_ranking(x, y)[1][0])


# -- padding labels -------------------------------------------------------------------------

def test_multi_margin_padded_rows_count_for_nothing(rng):
    x = rng.standard_normal((4, 3))
    crit = pm.MultiMarginCriterion()
    kept = pm.MultiMarginCriterion().forward(x[[0, 2]], np.array([2, 1]))
    assert crit.forward(x, np.array([2, -1, 1, -1])) == pytest.approx(kept)
    g = crit.backward(x, np.array([2, -1, 1, -1]))
    assert not g[[1, 3]].any()
    assert crit.forward(x, np.array([-1] * 4)) == 0.0
    assert not crit.backward(x, np.array([-1] * 4)).any()
    other = pm.MultiMarginCriterion(paddingValue=2)
    assert other.forward(x, np.array([2, 0, 1, 2])) == pytest.approx(
        crit.forward(x, np.array([-1, 0, 1, -1])))


def test_softmax_with_ignores_minus_one_by_default_and_ignore_label_otherwise(rng):
    x = rng.standard_normal((4, 3))
    crit = pm.SoftmaxWithCriterion()
    assert crit.forward(x, np.array([0, -1, 2, -1])) == pytest.approx(
        crit.forward(x[[0, 2]], np.array([0, 2])))
    assert crit.forward(x, np.array([-1] * 4)) == 0.0
    assert not crit.backward(x, np.array([-1] * 4)).any()
    ignoring = pm.SoftmaxWithCriterion(ignoreLabel=1)
    assert ignoring.forward(x, np.array([0, 1, 2, 1])) == pytest.approx(
        crit.forward(x, np.array([0, -1, 2, -1])))
    with pytest.raises(ValueError, match=r"^SoftmaxWithCriterion\(.*\): target -1 \(row 1\) is out "
                                         r"of range \[0, 3\)"):
        ignoring.forward(x, np.array([0, -1, 2, 1]))


def test_multi_label_minus_one_ends_the_labels(rng):
    x = rng.standard_normal((2, 4))
    crit = pm.MultiLabelMarginCriterion()
    a = crit.forward(x, np.array([[1, 3, -1, 2], [0, -1, 1, 1]]))
    assert a == pytest.approx(crit.forward(x, np.array([[1, 3, -1, -1], [0, -1, -1, -1]])))
    assert crit.forward(x, np.full((2, 4), -1)) == 0.0


# -- save and load --------------------------------------------------------------------------

@pytest.mark.parametrize("name", IDS)
def test_round_trip(name, tmp_path, rng):
    crit, x, t, _, _ = _case(name, rng)
    loss = crit.forward(x, t)
    g = _copy(crit.backward(x, t))
    persistence.save_state(tmp_path / "c.pm", {"criterion": crit})
    back = persistence.load_state(tmp_path / "c.pm")["criterion"]
    assert type(back) is type(crit) and str(back) == str(crit)
    assert back.forward(x, t) == loss
    for a, b in zip(_flat(back.backward(x, t)), _flat(g), strict=True):
        np.testing.assert_array_equal(a, b)


# -- NaN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", IDS)
def test_a_nan_anywhere_in_the_input_gives_a_nan_loss(name, rng):
    crit, x, t, _, _ = _case(name, rng)
    if name == "softmax_with_ignore_full":
        t = np.where(t == 2, 0, t)  # a NaN at an ignored position is not read
    if name in ("softmax_with", "softmax_with_spatial", "multi_margin_padded"):
        t = np.where(t == -1, 0, t)  # nor at a padded row
    if name == "multi_label":
        t = t.copy()
        t[2, 0] = 1  # a row without labels reads nothing,
        t[3, 4] = -1  # nor one with every class for a label
    for a in _flat(x):
        for i in range(a.size):
            orig = a.flat[i]
            a.flat[i] = np.nan
            assert np.isnan(crit.forward(x, t)), (name, i)
            crit.backward(x, t)
            a.flat[i] = orig


def test_nan_gradients_as_torch(torch, rng):
    F = torch.nn.functional
    x = rng.standard_normal((3, 4))
    x[0, 1] = x[2, 3] = np.nan
    s = _sign(rng, 3, 4)
    labels = np.array([1, 3, 0])
    cases = [
        (pm.SoftMarginCriterion(), lambda a: F.soft_margin_loss(a, torch.tensor(s)), s),
        (pm.HingeEmbeddingCriterion(), lambda a: F.hinge_embedding_loss(a, torch.tensor(s)),
         s),
        (pm.MultiMarginCriterion(), lambda a: F.multi_margin_loss(a, torch.tensor(labels)),
         labels),
        (pm.SoftmaxWithCriterion(), lambda a: F.cross_entropy(a, torch.tensor(labels)),
         labels),
        (pm.L1Cost(), lambda a: a.abs().sum(), None),
    ]
    for crit, f, t in cases:
        loss, g = crit.forward(x, t), crit.backward(x, t).copy()
        tx = torch.tensor(x, requires_grad=True)
        ref = f(tx)
        ref.backward()
        assert np.isnan(loss), crit
        if isinstance(crit, pm.MultiMarginCriterion):
            assert not np.isnan(ref.item())  # torch's hides it: the loss here does not
        np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-7, err_msg=str(crit))


# -- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("make,input,target,error,match", [
    (pm.SoftMarginCriterion, np.zeros((2, 3)), np.ones((3, 2)), ValueError,
     r"target has shape \(3, 2\), expected the input's \(2, 3\)"),
    (pm.MultiMarginCriterion, np.zeros((3, 4)), np.array([0, 4, 1]), ValueError,
     r"target 4 \(row 1\) is out of range \[0, 4\)"),
    (pm.MultiMarginCriterion, np.zeros((3, 4)), np.array([0, 1]), ValueError,
     r"target has shape \(2,\), expected 3 class labels"),
    (pm.MultiMarginCriterion, np.zeros((3, 4)), np.array([0.5, 1, 1]), ValueError,
     r"target 0.5 is not a whole class label"),
    (pm.MultiMarginCriterion, np.zeros((2, 3, 4)), np.array([0, 1]), ValueError,
     r"input must be 1-D to 2-D, got 3-D"),
    (lambda: pm.MultiMarginCriterion(weights=np.ones(3)), np.zeros((2, 4)), np.array([0, 1]),
     ValueError, r"weights has shape \(3,\), expected \(4,\)"),
    (pm.MultiLabelMarginCriterion, np.zeros((2, 3)), np.array([[0, -2, 1], [0, 1, 2]]),
     ValueError, r"target -2 \(row 0, position 1\) is out of range \[-1, 3\)"),
    (pm.MultiLabelMarginCriterion, np.zeros((2, 3)), np.array([0, 1, 2]), ValueError,
     r"target has shape \(3,\), expected the input's \(2, 3\)"),
    (pm.MarginRankingCriterion, [np.zeros(3), np.zeros(4)], np.ones(3), ValueError,
     r"input\[1\] has shape \(4,\), expected input\[0\]'s \(3,\)"),
    (pm.MarginRankingCriterion, np.zeros(3), np.ones(3), TypeError,
     r"input must be a list \[x1, x2\], got ndarray"),
    (pm.L1HingeEmbeddingCriterion, [np.zeros(3), np.zeros(3)], np.ones(2), ValueError,
     r"target has shape \(2,\), expected one element"),
    (pm.CosineDistanceCriterion, np.zeros((2, 3)), np.zeros((2, 4)), ValueError,
     r"target has shape \(2, 4\), expected the input's \(2, 3\)"),
    (pm.DiceCoefficientCriterion, np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), ValueError,
     r"input must be 1-D to 2-D, got 3-D"),
    (pm.SoftmaxWithCriterion, np.zeros(3), np.array([0]), ValueError,
     r"input must be at least 2-D \(batch, classes, ...\), got 1-D"),
    (pm.SoftmaxWithCriterion, np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64), ValueError,
     r"target has shape \(2, 3\), expected \(2, 4\)"),
    (pm.SoftmaxWithCriterion, np.zeros((2, 3, 2)), np.array([[0, 1], [3, 0]]), ValueError,
     r"target 3 \(row 1, position 0\) is out of range \[0, 3\)"),
    (pm.CategoricalCrossEntropy, np.zeros((2, 3)), np.zeros((2, 4)), ValueError,
     r"target has shape \(2, 4\), expected the input's \(2, 3\)"),
    (pm.PoissonCriterion, np.zeros(3, np.int32), np.zeros(3), TypeError,
     r"input has dtype int32, expected float32 or float64"),
    (pm.GaussianCriterion, [np.zeros(3), np.zeros(2)], np.zeros(3), ValueError,
     r"logVar has shape \(2,\), expected the mean's \(3,\)"),
    (pm.GaussianCriterion, [np.zeros(3), np.zeros(3)], np.zeros(2), ValueError,
     r"target has shape \(2,\), expected the mean's \(3,\)"),
])
def test_refusals_name_the_criterion(make, input, target, error, match):
    crit = make()
    name = type(crit).__name__
    with pytest.raises(error, match=f"^{name}.*: {match}"):
        crit.forward(input, target)


@pytest.mark.parametrize("make,error,match", [
    (lambda: pm.MultiMarginCriterion(p=3), ValueError, r"MultiMarginCriterion: p must be 1 or 2"),
    (lambda: pm.MultiMarginCriterion(paddingValue=0.5), TypeError,
     r"MultiMarginCriterion: paddingValue must be an integer"),
    (lambda: pm.MultiMarginCriterion(weights=np.ones((2, 2))), ValueError,
     r"MultiMarginCriterion: weights must be a vector"),
    (lambda: pm.SoftmaxWithCriterion(normalizeMode="ALL"), ValueError,
     r"SoftmaxWithCriterion: normalizeMode must be one of FULL, VALID, BATCH_SIZE, NONE"),
    (lambda: pm.SoftmaxWithCriterion(ignoreLabel=1.5), TypeError,
     r"SoftmaxWithCriterion: ignoreLabel must be an integer"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_exported():
    for name in ["SoftMarginCriterion", "MultiMarginCriterion", "MultiLabelMarginCriterion",
                 "HingeEmbeddingCriterion", "L1Cost", "L1HingeEmbeddingCriterion",
                 "CosineDistanceCriterion", "MarginRankingCriterion", "SoftmaxWithCriterion",
                 "DiceCoefficientCriterion", "PoissonCriterion",
                 "MeanAbsolutePercentageCriterion", "MeanSquaredLogarithmicCriterion",
                 "KullbackLeiblerDivergenceCriterion", "CategoricalCrossEntropy",
                 "GaussianCriterion"]:
        cls = getattr(pm, name)
        assert issubclass(cls, pm.Criterion) and name in pm.__all__
        assert getattr(pm.criterion, name) is cls
