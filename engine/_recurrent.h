/* The float32 LSTM over [x(t), h(t-1)] (engine/recurrent.pyx's lstm_xh_*): packing of
   [W_ih W_hh] into 24-column panels, the per-step product on them, the gates of a step in one
   vectorised pass, and the weight gradients over all steps. On a core with AVX-512 the
   panels are 48 columns, three 64-byte vectors a row (pm_rec_width, "64-byte vectors" below).

   The weight gradient without BLAS:

       [gw gu][g, c] += scale * sum_n dg[n, g] * xh[n, c]     (g < G = 4H, c < C = I + H)

   where dg (N x G, rows ldg apart) holds the gate gradients of all N = T * B rows and xh
   (N x C, rows ldx apart) the rows [x(t), h(t-1)] side by side; the columns c < I land in
   gw (G x I, rows ldw apart), the others in gu (G x H, rows ldu apart). One pass computes
   both (BLAS: one GEMM each, each packing all of dg again, 1 MB at batch 16, 4H = 512).

   Blocks: N in chunks of 128 rows, G in passes of 256; per chunk and pass, xh's columns in
   panels of 24, each packed k-major into a 12 KB stack buffer (zeros past C) that stays in
   L1 while every block of four g rows runs over it: per n, three panel vectors, four
   broadcasts of dg[n, g..g+3] (one cache line serves four consecutive blocks; dg's rows are
   padded so that they do not share cache sets), twelve fused multiply-adds into twelve
   accumulators. The block adds scale times its sums onto the outputs (rows of a last partial
   block repeat the last row: the same sums stored twice; a panel across the gw/gu boundary
   or past C stores by vectors of 8 where they lie on one side, else column by column). Sums
   in n order within a chunk, chunk sums added in order, so NaN and infinities propagate as in
   any dot product. */

#ifndef PM_RECURRENT_H
#define PM_RECURRENT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_wide.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* x86-64-v3 (AVX2 with FMA: GCC's "fma" target alone has no 256-bit integer operations, which
   the exponent assembly of exp needs, and "avx2" alone has no FMA) and v4 (AVX-512) */
#define PM_REC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", \
                                                   "default"), unused))
/* The 48-column panels, for a core with AVX-512 (pm_rec_width) */
#define PM_REC_WIDE __attribute__((target("arch=x86-64-v4"), unused))
#else
#define PM_REC_CLONES __attribute__((unused))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float pm_rec_v8 __attribute__((vector_size(32), aligned(4)));

/* The width of the last of the forward's panels of W columns (24, or 48 on a core with
   AVX-512, pm_rec_width): 4H rounded up to vectors of W / 3 */
static inline int pm_rec_last_width(int H, int W) {
    int L = W / 3;
    return (4 * H - W * ((4 * H - 1) / W) + L - 1) / L * L;
}

/* -- packing ---------------------------------------------------------------------------------

   Forward panels of W columns (24, or 48 where pm_rec_width says so): pk[q][k][j] =
   [W_ih W_hh][W q + j][k] (P panels of K = I + H rows of W, the last one's rows only as wide
   as the vectors of W / 3 it needs, pm_rec_last_width; zeros past 4H), pb[W q + j] =
   b_ih[W q + j] (0 past 4H): the weights transposed, read along their rows, written a
   panel's width apart. Backward panels: pk[q][g][j] = [W_ih W_hh][g][W q + j] (zeros past
   I + H): runs of W copied as they lie. */
static void pm_rec_pack_fwd(int NI, int H, const float *wi, const float *wh, const float *bi,
                            float *pk, float *pb, int P, int W) {
    int K = NI + H, q, j, k;
    for (q = 0; q < P; q++) {
        int wq = q + 1 < P ? W : pm_rec_last_width(H, W);
        float *pq = pk + (size_t) q * K * W;
        for (j = 0; j < W; j++) {
            int n = q * W + j;
            float *dst = pq + j;
            if (n < 4 * H) {
                const float *ri = wi + (size_t) n * NI, *rh = wh + (size_t) n * H;
                pb[n] = bi[n];
                for (k = 0; k < NI; k++) dst[(size_t) k * wq] = ri[k];
                for (k = 0; k < H; k++) dst[(size_t) (NI + k) * wq] = rh[k];
            } else {
                pb[n] = 0;
                if (j < wq)
                    for (k = 0; k < K; k++) dst[(size_t) k * wq] = 0;
            }
        }
    }
}

static void pm_rec_pack_bwd(int NI, int H, const float *wi, const float *wh, float *pk, int P,
                            int W) {
    int K = NI + H, G = 4 * H, q, g, j;
    for (q = 0; q < P; q++) {
        int c0 = q * W;
        float *pq = pk + (size_t) q * G * W;
        for (g = 0; g < G; g++) {
            float *dst = pq + (size_t) g * W;
            const float *ri = wi + (size_t) g * NI, *rh = wh + (size_t) g * H;
            if (c0 + W <= NI) {
                memcpy(dst, ri + c0, W * sizeof(float));
            } else if (c0 >= NI && c0 + W <= K) {
                memcpy(dst, rh + (c0 - NI), W * sizeof(float));
            } else {
                for (j = 0; j < W; j++) {
                    int c = c0 + j;
                    dst[j] = c < NI ? ri[c] : c < K ? rh[c - NI] : 0;
                }
            }
        }
    }
}

/* -- one product per step ----------------------------------------------------------------------

   y (M x 24 P, rows ldy apart) := (bias or 0) + a (M x K, rows lda apart) @ the packed matrix
   p: P panels of 24 columns, k-major (p[panel][k][24], K0 rows each, the first K used).
   4 rows x 3 vectors of accumulators; K in chunks of kc so that a panel's chunk stays in L1
   over the row blocks (a later chunk adds onto y); the last rows repeat the last row (the same
   sums stored twice); bias (24 P) starts the first chunk. The last panel's rows are wl
   floats wide (8, 16 or 24), the vectors it has: below 24 it runs 8 rows x 1 vector or
   4 rows x 2 (pm_rec_tail) and stores only its wl columns. */

/* R rows x NV vectors of the last panel, pq its chunk (rows NV 8 floats apart), y at its
   first column */
#define PM_REC_TAIL(R, NV)                                                                    \
    for (r = 0; r < M; r += R) {                                                              \
        const float *ar[R];                                                                   \
        float *yr[R];                                                                         \
        pm_rec_v8 s[R][NV], w[NV];                                                            \
        int i, v;                                                                             \
        for (i = 0; i < R; i++) {                                                             \
            int ri = r + i < M ? r + i : M - 1;                                               \
            ar[i] = a + (size_t) ri * lda + k0;                                               \
            yr[i] = y + (size_t) ri * ldy + q * 24;                                           \
        }                                                                                     \
        for (i = 0; i < R; i++)                                                               \
            for (v = 0; v < NV; v++) {                                                        \
                pm_rec_v8 z = {0};                                                            \
                s[i][v] = k0 > 0 ? *(pm_rec_v8 *) (yr[i] + 8 * v)                            \
                          : bias ? *(const pm_rec_v8 *) (bias + q * 24 + 8 * v) : z;          \
            }                                                                                 \
        for (k = 0; k < kc; k++) {                                                            \
            for (v = 0; v < NV; v++) w[v] = *(const pm_rec_v8 *) (pq + (size_t) k * NV * 8   \
                                                                   + 8 * v);                  \
            for (i = 0; i < R; i++) {                                                         \
                float x = ar[i][k];                                                           \
                for (v = 0; v < NV; v++) s[i][v] += x * w[v];                                 \
            }                                                                                 \
        }                                                                                     \
        for (i = R - 1; i >= 0; i--)                                                          \
            for (v = 0; v < NV; v++) *(pm_rec_v8 *) (yr[i] + 8 * v) = s[i][v];                \
    }

static PM_REC_CLONES void pm_rec_product(int M, int K, int K0, int kc_max, int P, int wl,
                                         const float *a, size_t lda, const float *p,
                                         const float *bias, float *y, size_t ldy) {
    int k0, q, r, k, kc;
    if (M <= 0) return;
    for (k0 = 0; k0 < K || (K == 0 && k0 == 0); k0 += kc_max) {
        kc = K - k0 < kc_max ? K - k0 : kc_max;
        for (q = 0; q < P; q++) {
            const float *pq = p + ((size_t) q * K0 + k0) * 24;
            if (q == P - 1 && wl < 24) {
                pq = p + (size_t) q * K0 * 24 + (size_t) k0 * wl;
                if (wl == 8) {
                    PM_REC_TAIL(8, 1)
                } else {
                    PM_REC_TAIL(4, 2)
                }
                continue;
            }
            for (r = 0; r < M; r += 4) {
                int r1 = r + 1 < M ? r + 1 : M - 1, r2 = r + 2 < M ? r + 2 : M - 1;
                int r3 = r + 3 < M ? r + 3 : M - 1;
                const float *a0 = a + (size_t) r * lda + k0, *a1 = a + (size_t) r1 * lda + k0;
                const float *a2 = a + (size_t) r2 * lda + k0, *a3 = a + (size_t) r3 * lda + k0;
                float *y0 = y + (size_t) r * ldy + q * 24, *y1 = y + (size_t) r1 * ldy + q * 24;
                float *y2 = y + (size_t) r2 * ldy + q * 24, *y3 = y + (size_t) r3 * ldy + q * 24;
                pm_rec_v8 s00, s01, s02, s10, s11, s12, s20, s21, s22, s30, s31, s32;
                const float *pk = pq;
                if (k0 == 0 && bias) {
                    const float *bq = bias + q * 24;
                    s00 = s10 = s20 = s30 = *(const pm_rec_v8 *) bq;
                    s01 = s11 = s21 = s31 = *(const pm_rec_v8 *) (bq + 8);
                    s02 = s12 = s22 = s32 = *(const pm_rec_v8 *) (bq + 16);
                } else if (k0 == 0) {
                    pm_rec_v8 z = {0};
                    s00 = s01 = s02 = s10 = s11 = s12 = z;
                    s20 = s21 = s22 = s30 = s31 = s32 = z;
                } else {
                    s00 = *(pm_rec_v8 *) y0; s01 = *(pm_rec_v8 *) (y0 + 8);
                    s02 = *(pm_rec_v8 *) (y0 + 16);
                    s10 = *(pm_rec_v8 *) y1; s11 = *(pm_rec_v8 *) (y1 + 8);
                    s12 = *(pm_rec_v8 *) (y1 + 16);
                    s20 = *(pm_rec_v8 *) y2; s21 = *(pm_rec_v8 *) (y2 + 8);
                    s22 = *(pm_rec_v8 *) (y2 + 16);
                    s30 = *(pm_rec_v8 *) y3; s31 = *(pm_rec_v8 *) (y3 + 8);
                    s32 = *(pm_rec_v8 *) (y3 + 16);
                }
                for (k = 0; k < kc; k++, pk += 24) {
                    pm_rec_v8 w0 = *(const pm_rec_v8 *) pk, w1 = *(const pm_rec_v8 *) (pk + 8);
                    pm_rec_v8 w2 = *(const pm_rec_v8 *) (pk + 16);
                    float x;
                    x = a0[k]; s00 += x * w0; s01 += x * w1; s02 += x * w2;
                    x = a1[k]; s10 += x * w0; s11 += x * w1; s12 += x * w2;
                    x = a2[k]; s20 += x * w0; s21 += x * w1; s22 += x * w2;
                    x = a3[k]; s30 += x * w0; s31 += x * w1; s32 += x * w2;
                }
                /* the repeated rows store the same sums: the last store of a row wins */
                *(pm_rec_v8 *) y3 = s30; *(pm_rec_v8 *) (y3 + 8) = s31;
                *(pm_rec_v8 *) (y3 + 16) = s32;
                *(pm_rec_v8 *) y2 = s20; *(pm_rec_v8 *) (y2 + 8) = s21;
                *(pm_rec_v8 *) (y2 + 16) = s22;
                *(pm_rec_v8 *) y1 = s10; *(pm_rec_v8 *) (y1 + 8) = s11;
                *(pm_rec_v8 *) (y1 + 16) = s12;
                *(pm_rec_v8 *) y0 = s00; *(pm_rec_v8 *) (y0 + 8) = s01;
                *(pm_rec_v8 *) (y0 + 16) = s02;
            }
        }
        if (K == 0) break;
    }
}

/* -- the weight gradients over all steps ------------------------------------------------------ */

#define PM_REC_KC 128   /* rows n per chunk: a packed panel chunk is 12 KB */
#define PM_REC_GB 256   /* g rows per pass over the panels: dg's chunk (128 KB) stays in L2 */

/* y[j] += s * v[j] for the W columns c0 + j of one output row, split at I between gw and
   gu, only c < C: by vectors of 8 where they lie whole on one side (with I a multiple of 8,
   every vector of a panel across the boundary), the others column by column */
static inline __attribute__((always_inline)) void pm_rec_store_row(
        const float *v, float s, int c0, int NI, int C, float *gw, float *gu, int W) {
    int j0, j;
    for (j0 = 0; j0 < W && c0 + j0 < C; j0 += 8) {
        int c = c0 + j0;
        if (c + 8 <= C && (c + 8 <= NI || c >= NI)) {
            pm_rec_v8 *d = (pm_rec_v8 *) (c < NI ? gw + c : gu + (c - NI));
            *d = *d + s * *(const pm_rec_v8 *) (v + j0);
        } else {
            for (j = j0; j < j0 + 8 && c0 + j < C; j++) {
                float *d = c0 + j < NI ? gw + c0 + j : gu + (c0 + j - NI);
                *d += s * v[j];
            }
        }
    }
}

/* gb[g] += scale_b * the sum of the kc rows of dg (rows ldg apart) in column g, g0 <= g < ge:
   the bias's share of one chunk */
static inline __attribute__((always_inline)) void pm_rec_bias_sums(
        int kc, int g0, int ge, const float *dg, size_t ldg, float *gb, float scale_b) {
    int g, k;
    for (g = g0; g + 8 <= ge; g += 8) {
        pm_rec_v8 s0 = {0}, s1 = {0};
        const float *d = dg + g;
        for (k = 0; k + 1 < kc; k += 2, d += 2 * ldg) {
            s0 += *(const pm_rec_v8 *) d;
            s1 += *(const pm_rec_v8 *) (d + ldg);
        }
        if (k < kc) s0 += *(const pm_rec_v8 *) d;
        s0 += s1;
        *(pm_rec_v8 *) (gb + g) += scale_b * s0;
    }
    for (; g < ge; g++) {
        float s0 = 0;
        for (k = 0; k < kc; k++) s0 += dg[(size_t) k * ldg + g];
        gb[g] += scale_b * s0;
    }
}

/* The loops of the weight gradients: N in chunks of PM_REC_KC rows, G in passes of
   PM_REC_GB, xh's columns in panels of W packed k-major into pack (zeros past C), and for each
   panel BLOCKS, the blocks of gate rows over it (pm_rec_blocks24, pm_rec_blocks48). */
#define PM_REC_WGRAD_DEFINE(NAME, ATTR, W, BLOCKS)                                            \
static ATTR void NAME(int N, int G, int NI, int H, const float *dg, size_t ldg,               \
                      const float *xh, size_t ldx, float scale, float *gw, size_t ldw,        \
                      float *gu, size_t ldu, float *gb, float scale_b, int n_h) {             \
    float pack[PM_REC_KC * W] __attribute__((aligned(64)));                                   \
    int C = NI + H, n0, c0, k, j, g0;                                                         \
    if (N <= 0 || G <= 0) return;                                                             \
    for (n0 = 0; n0 < N; n0 += PM_REC_KC) {                                                   \
        int kc = N - n0 < PM_REC_KC ? N - n0 : PM_REC_KC;                                     \
        for (g0 = 0; g0 < G; g0 += PM_REC_GB) {                                               \
            int ge = G - g0 < PM_REC_GB ? G : g0 + PM_REC_GB;                                 \
            if (gb) pm_rec_bias_sums(kc, g0, ge, dg + (size_t) n0 * ldg, ldg, gb, scale_b);   \
            if (C == 0) continue;                                                             \
            for (c0 = 0; c0 < C; c0 += W) {                                                   \
                int w = C - c0 < W ? C - c0 : W;                                              \
                /* rows of the chunk that are zero in this panel (h(-1) = 0) */               \
                int k_lo = c0 >= NI && n_h > n0 ? (n_h - n0 < kc ? n_h - n0 : kc) : 0;        \
                if (k_lo == kc) continue;                                                     \
                for (k = k_lo; k < kc; k++) {                                                 \
                    const float *src = xh + (size_t) (n0 + k) * ldx + c0;                     \
                    float *dst = pack + k * W;                                                \
                    if (w == W) {                                                             \
                        memcpy(dst, src, W * sizeof(float));                                  \
                    } else {                                                                  \
                        for (j = 0; j < w; j++) dst[j] = src[j];                              \
                        for (; j < W; j++) dst[j] = 0;                                        \
                    }                                                                         \
                }                                                                             \
                BLOCKS(pack + k_lo * W, kc - k_lo, dg + (size_t) (n0 + k_lo) * ldg, ldg, g0,  \
                       ge, G, c0, w, NI, C, scale, gw, ldw, gu, ldu);                         \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

/* The blocks of 4 gate rows g0 <= g < ge over one panel of 24 columns at c0 (w of them
   real): pk0 the panel's kc rows, d0 the rows of dg from the same n (ldg apart). Where the
   panel's columns go: all to gw, all to gu ("whole"), or split / cut. */
static inline __attribute__((always_inline)) void pm_rec_blocks24(
        const float *pk0, int kc, const float *d0, size_t ldg, int g0, int ge, int G, int c0,
        int w, int NI, int C, float scale, float *gw, size_t ldw, float *gu, size_t ldu) {
    int whole = w == 24 && (c0 + 24 <= NI || c0 >= NI), g, k;
    float *yb = c0 < NI ? gw + c0 : gu + (c0 - NI);
    size_t ldy = c0 < NI ? ldw : ldu;
    for (g = g0; g < ge; g += 4) {
        int g1 = g + 1 < G ? g + 1 : G - 1, g2 = g + 2 < G ? g + 2 : G - 1;
        int g3 = g + 3 < G ? g + 3 : G - 1;
        const float *d = d0, *pk = pk0;
        pm_rec_v8 s00 = {0}, s01 = {0}, s02 = {0}, s10 = {0}, s11 = {0};
        pm_rec_v8 s12 = {0}, s20 = {0}, s21 = {0}, s22 = {0}, s30 = {0};
        pm_rec_v8 s31 = {0}, s32 = {0};
        for (k = 0; k < kc; k++, pk += 24, d += ldg) {
            pm_rec_v8 w0 = *(const pm_rec_v8 *) pk;
            pm_rec_v8 w1 = *(const pm_rec_v8 *) (pk + 8);
            pm_rec_v8 w2 = *(const pm_rec_v8 *) (pk + 16);
            float a;
            a = d[g]; s00 += a * w0; s01 += a * w1; s02 += a * w2;
            a = d[g1]; s10 += a * w0; s11 += a * w1; s12 += a * w2;
            a = d[g2]; s20 += a * w0; s21 += a * w1; s22 += a * w2;
            a = d[g3]; s30 += a * w0; s31 += a * w1; s32 += a * w2;
        }
        if (whole) {
            /* loads first, then stores, last row first: repeated rows agree */
            float *y0 = yb + (size_t) g * ldy, *y1 = yb + (size_t) g1 * ldy;
            float *y2 = yb + (size_t) g2 * ldy, *y3 = yb + (size_t) g3 * ldy;
            pm_rec_v8 t00 = *(pm_rec_v8 *) y0 + scale * s00;
            pm_rec_v8 t01 = *(pm_rec_v8 *) (y0 + 8) + scale * s01;
            pm_rec_v8 t02 = *(pm_rec_v8 *) (y0 + 16) + scale * s02;
            pm_rec_v8 t10 = *(pm_rec_v8 *) y1 + scale * s10;
            pm_rec_v8 t11 = *(pm_rec_v8 *) (y1 + 8) + scale * s11;
            pm_rec_v8 t12 = *(pm_rec_v8 *) (y1 + 16) + scale * s12;
            pm_rec_v8 t20 = *(pm_rec_v8 *) y2 + scale * s20;
            pm_rec_v8 t21 = *(pm_rec_v8 *) (y2 + 8) + scale * s21;
            pm_rec_v8 t22 = *(pm_rec_v8 *) (y2 + 16) + scale * s22;
            pm_rec_v8 t30 = *(pm_rec_v8 *) y3 + scale * s30;
            pm_rec_v8 t31 = *(pm_rec_v8 *) (y3 + 8) + scale * s31;
            pm_rec_v8 t32 = *(pm_rec_v8 *) (y3 + 16) + scale * s32;
            *(pm_rec_v8 *) y3 = t30; *(pm_rec_v8 *) (y3 + 8) = t31;
            *(pm_rec_v8 *) (y3 + 16) = t32;
            *(pm_rec_v8 *) y2 = t20; *(pm_rec_v8 *) (y2 + 8) = t21;
            *(pm_rec_v8 *) (y2 + 16) = t22;
            *(pm_rec_v8 *) y1 = t10; *(pm_rec_v8 *) (y1 + 8) = t11;
            *(pm_rec_v8 *) (y1 + 16) = t12;
            *(pm_rec_v8 *) y0 = t00; *(pm_rec_v8 *) (y0 + 8) = t01;
            *(pm_rec_v8 *) (y0 + 16) = t02;
        } else {
            float v[4][24] __attribute__((aligned(32)));
            int q, nr = G - g < 4 ? G - g : 4;
            *(pm_rec_v8 *) v[0] = s00; *(pm_rec_v8 *) (v[0] + 8) = s01;
            *(pm_rec_v8 *) (v[0] + 16) = s02;
            *(pm_rec_v8 *) v[1] = s10; *(pm_rec_v8 *) (v[1] + 8) = s11;
            *(pm_rec_v8 *) (v[1] + 16) = s12;
            *(pm_rec_v8 *) v[2] = s20; *(pm_rec_v8 *) (v[2] + 8) = s21;
            *(pm_rec_v8 *) (v[2] + 16) = s22;
            *(pm_rec_v8 *) v[3] = s30; *(pm_rec_v8 *) (v[3] + 8) = s31;
            *(pm_rec_v8 *) (v[3] + 16) = s32;
            for (q = 0; q < nr; q++)
                pm_rec_store_row(v[q], scale, c0, NI, C,
                                 gw + (size_t) (g + q) * ldw,
                                 gu + (size_t) (g + q) * ldu, 24);
        }
    }
}

/* [gw gu] += scale * dg.T @ xh as the header describes; gb (G, or NULL) += scale_b * the
   column sums of dg (in float per chunk of 128 rows); rows n < n_h of xh are taken as zero in
   the columns c >= I (h(-1) = 0: the first step's rows of W_hh's gradient are skipped). */
PM_REC_WGRAD_DEFINE(pm_rec_wgrad, PM_REC_CLONES, 24, pm_rec_blocks24)

/* -- 64-byte vectors, for a core with AVX-512 ------------------------------------------------

   The same products on panels of 48 columns, three 64-byte vectors a row: a block of 8 rows
   keeps 24 of the core's 32 registers summing (the 24-column panels leave a 64-byte vector's
   upper half idle: each instruction did half the work it could). Each lane multiplies and
   adds as the x86-64-v4 clone of the 24-column kernels does, in the same order (fused, k in
   order within the same chunks), so on such a core the numbers do not depend on the width
   (tested). Blocks of 8 rows, 4 where 4 or fewer are left (a last partial block repeats its
   last row, as above). */

#ifdef PM_REC_WIDE
typedef float pm_rec_v16 __attribute__((vector_size(64), aligned(4)));

/* R rows from r (rows past M repeat row M - 1) by NV vectors of a panel's chunk pq (rows
   16 NV floats apart): ys (rows ldy apart, at the panel's first column) := start + a @ pq,
   where start is ys itself (acc), else bias (NULL: 0) */
#define PM_REC_WBLOCK(NAME, R, NV)                                                            \
static inline __attribute__((always_inline)) void NAME(                                      \
        int r, int M, int kc, const float *a, size_t lda, const float *pq, const float *bias, \
        int acc, float *ys, size_t ldy) {                                                     \
    const float *ar[R];                                                                       \
    float *yr[R];                                                                             \
    pm_rec_v16 s[R][NV], w[NV];                                                               \
    const pm_rec_v16 zero = {0};                                                              \
    int i, v, k;                                                                              \
    _Pragma("GCC unroll 8") for (i = 0; i < R; i++) {                                         \
        int ri = r + i < M ? r + i : M - 1;                                                   \
        ar[i] = a + (size_t) ri * lda;                                                        \
        yr[i] = ys + (size_t) ri * ldy;                                                       \
    }                                                                                         \
    _Pragma("GCC unroll 8") for (i = 0; i < R; i++)                                           \
        _Pragma("GCC unroll 3") for (v = 0; v < NV; v++)                                      \
            s[i][v] = acc ? *(pm_rec_v16 *) (yr[i] + 16 * v)                                  \
                      : bias ? *(const pm_rec_v16 *) (bias + 16 * v) : zero;                  \
    for (k = 0; k < kc; k++) {                                                                \
        _Pragma("GCC unroll 3") for (v = 0; v < NV; v++)                                      \
            w[v] = *(const pm_rec_v16 *) (pq + (size_t) k * 16 * NV + 16 * v);                \
        _Pragma("GCC unroll 8") for (i = 0; i < R; i++) {                                     \
            float x = ar[i][k];                                                               \
            _Pragma("GCC unroll 3") for (v = 0; v < NV; v++) s[i][v] += x * w[v];             \
        }                                                                                     \
    }                                                                                         \
    _Pragma("GCC unroll 8") for (i = R - 1; i >= 0; i--)                                      \
        _Pragma("GCC unroll 3") for (v = 0; v < NV; v++)                                      \
            *(pm_rec_v16 *) (yr[i] + 16 * v) = s[i][v];                                       \
}

PM_REC_WBLOCK(pm_rec_w83, 8, 3)
PM_REC_WBLOCK(pm_rec_w82, 8, 2)
PM_REC_WBLOCK(pm_rec_w81, 8, 1)
PM_REC_WBLOCK(pm_rec_w43, 4, 3)
PM_REC_WBLOCK(pm_rec_w42, 4, 2)
PM_REC_WBLOCK(pm_rec_w41, 4, 1)

/* pm_rec_product on panels of 48 columns (the last one wl = 16, 32 or 48 wide) */
static PM_REC_WIDE void pm_rec_product48(int M, int K, int K0, int kc_max, int P, int wl,
                                         const float *a, size_t lda, const float *p,
                                         const float *bias, float *y, size_t ldy) {
    int k0, q, r, kc;
    if (M <= 0) return;
    for (k0 = 0; k0 < K || (K == 0 && k0 == 0); k0 += kc_max) {
        kc = K - k0 < kc_max ? K - k0 : kc_max;
        for (q = 0; q < P; q++) {
            int nv = q == P - 1 ? wl / 16 : 3;
            const float *pq = p + (size_t) q * K0 * 48 + (size_t) k0 * 16 * nv;
            const float *bq = bias ? bias + q * 48 : NULL;
            float *yq = y + q * 48;
            for (r = 0; r < M; r += M - r > 4 ? 8 : 4) {
                int big = M - r > 4;
                switch (nv * 2 + big) {
                case 7: pm_rec_w83(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                case 5: pm_rec_w82(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                case 3: pm_rec_w81(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                case 6: pm_rec_w43(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                case 4: pm_rec_w42(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                default: pm_rec_w41(r, M, kc, a + k0, lda, pq, bq, k0 > 0, yq, ldy); break;
                }
            }
        }
        if (K == 0) break;
    }
}

/* The blocks of 8 gate rows over one panel of 48 columns (24 accumulators), as
   pm_rec_blocks24 */
static inline __attribute__((always_inline)) void pm_rec_blocks48(
        const float *pk0, int kc, const float *d0, size_t ldg, int g0, int ge, int G, int c0,
        int w, int NI, int C, float scale, float *gw, size_t ldw, float *gu, size_t ldu) {
    int whole = w == 48 && (c0 + 48 <= NI || c0 >= NI), g, k, i, v;
    float *yb = c0 < NI ? gw + c0 : gu + (c0 - NI);
    size_t ldy = c0 < NI ? ldw : ldu;
    for (g = g0; g < ge; g += 8) {
        int gr[8];
        pm_rec_v16 s[8][3], u[3], t[8][3];
        const pm_rec_v16 zero = {0};
        const float *d = d0, *pk = pk0;
        _Pragma("GCC unroll 8") for (i = 0; i < 8; i++) {
            gr[i] = g + i < G ? g + i : G - 1;
            s[i][0] = s[i][1] = s[i][2] = zero;
        }
        for (k = 0; k < kc; k++, pk += 48, d += ldg) {
            u[0] = *(const pm_rec_v16 *) pk;
            u[1] = *(const pm_rec_v16 *) (pk + 16);
            u[2] = *(const pm_rec_v16 *) (pk + 32);
            _Pragma("GCC unroll 8") for (i = 0; i < 8; i++) {
                float x = d[gr[i]];
                _Pragma("GCC unroll 3") for (v = 0; v < 3; v++) s[i][v] += x * u[v];
            }
        }
        if (whole) {
            /* loads first, then stores, last row first: repeated rows agree */
            _Pragma("GCC unroll 8") for (i = 0; i < 8; i++)
                _Pragma("GCC unroll 3") for (v = 0; v < 3; v++)
                    t[i][v] = *(pm_rec_v16 *) (yb + (size_t) gr[i] * ldy + 16 * v)
                              + scale * s[i][v];
            _Pragma("GCC unroll 8") for (i = 7; i >= 0; i--)
                _Pragma("GCC unroll 3") for (v = 0; v < 3; v++)
                    *(pm_rec_v16 *) (yb + (size_t) gr[i] * ldy + 16 * v) = t[i][v];
        } else {
            float rows[8][48] __attribute__((aligned(64)));
            int nr = G - g < 8 ? G - g : 8;
            _Pragma("GCC unroll 8") for (i = 0; i < 8; i++)
                _Pragma("GCC unroll 3") for (v = 0; v < 3; v++)
                    *(pm_rec_v16 *) (rows[i] + 16 * v) = s[i][v];
            for (i = 0; i < nr; i++)
                pm_rec_store_row(rows[i], scale, c0, NI, C,
                                 gw + (size_t) (g + i) * ldw,
                                 gu + (size_t) (g + i) * ldu, 48);
        }
    }
}

/* pm_rec_wgrad on panels of 48 columns of xh */
PM_REC_WGRAD_DEFINE(pm_rec_wgrad48, PM_REC_WIDE, 48, pm_rec_blocks48)

#endif

/* pm_rec_wide(): whether this core runs the 48-column panels; pm_rec_allow_wide */
PM_WIDE_SWITCH(pm_rec_wide_on, pm_rec_wide, pm_rec_allow_wide)

/* The panels' width on this core: 48 where it runs the 64-byte kernels, else 24. */
static int pm_rec_width(void) {
    return pm_rec_wide() ? 48 : 24;
}

/* -- the gates of one LSTM step, vectorised (engine/_lstm_gates.h) --------------------------- */

typedef int pm_rec_i8 __attribute__((vector_size(32)));

#define PM_GATE_V pm_rec_v8
#define PM_GATE_I pm_rec_i8
#define PM_GATE(name) pm_rec_##name##8
#include "_lstm_gates.h"
#undef PM_GATE_V
#undef PM_GATE_I
#undef PM_GATE

/* The gates of one LSTM step for one row of the batch, units j0 to H: pm_rec_gates8 (the
   last few through an 8-lane copy). */
static inline __attribute__((always_inline)) void pm_rec_lstm_gates_from(
        int j, int H, float *z, const float *cp, float *c, float *tc, float *h1, float *h2) {
    int q, n;
    for (; j + 8 <= H; j += 8)
        pm_rec_gates8(z + j, (size_t) H, cp ? cp + j : NULL, c + j, tc + j, h1 + j,
                      h2 ? h2 + j : NULL);
    if (j < H) {
        float zt[32] = {0}, ct[8] = {0}, tt[8], cpt[8] = {0}, ht[8];
        n = H - j;
        for (q = 0; q < n; q++) {
            zt[q] = z[j + q]; zt[8 + q] = z[H + j + q];
            zt[16 + q] = z[2 * H + j + q]; zt[24 + q] = z[3 * H + j + q];
            if (cp) cpt[q] = cp[j + q];
        }
        pm_rec_gates8(zt, 8, cp ? cpt : NULL, ct, tt, ht, NULL);
        for (q = 0; q < n; q++) {
            z[j + q] = zt[q]; z[H + j + q] = zt[8 + q];
            z[2 * H + j + q] = zt[16 + q]; z[3 * H + j + q] = zt[24 + q];
            c[j + q] = ct[q]; tc[j + q] = tt[q]; h1[j + q] = ht[q];
            if (h2) h2[j + q] = ht[q];
        }
    }
}

static PM_REC_CLONES void pm_rec_lstm_gates(int H, float *z, const float *cp, float *c,
                                            float *tc, float *h1, float *h2) {
    pm_rec_lstm_gates_from(0, H, z, cp, c, tc, h1, h2);
}

#ifdef PM_REC_WIDE
typedef int pm_rec_i16 __attribute__((vector_size(64)));

#define PM_GATE_V pm_rec_v16
#define PM_GATE_I pm_rec_i16
#define PM_GATE(name) pm_rec_##name##16
#include "_lstm_gates.h"
#undef PM_GATE_V
#undef PM_GATE_I
#undef PM_GATE

/* pm_rec_lstm_gates on a core with AVX-512: vectors of 16 units, then of 8 */
static PM_REC_WIDE void pm_rec_lstm_gates16(int H, float *z, const float *cp, float *c,
                                            float *tc, float *h1, float *h2) {
    int j = 0;
    for (; j + 16 <= H; j += 16)
        pm_rec_gates16(z + j, (size_t) H, cp ? cp + j : NULL, c + j, tc + j, h1 + j,
                       h2 ? h2 + j : NULL);
    pm_rec_lstm_gates_from(j, H, z, cp, c, tc, h1, h2);
}
#endif

/* The gates of a row on the vectors that go with the panels of width W */
static inline void pm_rec_lstm_gates_w(int W, int H, float *z, const float *cp, float *c,
                                       float *tc, float *h1, float *h2) {
#ifdef PM_REC_WIDE
    if (W == 48) {
        pm_rec_lstm_gates16(H, z, cp, c, tc, h1, h2);
        return;
    }
#endif
    pm_rec_lstm_gates(H, z, cp, c, tc, h1, h2);
}

/* -- whole sequences ---------------------------------------------------------------------------

   The loops of engine/recurrent.pyx's lstm_xh_forward and lstm_xh_backward (the arguments
   checked there), time-major (T, B, ...) buffers. */

/* The backward pass of one LSTM step for one row: z the activated gates i, g, f, o (H apart),
   tc tanh(c(t)), go the output's gradient, cp c(t-1) (NULL at t = 0), dh the gradient
   carried from step t + 1; dc (in: from t + 1, out: to t - 1); dg the gates' gradients.
   One loop over the units, which the compiler vectorises: on vectors of 8 in the clones, of
   16 in pm_rec_lstm_bwd_row16 (the same operations in each lane). */
static inline __attribute__((always_inline)) void pm_rec_lstm_bwd_units(
        int H, const float *restrict z, const float *restrict tc, const float *restrict go,
        const float *restrict cp, const float *restrict dh, float *restrict dc,
        float *restrict dg) {
    const float *si = z, *sg = z + H, *sf = z + 2 * (size_t) H, *so = z + 3 * (size_t) H;
    float *di = dg, *dgg = dg + H, *df = dg + 2 * (size_t) H, *dob = dg + 3 * (size_t) H;
    int b;
    for (b = 0; b < H; b++) {
        float iv = si[b], gv = sg[b], fv = sf[b], ov = so[b], tv = tc[b];
        float dv = dh[b] + go[b];
        float dcell = dv * ov * (1 - tv * tv) + dc[b];
        di[b] = dcell * gv * iv * (1 - iv);
        dgg[b] = dcell * iv * (1 - gv * gv);
        df[b] = dcell * (cp ? cp[b] : 0.0f) * fv * (1 - fv);
        dob[b] = dv * tv * ov * (1 - ov);
        dc[b] = dcell * fv;
    }
}

static PM_REC_CLONES void pm_rec_lstm_bwd_row(int H, const float *restrict z,
                                              const float *restrict tc,
                                              const float *restrict go,
                                              const float *restrict cp,
                                              const float *restrict dh, float *restrict dc,
                                              float *restrict dg) {
    pm_rec_lstm_bwd_units(H, z, tc, go, cp, dh, dc, dg);
}

#ifdef PM_REC_WIDE
static __attribute__((target("arch=x86-64-v4,prefer-vector-width=512"), unused)) void
pm_rec_lstm_bwd_row16(int H, const float *restrict z, const float *restrict tc,
                      const float *restrict go, const float *restrict cp,
                      const float *restrict dh, float *restrict dc, float *restrict dg) {
    pm_rec_lstm_bwd_units(H, z, tc, go, cp, dh, dc, dg);
}
#endif

/* The backward of a row on the vectors that go with the panels of width W */
static inline void pm_rec_lstm_bwd_row_w(int W, int H, const float *z, const float *tc,
                                         const float *go, const float *cp, const float *dh,
                                         float *dc, float *dg) {
#ifdef PM_REC_WIDE
    if (W == 48) {
        pm_rec_lstm_bwd_row16(H, z, tc, go, cp, dh, dc, dg);
        return;
    }
#endif
    pm_rec_lstm_bwd_row(H, z, tc, go, cp, dh, dc, dg);
}

/* p moved on to the next 64-byte boundary where `used` floats from there still lie within the
   `size` floats at p (NumPy's arrays start on 16 bytes: a 24-float panel row or a gate's vector
   of 8 would straddle two cache lines every other time) */
static inline float *pm_rec_align64(float *p, size_t used, size_t size) {
    size_t s = (size_t) (-(uintptr_t) p & 63) / sizeof(float);
    return (uintptr_t) p % sizeof(float) == 0 && used + s <= size ? p + s : p;
}

/* The first of n rows of gates (the forward's z, the backward's dg), gw floats apart in a
   buffer of n gw: on a 64-byte boundary where the room past the last row's 4H columns
   (rounded up to vectors of W / 3, as the forward's product on panels of W writes them)
   allows */
static inline float *pm_rec_gate_rows(float *z, size_t n, size_t gw, int H, int W) {
    int L = W / 3;
    return pm_rec_align64(z, n ? (n - 1) * gw + (size_t) ((4 * H + L - 1) / L * L) : 0,
                          n * gw);
}

/* The product of the panels of width W: pm_rec_product48 for 48, else pm_rec_product */
static inline void pm_rec_product_w(int W, int M, int K, int K0, int kc_max, int P, int wl,
                                    const float *a, size_t lda, const float *p,
                                    const float *bias, float *y, size_t ldy) {
#ifdef PM_REC_WIDE
    if (W == 48) {
        pm_rec_product48(M, K, K0, kc_max, P, wl, a, lda, p, bias, y, ldy);
        return;
    }
#endif
    pm_rec_product(M, K, K0, kc_max, P, wl, a, lda, p, bias, y, ldy);
}

/* x (B, T, I) -> xh (T, B, K = I + H) rows [x(t), h(t-1)], gates z (T, B, W P, from
   pm_rec_gate_rows), c and tc (T, B, H), y (B, T, H); [W_ih W_hh] and b_ih packed first
   (pm_rec_pack_fwd) into pk (P panels of W columns within its pk_size floats) and pb
   (W P) */
static void pm_rec_xh_forward(ptrdiff_t nb, ptrdiff_t nt, ptrdiff_t ni, ptrdiff_t h,
                              ptrdiff_t np, int W, const float *x, const float *wi,
                              const float *wh, const float *bi, float *pk, size_t pk_size,
                              float *pb, float *xh, float *z, float *c, float *tc, float *y) {
    ptrdiff_t k = ni + h, gw = W * np, t, b, r;
    int wl = pm_rec_last_width((int) h, W);
    pk = pm_rec_align64(pk, np ? (size_t) (np - 1) * k * W + (size_t) k * wl : 0, pk_size);
    z = pm_rec_gate_rows(z, (size_t) (nt * nb), (size_t) gw, (int) h, W);
    pm_rec_pack_fwd((int) ni, (int) h, wi, wh, bi, pk, pb, (int) np, W);
    if (nb == 0 || nt == 0) return;
    for (t = 0; t < nt; t++)
        for (b = 0; b < nb; b++)
            memcpy(xh + (t * nb + b) * k, x + (b * nt + t) * ni, ni * sizeof(float));
    for (b = 0; b < nb; b++) memset(xh + b * k + ni, 0, h * sizeof(float));
    for (t = 0; t < nt; t++) {
        pm_rec_product_w(W, (int) nb, (int) (t > 0 ? k : ni), (int) k,
                         k <= 256 ? (int) k : 128, (int) np, wl, xh + t * nb * k, k, pk, pb,
                         z + t * nb * gw, gw);
        for (b = 0; b < nb; b++) {
            r = t * nb + b;
            pm_rec_lstm_gates_w(W, (int) h, z + r * gw, t > 0 ? c + (r - nb) * h : NULL,
                                c + r * h, tc + r * h, y + (b * nt + t) * h,
                                t + 1 < nt ? xh + (r + nb) * k + ni : NULL);
        }
    }
}

/* go (B, T, H), the forward's z, c, tc -> dg (T, B, gw; z and dg from pm_rec_gate_rows),
   gi (B, T, I); [W_ih W_hh] packed first (pm_rec_pack_bwd) into pk (P panels of W columns
   within its pk_size floats); dxh (rows of W P within its dxh_size floats) and dc (B, H)
   scratch */
static void pm_rec_xh_backward(ptrdiff_t nb, ptrdiff_t nt, ptrdiff_t ni, ptrdiff_t h,
                               ptrdiff_t np, int W, ptrdiff_t gw, const float *go,
                               const float *wi, const float *wh, float *pk, size_t pk_size,
                               const float *z, const float *c, const float *tc, float *dg,
                               float *dxh, size_t dxh_size, float *dc, float *gi) {
    ptrdiff_t dw = W * np, t, b, r;
    pk = pm_rec_align64(pk, (size_t) np * 4 * h * W, pk_size);
    dxh = pm_rec_align64(dxh, (size_t) nb * dw, dxh_size);
    z = pm_rec_gate_rows((float *) z, (size_t) (nt * nb), (size_t) gw, (int) h, W);
    dg = pm_rec_gate_rows(dg, (size_t) (nt * nb), (size_t) gw, (int) h, W);
    pm_rec_pack_bwd((int) ni, (int) h, wi, wh, pk, (int) np, W);
    if (nb == 0 || nt == 0) return;
    memset(dc, 0, nb * h * sizeof(float));
    memset(dxh, 0, nb * dw * sizeof(float));  /* dh(T - 1) = 0 */
    for (t = nt - 1; t >= 0; t--) {
        for (b = 0; b < nb; b++) {
            r = t * nb + b;
            pm_rec_lstm_bwd_row_w(W, (int) h, z + r * gw, tc + r * h, go + (b * nt + t) * h,
                                  t > 0 ? c + (r - nb) * h : NULL, dxh + b * dw + ni,
                                  dc + b * h, dg + r * gw);
        }
        /* the first step needs dx(0) only: the panels of its I columns */
        pm_rec_product_w(W, (int) nb, (int) (4 * h), (int) (4 * h), 128,
                         (int) (t > 0 ? np : (ni + W - 1) / W), W, dg + t * nb * gw, gw, pk,
                         NULL, dxh, dw);
        for (b = 0; b < nb; b++)
            memcpy(gi + (b * nt + t) * ni, dxh + b * dw, ni * sizeof(float));
    }
}

/* pm_rec_wgrad on the panels of width W */
static inline void pm_rec_wgrad_w(int W, int N, int G, int NI, int H, const float *dg,
                                  size_t ldg, const float *xh, size_t ldx, float scale,
                                  float *gw, size_t ldw, float *gu, size_t ldu, float *gb,
                                  float scale_b, int n_h) {
#ifdef PM_REC_WIDE
    if (W == 48) {
        pm_rec_wgrad48(N, G, NI, H, dg, ldg, xh, ldx, scale, gw, ldw, gu, ldu, gb, scale_b,
                       n_h);
        return;
    }
#endif
    pm_rec_wgrad(N, G, NI, H, dg, ldg, xh, ldx, scale, gw, ldw, gu, ldu, gb, scale_b, n_h);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
