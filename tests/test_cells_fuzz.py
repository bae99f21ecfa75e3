"""Property-based fuzzing (hypothesis) of fastrnn.LSTM and fastrnn.GRU, in the style of
tests/test_fuzz.py (whose mutations, oracle pieces and checks this reuses): construction
with random (and bad) sizes, dtypes, seeds, schemes and cell options, then forward /
loss_and_grad / step with random shapes, dtypes, layouts (strided with NaN in the gaps,
reversed, Fortran, read-only, byte-swapped, broadcast, lists), damage (other dtypes, NaN,
wrong or absurd shapes: broadcast views of 2**32+ elements, refused before allocating, with
available memory pinned to 1 GiB), damaged params and malformed (h, c) states.

The property: a valid call works and equals the NumPy functional API on clean copies
(1e-6 float64, 1e-3 float32), with the documented shapes and dtypes, states in range and
carried past each sequence's end; any other call raises TypeError, ValueError or
MemoryError (KeyError for a missing params key) with a message. Inputs and params are
never modified, and nothing crashes.
"""
import math

import numpy as np
import pytest
from hypothesis import given, note, strategies as st

import fastrnn
from test_fuzz import (BAD_CHOICES, F32, F64, OUTPUTS, SCHEMES, SIZE_VALUES, TARGETS,
                       _asarray, all_finite, assert_close, assert_same_structure,
                       assert_unmodified, attempt, choice, expect, float_arg, fuzz, kinds,
                       lengths_arg, mostly, mutate, sane, small_memory, snapshot, targets_arg,
                       valid_choice, valid_dtype, valid_size)

BACKENDS = ("cython", "numpy")
CELL_CLASSES = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
GATES = {"lstm": 4, "gru": 3}
WEIGHTS = {"lstm": ("W_x", "W_s", "b"), "gru": ("W_x", "W_s", "b", "b_s")}
STATES = {"lstm": ("h", "c"), "gru": ("h",)}
NOT_GIVEN = object()


def _is_bool(v):
    return isinstance(v, (bool, np.bool_))


def _is_count(v):
    return isinstance(v, (int, np.integer)) and not _is_bool(v)


def _is_real(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not _is_bool(v) \
        and math.isfinite(float(v))


# =============================================================================================
# 1. Construction

# sizes: test_fuzz's (mostly small, some invalid), plus now and then one whose buffers
# would not fit in the pinned 1 GiB (or a small one that makes the others absurd)
GATED_SIZES = mostly(SIZE_VALUES, st.sampled_from([2**14, 2**31 - 1]), weight=12)


def option(good, bad, cell, gru_weight=20):
    """An LSTM option: mostly left out or valid, now and then bad; for the GRU (which takes
    none) rarely given at all."""
    given_ = mostly(st.sampled_from([NOT_GIVEN, NOT_GIVEN] + good), st.sampled_from(bad))
    if cell == "gru":
        return st.sampled_from([True] * gru_weight + [False]).flatmap(
            lambda skip: st.just(NOT_GIVEN) if skip else given_)
    return given_


@st.composite
def constructor_cases(draw):
    cell = draw(st.sampled_from(["lstm", "gru"]))
    return dict(
        cell=cell, I=draw(GATED_SIZES), H=draw(GATED_SIZES), O=draw(GATED_SIZES),
        output=draw(mostly(st.sampled_from(OUTPUTS), st.sampled_from(BAD_CHOICES))),
        dtype=draw(mostly(st.sampled_from(["float32", "float64", np.float32, "<f8"]),
                          st.sampled_from([">f4", "float16", "int32", None, "bogus"]))),
        seed=draw(mostly(st.sampled_from([0, 1, None, 2**40, np.int64(5)]),
                         st.sampled_from([-1, 1.5, True, "0"]))),
        backend=draw(mostly(st.sampled_from(BACKENDS), st.sampled_from([None, "torch"]))),
        init=draw(mostly(st.sampled_from(SCHEMES), st.sampled_from(["xavier", None, 3]))),
        forget_gate=draw(option([True, False, np.True_], [1, 0, "yes", None], cell)),
        forget_bias=draw(option([0.0, 1.0, 2, -3.5, np.float32(0.5)],
                                [float("nan"), float("inf"), "1", None, True], cell)),
        chrono=draw(option([None, 3, 10, 1000, np.int64(50)],
                           [2, 1, 0, -4, 2.5, 10.0, True, "10"], cell)),
        spectral_radius=draw(st.sampled_from([NOT_GIVEN] * 30 + [0.9])))


@fuzz(300)
@given(constructor_cases())
def test_fuzz_gated_constructor(case):
    cell, I, H, O = case["cell"], case["I"], case["H"], case["O"]
    output, dtype, seed, backend, init = (
        case[k] for k in ("output", "dtype", "seed", "backend", "init"))
    forget_gate, forget_bias, chrono, spectral_radius = (
        case[k] for k in ("forget_gate", "forget_bias", "chrono", "spectral_radius"))
    G = GATES[cell]
    extra = {k: v for k, v in (("forget_gate", forget_gate), ("forget_bias", forget_bias),
                               ("chrono", chrono), ("spectral_radius", spectral_radius))
             if v is not NOT_GIVEN}
    sizes_ok = all(valid_size(v) for v in (I, H, O))
    absurd = sizes_ok and (int(I) * G * int(H) + G * int(H) ** 2 + 2 * G * int(H)
                           + int(H) * int(O) + int(O)) * 8 > 2**28
    seed_ok = seed is None or (_is_count(seed) and seed >= 0)
    if cell == "lstm":
        options_ok = ("spectral_radius" not in extra
                      and _is_bool(extra.get("forget_gate", True))
                      and _is_real(extra.get("forget_bias", 1.0))
                      and (extra.get("chrono") is None
                           or (_is_count(extra["chrono"]) and extra["chrono"] >= 3)))
    else:
        options_ok = not extra
    valid = (sizes_ok and not absurd and valid_choice(output, OUTPUTS) and valid_dtype(dtype)
             and valid_choice(backend, BACKENDS) and valid_choice(init, SCHEMES) and seed_ok
             and options_ok)
    kw = dict(output=output, dtype=dtype, seed=seed, backend=backend, init=init, **extra)
    where = f"{CELL_CLASSES[cell].__name__}({I!r}, {H!r}, {O!r}, {extra})"
    with small_memory():
        m, exc = attempt(lambda: CELL_CLASSES[cell](I, H, O, **kw))
    if not expect(valid, m, exc, where=where):
        if absurd and options_ok and valid_dtype(dtype) and valid_choice(init, SCHEMES) \
                and valid_choice(output, OUTPUTS) and valid_choice(backend, BACKENDS) \
                and seed_ok:
            assert isinstance(exc, MemoryError), (where, exc)
        return
    H, I, O = int(H), int(I), int(O)
    shapes = m.param_shapes()
    assert list(m.params) == list(WEIGHTS[cell]) + ["W_y", "b_y"]
    assert shapes["W_s"] == (H, G * H) and shapes["W_x"] == (I, G * H)
    for k, p in m.params.items():
        assert p.shape == shapes[k] and p.dtype == m.dtype and p.flags.c_contiguous, k
        assert np.isfinite(p).all(), k
    if cell == "lstm":
        b_i, b_f = m.params["b"][:H], m.params["b"][H:2 * H]
        if extra.get("chrono") is not None:
            top = math.log(int(extra["chrono"]) - 1)
            assert b_f.min() >= -1e-6 and b_f.max() <= top + 1e-5, where
            np.testing.assert_array_equal(b_i, -b_f)
        elif init != "uniform":
            np.testing.assert_allclose(b_f, float(extra.get("forget_bias", 1.0)), rtol=1e-6)
        assert m.forget_gate == bool(extra.get("forget_gate", True))
    if init == "identity":
        for j in range(G):
            np.testing.assert_array_equal(m.params["W_s"][:, j * H:(j + 1) * H], np.eye(H))
    repr(m)


# =============================================================================================
# 2. forward / loss_and_grad / step

PARAM_DAMAGE = ("same",) * 10 + ("missing", "wrong_shape", "wrong_dtype", "nan", "fortran",
                                 "noncontig", "reversed", "bigendian", "list", "readonly",
                                 "broadcast", "unaligned", "elman_W_s")
# the form of the LSTM's state argument: a tuple (the documented form) or something else
LSTM_FORMS = ("tuple",) * 6 + ("none", "none", "list", "h_none", "bare", "one", "three")
GRU_FORMS = ("array",) * 6 + ("none", "none", "tuple1")


def damage_params(m, kind, key, rng):
    """Damage m.params[key]; returns (valid: True/False/None, KeyError allowed)."""
    p = m.params
    if kind == "same":
        return True, False
    if kind == "missing":
        del p[key]
        return False, True
    if kind == "wrong_shape":
        p[key] = np.zeros(p[key].shape + (1,), p[key].dtype)
        return False, False
    if kind == "elman_W_s":               # an Elman-shaped (H, H) recurrent weight
        H = m.hidden_size
        p["W_s"] = np.zeros((H, H), p["W_s"].dtype)
        return False, False
    if kind == "wrong_dtype":
        p[key] = p[key].astype(F32 if p[key].dtype == F64 else F64)
        return False, False
    if kind == "nan":
        p[key] = p[key].copy()
        p[key].flat[int(rng.integers(p[key].size))] = np.nan
        return False, False
    if kind == "list":
        p[key] = p[key].tolist()
        return None, False
    p[key], _ = mutate(p[key], kind, rng)
    return True, False


@st.composite
def model_cases(draw):
    cell = draw(st.sampled_from(["lstm", "gru"]))
    cfg = dict(cell=cell, I=draw(st.sampled_from([1, 2, 3, 5])),
               H=draw(st.sampled_from([1, 2, 4, 9])), O=draw(st.sampled_from([1, 2, 3])),
               output=draw(st.sampled_from(OUTPUTS)), dtype=draw(st.sampled_from([F32, F64])),
               backend=draw(st.sampled_from(BACKENDS)), init=draw(st.sampled_from(SCHEMES)),
               forget_gate=draw(st.booleans()))
    method = draw(st.sampled_from(["forward", "loss_and_grad", "step", "step"]))
    N, T = draw(st.sampled_from([1, 2, 3, 7])), draw(st.sampled_from([1, 2, 5, 12]))
    target = draw(choice(TARGETS, ("first", None), weight=12))
    form = draw(st.sampled_from(LSTM_FORMS if cell == "lstm" else GRU_FORMS))
    single = draw(st.booleans())
    use_lengths = draw(st.sampled_from([False, False, True]))
    pdamage = draw(st.sampled_from(PARAM_DAMAGE))
    pkey = draw(st.sampled_from(WEIGHTS[cell] + ("W_y", "b_y")))
    muts = {k: draw(kinds()) for k in ("X", "Y", "h", "c", "lengths")}
    seed = draw(st.integers(0, 2**32 - 1))
    return cfg, method, N, T, target, form, single, use_lengths, pdamage, pkey, muts, seed


def state_arg(cell, form, states):
    """The state argument in the given form, from the (mutated) state arrays; and whether the
    form is valid (True), invalid (False) or either (None: accepted undocumented forms)."""
    if form == "none":
        return None, True
    if cell == "gru":
        return (states[0], True) if form == "array" else ((states[0],), False)
    h, c = states
    return {"tuple": ((h, c), True), "list": ([h, c], None), "h_none": ((None, c), True),
            "bare": (h, False), "one": ((h,), False), "three": ((h, c, c), False)}[form]


def clean_states(cell, form, states, dt, ndim, shape):
    """(ok, clean states tuple with None for zeros) by the documented rules."""
    if form == "none":
        return True, (None,) * len(STATES[cell])
    out = []
    for i, s in enumerate(states):
        if s is None or (form == "h_none" and i == 0):
            out.append(None)                # an entry None: zeros (RecurrentModel._state0)
            continue
        a = float_arg(s, dt, ndim)
        if a is None or a.shape != shape:
            return False, None
        out.append(a)
    return True, tuple(out)


def check_gated_states(cell, S, h0, L, where):
    """|h| <= 1 for the LSTM, <= max(1, |h0|) for the GRU (a convex combination); states
    carried unchanged past each sequence's end."""
    S = np.asarray(S, np.float64)
    bound = 1.0
    if cell == "gru" and h0 is not None:
        bound = max(1.0, float(np.abs(h0).max()))
    fin = S[np.isfinite(S)]
    assert np.all(np.abs(fin) <= bound * (1 + 1e-6) + 1e-6), where
    if L is not None:
        for n, length in enumerate(L):
            np.testing.assert_array_equal(S[n, length:], np.broadcast_to(
                S[n, length - 1], S[n, length:].shape), err_msg=f"{where}: not carried")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@fuzz(700)
@given(model_cases())
def test_fuzz_gated_model_methods(case):
    cfg, method, N, T, target, form, single, use_lengths, pdamage, pkey, muts, seed = case
    cell, I, H, O, dt = cfg["cell"], cfg["I"], cfg["H"], cfg["O"], cfg["dtype"]
    rng = np.random.default_rng(seed)
    kw = {"forget_gate": cfg["forget_gate"]} if cell == "lstm" else {}
    m = CELL_CLASSES[cell](I, H, O, output=cfg["output"], dtype=dt, backend=cfg["backend"],
                           init=cfg["init"], seed=int(rng.integers(1000)), **kw)
    good = {k: v.copy() for k, v in m.params.items()}
    params_ok, allow_key = damage_params(m, pdamage, pkey, rng)
    seq = target == "sequence" or target not in TARGETS
    X0 = rng.standard_normal((N, T, I)).astype(dt)
    Y0 = (rng.integers(0, O, size=(N, T) if seq else (N,)) if cfg["output"] == "softmax"
          else rng.standard_normal((N, T, O) if seq else (N, O)).astype(dt))
    S0 = [(0.5 * rng.standard_normal((N, H))).astype(dt) for _ in STATES[cell]]
    L0 = rng.integers(1, T + 1, size=N)
    absurd = False
    if method == "step":
        x, absurd = mutate(X0[0, 0] if single else X0[:, 0], muts["X"], rng)
        raw = [s[0] if single else s for s in S0]
    else:
        x, absurd = mutate(X0, muts["X"], rng)
        raw = S0
    states = []
    for name, s in zip(STATES[cell], raw):
        s, huge = mutate(s, muts[name], rng)
        absurd |= huge and form != "none"
        states.append(s)
    h_arg, form_ok = state_arg(cell, form, states)
    Y, huge = mutate(Y0, muts["Y"], rng)
    absurd |= huge and method == "loss_and_grad"
    lengths = None
    if use_lengths and method != "step":
        lengths, huge = mutate(L0, muts["lengths"], rng)
        absurd |= huge
    inputs = {"x": x, "h": h_arg, "Y": Y, "lengths": lengths}
    note(f"{method} cfg={cfg} N={N} T={T} target={target!r} form={form} single={single} "
         f"params:{pdamage}/{pkey} muts={muts} absurd={absurd}")

    # the oracle, from the documentation
    clean = None
    if absurd or params_ok is False or form_ok is False:
        valid = False
    elif method == "step":
        xa = _asarray(x)
        valid = xa is not None and xa.ndim in (1, 2)
        single = valid and xa.ndim == 1            # x's form decides (a dropped axis too)
        xc = float_arg(x, dt, 1 if single else 2) if valid else None
        valid = xc is not None and xc.shape[-1] == I
        if valid:
            xc = xc.reshape(1, -1) if single else xc
            valid, sc = clean_states(cell, form, states, dt, 1 if single else 2,
                                     (H,) if single else (xc.shape[0], H))
            if valid:
                sc = tuple(None if s is None else s.reshape(xc.shape[0], H) for s in sc)
                clean = (xc, sc, None, None)
    else:
        Xc = float_arg(x, dt, 3)
        valid = Xc is not None and Xc.shape[2] == I
        if valid:
            valid, sc = clean_states(cell, form, states, dt, 2, (Xc.shape[0], H))
        if valid:
            valid, Lc = lengths_arg(lengths, *Xc.shape[:2])
        Yc = None
        if valid and method == "loss_and_grad":
            valid = valid_choice(target, TARGETS)
            if valid:
                valid, Yc = targets_arg(Y, cfg["output"], target, *Xc.shape[:2], O, dt, Lc)
        if valid:
            clean = (Xc, sc, Yc, Lc)
    if valid and (params_ok is None or form_ok is None):
        valid = None

    calls = {"forward": lambda: m.forward(x, h_arg, lengths=lengths, return_state=True),
             "loss_and_grad": lambda: m.loss_and_grad(x, Y, h_arg, target, lengths=lengths,
                                                      return_state=True, input_grads=True,
                                                      state_grad_norms=True),
             "step": lambda: m.step(x, h_arg)}
    before = {k: snapshot(v) for k, v in inputs.items()}
    before_params = snapshot(m.params)
    with small_memory():
        res, exc = attempt(calls[method])
    where = f"{type(m).__name__}.{method}"
    assert_unmodified(before, inputs, where)
    assert snapshot(m.params) == before_params, f"{where} modified model.params"
    # a GRU state wrapped in a 1-tuple (the LSTM's form) is converted with np.asarray
    # before any size check: numpy's own MemoryError for a huge view is the bug kept in
    # test_cells_validation.py::test_gru_tuple_state_of_a_huge_view_is_not_converted
    numpy_alloc = form == "tuple1" and muts["h"] == "huge"
    if not expect(valid, res, exc, allow=(KeyError,) if allow_key else (), where=where,
                  numpy_alloc=numpy_alloc):
        if isinstance(exc, KeyError):
            assert allow_key, f"{where}: KeyError without a missing params key: {exc}"
        return
    if clean is None:                   # an undocumented form accepted: nothing to compare
        return

    # reference: the functional API, NumPy backend, on clean copies of the weights
    names = WEIGHTS[cell] + ("W_y", "b_y")
    W = {k: np.ascontiguousarray(np.asarray(m.params[k]), dt) for k in names}
    if pdamage in ("same", "fortran", "noncontig", "reversed", "bigendian", "readonly",
                   "unaligned"):
        for k in names:
            np.testing.assert_array_equal(W[k], good[k], err_msg=k)
    Xc, sc, Yc, Lc = clean
    weights = tuple(W[k] for k in WEIGHTS[cell])
    opts = (m.forget_gate,) if cell == "lstm" else ()
    rtol = 1e-6 if dt == F64 else 1e-3
    arrays = [Xc] + [s for s in sc if s is not None] + list(W.values())
    if Yc is not None and Yc.dtype.kind == "f":
        arrays.append(Yc)
    is_sane = sane(arrays)
    several = cell == "lstm"
    if method == "step":
        Y_ref, *S_ref = fastrnn.cell_predict(cell, Xc[:, None], sc, weights, W["W_y"],
                                             W["b_y"], opts, cfg["output"], "numpy")
        y, h_new = res
        at = (0, 0) if single else (slice(None), 0)
        want = (Y_ref[at], tuple(S[at] for S in S_ref) if several else S_ref[0][at])
        assert isinstance(h_new, tuple) == several, where
        for a in (y,) + (h_new if several else (h_new,)):
            assert a.dtype == dt, where
    elif method == "forward":
        Y_ref, *S_ref = fastrnn.cell_predict(cell, Xc, sc, weights, W["W_y"], W["b_y"], opts,
                                             cfg["output"], "numpy", Lc)
        last = tuple(S[:, -1] for S in S_ref)
        want = (Y_ref, S_ref[0], last if several else last[0])
        check_gated_states(cell, res[1], sc[0], Lc, where)
        if cfg["output"] == "softmax" and np.isfinite(res[0]).all():
            assert np.all(res[0] >= 0) and np.allclose(res[0].sum(-1), 1, atol=1e-4), where
    else:
        want = fastrnn.cell_loss_and_grad(cell, Xc, Yc, sc, weights, W["W_y"], W["b_y"], opts,
                                          cfg["output"], target, "numpy", True, Lc, True, True)
        loss, grads = res[0], res[1]
        assert isinstance(loss, float) and not loss < 0, where
        keys = set(names) | {"X", "h0", "state_grad_norms"} | (
            {"c0", "cell_grad_norms"} if several else set())
        assert set(grads) == keys, (where, set(grads))
    if is_sane:
        assert all_finite(res), f"{where}: non-finite result from finite, sane inputs"
        assert_close(res, want, rtol, where + " vs numpy functional")
    else:                               # overflow allowed: only the structure must agree
        assert_same_structure(res, want, where)
