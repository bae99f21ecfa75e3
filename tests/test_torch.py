"""Agreement with PyTorch autograd: nn.RNN + nn.Linear is an independent implementation of
the same network, so forward states, BPTT gradients and whole losses must match it.

Mapping (fastrnn uses row vectors, torch column vectors):
    nn.RNN(I, H, nonlinearity, batch_first=True): weight_ih_l0 = W_x.T, weight_hh_l0 = W_s.T,
        bias_ih_l0 = b, bias_hh_l0 = 0 (so d bias_ih = db)
    nn.Linear(H, O): weight = W_y.T, bias = b_y
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastrnn  # noqa: E402

BACKENDS = ("cython", "numpy")
ACTIVATIONS = ("tanh", "relu")                 # the nonlinearities nn.RNN offers
SHAPES = [(3, 7, 4, 5, 6), (1, 1, 2, 3, 2)]    # (N, T, I, H, O), I != H != O
SHAPE_IDS = ["N3T7I4H5O6", "N1T1I2H3O2"]


# ---------------------------------------------------------------------------------------------
# Helpers

def make_problem(N, T, I, H, O, dtype=np.float64, seed=0, output="linear", target="sequence"):
    """Random inputs, nonzero h0, weights and targets as a dict of numpy arrays."""
    rng = np.random.default_rng(seed)

    def rand(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    p = {"X": rand(N, T, I), "h0": rand(N, H, scale=0.5),
         "W_x": rand(I, H, scale=0.5), "W_s": rand(H, H, scale=0.4), "b": rand(H, scale=0.3),
         "W_y": rand(H, O, scale=0.5), "b_y": rand(O, scale=0.3)}
    label_shape = (N, T) if target == "sequence" else (N,)
    if output == "softmax":
        p["Y"] = rng.integers(0, O, size=label_shape).astype(np.int64)
    else:
        p["Y"] = rand(*label_shape, O)
    return p


def torch_modules(W_x, W_s, b, W_y, b_y, activation):
    """nn.RNN and nn.Linear holding the given numpy weights (in their dtype)."""
    I, H = W_x.shape
    O = W_y.shape[1]
    dtype = torch.float64 if W_x.dtype == np.float64 else torch.float32
    rnn = torch.nn.RNN(I, H, nonlinearity=activation, batch_first=True).to(dtype)
    lin = torch.nn.Linear(H, O).to(dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(W_x.T.copy()))
        rnn.weight_hh_l0.copy_(torch.from_numpy(W_s.T.copy()))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(torch.from_numpy(W_y.T.copy()))
        lin.bias.copy_(torch.from_numpy(b_y))
    return rnn, lin


def leaf(a):
    """A float tensor copy of numpy array a that collects gradients."""
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(True)


def recurrence_grads(rnn, X_t, h0_t):
    """Gradients of the recurrence in fastrnn's layout, after .backward()."""
    grads = {"W_x": rnn.weight_ih_l0.grad.T, "W_s": rnn.weight_hh_l0.grad.T,
             "b": rnn.bias_ih_l0.grad, "X": X_t.grad}
    if h0_t is not None:
        grads["h0"] = h0_t.grad
    return {k: v.detach().numpy() for k, v in grads.items()}


def torch_loss_and_grad(X, Y, h0, W_x, W_s, b, W_y, b_y, activation, output, target):
    """(loss, grads) by torch autograd, grads keyed like fastrnn's (with "X" and "h0").

    h0 may be None (torch's default zero state; no "h0" gradient then)."""
    rnn, lin = torch_modules(W_x, W_s, b, W_y, b_y, activation)
    X_t = leaf(X)
    h0_t = None if h0 is None else leaf(h0)
    out, _ = rnn(X_t, None if h0_t is None else h0_t[None])   # (N, T, H)
    if target == "last":
        out = out[:, -1]                                        # (N, H)
    Z = lin(out)                                                # (N, [T,] O) logits
    if output == "softmax":
        loss = F.cross_entropy(Z.reshape(-1, Z.shape[-1]), torch.from_numpy(Y).reshape(-1))
    else:
        loss = F.mse_loss(Z, torch.from_numpy(Y))
    loss.backward()
    grads = recurrence_grads(rnn, X_t, h0_t)
    grads["W_y"] = lin.weight.grad.T.numpy()
    grads["b_y"] = lin.bias.grad.numpy()
    return loss.item(), grads


def torch_states(X, h0, W_x, W_s, b, activation):
    """States S (N, T, H) from nn.RNN."""
    H = W_s.shape[0]
    rnn, _ = torch_modules(W_x, W_s, b, np.zeros((H, 1), W_x.dtype), np.zeros(1, W_x.dtype),
                           activation)
    with torch.no_grad():
        out, _ = rnn(torch.from_numpy(X), torch.from_numpy(h0)[None])
    return out.numpy()


def assert_close(ours, theirs, rtol, name=""):
    """Elementwise rtol, plus an atol of rtol/100 scaled by the largest torch value (for the
    elements that cancel to ~0)."""
    theirs = np.asarray(theirs)
    atol = rtol * 1e-2 * max(1.0, float(np.abs(theirs).max()))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=name)


def assert_grads_close(ours, theirs, rtol):
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    for k in theirs:
        assert ours[k].shape == theirs[k].shape, (k, ours[k].shape, theirs[k].shape)
        assert ours[k].dtype == theirs[k].dtype, (k, ours[k].dtype, theirs[k].dtype)
        assert_close(ours[k], theirs[k], rtol, name=f"gradient of {k}")


# ---------------------------------------------------------------------------------------------
# 1. elman_loss_and_grad: loss and every gradient, float64

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_loss_and_grad_matches_torch(activation, output, target, backend, shape):
    p = make_problem(*shape, output=output, target=target, seed=1)
    weights = [p[k] for k in ("W_x", "W_s", "b", "W_y", "b_y")]
    loss, grads = fastrnn.elman_loss_and_grad(
        p["X"], p["Y"], p["h0"], *weights, activation=activation, output=output,
        target=target, backend=backend, input_grads=True)
    ref_loss, ref_grads = torch_loss_and_grad(p["X"], p["Y"], p["h0"], *weights,
                                              activation, output, target)
    assert np.isfinite(loss)
    assert_close(loss, ref_loss, 1e-10, name="loss")
    assert_grads_close(grads, ref_grads, 1e-10)


# ---------------------------------------------------------------------------------------------
# 2. elman_forward: the states are nn.RNN's output

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_matches_torch(activation, backend, shape, dtype, rtol):
    p = make_problem(*shape, dtype=dtype, seed=2)
    args = [p[k] for k in ("X", "h0", "W_x", "W_s", "b")]
    S = fastrnn.elman_forward(*args, activation=activation, backend=backend)
    assert S.dtype == dtype and S.shape == shape[:2] + (shape[3],)
    assert_close(S, torch_states(*args, activation), rtol, name="states")


# ---------------------------------------------------------------------------------------------
# 3. elman_backward: BPTT with an arbitrary dLoss/dS is autograd of sum(S * dS)

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backward_matches_torch(activation, backend, shape):
    N, T, I, H, O = shape
    p = make_problem(*shape, seed=3)
    dS = np.random.default_rng(4).standard_normal((N, T, H))
    args = [p[k] for k in ("X", "h0", "W_x", "W_s", "b")]
    S = fastrnn.elman_forward(*args, activation=activation, backend=backend)
    grads = fastrnn.elman_backward(*args, S, dS, activation=activation, backend=backend)

    rnn, _ = torch_modules(p["W_x"], p["W_s"], p["b"], p["W_y"], p["b_y"], activation)
    X_t, h0_t = leaf(p["X"]), leaf(p["h0"])
    out, _ = rnn(X_t, h0_t[None])
    (out * torch.from_numpy(dS)).sum().backward()
    assert_grads_close(grads, recurrence_grads(rnn, X_t, h0_t), 1e-10)


# ---------------------------------------------------------------------------------------------
# 4. ElmanRNN.loss_and_grad with its own float32 parameters

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output, target", [("linear", "sequence"), ("softmax", "last")])
def test_model_float32_matches_torch(output, target, backend):
    N, T, I, H, O = 4, 6, 3, 8, 5
    model = fastrnn.ElmanRNN(I, H, O, activation="tanh", output=output, dtype="float32",
                             seed=5, backend=backend)
    p = make_problem(N, T, I, H, O, dtype=np.float32, seed=6, output=output, target=target)
    loss, grads = model.loss_and_grad(p["X"], p["Y"], target=target)    # h0 = zeros
    weights = [model.params[k] for k in ("W_x", "W_s", "b", "W_y", "b_y")]
    ref_loss, ref_grads = torch_loss_and_grad(p["X"], p["Y"], None, *weights, "tanh",
                                              output, target)
    del ref_grads["X"]                                                  # not asked for
    assert_close(loss, ref_loss, 1e-4, name="loss")
    assert_grads_close(grads, ref_grads, 1e-4)
