"""Saving and loading models, and conversion to and from PyTorch state dicts.

A model file is an uncompressed .npz (zip) archive of the parameters (one .npy member per
key of model.params, float32 or float64) and a __meta__ member holding JSON metadata, and
nothing pickled. The metadata (fastrnn/io/schema.py has the details) records the format
and its version, the fastrnn version, the model's hyperparameters (its cell, sizes, the
cell's options, output, dtype, backend, seed; num_layers, bidirectional and dropout for a
stack), the parameters' shapes, a sha256 checksum of their bytes and the user's metadata.
save writes format_version 2 for a one-layer unidirectional model (as fastrnn did before
stacks, so that older versions still load it) and 3 for a deep or bidirectional one (which
older versions refuse with a message asking for an upgrade); load reads 3, 2 (one layer, one
direction, no dropout, unless the file says otherwise) and the format_version 1 of fastrnn
0.1.0 (Elman networks), and refuses newer versions with a message asking for an upgrade.

save() writes atomically (fastrnn/io/atomic.py): a reader, or a crash, sees either the old
file or the new one, never a mix. load() reads the archive without pickle
(fastrnn/io/npz.py): every member's header is checked against the metadata before its data
is read, the zip CRCs and the checksum are verified, and every failure is a ValueError
naming the file. The model is built with its class's from_params, from the parameters read,
without a random initialisation first.

    io/__init__.py   save, load, read_metadata
    io/atomic.py     atomic writes
    io/npz.py        the no-pickle .npz reader
    io/schema.py     the format: metadata, its checks, the checksum
    io/torch.py      to_torch_state_dict, from_torch_state_dict
"""
import errno
import json
import os

import numpy as np

from .. import _validate
from . import atomic, schema
from .npz import Archive, Invalid, is_corruption
from .schema import FORMAT, FORMAT_VERSION, META_KEY, NewerFormat
from .torch import from_torch_state_dict, to_torch_state_dict

__all__ = ["FORMAT", "FORMAT_VERSION", "from_torch_state_dict", "load", "read_metadata",
           "save", "to_torch_state_dict"]


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
    schema.model_class(model)
    path = _path(path)
    arrays, hyper = schema.model_arrays(model)
    schema.check_json(metadata, "metadata")
    meta = schema.metadata(hyper, arrays, metadata)
    text = json.dumps(meta, allow_nan=False, ensure_ascii=False, sort_keys=False)
    members = {META_KEY: np.array(text)}
    members.update(arrays)
    atomic.write(path, lambda f: np.savez(f, allow_pickle=False, **members), what="the model")


def load(path, backend=None):
    """The model saved at path (by save / model.save), of the class its cell calls for.

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
        _, layout, arrays = _read(f, path, params=True)
    hyperparameters = dict(layout.hyperparameters)
    if backend is not None:
        hyperparameters["backend"] = backend
    try:
        return layout.cls.from_params(arrays, **hyperparameters)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a valid fastrnn model file: {path!r}: its hyperparameters "
                         f"are rejected: {exc}") from exc


def read_metadata(path):
    """The JSON metadata of the model file at path, as a dict, as stored: "format",
    "format_version", "fastrnn_version", "hyperparameters", "param_shapes", "checksum" and
    "user" (the metadata given to save). The parameters are not read, so their checksum is
    not verified. Files of a newer format_version are returned as they are (unchecked
    beyond "format"), so that their version can be inspected."""
    path = _path(path)
    with _open(path) as f:
        meta, _, _ = _read(f, path, params=False)
    return meta


def _path(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}") \
            from None
    return os.fsdecode(path)


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such fastrnn model file", path) from None


def _read(f, path, params):
    """(metadata, Layout or None, {name: array} or None) from the open file f. Every sign
    of a file we did not write becomes a ValueError naming path."""
    layout = arrays = None
    try:
        with Archive(f) as archive:
            if META_KEY not in archive:
                raise Invalid(f"no {META_KEY!r} entry (members: {sorted(archive.names)}); "
                              f"it was not written by fastrnn.save")
            meta = schema.parse(archive.read_text(META_KEY, schema.MAX_META_BYTES))
            if not params and meta["format_version"] > FORMAT_VERSION:
                return meta, None, None
            schema.check_version(meta)
            layout = schema.check(meta)
            if not params:
                return meta, layout, None
            archive.expect_members((META_KEY,) + layout.names)
            arrays = {k: archive.read_array(k, layout.shapes[k], layout.dtype)
                      for k in layout.names}
    except Invalid as exc:
        raise ValueError(f"not a valid fastrnn model file: {path!r}: {exc}") from None
    except NewerFormat as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    except Exception as exc:
        if not is_corruption(exc):
            raise                     # a real I/O error (EIO ...), not the file's content
        raise ValueError(f"not a valid fastrnn model file: {path!r}: the file is truncated "
                         f"or damaged ({type(exc).__name__}: {exc})") from exc
    if schema.checksum(arrays, layout.names) != meta["checksum"]:
        raise ValueError(f"corrupt fastrnn model file: {path!r}: the parameters do not match "
                         f"the checksum stored with them")
    for k in layout.names:
        if not _validate._all_finite(arrays[k]):
            raise ValueError(f"invalid fastrnn model file: {path!r}: parameter {k!r} "
                             f"contains NaN or inf")
    return meta, layout, arrays
