"""ElmanRNN: the model object. Parameters, initialisation, forward, loss and gradients.

    s_t = phi(x_t W_x + s_{t-1} W_s + b)          state (hidden) layer, s_{-1} = h0
    y_t = s_t W_y + b_y   or   softmax(...)       output layer

The arithmetic lives in fastrnn.functional (and below it the backends); this class holds
the parameters and the hyperparameters that go with them.
"""
import numpy as np

from . import _validate
from .functional import elman_loss_and_grad, elman_predict, get_backend
from .init import init_params

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
        Seed of the initialisation (and of fit's shuffling).
    init : {"uniform", "glorot", "orthogonal", "identity"}
        Initialisation scheme (fastrnn.init): "uniform" is PyTorch's nn.RNN + nn.Linear
        default, U(-1/sqrt(H), 1/sqrt(H)); "orthogonal" an orthogonal W_s (Keras);
        "identity" the IRNN W_s = I (for relu).
    spectral_radius : float or None
        If given, W_s is rescaled to this spectral radius after initialisation.
    backend : {"cython", "numpy"}
        Compiled kernels, or the pure-NumPy reference.

    Attributes
    ----------
    params : dict of ndarray
        "W_x" (I, H), "W_s" (H, H), "b" (H,), "W_y" (H, O), "b_y" (O,). Optimizers update
        these arrays in place.
    """

    def __init__(self, input_size, hidden_size, output_size, activation="tanh",
                 output="linear", dtype="float32", seed=0, backend="cython", init="uniform",
                 spectral_radius=None):
        self.input_size = _validate.positive_int(input_size, "input_size")
        self.hidden_size = _validate.positive_int(hidden_size, "hidden_size")
        self.output_size = _validate.positive_int(output_size, "output_size")
        self.activation = _validate.choice(activation, "activation", _validate.ACTIVATIONS)
        self.output = _validate.choice(output, "output", _validate.OUTPUTS)
        self.dtype = _validate.float_dtype(dtype)
        get_backend(backend)                      # fail now, not at the first forward
        self.backend = backend
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or
                                 not isinstance(seed, (int, np.integer)) or seed < 0):
            raise TypeError(f"seed must be None or a non-negative int; got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.init = init
        self.spectral_radius = spectral_radius
        self._shapes = self.param_shapes()
        self.params = init_params(self.input_size, self.hidden_size, self.output_size,
                                  scheme=init, rng=self.seed, dtype=self.dtype,
                                  spectral_radius=spectral_radius)

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

    def step(self, x, h=None):
        """One time step of streaming inference: (y, h_new) for input x (N, I) or (I,) and
        state h (N, H) or (H,) (None: zeros). y is (N, O) or (O,) (probabilities for a
        softmax output). Feed h_new back in for the next step.

        Built for per-call speed (a few microseconds at batch size one): x and h are fully
        checked, the weights with quick identity, shape, dtype and finiteness tests.
        """
        single = np.ndim(x) == 1
        x = _validate.float_array(x, "x", "(I,)" if single else "(N, I)", self.dtype,
                                  finish=False, dtype_of="the model")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"x must have {self.input_size} (input_size) features in its "
                             f"last axis; got shape {x.shape}")
        N = 1 if single else x.shape[0]
        I, H, O = self.input_size, self.hidden_size, self.output_size
        _validate.blas_sizes(N=N, T=1, I=I, H=H, O=O)
        _validate.memory(N * (I + 3 * H + O) * self.dtype.itemsize, "step")
        x = _validate.finished(x, "x")
        X = x.reshape(1, 1, -1) if single else x[:, None, :]
        if h is None:
            h = np.zeros((N, self.hidden_size), self.dtype)
        else:
            h = _validate.float_array(h, "h", "(H,)" if single else "(N, H)", self.dtype,
                                      dtype_of="the model")
            h = h.reshape(1, -1) if single else h
            if h.shape != (N, self.hidden_size):
                raise ValueError(f"h must have shape (N, H) = {(N, self.hidden_size)}"
                                 f" to match x {x.shape}; got {h.shape}")
        try:
            W_x, W_s, b, W_y, b_y = _validate.model_weights(self.params, self._shapes,
                                                            self.dtype)
        except KeyError:
            self._weights()                       # raises the clear KeyError
            raise
        Y, S = get_backend(self.backend).predict(np.ascontiguousarray(X), h, W_x, W_s, b,
                                                 W_y, b_y, self.activation, self.output)
        if single:
            return Y[0, 0], S[0, 0]
        return Y[:, 0], S[:, 0]

    def fit(self, X, Y, *, epochs=10, batch_size=32, optimizer="adam", lr=None,
            clip_norm=5.0, clip_value=None, tbptt=None, lengths=None, target="sequence",
            validation_data=None, callbacks=(), shuffle=True, progress=None,
            max_bad_steps=10, seed=None):
        """Train on X (N, T, I) and targets Y (as for loss_and_grad); returns a History.

        optimizer: "sgd", "adagrad", "rmsprop", "adam", or a fastrnn.optim.Optimizer
        (class or instance); lr=None is its default. clip_norm: clip the global gradient
        norm (None: off); clip_value: clip each entry. tbptt=k: truncated BPTT in chunks of
        k steps, the state carried across chunks, one update per chunk. lengths (N,):
        variable-length sequences. validation_data: (X_val, Y_val[, lengths_val]).
        callbacks: fastrnn.train.Callback objects (EarlyStopping, ModelCheckpoint).
        progress: tqdm bar; None = only on a terminal. A step with a NaN/inf loss,
        gradient or update is skipped; max_bad_steps in a row raise FloatingPointError.
        seed: of the shuffling (default: the model's seed): the same seed and thread count
        give bit-identical weights.
        """
        from .train import fit
        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                   lr=lr, clip_norm=clip_norm, clip_value=clip_value, tbptt=tbptt,
                   lengths=lengths, target=target, validation_data=validation_data,
                   callbacks=callbacks, shuffle=shuffle, progress=progress,
                   max_bad_steps=max_bad_steps, seed=seed)

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
