"""Every check of user input, once, at the public boundary.

Below this module the kernels trust their inputs (no bounds checks in C), so every path into
compiled code goes through here. Errors name the argument, what it was and what was expected:
TypeError for a wrong type or dtype, ValueError for a wrong shape or value, MemoryError for
a request larger than the machine's available memory.
"""
import functools
import math
import numbers
import operator
import os

import numpy as np

from .activations import ACTIVATIONS

try:        # one vectorised pass without a temporary; np.isfinite(x).all() if not built
    from ._head import all_finite as _all_finite
except ImportError:
    def _all_finite(x):
        return bool(np.isfinite(x).all())

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (_F32, _F64)
OUTPUTS = ("linear", "softmax")
TARGETS = ("sequence", "last")
BACKENDS = ("cython", "numpy")
BLAS_INT_MAX = 2**31 - 1


def choice(value, name, choices):
    """value if it is one of choices, else ValueError."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def boolean(value, name):
    """value as a Python bool (only True, False and NumPy bools)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def positive_int(value, name):
    """value as a Python int >= 1 (bools and floats are refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer; got {value!r} "
                        f"of type {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    if value > BLAS_INT_MAX:
        raise ValueError(f"{name} = {value} is too large: BLAS dimensions must be < 2**31")
    return value


def real(value, name):
    """value as a finite Python float (bools, strings and arrays are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} of type "
                        f"{type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def positive_real(value, name):
    """value as a finite Python float > 0."""
    value = real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


def nonnegative_real(value, name):
    """value as a finite Python float >= 0 (a penalty such as weight_decay)."""
    value = real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value + 0.0          # -0.0 as 0.0


def fraction(value, name):
    """value in [0, 1): a decay rate such as momentum or Adam's betas."""
    value = real(value, name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {value}")
    return value


def count(value, name):
    """value as a Python int >= 1, for hyperparameters (epochs, step sizes...): like
    positive_int, without the BLAS size limit."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer; got {value!r} of type "
                        f"{type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return int(value)


def float_dtype(dtype, name="dtype"):
    """dtype as np.dtype float32 or float64 (native byte order)."""
    try:
        dt = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or not any(dt == f for f in FLOAT_DTYPES) or not dt.isnative:
        raise TypeError(f"{name} must be float32 or float64; got {dtype!r}")
    return dt


def float_array(x, name, dims, dtype=None, finish=True, dtype_of="X"):
    """x as a C-contiguous, finite float32/float64 ndarray of shape named by dims, e.g.
    "(N, T, I)". Copies only when x is not already such an array (lists, non-contiguous,
    byte-swapped). dtype: if given, x must have exactly that dtype (no silent casts);
    dtype_of names where that dtype comes from, for the message.

    finish=False stops after the checks that cost nothing (type, dtype, ndim, empty) and
    returns x as it is: callers check sizes before anything scans or copies a huge x, then
    call finished().
    """
    ndim = _ndim(dims)
    if not isinstance(x, np.ndarray):
        x = as_array(x, name, dims, "a float array")
    native = x.dtype
    if native is not _F32 and native is not _F64 and native.kind == "f":
        native = native.newbyteorder("=")             # byte-swapped: compared as native
    if native not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array; got dtype {x.dtype}")
    if dtype is not None and native != dtype:
        raise TypeError(f"{name} has dtype {native} but {dtype_of} has dtype {dtype}; all "
                        f"arrays must share one float dtype (convert with "
                        f".astype(np.{dtype}))")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D with shape {dims}; got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {x.shape} (expected {dims}, "
                         f"every dimension >= 1)")
    return finished(x, name) if finish else x


def as_array(x, name, dims, what="an array"):
    """np.asarray(x) for a list, tuple or other array-like x, with a TypeError naming x when
    it cannot be converted: for a ragged nested list, where and how it is ragged (and for
    sequences of different lengths, how to pass them: padded, with lengths=)."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], np.ndarray):
        # a sequence of arrays becomes one array: as large as all of them together
        memory(len(x) * x[0].nbytes, f"{name} (a {type(x).__name__} of arrays, converted "
                                     f"to one array)")
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as exc:
        why = _ragged(x, name, dims) or str(exc)
        raise TypeError(f"{name} must be {what} of shape {dims}; it cannot be converted to "
                        f"an array: {why}") from None


def _ragged(x, name, dims):
    """How the nested sequence x is ragged, as a sentence, or None if it is not."""
    level = [(name, x)]
    axes = [d.strip() for d in dims.strip("()").split(",") if d.strip()]
    for axis in range(1, len(axes) + 1):
        sizes, children = [], []
        for label, seq in level:
            if not _nested(seq):
                return None
            for i, item in enumerate(seq):
                child = f"{label}[{i}]"
                nested = _nested(item)
                sizes.append((child, len(item) if nested else None))
                if nested:
                    children.append((child, item))
        first_label, first = sizes[0] if sizes else (None, None)
        other = next(((lab, n) for lab, n in sizes if n != first), None)
        if other is not None:
            lengths = [n for _, n in sizes]
            if axis == 1 and axes[:2] == ["N", "T"] and None not in lengths:
                shown = ", ".join(map(str, lengths[:4])) + (", ..." if len(lengths) > 4 else "")
                return (f"it is a list of sequences of different lengths ({first_label} has "
                        f"{first} steps, {other[0]} has {other[1]}). Pad them into one array "
                        f"of shape {dims} with T the longest length ({max(lengths)}) and pass "
                        f"lengths=, each sequence's number of steps (here {shown}): steps "
                        f"past a sequence's end are not scored, get no gradient and leave "
                        f"its state alone (the estimators of fastrnn.sklearn take such a "
                        f"list as it is)")

            def has(n):
                return "a single value" if n is None else f"{n} entries"
            where = (f"{first_label} has {has(first)} but {other[0]} has {has(other[1])} "
                     f"(axis {axis} of {dims})")
            return f"it is a ragged list: {where}"
        if not children:
            return None
        level = children
    return None


def _nested(x):
    """x is a list, tuple or array of at least one dimension (np.ndim would convert)."""
    return isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.ndim > 0)


@functools.lru_cache(maxsize=None)
def _ndim(dims):
    """Number of axes in a shape description such as "(N, T, I)" or "(H,)"."""
    return len([d for d in dims.strip("()").split(",") if d.strip()])


def finished(x, name):
    """x (a float array that passed float_array's checks) made C-contiguous and native, and
    checked finite."""
    if not (x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative):   # a copy
        memory(x.size * x.dtype.itemsize, f"{name} (shape {x.shape}, copied to be contiguous)")
        # C reads these through typed pointers: contiguous, aligned, native byte order
        x = np.require(x, dtype=x.dtype.newbyteorder("="), requirements=["C", "A"])
    if not _all_finite(x):
        raise ValueError(f"{name} contains NaN or inf (shape {x.shape}); inputs and weights "
                         f"must be finite")
    return x


def expect_shape(x, name, expected, dims, context):
    if x.shape != expected:
        raise ValueError(f"{name} must have shape {dims} = {expected} to match {context}; "
                         f"got {x.shape}")


def recurrence(cell, X, state0, weights, W_y=None, b_y=None, buffers=None, what=""):
    """Validated (X, state0, weights) of one dtype for the cell (a fastrnn.cells.CellSpec):
    state0 a tuple in the order of cell.states (an entry None means zeros; state0 None means
    all zeros), weights a tuple in the order of cell.weights. With the output layer
    (W_y, b_y) given, returns (X, state0, weights, W_y, b_y).

    Shapes, sizes and memory are checked before any array is scanned, copied or
    allocated, so an absurd (say, broadcast) input fails at once. buffers(N, T, I, H, O):
    the number of elements the caller will allocate (O is 0 without an output layer); the
    input copies and zero states are added to it for the MemoryError check.
    """
    X = float_array(X, "X", "(N, T, I)", finish=False)
    dt = X.dtype if X.dtype.isnative else X.dtype.newbyteorder("=")
    N, T, I = X.shape
    # The recurrent weight (H, G*H) fixes H; everything else is checked against it.
    rec = cell.recurrent_weight
    weights = dict(zip(cell.weight_names, arity(weights, cell.weight_names, "weights", cell)))
    for spec in cell.weights:
        if spec.name == rec:
            W_s = weights[rec] = float_array(weights[rec], rec, spec.dims, dt, finish=False)
            H = W_s.shape[0]
            if W_s.shape[1] != spec.blocks * H:
                how = "square with shape (H, H)" if spec.blocks == 1 else \
                    f"of shape {spec.dims} ({cell.n_gates} gate blocks of H columns)"
                raise ValueError(f"{rec} must be {how}; got {W_s.shape}")
    for spec in cell.weights:
        if spec.name != rec:
            name = spec.name
            w = weights[name] = float_array(weights[name], name, spec.dims, dt, finish=False)
            context = f"X {X.shape} and {rec} {W_s.shape}" if spec.rows == "I" else \
                f"{rec} {W_s.shape}"
            expect_shape(w, name, spec.shape(I, H), spec.dims, context)
    state0 = (list(arity(state0, cell.state_args, "state0", cell)) if state0 is not None
              else [None] * len(cell.states))
    for i, name in enumerate(cell.state_args):
        if state0[i] is not None:
            state0[i] = s = float_array(state0[i], name, "(N, H)", dt, finish=False)
            expect_shape(s, name, (N, H), "(N, H)", f"X {X.shape} and {rec} {W_s.shape}")
    O = 0
    gated = {"GH": cell.n_gates * H} if cell.n_gates > 1 else {}
    if W_y is None:
        blas_sizes(N=N, T=T, I=I, H=H, **gated)
    else:
        W_y, b_y = output_layer(W_y, b_y, H, dt, finish=False)
        O = W_y.shape[1]
        blas_sizes(N=N, T=T, I=I, H=H, O=O, **gated)
    if buffers is not None:
        copied = [n for n, a in zip(("X",) + cell.state_args, [X] + state0) if a is not None
                  and not (a.flags.c_contiguous and a.dtype.isnative)]
        elements = buffers(N, T, I, H, O)
        for s in state0:                   # zero states, allocated below
            if s is None:
                elements += N * H
        for n in copied:
            elements += X.size if n == "X" else N * H
        if copied:
            what += f" (with a contiguous copy of {', '.join(copied)})"
        memory(elements * dt.itemsize, what)
    X = finished(X, "X")
    weights[rec] = finished(weights[rec], rec)
    for name in cell.weight_names:
        if name != rec:
            weights[name] = finished(weights[name], name)
    weights = tuple(weights.values())
    for i, name in enumerate(cell.state_args):
        state0[i] = np.zeros((N, H), dt) if state0[i] is None else finished(state0[i], name)
    state0 = tuple(state0)
    if W_y is None:
        return X, state0, weights
    return X, state0, weights, finished(W_y, "W_y"), finished(b_y, "b_y")


def stack(cell, X, state0, weights, W_y, b_y, D, buffers=None, what=""):
    """Validated (X, state0, weights, W_y, b_y) of a deep or bidirectional network
    (fastrnn/stack.py): weights a sequence of L*D weight tuples (layer-major, forward
    before reverse), state0 None or a tuple (one per cell state) of (L*D, N, H) arrays or
    None (zeros; a one-layer, one-direction network also takes (N, H)). Returns state0 as a
    list of L*D tuples of (N, H) arrays. Errors name the parameter as the model does
    ("W_x_l1_reverse"); buffers(N, T, I, H, O) as for recurrence()."""
    from .cells.spec import layer_name
    X = float_array(X, "X", "(N, T, I)", finish=False)
    dt = X.dtype if X.dtype.isnative else X.dtype.newbyteorder("=")
    N, T, I = X.shape
    if not isinstance(weights, (list, tuple)) or not weights or len(weights) % D:
        raise TypeError(f"weights must be a non-empty list of L*D = L*{D} weight tuples "
                        f"(one per layer and direction); got "
                        f"{len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}")
    L = len(weights) // D
    rec = cell.recurrent_weight
    checked, H = [], None
    for k, layer_weights in enumerate(weights):
        layer, reverse = divmod(k, D)
        names = tuple(layer_name(n, layer, reverse) for n in cell.weight_names)
        ws = dict(zip(cell.weight_names, arity(layer_weights, names, f"weights[{k}]", cell)))
        rec_name = layer_name(rec, layer, reverse)
        W_s = float_array(ws[rec], rec_name, "(H, H)" if cell.n_gates == 1 else
                          f"(H, {cell.n_gates}H)", dt, finish=False)
        if H is None:
            H = W_s.shape[0]
        width = I if layer == 0 else D * H
        for spec, name in zip(cell.weights, names):
            w = ws[spec.name] = float_array(ws[spec.name], name, spec.dims, dt, finish=False)
            context = (f"X {X.shape}" if layer == 0 else f"the {D * H} states of the layer "
                       f"below") + f" and hidden size {H}"
            expect_shape(w, name, spec.shape(width, H), spec.dims.replace("I", "I_l")
                         if layer else spec.dims, context)
        checked.append(ws)
    W_y, b_y = output_layer(W_y, b_y, D * H, dt, finish=False) if W_y is not None else         (None, None)
    O = 0 if W_y is None else W_y.shape[1]
    gated = {"GH": cell.n_gates * H} if cell.n_gates > 1 else {}
    blas_sizes(N=N, T=T, I=max(I, D * H), H=H, O=max(O, 1), **gated)
    # initial states
    if state0 is None:
        state0 = (None,) * len(cell.states)
    state0 = list(arity(state0, cell.state_args, "state0", cell))
    dims = f"(L*D, N, H) = {(L * D, N, H)}"
    for i, name in enumerate(cell.state_args):
        s = state0[i]
        if s is None:
            continue
        s = float_array(s, name, "(L*D, N, H)" if np.ndim(s) != 2 else "(N, H)", dt,
                        finish=False)
        if s.ndim == 2 and L * D == 1:
            s = s[None]
        if s.shape != (L * D, N, H):
            raise ValueError(f"{name} must have shape {dims} (layers times directions, "
                             f"batch, hidden size) to match X {X.shape}; got {s.shape}")
        state0[i] = s
    if buffers is not None:
        memory(buffers(N, T, I, H, O) * dt.itemsize, what)
    X = finished(X, "X")
    weights = []
    for k, ws in enumerate(checked):
        layer, reverse = divmod(k, D)
        weights.append(tuple(finished(ws[n], layer_name(n, layer, reverse))
                             for n in cell.weight_names))
    state0 = [np.zeros((L * D, N, H), dt) if s is None else finished(s, name)
              for s, name in zip(state0, cell.state_args)]
    state0 = [tuple(np.ascontiguousarray(s[k]) for s in state0) for k in range(L * D)]
    if W_y is not None:
        W_y, b_y = finished(W_y, "W_y"), finished(b_y, "b_y")
    return X, state0, weights, W_y, b_y


def sample_weight(weight, N):
    """Validated sample weights: None, or N non-negative finite reals (not all zero) as a
    C-contiguous float64 (N,) array."""
    if weight is None:
        return None
    try:
        w = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sample_weight must be None or an array of N = {N} non-negative "
                        f"numbers; it cannot be converted: {exc}") from None
    if np.asarray(weight).dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold real numbers; got dtype "
                        f"{np.asarray(weight).dtype}")
    if w.shape != (N,):
        raise ValueError(f"sample_weight must have shape (N,) = ({N},), one weight per "
                         f"sequence; got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and >= 0 (0 leaves a sequence out, "
                         "2 counts it twice)")
    if not w.any():
        raise ValueError("sample_weight must not be all zero: the weighted mean loss would "
                         "be 0/0")
    return np.ascontiguousarray(w)


def dropout_masks(masks, L, N, T, width, dt):
    """Validated dropout multipliers: None, or L-1 arrays (N, T, width) of dtype dt."""
    if masks is None:
        return None
    if not isinstance(masks, (list, tuple)) or len(masks) != L - 1:
        raise TypeError(f"dropout_masks must be None or a list of L-1 = {L - 1} arrays "
                        f"(N, T, D*H); got {type(masks).__name__}")
    checked = []
    for i, m in enumerate(masks):
        m = float_array(m, f"dropout_masks[{i}]", "(N, T, D*H)", dt)
        expect_shape(m, f"dropout_masks[{i}]", (N, T, width), "(N, T, D*H)",
                     "X and the layers")
        checked.append(m)
    return checked


def cell_option(name, value):
    """A cell option's value checked: the Elman cell's activation, the LSTM's forget_gate."""
    if name == "activation":
        return choice(value, "activation", ACTIVATIONS)
    if name == "forget_gate":
        return boolean(value, "forget_gate")
    raise ValueError(f"unknown cell option {name!r}")


def arity(values, names, what, cell):
    """values as a tuple with one entry per name (the cell's states or weights)."""
    if not isinstance(values, (tuple, list)) or len(values) != len(names):
        got = f"{len(values)} entries" if isinstance(values, (tuple, list)) else \
            type(values).__name__
        raise TypeError(f"{what} must be a tuple of {len(names)} arrays ({', '.join(names)}) "
                        f"for the {cell.name} cell; got {got}")
    return tuple(values)


def output_layer(W_y, b_y, H, dt, finish=True):
    """Validated (W_y, b_y) for hidden size H and dtype dt."""
    W_y = float_array(W_y, "W_y", "(H, O)", dt, finish=False)
    if W_y.shape[0] != H:
        raise ValueError(f"W_y must have shape (H, O) with H = {H} to match W_s; "
                         f"got {W_y.shape}")
    O = W_y.shape[1]
    b_y = float_array(b_y, "b_y", "(O,)", dt, finish=False)
    expect_shape(b_y, "b_y", (O,), "(O,)", f"W_y {W_y.shape}")
    if not finish:
        return W_y, b_y
    return finished(W_y, "W_y"), finished(b_y, "b_y")


def states(S, name, N, T, H, dt):
    """Validated (N, T, H) array S of dtype dt (states or their gradients)."""
    S = float_array(S, name, "(N, T, H)", dt, finish=False)
    expect_shape(S, name, (N, T, H), "(N, T, H)", "X and the recurrent weight")
    return finished(S, name)


def lengths(lengths, N, T):
    """Validated sequence lengths: None, or integers in [1, T], shape (N,), as int64."""
    if lengths is None:
        return None
    if not isinstance(lengths, np.ndarray):
        lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (N,); got dtype "
                        f"{lengths.dtype}")
    if lengths.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},) to match X; got "
                         f"{lengths.shape}")
    lo, hi = lengths.min(), lengths.max()
    if lo < 1 or hi > T:
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}]; got values from {lo} to "
                         f"{hi}")
    return np.require(lengths, dtype=np.int64, requirements=["C", "A"])


def targets(Y, output, target, N, T, O, dt, lengths=None):
    """Validated targets: for output "linear", real values of dtype dt with shape (N, T, O)
    (target "sequence") or (N, O) ("last"); for "softmax", integer class labels in [0, O)
    with shape (N, T) or (N,), returned as int64. With lengths (validated), labels past a
    sequence's end are not looked at (any padding value will do) and come back as 0."""
    seq = target == "sequence"
    if output == "linear":
        dims, shape = ("(N, T, O)", (N, T, O)) if seq else ("(N, O)", (N, O))
    else:
        dims, shape = ("(N, T)", (N, T)) if seq else ("(N,)", (N,))
    if not isinstance(Y, np.ndarray):
        Y = as_array(Y, "Y", dims)
    if output == "linear" and O == 1 and Y.ndim == (2 if seq else 1) and \
            Y.shape[1:] == shape[1:-1]:
        Y = Y[..., None]                      # one output: (N, T) / (N,) targets accepted
    hint = _target_hint(target, output, Y.shape, shape, N, T)
    if hint:
        extra = f"output={output!r}, " if output == "softmax" else ""
        raise ValueError(f"Y must have shape {dims} = {shape} for {extra}target={target!r}; "
                         f"got {Y.shape}{hint}")
    if output == "linear":
        Y = float_array(Y, "Y", dims, dt, finish=False)
        expect_shape(Y, "Y", shape, dims, f"target={target!r}, X and W_y")
        return finished(Y, "Y")
    if Y.dtype.kind not in "iu":
        raise TypeError(f"Y must hold integer class labels for output='softmax'; got dtype "
                        f"{Y.dtype} (use .astype(np.int64) if the values are whole numbers)")
    if Y.shape != shape:
        raise ValueError(f"Y must have shape {dims} = {shape} for output='softmax', "
                         f"target={target!r}; got {Y.shape}")
    scored = None
    if lengths is not None and seq:
        scored = np.arange(T) < lengths[:, None]
        if scored.all():
            scored = None
    seen = Y if scored is None else Y[scored]          # in its own dtype: no wrap-around
    lo, hi = seen.min(), seen.max()
    if lo < 0 or hi >= O:
        raise ValueError(f"Y class labels must lie in [0, O) = [0, {O}); got values from "
                         f"{lo} to {hi}")
    if scored is not None:
        Y = np.where(scored, Y, 0)
    return np.require(Y, dtype=np.int64, requirements=["C", "A"])


def _target_hint(target, output, got, shape, N, T):
    """The end of the message for targets with one entry per step given with target="last"
    (or one per sequence with target="sequence"), else "" (other shape errors keep their
    plain messages)."""
    what = "label" if output == "softmax" else "target"
    per_step = got[:2] == (N, T) and (len(got) == len(shape) + 1 or (
        output == "linear" and len(got) == 2 and shape[1] == 1 and T > 1))   # O = 1: (N, T)
    if target == "last" and got != shape and per_step:
        return (f", one {what} per step: target='last' expects one {what} per sequence, "
                f"{'(N,)' if output == 'softmax' else '(N, O)'}, scored at its last step. "
                f"Pass target='sequence' to score every step, or Y[:, -1] (with lengths, "
                f"Y[np.arange(N), lengths - 1]) to score the last step only")
    if target == "sequence" and len(got) == len(shape) - 1 and got[:1] == (N,):
        return (f", one {what} per sequence: target='sequence' expects one {what} per "
                f"step, {'(N, T)' if output == 'softmax' else '(N, T, O)'}; for one per "
                f"sequence, scored at its last step, pass target='last'")
    return ""


def blas_sizes(**dims):
    """Every BLAS int we form (dimensions, N*T rows, T*K leading dimensions) fits in 32 bits.
    GH: the width G*H of a gated cell's stacked gate blocks."""
    N, T = dims["N"], dims["T"]
    products = {"N*T": N * T}
    for k in ("I", "H", "O", "GH"):
        if k in dims:
            products[f"T*{k}"] = T * dims[k]
    for label, value in {**dims, **products}.items():
        if value > BLAS_INT_MAX:
            raise ValueError(f"{label} = {value} is too large for 32-bit BLAS (must be < 2**31);"
                             f" sizes: {dims}")


def available_memory():
    """Bytes of memory available to allocate now (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory(nbytes, what, hint=""):
    """MemoryError before allocating, if nbytes of buffers cannot fit in available memory.
    hint: appended to the message (say which argument makes it so large)."""
    if nbytes < 1 << 28:          # below 256 MiB: not worth a look at /proc
        return
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(f"{what} needs {nbytes / 2**30:.2f} GiB of buffers but only "
                          f"{avail / 2**30:.2f} GiB of memory is available{hint}")


def model_weights(params, shapes, dt):
    """The five weights of a model, checked quickly for the per-call paths (step): each an
    ndarray of exactly dtype dt, C-contiguous, of the shape the model's sizes call for, and
    finite (one compiled pass each). Anything else goes through the full checks, for their
    messages. params: the model's dict; shapes: {name: shape}."""
    out = []
    for name, shape in shapes.items():
        w = params[name]
        if not (type(w) is np.ndarray and w.dtype is dt and w.shape == shape
                and w.flags.c_contiguous and w.flags.aligned and _all_finite(w)):
            w = float_array(w, name, "(" + ", ".join("N" * len(shape)) + ",)", dt)
            if w.shape != shape:
                raise ValueError(f"{name} must have shape {shape}; got {w.shape}")
        out.append(w)
    return out
