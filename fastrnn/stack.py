"""Deep and bidirectional networks: L layers of one cell, each in D = 1 or 2 directions,
dropout between layers, then the output layer. Python runs per (layer, direction), never
per step: each is one call into the cell's backend (forward_train / backward_train, in
fastrnn/cells/), which walks time downwards for the reverse direction on the same arrays.

    layer 0 reads X (N, T, I); layer l+1 reads the states of layer l, both directions
    concatenated (N, T, D*H), times a dropout mask in training; the head reads the top
    layer's (N, T, D*H), or for target "last" each direction's final state: the forward
    one at each sequence's last valid step, the reverse one at step 0 (Keras' Bidirectional
    without return_sequences).

Shapes: weights, a list of L*D weight tuples (the cell's order), layer-major, forward before
reverse (PyTorch's order; index k = l*D + d); state0, a list of L*D tuples of (N, H) initial
states (one per cell state); W_y (D*H, O). Inputs are trusted (fastrnn/functional.py checks
them); be is the cell's backend module, hd the head's (fastrnn._head or fastrnn.head).
"""
import numpy as np

from ._threads import one_blas_thread, thread_cap


def forward(be, X, state0, weights, options, lengths, D, train, masks=None):
    """(top, record): the top layer's states (N, T, D*H) and, per (layer, direction), the
    (input, states, stash) its backward needs (stash None unless train). masks: L-1 dropout
    multipliers (N, T, D*H) for the inputs of layers 1.., or None."""
    L = len(weights) // D
    record, inp = [], X
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            if train:
                states, stash = be.forward_train(inp, *state0[k], *weights[k], *options,
                                                 lengths, d == 1)
            else:
                states, stash = be.forward(inp, *state0[k], *weights[k], *options, lengths,
                                           d == 1), None
                states = states if isinstance(states, tuple) else (states,)
            outs.append(states)
            record.append((inp, states, stash))
        out = outs[0][0] if D == 1 else np.concatenate([s[0] for s in outs], axis=2)
        if masks is not None and layer < L - 1:
            out = out * masks[layer]              # a new array: the states stay for backward
        inp = out
    return inp, record


def final_states(record, lengths, D):
    """The final state of every (layer, direction): a tuple (one per cell state) of
    (L*D, N, H) arrays. Forwards a sequence's last valid state (carried to step T-1), in
    reverse the state after step 0."""
    n_states = len(record[0][1])
    return tuple(np.stack([states[i][:, 0 if k % D else -1] for k, (_, states, _) in
                           enumerate(record)]) for i in range(n_states))


def head_input(top, record, lengths, D, target):
    """What the head reads: top (N, T, D*H), or for target "last" with two directions the
    (N, 1, 2H) final states of the top layer (forward at the last valid step, reverse at 0)."""
    if target != "last" or D == 1:
        return top
    fwd, rev = record[-2][1][0], record[-1][1][0]
    return np.concatenate([fwd[:, -1], rev[:, 0]], axis=1)[:, None]


def predict(be, hd, X, state0, weights, W_y, b_y, options, output, lengths, D):
    """(Y (N, T, O), top (N, T, D*H), final states): the outputs at every step from the top
    layer's states (both directions), as fastrnn.head.predict."""
    with one_blas_thread(thread_cap()):     # see loss_and_grad
        top, record = forward(be, X, state0, weights, options, lengths, D, train=False)
        return hd.predict(top, W_y, b_y, output), top, final_states(record, lengths, D)


def loss_and_grad(be, hd, cell, X, Y, state0, weights, W_y, b_y, options, output, target,
                  lengths, D, input_grads=False, masks=None, sample_weight=None):
    """(loss, grads, final states): grads["layers"] a list of L*D dicts (the cell's weight
    gradients, and "X", "h0"... of layers above 0), "W_y", "b_y", and if input_grads "X"
    and for each cell state its initial state's gradient (L*D, N, H) ("h0", "c0")."""
    # The layers split their batch across threads with SciPy's BLAS on one thread; the head
    # between them runs on one BLAS thread as well, so that BLAS's own pool does not wake
    # up between the layers and spin against their threads.
    with one_blas_thread(thread_cap()):
        return _loss_and_grad(be, hd, cell, X, Y, state0, weights, W_y, b_y, options, output,
                              target, lengths, D, input_grads, masks, sample_weight)


def _loss_and_grad(be, hd, cell, X, Y, state0, weights, W_y, b_y, options, output, target,
                   lengths, D, input_grads, masks, sample_weight):
    L = len(weights) // D
    top, record = forward(be, X, state0, weights, options, lengths, D, train=True,
                          masks=masks)
    S = head_input(top, record, lengths, D, target)
    loss, dS, dW_y, db_y = hd.loss_and_grad(S, W_y, b_y, Y, output, target,
                                            None if S is not top else lengths, sample_weight)
    grads = {"W_y": dW_y, "b_y": db_y}
    H = record[0][1][0].shape[2]
    if S is not top:                      # "last", two directions: back to the two steps
        N, T = X.shape[:2]
        dtop = np.zeros((N, T, D * H), X.dtype)
        at = np.full(N, T - 1) if lengths is None else lengths - 1
        dtop[np.arange(N), at, :H] = dS[:, 0, :H]
        dtop[:, 0, H:] = dS[:, 0, H:]
    else:
        dtop = dS
    layer_grads = [None] * (L * D)
    for layer in range(L - 1, -1, -1):
        dX = None
        for d in range(D):
            k = layer * D + d
            inp, states, stash = record[k]
            dH = np.ascontiguousarray(dtop[..., d * H:(d + 1) * H]) if D > 1 else dtop
            g = be.backward_train(inp, *state0[k], *weights[k], states, stash, dH, *options,
                                  lengths, d == 1, layer > 0 or input_grads)
            layer_grads[k] = g
            if layer > 0:
                dX = g.pop("X") if dX is None else np.add(dX, g.pop("X"), out=dX)
        if layer > 0:
            dtop = dX if masks is None else np.multiply(dX, masks[layer - 1], out=dX)
    grads["layers"] = layer_grads
    if input_grads:
        grads["X"] = layer_grads[0].pop("X") if D == 1 else \
            layer_grads[0].pop("X") + layer_grads[1].pop("X")
    for name in cell.state_args:          # the initial states' gradients, (L*D, N, H)
        per_layer = [g.pop(name, None) for g in layer_grads]
        if input_grads:
            grads[name] = np.stack(per_layer)
    return loss, grads, final_states(record, lengths, D)


def dropout_masks(rng, p, N, T, width, L, dtype):
    """L-1 inverted-dropout multipliers (N, T, width): 0 with probability p, else 1/(1-p),
    so the expected activation is unchanged. None for p = 0 or one layer."""
    if p == 0 or L < 2:
        return None
    keep = 1.0 - p
    return [(rng.random((N, T, width)) < keep).astype(dtype) / dtype.type(keep)
            for _ in range(L - 1)]
