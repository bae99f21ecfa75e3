"""Test and benchmark hook for the packed-operand GEMM of csrc/fr_gemm.c (not public API).

tests/test_gemm.py checks fr_pack_b_* / fr_gemm_packed_* against NumPy through pack() and
gemm_packed(); bench/gemm_kernel.py times T per-step products with steps_blas() (OpenBLAS
through fastrnn._blas, which repacks B on every call) against steps_packed() (one pack, then
the packed kernel), both looping over the steps in compiled code as the cells do.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating

from fastrnn._blas cimport gemm, gemm_step
from fastrnn._gemm cimport (FR_GEMM_AVX2, FR_GEMM_AVX512, FR_GEMM_GENERIC, fr_gemm_isa,
                            fr_gemm_packed_f32, fr_gemm_packed_f64, fr_gemm_tn_f32,
                            fr_gemm_tn_f64, fr_pack_b_f32, fr_pack_b_f64, fr_packed_size_f32,
                            fr_packed_size_f64)

cnp.import_array()


ISAS = {"generic": FR_GEMM_GENERIC, "avx2": FR_GEMM_AVX2, "avx512": FR_GEMM_AVX512}


def isa(int request=-1):
    """The kernel family in use (see fr_gemm_isa); request >= 0 selects the best one <= it."""
    return fr_gemm_isa(request)


def packed_size(Py_ssize_t K, Py_ssize_t M, dtype):
    """Elements that pack(B) of op(B) (K, M) needs."""
    if np.dtype(dtype) == np.float32:
        return fr_packed_size_f32(K, M)
    return fr_packed_size_f64(K, M)


def aligned_empty(Py_ssize_t n, dtype):
    """A 1-D array of n elements whose data is 64-byte aligned."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n * dtype.itemsize].view(dtype)


cdef Py_ssize_t row_stride(cnp.ndarray X) except -1:
    """Leading dimension (elements) of a 2-D array whose rows are contiguous."""
    if X.ndim != 2 or (X.shape[1] > 1 and X.strides[1] != X.itemsize):
        raise ValueError("need a 2-D array with contiguous rows")
    return X.strides[0] // X.itemsize


def pack(cnp.ndarray B, bint trans, out=None):
    """pack(op(B)): op(B) = B (K, M) if not trans, else B.T with B stored (M, K)."""
    cdef Py_ssize_t ldb = row_stride(B)
    cdef Py_ssize_t K = B.shape[1] if trans else B.shape[0]
    cdef Py_ssize_t M = B.shape[0] if trans else B.shape[1]
    cdef size_t n = packed_size(K, M, B.dtype)
    if out is None:
        out = aligned_empty(n, B.dtype)
    cdef cnp.ndarray Bp = out
    assert Bp.dtype == B.dtype and Bp.size >= n and Bp.flags.c_contiguous
    if B.dtype == np.float32:
        fr_pack_b_f32(<const float *> B.data, ldb, K, M, trans, <float *> Bp.data)
    elif B.dtype == np.float64:
        fr_pack_b_f64(<const double *> B.data, ldb, K, M, trans, <double *> Bp.data)
    else:
        raise TypeError(B.dtype)
    return Bp


def gemm_packed(cnp.ndarray A, cnp.ndarray Bp, Py_ssize_t M, double beta, cnp.ndarray C):
    """C (N, M) = A (N, K) @ op(B) + beta * C in place, Bp = pack(op(B)); A and C may be row
    views of wider arrays (leading dimensions from their strides)."""
    cdef Py_ssize_t lda = row_stride(A), ldc = row_stride(C)
    cdef Py_ssize_t N = A.shape[0], K = A.shape[1]
    assert C.shape[0] == N and C.shape[1] == M
    assert A.dtype == Bp.dtype == C.dtype and Bp.size >= packed_size(K, M, A.dtype)
    if A.dtype == np.float32:
        with nogil:
            fr_gemm_packed_f32(N, M, K, <const float *> A.data, lda, <const float *> Bp.data,
                               <float> beta, <float *> C.data, ldc)
    else:
        with nogil:
            fr_gemm_packed_f64(N, M, K, <const double *> A.data, lda,
                               <const double *> Bp.data, beta, <double *> C.data, ldc)



def gemm_tn(cnp.ndarray A, cnp.ndarray B, double beta, cnp.ndarray C):
    """C (R, M) = A.T (R, K) @ B (K, M) + beta * C in place (fr_gemm_tn: the merged weight
    gradients); A (K, R), B and C may be row views of wider arrays."""
    cdef Py_ssize_t lda = row_stride(A), ldb = row_stride(B), ldc = row_stride(C)
    cdef Py_ssize_t K = A.shape[0], R = A.shape[1], M = B.shape[1]
    assert B.shape[0] == K and C.shape[0] == R and C.shape[1] == M
    assert A.dtype == B.dtype == C.dtype
    if A.dtype == np.float32:
        with nogil:
            fr_gemm_tn_f32(R, M, K, <const float *> A.data, lda, <const float *> B.data, ldb,
                           <float> beta, <float *> C.data, ldc)
    else:
        with nogil:
            fr_gemm_tn_f64(R, M, K, <const double *> A.data, lda, <const double *> B.data,
                           ldb, beta, <double *> C.data, ldc)


cdef void steps_blas_impl(const floating *A, const floating *B, floating *C, int N, int T,
                          int K, int M, bint split) noexcept nogil:
    cdef int t
    for t in range(T):
        # C[:, t] (N, M) += A[:, t] (N, K) @ B (K, M)   (row strides T*M and T*K)
        gemm_step(N, M, K, A + t * K, T * K, B, M, 1, C + t * M, T * M, split)


cdef void steps_packed_impl(const floating *A, const floating *B, floating *Bp, bint trans,
                            floating *C, Py_ssize_t N, Py_ssize_t T, Py_ssize_t K,
                            Py_ssize_t M) noexcept nogil:
    cdef Py_ssize_t t
    if floating is float:
        fr_pack_b_f32(B, K if trans else M, K, M, trans, Bp)
    else:
        fr_pack_b_f64(B, K if trans else M, K, M, trans, Bp)
    for t in range(T):
        # C[:, t] (N, M) += A[:, t] (N, K) @ op(B) (K, M)
        if floating is float:
            fr_gemm_packed_f32(N, M, K, A + t * K, T * K, Bp, 1, C + t * M, T * M)
        else:
            fr_gemm_packed_f64(N, M, K, A + t * K, T * K, Bp, 1, C + t * M, T * M)


def steps_blas(floating[:, :, ::1] A, floating[:, ::1] B, floating[:, :, ::1] C,
               bint split=False):
    """For t < T: C[:, t] += A[:, t] @ B, A (N, T, K), B (K, M), C (N, T, M), through
    fastrnn._blas.gemm_step (OpenBLAS; split as the cells use it)."""
    cdef int N = A.shape[0], T = A.shape[1], K = A.shape[2], M = B.shape[1]
    assert B.shape[0] == K and C.shape[0] == N and C.shape[1] == T and C.shape[2] == M
    with nogil:
        steps_blas_impl(&A[0, 0, 0], &B[0, 0], &C[0, 0, 0], N, T, K, M, split)


def steps_packed(floating[:, :, ::1] A, floating[:, ::1] B, floating[::1] Bp, bint trans,
                 floating[:, :, ::1] C):
    """The same with one pack of op(B) (B (K, M), or B (M, K) transposed if trans) into Bp,
    then T packed products."""
    cdef Py_ssize_t N = A.shape[0], T = A.shape[1], K = A.shape[2]
    cdef Py_ssize_t M = B.shape[0] if trans else B.shape[1]
    assert (B.shape[1] if trans else B.shape[0]) == K
    assert C.shape[0] == N and C.shape[1] == T and C.shape[2] == M
    assert <size_t> Bp.shape[0] >= fr_packed_size_f32(K, M)   # >= the float64 count
    with nogil:
        steps_packed_impl(&A[0, 0, 0], &B[0, 0], &Bp[0], trans, &C[0, 0, 0], N, T, K, M)
