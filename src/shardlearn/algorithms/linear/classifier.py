"""Functional core of the distributed linear classifiers (logistic, squared hinge)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

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


def class_weight_vector(class_weight, classes, y=None):
    """Per-class multipliers of the row weights for a dict ``class_weight`` (None stays None).

    ``"balanced"`` is passed through: it needs the weighted class counts, which
    :func:`fit_linear_classifier` sums over the shards. Raises ``ValueError`` for
    a dict that names classes not in the data.
    """
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return class_weight
    from sklearn.utils.class_weight import compute_class_weight

    return compute_class_weight(class_weight, classes=classes, y=classes if y is None else y
                                ).astype(np.float64)


def balanced_class_weight(counts):
    """scikit-learn's ``"balanced"`` weights from the (sample-weighted) count of each class."""
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return counts.sum() / (len(counts) * counts)


def fit_linear_classifier(dataset, classes, *, loss="log_loss", C=1.0, fit_intercept=True,
                          penalize_intercept=False, intercept_scaling=1.0, class_weight=None,
                          solver="lbfgs", tol=1e-4, max_iter=100, estimator="LinearClassifier",
                          session=None, checkpoint=None, resume=None) -> LinearFit:
    """Fit a linear classifier on a sharded dataset.

    ``loss="log_loss"``: binary or multinomial logistic regression. ``"squared_hinge"``:
    one-vs-rest L2-SVM (binary is one problem). ``class_weight``: None, an array
    with one multiplier per class, or ``"balanced"`` (computed from the
    sample-weighted class counts, as scikit-learn does). Returns coefficients of
    shape (n_problems, n_features) and intercepts of shape (n_problems,).

    The objective is ``F(w) = (1/S) sum_i s_i loss_i(w) + (1/(2 C S)) sum_j m_j w_j^2``
    (S: total row weight, m: penalty mask); ``report.objective_history`` holds F
    after each iteration, its last value F at the returned coefficients.
    ``checkpoint`` / ``resume`` are :class:`~shardlearn.runtime.checkpoint.CheckpointStore`
    objects (lbfgs only).
    """
    t0 = time.perf_counter()
    n_classes = len(classes)
    d = dataset.n_features
    loss_grad, hessp = LOSSES[loss]
    n_problems = 1 if n_classes == 2 else n_classes
    if loss == "log_loss":
        mode = "binary" if n_classes == 2 else "index"
        kernel_args = (n_classes, fit_intercept)
    else:
        mode = "ovr"
        kernel_args = (n_problems, fit_intercept)
    n_params = d + int(fit_intercept)
    mask = np.ones((n_problems, n_params))
    if fit_intercept:
        # liblinear appends a constant feature `intercept_scaling` whose weight is
        # penalised: with b = scaling * weight, the penalty on b is b^2 / scaling^2.
        mask[:, d] = 1.0 / intercept_scaling**2 if penalize_intercept else 0.0
    # The driver's own linear algebra runs on one BLAS thread on every engine, so the
    # iterates are bit-identical whether the workers are threads or Ray actors.
    # Per-row state on the workers (see runtime/memory.py): encoded labels, row
    # weights, and the curvature / active set the Hessian products read.
    if loss == "log_loss":
        state_bytes = 24 if n_classes == 2 else 16 + 8 * n_classes
    else:
        state_bytes = 17 * n_problems
    with Coordinator(dataset, session=session, name=estimator,
                     state_bytes_per_row=state_bytes) as coord, \
            threadpool_limits(limits=1):
        if isinstance(class_weight, str):
            counts = coord.reduce(kernels.class_weight_sums, classes, step="class_counts")
            class_weight = balanced_class_weight(counts)
        # restore=True: a worker that takes over a shard (failure or rebalancing) rebuilds it.
        weights = ordered_reduce(coord.map(kernels.prepare_targets, classes, class_weight, mode,
                                           step="prepare_targets", restore=True))
        if not weights > 0:
            raise ValueError(
                "The rows' weights (sample_weight times class_weight) sum to zero; give at "
                "least one row a positive weight."
            )
        objective = DistributedObjective(coord, loss_grad, hessp, kernel_args, weights, C,
                                         mask.ravel())
        w0 = np.zeros(n_problems * n_params)
        with progress_bar(f"{estimator} ({solver})", total=max_iter) as bar:
            result = minimize_objective(objective, w0, solver=solver, tol=tol, max_iter=max_iter,
                                        bar=bar, estimator=estimator, checkpoint=checkpoint,
                                        resume=resume)
        W = result.w.reshape(n_problems, n_params)
        coef = np.ascontiguousarray(W[:, :d])
        intercept = W[:, d] if fit_intercept else np.zeros(n_problems)
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=result.n_iter,
            converged=result.converged, objective_history=result.history,
            extra={"solver": solver, "function_evaluations": objective.n_evals,
                   "total_weight": objective.S, "message": result.message},
        )
    return LinearFit(coef, np.array(intercept, dtype=np.float64), result, report)
