"""NumPy reference backend: the textbook equations, as fast as NumPy allows.

Same functions and signatures as the Cython backend (fastrnn/_elman.pyx); inputs are trusted
(fastrnn/_validate.py checked them). Row vectors, batch-first:

    A_t = X_t W_x + S_{t-1} W_s + b        S_t = phi(A_t)        S_{-1} = h0
    Z_t = S_t W_y + b_y                    Y_t = Z_t  or  softmax(Z_t)

with X (N, T, I), S (N, T, H), Y (N, T, O). With lengths (N,), sequence n ends after
lengths[n] steps: later steps keep its state (S_t = S_{t-1}), are not scored and get no
gradient. What makes it fast without leaving NumPy: the
input projection of all steps is one matmul, the loop body works in place on views, phi' is
evaluated for all steps at once, and each weight gradient is one matmul over all steps.
"""
import numpy as np

from . import activations


def forward(X, h0, W_x, W_s, b, activation, lengths=None):
    """S (N, T, H): the states of the recurrence."""
    N, T, _ = X.shape
    S = X @ W_x                      # (N, T, H): X_t W_x for every step at once
    S += b
    prev = h0
    tmp = np.empty_like(h0)
    for t in range(T):
        s_t = S[:, t]                # view: S_t = phi(X_t W_x + b + S_{t-1} W_s)
        np.matmul(prev, W_s, out=tmp)
        s_t += tmp
        activations.apply_(activation, s_t)
        if lengths is not None:
            ended = t >= lengths     # these sequences keep their state
            s_t[ended] = prev[ended]
        prev = s_t
    return S


def predict(X, h0, W_x, W_s, b, W_y, b_y, activation, output, lengths=None):
    """(Y (N, T, O), S (N, T, H)): outputs (softmax probabilities if output == "softmax")."""
    S = forward(X, h0, W_x, W_s, b, activation, lengths)
    Y = S @ W_y
    Y += b_y
    if output == "softmax":
        Y = _softmax_(Y)
    return Y, S


def backward(X, h0, W_x, W_s, b, S, dS, activation, lengths=None):
    """BPTT gradients {"X", "h0", "W_x", "W_s", "b"} given dS = dLoss/dS (N, T, H).

        dA_t = (dS_t + dA_{t+1} W_s^T) * phi'(A_t)
        dW_x = sum_t X_t^T dA_t     dW_s = sum_t S_{t-1}^T dA_t     db = sum_t sum_n dA_t
        dX_t = dA_t W_x^T           dh0 = dA_0 W_s^T
    """
    dA = np.array(dS, copy=True)
    _backpropagate_(dA, S, W_s, activation, lengths)
    return _recurrence_grads(X, h0, W_x, W_s, S, dA)


def loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation, output, target, input_grads,
                  lengths=None, return_state=False, state_grad_norms=False):
    """(loss, grads): the mean loss and its gradient for every parameter.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,)
    for "softmax"; target "sequence" scores every step, "last" only the last one (with
    lengths: each sequence's last valid step). grads has "W_x", "W_s", "b", "W_y", "b_y",
    and "X", "h0" too if input_grads. With return_state, returns (loss, grads, h_last).
    With state_grad_norms, grads["state_grad_norms"] (N, T) holds ||dLoss/dS[n, t]||.
    """
    N, T, _ = X.shape
    S = forward(X, h0, W_x, W_s, b, activation, lengths)
    S_out = S[:, -1] if target == "last" else S          # the states the loss sees
    Z = S_out @ W_y + b_y                                # (last valid state: carried to T-1)
    scored = None if lengths is None or target == "last" else np.arange(T) < lengths[:, None]
    if output == "softmax":
        loss, dZ = _cross_entropy(Z, Y, scored)
    else:
        loss, dZ = _mse(Z, Y, scored)
    dS_out = dZ @ W_y.T
    if target == "last":
        dS = np.zeros_like(S)
        last = np.full(N, T - 1) if lengths is None else lengths - 1
        dS[np.arange(N), last] = dS_out
    else:
        dS = dS_out
    norms = np.empty((N, T)) if state_grad_norms else None
    _backpropagate_(dS, S, W_s, activation, lengths, norms)   # dS becomes dA
    grads = _recurrence_grads(X, h0, W_x, W_s, S, dS, input_grads)
    if state_grad_norms:
        grads["state_grad_norms"] = norms
    O = W_y.shape[1]
    grads["W_y"] = S_out.reshape(-1, S.shape[2]).T @ dZ.reshape(-1, O)
    grads["b_y"] = dZ.reshape(-1, O).sum(axis=0)
    if return_state:
        return loss, grads, S[:, -1].copy()
    return loss, grads


# ---------------------------------------------------------------------------------------------

def _backpropagate_(dA, S, W_s, activation, lengths=None, state_norms=None):
    """dA (N, T, H) holds dLoss/dS on entry and dLoss/dA (pre-activation) on exit.
    state_norms (N, T), if given, receives ||dLoss/dS_t|| per sequence (all paths summed)."""
    dphi = activations.derivative(activation, S)           # phi'(A_t) for all steps at once
    T = S.shape[1]
    if lengths is not None:                                # no gradient past the end
        dphi[np.arange(T) >= lengths[:, None]] = 0
    tmp = np.empty_like(dA[:, 0])
    for t in range(T - 1, -1, -1):
        da_t = dA[:, t]                  # dLoss/dS_t = dS_t + dA_{t+1} W_s^T
        if t < T - 1:
            np.matmul(dA[:, t + 1], W_s.T, out=tmp)
            da_t += tmp
        if state_norms is not None:
            state_norms[:, t] = np.linalg.norm(da_t.astype(np.float64), axis=1)
        da_t *= dphi[:, t]               # dA_t = dLoss/dS_t * phi'(A_t)


def _recurrence_grads(X, h0, W_x, W_s, S, dA, input_grads=True):
    """Weight (and input) gradients from dA: one matmul over all N*T rows for each."""
    N, T, I = X.shape
    H = S.shape[2]
    S_prev = np.concatenate([h0[:, None], S[:, :-1]], axis=1)   # S_{t-1}, S_{-1} = h0
    dA_flat = dA.reshape(N * T, H)
    grads = {
        "W_x": X.reshape(N * T, I).T @ dA_flat,
        "W_s": S_prev.reshape(N * T, H).T @ dA_flat,
        "b": dA_flat.sum(axis=0),
    }
    if input_grads:
        grads["X"] = dA @ W_x.T
        grads["h0"] = dA[:, 0] @ W_s.T
    return grads


def _softmax_(Z):
    """Row-wise softmax over the last axis, in place."""
    Z -= Z.max(axis=-1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=-1, keepdims=True)
    return Z


def _mse(Z, Y, scored=None):
    """mean((Z - Y)^2) over every element (of the scored rows: scored is a boolean mask
    over Z's leading axes, or None), and its gradient 2 (Z - Y) / count."""
    D = Z - Y
    if scored is not None:
        D[~scored] = 0
    count = D.size if scored is None else int(scored.sum()) * D.shape[-1]
    loss = float(np.dot(D.ravel(), D.ravel())) / count
    D *= 2.0 / count
    return loss, D


def _cross_entropy(Z, labels, scored=None):
    """mean over (scored) rows of -log softmax(Z)[label], and its gradient
    (softmax - onehot) / rows; scored: boolean mask over Z's leading axes, or None."""
    shape = Z.shape
    Z = Z.reshape(-1, shape[-1])
    if scored is not None:                   # score only these rows: gradient 0 elsewhere
        keep = scored.reshape(-1)
        grad = np.zeros_like(Z)
        loss, grad[keep] = _cross_entropy(Z[keep], labels.reshape(-1)[keep])
        return loss, grad.reshape(shape)
    n_rows = Z.shape[0]
    rows, labels = np.arange(n_rows), labels.reshape(-1)
    Z = Z - Z.max(axis=1, keepdims=True)      # log softmax(Z) = Z - m - log sum exp(Z - m)
    E = np.exp(Z)
    sums = E.sum(axis=1, keepdims=True)
    loss = float(np.sum(np.log(sums[:, 0]) - Z[rows, labels])) / n_rows
    P = E
    P /= sums
    P[rows, labels] -= 1
    P /= n_rows
    return loss, P.reshape(shape)
