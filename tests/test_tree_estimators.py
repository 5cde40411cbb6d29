"""Distributed trees, forests and boosting against scikit-learn / XGBoost, NaN handling,
data- vs feature-parallel identity, saving, staged prediction, early stopping, bad input.

Most tests run on the in-process engine with 2 workers (conftest shuts sessions
down after each test); engine/worker-count identity is in test_tree_determinism.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import ensemble as ske
from sklearn import tree as skt
from sklearn.datasets import make_classification, make_regression
from sklearn.metrics import roc_auc_score

import shardlearn
from shardlearn.cli.demo import report_line
from shardlearn.data import Dataset
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.runtime import steps_started
from shardlearn.testing import assert_same_forest, make_integer_tree_data
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("local_two_workers")]


# -- single trees equal scikit-learn's -----------------------------------------------------
def test_deep_regression_tree_equals_sklearn():
    # (min_samples_leaf=5: in nodes of a handful of rows two features can cut the
    # same rows; scikit-learn then picks by a random feature order, we by index.)
    X, y, sw, Xt = make_integer_tree_data(0)
    ours = DecisionTreeRegressor(min_samples_leaf=5).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeRegressor(min_samples_leaf=5, random_state=0).fit(X, y, sample_weight=sw)
    assert ours.get_depth() == ref.get_depth() and ours.get_depth() > 10
    assert ours.get_n_leaves() == ref.get_n_leaves()
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-10)


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_deep_classification_tree_equals_sklearn(criterion):
    # (scikit-learn also splits some pure nodes whose impurity rounds to ~5e-16 >
    # eps; those splits do not change predictions, so leaf counts may differ.)
    X, y, sw, Xt = make_integer_tree_data(0, classes=True)
    ours = DecisionTreeClassifier(criterion=criterion, min_samples_leaf=5).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeClassifier(criterion=criterion, min_samples_leaf=5,
                                     random_state=0).fit(X, y, sample_weight=sw)
    assert ours.get_n_leaves() > 200
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-9)


def test_tree_limits_are_respected():
    X, y, sw, _ = make_integer_tree_data(1)
    t = DecisionTreeRegressor(max_depth=4, min_samples_leaf=30).fit(X, y)
    f = t.forest_
    leaves = f["feature"] < 0
    assert t.get_depth() == 4
    assert f["n_samples"][leaves].min() >= 30
    t = DecisionTreeRegressor(max_leaf_nodes=7).fit(X, y)
    assert t.get_n_leaves() == 7
    t0 = DecisionTreeRegressor(max_depth=6).fit(X, y)
    t1 = DecisionTreeRegressor(max_depth=6, min_impurity_decrease=0.01).fit(X, y)
    assert t1.get_n_leaves() < t0.get_n_leaves()
    ref = skt.DecisionTreeRegressor(max_depth=6, min_impurity_decrease=0.01).fit(X, y)
    np.testing.assert_allclose(t1.predict(X), ref.predict(X), rtol=1e-12)


# -- boosting against scikit-learn and XGBoost ---------------------------------------------
def _binary(n_train=8000, n_test=6000, seed=0):
    X, y = make_classification(n_train + n_test, 12, n_informative=7, flip_y=0.05,
                               random_state=seed)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@pytest.mark.slow
def test_binary_boosting_auc_matches_hist_gradient_boosting_and_xgboost():
    X, y, Xt, yt = _binary()
    ours = GradientBoostingClassifier(n_estimators=60, max_depth=4, min_samples_leaf=20,
                                      reg_lambda=0.0, random_state=0).fit(X, y)
    hgb = ske.HistGradientBoostingClassifier(max_iter=60, max_depth=4, max_leaf_nodes=None,
                                             min_samples_leaf=20, l2_regularization=0.0,
                                             early_stopping=False).fit(X, y)
    auc = roc_auc_score(yt, ours.predict_proba(Xt)[:, 1])
    assert auc > 0.9
    assert abs(auc - roc_auc_score(yt, hgb.predict_proba(Xt)[:, 1])) <= 0.003
    xgb = pytest.importorskip("xgboost")
    ours = GradientBoostingClassifier(n_estimators=60, max_depth=4, min_samples_leaf=1,
                                      min_child_weight=1.0, reg_lambda=1.0, random_state=0).fit(X, y)
    ref = xgb.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.1, tree_method="hist",
                            max_bin=256, reg_lambda=1.0, min_child_weight=1.0, n_jobs=1).fit(X, y)
    auc = roc_auc_score(yt, ours.predict_proba(Xt)[:, 1])
    assert abs(auc - roc_auc_score(yt, ref.predict_proba(Xt)[:, 1])) <= 0.003


def test_regression_boosting_r2_matches_hist_gradient_boosting():
    X, y = make_regression(7000, 8, n_informative=6, noise=10.0, random_state=0)
    y = y + 20 * np.sin(X[:, 0])
    ours = GradientBoostingRegressor(n_estimators=60, max_depth=4).fit(X[:4000], y[:4000])
    ref = ske.HistGradientBoostingRegressor(max_iter=60, max_depth=4, max_leaf_nodes=None,
                                            early_stopping=False).fit(X[:4000], y[:4000])
    r2 = ours.score(X[4000:], y[4000:])
    assert r2 > 0.8
    assert abs(r2 - ref.score(X[4000:], y[4000:])) <= 0.005


@pytest.mark.slow
def test_multiclass_boosting_accuracy_matches_hist_gradient_boosting():
    X, y = make_classification(9000, 10, n_informative=7, n_classes=4, n_clusters_per_class=1,
                               random_state=3)
    ours = GradientBoostingClassifier(n_estimators=40, max_depth=4, random_state=0).fit(X[:5000], y[:5000])
    ref = ske.HistGradientBoostingClassifier(max_iter=40, max_depth=4, max_leaf_nodes=None,
                                             early_stopping=False).fit(X[:5000], y[:5000])
    assert ours.n_trees_per_iteration_ == 4 and ours.forest_["offsets"].size == 161
    acc = ours.score(X[5000:], y[5000:])
    assert acc > 0.75
    assert abs(acc - ref.score(X[5000:], y[5000:])) <= 0.005


def test_random_forest_close_to_sklearn_with_oob():
    X, y, Xt, yt = _binary(4000, 4000, seed=1)
    ours = RandomForestClassifier(n_estimators=30, max_depth=10, oob_score=True,
                                  random_state=0).fit(X, y)
    ref = ske.RandomForestClassifier(n_estimators=30, max_depth=10, oob_score=True,
                                     random_state=0).fit(X, y)
    auc = roc_auc_score(yt, ours.predict_proba(Xt)[:, 1])
    assert abs(auc - roc_auc_score(yt, ref.predict_proba(Xt)[:, 1])) <= 0.01
    assert abs(ours.oob_score_ - ref.oob_score_) <= 0.02
    # The OOB estimate tracks held-out accuracy.
    assert abs(ours.oob_score_ - ours.score(Xt, yt)) <= 0.03
    Xr, yr = make_regression(3000, 6, noise=5.0, random_state=0)
    reg = RandomForestRegressor(n_estimators=20, oob_score=True, random_state=0).fit(Xr[:2000], yr[:2000])
    ref = ske.RandomForestRegressor(n_estimators=20, random_state=0).fit(Xr[:2000], yr[:2000])
    r2 = reg.score(Xr[2000:], yr[2000:])
    assert abs(r2 - ref.score(Xr[2000:], yr[2000:])) <= 0.03
    assert abs(reg.oob_score_ - r2) <= 0.05
    assert np.isclose(reg.feature_importances_.sum(), 1.0)


# -- data- and feature-parallel give identical models --------------------------------------
def _with_nans(X, frac=0.1, seed=0):
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < frac] = np.nan
    return X


@pytest.mark.parametrize("make", [
    lambda: DecisionTreeClassifier(max_depth=8),
    lambda: DecisionTreeRegressor(min_samples_leaf=3),
    lambda: GradientBoostingClassifier(n_estimators=8, max_depth=3, subsample=0.7, colsample=0.7,
                                       random_state=1),
    lambda: GradientBoostingRegressor(n_estimators=8, max_leaves=6, reg_lambda=1.0, random_state=1),
    lambda: RandomForestClassifier(n_estimators=6, max_depth=6, oob_score=True, random_state=1),
], ids=["tree-clf", "tree-reg", "gbt-clf", "gbt-reg", "rf-clf"])
def test_data_and_feature_parallel_identical(make):
    X, y = make_classification(1500, 11, n_informative=6, n_classes=3, random_state=0)
    X = _with_nans(X)
    if "Regressor" in type(make()).__name__:
        y = np.nan_to_num(X[:, 1]) + y
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    a = make().fit(ds)
    b = make().set_params(parallel="feature").fit(ds)
    assert_same_forest(a.forest_, b.forest_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert b.fit_report_.extra["parallel"] == "feature"
    if hasattr(a, "oob_score_"):
        assert a.oob_score_ == b.oob_score_


# -- missing values --------------------------------------------------------------------------
@pytest.mark.parametrize("nan_label", [0, 1])
def test_nan_rows_go_to_the_learned_side(nan_label):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 2000)
    y = (x > 0.5).astype(int)
    x[:300] = np.nan
    y[:300] = nan_label
    X = np.column_stack([x, rng.normal(size=2000)])
    t = DecisionTreeClassifier(max_depth=1).fit(X, y)
    f = t.forest_
    assert f["feature"][0] == 0 and 0.45 < f["threshold"][0] < 0.55
    # Missing values follow the rows they resemble: left (y=0) or right (y=1).
    assert bool(f["missing_left"][0]) == (nan_label == 0)
    assert (t.predict(np.array([[np.nan, 0.0]])) == nan_label).all()
    g = GradientBoostingClassifier(n_estimators=20, max_depth=2).fit(X, y)
    assert (g.predict(X[:300]) == nan_label).all()
    assert g.score(X, y) > 0.99


def test_model_without_nans_in_training_predicts_nan_rows():
    X, y = make_classification(1000, 5, random_state=0)
    g = GradientBoostingClassifier(n_estimators=10, max_depth=3).fit(X, y)
    Xn = X.copy()
    Xn[::3, 2] = np.nan
    p = g.predict_proba(Xn)
    assert np.isfinite(p).all()
    # NaN goes to the child with more training rows (no missing seen in training).
    f = g.forest_
    split = f["feature"] >= 0
    n = f["n_samples"]
    offs = np.repeat(f["offsets"][:-1], np.diff(f["offsets"]))
    left_n = n[offs + f["left"]][split]
    right_n = n[offs + f["right"]][split]
    np.testing.assert_array_equal(f["missing_left"][split].astype(bool), left_n >= right_n)


# -- driver-side prediction, saving, staged prediction, early stopping ----------------------
def test_save_load_round_trip(tmp_path):
    X, y = make_classification(800, 6, n_classes=3, n_informative=4, random_state=0)
    X = _with_nans(X, 0.05)
    for est in (DecisionTreeClassifier(max_depth=5), RandomForestClassifier(n_estimators=5,
                random_state=0, oob_score=True), GradientBoostingClassifier(n_estimators=5)):
        est.fit(X, y)
        est.save(tmp_path / type(est).__name__)
        back = shardlearn.load(tmp_path / type(est).__name__)
        assert type(back) is type(est)
        np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
        np.testing.assert_array_equal(back.feature_importances_, est.feature_importances_)
    shardlearn.shutdown()   # prediction needs no cluster
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert shardlearn.runtime.current_session() is None


def test_staged_predict_and_losses():
    X, y = make_classification(1500, 6, random_state=0)
    g = GradientBoostingClassifier(n_estimators=15, max_depth=3).fit(X, y)
    stages = list(g.staged_predict_proba(X))
    assert len(stages) == g.n_iter_ == 15
    np.testing.assert_allclose(stages[-1], g.predict_proba(X), rtol=1e-12)
    assert np.all(np.diff(g.train_score_) < 0)
    # The workers' training loss equals the driver's loss of the staged predictions.
    p = stages[4][:, 1]
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(g.train_score_[5], loss, rtol=1e-9)
    assert list(g.staged_predict(X))[-1].tolist() == g.predict(X).tolist()
    r = GradientBoostingRegressor(n_estimators=5).fit(X, y.astype(float))
    np.testing.assert_allclose(list(r.staged_predict(X))[-1], r.predict(X))


def test_early_stopping_on_held_out_rows_and_on_validation_set():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    y = (X[:, 0] + rng.normal(scale=2.0, size=3000) > 0).astype(int)
    g = GradientBoostingClassifier(n_estimators=300, max_depth=5, learning_rate=0.3,
                                   early_stopping=True, n_iter_no_change=5,
                                   random_state=0).fit(X, y)
    assert g.n_iter_ < 100
    v = g.validation_score_
    assert len(v) == g.n_iter_ + 1
    assert v[-6] <= v[-5:].min() + 1e-7    # no improvement in the last 5 rounds
    assert g.fit_report_.converged is True and "(converged)" in report_line("g", g.fit_report_)
    unmet = GradientBoostingClassifier(n_estimators=3, early_stopping=True, n_iter_no_change=5,
                                       random_state=0).fit(X, y)
    assert unmet.n_iter_ == 3 and unmet.fit_report_.converged is False
    g2 = GradientBoostingClassifier(n_estimators=300, max_depth=5, learning_rate=0.3,
                                    early_stopping=True, n_iter_no_change=5).fit(
        X[:2000], y[:2000], X_val=X[2000:], y_val=y[2000:])
    assert g2.n_iter_ < 100
    p = g2.predict_proba(X[2000:])[:, 1]
    yy = y[2000:]
    np.testing.assert_allclose(g2.validation_score_[-1],
                               -np.mean(yy * np.log(p) + (1 - yy) * np.log(1 - p)), rtol=1e-9)


def test_fit_report_and_subsample_changes_model():
    X, y = make_classification(1200, 6, random_state=0)
    g = GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0).fit(X, y)
    rep = g.fit_report_
    assert rep.n_iter == 5 and rep.n_workers == 2
    # No stopping criterion to meet: neither converged nor not.
    assert rep.converged is None and "converged" not in report_line("g", rep)
    assert "converged" not in rep.summary()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    assert forest.fit_report_.converged is None
    assert {"bin_summaries", "bin_and_init", "tree_level"} <= {s.name for s in rep.steps}
    s = GradientBoostingClassifier(n_estimators=5, max_depth=3, subsample=0.5,
                                   random_state=0).fit(X, y)
    assert not np.array_equal(s.forest_["threshold"], g.forest_["threshold"])
    s2 = GradientBoostingClassifier(n_estimators=5, max_depth=3, subsample=0.5,
                                    random_state=0).fit(X, y)
    assert_same_forest(s.forest_, s2.forest_)


# -- one class: trees and forests learn it (as scikit-learn's do), boosting refuses ------------
@pytest.mark.parametrize("make", [
    lambda: DecisionTreeClassifier(max_features=1, class_weight="balanced"),
    lambda: RandomForestClassifier(n_estimators=20, oob_score=True, random_state=0),
    lambda: RandomForestClassifier(n_estimators=4, parallel="feature", random_state=0),
], ids=["tree", "forest_oob", "forest_feature_parallel"])
def test_single_class_is_learned_like_sklearn(make, tmp_path):
    X, _ = make_classification(300, 5, random_state=0)
    X[::9, 2] = np.nan
    y = np.array(["only"] * 300)
    ours = make().fit(X, y)
    ref_cls = skt.DecisionTreeClassifier if isinstance(ours, DecisionTreeClassifier) \
        else ske.RandomForestClassifier
    ref = ref_cls(random_state=0).fit(np.nan_to_num(X), y)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(np.nan_to_num(X)))
    np.testing.assert_array_equal(ours.predict_proba(X), np.ones((300, 1)))
    np.testing.assert_array_equal(ours.feature_importances_, np.zeros(5))
    assert ours.score(X, y) == 1.0
    if getattr(ours, "oob_score", False):
        assert ours.oob_score_ == 1.0
    path = tmp_path / "one_class.json"
    ours.save(path)
    np.testing.assert_array_equal(shardlearn.load(path).predict_proba(X), ours.predict_proba(X))


# -- bad input: clear errors before any worker runs -------------------------------------------
@pytest.mark.parametrize("case", ["inf", "y_none", "one_class", "str_target", "max_bins",
                                  "oob", "x_val", "unbounded", "nan_y"])
def test_bad_input_fails_before_work(case):
    X, y = make_classification(200, 4, random_state=0)
    X[5, 1] = np.nan
    X_before, y_before = X.copy(), y.copy()
    est, args, kwargs = GradientBoostingClassifier(n_estimators=3), (X, y), {}
    if case == "inf":
        X[7, 2] = np.inf
        X_before = X.copy()
        match = "infinity"
    elif case == "y_none":
        est, args, match = DecisionTreeRegressor(), (X, None), "requires y"
    elif case == "one_class":
        args, match = (X, np.zeros(200)), "only one class"
    elif case == "str_target":
        est, args, match = RandomForestRegressor(), (X, np.array(["a"] * 200)), "numeric"
    elif case == "max_bins":
        est, match = DecisionTreeClassifier(max_bins=1000), "max_bins"
    elif case == "oob":
        est, match = RandomForestClassifier(bootstrap=False, oob_score=True), "bootstrap"
    elif case == "x_val":
        kwargs, match = {"X_val": X[:, :3], "y_val": y}, "X_val has 3 features"
    elif case == "unbounded":
        est, match = GradientBoostingRegressor(max_depth=None), "max_depth"
    else:
        est, args, match = GradientBoostingRegressor(), (X, np.where(y > 0, np.nan, 1.0)), "NaN"
    before = steps_started()
    with pytest.raises(ValueError, match=match):
        est.fit(*args, **kwargs)
    assert steps_started() == before
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


# -- export to XGBoost's JSON format -------------------------------------------------------
@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_xgboost_json_export_predicts_the_same(kind, tmp_path):
    xgb = pytest.importorskip("xgboost")
    n_classes = 3 if kind == "multiclass" else 2
    X, y = make_classification(1500, 7, n_informative=5, n_classes=n_classes, random_state=0)
    X = _with_nans(X, 0.05)
    if kind == "regression":
        est = GradientBoostingRegressor(n_estimators=12, max_depth=4)
        y = y + np.nan_to_num(X[:, 0])
    else:
        est = GradientBoostingClassifier(n_estimators=12, max_depth=4)
    est.fit(X, y)
    path = tmp_path / "model.json"
    est.export_xgboost(path)
    booster = xgb.Booster(model_file=str(path))
    Xt = _with_nans(np.random.default_rng(5).normal(size=(2000, 7)) * 2, 0.1, seed=3)
    dm = xgb.DMatrix(Xt, missing=np.nan)
    if kind == "regression":
        np.testing.assert_allclose(booster.predict(dm), est.predict(Xt), rtol=1e-5, atol=1e-5)
    else:
        p = booster.predict(dm)
        ours = est.predict_proba(Xt)
        np.testing.assert_allclose(p if kind == "multiclass" else p, ours if kind == "multiclass"
                                   else ours[:, 1], rtol=1e-5, atol=1e-6)
        # The raw margins too: softmax hides a constant shift of every class's margin
        # (a base_score of 0.5 once added 0.5 to each).
        np.testing.assert_allclose(booster.predict(dm, output_margin=True),
                                   est.decision_function(Xt), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: GradientBoostingClassifier(n_estimators=4, max_depth=4, random_state=0),
    lambda: RandomForestClassifier(n_estimators=4, max_depth=5, random_state=0),
], ids=["gbt", "rf"])
@pytest.mark.parametrize("row_search_rows", [0, 16])
def test_levels_over_the_histogram_budget_run_in_several_passes(make, row_search_rows,
                                                                 monkeypatch):
    """A level whose histograms exceed the memory budget is built in several passes
    (without the subtraction trick at the next level; nodes searched by their rows go
    with the first): same splits, same bits in data- and feature-parallel modes."""
    from shardlearn.algorithms.tree import grower

    X, y = make_classification(1200, 8, n_informative=5, n_classes=3, random_state=0)
    X = _with_nans(X, 0.05)
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    ref = make().fit(ds)
    node = 8 * 256 * 4 * 8                      # bytes of one node's histogram (upper bound)
    monkeypatch.setattr(grower, "HIST_BUDGET_BYTES", 3 * node)
    monkeypatch.setattr(grower, "ROW_SEARCH_MAX_ROWS", row_search_rows)
    monkeypatch.setattr(grower, "ROW_SEARCH_MAX_ROWS_OTHER", row_search_rows)
    small = make().fit(ds)
    steps = {s.name: s.calls for s in small.fit_report_.steps}
    assert steps["tree_level"] > {s.name: s.calls for s in ref.fit_report_.steps}["tree_level"]
    np.testing.assert_array_equal(small.forest_["feature"], ref.forest_["feature"])
    np.testing.assert_array_equal(small.forest_["threshold"], ref.forest_["threshold"])
    np.testing.assert_allclose(small.forest_["value"], ref.forest_["value"], rtol=1e-9, atol=1e-12)
    feat = make().set_params(parallel="feature").fit(ds)
    assert_same_forest(small.forest_, feat.forest_)
