"""The benchmark workloads, shared by bench/report.py and the pytest-benchmark files.

Each implementation is a zero-argument callable doing one full training-step computation:
forward, linear output, MSE over every step, full BPTT gradients of every parameter
(input gradients are not computed), for one cell ("elman", "lstm", "gru"). The same weights
and data are used by all of them: fastrnn's compiled backend ("cython"), its NumPy twin
("numpy"), PyTorch (nn.RNN / nn.LSTM / nn.GRU + nn.Linear + mse_loss + backward(), when
installed) and JAX (jax.lax.scan + jax.grad, jitted, when installed).
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
CELLS = ("elman", "lstm", "gru")
MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
GATES = {"elman": 1, "lstm": 4, "gru": 3}


def problem(N, T, I, H, O, dtype="float32", seed=0, cell="elman"):
    """(X, Y, model) with PyTorch-style initial weights."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = rng.standard_normal((N, T, O)).astype(dtype)
    model = MODELS[cell](I, H, O, dtype=dtype, seed=seed)
    return X, Y, model


def loss_and_grad_flops(N, T, I, H, O, cell="elman"):
    """Multiply-adds x 2 of one loss_and_grad, G = the cell's gate blocks: forward X W_x,
    h W_s, h W_y; backward dZ W_y^T, dW_y, dA W_s^T, dW_x, dW_s."""
    G = GATES[cell]
    return 2 * N * T * (2 * G * I * H + 3 * G * H * H + 3 * H * O)


def forward_flops(N, T, I, H, O, cell="elman"):
    G = GATES[cell]
    return 2 * N * T * (G * I * H + G * H * H + H * O)


def fastrnn_impl(X, Y, model, backend, kind="loss_and_grad", input_grads=False):
    """One call of the functional core (validation included), as a user would call it."""
    p = model.params
    weights = tuple(p[k] for k in model.cell.weight_names)
    options = model._options()
    if kind == "loss_and_grad":
        return lambda: fastrnn.cell_loss_and_grad(model.cell, X, Y, None, weights, p["W_y"],
                                                  p["b_y"], options, backend=backend,
                                                  input_grads=input_grads)
    return lambda: fastrnn.cell_predict(model.cell, X, None, weights, p["W_y"], p["b_y"],
                                        options, backend=backend)


def torch_impl(X, Y, model, kind="loss_and_grad"):
    """nn.RNN(tanh) / nn.LSTM / nn.GRU + nn.Linear + mse_loss + backward() on the same
    weights, or None if torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    dtype = torch.float32 if X.dtype == np.float32 else torch.float64
    I, H, O = model.input_size, model.hidden_size, model.output_size
    module = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[
        model.cell.name]
    net = torch.nn.Module()
    net.rnn = module(I, H, batch_first=True).to(dtype)
    net.linear = torch.nn.Linear(H, O).to(dtype)
    net.load_state_dict({k: torch.from_numpy(v)
                         for k, v in fastrnn.to_torch_state_dict(model).items()})
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    params = list(net.parameters())

    def loss_and_grad():
        for q in params:
            q.grad = None
        out, _ = net.rnn(Xt)
        loss = torch.nn.functional.mse_loss(net.linear(out), Yt)
        loss.backward()
        return loss.item()

    def forward():
        with torch.no_grad():
            out, _ = net.rnn(Xt)
            return net.linear(out)

    return loss_and_grad if kind == "loss_and_grad" else forward


_JAX = None


def _jax_on_one_core():
    """(jax, jax.numpy), with XLA's CPU thread pool on one core. XLA runs its work on threads
    of its own, which neither threadpoolctl nor torch's settings reach (nor, in JAX 0.10,
    XLA_FLAGS' eigen/intra-op switches: its "one-thread" large rows ran at 1.2x one core's
    peak). Its threads are made while the calling thread is pinned to one core, so they
    inherit that affinity; the caller's own is then restored. Its rows are one-core rows."""
    global _JAX
    if _JAX is None:
        import os
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                           "intra_op_parallelism_threads=1")
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(cpus)})
        try:
            import jax
            import jax.numpy as jnp
            jax.jit(lambda a: (a @ a).sum())(jnp.ones((256, 256))).block_until_ready()
        finally:
            os.sched_setaffinity(0, cpus)
        _JAX = jax, jnp
    return _JAX


def jax_impl(X, Y, model, kind="loss_and_grad"):
    """The same network in JAX: jax.lax.scan over time (time-major), jax.grad of the MSE,
    jitted; or None if JAX is not installed. The call blocks until the result is ready."""
    try:
        jax, jnp = _jax_on_one_core()
    except ImportError:
        return None
    cell = model.cell.name
    H = model.hidden_size
    # the cell's weights in its spec's order: W_x, W_s, b (and the GRU's b_s); then the head
    weights = [jnp.asarray(model.params[k]) for k in model.cell.weight_names]
    W_y, b_y = (jnp.asarray(model.params[k]) for k in ("W_y", "b_y"))
    Xt, Yt = jnp.asarray(X.transpose(1, 0, 2)), jnp.asarray(Y.transpose(1, 0, 2))
    N = X.shape[0]

    def step(w, carry, x):
        if cell == "elman":
            W_x, W_s, b = w
            h = jnp.tanh(x @ W_x + carry @ W_s + b)
            return h, h
        if cell == "lstm":
            W_x, W_s, b = w
            h, c = carry
            z = x @ W_x + h @ W_s + b
            i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        W_x, W_s, b, b_s = w
        a = x @ W_x + b
        s = carry @ W_s + b_s
        r = jax.nn.sigmoid(a[:, :H] + s[:, :H])
        z = jax.nn.sigmoid(a[:, H:2 * H] + s[:, H:2 * H])
        n = jnp.tanh(a[:, 2 * H:] + r * s[:, 2 * H:])
        h = (carry - n) * z + n
        return h, h

    zeros = jnp.zeros((N, H), X.dtype)
    init = (zeros, zeros) if cell == "lstm" else zeros

    def outputs(params):
        w, W_y, b_y = params
        _, hs = jax.lax.scan(lambda c, x: step(w, c, x), init, Xt)
        return hs @ W_y + b_y

    def loss(params):
        return jnp.mean((outputs(params) - Yt) ** 2)

    grad = jax.jit(jax.value_and_grad(loss))
    fwd = jax.jit(outputs)
    params = (weights, W_y, b_y)
    if kind == "loss_and_grad":
        return lambda: jax.block_until_ready(grad(params))
    return lambda: jax.block_until_ready(fwd(params))


def implementations(N, T, I, H, O, dtype="float32", kind="loss_and_grad", torch_too=True,
                    cell="elman", jax_too=False):
    """{"cython": f, "numpy": f, "torch": f, "jax": f (those installed)} for one
    configuration and cell."""
    X, Y, model = problem(N, T, I, H, O, dtype, cell=cell)
    impls = {"cython": fastrnn_impl(X, Y, model, "cython", kind),
             "numpy": fastrnn_impl(X, Y, model, "numpy", kind)}
    if torch_too:
        t = torch_impl(X, Y, model, kind)
        if t is not None:
            impls["torch"] = t
    if jax_too:
        j = jax_impl(X, Y, model, kind)
        if j is not None:
            impls["jax"] = j
    return impls


# ---- deep and bidirectional stacks ------------------------------------------------------------

STACK_CONFIG = ("lstm", 2, True, (64, 100, 128, 256, 32))   # cell, L, bidirectional, dims


def stack_implementations(cell, L, bidirectional, N, T, I, H, O, dtype="float32", seed=0):
    """{"cython", "numpy", "torch" (if installed)}: loss_and_grad of an L-layer (optionally
    bidirectional) network and its PyTorch twin (nn.LSTM(num_layers=L, bidirectional=...)
    + nn.Linear + mse_loss + backward()), on the same weights; and "cython_layers": the
    one-layer, one-direction calls of the same sizes one after another (layer 0 reads I
    features, the layers above D*H and return their input gradient, as in the stack), to
    measure what stacking costs beyond its layers' own work."""
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = rng.standard_normal((N, T, O)).astype(dtype)
    model = MODELS[cell](I, H, O, dtype=dtype, seed=seed, num_layers=L,
                         bidirectional=bidirectional)
    impls = {be: (lambda be=be: model.__class__.from_params(
        model.params, **{**model.hyperparameters(), "backend": be}).loss_and_grad(X, Y))
        for be in ("cython", "numpy")}
    singles = [problem(N, T, I if k < D else D * H, H, O, dtype, seed, cell)
               for k in range(L * D)]
    # each layer's own one-layer call; the layers above the first also compute their
    # input gradient, as they must inside a stack (it is the layer below's dLoss/dh)
    single_calls = [fastrnn_impl(Xk, Y, m, "cython", input_grads=k >= D)
                    for k, (Xk, _, m) in enumerate(singles)]
    impls["cython_layers"] = lambda: [f() for f in single_calls]
    try:
        import torch
    except ImportError:
        return impls
    tdt = torch.float32 if dtype == "float32" else torch.float64
    module = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = module(I, H, num_layers=L, bidirectional=bidirectional, batch_first=True).to(tdt)
    lin = torch.nn.Linear(D * H, O).to(tdt)
    with torch.no_grad():                    # the same weights as the model
        for k, names in enumerate(model.cell.stack_weight_names(L, bidirectional)):
            sfx = f"_l{k // D}" + ("_reverse" if k % D else "")
            w = dict(zip(model.cell.weight_names, (model.params[n] for n in names)))
            getattr(rnn, "weight_ih" + sfx).copy_(torch.from_numpy(w["W_x"].T.copy()))
            getattr(rnn, "weight_hh" + sfx).copy_(torch.from_numpy(w["W_s"].T.copy()))
            getattr(rnn, "bias_ih" + sfx).copy_(torch.from_numpy(w["b"]))
            getattr(rnn, "bias_hh" + sfx).copy_(torch.from_numpy(w["b_s"]) if "b_s" in w
                                                else torch.zeros(len(w["b"])))
        lin.weight.copy_(torch.from_numpy(model.params["W_y"].T.copy()))
        lin.bias.copy_(torch.from_numpy(model.params["b_y"]))
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    params = list(rnn.parameters()) + list(lin.parameters())

    def torch_loss_and_grad():
        for q in params:
            q.grad = None
        out, _ = rnn(Xt)
        loss = torch.nn.functional.mse_loss(lin(out), Yt)
        loss.backward()
        return loss.item()

    impls["torch"] = torch_loss_and_grad
    return impls


def stack_flops(cell, L, bidirectional, N, T, I, H, O):
    """loss_and_grad_flops summed over the layers and directions (layer 0 reads I features,
    the others D*H), the head counted once, on D*H states."""
    D = 2 if bidirectional else 1
    G = GATES[cell]
    cells = sum(2 * N * T * (2 * G * (I if k < D else D * H) * H + 3 * G * H * H)
                for k in range(L * D))
    return cells + 2 * N * T * 3 * D * H * O
