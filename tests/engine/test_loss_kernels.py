"""The kernels of the second catalogue of criteria against NumPy, in float32 and float64,
with gradients written over NaN-filled buffers, empty sizes, and their refusals."""

import numpy as np
import pytest
from pymodules.engine import loss_class as C
from pymodules.engine import loss_elementwise as E
from pymodules.engine import loss_rows as R
from tolerance import reduction_tol

DTYPES = [np.float32, np.float64]
BIG = np.finfo(np.float64).max


def _tol(dtype, k):
    """Relative (and absolute) tolerance of a result of k float32 terms (1e-12 in float64)."""
    return reduction_tol(dtype, k, 0)[0]


# op: (input(rng), target(rng), f(x, y), f'(x, y)), with margin 0.5 for the hinge
ELEMENTWISE = {
    E.HINGE_EMBEDDING: (lambda r: r.uniform(-1, 2, (3, 4)),
                        lambda r: np.array([1.0, -1.0, 0.5])[r.integers(0, 3, (3, 4))],
                        lambda x, y: np.where(y != -1, x, 0) + np.where(y != 1,
                                                                        np.maximum(0, .5 - x), 0),
                        lambda x, y: (y != -1) + 0.0 - ((y != 1) & (.5 - x >= 0))),
    E.L1_COST: (lambda r: r.standard_normal((3, 4)), lambda r: None,
                lambda x, y: np.abs(x), lambda x, y: np.sign(x)),
    E.POISSON: (lambda r: r.uniform(0.1, 3, (3, 4)), lambda r: r.uniform(0, 4, (3, 4)),
                lambda x, y: x - y * np.log(x + 1e-7), lambda x, y: 1 - y / (x + 1e-7)),
    E.PERCENTAGE: (lambda r: r.standard_normal((3, 4)),
                   lambda r: np.r_[0.0, r.standard_normal(11)].reshape(3, 4),
                   lambda x, y: 100 * np.abs(x - y) / np.clip(np.abs(y), 1e-7, BIG),
                   lambda x, y: 100 * np.sign(x - y) / np.clip(np.abs(y), 1e-7, BIG)),
    E.SQUARED_LOG: (lambda r: np.r_[-1.0, r.uniform(0, 3, 11)].reshape(3, 4),
                    lambda r: r.uniform(-1, 3, (3, 4)),
                    lambda x, y: (np.log(np.clip(y, 1e-7, BIG) + 1)
                                  - np.log(np.clip(x, 1e-7, BIG) + 1)) ** 2,
                    lambda x, y: np.where(x >= 1e-7, -2 * (np.log(np.clip(y, 1e-7, BIG) + 1)
                                                           - np.log(np.clip(x, 1e-7, BIG) + 1))
                                          / (np.clip(x, 1e-7, BIG) + 1), 0)),
    E.KL_DIVERGENCE: (lambda r: np.r_[0.0, 1.5, r.uniform(0.05, 1, 10)].reshape(3, 4),
                      lambda r: np.r_[r.uniform(0, 1, 11), 0.0].reshape(3, 4),
                      lambda x, y: y * (np.log(np.clip(y, 1e-8, 1)) - np.log(np.clip(x, 1e-8, 1))),
                      lambda x, y: np.where((x >= 1e-8) & (x <= 1), -y / np.clip(x, 1e-8, 1),
                                            0)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", [E.SUM, E.MEAN, E.PER_ROW])
@pytest.mark.parametrize("op", sorted(ELEMENTWISE))
def test_elementwise_matches_numpy(op, norm, dtype, rng):
    mx, my, f, df = ELEMENTWISE[op]
    x64, y64 = mx(rng), my(rng)
    x = x64.astype(dtype)
    y = None if y64 is None else y64.astype(dtype)
    xd = x.astype(np.float64)
    yd = None if y is None else y.astype(np.float64)
    div = {E.SUM: 1, E.MEAN: x.size, E.PER_ROW: x.shape[0]}[norm]
    loss = E.elementwise_update_output(op, x, y, 0.5, norm)
    terms = f(xd, yd) / div
    assert loss == pytest.approx(terms.sum(), rel=_tol(dtype, x.size), abs=_tol(dtype, x.size))
    g = np.full_like(x, np.nan)
    E.elementwise_update_grad_input(op, x, y, g, 0.5, norm)
    tol = _tol(dtype, x.size)
    np.testing.assert_allclose(g, df(xd, yd) / div, rtol=tol, atol=tol)


def test_elementwise_per_row_of_a_vector_divides_by_one():
    x = np.array([0.2, 0.3, 0.5])
    assert E.elementwise_update_output(E.KL_DIVERGENCE, x, x.copy(), 0, E.PER_ROW) == 0.0
    assert E.elementwise_update_output(E.L1_COST, x, None, 0, E.PER_ROW) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size_average", [False, True])
def test_soft_margin_matches_numpy(size_average, dtype, rng):
    x = (3 * rng.standard_normal((3, 4))).astype(dtype)
    y = np.array([1.0, -1.0, 0.5])[rng.integers(0, 3, (3, 4))].astype(dtype)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    n = x.size if size_average else 1
    tol = _tol(dtype, x.size)
    b = np.full_like(x, np.nan)
    assert E.soft_margin_update_output(x, y, b, size_average) == pytest.approx(
        np.log1p(np.exp(-yd * xd)).sum() / n, rel=tol)
    g = np.full_like(x, np.nan)
    E.soft_margin_update_grad_input(x, y, g, size_average)
    np.testing.assert_allclose(g, -yd / (1 + np.exp(yd * xd)) / n, rtol=tol, atol=tol)


def test_soft_margin_does_not_overflow():
    x = np.array([-800.0, 800.0, -800.0, 800.0])
    y = np.array([1.0, 1.0, -1.0, -1.0])
    assert E.soft_margin_update_output(x, y, np.empty(4), False) == pytest.approx(1600.0)
    g = np.empty(4)
    E.soft_margin_update_grad_input(x, y, g, False)
    np.testing.assert_array_equal(g, [-1, 0, 0, 1])
    with pytest.raises(ValueError, match="buffer overlaps input"):
        E.soft_margin_update_output(x, y, x, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_matches_numpy(dtype, rng):
    mu, lv, x = (rng.standard_normal((3, 4)).astype(dtype) for _ in range(3))
    m, v, t = (a.astype(np.float64) for a in (mu, lv, x))
    ref = (0.5 * v + 0.5 * np.log(2 * np.pi) + 0.5 * (t - m) ** 2 / np.exp(v)).sum()
    assert E.gaussian_update_output(mu, lv, x) == pytest.approx(ref, rel=_tol(dtype, mu.size))
    gm, gl = np.full_like(mu, np.nan), np.full_like(mu, np.nan)
    E.gaussian_update_grad_input(mu, lv, x, gm, gl)
    np.testing.assert_allclose(gm, (m - t) / np.exp(v), rtol=_tol(dtype, mu.size))
    np.testing.assert_allclose(gl, 0.5 - 0.5 * (t - m) ** 2 / np.exp(v), rtol=_tol(dtype, mu.size),
                               atol=_tol(dtype, mu.size))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size_average", [False, True])
def test_rows_match_numpy(dtype, size_average, rng):
    x = rng.uniform(0.1, 1, (4, 6)).astype(dtype)
    y = rng.uniform(0, 1, (4, 6)).astype(dtype)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    n = 4 if size_average else 1
    xx = (xd * xd).sum(1, keepdims=True) + 1e-12
    yy = (yd * yd).sum(1, keepdims=True) + 1e-12
    cos = (xd * yd).sum(1, keepdims=True) / np.sqrt(xx * yy)
    tol = _tol(dtype, x.size)
    assert R.cosine_distance_update_output(x, y, size_average) == pytest.approx(
        (1 - cos).sum() / n, rel=tol, abs=tol)
    g = np.full_like(x, np.nan)
    R.cosine_distance_update_grad_input(x, y, g, size_average)
    np.testing.assert_allclose(g, (cos / xx * xd - yd / np.sqrt(xx * yy)) / n, rtol=tol,
                               atol=tol)
    num = 2 * (xd * yd).sum(1, keepdims=True) + 0.5
    den = xd.sum(1, keepdims=True) + yd.sum(1, keepdims=True) + 0.5
    assert R.dice_update_output(x, y, 0.5, size_average) == pytest.approx(
        (1 - num / den).sum() / n, rel=tol, abs=tol)
    g = np.full_like(x, np.nan)
    R.dice_update_grad_input(x, y, g, 0.5, size_average)
    np.testing.assert_allclose(g, (num / den ** 2 - 2 * yd / den) / n, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairs_match_numpy(dtype, rng):
    a, b = (rng.standard_normal((2, 5)).astype(dtype) for _ in range(2))
    y = np.where(rng.uniform(size=(2, 5)) > .5, 1, -1).astype(dtype)
    ad, bd, yd = (v.astype(np.float64) for v in (a, b, y))
    d = 0.4 - yd * (ad - bd)
    tol = _tol(dtype, a.size)
    assert R.margin_ranking_update_output(a, b, y, 0.4, True) == pytest.approx(
        np.maximum(0, d).sum() / 10, rel=tol)
    g1, g2 = np.full_like(a, np.nan), np.full_like(a, np.nan)
    R.margin_ranking_update_grad_input(a, b, y, g1, g2, 0.4, True)
    np.testing.assert_array_equal(g1, (-yd * (d >= 0) / 10).astype(dtype))
    np.testing.assert_array_equal(g2, -g1)
    dist = np.abs(ad - bd).sum()
    for label, margin, loss, c in [(1, 1.0, dist, 1), (-1, dist + 1, 1.0, -1),
                                   (-1, dist - 1, 0.0, 0)]:
        t = np.array([label], dtype)
        assert R.l1_hinge_embedding_update_output(a, b, t, margin) == pytest.approx(
            loss, rel=tol, abs=tol)
        R.l1_hinge_embedding_update_grad_input(a, b, t, g1, g2, margin)
        np.testing.assert_array_equal(g1, c * np.sign(ad - bd))
        np.testing.assert_array_equal(g2, -g1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_matches_numpy(p, dtype, rng):
    x = rng.standard_normal((5, 4)).astype(dtype)
    t = np.array([0, 3, -1, 1, 2])
    w = rng.uniform(0.5, 2, 4).astype(dtype)
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    loss, g = 0.0, np.zeros((5, 4))
    for i, y in enumerate(t):
        if y < 0:
            continue
        z = np.maximum(0, 0.8 - xd[i, y] + xd[i])
        z[y] = 0
        loss += wd[y] * (z ** p).sum()
        g[i] = wd[y] * (z > 0) * (1 if p == 1 else 2 * z)
        g[i, y] = -g[i].sum()
    tol = _tol(dtype, x.size)
    assert C.multi_margin_update_output(x, t, w, p, 0.8, -1, True) == pytest.approx(
        loss / 4 / 4, rel=tol)
    got = np.full_like(x, np.nan)
    C.multi_margin_update_grad_input(x, t, got, w, p, 0.8, -1, True)
    np.testing.assert_allclose(got, g / 16, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_label_margin_matches_numpy(dtype, rng):
    x = rng.standard_normal((3, 4)).astype(dtype)
    t = np.array([[2, 0, -1, 3], [-1, 1, 1, 1], [1, 1, 3, -1]])
    xd = x.astype(np.float64)
    loss, g = 0.0, np.zeros((3, 4))
    for i, labels in enumerate([[2, 0], [], [1, 1, 3]]):
        for j in labels:
            for d in set(range(4)) - set(labels):
                z = 1 - xd[i, j] + xd[i, d]
                loss += max(0.0, z)
                g[i, j] -= z > 0
                g[i, d] += z > 0
    flags = np.empty(4, dtype)
    tol = _tol(dtype, x.size)
    assert C.multi_label_margin_update_output(x, t, flags, False) == pytest.approx(
        loss / 4, rel=tol)
    got = np.full_like(x, np.nan)
    C.multi_label_margin_update_grad_input(x, t, got, flags, False)
    np.testing.assert_allclose(got, g / 4, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,norm", [(C.FULL, 8), (C.VALID, 6), (C.BATCH_SIZE, 2),
                                       (C.NONE, 1)])
def test_softmax_with_matches_numpy(mode, norm, dtype, rng):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    t = np.array([[0, 2, 5, 1], [5, 2, 2, 0]])
    xd = x.astype(np.float64)
    lp = xd - np.log(np.exp(xd).sum(1, keepdims=True))
    keep = t != 5
    lab = np.where(keep, t, 0)
    picked = np.take_along_axis(lp, lab[:, None], 1)[:, 0]
    onehot = np.zeros_like(xd)
    np.put_along_axis(onehot, lab[:, None], 1, 1)
    tol = _tol(dtype, x.size)
    scratch = np.full_like(x, np.nan)
    assert C.softmax_with_update_output(x, t, scratch, 5, mode) == pytest.approx(
        -(picked * keep).sum() / norm, rel=tol)
    g = np.full_like(x, np.nan)
    C.softmax_with_update_grad_input(x, t, g, 5, mode)
    np.testing.assert_allclose(g, (np.exp(lp) - onehot) * keep[:, None] / norm, rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(scratch, lp, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_cross_entropy_matches_numpy(dtype, rng):
    x = rng.standard_normal((3, 5)).astype(dtype)
    t = rng.dirichlet(np.ones(5), 3).astype(dtype)
    t[1] *= 2  # rows that do not sum to one are taken as they are
    xd, td = x.astype(np.float64), t.astype(np.float64)
    lp = xd - np.log(np.exp(xd).sum(1, keepdims=True))
    tol = _tol(dtype, x.size)
    assert C.categorical_cross_entropy_update_output(x, t, np.empty_like(x)) == pytest.approx(
        -(td * lp).sum() / 3, rel=tol)
    g = np.full_like(x, np.nan)
    C.categorical_cross_entropy_update_grad_input(x, t, g)
    np.testing.assert_allclose(g, (np.exp(lp) * td.sum(1, keepdims=True) - td) / 3, rtol=tol,
                               atol=tol)


def test_empty_sizes():
    x = np.empty((0, 3))
    g = np.empty((0, 3))
    labels = np.empty(0, np.int64)
    assert E.elementwise_update_output(E.POISSON, x, x.copy(), 0, E.MEAN) == 0.0
    E.elementwise_update_grad_input(E.POISSON, x, x.copy(), g, 0, E.MEAN)
    assert E.gaussian_update_output(x, x.copy(), x.copy()) == 0.0
    assert R.cosine_distance_update_output(x, x.copy(), True) == 0.0
    R.dice_update_grad_input(x, x.copy(), g, 1.0, True)
    assert R.margin_ranking_update_output(x, x.copy(), x.copy(), 1.0, True) == 0.0
    assert C.multi_margin_update_output(x, labels, None, 1, 1.0, -1, True) == 0.0
    C.multi_margin_update_grad_input(x, labels, g, None, 1, 1.0, -1, True)
    assert C.multi_label_margin_update_output(x, np.empty((0, 3), np.int64), np.empty(3),
                                              True) == 0.0
    assert C.softmax_with_update_output(np.empty((0, 3, 2)), labels, np.empty((0, 3, 2)), -1,
                                        C.VALID) == 0.0
    assert C.softmax_with_update_output(np.empty((2, 0)), np.full(2, -1), np.empty((2, 0)), -1,
                                        C.VALID) == 0.0
    assert C.categorical_cross_entropy_update_output(x, x.copy(), g) == 0.0
    # rows of no elements: cosine distance 1 - 0, Dice 1 - eps / eps
    assert R.cosine_distance_update_output(np.empty((2, 0)), np.empty((2, 0)), False) == 2.0
    assert R.dice_update_output(np.empty((2, 0)), np.empty((2, 0)), 1.0, False) == 0.0


def test_refusals():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown elementwise loss 99"):
        E.elementwise_update_output(99, x, x, 0, E.SUM)
    with pytest.raises(ValueError, match="unknown normalisation 7"):
        E.elementwise_update_output(E.POISSON, x, x, 0, 7)
    with pytest.raises(TypeError, match="target has dtype float32, expected float64"):
        E.elementwise_update_output(E.POISSON, x, x.astype(np.float32), 0, E.SUM)
    with pytest.raises(ValueError, match="gradInput overlaps input"):
        E.elementwise_update_grad_input(E.POISSON, x, x.copy(), x, 0, E.SUM)
    with pytest.raises(ValueError, match="gradInput is read-only"):
        ro = np.zeros((2, 3))
        ro.flags.writeable = False
        E.elementwise_update_grad_input(E.POISSON, x, x.copy(), ro, 0, E.SUM)
    with pytest.raises(ValueError, match="input is not C-contiguous"):
        E.elementwise_update_output(E.POISSON, np.zeros((3, 2)).T, x, 0, E.SUM)
    with pytest.raises(ValueError, match=r"gradInput has shape \(3, 2\), expected \(2, 3\)"):
        E.elementwise_update_grad_input(E.POISSON, x, x.copy(), np.zeros((3, 2)), 0, E.SUM)
    with pytest.raises(ValueError, match="gradMean overlaps gradLogVar"):
        g = np.zeros((2, 3))
        E.gaussian_update_grad_input(x, x.copy(), x.copy(), g, g)
    with pytest.raises(ValueError, match=r"gradInput\[1\] overlaps input\[0\]"):
        R.margin_ranking_update_grad_input(x, x.copy(), x.copy(), np.zeros((2, 3)), x, 1, True)
    with pytest.raises(ValueError, match="input must be 1-D to 2-D, got 3-D"):
        R.dice_update_output(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), 1.0, True)
    with pytest.raises(TypeError, match="target must be an int64 numpy.ndarray"):
        C.multi_margin_update_output(x, np.zeros(2), None, 1, 1.0, -1, True)
    with pytest.raises(ValueError, match="p is 3, expected 1 or 2"):
        C.multi_margin_update_output(x, np.zeros(2, np.int64), None, 3, 1.0, -1, True)
    with pytest.raises(ValueError, match=r"isTarget has shape \(2,\), expected \(3,\)"):
        C.multi_label_margin_update_output(x, np.zeros((2, 3), np.int64), np.empty(2), True)
    with pytest.raises(ValueError, match="unknown normalize mode 9"):
        C.softmax_with_update_output(x, np.zeros(2, np.int64), x.copy(), -1, 9)
    with pytest.raises(ValueError, match="logProb overlaps input"):
        C.softmax_with_update_output(x, np.zeros(2, np.int64), x, -1, C.VALID)
    with pytest.raises(ValueError, match="gradInput overlaps target"):
        t = np.zeros((2, 3))
        C.categorical_cross_entropy_update_grad_input(x, t, t)
