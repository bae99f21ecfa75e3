"""Per-step GEMM benchmark: OpenBLAS (repacks B on every call) vs fastrnn's packed kernel.

For each (N, K, M): T = 100 products C[:, t] (N, M) += A[:, t] (N, K) @ B (K, M) with A and C
batch-first (N, T, K) and (N, T, M) arrays (row strides T*K and T*M, as in the cells), in a
compiled loop (fastrnn._gemm_test):
  blas        scipy's sgemm through fastrnn._blas.gemm_step (the row-major operand swap),
  blas-split  the same with split=True (the cells' column-block trick for mid sizes),
  packed      one fr_pack_b (counted) + T fr_gemm_packed calls; cases with K > M are the
              backward's dZ @ W_s^T and pack W_s (M, K) with trans=1, so W_s^T is never formed.
GFLOP/s = 2*N*K*M*T / time (median of several alternating rounds), and % of the peak of a
2048^3 NumPy matmul measured in the same run. One thread (threadpoolctl).

    python bench/gemm_kernel.py [--dtype float64] [--isa avx512|avx2|generic] [--quick]
"""
import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastrnn import _gemm_test as g

CASES = [(32, 64, 256), (32, 64, 64), (64, 256, 1024), (64, 1024, 256), (128, 1024, 4096),
         (128, 4096, 1024), (64, 256, 768), (1, 100, 400)]
T = 100


_PEAK = {}


def peak_sample(dtype, rounds=3):
    """GFLOP/s of a 2048^3 matmul (NumPy's BLAS), the roofline to quote: a few samples,
    kept; peak() is the median of all taken so far (taken between the cases, as the machine
    is shared and its speed drifts)."""
    n = 2048
    if dtype not in _PEAK:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        _PEAK[dtype] = (a, a.T.copy(), [])
        a @ a
    a, b, samples = _PEAK[dtype]
    for _ in range(rounds):
        t0 = time.perf_counter()
        a @ b
        samples.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)


def peak(dtype):
    """(median, best) of the peak samples so far"""
    return statistics.median(_PEAK[dtype][2]), max(_PEAK[dtype][2])


def case(N, K, M, dtype, budget):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((N, T, K)).astype(dtype)
    W = (rng.standard_normal((K, M)) / np.sqrt(K)).astype(dtype)   # op(B), (K, M)
    trans = K > M
    W_stored = np.ascontiguousarray(W.T) if trans else W           # W_s (M, K) if trans
    C = np.zeros((N, T, M), dtype)
    Bp = g.aligned_empty(g.packed_size(K, M, dtype), dtype)
    runs = {
        "blas": lambda: g.steps_blas(A, W, C, False),
        "blas-split": lambda: g.steps_blas(A, W, C, True),
        "packed": lambda: g.steps_packed(A, W_stored, Bp, trans, C),
    }
    # correctness of this very setup (one round from zero)
    C[...] = 0
    runs["packed"]()
    ref = (A.reshape(N * T, K).astype(np.float64) @ W.astype(np.float64)).reshape(N, T, M)
    err = np.abs(C - ref).max() / np.abs(ref).max()
    assert err < (1e-5 if dtype == np.float32 else 1e-12), err
    t0 = time.perf_counter()
    runs["blas"]()
    est = time.perf_counter() - t0
    rounds = int(max(3, min(21, budget / (3 * est))))
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for name, f in runs.items():          # alternating, so drifts hit all alike
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    flops = 2.0 * N * K * M * T
    return {k: (flops / statistics.median(v) / 1e9, flops / min(v) / 1e9)
            for k, v in times.items()}, rounds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--isa", default=None, choices=list(g.ISAS))
    ap.add_argument("--quick", action="store_true", help="shorter rounds")
    args = ap.parse_args()
    dtype = np.dtype(args.dtype).type
    if args.isa:
        g.isa(g.ISAS[args.isa])
    isa_name = {v: k for k, v in g.ISAS.items()}[g.isa()]
    budget = 0.5 if args.quick else 1.5
    with threadpool_limits(1):
        results = []
        for N, K, M in CASES:
            peak_sample(dtype)
            results.append(((N, K, M), case(N, K, M, dtype, budget)[0]))
        peak_sample(dtype)
        samples = _PEAK[dtype][2]
        print(f"{args.dtype}, one thread, T={T}, packed kernel: {isa_name}; "
              f"{len(samples)} samples of the 2048^3 matmul peak, "
              f"{min(samples):.0f}-{max(samples):.0f} GFLOP/s")
        print("GFLOP/s and % of peak; median of the rounds vs the median peak, and in "
              "brackets best vs best (a shared machine only ever slows a round down)")
        med_pk, best_pk = peak(dtype)
        print(f"{'N':>4} {'K':>5} {'M':>5} | {'blas':>19} | {'blas-split':>19} | "
              f"{'packed':>19} | speed-up   (peak {med_pk:.0f} [{best_pk:.0f}])")
        for (N, K, M), r in results:
            cells = " | ".join(f"{r[k][0]:5.1f} {100 * r[k][0] / med_pk:3.0f}% "
                               f"[{100 * r[k][1] / best_pk:3.0f}%]"
                               for k in ("blas", "blas-split", "packed"))
            best = max(r["blas"][0], r["blas-split"][0])
            print(f"{N:4d} {K:5d} {M:5d} | {cells} | {r['packed'][0] / best:5.2f}x")


if __name__ == "__main__":
    main()
