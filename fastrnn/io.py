"""Saving and loading ElmanRNN models, and conversion to and from PyTorch state dicts.

File format (format_version 1): an uncompressed .npz (zip) archive holding exactly

    W_x.npy, W_s.npy, b.npy, W_y.npy, b_y.npy    the parameters, float32 or float64
    __meta__.npy                                 a 0-d unicode array: a JSON document

and nothing pickled. The JSON document is

    {"format": "fastrnn.ElmanRNN", "format_version": 1, "fastrnn_version": "...",
     "hyperparameters": {"input_size", "hidden_size", "output_size", "activation",
                         "output", "dtype", "backend", "seed"},
     "param_shapes": {"W_x": [I, H], ...},
     "checksum": sha256 hex digest of the parameters' bytes (little-endian, C order) in the
                 order W_x, W_s, b, W_y, b_y,
     "user": the metadata passed to save (any JSON value)}

save() writes a temporary file in the target's directory, fsyncs it and renames it over the
target, so a reader (or a crash) sees either the old file or the new one, never a mix.
load() reads the archive with zipfile and numpy's .npy header parser, never with pickle:
every member's header is checked against the metadata before its data is read, the zip
CRCs and the checksum are verified, and every failure is a ValueError naming the file.
"""
import errno
import hashlib
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from . import _validate
from .model import PARAM_NAMES, ElmanRNN

FORMAT = "fastrnn.ElmanRNN"
FORMAT_VERSION = 1
META_KEY = "__meta__"
MAX_META_BYTES = 64 << 20           # a larger __meta__ member is not one we wrote
_NPY_HEADER_SLACK = 1 << 16         # bound on an .npy member's header (numpy writes < 10 kB)
_READ_CHUNK = 1 << 24               # bytes per read when filling a parameter array
_HYPERPARAMETERS = ("input_size", "hidden_size", "output_size", "activation", "output",
                    "dtype", "backend", "seed")
_TORCH_ACTIVATIONS = ("tanh", "relu")

# Everything zipfile, zlib and numpy's header parser raise on a damaged or forged archive
# (plus OSError EINVAL: zipfile seeking to a negative offset read from a damaged directory).
_CORRUPTION_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
                      KeyError, IndexError, struct.error, zlib.error, NotImplementedError,
                      RuntimeError, OverflowError, SyntaxError, UnicodeError)


class _Invalid(Exception):
    """Internal: the file is not a valid model file (turned into ValueError naming it)."""


# ---------------------------------------------------------------------------------------------
# save

def save(model, path, metadata=None):
    """Write model to path as an .npz of its parameters plus JSON metadata, atomically.

    path is used exactly as given (no ".npz" is appended). metadata: any JSON value (dicts
    with string keys, lists, tuples, str, int, finite float, bool, None), stored under
    "user" and returned by read_metadata(path)["user"]; anything else is a TypeError.

    The file is written to a temporary file in the same directory, flushed and fsynced,
    then renamed onto path (and the directory fsynced where the OS allows): an existing
    file at path is replaced whole or, if anything fails, left untouched, and the temporary
    file is removed. (Only a process killed mid-save can leave a temporary
    ".<name>.*.tmp" file behind; path itself is still the old or the new model.)
    """
    if not isinstance(model, ElmanRNN):
        raise TypeError(f"model must be a fastrnn.ElmanRNN; got {type(model).__name__}")
    path = _path(path)
    arrays, hyper = _model_arrays(model)
    _check_json(metadata, "metadata")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastrnn_version": _fastrnn_version(),
        "hyperparameters": hyper,
        "param_shapes": {k: list(arrays[k].shape) for k in PARAM_NAMES},
        "checksum": _checksum(arrays),
        "user": metadata,
    }
    text = json.dumps(meta, allow_nan=False, ensure_ascii=False, sort_keys=False)
    members = {META_KEY: np.array(text)}
    members.update(arrays)

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"cannot save the model: directory "
                                              f"{directory!r} does not exist", path)
    mode = _new_file_mode(path)
    tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=f".{os.path.basename(path)[:100]}.",
                                      suffix=".tmp", delete=False)
    try:
        with tmp:
            np.savez(tmp, allow_pickle=False, **members)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, mode)
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _model_arrays(model):
    """({name: C-contiguous native array}, hyperparameters dict) of a model, re-validated
    (the attributes are public and may have been changed since construction)."""
    hyper = {
        "input_size": _validate.positive_int(model.input_size, "model.input_size"),
        "hidden_size": _validate.positive_int(model.hidden_size, "model.hidden_size"),
        "output_size": _validate.positive_int(model.output_size, "model.output_size"),
        "activation": _validate.choice(model.activation, "model.activation",
                                       _validate.ACTIVATIONS),
        "output": _validate.choice(model.output, "model.output", _validate.OUTPUTS),
        "dtype": _validate.float_dtype(model.dtype, "model.dtype").name,
        "backend": _validate.choice(model.backend, "model.backend", _validate.BACKENDS),
        "seed": _json_seed(model.seed),
    }
    model._weights()                                  # keys and shapes, with model's message
    dt = np.dtype(hyper["dtype"])
    dims = {"W_x": "(I, H)", "W_s": "(H, H)", "b": "(H,)", "W_y": "(H, O)", "b_y": "(O,)"}
    arrays = {k: _validate.float_array(model.params[k], f"model.params[{k!r}]", dims[k], dt,
                                       dtype_of="the model")
              for k in PARAM_NAMES}
    return arrays, hyper


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


def _check_json(value, where, depth=0):
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
            _check_json(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"metadata must be JSON-serialisable; {where} has a key "
                                f"{k!r} of type {type(k).__name__} (JSON object keys must "
                                f"be str)")
            _check_json(v, f"{where}[{k!r}]", depth + 1)
        return
    raise TypeError(f"metadata must be JSON-serialisable (dict with str keys, list, tuple, "
                    f"str, int, float, bool or None); {where} is of type "
                    f"{type(value).__name__}")


def _checksum(arrays):
    """sha256 hex digest of the parameters' bytes, little-endian C order, in PARAM_NAMES
    order."""
    h = hashlib.sha256()
    for k in PARAM_NAMES:
        a = arrays[k]
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _fastrnn_version():
    from . import __version__        # at call time: fastrnn/__init__ may import this module
    return __version__


def _path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}") \
            from None
    return os.fsdecode(path)


def _new_file_mode(path):
    """Permissions for the new file: those of the file it replaces, else 0o666 & ~umask
    (what open() would give; NamedTemporaryFile creates files 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if umask is None:                 # racy with other threads, hence the last resort
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory):
    """Make the rename durable. Not possible on every OS/filesystem: best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# load

def load(path, backend=None):
    """The ElmanRNN saved at path (by save / ElmanRNN.save).

    backend: "cython" or "numpy"; None uses the one the model was saved with.

    Raises FileNotFoundError if there is no such file, and ValueError naming the file if it
    is not a valid fastrnn model file: not an .npz, truncated or damaged, missing or foreign
    metadata, a newer format_version than this fastrnn reads, pickled or object data (never
    unpickled), parameter shapes or dtypes that disagree with the metadata, a checksum
    mismatch (corrupt) or non-finite parameters.
    """
    path = _path(path)
    if backend is not None:
        _validate.choice(backend, "backend", _validate.BACKENDS)
    with _open(path) as f:
        meta, arrays = _read(f, path, params=True)
    hp = meta["hyperparameters"]
    try:
        model = ElmanRNN(hp["input_size"], hp["hidden_size"], hp["output_size"],
                         activation=hp["activation"], output=hp["output"], dtype=hp["dtype"],
                         seed=hp["seed"], backend=backend or hp["backend"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a valid fastrnn model file: {path!r}: its hyperparameters "
                         f"are rejected: {exc}") from exc
    model.params = arrays
    return model


def read_metadata(path):
    """The JSON metadata of the model file at path, as a dict: "format", "format_version",
    "fastrnn_version", "hyperparameters", "param_shapes", "checksum" and "user" (the
    metadata given to save). The parameters are not read, so their checksum is not
    verified. Files of a newer format_version are returned as they are (unchecked beyond
    "format"), so that their version can be inspected."""
    path = _path(path)
    with _open(path) as f:
        meta, _ = _read(f, path, params=False)
    return meta


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such fastrnn model file", path) from None


def _read(f, path, params):
    """(metadata, {name: array} or None) from the open file f. Every sign of a file we did
    not write becomes a ValueError naming path."""
    try:
        magic = f.read(4)
        if magic != b"PK\x03\x04":
            what = "it is empty" if not magic else (
                "it is a single .npy array, not an .npz archive" if magic == b"\x93NUM"
                else "it is not an .npz (zip) archive")
            raise _Invalid(what)
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise _Invalid(f"duplicate archive members {sorted(names)}")
            by_name = {i.filename: i for i in infos}
            if META_KEY + ".npy" not in by_name:
                raise _Invalid(f"no {META_KEY!r} entry (members: {sorted(names)}); it was "
                               f"not written by fastrnn.save")
            meta = _parse_meta(_read_meta(zf, by_name[META_KEY + ".npy"]))
            if not params and meta["format_version"] > FORMAT_VERSION:
                return meta, None
            _check_version(meta)
            shapes = _check_meta(meta)
            if not params:
                return meta, None
            expected = {k + ".npy" for k in (META_KEY,) + PARAM_NAMES}
            if set(names) != expected:
                extra, missing = set(names) - expected, expected - set(names)
                raise _Invalid("unexpected archive members: "
                               + "; ".join(s for s in (
                                   f"missing {sorted(missing)}" if missing else "",
                                   f"unknown {sorted(extra)}" if extra else "") if s))
            dt = np.dtype(meta["hyperparameters"]["dtype"])
            arrays = {k: _read_param(zf, by_name[k + ".npy"], k, shapes[k], dt)
                      for k in PARAM_NAMES}
    except _Invalid as exc:
        raise ValueError(f"not a valid fastrnn model file: {path!r}: {exc}") from None
    except _Version as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    except (*_CORRUPTION_ERRORS, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):
            raise                     # a real I/O error (EIO ...), not the file's content
        raise ValueError(f"not a valid fastrnn model file: {path!r}: the file is truncated "
                         f"or damaged ({type(exc).__name__}: {exc})") from exc
    if _checksum(arrays) != meta["checksum"]:
        raise ValueError(f"corrupt fastrnn model file: {path!r}: the parameters do not match "
                         f"the checksum stored with them")
    for k in PARAM_NAMES:
        if not _validate._all_finite(arrays[k]):
            raise ValueError(f"invalid fastrnn model file: {path!r}: parameter {k!r} "
                             f"contains NaN or inf")
    return meta, arrays


class _Version(Exception):
    pass


def _read_header(f, member):
    """(shape, fortran_order, dtype) of the .npy member open as f."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise _Invalid(f"member {member!r} has unsupported .npy format version {version}")


def _no_objects(dtype, member):
    if dtype.hasobject:
        raise _Invalid(f"member {member!r} holds Python objects (pickled data, dtype "
                       f"{dtype}); fastrnn model files hold no pickles and this one is not "
                       f"unpickled")


def _fill(f, arr, member):
    """Read arr.nbytes bytes from f into arr (C-contiguous), then make sure the member ends
    there (which also makes zipfile check its CRC)."""
    flat = arr.reshape(-1).view(np.uint8)
    pos = 0
    while pos < flat.size:
        chunk = f.read(min(_READ_CHUNK, flat.size - pos))
        if not chunk:
            raise _Invalid(f"member {member!r} is truncated")
        flat[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    if f.read(1):
        raise _Invalid(f"member {member!r} has data after its array")


def _read_meta(zf, info):
    if info.file_size > MAX_META_BYTES:
        raise _Invalid(f"{META_KEY!r} is {info.file_size} bytes, too large to be metadata")
    with zf.open(info) as f:
        shape, fortran, dtype = _read_header(f, META_KEY)
        _no_objects(dtype, META_KEY)
        if dtype.kind == "U" and shape == ():
            arr = np.empty((), dtype)
        elif dtype == np.uint8 and len(shape) == 1:
            arr = np.empty(shape, dtype)
        else:
            raise _Invalid(f"{META_KEY!r} must be a 0-d unicode array or 1-D uint8 bytes "
                           f"holding JSON; got dtype {dtype}, shape {shape}")
        if arr.nbytes > MAX_META_BYTES:
            raise _Invalid(f"{META_KEY!r} is too large to be metadata")
        _fill(f, arr, META_KEY)
    if dtype.kind == "U":
        return str(arr[()])
    return arr.tobytes().decode("utf-8")


def _reject_constant(name):
    raise ValueError(f"JSON constant {name} is not allowed")


def _parse_meta(text):
    try:
        meta = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise _Invalid(f"{META_KEY!r} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _Invalid(f"{META_KEY!r} must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise _Invalid(f"its format is {meta.get('format')!r}, not {FORMAT!r}")
    v = meta.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise _Invalid(f"format_version must be a positive integer; got {v!r}")
    return meta


def _check_version(meta):
    v = meta["format_version"]
    if v > FORMAT_VERSION:
        raise _Version(
            f"the file has format_version {v} (written by fastrnn "
            f"{meta.get('fastrnn_version', 'unknown')!s}), but this fastrnn "
            f"({_fastrnn_version()}) reads format_version {FORMAT_VERSION} at most; "
            f"upgrade fastrnn to load it")


def _check_meta(meta):
    """Validated metadata of a format_version 1 file; returns {name: shape}."""
    missing = [k for k in ("hyperparameters", "param_shapes", "checksum") if k not in meta]
    if missing:
        raise _Invalid(f"metadata lacks {missing}")
    hp = meta["hyperparameters"]
    if not isinstance(hp, dict):
        raise _Invalid("metadata 'hyperparameters' must be an object")
    missing = [k for k in _HYPERPARAMETERS if k not in hp]
    if missing:
        raise _Invalid(f"metadata 'hyperparameters' lacks {missing}")
    try:
        I, H, O = (_validate.positive_int(hp[k], k)
                   for k in ("input_size", "hidden_size", "output_size"))
        _validate.choice(hp["activation"], "activation", _validate.ACTIVATIONS)
        _validate.choice(hp["output"], "output", _validate.OUTPUTS)
        _validate.choice(hp["backend"], "backend", _validate.BACKENDS)
        if not isinstance(hp["dtype"], str):
            raise TypeError(f"dtype must be 'float32' or 'float64'; got {hp['dtype']!r}")
        _validate.float_dtype(hp["dtype"])
    except (TypeError, ValueError) as exc:
        raise _Invalid(f"bad hyperparameters: {exc}") from None
    expected = {"W_x": (I, H), "W_s": (H, H), "b": (H,), "W_y": (H, O), "b_y": (O,)}
    stored = meta["param_shapes"]
    if (not isinstance(stored, dict) or set(stored) != set(PARAM_NAMES)
            or any(not isinstance(stored[k], list) or tuple(stored[k]) != expected[k]
                   for k in PARAM_NAMES)):
        raise _Invalid(f"param_shapes {stored!r} do not match the hyperparameters "
                       f"(input_size={I}, hidden_size={H}, output_size={O}: expected "
                       f"{ {k: list(s) for k, s in expected.items()} })")
    cs = meta["checksum"]
    if not isinstance(cs, str) or not re.fullmatch(r"[0-9a-f]{64}", cs):
        raise _Invalid(f"checksum must be a sha256 hex digest; got {cs!r}")
    return expected


def _read_param(zf, info, name, shape, dt):
    member = name
    nbytes = math.prod(shape) * dt.itemsize
    if info.file_size > nbytes + _NPY_HEADER_SLACK:
        raise _Invalid(f"member {member!r} is {info.file_size} bytes, larger than a "
                       f"{shape} {dt} array")
    with zf.open(info) as f:
        got_shape, fortran, got_dt = _read_header(f, member)
        _no_objects(got_dt, member)
        if got_dt.kind != "f" or got_dt.newbyteorder("=") != dt:
            raise _Invalid(f"parameter {name!r} has dtype {got_dt}, but the metadata says "
                           f"{dt}")
        if tuple(got_shape) != shape:
            raise _Invalid(f"parameter {name!r} has shape {tuple(got_shape)}, but the "
                           f"metadata says {shape}")
        buf = np.empty(shape[::-1] if fortran else shape, got_dt)
        _fill(f, buf, member)
    if fortran:
        buf = buf.T
    if buf.flags.c_contiguous and buf.dtype == dt:
        return buf
    return np.ascontiguousarray(buf, dtype=dt)


# ---------------------------------------------------------------------------------------------
# PyTorch

_RNN_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")


def to_torch_state_dict(model, rnn_prefix="rnn.", linear_prefix="linear."):
    """The model's parameters as a state dict for torch.nn.RNN + torch.nn.Linear, as
    C-contiguous NumPy arrays (torch is not needed):

        {rnn_prefix + "weight_ih_l0": W_x.T, rnn_prefix + "weight_hh_l0": W_s.T,
         rnn_prefix + "bias_ih_l0": b, rnn_prefix + "bias_hh_l0": zeros(H),
         linear_prefix + "weight": W_y.T, linear_prefix + "bias": b_y}

    For a module with attributes rnn = nn.RNN(I, H, nonlinearity=model.activation,
    batch_first=True) and linear = nn.Linear(H, O) (in the model's dtype), load it with
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}). The torch
    module computes the outputs before any softmax: for output="softmax" apply
    torch.softmax(..., dim=-1) to get model.forward's probabilities. Only activations
    "tanh" and "relu" exist in nn.RNN.
    """
    if not isinstance(model, ElmanRNN):
        raise TypeError(f"model must be a fastrnn.ElmanRNN; got {type(model).__name__}")
    _prefix(rnn_prefix, "rnn_prefix")
    _prefix(linear_prefix, "linear_prefix")
    if model.activation not in _TORCH_ACTIVATIONS:
        raise ValueError(f"torch.nn.RNN supports nonlinearity 'tanh' or 'relu' only; this "
                         f"model's activation is {model.activation!r}")
    a, _ = _model_arrays(model)
    return {
        rnn_prefix + "weight_ih_l0": np.ascontiguousarray(a["W_x"].T),
        rnn_prefix + "weight_hh_l0": np.ascontiguousarray(a["W_s"].T),
        rnn_prefix + "bias_ih_l0": a["b"].copy(),
        rnn_prefix + "bias_hh_l0": np.zeros(model.hidden_size, a["b"].dtype),
        linear_prefix + "weight": np.ascontiguousarray(a["W_y"].T),
        linear_prefix + "bias": a["b_y"].copy(),
    }


def from_torch_state_dict(state, activation="tanh", output="linear", dtype=None,
                          rnn_prefix="rnn.", linear_prefix="linear.", backend="cython"):
    """An ElmanRNN holding the weights of a torch.nn.RNN (1 layer, unidirectional) followed
    by a torch.nn.Linear, from their state dict (torch tensors or NumPy arrays).

    state: a mapping with rnn_prefix + "weight_ih_l0" (H, I), "weight_hh_l0" (H, H),
    "bias_ih_l0" (H,), "bias_hh_l0" (H,) and linear_prefix + "weight" (O, H), "bias" (O,).
    The biases may be absent together (bias=False modules: zeros). Other keys, outside
    those names, are ignored. b = bias_ih + bias_hh.
    activation: the RNN's nonlinearity, "tanh" or "relu". output: "linear", or "softmax"
    if the torch outputs are logits fed to a softmax.
    dtype: "float32" or "float64"; None takes the state's dtype (which must then be float32
    or float64, the same for every array).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping (a state dict) of arrays or tensors; got "
                        f"{type(state).__name__}")
    _prefix(rnn_prefix, "rnn_prefix")
    _prefix(linear_prefix, "linear_prefix")
    if not isinstance(activation, str) or activation not in _TORCH_ACTIVATIONS:
        raise ValueError(f"activation must be 'tanh' or 'relu' (torch.nn.RNN's "
                         f"nonlinearities); got {activation!r}")
    _validate.choice(output, "output", _validate.OUTPUTS)
    _validate.choice(backend, "backend", _validate.BACKENDS)
    if dtype is not None:
        dtype = _validate.float_dtype(dtype)

    unsupported = sorted(
        k for k in state if isinstance(k, str) and k.startswith(rnn_prefix)
        and (m := _RNN_KEY.fullmatch(k[len(rnn_prefix):]))
        and (m.group(3) != "0" or m.group(4) or m.group(2) == "hr"))
    if unsupported:
        raise ValueError(f"only a 1-layer, unidirectional torch.nn.RNN (num_layers=1, "
                         f"bidirectional=False) is supported; state has {unsupported}")

    w_ih, w_hh = rnn_prefix + "weight_ih_l0", rnn_prefix + "weight_hh_l0"
    b_ih, b_hh = rnn_prefix + "bias_ih_l0", rnn_prefix + "bias_hh_l0"
    w_y, b_y = linear_prefix + "weight", linear_prefix + "bias"
    missing = [k for k in (w_ih, w_hh, w_y) if k not in state]
    if (b_ih in state) != (b_hh in state):
        missing.append(b_hh if b_ih in state else b_ih)
    if missing:
        present = sorted(map(str, state))
        raise ValueError(f"state is missing {missing} (with rnn_prefix={rnn_prefix!r}, "
                         f"linear_prefix={linear_prefix!r}); its keys are {present}")

    arrays = {k: _torch_array(state[k], k)
              for k in (w_ih, w_hh, b_ih, b_hh, w_y, b_y) if k in state}
    if dtype is None:
        dts = {a.dtype.newbyteorder("=") for a in arrays.values()}
        if len(dts) != 1 or next(iter(dts)) not in _validate.FLOAT_DTYPES:
            raise TypeError(f"the state's arrays have dtypes "
                            f"{ {k: str(a.dtype) for k, a in arrays.items()} }; with "
                            f"dtype=None they must all be float32 or all float64 (pass "
                            f"dtype='float32' or 'float64' to convert)")
        dtype = next(iter(dts))
    for k, a in arrays.items():
        if a.dtype.kind != "f":
            raise TypeError(f"state[{k!r}] must be a float array; got dtype {a.dtype}")

    W_ih = arrays[w_ih]
    if W_ih.ndim != 2:
        raise ValueError(f"state[{w_ih!r}] must be 2-D (H, I); got shape {W_ih.shape}")
    H, I = W_ih.shape
    W_y = arrays[w_y]
    if W_y.ndim != 2 or W_y.shape[1] != H:
        raise ValueError(f"state[{w_y!r}] must have shape (O, H) with H = {H} (from "
                         f"{w_ih!r} {W_ih.shape}); got {W_y.shape}")
    O = W_y.shape[0]
    expected = {w_hh: (H, H), b_ih: (H,), b_hh: (H,), b_y: (O,)}
    for k, shape in expected.items():
        if k in arrays and arrays[k].shape != shape:
            raise ValueError(f"state[{k!r}] must have shape {shape} to match {w_ih!r} "
                             f"{W_ih.shape} and {w_y!r} {W_y.shape}; got {arrays[k].shape}")
    if min(H, I, O) < 1:
        raise ValueError(f"the state's sizes must be >= 1; got I={I}, H={H}, O={O}")

    if b_ih in arrays:
        b = arrays[b_ih].astype(np.float64) + arrays[b_hh].astype(np.float64)
    else:
        b = np.zeros(H)
    params = {
        "W_x": np.ascontiguousarray(W_ih.T, dtype=dtype),
        "W_s": np.ascontiguousarray(arrays[w_hh].T, dtype=dtype),
        "b": np.ascontiguousarray(b, dtype=dtype),
        "W_y": np.ascontiguousarray(W_y.T, dtype=dtype),
        "b_y": (np.ascontiguousarray(arrays[b_y], dtype=dtype) if b_y in arrays
                else np.zeros(O, dtype)),
    }
    for k, a in params.items():
        if not _validate._all_finite(a):
            raise ValueError(f"the state's weights must be finite; {k} (from the state dict, "
                             f"in {dtype}) contains NaN or inf")
    model = ElmanRNN(I, H, O, activation=activation, output=output, dtype=dtype, seed=None,
                     backend=backend)
    model.params = params
    return model


def _prefix(value, name):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str; got {type(value).__name__}")


def _torch_array(value, key):
    """A NumPy view/copy of a tensor or array-like state entry."""
    try:
        if hasattr(value, "detach"):
            return np.asarray(value.detach().cpu().numpy())
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"state[{key!r}] cannot be converted to a NumPy array ({exc}); "
                        f"convert it to float32 or float64 first (e.g. tensor.float())") \
            from None
