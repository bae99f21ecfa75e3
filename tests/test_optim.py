"""fastrnn.optim: optimizers, schedules and gradient clipping.

Each optimizer must match a hand-written (allocating) reference of its update rule and,
where PyTorch is installed, torch.optim on the same gradients; keep float32 float32; update
the caller's arrays in place without allocating per step; minimise a quadratic; and survive
a state_dict round trip (through np.savez) bit for bit. Weight decay (L2 for SGD, Adagrad,
RMSProp and Adam; decoupled for AdamW) matches torch.optim to 1e-12 in float64, with the
biases (1-D parameters) in a torch param group without decay unless decay_biases=True.
Then: schedules, clipping, bad arguments, and an end-to-end training run of an ElmanRNN.
"""
import io
import math
import tracemalloc

import numpy as np
import pytest

import fastrnn
from fastrnn import optim
from fastrnn.optim import (SGD, Adagrad, Adam, AdamW, CosineLR, ExponentialLR, RMSProp,
                           StepLR, clip_by_global_norm, clip_by_value, global_norm,
                           make_optimizer)

SHAPES = {"W_x": (3, 5), "W_s": (5, 5), "b": (5,), "W_y": (5, 2), "b_y": (2,)}

# (class, constructor settings) for every optimizer and its variants
CONFIGS = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adagrad, dict(lr=0.1, eps=1e-8)),
    (RMSProp, dict(lr=0.01, alpha=0.9, eps=1e-8)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8)),
]
CONFIG_IDS = ["sgd", "sgd-momentum", "sgd-nesterov", "adagrad", "rmsprop", "adam"]

# the same with weight decay (biases decayed or not), and AdamW
DECAY_CONFIGS = [
    (SGD, dict(lr=0.1, weight_decay=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.05, decay_biases=True)),
    (Adagrad, dict(lr=0.1, eps=1e-8, weight_decay=0.1)),
    (Adagrad, dict(lr=0.1, eps=1e-8, weight_decay=0.1, decay_biases=True)),
    (RMSProp, dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1)),
    (RMSProp, dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, decay_biases=True)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1, decay_biases=True)),
    (AdamW, dict(lr=0.01)),                                         # weight_decay=0.01
    (AdamW, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.5)),
    (AdamW, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.5, decay_biases=True)),
]
DECAY_IDS = ["sgd-wd", "sgd-momentum-wd", "sgd-nesterov-wd", "sgd-momentum-wd-biases",
             "adagrad-wd", "adagrad-wd-biases", "rmsprop-wd", "rmsprop-wd-biases",
             "adam-wd", "adam-wd-biases", "adamw-default", "adamw", "adamw-biases"]
ALL_CONFIGS, ALL_IDS = CONFIGS + DECAY_CONFIGS, CONFIG_IDS + DECAY_IDS


def make_params(dtype=np.float64, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def grad_sequence(n, dtype=np.float64, seed=1, shapes=SHAPES):
    """n dicts of random gradients (including a zero entry, which eps must handle)."""
    rng = np.random.default_rng(seed)
    seq = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
           for _ in range(n)]
    seq[0]["b"][0] = 0.0
    return seq


def copy(params):
    return {k: v.copy() for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Hand-written references: the textbook formulas, allocating freely

def reference_run(cls, settings, params, grads_seq):
    p = copy(params)
    state = {k: {"a": np.zeros_like(v), "b": np.zeros_like(v)} for k, v in p.items()}
    lr = settings["lr"]
    wd = settings.get("weight_decay", 0.01 if cls is AdamW else 0.0)
    for t, grads in enumerate(grads_seq, start=1):
        for k in p:
            g, s = grads[k], state[k]
            if p[k].ndim != 1 or settings.get("decay_biases", False):   # ndim 1: a bias
                if cls is AdamW:
                    p[k] = p[k] - lr * wd * p[k]          # decoupled: the weights decay
                else:
                    g = g + wd * p[k]                     # L2: the gradient gets wd * p
            if cls is SGD:
                mu = settings.get("momentum", 0.0)
                if mu:
                    s["a"] = g.copy() if t == 1 else mu * s["a"] + g
                    d = g + mu * s["a"] if settings.get("nesterov") else s["a"]
                else:
                    d = g
                p[k] = p[k] - lr * d
            elif cls is Adagrad:
                s["a"] = s["a"] + g * g
                p[k] = p[k] - lr * g / np.sqrt(s["a"] + settings["eps"])
            elif cls is RMSProp:
                alpha = settings["alpha"]
                s["a"] = alpha * s["a"] + (1 - alpha) * g * g
                p[k] = p[k] - lr * g / (np.sqrt(s["a"]) + settings["eps"])
            elif cls in (Adam, AdamW):
                b1, b2 = settings.get("betas", (0.9, 0.999))
                s["a"] = b1 * s["a"] + (1 - b1) * g
                s["b"] = b2 * s["b"] + (1 - b2) * g * g
                m_hat = s["a"] / (1 - b1 ** t)
                v_hat = s["b"] / (1 - b2 ** t)
                p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + settings.get("eps", 1e-8))
    return p


@pytest.mark.parametrize("cls,settings", ALL_CONFIGS, ids=ALL_IDS)
def test_matches_reference(cls, settings):
    params, grads_seq = make_params(), grad_sequence(6)
    expected = reference_run(cls, settings, params, grads_seq)
    opt = cls(params, **settings)
    for grads in grads_seq:
        opt.step(grads)
    for k in params:
        # Adam's reference divides by sqrt(v_hat) + eps rather than torch's
        # sqrt(v)/sqrt(bc2) + eps: the same update, rounded differently
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_momentum_zero_is_plain_sgd():
    params, grads = make_params(), grad_sequence(1)[0]
    before = copy(params)
    SGD(params, lr=0.3).step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k] - 0.3 * grads[k])


# ---------------------------------------------------------------------------------------------
# Agreement with torch.optim

def torch_run(torch_cls, torch_settings, params, grads_seq):
    """torch_cls on params, the biases (1-D) in a param group of their own with weight
    decay 0 unless torch_settings has decay_biases=True (fastrnn's setting, not torch's)."""
    torch = pytest.importorskip("torch")
    torch_settings = dict(torch_settings)
    decay_biases = torch_settings.pop("decay_biases", False)
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
               for k, v in params.items()}
    weights = [t for t in tensors.values() if t.ndim != 1]
    biases = [t for t in tensors.values() if t.ndim == 1]
    groups = [{"params": weights}, {"params": biases}]
    if not decay_biases:
        groups[1]["weight_decay"] = 0.0
    opt = torch_cls([g for g in groups if g["params"]], **torch_settings)
    for grads in grads_seq:
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k], dtype=torch.float64)
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("cls,settings", CONFIGS, ids=CONFIG_IDS)
def test_matches_torch(cls, settings):
    torch = pytest.importorskip("torch")
    torch_cls = {SGD: torch.optim.SGD, Adagrad: torch.optim.Adagrad,
                 RMSProp: torch.optim.RMSprop, Adam: torch.optim.Adam}[cls]
    params, grads_seq = make_params(), grad_sequence(8)
    if cls is Adagrad:
        # torch adds eps outside the root, sqrt(sum) + eps, Karpathy's form inside it: the
        # two differ wherever g*g is near eps (a 1e-4 first gradient against eps = 1e-8
        # changes that update by 5%), so compare them with a negligible eps
        settings = {**settings, "eps": 1e-14}
    expected = torch_run(torch_cls, settings, params, grads_seq)
    opt = cls(params, **settings)
    for grads in grads_seq:
        opt.step(grads)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-6, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("cls,settings", DECAY_CONFIGS, ids=DECAY_IDS)
def test_weight_decay_matches_torch(cls, settings):
    """L2 decay (g + wd * p before the update) and AdamW's decoupled decay (p *= 1 - lr * wd
    before the step) agree with torch.optim to 1e-12 in float64 over 12 steps; the biases
    only decay with decay_biases=True (in torch: a param group with weight_decay 0)."""
    torch = pytest.importorskip("torch")
    torch_cls = {SGD: torch.optim.SGD, Adagrad: torch.optim.Adagrad,
                 RMSProp: torch.optim.RMSprop, Adam: torch.optim.Adam,
                 AdamW: torch.optim.AdamW}[cls]
    if cls is Adagrad:          # eps inside / outside the root: negligible only for tiny eps
        settings = {**settings, "eps": 1e-30}
    params, grads_seq = make_params(), grad_sequence(12)
    expected = torch_run(torch_cls, settings, params, grads_seq)
    opt = cls(params, **settings)
    for grads in grads_seq:
        opt.step(grads)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-12, err_msg=k)
    # and decay made a difference (to the biases only if asked)
    plain = torch_run(torch_cls, {**settings, "weight_decay": 0.0}, make_params(), grads_seq)
    for k in params:
        decays = params[k].ndim != 1 or settings.get("decay_biases", False)
        assert np.abs(params[k] - plain[k]).max() > (1e-6 if decays else -1), k
        if not decays:
            np.testing.assert_allclose(params[k], plain[k], rtol=1e-12, atol=1e-12,
                                       err_msg=k)


# multi-layer names: a bias is an array with ndim == 1, whatever its name
LAYERED = {"W_x_l1_reverse": (3, 4), "W_s_l1_reverse": (4, 4), "b_l1_reverse": (4,),
           "b_s": (4,), "W_y": (4, 2), "b_y": (2,), "c": (2, 2, 2)}


@pytest.mark.parametrize("cls", [SGD, Adagrad, RMSProp, Adam, AdamW])
@pytest.mark.parametrize("decay_biases", [False, True])
def test_biases_decay_only_if_asked(cls, decay_biases):
    """With zero gradients only the decay moves the parameters: every array of ndim != 1
    moves, the 1-D ones only with decay_biases=True, whatever their names. (SGD and AdamW
    shrink them by exactly 1 - lr * wd per step; Adagrad, RMSProp and Adam take normalised
    steps against the sign of p, which may overshoot 0.)"""
    params = make_params(shapes=LAYERED)
    before = copy(params)
    opt = cls(params, lr=0.1, weight_decay=0.3, decay_biases=decay_biases)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(3):
        opt.step(zeros)
    for k, p in params.items():
        if p.ndim == 1 and not decay_biases:
            np.testing.assert_array_equal(p, before[k], err_msg=k)
        else:
            assert np.all(p != before[k]), k
            if cls in (SGD, AdamW):            # exactly p * (1 - lr * wd) per step
                np.testing.assert_allclose(p, before[k] * 0.97 ** 3, rtol=1e-14, err_msg=k)


def test_l2_decay_moves_the_minimum():
    """SGD on f(p) = sum(a (p - c)^2) / 2 with L2 decay wd converges to the minimum of
    f + wd |p|^2 / 2, p = a c / (a + wd)."""
    rng = np.random.default_rng(0)
    a, c = rng.uniform(0.5, 2.0, (5, 10)), rng.standard_normal((5, 10))
    params = {"p": np.zeros((5, 10))}
    opt = SGD(params, lr=0.1, momentum=0.5, weight_decay=0.5)
    for _ in range(500):
        opt.step({"p": a * (params["p"] - c)})
    np.testing.assert_allclose(params["p"], a * c / (a + 0.5), rtol=1e-10, atol=1e-12)


def test_weight_decay_zero_is_no_decay():
    """weight_decay=0 changes nothing, bit for bit, and allocates no decay buffers."""
    grads_seq = grad_sequence(4)
    for cls, settings in CONFIGS:
        plain, decayed = make_params(), make_params()
        opt_a = cls(plain, **settings)
        opt_b = cls(decayed, weight_decay=0.0, decay_biases=True, **settings)
        assert opt_b._decayed == {}
        for grads in grads_seq:
            opt_a.step(grads)
            opt_b.step(grads)
        for k in plain:
            np.testing.assert_array_equal(plain[k], decayed[k], err_msg=k)
    adamw, adam = make_params(), make_params()
    opt_w, opt_a = AdamW(adamw, weight_decay=0.0), Adam(adam)
    for grads in grads_seq:
        opt_w.step(grads)
        opt_a.step(grads)
    for k in adam:
        np.testing.assert_array_equal(adamw[k], adam[k], err_msg=k)


@pytest.mark.parametrize("epochs", [0, 1, 3, 5, 10, 12])
def test_cosine_matches_torch(epochs):
    torch = pytest.importorskip("torch")
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.1)
    for _ in range(epochs):
        opt.step()
        sched.step()
    assert CosineLR(12, min_factor=0.1)(epochs) == pytest.approx(opt.param_groups[0]["lr"],
                                                                 rel=1e-12)


# ---------------------------------------------------------------------------------------------
# In place, dtype-preserving, allocation-free

@pytest.mark.parametrize("cls,settings", ALL_CONFIGS, ids=ALL_IDS)
def test_float32_stays_float32_and_in_place(cls, settings):
    params = make_params(np.float32)
    arrays = dict(params)
    opt = cls(params, **settings)
    buffers = {k: dict(s) for k, s in opt.state.items()}
    grads_seq = grad_sequence(5, np.float32)
    grads_before = copy(grads_seq[-1])
    for grads in grads_seq:
        opt.step(grads)
    for k, p in params.items():
        assert p is arrays[k]                                   # the caller's array, updated
        assert p.dtype == np.float32
        for name, buf in opt.state[k].items():
            assert buf is buffers[k][name] and buf.dtype == np.float32
        np.testing.assert_array_equal(grads_seq[-1][k], grads_before[k])   # grads untouched
    # float32 updates agree with the float64 run to float32 accuracy
    ref = reference_run(cls, settings, make_params(np.float64),
                        [{k: g.astype(np.float64) for k, g in gs.items()} for gs in grads_seq])
    for k in params:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_model_sees_updates():
    model = fastrnn.ElmanRNN(2, 4, 1, seed=0)
    before = copy(model.params)
    opt = Adam(model.params, lr=0.1)
    opt.step({k: np.ones_like(v) for k, v in model.params.items()})
    for k in before:
        assert not np.array_equal(model.params[k], before[k])


@pytest.mark.parametrize("cls,settings", ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_allocation_per_step(cls, settings, dtype):
    shapes = {"W": (256, 256), "b": (256,)}                     # 256 KiB / 512 KiB arrays
    params = make_params(dtype, shapes=shapes)
    grads = grad_sequence(1, dtype, shapes=shapes)[0]
    grads["b"][0] = 0.0
    opt = cls(params, **settings)
    opt.step(grads)                                             # anything lazy happens here
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        # control: numpy's allocations are visible to tracemalloc (else this test is void)
        tmp = params["W"] * 2.0
        del tmp
        _, control_peak = tracemalloc.get_traced_memory()
        assert control_peak >= params["W"].nbytes
        tracemalloc.reset_peak()
        for _ in range(100):
            opt.step(grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024, f"{peak} bytes traced during 100 steps"


# ---------------------------------------------------------------------------------------------
# Optimisation works

@pytest.mark.parametrize("cls,settings", [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adagrad, dict(lr=0.5)),
    (RMSProp, dict(lr=0.01)),
    (Adam, dict(lr=0.05)),
], ids=CONFIG_IDS)
def test_minimises_quadratic(cls, settings):
    """f(p) = sum(a (p - c)^2) / 2 with curvatures a in [0.5, 2]: falls 1000x in 300 steps."""
    rng = np.random.default_rng(0)
    a, c = rng.uniform(0.5, 2.0, 50), rng.standard_normal(50)
    params = {"p": np.zeros(50)}
    opt = cls(params, **settings)

    def f():
        return 0.5 * np.sum(a * (params["p"] - c) ** 2)

    f0 = f()
    for _ in range(300):
        opt.step({"p": a * (params["p"] - c)})
    assert f() < f0 / 1000


def test_trains_elman_rnn():
    """y_t = x_{t-1}: a 16-unit Elman network with Adam cuts the MSE 10x in 200 steps."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 20, 1)).astype(np.float32)
    Y = np.zeros_like(X)
    Y[:, 1:] = X[:, :-1]
    model = fastrnn.ElmanRNN(1, 16, 1, seed=0)
    opt = make_optimizer("adam", model.params, lr=0.01)
    first, _ = model.loss_and_grad(X, Y)
    for _ in range(200):
        loss, grads = model.loss_and_grad(X, Y)
        clip_by_global_norm(grads, 5.0)
        opt.step(grads)
    final, _ = model.loss_and_grad(X, Y)
    assert final < first / 10, (first, final)
    assert all(p.dtype == np.float32 for p in model.params.values())


# ---------------------------------------------------------------------------------------------
# Schedules

def test_schedule_factors():
    assert [StepLR(3, gamma=0.5)(e) for e in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert StepLR(2)(4) == pytest.approx(0.01)
    assert [ExponentialLR(0.9)(e) for e in range(4)] == pytest.approx([1, 0.9, 0.81, 0.729])
    cos = CosineLR(10, min_factor=0.1)
    assert cos(0) == 1.0
    assert cos(5) == pytest.approx(0.55)
    assert cos(10) == pytest.approx(0.1)
    assert cos(25) == pytest.approx(0.1)                 # held at the end
    assert CosineLR(4)(2) == pytest.approx(0.5)
    assert CosineLR(4)(4) == pytest.approx(0.0, abs=1e-15)


def test_optimizer_follows_schedule():
    params = {"p": np.zeros(3)}
    opt = SGD(params, lr=0.2, schedule=StepLR(2, gamma=0.5))
    g = {"p": np.ones(3)}
    lrs = []
    for _ in range(5):
        lrs.append(opt.lr)
        before = params["p"].copy()
        opt.step(g)
        np.testing.assert_allclose(before - params["p"], opt.lr)     # the step used opt.lr
        opt.epoch_end()
    assert lrs == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05])
    assert opt.epoch == 5 and opt.base_lr == 0.2


def test_schedule_callable_and_bad_factor():
    opt = SGD({"p": np.zeros(2)}, lr=1.0, schedule=lambda e: 1.0 / (1 + e))
    opt.epoch_end()
    assert opt.lr == 0.5
    bad = SGD({"p": np.zeros(2)}, lr=1.0, schedule=lambda e: 1.0 - e)
    bad.epoch_end()
    with pytest.raises(ValueError, match="schedule"):
        bad.epoch_end()                                  # factor -1
    with pytest.raises(TypeError, match="schedule"):
        SGD({"p": np.zeros(2)}, schedule=0.5)


@pytest.mark.parametrize("make,name", [
    (lambda: StepLR(0), "step_size"), (lambda: StepLR(2.5), "step_size"),
    (lambda: StepLR(2, gamma=0), "gamma"), (lambda: ExponentialLR(-0.5), "gamma"),
    (lambda: ExponentialLR(float("nan")), "gamma"), (lambda: CosineLR(0), "total_epochs"),
    (lambda: CosineLR(10, min_factor=1.5), "min_factor"),
])
def test_bad_schedule_arguments(make, name):
    with pytest.raises((TypeError, ValueError), match=name):
        make()


# ---------------------------------------------------------------------------------------------
# Checkpointing

@pytest.mark.parametrize("cls,settings", ALL_CONFIGS, ids=ALL_IDS)
def test_state_dict_round_trip(cls, settings):
    grads_seq = grad_sequence(6)
    params_a = make_params()
    opt_a = cls(params_a, schedule=ExponentialLR(0.5), **settings)
    for grads in grads_seq[:3]:
        opt_a.step(grads)
    opt_a.epoch_end()
    state = opt_a.state_dict()
    for value in state.values():
        assert isinstance(value, (str, int, float, bool, np.ndarray))
    buf = io.BytesIO()                                   # through a real checkpoint file
    np.savez(buf, **state)
    buf.seek(0)

    params_b = copy(params_a)
    opt_b = cls(params_b, lr=1.0, schedule=ExponentialLR(0.5))   # lr etc. come from the file
    with np.load(buf) as loaded:
        opt_b.load_state_dict(loaded)
    assert opt_b.lr == opt_a.lr and opt_b.epoch == 1 and opt_b.steps == 3
    for name in ("weight_decay", "decay_biases"):
        assert getattr(opt_b, name) == getattr(opt_a, name)
    assert repr(opt_b) == repr(opt_a)
    for grads in grads_seq[3:]:
        opt_a.step(grads)
        opt_b.step(grads)
    for k in params_a:
        np.testing.assert_array_equal(params_b[k], params_a[k], err_msg=k)


def test_state_dict_and_repr_carry_the_decay_settings():
    opt = SGD(make_params(), momentum=0.9, weight_decay=0.25, decay_biases=True)
    state = opt.state_dict()
    assert state["weight_decay"] == 0.25 and state["decay_biases"] is True
    assert "weight_decay=0.25" in repr(opt) and "decay_biases=True" in repr(opt)
    w = AdamW(make_params())
    assert (w.weight_decay, w.decay_biases) == (0.01, False)
    assert repr(w) == ("AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, "
                       "decay_biases=False)")
    assert repr(Adam(make_params())).startswith("Adam(lr=0.001, betas=(0.9, 0.999), eps=1e-08,"
                                                " weight_decay=0.0, decay_biases=False")


@pytest.mark.parametrize("cls,settings", CONFIGS, ids=CONFIG_IDS)
def test_old_state_dict_without_weight_decay_loads(cls, settings):
    """A state dict from before weight decay (no weight_decay, decay_biases keys) loads,
    into an optimizer built with decay too, as what it was: an optimizer without decay."""
    grads_seq = grad_sequence(5)
    params_a = make_params()
    opt_a = cls(params_a, **settings)
    for grads in grads_seq[:2]:
        opt_a.step(grads)
    old = {k: v for k, v in opt_a.state_dict().items()
           if k not in ("weight_decay", "decay_biases")}
    params_b = copy(params_a)
    opt_b = cls(params_b, **{**settings, "weight_decay": 0.5, "decay_biases": True})
    opt_b.load_state_dict(old)
    assert (opt_b.weight_decay, opt_b.decay_biases) == (0.0, False)
    for grads in grads_seq[2:]:
        opt_a.step(grads)
        opt_b.step(grads)
    for k in params_a:
        np.testing.assert_array_equal(params_b[k], params_a[k], err_msg=k)


def test_load_state_dict_checks_the_decay_settings():
    params = make_params()
    opt = AdamW(params, weight_decay=0.1)
    opt.step(grad_sequence(1)[0])
    good = opt.state_dict()
    with pytest.raises(KeyError, match="weight_decay"):        # AdamW's always had it
        AdamW(make_params()).load_state_dict({k: v for k, v in good.items()
                                              if k != "weight_decay"})
    with pytest.raises(ValueError, match="Adam"):
        Adam(make_params()).load_state_dict(good)              # AdamW is not Adam
    with pytest.raises(ValueError, match="weight_decay"):
        opt.load_state_dict({**good, "weight_decay": -1.0, "steps": 7})
    with pytest.raises(TypeError, match="decay_biases"):
        opt.load_state_dict({**good, "decay_biases": "no", "steps": 7})
    assert (opt.weight_decay, opt.decay_biases, opt.steps) == (0.1, False, 1)


def test_state_dict_is_a_copy():
    params = make_params()
    opt = Adam(params)
    opt.step(grad_sequence(1)[0])
    state = opt.state_dict()
    saved = state["state/W_x/exp_avg"].copy()
    opt.step(grad_sequence(1, seed=5)[0])
    np.testing.assert_array_equal(state["state/W_x/exp_avg"], saved)


def test_load_state_dict_rejects_mismatches():
    params = make_params()
    opt = Adam(params)
    opt.step(grad_sequence(1)[0])
    good = opt.state_dict()
    before = {k: dict((n, b.copy()) for n, b in s.items()) for k, s in opt.state.items()}

    with pytest.raises(ValueError, match="Adam"):
        SGD(make_params()).load_state_dict(good)
    missing = {k: v for k, v in good.items() if k != "state/b/exp_avg_sq"}
    with pytest.raises(KeyError, match="state/b/exp_avg_sq"):
        opt.load_state_dict(missing)
    with pytest.raises(ValueError, match="W_s"):
        opt.load_state_dict({**good, "state/W_s/exp_avg": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="h0"):
        opt.load_state_dict({**good, "state/h0/exp_avg": np.zeros(3)})
    with pytest.raises(ValueError, match="betas"):
        opt.load_state_dict({**good, "beta1": 1.5, "state/W_x/exp_avg": np.ones((3, 5))})
    # nothing was half-loaded
    for k, s in opt.state.items():
        for n, b in s.items():
            np.testing.assert_array_equal(b, before[k][n])


# ---------------------------------------------------------------------------------------------
# Bad gradients, parameters and hyperparameters

def test_step_checks_grads_before_updating():
    params = make_params()
    before = copy(params)
    opt = Adam(params)
    grads = grad_sequence(1)[0]
    with pytest.raises(KeyError, match="b_y"):
        opt.step({k: g for k, g in grads.items() if k != "b_y"})
    with pytest.raises(ValueError, match=r"grads\['W_y'\].*\(5, 2\)"):
        opt.step({**grads, "W_y": np.zeros((2, 5))})
    with pytest.raises(TypeError, match=r"grads\['b'\].*float32"):
        opt.step({**grads, "b": grads["b"].astype(np.float32)})
    with pytest.raises(TypeError, match="grads"):
        opt.step([grads[k] for k in SHAPES])
    for k in params:                                     # W_x, W_s come first: not updated
        np.testing.assert_array_equal(params[k], before[k])
    assert opt.steps == 0
    opt.step({**grads, "X": np.zeros(7)})                # extra keys are ignored


@pytest.mark.parametrize("params,exc,match", [
    ({}, ValueError, "empty"),
    ([np.zeros(3)], TypeError, "dict"),
    ({"w": [1.0, 2.0]}, TypeError, "'w'"),
    ({"w": np.zeros(3, np.int64)}, TypeError, "'w'.*float32 or float64"),
    ({"w": np.zeros(3, np.float16)}, TypeError, "'w'"),
])
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        Adam(params)


def test_read_only_params():
    w = np.zeros(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD({"w": w})


@pytest.mark.parametrize("cls,settings,exc,name", [
    (SGD, dict(lr=0.0), ValueError, "lr"),
    (SGD, dict(lr=-1.0), ValueError, "lr"),
    (Adam, dict(lr=float("nan")), ValueError, "lr"),
    (Adam, dict(lr=float("inf")), ValueError, "lr"),
    (Adam, dict(lr="0.1"), TypeError, "lr"),
    (Adam, dict(lr=True), TypeError, "lr"),
    (SGD, dict(momentum=1.0), ValueError, "momentum"),
    (SGD, dict(momentum=-0.1), ValueError, "momentum"),
    (SGD, dict(nesterov=True), ValueError, "nesterov"),
    (SGD, dict(momentum=0.9, nesterov="yes"), TypeError, "nesterov"),
    (Adagrad, dict(eps=0.0), ValueError, "eps"),
    (RMSProp, dict(alpha=1.0), ValueError, "alpha"),
    (RMSProp, dict(eps=-1e-8), ValueError, "eps"),
    (Adam, dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (Adam, dict(betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (Adam, dict(betas=0.9), TypeError, "betas"),
    (SGD, dict(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    (Adagrad, dict(weight_decay=float("nan")), ValueError, "weight_decay must be finite"),
    (RMSProp, dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    (Adam, dict(weight_decay="0.1"), TypeError, "weight_decay must be a real number"),
    (AdamW, dict(weight_decay=-1e-3), ValueError, "weight_decay"),
    (AdamW, dict(weight_decay=None), TypeError, "weight_decay"),
    (SGD, dict(weight_decay=True), TypeError, "weight_decay"),
    (SGD, dict(decay_biases="yes"), TypeError, "decay_biases"),
    (AdamW, dict(decay_biases=1), TypeError, "decay_biases"),
])
def test_bad_hyperparameters(cls, settings, exc, name):
    with pytest.raises(exc, match=name):
        cls(make_params(), **settings)


# ---------------------------------------------------------------------------------------------
# make_optimizer

def test_make_optimizer():
    params = make_params()
    for name, cls, default_lr, wd in [("sgd", SGD, 0.01, 0.0), ("ADAM", Adam, 0.001, 0.0),
                                      ("RMSProp", RMSProp, 0.001, 0.0),
                                      ("adagrad", Adagrad, 0.1, 0.0),
                                      ("AdamW", AdamW, 0.001, 0.01)]:
        opt = make_optimizer(name, params)                         # lr=None: its own default
        assert (type(opt), opt.lr, opt.weight_decay, opt.decay_biases) == (
            cls, default_lr, wd, False)
    opt = make_optimizer("adamw", params, weight_decay=0.2, decay_biases=True)
    assert (opt.weight_decay, opt.decay_biases) == (0.2, True)
    assert optim.OPTIMIZERS["adamw"] is AdamW and "AdamW" in optim.__all__
    opt = make_optimizer(SGD, params, lr=0.5, momentum=0.9)
    assert (type(opt), opt.lr, opt.momentum) == (SGD, 0.5, 0.9)
    assert make_optimizer(opt, params) is opt
    assert make_optimizer("adam", params, betas=(0.5, 0.6)).betas == (0.5, 0.6)


def test_make_optimizer_errors():
    params = make_params()
    with pytest.raises(ValueError, match="'sgd', 'adagrad', 'rmsprop', 'adam'"):
        make_optimizer("lbfgs", params)
    with pytest.raises(TypeError, match="optimizer"):
        make_optimizer(42, params)
    opt = Adam(params)
    with pytest.raises(ValueError, match="lr"):
        make_optimizer(opt, params, lr=0.1)
    with pytest.raises(ValueError, match="already built.*weight_decay cannot be given"):
        make_optimizer(opt, params, weight_decay=0.1)
    with pytest.raises(ValueError, match="other parameter arrays"):
        make_optimizer(opt, make_params())


# ---------------------------------------------------------------------------------------------
# Clipping

def test_global_norm():
    grads = grad_sequence(1, np.float32)[0]
    expected = math.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads.values()))
    assert global_norm(grads) == pytest.approx(expected, rel=1e-6)
    assert isinstance(global_norm(grads), float)
    assert global_norm({}) == 0.0
    # float32 squares overflow (1e40 > float32 max) but the norm does not
    big = {"g": np.full(10, 1e20, np.float32)}
    assert global_norm(big) == pytest.approx(1e20 * math.sqrt(10), rel=1e-6)
    # non-contiguous arrays
    assert global_norm({"g": np.arange(12.0).reshape(3, 4)[:, ::2]}) == pytest.approx(
        math.sqrt(sum(x * x for x in (0, 2, 4, 6, 8, 10))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm(dtype):
    grads = {k: 10 * g for k, g in grad_sequence(1, dtype)[0].items()}
    arrays, before = dict(grads), copy(grads)
    norm_before = global_norm(grads)
    returned = clip_by_global_norm(grads, 1.5)
    assert returned == norm_before                       # the norm before clipping
    assert global_norm(grads) == pytest.approx(1.5, rel=1e-6)
    for k, g in grads.items():
        assert g is arrays[k] and g.dtype == dtype        # in place
        np.testing.assert_allclose(g, before[k] * (1.5 / norm_before), rtol=1e-6)


def test_clip_by_global_norm_below_threshold_untouched():
    grads = grad_sequence(1)[0]
    before = copy(grads)
    norm = clip_by_global_norm(grads, 1e6)
    assert norm == global_norm(grads)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_by_global_norm_non_finite(bad):
    grads = grad_sequence(1)[0]
    grads["W_s"][1, 2] = bad
    before = copy(grads)
    norm = clip_by_global_norm(grads, 1.0)
    assert not math.isfinite(norm)
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


def test_clip_by_value():
    grads = {"a": np.array([-3.0, -0.5, 0.0, 0.5, 3.0]), "b": np.array([[2.0, -2.0]], np.float32)}
    arrays = dict(grads)
    assert clip_by_value(grads, 1.0) is None
    np.testing.assert_array_equal(grads["a"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(grads["b"], [[1.0, -1.0]])
    assert grads["a"] is arrays["a"] and grads["b"].dtype == np.float32


@pytest.mark.parametrize("value,exc", [(0.0, ValueError), (-1.0, ValueError),
                                       (float("nan"), ValueError), ("1", TypeError)])
def test_clip_bad_thresholds(value, exc):
    grads = grad_sequence(1)[0]
    with pytest.raises(exc, match="max_norm"):
        clip_by_global_norm(grads, value)
    with pytest.raises(exc, match="clip_value"):
        clip_by_value(grads, value)


def test_clip_bad_grads():
    with pytest.raises(TypeError, match="grads"):
        global_norm([np.zeros(3)])
    with pytest.raises(TypeError, match="'g'"):
        clip_by_value({"g": np.zeros(3, np.int64)}, 1.0)


def test_public_names():
    for name in optim.__all__:
        assert hasattr(optim, name)
