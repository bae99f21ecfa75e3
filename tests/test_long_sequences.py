"""Long sequences: the compiled recurrences prefetch the next step's rows when their arrays
exceed fastrnn._kernels' PREFETCH_ABOVE_BYTES (4 MiB), a path short tests never take. Every
cell, both directions, with lengths, float64: the compiled loss_and_grad (split across two
threads as well) against the NumPy twin."""
import numpy as np
import pytest

import fastrnn

MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
N, T, I, H, O = 5, 2500, 3, 16, 2


@pytest.mark.parametrize("cell", list(MODELS))
def test_long_sequences_match_the_numpy_twin(cell):
    gates = {"elman": 1, "lstm": 4, "gru": 3}[cell]
    hidden = 4 * H if cell == "elman" else H        # every cell's gate array above 4 MiB
    assert N * T * gates * hidden * 8 > 4 * 2**20
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, I))
    Y = rng.standard_normal((N, T, O))
    lengths = np.array([T, T - 1, 1700, 3, T])
    cy = MODELS[cell](I, hidden, O, bidirectional=True, seed=0, dtype="float64")
    np_ = MODELS[cell](cy.input_size, cy.hidden_size, O, bidirectional=True, seed=0,
                       dtype="float64", backend="numpy")
    np_.params = {k: v.copy() for k, v in cy.params.items()}
    want = np_.loss_and_grad(X, Y, lengths=lengths)
    for threads in (1, 2):
        with fastrnn.threads(threads):
            got = cy.loss_and_grad(X, Y, lengths=lengths)
        assert abs(got[0] - want[0]) <= 1e-10 * abs(want[0])
        for name in want[1]:
            scale = max(1.0, float(np.abs(want[1][name]).max()))
            np.testing.assert_allclose(got[1][name], want[1][name], rtol=0,
                                       atol=1e-10 * scale, err_msg=name)
    np.testing.assert_allclose(cy.predict(X, lengths=lengths),
                               np_.predict(X, lengths=lengths), rtol=0, atol=1e-10)
