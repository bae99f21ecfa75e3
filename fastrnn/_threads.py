"""How many threads the BLAS behind scipy.linalg.cython_blas (the one the Cython core
calls) will use, cheaply enough to ask on every call (~1 us after the first)."""
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


def scipy_blas_threads():
    """Current thread count of SciPy's BLAS (the largest, if several are candidates)."""
    return max((c.get_num_threads() or 1 for c in _scipy_blas_controllers()), default=1)


# Per-step products below this many multiply-adds (batch * G*H * H) gain nothing from a second
# BLAS thread, and lose badly when BLAS pools busy-wait against each other on shared cores
# (measured here: 100x slower fits under load). fit pins BLAS to one thread below it, and the
# cells then always run their per-step products on the packed single-threaded kernel.
SINGLE_THREAD_WORK = 1 << 20


def packed_products(N, gates, H):
    """Whether a recurrence of a batch of N and G = gates gate blocks of width H runs its
    per-step products on the packed kernel (csrc/fr_gemm.c) rather than BLAS: when they are
    small (whatever BLAS's thread count, so that the result does not depend on it) or BLAS
    has one thread. The kernel sums every row alike, so a sequence's result does not depend
    on the batch around it (a batch of one included)."""
    return N * gates * H * H < SINGLE_THREAD_WORK or scipy_blas_threads() == 1
