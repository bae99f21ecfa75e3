"""The time-blocked passes of long sequences (fastrnn/_threads.py time_block, the cells'
recur_forward/backward_part, fastrnn/cells/_recurrence.pxd): the input projection done a
block of steps at a time and the weight gradients summed a block at a time, instead of one
GEMM over all N*T rows. Real calls block only above 16 MiB of gates, so here every call
blocks, in blocks of 3 or 4 steps (a last block shorter, T = 1 + a multiple, one block of
one step), and is checked against the NumPy twin: every cell, one and two layers, both
directions, lengths, both targets, input and state gradients, gradient norms, predict and
the functional forward/backward, one thread and split across two; and against the merged
pass, which it must not equal bit for bit (the blocked path really ran).
"""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import _threads

MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
STATES = {"elman": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}
WEIGHTS = {"elman": ("W_x", "W_s", "b"), "lstm": ("W_x", "W_s", "b"),
           "gru": ("W_x", "W_s", "b", "b_s")}
OPTIONS = {"elman": ("tanh",), "lstm": (True,), "gru": ()}
I, H, O = 4, 7, 3


@pytest.fixture(params=[3, 4])
def blocks(request, monkeypatch):
    """Every call of at least two blocks is time-blocked, in blocks of this many steps; BLAS
    on one thread (blocking needs single-threaded products) and any batch split."""
    monkeypatch.setattr(_threads, "TIME_BLOCK_ABOVE_BYTES", 0)
    monkeypatch.setattr(_threads, "TIME_BLOCK_STEPS", (request.param, request.param))
    monkeypatch.setattr(_threads, "SPLIT_WORK", 0)
    with threadpool_limits(1):
        yield request.param


def merged(monkeypatch):
    monkeypatch.setattr(_threads, "TIME_BLOCK_ABOVE_BYTES", 1 << 62)


def problem(cell, L, bi, N, T, seed=0, output="linear"):
    cy = MODELS[cell](I, H, O, num_layers=L, bidirectional=bi, seed=seed, dtype="float64",
                      output=output)
    tw = MODELS[cell](I, H, O, num_layers=L, bidirectional=bi, seed=seed, dtype="float64",
                      output=output, backend="numpy")
    tw.params = {k: v.copy() for k, v in cy.params.items()}
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, I))
    if output == "softmax":
        Y = rng.integers(0, O, (N, T))
    else:
        Y = rng.standard_normal((N, T, O))
    lengths = rng.integers(1, T + 1, N)
    lengths[0] = T
    return cy, tw, X, Y, lengths


def as_tuple(states):
    return states if isinstance(states, tuple) else (states,)


def assert_close(got, want, name, rtol=1e-11):
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale, err_msg=name)


def assert_results_close(got, want):
    assert abs(got[0] - want[0]) <= 1e-12 * max(1.0, abs(want[0]))
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        assert_close(got[1][name], want[1][name], name)


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("L,bi", [(1, False), (1, True), (2, True)])
@pytest.mark.parametrize("T", [13, 12])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_blocked_loss_and_grad_match_the_numpy_twin(blocks, monkeypatch, cell, L, bi, T,
                                                    with_lengths, target):
    cy, tw, X, Y, lengths = problem(cell, L, bi, 5, T)
    if target == "last":
        Y = Y[:, -1]
    lengths = lengths if with_lengths else None
    assert _threads.time_block(5, T, 1, H, 8, 1, True) == blocks
    kw = dict(target=target, lengths=lengths, input_grads=True)
    want = tw.loss_and_grad(X, Y, **kw)
    got = {threads: cy.loss_and_grad(X, Y, threads=threads, **kw) for threads in (1, 2)}
    for threads in (1, 2):
        assert_results_close(got[threads], want)
    merged(monkeypatch)
    plain = cy.loss_and_grad(X, Y, threads=1, **kw)
    assert_results_close(plain, want)
    # the same thread count, summed in another order: the blocked path really ran
    assert any(not np.array_equal(got[1][1][k], plain[1][k]) for k in plain[1])


@pytest.mark.parametrize("cell", list(MODELS))
def test_blocked_single_layer_options(blocks, cell):
    """Softmax, state_grad_norms, return_state and given initial states, one layer."""
    cy, tw, X, Y, lengths = problem(cell, 1, False, 4, 3 * blocks + 1, output="softmax")
    rng = np.random.default_rng(1)
    h0 = rng.standard_normal((4, H))
    h0 = (h0, rng.standard_normal((4, H))) if cell == "lstm" else h0
    for bi_lengths in (None, lengths):
        kw = dict(h0=h0, lengths=bi_lengths, return_state=True, state_grad_norms=True,
                  input_grads=True)
        want = tw.loss_and_grad(X, Y, **kw)
        got = cy.loss_and_grad(X, Y, **kw)
        assert_results_close(got[:2], want[:2])
        for a, b in zip(as_tuple(got[2]), as_tuple(want[2])):
            assert_close(a, b, "final state")


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("bi", [False, True])
def test_blocked_predict_matches_the_numpy_twin(blocks, cell, bi):
    cy, tw, X, _, lengths = problem(cell, 2, bi, 5, 4 * blocks)
    for lens in (None, lengths):
        assert_close(cy.predict(X, lengths=lens), tw.predict(X, lengths=lens), "Y")


@pytest.mark.parametrize("cell", list(MODELS))
def test_blocked_functional_forward_and_backward(blocks, cell):
    """cell_forward, and cell_backward from given states (the LSTM's and GRU's recompute
    their gates through the blocked forward pass)."""
    N, T = 3, 3 * blocks + 1
    rng = np.random.default_rng(2)
    X = rng.standard_normal((N, T, I))
    G = {"elman": 1, "lstm": 4, "gru": 3}[cell]
    state0 = tuple(rng.standard_normal((N, H)) for _ in STATES[cell])
    shapes = {"W_x": (I, G * H), "W_s": (H, G * H), "b": (G * H,), "b_s": (G * H,)}
    weights = tuple(0.4 * rng.standard_normal(shapes[k]) for k in WEIGHTS[cell])
    lengths = np.array([T, 2, T - 1])
    for lens in (None, lengths):
        args = (cell, X, state0, weights, OPTIONS[cell])
        S_c = fastrnn.cell_forward(*args, "cython", lens)
        S_n = fastrnn.cell_forward(*args, "numpy", lens)
        S_c, S_n = (S if isinstance(S, tuple) else (S,) for S in (S_c, S_n))
        for a, b in zip(S_c, S_n):
            assert_close(a, b, "states")
        dS = tuple(rng.standard_normal(S.shape) for S in S_n)
        g_c = fastrnn.cell_backward(cell, X, state0, weights, S_n, dS, OPTIONS[cell],
                                    "cython", lens)
        g_n = fastrnn.cell_backward(cell, X, state0, weights, S_n, dS, OPTIONS[cell],
                                    "numpy", lens)
        assert g_c.keys() == g_n.keys()
        for name in g_n:
            assert_close(g_c[name], g_n[name], name)


def test_time_block_policy():
    """Blocks only for long, large calls on single-threaded products; the block shrinks as
    a thread's rows of a step grow, and rows too wide for 32 steps are not blocked."""
    big = dict(gates=4, H=64, itemsize=4)
    assert _threads.time_block(32, 10_000, threads=1, serial=True, **big) == 32
    assert _threads.time_block(32, 10_000, threads=2, serial=True, **big) == 64
    assert _threads.time_block(32, 10_000, threads=1, serial=False, **big) == 0   # BLAS threads
    assert _threads.time_block(32, 100, threads=1, serial=True, **big) == 0        # 3 MiB
    assert _threads.time_block(4096, 20, threads=1, serial=True, **big) == 0       # few steps
    assert _threads.time_block(1, 400_000, 1, 16, 4, 1, True) == 128
    assert _threads.time_block(64, 100, 4, 256, 4, 1, True) == 0     # LSTM med: rows too wide
    assert _threads.time_block(64, 10_000, 4, 256, 4, 1, True) == 0
    assert _threads.time_block(64, 10_000, 4, 256, 4, 8, True) == 32    # a thread's 8 rows
