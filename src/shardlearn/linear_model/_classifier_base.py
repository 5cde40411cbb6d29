"""Shared shape of the distributed linear classifiers."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model._base import LinearClassifierMixin

from ..algorithms.linear.classifier import class_weight_vector, fit_linear_classifier
from ..base import DistributedEstimatorMixin, safe_matmul
from ..data.validation import check_classification_target


class DistributedLinearClassifier(DistributedEstimatorMixin, LinearClassifierMixin,
                                  ClassifierMixin, BaseEstimator):
    """Base for LogisticRegression and LinearSVC; subclasses set the loss."""

    _loss = "log_loss"
    _penalize_intercept = False
    _model_attributes = ("coef_", "intercept_", "classes_", "n_iter_")

    def _fit(self, X, y, sample_weight, intercept_scaling=1.0):
        dataset = self._fit_dataset(X, y, sample_weight)
        labels = dataset.labels()
        classes = check_classification_target(labels, boundaries=dataset.boundaries)
        cw = class_weight_vector(self.class_weight, classes, labels)
        fit = fit_linear_classifier(
            dataset, classes, loss=self._loss, C=self.C, fit_intercept=self.fit_intercept,
            penalize_intercept=self._penalize_intercept, intercept_scaling=intercept_scaling,
            class_weight=cw, solver=self.solver, tol=self.tol, max_iter=self.max_iter,
            estimator=type(self).__name__,
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
