"""Initialisation schemes for the parameters of every cell and its output layer.

    params = init_params(I, H, O, scheme="orthogonal", rng=0, spectral_radius=0.9)
    model = fastrnn.ElmanRNN(I, H, O)
    model.params.update(params)

Schemes (shown for the Elman cell, W_x (I, H), W_s (H, H), b (H,), W_y (H, O), b_y (O,);
gated cells apply them to each H-wide gate block of their weights):

    "uniform"     every parameter U(-1/sqrt(H), 1/sqrt(H)): PyTorch's nn.RNN + nn.Linear
                  default, and what ElmanRNN(seed=...) does
    "glorot"      W_x, W_s, W_y Glorot/Xavier uniform, zero biases
    "orthogonal"  W_s random orthogonal, W_x and W_y Glorot uniform, zero biases: the
                  Keras SimpleRNN default
    "identity"    W_s = I, W_x and W_y N(0, 0.001^2), zero biases: the IRNN
"""
import math

import numpy as np

from . import _validate, head

__all__ = ["SCHEMES", "init_params", "spectral_radius", "orthogonal", "glorot_uniform"]

SCHEMES = ("uniform", "glorot", "orthogonal", "identity")


def init_params(input_size, hidden_size, output_size, scheme="uniform", rng=None,
                dtype="float32", spectral_radius=None, cell="elman", num_layers=1,
                bidirectional=False, **cell_options):
    """A new dict of parameters for a cell and its output layer, all of the given dtype: for
    the Elman cell W_x (I, H), W_s (H, H), b (H,), W_y (H, O) and b_y (O,).

    scheme : {"uniform", "glorot", "orthogonal", "identity"}
        "uniform": every parameter U(-k, k) with k = 1/sqrt(H), the default of PyTorch's
        nn.RNN/LSTM/GRU and nn.Linear (both use 1/sqrt(fan_in), and fan_in = H for both).
        Drawn in the order of the parameters (the cell's, then W_y, b_y), so rng=seed
        reproduces ElmanRNN(seed=seed).params.
        "glorot": the weights (each gate block on its own) from U(-a, a) with a =
        sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, "Understanding the difficulty of
        training deep feedforward neural networks", AISTATS 2010); zero biases.
        "orthogonal": each gate block of W_s a Haar-random orthogonal matrix (Saxe,
        McClelland & Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep
        linear neural networks", ICLR 2014), W_x and W_y Glorot uniform, zero biases: Keras'
        SimpleRNN defaults (and Flax's recurrent-kernel default).
        "identity": each gate block of W_s = I, W_x and W_y N(0, 0.001^2), zero biases: the
        IRNN of Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent Networks of
        Rectified Linear Units", 2015 (meant for the Elman cell with activation="relu").
    rng : None, int, np.random.Generator or SeedSequence
        Source of randomness, passed to np.random.default_rng.
    dtype : {"float32", "float64"}
        Sampling is in float64; the results are cast to dtype.
    spectral_radius : float > 0, optional
        After the scheme, rescale W_s so that its spectral radius (largest |eigenvalue|)
        is this value. ValueError if W_s's spectral radius is 0. Only for a square W_s (the
        Elman cell).
    cell : "elman", "lstm", "gru" or a fastrnn.cells.CellSpec
        The cell whose parameters to make.
    num_layers, bidirectional
        A stack (fastrnn/stack.py): every layer and direction initialised alike with the
        scheme, its parameters named as in cell.stack_weight_names ("W_x_l1_reverse"),
        W_y (D*H, O); "uniform" bounds W_y and b_y by 1/sqrt(D*H), as nn.Linear(D*H, O).
    cell_options
        The cell's own initialisation options, applied after the scheme (drawing from rng
        after it): for the LSTM forget_bias (default 1.0) and chrono (default None); see
        fastrnn.cells.lstm.init_biases.
    """
    from .cells import get_cell          # here: fastrnn.cells imports this package's modules

    I = _validate.positive_int(input_size, "input_size")
    H = _validate.positive_int(hidden_size, "hidden_size")
    O = _validate.positive_int(output_size, "output_size")
    _validate.choice(scheme, "scheme", SCHEMES)
    dt = _validate.float_dtype(dtype)
    cell = get_cell(cell)
    rec = cell.recurrent_weight
    if spectral_radius is not None:
        target = _validate.positive_real(spectral_radius, "spectral_radius")
        if cell.n_gates != 1:
            raise ValueError(f"spectral_radius applies to a square recurrent weight (the "
                             f"Elman cell); the {cell.name} cell's {rec} has "
                             f"{cell.n_gates} gate blocks")
    L = _validate.positive_int(num_layers, "num_layers")
    D = 1 + _validate.boolean(bidirectional, "bidirectional")
    rng = _generator(rng)
    layers = cell.stack_weight_names(L, D == 2)        # [(W_x, W_s, b), (W_x_l0_reverse, ...)]
    shapes = cell.stack_weight_shapes(I, H, L, D == 2)
    shapes.update(head.param_shapes(D * H, O))
    n_weights = sum(math.prod(s) for s in shapes.values())
    biggest = max(shapes, key=lambda k: math.prod(shapes[k]))
    base = biggest.split("_l")[0] if biggest not in head.PARAMS else biggest
    size = ("hidden_size" if base == rec else "output_size" if biggest == "W_y" else
            "input_size" if shapes[biggest][0] == I and biggest == base else "hidden_size")
    _validate.memory(n_weights * 8, "init_params", hint=(
        f": the {cell.name} cell's parameters for input_size={I}, hidden_size={H}, "
        f"output_size={O}{f', num_layers={L}' if L > 1 else ''} are {n_weights:,} "
        f"numbers, drawn in float64 "
        f"({biggest} alone is {' x '.join(map(str, shapes[biggest]))}): {size} is too "
        f"large"))

    if scheme == "uniform":
        # exactly the models' draws: same bound, same order, same cast
        k, k_y = 1.0 / np.sqrt(H), 1.0 / np.sqrt(D * H)
        p = {name: rng.uniform(-(k_y if name in head.PARAMS else k),
                               k_y if name in head.PARAMS else k, size=shape).astype(dt)
             for name, shape in shapes.items()}
    else:
        p = {}
        for names in layers:
            for w, name in zip(cell.weights, names):     # W_x, then W_s (biases: zero)
                if w.rows is not None:
                    p[name] = np.concatenate(
                        [_block(scheme, w.name == rec, shapes[name][0], H, rng)
                         for _ in range(w.blocks)], axis=1)
        p["W_y"] = _block(scheme, False, D * H, O, rng)
        p = {name: (p[name] if name in p else np.zeros(shape)).astype(dt)
             for name, shape in shapes.items()}

    for names in layers:
        # the cell's own steps, per layer and direction, on a view of that layer's params
        layer = {w: p[name] for w, name in zip(cell.weight_names, names)}
        if spectral_radius is not None:
            W_s = layer[rec].astype(np.float64)
            radius = _radius(W_s)
            if radius == 0:
                raise ValueError(f"cannot rescale {rec} to spectral_radius={target}: the "
                                 f"{scheme!r} scheme gave a {rec} with spectral radius 0")
            p[names[cell.weight_names.index(rec)]] = (W_s * (target / radius)).astype(dt)
        if cell.init_biases is not None:
            cell.init_biases(layer, H, rng, **cell_options)      # in place on the views
        elif cell_options:
            raise TypeError(f"the {cell.name} cell takes no initialisation options; got "
                            f"{sorted(cell_options)}")
    return p


def _block(scheme, recurrent, rows, cols, rng):
    """One (rows, cols) weight block of a scheme other than "uniform", in float64."""
    if scheme == "identity":
        return np.eye(rows) if recurrent else 0.001 * rng.standard_normal((rows, cols))
    if scheme == "orthogonal" and recurrent:
        return orthogonal(rows, rng)
    return glorot_uniform(rows, cols, rng)


def spectral_radius(W):
    """The largest |eigenvalue| of a square float array W, computed in float64 (the one
    spectral-radius function: fastrnn.diagnostics uses it too)."""
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
