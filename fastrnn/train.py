"""Training: the fit loop, its History, and callbacks.

    history = model.fit(X, Y, epochs=20, batch_size=32, optimizer="adam", lr=1e-3)

One optimizer step per mini-batch (or, with truncated BPTT, per chunk of tbptt steps of a
mini-batch, the state carried from chunk to chunk as in min-char-rnn). Each step: loss and
gradients from the compiled core, the global gradient norm (recorded before clipping),
clipping by norm and/or value, then the update. A step whose loss or gradient is NaN/inf is
skipped and counted (weights untouched), and so is one whose update overflows (the weights and
the optimizer's state are put back exactly as they were); max_bad_steps in a row stop
training with a FloatingPointError, so weights are never silently corrupted.

Progress: a tqdm bar for the whole fit call on a terminal (or in a notebook); elsewhere (a
log file, CI, a pipe) plain lines on stderr, at most one every PROGRESS_SECONDS seconds.
"""
import contextlib
import math
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from . import _threads, _validate, head
from ._threads import SINGLE_THREAD_WORK
from .optim import (CosineLR, Optimizer, clip_by_global_norm, clip_by_value, global_norm,
                    make_optimizer)

LR_SCHEDULES = ("constant", "cosine")       # fit's lr_schedule names (or a callable)
PROGRESS_SECONDS = 5.0     # off a terminal: at most one progress line per this many seconds


class History:
    """Per-epoch records of a fit: a list of dicts in .epochs, one per epoch, with the keys

    epoch (1, 2, ...), loss (mean training loss over the epoch's steps), val_loss and
    val_metric (None without validation data; the metric is accuracy for softmax outputs and
    mean absolute error for linear ones), grad_norm (mean global gradient norm before
    clipping) and grad_norm_max, lr (the learning rate the epoch trained at), steps,
    skipped_steps (non-finite), seconds, samples_per_second.

    history["loss"] gives one key's values over the epochs, history[-1] (an int) one epoch's
    dict; iterating gives the epochs' dicts in order, keys() the record keys, and
    "loss" in history asks whether a key is recorded. stopped_early: a callback stopped
    the fit. fastrnn.diagnostics.plot_history(history) plots the losses.
    """

    def __init__(self):
        self.epochs = []
        self.stopped_early = False

    def __getitem__(self, key):
        if isinstance(key, str):
            if self.epochs and key not in self.epochs[0]:
                raise KeyError(f"History has no key {key!r}; its keys are {self.keys()}")
            return [e[key] for e in self.epochs]
        return self.epochs[key]         # an epoch's dict (int) or a list of them (slice)

    def __iter__(self):
        return iter(self.epochs)

    def __len__(self):
        return len(self.epochs)

    def __contains__(self, key):
        """A key of the records ("loss" in history), or an epoch's dict."""
        if isinstance(key, str):
            return key in self.keys()
        return key in self.epochs

    def keys(self):
        """The record keys (empty before the first epoch)."""
        return list(self.epochs[0]) if self.epochs else []

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


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):     # no isatty, or a closed stream
        return False


def _in_notebook():
    """True in a Jupyter kernel, where stderr is no terminal but tqdm.auto draws a widget."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_kind(progress):
    """How progress is shown: "bar" (tqdm), "lines" (plain lines on stderr) or None.

    progress=None: a bar when stderr is a terminal or in a notebook; plain lines when it is
    anything else (a file, a pipe, CI's log), never a bar's carriage-return fragments.
    True: a bar wherever stderr goes; False: nothing."""
    if progress is None:
        if sys.stderr is None:
            return None
        return "bar" if _isatty(sys.stderr) or _in_notebook() else "lines"
    return "bar" if progress else None


def progress_bar(total, desc, unit="seq", **kwargs):
    """A tqdm bar on stderr, or None if tqdm cannot be imported."""
    try:
        from tqdm.auto import tqdm
    except ImportError:           # tqdm is a dependency, but do not fail training over it
        return None
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr, **kwargs)


def _say(line):
    print(line, file=sys.stderr, flush=True)


class _Progress:
    """fit's progress: one tqdm bar for the whole call, or plain lines (see progress_kind).

    Lines: the first and the last epoch, and in between at most one line per
    PROGRESS_SECONDS (at an epoch's end, or after a batch within a long epoch)."""

    def __init__(self, progress, epochs, n):
        self.kind, self.epochs, self.n = progress_kind(progress), epochs, n
        self.bar = progress_bar(epochs * n, "fit") if self.kind == "bar" else None
        if self.kind == "bar" and self.bar is None:
            self.kind = "lines"                       # no tqdm: lines rather than nothing
        self.t0 = self.last = time.perf_counter()
        self.pending = None                           # an epoch's line not printed yet

    def batch(self, epoch, done, size, loss):
        """After a batch of size sequences, done of the epoch's n so far."""
        if self.bar is not None:
            self.bar.update(size)
            if loss is not None:
                self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4g}")
        elif self.kind == "lines" and done < self.n:
            now = time.perf_counter()
            if now - self.last >= PROGRESS_SECONDS:
                self.last = now
                loss = "" if loss is None else f", loss {loss:.4g}"
                _say(f"fit: epoch {epoch}/{self.epochs}: {done:,}/{self.n:,} sequences"
                     f"{loss}; {now - self.t0:.1f} s elapsed")

    def epoch_end(self, logs):
        if self.kind != "lines":
            return
        now = time.perf_counter()
        e = logs["epoch"]
        if e == 1 or e == self.epochs or now - self.last >= PROGRESS_SECONDS:
            self.last, self.pending = now, None
            _say(self._line(logs, now))
        else:
            self.pending = (logs, now)

    def _line(self, logs, now):
        parts = [f"loss {logs['loss']:.4g}"]
        if logs["val_loss"] is not None:
            parts.append(f"val_loss {logs['val_loss']:.4g}")
        if logs["val_metric"] is not None:
            parts.append(f"val_metric {logs['val_metric']:.4g}")
        if logs["skipped_steps"]:
            parts.append(f"{logs['skipped_steps']} skipped steps")
        return (f"fit: epoch {logs['epoch']}/{self.epochs}: {', '.join(parts)}; "
                f"{logs['seconds']:.2f} s/epoch ({logs['samples_per_second']:,.0f} seq/s), "
                f"{now - self.t0:.1f} s elapsed")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.pending is not None:                # the last epoch run (stopped early)
            _say(self._line(*self.pending))
            self.pending = None


class _Rollback:
    """Undo an optimizer step exactly: the weights, the optimizer's state buffers and its
    step count as they were before it.

    Why a copy before every step taken. A step whose loss or gradient is not finite never
    reaches the optimizer (fit skips it: the global norm is finite only if every gradient
    entry is; a norm beyond float64's range skips a finite step too, harmlessly), so it
    needs no undoing and costs no copy. A step with finite gradients can
    still overflow in the update (a huge lr, gradients near the dtype's range): in the
    weights, or only in the optimizer's state (Adam's g*g overflowing to inf leaves the
    weights finite and silently freezes those entries for good). The optimizers update
    their arrays in place, allocating nothing per step, and their arithmetic cannot be run
    backwards exactly (beta * m + (1 - beta) * g rounds), so the only exact source of the
    previous values is a copy taken before the step: into these arrays, allocated once per
    fit. Cheaper schemes were considered and left: predicting an overflow from lr and the
    gradient norm would need a bound per optimizer (and has none for a user's subclass);
    updating out of place into the spare arrays and swapping would need the optimizers to
    cooperate, and the model's arrays must stay the same objects. The cost (not measured):
    one more read and write of the weights and of each state buffer per step (Adam: 3
    arrays, beside the ~30 array passes of its own update) and one read-only finiteness
    pass over them; next to loss_and_grad, which touches every weight N*T times, this is
    small except for the tiniest batches.
    """

    def __init__(self, params, opt):
        arrays = list(params.values())
        for bufs in opt.state.values():
            arrays.extend(bufs.values())
        self.opt = opt
        self.pairs = [(a, np.empty_like(a)) for a in arrays]
        self.steps = opt.steps

    def save(self):
        for a, saved in self.pairs:
            np.copyto(saved, a)
        self.steps = self.opt.steps

    def finite(self):
        return all(_validate._all_finite(a) for a, _ in self.pairs)

    def restore(self):
        for a, saved in self.pairs:
            np.copyto(a, saved)
        self.opt.steps = self.steps


def _lr_schedule(lr_schedule, optimizer, epochs):
    """fit's lr_schedule as the schedule to build the optimizer with (None: constant)."""
    if lr_schedule is None:
        return None
    if isinstance(optimizer, Optimizer):
        raise ValueError(f"lr_schedule cannot be given with an optimizer that is already "
                         f"built ({optimizer!r}): give it the schedule when you build it "
                         f"(schedule=), or name the optimizer (optimizer='adam', "
                         f"lr_schedule={lr_schedule!r})")
    if isinstance(lr_schedule, str):
        name = _validate.choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
        return CosineLR(epochs) if name == "cosine" else None
    if not callable(lr_schedule):
        names = ", ".join(map(repr, LR_SCHEDULES))
        raise TypeError(f"lr_schedule must be None, one of {names} or a schedule (a "
                        f"callable epoch -> factor, such as fastrnn.optim.StepLR(10)); got "
                        f"{lr_schedule!r}")
    return lr_schedule


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


def check_params(model):
    """The model's parameters as fit's lean inner path trusts them: every one present with
    its shape, a writeable ndarray of the model's (native) dtype, finite (ValueError or
    TypeError naming it otherwise; fit trains them in place, so it cannot work on a copy).
    The optimizer updates them in place and the rollback keeps them finite, so fit checks
    them once per epoch, not per batch. (Fortran-ordered or unaligned ones train too: the
    compiled calls get a C-contiguous copy of them, model._train_loss_and_grad.)"""
    model._weights()                                    # present, with their shapes
    for name, w in model.params.items():
        if not (isinstance(w, np.ndarray) and w.dtype == model.dtype and w.flags.writeable):
            got = (f"a read-only {w.dtype} array" if isinstance(w, np.ndarray)
                   and not w.flags.writeable else f"{type(w).__name__} "
                   f"{getattr(w, 'dtype', '')}")
            raise TypeError(f"model.params[{name!r}] must be a writeable "
                            f"{np.dtype(model.dtype).name} ndarray during fit (it is trained "
                            f"in place); got {got}")
        if not _validate._all_finite(w):
            raise ValueError(f"model.params[{name!r}] has non-finite values")


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
        lr_schedule=None, clip_norm=5.0, clip_value=None, tbptt=None, lengths=None,
        target="sequence", validation_data=None, callbacks=(), shuffle=True, progress=None,
        max_bad_steps=10, seed=None, weight_decay=None, decay_biases=False,
        sample_weight=None, threads=None):
    """Train model on X (N, T, I) and targets Y; returns a History. See ElmanRNN.fit."""
    threads = _threads.check_threads(threads)
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
    schedule = _lr_schedule(lr_schedule, optimizer, epochs)
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
    opt = make_optimizer(optimizer, model.params, lr, **decay,
                         **({} if schedule is None else {"schedule": schedule}))
    rng = np.random.default_rng(model.seed if seed is None else seed)
    # dropout masks from a stream of their own, so that the shuffling does not depend on
    # whether the model has dropout
    dropout_rng = np.random.default_rng(
        np.random.SeedSequence(model.seed if seed is None else seed).spawn(1)[0])
    callbacks = list(callbacks)
    history = History()
    rollback = _Rollback(model.params, opt)
    N = X.shape[0]
    bad_in_a_row = 0

    for cb in callbacks:
        cb.on_train_begin(model, history)
    report = _Progress(progress, epochs, N)
    # the cap on batch splitting, read before BLAS is pinned below (the pin is about BLAS's own
    # threads, which a split call does not use)
    split = _threads.threads(threads if threads is not None else _threads.thread_cap())
    split.__enter__()
    blas = blas_threads(min(batch_size, N), model.hidden_size, model.cell.n_gates)
    blas.__enter__()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            check_params(model)                 # once per epoch: callbacks may change them
            lr_epoch = opt.lr                   # the rate this epoch trains at
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
                    # a finite norm means every gradient entry is finite: checked before
                    # the step, so a non-finite gradient never reaches the optimizer's state
                    ok = math.isfinite(loss) and math.isfinite(norm)
                    if ok:
                        rollback.save()
                        with np.errstate(over="ignore", invalid="ignore"):   # undone below
                            opt.step(grads)
                        ok = rollback.finite()
                        if not ok:                   # the update itself overflowed
                            rollback.restore()
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
                report.batch(epoch, min(start + batch_size, N), len(idx),
                             losses[-1] if losses else None)
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
                    "lr": lr_epoch, "steps": len(losses) + skipped, "skipped_steps": skipped,
                    "seconds": seconds, "samples_per_second": N / seconds}
            history.epochs.append(logs)
            report.epoch_end(logs)
            stop = [cb.on_epoch_end(model, history, logs) for cb in callbacks]
            if any(stop):
                history.stopped_early = True
                break
    finally:
        blas.__exit__(None, None, None)
        split.__exit__(None, None, None)
        report.close()
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
    each, or (L, N, H) for several layers. X, Y, lengths, sample_weight: fit's validated
    arrays' rows (fresh contiguous copies), so the model's lean training path takes them."""
    N, T = X.shape[:2]
    if tbptt is None or tbptt >= T:
        yield model._train_loss_and_grad(X, Y, None, target, lengths, False, dropout_rng,
                                         sample_weight)
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
        loss, grads, last = model._train_loss_and_grad(
            X[rows, t0:t1], np.ascontiguousarray(Yc), tuple(s[at] for s in state), target,
            None if (chunk_lengths == t1 - t0).all() else chunk_lengths, True, dropout_rng,
            None if sample_weight is None else sample_weight[rows])
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
