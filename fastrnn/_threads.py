"""Threads: how many the BLAS behind scipy.linalg.cython_blas (the one the Cython core calls)
will use, cheaply enough to ask on every call (~1 us after the first), and how many threads
a compiled recurrence splits its batch across."""
import contextlib
import contextvars
import ctypes
import os
import threading

import numpy as np
import threadpoolctl

_controllers = None


def _scipy_blas_controllers():
    global _controllers
    if _controllers is None:
        import scipy.linalg  # noqa: F401  (make sure SciPy's BLAS is loaded)
        blas = [c for c in threadpoolctl.ThreadpoolController().lib_controllers
                if c.user_api == "blas"]
        # SciPy's wheels bundle their own OpenBLAS (in scipy.libs); elsewhere NumPy and
        # SciPy may share one. If it cannot be told apart, ask them all.
        own = [c for c in blas if "scipy.libs" in c.filepath or "/scipy/" in c.filepath]
        _controllers = own or blas
    return _controllers


def _native(controller):
    """(get, set) thread-count functions of one BLAS: OpenBLAS's own C entry points through
    ctypes when it has them (~0.2 us a call, against ~3 us through threadpoolctl, which
    matters on every split call), else threadpoolctl's methods."""
    lib = getattr(controller, "dynlib", None)
    if controller.internal_api == "openblas" and lib is not None and \
            getattr(controller, "threading_layer", None) != "openmp":
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                name = f"{prefix}openblas_%s_num_threads{suffix}"
                if hasattr(lib, name % "get") and hasattr(lib, name % "set"):
                    get, set_ = getattr(lib, name % "get"), getattr(lib, name % "set")
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    return get, set_
    return controller.get_num_threads, controller.set_num_threads


_functions = None


def _blas_functions():
    global _functions
    if _functions is None:
        _functions = [_native(c) for c in _scipy_blas_controllers()]
    return _functions


def scipy_blas_threads():
    """Current thread count of SciPy's BLAS (the largest, if several are candidates)."""
    return max((get() or 1 for get, _ in _blas_functions()), default=1)


# Per-step products below this many multiply-adds (batch * G*H * H) gain nothing from a second
# BLAS thread, and lose badly when BLAS pools busy-wait against each other on shared cores
# (measured here: 100x slower fits under load). fit pins BLAS to one thread below it, and the
# cells then always run their per-step products on the packed single-threaded kernel.
SINGLE_THREAD_WORK = 1 << 20


def serial_blas(threads):
    """Whether SciPy's BLAS runs a call's products on one thread: the call is split across
    threads > 1 threads (BLAS is held on one thread meanwhile: one_blas_thread) or BLAS has
    one thread."""
    return threads > 1 or scipy_blas_threads() == 1


def packed_products(N, gates, H, serial):
    """Whether a recurrence of a batch of N and G = gates gate blocks of width H runs its
    per-step products on the packed kernel (csrc/fr_gemm.c) rather than BLAS: when they are
    small (whatever BLAS's thread count, so that the result does not depend on it) or BLAS
    runs on one thread (serial, from serial_blas). The kernel sums every row alike, so a
    sequence's result does not depend on the batch around it (a batch of one included)."""
    return serial or N * gates * H * H < SINGLE_THREAD_WORK


# Long sequences: a call whose gate array (N * T * G*H elements) exceeds this many bytes no
# longer stays in cache between the input projection, the time loop and the merged
# weight-gradient GEMMs over all N*T rows, each of which would stream it from memory again.
# Its passes are then time-blocked (fastrnn/cells/_recurrence.pxd): the input projection is
# done a block of steps at a time just before the time loop reaches them, and the weight
# gradients are summed a block at a time right after the backward loop computed them, while
# the block is in cache: a thread's block of gate rows is at most TIME_BLOCK_BYTES, and at
# least TIME_BLOCK_STEPS[0] steps, below which the blocks' weight-gradient products (one per
# sequence, that many rows deep, each reading and writing the whole dW) lose more than the
# cache gains: wide rows (the LSTM at med, N=64, H=256: 256 KiB a step, 16-step blocks ran
# 0.86x the merged pass) are never blocked.
TIME_BLOCK_ABOVE_BYTES = 16 << 20
TIME_BLOCK_BYTES = 1 << 20
TIME_BLOCK_STEPS = (32, 128)


def time_block(N, T, gates, H, itemsize, threads, serial):
    """Steps per block of a call's time-blocked passes, or 0 for one pass over all steps
    (short sequences; rows too wide for a block of TIME_BLOCK_STEPS[0] steps to stay in
    cache; a BLAS running the merged GEMMs on several threads, where the blocks' products
    would be single-threaded; or too few steps for blocks to pay)."""
    row = -(-N // max(threads, 1)) * gates * H * itemsize      # a thread's rows of one step
    lo, hi = TIME_BLOCK_STEPS
    block = min(hi, TIME_BLOCK_BYTES // row)
    if block < lo or not serial or T < 2 * block or \
            N * T * gates * H * itemsize <= TIME_BLOCK_ABOVE_BYTES:
        return 0
    return block


# ---------------------------------------------------------------------------------------------
# Splitting a batch across threads. The sequences of a batch never interact inside a
# recurrence, so each thread runs its own rows' whole time loop (forward, then backward) on
# the single-threaded packed kernel, with no synchronisation per step, then its share of the
# merged weight gradients (summed afterwards in a fixed order). The cells ask batch_threads()
# how many threads a call gets; threads(k) (the `threads=` argument of fit and the functional
# layer) caps it, and so does threadpoolctl's limit on SciPy's BLAS when no cap is given.

# Below this many multiply-adds per call (N * T * G*H * (I + H), the forward pass) a second
# thread's start-up (a few microseconds) is not worth it.
SPLIT_WORK = 1 << 19

_cap = contextvars.ContextVar("fastrnn_threads", default=None)


def check_threads(threads):
    """threads, validated: None (no cap of its own) or a positive int."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be None or a positive integer, got {threads!r}")
    return int(threads)


@contextlib.contextmanager
def threads(count):
    """Within this context, the compiled cells split a batch across at most `count`
    threads (None: as many as SciPy's BLAS may use, threadpoolctl's limit included)."""
    token = _cap.set(check_threads(count))
    try:
        yield
    finally:
        _cap.reset(token)


def thread_cap():
    """The current cap: the innermost threads(k), else SciPy's BLAS thread count (the one it
    had before a split call set it to one, while one runs: a stack's layers inside its
    one_blas_thread, or another Python thread's call, see the count the user set)."""
    cap = _cap.get()
    if cap is not None:
        return cap
    with _blas_lock:
        if _blas_users:
            return max((n for _, n in _blas_saved), default=1) or 1
    return scipy_blas_threads()


# GNU OpenMP (libgomp) is not fork-safe: a child forked after the parent ran a parallel region
# hangs in its first one (its team's threads were not copied). So a process forked after a
# split call runs every call on one thread (multiprocessing's "fork" workers, which are
# parallel by themselves anyway); "spawn" and "forkserver" children start fresh and split.
_team_started = False
_forked_after_team = False


def _after_fork_in_child():
    global _forked_after_team
    _forked_after_team = _forked_after_team or _team_started


os.register_at_fork(after_in_child=_after_fork_in_child)


def batch_threads(N, work):
    """Threads for one call of a recurrence over a batch of N sequences and `work`
    multiply-adds: 1 for small calls, else the cap, at most one per sequence."""
    global _team_started
    if N < 2 or work < SPLIT_WORK or _forked_after_team:
        return 1
    k = max(1, min(thread_cap(), N))
    if k > 1:
        _team_started = True
    return k


# While the batch is split, SciPy's BLAS must run on one thread: the threads call it at once
# for their rows (a multi-threaded BLAS would oversubscribe the cores and serialise the calls).
# Counted, so that concurrent callers (Python threads, Dask workers) restore it exactly once.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = []


class _OneBlasThread:
    __slots__ = ()

    def __enter__(self):
        global _blas_users, _blas_saved
        with _blas_lock:
            if _blas_users == 0:
                _blas_saved = [(set_, get()) for get, set_ in _blas_functions()]
                for set_, n in _blas_saved:
                    if n != 1:
                        set_(1)
            _blas_users += 1

    def __exit__(self, *exc):
        global _blas_users
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for set_, n in _blas_saved:
                    if n != 1:
                        set_(n)
        return False


_one_blas_thread = _OneBlasThread()
_no_change = contextlib.nullcontext()


def one_blas_thread(threads):
    """Context for a call split across `threads` threads: SciPy's BLAS on one thread
    meanwhile (a no-op for threads == 1)."""
    return _one_blas_thread if threads > 1 else _no_change
