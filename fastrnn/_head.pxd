# The compiled output layer and losses, shared by every cell: cimported by the cells'
# kernels (fastrnn/cells/_*.pyx), as scikit-learn's solvers cimport its _cython_blas.
# NumPy twin: fastrnn/head.py.
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t

from fastrnn._gemm cimport StepB


ctypedef struct Head:
    # read only (void * because the precision is not known here)
    const void *W_y         # (H, O)
    const void *b_y         # (O,)
    const void *Y           # real targets (rows, O), or NULL
    const int64_t *labels   # class labels (rows,), or NULL
    const double *weight    # (rows,) each row's weight in the loss (0: not scored), or NULL:
                            # all 1. Padding past a sequence's end (target "sequence" with
                            # lengths) is 0; sample weights multiply
    double count            # sum of the rows' weights (the rows when weight is NULL): the
                            # loss is the weighted mean over them
    # outputs and scratch
    void *Z                 # (rows, O) logits, then their gradient; rows = N if last else N*T
    void *dW_y              # (H, O)
    void *db_y              # (O,)
    void *Wyp               # packed W_y for head_predict, or NULL (BLAS): see head_setup
    StepB Wy
    int O
    bint last               # target "last": only each sequence's last valid state is scored
    bint use_softmax        # softmax + cross-entropy, else linear + MSE


cdef double head_loss_and_grad(Head *h, const floating *S, floating *G, floating *D,
                               const int64_t *lengths, int N, int T, int H) noexcept nogil

cdef void head_predict(Head *h, const floating *S, int rows, int H) noexcept nogil

cdef list head_setup(Head *h, cnp.ndarray Y, cnp.ndarray W_y, cnp.ndarray b_y, str output,
                     str target, lengths, int N, int T, dict grads, sample_weight=*)


cdef inline void *data(cnp.ndarray a) noexcept:
    """The array's data pointer (the arrays are validated C-contiguous)."""
    return cnp.PyArray_DATA(a)


cdef inline bint is_float32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
