"""Drive every path of fastrnn's compiled core, for every cell, on small cases, for
tools/valgrind.sh.

Calls fastrnn.cell_forward, cell_backward, cell_predict and cell_loss_and_grad with backend
"cython" for the cells "elman" (every activation), "lstm" (forget_gate True and False; the
(h0, c0) state, dCs into the backward pass, "cell_grad_norms") and "gru", and compares each
result with backend "numpy". The weights are built from the cell's spec
(fastrnn.cells.get_cell(name).weight_shapes(I, H)), the initial states from cell.states.

Each cell covers: float32 and float64; N = 1 (the GEMV path of the backward pass) and
N > 1 (GEMM, with the explicit W_s^T); linear and softmax outputs; targets "sequence" and
"last" (the head's partial dLoss/dS, and its scatter to each sequence's last valid step
with lengths); without and with lengths (some sequences shorter than T); loss_and_grad with
input_grads and state_grad_norms off and on, return_state, and a call repeated on the
thread's reused workspace; degenerate sizes (T = 1, so N*T - 1 = 0 rows when N = 1;
H = I = 1, O = 1); an H of 19 (vectorised loops with a remainder: 16 + 3), with zero
initial states; and one case large enough for the column-split per-step products (one
BLAS thread, 1e6 < N*G*H*H <= 8e6, G gate blocks), and one with a float32 weight gradient
above 2**28 multiply-adds (fastrnn's kernel under one BLAS thread). The full product of the small-case
settings (dtype x N x output x target x lengths, 32 cases) runs for Elman/tanh, the LSTM
with a forget gate and the GRU; the other Elman activations and the LSTM without a forget
gate get a covering subset of 8 (every dtype x N, and every output, target and lengths
setting: the activation and the forget gate change only the element-wise kernels' work,
not which code runs around them), which keeps the run under valgrind to a few minutes.
Then 2-layer bidirectional stacks of every cell (stack_predict, stack_loss_and_grad:
the reverse direction's loops, with and without lengths, dropout masks, sample weights).
Then single layers and stacks of every cell with their batch split across 2 and 3 threads,
and on the time-blocked passes of long sequences (forced on with 2-step blocks).
Then loss_and_grad of every cell from two threads at once (the per-thread workspace is
shared by every cell: each call replaces another cell's), and the element-wise helpers.

The comparison branches on every output element, so an output that the C code left
uninitialised shows up in memcheck as "Conditional jump or move depends on uninitialised
value(s)", not only as a wrong number. The compiled backend's outputs are allocated with
NumPy's small-buffer cache emptied (fresh_numpy_buffers) and its workspace released, so
they start out as fresh, uninitialised malloc memory.

Run as `python tools/valgrind_core.py` (exit 0 and "OK, N cases" if all agree); under
valgrind through tools/valgrind.sh. `--canary` instead makes planted out-of-bounds reads in
the C kernels of each compiled module (tools/valgrind.sh --canary checks that memcheck
reports every one). Not a test module: it lives outside tests/ on purpose.
"""
import contextlib
import itertools
import sys
import threading

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import _head
from fastrnn.activations import apply_
from fastrnn.cells import get_cell

ACTIVATIONS = ("identity", "tanh", "relu", "sigmoid")
DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-4, np.float64: 1e-10}
# (output, target, use_lengths): the head's and the lengths' settings
SETTINGS = tuple(itertools.product(("linear", "softmax"), ("sequence", "last"), (False, True)))
# The compiled modules and, for --canary, one fastrnn C kernel in each that reads past the
# end of a too-short array (see canary()).
MODULES = ("fastrnn._head", "fastrnn.cells._elman", "fastrnn.cells._lstm",
           "fastrnn.cells._gru")


def buffer_sizes(N, T, I, H, O, G, itemsize):
    """Byte sizes of every array the compiled backends allocate for these dimensions and G
    gate blocks (results, scratch and workspace; float32/float64 items, float64 norms, uint8
    masks, int64 lengths)."""
    GH = G * H
    shapes = [(N, T, H), (N, T, I), (N, H), (I, H), (H, H), (H,), (H, O), (O,), (N * T, O),
              (N, O), (N, T, O), (N, T), (N,), (1,), (N, T, GH), (N, GH), (GH, H), (I, GH),
              (GH,)]
    sizes = set()
    for shape in shapes:
        n = int(np.prod(shape))
        sizes.update({n * itemsize, n * 8, n})
    return sorted(k for k in sizes if 0 < k < 1024)


@contextlib.contextmanager
def fresh_numpy_buffers(sizes):
    """Make the arrays of these byte sizes allocated inside the block come from malloc, not
    from NumPy's cache.

    NumPy keeps up to 7 freed data buffers of each size below 1024 bytes and hands them out
    again, still holding their old (defined) contents, so memcheck could not see an output
    that fastrnn forgot to write. Holding 8 fresh arrays of each size empties the cache for
    it during the block. Also drops loss_and_grad's per-thread workspace (the reused
    buffers of the previous call, shared by every cell), so every call starts on
    uninitialised memory.
    """
    _head.release_workspace()
    hold = [np.empty(n, np.uint8) for n in sizes for _ in range(8)]
    try:
        yield
    finally:
        del hold


def weight_scale(w, I, H):
    """A stable scale for a weight of the spec: 1/sqrt(fan-in), a bit less for the
    recurrent one, 0.2 for a bias."""
    if w.rows == "I":
        return I ** -0.5
    if w.rows == "H":
        return 0.9 * H ** -0.5
    return 0.2


def problem(cell, N, T, I, H, O, dtype, output, target, seed, zero_state=False):
    """Inputs for one case: X, the initial states (a tuple in the order of cell.states; None
    entries if zero_state), the weights (in the order of cell.weights, shaped by the spec),
    W_y, b_y and targets Y."""
    spec = get_cell(cell)
    rng = np.random.default_rng(seed)

    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    shapes = spec.weight_shapes(I, H)
    p = {"X": normal(N, T, I),
         "state0": tuple(None if zero_state else normal(N, H, s=0.5) for _ in spec.states),
         "weights": tuple(normal(*shapes[w.name], s=weight_scale(w, I, H))
                          for w in spec.weights),
         "W_y": normal(H, O, s=H ** -0.5), "b_y": normal(O, s=0.2)}
    shape = (N, T) if target == "sequence" else (N,)
    if output == "linear":
        p["Y"] = normal(*shape, O)
    else:
        p["Y"] = rng.integers(0, O, size=shape).astype(np.int64)
    return p


def close(a, b, rtol, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
    if not np.allclose(a, b, rtol=rtol, atol=rtol * scale):
        raise AssertionError(f"{what}: max |diff| {np.max(np.abs(a - b))} vs scale {scale}")


def close_any(a, b, rtol, what):
    """Compare results of any form: dicts (gradients), tuples (several states; predict's
    (Y, *states); the LSTM's (h_last, c_last)), lists (a stack's per-layer gradients),
    scalars (losses) and arrays."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), (what, sorted(a), sorted(b))
        for k in a:
            close_any(a[k], b[k], rtol, f"{what} [{k}]")
    elif isinstance(a, (tuple, list)):
        assert type(b) is type(a) and len(a) == len(b), (what, type(b), len(a))
        for i, (x, y) in enumerate(zip(a, b)):
            close_any(x, y, rtol, f"{what} [{i}]")
    elif np.isscalar(a) or np.ndim(a) == 0:
        close(np.float64(a), np.float64(b), rtol, what)
    else:
        close(a, b, rtol, what)


def states_tuple(states):
    """forward's result as a tuple of (N, T, H) arrays (one-state cells return the array)."""
    return states if isinstance(states, tuple) else (states,)


def lengths_for(N, T, rng):
    """Lengths in [1, T] with at least one short sequence (and one full if N > 1)."""
    lengths = rng.integers(1, T + 1, size=N)
    lengths[0] = max(1, T - 2)
    if N > 1:
        lengths[-1] = T
    return lengths


def run_case(cell, options, N, T, I, H, O, dtype, output, target, use_lengths, seed,
             zero_state=False):
    """Every function of the functional layer on one problem, through both backends; the
    compiled results must equal the NumPy twin's.

    loss_and_grad runs twice per backend, with (input_grads, state_grad_norms) (False,
    False) and (True, True), or (False, True) and (True, False), by the parity of the
    seed's bits (so the choice goes with no single grid setting): each case sets each of
    those independent switches both ways, and the grid meets all four combinations. The
    last call is repeated on the compiled backend's reused workspace.
    """
    spec = get_cell(cell)
    p = problem(cell, N, T, I, H, O, dtype, output, target, seed, zero_state)
    rtol = RTOL[dtype]
    rng = np.random.default_rng(seed + 1000)
    lengths = lengths_for(N, T, rng) if use_lengths else None
    X, state0, weights, W_y, b_y, Y = (p[k] for k in ("X", "state0", "weights", "W_y", "b_y",
                                                      "Y"))
    tag = (f"{cell}{options} N={N} T={T} H={H} {np.dtype(dtype).name} {output} {target} "
           f"lengths={lengths}{' zero state' if zero_state else ''}")
    sizes = buffer_sizes(N, T, I, H, O, spec.n_gates, np.dtype(dtype).itemsize)
    both = {}
    for be in ("cython", "numpy"):
        fresh = ((lambda: fresh_numpy_buffers(sizes)) if be == "cython"
                 else contextlib.nullcontext)
        r = {}
        with fresh():
            r["forward"] = fastrnn.cell_forward(cell, X, state0, weights, options, be, lengths)
        with fresh():
            r["predict"] = fastrnn.cell_predict(cell, X, state0, weights, W_y, b_y, options,
                                                output, be, lengths)
        states = states_tuple(r["forward"])
        drng = np.random.default_rng(seed + 7)
        dstates = tuple(drng.standard_normal(S.shape).astype(dtype) for S in states)
        with fresh():
            r["backward"] = fastrnn.cell_backward(cell, X, state0, weights, states, dstates,
                                                  options, be, lengths)
        for ig, sgn in (((False, False), (True, True)) if bin(seed).count("1") % 2 == 0
                        else ((False, True), (True, False))):
            with fresh():
                loss, grads, last = fastrnn.cell_loss_and_grad(
                    cell, X, Y, state0, weights, W_y, b_y, options, output, target, be,
                    input_grads=ig, lengths=lengths, return_state=True, state_grad_norms=sgn)
            r[f"loss{ig}{sgn}"], r[f"grads{ig}{sgn}"], r[f"last{ig}{sgn}"] = loss, grads, last
        if be == "cython":
            # the last call again (without return_state): reuses this thread's workspace,
            # same result
            again = fastrnn.cell_loss_and_grad(
                cell, X, Y, state0, weights, W_y, b_y, options, output, target, be,
                input_grads=ig, lengths=lengths, state_grad_norms=sgn)
            assert len(again) == 2, (tag, "return_state=False returned", len(again))
            assert again[0] == loss, (tag, "workspace reuse changed the loss")
            assert sorted(again[1]) == sorted(grads), (tag, "reuse: keys")
            for k in again[1]:
                assert np.array_equal(again[1][k], grads[k]), (tag, k, "reuse")
        both[be] = r
    c, n = both["cython"], both["numpy"]
    assert sorted(c) == sorted(n)
    for k in c:
        close_any(c[k], n[k], rtol, f"{tag} {k}")


def run_stack_case(cell, options, N, dtype, target, use_lengths, seed, weighted, masks):
    """stack_predict and stack_loss_and_grad of a 2-layer bidirectional network (T = 4,
    I = 2, H = 5, O = 3, linear output), compiled against NumPy."""
    spec = get_cell(cell)
    rng = np.random.default_rng(seed)
    T, I, H, O, D, L = 4, 2, 5, 3, 2, 2
    weights = []
    for k in range(L * D):
        shapes = spec.weight_shapes(I if k < D else D * H, H)
        weights.append(tuple((0.5 * rng.standard_normal(s)).astype(dtype)
                             for s in shapes.values()))
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = rng.standard_normal((N, T, O) if target == "sequence" else (N, O)).astype(dtype)
    state0 = tuple(rng.standard_normal((L * D, N, H)).astype(dtype) for _ in spec.states)
    W_y = rng.standard_normal((D * H, O)).astype(dtype)
    b_y = rng.standard_normal(O).astype(dtype)
    lengths = lengths_for(N, T, rng) if use_lengths else None
    sw = rng.uniform(0.5, 2, N) if weighted else None
    dm = [((rng.random((N, T, D * H)) < 0.7) / 0.7).astype(dtype)] if masks else None
    tag = f"stack {cell}{options} N={N} {np.dtype(dtype).name} {target} lengths={lengths}"
    sizes = buffer_sizes(N, T, D * H, H, O, spec.n_gates, np.dtype(dtype).itemsize)
    both = {}
    for be in ("cython", "numpy"):
        fresh = ((lambda: fresh_numpy_buffers(sizes)) if be == "cython"
                 else contextlib.nullcontext)
        with fresh():
            pred = fastrnn.stack_predict(cell, X, state0, weights, W_y, b_y, options,
                                         bidirectional=True, backend=be, lengths=lengths)
        with fresh():
            loss, grads, last = fastrnn.stack_loss_and_grad(
                cell, X, Y, state0, weights, W_y, b_y, options, target=target,
                bidirectional=True, backend=be, input_grads=True, lengths=lengths,
                return_state=True, dropout_masks=dm, sample_weight=sw)
        both[be] = {"predict": pred, "loss": loss, "grads": grads, "last": last}
    c, n = both["cython"], both["numpy"]
    for k in c:
        close_any(c[k], n[k], RTOL[dtype], f"{tag} {k}")


# The cell variants: (cell, options, grid). grid "full": every dtype x N x SETTINGS;
# "cover": every dtype x N with two of SETTINGS each, all of SETTINGS once (shift varies
# which dtype x N meets which setting).
VARIANTS = (
    ("elman", ("tanh",), "full", 0),
    ("elman", ("identity",), "cover", 0),
    ("elman", ("relu",), "cover", 3),
    ("elman", ("sigmoid",), "cover", 5),
    ("lstm", (True,), "full", 0),
    ("lstm", (False,), "cover", 2),
    ("gru", (), "full", 0),
)


def grid(kind, shift):
    """(dtype, N, output, target, use_lengths) of a variant's small cases."""
    for i, (dtype, N) in enumerate(itertools.product(DTYPES, (1, 3))):
        if kind == "full":
            settings = SETTINGS
        else:
            settings = [SETTINGS[(2 * i + j + shift) % len(SETTINGS)] for j in range(2)]
        for output, target, use_lengths in settings:
            yield dtype, N, output, target, use_lengths


def canary():
    """Planted reads one element past the end of an array in a fastrnn C kernel of each
    compiled module (its own copy: ctypes looks the symbol up in that library first).
    memcheck must report every one ("Invalid read of size 8"), or a clean run would prove
    nothing."""
    import ctypes
    import importlib
    P, n = ctypes.c_void_p, ctypes.c_ssize_t
    for name in MODULES:
        lib = ctypes.CDLL(importlib.import_module(name).__file__)
        if name.endswith("_lstm"):
            # fr_lstm_fwd_f64 on one row of H = 1: b must have 4H = 4 elements; given 3,
            # it reads b[3] (the o gate's bias)
            f = lib.fr_lstm_fwd_f64
            f.argtypes = [P, n, P, P, n, P, P, n, n, n, ctypes.c_int]
            Z, b, c_prev, C, Hs = np.zeros(4), np.ones(3), np.zeros(1), np.zeros(1), np.zeros(1)
            f(Z.ctypes.data, 4, b.ctypes.data, c_prev.ctypes.data, 1, C.ctypes.data,
              Hs.ctypes.data, 1, 1, 1, 1)
            what = "fr_lstm_fwd_f64: b[3] of a 3-element b"
        elif name.endswith("_gru"):
            # fr_gru_fwd_f64 on one row of H = 1: b_s must have 3H = 3 elements; given 2,
            # it reads b_s[2] (the n gate's recurrent bias)
            f = lib.fr_gru_fwd_f64
            f.argtypes = [P, n, P, P, P, P, n, P, P, n, n, n]
            A, b, R, b_s = np.zeros(3), np.zeros(3), np.zeros(3), np.ones(2)
            h_prev, Hs, Sn = np.zeros(1), np.zeros(1), np.zeros(1)
            f(A.ctypes.data, 3, b.ctypes.data, R.ctypes.data, b_s.ctypes.data,
              h_prev.ctypes.data, 1, Hs.ctypes.data, Sn.ctypes.data, 1, 1, 1)
            what = "fr_gru_fwd_f64: b_s[2] of a 2-element b_s"
        else:
            # fr_colsum_f64 over 11 rows of a 10-element array
            f = lib.fr_colsum_f64
            f.argtypes = [P, n, n, n, P]
            a, out = np.ones(10), np.zeros(1)
            f(a.ctypes.data, 11, 1, 1, out.ctypes.data)
            what = "fr_colsum_f64: a[10] of a 10-element array"
        print(f"canary: {name} ({lib._name.rsplit('/', 1)[-1]}): {what}")
    return 0


def threads_check():
    """loss_and_grad of every cell from two threads at once (each thread keeps its own
    workspace, shared by every cell), different shapes, alternating so that every call
    after the first replaces the workspace of another cell's shapes."""
    probs = [("elman", ("tanh",), "linear", "sequence",
              problem("elman", 3, 5, 2, 6, 3, np.float64, "linear", "sequence", seed=1)),
             ("lstm", (True,), "softmax", "last",
              problem("lstm", 2, 7, 2, 5, 4, np.float64, "softmax", "last", seed=2)),
             ("gru", (), "linear", "last",
              problem("gru", 4, 3, 3, 4, 2, np.float32, "linear", "last", seed=3))]

    def call(i):
        cell, options, output, target, p = probs[i]
        return fastrnn.cell_loss_and_grad(cell, p["X"], p["Y"], p["state0"], p["weights"],
                                          p["W_y"], p["b_y"], options, output, target,
                                          input_grads=True, state_grad_norms=True)

    want = [call(i) for i in range(len(probs))]
    errors = []

    def worker(first):
        try:
            for k in range(6):
                i = (first + k) % len(probs)
                loss, grads = call(i)
                assert loss == want[i][0], ("thread", i, loss, want[i][0])
                for name in grads:
                    assert np.array_equal(grads[name], want[i][1][name]), ("thread", i, name)
        except Exception as exc:          # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(j,)) for j in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def main():
    if sys.argv[1:] == ["--canary"]:
        return canary()
    count = 0
    per_cell = {}

    def run(cell, options, *args, **kw):
        nonlocal count
        run_case(cell, options, *args, seed=count, **kw)
        count += 1
        key = f"{cell}{options}"
        per_cell[key] = per_cell.get(key, 0) + 1

    for cell, options, kind, shift in VARIANTS:
        for dtype, N, output, target, use_lengths in grid(kind, shift):
            run(cell, options, N, 4, 2, 5, 3, dtype, output, target, use_lengths)
    # Degenerate sizes: T = 1 (no recurrence step, N*T - 1 = 0 rows when N = 1),
    # H = I = 1, O = 1 (linear) or 2 (softmax); then T = 3 with lengths, target "last".
    degenerate = {"elman": (("tanh",), ("sigmoid",)), "lstm": ((True,), (False,)),
                  "gru": ((), ())}
    for cell, (opt1, opt3) in degenerate.items():
        for dtype, N in itertools.product(DTYPES, (1, 2)):
            # each output with each dtype and each N
            output = "linear" if (dtype is np.float32) == (N == 1) else "softmax"
            O = 1 if output == "linear" else 2
            run(cell, opt1, N, 1, 1, 1, O, dtype, output, "sequence", False)
            run(cell, opt3, N, 3, 1, 1, O, dtype, output, "last", True)
    # H = 19: the vectorised gate and activation loops with a remainder (16 + 3); zero
    # initial states (state0 entries None) for float64.
    odd = {"elman": ("relu",), "lstm": (False,), "gru": ()}
    for cell, options in odd.items():
        for dtype in DTYPES:
            run(cell, options, 3, 3, 3, 19, 2, dtype, "softmax", "sequence", True,
                zero_state=dtype is np.float64)
    # The column-split per-step products: one BLAS thread and 1e6 < N*G*H*H <= 8e6:
    # Elman 64*160*160 = 1.6e6, LSTM 64*4*80*80 = 1.6e6, GRU 64*3*80*80 = 1.2e6.
    split = {"elman": (("tanh",), 160), "lstm": ((True,), 80), "gru": ((), 80)}
    with threadpool_limits(1, user_api="blas"):
        for cell, (options, H) in split.items():
            for dtype in DTYPES:
                if cell == "lstm" and dtype is np.float64:
                    options = (False,)
                run(cell, options, 64, 2, 3, H, 4, dtype, "linear", "sequence", True)
        # A float32 weight gradient above 2**28 multiply-adds with at most 256 rows, on
        # fastrnn's kernel under one BLAS thread (fastrnn/_gemm.pxd, weight_gemm): the
        # LSTM's dW_s (256, 1024) over 8 * 130 - 1 rows.
        run("lstm", (True,), 8, 130, 3, 256, 2, np.float32, "linear", "sequence", False)
    # Deep and bidirectional stacks (fastrnn/stack.py): each (layer, direction) through
    # forward_train/backward_train, the reverse direction's time loops (with lengths: each
    # sequence from its own last valid step, the gathered first-step rows), the head on its
    # own, dropout masks and sample weights.
    for cell, options in (("elman", ("tanh",)), ("lstm", (True,)), ("gru", ())):
        for i, (dtype, N, target, use_lengths) in enumerate(itertools.product(
                DTYPES, (1, 3), ("sequence", "last"), (False, True))):
            run_stack_case(cell, options, N, dtype, target, use_lengths, seed=count,
                           weighted=i % 3 == 0, masks=i % 4 == 1)
            count += 1
            per_cell[f"{cell}{options} stack"] = per_cell.get(f"{cell}{options} stack", 0) + 1
    # A batch split across threads (fastrnn/_threads.py): every call splits (no minimum
    # work), 2 and 3 threads over N = 3 and 5 sequences, single layers (the full set of
    # switches: lengths, both targets, softmax, norms, input gradients) and stacks (the
    # reverse direction, each thread's share of the weight gradients).
    from fastrnn import _threads
    saved, _threads.SPLIT_WORK = _threads.SPLIT_WORK, 0
    try:
        for k, (cell, options) in enumerate((("elman", ("tanh",)), ("lstm", (True,)),
                                             ("gru", ()))):
            for j, (dtype, output, target) in enumerate(itertools.product(
                    DTYPES, ("linear", "softmax"), ("sequence", "last"))):
                with fastrnn.threads(2 + (j + k) % 2):
                    run(cell, options, 3 + 2 * (j % 2), 4, 2, 5, 3, dtype, output, target,
                        j % 3 != 0)
                    if j < 4:
                        run_stack_case(cell, options, 5, dtype, target, j % 2 == 0,
                                       seed=count, weighted=j == 1, masks=j == 2)
                        count += 1
    finally:
        _threads.SPLIT_WORK = saved
    # The time-blocked passes of long sequences (fastrnn/_threads.py time_block), forced on
    # with blocks of 2 steps (T = 9: blocks of 2, 2, 2, 2 and 1; the stacks' T = 4: 2 and 2):
    # single layers with every switch, one thread and split, and stacks (the upper layers'
    # input gradients per block).
    saved = (_threads.TIME_BLOCK_ABOVE_BYTES, _threads.TIME_BLOCK_STEPS, _threads.SPLIT_WORK)
    _threads.TIME_BLOCK_ABOVE_BYTES, _threads.TIME_BLOCK_STEPS = 0, (2, 2)
    _threads.SPLIT_WORK = 0
    try:
        with threadpool_limits(1, user_api="blas"):
            for k, (cell, options) in enumerate((("elman", ("tanh",)), ("lstm", (True,)),
                                                 ("gru", ()))):
                for j, (dtype, output, target) in enumerate(itertools.product(
                        DTYPES, ("linear", "softmax"), ("sequence", "last"))):
                    with fastrnn.threads(1 + (j + k) % 2):
                        run(cell, options, 1 + 2 * (j % 3), 9, 2, 5, 3, dtype, output,
                            target, j % 2 == 0)
                        if j < 2:
                            run_stack_case(cell, options, 3, dtype, target, j == 0,
                                           seed=count, weighted=False, masks=False)
                            count += 1
    finally:
        (_threads.TIME_BLOCK_ABOVE_BYTES, _threads.TIME_BLOCK_STEPS,
         _threads.SPLIT_WORK) = saved
    threads_check()
    count += 1
    # The element-wise helpers the tests also reach directly.
    for dtype in DTYPES:
        for act in ACTIVATIONS:
            z = np.linspace(-30, 30, 37).astype(dtype)
            close(_head.activation_(z.copy(), act), apply_(act, z.copy()), RTOL[dtype],
                  f"activation_ {act} {np.dtype(dtype).name}")
            count += 1
        a = np.ones(2050, dtype)
        assert _head.all_finite(a)
        a[2049] = np.nan
        assert not _head.all_finite(a)
    print("cases per cell: " + ", ".join(f"{k} {v}" for k, v in per_cell.items()))
    print(f"OK, {count} cases through the cython backend, all equal to the numpy reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
