"""Functional core of the distributed linear classifiers (logistic, squared hinge)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...comm.reduce import ordered_reduce
from ...progress import progress_bar
from ...runtime import Coordinator, FitReport
from . import kernels
from .objective import DistributedObjective
from .solvers import SolverResult, minimize_objective

LOSSES = {
    "log_loss": (kernels.logistic_loss_grad, kernels.logistic_hessp),
    "squared_hinge": (kernels.squared_hinge_loss_grad, kernels.squared_hinge_hessp),
}


@dataclass
class LinearFit:
    coef: np.ndarray
    intercept: np.ndarray
    result: SolverResult
    report: FitReport


def class_weight_vector(class_weight, classes, y):
    """Per-class multipliers of the row weights (scikit-learn's meaning of class_weight)."""
    if class_weight is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight

    return compute_class_weight(class_weight, classes=classes, y=y).astype(np.float64)


def fit_linear_classifier(dataset, classes, *, loss="log_loss", C=1.0, fit_intercept=True,
                          penalize_intercept=False, intercept_scaling=1.0, class_weight=None,
                          solver="lbfgs", tol=1e-4, max_iter=100, estimator="LinearClassifier",
                          session=None) -> LinearFit:
    """Fit a linear classifier on a sharded dataset.

    ``loss="log_loss"``: binary or multinomial logistic regression. ``"squared_hinge"``:
    one-vs-rest L2-SVM (binary is one problem). Returns coefficients of shape
    (n_problems, n_features) and intercepts of shape (n_problems,).
    """
    t0 = time.perf_counter()
    n_classes = len(classes)
    d = dataset.n_features
    loss_grad, hessp = LOSSES[loss]
    if loss == "log_loss":
        mode = "binary" if n_classes == 2 else "index"
        n_problems = 1 if n_classes == 2 else n_classes
        kernel_args = (n_classes, fit_intercept)
    else:
        mode = "ovr"
        n_problems = 1 if n_classes == 2 else n_classes
        kernel_args = (n_problems, fit_intercept)
    n_params = d + int(fit_intercept)
    mask = np.ones((n_problems, n_params))
    if fit_intercept:
        # liblinear appends a constant feature `intercept_scaling` whose weight is
        # penalised: with b = scaling * weight, the penalty on b is b^2 / scaling^2.
        mask[:, d] = 1.0 / intercept_scaling**2 if penalize_intercept else 0.0
    with Coordinator(dataset, session=session, name=estimator) as coord:
        weights = ordered_reduce(coord.map(kernels.prepare_targets, classes, class_weight, mode,
                                           step="prepare_targets"))
        if mode == "ovr" and n_classes == 2:
            # One problem: the positive class is classes[1], as in scikit-learn.
            coord.map(_keep_positive_column, step="prepare_targets")
        objective = DistributedObjective(coord, loss_grad, hessp, kernel_args, weights, C,
                                         mask.ravel())
        w0 = np.zeros(n_problems * n_params)
        with progress_bar(f"{estimator} ({solver})", total=max_iter) as bar:
            result = minimize_objective(objective, w0, solver=solver, tol=tol, max_iter=max_iter,
                                        bar=bar, estimator=estimator)
        W = result.w.reshape(n_problems, n_params)
        coef = np.ascontiguousarray(W[:, :d])
        intercept = W[:, d] if fit_intercept else np.zeros(n_problems)
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=result.n_iter,
            converged=result.converged, objective_history=result.history,
            extra={"solver": solver, "function_evaluations": objective.n_evals},
        )
    return LinearFit(coef, np.asarray(intercept, dtype=np.float64), result, report)


def _keep_positive_column(shard, state):
    state["y"] = np.ascontiguousarray(state["y"][:, 1:2])
