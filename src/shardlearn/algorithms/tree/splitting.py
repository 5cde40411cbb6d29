"""Best splits from histograms, and leaf values: plain numpy on the coordinator.

The same function runs on the coordinator (data-parallel: every feature) and on
workers (feature-parallel: the features a worker holds). The gain of one
feature never depends on the others, so both modes compute the same bits and
pick the same split (ties: lowest feature, then missing-right before
missing-left, then lowest bin).

Categorical features (``SplitParams.categorical``) are split by a set of
categories (see :mod:`._categorical`: categories ordered by their statistic,
prefixes scanned); the result says which bins go left as a 256-bit set per node.

Criteria (``C = n_value_channels + 1``; the last channel counts rows):

* ``"gh"``: channels (g, h); gain ``G_L^2/(H_L+l) + G_R^2/(H_R+l) - G^2/(H+l)``
  (second-order boosting, XGBoost's gain without the 1/2).
* ``"mse"``: channels (-w y, w, w y^2); the same gain with ``l = 0`` equals the
  weighted squared-error decrease; the third channel gives the node impurity.
* ``"gini"`` / ``"entropy"``: channels are per-class weights; the gain is the
  weighted impurity decrease ``W_P i_P - W_L i_L - W_R i_R``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels as K


@dataclass
class SplitParams:
    criterion: str
    reg_lambda: float = 0.0
    min_samples_leaf: int = 1
    min_child_weight: float = 0.0
    #: bool mask over all (global) features: categorical ones, or None.
    categorical: np.ndarray | None = None


def _xlogx(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)


_FIELDS = ("gain", "feature", "bin", "missing_left", "bin_hi", "left", "categorical",
           "cat_bits")

#: uint64 words of a node's categorical left set (one bit per bin 0..255).
CAT_WORDS = 4


@dataclass
class BestSplits:
    """Best split of each node (gain -inf where none is valid).

    A categorical split (``categorical[s]``) sends a row left when bit ``b`` of
    ``cat_bits[s]`` is set for its bin ``b`` (bit ``b & 63`` of word ``b >> 6``;
    bin 0, missing, is never set: missing values and categories absent from the
    node go right); ``bin``/``bin_hi`` are then unused and ``missing_left`` False.
    """

    gain: np.ndarray           # (S,)
    feature: np.ndarray        # (S,) global feature index, -1 if none
    bin: np.ndarray            # (S,) last value bin going left
    missing_left: np.ndarray   # (S,) bool
    bin_hi: np.ndarray         # (S,) next non-empty value bin after `bin`, -1 if none
    left: np.ndarray           # (S, C) stats of the left child
    categorical: np.ndarray | None = None   # (S,) bool
    cat_bits: np.ndarray | None = None      # (S, CAT_WORDS) uint64 left set

    def __post_init__(self):
        n = len(self.gain)
        if self.categorical is None:
            self.categorical = np.zeros(n, bool)
        if self.cat_bits is None:
            self.cat_bits = np.zeros((n, CAT_WORDS), np.uint64)

    @classmethod
    def empty(cls, n_nodes: int, n_channels: int) -> BestSplits:
        return cls(np.full(n_nodes, -np.inf), np.full(n_nodes, -1, np.int64),
                   np.zeros(n_nodes, np.int64), np.zeros(n_nodes, bool),
                   np.full(n_nodes, -1, np.int64), np.zeros((n_nodes, n_channels)))

    def take(self, idx) -> BestSplits:
        """The rows ``idx`` (a reordering or selection of nodes)."""
        return BestSplits(*(getattr(self, n)[idx] for n in _FIELDS))

    def put(self, idx, other: BestSplits) -> None:
        """Set rows ``idx`` from ``other`` (row for row)."""
        for name in _FIELDS:
            getattr(self, name)[idx] = getattr(other, name)

    def copy(self) -> BestSplits:
        return BestSplits(*(np.array(getattr(self, n)) for n in _FIELDS))

    def take_better(self, other: BestSplits) -> None:
        """Keep, per node, the better of self and other (ties: lower feature index)."""
        better = (other.gain > self.gain) | (
            (other.gain == self.gain) & (other.feature >= 0)
            & ((self.feature < 0) | (other.feature < self.feature)))
        for name in _FIELDS:
            getattr(self, name)[better] = getattr(other, name)[better]


_CRIT = {"gh": 0, "mse": 1, "gini": 2, "entropy": 3}


def _categorical_slots(params: SplitParams, S, F, feature_offset, feature_ids):
    """(S, F) bool: which histogram columns hold a categorical feature, or None."""
    cat = params.categorical
    if cat is None:
        return None
    cat = np.asarray(cat, dtype=bool)
    if not cat.any():
        return None
    if feature_ids is not None:
        ids = np.asarray(feature_ids)
        out = cat[np.maximum(ids, 0)] & (ids >= 0)
    else:
        out = np.broadcast_to(cat[feature_offset:feature_offset + F], (S, F))
    return out if out.any() else None


def find_best_splits(hist, totals, params: SplitParams, feature_mask=None,
                     feature_offset: int = 0, feature_ids=None) -> BestSplits:
    """Best split per node of ``hist`` (S, F, B, C) given node ``totals`` (S, C).

    ``feature_mask`` (S, F) bool limits the candidate features of each node.
    Feature indices are reported as ``feature_offset + local index``.
    ``feature_ids`` (S, F) int: the global feature of each histogram column when
    axis 1 is a per-node subset (-1 pads); only used to tell categorical columns.
    """
    S, F, B, C = hist.shape
    out = BestSplits.empty(S, C)
    if S == 0 or B < 2:
        return out
    fmask = (np.ones((S, F), np.bool_) if feature_mask is None
             else np.ascontiguousarray(feature_mask, dtype=np.bool_))
    cat_slots = _categorical_slots(params, S, F, feature_offset, feature_ids)
    if cat_slots is not None:
        cat_mask = np.ascontiguousarray(fmask & cat_slots)
        fmask = np.ascontiguousarray(fmask & ~cat_slots)
    mleft = np.zeros(S, np.int64)
    K.best_splits(np.ascontiguousarray(hist), np.ascontiguousarray(totals, dtype=np.float64),
                  fmask, _CRIT[params.criterion], float(params.reg_lambda),
                  float(max(1, params.min_samples_leaf)), float(params.min_child_weight),
                  out.gain, out.feature, out.bin, mleft, out.bin_hi, out.left)
    out.missing_left[:] = mleft == 1
    if cat_slots is not None and cat_mask.any():
        from ._categorical import best_categorical_splits

        cbest = BestSplits.empty(S, C)
        best_categorical_splits(
            np.ascontiguousarray(hist), np.ascontiguousarray(totals, dtype=np.float64), cat_mask,
            _CRIT[params.criterion], float(params.reg_lambda),
            float(max(1, params.min_samples_leaf)), float(params.min_child_weight),
            cbest.gain, cbest.feature, cbest.left, cbest.cat_bits)
        cbest.categorical[:] = cbest.feature >= 0
        # Same tie rule as one scan over the features in order: the lower feature.
        better = (cbest.feature >= 0) & ((cbest.gain > out.gain) | (
            (cbest.gain == out.gain) & ((out.feature < 0) | (cbest.feature < out.feature))))
        out.put(better, cbest.take(better))
    found = out.feature >= 0
    out.feature[found] += feature_offset
    return out


def fuses_with_search(params: SplitParams, hist) -> bool:
    """Whether :func:`added_best_splits` and :func:`subtracted_best_splits` serve a
    level: two value channels and a count, boosting's or two classes' gini (the
    vectorised search), no categorical feature, every array C-contiguous."""
    return (hist.ndim == 4 and hist.shape[-1] == 3 and params.criterion in ("gh", "gini")
            and (params.categorical is None or not np.any(params.categorical))
            and hist.flags.c_contiguous)


def _fused_args(params: SplitParams):
    return (_CRIT[params.criterion], float(params.reg_lambda),
            float(max(1, params.min_samples_leaf)), float(params.min_child_weight))


def _finished(best: BestSplits, mleft, hist, totals) -> BestSplits:
    K._finish_best(hist, totals, best.gain, best.feature, best.bin, mleft, best.bin_hi,
                   best.left)
    best.missing_left[:] = mleft == 1
    return best


def _search_outputs(S, F, C, totals, feature_mask):
    """What the one-pass searches fill or read: ``(best, mleft, feature mask, totals)``,
    the mask all True where none is given, the totals contiguous float64."""
    fmask = (np.ones((S, F), np.bool_) if feature_mask is None
             else np.ascontiguousarray(feature_mask, dtype=np.bool_))
    return (BestSplits.empty(S, C), np.zeros(S, np.int64), fmask,
            np.ascontiguousarray(totals, dtype=np.float64))


def added_best_splits(a, b, out, totals, params: SplitParams, feature_mask=None) -> BestSplits:
    """``out[...] = a + b`` (workers' parts, possibly narrower than ``out``), then
    :func:`find_best_splits` of ``out``, in one pass (see ``_kernels.add_and_search``):
    the same answer and histogram bit for bit. Only where :func:`fuses_with_search`."""
    S, F, B, C = out.shape
    best, mleft, fmask, tot = _search_outputs(S, F, C, totals, feature_mask)
    K.add_and_search(np.ascontiguousarray(a), np.ascontiguousarray(b), out, tot, fmask,
                     *_fused_args(params), best.gain, best.feature, best.bin, mleft, best.left)
    return _finished(best, mleft, out, tot)


def subtracted_best_splits(parents, out, small, totals, params: SplitParams,
                           feature_mask=None) -> BestSplits:
    """Rows ``k`` of ``out`` (the larger siblings) set to ``parents[k] - small[k]``,
    and their :func:`find_best_splits`, a node at a time in one pass each (see
    ``_kernels.subtract_and_search``). Only where :func:`fuses_with_search`."""
    S, F, B, C = out.shape
    best, mleft, fmask, tot = _search_outputs(S, F, C, totals, feature_mask)
    args = _fused_args(params)
    for k in range(S):
        K.subtract_and_search(np.ascontiguousarray(parents[k]), np.ascontiguousarray(small[k]),
                              out[k], tot, fmask, *args, best.gain, best.feature, best.bin,
                              mleft, best.left, k)
    return _finished(best, mleft, out, tot)


def unheld_best_splits(parts, parents, small, totals, params: SplitParams, feature_mask=None,
                       dtype="float64", chunks=None, run=None) -> BestSplits:
    """Best splits of a level whose histograms are not held for another (the last):
    built rows ``0..n`` are the two workers' ``parts`` added up, rows ``n + k`` the
    siblings ``parents[k] - built[small[k]]``, searched node pair by node pair
    without writing any histogram (``_kernels.pair_search``). ``dtype``: of the sums
    (the level's histogram type). ``chunks``: ranges of built rows (each with its
    siblings) that ``run(fn, chunks)`` (default: one after the other) may hand to
    threads; the rows' outputs do not overlap. The same answer bit for bit as
    :func:`added_best_splits` then :func:`subtracted_best_splits`. Only where
    :func:`fuses_with_search`."""
    a, b = parts
    n, F, B, C = a.shape
    S = n + len(parents)
    best, mleft, fmask, tot = _search_outputs(S, F, C, totals, feature_mask)
    missing = np.zeros(S)
    sibling = np.full(n, -1, np.int64)
    sibling[np.asarray(small, np.int64)] = n + np.arange(len(small))
    like = np.empty(0, dtype)
    none = np.empty((0, B, C), dtype)
    args = _fused_args(params)

    def rows(lo, hi):
        for j in range(lo, hi):
            ss = int(sibling[j])
            parent = np.ascontiguousarray(parents[ss - n]) if ss >= 0 else none
            K.pair_search(a[j], b[j], parent, like, tot, fmask,
                          *args, best.gain, best.feature, best.bin, mleft, best.bin_hi,
                          best.left, missing, j, ss)

    chunks = [(0, n)] if chunks is None else chunks
    if run is None:
        for c in chunks:
            rows(*c)
    else:
        run(rows, chunks)
    best.missing_left[:] = mleft == 1
    return best


def with_siblings(hist, parents, small_rows):
    """``hist`` (S, F, B, C) followed by the larger siblings ``parents[k] -
    hist[small_rows[k]]``, in one new array; bins left without rows are exactly +0.0
    (the sums are exact: see :func:`._kernels.subtract_into`)."""
    n = hist.shape[0]
    out = np.empty((n + len(parents),) + hist.shape[1:], dtype=hist.dtype)
    out[:n] = hist
    for k, (parent, r) in enumerate(zip(parents, small_rows)):
        K.subtract_into(parent, hist[r], out[n + k])
    return out


def impurity(totals, criterion: str):
    """Impurity of nodes from their totals (S, C); 0 for "gh"."""
    if criterion == "gh":
        return np.zeros(totals.shape[0])
    if criterion == "mse":
        W = totals[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = -totals[:, 0] / W
            return np.where(W > 0, totals[:, 2] / W - mean * mean, 0.0)
    W = totals[:, :-1].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        P = np.where(W[:, None] > 0, totals[:, :-1] / np.where(W > 0, W, 1.0)[:, None], 0.0)
    if criterion == "gini":
        return 1.0 - (P * P).sum(axis=1)
    return -(_xlogx(P)).sum(axis=1) / np.log(2.0)  # bits, as scikit-learn


def leaf_values(totals, criterion: str, reg_lambda: float = 0.0):
    """Leaf outputs from node totals (S, C): shape (S, V)."""
    if criterion == "gh":
        H = totals[:, 1] + reg_lambda
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(H > 0, -totals[:, 0] / np.where(H > 0, H, 1.0), 0.0)[:, None]
    if criterion == "mse":
        W = totals[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            # (+ 0.0 turns -0.0 into 0.0)
            return np.where(W > 0, -totals[:, 0] / np.where(W > 0, W, 1.0) + 0.0, 0.0)[:, None]
    W = totals[:, :-1].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(W[:, None] > 0, totals[:, :-1] / np.where(W > 0, W, 1.0)[:, None], 0.0)
