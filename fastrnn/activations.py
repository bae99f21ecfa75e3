"""The activations phi of the state layer, and their derivatives, in NumPy.

The order of ``ACTIVATIONS`` is the code the compiled kernels use (csrc/fr_kernels.h; a test checks they agree).
Derivatives are written in terms of the activation's *output* s = phi(a), so the backward
pass needs only the stored states S, never the pre-activations.
"""
import numpy as np
from scipy.special import expit

ACTIVATIONS = ("identity", "tanh", "relu", "sigmoid")


def apply_(name, a):
    """a <- phi(a), in place. a: any float array. Returns a."""
    if name == "tanh":
        np.tanh(a, out=a)
    elif name == "relu":
        np.maximum(a, 0, out=a)
    elif name == "sigmoid":
        expit(a, out=a)
    return a


def derivative(name, s):
    """phi'(a) as a new array, from s = phi(a): tanh 1 - s^2, relu [s > 0], sigmoid s(1 - s)."""
    if name == "tanh":
        d = np.square(s)
        np.subtract(1, d, out=d)
        return d
    if name == "relu":
        return (s > 0).astype(s.dtype)
    if name == "sigmoid":
        d = np.subtract(1, s)
        d *= s
        return d
    return np.ones_like(s)
