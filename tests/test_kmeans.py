"""KMeans: parity with scikit-learn's Lloyd, seeding quality, determinism, bad input, saving."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.algorithms.cluster import kmeans_kernels as K
from shardlearn.algorithms.cluster.kmeans import fit_kmeans
from shardlearn.cluster import KMeans
from shardlearn.data import Dataset
from shardlearn.runtime import steps_started
from shardlearn.runtime.engines import LocalEngine
from shardlearn.runtime.faults import FaultSpec
from shardlearn.runtime.session import Session
from shardlearn.testing import inject_faults


def _blobs(n=3000, d=5, centers=6, std=2.5, seed=0):
    X, y = make_blobs(n, d, centers=centers, cluster_std=std, random_state=seed)
    return X, y


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# -- parity with scikit-learn's Lloyd from the same initial centres ---------------------------
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_same_centres_as_sklearn_lloyd_from_same_init(local_session, weighted, sparse):
    X, _ = _blobs(4000, 6, centers=7, std=3.0)
    rng = np.random.default_rng(1)
    if sparse:
        X = np.where(rng.random(X.shape) < 0.5, 0.0, X)
        X = sp.csr_matrix(X)
    sw = rng.uniform(0.5, 2.0, X.shape[0]) if weighted else None
    C0 = (X[:7].toarray() if sparse else X[:7]).copy()
    ds = Dataset.from_arrays(X, sample_weight=sw, n_shards=5)
    ours = KMeans(7, init=C0, tol=1e-4).fit(ds)
    ref = SkKMeans(7, init=C0, n_init=1, tol=1e-4, algorithm="lloyd").fit(X, sample_weight=sw)
    assert ours.n_iter_ == ref.n_iter_
    assert _rel(ours.cluster_centers_, ref.cluster_centers_) < 1e-6
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-6, atol=1e-8)
    assert ours.score(X) == pytest.approx(ref.score(X), rel=1e-6)
    # The history holds the inertia each Lloyd pass started from; it never increases.
    hist = np.array(ours.fit_report_.objective_history)
    assert len(hist) == ours.n_iter_ and np.all(np.diff(hist) <= 1e-9 * hist[0])


def test_fixed_iterations_and_tol_zero_match_sklearn(local_session):
    X, _ = _blobs(3000, 4, centers=5, std=4.0)
    C0 = X[-5:].copy()
    ours = KMeans(5, init=C0, tol=0, max_iter=4).fit(Dataset.from_arrays(X, n_shards=3))
    ref = SkKMeans(5, init=C0, n_init=1, tol=0, max_iter=4, algorithm="lloyd").fit(X)
    assert ours.n_iter_ == ref.n_iter_ == 4
    assert _rel(ours.cluster_centers_, ref.cluster_centers_) < 1e-6
    np.testing.assert_array_equal(ours.labels_, ref.labels_)  # final E-step, as sklearn
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


def test_far_from_origin_data_keeps_precision(local_session):
    X, _ = _blobs(2000, 3, centers=4, std=1.0)
    X = X + 1e7
    C0 = X[:4].copy()
    ours = KMeans(4, init=C0).fit(Dataset.from_arrays(X, n_shards=3))
    ref = SkKMeans(4, init=C0, n_init=1, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


# -- seeding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("init,n_init,seeds", [("k-means||", "auto", 3), ("k-means++", 10, 1),
                                               ("random", "auto", 1)])
def test_own_seeding_within_one_percent_of_sklearn_best_of_ten(local_session, init, n_init,
                                                               seeds):
    # k-means|| with a single run is the claim; k-means++ and random rows need restarts
    # (as in scikit-learn, where a single k-means++ run also misses on this data).
    X, _ = make_blobs(6000, 8, centers=10, cluster_std=2.0, random_state=3)
    best = SkKMeans(10, n_init=10, random_state=0).fit(X).inertia_
    ds = Dataset.from_arrays(X, n_shards=6)
    for seed in range(seeds):
        m = KMeans(10, init=init, n_init=n_init, random_state=seed).fit(ds)
        assert m.inertia_ <= best * 1.01, (init, seed, m.inertia_ / best)


def test_kmeans_parallel_on_overlapping_blobs(local_session):
    X, _ = make_blobs(4000, 2, centers=20, cluster_std=1.0, random_state=1)
    best = SkKMeans(20, n_init=10, random_state=0).fit(X).inertia_
    m = KMeans(20, n_init=3, random_state=0).fit(Dataset.from_arrays(X, n_shards=4))
    assert m.inertia_ <= best * 1.01


def test_fewer_distinct_rows_than_clusters_gives_finite_centres(local_session):
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 20, axis=0)
    for init in ("k-means||", "k-means++", "random"):
        m = KMeans(5, init=init, random_state=0).fit(X)
        assert np.isfinite(m.cluster_centers_).all()
        assert m.inertia_ == pytest.approx(0.0, abs=1e-9)


def test_empty_clusters_are_reseeded_from_farthest_rows(local_session):
    X, _ = _blobs(1000, 2, centers=3, std=0.5)
    # Two initial centres far from all data: they get no rows on the first pass.
    C0 = np.array([X[0], X[1], [1e3, 1e3], [-1e3, 1e3]])
    m = KMeans(4, init=C0, max_iter=50).fit(Dataset.from_arrays(X, n_shards=3))
    ref = SkKMeans(4, init=C0, n_init=1, max_iter=50, algorithm="lloyd").fit(X)
    assert np.isfinite(m.cluster_centers_).all()
    assert len(np.unique(m.labels_)) == 4
    assert m.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


# -- determinism ---------------------------------------------------------------------------------
@functools.cache
def _determinism_data():
    X, _ = _blobs(2500, 4, centers=5, std=3.0, seed=7)
    sw = np.random.default_rng(0).uniform(0.5, 1.5, len(X))
    return Dataset.from_arrays(X, sample_weight=sw, n_shards=5)


@functools.cache
def _reference(init):
    ref_session = Session(LocalEngine(1))
    try:
        return fit_kmeans(_determinism_data(), n_clusters=5, init=init, n_init=2,
                          random_state=3, session=ref_session)
    finally:
        ref_session.shutdown()


@pytest.mark.timeout(300)
def test_bit_identical_on_every_engine_and_worker_count(any_session):
    for init in ("k-means||", "k-means++"):
        ref = _reference(init)
        m = KMeans(5, init=init, n_init=2, random_state=3).fit(_determinism_data())
        np.testing.assert_array_equal(m.cluster_centers_, ref.centers)
        np.testing.assert_array_equal(m.labels_, ref.labels)
        assert m.inertia_ == ref.inertia and m.n_iter_ == ref.n_iter


def test_worker_death_mid_fit_changes_no_bit():
    ds = _determinism_data()
    ref = _reference("k-means||")
    with shardlearn.init("local", n_workers=3):
        with inject_faults(FaultSpec(1, "kill", step="lloyd", call=3),
                           FaultSpec(2, "kill", step="seed", call=2)):
            m = KMeans(5, n_init=2, random_state=3).fit(ds)
        assert m.fit_report_.failures_recovered == 2
    np.testing.assert_array_equal(m.cluster_centers_, ref.centers)
    np.testing.assert_array_equal(m.labels_, ref.labels)
    assert m.n_iter_ == ref.n_iter


def test_kernels_rebuild_lost_state_identically():
    """A shard moved to a fresh worker (state = prepare only) gives the same results."""
    X, _ = _blobs(1500, 3, centers=4)
    shard = Dataset.from_arrays(X, n_shards=1).load_shard(0)
    offsets = np.array([0, len(X)])
    C1, C2 = X[:4].copy(), X[4:8].copy()
    live, fresh = {}, {}
    K.prepare(shard, live, offsets)
    K.lloyd_step(shard, live, C1, (0, 0), (0, -1), None)
    K.prepare(shard, fresh, offsets)
    a = K.lloyd_step(shard, live, C2, (0, 1), (0, 0), C1)
    b = K.lloyd_step(shard, fresh, C2, (0, 1), (0, 0), C1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    cands = X[10:20].copy()
    K.update_potential(shard, live, 0, cands[:4], 0)
    pa = K.kmeans_parallel_round(shard, live, 0, cands, 4, 8.0, 5, 2)
    K.prepare(shard, fresh, offsets)
    pb = K.kmeans_parallel_round(shard, fresh, 0, cands, 4, 8.0, 5, 2)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make_bad,match", [
    (lambda X: (X[:3], dict(n_clusters=5)), "n_samples=3 should be >= n_clusters=5"),
    (lambda X: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), {}), "NaN"),
    (lambda X: (X[:0], {}), "0 sample"),
    (lambda X: (X, dict(n_clusters=0)), "n_clusters"),
    (lambda X: (X, dict(init=np.zeros((3, 3)))), "shape of the initial centers"),
    (lambda X: (X, dict(init=np.full((2, 3), np.inf))), "inf"),
])
def test_bad_input_fails_before_any_worker_runs(local_session, make_bad, match):
    X = np.random.default_rng(0).normal(size=(40, 3))
    Xb, params = make_bad(X)
    Xb_copy = Xb.copy()
    params = {"n_clusters": 2, **params}
    before = steps_started()
    with pytest.raises(ValueError, match=match):
        KMeans(**params).fit(Xb)
    assert steps_started() == before
    np.testing.assert_array_equal(Xb, Xb_copy)


def test_bad_sample_weight_fails_before_work(local_session):
    X = np.random.default_rng(0).normal(size=(40, 3))
    before = steps_started()
    with pytest.raises(ValueError, match="negative"):
        KMeans(2).fit(X, sample_weight=-np.ones(40))
    assert steps_started() == before


def test_fit_leaves_caller_arrays_untouched(local_session):
    X, _ = _blobs(500, 3, centers=3)
    X32 = X.astype(np.float32)
    sw = np.ones(len(X))
    copies = (X.copy(), X32.copy(), sw.copy())
    KMeans(3, random_state=0).fit(X, sample_weight=sw)
    m32 = KMeans(3, random_state=0).fit(X32)
    m32.predict(X32)
    m32.transform(X32)
    np.testing.assert_array_equal(X, copies[0])
    np.testing.assert_array_equal(X32, copies[1])
    np.testing.assert_array_equal(sw, copies[2])


# -- save / load -------------------------------------------------------------------------------
def test_save_load_predicts_the_same(local_session, tmp_path):
    X, _ = _blobs(800, 4, centers=4)
    m = KMeans(4, random_state=0).fit(X)
    m.save(tmp_path / "km")
    loaded = shardlearn.load(tmp_path / "km")
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    np.testing.assert_array_equal(loaded.cluster_centers_, m.cluster_centers_)
    assert loaded.inertia_ == m.inertia_ and loaded.n_iter_ == m.n_iter_
    np.testing.assert_array_equal(loaded.transform(X[:5]), m.transform(X[:5]))


# -- scikit-learn API ------------------------------------------------------------------------
_EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data":
        "seeding draws per row, so repeating a row is not the same draw as doubling its "
        "weight (scikit-learn's own KMeans fails this check for the same reason)",
    "check_sample_weight_equivalence_on_sparse_data":
        "as on dense data: seeding is not invariant to repeating rows",
}


@parametrize_with_checks([KMeans(n_clusters=3, random_state=0)],
                         expected_failed_checks=lambda est: _EXPECTED_FAILED)
def test_sklearn_compatible(estimator, check):
    check(estimator)
