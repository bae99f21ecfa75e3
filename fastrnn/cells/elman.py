"""The Elman cell: its spec and its NumPy twin (the compiled twin is fastrnn/cells/_elman.pyx).

    A_t = X_t W_x + S_{t-1} W_s + b        S_t = phi(A_t)        S_{-1} = h0
    Z_t = S_t W_y + b_y                    Y_t = Z_t  or  softmax(Z_t)     (fastrnn.head)

Row vectors, batch-first: X (N, T, I), S (N, T, H), Y (N, T, O); W_x (I, H), W_s (H, H),
b (H,). With lengths (N,), sequence n ends after lengths[n] steps: later steps keep its
state (S_t = S_{t-1}), are not scored and get no gradient.

The functions here have the signatures of their compiled twins and trust their inputs
(fastrnn/_validate.py checked them). What makes them fast without leaving NumPy: the input
projection of all steps is one matmul, the loop body works in place on views, phi' is
evaluated for all steps at once, and each weight gradient is one matmul over all steps.
"""
import numpy as np

from .. import activations, head
from . import layer
from .spec import CellSpec, Weight

ELMAN = CellSpec(
    name="elman",
    gates=("a",),
    states=("h",),
    weights=(Weight("W_x", "I", 1), Weight("W_s", "H", 1), Weight("b", None, 1)),
    options=("activation",),
    torch_mode="RNN",
    torch_bias="sum",                       # b = bias_ih + bias_hh
    buffers_per_step=1,                     # S
    numpy_module="fastrnn.cells.elman",
    compiled_module="fastrnn.cells._elman",
)


def forward(X, h0, W_x, W_s, b, activation, lengths=None, reverse=False):
    """S (N, T, H): the states of the recurrence; reverse: run it backwards in time
    (fastrnn/cells/layer.py)."""
    if reverse:
        return layer.reverse_forward(forward, X, (h0,), (W_x, W_s, b), (activation,), lengths)
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


def forward_train(X, h0, W_x, W_s, b, activation, lengths, reverse):
    """((S,), stash): one layer of a deep or bidirectional network (fastrnn/stack.py)."""
    return layer.forward_train(forward, X, (h0,), (W_x, W_s, b), (activation,), lengths,
                               reverse)


def backward_train(X, h0, W_x, W_s, b, states, stash, dS, activation, lengths, reverse,
                   input_grads):
    """BPTT gradients {"W_x", "W_s", "b"} (and "X", "h0" if input_grads) of the layer that
    forward_train ran, given dS = dLoss/dS (N, T, H) from outside the recurrence."""
    return layer.backward_train(backward, ELMAN, X, (h0,), (W_x, W_s, b), states, dS,
                                (activation,), lengths, reverse, input_grads)


def predict(X, h0, W_x, W_s, b, W_y, b_y, activation, output, lengths=None):
    """(Y (N, T, O), S (N, T, H)): outputs (softmax probabilities if output == "softmax")."""
    S = forward(X, h0, W_x, W_s, b, activation, lengths)
    return head.predict(S, W_y, b_y, output), S


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
                  lengths=None, return_state=False, state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss and its gradient for every parameter.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,)
    for "softmax"; target "sequence" scores every step, "last" only the last one (with
    lengths: each sequence's last valid step). grads has "W_x", "W_s", "b", "W_y", "b_y",
    and "X", "h0" too if input_grads. With return_state, returns (loss, grads, h_last).
    With state_grad_norms, grads["state_grad_norms"] (N, T) holds ||dLoss/dS[n, t]||.
    """
    N, T, _ = X.shape
    S = forward(X, h0, W_x, W_s, b, activation, lengths)
    loss, dS, dW_y, db_y = head.loss_and_grad(S, W_y, b_y, Y, output, target, lengths,
                                               sample_weight)
    norms = np.empty((N, T)) if state_grad_norms else None
    _backpropagate_(dS, S, W_s, activation, lengths, norms)   # dS becomes dA
    grads = _recurrence_grads(X, h0, W_x, W_s, S, dS, input_grads)
    if state_grad_norms:
        grads["state_grad_norms"] = norms
    grads["W_y"], grads["b_y"] = dW_y, db_y
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
