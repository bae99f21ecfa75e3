"""Saving and loading deep and bidirectional models (num_layers, bidirectional, dropout):
round trips of every cell, the format_version each is written as (2 for one layer and one
direction without dropout, exactly as before stacks; 3 otherwise), and files of format 2
written before stacks (no stack keys) loading as one layer, one direction, no dropout."""
import json

import numpy as np
import pytest

import fastrnn
from fastrnn import io as fio
from fastrnn.io import schema

CELLS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
STACK_KEYS = ("num_layers", "bidirectional", "dropout")


def make_model(cell, num_layers=1, bidirectional=False, dropout=0.0, dtype="float64",
               backend="cython", sizes=(3, 4, 2), seed=1):
    """A model whose parameters are not its seeded initialisation."""
    m = CELLS[cell](*sizes, num_layers=num_layers, bidirectional=bidirectional,
                    dropout=dropout, dtype=dtype, seed=seed, backend=backend)
    rng = np.random.default_rng(seed + 100)
    for p in m.params.values():
        p[...] = (0.5 * rng.standard_normal(p.shape)).astype(p.dtype)
    return m


def inputs(model, N=3, T=6, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (N, T, model.input_size)).astype(model.dtype)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def assert_same_outputs(a, b, X, lengths=None):
    """forward (outputs, states, final states) bit for bit."""
    Y, S, st = a.forward(X, lengths=lengths, return_state=True)
    Y2, S2, st2 = b.forward(X, lengths=lengths, return_state=True)
    assert Y.tobytes() == Y2.tobytes() and S.tobytes() == S2.tobytes()
    for s, s2 in zip(as_tuple(st), as_tuple(st2), strict=True):
        assert s.shape == s2.shape and s.tobytes() == s2.tobytes()


def write_npz(path, meta, arrays):
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)


def members(path):
    """(metadata, {name: array}) of a saved file, read with numpy."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__meta__").item()), arrays


# ---------------------------------------------------------------------------------------------
# Round trips

@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, cell, num_layers, bidirectional, dtype):
    dropout = 0.25 if num_layers > 1 else 0.0
    m = make_model(cell, num_layers, bidirectional, dropout, dtype=dtype)
    path = tmp_path / "m.npz"
    m.save(path)
    meta = fio.read_metadata(path)
    stacked = num_layers > 1 or bidirectional
    assert meta["format_version"] == (3 if stacked else 2)
    stored = meta["hyperparameters"]
    if stacked:
        assert {k: stored[k] for k in STACK_KEYS} == {
            "num_layers": num_layers, "bidirectional": bidirectional, "dropout": dropout}
    else:                                 # as fastrnn wrote it before stacks
        assert not set(STACK_KEYS) & set(stored)
    assert meta["param_shapes"] == {k: list(s) for k, s in m.param_shapes().items()}
    assert list(meta["param_shapes"]) == list(m.param_names)

    m2 = fio.load(path)
    assert type(m2) is type(m)
    assert m2.hyperparameters() == m.hyperparameters()
    assert (m2.num_layers, m2.bidirectional, m2.dropout) == (num_layers, bidirectional,
                                                             dropout)
    assert list(m2.params) == list(m.param_names)
    for k in m.param_names:
        assert m2.params[k].dtype == m.params[k].dtype
        assert m2.params[k].tobytes() == m.params[k].tobytes(), k
        assert not np.shares_memory(m2.params[k], m.params[k])
    X = inputs(m)
    assert_same_outputs(m, m2, X)
    assert_same_outputs(m, m2, X, lengths=np.array([6, 2, 4]))
    # and on the other backend, built from the same file
    m3 = fio.load(path, backend="numpy")
    m.backend = "numpy"
    assert_same_outputs(m, m3, X)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_one_layer_with_dropout_is_version_3(tmp_path, cell):
    """dropout acts between layers only, but the file keeps it: a one-layer model with
    dropout is written as version 3 (version 2 has no place for it)."""
    m = make_model(cell, dropout=0.5)
    m.save(tmp_path / "m.npz")
    meta = fio.read_metadata(tmp_path / "m.npz")
    assert meta["format_version"] == 3
    assert meta["hyperparameters"]["dropout"] == 0.5
    assert fio.load(tmp_path / "m.npz").dropout == 0.5


def test_save_stack_is_atomic_and_checksummed(tmp_path):
    """The stacked parameters are covered by the checksum, in param_names order."""
    m = make_model("lstm", 2, True)
    path = tmp_path / "m.npz"
    m.save(path)
    meta, arrays = members(path)
    assert meta["checksum"] == schema.checksum(arrays, list(m.param_names))
    arrays["W_s_l1_reverse"][0, 0] += 1.0
    write_npz(path, meta, arrays)
    with pytest.raises(ValueError, match="checksum"):
        fio.load(path)


# ---------------------------------------------------------------------------------------------
# Files of earlier versions

@pytest.mark.parametrize("cell", sorted(CELLS))
def test_old_v2_file_loads(tmp_path, cell):
    """A format 2 file as fastrnn wrote it before stacks: its metadata written by hand,
    hyperparameters without num_layers, bidirectional, dropout. It loads as one layer, one
    direction, no dropout."""
    m = make_model(cell)
    arrays = {k: m.params[k] for k in m.param_names}
    hp = {"cell": cell, "input_size": 3, "hidden_size": 4, "output_size": 2,
          **{k: getattr(m, k) for k in m.cell.options},
          "output": "linear", "dtype": "float64", "backend": "cython", "seed": 1}
    meta = {"format": "fastrnn.ElmanRNN", "format_version": 2,
            "fastrnn_version": "0.2.0.dev0", "hyperparameters": hp,
            "param_shapes": {k: list(a.shape) for k, a in arrays.items()},
            "checksum": schema.checksum(arrays, list(arrays)), "user": {"note": "old"}}
    path = tmp_path / "old.npz"
    write_npz(path, meta, arrays)
    m2 = fio.load(path)
    assert type(m2) is type(m)
    assert (m2.num_layers, m2.bidirectional, m2.dropout) == (1, False, 0.0)
    assert m2.hyperparameters() == m.hyperparameters()
    assert fio.read_metadata(path)["user"] == {"note": "old"}
    assert_same_outputs(m, m2, inputs(m))
    # The current code writes the same document for a one-layer model (but the version).
    m.save(tmp_path / "new.npz")
    new = fio.read_metadata(tmp_path / "new.npz")
    assert new["format_version"] == 2
    assert new["hyperparameters"] == hp
    assert new["param_shapes"] == meta["param_shapes"] and new["checksum"] == meta["checksum"]


def test_v2_file_with_stack_keys_loads(tmp_path):
    """Development builds between the stacks and format 3 wrote the stack keys into
    version 2 files: those load too."""
    m = make_model("gru", 2, True, 0.1)
    path = tmp_path / "m.npz"
    m.save(path)
    meta, arrays = members(path)
    assert meta["format_version"] == 3
    meta["format_version"] = 2
    write_npz(path, meta, arrays)
    m2 = fio.load(path)
    assert m2.hyperparameters() == m.hyperparameters()
    assert_same_outputs(m, m2, inputs(m))


def test_older_reader_refuses_stacks_asking_for_an_upgrade(tmp_path, monkeypatch):
    """A fastrnn that reads format 2 at most (simulated here by its version gate; the
    fastrnn before stacks does the same) loads a one-layer file and refuses a stack with
    "upgrade" rather than as an invalid file."""
    one, deep = tmp_path / "one.npz", tmp_path / "deep.npz"
    make_model("lstm").save(one)
    make_model("lstm", 2, True).save(deep)
    monkeypatch.setattr(schema, "FORMAT_VERSION", 2)
    assert fio.load(one).num_layers == 1
    with pytest.raises(ValueError, match="format_version 3.*reads format_version 2 at most"
                                         ".*upgrade"):
        fio.load(deep)


@pytest.mark.parametrize("key", STACK_KEYS)
def test_v3_requires_the_stack_keys(tmp_path, key):
    path = tmp_path / "m.npz"
    make_model("elman", 2).save(path)
    meta, arrays = members(path)
    del meta["hyperparameters"][key]
    write_npz(path, meta, arrays)
    with pytest.raises(ValueError, match=f"lacks \\['{key}'\\]"):
        fio.load(path)


@pytest.mark.parametrize("key,value", [("num_layers", 0), ("num_layers", 2.0),
                                       ("num_layers", True), ("bidirectional", 1),
                                       ("bidirectional", "yes"), ("dropout", 1.0),
                                       ("dropout", -0.1), ("dropout", "0.5")])
def test_bad_stack_hyperparameters(tmp_path, key, value):
    path = tmp_path / "m.npz"
    make_model("lstm", 2, True).save(path)
    meta, arrays = members(path)
    meta["hyperparameters"][key] = value
    write_npz(path, meta, arrays)
    with pytest.raises(ValueError, match=f"not a valid fastrnn model file.*{key}"):
        fio.load(path)


@pytest.mark.parametrize("change", ["layers", "direction", "v2"])
def test_stack_keys_and_parameters_must_agree(tmp_path, change):
    """The parameters in the file are those the stored num_layers and bidirectional call
    for; a stack's file relabelled as one layer (or as format 2 without the keys) is
    refused."""
    path = tmp_path / "m.npz"
    make_model("gru", 2, True).save(path)
    meta, arrays = members(path)
    if change == "layers":
        meta["hyperparameters"]["num_layers"] = 3
    elif change == "direction":
        meta["hyperparameters"]["bidirectional"] = False
    else:
        meta["format_version"] = 2
        for k in STACK_KEYS:
            del meta["hyperparameters"][k]
    write_npz(path, meta, arrays)
    with pytest.raises(ValueError, match="param_shapes|rejected"):
        fio.load(path)
