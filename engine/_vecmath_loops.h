/* Array loops of _vecmath.h, included once per dtype with PM_T (float or double) and PM_S(name)
   (name_f32 or name_f64) defined. Every pointer is to contiguous, checked memory; an output
   may be its input only where the kernel says so (elementwise forwards). */

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

/* -- elementwise activations ------------------------------------------------------------------ */

static PM_VCLONES void PM_S(pm_vexp)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_exp)(x[i]);
}

static PM_VCLONES void PM_S(pm_vlog)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_log)(x[i]);
}

static PM_VCLONES void PM_S(pm_vtanh)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_tanh)(x[i]);
}

static PM_VCLONES void PM_S(pm_vsigmoid)(const T *x, T *y, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) y[i] = PM_S(pm_sigmoid)(x[i]);
}

/* y = a x > th ? x : log(1 + exp(a x)) / a */
static PM_VCLONES void PM_S(pm_vsoftplus)(const T *x, T *y, Py_ssize_t n, T a, T th) {
    T inv = (T) 1 / a;
    for (Py_ssize_t i = 0; i < n; i++) {
        T u = x[i], v = u * a;
        T s = PM_S(pm_softplus)(v) * inv;
        y[i] = v > th ? u : s;
    }
}

/* y = x > 0 ? x : a (exp(x) - 1); NaN goes through expm1 and stays NaN */
static PM_VCLONES void PM_S(pm_velu)(const T *x, T *y, Py_ssize_t n, T a) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i];
        T e = a * PM_S(pm_expm1_neg)(v > 0 ? (T) 0 : v);
        y[i] = v > 0 ? v : e;
    }
}

/* backward passes from the saved output y where the derivative is a function of it */
static PM_VCLONES void PM_S(pm_vtanh_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = y[i]; gi[i] = go[i] * (1 - v * v); }
}

static PM_VCLONES void PM_S(pm_vsigmoid_bwd)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) { T v = y[i]; gi[i] = go[i] * v * (1 - v); }
}

static PM_VCLONES void PM_S(pm_vmul)(const T *y, const T *go, T *gi, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) gi[i] = go[i] * y[i];
}

static PM_VCLONES void PM_S(pm_velu_bwd)(const T *x, const T *y, const T *go, T *gi,
                                         Py_ssize_t n, T a) {
    for (Py_ssize_t i = 0; i < n; i++) { T g = go[i]; gi[i] = x[i] > 0 ? g : g * (y[i] + a); }
}

/* d/dx log(1 + exp(a x)) / a = sigmoid(a x), from the input (1 - exp(-a y) cancels) */
static PM_VCLONES void PM_S(pm_vsoftplus_bwd)(const T *x, const T *go, T *gi, Py_ssize_t n,
                                              T a, T th) {
    for (Py_ssize_t i = 0; i < n; i++) {
        T v = x[i] * a, g = go[i];
        T s = g * PM_S(pm_sigmoid)(v);
        gi[i] = v > th ? g : s;
    }
}

/* -- SoftMax, SoftMin, LogSoftMax ------------------------------------------------------------- */

/* Distributions along n, stride inner, of x seen as (outer, n, inner), of sign * x.
   inner == 1: rows, one pass for the max, one writing exp(v - max), one summing, one scaling.
   inner > 1: PM_BLOCK neighbouring lines at once, so that every loop runs along contiguous
   memory with per-line accumulators. */
#ifndef PM_BLOCK
#define PM_BLOCK 64
#endif

static PM_VCLONES void PM_S(pm_softmax)(const T *x, T *y, Py_ssize_t outer, Py_ssize_t n,
                                        Py_ssize_t inner, T sign, int take_log) {
    if (inner == 1) {
        for (Py_ssize_t o = 0; o < outer; o++) {
            const T *xr = x + o * n;
            T *yr = y + o * n;
            T m = PM_S(pm_rowmax)(xr, n, sign);
            for (Py_ssize_t i = 0; i < n; i++) yr[i] = PM_S(pm_exp)(sign * xr[i] - m);
            double total = PM_S(pm_sum)(yr, n);
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
    T m[PM_BLOCK], lt[PM_BLOCK];
    double total[PM_BLOCK];
    for (Py_ssize_t o = 0; o < outer; o++) {
        for (Py_ssize_t j0 = 0; j0 < inner; j0 += PM_BLOCK) {
            Py_ssize_t nb = inner - j0 < PM_BLOCK ? inner - j0 : PM_BLOCK;
            const T *xb = x + o * n * inner + j0;
            T *yb = y + o * n * inner + j0;
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
    }
}

/* SoftMax/SoftMin: gi = sign * y * (go - sum(go * y)); LogSoftMax: gi = go - exp(y) sum(go) */
static PM_VCLONES void PM_S(pm_softmax_grad)(const T *y, const T *go, T *gi, Py_ssize_t outer,
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
static PM_VCLONES void PM_S(pm_bn_forward)(const T *x, T *y, const T *w, const T *b, T *rm,
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
static PM_VCLONES void PM_S(pm_bn_backward)(const T *x, const T *go, T *gi, const T *w,
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
static PM_VCLONES void PM_S(pm_bn_acc)(const T *x, const T *go, T *gw, T *gb, const T *sm,
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

/* -- cross-map local response normalisation over (outer, ch, inner) ---------------------------- */

/* v^-beta = exp(-beta log v) in double for v > 0 (scale >= k > 0 in practice) */
PM_INLINE double PM_S(pm_pow_neg)(double v, double beta) {
    return pm_exp_f64(-beta * pm_log_f64(v));
}

/* scale = k + alpha / size * (sum of x^2 over the window of channels), y = x scale^-beta.
   PM_BLOCK neighbouring positions at once with running window sums in double, so that every
   loop runs along contiguous memory instead of striding across channels. */
static PM_VCLONES void PM_S(pm_lrn_forward)(const T *x, T *y, T *sc, Py_ssize_t outer,
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
static PM_VCLONES void PM_S(pm_lrn_backward)(const T *x, const T *y, const T *go, T *gi,
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
