"""The model classes: parameters, initialisation, forward, loss and gradients, fit, save.

    state_t = cell(x_t, state_{t-1})          the recurrence (fastrnn/cells/)
    y_t = h_t W_y + b_y   or   softmax(...)   the output layer (fastrnn/head.py)

RecurrentModel holds what every cell shares; a subclass names its cell (a CellSpec, the one
source of truth for the cell's parameters and states) and its own hyperparameters. The
arithmetic lives in fastrnn.functional and below it in the cells' backends.
"""
import numpy as np

from . import _validate, head
from .cells import ELMAN
from .cells import GRU as GRU_CELL
from .cells import LSTM as LSTM_CELL
from .functional import cell_loss_and_grad, cell_predict
from .init import init_params

PARAM_NAMES = ELMAN.weight_names + head.PARAMS      # the Elman network's, in file order


class RecurrentModel:
    """What every recurrent model shares. Subclasses set `cell` (a CellSpec) and pass their
    cell's options (e.g. the Elman activation) as a dict to __init__."""

    cell = None

    def __init__(self, input_size, hidden_size, output_size, options, output="linear",
                 dtype="float32", seed=0, backend="cython", init="uniform", init_options=None):
        self._configure(input_size, hidden_size, output_size, options, output, dtype, seed,
                        backend)
        self.init = init
        self.params = init_params(self.input_size, self.hidden_size, self.output_size,
                                  scheme=init, rng=self.seed, dtype=self.dtype,
                                  cell=self.cell, **(init_options or {}))

    def _configure(self, input_size, hidden_size, output_size, options, output, dtype, seed,
                   backend):
        """Check and set every hyperparameter but the initialisation."""
        self.input_size = _validate.positive_int(input_size, "input_size")
        self.hidden_size = _validate.positive_int(hidden_size, "hidden_size")
        self.output_size = _validate.positive_int(output_size, "output_size")
        for name, value in options.items():
            setattr(self, name, _validate.cell_option(name, value))
        self.output = _validate.choice(output, "output", _validate.OUTPUTS)
        self.dtype = _validate.float_dtype(dtype)
        self.cell.backend(backend)                # fail now, not at the first forward
        self.backend = backend
        if seed is not None and (isinstance(seed, (bool, np.bool_)) or
                                 not isinstance(seed, (int, np.integer)) or seed < 0):
            raise TypeError(f"seed must be None or a non-negative int; got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._shapes = self.param_shapes()

    @classmethod
    def from_params(cls, params, **hyperparameters):
        """A model of this class holding params (a dict of arrays, used as they are), built
        without drawing a random initialisation first. hyperparameters: those of the
        constructor but init; the params must have the shapes and dtype they call for."""
        model = cls.__new__(cls)
        options = {k: hyperparameters.pop(k) for k in model.cell.options if k in hyperparameters}
        sizes = [hyperparameters.pop(k) for k in ("input_size", "hidden_size", "output_size")]
        model._configure(*sizes, model._default_options(options), **hyperparameters)
        model.init = None
        model.params = dict(params)
        model._weights()                          # keys and shapes, with the model's message
        for name, w in model.params.items():
            if w.dtype != model.dtype:
                raise TypeError(f"params[{name!r}] has dtype {w.dtype} but the model has dtype "
                                f"{model.dtype}")
        return model

    def _default_options(self, options):
        return options

    def hyperparameters(self):
        """The constructor's arguments that define the model (sizes, cell options, output,
        dtype, backend, seed), as stored in saved files."""
        hp = {"input_size": self.input_size, "hidden_size": self.hidden_size,
              "output_size": self.output_size}
        hp.update({name: getattr(self, name) for name in self.cell.options})
        hp.update(output=self.output, dtype=self.dtype.name, backend=self.backend,
                  seed=self.seed)
        return hp

    def __repr__(self):
        options = "".join(f", {k}={getattr(self, k)!r}" for k in self.cell.options)
        return (f"{type(self).__name__}(input_size={self.input_size}, hidden_size="
                f"{self.hidden_size}, output_size={self.output_size}{options}, "
                f"output={self.output!r}, dtype={self.dtype.name!r}, backend={self.backend!r})")

    # ---- parameters and states -----------------------------------------------------------

    @property
    def param_names(self):
        """The parameter keys, the cell's first (in its spec's order), then the head's."""
        return self.cell.weight_names + head.PARAMS

    def param_shapes(self):
        """{name: shape} of the parameters this model's sizes call for."""
        shapes = self.cell.weight_shapes(self.input_size, self.hidden_size)
        shapes.update(head.param_shapes(self.hidden_size, self.output_size))
        return shapes

    def _options(self):
        """The cell's options as the backends take them (a tuple in the spec's order)."""
        return tuple(getattr(self, name) for name in self.cell.options)

    def _weights(self):
        """(cell weights tuple, W_y, b_y), checked against the model's own sizes (the
        functional layer checks dtypes and values)."""
        p = self.params
        names = self.param_names
        missing = [k for k in names if k not in p]
        if missing:
            raise KeyError(f"model.params is missing {missing}; expected keys {names}")
        for name, shape in self.param_shapes().items():
            got = getattr(p[name], "shape", None)
            if got != shape:
                raise ValueError(f"model.params[{name!r}] must have shape {shape} for "
                                 f"{self!r}; got {got if got is not None else type(p[name])}")
        return tuple(p[k] for k in self.cell.weight_names), p["W_y"], p["b_y"]

    def _state0(self, h0):
        """The initial state as the backends take it: a tuple in the order of the cell's
        states. h0: None (zeros), an (N, H) array for a one-state cell, or for a cell with
        several states (the LSTM's h and c) a tuple of them (entries may be None)."""
        n = len(self.cell.states)
        if n == 1:
            return (h0,)
        if h0 is None:
            return (None,) * n
        if not isinstance(h0, (tuple, list)) or len(h0) != n:
            names = ", ".join(f"{s}0" for s in self.cell.states)
            raise TypeError(f"the initial state of {type(self).__name__} must be None or a "
                            f"tuple ({names}) of (N, H) arrays; got {type(h0).__name__}")
        return tuple(h0)

    def _state_out(self, state):
        """A final state as the user sees it: the array for a one-state cell, else the
        tuple."""
        return state[0] if len(self.cell.states) == 1 and isinstance(state, tuple) else state

    # ---- computation -----------------------------------------------------------------------

    def forward(self, X, h0=None, lengths=None, return_state=False):
        """(Y, S): outputs Y (N, T, O) (probabilities if output="softmax") and (hidden)
        states S (N, T, H) for inputs X (N, T, I); h0 is the state before step 0 (zeros if
        None; for the LSTM a tuple (h0, c0)). lengths (N,): variable-length sequences.
        With return_state, (Y, S, state): the final state (h (N, H); for the LSTM (h, c)),
        each sequence's at its last valid step."""
        weights, W_y, b_y = self._weights()
        X = self._input(X)
        Y, *states = cell_predict(self.cell, X, self._state0(h0), weights, W_y, b_y,
                                  self._options(), self.output, self.backend, lengths)
        if return_state:
            return Y, states[0], self._state_out(tuple(S[:, -1].copy() for S in states))
        return Y, states[0]

    def loss_and_grad(self, X, Y_target, h0=None, target="sequence", *, lengths=None,
                      return_state=False, state_grad_norms=False, input_grads=False):
        """(loss, grads): mean loss (MSE for linear output, cross-entropy for softmax) and
        its gradient for every parameter, keyed like params.

        Y_target: (N, T, O) real targets, or (N, T) integer labels for softmax, if target is
        "sequence"; (N, O) or (N,) if target is "last" (only the last step is scored).
        lengths (N,): variable-length sequences. return_state: also return the final state
        (for truncated BPTT), as (loss, grads, state). state_grad_norms:
        grads["state_grad_norms"] (N, T), ||dLoss/dh_t|| per sequence and step.
        input_grads: grads also holds "X" and the initial states' gradients.
        """
        weights, W_y, b_y = self._weights()
        X = self._input(X)
        out = cell_loss_and_grad(self.cell, X, Y_target, self._state0(h0), weights, W_y, b_y,
                                 self._options(), self.output, target, self.backend,
                                 input_grads, lengths, return_state, state_grad_norms)
        if return_state:
            return out[0], out[1], self._state_out(out[2])
        return out

    def step(self, x, h=None):
        """One time step of streaming inference: (y, h_new) for input x (N, I) or (I,) and
        state h (N, H) or (H,) (None: zeros; for the LSTM a tuple (h, c) of them). y is
        (N, O) or (O,) (probabilities for a softmax output). Feed h_new back in for the
        next step.

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
        G = self.cell.n_gates
        _validate.blas_sizes(N=N, T=1, I=I, H=H, O=O, **({"GH": G * H} if G > 1 else {}))
        _validate.memory(N * (I + (2 + G) * H + O) * self.dtype.itemsize, "step")
        x = _validate.finished(x, "x")
        X = x.reshape(1, 1, -1) if single else x[:, None, :]
        several = len(self.cell.states) > 1
        state = []
        for name, s in zip(self.cell.states, self._state0(h)):
            label = name if several else "h"
            if s is None:
                s = np.zeros((N, H), self.dtype)
            else:
                s = _validate.float_array(s, label, "(H,)" if single else "(N, H)", self.dtype,
                                          dtype_of="the model")
                s = s.reshape(1, -1) if single else s
                if s.shape != (N, H):
                    raise ValueError(f"{label} must have shape (N, H) = {(N, H)} to match x "
                                     f"{x.shape}; got {s.shape}")
            state.append(s)
        try:
            weights = _validate.model_weights(self.params, self._shapes, self.dtype)
        except KeyError:
            self._weights()                       # raises the clear KeyError
            raise
        Y, *states = self.cell.backend(self.backend).predict(
            np.ascontiguousarray(X), *state, *weights, *self._options(), self.output)
        at = (0, 0) if single else (slice(None), 0)
        return Y[at], self._state_out(tuple(S[at] for S in states))

    def fit(self, X, Y, *, epochs=10, batch_size=32, optimizer="adam", lr=None,
            clip_norm=5.0, clip_value=None, tbptt=None, lengths=None, target="sequence",
            validation_data=None, callbacks=(), shuffle=True, progress=None,
            max_bad_steps=10, seed=None, lr_schedule=None):
        """Train on X (N, T, I) and targets Y (as for loss_and_grad); returns a History.

        optimizer: "sgd", "adagrad", "rmsprop", "adam", or a fastrnn.optim.Optimizer
        (class or instance); lr=None is its default. lr_schedule: None or "constant" (a
        constant lr), "cosine" (fastrnn.optim.CosineLR over these epochs) or a schedule
        object (fastrnn.optim.StepLR(10), any callable epoch -> factor); not with an
        Optimizer instance, which has its own. clip_norm: clip the global gradient
        norm (None: off); clip_value: clip each entry. tbptt=k: truncated BPTT in chunks of
        k steps, the state carried across chunks, one update per chunk. lengths (N,):
        variable-length sequences. validation_data: (X_val, Y_val[, lengths_val]).
        callbacks: fastrnn.train.Callback objects (EarlyStopping, ModelCheckpoint).
        progress: None = a tqdm bar on a terminal (or in a notebook), plain lines on stderr
        elsewhere (logs, CI, pipes); True = a bar anyway; False = nothing. A step with a
        NaN/inf loss, gradient or update is skipped (an overflowing update is undone,
        optimizer state included); max_bad_steps in a row raise FloatingPointError.
        seed: of the shuffling (default: the model's seed): the same seed and thread count
        give bit-identical weights.
        """
        from .train import fit
        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                   lr=lr, clip_norm=clip_norm, clip_value=clip_value, tbptt=tbptt,
                   lengths=lengths, target=target, validation_data=validation_data,
                   callbacks=callbacks, shuffle=shuffle, progress=progress,
                   max_bad_steps=max_bad_steps, seed=seed, lr_schedule=lr_schedule)

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


class ElmanRNN(RecurrentModel):
    """An Elman network with a linear or softmax output layer.

        s_t = phi(x_t W_x + s_{t-1} W_s + b)          state (hidden) layer, s_{-1} = h0
        y_t = s_t W_y + b_y   or   softmax(...)       output layer

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
        W_x (I, H), W_s (H, H), b (H,), W_y (H, O), b_y (O,). Optimizers update these
        arrays in place.
    """

    cell = ELMAN

    def __init__(self, input_size, hidden_size, output_size, activation="tanh",
                 output="linear", dtype="float32", seed=0, backend="cython", init="uniform",
                 spectral_radius=None):
        self.spectral_radius = spectral_radius
        super().__init__(input_size, hidden_size, output_size, {"activation": activation},
                         output=output, dtype=dtype, seed=seed, backend=backend, init=init,
                         init_options={"spectral_radius": spectral_radius})

    def _default_options(self, options):
        self.spectral_radius = None
        return {"activation": "tanh", **options}



class LSTM(RecurrentModel):
    """An LSTM network (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al.
    2000) with a linear or softmax output layer; PyTorch's nn.LSTM equations and gate order
    [i, f, g, o], so weights convert both ways:

        z_t = x_t W_x + h_{t-1} W_s + b              (4H wide: [i, f, g, o])
        i, f, o = sigmoid(.)    g = tanh(.)
        c_t = f * c_{t-1} + i * g      h_t = o * tanh(c_t)       y_t = h_t W_y + b_y

    The state is the pair (h, c): h0 arguments, step() and return_state take and give a
    tuple (h, c) of (N, H) arrays.

    Parameters
    ----------
    input_size, hidden_size, output_size, output, dtype, seed, backend
        As for ElmanRNN.
    init : {"uniform", "glorot", "orthogonal", "identity"}
        As for ElmanRNN, applied to each gate block ("uniform" is PyTorch's nn.LSTM default).
    forget_gate : bool
        False: the 1997 cell without a forget gate, c_t = c_{t-1} + i * g (f = 1; the f
        blocks of the weights are kept, unused, so the layout stays PyTorch's).
    forget_bias : float
        Added to the forget gate's bias after the scheme: 1.0 by default (Jozefowicz,
        Zaremba & Sutskever 2015; Keras' unit_forget_bias), 0 reproduces PyTorch's init.
    chrono : int or None
        T_max of the chrono initialisation (Tallec & Ollivier 2018): b_f ~ log U[1, T_max-1],
        b_i = -b_f (replaces forget_bias); for dependencies up to about T_max steps.

    Attributes
    ----------
    params : dict of ndarray
        W_x (I, 4H), W_s (H, 4H), b (4H,), W_y (H, O), b_y (O,).
    """

    cell = LSTM_CELL

    def __init__(self, input_size, hidden_size, output_size, output="linear",
                 dtype="float32", seed=0, backend="cython", init="uniform", forget_gate=True,
                 forget_bias=1.0, chrono=None):
        self.forget_bias, self.chrono = forget_bias, chrono
        super().__init__(input_size, hidden_size, output_size, {"forget_gate": forget_gate},
                         output=output, dtype=dtype, seed=seed, backend=backend, init=init,
                         init_options={"forget_bias": forget_bias, "chrono": chrono})

    def _default_options(self, options):
        self.forget_bias, self.chrono = None, None
        return {"forget_gate": True, **options}


class GRU(RecurrentModel):
    """A GRU network (Cho et al. 2014) with a linear or softmax output layer; PyTorch's
    nn.GRU equations ("linear before reset") and gate order [r, z, n]:

        r = sigmoid(x W_x[r] + b[r] + h W_s[r] + b_s[r])      z likewise
        n = tanh(x W_x[n] + b[n] + r * (h W_s[n] + b_s[n]))
        h_t = (1 - z) * n + z * h_{t-1}                         y_t = h_t W_y + b_y

    Parameters
    ----------
    input_size, hidden_size, output_size, output, dtype, seed, backend, init
        As for ElmanRNN ("uniform" is PyTorch's nn.GRU default), init applied to each gate
        block.

    Attributes
    ----------
    params : dict of ndarray
        W_x (I, 3H), W_s (H, 3H), b (3H,), b_s (3H,) (the recurrent bias, which the reset
        gate multiplies), W_y (H, O), b_y (O,).
    """

    cell = GRU_CELL

    def __init__(self, input_size, hidden_size, output_size, output="linear",
                 dtype="float32", seed=0, backend="cython", init="uniform"):
        super().__init__(input_size, hidden_size, output_size, {}, output=output, dtype=dtype,
                         seed=seed, backend=backend, init=init)


# The model class of each cell, by the cell's name (fastrnn.load builds the right one).
MODELS = {cls.cell.name: cls for cls in (ElmanRNN, LSTM, GRU)}
