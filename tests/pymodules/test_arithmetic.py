import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

DTYPES = [np.float32, np.float64]


# -- AddConstant, MulConstant, Negative ----------------------------------------------------

def _affine_cases():
    return [
        (lambda d: pm.AddConstant(2.5, dtype=d), lambda x: x + 2.5, 1.0),
        (lambda d: pm.MulConstant(-1.5, dtype=d), lambda x: x * -1.5, -1.5),
        (lambda d: pm.MulConstant(0.0, dtype=d), lambda x: x * 0.0, 0.0),
        (lambda d: pm.Negative(dtype=d), lambda x: -x, -1.0),
    ]


@pytest.mark.parametrize(("make", "f", "slope"), _affine_cases())
@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_layers_against_numpy(make, f, slope, dtype, rng):
    m = make(dtype)
    x = rng.standard_normal((3, 4, 2)).astype(dtype)
    g = rng.standard_normal((3, 4, 2)).astype(dtype)
    np.testing.assert_array_equal(m.forward(x), f(x))
    np.testing.assert_array_equal(m.backward(x, g), (g * np.asarray(slope, dtype)))
    assert m.output.dtype == dtype and m.gradInput.dtype == dtype


@pytest.mark.parametrize(("make", "f", "slope"), _affine_cases())
def test_affine_layers_jacobian(make, f, slope, rng):
    assert_jacobian(make(np.float64), rng.standard_normal((2, 3)))


def test_affine_layers_match_torch(torch, rng):
    from torch_oracle import assert_matches_torch

    x, g = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for m, f in ((pm.AddConstant(-0.5, dtype=np.float64), lambda t: t + -0.5),
                 (pm.MulConstant(3.0, dtype=np.float64), lambda t: t * 3.0),
                 (pm.Negative(dtype=np.float64), torch.neg)):
        assert_matches_torch(m, f, x, g, rtol=0, atol=0)


def test_negative_keeps_the_sign_of_zero_and_nan():
    x = np.array([0.0, -0.0, np.nan, np.inf], np.float32)
    y = pm.Negative().forward(x)
    assert np.signbit(y[0]) and not np.signbit(y[1]) and np.isnan(y[2]) and y[3] == -np.inf


@pytest.mark.parametrize(("make", "f"), [
    (lambda: pm.AddConstant(2.0, inplace=True, dtype=np.float64), lambda x: x + 2.0),
    (lambda: pm.MulConstant(4.0, inplace=True, dtype=np.float64), lambda x: x * 4.0),
    (lambda: pm.Negative(inplace=True, dtype=np.float64), lambda x: -x),
])
def test_in_place_overwrites_and_add_mul_restore_the_input(make, f, rng):
    m = make()
    x0 = rng.standard_normal((3, 4))
    x, g = x0.copy(), rng.standard_normal((3, 4))
    g0 = g.copy()
    y = m.forward(x)
    assert y is x
    np.testing.assert_array_equal(x, f(x0))
    gi = m.backward(x, g)
    assert gi is g
    slope = f(np.ones(1))[0] - f(np.zeros(1))[0]
    np.testing.assert_array_equal(gi, g0 * slope)
    if not isinstance(m, pm.Negative):  # BigDL undoes the change to the input
        np.testing.assert_allclose(x, x0, rtol=1e-15, atol=1e-15)


def test_affine_constructor_refusals():
    with pytest.raises(ValueError, match="in place needs a scalar other than 0"):
        pm.MulConstant(0.0, inplace=True)
    assert str(pm.AddConstant(1.5)).endswith("(1.5)")
    assert str(pm.MulConstant(2, True)).endswith("(2.0, inplace)")
    assert_refusal_names_the_module(lambda: pm.AddConstant(1.0), np.ones(3),
                                    "input has dtype float64, expected float32", TypeError)


# -- CDivTable, CMinTable, CAveTable -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_cdiv_table(dtype, rng):
    a = rng.standard_normal((3, 4)).astype(dtype)
    b = (rng.uniform(0.5, 2, (3, 4)) * rng.choice([-1, 1], (3, 4))).astype(dtype)
    g = rng.standard_normal((3, 4)).astype(dtype)
    m = pm.CDivTable()
    np.testing.assert_array_equal(m.forward([a, b]), a / b)
    ga, gb = m.backward([a, b], g)
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(ga, g / b, rtol=rtol)
    np.testing.assert_allclose(gb, -g * a / (b * b), rtol=3 * rtol)
    assert m.output.dtype == dtype


def test_table_jacobians(rng):
    a, b, c = (rng.standard_normal((2, 3)) for _ in range(3))
    b = np.sign(b) * (np.abs(b) + 0.5)
    assert_jacobian(pm.CDivTable(), [a, b])
    assert_jacobian(pm.CMinTable(), [a, b, c])
    assert_jacobian(pm.CAveTable(), [a, b, c])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cmin_table(dtype, rng):
    xs = [rng.integers(0, 3, (4, 5)).astype(dtype) for _ in range(3)]  # ties
    g = rng.standard_normal((4, 5)).astype(dtype)
    m = pm.CMinTable()
    y = m.forward(xs)
    np.testing.assert_array_equal(y, np.minimum.reduce(xs))
    gi = m.backward(xs, g)
    first = np.argmin(np.stack(xs), axis=0)
    for i in range(3):
        np.testing.assert_array_equal(gi[i], np.where(first == i, g, 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cave_table(dtype, rng):
    xs = [rng.standard_normal((2, 3, 4)).astype(dtype) for _ in range(3)]
    g = rng.standard_normal((2, 3, 4)).astype(dtype)
    m = pm.CAveTable()
    rtol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(m.forward(xs), (xs[0] + xs[1] + xs[2]) / 3, rtol=rtol,
                               atol=rtol)
    gi = m.backward(xs, g)
    assert len(gi) == 3
    for a in gi:
        np.testing.assert_allclose(a, g / 3, rtol=rtol)
    inplace = pm.CAveTable(inplace=True)
    before = [x.copy() for x in xs]
    np.testing.assert_array_equal(inplace.forward(xs), m.output)
    assert all(np.array_equal(x, y) for x, y in zip(xs, before, strict=True))


def test_tables_match_torch(torch, rng):
    a, b, c = (rng.standard_normal((3, 4)) for _ in range(3))
    a[0, 0] = np.nan
    b[1, 1] = np.nan
    g = rng.standard_normal((3, 4))
    ta, tb, tc = (torch.from_numpy(v.copy()).requires_grad_() for v in (a, b, c))
    m = pm.CMinTable(dtype=np.float64)
    y, gi = m.forward([a, b, c]).copy(), [v.copy() for v in m.backward([a, b, c], g)]
    ty = torch.minimum(torch.minimum(ta, tb), tc)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    # torch gives a NaN's gradient to every operand it meets (and splits ties); ours, as
    # CMaxTable's and BigDL's, goes to one input: the first NaN
    clean = ~(np.isnan(a) | np.isnan(b))
    for ours, t in zip(gi, (ta, tb, tc), strict=True):
        np.testing.assert_array_equal(ours[clean], t.grad.numpy()[clean])
    assert gi[0][0, 0] == g[0, 0] and gi[1][1, 1] == g[1, 1]
    assert gi[1][0, 0] == gi[2][0, 0] == gi[0][1, 1] == gi[2][1, 1] == 0
    ta.grad = tb.grad = None
    m = pm.CDivTable(dtype=np.float64)
    y, (g0, g1) = m.forward([a, b]).copy(), m.backward([a, b], g)
    (ta / tb).backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, (ta / tb).detach().numpy(), rtol=1e-15)
    np.testing.assert_allclose(g0, ta.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(g1, tb.grad.numpy(), rtol=1e-14)


def test_table_refusals_name_the_module(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    assert_refusal_names_the_module(lambda: pm.CDivTable(), [a, b],
                                    r"input 1 has shape \(2, 4\), expected \(2, 3\)")
    assert_refusal_names_the_module(lambda: pm.CDivTable(), [a, a, a],
                                    r"input has 3 entries, expected 2")
    assert_refusal_names_the_module(lambda: pm.CMinTable(), [a, b],
                                    r"input 1 has shape \(2, 4\), expected \(2, 3\)")
    assert_refusal_names_the_module(lambda: pm.CAveTable(), [a, b],
                                    r"input 1 has shape \(2, 4\), expected \(2, 3\)")
    assert_refusal_names_the_module(lambda: pm.CAveTable(), a, r"input must be a table",
                                    TypeError)
