"""Initialisation schemes for Elman network parameters.

    params = init_params(I, H, O, scheme="orthogonal", rng=0, spectral_radius=0.9)
    model = fastrnn.ElmanRNN(I, H, O)
    model.params.update(params)

Schemes (W_x (I, H), W_s (H, H), b (H,), W_y (H, O), b_y (O,)):

    "uniform"     every parameter U(-1/sqrt(H), 1/sqrt(H)): PyTorch's nn.RNN + nn.Linear
                  default, and what ElmanRNN(seed=...) does
    "glorot"      W_x, W_s, W_y Glorot/Xavier uniform, zero biases
    "orthogonal"  W_s random orthogonal, W_x and W_y Glorot uniform, zero biases: the
                  Keras SimpleRNN default
    "identity"    W_s = I, W_x and W_y N(0, 0.001^2), zero biases: the IRNN
"""
import numpy as np

from . import _validate

__all__ = ["SCHEMES", "init_params", "spectral_radius", "orthogonal", "glorot_uniform"]

SCHEMES = ("uniform", "glorot", "orthogonal", "identity")


def init_params(input_size, hidden_size, output_size, scheme="uniform", rng=None,
                dtype="float32", spectral_radius=None):
    """A new dict of parameters "W_x" (I, H), "W_s" (H, H), "b" (H,), "W_y" (H, O) and
    "b_y" (O,), all of the given dtype.

    scheme : {"uniform", "glorot", "orthogonal", "identity"}
        "uniform": every parameter U(-k, k) with k = 1/sqrt(H), the default of PyTorch's
        nn.RNN and nn.Linear (both use 1/sqrt(fan_in), and fan_in = H for both). Drawn in the
        order W_x, W_s, b, W_y, b_y, so rng=seed reproduces ElmanRNN(seed=seed).params.
        "glorot": W_x, W_s, W_y from U(-a, a) with a = sqrt(6 / (fan_in + fan_out))
        (Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
        networks", AISTATS 2010); zero biases.
        "orthogonal": W_s a Haar-random orthogonal matrix (Saxe, McClelland & Ganguli, "Exact
        solutions to the nonlinear dynamics of learning in deep linear neural networks",
        ICLR 2014), W_x and W_y Glorot uniform, zero biases: Keras' SimpleRNN defaults (and
        Flax's recurrent-kernel default).
        "identity": W_s = I, W_x and W_y N(0, 0.001^2), zero biases: the IRNN of Le, Jaitly &
        Hinton, "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units",
        2015 (meant for activation="relu").
    rng : None, int, np.random.Generator or SeedSequence
        Source of randomness, passed to np.random.default_rng.
    dtype : {"float32", "float64"}
        Sampling is in float64; the results are cast to dtype.
    spectral_radius : float > 0, optional
        After the scheme, rescale W_s so that its spectral radius (largest |eigenvalue|)
        is this value. ValueError if W_s's spectral radius is 0.
    """
    I = _validate.positive_int(input_size, "input_size")
    H = _validate.positive_int(hidden_size, "hidden_size")
    O = _validate.positive_int(output_size, "output_size")
    _validate.choice(scheme, "scheme", SCHEMES)
    dt = _validate.float_dtype(dtype)
    if spectral_radius is not None:
        target = _positive_float(spectral_radius, "spectral_radius")
    rng = _generator(rng)
    _validate.memory((I * H + H * H + H * O + H + O) * 8, "init_params")

    if scheme == "uniform":
        # exactly ElmanRNN's draws: same bound, same order, same cast
        k = 1.0 / np.sqrt(H)
        p = {name: rng.uniform(-k, k, size=shape).astype(dt) for name, shape in
             (("W_x", (I, H)), ("W_s", (H, H)), ("b", (H,)), ("W_y", (H, O)), ("b_y", (O,)))}
    else:
        if scheme == "glorot":
            W_x = glorot_uniform(I, H, rng)
            W_s = glorot_uniform(H, H, rng)
            W_y = glorot_uniform(H, O, rng)
        elif scheme == "orthogonal":
            W_x = glorot_uniform(I, H, rng)
            W_s = orthogonal(H, rng)
            W_y = glorot_uniform(H, O, rng)
        else:                                                   # "identity"
            W_x = 0.001 * rng.standard_normal((I, H))
            W_s = np.eye(H)
            W_y = 0.001 * rng.standard_normal((H, O))
        p = {"W_x": W_x.astype(dt), "W_s": W_s.astype(dt), "b": np.zeros(H, dt),
             "W_y": W_y.astype(dt), "b_y": np.zeros(O, dt)}

    if spectral_radius is not None:
        W_s = p["W_s"].astype(np.float64)
        radius = _radius(W_s)
        if radius == 0:
            raise ValueError(f"cannot rescale W_s to spectral_radius={target}: the "
                             f"{scheme!r} scheme gave a W_s with spectral radius 0")
        p["W_s"] = (W_s * (target / radius)).astype(dt)
    return p


def spectral_radius(W):
    """The largest |eigenvalue| of a square float array W, computed in float64."""
    W = _validate.float_array(W, "W", "(H, H)")
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square with shape (H, H); got {W.shape}")
    return _radius(W)


def orthogonal(n, rng=None):
    """An (n, n) float64 orthogonal matrix drawn uniformly (Haar measure): Q of the QR
    decomposition of a standard Gaussian matrix, with each column's sign fixed so that R has
    a positive diagonal (without the fix, numpy's QR does not give the uniform distribution;
    Mezzadri, "How to generate random matrices from the classical compact groups", 2007)."""
    n = _validate.positive_int(n, "n")
    Q, R = np.linalg.qr(_generator(rng).standard_normal((n, n)))
    signs = np.sign(np.diag(R))
    signs[signs == 0] = 1.0                  # a zero pivot has probability 0; keep Q as is
    return Q * signs                          # scales column j by signs[j]


def glorot_uniform(fan_in, fan_out, rng=None):
    """A (fan_in, fan_out) float64 matrix U(-a, a), a = sqrt(6 / (fan_in + fan_out))
    (Glorot & Bengio 2010): keeps activation and gradient variances about equal across the
    layer."""
    fan_in = _validate.positive_int(fan_in, "fan_in")
    fan_out = _validate.positive_int(fan_out, "fan_out")
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return _generator(rng).uniform(-a, a, size=(fan_in, fan_out))


def _radius(W):
    return float(np.max(np.abs(np.linalg.eigvals(W.astype(np.float64)))))


def _generator(rng):
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"rng must be None, a non-negative int or a numpy Generator/"
                        f"SeedSequence; got {rng!r} ({exc})") from None


def _positive_float(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a positive number; got {value!r} of type "
                        f"{type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value}")
    return value
