"""The Cython backend agrees with the NumPy reference on random problems.

float64 to 1e-10 and float32 to 1e-4, relative to each array's largest entry. An exploding
float32 problem (identity activation, |W_s| > 1) loses more digits than that in *both*
backends, so in float32 each array may also be off by twice the NumPy twin's own error against
float64: the Cython result must be about as accurate as the twin's, not equal to its rounding.
"""
import numpy as np
from hypothesis import given, settings, strategies as st

import fastrnn
from conftest import ACTIVATIONS, assert_agree, assert_close, float64_of, make_problem

RTOL = {np.float64: 1e-10, np.float32: 1e-4}

problems = st.fixed_dictionaries({
    "N": st.integers(1, 6), "T": st.integers(1, 20), "I": st.integers(1, 7),
    "H": st.integers(1, 9), "O": st.integers(1, 6),
    "dtype": st.sampled_from([np.float64, np.float32]),
    "activation": st.sampled_from(ACTIVATIONS),
    "output": st.sampled_from(["linear", "softmax"]),
    "target": st.sampled_from(["sequence", "last"]),
    "scale": st.floats(0.1, 1.5),
    "seed": st.integers(0, 2**32 - 1),
    "ragged": st.booleans(),          # variable lengths
})


def build(c):
    p = make_problem(c["N"], c["T"], c["I"], c["H"], c["O"], dtype=c["dtype"],
                     output=c["output"], target=c["target"], seed=c["seed"], scale=c["scale"])
    lengths = None
    if c["ragged"]:
        lengths = np.random.default_rng(c["seed"]).integers(1, c["T"] + 1, size=c["N"])
    return p, RTOL[c["dtype"]], lengths


@settings(max_examples=150, deadline=None)
@given(problems)
def test_loss_and_grad_agree(c):
    p, rtol, lengths = build(c)
    kw = dict(activation=c["activation"], output=c["output"], target=c["target"],
              input_grads=True, lengths=lengths)
    loss_c, g_c = fastrnn.elman_loss_and_grad(**p, **kw, backend="cython")
    loss_n, g_n = fastrnn.elman_loss_and_grad(**p, **kw, backend="numpy")
    loss_64, g_64 = fastrnn.elman_loss_and_grad(**float64_of(p), **kw, backend="numpy")
    assert isinstance(loss_c, float) and isinstance(loss_n, float)
    # a cross-entropy near 0 is a difference of two log-sum-exps of the logits' size, so
    # float32 knows it to ~1e-7 absolute, not relative (hypothesis found 3.9e-4 off by 1.1e-4
    # relative): compared on the scale of 1 below that
    loss_slack = 2 * abs(loss_n - loss_64) if c["dtype"] == np.float32 else 0.0
    assert abs(loss_c - loss_n) <= rtol * max(abs(loss_n), 1.0) + loss_slack
    assert set(g_c) == set(g_n)
    # a gradient tiny by cancellation (float32 softmax b_y: 5e-5 from terms ~1/N, off by
    # 0.2% in one seen case) is compared on the scale of the problem's gradients; with a
    # saturated softmax every gradient is tiny by cancellation of p - onehot, terms of size
    # ~1 (float64 dW_x of 7e-13, 1.3e-15 apart, growth 1.4^12), so there on the scale of 1
    scale = max(float(np.max(np.abs(g))) for g in g_n.values())
    floor = 1e-3 * (max(scale, 1.0) if c["output"] == "softmax" else scale)
    for name in g_n:
        assert_agree(g_c[name], g_n[name], g_64[name], rtol, name, floor=floor)


@settings(max_examples=100, deadline=None)
@given(problems)
def test_forward_predict_backward_agree(c):
    p, rtol, lengths = build(c)
    rec = {k: p[k] for k in ("X", "h0", "W_x", "W_s", "b")}
    act = c["activation"]
    S_c = fastrnn.elman_forward(**rec, activation=act, backend="cython", lengths=lengths)
    S_n = fastrnn.elman_forward(**rec, activation=act, backend="numpy", lengths=lengths)
    rec64 = float64_of(rec)
    S_64 = fastrnn.elman_forward(**rec64, activation=act, backend="numpy", lengths=lengths)
    assert_agree(S_c, S_n, S_64, rtol, "S")

    Y_c, S2_c = fastrnn.elman_predict(**rec, W_y=p["W_y"], b_y=p["b_y"], activation=act,
                                      output=c["output"], backend="cython", lengths=lengths)
    Y_n, _ = fastrnn.elman_predict(**rec, W_y=p["W_y"], b_y=p["b_y"], activation=act,
                                   output=c["output"], backend="numpy", lengths=lengths)
    Y_64, _ = fastrnn.elman_predict(**rec64, W_y=p["W_y"].astype(np.float64),
                                    b_y=p["b_y"].astype(np.float64), activation=act,
                                    output=c["output"], backend="numpy", lengths=lengths)
    assert_agree(Y_c, Y_n, Y_64, rtol, "Y")
    np.testing.assert_array_equal(S2_c, S_c)

    dS = np.random.default_rng(c["seed"]).standard_normal(S_n.shape).astype(c["dtype"])
    g_c = fastrnn.elman_backward(**rec, S=S_n, dS=dS, activation=act, backend="cython",
                                 lengths=lengths)
    g_n = fastrnn.elman_backward(**rec, S=S_n, dS=dS, activation=act, backend="numpy",
                                 lengths=lengths)
    g_64 = fastrnn.elman_backward(**rec64, S=S_n.astype(np.float64), dS=dS.astype(np.float64),
                                  activation=act, backend="numpy", lengths=lengths)
    for name in g_n:
        assert_agree(g_c[name], g_n[name], g_64[name], rtol, name)


def test_long_sequence_agrees():
    """T = 500 with a contractive recurrence: no drift between the backends over many steps."""
    p = make_problem(4, 500, 3, 16, 2, seed=5, scale=0.9)
    for dtype, rtol in RTOL.items():
        q = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in p.items()}
        l_c, g_c = fastrnn.elman_loss_and_grad(**q, backend="cython")
        l_n, g_n = fastrnn.elman_loss_and_grad(**q, backend="numpy")
        assert abs(l_c - l_n) <= rtol * abs(l_n)
        for name in g_n:
            assert_close(g_c[name], g_n[name], rtol, name)


def test_outputs_keep_dtype(backend):
    for dtype in (np.float32, np.float64):
        p = make_problem(2, 3, 2, 3, 2, dtype=dtype)
        loss, grads = fastrnn.elman_loss_and_grad(**p, backend=backend, input_grads=True)
        assert all(g.dtype == dtype for g in grads.values())
        Y, S = fastrnn.elman_predict(*(p[k] for k in ("X", "h0", "W_x", "W_s", "b", "W_y",
                                                      "b_y")), backend=backend)
        assert Y.dtype == dtype and S.dtype == dtype


def test_exploding_states_agree():
    """Identity activation with a spectral radius > 1: states and gradients grow like
    1.2**T. dW_s must still agree (a form of it that subtracts cross-sequence pairs cancels
    catastrophically here)."""
    for dtype, rtol in RTOL.items():
        p = make_problem(6, 57, 3, 6, 7, dtype=dtype, target="last", seed=41, scale=1.5)
        l_c, g_c = fastrnn.elman_loss_and_grad(**p, activation="identity", target="last")
        l_n, g_n = fastrnn.elman_loss_and_grad(**p, activation="identity", target="last",
                                               backend="numpy")
        assert np.abs(g_n["W_s"]).max() > 1e8           # it really did explode
        assert abs(l_c - l_n) <= rtol * abs(l_n)
        for name in g_n:
            assert_close(g_c[name], g_n[name], rtol, name)


def test_reused_workspace_never_leaks_between_calls():
    """loss_and_grad reuses its internal buffers for calls of the same shapes: a run of
    such calls with other data, targets, lengths and h0 must each match the reference."""
    rng = np.random.default_rng(0)
    for i, (target, ragged) in enumerate([("sequence", False), ("last", True),
                                          ("sequence", True), ("last", False)] * 2):
        p = make_problem(3, 9, 2, 5, 3, target=target, seed=i)
        lengths = rng.integers(1, 10, size=3) if ragged else None
        kw = dict(target=target, lengths=lengths, input_grads=True)
        l_c, g_c = fastrnn.elman_loss_and_grad(**p, **kw)
        l_n, g_n = fastrnn.elman_loss_and_grad(**p, **kw, backend="numpy")
        assert abs(l_c - l_n) <= 1e-12 * abs(l_n)
        for name in g_n:
            assert_close(g_c[name], g_n[name], 1e-10, name)
