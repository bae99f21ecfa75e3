"""Model files of format_version 1, written by fastrnn 0.1.0 (tests/data/v1/, made by
tests/data/v1/make_files.py), load with today's fastrnn: the same model, every parameter
bit-identical to the values recorded in the file's user metadata, the same outputs on the
recorded inputs, on both backends. Saved again, they are written as format_version 2."""
import json
import pathlib

import numpy as np
import pytest

import fastrnn
from fastrnn import io as fio

DATA = pathlib.Path(__file__).parent / "data" / "v1"
# name: (sizes (I, H, O), activation, output, dtype, seed), as in make_files.py
CASES = {
    "tanh_linear_f32": ((3, 5, 2), "tanh", "linear", "float32", 1),
    "relu_softmax_f64": ((4, 6, 3), "relu", "softmax", "float64", 2),
    "sigmoid_linear_f64": ((2, 3, 1), "sigmoid", "linear", "float64", 3),
}
V1_META_KEYS = {"format", "format_version", "fastrnn_version", "hyperparameters",
                "param_shapes", "checksum", "user"}


def _assert_close(actual, desired, dtype):
    """Equal to 1e-6 (float32) or 1e-12 (float64), relative to the outputs' scale (the
    files were made with the compiled backend; the NumPy one sums in another order, and an
    output near 0 is a difference of terms of order 1)."""
    tol = 1e-6 if np.dtype(dtype) == np.float32 else 1e-12
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * scale)


def test_the_files_are_there():
    assert sorted(p.stem for p in DATA.glob("*.npz")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_metadata_v1(name):
    (I, H, O), activation, output, dtype, seed = CASES[name]
    meta = fio.read_metadata(DATA / f"{name}.npz")
    assert set(meta) == V1_META_KEYS
    assert meta["format"] == "fastrnn.ElmanRNN" and meta["format_version"] == 1
    assert meta["fastrnn_version"] == "0.1.0"
    assert meta["hyperparameters"] == {            # as stored: format 1 has no "cell"
        "input_size": I, "hidden_size": H, "output_size": O, "activation": activation,
        "output": output, "dtype": dtype, "backend": "cython", "seed": seed}
    assert meta["param_shapes"] == {"W_x": [I, H], "W_s": [H, H], "b": [H], "W_y": [H, O],
                                    "b_y": [O]}
    assert set(meta["user"]) == {"X", "Y_hat", "params"}


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_load_v1(name, backend):
    (I, H, O), activation, output, dtype, seed = CASES[name]
    path = DATA / f"{name}.npz"
    user = fio.read_metadata(path)["user"]
    m = fio.load(path, backend=backend)
    assert type(m) is fastrnn.ElmanRNN
    assert m.hyperparameters() == {          # format 1 is one layer, one direction
        "input_size": I, "hidden_size": H, "output_size": O, "activation": activation,
        "output": output, "dtype": dtype, "backend": backend, "seed": seed,
        "num_layers": 1, "bidirectional": False, "dropout": 0.0}
    assert m.dtype == np.dtype(dtype) and m.backend == backend
    assert list(m.params) == list(m.param_names) == list(user["params"])
    for k, values in user["params"].items():
        p = m.params[k]
        expected = np.array(values, dtype=dtype)
        assert p.dtype == np.dtype(dtype) and p.shape == expected.shape, k
        assert p.flags.c_contiguous and p.flags.writeable, k
        assert p.tobytes() == expected.tobytes(), f"{k} is not bit-identical"
    X = np.array(user["X"], dtype=dtype)
    Y_hat = np.array(user["Y_hat"], dtype=dtype)
    Y, S = m.forward(X)
    assert Y.dtype == np.dtype(dtype) and S.shape == (X.shape[0], X.shape[1], H)
    _assert_close(Y, Y_hat, dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_saved_again_is_v2(tmp_path, name):
    old = fio.load(DATA / f"{name}.npz")
    user = fio.read_metadata(DATA / f"{name}.npz")["user"]
    path = tmp_path / "again.npz"
    fio.save(old, path, metadata=user)
    meta = fio.read_metadata(path)
    assert meta["format_version"] == 2           # one layer: written without the stack keys
    assert meta["hyperparameters"] == {"cell": "elman", **{
        k: v for k, v in old.hyperparameters().items()
        if k not in ("num_layers", "bidirectional", "dropout")}}
    assert meta["user"] == user
    new = fio.load(path)
    assert type(new) is type(old) and new.hyperparameters() == old.hyperparameters()
    assert list(new.params) == list(old.params)
    for k in old.params:
        assert new.params[k].dtype == old.params[k].dtype
        assert new.params[k].tobytes() == old.params[k].tobytes(), k
    X = np.array(user["X"], dtype=old.dtype)
    np.testing.assert_array_equal(new.forward(X)[0], old.forward(X)[0])


def test_v1_file_with_a_cell_is_refused(tmp_path):
    """Format 1 has no "cell": a version 1 file that has one was not written by 0.1.0."""
    src = DATA / "tanh_linear_f32.npz"
    with np.load(src, allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    meta = json.loads(members.pop("__meta__").item())
    meta["hyperparameters"]["cell"] = "elman"
    path = tmp_path / "forged.npz"
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **members)
    with pytest.raises(ValueError, match="format_version 1"):
        fio.load(path)
