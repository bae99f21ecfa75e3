"""model.predict (outputs only) and model.forecast (closed loop: each prediction fed back as
the next input) for every cell, backend and a deep model, against forward on the growing
sequence; softmax greedy decoding; lengths; refusals."""
import numpy as np
import pytest

import fastrnn

MODELS = [fastrnn.ElmanRNN, fastrnn.LSTM, fastrnn.GRU]


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("cls", MODELS)
def test_forecast_equals_forward_on_the_growing_sequence(cls, backend, layers):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 7, 2))
    m = cls(2, 5, 2, dtype="float64", backend=backend, num_layers=layers, seed=1)
    np.testing.assert_array_equal(m.predict(X), m.forward(X)[0])
    np.testing.assert_array_equal(m.predict(X, target="last"), m.forward(X)[0][:, -1])
    out = m.forecast(X, 6)
    assert out.shape == (4, 6, 2)
    seq = X
    for k in range(6):
        y = m.forward(seq)[0][:, -1]
        np.testing.assert_allclose(out[:, k], y, rtol=1e-12, atol=1e-13)
        seq = np.concatenate([seq, y[:, None]], axis=1)


@pytest.mark.parametrize("cls", MODELS)
def test_forecast_with_lengths_continues_each_sequence(cls):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 6, 2))
    lengths = np.array([6, 2, 4])
    m = cls(2, 4, 2, dtype="float64")
    out = m.forecast(X, 3, lengths=lengths)
    for n, L in enumerate(lengths):
        np.testing.assert_allclose(out[n], m.forecast(X[n:n + 1, :L], 3)[0], rtol=1e-12,
                                   atol=1e-13)


def test_forecast_softmax_is_greedy():
    rng = np.random.default_rng(2)
    m = fastrnn.GRU(3, 6, 3, output="softmax", dtype="float64")
    X = np.eye(3)[rng.integers(0, 3, (2, 5))]
    out = m.forecast(X, 4)
    np.testing.assert_allclose(out.sum(-1), 1.0)
    seq = X
    for k in range(4):
        p = m.forward(seq)[0][:, -1]
        np.testing.assert_allclose(out[:, k], p, rtol=1e-12)
        seq = np.concatenate([seq, np.eye(3)[p.argmax(1)][:, None]], axis=1)


def test_forecast_refusals():
    X = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="output_size"):
        fastrnn.LSTM(2, 4, 1, dtype="float64").forecast(X, 2)
    with pytest.raises(ValueError, match="unidirectional"):
        fastrnn.GRU(2, 4, 2, dtype="float64", bidirectional=True).forecast(X, 2)
    with pytest.raises((ValueError, TypeError), match="steps"):
        fastrnn.GRU(2, 4, 2, dtype="float64").forecast(X, 0)
    with pytest.raises(ValueError, match="target"):
        fastrnn.GRU(2, 4, 2, dtype="float64").predict(X, target="first")
