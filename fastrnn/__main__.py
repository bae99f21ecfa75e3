"""`python -m fastrnn`: train a small Elman network on a built-in task, then time the backends.

The task: a noisy sine-mixture stream in, and the same stream DELAY steps ago out (the
network must remember the last few inputs). Training is plain mini-batch SGD with momentum
on ElmanRNN.loss_and_grad; the loss should fall by an order of magnitude. Then one
loss_and_grad call is timed for the cython and the numpy backend, alternating, and the ratio
of the medians is printed.
"""
import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from .functional import get_backend
from .model import ElmanRNN


def delayed_stream_task(n_sequences, T, delay, seed=0, dtype="float32"):
    """X (n, T, 1) random sine mixtures plus noise, Y (n, T, 1) = X shifted by delay steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    freq = rng.uniform(0.05, 0.4, size=(n_sequences, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_sequences, 2, 1))
    X = np.sin(freq * t + phase).sum(axis=1) / 2 + 0.3 * rng.standard_normal((n_sequences, T))
    Y = np.zeros_like(X)
    Y[:, delay:] = X[:, :-delay]
    return X[..., None].astype(dtype), Y[..., None].astype(dtype)


def train(model, X, Y, epochs, batch_size, lr, momentum=0.9, seed=0, log=print):
    """Mini-batch SGD with momentum; returns the list of epoch losses."""
    rng = np.random.default_rng(seed)
    velocity = {k: np.zeros_like(v) for k, v in model.params.items()}
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        total = 0.0
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            loss, grads = model.loss_and_grad(X[idx], Y[idx])
            total += loss * len(idx)
            for k, g in grads.items():
                velocity[k] *= momentum
                velocity[k] -= lr * g
                model.params[k] += velocity[k]
        losses.append(total / len(X))
        log(f"epoch {epoch + 1:3d}   train MSE {losses[-1]:.5f}")
    return losses


def time_backends(N=32, T=50, I=32, H=64, O=8, repeats=30, dtype="float32"):
    """Median seconds of one loss_and_grad per backend, measured alternately in this
    process, on the reference size (N, T, I, H, O), with one BLAS thread.

    One thread, because NumPy and SciPy each load their own OpenBLAS: timed alternately,
    one library's idle threads spin on the cores the other one needs.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = rng.standard_normal((N, T, O)).astype(dtype)
    models = {b: ElmanRNN(I, H, O, dtype=dtype, backend=b) for b in ("cython", "numpy")}
    times = {b: [] for b in models}
    with threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            for b, m in models.items():
                t0 = time.perf_counter()
                m.loss_and_grad(X, Y)
                times[b].append(time.perf_counter() - t0)
    return {b: float(np.median(v)) for b, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastrnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--sequences", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40, help="time steps per sequence")
    parser.add_argument("--delay", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--backend", default="cython", choices=("cython", "numpy"))
    parser.add_argument("--repeats", type=int, default=30, help="timing repeats per backend")
    args = parser.parse_args(argv)
    get_backend(args.backend)

    X, Y = delayed_stream_task(args.sequences, args.steps, args.delay)
    model = ElmanRNN(1, args.hidden, 1, seed=0, backend=args.backend)
    print(f"Task: output the input from {args.delay} steps ago; {args.sequences} sequences of "
          f"{args.steps} steps.\n{model}")
    t0 = time.perf_counter()
    losses = train(model, X, Y, args.epochs, batch_size=32, lr=0.05)
    print(f"trained in {time.perf_counter() - t0:.2f} s; MSE {losses[0]:.4f} -> "
          f"{losses[-1]:.4f} (predicting zeros gives {float(np.mean(Y ** 2)):.4f})")

    t = time_backends(repeats=args.repeats)
    print(f"\nloss_and_grad, N=32 T=50 I=32 H=64 O=8 float32, 1 thread, median of "
          f"{args.repeats}: "
          f"cython {t['cython'] * 1e3:.3f} ms, numpy {t['numpy'] * 1e3:.3f} ms -> cython is "
          f"{t['numpy'] / t['cython']:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
