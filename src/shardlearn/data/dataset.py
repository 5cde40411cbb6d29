"""Dataset: an ordered list of shards and the sources that rebuild them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .planning import DEFAULT_SHARD_BYTES, plan_shard_count, row_boundaries
from .shard import ArraySliceSource, Shard, ShardSource, shard_nbytes
from .validation import (
    check_features,
    check_finite,
    check_sample_weight,
    check_target,
)

_dataset_ids = itertools.count()


@dataclass(frozen=True)
class ShardInfo:
    """What the coordinator knows about a shard without loading it."""

    index: int
    n_rows: int
    nbytes: int
    source: ShardSource


class Dataset:
    """An ordered list of shards.

    Build one with :meth:`from_arrays` (ndarray, DataFrame or CSR, plus labels and
    sample weights). The number of shards depends on the data only: by default
    one shard per ~16 MiB of features (at least 1,024 rows), or ``n_shards``.

    Parameters
    ----------
    shards : sequence of ShardInfo
    n_features : int
    has_labels, has_weights : bool
    feature_names : ndarray of str or None
    """

    def __init__(self, shards: Sequence[ShardInfo], n_features: int, *, has_labels: bool,
                 has_weights: bool, feature_names=None, dtype=np.float64):
        if not shards:
            raise ValueError("A Dataset needs at least one shard.")
        self.shards = list(shards)
        self.n_features = int(n_features)
        self.has_labels = has_labels
        self.has_weights = has_weights
        self.feature_names = feature_names
        self.dtype = np.dtype(dtype)
        self.id = next(_dataset_ids)
        self._labels_cache = None
        self._missing_allowed = None

    # -- construction -----------------------------------------------------------
    @classmethod
    def from_arrays(cls, X, y=None, sample_weight=None, *, n_shards: int | None = None,
                    shard_bytes: int = DEFAULT_SHARD_BYTES, dtype=None, multi_target: bool = False,
                    allow_nan: bool = False, boundaries=None) -> Dataset:
        """Split in-memory arrays into contiguous shards (views, no copies).

        Validates everything first (shape, dtype, NaN/inf, lengths, weights); the
        caller's arrays are never modified. ``allow_nan=True`` accepts NaN (missing
        values) in X, for estimators that handle them; inf is still an error.
        ``boundaries`` (row offsets ``[0, ..., n_rows]``, increasing) sets the shards
        explicitly, e.g. to match a file dataset's ``Dataset.boundaries``.
        """
        feature_names = None
        if hasattr(X, "columns"):
            cols = np.asarray(X.columns)
            if all(isinstance(c, str) for c in cols):
                feature_names = cols.astype(object)
        Xc = check_features(X, dtype=dtype)
        n_rows = Xc.shape[0]
        row_nbytes = shard_nbytes(Xc) / n_rows
        if boundaries is not None:
            if n_shards is not None:
                raise ValueError("Pass n_shards or boundaries, not both (boundaries set the shards).")
            bounds = _check_boundaries(boundaries, n_rows)
        else:
            if n_shards is None:
                n_shards = plan_shard_count(n_rows, row_nbytes, shard_bytes=shard_bytes)
            elif not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
                raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}.")
            bounds = row_boundaries(n_rows, int(n_shards))
        check_finite(Xc, name="X", boundaries=bounds, allow_nan=allow_nan)
        yc = None
        if y is not None:
            yc = check_target(y, n_rows, allow_2d=multi_target)
            if yc.dtype.kind == "f":
                check_finite(yc, name="y", boundaries=bounds)
        swc = check_sample_weight(sample_weight, n_rows, boundaries=bounds)
        infos = []
        for i in range(len(bounds) - 1):
            a, b = int(bounds[i]), int(bounds[i + 1])
            src = ArraySliceSource(Xc, yc, swc, a, b)
            nb = shard_nbytes(Xc[a:b], None if yc is None else yc[a:b], None if swc is None else swc[a:b])
            infos.append(ShardInfo(i, b - a, nb, src))
        return cls(infos, Xc.shape[1], has_labels=yc is not None, has_weights=swc is not None,
                   feature_names=feature_names, dtype=Xc.dtype)

    @classmethod
    def from_files(cls, url, *, label=None, features=None, weight=None, format=None,
                   dtype=np.float64, storage_options=None, shard_rows=None,
                   shard_bytes: int = DEFAULT_SHARD_BYTES, delimiter: str = ",") -> Dataset:
        """A dataset over Parquet/CSV files (path, directory, glob or list; local or storage URLs).

        The driver reads metadata only; workers read their own shards. See
        :func:`shardlearn.data.readers.open_dataset`.
        """
        from .readers import open_dataset

        return open_dataset(url, label=label, features=features, weight=weight, format=format,
                            dtype=dtype, storage_options=storage_options, shard_rows=shard_rows,
                            shard_bytes=shard_bytes, delimiter=delimiter)

    # -- facts ------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def n_rows(self) -> int:
        return int(sum(s.n_rows for s in self.shards))

    @property
    def nbytes(self) -> int:
        return int(sum(s.nbytes for s in self.shards))

    @property
    def boundaries(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([s.n_rows for s in self.shards])])

    def load_shard(self, index: int) -> Shard:
        info = self.shards[index]
        return info.source.load(index)

    def iter_shards(self):
        for i in range(self.n_shards):
            yield self.load_shard(i)

    def labels(self) -> np.ndarray:
        """All labels, concatenated in shard order (small: one value per row)."""
        if not self.has_labels:
            raise ValueError("This Dataset has no labels; build it with y=... to fit a supervised model.")
        if self._labels_cache is None:
            # Sources that read storage give their label column alone (one value per
            # row) instead of loading every shard's rows on the driver.
            parts = []
            for i, info in enumerate(self.shards):
                load_labels = getattr(info.source, "load_labels", None)
                parts.append(load_labels() if load_labels is not None else self.load_shard(i).y)
            self._labels_cache = np.concatenate(parts)
        return self._labels_cache

    def allowing_missing(self) -> Dataset:
        """This dataset for an estimator that handles missing values (the trees):
        shards read from storage let NaN features through (inf stays an error; so do
        missing labels and weights). ``self`` when no shard is read from storage
        (in-memory data is checked once, when the estimator takes it)."""
        import dataclasses

        if self._missing_allowed is not None:     # one copy: its labels are read once
            return self._missing_allowed
        infos = [dataclasses.replace(i, source=i.source.allowing_missing())
                 if hasattr(i.source, "allowing_missing") else i for i in self.shards]
        if all(a.source is b.source for a, b in zip(infos, self.shards)):
            return self
        out = Dataset(infos, self.n_features, has_labels=self.has_labels,
                      has_weights=self.has_weights, feature_names=self.feature_names,
                      dtype=self.dtype)
        out._labels_cache = self._labels_cache
        out._missing_allowed = out
        self._missing_allowed = out
        return out

    def to_arrays(self):
        """Concatenate every shard on the driver (for small data, tests and prediction)."""
        parts = list(self.iter_shards())
        Xs = [p.X for p in parts]
        X = sp.vstack(Xs, format="csr") if sp.issparse(Xs[0]) else np.concatenate(Xs)
        y = np.concatenate([p.y for p in parts]) if self.has_labels else None
        w = np.concatenate([p.sample_weight for p in parts]) if self.has_weights else None
        return X, y, w

    def __repr__(self) -> str:
        return (f"Dataset(n_rows={self.n_rows}, n_features={self.n_features}, "
                f"n_shards={self.n_shards}, nbytes={self.nbytes})")


def _check_boundaries(boundaries, n_rows: int) -> np.ndarray:
    b = np.asarray(boundaries)
    if b.ndim != 1 or b.size < 2 or b.dtype.kind not in "iu":
        raise ValueError("boundaries must be a 1-D list of integer row offsets [0, ..., n_rows].")
    b = b.astype(np.int64)
    if b[0] != 0 or b[-1] != n_rows or (np.diff(b) <= 0).any():
        raise ValueError(
            f"boundaries must start at 0, end at the number of rows ({n_rows}) and increase "
            f"strictly (every shard needs a row); got {b.tolist()[:8]}{' ...' if b.size > 8 else ''}."
        )
    return b
