"""The NumPy twins of the gated cells (fastrnn/cells/lstm.py, gru.py), proved right:

1. finite differences (float64) of every gradient loss_and_grad returns, for both cells, both
   outputs, both targets, with and without lengths, with and without a forget gate;
2. backward() is loss_and_grad's recurrence given the head's dS, and the gradient of
   sum(dHs * Hs) + sum(dCs * Cs) for any dHs, dCs;
3. agreement with torch.nn.LSTM / nn.GRU + nn.Linear autograd in float64 (packed sequences
   for lengths), and of the gradient norms with an unrolled nn.LSTMCell / nn.GRUCell;
4. a padded batch gives what each sequence gives alone;
5. float32 in, float32 out;
6. the checks can fail: a planted bug in either backward is caught.

Mapping to torch (fastrnn uses row vectors): weight_ih_l0 = W_x.T, weight_hh_l0 = W_s.T,
bias_ih_l0 = b, bias_hh_l0 = 0 (LSTM) or b_s (GRU); nn.Linear: weight = W_y.T, bias = b_y.
"""
import numpy as np
import pytest

from fastrnn import head
from fastrnn.cells import gru, lstm

# (cell, forget_gate): the LSTM with and without its forget gate, and the GRU
CELLS = [("lstm", True), ("lstm", False), ("gru", None)]
CELL_IDS = ["lstm", "lstm_nofg", "gru"]
MODULES = {"lstm": lstm, "gru": gru}
# (N, T, I, H, O) and the lengths used when the test asks for them; I != H != O, and sizes 1
SHAPES = [
    ((2, 3, 4, 3, 2), (3, 1)),
    ((1, 1, 1, 1, 1), (1,)),
    ((1, 4, 2, 1, 3), (2,)),
    ((3, 1, 2, 3, 2), (1, 1, 1)),
    ((3, 5, 3, 2, 4), (2, 5, 4)),
]
SHAPE_IDS = ["N{}T{}I{}H{}O{}".format(*s) for s, _ in SHAPES]
EPS = 1e-6
MAX_ENTRIES = 16     # finite differences of a random subset of the entries of bigger arrays


# ---------------------------------------------------------------------------------------------
# Helpers

def make_problem(cell, N, T, I, H, O, dtype=np.float64, output="linear", target="sequence",
                 lengths=None, seed=0):
    """Keyword arguments of the cell's loss_and_grad (minus the hyperparameters): random
    inputs, nonzero initial states, weights and targets. With lengths, the padding holds
    garbage (large inputs, out-of-range labels): it must not matter."""
    rng = np.random.default_rng(seed)
    k = 4 if cell == "lstm" else 3

    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    p = {"X": normal(N, T, I), "h0": normal(N, H, s=0.5)}
    if cell == "lstm":
        p["c0"] = normal(N, H, s=0.5)
    p.update(W_x=normal(I, k * H, s=1 / np.sqrt(I)), W_s=normal(H, k * H, s=1 / np.sqrt(H)),
             b=normal(k * H, s=0.3))
    if cell == "gru":
        p["b_s"] = normal(k * H, s=0.3)
    p.update(W_y=normal(H, O, s=1 / np.sqrt(H)), b_y=normal(O, s=0.2))
    shape = (N, T) if target == "sequence" else (N,)
    if output == "linear":
        p["Y"] = normal(*shape, O)
    else:
        p["Y"] = rng.integers(0, O, size=shape).astype(np.int64)
    if lengths is not None:
        for n, L in enumerate(lengths):
            p["X"][n, L:] = 1e3 * (n + 1)
            if target == "sequence":
                p["Y"][n, L:] = -1 if output == "softmax" else -1e3
    return p


def recurrence_args(cell, p):
    """The recurrence's own arguments (forward/backward) from a problem."""
    names = ("X", "h0", "c0", "W_x", "W_s", "b") if cell == "lstm" else \
        ("X", "h0", "W_x", "W_s", "b", "b_s")
    return {k: p[k] for k in names}


def options(cell, forget_gate):
    return {"forget_gate": forget_gate} if cell == "lstm" else {}


def numerical_gradient(f, arr, rng=None, max_entries=None):
    """Central differences of the scalar f() with respect to the entries of arr (all, or a
    random subset of max_entries, the others NaN)."""
    grad = np.full_like(arr, np.nan)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    idx = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = rng.choice(flat.size, max_entries, replace=False)
    for i in idx:
        orig = flat[i]
        flat[i] = orig + EPS
        up = f()
        flat[i] = orig - EPS
        down = f()
        flat[i] = orig
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def check_fd(analytic, numeric, name):
    """Central differences are accurate to ~1e-9 here; a real gradient bug is O(1)."""
    keep = ~np.isnan(numeric)
    np.testing.assert_allclose(analytic[keep], numeric[keep], rtol=1e-6, atol=1e-8,
                               err_msg=name)


def assert_close(actual, desired, rtol, name=""):
    """Elementwise rtol plus an atol of rtol times the array's largest entry (for entries
    that cancel to ~0); shapes and dtypes must agree."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, (name, actual.shape, desired.shape)
    assert actual.dtype == desired.dtype, (name, actual.dtype, desired.dtype)
    scale = max(float(np.max(np.abs(desired), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=name)


def assert_grads_close(ours, theirs, rtol, names=None):
    names = sorted(theirs) if names is None else names
    for k in names:
        assert_close(ours[k], theirs[k], rtol, name=f"gradient of {k}")


def param_names(cell, input_grads=True):
    names = ["W_x", "W_s", "b"] + (["b_s"] if cell == "gru" else []) + ["W_y", "b_y"]
    if input_grads:
        names += ["X", "h0"] + (["c0"] if cell == "lstm" else [])
    return names


def fd_check_loss_and_grad(cell, forget_gate, shape, lengths, output, target, seed=0,
                           max_entries=None):
    N, T, I, H, O = shape
    lengths = None if lengths is None else np.array(lengths, dtype=np.int64)
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=seed)
    mod = MODULES[cell]
    kw = dict(options(cell, forget_gate), output=output, target=target, lengths=lengths)

    rec, opt = recurrence_args(cell, p), options(cell, forget_gate)

    def loss():                      # the head on forward()'s states: no backward pass
        states = mod.forward(**rec, **opt, lengths=lengths)
        Hs = states[0] if cell == "lstm" else states
        return head.loss_and_grad(Hs, p["W_y"], p["b_y"], p["Y"], output, target, lengths)[0]

    value, grads = mod.loss_and_grad(**p, **kw, input_grads=True)
    assert np.isfinite(value) and value == pytest.approx(loss(), rel=1e-12)
    assert set(grads) == set(param_names(cell))
    rng = np.random.default_rng(seed + 1)
    for name in grads:
        assert grads[name].shape == p[name].shape, name
        check_fd(grads[name], numerical_gradient(loss, p[name], rng, max_entries), name)
    if lengths is not None:
        for n, L in enumerate(lengths):
            assert not grads["X"][n, L:].any()     # nothing flows into the padding
    if cell == "lstm" and not forget_gate:         # the f blocks are unused
        for name in ("W_x", "W_s", "b"):
            assert not grads[name][..., H:2 * H].any(), name


# ---------------------------------------------------------------------------------------------
# 1. Finite differences of loss_and_grad

@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_loss_and_grad_matches_finite_differences(cell, forget_gate, output, target, shape,
                                                  lengths, with_lengths):
    fd_check_loss_and_grad(cell, forget_gate, shape, lengths if with_lengths else None,
                           output, target, seed=sum(shape), max_entries=MAX_ENTRIES)


# ---------------------------------------------------------------------------------------------
# 2. backward()

@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last")])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_backward_is_loss_and_grads_recurrence(cell, forget_gate, output, target,
                                               with_lengths):
    """backward(dS = the head's gradient) gives loss_and_grad's recurrence gradients. backward
    recomputes the gates with one matmul over all steps where the forward made one per step,
    so agreement is to rounding (bit-identical here, but BLAS need not promise it)."""
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=5)
    mod, opt = MODULES[cell], options(cell, forget_gate)
    rec = recurrence_args(cell, p)
    _, grads = mod.loss_and_grad(**p, **opt, output=output, target=target, input_grads=True,
                                 lengths=lengths)
    if cell == "lstm":
        Hs, Cs = mod.forward(**rec, **opt, lengths=lengths)
        _, dS, _, _ = head.loss_and_grad(Hs, p["W_y"], p["b_y"], p["Y"], output, target,
                                         lengths)
        got = mod.backward(**rec, Hs=Hs, Cs=Cs, dHs=dS, dCs=np.zeros_like(Cs), **opt,
                           lengths=lengths)
    else:
        Hs = mod.forward(**rec, lengths=lengths)
        _, dS, _, _ = head.loss_and_grad(Hs, p["W_y"], p["b_y"], p["Y"], output, target,
                                         lengths)
        got = mod.backward(**rec, Hs=Hs, dHs=dS, lengths=lengths)
    assert set(got) == set(rec)
    assert_grads_close(got, grads, 1e-12, names=sorted(rec))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", [SHAPES[0], SHAPES[2]], ids=[SHAPE_IDS[0],
                                                                         SHAPE_IDS[2]])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_backward_matches_finite_differences(cell, forget_gate, shape, lengths, with_lengths):
    """backward with arbitrary dHs (and dCs) is the gradient of sum(dHs * Hs) + sum(dCs * Cs)
    over the valid steps; whatever dHs, dCs hold past the end is ignored."""
    N, T, I, H, O = shape
    lengths = np.array(lengths) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, lengths=lengths, seed=7 + sum(shape))
    mod, opt = MODULES[cell], options(cell, forget_gate)
    rec = recurrence_args(cell, p)
    rng = np.random.default_rng(8)
    dHs, dCs = rng.standard_normal((N, T, H)), rng.standard_normal((N, T, H))
    valid = np.ones((N, T, 1)) if lengths is None else \
        (np.arange(T) < lengths[:, None])[..., None]

    def objective():
        states = mod.forward(**rec, **opt, lengths=lengths)
        if cell == "lstm":
            return float(np.sum(valid * dHs * states[0]) + np.sum(valid * dCs * states[1]))
        return float(np.sum(valid * dHs * states))

    states = mod.forward(**rec, **opt, lengths=lengths)
    if cell == "lstm":
        grads = mod.backward(**rec, Hs=states[0], Cs=states[1], dHs=dHs, dCs=dCs, **opt,
                             lengths=lengths)
        clean = mod.backward(**rec, Hs=states[0], Cs=states[1], dHs=valid * dHs,
                             dCs=valid * dCs, **opt, lengths=lengths)
    else:
        grads = mod.backward(**rec, Hs=states, dHs=dHs, lengths=lengths)
        clean = mod.backward(**rec, Hs=states, dHs=valid * dHs, lengths=lengths)
    assert set(grads) == set(rec)
    for name in rec:
        assert grads[name].shape == rec[name].shape, name
        check_fd(grads[name], numerical_gradient(objective, rec[name]), name)
        np.testing.assert_array_equal(grads[name], clean[name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# 3. Agreement with torch autograd

def torch_model(cell, p, forget_gate=True):
    """nn.LSTM / nn.GRU and nn.Linear (float64) holding the problem's weights. Without a
    forget gate, the LSTM's f blocks are zeroed and its f bias set to 30: sigmoid(30) =
    1 - 9e-14, the closest torch has to f = 1."""
    import torch
    I, kH = p["W_x"].shape
    H, O = p["W_y"].shape
    W_x, W_s, b = p["W_x"].copy(), p["W_s"].copy(), p["b"].copy()
    if cell == "lstm" and not forget_gate:
        W_x[:, H:2 * H] = 0
        W_s[:, H:2 * H] = 0
        b[H:2 * H] = 30.0
    rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(I, H, batch_first=True)
    rnn = rnn.double()
    lin = torch.nn.Linear(H, O).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(W_x.T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(W_s.T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        if cell == "lstm":
            rnn.bias_hh_l0.zero_()
        else:
            rnn.bias_hh_l0.copy_(torch.from_numpy(p["b_s"]))
        lin.weight.copy_(torch.from_numpy(p["W_y"].T.copy()))
        lin.bias.copy_(torch.from_numpy(p["b_y"]))
    return rnn, lin


def torch_head_loss(Z, Y, output, target, lengths, T):
    """The mean loss over the scored targets, as fastrnn.head defines it."""
    import torch
    import torch.nn.functional as F
    Y = torch.from_numpy(Y)
    if target == "sequence" and lengths is not None:
        mask = torch.arange(T)[None, :] < torch.from_numpy(lengths)[:, None]
        if output == "softmax":
            return F.cross_entropy(Z[mask], Y[mask])
        return F.mse_loss(Z[mask], Y[mask])
    if output == "softmax":
        return F.cross_entropy(Z.reshape(-1, Z.shape[-1]), Y.reshape(-1))
    return F.mse_loss(Z, Y)


def torch_loss_and_grad(cell, p, output, target, lengths=None, forget_gate=True):
    """(outputs (N, T, H), final states, loss, grads keyed like fastrnn's) by torch
    autograd; with lengths through pack_padded_sequence(enforce_sorted=False)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    N, T, _ = p["X"].shape
    rnn, lin = torch_model(cell, p, forget_gate)
    leaves = {k: torch.from_numpy(p[k].copy()).requires_grad_(True)
              for k in ("X", "h0", "c0") if k in p}
    state0 = (leaves["h0"][None], leaves["c0"][None]) if cell == "lstm" else \
        leaves["h0"][None]
    x = leaves["X"]
    if lengths is not None:
        x = pack_padded_sequence(x, torch.from_numpy(lengths), batch_first=True,
                                 enforce_sorted=False)
    out, final = rnn(x, state0)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n = final[0][0] if cell == "lstm" else final[0]
    Z = lin(h_n if target == "last" else out)
    loss = torch_head_loss(Z, p["Y"], output, target, lengths, T)
    loss.backward()
    grads = {"W_x": rnn.weight_ih_l0.grad.T, "W_s": rnn.weight_hh_l0.grad.T,
             "b": rnn.bias_ih_l0.grad, "W_y": lin.weight.grad.T, "b_y": lin.bias.grad}
    if cell == "gru":
        grads["b_s"] = rnn.bias_hh_l0.grad
    grads.update({k: v.grad for k, v in leaves.items()})
    finals = tuple(f[0].detach().numpy() for f in final) if cell == "lstm" else \
        final[0].detach().numpy()
    return (out.detach().numpy(), finals, loss.item(),
            {k: v.detach().numpy() for k, v in grads.items()})


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", [SHAPES[-1], SHAPES[0], SHAPES[1]],
                         ids=[SHAPE_IDS[-1], SHAPE_IDS[0], SHAPE_IDS[1]])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_matches_torch(cell, forget_gate, output, target, shape, lengths, with_lengths):
    pytest.importorskip("torch")
    N, T, I, H, O = shape
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=11 + sum(shape))
    mod, opt = MODULES[cell], options(cell, forget_gate)
    loss, grads, last = mod.loss_and_grad(**p, **opt, output=output, target=target,
                                          input_grads=True, lengths=lengths,
                                          return_state=True)
    states = mod.forward(**recurrence_args(cell, p), **opt, lengths=lengths)
    Hs = states[0] if cell == "lstm" else states
    out, finals, ref_loss, ref_grads = torch_loss_and_grad(cell, p, output, target, lengths,
                                                           forget_gate)
    # without a forget gate: f = 1 exactly vs torch's sigmoid(30) = 1 - 9e-14, well within
    rtol = 1e-10
    valid = slice(None) if lengths is None else np.arange(T) < lengths[:, None]
    assert_close(Hs[valid], out[valid], rtol, "states")
    if cell == "lstm":
        assert_close(last[0], finals[0], rtol, "h_last")
        assert_close(last[1], finals[1], rtol, "c_last")
        assert_close(states[1][:, -1], finals[1], rtol, "Cs[:, -1]")
    else:
        assert_close(last, finals, rtol, "h_last")
    assert_close(Hs[:, -1], last[0] if cell == "lstm" else last, 0, "Hs[:, -1]")
    assert loss == pytest.approx(ref_loss, rel=rtol)
    assert set(grads) == set(ref_grads)
    assert_grads_close(grads, ref_grads, rtol)


def torch_unrolled_norms(cell, p, output, target, lengths):
    """||dLoss/dh_t|| and ||dLoss/dc_t|| (N, T) from the cell unrolled in torch (nn.GRUCell;
    the LSTM step written out, so that h_t is computed from the tensor c_t): every h_t, c_t
    is a tensor whose .grad collects all paths."""
    import torch
    N, T, _ = p["X"].shape
    rnn, lin = torch_model(cell, p)
    I, H = p["W_x"].shape[0], p["W_s"].shape[0]
    if cell == "gru":
        gru_step = torch.nn.GRUCell(I, H).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(gru_step, name).copy_(getattr(rnn, name + "_l0"))

    def lstm_gates(x, h):
        z = x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        i, f, g, o = z.chunk(4, dim=1)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)

    X = torch.from_numpy(p["X"])
    L = torch.full((N,), T) if lengths is None else torch.from_numpy(lengths)
    h = torch.from_numpy(p["h0"])
    c = torch.from_numpy(p["c0"]) if cell == "lstm" else None
    hs, cs = [], []
    for t in range(T):
        valid = (t < L)[:, None]
        if cell == "lstm":
            i, f, g, o = lstm_gates(X[:, t], h)
            c = torch.where(valid, f * c + i * g, c)
            c.retain_grad()
            cs.append(c)
            h_new = o * torch.tanh(c)
        else:
            h_new = gru_step(X[:, t], h)
        h = torch.where(valid, h_new, h)
        h.retain_grad()
        hs.append(h)
    out = torch.stack(hs, dim=1)
    S = out[torch.arange(N), L - 1] if target == "last" else out
    torch_head_loss(lin(S), p["Y"], output, target, lengths, T).backward()

    def norms(states):
        return torch.stack([torch.zeros(N, dtype=torch.float64) if s.grad is None
                            else s.grad.norm(dim=1) for s in states], dim=1).numpy()
    return norms(hs), norms(cs) if cs else None


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last")])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_state_grad_norms_match_torch(cell, output, target, with_lengths):
    pytest.importorskip("torch")
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=13)
    mod, opt = MODULES[cell], options(cell, True)
    loss, grads = mod.loss_and_grad(**p, **opt, output=output, target=target,
                                    input_grads=False, lengths=lengths, state_grad_norms=True)
    _, plain = mod.loss_and_grad(**p, **opt, output=output, target=target, input_grads=False,
                                 lengths=lengths)
    assert_grads_close(grads, plain, 0)                  # the norms change nothing else
    h_norms, c_norms = torch_unrolled_norms(cell, p, output, target, lengths)
    assert grads["state_grad_norms"].dtype == np.float64
    assert_close(grads["state_grad_norms"], h_norms, 1e-10, "state_grad_norms")
    if cell == "lstm":
        assert_close(grads["cell_grad_norms"], c_norms, 1e-10, "cell_grad_norms")
        assert set(grads) == set(plain) | {"state_grad_norms", "cell_grad_norms"}
    else:
        assert set(grads) == set(plain) | {"state_grad_norms"}
    if lengths is not None:
        past = np.arange(T) >= lengths[:, None]
        assert not grads["state_grad_norms"][past].any()


# ---------------------------------------------------------------------------------------------
# 4. lengths: a padded batch is each sequence alone

@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "sequence"),
                                            ("linear", "last"), ("softmax", "last")])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_padded_batch_equals_each_sequence_alone(cell, forget_gate, output, target):
    lengths = np.array([3, 1, 5, 4])
    N, T, I, H, O = 4, 5, 3, 2, 3
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=17)
    mod, opt = MODULES[cell], options(cell, forget_gate)
    kw = dict(opt, output=output, target=target, input_grads=True, return_state=True)
    loss, grads, last = mod.loss_and_grad(**p, **kw, lengths=lengths)
    states = mod.forward(**recurrence_args(cell, p), **opt, lengths=lengths)
    states = states if cell == "lstm" else (states,)
    # the batch loss is a mean over scored targets: weight each sequence by its count
    weights = lengths / lengths.sum() if target == "sequence" else np.full(N, 1 / N)
    want_loss, want = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    state0 = ("h0", "c0") if cell == "lstm" else ("h0",)
    for n, L in enumerate(lengths):
        q = dict(p, X=p["X"][n:n + 1, :L],
                 Y=p["Y"][n:n + 1, :L] if target == "sequence" else p["Y"][n:n + 1],
                 **{k: p[k][n:n + 1] for k in state0})
        l_n, g_n, last_n = mod.loss_and_grad(**q, **kw)
        alone = mod.forward(**recurrence_args(cell, q), **opt)
        alone = alone if cell == "lstm" else (alone,)
        last_n = last_n if cell == "lstm" else (last_n,)
        for S, S_n, s_last, s_last_n in zip(states, alone, last if cell == "lstm" else (last,),
                                            last_n):
            assert_close(S[n, :L], S_n[0], 1e-12, "states")
            assert (S[n, L:] == S[n, L - 1]).all()          # carried past the end
            assert_close(s_last[n], s_last_n[0], 1e-12, "final state")
        want_loss += weights[n] * l_n
        for k in param_names(cell, input_grads=False):
            want[k] += weights[n] * g_n[k]
        want["X"][n, :L] = weights[n] * g_n["X"][0]
        for k in state0:
            want[k][n] = weights[n] * g_n[k][0]
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert_grads_close(grads, want, 1e-10)


# ---------------------------------------------------------------------------------------------
# 5. dtype

@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_float32_in_float32_out(cell, forget_gate):
    N, T, I, H, O = 3, 4, 2, 3, 2
    p = make_problem(cell, N, T, I, H, O, dtype=np.float32, lengths=[4, 2, 3], seed=19)
    lengths = np.array([4, 2, 3])
    mod, opt = MODULES[cell], options(cell, forget_gate)
    rec = recurrence_args(cell, p)
    loss, grads, last = mod.loss_and_grad(**p, **opt, output="linear", target="sequence",
                                          input_grads=True, lengths=lengths,
                                          return_state=True, state_grad_norms=True)
    assert np.isfinite(loss)
    for k, g in grads.items():
        want = np.float64 if k.endswith("grad_norms") else np.float32
        assert g.dtype == want, (k, g.dtype)
    states = mod.forward(**rec, **opt, lengths=lengths)
    Y, Hs, *_ = mod.predict(**rec, W_y=p["W_y"], b_y=p["b_y"], **opt, output="softmax",
                        lengths=lengths)
    if cell == "lstm":
        Hs2, Cs = states
        back = mod.backward(**rec, Hs=Hs2, Cs=Cs, dHs=np.ones_like(Hs2),
                            dCs=np.ones_like(Cs), **opt, lengths=lengths)
        arrays = [Hs2, Cs, *last]
    else:
        Hs2 = states
        back = mod.backward(**rec, Hs=Hs2, dHs=np.ones_like(Hs2), lengths=lengths)
        arrays = [Hs2, last]
    arrays += [Y, Hs] + list(back.values())
    assert all(a.dtype == np.float32 for a in arrays), [a.dtype for a in arrays]
    np.testing.assert_array_equal(Hs, Hs2)
    np.testing.assert_allclose(Y.sum(axis=-1), 1, rtol=1e-5)      # probabilities


def test_predict_is_the_head_on_the_states():
    (N, T, I, H, O), _ = SHAPES[0]
    for cell, forget_gate in CELLS:
        p = make_problem(cell, N, T, I, H, O, seed=23)
        mod, opt = MODULES[cell], options(cell, forget_gate)
        rec = recurrence_args(cell, p)
        for output in ("linear", "softmax"):
            Y, Hs, *_ = mod.predict(**rec, W_y=p["W_y"], b_y=p["b_y"], **opt, output=output)
            states = mod.forward(**rec, **opt)
            np.testing.assert_array_equal(Hs, states[0] if cell == "lstm" else states)
            Z = Hs @ p["W_y"] + p["b_y"]
            want = Z if output == "linear" else np.exp(Z) / np.exp(Z).sum(-1, keepdims=True)
            np.testing.assert_allclose(Y, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# 6. The checks can fail

def test_finite_differences_catch_a_wrong_lstm_backward(monkeypatch):
    """Drop the carry of dc through the forget gate: the LSTM gradients must be rejected."""
    real = lstm._step_grads_

    def no_carry(dz, dh, dc, gates, dgates, tanh_c, c_prev):
        dc[...] = 0
        real(dz, dh, dc, gates, dgates, tanh_c, c_prev)

    monkeypatch.setattr(lstm, "_step_grads_", no_carry)
    with pytest.raises(AssertionError):
        fd_check_loss_and_grad("lstm", True, *SHAPES[0], "linear", "sequence")


def test_finite_differences_catch_a_wrong_gru_backward(monkeypatch):
    """Forget that the recurrent n block enters through r: the GRU gradients must be
    rejected."""
    real = gru._step_grads_

    def no_reset(dza, dzs, dh, gates, dgates, s_n, h_prev):
        real(dza, dzs, dh, gates, dgates, s_n, h_prev)
        H = dh.shape[1]
        dzs[:, 2 * H:] = dza[:, 2 * H:]

    monkeypatch.setattr(gru, "_step_grads_", no_reset)
    with pytest.raises(AssertionError):
        fd_check_loss_and_grad("gru", None, *SHAPES[0], "softmax", "last")


def test_torch_comparison_catches_a_gate_order_swap(monkeypatch):
    """Swapping i and f (a gate-order bug that the finite differences cannot see) makes the
    LSTM disagree with torch."""
    pytest.importorskip("torch")
    real = lstm._gates_

    def swapped(Z, forget_gate):
        H = Z.shape[-1] // 4
        Z[..., :2 * H] = np.concatenate([Z[..., H:2 * H], Z[..., :H]], axis=-1)
        return real(Z, forget_gate)

    (N, T, I, H, O), _ = SHAPES[0]
    p = make_problem("lstm", N, T, I, H, O, seed=29)
    _, _, ref_loss, _ = torch_loss_and_grad("lstm", p, "linear", "sequence")
    monkeypatch.setattr(lstm, "_gates_", swapped)
    loss, _ = lstm.loss_and_grad(**p, forget_gate=True, output="linear", target="sequence",
                                 input_grads=False)
    assert loss != pytest.approx(ref_loss, rel=1e-6)


@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_arguments_are_not_modified(cell, forget_gate):
    lengths = np.array([2, 5, 4])
    p = make_problem(cell, 3, 5, 3, 2, 4, lengths=lengths, seed=31)
    before = {k: v.copy() for k, v in p.items()}
    mod, opt = MODULES[cell], options(cell, forget_gate)
    rec = recurrence_args(cell, p)
    mod.loss_and_grad(**p, **opt, output="linear", target="sequence", input_grads=True,
                      lengths=lengths, state_grad_norms=True)
    states = mod.forward(**rec, **opt, lengths=lengths)
    if cell == "lstm":
        dHs, dCs = np.ones_like(states[0]), np.ones_like(states[1])
        mod.backward(**rec, Hs=states[0], Cs=states[1], dHs=dHs, dCs=dCs, **opt,
                     lengths=lengths)
        assert (dHs == 1).all() and (dCs == 1).all()
    else:
        dHs = np.ones_like(states)
        mod.backward(**rec, Hs=states, dHs=dHs, lengths=lengths)
        assert (dHs == 1).all()
    for k in p:
        np.testing.assert_array_equal(p[k], before[k], err_msg=k)
