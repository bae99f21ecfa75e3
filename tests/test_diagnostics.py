"""Gradient-flow diagnostics: the reported norms are the true ||dLoss/ds_t||."""
import numpy as np
import pytest

import fastrnn
from fastrnn import diagnostics, tasks
from conftest import make_problem


@pytest.mark.parametrize("target", ["last", "sequence"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_state_gradient_norms_equal_h0_gradients_of_suffixes(target, activation, backend):
    """dLoss/ds_t is the gradient with respect to h0 of the rest of the sequence started
    from s_t (plus, for per-step targets, the terms of steps <= t, which do not depend on
    s_t except step t's own output). Checked against elman_loss_and_grad's dh0, itself
    checked by finite differences."""
    N, T, I, H, O = 3, 7, 2, 5, 2
    p = make_problem(N, T, I, H, O, target=target, seed=5)
    kw = dict(activation=activation, target=target, backend=backend)
    _, grads = fastrnn.elman_loss_and_grad(**p, **kw, state_grad_norms=True)
    norms = grads["state_grad_norms"]
    S = fastrnn.elman_forward(p["X"], p["h0"], p["W_x"], p["W_s"], p["b"],
                              activation=activation, backend=backend)
    for t in range(T - 1):
        Y = p["Y"] if target == "last" else p["Y"][:, t + 1:]
        q = dict(p, X=p["X"][:, t + 1:], h0=S[:, t], Y=Y)
        _, g = fastrnn.elman_loss_and_grad(**q, **kw, input_grads=True)
        dh = g["h0"]
        if target == "sequence":
            # the suffix loss is a mean over T-1-t steps, the full one over T; and step t's
            # own output adds dZ_t W_y^T
            dh = dh * (T - 1 - t) / T
            Z = S[:, t] @ p["W_y"] + p["b_y"]
            dh = dh + (2 * (Z - p["Y"][:, t]) / (N * T * O)) @ p["W_y"].T
        np.testing.assert_allclose(norms[:, t], np.linalg.norm(dh, axis=1), rtol=1e-9)


def test_gradient_flow_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    N, T, I, H, O = 4, 12, 3, 6, 2
    m = fastrnn.ElmanRNN(I, H, O, dtype="float64", seed=2)
    p = make_problem(N, T, I, H, O, target="last", seed=3)
    flow = diagnostics.gradient_flow(m, p["X"], p["Y"], target="last")
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.params.items()}
    X = torch.tensor(p["X"])
    s = torch.zeros(N, H, dtype=torch.float64)
    states = []
    for t in range(T):
        s = torch.tanh(X[:, t] @ P["W_x"] + s @ P["W_s"] + P["b"])
        s.retain_grad()
        states.append(s)
    loss = torch.mean((s @ P["W_y"] + P["b_y"] - torch.tensor(p["Y"])) ** 2)
    loss.backward()
    want = np.array([st.grad.norm(dim=1).mean().item() for st in states])[::-1]
    np.testing.assert_allclose(flow, want, rtol=1e-10)


def test_gradient_flow_vanishes_for_a_contractive_recurrence():
    m = fastrnn.ElmanRNN(1, 16, 2, output="softmax", seed=0, dtype="float64",
                         spectral_radius=0.5)
    X, Y = tasks.latch(32, 40)
    flow = diagnostics.gradient_flow(m, X.astype(np.float64), Y)
    assert flow.shape == (40,)
    assert flow[30] < 1e-6 * flow[0]
    bound = diagnostics.jacobian_bound(m, np.arange(40))
    # the measured decay never beats the bound's rate (up to the first step's scale)
    assert (flow[1:] / flow[0] <= bound[1:] * (1 + 1e-9)).all()


def test_recurrence_summary():
    m = fastrnn.ElmanRNN(2, 8, 1, init="orthogonal", activation="sigmoid", dtype="float64")
    s = diagnostics.recurrence_summary(m)
    assert s["spectral_radius"] == pytest.approx(1.0, rel=1e-9)
    assert s["largest_singular_value"] == pytest.approx(1.0, rel=1e-9)
    assert s["gamma"] == pytest.approx(0.25, rel=1e-9)
    np.testing.assert_allclose(diagnostics.jacobian_bound(m, [0, 1, 2]), [1, 0.25, 0.0625])


def test_plots_return_figures(tmp_path):
    pytest.importorskip("matplotlib")
    m = fastrnn.ElmanRNN(1, 8, 2, output="softmax")
    X, Y = tasks.latch(16, 20)
    h = m.fit(X, Y, target="last", epochs=3, progress=False, validation_data=(X, Y))
    fig = diagnostics.plot_gradient_flow({"a": diagnostics.gradient_flow(m, X, Y)},
                                         bounds={"bound": diagnostics.jacobian_bound(
                                             m, np.arange(20))})
    fig.savefig(tmp_path / "flow.png")
    fig2 = diagnostics.plot_history(h)
    fig2.savefig(tmp_path / "history.png")
    assert (tmp_path / "flow.png").stat().st_size > 1000
    assert len(fig2.axes[0].lines) == 2


def test_lag_command_quick(tmp_path):
    from fastrnn.apps import lag
    rows = lag.main(["--task", "two_sequence", "--settings", "elman/orth+clip", "--lags", "4",
                     "--seeds", "2", "--budget", "2000", "--jobs", "1",
                     "--out", str(tmp_path / "lag.png"), "--json", str(tmp_path / "l.json")])
    assert rows[0]["lag"] == 4 and (rows[0]["cell"], rows[0]["setting"]) == ("elman", "orth+clip")
    assert rows[0]["success"] == 1.0                     # lag 4 is easy with clipping
    assert (tmp_path / "lag.png").exists() and (tmp_path / "l.json").exists()
