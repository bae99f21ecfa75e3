"""Bad input to the gated cells' entry points (fastrnn.cell_* with "lstm"/"gru", fastrnn.LSTM,
fastrnn.GRU, fastrnn.init.init_params for the gated cells): each raises the documented
exception (TypeError for a wrong type or dtype, ValueError for a wrong shape or value,
MemoryError for a request larger than available memory) with a message naming the
argument, before any compiled code runs. Awkward but valid layouts give the clean result.
"""
from unittest import mock

import numpy as np
import pytest

import fastrnn
import fastrnn._validate as V
from cells_common import MODELS, STATES, WEIGHTS, make_problem
from fastrnn.init import init_params

BACKENDS = ("cython", "numpy")
N, T, I, H, O = 2, 3, 4, 3, 2
FUNCS = ("forward", "backward", "predict", "loss")
CELL_NAMES = ("lstm", "gru")


def problem(cell, dtype=np.float64, seed=0):
    p = make_problem(cell, N, T, I, H, O, dtype=dtype, seed=seed)
    states = fastrnn.cell_forward(cell, p["X"], tuple(p[k] for k in STATES[cell]),
                                  tuple(p[k] for k in WEIGHTS[cell]), opts(cell))
    states = states if cell == "lstm" else (states,)
    p["states"], p["dstates"] = states, tuple(np.ones_like(S) for S in states)
    return p


def opts(cell):
    return (True,) if cell == "lstm" else ()


def call(func, cell, p, backend="cython", state0=None, weights=None, options=None,
         states=None, dstates=None, **kw):
    """fastrnn.cell_<func> on problem p, with any argument replaced."""
    state0 = tuple(p[k] for k in STATES[cell]) if state0 is None else state0
    weights = tuple(p[k] for k in WEIGHTS[cell]) if weights is None else weights
    options = opts(cell) if options is None else options
    if func == "forward":
        return fastrnn.cell_forward(cell, p["X"], state0, weights, options, backend, **kw)
    if func == "backward":
        return fastrnn.cell_backward(cell, p["X"], state0, weights,
                                     p["states"] if states is None else states,
                                     p["dstates"] if dstates is None else dstates, options,
                                     backend, **kw)
    if func == "predict":
        return fastrnn.cell_predict(cell, p["X"], state0, weights, p["W_y"], p["b_y"], options,
                                    backend=backend, **kw)
    return fastrnn.cell_loss_and_grad(cell, p["X"], p["Y"], state0, weights, p["W_y"],
                                      p["b_y"], options, backend=backend, **kw)


def with_weight(cell, p, name, value):
    return tuple(value if k == name else p[k] for k in WEIGHTS[cell])


# =============================================================================================
# The functional API

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell, shape, pattern", [
    ("lstm", (H, H), r"^W_s must be of shape \(H, 4H\) \(4 gate blocks of H columns\); "
                     r"got \(3, 3\)$"),
    ("lstm", (H, 3 * H), r"^W_s must be of shape \(H, 4H\) .*got \(3, 9\)$"),
    ("gru", (H, 4 * H), r"^W_s must be of shape \(H, 3H\) \(3 gate blocks of H columns\); "
                        r"got \(3, 12\)$"),
    ("gru", (H, H), r"^W_s must be of shape \(H, 3H\) .*got \(3, 3\)$"),
    ("lstm", (4 * H,), r"^W_s must be 2-D with shape \(H, 4H\); got shape \(12,\)$"),
    ("gru", (H, 3 * H, 1), r"^W_s must be 2-D with shape \(H, 3H\)"),
])
def test_wrong_recurrent_weight_shape(cell, shape, pattern, func, backend):
    p = problem(cell)
    with pytest.raises(ValueError, match=pattern):
        call(func, cell, p, backend, weights=with_weight(cell, p, "W_s", np.zeros(shape)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell, name, shape, pattern", [
    ("lstm", "W_x", (I, 3 * H), r"^W_x must have shape \(I, 4H\) = \(4, 12\) to match X "
                                r"\(2, 3, 4\) and W_s \(3, 12\); got \(4, 9\)$"),
    ("lstm", "W_x", (I + 1, 4 * H), r"^W_x must have shape \(I, 4H\) = \(4, 12\)"),
    ("lstm", "b", (H,), r"^b must have shape \(4H,\) = \(12,\) to match W_s \(3, 12\); "
                        r"got \(3,\)$"),
    ("gru", "W_x", (I, H), r"^W_x must have shape \(I, 3H\) = \(4, 9\)"),
    ("gru", "b", (4 * H,), r"^b must have shape \(3H,\) = \(9,\)"),
    ("gru", "b_s", (2 * H,), r"^b_s must have shape \(3H,\) = \(9,\) to match W_s \(3, 9\); "
                             r"got \(6,\)$"),
    ("gru", "b_s", (3 * H, 1), r"^b_s must be 1-D with shape \(3H,\)"),
])
def test_wrong_gate_weight_shape(cell, name, shape, pattern, func, backend):
    p = problem(cell)
    with pytest.raises(ValueError, match=pattern):
        call(func, cell, p, backend, weights=with_weight(cell, p, name, np.zeros(shape)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("shape, pattern", [
    ((N, H + 1), r"^c0 must have shape \(N, H\) = \(2, 3\) to match X \(2, 3, 4\) and W_s "
                 r"\(3, 12\); got \(2, 4\)$"),
    ((N + 1, H), r"^c0 must have shape \(N, H\) = \(2, 3\) .*got \(3, 3\)$"),
    ((H,), r"^c0 must be 2-D with shape \(N, H\); got shape \(3,\)$"),
    ((1, N, H), r"^c0 must be 2-D with shape \(N, H\); got shape \(1, 2, 3\)$"),
    ((N, 0), r"^c0 must not be empty"),
])
def test_wrong_c0_shape(shape, pattern, func, backend):
    p = problem("lstm")
    with pytest.raises(ValueError, match=pattern):
        call(func, "lstm", p, backend, state0=(p["h0"], np.zeros(shape)))


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell, arg", [("lstm", "h0"), ("lstm", "c0"), ("gru", "h0"),
                                       ("lstm", "W_s"), ("gru", "b_s"), ("lstm", "b"),
                                       ("gru", "X")])
@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_non_finite(cell, arg, value, func, backend="cython"):
    p = problem(cell)
    bad = p[arg].copy()
    bad.flat[-1] = value
    kw = {}
    if arg in STATES[cell]:
        kw["state0"] = tuple(bad if k == arg else p[k] for k in STATES[cell])
    elif arg in WEIGHTS[cell]:
        kw["weights"] = with_weight(cell, p, arg, bad)
    else:
        p = dict(p, X=bad)
    with pytest.raises(ValueError, match=rf"^{arg} contains NaN or inf \(shape "):
        call(func, cell, p, backend, **kw)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell, arg", [("lstm", "c0"), ("lstm", "h0"), ("lstm", "W_s"),
                                       ("lstm", "W_x"), ("gru", "b_s"), ("gru", "W_s"),
                                       ("gru", "h0")])
@pytest.mark.parametrize("x_dtype, w_dtype", [(np.float64, np.float32),
                                              (np.float32, np.float64)])
def test_mixed_float_dtypes(cell, arg, x_dtype, w_dtype, func, backend="cython"):
    p = problem(cell, dtype=x_dtype)
    bad = p[arg].astype(w_dtype)
    kw = {}
    if arg in STATES[cell]:
        kw["state0"] = tuple(bad if k == arg else p[k] for k in STATES[cell])
    else:
        kw["weights"] = with_weight(cell, p, arg, bad)
    want, other = np.dtype(w_dtype).name, np.dtype(x_dtype).name
    with pytest.raises(TypeError, match=rf"^{arg} has dtype {want} but X has dtype {other}"):
        call(func, cell, p, backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which, bad, exc, pattern", [
    ("states", "C", ValueError, r"^C must have shape \(N, T, H\) = \(2, 3, 3\)"),
    ("dstates", "C", ValueError, r"^dC must have shape \(N, T, H\) = \(2, 3, 3\)"),
    ("states", "H", ValueError, r"^H must have shape \(N, T, H\)"),
    ("dstates", "dtype", TypeError, r"^dC has dtype float32 but X has dtype float64"),
    ("states", "nan", ValueError, r"^C contains NaN or inf"),
    ("dstates", "none", TypeError, r"^dC must be a float32 or float64 array"),
])
def test_lstm_backward_bad_state_sequences(which, bad, exc, pattern, backend):
    p = problem("lstm")
    S = list(p[which])
    if bad == "C":
        S[1] = S[1][:, :2]
    elif bad == "H":
        S[0] = S[0][..., :2]
    elif bad == "dtype":
        S[1] = S[1].astype(np.float32)
    elif bad == "nan":
        S[1] = S[1].copy()
        S[1][0, 0, 0] = np.nan
    else:
        S[1] = None
    with pytest.raises(exc, match=pattern):
        call("backward", "lstm", p, backend, **{which: tuple(S)})


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0, np.array(True)])
def test_forget_gate_must_be_a_bool(value, func, backend="cython"):
    p = problem("lstm")
    with pytest.raises(TypeError, match=r"^forget_gate must be True or False; got "):
        call(func, "lstm", p, backend, options=(value,))


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell, options, pattern", [
    ("lstm", (), r"^the lstm cell takes options \('forget_gate',\); got \(\)$"),
    ("lstm", (True, True), r"^the lstm cell takes options \('forget_gate',\)"),
    ("lstm", ("tanh",), r"^forget_gate must be True or False; got 'tanh'$"),
    ("gru", (True,), r"^the gru cell takes options \(\); got \(True,\)$"),
    ("gru", ("tanh",), r"^the gru cell takes options \(\)"),
])
def test_wrong_options(cell, options, pattern, func):
    p = problem(cell)
    with pytest.raises(TypeError, match=pattern):
        call(func, cell, p, options=options)


def test_numpy_bools_are_accepted_as_forget_gate():
    p = problem("lstm")
    a = call("loss", "lstm", p, options=(np.False_,))
    b = call("loss", "lstm", p, options=(False,))
    assert a[0] == b[0]


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_initial_states_may_be_none(cell, func):
    """state0 None, or None entries in it, mean zeros."""
    p = problem(cell)
    n = len(STATES[cell])
    want = call(func, cell, p, state0=tuple(np.zeros((N, H)) for _ in range(n)))
    for state0 in ((None,) * n, (None, np.zeros((N, H)))[:n]):
        got = call(func, cell, p, state0=state0)
        for a, b in zip(_flat(got), _flat(want)):
            np.testing.assert_array_equal(a, b)
    q = dict(p, **{k: None for k in STATES[cell]})
    got = call(func, cell, q)                    # state0 = (None, ...) through the helper
    for a, b in zip(_flat(got), _flat(want)):
        np.testing.assert_array_equal(a, b)
    if func == "forward":
        got = fastrnn.cell_forward(cell, p["X"], None, tuple(p[k] for k in WEIGHTS[cell]),
                                   opts(cell))
        for a, b in zip(_flat(got), _flat(want)):
            np.testing.assert_array_equal(a, b)


def _flat(result):
    """The arrays of a result (dicts in key order), for comparisons."""
    if isinstance(result, dict):
        return [result[k] for k in sorted(result)]
    if isinstance(result, tuple):
        return [a for r in result for a in _flat(r)]
    return [np.asarray(result)]


# The number of states, weights and state sequences must match the cell (these found bugs:
# short tuples raised IndexError/KeyError, extra entries were silently ignored).


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["lstm_one_state", "lstm_three_states", "gru_two_states",
                                  "lstm_two_weights", "lstm_four_weights",
                                  "gru_three_weights", "gru_five_weights"])
def test_wrong_number_of_states_or_weights(case, backend, func):
    cell = case.split("_")[0]
    p = problem(cell)
    states = tuple(p[k] for k in STATES[cell])
    w = tuple(p[k] for k in WEIGHTS[cell])
    kw = {"lstm_one_state": {"state0": states[:1]},
          "lstm_three_states": {"state0": states + (p["h0"],)},
          "gru_two_states": {"state0": states + (p["h0"],)},
          "lstm_two_weights": {"weights": w[:2]},
          "lstm_four_weights": {"weights": w + (p["b"],)},
          "gru_three_weights": {"weights": w[:3]},
          "gru_five_weights": {"weights": w + (p["b"],)}}[case]
    name = "state0" if "state0" in kw else "weights"
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        call(func, cell, p, backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which, n", [("states", 1), ("dstates", 1), ("states", 3),
                                      ("dstates", 3)])
def test_lstm_backward_wrong_number_of_state_sequences(which, n, backend):
    p = problem("lstm")
    S = (p[which] * 2)[:n]
    with pytest.raises((TypeError, ValueError), match=rf"\b{which}\b"):
        call("backward", "lstm", p, backend, **{which: S})


# =============================================================================================
# Absurd sizes: refused before anything is allocated or scanned

def broadcast(shape, dtype=np.float32):
    return np.broadcast_to(np.zeros((), dtype), shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gate_width_too_large_for_blas(cell, backend):
    """T * G*H >= 2**31 while T * H is not: the gated cells' own BLAS size."""
    Tb, Hb = 2**14, 2**16
    G = 4 if cell == "lstm" else 3
    X = broadcast((1, Tb, 1))
    weights = (broadcast((1, G * Hb)), broadcast((Hb, G * Hb)), broadcast((G * Hb,)))
    weights += (broadcast((G * Hb,)),) if cell == "gru" else ()
    with pytest.raises(ValueError, match=r"T\*GH = \d+ is too large for 32-bit BLAS"):
        fastrnn.cell_forward(cell, X, None, weights, opts(cell), backend)


@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_memory_error_before_allocating(cell, func):
    """Buffers larger than the available memory: MemoryError naming the call, nothing
    allocated (X is a broadcast view; numpy's own "Unable to allocate" would mean fastrnn
    tried)."""
    G = 4 if cell == "lstm" else 3
    Nb, Tb, Hb = 2**12, 2**12, 8
    X = broadcast((Nb, Tb, 1))
    weights = (np.zeros((1, G * Hb), np.float32), np.zeros((Hb, G * Hb), np.float32),
               np.zeros(G * Hb, np.float32))
    weights += (np.zeros(G * Hb, np.float32),) if cell == "gru" else ()
    W_y, b_y = np.zeros((Hb, 1), np.float32), np.zeros(1, np.float32)
    S = broadcast((Nb, Tb, Hb))
    with mock.patch.object(V, "available_memory", lambda: 1 << 30):
        with pytest.raises(MemoryError, match=rf"^{cell}_\w+ .*needs [\d.]+ GiB of buffers "
                                              r"but only 1.00 GiB"):
            if func == "forward":
                fastrnn.cell_forward(cell, X, None, weights, opts(cell))
            elif func == "backward":
                fastrnn.cell_backward(cell, X, None, weights, (S,) * len(STATES[cell]),
                                      (S,) * len(STATES[cell]), opts(cell))
            elif func == "predict":
                fastrnn.cell_predict(cell, X, None, weights, W_y, b_y, opts(cell))
            else:
                fastrnn.cell_loss_and_grad(cell, X, broadcast((Nb, Tb, 1)), None, weights,
                                           W_y, b_y, opts(cell))


@pytest.mark.parametrize("method", ["forward", "loss_and_grad"])
def test_gru_tuple_state_of_a_huge_view_is_not_converted(method):
    m, p = model_and_data("gru", dtype="float32")
    huge = np.broadcast_to(np.zeros((), np.float32), (2**31, 2**20))
    with mock.patch.object(V, "available_memory", lambda: 1 << 30):
        with pytest.raises((TypeError, ValueError, MemoryError)) as info:
            model_call(m, method, p, (huge,))
    assert not str(info.value).startswith("Unable to allocate"), str(info.value)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("sizes", [(1, 2**20, 1), (2**26, 4, 1), (1, 4, 2**28)])
def test_absurd_model_sizes_raise_memory_error(cell, sizes):
    # the message names the size that makes the parameters so large
    size = {0: "input_size", 1: "hidden_size", 2: "output_size"}[int(np.argmax(sizes))]
    with mock.patch.object(V, "available_memory", lambda: 1 << 30):
        with pytest.raises(MemoryError, match=rf"^init_params needs [\d.]+ GiB of buffers but "
                                              rf"only 1.00 GiB of memory is available: the "
                                              rf"{cell} cell's parameters for input_size="
                                              rf"{sizes[0]}, hidden_size={sizes[1]}, "
                                              rf"output_size={sizes[2]} are .* {size} is too "
                                              rf"large$"):
            MODELS[cell](*sizes)


# =============================================================================================
# The models

def model_and_data(cell, dtype="float64", backend="cython", output="linear"):
    m = MODELS[cell](I, H, O, dtype=dtype, backend=backend, output=output, seed=0)
    p = make_problem(cell, N, T, I, H, O, dtype=np.dtype(dtype), output=output, seed=1)
    return m, p


def model_call(m, method, p, h0=None):
    if method == "forward":
        return m.forward(p["X"], h0)
    if method == "loss_and_grad":
        return m.loss_and_grad(p["X"], p["Y"], h0)
    return m.step(p["X"][:, 0], h0)


METHODS = ("forward", "loss_and_grad", "step")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", ["array", "one", "three", "str", "dict"])
def test_lstm_state_must_be_a_tuple(bad, method, backend):
    m, p = model_and_data("lstm", backend=backend)
    h0 = {"array": p["h0"], "one": (p["h0"],), "three": (p["h0"], p["c0"], p["c0"]),
          "str": "h0", "dict": {"h0": p["h0"], "c0": p["c0"]}}[bad]
    with pytest.raises(TypeError, match=r"^the initial state of LSTM must be None or a tuple "
                                        r"\(h0, c0\) of \(N, H\) arrays; got "):
        model_call(m, method, p, h0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["forward", "loss_and_grad"])
@pytest.mark.parametrize("bad, exc, pattern", [
    ("shape", ValueError, r"^c0 must have shape \(N, H\) = \(2, 3\) .*got \(2, 4\)$"),
    ("nan", ValueError, r"^c0 contains NaN or inf"),
    ("dtype", TypeError, r"^c0 has dtype float32 but X has dtype float64"),
    ("int", TypeError, r"^c0 must be a float32 or float64 array; got dtype int64$"),
    ("h_shape", ValueError, r"^h0 must have shape \(N, H\) = \(2, 3\)"),
])
def test_lstm_model_bad_c0(bad, exc, pattern, method, backend):
    m, p = model_and_data("lstm", backend=backend)
    c0 = {"shape": np.zeros((N, H + 1)), "nan": np.full((N, H), np.nan),
          "dtype": p["c0"].astype(np.float32), "int": np.zeros((N, H), np.int64),
          "h_shape": p["c0"]}[bad]
    h0 = np.zeros((N, H + 1)) if bad == "h_shape" else p["h0"]
    with pytest.raises(exc, match=pattern):
        model_call(m, method, p, (h0, c0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad, exc, pattern", [
    ("shape", ValueError, r"^c must have shape \(N, H\) = \(2, 3\) to match x \(2, 4\); "
                          r"got \(2, 4\)$"),
    ("nan", ValueError, r"^c contains NaN or inf"),
    ("dtype", TypeError, r"^c has dtype float32 but the model has dtype float64"),
    ("single", ValueError, r"^c must be 1-D with shape \(H,\); got shape \(2, 3\)$"),
    ("h_shape", ValueError, r"^h must have shape \(N, H\) = \(2, 3\)"),
])
def test_lstm_step_bad_state(bad, exc, pattern, backend):
    m, p = model_and_data("lstm", backend=backend)
    c = {"shape": np.zeros((N, H + 1)), "nan": np.full((N, H), np.nan),
         "dtype": p["c0"].astype(np.float32), "single": p["c0"], "h_shape": p["c0"]}[bad]
    x = p["X"][0, 0] if bad == "single" else p["X"][:, 0]
    h = p["h0"][0] if bad == "single" else p["h0"]
    h = np.zeros((N, H + 1)) if bad == "h_shape" else h
    with pytest.raises(exc, match=pattern):
        m.step(x, (h, c))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cell, key, shape", [
    ("lstm", "W_s", (H, H)), ("lstm", "W_x", (I, 3 * H)), ("lstm", "b", (3 * H,)),
    ("gru", "W_s", (H, 4 * H)), ("gru", "b_s", (4 * H,)), ("gru", "W_y", (H + 1, O)),
])
def test_model_param_wrong_shape(cell, key, shape, method, backend):
    m, p = model_and_data(cell, backend=backend)
    m.params[key] = np.zeros(shape)
    pattern = rf"^model.params\['{key}'\] must have shape" if method != "step" else \
        rf"^{key} must have shape"
    with pytest.raises(ValueError, match=pattern):
        model_call(m, method, p)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cell, key", [("gru", "b_s"), ("lstm", "W_s")])
def test_model_missing_param(cell, key, method):
    m, p = model_and_data(cell)
    del m.params[key]
    with pytest.raises(KeyError, match=rf"model.params is missing \['{key}'\]"):
        model_call(m, method, p)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("model_dtype, x_dtype", [("float32", "float64"),
                                                  ("float64", "float32")])
def test_model_wrong_input_dtype(cell, model_dtype, x_dtype, method):
    m, p = model_and_data(cell, dtype=model_dtype)
    p = dict(p, X=p["X"].astype(x_dtype))
    with pytest.raises(TypeError, match=rf"^[xX] has dtype {x_dtype} but the model has "
                                        rf"dtype {model_dtype}"):
        model_call(m, method, p)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_model_param_nan_or_wrong_dtype(cell, method):
    for damage in ("nan", "dtype"):
        m, p = model_and_data(cell)
        k = "b_s" if cell == "gru" else "W_s"
        if damage == "nan":
            m.params[k] = m.params[k].copy()
            m.params[k][0, ...] = np.nan
            exc, pattern = ValueError, rf"{k} contains NaN or inf"
        else:
            m.params[k] = m.params[k].astype(np.float32)
            exc, pattern = TypeError, rf"{k}.*float32.*float64|{k}.*dtype"
        with pytest.raises(exc, match=pattern):
            model_call(m, method, p)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"forget_gate": 1}, TypeError, r"^forget_gate must be True or False; got 1$"),
    ({"forget_gate": "no"}, TypeError, r"^forget_gate must be True or False; got 'no'$"),
    ({"forget_gate": None}, TypeError, r"^forget_gate must be True or False; got None$"),
    ({"chrono": 2}, ValueError, r"^chrono \(T_max\) must be at least 3 .*; got 2$"),
    ({"chrono": 1}, ValueError, r"^chrono \(T_max\) must be at least 3"),
    ({"chrono": 0}, ValueError, r"^chrono must be a positive integer; got 0$"),
    ({"chrono": -5}, ValueError, r"^chrono must be a positive integer; got -5$"),
    ({"chrono": 2.5}, TypeError, r"^chrono must be a positive integer; got 2.5 of type float$"),
    ({"chrono": 10.0}, TypeError, r"^chrono must be a positive integer"),
    ({"chrono": True}, TypeError, r"^chrono must be a positive integer; got True"),
    ({"chrono": "10"}, TypeError, r"^chrono must be a positive integer; got '10'"),
    ({"forget_bias": "1"}, TypeError, r"^forget_bias must be a real number; got '1'"),
    ({"forget_bias": True}, TypeError, r"^forget_bias must be a real number; got True"),
    ({"forget_bias": np.nan}, ValueError, r"^forget_bias must be finite; got nan$"),
    ({"forget_bias": np.inf}, ValueError, r"^forget_bias must be finite; got inf$"),
    ({"forget_bias": None}, TypeError, r"^forget_bias must be a real number; got None"),
    ({"spectral_radius": 0.9}, TypeError, r"spectral_radius"),
    ({"activation": "relu"}, TypeError, r"activation"),
    ({"init": "xavier"}, ValueError, r"^scheme must be one of 'uniform', 'glorot', "
                                     r"'orthogonal', 'identity'; got 'xavier'$"),
    ({"dtype": "float16"}, TypeError, r"^dtype must be float32 or float64; got 'float16'$"),
    ({"output": "sigmoid"}, ValueError, r"^output must be one of 'linear', 'softmax'"),
    ({"backend": "torch"}, ValueError, r"^backend must be one of 'cython', 'numpy'"),
    ({"seed": -1}, TypeError, r"^seed must be None or a non-negative int; got -1$"),
])
def test_lstm_constructor_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fastrnn.LSTM(3, 4, 2, **kwargs)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"spectral_radius": 0.9}, TypeError, r"spectral_radius"),
    ({"forget_gate": True}, TypeError, r"forget_gate"),
    ({"forget_bias": 1.0}, TypeError, r"forget_bias"),
    ({"chrono": 10}, TypeError, r"chrono"),
    ({"init": None}, ValueError, r"^scheme must be one of"),
    ({"dtype": np.int32}, TypeError, r"^dtype must be float32 or float64"),
])
def test_gru_constructor_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fastrnn.GRU(3, 4, 2, **kwargs)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("size", [0, -1, 2**31, 2.5, True, "3", None])
def test_constructor_bad_sizes(cell, size):
    for pos in range(3):
        sizes = [3, 4, 2]
        sizes[pos] = size
        with pytest.raises((TypeError, ValueError), match=r"^(input|hidden|output)_size "):
            MODELS[cell](*sizes)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_init_params_refuses_spectral_radius_for_gated_cells(cell):
    G = 4 if cell == "lstm" else 3
    with pytest.raises(ValueError, match=rf"^spectral_radius applies to a square recurrent "
                                         rf"weight \(the Elman cell\); the {cell} cell's W_s "
                                         rf"has {G} gate blocks$"):
        init_params(3, 4, 2, cell=cell, spectral_radius=0.9)


def test_init_params_cell_options():
    with pytest.raises(TypeError, match=r"^the gru cell takes no initialisation options; got "
                                        r"\['forget_bias'\]$"):
        init_params(3, 4, 2, cell="gru", forget_bias=1.0)
    with pytest.raises(TypeError, match=r"bogus"):
        init_params(3, 4, 2, cell="lstm", bogus=1.0)
    with pytest.raises(ValueError, match=r"^chrono \(T_max\) must be at least 3"):
        init_params(3, 4, 2, cell="lstm", chrono=2)
    with pytest.raises(ValueError, match=r"^cell must be one of 'elman', 'lstm', 'gru'; "
                                         r"got 'rnn'$"):
        init_params(3, 4, 2, cell="rnn")


@pytest.mark.parametrize("value", ["x", 1, None])
def test_lstm_from_params_validates_forget_gate(value):
    m = fastrnn.LSTM(3, 4, 2)
    hp = dict(m.hyperparameters(), forget_gate=value)
    with pytest.raises(TypeError, match=r"^forget_gate must be True or False"):
        fastrnn.LSTM.from_params(m.params, **hp)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_from_params_round_trip(cell):
    m = MODELS[cell](3, 4, 2, dtype="float64", seed=2)
    m2 = MODELS[cell].from_params({k: v.copy() for k, v in m.params.items()},
                                  **m.hyperparameters())
    X = np.random.default_rng(0).standard_normal((2, 5, 3))
    np.testing.assert_array_equal(m.forward(X)[0], m2.forward(X)[0])
    bad = dict(m.params, W_s=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"^model.params\['W_s'\] must have shape"):
        MODELS[cell].from_params(bad, **m.hyperparameters())


# =============================================================================================
# Awkward but valid layouts give the clean result; inputs are never modified

def awkward(a, how):
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "reversed":
        return a[::-1].copy()[::-1]
    if how == "readonly":
        c = a.copy()
        c.setflags(write=False)
        return c
    if how == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    return a.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["fortran", "strided", "reversed", "readonly", "bigendian",
                                 "list"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_awkward_inputs_match_clean(cell, how, backend):
    p = problem(cell)
    want = call("loss", cell, p, backend, input_grads=True, return_state=True)
    q = {k: (awkward(v, how) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
         for k, v in p.items()}
    before = {k: np.array(v, copy=True) for k, v in q.items()
              if k not in ("states", "dstates")}
    got = call("loss", cell, q, backend, input_grads=True, return_state=True)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    for k in want[1]:
        np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-12, atol=1e-15, err_msg=k)
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(q[k]), v, err_msg=k)
    m = MODELS[cell](I, H, O, dtype="float64", backend=backend)
    h0 = tuple(q[k] for k in STATES[cell])
    h0 = h0 if cell == "lstm" else h0[0]
    h0c = tuple(p[k] for k in STATES[cell])
    h0c = h0c if cell == "lstm" else h0c[0]
    np.testing.assert_allclose(m.forward(q["X"], h0)[0], m.forward(p["X"], h0c)[0],
                               rtol=1e-12)
    x = [seq[0] for seq in q["X"]] if how == "list" else q["X"][:, 0]
    y, _ = m.step(x, h0)
    np.testing.assert_allclose(y, m.step(p["X"][:, 0], h0c)[0], rtol=1e-12)
