"""One layer of a deep or bidirectional network in NumPy, for every cell's NumPy twin: the
reverse direction and the forward_train/backward_train pair, built from the cell's own
forward and backward (the compiled twins have these natively, in their time loops).

The reverse direction here is the definition: flip each sequence's valid steps in time
(padding stays where it is), run the cell forwards, flip back. So with lengths each sequence
starts at its own last valid step, as with PyTorch's packed sequences. At padding the states
are the initial ones (the compiled loops, walking time downwards, keep h0 there), and the
final state of every sequence is at step 0.
"""
import numpy as np


def flip(A, lengths):
    """A (N, T, ...) with each sequence's first lengths[n] steps in reverse order and its
    padding in place (all T steps reversed when lengths is None). Its own inverse."""
    if lengths is None:
        return np.ascontiguousarray(A[:, ::-1])
    N, T = A.shape[:2]
    t = np.arange(T)
    valid = t < lengths[:, None]
    index = np.where(valid, lengths[:, None] - 1 - t, t)            # (N, T)
    return np.take_along_axis(A, index.reshape((N, T) + (1,) * (A.ndim - 2)), axis=1)


def padding(lengths, N, T):
    """(N, T) bool: the steps past each sequence's end (None when there is no padding)."""
    if lengths is None:
        return None
    return np.arange(T) >= lengths[:, None]


def reverse_forward(forward, X, state0, weights, options, lengths):
    """What forward(X, *state0, *weights, *options, lengths) returns, for the recurrence run
    backwards in time."""
    out = forward(flip(X, lengths), *state0, *weights, *options, lengths)
    single = not isinstance(out, tuple)
    states = []
    for S, s0 in zip((out,) if single else out, state0):
        S = flip(S, lengths)
        pad = padding(lengths, *X.shape[:2])
        if pad is not None:
            S[pad] = np.broadcast_to(s0[:, None], S.shape)[pad]     # the initial state
        states.append(S)
    return states[0] if single else tuple(states)


def forward_train(forward, X, state0, weights, options, lengths, reverse):
    """(states, stash) as the compiled forward_train gives them: the tuple of state sequences
    (N, T, H) in the order of the cell's states, and () (the NumPy backward recomputes what
    it needs)."""
    if reverse:
        out = reverse_forward(forward, X, state0, weights, options, lengths)
    else:
        out = forward(X, *state0, *weights, *options, lengths)
    return (out if isinstance(out, tuple) else (out,)), ()


def backward_train(backward, cell, X, state0, weights, states, dH, options, lengths, reverse,
                   input_grads):
    """The gradients of the compiled backward_train: the cell's backward given dLoss/dh
    (N, T, H) from outside the recurrence (nothing reaches other states, e.g. the LSTM's c,
    from outside), with "X" and the initial states' gradients only if input_grads."""
    if reverse:
        X, dH = flip(X, lengths), flip(dH, lengths)
        states = tuple(flip(S, lengths) for S in states)
    dstates = (dH,) + tuple(np.zeros_like(S) for S in states[1:])
    grads = backward(X, *state0, *weights, *states, *dstates, *options, lengths)
    if not input_grads:
        for key in ("X",) + tuple(f"{s}0" for s in cell.states):
            del grads[key]
    elif reverse:
        grads["X"] = flip(grads["X"], lengths)
    return grads
