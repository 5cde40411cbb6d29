"""Best splits of small nodes from their rows instead of their histograms.

A node's histogram is dense: bins x features x channels, 163 KB at 20 features
and four channels, however few rows the node holds. A fully grown regression
tree has about as many nodes as rows, so its deep levels zeroed, filled, moved,
added and scanned gigabytes of histograms for nodes of a few rows each. Here
the workers send such a node's rows instead (a binned row and its channel
values: 44 bytes at 20 features and three value channels), and its split is
found by sorting each feature's few bins.

The answer is the same bit for bit as the histogram's: every channel value lies
on a power-of-two grid (:mod:`.exact`), so a bin's sum and every running sum is
exact however the rows are grouped; the scan visits the same non-empty bins in
the same order (feature, missing-right before missing-left, bin) with the same
gain and tie rule as :func:`._kernels.best_splits`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import _score, _valid
from .splitting import _CRIT, BestSplits, SplitParams

_NO_MASK = np.zeros((0, 0), np.bool_)
_NO_FEATS = np.zeros((0, 0), np.int32)


@njit(nogil=True, cache=True)
def gather_rows(Xb, vals, w, pos, rslot, n_rslots):
    """The counted rows (``w != 0``) of the nodes with a row slot, grouped by slot.

    ``rslot`` (T, max_nodes) int32: the row slot of a node, or -1. Returns
    ``(offsets (n_rslots + 1,), binned rows (m, F) uint8, values (m, Cv))``; slot
    ``s`` holds rows ``offsets[s]:offsets[s + 1]``, each row's values times its weight
    (what a histogram adds for it; its count, 1, is implied).
    """
    T, n = pos.shape
    F = Xb.shape[1]
    tv = vals.shape[0]
    tw = w.shape[0]
    cv = vals.shape[2]
    width = rslot.shape[1]
    offsets = np.zeros(n_rslots + 1, np.int64)
    for t in range(T):
        w_t = w[t if tw > 1 else 0]
        for i in range(n):
            v = pos[t, i]
            if v < width and rslot[t, v] >= 0 and w_t[i] != 0.0:
                offsets[rslot[t, v] + 1] += 1
    for s in range(n_rslots):
        offsets[s + 1] += offsets[s]
    m = offsets[n_rslots]
    rows = np.empty((m, F), np.uint8)
    values = np.empty((m, cv))
    fill = offsets[:n_rslots].copy()
    for t in range(T):
        w_t = w[t if tw > 1 else 0]
        vals_t = vals[t if tv > 1 else 0]
        for i in range(n):
            v = pos[t, i]
            if v < width and rslot[t, v] >= 0 and w_t[i] != 0.0:
                p = fill[rslot[t, v]]
                fill[rslot[t, v]] = p + 1
                for f in range(F):
                    rows[p, f] = Xb[i, f]
                for c in range(cv):
                    values[p, c] = vals_t[i, c] * w_t[i]
    return offsets, rows, values


def merge_rows(parts, n_rslots, n_values):
    """Several gatherings (:func:`gather_rows` of shards or workers) as one, rows
    grouped by slot (within a slot in part order; the sums do not depend on it)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return (np.zeros(n_rslots + 1, np.int64), np.zeros((0, 0), np.uint8),
                np.zeros((0, n_values)))
    if len(parts) == 1:
        return parts[0]
    slot = np.concatenate([np.repeat(np.arange(n_rslots), np.diff(p[0])) for p in parts])
    order = np.argsort(slot, kind="stable")
    counts = sum(np.diff(p[0]) for p in parts)
    offsets = np.zeros(n_rslots + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return (offsets, np.concatenate([p[1] for p in parts])[order],
            np.concatenate([p[2] for p in parts])[order])


@njit(nogil=True, cache=True)
def _sort_keys(keys, n):
    """Sort ``keys[:n]`` in place (insertion sort for the few rows of a small node)."""
    if n > 48:
        keys[:n] = np.sort(keys[:n])
        return
    for i in range(1, n):
        k = keys[i]
        j = i - 1
        while j >= 0 and keys[j] > k:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = k


@njit(nogil=True, cache=True)
def _row_splits(offsets, rows, values, totals, fmask, feats, col_offset, crit, lam, msl, mcw,
                gain, feat, sbin, mleft, bin_hi, left):
    """Best split per row slot; outputs as :func:`._kernels.best_splits` leaves them
    after ``_finish_best`` (``feat``: global feature index)."""
    S = offsets.shape[0] - 1
    F = rows.shape[1]
    C = totals.shape[1]
    cnt = C - 1
    compact = feats.shape[0] > 0
    masked = fmask.shape[0] > 0
    n_cand = feats.shape[1] if compact else F
    most = 1
    for s in range(S):
        most = max(most, offsets[s + 1] - offsets[s])
    keys = np.empty(most, np.int64)
    run_bin = np.empty(most, np.int64)
    run_sum = np.zeros((most, C))
    L = np.empty(C)
    R = np.empty(C)
    for s in range(S):
        a = offsets[s]
        n = offsets[s + 1] - a
        best = -np.inf
        gain[s] = best
        if n == 0:
            continue
        P = _score(totals[s], crit, lam)
        b_feat = -1
        b_bin = 0
        b_opt = 0
        b_hi = -1
        b_missing = 0.0
        for j in range(n_cand):
            if compact:
                f = feats[s, j] - col_offset
                if feats[s, j] < 0 or f < 0 or f >= F:
                    continue
            else:
                f = j
                if masked and not fmask[s, f]:
                    continue
            # The node's non-empty bins of feature f in order, and their sums.
            for i in range(n):
                keys[i] = np.int64(rows[a + i, f]) * most + i
            _sort_keys(keys, n)
            m = 0
            for i in range(n):
                b = keys[i] // most
                r = a + keys[i] - b * most
                if m == 0 or run_bin[m - 1] != b:
                    run_bin[m] = b
                    for c in range(C):
                        run_sum[m, c] = 0.0
                    m += 1
                for c in range(cnt):
                    run_sum[m - 1, c] += values[r, c]
                run_sum[m - 1, cnt] += 1.0
            first = 1 if run_bin[0] == 0 else 0       # run 0 holds the missing values
            missing = run_sum[0, cnt] if first == 1 else 0.0
            for opt in range(2):
                if opt == 1 and first == 0:
                    continue
                for c in range(C):
                    L[c] = run_sum[0, c] if opt == 1 else 0.0
                for k in range(first, m):
                    for c in range(C):
                        L[c] += run_sum[k, c]
                    for c in range(C):
                        R[c] = totals[s, c] - L[c]
                    if R[cnt] < msl:
                        break
                    if not _valid(L, R, crit, msl, mcw):
                        continue
                    g = _score(L, crit, lam) + _score(R, crit, lam) - P
                    if g > best:
                        best = g
                        b_feat = f
                        b_bin = run_bin[k]
                        b_opt = opt
                        b_hi = run_bin[k + 1] if k + 1 < m else -1
                        b_missing = missing
                        for c in range(C):
                            left[s, c] = L[c]
        gain[s] = best
        if best == -np.inf:
            continue
        feat[s] = b_feat + col_offset
        sbin[s] = b_bin
        bin_hi[s] = b_hi
        if b_missing == 0.0:
            # No missing values here in training: send them to the larger child.
            b_opt = 1 if left[s, cnt] >= totals[s, cnt] - left[s, cnt] else 0
        mleft[s] = b_opt


def row_best_splits(gathered, totals, params: SplitParams, feature_mask=None, feats=None,
                    col_offset: int = 0) -> BestSplits:
    """Best split of each row slot of ``gathered`` (:func:`gather_rows` / :func:`merge_rows`)
    given its ``totals`` (S, C); the same answer as :func:`.splitting.find_best_splits`
    on the slots' histograms. ``feature_mask`` (S, F_here) bool over the features
    here, or ``feats`` (S, k) global candidate ids (-1 pads): as that function's
    ``feature_mask`` or compact ``feature_ids``. ``col_offset``: the global index of
    the first feature of the rows (feature-parallel blocks). Threshold splits only.
    """
    offsets, rows, values = gathered
    totals = np.ascontiguousarray(totals, dtype=np.float64)
    S, C = totals.shape
    out = BestSplits.empty(S, C)
    if S == 0:
        return out
    mleft = np.zeros(S, np.int64)
    fm = _NO_MASK if feature_mask is None else np.ascontiguousarray(feature_mask, np.bool_)
    fs = _NO_FEATS if feats is None else np.ascontiguousarray(feats, np.int32)
    _row_splits(offsets, np.ascontiguousarray(rows), np.ascontiguousarray(values), totals, fm, fs,
                int(col_offset), _CRIT[params.criterion], float(params.reg_lambda),
                float(max(1, params.min_samples_leaf)), float(params.min_child_weight),
                out.gain, out.feature, out.bin, mleft, out.bin_hi, out.left)
    out.missing_left[:] = mleft == 1
    return out
