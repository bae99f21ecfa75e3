"""Input validation at the public boundary (fastrnn._validate, through the public API).

Every bad input to elman_forward, elman_backward, elman_predict, elman_loss_and_grad and
ElmanRNN must raise the documented exception (TypeError for a wrong type or dtype,
ValueError for a wrong shape or value, MemoryError for a request larger than available
memory) with a message that names the argument, and where it has them, the bad shape or
dtype. Awkward but valid inputs (non-contiguous, Fortran-ordered, read-only, big-endian,
nested lists, h0=None) must give the same result as clean C-contiguous arrays, and no call
may modify its inputs.

Several cases here were found failing and then fixed: huge broadcast inputs used to be
scanned and copied before the size checks, unparseable dtype strings were accepted, and the
model did not check params against its own sizes.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn import ElmanRNN

BACKENDS = ("cython", "numpy")
N, T, I, H, O = 2, 3, 4, 5, 3

FUNCS = {
    "forward": fastrnn.elman_forward,
    "backward": fastrnn.elman_backward,
    "predict": fastrnn.elman_predict,
    "loss": fastrnn.elman_loss_and_grad,
}
ARGS = {
    "forward": ("X", "h0", "W_x", "W_s", "b"),
    "backward": ("X", "h0", "W_x", "W_s", "b", "S", "dS"),
    "predict": ("X", "h0", "W_x", "W_s", "b", "W_y", "b_y"),
    "loss": ("X", "Y", "h0", "W_x", "W_s", "b", "W_y", "b_y"),
}
DIMS = {"X": "(N, T, I)", "h0": "(N, H)", "W_x": "(I, H)", "W_s": "(H, H)", "b": "(H,)",
        "W_y": "(H, O)", "b_y": "(O,)", "S": "(N, T, H)", "dS": "(N, T, H)", "Y": "(N, T, O)"}

# (function, argument) pairs: every array argument of every function (Y: linear targets)
FUNC_ARGS = [(f, a) for f, names in ARGS.items() for a in names]
FUNC_WEIGHTS = [(f, a) for f, a in FUNC_ARGS if a != "X"]


def make(func, dtype=np.float64, output="linear", target="sequence", seed=0,
         N=N, T=T, I=I, H=H, O=O):
    """(args, kw): valid keyword arguments for FUNCS[func] (arrays, then hyperparameters)."""
    rng = np.random.default_rng(seed)

    def r(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    full = {"X": r(N, T, I), "h0": r(N, H, s=0.5), "W_x": r(I, H, s=0.5),
            "W_s": r(H, H, s=0.3), "b": r(H, s=0.2), "W_y": r(H, O, s=0.5),
            "b_y": r(O, s=0.2), "S": np.tanh(r(N, T, H)), "dS": r(N, T, H)}
    seq = target == "sequence"
    if output == "linear":
        full["Y"] = r(N, T, O) if seq else r(N, O)
    else:
        full["Y"] = rng.integers(0, O, size=(N, T) if seq else (N,))
    args = {k: full[k] for k in ARGS[func]}
    kw = {}
    if func in ("predict", "loss"):
        kw["output"] = output
    if func == "loss":
        kw["target"] = target
    return args, kw


def call(func, args, backend, **kw):
    return FUNCS[func](**args, backend=backend, **kw)


def shape_re(shape):
    return re.escape(str(tuple(shape)))


def raises_for(func, backend, exc, pattern, output="linear", target="sequence",
               dtype=np.float64, **replace):
    """Assert FUNCS[func] with the arguments in replace swapped in raises exc matching
    pattern."""
    args, kw = make(func, dtype=dtype, output=output, target=target)
    args.update(replace)
    with pytest.raises(exc, match=pattern):
        call(func, args, backend, **kw)


# =============================================================================================
# Wrong number of dimensions

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["extra_dim", "missing_dim"])
@pytest.mark.parametrize("func,arg", FUNC_ARGS)
def test_wrong_ndim(func, arg, how, backend):
    args, _ = make(func)
    good = args[arg]
    bad = good[..., None] if how == "extra_dim" else good[0]
    bad = np.asarray(bad)
    pattern = (rf"^{arg} must be {good.ndim}-D with shape {re.escape(DIMS[arg])}; "
               rf"got shape {shape_re(bad.shape)}$")
    raises_for(func, backend, ValueError, pattern, **{arg: bad})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func", FUNCS)
def test_scalar_X(func, backend):
    raises_for(func, backend, ValueError, r"^X must be 3-D .*got shape \(\)$", X=1.5)


# =============================================================================================
# Mismatched shapes

RECURRENCE_SHAPES = [
    # (argument, bad shape, expected message)
    ("W_x", (I + 1, H), r"^W_x must have shape \(I, H\) = \(4, 5\) to match X \(2, 3, 4\) "
                        r"and W_s \(5, 5\); got \(5, 5\)$"),
    ("W_x", (I, H + 1), r"^W_x must have shape \(I, H\) = \(4, 5\) .*; got \(4, 6\)$"),
    ("W_s", (H, H + 1), r"^W_s must be square with shape \(H, H\); got \(5, 6\)$"),
    ("W_s", (H + 1, H), r"^W_s must be square with shape \(H, H\); got \(6, 5\)$"),
    ("b", (H + 1,), r"^b must have shape \(H,\) = \(5,\) to match W_s \(5, 5\); got \(6,\)$"),
    ("b", (H - 1,), r"^b must have shape \(H,\) = \(5,\) .*; got \(4,\)$"),
    ("h0", (N + 1, H), r"^h0 must have shape \(N, H\) = \(2, 5\) .*; got \(3, 5\)$"),
    ("h0", (N, H + 1), r"^h0 must have shape \(N, H\) = \(2, 5\) .*; got \(2, 6\)$"),
]
OUTPUT_SHAPES = [
    ("W_y", (H + 1, O), r"^W_y must have shape \(H, O\) with H = 5 to match W_s; "
                        r"got \(6, 3\)$"),
    ("W_y", (H - 1, O), r"^W_y must have shape \(H, O\) with H = 5 .*got \(4, 3\)$"),
    ("b_y", (O + 1,), r"^b_y must have shape \(O,\) = \(3,\) to match W_y \(5, 3\); "
                      r"got \(4,\)$"),
]
STATE_SHAPES = [
    (name, shape, rf"^{name} must have shape \(N, T, H\) = \(2, 3, 5\) .*; "
                  rf"got {shape_re(shape)}$")
    for name in ("S", "dS") for shape in [(N, T + 1, H), (N, T, H + 1), (N + 1, T, H)]
]
SHAPE_CASES = ([(f, *c) for f in FUNCS for c in RECURRENCE_SHAPES]
               + [(f, *c) for f in ("predict", "loss") for c in OUTPUT_SHAPES]
               + [("backward", *c) for c in STATE_SHAPES])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func,arg,shape,pattern", SHAPE_CASES)
def test_mismatched_shape(func, arg, shape, pattern, backend):
    bad = np.full(shape, 0.5)
    raises_for(func, backend, ValueError, pattern, **{arg: bad})


Y_SHAPE_CASES = [
    # (output, target, bad Y shape, expected message)
    ("linear", "sequence", (N, T, O + 1),
     r"^Y must have shape \(N, T, O\) = \(2, 3, 3\) to match target='sequence', X and W_y; "
     r"got \(2, 3, 4\)$"),
    ("linear", "sequence", (N, T + 1, O), r"^Y must have shape \(N, T, O\) .*got \(2, 4, 3\)$"),
    ("linear", "sequence", (N + 1, T, O), r"^Y must have shape \(N, T, O\) .*got \(3, 3, 3\)$"),
    ("linear", "sequence", (N, O),
     r"^Y must have shape \(N, T, O\) = \(2, 3, 3\) for target='sequence'; got \(2, 3\), one "
     r"target per sequence: target='sequence' expects one target per step, \(N, T, O\); for "
     r"one per sequence, scored at its last step, pass target='last'$"),
    ("linear", "last", (N, O + 1),
     r"^Y must have shape \(N, O\) = \(2, 3\) to match target='last', X and W_y; got \(2, 4\)$"),
    ("linear", "last", (N + 1, O), r"^Y must have shape \(N, O\) = \(2, 3\) .*got \(3, 3\)$"),
    ("linear", "last", (N, T, O),
     r"^Y must have shape \(N, O\) = \(2, 3\) for target='last'; got \(2, 3, 3\), one target "
     r"per step: target='last' expects one target per sequence, \(N, O\), scored at its last "
     r"step. Pass target='sequence' to score every step, or Y\[:, -1\]"),
    ("softmax", "sequence", (N, T + 1),
     r"^Y must have shape \(N, T\) = \(2, 3\) for output='softmax', target='sequence'; "
     r"got \(2, 4\)$"),
    ("softmax", "sequence", (N,),
     r"^Y must have shape \(N, T\) = \(2, 3\) .*got \(2,\), one label per sequence: "
     r"target='sequence' expects one label per step, \(N, T\);"),
    ("softmax", "sequence", (N, T, 1), r"^Y must have shape \(N, T\) .*got \(2, 3, 1\)$"),
    ("softmax", "last", (N + 1,),
     r"^Y must have shape \(N,\) = \(2,\) for output='softmax', target='last'; got \(3,\)$"),
    ("softmax", "last", (N, T),
     r"^Y must have shape \(N,\) = \(2,\) .*got \(2, 3\), one label per step: target='last' "
     r"expects one label per sequence, \(N,\)"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output,target,shape,pattern", Y_SHAPE_CASES)
def test_Y_shape(output, target, shape, pattern, backend):
    bad = np.full(shape, 0.5) if output == "linear" else np.zeros(shape, np.int64)
    raises_for("loss", backend, ValueError, pattern, output=output, target=target, Y=bad)


# =============================================================================================
# Dtypes

BAD_DTYPES = {
    "int64": lambda a: (a * 10).astype(np.int64),
    "int32": lambda a: (a * 10).astype(np.int32),
    "uint8": lambda a: np.abs(a * 10).astype(np.uint8),
    "bool": lambda a: a > 0,
    "complex128": lambda a: a.astype(np.complex128),
    "complex64": lambda a: a.astype(np.complex64),
    "float16": lambda a: a.astype(np.float16),
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bytes": lambda a: a.astype("S8"),
    "int_list": lambda a: (a * 10).astype(np.int64).tolist(),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("func,arg", FUNC_ARGS)
def test_unsupported_dtype(func, arg, dtype, backend):
    args, _ = make(func)
    bad = BAD_DTYPES[dtype](args[arg])
    got = np.asarray(bad).dtype
    pattern = rf"^{arg} must be a float32 or float64 array; got dtype {re.escape(str(got))}$"
    raises_for(func, backend, TypeError, pattern, **{arg: bad})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arg", ["X", "W_x", "h0"])
def test_unconvertible_ragged_list(arg, backend):
    args, _ = make("forward")
    bad = args[arg].tolist()
    bad[0] = bad[0][:-1]                      # ragged: not an array
    raises_for("forward", backend, TypeError,
               rf"^{arg} must be a float array of shape {re.escape(DIMS[arg])}; "
               rf"it cannot be converted to an array", **{arg: bad})


def test_ragged_X_points_to_lengths():
    """A list of sequences of different lengths: the message says so and how to pass them
    (padded, with lengths=), not NumPy's "inhomogeneous shape"."""
    m = fastrnn.ElmanRNN(3, 4, 1)
    seqs = [np.zeros((5, 3), np.float32), np.zeros((3, 3), np.float32)]
    for call in (lambda X: m.forward(X), lambda X: m.fit(X, np.zeros((2, 5, 1), np.float32)),
                 lambda X: m.loss_and_grad(X, np.zeros((2, 5, 1), np.float32)),
                 lambda X: fastrnn.elman_forward(X, None, *(m.params[k] for k in
                                                            ("W_x", "W_s", "b")))):
        for X in (seqs, [a.tolist() for a in seqs]):
            with pytest.raises(TypeError) as info:
                call(X)
            msg = str(info.value)
            assert msg.startswith("X must be a float array of shape (N, T, I); it cannot be "
                                  "converted to an array: it is a list of sequences of "
                                  "different lengths (X[0] has 5 steps, X[1] has 3)"), msg
            assert "lengths=" in msg and "(here 5, 3)" in msg
            assert "inhomogeneous" not in msg
    with pytest.raises(TypeError, match=r"ragged list: X\[0\]\[0\] has 3 entries but "
                                        r"X\[1\]\[0\] has 2 entries \(axis 2 of \(N, T, I\)\)"):
        m.forward([[[0.0] * 3] * 5, [[0.0] * 2] * 5])
    with pytest.raises(TypeError, match=r"^Y must be an array of shape \(N, T, O\); .* of "
                                        r"different lengths \(Y\[0\] has 5 steps, Y\[1\] has 4\)"):
        m.loss_and_grad(np.zeros((2, 5, 3), np.float32), [[[0.0]] * 5, [[0.0]] * 4])


def test_target_last_with_per_step_targets_through_the_model():
    m = fastrnn.ElmanRNN(3, 4, 1)
    X = np.zeros((4, 5, 3), np.float32)
    for Y in (np.zeros((4, 5, 1), np.float32), np.zeros((4, 5), np.float32)):
        for call in (m.loss_and_grad, lambda X, Y, target: m.fit(X, Y, target=target,
                                                                 progress=False)):
            with pytest.raises(ValueError, match=r"^Y must have shape \(N, O\) = \(4, 1\) "
                                                 r"for target='last'; got \(4, 5(, 1)?\), one "
                                                 r"target per step: target='last' expects"):
                call(X, Y, target="last")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype,w_dtype", [("float32", "float64"), ("float64", "float32")])
@pytest.mark.parametrize("func,arg", FUNC_WEIGHTS)
def test_mixed_float_dtypes(func, arg, x_dtype, w_dtype, backend):
    args, _ = make(func, dtype=x_dtype)
    bad = args[arg].astype(w_dtype)
    pattern = (rf"^{arg} has dtype {w_dtype} but X has dtype {x_dtype}; all arrays must "
               rf"share one float dtype")
    raises_for(func, backend, TypeError, pattern, dtype=x_dtype, **{arg: bad})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("dtype", ["float64", "float32", "bool", "object", "complex128"])
def test_softmax_labels_must_be_integers(dtype, target, backend):
    args, _ = make("loss", output="softmax", target=target)
    bad = args["Y"].astype(dtype)
    raises_for("loss", backend, TypeError,
               rf"^Y must hold integer class labels for output='softmax'; got dtype {dtype}",
               output="softmax", target=target, Y=bad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", ["sequence", "last"])
@pytest.mark.parametrize("label,dtype", [(-1, "int64"), (-5, "int8"), (O, "int64"),
                                         (O + 7, "uint8"), (2**40, "int64"),
                                         (2**63 + 1, "uint64")])
def test_softmax_labels_out_of_range(label, dtype, target, backend):
    args, _ = make("loss", output="softmax", target=target)
    bad = args["Y"].astype(dtype)
    bad.flat[-1] = label
    raises_for("loss", backend, ValueError,
               rf"^Y class labels must lie in \[0, O\) = \[0, 3\); got values from .*{label}",
               output="softmax", target=target, Y=bad)


# =============================================================================================
# Non-finite values

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("func,arg", FUNC_ARGS)
def test_non_finite(func, arg, dtype, value, backend):
    args, _ = make(func, dtype=dtype)
    bad = args[arg].copy()
    bad.flat[bad.size // 2] = value
    pattern = rf"^{arg} contains NaN or inf \(shape {shape_re(bad.shape)}\)"
    raises_for(func, backend, ValueError, pattern, dtype=dtype, **{arg: bad})


# =============================================================================================
# Empty dimensions

EMPTY_CASES = ([(f, d, "X") for f in FUNCS for d in "NTI"]
               + [(f, "H", "W_s") for f in FUNCS]
               + [(f, "O", "W_y") for f in ("predict", "loss")])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func,dim,arg", EMPTY_CASES)
def test_empty_dimension(func, dim, arg, backend):
    args, kw = make(func, **{dim: 0})
    pattern = rf"^{arg} must not be empty; got shape {shape_re(args[arg].shape)}"
    with pytest.raises(ValueError, match=pattern):
        call(func, args, backend, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func,arg", [(f, a) for f, a in FUNC_ARGS if a != "X"])
def test_empty_argument_alone(func, arg, backend):
    """One empty array among otherwise valid ones is named, not a later shape mismatch."""
    args, _ = make(func)
    bad = args[arg][..., :0]
    raises_for(func, backend, ValueError,
               rf"^{arg} must not be empty; got shape {shape_re(bad.shape)}", **{arg: bad})


# =============================================================================================
# Bad hyperparameter strings

CHOICE_CASES = ([(f, "activation", v) for f in FUNCS for v in ("softplus", "Tanh", None, 1)]
                + [(f, "output", v) for f in ("predict", "loss") for v in ("sigmoid", None)]
                + [("loss", "target", v) for v in ("first", "all", None)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func,param,value", CHOICE_CASES)
def test_bad_choice(func, param, value, backend):
    args, kw = make(func)
    kw[param] = value
    with pytest.raises(ValueError, match=rf"^{param} must be one of .*; got {re.escape(repr(value))}$"):
        call(func, args, backend, **kw)


@pytest.mark.parametrize("value", ["torch", "Cython", "", None])
@pytest.mark.parametrize("func", FUNCS)
def test_bad_backend(func, value):
    args, kw = make(func)
    with pytest.raises(ValueError, match=rf"^backend must be one of 'cython', 'numpy'; "
                                         rf"got {re.escape(repr(value))}$"):
        FUNCS[func](**args, backend=value, **kw)


def test_choice_messages_list_the_options():
    args, _ = make("forward")
    with pytest.raises(ValueError, match=r"'identity', 'tanh', 'relu', 'sigmoid'; "
                                         r"got 'softplus'"):
        fastrnn.elman_forward(**args, activation="softplus")


# =============================================================================================
# Dimensions too large for 32-bit BLAS ints, faked cheaply with np.broadcast_to.
#
# Run in a child process under RLIMIT_AS (current size + 512 MiB) so that a validator that
# copies or scans the huge broadcast array fails fast with numpy's own "Unable to allocate"
# MemoryError instead of eating gigabytes. available_memory() is pinned in the child, to
# model a machine with plenty of memory (where only the size check can stop the call) and
# one with scarce memory (where fastrnn's MemoryError check may fire first).

HUGE_SCRIPT = textwrap.dedent(r"""
    import json, resource, sys, time
    import numpy as np
    import fastrnn
    import fastrnn._validate as V

    def vmsize():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    specs = json.loads(sys.stdin.read())
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vmsize() + (512 << 20), hard))
    f32 = np.dtype(np.float32)
    results = {}
    for cid, s in specs.items():
        V.available_memory = (lambda m: (lambda: m))(s["avail"])
        n, t, i = s["shape"]
        h, o, be = s["H"], s["O"], s["backend"]
        X = np.broadcast_to(np.zeros((), f32.newbyteorder(s["order"])), (n, t, i))
        W_x, W_s, b = np.zeros((i, h), f32), np.zeros((h, h), f32), np.zeros(h, f32)
        W_y, b_y = np.zeros((h, o), f32), np.zeros(o, f32)
        S = np.broadcast_to(np.zeros((), f32), (n, t, h))
        Ylin = np.broadcast_to(np.zeros((), f32), (n, t, o))
        Ylab = np.broadcast_to(np.zeros((), np.int64), (n, t))
        func = s["func"]
        start = time.perf_counter()
        try:
            if func == "forward":
                fastrnn.elman_forward(X, None, W_x, W_s, b, backend=be)
            elif func == "backward":
                fastrnn.elman_backward(X, None, W_x, W_s, b, S, S, backend=be)
            elif func == "predict":
                fastrnn.elman_predict(X, None, W_x, W_s, b, W_y, b_y, backend=be)
            elif func == "loss_linear":
                fastrnn.elman_loss_and_grad(X, Ylin, None, W_x, W_s, b, W_y, b_y, backend=be)
            elif func == "loss_softmax":
                fastrnn.elman_loss_and_grad(X, Ylab, None, W_x, W_s, b, W_y, b_y,
                                            output="softmax", backend=be)
            elif func == "model_forward":
                fastrnn.ElmanRNN(i, h, o, backend=be).forward(X)
            elif func == "model_loss":
                fastrnn.ElmanRNN(i, h, o, backend=be).loss_and_grad(X, Ylin)
            res = {"type": None, "msg": "no exception"}
        except Exception as exc:
            res = {"type": type(exc).__name__, "msg": str(exc)}
        res["seconds"] = time.perf_counter() - start
        results[cid] = res
    print(json.dumps(results))
""")

HUGE_FUNCS = ("forward", "backward", "predict", "loss_linear", "loss_softmax",
              "model_forward", "model_loss")
HUGE_SHAPES = {
    # name: ((N, T, I), H, O, functions, the BLAS size that overflows)
    "NT": ((2**16, 2**16, 1), 2, 1, HUGE_FUNCS, "N*T"),
    "N": ((2**31, 1, 1), 2, 1, ("forward", "loss_linear"), "N"),
    "T": ((1, 2**31, 1), 2, 1, ("forward", "predict"), "T"),
    "TH": ((1, 2**30, 1), 2, 1, ("forward", "backward"), "T*H"),
    "TO": ((1, 2**30, 1), 1, 2, ("predict", "loss_linear"), "T*O"),
    "NT_bigendian": ((2**16, 2**16, 1), 2, 1, ("forward", "model_forward"), "N*T"),
}
MEMORY = {"plenty": 1 << 42, "scarce": 1 << 30}


def _huge_cases():
    specs, params = {}, []
    for name, (shape, h, o, funcs, label) in HUGE_SHAPES.items():
        for func in funcs:
            for mem, avail in MEMORY.items():
                for be in BACKENDS:
                    cid = f"{name}-{func}-{mem}-{be}"
                    specs[cid] = {"shape": shape, "H": h, "O": o, "func": func,
                                  "backend": be, "avail": avail,
                                  "order": ">" if "bigendian" in name else "="}
                    params.append(pytest.param(cid, label, id=cid))
    return specs, params


HUGE_SPECS, HUGE_PARAMS = _huge_cases()


@pytest.fixture(scope="module")
def huge_results():
    # cwd: the directory holding the fastrnn this process imported, so that the child
    # (python -c puts its cwd first on sys.path) imports the same one, not a source tree.
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    proc = subprocess.run([sys.executable, "-c", HUGE_SCRIPT], input=json.dumps(HUGE_SPECS),
                          cwd=home,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("cid,label", HUGE_PARAMS)
def test_too_large_for_blas(huge_results, cid, label):
    res = huge_results[cid]
    assert not res["msg"].startswith("Unable to allocate"), (
        f"validation tried to allocate the huge array: {res['type']}: {res['msg']}")
    if res["type"] == "ValueError":
        assert re.search(rf"(^|\W){re.escape(label)} = \d+ is too large for 32-bit BLAS "
                         rf"\(must be < 2\*\*31\)", res["msg"]), res
    else:
        assert res["type"] == "MemoryError", res
        assert re.search(r"^X \(shape .*\) needs [\d.]+ GiB of buffers but only [\d.]+ GiB "
                         r"of memory is available$", res["msg"]), res


# =============================================================================================
# ElmanRNN constructor

SIZE_ARGS = ("input_size", "hidden_size", "output_size")
BAD_SIZES = [
    (0, ValueError, r"must be a positive integer; got 0$"),
    (-1, ValueError, r"must be a positive integer; got -1$"),
    (2**31, ValueError, r" = 2147483648 is too large: BLAS dimensions must be < 2\*\*31$"),
    (2.5, TypeError, r"must be a positive integer; got 2.5 of type float$"),
    (3.0, TypeError, r"must be a positive integer; got 3.0 of type float$"),
    (np.float64(3), TypeError, r"must be a positive integer; got .*3.* of type float64$"),
    (True, TypeError, r"must be a positive integer; got True$"),
    (np.True_, TypeError, r"must be a positive integer; got .*True.*$"),
    ("3", TypeError, r"must be a positive integer; got '3' of type str$"),
    (None, TypeError, r"must be a positive integer; got None of type NoneType$"),
]


@pytest.mark.parametrize("value,exc,pattern", BAD_SIZES, ids=lambda x: repr(x)[:20])
@pytest.mark.parametrize("name", SIZE_ARGS)
def test_constructor_bad_size(name, value, exc, pattern):
    sizes = dict(input_size=I, hidden_size=H, output_size=O)
    sizes[name] = value
    with pytest.raises(exc, match=rf"^{name}{pattern}" if pattern.startswith(" ")
                       else rf"^{name} {pattern}"):
        ElmanRNN(**sizes)


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), np.uint8(3), 3])
def test_constructor_integer_like_sizes_work(value):
    m = ElmanRNN(value, value, value)
    assert (m.input_size, m.hidden_size, m.output_size) == (3, 3, 3)
    assert all(type(v) is int for v in (m.input_size, m.hidden_size, m.output_size))



@pytest.mark.parametrize("dtype", [
    "int32", "float16", "complex128", "bool", np.int64, np.float16, "object", ("f4", 2),
    ">f4", "f4,f4",
    "bogus", "flaot32", "float23"], ids=repr)
def test_constructor_bad_dtype(dtype):
    with pytest.raises(TypeError,
                       match=rf"^dtype must be float32 or float64; got {re.escape(repr(dtype))}$"):
        ElmanRNN(I, H, O, dtype=dtype)


def test_constructor_dtype_none_is_rejected():
    with pytest.raises(TypeError, match=r"^dtype must be float32 or float64; got None$"):
        ElmanRNN(I, H, O, dtype=None)


@pytest.mark.parametrize("dtype,want", [("float32", np.float32), ("float64", np.float64),
                                        (np.float32, np.float32), ("f8", np.float64),
                                        (np.dtype("float32"), np.float32)])
def test_constructor_float_dtypes_work(dtype, want):
    m = ElmanRNN(I, H, O, dtype=dtype)
    assert m.dtype == want
    assert all(p.dtype == want for p in m.params.values())


@pytest.mark.parametrize("param,value", [("activation", "softplus"), ("activation", None),
                                         ("output", "sigmoid"), ("output", "Linear"),
                                         ("backend", "torch"), ("backend", None)])
def test_constructor_bad_choice(param, value):
    with pytest.raises(ValueError,
                       match=rf"^{param} must be one of .*; got {re.escape(repr(value))}$"):
        ElmanRNN(I, H, O, **{param: value})


# =============================================================================================
# ElmanRNN.forward / loss_and_grad

def model_and_data(backend, dtype="float32", output="linear", target="sequence"):
    m = ElmanRNN(I, H, O, output=output, dtype=dtype, backend=backend)
    args, _ = make("loss", dtype=dtype, output=output, target=target)
    return m, args["X"], args["Y"]


def model_call(m, method, X, Y, **kw):
    return m.forward(X, **kw) if method == "forward" else m.loss_and_grad(X, Y, **kw)


METHODS = ("forward", "loss_and_grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad_I", [I - 1, I + 1])
def test_model_wrong_input_size(bad_I, method, backend):
    m, X, Y = model_and_data(backend)
    X = np.zeros((N, T, bad_I), np.float32)
    with pytest.raises(ValueError, match=rf"^X must have shape \(N, T, I\) with I = "
                                         rf"input_size = {I}; got \(2, 3, {bad_I}\)$"):
        model_call(m, method, X, Y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_dtype,x_dtype", [("float32", "float64"),
                                                 ("float64", "float32")])
def test_model_wrong_X_dtype(model_dtype, x_dtype, method, backend):
    m, X, Y = model_and_data(backend, dtype=model_dtype)
    with pytest.raises(TypeError, match=rf"^X has dtype {x_dtype} but .*{model_dtype}"):
        model_call(m, method, X.astype(x_dtype), Y)


@pytest.mark.parametrize("method", METHODS)
def test_model_wrong_X_dtype_message_names_the_model(method):
    m, X, Y = model_and_data("numpy", dtype="float32")
    with pytest.raises(TypeError) as info:
        model_call(m, method, X.astype(np.float64), Y)
    msg = str(info.value)
    assert "but X has dtype" not in msg, msg
    assert re.search(r"model|ElmanRNN|params", msg), msg


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", ["int", "bool", "str", "ndim", "nan", "empty"])
def test_model_bad_X(bad, method, backend):
    m, X, Y = model_and_data(backend)
    X, exc, pattern = {
        "int": (X.astype(np.int32), TypeError, r"^X must be a float32 or float64 array; "
                                               r"got dtype int32$"),
        "bool": (X > 0, TypeError, r"^X must be a float32 or float64 array; got dtype bool$"),
        "str": ("X", TypeError, r"^X must be a float32 or float64 array; got dtype <U1$"),
        "ndim": (X[0], ValueError, r"^X must be 3-D with shape \(N, T, I\); "
                                   r"got shape \(3, 4\)$"),
        "nan": (np.where(X > 0, np.float32(np.nan), X), ValueError,
                r"^X contains NaN or inf \(shape \(2, 3, 4\)\)"),
        "empty": (X[:, :0], ValueError, r"^X must not be empty; got shape \(2, 0, 4\)"),
    }[bad]
    with pytest.raises(exc, match=pattern):
        model_call(m, method, X, Y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
def test_model_bad_h0(method, backend):
    m, X, Y = model_and_data(backend)
    with pytest.raises(ValueError, match=r"^h0 must have shape \(N, H\) = \(2, 5\) .*"
                                         r"got \(2, 4\)$"):
        model_call(m, method, X, Y, h0=np.zeros((N, H - 1), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_bad_target_and_labels(backend):
    m, X, Y = model_and_data(backend)
    with pytest.raises(ValueError, match=r"^target must be one of 'sequence', 'last'; "
                                         r"got 'first'$"):
        m.loss_and_grad(X, Y, target="first")
    with pytest.raises(ValueError, match=r"^Y must have shape \(N, O\) = \(2, 3\) .*"
                                         r"got \(2, 2\)$"):
        m.loss_and_grad(X, Y[:, -1, :2].copy(), target="last")
    ms, X, labels = model_and_data(backend, output="softmax")
    with pytest.raises(TypeError, match=r"^Y must hold integer class labels .*float32"):
        ms.loss_and_grad(X, labels.astype(np.float32))
    with pytest.raises(ValueError, match=r"^Y class labels must lie in \[0, O\) = \[0, 3\)"):
        ms.loss_and_grad(X, labels - 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", ["W_x", "W_s", "b", "W_y", "b_y"])
def test_model_missing_param(key, method, backend):
    m, X, Y = model_and_data(backend)
    del m.params[key]
    with pytest.raises(KeyError, match=rf"model.params is missing \['{key}'\]; "
                                       rf"expected keys"):
        model_call(m, method, X, Y)


WRONG_PARAM_SHAPES = [("W_x", (I + 1, H)), ("W_x", (I, H + 1)), ("W_x", (1, I, H)),
                      ("W_s", (H, H + 1)), ("W_s", (H + 1, H + 1)), ("W_s", (H,)),
                      ("b", (H + 1,)), ("b", (1, H)),
                      ("W_y", (H + 1, O)), ("W_y", (H, O + 1)), ("W_y", (H * O,)),
                      ("b_y", (O + 1,)), ("b_y", (O, 1))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key,shape", WRONG_PARAM_SHAPES)
def test_model_param_wrong_shape(key, shape, method, backend):
    m, X, Y = model_and_data(backend)
    m.params[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=rf"\b{key}\b.*{shape_re(shape)}"):
        model_call(m, method, X, Y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("key", ["W_x", "W_s", "b", "W_y", "b_y"])
def test_model_param_wrong_dtype_or_nan(key, method, backend):
    m, X, Y = model_and_data(backend)
    good = m.params[key]
    m.params[key] = good.astype(np.float64)
    with pytest.raises(TypeError, match=rf"^{key} has dtype float64 but X has dtype float32"):
        model_call(m, method, X, Y)
    bad = good.copy()
    bad.flat[0] = np.nan
    m.params[key] = bad
    with pytest.raises(ValueError, match=rf"^{key} contains NaN or inf"):
        model_call(m, method, X, Y)


@pytest.mark.parametrize("method", METHODS)
def test_model_consistent_but_wrong_param_shapes(method):
    m = ElmanRNN(I, H, O, backend="numpy")
    X = np.zeros((N, T, I), np.float32)
    Y = np.zeros((N, T, O + 1), np.float32)      # matches the replaced output layer
    m.params["W_y"] = np.zeros((H, O + 1), np.float32)
    m.params["b_y"] = np.zeros(O + 1, np.float32)
    with pytest.raises(ValueError, match=r"W_y"):
        model_call(m, method, X, Y)


# =============================================================================================
# Awkward but valid inputs: same result as clean C-contiguous arrays

CONFIGS = {
    "forward": ("forward", {}),
    "backward": ("backward", {}),
    "predict-linear": ("predict", {"output": "linear"}),
    "predict-softmax": ("predict", {"output": "softmax"}),
    "loss-linear-sequence": ("loss", {"output": "linear", "target": "sequence"}),
    "loss-linear-last": ("loss", {"output": "linear", "target": "last"}),
    "loss-softmax-sequence": ("loss", {"output": "softmax", "target": "sequence"}),
    "loss-softmax-last": ("loss", {"output": "softmax", "target": "last"}),
}


def make_config(config, dtype=np.float64):
    func, opts = CONFIGS[config]
    args, kw = make(func, dtype=dtype, **opts)
    if func == "loss":
        kw["input_grads"] = True
    return func, args, kw


def noncontig(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    out = big[..., ::2]
    assert not out.flags.c_contiguous
    return out


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def bigendian(a):
    out = a.astype(a.dtype.newbyteorder(">"))
    assert not out.dtype.isnative
    return out


VARIANTS = {
    "noncontiguous": noncontig,
    "fortran": np.asfortranarray,
    "transposed_view": lambda a: a.T.copy().T,       # Fortran-ordered views of C arrays
    "readonly": readonly,
    "bigendian": bigendian,
    "lists": lambda a: a.tolist(),
}


def assert_same(got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-6 if isinstance(got, np.float32) else 1e-12)
    else:
        assert isinstance(got, np.ndarray)
        assert got.shape == want.shape and got.dtype == want.dtype
        tol = 1e-5 if want.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", CONFIGS)
def test_awkward_inputs_match_clean(config, variant, dtype, backend):
    if variant == "lists" and dtype == "float32":
        pytest.skip("nested Python lists of floats are float64")
    func, args, kw = make_config(config, dtype)
    want = call(func, args, backend, **kw)
    awkward = {k: VARIANTS[variant](v) for k, v in args.items()}
    got = call(func, awkward, backend, **kw)
    assert_same(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_spec_examples_noncontiguous_X_and_fortran_weights(backend):
    rng = np.random.default_rng(1)
    X_full = rng.standard_normal((N, 2 * T, I))
    X = X_full[:, ::2]
    args, _ = make("forward")
    args["X"] = X
    args["W_x"] = np.asfortranarray(args["W_x"])
    args["W_s"] = np.asfortranarray(args["W_s"])
    assert not X.flags.c_contiguous and not args["W_s"].flags.c_contiguous
    clean = {k: np.ascontiguousarray(v) for k, v in args.items()}
    assert_same(fastrnn.elman_forward(**args, backend=backend),
                fastrnn.elman_forward(**clean, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS)
def test_h0_none_equals_zeros(config, dtype, backend):
    func, args, kw = make_config(config, dtype)
    args["h0"] = np.zeros((N, H), dtype)
    want = call(func, args, backend, **kw)
    args["h0"] = None
    assert_same(call(func, args, backend, **kw), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labels", ["uint8", "int32", ">i8", "list"])
def test_softmax_label_types_work(labels, backend):
    func, args, kw = make_config("loss-softmax-sequence")
    want = call(func, args, backend, **kw)
    Y = args["Y"]
    args["Y"] = Y.tolist() if labels == "list" else Y.astype(labels)
    assert_same(call(func, args, backend, **kw), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["clean", "noncontiguous", "fortran"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", CONFIGS)
def test_inputs_not_modified(config, dtype, variant, backend):
    func, args, kw = make_config(config, dtype)
    if variant != "clean":
        args = {k: VARIANTS[variant](v) for k, v in args.items()}
    before = {k: v.copy() for k, v in args.items()}
    call(func, args, backend, **kw)
    call(func, args, backend, **kw)
    for k, v in args.items():
        assert v.dtype == before[k].dtype and v.shape == before[k].shape, k
        np.testing.assert_array_equal(v, before[k], err_msg=f"{config}: {k} was modified")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_model_inputs_and_params_not_modified(output, target, backend):
    m, X, Y = model_and_data(backend, output=output, target=target)
    h0 = np.random.default_rng(2).standard_normal((N, H)).astype(np.float32)
    before = [X.copy(), Y.copy(), h0.copy()]
    params = {k: v.copy() for k, v in m.params.items()}
    m.forward(X, h0)
    m.loss_and_grad(X, Y, h0, target=target)
    for a, b in zip((X, Y, h0), before):
        np.testing.assert_array_equal(a, b)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["noncontiguous", "fortran", "readonly", "bigendian",
                                     "lists"])
def test_model_awkward_X_matches_clean(variant, backend):
    m, X, Y = model_and_data(backend, dtype="float64")
    want_fwd, want_loss = m.forward(X), m.loss_and_grad(X, Y)
    Xa, Ya = VARIANTS[variant](X), VARIANTS[variant](Y)
    assert_same(m.forward(Xa), want_fwd)
    assert_same(m.loss_and_grad(Xa, Ya), want_loss)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unaligned_arrays_are_copied_before_c_reads_them(backend):
    """Typed pointer reads of misaligned data are undefined behaviour in C (UBSan): an
    unaligned X, weight, lengths or label array must reach the kernels as an aligned copy
    and give the same result."""
    def unaligned(a):
        buf = np.empty(a.nbytes + 1, np.uint8)
        out = np.frombuffer(buf[1:].data, dtype=a.dtype).reshape(a.shape)
        out[...] = a
        assert not out.flags.aligned
        return out

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4, 2))
    W_x, W_s, b = rng.standard_normal((2, 5)), 0.3 * rng.standard_normal((5, 5)), np.zeros(5)
    W_y, b_y = rng.standard_normal((5, 3)), np.zeros(3)
    labels, lengths = rng.integers(0, 3, size=(3, 4)), np.array([4, 2, 3])
    want = fastrnn.elman_loss_and_grad(X, labels, None, W_x, W_s, b, W_y, b_y,
                                       output="softmax", lengths=lengths, backend=backend)
    got = fastrnn.elman_loss_and_grad(unaligned(X), unaligned(labels), None, unaligned(W_x),
                                      unaligned(W_s), unaligned(b), W_y, b_y,
                                      output="softmax", lengths=unaligned(lengths),
                                      backend=backend)
    assert got[0] == want[0]
    for k in want[1]:
        np.testing.assert_array_equal(got[1][k], want[1][k])
