"""GridSearchCV over ElmanRegressor on a Dask cluster (joblib's "dask" backend): the fits run
in the worker processes and give the same result as a serial search."""
import contextlib
import importlib.machinery
import logging
import os
import time

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")
pytest.importorskip("sklearn")

import joblib
from sklearn.model_selection import GridSearchCV, KFold
from threadpoolctl import threadpool_limits

from fastrnn.sklearn import ElmanRegressor

PARAM_GRID = {"hidden_size": [2, 16], "lr": [1e-4, 1e-2]}


def running_sum(n=120, T=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, 2))
    return X, 1000.0 + 50.0 * X[:, :, 0].sum(axis=1)


def grid_search(n_jobs):
    """A 4-candidate, 3-fold search (12 fits and a refit). Besides R^2 it scores "pid": the
    process id of whoever ran the fit and the scoring (a local function, so cloudpickle ships
    it by value to the workers, which cannot import this test module)."""
    def pid(estimator, X, y):
        return float(os.getpid())

    X, y = running_sum()
    grid = GridSearchCV(ElmanRegressor(epochs=15, random_state=0), PARAM_GRID,
                        cv=KFold(3, shuffle=True, random_state=0),
                        scoring={"r2": "r2", "pid": pid}, refit="r2", n_jobs=n_jobs)
    return grid.fit(X, y)


@contextlib.contextmanager
def quiet_dask_logs(level=logging.ERROR):
    """The scheduler, nanny and client run in this process and log at INFO, which pytest
    replays as dozens of "Captured log" lines beside any failure: raise the "distributed"
    logger's level for the duration. (dask's "logging" config would do it only if set
    before distributed is first imported; silence_logs only sets its handlers' levels.)"""
    logger = logging.getLogger("distributed")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


@pytest.fixture(scope="module")
def client():
    with quiet_dask_logs():
        # silence_logs: the same level for the worker processes' own logging
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None,
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster, timeout="30s")
        try:
            client.wait_for_workers(2, timeout=30)
            yield client
        finally:
            client.close(timeout=20)
            cluster.close(timeout=20)


def test_grid_search_on_dask_workers_matches_local(client):
    # functions for client.run, local so that they travel by value (see grid_search)
    def blas_threads():
        from threadpoolctl import threadpool_info
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    def executed_count(dask_worker):
        return dask_worker.state.executed_count

    def fastrnn_files():
        """Real paths of the fastrnn package and of its compiled extension, as imported."""
        import os

        import fastrnn
        import fastrnn._head
        return (os.path.realpath(fastrnn.__file__),
                os.path.realpath(fastrnn._head.__file__))

    t0 = time.perf_counter()
    worker_pids = client.run(os.getpid)                 # {worker address: pid}
    assert len(worker_pids) == 2
    assert os.getpid() not in worker_pids.values()
    # the workers import the same installed fastrnn as this process, built: its compiled
    # extension beside its __init__.py (not a source tree without one), wherever the
    # environment lives (a venv inside or outside the checkout, an editable install)
    init, extension = fastrnn_files()
    assert os.path.dirname(extension) == os.path.dirname(init)
    assert extension.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), extension
    on_workers = client.run(fastrnn_files)
    assert all(files == (init, extension) for files in on_workers.values()), on_workers
    # Dask's nanny starts each worker with OMP/MKL/OPENBLAS_NUM_THREADS=1: one BLAS thread
    blas = client.run(blas_threads)
    assert all(threads == [1] * len(threads) for threads in blas.values()), blas
    executed_before = client.run(executed_count)

    with joblib.parallel_backend("dask"):
        on_dask = grid_search(n_jobs=-1)
    dask_seconds = time.perf_counter() - t0

    # every fit and score ran in a worker process, none in this one
    pids = {int(on_dask.cv_results_[f"split{k}_test_pid"][i])
            for k in range(3) for i in range(len(on_dask.cv_results_["params"]))}
    assert pids <= set(worker_pids.values()), (pids, worker_pids)
    executed = client.run(executed_count)
    assert sum(executed[w] - executed_before[w] for w in executed) > 0

    # the same search, serially in this process, with one BLAS thread like each worker
    with threadpool_limits(limits=1, user_api="blas"):
        local = grid_search(n_jobs=1)
    assert on_dask.best_params_ == local.best_params_ == {"hidden_size": 16, "lr": 1e-2}
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_r2"],
                               local.cv_results_["mean_test_r2"], rtol=1e-6)
    assert on_dask.best_estimator_.model_.hidden_size == 16
    assert on_dask.best_score_ > 0.5
