"""Distributed logistic regression."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.linear.solvers import SOLVERS
from ._classifier_base import DistributedLinearClassifier


class LogisticRegression(DistributedLinearClassifier):
    """L2-regularised logistic regression fitted over shards on a group of workers.

    Minimises scikit-learn's objective, ``(1/S) sum_i s_i log_loss_i + ||coef||^2 / (2 C S)``
    (S: total sample weight; the intercept is not penalised): binary for two
    classes, multinomial (softmax) for more. Each worker returns the loss and
    gradient (and Hessian-vector products for ``solver="trust-ncg"``) of its
    shards; the coordinator sums them in shard order and takes the optimiser step.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, as in scikit-learn.
    fit_intercept : bool, default=True
    class_weight : dict or "balanced", default=None
        Multiplies each row's weight by the weight of its class. ``"balanced"``
        gives class k the weight ``S / (n_classes * S_k)`` from the
        sample-weighted class totals (as scikit-learn), summed over the shards.
    solver : {"lbfgs", "trust-ncg"}, default="lbfgs"
        ``lbfgs`` uses scikit-learn's L-BFGS settings; ``trust-ncg`` is a
        Newton-CG trust-region method using distributed Hessian-vector products.
    tol : float, default=1e-4
        Stop when the gradient's max-norm (lbfgs) or 2-norm (trust-ncg) falls
        below ``tol``.
    max_iter : int, default=100

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has string column names.
    fit_report_ : FitReport
        Iterations, objective history, time per worker (compute / communication /
        waiting), bytes moved. ``objective_history`` holds the objective above
        after each iteration; its last value is the objective at ``coef_``.

    Examples
    --------
    >>> import shardlearn
    >>> from shardlearn.linear_model import LogisticRegression
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(random_state=0)
    >>> clf = LogisticRegression().fit(X, y)
    >>> clf.score(X, y) > 0.8
    True
    """

    _loss = "log_loss"
    _penalize_intercept = False

    _parameter_constraints: dict = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "fit_intercept": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "solver": [StrOptions(set(SOLVERS))],
        "tol": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, C=1.0, *, fit_intercept=True, class_weight=None, solver="lbfgs",
                 tol=1e-4, max_iter=100):
        self.C = C
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), computed on the driver."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))
