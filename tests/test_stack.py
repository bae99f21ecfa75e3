"""Deep and bidirectional networks (fastrnn/stack.py, fastrnn.stack_loss_and_grad, the
models' num_layers / bidirectional / dropout) for every cell: finite differences (float64)
of every gradient for L in {1, 2, 3} x D in {1, 2}, with and without lengths, both targets;
the gradient given fixed dropout masks; the two backends; PyTorch autograd on
nn.RNN/LSTM/GRU(num_layers=2, bidirectional=True) + nn.Linear with packed sequences;
dropout's semantics; padded batches against each sequence alone; bad input.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn.cells import get_cell
from fastrnn.init import init_params

CELL_NAMES = ["elman", "lstm", "gru"]
OPTIONS = {"elman": ("tanh",), "lstm": (True,), "gru": ()}
MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
N, T, I, H, O = 3, 5, 2, 3, 2
LENGTHS = np.array([5, 2, 4])


def problem(name, L, D, output="linear", target="sequence", seed=0, dtype=np.float64):
    """(X, Y, state0, weights, W_y, b_y) of a random stack (weights scaled up a little so
    that the gates are not all near their linear range)."""
    rng = np.random.default_rng(seed)
    cell = get_cell(name)
    weights = []
    for k in range(L * D):
        p = init_params(I if k < D else D * H, H, O, cell=cell, rng=seed * 100 + k,
                        dtype="float64")
        weights.append(tuple((1.5 * p[n]).astype(dtype) for n in cell.weight_names))
    X = rng.standard_normal((N, T, I)).astype(dtype)
    if output == "softmax":
        Y = rng.integers(0, O, size=(N, T) if target == "sequence" else (N,))
    else:
        Y = rng.standard_normal((N, T, O) if target == "sequence" else (N, O)).astype(dtype)
    state0 = tuple(0.5 * rng.standard_normal((L * D, N, H)).astype(dtype)
                   for _ in cell.states)
    W_y = rng.standard_normal((D * H, O)).astype(dtype)
    b_y = rng.standard_normal(O).astype(dtype)
    return X, Y, state0, weights, W_y, b_y


def stack_lg(name, prob, D, backend="cython", **kw):
    X, Y, state0, weights, W_y, b_y = prob
    return fastrnn.stack_loss_and_grad(name, X, Y, state0, weights, W_y, b_y, OPTIONS[name],
                                       bidirectional=D == 2, backend=backend, **kw)


def check_finite_differences(name, prob, D, rng, samples=4, eps=1e-6, tol=2e-7, **kw):
    """Central differences at `samples` random entries of every array that has a gradient
    (every weight of every layer and direction, W_y, b_y, X, the initial states)."""
    loss, grads = stack_lg(name, prob, D, input_grads=True, **kw)
    X, Y, state0, weights, W_y, b_y = prob
    cell = get_cell(name)
    targets = [(w, grads["layers"][k][n]) for k, ws in enumerate(weights)
               for w, n in zip(ws, cell.weight_names)]
    targets += [(W_y, grads["W_y"]), (b_y, grads["b_y"]), (X, grads["X"])]
    targets += [(s, grads[a]) for s, a in zip(state0, cell.state_args)]
    worst = 0.0
    for array, grad in targets:
        assert grad.shape == array.shape
        for _ in range(samples):
            idx = tuple(int(rng.integers(0, s)) for s in array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = stack_lg(name, prob, D, **kw)[0]
            array[idx] = old - eps
            down = stack_lg(name, prob, D, **kw)[0]
            array[idx] = old
            fd = (up - down) / (2 * eps)
            err = abs(fd - grad[idx]) / max(1.0, abs(fd))
            worst = max(worst, err)
    assert worst < tol, worst
    return loss


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_finite_differences(name, L, D, target, with_lengths):
    output = "softmax" if (L + D) % 2 else "linear"        # both outputs, across the grid
    prob = problem(name, L, D, output, target, seed=L * 10 + D)
    check_finite_differences(name, prob, D, np.random.default_rng(L + D), output=output,
                             target=target, lengths=LENGTHS if with_lengths else None)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_finite_differences_given_dropout_masks(name):
    L, D = 3, 2
    rng = np.random.default_rng(5)
    masks = [(rng.random((N, T, D * H)) < 0.6) / 0.6 for _ in range(L - 1)]
    prob = problem(name, L, D, seed=3)
    with_masks = check_finite_differences(name, prob, D, rng, dropout_masks=masks,
                                          lengths=LENGTHS)
    without = stack_lg(name, prob, D, lengths=LENGTHS)[0]
    assert with_masks != without                     # the masks do act


@pytest.mark.parametrize("name", CELL_NAMES)
def test_one_layer_stack_is_the_cell(name):
    """L = D = 1 through the stack equals the cell's fused loss_and_grad."""
    X, Y, state0, weights, W_y, b_y = prob = problem(name, 1, 1, target="last")
    for lengths in (None, LENGTHS):
        loss, g = stack_lg(name, prob, 1, target="last", lengths=lengths, input_grads=True)
        ref, r = fastrnn.cell_loss_and_grad(name, X, Y, tuple(s[0] for s in state0),
                                            weights[0], W_y, b_y, OPTIONS[name],
                                            target="last", lengths=lengths, input_grads=True)
        assert abs(loss - ref) < 1e-13
        for n in get_cell(name).weight_names:
            np.testing.assert_allclose(g["layers"][0][n], r[n], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(g["X"], r["X"], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(g["h0"][0], r["h0"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_backends_agree(name, target, dtype, tol):
    prob = problem(name, 2, 2, target=target, dtype=dtype, seed=7)
    kw = dict(target=target, lengths=LENGTHS, input_grads=True, return_state=True)
    a = stack_lg(name, prob, 2, backend="numpy", **kw)
    b = stack_lg(name, prob, 2, backend="cython", **kw)
    assert abs(a[0] - b[0]) <= tol * max(1, abs(a[0]))
    for ga, gb in zip(a[1]["layers"], b[1]["layers"]):
        for n in ga:
            np.testing.assert_allclose(ga[n], gb[n], rtol=tol, atol=tol)
    for n in ("W_y", "b_y", "X", "h0"):
        np.testing.assert_allclose(a[1][n], b[1][n], rtol=tol, atol=tol)
    for sa, sb in zip(a[2], b[2]):
        np.testing.assert_allclose(sa, sb, rtol=tol, atol=tol)
    X, Y, state0, weights, W_y, b_y = prob
    pa = fastrnn.stack_predict(name, X, state0, weights, W_y, b_y, OPTIONS[name],
                               bidirectional=True, backend="numpy", lengths=LENGTHS)
    pb = fastrnn.stack_predict(name, X, state0, weights, W_y, b_y, OPTIONS[name],
                               bidirectional=True, backend="cython", lengths=LENGTHS)
    np.testing.assert_allclose(pa[0], pb[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(pa[1], pb[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_padded_batch_equals_each_sequence_alone(name):
    """With lengths, every sequence's outputs, final states and loss gradient contribution
    are those of the sequence run alone at its own length (both directions, two layers)."""
    X, Y, state0, weights, W_y, b_y = problem(name, 2, 2, seed=11)
    Yh, S, final = fastrnn.stack_predict(name, X, state0, weights, W_y, b_y, OPTIONS[name],
                                         bidirectional=True, lengths=LENGTHS)
    for n, length in enumerate(LENGTHS):
        alone = fastrnn.stack_predict(name, X[n:n + 1, :length],
                                      tuple(s[:, n:n + 1] for s in state0), weights, W_y,
                                      b_y, OPTIONS[name], bidirectional=True)
        np.testing.assert_allclose(Yh[n, :length], alone[0][0], rtol=1e-12, atol=1e-13)
        for f, fa in zip(final, alone[2]):
            np.testing.assert_allclose(f[:, n], fa[:, 0], rtol=1e-12, atol=1e-13)


# ---- PyTorch autograd ------------------------------------------------------------------------

def torch_stack(torch, name, weights, W_y, b_y, L, D):
    """nn.RNN/LSTM/GRU(num_layers=L, bidirectional=D == 2) + nn.Linear holding the weights."""
    cell = get_cell(name)
    cls = getattr(torch.nn, cell.torch_mode)
    rnn = cls(weights[0][0].shape[0], H, num_layers=L, bidirectional=D == 2,
              batch_first=True).double()
    with torch.no_grad():
        for k, w in enumerate(weights):
            sfx = f"_l{k // D}" + ("_reverse" if k % D else "")
            w = dict(zip(cell.weight_names, w))
            getattr(rnn, "weight_ih" + sfx).copy_(torch.from_numpy(w["W_x"].T.copy()))
            getattr(rnn, "weight_hh" + sfx).copy_(torch.from_numpy(w["W_s"].T.copy()))
            getattr(rnn, "bias_ih" + sfx).copy_(torch.from_numpy(w["b"]))
            getattr(rnn, "bias_hh" + sfx).copy_(torch.from_numpy(w["b_s"]) if "b_s" in w
                                                else torch.zeros(w["b"].shape))
    lin = torch.nn.Linear(D * H, O).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W_y.T.copy()))
        lin.bias.copy_(torch.from_numpy(b_y))
    return rnn, lin


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_matches_torch_two_layer_bidirectional(name, target, with_lengths):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    L, D = 2, 2
    lengths = LENGTHS if with_lengths else None
    X, Y, state0, weights, W_y, b_y = prob = problem(name, L, D, target=target, seed=21)
    loss, g, final = stack_lg(name, prob, D, target=target, lengths=lengths,
                              input_grads=True, return_state=True)

    rnn, lin = torch_stack(torch, name, weights, W_y, b_y, L, D)
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    s0 = [torch.from_numpy(s.copy()).requires_grad_(True) for s in state0]
    inp = x if lengths is None else pack_padded_sequence(
        x, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False)
    out, hn = rnn(inp, tuple(s0) if name == "lstm" else s0[0])
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n = hn[0] if name == "lstm" else hn
    if target == "last":
        Z = lin(torch.cat([h_n[-2], h_n[-1]], dim=1))           # each direction's final
        tloss = ((Z - torch.from_numpy(Y)) ** 2).mean()
    else:
        Z = lin(out)
        mask = torch.ones(N, T, 1, dtype=torch.float64) if lengths is None else \
            torch.from_numpy((np.arange(T) < lengths[:, None])[..., None].astype(float))
        tloss = (((Z - torch.from_numpy(Y)) ** 2) * mask).sum() / (mask.sum() * O)
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-12
    cell = get_cell(name)
    worst = 0.0
    for k in range(L * D):
        sfx = f"_l{k // D}" + ("_reverse" if k % D else "")
        ref = {"W_x": getattr(rnn, "weight_ih" + sfx).grad.T,
               "W_s": getattr(rnn, "weight_hh" + sfx).grad.T}
        if cell.torch_bias == "sum":
            ref["b"] = getattr(rnn, "bias_ih" + sfx).grad
        else:
            ref["b"] = getattr(rnn, "bias_ih" + sfx).grad
            ref["b_s"] = getattr(rnn, "bias_hh" + sfx).grad
        for n, r in ref.items():
            np.testing.assert_allclose(g["layers"][k][n], r.numpy(), rtol=1e-9, atol=1e-11)
            worst = max(worst, np.abs(g["layers"][k][n] - r.numpy()).max())
    np.testing.assert_allclose(g["W_y"], lin.weight.grad.T.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g["b_y"], lin.bias.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(g["X"], x.grad.numpy(), rtol=1e-9, atol=1e-11)
    for s, a in zip(s0, cell.state_args):
        np.testing.assert_allclose(g[a], s.grad.numpy(), rtol=1e-9, atol=1e-11)
    for f, t in zip(final, hn if name == "lstm" else (hn,)):
        np.testing.assert_allclose(f, t.detach().numpy(), rtol=1e-12, atol=1e-13)
    assert worst < 1e-11


# ---- models, fit and dropout -----------------------------------------------------------------

def test_dropout_masks_are_inverted_and_seeded():
    from fastrnn.stack import dropout_masks
    a = dropout_masks(np.random.default_rng(0), 0.3, 50, 40, 20, 3, np.dtype(np.float32))
    b = dropout_masks(np.random.default_rng(0), 0.3, 50, 40, 20, 3, np.dtype(np.float32))
    assert len(a) == 2
    for m, m2 in zip(a, b):
        assert np.array_equal(m, m2)
        assert set(np.unique(m)) == {np.float32(0), np.float32(1 / 0.7)}
        assert abs(m.mean() - 1) < 0.03                       # expected activation unchanged
        assert abs((m == 0).mean() - 0.3) < 0.02
    assert dropout_masks(np.random.default_rng(0), 0.0, 5, 4, 2, 3, np.dtype("f8")) is None


@pytest.mark.parametrize("name", CELL_NAMES)
def test_dropout_only_in_training(name):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 6, 2))
    Y = rng.standard_normal((8, 6, 1))
    m = MODELS[name](2, 4, 1, num_layers=2, bidirectional=True, dropout=0.5, dtype="float64")
    plain = MODELS[name].from_params(m.params, **{**m.hyperparameters(), "dropout": 0.0})
    np.testing.assert_array_equal(m.forward(X)[0], plain.forward(X)[0])
    np.testing.assert_array_equal(m.predict(X, target="last"), plain.predict(X, target="last"))
    assert m.loss_and_grad(X, Y)[0] == plain.loss_and_grad(X, Y)[0]     # no rng: no dropout
    dropped = m.loss_and_grad(X, Y, dropout_rng=np.random.default_rng(3))[0]
    assert dropped != plain.loss_and_grad(X, Y)[0]
    assert dropped == m.loss_and_grad(X, Y, dropout_rng=np.random.default_rng(3))[0]


@pytest.mark.parametrize("name", CELL_NAMES)
def test_fit_with_dropout_is_bit_identical_per_seed(name):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 8, 3)).astype(np.float32)
    Y = (X.sum(-1, keepdims=True).cumsum(1) * 0.1).astype(np.float32)
    runs = []
    for seed in (0, 0, 1):
        m = MODELS[name](3, 8, 1, num_layers=2, bidirectional=True, dropout=0.3)
        h = m.fit(X, Y, epochs=3, batch_size=16, progress=False, seed=seed)
        runs.append((m.params, [e["loss"] for e in h.epochs]))
    assert all(np.array_equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert runs[0][1] == runs[1][1]
    assert runs[0][1] != runs[2][1]                  # another seed: other masks (and order)
    assert runs[0][1][-1] < runs[0][1][0]            # it trains


@pytest.mark.parametrize("name", CELL_NAMES)
def test_deep_model_end_to_end(name):
    """The model's params, forward, loss_and_grad, predict and step for L = 2, D in {1, 2},
    against the functional layer on the same weights."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 5, 2))
    for bi in (False, True):
        m = MODELS[name](2, 4, 3, num_layers=2, bidirectional=bi, dtype="float64", seed=1)
        D = 2 if bi else 1
        assert m.params["W_y"].shape == (D * 4, 3)
        names = m.cell.stack_weight_names(2, bi)
        assert sorted(m.params) == sorted([n for ns in names for n in ns] + ["W_y", "b_y"])
        if bi:
            assert "W_x_l1_reverse" in m.params and m.params["W_x_l1"].shape[0] == 8
        Y, S, state = m.forward(X, return_state=True)
        assert S.shape == (3, 5, D * 4)
        h = state[0] if isinstance(state, tuple) else state
        assert h.shape == (2 * D, 3, 4)
        np.testing.assert_allclose(m.predict(X), Y)
        if not bi:                                 # streaming equals forward, step by step
            hs = None
            for t in range(5):
                y, hs = m.step(X[:, t], hs)
                np.testing.assert_allclose(y, Y[:, t], rtol=1e-12, atol=1e-13)
            y1, _ = m.step(X[0, 0])
            assert y1.shape == (3,)
        loss, grads = m.loss_and_grad(X, rng.standard_normal((3, 3)), target="last",
                                      input_grads=True)
        assert set(grads) == set(m.params) | {"X"} | set(m.cell.state_args)
        assert grads[m.cell.state_args[0]].shape == (2 * D, 3, 4)


def test_lstm_state_tuples_of_layers():
    m = fastrnn.LSTM(2, 4, 1, num_layers=3, dtype="float64")
    X = np.random.default_rng(0).standard_normal((2, 6, 2))
    _, _, (h, c) = m.forward(X, return_state=True)
    assert h.shape == c.shape == (3, 2, 4)
    Y2, _, (h2, c2) = m.forward(X[:, 3:], (h * 0 + m.forward(X[:, :3], return_state=True)[2][0],
                                           m.forward(X[:, :3], return_state=True)[2][1]),
                                return_state=True)
    np.testing.assert_allclose(h2, h, rtol=1e-12, atol=1e-13)     # chunks carry (h, c)
    np.testing.assert_allclose(c2, c, rtol=1e-12, atol=1e-13)


def test_tbptt_with_layers():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 12, 2)).astype(np.float32)
    Y = X[..., :1].cumsum(1).astype(np.float32)
    for cls in (fastrnn.ElmanRNN, fastrnn.LSTM, fastrnn.GRU):
        m = cls(2, 6, 1, num_layers=2)
        h = m.fit(X, Y, epochs=2, tbptt=4, lengths=np.full(16, 12) - np.arange(16) % 5,
                  progress=False)
        assert all(np.isfinite(e["loss"]) for e in h.epochs)


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "half", float("nan")])
def test_bad_dropout(value):
    with pytest.raises((ValueError, TypeError), match="dropout"):
        fastrnn.GRU(2, 3, 1, num_layers=2, dropout=value)


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_bad_num_layers(value):
    with pytest.raises((ValueError, TypeError), match="num_layers"):
        fastrnn.LSTM(2, 3, 1, num_layers=value)


def test_bad_bidirectional():
    with pytest.raises(TypeError, match="bidirectional"):
        fastrnn.ElmanRNN(2, 3, 1, bidirectional="yes")


@pytest.mark.parametrize("name", CELL_NAMES)
def test_bad_initial_state_shapes(name):
    m = MODELS[name](2, 3, 1, num_layers=2, bidirectional=True, dtype="float64")
    X = np.zeros((4, 5, 2))
    n_states = len(m.cell.states)

    def h0(shape):
        s = np.zeros(shape)
        return s if n_states == 1 else (s, np.zeros((4, 4, 3)))

    for shape in [(4, 3), (2, 4, 3), (4, 5, 3), (4, 4, 2)]:
        with pytest.raises(ValueError, match=r"h0 must have shape \(L\*D, N, H\)"):
            m.forward(X, h0(shape))


def test_step_refuses_bidirectional():
    m = fastrnn.GRU(2, 3, 1, bidirectional=True)
    with pytest.raises(ValueError, match="step.*unidirectional"):
        m.step(np.zeros(2, np.float32))


def test_tbptt_refuses_bidirectional():
    m = fastrnn.ElmanRNN(2, 3, 1, bidirectional=True)
    X = np.zeros((4, 6, 2), np.float32)
    with pytest.raises(ValueError, match="tbptt"):
        m.fit(X, np.zeros((4, 6, 1), np.float32), tbptt=2, progress=False)


def test_functional_bad_layers():
    X, Y, state0, weights, W_y, b_y = problem("gru", 2, 2)
    with pytest.raises(TypeError, match="L\\*D"):
        fastrnn.stack_loss_and_grad("gru", X, Y, state0, weights[:3], W_y, b_y,
                                    bidirectional=True)
    bad = list(weights)
    bad[2] = (bad[2][0][:3],) + bad[2][1:]           # layer 1 reads D*H = 6 features
    with pytest.raises(ValueError, match="W_x_l1 must have shape"):
        fastrnn.stack_loss_and_grad("gru", X, Y, state0, bad, W_y, b_y, bidirectional=True)
    with pytest.raises(ValueError, match="W_y must have shape"):
        fastrnn.stack_loss_and_grad("gru", X, Y, state0, weights, W_y[:3], b_y,
                                    bidirectional=True)
    with pytest.raises(ValueError, match=r"dropout_masks\[0\] must have shape"):
        fastrnn.stack_loss_and_grad("gru", X, Y, state0, weights, W_y, b_y,
                                    bidirectional=True, dropout_masks=[np.ones((N, T, 3))])


def test_state_grad_norms_refused_for_stacks():
    m = fastrnn.ElmanRNN(2, 3, 1, num_layers=2, dtype="float64")
    with pytest.raises(ValueError, match="state_grad_norms"):
        m.loss_and_grad(np.zeros((2, 3, 2)), np.zeros((2, 3, 1)), state_grad_norms=True)
