"""The benchmark workloads, shared by bench/report.py and the pytest-benchmark files.

Each implementation is a zero-argument callable doing one full training-step computation:
forward, linear output, MSE over every step, full BPTT gradients of every parameter
(input gradients are not computed). The same weights and data are used by all of them.
"""
import numpy as np

import fastrnn

# name: (N batch, T steps, I inputs, H hidden, O outputs)
CONFIGS = {
    "tiny": (1, 25, 65, 100, 65),
    "small": (32, 50, 32, 64, 8),
    "med": (64, 100, 128, 256, 32),
    "large": (128, 100, 512, 1024, 128),
}


def problem(N, T, I, H, O, dtype="float32", seed=0):
    """(X, Y, model) with PyTorch-style initial weights."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = rng.standard_normal((N, T, O)).astype(dtype)
    model = fastrnn.ElmanRNN(I, H, O, dtype=dtype, seed=seed)
    return X, Y, model


def loss_and_grad_flops(N, T, I, H, O):
    """Multiply-adds x 2 of one loss_and_grad: forward X W_x, S W_s, S W_y; backward
    dZ W_y^T, dW_y, dA W_s^T, dW_x, dW_s."""
    return 2 * N * T * (2 * I * H + 3 * H * H + 3 * H * O)


def forward_flops(N, T, I, H, O):
    return 2 * N * T * (I * H + H * H + H * O)


def fastrnn_impl(X, Y, model, backend, kind="loss_and_grad"):
    p = model.params
    args = (X, Y, None, p["W_x"], p["W_s"], p["b"], p["W_y"], p["b_y"])
    if kind == "loss_and_grad":
        return lambda: fastrnn.elman_loss_and_grad(*args, backend=backend)
    return lambda: fastrnn.elman_predict(X, None, p["W_x"], p["W_s"], p["b"], p["W_y"],
                                         p["b_y"], backend=backend)


def torch_impl(X, Y, model, kind="loss_and_grad"):
    """nn.RNN(tanh) + nn.Linear + mse_loss + backward() on the same weights, or None if torch
    is not installed."""
    try:
        import torch
    except ImportError:
        return None
    p = model.params
    dtype = torch.float32 if X.dtype == np.float32 else torch.float64
    I, H = p["W_x"].shape
    O = p["W_y"].shape[1]
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh", batch_first=True).to(dtype)
    lin = torch.nn.Linear(H, O).to(dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p["W_x"].T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p["W_s"].T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p["b"]))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(torch.from_numpy(p["W_y"].T.copy()))
        lin.bias.copy_(torch.from_numpy(p["b_y"]))
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    params = list(rnn.parameters()) + list(lin.parameters())

    def loss_and_grad():
        for q in params:
            q.grad = None
        out, _ = rnn(Xt)
        loss = torch.nn.functional.mse_loss(lin(out), Yt)
        loss.backward()
        return loss.item()

    def forward():
        with torch.no_grad():
            out, _ = rnn(Xt)
            return lin(out)

    return loss_and_grad if kind == "loss_and_grad" else forward


def implementations(N, T, I, H, O, dtype="float32", kind="loss_and_grad", torch_too=True):
    """{"cython": f, "numpy": f, "torch": f (if installed)} for one configuration."""
    X, Y, model = problem(N, T, I, H, O, dtype)
    impls = {"cython": fastrnn_impl(X, Y, model, "cython", kind),
             "numpy": fastrnn_impl(X, Y, model, "numpy", kind)}
    if torch_too:
        t = torch_impl(X, Y, model, kind)
        if t is not None:
            impls["torch"] = t
    return impls
