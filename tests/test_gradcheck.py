"""Finite-difference checks, in float64, of every gradient both backends return."""
import numpy as np
import pytest

import fastrnn
from conftest import ACTIVATIONS, make_problem

SHAPES = [  # (N, T, I, H, O): I != H != O, and the degenerate sizes 1
    (2, 3, 4, 5, 3),
    (1, 1, 1, 1, 1),
    (1, 4, 2, 1, 3),
    (3, 1, 2, 3, 2),
    (2, 6, 3, 4, 2),
]
EPS = 1e-6


def numerical_gradient(f, arr):
    """Central differences of the scalar f() with respect to every element of arr."""
    grad = np.empty_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + EPS
        up = f()
        flat[i] = orig - EPS
        down = f()
        flat[i] = orig
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def check(analytic, numeric, name):
    # central differences are accurate to ~1e-9 here; any real gradient bug is O(1)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}I{}H{}O{}".format(*s))
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_loss_and_grad_matches_finite_differences(shape, activation, output, target, backend):
    p = make_problem(*shape, output=output, target=target, seed=sum(shape))
    kw = dict(activation=activation, output=output, target=target, backend=backend)

    def loss():
        return fastrnn.elman_loss_and_grad(**p, **kw)[0]

    value, grads = fastrnn.elman_loss_and_grad(**p, **kw, input_grads=True)
    assert value == pytest.approx(loss(), rel=1e-12)
    assert set(grads) == {"X", "h0", "W_x", "W_s", "b", "W_y", "b_y"}
    for name in grads:
        check(grads[name], numerical_gradient(loss, p[name]), name)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}T{}I{}H{}O{}".format(*s))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_matches_finite_differences(shape, activation, backend):
    """elman_backward with an arbitrary dS is the gradient of sum(dS * S)."""
    N, T, I, H, O = shape
    p = make_problem(*shape, seed=7 + sum(shape))
    rec = {k: p[k] for k in ("X", "h0", "W_x", "W_s", "b")}
    dS = np.random.default_rng(1).standard_normal((N, T, H))

    def loss():
        return float(np.sum(dS * fastrnn.elman_forward(**rec, activation=activation,
                                                       backend=backend)))

    S = fastrnn.elman_forward(**rec, activation=activation, backend=backend)
    grads = fastrnn.elman_backward(**rec, S=S, dS=dS, activation=activation, backend=backend)
    assert set(grads) == set(rec)
    for name in rec:
        assert grads[name].shape == rec[name].shape
        check(grads[name], numerical_gradient(loss, rec[name]), name)


def test_model_gradients_match_finite_differences(backend):
    model = fastrnn.ElmanRNN(3, 4, 2, dtype="float64", seed=3, backend=backend)
    p = make_problem(2, 5, 3, 4, 2, seed=11)
    X, Y = p["X"], p["Y"]

    def loss():
        return model.loss_and_grad(X, Y)[0]

    _, grads = model.loss_and_grad(X, Y)
    assert set(grads) == set(model.params)
    for name, value in model.params.items():
        check(grads[name], numerical_gradient(loss, value), name)
