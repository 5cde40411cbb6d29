"""Shared shape of the distributed linear classifiers."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model._base import LinearClassifierMixin

from ..algorithms.linear.classifier import class_weight_vector, fit_linear_classifier
from ..base import DistributedEstimatorMixin, safe_matmul
from ..data import Dataset
from ..data.validation import check_classification_target
from ..runtime.checkpoint import CheckpointStore


def check_y_given(estimator, X, y):
    """A supervised fit on arrays needs ``y``: say so before any work (a Dataset carries it)."""
    if y is None and not isinstance(X, Dataset):
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None. "
            "Pass fit(X, y), or a Dataset built with labels."
        )


def checkpoint_stores(estimator, dataset, classes, checkpoint, checkpoint_every, resume,
                      storage_options):
    """Checkpoint stores for a fit, validated (and a resume point read) before any work."""
    if checkpoint is None and resume is None:
        return None, None
    if estimator.solver != "lbfgs":
        raise ValueError("checkpoint/resume needs solver='lbfgs'; trust-ncg keeps its state "
                         "inside scipy, where it cannot be saved.")
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    # Stopping rules (max_iter, tol) may change between a fit and its resumption.
    params = {k: v for k, v in estimator.get_params(deep=False).items()
              if k not in ("max_iter", "tol")}
    fingerprint = {
        "estimator": type(estimator).__name__, "params": params,
        "n_rows": dataset.n_rows, "n_features": dataset.n_features,
        "n_shards": dataset.n_shards, "classes": [str(c) for c in classes],
    }
    ckpt = None if checkpoint is None else CheckpointStore(
        checkpoint, every=int(checkpoint_every), fingerprint=fingerprint,
        storage_options=storage_options)
    res = None
    if resume is not None:
        res = CheckpointStore(resume, fingerprint=fingerprint, storage_options=storage_options)
        res.load()
    return ckpt, res


class DistributedLinearClassifier(DistributedEstimatorMixin, LinearClassifierMixin,
                                  ClassifierMixin, BaseEstimator):
    """Base for LogisticRegression and LinearSVC; subclasses set the loss."""

    _loss = "log_loss"
    _penalize_intercept = False
    _model_attributes = ("coef_", "intercept_", "classes_", "n_iter_")

    def _fit(self, X, y, sample_weight, intercept_scaling=1.0, checkpoint=None,
             checkpoint_every=1, resume=None, storage_options=None):
        check_y_given(self, X, y)
        if y is not None and np.asarray(y).ndim == 2 and np.asarray(y).shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change "
                "the shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning, stacklevel=3,
            )
        dataset = self._fit_dataset(X, y, sample_weight)
        labels = dataset.labels()
        classes = check_classification_target(labels, boundaries=dataset.boundaries)
        cw = class_weight_vector(self.class_weight, classes, labels)
        ckpt, res = checkpoint_stores(self, dataset, classes, checkpoint, checkpoint_every,
                                      resume, storage_options)
        fit = fit_linear_classifier(
            dataset, classes, loss=self._loss, C=self.C, fit_intercept=self.fit_intercept,
            penalize_intercept=self._penalize_intercept, intercept_scaling=intercept_scaling,
            class_weight=cw, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
            estimator=type(self).__name__, checkpoint=ckpt, resume=res,
        )
        self.classes_ = classes
        self.coef_ = fit.coef
        self.intercept_ = fit.intercept
        self.n_iter_ = np.array([fit.result.n_iter], dtype=np.int32)
        self.fit_report_ = fit.report
        return self

    def decision_function(self, X):
        """Signed distance to the hyperplane(s); computed on the driver, no cluster needed.

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        Xc = self._predict_input(X)
        scores = safe_matmul(Xc, self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
