"""The output layer and the losses, in NumPy: the twin of the compiled head (fastrnn/_head.pyx).

Every cell feeds the same head. With S (N, T, H) the states a recurrence produced:

    Z_t = S_t W_y + b_y          Y_t = Z_t  (output "linear")  or  softmax(Z_t)  ("softmax")

Losses are means, as in PyTorch: the squared error over every output element (linear), the
cross-entropy over every scored target (softmax, integer class labels). Target "sequence"
scores every step (with lengths: every valid step), "last" only the last one (with lengths:
each sequence's last valid step, which the recurrences carry to S[:, T-1]).

This module is also the one home of the NumPy cross-entropy, accuracy and softmax: the
training loop's evaluation and the demos use these functions.
"""
import numpy as np

PARAMS = ("W_y", "b_y")        # the head's parameters, after every cell's own in model.params


def param_shapes(hidden_size, output_size):
    """{name: shape} of the head's parameters: W_y (H, O), b_y (O,)."""
    return {"W_y": (hidden_size, output_size), "b_y": (output_size,)}


def predict(S, W_y, b_y, output):
    """Y (N, T, O): the outputs for states S (N, T, H) (softmax probabilities if output is
    "softmax")."""
    Y = S @ W_y
    Y += b_y
    if output == "softmax":
        softmax_(Y)
    return Y


def loss_and_grad(S, W_y, b_y, Y, output, target, lengths=None):
    """(loss, dS, dW_y, db_y): the mean loss of the head on states S (N, T, H), its gradient
    with respect to S (N, T, H) (zero at unscored steps) and to the head's weights.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,)
    for "softmax" (target "sequence" / "last").
    """
    N, T, H = S.shape
    last = target == "last"
    S_out = S[:, -1] if last else S                      # the states the loss sees
    Z = S_out @ W_y + b_y
    scored = None if lengths is None or last else np.arange(T) < lengths[:, None]
    if output == "softmax":
        loss, dZ = cross_entropy_and_grad(Z, Y, scored)
    else:
        loss, dZ = mse_and_grad(Z, Y, scored)
    dS_out = dZ @ W_y.T
    if last:
        dS = np.zeros_like(S)
        at = np.full(N, T - 1) if lengths is None else lengths - 1
        dS[np.arange(N), at] = dS_out
    else:
        dS = dS_out
    O = W_y.shape[1]
    dW_y = S_out.reshape(-1, H).T @ dZ.reshape(-1, O)
    db_y = dZ.reshape(-1, O).sum(axis=0)
    return loss, dS, dW_y, db_y


def softmax_(Z):
    """Row-wise softmax over the last axis, in place. Returns Z."""
    Z -= Z.max(axis=-1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=-1, keepdims=True)
    return Z


def mse_and_grad(Z, Y, scored=None):
    """mean((Z - Y)^2) over every element (of the scored rows: scored is a boolean mask
    over Z's leading axes, or None), and its gradient 2 (Z - Y) / count."""
    D = Z - Y
    if scored is not None:
        D[~scored] = 0
    count = D.size if scored is None else int(scored.sum()) * D.shape[-1]
    loss = float(np.dot(D.ravel(), D.ravel())) / count
    D *= 2.0 / count
    return loss, D


def cross_entropy_and_grad(Z, labels, scored=None):
    """mean over (scored) rows of -log softmax(Z)[label], and its gradient
    (softmax - onehot) / rows; scored: boolean mask over Z's leading axes, or None."""
    shape = Z.shape
    Z = Z.reshape(-1, shape[-1])
    if scored is not None:                   # score only these rows: gradient 0 elsewhere
        keep = scored.reshape(-1)
        grad = np.zeros_like(Z)
        loss, grad[keep] = cross_entropy_and_grad(Z[keep], labels.reshape(-1)[keep])
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


def cross_entropy(probs, labels):
    """Mean -log p[label] of probabilities probs (rows, O) (already softmaxed) for integer
    labels (rows,), in float64; probabilities that underflowed to 0 count as the smallest
    positive double (a large, finite loss)."""
    picked = np.asarray(probs)[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(picked, np.finfo(np.float64).tiny))))


def accuracy(probs, labels):
    """Fraction of rows whose most probable class is the label."""
    return float(np.mean(np.argmax(probs, axis=-1) == labels))
