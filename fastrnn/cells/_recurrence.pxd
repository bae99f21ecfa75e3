# What every cell's compiled backward pass shares (inline, so each cell's extension compiles
# its own copy): the merged recurrent-weight gradient, the rows that reach the initial state,
# per-row gradient norms, a transpose.
from cython cimport floating
from libc.math cimport sqrt
from libc.stdint cimport int64_t

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport StepB, step_gemm, weight_gemm
from fastrnn._kernels cimport colsum_add


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


# ---------------------------------------------------------------------------------------------
# The time-blocked passes (long sequences; fastrnn._threads.time_block): the forward pass
# projects the inputs a block of steps at a time just before its time loop reaches them, and
# the backward pass sums the weight gradients a block at a time, right after its time loop
# has computed that block's gate gradients, while they are still in cache, instead of in one
# merged GEMM over all N*T rows that reads them back from memory. Step t of sequence n of a
# batch-first array A (N, T, K) is row n*T + t of the flat (N*T, K) matrix, and a sequence's
# block of steps is contiguous: one GEMM per sequence.

cdef inline void steps_tn(int R, int M, int steps, int N, int T, const floating *A, int lda,
                          const floating *B, int ldb, floating beta, floating *C,
                          int ldc) noexcept nogil:
    """C (R, M) = beta * C + sum_n A_n^T (R, steps) @ B_n (steps, M): A_n the steps rows of
    sequence n from A, B_n from B (A, B: a step's row in batch-first (N, T, lda) and
    (N, T, ldb) arrays; sequence n's rows start T*lda, T*ldb further on)."""
    cdef Py_ssize_t n
    for n in range(N):
        weight_gemm(R, M, steps, A + n * <Py_ssize_t> T * lda, lda,
                    B + n * <Py_ssize_t> T * ldb, ldb, beta if n == 0 else 1, C, ldc, True)


cdef inline void steps_prev_state_gemm(const floating *S, const floating *h0,
                                       const floating *dZ, int ld_z, floating *dW, int ld_w,
                                       int N, int T, int H, int K, int t0, int t1,
                                       bint reverse, floating beta) noexcept nogil:
    """dW (H, K) = beta * dW + sum over steps t0 <= t < t1 of S_prev(t)^T (H, N) @ dZ_t
    (N, K): prev_state_gemm's product restricted to those steps (S_prev as there: S_{t-1},
    or S_{t+1} with reverse; h0 at the step that reads it). S (N, T, H); dZ (N, T, ld_z),
    its first K columns."""
    cdef int lo = t0, hi = t1
    cdef int first = T - 1 if reverse else 0        # the step that reads h0
    if first == lo and not reverse:
        lo += 1
    elif first == hi - 1 and reverse:
        hi -= 1
    if hi > lo:
        # dW (+)= sum_n S[n, lo-1 : hi-1]^T @ dZ[n, lo:hi]      (S[n, lo+1 : hi+1] if reverse)
        steps_tn(H, K, hi - lo, N, T, S + (lo + 1 if reverse else lo - 1) * H, H,
                 dZ + lo * <Py_ssize_t> ld_z, ld_z, beta, dW, ld_w)
        beta = 1
    if t0 <= first < t1:
        # dW (+)= h0^T (H, N) @ dZ[:, first] (N, K)
        gemm(True, False, H, K, N, 1, h0, H, dZ + first * <Py_ssize_t> ld_z, T * ld_z, beta,
             dW, ld_w)


cdef inline void steps_colsum(const floating *A, int K, int ld, int N, int T, int steps,
                              bint first, floating *out) noexcept nogil:
    """out (K,) (+)= the column sums of steps rows of every sequence from A (a step's row in
    a batch-first (N, T, ld) array); first: = instead of +=."""
    cdef Py_ssize_t n, j
    if first:
        for j in range(K):
            out[j] = 0
    for n in range(N):
        colsum_add(A + n * <Py_ssize_t> T * ld, steps, K, ld, out)


cdef inline void project_steps(const StepB *Wx, const floating *X, int I, floating *Z, int K,
                               int N, int T, int p, int block, bint reverse) noexcept nogil:
    """Z[n, t0:t1] (t1-t0, K) = X[n, t0:t1] (t1-t0, I) @ W_x (I, K) for every sequence n:
    the input projection of the block of steps a time-blocked forward pass processes from
    position p on (block positions, fewer at the end), just before the time loop reads
    them. Wx: W_x as step_gemm takes it. X (N, T, I), Z (N, T, K)."""
    cdef int q = p + block if p + block < T else T
    cdef int t0 = T - q if reverse else p, t1 = T - p if reverse else q
    cdef Py_ssize_t n
    for n in range(N):
        step_gemm(Wx, t1 - t0, X + (n * <Py_ssize_t> T + t0) * I, I, 0,
                  Z + (n * <Py_ssize_t> T + t0) * K, K)


cdef inline void steps_input_grads(const floating *dZ, int K, const floating *W_x,
                                   floating *dX, int I, int N, int T, int t0,
                                   int t1) noexcept nogil:
    """dX[n, t0:t1] (t1-t0, I) = dZ[n, t0:t1] (t1-t0, K) @ W_x^T (K, I) for every sequence
    n: the input gradients of those steps. dZ (N, T, K), W_x (I, K), dX (N, T, I)."""
    cdef Py_ssize_t n
    for n in range(N):
        gemm(False, True, t1 - t0, I, K, 1, dZ + (n * <Py_ssize_t> T + t0) * K, K, W_x, K, 0,
             dX + (n * <Py_ssize_t> T + t0) * I, I)


cdef inline void block_steps(int T, int block, int p1, bint reverse, int *p0, int *t0,
                             int *t1) noexcept nogil:
    """The block of the time-blocked backward pass that ends before processing position p1
    (positions p1-1 down to p0; p0 = p1 - block, or 0): p0 and its steps [t0, t1)."""
    p0[0] = p1 - block if p1 > block else 0
    t0[0], t1[0] = (T - p1, T - p0[0]) if reverse else (p0[0], p1)


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
