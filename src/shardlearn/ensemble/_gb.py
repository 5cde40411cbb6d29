"""Distributed second-order gradient boosting on histogram trees."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.tree import model as M
from ..algorithms.tree.fit import fit_boosting
from ..data.validation import (
    as_numeric_target,
    check_features,
    check_finite,
    check_sample_weight,
    check_target,
)
from ..tree._base import CATEGORICAL_DOC, CLASS_WEIGHT_DOC, COMMON_CONSTRAINTS, HistTreeMixin

_CONSTRAINTS: dict = {
    "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
    "n_estimators": [Interval(Integral, 1, None, closed="left")],
    "max_depth": [Interval(Integral, 1, None, closed="left"), None],
    "max_leaves": [Interval(Integral, 2, None, closed="left"), None],
    "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
    "min_child_weight": [Interval(Real, 0.0, None, closed="left")],
    "reg_lambda": [Interval(Real, 0.0, None, closed="left")],
    "subsample": [Interval(Real, 0.0, 1.0, closed="right")],
    "colsample": [Interval(Real, 0.0, 1.0, closed="right")],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0.0, 1.0, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0.0, None, closed="left")],
    **COMMON_CONSTRAINTS,
}

_DOC = """
    Parameters
    ----------
    learning_rate : float, default=0.1
        Shrinkage of each tree's leaf values.
    n_estimators : int, default=100
        Boosting rounds (one tree per round; one per class per round for
        multiclass, grown in the same passes over the data).
    max_depth : int or None, default=6
        Depth limit. Without ``max_leaves`` trees grow level-wise, each level one
        pass over the shards. Set ``max_depth`` and/or ``max_leaves``.
    max_leaves : int or None, default=None
        Trees grow best-first (leaf-wise, as LightGBM, XGBoost
        ``grow_policy="lossguide"`` and scikit-learn's ``HistGradientBoosting``
        with ``max_leaf_nodes``): each pass splits the leaf of highest gain (ties:
        the leaf created first) of every tree still growing, until a tree has
        ``max_leaves`` leaves or no leaf may split; ``max_depth`` (if set) still
        limits the depth. E.g. ``max_leaves=31, max_depth=None``.
    min_samples_leaf : int, default=20
    min_child_weight : float, default=1e-3
        Minimum hessian sum in a child.
    reg_lambda : float, default=0.0
        L2 regularisation of leaf values: gain ``G^2/(H + lambda)``, leaf ``-G/(H + lambda)``.
    subsample : float, default=1.0
        Fraction of rows per round: per-row Bernoulli draws made on the workers
        from a (seed, round, shard) generator; no data is copied.
    colsample : float, default=1.0
        Fraction of features each tree may split on.
    early_stopping : bool, default=False
        Stop when the validation loss has not improved by ``tol`` in
        ``n_iter_no_change`` rounds. The validation set is ``X_val``/``y_val``
        passed to ``fit``, else a ``validation_fraction`` of the rows drawn on the
        workers (never trained on).
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
    tol : float, default=1e-7
    random_state : int, RandomState or None, default=None
    max_bins : int, default=255
        Value bins per feature; NaN has its own bin with a learned default direction.
    parallel : {"data", "feature"}, default="data"
        Row shards with histograms summed on the coordinator, or column blocks
        holding every row, each worker proposing the best split among its
        features (the winner's row partition is broadcast as a bitmask).
        Both give the same model.""" + CATEGORICAL_DOC

_DOC_ATTRIBUTES = """

    Attributes
    ----------
    n_iter_ : int
        Rounds fitted.
    baseline_ : ndarray
        Initial raw score(s).
    forest_ : dict of ndarray
        Every tree as flat node arrays (leaf values include the learning rate).
    train_score_ : ndarray
        Training loss after each round (index 0: the baseline).
    validation_score_ : ndarray
        Validation loss after each round (empty without early stopping / X_val).
    feature_importances_ : ndarray of shape (n_features,)
        Normalised total split gain per feature.
    is_categorical_ : ndarray of bool of shape (n_features,)
        Which features were split as categories.
    fit_report_ : FitReport
"""


class _BaseGB(HistTreeMixin, BaseEstimator):
    _parameter_constraints: dict = _CONSTRAINTS
    _model_attributes = ("forest_", "baseline_", "n_iter_", "n_trees_per_iteration_",
                         "train_score_", "validation_score_", "feature_importances_",
                         "is_categorical_")
    _classifier = False
    _onnx_kind = "boost"

    def __init__(self, *, learning_rate=0.1, n_estimators=100, max_depth=6, max_leaves=None,
                 min_samples_leaf=20, min_child_weight=1e-3, reg_lambda=0.0, subsample=1.0,
                 colsample=1.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-7, random_state=None, max_bins=255,
                 parallel="data", categorical_features=None):
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.min_samples_leaf = min_samples_leaf
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.subsample = subsample
        self.colsample = colsample
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.max_bins = max_bins
        self.parallel = parallel
        self.categorical_features = categorical_features

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None):
        """Fit on X (ndarray, DataFrame, CSR or Dataset; NaN allowed) and targets y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
        y : array-like of shape (n_samples,)
            Class labels (classifier) or numbers (regressor); omitted for a Dataset.
        sample_weight : array-like of shape (n_samples,), default=None
        X_val, y_val, sample_weight_val : optional
            A validation set for early stopping (instead of ``validation_fraction``).

        Returns
        -------
        self
        """
        return self._fit_gb(X, y, sample_weight, X_val, y_val, sample_weight_val)

    def _fit_gb(self, X, y, sample_weight, X_val, y_val, sample_weight_val):
        if self.max_depth is None and self.max_leaves is None:
            raise ValueError("Set max_depth and/or max_leaves: trees need a bound "
                             "(e.g. max_depth=6 grows level-wise, max_leaves=31 best-first).")
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        dataset, classes = self._dataset_for_fit(X, y, sample_weight, self._classifier)
        cw = self._class_weight_for_fit(dataset, classes) if self._classifier else None
        cat = self._categorical_for_fit(dataset)
        val = None
        if X_val is not None:
            Xv = check_features(X_val, name="X_val")
            _check_val_columns(X_val, getattr(self, "feature_names_in_", None))
            if Xv.shape[1] != dataset.n_features:
                raise ValueError(f"X_val has {Xv.shape[1]} features but X has "
                                 f"{dataset.n_features}; pass the same columns.")
            check_finite(Xv, name="X_val", allow_nan=True)
            yv = check_target(y_val if classes is not None else as_numeric_target(y_val),
                              Xv.shape[0], name="y_val")
            if classes is not None:
                unknown = np.setdiff1d(np.unique(yv), classes)
                if unknown.size:
                    raise ValueError(f"y_val has labels {unknown[:5].tolist()} not seen in y.")
                yv = np.searchsorted(classes, yv)
            else:
                if yv.dtype.kind not in "biuf":
                    raise ValueError(f"y_val has dtype {yv.dtype}; a regressor needs numbers "
                                     "as targets, like y.")
                yv = yv.astype(np.float64)
                check_finite(yv, name="y_val")
            swv = check_sample_weight(sample_weight_val, Xv.shape[0], name="sample_weight_val",
                                      rows_of="X_val")
            val = (Xv, yv, np.ones(Xv.shape[0]) if swv is None else swv)
        if self._classifier:
            loss = "binary" if len(classes) == 2 else "multiclass"
        else:
            loss = "squared_error"
        fit = fit_boosting(
            dataset, loss=loss, classes=classes, n_estimators=self.n_estimators,
            learning_rate=self.learning_rate, max_depth=self.max_depth, max_leaves=self.max_leaves,
            min_samples_leaf=self.min_samples_leaf, min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda, subsample=self.subsample, colsample=self.colsample,
            max_bins=self.max_bins, early_stopping=self.early_stopping,
            validation_fraction=self.validation_fraction, n_iter_no_change=self.n_iter_no_change,
            tol=self.tol, validation_data=val, seed=self._seed(), parallel=self.parallel,
            estimator=type(self).__name__, categorical=cat if cat.any() else None,
            class_weight=cw)
        if classes is not None:
            self.classes_ = classes
            self.n_classes_ = len(classes)
        self.forest_ = fit.forest
        self.baseline_ = fit.baseline
        self.n_iter_ = fit.n_iter
        self.n_trees_per_iteration_ = len(fit.baseline)
        self.train_score_ = np.asarray(fit.train_score)
        self.validation_score_ = np.asarray(fit.validation_score)
        self.feature_importances_ = M.feature_importances(fit.forest, dataset.n_features,
                                                          per_tree_normalise=False)
        self.is_categorical_ = cat
        self.fit_report_ = fit.report
        return self

    def export_xgboost(self, path=None) -> str:
        """The model in XGBoost's JSON format (``xgboost.Booster(model_file=path)`` loads it).

        Predictions agree with this model's except for feature values within
        float32 rounding of a split threshold (XGBoost compares in float32).
        Categorical splits become XGBoost categorical splits (``split_type`` 1,
        categories below 2**24): they agree on integer categories, unseen ones,
        negative values and NaN; a non-integer value in a categorical column is
        missing here but truncated to an integer category by XGBoost. A model fitted
        on a DataFrame carries its column names, so that XGBoost, as for its own such
        models, refuses a DMatrix whose columns are missing or in another order.

        Parameters
        ----------
        path : str or path-like, optional
            Also write the JSON there (use a ``.json`` suffix).

        Returns
        -------
        str
            The JSON document.
        """
        from sklearn.utils.validation import check_is_fitted

        from ..algorithms.tree.export import to_xgboost_json

        check_is_fitted(self)
        if not self._classifier:
            objective = "reg:squarederror"
        else:
            objective = "binary:logistic" if len(self.classes_) == 2 else "multi:softprob"
        text = to_xgboost_json(self.forest_, self.baseline_, objective, self.n_features_in_,
                               getattr(self, "feature_names_in_", None))
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def _rounds_added(self, out):
        """Yield the raw scores (n, K) after each round from leaf outputs (n, trees),
        the same array each time, rounds added in order."""
        K = self.n_trees_per_iteration_
        raw = np.tile(self.baseline_, (out.shape[0], 1))
        for r in range(out.shape[1] // K):
            raw += out[:, r * K:(r + 1) * K]
            yield raw

    def _raw_staged(self, X):
        """Yield raw scores (n, K) after each round."""
        for raw in self._rounds_added(self._leaf_outputs(X)[:, :, 0]):
            yield raw.copy()

    def _raw(self, X):
        def final(out):
            raw = np.tile(self.baseline_, (out.shape[0], 1))       # no round: the baseline
            for staged in self._rounds_added(out[:, :, 0]):
                raw = staged
            return raw

        # Rounds added in order, as the staged predictions add them: the last stage is
        # this to the bit (a pairwise sum over rounds differed by 1e-10).
        Xc = self._predict_input(X, allow_nan=True)
        return M.reduced_outputs(self.forest_, Xc, final, self.n_trees_per_iteration_)


def _check_val_columns(X_val, fitted_names) -> None:
    """A DataFrame ``X_val`` must hold X's columns in X's order: a reordered frame would
    score the trees on the wrong features and stop the fit early."""
    if fitted_names is None or not hasattr(X_val, "columns"):
        return
    got = [str(c) for c in X_val.columns]
    want = [str(c) for c in fitted_names]
    if got != want:
        raise ValueError(
            f"X_val's columns {got[:8]}{'...' if len(got) > 8 else ''} are not X's "
            f"{want[:8]}{'...' if len(want) > 8 else ''}: pass X_val with the same columns "
            "in the same order (e.g. X_val[X.columns]).")


class GradientBoostingClassifier(ClassifierMixin, _BaseGB):
    __doc__ = """Histogram gradient boosting classifier (binary logistic / multinomial softmax).

    Second-order boosting: each round the workers compute gradients and hessians
    of their rows from the predictions they keep between rounds, and the trees
    grow (level-wise, or best-first with ``max_leaves``) from per-shard
    gradient/hessian histograms summed in shard order on the coordinator.
    Prediction runs on the driver.
""" + _DOC + CLASS_WEIGHT_DOC.format(kinds='dict, "balanced" or None', extra="""
        The weighted rows also give the baseline and the training and held-out
        validation losses; ``sample_weight_val`` is used as given (as in
        scikit-learn's ``HistGradientBoostingClassifier``).""") + _DOC_ATTRIBUTES + """
    classes_ : ndarray of shape (n_classes,)

    Examples
    --------
    >>> from shardlearn.ensemble import GradientBoostingClassifier
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(random_state=0)
    >>> GradientBoostingClassifier(n_estimators=20).fit(X, y).score(X, y) > 0.9
    True
    """

    _classifier = True
    _model_attributes = _BaseGB._model_attributes + ("classes_", "n_classes_")
    _parameter_constraints: dict = {
        **_CONSTRAINTS, "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(self, *, learning_rate=0.1, n_estimators=100, max_depth=6, max_leaves=None,
                 min_samples_leaf=20, min_child_weight=1e-3, reg_lambda=0.0, subsample=1.0,
                 colsample=1.0, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-7, random_state=None, max_bins=255,
                 parallel="data", categorical_features=None, class_weight=None):
        super().__init__(learning_rate=learning_rate, n_estimators=n_estimators,
                         max_depth=max_depth, max_leaves=max_leaves,
                         min_samples_leaf=min_samples_leaf, min_child_weight=min_child_weight,
                         reg_lambda=reg_lambda, subsample=subsample, colsample=colsample,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol, random_state=random_state,
                         max_bins=max_bins, parallel=parallel,
                         categorical_features=categorical_features)
        self.class_weight = class_weight

    def decision_function(self, X):
        """Raw scores: (n_samples,) for two classes, else (n_samples, n_classes)."""
        raw = self._raw(X)
        return raw[:, 0] if raw.shape[1] == 1 else raw

    def _proba(self, raw):
        if raw.shape[1] == 1:
            p = expit(raw[:, 0])
            return np.column_stack([1.0 - p, p])
        return softmax(raw, axis=1)

    def predict_proba(self, X):
        return self._proba(self._raw(X))

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def staged_predict_proba(self, X):
        """Class probabilities after each round (a generator)."""
        for raw in self._raw_staged(X):
            yield self._proba(raw)

    def staged_predict(self, X):
        """Predicted classes after each round (a generator)."""
        for p in self.staged_predict_proba(X):
            yield self.classes_[np.argmax(p, axis=1)]

    def staged_decision_function(self, X):
        for raw in self._raw_staged(X):
            yield raw[:, 0] if raw.shape[1] == 1 else raw


class GradientBoostingRegressor(RegressorMixin, _BaseGB):
    __doc__ = """Histogram gradient boosting regressor (squared error).

    See :class:`GradientBoostingClassifier` for how the work is distributed.
""" + _DOC + _DOC_ATTRIBUTES + """
    Examples
    --------
    >>> from shardlearn.ensemble import GradientBoostingRegressor
    >>> from sklearn.datasets import make_regression
    >>> X, y = make_regression(n_samples=300, random_state=0)
    >>> GradientBoostingRegressor().fit(X, y).score(X, y) > 0.9
    True
    """

    def predict(self, X):
        return self._raw(X)[:, 0]

    def staged_predict(self, X):
        """Predictions after each round (a generator)."""
        for raw in self._raw_staged(X):
            yield raw[:, 0]
