"""Categorical features in the histogram-tree family: native set splits, against
brute force and scikit-learn's HistGradientBoosting, in both parallel modes, on
both engines, through save/load and XGBoost export, and bad declarations.

Most tests run on the in-process engine with 2 workers; the engine/worker-count
identity test uses the shared Ray cluster.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn import ensemble as ske
from sklearn.metrics import roc_auc_score

import shardlearn
from shardlearn.algorithms.tree.binning import bin_matrix, feature_summaries, merge_summaries
from shardlearn.data import Dataset
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.runtime import steps_started
from shardlearn.testing import assert_same_forest, session
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

POSITIVE = [0, 3, 5, 8]




def _sets(forest):
    """Left category sets of the categorical split nodes, in node order."""
    size = forest["cat_size"]
    start = np.concatenate([[0], np.cumsum(size)])
    return {int(k): forest["cat_values"][start[k]:start[k + 1]].tolist()
            for k in np.flatnonzero(size)}


def _non_monotone(n=3000, n_cat=12, seed=0, nan_frac=0.0, nan_label=1):
    """Category codes 0..n_cat-1; y = 1 exactly for the codes in POSITIVE."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, n_cat, n).astype(float)
    y = np.isin(c, POSITIVE).astype(int)
    if nan_frac:
        m = rng.random(n) < nan_frac
        c[m] = np.nan
        y[m] = nan_label
    return np.column_stack([c, rng.normal(size=n)]), y


def _mixed(n, seed, regression=False):
    """Two categorical columns with random (non-monotone) effects, NaN in one, and
    three numeric columns."""
    rng = np.random.default_rng(seed)
    ea = np.random.default_rng(100).normal(size=40) * 1.5
    eb = np.random.default_rng(101).normal(size=10)
    X = np.column_stack([rng.integers(0, 40, n), rng.integers(0, 10, n),
                         rng.normal(size=(n, 3))]).astype(float)
    X[rng.random(n) < 0.05, 1] = np.nan
    b = np.where(np.isnan(X[:, 1]), 0.7, eb[np.nan_to_num(X[:, 1]).astype(int)])
    f = ea[X[:, 0].astype(int)] + b + X[:, 2] + np.sin(2 * X[:, 3])
    if regression:
        return X, f + 0.5 * rng.normal(size=n)
    return X, (f + rng.logistic(size=n) > 0).astype(int)


# -- binning ------------------------------------------------------------------------------
def test_categorical_bins_are_exact_whatever_the_shards():
    rng = np.random.default_rng(0)
    cats = np.array([2.0, 7.0, 40.0, 41.0, 1000.0])
    x = rng.choice(cats, 5000)
    x[::11] = np.nan
    X = np.column_stack([x, rng.normal(size=5000)])
    cat = np.array([True, False])
    ref = None
    for n_shards in (1, 4, 13):
        parts = np.array_split(X, n_shards)
        # max_bins=5: one bin per category, whatever the shards.
        e = merge_summaries([feature_summaries(p, 5, categorical=cat) for p in parts], 5, cat)
        assert e.categorical.tolist() == [True, False] and e.exact[0]
        np.testing.assert_array_equal(e.categories(0), cats)
        Xb = bin_matrix(X, e)
        ok = ~np.isnan(x)
        np.testing.assert_array_equal(Xb[ok, 0], np.searchsorted(cats, x[ok]) + 1)
        assert (Xb[~ok, 0] == 0).all()
        if ref is None:
            ref = e.thresholds[0]
        np.testing.assert_array_equal(e.thresholds[0], ref)
    # A shard with too many categories, or a bad value, gives a clear error at the merge.
    with pytest.raises(ValueError, match="more than max_bins=4"):
        merge_summaries([feature_summaries(p, 4, categorical=cat) for p in parts], 4, cat)
    bad = X.copy()
    bad[17, 0] = -3.0
    with pytest.raises(ValueError, match="feature 0 has value -3.0 at row 17 of shard 0"):
        merge_summaries([feature_summaries(bad, 5, categorical=cat)], 5, cat)


# -- split search -----------------------------------------------------------------------
def test_depth_one_tree_separates_a_non_monotone_category(local_two_workers):
    X, y = _non_monotone()
    t = DecisionTreeClassifier(max_depth=1, categorical_features=[0]).fit(X, y)
    assert t.score(X, y) == 1.0
    assert t.is_categorical_.tolist() == [True, False]
    f = t.forest_
    assert f["feature"][0] == 0 and np.isnan(f["threshold"][0]) and f["missing_left"][0] == 0
    # The smaller side (no NaN in training: missing goes to the larger child) is the set.
    assert _sets(f) == {0: [float(c) for c in POSITIVE]}
    numeric = DecisionTreeClassifier(max_depth=1).fit(X, y)
    assert numeric.score(X, y) < 0.8
    # A category code shuffle changes nothing for the categorical tree.
    perm = np.random.default_rng(1).permutation(12).astype(float)
    Xp = X.copy()
    Xp[:, 0] = perm[X[:, 0].astype(int)]
    tp = DecisionTreeClassifier(max_depth=1, categorical_features=[True, False]).fit(Xp, y)
    assert tp.score(Xp, y) == 1.0
    assert _sets(tp.forest_) == {0: sorted(perm[POSITIVE].tolist())}


def _best_partition_gain(x, y, w, kind):
    """Brute force over every split of the categories into two non-empty sets."""
    cats = np.unique(x)

    def score(m):
        if kind == "mse":
            return (w[m] * y[m]).sum() ** 2 / w[m].sum()
        W = w[m].sum()
        return sum((w[m] * (y[m] == k)).sum() ** 2 for k in (0, 1)) / W

    best = -np.inf
    for r in range(1, len(cats)):
        for sub in itertools.combinations(cats[1:], r - 1):
            left = np.isin(x, (cats[0],) + sub)
            if left.all():
                continue
            best = max(best, score(left) + score(~left) - score(np.ones_like(left)))
    return best


@pytest.mark.parametrize("kind", ["mse", "gini"])
def test_prefix_scan_finds_the_best_of_all_partitions(kind, local_two_workers):
    """Fisher/Breiman: for squared error and two-class Gini the best prefix of the
    ordered categories is the best of all 2^(m-1) partitions."""
    rng = np.random.default_rng(3)
    n, m = 1500, 8
    x = rng.integers(0, m, n).astype(float)
    w = rng.uniform(0.5, 2.0, n)
    eff = rng.normal(size=m)
    if kind == "mse":
        y = eff[x.astype(int)] + rng.normal(size=n)
        est = DecisionTreeRegressor(max_depth=1, categorical_features=[0])
    else:
        y = (eff[x.astype(int)] + rng.normal(size=n) > 0).astype(int)
        est = DecisionTreeClassifier(max_depth=1, categorical_features=[0])
    est.fit(x[:, None], y, sample_weight=w)
    ref = _best_partition_gain(x, y, w, kind)
    np.testing.assert_allclose(est.forest_["gain"][0], ref, rtol=1e-9)


def test_multiclass_tree_and_forest_use_categories(local_two_workers):
    rng = np.random.default_rng(4)
    n = 4000
    c = rng.integers(0, 15, n).astype(float)
    cls = np.random.default_rng(9).integers(0, 3, 15)      # each category's class
    y = np.where(rng.random(n) < 0.9, cls[c.astype(int)], rng.integers(0, 3, n))
    X = np.column_stack([c, rng.normal(size=(n, 3))])
    t = DecisionTreeClassifier(max_depth=2, min_samples_leaf=5, categorical_features=[0]).fit(X, y)
    numeric = DecisionTreeClassifier(max_depth=2, min_samples_leaf=5).fit(X, y)
    assert t.score(X, y) > 0.9 > numeric.score(X, y)
    # min_samples_leaf holds for categorical splits too.
    leaves = t.forest_["feature"] < 0
    assert t.forest_["n_samples"][leaves].min() >= 5
    rf = RandomForestClassifier(n_estimators=8, max_depth=4, max_features=2, random_state=0,
                                categorical_features=[0]).fit(X, y)
    assert rf.score(X, y) > 0.9
    assert np.argmax(rf.feature_importances_) == 0
    np.testing.assert_allclose(rf.feature_importances_.sum(), 1.0)
    # apply() and predict agree through categorical nodes.
    leaf = t.apply(X)
    np.testing.assert_array_equal(t.forest_["value"][leaf].argmax(1), t.predict(X))


# -- against scikit-learn's HistGradientBoosting ------------------------------------------
HGB_SETTINGS = dict(max_iter=60, max_depth=4, max_leaf_nodes=None, min_samples_leaf=20,
                    l2_regularization=0.0, learning_rate=0.1, max_bins=255,
                    early_stopping=False, categorical_features=[0, 1])
OUR_SETTINGS = dict(n_estimators=60, max_depth=4, min_samples_leaf=20, reg_lambda=0.0,
                    learning_rate=0.1, max_bins=255, random_state=0)


def test_boosting_with_categories_matches_hist_gradient_boosting(local_two_workers):
    """Same settings (60 rounds, depth 4, min_samples_leaf 20, no L2, learning rate 0.1,
    255 bins): AUC / R^2 within 0.005 of HGB's; undeclared, the codes as numbers do worse."""
    X, y = _mixed(8000, 0)
    Xt, yt = _mixed(6000, 1)
    ours = GradientBoostingClassifier(categorical_features=[0, 1], **OUR_SETTINGS).fit(X, y)
    plain = GradientBoostingClassifier(**OUR_SETTINGS).fit(X, y)
    hgb = ske.HistGradientBoostingClassifier(**HGB_SETTINGS).fit(X, y)
    auc, auc_plain, auc_hgb = (roc_auc_score(yt, m.predict_proba(Xt)[:, 1])
                               for m in (ours, plain, hgb))
    assert abs(auc - auc_hgb) <= 0.005
    assert auc > auc_plain + 0.01
    assert ours.forest_["cat_size"].any()
    leaves = ours.forest_["feature"] < 0
    assert ours.forest_["n_samples"][leaves].min() >= 20      # min_samples_leaf holds
    stages = list(ours.staged_predict_proba(Xt))
    np.testing.assert_allclose(stages[-1], ours.predict_proba(Xt), rtol=1e-12)
    X, y = _mixed(8000, 0, regression=True)
    Xt, yt = _mixed(6000, 1, regression=True)
    reg = GradientBoostingRegressor(categorical_features=[0, 1], **OUR_SETTINGS).fit(X, y)
    ref = ske.HistGradientBoostingRegressor(**HGB_SETTINGS).fit(X, y)
    plain = GradientBoostingRegressor(**OUR_SETTINGS).fit(X, y)
    r2 = reg.score(Xt, yt)
    assert abs(r2 - ref.score(Xt, yt)) <= 0.005
    assert r2 > plain.score(Xt, yt) + 0.05


# -- missing values, unseen categories, saving, export ------------------------------------
@pytest.mark.parametrize("nan_label", [0, 1])
def test_missing_and_unseen_categories_go_to_the_missing_side(nan_label, local_two_workers):
    X, y = _non_monotone(nan_frac=0.1, nan_label=nan_label)
    t = DecisionTreeClassifier(max_depth=1, categorical_features=[0]).fit(X, y)
    assert t.score(X, y) == 1.0
    # The stored set is the side without the missing values; NaN goes right.
    negative = [float(c) for c in range(12) if c not in POSITIVE]
    assert _sets(t.forest_) == {0: negative if nan_label == 1 else [float(c) for c in POSITIVE]}
    odd = np.array([[np.nan, 0.0], [12.0, 0.0], [500.0, 0.0], [-1.0, 0.0], [2.5, 0.0]])
    assert (t.predict(odd) == nan_label).all()
    g = GradientBoostingClassifier(n_estimators=10, max_depth=2,
                                   categorical_features=[0]).fit(X, y)
    assert g.score(X, y) == 1.0 and (g.predict(odd) == nan_label).all()


def test_save_load_and_sparse_and_dataframe_input(local_two_workers, tmp_path):
    pd = pytest.importorskip("pandas")
    import scipy.sparse as sp

    X, y = _mixed(1500, 2)
    for est in (DecisionTreeClassifier(max_depth=5, categorical_features=[0, 1]),
                RandomForestClassifier(n_estimators=4, random_state=0, categorical_features=[0, 1]),
                GradientBoostingClassifier(n_estimators=5, categorical_features=[0, 1])):
        est.fit(X, y)
        est.save(tmp_path / type(est).__name__)
        back = shardlearn.load(tmp_path / type(est).__name__)
        np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
        np.testing.assert_array_equal(back.is_categorical_, est.is_categorical_)
        assert_same_forest(back.forest_, est.forest_)
    # Feature names and CSR input give the same model as column indices on dense input.
    df = pd.DataFrame(X, columns=["a", "b", "u", "v", "w"])
    ref = GradientBoostingRegressor(n_estimators=4, categorical_features=[0, 1]).fit(X, y)
    by_name = GradientBoostingRegressor(n_estimators=4, categorical_features=["a", "b"]).fit(df, y)
    assert_same_forest(ref.forest_, by_name.forest_)
    Xs = np.nan_to_num(X, nan=0.0)
    dense = DecisionTreeRegressor(max_depth=4, categorical_features=[0, 1]).fit(Xs, y)
    sparse = DecisionTreeRegressor(max_depth=4, categorical_features=[0, 1]).fit(
        sp.csr_matrix(Xs), y)
    assert_same_forest(dense.forest_, sparse.forest_)
    np.testing.assert_array_equal(sparse.predict(sp.csr_matrix(Xs)), dense.predict(Xs))


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_xgboost_export_with_categorical_splits_predicts_the_same(kind, local_two_workers, tmp_path):
    xgb = pytest.importorskip("xgboost")
    X, y = _mixed(2000, 3, regression=kind == "regression")
    if kind == "multiclass":
        y = np.digitize(np.nan_to_num(X[:, 2]) + 0.8 * y, [0.0, 1.0])
        est = GradientBoostingClassifier(n_estimators=8, max_depth=4, categorical_features=[0, 1])
    elif kind == "binary":
        est = GradientBoostingClassifier(n_estimators=8, max_depth=4, categorical_features=[0, 1])
    else:
        est = GradientBoostingRegressor(n_estimators=8, max_depth=4, categorical_features=[0, 1])
    est.fit(X, y)
    assert est.forest_["cat_size"].any()
    path = tmp_path / "model.json"
    est.export_xgboost(path)
    booster = xgb.Booster(model_file=str(path))
    Xt, _ = _mixed(3000, 4)
    rng = np.random.default_rng(5)
    # Unseen categories (40..60), negative codes and NaN in the categorical columns.
    unseen = rng.random(3000) < 0.1
    Xt[unseen, 0] = rng.integers(40, 60, unseen.sum())
    Xt[rng.random(3000) < 0.05, 0] = -2.0
    Xt[rng.random(3000) < 0.05, 0] = np.nan
    p = booster.predict(xgb.DMatrix(Xt, missing=np.nan))
    if kind == "regression":
        np.testing.assert_allclose(p, est.predict(Xt), rtol=1e-5, atol=1e-5)
    else:
        ours = est.predict_proba(Xt)
        np.testing.assert_allclose(p, ours if kind == "multiclass" else ours[:, 1],
                                   rtol=1e-5, atol=1e-6)


def test_large_category_codes_predict_but_do_not_export(local_two_workers):
    X, y = _non_monotone()
    X[:, 0] = X[:, 0] * 1e8            # codes 0, 1e8, 2e8, ...: fine here
    g = GradientBoostingClassifier(n_estimators=3, max_depth=2, categorical_features=[0]).fit(X, y)
    assert g.score(X, y) == 1.0
    assert set(_sets(g.forest_)[0]) <= set((np.arange(12) * 1e8).tolist())
    with pytest.raises(ValueError, match="XGBoost only takes integer categories below 16777216"):
        g.export_xgboost()


# -- parallel modes, engines and worker counts -------------------------------------------
def _makers():
    return {
        "tree": lambda: DecisionTreeClassifier(max_depth=6, max_features=3, random_state=0,
                                               categorical_features=[0, 1]),
        "rf": lambda: RandomForestRegressor(n_estimators=4, max_depth=5, oob_score=True,
                                            random_state=0, categorical_features=[0, 1]),
        "gbt": lambda: GradientBoostingClassifier(n_estimators=4, max_depth=3, min_samples_leaf=5,
                                                  subsample=0.8, colsample=0.8, random_state=0,
                                                  categorical_features=[0, 1]),
        "gbt_multi": lambda: GradientBoostingClassifier(n_estimators=3, max_depth=3,
                                                        categorical_features=[0, 1]),
    }


def _fit_all(ds, ds_multi, parallel="data"):
    out = {}
    for name, make in _makers().items():
        est = make().set_params(parallel=parallel)
        est.fit(ds_multi if name == "gbt_multi" else ds)
        got = dict(est.forest_)
        got["__pred"] = est.predict(ds.to_arrays()[0])
        out[name] = got
    return out


def _small():
    X, y = _mixed(600, 6)
    y_multi = np.digitize(np.nan_to_num(X[:, 2]) + y, [0.0, 1.0])
    return (Dataset.from_arrays(X, y, n_shards=3, allow_nan=True),
            Dataset.from_arrays(X, y_multi, n_shards=3, allow_nan=True))


def test_data_and_feature_parallel_give_identical_forests(local_two_workers):
    ds, ds_multi = _small()
    a = _fit_all(ds, ds_multi, "data")
    b = _fit_all(ds, ds_multi, "feature")
    for name in a:
        assert a[name]["cat_size"].any(), name
        assert_same_forest(a[name], b[name])


def test_levels_in_several_passes_carry_the_category_sets(local_two_workers, monkeypatch):
    """Over the histogram budget a level is searched in several passes; the merged
    best splits keep their left sets (same model as in one pass)."""
    from shardlearn.algorithms.tree import grower

    ds, _ = _small()
    make = _makers()["gbt"]
    ref = make().fit(ds)
    monkeypatch.setattr(grower, "HIST_BUDGET_BYTES", 3 * 5 * 256 * 3 * 8)
    small = make().fit(ds)
    steps = {s.name: s.calls for s in small.fit_report_.steps}
    assert steps["tree_level"] > {s.name: s.calls for s in ref.fit_report_.steps}["tree_level"]
    assert ref.forest_["cat_size"].any()
    for k in ("feature", "cat_size", "cat_values", "threshold", "left", "right"):
        np.testing.assert_array_equal(small.forest_[k], ref.forest_[k], err_msg=k)
    np.testing.assert_allclose(small.forest_["value"], ref.forest_["value"], rtol=1e-9, atol=1e-12)


_REFERENCE: dict = {}


@pytest.fixture(params=[("local", 1), ("local", 3), ("ray", 1), ("ray", 3)],
                ids=lambda p: f"{p[0]}-{p[1]}w")
def engine(request):
    kind, n = request.param
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    with session(kind, n_workers=n) as s:
        yield s


@pytest.mark.timeout(300)
def test_bit_identical_on_engines_and_worker_counts(engine):
    ds, ds_multi = _small()
    for parallel in ("data", "feature"):
        got = _fit_all(ds, ds_multi, parallel)
        for name, forest in got.items():
            ref = _REFERENCE.setdefault(name, forest)
            assert_same_forest(forest, ref)


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("case", [
    "index_out_of_range", "negative_index", "mask_length", "duplicate", "float_indices", "two_d",
    "scalar", "names_without_frame", "negative_value", "fractional_value", "inf_value",
    "too_many_categories", "sparse_bad_value",
])
def test_bad_categorical_input_fails_before_work(case, local_two_workers):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6, 200), rng.normal(size=(200, 2))]).astype(float)
    X[3, 0] = np.nan
    y = (X[:, 1] > 0).astype(int)
    cf, Xfit, max_bins = [0], X, 255
    if case == "index_out_of_range":
        cf, match = [3], "index 3, out of range: X has 3 features"
    elif case == "negative_index":
        cf, match = [-1], "index -1, out of range"
    elif case == "mask_length":
        cf, match = [True, False], "boolean mask of length 2, but X has 3 features"
    elif case == "duplicate":
        cf, match = [0, 2, 0], "lists column 0 more than once"
    elif case == "float_indices":
        cf, match = [0.0], "integer column indices"
    elif case == "two_d":
        cf, match = [[0]], "1-D"
    elif case == "scalar":
        cf, match = 0, "categorical_features"
    elif case == "names_without_frame":
        cf, match = ["a"], "no feature names"
    elif case == "negative_value":
        X[57, 0] = -1.0
        match = r"column 0 of X has value -1.0 at row 57 .*OrdinalEncoder"
    elif case == "fractional_value":
        X[9, 0] = 2.5
        match = r"value 2.5 at row 9 .*non-negative integer"
    elif case == "inf_value":
        X[11, 0] = np.inf
        match = "infinity"
    elif case == "too_many_categories":
        X[:, 0] = np.arange(200) % 20
        max_bins, match = 16, "column 0 of X has 20 categories, more than max_bins=16"
    else:
        X[:, 0] = np.nan_to_num(X[:, 0])
        X[21, 0] = 1.5
        Xfit, match = sp.csr_matrix(X), "value 1.5 at row 21"
    X_before, y_before = X.copy(), y.copy()
    before = steps_started()
    for est in (GradientBoostingClassifier(n_estimators=2), DecisionTreeRegressor(),
                RandomForestClassifier(n_estimators=2)):
        est.set_params(categorical_features=cf, max_bins=max_bins)
        with pytest.raises(ValueError, match=match):
            est.fit(Xfit, y)
    assert steps_started() == before
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


def test_bad_names_and_file_data_errors(local_two_workers, tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6, 300), rng.normal(size=300)]).astype(float)
    y = (X[:, 1] > 0).astype(int)
    df = pd.DataFrame(X, columns=["color", "x"])
    before = steps_started()
    with pytest.raises(ValueError, match=r"names \['colour'\] that are not columns"):
        DecisionTreeClassifier(categorical_features=["colour"]).fit(df, y)
    assert steps_started() == before
    # Data read from files: the workers check the values when they summarise them.
    X[150:, 0] = X[150:, 0] - 10.0
    path = tmp_path / "d.csv"
    pd.DataFrame({"color": X[:, 0], "x": X[:, 1], "y": y}).to_csv(path, index=False)
    ds = Dataset.from_files(str(path), label="y", shard_rows=100)
    with pytest.raises(ValueError, match=r"Categorical feature 0 has value -\d+\.0 at row \d+ of "
                                         r"shard 1.*OrdinalEncoder"):
        DecisionTreeClassifier(categorical_features=["color"]).fit(ds)
