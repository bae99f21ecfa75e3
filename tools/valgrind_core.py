"""Drive every path of fastrnn's compiled core on small cases, for tools/valgrind.sh.

Calls the Cython backend's elman_forward, elman_backward, elman_predict and
elman_loss_and_grad over: float32 and float64; N = 1 (the GEMV path) and N > 1 (GEMM, with
the explicit W_s^T); every activation; linear and softmax outputs; targets "sequence" and
"last"; without and with lengths (some sequences shorter than T); input_grads and
state_grad_norms on and off; return_state; plus one case large enough for the column-split
per-step products (one BLAS thread, 1e6 < N*H*H <= 8e6). Every result is compared with the
NumPy reference backend: the comparison branches on every output element, so an output
that the C code left uninitialised shows up in memcheck as "Conditional jump or move
depends on uninitialised value(s)", not only as a wrong number.

Run as `python tools/valgrind_core.py` (exit 0 and "OK, N cases" if all agree); under
valgrind through tools/valgrind.sh. `--canary` instead makes one planted out-of-bounds read
in a C kernel (tools/valgrind.sh --canary checks that memcheck reports it). Not a test
module: it lives outside tests/ on purpose.
"""
import contextlib
import itertools
import sys
import threading

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import _head as _elman
from fastrnn.activations import apply_

ACTIVATIONS = ("identity", "tanh", "relu", "sigmoid")
RTOL = {np.float32: 2e-4, np.float64: 1e-10}


def buffer_sizes(N, T, I, H, O, itemsize):
    """Byte sizes of every array the compiled backend allocates for these dimensions (its
    results, scratch and workspace; float32/float64 items, float64 norms, uint8 masks)."""
    shapes = [(N, T, H), (N, T, I), (N, H), (I, H), (H, H), (H,), (H, O), (O,), (N * T, O),
              (N, O), (N, T, O), (N, T), (N,), (1,)]
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
    buffers of the previous call), so every call starts on uninitialised memory.
    """
    release = getattr(_elman, "release_workspace", None)
    if release is not None:
        release()
    hold = [np.empty(n, np.uint8) for n in sizes for _ in range(8)]
    try:
        yield
    finally:
        del hold


def problem(N, T, I, H, O, dtype, output, target, seed):
    rng = np.random.default_rng(seed)

    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    p = {"X": normal(N, T, I), "h0": normal(N, H, s=0.5), "W_x": normal(I, H, s=I ** -0.5),
         "W_s": normal(H, H, s=0.9 * H ** -0.5), "b": normal(H, s=0.2),
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


def close_dict(a, b, rtol, what):
    assert sorted(a) == sorted(b), (what, sorted(a), sorted(b))
    for k in a:
        close(a[k], b[k], rtol, f"{what} [{k}]")


def lengths_for(N, T, rng):
    """None, or lengths in [1, T] with at least one short sequence (and one full if N > 1)."""
    lengths = rng.integers(1, T + 1, size=N)
    lengths[0] = max(1, T - 2)
    if N > 1:
        lengths[-1] = T
    return lengths


def run_case(N, T, I, H, O, dtype, act, output, target, use_lengths, seed):
    p = problem(N, T, I, H, O, dtype, output, target, seed)
    rtol = RTOL[dtype]
    rng = np.random.default_rng(seed + 1000)
    lengths = lengths_for(N, T, rng) if use_lengths else None
    X, h0, W_x, W_s, b, W_y, b_y, Y = (p[k] for k in ("X", "h0", "W_x", "W_s", "b", "W_y",
                                                      "b_y", "Y"))
    tag = f"N={N} T={T} {np.dtype(dtype).name} {act} {output} {target} lengths={lengths}"
    both = {}
    for be in ("cython", "numpy"):
        sizes = buffer_sizes(N, T, I, H, O, np.dtype(dtype).itemsize)
        fresh = ((lambda: fresh_numpy_buffers(sizes)) if be == "cython"
                 else contextlib.nullcontext)
        r = {}
        with fresh():
            r["S"] = fastrnn.elman_forward(X, h0, W_x, W_s, b, act, be, lengths)
        with fresh():
            r["Y"], r["S2"] = fastrnn.elman_predict(X, h0, W_x, W_s, b, W_y, b_y, act, output,
                                                    be, lengths)
        dS = np.random.default_rng(seed + 7).standard_normal(r["S"].shape).astype(dtype)
        with fresh():
            r["bw"] = fastrnn.elman_backward(X, h0, W_x, W_s, b, r["S"], dS, act, be, lengths)
        for ig, sgn in itertools.product((False, True), (False, True)):
            with fresh():
                loss, grads, h_last = fastrnn.elman_loss_and_grad(
                    X, Y, h0, W_x, W_s, b, W_y, b_y, act, output, target, be,
                    input_grads=ig, lengths=lengths, return_state=True, state_grad_norms=sgn)
            r[f"loss{ig}{sgn}"], r[f"grads{ig}{sgn}"], r[f"h{ig}{sgn}"] = loss, grads, h_last
        if be == "cython":
            # the same call again: reuses this thread's workspace, same result
            again = fastrnn.elman_loss_and_grad(
                X, Y, h0, W_x, W_s, b, W_y, b_y, act, output, target, be, input_grads=True,
                lengths=lengths, return_state=True, state_grad_norms=True)
            assert again[0] == r["lossTrueTrue"], (tag, "workspace reuse changed the loss")
            for k in again[1]:
                assert np.array_equal(again[1][k], r["gradsTrueTrue"][k]), (tag, k, "reuse")
        both[be] = r
    c, n = both["cython"], both["numpy"]
    for k in c:
        if isinstance(c[k], dict):
            close_dict(c[k], n[k], rtol, f"{tag} {k}")
        elif np.isscalar(c[k]) or np.ndim(c[k]) == 0:
            close(np.float64(c[k]), np.float64(n[k]), rtol, f"{tag} {k}")
        else:
            close(c[k], n[k], rtol, f"{tag} {k}")


def canary():
    """A planted one-past-the-end read in a fastrnn C kernel (fr_colsum_f64 over 11 rows of a
    10-element array): memcheck must report it, or a clean run would prove nothing."""
    import ctypes
    lib = ctypes.CDLL(_elman.__file__)
    f = lib.fr_colsum_f64
    f.argtypes = [ctypes.c_void_p] + [ctypes.c_ssize_t] * 3 + [ctypes.c_void_p]
    a, out = np.ones(10), np.zeros(1)
    f(a.ctypes.data, 11, 1, 1, out.ctypes.data)
    print("canary: read one element past the end of a 10-element array")
    return 0


def main():
    if sys.argv[1:] == ["--canary"]:
        return canary()
    count = 0
    for dtype, N, act, output, target, use_lengths in itertools.product(
            (np.float32, np.float64), (1, 3), ACTIVATIONS, ("linear", "softmax"),
            ("sequence", "last"), (False, True)):
        run_case(N, 4, 2, 5, 3, dtype, act, output, target, use_lengths, seed=count)
        count += 1
    # Degenerate sizes: T = 1 (no recurrence step, N*T - 1 = 0 rows when N = 1), H = I = O = 1.
    for dtype, N in itertools.product((np.float32, np.float64), (1, 2)):
        for output in ("linear", "softmax"):
            run_case(N, 1, 1, 1, 1 if output == "linear" else 2, dtype, "tanh", output,
                     "sequence", False, seed=count)
            count += 1
            run_case(N, 3, 1, 1, 1 if output == "linear" else 2, dtype, "sigmoid", output,
                     "last", True, seed=count)
            count += 1
    # The column-split per-step products: one BLAS thread and N*H*H = 64*160*160 = 1.6e6.
    with threadpool_limits(1, user_api="blas"):
        for dtype in (np.float32, np.float64):
            run_case(64, 2, 3, 160, 4, dtype, "tanh", "linear", "sequence", True, seed=count)
            count += 1
    # loss_and_grad from two threads at once (each keeps its own workspace), two shapes each,
    # alternating so that every call after the first reuses or replaces a workspace.
    probs = [problem(3, 5, 2, 6, 3, np.float64, "linear", "sequence", seed=s) for s in (1, 2)]
    probs[1] = problem(2, 7, 2, 9, 4, np.float64, "softmax", "last", seed=3)
    outs = ["linear", "softmax"]
    targets = ["sequence", "last"]

    def call(i):
        p = probs[i]
        return fastrnn.elman_loss_and_grad(p["X"], p["Y"], p["h0"], p["W_x"], p["W_s"], p["b"],
                                           p["W_y"], p["b_y"], "tanh", outs[i], targets[i],
                                           input_grads=True)

    want = [call(0), call(1)]
    errors = []

    def worker(first):
        try:
            for k in range(6):
                i = (first + k) % 2
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
    count += 1
    # The element-wise helpers the tests also reach directly.
    for dtype in (np.float32, np.float64):
        for act in ACTIVATIONS:
            z = np.linspace(-30, 30, 37).astype(dtype)
            close(_elman.activation_(z.copy(), act), apply_(act, z.copy()), RTOL[dtype],
                  f"activation_ {act} {np.dtype(dtype).name}")
            count += 1
        a = np.ones(2050, dtype)
        assert _elman.all_finite(a)
        a[2049] = np.nan
        assert not _elman.all_finite(a)
    print(f"OK, {count} cases through the cython backend, all equal to the numpy reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
