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
26 bits; the signed gradient 27). So rows are added in blocks of 2047 into an
int64 accumulator (57 KB for 28 features), which is unpacked into per-field int64
sums after each block and into the float64 histogram once per node. All sums are
of integers, hence exact: the histogram equals, bit for bit, the one the float
loops of :mod:`._hist_kernels` build from the same values.

Weights above 1 can push a row past the limits; a shard with such a row uses the
float loops for that round (:func:`._boost_kernels.boost_rows` says which), with
the same values and so the same sums.

The accumulator has a fixed stride of 256 bins per feature. The compiler then
knows that two features of one row never share a bin, and overlaps their loads
and stores: with a stride known only at run time the same loop is 2-3x slower.
"""

from __future__ import annotations

import math

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


def pack_grid(max_abs_value: float) -> float:
    """Smallest power of two ``q`` with ``max_abs_value / q <= 2**VALUE_BITS``."""
    m = float(max_abs_value)
    if not math.isfinite(m) or m <= 0.0:
        return 1.0
    return math.ldexp(1.0, math.ceil(math.log2(m)) - VALUE_BITS)


@njit(nogil=True, cache=True)
def _unpack_into(acc, G, Hs, Cn):
    for k in range(acc.shape[0]):
        x = acc[k]
        G[k] += x >> _G_SHIFT
        Hs[k] += (x >> _H_SHIFT) & _H_MASK
        Cn[k] += x & _C_MASK
        acc[k] = 0


@njit(nogil=True, cache=True)
def _into_hist(acc, G, Hs, Cn, hist_s, qg, qh):
    """The last block (``acc``) plus the earlier ones (``G, Hs, Cn``) into the
    node's histogram; all four are zeroed for the next node."""
    Fh, B, _ = hist_s.shape
    for f in range(Fh):
        h = hist_s[f]
        for b in range(B):
            k = f * _STRIDE + b
            x = acc[k]
            h[b, 0] += ((x >> _G_SHIFT) + G[k]) * qg
            h[b, 1] += (((x >> _H_SHIFT) & _H_MASK) + Hs[k]) * qh
            h[b, 2] += (x & _C_MASK) + Cn[k]
            acc[k] = 0
            G[k] = 0
            Hs[k] = 0
            Cn[k] = 0


@njit(nogil=True, cache=True)
def _into_hist_one(acc, hist_s, qg, qh):
    """:func:`_into_hist` when the node had a single block."""
    Fh, B, _ = hist_s.shape
    for f in range(Fh):
        h = hist_s[f]
        for b in range(B):
            k = f * _STRIDE + b
            x = acc[k]
            h[b, 0] += (x >> _G_SHIFT) * qg
            h[b, 1] += ((x >> _H_SHIFT) & _H_MASK) * qh
            h[b, 2] += x & _C_MASK
            acc[k] = 0


@njit(nogil=True, cache=True)
def _add_rows(Xb, rows, packed, lo, hi, acc):
    """Rows ``rows[lo:hi]`` of ``Xb``, with values ``packed[rows[lo:hi]]``; returns
    the packed sum of those values (the node's totals)."""
    n_feat = Xb.shape[1]
    total = np.int64(0)
    for j in range(lo, hi):
        r = rows[j]
        v = packed[r]
        total += v
        xi = Xb[r]
        for f in range(n_feat):
            acc[f * _STRIDE + xi[f]] += v
    return total


@njit(nogil=True, cache=True)
def _node(Xb, rows, packed, lo, hi, acc, G, Hs, Cn, hist_s, tot_s, qg, qh):
    """One node's rows ``rows[lo:hi]`` added to its histogram and totals."""
    tg = 0
    th = 0
    tc = 0
    a = lo
    while True:
        b = min(hi, a + BLOCK_ROWS)
        s = _add_rows(Xb, rows, packed, a, b, acc)
        tg += s >> _G_SHIFT
        th += (s >> _H_SHIFT) & _H_MASK
        tc += s & _C_MASK
        if b == hi:
            break
        _unpack_into(acc, G, Hs, Cn)
        a = b
    if hi - lo <= BLOCK_ROWS:
        _into_hist_one(acc, hist_s, qg, qh)
    else:
        _into_hist(acc, G, Hs, Cn, hist_s, qg, qh)
    tot_s[0] += tg * qg
    tot_s[1] += th * qh
    tot_s[2] += tc


@njit(nogil=True, cache=True)
def packed_root(Xb, packed, skip_zero, hist, totals, qg, qh):
    """:func:`._hist_kernels._hist_root` for two value channels and a count.

    ``packed``: each row's packed values, 0 for a row of weight 0 (which adds
    nothing). ``skip_zero``: leave such rows out of the loop (worth it when they
    are many, as with row subsampling)."""
    n, n_feat = Xb.shape
    rows = np.empty(n, np.int32)
    m = 0
    for i in range(n):
        if not skip_zero or packed[i] != 0:
            rows[m] = i
            m += 1
    nk = n_feat * _STRIDE
    acc = np.zeros(nk, np.int64)
    G = np.zeros(nk, np.int64)
    Hs = np.zeros(nk, np.int64)
    Cn = np.zeros(nk, np.int64)
    if m > 0:
        _node(Xb, rows, packed, 0, m, acc, G, Hs, Cn, hist[0], totals[0], qg, qh)


@njit(nogil=True, cache=True)
def packed_staged(Xb, packed, skip_zero, pos, slot, hist, totals, move, feature, split_bin,
                  missing_left, left, right, qg, qh):
    """:func:`._hist_kernels._hist_staged` for two value channels and a count: the
    counted rows' indices are grouped by node, then each node is built from its
    group. ``packed`` and ``skip_zero`` as in :func:`packed_root`."""
    n = pos.shape[1]
    n_feat = Xb.shape[1]
    S = hist.shape[0]
    slot_t = slot[0]
    pos_t = pos[0]
    feat_t = feature[0]
    sbin_t = split_bin[0]
    mleft_t = missing_left[0]
    left_t = left[0]
    right_t = right[0]
    sl = np.empty(n, np.int32)
    start = np.zeros(S + 1, np.int64)
    for i in range(n):
        node = pos_t[i]
        if move:
            f = feat_t[node]
            if f >= 0:
                b = Xb[i, f]
                go_left = (mleft_t[node] != 0) if b == 0 else (b <= sbin_t[node])
                node = left_t[node] if go_left else right_t[node]
                pos_t[i] = node
        s = slot_t[node]
        if skip_zero and packed[i] == 0:
            s = -1
        sl[i] = s
        if s >= 0:
            start[s + 1] += 1
    for s in range(S):
        start[s + 1] += start[s]
    rows = np.empty(start[S], np.int32)
    fill = start[:S].copy()
    for i in range(n):
        s = sl[i]
        if s >= 0:
            rows[fill[s]] = i
            fill[s] += 1
    nk = n_feat * _STRIDE
    acc = np.zeros(nk, np.int64)
    G = np.zeros(nk, np.int64)
    Hs = np.zeros(nk, np.int64)
    Cn = np.zeros(nk, np.int64)
    for s in range(S):
        if start[s + 1] > start[s]:
            _node(Xb, rows, packed, start[s], start[s + 1], acc, G, Hs, Cn, hist[s], totals[s],
                  qg, qh)
