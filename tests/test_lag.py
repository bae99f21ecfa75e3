"""`fastrnn lag` and `fastrnn gradflow`: the success criteria, the sweep's bookkeeping
(budget, seeds, success detection, the table), and the gradient flow of the gated cells
against PyTorch autograd."""
import json

import numpy as np
import pytest

import fastrnn
from fastrnn import diagnostics, tasks
from fastrnn.apps import gradflow, lag


# ---------------------------------------------------------------------------------------------
# The success criteria, on stand-in models whose predictions we choose

class TwoSequenceOracle:
    """forward() gives one-hot probabilities of the right next symbols of task 2a, except
    where told to be wrong."""
    dtype = np.dtype("float32")

    def __init__(self, p, wrong_last=(), wrong_trivial=False):
        self.p, self.wrong_last, self.wrong_trivial = p, wrong_last, wrong_trivial

    def forward(self, X):
        p = self.p
        first = X[:, 0].argmax(axis=1)
        labels = np.tile(np.arange(1, p + 1) - 1, (len(X), 1))
        labels[:, -1] = first
        for kind in self.wrong_last:                  # x (p - 1) or y (p)
            rows = first == kind
            labels[rows, -1] = 2 * p - 1 - kind       # the other one
        if self.wrong_trivial:
            labels[:, 0] = (labels[:, 0] + 1) % (p + 1)
        probs = np.zeros((len(X), p, p + 1), np.float32)
        np.put_along_axis(probs, labels[:, :, None], 1.0, axis=2)
        return probs, None


@pytest.mark.parametrize("p", [3, 10, 100])
def test_two_sequence_criteria(p):
    # the labels the oracle uses are the generator's
    X, Y = tasks.two_sequence_lag(50, p, seed=3)
    np.testing.assert_array_equal(TwoSequenceOracle(p).forward(X)[0].argmax(axis=2), Y)
    for last_only in (False, True):
        assert tasks.two_sequence_lag_solved(TwoSequenceOracle(p), p, last_only=last_only)
        # the last symbol wrong for either kind of sequence: not solved
        for kind in (p - 1, p):
            oracle = TwoSequenceOracle(p, wrong_last=(kind,))
            assert not tasks.two_sequence_lag_solved(oracle, p, last_only=last_only)
    # right, but only by a hair: passes H&S's argmax test, not the confident one
    hair = TwoSequenceOracle(p)
    forward = hair.forward
    hair.forward = lambda X: (0.5 * forward(X)[0] + 0.5 / (p + 1), None)
    assert tasks.two_sequence_lag_solved(hair, p, last_only=True)
    assert tasks.two_sequence_lag_solved(hair, p, last_only=True, confidence=0.5)
    assert not tasks.two_sequence_lag_solved(hair, p, last_only=True, confidence=0.9)
    assert tasks.two_sequence_lag_solved(TwoSequenceOracle(p), p, confidence=0.9)
    # a trivial prediction wrong: fails every-step scoring only
    oracle = TwoSequenceOracle(p, wrong_trivial=True)
    assert not tasks.two_sequence_lag_solved(oracle, p)
    assert tasks.two_sequence_lag_solved(oracle, p, last_only=True)


class AddingOracle:
    """forward() predicts the adding problem's target plus `offset` at every step (plus
    `bad` on the first `n_bad` sequences)."""
    dtype = np.dtype("float32")

    def __init__(self, offset=0.0, bad=0.0, n_bad=0):
        self.offset, self.bad, self.n_bad = offset, bad, n_bad

    def forward(self, X, lengths=None):
        marked = X[:, :, 1] == 1
        target = 0.5 + (X[:, :, 0] * marked).sum(axis=1) / 4 + self.offset
        target[:self.n_bad] += self.bad
        return np.repeat(target[:, None, None], X.shape[1], axis=1), None


def test_adding_criterion_and_mse():
    T = 30
    r = tasks.adding_problem_test(AddingOracle(), T)
    assert r["solved"] and r["fraction"] == 1 and r["mse"] < 1e-12
    r = tasks.adding_problem_test(AddingOracle(offset=0.039), T)
    assert r["solved"] and r["mse"] == pytest.approx(0.039 ** 2, rel=1e-4)
    # one sequence of the 2,000 off by 0.05: not solved (H&S: each of 2,000 right)
    r = tasks.adding_problem_test(AddingOracle(bad=0.05, n_bad=1), T)
    assert not r["solved"] and r["fraction"] == pytest.approx(1 - 1 / 2000)
    assert r["mae"] == pytest.approx(0.05 / 2000, rel=1e-3)
    r = tasks.adding_problem_test(AddingOracle(offset=0.041), T, n_test=100)
    assert not r["solved"] and r["fraction"] == 0


# ---------------------------------------------------------------------------------------------
# The sweep's bookkeeping

def test_every_setting_builds_its_model():
    want = {"elman/plain": ("elman", "tanh"), "elman/orth+clip": ("elman", "tanh"),
            "elman/irnn": ("elman", "relu"), "lstm/bias1": ("lstm", True),
            "lstm/chrono": ("lstm", True), "lstm/1997": ("lstm", False),
            "gru/default": ("gru", None)}
    assert list(lag.SETTINGS) == list(want)
    task = lag.TASKS["two_sequence"]
    H = 8
    for key, (cell, option) in want.items():
        m = lag.SETTINGS[key].model(task, 20, 0, H)
        assert m.cell.name == cell and m.input_size == 21 and m.output_size == 21
        if cell == "elman":
            assert m.activation == option
        if cell == "lstm":
            assert m.forget_gate is option
        b = m.params["b"]
        if key == "elman/plain":
            assert all(np.abs(v).max() <= 0.2 for v in m.params.values())
        if key == "elman/irnn":
            np.testing.assert_array_equal(m.params["W_s"], np.eye(H))
        if key == "elman/orth+clip":
            W = m.params["W_s"].astype(np.float64)
            np.testing.assert_allclose(W @ W.T, np.eye(H), atol=1e-6)
        if key == "lstm/bias1":
            assert 0.6 < b[H:2 * H].mean() < 1.4
        if key == "lstm/chrono":     # T_max = the lag: b_f in [0, log(19)], b_i = -b_f
            assert (b[H:2 * H] >= 0).all() and (b[H:2 * H] <= np.log(19) + 1e-6).all()
            np.testing.assert_allclose(b[:H], -b[H:2 * H])
        if key == "lstm/1997":       # negative input and output gate biases
            assert b[:H].mean() < -0.5 and b[3 * H:].mean() < -0.5
    assert lag.SETTINGS["elman/plain"].clip is None
    assert all(s.clip for k, s in lag.SETTINGS.items() if k != "elman/plain")


def test_fit_until_solved_stops_at_success_and_counts_sequences():
    task = lag.TASKS["two_sequence"]
    model = lag.SETTINGS["gru/default"].model(task, 5, 0, 8)
    r = lag.fit_until_solved(model, "two_sequence", 5, "gru/default", 0, budget=50_000,
                             batch_size=8, check_every=2)
    assert r["solved"] and not r["diverged"] and r["skipped_steps"] == 0
    assert r["sequences"] % 16 == 0 and 0 < r["sequences"] < 50_000
    # training went on until the confident test held, and stopped there
    assert r["solved_confident"]
    assert r["sequences"] <= r["sequences_confident"] == r["sequences_trained"]
    assert tasks.two_sequence_lag_solved(model, 5, last_only=True, confidence=0.9)


def test_budget_is_respected_exactly():
    task = lag.TASKS["adding"]
    for budget in (40, 100):                      # a multiple of a chunk (20), and not
        model = lag.SETTINGS["elman/plain"].model(task, 20, 0, 4)
        r = lag.fit_until_solved(model, "adding", 20, "elman/plain", 0, budget,
                                 batch_size=4, check_every=5)
        assert not r["solved"] and r["sequences"] == budget
        assert not r["solved_confident"] and r["sequences_trained"] == budget


def test_adding_success_is_tested_only_below_the_training_error_gate(monkeypatch):
    """H&S's rule: the 2,000-sequence test runs only once the mean training MSE since the
    last test is below 0.01; with a model that never gets there, never."""
    calls = []
    monkeypatch.setattr(lag.Adding, "solved",
                        lambda self, *a, **k: calls.append(1) or (False, False))
    task = lag.TASKS["adding"]
    model = lag.SETTINGS["elman/plain"].model(task, 10, 0, 4)
    lag.fit_until_solved(model, "adding", 10, "elman/plain", 0, 200, batch_size=10,
                         check_every=2)
    assert calls == []
    assert task.worth_testing(0.009) and not task.worth_testing(0.011)


def test_sweep_seeds_are_reproducible_and_distinct():
    kw = dict(task_lengths={"two_sequence": [4]}, settings=["elman/plain", "gru/default"],
              seeds=2, budgets={"two_sequence": 320}, batch_size=8, hidden=4,
              check_every=5)
    a, b = lag.sweep(**kw), lag.sweep(**kw)
    assert len(a) == 4
    assert [(r["cell"], r["setting"], r["seed"]) for r in a] == [
        ("elman", "plain", 0), ("elman", "plain", 1), ("gru", "default", 0),
        ("gru", "default", 1)]
    for r, s in zip(a, b):
        assert r["sequences"] == s["sequences"] and r["solved"] == s["solved"]
        assert r["flow_end"] == s["flow_end"]
        assert r["sequences"] <= 320 and r["budget"] == 320 and r["loss"] == "last"
        assert (r["sequences"] == 320) or r["solved"]
        assert set(r["flow_init"]) == ({"h", "c"} if r["cell"] == "lstm" else {"h"})
    assert a[0]["flow_init"] != a[1]["flow_init"]       # another seed, another network


def test_summarise_and_table():
    runs = [dict(task="two_sequence", lag=100, cell="lstm", setting="1997", seed=s,
                 loss="last", solved=s < 4, sequences=[1000, 3000, 2000, 9000, 50_000][s],
                 budget=50_000) for s in range(5)]
    runs += [dict(task="adding", lag=100, cell="elman", setting="plain", seed=s,
                  loss="last", solved=False, sequences=300_000, budget=300_000,
                  test_mse=[0.04, 0.05, 0.03][s]) for s in range(3)]
    rows = lag.summarise(runs)
    assert rows[0]["success"] == 0.8 and rows[0]["solved"] == 4 and rows[0]["runs"] == 5
    assert rows[0]["median_sequences_to_success"] == 2500
    assert rows[0]["mean_sequences_to_success"] == 3750
    assert "5,040" in rows[0]["published"]
    assert rows[1]["success"] == 0 and rows[1]["median_sequences_to_success"] is None
    assert rows[1]["median_test_mse"] == 0.04
    text = "\n".join(lag.format_table(rows))
    assert "80% (4/5)" in text and "2,500" in text and ">300,000" in text
    assert "0.0400" in text and "H&S LSTM: 100%" in text
    for r in runs[:5]:                 # the confident test: seeds 0 and 1 only
        r.update(solved_confident=r["seed"] < 2, sequences_confident=2 * r["sequences"])
    row = lag.summarise(runs)[0]
    assert row["confident_success"] == 0.4 and row["confident_median_sequences"] == 4000
    assert "40% (2/5)" in "\n".join(lag.format_table([row]))


def test_published_figures():
    assert "5,040" in lag.published("two_sequence", "lstm", 100)
    assert "0%" in lag.published("two_sequence", "elman", 100)
    assert "78%" in lag.published("two_sequence", "elman", 4)
    assert "74,000" in lag.published("adding", "lstm", 100)
    assert "209,000" in lag.published("adding", "lstm", 500)
    assert "853,000" in lag.published("adding", "lstm", 1000)
    assert lag.published("two_sequence", "gru", 100) == ""


def test_main_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, js = tmp_path / "lag.png", tmp_path / "lag.json"
    rows = lag.main(["--cell", "elman", "gru", "--settings", "elman/plain", "gru/default",
                     "--lags", "3", "--T", "10", "--seeds", "2", "--budget", "160",
                     "--check-every", "5", "--jobs", "1", "--out", str(out),
                     "--json", str(js)])
    text = capsys.readouterr().out
    assert "two_sequence loss: last" in text and "elman/plain" in text and "gru/default" in text
    assert len(rows) == 4 and {r["task"] for r in rows} == {"two_sequence", "adding"}
    data = json.loads(js.read_text())
    assert len(data["runs"]) == 8 and data["table"] == rows
    assert 1000 < out.stat().st_size < 200_000
    # --task adding alone with --lags: the lags are its T (the old interface)
    rows = lag.main(["--task", "adding", "--settings", "gru/default", "--lags", "12",
                     "--seeds", "1", "--budget", "32", "--jobs", "1", "--out", ""])
    assert [(r["task"], r["lag"]) for r in rows] == [("adding", 12)]
    # --loss all: every step scored, and reported
    rows = lag.main(["--task", "2a", "--settings", "elman/orth+clip", "--lags", "3",
                     "--loss", "all", "--seeds", "1", "--budget", "320", "--jobs", "1",
                     "--out", ""])
    assert rows[0]["loss"] == "all" and rows[0]["task"] == "two_sequence"


def test_pool_gives_what_one_process_gives():
    kw = dict(task_lengths={"two_sequence": [3]}, settings=["lstm/1997"], seeds=2,
              budgets={"two_sequence": 96}, batch_size=8, hidden=4, check_every=2)
    a, b = lag.sweep(**kw, jobs=1), lag.sweep(**kw, jobs=2)
    assert [(r["seed"], r["sequences"], r["flow_end"]) for r in a] == \
        [(r["seed"], r["sequences"], r["flow_end"]) for r in b]


# ---------------------------------------------------------------------------------------------
# Gradient flow across cells

def test_gradflow_command(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    res = gradflow.main(["--cell", "elman", "lstm", "lstm/bias1", "gru", "--steps", "8",
                         "--budget", "64", "--out", str(out)])
    assert list(res) == ["elman/orth+clip", "lstm/1997", "lstm/bias1", "gru/default"]
    for key, r in res.items():
        assert set(r["fresh"]) == ({"h", "c"} if key.startswith("lstm") else {"h"})
        assert all(len(f) == 8 for f in r["fresh"].values())
        assert ("bound_fresh" in r) == key.startswith("elman")
    assert 1000 < out.stat().st_size < 200_000
    assert "||dL/dc||" in capsys.readouterr().out


def test_state_flows_are_float64_gradient_flows():
    task = lag.TASKS["two_sequence"]
    m = lag.SETTINGS["lstm/bias1"].model(task, 6, 1, 5)
    X, Y, lengths = lag._probe(task, 6, 1, n=10)
    got = lag.state_flows(m, X, Y, lengths)
    m64 = lag.float64_copy(m)
    for s in ("h", "c"):
        np.testing.assert_allclose(got[s], diagnostics.gradient_flow(m64, X, Y, "last",
                                                                     state=s), rtol=1e-12)
    want = diagnostics.gradient_flow(m, X.astype(np.float32), Y, "last")
    np.testing.assert_allclose(got["h"], want, rtol=1e-3)


def _torch_flows(torch, cell, model, X, Y, output):
    """||dLoss/dh_t|| (and ||dLoss/dc_t||) per step, batch mean, k steps back: an unrolled
    torch.nn.LSTMCell / GRUCell with retain_grad on every state, float64."""
    p = model.params
    N, T, I = X.shape
    H = model.hidden_size
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))       # noqa: E731
    if cell == "gru":
        rnn = torch.nn.GRUCell(I, H).double()
        rnn.bias_hh.data = t(p["b_s"])
    else:
        rnn = torch.nn.LSTMCell(I, H).double()
        b = np.array(p["b"], dtype=np.float64)
        if not model.forget_gate:
            b[H:2 * H] = 1e3                     # sigmoid(1000) = 1.0 exactly: no forgetting
        rnn.bias_hh.data = torch.zeros(4 * H, dtype=torch.float64)
    rnn.weight_ih.data, rnn.weight_hh.data = t(p["W_x"]).T.contiguous(), \
        t(p["W_s"]).T.contiguous()
    rnn.bias_ih.data = t(p["b"]) if cell == "gru" else t(b)
    if cell == "lstm" and not model.forget_gate:
        rnn.weight_ih.data[H:2 * H] = 0
        rnn.weight_hh.data[H:2 * H] = 0
    x = t(X)
    h = torch.zeros(N, H, dtype=torch.float64)
    c = torch.zeros(N, H, dtype=torch.float64)
    hs, cs = [], []
    for step in range(T):
        if cell == "gru":
            h = rnn(x[:, step], h)
        else:
            h, c = rnn(x[:, step], (h, c))
            c.retain_grad()
            cs.append(c)
        h.retain_grad()
        hs.append(h)
    z = h @ t(p["W_y"]) + t(p["b_y"])
    if output == "softmax":
        loss = torch.nn.functional.cross_entropy(z, torch.tensor(Y))
    else:
        loss = torch.mean((z - t(Y).reshape(N, -1)) ** 2)
    loss.backward()
    flow = lambda states: np.array([s.grad.norm(dim=1).mean().item()   # noqa: E731
                                    for s in states])[::-1]
    return {"h": flow(hs), **({"c": flow(cs)} if cell == "lstm" else {})}


@pytest.mark.parametrize("key", ["lstm/bias1", "lstm/chrono", "lstm/1997", "gru/default"])
@pytest.mark.parametrize("task_name", ["two_sequence", "adding"])
def test_gated_gradient_flow_matches_torch_autograd(key, task_name):
    torch = pytest.importorskip("torch")
    task = lag.TASKS[task_name]
    T = 12
    model = lag.float64_copy(lag.SETTINGS[key].model(task, T, 2, 6))
    rng = np.random.default_rng(0)
    for v in model.params.values():               # not the init: something trained-like
        v += 0.3 * rng.standard_normal(v.shape)
    X, Y, _ = lag._probe(task, T, 5, n=7)
    if task_name == "adding":                      # equal lengths: torch unrolls T steps
        X, Y = X[:, :T], Y.astype(np.float64)
    want = _torch_flows(torch, model.cell.name, model, X, Y, task.output)
    for state, w in want.items():
        got = diagnostics.gradient_flow(model, X, Y, "last", state=state)
        np.testing.assert_allclose(got, w, rtol=1e-10, atol=1e-300)
