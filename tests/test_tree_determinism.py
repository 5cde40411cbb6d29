"""Same data + seed -> bit-identical trees on either engine with 1, 2 or 3 workers.

The data is tiny (a few hundred rows in 3 shards) so the Ray sessions cost little;
the first session to run stores the reference models, the others must match them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from shardlearn.data import Dataset
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.testing import assert_same_forest
from shardlearn.tree import DecisionTreeClassifier

_REFERENCE: dict = {}


def _data():
    X, y = make_classification(360, 6, n_informative=4, n_classes=3, random_state=0)
    X[np.random.default_rng(0).random(X.shape) < 0.05] = np.nan
    return X, y


def _models():
    return {
        "tree": DecisionTreeClassifier(max_depth=6, max_features=4, random_state=0),
        "gbt": GradientBoostingClassifier(n_estimators=4, max_depth=3, min_samples_leaf=5,
                                          subsample=0.8, colsample=0.8, random_state=0),
        "gbt_feature": GradientBoostingRegressor(n_estimators=3, max_depth=3, min_samples_leaf=5,
                                                 early_stopping=True, random_state=0,
                                                 parallel="feature"),
        # Squared error: the first round on the exact grid, then packed (fit._packing_fits).
        "gbt_reg": GradientBoostingRegressor(n_estimators=4, max_depth=3, min_samples_leaf=5,
                                             random_state=0),
        "forest": RandomForestClassifier(n_estimators=4, max_depth=5, oob_score=True,
                                         random_state=0),
        # Per-tree class weights from bootstrap counts summed over the shards.
        "forest_subsample": RandomForestClassifier(n_estimators=3, max_depth=5,
                                                   class_weight="balanced_subsample",
                                                   random_state=0),
        "gbt_balanced": GradientBoostingClassifier(n_estimators=3, max_depth=3,
                                                   class_weight="balanced", random_state=0),
        # Fully grown: the small nodes are searched by their rows (_row_search), which
        # travel from the workers instead of histograms.
        "forest_reg": RandomForestRegressor(n_estimators=3, random_state=0),
    }


@pytest.mark.timeout(300)
def test_bit_identical_across_engines_and_worker_counts(any_session):
    X, y = _data()
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    for name, est in _models().items():
        est.fit(ds)
        got = dict(est.forest_)
        got["__pred"] = est.predict(X)
        if hasattr(est, "oob_score_"):
            got["__oob"] = np.array([est.oob_score_])
        assert est.fit_report_.n_workers == any_session.n_workers
        ref = _REFERENCE.setdefault(name, got)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: {k}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("parallel", ["data", "feature"])
def test_killed_worker_mid_fit_changes_nothing(parallel):
    """A worker killed while trees grow is replaced; its shards' state (binned rows,
    positions, predictions) is rebuilt by replaying the fit's steps; same model."""
    from shardlearn.runtime import FaultSpec
    from shardlearn.testing import inject_faults, session

    X, y = _data()
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)

    def fit():
        return GradientBoostingClassifier(n_estimators=4, max_depth=3, min_samples_leaf=5,
                                          subsample=0.8, random_state=0,
                                          parallel=parallel).fit(ds)

    with session("local", n_workers=3):
        ref = fit()
        with inject_faults(FaultSpec(1, "kill", step="tree_level", call=6)):
            got = fit()
    assert got.fit_report_.failures_recovered == 1
    assert_same_forest(got.forest_, ref.forest_)


@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_forest_does_not_depend_on_trees_per_pass(task):
    # Each tree draws its own bootstrap and features: growing 20 trees 16, 7 or 1 a
    # pass (the default, and others) gives the same forest and out-of-bag score. (A
    # pass of a single tree, as the last of 17 with 16 a pass, used to leave that
    # tree's out-of-bag rows out; with one tree a pass the score was NaN.)
    from shardlearn.ensemble import RandomForestRegressor
    from shardlearn.testing import session

    X, y = _data()
    cls = RandomForestClassifier if task == "classifier" else RandomForestRegressor
    target = y if task == "classifier" else y + np.sin(np.arange(len(y)))
    ds = Dataset.from_arrays(X, target, n_shards=3, allow_nan=True)
    with session("local", n_workers=2):
        fits = [cls(n_estimators=20, max_depth=5, oob_score=True, random_state=0,
                    trees_per_pass=b).fit(ds) for b in (None, 7, 1)]
    for f in fits[1:]:
        assert_same_forest(fits[0].forest_, f.forest_)
        assert f.oob_score_ == fits[0].oob_score_
    assert fits[0].forest_["offsets"].shape[0] == 21
