"""ElmanRNN.fit and its pieces: learning, determinism, clipping, the non-finite policy,
truncated BPTT, variable lengths, validation, callbacks, progress, streaming step()."""
import math

import numpy as np
import pytest

import fastrnn
from fastrnn import train as train_module


def delayed_copy(n=128, T=15, delay=2, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, T, 1)).astype(dtype)
    Y = np.zeros_like(X)
    Y[:, delay:] = X[:, :-delay]
    return X, Y


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rmsprop", "adam"])
def test_fit_learns(optimizer, backend):
    X, Y = delayed_copy()
    lr = {"sgd": 0.3, "adagrad": 0.05, "rmsprop": 0.003, "adam": 0.01}[optimizer]
    m = fastrnn.ElmanRNN(1, 24, 1, backend=backend, seed=1)
    h = m.fit(X, Y, epochs=12, optimizer=optimizer, lr=lr, progress=False)
    assert len(h) == 12 and h["loss"][-1] < h["loss"][0] / 5
    e = h.epochs[-1]
    history_keys = {"epoch", "loss", "val_loss", "val_metric", "grad_norm", "seconds",
                    "samples_per_second", "skipped_steps", "lr", "steps"}
    assert history_keys <= set(e)
    assert e["steps"] == math.ceil(128 / 32) and e["skipped_steps"] == 0
    assert e["samples_per_second"] > 0 and e["grad_norm"] > 0


def test_same_seed_same_weights_bit_for_bit():
    X, Y = delayed_copy()
    runs = []
    for _ in range(2):
        m = fastrnn.ElmanRNN(1, 16, 1, seed=3)
        h = m.fit(X, Y, epochs=3, progress=False)
        runs.append((m.params, h["loss"]))
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    assert runs[0][1] == runs[1][1]
    m = fastrnn.ElmanRNN(1, 16, 1, seed=3)
    m.fit(X, Y, epochs=3, progress=False, seed=99)        # other shuffling
    assert not np.array_equal(m.params["W_s"], runs[0][0]["W_s"])


def test_grad_norm_is_recorded_before_clipping():
    X, Y = delayed_copy(n=32)
    m = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    h = m.fit(X, Y, epochs=1, batch_size=32, clip_norm=1e-3, optimizer="sgd", lr=1.0,
              progress=False, shuffle=False)
    m0 = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    _, g = m0.loss_and_grad(X, Y)
    norm = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in g.values()))
    assert h["grad_norm"][0] == pytest.approx(norm, rel=1e-5)
    # the step taken was clipped to norm 1e-3 (sgd, lr=1): weights moved by exactly that
    moved = math.sqrt(sum(float(np.sum((m.params[k].astype(np.float64) - m0.params[k]) ** 2))
                          for k in g))
    assert moved == pytest.approx(1e-3, rel=1e-3)


def test_clip_value(monkeypatch):
    X, Y = delayed_copy(n=32, dtype="float64")
    m = fastrnn.ElmanRNN(1, 8, 1, seed=0, dtype="float64")
    before = {k: v.copy() for k, v in m.params.items()}
    m.fit(X, Y, epochs=1, batch_size=32, clip_norm=None, clip_value=1e-4, optimizer="sgd",
          lr=1.0, progress=False)
    for k in before:
        assert np.abs(m.params[k] - before[k]).max() <= 1e-4 * (1 + 1e-9)


def nan_on_steps(monkeypatch, bad_steps):
    """Make the loss non-finite on the given (0-based) optimizer steps."""
    # fit calls the model (never a cell's functions), so the fault goes in there
    real = fastrnn.model.RecurrentModel.loss_and_grad
    count = {"n": 0}

    def fake(*args, **kwargs):
        out = real(*args, **kwargs)
        step = count["n"]
        count["n"] += 1
        if step in bad_steps:
            out[1]["W_s"][0, 0] = np.nan
            return (math.nan, *out[1:])
        return out

    monkeypatch.setattr(fastrnn.model.RecurrentModel, "loss_and_grad", fake)


def test_non_finite_steps_are_skipped_and_counted(monkeypatch):
    X, Y = delayed_copy(n=64)
    nan_on_steps(monkeypatch, {1, 2})
    m = fastrnn.ElmanRNN(1, 8, 1, seed=0)
    h = m.fit(X, Y, epochs=2, batch_size=16, progress=False)
    assert h["skipped_steps"] == [2, 0]
    assert all(np.isfinite(v).all() for v in m.params.values())
    assert math.isfinite(h["loss"][0])


def test_too_many_bad_steps_stop_with_weights_intact(monkeypatch):
    X, Y = delayed_copy(n=64)
    nan_on_steps(monkeypatch, set(range(1, 100)))
    m = fastrnn.ElmanRNN(1, 8, 1, seed=0)
    snapshot = {}

    class Snap(fastrnn.Callback):
        pass

    # one good step, then only bad ones
    m_ref = fastrnn.ElmanRNN(1, 8, 1, seed=0)
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        m.fit(X, Y, epochs=5, batch_size=16, progress=False, max_bad_steps=3, shuffle=False)
    # the weights are those after the one good step: finite and not the initial ones
    assert all(np.isfinite(v).all() for v in m.params.values())
    assert not np.array_equal(m.params["W_s"], m_ref.params["W_s"])


def test_overflowing_update_is_rolled_back():
    """A huge learning rate makes the update itself overflow: the step is undone."""
    X, Y = delayed_copy(n=32)
    m = fastrnn.ElmanRNN(1, 8, 1, seed=0)
    before = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(FloatingPointError):
        m.fit(X, Y, epochs=3, batch_size=32, optimizer="sgd", lr=1e38, clip_norm=None,
              progress=False, max_bad_steps=2)
    for k in before:
        assert np.isfinite(m.params[k]).all()


def test_tbptt_equals_full_bptt_when_chunk_covers_sequence():
    X, Y = delayed_copy(n=32, T=10)
    a, b = (fastrnn.ElmanRNN(1, 8, 1, seed=0) for _ in range(2))
    a.fit(X, Y, epochs=2, progress=False)
    b.fit(X, Y, epochs=2, progress=False, tbptt=10)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_tbptt_chunks_carry_state(monkeypatch):
    """With tbptt=k, each chunk starts from the state the previous chunk ended in."""
    X, Y = delayed_copy(n=4, T=12)
    m = fastrnn.ElmanRNN(1, 6, 1, seed=0, dtype="float64")
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    steps = list(train_module._batch_steps(m, X, Y, None, "sequence", 5))
    assert len(steps) == 3                         # chunks of 5, 5, 2 steps
    _, S = m.forward(X)
    p = m.params
    want, _ = fastrnn.elman_loss_and_grad(X[:, 5:10], Y[:, 5:10], S[:, 4], p["W_x"],
                                          p["W_s"], p["b"], p["W_y"], p["b_y"])
    assert steps[1][0] == pytest.approx(want, rel=1e-12)


def test_tbptt_learns_a_long_stream():
    """One long stream cut into 8 sequences of 400 steps, trained with tbptt=20."""
    X, Y = delayed_copy(n=8, T=400, delay=2)
    m = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    h = m.fit(X, Y, epochs=6, batch_size=8, tbptt=20, lr=0.01, progress=False)
    assert h.epochs[0]["steps"] == 20
    assert h["loss"][-1] < h["loss"][0] / 5


@pytest.mark.parametrize("tbptt", [None, 4])
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_fit_with_lengths(target, tbptt):
    rng = np.random.default_rng(0)
    X, Y = delayed_copy(n=64, T=12)
    lengths = rng.integers(3, 13, size=64)
    Yl = Y if target == "sequence" else Y[np.arange(64), lengths - 1]
    m = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    h = m.fit(X, Yl, epochs=15, lengths=lengths, target=target, tbptt=tbptt, lr=0.01,
              progress=False, validation_data=(X, Yl, lengths))
    assert h["loss"][-1] < h["loss"][0] / 3
    assert h["val_loss"][-1] < h["val_loss"][0] / 3


def test_padding_does_not_change_training():
    X, Y = delayed_copy(n=32, T=8)
    lengths = np.full(32, 6)
    Xp, Yp = X.copy(), Y.copy()
    Xp[:, 6:] = 100.0
    Yp[:, 6:] = -100.0
    a, b = (fastrnn.ElmanRNN(1, 8, 1, seed=0, dtype="float32") for _ in range(2))
    a.fit(X[:, :6], Y[:, :6], epochs=2, progress=False)
    b.fit(Xp, Yp, epochs=2, lengths=lengths, progress=False)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-5, atol=1e-6)


def test_softmax_validation_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6, 2)).astype(np.float32)
    y = (X[:, 0, 0] > 0).astype(int)                 # the class is the sign of the first input
    m = fastrnn.ElmanRNN(2, 16, 2, output="softmax", seed=0)
    h = m.fit(X[:150], y[:150], target="last", epochs=30, lr=0.01, progress=False,
              validation_data=(X[150:], y[150:]))
    assert h["val_metric"][-1] > 0.9


def test_early_stopping_restores_best(tmp_path):
    X, Y = delayed_copy(n=64)
    Xv, Yv = delayed_copy(n=32, seed=1)
    m = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    # a learning rate so large that validation loss gets worse after a while
    es = fastrnn.EarlyStopping(patience=2)
    ck = fastrnn.ModelCheckpoint(tmp_path / "best.npz")
    h = m.fit(X, Y, epochs=40, lr=0.3, optimizer="sgd", validation_data=(Xv, Yv),
              callbacks=[es, ck], progress=False, clip_norm=None, max_bad_steps=1000)
    best = int(np.nanargmin(h["val_loss"]))
    if h.stopped_early:
        assert len(h) < 40
    val_now = train_module.evaluate(m, Xv, Yv)[0]
    assert val_now == pytest.approx(h["val_loss"][best], rel=1e-5)
    saved = fastrnn.load(tmp_path / "best.npz")
    for k in m.params:
        np.testing.assert_array_equal(saved.params[k], m.params[k])
    assert fastrnn.read_metadata(tmp_path / "best.npz")["user"]["epoch"] == best + 1


def test_early_stopping_needs_validation_data():
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    with pytest.raises(ValueError, match="needs validation_data"):
        m.fit(X, Y, epochs=2, callbacks=[fastrnn.EarlyStopping()], progress=False)


def test_progress_bar(capsys):
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    m.fit(X, Y, epochs=2)                             # not a terminal: no bar
    assert capsys.readouterr().err == ""
    m.fit(X, Y, epochs=2, progress=True)
    assert "fit" in capsys.readouterr().err
    m.fit(X, Y, epochs=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
    ({"batch_size": 1.5}, TypeError, "batch_size must be a positive integer"),
    ({"clip_norm": -1}, ValueError, "clip_norm must be None or a positive number"),
    ({"clip_value": float("nan")}, ValueError, "clip_value must be None or a positive"),
    ({"tbptt": 0}, ValueError, "tbptt must be a positive integer"),
    ({"optimizer": "lbfgs"}, ValueError, "optimizer must be one of"),
    ({"target": "first"}, ValueError, "target must be one of"),
    ({"validation_data": (np.zeros((2, 3, 1)),)}, TypeError, "validation_data must be"),
    ({"validation_data": (np.zeros((2, 3, 2), np.float32), np.zeros((2, 3, 1), np.float32))},
     ValueError, "X_val must have shape"),
    ({"lengths": [20] * 16}, ValueError, r"lengths must lie in \[1, T\]"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
    ({"weight_decay": "0.1"}, TypeError, "weight_decay must be a real number"),
    ({"decay_biases": "yes"}, TypeError, "decay_biases must be True or False"),
])
def test_fit_bad_arguments(kwargs, exc, match):
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    with pytest.raises(exc, match=match):
        m.fit(X, Y, progress=False, **kwargs)


def test_fit_bad_data():
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    with pytest.raises(TypeError, match="X has dtype float64 but the model has dtype float32"):
        m.fit(X.astype(np.float64), Y, progress=False)
    with pytest.raises(ValueError, match="Y must have shape"):
        m.fit(X, Y[:, :-1], progress=False)
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        m.fit(bad, Y, progress=False)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_fit_weight_decay(cell):
    """weight_decay and decay_biases reach the optimizer fit builds (None: the optimizer's
    default, 0.0: no decay, even for AdamW); decay shrinks the weights."""
    X, Y = delayed_copy(n=32, T=6)
    cls = fastrnn.model.MODELS[cell]

    def train(**kwargs):
        m = cls(1, 4, 1, dtype="float64", seed=2)
        m.fit(X.astype(np.float64), Y.astype(np.float64), epochs=2, progress=False,
              **kwargs)
        return m

    m = train(optimizer="adamw", lr=0.01)
    assert type(m.optimizer_) is fastrnn.optim.AdamW and m.optimizer_.weight_decay == 0.01
    sgd = train(optimizer="sgd", lr=0.1, weight_decay=0.5, decay_biases=True).optimizer_
    assert (sgd.weight_decay, sgd.decay_biases) == (0.5, True)
    adam, adamw0 = train(optimizer="adam"), train(optimizer="adamw", weight_decay=0.0)
    assert adam.optimizer_.weight_decay == 0.0
    for k in adam.params:
        np.testing.assert_array_equal(adamw0.params[k], adam.params[k], err_msg=k)
    plain = train(optimizer="sgd", lr=0.1)
    decayed = train(optimizer="sgd", lr=0.1, weight_decay=0.5)
    for k, p in plain.params.items():
        if p.ndim != 1:
            assert np.linalg.norm(decayed.params[k]) < np.linalg.norm(p), k


def test_fit_weight_decay_with_an_optimizer_instance_is_refused():
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    opt = fastrnn.optim.AdamW(m.params, weight_decay=0.1)
    for kwargs in ({"weight_decay": 0.1}, {"weight_decay": 0.0}, {"decay_biases": True}):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"already built.*{name} cannot be given"):
            m.fit(X, Y, optimizer=opt, progress=False, **kwargs)
    m.fit(X, Y, epochs=1, optimizer=opt, progress=False)         # the defaults: fine
    assert m.optimizer_ is opt and opt.weight_decay == 0.1


@pytest.mark.parametrize("output", ["linear", "softmax"])
def test_step_streams_like_forward(output, backend):
    m = fastrnn.ElmanRNN(3, 5, 4, output=output, dtype="float64", backend=backend)
    X = np.random.default_rng(0).standard_normal((2, 7, 3))
    Y, S = m.forward(X)
    h = None
    for t in range(7):
        y, h = m.step(X[:, t], h)
        np.testing.assert_allclose(y, Y[:, t], rtol=1e-12)
        np.testing.assert_allclose(h, S[:, t], rtol=1e-12)
    h1 = None                                       # batch of one, unbatched vectors
    for t in range(7):
        y1, h1 = m.step(X[0, t], h1)
    assert y1.shape == (4,) and h1.shape == (5,)
    np.testing.assert_allclose(y1, Y[0, -1], rtol=1e-12)
    with pytest.raises(ValueError, match="x must have 3"):
        m.step(np.zeros(4))
    with pytest.raises(ValueError, match="h must have shape"):
        m.step(np.zeros((2, 3)), np.zeros((3, 5)))
