# What every cell's compiled backward pass shares (inline, so each cell's extension compiles
# its own copy): the merged recurrent-weight gradient, per-row gradient norms, a transpose.
from cython cimport floating
from libc.math cimport sqrt

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport weight_gemm


cdef inline void prev_state_gemm(const floating *S, const floating *h0, floating *dZ,
                                 Py_ssize_t ld_z, floating *D, floating *dW, Py_ssize_t ld_w,
                                 int N, int T, int H, int K) noexcept nogil:
    """dW (H, K) = sum_t S_{t-1}^T (H, N) @ dZ_t (N, K), S_{-1} = h0: the recurrent weight's
    gradient as ONE GEMM over all N*T rows (oneDNN's "merged" form).

    S (N, T, H) contiguous; dZ: the (N*T, K) matrix at dZ with leading dimension ld_z (a
    column block of a wider array is fine). In the flat views, row r of S pairs with row r+1
    of dZ: right for every row but each sequence's first step, where S[n-1, T-1] would pair
    with dZ[n, 0]. So those dZ rows are set aside in D (N, K) and zeroed, one GEMM takes all
    shifted pairs, and the rows are put back and paired with h0 (N, H). (Subtracting the wrong
    pairs instead would cancel catastrophically when the states grow large.)
    """
    cdef Py_ssize_t n, j, row
    cdef int NT = N * T
    for n in range(N):
        row = n * T * ld_z                                       # dZ[n, 0]
        for j in range(K):
            D[n * K + j] = dZ[row + j]
            if n > 0:
                dZ[row + j] = 0
    if NT > 1:
        # dW (H, K) = S_flat[:-1]^T (H, N*T-1) @ dZ_flat[1:] (N*T-1, K)
        weight_gemm(H, K, NT - 1, S, H, dZ + ld_z, ld_z, 0, dW, ld_w)
    for n in range(1, N):
        row = n * T * ld_z
        for j in range(K):
            dZ[row + j] = D[n * K + j]
    # dW += h0^T (H, N) @ dZ[:, 0] (N, K)
    gemm(True, False, H, K, N, 1, h0, H, D, K, 1 if NT > 1 else 0, dW, ld_w)


cdef inline void row_norms(const floating *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                           double *out, Py_ssize_t out_stride) noexcept nogil:
    """out[r * out_stride] = ||A[r, :cols]||_2 (summed in double)."""
    cdef Py_ssize_t r, c
    cdef double acc
    for r in range(rows):
        acc = 0
        for c in range(cols):
            acc += <double> A[r * ld + c] * A[r * ld + c]
        out[r * out_stride] = sqrt(acc)


cdef inline void transpose(const floating *A, Py_ssize_t rows, Py_ssize_t cols,
                           floating *AT) noexcept nogil:
    """AT (cols, rows) = A (rows, cols)^T, both contiguous."""
    cdef Py_ssize_t r, c
    for r in range(rows):
        for c in range(cols):
            AT[c * rows + r] = A[r * cols + c]
