/* The float32 forward of Linear without BLAS: y[m, n] := bias[n] + sum_k x[m, k] * w[n, k]
   for an (M, K) batch x and an (N, K) weight w, both rows contiguous, y (M, N).

   BLAS packs the whole weight for every call (784 -> 256: 800 KB read and written again);
   here the weight is read where it lies. The batch is the one operand packed: x.T in panels
   of 16 columns (the last one of the rest, rounded up to 8 with zeros), k-major, so that a
   panel row is two 8-float vectors, one 64-byte line (the pack starts on a line). Each step
   of the kernel broadcasts w[n, k] of six weight rows from memory, loads one panel row and
   runs 12 fused multiply-adds into 12 accumulators (6 weight rows x 16 batch rows):
   FMA-bound on AVX2's 16 registers, the BLIS shape for them. The six weight rows (6 K
   floats) stay in L1 while the panels (the packed batch, K x M floats) come from L2, each
   weight row is read from memory once. The bias starts the accumulators; at the end each
   block is transposed in registers and stored as 4- and 2-float pieces of y's rows, so y
   needs no second pass. Edges (fewer than 6 weight rows, a batch not a multiple of 16) run
   the same loop with fewer accumulators and store through a small buffer. Sums run in k
   order per output, so NaN and infinities propagate as in any dot product.

   Against the 4 x 24 block this replaced (a C harness, the two alternated with a 2 MB cache
   flush between calls, the MLP 784-256-256-10 at batch 64, 1 thread, Zen 3, median forward):
   433-490 us against 535-582 us. Batch 64 is four full panels instead of 24 + 24 + a
   half-used 16, and the pack is read 43 times a layer instead of 64 (alone: 8-10%); a panel
   row no longer straddles cache lines (0-9%, most when the machine is busy); the k loop
   unrolled eight times runs a quarter of its own instructions per step, which counts when
   the core is shared (9-10%; 4 and 16 times did as well). Tried and left: cutting K in
   blocks of 96-256 so that a panel's slice stays in L1 (sums kept in a scratch between
   blocks: even or up to 8% slower), the panels outside the weight rows (weight read four
   times: 1-2% slower), software prefetch of the weight rows ahead or of the next group
   (0-4% slower).

   On a core with AVX-512 a full panel row is one 64-byte vector: blocks of 6 weight rows by
   four panels (64 batch rows) keep 24 of its 32 registers summing, 12 by one panel where
   fewer are left (pm_linear_rows12). Every block fuses each multiply-add, as the "fma"
   clone of the 8-float blocks that AVX2 cores run does, and their x86-64-v4 clone on an
   AVX-512 core, in the same k order: the numbers depend neither on the blocks (tested on
   each core) nor on the kind of core (the same fused operations in the same order). On a
   Zen 5 core the MLP's three layers at batch 64 went from 287 to 156-164 us with the
   12 x 16 blocks (multiplies and adds apart, as GCC built the "avx512f" clone then: 220
   GFLOP/s against OpenBLAS's 101 with its Haswell kernels and 177 with its SkylakeX ones;
   bench/bench_linear.py --packed); fused, the 6 x 64 blocks run 784 -> 256 at batch 64 at
   232 GFLOP/s where the 12 x 16 unfused ran at 209 (0.90 of the time; at batch 128, 0.91;
   512, 0.88: a C harness, the two alternated). */

#ifndef PM_LINEAR_H
#define PM_LINEAR_H

#include <stddef.h>

#include "_wide.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* "fma": AVX with fused multiply-adds, which GCC's "avx2" target lacks; "arch=x86-64-v4":
   AVX-512 with them ("avx512f" alone has none: its clone multiplied and added apart) */
#define PM_LINEAR_CLONES __attribute__((target_clones("arch=x86-64-v4", "fma", "default"), \
                                                  unused))
/* The 64-byte blocks, for a core with AVX-512 (pm_linear_wide) */
#define PM_LINEAR_WIDE __attribute__((target("arch=x86-64-v4"), unused))
#else
#define PM_LINEAR_CLONES __attribute__((unused))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float pm_lin_v8 __attribute__((vector_size(32), aligned(4)));
typedef float pm_lin_v4 __attribute__((vector_size(16), aligned(4)));
typedef float pm_lin_v2 __attribute__((vector_size(8), aligned(4)));
typedef int pm_lin_i8 __attribute__((vector_size(32)));
typedef float pm_lin_v16 __attribute__((vector_size(64), aligned(4)));

/* Columns of a batch panel; weight rows of a block. */
#define PM_LINEAR_PANEL 16
#define PM_LINEAR_ROWS 6

/* Floats of the packed batch for M rows of K: the scratch of the packed forward (15 more
   than the panels, for their start on a 64-byte line). */
static inline size_t pm_linear_pack_size(size_t M, size_t K) {
    return ((M + 7) & ~(size_t) 7) * K + 15;
}

/* The packed batch's start in the scratch: its first 64-byte line. */
static inline float *pm_linear_aligned(const float *scratch) {
    return (float *) (((size_t) scratch + 63) & ~(size_t) 63);
}

/* pack[k * pw + l] := x[(m0 + l) * K + k] for the panel of pw columns at m0 (0 past M).
   Eight batch rows at a time: 8 x 8 blocks transposed in registers (a plain strided copy
   cost a fifth of the 784 -> 256 product at batch 64). */
static inline __attribute__((always_inline)) void pm_linear_pack(
        const float *x, int M, int K, int m0, int pw, float *pack) {
    const pm_lin_i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const pm_lin_i8 even = {0, 1, 8, 9, 4, 5, 12, 13}, odd = {2, 3, 10, 11, 6, 7, 14, 15};
    const pm_lin_i8 low = {0, 1, 2, 3, 8, 9, 10, 11}, high = {4, 5, 6, 7, 12, 13, 14, 15};
    int l0, l, k;
    for (l0 = 0; l0 < pw; l0 += 8) {
        const float *xr = x + (size_t) (m0 + l0) * K;
        float *p = pack + l0;
        k = 0;
        if (m0 + l0 + 8 <= M) {
            for (; k + 8 <= K; k += 8) {
                const float *q = xr + k;
                pm_lin_v8 r0 = *(const pm_lin_v8 *) q, r1 = *(const pm_lin_v8 *) (q + K);
                pm_lin_v8 r2 = *(const pm_lin_v8 *) (q + 2 * (size_t) K);
                pm_lin_v8 r3 = *(const pm_lin_v8 *) (q + 3 * (size_t) K);
                pm_lin_v8 r4 = *(const pm_lin_v8 *) (q + 4 * (size_t) K);
                pm_lin_v8 r5 = *(const pm_lin_v8 *) (q + 5 * (size_t) K);
                pm_lin_v8 r6 = *(const pm_lin_v8 *) (q + 6 * (size_t) K);
                pm_lin_v8 r7 = *(const pm_lin_v8 *) (q + 7 * (size_t) K);
                pm_lin_v8 t0 = __builtin_shuffle(r0, r1, lo), t1 = __builtin_shuffle(r0, r1, hi);
                pm_lin_v8 t2 = __builtin_shuffle(r2, r3, lo), t3 = __builtin_shuffle(r2, r3, hi);
                pm_lin_v8 t4 = __builtin_shuffle(r4, r5, lo), t5 = __builtin_shuffle(r4, r5, hi);
                pm_lin_v8 t6 = __builtin_shuffle(r6, r7, lo), t7 = __builtin_shuffle(r6, r7, hi);
                pm_lin_v8 u0 = __builtin_shuffle(t0, t2, even), u1 = __builtin_shuffle(t0, t2, odd);
                pm_lin_v8 u2 = __builtin_shuffle(t1, t3, even), u3 = __builtin_shuffle(t1, t3, odd);
                pm_lin_v8 u4 = __builtin_shuffle(t4, t6, even), u5 = __builtin_shuffle(t4, t6, odd);
                pm_lin_v8 u6 = __builtin_shuffle(t5, t7, even), u7 = __builtin_shuffle(t5, t7, odd);
                float *d = p + (size_t) k * pw;
                *(pm_lin_v8 *) d = __builtin_shuffle(u0, u4, low);
                *(pm_lin_v8 *) (d + pw) = __builtin_shuffle(u1, u5, low);
                *(pm_lin_v8 *) (d + 2 * pw) = __builtin_shuffle(u2, u6, low);
                *(pm_lin_v8 *) (d + 3 * pw) = __builtin_shuffle(u3, u7, low);
                *(pm_lin_v8 *) (d + 4 * pw) = __builtin_shuffle(u0, u4, high);
                *(pm_lin_v8 *) (d + 5 * pw) = __builtin_shuffle(u1, u5, high);
                *(pm_lin_v8 *) (d + 6 * pw) = __builtin_shuffle(u2, u6, high);
                *(pm_lin_v8 *) (d + 7 * pw) = __builtin_shuffle(u3, u7, high);
            }
        }
        for (; k < K; k++)
            for (l = 0; l < 8; l++)
                p[(size_t) k * pw + l] = m0 + l0 + l < M ? xr[(size_t) l * K + k] : 0.0f;
    }
}

/* y[l * ldy + i] := s_i[l] for l < 8, i < 4: a 4 x 8 block stored transposed. */
static inline __attribute__((always_inline)) void pm_linear_store4x8(
        float *y, size_t ldy, pm_lin_v8 s0, pm_lin_v8 s1, pm_lin_v8 s2, pm_lin_v8 s3) {
    const pm_lin_i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const pm_lin_i8 even = {0, 1, 8, 9, 4, 5, 12, 13}, odd = {2, 3, 10, 11, 6, 7, 14, 15};
    pm_lin_v8 t0 = __builtin_shuffle(s0, s1, lo), t1 = __builtin_shuffle(s0, s1, hi);
    pm_lin_v8 t2 = __builtin_shuffle(s2, s3, lo), t3 = __builtin_shuffle(s2, s3, hi);
    pm_lin_v8 u0 = __builtin_shuffle(t0, t2, even), u1 = __builtin_shuffle(t0, t2, odd);
    pm_lin_v8 u2 = __builtin_shuffle(t1, t3, even), u3 = __builtin_shuffle(t1, t3, odd);
    *(pm_lin_v4 *) (y) = __builtin_shufflevector(u0, u0, 0, 1, 2, 3);
    *(pm_lin_v4 *) (y + ldy) = __builtin_shufflevector(u1, u1, 0, 1, 2, 3);
    *(pm_lin_v4 *) (y + 2 * ldy) = __builtin_shufflevector(u2, u2, 0, 1, 2, 3);
    *(pm_lin_v4 *) (y + 3 * ldy) = __builtin_shufflevector(u3, u3, 0, 1, 2, 3);
    *(pm_lin_v4 *) (y + 4 * ldy) = __builtin_shufflevector(u0, u0, 4, 5, 6, 7);
    *(pm_lin_v4 *) (y + 5 * ldy) = __builtin_shufflevector(u1, u1, 4, 5, 6, 7);
    *(pm_lin_v4 *) (y + 6 * ldy) = __builtin_shufflevector(u2, u2, 4, 5, 6, 7);
    *(pm_lin_v4 *) (y + 7 * ldy) = __builtin_shufflevector(u3, u3, 4, 5, 6, 7);
}

/* y[l * ldy + i] := s_i[l] for l < 8, i < 2: a 2 x 8 block stored transposed. */
static inline __attribute__((always_inline)) void pm_linear_store2x8(
        float *y, size_t ldy, pm_lin_v8 s0, pm_lin_v8 s1) {
    const pm_lin_i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
    pm_lin_v8 t0 = __builtin_shuffle(s0, s1, lo), t1 = __builtin_shuffle(s0, s1, hi);
    *(pm_lin_v2 *) (y) = __builtin_shufflevector(t0, t0, 0, 1);
    *(pm_lin_v2 *) (y + ldy) = __builtin_shufflevector(t0, t0, 2, 3);
    *(pm_lin_v2 *) (y + 2 * ldy) = __builtin_shufflevector(t1, t1, 0, 1);
    *(pm_lin_v2 *) (y + 3 * ldy) = __builtin_shufflevector(t1, t1, 2, 3);
    *(pm_lin_v2 *) (y + 4 * ldy) = __builtin_shufflevector(t0, t0, 4, 5);
    *(pm_lin_v2 *) (y + 5 * ldy) = __builtin_shufflevector(t0, t0, 6, 7);
    *(pm_lin_v2 *) (y + 6 * ldy) = __builtin_shufflevector(t1, t1, 4, 5);
    *(pm_lin_v2 *) (y + 7 * ldy) = __builtin_shufflevector(t1, t1, 6, 7);
}

/* The block of R weight rows (a, rows lda apart) by one panel of 8 NV batch rows (b):
   y[l * ldy + i] := bias[i] + sum_k a[i * lda + k] * b[k * 8 NV + l] for i < R, l < mv
   (the batch rows that exist; the panel's zero columns past them are not stored). */
#define PM_LINEAR_KERNEL(NAME, R, NV)                                                         \
static inline __attribute__((always_inline)) void NAME(                                     \
        int K, const float *a, size_t lda, const float *b, const float *bias, float *y,      \
        size_t ldy, int mv) {                                                                \
    const pm_lin_v8 zero = {0, 0, 0, 0, 0, 0, 0, 0};                                         \
    pm_lin_v8 s[R][NV];                                                                      \
    int i, j, k, l;                                                                          \
    _Pragma("GCC unroll 8") for (i = 0; i < R; i++) {                                        \
        float c = bias ? bias[i] : 0.0f;                                                     \
        _Pragma("GCC unroll 4") for (j = 0; j < NV; j++)                                     \
            s[i][j] = zero + c;                                                              \
    }                                                                                        \
    _Pragma("GCC unroll 8") for (k = 0; k < K; k++) {                                        \
        pm_lin_v8 u[NV];                                                                     \
        _Pragma("GCC unroll 4") for (j = 0; j < NV; j++)                                     \
            u[j] = *(const pm_lin_v8 *) (b + (size_t) k * (8 * NV) + 8 * j);               \
        _Pragma("GCC unroll 8") for (i = 0; i < R; i++) {                                    \
            float wk = a[(size_t) i * lda + k];                                              \
            _Pragma("GCC unroll 4") for (j = 0; j < NV; j++) s[i][j] += wk * u[j];           \
        }                                                                                    \
    }                                                                                        \
    if (R >= 4 && mv == 8 * NV) {                                                            \
        _Pragma("GCC unroll 4") for (j = 0; j < NV; j++) {                                   \
            pm_linear_store4x8(y + (size_t) 8 * j * ldy, ldy, s[0][j], s[R > 1 ? 1 : 0][j],  \
                               s[R > 2 ? 2 : 0][j], s[R > 3 ? 3 : 0][j]);                    \
            if (R == 6)                                                                      \
                pm_linear_store2x8(y + (size_t) 8 * j * ldy + 4, ldy, s[R > 4 ? 4 : 0][j],   \
                                   s[R > 5 ? 5 : 0][j]);                                     \
            else if (R == 5)                                                                 \
                for (l = 0; l < 8; l++)                                                      \
                    y[(size_t) (8 * j + l) * ldy + 4] = s[R > 4 ? 4 : 0][j][l];              \
        }                                                                                    \
    } else {                                                                                 \
        float buf[R][8 * NV];                                                                \
        _Pragma("GCC unroll 8") for (i = 0; i < R; i++)                                      \
            _Pragma("GCC unroll 4") for (j = 0; j < NV; j++)                                 \
                *(pm_lin_v8 *) (buf[i] + 8 * j) = s[i][j];                                   \
        for (l = 0; l < mv; l++)                                                             \
            for (i = 0; i < R; i++) y[(size_t) l * ldy + i] = buf[i][l];                     \
    }                                                                                        \
}

PM_LINEAR_KERNEL(pm_linear_k62, 6, 2)
PM_LINEAR_KERNEL(pm_linear_k52, 5, 2)
PM_LINEAR_KERNEL(pm_linear_k42, 4, 2)
PM_LINEAR_KERNEL(pm_linear_k32, 3, 2)
PM_LINEAR_KERNEL(pm_linear_k22, 2, 2)
PM_LINEAR_KERNEL(pm_linear_k12, 1, 2)
PM_LINEAR_KERNEL(pm_linear_k61, 6, 1)
PM_LINEAR_KERNEL(pm_linear_k51, 5, 1)
PM_LINEAR_KERNEL(pm_linear_k41, 4, 1)
PM_LINEAR_KERNEL(pm_linear_k31, 3, 1)
PM_LINEAR_KERNEL(pm_linear_k21, 2, 1)
PM_LINEAR_KERNEL(pm_linear_k11, 1, 1)

/* Batch panels of the packed forward: ceil(M / PM_LINEAR_PANEL). */
static inline int pm_linear_panels(int M) {
    return (M + PM_LINEAR_PANEL - 1) / PM_LINEAR_PANEL;
}

/* Pack panels [p0, p1) of x (M, K) into scratch (pm_linear_pack_size(M, K) floats). */
static PM_LINEAR_CLONES void pm_linear_pack_panels(int M, int K, const float *x,
                                                   float *scratch, int p0, int p1) {
    int p, m0, pw, Mp = (M + 7) & ~7;
    float *pack = pm_linear_aligned(scratch);
    for (p = p0; p < p1; p++) {
        m0 = p * PM_LINEAR_PANEL;
        pw = Mp - m0 < PM_LINEAR_PANEL ? Mp - m0 : PM_LINEAR_PANEL;
        pm_linear_pack(x, M, K, m0, pw, pack + (size_t) m0 * K);
    }
}

/* The block of rb <= 6 weight rows (a) by the panel of pw columns at b, mv of them batch
   rows, into yb. */
static inline __attribute__((always_inline)) void pm_linear_block(
        int rb, int pw, int N, int K, const float *a, const float *b, const float *c,
        float *yb, int mv) {
    switch (rb * 2 + pw / 8 - 1) {
    case 6 * 2 + 1: pm_linear_k62(K, a, K, b, c, yb, N, mv); break;
    case 5 * 2 + 1: pm_linear_k52(K, a, K, b, c, yb, N, mv); break;
    case 4 * 2 + 1: pm_linear_k42(K, a, K, b, c, yb, N, mv); break;
    case 3 * 2 + 1: pm_linear_k32(K, a, K, b, c, yb, N, mv); break;
    case 2 * 2 + 1: pm_linear_k22(K, a, K, b, c, yb, N, mv); break;
    case 1 * 2 + 1: pm_linear_k12(K, a, K, b, c, yb, N, mv); break;
    case 6 * 2: pm_linear_k61(K, a, K, b, c, yb, N, mv); break;
    case 5 * 2: pm_linear_k51(K, a, K, b, c, yb, N, mv); break;
    case 4 * 2: pm_linear_k41(K, a, K, b, c, yb, N, mv); break;
    case 3 * 2: pm_linear_k31(K, a, K, b, c, yb, N, mv); break;
    case 2 * 2: pm_linear_k21(K, a, K, b, c, yb, N, mv); break;
    default: pm_linear_k11(K, a, K, b, c, yb, N, mv); break;
    }
}

/* Weight rows [r0, r1) six at a time, each group over every panel (pm_linear_rows). */
static PM_LINEAR_CLONES void pm_linear_rows6(int M, int N, int K, const float *w,
                                             const float *bias, const float *scratch,
                                             float *y, int r0, int r1) {
    int m0, r, pw, rb, mv;
    int Mp = (M + 7) & ~7;
    const float *pack = pm_linear_aligned(scratch);
    for (r = r0; r < r1; r += PM_LINEAR_ROWS) {
        const float *a = w + (size_t) r * K, *c = bias ? bias + r : NULL;
        rb = r1 - r < PM_LINEAR_ROWS ? r1 - r : PM_LINEAR_ROWS;
        for (m0 = 0; m0 < M; m0 += PM_LINEAR_PANEL) {
            mv = M - m0 < PM_LINEAR_PANEL ? M - m0 : PM_LINEAR_PANEL;
            pw = Mp - m0 < PM_LINEAR_PANEL ? Mp - m0 : PM_LINEAR_PANEL;
            pm_linear_block(rb, pw, N, K, a, pack + (size_t) m0 * K, c,
                            y + (size_t) m0 * N + r, mv);
        }
    }
}

#ifdef PM_LINEAR_WIDE
#include <immintrin.h>

/* On a core with AVX-512, R <= 12 weight rows by a full panel of 16 batch rows, one 64-byte
   vector per row: R accumulators, each step one panel row loaded and R weights broadcast.
   Each lane multiplies and adds as the 8-float kernels do, so the numbers are theirs, bit
   for bit. Stored as two halves of 8 batch rows, in 4 x 8 blocks, then a 2 x 8 block and a
   last row where R needs them. */
#define PM_LIN_LO(v) __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
#define PM_LIN_HI(v) __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15)
#define PM_LINEAR_WIDE_KERNEL(NAME, R)                                                        \
static inline __attribute__((always_inline)) void NAME(                                     \
        int K, const float *a, size_t lda, const float *b, const float *bias, float *y,      \
        size_t ldy) {                                                                        \
    const pm_lin_v16 zero = {0};                                                             \
    pm_lin_v16 s[R];                                                                         \
    int i, k, g = 0, l;                                                                      \
    _Pragma("GCC unroll 12") for (i = 0; i < R; i++)                                         \
        s[i] = zero + (bias ? bias[i] : 0.0f);                                               \
    _Pragma("GCC unroll 8") for (k = 0; k < K; k++) {                                        \
        pm_lin_v16 u = *(const pm_lin_v16 *) (b + (size_t) k * 16);                          \
        _Pragma("GCC unroll 12") for (i = 0; i < R; i++) s[i] += a[(size_t) i * lda + k] * u; \
    }                                                                                        \
    _Pragma("GCC unroll 3") for (; g + 4 <= R; g += 4) {                                     \
        pm_linear_store4x8(y + g, ldy, PM_LIN_LO(s[g]), PM_LIN_LO(s[g + 1]),                 \
                           PM_LIN_LO(s[g + 2]), PM_LIN_LO(s[g + 3]));                        \
        pm_linear_store4x8(y + 8 * ldy + g, ldy, PM_LIN_HI(s[g]), PM_LIN_HI(s[g + 1]),       \
                           PM_LIN_HI(s[g + 2]), PM_LIN_HI(s[g + 3]));                        \
    }                                                                                        \
    if (g + 2 <= R) {                                                                        \
        pm_linear_store2x8(y + g, ldy, PM_LIN_LO(s[g]), PM_LIN_LO(s[g + 1]));                \
        pm_linear_store2x8(y + 8 * ldy + g, ldy, PM_LIN_HI(s[g]), PM_LIN_HI(s[g + 1]));      \
        g += 2;                                                                              \
    }                                                                                        \
    if (g < R)                                                                               \
        for (l = 0; l < 16; l++) y[(size_t) l * ldy + g] = s[g][l];                          \
}

PM_LINEAR_WIDE_KERNEL(pm_linear_k12x16, 12)
PM_LINEAR_WIDE_KERNEL(pm_linear_k11x16, 11)
PM_LINEAR_WIDE_KERNEL(pm_linear_k10x16, 10)
PM_LINEAR_WIDE_KERNEL(pm_linear_k9x16, 9)
PM_LINEAR_WIDE_KERNEL(pm_linear_k8x16, 8)
PM_LINEAR_WIDE_KERNEL(pm_linear_k7x16, 7)
PM_LINEAR_WIDE_KERNEL(pm_linear_k6x16, 6)
PM_LINEAR_WIDE_KERNEL(pm_linear_k5x16, 5)
PM_LINEAR_WIDE_KERNEL(pm_linear_k4x16, 4)
PM_LINEAR_WIDE_KERNEL(pm_linear_k3x16, 3)
PM_LINEAR_WIDE_KERNEL(pm_linear_k2x16, 2)
PM_LINEAR_WIDE_KERNEL(pm_linear_k1x16, 1)

/* The block of rb <= 12 weight rows by a full panel */
static inline __attribute__((always_inline)) void pm_linear_wide_block(
        int rb, int K, const float *a, const float *b, const float *c, float *yb, size_t ldy) {
    switch (rb) {
    case 12: pm_linear_k12x16(K, a, K, b, c, yb, ldy); break;
    case 11: pm_linear_k11x16(K, a, K, b, c, yb, ldy); break;
    case 10: pm_linear_k10x16(K, a, K, b, c, yb, ldy); break;
    case 9: pm_linear_k9x16(K, a, K, b, c, yb, ldy); break;
    case 8: pm_linear_k8x16(K, a, K, b, c, yb, ldy); break;
    case 7: pm_linear_k7x16(K, a, K, b, c, yb, ldy); break;
    case 6: pm_linear_k6x16(K, a, K, b, c, yb, ldy); break;
    case 5: pm_linear_k5x16(K, a, K, b, c, yb, ldy); break;
    case 4: pm_linear_k4x16(K, a, K, b, c, yb, ldy); break;
    case 3: pm_linear_k3x16(K, a, K, b, c, yb, ldy); break;
    case 2: pm_linear_k2x16(K, a, K, b, c, yb, ldy); break;
    default: pm_linear_k1x16(K, a, K, b, c, yb, ldy); break;
    }
}

/* Six weight rows by four full panels (64 batch rows), one 64-byte vector per panel row:
   24 accumulators, each step four panel rows loaded (one from each panel) and 6 weights
   broadcast, 10 loads for 24 multiply-adds where the 12 x 16 block needs 13 for 12. The same
   sums, lane by lane, as the other blocks. */
static inline __attribute__((always_inline)) void pm_linear_k6x64(
        int K, const float *a, size_t lda, const float *b, const float *bias, float *y,
        size_t ldy) {
    const pm_lin_v16 zero = {0};
    pm_lin_v16 s[6][4];
    int i, j, k;
    _Pragma("GCC unroll 6") for (i = 0; i < 6; i++)
        _Pragma("GCC unroll 4") for (j = 0; j < 4; j++)
            s[i][j] = zero + (bias ? bias[i] : 0.0f);
    _Pragma("GCC unroll 4") for (k = 0; k < K; k++) {
        pm_lin_v16 u[4];
        _Pragma("GCC unroll 4") for (j = 0; j < 4; j++)
            u[j] = *(const pm_lin_v16 *) (b + (size_t) j * 16 * K + (size_t) k * 16);
        _Pragma("GCC unroll 6") for (i = 0; i < 6; i++) {
            float wk = a[(size_t) i * lda + k];
            _Pragma("GCC unroll 4") for (j = 0; j < 4; j++) s[i][j] += wk * u[j];
        }
    }
    _Pragma("GCC unroll 4") for (j = 0; j < 4; j++) {
        float *lo = y + (size_t) 16 * j * ldy, *hi = lo + 8 * ldy;
        pm_linear_store4x8(lo, ldy, PM_LIN_LO(s[0][j]), PM_LIN_LO(s[1][j]), PM_LIN_LO(s[2][j]),
                           PM_LIN_LO(s[3][j]));
        pm_linear_store2x8(lo + 4, ldy, PM_LIN_LO(s[4][j]), PM_LIN_LO(s[5][j]));
        pm_linear_store4x8(hi, ldy, PM_LIN_HI(s[0][j]), PM_LIN_HI(s[1][j]), PM_LIN_HI(s[2][j]),
                           PM_LIN_HI(s[3][j]));
        pm_linear_store2x8(hi + 4, ldy, PM_LIN_HI(s[4][j]), PM_LIN_HI(s[5][j]));
    }
}

/* pm_linear_rows on AVX-512: twelve rows at a time, as two blocks of 6 x 64 over each four
   full panels, 12 x 16 over a full panel left (fewer rows, the last group: R x 16), a
   partial panel as the 6-row blocks do. */
static PM_LINEAR_WIDE void pm_linear_rows12(int M, int N, int K, const float *w,
                                            const float *bias, const float *scratch,
                                            float *y, int r0, int r1) {
    int m0, r, pw, mv, rb;
    int Mp = (M + 7) & ~7;
    const float *pack = pm_linear_aligned(scratch);
    for (r = r0; r < r1; r += 12) {
        const float *a = w + (size_t) r * K, *c = bias ? bias + r : NULL;
        rb = r1 - r < 12 ? r1 - r : 12;
        for (m0 = 0; m0 < M; m0 += PM_LINEAR_PANEL) {
            const float *b = pack + (size_t) m0 * K;
            float *yb = y + (size_t) m0 * N + r;
            mv = M - m0 < PM_LINEAR_PANEL ? M - m0 : PM_LINEAR_PANEL;
            pw = Mp - m0 < PM_LINEAR_PANEL ? Mp - m0 : PM_LINEAR_PANEL;
            if (rb == 12 && M - m0 >= 64) {
                pm_linear_k6x64(K, a, K, b, c, yb, N);
                pm_linear_k6x64(K, a + (size_t) 6 * K, K, b, c ? c + 6 : NULL, yb + 6, N);
                m0 += 3 * PM_LINEAR_PANEL;
                continue;
            }
            if (mv == 16) {
                pm_linear_wide_block(rb, K, a, b, c, yb, N);
                continue;
            }
            pm_linear_block(rb < 6 ? rb : 6, pw, N, K, a, b, c, yb, mv);
            if (rb > 6)
                pm_linear_block(rb - 6, pw, N, K, a + (size_t) 6 * K, b, c ? c + 6 : NULL,
                                yb + 6, mv);
        }
    }
}

/* A batch of one on a core with AVX-512: y[r] := w[r] . x (+ bias[r]) for r < M, each
   weight row of K floats a dot product with x. R rows a pass (four, then one at a time), each
   a 64-byte vector of partial sums (lane q sums the k = q mod 16 in k order; a last partial
   vector is loaded under a mask), reduced where the row ends, then the bias added. The
   weight is read once, where it lies, at L2's pace: OpenBLAS's Haswell sgemv (the kernels CI
   runs) read it at half that. Zen 5, a C harness: 400 -> 120 1.44 -> 0.95 us, 256 -> 256
   1.98 -> 1.31 us, 784 -> 256 (not all in L2) 6.4 -> 5.9 us. */
static inline __attribute__((always_inline)) PM_LINEAR_WIDE void pm_linear_dots_block(
        int K, const float *w, const float *x, const float *bias, float *y, const int R) {
    __m512 a[4];
    int k = 0, q;
    for (q = 0; q < R; q++) a[q] = _mm512_setzero_ps();
    for (; k + 16 <= K; k += 16) {
        __m512 xv = _mm512_loadu_ps(x + k);
        for (q = 0; q < R; q++)
            a[q] = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t) q * K + k), xv, a[q]);
    }
    if (k < K) {
        __mmask16 m = (__mmask16) ((1u << (K - k)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
        for (q = 0; q < R; q++)
            a[q] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + (size_t) q * K + k), xv, a[q]);
    }
    for (q = 0; q < R; q++) {
        float v = _mm512_reduce_add_ps(a[q]);
        y[q] = bias ? v + bias[q] : v;
    }
}

static PM_LINEAR_WIDE void pm_linear_dots(int M, int K, const float *w, const float *x,
                                          const float *bias, float *y) {
    int r = 0;
    for (; r + 4 <= M; r += 4)
        pm_linear_dots_block(K, w + (size_t) r * K, x, bias ? bias + r : NULL, y + r, 4);
    for (; r < M; r++)
        pm_linear_dots_block(K, w + (size_t) r * K, x, bias ? bias + r : NULL, y + r, 1);
}

#endif

/* pm_linear_wide(): whether this core runs pm_linear_rows12 and pm_linear_dots;
   pm_linear_allow_wide */
PM_WIDE_SWITCH(pm_linear_wide_on, pm_linear_wide, pm_linear_allow_wide)

/* Columns [r0, r1) of y := x w.T + bias from the batch packed in scratch: weight rows r0 to
   r1, in groups of six (twelve on a core with AVX-512), each group over every panel. Each
   output is one sum in k order, whatever the range or the group: a forward cut in ranges
   across threads gives the same numbers as one call, on either kind of core. */
static void pm_linear_rows(int M, int N, int K, const float *w, const float *bias,
                           const float *scratch, float *y, int r0, int r1) {
#ifdef PM_LINEAR_WIDE
    if (pm_linear_wide()) {
        pm_linear_rows12(M, N, K, w, bias, scratch, y, r0, r1);
        return;
    }
#endif
    pm_linear_rows6(M, N, K, w, bias, scratch, y, r0, r1);
}

/* A batch of one's y := w x + bias on pm_linear_dots where this core runs it: 1 if it ran,
   0 if the caller's gemv is to */
static __attribute__((unused)) int pm_linear_one(int M, int K, const float *w, const float *x,
                                                 const float *bias, float *y) {
#ifdef PM_LINEAR_WIDE
    if (pm_linear_wide()) {
        pm_linear_dots(M, K, w, x, bias, y);
        return 1;
    }
#endif
    return 0;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
