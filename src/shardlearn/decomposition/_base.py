"""What PCA and TruncatedSVD share: input checks before any work, and driver-side projection."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted

from ..base import DistributedEstimatorMixin


class _DistributedDecomposition(DistributedEstimatorMixin, ClassNamePrefixFeaturesOutMixin,
                                TransformerMixin, BaseEstimator):
    """Base of the distributed matrix decompositions (not for direct use)."""

    def _decomposition_dataset(self, X):
        """Validate ``X`` (and the Dataset's shards) and return the Dataset; no worker runs."""
        dataset = self._fit_dataset(X)
        name = type(self).__name__
        if dataset.has_weights:
            raise ValueError(
                f"{name} does not use sample weights, but the Dataset carries them. Build the "
                "Dataset without sample_weight (scikit-learn's decompositions have none either)."
            )
        for info in dataset.shards:
            if info.n_rows == 0:
                raise ValueError(
                    f"{name}: shard {info.index} of the Dataset is empty "
                    f"({info.source.describe()}). Every shard needs at least one row; "
                    "rebuild the Dataset with fewer shards."
                )
        return dataset

    def _check_inverse_input(self, X):
        check_is_fitted(self)
        X = check_array(X, input_name="X", dtype=[np.float64, np.float32])
        k = self.components_.shape[0]
        if X.shape[1] != k:
            raise ValueError(
                f"X has {X.shape[1]} columns, but {type(self).__name__} has {k} components; "
                "inverse_transform expects the output of transform."
            )
        return X

    @property
    def _n_features_out(self):
        """Number of transformed output features."""
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
