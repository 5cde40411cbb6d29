"""Distributed decision trees on histogram (binned) features."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils._param_validation import StrOptions

from ..algorithms.tree import model as M
from ..algorithms.tree.fit import fit_forest
from ._base import (
    CATEGORICAL_DOC,
    CLASS_WEIGHT_DOC,
    COMMON_CONSTRAINTS,
    TREE_CONSTRAINTS,
    HistTreeMixin,
    resolve_max_features,
)

_DOC_PARAMS = """
    max_depth : int, default=None
        Grow until leaves are pure or hold fewer than ``min_samples_split`` rows.
    min_samples_split : int, default=2
    min_samples_leaf : int, default=1
        Rows each child must keep (counted unweighted, as in scikit-learn).
    min_impurity_decrease : float, default=0.0
        Split only if the weighted impurity decrease (scikit-learn's definition)
        is at least this.
    max_features : int, float, {"sqrt", "log2"} or None, default=None
        Candidate features drawn per node (seeded by ``random_state``), among the
        features not constant in the node: constant in the training data, or left
        one value by the splits above the node.
    max_leaf_nodes : int, default=None
        None: the tree grows level-wise (one pass over the shards per level).
        Else it grows best-first, as scikit-learn's does with this parameter:
        each pass splits the leaf whose best split decreases the impurity most
        (ties: the leaf created first), until the tree has ``max_leaf_nodes``
        leaves or no leaf may split; ``max_depth`` and the other limits still apply.
    random_state : int, RandomState or None, default=None
    max_bins : int, default=255
        Value bins per feature (2..255); missing values (NaN) get their own bin.
        Features with at most ``max_bins`` distinct values are binned exactly and
        split at midpoints between values, as scikit-learn does.
    parallel : {"data", "feature"}, default="data"
        ``"data"``: shards are row blocks, histograms are summed on the
        coordinator. ``"feature"``: shards are column blocks of the binned matrix
        holding every row; each worker finds the best split among its features and
        the winner sends the row partition as a bitmask. Same tree either way.""" + CATEGORICAL_DOC


class _BaseDecisionTree(HistTreeMixin, BaseEstimator):
    _model_attributes = ("forest_", "feature_importances_", "max_features_", "is_categorical_")
    _classifier = False

    def __init__(self, *, criterion, max_depth=None, min_samples_split=2, min_samples_leaf=1,
                 min_impurity_decrease=0.0, max_features=None, max_leaf_nodes=None,
                 random_state=None, max_bins=255, parallel="data", categorical_features=None):
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.max_leaf_nodes = max_leaf_nodes
        self.random_state = random_state
        self.max_bins = max_bins
        self.parallel = parallel
        self.categorical_features = categorical_features

    def _fit_tree(self, X, y, sample_weight):
        dataset, classes = self._dataset_for_fit(X, y, sample_weight, self._classifier)
        cw = self._class_weight_for_fit(dataset, classes) if self._classifier else None
        cat = self._categorical_for_fit(dataset)
        mf = resolve_max_features(self.max_features, dataset.n_features)
        fit = fit_forest(
            dataset, task="class" if self._classifier else "regression", classes=classes,
            criterion=self.criterion, n_estimators=1, bootstrap=False,
            max_depth=self.max_depth, min_samples_split=self.min_samples_split,
            min_samples_leaf=self.min_samples_leaf,
            min_impurity_decrease=self.min_impurity_decrease, max_features=mf,
            max_leaf_nodes=self.max_leaf_nodes, seed=self._seed(), max_bins=self.max_bins,
            parallel=self.parallel, estimator=type(self).__name__,
            categorical=cat if cat.any() else None, class_weight=cw)
        if classes is not None:
            self.classes_ = classes
            self.n_classes_ = len(classes)
        self.forest_ = fit.forest
        self.max_features_ = mf or dataset.n_features
        self.feature_importances_ = M.feature_importances(fit.forest, dataset.n_features)
        self.is_categorical_ = cat
        self.fit_report_ = fit.report
        return self

    def get_depth(self):
        """Depth of the tree (a root-only tree has depth 0)."""
        return int(self.forest_["depth"].max())

    def get_n_leaves(self):
        return int((self.forest_["feature"] < 0).sum())

    def apply(self, X):
        """Index of the leaf each row reaches."""
        return M.leaves(self.forest_, self._predict_input(X, allow_nan=True))[:, 0]


class DecisionTreeClassifier(ClassifierMixin, _BaseDecisionTree):
    __doc__ = """A decision tree classifier grown level-wise from per-shard histograms.

    Each level is one pass over the shards: workers build class-weight histograms
    of their rows per node (the smaller child of each split; the sibling is the
    parent minus it), the coordinator sums them in shard order and picks the split
    that most decreases the impurity. With ``max_leaf_nodes`` the tree grows
    best-first instead (one leaf split per pass). Prediction runs on the driver.

    Parameters
    ----------
    criterion : {"gini", "entropy", "log_loss"}, default="gini"
""" + _DOC_PARAMS + CLASS_WEIGHT_DOC.format(kinds='dict, "balanced" or None', extra="") + """

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    forest_ : dict of ndarray
        The tree as flat node arrays (``feature``, ``threshold``, ``missing_left``,
        ``left``, ``right``, ``value``, ...; ``cat_size``/``cat_values``: the
        category sets of categorical splits); saved without pickle.
    feature_importances_ : ndarray of shape (n_features,)
        Normalised total impurity decrease per feature.
    is_categorical_ : ndarray of bool of shape (n_features,)
        Which features were split as categories.
    fit_report_ : FitReport

    Examples
    --------
    >>> from shardlearn.tree import DecisionTreeClassifier
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> DecisionTreeClassifier(max_depth=3).fit(X, y).score(X, y) > 0.9
    True
    """

    _classifier = True
    _min_classes = 1  # as scikit-learn's: a single class is learned (and predicted)
    _model_attributes = _BaseDecisionTree._model_attributes + ("classes_", "n_classes_")
    _parameter_constraints: dict = {
        "criterion": [StrOptions({"gini", "entropy", "log_loss"})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        **TREE_CONSTRAINTS, **COMMON_CONSTRAINTS,
    }

    def __init__(self, criterion="gini", max_depth=None, min_samples_split=2, min_samples_leaf=1,
                 min_impurity_decrease=0.0, max_features=None, max_leaf_nodes=None,
                 random_state=None, max_bins=255, parallel="data", categorical_features=None,
                 class_weight=None):
        super().__init__(criterion=criterion, max_depth=max_depth,
                         min_samples_split=min_samples_split, min_samples_leaf=min_samples_leaf,
                         min_impurity_decrease=min_impurity_decrease, max_features=max_features,
                         max_leaf_nodes=max_leaf_nodes, random_state=random_state,
                         max_bins=max_bins, parallel=parallel,
                         categorical_features=categorical_features)
        self.class_weight = class_weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Grow the tree on X (ndarray, DataFrame, CSR or Dataset; NaN allowed) and y.

        Returns
        -------
        self
        """
        if self.criterion == "log_loss":
            self.criterion = "entropy"
            try:
                return self._fit_tree(X, y, sample_weight)
            finally:
                self.criterion = "log_loss"
        return self._fit_tree(X, y, sample_weight)

    def predict_proba(self, X):
        """Class probabilities (weighted class fractions of the leaf), on the driver."""
        Xc = self._predict_input(X, allow_nan=True)
        return M.reduced_outputs(self.forest_, Xc, lambda out: out[:, 0, :],
                                 self.forest_["value"].shape[1])

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class DecisionTreeRegressor(RegressorMixin, _BaseDecisionTree):
    __doc__ = """A squared-error regression tree grown from per-shard histograms (level-wise,
    or best-first with ``max_leaf_nodes``).

    Parameters
    ----------
    criterion : {"squared_error"}, default="squared_error"
""" + _DOC_PARAMS + """

    Attributes
    ----------
    forest_ : dict of ndarray
    feature_importances_ : ndarray of shape (n_features,)
    is_categorical_ : ndarray of bool of shape (n_features,)
        Which features were split as categories.
    fit_report_ : FitReport

    Examples
    --------
    >>> from shardlearn.tree import DecisionTreeRegressor
    >>> import numpy as np
    >>> X = np.arange(20.0).reshape(-1, 1); y = (X[:, 0] > 9).astype(float)
    >>> DecisionTreeRegressor(max_depth=1).fit(X, y).predict([[3.0], [15.0]]).tolist()
    [0.0, 1.0]
    """

    _parameter_constraints: dict = {
        "criterion": [StrOptions({"squared_error"})],
        **TREE_CONSTRAINTS, **COMMON_CONSTRAINTS,
    }

    def __init__(self, criterion="squared_error", max_depth=None, min_samples_split=2,
                 min_samples_leaf=1, min_impurity_decrease=0.0, max_features=None,
                 max_leaf_nodes=None, random_state=None, max_bins=255, parallel="data",
                 categorical_features=None):
        super().__init__(criterion=criterion, max_depth=max_depth,
                         min_samples_split=min_samples_split, min_samples_leaf=min_samples_leaf,
                         min_impurity_decrease=min_impurity_decrease, max_features=max_features,
                         max_leaf_nodes=max_leaf_nodes, random_state=random_state,
                         max_bins=max_bins, parallel=parallel,
                         categorical_features=categorical_features)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Grow the tree on X (NaN allowed) and numeric y.

        Returns
        -------
        self
        """
        return self._fit_tree(X, y, sample_weight)

    def predict(self, X):
        """Mean target of the leaf each row reaches, on the driver."""
        Xc = self._predict_input(X, allow_nan=True)
        return M.reduced_outputs(self.forest_, Xc, lambda out: out[:, 0, :1], 1)[:, 0]
