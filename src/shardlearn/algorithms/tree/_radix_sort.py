"""Sorting float64 columns for the binning summaries: LSD radix sort in numba.

Every shard sorts every feature column once per fit (the summaries of
:mod:`.binning`). numpy's comparison sort takes about 35 ns a value here (50k
values: 1.7 ms); six passes of an 11-bit radix sort take about 10 (0.5 ms), and a
pass whose digit is the same for every value is skipped. The result is the same
sorted array (the same values in increasing order; -0.0 before 0.0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_SIGN = np.uint64(1) << np.uint64(63)
_DIGIT_BITS = 11
_N_DIGITS = 1 << _DIGIT_BITS


@njit(nogil=True, cache=True)
def _radix(x):
    n = x.shape[0]
    # Order-preserving map to unsigned: flip every bit of negatives, the sign of others.
    src = x.view(np.uint64).copy()
    for i in range(n):
        k = src[i]
        src[i] = ~k if k & _SIGN else k | _SIGN
    dst = np.empty_like(src)
    count = np.zeros(_N_DIGITS, np.int64)
    mask = np.uint64(_N_DIGITS - 1)
    for p in range(6):
        shift = np.uint64(_DIGIT_BITS * p)
        count[:] = 0
        for i in range(n):
            count[(src[i] >> shift) & mask] += 1
        if count.max() == n:
            continue
        start = 0
        for d in range(_N_DIGITS):
            c = count[d]
            count[d] = start
            start += c
        for i in range(n):
            d = (src[i] >> shift) & mask
            dst[count[d]] = src[i]
            count[d] += 1
        src, dst = dst, src
    for i in range(n):
        k = src[i]
        dst[i] = k & ~_SIGN if k & _SIGN else ~k
    return dst.view(np.float64)


def sort_finite(col):
    """The non-NaN values of ``col`` in increasing order, and how many were NaN."""
    col = np.asarray(col)
    if col.dtype != np.float64:
        out = np.sort(col)
        n_ok = out.size - (int(np.count_nonzero(np.isnan(out))) if out.dtype.kind == "f" else 0)
        return out[:n_ok], col.size - n_ok
    nan = np.isnan(col)
    n_missing = int(np.count_nonzero(nan))
    values = col[~nan] if n_missing else np.ascontiguousarray(col)
    return _radix(values), n_missing
