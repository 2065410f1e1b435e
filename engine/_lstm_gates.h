/* The gates of one LSTM step on vectors, included by engine/_recurrent.h once per width:
   PM_GATE_V (float) and PM_GATE_I (int) are the vector types, PM_GATE(name) names the
   functions of that width (pm_rec_gates8, pm_rec_gates16, ...). No include guard: each
   inclusion defines one width.

   engine/vecmath.h's exp and tanh, so that one pass does all the gates of a row: exp by a
   Cody-Waite reduction and a degree-6 fit of an argument clamped to [-87, 88] (2^k in one
   factor: no result below the smallest normal float, 1.2e-38, whose absolute error is all
   that the clamp changes); sigmoid(x) = 1 / (1 + exp(-x)) (exp(-x) up to 1.7e38 for x down
   to -88: no overflow); tanh(x) = x P(x^2) for |x| < 0.625, else (1 - e) / (1 + e),
   e = exp(-2|x|), with x's sign. NaN stays NaN (comparisons with NaN are false, and NaN
   passes every operation). Each lane runs the same operations at every width. */

#define PM_GATE_B(x) ((PM_GATE_V) {0} + (x))
#define PM_GATE_N(x) ((PM_GATE_I) {0} + (x))

static inline __attribute__((always_inline)) PM_GATE_V PM_GATE(sel)(PM_GATE_I m, PM_GATE_V a,
                                                                     PM_GATE_V b) {
    return (PM_GATE_V) (((PM_GATE_I) a & m) | ((PM_GATE_I) b & ~m));
}

/* exp(x), x clamped to [-87, 88] (NaN stays NaN) */
static inline __attribute__((always_inline)) PM_GATE_V PM_GATE(exp)(PM_GATE_V x) {
    const PM_GATE_V round = PM_GATE_B(12582912.0f);
    x = PM_GATE(sel)(x < PM_GATE_B(-87.0f), PM_GATE_B(-87.0f), x);
    x = PM_GATE(sel)(x > PM_GATE_B(88.0f), PM_GATE_B(88.0f), x);
    PM_GATE_V t = x * PM_GATE_B(1.44269504088896341f) + round;
    PM_GATE_V kf = t - round;
    PM_GATE_I k = (PM_GATE_I) t - (PM_GATE_I) round;
    PM_GATE_V r = (x - kf * PM_GATE_B(0.693359375f)) - kf * PM_GATE_B(-2.12194440e-4f);
    PM_GATE_V p = PM_GATE_B(1.0f) + r * (PM_GATE_B(1.00000003804f) + r * (PM_GATE_B(0.500000004753f)
                  + r * (PM_GATE_B(0.166664140602f) + r * (PM_GATE_B(0.0416663510802f)
                  + r * (PM_GATE_B(0.00837524732689f) + r * PM_GATE_B(0.00139412594688f))))));
    return p * (PM_GATE_V) ((k + PM_GATE_N(127)) << 23);
}

static inline __attribute__((always_inline)) PM_GATE_V PM_GATE(abs)(PM_GATE_V x) {
    return (PM_GATE_V) ((PM_GATE_I) x & PM_GATE_N(0x7fffffff));
}

static inline __attribute__((always_inline)) PM_GATE_V PM_GATE(sigmoid)(PM_GATE_V x) {
    return PM_GATE_B(1.0f) / (PM_GATE_B(1.0f) + PM_GATE(exp)(-x));
}

static inline __attribute__((always_inline)) PM_GATE_V PM_GATE(tanh)(PM_GATE_V x) {
    PM_GATE_V a = PM_GATE(abs)(x), z = a * a;
    PM_GATE_V small = a * (PM_GATE_B(0.99999999985393478884f)
                      + z * (PM_GATE_B(-0.33333329662929515885f)
                      + z * (PM_GATE_B(0.13333181748509383883f)
                      + z * (PM_GATE_B(-0.053944584678163066277f)
                      + z * (PM_GATE_B(0.021691265316521299072f)
                      + z * (PM_GATE_B(-0.0081578533724838813213f)
                      + z * PM_GATE_B(0.0021274353634957097326f)))))));
    PM_GATE_V e = PM_GATE(exp)(PM_GATE_B(-2.0f) * a);
    PM_GATE_V big = (PM_GATE_B(1.0f) - e) / (PM_GATE_B(1.0f) + e);
    PM_GATE_V v = PM_GATE(sel)(a < PM_GATE_B(0.625f), small, big);
    return (PM_GATE_V) ((PM_GATE_I) v | ((PM_GATE_I) x & PM_GATE_N(-2147483647 - 1)));
}

/* A vector of units of one row: z[0], z[h], z[2h], z[3h] the pre-activations of i, g, f, o
   (activated in place); c := f cp + i g (i g where cp is NULL, the first step);
   tc := tanh(c); h1 (and h2 unless NULL) := o tc */
static inline __attribute__((always_inline)) void PM_GATE(gates)(
        float *z, size_t h, const float *cp, float *c, float *tc, float *h1, float *h2) {
    PM_GATE_V i = PM_GATE(sigmoid)(*(PM_GATE_V *) z), g = PM_GATE(tanh)(*(PM_GATE_V *) (z + h));
    PM_GATE_V f = PM_GATE(sigmoid)(*(PM_GATE_V *) (z + 2 * h));
    PM_GATE_V o = PM_GATE(sigmoid)(*(PM_GATE_V *) (z + 3 * h));
    PM_GATE_V cv = cp ? f * *(const PM_GATE_V *) cp + i * g : i * g, t = PM_GATE(tanh)(cv);
    PM_GATE_V hv = o * t;
    *(PM_GATE_V *) z = i; *(PM_GATE_V *) (z + h) = g;
    *(PM_GATE_V *) (z + 2 * h) = f; *(PM_GATE_V *) (z + 3 * h) = o;
    *(PM_GATE_V *) c = cv; *(PM_GATE_V *) tc = t; *(PM_GATE_V *) h1 = hv;
    if (h2) *(PM_GATE_V *) h2 = hv;
}

#undef PM_GATE_B
#undef PM_GATE_N
