"""Training: the fit loop, its History, and callbacks.

    history = model.fit(X, Y, epochs=20, batch_size=32, optimizer="adam", lr=1e-3)

One optimizer step per mini-batch (or, with truncated BPTT, per chunk of tbptt steps of a
mini-batch, the state carried from chunk to chunk as in min-char-rnn). Each step: loss and
gradients from the compiled core, the global gradient norm (recorded before clipping),
clipping by norm and/or value, then the update. A step whose loss or gradient is NaN/inf is
skipped and counted (weights untouched); max_bad_steps in a row stop training with a
FloatingPointError, so weights are never silently corrupted.
"""
import contextlib
import math
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from . import _validate, head
from ._threads import SINGLE_THREAD_WORK
from .optim import clip_by_global_norm, clip_by_value, global_norm, make_optimizer


class History:
    """Per-epoch records of a fit: a list of dicts in .epochs with the keys

    epoch, loss (mean training loss), val_loss and val_metric (None without validation data;
    the metric is accuracy for softmax outputs and mean absolute error for linear ones),
    grad_norm (mean global gradient norm before clipping) and grad_norm_max, lr, steps,
    skipped_steps (non-finite), seconds, samples_per_second.

    history["loss"] gives one key's values over the epochs.
    """

    def __init__(self):
        self.epochs = []
        self.stopped_early = False

    def __getitem__(self, key):
        return [e[key] for e in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        last = self.epochs[-1] if self.epochs else {}
        return (f"History({len(self.epochs)} epochs, last loss={last.get('loss')}, "
                f"val_loss={last.get('val_loss')})")


class Callback:
    """Base class: override any of these. on_epoch_end returning True stops training."""

    def on_train_begin(self, model, history):
        pass

    def on_epoch_end(self, model, history, logs):
        return False

    def on_train_end(self, model, history):
        pass


class EarlyStopping(Callback):
    """Stop when monitor ("val_loss" or "loss") has not improved by min_delta for patience
    epochs; with restore_best_weights, put back the parameters of the best epoch."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0,
                 restore_best_weights=True):
        self.monitor = _validate.choice(monitor, "monitor", ("val_loss", "loss"))
        self.patience = _validate.positive_int(patience, "patience")
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, model, history):
        self.best, self.best_epoch, self.wait, self.best_params = math.inf, None, 0, None

    def on_epoch_end(self, model, history, logs):
        value = logs[self.monitor]
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which needs "
                             f"validation_data in fit")
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best_weights:
                self.best_params = {k: v.copy() for k, v in model.params.items()}
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, model, history):
        if self.restore_best_weights and self.best_params is not None:
            for k, v in self.best_params.items():
                np.copyto(model.params[k], v)


class ModelCheckpoint(Callback):
    """Save the model to path after each epoch (or only when monitor improved, with
    save_best_only). Saves are atomic (fastrnn.io.save): a crash mid-save leaves the
    previous checkpoint intact."""

    def __init__(self, path, monitor="val_loss", save_best_only=True):
        self.path = path
        self.monitor = _validate.choice(monitor, "monitor", ("val_loss", "loss"))
        self.save_best_only = save_best_only

    def on_train_begin(self, model, history):
        self.best = math.inf

    def on_epoch_end(self, model, history, logs):
        value = logs[self.monitor]
        if not self.save_best_only or (value is not None and value < self.best):
            self.best = value if value is not None else self.best
            model.save(self.path, metadata={"epoch": logs["epoch"], self.monitor: value})
        return False


def blas_threads(batch_size, hidden_size, gates=1):
    """Context pinning BLAS to one thread for small per-step products (batch * G*H * H below
    _threads.SINGLE_THREAD_WORK), else a no-op: above it, BLAS keeps its own thread count (at
    N=64, H=256, two threads run the Elman loss_and_grad 1.6x faster than one)."""
    if batch_size * gates * hidden_size * hidden_size < SINGLE_THREAD_WORK:
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def _progress_bar(enabled, total, desc):
    """A tqdm bar, or None. enabled=None: only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:           # tqdm is a dependency, but do not fail training over it
        return None
    return tqdm(total=total, desc=desc, unit="seq", leave=False, file=sys.stderr)


def check_data(model, X, Y, lengths, target, name="X"):
    """(X, Y, lengths) validated against the model; Y labels as int64 for softmax."""
    X = _validate.float_array(X, name, "(N, T, I)", model.dtype, dtype_of="the model")
    if X.shape[2] != model.input_size:
        raise ValueError(f"{name} must have shape (N, T, I) with I = input_size = "
                         f"{model.input_size}; got {X.shape}")
    N, T, _ = X.shape
    lengths = _validate.lengths(lengths, N, T)
    Y = _validate.targets(Y, model.output, target, N, T, model.output_size, model.dtype,
                          lengths)
    return X, Y, lengths


def evaluate(model, X, Y, lengths=None, target="sequence"):
    """(loss, metric) of the model on validated data: the training loss (MSE or
    cross-entropy, means as in loss_and_grad) and accuracy (softmax) or mean absolute
    error (linear), over the scored steps."""
    Y_hat = model.predict(X, lengths=lengths, target=target)
    N, T, _ = X.shape
    if target == "last":
        scored = np.ones(N, bool)
    else:
        scored = (np.ones((N, T), bool) if lengths is None
                  else np.arange(T) < lengths[:, None])
    if model.output == "softmax":
        probs, labels = Y_hat[scored], Y[scored]
        return head.cross_entropy(probs, labels), head.accuracy(probs, labels)
    err = (Y_hat[scored] - Y[scored]).astype(np.float64)
    return float(np.mean(err ** 2)), float(np.mean(np.abs(err)))


def fit(model, X, Y, *, epochs=10, batch_size=32, optimizer="adam", lr=None,
        clip_norm=5.0, clip_value=None, tbptt=None, lengths=None, target="sequence",
        validation_data=None, callbacks=(), shuffle=True, progress=None, max_bad_steps=10,
        seed=None, weight_decay=None, decay_biases=False, sample_weight=None):
    """Train model on X (N, T, I) and targets Y; returns a History. See ElmanRNN.fit."""
    epochs = _validate.positive_int(epochs, "epochs")
    batch_size = _validate.positive_int(batch_size, "batch_size")
    max_bad_steps = _validate.positive_int(max_bad_steps, "max_bad_steps")
    _validate.choice(target, "target", _validate.TARGETS)
    if tbptt is not None:
        tbptt = _validate.positive_int(tbptt, "tbptt")
        if getattr(model, "bidirectional", False):
            raise ValueError("tbptt (truncated BPTT) needs a unidirectional model: the "
                             "reverse direction of a bidirectional one reads each sequence "
                             "from its end, which a chunk does not have; use tbptt=None")
    for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0
                                      and math.isfinite(value)):
            raise ValueError(f"{name} must be None or a positive number; got {value!r}")
    X, Y, lengths = check_data(model, X, Y, lengths, target)
    sample_weight = _validate.sample_weight(sample_weight, X.shape[0])
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise TypeError("validation_data must be a tuple (X_val, Y_val) or "
                            "(X_val, Y_val, lengths_val)")
        Xv, Yv, lv = (*validation_data, None)[:3]
        validation_data = check_data(model, Xv, Yv, lv, target, name="X_val")
    # given only when set, so an Optimizer instance (which refuses them) works as before
    decay = {} if weight_decay is None else {"weight_decay": weight_decay}
    if decay_biases is not False:
        decay["decay_biases"] = decay_biases
    opt = make_optimizer(optimizer, model.params, lr, **decay)
    rng = np.random.default_rng(model.seed if seed is None else seed)
    # dropout masks from a stream of their own, so that the shuffling does not depend on
    # whether the model has dropout
    dropout_rng = np.random.default_rng(
        np.random.SeedSequence(model.seed if seed is None else seed).spawn(1)[0])
    callbacks = list(callbacks)
    history = History()
    backup = {k: np.empty_like(v) for k, v in model.params.items()}
    N = X.shape[0]
    bad_in_a_row = 0

    for cb in callbacks:
        cb.on_train_begin(model, history)
    bar = _progress_bar(progress, epochs * N, "fit")
    threads = blas_threads(min(batch_size, N), model.hidden_size, model.cell.n_gates)
    threads.__enter__()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(N) if shuffle else np.arange(N)
            losses, norms, skipped = [], [], 0
            for start in range(0, N, batch_size):
                idx = order[start:start + batch_size]
                if sample_weight is not None and not sample_weight[idx].any():
                    continue                   # every sequence of this batch weighs 0
                for loss, grads in _batch_steps(model, X[idx], Y[idx],
                                                None if lengths is None else lengths[idx],
                                                target, tbptt, dropout_rng,
                                                None if sample_weight is None
                                                else sample_weight[idx]):
                    norm = (clip_by_global_norm(grads, clip_norm) if clip_norm
                            else global_norm(grads))
                    if clip_value:
                        clip_by_value(grads, clip_value)
                    ok = math.isfinite(loss) and math.isfinite(norm)
                    if ok:
                        for k, v in model.params.items():
                            np.copyto(backup[k], v)
                        opt.step(grads)
                        ok = all(_validate._all_finite(v) for v in model.params.values())
                        if not ok:                   # the update itself overflowed
                            for k, v in model.params.items():
                                np.copyto(v, backup[k])
                    if not ok:
                        skipped += 1
                        bad_in_a_row += 1
                        if bad_in_a_row >= max_bad_steps:
                            raise FloatingPointError(
                                f"training stopped at epoch {epoch}: {bad_in_a_row} steps in "
                                f"a row had a non-finite loss, gradient or update (last loss "
                                f"{loss}, gradient norm {norm}); the weights are those before "
                                f"the first of them. Lower lr, set clip_norm, or check the "
                                f"data.")
                        continue
                    bad_in_a_row = 0
                    losses.append(loss)
                    norms.append(norm)
                if bar is not None:
                    bar.update(len(idx))
                    if losses:
                        bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4g}")
            opt.epoch_end()
            seconds = time.perf_counter() - t0
            val_loss = val_metric = None
            if validation_data is not None:
                val_loss, val_metric = evaluate(model, *validation_data, target=target)
            logs = {"epoch": epoch,
                    "loss": float(np.mean(losses)) if losses else math.nan,
                    "val_loss": val_loss, "val_metric": val_metric,
                    "grad_norm": float(np.mean(norms)) if norms else math.nan,
                    "grad_norm_max": float(np.max(norms)) if norms else math.nan,
                    "lr": opt.lr, "steps": len(losses) + skipped, "skipped_steps": skipped,
                    "seconds": seconds, "samples_per_second": N / seconds}
            history.epochs.append(logs)
            stop = [cb.on_epoch_end(model, history, logs) for cb in callbacks]
            if any(stop):
                history.stopped_early = True
                break
    finally:
        threads.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    for cb in callbacks:
        cb.on_train_end(model, history)
    model.optimizer_ = opt
    return history


def _batch_steps(model, X, Y, lengths, target, tbptt, dropout_rng=None, sample_weight=None):
    """(loss, grads) of each optimizer step for one mini-batch: one step, or with truncated
    BPTT one per chunk of tbptt time steps, each chunk starting from the state the previous
    one ended in (gradients do not cross chunk borders). With target "last", a sequence is
    scored in the chunk that holds its last step; before that its state is only carried.
    The state is the model's own (h; for the LSTM h and c), carried array by array: (N, H)
    each, or (L, N, H) for several layers."""
    N, T = X.shape[:2]
    if tbptt is None or tbptt >= T:
        yield model.loss_and_grad(X, Y, None, target, lengths=lengths, dropout_rng=dropout_rng,
                                  sample_weight=sample_weight)
        return
    lengths = np.full(N, T) if lengths is None else lengths
    layers = getattr(model, "num_layers", 1)
    shape = (N, model.hidden_size) if layers == 1 else (layers, N, model.hidden_size)
    state = [np.zeros(shape, model.dtype) for _ in model.cell.states]
    for t0 in range(0, T, tbptt):
        t1 = min(t0 + tbptt, T)
        alive = lengths > t0                             # sequences not yet ended
        if target == "last":
            scored = alive & (lengths <= t1)             # their last step is in this chunk
            carried = np.flatnonzero(alive & ~scored)
            if carried.size:
                _carry(model, X[carried, t0:t1], state, carried)
            rows = np.flatnonzero(scored)
        else:
            rows = np.flatnonzero(alive)
        if rows.size == 0 or (sample_weight is not None and not sample_weight[rows].any()):
            continue
        chunk_lengths = np.minimum(lengths[rows] - t0, t1 - t0)
        Yc = Y[rows] if target == "last" else Y[rows, t0:t1]
        at = _rows(state, rows)
        loss, grads, last = model.loss_and_grad(
            X[rows, t0:t1], Yc, model._state_out(tuple(s[at] for s in state)), target,
            lengths=None if (chunk_lengths == t1 - t0).all() else chunk_lengths,
            return_state=True, dropout_rng=dropout_rng,
            sample_weight=None if sample_weight is None else sample_weight[rows])
        for s, s_last in zip(state, model._state0(last)):
            s[at] = s_last if _validate._all_finite(s_last) else 0   # never carry NaN on
        yield loss, grads


def _rows(state, rows):
    """The index of these sequences in the state arrays: (N, H), or (L, N, H)."""
    return (slice(None), rows) if state[0].ndim == 3 else rows


def _carry(model, X, state, rows):
    """Advance the given rows of state (a list of (N, H) arrays, in place) over X."""
    at = _rows(state, rows)
    h0 = model._state_out(tuple(s[at] for s in state))
    _, _, last = model.forward(X, h0, return_state=True)
    for s, s_last in zip(state, model._state0(last)):
        s[at] = s_last
