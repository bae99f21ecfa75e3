# The vectorised element-wise C kernels of csrc/fr_kernels.c, and their precision dispatch:
# each inline wrapper below takes the fused `floating` type and calls the float32 or float64
# kernel (resolved at compile time in each specialisation). Cimported by the compiled head
# (fastrnn/_head.pyx) and by every cell's kernels (fastrnn/cells/_*.pyx); each of those
# extensions links csrc/fr_kernels.c.
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t

cdef extern from "fr_kernels.h" nogil:
    void fr_bias_act_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const float *b, int act)
    void fr_bias_act_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const double *b, int act)
    void fr_act_grad_f32(float *G, Py_ssize_t ldg, const float *S, Py_ssize_t lds,
                         Py_ssize_t rows, Py_ssize_t cols, int act)
    void fr_act_grad_f64(double *G, Py_ssize_t ldg, const double *S, Py_ssize_t lds,
                         Py_ssize_t rows, Py_ssize_t cols, int act)
    void fr_prefetch_rows(const void *A, Py_ssize_t rows, Py_ssize_t ld_bytes,
                          Py_ssize_t bytes, int write)
    void fr_colsum_f32(const float *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                       float *out)
    void fr_colsum_f64(const double *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                       double *out)
    void fr_colsum_add_f32(const float *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                           float *out)
    void fr_colsum_add_f64(const double *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                           double *out)
    void fr_add_bias_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const float *b)
    void fr_add_bias_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const double *b)
    void fr_softmax_f32(float *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    void fr_softmax_f64(double *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld)
    double fr_mse_f32(float *Z, Py_ssize_t ldz, const float *Y, Py_ssize_t ldy,
                      Py_ssize_t rows, Py_ssize_t cols, double scale, const double *weight)
    double fr_mse_f64(double *Z, Py_ssize_t ldz, const double *Y, Py_ssize_t ldy,
                      Py_ssize_t rows, Py_ssize_t cols, double scale, const double *weight)
    double fr_xent_f32(float *Z, Py_ssize_t ld, const int64_t *y, Py_ssize_t rows,
                       Py_ssize_t cols, double scale, const double *weight)
    double fr_xent_f64(double *Z, Py_ssize_t ld, const int64_t *y, Py_ssize_t rows,
                       Py_ssize_t cols, double scale, const double *weight)
    bint fr_all_finite_f32(const float *a, Py_ssize_t n)
    bint fr_all_finite_f64(const double *a, Py_ssize_t n)
    # the activation codes (the order of fastrnn.activations.ACTIVATIONS)
    enum:
        FR_IDENTITY
        FR_TANH
        FR_RELU
        FR_SIGMOID


cdef inline void bias_act(floating *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                          const floating *b, int act) noexcept nogil:
    """Z[r, c] = phi(Z[r, c] + b[c]) for rows r of a block with leading dimension ld."""
    if floating is float:
        fr_bias_act_f32(Z, rows, cols, ld, b, act)
    else:
        fr_bias_act_f64(Z, rows, cols, ld, b, act)


cdef inline void act_grad(floating *G, Py_ssize_t ldg, const floating *S, Py_ssize_t lds,
                          Py_ssize_t rows, Py_ssize_t cols, int act) noexcept nogil:
    """G[r, c] *= phi'(a[r, c]), phi' written in terms of the output S = phi(a)."""
    if floating is float:
        fr_act_grad_f32(G, ldg, S, lds, rows, cols, act)
    else:
        fr_act_grad_f64(G, ldg, S, lds, rows, cols, act)


cdef inline void colsum(const floating *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                        floating *out) noexcept nogil:
    """out[c] = sum_r A[r, c]."""
    if floating is float:
        fr_colsum_f32(A, rows, cols, ld, out)
    else:
        fr_colsum_f64(A, rows, cols, ld, out)


cdef inline void colsum_add(const floating *A, Py_ssize_t rows, Py_ssize_t cols,
                            Py_ssize_t ld, floating *out) noexcept nogil:
    """out[c] += sum_r A[r, c]."""
    if floating is float:
        fr_colsum_add_f32(A, rows, cols, ld, out)
    else:
        fr_colsum_add_f64(A, rows, cols, ld, out)


cdef inline void add_bias(floating *Z, Py_ssize_t rows, Py_ssize_t cols,
                          const floating *b) noexcept nogil:
    """Z[r, c] += b[c] for a contiguous (rows, cols) Z."""
    if floating is float:
        fr_add_bias_f32(Z, rows, cols, cols, b)
    else:
        fr_add_bias_f64(Z, rows, cols, cols, b)


cdef inline void softmax(floating *Z, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """Row-wise softmax of a contiguous (rows, cols) Z, in place."""
    if floating is float:
        fr_softmax_f32(Z, rows, cols, cols)
    else:
        fr_softmax_f64(Z, rows, cols, cols)


cdef inline double mse(floating *Z, const floating *Y, Py_ssize_t rows, Py_ssize_t cols,
                       double scale, const double *weight) noexcept nogil:
    """sum_r w_r * sum((Z[r] - Y[r])**2); Z[r] <- scale * w_r * 2 * (Z[r] - Y[r]) (w_r =
    weight[r], 1 if weight is NULL; 0: the row is not scored, its gradient is 0)."""
    if floating is float:
        return fr_mse_f32(Z, cols, Y, cols, rows, cols, scale, weight)
    else:
        return fr_mse_f64(Z, cols, Y, cols, rows, cols, scale, weight)


cdef inline double xent(floating *Z, const int64_t *y, Py_ssize_t rows, Py_ssize_t cols,
                        double scale, const double *weight) noexcept nogil:
    """sum_r w_r * -log softmax(Z[r])[y[r]]; Z[r] <- scale * w_r * (softmax - onehot) (w_r
    as for mse)."""
    if floating is float:
        return fr_xent_f32(Z, cols, y, rows, cols, scale, weight)
    else:
        return fr_xent_f64(Z, cols, y, rows, cols, scale, weight)


# A recurrence whose per-step blocks lie in arrays larger than this (bytes) prefetches the next
# step's rows while it computes the current one (fr_prefetch_rows); smaller ones stay in cache
# between the forward and the backward pass, where prefetching would only cost instructions.
cdef enum:
    PREFETCH_ABOVE_BYTES = 4194304      # 4 MiB


cdef inline bint far_apart(Py_ssize_t elements, Py_ssize_t itemsize) noexcept nogil:
    """Whether an array of this many elements is large enough to prefetch steps of."""
    return elements * itemsize > PREFETCH_ABOVE_BYTES


cdef inline void prefetch_step(const floating *A, Py_ssize_t rows, Py_ssize_t ld,
                               Py_ssize_t cols, bint write) noexcept nogil:
    """Prefetch the (rows, cols) block at A with leading dimension ld (one time step)."""
    fr_prefetch_rows(A, rows, ld * sizeof(floating), cols * sizeof(floating), write)
