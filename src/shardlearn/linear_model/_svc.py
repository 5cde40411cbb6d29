"""Distributed linear support vector classification (squared hinge, L2)."""

from __future__ import annotations

from numbers import Integral, Real

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
        Weight of the loss relative to the penalty, as in scikit-learn.
    fit_intercept : bool, default=True
    intercept_scaling : float, default=1.0
        Value of liblinear's constant feature; larger values penalise the
        intercept less.
    class_weight : dict or "balanced", default=None
    solver : {"lbfgs", "trust-ncg"}, default="lbfgs"
        ``lbfgs``: L-BFGS on the (once differentiable) primal objective;
        ``trust-ncg``: Newton-CG trust region with the generalised Hessian.
    tol : float, default=1e-4
        Stop when the gradient of the objective divided by ``C * S`` is below ``tol``
        (max-norm for lbfgs, 2-norm for trust-ncg).
    max_iter : int, default=1000

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : int
        Iterations of the solver (all one-vs-rest problems are solved together).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has string column names.
    fit_report_ : FitReport
        ``objective_history`` holds liblinear's objective divided by ``C * S``
        (S: total row weight), i.e. ``(1/S) sum_i s_i max(0, 1 - y_i f(x_i))^2 +
        (||coef||^2 + (intercept / intercept_scaling)^2) / (2 C S)``, summed over
        the one-vs-rest problems.

    Notes
    -----
    ``class_weight`` follows liblinear: with two classes each row's weight is
    multiplied by its class's weight; with more classes, problem k (class k
    against the rest) multiplies the weight of the rows of class k only.
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

    def _n_iter_output(self, n_iter):
        return int(n_iter)
