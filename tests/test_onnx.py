"""ONNX export (fastrnn/onnx.py): ONNX Runtime, an independent implementation of ONNX's RNN,
LSTM and GRU operators, runs the exported file with model.forward's outputs and final
states, for every cell x {1, 2 layers} x {one, two directions} x {linear, softmax} x
{with, without lengths} x {zero, given initial states}; the files pass onnx.checker; what
ONNX cannot represent exactly is refused.

float64: ONNX Runtime's CPU kernels for these operators are float32 only (1.32 says "does
not support double yet"). The float64 cases try it first and hold it to 1e-10 if it runs;
otherwise they run onnx's reference evaluator (onnx.reference, NumPy), which implements the
operators without sequence_lens (it ignores them) and only the Tanh and Affine activations
of RNN: with lengths it is fed one sequence at a time, cut to its length. A float64 model
exported with dtype="float32" runs in ONNX Runtime with lengths.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import fastrnn  # noqa: E402
import fastrnn.onnx as fonnx  # noqa: E402
from fastrnn.model import MODELS  # noqa: E402

N, T, I, H, O = 5, 7, 3, 4, 3
LENGTHS = np.array([7, 1, 4, 7, 2])                 # a full one, a single step, ragged
TOL = {"float32": 1e-5, "float64": 1e-10}
CELLS = ("elman", "lstm", "gru")


def make_model(cell, num_layers=1, bidirectional=False, output="linear", dtype="float32",
               seed=0, **options):
    return MODELS[cell](I, H, O, output=output, dtype=dtype, seed=seed,
                        num_layers=num_layers, bidirectional=bidirectional, **options)


def state_shape(model, n=N):
    D = 2 if model.bidirectional else 1
    return (n, H) if model.num_layers * D == 1 else (model.num_layers * D, n, H)


def inputs(model, use_lengths, initial_state, seed=1, n=N, t=T, lengths=LENGTHS):
    """(feeds for the ONNX session, model.forward's h0 and lengths)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, t, I)).astype(model.dtype)
    feeds, h0 = {"X": X}, None
    if use_lengths:
        feeds["lengths"] = lengths
    if initial_state:
        states = [(0.5 * rng.standard_normal(state_shape(model, n))).astype(model.dtype)
                  for _ in model.cell.states]
        feeds.update({f"{s}0": a for s, a in zip(model.cell.states, states)})
        h0 = states[0] if len(states) == 1 else tuple(states)
    return feeds, h0, (lengths if use_lengths else None)


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 4          # the float64 probe's refusal is not news
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def compare(model, got, feeds, h0, lengths, tol):
    """The largest difference between the ONNX outputs got (Y, h_n[, c_n]) and
    model.forward: Y at valid steps only (padded ones: see test_padded_steps), the final
    states fully. Asserts shapes, dtypes and the tolerance."""
    Y, _, state = model.forward(feeds["X"], h0=h0, lengths=lengths, return_state=True)
    states = state if isinstance(state, tuple) else (state,)
    assert len(got) == 1 + len(states)
    n, t = feeds["X"].shape[:2]
    valid = np.ones((n, t), bool) if lengths is None else np.arange(t) < lengths[:, None]
    worst = 0.0
    for name, a, b in [("Y", got[0][valid], Y[valid])] + [
            (f"{s}_n", g, e) for s, g, e in zip(model.cell.states, got[1:], states)]:
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype)
        diff = float(np.max(np.abs(a - b)))
        assert diff <= tol, f"{name}: ONNX differs from model.forward by {diff} > {tol}"
        worst = max(worst, diff)
    return worst


def export(model, path, **kwargs):
    proto = fonnx.export(model, path, **kwargs)
    onnx.checker.check_model(os.fspath(path), full_check=True)
    return proto


# ---------------------------------------------------------------------------------------------
# Agreement with model.forward

@pytest.mark.parametrize("initial_state", [False, True], ids=["zero_state", "h0"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", CELLS)
def test_onnxruntime_matches_forward_float32(tmp_path, cell, num_layers, bidirectional,
                                             output, use_lengths, initial_state):
    model = make_model(cell, num_layers, bidirectional, output)
    path = tmp_path / "model.onnx"
    export(model, path, lengths=use_lengths, initial_state=initial_state)
    feeds, h0, lengths = inputs(model, use_lengths, initial_state)
    compare(model, session(path).run(None, feeds), feeds, h0, lengths, TOL["float32"])


_ORT_NO_DOUBLE = ("does not support double", "Could not find an implementation")


@pytest.mark.parametrize("initial_state", [False, True], ids=["zero_state", "h0"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_forward_float64(tmp_path, cell, num_layers, bidirectional, output,
                                 use_lengths, initial_state):
    """ONNX Runtime at 1e-10 if it runs double; else onnx's reference evaluator (see the
    module docstring)."""
    model = make_model(cell, num_layers, bidirectional, output, dtype="float64")
    path = tmp_path / "model.onnx"
    proto = export(model, path, lengths=use_lengths, initial_state=initial_state)
    feeds, h0, lengths = inputs(model, use_lengths, initial_state)
    try:
        got = session(path).run(None, feeds)
    except Exception as exc:                # onnxruntime's own exception classes
        if not any(s in str(exc) for s in _ORT_NO_DOUBLE):
            raise
        from onnx.reference import ReferenceEvaluator
        ref = ReferenceEvaluator(proto)
        if use_lengths:
            # the reference evaluator ignores sequence_lens: feed the file each sequence
            # alone, cut to its length (with sequence_lens given all the same), so that
            # there is nothing for it to ignore
            for n, length in enumerate(lengths):
                one = {k: (v[n:n + 1, :length] if k == "X" else v[n:n + 1] if k == "lengths"
                           else v[n:n + 1] if v.ndim == 2 else v[:, n:n + 1])
                       for k, v in feeds.items()}
                h0_n = None if h0 is None else (
                    tuple(one[f"{s}0"] for s in model.cell.states) if isinstance(h0, tuple)
                    else one["h0"])
                compare(model, ref.run(None, one), one, h0_n, one["lengths"], TOL["float64"])
            return
        got = ref.run(None, feeds)
    compare(model, got, feeds, h0, lengths, TOL["float64"])


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "identity"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_elman_activations(tmp_path, activation, num_layers, bidirectional):
    model = make_model("elman", num_layers, bidirectional, activation=activation)
    path = tmp_path / "model.onnx"
    proto = export(model, path, lengths=True, initial_state=True)
    rnn = [n for n in proto.graph.node if n.op_type == "RNN"]
    expected = fonnx.ONNX_ACTIVATIONS[activation][0]
    assert all(list(n.attribute[[a.name for a in n.attribute].index("activations")].strings)
               == [expected.encode()] * (2 if bidirectional else 1) for n in rnn)
    feeds, h0, lengths = inputs(model, True, True)
    compare(model, session(path).run(None, feeds), feeds, h0, lengths, TOL["float32"])


@pytest.mark.parametrize("cell", CELLS)
def test_float64_model_exported_as_float32(tmp_path, cell):
    """dtype="float32": a float64 model in ONNX Runtime, with lengths; the weights rounded
    to float32, float32 arithmetic."""
    model = make_model(cell, 2, True, "softmax", dtype="float64")
    path = tmp_path / "model.onnx"
    export(model, path, lengths=True, initial_state=True, dtype="float32")
    feeds, h0, lengths = inputs(model, True, True)
    got = session(path).run(None, {k: v.astype(np.float32) if v.dtype == np.float64 else v
                                   for k, v in feeds.items()})
    assert all(g.dtype == np.float32 for g in got)
    compare(model, [g.astype(np.float64) for g in got], feeds, h0, lengths, 1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_steps(tmp_path, cell):
    """At padded steps ONNX's operators output zero states, so Y is the output layer applied
    to zeros (softmax(b_y)); model.forward carries the state there instead (documented)."""
    model = make_model(cell, 2, True, "softmax")
    path = tmp_path / "model.onnx"
    export(model, path, lengths=True)
    feeds, _, _ = inputs(model, True, False)
    Y = session(path).run(None, feeds)[0]
    pad = np.arange(T) >= LENGTHS[:, None]
    b_y = model.params["b_y"].astype(np.float64)
    expected = np.exp(b_y - b_y.max()) / np.exp(b_y - b_y.max()).sum()
    np.testing.assert_allclose(Y[pad], np.broadcast_to(expected, Y[pad].shape), atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_dynamic_batch_and_time(tmp_path, cell):
    """One file serves any N and T: N = T = 1, and a batch larger than the test's."""
    model = make_model(cell, 2, True)
    path = tmp_path / "model.onnx"
    export(model, path, lengths=True, initial_state=True)
    sess = session(path)
    for n, t, lengths in [(1, 1, np.array([1])), (9, 12, np.arange(9) + 4)]:
        feeds, h0, lengths = inputs(model, True, True, n=n, t=t, lengths=lengths)
        compare(model, sess.run(None, feeds), feeds, h0, lengths, TOL["float32"])


# ---------------------------------------------------------------------------------------------
# The graph: standard operators, the traps of their conventions

def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", CELLS)
def test_graph_uses_the_standard_operators(tmp_path, cell, bidirectional):
    model = make_model(cell, 2, bidirectional, "softmax")
    proto = export(model, tmp_path / "model.onnx", lengths=True, initial_state=True)
    ops = [n.op_type for n in proto.graph.node]
    op = fonnx.ONNX_CELLS[cell][0]
    assert ops.count(op) == 2                           # one per layer, chained
    assert not {"Loop", "Scan", "If"} & set(ops)
    assert {"MatMul", "Add", "Softmax"} <= set(ops)
    D = 2 if bidirectional else 1
    G = model.cell.n_gates
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for layer, node in enumerate(n for n in proto.graph.node if n.op_type == op):
        attrs = _attrs(node)
        assert attrs["direction"] == (b"bidirectional" if bidirectional else b"forward")
        assert attrs["hidden_size"] == H
        assert "layout" not in attrs                    # onnxruntime refuses layout=1
        if cell == "gru":
            assert attrs["linear_before_reset"] == 1
        width = I if layer == 0 else D * H
        W, R, B = (inits[name] for name in node.input[1:4])
        assert W.shape == (D, G * H, width) and R.shape == (D, G * H, H)
        assert B.shape == (D, 2 * G * H)
    assert [i.name for i in proto.graph.input] == ["X", "lengths"] + [
        f"{s}0" for s in model.cell.states]
    assert [o.name for o in proto.graph.output] == ["Y"] + [f"{s}_n" for s in model.cell.states]
    assert "layout" not in str(proto.graph.node)


def test_gate_orders_and_biases():
    """ONNX's gate orders ([i, o, f, c], [z, r, h]) and [Wb, Rb] biases, block by block, from
    weights whose every gate block is a distinct constant."""
    for cell in CELLS:
        model = make_model(cell)
        spec = model.cell
        G = spec.n_gates
        arrays = {}
        for w in spec.weights:
            shape = w.shape(I, H)
            block = np.repeat(np.arange(G, dtype=np.float32) + 1, H)    # gate g -> g + 1
            scale = {"I": 10, "H": 100, None: 1000}[w.rows] * (2 if w.name == "b_s" else 1)
            arrays[w.name] = np.broadcast_to(block * scale, shape).copy()
        W, R, B = fonnx._onnx_weights(spec, arrays, [spec.weight_names], H, np.dtype("f4"))
        onnx_order = fonnx.ONNX_CELLS[cell][1]
        for k, gate in enumerate(onnx_order):
            g = spec.gates.index(gate) + 1
            rows = slice(k * H, (k + 1) * H)
            assert (W[0, rows] == 10 * g).all() and (R[0, rows] == 100 * g).all()
            assert (B[0, rows] == 1000 * g).all()                         # Wb
            Rb = B[0, G * H:][rows]
            assert (Rb == (2000 * g if spec.torch_bias == "separate" else 0)).all()
    assert fonnx.ONNX_CELLS["lstm"][1] == ("i", "o", "f", "g")
    assert fonnx.ONNX_CELLS["gru"][1] == ("z", "r", "n")


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 14, 17, 22])
@pytest.mark.parametrize("cell", CELLS)
def test_opsets(tmp_path, cell, opset):
    model = make_model(cell, 2, True, "softmax")
    path = tmp_path / "model.onnx"
    proto = export(model, path, opset=opset, lengths=True, initial_state=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    assert proto.ir_version == max(4, onnx.helper.find_min_ir_version_for(proto.opset_import))
    feeds, h0, lengths = inputs(model, True, True)
    compare(model, session(path).run(None, feeds), feeds, h0, lengths, TOL["float32"])


def test_default_and_newest_opset(tmp_path):
    model = make_model("lstm")
    assert fonnx.export(model, tmp_path / "a.onnx").opset_import[0].version == 14
    newest = onnx.defs.onnx_opset_version()
    export(model, tmp_path / "b.onnx", opset=newest)       # the checker passes


def test_file_and_metadata(tmp_path):
    model = make_model("gru", 2, True)
    path = tmp_path / "model.onnx"
    (tmp_path / "model.onnx").write_bytes(b"an older file")
    proto = fonnx.export(model, str(path))
    loaded = onnx.load(os.fspath(path))
    assert loaded == proto
    assert loaded.producer_name == "fastrnn"
    assert loaded.producer_version == fastrnn.__version__
    props = {p.key: p.value for p in loaded.metadata_props}
    assert '"cell": "gru"' in props["fastrnn"] and '"num_layers": 2' in props["fastrnn"]
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]   # no temporary file left


# ---------------------------------------------------------------------------------------------
# Refusals: clear errors, nothing written

def _refused(tmp_path, exc, match, model, *args, **kwargs):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(exc, match=match):
        fonnx.export(model, *(args or (path,)), **kwargs)
    assert path.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_refuses_lstm_without_forget_gate(tmp_path):
    for L, bi in [(1, False), (2, True)]:
        model = make_model("lstm", L, bi, forget_gate=False)
        _refused(tmp_path, ValueError, "forget gate", model)


def test_refuses_activations_onnx_lacks(tmp_path, monkeypatch):
    model = make_model("elman", activation="identity")
    monkeypatch.delitem(fonnx.ONNX_ACTIVATIONS, "identity")
    _refused(tmp_path, ValueError, "has no activation 'identity'", model)
    monkeypatch.undo()
    model.activation = "gelu"                   # not a fastrnn activation either
    _refused(tmp_path, ValueError, "activation", model)


def test_refuses_cells_without_an_operator(tmp_path, monkeypatch):
    monkeypatch.delitem(fonnx.ONNX_CELLS, "gru")
    _refused(tmp_path, ValueError, "gru cell has no ONNX operator", make_model("gru"))


@pytest.mark.parametrize("not_a_model", [None, "model.npz", {"W_x": np.zeros((3, 4))},
                                         fastrnn.LSTM, object()],
                         ids=["None", "str", "params", "class", "object"])
def test_refuses_non_models(tmp_path, not_a_model):
    _refused(tmp_path, TypeError, "model must be a fastrnn model", not_a_model)


@pytest.mark.parametrize("path", [None, 3, 1.5, ["model.onnx"]])
def test_refuses_bad_path_types(tmp_path, path):
    _refused(tmp_path, TypeError, "path must be a str or os.PathLike", make_model("gru"), path)


def test_refuses_missing_directory(tmp_path):
    _refused(tmp_path, FileNotFoundError, "does not exist", make_model("gru"),
             tmp_path / "nowhere" / "model.onnx")


@pytest.mark.parametrize("opset, exc", [(6, ValueError), (0, ValueError), (10**6, ValueError),
                                        (14.0, TypeError), (True, TypeError),
                                        ("14", TypeError)])
def test_refuses_bad_opsets(tmp_path, opset, exc):
    _refused(tmp_path, exc, "opset", make_model("lstm"), opset=opset)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"lengths": 1}, TypeError, "lengths must be True or False"),
    ({"initial_state": "yes"}, TypeError, "initial_state must be True or False"),
    ({"dtype": "float16"}, TypeError, "dtype must be float32 or float64"),
])
def test_refuses_bad_options(tmp_path, kwargs, exc, match):
    _refused(tmp_path, exc, match, make_model("elman"), **kwargs)


def test_refuses_broken_parameters(tmp_path):
    model = make_model("lstm", 2, True)
    model.params["W_s_l1_reverse"][0, 0] = np.nan
    _refused(tmp_path, ValueError, "NaN", model)
    model = make_model("lstm", 2, True)
    del model.params["b_l1"]
    _refused(tmp_path, KeyError, "b_l1", model)


def test_refuses_models_too_large_for_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fonnx, "_PROTOBUF_LIMIT", 2**20 + 100)
    _refused(tmp_path, ValueError, "2 GiB", make_model("gru"))


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)       # import onnx raises ImportError
    _refused(tmp_path, ImportError, r'pip install "fastrnn\[onnx\]"', make_model("gru"))


def test_the_core_never_imports_onnx():
    code = ("import sys, numpy as np, fastrnn; m = fastrnn.GRU(2, 3, 1, num_layers=2); "
            "m.forward(np.zeros((1, 2, 2), np.float32)); fastrnn.onnx.export; "
            "bad = {'onnx', 'onnxruntime'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(__file__))
