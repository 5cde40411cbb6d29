"""Distributed truncated SVD (latent semantic analysis on sparse term-document matrices)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.decomposition.solvers import fit_randomized_spectrum
from ..base import safe_matmul
from ._base import _DistributedDecomposition


class TruncatedSVD(_DistributedDecomposition):
    """Truncated SVD of uncentred data by distributed randomized SVD; works on CSR shards.

    The randomized range finder of Halko, Martinsson & Tropp (2011), as subspace
    iteration on ``X^T X``: every power iteration is one pass in which each shard
    returns ``X_s^T (X_s Q)`` (sparse products on CSR shards; ``X_s Q`` never leaves
    the worker) and the coordinator orthonormalises the sum. The last pass also
    yields the small matrix ``B = Q_n^T X`` of the orthonormal basis ``Q_n`` of
    ``X Q``, whose SVD gives the components. ``n_iter`` power iterations read the
    data ``n_iter + 1`` times (scikit-learn's algorithm reads it ``2 n_iter + 2``
    times), plus one short pass for the column variances and one for the variance
    of the scores.

    Parameters
    ----------
    n_components : int, default=2
        Number of singular triplets; at most ``min(n_samples, n_features)``.
    algorithm : {"randomized"}, default="randomized"
    n_iter : int, default=5
        Power iterations. More iterations help when the spectrum decays slowly.
    n_oversamples : int, default=10
        Extra random directions in the sketch (``n_components + n_oversamples`` in all,
        at most ``n_features``).
    random_state : int, RandomState instance or None, default=None
        Seeds the random test matrix, drawn once on the coordinator: the model does
        not depend on the number of workers.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Right singular vectors; the largest-magnitude entry of each is positive.
    singular_values_ : ndarray of shape (n_components,)
    explained_variance_ : ndarray of shape (n_components,)
        Variance (ddof=0) of each column of ``X @ components_.T``.
    explained_variance_ratio_ : ndarray of shape (n_components,)
        ``explained_variance_`` over the summed variance of the columns of X.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has string column names.
    fit_report_ : FitReport

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from shardlearn.decomposition import TruncatedSVD
    >>> X = sp.random(1000, 50, density=0.1, format="csr", random_state=0)
    >>> svd = TruncatedSVD(n_components=5, random_state=0).fit(X)
    >>> svd.transform(X).shape
    (1000, 5)
    """

    _model_attributes = (
        "components_", "singular_values_", "explained_variance_", "explained_variance_ratio_",
    )

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "algorithm": [StrOptions({"randomized"})],
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "n_oversamples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_components=2, *, algorithm="randomized", n_iter=5, n_oversamples=10,
                 random_state=None):
        self.n_components = n_components
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.n_oversamples = n_oversamples
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model on X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
        y : Ignored

        Returns
        -------
        self
        """
        dataset = self._decomposition_dataset(X)
        n, d = dataset.n_rows, dataset.n_features
        if d < 2:
            raise ValueError(
                f"TruncatedSVD needs at least 2 features, got n_features={d} "
                f"(found array with {d} feature(s)). With one feature, use the column itself."
            )
        limit = min(n, d)
        if self.n_components > limit:
            raise ValueError(
                f"n_components={self.n_components} must be <= min(n_samples, n_features)="
                f"{limit} (n_samples={n}, n_features={d}). Pass n_components <= {limit}."
            )
        fit = fit_randomized_spectrum(
            dataset, self.n_components, centre=False, n_iter=self.n_iter,
            n_oversamples=self.n_oversamples, random_state=self.random_state,
            score_variance=True, estimator=type(self).__name__,
        )
        self.components_ = np.ascontiguousarray(fit.components)
        self.singular_values_ = fit.singular_values
        self.explained_variance_ = fit.component_var
        full_var = float(np.sum(fit.column_ss)) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            self.explained_variance_ratio_ = fit.component_var / full_var
        self.fit_report_ = fit.report
        return self

    def transform(self, X):
        """Project X on the components (``X @ components_.T``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
        """
        Xc = self._predict_input(X)
        return np.asarray(safe_matmul(Xc, self.components_.T), dtype=np.float64)

    def inverse_transform(self, X):
        """Map scores back to the feature space (``X @ components_``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        X = self._check_inverse_input(X)
        return X @ self.components_
