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
#: Rows a chunk of the row pass (its scratch stays in L1: 11 arrays of 2 KB).
CHUNK = 256
#: Sums and products of a chunk run in this many lanes (row j in lane j % LANES):
#: a fixed grouping, the same wherever a block is summed, whose adds do not wait on
#: each other. A lane's product of a chunk's factors ``1 + e`` (each at most 2) has
#: at most CHUNK / LANES = 32 of them: below 2**32, far from overflow.
LANES = 8
#: Below this ``e``, ``log(1 + e)`` goes through log1p (see boost_rows).
_SMALL_E = 0.0078125


@njit(nogil=True, cache=True)
def lane_sum(a, m):
    """``a[:m]`` summed in :data:`LANES` lanes, the lanes then added pairwise."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    n8 = m - m % LANES
    for j in range(0, n8, LANES):
        s0 += a[j]
        s1 += a[j + 1]
        s2 += a[j + 2]
        s3 += a[j + 3]
        s4 += a[j + 4]
        s5 += a[j + 5]
        s6 += a[j + 6]
        s7 += a[j + 7]
    r = m - n8
    s0 += a[n8] if r > 0 else 0.0
    s1 += a[n8 + 1] if r > 1 else 0.0
    s2 += a[n8 + 2] if r > 2 else 0.0
    s3 += a[n8 + 3] if r > 3 else 0.0
    s4 += a[n8 + 4] if r > 4 else 0.0
    s5 += a[n8 + 5] if r > 5 else 0.0
    s6 += a[n8 + 6] if r > 6 else 0.0
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(nogil=True, cache=True)
def lane_log_product(f, m):
    """``sum(log(f[:m]))`` as the logs of :data:`LANES` lane products (``m`` at most
    :data:`CHUNK`; every factor in [1, 2])."""
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 1.0
    n8 = m - m % LANES
    for j in range(0, n8, LANES):
        p0 *= f[j]
        p1 *= f[j + 1]
        p2 *= f[j + 2]
        p3 *= f[j + 3]
        p4 *= f[j + 4]
        p5 *= f[j + 5]
        p6 *= f[j + 6]
        p7 *= f[j + 7]
    r = m - n8
    p0 *= f[n8] if r > 0 else 1.0
    p1 *= f[n8 + 1] if r > 1 else 1.0
    p2 *= f[n8 + 2] if r > 2 else 1.0
    p3 *= f[n8 + 3] if r > 3 else 1.0
    p4 *= f[n8 + 4] if r > 4 else 1.0
    p5 *= f[n8 + 5] if r > 5 else 1.0
    p6 *= f[n8 + 6] if r > 6 else 1.0
    return (((np.log(p0) + np.log(p1)) + (np.log(p2) + np.log(p3)))
            + ((np.log(p4) + np.log(p5)) + (np.log(p6) + np.log(p7))))


# error_model="numpy": a float division by zero is inf, not an exception. With
# Python's model every division carries a check, and no loop with one is vectorised
# (the gradient loop took 3.1 ns a row, 1.2 ns without the check). No division here
# can be by zero (1 + e >= 1, the grids are > 0): the values are the same.
@njit(nogil=True, cache=True, error_model="numpy")
def boost_rows(loss, raw, y, sw, train, pos, leaf_values, has_leaves, qg, qh, vals, packed,
               bounds, sums, Xb, move, feature, split_bin, missing_left, left, right):
    """``raw`` (n,) updated in place; ``vals`` (n, 2) written, and ``packed`` (n,)
    unless it is empty; returns whether every packed value is within the packing
    limits (rows of weight above 1 may not be: then ``packed`` must not be used).
    ``sums[k]``: ``[train loss, train weight, held-out loss, held-out weight, largest
    |residual|]`` of rows ``bounds[k]:bounds[k + 1]`` (the last, squared error only,
    over training rows of positive weight; else 0), each chunk's sums in
    :data:`LANES` lanes: a grouping fixed by the block, so the same on any engine.

    ``move``: first send each row to the child of its node's (threshold) split,
    the last level of the previous tree (the 1-D tables of :func:`._kernels.apply_splits`
    for one tree), saving a pass over the rows.

    Rows go in chunks of :data:`CHUNK`, a loop for each step: the move and raw update
    (random reads of ``Xb``); ``exp(-|z|)`` (:func:`._fast_exp.exp_nonpositive`);
    gradients and hessians on their grids; their float values (strided stores, which
    keep the loop before them from being vectorised when they are in it); their
    packing; the loss terms. All but the first are vectorised. The logistic
    ``log(1 + e)`` of rows of weight 0 or 1 goes in as factors of
    :func:`lane_log_product`, 1 log for 32 rows (a log per row was a third of the
    pass); rows of other weights take a log each. As one loop a row took 15-40 ns on
    the VMs measured; as these, about 4.
    """
    n = raw.shape[0]
    pack = packed.shape[0] == n
    inv_qg = 1.0 / qg
    inv_qh = 1.0 / qh
    n_fit = 0           # packed rows within the limits (hessians are >= 0)
    tab = (move_table(feature, split_bin, missing_left, left, right) if move
           else np.zeros(0, np.int32))
    z_c = np.empty(CHUNK)           # the chunk's raw scores
    neg_c = np.empty(CHUNK)         # -|z|, then the training rows' log factors
    e_c = np.empty(CHUNK)           # exp(-|z|)
    exp_scratch = np.empty(CHUNK)   # ... then the held-out rows' log factors
    lo_c = np.empty(CHUNK)          # loss, less the logistic log(1 + e) term
    gq_c = np.empty(CHUNK)
    hq_c = np.empty(CHUNK)
    st_c = np.empty(CHUNK)          # training weight (0 for a held-out row)
    sv_c = np.empty(CHUNK)          # held-out weight
    lt_c = np.empty(CHUNK)          # weighted losses, training and held out
    lv_c = np.empty(CHUNK)
    for k in range(bounds.shape[0] - 1):
        t_loss = 0.0
        t_weight = 0.0
        v_loss = 0.0
        v_weight = 0.0
        g_max = 0.0         # squared error: largest |residual| of a weighted training row
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
            for j in range(m):
                s = sw_c[j] if tr_c[j] else 0.0
                st_c[j] = s
                sv_c[j] = sw_c[j] - s        # exact: s is sw_c[j] or 0
            if loss == 0:
                for j in range(m):
                    r = z_c[j] - y_c[j]
                    lo_c[j] = 0.5 * r * r
                    gq_c[j] = np.rint(np.rint(r * inv_qg) * st_c[j])
                    hq_c[j] = np.rint(np.rint(inv_qh) * st_c[j])
            else:
                for j in range(m):
                    neg_c[j] = -abs(z_c[j])
                exp_nonpositive(neg_c, e_c, exp_scratch, m)
                for j in range(m):
                    # log(1 + e^z) - y z and p = expit(z) through e = exp(-|z|), which
                    # cannot overflow; selects, not branches (the sign of z is a coin flip).
                    z = z_c[j]
                    yi = y_c[j]
                    e = e_c[j]
                    d = 1.0 / (1.0 + e)
                    p = d if z > 0.0 else e * d
                    lo_c[j] = max(z, 0.0) - yi * z          # + log(1 + e), below
                    h = max(p * (1.0 - p), 1e-16)
                    # On the grid before the weight multiplies, so that a row of whole
                    # weight k gives exactly what k copies of it give (the grid does not
                    # depend on weights).
                    gq_c[j] = np.rint(np.rint((p - yi) * inv_qg) * st_c[j])
                    hq_c[j] = np.rint(np.rint(h * inv_qh) * st_c[j])
            for j in range(m):
                v_c[j, 0] = gq_c[j] * qg
                v_c[j, 1] = hq_c[j] * qh
            if pack:
                p_c = packed[a:a + m]
                for j in range(m):
                    gq = gq_c[j]
                    hq = hq_c[j]
                    p_c[j] = np.int64(gq) * G_UNIT + np.int64(hq) * H_UNIT + 1
                    n_fit += np.int64((abs(gq) <= LIMIT) & (hq <= LIMIT))
            for j in range(m):
                lt_c[j] = st_c[j] * lo_c[j]
                lv_c[j] = sv_c[j] * lo_c[j]
            if loss == 0:
                for j in range(m):
                    if st_c[j] > 0.0:
                        g_max = max(g_max, abs(z_c[j] - y_c[j]))
            else:
                # Rows of weight 0 or 1: 1 + e times their weight as a factor; others
                # a factor of 1 and their own log below.
                ft_c = neg_c
                fv_c = exp_scratch
                n_other = 0
                for j in range(m):
                    si = sw_c[j]
                    unit = (si == 1.0) | (si == 0.0)
                    e = e_c[j] if unit else 0.0
                    ft_c[j] = 1.0 + e * st_c[j]
                    fv_c[j] = 1.0 + e * sv_c[j]
                    n_other += np.int64(not unit)
                if n_other:
                    for j in range(m):
                        si = sw_c[j]
                        if si != 1.0 and si != 0.0:
                            # log(1 + e) = -log(d): log is 2.5x faster than log1p, and
                            # as accurate while e is not small (under 1e-13 for
                            # e >= 2**-7).
                            e = e_c[j]
                            term = np.log1p(e) if e < _SMALL_E else -np.log(1.0 / (1.0 + e))
                            lt_c[j] += st_c[j] * term
                            lv_c[j] += sv_c[j] * term
            w_t = lane_sum(st_c, m)
            w_v = lane_sum(sv_c, m)
            # A part without weight adds nothing (its sums are +-0): skipped.
            if w_t != 0.0:
                t_loss += lane_sum(lt_c, m) + (lane_log_product(neg_c, m) if loss else 0.0)
                t_weight += w_t
            if w_v != 0.0:
                v_loss += (lane_sum(lv_c, m)
                           + (lane_log_product(exp_scratch, m) if loss else 0.0))
                v_weight += w_v
            a += m
        sums[k, 0] += t_loss
        sums[k, 1] += t_weight
        sums[k, 2] += v_loss
        sums[k, 3] += v_weight
        sums[k, 4] = max(sums[k, 4], g_max)
    return n_fit == (n if pack else 0)
