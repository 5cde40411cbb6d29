"""Distributed decision trees on binned features (level-wise or best-first histogram growth)."""

from ._classes import DecisionTreeClassifier, DecisionTreeRegressor

__all__ = ["DecisionTreeClassifier", "DecisionTreeRegressor"]
