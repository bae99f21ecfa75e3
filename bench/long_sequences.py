"""Time per step of loss_and_grad as sequences grow, for every cell: the time-blocked passes
(fastrnn/_threads.py time_block: what fastrnn runs above 16 MiB of gates) against one pass
over all steps (the merged GEMMs over N*T rows), side by side in one process.

    python bench/long_sequences.py                       # small config, T = 100 ... 10,000
    python bench/long_sequences.py --cells lstm --T 100 1000 3000 10000 --rounds 11

One thread, float32 by default. Each round times every (T, path) once, in turn; the table
gives medians over rounds of the time per step and of its ratio to T = 100's (paired within
a round, which cancels most of a noisy machine's drift), and blocked's speed-up over merged.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import workloads  # noqa: E402  (bench/workloads.py: the configs)

import fastrnn  # noqa: E402
from fastrnn import _threads  # noqa: E402

MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
GATES = {"elman": 1, "lstm": 4, "gru": 3}


def time_call(f, steps, min_s=0.2):
    """Seconds per step of f(), over enough calls to last min_s."""
    f()
    calls, t0 = 0, time.perf_counter()
    while True:
        f()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed / calls / steps


def run(cells, Ts, dims, dtype, rounds):
    N, _, I, H, O = dims
    itemsize = np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    data = {T: (rng.standard_normal((N, T, I)).astype(dtype),
                rng.standard_normal((N, T, O)).astype(dtype)) for T in Ts}
    real = _threads.TIME_BLOCK_ABOVE_BYTES
    rows = []
    for cell in cells:
        model = MODELS[cell](I, H, O, seed=0, dtype=dtype)
        times = {(T, path): [] for T in Ts for path in ("blocked", "merged")}
        for _ in range(rounds):
            for T in Ts:
                X, Y = data[T]
                for path in ("blocked", "merged"):
                    _threads.TIME_BLOCK_ABOVE_BYTES = real if path == "blocked" else 1 << 62
                    times[T, path].append(
                        time_call(lambda: model.loss_and_grad(X, Y, threads=1), T))
        _threads.TIME_BLOCK_ABOVE_BYTES = real
        base = np.array(times[Ts[0], "merged"])
        for T in Ts:
            b, m = np.array(times[T, "blocked"]), np.array(times[T, "merged"])
            row = {"cell": cell, "T": T, "dims": (N, T, I, H, O), "dtype": dtype,
                   "block": _threads.time_block(N, T, GATES[cell], H, itemsize, 1, True),
                   "blocked_us_per_step": float(np.median(b)) * 1e6,
                   "merged_us_per_step": float(np.median(m)) * 1e6,
                   "blocked_vs_first_T": float(np.median(b / base)),
                   "merged_vs_first_T": float(np.median(m / base)),
                   "blocked_speedup": float(np.median(m / b))}
            rows.append(row)
            print(f"{cell:5s} T={T:6d} block {row['block']:3d}  "
                  f"blocked {row['blocked_us_per_step']:7.2f} us/step "
                  f"(x{row['blocked_vs_first_T']:.2f} of T={Ts[0]})  "
                  f"merged {row['merged_us_per_step']:7.2f} us/step "
                  f"(x{row['merged_vs_first_T']:.2f})  blocked/merged speed "
                  f"{row['blocked_speedup']:.3f}x", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--T", nargs="+", type=int, default=[100, 1000, 3000, 10000])
    ap.add_argument("--config", default="small", choices=list(workloads.CONFIGS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "long_sequences.json"))
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        rows = run(args.cells, args.T, workloads.CONFIGS[args.config], args.dtype,
                   args.rounds)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"fastrnn": fastrnn.__version__, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
