/* The float32 weight gradient and gradInput of Linear without BLAS:
   gw[j, c] += sum_i go[i, j] * x[i, c] for a batch x (n, k), its output gradient go (n, m)
   and the gradient gw (m, k); gi[i, c] = sum_j go[i, j] * w[j, c] for the weight w (m, k);
   all rows contiguous.

   Both are one product out[r, c] (+)= sum_t a[t, r] b[t, c] with both operands packed first,
   each in one pass: a by groups of four of its r (gp: for each group, t rows of four
   numbers), b by strips of 24 columns (xp: for each strip, t rows of 24 numbers; the last
   strip padded with zeros to a multiple of 8). A block of four out rows by one strip then
   lives in 12 accumulators (AVX2's 16 registers): for each t, the four numbers of gp are
   broadcast and the strip's 24 numbers loaded, 12 fused multiply-adds; the sums are then
   added to out (the weight gradient) or stored into it (gradInput) where it lies. The
   group's gp stays in L1 while xp streams from L2 in the order it was written; out is read
   and written once, row by row. Narrower strips run the same loop with fewer accumulators,
   a last group of fewer than four rows one row at a time. Each element's sum runs in t
   order and is then added to the old value (as BLAS's beta = 1 does), so NaN and
   infinities propagate as in any dot product. */

#ifndef PM_LINEAR_GRAD_H
#define PM_LINEAR_GRAD_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* "fma": AVX with fused multiply-adds, which GCC's "avx2" target lacks */
#define PM_LINEAR_GRAD_CLONES __attribute__((target_clones("avx512f", "fma", "default"), unused))
#else
#define PM_LINEAR_GRAD_CLONES __attribute__((unused))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC push_options
#pragma GCC optimize ("fp-contract=fast")
#endif

typedef float pm_lg_v8 __attribute__((vector_size(32), aligned(4)));

/* Columns of an x strip. */
#define PM_LINEAR_GRAD_STRIP 24

/* Strips of x and groups of go for k columns and m rows of gw. */
static inline int pm_linear_grad_strips(int k) {
    return (k + PM_LINEAR_GRAD_STRIP - 1) / PM_LINEAR_GRAD_STRIP;
}

static inline int pm_linear_grad_groups(int m) {
    return (m + 3) / 4;
}

/* Floats of the packed operands for a batch of n rows, k columns, m gw rows: xp first, then
   gp (offset pm_linear_grad_gp_at). */
static inline size_t pm_linear_grad_gp_at(size_t n, int k) {
    return n * PM_LINEAR_GRAD_STRIP * (size_t) pm_linear_grad_strips(k);
}

static inline size_t pm_linear_grad_pack_size(size_t n, int k, int m) {
    return pm_linear_grad_gp_at(n, k) + n * 4 * (size_t) pm_linear_grad_groups(m);
}

/* The block of R gw rows (j to j + R - 1) by 8 NV columns at c. g: the rows' numbers in the
   group's gp (four apart per batch row); xs: the strip in xp. The plain block adds all 8 NV
   sums to gw; the _part block (the last strip of a k that is not a multiple of 8) only the
   first `cols`, the rest being the strip's zero padding. */
#define PM_LINEAR_GRAD_SUMS(R, NV)                                                           \
    pm_lg_v8 a[R][NV];                                                                       \
    int i, r, v;                                                                             \
    _Pragma("GCC unroll 4") for (r = 0; r < R; r++)                                          \
        _Pragma("GCC unroll 4") for (v = 0; v < NV; v++)                                     \
            a[r][v] = (pm_lg_v8) {0, 0, 0, 0, 0, 0, 0, 0};                                   \
    for (i = 0; i < n; i++) {                                                                \
        pm_lg_v8 u[NV];                                                                      \
        const float *gi = g + (size_t) 4 * i;                                                \
        _Pragma("GCC unroll 4") for (v = 0; v < NV; v++)                                     \
            u[v] = *(const pm_lg_v8 *) (xs + (size_t) i * (8 * NV) + 8 * v);                 \
        _Pragma("GCC unroll 4") for (r = 0; r < R; r++)                                      \
            _Pragma("GCC unroll 4") for (v = 0; v < NV; v++) a[r][v] += gi[r] * u[v];        \
    }

#define PM_LINEAR_GRAD_BLOCK(NAME, R, NV)                                                    \
static inline __attribute__((always_inline)) void NAME(                                     \
        int n, const float *g, const float *xs, float *w, size_t ldw, int add) {            \
    PM_LINEAR_GRAD_SUMS(R, NV)                                                               \
    if (add) {                                                                               \
        _Pragma("GCC unroll 4") for (r = 0; r < R; r++)                                      \
            _Pragma("GCC unroll 4") for (v = 0; v < NV; v++)                                 \
                *(pm_lg_v8 *) (w + r * ldw + 8 * v) += a[r][v];                              \
    } else {                                                                                 \
        _Pragma("GCC unroll 4") for (r = 0; r < R; r++)                                      \
            _Pragma("GCC unroll 4") for (v = 0; v < NV; v++)                                 \
                *(pm_lg_v8 *) (w + r * ldw + 8 * v) = a[r][v];                               \
    }                                                                                        \
}                                                                                            \
static inline __attribute__((always_inline)) void NAME##_part(                              \
        int n, const float *g, const float *xs, float *w, size_t ldw, int add, int cols) {   \
    float buf[8 * NV];                                                                       \
    int l;                                                                                   \
    PM_LINEAR_GRAD_SUMS(R, NV)                                                               \
    for (r = 0; r < R; r++) {                                                                \
        for (v = 0; v < NV; v++)                                                             \
            *(pm_lg_v8 *) (buf + 8 * v) = a[r][v];                                           \
        for (l = 0; l < cols; l++)                                                           \
            w[r * ldw + l] = add ? w[r * ldw + l] + buf[l] : buf[l];                         \
    }                                                                                        \
}

PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b43, 4, 3)
PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b42, 4, 2)
PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b41, 4, 1)
PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b13, 1, 3)
PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b12, 1, 2)
PM_LINEAR_GRAD_BLOCK(pm_linear_grad_b11, 1, 1)

/* gp[4 n q + 4 i + r] := go[i, 4 q + r] for the groups q in [q0, q1) (zero past m). */
static PM_LINEAR_GRAD_CLONES void pm_linear_grad_pack_go(int n, int m, const float *go,
                                                         float *gp, int q0, int q1) {
    int q, i, r;
    for (q = q0; q < q1; q++) {
        float *d = gp + (size_t) 4 * n * q;
        const float *s = go + (size_t) 4 * q;
        int rows = m - 4 * q < 4 ? m - 4 * q : 4;
        for (i = 0; i < n; i++) {
            for (r = 0; r < rows; r++)
                d[4 * (size_t) i + r] = s[(size_t) i * m + r];
            for (; r < 4; r++)
                d[4 * (size_t) i + r] = 0.0f;
        }
    }
}

/* xp[24 n s + w i + l] := x[i, 24 s + l] for the strips s in [s0, s1), w = 24 but for the
   last strip, whose width is the rest of k rounded up to 8 (zero past k). */
static PM_LINEAR_GRAD_CLONES void pm_linear_grad_pack_x(int n, int k, const float *x,
                                                        float *xp, int s0, int s1) {
    int s, i, l;
    for (s = s0; s < s1; s++) {
        int c = PM_LINEAR_GRAD_STRIP * s, cols = k - c < PM_LINEAR_GRAD_STRIP ? k - c : 24;
        int w = (cols + 7) & ~7;
        float *d = xp + (size_t) PM_LINEAR_GRAD_STRIP * n * s;
        for (i = 0; i < n; i++) {
            const float *src = x + (size_t) i * k + c;
            float *row = d + (size_t) w * i;
            for (l = 0; l < cols; l++) row[l] = src[l];
            for (; l < w; l++) row[l] = 0.0f;
        }
    }
}

/* gp[4 m q + 4 t + r] := go[4 q + r, t] for the groups q in [q0, q1) of four rows of go
   (n, m) (zero past n): the left operand of gradInput = go w, in groups of four rows. */
static PM_LINEAR_GRAD_CLONES void pm_linear_grad_pack_rows(int n, int m, const float *go,
                                                           float *gp, int q0, int q1) {
    int q, t, r;
    for (q = q0; q < q1; q++) {
        float *d = gp + (size_t) 4 * m * q;
        int rows = n - 4 * q < 4 ? n - 4 * q : 4;
        for (r = 0; r < 4; r++) {
            const float *src = go + (size_t) (4 * q + r) * m;
            if (r < rows)
                for (t = 0; t < m; t++) d[4 * (size_t) t + r] = src[t];
            else
                for (t = 0; t < m; t++) d[4 * (size_t) t + r] = 0.0f;
        }
    }
}

/* Rows [r0, r1) of out (rows k apart) := (add ? out : 0) + sum_t a[t, row] b[t, :] from the
   packed operands: a in groups of four rows (gp: for each group, t numbers of four), b in
   strips (xp: for each strip, t rows of 24). r0 is a multiple of 4; t, k >= 1. The weight
   gradient is out = gw, t the batch, a = go (pm_linear_grad_pack_go), b = x; gradInput is
   out = gradInput, t the outputs, a = go's rows (pm_linear_grad_pack_rows), b = the weight.
   Each element's sum runs in t order whatever the range: cut in ranges across threads the
   result has the numbers of one call. */
/* One block: four rows (four) or one, by the strip's nv vectors of which cols are out's. */
static inline __attribute__((always_inline)) void pm_linear_grad_block(
        int four, int nv, int cols, int t, const float *g, const float *xs, float *w, size_t ldw,
        int add) {
    int full = cols == 8 * nv;
    if (four && nv == 3)
        full ? pm_linear_grad_b43(t, g, xs, w, ldw, add)
             : pm_linear_grad_b43_part(t, g, xs, w, ldw, add, cols);
    else if (four && nv == 2)
        full ? pm_linear_grad_b42(t, g, xs, w, ldw, add)
             : pm_linear_grad_b42_part(t, g, xs, w, ldw, add, cols);
    else if (four)
        full ? pm_linear_grad_b41(t, g, xs, w, ldw, add)
             : pm_linear_grad_b41_part(t, g, xs, w, ldw, add, cols);
    else if (nv == 3)
        full ? pm_linear_grad_b13(t, g, xs, w, ldw, add)
             : pm_linear_grad_b13_part(t, g, xs, w, ldw, add, cols);
    else if (nv == 2)
        full ? pm_linear_grad_b12(t, g, xs, w, ldw, add)
             : pm_linear_grad_b12_part(t, g, xs, w, ldw, add, cols);
    else
        full ? pm_linear_grad_b11(t, g, xs, w, ldw, add)
             : pm_linear_grad_b11_part(t, g, xs, w, ldw, add, cols);
}

static PM_LINEAR_GRAD_CLONES void pm_linear_grad_rows(int t, int k, const float *xp,
                                                      const float *gp, float *out, int r0,
                                                      int r1, int add) {
    int j, s, r, strips = pm_linear_grad_strips(k);
    for (j = r0; j < r1; j += 4) {
        const float *g = gp + (size_t) 4 * t * (j / 4);
        int rows = r1 - j < 4 ? r1 - j : 4;
        for (s = 0; s < strips; s++) {
            int c = PM_LINEAR_GRAD_STRIP * s;
            int cols = k - c < PM_LINEAR_GRAD_STRIP ? k - c : PM_LINEAR_GRAD_STRIP;
            const float *xs = xp + (size_t) PM_LINEAR_GRAD_STRIP * t * s;
            float *w = out + (size_t) j * k + c;
            if (rows == 4)
                pm_linear_grad_block(1, (cols + 7) / 8, cols, t, g, xs, w, k, add);
            else
                for (r = 0; r < rows; r++)
                    pm_linear_grad_block(0, (cols + 7) / 8, cols, t, g + r, xs,
                                         w + (size_t) r * k, k, add);
        }
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
