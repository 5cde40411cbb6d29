"""``class_weight`` of the tree classifiers: scikit-learn's semantics, exact equivalence
with the matching ``sample_weight``, per-tree ``"balanced_subsample"``, determinism,
bad input, saving.

Class weights multiply the row weights on the workers; their grids (.exact) include
them, so a class-weighted fit is the same, bit for bit, as one given the equivalent
sample weights, on any worker count and in both parallel modes.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import ensemble as ske
from sklearn import tree as skt
from sklearn.datasets import make_classification
from sklearn.metrics import balanced_accuracy_score
from sklearn.utils.class_weight import compute_sample_weight

import shardlearn
from shardlearn.data import Dataset
from shardlearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from shardlearn.runtime import steps_started
from shardlearn.testing import assert_same_forest, make_integer_tree_data, session
from shardlearn.tree import DecisionTreeClassifier

pytestmark = pytest.mark.timeout(300)

two_workers = pytest.mark.usefixtures("local_two_workers")


def _imbalanced(n=1500, n_classes=3, seed=0, nan=True):
    weights = [0.7, 0.22, 0.08] if n_classes == 3 else [0.85, 0.15]
    X, y = make_classification(n, 8, n_informative=5, n_classes=n_classes, weights=weights,
                               n_clusters_per_class=1, random_state=seed)
    if nan:
        X[np.random.default_rng(seed).random(X.shape) < 0.05] = np.nan
    return X, y


# -- (1) a single tree equals scikit-learn's ------------------------------------------------
@two_workers
@pytest.mark.parametrize("class_weight", [{0: 0.3, 1: 1.7}, "balanced"])
@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_tree_equals_sklearn_with_class_weight(class_weight, criterion):
    # Integer features: our bin edges hold every threshold scikit-learn can pick. The
    # spread sample weights rule out exact gain ties (see make_integer_tree_data); class 2 is
    # not named by the dict and keeps weight 1.
    X, y, sw, Xt = make_integer_tree_data(0, classes=True)
    ours = DecisionTreeClassifier(criterion=criterion, min_samples_leaf=5,
                                  class_weight=class_weight).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeClassifier(criterion=criterion, min_samples_leaf=5, random_state=0,
                                     class_weight=class_weight).fit(X, y, sample_weight=sw)
    plain = DecisionTreeClassifier(criterion=criterion, min_samples_leaf=5).fit(
        X, y, sample_weight=sw)
    assert ours.get_n_leaves() > 200
    assert not np.array_equal(ours.predict_proba(Xt), plain.predict_proba(Xt))
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    # Class-weighted row values are rounded onto the exact-sum grid (a step ~1e-12
    # of them): probabilities agree to far below any difference that matters.
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-9)
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-9)


# -- (2) class_weight is the equivalent sample_weight, bit for bit --------------------------
def _expanded(class_weight, y, sw=None):
    w = compute_sample_weight(class_weight, y)
    return w if sw is None else sw * w


@two_workers
@pytest.mark.parametrize("make, class_weight, labels", [
    (lambda cw: DecisionTreeClassifier(max_depth=8, class_weight=cw),
     {"a": 2.0, "c": 0.5}, np.array(["a", "b", "c"])),
    (lambda cw: DecisionTreeClassifier(max_features=3, random_state=0, class_weight=cw),
     "balanced", None),
    (lambda cw: RandomForestClassifier(n_estimators=5, max_depth=6, oob_score=True,
                                       random_state=0, class_weight=cw), "balanced", None),
    (lambda cw: GradientBoostingClassifier(n_estimators=6, max_depth=3, subsample=0.8,
                                           random_state=0, class_weight=cw),
     {0: 1.0, 1: 3.0, 2: 0.25}, None),
    (lambda cw: GradientBoostingClassifier(n_estimators=6, max_depth=3, early_stopping=True,
                                           random_state=0, class_weight=cw),
     "balanced", None),
], ids=["tree-dict-str-labels", "tree-balanced", "forest-balanced", "gbt-dict",
        "gbt-balanced-held-out"])
@pytest.mark.parametrize("with_sw", [False, True], ids=["no-sw", "sw"])
def test_class_weight_is_the_equivalent_sample_weight(make, class_weight, labels, with_sw):
    X, y = _imbalanced()
    if labels is not None:
        y = labels[y]
    sw = np.random.default_rng(1).uniform(0.5, 2.0, len(y)) if with_sw else None
    a = make(class_weight).fit(X, y, sample_weight=sw)
    b = make(None).fit(X, y, sample_weight=_expanded(class_weight, y, sw))
    assert_same_forest(a.forest_, b.forest_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    if isinstance(a, GradientBoostingClassifier):
        np.testing.assert_array_equal(a.baseline_, b.baseline_)
        np.testing.assert_array_equal(a.train_score_, b.train_score_)
        np.testing.assert_array_equal(a.validation_score_, b.validation_score_)
    if hasattr(a, "oob_score_"):
        assert a.oob_score_ == b.oob_score_


@two_workers
@pytest.mark.parametrize("make", [
    lambda: DecisionTreeClassifier(max_depth=8, class_weight={0: 0.5, 2: 3.0}),
    lambda: RandomForestClassifier(n_estimators=4, max_depth=6, class_weight="balanced",
                                   random_state=0),
    lambda: GradientBoostingClassifier(n_estimators=5, max_depth=3, class_weight="balanced",
                                       random_state=0),
], ids=["tree", "forest", "gbt"])
def test_class_weight_data_and_feature_parallel_identical(make):
    X, y = _imbalanced()
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    a = make().fit(ds)
    b = make().set_params(parallel="feature").fit(ds)
    assert_same_forest(a.forest_, b.forest_)


# -- (3) "balanced_subsample": per tree, deterministic ---------------------------------------
def _subsample_forest(**kw):
    params = dict(n_estimators=6, max_depth=6, trees_per_pass=4, oob_score=True, random_state=0,
                  class_weight="balanced_subsample")
    return RandomForestClassifier(**{**params, **kw})


def test_balanced_subsample_is_deterministic_and_per_tree():
    X, y = _imbalanced()
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    with session("local", n_workers=2):
        ref = _subsample_forest().fit(ds)
        balanced = _subsample_forest(class_weight="balanced").fit(ds)
        fits = {"feature": _subsample_forest(parallel="feature").fit(ds),
                # Batching trees differently changes nothing: each tree has its own grid.
                "one_pass": _subsample_forest(trees_per_pass=None).fit(ds)}
    with session("local", n_workers=1):
        fits["one_worker"] = _subsample_forest().fit(ds)
    for name, got in fits.items():
        assert_same_forest(ref.forest_, got.forest_)
        assert got.oob_score_ == ref.oob_score_, name
    assert not np.array_equal(ref.forest_["value"], balanced.forest_["value"])
    # Without bootstrap every tree sees every row: "balanced_subsample" is "balanced".
    with session("local", n_workers=2):
        a = _subsample_forest(bootstrap=False, oob_score=False).fit(ds)
        b = _subsample_forest(bootstrap=False, oob_score=False, class_weight="balanced").fit(ds)
    assert_same_forest(a.forest_, b.forest_)


@pytest.mark.parametrize("parallel", ["data", "feature"])
@pytest.mark.parametrize("step, call", [("bootstrap_class_counts", 1), ("tree_level", 7)])
def test_balanced_subsample_survives_a_killed_worker(parallel, step, call):
    """A worker killed while counting the second batch's bootstrap classes, or while
    growing it, is replaced (state replayed); same forest."""
    from shardlearn.runtime import FaultSpec
    from shardlearn.testing import inject_faults

    X, y = _imbalanced(600)
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    with session("local", n_workers=3):
        ref = _subsample_forest(parallel=parallel).fit(ds)
        with inject_faults(FaultSpec(1, "kill", step=step, call=call)):
            got = _subsample_forest(parallel=parallel).fit(ds)
    assert got.fit_report_.failures_recovered == 1
    assert_same_forest(ref.forest_, got.forest_)


@two_workers
def test_balanced_subsample_weighs_each_tree_by_its_bootstrap_sample():
    """One tree, rebuilt from its bootstrap counts (the per-row Poisson draws of
    kernels.rf_prologue): scikit-learn's compute_sample_weight("balanced",
    indices=...) of those rows, passed as sample_weight, gives the same tree."""
    X, y = _imbalanced(n_classes=2)
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    est = RandomForestClassifier(n_estimators=1, max_depth=8, random_state=3,
                                 class_weight="balanced_subsample")
    seed = est._seed()
    counts = np.concatenate([np.random.default_rng([seed, 0, i]).poisson(1.0, info.n_rows)
                             for i, info in enumerate(ds.shards)])
    indices = np.repeat(np.arange(len(y)), counts)
    sw = compute_sample_weight("balanced", y, indices=indices)
    got = est.fit(ds)
    want = RandomForestClassifier(n_estimators=1, max_depth=8, random_state=3).fit(
        Dataset.from_arrays(X, y, sw, n_shards=3, allow_nan=True))
    assert_same_forest(got.forest_, want.forest_)


# -- (4) boosting against HistGradientBoostingClassifier ------------------------------------
@two_workers
@pytest.mark.parametrize("n_classes", [2, 3])
def test_balanced_boosting_matches_hist_gradient_boosting(n_classes):
    weights = [0.9, 0.1] if n_classes == 2 else [0.75, 0.2, 0.05]
    X, y = make_classification(8000, 10, n_informative=6, n_classes=n_classes, weights=weights,
                               flip_y=0.03, n_clusters_per_class=1, random_state=0)
    X, y, Xt, yt = X[:4000], y[:4000], X[4000:], y[4000:]
    scores = {}
    for cw in (None, "balanced"):
        ours = GradientBoostingClassifier(n_estimators=40, max_depth=4, min_samples_leaf=20,
                                          reg_lambda=0.0, class_weight=cw).fit(X, y)
        ref = ske.HistGradientBoostingClassifier(
            max_iter=40, max_depth=4, max_leaf_nodes=None, min_samples_leaf=20,
            l2_regularization=0.0, early_stopping=False, class_weight=cw).fit(X, y)
        scores[cw] = (balanced_accuracy_score(yt, ours.predict(Xt)),
                      balanced_accuracy_score(yt, ref.predict(Xt)))
    ours, ref = scores["balanced"]
    # Measured: |difference| <= 0.007 over 4 seeds and both problems.
    assert abs(ours - ref) <= 0.015
    # The weights do their job: the rare classes are found more often.
    assert ours > scores[None][0] + 0.02


# -- (5) bad class_weight: a clear error before any work -------------------------------------
@two_workers
@pytest.mark.parametrize("make, class_weight, labels, match", [
    (DecisionTreeClassifier, {0: 1.0, 7: 2.0}, None, r"names \[7\], not among the classes"),
    (RandomForestClassifier, {0: 1.0, 1: -0.5}, None, "finite non-negative"),
    (GradientBoostingClassifier, {1: np.nan}, None, "finite non-negative"),
    (DecisionTreeClassifier, {0: "heavy"}, None, "finite non-negative numbers"),
    (GradientBoostingClassifier, {0: 0.0, 1: 0.0}, None, "every class the weight 0"),
    (RandomForestClassifier, {0: 2.0}, np.array(["no", "yes"]), "not among the classes"),
    (DecisionTreeClassifier, "balanced_subsample", None, "class_weight"),
    (GradientBoostingClassifier, "balanced_subsample", None, "class_weight"),
    (RandomForestClassifier, [1.0, 2.0], None, "class_weight"),
    (RandomForestClassifier, "balance", None, "class_weight"),
], ids=["unknown-class", "negative", "nan", "not-a-number", "all-zero", "label-type",
        "tree-subsample", "gbt-subsample", "list", "typo"])
def test_bad_class_weight_fails_before_work(make, class_weight, labels, match):
    X, y = make_classification(200, 4, random_state=0)
    if labels is not None:
        y = labels[y]
    sw = np.linspace(0.5, 1.5, 200)
    before = [a.copy() for a in (X, y, sw)]
    est = make(class_weight=class_weight)
    steps = steps_started()
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, sample_weight=sw)
    assert steps_started() == steps
    for a, b in zip((X, y, sw), before):
        np.testing.assert_array_equal(a, b)
    assert est.class_weight is class_weight        # the parameter is left as given


# -- (6) saving keeps class_weight -----------------------------------------------------------
@two_workers
@pytest.mark.parametrize("est, labels", [
    (DecisionTreeClassifier(max_depth=5, class_weight={0: 1.0, 1: 2.5}), None),
    (RandomForestClassifier(n_estimators=3, class_weight="balanced_subsample",
                            random_state=0), None),
    (GradientBoostingClassifier(n_estimators=4, class_weight={"b": 4.0}),
     np.array(["a", "b"])),
], ids=["tree-int-keys", "forest-subsample", "gbt-str-keys"])
def test_save_load_keeps_class_weight(est, labels, tmp_path):
    X, y = _imbalanced(600, n_classes=2)
    if labels is not None:
        y = labels[y]
    est.fit(X, y)
    est.save(tmp_path / "m")
    shardlearn.shutdown()
    back = shardlearn.load(tmp_path / "m")
    got, want = back.get_params()["class_weight"], est.get_params()["class_weight"]
    assert got == want
    if isinstance(want, dict):
        assert [type(k) for k in got] == [type(k) for k in want]
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # The loaded parameters refit to the same model.
    with session("local", n_workers=2):
        assert_same_forest(back.fit(X, y).forest_, est.forest_)
