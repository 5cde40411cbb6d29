"""scikit-learn's estimator checks on every tree estimator (in-process engine, 2 workers).

Expected failures, with reasons:

* RandomForestClassifier / RandomForestRegressor:
  ``check_sample_weight_equivalence_on_dense_data`` and ``..._on_sparse_data``:
  the bootstrap draws one Poisson count per row, so a row of weight 2 is not
  resampled like two copies of the row. scikit-learn's own RandomForest* list the
  same two checks as expected failures for the same reason.
* DecisionTreeClassifier / RandomForestClassifier: ``check_class_weight_classifiers``
  sets ``min_weight_fraction_leaf=0.01`` where an estimator has it (these do not)
  to keep trees from growing pure leaves around the few rows of the classes it
  weighs 1e-4: in a pure leaf the class weights change nothing. scikit-learn's
  DecisionTreeClassifier without ``min_weight_fraction_leaf`` fails it too (0.44
  of the predictions are class 0, 0.87 needed). (scikit-learn's RandomForest
  passes it only because it draws its bootstrap in proportion to the weights.)
  The class weights themselves are tested in test_tree_class_weight.py.

Every other check passes (decision trees and gradient boosting pass all of them,
sample-weight equivalence included).
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import shardlearn
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

ESTIMATORS = [
    DecisionTreeClassifier(), DecisionTreeRegressor(),
    RandomForestClassifier(n_estimators=5), RandomForestRegressor(n_estimators=5),
    GradientBoostingClassifier(n_estimators=10), GradientBoostingRegressor(n_estimators=10),
]

_BOOTSTRAP = ("the bootstrap draws one Poisson count per row: a row of weight 2 is not "
              "resampled like two copies (scikit-learn's RandomForest* fail it too)")
_FOREST_FAILS = {
    "check_sample_weight_equivalence_on_dense_data": _BOOTSTRAP,
    "check_sample_weight_equivalence_on_sparse_data": _BOOTSTRAP,
}


_PURE_LEAVES = ("fully grown trees isolate the rows of the down-weighted classes in pure "
                "leaves; the check needs min_weight_fraction_leaf, which these lack "
                "(scikit-learn's DecisionTreeClassifier fails it without it too)")


def _expected_failed_checks(estimator):
    fails = {}
    if isinstance(estimator, (RandomForestClassifier, RandomForestRegressor)):
        fails.update(_FOREST_FAILS)
    if isinstance(estimator, (DecisionTreeClassifier, RandomForestClassifier)):
        fails["check_class_weight_classifiers"] = _PURE_LEAVES
    return fails


@pytest.fixture(autouse=True)
def _local_engine():
    shardlearn.init("local", n_workers=2)
    yield
    shardlearn.shutdown()


@pytest.mark.timeout(600)
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
