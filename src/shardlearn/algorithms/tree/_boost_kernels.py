"""Numba row pass of boosting with one output (binary logistic, squared error).

One pass per round instead of a dozen numpy temporaries: add the last round's
leaf values to the raw scores, then write each row's loss, and its gradient and
hessian times the row weight, rounded to the round's grids (see :mod:`.exact`),
and, when those are packing grids, both packed into one integer
(:mod:`._packed_hist`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._packed_hist import G_UNIT, H_UNIT, LIMIT

LOSS_CODES = {"squared_error": 0, "binary": 1}


@njit(nogil=True, cache=True)
def boost_rows(loss, raw, y, sw, train, pos, leaf_values, has_leaves, qg, qh, vals, packed,
               bounds, sums, Xb, move, feature, split_bin, missing_left, left, right):
    """``raw`` (n,) updated in place; ``vals`` (n, 2) written, and ``packed`` (n,)
    unless it is empty; returns whether every packed value is within the packing
    limits (rows of weight above 1 may not be: then ``packed`` must not be used). ``sums[k]``: ``[train loss, train weight, held-out loss,
    held-out weight]`` of rows ``bounds[k]:bounds[k + 1]``, summed in row order.

    ``move``: first send each row to the child of its node's (threshold) split,
    the last level of the previous tree (the 1-D tables of :func:`._kernels.apply_splits`
    for one tree), saving a pass over the rows.
    """
    n = raw.shape[0]
    pack = packed.shape[0] == n
    inv_qg = 1.0 / qg
    inv_qh = 1.0 / qh
    k = 0
    top = 0.0           # largest |value / grid| (hessians are >= 0)
    for i in range(n):
        while i >= bounds[k + 1]:
            k += 1
        z = raw[i]
        if has_leaves:
            node = pos[i]
            if move:
                f = feature[node]
                if f >= 0:
                    b = Xb[i, f]
                    go_left = (missing_left[node] != 0) if b == 0 else (b <= split_bin[node])
                    node = left[node] if go_left else right[node]
                    pos[i] = node
            z += leaf_values[node]
            raw[i] = z
        yi = y[i]
        if loss == 0:
            r = z - yi
            lo = 0.5 * r * r
            g = r
            h = 1.0
        else:
            # log(1 + e^z) - y z and p = expit(z) through e = exp(-|z|), which cannot
            # overflow; selects instead of branches (the sign of z is unpredictable).
            e = np.exp(-abs(z))
            d = 1.0 / (1.0 + e)
            p = d if z > 0.0 else e * d
            lo = max(z, 0.0) + np.log1p(e) - yi * z
            g = p - yi
            h = max(p * (1.0 - p), 1e-16)
        si = sw[i]
        if train[i]:
            sums[k, 0] += si * lo
            sums[k, 1] += si
            s = si
        else:
            sums[k, 2] += si * lo
            sums[k, 3] += si
            s = 0.0
        # On the grid before the weight multiplies, so that a row of whole weight k
        # gives exactly what k copies of it give (the grid does not depend on weights).
        gq = np.rint(np.rint(g * inv_qg) * s)
        hq = np.rint(np.rint(h * inv_qh) * s)
        vals[i, 0] = gq * qg
        vals[i, 1] = hq * qh
        if pack:
            top = max(top, abs(gq), hq)
            packed[i] = np.int64(gq) * G_UNIT + np.int64(hq) * H_UNIT + 1
    return top <= LIMIT
