"""Sizes past 2**31 (issue 13, item 6): kernels compute them in Py_ssize_t or refuse them with
a ValueError (naming the module through the facade), never overflow an int and crash.

No test here needs memory: inputs larger than 2**31 elements are zero-stride views over one
small buffer (refused for layout before any read), or C-contiguous arrays over an anonymous
mapping reserved without memory, of which the kernel reads only a few pages; padding makes
windows of more than 2**31 taps over a 1x1 input.
"""

import mmap
import resource

import numpy as np
import pytest
from pymodules.engine import conv as K
from pymodules.engine import normalization as N
from pymodules.engine import pooling as P
from pymodules.engine import table as T

import pymodules as pm

BIG = 2**31


def huge(shape, dtype=np.float32):
    """A C-contiguous zero array of ``shape`` that takes no memory until its pages are
    touched (an anonymous private mapping without swap reservation); skips where the system
    refuses the address space."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(
        mmap, "MAP_NORESERVE", 0)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except (OSError, OverflowError, ValueError) as err:
        pytest.skip(f"cannot reserve {nbytes} bytes of address space: {err}")
    return np.frombuffer(buf, dtype).reshape(shape)


def zero_strides(shape, dtype=np.float32):
    """A read-only view of ``shape`` over one element."""
    return np.broadcast_to(np.ones(1, dtype), shape)


@pytest.fixture(autouse=True)
def _rss_bound():
    """No test here may grow the process by more than 64 MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 64 * 1024, f"the test grew the process by {grown} kB"


# -- the issue's repro: average pooling with 32768 and 32769 x 65536 windows ------------------

@pytest.mark.parametrize("kw", [32768, 32769])
def test_issue_repro_zero_stride_input_is_refused_before_any_read(kw):
    # The right answer needs an 8 GiB input; the zero-stride view is refused for its layout
    # by the kernel, a clean ValueError, before any read.
    x = zero_strides((1, 1, 65536, kw))
    out = np.empty((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="not C-contiguous"):
        P.avg_pool_update_output(x, out, kw, 65536, 1, 1, 0, 0, False, True, True)


@pytest.mark.parametrize("kw", [32768, 32769])
@pytest.mark.parametrize("divide", [True, False])
def test_window_counts_past_2_31_are_exact(kw, divide):
    # The issue's kernels over a 1x1 input padded by half the kernel: each of the 2x2
    # windows covers kw * 65536 >= 2**31 taps (it gave -1 for 1, or crashed).
    m = pm.SpatialAveragePooling(kw, 65536, 1, 1, kw // 2, 32768, divide=divide,
                                 dtype=np.float64)
    x = np.ones((1, 1, 1, 1), np.float64)
    y = m.forward(x)
    count = kw * 65536
    assert y.shape == (1, 1, 2, 2 if kw % 2 == 0 else 1)
    np.testing.assert_allclose(y, 1.0 if not divide else 1.0 / count, rtol=1e-12)
    gi = m.backward(x, np.ones_like(y))
    np.testing.assert_allclose(gi, y.size * (1.0 if not divide else 1.0 / count), rtol=1e-12)
    m.setCountExcludePad()
    np.testing.assert_allclose(m.forward(x), 1.0 if divide else float(count), rtol=1e-12)


def test_window_count_float32():
    m = pm.SpatialAveragePooling(32768, 65536, 1, 1, 16384, 32768)
    y = m.forward(np.ones((1, 1, 1, 1), np.float32))
    np.testing.assert_allclose(y, 2.0**-31, rtol=1e-6)


def test_offsets_in_a_plane_past_2_31():
    # The issue's 65536 x 32769 plane, C-contiguous: 1x1 windows at its corners read four
    # pages; the last corner's offset, 65535 * 32769 + 32768, overflowed an int.
    x = huge((1, 1, 65536, 32769))
    corners = [(0, 0), (0, 32768), (65535, 0), (65535, 32768)]
    for k, (i, j) in enumerate(corners):
        x[0, 0, i, j] = k + 1
    avg = pm.SpatialAveragePooling(1, 1, 32768, 65535)
    np.testing.assert_array_equal(avg.forward(x).ravel(), [1, 2, 3, 4])
    mx = pm.SpatialMaxPooling(1, 1, 32768, 65535)
    np.testing.assert_array_equal(mx.forward(x).ravel(), [1, 2, 3, 4])
    np.testing.assert_array_equal(mx.indices.ravel(), [i * 32769 + j for i, j in corners])


def test_temporal_offsets_past_2_31():
    x = huge((65536, 32769))
    x[65535, 5] = 7
    y = pm.TemporalMaxPooling(1, 65535).forward(x)
    assert y.shape == (2, 32769)
    assert y[1, 5] == 7 and y[0, 5] == 0


# -- window arguments of 2**31 and more: a ValueError naming the module -----------------------

@pytest.mark.parametrize("make", [
    lambda: pm.SpatialAveragePooling(BIG, 2),
    lambda: pm.SpatialAveragePooling(2, 2, BIG, 1),
    lambda: pm.SpatialMaxPooling(2, BIG),
    lambda: pm.SpatialMaxPooling(2, 2, 1, BIG),
])
def test_pooling_window_past_int_is_a_value_error_naming_the_module(make):
    m = make()
    with pytest.raises(ValueError, match=r"^Spatial\w+Pooling.*2147483648"):
        m.forward(np.ones((1, 1, 4, 4), np.float32))


def test_temporal_pooling_window_past_int():
    with pytest.raises(ValueError, match=r"^TemporalMaxPooling.*2147483648"):
        pm.TemporalMaxPooling(BIG).forward(np.ones((4, 3), np.float32))


@pytest.mark.parametrize("make", [
    lambda: pm.SpatialConvolution(1, 1, 1, 1, BIG, 1),
    lambda: pm.SpatialConvolution(1, 1, 1, 1, 1, 1, BIG, 0),
    lambda: pm.SpatialDilatedConvolution(1, 1, 2, 2, 1, 1, 0, 0, BIG, 1),
])
def test_conv_window_past_int_is_a_value_error_naming_the_module(make):
    m = make()
    with pytest.raises(ValueError, match=r"^Spatial\w*Convolution.*2147483648"):
        m.forward(np.ones((1, 1, 4, 4), np.float32))


def test_kernel_arguments_past_int_are_value_errors():
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="2147483648"):
        P.avg_pool_update_output(x, np.empty((1, 1, 1, 1), np.float32), BIG, 1, 1, 1, 0, 0,
                                 False, True, True)
    with pytest.raises(ValueError, match="2147483648"):
        P.output_size(4, BIG)
    with pytest.raises(ValueError, match="2147483648"):
        K.output_size(4, 1, BIG)
    with pytest.raises(ValueError, match="2147483648"):
        T.join([np.ones((2, 2))], np.empty((2, 2)), BIG)
    with pytest.raises(ValueError, match="2147483649"):
        N.lrn_update_output(x, np.empty_like(x), np.empty_like(x), BIG + 1, 1.0, 0.75, 1.0)


# -- window arithmetic: products past 2**31 ---------------------------------------------------

def test_dilated_span_past_2_31_does_not_fit():
    # span = 2 * 1610612736 + 1 overflowed an int to a negative span: a 5-long axis had
    # a billion windows.
    assert K.output_size(5, 3, 1, 0, 1610612736) == 0
    assert P.output_size(5, 3, 1, 0, 1610612736) == 0
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        K.conv_update_output(np.ones((1, 1, 5, 5), np.float32), np.empty((1, 1, 1, 1),
                             np.float32), w, None, np.empty((9, 1), np.float32), 1, 1, 0, 0,
                             1610612736, 1610612736, 1)


def test_full_output_size_past_2_31():
    assert K.full_output_size(65536, 65536, 65536) == 65535 * 65536 + 65536
    assert P.output_size(3 * BIG, BIG - 1, BIG - 1) == 3
    assert K.output_size(3 * BIG, 2, 1, -1) == 3 * BIG


def test_transposed_conv_output_past_int_is_refused():
    # A 2x2 grid with stride 2**30 would make an output of about 2**30 x 2**30.
    x = np.ones((1, 1, 2, 2), np.float32)
    w = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="exceeds the BLAS limit"):
        K.full_conv_update_output(x, np.empty((1, 1, 1, 1), np.float32), w, None,
                                  np.empty((4, 4), np.float32), 2**30, 2**30, 0, 0, 0, 0, 1)


def test_conv_padded_extent_past_int_is_refused():
    # Pads of 2**30 on each side of a 4x4 image with stride 2**30: 3x3 windows, but their
    # offsets run past an int.
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="exceeds the BLAS limit"):
        K.conv_update_output(x, np.empty((1, 1, 3, 3), np.float32), w, None,
                             np.empty((1, 9), np.float32), 2**30, 2**30, 2**30, 2**30, 1, 1,
                             1)


@pytest.mark.parametrize("make", [
    lambda v: pm.SpatialAveragePooling(v, 2), lambda v: pm.SpatialMaxPooling(2, 2, v, 1),
    lambda v: pm.Linear(v, 2), lambda v: pm.SpatialConvolution(1, 1, 2, 2, 1, 1, v, 0),
    lambda v: pm.Narrow(1, -v, 1), lambda v: pm.Reshape([v]),
])
@pytest.mark.parametrize("value", [2**63, 2**64, float(2**70)])
def test_sizes_past_64_bits_are_value_errors_naming_the_module(make, value):
    """Not an OverflowError from a kernel's argument conversion: refused when built."""
    with pytest.raises(ValueError, match=r"^\w+: \w+ = -?\d+ is beyond the 64-bit range"):
        make(value)
    make(3)  # an ordinary size still builds
