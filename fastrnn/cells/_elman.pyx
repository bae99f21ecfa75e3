"""The Elman cell, compiled: its recurrence, its BPTT backward pass and the whole loss
gradient (NumPy twin: fastrnn/cells/elman.py, same signatures).

    A_t = X_t W_x + S_{t-1} W_s + b        S_t = phi(A_t)        S_{-1} = h0

Every function here trusts its inputs: C-contiguous arrays of one float dtype, consistent
non-empty shapes, sizes < 2**31 (fastrnn/_validate.py checks all that at the public
boundary). The work happens in cdef functions with the GIL released; Python only allocates
the output arrays beforehand and hands raw data pointers down (no memoryview set-up: at N=1
it would cost more than the arithmetic). The output layer and the losses are the shared
compiled head (fastrnn/_head.pyx). Long sequences run time-blocked (fastrnn/_threads.py
time_block): the input projection and the weight gradients a block of steps at a time, next
to the time loop, while it is in cache.

Notation (row vectors, batch-first): X (N, T, I), h0 (N, H), S (N, T, H), W_x (I, H),
W_s (H, H), b (H,), W_y (H, O), b_y (O,). Step t of a batch-first array A (N, T, K) is the
(N, K) matrix at A + t*K with leading dimension T*K; the whole of A is the (N*T, K) matrix
at A with leading dimension K.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport StepB, packed_elements, step_b, step_gemm, weight_gemm
from fastrnn._head cimport Head, data, head_loss_and_grad, head_predict, head_setup, is_float32
from fastrnn._kernels cimport act_grad, bias_act, colsum, far_apart, prefetch_step
from fastrnn.cells._recurrence cimport (add_partials, block_steps, first_ld, first_rows, part,
                                        prev_state_gemm, project_steps, row_norms, steps_colsum,
                                        steps_input_grads, steps_prev_state_gemm, steps_tn)

from fastrnn._head import release_workspace, workspace
from fastrnn import _threads      # _threads.batch_threads: looked up per call (tests count it)
from fastrnn._threads import one_blas_thread, packed_products, serial_blas, time_block
from fastrnn.activations import ACTIVATIONS

cnp.import_array()


# ---------------------------------------------------------------------------------------------
# The recurrence and its backward pass

cdef void recur_forward(const floating *X, const floating *h0, const floating *W_x,
                        const floating *W_s, const floating *b, floating *S,
                        const int64_t *lengths, const StepB *Wx, const StepB *Ws,
                        int N, int T, int I, int H, int act, bint reverse,
                        int block) noexcept nogil:
    """S[:, t] = phi(X[:, t] @ W_x + S[:, t-1] @ W_s + b), S[:, -1] = h0.

    reverse: run over time backwards instead, S[:, t] from S[:, t+1], S[:, T] = h0 (the
    second direction of a bidirectional layer; same arrays, the step index walks down).
    lengths (N,) (NULL: all T): a step t >= lengths[n] is padding, where the sequence keeps
    the state it has: forwards the last valid one (so S[:, T-1] holds every sequence's last
    valid state), backwards h0 (so each sequence starts at its own last valid step, as with
    PyTorch's packed sequences, and S[:, 0] is its final state). Wx, Ws: W_x and W_s as the
    products take them (packed, or for BLAS). block > 0: time-blocked, the input projection
    done block steps at a time just before the loop reaches them (long sequences: S is then
    read from cache, not from memory).
    """
    cdef int NT = N * T, TH = T * H
    cdef int p, t, ld_prev
    cdef bint far = far_apart(NT * <Py_ssize_t> H, sizeof(floating))
    cdef Py_ssize_t n
    cdef const floating *prev
    if block == 0:
        # S (N*T, H) = X (N*T, I) @ W_x (I, H): the input projection of every step, one GEMM
        step_gemm(Wx, NT, X, I, 0, S, H)
    for p in range(T):                  # p: position in processing order, t: the step
        t = T - 1 - p if reverse else p
        if block and p % block == 0:
            # S[:, block steps] = X[:, those steps] @ W_x, per sequence
            project_steps(Wx, X, I, S, H, N, T, p, block, reverse)
        if far and p + 1 < T:           # the next step's block, while this one computes
            prefetch_step(S + (t - 1 if reverse else t + 1) * H, N, TH, H, True)
        if p == 0:
            prev, ld_prev = h0, H
        else:
            prev, ld_prev = S + (t + 1 if reverse else t - 1) * H, TH
        # S[:, t] (N, H) += S[:, t-1] (N, H) @ W_s (H, H)      (S[:, t+1] if reverse)
        step_gemm(Ws, N, prev, ld_prev, 1, S + t * H, TH)
        # S[:, t] = phi(S[:, t] + b), in place
        bias_act(S + t * H, N, H, TH, b, act)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:     # padding: keep the state
                    memcpy(S + n * <Py_ssize_t> TH + t * H, prev + n * <Py_ssize_t> ld_prev,
                           H * sizeof(floating))


cdef void recur_backward(const floating *S, floating *G, bint full_dS, const StepB *WsT,
                         const int64_t *lengths, double *state_norms,
                         int N, int T, int H, int act, bint reverse, int p0,
                         int p1) noexcept nogil:
    """Backpropagation through time (of recur_forward with the same reverse): the time loop,
    over processing positions p1-1 down to p0 (0, T: all of it; a time-blocked pass calls it
    block by block).

    On entry G (N, T, H) holds dLoss/dS from the output layer: at every step if full_dS,
    else only at the last step (G[:, :T-1] is then scratch, never read). On exit G holds
    dA_t = dLoss/d(pre-activation of step t). WsT: W_s^T as the per-step products take it
    (packed, or for BLAS). lengths as in recur_forward: dA is zero at padding (its carried
    states get no gradient: nothing there is scored). state_norms (N, T) or NULL: receives
    ||dLoss/dS[n, t]||, the full gradient reaching each state (what the vanishing-gradient
    diagnostics plot), read off on the way. The weight gradients follow (weight_grads).
    """
    cdef int TH = T * H
    cdef int p, t, step = -1 if reverse else 1
    cdef Py_ssize_t n                   # element offsets may exceed 2**31
    cdef floating beta = 1 if full_dS else 0
    # dA_t = (dS_t + dA_{t+1} @ W_s^T) * phi'(S_t), the last processed step first
    cdef int tn                         # the next step to process
    cdef bint far = far_apart(N * <Py_ssize_t> T * H, sizeof(floating))
    for p in range(p1 - 1, p0 - 1, -1):
        t = T - 1 - p if reverse else p
        if far and p > 0:               # the next step's blocks, while this one computes
            tn = t + 1 if reverse else t - 1
            prefetch_step(G + tn * H, N, TH, H, True)
            prefetch_step(S + tn * H, N, TH, H, False)
        if p < T - 1:
            # G[:, t] (N, H) (+)= G[:, t+1] (N, H) @ W_s^T (H, H)      (G[:, t-1] if reverse)
            step_gemm(WsT, N, G + (t + step) * H, TH, beta, G + t * H, TH)
        if state_norms != NULL:             # G[:, t] is dLoss/dS_t here
            row_norms(G + t * H, N, H, TH, state_norms + t, T)
        # G[:, t] *= phi'(S[:, t])
        act_grad(G + t * H, TH, S + t * H, TH, N, H, act)
        if lengths != NULL:
            for n in range(N):
                if t >= lengths[n]:
                    memset(G + n * <Py_ssize_t> TH + t * H, 0, H * sizeof(floating))


cdef void weight_grads(const floating *X, const floating *h0, const floating *S, floating *G,
                       floating *dW_x, floating *dW_s, floating *db, floating *D, int N, int T,
                       int I, int H, bint reverse, bint serial_blas) noexcept nogil:
    """The weight gradients, given dA = G (N, T, H) from recur_backward: one GEMM over all
    N*T rows each (the "merged" form). D (N, H) is scratch."""
    cdef int NT = N * T
    # dW_x (I, H) = X^T (I, N*T) @ dA (N*T, H)
    weight_gemm(I, H, NT, X, I, G, H, 0, dW_x, H, serial_blas)
    # db (H,) = dA.sum over all rows
    colsum(G, NT, H, H, db)
    # dW_s (H, H) = sum_t S_prev(t)^T (H, N) @ dA[:, t] (N, H), S_prev of the first step = h0
    prev_state_gemm(S, h0, G, H, D, dW_s, H, N, T, H, H, reverse, serial_blas)


cdef void block_weight_grads(const floating *X, const floating *h0, const floating *S,
                             const floating *G, floating *dW_x, floating *dW_s, floating *db,
                             int N, int T, int I, int H, int t0, int t1, bint reverse,
                             bint first) noexcept nogil:
    """weight_grads' sums over steps t0 <= t < t1 only (added to the gradients unless first,
    the pass's first block): the time-blocked pass, while this block of dA is in cache."""
    cdef floating beta = 0 if first else 1
    # dW_x (I, H) (+)= sum_n X[n, t0:t1]^T (I, steps) @ dA[n, t0:t1] (steps, H)
    steps_tn(I, H, t1 - t0, N, T, X + t0 * I, I, G + t0 * H, H, beta, dW_x, H)
    # db (H,) (+)= those rows' sum
    steps_colsum(G + t0 * H, H, H, N, T, t1 - t0, first, db)
    # dW_s (H, H) (+)= sum over those steps of S_prev(t)^T (H, N) @ dA_t (N, H)
    steps_prev_state_gemm(S, h0, G, H, dW_s, H, N, T, H, H, t0, t1, reverse, beta)


# ---------------------------------------------------------------------------------------------
# Whole computations, on one bundle of pointers. The precision is picked by the type of the
# states pointer S passed alongside (every other array has the same dtype).

ctypedef struct Net:
    # inputs, read only (void * because the precision is not known here)
    const void *X       # (N, T, I)
    const void *h0      # (N, H)
    const void *W_x     # (I, H)
    const void *W_s     # (H, H)
    const void *b       # (H,)
    Head head           # the output layer, its targets and its gradients (fastrnn._head)
    # buffers and outputs
    void *G             # (N, T, H) dLoss/dS, then dLoss/dA
    void *D             # (N, H) scratch
    void *Wxp           # packed W_x (prediction: batch-invariant rows), or NULL: BLAS
    void *Wp            # packed W_s (forward), or NULL: the per-step products go to BLAS
    void *WpT           # packed W_s^T (backward), or NULL
    StepB Wx, Ws, WsT   # the products' right operands (set up by each pass)
    const int64_t *lengths  # (N,) valid steps per sequence, or NULL (all T)
    int time_block      # steps per block of a time-blocked pass, 0: not blocked
    double *state_norms # (N, T) ||dLoss/dS[n, t]||, or NULL
    bint packed         # pack W_s for the per-step products (several rows, 1 BLAS thread)
    bint serial_blas    # BLAS runs the weight-gradient GEMMs on one thread (weight_gemm)
    bint reverse        # the recurrence runs backwards in time (see recur_forward)
    int threads         # the batch is split across this many threads (fastrnn._threads)
    void *partials      # threads > 1: (threads - 1, I*H + H*H + H) the parts' [dW_x|dW_s|db]
    void *dX            # (N, T, I) or NULL
    void *dh0           # (N, H) or NULL
    void *dW_x
    void *dW_s
    void *db
    int N, T, In, H, act     # In = I (a C macro of that name comes with complex.h)


cdef inline Py_ssize_t share_size(Net *n) noexcept nogil:
    """Elements of one thread's share of the weight gradients: one block of n.partials,
    laid out [dW_x | dW_s | db]."""
    return <Py_ssize_t> n.In * n.H + n.H * n.H + n.H


cdef void net_forward(Net *n, floating *S) noexcept nogil:
    # W_s (H, H), packed once for the T per-step products (or left to BLAS)
    step_b(&n.Ws, <const floating *> n.W_s, n.H, n.H, n.H, False, n.Wp)
    # W_x (I, H) for the input projection: packed when predicting, else BLAS
    step_b(&n.Wx, <const floating *> n.W_x, n.H, n.In, n.H, False, n.Wxp)
    cdef int c
    if n.threads <= 1:
        forward_part(n, S, 1, 0)
    else:                               # each thread its own sequences, start to end
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            forward_part(n, S, n.threads, c)


cdef void forward_part(Net *n, floating *S, int parts, int c) noexcept nogil:
    """recur_forward on part c of the batch (its sequences never meet the others)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H
    recur_forward(<const floating *> n.X + r0 * T * n.In, <const floating *> n.h0 + r0 * H,
                  <const floating *> n.W_x, <const floating *> n.W_s, <const floating *> n.b,
                  S + r0 * T * H, n.lengths + r0 if n.lengths != NULL else NULL, &n.Wx,
                  &n.Ws, r1 - r0, n.T, n.In, n.H, n.act, n.reverse, n.time_block)


cdef void net_backward(Net *n, const floating *S, bint full_dS) noexcept nogil:
    # W_s^T (H, H), packed from W_s once (or read transposed by BLAS)
    step_b(&n.WsT, <const floating *> n.W_s, n.H, n.H, n.H, True, n.WpT)
    cdef floating *G = <floating *> n.G
    cdef int c
    if n.threads <= 1:
        backward_part(n, S, full_dS, 1, 0)
    else:
        # each thread its own sequences: their time loop, dX rows and weight gradients
        for c in prange(n.threads, num_threads=n.threads, schedule="static", chunksize=1):
            backward_part(n, S, full_dS, n.threads, c)
        sum_partials(n, <floating *> n.dW_x)   # the other threads' shares
    if n.dh0 != NULL:
        # dh0 (N, H) = dA at each sequence's first step (N, H) @ W_s^T
        gemm(False, True, n.N, n.H, n.H, 1,
             first_rows(G, n.H, n.H, <floating *> n.D, n.lengths, n.N, n.T, n.reverse),
             first_ld(n.H, n.H, n.T, n.lengths, n.reverse), <const floating *> n.W_s, n.H, 0,
             <floating *> n.dh0, n.H)


cdef void sum_partials(Net *n, floating *dW_x) noexcept nogil:
    """dW_x, dW_s, db += the other parts' shares (n.partials)."""
    cdef Py_ssize_t I = n.In, H = n.H, size = share_size(n)
    cdef const floating *P = <const floating *> n.partials
    add_partials(dW_x, P, n.threads - 1, I * H, size)
    add_partials(<floating *> n.dW_s, P + I * H, n.threads - 1, H * H, size)
    add_partials(<floating *> n.db, P + I * H + H * H, n.threads - 1, H, size)


cdef void backward_part(Net *n, const floating *S, bint full_dS, int parts,
                        int c) noexcept nogil:
    """recur_backward on part c of the batch, then its rows of dX and its share of the
    weight gradients (part 0 into the gradients, part c > 0 into partials block c-1)."""
    cdef Py_ssize_t r0 = part(n.N, parts, c), r1 = part(n.N, parts, c + 1)
    cdef Py_ssize_t T = n.T, H = n.H, I = n.In
    cdef floating *G = <floating *> n.G + r0 * T * H
    cdef floating *dW_x = <floating *> n.dW_x
    cdef floating *dW_s = <floating *> n.dW_s
    cdef floating *db = <floating *> n.db
    if c > 0:                           # [dW_x | dW_s | db] of part c, summed in afterwards
        dW_x = <floating *> n.partials + (c - 1) * share_size(n)
        dW_s, db = dW_x + I * H, dW_x + I * H + H * H
    cdef const floating *X = <const floating *> n.X + r0 * T * I
    cdef const floating *h0 = <const floating *> n.h0 + r0 * H
    cdef floating *dX = <floating *> n.dX + r0 * T * I if n.dX != NULL else NULL
    cdef int rows = r1 - r0, p0 = 0, p1 = n.T, t0, t1
    if n.time_block == 0:               # the whole time loop, then merged GEMMs over N*T rows
        elman_backward_steps(n, S, G, full_dS, r0, r1, 0, p1)
        if dX != NULL:
            # dX (rows*T, I) = dA (rows*T, H) @ W_x^T (H, I)
            gemm(False, True, rows * n.T, n.In, n.H, 1, G, n.H, <const floating *> n.W_x,
                 n.H, 0, dX, n.In)
        weight_grads(X, h0, S + r0 * T * H, G, dW_x, dW_s, db, <floating *> n.D + r0 * H,
                     rows, n.T, n.In, n.H, n.reverse, n.serial_blas)
        return
    while p1 > 0:                       # time-blocked: each block's gradients while in cache
        block_steps(n.T, n.time_block, p1, n.reverse, &p0, &t0, &t1)
        elman_backward_steps(n, S, G, full_dS, r0, r1, p0, p1)
        if dX != NULL:
            steps_input_grads(G, n.H, <const floating *> n.W_x, dX, n.In, rows, n.T, t0, t1)
        block_weight_grads(X, h0, S + r0 * T * H, G, dW_x, dW_s, db, rows, n.T, n.In, n.H,
                           t0, t1, n.reverse, p1 == n.T)
        p1 = p0


cdef inline void elman_backward_steps(Net *n, const floating *S, floating *G, bint full_dS,
                                      Py_ssize_t r0, Py_ssize_t r1, int p0,
                                      int p1) noexcept nogil:
    """recur_backward over processing positions [p0, p1) of sequences [r0, r1) (G: theirs)."""
    recur_backward(S + r0 * n.T * n.H, G, full_dS, &n.WsT,
                   n.lengths + r0 if n.lengths != NULL else NULL,
                   n.state_norms + r0 * n.T if n.state_norms != NULL else NULL,
                   r1 - r0, n.T, n.H, n.act, n.reverse, p0, p1)


cdef double net_loss_and_grad(Net *n, floating *S) noexcept nogil:
    net_forward(n, S)
    cdef double loss = head_loss_and_grad(&n.head, <const floating *> S, <floating *> n.G,
                                          <floating *> n.D, n.lengths, n.N, n.T, n.H)
    net_backward(n, S, not n.head.last or n.lengths != NULL)
    return loss


cdef Net make_net(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                  cnp.ndarray b, str activation, lengths):
    """The Net for these arrays; lengths: None or a validated int64 (N,) array."""
    cdef Net n
    memset(&n, 0, sizeof(Net))
    n.X, n.h0, n.W_x, n.W_s, n.b = data(X), data(h0), data(W_x), data(W_s), data(b)
    n.N, n.T, n.In, n.H = X.shape[0], X.shape[1], X.shape[2], W_s.shape[0]
    n.act = ACTIVATIONS.index(activation)
    if lengths is not None:
        n.lengths = <const int64_t *> data(lengths)
    n.threads = _threads.batch_threads(n.N, <double> n.N * n.T * n.H * (n.In + n.H))
    n.serial_blas = serial_blas(n.threads)
    # split, or BLAS on one thread: every per-step product on the packed kernel
    n.packed = packed_products(n.N, 1, n.H, n.serial_blas)
    n.time_block = time_block(n.N, n.T, 1, n.H, X.itemsize, n.threads, n.serial_blas)
    return n


cdef tuple packed_shapes(Net *n, cnp.ndarray X):
    """Shapes of the packed W_s and W_s^T buffers ((1,) each when BLAS takes the products)."""
    if not n.packed:
        return (1,), (1,)
    cdef Py_ssize_t size = packed_elements(n.H, n.H, is_float32(X))
    return (size,), (size,)


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
    Wxp = np.empty(packed_elements(n.In, n.H, is_float32(X)), X.dtype)
    n.Wxp = data(Wxp)
    return Wxp


# ---------------------------------------------------------------------------------------------
# Python-facing functions: same signatures as fastrnn.cells.elman. Arguments are validated
# (fastrnn._validate): C-contiguous ndarrays of one float dtype, consistent shapes.

def forward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
            str activation, lengths=None, bint reverse=False):
    """S (N, T, H): the states of the recurrence (carried past each sequence's length);
    reverse: run backwards in time (see recur_forward)."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, activation, lengths)
    n.reverse = reverse
    return run_forward(&n, X, True)


def forward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                  cnp.ndarray b, str activation, lengths, bint reverse):
    """((S,), stash): the states (N, T, H) and what backward_train needs besides them (the
    Elman cell needs nothing more: stash is ()). One layer of a deep or bidirectional
    network (fastrnn/stack.py); reverse: run backwards in time."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, activation, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1             # training: GEMV at N = 1, as loss_and_grad
    return (run_forward(&n, X, False),), ()


cdef cnp.ndarray run_forward(Net *n, cnp.ndarray X, bint predicting):
    """S: the forward pass of n into a new array; predicting: W_x packed as well, so that
    every row is computed alike whatever the batch."""
    cdef cnp.ndarray S = np.empty((n.N, n.T, n.H), dtype=X.dtype)
    Wp = np.empty(packed_shapes(n, X)[0], X.dtype)
    use_packed(n, Wp, Wp)
    Wxp = packed_input_weight(n, X) if predicting or n.time_block else None
    cdef void *Sp = data(S)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(n, <float *> Sp)
        else:
            with nogil:
                net_forward(n, <double *> Sp)
    return S


def backward_train(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s,
                   cnp.ndarray b, tuple states, tuple stash, cnp.ndarray dS, str activation,
                   lengths, bint reverse, bint input_grads):
    """BPTT gradients {"W_x", "W_s", "b"} (and "X", "h0" if input_grads) of the layer that
    forward_train ran, given dS = dLoss/dS (N, T, H) from outside the recurrence (the output
    layer or the layer above), which is overwritten (it becomes dA). Zero at padding."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, activation, lengths)
    n.reverse = reverse
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef cnp.ndarray S = states[0]
    grads = {"W_x": np.empty((n.In, n.H), dt), "W_s": np.empty((n.H, n.H), dt),
             "b": np.empty(n.H, dt)}
    D, WpT = np.empty((n.N, n.H), dt), np.empty(packed_shapes(&n, X)[1], dt)
    n.G, n.D = data(dS), data(D)
    use_packed(&n, WpT, WpT)
    n.dW_x, n.dW_s, n.db = data(grads["W_x"]), data(grads["W_s"]), data(grads["b"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"], grads["h0"] = np.empty_like(X), np.empty((n.N, n.H), dt)
        n.dX, n.dh0 = data(grads["X"]), data(grads["h0"])
    cdef void *Sp = data(S)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_backward(&n, <const float *> Sp, True)
        else:
            with nogil:
                net_backward(&n, <const double *> Sp, True)
    return grads


def predict(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
            cnp.ndarray W_y, cnp.ndarray b_y, str activation, str output, lengths=None):
    """(Y (N, T, O), S (N, T, H)): outputs (softmax probabilities if output == "softmax")."""
    cdef Net n = make_net(X, h0, W_x, W_s, b, activation, lengths)
    keep = head_setup(&n.head, None, W_y, b_y, output, "sequence", None, n.N, n.T, None)
    cdef cnp.ndarray S = np.empty((n.N, n.T, n.H), dtype=X.dtype)
    cdef cnp.ndarray Y = np.empty((n.N, n.T, n.head.O), dtype=X.dtype)
    Wp = np.empty(packed_shapes(&n, X)[0], X.dtype)
    n.head.Z = data(Y)
    use_packed(&n, Wp, Wp)
    Wxp = packed_input_weight(&n, X)
    cdef void *Sp = data(S)
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                net_forward(&n, <float *> Sp)
                head_predict(&n.head, <const float *> Sp, n.N * n.T, n.H)
        else:
            with nogil:
                net_forward(&n, <double *> Sp)
                head_predict(&n.head, <const double *> Sp, n.N * n.T, n.H)
    return Y, S


def backward(cnp.ndarray X, cnp.ndarray h0, cnp.ndarray W_x, cnp.ndarray W_s, cnp.ndarray b,
             cnp.ndarray S, cnp.ndarray dS, str activation, lengths=None):
    """BPTT gradients {"X", "h0", "W_x", "W_s", "b"} given dS = dLoss/dS (N, T, H).
    With lengths, dS past a sequence's end is ignored. (The Elman cell's backward pass needs
    nothing but the states: this is backward_train on a copy of dS.)"""
    return backward_train(X, h0, W_x, W_s, b, (S,), (), dS.copy(), activation, lengths, False,
                          True)


def loss_and_grad(cnp.ndarray X, cnp.ndarray Y, cnp.ndarray h0, cnp.ndarray W_x,
                  cnp.ndarray W_s, cnp.ndarray b, cnp.ndarray W_y, cnp.ndarray b_y,
                  str activation, str output, str target, bint input_grads, lengths=None,
                  bint return_state=False, bint state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss and its gradient for every parameter, in one pass
    (weighted by sequence with sample_weight, a validated float64 (N,) array).

    Y: real targets (N, T, O) / (N, O) for output "linear", int64 labels (N, T) / (N,) for
    "softmax"; target "sequence" scores every step, "last" only the last one. grads has
    "W_x", "W_s", "b", "W_y", "b_y", and "X", "h0" too if input_grads. lengths (N,): steps
    past a sequence's end are not scored; "last" scores its last valid step. With
    return_state, returns (loss, grads, h_last) with h_last (N, H) the final states. With
    state_grad_norms, grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dS[n, t]||.
    """
    cdef Net n = make_net(X, h0, W_x, W_s, b, activation, lengths)
    # A batch of one trains on GEMV: no packed copies of W_s (at N = 1 they would double the
    # call's memory), and training needs no batch invariance (prediction keeps it)
    n.packed = n.packed and n.N > 1
    dt = X.dtype
    cdef int N = n.N, T = n.T, H = n.H
    grads = {"W_x": np.empty((n.In, H), dt), "W_s": np.empty((H, H), dt), "b": np.empty(H, dt)}
    keep = head_setup(&n.head, Y, W_y, b_y, output, target, lengths, N, T, grads,
                      sample_weight)
    cdef cnp.ndarray S
    S, G, Z, D, Wp, WpT = workspace(dt, ((N, T, H), (N, T, H),
                                         (N if n.head.last else N * T, n.head.O),
                                         (N, H)) + packed_shapes(&n, X))
    n.G, n.head.Z, n.D = data(G), data(Z), data(D)
    use_packed(&n, Wp, WpT)
    Wxp = packed_input_weight(&n, X) if n.time_block else None
    n.dW_x, n.dW_s, n.db = data(grads["W_x"]), data(grads["W_s"]), data(grads["b"])
    partials = use_partials(&n, dt)
    if input_grads:
        grads["X"], grads["h0"] = np.empty_like(X), np.empty((N, H), dt)
        n.dX, n.dh0 = data(grads["X"]), data(grads["h0"])
    if state_grad_norms:
        grads["state_grad_norms"] = np.empty((N, T), np.float64)
        n.state_norms = <double *> data(grads["state_grad_norms"])
    cdef void *Sp = data(S)
    cdef double loss
    with one_blas_thread(n.threads):
        if is_float32(X):
            with nogil:
                loss = net_loss_and_grad(&n, <float *> Sp)
        else:
            with nogil:
                loss = net_loss_and_grad(&n, <double *> Sp)
    if return_state:
        return loss, grads, S[:, T - 1].copy()
    return loss, grads
