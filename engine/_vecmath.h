/* Vectorisable elementwise math and the array loops of the activation, softmax,
   batch-normalisation and cross-map LRN kernels.

   The build flags give baseline x86-64 (16-byte SSE2) and libm's expf/tanhf/logf are scalar
   calls, so a loop that calls them runs one value at a time. Here each function is written
   branch-free from the math (range reduction, a polynomial, exponent assembly through bit casts,
   selects for the special values), inlined into plain loops over contiguous arrays, and each
   loop is compiled by GCC's target_clones for AVX-512, AVX2 and the baseline, picked at load
   time. Reductions keep independent partial sums in GCC vector types (2-4 chains of 8 lanes)
   so that they vectorise without -ffast-math; sums of float32 data accumulate in double.

   Accuracy: largest relative error against NumPy in float64 over ~1.6M samples spanning each
   dtype's range (tests/engine/test_vecmath_kernels.py asserts <= 4 eps), eps = 2^-23 / 2^-52:
     exp 0.7 / 1.0 eps, log 1.4 / 1.4, tanh 1.2 / 1.8, sigmoid 1.6 / 2.0, softplus 2.1 / 2.7,
     ELU 1.2 / 1.3 (float32 / float64), i.e. <= 2.5e-7 and <= 5.9e-16.
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
   Requires IEEE round-to-nearest (the default); correct with or without FMA contraction. */

#ifndef PM_VECMATH_H
#define PM_VECMATH_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PM_VCLONES __attribute__((target_clones("avx512f", "avx2", "default"), unused))
#else
#define PM_VCLONES __attribute__((unused))
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

/* -- bit casts -------------------------------------------------------------------------------- */

PM_INLINE uint32_t pm_bits_f32(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
PM_INLINE float pm_float_f32(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
PM_INLINE uint64_t pm_bits_f64(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
PM_INLINE double pm_float_f64(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

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

/* -- the array loops, once per dtype ----------------------------------------------------------- */

#define PM_T float
#define PM_I int32_t
#define PM_S(name) name##_f32
#include "_vecmath_loops.h"
#undef PM_T
#undef PM_I
#undef PM_S

#define PM_T double
#define PM_I int64_t
#define PM_S(name) name##_f64
#include "_vecmath_loops.h"
#undef PM_T
#undef PM_I
#undef PM_S

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
