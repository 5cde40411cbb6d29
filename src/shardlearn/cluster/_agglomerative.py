"""AgglomerativeClustering: exact at the coordinator, or on per-shard micro-clusters."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.cluster.agglomerative import LINKAGES, fit_distributed, fit_exact
from ..base import DistributedEstimatorMixin

#: ``mode="auto"`` runs the exact linkage up to this many rows (its distance matrix
#: takes n^2 / 2 doubles: 100 MB here), and the distributed mode above.
EXACT_AUTO_MAX_ROWS = 5000

#: ``mode="exact"`` refuses more rows than this (the distance matrix would take 10 GB).
EXACT_MAX_ROWS = 50_000


class AgglomerativeClustering(DistributedEstimatorMixin, ClusterMixin, BaseEstimator):
    """Agglomerative (bottom-up hierarchical) clustering with Euclidean distances.

    Two modes:

    * **exact**: the rows are gathered at the coordinator and scipy's linkage
      runs on them: ``children_`` and ``distances_`` are scipy's (and
      scikit-learn's: it calls the same functions).
    * **distributed**: each worker summarises its shards into weighted
      micro-clusters (a many-centre k-means of the shard; only centres, counts and
      within-cluster sums of squares travel); the coordinator runs an exact
      weighted linkage on the summaries (Ward's merge cost of weighted atoms,
      size-weighted average, complete, single) and every row takes the label of
      its micro-cluster. The tree's leaves are then the micro-clusters.

    Parameters
    ----------
    n_clusters : int or None, default=2
        Clusters to find; None when ``distance_threshold`` is set.
    linkage : {"ward", "complete", "average", "single"}, default="ward"
    distance_threshold : float or None, default=None
        Cut the tree at this height instead of at ``n_clusters``.
    mode : {"auto", "exact", "distributed"}, default="auto"
        ``"auto"``: exact up to 5,000 rows, distributed above.
    n_micro_clusters : int, default=1000
        Distributed mode: micro-clusters in total, spread over the shards in
        proportion to their rows.
    micro_max_iter : int, default=20
        Distributed mode: Lloyd iterations of each shard's micro-clustering.
    random_state : int, RandomState instance or None, default=None
        Distributed mode: seeds the micro-clustering.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    n_clusters_ : int
    n_leaves_ : int
        Leaves of the tree: rows (exact) or micro-clusters (distributed).
    children_ : ndarray of shape (n_leaves_ - 1, 2)
        Merge ``i`` joins ``children_[i]``; values below ``n_leaves_`` are leaves,
        value ``n_leaves_ + j`` is the cluster formed by merge ``j``.
    distances_ : ndarray of shape (n_leaves_ - 1,)
        Height of each merge (scipy's scale).
    linkage_matrix_ : ndarray of shape (n_leaves_ - 1, 4)
        scipy linkage matrix (children, height, leaves below), for
        ``scipy.cluster.hierarchy.dendrogram`` / ``fcluster``.
    n_connected_components_ : int
        Always 1 (no connectivity constraint).
    mode_ : str
        The mode that ran: "exact" or "distributed".
    micro_cluster_centers_, micro_cluster_counts_, micro_cluster_inertia_ : ndarray
        Distributed mode only: the leaves' centres, rows, and within-cluster SSE.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    fit_report_ : FitReport
    """

    _model_attributes = ("labels_", "n_clusters_", "n_leaves_", "children_", "distances_",
                         "linkage_matrix_", "n_connected_components_", "mode_",
                         "micro_cluster_centers_", "micro_cluster_counts_",
                         "micro_cluster_inertia_")

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "linkage": [StrOptions(set(LINKAGES))],
        "distance_threshold": [Interval(Real, 0, None, closed="left"), None],
        "mode": [StrOptions({"auto", "exact", "distributed"})],
        "n_micro_clusters": [Interval(Integral, 2, None, closed="left")],
        "micro_max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_clusters=2, *, linkage="ward", distance_threshold=None, mode="auto",
                 n_micro_clusters=1000, micro_max_iter=20, random_state=None):
        self.n_clusters = n_clusters
        self.linkage = linkage
        self.distance_threshold = distance_threshold
        self.mode = mode
        self.n_micro_clusters = n_micro_clusters
        self.micro_max_iter = micro_max_iter
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the cluster tree and cut it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or Dataset
            Dense data (sparse input is refused).
        y : ignored

        Returns
        -------
        self
        """
        if (self.n_clusters is None) == (self.distance_threshold is None):
            raise ValueError(
                "Exactly one of n_clusters and distance_threshold has to be set, and the other "
                "needs to be None.")
        if sp.issparse(X):
            raise TypeError(
                "Sparse data was passed for X, but dense data is required. Use '.toarray()' "
                "to convert to a dense numpy array.")
        dataset = self._fit_dataset(X)
        n = dataset.n_rows
        if n < 2:
            raise ValueError(
                f"Found array with {n} sample(s) (shape=({n}, {dataset.n_features})) while a "
                "minimum of 2 is required by AgglomerativeClustering.")
        mode = self.mode
        if mode == "auto":
            mode = "exact" if n <= EXACT_AUTO_MAX_ROWS else "distributed"
        if mode == "exact":
            if n > EXACT_MAX_ROWS:
                raise ValueError(
                    f"mode='exact' needs an n x n distance matrix; {n} rows is more than "
                    f"{EXACT_MAX_ROWS}. Use mode='distributed' (or 'auto').")
            leaves = n
        else:
            leaves = sum(min(s.n_rows, max(1, round(self.n_micro_clusters * s.n_rows / n)))
                         for s in dataset.shards)
        if self.n_clusters is not None and self.n_clusters > leaves:
            raise ValueError(
                f"Cannot extract more clusters than samples: {self.n_clusters} clusters were "
                f"given for a tree with {leaves} leaves"
                + ("." if mode == "exact" else " (micro-clusters); raise n_micro_clusters."))
        if mode == "exact":
            fit = fit_exact(dataset, linkage=self.linkage, n_clusters=self.n_clusters,
                            distance_threshold=self.distance_threshold,
                            estimator=type(self).__name__)
        else:
            fit = fit_distributed(
                dataset, linkage=self.linkage, n_clusters=self.n_clusters,
                distance_threshold=self.distance_threshold,
                n_micro_clusters=self.n_micro_clusters, max_iter=self.micro_max_iter,
                random_state=self.random_state, estimator=type(self).__name__)
            self.micro_cluster_centers_ = fit.micro_centers
            self.micro_cluster_counts_ = fit.micro_counts
            self.micro_cluster_inertia_ = fit.micro_inertia
        if mode == "exact":
            for name in ("micro_cluster_centers_", "micro_cluster_counts_",
                         "micro_cluster_inertia_"):
                self.__dict__.pop(name, None)
        Z = fit.linkage
        self.mode_ = mode
        self.linkage_matrix_ = Z
        self.children_ = Z[:, :2].astype(np.intp)
        self.distances_ = Z[:, 2].copy()
        self.n_leaves_ = fit.n_leaves
        self.n_connected_components_ = 1
        self.n_clusters_ = int(fit.labels.max()) + 1
        self.labels_ = fit.labels
        self.fit_report_ = fit.report
        return self

    def fit_predict(self, X, y=None):
        """Fit, then return ``labels_``."""
        return self.fit(X).labels_
