"""AgglomerativeClustering: exact parity with scipy/scikit-learn, micro-cluster mode, API."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.cluster import hierarchy
from sklearn.cluster import AgglomerativeClustering as SkAgglomerative
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.algorithms.cluster.agglomerative import (
    cut_tree,
    fit_distributed,
    weighted_linkage,
)
from shardlearn.cluster import AgglomerativeClustering
from shardlearn.data import Dataset
from shardlearn.runtime import steps_started
from shardlearn.runtime.engines import LocalEngine
from shardlearn.runtime.faults import FaultSpec
from shardlearn.runtime.session import Session
from shardlearn.testing import inject_faults

LINKAGES = ["ward", "average", "complete", "single"]


def _small():
    return np.random.default_rng(0).normal(size=(80, 3))


# -- exact mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("linkage", LINKAGES)
def test_exact_tree_equals_scipy_and_sklearn(local_session, linkage):
    X = _small()
    ours = AgglomerativeClustering(4, linkage=linkage, mode="exact").fit(X)
    Z = hierarchy.ward(X) if linkage == "ward" else hierarchy.linkage(X, method=linkage)
    np.testing.assert_array_equal(ours.linkage_matrix_, Z)
    np.testing.assert_array_equal(ours.children_, Z[:, :2].astype(int))
    np.testing.assert_array_equal(ours.distances_, Z[:, 2])
    ref = SkAgglomerative(4, linkage=linkage, compute_distances=True).fit(X)
    np.testing.assert_array_equal(ours.distances_, ref.distances_)
    if linkage == "single":
        # scikit-learn builds single linkage with its own MST code: same merges and
        # heights as scipy, but it may list the two children of a merge the other way round.
        np.testing.assert_array_equal(np.sort(ours.children_, axis=1),
                                      np.sort(ref.children_, axis=1))
    else:
        np.testing.assert_array_equal(ours.children_, ref.children_)
    assert adjusted_rand_score(ours.labels_, ref.labels_) == 1.0
    np.testing.assert_array_equal(ours.labels_, cut_tree(Z, len(X), 4))
    assert ours.n_leaves_ == len(X) and ours.n_clusters_ == 4 and ours.mode_ == "exact"


def test_distance_threshold_matches_sklearn(local_session):
    X = _small()
    ref = SkAgglomerative(None, distance_threshold=2.0, linkage="average").fit(X)
    ours = AgglomerativeClustering(None, distance_threshold=2.0, linkage="average").fit(X)
    assert ours.n_clusters_ == ref.n_clusters_
    assert adjusted_rand_score(ours.labels_, ref.labels_) == 1.0


@pytest.mark.parametrize("linkage", LINKAGES)
def test_weighted_linkage_with_unit_weights_is_scipy(linkage):
    X = np.random.default_rng(1).normal(size=(120, 4))
    Z = hierarchy.ward(X) if linkage == "ward" else hierarchy.linkage(X, method=linkage)
    ours = weighted_linkage(X, np.ones(len(X)), linkage)
    np.testing.assert_array_equal(ours[:, [0, 1, 3]], Z[:, [0, 1, 3]])
    np.testing.assert_allclose(ours[:, 2], Z[:, 2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("linkage", ["ward", "average"])
def test_weighted_linkage_equals_linkage_of_repeated_points(linkage):
    # An atom of weight w behaves as w coincident rows: their merges happen at height 0.
    rng = np.random.default_rng(2)
    C = rng.normal(size=(15, 3))
    w = rng.integers(1, 4, size=15)
    Zw = weighted_linkage(C, w, linkage)
    rows = np.repeat(C, w, axis=0)
    Z = hierarchy.ward(rows) if linkage == "ward" else hierarchy.linkage(rows, method=linkage)
    np.testing.assert_allclose(Zw[:, 2], Z[Z[:, 2] > 1e-12, 2], rtol=1e-10)


# -- distributed mode -------------------------------------------------------------------------
@pytest.mark.parametrize("linkage,std", [("ward", 1.0), ("average", 1.0), ("complete", 1.0),
                                         ("single", 0.4)])
def test_distributed_agrees_with_exact_on_blobs(local_session, linkage, std):
    # Separated blobs: where blobs overlap, the exact tree itself splits them arbitrarily.
    X, y = make_blobs(4000, 3, centers=5, cluster_std=std, random_state=1)
    exact = AgglomerativeClustering(5, linkage=linkage, mode="exact").fit(X)
    dist = AgglomerativeClustering(5, linkage=linkage, mode="distributed", n_micro_clusters=200,
                                   random_state=0).fit(Dataset.from_arrays(X, n_shards=4))
    assert dist.mode_ == "distributed"
    assert adjusted_rand_score(dist.labels_, exact.labels_) >= 0.95
    m = dist.n_leaves_
    assert 150 <= m <= 200 and dist.linkage_matrix_.shape == (m - 1, 4)
    assert hierarchy.is_valid_linkage(dist.linkage_matrix_)
    assert dist.micro_cluster_counts_.sum() == len(X)
    assert np.all(np.diff(dist.distances_) >= 0)  # monotone heights
    # Each row is in the cluster of its micro-cluster, and clusters come from the tree cut.
    np.testing.assert_array_equal(np.unique(dist.labels_), np.arange(5))
    leaf_labels = cut_tree(dist.linkage_matrix_, m, 5)
    assert np.bincount(leaf_labels, weights=dist.micro_cluster_counts_).tolist() == \
        np.bincount(dist.labels_).tolist()


def test_dendrogram_from_linkage_matrix(local_session):
    X, _ = make_blobs(3000, 2, centers=4, random_state=1)
    m = AgglomerativeClustering(4, mode="distributed", n_micro_clusters=100,
                                random_state=0).fit(Dataset.from_arrays(X, n_shards=3))
    d = hierarchy.dendrogram(m.linkage_matrix_, no_plot=True)
    assert sorted(d["leaves"]) == list(range(m.n_leaves_))
    assert len(d["icoord"]) == m.n_leaves_ - 1
    flat = hierarchy.fcluster(m.linkage_matrix_, 4, criterion="maxclust")
    assert adjusted_rand_score(flat, cut_tree(m.linkage_matrix_, m.n_leaves_, 4)) == 1.0
    e = AgglomerativeClustering(3, mode="exact").fit(X[:200])
    assert sorted(hierarchy.dendrogram(e.linkage_matrix_, no_plot=True)["leaves"]) == \
        list(range(200))


def test_auto_mode_switches_to_distributed_for_large_data(local_session):
    from shardlearn.cluster import _agglomerative as A

    X, y = make_blobs(600, 2, centers=3, random_state=1)
    old = A.EXACT_AUTO_MAX_ROWS
    A.EXACT_AUTO_MAX_ROWS = 500
    try:
        m = AgglomerativeClustering(3, n_micro_clusters=60, random_state=0).fit(X)
    finally:
        A.EXACT_AUTO_MAX_ROWS = old
    assert m.mode_ == "distributed" and m.n_leaves_ <= 60
    exact = AgglomerativeClustering(3).fit(X)
    assert exact.mode_ == "exact"
    assert adjusted_rand_score(m.labels_, exact.labels_) > 0.95


# -- determinism --------------------------------------------------------------------------------
@functools.cache
def _data():
    X, _ = make_blobs(2400, 3, centers=4, cluster_std=1.5, random_state=3)
    return Dataset.from_arrays(X, n_shards=5)


@functools.cache
def _reference():
    ref_session = Session(LocalEngine(1))
    try:
        return fit_distributed(_data(), linkage="ward", n_clusters=4, distance_threshold=None,
                               n_micro_clusters=150, random_state=1, session=ref_session)
    finally:
        ref_session.shutdown()


def _fit():
    return AgglomerativeClustering(4, mode="distributed", n_micro_clusters=150,
                                   random_state=1).fit(_data())


@pytest.mark.timeout(300)
def test_bit_identical_on_every_engine_and_worker_count(any_session):
    m, ref = _fit(), _reference()
    np.testing.assert_array_equal(m.linkage_matrix_, ref.linkage)
    np.testing.assert_array_equal(m.labels_, ref.labels)
    np.testing.assert_array_equal(m.micro_cluster_centers_, ref.micro_centers)


def test_worker_death_mid_fit_changes_no_bit():
    with shardlearn.init("local", n_workers=3):
        with inject_faults(FaultSpec(2, "kill", step="labels", call=0)):
            m = _fit()
        assert m.fit_report_.failures_recovered == 1
    np.testing.assert_array_equal(m.labels_, _reference().labels)


# -- bad input / saving --------------------------------------------------------------------------
@pytest.mark.parametrize("X,params,match", [
    (np.zeros((3, 2)), dict(n_clusters=4), "Cannot extract more clusters than samples"),
    (np.zeros((300, 2)), dict(n_clusters=50, mode="distributed", n_micro_clusters=20),
     "micro-clusters"),
    (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), dict(n_clusters=2), "NaN"),
    (np.zeros((0, 2)), dict(n_clusters=2), "0 sample"),
    (np.zeros((1, 2)), dict(n_clusters=1), "minimum of 2"),
    (np.zeros((5, 2)), dict(n_clusters=0), "n_clusters"),
    (np.zeros((5, 2)), dict(n_clusters=2, distance_threshold=1.0), "Exactly one"),
    (np.zeros((5, 2)), dict(linkage="centroid"), "linkage"),
])
def test_bad_input_fails_before_any_worker_runs(local_session, X, params, match):
    X_copy = X.copy()
    before = steps_started()
    with pytest.raises(ValueError, match=match):
        AgglomerativeClustering(**params).fit(X)
    assert steps_started() == before
    np.testing.assert_array_equal(X, X_copy)


def test_save_load_keeps_the_tree(local_session, tmp_path):
    X, _ = make_blobs(1500, 2, centers=3, random_state=0)
    m = AgglomerativeClustering(3, mode="distributed", n_micro_clusters=50,
                                random_state=0).fit(X)
    m.save(tmp_path / "agg")
    loaded = shardlearn.load(tmp_path / "agg")
    for name in ("labels_", "children_", "distances_", "linkage_matrix_",
                 "micro_cluster_centers_", "micro_cluster_counts_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(m, name))
    assert loaded.n_leaves_ == m.n_leaves_ and loaded.n_clusters_ == 3
    assert loaded.mode_ == "distributed"


@parametrize_with_checks([AgglomerativeClustering(n_clusters=3)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
