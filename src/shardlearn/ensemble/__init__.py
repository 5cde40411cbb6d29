"""Distributed tree ensembles: random forests and gradient boosting."""

from ._forest import RandomForestClassifier, RandomForestRegressor
from ._gb import GradientBoostingClassifier, GradientBoostingRegressor

__all__ = ["GradientBoostingClassifier", "GradientBoostingRegressor", "RandomForestClassifier",
           "RandomForestRegressor"]
