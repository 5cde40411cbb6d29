"""The coordinator's one-pass searches (adding the workers' parts up, or subtracting a
smaller child from its parent, while searching each feature's bins) against the
serial answer: the sum or difference written out first, then ``find_best_splits``.
Same histograms and best splits bit for bit, and the same models end to end.
"""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.algorithms.tree import grower as G
from shardlearn.algorithms.tree.splitting import (
    SplitParams,
    added_best_splits,
    find_best_splits,
    fuses_with_search,
    subtracted_best_splits,
    unheld_best_splits,
    with_siblings,
)

FIELDS = ("gain", "feature", "bin", "missing_left", "bin_hi", "left")
Q = 2.0**-12


def _node_rows(rng, n_nodes, rows_per_node, F, B, missing):
    """Per node: the rows' bins (n, F) and values (n, 2) on a power-of-two grid."""
    out = []
    for _ in range(n_nodes):
        n = int(rng.integers(rows_per_node // 2, rows_per_node))
        bins = rng.integers(1, B, size=(n, F))
        bins[:, 1] = rng.integers(1, 4, size=n)             # a low-cardinality feature
        if missing:
            bins[rng.random((n, F)) < 0.1] = 0
        g = np.rint(rng.normal(size=n) / Q) * Q
        h = np.rint(rng.uniform(0.05, 0.25, size=n) / Q) * Q
        out.append((bins, np.column_stack([g, h])))
    return out


def _hist(bins, vals, F, B, classes=False):
    h = np.zeros((F, B, 3))
    for f in range(F):
        if classes:          # two class counts: the second channel is the class
            np.add.at(h[f, :, 0], bins[:, f], 1.0 - vals[:, 1])
            np.add.at(h[f, :, 1], bins[:, f], vals[:, 1])
        else:
            np.add.at(h[f, :, 0], bins[:, f], vals[:, 0])
            np.add.at(h[f, :, 1], bins[:, f], vals[:, 1])
        np.add.at(h[f, :, 2], bins[:, f], 1.0)
    return h


def _level(seed, n_nodes=12, F=5, B=20, missing=True, classes=False, dtype=np.float64):
    """Two workers' parts of ``n_nodes`` nodes, and the exact sum."""
    rng = np.random.default_rng(seed)
    rows = _node_rows(rng, n_nodes, 120, F, B, missing)
    if classes:
        rows = [(b, np.column_stack([v[:, 0], (rng.random(len(v)) < 0.35).astype(float)]))
                for b, v in rows]
    parts = [np.zeros((n_nodes, F, B, 3)), np.zeros((n_nodes, F, B, 3))]
    for s, (bins, vals) in enumerate(rows):
        first = rng.random(len(bins)) < 0.5
        parts[0][s] = _hist(bins[first], vals[first], F, B, classes)
        parts[1][s] = _hist(bins[~first], vals[~first], F, B, classes)
    total = parts[0] + parts[1]
    if classes:          # whole counts travel narrow: uint8 parts of a float32 level
        parts = [p.astype(np.uint8) for p in parts]
        total = total.astype(dtype)
    return parts, total, rng


PARAMS = [
    SplitParams("gh", reg_lambda=1.0, min_samples_leaf=5, min_child_weight=0.5),
    SplitParams("gh", reg_lambda=0.0, min_samples_leaf=1),
    SplitParams("gini", min_samples_leaf=3),
]


def _assert_same(got, want):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.criterion}-{p.reg_lambda}")
@pytest.mark.parametrize("missing", [True, False])
def test_adding_parts_while_searching_equals_adding_then_searching(params, missing):
    classes = params.criterion == "gini"
    dtype = np.float32 if classes else np.float64
    parts, total, rng = _level(3, missing=missing, classes=classes, dtype=dtype)
    totals = total[:, 0].astype(np.float64).sum(axis=1)
    mask = rng.random(total.shape[:2]) < 0.8
    mask[0] = False                                     # a node with no candidate
    for fmask in (None, mask):
        want = find_best_splits(total, totals, params, fmask)
        out = np.full(total.shape, np.nan, dtype)
        assert fuses_with_search(params, out)
        got = added_best_splits(parts[0], parts[1], out, totals, params, fmask)
        np.testing.assert_array_equal(out, total)          # the sum, written in full
        _assert_same(got, want)
    assert (got.feature >= 0).sum() >= 6 and got.feature[0] == -1
    assert got.missing_left.any() == missing or not missing


@pytest.mark.parametrize("params", PARAMS[:2], ids=lambda p: f"lambda-{p.reg_lambda}")
def test_subtracting_while_searching_equals_subtracting_then_searching(params):
    parts, parent, rng = _level(5)
    small = parts[0]                                     # one worker's rows: a smaller child
    sib = with_siblings(small, list(parent), list(range(len(parent))))[len(parent):]
    totals = sib[:, 0].sum(axis=1)
    fmask = rng.random(sib.shape[:2]) < 0.7
    want = find_best_splits(sib, totals, params, fmask)
    out = np.full(sib.shape, np.nan)
    got = subtracted_best_splits(list(parent), out, list(small), totals, params, fmask)
    np.testing.assert_array_equal(out, sib)
    empty = out[..., 2] == 0
    assert empty.sum() >= 20 and not np.signbit(out[empty]).any()   # empty bins: +0.0
    _assert_same(got, want)


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: f"{p.criterion}-{p.reg_lambda}")
@pytest.mark.parametrize("threads", [False, True])
def test_a_level_nobody_holds_is_searched_without_writing_it(params, threads):
    # The last level: built nodes from the two parts, siblings from held parents, and
    # one built node without a sibling; no histogram written, the same best splits as
    # adding up, deriving the siblings and searching them all.
    classes = params.criterion == "gini"
    dtype = np.float32 if classes else np.float64
    parts, built, rng = _level(7, n_nodes=9, classes=classes, dtype=dtype)
    n = built.shape[0]
    small = [4, 0, 8, 2, 6, 1, 3, 7]                      # built row 5 has no sibling
    extra, _, _ = _level(8, n_nodes=len(small), classes=classes, dtype=dtype)
    parents = [(built[j] + extra[0][k] + extra[1][k]).astype(dtype)
               for k, j in enumerate(small)]
    full = with_siblings(built, parents, small)
    totals = full[:, 0].astype(np.float64).sum(axis=1)
    fmask = rng.random(full.shape[:2]) < 0.8
    want = find_best_splits(full, totals, params, fmask)
    before = [p.copy() for p in parts] + [p.copy() for p in parents]
    if threads:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            def run(fn, chunks):
                list(pool.map(lambda c: fn(*c), chunks))

            got = unheld_best_splits(parts, parents, small, totals, params, fmask,
                                     dtype, chunks=[(0, 3), (3, 6), (6, n)], run=run)
    else:
        got = unheld_best_splits(parts, parents, small, totals, params, fmask, dtype)
    _assert_same(got, want)
    for a, b in zip(parts + parents, before):              # inputs left as they were
        np.testing.assert_array_equal(a, b)
    assert (got.feature >= 0).sum() >= 10


def _fit_both_ways(est, X, y, monkeypatch, switch):
    from shardlearn.testing import assert_same_forest

    fused = est.fit(X, y)
    monkeypatch.setattr(G, switch, lambda *a, **k: False)
    plain = type(est)(**est.get_params()).fit(X, y)
    assert_same_forest(fused.forest_, plain.forest_)
    np.testing.assert_array_equal(fused.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("switch", ["fuses_with_search", "_pairs_apply"])
@pytest.mark.parametrize("kind", ["boosting", "forest"])
def test_one_pass_searches_give_the_same_model(local_session, monkeypatch, switch, kind):
    # End to end: the one-pass searches on (the default) against the serial path.
    from shardlearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    rng = np.random.default_rng(21)
    X = rng.normal(size=(5000, 6))
    X[::11, 3] = np.nan
    y = (X[:, 0] + np.nan_to_num(X[:, 3]) ** 2 + 0.5 * rng.normal(size=5000) > 0.7).astype(int)
    est = (GradientBoostingClassifier(n_estimators=6, max_depth=4, random_state=0)
           if kind == "boosting" else
           RandomForestClassifier(n_estimators=4, max_depth=6, random_state=0))
    _fit_both_ways(est, X, y, monkeypatch, switch)


def test_the_last_level_holds_no_histograms(local_session, monkeypatch):
    # Its children are leaves: nothing would subtract from its histograms.
    from shardlearn.ensemble import GradientBoostingClassifier

    held = []
    evaluate = G.DataParallel.evaluate

    def spy(self, *args, **kwargs):
        out = evaluate(self, *args, **kwargs)
        held.append(len(self.held))
        return out

    monkeypatch.setattr(G.DataParallel, "evaluate", spy)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    GradientBoostingClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, y)
    # Per tree: the root and level 1 held (the next level subtracts), level 2 not.
    assert held == [1, 2, 0, 1, 2, 0]
