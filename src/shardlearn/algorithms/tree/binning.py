"""Distributed quantile binning of features into uint8 bins.

Every shard returns a small *mergeable summary* per feature: the exact sorted
distinct values with their counts when the shard has at most ``max_bins`` of
them, else a fixed-size sample of its sorted values at evenly spaced ranks
(each standing for ``n / k`` rows). The coordinator merges the summaries in
shard order (so the edges depend on the data, never on the number of workers)
and derives per-feature thresholds:

* at most ``max_bins`` distinct values overall: *exact* bins, one per value,
  with thresholds at the midpoints between consecutive values;
* otherwise: weighted quantiles of the merged summary (``max_bins`` bins).

Bin 0 holds missing values (NaN); value bins are ``1 .. n_bins_f``. Value ``v``
falls in bin ``1 + #(thresholds < v)``, so "bin <= k" means ``v <= thresholds[k-1]``.

*Categorical* features (declared by the caller) always get exact bins, one per
category, whatever the shard sizes: every shard returns its exact distinct values
(a shard with more than ``max_bins`` of them, or with a value that is not a
non-negative integer, returns a marker and the merge raises a clear error).
``BinEdges.bin_values[j]`` then holds the sorted category values of the bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numba import njit

from ._radix_sort import sort_finite

#: Size of the per-shard sample of sorted values for a high-cardinality feature.
SKETCH_SIZE = 2048
MISSING_BIN = 0

# Summary kinds (first item of a per-feature summary).
EXACT, SAMPLE, TOO_MANY_CATEGORIES, BAD_CATEGORY = 0, 1, 2, 3

_ENCODE_HINT = ("Encode categories as integers 0..k-1 (e.g. with "
                "sklearn.preprocessing.OrdinalEncoder) and missing values as NaN.")


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


def _first_bad_category(x) -> int | None:
    """Row of the first value of ``x`` that is not NaN nor a non-negative integer."""
    x = np.asarray(x)
    if x.dtype.kind in "biu":
        bad = np.flatnonzero(x < 0)
    else:
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isnan(x) & ((x < 0) | ~np.isfinite(x) | (x != np.floor(x))))
    return int(bad[0]) if bad.size else None


def feature_summaries(X, max_bins: int, sketch_size: int = SKETCH_SIZE,
                      categorical=None) -> list:
    """Per-feature mergeable summaries of one shard's features.

    Returns a list with, per feature, ``(kind, values, weights, n_missing)``:
    ``kind`` 0 = exact distinct values with counts, 1 = rank sample. A
    ``categorical`` feature (bool mask) is always exact; a shard with more than
    ``max_bins`` categories returns ``(2, [], [n_distinct], n_missing)``, one with a
    value that is not a non-negative integer ``(3, [value], [row], n_missing)``.
    """
    X = _dense(X)
    out = []
    for j in range(X.shape[1]):
        is_cat = categorical is not None and bool(categorical[j])
        if is_cat:
            bad = _first_bad_category(X[:, j])
            if bad is not None:
                out.append((BAD_CATEGORY, np.array([float(X[bad, j])]), np.array([float(bad)]),
                            0))
                continue
        col, n_missing = sort_finite(X[:, j])
        n_ok = col.size
        if n_ok == 0:
            out.append((0, np.empty(0), np.empty(0), n_missing))
            continue
        starts = np.flatnonzero(np.concatenate([[True], col[1:] != col[:-1]]))
        if starts.size <= max_bins:
            counts = np.diff(np.append(starts, n_ok)).astype(np.float64)
            out.append((0, col[starts].astype(np.float64), counts, n_missing))
            continue
        if is_cat:
            out.append((TOO_MANY_CATEGORIES, np.empty(0), np.array([float(starts.size)]),
                        n_missing))
            continue
        k = min(sketch_size, n_ok)
        ranks = ((np.arange(k) + 0.5) * (n_ok / k)).astype(np.int64)
        out.append((1, col[ranks].astype(np.float64), np.full(k, n_ok / k), n_missing))
    return out


@dataclass
class BinEdges:
    """Per-feature thresholds learned from the merged summaries.

    Attributes
    ----------
    thresholds : list of ndarray
        ``thresholds[j]`` has ``n_bins[j] - 1`` increasing float64 values.
    exact : ndarray of bool
        True where feature j has at most ``max_bins`` distinct values; then
        ``bin_values[j]`` holds the value of each of its bins.
    bin_values : list of ndarray
    has_missing : ndarray of bool
        Whether feature j had any NaN in the training data.
    categorical : ndarray of bool
        Whether feature j is categorical (then exact, ``bin_values[j]`` holding the
        sorted category values of its bins ``1 .. n_bins[j]``).
    """

    thresholds: list
    exact: np.ndarray
    bin_values: list
    has_missing: np.ndarray
    categorical: np.ndarray | None = None

    def __post_init__(self):
        if self.categorical is None:
            self.categorical = np.zeros(len(self.thresholds), bool)

    @property
    def n_features(self) -> int:
        return len(self.thresholds)

    def categories(self, feature: int) -> np.ndarray:
        """Sorted category values of a categorical feature's bins (bin k: ``[k - 1]``)."""
        if not self.categorical[feature]:
            raise ValueError(f"feature {feature} is not categorical")
        return self.bin_values[feature]

    def padded_thresholds(self) -> np.ndarray:
        """The thresholds as one (d, 256) float64 array padded with +inf."""
        if max((len(t) for t in self.thresholds), default=0) > 254:
            # Value bins are 1 .. n_thresholds + 1 and must fit in uint8.
            raise ValueError("more than 255 value bins for a feature (max_bins is at most 255)")
        thr = np.full((len(self.thresholds), 256), np.inf)
        for j, t in enumerate(self.thresholds):
            thr[j, :len(t)] = t
        return thr

    def split_tables(self):
        """``(n_thresholds, thresholds, bin_values)`` padded into arrays, for
        :meth:`split_thresholds` (build once per fit)."""
        n_thr = np.array([len(t) for t in self.thresholds], np.int64)
        thr = self.padded_thresholds()
        vals = np.zeros(thr.shape)
        for j in np.flatnonzero(self.exact):
            vals[j, :len(self.bin_values[j])] = self.bin_values[j]
        return n_thr, thr, vals

    def split_thresholds(self, feature, bin_lo, bin_hi, tables=None) -> np.ndarray:
        """:meth:`split_threshold` of many splits (int arrays), the same values;
        ``tables``: :meth:`split_tables`, if already built."""
        feature = np.asarray(feature, np.int64)
        bin_lo = np.asarray(bin_lo, np.int64)
        bin_hi = np.asarray(bin_hi, np.int64)
        n_thr, thr, vals = self.split_tables() if tables is None else tables
        n = n_thr[feature]
        # minimum/maximum, not np.clip: the same ints, without clip's 10-20 us a call.
        top = thr.shape[1] - 1
        lo = np.minimum(np.maximum(bin_lo - 1, 0), top)
        hi = np.minimum(np.maximum(bin_hi - 1, 0), top)
        a, b = vals[feature, lo], vals[feature, hi]
        mid = a / 2.0 + b / 2.0
        mid = np.where(mid >= b, a, mid)
        use_mid = self.exact[feature] & (bin_hi >= 1) & (bin_hi <= n + 1)
        out = np.where(use_mid, mid, thr[feature, lo])
        return np.where(bin_lo > n, np.inf, out)

    @property
    def n_bins(self) -> np.ndarray:
        """Value bins per feature (missing bin not counted)."""
        return np.array([len(t) + 1 for t in self.thresholds], dtype=np.int64)

    @property
    def hist_bins(self) -> int:
        """Histogram length: the missing bin plus the largest number of value bins."""
        return int(self.n_bins.max()) + 1

    def split_threshold(self, feature: int, bin_lo: int, bin_hi: int) -> float:
        """Raw threshold for "bin <= bin_lo" given that ``bin_hi`` is the next non-empty bin.

        Exact features put it at the midpoint of the two values present (like
        scikit-learn's trees); quantile features at the bin's upper edge.
        A split that sends every non-missing value left gets +inf.
        """
        thr = self.thresholds[feature]
        if bin_lo > len(thr):
            return np.inf
        if self.exact[feature] and 1 <= bin_hi <= len(thr) + 1:
            vals = self.bin_values[feature]
            a, b = vals[bin_lo - 1], vals[bin_hi - 1]
            mid = a / 2.0 + b / 2.0
            return float(a if mid >= b else mid)
        return float(thr[bin_lo - 1])


def _check_category_parts(parts, j, max_bins):
    for s, p in enumerate(parts):
        if p[0] == BAD_CATEGORY:
            raise ValueError(
                f"Categorical feature {j} has value {float(p[1][0])!r} at row {int(p[2][0])} of "
                f"shard {s}, which is not a non-negative integer. {_ENCODE_HINT}")
        if p[0] == TOO_MANY_CATEGORIES:
            raise ValueError(
                f"Categorical feature {j} has more than max_bins={max_bins} categories "
                f"({int(p[2][0])} in shard {s} alone). Raise max_bins (at most 255), group "
                "rare categories, or do not declare the feature categorical.")


def merge_summaries(per_shard: list, max_bins: int, categorical=None) -> BinEdges:
    """Merge per-shard summaries (in shard order) into per-feature bin edges.

    ``categorical``: bool mask of categorical features (exact bins, one per category).
    """
    n_features = len(per_shard[0])
    cat = (np.zeros(n_features, bool) if categorical is None
           else np.asarray(categorical, dtype=bool).copy())
    thresholds, exact, bin_values, has_missing = [], [], [], []
    for j in range(n_features):
        parts = [s[j] for s in per_shard]
        if cat[j]:
            _check_category_parts(parts, j, max_bins)
        has_missing.append(any(p[3] > 0 for p in parts))
        vals = np.concatenate([p[1] for p in parts])
        wts = np.concatenate([p[2] for p in parts])
        if cat[j]:
            uniq = np.unique(vals)
            if uniq.size > max_bins:
                raise ValueError(
                    f"Categorical feature {j} has {uniq.size} categories, more than "
                    f"max_bins={max_bins}. Raise max_bins (at most 255), group rare "
                    "categories, or do not declare the feature categorical.")
            thresholds.append(_midpoints(uniq))
            exact.append(True)
            bin_values.append(uniq)
            continue
        if vals.size == 0:
            thresholds.append(np.empty(0))
            exact.append(True)
            bin_values.append(np.zeros(1))
            continue
        all_exact = all(p[0] == 0 for p in parts)
        uniq = np.unique(vals)
        if all_exact and uniq.size <= max_bins:
            thresholds.append(_midpoints(uniq))
            exact.append(True)
            bin_values.append(uniq)
            continue
        order = np.argsort(vals, kind="stable")
        v, w = vals[order], wts[order]
        cw = np.cumsum(w)
        targets = cw[-1] * np.arange(1, max_bins) / max_bins
        idx = np.minimum(np.searchsorted(cw, targets, side="left"), v.size - 1)
        cuts = np.unique(v[idx])
        # A cut at value u means "u goes left"; the largest value needs no cut.
        cuts = cuts[cuts < v[-1]]
        # Put thresholds between the cut value and the next distinct value.
        nxt = uniq[np.minimum(np.searchsorted(uniq, cuts, side="right"), uniq.size - 1)]
        thr = np.unique(_safe_mid(cuts, nxt))
        thresholds.append(thr)
        exact.append(False)
        bin_values.append(np.full(thr.size + 1, np.nan))
    return BinEdges(thresholds, np.array(exact), bin_values, np.array(has_missing), cat)


def _safe_mid(a, b):
    mid = a / 2.0 + b / 2.0
    return np.where(mid >= b, a, mid)


def _midpoints(uniq):
    if uniq.size < 2:
        return np.empty(0)
    return _safe_mid(uniq[:-1], uniq[1:])


def bin_matrix(X, edges: BinEdges) -> np.ndarray:
    """Bin a feature matrix into a C-contiguous uint8 array (NaN -> bin 0)."""
    X = _dense(X)
    n, d = X.shape
    out = np.empty((n, d), dtype=np.uint8)
    if X.dtype.kind == "f" and X.flags.c_contiguous:
        _bin_rows(X, edges.padded_thresholds(), out)
        return out
    for j in range(d):
        col = X[:, j]
        b = np.searchsorted(edges.thresholds[j], col, side="left") + 1
        if col.dtype.kind == "f":
            b[np.isnan(col)] = MISSING_BIN
        out[:, j] = b
    return out


@njit(nogil=True, cache=True)
def _bin_rows(X, thr, out):
    """Row-major binning: bin of v = 1 + #(thresholds < v), NaN -> 0.

    The same answer as ``searchsorted(side="left") + 1`` column by column, in one
    pass over the rows (columns of a row-major matrix are strided reads). The
    search is eight fixed steps over each feature's 256-wide row of thresholds
    padded with +inf, adding comparison results rather than branching on them: the
    comparisons depend on the data, and mispredicted branches cost more than the
    search itself.
    """
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            v = X[i, j]
            t = thr[j]
            lo = 128 * (t[127] < v)
            lo += 64 * (t[lo + 63] < v)
            lo += 32 * (t[lo + 31] < v)
            lo += 16 * (t[lo + 15] < v)
            lo += 8 * (t[lo + 7] < v)
            lo += 4 * (t[lo + 3] < v)
            lo += 2 * (t[lo + 1] < v)
            lo += t[lo] < v
            out[i, j] = 0 if np.isnan(v) else lo + 1


def check_categorical_values(X, categorical, max_bins: int, *, name: str = "X",
                             boundaries=None) -> None:
    """Driver-side check of in-memory categorical columns (reads ``X``, never writes it).

    Raises ValueError naming the column and row of the first value that is not NaN
    nor a non-negative integer, or a column with more than ``max_bins`` categories.
    """
    from ...data.validation import _where

    cols = np.flatnonzero(np.asarray(categorical, dtype=bool))
    Xc = X[:, cols].tocsc() if sp.issparse(X) and cols.size else None
    for k, j in enumerate(cols):
        if Xc is not None:
            a, b = Xc.indptr[k], Xc.indptr[k + 1]
            data = Xc.data[a:b]
            bad = _first_bad_category(data)
            row = None if bad is None else int(Xc.indices[a + bad])
            value = None if bad is None else data[bad]
            present = np.unique(data[~np.isnan(data)]) if data.dtype.kind == "f" else np.unique(data)
            n_cat = present.size + int(b - a < X.shape[0] and not (present == 0).any())
        else:
            col = X[:, j]
            bad = _first_bad_category(col)
            row = bad
            value = None if bad is None else col[bad]
            n_cat = np.unique(col[~np.isnan(col)] if col.dtype.kind == "f" else col).size
        if row is not None:
            raise ValueError(
                f"Categorical column {j} of {name} has value {float(value)!r} at "
                f"{_where(row, boundaries)}, which is not a non-negative integer. "
                f"{_ENCODE_HINT}")
        if n_cat > max_bins:
            raise ValueError(
                f"Categorical column {j} of {name} has {n_cat} categories, more than "
                f"max_bins={max_bins}. Raise max_bins (at most 255), group rare categories, "
                "or do not declare the column categorical.")
