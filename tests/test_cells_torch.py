"""The COMPILED gated cells agree with PyTorch autograd: torch.nn.LSTM / torch.nn.GRU
(batch_first) + torch.nn.Linear on the same weights, an independent implementation of the
same networks. float64 to 1e-10 (functional API: states, outputs, final states, loss, every
gradient; backward; gradient norms); float32 to 1e-4 through the models (CPU nn.LSTM runs
oneDNN in float32). With lengths, torch runs pack_padded_sequence(enforce_sorted=False).

Mapping (tests/test_gated_reference.py's torch_model; fastrnn.to_torch_state_dict is for
ElmanRNN only): weight_ih_l0 = W_x.T, weight_hh_l0 = W_s.T, bias_ih_l0 = b, bias_hh_l0 = 0
(LSTM) or b_s (GRU); nn.Linear weight = W_y.T, bias = b_y. The LSTM without a forget gate is
compared with torch's f bias at 30 (f = 1 - 9e-14).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fastrnn  # noqa: E402
from cells_common import (CELL_IDS, CELLS, STATES, as_tuple, assert_close, backward,  # noqa: E402
                          forward, loss_and_grad, make_problem, model_state0, predict, rel_err)
from test_gated_reference import (SHAPE_IDS, SHAPES, torch_head_loss, torch_model,  # noqa: E402
                                  torch_unrolled_norms)

TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def torch_run(cell, p, output, target, lengths=None, forget_gate=True, dS=None):
    """(outputs (N, T, H), final states (tuple), loss, grads keyed like fastrnn's) by torch
    autograd in p's dtype. dS: instead of the head's loss, backpropagate sum(out * dS)."""
    dtype = TORCH_DTYPES[p["X"].dtype]
    p64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in p.items()}
    rnn, lin = torch_model(cell, p64, forget_gate)
    rnn, lin = rnn.to(dtype), lin.to(dtype)
    N, T, _ = p["X"].shape
    leaves = {k: torch.from_numpy(p[k].copy()).requires_grad_(True) for k in STATES[cell]}
    leaves["X"] = torch.from_numpy(p["X"].copy()).requires_grad_(True)
    state0 = tuple(leaves[k][None] for k in STATES[cell])
    x = leaves["X"]
    if lengths is not None:
        x = pack_padded_sequence(x, torch.from_numpy(np.asarray(lengths)), batch_first=True,
                                 enforce_sorted=False)
    out, final = rnn(x, state0 if cell == "lstm" else state0[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    final = tuple(f[0] for f in as_tuple(final))
    if dS is not None:
        loss = (out * torch.from_numpy(dS)).sum()
    else:
        Z = lin(final[0] if target == "last" else out)
        loss = torch_head_loss(Z, p["Y"], output, target, lengths, T)
    loss.backward()
    grads = {"W_x": rnn.weight_ih_l0.grad.T, "W_s": rnn.weight_hh_l0.grad.T,
             "b": rnn.bias_ih_l0.grad}
    if cell == "gru":
        grads["b_s"] = rnn.bias_hh_l0.grad
    if dS is None:
        grads.update(W_y=lin.weight.grad.T, b_y=lin.bias.grad)
    grads.update({k: v.grad for k, v in leaves.items()})
    return (out.detach().numpy(), tuple(f.detach().numpy() for f in final), loss.item(),
            {k: v.detach().numpy() for k, v in grads.items()})


def compiled_vs_torch(cell, forget_gate, output, target, shape, lengths, seed=0):
    """The largest disagreement (relative to each array's largest entry) of the compiled
    backend with torch, float64, over states, outputs, final states, loss and gradients."""
    N, T, I, H, O = shape
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=seed)
    loss, grads, last = loss_and_grad(cell, forget_gate, p, output=output, target=target,
                                      input_grads=True, lengths=lengths, return_state=True)
    states = forward(cell, forget_gate, p, lengths=lengths)
    Y, *pstates = predict(cell, forget_gate, p, output, lengths=lengths)
    out, finals, ref_loss, ref_grads = torch_run(cell, p, output, target, lengths, forget_gate)
    valid = slice(None) if lengths is None else np.arange(T) < lengths[:, None]
    errors = {"states": rel_err(states[0][valid], out[valid]),
              "loss": abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)}
    Z = out @ p["W_y"] + p["b_y"]
    if output == "softmax":
        Z = np.exp(Z - Z.max(-1, keepdims=True))
        Z /= Z.sum(-1, keepdims=True)
    errors["Y"] = rel_err(Y[valid], Z[valid])
    last = as_tuple(last)
    assert len(last) == len(finals) == len(states) == len(pstates)
    for name, s_last, S, ref in zip(("h_last", "c_last"), last, states, finals):
        errors[name] = rel_err(s_last, ref)
        errors[name + " (states[:, -1])"] = rel_err(S[:, -1], ref)
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        assert grads[k].shape == ref_grads[k].shape, k
        errors["d" + k] = rel_err(grads[k], ref_grads[k])
    return errors


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", [SHAPES[-1], SHAPES[0], SHAPES[1], SHAPES[2]],
                         ids=[SHAPE_IDS[-1], SHAPE_IDS[0], SHAPE_IDS[1], SHAPE_IDS[2]])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_compiled_matches_torch_float64(cell, forget_gate, output, target, shape, lengths,
                                        with_lengths):
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    errors = compiled_vs_torch(cell, forget_gate, output, target, shape, lengths,
                               seed=11 + sum(shape))
    bad = {k: v for k, v in errors.items() if not v <= 1e-10}
    assert not bad, bad


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_compiled_backward_matches_torch(cell, forget_gate, with_lengths):
    """cell_backward with an arbitrary dHs (dCs = 0) is autograd of sum(out * dHs) (past a
    sequence's end torch's padded output is a constant 0, and fastrnn ignores dHs)."""
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, lengths=lengths, seed=3)
    dHs = np.random.default_rng(4).standard_normal((N, T, H))
    states = forward(cell, forget_gate, p, lengths=lengths)
    dstates = (dHs,) + tuple(np.zeros_like(S) for S in states[1:])
    grads = backward(cell, forget_gate, p, states, dstates, lengths=lengths)
    _, _, _, ref = torch_run(cell, p, "linear", "sequence", lengths, forget_gate, dS=dHs)
    assert set(grads) == set(ref)
    for k in ref:
        assert_close(grads[k], ref[k], 1e-10, k)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last")])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_compiled_state_grad_norms_match_torch(cell, output, target, with_lengths):
    """||dLoss/dh_t|| (and the LSTM's ||dLoss/dc_t||) of the compiled backward pass equal
    the .grad norms of every h_t (c_t) of the cell unrolled in torch."""
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=13)
    _, grads = loss_and_grad(cell, True, p, output=output, target=target, lengths=lengths,
                             state_grad_norms=True)
    h_norms, c_norms = torch_unrolled_norms(cell, p, output, target, lengths)
    assert grads["state_grad_norms"].dtype == np.float64
    assert_close(grads["state_grad_norms"], h_norms, 1e-10, "state_grad_norms")
    if cell == "lstm":
        assert grads["cell_grad_norms"].dtype == np.float64
        assert_close(grads["cell_grad_norms"], c_norms, 1e-10, "cell_grad_norms")
    else:
        assert "cell_grad_norms" not in grads


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last"),
                                            ("linear", "last"), ("softmax", "sequence")])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_model_float32_matches_torch(cell, forget_gate, output, target, with_lengths):
    """fastrnn.LSTM / GRU with its own float32 initialisation (nonzero initial states given)
    against torch in float32: forward's outputs and final states, loss and every gradient
    (input gradients included) to 1e-4 of each array's largest entry."""
    N, T, I, H, O = 4, 9, 3, 8, 5
    lengths = np.array([9, 3, 1, 6]) if with_lengths else None
    kw = {"forget_gate": forget_gate} if cell == "lstm" else {}
    model_class = fastrnn.LSTM if cell == "lstm" else fastrnn.GRU
    m = model_class(I, H, O, output=output, dtype="float32", seed=5, **kw)
    p = make_problem(cell, N, T, I, H, O, dtype=np.float32, output=output, target=target,
                     lengths=lengths, seed=6)
    p.update({k: v.copy() for k, v in m.params.items()})
    h0 = model_state0(cell, p)
    Y, Hs, last = m.forward(p["X"], h0, lengths=lengths, return_state=True)
    loss, grads = m.loss_and_grad(p["X"], p["Y"], h0, target, lengths=lengths,
                                  input_grads=True)
    assert Y.dtype == Hs.dtype == np.float32
    out, finals, ref_loss, ref = torch_run(cell, p, output, target, lengths, forget_gate)
    rtol = 1e-4
    valid = slice(None) if lengths is None else np.arange(T) < lengths[:, None]
    assert_close(Hs[valid], out[valid], rtol, "states")
    for a, b in zip(as_tuple(last), finals):
        assert_close(a, b, rtol, "final state")
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    assert set(grads) == set(ref)
    for k in ref:
        assert grads[k].dtype == np.float32, k
        assert_close(grads[k], ref[k], rtol, k)
