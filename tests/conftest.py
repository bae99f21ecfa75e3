"""Shared helpers: random problems of a given shape, and a tolerant comparison."""
import os

import numpy as np
import pytest
from hypothesis import settings

from fastrnn import ACTIVATIONS

# CI (.ci/run sets FASTRNN_CI=1) draws the same Hypothesis examples on every run, so that a
# failure there is reproducible and never a lucky draw; every other run draws new ones
# (tools/sanitize.sh pins its own seed).
settings.register_profile("ci", derandomize=True)
if os.environ.get("FASTRNN_CI"):
    settings.load_profile("ci")

BACKENDS = ("cython", "numpy")


def make_problem(N, T, I, H, O, *, dtype=np.float64, output="linear", target="sequence",
                 seed=0, scale=1.0):
    """Random inputs, weights and targets: a dict of keyword arguments for
    fastrnn.elman_loss_and_grad (minus the hyperparameters)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(dtype)

    p = {
        "X": normal(N, T, I),
        "h0": normal(N, H, s=0.5),
        "W_x": normal(I, H, s=scale / np.sqrt(I)),
        "W_s": normal(H, H, s=scale / np.sqrt(H)),
        "b": normal(H, s=0.2),
        "W_y": normal(H, O, s=1 / np.sqrt(H)),
        "b_y": normal(O, s=0.2),
    }
    if output == "linear":
        p["Y"] = normal(*((N, T, O) if target == "sequence" else (N, O)))
    else:
        p["Y"] = rng.integers(0, O, size=(N, T) if target == "sequence" else (N,))
    return p


def assert_close(actual, desired, rtol, name="", floor=1e-30, atol=0.0):
    """|actual - desired| <= rtol * max(|desired|) elementwise: relative to the array's scale,
    so that entries near zero do not demand impossible relative accuracy. Arrays whose
    largest entry is below floor (default 1e-30: vanished gradients, float32 subnormals)
    count as floor-sized: pass a larger floor for arrays that are small only by cancellation
    (a softmax bias gradient sums rows of (p - onehot) / N). atol: added to that bound."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, (name, actual.shape, desired.shape)
    assert actual.dtype == desired.dtype, (name, actual.dtype, desired.dtype)
    scale = max(float(np.max(np.abs(desired), initial=0.0)), floor)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale + atol,
                               err_msg=name)


def float64_of(p):
    return {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                else v) for k, v in p.items()}


def slack(numpy_result, float64_result):
    """Twice the NumPy twin's float32 rounding error (its distance from float64): if the
    Cython result is as accurate as the twin's, the two differ by at most this (triangle
    inequality). Zero in float64."""
    a = np.asarray(numpy_result)
    if a.dtype != np.float32:
        return 0.0
    return 2.0 * float(np.max(np.abs(a - np.asarray(float64_result)), initial=0.0))


def assert_agree(actual, desired, reference64, rtol, name, floor=1e-30):
    """assert_close, widened in float32 by the conditioning slack above."""
    assert_close(actual, desired, rtol, name, floor, atol=slack(desired, reference64))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
