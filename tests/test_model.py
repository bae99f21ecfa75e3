"""ElmanRNN: parameters, initialisation, forward, loss_and_grad, and that it can learn."""
import numpy as np
import pytest

import fastrnn
from conftest import assert_close


def test_params_shapes_dtype_and_init():
    for dtype in ("float32", "float64"):
        m = fastrnn.ElmanRNN(3, 5, 2, dtype=dtype)
        shapes = {k: v.shape for k, v in m.params.items()}
        assert shapes == {"W_x": (3, 5), "W_s": (5, 5), "b": (5,), "W_y": (5, 2), "b_y": (2,)}
        assert all(v.dtype == np.dtype(dtype) for v in m.params.values())
        k = 1 / np.sqrt(5)
        assert all(np.abs(v).max() <= k for v in m.params.values())


def test_seed_reproducible_and_distinct():
    a, b, c = (fastrnn.ElmanRNN(4, 6, 3, seed=s) for s in (1, 1, 2))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W_s"], c.params["W_s"])


@pytest.mark.parametrize("output", ["linear", "softmax"])
def test_forward_shapes_and_softmax(output, backend):
    m = fastrnn.ElmanRNN(3, 7, 4, output=output, backend=backend)
    X = np.random.default_rng(0).standard_normal((5, 6, 3)).astype(np.float32)
    Y, S = m.forward(X)
    assert Y.shape == (5, 6, 4) and S.shape == (5, 6, 7)
    assert Y.dtype == np.float32 and S.dtype == np.float32
    if output == "softmax":
        np.testing.assert_allclose(Y.sum(axis=-1), 1, rtol=1e-5)
        assert (Y >= 0).all()


def test_h0_is_used(backend):
    m = fastrnn.ElmanRNN(2, 3, 1, dtype="float64", backend=backend)
    X = np.ones((2, 4, 2))
    Y0, S0 = m.forward(X)
    Y1, S1 = m.forward(X, h0=np.zeros((2, 3)))
    np.testing.assert_array_equal(S0, S1)
    _, S2 = m.forward(X, h0=np.ones((2, 3)))
    assert not np.allclose(S0[:, 0], S2[:, 0])


def test_backends_agree_through_the_model():
    X = np.random.default_rng(1).standard_normal((4, 9, 3))
    Y = np.random.default_rng(2).integers(0, 5, size=4)
    out = []
    for backend in ("cython", "numpy"):
        m = fastrnn.ElmanRNN(3, 6, 5, output="softmax", dtype="float64", backend=backend)
        out.append(m.loss_and_grad(X, Y, target="last"))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-12)
    for k in out[0][1]:
        assert_close(out[0][1][k], out[1][1][k], 1e-10, k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_descent_learns_a_delayed_copy(dtype, backend):
    """Plain full-batch gradient descent on y_t = x_{t-1}: the loss falls by 10x."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(32, 12, 1)).astype(dtype)
    Y = np.zeros_like(X)
    Y[:, 1:] = X[:, :-1]
    m = fastrnn.ElmanRNN(1, 16, 1, dtype=dtype, seed=0, backend=backend)
    first, _ = m.loss_and_grad(X, Y)
    for _ in range(400):
        loss, grads = m.loss_and_grad(X, Y)
        for k, g in grads.items():
            m.params[k] -= 0.5 * g
    assert np.isfinite(loss) and loss < first / 10


def test_repr():
    assert "ElmanRNN(input_size=2, hidden_size=3" in repr(fastrnn.ElmanRNN(2, 3, 4))
