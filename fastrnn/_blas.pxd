# Row-major GEMM over scipy.linalg.cython_blas, for float32 and float64 (fused `floating`).
#
# BLAS is column-major; a row-major matrix is its column-major transpose, so
#     C = op(A) @ op(B)   (row-major)   <=>   C^T = op(B)^T @ op(A)^T   (column-major)
# and we call ?gemm with the operands swapped and the same transpose flags (as in
# scikit-learn's sklearn/utils/_cython_blas.pyx). Leading dimensions are row strides in
# elements, so one time step of a batch-first (N, T, H) array is an (N, H) matrix with
# leading dimension T*H: no transposed or gathered copies.
#
# All sizes must be < 2**31 (BLAS ints); fastrnn._validate checks that before we get here.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void vecmat(bint trans_b, int n, int k, floating alpha,
                        const floating *x, int incx, const floating *B, int ldb,
                        floating beta, floating *y) noexcept nogil:
    """y (n,) = alpha * x (k,) @ op(B) (k, n) + beta * y: a one-row GEMM as a GEMV.

    Row-major B (k, n) is column-major B^T (n, k), so x @ B is ?gemv('N') on it, and for
    trans_b the stored (n, k) B is column-major (k, n) and x @ B^T is ?gemv('T').
    """
    cdef char t = b'T' if trans_b else b'N'
    cdef int one = 1, i
    cdef int rows = k if trans_b else n   # column-major shape of what is stored
    cdef int cols = n if trans_b else k
    if beta == 0:
        # y may hold garbage (even NaN): clear it rather than trust BLAS to ignore it
        for i in range(n):
            y[i] = 0
        beta = 1
    if floating is float:
        sgemv(&t, &rows, &cols, &alpha, <float *> B, &ldb, <float *> x, &incx, &beta, y, &one)
    else:
        dgemv(&t, &rows, &cols, &alpha, <double *> B, &ldb, <double *> x, &incx, &beta, y, &one)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *A, int lda,
                      const floating *B, int ldb,
                      floating beta, floating *C, int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, all row-major.

    With beta == 0, C is not read (it may hold garbage). k == 0 gives C = beta * C.
    One-row products (m == 1: batch size 1) go to GEMV, which is several times faster
    than GEMM's small-matrix path there.
    """
    if m == 1 and k > 0:
        # x = the one row of op(A): contiguous, or a column of A (stride lda) if trans_a
        vecmat(trans_b, n, k, alpha, A, lda if trans_a else 1, B, ldb, beta, C)
        return
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> B, &ldb, <float *> A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> B, &ldb, <double *> A, &lda,
              &beta, C, &ldc)



cdef inline void gemm_step(int m, int n, int k, const floating *A, int lda,
                           const floating *B, int ldb, floating beta,
                           floating *C, int ldc, bint split) noexcept nogil:
    """C (m, n) = A (m, k) @ B (k, n) + beta * C, for the per-time-step products.

    The same B (W_s) is used at every step. A GEMM too large for OpenBLAS's small-matrix
    kernels packs B on every call, which at batch sizes of tens costs as much as the
    arithmetic; with split, column blocks of B small enough for those kernels avoid the
    packing. The caller splits only mid-sized products with a single-threaded BLAS: the
    small kernels are single-threaded, and for large products packing is cheap anyway.
    """
    cdef int j0, nb = n
    if split:
        # 1e6: the m*n*k up to which OpenBLAS (SkylakeX kernels) takes the small path
        while nb > 16 and <double> m * nb * k > 1e6:
            nb = (nb + 1) // 2
        nb = ((nb + 15) // 16) * 16 if nb < n else n      # whole vector registers
    j0 = 0
    while j0 < n:
        gemm(False, False, m, min(nb, n - j0), k, 1, A, lda, B + j0, ldb, beta,
             C + j0, ldc)
        j0 += nb
