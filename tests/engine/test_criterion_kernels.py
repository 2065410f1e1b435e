import numpy as np
import pytest
from pymodules.engine import criterion as K
from tolerance import reduction_tol

DTYPES = [np.float32, np.float64]

REFS = {
    K.MSE: (lambda x, y: (x - y) ** 2, lambda x, y: 2 * (x - y)),
    K.ABS: (lambda x, y: np.abs(x - y), lambda x, y: np.sign(x - y)),
    K.SMOOTH_L1: (lambda x, y: np.where(np.abs(x - y) < 1, 0.5 * (x - y) ** 2,
                                        np.abs(x - y) - 0.5),
                  lambda x, y: np.clip(x - y, -1, 1)),
    K.MARGIN: (lambda x, y: np.maximum(0, 1 - x * y), lambda x, y: np.where(1 - x * y > 0, -y, 0)),
}


def _approx(terms, dtype, tol64):
    """The sum of ``terms`` (float64), as a float32 reduction of them may give it; float64 to
    ``tol64`` relative."""
    if dtype != np.float32:
        return pytest.approx(terms.sum(), rel=tol64)
    rtol, atol = reduction_tol(dtype, terms.size, np.abs(terms).sum())
    return pytest.approx(terms.sum(), rel=rtol, abs=float(atol))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", sorted(REFS))
@pytest.mark.parametrize("size_average", [False, True])
def test_pointwise_matches_numpy(dtype, op, size_average, rng):
    x = (2 * rng.standard_normal((3, 4))).astype(dtype)
    y = rng.standard_normal((3, 4)).astype(dtype)
    f, df = REFS[op]
    div = x.size if size_average else 1
    tol = 1e-5 if dtype == np.float32 else 1e-12
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    loss = K.pointwise_update_output(op, x, y, None, 1.0, size_average)
    assert loss == _approx(f(xd, yd) / div, dtype, tol)
    g = np.empty_like(x)
    K.pointwise_update_grad_input(op, x, y, g, None, 1.0, size_average)
    np.testing.assert_allclose(g, df(xd, yd) / div, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_nll_and_cross_entropy_match_numpy(dtype, rng):
    x = rng.standard_normal((5, 3)).astype(dtype)
    t = rng.integers(0, 3, 5)
    w = rng.uniform(0.5, 2, 3).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    ref = -(w[t] * x[np.arange(5), t]).sum() / w[t].sum()
    nll = pytest.approx(ref, rel=tol)
    if dtype == np.float32:  # a ratio of two 5-term sums: their relative errors add
        terms = (w[t] * x[np.arange(5), t]).astype(np.float64)
        _, rel = reduction_tol(dtype, 5, abs(terms).sum() / abs(terms.sum()) + 1)
        nll = pytest.approx(ref, rel=float(rel))
    assert K.class_nll_update_output(x, t, w, -100, True, True) == nll
    lp = np.empty_like(x)
    xd = x.astype(np.float64)
    lsm = xd - np.log(np.exp(xd).sum(1, keepdims=True))
    loss = K.cross_entropy_update_output(x, t, lp, None, -100, True)
    assert loss == _approx(-lsm[np.arange(5), t] / 5, dtype, tol)
    np.testing.assert_allclose(lp, lsm, rtol=tol, atol=tol)
    g = np.empty_like(x)
    K.cross_entropy_update_grad_input(lp, t, g, None, -100, True)
    np.testing.assert_allclose(g, (np.exp(lsm) - np.eye(3)[t]) / 5, rtol=tol, atol=tol)


def test_empty_batch():
    x = np.empty((0, 3))
    t = np.empty(0, np.int64)
    assert K.class_nll_update_output(x, t, None, -100, True, True) == 0.0
    assert K.pointwise_update_output(K.MSE, x, x.copy(), None, 0.0, True) == 0.0
    g = np.empty((0, 3))
    K.class_nll_update_grad_input(x, t, g, None, -100, True, True)


def test_bad_arguments_raise():
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="target must be an int64"):
        K.class_nll_update_output(x, np.zeros(2), None, -100, True, True)
    with pytest.raises(ValueError, match=r"target 3 \(row 0\) is out of range \[0, 3\)"):
        K.class_nll_update_output(x, np.array([3, 0]), None, -100, True, True)
    with pytest.raises(ValueError, match="gradInput overlaps input"):
        K.pointwise_update_grad_input(K.MSE, x, x.copy(), x, None, 0, True)
    with pytest.raises(TypeError, match="target has dtype float32, expected float64"):
        K.pointwise_update_output(K.MSE, x, np.zeros((2, 3), np.float32), None, 0, True)
    with pytest.raises(ValueError, match="unknown elementwise loss 99"):
        K.pointwise_update_output(99, x, x, None, 0, True)
    with pytest.raises(ValueError, match=r"weights has shape \(2,\), expected \(3,\)"):
        K.class_nll_update_output(x, np.array([0, 1]), np.ones(2), -100, True, True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wshape", [(4,), (3, 4), (2, 3, 4)])
def test_pointwise_weights_of_a_trailing_shape_repeat_over_the_leading_axes(dtype, wshape, rng):
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    y = rng.standard_normal((2, 3, 4)).astype(dtype)
    w = rng.uniform(0.5, 2, wshape).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert K.pointwise_update_output(K.MSE, x, y, w, 0, False) == pytest.approx(
        float(np.sum(np.broadcast_to(w, x.shape) * (x - y) ** 2)), rel=tol)
    g = np.full_like(x, np.nan)
    K.pointwise_update_grad_input(K.MSE, x, y, g, w, 0, False)
    np.testing.assert_allclose(g, 2 * w * (x - y), rtol=tol)


@pytest.mark.parametrize("wshape", [(3,), (2, 4), (1, 2, 3, 4), ()])
def test_pointwise_weights_of_another_shape_are_refused(wshape):
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"weights has shape .*, expected the trailing part "
                                         r"of input's \(2, 3, 4\) \(such as the per-sample "
                                         r"\(3, 4\)\)"):
        K.pointwise_update_output(K.MSE, x, x, np.ones(wshape), 0, True)
    with pytest.raises(ValueError, match="expected the trailing part"):
        K.pointwise_update_grad_input(K.MSE, x, x, np.empty_like(x), np.ones(wshape), 0, True)
