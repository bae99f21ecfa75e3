"""The compiled output layer and losses, shared by every cell (NumPy twin: fastrnn/head.py),
and what the cells' compiled backends share besides: the per-thread workspace, the
finiteness check and a kernel hook for the tests.

    Z_t = S_t W_y + b_y          Y_t = Z_t  (linear)  or  softmax(Z_t)

Losses are means, as in PyTorch: over every output element (MSE) or every scored target
(cross-entropy). A cell's loss_and_grad runs its forward recurrence, head_loss_and_grad,
and its backward recurrence in one nogil block; the head writes dLoss/dS where the cell's
backward pass reads it.
"""
import threading

import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy, memset

from fastrnn._blas cimport gemm
from fastrnn._gemm cimport packed_elements, step_b, step_gemm, weight_gemm
from fastrnn._kernels cimport (FR_IDENTITY, FR_RELU, FR_SIGMOID, FR_TANH, add_bias,
                               bias_act, colsum, fr_all_finite_f32,
                               fr_all_finite_f64, mse, softmax, xent)

from .activations import ACTIVATIONS

cnp.import_array()


cdef double head_loss_and_grad(Head *h, const floating *S, floating *G, floating *D,
                               const int64_t *lengths, int N, int T, int H) noexcept nogil:
    """The output layer on states S (N, T, H), its loss, the gradients of W_y and b_y, and
    dLoss/dS written into G (N, T, H) for the cell's backward pass. Returns the loss.

    Target "sequence" scores every row (with lengths: the valid steps), and G
    receives dLoss/dS at every step. Target "last" scores S[:, T-1] (the recurrences carry
    each sequence's last valid state there) and writes only G[:, T-1], unless lengths are
    given: then the gradient goes to each sequence's last valid step and G is filled
    entirely (zeros elsewhere). D (N, H) is scratch.
    """
    cdef int TH = T * H, O = h.O
    cdef int rows = N if h.last else N * T
    cdef int ld_out = TH if h.last else H          # rows of the states the loss sees
    cdef const floating *S_out = S + (T - 1) * H if h.last else S
    cdef floating *Z = <floating *> h.Z
    cdef const floating *W_y = <const floating *> h.W_y
    cdef double loss, count = h.count
    cdef Py_ssize_t n
    # Z (rows, O) = S_out (rows, H) @ W_y (H, O) + b_y
    gemm(False, False, rows, O, H, 1, S_out, ld_out, W_y, O, 0, Z, O)
    add_bias(Z, rows, O, <const floating *> h.b_y)
    # loss and, in place, Z <- dLoss/dZ. Means as in PyTorch: over targets (cross-entropy)
    # or over every output element (MSE), weighted by the rows' weights if any.
    if h.use_softmax:
        loss = xent(Z, h.labels, rows, O, 1.0 / count, h.weight) / count
    else:
        loss = mse(Z, <const floating *> h.Y, rows, O, 1.0 / (count * O), h.weight) / (count * O)
    # dW_y (H, O) = S_out^T (H, rows) @ dZ (rows, O);  db_y = dZ.sum over rows
    weight_gemm(H, O, rows, S_out, ld_out, Z, O, 0, <floating *> h.dW_y, O, False)
    colsum(Z, rows, O, O, <floating *> h.db_y)
    if h.last and lengths != NULL:
        # D (N, H) = dZ (N, O) @ W_y^T (O, H), placed at each sequence's last valid step
        gemm(False, True, N, H, O, 1, Z, O, W_y, O, 0, D, H)
        memset(G, 0, N * <Py_ssize_t> TH * sizeof(floating))
        for n in range(N):
            memcpy(G + n * <Py_ssize_t> TH + (lengths[n] - 1) * H, D + n * H,
                   H * sizeof(floating))
    else:
        # dLoss/dS_out (rows, H) = dZ (rows, O) @ W_y^T (O, H)
        gemm(False, True, rows, H, O, 1, Z, O, W_y, O, 0, G + (T - 1) * H if h.last else G,
             ld_out)
    return loss


cdef void head_predict(Head *h, const floating *S, int rows, int H) noexcept nogil:
    """h.Z (rows, O) = S (rows, H) @ W_y (H, O) + b_y, then its softmax if h.use_softmax.
    With W_y packed (head_setup for prediction), every row is computed alike, whatever the
    number of rows: a sequence's outputs do not depend on the batch it comes in."""
    cdef floating *Z = <floating *> h.Z
    step_b(&h.Wy, <const floating *> h.W_y, h.O, H, h.O, False, h.Wyp)
    # Z (rows, O) = S (rows, H) @ W_y (H, O)
    step_gemm(&h.Wy, rows, S, H, 0, Z, h.O)
    add_bias(Z, rows, h.O, <const floating *> h.b_y)
    if h.use_softmax:
        softmax(Z, rows, h.O)


cdef list head_setup(Head *h, cnp.ndarray Y, cnp.ndarray W_y, cnp.ndarray b_y, str output,
                     str target, lengths, int N, int T, dict grads, sample_weight=None):
    """Fill h (all but h.Z) for a loss_and_grad call, putting the new "W_y" and "b_y" gradient
    arrays into grads, or with Y None and grads None for a prediction (W_y then goes to the
    packed kernel). sample_weight: None or validated float64 (N,) weights of the sequences.
    Returns the arrays behind h's pointers: the caller keeps them alive until the kernels
    are done."""
    memset(h, 0, sizeof(Head))
    h.W_y, h.b_y, h.O = data(W_y), data(b_y), W_y.shape[1]
    h.last, h.use_softmax = target == "last", output == "softmax"
    if Y is not None:
        if h.use_softmax:
            h.labels = <const int64_t *> data(Y)
        else:
            h.Y = data(Y)
    if grads is not None:
        dt = W_y.dtype
        grads["W_y"], grads["b_y"] = np.empty((W_y.shape[0], h.O), dt), np.empty(h.O, dt)
        h.dW_y, h.db_y = data(grads["W_y"]), data(grads["b_y"])
    keep = []
    h.count = N if h.last else N * T
    weight = row_weights(lengths, sample_weight, N, T, h.last)
    if weight is not None:
        h.weight = <const double *> data(weight)
        h.count = weight.sum()
        keep.append(weight)
    if Y is None:
        Wyp = np.empty(packed_elements(W_y.shape[0], h.O, is_float32(W_y)), W_y.dtype)
        h.Wyp = data(Wyp)
        keep.append(Wyp)
    return keep


def row_weights(lengths, sample_weight, int N, int T, bint last):
    """The weight of each row the loss sees, float64 (N,) for target "last", (N*T,) for
    "sequence": 0 at padding (t >= lengths[n]), sample_weight[n] elsewhere (1 without it);
    None when every row weighs 1."""
    if sample_weight is None and (lengths is None or last):
        return None
    if last:
        return np.ascontiguousarray(sample_weight, np.float64)
    w = np.ones((N, T)) if lengths is None else (np.arange(T) < lengths[:, None]).astype(float)
    if sample_weight is not None:
        w *= sample_weight[:, None]
    return w.reshape(-1)


# ---------------------------------------------------------------------------------------------
# The head on its own, for networks whose top states are assembled outside one cell's call
# (deep and bidirectional stacks, fastrnn/stack.py): same signatures as fastrnn/head.py.

def predict(cnp.ndarray S, cnp.ndarray W_y, cnp.ndarray b_y, str output):
    """Y (N, T, O): the outputs for states S (N, T, H) (softmax probabilities if output is
    "softmax"); every row computed alike, whatever the batch (packed W_y)."""
    cdef Head h
    keep = head_setup(&h, None, W_y, b_y, output, "sequence", None, S.shape[0], S.shape[1],
                      None)
    cdef cnp.ndarray Y = np.empty((S.shape[0], S.shape[1], h.O), S.dtype)
    h.Z = data(Y)
    cdef int rows = S.shape[0] * S.shape[1], H = S.shape[2]
    cdef void *Sp = data(S)
    if is_float32(S):
        with nogil:
            head_predict(&h, <const float *> Sp, rows, H)
    else:
        with nogil:
            head_predict(&h, <const double *> Sp, rows, H)
    return Y


def loss_and_grad(cnp.ndarray S, cnp.ndarray W_y, cnp.ndarray b_y, cnp.ndarray Y, str output,
                  str target, lengths=None, sample_weight=None):
    """(loss, dS, dW_y, db_y): the mean loss of the head on states S (N, T, H), its gradient
    with respect to S (N, T, H) (zero at unscored steps) and to the head's weights. Y: as
    for a cell's loss_and_grad (validated); sample_weight (N,) float64 or None."""
    cdef Head h
    cdef int N = S.shape[0], T = S.shape[1], H = S.shape[2]
    grads = {}
    keep = head_setup(&h, Y, W_y, b_y, output, target, lengths, N, T, grads, sample_weight)
    Z = np.empty((N if h.last else N * T, h.O), S.dtype)
    # "last" without lengths writes only dS[:, T-1]: the rest must read as zeros
    dS = np.zeros((N, T, H), S.dtype) if h.last else np.empty((N, T, H), S.dtype)
    D = np.empty((N, H), S.dtype)
    h.Z = data(Z)
    cdef const int64_t *lp = <const int64_t *> data(lengths) if lengths is not None else NULL
    cdef void *Sp = data(S)
    cdef void *Gp = data(dS)
    cdef void *Dp = data(D)
    cdef double loss
    if is_float32(S):
        with nogil:
            loss = head_loss_and_grad(&h, <const float *> Sp, <float *> Gp, <float *> Dp, lp,
                                      N, T, H)
    else:
        with nogil:
            loss = head_loss_and_grad(&h, <const double *> Sp, <double *> Gp, <double *> Dp,
                                      lp, N, T, H)
    return loss, dS, grads["W_y"], grads["b_y"]


# ---------------------------------------------------------------------------------------------
# loss_and_grad's internal buffers (states, their gradients, outputs, scratch) are never
# handed to the caller, so each thread keeps its last set for the next call of the same
# shapes: a training loop then reuses them instead of mapping fresh pages every step (the
# kernel's page zeroing was 20% of the time at T = 10,000). One set per thread at most, shared
# by every cell; release_workspace() frees the calling thread's.
_local = threading.local()


def workspace(dt, shapes):
    """Uninitialised arrays of these shapes and dtype, reused from this thread's last call
    with the same ones."""
    key = (dt, shapes)
    cached = getattr(_local, "workspace", None)
    if cached is None or cached[0] != key:
        _local.workspace = None                 # free the old set before the new one
        cached = (key, tuple(np.empty(shape, dt) for shape in shapes))
        _local.workspace = cached
    return cached[1]


def release_workspace():
    """Free the buffers loss_and_grad keeps for reuse in the calling thread."""
    _local.workspace = None


def activation_(cnp.ndarray Z, str activation):
    """Z <- phi(Z) in place with the C kernel (Z: C-contiguous float32/float64). For tests."""
    cdef int act = ACTIVATIONS.index(activation)
    cdef Py_ssize_t size = Z.size
    cdef void *p = data(Z)
    if is_float32(Z):
        with nogil:
            bias_act(<float *> p, 1, size, size, NULL, act)
    else:
        with nogil:
            bias_act(<double *> p, 1, size, size, NULL, act)
    return Z


def activation_codes():
    """{name: code} of the C kernels' activation enum (csrc/fr_kernels.h), for the test that
    fastrnn.activations.ACTIVATIONS lists them in the same order."""
    return {"identity": FR_IDENTITY, "tanh": FR_TANH, "relu": FR_RELU, "sigmoid": FR_SIGMOID}


def all_finite(cnp.ndarray a):
    """True if the float array a has no NaN or inf: one vectorised pass without a
    temporary for C-contiguous native float32/float64 arrays, NumPy otherwise (a strided or
    reversed view must not be read as if it were contiguous)."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a) and a.dtype.isnative
            and (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 or cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64)):
        return bool(np.isfinite(a).all())
    cdef Py_ssize_t size = a.size
    cdef void *p = data(a)
    cdef bint ok
    if is_float32(a):
        with nogil:
            ok = fr_all_finite_f32(<const float *> p, size)
    else:
        with nogil:
            ok = fr_all_finite_f64(<const double *> p, size)
    return ok
