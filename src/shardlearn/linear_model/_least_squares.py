"""Distributed LinearRegression and Ridge (closed form from the Gram matrix)."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval

from ..algorithms.linear.least_squares import fit_least_squares
from ..base import DistributedEstimatorMixin, safe_matmul
from ..data.validation import as_numeric_target
from ._classifier_base import check_y_given


class _LeastSquares(DistributedEstimatorMixin, RegressorMixin, BaseEstimator):
    _model_attributes = ("coef_", "intercept_", "rank_", "singular_")
    _ravel_single_column = False

    def _fit(self, X, y, sample_weight, alpha):
        check_y_given(self, X, y)
        # Numbers stored as objects are numbers (as in scikit-learn); other objects
        # are reported just below, after X is checked.
        y = as_numeric_target(y)
        dataset = self._fit_dataset(X, y, sample_weight, multi_target=True)
        labels = dataset.labels()
        if labels.dtype.kind not in "biuf":
            raise ValueError(
                f"y has dtype {labels.dtype}; a regressor needs numeric targets. "
                "Convert y to float (e.g. y.astype(float))."
            )
        n_targets = 1 if labels.ndim == 1 else labels.shape[1]
        if np.ndim(alpha) > 0:
            alpha = np.asarray(alpha, dtype=np.float64).ravel()
            if alpha.shape[0] not in (1, n_targets):
                raise ValueError(
                    f"Number of targets and number of penalties do not correspond: "
                    f"{alpha.shape[0]} != {n_targets}. Pass one alpha, or one per target."
                )
            if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
                raise ValueError(f"alpha values must be finite and >= 0, got {alpha}.")
        fit = fit_least_squares(dataset, alpha=alpha, fit_intercept=self.fit_intercept,
                                estimator=type(self).__name__)
        single = labels.ndim == 1
        self.coef_ = fit.coef[0] if single else fit.coef
        if self._ravel_single_column and labels.ndim == 2 and labels.shape[1] == 1:
            # scikit-learn's Ridge gives coef_ of shape (n_features,) (and intercept_
            # of shape (1,)) for a one-column 2-D y; LinearRegression keeps (1, n_features).
            self.coef_ = fit.coef[0]
        if not self.fit_intercept:
            self.intercept_ = 0.0  # as scikit-learn, whatever the number of targets
        else:
            self.intercept_ = float(fit.intercept[0]) if single else fit.intercept
        self.rank_ = fit.rank
        # Singular values of the centred, weighted X (square roots of the Gram eigenvalues).
        self.singular_ = fit.singular_values
        self.fit_report_ = fit.report
        return self

    def predict(self, X):
        """Predicted targets, computed on the driver (no cluster needed)."""
        Xc = self._predict_input(X)
        return safe_matmul(Xc, np.asarray(self.coef_).T) + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags


class LinearRegression(_LeastSquares):
    """Ordinary least squares from the distributed Gram matrix (one pass over the data).

    Each worker returns its shards' centred cross-products; the coordinator merges
    them in shard order and solves the small system (minimum-norm solution when
    X is rank deficient, like ``numpy.linalg.lstsq``).

    Parameters
    ----------
    fit_intercept : bool, default=True

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    rank_ : int
    singular_ : ndarray of shape (n_features,)
    n_features_in_ : int
    fit_report_ : FitReport
    """

    _parameter_constraints: dict = {"fit_intercept": ["boolean"]}

    def __init__(self, *, fit_intercept=True):
        self.fit_intercept = fit_intercept

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit on X (ndarray, DataFrame, CSR or Dataset) and targets y (1-D or 2-D)."""
        return self._fit(X, y, sample_weight, alpha=0.0)


class Ridge(_LeastSquares):
    """Ridge regression, ``||y - Xw||^2_s + alpha ||w||^2``, from the distributed Gram matrix.

    Parameters
    ----------
    alpha : float or array of shape (n_targets,), default=1.0
    fit_intercept : bool, default=True

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    fit_report_ : FitReport
    """

    _ravel_single_column = True

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left"), np.ndarray],
        "fit_intercept": ["boolean"],
    }

    def __init__(self, alpha=1.0, *, fit_intercept=True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit on X (ndarray, DataFrame, CSR or Dataset) and targets y (1-D or 2-D)."""
        return self._fit(X, y, sample_weight, alpha=self.alpha)
