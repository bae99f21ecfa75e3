# fastrnn's packed-operand GEMM for the per-time-step products (csrc/fr_gemm.c), and its
# float32/float64 dispatch. The recurrences multiply by the same W_s (forward) or W_s^T
# (backward) at every step: packed once per pass, the T products then skip the repacking a
# BLAS GEMM does on every call. Cimported by the cells' kernels, which link csrc/fr_gemm.c.
from cython cimport floating

cdef extern from "fr_gemm.h" nogil:
    size_t fr_packed_size_f32(Py_ssize_t K, Py_ssize_t M)
    size_t fr_packed_size_f64(Py_ssize_t K, Py_ssize_t M)
    void fr_pack_b_f32(const float *B, Py_ssize_t ldb, Py_ssize_t K, Py_ssize_t M, int trans,
                       float *Bp)
    void fr_pack_b_f64(const double *B, Py_ssize_t ldb, Py_ssize_t K, Py_ssize_t M, int trans,
                       double *Bp)
    void fr_gemm_packed_f32(Py_ssize_t N, Py_ssize_t M, Py_ssize_t K, const float *A,
                            Py_ssize_t lda, const float *Bp, float beta, float *C,
                            Py_ssize_t ldc)
    void fr_gemm_packed_f64(Py_ssize_t N, Py_ssize_t M, Py_ssize_t K, const double *A,
                            Py_ssize_t lda, const double *Bp, double beta, double *C,
                            Py_ssize_t ldc)


cdef inline void pack_b(const floating *B, Py_ssize_t ldb, Py_ssize_t K, Py_ssize_t M,
                        bint trans, floating *Bp) noexcept nogil:
    """Bp <- op(B) (K, M) in the micro-kernel's panels: op(B) = B stored (K, M), or with
    trans B^T of B stored (M, K). Bp has packed_size(K, M) elements."""
    if floating is float:
        fr_pack_b_f32(B, ldb, K, M, trans, Bp)
    else:
        fr_pack_b_f64(B, ldb, K, M, trans, Bp)


cdef inline void gemm_packed(Py_ssize_t N, Py_ssize_t M, Py_ssize_t K, const floating *A,
                             Py_ssize_t lda, const floating *Bp, floating beta, floating *C,
                             Py_ssize_t ldc) noexcept nogil:
    """C (N, M) = A (N, K) @ op(B) (K, M) + beta * C, op(B) packed in Bp (beta 0: C not
    read)."""
    if floating is float:
        fr_gemm_packed_f32(N, M, K, A, lda, Bp, beta, C, ldc)
    else:
        fr_gemm_packed_f64(N, M, K, A, lda, Bp, beta, C, ldc)
