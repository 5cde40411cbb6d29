"""Numba kernels for categorical splits of histogram trees.

A categorical feature has one bin per category (bin 0: missing). The best split
of a node on such a feature is a set of categories, found as Fisher (1958) and
Breiman et al. (1984, "CART", section 9.4) showed: order the categories present
in the node by their statistic, then scan the prefixes of that order (with the
missing values tried on either side, like numeric features). For squared error
and for two-class impurity (and, to second order, for boosting's gain) the best
prefix is the best of all ``2^(m-1)`` partitions.

Orderings (``crit`` as in :func:`._kernels._score`):

* 0 (gh): ``G / (H + lambda)``;
* 1 (mse): the mean ``-c0 / c1`` of the category's rows;
* 2, 3 (gini, entropy): with two classes, the weighted fraction of class 1; with
  K > 2 classes the K orderings by each class's fraction are all scanned.

Ties are broken deterministically and identically in every parallel mode: the
sort is stable over bins in increasing order; the scan keeps the first best in
the order feature, ordering, missing-right before missing-left, shorter prefix.

The chosen split is then *oriented*: the child that missing values go to (the
side holding the node's missing rows, else the child with more rows) becomes the
right child. The left child is therefore a set of categories, and every other
value (missing, categories absent from the node, categories unseen in training)
goes right.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import _score, _valid


@njit(nogil=True, cache=True)
def _order_keys(hist, s, f, bins, m, crit, lam, cls, keys):
    cnt = hist.shape[3] - 1
    for i in range(m):
        st = hist[s, f, bins[i]]
        if crit == 0:
            h = st[1] + lam
            keys[i] = st[0] / h if h > 0.0 else 0.0
        elif crit == 1:
            keys[i] = -st[0] / st[1] if st[1] > 0.0 else 0.0
        else:
            w = 0.0
            for c in range(cnt):
                w += st[c]
            keys[i] = st[cls] / w if w > 0.0 else 0.0


@njit(nogil=True, cache=True)
def best_categorical_splits(hist, totals, cmask, crit, lam, msl, mcw, gain, feat, left, cat_bits):
    """Best categorical split per node over the features with ``cmask[s, f]``.

    Fills, per node, ``gain`` (-inf if none), ``feat`` (local index, -1 if none),
    ``left`` (the left child's stats) and ``cat_bits`` (the bins going left, after
    orientation: missing values always go right).
    """
    S, F, B, C = hist.shape
    cnt = C - 1
    n_cls = cnt if crit >= 2 else 0
    bins = np.empty(B, np.int64)
    keys = np.empty(B)
    L = np.empty(C)
    R = np.empty(C)
    for s in range(S):
        best = -np.inf
        b_f = -1
        b_cls = 0
        b_opt = 0
        b_len = 0
        P = _score(totals[s], crit, lam)
        for f in range(F):
            if not cmask[s, f]:
                continue
            m = 0
            for k in range(1, B):
                if hist[s, f, k, cnt] > 0.0:
                    bins[m] = k
                    m += 1
            if m == 0:
                continue
            n_miss = hist[s, f, 0, cnt]
            n_orders = n_cls if n_cls > 2 else 1
            for o in range(n_orders):
                cls = o if n_cls > 2 else 1
                _order_keys(hist, s, f, bins, m, crit, lam, cls, keys)
                order = np.argsort(keys[:m], kind="mergesort")
                for opt in range(2):
                    if opt == 1 and n_miss == 0.0:
                        continue
                    for c in range(C):
                        L[c] = hist[s, f, 0, c] if opt == 1 else 0.0
                    for j in range(m):
                        k = bins[order[j]]
                        for c in range(C):
                            L[c] += hist[s, f, k, c]
                        for c in range(C):
                            R[c] = totals[s, c] - L[c]
                        if R[cnt] < msl:
                            break
                        if not _valid(L, R, crit, msl, mcw):
                            continue
                        g = _score(L, crit, lam) + _score(R, crit, lam) - P
                        if g > best:
                            best = g
                            b_f = f
                            b_cls = o
                            b_opt = opt
                            b_len = j + 1
                            for c in range(C):
                                left[s, c] = L[c]
        gain[s] = best
        feat[s] = b_f
        if b_f < 0:
            continue
        # Rebuild the chosen prefix, then orient it (missing values go right).
        f = b_f
        m = 0
        for k in range(1, B):
            if hist[s, f, k, cnt] > 0.0:
                bins[m] = k
                m += 1
        _order_keys(hist, s, f, bins, m, crit, lam, b_cls if n_cls > 2 else 1, keys)
        order = np.argsort(keys[:m], kind="mergesort")
        in_prefix = np.zeros(B, np.bool_)
        for j in range(b_len):
            in_prefix[bins[order[j]]] = True
        if hist[s, f, 0, cnt] > 0.0:
            flip = b_opt == 1
        else:
            flip = left[s, cnt] >= totals[s, cnt] - left[s, cnt]
        for c in range(C):
            left[s, c] = 0.0
        for i in range(m):
            k = bins[i]
            if in_prefix[k] != flip:
                for c in range(C):
                    left[s, c] += hist[s, f, k, c]
                cat_bits[s, k >> 6] |= np.uint64(1) << np.uint64(k & 63)

