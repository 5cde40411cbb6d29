"""Small nodes searched by their rows (``_row_search``) against the serial answer: the
node's histogram built from the same rows, then ``find_best_splits``. Same best
splits bit for bit, and the same models end to end whichever nodes take rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression

from shardlearn.algorithms.tree import grower as G
from shardlearn.algorithms.tree._row_search import gather_rows, merge_rows, row_best_splits
from shardlearn.algorithms.tree.splitting import SplitParams, find_best_splits
from shardlearn.data import Dataset
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.testing import assert_same_forest
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

FIELDS = ("gain", "feature", "bin", "missing_left", "bin_hi", "left")
Q = 2.0**-10
B = 32


def _nodes(rng, n_nodes, F, n_values, criterion):
    """Per node: its rows' bins (n, F) and value channels (n, Cv) on a power-of-two grid."""
    out = []
    for _ in range(n_nodes):
        n = int(rng.integers(1, 40))
        bins = rng.integers(1, B, size=(n, F)).astype(np.uint8)
        bins[:, 1] = rng.integers(1, 3, size=n)              # a low-cardinality feature
        bins[:, 2] = 5                                       # a constant one
        bins[rng.random((n, F)) < 0.15] = 0                  # missing values
        if criterion in ("gini", "entropy"):
            vals = np.zeros((n, n_values))
            vals[np.arange(n), rng.integers(0, n_values, n)] = rng.integers(1, 4, n)
        else:
            vals = np.rint(rng.normal(size=(n, n_values)) / Q) * Q
            vals[:, 1] = np.rint(rng.uniform(0.1, 2.0, n) / Q) * Q    # a positive weight
        out.append((bins, vals))
    return out


def _histograms(nodes, F, C):
    hist = np.zeros((len(nodes), F, B, C))
    totals = np.zeros((len(nodes), C))
    for s, (bins, vals) in enumerate(nodes):
        for i in range(bins.shape[0]):
            row = np.append(vals[i], 1.0)
            hist[s, np.arange(F), bins[i]] += row
            totals[s] += row
    return hist, totals


def _gathered(nodes):
    offsets = np.zeros(len(nodes) + 1, np.int64)
    offsets[1:] = np.cumsum([b.shape[0] for b, _ in nodes])
    return (offsets, np.concatenate([b for b, _ in nodes]),
            np.concatenate([v for _, v in nodes]))


def _assert_same(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


@pytest.mark.parametrize("criterion,n_values", [("mse", 3), ("gh", 2), ("gini", 2),
                                                ("gini", 4), ("entropy", 2), ("entropy", 3)])
@pytest.mark.parametrize("msl,mcw", [(1, 0.0), (4, 0.0), (1, 1.5)])
def test_row_search_equals_histogram_search(criterion, n_values, msl, mcw):
    rng = np.random.default_rng([n_values, msl, int(mcw)])
    F = 6
    nodes = _nodes(rng, 60, F, n_values, criterion)
    hist, totals = _histograms(nodes, F, n_values + 1)
    params = SplitParams(criterion, reg_lambda=1.0 if criterion == "gh" else 0.0,
                         min_samples_leaf=msl, min_child_weight=mcw)
    serial = find_best_splits(hist, totals, params)
    assert np.isfinite(serial.gain).sum() > 20          # the nodes do split, mostly
    _assert_same(row_best_splits(_gathered(nodes), totals, params), serial)
    # Candidate features: a per-node mask, or a compact list of global ids (-1 pads).
    mask = rng.random((len(nodes), F)) < 0.6
    _assert_same(row_best_splits(_gathered(nodes), totals, params, feature_mask=mask),
                 find_best_splits(hist, totals, params, mask))
    feats = np.sort(np.argsort(rng.random((len(nodes), F)), axis=1)[:, :3], axis=1).astype(np.int32)
    feats[::5, 2] = -1
    compact = np.take_along_axis(hist, np.maximum(feats, 0)[:, :, None, None], axis=1)
    ref = find_best_splits(compact, totals, params, feats >= 0)
    found = ref.feature >= 0
    ref.feature[found] = feats[np.flatnonzero(found), ref.feature[found]]
    _assert_same(row_best_splits(_gathered(nodes), totals, params, feats=feats), ref)


def test_row_search_of_a_column_block_reports_global_features():
    rng = np.random.default_rng(3)
    nodes = _nodes(rng, 30, 6, 3, "mse")
    hist, totals = _histograms(nodes, 6, 4)
    params = SplitParams("mse")
    block = [(b[:, 2:5], v) for b, v in nodes]               # features 2, 3, 4 of 6
    got = row_best_splits(_gathered(block), totals, params, col_offset=2)
    _assert_same(got, find_best_splits(np.ascontiguousarray(hist[:, 2:5]), totals, params,
                                       feature_offset=2))
    # Compact candidates outside the block are not searched here.
    feats = np.tile(np.array([0, 3, 5], np.int32), (30, 1))
    got = row_best_splits(_gathered(block), totals, params, feats=feats, col_offset=2)
    ref = find_best_splits(np.ascontiguousarray(hist[:, 3:4]), totals, params, feature_offset=3)
    _assert_same(got, ref)


def test_gather_rows_groups_counted_rows_by_slot_with_their_weights():
    rng = np.random.default_rng(0)
    n, F = 50, 4
    Xb = rng.integers(0, 9, size=(n, F)).astype(np.uint8)
    vals = rng.normal(size=(1, n, 3))
    w = rng.integers(0, 3, size=(2, n)).astype(np.float64)   # two trees, zeros out of bag
    pos = rng.integers(0, 3, size=(2, n)).astype(np.int32)
    rslot = np.array([[-1, 0, 2], [1, -1, -1]], np.int32)     # tree 0 nodes 1, 2; tree 1 node 0
    offsets, rows, values = gather_rows(Xb, vals, w, pos, rslot, 3)
    for t, v, s in [(0, 1, 0), (1, 0, 1), (0, 2, 2)]:
        sel = np.flatnonzero((pos[t] == v) & (w[t] != 0))
        a, b = offsets[s], offsets[s + 1]
        np.testing.assert_array_equal(rows[a:b], Xb[sel])
        np.testing.assert_array_equal(values[a:b], vals[0, sel] * w[t, sel][:, None])
    # Gathered per shard and merged: the same rows per slot.
    halves = [gather_rows(Xb[i:j], vals[:, i:j], w[:, i:j], pos[:, i:j], rslot, 3)
              for i, j in [(0, 20), (20, 50)]]
    merged = merge_rows(halves + [None], 3, 3)
    for k in range(3):
        np.testing.assert_array_equal(merged[k], (offsets, rows, values)[k])


# -- whole models: rows or histograms, the same trees ------------------------------------------
def _regression(n=2500):
    X, y = make_regression(n, 9, n_informative=6, noise=3.0, random_state=0)
    X[np.random.default_rng(1).random(X.shape) < 0.05] = np.nan
    return X, y


def _classification(n=2500):
    X, y = make_classification(n, 9, n_informative=6, n_classes=3, random_state=0)
    X[np.random.default_rng(1).random(X.shape) < 0.05] = np.nan
    return X, y


MODELS = {
    "tree-reg": (lambda: DecisionTreeRegressor(), _regression),
    "tree-reg-leaf": (lambda: DecisionTreeRegressor(min_samples_leaf=3,
                                                    min_impurity_decrease=0.5), _regression),
    "forest-reg": (lambda: RandomForestRegressor(n_estimators=4, oob_score=True,
                                                 random_state=0), _regression),
    "forest-reg-features": (lambda: RandomForestRegressor(n_estimators=3, max_features=0.4,
                                                          random_state=1), _regression),
    "forest-reg-leaves": (lambda: RandomForestRegressor(n_estimators=3, max_leaf_nodes=400,
                                                        random_state=2), _regression),
    "forest-reg-feature-parallel": (lambda: RandomForestRegressor(
        n_estimators=3, random_state=3, parallel="feature"), _regression),
    "tree-gini": (lambda: DecisionTreeClassifier(), _classification),
    "tree-entropy": (lambda: DecisionTreeClassifier(criterion="entropy", max_features=5,
                                                    random_state=0), _classification),
    "forest-gini": (lambda: RandomForestClassifier(n_estimators=3, class_weight="balanced",
                                                   random_state=0), _classification),
    "gbt-reg": (lambda: GradientBoostingRegressor(n_estimators=3, max_depth=9, min_samples_leaf=2,
                                                  colsample=0.7, random_state=0), _regression),
    "gbt-clf": (lambda: GradientBoostingClassifier(n_estimators=2, max_leaves=200,
                                                   min_samples_leaf=2, random_state=0),
                _classification),
}


def _row_limits(monkeypatch, rows):
    monkeypatch.setattr(G, "ROW_SEARCH_MAX_ROWS", rows)
    monkeypatch.setattr(G, "ROW_SEARCH_MAX_ROWS_OTHER", rows)


@pytest.mark.parametrize("name", list(MODELS))
def test_models_are_the_same_with_rows_or_histograms(name, monkeypatch):
    make, data = MODELS[name]
    X, y = data()
    if name == "forest-gini":
        y = (y > 0).astype(int)                      # two classes: the vectorised search
    ds = Dataset.from_arrays(X, y, n_shards=3, allow_nan=True)
    _row_limits(monkeypatch, 0)
    by_hist = make().fit(ds)
    _row_limits(monkeypatch, 128)
    by_rows = make().fit(ds)
    assert_same_forest(by_hist.forest_, by_rows.forest_)
    np.testing.assert_array_equal(by_hist.predict(X), by_rows.predict(X))
    if hasattr(by_hist, "oob_score_"):
        assert by_hist.oob_score_ == by_rows.oob_score_
    if by_rows.fit_report_.extra["parallel"] == "data":
        # The deep levels' nodes sent rows, not histograms: fewer bytes moved
        # (feature-parallel workers search their own rows: nothing moves either way).
        moved = [m.fit_report_.bytes_moved for m in (by_hist, by_rows)]
        assert moved[1] < moved[0]


def test_rows_cut_the_bytes_of_a_fully_grown_regression_tree(monkeypatch):
    X, y = _regression(4000)
    _row_limits(monkeypatch, 0)
    by_hist = DecisionTreeRegressor().fit(X, y)
    _row_limits(monkeypatch, 128)
    by_rows = DecisionTreeRegressor().fit(X, y)
    assert_same_forest(by_hist.forest_, by_rows.forest_)
    assert by_rows.fit_report_.bytes_moved * 10 < by_hist.fit_report_.bytes_moved


def test_categorical_features_keep_histograms():
    params = SplitParams("mse", categorical=np.array([False, True]))
    cfg = G.GrowConfig(params)

    class _Edges:
        hist_bins = 256

    grower = G.Grower(None, 1, cfg, _Edges(), 2, 4)
    assert grower.row_limit == 0
    assert G.Grower(None, 1, G.GrowConfig(SplitParams("mse")), _Edges(), 2, 4).row_limit > 0
    # At most the cap, and only while the rows are fewer bytes than the histogram.
    wide = G.Grower(None, 1, G.GrowConfig(SplitParams("mse"), row_search_rows=10**6), _Edges(),
                    2, 4)
    assert wide.row_limit == wide.node_bytes // (2 + 8 * 3)


@pytest.mark.parametrize("enabled", [True, False])
def test_a_fit_leaves_the_garbage_collector_as_it_found_it(enabled):
    import gc

    X, y = _regression(300)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        RandomForestRegressor(n_estimators=2, random_state=0).fit(X, y)
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()
