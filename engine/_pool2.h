/* Max pooling over whole 2x2 windows moved by 2, one output row at a time, vectorised: the
   row pairs of 2 * L input columns are loaded as vectors, split into their even and odd
   columns (shuffles), and the four taps of L outputs meet as in the scalar loop, in its
   order: the first tap, then (0, 1), (1, 0), (1, 1), a later tap winning where it is larger
   or NaN (so a NaN wins, and the first of equal taps stays). Each output's index is its
   winning tap's flat position in the plane, at + 2 * ox (+ 1 for an odd column, + W for the
   second row); ``at`` is the position of r0[0]. A row of n >= L outputs ends with a block
   that overlaps the one before it (LeNet's 14 = 8 + 8 - 2), a shorter one runs scalar.

   float32, (64, 6, 28, 28) -> (64, 6, 14, 14): the scalar loop of pooling.pyx took about 10
   cycles an output, this one about 3 (the indices, written one by one, are most of it). */

#ifndef PM_POOL2_H
#define PM_POOL2_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_POOL2_CLONES __attribute__((target_clones("avx2", "default"), unused))
#else
#define PM_POOL2_CLONES __attribute__((unused))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef float pm_pool2_v8f __attribute__((vector_size(32), aligned(4)));
typedef int pm_pool2_v8i __attribute__((vector_size(32)));
typedef double pm_pool2_v4d __attribute__((vector_size(32), aligned(8)));
typedef long long pm_pool2_v4l __attribute__((vector_size(32)));

#define PM_POOL2_TAP(V, I, v, code_v)                                                             \
    do {                                                                                      \
        I take_ = (v > m) | (v != v);                                                         \
        m = (V) ((take_ & (I) v) | (~take_ & (I) m));                                         \
        code = (take_ & code_v) | (~take_ & code);                                            \
    } while (0)

#define PM_POOL2_DEFINE(NAME, T, V, I, L, EVEN, ODD)                                          \
static PM_POOL2_CLONES void NAME(const T *r0, const T *r1, T *y, ptrdiff_t *idx,              \
                                 ptrdiff_t at, ptrdiff_t W, ptrdiff_t n) {                    \
    ptrdiff_t ox = 0, q;                                                                      \
    const I even = EVEN, odd = ODD, one = one_ - zero_, two = one + one, three = two + one;   \
    for (; ox < n && n >= L; ox += L) {                                                       \
        if (ox + L > n) ox = n - L;  /* the last block overlaps the one before: same results */ \
        V a0 = *(const V *) (r0 + 2 * ox), a1 = *(const V *) (r0 + 2 * ox + L);               \
        V b0 = *(const V *) (r1 + 2 * ox), b1 = *(const V *) (r1 + 2 * ox + L);               \
        V m = __builtin_shuffle(a0, a1, even), v;                                             \
        I code = zero_ - zero_;                                                               \
        v = __builtin_shuffle(a0, a1, odd);                                                   \
        PM_POOL2_TAP(V, I, v, one);                                                               \
        v = __builtin_shuffle(b0, b1, even);                                                  \
        PM_POOL2_TAP(V, I, v, two);                                                               \
        v = __builtin_shuffle(b0, b1, odd);                                                   \
        PM_POOL2_TAP(V, I, v, three);                                                             \
        *(V *) (y + ox) = m;                                                                  \
        for (q = 0; q < L; q++)                                                               \
            idx[ox + q] = at + 2 * (ox + q) + (code[q] & 1) + (code[q] >> 1) * W;             \
    }                                                                                         \
    for (; ox < n; ox++) {                                                                    \
        T mm = r0[2 * ox], u;                                                                 \
        ptrdiff_t i = at + 2 * ox;                                                            \
        u = r0[2 * ox + 1];                                                                   \
        if (u > mm || u != u) { mm = u; i = at + 2 * ox + 1; }                                \
        u = r1[2 * ox];                                                                       \
        if (u > mm || u != u) { mm = u; i = at + W + 2 * ox; }                                \
        u = r1[2 * ox + 1];                                                                   \
        if (u > mm || u != u) { mm = u; i = at + W + 2 * ox + 1; }                            \
        y[ox] = mm;                                                                           \
        idx[ox] = i;                                                                          \
    }                                                                                         \
}

#define zero_ ((pm_pool2_v8i) {0, 0, 0, 0, 0, 0, 0, 0})
#define one_ ((pm_pool2_v8i) {1, 1, 1, 1, 1, 1, 1, 1})
PM_POOL2_DEFINE(pm_max2x2_row_f, float, pm_pool2_v8f, pm_pool2_v8i, 8,
                ((pm_pool2_v8i) {0, 2, 4, 6, 8, 10, 12, 14}),
                ((pm_pool2_v8i) {1, 3, 5, 7, 9, 11, 13, 15}))
#undef zero_
#undef one_
#define zero_ ((pm_pool2_v4l) {0, 0, 0, 0})
#define one_ ((pm_pool2_v4l) {1, 1, 1, 1})
PM_POOL2_DEFINE(pm_max2x2_row_d, double, pm_pool2_v4d, pm_pool2_v4l, 4,
                ((pm_pool2_v4l) {0, 2, 4, 6}), ((pm_pool2_v4l) {1, 3, 5, 7}))
#undef zero_
#undef one_

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif
