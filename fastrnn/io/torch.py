"""Conversion to and from PyTorch state dicts (torch itself is not needed), for any cell.

A cell's spec says which torch.nn module holds the same cell (torch_mode: "RNN", "LSTM",
"GRU") and how its biases map (torch_bias). The spec stacks gate blocks along the last axis
in PyTorch's gate order, so a weight is the transpose of torch's and a bias is torch's as it
is. With the cell's input weight (rows I; W_x), recurrent weight (rows H; W_s) and biases
in the spec's order:

    weight_ih_l0 = W_x.T   (G*H, I)          weight_hh_l0 = W_s.T   (G*H, H)
    torch_bias "sum" (one bias b):           bias_ih_l0 = b, bias_hh_l0 = 0 on export;
                                             b = bias_ih_l0 + bias_hh_l0 on import
    torch_bias "separate" (b, b_s):          bias_ih_l0 = b, bias_hh_l0 = b_s
    linear.weight = W_y.T  (O, H)            linear.bias = b_y  (the shared output layer)

Only a 1-layer, unidirectional module converts for now.
"""
import re
from collections.abc import Mapping

import numpy as np

from .. import _validate, head
from ..model import MODELS
from . import schema

# What each torch.nn module can express of a cell's options: {option: values it can take}.
# A cell option its module does not list makes the model unconvertible. (nn.RNN's
# nonlinearity is the Elman activation; nn.LSTM always has a forget gate.)
TORCH_OPTIONS = {
    "RNN": {"activation": ("tanh", "relu")},
    "LSTM": {"forget_gate": (True,)},
    "GRU": {},
}
_OPTION_ARGUMENTS = {"activation": "tanh"}      # from_torch_state_dict's, with their defaults
_RNN_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")


def to_torch_state_dict(model, rnn_prefix="rnn.", linear_prefix="linear."):
    """The model's parameters as a state dict for the torch.nn module of its cell
    (model.cell.torch_mode: nn.RNN for the Elman network) + torch.nn.Linear, as new
    C-contiguous NumPy arrays (torch is not needed); for the Elman network:

        {rnn_prefix + "weight_ih_l0": W_x.T, rnn_prefix + "weight_hh_l0": W_s.T,
         rnn_prefix + "bias_ih_l0": b, rnn_prefix + "bias_hh_l0": zeros(H),
         linear_prefix + "weight": W_y.T, linear_prefix + "bias": b_y}

    (see fastrnn/io/torch.py for the other cells). For a module with attributes
    rnn = nn.RNN(I, H, nonlinearity=model.activation, batch_first=True) and
    linear = nn.Linear(H, O) (in the model's dtype), load it with
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}). The torch
    module computes the outputs before any softmax: for output="softmax" apply
    torch.softmax(..., dim=-1) to get model.forward's probabilities. Only activations
    "tanh" and "relu" exist in nn.RNN.
    """
    schema.model_class(model)
    _prefix(rnn_prefix, "rnn_prefix")
    _prefix(linear_prefix, "linear_prefix")
    spec = model.cell
    mode = spec.torch_mode
    for name in spec.options:
        allowed, value = TORCH_OPTIONS.get(mode, {}).get(name), getattr(model, name)
        if allowed is None:
            raise ValueError(f"torch.nn.{mode} has no {name} option; a {spec.name} cell "
                             f"with one cannot be converted")
        if value not in allowed:
            raise ValueError(f"torch.nn.{mode} supports {name} "
                             f"{' or '.join(map(repr, allowed))} only; this model's {name} "
                             f"is {value!r}")
    ih, hh, biases = _torch_layout(spec)
    a, _ = schema.model_arrays(model)
    W_y, b_y = head.PARAMS
    sd = {rnn_prefix + "weight_ih_l0": _copy(a[ih].T),
          rnn_prefix + "weight_hh_l0": _copy(a[hh].T)}
    if spec.torch_bias == "sum":
        sd[rnn_prefix + "bias_ih_l0"] = _copy(a[biases[0]])
        sd[rnn_prefix + "bias_hh_l0"] = np.zeros_like(a[biases[0]])
    else:
        sd[rnn_prefix + "bias_ih_l0"] = _copy(a[biases[0]])
        sd[rnn_prefix + "bias_hh_l0"] = _copy(a[biases[1]])
    sd[linear_prefix + "weight"] = _copy(a[W_y].T)
    sd[linear_prefix + "bias"] = _copy(a[b_y])
    return sd


def from_torch_state_dict(state, activation="tanh", output="linear", dtype=None,
                          rnn_prefix="rnn.", linear_prefix="linear.", backend="cython",
                          cell="elman"):
    """A model holding the weights of a torch.nn.RNN (cell="elman"; the module of the
    cell's spec for another cell: nn.LSTM, nn.GRU), 1 layer, unidirectional, followed by a
    torch.nn.Linear, from their state dict (torch tensors or NumPy arrays). The model's
    arrays are new (they share no memory with the state's).

    state: a mapping with rnn_prefix + "weight_ih_l0" (G*H, I), "weight_hh_l0" (G*H, H),
    "bias_ih_l0" (G*H,), "bias_hh_l0" (G*H,) and linear_prefix + "weight" (O, H), "bias"
    (O,), G the cell's number of gates (1 for nn.RNN). The biases may be absent together
    (bias=False modules: zeros), and so may the linear bias. Other keys, outside those
    names, are ignored. For the Elman cell b = bias_ih + bias_hh.
    activation: the RNN's nonlinearity, "tanh" or "relu" (only for the Elman cell).
    output: "linear", or "softmax" if the torch outputs are logits fed to a softmax.
    dtype: "float32" or "float64"; None takes the state's dtype (which must then be float32
    or float64, the same for every array).
    cell: "elman", or the name of another cell with a model class (fastrnn.model.MODELS).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping (a state dict) of arrays or tensors; got "
                        f"{type(state).__name__}")
    _prefix(rnn_prefix, "rnn_prefix")
    _prefix(linear_prefix, "linear_prefix")
    if not isinstance(cell, str) or cell not in MODELS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, MODELS))}; got {cell!r}")
    cls = MODELS[cell]
    spec = cls.cell
    mode = spec.torch_mode
    options = _options(spec, {"activation": activation})
    _validate.choice(output, "output", _validate.OUTPUTS)
    _validate.choice(backend, "backend", _validate.BACKENDS)
    if dtype is not None:
        dtype = _validate.float_dtype(dtype)
    ih, hh, biases = _torch_layout(spec)
    G = spec.n_gates

    unsupported = sorted(
        k for k in state if isinstance(k, str) and k.startswith(rnn_prefix)
        and (m := _RNN_KEY.fullmatch(k[len(rnn_prefix):]))
        and (m.group(3) != "0" or m.group(4) or m.group(2) == "hr"))
    if unsupported:
        raise ValueError(f"only a 1-layer, unidirectional torch.nn.{mode} (num_layers=1, "
                         f"bidirectional=False) is supported; state has {unsupported}")

    w_ih, w_hh = rnn_prefix + "weight_ih_l0", rnn_prefix + "weight_hh_l0"
    b_ih, b_hh = rnn_prefix + "bias_ih_l0", rnn_prefix + "bias_hh_l0"
    w_y, b_y = linear_prefix + "weight", linear_prefix + "bias"
    missing = [k for k in (w_ih, w_hh, w_y) if k not in state]
    if (b_ih in state) != (b_hh in state):
        missing.append(b_hh if b_ih in state else b_ih)
    if missing:
        present = sorted(map(str, state))
        raise ValueError(f"state is missing {missing} (with rnn_prefix={rnn_prefix!r}, "
                         f"linear_prefix={linear_prefix!r}); its keys are {present}")

    arrays = {k: _torch_array(state[k], k)
              for k in (w_ih, w_hh, b_ih, b_hh, w_y, b_y) if k in state}
    if dtype is None:
        dts = {a.dtype.newbyteorder("=") for a in arrays.values()}
        if len(dts) != 1 or next(iter(dts)) not in _validate.FLOAT_DTYPES:
            raise TypeError(f"the state's arrays have dtypes "
                            f"{ {k: str(a.dtype) for k, a in arrays.items()} }; with "
                            f"dtype=None they must all be float32 or all float64 (pass "
                            f"dtype='float32' or 'float64' to convert)")
        dtype = next(iter(dts))
    for k, a in arrays.items():
        if a.dtype.kind != "f":
            raise TypeError(f"state[{k!r}] must be a float array; got dtype {a.dtype}")

    gh = "H" if G == 1 else f"{G}H"
    W_ih = arrays[w_ih]
    if W_ih.ndim != 2:
        raise ValueError(f"state[{w_ih!r}] must be 2-D ({gh}, I); got shape {W_ih.shape}")
    if W_ih.shape[0] % G:
        raise ValueError(f"state[{w_ih!r}] must have shape ({gh}, I), {G} gate blocks of "
                         f"torch.nn.{mode}; got {W_ih.shape}")
    H, I = W_ih.shape[0] // G, W_ih.shape[1]
    W_lin = arrays[w_y]
    if W_lin.ndim != 2 or W_lin.shape[1] != H:
        raise ValueError(f"state[{w_y!r}] must have shape (O, H) with H = {H} (from "
                         f"{w_ih!r} {W_ih.shape}); got {W_lin.shape}")
    O = W_lin.shape[0]
    expected = {w_hh: (G * H, H), b_ih: (G * H,), b_hh: (G * H,), b_y: (O,)}
    for k, shape in expected.items():
        if k in arrays and arrays[k].shape != shape:
            raise ValueError(f"state[{k!r}] must have shape {shape} to match {w_ih!r} "
                             f"{W_ih.shape} and {w_y!r} {W_lin.shape}; got {arrays[k].shape}")
    if min(H, I, O) < 1:
        raise ValueError(f"the state's sizes must be >= 1; got I={I}, H={H}, O={O}")

    params = {ih: _copy(W_ih.T, dtype), hh: _copy(arrays[w_hh].T, dtype)}
    zeros = np.zeros(G * H, dtype)
    if spec.torch_bias == "sum":
        params[biases[0]] = (_copy(arrays[b_ih].astype(np.float64)
                                   + arrays[b_hh].astype(np.float64), dtype)
                             if b_ih in arrays else zeros)
    else:
        params[biases[0]] = _copy(arrays[b_ih], dtype) if b_ih in arrays else zeros
        params[biases[1]] = _copy(arrays[b_hh], dtype) if b_hh in arrays else zeros.copy()
    W_y_name, b_y_name = head.PARAMS
    params[W_y_name] = _copy(W_lin.T, dtype)
    params[b_y_name] = _copy(arrays[b_y], dtype) if b_y in arrays else np.zeros(O, dtype)
    for k, a in params.items():
        if not _validate._all_finite(a):
            raise ValueError(f"the state's weights must be finite; {k} (from the state dict, "
                             f"in {dtype}) contains NaN or inf")
    return cls.from_params(params, input_size=I, hidden_size=H, output_size=O, **options,
                           output=output, dtype=dtype, seed=None, backend=backend)


def _options(spec, given):
    """The cell's options for a model converted from torch: those given (the arguments of
    from_torch_state_dict), checked against what the torch module can express, and the
    ones it can express one way only."""
    mode = spec.torch_mode
    expressible = TORCH_OPTIONS.get(mode, {})
    for name, value in given.items():
        if name in spec.options:
            allowed = expressible.get(name, ())
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name} must be {' or '.join(map(repr, allowed))} "
                                 f"(torch.nn.{mode}'s nonlinearities); got {value!r}")
        elif value != _OPTION_ARGUMENTS[name]:
            raise ValueError(f"{name} is an option of another cell; the {spec.name} cell "
                             f"(torch.nn.{mode}) has none, got {name}={value!r}")
    options = {}
    for name in spec.options:
        if name in given:
            options[name] = given[name]
        elif len(expressible.get(name, ())) == 1:
            options[name] = expressible[name][0]
        else:
            raise ValueError(f"torch.nn.{mode} has no {name} option: a {spec.name} model "
                             f"cannot be made from its state dict")
    return options


def _torch_layout(spec):
    """(input weight, recurrent weight, biases in torch's order) of a cell's parameter
    names, as the torch module of its spec keys them."""
    ih = [w.name for w in spec.weights if w.rows == "I"]
    hh = [w.name for w in spec.weights if w.rows == "H"]
    biases = [w.name for w in spec.weights if w.rows is None]
    n_biases = {"sum": 1, "separate": 2}.get(spec.torch_bias)
    if (spec.torch_mode not in TORCH_OPTIONS or len(ih) != 1 or len(hh) != 1
            or len(biases) != n_biases or any(w.blocks != spec.n_gates for w in spec.weights)):
        raise ValueError(f"the {spec.name} cell's parameters have no torch.nn."
                         f"{spec.torch_mode} layout")
    return ih[0], hh[0], biases


def _copy(a, dtype=None):
    """A new C-contiguous array (even where a is one already: torch shares its memory)."""
    return np.array(a, dtype=dtype, order="C", copy=True)


def _prefix(value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {type(value).__name__}")


def _torch_array(value, key):
    """A NumPy view/copy of a tensor or array-like state entry."""
    try:
        if hasattr(value, "detach"):
            return np.asarray(value.detach().cpu().numpy())
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"state[{key!r}] cannot be converted to a NumPy array ({exc}); "
                        f"convert it to float32 or float64 first (e.g. tensor.float())") \
            from None
