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
from .functional import (_threads_argument, cell_loss_and_grad, cell_predict,
                         stack_loss_and_grad, stack_predict)
from .init import init_params
from .stack import dropout_masks as dropout_masks_for

PARAM_NAMES = ELMAN.weight_names + head.PARAMS      # the Elman network's, in file order


class RecurrentModel:
    """What every recurrent model shares. Subclasses set `cell` (a CellSpec) and pass their
    cell's options (e.g. the Elman activation) as a dict to __init__.

    forward, predict, loss_and_grad, forecast and fit take threads=None: at most this many
    threads split a compiled call's batch (None: as many as SciPy's BLAS may use; see
    fastrnn.functional)."""

    cell = None

    def __init__(self, input_size, hidden_size, output_size, options, output="linear",
                 dtype="float32", seed=0, backend="cython", init="uniform", init_options=None,
                 num_layers=1, bidirectional=False, dropout=0.0):
        self._configure(input_size, hidden_size, output_size, options, output, dtype, seed,
                        backend, num_layers, bidirectional, dropout)
        self.init = init
        self.params = init_params(self.input_size, self.hidden_size, self.output_size,
                                  scheme=init, rng=self.seed, dtype=self.dtype,
                                  cell=self.cell, num_layers=self.num_layers,
                                  bidirectional=self.bidirectional, **(init_options or {}))

    def _configure(self, input_size, hidden_size, output_size, options, output, dtype, seed,
                   backend, num_layers=1, bidirectional=False, dropout=0.0):
        """Check and set every hyperparameter but the initialisation."""
        self.input_size = _validate.positive_int(input_size, "input_size")
        self.hidden_size = _validate.positive_int(hidden_size, "hidden_size")
        self.output_size = _validate.positive_int(output_size, "output_size")
        self.num_layers = _validate.positive_int(num_layers, "num_layers")
        self.bidirectional = _validate.boolean(bidirectional, "bidirectional")
        self.dropout = _validate.fraction(dropout, "dropout")
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
                  seed=self.seed, num_layers=self.num_layers, bidirectional=self.bidirectional,
                  dropout=self.dropout)
        return hp

    def __repr__(self):
        options = "".join(f", {k}={getattr(self, k)!r}" for k in self.cell.options)
        if self._stacked:
            options += f", num_layers={self.num_layers}, bidirectional={self.bidirectional}"
        if self.dropout:
            options += f", dropout={self.dropout!r}"
        return (f"{type(self).__name__}(input_size={self.input_size}, hidden_size="
                f"{self.hidden_size}, output_size={self.output_size}{options}, "
                f"output={self.output!r}, dtype={self.dtype.name!r}, backend={self.backend!r})")

    # ---- parameters and states -----------------------------------------------------------

    @property
    def _stacked(self):
        """More than one layer or direction: computed by fastrnn/stack.py."""
        return self.num_layers > 1 or self.bidirectional

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @property
    def param_names(self):
        """The parameter keys: the cell's, layer by layer and direction by direction (the
        spec's order; cell.stack_weight_names: "W_x", ..., "W_x_l0_reverse", ...,
        "W_x_l1", ...), then the head's."""
        return tuple(n for names in self._layer_names() for n in names) + head.PARAMS

    def _layer_names(self):
        return self.cell.stack_weight_names(self.num_layers, self.bidirectional)

    def param_shapes(self):
        """{name: shape} of the parameters this model's sizes call for."""
        shapes = self.cell.stack_weight_shapes(self.input_size, self.hidden_size,
                                               self.num_layers, self.bidirectional)
        shapes.update(head.param_shapes(self._directions * self.hidden_size,
                                        self.output_size))
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
        if self._stacked:
            return ([tuple(p[k] for k in names) for names in self._layer_names()], p["W_y"],
                    p["b_y"])
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

    @_threads_argument
    def forward(self, X, h0=None, lengths=None, return_state=False):
        """(Y, S): outputs Y (N, T, O) (probabilities if output="softmax") and (hidden)
        states S (N, T, H) for inputs X (N, T, I); h0 is the state before step 0 (zeros if
        None; for the LSTM a tuple (h0, c0)). lengths (N,): variable-length sequences.
        With return_state, (Y, S, state): the final state (h (N, H); for the LSTM (h, c)),
        each sequence's at its last valid step.

        Several layers or directions: S (N, T, D*H) is the top layer's, both directions
        concatenated; h0 and the final state are (L*D, N, H) (PyTorch's order: layer by
        layer, forward before reverse); the reverse direction's final state is its state
        after step 0. Dropout is never applied here.
        """
        weights, W_y, b_y = self._weights()
        X = self._input(X)
        if self._stacked:
            Y, S, state = stack_predict(self.cell, X, self._state0(h0), weights, W_y, b_y,
                                        self._options(), self.output, self.bidirectional,
                                        self.backend, lengths)
            return (Y, S, self._state_out(state)) if return_state else (Y, S)
        Y, *states = cell_predict(self.cell, X, self._state0(h0), weights, W_y, b_y,
                                  self._options(), self.output, self.backend, lengths)
        if return_state:
            return Y, states[0], self._state_out(tuple(S[:, -1].copy() for S in states))
        return Y, states[0]

    @_threads_argument
    def predict(self, X, h0=None, lengths=None, target="sequence"):
        """The outputs only: Y (N, T, O) at every step, or with target="last" (N, O) from
        each sequence's final state (for a bidirectional model: the forward direction's at
        its last valid step with the reverse direction's after step 0, as loss_and_grad
        scores target "last"). Probabilities if output="softmax"."""
        _validate.choice(target, "target", _validate.TARGETS)
        if target == "sequence":
            return self.forward(X, h0, lengths)[0]
        if not self.bidirectional:
            Y = self.forward(X, h0, lengths)[0]
            return Y[:, -1]                     # the last valid state is carried to T-1
        _, _, state = self.forward(X, h0, lengths, return_state=True)
        h = state[0] if isinstance(state, tuple) else state
        top = np.concatenate([h[-2], h[-1]], axis=1)[:, None]     # (N, 1, 2H)
        W_y, b_y = self.params["W_y"], self.params["b_y"]
        return head.predict(top, W_y, b_y, self.output)[:, 0]

    @_threads_argument
    def loss_and_grad(self, X, Y_target, h0=None, target="sequence", *, lengths=None,
                      return_state=False, state_grad_norms=False, input_grads=False,
                      dropout_rng=None, dropout_masks=None, sample_weight=None):
        """(loss, grads): mean loss (MSE for linear output, cross-entropy for softmax) and
        its gradient for every parameter, keyed like params.

        Y_target: (N, T, O) real targets, or (N, T) integer labels for softmax, if target is
        "sequence"; (N, O) or (N,) if target is "last" (only the last step is scored).
        lengths (N,): variable-length sequences. return_state: also return the final state
        (for truncated BPTT), as (loss, grads, state). state_grad_norms:
        grads["state_grad_norms"] (N, T), ||dLoss/dh_t|| per sequence and step.
        input_grads: grads also holds "X" and the initial states' gradients.

        Several layers or directions: see forward for the states' shapes; target "last"
        scores the output from each direction's final state. Dropout (training only):
        dropout_rng, a numpy Generator, draws fresh masks for this call when the model's
        dropout > 0 (fit passes its own, seeded); dropout_masks gives them instead (L-1
        arrays (N, T, D*H) of 0 and 1/(1-dropout)): the gradient is the one given the masks.
        Both are ignored by a one-layer model (dropout acts between layers, as in PyTorch).
        sample_weight (N,): the mean loss weighted by sequence (0 leaves one out, 2 counts
        it twice), as scikit-learn's sample_weight.
        """
        weights, W_y, b_y = self._weights()
        X = self._input(X)
        if self._stacked:
            return self._stack_loss_and_grad(X, Y_target, h0, target, lengths, return_state,
                                             state_grad_norms, input_grads, dropout_rng,
                                             dropout_masks, sample_weight)
        out = cell_loss_and_grad(self.cell, X, Y_target, self._state0(h0), weights, W_y, b_y,
                                 self._options(), self.output, target, self.backend,
                                 input_grads, lengths, return_state, state_grad_norms,
                                 sample_weight)
        if return_state:
            return out[0], out[1], self._state_out(out[2])
        return out

    def _stack_loss_and_grad(self, X, Y, h0, target, lengths, return_state, state_grad_norms,
                             input_grads, dropout_rng, dropout_masks, sample_weight=None):
        if state_grad_norms:
            raise ValueError("state_grad_norms is available for one layer and one direction "
                             f"only; this model has num_layers={self.num_layers}, "
                             f"bidirectional={self.bidirectional}")
        weights, W_y, b_y = self._weights()
        if dropout_masks is None:
            dropout_masks = self._dropout_masks(dropout_rng, X.shape)
        loss, g, state = stack_loss_and_grad(
            self.cell, X, Y, self._state0(h0), weights, W_y, b_y, self._options(),
            self.output, target, self.bidirectional, self.backend, input_grads, lengths,
            True, dropout_masks, sample_weight)
        return self._named_stack_grads(loss, g, state, return_state)

    def _dropout_masks(self, dropout_rng, shape):
        """Fresh dropout masks for a batch of X's shape, or None (no dropout_rng, or no
        dropout)."""
        if dropout_rng is None or not self.dropout > 0:
            return None
        N, T, _ = shape
        return dropout_masks_for(dropout_rng, self.dropout, N, T,
                                 self._directions * self.hidden_size, self.num_layers,
                                 self.dtype)

    def _named_stack_grads(self, loss, g, state, return_state):
        """A stack's (loss, grads[, state]) with the gradients keyed like params."""
        grads = {}
        for names, layer_grads in zip(self._layer_names(), g.pop("layers")):
            grads.update({name: layer_grads[w] for w, name in zip(self.cell.weight_names,
                                                                    names)})
        grads.update(g)
        if return_state:
            return loss, grads, self._state_out(state)
        return loss, grads

    def _train_loss_and_grad(self, X, Y, state, target, lengths, return_state, dropout_rng,
                             sample_weight):
        """loss_and_grad for fit's inner loop: the same computation without any per-call
        check, on what fit validated once (X C-contiguous of the model's dtype, Y in the form
        the backends take, lengths int64 or None, sample_weight float64 or None; state None
        or the tuple of the cell's states, (N, H) or (L*D, N, H) each, as fit carries them)
        and the parameters as the optimizer keeps them (fit checks those once per epoch)."""
        # the parameters as the compiled calls take them: C-contiguous and aligned (a
        # Fortran-ordered or unaligned one, which fit still trains in place, as a copy)
        p = {k: w if w.flags.c_contiguous and w.flags.aligned else
             np.require(w, requirements="CA") for k, w in self.params.items()}
        N = X.shape[0]
        options = self._options()
        be = self.cell.backend(self.backend)
        if not self._stacked:
            if state is None:
                state = tuple(np.zeros((N, self.hidden_size), self.dtype)
                              for _ in self.cell.states)
            out = be.loss_and_grad(X, Y, *state, *(p[k] for k in self.cell.weight_names),
                                   p["W_y"], p["b_y"], *options, self.output, target, False,
                                   lengths, return_state, False, sample_weight)
            return (out[0], out[1], self._state_out(out[2])) if return_state else out
        from .functional import _head_backend
        from .stack import loss_and_grad
        LD = self.num_layers * self._directions
        if state is None:
            state0 = [tuple(np.zeros((N, self.hidden_size), self.dtype)
                            for _ in self.cell.states)] * LD
        else:
            state0 = [tuple(np.ascontiguousarray(s[k]) for s in state) for k in range(LD)]
        weights = [tuple(p[k] for k in names) for names in self._layer_names()]
        loss, g, last = loss_and_grad(be, _head_backend(self.backend), self.cell, X, Y,
                                      state0, weights, p["W_y"], p["b_y"], options,
                                      self.output, target, lengths, self._directions, False,
                                      self._dropout_masks(dropout_rng, X.shape),
                                      sample_weight)
        return self._named_stack_grads(loss, g, last, return_state)

    def step(self, x, h=None):
        """One time step of streaming inference: (y, h_new) for input x (N, I) or (I,) and
        state h (N, H) or (H,) (None: zeros; for the LSTM a tuple (h, c) of them). y is
        (N, O) or (O,) (probabilities for a softmax output). Feed h_new back in for the
        next step.

        Built for per-call speed (a few microseconds at batch size one): x and h are fully
        checked, the weights with quick identity, shape, dtype and finiteness tests.
        """
        if self._stacked:
            return self._stack_step(x, h)
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

    @_threads_argument
    def forecast(self, X, steps, h0=None, lengths=None):
        """Closed-loop forecast: read X (N, T, I), then feed each prediction back as the next
        input for `steps` more steps; returns Y (N, steps, O), the outputs after X. Needs
        output_size == input_size and one direction. For output="softmax" the next input is
        the one-hot of the most probable class (greedy decoding; probabilities are
        returned). lengths (N,): each sequence continues from its own last valid step."""
        steps = _validate.positive_int(steps, "steps")
        if self.bidirectional:
            raise ValueError("forecast() needs a unidirectional model: the reverse direction "
                             "of a bidirectional one would need the future it predicts")
        if self.output_size != self.input_size:
            raise ValueError(f"forecast() feeds each output back as the next input, so "
                             f"output_size ({self.output_size}) must equal input_size "
                             f"({self.input_size})")
        _, _, state = self.forward(X, h0, lengths, return_state=True)
        y = self.predict(X, h0, lengths, target="last")          # the output after X
        N = y.shape[0]
        out = np.empty((N, steps, self.output_size), self.dtype)
        for k in range(steps):
            out[:, k] = y
            if k == steps - 1:
                break
            x = y if self.output == "linear" else \
                np.eye(self.output_size, dtype=self.dtype)[np.argmax(y, axis=1)]
            y, state = self.step(np.ascontiguousarray(x), state)
        return out

    def _stack_step(self, x, h):
        """step() of a deep unidirectional model: h (L, N, H) or (L, H) per cell state."""
        if self.bidirectional:
            raise ValueError("step() streams a unidirectional model only: the reverse "
                             "direction of a bidirectional model needs the whole sequence "
                             "first; use forward(X) (or predict) on the full sequence")
        single = np.ndim(x) == 1
        x = _validate.float_array(x, "x", "(I,)" if single else "(N, I)", self.dtype,
                                  dtype_of="the model")
        X = x.reshape(1, 1, -1) if single else x[:, None, :]
        if single and h is not None:            # (L, H) -> (L, 1, H)
            h = tuple(None if s is None else np.asarray(s)[:, None] for s in h) \
                if isinstance(h, (tuple, list)) else np.asarray(h)[:, None]
        Y, _, state = self.forward(X, h, return_state=True)
        if single:
            state = tuple(s[:, 0] for s in state) if isinstance(state, tuple) else state[:, 0]
            return Y[0, 0], state
        return Y[:, 0], state

    def fit(self, X, Y, *, epochs=10, batch_size=32, optimizer="adam", lr=None,
            clip_norm=5.0, clip_value=None, tbptt=None, lengths=None, target="sequence",
            validation_data=None, callbacks=(), shuffle=True, progress=None,
            max_bad_steps=10, seed=None, weight_decay=None, decay_biases=False,
            sample_weight=None, lr_schedule=None, threads=None):
        """Train on X (N, T, I) and targets Y (as for loss_and_grad); returns a History.

        optimizer: "sgd", "adagrad", "rmsprop", "adam", "adamw", or fastrnn.optim.Optimizer
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
        give bit-identical weights. weight_decay: L2 penalty (decoupled decay for "adamw");
        None is the optimizer's default (0; AdamW 0.01). decay_biases: decay the 1-D
        parameters (biases) too. Neither can be given with an Optimizer instance
        (ValueError: pass them to its constructor). sample_weight (N,): each sequence's
        weight in the loss (every step's loss is the weighted mean over its batch; a batch
        whose weights are all 0 is skipped). Dropout (the model's dropout > 0, several
        layers) draws its masks from a stream seeded by seed as well. threads: at most this
        many threads split each batch (None: as many as SciPy's BLAS may use, so
        threadpoolctl's limits apply); the same seed and thread count give bit-identical
        weights.
        """
        from .train import fit
        return fit(self, X, Y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                   lr=lr, clip_norm=clip_norm, clip_value=clip_value, tbptt=tbptt,
                   lengths=lengths, target=target, validation_data=validation_data,
                   callbacks=callbacks, shuffle=shuffle, progress=progress,
                   max_bad_steps=max_bad_steps, seed=seed, weight_decay=weight_decay,
                   decay_biases=decay_biases, sample_weight=sample_weight,
                   lr_schedule=lr_schedule, threads=threads)

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
    num_layers : int
        L stacked layers: layer k's states are layer k+1's inputs (as PyTorch's num_layers).
    bidirectional : bool
        Each layer also runs backwards in time (D = 2); the two directions' states are
        concatenated (2H wide) for the next layer and the output layer. With lengths each
        sequence's reverse pass starts at its own last valid step. States (h0, the final
        state) are (L*D, N, H), PyTorch's order; step() refuses a bidirectional model.
    dropout : float in [0, 1)
        Inverted dropout on the inputs of layers 1..L-1 (the outputs of every layer but the
        last, as in PyTorch), in fit only (seeded by fit's seed): never in forward, predict,
        step or evaluation.

    Attributes
    ----------
    params : dict of ndarray
        W_x (I, H), W_s (H, H), b (H,), W_y (H, O), b_y (O,). Optimizers update these
        arrays in place. Further layers and directions add "W_x_l1", "W_x_l0_reverse", ...
        (PyTorch's suffixes; layer 0 forwards keeps the plain names), W_y is (D*H, O).
    """

    cell = ELMAN

    def __init__(self, input_size, hidden_size, output_size, activation="tanh",
                 output="linear", dtype="float32", seed=0, backend="cython", init="uniform",
                 spectral_radius=None, num_layers=1, bidirectional=False, dropout=0.0):
        self.spectral_radius = spectral_radius
        super().__init__(input_size, hidden_size, output_size, {"activation": activation},
                         output=output, dtype=dtype, seed=seed, backend=backend, init=init,
                         init_options={"spectral_radius": spectral_radius},
                         num_layers=num_layers, bidirectional=bidirectional, dropout=dropout)

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
    input_size, hidden_size, output_size, output, dtype, seed, backend, num_layers,
    bidirectional, dropout
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
                 forget_bias=1.0, chrono=None, num_layers=1, bidirectional=False, dropout=0.0):
        self.forget_bias, self.chrono = forget_bias, chrono
        super().__init__(input_size, hidden_size, output_size, {"forget_gate": forget_gate},
                         output=output, dtype=dtype, seed=seed, backend=backend, init=init,
                         init_options={"forget_bias": forget_bias, "chrono": chrono},
                         num_layers=num_layers, bidirectional=bidirectional, dropout=dropout)

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
    input_size, hidden_size, output_size, output, dtype, seed, backend, init, num_layers,
    bidirectional, dropout
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
                 dtype="float32", seed=0, backend="cython", init="uniform", num_layers=1,
                 bidirectional=False, dropout=0.0):
        super().__init__(input_size, hidden_size, output_size, {}, output=output, dtype=dtype,
                         seed=seed, backend=backend, init=init, num_layers=num_layers,
                         bidirectional=bidirectional, dropout=dropout)


# The model class of each cell, by the cell's name (fastrnn.load builds the right one).
MODELS = {cls.cell.name: cls for cls in (ElmanRNN, LSTM, GRU)}
