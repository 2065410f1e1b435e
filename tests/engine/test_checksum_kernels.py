import threading
import zlib

import numpy as np
import pytest
from pymodules.engine import checksum
from pymodules.engine.checksum import _constants, _crc32_table, crc32

# crc32 folds with PCLMULQDQ where the CPU has it; _crc32_table is the portable loop that
# CPUs without it run (and that both use for short inputs, heads and tails).
KERNELS = [pytest.param(crc32, id="auto"), pytest.param(_crc32_table, id="table")]
VALUES = [0, 1, 0x12345678, 0xFFFFFFFF]


def _bytes(rng, n):
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("fn", KERNELS)
def test_lengths_0_to_300_match_zlib(fn, rng):
    data = _bytes(rng, 300)
    for n in range(301):
        for v in VALUES:
            assert fn(data[:n], v) == zlib.crc32(data[:n], v), (n, v)


@pytest.mark.parametrize("fn", KERNELS)
def test_large_random_sizes_match_zlib(fn, rng):
    sizes = [1 << 14, (1 << 14) - 1, 1 << 20, *rng.integers(300, 3 << 20, 6)]
    for n in sizes:
        data = _bytes(rng, int(n))
        v = int(rng.integers(0, 1 << 32))
        assert fn(data) == zlib.crc32(data), n
        assert fn(data, v) == zlib.crc32(data, v), n


@pytest.mark.parametrize("fn", KERNELS)
def test_every_start_offset_matches_zlib(fn, rng):
    buf = bytearray(_bytes(rng, 64 + 4200))
    for offset in range(64):
        for n in (0, 1, 15, 16, 63, 64, 127, 128, 129, 143, 200, 1000, 4099):
            view = memoryview(buf)[offset:offset + n]
            assert fn(view, 7) == zlib.crc32(view, 7), (offset, n)


@pytest.mark.parametrize("fn", KERNELS)
def test_chaining_matches_zlib_of_the_concatenation(fn, rng):
    data = _bytes(rng, 50_000)
    for cut in (0, 1, 17, 64, 129, 4096, 33_333, 50_000):
        a, b = data[:cut], data[cut:]
        assert fn(b, fn(a)) == zlib.crc32(data), cut
    crc = 0
    for i in range(0, len(data), 777):
        crc = fn(data[i:i + 777], crc)
    assert crc == zlib.crc32(data)


@pytest.mark.parametrize("fn", KERNELS)
def test_running_value_is_taken_modulo_2_32_like_zlib(fn):
    for v in (-1, -(1 << 40), 1 << 32, (1 << 32) + 5, 1 << 70, np.uint32(9), True):
        assert fn(b"abcdefgh" * 20, v) == zlib.crc32(b"abcdefgh" * 20, v), v


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.int64,
                                   np.bool_, np.complex128])
def test_numpy_arrays_of_any_dtype_are_read_as_their_bytes(fn, dtype, rng):
    a = (rng.standard_normal((37, 41)) * 100).astype(dtype)
    assert fn(a) == zlib.crc32(a.tobytes())
    assert fn(a[3:20]) == zlib.crc32(a[3:20].tobytes())  # a C-contiguous slice
    ro = a.copy()
    ro.flags.writeable = False
    assert fn(ro) == zlib.crc32(a.tobytes())
    assert fn(np.empty((0, 5), dtype)) == 0
    assert fn(np.array(3, dtype)) == zlib.crc32(np.array(3, dtype).tobytes())


@pytest.mark.parametrize("fn", KERNELS)
def test_other_buffers(fn):
    data = bytes(range(256)) * 3
    for buf in (bytearray(data), memoryview(data), memoryview(data).cast("I"), b""):
        assert fn(buf) == zlib.crc32(buf)


@pytest.mark.parametrize("fn", KERNELS)
def test_non_contiguous_input_is_refused(fn):
    a = np.arange(200, dtype=np.float64).reshape(10, 20)
    with pytest.raises(ValueError,
                       match=r"not C-contiguous \(shape \(10, 10\), strides \(160, 16\)"):
        fn(a[:, ::2])
    with pytest.raises(ValueError, match="not C-contiguous"):
        fn(a.T)
    with pytest.raises(ValueError, match="not C-contiguous"):
        fn(memoryview(b"abcdefgh")[::2])


@pytest.mark.parametrize("fn", KERNELS)
def test_bad_arguments_are_refused(fn):
    with pytest.raises(TypeError, match="bytes-like object .* got str"):
        fn("text")
    with pytest.raises(TypeError, match="got list"):
        fn([1, 2, 3])
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
        fn(b"abc", 1.5)
    with pytest.raises(TypeError, match="'str' object cannot be interpreted as an integer"):
        fn(b"abc", "0")


def test_threads_share_the_kernel(rng):
    data = [_bytes(rng, 1 << 20) for _ in range(4)]
    want = [zlib.crc32(d) for d in data]
    got = [None] * 4

    def run(i):
        for _ in range(5):
            got[i] = crc32(data[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


def test_kernel_names_the_path_taken():
    assert checksum.kernel() in ("pclmul", "table")


# -- the constants, recomputed from the polynomial with GF(2) arithmetic --------------------
P = (1 << 32) | 0x04C11DB7  # x^32 + x^26 + x^23 + ... + 1


def _mod(a, p=P):
    """a mod p, polynomials over GF(2) as ints (bit i is the coefficient of x^i)."""
    dp = p.bit_length() - 1
    while a.bit_length() - 1 >= dp:
        a ^= p << (a.bit_length() - 1 - dp)
    return a


def _div(a, p=P):
    q, dp = 0, p.bit_length() - 1
    while a.bit_length() - 1 >= dp:
        s = a.bit_length() - 1 - dp
        q |= 1 << s
        a ^= p << s
    return q


def _reflect33(v):
    """The coefficients of x^32..x^0 in reversed order: bit j holds that of x^(32 - j)."""
    assert v < 1 << 33
    return int(format(v, "033b")[::-1], 2)


def test_gf2_helpers():
    assert _mod(P) == 0 and _mod(1 << 31) == 1 << 31 and _mod(1 << 32) == 0x04C11DB7
    a = (1 << 70) | 12345
    q, r = _div(a), _mod(a)
    prod = 0
    for i in range(q.bit_length()):  # carry-less q * P
        if q >> i & 1:
            prod ^= P << i
    assert prod ^ r == a
    assert _reflect33(P) == 0xEDB88320 << 1 | 1  # the reflected polynomial zlib's tables use


def test_constants_follow_from_the_polynomial():
    want = {"x544": _mod(1 << 544), "x480": _mod(1 << 480), "x160": _mod(1 << 160),
            "x96": _mod(1 << 96), "x64": _mod(1 << 64), "mu": _div(1 << 64), "p": P}
    assert _constants() == {k: _reflect33(v) for k, v in want.items()}
