"""ElmanRNN: the model object. Parameters, initialisation, forward, loss and gradients.

    s_t = phi(x_t W_x + s_{t-1} W_s + b)          state (hidden) layer, s_{-1} = h0
    y_t = s_t W_y + b_y   or   softmax(...)       output layer

The arithmetic lives in fastrnn.functional (and below it the backends); this class holds
the parameters and the hyperparameters that go with them.
"""
import numpy as np

from . import _validate
from .functional import elman_loss_and_grad, elman_predict, get_backend

PARAM_NAMES = ("W_x", "W_s", "b", "W_y", "b_y")


class ElmanRNN:
    """An Elman network with a linear or softmax output layer.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        I, H, O.
    activation : {"tanh", "relu", "sigmoid", "identity"}
        phi of the state layer.
    output : {"linear", "softmax"}
        Linear outputs are trained with mean squared error, softmax outputs with
        cross-entropy on integer class labels.
    dtype : {"float32", "float64"}
        Dtype of the parameters; inputs must have the same one.
    seed : int or None
        Seed of the initialisation. Weights start as in PyTorch's nn.RNN + nn.Linear:
        uniform in [-1/sqrt(H), 1/sqrt(H)].
    backend : {"cython", "numpy"}
        Compiled kernels, or the pure-NumPy reference.

    Attributes
    ----------
    params : dict of ndarray
        "W_x" (I, H), "W_s" (H, H), "b" (H,), "W_y" (H, O), "b_y" (O,). Optimizers update
        these arrays in place.
    """

    def __init__(self, input_size, hidden_size, output_size, activation="tanh",
                 output="linear", dtype="float32", seed=0, backend="cython"):
        self.input_size = _validate.positive_int(input_size, "input_size")
        self.hidden_size = _validate.positive_int(hidden_size, "hidden_size")
        self.output_size = _validate.positive_int(output_size, "output_size")
        self.activation = _validate.choice(activation, "activation", _validate.ACTIVATIONS)
        self.output = _validate.choice(output, "output", _validate.OUTPUTS)
        self.dtype = _validate.float_dtype(dtype)
        get_backend(backend)                      # fail now, not at the first forward
        self.backend = backend
        self.seed = seed
        I, H, O = self.input_size, self.hidden_size, self.output_size
        _validate.memory((I * H + H * H + H * O + H + O) * self.dtype.itemsize,
                         "ElmanRNN parameters")
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"seed must be None, a non-negative int or a numpy Generator/"
                            f"SeedSequence; got {seed!r} ({exc})") from None
        k = 1.0 / np.sqrt(H)

        def uniform(*shape):
            return rng.uniform(-k, k, size=shape).astype(self.dtype)

        self.params = {"W_x": uniform(I, H), "W_s": uniform(H, H), "b": uniform(H),
                       "W_y": uniform(H, O), "b_y": uniform(O)}

    def __repr__(self):
        return (f"ElmanRNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, activation={self.activation!r}, "
                f"output={self.output!r}, dtype={self.dtype.name!r}, backend={self.backend!r})")

    def param_shapes(self):
        """{name: shape} of the parameters this model's sizes call for."""
        I, H, O = self.input_size, self.hidden_size, self.output_size
        return {"W_x": (I, H), "W_s": (H, H), "b": (H,), "W_y": (H, O), "b_y": (O,)}

    def _weights(self):
        """The parameters, checked against the model's own sizes (the functional layer
        checks dtypes and values)."""
        p = self.params
        missing = [k for k in PARAM_NAMES if k not in p]
        if missing:
            raise KeyError(f"model.params is missing {missing}; expected keys {PARAM_NAMES}")
        for name, shape in self.param_shapes().items():
            got = getattr(p[name], "shape", None)
            if got != shape:
                raise ValueError(f"model.params[{name!r}] must have shape {shape} for "
                                 f"{self!r}; got {got if got is not None else type(p[name])}")
        return p["W_x"], p["W_s"], p["b"], p["W_y"], p["b_y"]

    def forward(self, X, h0=None):
        """(Y, S): outputs Y (N, T, O) (probabilities if output="softmax") and states
        S (N, T, H) for inputs X (N, T, I); h0 (N, H) is the state before step 0 (zeros if
        None)."""
        W_x, W_s, b, W_y, b_y = self._weights()
        X = self._input(X)
        return elman_predict(X, h0, W_x, W_s, b, W_y, b_y, self.activation, self.output,
                             self.backend)

    def loss_and_grad(self, X, Y_target, h0=None, target="sequence"):
        """(loss, grads): mean loss (MSE for linear output, cross-entropy for softmax) and
        its gradient for every parameter, keyed like params.

        Y_target: (N, T, O) real targets, or (N, T) integer labels for softmax, if target is
        "sequence"; (N, O) or (N,) if target is "last" (only the last step is scored).
        """
        W_x, W_s, b, W_y, b_y = self._weights()
        X = self._input(X)
        return elman_loss_and_grad(X, Y_target, h0, W_x, W_s, b, W_y, b_y, self.activation,
                                   self.output, target, self.backend)

    def save(self, path, metadata=None):
        """Write the model to path (.npz of the parameters with JSON metadata), atomically:
        see fastrnn.io.save. Load it back with fastrnn.load(path)."""
        from .io import save
        save(self, path, metadata=metadata)

    def _input(self, X):
        """X checked against the model: dtype and input size (shape errors name X)."""
        X = _validate.float_array(X, "X", "(N, T, I)", self.dtype, finish=False,
                                  dtype_of="the model")
        if X.shape[2] != self.input_size:
            raise ValueError(f"X must have shape (N, T, I) with I = input_size = "
                             f"{self.input_size}; got {X.shape}")
        return X
