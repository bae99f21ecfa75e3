"""The GRU cell: its spec and its NumPy twin (the compiled twin is fastrnn/cells/_gru.pyx,
same functions and signatures); inputs are trusted.
Row vectors, batch-first, gates stacked along the last axis in PyTorch's order [r, z, n],
PyTorch's "linear before reset" cell:

    a_t = x_t W_x + b                 s_t = h_{t-1} W_s + b_s       (N, 3H) = [.._r, .._z, .._n]
    r_t = sigmoid(a_r + s_r)          z_t = sigmoid(a_z + s_z)
    n_t = tanh(a_n + r_t * s_n)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}  =  (h_{t-1} - n_t) * z_t + n_t      h_{-1} = h0

with X (N, T, I), W_x (I, 3H), W_s (H, 3H), b and b_s (3H,), states Hs (N, T, H). The output
layer is the shared head (fastrnn/head.py) on Hs. With lengths (N,), sequence n ends after
lengths[n] steps: later steps keep its state, are not scored and get no gradient.

Backward, with dh_t = dLoss/dh_t (all paths); the input side and the recurrent side differ
only in the n block, which the recurrent side sees through r_t:

    dh_t   = dHs_t + dzs_{t+1} W_s^T + dh_{t+1} * z_{t+1}
    dza_n  = dh_t * (1 - z_t) * (1 - n_t^2)
    dza_z  = dh_t * (h_{t-1} - n_t) * z_t (1 - z_t)
    dza_r  = dza_n * s_n * r_t (1 - r_t)
    dza_t  = [dza_r, dza_z, dza_n]    dzs_t = [dza_r, dza_z, dza_n * r_t]
    dW_x = sum_t x_t^T dza_t          db   = sum_t sum_n dza_t       dx_t = dza_t W_x^T
    dW_s = sum_t h_{t-1}^T dzs_t      db_s = sum_t sum_n dzs_t
    dh0  = dzs_0 W_s^T + dh_0 * z_0

Fast without leaving NumPy: the input projection of all steps is one matmul, each step one
matmul, the loops work in place on views, and each weight gradient is one matmul over all
N*T rows (the recurrent side's from the stored dzs, not per-step products).
"""
import numpy as np
from scipy.special import expit

from .. import head
from . import layer
from .spec import CellSpec, Weight

GRU = CellSpec(
    name="gru",
    gates=("r", "z", "n"),                  # PyTorch's order
    states=("h",),
    weights=(Weight("W_x", "I", 3), Weight("W_s", "H", 3), Weight("b", None, 3),
             Weight("b_s", None, 3)),
    options=(),
    torch_mode="GRU",
    torch_bias="separate",                  # b = bias_ih, b_s = bias_hh (r multiplies b_s[n])
    buffers_per_step=5,                     # H, the three activated gates, h W_s[:, n] + b_s[n]
    numpy_module="fastrnn.cells.gru",
    compiled_module="fastrnn.cells._gru",
)


def forward(X, h0, W_x, W_s, b, b_s, lengths=None, reverse=False):
    """Hs (N, T, H): the states of every step.

    X (N, T, I), h0 (N, H), W_x (I, 3H), W_s (H, 3H), b and b_s (3H,), lengths (N,) or None.
    reverse: run the recurrence backwards in time (fastrnn/cells/layer.py).
    """
    if reverse:
        return layer.reverse_forward(forward, X, (h0,), (W_x, W_s, b, b_s), (), lengths)
    return _forward(X, h0, W_x, W_s, b, b_s, lengths)[0]


def forward_train(X, h0, W_x, W_s, b, b_s, lengths, reverse):
    """((Hs,), stash): one layer of a deep or bidirectional network (fastrnn/stack.py)."""
    return layer.forward_train(forward, X, (h0,), (W_x, W_s, b, b_s), (), lengths, reverse)


def backward_train(X, h0, W_x, W_s, b, b_s, states, stash, dHs, lengths, reverse,
                   input_grads):
    """BPTT gradients {"W_x", "W_s", "b", "b_s"} (and "X", "h0" if input_grads) of the layer
    that forward_train ran, given dHs = dLoss/dHs (N, T, H) from outside the recurrence."""
    return layer.backward_train(backward, GRU, X, (h0,), (W_x, W_s, b, b_s), states, dHs, (),
                                lengths, reverse, input_grads)


def predict(X, h0, W_x, W_s, b, b_s, W_y, b_y, output, lengths=None):
    """(Y (N, T, O), Hs (N, T, H)): the outputs (softmax probabilities if output is
    "softmax") and the states. W_y (H, O), b_y (O,)."""
    Hs = _forward(X, h0, W_x, W_s, b, b_s, lengths)[0]
    return head.predict(Hs, W_y, b_y, output), Hs


def backward(X, h0, W_x, W_s, b, b_s, Hs, dHs, lengths=None):
    """BPTT gradients {"X", "h0", "W_x", "W_s", "b", "b_s"} given the states Hs (N, T, H) of
    forward() and dHs (N, T, H) = dLoss/dHs from outside the recurrence. The gates are
    recomputed from X and the states."""
    H_prev = _previous(h0, Hs)
    G = X @ W_x                      # a_t and s_t for every step at once: one matmul each
    G += b
    S = H_prev @ W_s
    S += b_s
    _gates_(G, S)
    S_n = S[..., 2 * h0.shape[1]:]
    dZa, dZs, dh0 = _backpropagate_(np.array(dHs, copy=True), H_prev, G, S_n, W_s, lengths)
    grads = _weight_grads(X, H_prev, W_x, dZa, dZs)
    grads["h0"] = dh0
    return grads


def loss_and_grad(X, Y, h0, W_x, W_s, b, b_s, W_y, b_y, output, target, input_grads,
                  lengths=None, return_state=False, state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss of the head (fastrnn.head.loss_and_grad) on Hs and its
    gradient for every parameter.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,) for
    "softmax" (target "sequence" / "last"). grads has "W_x", "W_s", "b", "b_s", "W_y", "b_y",
    and "X", "h0" if input_grads. With return_state, returns (loss, grads, h_last) with h_last
    (N, H) the state at T-1 (each sequence's last valid state). With state_grad_norms,
    grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dh_t|| per sequence (all paths
    summed; 0 past the end).
    """
    N, T, _ = X.shape
    Hs, G, S_n = _forward(X, h0, W_x, W_s, b, b_s, lengths)
    loss, dHs, dW_y, db_y = head.loss_and_grad(Hs, W_y, b_y, Y, output, target, lengths,
                                               sample_weight)
    norms = np.zeros((N, T)) if state_grad_norms else None
    H_prev = _previous(h0, Hs)
    dZa, dZs, dh0 = _backpropagate_(dHs, H_prev, G, S_n, W_s, lengths, norms)
    grads = _weight_grads(X, H_prev, W_x, dZa, dZs, input_grads)
    if input_grads:
        grads["h0"] = dh0
    grads["W_y"], grads["b_y"] = dW_y, db_y
    if state_grad_norms:
        grads["state_grad_norms"] = norms
    if return_state:
        return loss, grads, Hs[:, -1].copy()
    return loss, grads


# ---------------------------------------------------------------------------------------------

def _forward(X, h0, W_x, W_s, b, b_s, lengths=None):
    """(Hs, G, S_n): the states, the activated gates G (N, T, 3H) = [r, z, n] and the recurrent
    n-block products S_n (N, T, H) = h_{t-1} W_s[:, n] + b_s[n] of every step."""
    N, T, _ = X.shape
    H = h0.shape[1]
    G = X @ W_x                      # (N, T, 3H): x_t W_x for every step at once
    G += b
    Hs = np.empty((N, T, H), dtype=X.dtype)
    S_n = np.empty((N, T, H), dtype=X.dtype)
    s = np.empty((N, 3 * H), dtype=X.dtype)
    h_prev = h0
    for t in range(T):
        np.matmul(h_prev, W_s, out=s)        # s_t = h_{t-1} W_s + b_s
        s += b_s
        _gates_(G[:, t], s)                  # view: a_t becomes [r, z, n]
        S_n[:, t] = s[:, 2 * H:]
        _, z, n = np.split(G[:, t], 3, axis=1)
        h = Hs[:, t]
        np.subtract(h_prev, n, out=h)        # h_t = (h_{t-1} - n) * z + n
        h *= z
        h += n
        if lengths is not None:
            ended = t >= lengths             # these sequences keep their state
            h[ended] = h_prev[ended]
        h_prev = h
    return Hs, G, S_n


def _gates_(A, S):
    """A (..., 3H) = x W_x + b <- [r, z, n], in place, given S (..., 3H) = h W_s + b_s:
    r = sigmoid(a_r + s_r), z = sigmoid(a_z + s_z), n = tanh(a_n + r * s_n). Returns A."""
    H = A.shape[-1] // 3
    rz, n = A[..., :2 * H], A[..., 2 * H:]
    rz += S[..., :2 * H]
    expit(rz, out=rz)
    n += A[..., :H] * S[..., 2 * H:]
    np.tanh(n, out=n)
    return A


def _gate_derivatives(G):
    """[r (1 - r), z (1 - z), 1 - n^2] from the activated gates G (..., 3H), as a new array."""
    dG = np.subtract(1, G)
    dG *= G                                  # sigmoid' = s (1 - s) on the r and z blocks
    H = G.shape[-1] // 3
    n, dn = G[..., 2 * H:], dG[..., 2 * H:]
    np.square(n, out=dn)                     # tanh' = 1 - n^2 on the n block
    np.subtract(1, dn, out=dn)
    return dG


def _backpropagate_(dH, H_prev, G, S_n, W_s, lengths=None, state_norms=None):
    """(dZa, dZs, dh0): the gradients dZa (N, T, 3H) with respect to the input side a_t and
    dZs (N, T, 3H) with respect to the recurrent side s_t of every step, and dh0 (N, H).

    dH (N, T, H) holds dLoss/dHs from outside the recurrence on entry and the total dLoss/dh_t
    on exit. state_norms (N, T), if given, receives ||dLoss/dh_t|| per sequence.
    """
    N, T, H = dH.shape
    if lengths is not None:                  # no gradient past the end
        dH[np.arange(T) >= lengths[:, None]] = 0
    dG = _gate_derivatives(G)                # for all steps at once
    dZa = np.empty_like(G)
    dZs = np.empty_like(G)
    tmp = np.empty((N, H), dtype=dH.dtype)
    for t in range(T - 1, -1, -1):
        dh = dH[:, t]                        # dLoss/dh_t = dHs_t + dzs_{t+1} W_s^T
        if t < T - 1:                        #              + dh_{t+1} * z_{t+1}
            np.matmul(dZs[:, t + 1], W_s.T, out=tmp)
            dh += tmp
            dh += dH[:, t + 1] * G[:, t + 1, H:2 * H]
        if state_norms is not None:
            state_norms[:, t] = np.linalg.norm(dh.astype(np.float64), axis=1)
        _step_grads_(dZa[:, t], dZs[:, t], dh, G[:, t], dG[:, t], S_n[:, t], H_prev[:, t])
    dh0 = dZs[:, 0] @ W_s.T
    dh0 += dH[:, 0] * G[:, 0, H:2 * H]
    return dZa, dZs, dh0


def _step_grads_(dza, dzs, dh, gates, dgates, s_n, h_prev):
    """dza, dzs (N, 3H) <- dLoss/da_t, dLoss/ds_t, the input- and recurrent-side gradients of
    one step, from dh = dLoss/dh_t. gates [r, z, n] and dgates [r', z', n'] (N, 3H) of step t,
    s_n = h_{t-1} W_s[:, n] + b_s[n].

        dza_n = dh * (1 - z) * n'    dza_z = dh * (h_{t-1} - n) * z'    dza_r = dza_n * s_n * r'
        dzs   = [dza_r, dza_z, dza_n * r]
    """
    H = dh.shape[1]
    r, z, n = np.split(gates, 3, axis=1)
    dr, dz, dn = np.split(dza, 3, axis=1)
    np.multiply(dh, 1 - z, out=dn)                     # dLoss/dn
    dn *= dgates[:, 2 * H:]                            # through tanh: dLoss/da_n
    np.multiply(dn, s_n, out=dr)                       # dLoss/dr
    np.subtract(h_prev, n, out=dz)                     # dLoss/dz
    dz *= dh
    dza[:, :2 * H] *= dgates[:, :2 * H]                # through the sigmoids
    dzs[:, :2 * H] = dza[:, :2 * H]
    np.multiply(dn, r, out=dzs[:, 2 * H:])             # s_n enters as r * s_n


def _previous(h0, Hs):
    """(N, T, H): the states h_{t-1} of every step, h_{-1} = h0."""
    return np.concatenate([h0[:, None], Hs[:, :-1]], axis=1)


def _weight_grads(X, H_prev, W_x, dZa, dZs, input_grads=True):
    """Weight (and input) gradients from dZa, dZs: one matmul over all N*T rows for each."""
    N, T, I = X.shape
    H = H_prev.shape[2]
    dZa_flat = dZa.reshape(N * T, 3 * H)
    dZs_flat = dZs.reshape(N * T, 3 * H)
    grads = {
        "W_x": X.reshape(N * T, I).T @ dZa_flat,
        "b": dZa_flat.sum(axis=0),
        "W_s": H_prev.reshape(N * T, H).T @ dZs_flat,
        "b_s": dZs_flat.sum(axis=0),
    }
    if input_grads:
        grads["X"] = dZa @ W_x.T
    return grads
