"""Unit tests of shard placement (a pure function: no session, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.runtime.placement import place_by_rows


def _check_partition(placement, n_shards, n_workers):
    assert len(placement) == n_workers
    flat = [i for ids in placement for i in ids]
    assert sorted(flat) == list(range(n_shards)), "every shard must be placed exactly once"
    for ids in placement:
        assert ids == sorted(ids), "each worker's shards are listed in ascending order"


def _loads(placement, rows):
    return [sum(rows[i] for i in ids) for ids in placement]


@pytest.mark.parametrize("n_workers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("rows", [
    [100] * 12,
    [101, 100, 100, 99, 99, 98, 50, 3],
    [1000, 1, 1, 1, 1, 1],
    [5],
    [3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 1],
])
def test_every_shard_once_and_balanced(rows, n_workers):
    placement = place_by_rows(rows, n_workers)
    _check_partition(placement, len(rows), n_workers)
    loads = _loads(placement, rows)
    assert max(loads) - min(loads) <= max(rows)
    assert sum(loads) == sum(rows)


def test_equal_shards_spread_evenly():
    placement = place_by_rows([10] * 9, 3)
    assert [len(ids) for ids in placement] == [3, 3, 3]
    # More workers than shards: each shard on its own worker, the rest idle.
    placement = place_by_rows([10, 10], 4)
    assert sorted(len(ids) for ids in placement) == [0, 0, 1, 1]


def test_deterministic_and_independent_of_input_type():
    rows = [int(r) for r in np.random.default_rng(1).integers(1, 1000, size=40)]
    first = place_by_rows(rows, 5)
    for _ in range(3):
        assert place_by_rows(rows, 5) == first
    assert place_by_rows(tuple(rows), 5) == first
    assert place_by_rows(np.array(rows), 5) == first


def test_ties_broken_by_index_and_worker_id():
    # With identical shards the first (largest-first, then lowest index) shard goes to worker 0.
    placement = place_by_rows([7, 7, 7, 7], 2)
    assert 0 in placement[0]
    assert placement == place_by_rows([7, 7, 7, 7], 2)


def test_speeds_respected():
    rows = [100] * 30
    placement = place_by_rows(rows, 2, speeds=[2.0, 1.0])
    loads = _loads(placement, rows)
    # The 2x faster worker gets about 2x the rows (within one shard).
    assert abs(loads[0] - 2 * loads[1]) <= 2 * max(rows)
    assert loads[0] > loads[1]
    # Only relative speed matters.
    assert place_by_rows(rows, 2, speeds=[20.0, 10.0]) == placement
    # Equal speeds are the same as no speeds.
    assert place_by_rows(rows, 3, speeds=[1.5, 1.5, 1.5]) == place_by_rows(rows, 3)


def test_speeds_three_workers():
    rows = [10] * 60
    placement = place_by_rows(rows, 3, speeds=[1.0, 2.0, 3.0])
    loads = np.array(_loads(placement, rows), dtype=float)
    ideal = np.array([1.0, 2.0, 3.0]) / 6.0 * sum(rows)
    assert np.all(np.abs(loads - ideal) <= max(rows))


@pytest.mark.parametrize("n_workers, speeds, match", [
    (0, None, "n_workers must be >= 1"),
    (-2, None, "n_workers must be >= 1"),
    (2, [1.0], "one positive value per worker"),
    (2, [1.0, 1.0, 1.0], "one positive value per worker"),
    (2, [1.0, 0.0], "one positive value per worker"),
    (2, [1.0, -1.0], "one positive value per worker"),
])
def test_bad_arguments(n_workers, speeds, match):
    with pytest.raises(ValueError, match=match):
        place_by_rows([10, 10, 10], n_workers, speeds=speeds)


def test_no_shards_gives_empty_workers():
    assert place_by_rows([], 3) == [[], [], []]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=60),
    n_workers=st.integers(min_value=1, max_value=12),
    speeds_seed=st.one_of(st.none(), st.integers(min_value=0, max_value=2**31 - 1)),
)
def test_placement_properties(rows, n_workers, speeds_seed):
    speeds = None
    if speeds_seed is not None:
        speeds = list(np.random.default_rng(speeds_seed).uniform(0.5, 4.0, size=n_workers))
    placement = place_by_rows(rows, n_workers, speeds=speeds)
    _check_partition(placement, len(rows), n_workers)
    assert place_by_rows(list(rows), n_workers, speeds=speeds) == placement
    loads = _loads(placement, rows)
    if speeds is None:
        assert max(loads) - min(loads) <= max(rows)
    else:
        # Greedy longest-first: when a worker took its last (smallest) shard, that shard
        # would have finished no earlier on any other worker, whose load only grew since.
        t = [load / s for load, s in zip(loads, speeds)]
        for w in range(n_workers):
            if not placement[w]:
                continue
            r_last = min(rows[i] for i in placement[w])
            for v in range(n_workers):
                assert t[w] <= (loads[v] + r_last) / speeds[v] * (1 + 1e-12)
