"""Random shapes, dtypes, strides and aliasing thrown at every engine entry point.

Each case starts from valid arguments and applies random mutations. The call must then
either raise TypeError/ValueError, or succeed and agree with the NumPy reference: never a
crash, never a silent wrong answer.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodules.engine import blas, buffers, linear, regularizer
from tolerance import assert_reduction_close


def _linear_fwd(d, n, k, m):
    args = [d(n, k), d(n, m), d(m, k), d(m)]
    return linear.linear_update_output, args, [1], \
        lambda a: a[0].astype(np.float64) @ a[2].T + (0 if a[3] is None else a[3])


def _linear_fwd_transposed(d, n, k, m):
    """A batch small and wide enough for the transposed float32 forward, with its scratch."""
    n, k, m = 16 + n, 128 + k, 128 + m
    args = [d(n, k), d(n, m), d(m, k), d(m), d(n * m)]
    return linear.linear_update_output, args, [1], \
        lambda a: a[0].astype(np.float64) @ a[2].T + (0 if a[3] is None else a[3])


def _linear_gi(d, n, k, m):
    args = [d(n, k), d(n, m), d(n, k), d(m, k)]
    return linear.linear_update_grad_input, args, [2], lambda a: a[1].astype(np.float64) @ a[3]


def _rows(a, width):
    """A (k,) vector or (n, k) batch as (rows, width), as the kernels read it."""
    return a.astype(np.float64).reshape(1 if a.ndim == 1 else a.shape[0], width)


def _linear_acc(d, n, k, m):
    args = [d(n, k), d(n, m), d(m, k), d(m), 0.5, 2.0]
    ref = (lambda a: a[2] + 0.5 * _rows(a[1], a[2].shape[0]).T @ _rows(a[0], a[2].shape[1]),
           lambda a: None if a[3] is None else a[3] + 2.0 * _rows(a[1], a[3].shape[0]).sum(0))
    return linear.linear_acc_grad_parameters, args, [2, 3], ref


def _gemm(d, n, k, m):
    return (lambda a, b, c: blas.gemm_checked(False, True, 1.5, a, b, 0.5, c)), \
        [d(n, k), d(m, k), d(n, m)], [2], \
        lambda a: 1.5 * a[0].astype(np.float64) @ a[1].T + 0.5 * a[2]


def _gemv(d, n, k, m):
    return (lambda a, x, y: blas.gemv_checked(True, 2.0, a, x, 1.0, y)), \
        [d(n, k), d(n), d(k)], [2], lambda a: 2.0 * a[0].T.astype(np.float64) @ a[1] + a[2]


def _ger(d, n, k, m):
    return (lambda x, y, a: blas.ger_checked(-1.0, x, y, a)), [d(n), d(k), d(n, k)], [2], \
        lambda a: a[2] - np.outer(a[0], a[1].astype(np.float64))


def _axpy(d, n, k, m):
    return (lambda x, y: blas.axpy_checked(3.0, x, y)), [d(n), d(n)], [1], \
        lambda a: 3.0 * a[0].astype(np.float64) + a[1]


def _scal(d, n, k, m):
    return (lambda x: blas.scal_checked(3.0, x)), [d(n)], [0], lambda a: 3.0 * a[0]


def _copy(d, n, k, m):
    return blas.copy_checked, [d(n), d(n)], [1], lambda a: a[0]


def _reg(d, n, k, m):
    return (lambda w, g: regularizer.acc_regularization(w, g, 0.1, 0.2, 0.5)), \
        [d(n, k), d(n, k)], [1], \
        lambda a: a[1] + 0.5 * (0.1 * np.sign(a[0]) + 0.2 * a[0].astype(np.float64))


CASES = [_linear_fwd, _linear_fwd_transposed, _linear_gi, _linear_acc, _gemm, _gemv, _ger, _axpy,
         _scal, _copy, _reg]


def _mutate(draw, args):
    for _ in range(draw(st.integers(0, 2))):
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        if not arrays:
            return
        i = draw(st.sampled_from(arrays))
        a = args[i]
        kind = draw(st.sampled_from(
            ["dtype", "strided", "transpose", "alias", "view_alias", "rank", "readonly",
             "resize", "none", "list"]))
        if kind == "dtype":
            args[i] = a.astype(draw(st.sampled_from(
                [np.float32, np.float64, np.int32, np.float16])))
        elif kind == "strided":
            args[i] = np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a
        elif kind == "transpose":
            args[i] = a.T
        elif kind == "alias":
            args[i] = args[draw(st.sampled_from(arrays))]
        elif kind == "view_alias":
            j = draw(st.sampled_from(arrays))
            if args[j].size >= a.size and args[j].dtype == a.dtype:
                args[i] = args[j].reshape(-1)[args[j].size - a.size:].reshape(a.shape)
        elif kind == "rank":
            args[i] = a.reshape(a.shape + (1,)) if draw(st.booleans()) else a.reshape(-1)
        elif kind == "readonly":
            a = a.copy()
            a.flags.writeable = False
            args[i] = a
        elif kind == "resize":
            args[i] = np.zeros(tuple(s + 1 for s in a.shape), a.dtype)
        elif kind == "none":
            args[i] = None
        else:
            args[i] = a.tolist()


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_engine_functions_refuse_or_agree(data):
    case = data.draw(st.sampled_from(CASES))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    n, k, m = (data.draw(st.integers(0, 4)) for _ in range(3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))

    def make(*shape):
        return rng.standard_normal(shape).astype(dtype)

    fn, args, outs, ref = case(make, n, k, m)
    _mutate(data.draw, args)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    try:
        fn(*args)
    except (TypeError, ValueError):
        for a, b in zip(args, before, strict=True):  # a refusal writes nothing
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
        return
    refs = ref if isinstance(ref, tuple) else (ref,)
    arrays = [a for a in before if isinstance(a, np.ndarray)]
    dtype = np.float32 if any(a.dtype == np.float32 for a in arrays) else np.float64
    # Every case is at most one reduction over one of the arguments' dimensions, of terms
    # no larger than 3 * (largest argument)^2, plus an accumulated output.
    length = max((max(a.shape, default=1) for a in arrays), default=1)
    big = max((float(np.abs(a).max(initial=0)) for a in arrays), default=0.0)
    magnitude = 3 * (length * big * big + big)
    for i, r in zip(outs, refs, strict=False):
        expected = r(before)
        if expected is None:  # an optional output (no bias) stays None
            assert args[i] is None
        else:
            assert_reduction_close(args[i], expected, dtype, length, magnitude, 1e-10)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_resized_keeps_or_replaces(data):
    shape = tuple(data.draw(st.lists(st.integers(0, 3), min_size=0, max_size=3)))
    like = np.zeros(shape, data.draw(st.sampled_from([np.float32, np.int64])))
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    last = data.draw(st.integers(-1, 3))
    buf = data.draw(st.sampled_from([None, np.zeros(0), np.zeros((2, 3), np.float32),
                                     np.zeros(shape[:-1] + (last,) if shape and last >= 0
                                              else (1,), dtype)]))
    out = buffers.resized(buf, like, last, dtype)
    if like.ndim == 0:
        assert out is buf
        return
    want = like.shape[:-1] + ((like.shape[-1] if last < 0 else last),)
    assert out.shape == want and out.dtype == dtype
    if isinstance(buf, np.ndarray) and buf.shape == want and buf.dtype == dtype:
        assert out is buf
