"""Seeded generators for the classic long-time-lag problems.

Each returns arrays ready for ElmanRNN.fit, in float32 or float64, and each task has a
`solved(...)` criterion from its paper, for fresh sequences:

- two_sequence_lag   Hochreiter & Schmidhuber 1997, experiment 2a (lag p)
- adding_problem     Hochreiter & Schmidhuber 1997, experiment 4
- temporal_order     Pascanu, Mikolov & Bengio 2013 (after Hochreiter & Schmidhuber 1997, 6a)
- latch              Bengio, Simard & Frasconi 1994, the two-sequence ("latch") problem

References: S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8),
1997. R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural
networks", ICML 2013. Y. Bengio, P. Simard, P. Frasconi, "Learning long-term dependencies
with gradient descent is difficult", IEEE Trans. Neural Networks 5(2), 1994.
"""
import numpy as np

from . import _validate, head


def _setup(n_sequences, length, name, dtype, minimum=1):
    n = _validate.positive_int(n_sequences, "n_sequences")
    L = _validate.positive_int(length, name)
    if L < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {L}")
    return n, L, _validate.float_dtype(dtype)


def two_sequence_lag(n_sequences, p, seed=0, dtype="float32"):
    """Hochreiter & Schmidhuber 1997, experiment 2a: noise-free sequences with lag p.

    Symbols a_1 .. a_{p-1}, x, y, one-hot over p + 1 units (a_i is unit i-1, x is unit p-1,
    y unit p). Each sequence is (y, a_1, ..., a_{p-1}, y) or (x, a_1, ..., a_{p-1}, x), with
    probability 0.5 each; the net predicts the next symbol at every step. All but the last
    prediction are trivial; the last needs the first symbol, p steps back.

    Returns X (n, p, p+1) one-hot inputs (the first p symbols) and Y (n, p) int64 labels of
    the next symbol, for output="softmax", target="sequence".
    """
    n, p, dt = _setup(n_sequences, p, "p", dtype, minimum=2)
    rng = np.random.default_rng(seed)
    first = np.where(rng.random(n) < 0.5, p - 1, p)            # x or y
    symbols = np.empty((n, p + 1), np.int64)
    symbols[:, 0] = symbols[:, p] = first
    symbols[:, 1:p] = np.arange(p - 1)                          # a_1 .. a_{p-1}
    X = np.zeros((n, p, p + 1), dt)
    np.put_along_axis(X, symbols[:, :p, None], 1.0, axis=2)
    return X, symbols[:, 1:]


def two_sequence_lag_solved(model, p, last_only=False, confidence=0.0):
    """The published criterion: every next-symbol prediction (argmax) right, on both
    sequences, the last one included. last_only: only the one non-trivial prediction, the
    last symbol (which only the first determines), right for both kinds of sequence - the
    criterion when the net is trained on the last step only. confidence: also require the
    right symbol's probability to be at least this (a net sitting at the 50/50 marginal
    can get both argmaxes right by a hair; confidence=0.9 rules that out)."""
    X, Y = two_sequence_lag(2, p)
    X[0, 0], X[1, 0] = 0, 0
    X[0, 0, p - 1], X[1, 0, p] = 1, 1                           # one of each
    Y = Y.copy()
    Y[0, -1], Y[1, -1] = p - 1, p
    probs, _ = model.forward(X.astype(model.dtype))
    if last_only:
        probs, Y = probs[:, -1:], Y[:, -1:]
    right = np.take_along_axis(probs, Y[:, :, None], axis=2)[:, :, 0]
    return bool(((probs.argmax(axis=2) == Y) & (right >= confidence)).all())


def adding_problem(n_sequences, T, seed=0, dtype="float32"):
    """Hochreiter & Schmidhuber 1997, experiment 4: the adding problem.

    Each step is a pair (value in U[-1, 1], marker). Lengths are random in [T, T + T/10].
    Exactly two pairs are marked with 1.0: one among the first ten (its value is X_1), one
    among the first T/2 - 1 still unmarked pairs (X_2). The first and last pairs have marker
    -1 unless marked, all others 0; if the first pair is marked, its value is set to 0. The target,
    given at the end, is 0.5 + (X_1 + X_2) / 4; a sequence is processed correctly if the
    absolute error is below 0.04.

    Returns X (n, T + T//10, 2) zero-padded, Y (n,) targets, lengths (n,): for
    output="linear", target="last", lengths=lengths.
    """
    n, T, dt = _setup(n_sequences, T, "T", dtype, minimum=4)
    rng = np.random.default_rng(seed)
    T_max = T + T // 10
    lengths = rng.integers(T, T_max + 1, size=n)
    X = np.zeros((n, T_max, 2))
    steps = np.arange(T_max)
    X[:, :, 0] = np.where(steps < lengths[:, None], rng.uniform(-1, 1, size=(n, T_max)), 0)
    rows = np.arange(n)
    i1 = rng.integers(0, min(10, T), size=n)
    # X_2: uniform among the first T/2 - 1 pairs that are not i1
    i2 = rng.integers(0, max(T // 2 - 1, 1), size=n)
    i2 = i2 + (i2 >= i1)
    X[rows, 0, 1] = -1.0
    X[rows, lengths - 1, 1] = -1.0
    # "in the rare case where the first pair gets marked, we set X_1 to zero": the value
    # of a marked first pair is zeroed (whichever of the two marks it carries)
    X[rows, 0, 0] = np.where((i1 == 0) | (i2 == 0), 0.0, X[rows, 0, 0])
    X[rows, i1, 1] = 1.0
    X[rows, i2, 1] = 1.0
    Y = 0.5 + (X[rows, i1, 0] + X[rows, i2, 0]) / 4.0
    return X.astype(dt), Y.astype(dt), lengths


def adding_problem_solved(model, T, n_test=1000, seed=12345):
    """(fraction of fresh sequences with |error| < 0.04, mean absolute error)."""
    X, Y, lengths = adding_problem(n_test, T, seed=seed, dtype=model.dtype)
    out, _ = _last_outputs(model, X, lengths)
    err = np.abs(out[:, 0].astype(np.float64) - Y)
    return float(np.mean(err < 0.04)), float(np.mean(err))


def adding_problem_test(model, T, n_test=2000, seed=12345, tolerance=0.04):
    """Hochreiter & Schmidhuber's criterion for the adding problem on n_test fresh
    sequences: a dict with solved (every absolute error below tolerance: "2000 consecutive
    sequences processed correctly" at the default n_test), fraction (of sequences within
    tolerance), mse and mae (the mean squared and absolute errors). For scale: always
    predicting the mean target 0.5 gives an MSE of about Var(Y) = 2 Var(U[-1, 1]) / 16 =
    1/24 = 0.042."""
    X, Y, lengths = adding_problem(n_test, T, seed=seed, dtype=model.dtype)
    out, _ = _last_outputs(model, X, lengths)
    err = out[:, 0].astype(np.float64) - Y
    absolute = np.abs(err)
    return {"solved": bool((absolute < tolerance).all()),
            "fraction": float(np.mean(absolute < tolerance)),
            "mse": float(np.mean(err ** 2)), "mae": float(np.mean(absolute))}


def temporal_order(n_sequences, L, seed=0, dtype="float32"):
    """Pascanu, Mikolov & Bengio 2013: the temporal-order problem (from Hochreiter &
    Schmidhuber 1997, experiment 6a).

    Six one-hot channels A, B, c, d, e, f. Every step holds a random distractor from
    {c, d, e, f} except two: at p0 in [0.1 L, 0.2 L) and p1 in [0.5 L, 0.6 L) stands A or B.
    The class, read at the last step, is the ordered pair: AA=0, AB=1, BA=2, BB=3.

    Returns X (n, L, 6), Y (n,) int64 labels: for output="softmax", target="last".
    """
    n, L, dt = _setup(n_sequences, L, "L", dtype, minimum=10)
    rng = np.random.default_rng(seed)
    symbols = rng.integers(2, 6, size=(n, L))                   # distractors c..f
    p0 = rng.integers(int(0.1 * L), int(0.2 * L), size=n)
    p1 = rng.integers(int(0.5 * L), int(0.6 * L), size=n)
    s0, s1 = rng.integers(0, 2, size=n), rng.integers(0, 2, size=n)   # 0 = A, 1 = B
    rows = np.arange(n)
    symbols[rows, p0], symbols[rows, p1] = s0, s1
    X = np.zeros((n, L, 6), dt)
    np.put_along_axis(X, symbols[:, :, None], 1.0, axis=2)
    return X, 2 * s0 + s1


def latch(n_sequences, T, seed=0, dtype="float32", noise=0.2, info_steps=1):
    """Bengio, Simard & Frasconi 1994: the two-sequence ("latch") problem.

    The class (+1 or -1, equally likely) is the value of the first info_steps inputs; after
    them every input is Gaussian noise N(0, noise^2) carrying no information. The class must
    be latched in the state and reported at the end.

    Returns X (n, T, 1), Y (n,) int64 labels (0 for -1, 1 for +1): for output="softmax",
    target="last".
    """
    n, T, dt = _setup(n_sequences, T, "T", dtype)
    info_steps = _validate.positive_int(info_steps, "info_steps")
    if info_steps > T:
        raise ValueError(f"info_steps must be <= T = {T}; got {info_steps}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    X = rng.normal(0.0, noise, size=(n, T, 1))
    X[:, :info_steps, 0] = (2 * labels - 1)[:, None]
    return X.astype(dt), labels


def classification_accuracy(model, X, labels, lengths=None):
    """Fraction of sequences whose last-step argmax equals the label."""
    probs, _ = _last_outputs(model, X, lengths)
    return head.accuracy(probs, labels)


def _last_outputs(model, X, lengths=None):
    """Outputs (N, O) at each sequence's last valid step, and the states."""
    Y, S = model.forward(X, lengths=lengths)
    return Y[:, -1], S            # the last valid state is carried to the last step
