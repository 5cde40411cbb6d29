"""Functional core of LinearRegression and Ridge: closed form from the distributed Gram matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from ...runtime import Coordinator, FitReport
from . import kernels


@dataclass
class LeastSquaresFit:
    coef: np.ndarray        # (n_targets, n_features)
    intercept: np.ndarray   # (n_targets,)
    objective: float        # weighted residual sum of squares (+ alpha * ||coef||^2)
    rank: int
    singular_values: np.ndarray
    report: FitReport


def solve_gram(Cxx, Cxy, alphas):
    """Coefficients (n_targets, n_features) of ``(Cxx + alpha_t I) w_t = Cxy[:, t]`` for each target.

    One symmetric eigendecomposition serves every target and every ``alpha``. A
    target with ``alpha == 0`` gets the minimum-norm least-squares solution: the
    eigenvalues below ``n_features * eps * largest`` (the default cut-off of
    ``scipy.linalg.pinvh``) are treated as zero, so collinear or constant
    features get the same coefficients as a pseudo-inverse would give them.

    Returns ``(coef, eigenvalues descending, rank)``.
    """
    d = Cxx.shape[0]
    evals, V = scipy.linalg.eigh(Cxx)
    evals = np.clip(evals, 0.0, None)
    cutoff = evals[-1] * d * np.finfo(np.float64).eps
    keep = evals > cutoff
    rank = int(keep.sum())
    proj = V.T @ Cxy  # (d, n_targets)
    coef = np.empty((Cxy.shape[1], d))
    for t, a in enumerate(alphas):
        if a > 0:
            inv = 1.0 / (evals + a)
        else:
            inv = np.zeros(d)
            inv[keep] = 1.0 / evals[keep]
        coef[t] = V @ (inv * proj[:, t])
    return coef, evals[::-1], rank


def fit_least_squares(dataset, *, alpha=0.0, fit_intercept=True, estimator="LinearRegression",
                      session=None) -> LeastSquaresFit:
    """Solve weighted (ridge) least squares in one distributed pass.

    Each shard returns its centred cross-products; the coordinator merges them in
    shard order and solves the (n_features x n_features) system. ``alpha`` may be
    a scalar or one value per target. ``alpha == 0`` gives the minimum-norm
    least-squares solution, as ``numpy.linalg.lstsq`` would.

    ``report.objective_history`` is ``[sum_t (||y_t - X w_t - b_t||^2_s + alpha_t ||w_t||^2)]``,
    computed from the merged statistics.
    """
    t0 = time.perf_counter()
    with Coordinator(dataset, session=session, name=estimator, state_bytes_per_row=0) as coord:
        stats = coord.reduce(kernels.gram_stats, fit_intercept, combine=kernels.merge_gram_stats,
                             step="gram")
        S, mx, my, Cxx, Cxy, Cyy = stats
        n_targets = Cxy.shape[1]
        alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64).ravel()
                                 if np.ndim(alpha) else np.float64(alpha), (n_targets,))
        # One BLAS thread on the driver on every engine: bit-identical coefficients
        # whether the workers are threads or Ray actors.
        with threadpool_limits(limits=1):
            coef, evals, rank = solve_gram(Cxx, Cxy, alphas)
            intercept = my - coef @ mx if fit_intercept else np.zeros(n_targets)
            # Residual sum of squares from the statistics: no second pass.
            rss = np.diag(Cyy) - 2 * np.einsum("tj,jt->t", coef, Cxy) + np.einsum(
                "ti,ij,tj->t", coef, Cxx, coef)
            objective = float(np.sum(rss + alphas * np.einsum("tj,tj->t", coef, coef)))
        sv = np.sqrt(evals)
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=1, converged=True,
            objective_history=[objective], extra={"rank": rank, "total_weight": S},
        )
    return LeastSquaresFit(coef, np.asarray(intercept, dtype=np.float64), objective, rank, sv,
                           report)
