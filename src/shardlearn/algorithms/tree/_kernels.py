"""Numba kernels for histogram trees (compiled once, cached on disk, GIL released).

The callers pass C-contiguous uint8 / int32 / float64 arrays, so a kernel has one
signature per histogram dtype (float64, or float32 for whole-number class counts,
see ``TreeFit.hist_dtype``) and compiles at most twice, once for each, cached.

Layouts
-------
Xb    : uint8 (n_rows, n_features), bin 0 = missing.
vals  : float64 (Tv, n_rows, Cv), per-row value channels (g, h / class weights);
        Tv is 1 (shared by every tree) or T.
w     : float64 (Tw, n_rows), per-row multiplier (bootstrap / subsample weight);
        Tw is 1 or T. Rows with w == 0 are skipped (out of bag).
pos   : int32 (T, n_rows), the node of each row in each tree.
slot  : int32 (T, max_nodes), the histogram slot of a node, or -1.
hist  : float64 or float32 (n_slots, n_features, n_bins, Cv + 1); the last channel
        counts rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The histogram passes live in their own module; callers reach them through this one.
from ._hist_kernels import (  # noqa: F401
    build_histograms,
    build_histograms_subset,
    split_and_build,
    takes_packed_loops,
)


@njit(nogil=True, cache=True, inline="always")
def _bin_goes_left(b, t, node, split_bin, missing_left, cat_idx, cat_bits):
    c = cat_idx[t, node]
    if c >= 0:   # categorical split: bin b goes left iff bit b of its left set is set
        return (cat_bits[c, b >> 6] >> np.uint64(b & 63)) & np.uint64(1) != np.uint64(0)
    if b == 0:
        return missing_left[t, node] != 0
    return b <= split_bin[t, node]


@njit(nogil=True, cache=True)
def apply_splits(Xb, pos, feature, split_bin, missing_left, left, right, cat_idx, cat_bits,
                 col_offset):
    """Move each row to the child of its node's split (nodes with feature < 0 keep rows).

    ``feature`` holds global feature indices; this block holds columns
    ``col_offset .. col_offset + Xb.shape[1]``. Rows of splits on columns not
    held here are left alone (feature-parallel mode moves them with a bitmask).
    ``cat_idx[t, node] >= 0`` marks a categorical split whose left set of bins is
    the bitset ``cat_bits[cat_idx[t, node]]`` (uint64 words; see ``grower._table``).
    """
    n_trees, n = pos.shape
    n_feat = Xb.shape[1]
    if cat_bits.shape[0] == 0:
        # No categorical split at this level: the plain loop (about 3x faster).
        for t in range(n_trees):
            # The tree's rows of each table, taken once (2-D lookups per row cost ~2x).
            pos_t = pos[t]
            feat_t = feature[t]
            sbin_t = split_bin[t]
            mleft_t = missing_left[t]
            left_t = left[t]
            right_t = right[t]
            for i in range(n):
                node = pos_t[i]
                g = feat_t[node]
                f = g - col_offset
                if g < 0 or f < 0 or f >= n_feat:
                    continue
                b = Xb[i, f]
                go_left = (mleft_t[node] != 0) if b == 0 else (b <= sbin_t[node])
                pos_t[i] = left_t[node] if go_left else right_t[node]
        return
    for t in range(n_trees):
        for i in range(n):
            node = pos[t, i]
            f = feature[t, node] - col_offset
            if feature[t, node] < 0 or f < 0 or f >= n_feat:
                continue
            go_left = _bin_goes_left(Xb[i, f], t, node, split_bin, missing_left, cat_idx,
                                     cat_bits)
            pos[t, i] = left[t, node] if go_left else right[t, node]


@njit(nogil=True, cache=True)
def split_bits(Xb, pos, feature, split_bin, missing_left, cat_idx, cat_bits, col_offset, bits):
    """``bits[t, i] = 1`` where row i goes left at a split on a column held here."""
    n_trees, n = pos.shape
    n_feat = Xb.shape[1]
    if cat_bits.shape[0] == 0:
        # No categorical split: the plain loop of apply_splits, about 3x faster.
        for t in range(n_trees):
            pos_t = pos[t]
            feat_t = feature[t]
            sbin_t = split_bin[t]
            mleft_t = missing_left[t]
            bits_t = bits[t]
            for i in range(n):
                node = pos_t[i]
                g = feat_t[node]
                f = g - col_offset
                if g < 0 or f < 0 or f >= n_feat:
                    continue
                b = Xb[i, f]
                go_left = (mleft_t[node] != 0) if b == 0 else (b <= sbin_t[node])
                bits_t[i] = go_left
        return
    for t in range(n_trees):
        for i in range(n):
            node = pos[t, i]
            f = feature[t, node] - col_offset
            if feature[t, node] < 0 or f < 0 or f >= n_feat:
                continue
            if _bin_goes_left(Xb[i, f], t, node, split_bin, missing_left, cat_idx, cat_bits):
                bits[t, i] = 1


@njit(nogil=True, cache=True)
def apply_bits(pos, feature, left, right, bits):
    """Move rows of split nodes left where ``bits`` is set, else right."""
    n_trees, n = pos.shape
    for t in range(n_trees):
        # The tree's rows of each table, taken once (2-D lookups per row cost ~2x).
        pos_t = pos[t]
        feat_t = feature[t]
        left_t = left[t]
        right_t = right[t]
        bits_t = bits[t]
        for i in range(n):
            node = pos_t[i]
            if feat_t[node] < 0:
                continue
            pos_t[i] = left_t[node] if bits_t[i] != 0 else right_t[node]


@njit(nogil=True, cache=True)
def add_into(a, b, out):
    """``out = a + b`` over flat C-contiguous arrays, each element widened to
    ``out``'s type first (numpy's casting add was 3x slower for float32 parts)."""
    for i in range(out.shape[0]):
        iu = np.uint64(i)
        out[iu] = out.dtype.type(a[iu]) + out.dtype.type(b[iu])


def subtract_into(parent, child, out):
    """``out = parent - child`` for one node's (F, B, C) histogram.

    Histogram sums are exact (:mod:`.exact`), so this is the sibling's histogram
    bit for bit, and a bin without rows in the sibling holds ``x - x = +0.0`` in
    every channel: no select on the count is needed (a loop with one ran 5x slower,
    its stride-3 selects not vectorised: 37 against 7 us a node, 28 features).
    """
    if all(a.flags.c_contiguous for a in (parent, child, out)):
        _subtract_flat(parent.reshape(-1), child.reshape(-1), out.reshape(-1))
        return
    np.subtract(parent, child, out=out)


@njit(nogil=True, cache=True)
def _subtract_flat(p, c, o):
    for i in range(o.shape[0]):
        iu = np.uint64(i)            # unsigned: no wraparound code, the loop vectorises
        o[iu] = p[iu] - c[iu]


@njit(nogil=True, cache=True)
def forest_leaves(X, feature, threshold, missing_left, left, right, offsets, cat_start,
                  cat_size, cat_values, cat_row, cat_bitmap, out):
    """Leaf (tree-local node index) reached by each row of raw ``X`` in each tree.

    A node with ``cat_size[k] > 0`` splits on categories: values among the sorted
    ``cat_values[cat_start[k]:cat_start[k] + cat_size[k]]`` go to the non-missing
    side, every other value (NaN, unseen, negative, non-integer) to the missing side.
    When ``cat_bitmap`` has columns, the same set is also bitmap row ``cat_row[k]``
    (bit ``c`` set for category ``c``; faster than the binary search).
    """
    n_bits = cat_bitmap.shape[1] * 64
    n = X.shape[0]
    n_trees = offsets.shape[0] - 1
    for i in range(n):
        for t in range(n_trees):
            base = offsets[t]
            node = 0
            while feature[base + node] >= 0:
                k = base + node
                v = X[i, feature[k]]
                if np.isnan(v):
                    go_left = missing_left[k] != 0
                elif cat_size[k] > 0 and n_bits > 0:
                    found = False
                    if v >= 0.0 and v < n_bits and v == np.floor(v):
                        c = np.int64(v)
                        found = (cat_bitmap[cat_row[k], c >> 6] >> np.uint64(c & 63)) \
                            & np.uint64(1) != np.uint64(0)
                    go_left = found != (missing_left[k] != 0)
                elif cat_size[k] > 0:
                    lo = cat_start[k]
                    hi = lo + cat_size[k]
                    end = hi
                    while lo < hi:          # binary search of the sorted set
                        mid = (lo + hi) >> 1
                        if cat_values[mid] < v:
                            lo = mid + 1
                        else:
                            hi = mid
                    found = lo < end and cat_values[lo] == v
                    go_left = found != (missing_left[k] != 0)
                else:
                    go_left = v <= threshold[k]
                node = left[k] if go_left else right[k]
            out[i, t] = node
    return out


@njit(nogil=True, cache=True)
def _score(st, crit, lam):
    """Node score; gain = score(left) + score(right) - score(parent).

    crit 0: gh (G^2 / (H + lam)), 1: mse (same with lam = 0), 2: gini
    (sum_k w_k^2 / W), 3: entropy (sum_k w_k log w_k - W log W).
    """
    if crit <= 1:
        h = st[1] + (lam if crit == 0 else 0.0)
        if h > 0.0:
            return st[0] * st[0] / h
        return 0.0
    k = st.shape[0] - 1
    W = 0.0
    for c in range(k):
        W += st[c]
    if crit == 2:
        acc = 0.0
        for c in range(k):
            acc += st[c] * st[c]
        if W > 0.0:
            return acc / W
        return 0.0
    acc = 0.0
    for c in range(k):
        if st[c] > 0.0:
            acc += st[c] * np.log(st[c])
    if W > 0.0:
        acc -= W * np.log(W)
    return acc


@njit(nogil=True, cache=True)
def _valid(L, R, crit, msl, mcw):
    cnt = L.shape[0] - 1
    if L[cnt] < msl or R[cnt] < msl:
        return False
    if mcw > 0.0:
        if crit <= 1:
            return L[1] >= mcw and R[1] >= mcw
        wl = 0.0
        wr = 0.0
        for c in range(cnt):
            wl += L[c]
            wr += R[c]
        return wl >= mcw and wr >= mcw
    return True


@njit(nogil=True, cache=True)
def best_splits(hist, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft, bin_hi, left):
    """Best split per node over features, missing direction and bins (ties: first).

    Visits feature, then missing-right before missing-left, then bins in order;
    only bins holding rows end a left side, and missing-left is tried only where the
    node has missing values. Outputs are filled in place (feat = local index).
    """
    S, F, B, C = hist.shape
    if C == 3 and (crit == 0 or crit == 2):
        _best_splits_3_vector(hist, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft,
                              left)
        _finish_best(hist, totals, gain, feat, sbin, mleft, bin_hi, left)
        return
    if C == 3 and crit != 1:
        _best_splits_3(hist, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft, left)
        _finish_best(hist, totals, gain, feat, sbin, mleft, bin_hi, left)
        return
    cnt = C - 1
    L = np.empty(C)
    R = np.empty(C)
    for s in range(S):
        best = -np.inf
        P = _score(totals[s], crit, lam)
        for f in range(F):
            if not fmask[s, f]:
                continue
            for opt in range(2):
                if opt == 1 and hist[s, f, 0, cnt] == 0.0:
                    continue
                for c in range(C):
                    L[c] = hist[s, f, 0, c] if opt == 1 else 0.0
                for k in range(1, B):
                    for c in range(C):
                        L[c] += hist[s, f, k, c]
                    if hist[s, f, k, cnt] == 0.0:
                        continue
                    for c in range(C):
                        R[c] = totals[s, c] - L[c]
                    if R[cnt] < msl:
                        break
                    if not _valid(L, R, crit, msl, mcw):
                        continue
                    g = _score(L, crit, lam) + _score(R, crit, lam) - P
                    if g > best:
                        best = g
                        feat[s] = f
                        sbin[s] = k
                        mleft[s] = opt
                        for c in range(C):
                            left[s, c] = L[c]
        gain[s] = best
    _finish_best(hist, totals, gain, feat, sbin, mleft, bin_hi, left)


@njit(nogil=True, cache=True, inline="always")
def _score3(a, b, crit, lam):
    """:func:`_score` of a node with two value channels ``a``, ``b`` (boosting's g, h,
    or two class weights): the same operations in the same order."""
    if crit == 0:
        h = b + lam
        return a * a / h if h > 0.0 else 0.0
    W = a + b
    if crit == 2:
        acc = a * a + b * b
        return acc / W if W > 0.0 else 0.0
    acc = 0.0
    if a > 0.0:
        acc += a * np.log(a)
    if b > 0.0:
        acc += b * np.log(b)
    if W > 0.0:
        acc -= W * np.log(W)
    return acc


@njit(nogil=True, cache=True)
def _best_splits_3(hist, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft, left):
    """:func:`best_splits` for two value channels and a count (boosting's g, h, or two
    classes' weights; crit 0, 2 or 3), the channel loops written out: the same
    additions in the same order, so the same bits, about three times faster."""
    S, F, B, _ = hist.shape
    for s in range(S):
        best = -np.inf
        ta, tb, tc = totals[s, 0], totals[s, 1], totals[s, 2]
        P = _score3(ta, tb, crit, lam)
        for f in range(F):
            if not fmask[s, f]:
                continue
            hf = hist[s, f]
            for opt in range(2):
                if opt == 1 and hf[0, 2] == 0.0:
                    continue
                la = hf[0, 0] if opt == 1 else 0.0
                lb = hf[0, 1] if opt == 1 else 0.0
                lc = hf[0, 2] if opt == 1 else 0.0
                for k in range(1, B):
                    la += hf[k, 0]
                    lb += hf[k, 1]
                    lc += hf[k, 2]
                    if hf[k, 2] == 0.0:
                        continue
                    ra = ta - la
                    rb = tb - lb
                    rc = tc - lc
                    if rc < msl:
                        break
                    if lc < msl:
                        continue
                    if mcw > 0.0:
                        # a child's weight: its hessian (boosting) or its class weights
                        if crit == 0 and (lb < mcw or rb < mcw):
                            continue
                        if crit != 0 and (la + lb < mcw or ra + rb < mcw):
                            continue
                    g = _score3(la, lb, crit, lam) + _score3(ra, rb, crit, lam) - P
                    if g > best:
                        best = g
                        feat[s] = f
                        sbin[s] = k
                        mleft[s] = opt
                        left[s, 0] = la
                        left[s, 1] = lb
                        left[s, 2] = lc
        gain[s] = best


@njit(nogil=True, cache=True)
def _best_splits_3_vector(hist, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft,
                          left):
    """:func:`_best_splits_3` for crit 0 (g, h) and 2 (gini of two classes), the same
    answers bit for bit, in three loops per feature that the compiler vectorises:
    prefix sums of the bins, every bin's gain (invalid ones -inf, with selects,
    not branches), then the first best (:func:`_scan_feature`).

    The scalar loop waits on two divisions per bin; these run 8 to a vector. The
    prefix sums are exact (histograms hold multiples of a power-of-two grid, see
    .exact), so the missing-left prefix is the missing-right one plus bin 0, and
    each bin's left and right sums are those of the scalar loop.
    """
    S, F, B, _ = hist.shape
    LA = np.zeros(B)
    LB = np.zeros(B)
    LC = np.zeros(B)
    G = np.empty(B)
    for s in range(S):
        best = -np.inf
        ta, tb, tc = totals[s, 0], totals[s, 1], totals[s, 2]
        P = _score3(ta, tb, crit, lam)
        for f in range(F):
            if not fmask[s, f]:
                continue
            hf = hist[s, f]
            la = 0.0
            lb = 0.0
            lc = 0.0
            for k in range(1, B):
                la += hf[k, 0]
                lb += hf[k, 1]
                lc += hf[k, 2]
                LA[k] = la
                LB[k] = lb
                LC[k] = lc
            best = _scan_feature(hf, LA, LB, LC, G, ta, tb, tc, P, crit, lam, msl, mcw, best,
                                 s, f, feat, sbin, mleft, left)
        gain[s] = best


@njit(nogil=True, cache=True, inline="always")
def _scan_feature(hf, LA, LB, LC, G, ta, tb, tc, P, crit, lam, msl, mcw, best, s, f, feat,
                  sbin, mleft, left):
    """One feature's bins (``hf``, prefix sums ``LA``/``LB``/``LC`` from bin 1) for
    :func:`_best_splits_3_vector` and the fused passes: the node's best so far, updated
    (``feat``/``sbin``/``mleft``/``left`` of node ``s`` where this feature beats it)."""
    B = hf.shape[0]
    gini = crit == 2
    lam_c = 0.0 if gini else lam
    for opt in range(2):
        if opt == 1 and hf[0, 2] == 0.0:
            continue
        a0 = hf[0, 0] if opt == 1 else 0.0
        b0 = hf[0, 1] if opt == 1 else 0.0
        c0 = hf[0, 2] if opt == 1 else 0.0
        for k in range(1, B):
            xa = LA[k] + a0
            xb = LB[k] + b0
            xc = LC[k] + c0
            ya = ta - xa
            yb = tb - xb
            yc = tc - xc
            if gini:
                # _score3, crit 2: (a*a + b*b) / (a + b)
                wl = xa + xb
                wr = ya + yb
                sl = (xa * xa + xb * xb) / wl if wl > 0.0 else 0.0
                sr = (ya * ya + yb * yb) / wr if wr > 0.0 else 0.0
                ok_w = (wl >= mcw) & (wr >= mcw)
            else:
                # _score3, crit 0: a*a / (b + lam)
                hl = xb + lam_c
                hr = yb + lam_c
                sl = xa * xa / hl if hl > 0.0 else 0.0
                sr = ya * ya / hr if hr > 0.0 else 0.0
                ok_w = (xb >= mcw) & (yb >= mcw)
            ok = (hf[k, 2] != 0.0) & (xc >= msl) & (yc >= msl) & (ok_w | (mcw <= 0.0))
            G[k] = sl + sr - P if ok else -np.inf
        for k in range(1, B):
            if G[k] > best:
                best = G[k]
                feat[s] = f
                sbin[s] = k
                mleft[s] = opt
                left[s, 0] = LA[k] + a0
                left[s, 1] = LB[k] + b0
                left[s, 2] = LC[k] + c0
    return best


@njit(nogil=True, cache=True)
def add_and_search(a, b, out, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin, mleft,
                   left):
    """``out = a + b`` (each part widened to ``out``'s type first, as :func:`add_into`)
    and :func:`_best_splits_3_vector` of ``out``, feature by feature in one pass: each
    feature's bins are searched while they are in L1, not read back from memory after
    the whole level is added up (a deep boosting level is 3-6 MB). Same bits."""
    S, F, B, _ = out.shape
    LA = np.zeros(B)
    LB = np.zeros(B)
    LC = np.zeros(B)
    G = np.empty(B)
    for s in range(S):
        best = -np.inf
        ta, tb, tc = totals[s, 0], totals[s, 1], totals[s, 2]
        P = _score3(ta, tb, crit, lam)
        for f in range(F):
            af = a[s, f]
            bf = b[s, f]
            hf = out[s, f]
            la = 0.0
            lb = 0.0
            lc = 0.0
            for c in range(3):
                hf[0, c] = out.dtype.type(af[0, c]) + out.dtype.type(bf[0, c])
            for k in range(1, B):
                va = out.dtype.type(af[k, 0]) + out.dtype.type(bf[k, 0])
                vb = out.dtype.type(af[k, 1]) + out.dtype.type(bf[k, 1])
                vc = out.dtype.type(af[k, 2]) + out.dtype.type(bf[k, 2])
                hf[k, 0] = va
                hf[k, 1] = vb
                hf[k, 2] = vc
                la += va
                lb += vb
                lc += vc
                LA[k] = la
                LB[k] = lb
                LC[k] = lc
            if fmask[s, f]:
                best = _scan_feature(hf, LA, LB, LC, G, ta, tb, tc, P, crit, lam, msl, mcw,
                                     best, s, f, feat, sbin, mleft, left)
        gain[s] = best


@njit(nogil=True, cache=True, inline="always")
def _feature_sums(hf, LA, LB, LC):
    la = 0.0
    lb = 0.0
    lc = 0.0
    for k in range(1, hf.shape[0]):
        la += hf[k, 0]
        lb += hf[k, 1]
        lc += hf[k, 2]
        LA[k] = la
        LB[k] = lb
        LC[k] = lc


@njit(nogil=True, cache=True, inline="always")
def _scan_and_finish(hf, LA, LB, LC, G, totals, P, crit, lam, msl, mcw, best, s, f, feat, sbin,
                     mleft, bin_hi, left, missing):
    """:func:`_scan_feature` of node ``s``, and where this feature becomes the node's
    best, what :func:`_finish_best` reads of its histogram: the next non-empty bin
    after the split (``bin_hi``) and the feature's missing count (``missing``)."""
    new = _scan_feature(hf, LA, LB, LC, G, totals[s, 0], totals[s, 1], totals[s, 2], P, crit,
                        lam, msl, mcw, best, s, f, feat, sbin, mleft, left)
    if new > best:
        nxt = -1
        for k in range(sbin[s] + 1, hf.shape[0]):
            if hf[k, 2] > 0.0:
                nxt = k
                break
        bin_hi[s] = nxt
        missing[s] = hf[0, 2]
    return new


@njit(nogil=True, cache=True, inline="always")
def _finish_row(totals, gain, feat, mleft, left, missing, s, best):
    gain[s] = best
    if best == -np.inf:
        feat[s] = -1
    elif missing[s] == 0.0:
        # No missing values here in training: send them to the larger child.
        mleft[s] = 1 if left[s, 2] >= totals[s, 2] - left[s, 2] else 0


@njit(nogil=True, cache=True)
def pair_search(a, b, parent, dtype_of, totals, fmask, crit, lam, msl, mcw, gain, feat, sbin,
                mleft, bin_hi, left, missing, sc, ss):
    """Best splits of a built node (the workers' parts ``a + b``, each widened to
    ``dtype_of``'s type first) into row ``sc`` of the outputs and, unless ``ss < 0``,
    of its sibling ``parent - (a + b)`` into row ``ss``, feature by feature; nothing
    is written but the outputs (with ``bin_hi`` and the missing direction done, as
    :func:`_finish_best` would): for the last level, whose histograms nobody holds.
    The same bits as adding up, subtracting and searching."""
    F, B, _ = a.shape
    T = dtype_of.dtype.type
    HC = np.empty((B, 3), dtype_of.dtype)
    HS = np.empty((B, 3), dtype_of.dtype)
    LA = np.zeros(B)
    LB = np.zeros(B)
    LC = np.zeros(B)
    G = np.empty(B)
    Pc = _score3(totals[sc, 0], totals[sc, 1], crit, lam)
    Ps = _score3(totals[ss, 0], totals[ss, 1], crit, lam) if ss >= 0 else 0.0
    best_c = -np.inf
    best_s = -np.inf
    hc = HC.reshape(-1)
    hs = HS.reshape(-1)
    for f in range(F):
        af = a[f].reshape(-1)
        bf = b[f].reshape(-1)
        for i in range(3 * B):
            iu = np.uint64(i)
            hc[iu] = T(af[iu]) + T(bf[iu])
        if fmask[sc, f]:
            _feature_sums(HC, LA, LB, LC)
            best_c = _scan_and_finish(HC, LA, LB, LC, G, totals, Pc, crit, lam, msl, mcw,
                                      best_c, sc, f, feat, sbin, mleft, bin_hi, left, missing)
        if ss >= 0 and fmask[ss, f]:
            pf = parent[f].reshape(-1)
            for i in range(3 * B):
                iu = np.uint64(i)
                hs[iu] = pf[iu] - hc[iu]
            _feature_sums(HS, LA, LB, LC)
            best_s = _scan_and_finish(HS, LA, LB, LC, G, totals, Ps, crit, lam, msl, mcw,
                                      best_s, ss, f, feat, sbin, mleft, bin_hi, left, missing)
    _finish_row(totals, gain, feat, mleft, left, missing, sc, best_c)
    if ss >= 0:
        _finish_row(totals, gain, feat, mleft, left, missing, ss, best_s)


@njit(nogil=True, cache=True)
def subtract_and_search(parent, child, out, totals, fmask, crit, lam, msl, mcw, gain, feat,
                        sbin, mleft, left, s):
    """``out = parent - child`` for one node's (F, B, 3) histogram (as
    :func:`subtract_into`) and its best split into row ``s`` of the outputs, feature
    by feature in one pass (see :func:`add_and_search`). Same bits."""
    F, B, _ = out.shape
    LA = np.zeros(B)
    LB = np.zeros(B)
    LC = np.zeros(B)
    G = np.empty(B)
    best = -np.inf
    ta, tb, tc = totals[s, 0], totals[s, 1], totals[s, 2]
    P = _score3(ta, tb, crit, lam)
    for f in range(F):
        pf = parent[f]
        cf = child[f]
        hf = out[f]
        la = 0.0
        lb = 0.0
        lc = 0.0
        for c in range(3):
            hf[0, c] = pf[0, c] - cf[0, c]
        for k in range(1, B):
            va = pf[k, 0] - cf[k, 0]
            vb = pf[k, 1] - cf[k, 1]
            vc = pf[k, 2] - cf[k, 2]
            hf[k, 0] = va
            hf[k, 1] = vb
            hf[k, 2] = vc
            la += va
            lb += vb
            lc += vc
            LA[k] = la
            LB[k] = lb
            LC[k] = lc
        if fmask[s, f]:
            best = _scan_feature(hf, LA, LB, LC, G, ta, tb, tc, P, crit, lam, msl, mcw, best,
                                 s, f, feat, sbin, mleft, left)
    gain[s] = best


@njit(nogil=True, cache=True)
def _finish_best(hist, totals, gain, feat, sbin, mleft, bin_hi, left):
    """The next non-empty bin after each best split, and where unseen missing values go."""
    S, F, B, C = hist.shape
    cnt = C - 1
    for s in range(S):
        if gain[s] == -np.inf:
            feat[s] = -1
            continue
        f = feat[s]
        nxt = -1
        for k in range(sbin[s] + 1, B):
            if hist[s, f, k, cnt] > 0.0:
                nxt = k
                break
        bin_hi[s] = nxt
        if hist[s, f, 0, cnt] == 0.0:
            # No missing values here in training: send them to the larger child.
            mleft[s] = 1 if left[s, cnt] >= totals[s, cnt] - left[s, cnt] else 0
