"""Which bins of every feature the rows of a tree node can still hold.

A node's rows passed every split above it, so a feature split on along the way is
confined to part of its bins: after ``bin <= b`` the left child holds value bins up
to ``b``, the right child from the next non-empty bin on, and only the side that
missing values take may hold them. A feature left with at most one possible value
(one bin and no missing values, or missing values only) is constant in the node.

The grower keeps such features out of a node's ``max_features`` draw, as
scikit-learn's splitter does when it meets a constant feature: otherwise a binary
feature, once split on, still takes a candidate's place in every node below (six
binary features, ``max_features=2``, parity target: accuracy 0.63 against
scikit-learn's 1.0). The sets come from the tree alone, not from the data, so both
parallel modes and every engine draw the same features. They are an upper bound: a
feature constant in a node by coincidence of the data is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .splitting import CAT_WORDS


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each row of ``(..., CAT_WORDS)`` uint64 bitsets."""
    as_bytes = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int64)


@dataclass
class NodeValues:
    """Possible bins per node (rows) and feature (columns).

    Attributes
    ----------
    lo, hi : ndarray of int16, shape (S, F)
        Lowest and highest value bin a numeric feature may hold; none when
        ``lo > hi``. Unused for categorical features.
    missing : ndarray of bool, shape (S, F)
        Whether the node may hold missing values of the feature.
    cats : ndarray of uint64, shape (S, n_categorical, CAT_WORDS)
        Bitsets of the bins each categorical feature may hold (bit ``b & 63`` of
        word ``b >> 6`` for bin ``b``, as in :class:`~.splitting.BestSplits`).
    cat_cols : ndarray of int64, shape (n_categorical,)
        The categorical features' indices.
    """

    lo: np.ndarray
    hi: np.ndarray
    missing: np.ndarray
    cats: np.ndarray
    cat_cols: np.ndarray

    @classmethod
    def roots(cls, edges, n_roots: int) -> NodeValues:
        """Every bin a feature has in the training data, for ``n_roots`` roots."""
        n_bins = edges.n_bins
        F = len(n_bins)
        lo = np.ones((n_roots, F), np.int16)
        hi = np.broadcast_to(n_bins.astype(np.int16), (n_roots, F)).copy()
        missing = np.broadcast_to(np.asarray(edges.has_missing, bool), (n_roots, F)).copy()
        cat_cols = np.flatnonzero(edges.categorical).astype(np.int64)
        cats = np.zeros((n_roots, len(cat_cols), CAT_WORDS), np.uint64)
        for j, f in enumerate(cat_cols):
            bits = np.zeros(CAT_WORDS * 64, np.uint8)
            bits[1:int(n_bins[f]) + 1] = 1
            cats[:, j] = np.packbits(bits, bitorder="little").view("<u8").astype(np.uint64)
        return cls(lo, hi, missing, cats, cat_cols)

    def __len__(self) -> int:
        return self.lo.shape[0]

    def take(self, rows) -> NodeValues:
        rows = np.asarray(rows, np.int64)
        return NodeValues(self.lo[rows], self.hi[rows], self.missing[rows], self.cats[rows],
                          self.cat_cols)

    @staticmethod
    def concat(parts) -> NodeValues:
        parts = list(parts)
        return NodeValues(*(np.concatenate([getattr(p, a) for p in parts])
                            for a in ("lo", "hi", "missing", "cats")), parts[0].cat_cols)

    def children(self, feature, bin_, bin_hi, missing_left, categorical, cat_bits) -> NodeValues:
        """Rows ``2k`` and ``2k + 1``: the left and right child of row ``k`` split on
        ``feature[k]`` as a :class:`~.splitting.BestSplits` row describes it (value
        bins ``<= bin_[k]`` left, the next non-empty one ``bin_hi[k]`` (-1: none)
        the right child's lowest; or the categorical left set ``cat_bits[k]``)."""
        S = len(self)
        k = np.arange(S)
        feature = np.asarray(feature, np.int64)
        categorical = np.asarray(categorical, bool)
        out = self.take(np.repeat(k, 2))
        left, right = 2 * k, 2 * k + 1
        num = ~categorical
        f, kn = feature[num], k[num]
        hi = self.hi[kn, f]
        b = np.asarray(bin_, np.int64)[num]
        bh = np.asarray(bin_hi, np.int64)[num]
        out.hi[left[num], f] = np.minimum(hi, b)
        # bin_hi -1: no value bin after the split, the right child holds missing values only
        out.lo[right[num], f] = np.where(bh >= 0, np.maximum(self.lo[kn, f], bh), hi + 1)
        # The side missing values do not take holds none (categorical: they go right).
        mleft = np.asarray(missing_left, bool) & num
        dry = np.where(mleft, right, left)
        out.missing[dry, feature] = False
        if categorical.any():
            kc = k[categorical]
            col = np.searchsorted(self.cat_cols, feature[categorical])
            held = self.cats[kc, col]
            bits = np.asarray(cat_bits, np.uint64)[categorical]
            out.cats[left[categorical], col] = held & bits
            out.cats[right[categorical], col] = held & ~bits
        return out

    def constant(self) -> np.ndarray:
        """(S, F) bool: features of at most one possible value in each node."""
        n_values = np.maximum(self.hi.astype(np.int64) - self.lo + 1, 0)
        if len(self.cat_cols):
            n_values[:, self.cat_cols] = _popcount(self.cats)
        return n_values + self.missing <= 1


class NodeValueIndex:
    """:class:`NodeValues` of the nodes a grower may still draw features for, by
    ``(tree, node)``."""

    def __init__(self, edges, n_trees: int):
        self.values = NodeValues.roots(edges, n_trees)
        self.row = {(t, 0): t for t in range(n_trees)}

    def constant(self, nodes) -> np.ndarray:
        """(len(nodes), F) bool: the features constant in each node."""
        return self.values.take([self.row[n] for n in nodes]).constant()

    _FIELDS = ("feature", "bin", "bin_hi", "missing_left", "categorical", "cat_bits")

    def _children(self, parents, cols) -> NodeValues:
        return self.values.take([self.row[p] for p in parents]).children(*cols)

    def advance(self, parents, best, rows, nodes, kid_rows) -> None:
        """Level-wise: hold only ``nodes``, children of ``parents`` (``(tree, node)``)
        split by rows ``rows`` of ``best`` (a :class:`~.splitting.BestSplits`);
        ``kid_rows[i]`` is ``2k`` if ``nodes[i]`` is the left child of ``parents[k]``,
        ``2k + 1`` if the right one."""
        kids = self._children(parents, [getattr(best, a)[rows] for a in self._FIELDS])
        self.values = kids.take(kid_rows)
        self.row = dict(zip(nodes, range(len(nodes))))

    def split(self, parents, splits, children) -> None:
        """Best-first: add the children ``[(left, right)]`` of ``parents`` split as
        ``splits`` says (``[(best, row)]``, a row of a BestSplits each)."""
        if not parents:
            return
        kids = self._children(parents, [np.array([getattr(b, a)[i] for b, i in splits])
                                        for a in self._FIELDS])
        base = len(self.values)
        self.values = NodeValues.concat([self.values, kids])
        for k, ((t, _), (lc, rc)) in enumerate(zip(parents, children)):
            self.row[(t, lc)] = base + 2 * k
            self.row[(t, rc)] = base + 2 * k + 1

    def keep_only(self, nodes) -> None:
        """Forget every node but ``nodes`` (the ones that may still be drawn for)."""
        nodes = [n for n in nodes if n in self.row]
        self.values = self.values.take([self.row[n] for n in nodes])
        self.row = {n: i for i, n in enumerate(nodes)}
