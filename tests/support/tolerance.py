"""Tolerances for float32 results of reductions (dot products, GEMM, sums, convolutions).

A float32 sum of k terms can be off by about k * eps * (the sum of the terms' absolute values),
eps = 2^-23; how close it gets below that bound depends on the order of the additions, which
OpenBLAS chooses differently per core type (SkylakeX and Haswell kernels block and vectorise
differently). So a float32 reduction is compared with a tolerance that grows with its length
and with the magnitude of its terms, never a fixed one; float64 comparisons keep their own.

    assert_reduction_close(y, x64 @ w.T + b, np.float32, k=k + 1,
                           magnitude=abs_gemm(x, w.T) + abs(b))
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def abs_gemm(a, b):
    """|a| @ |b| in float64: the sum of the absolute terms of each element of a @ b."""
    return np.abs(np.asarray(a, np.float64)) @ np.abs(np.asarray(b, np.float64))


def reduction_tol(dtype, k, magnitude, f64=1e-12):
    """(rtol, atol) for a length-``k`` reduction computed in ``dtype`` against an exact
    (float64) reference.

    float32: (k + 2) * eps relative, and (k + 2) * eps * ``magnitude`` absolute, where
    ``magnitude`` (a number, or an array shaped like the result) is the sum of the absolute
    values of the terms; the 2 covers a scaling and the store into an accumulating output.
    float64: ``f64`` for both, unchanged.
    """
    if np.dtype(dtype) != np.float32:
        return f64, f64
    bound = (max(int(k), 0) + 2) * EPS32
    return bound, bound * np.asarray(magnitude, np.float64)


def assert_reduction_close(actual, expected, dtype, k, magnitude, f64=1e-12, err_msg=""):
    """``actual`` agrees with ``expected`` as a length-``k`` reduction in ``dtype`` may:
    |actual - expected| <= atol + rtol * |expected| elementwise (reduction_tol)."""
    rtol, atol = reduction_tol(dtype, k, magnitude, f64)
    if np.ndim(atol) == 0:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=float(atol),
                                   err_msg=err_msg)
        return
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    allowed = np.broadcast_to(atol + rtol * np.abs(expected), expected.shape)
    err = np.abs(actual - expected)
    bad = ~(err <= allowed)  # NaN anywhere fails
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - allowed, -np.inf)), bad.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements differ more than a length-{k} "
            f"{np.dtype(dtype).name} reduction may; worst at {tuple(int(j) for j in i)}: "
            f"{float(actual[i])!r} vs {float(expected[i])!r}, difference {err[i]:.3g} > allowed "
            f"{allowed[i]:.3g} {err_msg}")
