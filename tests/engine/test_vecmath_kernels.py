"""Accuracy of the vectorised math (engine/vecmath.h) behind Exp, Log, Tanh, Sigmoid, SoftPlus,
ELU, the softmax family, batch normalisation and LRN, against NumPy in float64; the accuracy
table in vecmath.h's header comment, against long double.

Inputs span the whole range of each dtype (uniform and log-uniform magnitudes), the special
values (+-0, +-inf, NaN, overflow and underflow thresholds) and lengths that are not multiples
of any vector width, so that the scalar tails run too.
"""

import platform
import re
from pathlib import Path

import numpy as np
import pymodules.engine
import pytest
from pymodules.engine.activation import (
    elu_update_grad_input,
    elu_update_output,
    exp_update_grad_input,
    exp_update_output,
    log_update_output,
    sigmoid_update_grad_input,
    sigmoid_update_output,
    soft_plus_update_grad_input,
    soft_plus_update_output,
    tanh_update_grad_input,
    tanh_update_output,
)
from pymodules.engine.normalization import (
    FEATURES,
    NCHW,
    batchnorm_acc_grad_parameters,
    batchnorm_update_grad_input,
    batchnorm_update_output,
    lrn_update_grad_input,
    lrn_update_output,
)
from pymodules.engine.softmax import (
    log_softmax_update_grad_input,
    log_softmax_update_output,
    softmax_update_grad_input,
    softmax_update_output,
)
from tolerance import assert_reduction_close

DTYPES = [np.float32, np.float64]
# measured worst cases: 2.1 eps (float32), 2.7 eps (float64), relative to the float64 NumPy value
ULPS = 4


def _spread(lo, hi, rng, n=100_003):
    """Uniform and log-uniform samples in [lo, hi], both signs where the interval has them."""
    big = max(abs(lo), abs(hi))
    mag = np.exp(rng.uniform(np.log(1e-300), np.log(big), n))
    x = np.concatenate([rng.uniform(lo, hi, n), mag, -mag])
    return x[(x >= lo) & (x <= hi)]


FORWARD = {"exp": exp_update_output, "log": log_update_output, "tanh": tanh_update_output,
           "sigmoid": sigmoid_update_output, "soft_plus": soft_plus_update_output,
           "elu": elu_update_output}
BACKWARD = {"exp": exp_update_grad_input, "tanh": tanh_update_grad_input,
            "sigmoid": sigmoid_update_grad_input, "soft_plus": soft_plus_update_grad_input,
            "elu": elu_update_grad_input}


def _run(name, x, *args):
    y = np.empty_like(x)
    FORWARD[name](x, y, *args)
    return y


def _assert_close(y, ref, dtype):
    """Relative error of normal results within ULPS eps; subnormal results within one ulp of the
    smallest normal; overflow (|ref| > max) gives inf of the right sign."""
    info = np.finfo(dtype)
    over = np.abs(ref) > info.max
    np.testing.assert_array_equal(y[over], np.copysign(np.inf, ref[over]).astype(dtype))
    normal = ~over & (np.abs(ref) >= info.tiny)
    rel = np.abs(y[normal] - ref[normal]) / np.abs(ref[normal])
    assert rel.max(initial=0) <= ULPS * info.eps, \
        f"max relative error {rel.max():.3g} at x index {np.argmax(rel)}"
    small = ~over & ~normal
    assert np.all(np.abs(y[small] - ref[small]) <= info.tiny * info.eps * 2)


REFERENCES = {
    # name: (scalars, NumPy reference in float64, sampling interval per dtype)
    "exp": ((), np.exp, {np.float32: (-110, 95), np.float64: (-760, 720)}),
    "tanh": ((), np.tanh, {np.float32: (-40, 40), np.float64: (-40, 40)}),
    "sigmoid": ((), lambda x: np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x))),
                {np.float32: (-120, 120), np.float64: (-800, 800)}),
    "soft_plus": ((2.0, 20.0), lambda x: np.where(2 * x > 20, x, np.logaddexp(0, 2 * x) / 2),
                  {np.float32: (-100, 100), np.float64: (-400, 400)}),
    "elu": ((1.5,), lambda x: np.where(x > 0, x, 1.5 * np.expm1(x)),
            {np.float32: (-120, 50), np.float64: (-800, 50)}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", REFERENCES)
def test_accuracy_over_the_range(name, dtype, rng):
    args, ref, span = REFERENCES[name]
    x = _spread(*span[dtype], rng).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        _assert_close(_run(name, x, *args), ref(x.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_accuracy_including_subnormals(dtype, rng):
    info = np.finfo(dtype)
    lo = info.smallest_subnormal
    x = np.exp(rng.uniform(np.log(lo), np.log(info.max), 300_001)).astype(dtype)
    x = np.concatenate([x, [lo, info.tiny, info.max, 1.0, np.nextafter(dtype(1), dtype(2))]])
    x = x.astype(dtype)
    _assert_close(_run("log", x), np.log(x.astype(np.float64)), dtype)



# -- the accuracy table of engine/vecmath.h -------------------------------------------------------

LONG = np.longdouble
HIGH_PRECISION = np.finfo(LONG).nmant >= 63  # x86's 80-bit or IEEE quad long double


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# name: reference of the same formula as REFERENCES, evaluated in long double
LONG_REFERENCES = {
    "exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": _sigmoid,
    "soft_plus": lambda x: np.where(2 * x > 20, x, np.logaddexp(LONG(0), 2 * x) / 2),
    "elu": lambda x: np.where(x > 0, x, LONG(1.5) * np.expm1(x)),
}


def _accuracy(name, dtype, rng):
    """(max error in ulps, max relative error, number of samples) over the normal results.

    The reference is the long double value, not rounded: a correctly rounded function would
    show 0.5 ulp. ulp = 2^(e - p) for a reference in [2^(e-1), 2^e), p the dtype's precision."""
    info = np.finfo(dtype)
    if name == "log":
        x = np.exp(rng.uniform(np.log(info.smallest_subnormal), np.log(info.max), 300_001))
    else:
        x = _spread(*REFERENCES[name][2][dtype], rng)
    x = x.astype(dtype)
    y = _run(name, x, *(REFERENCES[name][0] if name in REFERENCES else ()))
    with np.errstate(all="ignore"):
        ref = LONG_REFERENCES[name](x.astype(LONG))
    normal = np.isfinite(ref) & (np.abs(ref) >= info.tiny) & (np.abs(ref) <= info.max)
    ref, err = ref[normal], np.abs(y[normal].astype(LONG) - ref[normal])
    ulp = np.ldexp(LONG(1), np.frexp(ref)[1] - info.nmant - 1)
    return float((err / ulp).max()), float((err / np.abs(ref)).max()), int(normal.sum())


def _table():
    """{name: (float32 ulp, float32 rel, float64 ulp, float64 rel)} from vecmath.h's comment."""
    text = (Path(pymodules.engine.__file__).parent / "vecmath.h").read_text()
    rows = re.findall(r"^ {5}([a-z_]+) +([0-9.]+) +([0-9.e-]+) +([0-9.]+) +([0-9.e-]+)$", text,
                      re.MULTILINE)
    return {name: tuple(float(v) for v in values) for name, *values in rows}


@pytest.mark.skipif(not HIGH_PRECISION, reason="needs a long double wider than double")
def test_accuracy_table(rng):
    """The figures of vecmath.h's table hold (measured on x86-64, where every target_clones
    version computes the same operations: no FMA contraction); elsewhere within 0.5 ulp."""
    table = _table()
    assert set(table) == set(LONG_REFERENCES)
    slack = 0 if platform.machine() in ("x86_64", "AMD64") else 0.5
    for name in LONG_REFERENCES:
        for i, dtype in enumerate(DTYPES):
            max_ulp, max_rel, n = _accuracy(name, dtype, rng)
            assert n > 100_000
            bound_ulp, bound_rel = table[name][2 * i], table[name][2 * i + 1]
            eps = np.finfo(dtype).eps
            assert max_ulp <= bound_ulp + slack, (name, dtype, max_ulp)
            assert max_rel <= bound_rel + slack * eps, (name, dtype, max_rel)
            assert max_rel <= ULPS * eps

NAN, INF = np.nan, np.inf
SPECIALS = {
    # name: [(x, expected)] with the sign of zeros checked
    "exp": [(0.0, 1.0), (-0.0, 1.0), (INF, INF), (-INF, 0.0), (NAN, NAN), (1e30, INF),
            (-1e30, 0.0)],
    "tanh": [(0.0, 0.0), (-0.0, -0.0), (INF, 1.0), (-INF, -1.0), (NAN, NAN), (1e30, 1.0),
             (-1e30, -1.0), (1e-30, 1e-30), (-1e-30, -1e-30)],
    "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (INF, 1.0), (-INF, 0.0), (NAN, NAN), (1e30, 1.0),
                (-1e30, 0.0)],
    "log": [(0.0, -INF), (-0.0, -INF), (INF, INF), (-INF, NAN), (NAN, NAN), (-1.0, NAN),
            (1.0, 0.0)],
    "soft_plus": [(INF, INF), (-INF, 0.0), (NAN, NAN), (1e30, 1e30), (-1e30, 0.0)],
    "elu": [(0.0, 0.0), (INF, INF), (-INF, -1.5), (NAN, NAN), (-1e30, -1.5), (1e30, 1e30)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SPECIALS)
def test_special_values(name, dtype):
    cases = SPECIALS[name]
    args = REFERENCES[name][0] if name in REFERENCES else ()
    # repeated so that the values go through the vector loop as well as the scalar tail
    x = np.array([c[0] for c in cases] * 9, dtype)
    expected = np.array([c[1] for c in cases] * 9, dtype)
    y = _run(name, x, *args)
    np.testing.assert_array_equal(y, expected)
    finite_zero = expected == 0
    np.testing.assert_array_equal(np.signbit(y[finite_zero]), np.signbit(expected[finite_zero]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_matches_out_of_place(dtype, rng):
    x = rng.uniform(-30, 30, 1001).astype(dtype)
    for name in ("exp", "tanh", "sigmoid", "soft_plus", "elu"):
        args = REFERENCES[name][0]
        expected = _run(name, x, *args)
        z = x.copy()
        FORWARD[name](z, z, *args)
        np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_from_the_output(dtype, rng):
    x = rng.uniform(-6, 6, 1003).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    xd, gd = x.astype(np.float64), g.astype(np.float64)
    derivatives = {
        "tanh": 1 - np.tanh(xd) ** 2,
        "sigmoid": np.exp(-xd) / (1 + np.exp(-xd)) ** 2,
        "exp": np.exp(xd),
        "soft_plus": 1 / (1 + np.exp(-2 * xd)),
        "elu": np.where(xd > 0, 1, 1.5 * np.exp(xd)),
    }
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for name, d in derivatives.items():
        args = REFERENCES[name][0]
        y = _run(name, x, *args)
        gi = np.empty_like(x)
        BACKWARD[name](x, y, g, gi, *args)
        np.testing.assert_allclose(gi, gd * d, rtol=tol, atol=tol, err_msg=name)


# -- softmax family ------------------------------------------------------------------------------

def _np_softmax(x, axis, sign=1):
    z = sign * x.astype(np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True), z - np.log(e.sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 1000), (3, 17), (33,), (2, 5, 9, 9), (3, 70),
                                   (4, 130, 1, 1), (3, 4, 1), (64, 10), (130, 16), (4, 3),
                                   (9, 1)])
@pytest.mark.parametrize("negate", [False, True])
def test_softmax_rows_and_channels(shape, negate, dtype, rng):
    x = (rng.standard_normal(shape) * 30).astype(dtype)
    axis = 1 if len(shape) in (2, 4) else 0
    ref, log_ref = _np_softmax(x, axis, -1 if negate else 1)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    y = np.empty_like(x)
    softmax_update_output(x, y, negate)
    # x - max rounds in the dtype: a relative error of eps |log p| on a probability p
    eps = np.finfo(dtype).eps
    bound = (tol + 2 * eps * np.abs(log_ref)) * ref + np.finfo(dtype).smallest_subnormal
    assert np.all(np.abs(y - ref) <= bound), np.max(np.abs(y - ref) / bound)
    g = rng.standard_normal(shape).astype(dtype)
    gi = np.empty_like(x)
    softmax_update_grad_input(y, g, gi, negate)
    yd, gd = y.astype(np.float64), g.astype(np.float64)
    expected = (-1 if negate else 1) * yd * (gd - (gd * yd).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(gi, expected, rtol=tol * 10, atol=tol * 10)
    if len(shape) <= 2 and not negate:
        log_softmax_update_output(x, y)
        np.testing.assert_allclose(y, log_ref, rtol=tol, atol=tol * np.abs(x).max())
        log_softmax_update_grad_input(y, g, gi)
        expected = gd - np.exp(y.astype(np.float64)) * gd.sum(axis=axis, keepdims=True)
        np.testing.assert_allclose(gi, expected, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 10, 16, 17])
def test_short_rows_do_not_depend_on_their_batch(n, dtype, rng):
    """Rows of 16 or fewer run transposed, as lines, in batches of four rows or more, and a
    row at a time below that: the same sums in the same order, so a row's numbers are the
    same alone and in any batch (two blocks of 64 rows here)."""
    x = (rng.standard_normal((130, n)) * 5).astype(dtype)
    for update in (log_softmax_update_output,
                   lambda a, b: softmax_update_output(a, b, False),
                   lambda a, b: softmax_update_output(a, b, True)):
        batch = np.empty_like(x)
        update(x, batch)
        for lo, hi in ((0, 1), (5, 8), (60, 70), (129, 130)):
            part = np.empty_like(x[lo:hi])
            update(x[lo:hi].copy(), part)
            np.testing.assert_array_equal(part, batch[lo:hi])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_special_values(dtype):
    x = np.array([[0, 0, 0], [-np.inf, 0, 0], [1e30, 0, -1e30], [np.nan, 0, 1]], dtype)
    y = np.empty_like(x)
    softmax_update_output(x, y, False)
    np.testing.assert_array_equal(y[:3], np.array([[1 / 3] * 3, [0, 0.5, 0.5], [1, 0, 0]], dtype))
    assert np.isnan(y[3]).all()
    log_softmax_update_output(x, y)
    np.testing.assert_array_equal(y[1, 0], -np.inf)
    np.testing.assert_array_equal(y[2], np.array([0, -1e30, -2e30], dtype))
    assert np.isnan(y[3]).all()


# -- batch normalisation ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 130), (5, 3), (4, 70, 3, 5), (2, 3, 8, 8), (3, 2, 1, 1)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_blocks_match_numpy(shape, train, dtype, rng):
    """Channel counts across the block size (64) in both layouts, train and evaluation."""
    c = shape[1]
    layout = FEATURES if len(shape) == 2 else NCHW
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    go = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    sm, si = np.empty(c, dtype), np.empty(c, dtype)
    y = np.empty_like(x)
    batchnorm_update_output(x, y, w, b, rm, rv, sm, si, layout, train, 0.1, 1e-5)

    xd, gd = x.astype(np.float64), go.astype(np.float64)
    m = x.size // c
    if train:
        mean, var = xd.mean(axis=axes), xd.var(axis=axes)
        if dtype == np.float32:  # blends of m-term means
            assert_reduction_close(rm, 0.9 * rm0 + 0.1 * mean, dtype, m + 1,
                                   0.9 * abs(rm0) + 0.1 * abs(xd).mean(axis=axes))
            assert_reduction_close(rv, 0.9 * rv0 + 0.1 * var * m / (m - 1), dtype, m + 1,
                                   0.9 * rv0 + 0.1 * var * m / (m - 1))
        else:
            np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean, rtol=1e-13)
            np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * m / (m - 1), rtol=1e-13)
    else:
        mean, var = rm0, rv0
    inv = 1 / np.sqrt(var + 1e-5)
    xhat = (xd - mean.reshape(bshape)) * inv.reshape(bshape)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, xhat * w.reshape(bshape) + b.reshape(bshape), rtol=tol,
                               atol=tol)
    gi = np.empty_like(x)
    batchnorm_update_grad_input(x, go, gi, w, sm, si, layout, train)
    gain = (inv * w).reshape(bshape)
    if train:
        expected = gain * (gd - gd.mean(axis=axes, keepdims=True)
                           - xhat * (gd * xhat).mean(axis=axes, keepdims=True))
    else:
        expected = gain * gd
    np.testing.assert_allclose(gi, expected, rtol=tol * 10, atol=tol * 10)
    gw, gb = np.ones(c, dtype), np.ones(c, dtype)
    batchnorm_acc_grad_parameters(x, go, gw, gb, sm, si, layout, 0.5, 2.0)
    np.testing.assert_allclose(gw, 1 + 0.5 * (gd * xhat).sum(axis=axes), rtol=tol * 10,
                               atol=tol * 10 * m)
    np.testing.assert_allclose(gb, 1 + 2.0 * gd.sum(axis=axes), rtol=tol * 10, atol=tol * 10 * m)


# -- cross-map LRN ------------------------------------------------------------------------------

def _np_lrn(x, size, alpha, beta, k):
    half = (size - 1) // 2
    c = x.shape[1]
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (half, half), (0, 0), (0, 0)])
    window = sum(sq[:, i:i + c] for i in range(size))
    scale = k + alpha / size * window
    return x * scale ** -beta, scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, size", [((2, 9, 11, 7), 5), ((3, 2, 5, 5), 5), ((1, 4, 1, 1), 3),
                                         ((2, 6, 9, 9), 1), ((1, 70, 2, 3), 7)])
def test_lrn_blocks_match_numpy(shape, size, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y, sc, gi = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    lrn_update_output(x, y, sc, size, 0.7, 0.75, 1.5)
    ref, scale = _np_lrn(x, size, 0.7, 0.75, 1.5)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sc, scale, rtol=tol)
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    lrn_update_grad_input(x, y, g, gi, sc, size, 0.7, 0.75)
    # d/dx_c of x_c s_c^-b: s^-b - (2 a b / size) x_c * sum over windows holding c of g y / s
    half = (size - 1) // 2
    c = shape[1]
    t = np.pad(g.astype(np.float64) * y / sc, [(0, 0), (half, half), (0, 0), (0, 0)])
    window = sum(t[:, i:i + c] for i in range(size))
    expected = g * sc.astype(np.float64) ** -0.75 - 2 * 0.7 * 0.75 / size * x * window
    np.testing.assert_allclose(gi, expected, rtol=tol * 10, atol=tol * 10)
