"""The functional core: forward recurrence, BPTT backward, prediction and loss gradients, for
every cell.

Each function validates its arguments once (fastrnn._validate) and hands them to a cell's
backend: ``backend="cython"`` (default, the compiled fastrnn/cells/_NAME.pyx) or
``backend="numpy"`` (its NumPy twin, fastrnn/cells/NAME.py). Both have the same signatures
and semantics (the calling convention is in fastrnn/cells/spec.py).

The generic functions take the cell (a name or a fastrnn.cells.CellSpec), its initial
states as a tuple in the order of cell.states (None: zeros), its weights as a tuple in the
order of cell.weights and its options (the Elman cell's activation) as a tuple. The elman_*
functions are the Elman cell's, with the weights as separate arguments.

Shapes (row vectors, batch-first): X (N, T, I), states (N, T, H), outputs Y (N, T, O);
W_y (H, O), b_y (O,). float32 and float64 are both native: every array must have X's dtype
and results come back in it.

Variable-length batches: lengths (N,) integers in [1, T] (None: every sequence has T
steps). Sequence n ends after lengths[n] steps; at later steps its state stays as it was
(so S[:, -1] is every sequence's last valid state), nothing is scored and no gradient flows.
No sorting or packing: the cost is that of the padded batch.

Threads: every function takes threads=None, a cap on the threads a compiled call splits its
batch across (each thread runs its own sequences' recurrence; None: as many as SciPy's BLAS
may use, so threadpoolctl's limits apply; 1: one thread). Results at a given thread count are
the same run to run. The NumPy backend ignores it.
"""
import functools
import inspect

from . import _threads, _validate, stack
from .cells import ELMAN, get_cell


def _threads_argument(fn):
    """fn with the keyword argument threads=None (see the module docstring)."""
    @functools.wraps(fn)
    def with_threads(*args, threads=None, **kwargs):
        if threads is None:
            return fn(*args, **kwargs)
        with _threads.threads(threads):
            return fn(*args, **kwargs)
    sig = inspect.signature(fn)
    with_threads.__signature__ = sig.replace(parameters=[
        *sig.parameters.values(),
        inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None)])
    return with_threads


def get_backend(backend, cell="elman"):
    """The module implementing cell ("elman", ...) for backend "cython" or "numpy"."""
    return get_cell(cell).backend(backend)


def _options(cell, options):
    """The cell's options validated (the Elman cell's activation)."""
    options = tuple(options)
    if len(options) != len(cell.options):
        raise TypeError(f"the {cell.name} cell takes options {cell.options}; got {options!r}")
    return tuple(_validate.cell_option(name, value) for name, value in zip(cell.options,
                                                                            options))


@_threads_argument
def cell_forward(cell, X, state0, weights, options=(), backend="cython", lengths=None):
    """The states of the recurrence for inputs X (N, T, I): S (N, T, H) for a cell with one
    state (Elman, GRU), the tuple (H (N, T, H), C (N, T, H)) for the LSTM."""
    cell = get_cell(cell)
    be = cell.backend(backend)
    options = _options(cell, options)
    X, state0, weights = _validate.recurrence(
        cell, X, state0, weights, what=f"{cell.name}_forward",
        buffers=lambda N, T, I, H, O: cell.buffers_per_step * N * T * H)
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    return be.forward(X, *state0, *weights, *options, lengths)


@_threads_argument
def cell_backward(cell, X, state0, weights, states, dstates, options=(), backend="cython",
                  lengths=None):
    """Backpropagation through time given the forward states (a tuple in the order of
    cell.states, each (N, T, H)) and the gradients of the loss with respect to them as seen
    from outside the recurrence (same form). Returns a dict with the gradients of "X", each
    initial state ("h0", "c0") and each weight."""
    cell = get_cell(cell)
    be = cell.backend(backend)
    options = _options(cell, options)
    X, state0, weights = _validate.recurrence(
        cell, X, state0, weights, what=f"{cell.name}_backward",
        buffers=lambda N, T, I, H, O: (cell.buffers_per_step + 2) * N * T * H + N * T * I)
    N, T, _ = X.shape
    H = weights[cell.weight_names.index(cell.recurrent_weight)].shape[0]
    states = tuple(_validate.states(S, name, N, T, H, X.dtype) for S, name in zip(
        _validate.arity(states, _state_arg_names(cell, "S"), "states", cell),
        _state_arg_names(cell, "S")))
    dstates = tuple(_validate.states(S, name, N, T, H, X.dtype) for S, name in zip(
        _validate.arity(dstates, _state_arg_names(cell, "dS"), "dstates", cell),
        _state_arg_names(cell, "dS")))
    lengths = _validate.lengths(lengths, N, T)
    return be.backward(X, *state0, *weights, *states, *dstates, *options, lengths)


def _state_arg_names(cell, prefix):
    """Names of the state-sequence arguments in messages: "S"/"dS" for a one-state cell,
    else "H", "C" / "dH", "dC"."""
    if len(cell.states) == 1:
        return (prefix,)
    return tuple(prefix[:-1] + s.upper() for s in cell.states)


@_threads_argument
def cell_predict(cell, X, state0, weights, W_y, b_y, options=(), output="linear",
                 backend="cython", lengths=None):
    """(Y, S): outputs Y (N, T, O) = S W_y + b_y (softmax of it if output="softmax") and the
    (hidden) states S (N, T, H)."""
    cell = get_cell(cell)
    be = cell.backend(backend)
    options = _options(cell, options)
    _validate.choice(output, "output", _validate.OUTPUTS)
    X, state0, weights, W_y, b_y = _validate.recurrence(
        cell, X, state0, weights, W_y, b_y, what=f"{cell.name}_predict",
        buffers=lambda N, T, I, H, O: cell.buffers_per_step * N * T * H + N * T * O)
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    return be.predict(X, *state0, *weights, W_y, b_y, *options, output, lengths)


@_threads_argument
def cell_loss_and_grad(cell, X, Y, state0, weights, W_y, b_y, options=(), output="linear",
                       target="sequence", backend="cython", input_grads=False, lengths=None,
                       return_state=False, state_grad_norms=False, sample_weight=None):
    """(loss, grads) of a recurrent network with its output layer, in one call.

    output "linear": Y real (N, T, O) for target "sequence", (N, O) for "last"; loss is the
    mean squared error over every output element. output "softmax": Y integer class labels
    (N, T) or (N,); loss is the mean cross-entropy over targets. grads holds every weight of
    the cell, "W_y" and "b_y" (and "X" and each initial state, "h0"/"c0", if input_grads),
    each shaped like its argument. With lengths, target "last" scores each sequence's last
    valid step, and "sequence" only the valid steps (labels past the end are ignored, so
    any padding value will do). With return_state, returns (loss, grads, state): the final
    states, h_last (N, H) for a one-state cell or the tuple (h_last, c_last) for the LSTM,
    for carrying into the next chunk of a long sequence (truncated BPTT). With
    state_grad_norms, grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dh[n, t]||,
    the gradient that reaches each state through every path (read off during the backward
    pass); the LSTM adds grads["cell_grad_norms"] for c. sample_weight (N,): the loss is
    the mean weighted by sequence (a weight of 0 leaves a sequence out, 2 counts it twice).
    """
    cell = get_cell(cell)
    be = cell.backend(backend)
    options = _options(cell, options)
    _validate.choice(output, "output", _validate.OUTPUTS)
    _validate.choice(target, "target", _validate.TARGETS)
    # states and gate buffers, their gradients, outputs, (input gradients), the targets
    X, state0, weights, W_y, b_y = _validate.recurrence(
        cell, X, state0, weights, W_y, b_y, what=f"{cell.name}_loss_and_grad",
        buffers=lambda N, T, I, H, O: ((cell.buffers_per_step + 1) * N * T * H + 2 * N * T * O
                                       + (N * T * I if input_grads else 0)))
    N, T, _ = X.shape
    H, O = W_y.shape
    lengths = _validate.lengths(lengths, N, T)
    Y = _validate.targets(Y, output, target, N, T, O, X.dtype, lengths)
    sample_weight = _validate.sample_weight(sample_weight, N)
    return be.loss_and_grad(X, Y, *state0, *weights, W_y, b_y, *options, output, target,
                            bool(input_grads), lengths, bool(return_state),
                            bool(state_grad_norms), sample_weight)


# ---------------------------------------------------------------------------------------------
# The Elman cell's functions, with its weights (W_x (I, H), W_s (H, H), b (H,)) and its
# initial state h0 (N, H) as separate arguments.

@_threads_argument
def elman_forward(X, h0, W_x, W_s, b, activation="tanh", backend="cython", lengths=None):
    """States S (N, T, H) of s_t = phi(x_t W_x + s_{t-1} W_s + b), s_{-1} = h0.

    h0 may be None (zeros). activation: "tanh", "relu", "sigmoid" or "identity".
    """
    return cell_forward(ELMAN, X, (h0,), (W_x, W_s, b), (activation,), backend, lengths)


@_threads_argument
def elman_backward(X, h0, W_x, W_s, b, S, dS, activation="tanh", backend="cython",
                   lengths=None):
    """Backpropagation through time.

    S (N, T, H) are the states from elman_forward and dS (N, T, H) the gradient of the loss
    with respect to them as seen by the output layer at each step. Returns the gradients of
    the loss through the recurrence: a dict keyed X, h0, W_x, W_s and b, each of
    the shape and dtype of its argument. With lengths, dS past a sequence's end is ignored.
    """
    return cell_backward(ELMAN, X, (h0,), (W_x, W_s, b), (S,), (dS,), (activation,), backend,
                         lengths)


@_threads_argument
def elman_predict(X, h0, W_x, W_s, b, W_y, b_y, activation="tanh", output="linear",
                  backend="cython", lengths=None):
    """(Y, S): outputs Y (N, T, O) = S W_y + b_y (softmax of it if output="softmax") and
    states S (N, T, H)."""
    return cell_predict(ELMAN, X, (h0,), (W_x, W_s, b), W_y, b_y, (activation,), output,
                        backend, lengths)


@_threads_argument
def elman_loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation="tanh", output="linear",
                        target="sequence", backend="cython", input_grads=False,
                        lengths=None, return_state=False, state_grad_norms=False):
    """(loss, grads) of an Elman network with its output layer, in one call.

    output "linear": Y real (N, T, O) for target "sequence", (N, O) for "last"; loss is the
    mean squared error over every output element. output "softmax": Y integer class labels
    (N, T) or (N,); loss is the mean cross-entropy over targets. grads holds W_x, W_s, b,
    W_y and b_y (and X, h0 if input_grads), each shaped like its argument.
    With lengths, target "last" scores each sequence's last valid step, and "sequence" only
    the valid steps (labels past the end are ignored, so any padding value will do). With
    return_state, returns (loss, grads, h_last): h_last (N, H) the final states, for
    carrying into the next chunk of a long sequence (truncated BPTT). With state_grad_norms,
    grads["state_grad_norms"] (N, T) float64 holds ||dLoss/dS[n, t]||, the gradient that
    reaches each state through every path (read off during the backward pass).
    """
    return cell_loss_and_grad(ELMAN, X, Y, (h0,), (W_x, W_s, b), W_y, b_y, (activation,),
                              output, target, backend, input_grads, lengths, return_state,
                              state_grad_norms)


# ---------------------------------------------------------------------------------------------
# Deep and bidirectional networks (fastrnn/stack.py): weights a list of L*D weight tuples,
# layer-major, the forward direction before the reverse one (PyTorch's order); initial and
# final states (L*D, N, H) per cell state; W_y (D*H, O).

def _stack_args(cell, backend, options, output, bidirectional):
    cell = get_cell(cell)
    options = _options(cell, options)
    _validate.choice(output, "output", _validate.OUTPUTS)
    D = 1 + _validate.boolean(bidirectional, "bidirectional")
    return cell, cell.backend(backend), _head_backend(backend), options, D


def _head_backend(backend):
    if backend == "numpy":
        from . import head
        return head
    from . import _head
    return _head


@_threads_argument
def stack_predict(cell, X, state0, weights, W_y, b_y, options=(), output="linear",
                  bidirectional=False, backend="cython", lengths=None):
    """(Y, S, state) of an L-layer network, D = 2 directions if bidirectional: outputs Y
    (N, T, O) from the top layer's states S (N, T, D*H) (both directions concatenated) and
    the final states, a tuple (one per cell state: h; h and c) of (L*D, N, H) arrays in
    PyTorch's order (forwards each sequence's last valid state, in reverse its state after
    step 0). state0: None (zeros) or such a tuple (entries may be None)."""
    cell, be, hd, options, D = _stack_args(cell, backend, options, output, bidirectional)
    X, state0, weights, W_y, b_y = _validate.stack(
        cell, X, state0, weights, W_y, b_y, D, what=f"{cell.name}_stack_predict",
        buffers=lambda N, T, I, H, O: (len(weights) * cell.buffers_per_step + 2 * D) * N * T
        * H + N * T * O)
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    return stack.predict(be, hd, X, state0, weights, W_y, b_y, options, output, lengths, D)


@_threads_argument
def stack_loss_and_grad(cell, X, Y, state0, weights, W_y, b_y, options=(), output="linear",
                        target="sequence", bidirectional=False, backend="cython",
                        input_grads=False, lengths=None, return_state=False,
                        dropout_masks=None, sample_weight=None):
    """(loss, grads) of an L-layer network (D = 2 directions if bidirectional) with its
    output layer, as cell_loss_and_grad for one layer.

    target "sequence" scores every step from the top layer's concatenated states; "last"
    scores, per sequence, the output from each direction's final state (forward at the last
    valid step, reverse at step 0). grads: "layers", a list of L*D dicts with each
    (layer, direction)'s weight gradients (in the order of weights), "W_y", "b_y", and if
    input_grads "X" and the initial states' gradients, (L*D, N, H) each ("h0", "c0").
    dropout_masks: None, or L-1 arrays (N, T, D*H) multiplying the inputs of layers 1..L-1
    (inverted dropout: 0 or 1/(1-p)); the gradient is the one given these masks. With
    return_state, (loss, grads, state) with the final states as in stack_predict.
    sample_weight (N,): the loss weighted by sequence, as for cell_loss_and_grad.
    """
    cell, be, hd, options, D = _stack_args(cell, backend, options, output, bidirectional)
    _validate.choice(target, "target", _validate.TARGETS)
    X, state0, weights, W_y, b_y = _validate.stack(
        cell, X, state0, weights, W_y, b_y, D, what=f"{cell.name}_stack_loss_and_grad",
        buffers=lambda N, T, I, H, O: (len(weights) * (cell.buffers_per_step + 2) + 2 * D)
        * N * T * H + 2 * N * T * O + (N * T * I if input_grads else 0))
    N, T, _ = X.shape
    H = state0[0][0].shape[1]
    O = W_y.shape[1]
    lengths = _validate.lengths(lengths, N, T)
    Y = _validate.targets(Y, output, target, N, T, O, X.dtype, lengths)
    masks = _validate.dropout_masks(dropout_masks, len(weights) // D, N, T, D * H, X.dtype)
    sample_weight = _validate.sample_weight(sample_weight, N)
    loss, grads, state = stack.loss_and_grad(be, hd, cell, X, Y, state0, weights, W_y, b_y,
                                             options, output, target, lengths, D,
                                             bool(input_grads), masks, sample_weight)
    if return_state:
        return loss, grads, state
    return loss, grads
