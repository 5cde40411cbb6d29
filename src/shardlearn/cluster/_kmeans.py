"""Distributed KMeans."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.cluster import _blocks as B
from ..algorithms.cluster.kmeans import fit_kmeans
from ..base import DistributedEstimatorMixin
from ..data.validation import check_finite, check_sample_weight


def _row_norms(X, mu):
    """``||x - mu||^2`` of every row (``mu`` is zero for sparse X), chunk by chunk."""
    n, d = X.shape
    xn = np.empty(n)
    for a, e in B.chunks(n, d):
        Xc = B.block(X, a, e)
        if sp.issparse(Xc):
            xn[a:e] = np.asarray(Xc.multiply(Xc).sum(axis=1)).ravel()
        else:
            Xc = Xc - mu  # never in place: the block may be the caller's memory
            xn[a:e] = np.einsum("ij,ij->i", Xc, Xc)
    return xn


def _shift_for(X, C):
    return np.zeros(C.shape[1]) if sp.issparse(X) else C.mean(axis=0)


def nearest_centers(X, C):
    """Index of the nearest centre of every row, and the squared distance to it (driver side)."""
    C = np.ascontiguousarray(C, dtype=np.float64)
    mu = _shift_for(X, C)
    xn = _row_norms(X, mu)
    Ct, b = B.shifted(C, mu)
    n, d = X.shape
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n)
    for a, e in B.chunks(n, d):
        D = B.gemm(B.block(X, a, e), Ct) + b + xn[a:e, None]
        j = D.argmin(axis=1)
        labels[a:e] = j
        dist[a:e] = np.maximum(D[np.arange(e - a), j], 0.0)
    return labels, dist


def center_distances(X, C):
    """Euclidean distances (n, k) of every row to every centre (driver side)."""
    C = np.ascontiguousarray(C, dtype=np.float64)
    mu = _shift_for(X, C)
    return np.sqrt(B.sq_distances(X, _row_norms(X, mu), mu, C))


class _CentroidClusterer(DistributedEstimatorMixin, ClassNamePrefixFeaturesOutMixin,
                         ClusterMixin, TransformerMixin, BaseEstimator):
    """predict / transform / score shared by KMeans and BisectingKMeans (driver side)."""

    def _check_fit_input(self, X, sample_weight):
        dataset = self._fit_dataset(X, None, sample_weight)
        if dataset.n_rows < self.n_clusters:
            raise ValueError(
                f"n_samples={dataset.n_rows} should be >= n_clusters={self.n_clusters}. "
                "Ask for fewer clusters or pass more rows."
            )
        return dataset

    def predict(self, X):
        """Index of the nearest cluster centre of each row (no cluster needed).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return nearest_centers(self._predict_input(X), self.cluster_centers_)[0]

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return ``labels_``."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distance of each row to every cluster centre, shape (n_samples, n_clusters)."""
        return center_distances(self._predict_input(X), self.cluster_centers_)

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return :meth:`transform` of X."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) inertia of X against the fitted centres."""
        Xc = self._predict_input(X)
        sw = check_sample_weight(sample_weight, Xc.shape[0])
        dist = nearest_centers(Xc, self.cluster_centers_)[1]
        return -float(dist.sum() if sw is None else sw @ dist)

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class KMeans(_CentroidClusterer):
    """K-means clustering over shards on a group of workers.

    Seeding by k-means|| (default), exact greedy k-means++, random rows or given
    centres; then Lloyd iterations in which each worker returns, for its shards,
    the weighted sum of the rows nearest each centre, their weight and the
    inertia (distances by matrix product: ``||x||^2 - 2 X C^T + ||c||^2`` with
    the row norms cached on the worker). The coordinator folds them in shard
    order, so results are bit-identical on any engine and worker count.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means||", "k-means++", "random"} or array of shape (n_clusters, n_features), \
default="k-means||"
        ``"k-means||"``: Bahmani et al. (2012), ``init_rounds`` oversampling
        passes then weighted k-means++ on the candidates at the coordinator.
        ``"k-means++"``: exact greedy k-means++ (two passes per centre).
        ``"random"``: ``n_clusters`` distinct rows drawn by sample weight.
    n_init : "auto" or int, default="auto"
        Runs from different seeds; the lowest inertia wins. ``"auto"``: 10 for
        ``"random"``, else 1.
    max_iter : int, default=300
        Lloyd iterations per run.
    tol : float, default=1e-4
        Stop when the squared shift of the centres is at most ``tol`` times the
        mean per-feature variance of X (scikit-learn's meaning), or when no label
        changed.
    oversampling_factor : float, default=2.0
        k-means||: each round samples about ``oversampling_factor * n_clusters`` rows.
    init_rounds : int, default=5
        k-means||: number of oversampling rounds.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
        Nearest final centre of every row (one final assignment pass, as
        scikit-learn's Lloyd).
    inertia_ : float
        Weighted sum of squared distances of rows to their centre.
    n_iter_ : int
        Lloyd iterations of the best run.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    fit_report_ : FitReport
        ``objective_history`` is the inertia at the start of every Lloyd pass;
        ``extra["inertia_histories"]`` has one history per run.

    Examples
    --------
    >>> from shardlearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> X, _ = make_blobs(300, centers=3, random_state=0)
    >>> KMeans(3, random_state=0).fit(X).cluster_centers_.shape
    (3, 2)
    """

    _model_attributes = ("cluster_centers_", "labels_", "inertia_", "n_iter_")

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means||", "k-means++", "random"}), "array-like"],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "oversampling_factor": [Interval(Real, 0, None, closed="neither")],
        "init_rounds": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4,
                 oversampling_factor=2.0, init_rounds=5, random_state=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.random_state = random_state

    def _init_array(self, n_features):
        if isinstance(self.init, str):
            return None
        C = np.asarray(self.init)
        if C.dtype.kind not in "biuf" or C.shape != (self.n_clusters, n_features):
            raise ValueError(
                f"The shape of the initial centers {C.shape} does not match the number of "
                f"clusters and features ({self.n_clusters}, {n_features}); pass an array of "
                "shape (n_clusters, n_features)."
            )
        check_finite(C, name="init")
        return np.array(C, dtype=np.float64)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, checkpoint_every=1,
            resume=None, storage_options=None):
        """Compute k-means clustering.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
        checkpoint : str, optional
            Local path or storage URL where the coordinator's state (run, Lloyd
            pass, centres, RNG state, best run so far) is written atomically every
            ``checkpoint_every`` Lloyd passes.
        checkpoint_every : int, default=1
        resume : str, optional
            A checkpoint of an earlier fit of the same estimator on the same data:
            continue from it; the result is bit-identical to an uninterrupted fit.
        storage_options : dict, optional
            File-system options for checkpoint URLs.

        Returns
        -------
        self
        """
        dataset = self._check_fit_input(X, sample_weight)
        C0 = self._init_array(dataset.n_features)
        n_init = self.n_init
        if n_init == "auto":
            n_init = 10 if isinstance(self.init, str) and self.init == "random" else 1
        ckpt, res = self._checkpoint_stores(dataset, checkpoint, checkpoint_every, resume,
                                            storage_options)
        if C0 is not None and n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"KMeans instead of n_init={n_init}.", RuntimeWarning, stacklevel=2)
            n_init = 1
        fit = fit_kmeans(
            dataset, n_clusters=self.n_clusters, init=self.init if C0 is None else C0,
            n_init=n_init, max_iter=self.max_iter, tol=self.tol,
            random_state=self.random_state, oversampling_factor=self.oversampling_factor,
            init_rounds=self.init_rounds, estimator=type(self).__name__,
            checkpoint=ckpt, resume=res,
        )
        self.cluster_centers_ = fit.centers
        self.labels_ = fit.labels
        self.inertia_ = fit.inertia
        self.n_iter_ = fit.n_iter
        self.fit_report_ = fit.report
        return self
