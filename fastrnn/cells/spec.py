"""CellSpec: the one source of truth for a recurrent cell's layout.

A spec names a cell's parameters and their shapes (gate blocks stacked along the last axis,
in PyTorch's gate order), its states (h; or h and c), its options, how its parameters map
onto a PyTorch state dict, and its two backends. Everything above fastrnn/cells/ (model,
init, io, _validate, train, diagnostics, sklearn) reads the layout from here.

The backends of a cell share one calling convention, positional, built from the spec:

    forward(X, *state0, *weights, *options, lengths, reverse)            -> states
    backward(X, *state0, *weights, *states, *dstates, *options, lengths) -> grads
    predict(X, *state0, *weights, W_y, b_y, *options, output, lengths)   -> (Y, *states)
    loss_and_grad(X, Y, *state0, *weights, W_y, b_y, *options, output, target,
                  input_grads, lengths, return_state, state_grad_norms,
                  sample_weight)                                         -> (loss, grads[, state])
    forward_train(X, *state0, *weights, *options, lengths, reverse)     -> (states, stash)
    backward_train(X, *state0, *weights, states, stash, dH, *options, lengths, reverse,
                   input_grads)                                          -> grads

with state0 in the order of `states`, weights in the order of `weights`, options in the
order of `options`; for the Elman cell that is (h0,), (W_x, W_s, b), (activation,). The
states forward returns are one (N, T, H) array per state (a tuple if there are several;
predict returns them after Y); the final state of a sequence is its last step.
"""
import importlib
from dataclasses import dataclass, field

from .. import _validate


@dataclass(frozen=True)
class Weight:
    """One parameter of a cell: name, the size its rows follow ("I": the layer's input size,
    "H": the hidden size, None: a vector) and the number of H-wide gate blocks in its
    columns."""
    name: str
    rows: str | None
    blocks: int

    def __post_init__(self):
        # the shape in words, for messages: "(I, 4H)", "(H, H)", "(3H,)"
        cols = "H" if self.blocks == 1 else f"{self.blocks}H"
        object.__setattr__(self, "dims", f"({cols},)" if self.rows is None
                           else f"({self.rows}, {cols})")

    def shape(self, input_size, hidden_size):
        cols = self.blocks * hidden_size
        if self.rows is None:
            return (cols,)
        return (input_size if self.rows == "I" else hidden_size, cols)


@dataclass(frozen=True)
class CellSpec:
    """A recurrent cell. See the module docstring for the backends' calling convention.

    name: "elman", "lstm", "gru". gates: the gate blocks in PyTorch's order (one block,
    ("a",), for Elman). states: the recurrent state arrays, each (N, H). weights: the cell's
    parameters. options: names of the cell's own hyperparameters passed to the backends
    (Elman: the activation). torch_mode: the torch.nn module that holds the same cell
    ("RNN", "LSTM", "GRU"). torch_bias: "sum" if the cell keeps one bias b =
    bias_ih + bias_hh, "separate" if b = bias_ih and b_s = bias_hh. buffers_per_step: how
    many (N, T, H) arrays the compiled forward pass fills (states and gate activations), for
    the memory check before allocating. init_biases(params, H, rng, **options): the cell's
    own initialisation step after the scheme (the LSTM's forget-gate bias), or None.
    """
    name: str
    gates: tuple
    states: tuple
    weights: tuple
    options: tuple
    torch_mode: str
    torch_bias: str
    buffers_per_step: int                   # (N, T, H) arrays the forward pass allocates
    numpy_module: str                       # the NumPy twin, e.g. "fastrnn.cells.elman"
    compiled_module: str                    # e.g. "fastrnn.cells._elman"
    init_biases: object = None              # cell-specific init after the scheme, or None
    _modules: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        # Derived once (the validation reads them on every call):
        #   n_gates: G; weight_names: in order; recurrent_weight: the (H, G*H) weight whose
        #   rows fix H; state_args: the initial-state argument names ("h0", "c0").
        set_ = object.__setattr__
        set_(self, "n_gates", len(self.gates))
        set_(self, "weight_names", tuple(w.name for w in self.weights))
        set_(self, "recurrent_weight", next(w.name for w in self.weights if w.rows == "H"))
        set_(self, "state_args", tuple(f"{s}0" for s in self.states))

    def weight_shapes(self, input_size, hidden_size):
        """{name: shape} of the cell's parameters for this input and hidden size."""
        return {w.name: w.shape(input_size, hidden_size) for w in self.weights}

    def stack_weight_names(self, num_layers=1, bidirectional=False):
        """The parameter names of a stack, layer by layer, the forward direction before the
        reverse one (PyTorch's order): a list of L * D tuples in the order of weights.
        Layer 0's forward direction keeps the plain names ("W_x"), so a one-layer network's
        parameters are named as before; the others take PyTorch's suffixes ("W_x_l1",
        "W_x_l0_reverse", "W_x_l1_reverse")."""
        return [tuple(layer_name(w, layer, reverse) for w in self.weight_names)
                for layer in range(num_layers) for reverse in range(1 + bool(bidirectional))]

    def stack_weight_shapes(self, input_size, hidden_size, num_layers=1, bidirectional=False):
        """{name: shape} of every cell parameter of a stack (see stack_weight_names): layer 0
        reads the input (I features), each layer above the states of the one below (D*H)."""
        D = 1 + bool(bidirectional)
        shapes = {}
        for k, names in enumerate(self.stack_weight_names(num_layers, bidirectional)):
            width = input_size if k < D else D * hidden_size
            shapes.update(zip(names, self.weight_shapes(width, hidden_size).values()))
        return shapes

    def backend(self, backend):
        """The module implementing this cell for backend "cython" or "numpy"."""
        _validate.choice(backend, "backend", _validate.BACKENDS)
        name = self.numpy_module if backend == "numpy" else self.compiled_module
        module = self._modules.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                if backend == "numpy":
                    raise
                raise ImportError(
                    f"the compiled extension {name} is not available ({exc}). fastrnn was "
                    f"imported from {__file__.rsplit('/', 3)[0]}: if that is the source tree, "
                    "run from another directory (or use the `fastrnn`/`pytest` commands), "
                    "or build in place with `pip install -e .`; or use backend='numpy'") \
                    from None
            self._modules[name] = module
        return module


def layer_name(name, layer, reverse):
    """The parameter name of weight `name` in layer `layer` (0-based), direction `reverse`:
    "W_x", "W_x_l1", "W_x_l0_reverse" (PyTorch's suffixes; layer 0 forwards unsuffixed)."""
    if layer == 0 and not reverse:
        return name
    return f"{name}_l{layer}" + ("_reverse" if reverse else "")
