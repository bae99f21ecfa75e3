"""The functional core: Elman forward, BPTT backward, prediction and loss gradients.

Each function validates its arguments once (fastrnn._validate) and hands them to a backend:
``backend="cython"`` (default, fastrnn/_elman.pyx) or ``backend="numpy"`` (the reference,
fastrnn/reference.py). Both have the same signatures and semantics.

Shapes (row vectors, batch-first): X (N, T, I), h0 (N, H), W_x (I, H), W_s (H, H), b (H,),
W_y (H, O), b_y (O,), S (N, T, H), Y (N, T, O). float32 and float64 are both native: every
array must have X's dtype and results come back in it.

Variable-length batches: lengths (N,) integers in [1, T] (None: every sequence has T
steps). Sequence n ends after lengths[n] steps; at later steps its state stays as it was
(so S[:, -1] is every sequence's last valid state), nothing is scored and no gradient flows.
No sorting or packing: the cost is that of the padded batch.
"""
from . import _validate, reference

try:
    from . import _elman
    _ELMAN_ERROR = None
except ImportError as exc:          # source tree without a build: numpy backend still works
    _elman, _ELMAN_ERROR = None, exc


def get_backend(backend):
    """The backend module for the name "cython" or "numpy"."""
    _validate.choice(backend, "backend", _validate.BACKENDS)
    if backend == "numpy":
        return reference
    if _elman is None:
        raise ImportError(
            f"the compiled extension fastrnn._elman is not available ({_ELMAN_ERROR}). "
            f"fastrnn was imported from {__file__.rsplit('/', 2)[0]}: if that is the source "
            "tree, run from another directory (or use the `fastrnn`/`pytest` commands), or "
            "build in place with `pip install -e .`; or use backend='numpy'")
    return _elman


def elman_forward(X, h0, W_x, W_s, b, activation="tanh", backend="cython", lengths=None):
    """States S (N, T, H) of s_t = phi(x_t W_x + s_{t-1} W_s + b), s_{-1} = h0.

    h0 may be None (zeros). activation: "tanh", "relu", "sigmoid" or "identity".
    """
    be = get_backend(backend)
    _validate.choice(activation, "activation", _validate.ACTIVATIONS)
    X, h0, W_x, W_s, b = _validate.recurrence(
        X, h0, W_x, W_s, b, buffers=lambda N, T, I, H, O: N * T * H, what="elman_forward")
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    return be.forward(X, h0, W_x, W_s, b, activation, lengths)


def elman_backward(X, h0, W_x, W_s, b, S, dS, activation="tanh", backend="cython",
                   lengths=None):
    """Backpropagation through time.

    S (N, T, H) are the states from elman_forward and dS (N, T, H) the gradient of the loss
    with respect to them as seen by the output layer at each step. Returns the gradients of
    the loss through the recurrence: a dict with keys "X", "h0", "W_x", "W_s", "b", each of
    the shape and dtype of its argument. With lengths, dS past a sequence's end is ignored.
    """
    be = get_backend(backend)
    _validate.choice(activation, "activation", _validate.ACTIVATIONS)
    X, h0, W_x, W_s, b = _validate.recurrence(
        X, h0, W_x, W_s, b, buffers=lambda N, T, I, H, O: 3 * N * T * H + N * T * I,
        what="elman_backward")
    N, T, _ = X.shape
    H = W_s.shape[0]
    S = _validate.states(S, "S", N, T, H, X.dtype)
    dS = _validate.states(dS, "dS", N, T, H, X.dtype)
    lengths = _validate.lengths(lengths, N, T)
    return be.backward(X, h0, W_x, W_s, b, S, dS, activation, lengths)


def elman_predict(X, h0, W_x, W_s, b, W_y, b_y, activation="tanh", output="linear",
                  backend="cython", lengths=None):
    """(Y, S): outputs Y (N, T, O) = S W_y + b_y (softmax of it if output="softmax") and
    states S (N, T, H)."""
    be = get_backend(backend)
    _validate.choice(activation, "activation", _validate.ACTIVATIONS)
    _validate.choice(output, "output", _validate.OUTPUTS)
    X, h0, W_x, W_s, b, W_y, b_y = _validate.recurrence(
        X, h0, W_x, W_s, b, W_y, b_y, buffers=lambda N, T, I, H, O: N * T * (H + O),
        what="elman_predict")
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    return be.predict(X, h0, W_x, W_s, b, W_y, b_y, activation, output, lengths)


def elman_loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation="tanh", output="linear",
                        target="sequence", backend="cython", input_grads=False,
                        lengths=None, return_state=False, state_grad_norms=False):
    """(loss, grads) of an Elman network with its output layer, in one call.

    output "linear": Y real (N, T, O) for target "sequence", (N, O) for "last"; loss is the
    mean squared error over every output element. output "softmax": Y integer class labels
    (N, T) or (N,); loss is the mean cross-entropy over targets. grads holds "W_x", "W_s",
    "b", "W_y", "b_y" (and "X", "h0" if input_grads), each shaped like its argument.
    With lengths, target "last" scores each sequence's last valid step, and "sequence" only
    the valid steps (labels past the end are ignored, so any padding value will do). With
    return_state, returns (loss, grads, h_last): h_last (N, H) the final states, for
    carrying into the next chunk of a long sequence (truncated BPTT). With state_grad_norms,
    grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dS[n, t]||, the gradient that
    reaches each state through every path (read off during the backward pass).
    """
    be = get_backend(backend)
    _validate.choice(activation, "activation", _validate.ACTIVATIONS)
    _validate.choice(output, "output", _validate.OUTPUTS)
    _validate.choice(target, "target", _validate.TARGETS)
    # states, their gradients, outputs, (input gradients), and a copy of the targets
    X, h0, W_x, W_s, b, W_y, b_y = _validate.recurrence(
        X, h0, W_x, W_s, b, W_y, b_y, what="elman_loss_and_grad",
        buffers=lambda N, T, I, H, O: (2 * N * T * H + 2 * N * T * O
                                       + (N * T * I if input_grads else 0)))
    N, T, _ = X.shape
    H, O = W_y.shape
    lengths = _validate.lengths(lengths, N, T)
    Y = _validate.targets(Y, output, target, N, T, O, X.dtype, lengths)
    return be.loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation, output, target,
                            bool(input_grads), lengths, bool(return_state),
                            bool(state_grad_norms))
