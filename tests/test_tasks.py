"""The long-time-lag generators against their published definitions."""
import numpy as np
import pytest

import fastrnn
from fastrnn import tasks


@pytest.mark.parametrize("p", [2, 5, 30])
def test_two_sequence_lag_definition(p):
    X, Y = tasks.two_sequence_lag(500, p, seed=1)
    assert X.shape == (500, p, p + 1) and Y.shape == (500, p) and X.dtype == np.float32
    assert (X.sum(axis=2) == 1).all()                        # one-hot
    symbols = X.argmax(axis=2)
    first = symbols[:, 0]
    assert set(first) == {p - 1, p}                          # x or y ...
    assert 0.4 < np.mean(first == p) < 0.6                   # ... with probability 0.5
    np.testing.assert_array_equal(symbols[:, 1:], np.broadcast_to(np.arange(p - 1),
                                                                  (500, p - 1)))
    np.testing.assert_array_equal(Y[:, :-1], symbols[:, 1:])  # predict the next symbol
    np.testing.assert_array_equal(Y[:, -1], first)            # the last one: lag p


@pytest.mark.parametrize("T", [10, 50, 200])
def test_adding_problem_definition(T):
    n = 2000
    X, Y, lengths = tasks.adding_problem(n, T, seed=2)
    assert X.shape == (n, T + T // 10, 2) and Y.shape == (n,) and lengths.shape == (n,)
    assert lengths.min() >= T and lengths.max() <= T + T // 10
    assert lengths.min() == T and lengths.max() == T + T // 10      # the whole range is used
    values, markers = X[..., 0], X[..., 1]
    for i in range(n):
        L = lengths[i]
        assert not X[i, L:].any()                             # zero padding
        assert (np.abs(values[i, :L]) <= 1).all()
        marked = np.flatnonzero(markers[i] == 1)
        assert len(marked) == 2
        i1, i2 = marked          # sorted: which one is X1 does not matter for the target
        # X1 among the first 10 pairs, X2 among the first T/2 - 1 unmarked ones
        assert (i1 < 10 and i2 < T // 2) or (i2 < 10 and i1 < T // 2)
        others = np.setdiff1d(np.arange(L), marked)
        for pos in (0, L - 1):                                # unmarked ends: -1
            if pos in others:
                assert markers[i, pos] == -1
        inner = np.setdiff1d(others, [0, L - 1])
        assert (markers[i, inner] == 0).all()
        if i1 == 0:
            assert values[i, 0] == 0                          # a marked first pair: 0
        np.testing.assert_allclose(Y[i], 0.5 + (values[i, i1] + values[i, i2]) / 4,
                                   atol=1e-7)
    # which pair among the candidates carries X1 / X2 is uniform
    first_marks = np.array([np.flatnonzero(markers[i] == 1)[0] for i in range(n)])
    assert len(np.unique(first_marks)) >= min(10, T // 2 - 1)


def test_adding_trivial_mse_is_var_of_target():
    """Always predicting 0.5 gives MSE = Var(X1 + X2) / 16 = (2/3) / 16 = 1/24 (a little
    less, because a marked first pair's value is 0)."""
    _, Y, _ = tasks.adding_problem(20_000, 100, seed=4, dtype="float64")
    mse = np.mean((Y - 0.5) ** 2)
    assert 1 / 24 * 0.9 < mse < 1 / 24 * 0.99     # expected ~0.94 / 24 at T = 100


def test_temporal_order_definition():
    L, n = 100, 1000
    X, Y = tasks.temporal_order(n, L, seed=3)
    assert X.shape == (n, L, 6) and Y.shape == (n,)
    assert (X.sum(axis=2) == 1).all()
    symbols = X.argmax(axis=2)
    for i in range(n):
        ab = np.flatnonzero(symbols[i] < 2)                   # A or B: exactly two of them
        assert len(ab) == 2
        p0, p1 = ab
        assert 0.1 * L <= p0 < 0.2 * L and 0.5 * L <= p1 < 0.6 * L
        assert Y[i] == 2 * symbols[i, p0] + symbols[i, p1]    # AA, AB, BA, BB
    assert set(Y) == {0, 1, 2, 3}


def test_latch_definition():
    X, Y = tasks.latch(2000, 30, seed=4, info_steps=3)
    assert X.shape == (2000, 30, 1) and set(Y) == {0, 1}
    np.testing.assert_array_equal(X[:, :3, 0], np.repeat((2 * Y - 1)[:, None], 3, axis=1))
    noise = X[:, 3:, 0]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.2) < 0.01


@pytest.mark.parametrize("make", [
    lambda s, d: tasks.two_sequence_lag(8, 5, seed=s, dtype=d),
    lambda s, d: tasks.adding_problem(8, 20, seed=s, dtype=d),
    lambda s, d: tasks.temporal_order(8, 20, seed=s, dtype=d),
    lambda s, d: tasks.latch(8, 20, seed=s, dtype=d),
])
def test_seeding_and_dtype(make):
    a, b, c = make(0, "float32"), make(0, "float32"), make(1, "float32")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c)) or len(a[0]) == 0
    d = make(0, "float64")
    assert d[0].dtype == np.float64
    np.testing.assert_allclose(d[0], a[0], rtol=1e-6)


def test_generators_are_ready_for_fit():
    X, Y, lengths = tasks.adding_problem(64, 10)
    m = fastrnn.ElmanRNN(2, 8, 1)
    m.fit(X, Y, lengths=lengths, target="last", epochs=1, progress=False)
    X, Y = tasks.temporal_order(64, 20)
    fastrnn.ElmanRNN(6, 8, 4, output="softmax").fit(X, Y, target="last", epochs=1,
                                                    progress=False)
    X, Y = tasks.two_sequence_lag(64, 5)
    fastrnn.ElmanRNN(6, 8, 6, output="softmax").fit(X, Y, epochs=1, progress=False)


@pytest.mark.parametrize("call, match", [
    (lambda: tasks.adding_problem(0, 10), "n_sequences"),
    (lambda: tasks.adding_problem(5, 2), "T must be >= 4"),
    (lambda: tasks.two_sequence_lag(5, 1), "p must be >= 2"),
    (lambda: tasks.temporal_order(5, 5), "L must be >= 10"),
    (lambda: tasks.latch(5, 3, info_steps=4), "info_steps must be <= T"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
