"""What every shardlearn estimator shares: input handling, fit reports, saving.

An estimator is a thin scikit-learn class over a functional core in
``shardlearn.algorithms``; ``__init__`` only stores parameters.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from .data import Dataset
from .data.validation import check_features, check_finite


class DistributedEstimatorMixin:
    """Turns user input into a validated :class:`Dataset` and keeps ``fit_report_``.

    Subclasses list the fitted attributes a saved model needs in
    ``_model_attributes`` (used by :mod:`shardlearn.io.model_files`).
    """

    _model_attributes: tuple[str, ...] = ()

    def _fit_dataset(self, X, y=None, sample_weight=None, *, multi_target=False,
                     allow_nan=False) -> Dataset:
        """Validate everything and return the dataset; no worker has run yet.

        ``allow_nan=True`` lets NaN (missing values) through for estimators that handle them.
        """
        if isinstance(X, Dataset):
            if y is not None or sample_weight is not None:
                raise ValueError(
                    "A Dataset carries its own labels and weights; pass fit(dataset) "
                    "without y/sample_weight, or pass arrays instead of a Dataset."
                )
            self.n_features_in_ = X.n_features
            if X.feature_names is not None:
                self.feature_names_in_ = X.feature_names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            return X.allowing_missing() if allow_nan else X
        validate_data(self, X, skip_check_array=True, reset=True)
        Xc = check_features(X)
        self.n_features_in_ = Xc.shape[1]
        return Dataset.from_arrays(Xc, y, sample_weight, multi_target=multi_target,
                                   allow_nan=allow_nan)

    def _predict_input(self, X, allow_nan=False):
        """Validate prediction input on the driver (no cluster needed)."""
        check_is_fitted(self)
        if isinstance(X, Dataset):
            X = (X.allowing_missing() if allow_nan else X).to_arrays()[0]
            Xc = check_features(X)
        else:
            Xc = check_features(X)  # first: a 1-D X gets the "Reshape your data" error
            validate_data(self, X, skip_check_array=True, reset=False)
        if Xc.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xc.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        check_finite(Xc, name="X", allow_nan=allow_nan)
        return Xc

    def _checkpoint_stores(self, dataset, checkpoint, checkpoint_every, resume, storage_options,
                           **identity):
        """Checkpoint stores for a fit, validated (and a resume point read) before any work.

        A checkpoint is tied to the estimator, its parameters (except the stopping
        rules ``max_iter`` and ``tol``, which a resumed fit may change), the data's
        shape and ``identity`` (e.g. the classes).
        """
        from .runtime.checkpoint import CheckpointStore

        if checkpoint is None and resume is None:
            return None, None
        if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
            raise ValueError(
                f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("max_iter", "tol")}
        fingerprint = {"estimator": type(self).__name__, "params": params,
                       "n_rows": dataset.n_rows, "n_features": dataset.n_features,
                       "n_shards": dataset.n_shards, **identity}
        ckpt = None if checkpoint is None else CheckpointStore(
            checkpoint, every=int(checkpoint_every), fingerprint=fingerprint,
            storage_options=storage_options)
        res = None
        if resume is not None:
            res = CheckpointStore(resume, fingerprint=fingerprint, storage_options=storage_options)
            res.load()
        return ckpt, res

    def save(self, path, storage_options: dict | None = None) -> None:
        """Save the fitted model as JSON + npz (no pickle); see :func:`shardlearn.load`.

        ``path``: a local directory, or a storage URL (``s3://bucket/models/m1``, ...),
        written atomically; ``storage_options`` as for :func:`shardlearn.read_parquet`.
        """
        from .io.model_files import save_model

        save_model(self, path, storage_options=storage_options)


class FitTimer:
    """Wall time of a fit, from the ``fit`` call to its return."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def safe_matmul(X, w):
    """``X @ w`` for dense or CSR ``X``, returning a dense ndarray."""
    out = X @ w
    return np.asarray(out) if sp.issparse(out) else out


__all__ = ["BaseEstimator", "DistributedEstimatorMixin", "FitTimer", "safe_matmul"]
