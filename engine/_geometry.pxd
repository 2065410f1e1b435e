# Sliding-window arithmetic shared by convolution and pooling: the one place for it. Kernels
# cimport it; Python reaches it through ``output_size`` of conv.pyx and of pooling.pyx (both
# ``window_positions``) and ``full_output_size`` of conv.pyx.
#
# Everything is Py_ssize_t: an axis may be longer than 2**31 (pooling) and products such as
# dilation * (kernel - 1) or (n - 1) * stride overflow an int long before that. Window
# arguments are checked against INT_MAX (``window_args``), so no product here overflows.

from libc.limits cimport INT_MAX


cdef inline Py_ssize_t out_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                Py_ssize_t pad, Py_ssize_t dilation, bint ceil_mode,
                                Py_ssize_t *pads) noexcept nogil:
    """Window positions along an axis of ``size``; writes the (leading, trailing) pads.

    ``kernel`` taps ``dilation`` apart move by ``stride`` over the axis with ``pad`` zeros on
    each side. ``pad = -1`` is SAME padding (TensorFlow's, as in BigDL): ceil(size / stride)
    positions, the total pad split with the odd one at the end; ceil_mode is moot there.
    Ceil mode counts a last partial window, but only one that starts inside the input or its
    leading pad (PyTorch's rule; Torch7 and BigDL apply it only when pad > 0, leaving an empty
    window when stride > kernel). A result <= 0 means the window does not fit.
    """
    cdef Py_ssize_t span = dilation * (kernel - 1) + 1
    cdef Py_ssize_t n, total, room
    if pad == -1:
        n = (size + stride - 1) // stride
        total = (n - 1) * stride + span - size
        if total < 0:
            total = 0
        pads[0] = total // 2
        pads[1] = total - total // 2
        return n
    pads[0] = pads[1] = pad
    room = size + 2 * pad - span
    if room < 0:
        return 0
    if not ceil_mode:
        return room // stride + 1
    n = (room + stride - 1) // stride + 1
    if (n - 1) * stride >= size + pad:
        n -= 1
    return n


cdef inline Py_ssize_t full_size(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                 Py_ssize_t pad, Py_ssize_t adj) noexcept nogil:
    """Output length of a transposed convolution: the input length of the convolution it
    transposes, (size - 1) * stride - 2 * pad + kernel + adj (adj < stride picks one of the
    ``stride`` lengths that convolve to ``size``). <= 0 means no such output."""
    if size <= 0:
        return 0
    return (size - 1) * stride - 2 * pad + kernel + adj


cdef inline int window_args(Py_ssize_t kernel, Py_ssize_t stride, Py_ssize_t pad,
                            Py_ssize_t dilation) except -1:
    """A window's arguments, which the kernels' loops hold in ints, are at most INT_MAX."""
    if kernel > INT_MAX or stride > INT_MAX or pad > INT_MAX or dilation > INT_MAX:
        raise ValueError(f"a window of kernel {kernel}, stride {stride}, pad {pad}, dilation "
                         f"{dilation} exceeds the limit {INT_MAX}")
    return 0


cdef inline Py_ssize_t window_positions(Py_ssize_t size, Py_ssize_t kernel, Py_ssize_t stride,
                                        Py_ssize_t pad, Py_ssize_t dilation,
                                        bint ceil_mode) except -1:
    """out_size for Python callers: the window checked first, the pads dropped."""
    cdef Py_ssize_t pads[2]
    if kernel < 1 or stride < 1 or dilation < 1 or pad < -1 or size < 0:
        raise ValueError(f"bad window: size {size}, kernel {kernel}, stride {stride}, "
                         f"pad {pad}, dilation {dilation}")
    window_args(kernel, stride, pad, dilation)
    return out_size(size, kernel, stride, pad, dilation, ceil_mode, pads)


cdef inline void cols_in(Py_ssize_t start, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t n,
                         Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the ox in [0, n) with 0 <= start + ox * stride < size (the outputs whose
    window has its tap at ``start`` relative to the window's first position inside the axis)."""
    cdef Py_ssize_t a = 0, b = 0
    if start < 0:
        a = (-start + stride - 1) // stride
    if size - start > 0:
        b = (size - start + stride - 1) // stride
    lo[0] = min(a, n)
    hi[0] = max(min(b, n), lo[0])
