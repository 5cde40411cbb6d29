"""Per-row values on a power-of-two grid, so that histogram sums are exact.

Histograms are sums of per-row channels (gradients, class weights, targets).
In floating point such sums depend on the order of the additions, which is why
they used to be folded shard by shard on the coordinator. If every value is an
integer multiple of a power of two ``q`` and every partial sum stays below
``2**53 * q``, each addition is exact: any grouping gives the same bits. Then a
worker may sum the histograms of all its shards before sending one (fewer bytes,
less work on the coordinator), the sibling ``parent - child`` is exact, and the
model is still bit-identical on any engine and worker count.

``q`` comes from a bound on the sum's magnitude that the coordinator knows before
the pass (row count times the largest per-row value), so it does not depend on
how the rows are sharded. Rounding each row to the grid changes it by at most
``q / 2``: for ``n`` rows that is about ``n * 1.1e-16`` of the largest value,
below what float64 summation itself loses.

Boosting with one tree a round (binary logistic, squared error) uses a coarser
grid: a power of two between 2**-15 and 2**-14 of the bound on the unweighted
gradient and hessian (:func:`._packed_hist.pack_grid`), rounded to before the
row weight multiplies, where that grid is fine enough (:func:`.fit._packing_fits`):
whole-number row weights only (a fractional weight would be rounded to the coarse
grid again), and for squared error a bound (the last round's largest residual
plus its largest leaf) within 16 times the residuals' root mean square.
Then a row's gradient, hessian and count pack into one int64 and a histogram
costs one integer add per row and feature instead of three float adds
(:mod:`._packed_hist`). Each value moves by at most half a step, under 2**-15
of the bound, like a 16-bit fixed-point gradient (XGBoost keeps float32 gradients, LightGBM
can quantize them to a few bits); sums are still exact, and a row of whole
weight ``k`` still adds exactly what ``k`` copies of it add.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def grid(max_abs_value: float, n_terms: float) -> float:
    """Power-of-two step ``q`` for sums of ``n_terms`` values of magnitude <= ``max_abs_value``."""
    bound = float(max_abs_value) * float(max(n_terms, 1.0))
    if not math.isfinite(bound) or bound <= 0.0:
        return 1.0
    # 2**53 * q > bound: every multiple of q up to the bound is a float64.
    return math.ldexp(1.0, math.frexp(bound)[1] - 52)


def snap(values: np.ndarray, q: float) -> np.ndarray:
    """``values`` rounded to the nearest multiple of ``q`` (exact scaling: q is 2**k)."""
    return np.round(np.asarray(values, dtype=np.float64) / q) * q


@njit(nogil=True, cache=True)
def _to_float32(a, out):
    inexact = False
    for i in range(a.shape[0]):
        f = np.float32(a[i])
        out[i] = f
        inexact |= np.float64(f) != a[i]
    return not inexact


def narrow_if_exact(hist: np.ndarray, pool=None, whole_bound: float | None = None) -> np.ndarray:
    """``hist`` in a narrower type that gives back every value exactly, else itself.

    ``whole_bound``: the caller knows that every value is a whole number from +0
    to this bound (a float32 histogram of class counts: see ``TreeFit.hist_dtype``;
    the bound its largest value). Then it travels as
    uint8 (bound below 256) or uint16 (below 65536): a forest's deep levels were
    15-78 MB a worker in float32. Known, not checked: a pass checking that each
    value is whole cost 2.5-3.5 ns a value, the cast 0.35.

    Otherwise a float64 histogram of nodes with a few thousand rows holds integers
    times the grid below 2**24 times it: float32 holds them, and widening gives
    back the same float64 bits. Checked per array, not assumed: one value too large
    keeps the whole array in float64. ``pool``: a :class:`._scratch.ScratchPool` to
    take the narrow array from.
    """
    if not hist.flags.c_contiguous:
        return hist
    if whole_bound is not None and whole_bound <= 65535.0:
        dtype = np.uint8 if whole_bound <= 255.0 else np.uint16
        out = np.empty(hist.shape, dtype) if pool is None else pool.empty(hist.shape, dtype)
        out[...] = hist
        return out
    if hist.dtype != np.float64:
        return hist
    out = np.empty(hist.shape, np.float32) if pool is None else pool.empty(hist.shape, np.float32)
    return out if _to_float32(hist.reshape(-1), out.reshape(-1)) else hist
