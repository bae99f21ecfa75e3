"""Variable-length batches: lengths (N,) ends sequence n after lengths[n] steps.

Past its end a sequence keeps its state, is not scored and gets no gradient; target "last"
scores each sequence's last valid step. The checks: finite differences, the two backends
agree, and a padded batch gives exactly what each sequence gives on its own, whatever the
padding holds.
"""
import numpy as np
import pytest

import fastrnn
from conftest import ACTIVATIONS, assert_close, make_problem
from test_gradcheck import check, numerical_gradient

LENGTHS = np.array([3, 1, 5, 4])
N, T, I, H, O = 4, 5, 3, 4, 3


def padded_problem(output, target, dtype=np.float64, seed=0):
    p = make_problem(N, T, I, H, O, dtype=dtype, output=output, target=target, seed=seed)
    for n, L in enumerate(LENGTHS):       # padding holds garbage: it must not matter
        p["X"][n, L:] = 1e3 * (n + 1)
        if output == "linear" and target == "sequence":
            p["Y"][n, L:] = -1e3
        elif output == "softmax" and target == "sequence":
            p["Y"][n, L:] = -1            # an out-of-range padding label is fine
    return p


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_finite_differences_with_lengths(activation, output, target, backend):
    p = padded_problem(output, target)
    p["X"] *= 1e-3     # keep the padding large but the finite differences well scaled
    kw = dict(activation=activation, output=output, target=target, backend=backend,
              lengths=LENGTHS)

    def loss():
        return fastrnn.elman_loss_and_grad(**p, **kw)[0]

    _, grads = fastrnn.elman_loss_and_grad(**p, **kw, input_grads=True)
    for name in grads:
        check(grads[name], numerical_gradient(loss, p[name]), name)
    for n, L in enumerate(LENGTHS):
        assert not grads["X"][n, L:].any()          # nothing flows into the padding


@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_padded_batch_equals_each_sequence_alone(output, target, dtype, rtol, backend):
    p = padded_problem(output, target, dtype)
    kw = dict(activation="tanh", output=output, target=target, backend=backend)
    loss, grads, h_last = fastrnn.elman_loss_and_grad(**p, **kw, lengths=LENGTHS,
                                                      input_grads=True, return_state=True)
    # The batch loss is a mean over scored targets: weight each sequence by its count.
    weights = LENGTHS / LENGTHS.sum() if target == "sequence" else np.full(N, 1 / N)
    want_loss, want = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for n, L in enumerate(LENGTHS):
        q = dict(p, X=p["X"][n:n + 1, :L], h0=p["h0"][n:n + 1],
                 Y=p["Y"][n:n + 1, :L] if target == "sequence" else p["Y"][n:n + 1])
        l_n, g_n, h_n = fastrnn.elman_loss_and_grad(**q, **kw, input_grads=True,
                                                    return_state=True)
        want_loss += weights[n] * l_n
        for k in ("W_x", "W_s", "b", "W_y", "b_y"):
            want[k] += weights[n] * g_n[k]
        want["X"][n, :L] = weights[n] * g_n["X"][0]
        want["h0"][n] = weights[n] * g_n["h0"][0]
        assert_close(h_last[n], h_n[0], rtol, "h_last")
    assert loss == pytest.approx(want_loss, rel=rtol)
    for k in grads:
        assert_close(grads[k], want[k].astype(dtype), rtol, k)


def test_states_are_carried_past_the_end(backend):
    p = padded_problem("linear", "sequence")
    rec = {k: p[k] for k in ("X", "h0", "W_x", "W_s", "b")}
    S = fastrnn.elman_forward(**rec, backend=backend, lengths=LENGTHS)
    S_full = fastrnn.elman_forward(**rec, backend=backend)
    for n, L in enumerate(LENGTHS):
        np.testing.assert_array_equal(S[n, :L], S_full[n, :L])
        np.testing.assert_array_equal(S[n, L:], np.broadcast_to(S[n, L - 1], S[n, L:].shape))
    Y, S2 = fastrnn.elman_predict(**rec, W_y=p["W_y"], b_y=p["b_y"], backend=backend,
                                  lengths=LENGTHS)
    np.testing.assert_array_equal(S2, S)


def test_all_full_lengths_change_nothing(backend):
    p = make_problem(N, T, I, H, O, seed=3)
    a = fastrnn.elman_loss_and_grad(**p, backend=backend)
    b = fastrnn.elman_loss_and_grad(**p, backend=backend, lengths=np.full(N, T))
    assert a[0] == b[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])


def test_backward_ignores_dS_past_the_end(backend):
    p = padded_problem("linear", "sequence")
    rec = {k: p[k] for k in ("X", "h0", "W_x", "W_s", "b")}
    S = fastrnn.elman_forward(**rec, backend=backend, lengths=LENGTHS)
    dS = np.random.default_rng(0).standard_normal(S.shape)
    g1 = fastrnn.elman_backward(**rec, S=S, dS=dS, backend=backend, lengths=LENGTHS)
    for n, L in enumerate(LENGTHS):
        dS[n, L:] = 7.0
    g2 = fastrnn.elman_backward(**rec, S=S, dS=dS, backend=backend, lengths=LENGTHS)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad, exc, match", [
    (np.array([3, 1, 5]), ValueError, r"lengths must have shape \(N,\) = \(4,\)"),
    (np.array([3, 0, 5, 4]), ValueError, r"lengths must lie in \[1, T\] = \[1, 5\]"),
    (np.array([3, 1, 6, 4]), ValueError, r"lengths must lie in \[1, T\] = \[1, 5\]"),
    (np.array([3.0, 1, 5, 4]), TypeError, r"lengths must be an integer array"),
    ([[3, 1, 5, 4]], ValueError, r"lengths must have shape"),
])
def test_bad_lengths(bad, exc, match, backend):
    p = make_problem(N, T, I, H, O)
    with pytest.raises(exc, match=match):
        fastrnn.elman_loss_and_grad(**p, backend=backend, lengths=bad)
    with pytest.raises(exc, match=match):
        fastrnn.elman_forward(p["X"], p["h0"], p["W_x"], p["W_s"], p["b"], backend=backend,
                              lengths=bad)


def test_padding_labels_out_of_range_are_ignored_but_valid_ones_checked(backend):
    p = padded_problem("softmax", "sequence")
    fastrnn.elman_loss_and_grad(**p, output="softmax", backend=backend, lengths=LENGTHS)
    p["Y"][0, 0] = O
    with pytest.raises(ValueError, match=r"Y class labels must lie in \[0, O\)"):
        fastrnn.elman_loss_and_grad(**p, output="softmax", backend=backend, lengths=LENGTHS)
