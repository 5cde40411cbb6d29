"""Distributed linear support vector classification (squared hinge, L2)."""

from __future__ import annotations

from numbers import Integral, Real

from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.linear.solvers import SOLVERS
from ._classifier_base import DistributedLinearClassifier


class LinearSVC(DistributedLinearClassifier):
    """Linear SVM with the squared hinge loss and L2 penalty, fitted over shards.

    Minimises scikit-learn's (liblinear's) primal objective
    ``1/2 ||w||^2 + C sum_i s_i max(0, 1 - y_i w.x_i)^2``, where, as in liblinear,
    the intercept is the weight of a constant feature ``intercept_scaling`` and is
    penalised too. Multiclass is one-vs-rest: the K problems share each pass
    over the data (one distributed pass per iteration for all classes).

    Parameters
    ----------
    C : float, default=1.0
    fit_intercept : bool, default=True
    intercept_scaling : float, default=1.0
    class_weight : dict or "balanced", default=None
    solver : {"lbfgs", "trust-ncg"}, default="lbfgs"
    tol : float, default=1e-4
    max_iter : int, default=1000

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1,)
    n_features_in_ : int
    fit_report_ : FitReport
    """

    _loss = "squared_hinge"
    _penalize_intercept = True

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "fit_intercept": ["boolean"],
        "intercept_scaling": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "solver": [StrOptions(set(SOLVERS))],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, C=1.0, *, fit_intercept=True, intercept_scaling=1.0, class_weight=None,
                 solver="lbfgs", tol=1e-4, max_iter=1000):
        self.C = C
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.class_weight = class_weight
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit on X (ndarray, DataFrame, CSR or Dataset) and labels y.

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, intercept_scaling=self.intercept_scaling)
