"""ElmanRNN.fit and its pieces: learning, determinism, clipping, the non-finite policy,
truncated BPTT, variable lengths, validation, callbacks, progress, streaming step()."""
import io
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
    # fit calls the model's lean training path (never a cell's functions), so the fault goes
    # in there
    real = fastrnn.model.RecurrentModel._train_loss_and_grad
    count = {"n": 0}

    def fake(*args, **kwargs):
        out = real(*args, **kwargs)
        step = count["n"]
        count["n"] += 1
        if step in bad_steps:
            out[1]["W_s"][0, 0] = np.nan
            return (math.nan, *out[1:])
        return out

    monkeypatch.setattr(fastrnn.model.RecurrentModel, "_train_loss_and_grad", fake)


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


def huge_grads_on_step(monkeypatch, bad_step, largest):
    """Gradients scaled to a largest entry of largest (finite) on the given (0-based)
    optimizer step; returns a dict that receives, at that step, the weights and the
    optimizer's state (of the optimizer the caller puts in it as "opt") just before it."""
    real = fastrnn.model.RecurrentModel._train_loss_and_grad
    count, before = {"n": 0}, {}

    def fake(model, *args, **kwargs):
        loss, grads = real(model, *args, **kwargs)[:2]
        if count["n"] == bad_step:
            before["params"] = {k: v.copy() for k, v in model.params.items()}
            before["state"] = before["opt"].state_dict()
            scale = largest / max(float(np.abs(grads[k]).max()) for k in model.params)
            for k in model.params:
                grads[k] *= scale
                assert np.isfinite(grads[k]).all()      # finite: the step is taken
        count["n"] += 1
        return loss, grads

    monkeypatch.setattr(fastrnn.model.RecurrentModel, "_train_loss_and_grad", fake)
    return before


@pytest.mark.parametrize("case", ["adam", "sgd_momentum", "rmsprop"])
def test_overflowing_update_restores_the_optimizer_state(monkeypatch, case):
    """A step with finite gradients whose update overflows is skipped with the weights and
    the optimizer's state (moments, step count) bit-identical to before it. Adam and
    RMSProp: g*g overflows float32 and only the state goes non-finite (the weights stay
    finite); SGD: the weights overflow and the momentum buffer has absorbed the gradient."""
    X, Y = delayed_copy(n=64)
    m = fastrnn.ElmanRNN(1, 8, 1, seed=0)
    opt, largest = {
        "adam": (lambda p: fastrnn.optim.Adam(p, lr=1e-2), 1e30),
        "sgd_momentum": (lambda p: fastrnn.optim.SGD(p, lr=10.0, momentum=0.9), 1e38),
        "rmsprop": (lambda p: fastrnn.optim.RMSProp(p, lr=1e-3), 1e30),
    }[case]
    opt = opt(m.params)
    before = huge_grads_on_step(monkeypatch, 3, largest)      # the last of 4 steps
    before["opt"] = opt
    h = m.fit(X, Y, epochs=1, batch_size=16, optimizer=opt, clip_norm=None, shuffle=False,
              progress=False)
    assert h["skipped_steps"] == [1] and h["steps"] == [4]
    for k, v in before["params"].items():
        np.testing.assert_array_equal(m.params[k], v)
    after = opt.state_dict()
    assert after.keys() == before["state"].keys() and after["steps"] == 3
    assert after.pop("epoch") == before["state"].pop("epoch") + 1     # the epoch ended
    for k, v in before["state"].items():
        if isinstance(v, np.ndarray):
            assert v.dtype == after[k].dtype
            np.testing.assert_array_equal(after[k], v, err_msg=k)
        else:
            assert after[k] == v, k


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


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_off_a_terminal_is_plain_lines(capsys, monkeypatch):
    """stderr is not a terminal (pytest captures it): progress=None prints plain lines, the
    first and the last epoch and at most one per PROGRESS_SECONDS between, never a bar."""
    X, Y = delayed_copy(n=64)
    m = fastrnn.ElmanRNN(1, 4, 1)
    m.fit(X, Y, epochs=30, batch_size=16)
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err
    lines = err.splitlines()
    assert lines[0].startswith("fit: epoch 1/30: loss ") and "seq/s" in lines[0]
    assert lines[-1].startswith("fit: epoch 30/30: loss ")
    assert len(lines) < 30                          # not one line per (fast) epoch
    # with the interval at 0: a line per epoch, and lines within an epoch
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0.0)
    m.fit(X, Y, epochs=2, batch_size=16, validation_data=(X, Y))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1] for line in lines if "val_loss" in line] == \
        [" epoch 1/2", " epoch 2/2"]
    assert any("32/64 sequences" in line for line in lines)
    assert all(line.startswith("fit: epoch ") for line in lines)


def test_progress_last_line_of_an_early_stop(capsys):
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)

    class StopAt3(fastrnn.Callback):
        def on_epoch_end(self, model, history, logs):
            return logs["epoch"] == 3

    h = m.fit(X, Y, epochs=50, callbacks=[StopAt3()])
    assert h.stopped_early and len(h) == 3
    assert capsys.readouterr().err.splitlines()[-1].startswith("fit: epoch 3/50: loss")


def test_progress_bar(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    m.fit(X, Y, epochs=2, progress=True)            # forced: a bar even off a terminal
    assert "fit" in capsys.readouterr().err
    m.fit(X, Y, epochs=2, progress=False)
    assert capsys.readouterr().err == ""
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    m.fit(X, Y, epochs=3, batch_size=4)             # a terminal: one bar for the whole call
    out = terminal.getvalue()
    assert out.count("fit:   0%") == 1 and "| 0/48 " in out and "48/48" in out
    assert "fit: epoch" not in out


def test_history_reads_like_a_list_of_epochs():
    X, Y = delayed_copy(n=32)
    m = fastrnn.ElmanRNN(1, 4, 1)
    h = m.fit(X, Y, epochs=3, progress=False)
    assert [e["epoch"] for e in h] == [1, 2, 3]           # was: KeyError(0)
    assert list(h) == h.epochs and h[-1] is h.epochs[-1] and h[0]["epoch"] == 1
    assert h.keys() == list(h.epochs[0]) and {"loss", "lr", "val_loss"} <= set(h.keys())
    assert "loss" in h and "accuracy" not in h
    assert h["loss"] == [e["loss"] for e in h.epochs]
    with pytest.raises(KeyError, match="no key 'accuracy'; its keys are"):
        h["accuracy"]
    empty = fastrnn.History()
    assert list(empty) == [] and empty.keys() == [] and empty["loss"] == []


@pytest.mark.parametrize("how", ["name", "object", "optimizer"])
def test_history_lr_is_the_rate_each_epoch_trained_at(how):
    """With CosineLR(2) and lr 0.1 epoch 1 trains at 0.1 and epoch 2 at 0.05 (was recorded
    after the schedule's step: [0.05, 0.0])."""
    X, Y = delayed_copy(n=32)
    m = fastrnn.ElmanRNN(1, 4, 1, seed=0)
    if how == "optimizer":
        opt = fastrnn.optim.SGD(m.params, lr=0.1, schedule=fastrnn.optim.CosineLR(2))
        h = m.fit(X, Y, epochs=2, optimizer=opt, progress=False)
    else:
        schedule = "cosine" if how == "name" else fastrnn.optim.CosineLR(2)
        h = m.fit(X, Y, epochs=2, optimizer="sgd", lr=0.1, lr_schedule=schedule,
                  progress=False)
    assert h["lr"] == pytest.approx([0.1, 0.05], rel=1e-12)
    assert m.optimizer_.lr == pytest.approx(0.0, abs=1e-15)     # after the last epoch


def test_fit_lr_schedule():
    X, Y = delayed_copy(n=32)
    steps = fastrnn.optim.StepLR(2, gamma=0.5)
    m = fastrnn.ElmanRNN(1, 4, 1, seed=0)
    h = m.fit(X, Y, epochs=5, lr=0.02, lr_schedule=steps, progress=False)
    assert h["lr"] == pytest.approx([0.02, 0.02, 0.01, 0.01, 0.005])
    assert m.optimizer_.schedule is steps
    h = m.fit(X, Y, epochs=3, lr=0.02, lr_schedule=lambda e: 1.0 / (1 + e), progress=False)
    assert h["lr"] == pytest.approx([0.02, 0.01, 0.02 / 3])
    for constant in (None, "constant"):
        h = m.fit(X, Y, epochs=2, lr=0.02, lr_schedule=constant, progress=False)
        assert h["lr"] == [0.02, 0.02] and m.optimizer_.schedule is None
    # the same training as an optimizer built with the schedule
    a, b = (fastrnn.ElmanRNN(1, 4, 1, seed=0) for _ in range(2))
    a.fit(X, Y, epochs=3, lr=0.01, lr_schedule="cosine", progress=False)
    b.fit(X, Y, epochs=3, progress=False, optimizer=fastrnn.optim.Adam(
        b.params, lr=0.01, schedule=fastrnn.optim.CosineLR(3)))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("lr_schedule, exc, match", [
    ("linear", ValueError, "lr_schedule must be one of 'constant', 'cosine'; got 'linear'"),
    (0.5, TypeError, "lr_schedule must be None, one of 'constant', 'cosine' or a schedule"),
])
def test_fit_bad_lr_schedule(lr_schedule, exc, match):
    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1)
    with pytest.raises(exc, match=match):
        m.fit(X, Y, lr_schedule=lr_schedule, progress=False)
    with pytest.raises(ValueError, match="lr_schedule cannot be given with an optimizer that "
                                         "is already built"):
        m.fit(X, Y, lr_schedule="cosine", progress=False,
              optimizer=fastrnn.optim.Adam(m.params))


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


# ---------------------------------------------------------------------------------------------
# fit's lean inner path: validated once, then no per-batch checks

@pytest.mark.parametrize("cell,layers,bi,tbptt", [
    (cell, layers, False, tbptt) for cell, layers in [("elman", 1), ("lstm", 1), ("lstm", 2)]
    for tbptt in (None, 4)] + [("gru", 2, True, None)])       # tbptt needs one direction
def test_fit_equals_a_loop_over_the_public_loss_and_grad(cell, layers, bi, tbptt):
    """fit's steps are those of the validated public loss_and_grad with an optimizer, bit
    for bit (same batches, same carried states with truncated BPTT)."""
    from fastrnn.optim import Adam
    cls = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 9, 2))
    Y = rng.standard_normal((12, 9, 1))
    lengths = rng.integers(1, 10, 12)
    fitted = cls(2, 5, 1, num_layers=layers, bidirectional=bi, seed=3, dtype="float64")
    manual = cls(2, 5, 1, num_layers=layers, bidirectional=bi, seed=3, dtype="float64")
    fitted.fit(X, Y, lengths=lengths, epochs=2, batch_size=4, shuffle=False, clip_norm=None,
               tbptt=tbptt, progress=False, lr=0.01)
    opt = Adam(manual.params, lr=0.01)
    for _ in range(2):
        for s in range(0, 12, 4):
            Xb, Yb, lb = X[s:s + 4], Y[s:s + 4], lengths[s:s + 4]
            if tbptt is None:
                opt.step(manual.loss_and_grad(Xb, Yb, lengths=lb)[1])
                continue
            state = None
            for t0 in range(0, 9, tbptt):
                rows = np.flatnonzero(lb > t0)
                if rows.size == 0:
                    continue
                cl = np.minimum(lb[rows] - t0, min(tbptt, 9 - t0))
                cl = None if (cl == min(tbptt, 9 - t0)).all() else cl
                h0 = None if state is None else (
                    tuple(s_[..., rows, :] for s_ in state) if isinstance(state, tuple)
                    else state[..., rows, :])
                loss, grads, last = manual.loss_and_grad(
                    Xb[rows, t0:t0 + tbptt], Yb[rows, t0:t0 + tbptt], h0, lengths=cl,
                    return_state=True)
                opt.step(grads)
                full = tuple(np.zeros_like(x) for x in last) if isinstance(last, tuple) \
                    else np.zeros_like(last)
                if state is not None:
                    full = state
                for s_, l_ in zip(full if isinstance(full, tuple) else (full,),
                                  last if isinstance(last, tuple) else (last,)):
                    s_[..., rows, :] = l_
                state = full
    for name in fitted.params:
        np.testing.assert_array_equal(fitted.params[name], manual.params[name],
                                      err_msg=name)


def test_fit_checks_params_each_epoch():
    """A callback that leaves a parameter unusable stops fit with an error naming it
    (the lean inner path trusts the parameters between these checks)."""
    class Break(fastrnn.Callback):
        def on_epoch_end(self, model, history, logs):
            model.params["W_s"][0, 0] = np.nan
            return False

    X, Y = delayed_copy(n=16)
    m = fastrnn.ElmanRNN(1, 4, 1, seed=0)
    with pytest.raises(ValueError, match="W_s"):
        m.fit(X, Y, epochs=2, progress=False, callbacks=[Break()])

    class Swap(fastrnn.Callback):
        def on_epoch_end(self, model, history, logs):
            model.params["b"] = model.params["b"].astype(np.float64)
            return False

    m = fastrnn.ElmanRNN(1, 4, 1, seed=0)
    with pytest.raises(TypeError, match="'b'.*float32"):
        m.fit(X, Y, epochs=2, progress=False, callbacks=[Swap()])
