"""The scikit-learn estimators: sklearn's own check suite, and what it does not cover
(sequences, partial_fit, warm_start, pipelines, parallel grid search, pickling)."""
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from fastrnn import ElmanRNN
from fastrnn.sklearn import ElmanClassifier, ElmanRegressor


# ---------------------------------------------------------------------------------------------
# scikit-learn's estimator checks. The estimators are checked with their default
# hyperparameters (fast enough: the whole suite takes a few seconds), and once more with the
# other dtype and backend, early stopping, and a non-default activation/initialisation, and
# with AdamW's weight decay. Every check passes but one, where it cannot:
# check_sample_weight_equivalence_on_dense_data asks that weights equal repetitions to 1e-7
# after training, which holds in float64 with one batch per epoch (the float64 instances
# below pass it as they are), but not in float32 (50 epochs of float32 roundoff, summed in
# another order over the repeated rows: 1e-6 apart), nor with mini-batches or early
# stopping or dropout (repeating rows changes the batches, the held-out split and the masks).
# tests/test_sample_weight.py checks the equivalence itself to 1e-10.

def sample_weight_xfail(estimator):
    exact = (estimator.dtype == "float64" and not estimator.early_stopping
             and estimator.batch_size >= 64
             and (estimator.dropout == 0 or estimator.num_layers == 1))
    return {} if exact else {"check_sample_weight_equivalence_on_dense_data":
                             "equal to repetition only up to float32 roundoff, or with "
                             "other mini-batches or validation split (see the comment)"}


@parametrize_with_checks([
    ElmanRegressor(),
    ElmanClassifier(),
    ElmanRegressor(dtype="float64", batch_size=64),
    ElmanClassifier(dtype="float64", batch_size=64),
    ElmanRegressor(dtype="float64", backend="numpy", early_stopping=True),
    ElmanClassifier(dtype="float64", backend="numpy", early_stopping=True, batch_size=7,
                    activation="relu", init="identity", spectral_radius=0.9),
    ElmanRegressor(optimizer="adamw", weight_decay=1e-3),
    ElmanClassifier(optimizer="adamw", weight_decay=1e-3),
], expected_failed_checks=sample_weight_xfail)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_checks([
    ElmanRegressor(cell="lstm"),
    ElmanClassifier(cell="lstm"),
    ElmanRegressor(cell="gru"),
    ElmanClassifier(cell="gru"),
    ElmanRegressor(cell="lstm", dtype="float64", batch_size=64),
    ElmanClassifier(cell="gru", dtype="float64", batch_size=64),
    ElmanRegressor(cell="lstm", dtype="float64", backend="numpy", early_stopping=True),
    ElmanClassifier(cell="gru", dtype="float64", backend="numpy", batch_size=7,
                    init="glorot"),
], expected_failed_checks=sample_weight_xfail)
def test_sklearn_compatible_gated_cells(estimator, check):
    """Every estimator check passes for the LSTM and GRU cells too."""
    check(estimator)


@parametrize_with_checks([
    ElmanRegressor(cell="lstm", num_layers=2, bidirectional=True, dropout=0.2),
    ElmanClassifier(cell="gru", num_layers=2, bidirectional=True),
    ElmanClassifier(num_layers=2, dropout=0.1, dtype="float64", backend="numpy"),
    ElmanRegressor(cell="gru", num_layers=2, bidirectional=True, dtype="float64",
                   batch_size=64),
], expected_failed_checks=sample_weight_xfail)
def test_sklearn_compatible_stacks(estimator, check):
    """And for deep and bidirectional networks."""
    check(estimator)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_stacks_learn(cell):
    """num_layers, bidirectional and dropout reach the model; predictions for target "last"
    read each direction's final state, as the training scores it."""
    X, y = running_sum(n=200, T=8)
    reg = ElmanRegressor(cell=cell, num_layers=2, bidirectional=True, dropout=0.1,
                         epochs=30, random_state=0).fit(X, y)
    m = reg.model_
    assert (m.num_layers, m.bidirectional, m.dropout) == (2, True, 0.1)
    assert m.params["W_y"].shape == (2 * 32, 1)
    assert reg.score(X, y) > 0.9
    last = m.predict(X.astype(np.float32), target="last")[:, 0]
    np.testing.assert_allclose(reg.predict(X), last * reg.y_scale_[0] + reg.y_mean_[0],
                               rtol=1e-6)
    Xc, yc = sine_classes(n=120)
    clf = ElmanClassifier(cell=cell, num_layers=2, bidirectional=True, epochs=5,
                          random_state=0).fit(Xc, yc)
    P = clf.predict_proba(Xc)
    np.testing.assert_allclose(P, clf.model_.predict(Xc.astype(np.float32), target="last"),
                               rtol=1e-5)
    assert clf.predict(Xc).shape == (120,) and 0 <= clf.score(Xc, yc) <= 1
    seq = ElmanRegressor(cell=cell, num_layers=3, target="sequence", epochs=2,
                         random_state=0).fit(X, X[..., 0].cumsum(axis=1))
    assert seq.model_.num_layers == 3 and seq.predict(X).shape == (200, 8)


def test_stack_hyperparameters_checked():
    X, y = running_sum(n=20, T=4)
    for params, error in (({"num_layers": 0}, ValueError), ({"num_layers": 1.5}, TypeError),
                          ({"bidirectional": "yes"}, TypeError), ({"dropout": 1.0}, ValueError),
                          ({"bidirectional": True, "tbptt": 2}, ValueError)):
        with pytest.raises(error):
            ElmanRegressor(epochs=1, **params).fit(X, y)
    warm = ElmanRegressor(num_layers=2, epochs=1, warm_start=True, random_state=0).fit(X, y)
    warm.set_params(dropout=0.3).fit(X, y)                  # dropout may change
    assert warm.model_.dropout == 0.3
    with pytest.raises(ValueError, match=r"num_layers \(2 -> 3\)"):
        warm.set_params(num_layers=3).fit(X, y)
    with pytest.raises(ValueError, match=r"bidirectional \(False -> True\)"):
        warm.set_params(num_layers=2, bidirectional=True).fit(X, y)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cells_learn_and_refuse_elman_options(cell):
    X, y = running_sum(n=200, T=8)
    reg = ElmanRegressor(cell=cell, epochs=30, random_state=0).fit(X, y)
    assert type(reg.model_).__name__ == cell.upper() and reg.model_.cell.name == cell
    assert reg.score(X, y) > 0.9
    with pytest.raises(ValueError, match="activation='relu' applies to the Elman cell only"):
        ElmanRegressor(cell=cell, activation="relu").fit(X, y)
    with pytest.raises(ValueError, match="spectral_radius=0.9 applies to the Elman cell"):
        ElmanClassifier(cell=cell, spectral_radius=0.9).fit(X, y > 1000)
    with pytest.raises(ValueError, match="^cell must be one of 'elman', 'lstm', 'gru'"):
        ElmanRegressor(cell="rnn").fit(X, y)
    warm = ElmanRegressor(cell=cell, epochs=2, warm_start=True, random_state=0).fit(X, y)
    warm.set_params(cell="elman")
    with pytest.raises(ValueError, match=r"cell \('%s' -> 'elman'\)" % cell):
        warm.fit(X, y)


# ---------------------------------------------------------------------------------------------
# data

def digits_sequences():
    """sklearn's digits read row by row: 8 steps of 8 pixels, scaled to [0, 1]."""
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).reshape(-1, 8, 8), y


def running_sum(n=300, T=12, I=2, seed=0):
    """X (n, T, I) and y = the sum of the first input over the sequence, plus an offset and a
    large scale (the regressor standardises y)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, I))
    return X, 1000.0 + 50.0 * X[:, :, 0].sum(axis=1)


def sine_classes(n=300, T=20, seed=0):
    """Noisy sine waves of three frequencies, labelled with strings."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 3, n)
    t = np.arange(T)
    X = np.sin(t * (0.3 + 0.3 * k[:, None]) + 6.28 * rng.random((n, 1)))
    X += 0.2 * rng.standard_normal(X.shape)
    return X[..., None], np.array(["slow", "medium", "fast"])[k]


# ---------------------------------------------------------------------------------------------
# quality with the defaults

def test_digits_row_by_row_default_accuracy():
    X, y = digits_sequences()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=0)
    clf = ElmanClassifier(random_state=0)
    t0 = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - t0
    accuracy = clf.score(X_test, y_test)
    assert accuracy > 0.9, accuracy
    assert clf.n_features_in_ == 8 and clf.model_.input_size == 8
    assert clf.classes_.tolist() == list(range(10))
    P = clf.predict_proba(X_test)
    assert P.shape == (len(X_test), 10) and P.dtype == np.float64
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X_test), clf.classes_[P.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X_test)), P)


def test_regressor_learns_a_running_sum_at_any_target_scale():
    X, y = running_sum()
    reg = ElmanRegressor(random_state=0).fit(X[:200], y[:200])
    assert reg.score(X[200:], y[200:]) > 0.85
    assert abs(reg.y_mean_[0] - y[:200].mean()) < 1e-9 * abs(y[:200].mean())
    pred = reg.predict(X[200:])
    assert pred.shape == (100,) and pred.dtype == np.float64


def test_classifier_string_labels():
    X, y = sine_classes()
    clf = ElmanClassifier(random_state=0).fit(X[:200], y[:200])
    assert clf.classes_.tolist() == ["fast", "medium", "slow"]
    assert clf.score(X[200:], y[200:]) > 0.9
    assert clf.predict(X[:5]).dtype == clf.classes_.dtype


# ---------------------------------------------------------------------------------------------
# inputs and outputs

def test_2d_X_is_univariate_sequences():
    X, y = running_sum(n=100, I=1)
    a = ElmanRegressor(epochs=3, random_state=0).fit(X[..., 0], y)
    b = ElmanRegressor(epochs=3, random_state=0).fit(X, y)
    assert a.n_features_in_ == 12 and a.model_.input_size == 1
    assert b.n_features_in_ == 1
    np.testing.assert_array_equal(a.predict(X[..., 0]), b.predict(X))
    with pytest.raises(ValueError, match="X has 11 features, but ElmanRegressor is expecting "
                                         "12 features"):
        a.predict(X[:, :11, 0])
    with pytest.raises(ValueError, match="fitted on 2D"):
        a.predict(X)
    with pytest.raises(ValueError, match="fitted on 3D"):
        b.predict(X[..., 0])


def test_3d_X_may_change_length_but_not_features():
    X, y = running_sum(n=100)
    reg = ElmanRegressor(epochs=3, random_state=0).fit(X, y)
    assert reg.predict(X[:, :5]).shape == (100,)
    assert reg.predict(np.concatenate([X, X], axis=1)).shape == (100,)
    with pytest.raises(ValueError, match="X has 3 features per time step, but ElmanRegressor "
                                         "is expecting 2"):
        reg.predict(np.concatenate([X, X[..., :1]], axis=2))


def test_X_is_cast_to_the_model_dtype():
    X, y = running_sum(n=60)
    reg = ElmanRegressor(epochs=2, random_state=0).fit(X, y)
    assert reg.model_.dtype == np.float32
    p64 = reg.predict(X)
    np.testing.assert_array_equal(reg.predict(X.astype(np.float32)), p64)
    Xi = np.round(X * 3).astype(np.int64)
    assert reg.predict(Xi).dtype == np.float64
    reg64 = ElmanRegressor(epochs=2, random_state=0, dtype="float64").fit(Xi, y)
    assert reg64.model_.params["W_x"].dtype == np.float64


@pytest.mark.parametrize("Est", [ElmanRegressor, ElmanClassifier])
def test_bad_inputs_raise(Est):
    X, y = running_sum(n=40)
    if Est is ElmanClassifier:
        y = (y > np.median(y)).astype(int)
    est = Est(epochs=1, random_state=0)
    with pytest.raises(NotFittedError):
        est.predict(X)
    bad = X.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(bad, y)
    bad[3, 4, 1] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="Complex data not supported"):
        est.fit(X + 1j, y)
    with pytest.raises(TypeError, match="dense data is required"):
        est.fit(sparse.csr_matrix(X[..., 0]), y)
    with pytest.raises(ValueError, match="Expected a 2D array .* got 1D"):
        est.fit(X[:, 0, 0], y)
    with pytest.raises(ValueError, match="got 4D"):
        est.fit(X[..., None], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="requires y to be passed"):
        est.fit(X, None)
    with pytest.raises(ValueError, match="0 time step"):
        est.fit(X[:, :0], y)
    with pytest.raises(ValueError, match="could not convert"):
        est.fit(np.full(X.shape, "a", dtype=object), y)
    est.fit(X, y)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(np.full_like(X, np.nan))
    with pytest.raises(ValueError, match="got 1D"):
        est.predict(X[0, :, 0])


@pytest.mark.parametrize("params, error", [
    ({"hidden_size": 0}, ValueError),
    ({"hidden_size": 2.5}, TypeError),
    ({"activation": "softplus"}, ValueError),
    ({"init": "he"}, ValueError),
    ({"dtype": "float16"}, TypeError),
    ({"backend": "torch"}, ValueError),
    ({"optimizer": "lbfgs"}, ValueError),
    ({"lr": -1.0}, ValueError),
    ({"lr_schedule": "step"}, ValueError),
    ({"epochs": 0}, ValueError),
    ({"batch_size": 0}, ValueError),
    ({"clip_norm": -1.0}, ValueError),
    ({"tbptt": 0}, ValueError),
    ({"early_stopping": True, "validation_fraction": 1.5}, ValueError),
    ({"early_stopping": "yes"}, TypeError),
    ({"weight_decay": -0.1}, ValueError),
    ({"weight_decay": "0.1"}, TypeError),
    ({"weight_decay": float("nan")}, ValueError),
])
def test_bad_hyperparameters_raise_in_fit(params, error):
    X, y = running_sum(n=20)
    est = ElmanRegressor(**params)            # __init__ only stores them
    with pytest.raises(error):
        est.fit(X, y)


def test_optimizer_instance_is_refused():
    from fastrnn.optim import Adam
    X, y = running_sum(n=20)
    other = ElmanRNN(2, 4, 1)
    with pytest.raises(TypeError, match="not an instance"):
        ElmanRegressor(optimizer=Adam(other.params)).fit(X, y)
    ElmanRegressor(optimizer=Adam, epochs=1).fit(X, y)        # a class is fine


def test_weight_decay_reaches_the_optimizer():
    from fastrnn.optim import AdamW
    X, y = running_sum(n=40)
    reg = ElmanRegressor(epochs=1, random_state=0).fit(X, y)
    assert reg.model_.optimizer_.weight_decay == 0.0
    reg = ElmanRegressor(optimizer="adamw", weight_decay=0.05, epochs=1,
                         random_state=0).fit(X, y)
    opt = reg.model_.optimizer_
    assert type(opt) is AdamW and (opt.weight_decay, opt.decay_biases) == (0.05, False)
    clf = ElmanClassifier(optimizer="adamw", epochs=1, random_state=0).fit(X, y > 0)
    assert clf.model_.optimizer_.weight_decay == 0.0         # the estimator's default
    with pytest.raises(ValueError, match="weight_decay"):
        ElmanRegressor(weight_decay=-1.0).fit(X, y)


def test_regressor_multi_output_keeps_the_shape_of_y():
    X, y = running_sum(n=80)
    Y2 = np.stack([y, -3 * y + 7], axis=1)
    reg = ElmanRegressor(epochs=2, random_state=0).fit(X, Y2)
    assert reg.predict(X).shape == (80, 2)
    reg.fit(X, y[:, None])
    assert reg.predict(X).shape == (80, 1)


def test_regressor_per_step_targets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10, 1))
    Y = 5.0 * np.cumsum(X, axis=1) - 2.0                          # (n, T, 1): running sum
    reg = ElmanRegressor(target="sequence", random_state=0).fit(X[:200], Y[:200])
    pred = reg.predict(X[200:])
    assert pred.shape == (100, 10, 1)
    assert reg.score(X[200:], Y[200:]) > 0.9
    assert reg.predict(X[200:, :4]).shape == (100, 4, 1)            # any length at predict
    reg2 = ElmanRegressor(target="sequence", epochs=2, random_state=0).fit(X[..., 0],
                                                                         Y[..., 0])
    assert reg2.predict(X[:5, :, 0]).shape == (5, 10)               # (n, T) in, (n, T) out
    assert np.isfinite(reg2.score(X[:50, :, 0], Y[:50, :, 0]))
    with pytest.raises(ValueError, match="one target per time step"):
        ElmanRegressor(target="sequence").fit(X, Y[:, :9])
    with pytest.raises(ValueError, match="target='sequence'"):
        ElmanRegressor(target="sequence").fit(X, Y[:, 0, 0])
    with pytest.raises(ValueError, match="target='last'"):
        ElmanRegressor().fit(X, Y)


def test_classifier_rejects_continuous_and_multilabel_targets():
    X, y = running_sum(n=40)
    with pytest.raises(ValueError, match="Unknown label type"):
        ElmanClassifier().fit(X, y + 0.5)
    with pytest.raises(ValueError, match="1d array"):
        ElmanClassifier().fit(X, np.zeros((40, 2), int))


def test_unseen_labels_at_score_time_are_wrong_predictions():
    X, y = sine_classes(n=120)
    clf = ElmanClassifier(epochs=5, random_state=0).fit(X, y)
    y_other = np.where(y == "slow", "never-seen", y)
    assert clf.score(X, y_other) <= clf.score(X, y)


# ---------------------------------------------------------------------------------------------
# estimator protocol: params, clone, random_state, pickle

def test_params_clone_and_set_params():
    reg = ElmanRegressor(hidden_size=7, lr=0.01, random_state=3)
    params = reg.get_params()
    for name in ("hidden_size", "activation", "init", "spectral_radius", "epochs",
                 "batch_size", "optimizer", "lr", "lr_schedule", "clip_norm", "tbptt",
                 "target", "dtype", "backend", "random_state", "warm_start", "verbose",
                 "early_stopping", "validation_fraction", "n_iter_no_change", "weight_decay",
                 "num_layers", "bidirectional", "dropout"):
        assert name in params
    X, y = running_sum(n=40)
    reg.fit(X, y)
    twin = clone(reg)
    assert twin.get_params() == params and not hasattr(twin, "model_")
    np.testing.assert_array_equal(twin.fit(X, y).predict(X), reg.predict(X))
    reg.set_params(hidden_size=5, activation="relu").fit(X, y)
    assert reg.model_.hidden_size == 5 and reg.model_.activation == "relu"


def test_random_state():
    X, y = running_sum(n=60)
    a = ElmanRegressor(epochs=3, random_state=1).fit(X, y).predict(X)
    b = ElmanRegressor(epochs=3, random_state=1).fit(X, y).predict(X)
    c = ElmanRegressor(epochs=3, random_state=2).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    rs = np.random.RandomState(0)
    est = ElmanRegressor(epochs=3, random_state=rs)
    first = est.fit(X, y).predict(X)
    assert not np.array_equal(first, est.fit(X, y).predict(X))   # the RandomState moved on
    est = ElmanRegressor(epochs=3, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(est.fit(X, y).predict(X), first)
    assert ElmanRegressor(epochs=1).fit(X, y)._model_seed >= 0      # None: a fresh seed


def test_pickle_round_trip_and_continue():
    X, y = sine_classes(n=120)
    clf = ElmanClassifier(epochs=5, random_state=0).fit(X, y)
    clone_ = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone_.predict_proba(X), clf.predict_proba(X))
    assert clone_.history_["loss"] == clf.history_["loss"]
    # the unpickled optimizer still updates the unpickled model's arrays
    clone_.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(clone_.predict_proba(X), clf.predict_proba(X))
    assert clone_.n_iter_ == 6


# ---------------------------------------------------------------------------------------------
# partial_fit and warm_start

def test_partial_fit_reduces_the_loss_and_keeps_the_optimizer():
    X, y = running_sum(n=200)
    reg = ElmanRegressor(random_state=0)
    reg.partial_fit(X, y)
    model, opt = reg.model_, reg.model_.optimizer_
    steps = opt.steps
    for _ in range(14):
        reg.partial_fit(X, y)
    assert reg.model_ is model and reg.model_.optimizer_ is opt
    assert opt.steps == 15 * steps and opt.lr == reg._lr()           # constant lr
    assert reg.n_iter_ == 15 and len(reg.loss_curve_) == 15 and len(reg.history_) == 1
    assert reg.loss_curve_[-1] < 0.3 * reg.loss_curve_[0]
    assert reg.score(X, y) > 0.6


def test_partial_fit_matches_fit_without_schedule():
    """One partial_fit call per epoch does what fit does (but fit reshuffles from one seed
    and partial_fit from one per call, so compare the learning, not the bits)."""
    X, y = running_sum(n=200)
    inc = ElmanRegressor(random_state=0)
    for _ in range(10):
        inc.partial_fit(X, y)
    full = ElmanRegressor(random_state=0, epochs=10, lr_schedule="constant").fit(X, y)
    assert abs(inc.loss_curve_[-1] - full.loss_curve_[-1]) < 0.5 * full.loss_curve_[0]


def test_partial_fit_after_fit_continues():
    X, y = running_sum(n=200)
    reg = ElmanRegressor(random_state=0, epochs=20).fit(X, y)
    before = reg.score(X, y)
    model = reg.model_
    reg.partial_fit(X, y)
    assert reg.model_ is model and reg.n_iter_ == 21
    assert reg.model_.optimizer_.lr == reg._lr() and reg.model_.optimizer_.steps > 0
    assert reg.score(X, y) > before - 0.1
    # the scaling of y from the first fit is kept
    assert reg.y_mean_[0] == pytest.approx(y.mean())


def test_classifier_partial_fit_protocol():
    X, y = sine_classes(n=240)
    classes = np.array(["fast", "medium", "slow"])
    clf = ElmanClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X[:50], y[:50])
    only_slow = y == "slow"
    clf.partial_fit(X[only_slow], y[only_slow], classes=classes[::-1])  # any order
    assert clf.classes_.tolist() == classes.tolist()
    assert clf.predict_proba(X[:3]).shape == (3, 3)                    # every class
    clf.partial_fit(X, y)                                               # classes optional now
    clf.partial_fit(X, y, classes=classes)                              # or the same again
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(X, y, classes=np.array(["fast", "slow"]))
    with pytest.raises(ValueError, match=r"labels \['other'\] that are not in classes_"):
        clf.partial_fit(X[:4], np.array(["fast", "other", "slow", "slow"]))
    for _ in range(20):
        clf.partial_fit(X[:200], y[:200])
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[1]
    assert clf.score(X[200:], y[200:]) > 0.8
    # fit starts afresh: classes from y, partial_fit's classes forgotten
    clf.fit(X[only_slow | (y == "fast")], y[only_slow | (y == "fast")])
    assert clf.classes_.tolist() == ["fast", "slow"] and clf.n_iter_ == clf.epochs


def test_warm_start_continues():
    X, y = running_sum(n=200)
    reg = ElmanRegressor(epochs=5, random_state=0).fit(X, y)
    model, first_losses = reg.model_, reg.history_["loss"]
    reg.set_params(warm_start=True).fit(X, y)
    assert reg.model_ is model and reg.n_iter_ == 10 and len(reg.loss_curve_) == 10
    assert reg.history_["loss"][0] < 0.5 * first_losses[0]          # went on from there
    assert reg.history_["loss"][-1] < first_losses[-1]
    reg.set_params(warm_start=False).fit(X, y)
    assert reg.model_ is not model and reg.n_iter_ == 5
    np.testing.assert_allclose(reg.history_["loss"], first_losses)   # afresh, same seed


def test_warm_start_refuses_a_changed_model():
    X, y = sine_classes(n=60)
    clf = ElmanClassifier(epochs=1, warm_start=True, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="hidden_size"):
        clf.set_params(hidden_size=16).fit(X, y)
    clf.set_params(hidden_size=32)
    with pytest.raises(ValueError, match="not in classes_"):
        clf.fit(X, np.where(y == "slow", "new", y))
    clf.fit(X[y != "slow"], y[y != "slow"])                           # a subset is fine
    assert clf.classes_.tolist() == ["fast", "medium", "slow"]
    reg = ElmanRegressor(epochs=1, warm_start=True).fit(X, np.arange(60.0))
    with pytest.raises(ValueError, match="number of input features|expecting 1 features"):
        reg.fit(np.concatenate([X, X], axis=2), np.arange(60.0))


def test_early_stopping():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((200, 6, 2)), rng.standard_normal(200)   # nothing to learn
    reg = ElmanRegressor(early_stopping=True, n_iter_no_change=3, epochs=200,
                         random_state=0).fit(X, y)
    assert reg.history_.stopped_early and reg.n_iter_ < 200
    assert all(v is not None for v in reg.history_["val_loss"])
    with pytest.warns(UserWarning, match="at least 2 samples"):
        ElmanRegressor(early_stopping=True, epochs=2).fit(X[:1], y[:1])


def test_verbose_shows_a_progress_bar(capsys):
    pytest.importorskip("tqdm")
    X, y = running_sum(n=40)
    ElmanRegressor(epochs=2, verbose=True).fit(X, y)
    assert "fit" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# composition: pipelines and parallel model selection

def test_pipeline_after_a_flat_feature_transformer():
    rng = np.random.default_rng(0)
    X = np.cumsum(rng.standard_normal((300, 12)), axis=1) * 40 + 300   # (n, T): random walks
    y = X[:, -1] - X[:, 0]
    pipe = make_pipeline(StandardScaler(), ElmanRegressor(random_state=0))
    pipe.fit(X[:200], y[:200])
    assert pipe.score(X[200:], y[200:]) > 0.8
    assert pipe[-1].n_features_in_ == 12 and pipe[-1].model_.input_size == 1


def _grid_search(n_jobs):
    X, y = running_sum(n=120, T=8)
    grid = GridSearchCV(ElmanRegressor(epochs=15, random_state=0),
                        {"hidden_size": [2, 16], "lr": [1e-4, 1e-2]},
                        cv=KFold(3, shuffle=True, random_state=0), n_jobs=n_jobs)
    return grid.fit(X, y)


def test_grid_search_in_parallel_processes_matches_serial():
    parallel = _grid_search(n_jobs=2)           # joblib's loky: 2 processes, 1 BLAS thread each
    with threadpool_limits(limits=1, user_api="blas"):
        serial = _grid_search(n_jobs=1)
    assert parallel.best_params_ == serial.best_params_ == {"hidden_size": 16, "lr": 1e-2}
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], rtol=1e-6)
    assert isinstance(parallel.best_estimator_, ElmanRegressor)
    assert parallel.best_estimator_.model_.hidden_size == 16


# ---------------------------------------------------------------------------------------------
# sklearn stays optional

def test_importing_fastrnn_does_not_import_sklearn():
    code = "import sys, fastrnn; sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__),
                          timeout=60).returncode == 0
