"""Finite differences (float64) of every gradient of the COMPILED gated cells, through the
public functional API (fastrnn.cell_loss_and_grad / cell_backward, backend="cython"):

- cell_loss_and_grad: X, h0, c0, W_x, W_s, b, GRU's b_s, W_y, b_y; linear MSE and softmax
  cross-entropy (int64 labels), targets "sequence" and "last", with and without lengths,
  the LSTM with and without its forget gate; shapes with T=1, N=1, H=1 and I != H != O;
- cell_backward against the finite differences of sum(dHs * Hs) (+ sum(dCs * Cs) for the
  LSTM), and against loss_and_grad's own recurrence given the head's dHs.

The NumPy twins get the same checks in tests/test_gated_reference.py; here the loss whose
differences are taken is the compiled backend's own (checked equal to the twin's).
"""
import numpy as np
import pytest

import fastrnn
from cells_common import (CELL_IDS, CELLS, STATES, WEIGHTS, as_tuple, backward, forward,
                          loss_and_grad, make_problem)
from fastrnn import head
from test_gated_reference import SHAPE_IDS, SHAPES, check_fd, numerical_gradient

MAX_ENTRIES = 24     # larger arrays: finite differences of a random subset of their entries


def gradient_names(cell):
    return ("X",) + STATES[cell] + WEIGHTS[cell] + ("W_y", "b_y")


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_compiled_loss_and_grad_matches_finite_differences(cell, forget_gate, output, target,
                                                           shape, lengths, with_lengths):
    N, T, I, H, O = shape
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=100 + sum(shape))
    assert p["Y"].dtype == (np.int64 if output == "softmax" else np.float64)
    kw = dict(output=output, target=target, lengths=lengths)

    def loss():
        return loss_and_grad(cell, forget_gate, p, **kw)[0]

    value, grads = loss_and_grad(cell, forget_gate, p, **kw, input_grads=True)
    assert isinstance(value, float) and np.isfinite(value)
    assert value == loss()                                  # input_grads changes nothing
    ref = loss_and_grad(cell, forget_gate, p, backend="numpy", **kw)[0]
    assert value == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert set(grads) == set(gradient_names(cell))
    rng = np.random.default_rng(sum(shape))
    for name in gradient_names(cell):
        assert grads[name].shape == p[name].shape and grads[name].dtype == np.float64, name
        check_fd(grads[name], numerical_gradient(loss, p[name], rng, MAX_ENTRIES), name)
    if lengths is not None:
        for n, L in enumerate(lengths):
            assert not grads["X"][n, L:].any()              # nothing flows into the padding
    if cell == "lstm" and not forget_gate:                  # the f blocks are unused
        for name in ("W_x", "W_s", "b"):
            assert not grads[name][..., H:2 * H].any(), name


BACKWARD_SHAPES = [SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[4]]
BACKWARD_IDS = [SHAPE_IDS[0], SHAPE_IDS[1], SHAPE_IDS[2], SHAPE_IDS[4]]


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape, lengths", BACKWARD_SHAPES, ids=BACKWARD_IDS)
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_compiled_backward_matches_finite_differences(cell, forget_gate, shape, lengths,
                                                      with_lengths):
    """cell_backward with arbitrary dHs (and dCs) is the gradient of sum(dHs * Hs)
    (+ sum(dCs * Cs)) over the valid steps; what dHs, dCs hold past the end is ignored."""
    N, T, I, H, O = shape
    lengths = np.array(lengths, dtype=np.int64) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, lengths=lengths, seed=200 + sum(shape))
    rng = np.random.default_rng(sum(shape))
    n_states = len(STATES[cell])
    dstates = tuple(rng.standard_normal((N, T, H)) for _ in range(n_states))
    valid = np.ones((N, T, 1)) if lengths is None else \
        (np.arange(T) < lengths[:, None])[..., None]

    def objective():
        states = forward(cell, forget_gate, p, lengths=lengths)
        return float(sum(np.sum(valid * d * S) for d, S in zip(dstates, states)))

    states = forward(cell, forget_gate, p, lengths=lengths)
    assert len(states) == n_states
    grads = backward(cell, forget_gate, p, states, dstates, lengths=lengths)
    clean = backward(cell, forget_gate, p, states, tuple(valid * d for d in dstates),
                     lengths=lengths)
    ref = backward(cell, forget_gate, p, states, dstates, backend="numpy", lengths=lengths)
    names = ("X",) + STATES[cell] + WEIGHTS[cell]
    assert set(grads) == set(names)
    for name in names:
        assert grads[name].shape == p[name].shape and grads[name].dtype == np.float64, name
        check_fd(grads[name], numerical_gradient(objective, p[name], rng, MAX_ENTRIES), name)
        np.testing.assert_array_equal(grads[name], clean[name], err_msg=name)
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-10,
                                   atol=1e-12 * np.abs(ref[name]).max(), err_msg=name)
    if cell == "lstm" and not forget_gate:
        for name in ("W_x", "W_s", "b"):
            assert not grads[name][..., H:2 * H].any(), name


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last")])
@pytest.mark.parametrize("cell, forget_gate", CELLS, ids=CELL_IDS)
def test_compiled_backward_is_loss_and_grads_recurrence(cell, forget_gate, output, target,
                                                        with_lengths):
    """cell_backward given the head's dHs (and dCs = 0) returns the recurrence gradients of
    cell_loss_and_grad (to rounding: the backward pass recomputes the gates)."""
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths) if with_lengths else None
    p = make_problem(cell, N, T, I, H, O, output=output, target=target, lengths=lengths,
                     seed=5)
    _, grads = loss_and_grad(cell, forget_gate, p, output=output, target=target,
                             input_grads=True, lengths=lengths)
    states = forward(cell, forget_gate, p, lengths=lengths)
    _, dHs, _, _ = head.loss_and_grad(states[0], p["W_y"], p["b_y"], p["Y"], output, target,
                                      lengths)
    dstates = (dHs,) + tuple(np.zeros_like(S) for S in states[1:])
    got = backward(cell, forget_gate, p, states, dstates, lengths=lengths)
    for name in ("X",) + STATES[cell] + WEIGHTS[cell]:
        np.testing.assert_allclose(got[name], grads[name], rtol=1e-12,
                                   atol=1e-14 * np.abs(grads[name]).max(), err_msg=name)


def test_finite_differences_see_a_wrong_compiled_gradient():
    """The check can fail: the compiled GRU's gradient of b_s with its n block taken from b
    (a plausible bug, since the two differ only there) is rejected."""
    cell, shape = "gru", SHAPES[0][0]
    p = make_problem(cell, *shape, seed=3)
    _, grads = loss_and_grad(cell, None, p, input_grads=True)
    wrong = grads["b_s"].copy()
    H = shape[3]
    wrong[2 * H:] = grads["b"][2 * H:]

    def loss():
        return loss_and_grad(cell, None, p)[0]

    numeric = numerical_gradient(loss, p["b_s"])
    check_fd(grads["b_s"], numeric, "b_s")
    with pytest.raises(AssertionError):
        check_fd(wrong, numeric, "b_s")


def test_compiled_state_outputs_are_the_states():
    """return_state gives the states at T-1 of cell_forward (each sequence's last valid
    one), for both cells, as a tuple (h, c) for the LSTM."""
    (N, T, I, H, O), lengths = SHAPES[-1]
    lengths = np.array(lengths)
    for cell, forget_gate in CELLS:
        p = make_problem(cell, N, T, I, H, O, lengths=lengths, seed=9)
        _, _, last = loss_and_grad(cell, forget_gate, p, lengths=lengths, return_state=True)
        states = forward(cell, forget_gate, p, lengths=lengths)
        assert isinstance(last, tuple) == (cell == "lstm")
        for s_last, S in zip(as_tuple(last), states):
            np.testing.assert_array_equal(s_last, S[:, -1])
            for n, L in enumerate(lengths):
                np.testing.assert_array_equal(S[n, L:], np.broadcast_to(S[n, L - 1],
                                                                        S[n, L:].shape))
        Y, *pstates = fastrnn.cell_predict(cell, p["X"], tuple(p[k] for k in STATES[cell]),
                                           tuple(p[k] for k in WEIGHTS[cell]), p["W_y"],
                                           p["b_y"], (forget_gate,) if cell == "lstm" else (),
                                           lengths=lengths)
        assert len(pstates) == len(states)
        for a, b in zip(pstates, states):
            np.testing.assert_array_equal(a, b)
