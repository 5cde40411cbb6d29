"""Generated bad inputs against every estimator: a ValueError before any worker runs.

Each example is tried on every estimator it is invalid for (y problems only on
supervised ones), so the run below checks well over 1,000 (input, estimator)
pairs: no crash other than ValueError, no hang (hard timeout), no worker step
started, and the caller's arrays unchanged bit for bit.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from shardlearn.runtime import steps_started
from test_validation import _snapshot, invalid_inputs

#: y-only problems: invalid for supervised estimators only.
Y_CASES = {"nan_y", "inf_y", "len_y", "single_class", "complex_y", "y_3d", "nan_y_object"}
#: sample-weight problems: invalid where the estimator takes weights.
W_CASES = {"nan_w", "negative_w", "zero_w", "len_w"}


NAN_TOLERANT: set[int] = set()


def _all_estimators():
    from shardlearn.cluster import AgglomerativeClustering, BisectingKMeans, KMeans
    from shardlearn.decomposition import PCA, TruncatedSVD
    from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge

    # (factory, supervised, classifier, takes sample_weight); trees are in
    # NAN_TOLERANT: NaN features are missing values for them, not bad input.
    out = [
        (LogisticRegression, True, True, True), (LinearSVC, True, True, True),
        (LinearRegression, True, False, True), (Ridge, True, False, True),
        (lambda: KMeans(n_clusters=2, n_init=1), False, False, True),
        (lambda: BisectingKMeans(n_clusters=2), False, False, True),
        (lambda: AgglomerativeClustering(n_clusters=2), False, False, False),
        (lambda: PCA(n_components=1), False, False, False),
        (lambda: TruncatedSVD(n_components=1), False, False, False),
    ]
    try:
        from shardlearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
        from shardlearn.tree import DecisionTreeClassifier

        trees = [(lambda: DecisionTreeClassifier(max_depth=2), True, True, True),
                 (lambda: GradientBoostingClassifier(n_estimators=2), True, True, True),
                 (lambda: RandomForestRegressor(n_estimators=2), True, False, True)]
        NAN_TOLERANT.update(id(t[0]) for t in trees)
        out += trees
    except ImportError:
        pass
    return out


ESTIMATORS = _all_estimators()
CHECKED = {"pairs": 0}


def _applies(case, make, supervised, classifier, weighted):
    if case in ("nan_X", "nan_X_f32") and id(make) in NAN_TOLERANT:
        return False
    if case == "single_class":
        # Trees and forests learn one class, as scikit-learn's do (predict it).
        return classifier and getattr(make(), "_min_classes", 2) > 1
    if case in Y_CASES:
        return supervised
    if case in W_CASES:
        return weighted
    return True


@pytest.mark.timeout(600)
@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(invalid_inputs())
def test_generated_bad_inputs_fail_before_any_work(local_session, inp):
    case, X, y, w = inp
    saved = [_snapshot(a) for a in (X, y, w)]
    for make, supervised, classifier, weighted in ESTIMATORS:
        if not _applies(case, make, supervised, classifier, weighted):
            continue
        est = make()
        before = steps_started()
        with pytest.raises(ValueError):
            if supervised:
                est.fit(X, y, sample_weight=w)
            elif weighted:
                est.fit(X, sample_weight=w)
            else:
                est.fit(X)
        assert steps_started() == before, f"{type(est).__name__}: a worker ran on {case}"
        assert [_snapshot(a) for a in (X, y, w)] == saved, f"{type(est).__name__} modified input"
        CHECKED["pairs"] += 1


def test_the_fuzz_run_covered_at_least_1000_pairs():
    # Runs after the property test in file order (pytest keeps definition order).
    assert CHECKED["pairs"] >= 1000, CHECKED
