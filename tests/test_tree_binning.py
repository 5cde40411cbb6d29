"""Binning, histogram kernels and split finding of the histogram trees (no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.algorithms.tree import _kernels as K
from shardlearn.algorithms.tree.binning import bin_matrix, feature_summaries, merge_summaries
from shardlearn.algorithms.tree.exact import grid, snap
from shardlearn.algorithms.tree.splitting import SplitParams, find_best_splits, with_siblings


def _edges(X, n_shards=3, max_bins=255):
    parts = np.array_split(X, n_shards)
    return merge_summaries([feature_summaries(p, max_bins) for p in parts], max_bins)


def test_low_cardinality_features_get_exact_bins_and_midpoint_thresholds():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 10, 1000), rng.choice([-2.5, 0.0, 7.0], 1000)]).astype(float)
    X[::7, 0] = np.nan
    e = _edges(X)
    assert e.exact.all()
    np.testing.assert_array_equal(e.thresholds[0], np.arange(9) + 0.5)
    np.testing.assert_array_equal(e.thresholds[1], [-1.25, 3.5])
    assert e.has_missing.tolist() == [True, False]
    Xb = bin_matrix(X, e)
    assert Xb.dtype == np.uint8 and Xb.flags.c_contiguous
    ok = ~np.isnan(X[:, 0])
    np.testing.assert_array_equal(Xb[ok, 0], X[ok, 0].astype(int) + 1)
    assert (Xb[~ok, 0] == 0).all()                      # NaN: bin 0
    np.testing.assert_array_equal(Xb[:, 1], np.searchsorted([-2.5, 0.0, 7.0], X[:, 1]) + 1)
    # A split "bin <= 3" with the node's next non-empty bin 6 sits between values 2 and 5.
    assert e.split_threshold(0, 3, 6) == 3.5
    assert e.split_threshold(0, 10, -1) == np.inf


def test_many_split_thresholds_at_once_equal_one_at_a_time():
    from shardlearn.algorithms.tree.binning import feature_summaries, merge_summaries

    rng = np.random.default_rng(8)
    X = np.column_stack([rng.integers(0, 5, 3000).astype(float),      # exact, 5 values
                         rng.normal(size=3000),                        # quantile bins
                         rng.choice([0.5, 2.0], 3000)])                # exact, 2 values
    edges = merge_summaries([feature_summaries(X, 32)], 32)
    assert edges.exact.tolist() == [True, False, True]
    f = rng.integers(0, 3, 500)
    n = edges.n_bins[f] - 1
    lo = rng.integers(1, n + 3)                     # some past the last threshold
    hi = np.where(rng.random(500) < 0.2, -1, rng.integers(1, n + 3))
    want = [edges.split_threshold(int(a), int(b), int(c)) for a, b, c in zip(f, lo, hi)]
    got = edges.split_thresholds(f, lo, hi)
    np.testing.assert_array_equal(got, want)
    assert np.isinf(got).any() and np.isfinite(got).sum() > 300


def test_high_cardinality_features_get_balanced_quantile_bins():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=20000), rng.exponential(size=20000) ** 3])
    for max_bins in (255, 32):
        e = _edges(X, n_shards=4, max_bins=max_bins)
        assert not e.exact.any()
        Xb = bin_matrix(X, e)
        for j in range(2):
            assert max_bins * 0.9 <= e.n_bins[j] <= max_bins
            counts = np.bincount(Xb[:, j], minlength=e.n_bins[j] + 1)[1:]
            assert counts.max() <= 2.0 * len(X) / max_bins
            # Thresholds are consistent with the bins: bin b holds (t[b-2], t[b-1]].
            t = e.thresholds[j]
            b = Xb[:, j].astype(int)
            assert (X[b <= len(t), j] <= t[b[b <= len(t)] - 1]).all()
            assert (X[b >= 2, j] > t[b[b >= 2] - 2]).all()


def test_merged_sketches_give_accurate_quantiles_whatever_the_sharding():
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(size=30000), rng.integers(0, 50, 30000)]).astype(float)
    exact_cuts = None
    for n_shards in (1, 3, 7):
        e = _edges(X, n_shards=n_shards, max_bins=64)
        # Exact feature: the same edges for any sharding.
        if exact_cuts is None:
            exact_cuts = e.thresholds[1]
        np.testing.assert_array_equal(e.thresholds[1], exact_cuts)
        # Quantile feature: each threshold's rank is within 0.5% of its target rank.
        t = e.thresholds[0]
        ranks = np.searchsorted(np.sort(X[:, 0]), t) / len(X)
        assert np.abs(ranks - np.arange(1, len(t) + 1) / 64).max() < 0.005


def _reference_hist(Xb, vals, w, node_of_row, n_nodes, B):
    F, Cv = Xb.shape[1], vals.shape[1]
    H = np.zeros((n_nodes, F, B, Cv + 1))
    for i in range(Xb.shape[0]):
        if w[i] == 0 or node_of_row[i] < 0:
            continue
        for f in range(F):
            H[node_of_row[i], f, Xb[i, f], :Cv] += vals[i] * w[i]
            H[node_of_row[i], f, Xb[i, f], Cv] += 1
    return H


@pytest.mark.parametrize("case", ["root", "one tree, several nodes", "several trees",
                                  "node feature subsets", "four channels", "float32 counts"])
@pytest.mark.parametrize("move", [False, True])
def test_every_histogram_path_matches_the_reference(case, move):
    # The kernels take different loops (a root without node lookups, one node at a time
    # for a single tree, all nodes in one pass for several trees or feature subsets,
    # rows moved to their children in the same pass); each must give the plain
    # per-row sums, in float64 or, for whole numbers, float32.
    rng = np.random.default_rng(11)
    n, F, B = 700, 5, 13
    T = 3 if case == "several trees" else 1
    Cv = 3 if case == "four channels" else 2
    Xb = rng.integers(0, B, size=(n, F)).astype(np.uint8)
    whole = case == "float32 counts"
    vals = rng.integers(0, 3, size=(T, n, Cv)).astype(float) if whole else rng.normal(size=(T, n, Cv))
    w = rng.poisson(1.0, size=(T, n)).astype(float)
    n_nodes = 7
    # Before this level rows sit in nodes 0..2; nodes 0 and 2 split (children 3,4 and
    # 5,6), node 1 is a leaf; the table moves them when ``move``.
    pos = rng.integers(0, 3, size=(T, n)).astype(np.int32)
    feature = np.full((T, n_nodes), -1, np.int32)
    feature[:, 0], feature[:, 2] = 1, 3
    split_bin = np.zeros((T, n_nodes), np.int32)
    split_bin[:, 0], split_bin[:, 2] = 5, 8
    missing_left = np.zeros((T, n_nodes), np.int32)
    missing_left[:, 2] = 1
    left = np.full((T, n_nodes), -1, np.int32)
    right = np.full((T, n_nodes), -1, np.int32)
    left[:, 0], right[:, 0], left[:, 2], right[:, 2] = 3, 4, 5, 6
    after = pos.copy()
    for t in range(T):
        for i in range(n):
            v = pos[t, i]
            if feature[t, v] >= 0:
                b = Xb[i, feature[t, v]]
                go_left = missing_left[t, v] == 1 if b == 0 else b <= split_bin[t, v]
                after[t, i] = left[t, v] if go_left else right[t, v]
    if case == "root":
        pos[:] = 0
        after[:] = 0
        move = False
    counted = [0] if case == "root" else [3, 6, 1]          # node -> slot by position
    slots = np.full((T, n_nodes), -1, np.int32)
    for t in range(T):
        for k, v in enumerate(counted):
            slots[t, v] = t * len(counted) + k
    S = T * len(counted)
    feats = None
    if case == "node feature subsets":
        feats = np.array([[0, 2, 4], [1, 3, -1], [4, -1, -1]], np.int32)
    width = F if feats is None else feats.shape[1]
    dtype = np.float32 if whole else np.float64
    hist = np.zeros((S, width, B, Cv + 1), dtype=dtype)
    tot = np.zeros((S, Cv + 1))
    p = pos.copy() if move else after.copy()
    if move and feats is None:
        K.split_and_build(Xb, vals, w, p, feature, split_bin, missing_left, left, right, slots,
                          hist, tot)
    elif move:
        K.split_and_build(Xb, vals, w, p, feature, split_bin, missing_left, left, right, slots,
                          hist, tot, feats)
    elif feats is not None:
        K.build_histograms_subset(Xb, vals, w, p, slots, feats, 0, hist, tot)
    else:
        K.build_histograms(Xb, vals, w, p, slots, hist, tot, case == "root")
    np.testing.assert_array_equal(p, after)
    for t in range(T):
        node_slot = slots[t][after[t]]
        ref = _reference_hist(Xb, vals[t], w[t], node_slot, S, B)
        rows = slice(t * len(counted), (t + 1) * len(counted))
        if feats is not None:
            for s in range(S):
                for j, f in enumerate(feats[s]):
                    expect = ref[s, f] if f >= 0 else 0.0
                    np.testing.assert_allclose(hist[s, j], expect, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_allclose(hist[rows], ref[rows], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(tot[rows], ref[rows, 0].sum(axis=1), rtol=1e-12, atol=1e-12)


def test_a_column_block_counts_only_the_features_it_holds():
    # Feature-parallel: a worker holding columns 2..4 (col_offset 2) fills the subset
    # entries of those features, as the full matrix would, and leaves the others zero.
    rng = np.random.default_rng(4)
    n, F, B, T = 900, 6, 11, 2
    Xb = rng.integers(0, B, size=(n, F)).astype(np.uint8)
    vals = rng.integers(0, 3, size=(1, n, 2)).astype(float)
    w = rng.poisson(1.0, size=(T, n)).astype(float)
    pos = rng.integers(0, 2, size=(T, n)).astype(np.int32)
    slots = np.array([[0, 1], [2, 3]], np.int32)
    feats = np.array([[0, 2, 5], [3, 4, -1], [1, 2, 3], [4, 5, 0]], np.int32)
    full = np.zeros((4, 3, B, 3))
    full_tot = np.zeros((4, 3))
    K.build_histograms_subset(Xb, vals, w, pos, slots, feats, 0, full, full_tot)
    block = np.zeros_like(full)
    block_tot = np.zeros_like(full_tot)
    K.build_histograms_subset(np.ascontiguousarray(Xb[:, 2:5]), vals, w, pos, slots, feats, 2,
                              block, block_tot)
    held = (feats >= 2) & (feats < 5)
    np.testing.assert_array_equal(block[held], full[held])
    assert not block[~held].any()
    assert full[~held & (feats >= 0)].any()
    np.testing.assert_array_equal(block_tot, full_tot)


def test_histogram_kernel_matches_reference_and_grid_sums_are_exact():
    rng = np.random.default_rng(3)
    n, F, B = 500, 4, 17
    Xb = rng.integers(0, B, size=(n, F)).astype(np.uint8)
    vals = rng.normal(size=(1, n, 2))
    w = rng.poisson(1.0, size=(1, n)).astype(float)
    pos = rng.integers(0, 3, size=(1, n)).astype(np.int32)
    slots = np.array([[1, -1, 0]], np.int32)          # node 0 -> slot 1, node 2 -> slot 0
    hist = np.zeros((2, F, B, 3))
    tot = np.zeros((2, 3))
    K.build_histograms(Xb, vals, w, pos, slots, hist, tot)
    node_slot = np.where(pos[0] == 0, 1, np.where(pos[0] == 2, 0, -1))
    ref = _reference_hist(Xb, vals[0], w[0], node_slot, 2, B)
    np.testing.assert_allclose(hist, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tot, ref[:, 0].sum(axis=1), rtol=1e-12)
    # Values on the fit's grid: row blocks summed separately, then added in any order,
    # give the bits of the one-pass histogram (what lets workers fold their shards).
    q = grid(np.abs(vals).max() * w.max(), n)
    vals = snap(vals, q)
    h1, t1 = np.zeros_like(hist), np.zeros_like(tot)
    K.build_histograms(Xb, vals, w, pos, slots, h1, t1)
    bounds = [0, 120, 300, n]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        hp, tp = np.zeros_like(hist), np.zeros_like(tot)
        K.build_histograms(Xb[a:b], np.ascontiguousarray(vals[:, a:b]),
                           np.ascontiguousarray(w[:, a:b]), np.ascontiguousarray(pos[:, a:b]),
                           slots, hp, tp)
        parts.append((hp, tp))
    for order in ([2, 0, 1], [1, 2, 0]):
        acc, acc_t = parts[order[0]][0].copy(), parts[order[0]][1].copy()
        for k in order[1:]:
            acc += parts[k][0]
            acc_t += parts[k][1]
        np.testing.assert_array_equal(acc, h1)
        np.testing.assert_array_equal(acc_t, t1)


def test_subtraction_leaves_empty_bins_exactly_zero():
    # Histograms hold exact sums (multiples of a power-of-two grid), so a bin whose
    # rows all went to the built child is parent - child = +0.0 in every channel.
    rng = np.random.default_rng(4)
    q = 2.0**-20
    child = np.rint(rng.normal(size=(5, 7, 3)) * 1e5) * q
    child[..., 2] = rng.integers(1, 9, size=(5, 7))
    sibling = np.rint(rng.normal(size=(5, 7, 3)) * 1e5) * q
    sibling[..., 2] = rng.integers(0, 3, size=(5, 7))
    sibling[sibling[..., 2] == 0] = 0.0
    parent = child + sibling
    built = np.stack([rng.normal(size=(5, 7, 3)), child])
    out = with_siblings(built, [parent], [1])
    np.testing.assert_array_equal(out[:2], built)       # the built nodes come first
    d = out[2]
    np.testing.assert_array_equal(d, sibling)
    empty = sibling[..., 2] == 0
    assert empty.sum() >= 5 and (d[empty] == 0).all() and not np.signbit(d[empty]).any()


def _brute_force_gh(x, g, h, lam, msl):
    """Best (gain, threshold-bin, missing_left) for one binned feature by enumeration."""
    best = (-np.inf, None, None)
    G, H = g.sum(), h.sum()
    score = lambda a, b: a * a / (b + lam)  # noqa: E731
    for k in np.unique(x[x > 0]):
        for miss_left in (False, True):
            if miss_left and not (x == 0).any():
                continue
            left = (x <= k) & (x > 0) | ((x == 0) & miss_left)
            if left.sum() < msl or (~left).sum() < msl:
                continue
            gain = score(g[left].sum(), h[left].sum()) + score(g[~left].sum(), h[~left].sum()) - score(G, H)
            if gain > best[0] + 1e-9:
                best = (gain, k, miss_left)
    return best


@pytest.mark.parametrize("crit", [0, 2])
@pytest.mark.parametrize("limits", [(0.0, 0.0), (5.0, 0.0), (3.0, 4.0)])
def test_vectorised_split_search_equals_the_scalar_loop_bit_for_bit(crit, limits):
    # Histograms on a power-of-two grid (as every fit's are), empty bins, missing
    # values in some nodes only, a feature mask, min_samples_leaf / min_child_weight:
    # same gains, features, bins, missing directions and left sums as _best_splits_3.
    rng = np.random.default_rng(crit * 10 + int(limits[0]))
    S, F, B = 40, 6, 33
    q = 2.0**-10
    hist = np.zeros((S, F, B, 3))
    counts = rng.poisson(2.0, size=(S, 1, B)) * (rng.random((S, 1, B)) < 0.7)
    counts[: S // 2, :, 0] = 0                                 # half the nodes: no missing
    counts = np.repeat(counts, F, axis=1)
    for f in range(F):
        counts[:, f] = rng.permuted(counts[:, f], axis=1)
    hist[..., 2] = counts
    if crit == 0:
        hist[..., 0] = np.rint(rng.normal(size=counts.shape) * counts / q) * q
        hist[..., 1] = np.rint(rng.uniform(0.1, 0.25, counts.shape) * counts / q) * q
    else:
        c1 = rng.binomial(counts, 0.3)
        hist[..., 0], hist[..., 1] = counts - c1, c1
    totals = hist[:, 0].sum(axis=1)
    fmask = rng.random((S, F)) < 0.8
    msl, mcw = limits
    outs = []
    for fn in (K._best_splits_3, K._best_splits_3_vector):
        out = (np.empty(S), np.full(S, -7, np.int32), np.full(S, -7, np.int32),
               np.full(S, -7, np.int32), np.zeros((S, 3)))
        fn(hist, totals, fmask, crit, 1.0, msl, mcw, *out)
        outs.append(out)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    gain, _, _, mleft, _ = outs[1]
    assert np.isfinite(gain).sum() >= 10 and mleft.any()



@pytest.mark.parametrize("channels", [2, 3, 4])
def test_subtraction_of_any_layout_equals_numpy(channels):
    from shardlearn.algorithms.tree._kernels import subtract_into

    rng = np.random.default_rng(channels)
    child = rng.integers(0, 4, size=(4, 9, channels)).astype(np.float64)
    parent = child + rng.integers(0, 4, size=child.shape)
    expect = parent - child
    wide = np.full((4, 9, 2 * channels), 7.0)
    for out in (np.empty_like(parent), wide[..., :channels]):    # contiguous, a view
        for p in (parent, np.asfortranarray(parent)):
            out[...] = 7.0
            subtract_into(p, child, out)
            np.testing.assert_array_equal(out, expect)
            assert not np.signbit(out).any()
    assert (wide[..., channels:] == 7.0).all()          # nothing written beside the view


def test_chunked_search_with_siblings_equals_the_serial_one(monkeypatch):
    # The coordinator's search cut in chunks on threads, each chunk also filling its
    # larger siblings (parent - smaller child): the same histograms and best splits.
    from shardlearn.algorithms.tree import grower as G
    from shardlearn.algorithms.tree.splitting import with_siblings

    rng = np.random.default_rng(2)
    n, d, F, B = 150, 100, 4, 17
    q = 2.0**-12
    built = np.zeros((n, F, B, 3))
    built[..., 2] = rng.poisson(3.0, size=(n, F, B))
    built[..., 0] = np.rint(rng.normal(size=(n, F, B)) * built[..., 2] / q) * q
    built[..., 1] = np.rint(0.2 * built[..., 2] / q) * q
    parents = [built[k] * 2 + np.abs(built[k]) for k in range(d)]
    small = list(range(d))
    want_hist = with_siblings(built, parents, small)
    totals = want_hist[:, 0].sum(axis=1)
    p = SplitParams("gh", reg_lambda=1.0, min_samples_leaf=2)
    monkeypatch.setattr(G, "PARALLEL_SEARCH_MIN_NODES", 10**9)
    want = G._search_in_parallel(want_hist, totals, p, None, None)
    monkeypatch.setattr(G, "PARALLEL_SEARCH_MIN_NODES", 20)
    hist = np.full((n + d, F, B, 3), np.nan)
    hist[:n] = built
    got = G._search_in_parallel(hist, totals, p, None, None, (n, parents, small))
    np.testing.assert_array_equal(hist, want_hist)
    for f in ("gain", "feature", "bin", "missing_left", "bin_hi", "left"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f))
    assert (got.feature >= 0).sum() > 100
    # The workers' parts added up by the chunks too (float32 halves, exact), before
    # any chunk derives a sibling from a smaller child another chunk added.
    half = np.floor(built / (2 * q)) * q
    parts = [half.astype(np.float32), (built - half).astype(np.float32)]
    assert np.array_equal(parts[0].astype(np.float64) + parts[1], built)
    # Siblings in the order of their smaller children (each chunk adds, subtracts and
    # searches its own rows), then in another order (all chunks add first).
    for small in (list(range(d)), list(range(d))[::-1]):
        hist = np.full((n + d, F, B, 3), np.nan)
        want_hist = with_siblings(built, parents, small)
        totals = want_hist[:, 0].sum(axis=1)
        monkeypatch.setattr(G, "PARALLEL_SEARCH_MIN_NODES", 10**9)
        want = G._search_in_parallel(want_hist.copy(), totals, p, None, None)
        monkeypatch.setattr(G, "PARALLEL_SEARCH_MIN_NODES", 20)
        got = G._search_in_parallel(hist, totals, p, None, None, (n, parents, small), parts)
        np.testing.assert_array_equal(hist, want_hist)
        for f in ("gain", "feature", "bin", "missing_left", "bin_hi", "left"):
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_finder_matches_brute_force_with_missing_values(seed):
    rng = np.random.default_rng(seed)
    n, F, B = 300, 3, 12
    Xb = rng.integers(1, B, size=(n, F)).astype(np.uint8)
    Xb[rng.random((n, F)) < 0.15] = 0
    g = rng.normal(size=n) + (Xb[:, 1] == 0) * 1.5 + (Xb[:, 2] > 6)
    h = rng.uniform(0.5, 1.0, n)
    vals = np.stack([g, h], 1)[None]
    hist = np.zeros((1, F, B, 3))
    tot = np.zeros((1, 3))
    K.build_histograms(Xb, vals, np.ones((1, n)), np.zeros((1, n), np.int32),
                       np.zeros((1, 1), np.int32), hist, tot)
    p = SplitParams("gh", reg_lambda=1.0, min_samples_leaf=10)
    best = find_best_splits(hist, tot, p)
    refs = [_brute_force_gh(Xb[:, f].astype(int), g, h, 1.0, 10) for f in range(F)]
    f = int(np.argmax([r[0] for r in refs]))
    assert best.feature[0] == f
    np.testing.assert_allclose(best.gain[0], refs[f][0], rtol=1e-9)
    assert best.bin[0] == refs[f][1] and bool(best.missing_left[0]) == refs[f][2]
    # A feature mask restricts the candidates; an offset renames them.
    mask = np.ones((1, F), bool)
    mask[0, f] = False
    b2 = find_best_splits(hist, tot, p, mask, feature_offset=10)
    f2 = int(np.argmax([r[0] if i != f else -np.inf for i, r in enumerate(refs)]))
    assert b2.feature[0] == 10 + f2
