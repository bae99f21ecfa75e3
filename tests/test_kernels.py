"""The vectorised C activations against NumPy, and the compiled path's structure."""
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _head as _elman
from conftest import make_problem


def grid():
    x = np.linspace(-30, 30, 600_001)
    tiny = np.geomspace(1e-30, 2, 20_000)
    return np.concatenate([x, tiny, -tiny, [0.0, -0.0, 1e300, -1e300, 710.0, -710.0]])


def kernel(x, name):
    return _elman.activation_(np.ascontiguousarray(x).copy(), name)


def test_tanh_float64_is_accurate_to_a_few_ulp():
    x = grid()
    got, want = kernel(x, "tanh"), np.tanh(x)
    rel = np.abs(got - want) / np.maximum(np.abs(want), np.finfo(np.float64).tiny)
    assert rel.max() < 4 * np.finfo(np.float64).eps


def test_tanh_float32_error_below_1e6():
    x = grid()
    x = x[np.abs(x) < 1e30].astype(np.float32)
    got = kernel(x, "tanh").astype(np.float64)
    want = np.tanh(x.astype(np.float64))
    assert np.abs(got - want).max() < 1e-6
    small = np.abs(want) < 1e-3        # relative accuracy near zero too
    assert (np.abs(got - want)[small] <= 1e-6 * np.abs(want)[small] + 1e-30).all()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-15), (np.float32, 1e-7)])
def test_sigmoid_accurate(dtype, tol):
    x = grid()
    x = x[np.abs(x) < 700].astype(dtype)
    got = kernel(x, "sigmoid").astype(np.float64)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.abs(got - want).max() < tol
    assert (got >= 0).all() and (got <= 1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "relu", "sigmoid", "identity"])
def test_activations_propagate_nan_and_saturate(dtype, name):
    x = np.array([np.nan, np.inf, -np.inf, 0.5], dtype=dtype)
    y = kernel(x, name)
    assert np.isnan(y[0])
    want = {"tanh": [1, -1], "relu": [np.inf, 0], "sigmoid": [1, 0],
            "identity": [np.inf, -np.inf]}[name]
    np.testing.assert_array_equal(y[1:3], np.array(want, dtype))


def test_relu_is_exact():
    x = np.random.default_rng(0).standard_normal(10_001)
    np.testing.assert_array_equal(kernel(x, "relu"), np.maximum(x, 0))


def count_python_events(func):
    func()                      # warm: first-call set-up (caches, BLAS thread query) aside
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(event))
    try:
        func()
    finally:
        sys.setprofile(None)
    return len(calls)


def test_no_python_work_per_time_step():
    """The Cython loss_and_grad does the same Python-level work for T = 2 and T = 200:
    the time loops run entirely in compiled code."""
    counts = []
    for T in (2, 200):
        p = make_problem(3, T, 4, 8, 2, dtype=np.float32)
        counts.append(count_python_events(
            lambda: fastrnn.elman_loss_and_grad(**p, backend="cython")))
    assert counts[0] == counts[1]
    # ...and the NumPy reference is the one that loops in Python
    numpy_counts = []
    for T in (2, 200):
        p = make_problem(3, T, 4, 8, 2, dtype=np.float32)
        numpy_counts.append(count_python_events(
            lambda: fastrnn.elman_loss_and_grad(**p, backend="numpy")))
    assert numpy_counts[1] > numpy_counts[0] + 100


def test_activation_list_matches_the_c_enum():
    """fastrnn.ACTIVATIONS is the order of the C kernels' activation codes."""
    codes = _elman.activation_codes()
    assert sorted(codes) == sorted(fastrnn.ACTIVATIONS)
    assert [codes[name] for name in fastrnn.ACTIVATIONS] == list(range(len(codes)))
