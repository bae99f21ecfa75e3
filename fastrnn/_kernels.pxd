# Declarations of the vectorised element-wise C kernels in csrc/elman_kernels.c.
from libc.stdint cimport int64_t, uint8_t

cdef extern from "elman_kernels.h" nogil:
    void fr_bias_act_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const float *b, int act)
    void fr_bias_act_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const double *b, int act)
    void fr_act_grad_f32(float *G, Py_ssize_t ldg, const float *S, Py_ssize_t lds,
                         Py_ssize_t rows, Py_ssize_t cols, int act)
    void fr_act_grad_f64(double *G, Py_ssize_t ldg, const double *S, Py_ssize_t lds,
                         Py_ssize_t rows, Py_ssize_t cols, int act)
    void fr_colsum_f32(const float *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                       float *out)
    void fr_colsum_f64(const double *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                       double *out)
    void fr_add_bias_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const float *b)
    void fr_add_bias_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const double *b)
    void fr_softmax_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    void fr_softmax_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    double fr_mse_f32(float *Z, Py_ssize_t ldz, const float *Y, Py_ssize_t ldy,
                      Py_ssize_t rows, Py_ssize_t cols, double scale, const uint8_t *valid)
    double fr_mse_f64(double *Z, Py_ssize_t ldz, const double *Y, Py_ssize_t ldy,
                      Py_ssize_t rows, Py_ssize_t cols, double scale, const uint8_t *valid)
    double fr_xent_f32(float *Z, Py_ssize_t ld, const int64_t *y, Py_ssize_t rows,
                       Py_ssize_t cols, double scale, const uint8_t *valid)
    double fr_xent_f64(double *Z, Py_ssize_t ld, const int64_t *y, Py_ssize_t rows,
                       Py_ssize_t cols, double scale, const uint8_t *valid)
    bint fr_all_finite_f32(const float *a, Py_ssize_t n)
    bint fr_all_finite_f64(const double *a, Py_ssize_t n)
