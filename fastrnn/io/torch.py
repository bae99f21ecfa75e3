"""Conversion to and from PyTorch state dicts (torch itself is not needed), for any cell.

A cell's spec says which torch.nn module holds the same cell (torch_mode: "RNN", "LSTM",
"GRU") and how its biases map (torch_bias). The spec stacks gate blocks along the last axis
in PyTorch's gate order, so a weight is the transpose of torch's and a bias is torch's as it
is. With the cell's input weight (rows I; W_x), recurrent weight (rows H; W_s) and biases
in the spec's order, for layer k and direction d (suffix "_l{k}", plus "_reverse" for the
reverse direction; fastrnn's names are the spec's stack_weight_names, "W_x" for layer 0
forwards, "W_x_l1", "W_x_l0_reverse", ...):

    weight_ih_l{k}[_reverse] = W_x.T   (G*H, I) for layer 0, (G*H, D*H) above it
    weight_hh_l{k}[_reverse] = W_s.T   (G*H, H)
    torch_bias "sum" (one bias b):           bias_ih = b, bias_hh = 0 on export;
                                             b = bias_ih + bias_hh on import
    torch_bias "separate" (b, b_s):          bias_ih = b, bias_hh = b_s
    linear.weight = W_y.T  (O, D*H)          linear.bias = b_y  (the shared output layer)

The torch module's dropout is not in its state dict: build it with dropout=model.dropout
(from_torch_state_dict takes it as an argument). An LSTM with proj_size > 0 (weight_hr keys)
has no fastrnn counterpart.
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


def _suffix(layer, reverse):
    """torch's suffix of a (layer, direction)'s parameters: "_l0", "_l1_reverse"."""
    return f"_l{layer}" + ("_reverse" if reverse else "")


def to_torch_state_dict(model, rnn_prefix="rnn.", linear_prefix="linear."):
    """The model's parameters as a state dict for the torch.nn module of its cell
    (model.cell.torch_mode: nn.RNN for the Elman network) + torch.nn.Linear, as new
    C-contiguous NumPy arrays (torch is not needed), in torch's key order; for the
    one-layer Elman network:

        {rnn_prefix + "weight_ih_l0": W_x.T, rnn_prefix + "weight_hh_l0": W_s.T,
         rnn_prefix + "bias_ih_l0": b, rnn_prefix + "bias_hh_l0": zeros(H),
         linear_prefix + "weight": W_y.T, linear_prefix + "bias": b_y}

    and for num_layers=L, bidirectional: the same four keys for every layer k < L and
    direction, suffixed "_l{k}" and "_l{k}_reverse" (see fastrnn/io/torch.py for the other
    cells). For a module with attributes rnn = nn.RNN(I, H, nonlinearity=model.activation,
    num_layers=model.num_layers, bidirectional=model.bidirectional, batch_first=True) and
    linear = nn.Linear(D*H, O) (D = 2 if bidirectional; in the model's dtype), load it with
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}). The torch
    module computes the outputs before any softmax: for output="softmax" apply
    torch.softmax(..., dim=-1) to get model.forward's probabilities. Only activations
    "tanh" and "relu" exist in nn.RNN. The model's dropout is not part of the state dict.
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
    a, hyper = schema.model_arrays(model)
    L, D = hyper["num_layers"], 1 + hyper["bidirectional"]
    sd = {}
    for k, names in enumerate(spec.stack_weight_names(L, D == 2)):
        name = dict(zip(spec.weight_names, names))
        sfx = _suffix(*divmod(k, D))
        sd[rnn_prefix + "weight_ih" + sfx] = _copy(a[name[ih]].T)
        sd[rnn_prefix + "weight_hh" + sfx] = _copy(a[name[hh]].T)
        sd[rnn_prefix + "bias_ih" + sfx] = _copy(a[name[biases[0]]])
        sd[rnn_prefix + "bias_hh" + sfx] = (np.zeros_like(a[name[biases[0]]])
                                            if spec.torch_bias == "sum"
                                            else _copy(a[name[biases[1]]]))
    W_y, b_y = head.PARAMS
    sd[linear_prefix + "weight"] = _copy(a[W_y].T)
    sd[linear_prefix + "bias"] = _copy(a[b_y])
    return sd


def from_torch_state_dict(state, activation="tanh", output="linear", dtype=None,
                          rnn_prefix="rnn.", linear_prefix="linear.", backend="cython",
                          cell="elman", num_layers=None, bidirectional=None, dropout=0.0):
    """A model holding the weights of a torch.nn.RNN (cell="elman"; the module of the
    cell's spec for another cell: nn.LSTM, nn.GRU), of any number of layers, uni- or
    bidirectional, followed by a torch.nn.Linear, from their state dict (torch tensors or
    NumPy arrays). The model's arrays are new (they share no memory with the state's).

    state: a mapping with, for every layer k < L and direction (suffix "_l{k}", and
    "_l{k}_reverse" for a bidirectional module), rnn_prefix + "weight_ih_l{k}" (G*H, I) for
    layer 0, (G*H, D*H) above it, "weight_hh_l{k}" (G*H, H), "bias_ih_l{k}" (G*H,),
    "bias_hh_l{k}" (G*H,), and linear_prefix + "weight" (O, D*H), "bias" (O,), G the cell's
    number of gates (1 for nn.RNN), D = 2 if bidirectional. The biases may be absent, all of
    them together (bias=False modules: zeros), and so may the linear bias. Other keys,
    outside those names, are ignored. For the Elman cell b = bias_ih + bias_hh.
    activation: the RNN's nonlinearity, "tanh" or "relu" (only for the Elman cell).
    output: "linear", or "softmax" if the torch outputs are logits fed to a softmax.
    dtype: "float32" or "float64"; None takes the state's dtype (which must then be float32
    or float64, the same for every array).
    cell: "elman", or the name of another cell with a model class (fastrnn.model.MODELS).
    num_layers, bidirectional: None reads them from the state's keys; given, they must agree
    with the keys. dropout: the model's (between layers, as the module's; a state dict does
    not hold it). An nn.LSTM with proj_size > 0 (weight_hr keys) is refused.
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
    if num_layers is not None:
        num_layers = _validate.positive_int(num_layers, "num_layers")
    if bidirectional is not None:
        bidirectional = _validate.boolean(bidirectional, "bidirectional")
    ih, hh, biases = _torch_layout(spec)
    G = spec.n_gates

    L, D, keys = _stack_keys(state, rnn_prefix, mode, num_layers, bidirectional)
    w_y, b_y = linear_prefix + "weight", linear_prefix + "bias"
    has_bias = any(keys[k]["bias_ih"] in state or keys[k]["bias_hh"] in state
                   for k in range(L * D))
    needed = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if has_bias else ())
    missing = [keys[k][n] for k in range(L * D) for n in needed if keys[k][n] not in state]
    if w_y not in state:
        missing.append(w_y)
    if missing:
        present = sorted(map(str, state))
        bias = (" (the biases may only be absent all together, as in a bias=False module)"
                if has_bias and any("bias_" in k for k in missing) else "")
        raise ValueError(f"state is missing {missing} for a torch.nn.{mode} with "
                         f"num_layers={L}, bidirectional={D == 2} (with rnn_prefix="
                         f"{rnn_prefix!r}, linear_prefix={linear_prefix!r}){bias}; its keys "
                         f"are {present}")

    names = [keys[k][n] for k in range(L * D) for n in needed] + [w_y]
    arrays = {k: _torch_array(state[k], k) for k in names + [b_y] if k in state}
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
    w_ih = keys[0]["weight_ih"]
    W_ih = arrays[w_ih]
    if W_ih.ndim != 2:
        raise ValueError(f"state[{w_ih!r}] must be 2-D ({gh}, I); got shape {W_ih.shape}")
    if W_ih.shape[0] % G:
        raise ValueError(f"state[{w_ih!r}] must have shape ({gh}, I), {G} gate blocks of "
                         f"torch.nn.{mode}; got {W_ih.shape}")
    H, I = W_ih.shape[0] // G, W_ih.shape[1]
    W_lin = arrays[w_y]
    if W_lin.ndim != 2 or W_lin.shape[1] != D * H:
        what = "(O, H)" if D == 1 else "(O, 2H)"
        raise ValueError(f"state[{w_y!r}] must have shape {what} with H = {H} (from "
                         f"{w_ih!r} {W_ih.shape}); got {W_lin.shape}")
    O = W_lin.shape[0]
    expected = {b_y: (O,)}
    for k in range(L * D):
        expected.update({keys[k]["weight_ih"]: (G * H, I if k < D else D * H),
                         keys[k]["weight_hh"]: (G * H, H),
                         keys[k]["bias_ih"]: (G * H,), keys[k]["bias_hh"]: (G * H,)})
    for k, shape in expected.items():
        if k in arrays and arrays[k].shape != shape:
            raise ValueError(f"state[{k!r}] must have shape {shape} to match {w_ih!r} "
                             f"{W_ih.shape} and {w_y!r} {W_lin.shape}; got {arrays[k].shape}")
    if min(H, I, O) < 1:
        raise ValueError(f"the state's sizes must be >= 1; got I={I}, H={H}, O={O}")

    params = {}
    zeros = np.zeros(G * H, dtype)
    for k, stack_names in enumerate(spec.stack_weight_names(L, D == 2)):
        name, key = dict(zip(spec.weight_names, stack_names)), keys[k]
        params[name[ih]] = _copy(arrays[key["weight_ih"]].T, dtype)
        params[name[hh]] = _copy(arrays[key["weight_hh"]].T, dtype)
        b_ih, b_hh = (arrays[key["bias_ih"]], arrays[key["bias_hh"]]) if has_bias \
            else (None, None)
        if spec.torch_bias == "sum":
            params[name[biases[0]]] = (zeros.copy() if b_ih is None else
                                       _copy(b_ih.astype(np.float64)
                                             + b_hh.astype(np.float64), dtype))
        else:
            params[name[biases[0]]] = zeros.copy() if b_ih is None else _copy(b_ih, dtype)
            params[name[biases[1]]] = zeros.copy() if b_hh is None else _copy(b_hh, dtype)
    W_y_name, b_y_name = head.PARAMS
    params[W_y_name] = _copy(W_lin.T, dtype)
    params[b_y_name] = _copy(arrays[b_y], dtype) if b_y in arrays else np.zeros(O, dtype)
    for k, a in params.items():
        if not _validate._all_finite(a):
            raise ValueError(f"the state's weights must be finite; {k} (from the state dict, "
                             f"in {dtype}) contains NaN or inf")
    return cls.from_params(params, input_size=I, hidden_size=H, output_size=O, **options,
                           output=output, dtype=dtype, seed=None, backend=backend,
                           num_layers=L, bidirectional=D == 2, dropout=dropout)


def _stack_keys(state, rnn_prefix, mode, num_layers, bidirectional):
    """(L, D, keys): the number of layers and directions of the torch module whose
    parameters state holds (read from its keys; checked against num_layers and
    bidirectional where given) and, for each (layer, direction) k = layer*D + d, its keys
    {"weight_ih": rnn_prefix + "weight_ih_l0", ...}. A ValueError for weight_hr keys
    (proj_size), and for keys of layers that are not 0..L-1."""
    found = {}                                   # key: (kind, layer, reverse)
    for key in state:
        if isinstance(key, str) and key.startswith(rnn_prefix) and \
                (m := _RNN_KEY.fullmatch(key[len(rnn_prefix):])):
            found[key] = (f"{m.group(1)}_{m.group(2)}", int(m.group(3)), bool(m.group(4)))
    projections = sorted(k for k, (kind, _, _) in found.items() if kind.endswith("_hr"))
    if projections:
        raise ValueError(f"a torch.nn.{mode} with proj_size > 0 (state has {projections}) "
                         f"projects its hidden state to a smaller size; fastrnn's cells have "
                         f"no projection, so it cannot be converted")
    layers = {layer for _, layer, _ in found.values()}
    L = max(layers) + 1 if layers else 1
    if len(layers) != L:
        absent = [k for k in range(min(L, 1000)) if k not in layers][:10]
        raise ValueError(f"the state's torch.nn.{mode} keys (rnn_prefix={rnn_prefix!r}) are "
                         f"of layers {sorted(layers)[:20]}: layers {absent} are missing")
    D = 2 if any(reverse for _, _, reverse in found.values()) else 1
    if num_layers is not None and num_layers != L:
        raise ValueError(f"num_layers={num_layers}, but the state holds a torch.nn.{mode} "
                         f"of {L} layer(s) (keys up to {rnn_prefix}weight_ih_l{L - 1})")
    if bidirectional is not None and bidirectional != (D == 2):
        raise ValueError(f"bidirectional={bidirectional}, but the state holds a "
                         f"{'bi' if D == 2 else 'uni'}directional torch.nn.{mode} ("
                         f"{'with' if D == 2 else 'no'} '_reverse' keys)")
    keys = [{kind: f"{rnn_prefix}{kind}{_suffix(layer, d)}"
             for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            for layer in range(L) for d in range(D)]
    known = {v for k in keys for v in k.values()}
    unknown = sorted(k for k in found if k not in known)
    if unknown:                                  # e.g. "weight_ih_l01"
        raise ValueError(f"state has keys {unknown} that are not those of a torch.nn.{mode} "
                         f"with num_layers={L}, bidirectional={D == 2}")
    return L, D, keys


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
