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


def loss_and_grad(S, W_y, b_y, Y, output, target, lengths=None, sample_weight=None):
    """(loss, dS, dW_y, db_y): the mean loss of the head on states S (N, T, H), its gradient
    with respect to S (N, T, H) (zero at unscored steps) and to the head's weights.

    Y: real targets (N, T, O) / (N, O) for output "linear", integer labels (N, T) / (N,)
    for "softmax" (target "sequence" / "last"). sample_weight (N,) or None: the loss is the
    mean weighted by each sequence's weight (a weight of 2 counts a sequence twice, 0 drops
    it).
    """
    N, T, H = S.shape
    last = target == "last"
    S_out = S[:, -1] if last else S                      # the states the loss sees
    Z = S_out @ W_y + b_y
    weight = row_weights(lengths, sample_weight, N, T, last)
    if output == "softmax":
        loss, dZ = cross_entropy_and_grad(Z, Y, weight)
    else:
        loss, dZ = mse_and_grad(Z, Y, weight)
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


def row_weights(lengths, sample_weight, N, T, last):
    """The weight of each row the loss sees, over Z's leading axes ((N,) for target "last",
    (N, T) for "sequence"): 0 at padding, sample_weight[n] elsewhere (1 without it); None
    when every row weighs 1."""
    if sample_weight is None and (lengths is None or last):
        return None
    if last:
        return np.asarray(sample_weight, np.float64)
    w = np.ones((N, T)) if lengths is None else (np.arange(T) < lengths[:, None]).astype(float)
    if sample_weight is not None:
        w *= sample_weight[:, None]
    return w


def softmax_(Z):
    """Row-wise softmax over the last axis, in place. Returns Z."""
    Z -= Z.max(axis=-1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=-1, keepdims=True)
    return Z


def mse_and_grad(Z, Y, weight=None):
    """The mean of (Z - Y)^2 over every element, each row weighted (weight: over Z's leading
    axes, or None: all 1), and its gradient 2 w (Z - Y) / count, count = sum(w) * O."""
    D = Z - Y
    if weight is None:
        count = D.size
        loss = float(np.dot(D.ravel(), D.ravel())) / count
    else:
        D[weight == 0] = 0                   # unscored rows: their targets are not read
        count = float(weight.sum()) * D.shape[-1]
        if _is_mask(weight):                 # padding only: the plain sum, as without it
            loss = float(np.dot(D.ravel(), D.ravel())) / count
        else:
            loss = float(np.sum(weight * np.sum(D * D, axis=-1))) / count
            D *= weight[..., None]
    D *= 2.0 / count
    return loss, D


def cross_entropy_and_grad(Z, labels, weight=None):
    """The mean over rows of -log softmax(Z)[label], each row weighted (weight: over Z's
    leading axes, or None: all 1; the labels of rows of weight 0 are not read), and its
    gradient w (softmax - onehot) / sum(w)."""
    shape = Z.shape
    Z = Z.reshape(-1, shape[-1])
    if weight is not None:                   # score only these rows: gradient 0 elsewhere
        w = weight.reshape(-1)
        keep = w != 0
        grad = np.zeros_like(Z)
        loss, g = cross_entropy_and_grad(Z[keep], labels.reshape(-1)[keep])
        if _is_mask(w):                      # padding only: the plain mean of the rest
            grad[keep] = g
            return loss, grad.reshape(shape)
        n_kept = int(keep.sum())
        total = float(w.sum())
        # the unweighted mean's gradient has 1/n_kept per row: rescale to w_r / sum(w)
        grad[keep] = g * (w[keep] * (n_kept / total))[:, None].astype(g.dtype)
        losses = _row_cross_entropy(Z[keep], labels.reshape(-1)[keep])
        return float(np.dot(w[keep], losses)) / total, grad.reshape(shape)
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


def _is_mask(weight):
    """True if every weight is 0 or 1 (lengths without sample weights)."""
    return bool(np.all((weight == 0) | (weight == 1)))


def _row_cross_entropy(Z, labels):
    """-log softmax(Z[r])[labels[r]] of each row, in float64."""
    Z = Z.astype(np.float64)
    Z = Z - Z.max(axis=1, keepdims=True)
    return np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(Z)), labels]


def cross_entropy(probs, labels):
    """Mean -log p[label] of probabilities probs (rows, O) (already softmaxed) for integer
    labels (rows,), in float64; probabilities that underflowed to 0 count as the smallest
    positive double (a large, finite loss)."""
    picked = np.asarray(probs)[np.arange(len(labels)), labels].astype(np.float64)
    return float(-np.mean(np.log(np.maximum(picked, np.finfo(np.float64).tiny))))


def accuracy(probs, labels):
    """Fraction of rows whose most probable class is the label."""
    return float(np.mean(np.argmax(probs, axis=-1) == labels))
