"""Distributed principal component analysis."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import scipy.linalg
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions

from ..algorithms.decomposition.solvers import (
    fit_gram_spectrum,
    fit_randomized_spectrum,
    mle_dimension,
)
from ..base import safe_matmul
from ._base import _DistributedDecomposition

#: "auto" uses the exact Gram solver up to this many features.
GRAM_MAX_FEATURES = 1000


class PCA(_DistributedDecomposition):
    """Principal component analysis fitted over shards on a group of workers.

    Two solvers:

    - ``"gram"`` (exact; the default for up to 1,000 features): one pass over the
      data. Every shard returns its row count, column means and centred Gram matrix
      ``(X_s - m_s)^T (X_s - m_s)``, accumulated in float64 and centred correctly in
      that single pass; the coordinator merges them exactly in shard order (pairwise
      update of the means and co-moments) and eigen-decomposes the
      (n_features x n_features) covariance matrix. Agrees with scikit-learn's
      ``svd_solver="full"`` to rounding. ``"covariance_eigh"`` is an alias.
    - ``"randomized"`` (wide or sparse data): distributed randomized range finder
      (Halko, Martinsson & Tropp 2011) with ``iterated_power`` power iterations on
      the implicitly centred data; each iteration is one pass in which every shard
      returns ``A_s^T (A_s Q)``, and the coordinator orthonormalises the sum.

    Centring of sparse (CSR) input is implicit, so it stays sparse.

    Parameters
    ----------
    n_components : int, float, "mle" or None, default=None
        Components to keep. None: ``min(n_samples, n_features)``. A float in (0, 1):
        the smallest number of components whose explained variance ratio adds up to
        more than it (``"gram"`` only). ``"mle"``: Minka's MLE of the dimension
        (``"gram"`` only, needs ``n_samples >= n_features``).
    whiten : bool, default=False
        Scale the transformed components to unit variance.
    svd_solver : {"auto", "gram", "covariance_eigh", "randomized"}, default="auto"
        ``"auto"``: ``"randomized"`` when there are more than 1,000 features and an
        integer ``n_components`` below 80% of ``min(n_samples, n_features)``, else ``"gram"``.
    iterated_power : int or "auto", default="auto"
        Power iterations of the randomized solver ("auto": 7 when ``n_components`` is
        below 10% of ``min(n_samples, n_features)``, else 4, as scikit-learn).
    n_oversamples : int, default=10
        Extra random directions of the randomized solver.
    random_state : int, RandomState instance or None, default=None
        Seeds the random test matrix of the randomized solver (drawn once on the
        coordinator, so the model does not depend on the number of workers).

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features)
        Principal axes, by decreasing explained variance; the largest-magnitude
        entry of each is positive (scikit-learn's sign convention).
    explained_variance_ : ndarray of shape (n_components_,)
        Variance (ddof=1) along each component.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
    singular_values_ : ndarray of shape (n_components_,)
    mean_ : ndarray of shape (n_features,)
    n_components_ : int
    noise_variance_ : float
        Mean of the variance left out (probabilistic PCA noise level).
    n_samples_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has string column names.
    fit_report_ : FitReport
        Passes over the data, time per worker (compute / communication / waiting),
        bytes moved; ``extra["solver"]`` names the solver used.

    Examples
    --------
    >>> import numpy as np
    >>> from shardlearn.decomposition import PCA
    >>> X = np.random.default_rng(0).normal(size=(500, 5)) @ np.diag([5, 3, 1, .5, .1])
    >>> pca = PCA(n_components=2).fit(X)
    >>> pca.components_.shape
    (2, 5)
    >>> bool(pca.explained_variance_ratio_.sum() > 0.9)
    True
    """

    _model_attributes = (
        "components_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
        "mean_", "n_components_", "noise_variance_", "n_samples_",
    )

    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 0, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
            StrOptions({"mle"}),
            None,
        ],
        "whiten": ["boolean"],
        "svd_solver": [StrOptions({"auto", "gram", "covariance_eigh", "randomized"})],
        "iterated_power": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left")],
        "n_oversamples": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, n_components=None, *, whiten=False, svd_solver="auto",
                 iterated_power="auto", n_oversamples=10, random_state=None):
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.random_state = random_state

    # -- fitting ----------------------------------------------------------------------
    def _choose_solver(self, n, d):
        """Solver and integer component count (None for float/"mle"); raises before any work."""
        nc = self.n_components
        limit = min(n, d)
        solver = "gram" if self.svd_solver == "covariance_eigh" else self.svd_solver
        if solver == "auto":
            wide = d > GRAM_MAX_FEATURES
            solver = ("randomized" if wide and isinstance(nc, Integral) and 1 <= nc < 0.8 * limit
                      else "gram")
        if nc is None:
            return solver, limit
        if isinstance(nc, str):  # "mle"
            if solver != "gram":
                raise ValueError(
                    f"n_components='mle' needs the exact solver; got svd_solver={self.svd_solver!r}. "
                    "Use svd_solver='gram' (or 'auto')."
                )
            if n < d:
                raise ValueError(
                    f"n_components='mle' is only supported if n_samples >= n_features; got "
                    f"n_samples={n}, n_features={d}. Pass an integer n_components instead."
                )
            return solver, None
        if isinstance(nc, Integral):
            low = 1 if solver == "randomized" else 0
            if not low <= nc <= limit:
                raise ValueError(
                    f"n_components={nc} must be between {low} and min(n_samples, n_features)="
                    f"{limit} with svd_solver={solver!r} (n_samples={n}, n_features={d}). "
                    f"Pass n_components <= {limit}."
                )
            return solver, int(nc)
        if solver != "gram":
            raise ValueError(
                f"n_components={nc} (a fraction of the variance) needs the exact solver; got "
                f"svd_solver={self.svd_solver!r}. Use svd_solver='gram' (or 'auto'), or an integer."
            )
        return solver, None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model on X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
            Training data (a Dataset's labels, if any, are ignored).
        y : Ignored

        Returns
        -------
        self
        """
        dataset = self._decomposition_dataset(X)
        n, d = dataset.n_rows, dataset.n_features
        if n < 2:
            raise ValueError(
                f"PCA needs at least 2 samples to estimate a variance, got n_samples={n}. "
                "Pass more rows."
            )
        solver, k = self._choose_solver(n, d)
        name = type(self).__name__
        limit = min(n, d)
        if solver == "gram":
            fit = fit_gram_spectrum(dataset, estimator=name)
            ev_all = fit.singular_values[:limit] ** 2 / (n - 1)
            total_var = float(np.sum(fit.column_ss)) / (n - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_all = ev_all / total_var
            if self.n_components == "mle":
                k = mle_dimension(ev_all, n)
            elif k is None:
                cumulative = np.cumsum(ratio_all)
                k = min(int(np.searchsorted(cumulative, self.n_components, side="right")) + 1,
                        limit)
            self.noise_variance_ = float(np.mean(ev_all[k:])) if k < limit else 0.0
            self.explained_variance_ = ev_all[:k].copy()
            self.explained_variance_ratio_ = ratio_all[:k].copy()
        else:
            power = self.iterated_power
            if power == "auto":
                power = 7 if k < 0.1 * limit else 4
            fit = fit_randomized_spectrum(
                dataset, k, centre=True, n_iter=int(power), n_oversamples=self.n_oversamples,
                random_state=self.random_state, estimator=name,
            )
            ev = fit.singular_values ** 2 / (n - 1)
            total_var = float(np.sum(fit.column_ss)) / (n - 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                self.explained_variance_ratio_ = ev / total_var
            self.explained_variance_ = ev
            self.noise_variance_ = ((total_var - float(ev.sum())) / (limit - k)
                                    if k < limit else 0.0)
        self.components_ = np.ascontiguousarray(fit.components[:k])
        self.singular_values_ = fit.singular_values[:k].copy()
        self.mean_ = fit.mean
        self.n_components_ = int(k)
        self.n_samples_ = int(n)
        self.fit_report_ = fit.report
        return self

    # -- using the model (on the driver, no cluster needed) ------------------------------
    def transform(self, X):
        """Project X on the principal components.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components_)
        """
        Xc = self._predict_input(X)
        T = safe_matmul(Xc, self.components_.T)
        T = np.asarray(T, dtype=np.float64) - self.mean_ @ self.components_.T
        if self.whiten:
            T /= self._whiten_scale()
        return T

    def inverse_transform(self, X):
        """Map component scores back to the feature space (undoing whitening).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components_)

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        X = self._check_inverse_input(X)
        if self.whiten:
            return X @ (self._whiten_scale()[:, None] * self.components_) + self.mean_
        return X @ self.components_ + self.mean_

    def _whiten_scale(self):
        scale = np.sqrt(self.explained_variance_)
        return np.maximum(scale, np.finfo(np.float64).eps)

    def _model_components(self):
        if self.whiten:
            return self.components_ * np.sqrt(self.explained_variance_)[:, None]
        return self.components_

    def get_covariance(self):
        """Data covariance of the probabilistic PCA model, ``W^T diag(ev - noise) W + noise I``.

        As in scikit-learn, with ``whiten=True`` the rows of ``W`` are the components
        scaled by ``sqrt(explained_variance_)``.

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        W = self._model_components()
        gain = np.maximum(self.explained_variance_ - self.noise_variance_, 0.0)
        cov = (W.T * gain) @ W
        cov.flat[:: cov.shape[0] + 1] += self.noise_variance_
        return cov

    def get_precision(self):
        """Inverse of :meth:`get_covariance` (matrix inversion lemma when the noise is positive).

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        d = self.components_.shape[1]
        noise = self.noise_variance_
        if self.n_components_ == 0:
            return np.eye(d) / noise
        if noise == 0.0:
            return scipy.linalg.inv(self.get_covariance())
        W = self._model_components()
        gain = np.maximum(self.explained_variance_ - noise, 0.0)
        inner = W @ W.T / noise
        with np.errstate(divide="ignore"):
            inner.flat[:: inner.shape[0] + 1] += 1.0 / gain
        precision = -(W.T @ scipy.linalg.inv(inner) @ W) / noise**2
        precision.flat[:: d + 1] += 1.0 / noise
        return precision

    def score_samples(self, X):
        """Log-likelihood of each sample under the probabilistic PCA model.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        Xc = self._predict_input(X)
        if hasattr(Xc, "toarray"):
            Xc = Xc.toarray()
        R = np.asarray(Xc, dtype=np.float64) - self.mean_
        P = self.get_precision()
        d = R.shape[1]
        logdet = np.linalg.slogdet(P)[1]
        return -0.5 * np.einsum("ij,ij->i", R, R @ P) - 0.5 * (d * math.log(2 * math.pi) - logdet)

    def score(self, X, y=None):
        """Mean log-likelihood of the samples under the probabilistic PCA model."""
        return float(np.mean(self.score_samples(X)))
