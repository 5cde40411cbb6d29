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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Size of the per-shard sample of sorted values for a high-cardinality feature.
SKETCH_SIZE = 2048
MISSING_BIN = 0


def _dense(X):
    return X.toarray() if sp.issparse(X) else X


def feature_summaries(X, max_bins: int, sketch_size: int = SKETCH_SIZE) -> list:
    """Per-feature mergeable summaries of one shard's features.

    Returns a list with, per feature, ``(kind, values, weights, n_missing)``:
    ``kind`` 0 = exact distinct values with counts, 1 = rank sample.
    """
    X = _dense(X)
    out = []
    for j in range(X.shape[1]):
        col = np.sort(X[:, j])  # NaN sorts last
        n_ok = col.size
        if col.dtype.kind == "f":
            n_ok = int(col.size - np.count_nonzero(np.isnan(col)))
        col = col[:n_ok]
        n_missing = int(X.shape[0] - n_ok)
        if n_ok == 0:
            out.append((0, np.empty(0), np.empty(0), n_missing))
            continue
        starts = np.flatnonzero(np.concatenate([[True], col[1:] != col[:-1]]))
        if starts.size <= max_bins:
            counts = np.diff(np.append(starts, n_ok)).astype(np.float64)
            out.append((0, col[starts].astype(np.float64), counts, n_missing))
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
    """

    thresholds: list
    exact: np.ndarray
    bin_values: list
    has_missing: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.thresholds)

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


def merge_summaries(per_shard: list, max_bins: int) -> BinEdges:
    """Merge per-shard summaries (in shard order) into per-feature bin edges."""
    n_features = len(per_shard[0])
    thresholds, exact, bin_values, has_missing = [], [], [], []
    for j in range(n_features):
        parts = [s[j] for s in per_shard]
        has_missing.append(any(p[3] > 0 for p in parts))
        vals = np.concatenate([p[1] for p in parts])
        wts = np.concatenate([p[2] for p in parts])
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
    return BinEdges(thresholds, np.array(exact), bin_values, np.array(has_missing))


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
    for j in range(d):
        col = X[:, j]
        b = np.searchsorted(edges.thresholds[j], col, side="left") + 1
        if col.dtype.kind == "f":
            b[np.isnan(col)] = MISSING_BIN
        out[:, j] = b
    return out
