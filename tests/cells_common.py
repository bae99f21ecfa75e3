"""Helpers of the gated-cell tests (tests/test_cells_*.py): the generic functional API's
arguments built from the problems of tests/test_gated_reference.py, and a tolerant
comparison. Not a test module (pytest collects test_*.py only)."""
import numpy as np

import fastrnn
from test_gated_reference import assert_close, make_problem  # noqa: F401  (re-exported)

# (cell, forget_gate): the LSTM with and without its forget gate, and the GRU
CELLS = [("lstm", True), ("lstm", False), ("gru", None)]
CELL_IDS = ["lstm", "lstm_nofg", "gru"]
STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}
WEIGHTS = {"lstm": ("W_x", "W_s", "b"), "gru": ("W_x", "W_s", "b", "b_s")}
MODELS = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}


def state0(cell, p):
    """The initial states of problem p as the functional API takes them (a tuple)."""
    return tuple(p[k] for k in STATES[cell])


def weights(cell, p):
    return tuple(p[k] for k in WEIGHTS[cell])


def options(cell, forget_gate):
    return (forget_gate,) if cell == "lstm" else ()


def as_tuple(states):
    """A cell's states (one array, or a tuple for the LSTM) as a tuple."""
    return states if isinstance(states, tuple) else (states,)


def loss_and_grad(cell, forget_gate, p, backend="cython", **kw):
    """fastrnn.cell_loss_and_grad on problem p; kw: output, target, input_grads, lengths,
    return_state, state_grad_norms."""
    return fastrnn.cell_loss_and_grad(cell, p["X"], p["Y"], state0(cell, p), weights(cell, p),
                                      p["W_y"], p["b_y"], options(cell, forget_gate),
                                      backend=backend, **kw)


def forward(cell, forget_gate, p, backend="cython", lengths=None):
    """The state sequences (a tuple: (Hs,) or (Hs, Cs)) of fastrnn.cell_forward."""
    return as_tuple(fastrnn.cell_forward(cell, p["X"], state0(cell, p), weights(cell, p),
                                         options(cell, forget_gate), backend, lengths))


def backward(cell, forget_gate, p, states, dstates, backend="cython", lengths=None):
    return fastrnn.cell_backward(cell, p["X"], state0(cell, p), weights(cell, p),
                                 tuple(states), tuple(dstates), options(cell, forget_gate),
                                 backend, lengths)


def predict(cell, forget_gate, p, output="linear", backend="cython", lengths=None):
    return fastrnn.cell_predict(cell, p["X"], state0(cell, p), weights(cell, p), p["W_y"],
                                p["b_y"], options(cell, forget_gate), output, backend, lengths)


def model_for(cell, forget_gate, p, output="linear", backend="cython", dtype=None):
    """fastrnn.LSTM / fastrnn.GRU holding problem p's weights."""
    I, kH = p["W_x"].shape
    H, O = p["W_y"].shape
    dtype = np.dtype(p["X"].dtype if dtype is None else dtype).name
    kw = {"forget_gate": forget_gate} if cell == "lstm" else {}
    m = MODELS[cell](I, H, O, output=output, dtype=dtype, backend=backend, **kw)
    for k in m.params:
        m.params[k] = np.array(p[k], dtype=dtype)
    return m


def model_state0(cell, p, rows=slice(None)):
    """The initial state of problem p as the models take it: h0, or the tuple (h0, c0)."""
    s = tuple(p[k][rows] for k in STATES[cell])
    return s if cell == "lstm" else s[0]


def rel_err(actual, desired):
    """max |actual - desired| / max |desired| (the measure the tests bound)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = max(float(np.max(np.abs(desired), initial=0.0)), 1e-30)
    return float(np.max(np.abs(actual - desired), initial=0.0)) / scale
