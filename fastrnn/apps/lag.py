"""`fastrnn lag`: how far back can a plain RNN learn? The "10 steps" limit, reproduced.

For each lag (default 5, 10, 20, 50, 100) and several seeds, an Elman network is trained
on fresh sequences of a long-time-lag task until it meets the task's published success
criterion or a budget of training sequences runs out, in two settings:

  plain     SGD, small uniform random init in [-0.2, 0.2], no clipping (as in Hochreiter &
            Schmidhuber's 1997 baselines)
  clipped   SGD with global-norm clipping and an orthogonal recurrent matrix (Pascanu et
            al. 2013's clipping; Saxe et al. 2014's init)

It prints the success rate and the mean number of sequences seen, and writes a plot of
success rate against lag and of the gradient flow (||dLoss/ds|| k steps back) at the
longest lag. Runs are spread over processes (one BLAS thread each).

    fastrnn lag                          # the default sweep (H&S 1997 experiment 2a)
    fastrnn lag --task adding --lags 10 20 50 --seeds 3
"""
import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from .. import tasks
from ..diagnostics import gradient_flow
from ..model import ElmanRNN


# ---------------------------------------------------------------------------------------------
# The tasks, behind one interface: sizes, a batch maker, and the published success test

class Task:
    output = "softmax"
    target = "last"

    def sizes(self, lag):
        """(input_size, output_size)"""
        raise NotImplementedError

    def batch(self, n, lag, seed):
        """(X, Y, lengths) of n fresh sequences."""
        raise NotImplementedError

    def solved(self, model, lag):
        raise NotImplementedError


class TwoSequenceLag(Task):
    """Hochreiter & Schmidhuber 1997, 2a: success = every prediction of both sequences right."""
    target = "sequence"
    name = "2a"

    def sizes(self, lag):
        return lag + 1, lag + 1

    def batch(self, n, lag, seed):
        return (*tasks.two_sequence_lag(n, lag, seed=seed), None)

    def solved(self, model, lag):
        return tasks.two_sequence_lag_solved(model, lag)


class Adding(Task):
    """Hochreiter & Schmidhuber 1997, experiment 4: success = 99% of 1000 fresh sequences
    within 0.04 of the target."""
    output = "linear"
    name = "adding"

    def sizes(self, lag):
        return 2, 1

    def batch(self, n, lag, seed):
        X, Y, lengths = tasks.adding_problem(n, lag, seed=seed)
        return X, Y, lengths

    def solved(self, model, lag):
        return tasks.adding_problem_solved(model, lag)[0] >= 0.99


class _Classification(Task):
    """success = 99% accuracy on 1000 fresh sequences."""

    def solved(self, model, lag):
        X, Y, lengths = self.batch(1000, lag, seed=987654)
        return tasks.classification_accuracy(model, X, Y, lengths) >= 0.99


class TemporalOrder(_Classification):
    name = "temporal"

    def sizes(self, lag):
        return 6, 4

    def batch(self, n, lag, seed):
        return (*tasks.temporal_order(n, lag, seed=seed), None)


class Latch(_Classification):
    name = "latch"

    def sizes(self, lag):
        return 1, 2

    def batch(self, n, lag, seed):
        return (*tasks.latch(n, lag, seed=seed), None)


TASKS = {t.name: t for t in (TwoSequenceLag(), Adding(), TemporalOrder(), Latch())}
SETTINGS = ("plain", "clipped")


def make_model(task, lag, setting, seed, hidden):
    I, O = task.sizes(lag)
    if setting == "plain":
        model = ElmanRNN(I, hidden, O, output=task.output, seed=seed)
        rng = np.random.default_rng(seed)
        for v in model.params.values():
            v[...] = rng.uniform(-0.2, 0.2, size=v.shape)
    else:
        model = ElmanRNN(I, hidden, O, output=task.output, seed=seed, init="orthogonal")
    return model


def fit_settings(setting, lr):
    return dict(optimizer="sgd", lr=lr, clip_norm=None if setting == "plain" else 1.0)


def run(task_name, lag, setting, seed, budget, batch_size, hidden, lr, check_every):
    """Train one network; returns a dict with solved, sequences seen, seconds, and the
    gradient flow at initialisation and at the end."""
    from threadpoolctl import threadpool_limits
    task = TASKS[task_name]
    with threadpool_limits(1):
        t0 = time.perf_counter()
        model = make_model(task, lag, setting, seed, hidden)
        # probe for the gradient flow: only the last step scored, so the curve is the
        # long-lag error signal travelling back (not every step's local loss)
        Xp, Yp, lp = task.batch(64, lag, seed=10**6 + seed)
        if task.target == "sequence":
            Yp = Yp[:, -1]
        flow_init = gradient_flow(model, Xp, Yp, "last", lp)
        seen, solved = 0, False
        chunk = batch_size * check_every
        while seen < budget and not solved:
            X, Y, lengths = task.batch(chunk, lag, seed=seed * 10**7 + seen)
            model.fit(X, Y, epochs=1, batch_size=batch_size, lengths=lengths,
                      target=task.target, progress=False, max_bad_steps=10**9,
                      **fit_settings(setting, lr))
            seen += chunk
            solved = task.solved(model, lag)
        flow_end = gradient_flow(model, Xp, Yp, "last", lp)
    return {"lag": lag, "setting": setting, "seed": seed, "solved": bool(solved),
            "sequences": seen, "seconds": time.perf_counter() - t0,
            "flow_init": flow_init.tolist(), "flow_end": flow_end.tolist()}


def summarise(results, lags):
    rows = []
    for lag in lags:
        row = {"lag": lag}
        for setting in SETTINGS:
            rs = [r for r in results if r["lag"] == lag and r["setting"] == setting]
            ok = [r for r in rs if r["solved"]]
            row[setting] = {"success": len(ok) / len(rs) if rs else float("nan"),
                            "runs": len(rs),
                            "mean_sequences_to_success":
                                float(np.mean([r["sequences"] for r in ok])) if ok else None}
        rows.append(row)
    return rows


def print_table(rows, budget, file=None):
    file = sys.stdout if file is None else file     # at call time: stdout may be replaced
    print(f"\n{'lag':>5} | {'plain SGD':^28} | {'SGD + clipping + orthogonal':^28}", file=file)
    print(f"{'':>5} | {'success':>8} {'sequences to success':>19} | {'success':>8} "
          f"{'sequences to success':>19}", file=file)
    for row in rows:
        cells = []
        for setting in SETTINGS:
            c = row[setting]
            seqs = f"{c['mean_sequences_to_success']:,.0f}" if c["mean_sequences_to_success"] \
                else f"(> {budget:,})"
            cells.append(f"{100 * c['success']:7.0f}% {seqs:>19}")
        print(f"{row['lag']:>5} | {cells[0]} | {cells[1]}", file=file)


def plot(rows, results, path, task_name):
    from ..diagnostics import _pyplot
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    lags = [r["lag"] for r in rows]
    for setting in SETTINGS:
        a.plot(lags, [100 * r[setting]["success"] for r in rows], "o-", label=setting)
    a.set_xscale("log")
    a.set_xlabel("lag (steps)")
    a.set_ylabel("success rate (%)")
    a.set_title(f"task {task_name}: success vs lag")
    a.grid(True, alpha=0.3)
    a.legend()
    longest = max(lags)
    for setting in SETTINGS:
        rs = [r for r in results if r["lag"] == longest and r["setting"] == setting]
        if rs:
            b.semilogy(np.mean([r["flow_init"] for r in rs], axis=0), label=f"{setting}, init")
            b.semilogy(np.mean([r["flow_end"] for r in rs], axis=0), "--",
                       label=f"{setting}, trained")
    b.set_xlabel("steps back from the scored step")
    b.set_ylabel("mean ||dLoss_last/ds||")
    b.set_title(f"gradient of the last step's loss, lag {longest}")
    b.grid(True, which="both", alpha=0.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fastrnn lag", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="2a", choices=sorted(TASKS))
    ap.add_argument("--lags", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=50_000,
                    help="training sequences per run before giving up")
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--check-every", type=int, default=10,
                    help="test the success criterion every this many updates")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="lag.png", help="plot file ('' for none)")
    ap.add_argument("--json", default="", help="also write all results to this file")
    args = ap.parse_args(argv)

    jobs = [(args.task, lag, setting, seed, args.budget, args.batch_size, args.hidden,
             args.lr, args.check_every)
            for lag in sorted(args.lags, reverse=True)          # longest first: balance
            for setting in SETTINGS for seed in range(args.seeds)]
    t0 = time.perf_counter()
    print(f"task {args.task}: {len(jobs)} runs (lags {args.lags}, {args.seeds} seeds, "
          f"budget {args.budget:,} sequences each) on {args.jobs} processes", flush=True)
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run, *zip(*jobs)))
    else:
        results = [run(*j) for j in jobs]
    rows = summarise(results, sorted(args.lags))
    print_table(rows, args.budget)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if args.out:
        try:
            plot(rows, results, args.out, args.task)
            print(f"wrote {args.out}")
        except ImportError as exc:
            print(f"no plot: {exc}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "table": rows, "runs": results}, f, indent=1)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
