"""The LSTM cell, compiled: its recurrence, its BPTT backward pass and the whole loss
gradient (NumPy twin: fastrnn/cells/lstm.py, same signatures).

    z_t = x_t W_x + h_{t-1} W_s + b          (N, 4H), gates [i, f, g, o] (PyTorch's order)
    i, f, o = sigmoid(z_i, z_f, z_o)   g = tanh(z_g)
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)       h_{-1} = h0, c_{-1} = c0

(forget_gate=False: f = 1, the 1997 cell.) The hot path, as in oneDNN: one input-projection
GEMM for all steps and gates; per step one GEMM h_{t-1} @ W_s accumulated into that step's
gate block, then one fused C kernel (csrc/fr_gates.c) that applies every gate non-linearity,
updates c and h, and leaves the activated gates in place for the backward pass. Backward per
step: one GEMM dZ_{t+1} @ W_s^T and one fused kernel turning dh_t (and the carried dc) into
the gate gradients dZ_t in place; the weight gradients are then single GEMMs over all N*T
rows. No allocation, no Python and no GIL inside the time loops. Long sequences run
time-blocked (fastrnn/_threads.py time_block): the input projection and the weight gradients
a block of steps at a time, next to the time loop, while it is in cache.

Every function trusts its inputs (fastrnn/_validate.py checked them): C-contiguous arrays of
one float dtype, consistent non-empty shapes, sizes < 2**31.

Notation (row vectors, batch-first): X (N, T, I), h0 and c0 (N, H), Hs and Cs (N, T, H),
W_x (I, 4H), W_s (H, 4H), b (4H,), Z (N, T, 4H) the gate workspace. Step t of a batch-first
array A (N, T, K) is the (N, K) matrix at A + t*K with leading dimension T*K.
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
    void fr_lstm_fwd_f32(float *Z, Py_ssize_t ldz, const float *b, const float *c_prev,
                         Py_ssize_t ldcp, float *C, float *Hs, Py_ssize_t ldh, Py_ssize_t rows,
                         Py_ssize_t H, int forget_gate)
    void fr_lstm_fwd_f64(double *Z, Py_ssize_t ldz, const double *b, const double *c_prev,
                         Py_ssize_t ldcp, double *C, double *Hs, Py_ssize_t ldh,
                         Py_ssize_t rows, Py_ssize_t H, int forget_gate)
    void fr_lstm_bwd_f32(float *Z, Py_ssize_t ldz, const float *dH, Py_ssize_t lddh, float *dc,
                         const float *c_prev, Py_ssize_t ldcp, const float *C, Py_ssize_t ldc,
                         double *dc_norms, Py_ssize_t norm_stride, Py_ssize_t rows,
                         Py_ssize_t H, int forget_gate)
    void fr_lstm_bwd_f64(double *Z, Py_ssize_t ldz, const double *dH, Py_ssize_t lddh,
                         double *dc, const double *c_prev, Py_ssize_t ldcp, const double *C,
                         Py_ssize_t ldc, double *dc_norms, Py_ssize_t norm_stride,
                         Py_ssize_t rows, Py_ssize_t H, int forget_gate)


cdef inline void gates_forward(floating *Z, Py_ssize_t ldz, const floating *b,
                               const floating *c_prev, Py_ssize_t ldcp, floating *C,
                               floating *Hs, Py_ssize_t ldh, Py_ssize_t rows, Py_ssize_t H,
                               bint forget_gate) noexcept nogil:
    if floating is float:
        fr_lstm_fwd_f32(Z, ldz, b, c_prev, ldcp, C, Hs, ldh, rows, H, forget_gate)
    else:
        fr_lstm_fwd_f64(Z, ldz, b, c_prev, ldcp, C, Hs, ldh, rows, H, forget_gate)


cdef inline void gates_backward(floating *Z, Py_ssize_t ldz, const floating *dH,
                                Py_ssize_t lddh, floating *dc, const floating *c_prev,
                                Py_ssize_t ldcp, const floating *C, Py_ssize_t ldc,
                                double *dc_norms, Py_ssize_t norm_stride, Py_ssize_t rows,
                                Py_ssize_t H, bint forget_gate) noexcept nogil:
    if floating is float:
        fr_lstm_bwd_f32(Z, ldz, dH, lddh, dc, c_prev, ldcp, C, ldc, dc_norms, norm_stride,
                        rows, H, forget_gate)
    else:
        fr_lstm_bwd_f64(Z, ldz, dH, lddh, dc, c_prev, ldcp, C, ldc, dc_norms, norm_stride,
                        rows, H, forget_gate)


# ---------------------------------------------------------------------------------------------
# The recurrence and its backward pass

cdef void recur_forward(const floating *X, const floating *h0, const floating *c0,
                        const floating *W_x, const floating *W_s, const floating *b,
                        floating *Hs, floating *Cs, floating *Z, const int64_t *lengths,
                        const StepB *Wx, const StepB *Ws, bint project, int N, int T,
                        int I, int H, bint forget_gate, bint reverse, int block) noexcept nogil:
    """Hs, Cs (N, T, H): the states; Z (N, T, 4H): the activated gates of every step.
    Wx, Ws: W_x (I, 4H) and W_s (H, 4H) as the products take them (packed, or for BLAS).

    project=False: Z already holds X @ W_x (the backward pass's recomputation passes the
    states it was given and throws the new ones away). reverse: run backwards in time, step
    t reading the states of step t+1 (h0, c0 before step T-1). lengths (N,) or NULL: a step
    t >= lengths[n] is padding, where the sequence keeps its states (h and c): forwards the
    last valid ones (so Hs[:, T-1], Cs[:, T-1] are its final states), backwards h0 and c0
    (each sequence starts at its own last valid step; Hs[:, 0], Cs[:, 0] are final).
    block > 0: time-blocked, the input projection done block steps at a time just before
    the loop reaches them (long sequences: Z is then read from cache, not from memory).
    """
    cdef int G4 = 4 * H, TH = T * H, NT = N * T
    cdef int ldz = T * G4, ldp, p, t
    cdef Py_ssize_t n, row
    cdef const floating *hp
    cdef const floating *cp
    cdef int tn                         # the next step to process
    cdef bint far = far_apart(NT * <Py_ssize_t> G4, sizeof(floating))
    if project and block == 0:
        # Z (N*T, 4H) = X (N*T, I) @ W_x (I, 4H): the input projection of every step and gate
        step_gemm(Wx, NT, X, I, 0, Z, G4)
    for p in range(T):                  # p: position in processing order, t: the step
        t = T - 1 - p if reverse else p
        if project and block and p % block == 0:
            # Z[:, block steps] = X[:, those steps] @ W_x, per sequence
            project_steps(Wx, X, I, Z, G4, N, T, p, block, reverse)
        if far and p + 1 < T:           # the next step's blocks, while this one computes
            tn = t - 1 if reverse else t + 1
            prefetch_step(Z + tn * G4, N, ldz, G4, True)
            prefetch_step(Cs + tn * H, N, TH, H, True)
            prefetch_step(Hs + tn * H, N, TH, H, True)
        if p == 0:
            hp, cp, ldp = h0, c0, H
        else:
            row = (t + 1 if reverse else t - 1) * H
            hp, cp, ldp = Hs + row, Cs + row, TH
        # Z[:, t] (N, 4H) += h_prev (N, H) @ W_s (H, 4H)
        step_gemm(Ws, N, hp, ldp, 1, Z + t * G4, ldz)
        # gates = act(Z[:, t] + b) in place; c_t, h_t: one fused sweep
        gates_forward(Z + t * G4, ldz, b, cp, ldp, Cs + t * H, Hs + t * H, TH, N, H,
                      forget_gate)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:     # padding: keep h and c
                    row = n * <Py_ssize_t> TH + t * H
                    memcpy(Hs + row, hp + n * <Py_ssize_t> ldp, H * sizeof(floating))
                    memcpy(Cs + row, cp + n * <Py_ssize_t> ldp, H * sizeof(floating))


cdef void recur_backward(const floating *h0, const floating *c0, const floating *Hs,
                         const floating *Cs, floating *Z, floating *dH, bint full_dH,
                         const floating *dC, floating *dc0, floating *dc, const StepB *WsT,
                         const int64_t *lengths, double *state_norms, double *cell_norms,
                         int N, int T, int H, bint forget_gate, bint reverse, int p0,
                         int p1) noexcept nogil:
    """Backpropagation through time (of recur_forward with the same reverse): the time loop,
    over processing positions p1-1 down to p0 (0, T: all of it; a time-blocked pass calls it
    block by block, the carry dc kept in between).

    On entry Z (N, T, 4H) holds the activated gates of recur_forward, dH (N, T, H)
    dLoss/dHs from the output layer: at every step if full_dH, else only at the last step
    (dH[:, :T-1] is then scratch); dC (N, T, H) dLoss/dCs from outside, or NULL (zeros).
    On exit Z holds dZ_t = dLoss/dz_t, dH the total dLoss/dh_t and dc (N, H) the carry
    dLoss/dc at the first processed step times f there (what reaches c0); dc0 (N, H) or
    NULL receives it already where it is taken inside the loop (reverse with lengths). WsT:
    W_s^T (4H, H) as the per-step products take it (packed, or for BLAS).
    lengths: past a sequence's end dZ, dh and dc are zero (nothing there is scored).
    state_norms, cell_norms (N, T) or NULL: receive ||dLoss/dh_t||, ||dLoss/dc_t||.
    The weight gradients follow (weight_grads).
    """
    cdef int G4 = 4 * H, TH = T * H
    cdef int ldz = T * G4, ldp, p, t, step = -1 if reverse else 1
    cdef Py_ssize_t n, j, row
    cdef floating beta = 1 if full_dH else 0
    cdef const floating *cp
    # with reverse and lengths, a sequence's first processed step (lengths[n] - 1) is not the
    # last one this loop visits: dc0 is taken there
    cdef bint dc0_in_loop = dc0_taken_in_loop(lengths, dc0, reverse)
    cdef int tn                         # the next step to process
    cdef bint far = far_apart(N * <Py_ssize_t> T * G4, sizeof(floating))
    if p1 == T:
        memset(dc, 0, N * <Py_ssize_t> H * sizeof(floating))
    for p in range(p1 - 1, p0 - 1, -1):
        t = T - 1 - p if reverse else p
        if far and p > 0:               # the next step's blocks, while this one computes
            tn = t + 1 if reverse else t - 1
            prefetch_step(Z + tn * G4, N, ldz, G4, True)
            prefetch_step(dH + tn * H, N, TH, H, True)
            if p > 1:                   # c before the next step
                prefetch_step(Cs + (tn - step) * H, N, TH, H, False)
        if p < T - 1:
            # dH[:, t] (N, H) (+)= dZ[:, t+1] (N, 4H) @ W_s^T (4H, H)      (dZ[:, t-1] if reverse)
            step_gemm(WsT, N, Z + (t + step) * G4, ldz, beta, dH + t * H, TH)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:     # padding: no gradient reaches or leaves this step
                    memset(dH + n * <Py_ssize_t> TH + t * H, 0, H * sizeof(floating))
                    memset(dc + n * H, 0, H * sizeof(floating))
        if dC != NULL:
            # dc (N, H) += dC[:, t]: the gradient reaching c_t from outside
            for n in range(N):
                if lengths == NULL or t < lengths[n]:
                    row = n * <Py_ssize_t> TH + t * H
                    for j in range(H):
                        dc[n * H + j] += dC[row + j]
        if state_norms != NULL:             # dH[:, t] is the total dLoss/dh_t here
            row_norms(dH + t * H, N, H, TH, state_norms + t, T)
        cp, ldp = (c0, H) if p == 0 else (Cs + (t - step) * H, TH)   # c before step t
        # dZ[:, t] from the gates, dh_t and dc_t (in place); dc <- dc_t * f_t
        gates_backward(Z + t * G4, ldz, dH + t * H, TH, dc, cp, ldp, Cs + t * H, TH,
                       cell_norms + t if cell_norms != NULL else NULL, T, N, H, forget_gate)
        if dc0_in_loop:
            for n in range(N):
                if t == lengths[n] - 1:
                    memcpy(dc0 + n * H, dc + n * H, H * sizeof(floating))
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:
                    memset(Z + n * <Py_ssize_t> ldz + t * G4, 0, G4 * sizeof(floating))
                    memset(dc + n * H, 0, H * sizeof(floating))


cdef inline bint dc0_taken_in_loop(const int64_t *lengths, const void *dc0,
                                   bint reverse) noexcept nogil:
    """Whether recur_backward takes dc0 inside its loop (reverse with lengths: a sequence's
    first processed step is lengths[n] - 1, not the last step the loop visits)."""
    return reverse and lengths != NULL and dc0 != NULL


cdef void weight_grads(const floating *X, const floating *h0, const floating *Hs, floating *Z,
                       floating *dW_x, floating *dW_s, floating *db, floating *D, int N, int T,
                       int I, int H, bint reverse, bint serial_blas) noexcept nogil:
    """The weight gradients, given dZ = Z (N, T, 4H) from recur_backward: one GEMM over all
    N*T rows each (the "merged" form). D (N, 4H) is scratch."""
    cdef int G4 = 4 * H, NT = N * T
    # dW_x (I, 4H) = X^T (I, N*T) @ dZ (N*T, 4H)
    weight_gemm(I, G4, NT, X, I, Z, G4, 0, dW_x, G4, serial_blas)
    # db (4H,) = dZ.sum over all rows
    colsum(Z, NT, G4, G4, db)
    # dW_s (H, 4H) = sum_t h_{t-1}^T (H, N) @ dZ_t (N, 4H), h_{-1} = h0: one GEMM
    prev_state_gemm(Hs, h0, Z, G4, D, dW_s, G4, N, T, H, G4, reverse, serial_blas)


cdef void block_weight_grads(const floating *X, const floating *h0, const floating *Hs,
                             const floating *Z, floating *dW_x, floating *dW_s, floating *db,
                             int N, int T, int I, int H, int t0, int t1, bint reverse,
                             bint first) noexcept nogil:
    """weight_grads' sums over steps t0 <= t < t1 only (added to the gradients unless first,
    the pass's first block): the time-blocked pass, while this block of dZ is in cache."""
    cdef int G4 = 4 * H
    cdef floating beta = 0 if first else 1
    # dW_x (I, 4H) (+)= sum_n X[n, t0:t1]^T (I, steps) @ dZ[n, t0:t1] (steps, 4H)
    steps_tn(I, G4, t1 - t0, N, T, X + t0 * I, I, Z + t0 * G4, G4, beta, dW_x, G4)
    # db (4H,) (+)= those rows' sum
    steps_colsum(Z + t0 * G4, G4, G4, N, T, t1 - t0, first, db)
    # dW_s (H, 4H) (+)= sum over those steps of h_{t-1}^T (H, N) @ dZ_t (N, 4H)
    steps_prev_state_gemm(Hs, h0, Z, G4, dW_s, G4, N, T, H, G4, t0, t1, reverse, beta)


# ---------------------------------------------------------------------------------------------
# Whole computations, on one bundle of pointers. The precision is picked by the type of the
# states pointer passed alongside (every other array has the same dtype).

ctypedef struct Net:
    const void *X       # (N, T, I)
    const void *h0      # (N, H)
    const void *c0      # (N, H)
    const void *W_x     # (I, 4H)
    const void *W_s     # (H, 4H)
    const void *b       # (4H,)
    Head head           # the output layer, its targets and its gradients (fastrnn._head)
    void *Cs            # (N, T, H) cell states
    void *Z             # (N, T, 4H) gates, then their gradients
    void *dH            # (N, T, H) dLoss/dHs, then the total dLoss/dh
    const void *dC      # (N, T, H) dLoss/dCs from outside, or NULL
    void *D             # (N, 4H) scratch
    void *dc            # (N, H) scratch: the carried dLoss/dc
    void *Wxp           # packed W_x (prediction: batch-invariant rows), or NULL: BLAS
    void *Wp            # packed W_s (forward), or NULL: the per-step products go to BLAS
    void *WpT           # packed W_s^T (backward), or NULL
    StepB Wx, Ws, WsT   # the products' right operands (set up by each pass)
    const int64_t *lengths  # (N,) valid steps per sequence, or NULL (all T)
    int time_block      # steps per block of a time-blocked pass, 0: not blocked
    double *state_norms # (N, T) ||dLoss/dh[n, t]||, or NULL
    double *cell_norms  # (N, T) ||dLoss/dc[n, t]||, or NULL
    bint packed         # pack W_s for the per-step products (several rows, 1 BLAS thread)
    bint serial_blas    # BLAS runs the weight-gradient GEMMs on one thread (weight_gemm)
    bint reverse        # the recurrence runs backwards in time (see recur_forward)
    int threads         # the batch is split across this many threads (fastrnn._threads)
    void *partials      # threads > 1: (threads - 1, (I + H + 1) * 4H) the parts'
                        # [dW_x | dW_s | db]
    void *dX
    void *dh0
    void *dc0
    void *dW_x
    void *dW_s
    void *db
    int N, T, In, H     # In = I (a C macro of that name comes with complex.h)
    bint forget_gate


cdef inline Py_ssize_t share_size(Net *n) noexcept nogil:
    """Elements of one thread's share of the weight gradients: one block of n.partials,
    laid out [dW_x | dW_s | db]."""
    return (<Py_ssize_t> n.In + n.H + 1) * 4 * n.H


cdef void net_forward(Net *n, floating *Hs, bint project) noexcept nogil:
    # W_s (H, 4H), packed once for the T per-step products (or left to BLAS)
    step_b(&n.Ws, <const floating *> n.W_s, 4 * n.H, n.H, 4 * n.H, False, n.Wp)
    # W_x (I, 4H) for the input projection: packed when predicting, else BLAS
    step_b(&n.Wx, <const floating *> n.W_x, 4 * n.H, n.In, 4 * n.H, False, n.Wxp)
    cdef int c
    if n.threads <= 1:
        forward_part(n, Hs, project, 1, 0)
    else:                               # each thread its own sequences, start to end
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            forward_part(n, Hs, project, n.threads, c)


cdef void forward_part(Net *n, floating *Hs, bint project, int parts, int c) noexcept nogil:
    """recur_forward on part c of the batch (its sequences never meet the others)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H
    recur_forward(<const floating *> n.X + r0 * T * n.In, <const floating *> n.h0 + r0 * H,
                  <const floating *> n.c0 + r0 * H, <const floating *> n.W_x,
                  <const floating *> n.W_s, <const floating *> n.b, Hs + r0 * T * H,
                  <floating *> n.Cs + r0 * T * H, <floating *> n.Z + r0 * T * 4 * H,
                  n.lengths + r0 if n.lengths != NULL else NULL, &n.Wx, &n.Ws, project,
                  r1 - r0, n.T, n.In, n.H, n.forget_gate, n.reverse, n.time_block)


cdef void net_backward(Net *n, const floating *Hs, bint full_dH) noexcept nogil:
    # W_s^T (4H, H), packed from W_s (H, 4H) once (or read transposed by BLAS)
    step_b(&n.WsT, <const floating *> n.W_s, 4 * n.H, 4 * n.H, n.H, True, n.WpT)
    cdef int c, G4 = 4 * n.H
    if n.threads <= 1:
        backward_part(n, Hs, full_dH, 1, 0)
    else:
        # each thread its own sequences: their time loop, dX rows and weight gradients
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            backward_part(n, Hs, full_dH, n.threads, c)
        sum_partials(n, <floating *> n.dW_x)   # the other threads' shares
    if n.dh0 != NULL:
        # dh0 (N, H) = dZ at each sequence's first processed step (N, 4H) @ W_s^T (4H, H)
        gemm(False, True, n.N, n.H, G4, 1,
             first_rows(<floating *> n.Z, G4, G4, <floating *> n.D, n.lengths, n.N, n.T,
                        n.reverse),
             first_ld(G4, G4, n.T, n.lengths, n.reverse), <const floating *> n.W_s, G4, 0,
             <floating *> n.dh0, n.H)
    if n.dc0 != NULL and not dc0_taken_in_loop(n.lengths, n.dc0, n.reverse):
        # dc0 = dLoss/dc at the first step * f there, the carry the loops left
        memcpy(n.dc0, n.dc, n.N * <Py_ssize_t> n.H * sizeof(floating))


cdef void sum_partials(Net *n, floating *dW_x) noexcept nogil:
    """dW_x, dW_s, db += the other parts' shares (n.partials)."""
    cdef Py_ssize_t I = n.In, H = n.H, G4 = 4 * n.H, size = share_size(n)
    cdef const floating *P = <const floating *> n.partials
    add_partials(dW_x, P, n.threads - 1, I * G4, size)
    add_partials(<floating *> n.dW_s, P + I * G4, n.threads - 1, H * G4, size)
    add_partials(<floating *> n.db, P + (I + H) * G4, n.threads - 1, G4, size)


cdef void backward_part(Net *n, const floating *Hs, bint full_dH, int parts,
                        int c) noexcept nogil:
    """recur_backward on part c of the batch, then its rows of dX and its share of the
    weight gradients (part 0 into the gradients, part c > 0 into partials block c-1)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H, I = n.In, G4 = 4 * n.H
    cdef floating *Z = <floating *> n.Z + r0 * T * G4
    cdef floating *dW_x = <floating *> n.dW_x
    cdef floating *dW_s = <floating *> n.dW_s
    cdef floating *db = <floating *> n.db
    if c > 0:                           # [dW_x | dW_s | db] of part c, summed in afterwards
        dW_x = <floating *> n.partials + (c - 1) * share_size(n)
        dW_s, db = dW_x + I * G4, dW_x + (I + H) * G4
    cdef const floating *X = <const floating *> n.X + r0 * T * I
    cdef const floating *h0 = <const floating *> n.h0 + r0 * H
    cdef floating *dX = <floating *> n.dX + r0 * T * I if n.dX != NULL else NULL
    cdef int rows = r1 - r0, p0 = 0, p1 = n.T, t0, t1
    if n.time_block == 0:               # the whole time loop, then merged GEMMs over N*T rows
        lstm_backward_steps(n, Hs, full_dH, r0, r1, 0, p1)
        if dX != NULL:
            # dX (rows*T, I) = dZ (rows*T, 4H) @ W_x^T (4H, I)
            gemm(False, True, rows * n.T, n.In, G4, 1, Z, G4, <const floating *> n.W_x, G4,
                 0, dX, n.In)
        weight_grads(X, h0, Hs + r0 * T * H, Z, dW_x, dW_s, db, <floating *> n.D + r0 * G4,
                     rows, n.T, n.In, n.H, n.reverse, n.serial_blas)
        return
    while p1 > 0:                       # time-blocked: each block's gradients while in cache
        block_steps(n.T, n.time_block, p1, n.reverse, &p0, &t0, &t1)
        lstm_backward_steps(n, Hs, full_dH, r0, r1, p0, p1)
        if dX != NULL:
            steps_input_grads(Z, G4, <const floating *> n.W_x, dX, n.In, rows, n.T, t0, t1)
        block_weight_grads(X, h0, Hs + r0 * T * H, Z, dW_x, dW_s, db, rows, n.T, n.In, n.H,
                           t0, t1, n.reverse, p1 == n.T)
        p1 = p0


cdef inline void lstm_backward_steps(Net *n, const floating *Hs, bint full_dH, Py_ssize_t r0,
                                     Py_ssize_t r1, int p0, int p1) noexcept nogil:
    """recur_backward over processing positions [p0, p1) of sequences [r0, r1)."""
    cdef Py_ssize_t T = n.T, H = n.H
    recur_backward(<const floating *> n.h0 + r0 * H, <const floating *> n.c0 + r0 * H,
                   Hs + r0 * T * H, <const floating *> n.Cs + r0 * T * H,
                   <floating *> n.Z + r0 * T * 4 * H, <floating *> n.dH + r0 * T * H, full_dH,
                   <const floating *> n.dC + r0 * T * H if n.dC != NULL else NULL,
                   <floating *> n.dc0 + r0 * H if n.dc0 != NULL else NULL,
                   <floating *> n.dc + r0 * H, &n.WsT,
                   n.lengths + r0 if n.lengths != NULL else NULL,
                   n.state_norms + r0 * T if n.state_norms != NULL else NULL,
                   n.cell_norms + r0 * T if n.cell_norms != NULL else NULL,
                   r1 - r0, n.T, n.H, n.forget_gate, n.reverse, p0, p1)


cdef double net_loss_and_grad(Net *n, floating *Hs) noexcept nogil:
    net_forward(n, Hs, True)
    cdef double loss = head_loss_and_grad(&n.head, <const floating *> Hs, <floating *> n.dH,
                                          <floating *> n.D, n.lengths, n.N, n.T, n.H)
    net_backward(n, Hs, not n.head.last or n.lengths != NULL)
    return loss


cdef Net make_net(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x,
                  cnp.ndarray W_s, cnp.ndarray b, bint forget_gate, lengths):
    """The Net for these arrays; lengths: None or a validated int64 (N,) array."""
    cdef Net n
    memset(&n, 0, sizeof(Net))
    n.X, n.h0, n.c0 = data(X), data(h0), data(c0)
    n.W_x, n.W_s, n.b = data(W_x), data(W_s), data(b)
    n.N, n.T, n.In, n.H = X.shape[0], X.shape[1], X.shape[2], W_s.shape[0]
    n.forget_gate = forget_gate
    if lengths is not None:
        n.lengths = <const int64_t *> data(lengths)
    n.threads = _threads.batch_threads(n.N, <double> n.N * n.T * 4 * n.H * (n.In + n.H))
    n.serial_blas = serial_blas(n.threads)
    # split, or BLAS on one thread: every per-step product on the packed kernel
    n.packed = packed_products(n.N, 4, n.H, n.serial_blas)
    n.time_block = time_block(n.N, n.T, 4, n.H, X.itemsize, n.threads, n.serial_blas)
    return n


cdef tuple packed_shapes(Net *n, cnp.ndarray X):
    """Shapes of the packed W_s and W_s^T buffers ((1,) each when BLAS takes the products)."""
    if not n.packed:
        return (1,), (1,)
    cdef bint f32 = is_float32(X)
    return (packed_elements(n.H, 4 * n.H, f32),), (packed_elements(4 * n.H, n.H, f32),)


cdef void use_packed(Net *n, cnp.ndarray Wp, cnp.ndarray WpT):
    """Point n at the packed-operand buffers (or at nothing, when BLAS takes the products)."""
    n.Wp, n.WpT = (data(Wp), data(WpT)) if n.packed else (NULL, NULL)


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
    Wxp = np.empty(packed_elements(n.In, 4 * n.H, is_float32(X)), X.dtype)
    n.Wxp = data(Wxp)
    return Wxp


# ---------------------------------------------------------------------------------------------
# Python-facing functions: same signatures as fastrnn.cells.lstm. Arguments are validated
# (fastrnn._validate): C-contiguous ndarrays of one float dtype, consistent shapes.

def forward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x, cnp.ndarray W_s,
            cnp.ndarray b, bint forget_gate, lengths=None, bint reverse=False):
    """(Hs, Cs), each (N, T, H): the hidden and cell states of every step; reverse: run
    backwards in time (see recur_forward)."""
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    n.reverse = reverse
    return run_forward(&n, X, True)[:2]


def forward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x,
                  cnp.ndarray W_s, cnp.ndarray b, bint forget_gate, lengths, bint reverse):
    """((Hs, Cs), stash): the states, each (N, T, H), and what backward_train needs besides
    them (the activated gates Z (N, T, 4H)). One layer of a deep or bidirectional network
    (fastrnn/stack.py); reverse: run backwards in time."""
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1             # training: GEMV at N = 1, as loss_and_grad
    Hs, Cs, Z = run_forward(&n, X, False)
    return (Hs, Cs), (Z,)


cdef tuple run_forward(Net *n, cnp.ndarray X, bint predicting):
    """(Hs, Cs, Z): the forward pass of n into new arrays; predicting: W_x packed as well,
    so that every row is computed alike whatever the batch."""
    dt = X.dtype
    cdef cnp.ndarray Hs = np.empty((n.N, n.T, n.H), dt)
    Cs, Z = np.empty((n.N, n.T, n.H), dt), np.empty((n.N, n.T, 4 * n.H), dt)
    Wp = np.empty(packed_shapes(n, X)[0], dt)
    n.Cs, n.Z = data(Cs), data(Z)
    use_packed(n, Wp, Wp)
    Wxp = packed_input_weight(n, X) if predicting or n.time_block else None
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(n, <float *> Hp, True)
        else:
            with nogil:
                net_forward(n, <double *> Hp, True)
    return Hs, Cs, Z


def backward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x,
                   cnp.ndarray W_s, cnp.ndarray b, tuple states, tuple stash,
                   cnp.ndarray dHs, bint forget_gate, lengths, bint reverse, bint input_grads):
    """BPTT gradients {"W_x", "W_s", "b"} (and "X", "h0", "c0" if input_grads) of the layer
    that forward_train ran, given dHs = dLoss/dHs (N, T, H) from outside the recurrence (the
    output layer or the layer above; nothing reaches Cs from outside). dHs and the stash are
    overwritten. Zero at padding."""
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    cdef cnp.ndarray Hs = states[0]
    cdef cnp.ndarray Cs = states[1]
    cdef cnp.ndarray Z = stash[0]
    grads = {"W_x": np.empty((n.In, 4 * H), dt), "W_s": np.empty((H, 4 * H), dt),
             "b": np.empty(4 * H, dt)}
    D, dc = np.empty((N, 4 * H), dt), np.empty((N, H), dt)
    WpT = np.empty(packed_shapes(&n, X)[1], dt)
    n.Cs, n.Z, n.dH, n.D, n.dc = data(Cs), data(Z), data(dHs), data(D), data(dc)
    use_packed(&n, WpT, WpT)
    n.dW_x, n.dW_s, n.db = data(grads["W_x"]), data(grads["W_s"]), data(grads["b"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"] = np.empty_like(X)
        grads["h0"], grads["c0"] = np.empty((N, H), dt), np.empty((N, H), dt)
        n.dX, n.dh0, n.dc0 = data(grads["X"]), data(grads["h0"]), data(grads["c0"])
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_backward(&n, <const float *> Hp, True)
        else:
            with nogil:
                net_backward(&n, <const double *> Hp, True)
    return grads


def predict(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x, cnp.ndarray W_s,
            cnp.ndarray b, cnp.ndarray W_y, cnp.ndarray b_y, bint forget_gate, str output,
            lengths=None):
    """(Y (N, T, O), Hs (N, T, H), Cs (N, T, H)): outputs (softmax probabilities if output
    is "softmax") and the states."""
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    keep = head_setup(&n.head, None, W_y, b_y, output, "sequence", None, n.N, n.T, None)
    dt = X.dtype
    cdef cnp.ndarray Hs = np.empty((n.N, n.T, n.H), dt)
    Cs, Z = np.empty((n.N, n.T, n.H), dt), np.empty((n.N, n.T, 4 * n.H), dt)
    Y = np.empty((n.N, n.T, n.head.O), dt)
    Wp = np.empty(packed_shapes(&n, X)[0], dt)
    n.Cs, n.Z, n.head.Z = data(Cs), data(Z), data(Y)
    use_packed(&n, Wp, Wp)
    Wxp = packed_input_weight(&n, X)
    cdef void *Hp = data(Hs)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(&n, <float *> Hp, True)
                head_predict(&n.head, <const float *> Hp, n.N * n.T, n.H)
        else:
            with nogil:
                net_forward(&n, <double *> Hp, True)
                head_predict(&n.head, <const double *> Hp, n.N * n.T, n.H)
    return Y, Hs, Cs


def backward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray c0, cnp.ndarray W_x, cnp.ndarray W_s,
             cnp.ndarray b, cnp.ndarray Hs, cnp.ndarray Cs, cnp.ndarray dHs, cnp.ndarray dCs,
             bint forget_gate, lengths=None):
    """BPTT gradients {"X", "h0", "c0", "W_x", "W_s", "b"} given the states Hs, Cs of
    forward() and dHs, dCs (N, T, H), dLoss/dHs and dLoss/dCs from outside the recurrence.
    The gates are recomputed from X and the given states; past a sequence's end dHs and dCs
    are ignored."""
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H, I = n.In
    grads = {"X": np.empty_like(X), "h0": np.empty((N, H), dt), "c0": np.empty((N, H), dt),
             "W_x": np.empty((I, 4 * H), dt), "W_s": np.empty((H, 4 * H), dt),
             "b": np.empty(4 * H, dt)}
    Z, Hs2, Cs2 = np.empty((N, T, 4 * H), dt), np.empty((N, T, H), dt), np.empty((N, T, H), dt)
    dH = dHs.copy()                                     # becomes the total dLoss/dh
    D, dc = np.empty((N, 4 * H), dt), np.empty((N, H), dt)
    WpT = np.empty(packed_shapes(&n, X)[1], dt)
    n.Z, n.dH, n.dC, n.D, n.dc = data(Z), data(dH), data(dCs), data(D), data(dc)
    use_packed(&n, WpT, WpT)
    n.dX, n.dh0, n.dc0 = data(grads["X"]), data(grads["h0"]), data(grads["c0"])
    n.dW_x, n.dW_s, n.db = data(grads["W_x"]), data(grads["W_s"]), data(grads["b"])
    partials = use_partials(&n, dt)
    cdef void *Hp = data(Hs)
    cdef void *Cp = data(Cs)
    cdef void *Hp2 = data(Hs2)
    cdef void *Cp2 = data(Cs2)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                backward_from_states(&n, <const float *> Hp, <const float *> Cp, <float *> Hp2,
                                     <float *> Cp2)
        else:
            with nogil:
                backward_from_states(&n, <const double *> Hp, <const double *> Cp,
                                     <double *> Hp2, <double *> Cp2)
    return grads


cdef void backward_from_states(Net *n, const floating *Hs, const floating *Cs,
                               floating *scratch_H, floating *scratch_C) noexcept nogil:
    """BPTT from given states: recompute the gates of every step from X and the given
    h_{t-1}, c_{t-1} (the states they produce go to the scratch arrays), then backward."""
    cdef int t, G4 = 4 * n.H
    # Z (N*T, 4H) = X (N*T, I) @ W_x (I, 4H)
    gemm(False, False, n.N * n.T, G4, n.In, 1, <const floating *> n.X, n.In,
         <const floating *> n.W_x, G4, 0, <floating *> n.Z, G4)
    n.Cs = scratch_C
    for t in range(n.T):
        recompute_gates(n, Hs, Cs, scratch_H, t)
    n.Cs = <void *> Cs
    net_backward(n, Hs, True)


cdef void recompute_gates(Net *n, const floating *Hs, const floating *Cs, floating *scratch_H,
                          int t) noexcept nogil:
    """Z[:, t] <- the activated gates of step t, from the given h_{t-1}, c_{t-1} (the new
    c_t and h_t go to the scratch arrays n.Cs and scratch_H)."""
    cdef int H = n.H, G4 = 4 * n.H, T = n.T, TH = n.T * n.H
    cdef floating *Z = <floating *> n.Z + t * G4
    cdef const floating *hp = <const floating *> n.h0 if t == 0 else Hs + (t - 1) * H
    cdef const floating *cp = <const floating *> n.c0 if t == 0 else Cs + (t - 1) * H
    cdef int ldp = H if t == 0 else TH
    # Z[:, t] (N, 4H) += h_{t-1} (N, H) @ W_s (H, 4H)
    gemm(False, False, n.N, G4, H, 1, hp, ldp, <const floating *> n.W_s, G4, 1, Z, T * G4)
    gates_forward(Z, T * G4, <const floating *> n.b, cp, ldp, <floating *> n.Cs + t * H,
                  scratch_H + t * H, TH, n.N, H, n.forget_gate)


def loss_and_grad(cnp.ndarray X, cnp.ndarray Y, cnp.ndarray h0, cnp.ndarray c0,
                  cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b, cnp.ndarray W_y,
                  cnp.ndarray b_y, bint forget_gate, str output, str target, bint input_grads,
                  lengths=None, bint return_state=False, bint state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss and its gradient for every parameter, in one pass
    (weighted by sequence with sample_weight, a validated float64 (N,) array).

    Y: real targets (N, T, O) / (N, O) for output "linear", int64 labels (N, T) / (N,) for
    "softmax"; target "sequence" scores every step, "last" only the last one. grads has
    "W_x", "W_s", "b", "W_y", "b_y", and "X", "h0", "c0" too if input_grads. With
    return_state, returns (loss, grads, (h_last, c_last)). With state_grad_norms,
    grads["state_grad_norms"] and grads["cell_grad_norms"] (N, T) float64 hold
    ||dLoss/dh[n, t]|| and ||dLoss/dc[n, t]||.
    """
    cdef Net n = make_net(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    # A batch of one trains on GEMV: no packed copies of W_s (at N = 1 they would double the
    # call's memory), and training needs no batch invariance (prediction keeps it)
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    grads = {"W_x": np.empty((n.In, 4 * H), dt), "W_s": np.empty((H, 4 * H), dt),
             "b": np.empty(4 * H, dt)}
    keep = head_setup(&n.head, Y, W_y, b_y, output, target, lengths, N, T, grads,
                      sample_weight)
    cdef cnp.ndarray Hs
    Hs, Cs, Z, dH, Zh, D, dc, Wp, WpT = workspace(dt, (
        (N, T, H), (N, T, H), (N, T, 4 * H), (N, T, H), (N if n.head.last else N * T, n.head.O),
        (N, 4 * H), (N, H)) + packed_shapes(&n, X))
    n.Cs, n.Z, n.dH, n.head.Z = data(Cs), data(Z), data(dH), data(Zh)
    n.D, n.dc = data(D), data(dc)
    use_packed(&n, Wp, WpT)
    Wxp = packed_input_weight(&n, X) if n.time_block else None
    n.dW_x, n.dW_s, n.db = data(grads["W_x"]), data(grads["W_s"]), data(grads["b"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"] = np.empty_like(X)
        grads["h0"], grads["c0"] = np.empty((N, H), dt), np.empty((N, H), dt)
        n.dX, n.dh0, n.dc0 = data(grads["X"]), data(grads["h0"]), data(grads["c0"])
    if state_grad_norms:
        grads["state_grad_norms"] = np.empty((N, T), np.float64)
        grads["cell_grad_norms"] = np.empty((N, T), np.float64)
        n.state_norms = <double *> data(grads["state_grad_norms"])
        n.cell_norms = <double *> data(grads["cell_grad_norms"])
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
        return loss, grads, (Hs[:, T - 1].copy(), Cs[:, T - 1].copy())
    return loss, grads
