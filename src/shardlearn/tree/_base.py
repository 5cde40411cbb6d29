"""What the histogram-tree estimators share: input checks, seeds, driver prediction."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.tree import model as M
from ..algorithms.tree.binning import check_categorical_values
from ..base import DistributedEstimatorMixin
from ..data import Dataset
from ..data.shard import ArraySliceSource
from ..data.validation import as_numeric_target, check_classification_target

COMMON_CONSTRAINTS: dict = {
    "max_bins": [Interval(Integral, 2, 255, closed="both")],
    "parallel": [StrOptions({"data", "feature"})],
    "random_state": ["random_state"],
    "categorical_features": ["array-like", None],
}

#: numpydoc of the ``categorical_features`` parameter (shared by every estimator).
CATEGORICAL_DOC = """
    categorical_features : array-like of int, of bool or of str, default=None
        Features to split natively as categories: column indices, a boolean mask
        of length ``n_features``, or column names (when fitting on a pandas
        DataFrame or a Dataset with feature names). Values of a categorical
        column must be non-negative integers (e.g. from
        ``sklearn.preprocessing.OrdinalEncoder``), NaN meaning missing; at most
        ``max_bins`` distinct categories per column. Each category gets its own
        bin; a node splits a categorical feature into a set of categories going
        left and the rest going right: the categories present in the node are
        ordered by their statistic (mean target, class-1 fraction, each class's
        fraction with more than two classes, or ``G / (H + reg_lambda)`` for
        boosting) and the best prefix of that order is kept (Fisher 1958). Missing
        values go to the child learned for them (the larger child if the node saw
        none), and so do, at prediction time, categories the node did not see in
        training and values that are negative or not integers: they are treated
        as missing, never an error (scikit-learn's HistGradientBoosting treats
        unknown categories as missing too). ``is_categorical_`` records the mask."""

#: numpydoc of ``class_weight``; ``{extra}`` is filled in per estimator.
CLASS_WEIGHT_DOC = """
    class_weight : {kinds}, default=None
        Weights of the classes, multiplying each row's ``sample_weight``:
        ``{{class_label: weight}}`` (classes not named weigh 1), or
        ``"balanced"``: class ``k`` weighs ``n_samples / (n_classes * n_k)``, with
        ``n_k`` the number of rows of class ``k`` (counted unweighted, as
        scikit-learn's ``compute_class_weight`` does). A dict naming a label not
        in ``y``, or a negative weight, is an error raised before any work
        starts.{extra}"""

TREE_CONSTRAINTS: dict = {
    "max_depth": [Interval(Integral, 1, None, closed="left"), None],
    "min_samples_split": [Interval(Integral, 2, None, closed="left")],
    "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
    "min_impurity_decrease": [Interval(Real, 0.0, None, closed="left")],
    "max_features": [Interval(Integral, 1, None, closed="left"),
                     Interval(Real, 0.0, 1.0, closed="right"), StrOptions({"sqrt", "log2"}),
                     None],
    "max_leaf_nodes": [Interval(Integral, 2, None, closed="left"), None],
}


class HistTreeMixin(DistributedEstimatorMixin):
    """Input handling shared by trees, forests and boosting (NaN allowed in X)."""

    def _check_y_given(self, X, y):
        if y is None and not isinstance(X, Dataset):
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None. "
                "Pass fit(X, y), or a Dataset built with labels."
            )
        if y is not None and np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning, stacklevel=4,
            )

    # Boosting needs two classes (a logit against what?); trees and forests learn one.
    _min_classes = 2

    def _dataset_for_fit(self, X, y, sample_weight, classifier: bool):
        """Validate everything (no worker runs before this returns)."""
        self._check_y_given(X, y)
        if not classifier:
            y = as_numeric_target(y)
        dataset = self._fit_dataset(X, y, sample_weight, allow_nan=True)
        labels = dataset.labels()
        if classifier:
            classes = check_classification_target(labels, boundaries=dataset.boundaries,
                                                  min_classes=self._min_classes)
            return dataset, classes
        if labels.dtype.kind not in "biuf":
            try:
                labels.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{type(self).__name__} needs numeric targets; y has dtype {labels.dtype}."
                ) from None
        return dataset, None

    def _categorical_for_fit(self, dataset: Dataset):
        """Resolve and check ``categorical_features`` (before any work).

        Returns the bool mask over features (all False when none is categorical).
        In-memory input is checked here on the driver (values must be NaN or
        non-negative integers, at most ``max_bins`` categories per column); data
        read from storage is checked by the workers when they summarise it.
        """
        mask = self._categorical_mask(dataset.n_features)
        if not mask.any():
            return mask
        sources = [info.source for info in dataset.shards]
        if all(isinstance(s, ArraySliceSource) for s in sources) and all(
                s.X is sources[0].X for s in sources):
            a, b = sources[0].start, sources[-1].stop
            check_categorical_values(sources[0].X[a:b], mask, self.max_bins,
                                     boundaries=dataset.boundaries)
        return mask

    def _categorical_mask(self, n_features: int) -> np.ndarray:
        cf = self.categorical_features
        mask = np.zeros(n_features, bool)
        if cf is None:
            return mask
        arr = np.asarray(cf)
        if arr.ndim != 1:
            raise ValueError(
                f"categorical_features must be 1-D (column indices, a boolean mask or column "
                f"names), got an array of shape {arr.shape}.")
        if arr.size == 0:
            return mask
        if arr.dtype.kind == "b":
            if arr.size != n_features:
                raise ValueError(
                    f"categorical_features is a boolean mask of length {arr.size}, but X has "
                    f"{n_features} features; pass a mask of length {n_features} or a list of "
                    "column indices.")
            return arr.astype(bool)
        if arr.dtype.kind in "iu":
            idx = arr.astype(np.int64)
            out = idx[(idx < 0) | (idx >= n_features)]
            if out.size:
                raise ValueError(
                    f"categorical_features has index {int(out[0])}, out of range: X has "
                    f"{n_features} features (valid indices 0..{n_features - 1}).")
        elif arr.dtype.kind in "OUS" and all(isinstance(v, str) for v in arr):
            names = getattr(self, "feature_names_in_", None)
            if names is None:
                raise ValueError(
                    "categorical_features names columns, but X has no feature names; fit on a "
                    "pandas DataFrame with string column names, or pass column indices or a "
                    "boolean mask.")
            pos = {str(n): i for i, n in enumerate(names)}
            unknown = [str(v) for v in arr if str(v) not in pos]
            if unknown:
                raise ValueError(
                    f"categorical_features names {unknown[:5]} that are not columns of X "
                    f"(columns: {[str(n) for n in names][:10]}...).")
            idx = np.array([pos[str(v)] for v in arr], np.int64)
        else:
            raise ValueError(
                "categorical_features must hold integer column indices, a boolean mask or "
                f"column names (str); got values of dtype {arr.dtype}.")
        uniq, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][0]
            raise ValueError(
                f"categorical_features lists column {cf[int(np.flatnonzero(idx == dup)[0])]!r} "
                "more than once; list each categorical column once.")
        mask[idx] = True
        return mask

    def _class_weight_for_fit(self, dataset: Dataset, classes):
        """``class_weight`` as per-class multipliers in the order of ``classes`` (before
        any work). ``"balanced_subsample"`` is returned as is: it is computed per tree."""
        cw = self.class_weight
        if isinstance(cw, str) and cw == "balanced_subsample":
            return cw
        return class_weight_vector(cw, classes, dataset.labels())

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _check_loaded(self):
        """After loading from a file: the forest's structure (see ``io.model_files``)."""
        if getattr(self, "_classifier", False) and not hasattr(self, "classes_"):
            # DecisionTreeClassifier files written before classes_ was saved.
            raise ValueError("the classifier's classes_ were not saved (a DecisionTree"
                             "Classifier saved by shardlearn before 2026-12-03): refit it.")
        try:
            if not hasattr(self, "forest_") or not hasattr(self, "n_features_in_"):
                raise ValueError("it holds no fitted forest (forest_, n_features_in_).")
            M.check_forest(self.forest_, int(self.n_features_in_))
        except ValueError as exc:
            raise ValueError(f"{exc} The model file is damaged; save the model again.") from None

    def _leaf_outputs(self, X):
        Xc = self._predict_input(X, allow_nan=True)
        return M.leaf_outputs(self.forest_, Xc)

    #: How the trees combine: "mean" (trees, forests) or "boost" (baseline + sum).
    _onnx_kind = "mean"

    def to_onnx(self, path=None, *, dtype=np.float64, ml_opset=5):
        """The fitted model as an ONNX graph (``onnx.ModelProto``); needs ``shardlearn[onnx]``.

        Input ``X``: ``(N, n_features)`` of ``dtype``, NaN meaning missing.
        Outputs follow skl2onnx: classifiers give ``label`` (``(N,)``, the class
        labels: int64 for integer classes, strings for string classes) and
        ``probabilities`` (``(N, n_classes)``, as ``predict_proba``); regressors give
        ``variable`` (``(N, 1)``, as ``predict``). Splits, missing-value
        directions and categorical splits are reproduced exactly.

        Parameters
        ----------
        path : str or path-like, optional
            Also write the model there (use a ``.onnx`` suffix).
        dtype : np.float64 or np.float32, default=np.float64
            Type of the input, thresholds and leaf values. float64 reproduces
            ``predict``/``predict_proba`` to float64 rounding; float32 rounds each
            threshold down to a float32, so float32 inputs route exactly as here and
            only the sums carry float32 rounding.
        ml_opset : {5, 3}, default=5
            5: the ``ai.onnx.ml`` ``TreeEnsemble`` operator (onnxruntime 1.20 or
            newer); outputs of ``dtype``, categorical splits as ``BRANCH_MEMBER``.
            3: ``TreeEnsembleRegressor`` (older runtimes); float32 outputs whatever
            ``dtype``, and a model with categorical splits raises ``ValueError``.

        Returns
        -------
        onnx.ModelProto

        Examples
        --------
        >>> import onnxruntime as ort                               # doctest: +SKIP
        >>> model = clf.to_onnx("model.onnx")                       # doctest: +SKIP
        >>> sess = ort.InferenceSession("model.onnx")               # doctest: +SKIP
        >>> label, proba = sess.run(None, {"X": X.astype(np.float64)})  # doctest: +SKIP
        """
        from sklearn.utils.validation import check_is_fitted

        from .. import __version__
        from ..algorithms.tree.onnx_export import forest_to_onnx, import_onnx

        check_is_fitted(self)
        onnx = import_onnx()
        model = forest_to_onnx(
            self.forest_, n_features=self.n_features_in_, kind=self._onnx_kind,
            classes=getattr(self, "classes_", None) if self._classifier else None,
            baseline=getattr(self, "baseline_", None), dtype=dtype, ml_opset=ml_opset,
            name=type(self).__name__, feature_names=getattr(self, "feature_names_in_", None),
            producer_version=__version__)
        if path is not None:
            onnx.save_model(model, path)
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        return tags


def resolve_max_features(max_features, n_features: int) -> int | None:
    """Number of candidate features per node (None: all)."""
    if max_features is None:
        return None
    if max_features == "sqrt":
        k = int(np.sqrt(n_features))
    elif max_features == "log2":
        k = int(np.log2(n_features))
    elif isinstance(max_features, (Integral, np.integer)):
        if max_features > n_features:
            raise ValueError(f"max_features={max_features} is larger than the number of "
                             f"features ({n_features}); pass at most {n_features}.")
        k = int(max_features)
    else:
        k = int(max_features * n_features)
    k = max(1, k)
    return None if k >= n_features else k


def class_weight_vector(class_weight, classes, labels) -> np.ndarray | None:
    """Per-class multipliers of the row weights (None stays None), in the order of ``classes``.

    ``"balanced"``: ``n / (n_classes * count)`` from the unweighted label counts,
    the same float operations as scikit-learn's ``compute_class_weight``. A dict
    gives 1 to the classes it does not name. Raises ``ValueError`` for a dict that
    names a label not in ``labels`` (scikit-learn ignores such a key when every class
    is named; here it is most likely a typo or a wrong label type), or for weights
    that are not finite non-negative numbers, or all zero.
    """
    if class_weight is None:
        return None
    K = len(classes)
    if isinstance(class_weight, str):     # "balanced" (the constraints allow nothing else)
        counts = np.bincount(np.searchsorted(classes, labels), minlength=K).astype(np.float64)
        return counts.sum() / (K * counts)
    # Plain Python values: dict keys (0, "a", np.int64(0)...) match them by value.
    plain = [c.item() if isinstance(c, np.generic) else c for c in classes]
    known = set(plain)
    unknown = [k for k in class_weight if k not in known]
    if unknown:
        raise ValueError(
            f"class_weight names {unknown[:5]!r}, not among the classes of y "
            f"({classes[:10].tolist()!r}); name each class by its label in y.")
    values = [class_weight.get(c, 1.0) for c in plain]
    for c, v in zip(plain, values):
        if not isinstance(v, Real) or not np.isfinite(v) or v < 0:
            raise ValueError(f"class_weight gives class {c!r} the weight {v!r}; class weights "
                             "must be finite non-negative numbers.")
    w = np.array(values, dtype=np.float64)
    if not (w > 0).any():
        raise ValueError("class_weight gives every class the weight 0: nothing would be learned.")
    return w

