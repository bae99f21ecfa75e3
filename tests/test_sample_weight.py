"""sample_weight: the loss is the mean weighted by sequence, in every cell, backend, target
and output, one layer or a stack, and through fit: a weight of 0 equals leaving the
sequence out, a weight of 2 equals repeating it."""
import numpy as np
import pytest

import fastrnn

MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
N, T, I, O = 5, 6, 2, 3
LENGTHS = np.array([6, 2, 5, 3, 1])


def data(output, target, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, I))
    if output == "softmax":
        Y = rng.integers(0, O, (N, T) if target == "sequence" else (N,))
    else:
        Y = rng.standard_normal((N, T, O) if target == "sequence" else (N, O))
    return X, Y


@pytest.mark.parametrize("stack", [{}, {"num_layers": 2, "bidirectional": True}],
                         ids=["one_layer", "stack"])
@pytest.mark.parametrize("target,output", [("sequence", "linear"), ("last", "softmax"),
                                           ("sequence", "softmax"), ("last", "linear")])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name", list(MODELS))
def test_weights_equal_dropping_and_repeating(name, backend, target, output, stack):
    m = MODELS[name](I, 4, O, output=output, dtype="float64", backend=backend, **stack)
    X, Y = data(output, target)
    w = np.array([1, 0, 2, 1, 1.0])
    loss, g = m.loss_and_grad(X, Y, target=target, lengths=LENGTHS, sample_weight=w,
                              input_grads=True)
    keep = [0, 2, 2, 3, 4]                   # sample 1 dropped, sample 2 twice
    ref, r = m.loss_and_grad(X[keep], Y[keep], target=target, lengths=LENGTHS[keep])
    assert abs(loss - ref) < 1e-12
    for k in r:
        np.testing.assert_allclose(g[k], r[k], rtol=1e-11, atol=1e-13)
    assert not g["X"][1].any()               # a weight of 0: no gradient reaches it
    ones, g1 = m.loss_and_grad(X, Y, target=target, lengths=LENGTHS,
                               sample_weight=np.full(N, 3.0))
    plain, gp = m.loss_and_grad(X, Y, target=target, lengths=LENGTHS)
    assert abs(ones - plain) < 1e-13         # equal weights: the plain mean


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_weight_zero_is_dropping_and_two_is_repeating(name):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 5, I))
    Y = rng.standard_normal((8, 5, 1))
    kw = dict(epochs=4, batch_size=64, shuffle=False, progress=False, lr=0.01)

    def trained(X, Y, **extra):
        m = MODELS[name](I, 4, 1, dtype="float64", seed=3)
        m.fit(X, Y, **kw, **extra)
        return m.params

    w = np.ones(8)
    w[2], w[5] = 0, 2
    weighted = trained(X, Y, sample_weight=w)
    rows = [0, 1, 3, 4, 5, 5, 6, 7]
    repeated = trained(X[rows], Y[rows])
    for k in weighted:
        np.testing.assert_allclose(weighted[k], repeated[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad,match", [
    (np.ones(4), r"shape \(N,\)"), (np.array([1, -1, 1, 1, 1.0]), ">= 0"),
    (np.array([1, np.nan, 1, 1, 1]), "finite"), (np.zeros(5), "all zero"),
    (["a"] * 5, "sample_weight"), (np.ones((5, 1)), r"shape \(N,\)")])
def test_bad_sample_weight(bad, match):
    m = fastrnn.GRU(I, 3, O, dtype="float64")
    X, Y = data("linear", "sequence")
    with pytest.raises((ValueError, TypeError), match=match):
        m.loss_and_grad(X, Y, sample_weight=bad)
    with pytest.raises((ValueError, TypeError), match=match):
        m.fit(X, Y, sample_weight=bad, epochs=1, progress=False)
