"""scikit-learn compatibility of the distributed linear models.

``parametrize_with_checks`` runs scikit-learn's full estimator check suite on
LogisticRegression, LinearSVC, LinearRegression and Ridge, on the in-process
engine with 2 workers. No check is marked as an expected failure: every one
passes. (scikit-learn itself skips its array-API checks unless the environment
variable SCIPY_ARRAY_API=1 is set; shardlearn does not declare array-API
support, so those are not applicable.)

The rest checks the estimators inside scikit-learn machinery: Pipeline with
StandardScaler, GridSearchCV over C (same best C as scikit-learn's
LogisticRegression), clone, and get_params / set_params round trips.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import linear_model as skl
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge
from shardlearn.testing import make_logistic

ESTIMATORS = [LogisticRegression(), LinearSVC(), LinearRegression(), Ridge()]


@pytest.fixture(autouse=True)
def _local_engine():
    # conftest shuts the session down after every test, so start one per test (cheap).
    shardlearn.init("local", n_workers=2)
    yield
    shardlearn.shutdown()


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_with_scaler_matches_sklearn():
    X, y = make_logistic(600, 5, n_classes=3, random_state=0)
    X = X * np.array([1.0, 10.0, 100.0, 0.1, 5.0]) + 50.0
    ours = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=1000)).fit(X, y)
    ref = make_pipeline(StandardScaler(), skl.LogisticRegression(tol=1e-10, max_iter=1000)).fit(X, y)
    a, b = ours[-1], ref[-1]
    assert np.max(np.abs(a.coef_ - b.coef_)) <= 1e-4 * np.max(np.abs(b.coef_))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=0, atol=1e-4)


def test_grid_search_over_C_picks_sklearns_best():
    X, y = make_logistic(450, 8, n_classes=2, random_state=1)
    grid = {"C": [1e-3, 1e-2, 1e-1, 1.0, 10.0]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    ours = GridSearchCV(LogisticRegression(tol=1e-8), grid, cv=cv).fit(X, y)
    ref = GridSearchCV(skl.LogisticRegression(tol=1e-8), grid, cv=cv).fit(X, y)
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], rtol=0, atol=1e-12)
    # The scores differ between Cs, so picking the same best C means something.
    assert np.ptp(ref.cv_results_["mean_test_score"]) > 0.01
    assert isinstance(ours.best_estimator_, LogisticRegression)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_grid_search_three_fold_integer_cv():
    X, y = make_logistic(300, 4, n_classes=3, random_state=2)
    grid = {"C": [0.01, 1.0]}
    ours = GridSearchCV(LogisticRegression(tol=1e-8), grid, cv=3).fit(X, y)
    ref = GridSearchCV(skl.LogisticRegression(tol=1e-8), grid, cv=3).fit(X, y)
    assert ours.best_params_ == ref.best_params_


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_clone_and_params_round_trip(estimator):
    params = estimator.get_params()
    changed = {"fit_intercept": False}
    if "C" in params:
        changed["C"] = 0.25
    if "alpha" in params:
        changed["alpha"] = 4.0
    if "solver" in params:
        changed["solver"] = "trust-ncg"
    est = clone(estimator).set_params(**changed)
    assert est.get_params() == {**params, **changed}
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    # set_params(**get_params()) changes nothing.
    assert clone(twin).set_params(**twin.get_params()).get_params() == twin.get_params()
    # A clone of a fitted estimator is unfitted and fits to the same model.
    X, y = make_logistic(200, 3, n_classes=2, random_state=3)
    y = y.astype(float) if "alpha" in params or type(est) is LinearRegression else y
    fitted = est.fit(X, y)
    fresh = clone(fitted)
    assert not hasattr(fresh, "coef_")
    np.testing.assert_array_equal(fresh.fit(X, y).coef_, fitted.coef_)
