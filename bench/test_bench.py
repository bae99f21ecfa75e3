"""pytest-benchmark benchmarks: `pytest bench/` (needs the bench extra: pip install ".[bench]").

loss_and_grad (forward + linear output + MSE + full BPTT gradients, float32) and forward-only
for the cython backend, the NumPy reference and, when installed, PyTorch (nn.RNN(tanh) +
nn.Linear + mse_loss + backward(), same weights and data). One BLAS/torch thread.
These are measurements, not tests: nothing here asserts a speed. For ratios measured side
by side in one process, use bench/report.py.
"""
import os
import sys

import pytest
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads  # noqa: E402

CONFIGS = [c for c in workloads.CONFIGS if c != "large" or os.environ.get("FASTRNN_BENCH_LARGE")]
IMPLS = ["cython", "numpy", "torch"]


@pytest.fixture(autouse=True)
def one_thread():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    with threadpool_limits(1):
        yield


def _bench(benchmark, config, impl, kind):
    impls = workloads.implementations(*workloads.CONFIGS[config], kind=kind)
    if impl not in impls:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = f"{kind} {config}"
    benchmark.extra_info["dims (N, T, I, H, O)"] = workloads.CONFIGS[config]
    benchmark(impls[impl])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", CONFIGS)
def test_loss_and_grad(benchmark, config, impl):
    _bench(benchmark, config, impl, "loss_and_grad")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", ["tiny", "small", "med"])
def test_forward(benchmark, config, impl):
    _bench(benchmark, config, impl, "forward")
