# What every cell's compiled backward pass shares (inline, so each cell's extension compiles
# its own copy): the merged recurrent-weight gradient, the rows that reach the initial state,
# per-row gradient norms, a transpose.
from cython cimport floating
from libc.math cimport sqrt
from libc.stdint cimport int64_t

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport weight_gemm


cdef inline void prev_state_gemm(const floating *S, const floating *h0, floating *dZ,
                                 Py_ssize_t ld_z, floating *D, floating *dW, Py_ssize_t ld_w,
                                 int N, int T, int H, int K, bint reverse,
                                 bint serial_blas) noexcept nogil:
    """dW (H, K) = sum_t S_prev(t)^T (H, N) @ dZ_t (N, K): the recurrent weight's gradient as
    ONE GEMM over all N*T rows (oneDNN's "merged" form). S_prev(t) = S_{t-1}, S_{-1} = h0;
    with reverse S_{t+1}, S_T = h0 (the recurrence ran backwards in time).

    S (N, T, H) contiguous; dZ: the (N*T, K) matrix at dZ with leading dimension ld_z (a
    column block of a wider array is fine). In the flat views, row r of S pairs with row r+1
    of dZ (reverse: row r of dZ with row r+1 of S): right for every row but each sequence's
    first processed step, which would pair with the neighbouring sequence's state. So those
    dZ rows are set aside in D (N, K) and zeroed, one GEMM takes all shifted pairs, and the
    rows are put back and paired with h0 (N, H). (Subtracting the wrong pairs instead would
    cancel catastrophically when the states grow large.)
    """
    cdef Py_ssize_t n, j, row
    cdef int NT = N * T
    cdef Py_ssize_t first = T - 1 if reverse else 0   # the step that reads h0
    cdef bint wrong
    for n in range(N):
        row = (n * T + first) * ld_z
        # forwards every sequence's step 0 but the first (flat row 0 is outside the GEMM);
        # backwards every sequence's step T-1 but the last
        wrong = n < N - 1 if reverse else n > 0
        for j in range(K):
            D[n * K + j] = dZ[row + j]
            if wrong:
                dZ[row + j] = 0
    if NT > 1:
        if reverse:
            # dW (H, K) = S_flat[1:]^T (H, N*T-1) @ dZ_flat[:-1] (N*T-1, K)
            weight_gemm(H, K, NT - 1, S + H, H, dZ, ld_z, 0, dW, ld_w, serial_blas)
        else:
            # dW (H, K) = S_flat[:-1]^T (H, N*T-1) @ dZ_flat[1:] (N*T-1, K)
            weight_gemm(H, K, NT - 1, S, H, dZ + ld_z, ld_z, 0, dW, ld_w, serial_blas)
    for n in range(N):
        if n < N - 1 if reverse else n > 0:
            row = (n * T + first) * ld_z
            for j in range(K):
                dZ[row + j] = D[n * K + j]
    # dW += h0^T (H, N) @ dZ at the first processed steps (N, K)
    gemm(True, False, H, K, N, 1, h0, H, D, K, 1 if NT > 1 else 0, dW, ld_w)


cdef inline const floating *first_rows(const floating *A, Py_ssize_t K, Py_ssize_t ldd,
                                       floating *D, const int64_t *lengths, int N, int T,
                                       bint reverse) noexcept nogil:
    """The (N, K) matrix of each sequence's first processed step of A (N, T, K), the step
    whose gradient reaches the initial state: step 0, or with reverse step T-1, or with
    reverse and lengths step lengths[n] - 1 (gathered into D, leading dimension ldd; the
    padding before it only carries h0). Its leading dimension is first_ld(...)."""
    cdef Py_ssize_t n, j, row
    if not reverse:
        return A
    if lengths == NULL:
        return A + (T - 1) * K
    for n in range(N):
        row = (n * <Py_ssize_t> T + lengths[n] - 1) * K
        for j in range(K):
            D[n * ldd + j] = A[row + j]
    return D


cdef inline Py_ssize_t first_ld(Py_ssize_t K, Py_ssize_t ldd, int T, const int64_t *lengths,
                                bint reverse) noexcept nogil:
    """The leading dimension of first_rows(A, K, ldd, ...)."""
    return ldd if reverse and lengths != NULL else T * K


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


cdef inline Py_ssize_t part(Py_ssize_t total, int parts, int c) noexcept nogil:
    """Where part c of [0, total) starts when it is cut into `parts` near-equal pieces
    (part(total, parts, parts) = total): the sequences a thread takes when a call is split
    across threads."""
    return (total * c) // parts


cdef inline void add_partials(floating *grad, const floating *partials, int parts,
                              Py_ssize_t size, Py_ssize_t stride) noexcept nogil:
    """grad (size,) += partials[p * stride : p * stride + size] for each part p in turn: one
    weight gradient of a split call, whose threads computed it over their own sequences
    (summed in the same order every time, so a thread count gives the same result every
    run)."""
    cdef Py_ssize_t p, j
    for p in range(parts):
        for j in range(size):
            grad[j] += partials[p * stride + j]
