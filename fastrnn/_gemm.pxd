# fastrnn's packed-operand GEMM for the per-time-step products (csrc/fr_gemm.c), and its
# float32/float64 dispatch. The recurrences multiply by the same W_s (forward) or W_s^T
# (backward) at every step: packed once per pass, the T products then skip the repacking a
# BLAS GEMM does on every call. Cimported by the cells' kernels, which link csrc/fr_gemm.c.
from cython cimport floating

from fastrnn._blas cimport gemm

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
    void fr_gemm_tn_f32(Py_ssize_t R, Py_ssize_t M, Py_ssize_t K, const float *A,
                        Py_ssize_t lda, const float *B, Py_ssize_t ldb, float beta, float *C,
                        Py_ssize_t ldc)
    void fr_gemm_tn_f64(Py_ssize_t R, Py_ssize_t M, Py_ssize_t K, const double *A,
                        Py_ssize_t lda, const double *B, Py_ssize_t ldb, double beta,
                        double *C, Py_ssize_t ldc)
    # the micro-kernel family in use (fr_gemm.h); for tests and benchmarks
    int fr_gemm_isa(int request)
    enum:
        FR_GEMM_GENERIC
        FR_GEMM_AVX2
        FR_GEMM_AVX512


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


cdef inline Py_ssize_t packed_elements(Py_ssize_t K, Py_ssize_t M, bint f32) noexcept nogil:
    """Elements a packed (K, M) operand needs in float32 (f32) or float64, plus 64 bytes of
    slack so that the buffer can start on a cache line (see aligned)."""
    if f32:
        return fr_packed_size_f32(K, M) + 16
    return fr_packed_size_f64(K, M) + 8


cdef inline void *aligned(void *p) noexcept nogil:
    """p rounded up to a 64-byte boundary (the packed panels are one cache line wide)."""
    return <void *> ((<size_t> p + 63) & ~(<size_t> 63))


# ---------------------------------------------------------------------------------------------
# The right operand of a recurrence's per-step products, chosen once per pass: packed for the
# micro-kernel (a batch of several rows and a single-threaded BLAS), else handed to BLAS as
# stored (one row: GEMV; several BLAS threads: OpenBLAS's threaded GEMM).

ctypedef struct StepB:
    const void *B       # as stored: op(B) = B (K, M), or B^T with B stored (M, K)
    int ldb
    bint trans
    int K, M
    void *packed        # pack(op(B)) (64-byte aligned), or NULL: BLAS on B


cdef inline void step_b(StepB *s, const floating *B, int ldb, int K, int M, bint trans,
                        void *packed_buffer) noexcept nogil:
    """Set s up for products with op(B) (K, M); packed_buffer (packed_elements(K, M)
    elements, or NULL for BLAS) receives the packed operand."""
    s.B, s.ldb, s.trans, s.K, s.M = B, ldb, trans, K, M
    s.packed = NULL
    if packed_buffer != NULL:
        s.packed = aligned(packed_buffer)
        pack_b(B, ldb, K, M, trans, <floating *> s.packed)


cdef inline void step_gemm(const StepB *s, int N, const floating *A, int lda, floating beta,
                           floating *C, int ldc) noexcept nogil:
    """C (N, M) = A (N, K) @ op(B) (K, M) + beta * C (beta 0: C is not read)."""
    if s.packed != NULL:
        gemm_packed(N, s.M, s.K, A, lda, <const floating *> s.packed, beta, C, ldc)
    else:
        gemm(False, s.trans, N, s.M, s.K, 1, A, lda, <const floating *> s.B, s.ldb, beta, C,
             ldc)


# ---------------------------------------------------------------------------------------------
# The merged weight gradients, dW = X^T dZ over all N*T rows: fastrnn's kernel (csrc/fr_gemm.c,
# fr_gemm_tn) below this many multiply-adds, where OpenBLAS's packing and edge handling cost
# ~20-50% (measured on one core: dW (64, 256) over 1600 rows 1.2x, (32, 256) 1.3-1.5x faster).
# Above it, in float32 with at most WEIGHT_GEMM_OWN_ROWS output rows and BLAS on one thread,
# still fastrnn's: OpenBLAS 0.3.30 (SciPy 1.17's) spends ~14% of an LSTM med call repacking
# the transposed operand (sgemm_itcopy), and bench/weight_gemm.py measured fr_gemm_tn
# 1.03-2.2x faster for R <= 256 at every size tried (up to 1.3e10 multiply-adds), 0.5-0.9x
# from R = 512 (its column blocks shrink as R grows, and A's slab is re-read per block). In
# float64 OpenBLAS is faster above 2**28 at every R (0.4-1.0x), and a BLAS with several
# threads takes the large products in either precision.
cdef enum:
    WEIGHT_GEMM_OWN_WORK = 268435456      # 2**28
    WEIGHT_GEMM_OWN_ROWS = 256


cdef inline void weight_gemm(int R, int M, int K, const floating *A, int lda,
                             const floating *B, int ldb, floating beta, floating *C,
                             int ldc, bint serial_blas) noexcept nogil:
    """C (R, M) = A^T (R, K) @ B (K, M) + beta * C, A stored (K, R), B (K, M) (beta 0: C is
    not read). serial_blas: BLAS would run this product on one thread (a split call's
    share, or a BLAS limited to one thread)."""
    cdef bint large = <double> R * M * K >= WEIGHT_GEMM_OWN_WORK
    if large and floating is float and serial_blas and R <= WEIGHT_GEMM_OWN_ROWS:
        large = False
    # below 16 output columns the micro-kernel's 16-wide tiles are mostly padding (a
    # (64, 8) dW_y ran 0.51x OpenBLAS): BLAS takes those, and the large products
    if M < 16 or large:
        gemm(True, False, R, M, K, 1, A, lda, B, ldb, beta, C, ldc)
    elif floating is float:
        fr_gemm_tn_f32(R, M, K, A, lda, B, ldb, beta, C, ldc)
    else:
        fr_gemm_tn_f64(R, M, K, A, lda, B, ldb, beta, C, ldc)
