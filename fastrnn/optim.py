"""Optimizers, learning-rate schedules and gradient clipping for a dict of parameter arrays.

    model = fastrnn.ElmanRNN(1, 16, 1)
    opt = fastrnn.optim.Adam(model.params, lr=1e-3, schedule=StepLR(10, gamma=0.5))
    for epoch in range(epochs):
        for X, Y in batches:
            loss, grads = model.loss_and_grad(X, Y)
            clip_by_global_norm(grads, 5.0)
            opt.step(grads)                    # updates model.params' arrays in place
        opt.epoch_end()                        # advances the schedule

Every optimizer writes into the parameter arrays it was given (so a model that holds them
sees the update) and allocates nothing per step: its state and one scratch array per
parameter are allocated once, in __init__, and every step is a sequence of ufuncs with
out=. Parameters keep their dtype (float32 stays float32). The update rules follow
PyTorch's torch.optim (SGD, RMSprop, Adam, AdamW) and Karpathy's min-char-rnn (Adagrad).

Weight decay: every optimizer takes weight_decay (default 0, AdamW's 0.01). SGD, Adagrad,
RMSProp and Adam add it to the gradient as an L2 penalty before their update, g <- g +
weight_decay * p, as torch.optim does; AdamW decays the weights themselves, decoupled from
the gradient, p <- p - lr * weight_decay * p before its Adam step (torch.optim.AdamW).
Biases are never decayed unless decay_biases=True: a bias is any parameter array with one
axis (p.ndim == 1: b, b_y, and every layer's or direction's bias under whatever name), so
the rule follows the arrays' shapes, not their names.
"""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ._validate import FLOAT_DTYPES
from ._validate import boolean as _boolean
from ._validate import count as _positive_int
from ._validate import fraction as _fraction
from ._validate import nonnegative_real as _nonnegative
from ._validate import positive_real as _positive
from ._validate import real as _real

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSProp", "Adam", "AdamW", "OPTIMIZERS",
           "make_optimizer",
           "StepLR", "ExponentialLR", "CosineLR",
           "global_norm", "clip_by_global_norm", "clip_by_value"]


def _scalar(value):
    """A 0-d array (as np.load gives back a saved float) as the Python scalar it holds."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: callables epoch -> factor, lr = base lr * factor

class StepLR:
    """Multiply the learning rate by gamma every step_size epochs (torch's StepLR):
    factor = gamma ** (epoch // step_size)."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = _positive_int(step_size, "step_size")
        self.gamma = _positive(gamma, "gamma")

    def __call__(self, epoch):
        return self.gamma ** (epoch // self.step_size)

    def __repr__(self):
        return f"StepLR(step_size={self.step_size}, gamma={self.gamma})"


class ExponentialLR:
    """Multiply the learning rate by gamma every epoch: factor = gamma ** epoch."""

    def __init__(self, gamma):
        self.gamma = _positive(gamma, "gamma")

    def __call__(self, epoch):
        return self.gamma ** epoch

    def __repr__(self):
        return f"ExponentialLR(gamma={self.gamma})"


class CosineLR:
    """Cosine annealing from 1 down to min_factor over total_epochs (torch's
    CosineAnnealingLR with eta_min = min_factor * lr), then held at min_factor:

        factor = min_factor + (1 - min_factor) * (1 + cos(pi * epoch / total_epochs)) / 2
    """

    def __init__(self, total_epochs, min_factor=0.0):
        self.total_epochs = _positive_int(total_epochs, "total_epochs")
        self.min_factor = _real(min_factor, "min_factor")
        if not 0.0 <= self.min_factor <= 1.0:
            raise ValueError(f"min_factor must be in [0, 1]; got {self.min_factor}")

    def __call__(self, epoch):
        # held at the end rather than rising again (torch's version is periodic)
        progress = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_factor + (1.0 - self.min_factor) * (1.0 + math.cos(math.pi * progress)) / 2

    def __repr__(self):
        return f"CosineLR(total_epochs={self.total_epochs}, min_factor={self.min_factor})"


# ---------------------------------------------------------------------------------------------
# Optimizers

class Optimizer:
    """Base class: updates params (a dict of float32/float64 arrays) in place.

    Subclasses name their per-parameter state arrays in buffer_names, their settings in
    hyperparameters (validated by _check_hyperparameters) and implement _update. Weight
    decay is done here, around _update, for every subclass: _update sees the decayed
    gradient (L2) or the decayed weights (decoupled = True, AdamW).

    Parameters
    ----------
    params : dict of str -> ndarray
        The arrays to train, e.g. ElmanRNN.params. The optimizer keeps references to these
        arrays (not to the dict): write into them, do not replace them.
    lr : float > 0
        Base learning rate.
    schedule : callable epoch -> factor, optional
        The learning rate in epoch e is lr * schedule(e); see StepLR, ExponentialLR,
        CosineLR. None means a constant learning rate.
    weight_decay : float >= 0
        L2 penalty: each step uses g + weight_decay * p as the gradient of p (for AdamW,
        decoupled decay of the weights instead). 0 turns it off.
    decay_biases : bool
        Decay the biases too. A bias is any parameter with p.ndim == 1, whatever its name;
        by default (False) only arrays of two or more axes are decayed.
    """

    buffer_names = ()        # per-parameter state arrays, e.g. ("exp_avg", "exp_avg_sq")
    hyperparameters = ()     # settings saved by state_dict, besides lr and the decay settings
    decay_settings = ("weight_decay", "decay_biases")   # saved by state_dict, for every class
    decoupled = False        # True: decay the weights before _update (AdamW), not the gradient
    # values of the decay settings for state dicts written before they existed: no decay
    legacy_defaults = {"weight_decay": 0.0, "decay_biases": False}

    def __init__(self, params, lr, schedule=None, weight_decay=0.0, decay_biases=False,
                 **hyperparameters):
        self.params = _check_params(params)
        self.base_lr = _positive(lr, "lr")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be None or a callable epoch -> factor (such as "
                            f"StepLR(10)); got {schedule!r}")
        self.schedule = schedule
        self.__dict__.update(self._check_hyperparameters(**hyperparameters))
        self.__dict__.update(_check_decay(weight_decay, decay_biases))
        self.epoch = 0          # epochs completed (epoch_end calls)
        self.steps = 0          # step calls, for Adam's bias correction
        # all per-step memory, allocated once: the state, and one scratch array per
        # parameter that each update builds its increment in
        self.state = {k: {name: np.zeros_like(p) for name in self.buffer_names}
                      for k, p in self.params.items()}
        self._scratch = {k: np.empty_like(p) for k, p in self.params.items()}
        self._decayed = {}
        self._setup_decay()
        self._lr = self.base_lr * self._factor(self.epoch)

    def _setup_decay(self):
        """self._decayed: {key: array} for the parameters that decay (none if weight_decay
        is 0; biases only with decay_biases). For L2 decay the array is where g + wd * p is
        built each step, allocated here rather than per step (kept when it exists); for
        decoupled decay it is None (the weights are decayed in place)."""
        old = self._decayed
        self._decayed = {
            k: None if self.decoupled else old[k] if old.get(k) is not None
            else np.empty_like(p)
            for k, p in self.params.items()
            if self.weight_decay > 0 and (self.decay_biases or p.ndim != 1)}

    @property
    def _settings(self):
        """Names of every saved setting besides lr: the class's, then the decay settings."""
        return self.hyperparameters + self.decay_settings

    def _check_hyperparameters(self):
        """{name: validated value} for the subclass's hyperparameters."""
        return {}

    def _update(self, p, g, scratch, lr, state):
        """Update p in place from its gradient g, using only preallocated arrays."""
        raise NotImplementedError(f"{type(self).__name__} must implement _update")

    @property
    def lr(self):
        """The current learning rate: base lr times the schedule's factor for this epoch."""
        return self._lr

    def _factor(self, epoch):
        if self.schedule is None:
            return 1.0
        factor = self.schedule(epoch)
        if (isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real)
                or not math.isfinite(factor) or factor < 0):
            raise ValueError(f"schedule({epoch}) must return a finite factor >= 0; "
                             f"got {factor!r} from {self.schedule!r}")
        return float(factor)    # a Python float, so float32 arithmetic stays float32

    def epoch_end(self):
        """Advance the schedule by one epoch."""
        self.epoch += 1
        self._lr = self.base_lr * self._factor(self.epoch)

    def step(self, grads):
        """Update every params[k] in place from grads[k] (a dict with the same keys; extra
        keys such as "X" or "h0" are ignored). Each grads[k] must have params[k]'s shape and
        dtype. Nothing is updated unless every gradient passes those checks; grads is not
        modified."""
        self._check_grads(grads)
        self.steps += 1
        lr = self._lr
        wd, decayed = self.weight_decay, self._decayed
        for k, p in self.params.items():
            g = grads[k]
            if k in decayed:
                if self.decoupled:
                    p *= 1.0 - lr * wd                  # p <- p - lr * wd * p
                else:
                    g = decayed[k]
                    np.multiply(p, wd, out=g)           # g <- grads[k] + wd * p
                    g += grads[k]
            self._update(p, g, self._scratch[k], lr, self.state[k])

    def _check_grads(self, grads):
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict of arrays keyed like params; got "
                            f"{type(grads).__name__}")
        for k, p in self.params.items():
            if k not in grads:
                raise KeyError(f"grads is missing {k!r}: expected a gradient for every "
                               f"parameter {list(self.params)}")
            g = grads[k]
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{k!r}] must be a numpy array; got "
                                f"{type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{k!r}] must have the shape of params[{k!r}], "
                                 f"{p.shape}; got {g.shape}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{k!r}] must have the dtype of params[{k!r}], "
                                f"{p.dtype}; got {g.dtype}")

    def state_dict(self):
        """A flat dict of plain values (str, int, float, bool, ndarray copies) to checkpoint
        with, e.g. np.savez(path, **opt.state_dict()). The schedule itself is not saved
        (rebuild it), but the epoch it is at is."""
        d = {"optimizer": type(self).__name__, "lr": self.base_lr, "epoch": self.epoch,
             "steps": self.steps}
        for name in self._settings:
            d[name] = getattr(self, name)
        for k, bufs in self.state.items():
            for name, buf in bufs.items():
                d[_state_key(k, name)] = buf.copy()
        return d

    def load_state_dict(self, d):
        """Restore lr, hyperparameters, epoch, step count and state from state_dict()'s
        output (or np.load of it). Buffers are copied into this optimizer's own arrays, so
        they keep their identity and dtype. Everything is checked before anything changes.
        A state dict from before weight decay existed (without weight_decay, decay_biases)
        loads as the optimizer it came from ran: without decay."""
        if not isinstance(d, Mapping) and not hasattr(d, "files"):     # dict or NpzFile
            raise TypeError(f"load_state_dict expects a dict from state_dict(); got "
                            f"{type(d).__name__}")
        keys = set(d.files if hasattr(d, "files") else d.keys())
        kind = str(_scalar(d["optimizer"])) if "optimizer" in keys else None
        if kind is not None and kind != type(self).__name__:
            raise ValueError(f"state dict is from a {kind} optimizer; cannot load it into "
                             f"{type(self).__name__}")
        required = ["optimizer", "lr", "epoch", "steps", *self.hyperparameters,
                    *(name for name in self.decay_settings if name not in self.legacy_defaults)]
        missing = [key for key in required if key not in keys]
        if missing:
            raise KeyError(f"state dict is missing {missing}")
        lr = _positive(_scalar(d["lr"]), "lr")
        epoch, steps = _scalar(d["epoch"]), _scalar(d["steps"])
        for name, value in (("epoch", epoch), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"state dict {name!r} must be an integer >= 0; got {value!r}")
        hyper = self._check_hyperparameters(
            **{name: _scalar(d[name]) for name in self.hyperparameters})
        hyper.update(_check_decay(**{name: _scalar(d[name]) if name in keys
                                     else self.legacy_defaults[name]
                                     for name in self.decay_settings}))
        expected = {_state_key(k, name) for k in self.params for name in self.buffer_names}
        unexpected = sorted(key for key in keys if key.startswith("state/") and
                            key not in expected)
        if unexpected:
            raise ValueError(f"state dict has state for parameters this optimizer does not "
                             f"have: {unexpected}")
        buffers = {}
        for k, p in self.params.items():
            for name in self.buffer_names:
                key = _state_key(k, name)
                if key not in keys:
                    raise KeyError(f"state dict is missing {key!r}")
                value = np.asarray(d[key])
                if value.shape != p.shape:
                    raise ValueError(f"state dict {key!r} has shape {value.shape}; "
                                     f"params[{k!r}] has shape {p.shape}")
                buffers[key] = value
        # all checked: now change
        self.base_lr, self.epoch, self.steps = lr, int(epoch), int(steps)
        self.__dict__.update(hyper)
        self._setup_decay()
        for k in self.params:
            for name in self.buffer_names:
                np.copyto(self.state[k][name], buffers[_state_key(k, name)], casting="unsafe")
        self._lr = self.base_lr * self._factor(self.epoch)

    def __repr__(self):
        settings = "".join(f", {name}={getattr(self, name)!r}" for name in self._settings)
        schedule = "" if self.schedule is None else f", schedule={self.schedule!r}"
        return f"{type(self).__name__}(lr={self.base_lr}{settings}{schedule})"


def _check_decay(weight_decay, decay_biases):
    return {"weight_decay": _nonnegative(weight_decay, "weight_decay"),
            "decay_biases": _boolean(decay_biases, "decay_biases")}


def _state_key(param, buffer):
    return f"state/{param}/{buffer}"


def _check_params(params):
    """params as a new dict holding the same arrays (checked: float32/float64, writeable)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of numpy arrays (such as model.params); got "
                        f"{type(params).__name__}")
    if not params:
        raise ValueError("params must not be empty")
    for k, p in params.items():
        if not isinstance(p, np.ndarray):
            raise TypeError(f"params[{k!r}] must be a numpy array; got {type(p).__name__}")
        if p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"params[{k!r}] must be float32 or float64; got dtype {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(f"params[{k!r}] is read-only; optimizers update parameters "
                             f"in place")
    return dict(params)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD
    (dampening 0):

        buf = momentum * buf + g                          (buf starts at 0)
        p  -= lr * (g + momentum * buf  if nesterov else  buf)

    With momentum=0 this is plain p -= lr * g.

    weight_decay > 0 adds an L2 penalty to the gradient first, g <- g + weight_decay * p,
    as torch.optim.SGD does; biases (parameters with ndim == 1) are not decayed unless
    decay_biases=True.
    """

    buffer_names = ("momentum_buffer",)
    hyperparameters = ("momentum", "nesterov")

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, schedule=None,
                 weight_decay=0.0, decay_biases=False):
        super().__init__(params, lr, schedule, weight_decay, decay_biases, momentum=momentum,
                         nesterov=nesterov)

    def _check_hyperparameters(self, momentum, nesterov):
        momentum = _fraction(momentum, "momentum")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False; got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0")
        return {"momentum": momentum, "nesterov": bool(nesterov)}

    def _update(self, p, g, scratch, lr, state):
        if self.momentum == 0:
            np.multiply(g, lr, out=scratch)
        else:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g                         # from 0, the first step gives buf = g, as torch
            if self.nesterov:
                np.multiply(buf, self.momentum, out=scratch)
                scratch += g
                scratch *= lr
            else:
                np.multiply(buf, lr, out=scratch)
        p -= scratch


class Adagrad(Optimizer):
    """Adagrad as in Karpathy's min-char-rnn:

        mem += g * g
        p   -= lr * g / sqrt(mem + eps)

    (torch.optim.Adagrad puts eps outside the root, sqrt(mem) + eps: the same up to
    O(eps / sqrt(mem)).)

    weight_decay > 0 adds an L2 penalty to the gradient first, g <- g + weight_decay * p,
    as torch.optim.Adagrad does; biases (parameters with ndim == 1) are not decayed unless
    decay_biases=True.
    """

    buffer_names = ("sum",)
    hyperparameters = ("eps",)

    def __init__(self, params, lr=0.1, eps=1e-8, schedule=None, weight_decay=0.0,
                 decay_biases=False):
        super().__init__(params, lr, schedule, weight_decay, decay_biases, eps=eps)

    def _check_hyperparameters(self, eps):
        return {"eps": _positive(eps, "eps")}

    def _update(self, p, g, scratch, lr, state):
        mem = state["sum"]
        np.multiply(g, g, out=scratch)
        mem += scratch
        np.add(mem, self.eps, out=scratch)
        np.sqrt(scratch, out=scratch)
        np.divide(g, scratch, out=scratch)
        scratch *= lr
        p -= scratch


class RMSProp(Optimizer):
    """RMSProp (Tieleman & Hinton 2012) as torch.optim.RMSprop (not centered, no momentum):

        v  = alpha * v + (1 - alpha) * g * g               (v starts at 0)
        p -= lr * g / (sqrt(v) + eps)

    weight_decay > 0 adds an L2 penalty to the gradient first, g <- g + weight_decay * p,
    as torch.optim.RMSprop does; biases (parameters with ndim == 1) are not decayed unless
    decay_biases=True.
    """

    buffer_names = ("square_avg",)
    hyperparameters = ("alpha", "eps")

    def __init__(self, params, lr=0.001, alpha=0.99, eps=1e-8, schedule=None,
                 weight_decay=0.0, decay_biases=False):
        super().__init__(params, lr, schedule, weight_decay, decay_biases, alpha=alpha,
                         eps=eps)

    def _check_hyperparameters(self, alpha, eps):
        return {"alpha": _fraction(alpha, "alpha"), "eps": _positive(eps, "eps")}

    def _update(self, p, g, scratch, lr, state):
        v = state["square_avg"]
        v *= self.alpha
        np.multiply(g, g, out=scratch)
        scratch *= 1.0 - self.alpha
        v += scratch
        np.sqrt(v, out=scratch)
        scratch += self.eps
        np.divide(g, scratch, out=scratch)
        scratch *= lr
        p -= scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as torch.optim.Adam (no amsgrad). At
    step t = 1, 2, ...:

        m  = beta1 * m + (1 - beta1) * g                   (m, v start at 0)
        v  = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    weight_decay > 0 adds an L2 penalty to the gradient first, g <- g + weight_decay * p,
    as torch.optim.Adam does; biases (parameters with ndim == 1) are not decayed unless
    decay_biases=True. The penalty then goes through m and v like the loss's gradient
    (Adam rescales it per coordinate); AdamW decouples the decay from the gradient.
    """

    buffer_names = ("exp_avg", "exp_avg_sq")
    hyperparameters = ("beta1", "beta2", "eps")

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, schedule=None,
                 weight_decay=0.0, decay_biases=False):
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}") from None
        super().__init__(params, lr, schedule, weight_decay, decay_biases, beta1=beta1,
                         beta2=beta2, eps=eps)

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def _check_hyperparameters(self, beta1, beta2, eps):
        return {"beta1": _fraction(beta1, "betas[0]"), "beta2": _fraction(beta2, "betas[1]"),
                "eps": _positive(eps, "eps")}

    def _update(self, p, g, scratch, lr, state):
        m, v = state["exp_avg"], state["exp_avg_sq"]
        t = self.steps                        # already counts this step
        step_size = lr / (1.0 - self.beta1 ** t)
        root_correction = math.sqrt(1.0 - self.beta2 ** t)
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=scratch)
        m += scratch
        v *= self.beta2
        np.multiply(g, g, out=scratch)
        scratch *= 1.0 - self.beta2
        v += scratch
        np.sqrt(v, out=scratch)
        scratch /= root_correction
        scratch += self.eps
        np.divide(m, scratch, out=scratch)
        scratch *= step_size
        p -= scratch

    def __repr__(self):
        schedule = "" if self.schedule is None else f", schedule={self.schedule!r}"
        return (f"{type(self).__name__}(lr={self.base_lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay}, decay_biases={self.decay_biases}"
                f"{schedule})")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW:
    at each step the weights decay first,

        p *= 1 - lr * weight_decay

    and then take Adam's step (see Adam) on the loss's gradient g alone, so the decay is
    not rescaled by m and v. weight_decay defaults to 0.01, as in torch. Biases
    (parameters with ndim == 1) are not decayed unless decay_biases=True.
    """

    decoupled = True
    legacy_defaults = {"decay_biases": False}    # AdamW's state dicts always had weight_decay

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, schedule=None,
                 weight_decay=0.01, decay_biases=False):
        super().__init__(params, lr, betas, eps, schedule, weight_decay, decay_biases)


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSProp, "adam": Adam,
              "adamw": AdamW}


def make_optimizer(optimizer, params, lr=None, **kwargs):
    """An Optimizer for params from a name ("sgd", "adagrad", "rmsprop", "adam", "adamw",
    any case), an Optimizer subclass, or an Optimizer instance (returned as it is; it must
    already hold these params, and lr/kwargs must not be given). lr=None means the
    optimizer's default; kwargs go to the constructor (momentum=, betas=, schedule=,
    weight_decay=, decay_biases=, ...)."""
    if isinstance(optimizer, Optimizer):
        if lr is not None or kwargs:
            given = ", ".join((["lr"] if lr is not None else []) + list(kwargs))
            raise ValueError(f"optimizer is already built ({optimizer!r}); {given} cannot be "
                             f"given with it (lr and other settings such as weight_decay "
                             f"go to its constructor)")
        if (not isinstance(params, Mapping) or params.keys() != optimizer.params.keys()
                or any(params[k] is not p for k, p in optimizer.params.items())):
            raise ValueError(f"the {type(optimizer).__name__} instance was built for other "
                             f"parameter arrays than params")
        return optimizer
    if isinstance(optimizer, str):
        cls = OPTIMIZERS.get(optimizer.lower())
        if cls is None:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))} "
                             f"(or an Optimizer class or instance); got {optimizer!r}")
    elif isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        cls = optimizer
    else:
        raise TypeError(f"optimizer must be a name ({', '.join(map(repr, OPTIMIZERS))}), an "
                        f"Optimizer class or an Optimizer instance; got {optimizer!r}")
    if lr is not None:
        kwargs["lr"] = lr
    return cls(params, **kwargs)


# ---------------------------------------------------------------------------------------------
# Gradient clipping, in place on a dict of gradient arrays

def _grad_arrays(grads):
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a dict of arrays; got {type(grads).__name__}")
    for k, g in grads.items():
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"grads[{k!r}] must be a float numpy array; got "
                            f"{getattr(g, 'dtype', type(g).__name__)}")
    return grads.values()


def global_norm(grads):
    """sqrt of the sum of squares of every entry of every array in grads (a float).

    Each array's sum of squares is one BLAS dot product; they are added in float64. A
    float32 dot that overflows is redone in float64, so a norm is inf or nan only if the
    gradients hold inf or nan (or it exceeds float64)."""
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):     # inf/nan is a result here
        for g in _grad_arrays(grads):
            v = g.ravel()                    # a view for contiguous arrays
            sq = float(np.dot(v, v))
            if not math.isfinite(sq) and v.dtype != np.float64:
                v = v.astype(np.float64)     # rare path: float32 squares overflowed
                sq = float(np.dot(v, v))
            total += sq
    return math.sqrt(total)


def clip_by_global_norm(grads, max_norm):
    """Scale every gradient by max_norm / norm when their global norm exceeds max_norm, in
    place. Returns the norm before clipping. A non-finite norm leaves grads untouched (the
    caller can then skip the step)."""
    max_norm = _positive(max_norm, "max_norm")
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    return norm


def clip_by_value(grads, clip_value):
    """Clip every gradient entry to [-clip_value, clip_value], in place (NaN stays NaN)."""
    clip_value = _positive(clip_value, "clip_value")
    for g in _grad_arrays(grads):
        np.clip(g, -clip_value, clip_value, out=g)
