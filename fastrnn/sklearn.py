"""scikit-learn estimators: ElmanRegressor and ElmanClassifier, for every cell.

    from fastrnn.sklearn import ElmanClassifier
    clf = ElmanClassifier(cell="lstm").fit(X_train, y_train)   # X (n_samples, n_timesteps,
    clf.score(X_test, y_test)                                  #    n_features)

Both estimators wrap a fastrnn model (fastrnn.ElmanRNN, LSTM or GRU by the `cell`
hyperparameter; the fitted model in ``model_``) trained with its fit; their hyperparameters
carry the names of the model's and fit's arguments. RNNRegressor and RNNClassifier are the
same classes under cell-neutral names. Inputs:

- X of shape (n_samples, n_timesteps, n_features): one sequence per sample;
- X of shape (n_samples, n_timesteps): univariate sequences, read as X[..., None], so the
  estimators follow flat-feature transformers (StandardScaler, ...) in a Pipeline. Each
  column is then one time step, in column order. With n_features=F, each row is read as
  (n_timesteps, F) instead (columns step by step: t0f0, t0f1, ..., t1f0, ...), so that
  multivariate sequences pass through flat transformers too;
- X a list of (T_i, n_features) (or (T_i,)) arrays of different lengths, one per sample, as
  aeon and tslearn hold unequal-length collections: padded internally, with each sequence's
  length passed to the model (lengths=), in fit, partial_fit, predict, predict_proba and
  score. For target="sequence", y is then a list of (T_i[, n_outputs]) arrays too, and
  predict returns such a list.

X is converted to the model's dtype (float32 by default); NaN/inf, complex and sparse input
are refused. scikit-learn is an optional dependency of fastrnn: this module imports it, the
rest of fastrnn does not.
"""
import inspect
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (check_array, check_consistent_length, check_is_fitted,
                                      column_or_1d, validate_data)

from . import _validate
from .model import MODELS
from .optim import CosineLR, Optimizer, make_optimizer
from .train import EarlyStopping

__all__ = ["ElmanRegressor", "ElmanClassifier", "RNNRegressor", "RNNClassifier"]


def _ragged(X):
    """X as a list of sequences if it is a list of arrays (or nested lists) of different
    lengths, or of 2-D arrays, else None (a regular array-like goes through scikit-learn's
    own checks)."""
    if not isinstance(X, (list, tuple)) or not X:
        return None
    if not all(isinstance(x, (np.ndarray, list, tuple)) for x in X):
        return None
    if len({len(x) for x in X}) == 1 and not all(isinstance(x, np.ndarray) and x.ndim == 2
                                                for x in X):
        return None                # equal lengths of scalars or rows: a regular array
    if not all(np.ndim(x) in (1, 2) for x in X):
        return None
    return list(X)

_SEED_MAX = np.iinfo(np.int32).max
_LR_SCHEDULES = ("cosine", "constant")
# lr="auto": Adam's rate for each cell. The gated cells learn slower at the Elman cell's rate
# (scikit-learn's regression check, 50 epochs: R^2 0.62 for the LSTM at 3e-3, 0.99 at 1e-2).
_AUTO_LR = {"elman": 3e-3, "lstm": 1e-2, "gru": 1e-2}
# hyperparameters of the Elman cell only, with their defaults
_CELL_SPECIFIC = {"activation": "tanh", "spectral_radius": None}


class _ElmanBase(BaseEstimator):
    """What the regressor and the classifier share: input checks, the model, training."""

    _output = None            # "linear" or "softmax", set by the subclasses

    def __init__(self, hidden_size=32, activation="tanh", init="orthogonal",
                 spectral_radius=None, epochs=50, batch_size=32, optimizer="adam", lr="auto",
                 lr_schedule="cosine", clip_norm=5.0, tbptt=None, dtype="float32",
                 backend="cython", random_state=None, warm_start=False, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, verbose=False, cell="elman",
                 weight_decay=0.0, n_features=None, num_layers=1, bidirectional=False,
                 dropout=0.0):
        self.hidden_size = hidden_size
        self.activation = activation
        self.init = init
        self.spectral_radius = spectral_radius
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.clip_norm = clip_norm
        self.tbptt = tbptt
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.verbose = verbose
        self.cell = cell
        self.weight_decay = weight_decay
        self.n_features = n_features
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True      # (n_samples, n_timesteps, n_features)
        return tags

    # ---- inputs ---------------------------------------------------------------------------

    def _check_X(self, X, reset):
        """(X, lengths): X as a C-contiguous (n_samples, n_timesteps, n_features) array of the
        model dtype, lengths None, or for a ragged list the padded array and the (n_samples,)
        lengths.

        n_features_in_ is sklearn's count of input columns: for 2-D X the number of columns
        (= time steps, each one scalar input; with n_features=F, F features per step), for
        3-D X and ragged lists the features per step. After fit, 2-D X must have the same
        number of columns; 3-D X the same features per step but any number of steps."""
        ragged = _ragged(X)
        if ragged is not None:
            return self._check_ragged(ragged, reset)
        return self._check_array(X, reset), None

    def _check_ragged(self, seqs, reset):
        """The padded (N, T_max, F) array and the lengths of a list of sequences."""
        dtype = _validate.float_dtype(self.dtype)
        arrays = []
        for i, x in enumerate(seqs):
            x = check_array(x, input_name=f"X[{i}]", dtype=dtype, ensure_2d=False,
                            ensure_all_finite=True, ensure_min_samples=1)
            if x.ndim == 1:
                x = x[:, None]                           # (T_i,): one feature per step
            if x.ndim != 2:
                raise ValueError(f"X[{i}] must be a (n_timesteps, n_features) or "
                                 f"(n_timesteps,) array in a list of sequences; got shape "
                                 f"{x.shape}")
            arrays.append(x)
        features = {x.shape[1] for x in arrays}
        if len(features) != 1:
            raise ValueError(f"the sequences of X must have the same number of features; "
                             f"got {sorted(features)}")
        F = features.pop()
        if reset:
            self.n_features_in_, self._x_ndim = F, 3
        elif self._x_ndim != 3 or F != self.n_features_in_:
            raise ValueError(f"X has {F} features per time step, but "
                             f"{type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input"
                             f"{' (it was fitted on 2-D X)' if self._x_ndim == 2 else ''}.")
        lengths = np.array([len(x) for x in arrays], dtype=np.int64)
        Xp = np.zeros((len(arrays), int(lengths.max()), F), dtype)
        for i, x in enumerate(arrays):
            Xp[i, :len(x)] = x
        return Xp, lengths

    def _check_array(self, X, reset):
        """A regular X (no lengths) as (n_samples, n_timesteps, n_features)."""
        dtype = _validate.float_dtype(self.dtype)
        X = validate_data(self, X, reset=reset, accept_sparse=False, dtype=dtype,
                          order="C", ensure_all_finite=True, allow_nd=True, ensure_2d=False)
        if X.ndim not in (2, 3):
            raise ValueError(
                f"Expected a 2D array (n_samples, n_timesteps) or a 3D array (n_samples, "
                f"n_timesteps, n_features), got {X.ndim}D array instead: shape {X.shape}. "
                f"Reshape your data using array.reshape(-1, 1) if it is one univariate "
                f"sequence per sample of a single step, or array.reshape(1, -1) if it is "
                f"a single sequence.")
        for axis, what in ((1, "time step(s)" if X.ndim == 3 else "feature(s)"),
                           (X.ndim - 1, "feature(s)")):
            if X.shape[axis] < 1:
                raise ValueError(f"Found array with 0 {what} (shape={X.shape}) while a "
                                 f"minimum of 1 is required by {type(self).__name__}.")
        n_features = X.shape[1] if X.ndim == 2 else X.shape[2]
        if reset:
            self.n_features_in_ = n_features
            self._x_ndim = X.ndim
        else:
            if X.ndim != self._x_ndim:
                raise ValueError(
                    f"X is {X.ndim}D but {type(self).__name__} was fitted on {self._x_ndim}D "
                    f"X; pass X with the same number of dimensions as in fit")
            if n_features != self.n_features_in_:
                per_step = " per time step" if X.ndim == 3 else ""
                raise ValueError(
                    f"X has {n_features} features{per_step}, but {type(self).__name__} is "
                    f"expecting {self.n_features_in_} features as input.")
        if X.ndim == 3:
            return X
        F = self.n_features
        if F is None:
            return X[..., None]
        F = _validate.positive_int(F, "n_features")
        if X.shape[1] % F:
            raise ValueError(f"n_features={F} reads each row of 2-D X as (n_timesteps, "
                             f"{F}); X has {X.shape[1]} columns, not a multiple of {F}")
        return X.reshape(X.shape[0], X.shape[1] // F, F)

    # ---- the model and its training --------------------------------------------------------

    def _check_hyperparameters(self):
        _validate.choice(self.lr_schedule, "lr_schedule", _LR_SCHEDULES)
        if isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be a name such as 'adam' or an Optimizer "
                            f"subclass, not an instance (an instance is bound to the "
                            f"parameters of another model); got {self.optimizer!r}")
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping must be a bool; got {self.early_stopping!r}")
        if self.early_stopping:
            vf = self.validation_fraction
            if (isinstance(vf, (bool, np.bool_)) or not isinstance(vf, numbers.Real)
                    or not 0.0 < vf < 1.0):
                raise ValueError(f"validation_fraction must be a number in (0, 1); got "
                                 f"{vf!r}")
            _validate.positive_int(self.n_iter_no_change, "n_iter_no_change")

    def _lr(self):
        """The learning rate: lr, or for lr="auto" the default of the cell."""
        if isinstance(self.lr, str) and self.lr == "auto":
            return _AUTO_LR[self.cell]
        return self.lr

    def _seed(self, n_done):
        """The shuffling seed of a training call after n_done epochs: fixed by the model's
        seed, different for each call (so successive partial_fit calls do not all shuffle
        alike)."""
        return int(np.random.SeedSequence([self._model_seed, n_done]).generate_state(1)[0])

    def _cell_hyperparameters(self):
        """The hyperparameters only some cells take ({name: value}), for the model class of
        self.cell; one set away from its default for a cell without it is an error."""
        cls = MODELS[_validate.choice(self.cell, "cell", tuple(MODELS))]
        accepted = inspect.signature(cls).parameters
        kwargs = {}
        for name, default in _CELL_SPECIFIC.items():
            value = getattr(self, name)
            if name in accepted:
                kwargs[name] = value
            elif value != default:
                raise ValueError(f"{name}={value!r} applies to the Elman cell only; this "
                                 f"estimator has cell={self.cell!r}")
        return cls, kwargs

    def _new_model(self, n_inputs, n_outputs):
        cls, kwargs = self._cell_hyperparameters()
        self._model_seed = int(check_random_state(self.random_state).randint(_SEED_MAX))
        return cls(n_inputs, self.hidden_size, n_outputs, output=self._output,
                   dtype=self.dtype, seed=self._model_seed, backend=self.backend,
                   init=self.init, num_layers=self.num_layers,
                   bidirectional=self.bidirectional, dropout=self.dropout, **kwargs)

    def _check_warm_model(self, n_inputs, n_outputs):
        """The fitted model_, if it can go on training with the current hyperparameters."""
        m = self.model_
        self._cell_hyperparameters()
        changed = [f"{name} ({old!r} -> {new!r})" for name, old, new in (
            ("cell", m.cell.name, self.cell),
            ("hidden_size", m.hidden_size, self.hidden_size),
            ("num_layers", m.num_layers, self.num_layers),
            ("bidirectional", m.bidirectional, self.bidirectional),
            ("activation", getattr(m, "activation", "tanh"), self.activation),
            ("dtype", m.dtype, _validate.float_dtype(self.dtype)),
            ("number of input features", m.input_size, n_inputs),
            ("number of outputs", m.output_size, n_outputs)) if old != new]
        if changed:
            raise ValueError(f"warm_start=True cannot continue training the fitted model: "
                             f"{', '.join(changed)} changed. Set warm_start=False to start "
                             f"afresh.")
        m.backend = self.backend
        m.dropout = _validate.fraction(self.dropout, "dropout")   # a training setting
        return m

    def _train(self, X, Y, target, epochs, incremental, stratify=None, lengths=None,
                sample_weight=None):
        """Train model_ (created by the caller) on validated X (N, T, I) and encoded Y for
        epochs epochs; incremental: keep the optimizer and its state (partial_fit).
        lengths, sample_weight: (N,) or None."""
        model = self.model_
        previous = getattr(model, "optimizer_", None)
        if not isinstance(previous, Optimizer):
            previous = None
        if incremental and previous is not None and previous.schedule is None:
            optimizer = previous                    # partial_fit: keep the optimizer state
        else:
            cosine = self.lr_schedule == "cosine" and not incremental
            optimizer = make_optimizer(self.optimizer, model.params, self._lr(),
                                       schedule=CosineLR(epochs) if cosine else None,
                                       weight_decay=self.weight_decay)
            if incremental and previous is not None and type(previous) is type(optimizer):
                # partial_fit after a fit with a schedule: keep its state (momenta), at
                # the constant base lr
                optimizer.load_state_dict(previous.state_dict())
        validation_data, callbacks = None, ()
        if self.early_stopping and not incremental:
            X, Y, lengths, sample_weight, validation_data = self._split(
                X, Y, stratify, lengths, sample_weight)
        if validation_data is not None:
            callbacks = (EarlyStopping("val_loss", patience=self.n_iter_no_change,
                                       restore_best_weights=True),)
        history = model.fit(X, Y, epochs=epochs, batch_size=self.batch_size,
                            optimizer=optimizer, clip_norm=self.clip_norm,
                            tbptt=self.tbptt, target=target, validation_data=validation_data,
                            lengths=lengths, sample_weight=sample_weight,
                            callbacks=callbacks, shuffle=True,
                            progress=None if self.verbose else False,   # bar or lines
                            seed=self._seed(self.n_iter_))
        self.history_ = history
        self.n_iter_ += len(history)
        self.loss_curve_.extend(history["loss"])
        return self

    def _split(self, X, Y, stratify, lengths=None, sample_weight=None):
        """(X_train, Y_train, lengths_train, weights_train, (X_val, Y_val, lengths_val))
        for early stopping: validation_fraction of the samples (at least one), stratified
        by class when every class can be in both parts (the validation loss is unweighted).
        With a single sample there is nothing to hold out: (X, Y, lengths, weights, None)."""
        n = len(X)
        n_val = max(1, int(np.ceil(self.validation_fraction * n)))
        if n - n_val < 1:
            warnings.warn(f"early_stopping=True needs at least 2 samples to hold out a "
                          f"validation set; got {n}: training without early stopping",
                          UserWarning, stacklevel=4)
            return X, Y, lengths, sample_weight, None
        if stratify is not None:
            n_classes, counts = len(np.unique(stratify)), np.bincount(stratify)
            if counts[counts > 0].min() < 2 or min(n_val, n - n_val) < n_classes:
                stratify = None
        train, val = train_test_split(np.arange(n), test_size=n_val, stratify=stratify,
                                      random_state=self._model_seed)
        part = (lambda a, rows: None if a is None else a[rows])
        return (X[train], Y[train], part(lengths, train), part(sample_weight, train),
                (X[val], Y[val], part(lengths, val)))

    def _fit(self, X, y, incremental, classes=None, sample_weight=None):
        """fit (incremental=False) or partial_fit (True)."""
        self._check_hyperparameters()
        first = not hasattr(self, "model_") or not (incremental or self.warm_start)
        X, lengths = self._check_X(X, reset=first)
        if lengths is not None:
            y = self._pad_targets(y, lengths, X.shape[1])
        if sample_weight is not None:
            check_consistent_length(X, sample_weight)
            sample_weight = _validate.sample_weight(sample_weight, X.shape[0])
        Y, target, stratify = self._encode_y(X, y, first, incremental, classes,
                                             sample_weight, lengths)
        n_outputs = self._n_outputs()
        if first:
            self.model_ = self._new_model(X.shape[2], n_outputs)
            self.n_iter_ = 0
            self.loss_curve_ = []
        else:
            self._check_warm_model(X.shape[2], n_outputs)
        epochs = 1 if incremental else self.epochs
        return self._train(X, Y, target, epochs, incremental, stratify, lengths,
                           sample_weight)

    def fit(self, X, y, sample_weight=None):
        """Train on sequences X, (n_samples, n_timesteps, n_features) or (n_samples,
        n_timesteps) or a list of (T_i, n_features) arrays, and targets y, for `epochs`
        epochs: afresh, or with warm_start=True from the current model. sample_weight
        (n_samples,): each sequence's weight in the loss (0 leaves it out, 2 counts it
        twice). Returns self."""
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    def _pad_targets(self, y, lengths, T):
        """y for ragged X: per-sequence targets as they are; per-step targets (a list of
        (T_i[, n_outputs]) arrays, target="sequence") padded to (N, T[, n_outputs])."""
        if getattr(self, "target", "last") != "sequence":
            return y
        if not isinstance(y, (list, tuple)) or len(y) != len(lengths):
            raise ValueError(f"with a list of sequences as X and target='sequence', y must "
                             f"be a list of {len(lengths)} arrays, one (T_i[, n_outputs]) "
                             f"array per sequence")
        ys = [np.asarray(v, dtype=np.float64) for v in y]
        for i, (v, n) in enumerate(zip(ys, lengths)):
            if v.ndim not in (1, 2) or len(v) != n:
                raise ValueError(f"y[{i}] must have {n} steps (those of X[{i}]); got shape "
                                 f"{v.shape}")
        if len({v.shape[1:] for v in ys}) != 1:
            raise ValueError("the arrays of y must all have the same number of outputs")
        out = np.zeros((len(ys), T) + ys[0].shape[1:])
        for i, v in enumerate(ys):
            out[i, :len(v)] = v
        return out

    def _forward(self, X):
        """(Y, lengths): outputs of the fitted model for X (validated), in float64: (N, O)
        from each sequence's final state for target "last" (every classifier), else
        (N, T, O); lengths (N,) for a ragged list X, else None."""
        check_is_fitted(self, "model_")
        X, lengths = self._check_X(X, reset=False)
        target = getattr(self, "_target", "last")
        Y = self.model_.predict(X, lengths=lengths, target=target)
        return Y.astype(np.float64), lengths


class ElmanRegressor(RegressorMixin, _ElmanBase):
    """Elman RNN regressor: a linear output layer trained with mean squared error.

    Parameters
    ----------
    hidden_size : int, default=32
        H, the size of the state layer.
    activation : {"tanh", "relu", "sigmoid", "identity"}, default="tanh"
    init : {"uniform", "glorot", "orthogonal", "identity"}, default="orthogonal"
        Initialisation scheme (fastrnn.init); "orthogonal" is Keras' SimpleRNN default.
    spectral_radius : float or None, default=None
        Rescale W_s to this spectral radius after initialisation.
    epochs : int, default=50
        Passes over the data in fit (partial_fit makes one per call).
    batch_size : int, default=32
    optimizer : {"adam", "adamw", "rmsprop", "adagrad", "sgd"} or fastrnn.optim.Optimizer
            subclass, default="adam"
    lr : float, None or "auto", default="auto"
        Learning rate: "auto" is 3e-3 for the Elman cell and 1e-2 for the LSTM and GRU
        (whose gates learn slower at the smaller rate); None: the optimizer's own default.
    lr_schedule : {"cosine", "constant"}, default="cosine"
        "cosine": fit anneals the learning rate from lr towards 0 over its epochs
        (fastrnn.optim.CosineLR), which lets a fairly high lr converge without late
        instability. partial_fit always uses a constant lr (the number of calls is unknown).
    clip_norm : float or None, default=5.0
        Clip the global gradient norm.
    tbptt : int or None, default=None
        Truncated backpropagation through time in chunks of tbptt steps.
    target : {"last", "sequence"}, default="last"
        "last": one target per sequence, y (n_samples,) or (n_samples, n_outputs), scored
        against the output at the last step. "sequence": one target per time step, y
        (n_samples, n_timesteps) or (n_samples, n_timesteps, n_outputs), with n_timesteps
        that of X; predict then returns one output per step of X.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the model; X is converted to it.
    backend : {"cython", "numpy"}, default="cython"
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the shuffling.
    warm_start : bool, default=False
        If True, fit continues training the fitted model (with a new optimizer) instead of
        starting afresh; the target scaling of the first fit is kept.
    early_stopping : bool, default=False
        Hold out validation_fraction of the training data, stop when its loss has not
        improved for n_iter_no_change epochs and keep the best epoch's weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    verbose : bool, default=False
        Show fit's progress: a bar on a terminal, plain lines on stderr elsewhere.
    cell : {"elman", "lstm", "gru"}, default="elman"
        The recurrent cell: fastrnn.ElmanRNN, fastrnn.LSTM (forget-gate bias 1) or
        fastrnn.GRU. activation and spectral_radius apply to the Elman cell only.
    weight_decay : float >= 0, default=0.0
        Weight decay of the optimizer: an L2 penalty added to the gradient, or for
        optimizer="adamw" decoupled decay of the weights (fastrnn.optim). Biases are not
        decayed. The default 0.0 turns it off, for "adamw" too (whose own default, when
        the optimizer is built directly, is 0.01).
    n_features : int or None, default=None
        For 2-D X only: read each row as (n_timesteps, n_features), the columns step by
        step (t0f0, t0f1, ..., t1f0, ...), for multivariate sequences after flat
        transformers in a Pipeline; None reads each column as one step of a univariate
        sequence. 3-D X and lists of sequences carry their features themselves.
    num_layers : int, default=1
        Stacked recurrent layers, each reading the states of the one below.
    bidirectional : bool, default=False
        Run every layer in both directions (PyTorch's bidirectional). For target="last"
        the output is read from the forward direction's final state and the reverse
        direction's state after the first step. tbptt needs bidirectional=False.
    dropout : float in [0, 1), default=0.0
        Dropout on the inputs of layers 1..num_layers-1 during fit (none with one layer).
        With warm_start it may change between fits.

    Attributes
    ----------
    model_ : fastrnn.ElmanRNN, fastrnn.LSTM or fastrnn.GRU
        The fitted network (it predicts standardised targets: see y_mean_, y_scale_).
    history_ : fastrnn.History
        Per-epoch records of the last fit or partial_fit call.
    loss_curve_ : list of float
        Training loss (on standardised targets) of every epoch since the model was created.
    n_iter_ : int
        Epochs trained since the model was created (fit, warm starts, partial_fit calls).
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        The model is trained on (y - y_mean_) / y_scale_, so that the default learning rate
        suits targets of any scale. Set by the first fit or partial_fit call.
    n_features_in_ : int
        Columns of 2-D X (time steps), or features per step of 3-D X.
    """

    _output = "linear"

    def __init__(self, hidden_size=32, activation="tanh", init="orthogonal",
                 spectral_radius=None, epochs=50, batch_size=32, optimizer="adam", lr="auto",
                 lr_schedule="cosine", clip_norm=5.0, tbptt=None, target="last",
                 dtype="float32", backend="cython", random_state=None, warm_start=False,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 verbose=False, cell="elman", weight_decay=0.0, n_features=None,
                 num_layers=1, bidirectional=False, dropout=0.0):
        super().__init__(hidden_size=hidden_size, activation=activation, init=init,
                         spectral_radius=spectral_radius, epochs=epochs,
                         batch_size=batch_size, optimizer=optimizer, lr=lr,
                         lr_schedule=lr_schedule, clip_norm=clip_norm, tbptt=tbptt,
                         dtype=dtype, backend=backend, random_state=random_state,
                         warm_start=warm_start, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, verbose=verbose, cell=cell,
                         weight_decay=weight_decay, n_features=n_features,
                         num_layers=num_layers, bidirectional=bidirectional, dropout=dropout)
        self.target = target

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_y(self, X, y, first, incremental, classes, sample_weight=None, lengths=None):
        if classes is not None:
            raise TypeError("classes is a parameter of ElmanClassifier.partial_fit only")
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be "
                             f"passed, but the target y is None.")
        target = _validate.choice(self.target, "target", _validate.TARGETS)
        y = check_array(y, input_name="y", dtype=np.float64, ensure_2d=False,
                        allow_nd=True, ensure_all_finite=True)
        check_consistent_length(X, y)
        per_step = target == "sequence"
        shapes = "(n_samples, n_timesteps) or (n_samples, n_timesteps, n_outputs)" \
            if per_step else "(n_samples,) or (n_samples, n_outputs)"
        if y.ndim not in ((2, 3) if per_step else (1, 2)):
            raise ValueError(f"y must have shape {shapes} for target={target!r}; got "
                             f"shape {y.shape}")
        if per_step and y.shape[1] != X.shape[1]:
            raise ValueError(f"y must have one target per time step of X for "
                             f"target='sequence': X has {X.shape[1]} steps, y has shape "
                             f"{y.shape}")
        Y = y.reshape(*y.shape[:1 + per_step], -1)      # (N, O) or (N, T, O)
        if not first:
            if target != self._target or Y.shape[-1] != self.y_mean_.shape[0] or \
                    y.ndim != self._y_ndim:
                raise ValueError(
                    f"y must have the form it had when the model was first fitted "
                    f"(target={self._target!r}, {self.y_mean_.shape[0]} output(s), "
                    f"{self._y_ndim}D y); got target={target!r} and y of shape {y.shape}")
        else:
            # the scaling statistics of the scored targets, weighted as the loss is (so that
            # a weight of 0 is the same as leaving a sequence out): padding does not count
            w = np.ones(Y.shape[:-1]) if sample_weight is None else \
                np.broadcast_to(sample_weight.reshape((-1,) + (1,) * (Y.ndim - 2)),
                                Y.shape[:-1]).astype(float)
            if lengths is not None and per_step:
                w = w * (np.arange(Y.shape[1]) < lengths[:, None])
            flat, w = Y.reshape(-1, Y.shape[-1]), w.reshape(-1)
            mean = np.average(flat, axis=0, weights=w)
            scale = np.sqrt(np.average((flat - mean) ** 2, axis=0, weights=w))
            seen = np.abs(flat[w > 0]).max(axis=0)
            scale[~(scale > 1e-12 * np.maximum(seen, 1e-300))] = 1.0
            self.y_mean_, self.y_scale_ = mean, scale
            self._target, self._y_ndim = target, y.ndim
        dtype = _validate.float_dtype(self.dtype)
        Y = ((Y - self.y_mean_) / self.y_scale_).astype(dtype)
        return np.ascontiguousarray(Y), target, None

    def _n_outputs(self):
        return self.y_mean_.shape[0]

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current model and optimizer state
        (the first call creates the model and fixes the target scaling). Returns self."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    def predict(self, X):
        """Predictions in the shape of y in fit: (n_samples,) or (n_samples, n_outputs)
        for target="last"; (n_samples, n_timesteps[, n_outputs]) for target="sequence",
        with the time steps of X (for a list of sequences: a list of (T_i[, n_outputs])
        arrays)."""
        Y, lengths = self._forward(X)
        Y = Y * self.y_scale_ + self.y_mean_
        if self._y_ndim == Y.ndim - 1:              # y was given without an output axis
            Y = Y[..., 0]
        if lengths is not None and self._target == "sequence":
            return [Y[i, :n] for i, n in enumerate(lengths)]
        return Y

    def score(self, X, y, sample_weight=None):
        """R^2 of predict(X) (averaged uniformly over outputs, and over time steps for
        target="sequence"; for a list of sequences over all their steps, each weighing its
        sequence's sample_weight)."""
        y_pred = self.predict(X)
        if isinstance(y_pred, list):            # ragged per-step outputs: every valid step
            counts = [len(p) for p in y_pred]
            y = np.concatenate([np.asarray(v, dtype=np.float64) for v in y])
            y_pred = np.concatenate(y_pred)
            if sample_weight is not None:
                sample_weight = np.repeat(np.asarray(sample_weight, np.float64), counts)
            return r2_score(y, y_pred, sample_weight=sample_weight)
        y = np.asarray(y)
        if y.ndim > 2 or y_pred.ndim > 2:       # per-step outputs: one column per (t, o)
            y, y_pred = y.reshape(len(y), -1), y_pred.reshape(len(y_pred), -1)
        return r2_score(y, y_pred, sample_weight=sample_weight)


class ElmanClassifier(ClassifierMixin, _ElmanBase):
    """Elman RNN classifier: one label per sequence, from a softmax output layer at the last
    time step, trained with cross-entropy.

    Parameters
    ----------
    hidden_size, activation, init, spectral_radius, epochs, batch_size, optimizer, lr,
    lr_schedule, clip_norm, tbptt, dtype, backend, random_state, warm_start, early_stopping,
    validation_fraction, n_iter_no_change, verbose, cell, weight_decay, n_features,
    num_layers, bidirectional, dropout
        As for ElmanRegressor. With warm_start, y may only hold classes seen before.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (any sortable type: ints, strings, ...), sorted; the model's output
        k is classes_[k].
    model_, history_, loss_curve_, n_iter_, n_features_in_
        As for ElmanRegressor.
    """

    _output = "softmax"

    def _encode_y(self, X, y, first, incremental, classes, sample_weight=None, lengths=None):
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be "
                             f"passed, but the target y is None.")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        if y.dtype.kind in "fc":
            assert_all_finite(y, input_name="y")
        check_classification_targets(y)
        if incremental:
            if classes is not None:
                classes = column_or_1d(classes)
                check_classification_targets(classes)
                classes = np.unique(classes)
            if first:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to "
                                     "partial_fit.")
                self.classes_ = classes
            elif classes is not None and not np.array_equal(classes, self.classes_):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {self.classes_!r}")
        elif first:
            self.classes_ = np.unique(y)
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            how = "with warm_start=True" if not incremental else "in partial_fit"
            raise ValueError(f"y contains labels {unseen.tolist()} that are not in "
                             f"classes_ {self.classes_.tolist()}; {how}, y may only "
                             f"hold the classes of the first fit"
                             f"{' (the classes argument)' if incremental else ''}")
        codes = np.searchsorted(self.classes_, y).astype(np.int64)
        return codes, "last", codes

    def _n_outputs(self):
        return len(self.classes_)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current model and optimizer state.
        classes (all labels that can occur) is required on the first call, as in
        scikit-learn's other incremental classifiers. Returns self."""
        return self._fit(X, y, incremental=True, classes=classes,
                         sample_weight=sample_weight)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes), columns in the order of classes_."""
        P = self._forward(X)[0]
        P /= P.sum(axis=1, keepdims=True)       # exact normalisation in float64
        return P

    def predict_log_proba(self, X):
        """Logarithm of predict_proba (-inf where a float32 probability underflowed)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sequence, (n_samples,)."""
        P = self.predict_proba(X)
        return self.classes_[np.argmax(P, axis=1)]


# Cell-neutral names for the same estimators (cell="lstm" reads better on these).
RNNRegressor = ElmanRegressor
RNNClassifier = ElmanClassifier
