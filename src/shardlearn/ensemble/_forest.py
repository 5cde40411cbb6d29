"""Distributed random forests: Poisson bootstrap on the workers, trees grown together."""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.tree import model as M
from ..algorithms.tree.fit import fit_forest
from ..tree._base import (
    CATEGORICAL_DOC,
    CLASS_WEIGHT_DOC,
    COMMON_CONSTRAINTS,
    TREE_CONSTRAINTS,
    HistTreeMixin,
    class_weight_vector,
    resolve_max_features,
)

_DOC = """
    Parameters
    ----------
    n_estimators : int, default=100
    criterion : str
        ``"gini"``, ``"entropy"`` or ``"log_loss"`` (classifier); ``"squared_error"`` (regressor).
    max_depth : int, default=None
    min_samples_split : int, default=2
    min_samples_leaf : int, default=1
    min_impurity_decrease : float, default=0.0
    max_features : int, float, {"sqrt", "log2"} or None
        Candidate features drawn per node, among those not constant in the node
        (as for the trees). Default "sqrt" (classifier), 1.0 (regressor).
    max_leaf_nodes : int, default=None
        None: trees grow level-wise. Else each tree grows best-first, as
        scikit-learn's trees do with this parameter: it splits the leaf whose best
        split decreases the impurity most (ties: the leaf created first) until it
        has ``max_leaf_nodes`` leaves or no leaf may split. Each pass over the data
        splits one leaf of every tree of the batch still growing; ``max_depth`` and
        the other limits still apply.
    bootstrap : bool, default=True
        Each tree sees every row with a Poisson(1) count drawn on the worker from
        (seed, tree, shard): a bootstrap without copying data.
    oob_score : bool, default=False
        Score each row with the trees it was out of bag for (accuracy / R^2).
    trees_per_pass : int, default=None
        Trees grown together in the same passes over the data (default: up to 16;
        the forest is the same for any value, only time and memory change).
    random_state : int, RandomState or None, default=None
    max_bins : int, default=255
    parallel : {"data", "feature"}, default="data\"""" + CATEGORICAL_DOC

_DOC_ATTRIBUTES = """

    Attributes
    ----------
    forest_ : dict of ndarray
        Every tree as flat node arrays.
    feature_importances_ : ndarray of shape (n_features,)
        Mean over trees of each tree's normalised impurity decrease per feature.
    is_categorical_ : ndarray of bool of shape (n_features,)
        Which features were split as categories.
    oob_score_ : float
    oob_decision_function_ / oob_prediction_ : ndarray
    fit_report_ : FitReport
"""


class _BaseForest(HistTreeMixin, BaseEstimator):
    _model_attributes = ("forest_", "feature_importances_", "max_features_", "is_categorical_")
    _classifier = False

    def __init__(self, *, n_estimators, criterion, max_depth, min_samples_split,
                 min_samples_leaf, min_impurity_decrease, max_features, max_leaf_nodes,
                 bootstrap, oob_score, trees_per_pass, random_state, max_bins, parallel,
                 categorical_features=None):
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.max_leaf_nodes = max_leaf_nodes
        self.bootstrap = bootstrap
        self.oob_score = oob_score
        self.trees_per_pass = trees_per_pass
        self.random_state = random_state
        self.max_bins = max_bins
        self.parallel = parallel
        self.categorical_features = categorical_features

    def _fit_forest(self, X, y, sample_weight):
        if self.oob_score and not self.bootstrap:
            raise ValueError("Out of bag estimation only available if bootstrap=True.")
        dataset, classes = self._dataset_for_fit(X, y, sample_weight, self._classifier)
        cw = self._forest_class_weight(dataset, classes) if self._classifier else None
        cat = self._categorical_for_fit(dataset)
        mf = resolve_max_features(self.max_features, dataset.n_features)
        crit = "entropy" if self.criterion == "log_loss" else self.criterion
        fit = fit_forest(
            dataset, task="class" if self._classifier else "regression", classes=classes,
            criterion=crit, n_estimators=self.n_estimators, bootstrap=self.bootstrap,
            max_depth=self.max_depth, min_samples_split=self.min_samples_split,
            min_samples_leaf=self.min_samples_leaf,
            min_impurity_decrease=self.min_impurity_decrease, max_features=mf,
            max_leaf_nodes=self.max_leaf_nodes, seed=self._seed(), max_bins=self.max_bins,
            parallel=self.parallel, oob_score=self.oob_score,
            trees_per_pass=self.trees_per_pass, estimator=type(self).__name__,
            categorical=cat if cat.any() else None, class_weight=cw)
        if classes is not None:
            self.classes_ = classes
            self.n_classes_ = len(classes)
        self.forest_ = fit.forest
        self.max_features_ = mf or dataset.n_features
        self.feature_importances_ = M.feature_importances(fit.forest, dataset.n_features)
        self.is_categorical_ = cat
        self.fit_report_ = fit.report
        if self.oob_score:
            self._set_oob(dataset, classes, *fit.oob)
        return self

    def _forest_class_weight(self, dataset, classes):
        cw = self._class_weight_for_fit(dataset, classes)
        if isinstance(cw, str) and not self.bootstrap:
            # Every tree sees every row: "balanced_subsample" is "balanced" (as in
            # scikit-learn).
            return class_weight_vector("balanced", classes, dataset.labels())
        return cw

    def _mean_output(self, X):
        Xc = self._predict_input(X, allow_nan=True)
        return M.reduced_outputs(self.forest_, Xc, lambda out: out.mean(axis=1),
                                 self.forest_["value"].shape[1])

    def apply(self, X):
        """Leaf index of each row in each tree, shape (n_samples, n_trees): one column a
        tree of ``forest_``, ``n_estimators`` of them unless a bootstrap sample came out
        empty (a tree that drew no row is left out of the forest)."""
        return M.leaves(self.forest_, self._predict_input(X, allow_nan=True))


def _oob_seen(oob_count):
    """Rows some tree left out of its bootstrap sample (warns, as scikit-learn does, when
    there are rows no tree left out: their out-of-bag values are NaN)."""
    seen = oob_count > 0
    if not seen.all():
        warnings.warn(
            f"{int((~seen).sum())} of {seen.size} rows are in the bootstrap sample of every "
            "tree: they have no out-of-bag prediction (NaN) and the out-of-bag score leaves "
            "them out. Use more trees (n_estimators) for a reliable estimate.",
            UserWarning, stacklevel=4)
    return seen


class RandomForestClassifier(ClassifierMixin, _BaseForest):
    __doc__ = """A random forest classifier grown from per-shard histograms.

    All trees of a pass grow together: one pass over the data per level (or, with
    ``max_leaf_nodes``, per best-first split) serves every tree. Bootstrap samples are per-row Poisson(1) weights drawn on the
    workers; features are subsampled per node on the coordinator.
""" + _DOC + CLASS_WEIGHT_DOC.format(
    kinds='dict, "balanced", "balanced_subsample" or None',
    extra="""
        ``"balanced_subsample"``: the same per tree, from the rows of its
        bootstrap sample, each counted as often as it is drawn (its Poisson
        count); with ``bootstrap=False`` it is ``"balanced"``.""") + _DOC_ATTRIBUTES + """
    Examples
    --------
    >>> from shardlearn.ensemble import RandomForestClassifier
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(random_state=0)
    >>> RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y).score(X, y) > 0.9
    True
    """

    _classifier = True
    _min_classes = 1  # as scikit-learn's: a single class is learned (and predicted)
    _model_attributes = _BaseForest._model_attributes + ("classes_", "n_classes_", "oob_score_",
                                                         "oob_decision_function_")
    _parameter_constraints: dict = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "criterion": [StrOptions({"gini", "entropy", "log_loss"})],
        "class_weight": [dict, StrOptions({"balanced", "balanced_subsample"}), None],
        "bootstrap": ["boolean"], "oob_score": ["boolean"],
        "trees_per_pass": [Interval(Integral, 1, None, closed="left"), None],
        **TREE_CONSTRAINTS, **COMMON_CONSTRAINTS,
    }

    def __init__(self, n_estimators=100, criterion="gini", max_depth=None, min_samples_split=2,
                 min_samples_leaf=1, min_impurity_decrease=0.0, max_features="sqrt",
                 max_leaf_nodes=None, bootstrap=True, oob_score=False, trees_per_pass=None,
                 random_state=None, max_bins=255, parallel="data", categorical_features=None,
                 class_weight=None):
        super().__init__(n_estimators=n_estimators, criterion=criterion, max_depth=max_depth,
                         min_samples_split=min_samples_split, min_samples_leaf=min_samples_leaf,
                         min_impurity_decrease=min_impurity_decrease, max_features=max_features,
                         max_leaf_nodes=max_leaf_nodes, bootstrap=bootstrap, oob_score=oob_score,
                         trees_per_pass=trees_per_pass, random_state=random_state,
                         max_bins=max_bins, parallel=parallel,
                         categorical_features=categorical_features)
        self.class_weight = class_weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Grow the forest on X (NaN allowed) and labels y.

        Returns
        -------
        self
        """
        return self._fit_forest(X, y, sample_weight)

    def _set_oob(self, dataset, classes, oob_sum, oob_count):
        labels = np.searchsorted(classes, dataset.labels())
        seen = _oob_seen(oob_count)
        dec = np.full(oob_sum.shape, np.nan)
        dec[seen] = oob_sum[seen] / oob_count[seen, None]
        self.oob_decision_function_ = dec
        self.oob_score_ = (float(np.mean(np.argmax(dec[seen], axis=1) == labels[seen]))
                           if seen.any() else np.nan)

    def predict_proba(self, X):
        """Mean over trees of the leaf class fractions, on the driver."""
        return self._mean_output(X)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class RandomForestRegressor(RegressorMixin, _BaseForest):
    __doc__ = """A random forest regressor (squared error) grown from per-shard histograms.

    See :class:`RandomForestClassifier` for how the work is distributed.
""" + _DOC + _DOC_ATTRIBUTES + """
    Examples
    --------
    >>> from shardlearn.ensemble import RandomForestRegressor
    >>> from sklearn.datasets import make_regression
    >>> X, y = make_regression(n_samples=200, random_state=0)
    >>> RandomForestRegressor(n_estimators=10, random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """

    _model_attributes = _BaseForest._model_attributes + ("oob_score_", "oob_prediction_")
    _parameter_constraints: dict = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "criterion": [StrOptions({"squared_error"})],
        "bootstrap": ["boolean"], "oob_score": ["boolean"],
        "trees_per_pass": [Interval(Integral, 1, None, closed="left"), None],
        **TREE_CONSTRAINTS, **COMMON_CONSTRAINTS,
    }

    def __init__(self, n_estimators=100, criterion="squared_error", max_depth=None,
                 min_samples_split=2, min_samples_leaf=1, min_impurity_decrease=0.0,
                 max_features=1.0, max_leaf_nodes=None, bootstrap=True, oob_score=False,
                 trees_per_pass=None, random_state=None, max_bins=255, parallel="data",
                 categorical_features=None):
        super().__init__(n_estimators=n_estimators, criterion=criterion, max_depth=max_depth,
                         min_samples_split=min_samples_split, min_samples_leaf=min_samples_leaf,
                         min_impurity_decrease=min_impurity_decrease, max_features=max_features,
                         max_leaf_nodes=max_leaf_nodes, bootstrap=bootstrap, oob_score=oob_score,
                         trees_per_pass=trees_per_pass, random_state=random_state,
                         max_bins=max_bins, parallel=parallel,
                         categorical_features=categorical_features)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Grow the forest on X (NaN allowed) and numeric y.

        Returns
        -------
        self
        """
        return self._fit_forest(X, y, sample_weight)

    def _set_oob(self, dataset, classes, oob_sum, oob_count):
        y = dataset.labels().astype(np.float64)
        seen = _oob_seen(oob_count)
        pred = np.full(oob_sum.shape[0], np.nan)
        pred[seen] = oob_sum[seen, 0] / oob_count[seen]
        self.oob_prediction_ = pred
        self.oob_score_ = float(r2_score(y[seen], pred[seen])) if seen.sum() > 1 else np.nan

    def predict(self, X):
        """Mean over trees of the leaf means, on the driver."""
        return self._mean_output(X)[:, 0]
