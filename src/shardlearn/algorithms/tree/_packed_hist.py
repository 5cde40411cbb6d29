"""Boosting histograms with one integer add per row and feature instead of three.

A boosting row contributes (gradient, hessian, 1) to one bin of every feature.
When the gradient and hessian lie on power-of-two grids ``qg`` and ``qh`` with at
most :data:`VALUE_BITS` bits each (``|g / qg| <= 2**15``, ``0 <= h / qh <= 2**15``,
see :func:`pack_grid`), the three fit in one int64::

    bits 37..63   gradient / qg   (signed)
    bits 11..36   hessian / qh
    bits  0..10   count

and the int64 sum of at most :data:`BLOCK_ROWS` packed rows is the packed sum of
each field: no field can overflow into the next (2047 rows of at most 2**15 need
26 bits; the signed gradient 27). So a node's rows are added in blocks of 2047
into an int64 accumulator (57 KB for 28 features), which is unpacked into the
float64 histogram after each block. All sums are of integer multiples of the
grids, hence exact: the histogram equals, bit for bit, the one the float loops of
:mod:`._hist_kernels` build from the same values.

Weights above 1 can push a row past the limits; a shard with such a row uses the
float loops for that round (:func:`._boost_kernels.boost_rows` says which), with
the same values and so the same sums.

The accumulator has a fixed stride of 256 bins per feature. The compiler then
knows that two features of one row never share a bin, and overlaps their loads
and stores: with a stride known only at run time the same loop is 2-3x slower.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit

#: Bits of each of gradient and hessian per row (see the module docstring).
VALUE_BITS = 15
_BLOCK_BITS = 11
#: Rows added into the packed accumulator between two unpackings.
BLOCK_ROWS = (1 << _BLOCK_BITS) - 1
_H_SHIFT = _BLOCK_BITS
_G_SHIFT = 2 * _BLOCK_BITS + VALUE_BITS
_C_MASK = (1 << _BLOCK_BITS) - 1
_H_MASK = (1 << (_BLOCK_BITS + VALUE_BITS)) - 1
#: A row packs as ``g/qg * G_UNIT + h/qh * H_UNIT + 1``, each ratio at most ``LIMIT``.
LIMIT = float(1 << VALUE_BITS)
G_UNIT = 1 << _G_SHIFT
H_UNIT = 1 << _H_SHIFT
_STRIDE = 256          # bins per feature in the accumulator: every uint8 code


def accumulator_size(n_slots: int, n_features: int) -> int:
    """Length of the int64 scratch the packed loops need for ``n_slots`` nodes."""
    return n_slots * n_features * _STRIDE


def pack_grid(max_abs_value: float) -> float:
    """Smallest power of two ``q`` with ``max_abs_value / q <= 2**VALUE_BITS``."""
    m = float(max_abs_value)
    if not math.isfinite(m) or m <= 0.0:
        return 1.0
    return math.ldexp(1.0, math.ceil(math.log2(m)) - VALUE_BITS)


@njit(nogil=True, cache=True)
def _flush(acc, base, hist_s, tot_s, total, qg, qh, assign):
    """A block's packed sums (``acc[base:]``, ``total``) into a node's histogram and
    totals; ``acc`` zeroed for the next block. Integer multiples of a power of two
    below 2**53: exact in float64, in any order. ``assign``: the node's histogram
    holds nothing yet (not even zeros): written, not added to (see
    :class:`FoldCarry`).

    A block is flushed every 2047 rows, 7168 entries for 28 features: about 0.4 ms
    of a 1 ms root pass over 50,000 rows with three-index stores into ``hist_s``;
    flat ones and a zeroing slice take half. So ``hist_s`` must be C-contiguous
    (a node of a histogram array the packed loops' callers allocate; see
    ``_hist_kernels._packable``)."""
    Fh, B, _ = hist_s.shape
    h = hist_s.reshape(-1)
    for f in range(Fh):
        ab = np.uint64(base + f * _STRIDE)
        hb = np.uint64(f * B * 3)
        if assign:
            for b in range(B):
                bu = np.uint64(b)
                x = acc[ab + bu]
                j = hb + np.uint64(3) * bu
                h[j] = np.float64(x >> _G_SHIFT) * qg
                h[j + np.uint64(1)] = np.float64((x >> _H_SHIFT) & _H_MASK) * qh
                h[j + np.uint64(2)] = np.float64(x & _C_MASK)
        else:
            for b in range(B):
                bu = np.uint64(b)
                x = acc[ab + bu]
                j = hb + np.uint64(3) * bu
                h[j] += np.float64(x >> _G_SHIFT) * qg
                h[j + np.uint64(1)] += np.float64((x >> _H_SHIFT) & _H_MASK) * qh
                h[j + np.uint64(2)] += np.float64(x & _C_MASK)
        acc[ab:ab + np.uint64(B)] = 0
    tot_s[0] += (total >> _G_SHIFT) * qg
    tot_s[1] += ((total >> _H_SHIFT) & _H_MASK) * qh
    tot_s[2] += total & _C_MASK


@njit(nogil=True, cache=True)
def move_table(feature, split_bin, missing_left, left, right):
    """One tree's threshold splits as 8 int32 a node: feature (< 0: a leaf), split
    bin, 1 if missing values (bin 0) go right, left child, right child.

    A row's child is then ``tab[8 * node + 3 + go_right]`` with ``go_right``
    computed, not branched on: it is a coin flip per row, and a mispredicted
    branch costs more than the rest of the move. The loops index with unsigned
    integers (``np.uint64``), which spares numba's negative-index wraparound:
    in so short a loop that was a third of the time. The move is written out in
    each loop: as a separate numba function it was not inlined and ran 2x slower."""
    m = feature.shape[0]
    tab = np.zeros(8 * m, np.int32)
    for v in range(m):
        tab[8 * v] = feature[v]
        tab[8 * v + 1] = split_bin[v]
        tab[8 * v + 2] = 0 if missing_left[v] != 0 else 1
        tab[8 * v + 3] = left[v]
        tab[8 * v + 4] = right[v]
    return tab


@njit(nogil=True, cache=True)
def packed_root(Xb, packed, skip_zero, hist, totals, qg, qh, acc, count, total, unset):
    """:func:`._hist_kernels._hist_root` for two value channels and a count.

    ``packed``: each row's packed values, 0 for a row of weight 0 (which adds
    nothing). ``skip_zero``: leave such rows out of the loop (worth it when they
    are many, as with row subsampling). ``acc``: int64 scratch of at least
    ``accumulator_size(1, n_features)``; ``count[0]``, ``total[0]``: the rows and
    packed sum it holds (zero, or left by the previous shard of a fold). Full
    blocks are flushed here; the last, partial one is left in ``acc`` for
    :func:`flush_partial` (see :class:`FoldCarry`). ``unset[s]``: slot s of ``hist``
    holds nothing yet (its first flush writes it; cleared then)."""
    n, n_feat = Xb.shape
    c = count[0]
    tot = total[0]
    for i in range(n):
        iu = np.uint64(i)
        v = packed[iu]
        if skip_zero and v == 0:
            continue
        for f in range(n_feat):
            fu = np.uint64(f)
            acc[fu * np.uint64(_STRIDE) + np.uint64(Xb[iu, fu])] += v
        tot += v
        c += 1
        if c == BLOCK_ROWS:
            _flush(acc, 0, hist[0], totals[0], tot, qg, qh, unset[0] != 0)
            unset[0] = 0
            tot = 0
            c = 0
    count[0] = c
    total[0] = tot


@njit(nogil=True, cache=True)
def packed_staged(Xb, packed, skip_zero, pos, slot, hist, totals, move, feature, split_bin,
                  missing_left, left, right, qg, qh, acc, count, total, unset):
    """:func:`._hist_kernels._hist_staged` for two value channels and a count.

    Two passes: the first moves every row to its child (if ``move``) and lists the
    counted rows in row order with their histogram slots, without a branch per
    row; the second adds each listed row to its slot's accumulator (one per slot,
    57 KB each for 28 features). The rows are read in increasing order both times.
    ``packed``, ``skip_zero``, ``acc`` (``accumulator_size(S, n_features)``),
    ``count``, ``total`` and ``unset`` (one per slot) as in :func:`packed_root`."""
    n = pos.shape[1]
    n_feat = Xb.shape[1]
    slot_t = slot[0]
    pos_t = pos[0]
    tab = (move_table(feature[0], split_bin[0], missing_left[0], left[0], right[0])
           if move else np.zeros(0, np.int32))
    rows = np.empty(n + 1, np.uint32)
    row_slot = np.empty(n + 1, np.int32)
    m = np.uint64(0)
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
        if skip_zero and packed[iu] == 0:
            s = -1
        rows[m] = np.uint32(i)
        row_slot[m] = s
        m += np.uint64(s >= 0)
    nk = n_feat * _STRIDE
    for j in range(m):
        ju = np.uint64(j)
        r = np.uint64(rows[ju])
        s = np.uint64(row_slot[ju])
        v = packed[r]
        base = s * np.uint64(nk)
        for f in range(n_feat):
            fu = np.uint64(f)
            acc[base + fu * np.uint64(_STRIDE) + np.uint64(Xb[r, fu])] += v
        total[s] += v
        c = count[s] + 1
        if c == BLOCK_ROWS:
            _flush(acc, base, hist[s], totals[s], total[s], qg, qh, unset[s] != 0)
            unset[s] = 0
            total[s] = 0
            c = 0
        count[s] = c


@njit(nogil=True, cache=True)
def flush_partial(acc, count, total, unset, hist, totals, qg, qh):
    """Flush every slot's partial block; ``acc``, ``count`` and ``total`` left zero.
    A slot still ``unset`` after that had no rows: zeroed (and ``unset`` cleared)."""
    nk = hist.shape[1] * _STRIDE
    for s in range(hist.shape[0]):
        if count[s] > 0:
            _flush(acc, s * nk, hist[s], totals[s], total[s], qg, qh, unset[s] != 0)
            unset[s] = 0
            count[s] = 0
            total[s] = 0
        elif unset[s] != 0:
            hist[s] = 0.0
            unset[s] = 0


class FoldCarry:
    """The packed accumulator of one worker's fold over its shards (a level's pass),
    or of a single shard's pass: each shard leaves its partial blocks in it for the
    next, and the end flushes them once (:meth:`finish`). Flushing a slot costs a
    pass over its 7168 entries (28 features); flushing per shard was about a quarter
    of a deep level's work. The zeroed scratch is kept per thread for the next
    pass (zeroing a fresh one per shard and level was 2-3% of a boosting fit); one
    whose pass never finished (a replay, an error) is simply not returned.

    The fold's histogram may start unwritten (:meth:`mark_fresh`): each slot's first
    flush then writes it instead of adding to zeros, which spares zeroing it first
    (5% of a boosting worker's time). Slots that never get a row are zeroed at the
    end, and a float loop that adds into the histogram asks for the unwritten slots
    to be zeroed first (:meth:`zero_unset`). ``unset``: per slot, 1 while nothing
    wrote it (None until the fold's first pass or :meth:`mark_fresh`)."""

    __slots__ = ("acc", "count", "total", "unset", "grids")
    _pool = threading.local()

    def __init__(self):
        self.acc = None
        self.count = None
        self.total = None
        self.unset = None
        self.grids = None

    def mark_fresh(self, n_slots):
        """The fold's histogram (``n_slots`` nodes) was just allocated and holds nothing yet."""
        self.unset = np.ones(n_slots, np.uint8)

    def take(self, n_slots, n_features, qg, qh, hist, totals):
        """``(acc, count, total, unset)`` for a shard's pass with these slots and grids."""
        if self.acc is None:
            need = accumulator_size(n_slots, n_features)
            free = getattr(self._pool, "free", None)
            self.acc = free if free is not None and free.shape[0] >= need else np.zeros(need, np.int64)
            self._pool.free = None
            self.count = np.zeros(n_slots, np.int64)
            self.total = np.zeros(n_slots, np.int64)
            if self.unset is None:
                self.unset = np.zeros(n_slots, np.uint8)
            self.grids = (qg, qh)
        elif self.grids != (qg, qh):          # not within one round; kept exact anyway
            flush_partial(self.acc, self.count, self.total, self.unset, hist, totals,
                          *self.grids)
            self.grids = (qg, qh)
        return self.acc, self.count, self.total, self.unset

    def zero_unset(self, hist):
        """Zero what of ``hist`` nothing wrote yet (before a loop that adds into it)."""
        if self.unset is not None and self.unset.any():
            hist[self.unset != 0] = 0
            self.unset[:] = 0

    def finish(self, hist, totals):
        """Flush what the shards left into ``hist``/``totals``; free the scratch."""
        if self.acc is None:
            self.zero_unset(hist)
            self.unset = None
            return
        flush_partial(self.acc, self.count, self.total, self.unset, hist, totals, *self.grids)
        self._pool.free = self.acc
        self.acc = None
        self.unset = None
