"""Sorting float64 columns for the binning summaries: numpy's sort or an LSD radix sort.

Every shard sorts every feature column once per fit (the summaries of
:mod:`.binning`). Which of the two is faster depends on the CPU: where numpy's
quicksort has a vectorised kernel (x86-simd-sort with AVX-512) it took 7.6 ns a
value against the radix sort's 22 (50k values, 2 cores); on a VM without one,
numpy took about 35 ns and six passes of an 11-bit radix sort about 10. So each
process times both once, on a column of its own, and keeps the faster. Either gives
the same array, bit for bit: the values in increasing order and, of equal values,
-0.0 before 0.0 (numpy's sort does not order the two zeros, so its run of zeros is
rewritten), hence the same summaries, bins and models whichever a machine picks.
"""

from __future__ import annotations

import functools
import time

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


def _sorted_without_nan(col):
    """numpy's sort of ``col`` without its NaNs (numpy sorts them last, so a float
    column is checked for NaN only where its last sorted value is one)."""
    out = np.sort(col)
    if out.dtype.kind == "f" and out.size and np.isnan(out[-1]):
        out = out[:out.size - int(np.count_nonzero(np.isnan(out)))]
    return out


def _numpy_sorted(col):
    """:func:`_sorted_without_nan`, its run of zeros rewritten -0.0 first."""
    out = _sorted_without_nan(col)
    lo, hi = np.searchsorted(out, 0.0, "left"), np.searchsorted(out, 0.0, "right")
    if hi > lo:  # -0.0 == 0.0 for the comparison sort: put the negative zeros first
        # Counted in the input: numpy's vectorised sort (min/max networks, e.g. on
        # AVX-512) may turn a -0.0 into a 0.0 where the two meet.
        n_negative = int(np.count_nonzero((col == 0.0) & np.signbit(col)))
        out[lo:lo + n_negative] = -0.0
        out[lo + n_negative:hi] = 0.0
    return out


def _radix_sorted(col):
    nan = np.isnan(col)
    n_missing = int(np.count_nonzero(nan))
    return _radix(col[~nan] if n_missing else np.ascontiguousarray(col))


_SORTS = {"numpy": _numpy_sorted, "radix": _radix_sorted}


def _time_once(sort, x) -> float:
    t = time.perf_counter()
    sort(x)
    return time.perf_counter() - t


@functools.cache
def chosen_sort() -> str:
    """The name of the sort this process uses (timed on first call: best of 3 each)."""
    x = np.random.default_rng(0).normal(size=50_000)
    _radix(x[:16])  # load the compiled kernel before timing it
    best = {name: min(_time_once(f, x) for _ in range(3)) for name, f in _SORTS.items()}
    return min(best, key=best.get)


def sort_finite(col, method: str | None = None):
    """The non-NaN values of ``col`` in increasing order, and how many were NaN.

    ``method`` ("numpy" or "radix") overrides the sort this process timed faster;
    the result is the same array either way.
    """
    col = np.asarray(col)
    if col.dtype != np.float64:
        out = _sorted_without_nan(col)
    else:
        out = _SORTS[method or chosen_sort()](col)
    return out, col.size - out.size
