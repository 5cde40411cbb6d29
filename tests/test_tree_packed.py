"""Packed boosting histograms (one int64 per row and feature) against the float loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shardlearn.algorithms.tree import _hist_kernels as H
from shardlearn.algorithms.tree import _packed_hist as P
from shardlearn.algorithms.tree._boost_kernels import boost_rows
from shardlearn.testing import assert_same_forest

pytestmark = pytest.mark.timeout(300)


def _packed_rows(rng, n, qg, qh, dead):
    """Values on the grids, up to the packing limits (both signs), and their packing."""
    gq = rng.integers(-(1 << P.VALUE_BITS), (1 << P.VALUE_BITS) + 1, n).astype(np.float64)
    hq = rng.integers(0, (1 << P.VALUE_BITS) + 1, n).astype(np.float64)
    gq[:4] = [P.LIMIT, -P.LIMIT, P.LIMIT, -P.LIMIT]       # extremes in one block
    hq[:4] = P.LIMIT
    vals = np.stack([gq * qg, hq * qh], axis=-1)[None]
    w = np.ones((1, n))
    w[0, dead] = 0.0
    packed = gq.astype(np.int64) * P.G_UNIT + hq.astype(np.int64) * P.H_UNIT + 1
    packed[dead] = 0
    return vals, w, packed


@pytest.mark.parametrize("n_bins", [13, 256])
@pytest.mark.parametrize("skip_zero", [False, True])
@pytest.mark.parametrize("case", ["root", "nodes", "nodes, rows moved"])
def test_packed_histograms_equal_the_float_loops_bit_for_bit(n_bins, skip_zero, case):
    # Nodes of several blocks (more than BLOCK_ROWS rows) and of one; rows of weight 0;
    # values at the packing limits of both signs: the sums must be those of the float
    # loops, exactly, whatever the order.
    rng = np.random.default_rng(3)
    n, F = 3 * P.BLOCK_ROWS + 17, 6
    qg, qh = 2.0**-15, 2.0**-17
    Xb = rng.integers(0, n_bins, size=(n, F)).astype(np.uint8)
    dead = rng.random(n) < 0.2
    vals, w, packed = _packed_rows(rng, n, qg, qh, dead)
    n_nodes = 7
    pos = np.zeros((1, n), np.int32)
    pos[0, rng.random(n) < 0.1] = 1                        # node 0 big, node 1 small
    feature = np.full((1, n_nodes), -1, np.int32)
    split_bin = np.zeros((1, n_nodes), np.int32)
    missing_left = np.zeros((1, n_nodes), np.int32)
    left = np.full((1, n_nodes), -1, np.int32)
    right = np.full((1, n_nodes), -1, np.int32)
    feature[0, :2] = [2, 4]
    split_bin[0, :2] = [n_bins // 2, 3]
    missing_left[0, 1] = 1
    left[0, :2], right[0, :2] = [3, 5], [4, 6]
    if case == "root":
        slots = np.full((1, n_nodes), -1, np.int32)
        slots[0, 0] = 0
        pos[:] = 0
        S = 1
    elif case == "nodes":
        slots = np.full((1, n_nodes), -1, np.int32)
        slots[0, [0, 1]] = [1, 0]
        S = 2
    else:
        slots = np.full((1, n_nodes), -1, np.int32)
        slots[0, [3, 4, 6]] = [0, 2, 1]                    # node 5 is derived, not built
        S = 3
    want = np.zeros((S, F, n_bins, 3))
    want_tot = np.zeros((S, 3))
    got = np.full((S, F, n_bins, 3), 0.5)                  # adds to what is there
    got_tot = np.full((S, 3), 0.25)
    want += 0.5
    want_tot += 0.25
    pos_want, pos_got = pos.copy(), pos.copy()
    m = H._NO_MOVES
    acc = np.zeros(P.accumulator_size(S, F) + 5, np.int64)   # scratch, left zero
    buf = (acc, np.zeros(S, np.int64), np.zeros(S, np.int64), np.zeros(S, np.uint8))
    if case == "root":
        H._hist_root(Xb, vals, w, want, want_tot)
        P.packed_root(Xb, packed, skip_zero, got, got_tot, qg, qh, *buf)
    elif case == "nodes":
        H._hist_staged(Xb, vals, w, pos_want, slots, want, want_tot, False, m, m, m, m, m)
        P.packed_staged(Xb, packed, skip_zero, pos_got, slots, got, got_tot, False, m, m, m, m,
                        m, qg, qh, *buf)
    else:
        H._hist_staged(Xb, vals, w, pos_want, slots, want, want_tot, True, feature, split_bin,
                       missing_left, left, right)
        P.packed_staged(Xb, packed, skip_zero, pos_got, slots, got, got_tot, True, feature,
                        split_bin, missing_left, left, right, qg, qh, *buf)
    assert buf[1].any()                                   # partial blocks left over
    P.flush_partial(*buf, got, got_tot, qg, qh)
    assert not acc.any() and not buf[1].any() and not buf[2].any()
    np.testing.assert_array_equal(pos_got, pos_want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_tot, want_tot)
    assert want_tot[:, 2].sum() > 0.25 * S + P.BLOCK_ROWS   # a node spans several blocks


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("root", [True, False])
def test_a_fold_carry_across_shards_gives_the_one_pass_histograms(root, fresh):
    # Shards of a worker's fold leave their partial blocks in one FoldCarry (blocks
    # spanning shard boundaries); its finish must give what each shard flushing
    # alone gives, bit for bit, and leave its scratch zero for the next fold.
    # ``fresh``: the fold's histogram starts unwritten (NaN here), each slot's first
    # flush writes it, and a slot without rows (the last, below the root) is zeroed.
    rng = np.random.default_rng(9)
    F, S = 5, 1 if root else 4
    qg, qh = 2.0**-15, 2.0**-17
    sizes = [900, 2500, 1300, 40]                        # blocks straddle shards
    shards = []
    for n in sizes:
        Xb = rng.integers(0, 20, size=(n, F)).astype(np.uint8)
        _, _, packed = _packed_rows(rng, n, qg, qh, rng.random(n) < 0.1)
        pos = rng.integers(0, max(S - 1, 1), size=(1, n)).astype(np.int32)
        shards.append((Xb, packed, pos))
    slots = np.arange(S, dtype=np.int32)[None, :]
    m = H._NO_MOVES
    want, want_tot = np.zeros((S, F, 20, 3)), np.zeros((S, 3))
    got, got_tot = np.zeros_like(want), np.zeros_like(want_tot)
    carry = P.FoldCarry()
    if fresh:
        got[...] = np.nan
        carry.mark_fresh(S)
    for Xb, packed, pos in shards:
        if root:
            buf = (np.zeros(P.accumulator_size(1, F), np.int64), np.zeros(1, np.int64),
                   np.zeros(1, np.int64), np.zeros(1, np.uint8))
            P.packed_root(Xb, packed, False, want, want_tot, qg, qh, *buf)
            P.flush_partial(*buf, want, want_tot, qg, qh)
            acc, count, total, unset = carry.take(S, F, qg, qh, got, got_tot)
            P.packed_root(Xb, packed, False, got, got_tot, qg, qh, acc, count, total, unset)
        else:
            buf = (np.zeros(P.accumulator_size(S, F), np.int64), np.zeros(S, np.int64),
                   np.zeros(S, np.int64), np.zeros(S, np.uint8))
            P.packed_staged(Xb, packed, False, pos.copy(), slots, want, want_tot, False, m, m,
                            m, m, m, qg, qh, *buf)
            P.flush_partial(*buf, want, want_tot, qg, qh)
            acc, count, total, unset = carry.take(S, F, qg, qh, got, got_tot)
            P.packed_staged(Xb, packed, False, pos.copy(), slots, got, got_tot, False, m, m, m,
                            m, m, qg, qh, acc, count, total, unset)
    assert carry.count.sum() > 0                          # something left for the end
    carry.finish(got, got_tot)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_tot, want_tot)
    assert carry.acc is None and not P.FoldCarry._pool.free.any()


@pytest.mark.parametrize("first_packed", [False, True])
def test_a_float_loop_in_a_fold_started_unwritten_zeroes_what_nothing_wrote(first_packed):
    # A shard of the fold that takes the float loops (no packed values that round)
    # adds into the histogram: the slots no block was written to yet must be zeros
    # by then, whether the fold began with a packed shard or not.
    rng = np.random.default_rng(4)
    F, B, S = 4, 16, 3
    qg, qh = 2.0**-15, 2.0**-17
    shards = []
    for n in (700, 500):
        Xb = rng.integers(0, B, size=(n, F)).astype(np.uint8)
        vals, w, packed = _packed_rows(rng, n, qg, qh, np.zeros(n, bool))
        pos = rng.integers(0, S - 1, size=(1, n)).astype(np.int32)    # slot 2: no rows
        shards.append((Xb, vals, w, packed, pos))
    slots = np.arange(S, dtype=np.int32)[None, :]
    want, want_tot = np.zeros((S, F, B, 3)), np.zeros((S, 3))
    for Xb, vals, w, _, pos in shards:
        H.build_histograms(Xb, vals, w, pos, slots, want, want_tot)
    got, got_tot = np.full_like(want, np.nan), np.zeros_like(want_tot)
    carry = P.FoldCarry()
    carry.mark_fresh(S)
    for k, (Xb, vals, w, packed, pos) in enumerate(shards):
        pack = (qg, qh, packed, False) if (k == 0) == first_packed else None
        H.build_histograms(Xb, vals, w, pos, slots, got, got_tot, False, pack, carry)
    carry.finish(got, got_tot)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_tot, want_tot)


def test_dispatcher_takes_the_packed_loops_only_for_two_float64_channels():
    rng = np.random.default_rng(0)
    n, F, B = 500, 3, 8
    qg, qh = 2.0**-15, 2.0**-17
    Xb = rng.integers(0, B, size=(n, F)).astype(np.uint8)
    vals, w, packed = _packed_rows(rng, n, qg, qh, np.zeros(n, bool))
    pos = np.zeros((1, n), np.int32)
    slots = np.zeros((1, 1), np.int32)
    pack = (qg, qh, packed, False)
    assert H._packable(pack, vals, np.zeros((1, F, B, 3)))
    assert not H._packable(None, vals, np.zeros((1, F, B, 3)))
    assert not H._packable(pack, vals, np.zeros((1, F, B, 3), np.float32))
    assert not H._packable(pack, np.zeros((2, n, 2)), np.zeros((1, F, B, 3)))
    assert not H._packable(pack, vals, np.zeros((1, F, 2 * B, 3))[:, :, ::2])  # strided
    a, b = np.zeros((1, F, B, 3)), np.zeros((1, F, B, 3))
    ta, tb = np.zeros((1, 3)), np.zeros((1, 3))
    H.build_histograms(Xb, vals, w, pos, slots, a, ta, True, pack)
    H.build_histograms(Xb, vals, w, pos, slots, b, tb, True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("bound", [1.0, 0.25, 3.7, 1e-9, 12345.678])
def test_pack_grid_is_the_finest_power_of_two_within_the_value_bits(bound):
    q = P.pack_grid(bound)
    assert math.frexp(q)[0] == 0.5                          # a power of two
    assert bound / q <= P.LIMIT
    assert bound / (q / 2) > P.LIMIT


def test_boost_rows_packs_what_it_writes_and_says_when_weights_overflow_the_packing():
    rng = np.random.default_rng(5)
    n = 1000
    raw = rng.normal(size=n)
    y = (rng.random(n) < 0.5).astype(np.float64)
    sw = rng.integers(0, 2, n).astype(np.float64)
    train = rng.random(n) < 0.9
    pos = np.zeros(n, np.int32)
    qg, qh = P.pack_grid(1.0), P.pack_grid(0.25)
    vals = np.empty((n, 2))
    packed = np.empty(n, np.int64)
    sums = np.zeros((2, 5))
    bounds = np.array([0, 400, n])
    m = np.zeros(1, np.int32)
    args = (pos, np.zeros(1), False, qg, qh, vals, packed, bounds, sums, np.zeros((n, 1), np.uint8),
            False, m, m, m, m, m)
    assert boost_rows(1, raw.copy(), y, sw, train, *args)
    g = packed >> (64 - 27)
    h = (packed >> 11) & ((1 << 26) - 1)
    np.testing.assert_array_equal(g * qg, vals[:, 0])
    np.testing.assert_array_equal(h * qh, vals[:, 1])
    assert np.all(packed & ((1 << 11) - 1) == 1)
    assert np.all(vals[~train | (sw == 0)] == 0.0)
    np.testing.assert_allclose(sums[:, 1] + sums[:, 3], [sw[:400].sum(), sw[400:].sum()])
    # A row of weight 3 is three rows of weight 1 (the grid comes before the weight),
    # and no longer fits the packing.
    one = vals.copy()
    assert not boost_rows(1, raw.copy(), y, 3.0 * sw, train, *args)
    np.testing.assert_array_equal(vals, 3.0 * one)


def test_boost_rows_moves_rows_and_sums_losses_as_the_reference_does():
    # The branch-free move (missing bins both ways, leaves that stay) against
    # _kernels.apply_splits; the losses, log(1 + e^z) through log or log1p by the size
    # of e^-|z|, against numpy's logaddexp, for |z| up to 40.
    from shardlearn.algorithms.tree import _kernels as K

    rng = np.random.default_rng(11)
    n = 6000
    Xb = rng.integers(0, 9, size=(n, 3)).astype(np.uint8)    # bin 0: missing
    feature = np.array([[-1, 0, 2, -1, -1, -1, -1]], np.int32)
    split_bin = np.array([[0, 4, 2, 0, 0, 0, 0]], np.int32)
    missing_left = np.array([[0, 1, 0, 0, 0, 0, 0]], np.int32)
    left = np.array([[1, 3, 5, -1, -1, -1, -1]], np.int32)
    right = np.array([[2, 4, 6, -1, -1, -1, -1]], np.int32)
    pos = rng.integers(1, 4, n).astype(np.int32)[None, :]     # node 3: a leaf already
    leaf_values = rng.normal(size=7)
    raw = rng.normal(size=n) * 12.0
    y = (rng.random(n) < 0.5).astype(np.float64)
    sw = rng.integers(0, 3, n).astype(np.float64)
    train = rng.random(n) < 0.8
    bounds = np.array([0, 1000, 1000, 4500, n])
    sums = np.zeros((4, 5))
    qg, qh = P.pack_grid(1.0), P.pack_grid(0.25)
    vals = np.empty((n, 2))
    got_pos, got_raw = pos.copy(), raw.copy()
    boost_rows(1, got_raw, y, sw, train, got_pos[0], leaf_values, True, qg, qh, vals,
               np.empty(0, np.int64), bounds, sums, Xb, True, feature[0], split_bin[0],
               missing_left[0], left[0], right[0])
    want_pos = pos.copy()
    K.apply_splits(Xb, want_pos, feature, split_bin, missing_left, left, right,
                   np.full((1, 7), -1, np.int32), np.zeros((0, 4), np.uint64), 0)
    np.testing.assert_array_equal(got_pos, want_pos)
    assert set(np.unique(want_pos)) == {3, 4, 5, 6}
    miss1 = (pos[0] == 1) & (Xb[:, 0] == 0)
    miss2 = (pos[0] == 2) & (Xb[:, 2] == 0)
    assert miss1.any() and np.all(got_pos[0, miss1] == 3)   # missing left at node 1
    assert miss2.any() and np.all(got_pos[0, miss2] == 6)   # missing right at node 2
    z = raw + leaf_values[want_pos[0]]
    np.testing.assert_array_equal(got_raw, z)
    assert np.abs(z).max() > 36.0 and (np.exp(-np.abs(z)) < 2.0**-7).mean() > 0.5
    lo = np.logaddexp(0.0, z) - y * z
    for k in range(4):
        a, b = bounds[k], bounds[k + 1]
        t = train[a:b]
        want = [np.sum((sw * lo)[a:b][t]), sw[a:b][t].sum(),
                np.sum((sw * lo)[a:b][~t]), sw[a:b][~t].sum()]
        np.testing.assert_allclose(sums[k, :4], want, rtol=1e-12)
    p = 1.0 / (1.0 + np.exp(-z))
    np.testing.assert_allclose(vals[:, 0], np.rint((p - y) / qg) * qg * sw * train, atol=qg)


def test_a_boosting_fit_builds_its_histograms_with_the_packed_loops(monkeypatch):
    import shardlearn
    from shardlearn.ensemble import GradientBoostingClassifier

    calls = []
    real_root, real_staged = P.packed_root, P.packed_staged
    monkeypatch.setattr(P, "packed_root", lambda *a: calls.append("root") or real_root(*a))
    monkeypatch.setattr(P, "packed_staged",
                        lambda *a: calls.append("staged") or real_staged(*a))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] + rng.normal(size=3000) > 0).astype(int)
    with shardlearn.init("local", n_workers=1):
        GradientBoostingClassifier(n_estimators=3, max_depth=3).fit(X, y)
    assert calls.count("root") == 3 and calls.count("staged") == 3 * 2


@pytest.mark.parametrize("case", ["binary", "binary subsample", "binary held out",
                                  "binary feature-parallel", "regression", "weighted"])
def test_a_fit_with_the_packed_loops_equals_one_with_the_float_loops(case, monkeypatch):
    # End to end: the packed loops must give the float loops' trees, bit for bit
    # (zero-weight rows, held-out rows, subsampled rows, both parallel modes).
    import shardlearn
    from shardlearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

    rng = np.random.default_rng(2)
    n = 4 * P.BLOCK_ROWS + 100
    X = rng.normal(size=(n, 5))
    X[rng.random(X.shape) < 0.03] = np.nan
    y_num = np.nan_to_num(X[:, 0]) * 2 + rng.normal(size=n)
    sw = None
    if case == "regression":
        est = GradientBoostingRegressor(n_estimators=4, max_depth=4, min_samples_leaf=5,
                                        random_state=0)
        y = y_num
    else:
        kw = {"subsample": 0.6} if case == "binary subsample" else {}
        if case == "binary held out":
            kw = {"early_stopping": True, "validation_fraction": 0.2, "n_iter_no_change": 50}
        if case == "binary feature-parallel":
            kw = {"parallel": "feature"}
        est = GradientBoostingClassifier(n_estimators=4, max_depth=4, min_samples_leaf=5,
                                         random_state=0, **kw)
        y = (y_num > 0).astype(int)
        if case == "weighted":
            sw = rng.integers(0, 2, n).astype(float)      # weights 0 and 1 still pack

    calls = []
    real = P.packed_staged
    monkeypatch.setattr(P, "packed_staged", lambda *a: calls.append(1) or real(*a))

    def fit():
        with shardlearn.init("local", n_workers=2):
            return dict(est.fit(X, y, sample_weight=sw).forest_)

    packed = fit()
    assert calls, "the packed loops did not run"
    monkeypatch.setattr(H, "_packable", lambda *a: False)
    floats = fit()
    assert_same_forest(packed, floats)
