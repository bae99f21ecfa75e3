"""Benchmark report: fastrnn's Cython core against its NumPy twin, PyTorch and JAX, for
every cell.

    python bench/report.py                   # the whole grid, every cell, 1 and 2 threads
    python bench/report.py --quick           # fewer repeats, no large config, no sweeps
    python bench/report.py --configs small med --threads 1 --dtype float64 --cells lstm
    python bench/report.py --only-scaling    # two cores against one (loss_and_grad, fit)
    python bench/tables.py; python bench/roofline.py     # README's tables; the plot

Everything is measured in this one process, implementations alternating in blocks (each
block first runs untimed for a moment, so the previous library's idle BLAS/OpenMP threads
have stopped spinning), and medians are reported. The roofline, a 2048^3 NumPy matmul, is
one more implementation in every row's blocks, so each share of the peak is against the
machine's speed at the time of that row. JAX is pinned to one thread (XLA_FLAGS) and runs
in the one-thread rows only. Threads are pinned with threadpoolctl
(every BLAS loaded) and torch.set_num_threads. Writes the table to stdout and everything to
JSON (--json, default bench/results/report.json).
"""
import argparse
import json
import os
import platform
import sys
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

import fastrnn  # noqa: E402


def set_threads(n):
    """Pin every BLAS and torch to n threads; returns the threadpoolctl context."""
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass
    return threadpool_limits(n)


def time_block(f, warmup_s, min_calls, min_s):
    """Run f untimed for warmup_s (at least once), then time at least min_calls calls and
    min_s seconds; returns the list of call times."""
    t_end = time.perf_counter() + warmup_s
    f()
    while time.perf_counter() < t_end:
        f()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return times


def measure(impls, rounds, warmup_s=0.15, min_calls=3, min_s=0.1):
    """Median seconds per call of each implementation, alternating blocks over rounds."""
    times = {name: [] for name in impls}
    for _ in range(rounds):
        for name, f in impls.items():
            times[name] += time_block(f, warmup_s, min_calls, min_s)
    return {name: float(np.median(t)) for name, t in times.items()}


PEAK_N = 2048


def peak_gemm_call(dtype):
    """One large NumPy matmul of dtype (PEAK_N^3): the roofline, timed alongside each row."""
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((PEAK_N, PEAK_N)).astype(dtype) for _ in range(2))
    C = np.empty((PEAK_N, PEAK_N), dtype)
    return lambda: np.matmul(A, B, out=C)


def peak_sgemm(threads, dtype="float32", n=2048, rounds=5):
    """GFLOP/s of a large NumPy matmul: this machine's practical GEMM peak."""
    rng = np.random.default_rng(0)
    A, B = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    C = np.empty((n, n), dtype)
    with set_threads(threads):
        t = measure({"gemm": lambda: np.matmul(A, B, out=C)}, rounds)["gemm"]
    return 2 * n**3 / t / 1e9


def peak_memory(f):
    """Peak bytes allocated (tracemalloc sees NumPy's buffers) during one call of f, with
    nothing kept from earlier calls (the cython backend reuses its workspace otherwise)."""
    f()
    fastrnn.get_backend("cython").release_workspace()
    tracemalloc.start()
    tracemalloc.reset_peak()
    f()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def minimum_memory(N, T, I, H, O, itemsize, cell="elman"):
    """What one loss_and_grad must hold: the states and gate activations the backward pass
    reads (N, T, H) each (Elman: S; LSTM: h, c and 4 gates; GRU: h, 3 gates and s_n), the
    states' gradients (N, T, H), the outputs (N, T, O), and the parameter gradients."""
    spec = fastrnn.cells.get_cell(cell)
    shapes = spec.weight_shapes(I, H)
    n_params = sum(int(np.prod(s)) for s in shapes.values()) + H * O + O
    return ((spec.buffers_per_step + 1) * N * T * H + N * T * O + n_params) * itemsize


def run_grid(configs, threads_list, dtype, rounds, peak, kind="loss_and_grad",
             cells=("elman",), jax_too=True):
    rows = []
    flops_of = workloads.loss_and_grad_flops if kind == "loss_and_grad" else \
        workloads.forward_flops
    for cell in cells:
        for name in configs:
            dims = workloads.CONFIGS[name]
            impls = workloads.implementations(*dims, dtype=dtype, kind=kind, cell=cell,
                                              jax_too=jax_too and dtype == "float32")
            big = name == "large"
            gemm = peak_gemm_call(dtype)
            for threads in threads_list:
                # JAX is pinned to one thread (workloads.jax_impl): only in one-thread rows
                row_impls = {k: f for k, f in impls.items() if threads == 1 or k != "jax"}
                with set_threads(threads):
                    t = measure({**row_impls, "peak": gemm},
                                rounds if not big else max(2, rounds // 2),
                                warmup_s=0.0 if big else 0.15, min_calls=1 if big else 3)
                row_peak = 2 * PEAK_N ** 3 / t.pop("peak") / 1e9
                flops = flops_of(*dims, cell=cell)
                for impl, sec in t.items():
                    rows.append({
                        "kind": kind, "cell": cell, "config": name, "dims": dims,
                        "dtype": dtype, "threads": threads, "impl": impl, "median_s": sec,
                        "vs_numpy": t["numpy"] / sec,
                        "vs_torch": t["torch"] / sec if "torch" in t else None,
                        "vs_jax": t["jax"] / sec if "jax" in t else None,
                        "gflops": flops / sec / 1e9,
                        # the GEMM peak measured alternating with this row's calls (the
                        # machine's speed drifts: a peak taken once at the start is not it)
                        "peak_gflops": row_peak,
                        "pct_peak": 100 * flops / sec / 1e9 / row_peak,
                    })
                print_rows(rows[-len(t):])
    return rows


def print_rows(rows):
    for r in rows:
        vs = {k: f"{r[k]:7.2f}x" if r[k] is not None else "      -"
              for k in ("vs_torch", "vs_jax")}
        print(f"{r['kind'][:4]:4} {r['cell']:5} {r['config']:6} {r['dtype']:7} "
              f"thr={r['threads']} {r['impl']:7} {r['median_s'] * 1e3:10.3f} ms  vs numpy "
              f"{r['vs_numpy']:6.2f}x  vs torch {vs['vs_torch']}  vs jax {vs['vs_jax']}  "
              f"{r['gflops']:7.1f} GFLOP/s  {r['pct_peak']:5.1f}% of "
              f"{r['peak_gflops']:.0f}", flush=True)


def stack_rows(threads_list, rounds, peak):
    """The deep, bidirectional row (workloads.STACK_CONFIG) against PyTorch, and what the
    stack costs beyond its layers: its time over that of the same one-layer calls."""
    cell, L, bi, dims = workloads.STACK_CONFIG
    impls = workloads.stack_implementations(cell, L, bi, *dims)
    flops = workloads.stack_flops(cell, L, bi, *dims)
    out = []
    gemm = peak_gemm_call("float32")
    for threads in threads_list:
        with set_threads(threads):
            t = measure({**impls, "peak": gemm}, max(2, rounds // 2), warmup_s=0.0,
                        min_calls=2)
        row_peak = 2 * PEAK_N ** 3 / t.pop("peak") / 1e9
        row = {"cell": cell, "num_layers": L, "bidirectional": bi, "dims": dims,
               "threads": threads, "median_s": t,
               "vs_torch": t["torch"] / t["cython"] if "torch" in t else None,
               "vs_numpy": t["numpy"] / t["cython"],
               "over_layers": t["cython"] / t["cython_layers"],
               "peak_gflops": row_peak,
               "pct_peak": 100 * flops / t["cython"] / 1e9 / row_peak}
        out.append(row)
        vs = f"{row['vs_torch']:5.2f}x" if row["vs_torch"] else "    -"
        print(f"stack {cell} L={L} bidirectional={bi} {dims} thr={threads}  cython "
              f"{t['cython'] * 1e3:9.1f} ms  vs torch {vs}  vs numpy {row['vs_numpy']:5.2f}x"
              f"  {row['pct_peak']:5.1f}% peak  stack / its {L * (2 if bi else 1)} one-layer "
              f"calls {row['over_layers']:5.3f}", flush=True)
    return out


def scaling_rows(configs, cells, dtype, rounds):
    """fastrnn on two cores against one, the two alternating in one measure() (the ratio the
    two-core target is about, free of the drift between separate runs): one loss_and_grad,
    and fit (one epoch over 4 batches of the config's N). One core: BLAS on one thread and no
    split; two: the batch split across two threads (BLAS on one thread inside each)."""
    import contextlib
    out = []
    for cell in cells:
        for name in configs:
            N, T, I, H, O = workloads.CONFIGS[name]
            if N < 2:
                continue                        # a batch of one does not split
            X, Y, model = workloads.problem(N, T, I, H, O, dtype=dtype, cell=cell)
            lag = workloads.fastrnn_impl(X, Y, model, "cython")
            Xf, Yf, fitted = workloads.problem(4 * N, T, I, H, O, dtype=dtype, cell=cell)

            def fit(threads, fitted=fitted, Xf=Xf, Yf=Yf, N=N):
                fitted.fit(Xf, Yf, epochs=1, batch_size=N, progress=False, shuffle=False,
                           threads=threads)

            def on(threads, f):
                def run():
                    with fastrnn.threads(threads):
                        return f()
                return run

            big = name == "large"
            with set_threads(1):
                t = measure({"lag_1": on(1, lag), "lag_2": on(2, lag),
                             "fit_1": lambda: fit(1), "fit_2": lambda: fit(2)},
                            max(2, rounds // 2) if big else rounds,
                            warmup_s=0.0 if big else 0.15, min_calls=1 if big else 3)
            row = {"cell": cell, "config": name, "dtype": dtype, "median_s": t,
                   "loss_and_grad": t["lag_1"] / t["lag_2"], "fit": t["fit_1"] / t["fit_2"]}
            out.append(row)
            print(f"two cores / one: {cell:5} {name:6} {dtype}  loss_and_grad "
                  f"{t['lag_1'] * 1e3:9.3f} -> {t['lag_2'] * 1e3:9.3f} ms "
                  f"{row['loss_and_grad']:5.2f}x   fit (1 epoch, 4 batches) "
                  f"{t['fit_1'] * 1e3:9.2f} -> {t['fit_2'] * 1e3:9.2f} ms {row['fit']:5.2f}x",
                  flush=True)
    return out


def sweep(param, values, base, dtype, rounds, threads=1):
    """Time per step of cython and numpy loss_and_grad as one dimension varies."""
    out = []
    with set_threads(threads):
        for v in values:
            dims = dict(zip("NTIHO", base))
            dims[param] = v
            d = tuple(dims[k] for k in "NTIHO")
            impls = workloads.implementations(*d, dtype=dtype, torch_too=False)
            t = measure(impls, rounds, warmup_s=0.05, min_calls=2, min_s=0.05)
            row = {"param": param, "value": v, "dims": d,
                   "cython_s": t["cython"], "numpy_s": t["numpy"],
                   "cython_us_per_step": t["cython"] / d[1] * 1e6,
                   "ratio": t["numpy"] / t["cython"]}
            out.append(row)
            print(f"sweep {param}={v:6d}  cython {row['cython_s'] * 1e3:9.3f} ms "
                  f"({row['cython_us_per_step']:8.2f} us/step)  numpy {t['numpy'] * 1e3:9.3f}"
                  f" ms  ratio {row['ratio']:5.2f}x", flush=True)
    return out


def memory_rows(configs, dtype, cells=("elman",)):
    out = []
    for cell in cells:
        for name in configs:
            dims = workloads.CONFIGS[name]
            impls = workloads.implementations(*dims, dtype=dtype, torch_too=False, cell=cell)
            itemsize = np.dtype(dtype).itemsize
            minimum = minimum_memory(*dims, itemsize, cell=cell)
            for impl, f in impls.items():
                peak = peak_memory(f)
                out.append({"cell": cell, "config": name, "impl": impl, "peak_bytes": peak,
                            "min_bytes": minimum, "ratio": peak / minimum})
                print(f"memory {cell:5} {name:6} {impl:7} peak {peak / 2**20:9.2f} MiB   "
                      f"minimum {minimum / 2**20:9.2f} MiB   ratio {peak / minimum:5.2f}",
                      flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(workloads.CONFIGS),
                    choices=list(workloads.CONFIGS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--dtype", nargs="+", default=["float32"],
                    choices=["float32", "float64"])
    ap.add_argument("--cells", nargs="+", default=list(workloads.CELLS),
                    choices=list(workloads.CELLS))
    ap.add_argument("--no-jax", action="store_true", help="leave JAX out even if installed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds, no large config, no sweeps")
    ap.add_argument("--no-sweeps", action="store_true")
    ap.add_argument("--no-scaling", action="store_true",
                    help="leave out the two-cores-against-one rows")
    ap.add_argument("--only-scaling", action="store_true",
                    help="only the two-cores-against-one rows")
    ap.add_argument("--no-stack", action="store_true",
                    help="leave out the 2-layer bidirectional row")
    ap.add_argument("--only-stack", action="store_true",
                    help="only the 2-layer bidirectional row (and the SGEMM peak)")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "report.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 3
        args.configs = [c for c in args.configs if c != "large"]
        args.no_sweeps = True

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    peak = {n: peak_sgemm(n) for n in args.threads}
    print(f"fastrnn {fastrnn.__version__}, numpy {np.__version__}, torch {torch_version}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    print("peak SGEMM (numpy float32 2048^3 matmul): " +
          ", ".join(f"{n} thread(s) {g:.1f} GFLOP/s" for n, g in peak.items()))

    result = {"versions": {"fastrnn": fastrnn.__version__, "numpy": np.__version__,
                           "torch": torch_version, "python": platform.python_version()},
              "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture",
                                               "num_threads", "filepath")}
                       for i in threadpool_info()],
              "peak_sgemm_gflops": peak, "rows": []}
    if not args.no_stack and not args.only_scaling:
        result["stack"] = stack_rows(args.threads, args.rounds, peak)
    if args.only_stack:
        args.dtype, args.configs, args.no_sweeps, args.no_scaling = [], [], True, True
    if not args.no_scaling:
        # the first dtype only (float32 by default): the split is the same for both
        result["scaling"] = scaling_rows(args.configs, args.cells, args.dtype[0],
                                         args.rounds) if args.dtype else []
    if args.only_scaling:
        args.dtype, args.configs, args.no_sweeps = [], [], True
    for dtype in args.dtype:
        result["rows"] += run_grid(args.configs, args.threads, dtype, args.rounds, peak,
                                   cells=args.cells, jax_too=not args.no_jax)
    fwd_configs = [c for c in ("tiny", "small") if c in args.configs]
    result["rows"] += run_grid(fwd_configs, [1], "float32", args.rounds, peak,
                               kind="forward", cells=args.cells, jax_too=not args.no_jax)
    result["memory"] = memory_rows([c for c in args.configs if c != "large"], "float32",
                                   cells=args.cells)
    if not args.no_sweeps:
        small = workloads.CONFIGS["small"]
        result["sweep_T"] = sweep("T", [10, 100, 1000, 10000], small, "float32",
                                  max(2, args.rounds // 2))
        result["sweep_H"] = sweep("H", [16, 32, 64, 128, 256, 512, 1024], small, "float32",
                                  max(2, args.rounds // 2))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
