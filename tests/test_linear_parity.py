"""Distributed linear models against scikit-learn on the same objective.

Both sides run with tight solver tolerances (``tol=1e-10``, large ``max_iter``;
sklearn's LinearSVC with ``dual=False``), so they reach the same optimum.
Tolerances:

* ``coef_`` and ``intercept_``: max-abs error relative to the max-abs value of
  scikit-learn's array, at most 1e-4 (``assert_rel``);
* predicted labels identical on well-separated data (``make_separable``);
* ``predict_proba``: rows sum to 1 (1e-12) and match scikit-learn's to 1e-4 (absolute);
* least squares: relative 1e-4 as well (observed errors are ~1e-12 or below).

Fits run on the in-process engine with 2 workers; several use a Dataset with
several shards so the shard-ordered sums are exercised. The last sections check
``fit_report_`` (objective history against the objective recomputed with numpy)
and that bad input fails before any worker step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn import linear_model as skl
from sklearn import svm as sksvm

import shardlearn
from shardlearn.data import Dataset
from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge
from shardlearn.runtime import steps_started
from shardlearn.testing import (
    make_linear_regression,
    make_logistic,
    make_separable,
    make_sparse_logistic,
)

TOL = dict(tol=1e-10, max_iter=10_000)
SOLVERS = ["lbfgs", "trust-ncg"]


@pytest.fixture(autouse=True)
def _local(local_session):
    yield local_session


def assert_rel(actual, expected, tol=1e-4, what="value"):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = np.max(np.abs(expected))
    err = np.max(np.abs(actual - expected))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def assert_same_model(ours, ref, X, *, proba=False):
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    if proba:
        P = ours.predict_proba(X)
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(P, ref.predict_proba(X), rtol=0, atol=1e-4)


def unbalanced(X, y, keep_every=4, cls=0):
    """Keep one row in ``keep_every`` of class ``cls``: unequal class sizes."""
    keep = (y != cls) | (np.arange(len(y)) % keep_every == 0)
    return X[keep], y[keep]


# -- LogisticRegression ---------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_matches_sklearn(solver, n_classes):
    X, y = make_separable(600, 6, n_classes, random_state=1)
    ours = LogisticRegression(C=0.5, solver=solver, **TOL).fit(X, y)
    ref = skl.LogisticRegression(C=0.5, **TOL).fit(X, y)
    assert ours.coef_.shape == ((1, 6) if n_classes == 2 else (n_classes, 6))
    assert_same_model(ours, ref, X, proba=True)
    np.testing.assert_allclose(ours.predict_log_proba(X), np.log(ours.predict_proba(X)))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_overlapping_classes_probabilities(solver, n_classes):
    # Overlapping classes: probabilities far from 0/1, coefficients well determined.
    X, y = make_logistic(800, 5, n_classes=n_classes, random_state=2)
    ours = LogisticRegression(C=2.0, solver=solver, **TOL).fit(Dataset.from_arrays(X, y, n_shards=5))
    ref = skl.LogisticRegression(C=2.0, **TOL).fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")
    P = ours.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(P, ref.predict_proba(X), rtol=0, atol=1e-4)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_sample_weight(solver, n_classes):
    X, y = make_separable(600, 6, n_classes, random_state=3)
    sw = np.random.default_rng(0).uniform(0.1, 3.0, size=len(y))
    sw_before = sw.copy()
    ours = LogisticRegression(solver=solver, **TOL).fit(X, y, sample_weight=sw)
    ref = skl.LogisticRegression(**TOL).fit(X, y, sample_weight=sw)
    np.testing.assert_array_equal(sw, sw_before)
    assert_same_model(ours, ref, X, proba=True)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_logistic_class_weight_balanced(solver, n_classes, weighted):
    # Unequal class sizes, so "balanced" differs from no weights; with sample weights
    # the balanced weights come from the weighted class counts, as in scikit-learn.
    X, y = unbalanced(*make_separable(900, 5, n_classes, random_state=4))
    sw = np.random.default_rng(1).uniform(0.1, 3.0, size=len(y)) if weighted else None
    ours = LogisticRegression(class_weight="balanced", solver=solver, **TOL).fit(
        Dataset.from_arrays(X, y, sw, n_shards=4))
    ref = skl.LogisticRegression(class_weight="balanced", **TOL).fit(X, y, sample_weight=sw)
    assert_same_model(ours, ref, X, proba=True)
    plain = skl.LogisticRegression(**TOL).fit(X, y, sample_weight=sw)
    assert np.max(np.abs(plain.coef_ - ref.coef_)) > 1e-3 * np.max(np.abs(ref.coef_))


def test_logistic_class_weight_dict_multinomial():
    X, y = make_logistic(700, 4, n_classes=3, random_state=5)
    cw = {0: 0.5, 1: 2.0, 2: 1.0}
    ours = LogisticRegression(class_weight=cw, **TOL).fit(X, y)
    ref = skl.LogisticRegression(class_weight=cw, **TOL).fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")


@pytest.mark.parametrize("solver", SOLVERS)
def test_logistic_csr(solver):
    X, y = make_sparse_logistic(1500, 60, random_state=6)
    ours = LogisticRegression(solver=solver, **TOL).fit(Dataset.from_arrays(X, y, n_shards=3))
    ref = skl.LogisticRegression(**TOL).fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-4)
    dense = LogisticRegression(solver=solver, **TOL).fit(X.toarray(), y)
    assert_rel(ours.coef_, dense.coef_, tol=1e-8, what="CSR vs dense coef_")


@pytest.mark.parametrize("solver", SOLVERS)
def test_logistic_no_intercept(solver):
    X, y = make_separable(500, 5, 3, random_state=7)
    ours = LogisticRegression(fit_intercept=False, solver=solver, **TOL).fit(X, y)
    ref = skl.LogisticRegression(fit_intercept=False, **TOL).fit(X, y)
    assert_same_model(ours, ref, X, proba=True)
    np.testing.assert_array_equal(ours.intercept_, np.zeros(3))


def test_logistic_string_labels():
    X, y = make_separable(400, 4, 3, random_state=8)
    labels = np.array(["cat", "dog", "eel"])[y]
    ours = LogisticRegression(**TOL).fit(X, labels)
    ref = skl.LogisticRegression(**TOL).fit(X, labels)
    assert_same_model(ours, ref, X, proba=True)


def test_logistic_dataframe_input():
    X, y = make_separable(500, 4, 2, random_state=9)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    ours = LogisticRegression(**TOL).fit(df, pd.Series(y))
    ref = skl.LogisticRegression(**TOL).fit(df, y)
    np.testing.assert_array_equal(ours.feature_names_in_, ref.feature_names_in_)
    assert_same_model(ours, ref, df, proba=True)
    with pytest.raises(ValueError, match="feature names"):
        ours.predict(df[["b", "a", "c", "d"]])


@pytest.mark.parametrize("solver", SOLVERS)
def test_logistic_float32_input(solver):
    X, y = make_logistic(600, 5, n_classes=3, random_state=10, dtype=np.float32)
    ours = LogisticRegression(solver=solver, **TOL).fit(X, y)
    # The same numbers in float64: shardlearn computes in float64 whatever the input.
    ref = skl.LogisticRegression(**TOL).fit(X.astype(np.float64), y)
    assert ours.coef_.dtype == np.float64
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-4)


# -- LinearSVC ---------------------------------------------------------------------------
def sk_svc(**kw):
    return sksvm.LinearSVC(dual=False, tol=1e-12, max_iter=1_000_000, **kw)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_matches_sklearn(solver, n_classes):
    X, y = make_separable(600, 6, n_classes, random_state=11)
    ours = LinearSVC(C=0.5, solver=solver, **TOL).fit(X, y)
    ref = sk_svc(C=0.5).fit(X, y)
    assert ours.coef_.shape == ((1, 6) if n_classes == 2 else (n_classes, 6))
    assert_same_model(ours, ref, X)
    assert isinstance(ours.n_iter_, int) and ours.n_iter_ >= 1


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_overlapping_classes(n_classes):
    X, y = make_logistic(800, 5, n_classes=n_classes, random_state=12)
    ours = LinearSVC(solver="trust-ncg", **TOL).fit(Dataset.from_arrays(X, y, n_shards=5))
    ref = sk_svc().fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_sample_weight(n_classes):
    X, y = make_separable(600, 5, n_classes, random_state=13)
    sw = np.random.default_rng(2).uniform(0.1, 3.0, size=len(y))
    ours = LinearSVC(**TOL).fit(X, y, sample_weight=sw)
    ref = sk_svc().fit(X, y, sample_weight=sw)
    assert_same_model(ours, ref, X)


@pytest.mark.parametrize("class_weight", ["balanced", {0: 0.5, 1: 3.0, 2: 1.0}],
                         ids=["balanced", "dict"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_class_weight(class_weight, n_classes):
    # liblinear's meaning: for more than two classes, problem k weights only class k.
    X, y = unbalanced(*make_logistic(900, 5, n_classes=n_classes, random_state=14))
    if isinstance(class_weight, dict):
        class_weight = {k: v for k, v in class_weight.items() if k < n_classes}
    ours = LinearSVC(class_weight=class_weight, **TOL).fit(X, y)
    ref = sk_svc(class_weight=class_weight).fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_intercept_scaling(n_classes):
    # liblinear penalises the intercept as the weight of a constant feature of this value.
    X, y = make_separable(600, 5, n_classes, random_state=15)
    ours = LinearSVC(intercept_scaling=3.0, **TOL).fit(X, y)
    ref = sk_svc(intercept_scaling=3.0).fit(X, y)
    assert_same_model(ours, ref, X)


def test_linear_svc_no_intercept():
    X, y = make_separable(600, 5, 3, random_state=16)
    ours = LinearSVC(fit_intercept=False, **TOL).fit(X, y)
    ref = sk_svc(fit_intercept=False).fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_svc_csr(solver):
    X, y = make_sparse_logistic(1500, 60, random_state=17)
    ours = LinearSVC(solver=solver, **TOL).fit(Dataset.from_arrays(X, y, n_shards=3))
    ref = sk_svc().fit(X, y)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    assert_rel(ours.intercept_, ref.intercept_, what="intercept_")


def test_linear_svc_dataframe_and_float32():
    X, y = make_separable(500, 4, 3, random_state=18)
    X32 = X.astype(np.float32)
    df = pd.DataFrame(X32, columns=["a", "b", "c", "d"])
    ours = LinearSVC(**TOL).fit(df, y)
    ref = sk_svc().fit(pd.DataFrame(X32.astype(np.float64), columns=df.columns), y)
    np.testing.assert_array_equal(ours.feature_names_in_, ref.feature_names_in_)
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    np.testing.assert_array_equal(ours.predict(df), ref.predict(df))


# -- LinearRegression and Ridge --------------------------------------------------------
LSQ = [
    pytest.param(lambda **kw: LinearRegression(**kw), lambda **kw: skl.LinearRegression(**kw),
                 id="LinearRegression"),
    pytest.param(lambda **kw: Ridge(alpha=3.0, **kw),
                 lambda **kw: skl.Ridge(alpha=3.0, solver="cholesky", **kw), id="Ridge"),
]


def assert_same_regression(ours, ref, X):
    assert_rel(ours.coef_, ref.coef_, what="coef_")
    if np.any(np.asarray(ref.intercept_) != 0):
        assert_rel(ours.intercept_, ref.intercept_, what="intercept_")
    else:
        np.testing.assert_array_equal(ours.intercept_, ref.intercept_)
    assert np.shape(ours.intercept_) == np.shape(ref.intercept_)
    assert_rel(ours.predict(X), ref.predict(X), what="predictions")


@pytest.mark.parametrize("make_ours, make_ref", LSQ)
@pytest.mark.parametrize("n_targets", [1, 3])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_matches_sklearn(make_ours, make_ref, n_targets, weighted, fit_intercept):
    X, y = make_linear_regression(1500, 6, n_targets, random_state=20)
    sw = np.random.default_rng(3).uniform(0.1, 3.0, size=len(X)) if weighted else None
    ds = Dataset.from_arrays(X, y, sw, n_shards=5, multi_target=True)
    ours = make_ours(fit_intercept=fit_intercept).fit(ds)
    ref = make_ref(fit_intercept=fit_intercept).fit(X, y, sample_weight=sw)
    assert np.shape(ours.coef_) == np.shape(ref.coef_)
    assert_same_regression(ours, ref, X)


@pytest.mark.parametrize("make_ours, make_ref", LSQ)
def test_least_squares_column_target(make_ours, make_ref):
    X, y = make_linear_regression(500, 4, random_state=21)
    ours = make_ours().fit(X, y[:, None])
    ref = make_ref().fit(X, y[:, None])
    # Shapes as scikit-learn's: (1, 4) for LinearRegression, (4,) for Ridge.
    assert ours.coef_.shape == ref.coef_.shape
    assert np.shape(ours.intercept_) == np.shape(ref.intercept_) == (1,)
    assert ours.predict(X).shape == ref.predict(X).shape
    assert_same_regression(ours, ref, X)


@pytest.mark.parametrize("make_ours, make_ref", LSQ)
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_far_offset(make_ours, make_ref, fit_intercept):
    # X around 1e4 with unit spread: centring per shard keeps the Gram matrix accurate.
    X, y = make_linear_regression(2000, 5, 2, offset=1e4, random_state=22)
    ours = make_ours(fit_intercept=fit_intercept).fit(
        Dataset.from_arrays(X, y, n_shards=7, multi_target=True))
    ref = make_ref(fit_intercept=fit_intercept).fit(X, y)
    assert_same_regression(ours, ref, X)


@pytest.mark.parametrize("make_ours, make_ref", LSQ)
def test_least_squares_csr(make_ours, make_ref):
    rng = np.random.default_rng(4)
    X, y = make_linear_regression(1500, 30, 2, offset=0.5, random_state=23)
    Xs = sp.csr_matrix(np.where(rng.random(X.shape) < 0.2, X, 0.0))
    ours = make_ours().fit(Dataset.from_arrays(Xs, y, n_shards=4, multi_target=True))
    ref = make_ours().fit(Xs.toarray(), y)  # same algorithm, dense shards
    assert_rel(ours.coef_, ref.coef_, tol=1e-10, what="CSR vs dense coef_")
    if make_ours().__class__ is Ridge:
        # sklearn's sparse Ridge is iterative; its dense Cholesky solves the same problem.
        ref = make_ref().fit(Xs.toarray(), y)
    else:
        ref = make_ref().fit(Xs, y)
    assert_same_regression(ours, ref, Xs)


@pytest.mark.parametrize("make_ours, make_ref", LSQ)
def test_least_squares_float32_and_dataframe(make_ours, make_ref):
    X, y = make_linear_regression(600, 3, random_state=24)
    df = pd.DataFrame(X.astype(np.float32), columns=["u", "v", "w"])
    ours = make_ours().fit(df, y)
    ref = make_ref().fit(pd.DataFrame(df.to_numpy(np.float64), columns=df.columns), y)
    np.testing.assert_array_equal(ours.feature_names_in_, ref.feature_names_in_)
    assert_same_regression(ours, ref, df)


def test_least_squares_zero_weight_shard():
    # A shard whose rows all weigh zero has no mean: merging must skip it, and the
    # model equals the one fitted without those rows.
    X, y = make_linear_regression(700, 4, random_state=25)
    sw = np.ones(len(X))
    sw[:100] = 0.0  # the whole first shard of 7
    ds = Dataset.from_arrays(X, y, sw, n_shards=7)
    for ours, ref in [(LinearRegression(), skl.LinearRegression()),
                      (Ridge(alpha=2.0), skl.Ridge(alpha=2.0, solver="cholesky"))]:
        ours.fit(ds)
        ref.fit(X[100:], y[100:])
        assert_same_regression(ours, ref, X)


def test_linear_regression_collinear_minimum_norm():
    X, y = make_linear_regression(400, 4, random_state=26)
    Xc = np.column_stack([X, 2.0 * X[:, 0], np.full(len(X), 5.0)])  # rank 4 after centring
    ours = LinearRegression().fit(Dataset.from_arrays(Xc, y, n_shards=3))
    ref = skl.LinearRegression().fit(Xc, y)
    assert_same_regression(ours, ref, Xc)
    assert ours.rank_ == ref.rank_ == 4
    assert np.isfinite(ours.coef_).all()


def test_ridge_alpha_per_target():
    X, y = make_linear_regression(500, 4, 3, random_state=27)
    alphas = np.array([0.5, 0.0, 20.0])
    ours = Ridge(alpha=alphas).fit(X, y)
    ref = skl.Ridge(alpha=alphas, solver="cholesky").fit(X, y)
    assert_same_regression(ours, ref, X)
    ols = skl.LinearRegression().fit(X, y[:, 1])
    assert_rel(ours.coef_[1], ols.coef_, what="alpha=0 target")


# -- fit_report_ -------------------------------------------------------------------------
def numpy_logistic_objective(est, X, y, sw, C):
    classes = est.classes_
    idx = np.searchsorted(classes, y)
    cw = np.ones(len(classes))
    if est.class_weight == "balanced":
        counts = np.bincount(idx, weights=sw, minlength=len(classes))
        cw = counts.sum() / (len(classes) * counts)
    s = sw * cw[idx]
    Z = X @ est.coef_.T + est.intercept_
    if len(classes) == 2:
        z = Z[:, 0]
        loss = np.logaddexp(0.0, z) - idx * z
    else:
        loss = logsumexp(Z, axis=1) - Z[np.arange(len(y)), idx]
    S = s.sum()
    return float(s @ loss / S + np.sum(est.coef_ ** 2) / (2 * C * S))


def numpy_svc_objective(est, X, y, sw, C, scaling):
    classes = est.classes_
    idx = np.searchsorted(classes, y)
    Z = X @ est.coef_.T + est.intercept_
    if len(classes) == 2:
        Y = np.where(idx == 1, 1.0, -1.0)[:, None]
    else:
        Y = np.where(idx[:, None] == np.arange(len(classes)), 1.0, -1.0)
    m = np.maximum(0.0, 1.0 - Y * Z)
    S = sw.sum()
    penalty = np.sum(est.coef_ ** 2) + np.sum((est.intercept_ / scaling) ** 2)
    return float(np.sum(sw[:, None] * m * m) / S + penalty / (2 * C * S))


def check_report(est, n_shards):
    rep = est.fit_report_
    assert rep.n_iter == int(np.ravel(est.n_iter_)[0]) >= 1
    assert rep.n_shards == n_shards and rep.n_workers == 2
    assert rep.bytes_moved > 0
    for w in rep.workers:
        assert w.compute_s >= 0 and w.communication_s >= 0 and w.waiting_s >= 0
    assert sum(w.shards for w in rep.workers) == n_shards
    return rep


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_logistic_fit_report(solver, n_classes, class_weight):
    X, y = unbalanced(*make_logistic(900, 5, n_classes=n_classes, random_state=30))
    sw = np.random.default_rng(5).uniform(0.5, 2.0, size=len(y))
    est = LogisticRegression(C=0.3, solver=solver, class_weight=class_weight, tol=1e-8).fit(
        Dataset.from_arrays(X, y, sw, n_shards=4))
    rep = check_report(est, 4)
    hist = np.asarray(rep.objective_history)
    if solver == "lbfgs":
        assert np.all(np.diff(hist) <= 1e-12 * np.abs(hist[:-1]))
    direct = numpy_logistic_objective(est, X, y, sw, C=0.3)
    assert abs(hist[-1] - direct) <= 1e-10 * abs(direct)
    assert rep.converged
    assert rep.extra["solver"] == solver


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_svc_fit_report(solver, n_classes):
    X, y = make_logistic(900, 5, n_classes=n_classes, random_state=31)
    sw = np.random.default_rng(6).uniform(0.5, 2.0, size=len(y))
    est = LinearSVC(C=0.7, intercept_scaling=2.0, solver=solver, tol=1e-8).fit(
        Dataset.from_arrays(X, y, sw, n_shards=4))
    rep = check_report(est, 4)
    hist = np.asarray(rep.objective_history)
    if solver == "lbfgs":
        assert np.all(np.diff(hist) <= 1e-12 * np.abs(hist[:-1]))
    direct = numpy_svc_objective(est, X, y, sw, C=0.7, scaling=2.0)
    assert abs(hist[-1] - direct) <= 1e-10 * abs(direct)


@pytest.mark.parametrize("alpha", [0.0, 2.5])
def test_least_squares_fit_report(alpha):
    X, y = make_linear_regression(900, 5, 2, noise=1.0, random_state=32)
    sw = np.random.default_rng(7).uniform(0.5, 2.0, size=len(y))
    est = Ridge(alpha=alpha).fit(Dataset.from_arrays(X, y, sw, n_shards=4, multi_target=True))
    rep = est.fit_report_
    assert rep.n_iter == 1 and rep.bytes_moved > 0 and rep.n_shards == 4
    assert all(w.compute_s >= 0 for w in rep.workers)
    R = y - est.predict(X)
    direct = float(np.sum(sw[:, None] * R * R) + alpha * np.sum(est.coef_ ** 2))
    assert abs(rep.objective_history[-1] - direct) <= 1e-10 * direct


def test_max_iter_reached_warns_and_reports():
    from sklearn.exceptions import ConvergenceWarning

    X, y = make_logistic(500, 5, n_classes=3, random_state=33)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        est = LogisticRegression(max_iter=2, tol=1e-12).fit(X, y)
    assert est.n_iter_[0] == est.fit_report_.n_iter == 2
    assert not est.fit_report_.converged
    direct = numpy_logistic_objective(est, X, y, np.ones(len(y)), C=1.0)
    assert abs(est.fit_report_.objective_history[-1] - direct) <= 1e-10 * direct


# -- saving, bad input -----------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: LogisticRegression(), lambda: LinearSVC(),
                                  lambda: Ridge(), lambda: LinearRegression()],
                         ids=["LogisticRegression", "LinearSVC", "Ridge", "LinearRegression"])
def test_save_load_round_trip(make, tmp_path):
    X, y = make_separable(300, 4, 3, random_state=34)
    est = make().fit(X, y.astype(float) if isinstance(make(), (Ridge, LinearRegression)) else y)
    est.save(tmp_path / "m")
    back = shardlearn.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(np.ravel(back.n_iter_) if hasattr(est, "n_iter_") else 0,
                                  np.ravel(est.n_iter_) if hasattr(est, "n_iter_") else 0)


def _no_work(fn):
    before = steps_started()
    fn()
    assert steps_started() == before


@pytest.mark.parametrize("make", [lambda: LogisticRegression(), lambda: LinearSVC(),
                                  lambda: Ridge(), lambda: LinearRegression()],
                         ids=["LogisticRegression", "LinearSVC", "Ridge", "LinearRegression"])
def test_missing_y_fails_before_work(make):
    X, _ = make_separable(50, 3, 2)

    def fit():
        with pytest.raises(ValueError, match="requires y to be passed"):
            make().fit(X)
    _no_work(fit)


def test_bad_ridge_alpha_and_class_weight_fail_before_work():
    X, y = make_linear_regression(50, 3, 2)
    Xc, yc = make_separable(60, 3, 3)

    def fit_alpha():
        with pytest.raises(ValueError, match="number of penalties"):
            Ridge(alpha=np.array([1.0, 2.0, 3.0])).fit(X, y)

    def fit_cw():
        with pytest.raises(ValueError, match="not in class_weight"):
            LogisticRegression(class_weight={0: 1.0, 1: 2.0, 7: 3.0}).fit(Xc, yc)

    _no_work(fit_alpha)
    _no_work(fit_cw)
