# The entry points of vecmath.h (see its header comment: algorithms, accuracy table). Each runs
# the float loop, or the double one when f64 is true, on contiguous checked arrays of that dtype;
# scalars are converted to the dtype. Elementwise: y may be x, gi may be go; n values.
# Channels: data seen as (outer, n or ch, inner), the statistic along the middle axis.

cdef extern from "vecmath.h" nogil:
    # a where mask is all ones, b where it is zero, without a branch
    float pm_select_f32(Py_ssize_t mask, float a, float b)
    double pm_select_f64(Py_ssize_t mask, double a, double b)
    # elementwise forwards y = f(x)
    void pm_threshold_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double th, double v)
    void pm_leaky_relu_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double negval)
    void pm_elu_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double alpha)
    void pm_hard_tanh_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double lo, double hi)
    void pm_tanh_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_sigmoid_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_hard_sigmoid_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_soft_plus_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double beta, double th)
    void pm_soft_sign_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_abs_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_square_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_sqrt_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_exp_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_log_fwd(bint f64, const void *x, void *y, Py_ssize_t n)
    void pm_power_fwd(bint f64, const void *x, void *y, Py_ssize_t n, double power, double scale,
                      double shift)
    # elementwise backwards gi = f'(x) go, from the input x or the output y
    void pm_threshold_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n,
                          double th)
    void pm_leaky_relu_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n,
                           double negval)
    void pm_elu_bwd(bint f64, const void *x, const void *y, const void *go, void *gi,
                    Py_ssize_t n, double alpha)
    void pm_hard_tanh_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n,
                          double lo, double hi)
    void pm_tanh_bwd(bint f64, const void *y, const void *go, void *gi, Py_ssize_t n)
    void pm_sigmoid_bwd(bint f64, const void *y, const void *go, void *gi, Py_ssize_t n)
    void pm_hard_sigmoid_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n)
    void pm_soft_plus_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n,
                          double beta, double th)
    void pm_soft_sign_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n)
    void pm_abs_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n)
    void pm_square_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n)
    void pm_sqrt_bwd(bint f64, const void *y, const void *go, void *gi, Py_ssize_t n)
    void pm_exp_bwd(bint f64, const void *y, const void *go, void *gi, Py_ssize_t n)
    void pm_log_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n)
    void pm_power_bwd(bint f64, const void *x, const void *go, void *gi, Py_ssize_t n,
                      double power, double scale, double shift)
    # PReLU over (outer, ch, inner), slope w[c]; the gradient of w is summed in double
    void pm_prelu_fwd(bint f64, const void *x, void *y, const void *w, Py_ssize_t outer,
                      Py_ssize_t ch, Py_ssize_t inner)
    void pm_prelu_bwd(bint f64, const void *x, const void *go, void *gi, const void *w,
                      Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner)
    void pm_prelu_acc(bint f64, const void *x, const void *go, void *gw, double scale,
                      Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner)
    # SoftMax (sign 1), SoftMin (sign -1), LogSoftMax (take_log) along n
    void pm_softmax_fwd(bint f64, const void *x, void *y, Py_ssize_t outer, Py_ssize_t n,
                        Py_ssize_t inner, double sign, bint take_log)
    void pm_softmax_bwd(bint f64, const void *y, const void *go, void *gi, Py_ssize_t outer,
                        Py_ssize_t n, Py_ssize_t inner, double sign, bint take_log)
    # batch normalisation per channel; w and b may be NULL (no affine), gb too
    void pm_bn_fwd(bint f64, const void *x, void *y, const void *w, const void *b, void *rm,
                   void *rv, void *sm, void *si, Py_ssize_t outer, Py_ssize_t ch,
                   Py_ssize_t inner, bint train, double momentum, double eps)
    void pm_bn_bwd(bint f64, const void *x, const void *go, void *gi, const void *w,
                   const void *sm, const void *si, Py_ssize_t outer, Py_ssize_t ch,
                   Py_ssize_t inner, bint train)
    void pm_bn_acc(bint f64, const void *x, const void *go, void *gw, void *gb, const void *sm,
                   const void *si, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner,
                   double scale_w, double scale_b)
    # layer normalisation of each row of n values over (rows, n); sums is (2, n) float64
    # (NULL: none), zeroed by the caller, and receives [sum(go * xhat), sum(go)]
    void pm_ln_fwd(bint f64, const void *x, void *y, const void *w, const void *b, void *sm,
                   void *si, Py_ssize_t rows, Py_ssize_t n, double eps)
    void pm_ln_bwd(bint f64, const void *x, const void *go, void *gi, const void *w,
                   const void *sm, const void *si, double *sums, Py_ssize_t rows, Py_ssize_t n)
    void pm_ln_sums(bint f64, const void *x, const void *go, const void *sm, const void *si,
                    double *sums, Py_ssize_t rows, Py_ssize_t n)
    void pm_ln_acc(bint f64, const double *sums, void *gw, void *gb, double scale_w,
                   double scale_b, Py_ssize_t n)
    # cross-map LRN, window of size channels
    void pm_lrn_fwd(bint f64, const void *x, void *y, void *sc, Py_ssize_t outer, Py_ssize_t ch,
                    Py_ssize_t inner, int size, double alpha, double beta, double k)
    void pm_lrn_bwd(bint f64, const void *x, const void *y, const void *go, void *gi,
                    const void *sc, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner, int size,
                    double alpha, double beta)


from engine.blas cimport floating


cdef inline floating pm_select(Py_ssize_t mask, floating a, floating b) noexcept nogil:
    """a where mask is all ones (-1), b where it is zero, without a branch; either dtype."""
    if floating is float:
        return pm_select_f32(mask, a, b)
    else:
        return pm_select_f64(mask, a, b)
