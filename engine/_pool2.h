/* Max pooling over whole 2x2 windows moved by 2, one output row at a time, vectorised: the
   row pairs of 2 * L input columns are loaded as vectors, split into their even and odd
   columns (shuffles), and the four taps of L outputs meet as in the scalar loop, in its
   order: the first tap, then (0, 1), (1, 0), (1, 1), a later tap winning where it is larger
   or NaN (so a NaN wins, and the first of equal taps stays). Each output's index is its
   winning tap's flat position in the plane, at + 2 * ox (+ 1 for an odd column, + W for the
   second row), worked out in vectors; ``at`` is the position of r0[0]. Without idx (NULL)
   only the maxima are written. A row of n >= L outputs ends with a block that overlaps the
   one before it (LeNet's 14 = 8 + 8 - 2); a shorter one (LeNet's second pooling, 5) runs one
   block of which n lanes are kept.

   float32, (64, 6, 28, 28) -> (64, 6, 14, 14): the scalar loop of pooling.pyx took about 10
   cycles an output, the vectors with the indices written one by one about 3. */

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

typedef float pm_pool2_v8f __attribute__((vector_size(32)));
typedef float pm_pool2_v8fu __attribute__((vector_size(32), aligned(4)));
typedef int pm_pool2_v8i __attribute__((vector_size(32)));
typedef double pm_pool2_v4d __attribute__((vector_size(32)));
typedef double pm_pool2_v4du __attribute__((vector_size(32), aligned(8)));
typedef long long pm_pool2_v4l __attribute__((vector_size(32)));
/* indices: ptrdiff_t lanes (the type the caller's array holds), stored unaligned */
typedef ptrdiff_t pm_pool2_v8p __attribute__((vector_size(64)));
typedef ptrdiff_t pm_pool2_v8pu __attribute__((vector_size(64), aligned(8)));
typedef ptrdiff_t pm_pool2_v4p __attribute__((vector_size(32)));
typedef ptrdiff_t pm_pool2_v4pu __attribute__((vector_size(32), aligned(8)));

#define PM_POOL2_TAP(V, I, v, code_v)                                                         \
    do {                                                                                      \
        I take_ = (v > m) | (v != v);                                                         \
        m = (V) ((take_ & (I) v) | (~take_ & (I) m));                                         \
        if (want) code = (take_ & code_v) | (~take_ & code);                                  \
    } while (0)

/* NAME##_rows: the row's outputs (and, with ``want``, their indices); NAME: the entry, one
   branch on idx so that each specialisation keeps only its work. A block of L outputs reads
   2 L columns of both rows; a row of n < L outputs runs one such block where those reads
   stay before ``end`` (they pass the row's end into the rows after it, whose lanes are
   dropped: only n lanes are stored), else the scalar loop. */
#define PM_POOL2_DEFINE(NAME, T, V, VU, I, IL, ILU, L, EVEN, ODD, LANES2)                     \
static inline __attribute__((always_inline)) void NAME##_rows(                                \
        const T *r0, const T *r1, T *y, ptrdiff_t *idx, ptrdiff_t at, ptrdiff_t W,            \
        ptrdiff_t n, const T *end, const int want) {                                          \
    ptrdiff_t ox = 0, q;                                                                      \
    const I even = EVEN, odd = ODD, one = one_ - zero_, two = one + one, three = two + one;   \
    const IL lanes2 = LANES2;                                                                 \
    if (n >= L || r1 + 2 * L <= end)                                                          \
        for (;;) {                                                                            \
            const int part = n < L;                                                           \
            if (!part && ox + L > n) ox = n - L; /* overlaps the one before */                \
            V a0 = *(const VU *) (r0 + 2 * ox), a1 = *(const VU *) (r0 + 2 * ox + L);         \
            V b0 = *(const VU *) (r1 + 2 * ox), b1 = *(const VU *) (r1 + 2 * ox + L);         \
            V m = __builtin_shuffle(a0, a1, even), v;                                         \
            I code = zero_ - zero_;                                                           \
            v = __builtin_shuffle(a0, a1, odd);                                               \
            PM_POOL2_TAP(V, I, v, one);                                                       \
            v = __builtin_shuffle(b0, b1, even);                                              \
            PM_POOL2_TAP(V, I, v, two);                                                       \
            v = __builtin_shuffle(b0, b1, odd);                                               \
            PM_POOL2_TAP(V, I, v, three);                                                     \
            if (want) {                                                                       \
                IL c = __builtin_convertvector(code, IL);                                     \
                IL ix = (at + 2 * ox) + lanes2 + (c & 1) + (c >> 1) * W;                      \
                if (part)                                                                     \
                    for (q = 0; q < n; q++) idx[q] = ix[q];                                   \
                else                                                                          \
                    *(ILU *) (idx + ox) = ix;                                                 \
            }                                                                                 \
            if (part) {                                                                       \
                for (q = 0; q < n; q++) y[q] = m[q];                                          \
                return;                                                                       \
            }                                                                                 \
            *(VU *) (y + ox) = m;                                                             \
            ox += L;                                                                          \
            if (ox >= n) return;                                                              \
        }                                                                                     \
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
        if (want) idx[ox] = i;                                                                \
    }                                                                                         \
}                                                                                             \
static PM_POOL2_CLONES void NAME(const T *r0, const T *r1, T *y, ptrdiff_t *idx,              \
                                 ptrdiff_t at, ptrdiff_t W, ptrdiff_t n, const T *end) {      \
    if (idx)                                                                                  \
        NAME##_rows(r0, r1, y, idx, at, W, n, end, 1);                                        \
    else                                                                                      \
        NAME##_rows(r0, r1, y, idx, at, W, n, end, 0);                                        \
}

#define zero_ ((pm_pool2_v8i) {0, 0, 0, 0, 0, 0, 0, 0})
#define one_ ((pm_pool2_v8i) {1, 1, 1, 1, 1, 1, 1, 1})
PM_POOL2_DEFINE(pm_max2x2_row_f, float, pm_pool2_v8f, pm_pool2_v8fu, pm_pool2_v8i,
                pm_pool2_v8p, pm_pool2_v8pu, 8,
                ((pm_pool2_v8i) {0, 2, 4, 6, 8, 10, 12, 14}),
                ((pm_pool2_v8i) {1, 3, 5, 7, 9, 11, 13, 15}),
                ((pm_pool2_v8p) {0, 2, 4, 6, 8, 10, 12, 14}))
#undef zero_
#undef one_
#define zero_ ((pm_pool2_v4l) {0, 0, 0, 0})
#define one_ ((pm_pool2_v4l) {1, 1, 1, 1})
PM_POOL2_DEFINE(pm_max2x2_row_d, double, pm_pool2_v4d, pm_pool2_v4du, pm_pool2_v4l,
                pm_pool2_v4p, pm_pool2_v4pu, 4,
                ((pm_pool2_v4l) {0, 2, 4, 6}), ((pm_pool2_v4l) {1, 3, 5, 7}),
                ((pm_pool2_v4p) {0, 2, 4, 6}))
#undef zero_
#undef one_

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif
