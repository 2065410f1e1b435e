"""Argument checks of the activation, softmax, dropout, normalization and embedding kernels."""

import numpy as np
import pytest
from pymodules.engine import activation
from pymodules.engine.activation import (
    exp_update_output,
    prelu_update_output,
    tanh_update_grad_input,
    tanh_update_output,
    threshold_update_output,
)
from pymodules.engine.dropout import dropout_update_output
from pymodules.engine.embedding import lookup_table_update_output
from pymodules.engine.normalization import FEATURES, batchnorm_update_output
from pymodules.engine.softmax import softmax_update_output
from tolerance import assert_reduction_close

DTYPES = [np.float32, np.float64]
# every elementwise kernel pair of engine.activation, by function, with its number of scalars
ELEMENTWISE = {"threshold": 2, "leaky_relu": 1, "elu": 1, "hard_tanh": 2, "tanh": 0,
               "sigmoid": 0, "hard_sigmoid": 0, "soft_plus": 2, "soft_sign": 0, "abs": 0,
               "square": 0, "sqrt": 0, "exp": 0, "log": 0, "power": 3, "log_sigmoid": 0,
               "soft_shrink": 1, "hard_shrink": 1, "tanh_shrink": 0, "binary_threshold": 1}


def test_elementwise_kernels_are_named_after_their_function():
    forwards = {n[:-len("_update_output")] for n in dir(activation)
                if n.endswith("_update_output")}
    assert forwards == set(ELEMENTWISE) | {"prelu", "rrelu"}  # two with arrays of their own
    for name in ELEMENTWISE:
        assert callable(getattr(activation, f"{name}_update_grad_input"))
    assert not hasattr(activation, "OP")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4, 2)])
def test_empty_shapes(dtype, shape):
    x = np.empty(shape, dtype)
    for name, n_scalars in ELEMENTWISE.items():
        scalars = (1.0, 2.0, 0.5)[:n_scalars]
        getattr(activation, f"{name}_update_output")(x, np.empty_like(x), *scalars)
        getattr(activation, f"{name}_update_grad_input")(x, x, x, np.empty_like(x), *scalars)
    dropout_update_output(x, np.empty_like(x), np.empty_like(x), 0.5, True, True, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_allowed_partial_overlap_refused(dtype):
    x = np.linspace(-1, 1, 10).astype(dtype)
    threshold_update_output(x, x, 0.0, 0.0)
    np.testing.assert_array_equal(x, np.maximum(np.linspace(-1, 1, 10).astype(dtype), 0))
    buf = np.zeros(11, dtype)
    with pytest.raises(ValueError, match="output overlaps input"):
        tanh_update_output(buf[:10], buf[1:])
    with pytest.raises(ValueError, match="gradInput overlaps input"):
        tanh_update_grad_input(x, x.copy(), x.copy(), x)


def test_refusals_before_any_work():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="input has dtype float64, expected float32"):
        exp_update_output(x.astype(np.float64), x.copy())
    with pytest.raises(TypeError, match="output has dtype int64"):
        exp_update_output(x, np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="not C-contiguous"):
        exp_update_output(np.ones((3, 4), np.float32)[:, ::2], np.empty((3, 2), np.float32))
    ro = np.empty((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="output is read-only"):
        exp_update_output(x, ro)
    with pytest.raises(ValueError, match=r"output has shape \(3, 2\), expected \(2, 3\)"):
        exp_update_output(x, np.empty((3, 2), np.float32))
    # no op codes: a stray one (the former API) is refused by the named kernel's signature
    with pytest.raises(TypeError, match="takes exactly 2 positional arguments"):
        exp_update_output(x, np.empty_like(x), 99)
    with pytest.raises(ValueError, match="input has 3 channels, expected 2"):
        prelu_update_output(x, np.empty_like(x), np.ones(2, np.float32), False)
    with pytest.raises(ValueError, match="must be 1-D to 4-D, got 5-D"):
        softmax_update_output(np.ones((1,) * 5), np.ones((1,) * 5), False)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dropout_update_output(x, np.empty_like(x), np.empty_like(x), 1.0, True, True, 0)
    with pytest.raises(ValueError, match="overlaps"):
        lookup_table_update_output(np.array([0]), x[:1], x, 1e308 * 10, 2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_running_statistics_follow_momentum(dtype, rng):
    x = rng.standard_normal((6, 3)).astype(dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    sm, si = np.empty(3, dtype), np.empty(3, dtype)
    y = np.empty_like(x)
    batchnorm_update_output(x, y, None, None, rm, rv, sm, si, FEATURES, True, 0.1, 1e-5)
    xd = x.astype(np.float64)
    if dtype == np.float32:  # 6-row means, and what follows from them
        assert_reduction_close(rm, 0.1 * xd.mean(0), dtype, 7, 0.1 * abs(xd).mean(0))
        rv_ref = 0.9 + 0.1 * xd.var(0, ddof=1)
        assert_reduction_close(rv, rv_ref, dtype, 7, rv_ref)
        si_ref = 1 / np.sqrt(xd.var(0) + 1e-5)
        assert_reduction_close(si, si_ref, dtype, 7, si_ref)
    else:
        tol = 1e-14
        np.testing.assert_allclose(rm, 0.1 * x.mean(0), rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(0, ddof=1), rtol=tol)
        np.testing.assert_allclose(si, 1 / np.sqrt(x.var(0) + 1e-5), rtol=10 * tol)
    with pytest.raises(ValueError, match="output overlaps input"):
        batchnorm_update_output(rm, rm, None, None, rm.copy(), rv, sm, si, FEATURES, False,
                                0.1, 1e-5)


def test_dropout_mask_rate_and_seed():
    x = np.ones(100000)
    y, r = np.empty_like(x), np.empty_like(x)
    dropout_update_output(x, y, r, 0.2, True, True, 12345)
    assert abs((r == 0).mean() - 0.2) < 0.005
    y2, r2 = np.empty_like(x), np.empty_like(x)
    dropout_update_output(x, y2, r2, 0.2, True, True, 12345)
    np.testing.assert_array_equal(r, r2)
    dropout_update_output(x, y2, r2, 0.2, True, True, 12346)
    assert not np.array_equal(r, r2)
