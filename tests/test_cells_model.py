"""fastrnn.LSTM and fastrnn.GRU through the public model API, wherever ElmanRNN is tested:

- lengths: a padded batch gives what each sequence gives alone (states, outputs, final
  states, loss and every gradient);
- truncated BPTT (fit's tbptt) carries the whole state, (h, c) for the LSTM: each chunk
  starts from the full forward pass's state at the chunk border;
- step() is forward() one step at a time (batch and single-sequence forms, (h, c) tuples);
- fit learns a small task; the same seed gives bit-identical weights;
- gradients of model.loss_and_grad against finite differences;
- initialisation: the LSTM's forget_bias and chrono, and each scheme applied per gate block.
"""
import numpy as np
import pytest

import fastrnn
from cells_common import (CELL_IDS, CELLS, MODELS, STATES, WEIGHTS, as_tuple, assert_close,
                          make_problem, model_for, model_state0)
from fastrnn import train as train_module
from fastrnn.init import init_params
from test_gated_reference import check_fd, numerical_gradient

BACKENDS = ("cython", "numpy")


def make_model(cell, forget_gate=True, *args, **kw):
    if cell == "lstm":
        kw.setdefault("forget_gate", forget_gate)
    return MODELS[cell](*args, **kw)


def delayed_copy(n=128, T=15, delay=2, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, T, 1)).astype(dtype)
    Y = np.zeros_like(X)
    Y[:, delay:] = X[:, :-delay]
    return X, Y


# ---------------------------------------------------------------------------------------------
# Variable lengths

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "sequence"),
                                            ("linear", "last"), ("softmax", "last")])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_padded_batch_equals_each_sequence_alone(cell, forget_gate, output, target, backend):
    lengths = np.array([3, 1, 5, 4])
    N, T, I, H, O = 4, 5, 3, 2, 3
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=17)
    m = model_for(cell, forget_gate, p, output, backend)
    h0 = model_state0(cell, p)
    Y, Hs, last = m.forward(p["X"], h0, lengths=lengths, return_state=True)
    loss, grads, last2 = m.loss_and_grad(p["X"], p["Y"], h0, target, lengths=lengths,
                                         return_state=True, input_grads=True)
    assert isinstance(last, tuple) == isinstance(last2, tuple) == (cell == "lstm")
    for a, b in zip(as_tuple(last), as_tuple(last2)):
        np.testing.assert_array_equal(a, b)
    weights = lengths / lengths.sum() if target == "sequence" else np.full(N, 1 / N)
    want_loss, want = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for n, L in enumerate(lengths):
        X_n = p["X"][n:n + 1, :L]
        Y_n = p["Y"][n:n + 1, :L] if target == "sequence" else p["Y"][n:n + 1]
        h0_n = model_state0(cell, p, slice(n, n + 1))
        Y_alone, Hs_alone, last_n = m.forward(X_n, h0_n, return_state=True)
        assert_close(Y[n, :L], Y_alone[0], 1e-12, "outputs")
        assert_close(Hs[n, :L], Hs_alone[0], 1e-12, "states")
        np.testing.assert_array_equal(Hs[n, L:], np.broadcast_to(Hs[n, L - 1],
                                                                 Hs[n, L:].shape))
        for s, s_n in zip(as_tuple(last), as_tuple(last_n)):
            assert_close(s[n], s_n[0], 1e-12, "final state")
        l_n, g_n = m.loss_and_grad(X_n, Y_n, h0_n, target, input_grads=True)
        want_loss += weights[n] * l_n
        for k in WEIGHTS[cell] + ("W_y", "b_y"):
            want[k] += weights[n] * g_n[k]
        want["X"][n, :L] = weights[n] * g_n["X"][0]
        for k in STATES[cell]:
            want[k][n] = weights[n] * g_n[k][0]
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert set(grads) == set(want) == set(m.params) | {"X"} | set(STATES[cell])
    for k in grads:
        assert_close(grads[k], want[k], 1e-10, k)


@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_padding_does_not_change_training(cell, forget_gate):
    X, Y = delayed_copy(n=32, T=8)
    Xp, Yp = X.copy(), Y.copy()
    Xp[:, 6:], Yp[:, 6:] = 100.0, -100.0
    a, b = (make_model(cell, forget_gate, 1, 8, 1, seed=0) for _ in range(2))
    a.fit(X[:, :6], Y[:, :6], epochs=2, progress=False)
    b.fit(Xp, Yp, epochs=2, lengths=np.full(32, 6), progress=False)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Truncated BPTT

def spy_loss_and_grad(monkeypatch):
    """Record the (X, Y, state0, lengths) of every loss_and_grad call fit's steps make (on
    the model's lean training path), state0 as the model's loss_and_grad takes it."""
    real = fastrnn.model.RecurrentModel._train_loss_and_grad
    calls = []

    def spy(self, X, Y, state, target, lengths, *args):
        calls.append((X, Y, None if state is None else self._state_out(state), lengths))
        return real(self, X, Y, state, target, lengths, *args)

    monkeypatch.setattr(fastrnn.model.RecurrentModel, "_train_loss_and_grad", spy)
    return calls


@pytest.mark.parametrize("target, ragged", [("sequence", False), ("sequence", True),
                                            ("last", True)])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_tbptt_chunks_carry_the_state(monkeypatch, cell, forget_gate, target, ragged):
    """With tbptt=k each chunk starts from the state (h; or h and c) the full forward pass has
    at the chunk border, and its loss is that of the chunk run alone from that state."""
    N, T, k = 6, 12, 5
    X, Y = (a.astype(np.float64) for a in delayed_copy(n=N, T=T))
    lengths = np.array([12, 7, 5, 11, 2, 10]) if ragged else None
    if target == "last":
        Y = Y[np.arange(N), lengths - 1]
    m = make_model(cell, forget_gate, 1, 6, 1, seed=0, dtype="float64")
    weights = tuple(m.params[w] for w in WEIGHTS[cell])
    states = as_tuple(fastrnn.cell_forward(cell, X, None, weights, m._options(),
                                           lengths=lengths))
    calls = spy_loss_and_grad(monkeypatch)
    steps = list(train_module._batch_steps(m, X, Y, lengths, target, k))
    calls = list(calls)                       # the steps' calls (not the checks' below)
    assert len(steps) == len(calls)
    L = np.full(N, T) if lengths is None else lengths
    expected_chunks = []
    for t0 in range(0, T, k):
        alive = L > t0
        rows = np.flatnonzero(alive & (L <= t0 + k) if target == "last" else alive)
        if rows.size:
            expected_chunks.append((t0, rows))
    assert len(calls) == len(expected_chunks) >= 2
    for (loss, _), (Xc, Yc, h0, lc), (t0, rows) in zip(steps, calls, expected_chunks):
        t1 = min(t0 + k, T)
        np.testing.assert_array_equal(Xc, X[rows, t0:t1])
        assert isinstance(h0, tuple) == (cell == "lstm")
        for s0, S in zip(as_tuple(h0), states):
            want = np.zeros((rows.size, 6)) if t0 == 0 else S[rows, t0 - 1]
            assert_close(s0, want, 1e-12, "carried state")
        want_loss, _ = m.loss_and_grad(Xc, Yc, h0, target, lengths=lc)
        assert loss == want_loss
        full, _ = fastrnn.cell_loss_and_grad(
            cell, X[rows, t0:t1], Yc, tuple(np.zeros((rows.size, 6)) if t0 == 0 else
                                            S[rows, t0 - 1] for S in states),
            weights, m.params["W_y"], m.params["b_y"],
            m._options(), target=target, lengths=lc, backend="numpy")
        assert loss == pytest.approx(full, rel=1e-12)


@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_tbptt_equals_full_bptt_when_chunk_covers_sequence(cell, forget_gate):
    X, Y = delayed_copy(n=32, T=10)
    a, b = (make_model(cell, forget_gate, 1, 8, 1, seed=0) for _ in range(2))
    a.fit(X, Y, epochs=2, progress=False)
    b.fit(X, Y, epochs=2, progress=False, tbptt=10)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fit_with_lengths_and_tbptt_learns(cell, target):
    rng = np.random.default_rng(0)
    X, Y = delayed_copy(n=64, T=12)
    lengths = rng.integers(3, 13, size=64)
    Yl = Y if target == "sequence" else Y[np.arange(64), lengths - 1]
    m = make_model(cell, True, 1, 16, 1, seed=0)
    h = m.fit(X, Yl, epochs=30, lengths=lengths, target=target, tbptt=4, lr=0.02,
              progress=False, validation_data=(X, Yl, lengths))
    assert h.epochs[0]["steps"] > 2 * 2                  # chunks: several steps per batch
    assert h["loss"][-1] < h["loss"][0] / 3
    assert h["val_loss"][-1] < h["val_loss"][0] / 3


# ---------------------------------------------------------------------------------------------
# step()

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_step_streams_like_forward(cell, forget_gate, output, backend):
    N, T, I, H, O = 2, 7, 3, 5, 4
    m = make_model(cell, forget_gate, I, H, O, output=output, dtype="float64",
                   backend=backend, seed=2)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, I))
    h0 = tuple(0.5 * rng.standard_normal((N, H)) for _ in STATES[cell])
    h0 = h0 if cell == "lstm" else h0[0]
    for start in (None, h0):
        Y, S, last = m.forward(X, start, return_state=True)
        h = start
        for t in range(T):
            y, h = m.step(X[:, t], h)
            assert isinstance(h, tuple) == (cell == "lstm")
            assert y.shape == (N, O) and all(s.shape == (N, H) for s in as_tuple(h))
            np.testing.assert_allclose(y, Y[:, t], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(as_tuple(h)[0], S[:, t], rtol=1e-12, atol=1e-15)
        for a, b in zip(as_tuple(h), as_tuple(last)):           # c too, for the LSTM
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    # a batch of one as unbatched vectors: x (I,), h (H,) or (h (H,), c (H,))
    h1 = None
    for t in range(T):
        y1, h1 = m.step(X[1, t], h1)
    Y, _, last = m.forward(X[1:], return_state=True)
    assert y1.shape == (O,)
    assert all(s.shape == (H,) for s in as_tuple(h1))
    np.testing.assert_allclose(y1, Y[0, -1], rtol=1e-12, atol=1e-15)
    for a, b in zip(as_tuple(h1), as_tuple(last)):
        np.testing.assert_allclose(a, b[0], rtol=1e-12, atol=1e-15)
    # forward's final state continues with step
    _, _, mid = m.forward(X[:, :4], return_state=True)
    Y, _ = m.forward(X)
    y, _ = m.step(X[:, 4], mid)
    np.testing.assert_allclose(y, Y[:, 4], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="x must have 3"):
        m.step(np.zeros(4))


def test_lstm_step_state_entries_may_be_none():
    m = fastrnn.LSTM(2, 3, 1, dtype="float64")
    x = np.ones((4, 2))
    c = np.full((4, 3), 0.3)
    y, (h, c1) = m.step(x, (None, c))
    y2, (h2, c2) = m.step(x, (np.zeros((4, 3)), c))
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(c1, c2)
    y3, _ = m.step(x, (None, None))
    np.testing.assert_array_equal(y3, m.step(x)[0])


# ---------------------------------------------------------------------------------------------
# fit, determinism, model gradients

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_fit_learns(cell, forget_gate, backend):
    X, Y = delayed_copy()
    m = make_model(cell, forget_gate, 1, 16, 1, backend=backend, seed=1)
    h = m.fit(X, Y, epochs=20, lr=0.02, progress=False)
    assert len(h) == 20 and h["loss"][-1] < h["loss"][0] / 10
    e = h.epochs[-1]
    assert e["steps"] == 4 and e["skipped_steps"] == 0 and e["grad_norm"] > 0
    assert m.optimizer_ is not None


@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_same_seed_same_weights_bit_for_bit(cell, forget_gate):
    X, Y = delayed_copy(n=64)
    runs = []
    for _ in range(2):
        m = make_model(cell, forget_gate, 1, 8, 1, seed=3)
        h = m.fit(X, Y, epochs=3, progress=False, tbptt=6)
        runs.append((m.params, h["loss"]))
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    assert runs[0][1] == runs[1][1]
    m = make_model(cell, forget_gate, 1, 8, 1, seed=3)
    m.fit(X, Y, epochs=3, progress=False, tbptt=6, seed=99)         # other shuffling
    assert not np.array_equal(m.params["W_s"], runs[0][0]["W_s"])
    a, b, c = (make_model(cell, forget_gate, 2, 4, 3, seed=s) for s in (7, 7, 8))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W_s"], c.params["W_s"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_model_gradients_match_finite_differences(cell, forget_gate, backend):
    m = make_model(cell, forget_gate, 3, 4, 2, dtype="float64", seed=3, backend=backend)
    rng = np.random.default_rng(11)
    X, Y = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))

    def loss():
        return m.loss_and_grad(X, Y)[0]

    _, grads = m.loss_and_grad(X, Y)
    assert set(grads) == set(m.params)
    for name, value in m.params.items():
        check_fd(grads[name], numerical_gradient(loss, value, rng, 24), name)


# ---------------------------------------------------------------------------------------------
# Initialisation

def test_lstm_forget_bias_is_added_to_b_f():
    H = 6
    base = fastrnn.LSTM(3, H, 2, seed=4, forget_bias=0.0)
    default = fastrnn.LSTM(3, H, 2, seed=4)
    shifted = fastrnn.LSTM(3, H, 2, seed=4, forget_bias=2.5)
    for other, bias in ((default, 1.0), (shifted, 2.5)):
        for k in base.params:
            if k != "b":
                np.testing.assert_array_equal(other.params[k], base.params[k], err_msg=k)
        b0, b = base.params["b"], other.params["b"]
        np.testing.assert_array_equal(b[H:2 * H], b0[H:2 * H] + np.float32(bias))
        np.testing.assert_array_equal(np.delete(b, np.s_[H:2 * H]), np.delete(b0, np.s_[H:2 * H]))
    # PyTorch's nn.LSTM init: forget_bias=0 with "uniform", every parameter in 1/sqrt(H)
    assert all(np.abs(v).max() <= 1 / np.sqrt(H) for v in base.params.values())
    for scheme in ("glorot", "orthogonal", "identity"):
        b = fastrnn.LSTM(3, H, 2, init=scheme, forget_bias=0.75).params["b"]
        np.testing.assert_array_equal(b[H:2 * H], 0.75)
        np.testing.assert_array_equal(np.delete(b, np.s_[H:2 * H]), 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T_max", [3, 10, 1000])
def test_lstm_chrono_init(T_max, dtype):
    H = 64
    m = fastrnn.LSTM(3, H, 2, seed=5, chrono=T_max, dtype=dtype)
    b = m.params["b"]
    b_i, b_f = b[:H], b[H:2 * H]
    top = np.log(T_max - 1)
    eps = 1e-6
    assert b_f.min() >= -eps and b_f.max() <= top + eps
    assert b_f.max() > 0.9 * top                          # spread over the range
    np.testing.assert_array_equal(b_i, -b_f)
    assert m.params["b"].dtype == np.dtype(dtype)
    # drawn after the scheme: everything else is the scheme's (as with forget_bias=0), and
    # forget_bias is not added on top
    ref = fastrnn.LSTM(3, H, 2, seed=5, forget_bias=0.0, dtype=dtype)
    for k in ref.params:
        if k != "b":
            np.testing.assert_array_equal(m.params[k], ref.params[k], err_msg=k)
    np.testing.assert_array_equal(b[2 * H:], ref.params["b"][2 * H:])
    other = fastrnn.LSTM(3, H, 2, seed=5, chrono=T_max, forget_bias=5.0, dtype=dtype)
    np.testing.assert_array_equal(other.params["b"], b)
    p = init_params(3, H, 2, "glorot", rng=1, cell="lstm", chrono=T_max)
    assert (p["b"][H:2 * H] >= -eps).all() and (p["b"][H:2 * H] <= top + eps).all()
    np.testing.assert_array_equal(p["b"][:H], -p["b"][H:2 * H])
    np.testing.assert_array_equal(p["b"][2 * H:], 0)


def blocks(W, H):
    return [W[:, j * H:(j + 1) * H] for j in range(W.shape[1] // H)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_schemes_apply_per_gate_block(cell, dtype):
    I, H, O = 24, 32, 5
    G = 4 if cell == "lstm" else 3
    tol = 1e-5 if dtype == "float32" else 1e-12
    # glorot: each (rows, H) block bounded by sqrt(6 / (rows + H)) and filling it
    p = make_model(cell, True, I, H, O, init="glorot", dtype=dtype, seed=1).params
    for name, rows in (("W_x", I), ("W_s", H)):
        assert p[name].shape == (rows, G * H)
        a = np.sqrt(6 / (rows + H))
        for j, B in enumerate(blocks(p[name], H)):
            assert np.abs(B).max() <= a * (1 + 1e-6) and np.abs(B).max() > 0.9 * a, (name, j)
    a = np.sqrt(6 / (H + O))
    assert np.abs(p["W_y"]).max() <= a * (1 + 1e-6) and np.abs(p["W_y"]).max() > 0.9 * a
    zero_biases = ["b_y", "b", "b_s"] if cell == "gru" else ["b_y"]
    for name in zero_biases:
        np.testing.assert_array_equal(p[name], 0)
    # orthogonal: every H x H block of W_s orthogonal, and the blocks differ; W_x glorot
    p = make_model(cell, True, I, H, O, init="orthogonal", dtype=dtype, seed=2).params
    W_s = p["W_s"].astype(np.float64)
    bl = blocks(W_s, H)
    assert len(bl) == G
    for j, B in enumerate(bl):
        np.testing.assert_allclose(B.T @ B, np.eye(H), atol=tol, err_msg=f"block {j}")
        np.testing.assert_allclose(B @ B.T, np.eye(H), atol=tol, err_msg=f"block {j}")
    for j in range(1, G):
        assert np.abs(bl[j] - bl[0]).max() > 0.1
    a = np.sqrt(6 / (I + H))
    assert np.abs(p["W_x"]).max() <= a * (1 + 1e-6)
    # identity: every block of W_s is I
    p = make_model(cell, True, I, H, O, init="identity", dtype=dtype, seed=3).params
    for B in blocks(p["W_s"], H):
        np.testing.assert_array_equal(B, np.eye(H))
    # uniform (PyTorch's default): every parameter in U(-1/sqrt(H), 1/sqrt(H)) but the
    # LSTM's b_f, shifted by forget_bias
    p = make_model(cell, True, I, H, O, init="uniform", dtype=dtype, seed=4).params
    k = 1 / np.sqrt(H)
    for name, v in p.items():
        v = np.delete(v, np.s_[H:2 * H]) if (cell == "lstm" and name == "b") else v
        assert np.abs(v).max() <= k * (1 + 1e-6), name
    # the model's draws are init_params' draws
    q = init_params(I, H, O, "uniform", rng=4, dtype=dtype, cell=cell)
    assert list(q) == list(p)
    for name in q:
        np.testing.assert_array_equal(q[name], p[name], err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_save_load_round_trip(cell, tmp_path):
    m = make_model(cell, False, 3, 4, 2, output="softmax", dtype="float64", seed=3)
    m.save(tmp_path / "m.npz")
    m2 = fastrnn.load(tmp_path / "m.npz")
    assert type(m2) is type(m) and m2.hyperparameters() == m.hyperparameters()
    for k in m.params:
        np.testing.assert_array_equal(m2.params[k], m.params[k])


# ---------------------------------------------------------------------------------------------
# Threads: the compiled kernels release the GIL and keep per-thread workspaces

@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_models_in_threads_match_sequential(cell, forget_gate):
    from test_threads import run_in_threads

    def train_one(seed):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((32, 12, 3)).astype(np.float32)
        Y = np.cumsum(X, axis=1)[..., :2] / 5
        m = make_model(cell, forget_gate, 3, 16, 2, seed=seed)
        h = m.fit(X, Y, epochs=2, batch_size=8, progress=False, tbptt=5)
        return m.params, h["loss"]

    seeds = [(s,) for s in range(4)]
    sequential = [train_one(*a) for a in seeds]
    threaded = run_in_threads(train_one, seeds)
    for (p1, l1), (p2, l2) in zip(sequential, threaded):
        assert l1 == l2
        for k in p1:
            np.testing.assert_array_equal(p1[k], p2[k])
