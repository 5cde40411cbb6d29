"""Worker kernels of the tree family: binning summaries, per-shard state, prologues.

Per-shard state (see :mod:`.grower`) is built once per fit. Whatever is random
(bootstrap counts, subsamples, validation rows) is drawn per *row shard* from
``default_rng([seed, ..., row_shard_index])``, so a feature-parallel column
block holding every row draws exactly what the row shards would.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp, softmax

from ._boost_kernels import LOSS_CODES, boost_rows
from ._kernels import apply_splits
from .binning import bin_matrix, feature_summaries
from .exact import snap


def summaries_kernel(shard, state, max_bins, categorical=None):
    return feature_summaries(shard.X, max_bins, categorical=categorical)


def bounds_kernel(shard, state, classes=None, class_weight=None):
    """``[max sample weight, min y, max y, all weights whole numbers]`` of the shard
    (y: 0 when not numeric; the last entry 1.0 or 0.0).

    With ``class_weight`` (per class of ``classes``) the weight is ``sw * class_weight[y]``.
    """
    sw = shard.weights()
    if class_weight is not None:
        sw = sw * class_weight[np.searchsorted(classes, shard.y)]
    y = np.asarray(shard.y)
    if y.dtype.kind in "biuf" and y.size:
        lo, hi = float(np.min(y)), float(np.max(y))
    else:
        lo = hi = 0.0
    whole = float(bool(np.all(sw == np.floor(sw))))
    return np.array([float(np.max(sw)) if sw.size else 0.0, lo, hi, whole])


def binned_kernel(shard, state):
    """The shard's binned matrix (to build feature-parallel column blocks)."""
    return state["Xb"]


def _blocks(state):
    rb = state["row_bounds"]
    return [(int(i), int(rb[k]), int(rb[k + 1])) for k, i in enumerate(state["block_ids"])]


def init_state(shard, state, edges, spec, row_bounds, block_ids, col_offset):
    """Bin the shard (or take a binned column block) and prepare targets.

    ``spec``: dict with "kind" in {"class", "mse", "gbt"}, and "classes",
    "n_trees", "validation_fraction", "seed" as needed. Returns per-row-block
    sums used by the coordinator (class weights / target sums of training rows).
    """
    if edges is None:                       # feature-parallel: X is a binned block
        Xb = np.ascontiguousarray(shard.X, dtype=np.uint8)
    else:
        Xb = bin_matrix(shard.X, edges)
    n = Xb.shape[0]
    state["Xb"] = Xb
    state["col_offset"] = int(col_offset)
    state["row_bounds"] = np.asarray(row_bounds if row_bounds is not None else [0, n], np.int64)
    state["block_ids"] = list(block_ids if block_ids is not None else [shard.index])
    sw = shard.weights().astype(np.float64)
    kind = spec["kind"]
    T = spec.get("n_trees", 1)
    state["pos"] = np.zeros((T, n), np.int32)
    if kind in ("class", "gbt_class"):
        idx = np.searchsorted(spec["classes"], shard.y).astype(np.int64)
        state["y"] = idx
    else:
        state["y"] = np.asarray(shard.y, dtype=np.float64)
    if spec.get("class_weight") is not None:    # they multiply the sample weights
        sw = sw * spec["class_weight"][state["y"]]
    # Rows of zero sample weight take no part (as if removed), not even in row counts.
    state["w"] = (sw > 0).astype(np.float64)[None, :]
    state["sw"] = sw
    # Channel values go on the fit's power-of-two grids (``spec["grids"]``, see
    # .exact) so that histogram sums are exact whatever their grouping.
    grids = spec.get("grids")
    if kind == "class":
        state["vals"] = class_channels(state["y"], sw[None, :], np.array([grids[0]]),
                                       len(spec["classes"]))
    elif kind == "mse":
        y = state["y"]
        chans = [snap(v, q) for v, q in zip((-sw * y, sw, sw * y * y), grids)]
        state["vals"] = np.ascontiguousarray(np.stack(chans, axis=1)[None])
    # Validation rows (boosting early stopping): never trained on.
    vf = spec.get("validation_fraction")
    train = np.ones(n, bool)
    if vf:
        for i, a, b in _blocks(state):
            train[a:b] = np.random.default_rng([spec["seed"], 7919, i]).random(b - a) >= vf
    state["train"] = train
    out = []
    for _, a, b in _blocks(state):
        m = train[a:b]
        if kind in ("class", "gbt_class"):
            Kc = len(spec["classes"])
            sums = np.bincount(state["y"][a:b][m], weights=sw[a:b][m], minlength=Kc)
        else:
            sums = np.array([sw[a:b][m].sum(), (sw[a:b][m] * state["y"][a:b][m]).sum()])
        if kind in ("gbt_class", "gbt_reg"):        # and the held-out rows' weight
            sums = np.append(sums, sw[a:b][~m].sum())
        out.append(sums)
    return out


def class_channels(y, weights, q, n_classes):
    """One-hot class channels ``(T, n, n_classes)``: row i's weight ``weights[t, i]``
    in the channel of its class, on tree t's grid ``q[t]`` (see .exact)."""
    T, n = weights.shape
    vals = np.zeros((T, n, n_classes))
    vals[:, np.arange(n), y] = snap(weights, np.asarray(q, np.float64)[:, None])
    return vals


# -- random forests ----------------------------------------------------------------------
def _bootstrap_counts(state, tree_ids, seed):
    """Each tree's per-row Poisson(1) counts ``(T, n)``, drawn per row block."""
    w = np.empty((len(tree_ids), state["Xb"].shape[0]))
    for t, tid in enumerate(tree_ids):
        for i, a, b in _blocks(state):
            w[t, a:b] = np.random.default_rng([seed, int(tid), i]).poisson(1.0, b - a)
    return w


def rf_prologue(shard, state, tree_ids, seed, bootstrap, tree_class_weight=None):
    """Draw each tree's per-row Poisson(1) bootstrap counts (no data copies).

    ``tree_class_weight=(cw, q)``: each tree's class weights ``cw`` (T, K)
    ("balanced_subsample") go into its own class channels, on its grid ``q`` (T,).
    """
    n = state["Xb"].shape[0]
    T = len(tree_ids)
    if state["pos"].shape[0] != T:
        state["pos"] = np.zeros((T, n), np.int32)
    if not bootstrap:
        return None
    state["w"] = _bootstrap_counts(state, tree_ids, seed) * (state["sw"] > 0)
    if tree_class_weight is not None:
        cw, q = tree_class_weight
        y = state["y"]
        state["vals"] = class_channels(y, state["sw"][None, :] * cw[:, y], q, cw.shape[1])
    return None


def rf_class_counts(shard, state, tree_ids, seed, n_classes):
    """Each tree's bootstrap count of every class ``(T, n_classes)`` in this shard (rows
    counted as often as drawn, whatever their weight), for "balanced_subsample".

    A feature-parallel column block holds every row: only the first one answers.
    """
    if state["col_offset"] > 0:
        return None
    w = _bootstrap_counts(state, tree_ids, seed)
    return np.stack([np.bincount(state["y"], weights=wt, minlength=n_classes) for wt in w])


def rf_oob_prologue(shard, state, leaf_values, drawn):
    """Accumulate out-of-bag predictions of the trees just grown; return the totals so far.

    ``leaf_values`` (T, max_nodes, V); ``drawn`` (T,): the trees kept in the forest
    (a tree whose bootstrap drew no row is not). Returns (oob_sum (n, V), oob_count (n,)).
    """
    pos, w = state["pos"], state["w"]
    n = pos.shape[1]
    V = leaf_values.shape[2]
    if "oob_sum" not in state:
        state["oob_sum"] = np.zeros((n, V))
        state["oob_count"] = np.zeros(n)
    acc, cnt = state["oob_sum"], state["oob_count"]
    # Runs only with the bootstrap: ``w`` holds each tree's counts, a row a tree (one
    # row for a pass of one tree: its out-of-bag rows count too).
    assert w.shape[0] == pos.shape[0], "out-of-bag predictions need bootstrap counts"
    for t in range(pos.shape[0]):
        if not drawn[t]:
            continue
        oob = w[t] == 0
        acc[oob] += leaf_values[t, pos[t, oob]]
        cnt[oob] += 1
    return acc, cnt


# -- gradient boosting --------------------------------------------------------------------
def _loss_grad(loss, raw, y, n_classes):
    """Per-row loss, gradient (n, K) and hessian (n, K) at raw scores (n, K)."""
    if loss == "squared_error":
        r = raw[:, 0] - y
        return 0.5 * r * r, r[:, None], np.ones_like(r)[:, None]
    if loss == "binary":
        z = raw[:, 0]
        p = expit(z)
        lo = np.logaddexp(0.0, z) - y * z
        return lo, (p - y)[:, None], np.maximum(p * (1.0 - p), 1e-16)[:, None]
    P = softmax(raw, axis=1)
    Y = np.zeros_like(P)
    Y[np.arange(raw.shape[0]), y] = 1.0
    lo = logsumexp(raw, axis=1) - raw[np.arange(raw.shape[0]), y]
    return lo, P - Y, np.maximum(P * (1.0 - P), 1e-16)


_NO_MOVE = np.zeros((1, 1), np.int32)


def gbt_prologue(shard, state, leaf_values, spec, round_idx, compute_grad, grids=(1.0, 1.0),
                 packed=False, moves=None):
    """Add the previous round's leaves to the raw scores; return losses; new gradients.

    ``grids``: the round's power-of-two steps for gradients and hessians (.exact).
    ``packed``: they are :func:`._packed_hist.pack_grid` steps, so the histogram
    loops may pack both channels and the count into one integer. ``moves``: the
    last splits of the previous round (threshold splits only), applied here in the
    same pass (see :func:`.grower.data_level_kernel`).

    Returns per-row-block ``[train_loss_sum, train_weight, val_loss_sum, val_weight,
    largest |residual|]`` (the last: squared error, training rows of positive weight;
    else 0).
    """
    y, sw, train = state["y"], state["sw"], state["train"]
    n = y.shape[0]
    Kt = spec["n_trees"]
    if "raw" not in state:
        state["raw"] = np.tile(np.asarray(spec["baseline"], dtype=np.float64), (n, 1))
    raw = state["raw"]
    fast = spec["loss"] in LOSS_CODES and compute_grad
    blocks = _blocks(state)
    if moves is not None and not (fast and leaf_values is not None):
        apply_splits(state["Xb"], state["pos"], *moves, 0)
        moves = None
    if fast:
        # One numba pass: raw update, loss sums, gradients on their grids.
        # Last round's buffers are free again (fresh ones cost page faults each round).
        vals = state.get("vals")
        if vals is None or vals.shape != (1, n, 2):
            vals = np.empty((1, n, 2))
        pk = state.get("packed_buf")
        if pk is None or pk.shape[0] != (n if packed else 0):
            pk = state["packed_buf"] = np.empty(n if packed else 0, np.int64)
        has = leaf_values is not None
        lv = np.ascontiguousarray(leaf_values[0] if has else np.zeros(1))
        bounds = np.array([a for _, a, _ in blocks] + [n], np.int64)
        sums = np.zeros((len(blocks), 5))
        mv = moves if moves is not None else (_NO_MOVE,) * 7
        if state.get("y_float") is None:        # class indices as floats, once a fit
            state["y_float"] = np.asarray(y, np.float64)
        fits = boost_rows(LOSS_CODES[spec["loss"]], raw[:, 0], state["y_float"], sw,
                          train, state["pos"][0], lv, has, grids[0], grids[1], vals[0], pk,
                          bounds, sums, state["Xb"], moves is not None, mv[0][0], mv[1][0],
                          mv[2][0], mv[3][0], mv[4][0])
        out = list(sums)
    else:
        if leaf_values is not None:
            pos = state["pos"]
            for t in range(Kt):
                raw[:, t] += leaf_values[t, pos[t]]
        lo, g, h = _loss_grad(spec["loss"], raw, y, spec.get("n_classes", 1))
        out = []
        for _, a, b in blocks:
            m = train[a:b]
            wl = sw[a:b] * lo[a:b]
            live = m & (sw[a:b] > 0)
            g_max = (float(np.abs(g[a:b][live]).max())
                     if spec["loss"] == "squared_error" and live.any() else 0.0)
            out.append(np.array([wl[m].sum(), sw[a:b][m].sum(), wl[~m].sum(),
                                 sw[a:b][~m].sum(), g_max]))
    if compute_grad:
        if not fast:
            vals = np.empty((Kt, n, 2))
            swt = sw * train
            vals[:, :, 0] = snap(g * swt[:, None], grids[0]).T
            vals[:, :, 1] = snap(h * swt[:, None], grids[1]).T
        state["vals"] = vals
        sub = spec.get("subsample", 1.0)
        if sub < 1.0 or "w_rows" not in state:   # else the same rows as last round
            w = (train & (sw > 0)).astype(np.float64)
            state["w_rows"] = True
            if sub < 1.0:
                for i, a, b in blocks:
                    rng = np.random.default_rng([spec["seed"], int(round_idx), i])
                    w[a:b] *= rng.random(b - a) < sub
            state["w"] = w[None, :]
            state["n_dead"] = int(np.count_nonzero(w == 0.0))
        # Packed values need one tree a round and row weights of 0 or 1.
        state["pack"] = None
        if packed and fast and fits:
            if state["n_dead"]:
                pk[state["w"][0] == 0.0] = 0
            state["pack"] = (grids[0], grids[1], pk, state["n_dead"] * 8 > n)
    return out


gbt_prologue.applies_moves = True   # takes moves=: see grower.data_level_kernel
