"""Roofline plot of a bench/report.py run: achieved GFLOP/s of every implementation on every
loss_and_grad row, against the peak GEMM rate measured alongside that row (grey bars; one
and two threads), one panel per cell and dtype.

    python bench/roofline.py [bench/results/report.json] [-o bench/results/roofline.png]

Needs matplotlib (pip install "fastrnn[plot]"). Also prints each fastrnn row's share of the
peak, the numbers the plot shows.
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
MARKERS = {"cython": "o", "numpy": "s", "torch": "^", "jax": "D"}
LABELS = {"cython": "fastrnn", "numpy": "NumPy twin", "torch": "PyTorch", "jax": "JAX"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", nargs="?", default=os.path.join(HERE, "results", "report.json"))
    ap.add_argument("-o", "--out", default=os.path.join(HERE, "results", "roofline.png"))
    args = ap.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    rows = [r for r in report["rows"] if r["kind"] == "loss_and_grad"]
    peak = {int(k): v for k, v in report["peak_sgemm_gflops"].items()}
    panels = sorted({(r["cell"], r["dtype"]) for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))

    def row_peak(r):            # measured alongside the row (older reports: once per run)
        return r.get("peak_gflops", peak[r["threads"]])

    for r in rows:
        if r["impl"] == "cython":
            print(f"{r['cell']:5} {r['config']:6} {r['dtype']:7} {r['threads']} thread(s): "
                  f"{r['gflops']:6.1f} GFLOP/s = {r['pct_peak']:5.1f}% of "
                  f"{row_peak(r):.0f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True,
                             squeeze=False)
    for ax, (cell, dtype) in zip(axes[0], panels):
        for threads in (1, 2):          # the peak GEMM rate measured with each row
            pts = [(configs.index(r["config"]), row_peak(r)) for r in rows
                   if r["cell"] == cell and r["dtype"] == dtype and r["impl"] == "cython"
                   and r["threads"] == threads]
            if pts:
                xs, ys = zip(*pts)
                ax.plot([x + (0.08 if threads == 2 else -0.08) for x in xs], ys, "_",
                        color="grey", ms=18, mew=2, label=f"peak GEMM, {threads} thr")
        for impl, marker in MARKERS.items():
            for threads, fill in ((1, "full"), (2, "none")):
                pts = [(configs.index(r["config"]), r["gflops"]) for r in rows
                       if r["cell"] == cell and r["dtype"] == dtype and r["impl"] == impl
                       and r["threads"] == threads]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot([x + (0.08 if threads == 2 else -0.08) for x in xs], ys, marker,
                            fillstyle=fill, label=f"{LABELS[impl]}, {threads} thr", ms=6)
        ax.set_title(f"{cell} {dtype}: loss_and_grad")
        ax.set_xticks(range(len(configs)), configs)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("GFLOP/s (2NT(2GIH + 3GHH + 3HO) per call)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
