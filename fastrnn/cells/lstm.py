"""The LSTM cell: its spec and its NumPy twin (the compiled twin is fastrnn/cells/_lstm.pyx,
same functions and signatures); inputs are trusted.
Row vectors, batch-first, gates stacked along the last axis in PyTorch's order [i, f, g, o]:

    z_t = x_t W_x + h_{t-1} W_s + b                         (N, 4H) = [z_i, z_f, z_g, z_o]
    i_t = sigmoid(z_i)   f_t = sigmoid(z_f)   g_t = tanh(z_g)   o_t = sigmoid(z_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)                                    h_{-1} = h0, c_{-1} = c0

with X (N, T, I), W_x (I, 4H), W_s (H, 4H), b (4H,), states Hs, Cs (N, T, H). Without a
forget gate (forget_gate=False, the 1997 cell) f_t is exactly 1: c_t = c_{t-1} + i_t * g_t,
and the f blocks of W_x, W_s, b are unused (zero gradient). The output layer is the shared
head (fastrnn/head.py) on Hs. With lengths (N,), sequence n ends after lengths[n] steps: later
steps keep its state (h and c), are not scored and get no gradient.

Backward, with dh_t = dLoss/dh_t (all paths) and dc_t = dLoss/dc_t (all paths):

    dh_t = dHs_t + dz_{t+1} W_s^T
    dc_t = dCs_t + dc_{t+1} * f_{t+1} + dh_t * o_t * (1 - tanh(c_t)^2)
    dz_t = [dc_t * g_t * i_t (1 - i_t),   dc_t * c_{t-1} * f_t (1 - f_t),
            dc_t * i_t * (1 - g_t^2),     dh_t * tanh(c_t) * o_t (1 - o_t)]
    dW_x = sum_t x_t^T dz_t    dW_s = sum_t h_{t-1}^T dz_t    db = sum_t sum_n dz_t
    dx_t = dz_t W_x^T          dh0 = dz_0 W_s^T               dc0 = dc_0 * f_0

Fast without leaving NumPy: the input projection of all steps is one matmul, each step one
matmul, the loops work in place on views, and each weight gradient is one matmul over all
N*T rows.
"""
import numpy as np
from scipy.special import expit

from .. import _validate, head
from . import layer
from .spec import CellSpec, Weight


def init_biases(params, H, rng, forget_bias=1.0, chrono=None):
    """The LSTM's own bias initialisation, after the scheme (in place on params["b"]):

    forget_bias: added to the forget gate's bias b_f. 1.0 (the default) follows Jozefowicz,
        Zaremba & Sutskever, "An Empirical Exploration of Recurrent Network Architectures",
        ICML 2015 (Keras' unit_forget_bias=True): the cell starts out remembering. 0 keeps
        the scheme's bias (PyTorch's nn.LSTM init with scheme "uniform").
    chrono: T_max, or None. The chrono initialisation of Tallec & Ollivier, "Can recurrent
        neural networks warp time?", ICLR 2018: b_f = log(u), u ~ U[1, T_max - 1], and
        b_i = -b_f, so the cell's characteristic forgetting times spread up to about T_max
        steps. Replaces the scheme's b_f and b_i (forget_bias is then not added).
    """
    forget_bias = _validate.real(forget_bias, "forget_bias")
    b = params["b"]
    b_i, b_f = b[0:H], b[H:2 * H]
    if chrono is None:
        b_f += forget_bias
        return
    T_max = _validate.count(chrono, "chrono")
    if T_max < 3:
        raise ValueError(f"chrono (T_max) must be at least 3 (b_f ~ log U[1, T_max - 1]); "
                         f"got {T_max}")
    b_f[...] = np.log(rng.uniform(1.0, T_max - 1.0, size=H))
    b_i[...] = -b_f

LSTM = CellSpec(
    name="lstm",
    gates=("i", "f", "g", "o"),             # PyTorch's order
    states=("h", "c"),
    weights=(Weight("W_x", "I", 4), Weight("W_s", "H", 4), Weight("b", None, 4)),
    options=("forget_gate",),
    torch_mode="LSTM",
    torch_bias="sum",                       # b = bias_ih + bias_hh
    buffers_per_step=6,                     # H, C and the four activated gates
    numpy_module="fastrnn.cells.lstm",
    compiled_module="fastrnn.cells._lstm",
    init_biases=init_biases,
)


def forward(X, h0, c0, W_x, W_s, b, forget_gate, lengths=None, reverse=False):
    """(Hs, Cs), each (N, T, H): the hidden and cell states of every step.

    X (N, T, I), h0 and c0 (N, H), W_x (I, 4H), W_s (H, 4H), b (4H,), lengths (N,) or None.
    reverse: run the recurrence backwards in time (fastrnn/cells/layer.py).
    """
    if reverse:
        return layer.reverse_forward(forward, X, (h0, c0), (W_x, W_s, b), (forget_gate,),
                                     lengths)
    Hs, Cs, _ = _forward(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    return Hs, Cs


def forward_train(X, h0, c0, W_x, W_s, b, forget_gate, lengths, reverse):
    """((Hs, Cs), stash): one layer of a deep or bidirectional network (fastrnn/stack.py)."""
    return layer.forward_train(forward, X, (h0, c0), (W_x, W_s, b), (forget_gate,), lengths,
                               reverse)


def backward_train(X, h0, c0, W_x, W_s, b, states, stash, dHs, forget_gate, lengths, reverse,
                   input_grads):
    """BPTT gradients {"W_x", "W_s", "b"} (and "X", "h0", "c0" if input_grads) of the layer
    that forward_train ran, given dHs = dLoss/dHs (N, T, H) from outside the recurrence."""
    return layer.backward_train(backward, LSTM, X, (h0, c0), (W_x, W_s, b), states, dHs,
                                (forget_gate,), lengths, reverse, input_grads)


def predict(X, h0, c0, W_x, W_s, b, W_y, b_y, forget_gate, output, lengths=None):
    """(Y (N, T, O), Hs (N, T, H), Cs (N, T, H)): the outputs (softmax probabilities if
    output is "softmax") and the hidden and cell states. W_y (H, O), b_y (O,)."""
    Hs, Cs, _ = _forward(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    return head.predict(Hs, W_y, b_y, output), Hs, Cs


def backward(X, h0, c0, W_x, W_s, b, Hs, Cs, dHs, dCs, forget_gate, lengths=None):
    """BPTT gradients {"X", "h0", "c0", "W_x", "W_s", "b"} given the states Hs, Cs (N, T, H)
    of forward() and dHs, dCs (N, T, H): dLoss/dHs and dLoss/dCs from outside the recurrence
    (dCs is usually zeros). The gates are recomputed from X and the states."""
    H_prev, C_prev = _previous(h0, Hs), _previous(c0, Cs)
    G = X @ W_x                      # z_t for every step at once: one matmul each
    G += b
    G += H_prev @ W_s
    _gates_(G, forget_gate)
    dZ, dh0, dc0 = _backpropagate_(np.array(dHs, copy=True), np.array(dCs, copy=True),
                                   C_prev, Cs, G, W_s, lengths)
    grads = _weight_grads(X, H_prev, W_x, dZ)
    grads["h0"], grads["c0"] = dh0, dc0
    return grads


def loss_and_grad(X, Y, h0, c0, W_x, W_s, b, W_y, b_y, forget_gate, output, target,
                  input_grads, lengths=None, return_state=False, state_grad_norms=False,
                  sample_weight=None):
    """(loss, grads): the mean loss of the head (fastrnn.head.loss_and_grad) on Hs and its
    gradient for every parameter.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,) for
    "softmax" (target "sequence" / "last"). grads has "W_x", "W_s", "b", "W_y", "b_y", and
    "X", "h0", "c0" if input_grads. With return_state, returns (loss, grads, (h_last, c_last))
    with h_last, c_last (N, H) the states at T-1 (each sequence's last valid state). With
    state_grad_norms, grads["state_grad_norms"] and grads["cell_grad_norms"] (N, T) float64
    hold ||dLoss/dh_t|| and ||dLoss/dc_t|| per sequence (all paths summed; 0 past the end).
    """
    N, T, _ = X.shape
    Hs, Cs, G = _forward(X, h0, c0, W_x, W_s, b, forget_gate, lengths)
    loss, dHs, dW_y, db_y = head.loss_and_grad(Hs, W_y, b_y, Y, output, target, lengths,
                                               sample_weight)
    h_norms = np.zeros((N, T)) if state_grad_norms else None
    c_norms = np.zeros((N, T)) if state_grad_norms else None
    H_prev, C_prev = _previous(h0, Hs), _previous(c0, Cs)
    dZ, dh0, dc0 = _backpropagate_(dHs, None, C_prev, Cs, G, W_s, lengths, h_norms, c_norms)
    grads = _weight_grads(X, H_prev, W_x, dZ, input_grads)
    if input_grads:
        grads["h0"], grads["c0"] = dh0, dc0
    grads["W_y"], grads["b_y"] = dW_y, db_y
    if state_grad_norms:
        grads["state_grad_norms"], grads["cell_grad_norms"] = h_norms, c_norms
    if return_state:
        return loss, grads, (Hs[:, -1].copy(), Cs[:, -1].copy())
    return loss, grads


# ---------------------------------------------------------------------------------------------

def _forward(X, h0, c0, W_x, W_s, b, forget_gate, lengths=None):
    """(Hs, Cs, G): the states and the activated gates G (N, T, 4H) = [i, f, g, o] of every
    step (f = 1 without a forget gate)."""
    N, T, _ = X.shape
    H = h0.shape[1]
    G = X @ W_x                      # (N, T, 4H): x_t W_x for every step at once
    G += b
    Hs = np.empty((N, T, H), dtype=X.dtype)
    Cs = np.empty((N, T, H), dtype=X.dtype)
    tmp = np.empty((N, 4 * H), dtype=X.dtype)
    h_prev, c_prev = h0, c0
    for t in range(T):
        z = G[:, t]                  # view: z_t = x_t W_x + b + h_{t-1} W_s
        np.matmul(h_prev, W_s, out=tmp)
        z += tmp
        i, f, g, o = np.split(_gates_(z, forget_gate), 4, axis=1)
        c, h = Cs[:, t], Hs[:, t]
        np.multiply(f, c_prev, out=c)        # c_t = f * c_{t-1} + i * g
        c += i * g
        np.tanh(c, out=h)                    # h_t = o * tanh(c_t)
        h *= o
        if lengths is not None:
            ended = t >= lengths             # these sequences keep their state
            h[ended] = h_prev[ended]
            c[ended] = c_prev[ended]
        h_prev, c_prev = h, c
    return Hs, Cs, G


def _gates_(Z, forget_gate):
    """Z (..., 4H) <- [sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)], in place; the
    f block is exactly 1 without a forget gate. Returns Z."""
    i, f, g, o = np.split(Z, 4, axis=-1)
    expit(i, out=i)
    if forget_gate:
        expit(f, out=f)
    else:
        f[...] = 1
    np.tanh(g, out=g)
    expit(o, out=o)
    return Z


def _gate_derivatives(G):
    """[i (1 - i), f (1 - f), 1 - g^2, o (1 - o)] from the activated gates G (..., 4H), as a new
    array. Without a forget gate f = 1 exactly, so its block is exactly 0."""
    dG = np.subtract(1, G)
    dG *= G                                  # sigmoid' = s (1 - s) on every block
    _, _, g, _ = np.split(G, 4, axis=-1)
    _, _, dg, _ = np.split(dG, 4, axis=-1)
    np.square(g, out=dg)                     # tanh' = 1 - g^2 on the g block
    np.subtract(1, dg, out=dg)
    return dG


def _backpropagate_(dH, dC, C_prev, Cs, G, W_s, lengths=None, state_norms=None,
                    cell_norms=None):
    """(dZ, dh0, dc0): dZ (N, T, 4H) = dLoss/dz_t of every step, dh0 and dc0 (N, H).

    dH (N, T, H) holds dLoss/dHs from outside the recurrence on entry and the total dLoss/dh_t
    on exit; dC likewise for dLoss/dCs, or None for zeros (it is read and zeroed past the end,
    not otherwise changed). state_norms, cell_norms (N, T), if given, receive ||dLoss/dh_t||,
    ||dLoss/dc_t|| per sequence (all paths summed).
    """
    N, T, H = Cs.shape
    if lengths is not None:                  # no gradient past the end
        past = np.arange(T) >= lengths[:, None]
        dH[past] = 0
        if dC is not None:
            dC[past] = 0
    tanh_C = np.tanh(Cs)
    dG = _gate_derivatives(G)                # for all steps at once
    dZ = np.empty_like(G)
    dc = np.zeros((N, H), dtype=dH.dtype)    # dLoss/dc_t: the carry from c_{t+1}, then total
    tmp = np.empty((N, H), dtype=dH.dtype)
    for t in range(T - 1, -1, -1):
        dh = dH[:, t]                        # dLoss/dh_t = dHs_t + dz_{t+1} W_s^T
        if t < T - 1:
            np.matmul(dZ[:, t + 1], W_s.T, out=tmp)
            dh += tmp
        if dC is not None:
            dc += dC[:, t]
        _step_grads_(dZ[:, t], dh, dc, G[:, t], dG[:, t], tanh_C[:, t], C_prev[:, t])
        if state_norms is not None:
            state_norms[:, t] = np.linalg.norm(dh.astype(np.float64), axis=1)
        if cell_norms is not None:
            cell_norms[:, t] = np.linalg.norm(dc.astype(np.float64), axis=1)
        dc *= G[:, t, H:2 * H]               # dLoss/dc_{t-1} through the carry: dc_t * f_t
    dh0 = dZ[:, 0] @ W_s.T
    return dZ, dh0, dc


def _step_grads_(dz, dh, dc, gates, dgates, tanh_c, c_prev):
    """dz (N, 4H) <- dLoss/dz_t, the gate pre-activation gradient of one step, from dh =
    dLoss/dh_t and dc = dLoss/dc_t from beyond h_t (the carry and dCs_t); on exit dc holds the
    total dLoss/dc_t. gates [i, f, g, o] and dgates [i', f', g', o'] (N, 4H) of step t.

        dc += dh * o * (1 - tanh(c_t)^2)
        dz  = [dc * g, dc * c_{t-1}, dc * i, dh * tanh(c_t)] * [i', f', g', o']
    """
    i, _, g, o = np.split(gates, 4, axis=1)
    dz_i, dz_f, dz_g, dz_o = np.split(dz, 4, axis=1)
    np.multiply(dh, tanh_c, out=dz_o)                  # dLoss/do
    dc += dh * o * (1 - np.square(tanh_c))             # through h_t = o * tanh(c_t)
    np.multiply(dc, g, out=dz_i)                       # dLoss/di
    np.multiply(dc, c_prev, out=dz_f)                  # dLoss/df
    np.multiply(dc, i, out=dz_g)                       # dLoss/dg
    dz *= dgates


def _previous(s0, S):
    """(N, T, H): the states S_{t-1} of every step, S_{-1} = s0."""
    return np.concatenate([s0[:, None], S[:, :-1]], axis=1)


def _weight_grads(X, H_prev, W_x, dZ, input_grads=True):
    """Weight (and input) gradients from dZ: one matmul over all N*T rows for each."""
    N, T, I = X.shape
    H = H_prev.shape[2]
    dZ_flat = dZ.reshape(N * T, 4 * H)
    grads = {
        "W_x": X.reshape(N * T, I).T @ dZ_flat,
        "W_s": H_prev.reshape(N * T, H).T @ dZ_flat,
        "b": dZ_flat.sum(axis=0),
    }
    if input_grads:
        grads["X"] = dZ @ W_x.T
    return grads
