"""Thread safety and determinism.

The compiled kernels release the GIL. What is safe: independent models (or functional calls
on separate arrays) in any number of threads, and one model shared by several threads for
inference (forward, step, loss_and_grad only read the parameters). What is not: training
one model from two threads at once, or changing its params while another thread uses them
(the updates race, as with any in-place optimizer).
"""
import hashlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastrnn


def train_one(seed, backend="cython"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((64, 20, 3)).astype(np.float32)
    Y = np.cumsum(X, axis=1)[..., :2] / 5
    m = fastrnn.ElmanRNN(3, 24, 2, seed=seed, backend=backend)
    h = m.fit(X, Y, epochs=3, batch_size=16, progress=False)
    return m.params, h["loss"]


def run_in_threads(fn, args):
    out = [None] * len(args)
    errors = []

    def work(i):
        try:
            out[i] = fn(*args[i])
        except BaseException as exc:          # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_four_models_in_four_threads_match_sequential(backend):
    seeds = [(s, backend) for s in range(4)]
    sequential = [train_one(*a) for a in seeds]
    threaded = run_in_threads(train_one, seeds)
    for (p1, l1), (p2, l2) in zip(sequential, threaded):
        assert l1 == l2
        for k in p1:
            np.testing.assert_array_equal(p1[k], p2[k])


def test_shared_model_inference_from_threads():
    m = fastrnn.ElmanRNN(3, 32, 4, output="softmax", seed=0)
    Xs = [np.random.default_rng(i).standard_normal((8, 50, 3)).astype(np.float32)
          for i in range(6)]
    want = [m.forward(X)[0] for X in Xs]
    got = run_in_threads(lambda X: m.forward(X)[0], [(X,) for X in Xs])
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_gil_is_released():
    """While one thread runs a long compiled call, another thread keeps running Python."""
    m = fastrnn.ElmanRNN(16, 256, 4, seed=0)
    X = np.zeros((64, 400, 16), np.float32)
    Y = np.zeros((64, 400, 4), np.float32)
    done = threading.Event()
    ticks = []

    def ticker():
        while not done.is_set():
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        for _ in range(3):
            m.loss_and_grad(X, Y)
    finally:
        done.set()
        t.join()
    assert len(ticks) > 1000


SCRIPT = """
import hashlib, numpy as np, fastrnn
from threadpoolctl import threadpool_limits
with threadpool_limits(1):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20, 3)).astype(np.float32)
    Y = np.cumsum(X, axis=1)[..., :2] / 5
    m = fastrnn.ElmanRNN(3, 24, 2, seed=7)
    h = m.fit(X, Y, epochs=3, batch_size=16, progress=False)
digest = hashlib.sha256()
for k in sorted(m.params):
    digest.update(m.params[k].tobytes())
digest.update(np.array(h["loss"]).tobytes())
print(digest.hexdigest())
"""


def test_same_seed_same_bits_across_processes():
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    digests = {subprocess.run([sys.executable, "-c", SCRIPT], cwd=home, capture_output=True,
                              text=True, check=True).stdout.strip() for _ in range(2)}
    assert len(digests) == 1
