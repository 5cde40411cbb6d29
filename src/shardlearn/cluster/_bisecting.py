"""Distributed BisectingKMeans."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.cluster import _blocks as B
from ..algorithms.cluster import _loops
from ..algorithms.cluster.bisecting import fit_bisecting_kmeans
from ._kmeans import _CentroidClusterer


def descend_tree(X, tree):
    """Leaf label of every row, going down the split tree to the nearer child (ties: first).

    Uses the same compiled loop as the workers, so ``predict`` on the training
    rows gives ``labels_`` exactly.
    """
    children = np.ascontiguousarray(tree["children"], dtype=np.int32)
    centers = np.ascontiguousarray(tree["centers"], dtype=np.float64)
    n, d = X.shape
    node = np.zeros(n, dtype=np.int32)
    cnorm = _loops.sq_norms(centers)
    for a, e in B.chunks(n, d):
        Xc = B.block(X, a, e)
        if sp.issparse(Xc):
            xn = np.asarray(Xc.multiply(Xc).sum(axis=1)).ravel()
            _loops.descend_csr(Xc.indptr, Xc.indices, Xc.data, xn, node[a:e], children, centers,
                               cnorm)
        else:
            _loops.descend_dense(Xc, node[a:e], children, centers)
    return np.asarray(tree["label"])[node].astype(np.int32)


class BisectingKMeans(_CentroidClusterer):
    """Bisecting k-means (divisive hierarchical k-means) over shards on a group of workers.

    Starting from one cluster, repeatedly splits the cluster with the highest
    score by a 2-means, until there are ``n_clusters`` leaves, as scikit-learn's
    ``BisectingKMeans`` does. The splits are computed level by level like
    Spark's: every leaf chosen at a level is split in the same passes over the
    data, each worker keeping the tree node of each of its rows.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"random", "k-means++"}, default="random"
        Initial centres of each 2-means: two rows drawn by weight, or greedy
        k-means++ (two local trials).
    n_init : int, default=1
        2-means trials per split (run in the same passes); the lowest inertia wins.
    max_iter : int, default=300
        Lloyd iterations per split.
    tol : float, default=1e-4
        Relative to the mean per-feature variance of X, as in KMeans.
    bisecting_strategy : {"biggest_inertia", "largest_cluster"}, default="biggest_inertia"
        Score of a leaf: its within-cluster sum of squares, or its number of rows.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Leaf centres, leaves numbered in depth-first order (first child first).
    labels_ : ndarray of shape (n_samples,)
    inertia_ : float
    split_tree_ : dict of ndarrays
        The tree of committed splits, nodes numbered from 0 (the root):
        ``parent``, ``children`` (n_nodes, 2; -1 for leaves), ``centers``,
        ``inertia`` (within-node SSE; inf for the root), ``n_samples``,
        ``weight``, ``split_order`` (when the node was split; -1 for leaves)
        and ``label`` (cluster label of a leaf; -1 for inner nodes).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    fit_report_ : FitReport
        ``objective_history``: total SSE of the leaves after each committed split;
        ``n_iter``: Lloyd passes over the data.

    Notes
    -----
    :meth:`predict` goes down the tree (nearer child at each split), as
    scikit-learn does; it can differ from the nearest leaf centre.
    """

    _model_attributes = ("cluster_centers_", "labels_", "inertia_", "split_tree_")

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"random", "k-means++"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "bisecting_strategy": [StrOptions({"biggest_inertia", "largest_cluster"})],
        "random_state": ["random_state"],
    }

    def __init__(self, n_clusters=8, *, init="random", n_init=1, max_iter=300, tol=1e-4,
                 bisecting_strategy="biggest_inertia", random_state=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.bisecting_strategy = bisecting_strategy
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Compute bisecting k-means clustering.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        dataset = self._check_fit_input(X, sample_weight)
        fit = fit_bisecting_kmeans(
            dataset, n_clusters=self.n_clusters, init=self.init, n_init=self.n_init,
            max_iter=self.max_iter, tol=self.tol, random_state=self.random_state,
            bisecting_strategy=self.bisecting_strategy, estimator=type(self).__name__,
        )
        self.cluster_centers_ = fit.centers
        self.labels_ = fit.labels
        self.inertia_ = fit.inertia
        self.split_tree_ = fit.tree
        self.fit_report_ = fit.report
        return self

    def predict(self, X):
        """Cluster of each row, going down the split tree (no cluster needed).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return descend_tree(self._predict_input(X), self.split_tree_)
