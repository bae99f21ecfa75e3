"""`fastrnn gradflow`: how the error signal travels back through Elman, LSTM and GRU cells,
for a freshly initialised and a trained network of each, on the same task; written as a PNG.

    fastrnn gradflow                              # elman lstm gru, task 2a at lag 100
    fastrnn gradflow --cell elman/plain lstm/bias1 lstm/1997 --steps 50
    fastrnn gradflow --task adding --steps 100 --budget 50000

Each cell is built and trained as in `fastrnn lag` (a bare cell name means its setting in
DEFAULT_SETTING; or give cell/setting, one of fastrnn.apps.lag.SETTINGS), on fresh sequences
until the task's criterion holds (for 2a the stricter one: the right symbol's probability
>= 0.9) or --budget sequences have been seen. The curves are
fastrnn.diagnostics.gradient_flow of the last step's loss on fresh sequences: ||dLoss/dh_{T-1-k}||
against k, read off the one backward pass (float64, so nothing underflows); for the LSTM also
||dLoss/dc_{T-1-k}||, the constant error carousel; for the Elman cell the Jacobian bound
(max|phi'| ||W_s||_2)^k dashed.
"""
import argparse
import json
import time

import numpy as np

from ..diagnostics import _pyplot, jacobian_bound
from . import lag

DEFAULT_SETTING = {"elman": "elman/orth+clip", "lstm": "lstm/1997", "gru": "gru/default"}


def setting_key(name):
    """'elman' -> its default setting's key; 'lstm/chrono' -> itself."""
    key = DEFAULT_SETTING.get(name, name)
    if key not in lag.SETTINGS:
        raise SystemExit(f"fastrnn gradflow: unknown cell or setting {name!r}; choose from "
                         f"{sorted(DEFAULT_SETTING)} or {list(lag.SETTINGS)}")
    return key


def measure(key, task_name="two_sequence", steps=100, hidden=16, budget=20_000, seed=0,
            batch_size=16, loss="last"):
    """Build the setting's network, measure its gradient flow, train it, measure again.
    Returns {"fresh": {state: flow}, "trained": {state: flow}, "solved", "sequences",
    "bound_fresh", "bound_trained" (Elman only: flow[0] times the Jacobian bound)}."""
    task = lag.TASKS[task_name]
    model = lag.SETTINGS[key].model(task, steps, seed, hidden)
    X, Y, lengths = lag._probe(task, steps, seed, n=128)
    out = {"fresh": lag.state_flows(model, X, Y, lengths)}
    k = np.arange(len(out["fresh"]["h"]))
    if model.cell.name == "elman":
        out["bound_fresh"] = (out["fresh"]["h"][0] * jacobian_bound(model, k)).tolist()
    out.update(lag.fit_until_solved(model, task_name, steps, key, seed, budget, batch_size,
                                    loss=loss))
    out["trained"] = lag.state_flows(model, X, Y, lengths)
    if model.cell.name == "elman":
        out["bound_trained"] = (out["trained"]["h"][0] * jacobian_bound(model, k)).tolist()
    return out


def _status(r):
    """When training stopped: at the task's confident criterion (2a: p >= 0.9; for the other
    tasks the same as its criterion), or at the budget."""
    if r["solved_confident"]:
        return f"solved after {r['sequences_confident']:,}"
    return f"not solved in {r['sequences_trained']:,}"


def plot(results, path, title):
    """One panel per setting: fresh and trained ||dLoss/dh|| (solid), ||dLoss/dc|| (LSTM,
    dash-dot), the Elman Jacobian bounds (dotted); one shared log scale."""
    plt = _pyplot()
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), sharey=True, squeeze=False)
    lowest, highest = np.inf, 0.0
    for ax, (key, r) in zip(axes[0], results.items()):
        for when, colour in (("fresh", "tab:blue"), ("trained", "tab:red")):
            for state, style in (("h", "-"), ("c", "-.")):
                if state in r[when]:
                    flow = np.maximum(np.asarray(r[when][state]), 1e-300)
                    ax.semilogy(flow, style, color=colour, label=f"{when}: ||dL/d{state}||")
                    if flow[0] > 0:
                        lowest = min(lowest, flow.min())
                        highest = max(highest, flow.max())
            if f"bound_{when}" in r:
                ax.semilogy(r[f"bound_{when}"], ":", color=colour, lw=1,
                            label=f"{when}: Jacobian bound")
        status = _status(r)
        ax.set_title(f"{key}\n({status})", fontsize=9)
        ax.set_xlabel("steps back from the scored step (k)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("mean ||dLoss / d state_{T-1-k}||")
    if np.isfinite(lowest):
        axes[0][0].set_ylim(max(lowest / 10, highest * 1e-40), highest * 10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    """Parse argv (default sys.argv[1:]), train, write the PNG and print the ratios; returns
    {setting: measure(...)}."""
    ap = argparse.ArgumentParser(prog="fastrnn gradflow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", nargs="+", default=["elman", "lstm", "gru"],
                    help="cells (each in its DEFAULT_SETTING) or cell/setting keys")
    ap.add_argument("--task", default="two_sequence", choices=("two_sequence", "adding",
                                                               "latch", "temporal"))
    ap.add_argument("--steps", type=int, default=100, help="the lag (adding: T)")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--budget", type=int, default=20_000,
                    help="training sequences at most (training stops once solved)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="gradient_flow.png", help="plot file ('' for none)")
    ap.add_argument("--json", default="", help="also write the flows here")
    args = ap.parse_args(argv)

    keys = list(dict.fromkeys(setting_key(c) for c in args.cell))
    results = {}
    t0 = time.perf_counter()
    for key in keys:
        r = results[key] = measure(key, args.task, args.steps, args.hidden, args.budget,
                                   args.seed)
        print(f"{key}: {_status(r)} sequences")
        for when in ("fresh", "trained"):
            for state, flow in r[when].items():
                ratio = flow[-1] / flow[0] if flow[0] > 0 else float("nan")
                print(f"  {when:8s} ||dL/d{state}|| {len(flow) - 1} steps back / at the "
                      f"scored step: {ratio:.3g}")
    what = "task 2a, lag" if args.task == "two_sequence" else f"{args.task}, T ="
    title = (f"gradient of the last step's loss, {what} {args.steps} (hidden {args.hidden}, "
             f"fresh sequences)")
    if args.out:
        plot(results, args.out, title)
        print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f)
        print(f"wrote {args.json}")
    print(f"{time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()
