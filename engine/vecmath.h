/* vecmath.h: the C part of the engine. Elementwise math and the array loops of the activation
   (PReLU included), softmax, batch-normalisation, layer-normalisation and cross-map LRN
   kernels. The Cython kernels check the arrays and call the entry points of section (3),
   declared in vecmath.pxd.

   Why C: the build flags give baseline x86-64 (16-byte SSE2) and libm's expf/tanhf/logf are
   scalar calls, so a loop that calls them runs one value at a time. Here each function is written
   branch-free from the math (range reduction, a polynomial, exponent assembly through bit casts,
   selects for the special values), inlined into plain loops over contiguous arrays, and each loop
   is compiled by GCC's target_clones (PM_CLONES) for AVX-512, AVX2 and the baseline, picked at
   load time; memory-bound loops such as ReLU gain from the wider vectors too (SSE2 alone runs
   them at about half of memcpy's speed). Reductions keep independent partial sums in GCC vector
   types (2-4 chains of 8 lanes; layer normalisation's row sums 2-4 chains of 4 doubles, which
   the AVX2 clone keeps in registers) so that they vectorise without -ffast-math; sums of float32
   data accumulate in double. bench/bench_layers.py, one AVX-512 core: 2-7x faster than the NumPy
   expressions of the same results (Sigmoid, the backward passes, softmax, batch normalisation),
   from 1.7x faster (float32 exp) to 1.4x slower (float32 tanh) than NumPy's own SIMD np.exp and
   np.tanh, 4-6x faster than torch's tanh; the branchy loops (LeakyReLU, PReLU, HardTanh, Abs, ...)
   became selects, 10-100x faster than the Cython loops they replace on random signs.

   Accuracy, measured by tests/engine/test_vecmath_kernels.py::test_accuracy_table (which checks
   these figures) on 126k-300k samples per function and dtype spanning the dtype's range (log:
   subnormals to the largest float), against the exact value computed in long double (x86's
   80-bit, 64-bit mantissa): error in ulps of the exact value (0.5 would be correctly rounded)
   and relative error, maxima over the normal results, figures rounded up:
                     float32              float64
     function     max ulp   max rel    max ulp   max rel
     exp             1.25   1.1e-07       1.10   1.7e-16
     log             1.78   1.6e-07       1.91   3.0e-16
     tanh            1.20   1.3e-07       1.19   2.3e-16
     sigmoid         2.17   1.9e-07       2.27   3.6e-16
     soft_plus       2.43   2.2e-07       2.48   4.4e-16
     elu             1.65   1.4e-07       1.81   2.4e-16
   (ELU with alpha 1.5, SoftPlus with beta 2 below its threshold 20.) Every x86-64 version of
   target_clones gives the same results: the build turns FMA contraction off
   (-ffp-contract=off in setup.py), which GCC would otherwise do in the AVX-512 clones only
   (their exp measured 1.04 ulp, the others 1.25). Subnormal results are within
   one ulp of the smallest normal; overflow gives inf of the right sign.

   Algorithms:
     exp: x = k ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2, k by the 1.5 * 2^23 rounding
       trick), exp(r) by a Chebyshev fit of degree 6 (float, error 2e-9) or the Taylor polynomial
       of degree 13 (double, 4e-18), times 2^k assembled in two normal factors (one rounding,
       gradual underflow, overflow to +inf).
     expm1 (ELU, x <= 0): (2^k - 1) + 2^k expm1(r), expm1(r) by Taylor of degree 7 / 13.
     log: x = 2^e m, m in [sqrt(1/2), sqrt(2)) (subnormals scaled first), log m = 2 atanh(s),
       s = (m-1)/(m+1), |s| <= 0.172, odd series to s^9 (float) / s^21 (double).
     tanh: |x| < 0.625: x P(x^2), P a Chebyshev fit of tanh(x)/x (error 1.5e-10 / 1e-17);
       otherwise 1 - 2 / (exp(2|x|) + 1); the sign restored with copysign.
     sigmoid: 1 / (1 + exp(-|x|)), times exp(-|x|) for x < 0. softplus: max(v, 0) +
       log1p(exp(-|v|)), log1p(t) = log(u) + (t - (u - 1)) / u with u = 1 + t.
   NaN stays NaN; tanh(+-inf) = +-1, sigmoid(-inf) = 0, exp(-inf) = 0, exp(+inf) = +inf.
   Requires IEEE round-to-nearest (the default); correct with or without FMA contraction.

   Layout: (1) the scalar functions, suffix _f32 / _f64; (2) the array loops, written once in
   terms of T and PM_S(name) (name_f32 or name_f64) at the end of this file, which includes
   itself once per dtype; (3) the entry points, one per loop, that take the dtype as an argument
   (f64: double, else float) and the data as untyped pointers. Every pointer is to contiguous,
   checked memory; an output may be its input only where the kernel says so (elementwise: y may
   be x, gi may be go). Static C: each module that includes this compiles its own copy. */

#ifndef PM_VECMATH_H
#define PM_VECMATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), unused))
#else
#define PM_CLONES __attribute__((unused))
#endif
#define PM_INLINE static inline __attribute__((always_inline))

/* The selects (clamps, special values) become vector blends only if comparisons may be assumed
   not to trap; results are unchanged (round-to-nearest), only FP exception flags are ignored. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize ("no-trapping-math")
/* vectors passed between always-inline helpers never cross an ABI boundary; GCC reports this
   at the end of the translation unit, so the warning stays off after the header too */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#define PM_LANES 16
typedef double pm_vec8d __attribute__((vector_size(64)));
typedef double pm_vec4d __attribute__((vector_size(32)));

/* == (1) scalar functions ==================================================================== */

/* -- bit casts -------------------------------------------------------------------------------- */

PM_INLINE uint32_t pm_bits_f32(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
PM_INLINE float pm_float_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
PM_INLINE uint64_t pm_bits_f64(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
PM_INLINE double pm_float_f64(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* a where mask is all ones, b where it is zero, through the bits: no branch on the data (max
   pooling's running maximum, whose comparisons are a coin toss on random data). */
PM_INLINE float pm_select_f32(intptr_t mask, float a, float b) {
    uint32_t m = (uint32_t) mask;
    return pm_float_f32((pm_bits_f32(a) & m) | (pm_bits_f32(b) & ~m));
}
PM_INLINE double pm_select_f64(intptr_t mask, double a, double b) {
    uint64_t m = (uint64_t) mask;
    return pm_float_f64((pm_bits_f64(a) & m) | (pm_bits_f64(b) & ~m));
}

/* -- exp -------------------------------------------------------------------------------------- */

/* k = round(x / ln2) by adding 1.5 * 2^23: the sum's low mantissa bits are k (|k| < 2^22). */
#define PM_ROUND_F32 12582912.0f
#define PM_ROUND_F64 6755399441055744.0

/* 2^k for -254 < k < 255 as two normal factors, so that p * 2^k1 * 2^k2 rounds once. */
PM_INLINE float pm_exp_core_f32(float x, float *scale2) {
    float t = x * 1.44269504088896341f + PM_ROUND_F32;
    float kf = t - PM_ROUND_F32;
    int32_t k = (int32_t) (pm_bits_f32(t) - pm_bits_f32(PM_ROUND_F32));
    /* ln2 = 0.693359375 - 2.12194440e-4; the first part has 9 bits, so k * it is exact */
    float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
    /* Chebyshev fit of exp on |r| <= ln2/2 + 5e-4 (error 2e-9, below float's rounding) */
    float p = 1.0f + r * (1.00000003804f + r * (0.500000004753f + r * (0.166664140602f
              + r * (0.0416663510802f + r * (0.00837524732689f + r * 0.00139412594688f)))));
    int32_t k1 = k >> 1;
    int32_t k2 = k - k1;
    *scale2 = pm_float_f32((uint32_t) (k2 + 127) << 23);
    return p * pm_float_f32((uint32_t) (k1 + 127) << 23);
}

PM_INLINE float pm_exp_f32(float x) {
    float s2;
    x = x < -105.0f ? -105.0f : x;   /* comparisons are false for NaN: it passes through */
    x = x > 89.0f ? 89.0f : x;       /* still overflows to +inf */
    float p = pm_exp_core_f32(x, &s2);
    return p * s2;
}

PM_INLINE double pm_exp_core_f64(double x, double *scale2) {
    double t = x * 1.4426950408889634 + PM_ROUND_F64;
    double kf = t - PM_ROUND_F64;
    int64_t k = (int64_t) (pm_bits_f64(t) - pm_bits_f64(PM_ROUND_F64));
    /* ln2 split so that k * the first part is exact for |k| < 2^11 */
    double r = (x - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10;
    double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
               + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
               + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
               + r * (1.0 / 6227020800.0)))))))))))));
    /* k1 = floor(k / 2) without a 64-bit arithmetic shift (absent before AVX-512) */
    int64_t k1 = (int64_t) ((uint64_t) (k + 2048) >> 1) - 1024;
    int64_t k2 = k - k1;
    *scale2 = pm_float_f64((uint64_t) (k2 + 1023) << 52);
    return p * pm_float_f64((uint64_t) (k1 + 1023) << 52);
}

PM_INLINE double pm_exp_f64(double x) {
    double s2;
    x = x < -746.0 ? -746.0 : x;
    x = x > 710.0 ? 710.0 : x;
    double p = pm_exp_core_f64(x, &s2);
    return p * s2;
}

/* expm1 for x <= 0 (ELU): (2^k - 1) + 2^k expm1(r); exact 2^k - 1 for k >= -24 (-53), and
   below that the result is -1 to working precision. */
PM_INLINE float pm_expm1_neg_f32(float x) {
    x = x < -40.0f ? -40.0f : x;
    float t = x * 1.44269504088896341f + PM_ROUND_F32;
    float kf = t - PM_ROUND_F32;
    int32_t k = (int32_t) (pm_bits_f32(t) - pm_bits_f32(PM_ROUND_F32));
    float r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
    float q = r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f
              + r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
    float s = pm_float_f32((uint32_t) (k + 127) << 23);
    return (s - 1.0f) + s * q;
}

PM_INLINE double pm_expm1_neg_f64(double x) {
    x = x < -80.0 ? -80.0 : x;
    double t = x * 1.4426950408889634 + PM_ROUND_F64;
    double kf = t - PM_ROUND_F64;
    int64_t k = (int64_t) (pm_bits_f64(t) - pm_bits_f64(PM_ROUND_F64));
    double r = (x - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10;
    double q = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
               + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
               + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
               + r * (1.0 / 6227020800.0)))))))))))));
    double s = pm_float_f64((uint64_t) (k + 1023) << 52);
    return (s - 1.0) + s * q;
}

/* -- log -------------------------------------------------------------------------------------- */

PM_INLINE float pm_log_f32(float x) {
    const uint32_t c = 0x3f3504f3u;               /* sqrt(1/2) */
    float xs = x < 1.17549435e-38f ? x * 33554432.0f : x;  /* subnormal: * 2^25 */
    float bias = x < 1.17549435e-38f ? 25.0f : 0.0f;
    uint32_t d = pm_bits_f32(xs) - c;
    float e = (float) ((int32_t) d >> 23) - bias;
    float m = pm_float_f32((d & 0x7fffffu) + c);  /* x = 2^e m, m in [sqrt(1/2), sqrt(2)) */
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float lm = 2.0f * s + 2.0f * s * z * (1.0f / 3 + z * (1.0f / 5 + z * (1.0f / 7
               + z * (1.0f / 9))));
    float r = (e * -2.12194440e-4f + lm) + e * 0.693359375f;
    /* 0 -> -inf, < 0 -> NaN, +inf and NaN -> themselves */
    r = x > 0.0f ? r : (x == 0.0f ? -INFINITY : NAN);
    return x < INFINITY ? r : x;
}

PM_INLINE double pm_log_f64(double x) {
    const uint64_t c = 0x3fe6a09e667f3bcdull;     /* sqrt(1/2) */
    double xs = x < 2.2250738585072014e-308 ? x * 18014398509481984.0 : x;  /* * 2^54 */
    double bias = x < 2.2250738585072014e-308 ? 1076.0 : 1022.0;
    uint64_t d = pm_bits_f64(xs) - c + (1022ull << 52);   /* exponent field >= 1 */
    /* e = (d >> 52) - 1022 as a double, through the bits of 2^52 + (d >> 52) */
    double e = (pm_float_f64((d >> 52) | 0x4330000000000000ull) - 4503599627370496.0) - bias;
    double m = pm_float_f64((d & 0xfffffffffffffull) + c);
    double f = m - 1.0;
    double s = f / (2.0 + f);
    double z = s * s;
    double lm = 2.0 * s + 2.0 * s * z * (1.0 / 3 + z * (1.0 / 5 + z * (1.0 / 7 + z * (1.0 / 9
                + z * (1.0 / 11 + z * (1.0 / 13 + z * (1.0 / 15 + z * (1.0 / 17 + z * (1.0 / 19
                + z * (1.0 / 21))))))))));
    double r = (e * 1.90821492927058770002e-10 + lm) + e * 6.93147180369123816490e-01;
    r = x > 0.0 ? r : (x == 0.0 ? -INFINITY : NAN);
    return x < INFINITY ? r : x;
}

/* log1p(t) for t >= 0: log(u) corrected by the rounding of u = 1 + t */
PM_INLINE float pm_log1p_pos_f32(float t) {
    float u = 1.0f + t;
    return pm_log_f32(u) + (t - (u - 1.0f)) / u;
}

PM_INLINE double pm_log1p_pos_f64(double t) {
    double u = 1.0 + t;
    return pm_log_f64(u) + (t - (u - 1.0)) / u;
}

/* -- tanh, sigmoid, softplus ------------------------------------------------------------------ */

PM_INLINE float pm_tanh_f32(float x) {
    float a = fabsf(x);
    float z = a * a;
    float small = a * (0.99999999985393478884f + z * (-0.33333329662929515885f
                  + z * (0.13333181748509383883f + z * (-0.053944584678163066277f
                  + z * (0.021691265316521299072f + z * (-0.0081578533724838813213f
                  + z * 0.0021274353634957097326f))))));
    float big = 1.0f - 2.0f / (pm_exp_f32(2.0f * a) + 1.0f);
    return copysignf(a < 0.625f ? small : big, x);
}

PM_INLINE double pm_tanh_f64(double x) {
    double a = fabs(x);
    double z = a * a;
    double small = a * (0.99999999999999999024 + z * (-0.33333333333332613516
                   + z * (0.13333333333245252897 + z * (-0.053968253925945695567
                   + z * (0.021869487483410595755 + z * (-0.0088632200212560951287
                   + z * (0.0035919825215839249649 + z * (-0.001454929385854390258
                   + z * (0.00058623143160506117835 + z * (-0.00022841018529512850373
                   + z * (0.00007698563199045422871 + z * -0.000016001499513001041087)))))))))));
    double big = 1.0 - 2.0 / (pm_exp_f64(2.0 * a) + 1.0);
    return copysign(a < 0.625 ? small : big, x);
}

/* e = exp(-|x|) in (0, 1]: 1 / (1 + e) for x >= 0, e / (1 + e) below (gradual underflow) */
PM_INLINE float pm_sigmoid_f32(float x) {
    float e = pm_exp_f32(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

PM_INLINE double pm_sigmoid_f64(double x) {
    double e = pm_exp_f64(-fabs(x));
    double r = 1.0 / (1.0 + e);
    return x >= 0.0 ? r : e * r;
}

/* log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)) */
PM_INLINE float pm_softplus_f32(float v) {
    return (v > 0.0f ? v : 0.0f) + pm_log1p_pos_f32(pm_exp_f32(-fabsf(v)));
}

PM_INLINE double pm_softplus_f64(double v) {
    return (v > 0.0 ? v : 0.0) + pm_log1p_pos_f64(pm_exp_f64(-fabs(v)));
}

/* == (2) the array loops, once per dtype: see the end of this file ========================= */

#define PM_T float
#define PM_I int32_t
#define PM_S(name) name##_f32
#define PM_F(name) name##f
#include "vecmath.h"
#undef PM_T
#undef PM_I
#undef PM_S
#undef PM_F

#define PM_T double
#define PM_I int64_t
#define PM_S(name) name##_f64
#define PM_F(name) name
#include "vecmath.h"
#undef PM_T
#undef PM_I
#undef PM_S
#undef PM_F

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* == (3) entry points: the loop of the dtype f64 selects, on untyped pointers ============== */

#define PM_BY_DTYPE(f64, name, ...) ((f64) ? name##_f64(__VA_ARGS__) : name##_f32(__VA_ARGS__))

#define pm_threshold_fwd(f64, ...) PM_BY_DTYPE(f64, pm_threshold_fwd, __VA_ARGS__)
#define pm_threshold_bwd(f64, ...) PM_BY_DTYPE(f64, pm_threshold_bwd, __VA_ARGS__)
#define pm_leaky_relu_fwd(f64, ...) PM_BY_DTYPE(f64, pm_leaky_relu_fwd, __VA_ARGS__)
#define pm_leaky_relu_bwd(f64, ...) PM_BY_DTYPE(f64, pm_leaky_relu_bwd, __VA_ARGS__)
#define pm_elu_fwd(f64, ...) PM_BY_DTYPE(f64, pm_elu_fwd, __VA_ARGS__)
#define pm_elu_bwd(f64, ...) PM_BY_DTYPE(f64, pm_elu_bwd, __VA_ARGS__)
#define pm_hard_tanh_fwd(f64, ...) PM_BY_DTYPE(f64, pm_hard_tanh_fwd, __VA_ARGS__)
#define pm_hard_tanh_bwd(f64, ...) PM_BY_DTYPE(f64, pm_hard_tanh_bwd, __VA_ARGS__)
#define pm_tanh_fwd(f64, ...) PM_BY_DTYPE(f64, pm_tanh_fwd, __VA_ARGS__)
#define pm_tanh_bwd(f64, ...) PM_BY_DTYPE(f64, pm_tanh_bwd, __VA_ARGS__)
#define pm_sigmoid_fwd(f64, ...) PM_BY_DTYPE(f64, pm_sigmoid_fwd, __VA_ARGS__)
#define pm_sigmoid_bwd(f64, ...) PM_BY_DTYPE(f64, pm_sigmoid_bwd, __VA_ARGS__)
#define pm_hard_sigmoid_fwd(f64, ...) PM_BY_DTYPE(f64, pm_hard_sigmoid_fwd, __VA_ARGS__)
#define pm_hard_sigmoid_bwd(f64, ...) PM_BY_DTYPE(f64, pm_hard_sigmoid_bwd, __VA_ARGS__)
#define pm_soft_plus_fwd(f64, ...) PM_BY_DTYPE(f64, pm_soft_plus_fwd, __VA_ARGS__)
#define pm_soft_plus_bwd(f64, ...) PM_BY_DTYPE(f64, pm_soft_plus_bwd, __VA_ARGS__)
#define pm_soft_sign_fwd(f64, ...) PM_BY_DTYPE(f64, pm_soft_sign_fwd, __VA_ARGS__)
#define pm_soft_sign_bwd(f64, ...) PM_BY_DTYPE(f64, pm_soft_sign_bwd, __VA_ARGS__)
#define pm_abs_fwd(f64, ...) PM_BY_DTYPE(f64, pm_abs_fwd, __VA_ARGS__)
#define pm_abs_bwd(f64, ...) PM_BY_DTYPE(f64, pm_abs_bwd, __VA_ARGS__)
#define pm_square_fwd(f64, ...) PM_BY_DTYPE(f64, pm_square_fwd, __VA_ARGS__)
#define pm_square_bwd(f64, ...) PM_BY_DTYPE(f64, pm_square_bwd, __VA_ARGS__)
#define pm_sqrt_fwd(f64, ...) PM_BY_DTYPE(f64, pm_sqrt_fwd, __VA_ARGS__)
#define pm_sqrt_bwd(f64, ...) PM_BY_DTYPE(f64, pm_sqrt_bwd, __VA_ARGS__)
#define pm_exp_fwd(f64, ...) PM_BY_DTYPE(f64, pm_exp_fwd, __VA_ARGS__)
#define pm_exp_bwd(f64, ...) PM_BY_DTYPE(f64, pm_exp_bwd, __VA_ARGS__)
#define pm_log_fwd(f64, ...) PM_BY_DTYPE(f64, pm_log_fwd, __VA_ARGS__)
#define pm_log_bwd(f64, ...) PM_BY_DTYPE(f64, pm_log_bwd, __VA_ARGS__)
#define pm_power_fwd(f64, ...) PM_BY_DTYPE(f64, pm_power_fwd, __VA_ARGS__)
#define pm_power_bwd(f64, ...) PM_BY_DTYPE(f64, pm_power_bwd, __VA_ARGS__)
#define pm_prelu_fwd(f64, ...) PM_BY_DTYPE(f64, pm_prelu_fwd, __VA_ARGS__)
#define pm_prelu_bwd(f64, ...) PM_BY_DTYPE(f64, pm_prelu_bwd, __VA_ARGS__)
#define pm_prelu_acc(f64, ...) PM_BY_DTYPE(f64, pm_prelu_acc, __VA_ARGS__)
#define pm_softmax_fwd(f64, ...) PM_BY_DTYPE(f64, pm_softmax_fwd, __VA_ARGS__)
#define pm_softmax_bwd(f64, ...) PM_BY_DTYPE(f64, pm_softmax_bwd, __VA_ARGS__)
#define pm_bn_fwd(f64, ...) PM_BY_DTYPE(f64, pm_bn_fwd, __VA_ARGS__)
#define pm_bn_bwd(f64, ...) PM_BY_DTYPE(f64, pm_bn_bwd, __VA_ARGS__)
#define pm_bn_acc(f64, ...) PM_BY_DTYPE(f64, pm_bn_acc, __VA_ARGS__)
#define pm_ln_fwd(f64, ...) PM_BY_DTYPE(f64, pm_ln_fwd, __VA_ARGS__)
#define pm_ln_bwd(f64, ...) PM_BY_DTYPE(f64, pm_ln_bwd, __VA_ARGS__)
#define pm_ln_sums(f64, ...) PM_BY_DTYPE(f64, pm_ln_sums, __VA_ARGS__)
#define pm_ln_acc(f64, ...) PM_BY_DTYPE(f64, pm_ln_acc, __VA_ARGS__)
#define pm_lrn_fwd(f64, ...) PM_BY_DTYPE(f64, pm_lrn_fwd, __VA_ARGS__)
#define pm_lrn_bwd(f64, ...) PM_BY_DTYPE(f64, pm_lrn_bwd, __VA_ARGS__)

#elif defined(PM_T)  /* ======================================================================= */

/* (2) The array loops, for T = PM_T, names PM_S(name), libm functions PM_F(name). */

#define T PM_T

/* -- reductions in independent partial sums (vectorisable without -ffast-math) ------------- */
/* GCC vector types of 8 values, two or four accumulators (16 or 32 lanes in flight): an
   AVX-512 register of doubles, split by the other clones; unaligned loads through memcpy.
   Float data accumulate in double. */

typedef T PM_S(pm_vec8) __attribute__((vector_size(8 * sizeof(T))));
typedef PM_I PM_S(pm_vec8i) __attribute__((vector_size(8 * sizeof(T))));
#define V8 PM_S(pm_vec8)
#define V8I PM_S(pm_vec8i)

PM_INLINE pm_vec8d PM_S(pm_load8d)(const T *x) {
    V8 v;
    memcpy(&v, x, sizeof v);
    return __builtin_convertvector(v, pm_vec8d);
}

PM_INLINE V8 PM_S(pm_vmax8)(V8 a, V8 b) {
    V8I gt = a > b;   /* all ones where a > b, none for NaN */
    return (V8) ((gt & (V8I) a) | (~gt & (V8I) b));
}

PM_INLINE T PM_S(pm_rowmax)(const T *x, Py_ssize_t n, T sign) {
    T m = sign * x[0];
    Py_ssize_t i = 0;
    if (n >= PM_LANES) {
        V8 a0, a1, v0, v1;
        memcpy(&a0, x, sizeof a0);
        memcpy(&a1, x + 8, sizeof a1);
        a0 *= sign;
        a1 *= sign;
        for (i = PM_LANES; i + PM_LANES <= n; i += PM_LANES) {
            memcpy(&v0, x + i, sizeof v0);
            memcpy(&v1, x + i + 8, sizeof v1);
            a0 = PM_S(pm_vmax8)(v0 * sign, a0);
            a1 = PM_S(pm_vmax8)(v1 * sign, a1);
        }
        a0 = PM_S(pm_vmax8)(a1, a0);
        for (int j = 0; j < 8; j++) m = a0[j] > m ? a0[j] : m;
    }
    for (; i < n; i++) { T v = sign * x[i]; m = v > m ? v : m; }
    return m;
}

/* four chains of 8 doubles: an addition's latency is ~4 cycles */
PM_INLINE double PM_S(pm_sum)(const T *x, Py_ssize_t n) {
    pm_vec8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    double s = 0;
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 += PM_S(pm_load8d)(x + i);
        a1 += PM_S(pm_load8d)(x + i + 8);
        a2 += PM_S(pm_load8d)(x + i + 16);
        a3 += PM_S(pm_load8d)(x + i + 24);
    }
    for (; i + 8 <= n; i += 8) a0 += PM_S(pm_load8d)(x + i);
    for (; i < n; i++) s += (double) x[i];
    a0 += a1 + (a2 + a3);
    for (int j = 0; j < 8; j++) s += a0[j];
    return s;
}

PM_INLINE double PM_S(pm_dot)(const T *x, const T *y, Py_ssize_t n) {
    pm_vec8d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    double s = 0;
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 += PM_S(pm_load8d)(x + i) * PM_S(pm_load8d)(y + i);
        a1 += PM_S(pm_load8d)(x + i + 8) * PM_S(pm_load8d)(y + i + 8);
        a2 += PM_S(pm_load8d)(x + i + 16) * PM_S(pm_load8d)(y + i + 16);
        a3 += PM_S(pm_load8d)(x + i + 24) * PM_S(pm_load8d)(y + i + 24);
    }
    for (; i + 8 <= n; i += 8) a0 += PM_S(pm_load8d)(x + i) * PM_S(pm_load8d)(y + i);
    for (; i < n; i++) s += (double) x[i] * (double) y[i];
    a0 += a1 + (a2 + a3);
    for (int j = 0; j < 8; j++) s += a0[j];
    return s;
}

/* sum of (x - c)^2 */
PM_INLINE double PM_S(pm_sumsq_dev)(const T *x, Py_ssize_t n, double c) {
    pm_vec8d a0 = {0}, a1 = {0};
    double s = 0;
    Py_ssize_t i = 0;
    for (; i + PM_LANES <= n; i += PM_LANES) {
        pm_vec8d d0 = PM_S(pm_load8d)(x + i) - c, d1 = PM_S(pm_load8d)(x + i + 8) - c;
        a0 += d0 * d0;
        a1 += d1 * d1;
    }
    for (; i < n; i++) { double d = x[i] - c; s += d * d; }
    a0 += a1;
    for (int j = 0; j < 8; j++) s += a0[j];
    return s;
}

/* sum of g and of g * (x - c) */
PM_INLINE void PM_S(pm_sum_g_gx)(const T *g, const T *x, Py_ssize_t n, double c,
                                 double *sum_g, double *sum_gx) {
    pm_vec8d ag = {0}, agx = {0}, bg = {0}, bgx = {0};
    double sg = 0, sgx = 0;
    Py_ssize_t i = 0;
    for (; i + PM_LANES <= n; i += PM_LANES) {
        pm_vec8d v0 = PM_S(pm_load8d)(g + i), v1 = PM_S(pm_load8d)(g + i + 8);
        ag += v0;
        bg += v1;
        agx += v0 * (PM_S(pm_load8d)(x + i) - c);
        bgx += v1 * (PM_S(pm_load8d)(x + i + 8) - c);
    }
    for (; i < n; i++) { double v = g[i]; sg += v; sgx += v * (x[i] - c); }
    ag += bg;
    agx += bgx;
    for (int j = 0; j < 8; j++) { sg += ag[j]; sgx += agx[j]; }
    *sum_g += sg;
    *sum_gx += sgx;
}

#undef V8
#undef V8I

/* -- elementwise activations: y = f(x); gi = f'(x) go, or a function of the output y -------- */

/* NaN: each select below is written so that a NaN input takes the branch PyTorch's CPU
   kernels take (compared by tests/pymodules/test_nan.py): the forward keeps the NaN, the
   backward gives what Torch's does. A comparison is false for NaN, so `x <= th ? v : x` and
   `x > th ? x : v` differ only there; both stay branch-free blends. */

/* Threshold (ReLU is th = v = 0): y = x <= th ? v : x, as Torch: NaN stays NaN */
static PM_CLONES void PM_S(pm_threshold_fwd)(const T *x, T *y, Py_ssize_t n, T th, T v) {
    for (Py_ssize_t i = 0; i < n; i++) { T a = x[i]; y[i] = a <= th ? v : a; }
}

static PM_CLONES void PM_S(pm_threshold_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n,
                                             T th) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = x[i] <= th ? (T) 0 : go[i];
}

/* LeakyReLU: y = x > 0 ? x : a x */
static PM_CLONES void PM_S(pm_leaky_relu_fwd)(const T *x, T *y, Py_ssize_t n, T a) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = x[i]; y[i] = v > 0 ? v : a * v; }
}

static PM_CLONES void PM_S(pm_leaky_relu_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n,
                                              T a) {
    for (Py_ssize_t i = 0; i < n; i++) { T g = go[i]; gi[i] = x[i] > 0 ? g : a * g; }
}

/* ELU: y = x > 0 ? x : a (exp(x) - 1); NaN goes through expm1 and stays NaN */
static PM_CLONES void PM_S(pm_elu_fwd)(const T *x, T *y, Py_ssize_t n, T a) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i];
        T e = a * PM_S(pm_expm1_neg)(v > 0 ? (T) 0 : v);
        y[i] = v > 0 ? v : e;
    }
}

/* from the output, as Torch does: it survives an in-place forward (NaN x: NaN, as Torch) */
static PM_CLONES void PM_S(pm_elu_bwd)(const T *x, const T *y, const T *go, T *gi, Py_ssize_t n,
                                       T a) {
    for (Py_ssize_t i = 0; i < n; i++) { T g = go[i]; gi[i] = x[i] > 0 ? g : g * (y[i] + a); }
}

/* HardTanh: y = min(max(x, lo), hi); NaN stays NaN. gi = go strictly inside the bounds, else 0
   (NaN: 0, as Torch) */
static PM_CLONES void PM_S(pm_hard_tanh_fwd)(const T *x, T *y, Py_ssize_t n, T lo, T hi) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = x[i]; y[i] = v < lo ? lo : (v > hi ? hi : v); }
}

static PM_CLONES void PM_S(pm_hard_tanh_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n, T lo,
                                             T hi) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = x[i]; gi[i] = v > lo && v < hi ? go[i] : 0; }
}

/* Tanh: gi = go (1 - y^2) */
static PM_CLONES void PM_S(pm_tanh_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_tanh)(x[i]);
}

static PM_CLONES void PM_S(pm_tanh_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = y[i]; gi[i] = go[i] * (1 - v * v); }
}

/* Sigmoid: gi = go y (1 - y) */
static PM_CLONES void PM_S(pm_sigmoid_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_sigmoid)(x[i]);
}

static PM_CLONES void PM_S(pm_sigmoid_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = y[i]; gi[i] = go[i] * v * (1 - v); }
}

/* HardSigmoid (BigDL's, as Keras): y = min(max(0.2 x + 0.5, 0), 1) */
static PM_CLONES void PM_S(pm_hard_sigmoid_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i];
        y[i] = v > 2.5 ? 1 : (v < -2.5 ? 0 : (T) 0.2 * v + (T) 0.5);
    }
}

static PM_CLONES void PM_S(pm_hard_sigmoid_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i];
        gi[i] = v > -2.5 && v < 2.5 ? (T) 0.2 * go[i] : 0;
    }
}

/* SoftPlus: y = a x > th ? x : log(1 + exp(a x)) / a */
static PM_CLONES void PM_S(pm_soft_plus_fwd)(const T *x, T *y, Py_ssize_t n, T a, T th) {
    T inv = (T) 1 / a;
    for (Py_ssize_t i = 0; i < n; i++) {
        T u = x[i], v = u * a;
        T s = PM_S(pm_softplus)(v) * inv;
        y[i] = v > th ? u : s;
    }
}

/* d/dx log(1 + exp(a x)) / a = sigmoid(a x), from the input (1 - exp(-a y) cancels) */
static PM_CLONES void PM_S(pm_soft_plus_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n, T a,
                                             T th) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i] * a, g = go[i];
        T s = g * PM_S(pm_sigmoid)(v);
        gi[i] = v > th ? g : s;
    }
}

/* SoftSign: y = x / (1 + |x|), gi = go / (1 + |x|)^2 */
static PM_CLONES void PM_S(pm_soft_sign_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = x[i]; y[i] = v / (1 + PM_F(fabs)(v)); }
}

static PM_CLONES void PM_S(pm_soft_sign_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = 1 + PM_F(fabs)(x[i]); gi[i] = go[i] / (v * v); }
}

/* Abs: gi = sign(x) go, 0 at 0 */
static PM_CLONES void PM_S(pm_abs_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_F(fabs)(x[i]);
}

static PM_CLONES void PM_S(pm_abs_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i], g = go[i];
        gi[i] = v > 0 ? g : (v < 0 ? -g : 0);
    }
}

/* Square: gi = 2 x go */
static PM_CLONES void PM_S(pm_square_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = x[i] * x[i];
}

static PM_CLONES void PM_S(pm_square_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = 2 * x[i] * go[i];
}

/* Sqrt: gi = go / (2 y) */
static PM_CLONES void PM_S(pm_sqrt_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_F(sqrt)(x[i]);
}

static PM_CLONES void PM_S(pm_sqrt_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = (T) 0.5 * go[i] / y[i];
}

/* Exp: gi = go y */
static PM_CLONES void PM_S(pm_exp_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_exp)(x[i]);
}

static PM_CLONES void PM_S(pm_exp_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = go[i] * y[i];
}

/* Log: gi = go / x */
static PM_CLONES void PM_S(pm_log_fwd)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_log)(x[i]);
}

static PM_CLONES void PM_S(pm_log_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = go[i] / x[i];
}

/* Power: y = (c + b x)^a, libm's pow but for the exponents 1 and 2 */
static PM_CLONES void PM_S(pm_power_fwd)(const T *x, T *y, Py_ssize_t n, T a, T b, T c) {
    if (a == 1) {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = c + b * x[i];
    } else if (a == 2) {
        for (Py_ssize_t i = 0; i < n; i++) { T v = c + b * x[i]; y[i] = v * v; }
    } else {
        for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_F(pow)(c + b * x[i], a);
    }
}

static PM_CLONES void PM_S(pm_power_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n, T a, T b,
                                         T c) {
    if (a == 1) {
        for (Py_ssize_t i = 0; i < n; i++) gi[i] = b * go[i];
    } else if (a == 2) {
        for (Py_ssize_t i = 0; i < n; i++) gi[i] = 2 * b * (c + b * x[i]) * go[i];
    } else {
        for (Py_ssize_t i = 0; i < n; i++) gi[i] = a * b * PM_F(pow)(c + b * x[i], a - 1) * go[i];
    }
}

/* -- PReLU over (outer, ch, inner): y = x > 0 ? x : w[c] x ---------------------------------- */

static PM_CLONES void PM_S(pm_prelu_fwd)(const T *x, T *y, const T *w, Py_ssize_t outer,
                                         Py_ssize_t ch, Py_ssize_t inner) {
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t k = 0; k < ch; k++) {
            T a = w[k];
            Py_ssize_t base = (o * ch + k) * inner;
            for (Py_ssize_t i = base; i < base + inner; i++) {
                T v = x[i];
                y[i] = v > 0 ? v : a * v;
            }
        }
}

static PM_CLONES void PM_S(pm_prelu_bwd)(const T *x, const T *go, T *gi, const T *w,
                                         Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner) {
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t k = 0; k < ch; k++) {
            T a = w[k];
            Py_ssize_t base = (o * ch + k) * inner;
            for (Py_ssize_t i = base; i < base + inner; i++) {
                T g = go[i];
                gi[i] = x[i] > 0 ? g : a * g;
            }
        }
}

/* gw[c] += scale * (sum of x go over channel c where not x > 0, NaN included): products in T, summed in double
   in four chains (an addition's latency is ~4 cycles) */
static PM_CLONES void PM_S(pm_prelu_acc)(const T *x, const T *go, T *gw, double scale,
                                         Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner) {
    for (Py_ssize_t k = 0; k < ch; k++) {
        double s[4] = {0, 0, 0, 0};
        for (Py_ssize_t o = 0; o < outer; o++) {
            const T *xr = x + (o * ch + k) * inner, *gr = go + (o * ch + k) * inner;
            Py_ssize_t i = 0;
            for (; i + 4 <= inner; i += 4)
                for (int j = 0; j < 4; j++) {
                    T v = xr[i + j], p = v * gr[i + j];
                    s[j] += v > 0 ? 0 : p;
                }
            for (; i < inner; i++) {
                T v = xr[i], p = v * gr[i];
                s[0] += v > 0 ? 0 : p;
            }
        }
        gw[k] += (T) (scale * ((s[0] + s[1]) + (s[2] + s[3])));
    }
}

/* -- SoftMax, SoftMin, LogSoftMax ------------------------------------------------------------- */

/* Distributions along n, stride inner, of x seen as (outer, n, inner), of sign * x.
   inner == 1: rows, one pass for the max, one writing exp(v - max), one summing, one scaling;
   rows of PM_SHORT values or fewer are copied transposed, PM_BLOCK at a time, and run as
   lines. inner > 1: PM_BLOCK neighbouring lines at once, so that every loop runs along
   contiguous memory with per-line accumulators. */
#ifndef PM_BLOCK
#define PM_BLOCK 64
#endif
#ifndef PM_SHORT
#define PM_SHORT 16
#endif

/* nb <= PM_BLOCK neighbouring lines of n values, stride inner, from xb into yb: each loop
   runs across the lines (the vector lanes), the sums in double in k order */
PM_INLINE void PM_S(pm_softmax_lines)(const T *xb, T *yb, Py_ssize_t n, Py_ssize_t inner,
                                      Py_ssize_t nb, T sign, int take_log) {
    T m[PM_BLOCK], lt[PM_BLOCK];
    double total[PM_BLOCK];
    for (Py_ssize_t j = 0; j < nb; j++) { m[j] = sign * xb[j]; total[j] = 0; }
    for (Py_ssize_t k = 1; k < n; k++) {
        const T *xr = xb + k * inner;
        for (Py_ssize_t j = 0; j < nb; j++) {
            T v = sign * xr[j];
            m[j] = v > m[j] ? v : m[j];
        }
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const T *xr = xb + k * inner;
        T *yr = yb + k * inner;
        for (Py_ssize_t j = 0; j < nb; j++) {
            T e = PM_S(pm_exp)(sign * xr[j] - m[j]);
            yr[j] = e;
            total[j] += e;
        }
    }
    if (take_log) {
        for (Py_ssize_t j = 0; j < nb; j++) lt[j] = (T) log(total[j]);
        for (Py_ssize_t k = 0; k < n; k++) {
            const T *xr = xb + k * inner;
            T *yr = yb + k * inner;
            for (Py_ssize_t j = 0; j < nb; j++) yr[j] = (sign * xr[j] - m[j]) - lt[j];
        }
    } else {
        for (Py_ssize_t j = 0; j < nb; j++) lt[j] = (T) (1 / total[j]);
        for (Py_ssize_t k = 0; k < n; k++) {
            T *yr = yb + k * inner;
            for (Py_ssize_t j = 0; j < nb; j++) yr[j] *= lt[j];
        }
    }
}

static PM_CLONES void PM_S(pm_softmax_fwd)(const T *x, T *y, Py_ssize_t outer, Py_ssize_t n,
                                           Py_ssize_t inner, T sign, int take_log) {
    if (inner == 1 && n <= PM_SHORT && outer >= 4) {
        /* A row at a time, a row of 10 (LogSoftMax over 10 classes) ran each loop in its
           scalar tail: 64 x 10 float32 took 1.8 us, transposed to lines 0.8. Fewer rows run
           a row at a time, summed in the lines' order: a row's numbers do not depend on its
           batch. */
        T xt[PM_SHORT * PM_BLOCK], yt[PM_SHORT * PM_BLOCK];
        for (Py_ssize_t o0 = 0; o0 < outer; o0 += PM_BLOCK) {
            Py_ssize_t nb = outer - o0 < PM_BLOCK ? outer - o0 : PM_BLOCK;
            const T *xb = x + o0 * n;
            T *yb = y + o0 * n;
            for (Py_ssize_t r = 0; r < nb; r++)
                for (Py_ssize_t k = 0; k < n; k++) xt[k * nb + r] = xb[r * n + k];
            PM_S(pm_softmax_lines)(xt, yt, n, nb, nb, sign, take_log);
            for (Py_ssize_t r = 0; r < nb; r++)
                for (Py_ssize_t k = 0; k < n; k++) yb[r * n + k] = yt[k * nb + r];
        }
        return;
    }
    if (inner == 1) {
        for (Py_ssize_t o = 0; o < outer; o++) {
            const T *xr = x + o * n;
            T *yr = y + o * n;
            T m = PM_S(pm_rowmax)(xr, n, sign);
            for (Py_ssize_t i = 0; i < n; i++) yr[i] = PM_S(pm_exp)(sign * xr[i] - m);
            double total = 0;
            if (n <= PM_SHORT)
                for (Py_ssize_t i = 0; i < n; i++) total += yr[i];
            else
                total = PM_S(pm_sum)(yr, n);
            if (take_log) {
                T lt = (T) log(total);
                for (Py_ssize_t i = 0; i < n; i++) yr[i] = (sign * xr[i] - m) - lt;
            } else {
                T inv = (T) (1 / total);
                for (Py_ssize_t i = 0; i < n; i++) yr[i] *= inv;
            }
        }
        return;
    }
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t j0 = 0; j0 < inner; j0 += PM_BLOCK) {
            Py_ssize_t nb = inner - j0 < PM_BLOCK ? inner - j0 : PM_BLOCK;
            PM_S(pm_softmax_lines)(x + o * n * inner + j0, y + o * n * inner + j0, n, inner, nb,
                                   sign, take_log);
        }
}

/* SoftMax/SoftMin: gi = sign * y * (go - sum(go * y)); LogSoftMax: gi = go - exp(y) sum(go) */
static PM_CLONES void PM_S(pm_softmax_bwd)(const T *y, const T *go, T *gi, Py_ssize_t outer,
                                           Py_ssize_t n, Py_ssize_t inner, T sign,
                                           int take_log) {
    if (inner == 1) {
        for (Py_ssize_t o = 0; o < outer; o++) {
            const T *yr = y + o * n, *gr = go + o * n;
            T *ir = gi + o * n;
            if (take_log) {
                T total = (T) PM_S(pm_sum)(gr, n);
                for (Py_ssize_t i = 0; i < n; i++) ir[i] = gr[i] - PM_S(pm_exp)(yr[i]) * total;
            } else {
                T dot = (T) PM_S(pm_dot)(gr, yr, n);
                for (Py_ssize_t i = 0; i < n; i++) ir[i] = sign * yr[i] * (gr[i] - dot);
            }
        }
        return;
    }
    double acc[PM_BLOCK];
    T dot[PM_BLOCK];
    for (Py_ssize_t o = 0; o < outer; o++) {
        for (Py_ssize_t j0 = 0; j0 < inner; j0 += PM_BLOCK) {
            Py_ssize_t nb = inner - j0 < PM_BLOCK ? inner - j0 : PM_BLOCK;
            Py_ssize_t base = o * n * inner + j0;
            for (Py_ssize_t j = 0; j < nb; j++) acc[j] = 0;
            for (Py_ssize_t k = 0; k < n; k++) {
                const T *yr = y + base + k * inner, *gr = go + base + k * inner;
                if (take_log)
                    for (Py_ssize_t j = 0; j < nb; j++) acc[j] += gr[j];
                else
                    for (Py_ssize_t j = 0; j < nb; j++) acc[j] += (double) gr[j] * yr[j];
            }
            for (Py_ssize_t j = 0; j < nb; j++) dot[j] = (T) acc[j];
            for (Py_ssize_t k = 0; k < n; k++) {
                const T *yr = y + base + k * inner, *gr = go + base + k * inner;
                T *ir = gi + base + k * inner;
                if (take_log)
                    for (Py_ssize_t j = 0; j < nb; j++)
                        ir[j] = gr[j] - PM_S(pm_exp)(yr[j]) * dot[j];
                else
                    for (Py_ssize_t j = 0; j < nb; j++) ir[j] = sign * yr[j] * (gr[j] - dot[j]);
            }
        }
    }
}

/* -- batch normalisation over (outer, ch, inner) ----------------------------------------------- */

/* Per channel: mean and biased var over outer * inner (two passes, double sums), running
   statistics updated with the unbiased var; y = x * scale + shift. inner == 1 (features,
   NHWC) runs PM_BLOCK channels at once along the rows; inner > 1 runs along each plane. */
static PM_CLONES void PM_S(pm_bn_fwd)(const T *x, T *y, const T *w, const T *b, T *rm,
                                      T *rv, T *sm, T *si, Py_ssize_t outer,
                                      Py_ssize_t ch, Py_ssize_t inner, int train,
                                      double momentum, double eps) {
    Py_ssize_t m = outer * inner;
    double mean[PM_BLOCK], var[PM_BLOCK];
    T scale[PM_BLOCK], shift[PM_BLOCK];
    for (Py_ssize_t c0 = 0; c0 < ch; c0 += PM_BLOCK) {
        Py_ssize_t nb = ch - c0 < PM_BLOCK ? ch - c0 : PM_BLOCK;
        if (train) {
            if (inner == 1) {
                for (Py_ssize_t j = 0; j < nb; j++) mean[j] = var[j] = 0;
                for (Py_ssize_t o = 0; o < outer; o++) {
                    const T *xr = x + o * ch + c0;
                    for (Py_ssize_t j = 0; j < nb; j++) mean[j] += xr[j];
                }
                for (Py_ssize_t j = 0; j < nb; j++) mean[j] /= m;
                for (Py_ssize_t o = 0; o < outer; o++) {
                    const T *xr = x + o * ch + c0;
                    for (Py_ssize_t j = 0; j < nb; j++) {
                        double d = xr[j] - mean[j];
                        var[j] += d * d;
                    }
                }
            } else {
                for (Py_ssize_t j = 0; j < nb; j++) {
                    double s = 0, v = 0;
                    for (Py_ssize_t o = 0; o < outer; o++)
                        s += PM_S(pm_sum)(x + (o * ch + c0 + j) * inner, inner);
                    mean[j] = s / m;
                    for (Py_ssize_t o = 0; o < outer; o++)
                        v += PM_S(pm_sumsq_dev)(x + (o * ch + c0 + j) * inner, inner, mean[j]);
                    var[j] = v;
                }
            }
            for (Py_ssize_t j = 0; j < nb; j++) {
                Py_ssize_t k = c0 + j;
                var[j] /= m;
                rm[k] = (T) ((1 - momentum) * rm[k] + momentum * mean[j]);
                rv[k] = (T) ((1 - momentum) * rv[k] + momentum * var[j] * m / (m - 1));
            }
        } else {
            for (Py_ssize_t j = 0; j < nb; j++) { mean[j] = rm[c0 + j]; var[j] = rv[c0 + j]; }
        }
        for (Py_ssize_t j = 0; j < nb; j++) {
            Py_ssize_t k = c0 + j;
            double inv = 1 / sqrt(var[j] + eps);
            double g = inv * (w == NULL ? 1.0 : (double) w[k]);
            sm[k] = (T) mean[j];
            si[k] = (T) inv;
            scale[j] = (T) g;
            shift[j] = (T) ((b == NULL ? 0.0 : (double) b[k]) - mean[j] * g);
        }
        if (inner == 1) {
            for (Py_ssize_t o = 0; o < outer; o++) {
                const T *xr = x + o * ch + c0;
                T *yr = y + o * ch + c0;
                for (Py_ssize_t j = 0; j < nb; j++) yr[j] = xr[j] * scale[j] + shift[j];
            }
        } else {
            for (Py_ssize_t o = 0; o < outer; o++)
                for (Py_ssize_t j = 0; j < nb; j++) {
                    const T *xr = x + (o * ch + c0 + j) * inner;
                    T *yr = y + (o * ch + c0 + j) * inner;
                    T a = scale[j], c = shift[j];
                    for (Py_ssize_t i = 0; i < inner; i++) yr[i] = xr[i] * a + c;
                }
        }
    }
}

/* sum(go) and sum(go * (x - mean)) of the channels c0 .. c0 + nb */
PM_INLINE void PM_S(pm_bn_sums)(const T *x, const T *go, const T *sm, Py_ssize_t outer,
                                Py_ssize_t ch, Py_ssize_t inner, Py_ssize_t c0, Py_ssize_t nb,
                                double *sum_g, double *sum_gx) {
    for (Py_ssize_t j = 0; j < nb; j++) sum_g[j] = sum_gx[j] = 0;
    if (inner == 1) {
        for (Py_ssize_t o = 0; o < outer; o++) {
            const T *xr = x + o * ch + c0, *gr = go + o * ch + c0, *mr = sm + c0;
            for (Py_ssize_t j = 0; j < nb; j++) {
                double g = gr[j];
                sum_g[j] += g;
                sum_gx[j] += g * ((double) xr[j] - (double) mr[j]);
            }
        }
        return;
    }
    for (Py_ssize_t j = 0; j < nb; j++)
        for (Py_ssize_t o = 0; o < outer; o++) {
            Py_ssize_t base = (o * ch + c0 + j) * inner;
            PM_S(pm_sum_g_gx)(go + base, x + base, inner, sm[c0 + j], sum_g + j, sum_gx + j);
        }
}

/* training: gi = gain (go - mean(go)) - (x - mean) gain invstd^2 mean(go (x - mean));
   evaluation: gi = gain go; gain = invstd * weight */
static PM_CLONES void PM_S(pm_bn_bwd)(const T *x, const T *go, T *gi, const T *w,
                                      const T *sm, const T *si, Py_ssize_t outer,
                                      Py_ssize_t ch, Py_ssize_t inner, int train) {
    Py_ssize_t m = outer * inner;
    double sum_g[PM_BLOCK], sum_gx[PM_BLOCK];
    T gain[PM_BLOCK], slope[PM_BLOCK], bias[PM_BLOCK], mu[PM_BLOCK];
    for (Py_ssize_t c0 = 0; c0 < ch; c0 += PM_BLOCK) {
        Py_ssize_t nb = ch - c0 < PM_BLOCK ? ch - c0 : PM_BLOCK;
        if (train)
            PM_S(pm_bn_sums)(x, go, sm, outer, ch, inner, c0, nb, sum_g, sum_gx);
        for (Py_ssize_t j = 0; j < nb; j++) {
            Py_ssize_t k = c0 + j;
            double invstd = si[k];
            double g = invstd * (w == NULL ? 1.0 : (double) w[k]);
            gain[j] = (T) g;
            slope[j] = train ? (T) (g * invstd * invstd * sum_gx[j] / m) : 0;
            bias[j] = train ? (T) (g * sum_g[j] / m) : 0;
            mu[j] = sm[k];
        }
        if (inner == 1) {
            for (Py_ssize_t o = 0; o < outer; o++) {
                const T *xr = x + o * ch + c0, *gr = go + o * ch + c0;
                T *ir = gi + o * ch + c0;
                if (train)
                    for (Py_ssize_t j = 0; j < nb; j++)
                        ir[j] = gain[j] * gr[j] - slope[j] * (xr[j] - mu[j]) - bias[j];
                else
                    for (Py_ssize_t j = 0; j < nb; j++) ir[j] = gain[j] * gr[j];
            }
        } else {
            for (Py_ssize_t o = 0; o < outer; o++)
                for (Py_ssize_t j = 0; j < nb; j++) {
                    Py_ssize_t base = (o * ch + c0 + j) * inner;
                    const T *xr = x + base, *gr = go + base;
                    T *ir = gi + base;
                    T g = gain[j], a = slope[j], c = bias[j], u = mu[j];
                    if (train)
                        for (Py_ssize_t i = 0; i < inner; i++)
                            ir[i] = g * gr[i] - a * (xr[i] - u) - c;
                    else
                        for (Py_ssize_t i = 0; i < inner; i++) ir[i] = g * gr[i];
                }
        }
    }
}

/* gw += scale_w * invstd * sum(go (x - mean)); gb += scale_b * sum(go) */
static PM_CLONES void PM_S(pm_bn_acc)(const T *x, const T *go, T *gw, T *gb, const T *sm,
                                      const T *si, Py_ssize_t outer, Py_ssize_t ch,
                                      Py_ssize_t inner, double scale_w, double scale_b) {
    double sum_g[PM_BLOCK], sum_gx[PM_BLOCK];
    for (Py_ssize_t c0 = 0; c0 < ch; c0 += PM_BLOCK) {
        Py_ssize_t nb = ch - c0 < PM_BLOCK ? ch - c0 : PM_BLOCK;
        PM_S(pm_bn_sums)(x, go, sm, outer, ch, inner, c0, nb, sum_g, sum_gx);
        for (Py_ssize_t j = 0; j < nb; j++) {
            if (scale_w != 0)
                gw[c0 + j] += (T) (scale_w * sum_gx[j] * si[c0 + j]);
            if (scale_b != 0 && gb != NULL)
                gb[c0 + j] += (T) (scale_b * sum_g[j]);
        }
    }
}

/* -- layer normalisation: each row of n values (rows, n) on its own -------------------------- */

/* Row sums in double (vector chains, below). The parameter gradients are column
   sums over the rows, gathered in T over blocks of PM_LN_ROWS rows, each block's sums then
   added in double; the fused backward (rows up to PM_LN_WIDE long) gathers them in its
   gradInput loop, pm_ln_sums on its own, in the same order: both give the same sums. */
#define PM_LN_ROWS 16
#define PM_LN_COLS 256
#define PM_LN_WIDE 2048

/* Row sums in chains of 4 doubles (32 bytes, an AVX2 register; the 64-byte pm_vec8d of pm_sum
   goes through the stack in GCC's AVX2 and baseline clones), four chains for one sum, two
   each for two. */
typedef T PM_S(pm_vec4) __attribute__((vector_size(4 * sizeof(T))));

PM_INLINE pm_vec4d PM_S(pm_load4d)(const T *x) {
    PM_S(pm_vec4) v;
    memcpy(&v, x, sizeof v);
    return __builtin_convertvector(v, pm_vec4d);
}

PM_INLINE double PM_S(pm_ln_sum)(const T *x, Py_ssize_t n) {
    pm_vec4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    double s = 0;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 += PM_S(pm_load4d)(x + i);
        a1 += PM_S(pm_load4d)(x + i + 4);
        a2 += PM_S(pm_load4d)(x + i + 8);
        a3 += PM_S(pm_load4d)(x + i + 12);
    }
    for (; i < n; i++) s += (double) x[i];
    a0 = (a0 + a1) + (a2 + a3);
    return s + ((a0[0] + a0[1]) + (a0[2] + a0[3]));
}

/* sum of (x - c)^2 */
PM_INLINE double PM_S(pm_ln_sumsq_dev)(const T *x, Py_ssize_t n, double c) {
    pm_vec4d a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    double s = 0;
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        pm_vec4d d0 = PM_S(pm_load4d)(x + i) - c, d1 = PM_S(pm_load4d)(x + i + 4) - c;
        pm_vec4d d2 = PM_S(pm_load4d)(x + i + 8) - c, d3 = PM_S(pm_load4d)(x + i + 12) - c;
        a0 += d0 * d0;
        a1 += d1 * d1;
        a2 += d2 * d2;
        a3 += d3 * d3;
    }
    for (; i < n; i++) { double d = x[i] - c; s += d * d; }
    a0 = (a0 + a1) + (a2 + a3);
    return s + ((a0[0] + a0[1]) + (a0[2] + a0[3]));
}

/* *sa := sum(go * w), *sb := sum(go * w * (x - m)) */
PM_INLINE void PM_S(pm_ln_row_sums)(const T *go, const T *w, const T *x, Py_ssize_t n, T m,
                                    double *sa, double *sb) {
    pm_vec4d a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};
    double ta = 0, tb = 0, dm = m;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        pm_vec4d g0 = PM_S(pm_load4d)(go + i) * PM_S(pm_load4d)(w + i);
        pm_vec4d g1 = PM_S(pm_load4d)(go + i + 4) * PM_S(pm_load4d)(w + i + 4);
        a0 += g0;
        a1 += g1;
        b0 += g0 * (PM_S(pm_load4d)(x + i) - dm);
        b1 += g1 * (PM_S(pm_load4d)(x + i + 4) - dm);
    }
    for (; i < n; i++) {
        double g = (double) go[i] * w[i];
        ta += g;
        tb += g * ((double) x[i] - dm);
    }
    a0 += a1;
    b0 += b1;
    *sa = ta + ((a0[0] + a0[1]) + (a0[2] + a0[3]));
    *sb = tb + ((b0[0] + b0[1]) + (b0[2] + b0[3]));
}

/* y = (x - mean) * invstd * w + b; sm, si := each row's mean and 1 / sqrt(biased var + eps) */
static PM_CLONES void PM_S(pm_ln_fwd)(const T *x, T *y, const T *w, const T *b, T *sm, T *si,
                                      Py_ssize_t rows, Py_ssize_t n, double eps) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const T *xr = x + r * n;
        T *yr = y + r * n;
        double mean = PM_S(pm_ln_sum)(xr, n) / n;
        T m = (T) mean;
        T s = (T) (1.0 / sqrt(PM_S(pm_ln_sumsq_dev)(xr, n, mean) / n + eps));
        sm[r] = m;
        si[r] = s;
        for (Py_ssize_t j = 0; j < n; j++) yr[j] = (xr[j] - m) * s * w[j] + b[j];
    }
}

/* sums[j] += sum(go * xhat), sums[n + j] += sum(go) over the rows r0 .. r1 (at most
   PM_LN_ROWS): in T within those rows, then in double */
PM_INLINE void PM_S(pm_ln_block_sums)(const T *x, const T *go, const T *sm, const T *si,
                                      double *sums, Py_ssize_t r0, Py_ssize_t r1,
                                      Py_ssize_t n) {
    T aw[PM_LN_COLS], ab[PM_LN_COLS];
    for (Py_ssize_t c0 = 0; c0 < n; c0 += PM_LN_COLS) {
        Py_ssize_t width = n - c0 < PM_LN_COLS ? n - c0 : PM_LN_COLS;
        for (Py_ssize_t j = 0; j < width; j++) aw[j] = ab[j] = 0;
        for (Py_ssize_t r = r0; r < r1; r++) {
            const T *xr = x + r * n + c0, *gr = go + r * n + c0;
            T m = sm[r], s = si[r];
            for (Py_ssize_t j = 0; j < width; j++) {
                aw[j] += gr[j] * ((xr[j] - m) * s);
                ab[j] += gr[j];
            }
        }
        double *dw = sums + c0, *db = sums + n + c0;
        for (Py_ssize_t j = 0; j < width; j++) { dw[j] += aw[j]; db[j] += ab[j]; }
    }
}

/* gi = invstd * (go * w - mean(go * w) - xhat * mean(go * w * xhat)) per row; sums (NULL for
   none, else zeroed by the caller) += [sum(go * xhat), sum(go)] down the columns */
static PM_CLONES void PM_S(pm_ln_bwd)(const T *x, const T *go, T *gi, const T *w, const T *sm,
                                      const T *si, double *sums, Py_ssize_t rows,
                                      Py_ssize_t n) {
    T bw[PM_LN_WIDE], bb[PM_LN_WIDE];
    int fused = sums != NULL && n <= PM_LN_WIDE;
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += PM_LN_ROWS) {
        Py_ssize_t r1 = r0 + PM_LN_ROWS <= rows ? r0 + PM_LN_ROWS : rows;
        if (fused)
            for (Py_ssize_t j = 0; j < n; j++) bw[j] = bb[j] = 0;
        for (Py_ssize_t r = r0; r < r1; r++) {
            const T *xr = x + r * n, *gr = go + r * n;
            T *ir = gi + r * n;
            T m = sm[r], s = si[r];
            double sa, sb;
            PM_S(pm_ln_row_sums)(gr, w, xr, n, m, &sa, &sb);
            /* gi = s * (go * w - sa / n) - (x - m) * (s^3 * sb / n) */
            T c = (T) (s * sa / n);
            T k = (T) ((double) s * s * s * sb / n);
            if (fused)
                for (Py_ssize_t j = 0; j < n; j++) {
                    T gj = gr[j], xm = xr[j] - m;
                    ir[j] = s * gj * w[j] - c - xm * k;
                    bw[j] += gj * (xm * s);
                    bb[j] += gj;
                }
            else
                for (Py_ssize_t j = 0; j < n; j++)
                    ir[j] = s * gr[j] * w[j] - c - (xr[j] - m) * k;
        }
        if (fused)
            for (Py_ssize_t j = 0; j < n; j++) { sums[j] += bw[j]; sums[n + j] += bb[j]; }
        else if (sums != NULL)  /* longer rows: summed again while these rows are in cache */
            PM_S(pm_ln_block_sums)(x, go, sm, si, sums, r0, r1, n);
    }
}

/* sums (zeroed by the caller) += [sum(go * xhat), sum(go)] down the columns */
static PM_CLONES void PM_S(pm_ln_sums)(const T *x, const T *go, const T *sm, const T *si,
                                       double *sums, Py_ssize_t rows, Py_ssize_t n) {
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += PM_LN_ROWS) {
        Py_ssize_t r1 = r0 + PM_LN_ROWS <= rows ? r0 + PM_LN_ROWS : rows;
        PM_S(pm_ln_block_sums)(x, go, sm, si, sums, r0, r1, n);
    }
}

/* gw += scale_w * sums[0], gb += scale_b * sums[1]; a scale of 0 skips its term */
static PM_CLONES void PM_S(pm_ln_acc)(const double *sums, T *gw, T *gb, double scale_w,
                                      double scale_b, Py_ssize_t n) {
    if (scale_w != 0)
        for (Py_ssize_t j = 0; j < n; j++) gw[j] += (T) (scale_w * sums[j]);
    if (scale_b != 0)
        for (Py_ssize_t j = 0; j < n; j++) gb[j] += (T) (scale_b * sums[n + j]);
}

/* -- cross-map local response normalisation over (outer, ch, inner) ---------------------------- */

/* v^-beta = exp(-beta log v) in double for v > 0 (scale >= k > 0 in practice) */
PM_INLINE double PM_S(pm_pow_neg)(double v, double beta) {
    return pm_exp_f64(-beta * pm_log_f64(v));
}

/* scale = k + alpha / size * (sum of x^2 over the window of channels), y = x scale^-beta.
   PM_BLOCK neighbouring positions at once with running window sums in double, so that every
   loop runs along contiguous memory instead of striding across channels. */
static PM_CLONES void PM_S(pm_lrn_fwd)(const T *x, T *y, T *sc, Py_ssize_t outer,
                                       Py_ssize_t ch, Py_ssize_t inner, int size,
                                       double alpha, double beta, double k) {
    Py_ssize_t half = (size - 1) / 2;
    double a = alpha / size;
    double s[PM_BLOCK];
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t j0 = 0; j0 < inner; j0 += PM_BLOCK) {
            Py_ssize_t nb = inner - j0 < PM_BLOCK ? inner - j0 : PM_BLOCK;
            Py_ssize_t base = o * ch * inner + j0;
            for (Py_ssize_t j = 0; j < nb; j++) s[j] = 0;
            for (Py_ssize_t c = 0; c < half && c < ch; c++) {
                const T *xr = x + base + c * inner;
                for (Py_ssize_t j = 0; j < nb; j++) s[j] += (double) xr[j] * xr[j];
            }
            for (Py_ssize_t c = 0; c < ch; c++) {
                if (c + half < ch) {
                    const T *xr = x + base + (c + half) * inner;
                    for (Py_ssize_t j = 0; j < nb; j++) s[j] += (double) xr[j] * xr[j];
                }
                if (c - half - 1 >= 0) {
                    const T *xr = x + base + (c - half - 1) * inner;
                    for (Py_ssize_t j = 0; j < nb; j++) s[j] -= (double) xr[j] * xr[j];
                }
                const T *xr = x + base + c * inner;
                T *yr = y + base + c * inner, *sr = sc + base + c * inner;
                for (Py_ssize_t j = 0; j < nb; j++) {
                    double v = k + a * s[j];
                    sr[j] = (T) v;
                    yr[j] = (T) (xr[j] * PM_S(pm_pow_neg)(v, beta));
                }
            }
        }
}

/* gi = go scale^-beta - 2 alpha beta / size * x * (window sum of go * y / scale) */
static PM_CLONES void PM_S(pm_lrn_bwd)(const T *x, const T *y, const T *go, T *gi,
                                       const T *sc, Py_ssize_t outer, Py_ssize_t ch,
                                       Py_ssize_t inner, int size, double alpha,
                                       double beta) {
    Py_ssize_t half = (size - 1) / 2;
    double coef = 2 * alpha * beta / size;
    double s[PM_BLOCK];
    for (Py_ssize_t o = 0; o < outer; o++)
        for (Py_ssize_t j0 = 0; j0 < inner; j0 += PM_BLOCK) {
            Py_ssize_t nb = inner - j0 < PM_BLOCK ? inner - j0 : PM_BLOCK;
            Py_ssize_t base = o * ch * inner + j0;
            for (Py_ssize_t j = 0; j < nb; j++) s[j] = 0;
            for (Py_ssize_t c = 0; c < half && c < ch; c++) {
                Py_ssize_t r = base + c * inner;
                for (Py_ssize_t j = 0; j < nb; j++)
                    s[j] += (double) go[r + j] * y[r + j] / sc[r + j];
            }
            for (Py_ssize_t c = 0; c < ch; c++) {
                if (c + half < ch) {
                    Py_ssize_t r = base + (c + half) * inner;
                    for (Py_ssize_t j = 0; j < nb; j++)
                        s[j] += (double) go[r + j] * y[r + j] / sc[r + j];
                }
                if (c - half - 1 >= 0) {
                    Py_ssize_t r = base + (c - half - 1) * inner;
                    for (Py_ssize_t j = 0; j < nb; j++)
                        s[j] -= (double) go[r + j] * y[r + j] / sc[r + j];
                }
                Py_ssize_t r = base + c * inner;
                for (Py_ssize_t j = 0; j < nb; j++)
                    gi[r + j] = (T) (go[r + j] * PM_S(pm_pow_neg)(sc[r + j], beta)
                                     - coef * x[r + j] * s[j]);
            }
        }
}

#undef T

#endif  /* PM_VECMATH_H, PM_T */
