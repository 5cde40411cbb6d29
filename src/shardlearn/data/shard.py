"""A shard: one block of rows, and the source that can rebuild it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp


@dataclass
class Shard:
    """A block of rows held by one worker.

    Attributes
    ----------
    index : int
        Position of the shard in its dataset; reductions run in this order.
    X : ndarray of shape (n_rows, n_features) or scipy CSR matrix
        Features. Dense shards are C-contiguous float32/float64.
    y : ndarray of shape (n_rows,) or (n_rows, n_targets), or None
    sample_weight : ndarray of shape (n_rows,) or None
    """

    index: int
    X: Any
    y: np.ndarray | None = None
    sample_weight: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    @property
    def nbytes(self) -> int:
        return shard_nbytes(self.X, self.y, self.sample_weight)

    def weights(self) -> np.ndarray:
        """Per-row weights (ones when none were given)."""
        if self.sample_weight is None:
            return np.ones(self.n_rows, dtype=np.float64)
        return self.sample_weight


def shard_nbytes(X, y=None, sample_weight=None) -> int:
    if sp.issparse(X):
        n = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    else:
        n = X.nbytes
    for a in (y, sample_weight):
        if a is not None:
            n += a.nbytes
    return int(n)


class ShardSource(Protocol):
    """Knows how to (re)build one shard.

    ``load_on_worker`` says where ``load`` runs: sources that read storage load
    on the worker (the driver never holds the rows); in-memory slices load on
    the driver, which already holds the array, and are shipped to the worker.
    """

    load_on_worker: bool

    def load(self, index: int) -> Shard: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class ArraySliceSource:
    """Rows ``[start, stop)`` of in-memory arrays; loading is a zero-copy view."""

    X: Any
    y: np.ndarray | None
    sample_weight: np.ndarray | None
    start: int
    stop: int
    load_on_worker: bool = False

    def load(self, index: int) -> Shard:
        sl = slice(self.start, self.stop)
        return Shard(
            index=index,
            X=self.X[sl],
            y=None if self.y is None else self.y[sl],
            sample_weight=None if self.sample_weight is None else self.sample_weight[sl],
        )

    def describe(self) -> str:
        return f"rows {self.start}:{self.stop} of an in-memory array"
