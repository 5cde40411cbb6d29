"""What the histogram-tree estimators share: input checks, seeds, driver prediction."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import DataConversionWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ..algorithms.tree import model as M
from ..base import DistributedEstimatorMixin
from ..data import Dataset
from ..data.validation import as_numeric_target, check_classification_target

COMMON_CONSTRAINTS: dict = {
    "max_bins": [Interval(Integral, 2, 255, closed="both")],
    "parallel": [StrOptions({"data", "feature"})],
    "random_state": ["random_state"],
}

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

    def _dataset_for_fit(self, X, y, sample_weight, classifier: bool):
        """Validate everything (no worker runs before this returns)."""
        self._check_y_given(X, y)
        if not classifier:
            y = as_numeric_target(y)
        dataset = self._fit_dataset(X, y, sample_weight, allow_nan=True)
        labels = dataset.labels()
        if classifier:
            classes = check_classification_target(labels, boundaries=dataset.boundaries)
            return dataset, classes
        if labels.dtype.kind not in "biuf":
            try:
                labels.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{type(self).__name__} needs numeric targets; y has dtype {labels.dtype}."
                ) from None
        return dataset, None

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _leaf_outputs(self, X):
        Xc = self._predict_input(X, allow_nan=True)
        return M.leaf_outputs(self.forest_, Xc)

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
