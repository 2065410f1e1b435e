/* dst[j * ldd + i] := src[i * lds + j] (+ add[j]) for a (rows, cols) block of floats: the
   transposing copies of the convolution's transposed forward. On x86-64 the block is walked
   16 source rows at a time (each destination row then gets whole 64-byte lines in turn) in
   4x4 tiles: four unaligned SSE loads, the _MM_TRANSPOSE4_PS shuffles, four stores (baseline
   SSE; GCC turns the plain strided loop into scalar loads and unpacks, about 2x slower here).
   Edges, and other targets, take the scalar loop. add may be NULL. */

#ifndef PM_TRANSPOSE_H
#define PM_TRANSPOSE_H

#include <stddef.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

static inline void pm_transpose_f(const float *src, size_t lds, float *dst, size_t ldd,
                                  int rows, int cols, const float *add)
{
    int i0 = 0, i1, i, j;
#if defined(__SSE__)
    /* 16 source rows at a time: every destination row gets a whole 64-byte line in a row */
    for (; i0 + 4 <= rows; i0 = i1) {
        int end = i0 + 16 <= rows ? i0 + 16 : rows & ~3;
        for (j = 0; j + 4 <= cols; j += 4) {
            __m128 a0 = _mm_set1_ps(add ? add[j] : 0.0f);
            __m128 a1 = _mm_set1_ps(add ? add[j + 1] : 0.0f);
            __m128 a2 = _mm_set1_ps(add ? add[j + 2] : 0.0f);
            __m128 a3 = _mm_set1_ps(add ? add[j + 3] : 0.0f);
            float *d = dst + (size_t) j * ldd;
            for (i = i0; i < end; i += 4) {
                const float *s = src + (size_t) i * lds + j;
                __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + lds);
                __m128 r2 = _mm_loadu_ps(s + 2 * lds), r3 = _mm_loadu_ps(s + 3 * lds);
                _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                _mm_storeu_ps(d + i, _mm_add_ps(r0, a0));
                _mm_storeu_ps(d + ldd + i, _mm_add_ps(r1, a1));
                _mm_storeu_ps(d + 2 * ldd + i, _mm_add_ps(r2, a2));
                _mm_storeu_ps(d + 3 * ldd + i, _mm_add_ps(r3, a3));
            }
        }
        for (; j < cols; j++)
            for (i = i0; i < end; i++)
                dst[(size_t) j * ldd + i] = src[(size_t) i * lds + j] + (add ? add[j] : 0.0f);
        i1 = end;
    }
#endif
    for (j = 0; j < cols; j++)
        for (i = i0; i < rows; i++)
            dst[(size_t) j * ldd + i] = src[(size_t) i * lds + j] + (add ? add[j] : 0.0f);
}

#endif
