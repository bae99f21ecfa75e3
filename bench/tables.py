"""The Markdown tables README's Speed section quotes, from one bench/report.py run.

    python bench/tables.py [bench/results/report.json]

Prints: loss_and_grad per cell and config (fastrnn's time, its ratio to the NumPy twin,
PyTorch and JAX, GFLOP/s, share of the peak SGEMM measured in the run) for each dtype and
thread count; two cores against one (loss_and_grad and fit, measured alternating); the
deep bidirectional row; forward-only rows; the T sweep; peak memory.
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def ratio(x):
    return f"{x:.2f}x" if x is not None else "-"


def ms(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.3g} ms" if seconds * 1e3 < 100 else f"{seconds * 1e3:.0f} ms"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", nargs="?", default=os.path.join(HERE, "results", "report.json"))
    args = ap.parse_args(argv)
    with open(args.report) as f:
        rep = json.load(f)
    peak = rep["peak_sgemm_gflops"]
    print("peak SGEMM in this run: " + ", ".join(f"{k} thread(s) {v:.0f} GFLOP/s"
                                                 for k, v in peak.items()))
    rows = [r for r in rep["rows"] if r["impl"] == "cython"]
    for kind in ("loss_and_grad", "forward"):
        for dtype in sorted({r["dtype"] for r in rows if r["kind"] == kind}):
            sel = [r for r in rows if r["kind"] == kind and r["dtype"] == dtype]
            if not sel:
                continue
            print(f"\n{kind}, {dtype}\n")
            print("| cell | config (N, T, I, H, O) | threads | fastrnn | vs NumPy | vs PyTorch "
                  "| vs JAX | GFLOP/s | % of peak |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for r in sel:
                print(f"| {r['cell']} | {r['config']} {tuple(r['dims'])} | {r['threads']} | "
                      f"{ms(r['median_s'])} | {ratio(r['vs_numpy'])} | {ratio(r['vs_torch'])} | "
                      f"{ratio(r['vs_jax'])} | {r['gflops']:.0f} | {r['pct_peak']:.0f}% |")
    if rep.get("scaling"):
        print("\ntwo cores against one (alternating in one measurement)\n")
        print("| cell | config | dtype | loss_and_grad 1 -> 2 cores | speed-up | fit epoch "
              "1 -> 2 cores | speed-up |")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in rep["scaling"]:
            t = r["median_s"]
            print(f"| {r['cell']} | {r['config']} | {r['dtype']} | {ms(t['lag_1'])} -> "
                  f"{ms(t['lag_2'])} | {r['loss_and_grad']:.2f}x | {ms(t['fit_1'])} -> "
                  f"{ms(t['fit_2'])} | {r['fit']:.2f}x |")
    for r in rep.get("stack", []):
        t = r["median_s"]
        print(f"\nstack {r['cell']} L={r['num_layers']} bidirectional={r['bidirectional']} "
              f"{tuple(r['dims'])}, {r['threads']} thread(s): fastrnn {ms(t['cython'])}, "
              f"PyTorch {ms(t['torch']) if 'torch' in t else '-'} -> {ratio(r['vs_torch'])}, "
              f"NumPy {ratio(r['vs_numpy'])}, stack / its one-layer calls "
              f"{r['over_layers']:.3f}, {r['pct_peak']:.0f}% of peak")
    if rep.get("sweep_T"):
        print("\nT sweep (N=32, I=32, H=64, O=8; Elman, 1 thread): " + ", ".join(
            f"T={r['value']} {r['cython_us_per_step']:.1f} us/step" for r in rep["sweep_T"]))
    if rep.get("sweep_H"):
        print("H sweep (vs NumPy): " + ", ".join(f"H={r['value']} {r['ratio']:.2f}x"
                                                 for r in rep["sweep_H"]))
    if rep.get("memory"):
        mem = [r for r in rep["memory"] if r["impl"] == "cython"]
        print("\npeak memory / minimum, fastrnn: " + ", ".join(
            f"{r['cell']} {r['config']} {r['ratio']:.2f}" for r in mem))


if __name__ == "__main__":
    main()
