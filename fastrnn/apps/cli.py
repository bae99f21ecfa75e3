"""`fastrnn` (or `python -m fastrnn`): train a character-level language model, then time
the backends.

The model is the min-char-rnn workload of fastrnn.apps.charlm: an Elman network (hidden 100,
softmax over the characters) reads the source of the standard library's argparse module one
character at a time and learns to predict the next one, with Adagrad and truncated BPTT over
25 steps, the text cut into 16 parallel streams. It trains for half a minute (a progress bar
on a terminal; about ten plain lines when the output goes to a file or a pipe), reports the
cross-entropy per character before and after (on the training text and on a held-out tail),
and writes a sample. Then one loss_and_grad call is timed for the cython and
the numpy backend, alternating, with one BLAS thread, and the ratio of the medians is printed.

--quick does the same in a few seconds on a slice of the text (the smoke test uses it); for
the full set of options of the language model run `python -m fastrnn.apps.charlm --help`.

Subcommands:
    fastrnn lag       the long-time-lag sweep: how far back a plain RNN learns (fastrnn.apps.lag)
    fastrnn gradflow  gradient-flow PNG of a fresh and a trained model (fastrnn.apps.gradflow)
"""
import argparse
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ..model import ElmanRNN
from . import charlm


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


SUBCOMMANDS = {"lag": "fastrnn.apps.lag", "gradflow": "fastrnn.apps.gradflow"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib
        importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="fastrnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: 20,000 characters, 3 s of training, 5 repeats")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training time (default 0.5; 0.05 with --quick)")
    parser.add_argument("--text", metavar="FILE", help="train on this UTF-8 text file instead")
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--sample-length", type=int, default=None,
                        help="characters to sample (default 300; 100 with --quick)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar (default: on a terminal; elsewhere, such as a "
                             "log file, about 10 plain lines instead)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing repeats per backend (default 30; 5 with --quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    minutes = args.minutes if args.minutes is not None else (0.05 if quick else 0.5)
    sample_length = (args.sample_length if args.sample_length is not None
                     else (100 if quick else 300))
    repeats = args.repeats if args.repeats is not None else (5 if quick else 30)

    text = text_name = None
    if args.text is not None:
        with open(args.text, encoding="utf-8", errors="replace") as f:
            text, text_name = f.read(), args.text
    t0 = time.perf_counter()
    charlm.run(text, text_name=text_name, minutes=minutes, hidden=args.hidden,
               max_chars=20_000 if quick else 1_000_000, sample_length=sample_length,
               progress=args.progress, log_every=None)

    t = time_backends(repeats=repeats)
    print(f"\nloss_and_grad, N=32 T=50 I=32 H=64 O=8 float32, 1 thread, median of "
          f"{repeats}: "
          f"cython {t['cython'] * 1e3:.3f} ms, numpy {t['numpy'] * 1e3:.3f} ms -> cython is "
          f"{t['numpy'] / t['cython']:.1f}x faster")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
