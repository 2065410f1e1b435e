/* A product with few output rows, without BLAS: y[r, p] := bias[r] (+ y[r, p] if acc)
   + sum_k a(r, k) * b[k, p], for r < R, p < P, k < K, where a(r, k) = a[r * ar + k * ak] and
   the rows of b and y are ldb and ldy apart.

   Where R is small (a convolution with few output planes: LeNet's 1 -> 6, 5x5 has R = 6,
   K = 25, P = 784), BLAS packs all of b for every few rows it computes: sgemm's packing took
   as many instructions as its kernel. Here each b row segment is loaded once per block of
   four output rows, and a(r, k) is broadcast from memory: no packing, no copy.
   Blocks: 4 rows x 16 pixels of accumulators, then single rows, then a scalar pixel tail. */

#ifndef PM_PANEL_H
#define PM_PANEL_H

#include <stddef.h>

#include "_wide.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_PANEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), \
                                                 unused))
/* The direct convolutions in 64-byte vectors, for a core with AVX-512 (pm_panel_wide) */
#define PM_PANEL_WIDE __attribute__((target("arch=x86-64-v4"), unused))
#else
#define PM_PANEL_CLONES __attribute__((unused))
#endif

/* The products are contracted into fused multiply-adds where the target has them (as BLAS
   does): half the vector instructions of the loop. The clones name x86-64-v3 (AVX2 with FMA)
   and v4 (AVX-512 with FMA): a clone for "avx2" alone has no FMA, and ran a multiply and an
   add for each product. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

/* Vectors held in registers (V), and the same as they lie in memory, at any float's address
   (VU): GCC built an under-aligned vector's value lane by lane, a masked broadcast each */
typedef float pm_panel_v8f __attribute__((vector_size(32)));
typedef float pm_panel_v8fu __attribute__((vector_size(32), aligned(4)));
typedef double pm_panel_v4d __attribute__((vector_size(32)));
typedef double pm_panel_v4du __attribute__((vector_size(32), aligned(8)));
typedef float pm_panel_v16f __attribute__((vector_size(64)));
typedef float pm_panel_v16fu __attribute__((vector_size(64), aligned(4)));

/* c in every lane of a V, -0 included (c - 0 is c; 0 + c would turn -0 into +0) */
#define PM_PANEL_SPLAT(V, c) ((c) - (V) {0})

#define PM_PANEL_DEFINE(NAME, T, V, VU, L)                                                    \
static PM_PANEL_CLONES void NAME(int R, int K, int P, const T *a, ptrdiff_t ar, ptrdiff_t ak, \
                                 const T *b, size_t ldb, const T *bias, int acc, T *y,        \
                                 size_t ldy) {                                                \
    int r = 0, k, p;                                                                          \
    for (; r + 4 <= R; r += 4) {                                                              \
        const T *a0 = a + r * ar, *a1 = a0 + ar, *a2 = a1 + ar, *a3 = a2 + ar;                \
        T *y0 = y + (size_t) r * ldy, *y1 = y0 + ldy, *y2 = y1 + ldy, *y3 = y2 + ldy;         \
        T c0 = bias ? bias[r] : 0, c1 = bias ? bias[r + 1] : 0;                               \
        T c2 = bias ? bias[r + 2] : 0, c3 = bias ? bias[r + 3] : 0;                           \
        for (p = 0; p + 2 * L <= P; p += 2 * L) {                                             \
            V s00, s01, s10, s11, s20, s21, s30, s31;                                         \
            s00 = s01 = PM_PANEL_SPLAT(V, c0); s10 = s11 = PM_PANEL_SPLAT(V, c1);             \
            s20 = s21 = PM_PANEL_SPLAT(V, c2); s30 = s31 = PM_PANEL_SPLAT(V, c3);             \
            if (acc) {                                                                        \
                s00 += *(const VU *) (y0 + p); s01 += *(const VU *) (y0 + p + L);             \
                s10 += *(const VU *) (y1 + p); s11 += *(const VU *) (y1 + p + L);             \
                s20 += *(const VU *) (y2 + p); s21 += *(const VU *) (y2 + p + L);             \
                s30 += *(const VU *) (y3 + p); s31 += *(const VU *) (y3 + p + L);             \
            }                                                                                 \
            for (k = 0; k < K; k++) {                                                         \
                const T *bk = b + (size_t) k * ldb + p;                                       \
                V u = *(const VU *) bk, v = *(const VU *) (bk + L);                           \
                T w0 = a0[k * ak], w1 = a1[k * ak], w2 = a2[k * ak], w3 = a3[k * ak];         \
                s00 += w0 * u; s01 += w0 * v; s10 += w1 * u; s11 += w1 * v;                   \
                s20 += w2 * u; s21 += w2 * v; s30 += w3 * u; s31 += w3 * v;                   \
            }                                                                                 \
            *(VU *) (y0 + p) = s00; *(VU *) (y0 + p + L) = s01;                               \
            *(VU *) (y1 + p) = s10; *(VU *) (y1 + p + L) = s11;                               \
            *(VU *) (y2 + p) = s20; *(VU *) (y2 + p + L) = s21;                               \
            *(VU *) (y3 + p) = s30; *(VU *) (y3 + p + L) = s31;                               \
        }                                                                                     \
        for (; p < P; p++) {                                                                  \
            T t0 = c0, t1 = c1, t2 = c2, t3 = c3;                                             \
            if (acc) { t0 += y0[p]; t1 += y1[p]; t2 += y2[p]; t3 += y3[p]; }                  \
            for (k = 0; k < K; k++) {                                                         \
                T u = b[(size_t) k * ldb + p];                                                \
                t0 += a0[k * ak] * u; t1 += a1[k * ak] * u;                                   \
                t2 += a2[k * ak] * u; t3 += a3[k * ak] * u;                                   \
            }                                                                                 \
            y0[p] = t0; y1[p] = t1; y2[p] = t2; y3[p] = t3;                                   \
        }                                                                                     \
    }                                                                                         \
    for (; r < R; r++) {                                                                      \
        const T *a0 = a + r * ar;                                                             \
        T *y0 = y + (size_t) r * ldy;                                                         \
        T c0 = bias ? bias[r] : 0;                                                            \
        for (p = 0; p + 2 * L <= P; p += 2 * L) {                                             \
            V s00, s01;                                                                       \
            s00 = s01 = PM_PANEL_SPLAT(V, c0);                                                \
            if (acc) { s00 += *(const VU *) (y0 + p); s01 += *(const VU *) (y0 + p + L); }    \
            for (k = 0; k < K; k++) {                                                         \
                const T *bk = b + (size_t) k * ldb + p;                                       \
                T w0 = a0[k * ak];                                                            \
                s00 += w0 * *(const VU *) bk; s01 += w0 * *(const VU *) (bk + L);             \
            }                                                                                 \
            *(VU *) (y0 + p) = s00; *(VU *) (y0 + p + L) = s01;                               \
        }                                                                                     \
        for (; p < P; p++) {                                                                  \
            T t0 = c0 + (acc ? y0[p] : 0);                                                    \
            for (k = 0; k < K; k++) t0 += a0[k * ak] * b[(size_t) k * ldb + p];               \
            y0[p] = t0;                                                                       \
        }                                                                                     \
    }                                                                                         \
}

PM_PANEL_DEFINE(pm_panel_f, float, pm_panel_v8f, pm_panel_v8fu, 8)
PM_PANEL_DEFINE(pm_panel_d, double, pm_panel_v4d, pm_panel_v4du, 4)

/* A direct convolution with few planes (stride 1, no dilation), the output planes in vector
   lanes: yt[p, m] := sum over taps (c, i, j) of wt[(c, i, j), m] * x[c, oy + i, ox + j] for
   the P = oH * oW output pixels p = (oy, ox), where x is the (possibly padded) image with
   planes hw apart and rows ws apart, and wt the weight transposed to (taps, ML), its ML >= M
   lanes padded with zeros to whole vectors (yt rows are ML long too).

   No im2col: a tap's input is read where it lies, broadcast into the accumulators of a
   block of pixels. Blocks: 6 pixels x 2 vectors of planes (12 accumulators, 2 weight loads
   and 6 broadcasts per tap), or 12 pixels x 1 vector for an odd last vector. LeNet's 6 -> 16,
   5x5 on 14x14, float32 at batch 1: 243k instructions a call by im2col and the panel above,
   52k so.

   Where an output row holds half a block or more, the blocks keep to a row (one input
   address for all their pixels): each row in the fewest blocks of at most 6 pixels (12 with
   one vector), all of one length. Shorter rows run blocks across rows, one pixel's address
   per accumulator (a pointer a pixel, which spilled registers where rows were longer); a
   last partial block repeats its last pixel and stores only the real ones. Either way each
   output is the sum over the taps in their order, from zero: the same numbers. */

/* N pixels (N <= NB) of one output row starting at x0 (the input under its first pixel),
   NV vectors of planes from w (wt + v), into y (yt + its first pixel's row + v) */
#define PM_DIRECT_ROW(NAME, T, V, VU, L, NV)                                                  \
static inline __attribute__((always_inline)) void NAME(                                       \
        int C, int kH, int kW, const T *x0, size_t hw, size_t ws, const T *w, int ML, T *y,   \
        const int N) {                                                                        \
    V s[12][NV];                                                                              \
    const V zero = {0};                                                                       \
    int c, i, j, q, e;                                                                        \
    for (q = 0; q < N; q++)                                                                   \
        for (e = 0; e < NV; e++) s[q][e] = zero;                                              \
    for (c = 0; c < C; c++)                                                                   \
        for (i = 0; i < kH; i++) {                                                            \
            const T *xt = x0 + c * hw + i * ws;                                               \
            for (j = 0; j < kW; j++, w += ML) {                                               \
                const T *xj = xt + j;  /* xt[j + q] took a sign extension a pixel */          \
                V wv[NV];                                                                     \
                for (e = 0; e < NV; e++) wv[e] = *(const VU *) (w + e * L);                   \
                for (q = 0; q < N; q++) {                                                     \
                    T u = xj[q];                                                              \
                    for (e = 0; e < NV; e++) s[q][e] += wv[e] * u;                            \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    for (q = 0; q < N; q++)                                                                   \
        for (e = 0; e < NV; e++) *(VU *) (y + (size_t) q * ML + e * L) = s[q][e];             \
}

/* Every output row in the fewest blocks of at most NB pixels, all of one length n (the last
   one ending at the row's end: a row of 14 in two blocks of 7, of 28 in three of 10, the
   last overlapping the one before); NB / 2 <= oW, so that NB / 2 <= n */
#define PM_DIRECT_ROWS_OF(NAME, ROW, T, NB)                                                   \
static inline __attribute__((always_inline)) void NAME(                                       \
        int C, int kH, int kW, int oH, int oW, const T *x, size_t hw, size_t ws, const T *w,  \
        int ML, T *y) {                                                                       \
    int oy, ox, blocks = (oW + NB - 1) / NB, n = (oW + blocks - 1) / blocks;                  \
    for (oy = 0; oy < oH; oy++)                                                               \
        for (ox = 0; ox < oW; ox += n) {                                                      \
            int at = ox + n <= oW ? ox : oW - n;                                              \
            const T *x0 = x + (size_t) oy * ws + at;                                          \
            T *y0 = y + ((size_t) oy * oW + at) * ML;                                         \
            switch (n) {                                                                      \
            case NB: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB); break;                        \
            case NB - 1: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB - 1); break;                \
            case NB - 2: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB - 2); break;                \
            case NB - 3: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB - 3); break;                \
            case NB - 4: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB - 4); break;                \
            case NB - 5: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB - 5); break;                \
            default: ROW(C, kH, kW, x0, hw, ws, w, ML, y0, NB / 2); break;                    \
            }                                                                                 \
        }                                                                                     \
}

#define PM_DIRECT_DEFINE(NAME, T, V, VU, L, ATTR)                                             \
PM_DIRECT_ROW(NAME##_row2, T, V, VU, L, 2)                                                    \
PM_DIRECT_ROW(NAME##_row1, T, V, VU, L, 1)                                                    \
PM_DIRECT_ROWS_OF(NAME##_rows2, NAME##_row2, T, 6)                                            \
PM_DIRECT_ROWS_OF(NAME##_rows1, NAME##_row1, T, 12)                                           \
static ATTR void NAME(int C, int kH, int kW, int oH, int oW, const T *x,                      \
                                 size_t hw, size_t ws, const T *wt, int ML, T *yt) {          \
    int P = oH * oW, v = 0, p, q, c, i, j;                                                    \
    const V zero = {0};                                                                       \
    for (; v + 2 * L <= ML; v += 2 * L) {                                                     \
        if (2 * oW >= 6) {                                                                    \
            NAME##_rows2(C, kH, kW, oH, oW, x, hw, ws, wt + v, ML, yt + v);                   \
            continue;                                                                         \
        }                                                                                     \
        for (p = 0; p < P; p += 6) {                                                          \
            const T *xq[6];                                                                   \
            V s[6][2];                                                                        \
            for (q = 0; q < 6; q++) {                                                         \
                int at = p + q < P ? p + q : P - 1;                                           \
                xq[q] = x + (size_t) (at / oW) * ws + at % oW;                                \
                s[q][0] = s[q][1] = zero;                                                     \
            }                                                                                 \
            const T *w = wt + v;  /* rows shorter than 3: each pixel its own address */       \
            for (c = 0; c < C; c++)                                                           \
                for (i = 0; i < kH; i++) {                                                    \
                    size_t t = c * hw + i * ws;                                               \
                    for (j = 0; j < kW; j++, w += ML) {                                       \
                        V w0 = *(const VU *) w, w1 = *(const VU *) (w + L);                   \
                        for (q = 0; q < 6; q++) {                                             \
                            T u = xq[q][t + j];                                               \
                            s[q][0] += w0 * u;                                                \
                            s[q][1] += w1 * u;                                                \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            for (q = 0; q < 6 && p + q < P; q++) {                                            \
                *(VU *) (yt + (size_t) (p + q) * ML + v) = s[q][0];                           \
                *(VU *) (yt + (size_t) (p + q) * ML + v + L) = s[q][1];                       \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    for (; v < ML; v += L) {                                                                  \
        if (2 * oW >= 12) {                                                                   \
            NAME##_rows1(C, kH, kW, oH, oW, x, hw, ws, wt + v, ML, yt + v);                   \
            continue;                                                                         \
        }                                                                                     \
        for (p = 0; p < P; p += 12) {                                                         \
            const T *xq[12];                                                                  \
            V s[12];                                                                          \
            for (q = 0; q < 12; q++) {                                                        \
                int at = p + q < P ? p + q : P - 1;                                           \
                xq[q] = x + (size_t) (at / oW) * ws + at % oW;                                \
                s[q] = zero;                                                                  \
            }                                                                                 \
            const T *w = wt + v;  /* rows shorter than 6: each pixel its own address */       \
            for (c = 0; c < C; c++)                                                           \
                for (i = 0; i < kH; i++) {                                                    \
                    size_t t = c * hw + i * ws;                                               \
                    for (j = 0; j < kW; j++, w += ML) {                                       \
                        V w0 = *(const VU *) w;                                               \
                        for (q = 0; q < 12; q++) s[q] += w0 * xq[q][t + j];                   \
                    }                                                                         \
                }                                                                             \
            for (q = 0; q < 12 && p + q < P; q++)                                             \
                *(VU *) (yt + (size_t) (p + q) * ML + v) = s[q];                              \
        }                                                                                     \
    }                                                                                         \
}

PM_DIRECT_DEFINE(pm_direct_f8, float, pm_panel_v8f, pm_panel_v8fu, 8, PM_PANEL_CLONES)
PM_DIRECT_DEFINE(pm_direct_d, double, pm_panel_v4d, pm_panel_v4du, 4, PM_PANEL_CLONES)
#ifdef PM_PANEL_WIDE
PM_DIRECT_DEFINE(pm_direct_f16, float, pm_panel_v16f, pm_panel_v16fu, 16, PM_PANEL_WIDE)
#endif

/* A direct convolution with one vector of planes or fewer (stride 1, no dilation), the
   output pixels of a row in vector lanes: y[m, oy, ox] := bias[m] + sum over taps (c, i, j) of
   w[m, c, i, j] * x[c, oy + i, ox + j], for the M planes of y (oH x oW each, NCHW), where x is
   the (possibly padded) image with planes hw apart and rows ws apart (ws >= oW + kW - 1) and
   w the weight as it lies, (M, C, kH, kW).

   The planes in lanes (pm_direct_*) fill only 6 of 8 lanes for LeNet's 1 -> 6 and need a
   transposing pass; here a block of up to 6 planes x 2 L pixels of one output row keeps 12
   accumulators, each tap loads two vectors of the input row where it lies (unaligned) and
   broadcasts a weight per plane; the sums start from the bias and are stored in place. A
   row's last block ends at its end, overlapping the one before where oW is not a multiple
   of 2 L (28 = 16 + 12: a quarter of its lanes computed twice); a row shorter than 2 L has
   one block, its second vector ending at the row's end (28 = 16 + 12 again, in 64-byte
   vectors). Needs oW >= L. LeNet's 1 -> 6, 5x5 on 28x28 float32: a tap's 12 products for 2
   loads and 6 broadcasts. */
#define PM_ROWS_BLOCK(NAME, T, V, VU, L, R)                                                   \
static inline __attribute__((always_inline)) void NAME(                                       \
        int C, int kH, int kW, int oH, int oW, const T *x, size_t hw, size_t ws, const T *w,  \
        const T *bias, T *y) {                                                                \
    int oy, ox, c, i, j, r, T_ = kH * kW, K = C * T_, P = oH * oW;                            \
    for (oy = 0; oy < oH; oy++)                                                               \
        for (ox = 0; ox < oW; ox += 2 * L) {                                                  \
            V s[R][2];                                                                        \
            const T *xo;                                                                      \
            int p0 = ox + 2 * L <= oW ? ox : (oW >= 2 * L ? oW - 2 * L : 0);                  \
            int p1 = oW >= 2 * L ? p0 + L : oW - L, d = p1 - p0;                              \
            xo = x + (size_t) oy * ws + p0;                                                   \
            _Pragma("GCC unroll 6") for (r = 0; r < R; r++) {                                 \
                s[r][0] = s[r][1] = bias ? PM_PANEL_SPLAT(V, bias[r]) : (V) {0};              \
            }                                                                                 \
            for (c = 0; c < C; c++)                                                           \
                for (i = 0; i < kH; i++) {                                                    \
                    const T *xt = xo + c * hw + i * ws, *wt = w + c * T_ + i * kW;            \
                    for (j = 0; j < kW; j++) {                                                \
                        V u0 = *(const VU *) (xt + j), u1 = *(const VU *) (xt + j + d);       \
                        _Pragma("GCC unroll 6") for (r = 0; r < R; r++) {                     \
                            T wr = wt[(size_t) r * K + j];                                    \
                            s[r][0] += wr * u0;                                               \
                            s[r][1] += wr * u1;                                               \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            _Pragma("GCC unroll 6") for (r = 0; r < R; r++) {                                 \
                *(VU *) (y + (size_t) r * P + (size_t) oy * oW + p0) = s[r][0];               \
                *(VU *) (y + (size_t) r * P + (size_t) oy * oW + p1) = s[r][1];               \
            }                                                                                 \
        }                                                                                     \
}

#define PM_ROWS_DEFINE(NAME, T, V, VU, L, ATTR)                                               \
PM_ROWS_BLOCK(NAME##_6, T, V, VU, L, 6)                                                       \
PM_ROWS_BLOCK(NAME##_5, T, V, VU, L, 5)                                                       \
PM_ROWS_BLOCK(NAME##_4, T, V, VU, L, 4)                                                       \
PM_ROWS_BLOCK(NAME##_3, T, V, VU, L, 3)                                                       \
PM_ROWS_BLOCK(NAME##_2, T, V, VU, L, 2)                                                       \
PM_ROWS_BLOCK(NAME##_1, T, V, VU, L, 1)                                                       \
static ATTR void NAME(int C, int M, int kH, int kW, int oH, int oW, const T *x,               \
                                 size_t hw, size_t ws, const T *w, const T *bias, T *y) {     \
    int r, R;                                                                                 \
    size_t K = (size_t) C * kH * kW, P = (size_t) oH * oW;                                    \
    for (r = 0; r < M; r += R) {                                                              \
        const T *wr = w + r * K, *br = bias ? bias + r : NULL;                                \
        T *yr = y + r * P;                                                                    \
        R = M - r < 6 ? M - r : 6;                                                            \
        switch (R) {                                                                          \
        case 6: NAME##_6(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                    \
        case 5: NAME##_5(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                    \
        case 4: NAME##_4(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                    \
        case 3: NAME##_3(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                    \
        case 2: NAME##_2(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                    \
        default: NAME##_1(C, kH, kW, oH, oW, x, hw, ws, wr, br, yr); break;                   \
        }                                                                                     \
    }                                                                                         \
}

PM_ROWS_DEFINE(pm_direct_rows_f8, float, pm_panel_v8f, pm_panel_v8fu, 8, PM_PANEL_CLONES)
PM_ROWS_DEFINE(pm_direct_rows_d, double, pm_panel_v4d, pm_panel_v4du, 4, PM_PANEL_CLONES)
#ifdef PM_PANEL_WIDE
PM_ROWS_DEFINE(pm_direct_rows_f16, float, pm_panel_v16f, pm_panel_v16fu, 16, PM_PANEL_WIDE)
#endif

/* pm_panel_wide(): whether this core runs the 64-byte direct convolutions; pm_panel_allow_wide */
PM_WIDE_SWITCH(pm_panel_wide_on, pm_panel_wide, pm_panel_allow_wide)

/* The float32 direct convolutions on the core's widest vectors: pm_direct_lanes_f(M) is the
   ML that pm_direct_f's weight and output rows have (M rounded up to whole vectors). Each
   output is one sum in the same order at either width: the same numbers. */
static __attribute__((unused)) int pm_direct_lanes_f(int M) {
    int L = 8;
#ifdef PM_PANEL_WIDE
    if (pm_panel_wide())
        L = 16;
#endif
    return (M + L - 1) / L * L;
}

static __attribute__((unused)) void pm_direct_f(int C, int kH, int kW, int oH, int oW,
                                                const float *x, size_t hw, size_t ws,
                                                const float *wt, int ML, float *yt) {
#ifdef PM_PANEL_WIDE
    if (pm_panel_wide()) {
        pm_direct_f16(C, kH, kW, oH, oW, x, hw, ws, wt, ML, yt);
        return;
    }
#endif
    pm_direct_f8(C, kH, kW, oH, oW, x, hw, ws, wt, ML, yt);
}

static __attribute__((unused)) void pm_direct_rows_f(int C, int M, int kH, int kW, int oH,
                                                     int oW, const float *x, size_t hw,
                                                     size_t ws, const float *w,
                                                     const float *bias, float *y) {
#ifdef PM_PANEL_WIDE
    if (pm_panel_wide()) {
        pm_direct_rows_f16(C, M, kH, kW, oH, oW, x, hw, ws, w, bias, y);
        return;
    }
#endif
    pm_direct_rows_f8(C, M, kH, kW, oH, oW, x, hw, ws, w, bias, y);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
