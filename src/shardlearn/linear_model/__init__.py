"""Distributed linear models."""

from ._least_squares import LinearRegression, Ridge
from ._logistic import LogisticRegression
from ._svc import LinearSVC

__all__ = ["LinearRegression", "LinearSVC", "LogisticRegression", "Ridge"]
