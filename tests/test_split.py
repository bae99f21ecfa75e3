"""A batch split across threads (fastrnn/_threads.py, the cells' prange loops): every cell,
one or two layers, one or two directions, float32 and float64, with and without lengths,
both targets: the same loss and gradients as one thread (to roundoff), bit-identical run to
run at a given thread count, the same predictions whatever the count; the split really
happens (counted); SciPy's BLAS gets its thread count back, from concurrent callers too;
fit with threads=; bad threads arguments.
"""
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _threads

MODELS = {"elman": fastrnn.ElmanRNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
I, H, O = 5, 20, 3


@pytest.fixture
def splits(monkeypatch):
    """Every call splits (no minimum work), and the thread counts the cells chose are
    recorded."""
    seen = []
    real = _threads.batch_threads

    def counting(N, work):
        k = real(N, work)
        seen.append(k)
        return k

    monkeypatch.setattr(_threads, "SPLIT_WORK", 0)
    monkeypatch.setattr(_threads, "batch_threads", counting)
    return seen


def problem(cell, L, bi, dtype, N=7, T=9, seed=0, softmax=False):
    model = MODELS[cell](I, H, O, num_layers=L, bidirectional=bi, seed=seed, dtype=dtype,
                         output="softmax" if softmax else "linear")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, I)).astype(dtype)
    Y = (rng.integers(0, O, (N, T)) if softmax
         else rng.standard_normal((N, T, O)).astype(dtype))
    lengths = rng.integers(1, T + 1, N)
    return model, X, Y, lengths


def assert_grads_close(a, b, dtype):
    (la, ga), (lb, gb) = a, b
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(la - lb) <= rtol * max(1.0, abs(la))
    assert ga.keys() == gb.keys()
    for name in ga:
        scale = max(1.0, float(np.max(np.abs(ga[name]))))
        np.testing.assert_allclose(ga[name], gb[name], rtol=0, atol=rtol * scale,
                                   err_msg=name)


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("L,bi", [(1, False), (1, True), (2, True)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_split_matches_one_thread(splits, cell, L, bi, dtype, with_lengths):
    model, X, Y, lengths = problem(cell, L, bi, dtype)
    lengths = lengths if with_lengths else None
    with fastrnn.threads(1):
        ref = model.loss_and_grad(X, Y, lengths=lengths)
    assert set(splits) == {1}
    for k in (2, 3):
        splits.clear()
        with fastrnn.threads(k):
            got = model.loss_and_grad(X, Y, lengths=lengths)
            again = model.loss_and_grad(X, Y, lengths=lengths)
        assert set(splits) == {k}                      # every layer's calls were split
        assert_grads_close(ref, got, dtype)
        assert got[0] == again[0]                      # bit-identical run to run
        for name in got[1]:
            assert np.array_equal(got[1][name], again[1][name]), name


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("target", ["sequence", "last"])
def test_split_single_layer_options(splits, cell, target):
    """One layer's own compiled loss_and_grad: input gradients, the final states, the
    gradient norms, the last-step target and softmax outputs under a split."""
    model, X, Y, lengths = problem(cell, 1, False, np.float64, N=6, softmax=True)
    if target == "last":
        Y = Y[:, 0]
    kwargs = dict(input_grads=True, lengths=lengths, return_state=True,
                  state_grad_norms=True, target=target)
    weights, W_y, b_y = model._weights()
    args = (model.cell, X, Y, None, weights, W_y, b_y, model._options(), "softmax")
    ref = fastrnn.cell_loss_and_grad(*args, threads=1, **kwargs)
    splits.clear()
    got = fastrnn.cell_loss_and_grad(*args, threads=2, **kwargs)
    assert set(splits) == {2}
    assert_grads_close(ref[:2], got[:2], np.float64)
    for a, b in zip(np.atleast_1d(ref[2]) if cell != "lstm" else ref[2],
                    np.atleast_1d(got[2]) if cell != "lstm" else got[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predictions_do_not_depend_on_threads(splits, cell, dtype):
    model, X, _, lengths = problem(cell, 2, True, dtype, N=5)
    with fastrnn.threads(1):
        ref = model.predict(X, lengths=lengths)
    for k in (2, 4):
        with fastrnn.threads(k):
            got = model.predict(X, lengths=lengths)
        np.testing.assert_array_equal(ref, got)        # every row computed alike
    assert max(splits) == 4


@pytest.mark.parametrize("N", [2, 3])
def test_more_threads_than_sequences(splits, N):
    model, X, Y, _ = problem("lstm", 1, False, np.float64, N=N)
    ref = model.loss_and_grad(X, Y)
    with fastrnn.threads(8):
        got = model.loss_and_grad(X, Y)
    assert max(splits) == N                            # at most one thread per sequence
    assert_grads_close(ref, got, np.float64)


def test_small_calls_stay_on_one_thread():
    model, X, Y, _ = problem("elman", 1, False, np.float64, N=2, T=3)
    seen = []
    real = _threads.batch_threads
    try:
        _threads.batch_threads = lambda N, work: seen.append(real(N, work)) or seen[-1]
        with fastrnn.threads(2):
            model.loss_and_grad(X, Y)
            model.loss_and_grad(X[:1], Y[:1])          # a batch of one never splits
    finally:
        _threads.batch_threads = real
    assert seen and set(seen) == {1}


def test_blas_threads_restored(splits):
    before = _threads.scipy_blas_threads()
    model, X, Y, _ = problem("gru", 2, True, np.float32)
    with fastrnn.threads(2):
        model.loss_and_grad(X, Y)
    assert _threads.scipy_blas_threads() == before
    errors = []

    def work():
        try:
            with fastrnn.threads(2):
                for _ in range(5):
                    model.loss_and_grad(X, Y)
        except Exception as e:                         # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _threads.scipy_blas_threads() == before


def test_fit_with_threads_is_reproducible(splits):
    def train(threads):
        model, X, Y, lengths = problem("lstm", 2, False, np.float64, N=12)
        model.fit(X, Y, lengths=lengths, epochs=3, batch_size=6, progress=False,
                  threads=threads)
        return model.params

    a, b, one = train(2), train(2), train(1)
    assert 2 in splits
    for name in a:
        assert np.array_equal(a[name], b[name]), name
        np.testing.assert_allclose(a[name], one[name], rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_threads(bad):
    model, X, Y, _ = problem("elman", 1, False, np.float64)
    with pytest.raises(ValueError, match="threads"):
        with fastrnn.threads(bad):
            pass
    with pytest.raises(ValueError, match="threads"):
        model.fit(X, Y, epochs=1, progress=False, threads=bad)
    with pytest.raises(ValueError, match="threads"):
        fastrnn.elman_forward(X, None, *model._weights()[0], threads=bad)
    for method, args in (("forward", (X,)), ("predict", (X,)), ("loss_and_grad", (X, Y)),
                         ("forecast", (X, 2))):
        with pytest.raises(ValueError, match="threads"):
            getattr(model, method)(*args, threads=bad)


@pytest.mark.parametrize("cell", list(MODELS))
def test_model_methods_take_threads(splits, cell):
    """forward, predict, loss_and_grad and forecast take threads= as fit and the functional
    calls do: the cap holds for that call only, with the results of the context manager."""
    model, X, Y, lengths = problem(cell, 2, True, np.float64)
    for k in (1, 3):
        with fastrnn.threads(k):
            want = (model.forward(X, lengths=lengths), model.predict(X, lengths=lengths),
                    model.loss_and_grad(X, Y, lengths=lengths))
        del splits[:]
        got = (model.forward(X, lengths=lengths, threads=k),
               model.predict(X, lengths=lengths, threads=k),
               model.loss_and_grad(X, Y, lengths=lengths, threads=k))
        assert max(splits) == k
        np.testing.assert_equal(got, want)   # bit for bit, dicts and tuples too
    uni = MODELS[cell](I, H, I, seed=0, dtype=np.float64)    # forecast feeds outputs back
    np.testing.assert_array_equal(uni.forecast(X, 3, threads=2), uni.forecast(X, 3))
    assert _threads.thread_cap() == _threads.scipy_blas_threads()   # nothing left capped


def _child_loss(queue, model, X, Y):
    with fastrnn.threads(2):
        queue.put((model.loss_and_grad(X, Y)[0], _threads.batch_threads(len(X), 1 << 40)))


def test_fork_after_a_split_call_does_not_hang(splits):
    """GNU OpenMP hangs a child forked after a parallel region: such a child runs on one
    thread instead (and gets the same loss)."""
    import multiprocessing

    model, X, Y, _ = problem("lstm", 1, False, np.float64)
    with fastrnn.threads(2):
        loss = model.loss_and_grad(X, Y)[0]
    assert 2 in splits
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_loss, args=(queue, model, X, Y))
    child.start()
    child.join(60)
    if child.is_alive():                               # pragma: no cover - the failure
        child.kill()
        pytest.fail("a process forked after a split call hung")
    child_loss, child_threads = queue.get(timeout=10)
    assert child_threads == 1
    np.testing.assert_allclose(child_loss, loss, rtol=1e-12)


def test_stacks_split_under_their_own_blas_pin(monkeypatch):
    """A stack holds SciPy's BLAS on one thread around its layers (so that BLAS's pool does
    not spin against theirs); its layers must still see the thread count the user set."""
    seen = []
    real = _threads.batch_threads
    monkeypatch.setattr(_threads, "SPLIT_WORK", 0)
    monkeypatch.setattr(_threads, "batch_threads",
                        lambda N, work: seen.append(real(N, work)) or seen[-1])
    from threadpoolctl import threadpool_limits
    model, X, Y, _ = problem("gru", 2, True, np.float32)
    with threadpool_limits(2, user_api="blas"):        # as on two cores
        assert _threads.scipy_blas_threads() == 2
        model.loss_and_grad(X, Y)
        model.predict(X)
        assert _threads.scipy_blas_threads() == 2
    assert seen and set(seen) == {2}


@pytest.mark.parametrize("cell", list(MODELS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_input_and_initial_state_gradients_of_a_stack(splits, cell, dtype):
    """The reverse direction with lengths takes dh0 (and the LSTM's dc0) inside its loop, at
    each sequence's own last step: under a split too, for every layer and direction."""
    model, X, Y, lengths = problem(cell, 2, True, dtype, N=6)
    rng = np.random.default_rng(1)
    h0 = tuple(rng.standard_normal((4, 6, H)).astype(dtype) for _ in model.cell.states)
    h0 = h0 if len(h0) > 1 else h0[0]
    with fastrnn.threads(1):
        ref = model.loss_and_grad(X, Y, h0, lengths=lengths, input_grads=True)
    splits.clear()
    with fastrnn.threads(2):
        got = model.loss_and_grad(X, Y, h0, lengths=lengths, input_grads=True)
    assert set(splits) == {2}
    assert {"X", "h0"} <= set(got[1])
    assert_grads_close(ref, got, dtype)
