"""Row-wise loss terms compiled with numba: one pass over a chunk's scores.

Replaces a dozen numpy passes (logaddexp, expit, products, sums) with one loop
holding one exp and one log1p per row. Sequential loops without fastmath: the
same inputs give the same bits on every worker.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def logistic_binary_terms(z, y, s, r, curv, offset):
    """For scores ``z``: return sum s*logloss; fill r = s*(p - y) and curv[offset+i] = s*p*(1-p)."""
    loss = 0.0
    for i in range(z.shape[0]):
        zi = z[i]
        e = np.exp(-abs(zi))
        if zi >= 0.0:
            log1pexp = zi + np.log1p(e)
            p = 1.0 / (1.0 + e)
        else:
            log1pexp = np.log1p(e)
            p = e / (1.0 + e)
        si = s[i]
        yi = y[i]
        loss += si * (log1pexp - yi * zi)
        r[i] = si * (p - yi)
        curv[offset + i] = si * p * (1.0 - p)
    return loss
