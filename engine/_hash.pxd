# Counter-based random draws for the noise kernels (RReLU, the spatial dropouts, the Gaussian
# layers): draw i of a forward is a function of one 64-bit seed (from the layer's generator)
# and i alone, so a whole draw needs no state between elements and no allocation, and one seed
# reproduces it. The hash is splitmix64's finaliser over the Weyl sequence seed + i * golden,
# as engine/dropout.pyx draws its masks.

from libc.math cimport cos, log, sqrt
from libc.stdint cimport uint64_t


cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    """The splitmix64 finaliser: a bijection that scrambles every input bit into the output."""
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t draw64(uint64_t seed, uint64_t i) noexcept nogil:
    """Draw ``i`` of the stream ``seed``: 64 uniformly random bits."""
    return mix64(seed + i * <uint64_t> 0x9E3779B97F4A7C15ULL)


cdef inline double uniform01(uint64_t seed, uint64_t i) noexcept nogil:
    """Draw ``i`` as a double uniform in [0, 1): its top 53 bits times 2**-53."""
    return <double> (draw64(seed, i) >> 11) * 1.1102230246251565e-16


cdef inline uint64_t keep_cut(double p) noexcept nogil:
    """The cut of a Bernoulli(1 - p) draw: kept when ``draw64 >> 11 >= keep_cut(p)`` (exact
    for a double p: the same cut as engine/dropout.pyx)."""
    return <uint64_t> (p * 9007199254740992.0)


cdef inline double normal01(uint64_t seed, uint64_t i) noexcept nogil:
    """Draw ``i`` as a standard normal: Box-Muller on draws 2i and 2i + 1 of the stream (the
    first mapped to (0, 1] so that its logarithm is finite)."""
    cdef double u1 = <double> ((draw64(seed, 2 * i) >> 11) + 1) * 1.1102230246251565e-16
    cdef double u2 = uniform01(seed, 2 * i + 1)
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)
