"""Export to ONNX: fastrnn.onnx.export(model, path) writes a model that ONNX Runtime (or any
ONNX runtime) runs with model.forward's outputs, built from ONNX's own recurrent operators
(RNN, LSTM, GRU: one per layer, both directions in one operator) and the output layer
(MatMul, Add, and Softmax for a softmax output). Needs the optional extra:
pip install "fastrnn[onnx]" (onnx, and onnxruntime to run the file); the rest of fastrnn
never imports them.

The graph, batch-first at its boundary like model.forward:

    inputs   X (N, T, I); lengths (N,) int64 if lengths=True; h0 (and c0 for the LSTM) if
             initial_state=True, (N, H) for one layer and one direction, else (L*D, N, H)
    outputs  Y (N, T, O) (probabilities for output="softmax"); h_n (and c_n), shaped as h0

    Transpose X to time-major (T, N, I)    (ONNX Runtime's CPU kernels refuse the operators'
                                           batch-first layout=1, so it is never used)
    layer l: RNN | LSTM | GRU  -> Y_l (T, D, N, H), Y_h_l (D, N, H) [, Y_c_l]
             Transpose (T, N, D, H) and Reshape (T, N, D*H): forward states, then reverse
             ones, as fastrnn concatenates them; the input of layer l+1
    head:    MatMul W_y (D*H, O), Add b_y [, Softmax over O], Transpose to (N, T, O)
    h_n:     the layers' Y_h concatenated (L*D, N, H) in PyTorch's order (Reshape (N, H)
             for one layer and one direction)

fastrnn's parameters (row vectors, gate blocks in PyTorch's order along the last axis) map
onto ONNX's (column vectors, its own gate orders) per (layer, direction):

    W = W_x^T (G*H, I),  R = W_s^T (G*H, H), gate blocks reordered:
        LSTM [i, f, g, o] -> ONNX [i, o, f, c]       GRU [r, z, n] -> ONNX [z, r, h]
    B = [Wb, Rb] (2*G*H,): Wb = b; Rb = b_s (the GRU's recurrent bias, which its reset gate
        multiplies: linear_before_reset=1 is PyTorch's, and fastrnn's, GRU) or zeros (one
        summed bias: Elman, LSTM)
    the directions stacked on a leading num_directions axis (forward, reverse)

What cannot be represented exactly is refused (ValueError), never approximated: the LSTM
without a forget gate (forget_gate=False: ONNX's LSTM always has one; a huge forget bias
gives f = 1 only where a runtime's sigmoid rounds to exactly 1), and any cell or option
without an ONNX counterpart. The
Elman activations are Tanh, Relu, Sigmoid and, for "identity", Affine with alpha=1, beta=0
(x exactly; Affine is one of the operator's optional activations: ONNX Runtime implements
it, another runtime may not).
"""
import json

import numpy as np

from . import _validate, head
from ._version import __version__
from .io import _path, atomic, schema
from .io.torch import _torch_layout

DEFAULT_OPSET = 14
MIN_OPSET = 7                 # RNN, LSTM, GRU and Add with broadcasting as they are now

# The ONNX operator of each cell and its gate order, in the cell spec's gate names.
ONNX_CELLS = {
    "elman": ("RNN", ("a",)),
    "lstm": ("LSTM", ("i", "o", "f", "g")),          # ONNX [i, o, f, c]; c is PyTorch's g
    "gru": ("GRU", ("z", "r", "n")),                 # ONNX [z, r, h]; h is PyTorch's n
}
# The Elman activations as ONNX RNN activations: (name, activation_alpha, activation_beta).
ONNX_ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "identity": ("Affine", 1.0, 0.0),                # alpha * x + beta = x, exactly
}
_PROTOBUF_LIMIT = 2**31 - 1   # bytes in one protobuf message (an ONNX file without external data)


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise ImportError(f"fastrnn.onnx needs the onnx package ({exc}): "
                          'pip install "fastrnn[onnx]" (onnx, and onnxruntime to run the '
                          "exported file)") from None
    return onnx, helper, numpy_helper


def export(model, path, opset=DEFAULT_OPSET, *, lengths=False, initial_state=False,
           dtype=None):
    """Write model (a fastrnn.ElmanRNN, LSTM or GRU, any layers and directions) to path as
    an ONNX file that computes model.forward; returns the onnx.ModelProto written.

    path: str or os.PathLike; written atomically (a temporary file renamed over path), so
    a failed export leaves an existing file untouched.
    opset: the ONNX opset (default 14): 7 up to the newest the installed onnx knows.
    lengths: add the input "lengths" (N,) int64, model.forward's lengths (the operators'
    sequence_lens). initial_state: add the inputs "h0" (and "c0" for the LSTM), shaped as
    model.forward's h0: (N, H) for one layer and one direction, else (L*D, N, H). Without
    them the initial state is zero.
    dtype: None (the model's) or "float32"/"float64", the dtype of the weights and of X in
    the file. ONNX Runtime's CPU kernels for RNN, LSTM and GRU are float32 only (1.32: "does
    not support double yet"): to run a float64 model there, export it with
    dtype="float32" (its weights rounded to float32).

    Outputs: "Y" (N, T, O) and "h_n" (and "c_n"), shaped as h0. They equal
    model.forward(X, h0, lengths, return_state=True)'s Y and final state (to float32
    roundoff; the other runtime computes tanh, sigmoid and the products its own way),
    except at padded steps (t >= lengths[n]): there ONNX's operators output zero states, so
    Y is the output layer applied to zeros, where model.forward carries the last valid
    state. The final states are those of the last valid step (the reverse direction's after
    step 0) in both.

    Refused, never exported approximately: an LSTM with forget_gate=False (ValueError), a
    cell or option ONNX's operators lack (ValueError), anything but a fastrnn model
    (TypeError). The graph and the file are checked with onnx.checker (full_check) before
    anything is written.
    """
    onnx, helper, numpy_helper = _import_onnx()
    arrays, hyper = schema.model_arrays(model)        # TypeError unless a fastrnn model
    path = _path(path)
    opset = _validate.positive_int(opset, "opset")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {newest}] (the newest the installed "
                         f"onnx {onnx.__version__} knows); got {opset}")
    lengths = _validate.boolean(lengths, "lengths")
    initial_state = _validate.boolean(initial_state, "initial_state")
    dt = model.dtype if dtype is None else _validate.float_dtype(dtype)
    spec = model.cell
    op, attributes = _operator(spec, model)
    nbytes = sum(a.size for a in arrays.values()) * dt.itemsize
    if nbytes > _PROTOBUF_LIMIT - 2**20:
        raise ValueError(f"the model's {nbytes} bytes of parameters exceed what one ONNX "
                         f"file (a protobuf message) can hold, 2 GiB")

    elem = helper.np_dtype_to_tensor_dtype(dt)
    L, D, H = model.num_layers, 2 if model.bidirectional else 1, model.hidden_size
    O = model.output_size
    single = L * D == 1                       # states (N, H), not (L*D, N, H)
    state_shape = ["N", H] if single else [L * D, "N", H]
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op_type, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    graph_inputs = [helper.make_tensor_value_info("X", elem, ["N", "T", model.input_size])]
    seq_lens = ""
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", onnx.TensorProto.INT64,
                                                          ["N"]))
        seq_lens = node("Cast", ["lengths"], ["sequence_lens"], to=onnx.TensorProto.INT32)
    state_names = spec.states                 # ("h",) or ("h", "c")
    if initial_state:
        graph_inputs += [helper.make_tensor_value_info(f"{s}0", elem, state_shape)
                         for s in state_names]

    x = node("Transpose", ["X"], ["X_time_major"], perm=[1, 0, 2])     # (T, N, I)
    layer_names = spec.stack_weight_names(L, model.bidirectional)
    finals = {s: [] for s in state_names}
    for layer in range(L):
        W, R, B = _onnx_weights(spec, arrays, layer_names[layer * D:(layer + 1) * D], H, dt)
        p = f"l{layer}_"
        inputs = [x, const(p + "W", W), const(p + "R", R), const(p + "B", B), seq_lens]
        for s in state_names:                 # the layer's (D, N, H) initial states
            if not initial_state:
                inputs.append("")
            elif single:
                inputs.append(node("Reshape", [f"{s}0", const(f"{s}0_shape", np.array(
                    [1, -1, H], np.int64))], [p + f"{s}0"]))
            else:
                inputs.append(node("Gather", [f"{s}0", const(p + f"{s}0_index", np.arange(
                    layer * D, (layer + 1) * D, dtype=np.int64))], [p + f"{s}0"], axis=0))
        while inputs[-1] == "":
            inputs.pop()
        outputs = [p + "Y"] + [p + f"Y_{s}" for s in state_names]
        node(op, inputs, outputs, hidden_size=H,
             direction="bidirectional" if D == 2 else "forward", **attributes(D))
        for s in state_names:
            finals[s].append(p + f"Y_{s}")
        if D == 1:                            # (T, 1, N, H) -> (T, N, H)
            x = node("Reshape", [p + "Y", const(p + "Y_shape", np.array([0, -1, H], np.int64))],
                     [p + "states"])
        else:                                 # (T, 2, N, H) -> (T, N, 2, H) -> (T, N, 2H)
            x = node("Transpose", [p + "Y"], [p + "Y_tnd"], perm=[0, 2, 1, 3])
            x = node("Reshape", [x, const(p + "Y_shape", np.array([0, 0, D * H], np.int64))],
                     [p + "states"])

    W_y, b_y = head.PARAMS
    z = node("MatMul", [x, const(W_y, arrays[W_y].astype(dt))], ["logits_mm"])
    z = node("Add", [z, const(b_y, arrays[b_y].astype(dt))], ["logits"])     # (T, N, O)
    if model.output == "softmax":
        z = node("Softmax", [z], ["probabilities"], axis=2)
    node("Transpose", [z], ["Y"], perm=[1, 0, 2])                          # (N, T, O)
    graph_outputs = [helper.make_tensor_value_info("Y", elem, ["N", "T", O])]
    for s in state_names:
        out = f"{s}_n"
        if single:
            node("Reshape", [finals[s][0], const(f"{s}_n_shape", np.array([-1, H], np.int64))],
                 [out])
        elif L == 1:
            node("Identity", finals[s], [out])
        else:
            node("Concat", finals[s], [out], axis=0)
        graph_outputs.append(helper.make_tensor_value_info(out, elem, state_shape))

    graph = helper.make_graph(nodes, f"fastrnn_{spec.name}", graph_inputs, graph_outputs,
                              initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="fastrnn", producer_version=__version__,
        ir_version=max(4, helper.find_min_ir_version_for(opsets)),
        doc_string=f"{model!r} exported by fastrnn.onnx.export: model.forward's Y and final "
                   f"states")
    helper.set_model_props(proto, {"fastrnn": json.dumps(hyper, sort_keys=True)})
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic.write(path, lambda f: f.write(data), what="the ONNX model")
    return proto


def _operator(spec, model):
    """(ONNX operator name, attributes(D) -> its attributes for D directions but
    hidden_size and direction), or ValueError if the model's cell or options have none."""
    if spec.name not in ONNX_CELLS:
        raise ValueError(f"the {spec.name} cell has no ONNX operator to export to")
    op = ONNX_CELLS[spec.name][0]
    if spec.name == "elman":
        activation = model.activation
        if activation not in ONNX_ACTIVATIONS:
            raise ValueError(f"ONNX's RNN operator has no activation {activation!r} (fastrnn "
                             f"exports {', '.join(map(repr, ONNX_ACTIVATIONS))})")
        name, alpha, beta = ONNX_ACTIVATIONS[activation]

        def attributes(D):
            attrs = {"activations": [name] * D}
            if alpha is not None:
                attrs.update(activation_alpha=[alpha] * D, activation_beta=[beta] * D)
            return attrs
        return op, attributes
    if spec.name == "lstm":
        if not model.forget_gate:
            raise ValueError("an LSTM without a forget gate (forget_gate=False, the 1997 cell: "
                             "c_t = c_{t-1} + i * g) cannot be exported: ONNX's LSTM always "
                             "multiplies c_{t-1} by a sigmoid forget gate, which no finite "
                             "weights make exactly 1 (a huge bias only where a runtime's "
                             "sigmoid rounds to 1)")
        return op, lambda D: {"activations": ["Sigmoid", "Tanh", "Tanh"] * D,
                              "input_forget": 0}
    return op, lambda D: {"activations": ["Sigmoid", "Tanh"] * D, "linear_before_reset": 1}


def _onnx_weights(spec, arrays, names, H, dt):
    """ONNX's W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) of one layer, in dtype dt, from the
    fastrnn parameters of its D directions (names: one tuple per direction, in the order of
    the spec's weights)."""
    ih, hh, biases = _torch_layout(spec)     # the input, recurrent weight and bias names
    gates = [spec.gates.index(g) for g in ONNX_CELLS[spec.name][1]]
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in gates])   # columns

    W, R, B = [], [], []
    for direction in names:
        p = dict(zip(spec.weight_names, (arrays[n] for n in direction)))
        W.append(p[ih][:, order].T)
        R.append(p[hh][:, order].T)
        Wb = p[biases[0]][order]
        # torch_bias "separate": Rb is the recurrent bias (the GRU's b_s); "sum": one bias
        Rb = p[biases[1]][order] if spec.torch_bias == "separate" else np.zeros_like(Wb)
        B.append(np.concatenate([Wb, Rb]))
    return tuple(np.ascontiguousarray(np.stack(a), dtype=dt) for a in (W, R, B))
