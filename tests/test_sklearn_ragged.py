"""The scikit-learn estimators as users feed them: ragged lists of sequences (padded
internally, with lengths), sample_weight, and flat rows read as multivariate sequences
(n_features), for every cell."""
import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastrnn.sklearn import RNNClassifier, RNNRegressor

CELLS = ["elman", "lstm", "gru"]


def ragged(n=40, F=2, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((int(rng.integers(2, 12)), F)) for _ in range(n)]
    lengths = np.array([len(s) for s in seqs])
    padded = np.zeros((n, lengths.max(), F), np.float32)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    return seqs, padded, lengths


@pytest.mark.parametrize("cell", CELLS)
def test_ragged_list_equals_padded_with_lengths(cell):
    seqs, padded, lengths = ragged()
    y = np.array([int(s[:, 0].sum() > 0) for s in seqs])
    clf = RNNClassifier(cell=cell, epochs=4, random_state=0).fit(seqs, y)
    P = clf.model_.predict(padded, lengths=lengths, target="last").astype(np.float64)
    np.testing.assert_allclose(clf.predict_proba(seqs), P / P.sum(1, keepdims=True),
                               rtol=1e-6, atol=1e-7)
    assert clf.score(seqs, y) == np.mean(clf.predict(seqs) == y)
    # the model trained on the ragged list is the model trained on padded + lengths
    m = type(clf.model_)(2, 32, 2, output="softmax", seed=clf.model_.seed, init="orthogonal")
    m.fit(padded, y, lengths=lengths, target="last", epochs=4, lr=clf._lr(),
          lr_schedule="cosine", seed=clf._seed(0), progress=False)
    for k in m.params:
        np.testing.assert_allclose(m.params[k], clf.model_.params[k], rtol=1e-5, atol=1e-6)
    # a univariate ragged list (T_i,) reads as (T_i, 1)
    uni = [s[:, 0] for s in seqs]
    reg = RNNRegressor(cell=cell, epochs=2, random_state=0).fit(uni, y.astype(float))
    assert reg.predict(uni).shape == (40,)
    assert reg.n_features_in_ == 1


@pytest.mark.parametrize("cell", CELLS)
def test_ragged_per_step_targets(cell):
    seqs, padded, lengths = ragged(seed=1)
    ys = [s[:, 0].cumsum() for s in seqs]
    reg = RNNRegressor(cell=cell, target="sequence", epochs=5, random_state=0).fit(seqs, ys)
    out = reg.predict(seqs)
    assert isinstance(out, list) and [len(o) for o in out] == list(lengths)
    full = reg.model_.predict(padded, lengths=lengths)[..., 0] * reg.y_scale_ + reg.y_mean_
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(out[i], full[i, :n], rtol=1e-6, atol=1e-6)
    assert np.isfinite(reg.score(seqs, ys))
    # the scaling statistics ignore the padding
    flat = np.concatenate(ys)
    np.testing.assert_allclose(reg.y_mean_, [flat.mean()], rtol=1e-10)
    with pytest.raises(ValueError, match="y\\[0\\] must have"):
        RNNRegressor(cell=cell, target="sequence", epochs=1).fit(seqs, [y[:-1] for y in ys])


def test_ragged_bad_input():
    seqs, _, _ = ragged()
    y = np.zeros(40, int)
    y[0] = 1
    with pytest.raises(ValueError, match="same number of features"):
        RNNClassifier(epochs=1).fit(seqs[:-1] + [np.zeros((3, 5))], y)
    with pytest.raises(ValueError, match="contains NaN"):
        RNNClassifier(epochs=1).fit(seqs[:-1] + [np.full((3, 2), np.nan)], y)
    clf = RNNClassifier(epochs=1).fit(seqs, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict([np.zeros((3, 3)), np.zeros((4, 3))])


@pytest.mark.parametrize("cell", CELLS)
def test_sample_weight_zero_drops_and_two_repeats(cell):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 6, 2))
    y = X[:, :, 0].sum(1)
    w = rng.integers(0, 3, size=20).astype(float)
    w[0] = 2
    kw = dict(cell=cell, dtype="float64", epochs=5, batch_size=64, random_state=0)
    weighted = RNNRegressor(**kw).fit(X, y, sample_weight=w)
    rows = np.repeat(np.arange(20), w.astype(int))
    repeated = RNNRegressor(**kw).fit(X[rows], y[rows])
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-9,
                               atol=1e-10)
    labels = (y > 0).astype(int)
    weighted = RNNClassifier(**kw).fit(X, labels, sample_weight=w)
    repeated = RNNClassifier(**kw).fit(X[rows], labels[rows])
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X),
                               rtol=1e-9, atol=1e-10)
    # ragged input with weights
    seqs = [x[: 2 + i % 4] for i, x in enumerate(X)]
    RNNClassifier(cell=cell, epochs=1).fit(seqs, labels, sample_weight=w)
    with pytest.raises(ValueError, match="sample_weight"):
        RNNClassifier(cell=cell, epochs=1).fit(X, labels, sample_weight=-w)


def test_n_features_reads_flat_rows_in_a_pipeline():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 5, 3))
    y = X[:, :, 1].sum(1)
    flat = X.reshape(30, 15)                       # t0f0 t0f1 t0f2 t1f0 ...
    pipe = make_pipeline(StandardScaler(), RNNRegressor(n_features=3, epochs=3,
                                                        random_state=0, dtype="float64"))
    pipe.fit(flat, y)
    reg = pipe[-1]
    assert reg.model_.input_size == 3 and reg.n_features_in_ == 15
    scaled = pipe[0].transform(flat).reshape(30, 5, 3)
    direct = RNNRegressor(epochs=3, random_state=0, dtype="float64").fit(scaled, y)
    np.testing.assert_allclose(pipe.predict(flat), direct.predict(scaled), rtol=1e-10)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        RNNRegressor(n_features=4, epochs=1).fit(flat, y)
