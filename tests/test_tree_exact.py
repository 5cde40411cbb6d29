"""Exact histogram sums: values on a power-of-two grid add up to the same bits in any
grouping, so workers fold their shards' histograms before sending one.

The serial answer is the plain (ordered) sum; the grouped answers must equal it.
"""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.algorithms.tree.exact import grid, snap
from shardlearn.data import Dataset
from shardlearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from shardlearn.runtime import Coordinator
from shardlearn.testing import session


@pytest.mark.parametrize("scale", [1e-6, 1.0, 3.7e5])
def test_snapped_sums_do_not_depend_on_order_or_grouping(scale):
    rng = np.random.default_rng(0)
    n = 20_000
    v = rng.standard_normal(n) * scale * rng.exponential(1.0, n)
    q = grid(np.abs(v).max(), n)
    s = snap(v, q)
    assert np.all(np.abs(s - v) <= q / 2)            # rounded to the nearest grid point
    assert np.all(np.remainder(s, q) == 0)
    serial = 0.0
    for x in s:                                      # the serial answer: one by one
        serial += x
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(n)
        cuts = np.sort(np.random.default_rng(seed + 9).choice(n, 7, replace=False))
        groups = [s[perm][a:b].sum() for a, b in zip(np.r_[0, cuts], np.r_[cuts, n])]
        total = 0.0
        for g in groups[::-1]:
            total += g
        assert total == serial


def test_grid_keeps_partial_sums_below_2_to_53_steps():
    for bound, n in [(1.0, 1), (0.25, 400_000), (1e300, 10), (3.0, 2 ** 40)]:
        q = grid(bound, n)
        assert q > 0 and np.log2(q) == np.round(np.log2(q))
        assert bound * n < 2.0 ** 53 * q <= 4 * bound * n
    assert grid(0.0, 10) == 1.0 and grid(np.inf, 10) == 1.0


def _sum_kernel(shard, state, acc):
    x = snap(shard.X[:, 0] * 1.1, 2.0 ** -40)
    return x.sum() if acc is None else acc + x.sum()


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_fold_returns_one_value_per_worker_with_the_serial_total(n_workers):
    X = np.random.default_rng(1).standard_normal((5000, 2))
    ds = Dataset.from_arrays(X, n_shards=5)
    serial = snap(X[:, 0] * 1.1, 2.0 ** -40).sum()
    with session("local", n_workers=n_workers), Coordinator(ds) as coord:
        parts = coord.map(_sum_kernel, fold=True, step="fold")
        assert len(parts) == n_workers
        assert sum(parts) == serial


def _count_kernel(shard, state, acc):
    # (shards folded, rows): the finish step below sees the whole fold once.
    return (1, shard.n_rows) if acc is None else (acc[0] + 1, acc[1] + shard.n_rows)


_count_kernel.fold_finish = lambda acc: ("finished", *acc)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_fold_finish_runs_once_per_worker_after_its_last_shard(engine, request):
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    X = np.random.default_rng(1).standard_normal((5000, 2))
    ds = Dataset.from_arrays(X, n_shards=5)
    with session(engine, n_workers=2), Coordinator(ds) as coord:
        parts = coord.map(_count_kernel, fold=True, step="fold")
        held = [len(ids) for ids in coord.placement if ids]
    assert [p[0] for p in parts] == ["finished"] * len(held)
    assert [p[1] for p in parts] == held and sum(p[2] for p in parts) == 5000


def _weighted_regression():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((600, 5))
    X[rng.random(X.shape) < 0.03] = np.nan
    # A large offset and non-integer weights exercise the gradient and weight grids.
    y = 1e4 + 50 * np.nan_to_num(X[:, 0]) + np.sin(np.nan_to_num(X[:, 1])) + rng.normal(0, 1, 600)
    sw = rng.uniform(0.1, 3.3, 600)
    return X, y, sw


_REF: dict = {}


@pytest.mark.timeout(300)
def test_weighted_regression_bit_identical_across_engines_and_worker_counts(any_session):
    X, y, sw = _weighted_regression()
    ds = Dataset.from_arrays(X, y, sw, n_shards=4, allow_nan=True)
    models = {
        "gbt": GradientBoostingRegressor(n_estimators=6, max_depth=3, subsample=0.7,
                                         random_state=0),
        "gbt_feature": GradientBoostingRegressor(n_estimators=6, max_depth=3, subsample=0.7,
                                                 random_state=0, parallel="feature"),
        "rf": RandomForestRegressor(n_estimators=5, max_depth=6, max_features=0.6,
                                    random_state=0),
    }
    for name, est in models.items():
        est.fit(ds)
        got = {**est.forest_, "__pred": est.predict(X)}
        ref = _REF.setdefault(name.replace("_feature", ""), got)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{name}: {k}")


def test_weighted_regression_fits_like_the_unrounded_answer():
    """The grid moves each value by < 1e-10 of its bound: the fit is the same model
    as scikit-learn's histogram booster on this data, to tolerance."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y, sw = _weighted_regression()
    with session("local", n_workers=2):
        ours = GradientBoostingRegressor(n_estimators=30, max_depth=3, min_samples_leaf=20,
                                         random_state=0).fit(X, y, sample_weight=sw)
    ref = HistGradientBoostingRegressor(max_iter=30, max_depth=3, max_leaf_nodes=None,
                                        min_samples_leaf=20, l2_regularization=0.0,
                                        early_stopping=False).fit(X, y, sample_weight=sw)
    r2_ours = ours.score(X, y, sample_weight=sw)
    r2_ref = ref.score(X, y, sample_weight=sw)
    assert abs(r2_ours - r2_ref) < 0.005


@pytest.mark.parametrize("parallel", ["data", "feature"])
def test_whole_number_class_histograms_in_float32_give_the_float64_forest(
        local_session, monkeypatch, parallel):
    # Unweighted classification: every histogram value and sum is an integer below
    # 2**24, so float32 histograms (half the bytes) must give the same forest as
    # float64 ones, bit for bit; a fractional sample weight keeps float64.
    from shardlearn.algorithms.tree import fit as tree_fit
    from shardlearn.ensemble import RandomForestClassifier
    from shardlearn.testing import assert_same_forest

    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, 6))
    X[::13, 2] = np.nan
    y = (X[:, 0] + np.sin(3 * X[:, 1]) + 0.3 * rng.normal(size=4000) > 0).astype(int) + (X[:, 3] > 1)
    est = RandomForestClassifier(n_estimators=6, max_depth=8, random_state=0, parallel=parallel)
    f32 = est.fit(X, y)
    assert f32.fit_report_.extra["hist_dtype"] == "float32"
    forest32 = f32.forest_
    monkeypatch.setattr(tree_fit, "FLOAT32_EXACT_LIMIT", 0.0)
    f64 = RandomForestClassifier(n_estimators=6, max_depth=8, random_state=0,
                                 parallel=parallel).fit(X, y)
    assert f64.fit_report_.extra["hist_dtype"] == "float64"
    assert_same_forest(forest32, f64.forest_)
    monkeypatch.undo()
    sw = np.full(4000, 1.0)
    sw[::7] = 0.5
    weighted = RandomForestClassifier(n_estimators=2, max_depth=4, random_state=0,
                                      parallel=parallel).fit(X, y, sample_weight=sw)
    assert weighted.fit_report_.extra["hist_dtype"] == "float64"


def test_narrow_if_exact_keeps_every_bit_or_keeps_the_array():
    from shardlearn.algorithms.tree.exact import narrow_if_exact

    rng = np.random.default_rng(5)
    q = 2.0 ** -17
    exact = rng.integers(-(2 ** 23), 2 ** 23, size=(3, 4, 256, 3)).astype(np.float64) * q
    exact[0, 0, 0, 0] = -0.0
    small = narrow_if_exact(exact)
    assert small.dtype == np.float32 and small.shape == exact.shape
    wide = small.astype(np.float64)
    assert np.array_equal(wide.view(np.int64), exact.view(np.int64))    # bit for bit, -0.0 too
    one_too_fine = exact.copy()
    one_too_fine[2, 3, 255, 2] = (2 ** 24 + 1) * q                       # 25 significant bits
    assert narrow_if_exact(one_too_fine) is one_too_fine
    assert narrow_if_exact(exact[:, :, ::2]) is not None                 # strided: kept as is
    assert narrow_if_exact(exact[:, :, ::2]).dtype == np.float64


def test_count_histograms_narrow_to_the_smallest_unsigned_type_their_bound_allows():
    from shardlearn.algorithms.tree.exact import narrow_if_exact

    rng = np.random.default_rng(6)
    counts = rng.integers(0, 256, size=(3, 4, 256, 2)).astype(np.float32)
    small = narrow_if_exact(counts, whole_bound=255.0)
    assert small.dtype == np.uint8 and np.array_equal(small.astype(np.float32), counts)
    counts[1, 2, 3, 0] = 65535.0
    mid = narrow_if_exact(counts, whole_bound=65535.0)
    assert mid.dtype == np.uint16 and np.array_equal(mid.astype(np.float32), counts)
    assert narrow_if_exact(counts, whole_bound=65536.0) is counts       # too large: float32
    assert narrow_if_exact(counts) is counts                            # no bound: float32
    assert narrow_if_exact(counts[:, :, ::2], whole_bound=9.0).dtype == np.float32  # strided


def _wide_and_narrow_fits(est, X, y, monkeypatch):
    """``est`` fitted in-process as is, then as if results crossed processes (where
    histograms travel narrowed): both fits, and the same trees bit for bit."""
    from shardlearn.runtime.engines.local import LocalEngine
    from shardlearn.testing import assert_same_forest

    wide = est.fit(X, y)
    monkeypatch.setattr(LocalEngine, "moves_results", True, raising=False)
    narrow = type(est)(**est.get_params()).fit(X, y)
    assert_same_forest(wide.forest_, narrow.forest_)
    np.testing.assert_array_equal(wide.predict_proba(X), narrow.predict_proba(X))
    return wide, narrow


def test_count_histograms_narrowed_on_the_wire_give_the_same_forest(local_session, monkeypatch):
    # A forest's class-count histograms travel as uint8/uint16 where results cross
    # processes: the same trees bit for bit, and far fewer bytes moved.
    from shardlearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(12)
    X = rng.normal(size=(6000, 6))
    X[::13, 2] = np.nan
    y = (X[:, 0] + X[:, 1] ** 2 + 0.5 * rng.normal(size=6000) > 0.8).astype(int)
    est = RandomForestClassifier(n_estimators=6, max_depth=7, random_state=0)
    wide, narrow = _wide_and_narrow_fits(est, X, y, monkeypatch)
    assert narrow.fit_report_.bytes_moved < 0.6 * wide.fit_report_.bytes_moved


def test_histograms_narrowed_on_the_wire_give_the_same_boosted_model(local_session, monkeypatch):
    # Engines whose results cross processes get float32 histograms where that is
    # exact: the same trees bit for bit, and fewer bytes moved.
    from shardlearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(11)
    X = rng.normal(size=(6000, 5))
    X[::17, 1] = np.nan
    y = (X[:, 0] - X[:, 2] ** 2 + 0.5 * rng.normal(size=6000) > -0.5).astype(int)
    est = GradientBoostingClassifier(n_estimators=8, max_depth=4, random_state=0)
    wide, narrow = _wide_and_narrow_fits(est, X, y, monkeypatch)
    assert narrow.fit_report_.bytes_moved < 0.9 * wide.fit_report_.bytes_moved


def test_narrow_parts_are_summed_in_float64():
    from shardlearn.algorithms.tree.grower import _sum_parts

    a = np.full((2, 3), 2.0 ** 24, dtype=np.float32)
    b = np.full((2, 3), 1.0, dtype=np.float32)               # 2**24 + 1: not a float32
    out = np.empty((2, 3))
    _sum_parts([a, b], out=out)
    assert np.all(out == 2.0 ** 24 + 1)
    assert np.all(_sum_parts([a, b], dtype="float64") == 2.0 ** 24 + 1)
    assert np.all(_sum_parts([a, b, b], dtype="float64") == 2.0 ** 24 + 2)
