"""Coordinator-side optimisers whose whole state can be checkpointed."""

from .lbfgs import LBFGSState, lbfgs
from .line_search import wolfe_line_search

__all__ = ["LBFGSState", "lbfgs", "wolfe_line_search"]
