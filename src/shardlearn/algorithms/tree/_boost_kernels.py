"""Numba row pass of boosting with one output (binary logistic, squared error).

One pass per round instead of a dozen numpy temporaries: add the last round's
leaf values to the raw scores, then write each row's loss, and its gradient and
hessian times the row weight, rounded to the round's grids (see :mod:`.exact`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

LOSS_CODES = {"squared_error": 0, "binary": 1}


@njit(nogil=True, cache=True)
def boost_rows(loss, raw, y, swt, pos, leaf_values, has_leaves, qg, qh, vals, lo):
    """``raw`` (n,) updated in place; ``vals`` (n, 2) and ``lo`` (n,) written."""
    n = raw.shape[0]
    for i in range(n):
        z = raw[i]
        if has_leaves:
            z += leaf_values[pos[i]]
            raw[i] = z
        yi = y[i]
        if loss == 0:
            r = z - yi
            lo[i] = 0.5 * r * r
            g = r
            h = 1.0
        else:
            # log(1 + e^z) - y z, and p = expit(z), without overflow either way.
            if z > 0.0:
                e = np.exp(-z)
                lo[i] = z + np.log1p(e) - yi * z
                p = 1.0 / (1.0 + e)
            else:
                e = np.exp(z)
                lo[i] = np.log1p(e) - yi * z
                p = e / (1.0 + e)
            g = p - yi
            h = max(p * (1.0 - p), 1e-16)
        s = swt[i]
        vals[i, 0] = np.rint(g * s / qg) * qg
        vals[i, 1] = np.rint(h * s / qh) * qh
