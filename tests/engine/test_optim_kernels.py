import numpy as np
import pytest
from pymodules.engine import optim as K

DTYPES = [np.float32, np.float64]


def _vecs(rng, n, dtype, k):
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first,nesterov", [(True, False), (False, False), (False, True)])
def test_sgd_matches_numpy(dtype, first, nesterov, rng):
    x, g, buf = _vecs(rng, 7, dtype, 3)
    x0, b0 = x.astype(np.float64), buf.astype(np.float64)
    damp = 0.0 if nesterov else 0.3
    K.sgd_update(x, g, buf, 0.1, 0.01, 0.9, damp, nesterov, first)
    gg = g + 0.01 * x0
    b = gg if first else 0.9 * b0 + (1 - damp) * gg
    step = gg + 0.9 * b if nesterov else b
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(buf, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(x, x0 - 0.1 * step, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_adagrad_rmsprop_adadelta_adamax_match_numpy(dtype, rng):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    x, g, m, v = _vecs(rng, 6, dtype, 4)
    v = np.abs(v)
    x0, m0, v0, g0 = (a.astype(np.float64) for a in (x, m, v, g))
    K.adam_update(x, g, m, v, 0.01, 0.9, 0.99, 1e-8, 0.001)
    m1, v1 = 0.9 * m0 + 0.1 * g0, 0.99 * v0 + 0.01 * g0 ** 2
    np.testing.assert_allclose(x, x0 * 0.999 - 0.01 * m1 / (np.sqrt(v1) + 1e-8), rtol=tol,
                               atol=tol)
    x, g, var = _vecs(rng, 6, dtype, 3)
    var = np.abs(var)
    x0, g0, var0 = (a.astype(np.float64) for a in (x, g, var))
    K.adagrad_update(x, g, var, 0.1, 0.02, 1e-10)
    gg = g0 + 0.02 * x0
    np.testing.assert_allclose(x, x0 - 0.1 * gg / (np.sqrt(var0 + gg ** 2) + 1e-10), rtol=tol,
                               atol=tol)
    x, g, ms = _vecs(rng, 6, dtype, 3)
    ms = np.abs(ms)
    x0, g0, ms0 = (a.astype(np.float64) for a in (x, g, ms))
    K.rmsprop_update(x, g, ms, 0.1, 0.9, 1e-8)
    ms1 = 0.9 * ms0 + 0.1 * g0 ** 2
    np.testing.assert_allclose(x, x0 - 0.1 * g0 / (np.sqrt(ms1) + 1e-8), rtol=tol, atol=tol)
    x, g, ms, md = _vecs(rng, 6, dtype, 4)
    ms, md = np.abs(ms), np.abs(md)
    x0, g0, ms0, md0 = (a.astype(np.float64) for a in (x, g, ms, md))
    K.adadelta_update(x, g, ms, md, 1.0, 0.9, 1e-6)
    ms1 = 0.9 * ms0 + 0.1 * g0 ** 2
    d = np.sqrt(md0 + 1e-6) / np.sqrt(ms1 + 1e-6) * g0
    np.testing.assert_allclose(x, x0 - d, rtol=tol, atol=tol)
    np.testing.assert_allclose(md, 0.9 * md0 + 0.1 * d ** 2, rtol=tol, atol=tol)
    x, g, m, u = _vecs(rng, 6, dtype, 4)
    u = np.abs(u)
    x0, g0, m0, u0 = (a.astype(np.float64) for a in (x, g, m, u))
    K.adamax_update(x, g, m, u, 0.02, 0.9, 0.999, 1e-38)
    m1, u1 = 0.9 * m0 + 0.1 * g0, np.maximum(0.999 * u0, np.abs(g0))
    np.testing.assert_allclose(x, x0 - 0.02 * m1 / u1, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipping(dtype, rng):
    g = rng.standard_normal(50).astype(dtype)
    ref = np.clip(g, -0.5, 0.3)
    K.clip_constant(g, -0.5, 0.3)
    np.testing.assert_array_equal(g, ref)
    g = rng.standard_normal(50).astype(dtype)
    norm = float(np.linalg.norm(g.astype(np.float64)))
    assert K.clip_l2_norm(g, 1.0) == pytest.approx(norm, rel=1e-6)
    assert np.linalg.norm(g.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    h = g.copy()
    K.clip_l2_norm(h, 10.0)  # under the bound: untouched
    np.testing.assert_array_equal(h, g)


def test_empty_vectors():
    e = np.empty(0)
    K.sgd_update(e, e.copy(), np.empty(0), 0.1, 0.0, 0.9, 0.0, False, True)
    K.adam_update(e, np.empty(0), np.empty(0), np.empty(0), 0.1, 0.9, 0.99, 1e-8, 0.0)
    assert K.clip_l2_norm(e, 1.0) == 0.0


def test_bad_arguments_raise():
    x = np.zeros(4)
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(4,\)"):
        K.sgd_update(x, np.zeros(3), None, 0.1, 0, 0, 0, False, False)
    with pytest.raises(TypeError, match="grad has dtype float32, expected float64"):
        K.sgd_update(x, np.zeros(4, np.float32), None, 0.1, 0, 0, 0, False, False)
    with pytest.raises(ValueError, match="x must be the flat 1-D parameter vector"):
        K.sgd_update(np.zeros((2, 2)), np.zeros((2, 2)), None, 0.1, 0, 0, 0, False, False)
    with pytest.raises(ValueError, match="x overlaps grad"):
        K.sgd_update(x, x, None, 0.1, 0, 0, 0, False, False)
    with pytest.raises(ValueError, match="m overlaps x"):
        K.adam_update(x, np.zeros(4), x, np.zeros(4), 0.1, 0.9, 0.9, 1e-8, 0)
    with pytest.raises(ValueError, match="needs a momentum buffer"):
        K.sgd_update(x, np.zeros(4), None, 0.1, 0, 0.9, 0, False, False)
    with pytest.raises(ValueError, match="not C-contiguous"):
        K.sgd_update(np.zeros(8)[::2], np.zeros(4), None, 0.1, 0, 0, 0, False, False)
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="x is read-only"):
        K.sgd_update(ro, np.zeros(4), None, 0.1, 0, 0, 0, False, False)
    with pytest.raises(ValueError, match="clipping range"):
        K.clip_constant(x, 1.0, -1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        K.clip_l2_norm(x, 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,first,nesterov", [(0.0, False, False), (0.9, True, False),
                                                     (0.9, False, False), (0.9, False, True)])
@pytest.mark.parametrize("n", [1, 1023, 1024, 2500])
def test_sgd_clearing_the_gradient_matches_the_plain_update(dtype, momentum, first, nesterov,
                                                            n, rng):
    x, g, buf = _vecs(rng, n, dtype, 3)
    x2, g2, buf2 = x.copy(), g.copy(), buf.copy()
    damp = 0.0 if nesterov else 0.3
    K.sgd_update(x, g, buf, 0.1, 0.01, momentum, damp, nesterov, first)
    K.sgd_update(x2, g2, buf2, 0.1, 0.01, momentum, damp, nesterov, first, True)
    np.testing.assert_array_equal(x2, x)  # the same update, bit for bit
    np.testing.assert_array_equal(buf2, buf)
    assert not g2.any() and g.any()  # cleared only when asked


def test_sgd_clearing_propagates_nan_and_refuses_a_read_only_gradient():
    x, g = np.zeros(5), np.array([1.0, np.nan, 0.0, -1.0, 2.0])
    K.sgd_update(x, g, None, 0.5, 0.0, 0.0, 0.0, False, False, True)
    assert np.isnan(x[1]) and x[0] == -0.5 and not np.nan_to_num(g, nan=1.0).any()
    ro = np.zeros(5)
    ro.flags.writeable = False
    K.sgd_update(np.zeros(5), ro, None, 0.1, 0, 0, 0, False, False)  # read, not cleared
    with pytest.raises(ValueError, match="grad is read-only"):
        K.sgd_update(np.zeros(5), ro, None, 0.1, 0, 0, 0, False, False, True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 1024, 3000])
def test_add_and_clear_matches_numpy(dtype, n, rng):
    total, part = _vecs(rng, n, dtype, 2)
    ref = total + part
    K.add_and_clear(total, part)
    np.testing.assert_array_equal(total, ref)
    assert not part.any()


def test_add_and_clear_refuses_bad_arguments():
    x = np.zeros(4)
    with pytest.raises(ValueError, match=r"part has shape \(3,\), expected \(4,\)"):
        K.add_and_clear(x, np.zeros(3))
    with pytest.raises(TypeError, match="part has dtype float32, expected float64"):
        K.add_and_clear(x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="part overlaps total"):
        K.add_and_clear(x, x)
    with pytest.raises(ValueError, match="total must be a flat 1-D vector"):
        K.add_and_clear(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="total must be a numpy.ndarray"):
        K.add_and_clear([0.0], np.zeros(1))
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="part is read-only"):
        K.add_and_clear(x, ro)


def _sgd_in_dtype(x, g, buf, clr, wd, mom, damp, nesterov, first):
    """SGD's step written out in the parameters' own precision, in the kernel's order."""
    t = x.dtype.type
    c, w, m, d1 = t(clr), t(wd), t(mom), t(1 - damp)  # the scalars rounded to the dtype
    gi = g + w * x
    if buf is None:
        return x - c * gi, None
    b = gi if first else m * buf + d1 * gi
    return x - (c * (gi + m * b) if nesterov else c * b), b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["plain", "first", "first nesterov", "momentum", "nesterov"])
@pytest.mark.parametrize("clear", [False, True])
def test_sgd_is_the_scalar_formula_bit_for_bit(dtype, case, clear, rng):
    """Every vector width the loop runs (and its tail: 1037 elements) gives the bits of the
    formula in the parameters' precision, with and without weight decay and dampening."""
    for wd, damp in [(0.0, 0.0), (0.01, 0.0), (0.0, 0.3), (0.02, 0.5)]:
        nesterov = "nesterov" in case
        if nesterov:
            damp = 0.0
        x, g, buf = _vecs(rng, 1037, dtype, 3)
        mom = 0.0 if case == "plain" else 0.9
        want_x, want_b = _sgd_in_dtype(x, g, None if case == "plain" else buf, 0.05, wd, mom,
                                       damp, nesterov, "first" in case)
        g0 = g.copy()
        K.sgd_update(x, g, None if case == "plain" else buf, 0.05, wd, mom, damp, nesterov,
                     "first" in case, clear)
        np.testing.assert_array_equal(x, want_x)
        if want_b is not None:
            np.testing.assert_array_equal(buf, want_b)
        np.testing.assert_array_equal(g, np.zeros_like(g) if clear else g0)
