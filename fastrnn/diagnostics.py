"""Vanishing and exploding gradients, made visible.

Through the recurrence, dLoss/ds_{t-1} = (dLoss/ds_t * phi'(a_t)) W_s^T (+ the loss's own
term at t-1), so an error signal k steps back has passed through k Jacobians
diag(phi'(a)) W_s^T. Their product is bounded by (max|phi'| * ||W_s||_2)^k: below 1 the signal
decays geometrically (vanishing), well above 1 it can grow (exploding). That is why plain RNNs
trained by gradient descent rarely learn dependencies more than ~10 steps back (Hochreiter
1991; Bengio, Simard & Frasconi 1994), and what clipping and good initialisation (Pascanu,
Mikolov & Bengio 2013) are for.

    flow = gradient_flow(model, X, Y)          # (T,): ||dLoss/ds_{T-1-k}||, k steps back
    fig = plot_gradient_flow({"init": flow})   # needs matplotlib (the "plot" extra)
"""
import numpy as np

from .init import spectral_radius

# max |phi'(a)| over a: tanh'(0) = 1, sigmoid'(0) = 1/4, relu and identity 1
MAX_DERIVATIVE = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "identity": 1.0}


def gradient_flow(model, X, Y, target="last", lengths=None, h0=None, state="h"):
    """flow (T,): flow[k] is the batch mean of the per-sequence L2 norm of dLoss/dh_{T-1-k},
    the gradient of the loss (as loss_and_grad returns it) reaching the state k steps before
    the end, through every path. Read off during the one backward pass, for every cell.

    With target="last" only the last step is scored, so flow[k] is the error signal after
    travelling k steps back: on a log scale, its slope is the vanishing (or exploding) rate.
    state="c" (LSTM only): the same for the cell state, ||dLoss/dc_{T-1-k}||, the constant
    error carousel of Hochreiter & Schmidhuber.
    """
    if state not in model.cell.states:
        raise ValueError(f"state must be one of {model.cell.states} for the {model.cell.name} "
                         f"cell; got {state!r}")
    _, grads = model.loss_and_grad(X, Y, h0, target, lengths=lengths, state_grad_norms=True)
    key = "state_grad_norms" if state == "h" else "cell_grad_norms"
    return grads[key].mean(axis=0)[::-1].copy()


def largest_singular_value(W):
    """||W||_2, the largest singular value of W."""
    return float(np.linalg.norm(np.asarray(W, dtype=np.float64), 2))


def _elman_only(model, what):
    if not hasattr(model, "activation"):
        raise ValueError(f"{what} is the Elman cell's bound (max|phi'| ||W_s||)^k; the "
                         f"{model.cell.name} cell's step Jacobian depends on its gates")


def jacobian_bound(model, k):
    """Upper bound (max|phi'| * ||W_s||_2)^k on the norm of a product of k step Jacobians
    ds_t/ds_{t-1} = diag(phi'(a_t)) W_s^T of an Elman network; k may be an array."""
    _elman_only(model, "jacobian_bound")
    W_s = model.params[model.cell.recurrent_weight]
    gamma = MAX_DERIVATIVE[model.activation] * largest_singular_value(W_s)
    return gamma ** np.asarray(k, dtype=np.float64)


def recurrence_summary(model):
    """dict: spectral radius and largest singular value of W_s, max|phi'|, and their product
    gamma, the per-step factor of the Jacobian bound (Elman networks)."""
    _elman_only(model, "recurrence_summary")
    W_s = model.params[model.cell.recurrent_weight]
    sigma = largest_singular_value(W_s)
    return {"spectral_radius": spectral_radius(W_s), "largest_singular_value": sigma,
            "max_derivative": MAX_DERIVATIVE[model.activation],
            "gamma": MAX_DERIVATIVE[model.activation] * sigma}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fastrnn[plot]'") from None
    return plt


def plot_gradient_flow(flows, bounds=None, ax=None, title="Gradient flow through time"):
    """Figure of ||dLoss/ds|| against steps back, log scale. flows: an array (T,) or a dict
    {label: array}; bounds: optional dict {label: array} of Jacobian bounds, dashed."""
    plt = _pyplot()
    if not isinstance(flows, dict):
        flows = {"gradient": flows}
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    lowest = np.inf
    for label, flow in flows.items():
        flow = np.asarray(flow, dtype=np.float64)
        ax.semilogy(np.arange(len(flow)), np.maximum(flow, 1e-300), label=label)
        if flow[0] > 0:
            lowest = min(lowest, flow[0])
    for label, bound in (bounds or {}).items():
        ax.semilogy(np.arange(len(bound)), bound, "--", label=label)
    if np.isfinite(lowest):     # 30 decades below the scored step: past that is noise
        ax.set_ylim(bottom=lowest * 1e-30)
    ax.set_xlabel("steps back from the scored step (k)")
    ax.set_ylabel("mean ||dLoss / ds_{T-1-k}||")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_history(history, ax=None):
    """Figure of a fit's training (and validation) loss per epoch, log scale."""
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    else:
        fig = ax.figure
    epochs = history["epoch"]
    ax.semilogy(epochs, history["loss"], label="train loss")
    val = [v for v in history["val_loss"] if v is not None]
    if val:
        ax.semilogy(epochs[:len(val)], val, label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
