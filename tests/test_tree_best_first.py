"""Best-first (leaf-wise) growth: ``max_leaf_nodes`` / ``max_leaves``.

Single trees equal scikit-learn's BestFirstTreeBuilder, boosting with 31 leaves
matches HistGradientBoosting, and the usual invariants hold in best-first mode:
data- vs feature-parallel identity, bit identity on 1/2/3 workers, recovery of a
killed worker, and the same trees whatever histograms the memory budget lets the
coordinator (or feature-parallel workers) hold between passes.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import ensemble as ske
from sklearn import tree as skt
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from shardlearn.algorithms.tree import grower as G
from shardlearn.data import Dataset
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.testing import assert_same_forest, make_integer_tree_data, session
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = pytest.mark.timeout(120)


def _n_leaves_per_tree(forest):
    off = forest["offsets"]
    return [int((forest["feature"][off[i]:off[i + 1]] < 0).sum()) for i in range(len(off) - 1)]


# -- single trees equal scikit-learn's best-first trees -------------------------------------
@pytest.mark.usefixtures("local_two_workers")
@pytest.mark.parametrize("k", [5, 17])
def test_best_first_regression_tree_equals_sklearn(k):
    X, y, sw, Xt = make_integer_tree_data(0)
    ours = DecisionTreeRegressor(max_leaf_nodes=k).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeRegressor(max_leaf_nodes=k, random_state=0).fit(X, y, sample_weight=sw)
    assert ours.get_n_leaves() == ref.get_n_leaves() == k
    assert ours.get_depth() == ref.get_depth()
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-10)


@pytest.mark.usefixtures("local_two_workers")
@pytest.mark.parametrize("criterion", ["gini", "entropy"])
@pytest.mark.parametrize("k", [5, 17])
def test_best_first_classification_tree_equals_sklearn(k, criterion):
    X, y, sw, Xt = make_integer_tree_data(0, classes=True)
    ours = DecisionTreeClassifier(criterion=criterion, max_leaf_nodes=k).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeClassifier(criterion=criterion, max_leaf_nodes=k,
                                     random_state=0).fit(X, y, sample_weight=sw)
    assert ours.get_n_leaves() == ref.get_n_leaves() == k
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-9)


@pytest.mark.usefixtures("local_two_workers")
@pytest.mark.parametrize("kw", [dict(max_depth=4), dict(min_samples_leaf=40),
                                dict(min_impurity_decrease=2e-3)],
                         ids=["max_depth", "min_samples_leaf", "min_impurity_decrease"])
def test_best_first_with_other_limits_equals_sklearn(kw):
    X, y, sw, Xt = make_integer_tree_data(2)
    ours = DecisionTreeRegressor(max_leaf_nodes=40, **kw).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeRegressor(max_leaf_nodes=40, random_state=0, **kw).fit(
        X, y, sample_weight=sw)
    assert ours.get_n_leaves() == ref.get_n_leaves()
    assert ours.get_depth() == ref.get_depth()
    if "max_depth" in kw:
        assert ours.get_depth() == 4 and ours.get_n_leaves() <= 16
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=0, atol=1e-9)


@pytest.mark.usefixtures("local_two_workers")
def test_best_first_is_not_level_wise():
    # 16 leaves: level-wise growth to depth 4 gives a full, balanced tree; best-first
    # spends its splits where the gain is and goes deeper, as scikit-learn's does.
    X, y, sw, Xt = make_integer_tree_data(0)
    level = DecisionTreeRegressor(max_depth=4).fit(X, y, sample_weight=sw)
    best = DecisionTreeRegressor(max_leaf_nodes=16).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeRegressor(max_leaf_nodes=16, random_state=0).fit(X, y, sample_weight=sw)
    assert level.get_n_leaves() == best.get_n_leaves() == 16
    assert best.get_depth() == ref.get_depth() > 4
    assert not np.allclose(best.predict(Xt), level.predict(Xt))
    np.testing.assert_allclose(best.predict(Xt), ref.predict(Xt), rtol=0, atol=1e-9)


# -- boosting with 31 leaves against HistGradientBoosting -----------------------------------
@pytest.mark.usefixtures("local_two_workers")
def test_boosting_31_leaves_auc_matches_hist_gradient_boosting():
    X, y = make_classification(14000, 12, n_informative=7, flip_y=0.05, random_state=0)
    X, y, Xt, yt = X[:8000], y[:8000], X[8000:], y[8000:]
    ours = GradientBoostingClassifier(n_estimators=50, max_leaves=31, max_depth=None,
                                      learning_rate=0.1, min_samples_leaf=20, reg_lambda=0.0,
                                      random_state=0).fit(X, y)
    ref = ske.HistGradientBoostingClassifier(max_iter=50, learning_rate=0.1, min_samples_leaf=20,
                                             l2_regularization=0.0, early_stopping=False,
                                             random_state=0).fit(X, y)
    leaves = _n_leaves_per_tree(ours.forest_)
    assert max(leaves) == 31 and leaves[0] == 31
    auc = roc_auc_score(yt, ours.predict_proba(Xt)[:, 1])
    assert auc > 0.95
    assert abs(auc - roc_auc_score(yt, ref.predict_proba(Xt)[:, 1])) <= 0.003


def test_boosting_needs_a_bound():
    X, y = make_classification(100, 4, random_state=0)
    with pytest.raises(ValueError, match="max_depth and/or max_leaves"):
        GradientBoostingClassifier(max_depth=None, max_leaves=None).fit(X, y)


# -- invariants in best-first mode ----------------------------------------------------------
def _small_data():
    """Three classes, NaN, and column 1 turned into 10 category codes."""
    X, y = make_classification(600, 8, n_informative=5, n_classes=3, random_state=0)
    X[:, 1] = np.searchsorted(np.quantile(X[:, 1], np.linspace(0, 1, 11)[1:-1]), X[:, 1])
    X[np.random.default_rng(0).random(X.shape) < 0.05] = np.nan
    return X, y


def _models(parallel="data"):
    """Best-first models: one tree; forests (several trees per pass: sampled features per
    node, and all features with the subtraction trick); multiclass boosting (a tree per
    class per pass, a categorical feature), and boosting with a depth limit too."""
    p = dict(parallel=parallel, random_state=0)
    return {
        "tree": DecisionTreeClassifier(max_leaf_nodes=12, **p),
        "forest": RandomForestClassifier(n_estimators=5, max_leaf_nodes=10, oob_score=True, **p),
        "forest_all_features": RandomForestRegressor(n_estimators=4, max_leaf_nodes=9,
                                                     max_features=1.0, **p),
        "gbt": GradientBoostingClassifier(n_estimators=3, max_leaves=8, max_depth=None,
                                          min_samples_leaf=5, subsample=0.8, colsample=0.8,
                                          categorical_features=[1], **p),
        "gbt_depth": GradientBoostingRegressor(n_estimators=3, max_leaves=6, max_depth=3,
                                               min_samples_leaf=5, **p),
    }


def _datasets():
    """Classes, and a numeric target for the regressors (3 shards whatever the workers)."""
    X, y = _small_data()
    return (Dataset.from_arrays(X, y, n_shards=3, allow_nan=True),
            Dataset.from_arrays(X, y + np.sin(np.nan_to_num(X[:, 0])), n_shards=3,
                               allow_nan=True))


def _fit_all(parallel="data"):
    classes, numbers = _datasets()
    out = {}
    for name, est in _models(parallel).items():
        est.fit(numbers if name in ("forest_all_features", "gbt_depth") else classes)
        out[name] = dict(est.forest_)
    return out


@pytest.mark.usefixtures("local_two_workers")
def test_best_first_data_and_feature_parallel_identical():
    data = _fit_all("data")
    feature = _fit_all("feature")
    for name in data:
        leaves = _n_leaves_per_tree(data[name])
        assert max(leaves) >= 6, name
        assert_same_forest(data[name], feature[name])
    assert (data["gbt"]["cat_size"] > 0).any()      # categorical splits grow best-first too


def test_best_first_bit_identical_on_1_2_3_workers():
    ref = None
    for n in (1, 2, 3):
        with session("local", n_workers=n):
            got = _fit_all()
        if ref is None:
            ref = got
            continue
        for name in ref:
            assert_same_forest(ref[name], got[name])


@pytest.mark.parametrize("parallel", ["data", "feature"])
def test_best_first_killed_worker_changes_nothing(parallel):
    """Held frontier histograms (feature-parallel: on the workers) are rebuilt by
    replaying the fit's steps on the replacement worker."""
    from shardlearn.runtime import FaultSpec
    from shardlearn.testing import inject_faults

    ds = _datasets()[0]

    def fit():
        return GradientBoostingClassifier(n_estimators=3, max_leaves=8, max_depth=None,
                                          min_samples_leaf=5, random_state=0,
                                          parallel=parallel).fit(ds)

    with session("local", n_workers=3):
        ref = fit()
        with inject_faults(FaultSpec(1, "kill", step="tree_level", call=9)):
            got = fit()
    assert got.fit_report_.failures_recovered == 1
    assert_same_forest(ref.forest_, got.forest_)


# -- held histograms: across passes, within the budget ----------------------------------------
def _spy(monkeypatch, backend_cls):
    """Record (built, derived) of every evaluate call of ``backend_cls``."""
    calls = []
    orig = backend_cls.evaluate

    def evaluate(self, table, built, derived, *args, **kw):
        calls.append((list(built), list(derived)))
        return orig(self, table, built, derived, *args, **kw)

    monkeypatch.setattr(backend_cls, "evaluate", evaluate)
    return calls


@pytest.mark.usefixtures("local_two_workers")
@pytest.mark.parametrize("parallel", ["data", "feature"])
def test_held_histograms_span_passes_and_respect_the_budget(monkeypatch, parallel):
    X, y, sw, _ = make_integer_tree_data(1, n=2000)
    ds = Dataset.from_arrays(X, y, n_shards=3)
    backend = G.DataParallel if parallel == "data" else G.FeatureParallel

    def fit():
        est = RandomForestRegressor(n_estimators=3, max_leaf_nodes=24, max_features=1.0,
                                    parallel=parallel, random_state=0)
        return dict(est.fit(ds).forest_)

    calls = _spy(monkeypatch, backend)
    ref = fit()
    # Every split of a node whose both children may split derives the larger child,
    # and some parents were evaluated passes before they were split.
    first_pass = {}
    old_parents = 0
    for i, (built, derived) in enumerate(calls):
        for node in built + [d[0] for d in derived]:
            first_pass[node] = i
        old_parents += sum(first_pass[p] < i - 1 for _, p, _ in derived)
    n_derived = sum(len(d) for _, d in calls)
    assert n_derived > 0 and old_parents > 0
    node_bytes = X.shape[1] * 256 * 4 * 8      # an upper bound (bins <= 256, 4 channels)
    for budget in (4 * node_bytes, 1):          # a few held; none (one node per pass)
        calls.clear()
        monkeypatch.setattr(G, "HIST_BUDGET_BYTES", budget)
        got = fit()
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        assert sum(len(d) for _, d in calls) < n_derived
