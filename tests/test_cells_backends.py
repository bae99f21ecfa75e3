"""The compiled gated cells (fastrnn/cells/_lstm.pyx, _gru.pyx) agree with their NumPy twins
on random problems drawn by hypothesis, through the public functional API: loss_and_grad
with every flag (input_grads, lengths, return_state, state_grad_norms and the LSTM's
cell_grad_norms, initial states given or None), forward, predict and backward.

float64 to 1e-10 and float32 to 1e-4, relative to each array's largest entry (as
tests/test_backends.py does for the Elman cell); in float32 the hypothesis tests also allow
twice the NumPy twin's own error against float64 (conftest.assert_agree: a gradient vanished
through many forget gates is known to fewer digits in both backends).
"""
import numpy as np
from hypothesis import given, settings, strategies as st
from threadpoolctl import threadpool_limits

from conftest import assert_agree, float64_of

from cells_common import (CELLS, STATES, WEIGHTS, as_tuple, assert_close, backward, forward,
                          loss_and_grad, make_problem, predict)

RTOL = {np.float64: 1e-10, np.float32: 1e-4}

problems = st.fixed_dictionaries({
    "cell": st.sampled_from(CELLS),
    "N": st.integers(1, 6), "T": st.integers(1, 16), "I": st.integers(1, 7),
    "H": st.integers(1, 9), "O": st.integers(1, 6),
    "dtype": st.sampled_from([np.float64, np.float32]),
    "output": st.sampled_from(["linear", "softmax"]),
    "target": st.sampled_from(["sequence", "last"]),
    "seed": st.integers(0, 2**32 - 1),
    "ragged": st.booleans(),                       # variable lengths
    "zero_state": st.sampled_from([None, "all", "h0", "c0"]),   # initial states left None
})


def build(c):
    (cell, forget_gate), N, T = c["cell"], c["N"], c["T"]
    lengths = None
    if c["ragged"]:
        lengths = np.random.default_rng(c["seed"]).integers(1, T + 1, size=N)
    p = make_problem(cell, N, T, c["I"], c["H"], c["O"], dtype=c["dtype"], output=c["output"],
                     target=c["target"], lengths=lengths, seed=c["seed"])
    if c["zero_state"] is not None:
        for k in STATES[cell]:
            if c["zero_state"] in ("all", k):
                p[k] = None
    return cell, forget_gate, p, lengths, RTOL[c["dtype"]]


def assert_loss_close(a, b, rtol, slack=0.0):
    assert isinstance(a, float) and isinstance(b, float)
    assert abs(a - b) <= rtol * max(abs(b), 1e-30) + slack, (a, b)


@settings(max_examples=150, deadline=None, database=None)
@given(problems, st.booleans(), st.booleans(), st.booleans())
def test_loss_and_grad_agree(c, input_grads, return_state, state_grad_norms):
    cell, forget_gate, p, lengths, rtol = build(c)
    kw = dict(output=c["output"], target=c["target"], input_grads=input_grads,
              lengths=lengths, return_state=return_state, state_grad_norms=state_grad_norms)
    got = loss_and_grad(cell, forget_gate, p, "cython", **kw)
    want = loss_and_grad(cell, forget_gate, p, "numpy", **kw)
    truth = loss_and_grad(cell, forget_gate, float64_of(p), "numpy", **kw)
    assert len(got) == len(want) == (3 if return_state else 2)
    assert_loss_close(got[0], want[0], rtol,
                      2 * abs(want[0] - truth[0]) if c["dtype"] == np.float32 else 0.0)
    g_c, g_n = got[1], want[1]
    expected = set(WEIGHTS[cell]) | {"W_y", "b_y"}
    if input_grads:
        expected |= {"X"} | set(STATES[cell])
    if state_grad_norms:
        expected |= {"state_grad_norms"} | ({"cell_grad_norms"} if cell == "lstm" else set())
    assert set(g_c) == set(g_n) == expected
    for name in g_n:
        assert_agree(g_c[name], g_n[name], truth[1][name], rtol, name)
        if not name.endswith("grad_norms"):
            assert g_c[name].dtype == c["dtype"], name
    if state_grad_norms and lengths is not None:
        past = np.arange(c["T"]) >= lengths[:, None]
        for name in ("state_grad_norms", "cell_grad_norms"):
            if name in g_c:
                assert not g_c[name][past].any(), name
    if return_state:
        assert isinstance(got[2], tuple) == (cell == "lstm")
        for a, b, t in zip(as_tuple(got[2]), as_tuple(want[2]), as_tuple(truth[2])):
            assert a.shape == (c["N"], c["H"]) and a.dtype == c["dtype"]
            assert_agree(a, b, t, rtol, "final state")


@settings(max_examples=100, deadline=None, database=None)
@given(problems)
def test_forward_predict_backward_agree(c):
    cell, forget_gate, p, lengths, rtol = build(c)
    S_c = forward(cell, forget_gate, p, "cython", lengths)
    S_n = forward(cell, forget_gate, p, "numpy", lengths)
    p64 = float64_of(p)
    S_64 = forward(cell, forget_gate, p64, "numpy", lengths)
    assert len(S_c) == len(S_n) == len(STATES[cell])
    for a, b, t, name in zip(S_c, S_n, S_64, ("Hs", "Cs")):
        assert a.dtype == c["dtype"] and a.shape == (c["N"], c["T"], c["H"])
        assert_agree(a, b, t, rtol, name)

    Y_c, *P_c = predict(cell, forget_gate, p, c["output"], "cython", lengths)
    Y_n, *P_n = predict(cell, forget_gate, p, c["output"], "numpy", lengths)
    Y_64, *_ = predict(cell, forget_gate, p64, c["output"], "numpy", lengths)
    assert_agree(Y_c, Y_n, Y_64, rtol, "Y")
    assert len(P_c) == len(S_c)
    for a, b in zip(P_c, S_c):
        np.testing.assert_array_equal(a, b)          # predict's states are forward's

    rng = np.random.default_rng(c["seed"])
    dS = tuple(rng.standard_normal(S.shape).astype(c["dtype"]) for S in S_n)
    g_c = backward(cell, forget_gate, p, S_n, dS, "cython", lengths)
    g_n = backward(cell, forget_gate, p, S_n, dS, "numpy", lengths)
    g_64 = backward(cell, forget_gate, p64, tuple(S.astype(np.float64) for S in S_n),
                    tuple(d.astype(np.float64) for d in dS), "numpy", lengths)
    assert set(g_c) == set(g_n) == {"X"} | set(STATES[cell]) | set(WEIGHTS[cell])
    for name in g_n:
        assert g_c[name].dtype == c["dtype"], name
        assert_agree(g_c[name], g_n[name], g_64[name], rtol, name)


def _agree(cell, forget_gate, p, rtol, **kw):
    l_c, g_c, s_c = loss_and_grad(cell, forget_gate, p, "cython", return_state=True, **kw)
    l_n, g_n, s_n = loss_and_grad(cell, forget_gate, p, "numpy", return_state=True, **kw)
    assert_loss_close(l_c, l_n, rtol)
    assert set(g_c) == set(g_n)
    for name in g_n:
        assert_close(g_c[name], g_n[name], rtol, name)
    for a, b in zip(as_tuple(s_c), as_tuple(s_n)):
        assert_close(a, b, rtol, "final state")


def test_long_sequences_agree():
    """T = 300: no drift between the backends over many steps, in either precision."""
    for cell, forget_gate in CELLS:
        for dtype, rtol in RTOL.items():
            p = make_problem(cell, 3, 300, 3, 8, 2, dtype=dtype, seed=5)
            _agree(cell, forget_gate, p, rtol, input_grads=True, state_grad_norms=True)


def test_column_split_per_step_products_agree():
    """Mid-sized per-step products (N*H*G*H in (1e6, 8e6]) under a single BLAS thread are
    split into column blocks (fastrnn._blas.gemm_step): the split path agrees too, with
    every flag."""
    N, T, I, H, O = 24, 3, 3, 128, 2
    lengths = np.array([3, 1, 2] * 8)
    for cell, forget_gate in CELLS:
        p = make_problem(cell, N, T, I, H, O, seed=7, lengths=lengths)
        for threads in (1, None):
            with threadpool_limits(threads, user_api="blas"):
                _agree(cell, forget_gate, p, 1e-10, input_grads=True, state_grad_norms=True)
                _agree(cell, forget_gate, p, 1e-10, input_grads=True, lengths=lengths)
                S = forward(cell, forget_gate, p, "cython")
                for a, b in zip(S, forward(cell, forget_gate, p, "numpy")):
                    assert_close(a, b, 1e-10, "states")
                dS = tuple(np.ones_like(s) for s in S)
                g_c = backward(cell, forget_gate, p, S, dS, "cython")
                g_n = backward(cell, forget_gate, p, S, dS, "numpy")
                for name in g_n:
                    assert_close(g_c[name], g_n[name], 1e-10, name)


def test_large_float32_weight_gradients_agree():
    """A float32 weight gradient of more than 2**28 multiply-adds with at most 256 rows
    (dW_s (256, 1024) over 1040 rows) takes fastrnn's own kernel when BLAS runs on one thread
    and BLAS's GEMM when it has several (fastrnn/_gemm.pxd, weight_gemm): both agree (the
    batch not split, so that the product is not cut into the threads' shares)."""
    N, T, I, H, O = 8, 130, 3, 256, 2
    for cell, forget_gate in CELLS:
        p = make_problem(cell, N, T, I, H, O, dtype=np.float32, seed=11)
        for threads in (1, 2):
            with threadpool_limits(threads, user_api="blas"):
                _agree(cell, forget_gate, p, 1e-4, input_grads=True, threads=1)  # no split


def test_reused_workspace_never_leaks_between_calls():
    """The compiled loss_and_grad reuses its internal buffers for calls of the same shapes:
    a run of such calls with other data, targets, lengths, initial states and flags must
    each match the reference, and earlier results must stay as they were."""
    rng = np.random.default_rng(0)
    for cell, forget_gate in CELLS:
        kept = []
        for i, (target, ragged) in enumerate([("sequence", False), ("last", True),
                                              ("sequence", True), ("last", False)] * 2):
            lengths = rng.integers(1, 10, size=3) if ragged else None
            p = make_problem(cell, 3, 9, 2, 5, 3, target=target, seed=i, lengths=lengths)
            if i % 3 == 2:
                p["h0"] = None
            kw = dict(target=target, lengths=lengths, input_grads=i % 2 == 0,
                      state_grad_norms=i % 4 == 1)
            _agree(cell, forget_gate, p, 1e-10, **kw)
            result = loss_and_grad(cell, forget_gate, p, **kw, return_state=True)
            kept.append((result, {k: v.copy() for k, v in result[1].items()},
                         tuple(s.copy() for s in as_tuple(result[2]))))
        for result, grads, states in kept:
            for k in grads:
                np.testing.assert_array_equal(result[1][k], grads[k], err_msg=k)
            for a, b in zip(as_tuple(result[2]), states):
                np.testing.assert_array_equal(a, b)


def test_outputs_keep_dtype():
    for cell, forget_gate in CELLS:
        for dtype in (np.float32, np.float64):
            p = make_problem(cell, 2, 3, 2, 3, 2, dtype=dtype)
            for backend in ("cython", "numpy"):
                _, grads, last = loss_and_grad(cell, forget_gate, p, backend, input_grads=True,
                                               return_state=True)
                assert all(g.dtype == dtype for g in grads.values())
                assert all(s.dtype == dtype for s in as_tuple(last))
                Y, *S = predict(cell, forget_gate, p, "softmax", backend)
                assert Y.dtype == dtype and all(s.dtype == dtype for s in S)
                np.testing.assert_allclose(Y.sum(-1), 1, rtol=1e-5)
