"""Data generators shared by every backend's tests and the benchmarks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def make_separable(n_samples=600, n_features=8, n_classes=2, *, margin=4.0, random_state=0):
    """Well-separated Gaussian classes: every reasonable classifier predicts the same labels."""
    rng = np.random.default_rng(random_state)
    centers = rng.normal(size=(n_classes, n_features))
    centers *= margin / np.linalg.norm(centers[:, None] - centers[None], axis=2).max()
    centers *= 3
    y = np.arange(n_samples) % n_classes
    X = centers[y] + rng.normal(scale=0.5, size=(n_samples, n_features))
    return X, y


def make_logistic(n_samples=1000, n_features=10, n_classes=2, *, random_state=0, dtype=np.float64):
    """Labels drawn from a true logistic/softmax model: overlapping classes, a unique optimum."""
    rng = np.random.default_rng(random_state)
    X = rng.normal(size=(n_samples, n_features)).astype(dtype)
    W = rng.normal(size=(n_features, n_classes))
    logits = X.astype(np.float64) @ W
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    u = rng.random(n_samples)[:, None]
    y = (u > np.cumsum(P, axis=1)).sum(axis=1)
    return X, y


def make_sparse_logistic(n_samples=2000, n_features=200, density=0.05, *, random_state=0):
    """A CSR matrix with binary labels from a logistic model."""
    rng = np.random.default_rng(random_state)
    X = sp.random(n_samples, n_features, density=density, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.normal(size=k))
    w = rng.normal(size=n_features)
    p = 1 / (1 + np.exp(-(X @ w)))
    y = (rng.random(n_samples) < p).astype(int)
    return X, y


def make_linear_regression(n_samples=1000, n_features=10, n_targets=1, *, noise=0.1,
                           offset=3.0, random_state=0):
    """y = X w + b + noise, with X shifted away from zero to exercise centring."""
    rng = np.random.default_rng(random_state)
    X = rng.normal(size=(n_samples, n_features)) + offset
    W = rng.normal(size=(n_features, n_targets))
    y = X @ W + 1.5 + noise * rng.normal(size=(n_samples, n_targets))
    return X, (y[:, 0] if n_targets == 1 else y)


def make_integer_tree_data(seed, n=3000, d=6, classes=False):
    """``(X, y, sample_weight, X_test)`` for comparing histogram trees with
    scikit-learn's exact trees.

    Integer features (< 255 distinct values), so bin edges hold every threshold and
    the candidate splits are scikit-learn's. ``classes``: three classes from noisy
    logits, else a smooth noisy regression target. The weights are finely spread,
    which makes exact gain ties between different splits (scikit-learn breaks them by
    a random feature order) practically impossible; they are multiples of 2**-20, so
    the trees' exact-sum grid (a step of about 2**-39 here) holds them unrounded and
    both libraries add the same numbers.
    """
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 200, size=(n, d)).astype(float)
    Xt = rng.integers(0, 200, size=(n, d)).astype(float)
    if classes:
        logits = np.stack([np.sin(X[:, 0] / 30) + X[:, 1] / 100, np.cos(X[:, 2] / 40),
                           X[:, 3] / 150 - 0.5], 1) + rng.normal(scale=0.5, size=(n, 3))
        y = logits.argmax(1)
    else:
        y = np.sin(X[:, 0] / 25) + X[:, 1] / 200 + 0.2 * rng.normal(size=n)
    sw = np.round(rng.uniform(0.5, 1.5, n) * 2.0 ** 20) / 2.0 ** 20
    return X, y, sw, Xt
