"""The GRU cell, compiled: its recurrence, its BPTT backward pass and the whole loss gradient
(NumPy twin: fastrnn/cells/gru.py, same signatures). PyTorch's "linear before reset" GRU:

    a_t = x_t W_x + b        s_t = h_{t-1} W_s + b_s          (N, 3H), gates [r, z, n]
    r = sigmoid(a_r + s_r)   z = sigmoid(a_z + s_z)   n = tanh(a_n + r * s_n)
    h_t = (h_{t-1} - n) * z + n                               h_{-1} = h0

The hot path: one input-projection GEMM for all steps and gates; per step one GEMM
h_{t-1} @ W_s into a scratch block (the reset gate multiplies its n part, so it cannot be
accumulated into a_t), then one fused C kernel (csrc/fr_gates.c) for the gates and the state
update, which keeps the activated gates and s_n = h_{t-1} W_s[:, n] + b_s[n] for the backward
pass (as oneDNN's workspace does). Backward per step: one fused kernel for the gate gradients
and two GEMMs with W_s^T; the recurrent side's gradient differs from the input side's only in
the n block (dza_n * r, stored over s_n), so every weight gradient is still a single merged
GEMM over all N*T rows. No allocation, no Python and no GIL inside the time loops. Long
sequences run time-blocked (fastrnn/_threads.py time_block): the input projection and the
weight gradients a block of steps at a time, next to the time loop, while it is in cache.

Every function trusts its inputs (fastrnn/_validate.py checked them): C-contiguous arrays of
one float dtype, consistent non-empty shapes, sizes < 2**31.

Notation (row vectors, batch-first): X (N, T, I), h0 (N, H), Hs (N, T, H), W_x (I, 3H),
W_s (H, 3H), b and b_s (3H,), A (N, T, 3H) the gate workspace, Sn (N, T, H) the stored s_n.
Step t of a batch-first array A (N, T, K) is the (N, K) matrix at A + t*K with leading
dimension T*K.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport StepB, packed_elements, step_b, step_gemm, weight_gemm
from fastrnn._head cimport Head, data, head_loss_and_grad, head_predict, head_setup, is_float32
from fastrnn._kernels cimport colsum, far_apart, prefetch_step
from fastrnn.cells._recurrence cimport (add_partials, block_steps, first_ld, first_rows, part,
                                        prev_state_gemm, project_steps, row_norms, steps_colsum,
                                        steps_input_grads, steps_prev_state_gemm, steps_tn)

from fastrnn._head import release_workspace, workspace
from fastrnn import _threads      # _threads.batch_threads: looked up per call (tests count it)
from fastrnn._threads import one_blas_thread, packed_products, serial_blas, time_block

cnp.import_array()


cdef extern from "fr_gates.h" nogil:
    void fr_gru_fwd_f32(float *A, Py_ssize_t lda, const float *b, const float *R,
                        const float *b_s, const float *h_prev, Py_ssize_t ldhp, float *Hs,
                        float *Sn, Py_ssize_t ldh, Py_ssize_t rows, Py_ssize_t H)
    void fr_gru_fwd_f64(double *A, Py_ssize_t lda, const double *b, const double *R,
                        const double *b_s, const double *h_prev, Py_ssize_t ldhp, double *Hs,
                        double *Sn, Py_ssize_t ldh, Py_ssize_t rows, Py_ssize_t H)
    void fr_gru_bwd_f32(float *A, Py_ssize_t lda, float *Sn, float *dH, Py_ssize_t ldh,
                        float *P, const float *h_prev, Py_ssize_t ldhp, Py_ssize_t rows,
                        Py_ssize_t H)
    void fr_gru_bwd_f64(double *A, Py_ssize_t lda, double *Sn, double *dH, Py_ssize_t ldh,
                        double *P, const double *h_prev, Py_ssize_t ldhp, Py_ssize_t rows,
                        Py_ssize_t H)


cdef inline void gates_forward(floating *A, Py_ssize_t lda, const floating *b,
                               const floating *R, const floating *b_s, const floating *h_prev,
                               Py_ssize_t ldhp, floating *Hs, floating *Sn, Py_ssize_t ldh,
                               Py_ssize_t rows, Py_ssize_t H) noexcept nogil:
    if floating is float:
        fr_gru_fwd_f32(A, lda, b, R, b_s, h_prev, ldhp, Hs, Sn, ldh, rows, H)
    else:
        fr_gru_fwd_f64(A, lda, b, R, b_s, h_prev, ldhp, Hs, Sn, ldh, rows, H)


cdef inline void gates_backward(floating *A, Py_ssize_t lda, floating *Sn, floating *dH,
                                Py_ssize_t ldh, floating *P, const floating *h_prev,
                                Py_ssize_t ldhp, Py_ssize_t rows, Py_ssize_t H) noexcept nogil:
    if floating is float:
        fr_gru_bwd_f32(A, lda, Sn, dH, ldh, P, h_prev, ldhp, rows, H)
    else:
        fr_gru_bwd_f64(A, lda, Sn, dH, ldh, P, h_prev, ldhp, rows, H)


# ---------------------------------------------------------------------------------------------
# The recurrence and its backward pass

cdef void recur_forward(const floating *X, const floating *h0, const floating *W_x,
                        const floating *W_s, const floating *b, const floating *b_s,
                        const floating *H_in, floating *Hs, floating *A, floating *Sn,
                        floating *R, const int64_t *lengths, const StepB *Wx, const StepB *Ws,
                        int N, int T, int I, int H, bint reverse, int block) noexcept nogil:
    """Hs (N, T, H): the states; A (N, T, 3H): the activated gates [r, z, n]; Sn (N, T, H):
    s_n of every step. R (N, 3H) is scratch. Wx, Ws: W_x (I, 3H) and W_s (H, 3H) as the
    products take them (packed, or for BLAS).

    H_in: the states the recurrence reads as h_{t-1}: Hs itself (the forward pass), or given
    states (the backward pass's recomputation of the gates, which writes its Hs to scratch).
    reverse: run backwards in time, step t reading h_{t+1} (h0 before step T-1). lengths (N,)
    or NULL: a step t >= lengths[n] is padding, where the sequence keeps its state: forwards
    the last valid one (Hs[:, T-1] is final), backwards h0 (each sequence starts at its own
    last valid step; Hs[:, 0] is final). block > 0: time-blocked, the input projection done
    block steps at a time just before the loop reaches them (long sequences: A is then read
    from cache, not from memory).
    """
    cdef int G3 = 3 * H, TH = T * H, NT = N * T
    cdef int lda = T * G3, ldp, p, t
    cdef int tn                         # the next step to process
    cdef bint far = far_apart(NT * <Py_ssize_t> G3, sizeof(floating))
    cdef Py_ssize_t n, row
    cdef const floating *hp
    if block == 0:
        # A (N*T, 3H) = X (N*T, I) @ W_x (I, 3H): the input projection of every step and gate
        step_gemm(Wx, NT, X, I, 0, A, G3)
    for p in range(T):                  # p: position in processing order, t: the step
        t = T - 1 - p if reverse else p
        if block and p % block == 0:
            # A[:, block steps] = X[:, those steps] @ W_x, per sequence
            project_steps(Wx, X, I, A, G3, N, T, p, block, reverse)
        if far and p + 1 < T:           # the next step's blocks, while this one computes
            tn = t - 1 if reverse else t + 1
            prefetch_step(A + tn * G3, N, lda, G3, True)
            prefetch_step(Sn + tn * H, N, TH, H, True)
            prefetch_step(Hs + tn * H, N, TH, H, True)
        hp, ldp = (h0, H) if p == 0 else (H_in + (t + 1 if reverse else t - 1) * H, TH)
        # R (N, 3H) = h_{t-1} (N, H) @ W_s (H, 3H)
        step_gemm(Ws, N, hp, ldp, 0, R, G3)
        # gates from A[:, t] + b and R + b_s, h_t, s_n: one fused sweep
        gates_forward(A + t * G3, lda, b, R, b_s, hp, ldp, Hs + t * H, Sn + t * H, TH, N, H)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:     # padding: keep the state
                    memcpy(Hs + n * <Py_ssize_t> TH + t * H, hp + n * <Py_ssize_t> ldp,
                           H * sizeof(floating))


cdef void recur_backward(const floating *h0, const floating *Hs, floating *A, floating *Sn,
                         floating *dH, bint full_dH, floating *dh0, floating *P,
                         const StepB *WsT_rz, const StepB *WsT_n, const int64_t *lengths,
                         double *state_norms, int N, int T, int H, bint reverse, int p0,
                         int p1) noexcept nogil:
    """Backpropagation through time (of recur_forward with the same reverse): the time loop,
    over processing positions p1-1 down to p0 (0, T: all of it; a time-blocked pass calls it
    block by block, the carry P kept in between).

    On entry A (N, T, 3H) and Sn (N, T, H) hold the gates and s_n of recur_forward, dH
    (N, T, H) dLoss/dHs from the output layer: at every step if full_dH, else only at the
    last step (dH[:, :T-1] is then scratch). On exit A holds the input side's gradients
    dza_t = dLoss/da_t, Sn the recurrent side's n block dza_n * r, dH the total dLoss/dh_t,
    and P (N, H) the carry dh * z at the first processed step (part of dLoss/dh0); dh0
    (N, H) or NULL receives it already where it is taken inside the loop (reverse with
    lengths). WsT_rz, WsT_n: W_s[:, r|z]^T (2H, H) and W_s[:, n]^T (H, H) as the per-step
    products take them. lengths: past a sequence's end every gradient is zero.
    state_norms (N, T) or NULL: receives ||dLoss/dh_t||. The weight gradients follow
    (weight_grads).
    """
    cdef int G3 = 3 * H, TH = T * H
    cdef int lda = T * G3, ldp, p, t, step = -1 if reverse else 1
    cdef Py_ssize_t n
    cdef floating beta = 1 if full_dH else 0
    cdef const floating *hp
    # with reverse and lengths, a sequence's first processed step (lengths[n] - 1) is not the
    # last one this loop visits: the carry into dh0 is taken there
    cdef bint dh0_in_loop = dh0_taken_in_loop(lengths, dh0, reverse)
    cdef int tn                         # the next step to process
    cdef bint far = far_apart(N * <Py_ssize_t> T * G3, sizeof(floating))
    if p1 == T:
        memset(P, 0, N * <Py_ssize_t> H * sizeof(floating))
    for p in range(p1 - 1, p0 - 1, -1):
        t = T - 1 - p if reverse else p
        if far and p > 0:               # the next step's blocks, while this one computes
            tn = t + 1 if reverse else t - 1
            prefetch_step(A + tn * G3, N, lda, G3, True)
            prefetch_step(Sn + tn * H, N, TH, H, True)
            prefetch_step(dH + tn * H, N, TH, H, True)
            if p > 1:                   # h before the next step
                prefetch_step(Hs + (tn - step) * H, N, TH, H, False)
        if p < T - 1:
            # dH[:, t] (N, H) (+)= dza[:, t+1, r|z] (N, 2H) @ W_s[:, r|z]^T (2H, H)
            #                     + dzs_n[:, t+1] (N, H) @ W_s[:, n]^T (H, H)
            # (step t-1's if reverse)
            step_gemm(WsT_rz, N, A + (t + step) * G3, lda, beta, dH + t * H, TH)
            step_gemm(WsT_n, N, Sn + (t + step) * H, TH, 1, dH + t * H, TH)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:     # padding: no gradient reaches or leaves this step
                    memset(dH + n * <Py_ssize_t> TH + t * H, 0, H * sizeof(floating))
                    memset(P + n * H, 0, H * sizeof(floating))
        hp, ldp = (h0, H) if p == 0 else (Hs + (t - step) * H, TH)     # h before step t
        # dh_t = dH + P (kept in dH); the gates' gradients in place; P <- dh_t * z_t
        gates_backward(A + t * G3, lda, Sn + t * H, dH + t * H, TH, P, hp, ldp, N, H)
        if dh0_in_loop:
            for n in range(N):
                if t == lengths[n] - 1:
                    memcpy(dh0 + n * H, P + n * H, H * sizeof(floating))
        if state_norms != NULL:             # dH[:, t] is the total dLoss/dh_t here
            row_norms(dH + t * H, N, H, TH, state_norms + t, T)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:
                    memset(A + n * <Py_ssize_t> lda + t * G3, 0, G3 * sizeof(floating))
                    memset(Sn + n * <Py_ssize_t> TH + t * H, 0, H * sizeof(floating))
                    memset(P + n * H, 0, H * sizeof(floating))



cdef inline bint dh0_taken_in_loop(const int64_t *lengths, const void *dh0,
                                   bint reverse) noexcept nogil:
    """Whether recur_backward takes the carry into dh0 inside its loop (reverse with
    lengths: a sequence's first processed step is lengths[n] - 1, not the last visited)."""
    return reverse and lengths != NULL and dh0 != NULL


cdef void weight_grads(const floating *X, const floating *h0, const floating *Hs,
                       floating *A, floating *Sn, floating *dW_x, floating *dW_s,
                       floating *db, floating *db_s, floating *D, int N, int T, int I, int H,
                       bint reverse, bint serial_blas) noexcept nogil:
    """The weight gradients, given dza = A (N, T, 3H) and the recurrent n block
    dzs_n = Sn (N, T, H) from recur_backward: one GEMM over all N*T rows each (the "merged"
    form). D (N, 3H) is scratch."""
    cdef int G3 = 3 * H, H2 = 2 * H, NT = N * T
    # dW_x (I, 3H) = X^T (I, N*T) @ dza (N*T, 3H)
    weight_gemm(I, G3, NT, X, I, A, G3, 0, dW_x, G3, serial_blas)
    # db (3H,) = dza.sum over all rows; db_s = dzs.sum: the same r and z blocks, then Sn's
    colsum(A, NT, G3, G3, db)
    memcpy(db_s, db, H2 * sizeof(floating))
    colsum(Sn, NT, H, H, db_s + H2)
    # dW_s[:, r|z] (H, 2H) = sum_t h_{t-1}^T (H, N) @ dza_t[:, r|z] (N, 2H), h_{-1} = h0
    prev_state_gemm(Hs, h0, A, G3, D, dW_s, G3, N, T, H, H2, reverse, serial_blas)
    # dW_s[:, n] (H, H) = sum_t h_{t-1}^T (H, N) @ dzs_n_t (N, H)
    prev_state_gemm(Hs, h0, Sn, H, D, dW_s + H2, G3, N, T, H, H, reverse, serial_blas)


cdef void block_weight_grads(const floating *X, const floating *h0, const floating *Hs,
                             const floating *A, const floating *Sn, floating *dW_x,
                             floating *dW_s, floating *db, floating *db_s, int N, int T, int I,
                             int H, int t0, int t1, bint reverse, bint first) noexcept nogil:
    """weight_grads' sums over steps t0 <= t < t1 only (added to the gradients unless first,
    the pass's first block): the time-blocked pass, while this block of dza, dzs_n is in
    cache. db_s's r and z blocks are db's, copied once the last block is in."""
    cdef int G3 = 3 * H, H2 = 2 * H
    cdef floating beta = 0 if first else 1
    # dW_x (I, 3H) (+)= sum_n X[n, t0:t1]^T (I, steps) @ dza[n, t0:t1] (steps, 3H)
    steps_tn(I, G3, t1 - t0, N, T, X + t0 * I, I, A + t0 * G3, G3, beta, dW_x, G3)
    # db (3H,) (+)= those rows' sum of dza, db_s[n] of dzs_n
    steps_colsum(A + t0 * G3, G3, G3, N, T, t1 - t0, first, db)
    steps_colsum(Sn + t0 * H, H, H, N, T, t1 - t0, first, db_s + H2)
    # dW_s[:, r|z] (H, 2H) (+)= sum over those steps of h_{t-1}^T (H, N) @ dza_t[:, r|z]
    steps_prev_state_gemm(Hs, h0, A, G3, dW_s, G3, N, T, H, H2, t0, t1, reverse, beta)
    # dW_s[:, n] (H, H) (+)= sum over those steps of h_{t-1}^T (H, N) @ dzs_n_t (N, H)
    steps_prev_state_gemm(Hs, h0, Sn, H, dW_s + H2, G3, N, T, H, H, t0, t1, reverse, beta)


# ---------------------------------------------------------------------------------------------
# Whole computations, on one bundle of pointers. The precision is picked by the type of the
# states pointer passed alongside (every other array has the same dtype).

ctypedef struct Net:
    const void *X       # (N, T, I)
    const void *h0      # (N, H)
    const void *W_x     # (I, 3H)
    const void *W_s     # (H, 3H)
    const void *b       # (3H,)
    const void *b_s     # (3H,)
    Head head           # the output layer, its targets and its gradients (fastrnn._head)
    void *A             # (N, T, 3H) gates, then the input side's gradients
    void *Sn            # (N, T, H) s_n, then the recurrent side's n-block gradients
    void *dH            # (N, T, H) dLoss/dHs, then the total dLoss/dh
    void *D             # (N, 3H) scratch
    void *R             # (N, 3H) scratch: the step's h W_s, then (N, H) the carry P
    void *Wxp           # packed W_x (prediction: batch-invariant rows), or NULL: BLAS
    void *Wp            # packed W_s (forward), or NULL: the per-step products go to BLAS
    void *WpT_rz        # packed W_s[:, r|z]^T (backward), or NULL
    void *WpT_n         # packed W_s[:, n]^T (backward), or NULL
    StepB Wx, Ws, WsT_rz, WsT_n     # the products' right operands
    const int64_t *lengths  # (N,) valid steps per sequence, or NULL (all T)
    int time_block      # steps per block of a time-blocked pass, 0: not blocked
    double *state_norms # (N, T) ||dLoss/dh[n, t]||, or NULL
    bint packed         # pack W_s for the per-step products (several rows, 1 BLAS thread)
    bint serial_blas    # BLAS runs the weight-gradient GEMMs on one thread (weight_gemm)
    bint reverse        # the recurrence runs backwards in time (see recur_forward)
    int threads         # the batch is split across this many threads (fastrnn._threads)
    void *partials      # threads > 1: (threads - 1, (I + H + 2) * 3H) the parts'
                        # [dW_x | dW_s | db | db_s]
    void *dX
    void *dh0
    void *dW_x
    void *dW_s
    void *db
    void *db_s
    int N, T, In, H     # In = I (a C macro of that name comes with complex.h)


cdef inline Py_ssize_t share_size(Net *n) noexcept nogil:
    """Elements of one thread's share of the weight gradients: one block of n.partials,
    laid out [dW_x | dW_s | db | db_s]."""
    return (<Py_ssize_t> n.In + n.H + 2) * 3 * n.H


cdef void net_forward(Net *n, const floating *H_in, floating *Hs) noexcept nogil:
    # W_s (H, 3H), packed once for the T per-step products (or left to BLAS)
    step_b(&n.Ws, <const floating *> n.W_s, 3 * n.H, n.H, 3 * n.H, False, n.Wp)
    # W_x (I, 3H) for the input projection: packed when predicting, else BLAS
    step_b(&n.Wx, <const floating *> n.W_x, 3 * n.H, n.In, 3 * n.H, False, n.Wxp)
    cdef int c
    if n.threads <= 1:
        forward_part(n, H_in, Hs, 1, 0)
    else:                               # each thread its own sequences, start to end
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            forward_part(n, H_in, Hs, n.threads, c)


cdef void forward_part(Net *n, const floating *H_in, floating *Hs, int parts,
                       int c) noexcept nogil:
    """recur_forward on part c of the batch (its sequences never meet the others)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H
    recur_forward(<const floating *> n.X + r0 * T * n.In, <const floating *> n.h0 + r0 * H,
                  <const floating *> n.W_x, <const floating *> n.W_s, <const floating *> n.b,
                  <const floating *> n.b_s, H_in + r0 * T * H, Hs + r0 * T * H,
                  <floating *> n.A + r0 * T * 3 * H, <floating *> n.Sn + r0 * T * H,
                  <floating *> n.R + r0 * 3 * H, n.lengths + r0 if n.lengths != NULL else NULL,
                  &n.Wx, &n.Ws, r1 - r0, n.T, n.In, n.H, n.reverse, n.time_block)


cdef void net_backward(Net *n, const floating *Hs, bint full_dH) noexcept nogil:
    cdef const floating *W_s = <const floating *> n.W_s
    cdef int c, H = n.H, G3 = 3 * n.H, H2 = 2 * n.H
    cdef floating *D = <floating *> n.D
    # W_s[:, r|z]^T (2H, H) and W_s[:, n]^T (H, H), packed from W_s (H, 3H) once
    step_b(&n.WsT_rz, W_s, G3, H2, H, True, n.WpT_rz)
    step_b(&n.WsT_n, W_s + H2, G3, H, H, True, n.WpT_n)
    if n.threads <= 1:
        backward_part(n, Hs, full_dH, 1, 0)
    else:
        # each thread its own sequences: their time loop, dX rows and weight gradients
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            backward_part(n, Hs, full_dH, n.threads, c)
        sum_partials(n, <floating *> n.dW_x)   # the other threads' shares
    if n.dh0 != NULL:
        # dh0 (N, H) = P + dza[:, first, r|z] (N, 2H) @ W_s[:, r|z]^T
        #                + dzs_n[:, first] (N, H) @ W_s[:, n]^T,
        # first: each sequence's first processed step (its rows gathered into D's blocks
        # when they differ by sequence)
        if not dh0_taken_in_loop(n.lengths, n.dh0, n.reverse):
            memcpy(n.dh0, n.R, n.N * <Py_ssize_t> H * sizeof(floating))
        gemm(False, True, n.N, H, H2, 1,
             first_rows(<floating *> n.A, G3, G3, D, n.lengths, n.N, n.T, n.reverse),
             first_ld(G3, G3, n.T, n.lengths, n.reverse), W_s, G3, 1, <floating *> n.dh0, H)
        gemm(False, True, n.N, H, H, 1,
             first_rows(<floating *> n.Sn, H, G3, D + H2, n.lengths, n.N, n.T, n.reverse),
             first_ld(H, G3, n.T, n.lengths, n.reverse), W_s + H2, G3, 1,
             <floating *> n.dh0, H)


cdef void sum_partials(Net *n, floating *dW_x) noexcept nogil:
    """dW_x, dW_s, db, db_s += the other parts' shares (n.partials)."""
    cdef Py_ssize_t I = n.In, H = n.H, G3 = 3 * n.H, size = share_size(n)
    cdef const floating *P = <const floating *> n.partials
    add_partials(dW_x, P, n.threads - 1, I * G3, size)
    add_partials(<floating *> n.dW_s, P + I * G3, n.threads - 1, H * G3, size)
    add_partials(<floating *> n.db, P + (I + H) * G3, n.threads - 1, G3, size)
    add_partials(<floating *> n.db_s, P + (I + H + 1) * G3, n.threads - 1, G3, size)


cdef void backward_part(Net *n, const floating *Hs, bint full_dH, int parts,
                        int c) noexcept nogil:
    """recur_backward on part c of the batch, then its rows of dX and its share of the
    weight gradients (part 0 into the gradients, part c > 0 into partials block c-1)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H, I = n.In, G3 = 3 * n.H
    cdef floating *A = <floating *> n.A + r0 * T * G3
    cdef floating *Sn = <floating *> n.Sn + r0 * T * H
    cdef floating *dW_x = <floating *> n.dW_x
    cdef floating *dW_s = <floating *> n.dW_s
    cdef floating *db = <floating *> n.db
    cdef floating *db_s = <floating *> n.db_s
    if c > 0:                   # [dW_x | dW_s | db | db_s] of part c, summed in afterwards
        dW_x = <floating *> n.partials + (c - 1) * share_size(n)
        dW_s, db, db_s = dW_x + I * G3, dW_x + (I + H) * G3, dW_x + (I + H + 1) * G3
    cdef const floating *X = <const floating *> n.X + r0 * T * I
    cdef const floating *h0 = <const floating *> n.h0 + r0 * H
    cdef floating *dX = <floating *> n.dX + r0 * T * I if n.dX != NULL else NULL
    cdef int rows = r1 - r0, p0 = 0, p1 = n.T, t0, t1
    if n.time_block == 0:               # the whole time loop, then merged GEMMs over N*T rows
        gru_backward_steps(n, Hs, full_dH, r0, r1, 0, p1)
        if dX != NULL:
            # dX (rows*T, I) = dza (rows*T, 3H) @ W_x^T (3H, I)
            gemm(False, True, rows * n.T, n.In, G3, 1, A, G3, <const floating *> n.W_x, G3,
                 0, dX, n.In)
        weight_grads(X, h0, Hs + r0 * T * H, A, Sn, dW_x, dW_s, db, db_s,
                     <floating *> n.D + r0 * G3, rows, n.T, n.In, n.H, n.reverse,
                     n.serial_blas)
        return
    while p1 > 0:                       # time-blocked: each block's gradients while in cache
        block_steps(n.T, n.time_block, p1, n.reverse, &p0, &t0, &t1)
        gru_backward_steps(n, Hs, full_dH, r0, r1, p0, p1)
        if dX != NULL:
            steps_input_grads(A, G3, <const floating *> n.W_x, dX, n.In, rows, n.T, t0, t1)
        block_weight_grads(X, h0, Hs + r0 * T * H, A, Sn, dW_x, dW_s, db, db_s, rows, n.T,
                           n.In, n.H, t0, t1, n.reverse, p1 == n.T)
        p1 = p0
    memcpy(db_s, db, 2 * H * sizeof(floating))      # the r and z blocks of db_s are db's


cdef inline void gru_backward_steps(Net *n, const floating *Hs, bint full_dH, Py_ssize_t r0,
                                    Py_ssize_t r1, int p0, int p1) noexcept nogil:
    """recur_backward over processing positions [p0, p1) of sequences [r0, r1)."""
    cdef Py_ssize_t T = n.T, H = n.H
    recur_backward(<const floating *> n.h0 + r0 * H, Hs + r0 * T * H,
                   <floating *> n.A + r0 * T * 3 * H, <floating *> n.Sn + r0 * T * H,
                   <floating *> n.dH + r0 * T * H, full_dH,
                   <floating *> n.dh0 + r0 * H if n.dh0 != NULL else NULL,
                   <floating *> n.R + r0 * H, &n.WsT_rz, &n.WsT_n,
                   n.lengths + r0 if n.lengths != NULL else NULL,
                   n.state_norms + r0 * T if n.state_norms != NULL else NULL,
                   r1 - r0, n.T, n.H, n.reverse, p0, p1)


cdef double net_loss_and_grad(Net *n, floating *Hs) noexcept nogil:
    net_forward(n, Hs, Hs)
    cdef double loss = head_loss_and_grad(&n.head, <const floating *> Hs, <floating *> n.dH,
                                          <floating *> n.D, n.lengths, n.N, n.T, n.H)
    net_backward(n, Hs, not n.head.last or n.lengths != NULL)
    return loss


cdef Net make_net(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                  cnp.ndarray b, cnp.ndarray b_s, lengths):
    """The Net for these arrays; lengths: None or a validated int64 (N,) array."""
    cdef Net n
    memset(&n, 0, sizeof(Net))
    n.X, n.h0 = data(X), data(h0)
    n.W_x, n.W_s, n.b, n.b_s = data(W_x), data(W_s), data(b), data(b_s)
    n.N, n.T, n.In, n.H = X.shape[0], X.shape[1], X.shape[2], W_s.shape[0]
    if lengths is not None:
        n.lengths = <const int64_t *> data(lengths)
    n.threads = _threads.batch_threads(n.N, <double> n.N * n.T * 3 * n.H * (n.In + n.H))
    n.serial_blas = serial_blas(n.threads)
    # split, or BLAS on one thread: every per-step product on the packed kernel
    n.packed = packed_products(n.N, 3, n.H, n.serial_blas)
    n.time_block = time_block(n.N, n.T, 3, n.H, X.itemsize, n.threads, n.serial_blas)
    return n


cdef tuple packed_shapes(Net *n, cnp.ndarray X):
    """Shapes of the packed W_s, W_s[:, r|z]^T and W_s[:, n]^T buffers ((1,) each when BLAS
    takes the products)."""
    if not n.packed:
        return (1,), (1,), (1,)
    cdef bint f32 = is_float32(X)
    cdef int H = n.H
    return ((packed_elements(H, 3 * H, f32),), (packed_elements(2 * H, H, f32),),
            (packed_elements(H, H, f32),))


cdef void use_packed(Net *n, Wp, WpT_rz, WpT_n):
    """Point n at the packed-operand buffers (or at nothing, when BLAS takes the products)."""
    if n.packed:
        n.Wp, n.WpT_rz, n.WpT_n = data(Wp), data(WpT_rz), data(WpT_n)
    else:
        n.Wp = n.WpT_rz = n.WpT_n = NULL


cdef object use_partials(Net *n, dt):
    """A buffer for the weight-gradient shares of a split call's other threads, with n
    pointing at it (None when the call is not split)."""
    if n.threads <= 1:
        return None
    partials = np.empty((n.threads - 1) * share_size(n), dt)
    n.partials = data(partials)
    return partials


cdef cnp.ndarray packed_input_weight(Net *n, cnp.ndarray X):
    """A buffer for W_x packed, with n pointing at it: prediction's input projection runs
    on the packed kernel, so that every row is computed alike whatever the batch."""
    Wxp = np.empty(packed_elements(n.In, 3 * n.H, is_float32(X)), X.dtype)
    n.Wxp = data(Wxp)
    return Wxp


# ---------------------------------------------------------------------------------------------
# Python-facing functions: same signatures as fastrnn.cells.gru. Arguments are validated
# (fastrnn._validate): C-contiguous ndarrays of one float dtype, consistent shapes.

def forward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
            cnp.ndarray b_s, lengths=None, bint reverse=False):
    """Hs (N, T, H): the states of every step; reverse: run backwards in time (see
    recur_forward)."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    n.reverse = reverse
    return run_forward(&n, X, True)[0]


def forward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                  cnp.ndarray b, cnp.ndarray b_s, lengths, bint reverse):
    """((Hs,), stash): the states (N, T, H) and what backward_train needs besides them (the
    activated gates A (N, T, 3H) and s_n (N, T, H)). One layer of a deep or bidirectional
    network (fastrnn/stack.py); reverse: run backwards in time."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1             # training: GEMV at N = 1, as loss_and_grad
    Hs, A, Sn = run_forward(&n, X, False)
    return (Hs,), (A, Sn)


cdef tuple run_forward(Net *n, cnp.ndarray X, bint predicting):
    """(Hs, A, Sn): the forward pass of n into new arrays; predicting: W_x packed as well,
    so that every row is computed alike whatever the batch."""
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    cdef cnp.ndarray Hs = np.empty((N, T, H), dt)
    A, Sn, R = np.empty((N, T, 3 * H), dt), np.empty((N, T, H), dt), np.empty((N, 3 * H), dt)
    Wp = np.empty(packed_shapes(n, X)[0], dt)
    n.A, n.Sn, n.R = data(A), data(Sn), data(R)
    use_packed(n, Wp, Wp, Wp)
    Wxp = packed_input_weight(n, X) if predicting or n.time_block else None
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(n, <const float *> Hp, <float *> Hp)
        else:
            with nogil:
                net_forward(n, <const double *> Hp, <double *> Hp)
    return Hs, A, Sn


def backward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                   cnp.ndarray b, cnp.ndarray b_s, tuple states, tuple stash,
                   cnp.ndarray dHs, lengths, bint reverse, bint input_grads):
    """BPTT gradients {"W_x", "W_s", "b", "b_s"} (and "X", "h0" if input_grads) of the
    layer that forward_train ran, given dHs = dLoss/dHs (N, T, H) from outside the
    recurrence (the output layer or the layer above). dHs and the stash are overwritten.
    Zero at padding."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    cdef cnp.ndarray Hs = states[0]
    cdef cnp.ndarray A = stash[0]
    cdef cnp.ndarray Sn = stash[1]
    grads = {"W_x": np.empty((n.In, 3 * H), dt), "W_s": np.empty((H, 3 * H), dt),
             "b": np.empty(3 * H, dt), "b_s": np.empty(3 * H, dt)}
    D, R = np.empty((N, 3 * H), dt), np.empty((N, 3 * H), dt)
    Wp, WpT_rz, WpT_n = (np.empty(shape, dt) for shape in packed_shapes(&n, X))
    n.A, n.Sn, n.R, n.dH, n.D = data(A), data(Sn), data(R), data(dHs), data(D)
    use_packed(&n, Wp, WpT_rz, WpT_n)
    n.dW_x, n.dW_s = data(grads["W_x"]), data(grads["W_s"])
    n.db, n.db_s = data(grads["b"]), data(grads["b_s"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"], grads["h0"] = np.empty_like(X), np.empty((N, H), dt)
        n.dX, n.dh0 = data(grads["X"]), data(grads["h0"])
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_backward(&n, <const float *> Hp, True)
        else:
            with nogil:
                net_backward(&n, <const double *> Hp, True)
    return grads


def predict(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
            cnp.ndarray b_s, cnp.ndarray W_y, cnp.ndarray b_y, str output, lengths=None):
    """(Y (N, T, O), Hs (N, T, H)): outputs (softmax probabilities if output is "softmax")
    and the states."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    keep = head_setup(&n.head, None, W_y, b_y, output, "sequence", None, n.N, n.T, None)
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    cdef cnp.ndarray Hs = np.empty((N, T, H), dt)
    A, Sn, R = np.empty((N, T, 3 * H), dt), np.empty((N, T, H), dt), np.empty((N, 3 * H), dt)
    Y = np.empty((N, T, n.head.O), dt)
    Wp = np.empty(packed_shapes(&n, X)[0], dt)
    n.A, n.Sn, n.R, n.head.Z = data(A), data(Sn), data(R), data(Y)
    use_packed(&n, Wp, Wp, Wp)
    Wxp = packed_input_weight(&n, X)
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(&n, <const float *> Hp, <float *> Hp)
                head_predict(&n.head, <const float *> Hp, N * T, H)
        else:
            with nogil:
                net_forward(&n, <const double *> Hp, <double *> Hp)
                head_predict(&n.head, <const double *> Hp, N * T, H)
    return Y, Hs


def backward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
             cnp.ndarray b_s, cnp.ndarray Hs, cnp.ndarray dHs, lengths=None):
    """BPTT gradients {"X", "h0", "W_x", "W_s", "b", "b_s"} given the states Hs of forward()
    and dHs (N, T, H) = dLoss/dHs from outside the recurrence. The gates are recomputed from
    X and the given states; past a sequence's end dHs is ignored."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    grads = {"X": np.empty_like(X), "h0": np.empty((N, H), dt),
             "W_x": np.empty((n.In, 3 * H), dt), "W_s": np.empty((H, 3 * H), dt),
             "b": np.empty(3 * H, dt), "b_s": np.empty(3 * H, dt)}
    A, Sn, R = np.empty((N, T, 3 * H), dt), np.empty((N, T, H), dt), np.empty((N, 3 * H), dt)
    scratch = np.empty((N, T, H), dt)                   # the recomputation's own states
    dH = dHs.copy()                                     # becomes the total dLoss/dh
    D = np.empty((N, 3 * H), dt)
    Wp, WpT_rz, WpT_n = (np.empty(shape, dt) for shape in packed_shapes(&n, X))
    n.A, n.Sn, n.R, n.dH, n.D = data(A), data(Sn), data(R), data(dH), data(D)
    use_packed(&n, Wp, WpT_rz, WpT_n)
    Wxp = packed_input_weight(&n, X) if n.time_block else None
    n.dX, n.dh0, n.dW_x = data(grads["X"]), data(grads["h0"]), data(grads["W_x"])
    n.dW_s, n.db, n.db_s = data(grads["W_s"]), data(grads["b"]), data(grads["b_s"])
    partials = use_partials(&n, dt)
    cdef void *Hp = data(Hs)
    cdef void *Sp = data(scratch)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(&n, <const float *> Hp, <float *> Sp)      # the gates, from Hs
                net_backward(&n, <const float *> Hp, True)
        else:
            with nogil:
                net_forward(&n, <const double *> Hp, <double *> Sp)
                net_backward(&n, <const double *> Hp, True)
    return grads


def loss_and_grad(cnp.ndarray X, cnp.ndarray Y, cnp.ndarray h0, cnp.ndarray W_x,
                  cnp.ndarray W_s, cnp.ndarray b, cnp.ndarray b_s, cnp.ndarray W_y,
                  cnp.ndarray b_y, str output, str target, bint input_grads, lengths=None,
                  bint return_state=False, bint state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss and its gradient for every parameter, in one pass
    (weighted by sequence with sample_weight, a validated float64 (N,) array).

    Y: real targets (N, T, O) / (N, O) for output "linear", int64 labels (N, T) / (N,) for
    "softmax"; target "sequence" scores every step, "last" only the last one. grads has
    "W_x", "W_s", "b", "b_s", "W_y", "b_y", and "X", "h0" too if input_grads. With
    return_state, returns (loss, grads, h_last). With state_grad_norms,
    grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dh[n, t]||.
    """
    cdef Net n = make_net(X, h0, W_x, W_s, b, b_s, lengths)
    # A batch of one trains on GEMV: no packed copies of W_s (at N = 1 they would double the
    # call's memory), and training needs no batch invariance (prediction keeps it)
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    grads = {"W_x": np.empty((n.In, 3 * H), dt), "W_s": np.empty((H, 3 * H), dt),
             "b": np.empty(3 * H, dt), "b_s": np.empty(3 * H, dt)}
    keep = head_setup(&n.head, Y, W_y, b_y, output, target, lengths, N, T, grads,
                      sample_weight)
    cdef cnp.ndarray Hs
    Hs, A, Sn, dH, Zh, D, R, Wp, WpT_rz, WpT_n = workspace(dt, (
        (N, T, H), (N, T, 3 * H), (N, T, H), (N, T, H), (N if n.head.last else N * T, n.head.O),
        (N, 3 * H), (N, 3 * H)) + packed_shapes(&n, X))
    n.A, n.Sn, n.dH, n.head.Z = data(A), data(Sn), data(dH), data(Zh)
    n.D, n.R = data(D), data(R)
    use_packed(&n, Wp, WpT_rz, WpT_n)
    Wxp = packed_input_weight(&n, X) if n.time_block else None
    n.dW_x, n.dW_s = data(grads["W_x"]), data(grads["W_s"])
    n.db, n.db_s = data(grads["b"]), data(grads["b_s"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"], grads["h0"] = np.empty_like(X), np.empty((N, H), dt)
        n.dX, n.dh0 = data(grads["X"]), data(grads["h0"])
    if state_grad_norms:
        grads["state_grad_norms"] = np.empty((N, T), np.float64)
        n.state_norms = <double *> data(grads["state_grad_norms"])
    cdef void *Hp = data(Hs)
    cdef double loss
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                loss = net_loss_and_grad(&n, <float *> Hp)
        else:
            with nogil:
                loss = net_loss_and_grad(&n, <double *> Hp)
    if return_state:
        return loss, grads, Hs[:, T - 1].copy()
    return loss, grads
