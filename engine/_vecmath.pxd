# Declarations of the vectorised math and array loops of _vecmath.h (see its header comment for
# the algorithms and their accuracy), suffix _f32 for float and _f64 for double. Static C: each
# module that cimports this compiles its own copy (no runtime link between extension modules).
# Arguments: contiguous, checked arrays; n, outer/n/inner and outer/ch/inner as in the kernels.

cdef extern from "_vecmath.h" nogil:
    # float
    void pm_vexp_f32(const float *x, float *y, Py_ssize_t n)
    void pm_vlog_f32(const float *x, float *y, Py_ssize_t n)
    void pm_vtanh_f32(const float *x, float *y, Py_ssize_t n)
    void pm_vsigmoid_f32(const float *x, float *y, Py_ssize_t n)
    void pm_vsoftplus_f32(const float *x, float *y, Py_ssize_t n, float a, float th)
    void pm_velu_f32(const float *x, float *y, Py_ssize_t n, float a)
    void pm_vtanh_bwd_f32(const float *y, const float *go, float *gi, Py_ssize_t n)
    void pm_vsigmoid_bwd_f32(const float *y, const float *go, float *gi, Py_ssize_t n)
    void pm_vmul_f32(const float *y, const float *go, float *gi, Py_ssize_t n)
    void pm_velu_bwd_f32(const float *x, const float *y, const float *go, float *gi, Py_ssize_t n,
                        float a)
    void pm_vsoftplus_bwd_f32(const float *x, const float *go, float *gi, Py_ssize_t n, float a,
                             float th)
    void pm_softmax_f32(const float *x, float *y, Py_ssize_t outer, Py_ssize_t n,
                       Py_ssize_t inner, float sign, int take_log)
    void pm_softmax_grad_f32(const float *y, const float *go, float *gi, Py_ssize_t outer,
                            Py_ssize_t n, Py_ssize_t inner, float sign, int take_log)
    void pm_bn_forward_f32(const float *x, float *y, const float *w, const float *b, float *rm,
                          float *rv, float *sm, float *si, Py_ssize_t outer, Py_ssize_t ch,
                          Py_ssize_t inner, int train, double momentum, double eps)
    void pm_bn_backward_f32(const float *x, const float *go, float *gi, const float *w,
                           const float *sm, const float *si, Py_ssize_t outer, Py_ssize_t ch,
                           Py_ssize_t inner, int train)
    void pm_bn_acc_f32(const float *x, const float *go, float *gw, float *gb, const float *sm,
                      const float *si, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner,
                      double scale_w, double scale_b)
    void pm_lrn_forward_f32(const float *x, float *y, float *sc, Py_ssize_t outer, Py_ssize_t ch,
                           Py_ssize_t inner, int size, double alpha, double beta, double k)
    void pm_lrn_backward_f32(const float *x, const float *y, const float *go, float *gi,
                            const float *sc, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner,
                            int size, double alpha, double beta)
    # double
    void pm_vexp_f64(const double *x, double *y, Py_ssize_t n)
    void pm_vlog_f64(const double *x, double *y, Py_ssize_t n)
    void pm_vtanh_f64(const double *x, double *y, Py_ssize_t n)
    void pm_vsigmoid_f64(const double *x, double *y, Py_ssize_t n)
    void pm_vsoftplus_f64(const double *x, double *y, Py_ssize_t n, double a, double th)
    void pm_velu_f64(const double *x, double *y, Py_ssize_t n, double a)
    void pm_vtanh_bwd_f64(const double *y, const double *go, double *gi, Py_ssize_t n)
    void pm_vsigmoid_bwd_f64(const double *y, const double *go, double *gi, Py_ssize_t n)
    void pm_vmul_f64(const double *y, const double *go, double *gi, Py_ssize_t n)
    void pm_velu_bwd_f64(const double *x, const double *y, const double *go, double *gi,
                         Py_ssize_t n, double a)
    void pm_vsoftplus_bwd_f64(const double *x, const double *go, double *gi, Py_ssize_t n, double a,
                             double th)
    void pm_softmax_f64(const double *x, double *y, Py_ssize_t outer, Py_ssize_t n,
                       Py_ssize_t inner, double sign, int take_log)
    void pm_softmax_grad_f64(const double *y, const double *go, double *gi, Py_ssize_t outer,
                            Py_ssize_t n, Py_ssize_t inner, double sign, int take_log)
    void pm_bn_forward_f64(const double *x, double *y, const double *w, const double *b, double *rm,
                          double *rv, double *sm, double *si, Py_ssize_t outer, Py_ssize_t ch,
                          Py_ssize_t inner, int train, double momentum, double eps)
    void pm_bn_backward_f64(const double *x, const double *go, double *gi, const double *w,
                           const double *sm, const double *si, Py_ssize_t outer, Py_ssize_t ch,
                           Py_ssize_t inner, int train)
    void pm_bn_acc_f64(const double *x, const double *go, double *gw, double *gb, const double *sm,
                      const double *si, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner,
                      double scale_w, double scale_b)
    void pm_lrn_forward_f64(const double *x, double *y, double *sc, Py_ssize_t outer, Py_ssize_t ch,
                           Py_ssize_t inner, int size, double alpha, double beta, double k)
    void pm_lrn_backward_f64(const double *x, const double *y, const double *go, double *gi,
                            const double *sc, Py_ssize_t outer, Py_ssize_t ch, Py_ssize_t inner,
                            int size, double alpha, double beta)
