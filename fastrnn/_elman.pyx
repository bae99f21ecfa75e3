"""Cython backend: the Elman recurrence, its BPTT backward pass and the whole loss gradient.

Every function here has the signature of its twin in fastrnn/reference.py and trusts its
inputs: C-contiguous arrays of one float dtype, consistent non-empty shapes, sizes < 2**31
(fastrnn/_validate.py checks all that at the public boundary). The work happens in cdef
functions with the GIL released; Python only allocates the output arrays beforehand.

Notation (row vectors, batch-first): X (N, T, I), h0 (N, H), S (N, T, H), W_x (I, H),
W_s (H, H), b (H,), W_y (H, O), b_y (O,). Step t of a batch-first array A (N, T, K) is the
(N, K) matrix at A + t*K with leading dimension T*K; the whole of A is the (N*T, K) matrix
at A with leading dimension K.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemm
from ._kernels cimport (
    fr_bias_act_f32, fr_bias_act_f64, fr_act_grad_f32, fr_act_grad_f64,
    fr_colsum_f32, fr_colsum_f64, fr_add_bias_f32, fr_add_bias_f64,
    fr_softmax_f32, fr_softmax_f64, fr_mse_f32, fr_mse_f64, fr_xent_f32, fr_xent_f64,
)
from .activations import ACTIVATIONS


# ---------------------------------------------------------------------------------------------
# Precision dispatch for the C kernels (resolved at compile time for each fused specialisation)

cdef inline void bias_act(floating *Z, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                          const floating *b, int act) noexcept nogil:
    if floating is float:
        fr_bias_act_f32(Z, rows, cols, ld, b, act)
    else:
        fr_bias_act_f64(Z, rows, cols, ld, b, act)


cdef inline void act_grad(floating *G, Py_ssize_t ldg, const floating *S, Py_ssize_t lds,
                          Py_ssize_t rows, Py_ssize_t cols, int act) noexcept nogil:
    if floating is float:
        fr_act_grad_f32(G, ldg, S, lds, rows, cols, act)
    else:
        fr_act_grad_f64(G, ldg, S, lds, rows, cols, act)


cdef inline void colsum(const floating *A, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                        floating *out) noexcept nogil:
    if floating is float:
        fr_colsum_f32(A, rows, cols, ld, out)
    else:
        fr_colsum_f64(A, rows, cols, ld, out)


cdef inline void add_bias(floating *Z, Py_ssize_t rows, Py_ssize_t cols,
                          const floating *b) noexcept nogil:
    if floating is float:
        fr_add_bias_f32(Z, rows, cols, cols, b)
    else:
        fr_add_bias_f64(Z, rows, cols, cols, b)


cdef inline void softmax(floating *Z, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    if floating is float:
        fr_softmax_f32(Z, rows, cols, cols)
    else:
        fr_softmax_f64(Z, rows, cols, cols)


cdef inline double mse(floating *Z, const floating *Y, Py_ssize_t rows, Py_ssize_t cols,
                       double scale) noexcept nogil:
    if floating is float:
        return fr_mse_f32(Z, cols, Y, cols, rows, cols, scale)
    else:
        return fr_mse_f64(Z, cols, Y, cols, rows, cols, scale)


cdef inline double xent(floating *Z, const int64_t *y, Py_ssize_t rows, Py_ssize_t cols,
                        double scale) noexcept nogil:
    if floating is float:
        return fr_xent_f32(Z, cols, y, rows, cols, scale)
    else:
        return fr_xent_f64(Z, cols, y, rows, cols, scale)


# ---------------------------------------------------------------------------------------------
# The recurrence and its backward pass

cdef void recur_forward(const floating *X, const floating *h0, const floating *W_x,
                        const floating *W_s, const floating *b, floating *S,
                        int N, int T, int I, int H, int act) noexcept nogil:
    """S[:, t] = phi(X[:, t] @ W_x + S[:, t-1] @ W_s + b), S[:, -1] = h0."""
    cdef int NT = N * T, TH = T * H
    cdef int t, ld_prev
    cdef const floating *prev
    # S (N*T, H) = X (N*T, I) @ W_x (I, H): the input projection of every step, one GEMM
    gemm(False, False, NT, H, I, 1, X, I, W_x, H, 0, S, H)
    for t in range(T):
        if t == 0:
            prev, ld_prev = h0, H
        else:
            prev, ld_prev = S + (t - 1) * H, TH
        # S[:, t] (N, H) += S[:, t-1] (N, H) @ W_s (H, H)
        gemm(False, False, N, H, H, 1, prev, ld_prev, W_s, H, 1, S + t * H, TH)
        # S[:, t] = phi(S[:, t] + b), in place
        bias_act(S + t * H, N, H, TH, b, act)


cdef void recur_backward(const floating *X, const floating *h0, const floating *W_x,
                         const floating *W_s, const floating *S, floating *G, bint full_dS,
                         floating *dX, floating *dh0, floating *dW_x, floating *dW_s,
                         floating *db, floating *D,
                         int N, int T, int I, int H, int act) noexcept nogil:
    """Backpropagation through time.

    On entry G (N, T, H) holds dLoss/dS from the output layer: at every step if full_dS,
    else only at the last step (G[:, :T-1] is then scratch, never read). On exit G holds
    dA_t = dLoss/d(pre-activation of step t). dX (N, T, I) and dh0 (N, H) may be NULL (not
    wanted). D is an (N, H) scratch buffer; on exit it holds dA[:, 0].
    """
    cdef int NT = N * T, TH = T * H
    cdef int t
    cdef Py_ssize_t n, j, row           # element offsets may exceed 2**31
    cdef floating beta = 1 if full_dS else 0
    # dA_t = (dS_t + dA_{t+1} @ W_s^T) * phi'(S_t), newest step first
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            # G[:, t] (N, H) (+)= G[:, t+1] (N, H) @ W_s^T (H, H)
            gemm(False, True, N, H, H, 1, G + (t + 1) * H, TH, W_s, H, beta, G + t * H, TH)
        # G[:, t] *= phi'(S[:, t])
        act_grad(G + t * H, TH, S + t * H, TH, N, H, act)

    # Weight gradients: one GEMM over all N*T rows each (the "merged" form).
    # dW_x (I, H) = X^T (I, N*T) @ dA (N*T, H)
    gemm(True, False, I, H, NT, 1, X, I, G, H, 0, dW_x, H)
    # db (H,) = dA.sum over all rows
    colsum(G, NT, H, H, db)
    # dW_s (H, H) = sum_t S[:, t-1]^T @ dA[:, t], S[:, -1] = h0. In the flat (N*T, H) views,
    # row r of S pairs with row r+1 of dA: right for every row but each sequence's first
    # step, where S[n-1, T-1] would pair with dA[n, 0]. So those dA rows are set aside in D
    # and zeroed, one GEMM takes all shifted pairs, and the rows are put back and paired
    # with h0. (Subtracting the wrong pairs instead would cancel catastrophically when the
    # states grow large.)
    for n in range(N):
        row = n * <Py_ssize_t> TH                             # dA[n, 0]
        for j in range(H):
            D[n * H + j] = G[row + j]
            if n > 0:
                G[row + j] = 0
    if NT > 1:
        # dW_s = S_flat[:-1]^T (H, N*T-1) @ dA_flat[1:] (N*T-1, H)
        gemm(True, False, H, H, NT - 1, 1, S, H, G + H, H, 0, dW_s, H)
    for n in range(1, N):
        row = n * <Py_ssize_t> TH
        for j in range(H):
            G[row + j] = D[n * H + j]
    # dW_s += h0^T (H, N) @ dA[:, 0] (N, H)
    gemm(True, False, H, H, N, 1, h0, H, D, H, 1 if NT > 1 else 0, dW_s, H)
    if dh0 != NULL:
        # dh0 (N, H) = dA[:, 0] (N, H) @ W_s^T
        gemm(False, True, N, H, H, 1, G, TH, W_s, H, 0, dh0, H)
    if dX != NULL:
        # dX (N*T, I) = dA (N*T, H) @ W_x^T (H, I)
        gemm(False, True, NT, I, H, 1, G, H, W_x, H, 0, dX, I)


cdef double output_loss_and_grad(
        const floating *S, const floating *W_y, const floating *b_y,
        const floating *Y, const int64_t *labels, floating *Z,
        floating *dW_y, floating *db_y, floating *G,
        int N, int T, int H, int O, bint last, bint use_softmax) noexcept nogil:
    """Output layer, loss, its gradients, and dLoss/dS written into G (see recur_backward).

    Z (rows, O) is scratch for the logits and then their gradient; rows = N if last else N*T.
    Y holds real targets (linear output) or labels the class indices (softmax output).
    """
    cdef int TH = T * H
    cdef int rows = N if last else N * T
    cdef int ld_out = TH if last else H          # rows of the states the loss sees
    cdef const floating *S_out = S + (T - 1) * H if last else S
    cdef double loss
    # Z (rows, O) = S_out (rows, H) @ W_y (H, O) + b_y
    gemm(False, False, rows, O, H, 1, S_out, ld_out, W_y, O, 0, Z, O)
    add_bias(Z, rows, O, b_y)
    # loss and, in place, Z <- dLoss/dZ. Means as in PyTorch: over targets (cross-entropy)
    # or over every output element (MSE).
    if use_softmax:
        loss = xent(Z, labels, rows, O, 1.0 / rows) / rows
    else:
        loss = mse(Z, Y, rows, O, 1.0 / (<double> rows * O)) / (<double> rows * O)
    # dW_y (H, O) = S_out^T (H, rows) @ dZ (rows, O);  db_y = dZ.sum over rows
    gemm(True, False, H, O, rows, 1, S_out, ld_out, Z, O, 0, dW_y, O)
    colsum(Z, rows, O, O, db_y)
    # dLoss/dS_out (rows, H) = dZ (rows, O) @ W_y^T (O, H)
    gemm(False, True, rows, H, O, 1, Z, O, W_y, O, 0, G + (T - 1) * H if last else G, ld_out)
    return loss


# ---------------------------------------------------------------------------------------------
# Typed entry points (one specialisation per precision)

cdef void _forward(const floating[:, :, ::1] X, const floating[:, ::1] h0,
                   const floating[:, ::1] W_x, const floating[:, ::1] W_s,
                   const floating[::1] b, floating[:, :, ::1] S, int act):
    cdef int N = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_s.shape[0]
    with nogil:
        recur_forward(&X[0, 0, 0], &h0[0, 0], &W_x[0, 0], &W_s[0, 0], &b[0], &S[0, 0, 0],
                      N, T, I, H, act)


cdef void _predict(const floating[:, :, ::1] X, const floating[:, ::1] h0,
                   const floating[:, ::1] W_x, const floating[:, ::1] W_s,
                   const floating[::1] b, const floating[:, ::1] W_y, const floating[::1] b_y,
                   floating[:, :, ::1] S, floating[:, :, ::1] Yout, int act, bint use_softmax):
    cdef int N = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_s.shape[0]
    cdef int O = W_y.shape[1]
    with nogil:
        recur_forward(&X[0, 0, 0], &h0[0, 0], &W_x[0, 0], &W_s[0, 0], &b[0], &S[0, 0, 0],
                      N, T, I, H, act)
        # Y (N*T, O) = S (N*T, H) @ W_y (H, O) + b_y
        gemm(False, False, N * T, O, H, 1, &S[0, 0, 0], H, &W_y[0, 0], O, 0, &Yout[0, 0, 0], O)
        add_bias(&Yout[0, 0, 0], N * T, O, &b_y[0])
        if use_softmax:
            softmax(&Yout[0, 0, 0], N * T, O)


cdef void _backward(const floating[:, :, ::1] X, const floating[:, ::1] h0,
                    const floating[:, ::1] W_x, const floating[:, ::1] W_s,
                    const floating[:, :, ::1] S, floating[:, :, ::1] G,
                    floating[:, :, ::1] dX, floating[:, ::1] dh0, floating[:, ::1] dW_x,
                    floating[:, ::1] dW_s, floating[::1] db, floating[:, ::1] D, int act):
    cdef int N = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_s.shape[0]
    with nogil:
        recur_backward(&X[0, 0, 0], &h0[0, 0], &W_x[0, 0], &W_s[0, 0], &S[0, 0, 0],
                       &G[0, 0, 0], True, &dX[0, 0, 0], &dh0[0, 0], &dW_x[0, 0],
                       &dW_s[0, 0], &db[0], &D[0, 0], N, T, I, H, act)


cdef double _loss_and_grad(
        const floating[:, :, ::1] X, const floating[::1] Y, const int64_t[::1] labels,
        const floating[:, ::1] h0, const floating[:, ::1] W_x, const floating[:, ::1] W_s,
        const floating[::1] b, const floating[:, ::1] W_y, const floating[::1] b_y,
        floating[:, :, ::1] S, floating[:, :, ::1] G, floating[:, ::1] Z, floating[:, ::1] D,
        floating[:, :, ::1] dX, floating[:, ::1] dh0, floating[:, ::1] dW_x,
        floating[:, ::1] dW_s, floating[::1] db, floating[:, ::1] dW_y, floating[::1] db_y,
        int act, bint last, bint use_softmax, bint input_grads):
    cdef int N = X.shape[0], T = X.shape[1], I = X.shape[2], H = W_s.shape[0]
    cdef int O = W_y.shape[1]
    cdef double loss
    cdef const floating *Yp = NULL
    cdef const int64_t *labels_p = NULL
    if use_softmax:
        labels_p = &labels[0]
    else:
        Yp = &Y[0]
    with nogil:
        recur_forward(&X[0, 0, 0], &h0[0, 0], &W_x[0, 0], &W_s[0, 0], &b[0], &S[0, 0, 0],
                      N, T, I, H, act)
        loss = output_loss_and_grad(&S[0, 0, 0], &W_y[0, 0], &b_y[0], Yp, labels_p,
                                    &Z[0, 0], &dW_y[0, 0], &db_y[0], &G[0, 0, 0],
                                    N, T, H, O, last, use_softmax)
        recur_backward(&X[0, 0, 0], &h0[0, 0], &W_x[0, 0], &W_s[0, 0], &S[0, 0, 0],
                       &G[0, 0, 0], not last,
                       &dX[0, 0, 0] if input_grads else NULL,
                       &dh0[0, 0] if input_grads else NULL,
                       &dW_x[0, 0], &dW_s[0, 0], &db[0], &D[0, 0], N, T, I, H, act)
    return loss


# ---------------------------------------------------------------------------------------------
# Python-facing functions: same signatures as fastrnn.reference

def forward(X, h0, W_x, W_s, b, activation):
    """S (N, T, H): the states of the recurrence."""
    S = np.empty((X.shape[0], X.shape[1], W_s.shape[0]), dtype=X.dtype)
    cdef int act = ACTIVATIONS.index(activation)
    if X.dtype == np.float32:
        _forward[float](X, h0, W_x, W_s, b, S, act)
    else:
        _forward[double](X, h0, W_x, W_s, b, S, act)
    return S


def predict(X, h0, W_x, W_s, b, W_y, b_y, activation, output):
    """(Y (N, T, O), S (N, T, H)): outputs (softmax probabilities if output == "softmax")."""
    N, T, H, O = X.shape[0], X.shape[1], W_s.shape[0], W_y.shape[1]
    S = np.empty((N, T, H), dtype=X.dtype)
    Y = np.empty((N, T, O), dtype=X.dtype)
    cdef int act = ACTIVATIONS.index(activation)
    cdef bint use_softmax = output == "softmax"
    if X.dtype == np.float32:
        _predict[float](X, h0, W_x, W_s, b, W_y, b_y, S, Y, act, use_softmax)
    else:
        _predict[double](X, h0, W_x, W_s, b, W_y, b_y, S, Y, act, use_softmax)
    return Y, S


def backward(X, h0, W_x, W_s, b, S, dS, activation):
    """BPTT gradients {"X", "h0", "W_x", "W_s", "b"} given dS = dLoss/dS (N, T, H)."""
    N, T, I, H = X.shape[0], X.shape[1], X.shape[2], W_s.shape[0]
    dt = X.dtype
    G = np.array(dS, dtype=dt, order="C", copy=True)   # becomes dA in place
    grads = {"X": np.empty_like(X), "h0": np.empty((N, H), dt), "W_x": np.empty((I, H), dt),
             "W_s": np.empty((H, H), dt), "b": np.empty(H, dt)}
    D = np.empty((N, H), dt)
    cdef int act = ACTIVATIONS.index(activation)
    if dt == np.float32:
        _backward[float](X, h0, W_x, W_s, S, G, grads["X"], grads["h0"], grads["W_x"],
                         grads["W_s"], grads["b"], D, act)
    else:
        _backward[double](X, h0, W_x, W_s, S, G, grads["X"], grads["h0"], grads["W_x"],
                          grads["W_s"], grads["b"], D, act)
    return grads


def loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation, output, target, input_grads):
    """(loss, grads): the mean loss and its gradient for every parameter, in one pass.

    Y: real targets (N, T, O) / (N, O) for output "linear", int64 labels (N, T) / (N,) for
    "softmax"; target "sequence" scores every step, "last" only the last one. grads has
    "W_x", "W_s", "b", "W_y", "b_y", and "X", "h0" too if input_grads.
    """
    N, T, I, H, O = X.shape[0], X.shape[1], X.shape[2], W_s.shape[0], W_y.shape[1]
    dt = X.dtype
    cdef bint last = target == "last"
    cdef bint use_softmax = output == "softmax"
    cdef int act = ACTIVATIONS.index(activation)
    rows = N if last else N * T
    S = np.empty((N, T, H), dt)
    G = np.empty((N, T, H), dt)
    Z = np.empty((rows, O), dt)
    D = np.empty((N, H), dt)
    grads = {"W_x": np.empty((I, H), dt), "W_s": np.empty((H, H), dt), "b": np.empty(H, dt),
             "W_y": np.empty((H, O), dt), "b_y": np.empty(O, dt)}
    if input_grads:
        dX, dh0 = np.empty_like(X), np.empty((N, H), dt)
        grads["X"], grads["h0"] = dX, dh0
    else:
        dX, dh0 = np.empty((1, 1, 1), dt), np.empty((1, 1), dt)   # never written
    if use_softmax:
        labels, Yflat = Y.reshape(-1), np.empty(1, dt)
    else:
        labels, Yflat = np.empty(1, np.int64), Y.reshape(-1)
    if dt == np.float32:
        loss = _loss_and_grad[float](
            X, Yflat, labels, h0, W_x, W_s, b, W_y, b_y, S, G, Z, D, dX, dh0,
            grads["W_x"], grads["W_s"], grads["b"], grads["W_y"], grads["b_y"],
            act, last, use_softmax, input_grads)
    else:
        loss = _loss_and_grad[double](
            X, Yflat, labels, h0, W_x, W_s, b, W_y, b_y, S, G, Z, D, dX, dh0,
            grads["W_x"], grads["W_s"], grads["b"], grads["W_y"], grads["b_y"],
            act, last, use_softmax, input_grads)
    return loss, grads


cdef void _act_rows(floating[:, ::1] Z, int act):
    with nogil:
        bias_act(&Z[0, 0], Z.shape[0], Z.shape[1], Z.shape[1], NULL, act)


def activation_(Z, activation):
    """Z <- phi(Z) in place with the C kernel (Z: C-contiguous float32/float64). For tests."""
    cdef int act = ACTIVATIONS.index(activation)
    flat = Z.reshape(1, -1)
    if Z.dtype == np.float32:
        _act_rows[float](flat, act)
    else:
        _act_rows[double](flat, act)
    return Z
