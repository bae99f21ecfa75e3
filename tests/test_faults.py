"""Numerical and resource faults.

(a) Overflow in the recurrence (huge weights, identity/relu, long sequences): the functional
    core and the model report it as a non-finite loss or gradient (never an exception, never
    a crash); fit skips such steps, and after max_bad_steps of them in a row raises
    FloatingPointError with the weights as they were before the first one (finite).
(b) float32 training of the benchmark's "tiny" and "small" configurations for 1,000 optimizer
    steps with the default fit settings stays finite.
(c) A request whose buffers exceed the available memory fails early with a MemoryError that
    states the size, before allocating (checked with tracemalloc).

Bugs found here (memory checks that came after copying broadcast inputs or allocating h0;
step() without memory and BLAS-size checks) are kept as explicit tests; they are fixed.
"""
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import fastrnn
import fastrnn._validate as V
from fastrnn import ElmanRNN

BACKENDS = ("cython", "numpy")
DTYPES = ("float32", "float64")
# steps for W_s = 10 I to overflow the dtype: 10**60 > float32 max, 10**400 > float64 max
OVERFLOW_T = {"float32": 60, "float64": 400}


# =============================================================================================
# (a) Overflow in the recurrence

def exploding(dtype, activation, N=3, I=2, H=8, O=2, T=None, output="linear"):
    """Arguments of elman_loss_and_grad whose states grow like 10**t: W_s = 10 I, positive
    inputs and bias (so relu passes everything), T long enough to overflow dtype."""
    dt = np.dtype(dtype)
    T = T or OVERFLOW_T[dtype]
    rng = np.random.default_rng(0)
    p = {"X": np.ones((N, T, I), dt),
         "h0": None,
         "W_x": np.ones((I, H), dt),
         "W_s": (10 * np.eye(H)).astype(dt),
         "b": np.ones(H, dt),
         "W_y": rng.uniform(0.5, 1, (H, O)).astype(dt),
         "b_y": np.zeros(O, dt)}
    p["Y"] = (rng.integers(0, O, (N, T)) if output == "softmax"
              else rng.standard_normal((N, T, O)).astype(dt))
    return p


def finite(result):
    if isinstance(result, dict):
        return all(finite(v) for v in result.values())
    if isinstance(result, (tuple, list)):
        return all(finite(v) for v in result)
    return bool(np.all(np.isfinite(result)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")       # numpy backend: overflow notes
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "all_options"])
def test_overflow_is_reported_not_raised(backend, dtype, activation, output, target, extras):
    p = exploding(dtype, activation, output=output)
    if target == "last":
        p["Y"] = p["Y"][:, -1]
    kw = {}
    if extras:
        kw = dict(input_grads=True, return_state=True, state_grad_norms=True,
                  lengths=np.array([OVERFLOW_T[dtype], 5, OVERFLOW_T[dtype] - 1]))
    before = {k: None if v is None else v.copy() for k, v in p.items()}
    res = fastrnn.elman_loss_and_grad(**p, activation=activation, output=output,
                                      target=target, backend=backend, **kw)
    loss, grads = res[0], res[1]
    assert isinstance(loss, float)
    assert not (math.isfinite(loss) and finite(grads)), \
        "overflowing recurrence gave a finite loss and gradients"
    for k, v in p.items():
        if v is not None:
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    # the other entry points report it the same way: non-finite outputs, no exception
    S = fastrnn.elman_forward(p["X"], None, p["W_x"], p["W_s"], p["b"], activation,
                              backend=backend)
    assert not np.isfinite(S[:, -1]).all()
    assert np.isfinite(S[:, 0]).all()             # the first steps are still fine
    Y, S2 = fastrnn.elman_predict(p["X"], None, p["W_x"], p["W_s"], p["b"], p["W_y"],
                                  p["b_y"], activation, output, backend=backend)
    assert not finite(Y)
    dS = np.ones_like(S)
    g = fastrnn.elman_backward(p["X"], None, p["W_x"], p["W_s"], p["b"],
                               np.nan_to_num(S, posinf=1e30), dS, activation, backend=backend)
    assert set(g) == {"X", "h0", "W_x", "W_s", "b"}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_model_loss_and_grad_reports_overflow(backend, dtype, activation):
    p = exploding(dtype, activation)
    m = ElmanRNN(2, 8, 2, activation=activation, dtype=dtype, backend=backend)
    for k in m.params:
        m.params[k][...] = p[k]
    loss, grads = m.loss_and_grad(p["X"], p["Y"])
    assert not (math.isfinite(loss) and finite(grads))
    Y, S = m.forward(p["X"])
    assert not finite(Y)


def exploding_model(dtype, activation, backend, H=4, seed=0):
    """A model with W_s = 10 I: any positive input explodes over OVERFLOW_T steps."""
    m = ElmanRNN(1, H, 1, activation=activation, dtype=dtype, backend=backend, seed=seed)
    dt = m.dtype
    m.params["W_x"][...] = 1
    m.params["W_s"][...] = 10 * np.eye(H, dtype=dt)
    m.params["b"][...] = 0
    m.params["W_y"][...] = 0.1
    m.params["b_y"][...] = 0.5
    return m


FIT_SETTINGS = [
    dict(optimizer="adam"),
    dict(optimizer="sgd", lr=0.1, clip_norm=None),
    dict(optimizer="rmsprop", clip_value=1.0),
    dict(optimizer="adagrad", tbptt=30),           # the first chunk already overflows
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["identity", "relu"])
@pytest.mark.parametrize("settings", FIT_SETTINGS, ids=lambda s: s["optimizer"])
@pytest.mark.parametrize("max_bad_steps", [1, 3])
def test_fit_stops_after_max_bad_steps_with_weights_unchanged(backend, dtype, activation,
                                                               settings, max_bad_steps):
    T = OVERFLOW_T[dtype]
    if settings.get("tbptt"):
        T = 2 * T
        settings = {**settings, "tbptt": T // 2}  # each chunk alone overflows
    m = exploding_model(dtype, activation, backend)
    X = np.ones((8, T, 1), m.dtype)               # every sequence explodes
    Y = np.zeros((8, T, 1), m.dtype)
    before = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(FloatingPointError, match=rf"{max_bad_steps} steps in a row had a "
                                                 rf"non-finite loss, gradient or update"):
        m.fit(X, Y, epochs=5, batch_size=2, progress=False, max_bad_steps=max_bad_steps,
              **settings)
    for k, v in m.params.items():
        assert np.isfinite(v).all(), k
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed")
        assert v.dtype == m.dtype


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_skips_bad_steps_and_goes_on(backend, dtype):
    """relu, W_s = 10 I: sequences with input +1 explode, those with input -1 stay at 0.
    Alternating them (batch 1, no shuffle), no two bad steps are adjacent: with
    max_bad_steps=2 training completes, every bad step is skipped and counted, and the
    weights the bad steps would have touched are unchanged."""
    T = OVERFLOW_T[dtype]
    m = exploding_model(dtype, "relu", backend)
    sign = np.array([1, -1, 1, -1, 1, -1], m.dtype)
    X = np.broadcast_to(sign[:, None, None], (6, T, 1)).copy()
    Y = np.zeros((6, T, 1), m.dtype)
    before = {k: v.copy() for k, v in m.params.items()}
    history = m.fit(X, Y, epochs=3, batch_size=1, shuffle=False, progress=False,
                    max_bad_steps=2)
    for e in history.epochs:
        assert e["steps"] == 6 and e["skipped_steps"] == 3, e
        assert math.isfinite(e["loss"]) and math.isfinite(e["grad_norm"]), e
    for k, v in m.params.items():
        assert np.isfinite(v).all(), k
    # good steps only move b_y (the states are 0, so every other gradient is 0)
    for k in ("W_x", "W_s", "b", "W_y"):
        np.testing.assert_array_equal(m.params[k], before[k], err_msg=k)
    assert not np.array_equal(m.params["b_y"], before["b_y"])
    # one bad step too many: max_bad_steps=1 stops at the very first one
    m2 = exploding_model(dtype, "relu", backend)
    with pytest.raises(FloatingPointError):
        m2.fit(X, Y, epochs=1, batch_size=1, shuffle=False, progress=False, max_bad_steps=1)
    for k, v in m2.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_fit_skips_an_update_that_overflows(backend, optimizer):
    """Finite loss and gradients, but lr = 1e300 makes the float32 update itself inf: the
    update is undone, counted, and max_bad_steps of them stop training."""
    m = ElmanRNN(2, 3, 1, seed=0, backend=backend)
    X = np.random.default_rng(0).standard_normal((4, 5, 2)).astype(np.float32)
    Y = np.zeros((4, 5, 1), np.float32)
    before = {k: v.copy() for k, v in m.params.items()}
    with pytest.raises(FloatingPointError, match="3 steps in a row"):
        m.fit(X, Y, optimizer=optimizer, lr=1e300, clip_norm=None, max_bad_steps=3,
              batch_size=1, progress=False)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


# =============================================================================================
# (b) float32 training of the benchmark configurations: 1,000 steps stay finite

CONFIGS = {"tiny": (1, 25, 65, 100, 65), "small": (32, 50, 32, 64, 8)}   # N, T, I, H, O


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("config", CONFIGS)
def test_float32_training_stays_finite(config, backend):
    N, T, I, H, O = CONFIGS[config]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, I)).astype(np.float32)
    Y = rng.standard_normal((N, T, O)).astype(np.float32)      # MSE targets
    m = ElmanRNN(I, H, O, seed=0, backend=backend)
    # default fit settings; batch_size 32 >= N, so one optimizer step per epoch
    t0 = time.perf_counter()
    history = m.fit(X, Y, epochs=1000, progress=False)
    seconds = time.perf_counter() - t0
    assert sum(history["steps"]) == 1000
    assert sum(history["skipped_steps"]) == 0
    losses = np.array(history["loss"])
    assert np.isfinite(losses).all()
    assert np.isfinite(history["grad_norm"]).all()
    for k, v in m.params.items():
        assert v.dtype == np.float32 and np.isfinite(v).all(), k
    assert losses[-1] < losses[0]                 # and it did train
    loss, grads = m.loss_and_grad(X, Y)
    assert math.isfinite(loss) and finite(grads)


# =============================================================================================
# (c) Requests larger than the available memory: MemoryError stating the size, before
#     allocating

GiB = 1 << 30
NBIG, TBIG, HBIG = 2**14, 2**12, 64


@pytest.fixture
def one_gib(monkeypatch):
    monkeypatch.setattr(V, "available_memory", lambda: GiB)


def run_traced(fn):
    """(exception, peak bytes traced while fn ran)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        exc = None
    except Exception as e:        # judged by the caller
        exc = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return exc, peak


def assert_memory_error(exc, peak, needs=None):
    assert isinstance(exc, MemoryError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    m = re.search(r"needs ([\d.]+) GiB of buffers but only ([\d.]+) GiB of memory is "
                  r"available$", msg)
    assert m, msg
    assert float(m.group(2)) == 1.0, msg
    assert float(m.group(1)) > 1.0, msg
    if needs is not None:
        # at least the working buffers; copies of non-contiguous inputs and a zero h0
        # are counted too, so the stated size may be larger
        assert float(m.group(1)) >= needs / GiB - 0.01, msg
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated before the MemoryError: {msg}"


def big_calls(dt, I, X, backend, real_targets=False):
    """Every entry point on N=2**14, T=2**12, H=64 inputs: X given (broadcast or real), the
    targets broadcast or (real_targets) real zeros from calloc, never touched."""
    N, T = X.shape[:2]
    H, O = HBIG, 4
    z = np.zeros((), dt)
    W_x, W_s, b = np.zeros((I, H), dt), np.zeros((H, H), dt), np.zeros(H, dt)
    W_y, b_y = np.zeros((H, O), dt), np.zeros(O, dt)
    S = np.broadcast_to(z, (N, T, H))
    if real_targets:
        Ylin, Ylab = np.zeros((N, T, O), dt), np.zeros((N, T), np.int64)
    else:
        Ylin = np.broadcast_to(z, (N, T, O))
        Ylab = np.broadcast_to(np.int64(0), (N, T))
    m = ElmanRNN(I, H, O, dtype=dt, backend=backend)
    return {
        "forward": lambda: fastrnn.elman_forward(X, None, W_x, W_s, b, backend=backend),
        "backward": lambda: fastrnn.elman_backward(X, None, W_x, W_s, b, S, S,
                                                   backend=backend),
        "predict": lambda: fastrnn.elman_predict(X, None, W_x, W_s, b, W_y, b_y,
                                                 backend=backend),
        "loss_linear": lambda: fastrnn.elman_loss_and_grad(X, Ylin, None, W_x, W_s, b, W_y,
                                                           b_y, backend=backend),
        "loss_softmax": lambda: fastrnn.elman_loss_and_grad(
            X, Ylab, None, W_x, W_s, b, W_y, b_y, output="softmax", backend=backend),
        "model_forward": lambda: m.forward(X),
        "model_loss": lambda: m.loss_and_grad(X, Ylin),
        "model_fit": lambda: m.fit(X, Ylin, epochs=1, progress=False),
    }


CALLS = ("forward", "backward", "predict", "loss_linear", "loss_softmax", "model_forward",
         "model_loss", "model_fit")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("call", CALLS)
def test_memory_error_broadcast_inputs(one_gib, call, dtype, backend):
    """N=2**14, T=2**12, H=64 with X broadcast from a scalar (I=8: its contiguous copy
    alone, 2 or 4 GiB, exceeds the 1 GiB available)."""
    dt = np.dtype(dtype)
    I = 8
    X = np.broadcast_to(np.zeros((), dt), (NBIG, TBIG, I))
    fn = big_calls(dt, I, X, backend)[call]
    exc, peak = run_traced(fn)
    assert_memory_error(exc, peak, needs=NBIG * TBIG * I * dt.itemsize)
    assert "X" in str(exc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call", ["forward", "predict", "loss_linear", "loss_softmax",
                                  "model_forward", "model_loss"])
def test_memory_error_for_the_buffers(one_gib, call, backend):
    """A real, C-contiguous X of 256 MiB (zero pages from calloc: nothing touched) that
    fits, but whose states and outputs (N*T*H = 2**32 floats, 16 GiB) do not: the
    MemoryError names the buffers' size and comes before any of them is allocated."""
    dt = np.dtype(np.float32)
    X = np.zeros((NBIG, TBIG, 1), dt)
    fn = big_calls(dt, 1, X, backend, real_targets=True)[call]
    exc, peak = run_traced(fn)
    H, O, NT = HBIG, 4, NBIG * TBIG
    buffers = {"forward": NT * H, "predict": NT * (H + O), "loss_linear": NT * (2 * H + O),
               "loss_softmax": NT * (2 * H + O), "model_forward": NT * (H + O),
               "model_loss": NT * (2 * H + O)}[call] * dt.itemsize
    assert_memory_error(exc, peak, needs=buffers)


# ---- regression tests for bugs found here ------------------------------------------------------

@pytest.mark.parametrize("call", ["forward", "loss_softmax"])
def test_memory_error_before_copying_broadcast_inputs(one_gib, call):
    """The brief's example: N=2**14, T=2**12, H=64 via broadcast inputs, I=1 (so that X's
    own copy, 256 MiB, fits in the 1 GiB available)."""
    dt = np.dtype(np.float32)
    if call == "forward":
        X = np.broadcast_to(np.zeros((), dt), (NBIG, TBIG, 1))
    else:
        X = np.zeros((NBIG, TBIG, 1), dt)               # real: only the labels broadcast
    exc, peak = run_traced(big_calls(dt, 1, X, "cython")[call])
    assert_memory_error(exc, peak)


CHILD = textwrap.dedent(r"""
    import json, resource, sys, tracemalloc
    import numpy as np
    import fastrnn
    import fastrnn._validate as V

    def vmsize():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    case = json.loads(sys.stdin.read())
    # a hard ceiling, so that a real attempt to allocate fails at once instead of paging
    resource.setrlimit(resource.RLIMIT_AS, (vmsize() + (1 << 30), resource.RLIM_INFINITY))
    V.available_memory = lambda: case["avail"]
    z = np.zeros((), np.float32)
    N, H = case["N"], case["H"]
    m = fastrnn.ElmanRNN(1, H, 1)
    tracemalloc.start()
    try:
        if case["call"] == "step":
            m.step(np.broadcast_to(z, (N, 1)))
        else:
            fastrnn.elman_forward(np.broadcast_to(z, (N, 1, 1)), None, m.params["W_x"],
                                  m.params["W_s"], m.params["b"])
        out = {"type": None, "msg": ""}
    except Exception as exc:
        out = {"type": type(exc).__name__, "msg": str(exc)}
    out["peak"] = tracemalloc.get_traced_memory()[1]
    print(json.dumps(out))
""")


def run_child(case):
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(case), cwd=home,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_memory_error_before_allocating_h0():
    """Was: with h0=None, recurrence() allocated np.zeros((N, H)) (16 GiB here) before the
    memory check."""
    out = run_child({"call": "forward", "N": 2**26, "H": 64, "avail": GiB})
    assert out["type"] == "MemoryError", out
    assert re.search(r"needs [\d.]+ GiB of buffers", out["msg"]), out
    assert out["peak"] < 512 << 20, out


def test_step_memory_error_before_allocating():
    """Was: step() had no memory check: it went on to allocate h and the state (16 GiB
    each here)."""
    out = run_child({"call": "step", "N": 2**26, "H": 64, "avail": GiB})
    assert out["type"] == "MemoryError", out
    assert re.search(r"needs [\d.]+ GiB of buffers", out["msg"]), out


def test_step_too_large_for_blas():
    """Was: step() skipped the 32-bit BLAS size check: x (2**31, 1) was copied (8 GiB) and
    handed to kernels that keep N in a C int."""
    out = run_child({"call": "step", "N": 2**31, "H": 2, "avail": 1 << 42})
    assert out["type"] == "ValueError", out
    assert "too large for 32-bit BLAS" in out["msg"], out
