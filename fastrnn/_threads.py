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
