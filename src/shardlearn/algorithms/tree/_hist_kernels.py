"""Numba histogram kernels: a shard's rows read once or twice per level.

Layouts are those of :mod:`._kernels`. Three float loops, and the packed ones of
:mod:`._packed_hist` (boosting with one tree a round), picked by the callers below:

* :func:`_hist_root`: one tree, every row in its root (the first level of a
  boosting round): no node lookups, totals kept in registers.
* :func:`_hist_staged`: one tree, several nodes: the counted rows are grouped by
  node first, then each node's histogram is built from a contiguous block, so
  one node's histogram (about 170 KB for 28 features) stays in cache.
* :func:`_hist_rows`: several trees (forests, multiclass boosting) or per-node
  feature subsets: per tree, the rows are moved and sorted by node (a counting
  sort), then each node's histogram is built from its rows.

The previous level's (threshold) splits can be applied to each row in the same
pass, just before it is counted, so a level reads its rows once (a separate
pass to move them cost about 15% of the histogram work). Categorical splits are
moved by :func:`._kernels.apply_splits` first; they are rare, and the plain
threshold test keeps these loops short. The per-tree rows of every table are
taken once per tree (2-D lookups in the row loop cost about 20%), and the common
case of two value channels plus a count is written out by hand. Every loop here
indexes with unsigned integers and moves rows without a branch per row (see
:func:`._packed_hist.move_table`).
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit

from . import _packed_hist as P


@njit(nogil=True, cache=True)
def _hist_rows(Xb, vals, w, pos, slot, feats, col_offset, hist, totals, move, feature,
               split_bin, missing_left, left, right):
    """Several trees, or per-node feature subsets (``feats[slot]``, global ids; < 0 and
    columns not held here skipped): per tree, one pass moves the rows and sorts the
    counted ones by histogram slot (a counting sort, no branch per row), then each
    slot's histogram is built from its rows.

    One node's histogram at a time stays in L1 (15 KB for 5 features); adding the
    rows in shard order instead touched every node's at random (a forest's deep
    levels hold hundreds of MB of histograms), and cost 1.5-2x more.
    """
    n_trees, n = pos.shape
    n_feat = Xb.shape[1]
    cv = vals.shape[2]
    tv = vals.shape[0]
    tw = w.shape[0]
    S, Fh, B, C = hist.shape
    compact = feats.shape[0] > 0
    Kf = feats.shape[1] if compact else n_feat
    every = (np.arange(n_feat) + col_offset).astype(feats.dtype)   # feats when not compact
    rows = np.empty(n, np.uint32)
    bucket = np.empty(n, np.int32)       # slot + 1; 0: not counted
    count = np.zeros(S + 1, np.int64)
    end = np.zeros(S + 1, np.int64)
    rowv = np.empty(C, hist.dtype)       # a row's values, in the histogram's type
    for t in range(n_trees):
        vals_t = vals[t if tv > 1 else 0]
        w_t = w[t if tw > 1 else 0]
        slot_t = slot[t]
        pos_t = pos[t]
        tab = (P.move_table(feature[t], split_bin[t], missing_left[t], left[t], right[t])
               if move else np.zeros(0, np.int32))
        lo_s = S
        hi_s = -1
        for v in range(slot_t.shape[0]):
            if slot_t[v] >= 0:
                lo_s = min(lo_s, slot_t[v])
                hi_s = max(hi_s, slot_t[v])
        for i in range(n):
            iu = np.uint64(i)            # unsigned: see _packed_hist.move_table
            node = np.uint64(pos_t[iu])
            if move:
                o = node * np.uint64(8)
                f = tab[o]
                if f >= 0:
                    b = np.int32(Xb[iu, np.uint64(f)])
                    go_right = (np.int32(b > tab[o + np.uint64(1)])
                                | (np.int32(b == 0) & tab[o + np.uint64(2)]))
                    node = np.uint64(tab[o + np.uint64(3 + go_right)])
                    pos_t[iu] = np.int32(node)
            # Not ``k = slot + 1 if w else 0``: numba makes that a branch.
            s = slot_t[node]
            s = s if w_t[iu] != 0.0 else -1
            bucket[iu] = s + 1
            count[np.uint64(s + 1)] += 1
        if hi_s < 0:
            count[0] = 0
            continue
        # Slots lo_s..hi_s first, in order; the rows not counted after them.
        a = 0
        for s in range(lo_s, hi_s + 1):
            end[s + 1] = a
            a += count[s + 1]
            count[s + 1] = 0
        end[0] = a
        count[0] = 0
        for i in range(n):
            iu = np.uint64(i)
            k = np.uint64(bucket[iu])
            p = end[k]
            rows[np.uint64(p)] = np.uint32(i)
            end[k] = p + 1
        a = 0
        for s in range(lo_s, hi_s + 1):
            e = end[s + 1]
            if e == a:
                continue
            h = hist[s].reshape(Fh * B * C)
            fs = feats[s] if compact else every
            if C == 3:
                # Two value channels and a count: locals, not arrays (a row's adds
                # would otherwise wait on the last row's stores).
                t0 = 0.0
                t1 = 0.0
                # The values in the histogram's type, through a fresh array (one
                # shared with the other branch may alias ``h``: 5% slower).
                rv = np.empty(3, hist.dtype)
                rv[2] = 1.0
                one = rv[2]
                for j in range(a, e):
                    r = np.uint64(rows[np.uint64(j)])
                    wi = w_t[r]
                    x0 = vals_t[r, 0] * wi
                    x1 = vals_t[r, 1] * wi
                    t0 += x0
                    t1 += x1
                    rv[0] = x0
                    rv[1] = x1
                    v0 = rv[0]
                    v1 = rv[1]
                    for jj in range(Kf):
                        f = fs[jj] - col_offset
                        if f < 0 or f >= n_feat:
                            continue
                        o = np.uint64((jj * B + np.int64(Xb[r, np.uint64(f)])) * 3)
                        h[o] += v0
                        h[o + np.uint64(1)] += v1
                        h[o + np.uint64(2)] += one
                totals[s, 0] += t0
                totals[s, 1] += t1
                totals[s, 2] += e - a
            else:
                tot = totals[s]
                for j in range(a, e):
                    r = np.uint64(rows[np.uint64(j)])
                    wi = w_t[r]
                    for c in range(cv):
                        x = vals_t[r, c] * wi
                        tot[c] += x
                        rowv[c] = x
                    rowv[cv] = 1.0
                    tot[cv] += 1.0
                    for jj in range(Kf):
                        f = fs[jj] - col_offset
                        if f < 0 or f >= n_feat:
                            continue
                        o = np.uint64((jj * B + np.int64(Xb[r, np.uint64(f)])) * C)
                        for c in range(C):
                            h[o + np.uint64(c)] += rowv[c]
            a = e


@njit(nogil=True, cache=True)
def _hist_staged(Xb, vals, w, pos, slot, hist, totals, move, feature, split_bin, missing_left,
                 left, right):
    """One tree, every feature, several nodes: rows are first copied out grouped by
    node, then each node's histogram is built from a contiguous block.

    Rows of different nodes interleave in the shard, so building all nodes in one
    pass touches every node's histogram at random (several MB: L2 misses); one node
    at a time keeps its histogram hot and costs a copy of the counted rows. The
    additions of a node go in row order, whatever the move and index style.
    """
    n = pos.shape[1]
    n_feat = Xb.shape[1]
    S, Fh, B, C = hist.shape
    cv = vals.shape[2]
    vals_t = vals[0]
    w_t = w[0]
    slot_t = slot[0]
    pos_t = pos[0]
    tab = (P.move_table(feature[0], split_bin[0], missing_left[0], left[0], right[0])
           if move else np.zeros(0, np.int32))
    sl = np.empty(n, np.int32)
    start = np.zeros(S + 1, np.int64)
    for i in range(n):
        iu = np.uint64(i)
        node = np.uint64(pos_t[iu])
        if move:
            o = node * np.uint64(8)
            f = tab[o]
            if f >= 0:
                b = np.int32(Xb[iu, np.uint64(f)])
                go_right = (np.int32(b > tab[o + np.uint64(1)])
                            | (np.int32(b == 0) & tab[o + np.uint64(2)]))
                node = np.uint64(tab[o + np.uint64(3 + go_right)])
                pos_t[iu] = np.int32(node)
        s = slot_t[node]
        if w_t[iu] == 0.0:
            s = -1
        sl[iu] = s
        start[np.uint64(s + 1)] += np.int64(s >= 0)
    for s in range(S):
        start[s + 1] += start[s]
    m = start[S]
    bx = np.empty((m, n_feat), np.uint8)
    bv = np.empty((m, cv))
    fill = start[:S].copy()
    for i in range(n):
        iu = np.uint64(i)
        s = sl[iu]
        if s < 0:
            continue
        su = np.uint64(s)
        j = np.uint64(fill[su])
        fill[su] = j + np.uint64(1)
        for f in range(n_feat):
            bx[j, np.uint64(f)] = Xb[iu, np.uint64(f)]
        wi = w_t[iu]
        for c in range(cv):
            bv[j, np.uint64(c)] = vals_t[iu, np.uint64(c)] * wi
    rowv = np.empty(C)
    ub = np.uint64(B)
    for s in range(S):
        h = hist[s].reshape(Fh * B * C)
        lo = np.uint64(start[s])
        hi = np.uint64(start[s + 1])
        for c in range(cv):
            acc = 0.0
            for j in range(lo, hi):
                acc += bv[np.uint64(j), np.uint64(c)]
            totals[s, c] += acc
        totals[s, cv] += start[s + 1] - start[s]
        for j in range(lo, hi):
            ju = np.uint64(j)
            if C == 3:
                g0 = bv[ju, 0]
                g1 = bv[ju, 1]
                for f in range(n_feat):
                    fu = np.uint64(f)
                    o = (fu * ub + np.uint64(bx[ju, fu])) * np.uint64(3)
                    h[o] += g0
                    h[o + np.uint64(1)] += g1
                    h[o + np.uint64(2)] += 1.0
            else:
                for c in range(cv):
                    rowv[c] = bv[ju, np.uint64(c)]
                rowv[cv] = 1.0
                for f in range(n_feat):
                    fu = np.uint64(f)
                    o = (fu * ub + np.uint64(bx[ju, fu])) * np.uint64(C)
                    for c in range(C):
                        h[o + np.uint64(c)] += rowv[c]


@njit(nogil=True, cache=True)
def _hist_root(Xb, vals, w, hist, totals):
    """One tree whose rows all sit in its root (slot 0): no node lookups, and the
    totals summed in registers."""
    n, n_feat = Xb.shape
    _, Fh, B, C = hist.shape
    cv = vals.shape[2]
    vals_t = vals[0]
    w_t = w[0]
    h = hist[0].reshape(Fh * B * C)
    rowv = np.empty(C)
    ub = np.uint64(B)
    t0 = 0.0
    t1 = 0.0
    cnt = 0.0
    for i in range(n):
        iu = np.uint64(i)
        wi = w_t[iu]
        if wi == 0.0:
            continue
        cnt += 1.0
        if C == 3:
            g0 = vals_t[iu, 0] * wi
            g1 = vals_t[iu, 1] * wi
            t0 += g0
            t1 += g1
            for f in range(n_feat):
                fu = np.uint64(f)
                o = (fu * ub + np.uint64(Xb[iu, fu])) * np.uint64(3)
                h[o] += g0
                h[o + np.uint64(1)] += g1
                h[o + np.uint64(2)] += 1.0
        else:
            for c in range(cv):
                rowv[c] = vals_t[iu, np.uint64(c)] * wi
                totals[0, c] += rowv[c]
            rowv[cv] = 1.0
            for f in range(n_feat):
                fu = np.uint64(f)
                o = (fu * ub + np.uint64(Xb[iu, fu])) * np.uint64(C)
                for c in range(C):
                    h[o + np.uint64(c)] += rowv[c]
    if C == 3:
        totals[0, 0] += t0
        totals[0, 1] += t1
    totals[0, C - 1] += cnt


_NO_FEATS = np.zeros((0, 0), np.int32)
_NO_MOVES = np.zeros((1, 1), np.int32)


def build_histograms(Xb, vals, w, pos, slot, hist, totals, at_root=False, pack=None,
                     carry=None):
    """Add each row's channels to ``hist[slot, f, bin]`` and ``totals[slot]``.

    Row values lie on a power-of-two grid (see :mod:`.exact`), so the sums are
    exact and the order of the additions does not matter. ``at_root``: the caller
    knows that every row of the single tree is in its root, histogram slot 0.
    ``pack=(qg, qh, packed, skip_zero)``: the grids of the two value channels when
    they are :func:`._packed_hist.pack_grid` steps, every row's values times its
    weight (0 or 1) packed into one integer, and whether to skip the zeros, for the
    packed loops (the same sums, faster). ``carry``: a
    :class:`._packed_hist.FoldCarry` the packed loops leave their partial blocks in
    (the caller flushes it into ``hist`` at the end of its fold); None: flushed here.
    ``hist`` holds zeros or sums to add to, or, if ``carry`` says so
    (:meth:`._packed_hist.FoldCarry.mark_fresh`), nothing yet.
    """
    m = _NO_MOVES
    root = at_root and pos.shape[0] == 1 and hist.shape[0] == 1
    if _packable(pack, vals, hist) and _one_tree(pos, None):
        with _packed_buffers(pack, carry, hist, totals, Xb.shape[1]) as buf:
            if root:
                P.packed_root(Xb, pack[2], pack[3], hist, totals, pack[0], pack[1], *buf)
            else:
                P.packed_staged(Xb, pack[2], pack[3], pos, slot, hist, totals, False, m, m, m, m,
                                m, pack[0], pack[1], *buf)
        return hist
    if carry is not None:
        carry.zero_unset(hist)      # the float loops add into it
    if root:
        _hist_root(Xb, vals, w, hist, totals)
    elif _staged(pos, hist, None):
        _hist_staged(Xb, vals, w, pos, slot, hist, totals, False, m, m, m, m, m)
    else:
        _hist_rows(Xb, vals, w, pos, slot, _NO_FEATS, 0, hist, totals, False, m, m, m, m, m)
    return hist


@contextlib.contextmanager
def _packed_buffers(pack, carry, hist, totals, n_features):
    """``(acc, count, total)`` for a packed loop: the fold's ``carry`` (partial blocks
    left in it for the fold's end), or one for this call alone, flushed after it."""
    own = carry is None
    if own:
        carry = P.FoldCarry()
    yield carry.take(hist.shape[0], n_features, pack[0], pack[1], hist, totals)
    if own:
        carry.finish(hist, totals)


def _packable(pack, vals, hist):
    # C-contiguous: the packed loops flush into each node through a flat view.
    return hist.flags.c_contiguous and _packed_values(pack, vals, hist.shape[3], hist.dtype)


def _packed_values(pack, vals, n_channels, dtype) -> bool:
    return (pack is not None and vals.shape[0] == 1 and vals.shape[2] == 2
            and n_channels == 3 and np.dtype(dtype) == np.float64)


def takes_packed_loops(pack, vals, pos, feats, n_channels, dtype) -> bool:
    """Whether a pass into a new (C-contiguous) histogram of ``n_channels`` and
    ``dtype`` takes the packed loops: what :func:`build_histograms` and
    :func:`split_and_build` decide, before the histogram exists."""
    return _packed_values(pack, vals, n_channels, dtype) and _one_tree(pos, feats)


def _one_tree(pos, feats):
    return pos.shape[0] == 1 and feats is None


def _staged(pos, hist, feats):
    # One node's histogram (about 170 KB for 28 features) stays in cache by itself.
    return pos.shape[0] == 1 and hist.shape[0] > 1 and feats is None


def build_histograms_subset(Xb, vals, w, pos, slot, feats, col_offset, hist, totals):
    """:func:`build_histograms` for only the features ``feats[slot]`` of each node
    (histogram axis 1 follows ``feats``; ids < 0 and columns not held here are skipped)."""
    m = _NO_MOVES
    _hist_rows(Xb, vals, w, pos, slot, feats, col_offset, hist, totals, False, m, m, m, m, m)
    return hist


def split_and_build(Xb, vals, w, pos, feature, split_bin, missing_left, left, right, slot,
                    hist, totals, feats=None, pack=None, carry=None):
    """Move each row to the child of its node's (threshold) split, then count it.

    Data-parallel only: the shard holds every feature. ``feats`` as in
    :func:`build_histograms_subset`, ``pack`` and ``carry`` as in
    :func:`build_histograms`.
    """
    if _one_tree(pos, feats) and _packable(pack, vals, hist):
        with _packed_buffers(pack, carry, hist, totals, Xb.shape[1]) as buf:
            P.packed_staged(Xb, pack[2], pack[3], pos, slot, hist, totals, True, feature,
                            split_bin, missing_left, left, right, pack[0], pack[1], *buf)
        return hist
    if carry is not None:
        carry.zero_unset(hist)      # the float loops add into it
    if _staged(pos, hist, feats):
        _hist_staged(Xb, vals, w, pos, slot, hist, totals, True, feature, split_bin,
                     missing_left, left, right)
    else:
        _hist_rows(Xb, vals, w, pos, slot, _NO_FEATS if feats is None else feats, 0, hist,
                   totals, True, feature, split_bin, missing_left, left, right)
    return hist
