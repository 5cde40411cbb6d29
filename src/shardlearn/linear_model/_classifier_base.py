"""Shared shape of the distributed linear classifiers."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model._base import LinearClassifierMixin

from ..algorithms.linear.classifier import class_weight_vector, fit_linear_classifier
from ..base import DistributedEstimatorMixin, safe_matmul
from ..data import Dataset
from ..data.validation import check_classification_target


def check_y_given(estimator, X, y):
    """A supervised fit on arrays needs ``y``: say so before any work (a Dataset carries it)."""
    if y is None and not isinstance(X, Dataset):
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None. "
            "Pass fit(X, y), or a Dataset built with labels."
        )


class DistributedLinearClassifier(DistributedEstimatorMixin, LinearClassifierMixin,
                                  ClassifierMixin, BaseEstimator):
    """Base for LogisticRegression and LinearSVC; subclasses set the loss."""

    _loss = "log_loss"
    _penalize_intercept = False
    _model_attributes = ("coef_", "intercept_", "classes_", "n_iter_")

    #: liblinear's constant-feature value (LinearSVC's parameter); 1.0 elsewhere.
    intercept_scaling = 1.0

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, *, checkpoint=None, checkpoint_every=1,
            resume=None, storage_options=None):
        """Fit on X (ndarray, DataFrame, CSR or Dataset) and labels y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features) or Dataset
        y : array-like of shape (n_samples,)
            Omitted when X is a Dataset (it carries its labels).
        sample_weight : array-like of shape (n_samples,), default=None
        checkpoint : str, optional
            Local path or storage URL where the solver state (iterate, gradient,
            L-BFGS memory, iteration) is written atomically every
            ``checkpoint_every`` iterations (``solver="lbfgs"`` only).
        checkpoint_every : int, default=1
        resume : str, optional
            A checkpoint written by an earlier fit of the same estimator on the
            same data: continue from it. The result is bit-identical to an
            uninterrupted fit.
        storage_options : dict, optional
            File-system options for checkpoint URLs (e.g. S3 endpoint, credentials).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, intercept_scaling=self.intercept_scaling,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         resume=resume, storage_options=storage_options)

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
        if (checkpoint is not None or resume is not None) and self.solver != "lbfgs":
            raise ValueError("checkpoint/resume needs solver='lbfgs'; trust-ncg keeps its state "
                             "inside scipy, where it cannot be saved.")
        ckpt, res = self._checkpoint_stores(dataset, checkpoint, checkpoint_every, resume,
                                            storage_options, classes=[str(c) for c in classes])
        fit = fit_linear_classifier(
            dataset, classes, loss=self._loss, C=self.C, fit_intercept=self.fit_intercept,
            penalize_intercept=self._penalize_intercept, intercept_scaling=intercept_scaling,
            class_weight=cw, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
            estimator=type(self).__name__, checkpoint=ckpt, resume=res,
        )
        self.classes_ = classes
        self.coef_ = fit.coef
        self.intercept_ = fit.intercept
        # As scikit-learn: an array for LogisticRegression, an int for LinearSVC.
        self.n_iter_ = self._n_iter_output(fit.result.n_iter)
        self.fit_report_ = fit.report
        return self

    def _n_iter_output(self, n_iter):
        return np.array([n_iter], dtype=np.int32)

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
