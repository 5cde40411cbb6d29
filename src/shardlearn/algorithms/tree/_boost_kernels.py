"""Numba row pass of boosting with one output (binary logistic, squared error).

One numba call per round instead of a dozen numpy temporaries: add the last round's
leaf values to the raw scores, then write each row's loss, and its gradient and
hessian times the row weight, rounded to the round's grids (see :mod:`.exact`),
and, when those are packing grids, both packed into one integer
(:mod:`._packed_hist`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._fast_exp import exp_nonpositive
from ._packed_hist import G_UNIT, H_UNIT, LIMIT, move_table

LOSS_CODES = {"squared_error": 0, "binary": 1}
#: Rows of weight 0 or 1 whose logistic log-terms share one log (see boost_rows).
LOG_BATCH = 32
#: Rows a chunk of the row pass (its scratch stays in L1: 7 arrays of 2 KB).
CHUNK = 256


@njit(nogil=True, cache=True)
def boost_rows(loss, raw, y, sw, train, pos, leaf_values, has_leaves, qg, qh, vals, packed,
               bounds, sums, Xb, move, feature, split_bin, missing_left, left, right):
    """``raw`` (n,) updated in place; ``vals`` (n, 2) written, and ``packed`` (n,)
    unless it is empty; returns whether every packed value is within the packing
    limits (rows of weight above 1 may not be: then ``packed`` must not be used).
    ``sums[k]``: ``[train loss, train weight, held-out loss, held-out weight, largest
    |residual|]`` of rows ``bounds[k]:bounds[k + 1]``, summed in row order (the last,
    squared error only, over training rows of positive weight; else 0).

    ``move``: first send each row to the child of its node's (threshold) split,
    the last level of the previous tree (the 1-D tables of :func:`._kernels.apply_splits`
    for one tree), saving a pass over the rows.

    Rows go in chunks of :data:`CHUNK`, three loops each: the move and raw update
    (random reads of ``Xb``), then the gradients, hessians and their packing, a loop
    without branches the compiler vectorises (with :func:`._fast_exp.exp_nonpositive`
    before it), then the loss sums, in row order. As one loop a row took 15-40 ns on
    the VMs measured, 4-10 ns of it in the C library's scalar ``exp``.
    """
    n = raw.shape[0]
    pack = packed.shape[0] == n
    inv_qg = 1.0 / qg
    inv_qh = 1.0 / qh
    top = 0.0           # largest |value / grid| (hessians are >= 0)
    tab = (move_table(feature, split_bin, missing_left, left, right) if move
           else np.zeros(0, np.int32))
    z_c = np.empty(CHUNK)           # the chunk's raw scores
    neg_c = np.empty(CHUNK)         # -|z|
    e_c = np.empty(CHUNK)           # exp(-|z|)
    exp_scratch = np.empty(CHUNK)
    lo_c = np.empty(CHUNK)          # loss, less the logistic log(1 + e) term
    gq_c = np.empty(CHUNK)
    hq_c = np.empty(CHUNK)
    for k in range(bounds.shape[0] - 1):
        # Block sums in registers: through ``sums`` each row would wait for the last.
        t_loss = 0.0
        t_weight = 0.0
        v_loss = 0.0
        v_weight = 0.0
        g_max = 0.0         # squared error: largest |residual| of a weighted training row
        # Logistic loss of rows of weight 0 or 1: the log(1 + e) terms of LOG_BATCH rows
        # as the log of their product (below 2**LOG_BATCH), one log per batch instead
        # of one per row, which was a third of this loop. Each factor is rounded once:
        # the loss is within about 1e-16 per row of the exact one, as with a log per
        # row (rows of other weights take that path).
        q_t = 1.0
        q_v = 1.0
        batch = 0
        a = bounds[k]
        while a < bounds[k + 1]:
            m = min(CHUNK, bounds[k + 1] - a)
            for j in range(m):
                iu = np.uint64(a + j)       # unsigned: no wraparound code (see move_table)
                z = raw[iu]
                if has_leaves:
                    node = np.uint64(pos[iu])
                    if move:
                        o = node * np.uint64(8)
                        f = tab[o]
                        if f >= 0:
                            b = np.int32(Xb[iu, np.uint64(f)])
                            go_right = (np.int32(b > tab[o + np.uint64(1)])
                                        | (np.int32(b == 0) & tab[o + np.uint64(2)]))
                            node = np.uint64(tab[o + np.uint64(3 + go_right)])
                            pos[iu] = np.int32(node)
                    z += leaf_values[node]
                    raw[iu] = z
                z_c[j] = z
            y_c = y[a:a + m]
            sw_c = sw[a:a + m]
            tr_c = train[a:a + m]
            v_c = vals[a:a + m]
            if loss != 0:
                for j in range(m):
                    neg_c[j] = -abs(z_c[j])
                exp_nonpositive(neg_c, e_c, exp_scratch, m)
            for j in range(m):
                z = z_c[j]
                yi = y_c[j]
                s = sw_c[j] if tr_c[j] else 0.0
                if loss == 0:
                    r = z - yi
                    lo = 0.5 * r * r
                    g = r
                    h = 1.0
                else:
                    # log(1 + e^z) - y z and p = expit(z) through e = exp(-|z|), which
                    # cannot overflow; selects, not branches (the sign of z is a coin flip).
                    e = e_c[j]
                    d = 1.0 / (1.0 + e)
                    p = d if z > 0.0 else e * d
                    lo = max(z, 0.0) - yi * z          # + log(1 + e), in the sums below
                    g = p - yi
                    h = max(p * (1.0 - p), 1e-16)
                lo_c[j] = lo
                # On the grid before the weight multiplies, so that a row of whole weight k
                # gives exactly what k copies of it give (the grid does not depend on weights).
                gq = np.rint(np.rint(g * inv_qg) * s)
                hq = np.rint(np.rint(h * inv_qh) * s)
                gq_c[j] = gq
                hq_c[j] = hq
                v_c[j, 0] = gq * qg
                v_c[j, 1] = hq * qh
            if pack:
                p_c = packed[a:a + m]
                for j in range(m):
                    p_c[j] = np.int64(gq_c[j]) * G_UNIT + np.int64(hq_c[j]) * H_UNIT + 1
                    top = max(top, abs(gq_c[j]), hq_c[j])
            for j in range(m):
                si = sw_c[j]
                lo = lo_c[j]
                if loss != 0:
                    e = e_c[j]
                    if si == 1.0 or si == 0.0:
                        e_s = e * si
                        e_t = e_s if tr_c[j] else 0.0
                        q_t *= 1.0 + e_t
                        q_v *= 1.0 + (e_s - e_t)
                        batch += 1
                        if batch == LOG_BATCH:
                            t_loss += np.log(q_t)
                            v_loss += np.log(q_v)
                            q_t = 1.0
                            q_v = 1.0
                            batch = 0
                    else:
                        # log(1 + e) = -log(d): log is 2.5x faster than log1p, and as
                        # accurate while e is not small (under 1e-13 for e >= 2**-7).
                        lo += np.log1p(e) if e < 0.0078125 else -np.log(1.0 / (1.0 + e))
                # A product with 1.0 or 0.0 instead of a branch (a row is held out
                # at random): the same sums, as adding 0.0 leaves a sum as it is.
                in_t = 1.0 if tr_c[j] else 0.0
                if loss == 0 and si * in_t > 0.0:
                    g_max = max(g_max, abs(z_c[j] - y_c[j]))
                wl = si * lo
                t_loss += wl * in_t
                t_weight += si * in_t
                v_loss += wl * (1.0 - in_t)
                v_weight += si * (1.0 - in_t)
            a += m
        if batch > 0:
            t_loss += np.log(q_t)
            v_loss += np.log(q_v)
        sums[k, 0] += t_loss
        sums[k, 1] += t_weight
        sums[k, 2] += v_loss
        sums[k, 3] += v_weight
        sums[k, 4] = max(sums[k, 4], g_max)
    return top <= LIMIT
