/* The 3x3, stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3), float32.

   A correlation out[o, y, x] = bias[o] + sum_{i, c, a, b} u[o, i, a, b] * in[i, y + a - pT,
   x + b - pL] (zero outside the image) is computed on 4x4 output tiles: each 6x6 input tile d
   becomes B^T d B, each 3x3 filter g becomes G g G^T, the 36 positions of the two multiply
   (a sum over the input planes: one small product of matrices per position), and A^T m A gives
   the 4x4 outputs. 36 products per tile and plane pair instead of 144: the forward of a
   16 -> 32, 3x3 convolution on (32, 16, 28, 28) does 58 MFLOP of products instead of 231.
   The gradient of the input is the same correlation of the output's gradient by the filters
   flipped and transposed, with pads 2 - pT, 2 - pL; the gradient of the filters is its adjoint:
   dU[pos] += sum over tiles of (A dY A^T)[pos] (x) (B^T d B)[pos], then G^T dU G.

   Layout: the image of a sample is copied once into a zero-padded (rows, columns, planes)
   buffer whose planes are padded to a multiple of 8 (one vector of planes): the tile
   transforms then work on vectors of 8 planes, the products on rows of planes. A block of
   tiles (a size that keeps its transformed inputs and outputs in L2) is transformed, multiplied
   position by position and transformed back into a (rows, columns, planes) output, which one
   transposing pass moves into the NCHW output with the bias.

   Accuracy (float32, against the float64 result, relative to its largest magnitude;
   tests/engine/test_conv3x3.py holds it within 1e-4): the transforms' coefficients (up to 8
   in A, 5 in B, 1/24 in G) grow the rounding errors: on the 16 -> 32 convolution of
   (4, 16, 28, 28) the output is within 3.2e-6, the input gradient 6.9e-6 and the filter
   gradient 5.8e-6, where im2col + GEMM gives 2e-7 to 4e-7. The filter transforms run in
   double. A NaN or an infinity in a tile reaches every output of that tile (the transforms
   add and subtract its 36 inputs), not only the outputs whose window holds it: NaN still
   propagates, an infinity becomes NaN or infinity.

   Products: a block of R rows x NV vectors of accumulators (6 x 2 vectors of 8: 12 of AVX2's
   16 registers), the row operand broadcast from memory, contracted into FMAs. The functions
   are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline by
   target_clones; the vectors are 8 floats on all of them. */

#ifndef PM_CONV3X3_H
#define PM_CONV3X3_H

#include <stddef.h>
#include <string.h>

#include "_transpose.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && __GNUC__ >= 12
/* "avx2" alone does not enable FMA, nor does "avx512f": the ISA levels do. */
#define PM_W3_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), unused))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_W3_CLONES __attribute__((target_clones("fma", "default"), unused))
#else
#define PM_W3_CLONES __attribute__((unused))
#endif
#define PM_W3_INLINE static inline __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float pm_w3_v __attribute__((vector_size(32), aligned(4)));
#define PM_W3_L 8          /* floats per vector */
#define PM_W3_ROWS 6       /* rows of a block of the products */

/* Planes padded to whole vectors. */
static inline int pm_w3_planes(int c) { return (c + PM_W3_L - 1) / PM_W3_L * PM_W3_L; }

/* -- the products ------------------------------------------------------------------------- */

/* o[r, v] (+)= sum_k a[r * ar + k * ak] * b[k * ldb + v * L], r < R, v < NV vectors. */
#define PM_W3_KERNEL(R, NV)                                                                   \
PM_W3_INLINE void pm_w3_mk_##R##_##NV(int K, const float *a, ptrdiff_t ar, ptrdiff_t ak,     \
                                     const float *b, ptrdiff_t ldb, float *o, ptrdiff_t ldo, \
                                     int acc) {                                              \
    pm_w3_v s[R][NV];                                                                         \
    int r, v, k;                                                                              \
    for (r = 0; r < R; r++)                                                                   \
        for (v = 0; v < NV; v++)                                                              \
            s[r][v] = acc ? *(const pm_w3_v *) (o + r * ldo + v * PM_W3_L) : (pm_w3_v) {0};  \
    for (k = 0; k < K; k++) {                                                                 \
        const float *bk = b + k * ldb, *ak_ = a + k * ak;                                     \
        pm_w3_v u[NV];                                                                        \
        for (v = 0; v < NV; v++) u[v] = *(const pm_w3_v *) (bk + v * PM_W3_L);                \
        for (r = 0; r < R; r++) {                                                             \
            float w = ak_[r * ar];                                                            \
            for (v = 0; v < NV; v++) s[r][v] += w * u[v];                                     \
        }                                                                                     \
    }                                                                                         \
    for (r = 0; r < R; r++)                                                                   \
        for (v = 0; v < NV; v++) *(pm_w3_v *) (o + r * ldo + v * PM_W3_L) = s[r][v];         \
}

PM_W3_KERNEL(1, 1) PM_W3_KERNEL(2, 1) PM_W3_KERNEL(3, 1)
PM_W3_KERNEL(4, 1) PM_W3_KERNEL(5, 1) PM_W3_KERNEL(6, 1)
PM_W3_KERNEL(1, 2) PM_W3_KERNEL(2, 2) PM_W3_KERNEL(3, 2)
PM_W3_KERNEL(4, 2) PM_W3_KERNEL(5, 2) PM_W3_KERNEL(6, 2)

/* o (rows x cols floats, rows ldo apart) (+)= a (rows x K, strides ar, ak) @ b (K x cols, rows
   ldb apart); cols a multiple of L. */
PM_W3_INLINE void pm_w3_product(int rows, int cols, int K, const float *a, ptrdiff_t ar,
                                ptrdiff_t ak, const float *b, ptrdiff_t ldb, float *o,
                                ptrdiff_t ldo, int acc) {
    int r0, c0;
    for (c0 = 0; c0 < cols; c0 += 2 * PM_W3_L) {
        int two = cols - c0 >= 2 * PM_W3_L;
        for (r0 = 0; r0 < rows; r0 += PM_W3_ROWS) {
            int R = rows - r0 < PM_W3_ROWS ? rows - r0 : PM_W3_ROWS;
            const float *ar0 = a + r0 * ar;
            const float *b0 = b + c0;
            float *o0 = o + r0 * ldo + c0;
#define PM_W3_CASE(N)                                                                         \
            case N:                                                                           \
                if (two) pm_w3_mk_##N##_2(K, ar0, ar, ak, b0, ldb, o0, ldo, acc);             \
                else pm_w3_mk_##N##_1(K, ar0, ar, ak, b0, ldb, o0, ldo, acc);                 \
                break;
            switch (R) {
            PM_W3_CASE(1) PM_W3_CASE(2) PM_W3_CASE(3) PM_W3_CASE(4) PM_W3_CASE(5)
            PM_W3_CASE(6)
            }
#undef PM_W3_CASE
        }
    }
}

/* -- layout ------------------------------------------------------------------------------- */

/* dst[r, s, c] := src[c, r - top, s - left] for r < rows, s < cols, c < Cp (0 outside the
   image and for c >= C); src is (C, H, W), dst's planes Cp apart. */
PM_W3_INLINE void pm_w3_to_hwc(const float *src, int C, int H, int W, int top, int left,
                               float *dst, int rows, int cols, int Cp) {
    int r, lo = left < 0 ? 0 : (left > cols ? cols : left);
    int hi = left + W < cols ? left + W : cols;
    size_t row = (size_t) cols * Cp;
    if (hi < lo) hi = lo;
    for (r = 0; r < rows; r++) {
        float *d = dst + r * row;
        int iy = r - top;
        if (iy < 0 || iy >= H || hi == lo) {
            memset(d, 0, row * sizeof(float));
            continue;
        }
        if (Cp != C) {
            memset(d, 0, row * sizeof(float));
        } else {
            memset(d, 0, (size_t) lo * Cp * sizeof(float));
            memset(d + (size_t) hi * Cp, 0, (size_t) (cols - hi) * Cp * sizeof(float));
        }
        pm_transpose_f(src + (size_t) iy * W + (lo - left), (size_t) H * W, d + (size_t) lo * Cp,
                       Cp, C, hi - lo, NULL);
    }
}

/* -- transforms --------------------------------------------------------------------------- */

/* r := B^T d for six values d[0], d[k], ..., d[5k]. */
#define PM_W3_BT(d0, d1, d2, d3, d4, d5, r0, r1, r2, r3, r4, r5) do {                         \
    pm_w3_v p_ = d4 - 4 * d2, q_ = d3 - 4 * d1, s_ = d4 - d2, t_ = 2 * (d3 - d1);             \
    r0 = 4 * d0 - 5 * d2 + d4; r1 = p_ + q_; r2 = p_ - q_;                                    \
    r3 = s_ + t_; r4 = s_ - t_; r5 = 4 * d1 - 5 * d3 + d5;                                    \
} while (0)

/* r := A^T m (six values in, four out). */
#define PM_W3_AT(m0, m1, m2, m3, m4, m5, r0, r1, r2, r3) do {                                 \
    pm_w3_v a_ = m1 + m2, b_ = m1 - m2, c_ = m3 + m4, e_ = m3 - m4;                           \
    r0 = m0 + a_ + c_; r1 = b_ + 2 * e_; r2 = a_ + 4 * c_; r3 = b_ + 8 * e_ + m5;             \
} while (0)

/* r := A y (four values in, six out): the adjoint of A^T. */
#define PM_W3_A(y0, y1, y2, y3, r0, r1, r2, r3, r4, r5) do {                                  \
    pm_w3_v a_ = y0 + y2, b_ = y1 + y3, c_ = y0 + 4 * y2, e_ = 2 * y1 + 8 * y3;               \
    r0 = y0; r1 = a_ + b_; r2 = a_ - b_; r3 = c_ + e_; r4 = c_ - e_; r5 = y3;                 \
} while (0)

/* V[pos * ldp] := (B^T d B)[pos] for the 6x6 tile of vectors at p (rows rs, columns cs
   apart). */
PM_W3_INLINE void pm_w3_in_tile(const float *p, ptrdiff_t rs, ptrdiff_t cs, float *V,
                                ptrdiff_t ldp) {
    pm_w3_v t[6][6];
    int i, j;
    for (i = 0; i < 6; i++) {
        const float *q = p + i * rs;
        pm_w3_v d0 = *(const pm_w3_v *) q, d1 = *(const pm_w3_v *) (q + cs);
        pm_w3_v d2 = *(const pm_w3_v *) (q + 2 * cs), d3 = *(const pm_w3_v *) (q + 3 * cs);
        pm_w3_v d4 = *(const pm_w3_v *) (q + 4 * cs), d5 = *(const pm_w3_v *) (q + 5 * cs);
        PM_W3_BT(d0, d1, d2, d3, d4, d5, t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
    }
    for (j = 0; j < 6; j++) {
        pm_w3_v r0, r1, r2, r3, r4, r5;
        PM_W3_BT(t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j], r0, r1, r2, r3, r4, r5);
        *(pm_w3_v *) (V + (0 * 6 + j) * ldp) = r0;
        *(pm_w3_v *) (V + (1 * 6 + j) * ldp) = r1;
        *(pm_w3_v *) (V + (2 * 6 + j) * ldp) = r2;
        *(pm_w3_v *) (V + (3 * 6 + j) * ldp) = r3;
        *(pm_w3_v *) (V + (4 * 6 + j) * ldp) = r4;
        *(pm_w3_v *) (V + (5 * 6 + j) * ldp) = r5;
    }
}

/* The 4x4 tile of vectors at p (rows rs, columns cs apart) := A^T m A, m[pos] = M[pos * ldp]. */
PM_W3_INLINE void pm_w3_out_tile(const float *M, ptrdiff_t ldp, float *p, ptrdiff_t rs,
                                 ptrdiff_t cs) {
    pm_w3_v t[6][4];
    int i, b;
    for (i = 0; i < 6; i++) {
        const float *q = M + i * 6 * ldp;
        PM_W3_AT(*(const pm_w3_v *) q, *(const pm_w3_v *) (q + ldp),
                 *(const pm_w3_v *) (q + 2 * ldp), *(const pm_w3_v *) (q + 3 * ldp),
                 *(const pm_w3_v *) (q + 4 * ldp), *(const pm_w3_v *) (q + 5 * ldp),
                 t[i][0], t[i][1], t[i][2], t[i][3]);
    }
    for (b = 0; b < 4; b++) {
        pm_w3_v r0, r1, r2, r3;
        PM_W3_AT(t[0][b], t[1][b], t[2][b], t[3][b], t[4][b], t[5][b], r0, r1, r2, r3);
        *(pm_w3_v *) (p + b * cs) = r0;
        *(pm_w3_v *) (p + rs + b * cs) = r1;
        *(pm_w3_v *) (p + 2 * rs + b * cs) = r2;
        *(pm_w3_v *) (p + 3 * rs + b * cs) = r3;
    }
}

/* Z[pos * ldp] := (A y A^T)[pos] for the 4x4 tile of vectors y at p (rows rs, columns cs
   apart). */
PM_W3_INLINE void pm_w3_grad_tile(const float *p, ptrdiff_t rs, ptrdiff_t cs, float *Z,
                                  ptrdiff_t ldp) {
    pm_w3_v t[4][6];
    int a, j;
    for (a = 0; a < 4; a++) {
        const float *q = p + a * rs;
        PM_W3_A(*(const pm_w3_v *) q, *(const pm_w3_v *) (q + cs),
                *(const pm_w3_v *) (q + 2 * cs), *(const pm_w3_v *) (q + 3 * cs),
                t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5]);
    }
    for (j = 0; j < 6; j++) {
        pm_w3_v r0, r1, r2, r3, r4, r5;
        PM_W3_A(t[0][j], t[1][j], t[2][j], t[3][j], r0, r1, r2, r3, r4, r5);
        *(pm_w3_v *) (Z + (0 * 6 + j) * ldp) = r0;
        *(pm_w3_v *) (Z + (1 * 6 + j) * ldp) = r1;
        *(pm_w3_v *) (Z + (2 * 6 + j) * ldp) = r2;
        *(pm_w3_v *) (Z + (3 * 6 + j) * ldp) = r3;
        *(pm_w3_v *) (Z + (4 * 6 + j) * ldp) = r4;
        *(pm_w3_v *) (Z + (5 * 6 + j) * ldp) = r5;
    }
}

/* The rows of G (6 x 3). */
static const double pm_w3_G[6][3] = {
    {1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};

/* -- sizes -------------------------------------------------------------------------------- */

/* Tiles per block: their transformed inputs and outputs take about 160 KiB (L2). */
static inline int pm_w3_block(int Cp, int Op, int tiles) {
    int b = (int) (160 * 1024 / (36 * sizeof(float) * ((size_t) Cp + Op)));
    b = b / PM_W3_ROWS * PM_W3_ROWS;
    if (b < PM_W3_ROWS) b = PM_W3_ROWS;
    return b < tiles ? b : tiles;
}

/* Floats of scratch for a correlation of C planes of H x W into O planes of oH x oW: the
   transformed filters, the padded image, the (rows, columns, planes) output and a block's
   transformed inputs and outputs. */
static inline size_t pm_w3_scratch(int C, int O, int oH, int oW) {
    size_t Cp = pm_w3_planes(C), Op = pm_w3_planes(O);
    size_t tY = (oH + 3) / 4, tX = (oW + 3) / 4;
    size_t Tb = pm_w3_block((int) Cp, (int) Op, (int) (tY * tX));
    return 36 * Cp * Op + (4 * tY + 2) * (4 * tX + 2) * Cp + 16 * tY * tX * Op
        + 36 * Tb * (Cp + Op);
}

/* -- the passes --------------------------------------------------------------------------- */

/* U[pos, i, o] := (G g G^T)[pos] for g the 3x3 filter of (o, i), read at
   w + o * so + i * si, its taps in order, or reversed (flip: the gradient of the input);
   0 for the padded planes. U is (36, Cp, Op). */
static PM_W3_CLONES void pm_w3_filters(const float *w, int O, int C, ptrdiff_t so,
                                       ptrdiff_t si, int flip, float *U) {
    int Cp = pm_w3_planes(C), Op = pm_w3_planes(O), o, c, k, l, i;
    size_t ldp = (size_t) Cp * Op;
    memset(U, 0, 36 * ldp * sizeof(float));
    for (o = 0; o < O; o++)
        for (c = 0; c < C; c++) {
            const float *g = w + o * so + c * si;
            double h[6][3], gg[3][3];
            for (k = 0; k < 9; k++) gg[k / 3][k % 3] = g[flip ? 8 - k : k];
            for (k = 0; k < 6; k++)
                for (l = 0; l < 3; l++)
                    h[k][l] = pm_w3_G[k][0] * gg[0][l] + pm_w3_G[k][1] * gg[1][l]
                        + pm_w3_G[k][2] * gg[2][l];
            for (k = 0; k < 6; k++)
                for (l = 0; l < 6; l++) {
                    double s = 0;
                    for (i = 0; i < 3; i++) s += h[k][i] * pm_w3_G[l][i];
                    U[(k * 6 + l) * ldp + (size_t) c * Op + o] = (float) s;
                }
        }
}

/* Transformed inputs of tiles [t0, t0 + nt) of a sample: V[pos, t - t0, :Cp]. */
PM_W3_INLINE void pm_w3_inputs(const float *xp, int Cp, int Wp, int tX, int t0, int nt,
                               float *V, int Tb) {
    int t, c;
    for (t = t0; t < t0 + nt; t++) {
        const float *p = xp + ((size_t) (t / tX) * 4 * Wp + (size_t) (t % tX) * 4) * Cp;
        for (c = 0; c < Cp; c += PM_W3_L)
            pm_w3_in_tile(p + c, (ptrdiff_t) Wp * Cp, Cp, V + (size_t) (t - t0) * Cp + c,
                          (ptrdiff_t) Tb * Cp);
    }
}

/* y (n, O, oH, oW) := the correlation of x (n, C, H, W) by the filters U (pm_w3_filters),
   padded by pT rows above and pL columns to the left (either may be negative), + bias (or
   NULL). work: pm_w3_scratch(C, O, oH, oW) floats, U at its start. */
static PM_W3_CLONES void pm_w3_correlate(const float *x, float *y, const float *bias, int n,
                                         int C, int H, int W, int O, int oH, int oW, int pT,
                                         int pL, float *work) {
    int Cp = pm_w3_planes(C), Op = pm_w3_planes(O), s, t0, t, pos, r;
    int tY = (oH + 3) / 4, tX = (oW + 3) / 4, T = tY * tX, Tb = pm_w3_block(Cp, Op, T);
    int Hp = 4 * tY + 2, Wp = 4 * tX + 2, ow = 4 * tX;
    const float *U = work;
    float *xp = work + (size_t) 36 * Cp * Op;
    float *ob = xp + (size_t) Hp * Wp * Cp;
    float *V = ob + (size_t) 16 * T * Op;
    float *M = V + (size_t) 36 * Tb * Cp;
    for (s = 0; s < n; s++) {
        pm_w3_to_hwc(x + (size_t) s * C * H * W, C, H, W, pT, pL, xp, Hp, Wp, Cp);
        for (t0 = 0; t0 < T; t0 += Tb) {
            int nt = T - t0 < Tb ? T - t0 : Tb;
            pm_w3_inputs(xp, Cp, Wp, tX, t0, nt, V, Tb);
            for (pos = 0; pos < 36; pos++)
                pm_w3_product(nt, Op, Cp, V + (size_t) pos * Tb * Cp, Cp, 1,
                              U + (size_t) pos * Cp * Op, Op, M + (size_t) pos * Tb * Op, Op, 0);
            for (t = t0; t < t0 + nt; t++) {
                float *p = ob + ((size_t) (t / tX) * 4 * ow + (size_t) (t % tX) * 4) * Op;
                for (r = 0; r < Op; r += PM_W3_L)
                    pm_w3_out_tile(M + (size_t) (t - t0) * Op + r, (ptrdiff_t) Tb * Op, p + r,
                                   (ptrdiff_t) ow * Op, Op);
            }
        }
        for (r = 0; r < oH; r++)
            pm_transpose_f(ob + (size_t) r * ow * Op, Op, y + ((size_t) s * O * oH + r) * oW,
                           (size_t) oH * oW, oW, O, bias);
    }
}

/* gw (O, C, 3, 3) += scale * the gradient of the correlation's filters, for x (n, C, H, W)
   and the gradient gy (n, O, oH, oW) of its output. work: pm_w3_scratch(C, O, oH, oW)
   floats. */
static PM_W3_CLONES void pm_w3_filter_grad(const float *x, const float *gy, float *gw,
                                           float scale, int n, int C, int H, int W, int O,
                                           int oH, int oW, int pT, int pL, float *work) {
    int Cp = pm_w3_planes(C), Op = pm_w3_planes(O), s, t0, t, pos, r, o, c, i, j, k;
    int tY = (oH + 3) / 4, tX = (oW + 3) / 4, T = tY * tX, Tb = pm_w3_block(Cp, Op, T);
    int Hp = 4 * tY + 2, Wp = 4 * tX + 2, ow = 4 * tX;
    size_t ldp = (size_t) Cp * Op;
    float *dU = work;
    float *xp = work + 36 * ldp;
    float *gp = xp + (size_t) Hp * Wp * Cp;
    float *V = gp + (size_t) 16 * T * Op;
    float *Z = V + (size_t) 36 * Tb * Cp;
    memset(dU, 0, 36 * ldp * sizeof(float));
    for (s = 0; s < n; s++) {
        pm_w3_to_hwc(x + (size_t) s * C * H * W, C, H, W, pT, pL, xp, Hp, Wp, Cp);
        pm_w3_to_hwc(gy + (size_t) s * O * oH * oW, O, oH, oW, 0, 0, gp, 4 * tY, ow, Op);
        for (t0 = 0; t0 < T; t0 += Tb) {
            int nt = T - t0 < Tb ? T - t0 : Tb;
            pm_w3_inputs(xp, Cp, Wp, tX, t0, nt, V, Tb);
            for (t = t0; t < t0 + nt; t++) {
                const float *p = gp + ((size_t) (t / tX) * 4 * ow + (size_t) (t % tX) * 4) * Op;
                for (r = 0; r < Op; r += PM_W3_L)
                    pm_w3_grad_tile(p + r, (ptrdiff_t) ow * Op, Op,
                                    Z + (size_t) (t - t0) * Op + r, (ptrdiff_t) Tb * Op);
            }
            for (pos = 0; pos < 36; pos++)
                pm_w3_product(Cp, Op, nt, V + (size_t) pos * Tb * Cp, 1, Cp,
                              Z + (size_t) pos * Tb * Op, Op, dU + pos * ldp, Op, 1);
        }
    }
    for (o = 0; o < O; o++)
        for (c = 0; c < C; c++) {
            double h[3][6];
            for (i = 0; i < 3; i++)
                for (j = 0; j < 6; j++) {
                    double v = 0;
                    for (k = 0; k < 6; k++)
                        v += pm_w3_G[k][i] * dU[(k * 6 + j) * ldp + (size_t) c * Op + o];
                    h[i][j] = v;
                }
            for (i = 0; i < 3; i++)
                for (j = 0; j < 3; j++) {
                    double v = 0;
                    for (k = 0; k < 6; k++) v += h[i][k] * pm_w3_G[k][j];
                    gw[((size_t) o * C + c) * 9 + i * 3 + j] += (float) (scale * v);
                }
        }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
