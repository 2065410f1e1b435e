/* A product with few columns, without BLAS: y[r, p] := (c[r, p] if c) + sum_k a[r, k] * b[k, p]
   for r < M, p < N, k < K; the rows of a, b, c and y are lda, ldb, ldc and ldy apart (c may be
   y itself: then the product accumulates onto y).

   The per-step products of a recurrent layer kept feature-major, W (4H, H) @ h (H, B) forward
   and W.T (H, 4H) @ dG (4H, B) backward, have few columns (the batch) and a matrix that
   stays the same over the whole sequence. BLAS packs that matrix again at every call, which
   for a batch of 16 costs about as much as the product. Here the rows of a are read in place
   (each a[r, k] broadcast from memory), each row of b's column block is loaded once per block
   of six output rows, and nothing is copied.

   Blocks: 6 rows x 16 columns of accumulators (12 of the 16 vector registers of AVX2), then
   6 rows x 8, then single rows; the last N % 8 columns (N >= 8) by one more block of 8 that
   ends at column N and stores only its new columns; N < 8 column by column. */

#ifndef PM_NARROW_H
#define PM_NARROW_H

#include <stddef.h>

/* Only the FMA clone contracts: target "avx2" or "avx512f" alone has no VEX fused
   multiply-add, and a multiply then an add is half the rate. The FMA clone runs on AVX-512
   machines too. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_NARROW_CLONES __attribute__((target_clones("fma", "default"), unused))
#else
#define PM_NARROW_CLONES __attribute__((unused))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float pm_narrow_v8f __attribute__((vector_size(32), aligned(4)));
typedef double pm_narrow_v4d __attribute__((vector_size(32), aligned(8)));

/* One block of 6 rows (r0..r5 = a rows) by W vectors of L at column p; the columns before
   `skip` (of the block) are already done and kept. */
#define PM_NARROW_DEFINE(NAME, T, V, L)                                                       \
static PM_NARROW_CLONES void NAME(int M, int N, int K, const T *a, size_t lda, const T *b,   \
                                  size_t ldb, const T *c, size_t ldc, T *y, size_t ldy) {    \
    int r = 0, k, p, q, j;                                                                   \
    for (; r + 6 <= M; r += 6) {                                                             \
        const T *a0 = a + (size_t) r * lda;                                                  \
        const T *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda;              \
        const T *a5 = a4 + lda;                                                              \
        for (p = 0; p + 2 * L <= N; p += 2 * L) {                                            \
            V s00 = {0}, s01 = {0}, s10 = {0}, s11 = {0}, s20 = {0}, s21 = {0};              \
            V s30 = {0}, s31 = {0}, s40 = {0}, s41 = {0}, s50 = {0}, s51 = {0};              \
            const T *bk = b + p;                                                             \
            if (c) /* rows of c far apart miss the cache: ask now, use after the k loop */   \
                for (j = 0; j < 6; j++) {                                                    \
                    __builtin_prefetch(c + (size_t) (r + j) * ldc + p);                      \
                    __builtin_prefetch(c + (size_t) (r + j) * ldc + p + 2 * L - 1);          \
                }                                                                            \
            for (k = 0; k < K; k++, bk += ldb) {                                             \
                V u = *(const V *) bk, v = *(const V *) (bk + L);                            \
                T w;                                                                         \
                w = a0[k]; s00 += w * u; s01 += w * v;                                       \
                w = a1[k]; s10 += w * u; s11 += w * v;                                       \
                w = a2[k]; s20 += w * u; s21 += w * v;                                       \
                w = a3[k]; s30 += w * u; s31 += w * v;                                       \
                w = a4[k]; s40 += w * u; s41 += w * v;                                       \
                w = a5[k]; s50 += w * u; s51 += w * v;                                       \
            }                                                                                \
            {                                                                                \
                V *acc[6][2] = {{&s00, &s01}, {&s10, &s11}, {&s20, &s21}, {&s30, &s31},      \
                                {&s40, &s41}, {&s50, &s51}};                                 \
                for (j = 0; j < 6; j++) {                                                    \
                    T *yr = y + (size_t) (r + j) * ldy + p;                                  \
                    V e0 = *acc[j][0], e1 = *acc[j][1];                                      \
                    if (c) {                                                                 \
                        const T *cr = c + (size_t) (r + j) * ldc + p;                        \
                        e0 = *(const V *) cr + e0; e1 = *(const V *) (cr + L) + e1;          \
                    }                                                                        \
                    *(V *) yr = e0; *(V *) (yr + L) = e1;                                    \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (; p < N && N >= L; p += L) {                                                    \
            /* one vector wide; the last may overlap the columns already done */             \
            int start = p + L <= N ? p : N - L, skip = p - start;                            \
            V s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0};                    \
            const T *bk = b + start;                                                         \
            for (k = 0; k < K; k++, bk += ldb) {                                             \
                V u = *(const V *) bk;                                                       \
                s0 += a0[k] * u; s1 += a1[k] * u; s2 += a2[k] * u;                           \
                s3 += a3[k] * u; s4 += a4[k] * u; s5 += a5[k] * u;                           \
            }                                                                                \
            {                                                                                \
                V *acc[6] = {&s0, &s1, &s2, &s3, &s4, &s5};                                  \
                for (j = 0; j < 6; j++) {                                                    \
                    T *yr = y + (size_t) (r + j) * ldy + start;                              \
                    const T *cr = c ? c + (size_t) (r + j) * ldc + start : NULL;             \
                    if (skip == 0) {                                                         \
                        *(V *) yr = cr ? *(const V *) cr + *acc[j] : *acc[j];                \
                    } else {                                                                 \
                        for (q = skip; q < L; q++)                                           \
                            yr[q] = cr ? cr[q] + (*acc[j])[q] : (*acc[j])[q];                \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (; p < N; p++) {  /* N < L */                                                    \
            T t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0;                                \
            for (k = 0; k < K; k++) {                                                        \
                T u = b[(size_t) k * ldb + p];                                               \
                t0 += a0[k] * u; t1 += a1[k] * u; t2 += a2[k] * u;                           \
                t3 += a3[k] * u; t4 += a4[k] * u; t5 += a5[k] * u;                           \
            }                                                                                \
            {                                                                                \
                T tt[6] = {t0, t1, t2, t3, t4, t5};                                          \
                for (j = 0; j < 6; j++)                                                      \
                    y[(size_t) (r + j) * ldy + p] =                                          \
                        c ? c[(size_t) (r + j) * ldc + p] + tt[j] : tt[j];                   \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
    for (; r < M; r++) {                                                                     \
        const T *a0 = a + (size_t) r * lda;                                                  \
        T *yr = y + (size_t) r * ldy;                                                        \
        const T *cr = c ? c + (size_t) r * ldc : NULL;                                       \
        for (p = 0; p + L <= N; p += L) {                                                    \
            V s0 = {0};                                                                      \
            for (k = 0; k < K; k++) s0 += a0[k] * *(const V *) (b + (size_t) k * ldb + p);   \
            *(V *) (yr + p) = cr ? *(const V *) (cr + p) + s0 : s0;                          \
        }                                                                                    \
        for (; p < N; p++) {                                                                 \
            T t0 = 0;                                                                        \
            for (k = 0; k < K; k++) t0 += a0[k] * b[(size_t) k * ldb + p];                   \
            yr[p] = cr ? cr[p] + t0 : t0;                                                    \
        }                                                                                    \
    }                                                                                        \
}

PM_NARROW_DEFINE(pm_narrow_f, float, pm_narrow_v8f, 8)
PM_NARROW_DEFINE(pm_narrow_d, double, pm_narrow_v4d, 4)

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

#endif
