"""fastrnn: fast recurrent networks on the CPU: Elman, LSTM and GRU cells.

    s_t = phi(x_t W_x + s_{t-1} W_s + b)        y_t = s_t W_y + b_y  (or its softmax)

(the Elman cell; fastrnn.LSTM and fastrnn.GRU follow PyTorch's nn.LSTM and nn.GRU).

The hot loops are Cython over BLAS with vectorised C kernels; ``backend="numpy"`` runs the
pure-NumPy reference with the same signatures.
"""
from ._version import __version__
from .activations import ACTIVATIONS
from ._threads import threads
from .functional import (cell_backward, cell_forward, cell_loss_and_grad, cell_predict,
                         elman_backward, elman_forward, elman_loss_and_grad, elman_predict,
                         get_backend, stack_loss_and_grad, stack_predict)
from .io import from_torch_state_dict, load, read_metadata, save, to_torch_state_dict
from .model import GRU, LSTM, ElmanRNN, RecurrentModel
from .train import Callback, EarlyStopping, History, ModelCheckpoint
from . import onnx          # fastrnn.onnx.export; imports the onnx package only when called


__all__ = ["ACTIVATIONS", "Callback", "EarlyStopping", "ElmanRNN", "GRU", "History", "LSTM",
           "ModelCheckpoint", "RecurrentModel", "cell_backward", "cell_forward", "cell_loss_and_grad",
           "cell_predict", "elman_backward", "elman_forward", "elman_loss_and_grad", "elman_predict",
           "from_torch_state_dict", "get_backend", "load", "read_metadata", "save",
           "stack_loss_and_grad", "stack_predict", "threads",
           "to_torch_state_dict", "__version__"]
