"""CRC-32 of zip and zlib, fast: ``crc32(data, value=0)`` equals ``zlib.crc32(data, value)``.

Carry-less multiplication folding (PCLMULQDQ) where the CPU has it, slicing-by-8 tables
otherwise; the method and the derivation of its constants are in ``_crc32.h``. Unlike the
layer kernels this returns its result: a checksum is a value, not an output array.
"""

from cpython.number cimport PyNumber_Index
from cpython.buffer cimport PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release, \
    PyBuffer_IsContiguous, PyBUF_RECORDS_RO
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "_crc32.h" nogil:
    void pm_crc32_init()
    int pm_crc32_has_clmul()
    uint32_t pm_crc32(uint32_t crc, const unsigned char *p, size_t n, int clmul)
    uint64_t PM_CRC_X544, PM_CRC_X480, PM_CRC_X160, PM_CRC_X96, PM_CRC_X64, PM_CRC_MU, PM_CRC_P


pm_crc32_init()
cdef int _clmul = pm_crc32_has_clmul()

# Below this many bytes the GIL is kept: handing it back to a busy thread can cost far more
# than the CRC itself (~16 KiB take ~1 us folded).
cdef Py_ssize_t _NOGIL_BYTES = 1 << 14


cdef uint32_t _crc32(object data, object value, int clmul) except? 0xFFFFFFFF:
    if not PyObject_CheckBuffer(data):
        raise TypeError(f"data must be a bytes-like object (bytes, memoryview, numpy array), "
                        f"got {type(data).__name__}")
    # Any int, taken modulo 2^32, as zlib.crc32 does.
    cdef uint32_t crc = <uint32_t> (PyNumber_Index(value) & 0xFFFFFFFF)
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_RECORDS_RO)
    try:
        if not PyBuffer_IsContiguous(&view, b'C'):
            shape = tuple(view.shape[i] for i in range(view.ndim))
            strides = tuple(view.strides[i] for i in range(view.ndim))
            raise ValueError(f"data is not C-contiguous (shape {shape}, strides {strides}); "
                             "pass a contiguous copy")
        if view.len < _NOGIL_BYTES:
            return pm_crc32(crc, <const unsigned char *> view.buf, <size_t> view.len, clmul)
        with nogil:
            crc = pm_crc32(crc, <const unsigned char *> view.buf, <size_t> view.len, clmul)
        return crc
    finally:
        PyBuffer_Release(&view)


def crc32(data, value=0):
    """CRC-32 of the bytes of ``data`` (any C-contiguous buffer: bytes, bytearray, memoryview,
    numpy array), continuing from the CRC ``value`` of what came before:
    ``crc32(b, crc32(a)) == crc32(a + b) == zlib.crc32(a + b)``. Releases the GIL on large
    buffers.
    """
    return _crc32(data, value, _clmul)


def _crc32_table(data, value=0):
    """``crc32`` through the portable table loop only (what CPUs without PCLMULQDQ run)."""
    return _crc32(data, value, 0)


def kernel():
    """The kernel ``crc32`` uses on this CPU: ``"pclmul"`` or ``"table"``."""
    return "pclmul" if _clmul else "table"


def _constants():
    """The folding and reduction constants compiled in, by name (``x544`` is x^544 mod P),
    each as its 33 coefficients of x^32..x^0 in reversed bit order."""
    return {"x544": PM_CRC_X544, "x480": PM_CRC_X480, "x160": PM_CRC_X160, "x96": PM_CRC_X96,
            "x64": PM_CRC_X64, "mu": PM_CRC_MU, "p": PM_CRC_P}
