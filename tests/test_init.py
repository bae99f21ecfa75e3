"""fastrnn.init: initialisation schemes, spectral-radius rescaling and their arguments."""
import numpy as np
import pytest

import fastrnn
from fastrnn import init
from fastrnn.init import SCHEMES, init_params, spectral_radius

I, H, O = 3, 8, 2
SHAPES = {"W_x": (I, H), "W_s": (H, H), "b": (H,), "W_y": (H, O), "b_y": (O,)}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes_and_dtypes(scheme, dtype):
    p = init_params(I, H, O, scheme=scheme, rng=0, dtype=dtype)
    assert list(p) == ["W_x", "W_s", "b", "W_y", "b_y"]
    for k, shape in SHAPES.items():
        assert p[k].shape == shape and p[k].dtype == np.dtype(dtype), k
        assert p[k].flags.c_contiguous and p[k].flags.writeable
        assert np.isfinite(p[k]).all()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reproducible(scheme):
    a = init_params(I, H, O, scheme, rng=7)
    b = init_params(I, H, O, scheme, rng=np.random.default_rng(7))
    c = init_params(I, H, O, scheme, rng=8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    if scheme != "identity":                      # identity's W_s, biases are not random
        assert not np.array_equal(a["W_x"], c["W_x"])


@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes", [(1, 16, 1), (4, 7, 3), (5, 1, 2)])
def test_uniform_reproduces_elman_rnn(seed, dtype, sizes):
    model = fastrnn.ElmanRNN(*sizes, dtype=dtype, seed=seed)
    p = init_params(*sizes, scheme="uniform", rng=seed, dtype=dtype)
    assert p.keys() == model.params.keys()
    for k in p:
        assert p[k].dtype == model.params[k].dtype
        np.testing.assert_array_equal(p[k], model.params[k], err_msg=k)


def test_uniform_bound():
    p = init_params(20, 64, 10, "uniform", rng=0, dtype="float64")
    k = 1 / np.sqrt(64)
    for name, w in p.items():
        assert np.abs(w).max() <= k, name
    assert np.abs(p["W_s"]).max() > 0.9 * k        # and fills the range


def test_glorot():
    p = init_params(20, 64, 10, "glorot", rng=0, dtype="float64")
    for name, (fan_in, fan_out) in {"W_x": (20, 64), "W_s": (64, 64), "W_y": (64, 10)}.items():
        a = np.sqrt(6 / (fan_in + fan_out))
        w = p[name]
        assert np.abs(w).max() <= a and np.abs(w).max() > 0.9 * a, name
    # variance of U(-a, a) is a^2 / 3 = 2 / (fan_in + fan_out); 4096 samples of W_s
    assert p["W_s"].var() == pytest.approx(2 / 128, rel=0.1)
    assert not p["b"].any() and not p["b_y"].any()


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("n", [1, 2, 16, 64])
def test_orthogonal(dtype, tol, n):
    p = init_params(I, n, O, "orthogonal", rng=3, dtype=dtype)
    W = p["W_s"].astype(np.float64)               # the stored values, multiplied exactly
    np.testing.assert_allclose(W @ W.T, np.eye(n), atol=tol)
    np.testing.assert_allclose(W.T @ W, np.eye(n), atol=tol)
    assert spectral_radius(p["W_s"]) == pytest.approx(1.0, abs=10 * tol)
    a = np.sqrt(6 / (I + n))                      # W_x is Glorot uniform
    assert np.abs(p["W_x"]).max() <= a
    assert not p["b"].any() and not p["b_y"].any()


def test_orthogonal_is_haar():
    """Without the sign fix, numpy's (Householder) QR gives Q[0, 0] < 0 every time; a
    Haar-distributed Q has Q[0, 0] symmetric about 0, and uniform on [-1, 1] for n = 2."""
    rng = np.random.default_rng(0)
    corner = np.array([init.orthogonal(2, rng)[0, 0] for _ in range(2000)])
    assert 0.45 < np.mean(corner > 0) < 0.55
    # for n = 2, Q = [[cos t, -sin t], [sin t, cos t]] (or a reflection) with t uniform:
    # Q[0, 0] = cos t has mean 0 and variance 1/2
    assert abs(corner.mean()) < 0.05
    assert corner.var() == pytest.approx(0.5, rel=0.1)
    dets = [np.linalg.det(init.orthogonal(3, rng)) for _ in range(400)]
    assert np.allclose(np.abs(dets), 1)
    assert 0.4 < np.mean(np.array(dets) > 0) < 0.6          # O(n), not only SO(n)


def test_identity():
    p = init_params(50, 100, 40, "identity", rng=0, dtype="float64")
    np.testing.assert_array_equal(p["W_s"], np.eye(100))
    assert not p["b"].any() and not p["b_y"].any()
    assert p["W_x"].std() == pytest.approx(0.001, rel=0.05)
    assert p["W_y"].std() == pytest.approx(0.001, rel=0.05)
    assert abs(p["W_x"].mean()) < 1e-4


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("radius", [0.5, 0.9, 1.2])
def test_spectral_radius_rescaling(scheme, dtype, radius):
    for seed in range(3):
        p = init_params(I, 32, O, scheme, rng=seed, dtype=dtype, spectral_radius=radius)
        assert p["W_s"].dtype == np.dtype(dtype)
        assert spectral_radius(p["W_s"]) == pytest.approx(radius, rel=1e-6)
        # only W_s changes: the other parameters are the scheme's own
        plain = init_params(I, 32, O, scheme, rng=seed, dtype=dtype)
        for k in ("W_x", "b", "W_y", "b_y"):
            np.testing.assert_array_equal(p[k], plain[k])


def test_identity_rescaled():
    p = init_params(I, H, O, "identity", rng=0, dtype="float64", spectral_radius=0.5)
    np.testing.assert_array_equal(p["W_s"], 0.5 * np.eye(H))


def test_zero_spectral_radius_cannot_be_rescaled(monkeypatch):
    # no built-in scheme gives a nilpotent W_s (probability 0), so substitute one
    monkeypatch.setattr(init, "orthogonal", lambda n, rng=None: np.triu(np.ones((n, n)), 1))
    with pytest.raises(ValueError, match="spectral radius 0"):
        init_params(I, H, O, "orthogonal", rng=0, spectral_radius=1.0)


def test_spectral_radius_function():
    assert spectral_radius(np.diag([0.5, -2.0, 1.0])) == pytest.approx(2.0)
    t = 0.3                                            # complex eigenvalues e^{+-it}
    rot = 0.7 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
    assert spectral_radius(rot) == pytest.approx(0.7, rel=1e-6)
    assert isinstance(spectral_radius(rot), float)
    with pytest.raises(ValueError, match="square"):
        spectral_radius(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="W"):
        spectral_radius(np.zeros(3))
    with pytest.raises(TypeError, match="W"):
        spectral_radius(np.eye(2, dtype=np.int64))
    with pytest.raises(ValueError, match="NaN"):
        spectral_radius(np.full((2, 2), np.nan))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(scheme="xavier"), ValueError, "scheme.*'uniform', 'glorot', 'orthogonal', 'identity'"),
    (dict(scheme=None), ValueError, "scheme"),
    (dict(dtype="float16"), TypeError, "dtype"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(spectral_radius=0.0), ValueError, "spectral_radius"),
    (dict(spectral_radius=-1.0), ValueError, "spectral_radius"),
    (dict(spectral_radius=float("nan")), ValueError, "spectral_radius"),
    (dict(spectral_radius=float("inf")), ValueError, "spectral_radius"),
    (dict(spectral_radius="1"), TypeError, "spectral_radius"),
    (dict(spectral_radius=True), TypeError, "spectral_radius"),
    (dict(rng="seed"), TypeError, "rng"),
    (dict(rng=-1), TypeError, "rng"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        init_params(I, H, O, **kwargs)


@pytest.mark.parametrize("sizes,exc,match", [
    ((0, H, O), ValueError, "input_size"),
    ((I, -1, O), ValueError, "hidden_size"),
    ((I, H, 2.0), TypeError, "output_size"),
])
def test_bad_sizes(sizes, exc, match):
    with pytest.raises(exc, match=match):
        init_params(*sizes)


def test_model_trains_from_init_params():
    """init_params output drops into an ElmanRNN and gives finite losses and gradients."""
    model = fastrnn.ElmanRNN(I, H, O, activation="relu", seed=0)
    model.params.update(init_params(I, H, O, "identity", rng=1))
    X = np.random.default_rng(0).standard_normal((2, 5, I)).astype(np.float32)
    loss, grads = model.loss_and_grad(X, np.zeros((2, 5, O), np.float32))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
