"""Merged weight-gradient GEMM benchmark: fastrnn's fr_gemm_tn against SciPy's BLAS.

The cells' weight gradients are C (R, M) = A^T (R, K) @ B (K, M) over all K = N*T rows of
batch-first arrays (dW_x: R = I, dW_s: R = H; M = G*H). fastrnn/_gemm.pxd (weight_gemm)
picks the kernel from this measurement: fastrnn's below 2**28 multiply-adds, and in float32
with BLAS on one thread also above it while R <= 256.

For each (R, M, K), alternating rounds on one thread (threadpoolctl), medians:
  ours   fastrnn._gemm_test.gemm_tn (fr_gemm_tn, A and B read in place)
  blas   scipy.linalg.blas sgemm/dgemm on the same row-major operands (the cells' call)

    python bench/weight_gemm.py [--dtype float64] [--rows 64 128 256 512] [--cols 1024]
                                [--depth 3200 6400]
"""
import argparse
import time

import numpy as np
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from fastrnn import _gemm_test as g


def seconds(f, reps):
    """Mean time of reps calls."""
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rows", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024])
    ap.add_argument("--cols", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--depth", type=int, nargs="+", default=[1600, 6400, 12800])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    dt = np.dtype(args.dtype)
    gemm = blas.sgemm if dt == np.float32 else blas.dgemm
    rng = np.random.default_rng(0)
    print(f"{'R':>5} {'M':>5} {'K':>6} {'MACs':>8} {'ours':>7} {'blas':>7}  ours/blas speed"
          "   (GFLOP/s, one thread)")
    with threadpool_limits(1):
        for K in args.depth:
            for R in args.rows:
                for M in args.cols:
                    work = R * M * K
                    if work > 2e10:
                        continue
                    A = rng.standard_normal((K, R)).astype(dt)
                    B = rng.standard_normal((K, M)).astype(dt)
                    C = np.zeros((R, M), dt)

                    def ours():
                        g.gemm_tn(A, B, 0.0, C)

                    def theirs():
                        # column-major C^T (M, R) = B^T (M, K) @ A (K, R): the cells' operand
                        # swap for a row-major C = A^T B
                        gemm(1.0, B.T, A.T, trans_b=1)

                    ours()
                    theirs()
                    reps = max(1, int(3e8 / work))
                    t = np.array([(seconds(ours, reps), seconds(theirs, reps))
                                  for _ in range(args.rounds)])  # alternating: drift hits both
                    t_ours, t_blas = np.median(t, axis=0)
                    f = 2 * work / 1e9
                    print(f"{R:5d} {M:5d} {K:6d} {work:8.1e} {f / t_ours:7.1f} {f / t_blas:7.1f}"
                          f"  {t_blas / t_ours:5.2f}", flush=True)


if __name__ == "__main__":
    main()
