"""Largest disagreement between the Cython and NumPy backends over random problems.

    python bench/agreement.py [--problems 600]

Random shapes (N <= 7, T <= 59, I <= 9, H <= 39, O <= 7), all activations, outputs and
targets, recurrent scales up to 1.2 (some runs explode), float32 and float64. For each
problem: the loss's relative difference and, for every gradient, max|cython - numpy| /
max|numpy|. Gradients that vanished below 1e-30 are skipped (float32 subnormals).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from conftest import make_problem  # noqa: E402

import fastrnn  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=600)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(123)
    worst = {"float32": (0.0, None), "float64": (0.0, None)}
    for i in range(args.problems):
        N, T, I, H, O = (int(v) for v in rng.integers(1, [8, 60, 10, 40, 8]))
        dtype = ("float32", "float64")[i % 2]
        act = fastrnn.ACTIVATIONS[rng.integers(4)]
        out = ("linear", "softmax")[rng.integers(2)]
        tgt = ("sequence", "last")[rng.integers(2)]
        p = make_problem(N, T, I, H, O, dtype=np.dtype(dtype), output=out, target=tgt,
                         seed=i, scale=rng.uniform(0.1, 1.2))
        kw = dict(activation=act, output=out, target=tgt, input_grads=True)
        lc, gc = fastrnn.elman_loss_and_grad(**p, **kw, backend="cython")
        ln, gn = fastrnn.elman_loss_and_grad(**p, **kw, backend="numpy")
        errs = {"loss": abs(lc - ln) / max(abs(ln), 1e-300)}
        for k in gn:
            scale = float(np.abs(gn[k]).max())
            if scale > 1e-30:
                errs[k] = float(np.abs(gc[k] - gn[k]).max()) / scale
        k = max(errs, key=errs.get)
        if errs[k] > worst[dtype][0]:
            worst[dtype] = (errs[k], f"{k} of {act}/{out}/{tgt} N,T,I,H,O={N, T, I, H, O}")
    for dtype, (err, where) in worst.items():
        print(f"{dtype}: max relative disagreement {err:.3g} ({where})")


if __name__ == "__main__":
    main()
