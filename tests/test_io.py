"""fastrnn.io: saving and loading models (round trips, atomic writes, damaged and forged
files) and conversion to and from PyTorch state dicts."""
import hashlib
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastrnn
import fastrnn.init
import fastrnn.model
from fastrnn import io as fio
from fastrnn.cells import CellSpec, Weight
from fastrnn.model import PARAM_NAMES, RecurrentModel


# ---------------------------------------------------------------------------------------------
# Helpers

def make_model(dtype="float64", output="linear", activation="tanh", sizes=(3, 5, 4), seed=1,
               backend="cython"):
    """A model whose parameters are not its seeded initialisation (so a load that forgot
    to copy the parameters would be caught)."""
    m = fastrnn.ElmanRNN(*sizes, activation=activation, output=output, dtype=dtype,
                         seed=seed, backend=backend)
    rng = np.random.default_rng(seed + 100)
    for k, p in m.params.items():
        p[...] = rng.standard_normal(p.shape).astype(p.dtype)
    return m


def inputs(model, N=2, T=6, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (N, T, model.input_size)).astype(model.dtype)


def assert_same_params(a, b):
    for k in PARAM_NAMES:
        pa, pb = a.params[k], b.params[k]
        assert pa.dtype.newbyteorder("=") == pb.dtype and pa.shape == pb.shape, k
        assert pb.dtype.isnative and pb.flags.c_contiguous and pb.flags.writeable, k
        np.testing.assert_array_equal(pa, pb, err_msg=k)


def assert_same_model(a, b):
    for attr in ("input_size", "hidden_size", "output_size", "activation", "output", "dtype"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert_same_params(a, b)


def write_npz(path, meta, arrays):
    """An .npz written directly with np.savez (pickles allowed, as numpy's default): meta is
    a dict (stored as JSON in a 0-d unicode array) or an array stored as it is."""
    if isinstance(meta, dict):
        meta = np.array(json.dumps(meta))
    members = {} if meta is None else {"__meta__": meta}
    members.update(arrays)
    with open(path, "wb") as f:
        np.savez(f, **members)


def checksum(arrays):
    h = hashlib.sha256()
    for k in PARAM_NAMES:
        h.update(np.ascontiguousarray(arrays[k], dtype=arrays[k].dtype.newbyteorder("<"))
                 .tobytes())
    return h.hexdigest()


def saved(tmp_path, model=None, name="model.npz", **kw):
    """(path, model, meta, arrays) of a freshly saved model."""
    model = make_model(**kw) if model is None else model
    path = tmp_path / name
    fio.save(model, path)
    meta = fio.read_metadata(path)
    arrays = {k: model.params[k].copy() for k in PARAM_NAMES}
    return path, model, meta, arrays


def expect_invalid(path, match=None):
    """load(path) is a ValueError that names the file."""
    with pytest.raises(ValueError) as info:
        fio.load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    if match:
        assert re.search(match, msg), msg
    return msg


# ---------------------------------------------------------------------------------------------
# Round trips

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_round_trip(tmp_path, dtype, output, backend):
    m = make_model(dtype=dtype, output=output, activation="relu", backend=backend)
    path = tmp_path / "m.npz"
    m.save(path)
    m2 = fio.load(path)
    assert_same_model(m, m2)
    assert m2.backend == backend and m2.seed == m.seed
    for k in PARAM_NAMES:
        assert not np.shares_memory(m.params[k], m2.params[k])
    X = inputs(m)
    Y, S = m.forward(X)
    Y2, S2 = m2.forward(X)
    np.testing.assert_array_equal(Y, Y2)
    np.testing.assert_array_equal(S, S2)


def test_load_backend_override(tmp_path):
    path, m, _, _ = saved(tmp_path, backend="cython")
    assert fio.load(path, backend="numpy").backend == "numpy"
    assert fio.load(path).backend == "cython"
    with pytest.raises(ValueError, match="backend"):
        fio.load(path, backend="fortran")


@pytest.mark.parametrize("name", ["model", "model.bin", "model.npz.part", "weights.NPZ"])
def test_path_kept_as_given(tmp_path, name):
    m = make_model()
    fio.save(m, str(tmp_path / name))
    assert sorted(os.listdir(tmp_path)) == [name]
    assert_same_model(m, fio.load(str(tmp_path / name)))
    assert_same_model(m, fio.load(pathlib.Path(tmp_path / name)))


def test_overwrite(tmp_path):
    path, m, _, _ = saved(tmp_path)
    os.chmod(path, 0o640)
    m2 = make_model(seed=7)
    fio.save(m2, path)
    assert_same_model(m2, fio.load(path))
    assert os.stat(path).st_mode & 0o777 == 0o640     # the replaced file's permissions
    assert os.listdir(tmp_path) == ["model.npz"]


def test_new_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fio.save(make_model(), tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o640


def test_file_contents(tmp_path):
    """A plain .npz readable without pickles; metadata as specified."""
    path, m, meta, arrays = saved(tmp_path, dtype="float32", output="softmax")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(("__meta__",) + PARAM_NAMES)
        raw = z["__meta__"]
        assert raw.shape == () and raw.dtype.kind == "U"
        assert json.loads(raw.item()) == meta
        for k in PARAM_NAMES:
            np.testing.assert_array_equal(z[k], m.params[k])
            assert z[k].dtype == np.float32
    assert meta["format"] == "fastrnn.ElmanRNN" and meta["format_version"] == 2
    assert meta["fastrnn_version"] == fastrnn.__version__
    assert meta["hyperparameters"] == {
        "cell": "elman", "input_size": 3, "hidden_size": 5, "output_size": 4, "activation": "tanh",
        "output": "softmax", "dtype": "float32", "backend": "cython", "seed": 1}
    assert meta["param_shapes"] == {"W_x": [3, 5], "W_s": [5, 5], "b": [5], "W_y": [5, 4],
                                    "b_y": [4]}
    assert meta["checksum"] == checksum(arrays)
    assert meta["user"] is None


@pytest.mark.parametrize("seed,stored", [(None, None), (12, 12), (np.int64(5), 5)])
def test_seed_stored(tmp_path, seed, stored):
    m = make_model()
    m.seed = seed
    fio.save(m, tmp_path / "m.npz")
    assert fio.read_metadata(tmp_path / "m.npz")["hyperparameters"]["seed"] == stored
    assert_same_model(m, fio.load(tmp_path / "m.npz"))


def test_seed_must_be_an_int_or_none():
    # seeds are stored in the file's JSON metadata, so only None or an int is accepted
    for bad in (np.random.default_rng(0), [1, 2], 1.5, -1, True):
        with pytest.raises(TypeError, match="seed must be None or a non-negative int"):
            fastrnn.ElmanRNN(2, 3, 2, seed=bad)


def test_user_metadata_round_trip(tmp_path):
    user = {"epochs": 12, "lr": 1e-3, "tags": ("a", "b"), "ok": True, "none": None,
            "nested": {"ünïcode": "✓", "list": [1, 2.5, [3]]}}
    m = make_model()
    m.save(tmp_path / "m.npz", metadata=user)
    got = fio.read_metadata(tmp_path / "m.npz")["user"]
    assert got == json.loads(json.dumps(user))         # tuples come back as lists
    fio.save(m, tmp_path / "s.npz", metadata="just a string")
    assert fio.read_metadata(tmp_path / "s.npz")["user"] == "just a string"


@pytest.mark.parametrize("bad", [object(), {1: "int key"}, {"x": float("nan")},
                                 [float("inf")], {"a": np.zeros(2)}, {"s": {1, 2}},
                                 {"b": b"bytes"}])
def test_non_json_metadata(tmp_path, bad):
    m = make_model()
    with pytest.raises(TypeError, match="metadata"):
        fio.save(m, tmp_path / "m.npz", metadata=bad)
    assert os.listdir(tmp_path) == []


def test_save_rejects_bad_models(tmp_path):
    with pytest.raises(TypeError, match="ElmanRNN"):
        fio.save({"W_x": np.zeros((2, 2))}, tmp_path / "m.npz")
    m = make_model()
    m.params["W_s"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fio.save(m, tmp_path / "m.npz")
    m = make_model()
    m.params["b"] = m.params["b"].astype(np.float32)
    with pytest.raises(TypeError, match="dtype"):
        fio.save(m, tmp_path / "m.npz")
    m = make_model()
    m.params["W_y"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="shape"):
        fio.save(m, tmp_path / "m.npz")
    with pytest.raises(TypeError, match="path"):
        fio.save(make_model(), 3.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fio.save(make_model(), tmp_path / "no" / "such" / "m.npz")
    assert os.listdir(tmp_path) == []


def test_noncontiguous_params_saved(tmp_path):
    m = make_model()
    m.params["W_s"] = np.asfortranarray(m.params["W_s"])
    m.params["W_x"] = m.params["W_x"].astype(m.dtype.newbyteorder(">"))
    fio.save(m, tmp_path / "m.npz")
    m2 = fio.load(tmp_path / "m.npz")
    assert_same_params(m, m2)
    assert m2.params["W_x"].dtype.isnative


# ---------------------------------------------------------------------------------------------
# Atomic saves

def _fail_in(monkeypatch, target, name):
    def boom(*args, **kwargs):
        raise OSError(f"injected failure in {name}")
    monkeypatch.setattr(target, name, boom)


@pytest.mark.parametrize("where", ["replace", "fsync", "savez_midway", "chmod"])
def test_failed_save_leaves_old_file(tmp_path, monkeypatch, where):
    path, old, _, _ = saved(tmp_path)
    before = path.read_bytes()
    new = make_model(seed=9)
    if where == "savez_midway":
        real_savez = np.savez

        def partial_savez(file, *args, **kwargs):
            real_savez(file, *args, **kwargs)
            file.seek(0)
            file.write(b"PK\x03\x04 half-written garbage")
            raise OSError("disk full (injected)")
        monkeypatch.setattr(np, "savez", partial_savez)
    else:
        _fail_in(monkeypatch, os, where)
    with pytest.raises(OSError, match="injected"):
        fio.save(new, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_same_model(old, fio.load(path))
    assert os.listdir(tmp_path) == ["model.npz"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    _fail_in(monkeypatch, os, "replace")
    with pytest.raises(OSError, match="injected"):
        fio.save(make_model(), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_old_file(tmp_path, monkeypatch):
    """A KeyboardInterrupt (not an Exception) during the write also cleans up."""
    path, old, _, _ = saved(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fio.save(make_model(seed=3), path)
    monkeypatch.undo()
    assert_same_model(old, fio.load(path))
    assert os.listdir(tmp_path) == ["model.npz"]


KILL_SCRIPT = textwrap.dedent(r"""
    import sys
    import fastrnn
    from fastrnn.io import save
    path, k = sys.argv[1], int(sys.argv[2])
    m = fastrnn.ElmanRNN(8, 700, 8, dtype="float64", seed=0, backend="numpy")
    first = True
    while True:
        k += 1
        for p in m.params.values():
            p[...] = k
        save(m, path, metadata={"k": k})
        if first:
            print(k, flush=True)
            first = False
""")


def test_killed_save_leaves_old_or_new_file(tmp_path):
    """SIGKILL a process that saves a 4 MB model in a loop: the target is always a complete
    model (every parameter equal to the same iteration number k), never a mix."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    path = tmp_path / "big.npz"
    rng = random.Random(0)
    k_seen = 0
    for rnd in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(k_seen)],
                                cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            line = proc.stdout.readline()
            assert line.strip(), proc.stderr.read()
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        m = fio.load(path)
        k = float(m.params["W_x"][0, 0])
        assert k == int(k) and k > k_seen, (k, k_seen)
        for name in PARAM_NAMES:
            assert np.all(m.params[name] == k), name
        assert fio.read_metadata(path)["user"] == {"k": int(k)}
        k_seen = int(k)
        # Only a temporary file of ours may be left behind by the kill.
        for f in os.listdir(tmp_path):
            assert f == "big.npz" or re.fullmatch(r"\.big\.npz\..+\.tmp", f), f


# ---------------------------------------------------------------------------------------------
# Damaged files

def small_file(tmp_path):
    m = make_model(sizes=(2, 3, 2))
    path = tmp_path / "small.npz"
    fio.save(m, path)
    return path, m, path.read_bytes()


def test_truncated_everywhere(tmp_path):
    path, m, data = small_file(tmp_path)
    bad = tmp_path / "bad.npz"
    step = max(1, len(data) // 4000)
    for n in list(range(0, len(data), step)) + [len(data) - 1]:
        bad.write_bytes(data[:n])
        expect_invalid(bad, "not a valid fastrnn model file")
        with pytest.raises(ValueError):
            fio.read_metadata(bad)


def test_bit_flips(tmp_path):
    """Every single-bit flip is detected (ValueError) or, if it lands in bytes nothing reads
    (zip timestamps, attributes), the file still loads exactly the same model."""
    path, m, data = small_file(tmp_path)
    bad = tmp_path / "bad.npz"
    step = max(1, len(data) // 4000)
    detected = survived = 0
    for i in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i * 5 % 8)
        bad.write_bytes(bytes(flipped))
        try:
            m2 = fio.load(bad)
        except ValueError as exc:
            assert str(bad) in str(exc)
            detected += 1
        else:
            assert_same_model(m, m2)
            survived += 1
    assert detected > 0.8 * (detected + survived), (detected, survived)


def test_data_bit_flips_all_bits(tmp_path):
    """All 8 bits of a few bytes inside the parameter data: always detected."""
    path, m, data = small_file(tmp_path)
    start = data.index(m.params["W_s"].tobytes())
    bad = tmp_path / "bad.npz"
    for i in range(start, start + m.params["W_s"].nbytes, 7):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            bad.write_bytes(bytes(flipped))
            expect_invalid(bad)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"hello, world\n" * 10, "not an .npz"),
    (b"\x80\x04\x95" + b"\x00" * 50, "not an .npz"),        # a pickle
])
def test_not_a_zip(tmp_path, content, match):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(content)
    expect_invalid(bad, match)


def test_wrong_magic(tmp_path):
    path, m, data = small_file(tmp_path)
    bad = tmp_path / "bad.npz"
    for i in range(4):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        expect_invalid(bad, "not an .npz")


def test_npy_file(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(3))
    expect_invalid(bad, r"\.npy")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        fio.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        fio.read_metadata(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError):
        fio.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# Forged files

def test_newer_format_version(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    meta["format_version"] = 4
    write_npz(path, meta, arrays)
    msg = expect_invalid(path, "format_version 4")
    assert "format_version 3" in msg and "upgrade" in msg.lower(), msg
    assert fio.read_metadata(path)["format_version"] == 4     # inspectable


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_bad_format_version(tmp_path, version):
    path, m, meta, arrays = saved(tmp_path)
    meta["format_version"] = version
    write_npz(path, meta, arrays)
    expect_invalid(path, "format_version")


def test_wrong_format(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    meta["format"] = "someone.else"
    write_npz(path, meta, arrays)
    expect_invalid(path, "format")
    with pytest.raises(ValueError, match="format"):
        fio.read_metadata(path)


def test_missing_meta(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    write_npz(path, None, arrays)
    expect_invalid(path, "__meta__")


@pytest.mark.parametrize("raw", [
    np.array("not json {"), np.array("[1, 2]"), np.array(["{}"]), np.zeros(3),
    np.array('{"format": "fastrnn.ElmanRNN", "format_version": NaN}'),
])
def test_bad_meta(tmp_path, raw):
    path, m, meta, arrays = saved(tmp_path)
    write_npz(path, raw, arrays)
    expect_invalid(path)


def test_meta_as_uint8_bytes(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    write_npz(path, np.frombuffer(json.dumps(meta).encode(), np.uint8), arrays)
    assert_same_model(m, fio.load(path))


class Payload:
    """Unpickling this sets a global flag."""
    def __reduce__(self):
        return (_mark_unpickled, ())


UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)
    return "pwned"


@pytest.mark.parametrize("where", ["__meta__", "W_x", "b_y"])
def test_pickled_object_arrays_not_unpickled(tmp_path, where):
    path, m, meta, arrays = saved(tmp_path)
    payload = np.empty((), dtype=object)
    payload[()] = Payload()
    if where == "__meta__":
        write_npz(path, payload, arrays)
    else:
        arrays[where] = np.array([Payload()] * 3, dtype=object)
        write_npz(path, meta, arrays)
    UNPICKLED.clear()
    expect_invalid(path, "pickle")
    if where == "__meta__":
        with pytest.raises(ValueError, match="pickle"):
            fio.read_metadata(path)
    else:                                     # read_metadata does not read the parameters
        assert fio.read_metadata(path) == meta
    assert UNPICKLED == []
    # Sanity: the file really does unpickle the payload when allowed.
    with np.load(path, allow_pickle=True) as z:
        z[where]
    assert UNPICKLED


def test_checksum_mismatch(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    arrays["W_s"][1, 2] += 1e-9
    write_npz(path, meta, arrays)
    expect_invalid(path, "corrupt")


def test_non_finite_parameters(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    arrays["b"][0] = np.inf
    meta["checksum"] = checksum(arrays)
    write_npz(path, meta, arrays)
    expect_invalid(path, "NaN or inf")


def test_param_shape_mismatch(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    bad = dict(arrays, W_s=arrays["W_s"][:, :4].copy())
    write_npz(path, dict(meta, checksum=checksum(bad)), bad)
    expect_invalid(path, "W_s.*shape")
    bad_meta = json.loads(json.dumps(meta))
    bad_meta["param_shapes"]["W_x"] = [5, 3]
    write_npz(path, bad_meta, arrays)
    expect_invalid(path, "param_shapes")
    bad_meta = json.loads(json.dumps(meta))
    bad_meta["hyperparameters"]["hidden_size"] = 6
    write_npz(path, bad_meta, arrays)
    expect_invalid(path, "param_shapes")


def test_param_dtype_mismatch(tmp_path):
    path, m, meta, arrays = saved(tmp_path, dtype="float64")
    bad = {k: a.astype(np.float32) for k, a in arrays.items()}
    write_npz(path, dict(meta, checksum=checksum(bad)), bad)
    expect_invalid(path, "dtype")
    bad = dict(arrays, b=np.arange(5))
    write_npz(path, meta, bad)
    expect_invalid(path, "dtype")


def test_missing_and_extra_members(tmp_path):
    path, m, meta, arrays = saved(tmp_path)
    write_npz(path, meta, {k: a for k, a in arrays.items() if k != "W_y"})
    expect_invalid(path, "missing")
    write_npz(path, meta, dict(arrays, extra=np.zeros(2)))
    expect_invalid(path, "unknown")


@pytest.mark.parametrize("key,value", [("activation", "gelu"), ("output", "logits"),
                                       ("dtype", "float16"), ("dtype", 32),
                                       ("input_size", 0), ("input_size", 2.5),
                                       ("backend", "cuda"), ("seed", -5)])
def test_bad_hyperparameters(tmp_path, key, value):
    path, m, meta, arrays = saved(tmp_path)
    meta["hyperparameters"][key] = value
    write_npz(path, meta, arrays)
    expect_invalid(path)


def test_foreign_layouts_accepted(tmp_path):
    """Fortran order, big-endian and compressed members (valid .npz, not what save writes)
    load to the same parameters."""
    path, m, meta, arrays = saved(tmp_path)
    odd = dict(arrays, W_s=np.asfortranarray(arrays["W_s"]),
               W_x=arrays["W_x"].astype(">f8"))
    with open(path, "wb") as f:
        np.savez_compressed(f, __meta__=np.array(json.dumps(meta)), **odd)
    m2 = fio.load(path)
    assert_same_model(m, m2)
    assert all(p.dtype.isnative for p in m2.params.values())


def test_huge_declared_shape_not_allocated(tmp_path):
    """Metadata claiming an enormous model is refused from the member size, before any
    allocation."""
    path, m, meta, arrays = saved(tmp_path)
    meta["hyperparameters"]["hidden_size"] = 10**6
    meta["param_shapes"] = {"W_x": [3, 10**6], "W_s": [10**6, 10**6], "b": [10**6],
                            "W_y": [10**6, 4], "b_y": [4]}
    write_npz(path, meta, arrays)
    expect_invalid(path, "shape")


# ---------------------------------------------------------------------------------------------
# PyTorch

def _torch_net(torch, I, H, O, activation, dtype):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(I, H, nonlinearity=activation, batch_first=True)
            self.linear = torch.nn.Linear(H, O)

        def forward(self, X, output):
            Y = self.linear(self.rnn(X)[0])
            return torch.softmax(Y, dim=-1) if output == "softmax" else Y
    return Net().to(dtype)


def _tol(dtype):
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def _assert_close(actual, desired, dtype):
    tol = _tol(dtype)
    scale = max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
def test_to_torch_state_dict(dtype, activation, output):
    torch = pytest.importorskip("torch")
    m = make_model(dtype=dtype, output=output, activation=activation, sizes=(3, 6, 4))
    for k in PARAM_NAMES:
        m.params[k] *= 0.5
    sd = fio.to_torch_state_dict(m)
    assert set(sd) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
                       "rnn.bias_hh_l0", "linear.weight", "linear.bias"}
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.flags.c_contiguous and v.dtype == m.dtype, k
    tdt = torch.float32 if dtype == "float32" else torch.float64
    net = _torch_net(torch, 3, 6, 4, activation, tdt)
    for prefix, module in (("rnn.", net.rnn), ("linear.", net.linear)):
        module.load_state_dict({k[len(prefix):]: torch.from_numpy(v) for k, v in sd.items()
                                if k.startswith(prefix)}, strict=True)
    net2 = _torch_net(torch, 3, 6, 4, activation, tdt)
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    X = inputs(m, N=3, T=7)
    Y = m.forward(X)[0]
    with torch.no_grad():
        for n in (net, net2):
            Yt = n(torch.from_numpy(X), output).numpy()
            assert Yt.dtype == Y.dtype
            _assert_close(Yt, Y, dtype)


def test_to_torch_prefixes_and_copies():
    m = make_model()
    sd = fio.to_torch_state_dict(m, rnn_prefix="", linear_prefix="head.")
    assert set(sd) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                       "head.weight", "head.bias"}
    np.testing.assert_array_equal(sd["weight_hh_l0"], m.params["W_s"].T)
    np.testing.assert_array_equal(sd["bias_hh_l0"], 0)
    for v in sd.values():
        for p in m.params.values():
            assert not np.shares_memory(v, p)
    with pytest.raises(ValueError, match="tanh"):
        fio.to_torch_state_dict(make_model(activation="sigmoid"))
    with pytest.raises(TypeError, match="rnn_prefix"):
        fio.to_torch_state_dict(m, rnn_prefix=None)
    with pytest.raises(TypeError, match="ElmanRNN"):
        fio.to_torch_state_dict(sd)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("output", ["linear", "softmax"])
def test_from_torch_state_dict(dtype, activation, output):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tdt = torch.float32 if dtype == "float32" else torch.float64
    net = _torch_net(torch, 4, 7, 3, activation, tdt)        # nonzero bias_hh
    m = fio.from_torch_state_dict(net.state_dict(), activation=activation, output=output,
                                  backend="numpy")
    assert (m.input_size, m.hidden_size, m.output_size) == (4, 7, 3)
    assert m.dtype == np.dtype(dtype) and m.backend == "numpy"
    assert all(p.flags.c_contiguous and p.dtype == m.dtype for p in m.params.values())
    X = np.random.default_rng(1).standard_normal((3, 9, 4)).astype(dtype)
    with torch.no_grad():
        Yt = net(torch.from_numpy(X), output).numpy()
    _assert_close(m.forward(X)[0], Yt, dtype)
    # The same from NumPy arrays, with the model on the compiled backend.
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    m2 = fio.from_torch_state_dict(sd, activation=activation, output=output)
    assert_same_params(m, m2)
    # Round trip back to torch (bias folded into bias_ih): same outputs.
    net3 = _torch_net(torch, 4, 7, 3, activation, tdt)
    net3.load_state_dict({k: torch.from_numpy(v)
                          for k, v in fio.to_torch_state_dict(m).items()})
    with torch.no_grad():
        _assert_close(net3(torch.from_numpy(X), output).numpy(), Yt, dtype)


def test_from_torch_dtype_conversion_and_prefixes():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    rnn = torch.nn.RNN(2, 3, batch_first=True)
    head = torch.nn.Linear(3, 2)
    state = {**{"enc." + k: v for k, v in rnn.state_dict().items()},
             **{"head." + k: v for k, v in head.state_dict().items()},
             "unrelated.weight": torch.zeros(5)}
    m = fio.from_torch_state_dict(state, dtype="float64", rnn_prefix="enc.",
                                  linear_prefix="head.")
    assert m.dtype == np.float64
    np.testing.assert_array_equal(m.params["W_s"],
                                  rnn.weight_hh_l0.detach().numpy().T.astype(np.float64))
    half = {k: v.half() for k, v in state.items()}
    with pytest.raises(TypeError, match="float32"):
        fio.from_torch_state_dict(half, rnn_prefix="enc.", linear_prefix="head.")
    m16 = fio.from_torch_state_dict(half, dtype="float32", rnn_prefix="enc.",
                                    linear_prefix="head.")
    assert m16.dtype == np.float32


def test_from_torch_unsupported_modules():
    """Stacks convert (tests/test_io_torch_stack.py); a projection does not."""
    torch = pytest.importorskip("torch")
    lin = {"linear." + k: v for k, v in torch.nn.Linear(3, 2).state_dict().items()}
    proj = torch.nn.LSTM(2, 4, proj_size=3)
    with pytest.raises(ValueError, match="proj_size"):
        fio.from_torch_state_dict({**{"rnn." + k: v for k, v in proj.state_dict().items()},
                                   **lin}, cell="lstm")
    nobias = torch.nn.RNN(2, 3, bias=False)
    m = fio.from_torch_state_dict({**{"rnn." + k: v for k, v in nobias.state_dict().items()},
                                   **lin})
    np.testing.assert_array_equal(m.params["b"], 0)


def _np_state(I=2, H=3, O=2, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"rnn.weight_ih_l0": rng.standard_normal((H, I)).astype(dtype),
            "rnn.weight_hh_l0": rng.standard_normal((H, H)).astype(dtype),
            "rnn.bias_ih_l0": rng.standard_normal(H).astype(dtype),
            "rnn.bias_hh_l0": rng.standard_normal(H).astype(dtype),
            "linear.weight": rng.standard_normal((O, H)).astype(dtype),
            "linear.bias": rng.standard_normal(O).astype(dtype)}


def test_from_numpy_state_dict():
    s = _np_state()
    m = fio.from_torch_state_dict(s)
    np.testing.assert_array_equal(m.params["W_x"], s["rnn.weight_ih_l0"].T)
    np.testing.assert_array_equal(m.params["b"], s["rnn.bias_ih_l0"] + s["rnn.bias_hh_l0"])
    np.testing.assert_array_equal(m.params["b_y"], s["linear.bias"])
    s["rnn.weight_hh_l0"] = np.asfortranarray(s["rnn.weight_hh_l0"])
    assert fio.from_torch_state_dict(s).params["W_s"].flags.c_contiguous


@pytest.mark.parametrize("change,exc,match", [
    (lambda s: s.pop("rnn.weight_ih_l0"), ValueError, "missing"),
    (lambda s: s.pop("linear.weight"), ValueError, "missing"),
    (lambda s: s.pop("rnn.bias_hh_l0"), ValueError, "missing"),
    (lambda s: s.update({"rnn.weight_hh_l0": np.zeros((3, 4))}), ValueError, "shape"),
    (lambda s: s.update({"rnn.bias_ih_l0": np.zeros(4)}), ValueError, "shape"),
    (lambda s: s.update({"linear.weight": np.zeros((2, 4))}), ValueError, "shape"),
    (lambda s: s.update({"linear.bias": np.zeros(3)}), ValueError, "shape"),
    (lambda s: s.update({"rnn.weight_ih_l0": np.zeros(3)}), ValueError, "2-D"),
    (lambda s: s.update({"rnn.weight_ih_l1": np.zeros((3, 3))}), ValueError,
     r"missing \['rnn.weight_hh_l1'"),
    (lambda s: s.update({"rnn.weight_ih_l0_reverse": np.zeros((3, 2))}), ValueError,
     r"missing \['rnn.weight_hh_l0_reverse'"),
    (lambda s: s.update({"rnn.weight_hr_l0": np.zeros((3, 2))}), ValueError, "proj_size"),
    (lambda s: s.update({"rnn.bias_ih_l0": np.array([0, np.nan, 0])}), ValueError, "NaN"),
    (lambda s: s.update({"linear.bias": np.zeros(2, np.float32)}), TypeError, "dtype"),
    (lambda s: s.update({k: np.ones(v.shape, np.int64) for k, v in s.items()}), TypeError,
     "float32"),
])
def test_bad_state_dicts(change, exc, match):
    s = _np_state()
    change(s)
    with pytest.raises(exc, match=match):
        fio.from_torch_state_dict(s)


def test_bad_from_torch_arguments():
    s = _np_state()
    with pytest.raises(ValueError, match="tanh"):
        fio.from_torch_state_dict(s, activation="sigmoid")
    with pytest.raises(ValueError, match="output"):
        fio.from_torch_state_dict(s, output="logits")
    with pytest.raises(TypeError, match="dtype"):
        fio.from_torch_state_dict(s, dtype="int32")
    with pytest.raises(ValueError, match="backend"):
        fio.from_torch_state_dict(s, backend="gpu")
    with pytest.raises(TypeError, match="mapping"):
        fio.from_torch_state_dict([("rnn.weight_ih_l0", np.zeros((3, 2)))])
    s["linear.bias"] = np.zeros(2, np.int32)
    with pytest.raises(TypeError, match="float"):
        fio.from_torch_state_dict(s, dtype="float64")


# ---------------------------------------------------------------------------------------------
# Built without a random initialisation; any registered cell

def test_load_does_not_initialise(tmp_path, monkeypatch):
    """load and from_torch_state_dict build the model with from_params: no random
    initialisation to overwrite (twice the time and the peak memory of a large model)."""
    path, m, _, _ = saved(tmp_path)

    def no_init(*args, **kwargs):
        raise AssertionError("the random initialisation ran")
    monkeypatch.setattr(fastrnn.init, "init_params", no_init)
    monkeypatch.setattr(fastrnn.model, "init_params", no_init)
    with pytest.raises(AssertionError, match="initialisation"):
        fastrnn.ElmanRNN(2, 3, 2)                    # the patch does bite
    m2 = fio.load(path)
    assert_same_model(m, m2)
    assert m2.init is None
    assert_same_model(m2, fio.load(path, backend="numpy"))
    fio.from_torch_state_dict(_np_state())


def _fake_cell(name, mode, bias, gates, options=()):
    """A model class for a gated cell whose spec is all that io reads (its backends are the
    Elman cell's modules, never called here)."""
    weights = (Weight("W_x", "I", gates), Weight("W_s", "H", gates), Weight("b", None, gates))
    if bias == "separate":
        weights += (Weight("b_s", None, gates),)
    spec = CellSpec(name=name, gates=tuple("abcd"[:gates]), states=("h",), weights=weights,
                    options=options, torch_mode=mode, torch_bias=bias, buffers_per_step=1,
                    numpy_module="fastrnn.cells.elman", compiled_module="fastrnn.cells._elman")

    class Model(RecurrentModel):
        cell = spec

    Model.__name__ = f"Fake{mode}"
    return Model


@pytest.fixture
def fake_cells(monkeypatch):
    """Model classes of an LSTM-like (summed biases, a forget_gate option) and a GRU-like
    (separate biases) cell, registered in fastrnn.model.MODELS."""
    lstm = _fake_cell("fake_lstm", "LSTM", "sum", 4, options=("forget_gate",))
    gru = _fake_cell("fake_gru", "GRU", "separate", 3)
    for cls in (lstm, gru):
        monkeypatch.setitem(fastrnn.model.MODELS, cls.cell.name, cls)
    return lstm, gru


def _fake_model(cls, I=3, H=4, O=2, dtype="float64", seed=0, **options):
    rng = np.random.default_rng(seed)
    shapes = cls.cell.weight_shapes(I, H)
    shapes.update({"W_y": (H, O), "b_y": (O,)})
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    return cls.from_params(params, input_size=I, hidden_size=H, output_size=O,
                           output="linear", dtype=dtype, seed=seed, backend="numpy", **options)


def test_any_cell_round_trip(tmp_path, fake_cells):
    """The file records the cell and its options; load builds that cell's class, with the
    parameters its spec names."""
    lstm, gru = fake_cells
    for m in (_fake_model(lstm, forget_gate=False), _fake_model(gru, dtype="float32")):
        path = tmp_path / f"{m.cell.name}.npz"
        fio.save(m, path)
        meta = fio.read_metadata(path)
        assert meta["format_version"] == 2              # one layer: no stack keys
        assert meta["hyperparameters"] == {"cell": m.cell.name, **{
            k: v for k, v in m.hyperparameters().items()
            if k not in ("num_layers", "bidirectional", "dropout")}}
        assert meta["param_shapes"] == {k: list(s) for k, s in m.param_shapes().items()}
        m2 = fio.load(path)
        assert type(m2) is type(m) and m2.hyperparameters() == m.hyperparameters()
        assert list(m2.params) == list(m.param_names)
        for k in m.param_names:
            np.testing.assert_array_equal(m2.params[k], m.params[k])
    # the stored shapes are checked against the ones the class computes
    m = _fake_model(gru)
    path = tmp_path / "gru.npz"
    fio.save(m, path)
    meta = fio.read_metadata(path)
    arrays = dict(m.params)
    meta["param_shapes"]["b_s"] = [4]                        # not 3H
    write_npz(path, meta, arrays)
    expect_invalid(path, "param_shapes")
    meta["param_shapes"].pop("b_s")
    write_npz(path, meta, {k: a for k, a in arrays.items() if k != "b_s"})
    expect_invalid(path, "param_shapes")
    meta = fio.read_metadata(tmp_path / "fake_lstm.npz")
    arrays = dict(fio.load(tmp_path / "fake_lstm.npz").params)
    del meta["hyperparameters"]["forget_gate"]
    meta["hyperparameters"]["cell"] = "fake_gru"             # another cell's layout
    write_npz(path, meta, arrays)
    expect_invalid(path, "param_shapes")
    meta["hyperparameters"]["cell"] = "transformer"
    write_npz(path, meta, arrays)
    expect_invalid(path, "unknown cell 'transformer'")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_conversion_of_any_cell(fake_cells, dtype):
    """The mapping onto torch.nn.LSTM / GRU state dicts comes from the spec alone: weights
    transposed with their gate blocks in place; "sum" cells fold bias_hh into b, "separate"
    cells keep it as b_s."""
    torch = pytest.importorskip("torch")
    lstm, gru = fake_cells
    tdt = torch.float32 if dtype == "float32" else torch.float64
    torch.manual_seed(0)
    X = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 5, 3)).astype(dtype))
    for cls, module in ((lstm, torch.nn.LSTM), (gru, torch.nn.GRU)):
        rnn = module(3, 4, batch_first=True).to(tdt)
        lin = torch.nn.Linear(4, 2).to(tdt)
        state = {**{"rnn." + k: v for k, v in rnn.state_dict().items()},
                 **{"linear." + k: v for k, v in lin.state_dict().items()}}
        sd = {k: v.detach().numpy() for k, v in state.items()}
        m = fio.from_torch_state_dict(state, cell=cls.cell.name, backend="numpy")
        assert type(m) is cls and m.dtype == np.dtype(dtype)
        assert (m.input_size, m.hidden_size, m.output_size) == (3, 4, 2)
        np.testing.assert_array_equal(m.params["W_x"], sd["rnn.weight_ih_l0"].T)
        np.testing.assert_array_equal(m.params["W_s"], sd["rnn.weight_hh_l0"].T)
        np.testing.assert_array_equal(m.params["W_y"], sd["linear.weight"].T)
        np.testing.assert_array_equal(m.params["b_y"], sd["linear.bias"])
        for p in m.params.values():
            for v in sd.values():
                assert not np.shares_memory(p, v)
        if cls is gru:
            np.testing.assert_array_equal(m.params["b"], sd["rnn.bias_ih_l0"])
            np.testing.assert_array_equal(m.params["b_s"], sd["rnn.bias_hh_l0"])
        else:
            assert m.forget_gate is True
            b = (sd["rnn.bias_ih_l0"].astype(np.float64) + sd["rnn.bias_hh_l0"]).astype(dtype)
            np.testing.assert_array_equal(m.params["b"], b)
        back = fio.to_torch_state_dict(m)
        assert set(back) == set(sd)
        for k, v in back.items():
            assert v.dtype == np.dtype(dtype) and v.flags.c_contiguous and v.shape == \
                sd[k].shape, k
            if cls is gru or "bias_" not in k:
                np.testing.assert_array_equal(v, sd[k], err_msg=k)
        rnn2 = module(3, 4, batch_first=True).to(tdt)
        rnn2.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in back.items()
                              if k.startswith("rnn.")}, strict=True)
        with torch.no_grad():
            _assert_close(rnn2(X)[0].numpy(), rnn(X)[0].numpy(), dtype)
    with pytest.raises(ValueError, match="forget_gate"):
        fio.to_torch_state_dict(_fake_model(lstm, forget_gate=False))
    with pytest.raises(ValueError, match="activation"):
        fio.from_torch_state_dict(state, activation="relu", cell="fake_gru")
    with pytest.raises(ValueError, match="missing"):
        fio.from_torch_state_dict({**state, "rnn.weight_ih_l1": state["rnn.weight_ih_l0"]},
                                  cell="fake_gru")
    bad = dict(sd, **{"rnn.weight_ih_l0": sd["rnn.weight_ih_l0"][:-1]})
    with pytest.raises(ValueError, match="3H"):
        fio.from_torch_state_dict(bad, cell="fake_gru")
    with pytest.raises(ValueError, match="cell"):
        fio.from_torch_state_dict(sd, cell="transformer")
