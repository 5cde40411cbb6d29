"""Functional core of PCA and TruncatedSVD: coordinator loops over the decomposition kernels.

Two solvers, both returning a :class:`SpectrumFit`:

- :func:`fit_gram_spectrum` (exact, tall-and-skinny data): one pass; every shard
  returns its row count, column means and centred Gram matrix, merged exactly in
  shard order; the coordinator eigen-decomposes the (n_features x n_features) matrix.
- :func:`fit_randomized_spectrum` (wide or sparse data): the randomized range finder
  of Halko, Martinsson & Tropp (2011) as subspace iteration on ``A^T A``. One pass
  of the data per power iteration: each shard returns ``A_s^T (A_s Q)``, the
  coordinator orthonormalises the sum (QR). The last pass also gives ``A^T (A Q)``
  and ``Q^T A^T A Q``, from which the coordinator forms ``B = Q_n^T A`` for the
  orthonormal basis ``Q_n`` of ``A Q`` without another pass (Rayleigh-Ritz), so
  ``n_iter`` power iterations cost ``n_iter + 1`` reads of the data where the
  single-machine algorithm needs ``2 n_iter + 2``.

The random test matrix is drawn once at the coordinator from ``random_state`` and
broadcast, so the result does not depend on the number of workers. Coordinator
linear algebra runs on one BLAS thread, so the bits do not depend on the engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from ...comm.reduce import ordered_reduce
from ...progress import progress_bar
from ...runtime import Coordinator, FitReport
from . import kernels


@dataclass
class SpectrumFit:
    """Singular triplets (right side) of the possibly centred data matrix ``A``.

    Attributes
    ----------
    n_samples : int
    mean : ndarray of shape (n_features,)
        Column means of the data (used for centring when ``centred``).
    centred : bool
    components : ndarray of shape (r, n_features)
        Right singular vectors of ``A``, by decreasing singular value, signs fixed
        so that the largest-magnitude entry of each row is positive.
    singular_values : ndarray of shape (r,)
    column_ss : ndarray of shape (n_features,)
        Sum of squared deviations of each column from its mean.
    component_var : ndarray or None
        Population variance of the scores ``X @ components.T`` (randomized solver
        with ``score_variance=True``).
    report : FitReport
    """

    n_samples: int
    mean: np.ndarray
    centred: bool
    components: np.ndarray
    singular_values: np.ndarray
    column_ss: np.ndarray
    component_var: np.ndarray | None
    report: FitReport


def flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude entry of every row positive (scikit-learn's ``svd_flip``
    with ``u_based_decision=False``; the first such entry on ties)."""
    if components.shape[0] == 0:
        return components
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def _check_shards(dataset, estimator):
    for info in dataset.shards:
        if info.n_rows == 0:
            raise ValueError(
                f"{estimator}: shard {info.index} of the Dataset is empty "
                f"({info.source.describe()}). Every shard needs at least one row; rebuild "
                "the Dataset with fewer shards."
            )


# -- exact: eigen-decomposition of the merged centred Gram matrix -----------------------
def fit_gram_spectrum(dataset, *, estimator="PCA", session=None) -> SpectrumFit:
    """Exact PCA spectrum from the distributed centred Gram matrix (one pass)."""
    _check_shards(dataset, estimator)
    t0 = time.perf_counter()
    with Coordinator(dataset, session=session, name=estimator) as coord:
        n, mean, C = coord.reduce(kernels.centred_gram, combine=kernels.merge_moments,
                                  step="gram")
        with threadpool_limits(limits=1):
            evals, evecs = scipy.linalg.eigh(C)
        evals = np.clip(evals[::-1], 0.0, None)
        components = flip_signs(np.ascontiguousarray(evecs[:, ::-1].T))
        sv = np.sqrt(evals)
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=1, converged=True,
            objective_history=[float(np.trace(C))], extra={"solver": "gram"},
        )
    return SpectrumFit(int(n), mean, True, components, sv, np.diag(C).copy(), None, report)


# -- randomized: distributed subspace iteration -------------------------------------------
def _orthonormal(Z):
    return scipy.linalg.qr(Z, mode="economic", check_finite=False)[0]


def _rayleigh_ritz(Q, Z, k):
    """Top ``k`` right singular pairs of ``A`` from ``Q`` (orthonormal) and ``Z = A^T A Q``.

    With ``M = Q^T Z = (A Q)^T (A Q) = W diag(lam) W^T``, ``Q_n = A Q W lam^{-1/2}`` is an
    orthonormal basis of ``range(A Q)`` and ``B^T = (Q_n^T A)^T = Z W lam^{-1/2}``;
    the SVD of the small ``B^T`` gives the singular values and right singular vectors.
    """
    M = Q.T @ Z
    M = 0.5 * (M + M.T)
    lam, W = scipy.linalg.eigh(M)
    lam, W = lam[::-1], W[:, ::-1]
    tol = max(lam[0], 0.0) * M.shape[0] * np.finfo(np.float64).eps
    keep = lam > tol
    Bt = (Z @ W[:, keep]) / np.sqrt(lam[keep])
    U, S, _ = scipy.linalg.svd(Bt, full_matrices=False, check_finite=False)
    r = min(k, U.shape[1])
    V, S = U[:, :r].T, S[:r]
    if r < k:
        # A has rank r < k: complete with orthonormal directions it does not reach.
        d = Q.shape[0]
        rng_basis = np.concatenate([V.T, Q @ W[:, ~keep], np.eye(d)], axis=1)
        full = scipy.linalg.qr(rng_basis, mode="economic", check_finite=False)[0]
        V = np.concatenate([V, full[:, r:k].T])
        S = np.concatenate([S, np.zeros(k - r)])
    return V, S


def fit_randomized_spectrum(dataset, n_components, *, centre=True, n_iter=4, n_oversamples=10,
                            random_state=None, score_variance=False, estimator="PCA",
                            session=None) -> SpectrumFit:
    """Top ``n_components`` right singular triplets of ``X - mean`` (or ``X``) by randomized SVD."""
    _check_shards(dataset, estimator)
    t0 = time.perf_counter()
    d = dataset.n_features
    k = int(n_components)
    size = min(k + int(n_oversamples), d)
    rs = check_random_state(random_state)
    omega = rs.normal(size=(d, size))
    history = []
    with Coordinator(dataset, session=session, name=estimator) as coord:
        n, mean, column_ss = coord.reduce(kernels.column_moments, combine=kernels.merge_moments,
                                          step="moments")
        m = mean if centre else None
        with threadpool_limits(limits=1):
            Q = _orthonormal(omega)
        with progress_bar(f"{estimator} (randomized)", total=n_iter + 1) as bar:
            for it in range(n_iter + 1):
                Z = ordered_reduce(coord.map(kernels.gram_times, Q, m, step="power"))
                with threadpool_limits(limits=1):
                    ritz = np.sort(scipy.linalg.eigvalsh(0.5 * (Q.T @ Z + Z.T @ Q)))[::-1]
                    history.append(float(np.sum(ritz[:k])))
                    if it < n_iter:
                        Q = _orthonormal(Z)
                bar.advance(1, info=f"captured {history[-1]:.6g}")
        with threadpool_limits(limits=1):
            V, S = _rayleigh_ritz(Q, Z, k)
        components = flip_signs(np.ascontiguousarray(V))
        component_var = None
        if score_variance:
            _, _, ss = coord.reduce(kernels.projection_moments, components, m,
                                    combine=kernels.merge_moments, step="score_variance")
            component_var = ss / n
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=n_iter + 1,
            converged=True, objective_history=history,
            extra={"solver": "randomized", "n_iter": int(n_iter), "sketch_size": int(size)},
        )
    return SpectrumFit(int(n), mean, centre, components, S, column_ss, component_var, report)


# -- Minka's MLE of the dimensionality ---------------------------------------------------
def mle_dimension(spectrum: np.ndarray, n_samples: int) -> int:
    """Number of components maximising Minka's (2000) Laplace approximation of the PCA evidence.

    ``spectrum`` holds the covariance eigenvalues in decreasing order.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    d = spectrum.shape[0]
    scores = np.full(d, -np.inf)
    for k in range(1, d):
        scores[k] = _minka_log_evidence(spectrum, k, n_samples)
    return int(np.argmax(scores)) if np.isfinite(scores).any() else 0


def _minka_log_evidence(lam, k, n):
    d = lam.shape[0]
    if lam[k - 1] < 1e-15:
        return -np.inf
    # log p(U): uniform prior on the Stiefel manifold.
    i = np.arange(1, k + 1)
    log_pu = -k * math.log(2.0) + float(np.sum(
        [math.lgamma((d - j + 1) / 2.0) for j in i])) - float(np.sum((d - i + 1) / 2.0)) * math.log(math.pi)
    sigma2 = float(np.mean(lam[k:]))
    if sigma2 <= 1e-15:
        return -np.inf
    log_lam = -n / 2.0 * float(np.sum(np.log(lam[:k])))
    log_sigma = -n * (d - k) / 2.0 * math.log(sigma2)
    m = d * k - k * (k + 1) / 2.0
    # log |A_Z|: Hessian of the likelihood at the optimum (Minka's eq. 77).
    lam_hat = np.concatenate([lam[:k], np.full(d - k, sigma2)])
    log_az = 0.0
    for a in range(k):
        j = np.arange(a + 1, d)
        log_az += float(np.sum(np.log((1.0 / lam_hat[j] - 1.0 / lam_hat[a]) * (lam[a] - lam[j])
                                      ) + math.log(n)))
    return (log_pu + log_lam + log_sigma + (m + k) / 2.0 * math.log(2.0 * math.pi)
            - log_az / 2.0 - k / 2.0 * math.log(n))
