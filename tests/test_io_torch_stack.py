"""to_torch_state_dict / from_torch_state_dict for deep and bidirectional networks: every
cell x num_layers {1, 2, 3} x {unidirectional, bidirectional}, in float64, against
torch.nn.RNN / LSTM / GRU(num_layers=L, bidirectional=..., batch_first=True) + nn.Linear(D*H,
O): the outputs (Y = linear(rnn output)) and final states (h_n, and c_n) agree to 1e-10, both
ways, with full-length sequences and with lengths (torch's packed sequences)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastrnn  # noqa: E402
from fastrnn import io as fio  # noqa: E402

CELLS = {"elman": (fastrnn.ElmanRNN, torch.nn.RNN), "lstm": (fastrnn.LSTM, torch.nn.LSTM),
         "gru": (fastrnn.GRU, torch.nn.GRU)}
I, H, O = 3, 5, 2
TOL = 1e-10


class Net(torch.nn.Module):
    """The torch network of a fastrnn model: the recurrent module, then a linear layer on
    its outputs (both directions of the top layer concatenated)."""

    def __init__(self, cell, num_layers, bidirectional, bias=True, **kw):
        super().__init__()
        module = CELLS[cell][1]
        self.rnn = module(I, H, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=True, bias=bias, **kw)
        self.linear = torch.nn.Linear((1 + bidirectional) * H, O)

    def forward(self, X, state0=None, lengths=None):
        """(Y, final states as a tuple: (h_n,) or (h_n, c_n)), numpy; with lengths, Y is
        zero past each sequence's end."""
        X = torch.from_numpy(X)
        if state0 is not None:
            state0 = tuple(torch.from_numpy(s) for s in state0)
            state0 = state0 if len(state0) > 1 else state0[0]
        with torch.no_grad():
            if lengths is not None:
                X = torch.nn.utils.rnn.pack_padded_sequence(
                    X, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
            out, state = self.rnn(X, state0)
            if lengths is not None:
                out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                    out, batch_first=True, total_length=int(lengths.max()))
            Y = self.linear(out)
        state = state if isinstance(state, tuple) else (state,)
        return Y.numpy(), tuple(s.numpy() for s in state)


def torch_net(cell, num_layers, bidirectional, seed=0, **kw):
    torch.manual_seed(seed)
    return Net(cell, num_layers, bidirectional, **kw).double()


def state_dict(net):
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def our_model(cell, num_layers, bidirectional, seed=0):
    """A float64 model with random parameters (every bias nonzero)."""
    m = CELLS[cell][0](I, H, O, num_layers=num_layers, bidirectional=bidirectional,
                       dtype="float64", seed=seed)
    rng = np.random.default_rng(seed + 10)
    for p in m.params.values():
        p[...] = 0.5 * rng.standard_normal(p.shape)
    return m


def problem(cell, num_layers, bidirectional, N=4, T=7, seed=1):
    """(X, state0): inputs and nonzero initial states (L*D, N, H) (h0; h0 and c0)."""
    rng = np.random.default_rng(seed)
    n_states = 2 if cell == "lstm" else 1
    LD = num_layers * (1 + bidirectional)
    return (rng.standard_normal((N, T, I)),
            tuple(0.5 * rng.standard_normal((LD, N, H)) for _ in range(n_states)))


def ours(model, X, state0=None, lengths=None):
    """(Y, final states as a tuple of (L*D, N, H) arrays) of model.forward. (A one-layer,
    one-direction model's states are (N, H), as before stacks.)"""
    single = model.num_layers == 1 and not model.bidirectional
    if state0 is not None:
        state0 = tuple(s[0] for s in state0) if single else state0
    h0 = None if state0 is None else (state0[0] if len(state0) == 1 else state0)
    Y, _, state = model.forward(X, h0=h0, lengths=lengths, return_state=True)
    state = state if isinstance(state, tuple) else (state,)
    return Y, tuple(s[None] for s in state) if single else state


def diff(a, b):
    """max |a - b| relative to max(1, |b|)."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    return float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b))))


def assert_agree(ours_out, torch_out, mask=None):
    """Outputs (at the valid steps, mask (N, T)) and every final state to TOL; returns the
    largest difference."""
    (Y, states), (Yt, states_t) = ours_out, torch_out
    if mask is not None:
        Y, Yt = Y[mask], Yt[mask]
    worst = diff(Y, Yt)
    assert len(states) == len(states_t)
    for s, st in zip(states, states_t):
        worst = max(worst, diff(s, st))
    assert worst < TOL, worst
    return worst


CASES = [(cell, L, bi) for cell in sorted(CELLS) for L in (1, 2, 3) for bi in (False, True)]
IDS = [f"{cell}-L{L}-{'bi' if bi else 'uni'}" for cell, L, bi in CASES]


# ---------------------------------------------------------------------------------------------
# fastrnn -> torch

@pytest.mark.parametrize("cell,num_layers,bidirectional", CASES, ids=IDS)
def test_to_torch(cell, num_layers, bidirectional):
    m = our_model(cell, num_layers, bidirectional)
    sd = fio.to_torch_state_dict(m)
    net = torch_net(cell, num_layers, bidirectional, seed=3)
    assert list(sd) == list(net.state_dict())               # torch's keys, in its order
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in sd.items():
        assert v.dtype == np.float64 and v.flags.c_contiguous, k
        for p in m.params.values():
            assert not np.shares_memory(v, p), k
    X, state0 = problem(cell, num_layers, bidirectional)
    assert_agree(ours(m, X), net(X))
    assert_agree(ours(m, X, state0), net(X, state0))
    lengths = np.array([7, 2, 5, 1])
    mask = np.arange(X.shape[1]) < lengths[:, None]
    assert_agree(ours(m, X, state0, lengths), net(X, state0, lengths), mask)


# ---------------------------------------------------------------------------------------------
# torch -> fastrnn

@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("cell,num_layers,bidirectional", CASES, ids=IDS)
def test_from_torch(cell, num_layers, bidirectional, backend):
    net = torch_net(cell, num_layers, bidirectional)          # nonzero bias_hh everywhere
    sd = state_dict(net)
    m = fio.from_torch_state_dict(net.state_dict(), cell=cell, backend=backend)
    assert type(m) is CELLS[cell][0] and m.backend == backend and m.dtype == np.float64
    assert (m.num_layers, m.bidirectional, m.dropout) == (num_layers, bidirectional, 0.0)
    assert (m.input_size, m.hidden_size, m.output_size) == (I, H, O)
    for p in m.params.values():
        assert p.flags.c_contiguous
        for v in sd.values():
            assert not np.shares_memory(p, v)
    X, state0 = problem(cell, num_layers, bidirectional, seed=2)
    assert_agree(ours(m, X), net(X))
    assert_agree(ours(m, X, state0), net(X, state0))
    lengths = np.array([3, 7, 1, 6])
    mask = np.arange(X.shape[1]) < lengths[:, None]
    assert_agree(ours(m, X, lengths=lengths), net(X, lengths=lengths), mask)
    assert_agree(ours(m, X, state0, lengths), net(X, state0, lengths), mask)
    # the same model from NumPy arrays, with the stack's shape given and checked
    m2 = fio.from_torch_state_dict(sd, cell=cell, backend=backend, num_layers=num_layers,
                                   bidirectional=bidirectional)
    for k in m.param_names:
        np.testing.assert_array_equal(m2.params[k], m.params[k], err_msg=k)
    # and back: the same torch network (biases folded into bias_ih for "sum" cells)
    back = fio.to_torch_state_dict(m)
    assert set(back) == set(sd)
    net2 = torch_net(cell, num_layers, bidirectional, seed=9)
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    Yt, st = net(X, state0)
    Y2, st2 = net2(X, state0)
    assert diff(Y2, Yt) < TOL and all(diff(a, b) < TOL for a, b in zip(st2, st))


def test_elman_relu_stack():
    net = torch_net("elman", 2, True, nonlinearity="relu")
    m = fio.from_torch_state_dict(net.state_dict(), activation="relu")
    assert m.activation == "relu"
    X, state0 = problem("elman", 2, True)
    assert_agree(ours(m, X, state0), net(X, state0))
    assert fio.to_torch_state_dict(m).keys() == net.state_dict().keys()


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bias_false(cell):
    """A bias=False module has no bias keys: the model's biases are zeros. Exported, the
    model needs a module with biases (they are zeros)."""
    net = torch_net(cell, 2, True, bias=False)
    assert not any("bias" in k for k in net.rnn.state_dict())
    m = fio.from_torch_state_dict(net.state_dict(), cell=cell)
    biases = [w.name for w in m.cell.weights if w.rows is None]
    for names in m.cell.stack_weight_names(2, True):
        for base, name in zip(m.cell.weight_names, names):
            if base in biases:
                np.testing.assert_array_equal(m.params[name], 0)
    X, state0 = problem(cell, 2, True)
    assert_agree(ours(m, X, state0), net(X, state0))
    net2 = torch_net(cell, 2, True, seed=5)
    net2.load_state_dict({k: torch.from_numpy(v)
                          for k, v in fio.to_torch_state_dict(m).items()}, strict=True)
    assert_agree(ours(m, X, state0), net2(X, state0))


def test_prefixes_and_dropout():
    net = torch_net("gru", 3, False, dropout=0.5)
    state = {**{"enc." + k: v for k, v in net.rnn.state_dict().items()},
             **{"out." + k: v for k, v in net.linear.state_dict().items()},
             "enc_other.weight_ih_l7": torch.zeros(2)}              # outside the prefix
    m = fio.from_torch_state_dict(state, cell="gru", rnn_prefix="enc.", linear_prefix="out.",
                                  dropout=0.5)
    assert (m.num_layers, m.bidirectional, m.dropout) == (3, False, 0.5)
    net.eval()                                                # no dropout in torch either
    X, state0 = problem("gru", 3, False)
    assert_agree(ours(m, X, state0), net(X, state0))
    sd = fio.to_torch_state_dict(m, rnn_prefix="", linear_prefix="head.")
    assert set(sd) == set(net.rnn.state_dict()) | {"head.weight", "head.bias"}
    # rnn_prefix "": every key is under it; the linear ones are not torch.nn.GRU names
    m2 = fio.from_torch_state_dict(sd, cell="gru", rnn_prefix="", linear_prefix="head.")
    assert m2.num_layers == 3
    with pytest.raises(ValueError, match="dropout"):
        fio.from_torch_state_dict(state, cell="gru", rnn_prefix="enc.", linear_prefix="out.",
                                  dropout=1.0)


# ---------------------------------------------------------------------------------------------
# Refused state dicts

def _sd(cell="lstm", num_layers=2, bidirectional=True, **kw):
    return state_dict(torch_net(cell, num_layers, bidirectional, **kw))


def test_proj_size_refused():
    sd = _sd(proj_size=3)
    assert any("weight_hr" in k for k in sd)
    with pytest.raises(ValueError, match=r"proj_size > 0 .*weight_hr_l0"):
        fio.from_torch_state_dict(sd, cell="lstm")


@pytest.mark.parametrize("given,match", [
    ({"num_layers": 1}, r"num_layers=1, but the state holds a torch.nn.LSTM of 2 layer"),
    ({"num_layers": 3}, r"num_layers=3, but .* 2 layer"),
    ({"bidirectional": False}, r"bidirectional=False, but the state holds a bidirectional"),
    ({"num_layers": 0}, "num_layers must be a positive integer"),
    ({"num_layers": 2.0}, "num_layers must be a positive integer"),
    ({"bidirectional": 1}, "bidirectional must be True or False"),
])
def test_given_shape_must_agree(given, match):
    with pytest.raises((TypeError, ValueError), match=match):
        fio.from_torch_state_dict(_sd(), cell="lstm", **given)


def test_unidirectional_given_bidirectional():
    with pytest.raises(ValueError, match="bidirectional=True, but .* unidirectional"):
        fio.from_torch_state_dict(_sd(bidirectional=False), cell="lstm", bidirectional=True)


def _without(sd, word):
    return {k: v for k, v in sd.items() if word not in k}


@pytest.mark.parametrize("change,match", [
    # a whole layer gone: layers 0 and 2 only
    (lambda s: _without(s, "_l1"), r"layers \[1\] are missing"),
    # one direction of one layer gone
    (lambda s: _without(s, "_l1_reverse"), r"missing \['rnn.weight_ih_l1_reverse'"),
    (lambda s: _without(s, "weight_hh_l2"), r"missing \['rnn.weight_hh_l2'"),
    # one layer's biases gone (the biases are all there or none)
    (lambda s: _without(s, "bias_ih_l1"), r"missing \['rnn.bias_ih_l1'.*all together"),
    (lambda s: _without(s, "linear.weight"), r"missing \['linear.weight'\]"),
    (lambda s: {**s, "rnn.weight_ih_l01": s["rnn.weight_ih_l1"]}, "weight_ih_l01"),
    (lambda s: {**s, "rnn.weight_ih_l1": s["rnn.weight_ih_l1"][:, :-1]},
     r"weight_ih_l1'\] must have shape \(20, 10\)"),
    (lambda s: {**s, "rnn.weight_ih_l0_reverse": s["rnn.weight_ih_l1"]},
     r"weight_ih_l0_reverse'\] must have shape \(20, 3\)"),
    (lambda s: {**s, "rnn.weight_hh_l2_reverse": s["rnn.weight_ih_l1"]},
     r"weight_hh_l2_reverse'\] must have shape \(20, 5\)"),
    (lambda s: {**s, "rnn.bias_hh_l1": s["rnn.bias_hh_l1"][:-1]}, r"bias_hh_l1'\] must"),
    (lambda s: {**s, "linear.weight": s["linear.weight"][:, :5]}, r"\(O, 2H\) with H = 5"),
    (lambda s: {**s, "rnn.weight_hh_l1": s["rnn.weight_hh_l1"] * np.nan}, "NaN"),
])
def test_bad_stack_state_dicts(change, match):
    sd = change(_sd(num_layers=3))
    with pytest.raises(ValueError, match=match):
        fio.from_torch_state_dict(sd, cell="lstm")
