"""`fastrnn gradflow`: the gradient-flow plot of a freshly initialised and of a trained
model on the latch task (Bengio et al. 1994), written as a PNG.

    fastrnn gradflow                                 # T=50, uniform init -> gradient_flow.png
    fastrnn gradflow --init orthogonal --steps 100

The curves are fastrnn.diagnostics.gradient_flow (||dLoss/ds|| k steps back from the scored
last step), drawn with fastrnn.diagnostics.plot_gradient_flow, each with its Jacobian bound
(max|phi'| * ||W_s||_2)^k dashed.
"""
import argparse

import numpy as np

from .. import tasks
from ..diagnostics import gradient_flow, jacobian_bound, plot_gradient_flow
from ..model import ElmanRNN


def main(argv=None):
    """Parse argv (default sys.argv[1:]), train, write the PNG and print the ratios; returns
    the flows {"initialised": (T,), "trained": (T,)}."""
    ap = argparse.ArgumentParser(prog="fastrnn gradflow", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50, help="sequence length T")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--init", default="uniform", choices=("uniform", "glorot", "orthogonal",
                                                          "identity"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="gradient_flow.png")
    args = ap.parse_args(argv)

    X, Y = tasks.latch(512, args.steps, seed=0, dtype="float64")   # float64: no underflow
    model = ElmanRNN(1, args.hidden, 2, output="softmax", init=args.init, seed=0,
                     dtype="float64")
    steps = np.arange(args.steps)
    flows = {"initialised": gradient_flow(model, X, Y)}
    bounds = {"bound, initialised": flows["initialised"][0] * jacobian_bound(model, steps)}
    history = model.fit(X, Y, target="last", epochs=args.epochs, lr=0.01, progress=False)
    flows["trained"] = gradient_flow(model, X, Y)
    bounds["bound, trained"] = flows["trained"][0] * jacobian_bound(model, steps)
    fig = plot_gradient_flow(flows, bounds, title=f"latch task, T={args.steps}, "
                                                  f"init={args.init}")
    fig.savefig(args.out, dpi=110)
    for label, flow in flows.items():
        ratio = flow[-1] / flow[0]
        print(f"{label:12s} ||dL/ds|| {args.steps - 1} steps back / at the end: {ratio:.3g}")
    print(f"final training loss {history['loss'][-1]:.4f}; wrote {args.out}")
    return flows


if __name__ == "__main__":
    main()
