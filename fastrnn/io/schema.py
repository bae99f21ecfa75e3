"""The model file format: its metadata, how it is built from a model and how it is checked.

A model file is an uncompressed .npz holding one .npy member per parameter (named by its key
in model.params) and META_KEY, a 0-d unicode array holding this JSON document:

    {"format": "fastrnn.ElmanRNN", "format_version": 2 or 3, "fastrnn_version": "...",
     "hyperparameters": {"cell": "elman", "input_size": I, "hidden_size": H,
                         "output_size": O, <the cell's options, e.g. "activation">,
                         "output", "dtype", "backend", "seed",
                         format_version 3 only: "num_layers", "bidirectional", "dropout"},
     "param_shapes": {name: shape as a list, for every parameter},
     "checksum": sha256 hex digest of the parameters' bytes (little-endian, C order) in the
                 order of the model's param_names,
     "user": the metadata passed to save (any JSON value)}

The hyperparameters are those of model.hyperparameters() plus "cell", the name of the
model's cell (fastrnn.model.MODELS maps it to the model class); load() passes them, without
"cell", to that class's from_params. The parameter names and shapes come from the model
class too: a file is valid if the class, built from its hyperparameters, has exactly the
parameters param_shapes lists, with those shapes (for a stack, "W_x_l1", "W_x_l0_reverse",
...; the cell spec's stack_weight_names).

format_version 3 adds the stack's hyperparameters, STACK_HYPERPARAMETERS, required there.
save writes the lowest version that holds the model: a one-layer, unidirectional model
without dropout (STACK_DEFAULTS) is written as format_version 2, without those keys, exactly
as fastrnn wrote it before stacks existed, so every reader of version 2 loads it; any other
model is written as version 3, which a fastrnn that reads version 2 at most refuses with
"upgrade fastrnn" (version 2 with the keys would be refused by it too, but as an invalid
file: its from_params has no num_layers argument). A version 2 file is read with the keys
optional, STACK_DEFAULTS where absent (development builds between the stacks and version 3
wrote them there).

format_version 1 (fastrnn 0.1.0) is the same document for the Elman network only: its
hyperparameters are exactly V1_HYPERPARAMETERS (no "cell"), and it is read as cell "elman".
The format name has been "fastrnn.ElmanRNN" since then, whatever the cell: a fastrnn that
only knows format 1 then refuses a newer file for its format_version, asking for an upgrade.
"""
import hashlib
import json
import math
import re

import numpy as np

from .. import _validate
from .._version import __version__
from ..model import MODELS
from .npz import Invalid

FORMAT = "fastrnn.ElmanRNN"
FORMAT_VERSION = 3                  # the newest this fastrnn reads (and writes, for stacks)
META_KEY = "__meta__"
MAX_META_BYTES = 64 << 20           # a larger META_KEY member is not one we wrote
V1_HYPERPARAMETERS = ("input_size", "hidden_size", "output_size", "activation", "output",
                      "dtype", "backend", "seed")
# What every format_version 2 file's hyperparameters hold, besides the cell's options.
REQUIRED = ("cell", "input_size", "hidden_size", "output_size", "output", "dtype", "backend",
            "seed")
# The hyperparameters of deep and bidirectional stacks, new in format_version 3, and the
# values a file without them (version 1 or 2) means: one layer, one direction, no dropout.
STACK_DEFAULTS = {"num_layers": 1, "bidirectional": False, "dropout": 0.0}
STACK_HYPERPARAMETERS = tuple(STACK_DEFAULTS)
_MAX_NDIM = 32                      # numpy's limits
_MAX_ELEMENTS = 2**60


class NewerFormat(Exception):
    """The file is of a format_version this fastrnn does not read (the message says so)."""


class Layout:
    """What a file's metadata describes, checked: the model class (cls), the keyword
    arguments of cls.from_params (hyperparameters), the parameters' names in file order
    (names), their shapes ({name: tuple}) and dtype."""

    def __init__(self, cls, hyperparameters, names, shapes, dtype):
        self.cls, self.hyperparameters = cls, hyperparameters
        self.names, self.shapes, self.dtype = names, shapes, dtype


# ---------------------------------------------------------------------------------------------
# writing

def model_class(model):
    """The registered model class (fastrnn.model.MODELS) that load builds for model; a
    TypeError unless model is an instance of one (with that class's cell)."""
    for cls in MODELS.values():
        if isinstance(model, cls) and type(model).cell is cls.cell:
            return cls
    names = ", ".join(f"fastrnn.{c.__name__}" for c in MODELS.values())
    raise TypeError(f"model must be a fastrnn model ({names}); got {type(model).__name__}")


def model_arrays(model):
    """({name: C-contiguous native array} in the model's param_names order, hyperparameters
    as stored), re-validated: the attributes are public and may have been changed since
    construction, and the file must be one load accepts."""
    cls = model_class(model)
    dt = _validate.float_dtype(model.dtype, "model.dtype")
    hyper = {"cell": cls.cell.name}
    hyper.update(model.hyperparameters())
    hyper = {k: v.item() if isinstance(v, np.generic) else v for k, v in hyper.items()}
    hyper["seed"] = _json_seed(model.seed)
    model._weights()                                  # keys and shapes, with model's message
    arrays = {name: _validate.float_array(model.params[name], f"model.params[{name!r}]",
                                          str(shape), dt, dtype_of="the model")
              for name, shape in model.param_shapes().items()}
    # The class load builds must accept these hyperparameters back (with from_params).
    rebuilt = cls.from_params(arrays, **_model_kwargs(hyper))
    check_json(hyper, "the model's hyperparameters")
    return {k: arrays[k] for k in rebuilt.param_names}, hyper


def metadata(hyperparameters, arrays, user):
    """The JSON document (a dict) of a file holding arrays (in file order): format_version 2
    without the stack's hyperparameters if they are all STACK_DEFAULTS, else 3."""
    version, hyperparameters = versioned(hyperparameters)
    return {
        "format": FORMAT,
        "format_version": version,
        "fastrnn_version": __version__,
        "hyperparameters": hyperparameters,
        "param_shapes": {k: list(a.shape) for k, a in arrays.items()},
        "checksum": checksum(arrays, list(arrays)),
        "user": user,
    }


def versioned(hyperparameters):
    """(format_version, hyperparameters as stored): 2 and the hyperparameters without
    STACK_HYPERPARAMETERS if those are absent or all at their defaults (readable by every
    fastrnn that reads version 2), else 3 and all of them."""
    stack = {k: hyperparameters.get(k, v) for k, v in STACK_DEFAULTS.items()}
    if all(_same(stack[k], v) for k, v in STACK_DEFAULTS.items()):
        return 2, {k: v for k, v in hyperparameters.items() if k not in STACK_DEFAULTS}
    return 3, {**hyperparameters, **stack}


def _same(value, default):
    """value is default, in type (True is not 1) and value."""
    return type(value) is type(default) and value == default


def _json_seed(seed):
    """The seed as stored: None, an int, or a list of ints; None for anything else
    (a Generator, a SeedSequence ...)."""
    if isinstance(seed, (bool, np.bool_)):
        return None
    if isinstance(seed, (int, np.integer)):
        return int(seed)
    if isinstance(seed, (list, tuple)) and seed and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))
            for s in seed):
        return [int(s) for s in seed]
    return None


def check_json(value, where, depth=0):
    """TypeError unless value is plain JSON data (finite floats, string keys)."""
    if depth > 500:
        raise TypeError(f"metadata is nested too deeply to store as JSON (at {where})")
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"metadata must be JSON-serialisable; {where} is {value!r} "
                            f"(JSON has no NaN or infinity)")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"metadata must be JSON-serialisable; {where} has a key "
                                f"{k!r} of type {type(k).__name__} (JSON object keys must "
                                f"be str)")
            check_json(v, f"{where}[{k!r}]", depth + 1)
        return
    raise TypeError(f"metadata must be JSON-serialisable (dict with str keys, list, tuple, "
                    f"str, int, float, bool or None); {where} is of type "
                    f"{type(value).__name__}")


def checksum(arrays, names):
    """sha256 hex digest of the arrays' bytes, little-endian C order, in the order names."""
    h = hashlib.sha256()
    for k in names:
        a = arrays[k]
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# reading

def _reject_constant(name):
    raise ValueError(f"JSON constant {name} is not allowed")


def parse(text):
    """The metadata document in text, checked as far as every format_version shares it:
    a JSON object of our format with a positive integer format_version."""
    try:
        meta = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise Invalid(f"{META_KEY!r} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise Invalid(f"{META_KEY!r} must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise Invalid(f"its format is {meta.get('format')!r}, not {FORMAT!r}")
    v = meta.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise Invalid(f"format_version must be a positive integer; got {v!r}")
    return meta


def check_version(meta):
    """NewerFormat if this fastrnn cannot read the file's format_version."""
    v = meta["format_version"]
    if v > FORMAT_VERSION:
        raise NewerFormat(
            f"the file has format_version {v} (written by fastrnn "
            f"{meta.get('fastrnn_version', 'unknown')!s}), but this fastrnn "
            f"({__version__}) reads format_version {FORMAT_VERSION} at most; "
            f"upgrade fastrnn to load it")


def check(meta):
    """The Layout that the metadata of a format_version 1, 2 or 3 file describes; Invalid
    unless it describes a valid model."""
    missing = [k for k in ("hyperparameters", "param_shapes", "checksum") if k not in meta]
    if missing:
        raise Invalid(f"metadata lacks {missing}")
    hp = meta["hyperparameters"]
    if not isinstance(hp, dict):
        raise Invalid("metadata 'hyperparameters' must be an object")
    if meta["format_version"] == 1:
        hp = _from_v1(hp)
    cell = hp.get("cell")
    if "cell" in hp and not (isinstance(cell, str) and cell in MODELS):
        raise Invalid(f"unknown cell {cell!r}: this fastrnn ({__version__}) has the cells "
                      f"{', '.join(map(repr, MODELS))}")
    cls = MODELS.get(cell)
    required = REQUIRED + (cls.cell.options if cls else ())
    if meta["format_version"] >= 3:
        required += STACK_HYPERPARAMETERS
    missing = [k for k in required if k not in hp]
    if missing:
        raise Invalid(f"metadata 'hyperparameters' lacks {missing}")
    hp = {**STACK_DEFAULTS, **hp}         # versions 1 and 2: one layer, one direction
    try:
        if not isinstance(hp["dtype"], str):
            raise TypeError(f"dtype must be 'float32' or 'float64'; got {hp['dtype']!r}")
        dt = _validate.float_dtype(hp["dtype"])
        _validate.choice(hp["backend"], "backend", _validate.BACKENDS)
    except (TypeError, ValueError) as exc:
        raise Invalid(f"bad hyperparameters: {exc}") from None
    stored = _stored_shapes(meta["param_shapes"])
    cs = meta["checksum"]
    if not isinstance(cs, str) or not re.fullmatch(r"[0-9a-f]{64}", cs):
        raise Invalid(f"checksum must be a sha256 hex digest; got {cs!r}")

    # The model class built from these hyperparameters, holding zero-byte placeholders of the
    # stored shapes: from_params checks the hyperparameters, and that every parameter the
    # class computes from them is there with its shape.
    kwargs = _model_kwargs(hp)
    try:
        placeholders = {k: np.broadcast_to(np.zeros((), dt), s) for k, s in stored.items()}
        try:
            shell = cls.from_params(placeholders, **kwargs)
        except ImportError:               # no compiled backend here: check with NumPy's
            shell = cls.from_params(placeholders, **dict(kwargs, backend="numpy"))
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise Invalid(f"its hyperparameters or param_shapes are rejected by "
                      f"{cls.__name__}.from_params: {reason}") from None
    names = tuple(shell.param_names)
    if set(stored) != set(names):
        raise Invalid(f"param_shapes {_short(meta['param_shapes'])} do not match the "
                      f"hyperparameters: with them, {cls.__name__} has the parameters "
                      f"{ {k: list(s) for k, s in shell.param_shapes().items()} }")
    unknown = sorted(set(kwargs) - set(shell.hyperparameters()))
    if unknown:
        raise Invalid(f"unknown hyperparameters {unknown} for {cls.__name__}")
    return Layout(cls, kwargs, names, {k: stored[k] for k in names}, dt)


def _from_v1(hp):
    """format_version 1 hyperparameters (the Elman network's) in the form of version 2."""
    missing = [k for k in V1_HYPERPARAMETERS if k not in hp]
    if missing:
        raise Invalid(f"metadata 'hyperparameters' lacks {missing}")
    unknown = sorted(set(hp) - set(V1_HYPERPARAMETERS))
    if unknown:
        raise Invalid(f"metadata 'hyperparameters' has keys {unknown} that format_version 1 "
                      f"does not have")
    return {"cell": "elman", **hp}


def _model_kwargs(hp):
    """The keyword arguments of from_params: the stored hyperparameters but "cell"."""
    return {k: v for k, v in hp.items() if k != "cell"}


def _stored_shapes(stored):
    """param_shapes as {name: shape tuple}, checked to be shapes."""
    if not isinstance(stored, dict):
        raise Invalid(f"metadata 'param_shapes' must be an object; got {_short(stored)}")
    out = {}
    for k, s in stored.items():
        if (not isinstance(s, list) or len(s) > _MAX_NDIM
                or any(not isinstance(d, int) or isinstance(d, bool)
                       or not 0 <= d <= _MAX_ELEMENTS for d in s)):
            raise Invalid(f"param_shapes[{k!r}] must be a list of sizes; got {_short(s)}")
        if math.prod(s) > _MAX_ELEMENTS:
            raise Invalid(f"param_shapes[{k!r}] = {_short(s)} is too large for an array")
        out[k] = tuple(s)
    return out


def _short(value, limit=400):
    """repr(value), cut to limit characters (forged metadata can be large)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."
