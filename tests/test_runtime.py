"""The Coordinator and sessions on every engine and worker count.

Kernels are top-level functions of this module (Ray ships them by reference).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import shardlearn
from shardlearn.data import Dataset
from shardlearn.runtime import Coordinator, KernelError, current_session, get_session, steps_started
from shardlearn.testing import TEST_CLUSTER_CPUS, session

pytestmark = pytest.mark.timeout(180)


# -- kernels --------------------------------------------------------------------------
def k_index(shard, state):
    return shard.index


def k_first_value(shard, state):
    return shard.index, shard.n_rows, float(shard.X[0, 0])


def k_column_sums(shard, state):
    return shard.X.sum(axis=0)


def k_set_state(shard, state, tag):
    state["tag"] = (tag, shard.index)
    state["count"] = state.get("count", 0) + 1


def k_get_state(shard, state):
    return state.get("tag"), state.get("count")


def k_fail_on(shard, state, bad):
    state["touched"] = True
    if shard.index == bad:
        raise ZeroDivisionError(f"boom on shard {bad}")
    return shard.index


def k_read_args(shard, state, small, big, scalar):
    return float(small @ big[: small.shape[0]]), big.shape, float(big[shard.index]), scalar


def k_first_column(shard, state):
    return shard.X[:, 0].copy()


def held_keys(engine):
    done = engine.gather([engine.submit(w, "held_keys") for w in range(engine.n_workers)])
    assert all(c.error is None for c in done)
    return [c.value for c in done]


def _order_sensitive(a, b):
    # Neither commutative nor associative: any other fold order changes the bits.
    return a * 0.75 + b


def _dataset(n_rows=210, n_features=3, n_shards=7, seed=0):
    rng = np.random.default_rng(seed)
    # Magnitudes spread over 16 decades: float sums depend on their order.
    X = rng.standard_normal((n_rows, n_features)) * 10.0 ** rng.uniform(-8, 8, (n_rows, n_features))
    return X, Dataset.from_arrays(X, n_shards=n_shards)


# -- map / reduce / broadcast on every engine ------------------------------------------
def test_map_order_broadcast_and_report(any_session):
    X, ds = _dataset()
    eng = any_session.engine
    started = steps_started()
    with Coordinator(ds, name="t") as coord:
        assert coord.map(k_index) == list(range(ds.n_shards))
        firsts = coord.map(k_first_value)
        for i, (idx, n, x0) in enumerate(firsts):
            assert idx == i and n == ds.shards[i].n_rows
            assert x0 == X[int(ds.boundaries[i]), 0]
        small = np.arange(5.0)
        big = np.linspace(0.0, 1.0, 20_000)  # 160 kB: stored once, not sent per worker
        handle = coord.broadcast(small)
        got = coord.map(k_read_args, handle, big, 7)
        for i, (dot, shape, bi, scalar) in enumerate(got):
            assert dot == float(small @ big[:5]) and shape == big.shape
            assert bi == big[i] and scalar == 7
        cols = coord.map(k_first_column)
        cols = coord.map(k_first_column, step="again")
        assert np.array_equal(np.concatenate(cols), X[:, 0])
        report = coord.report
    assert steps_started() >= started + 6  # load + 5 maps
    assert report.engine == eng.name and report.n_workers == eng.n_workers
    assert report.n_shards == ds.n_shards and report.n_rows == ds.n_rows
    assert sum(w.shards for w in report.workers) == ds.n_shards
    assert sum(w.rows for w in report.workers) == ds.n_rows
    for w in report.workers:
        assert w.shards >= 1  # 7 shards, at most 3 workers
        assert w.compute_s >= 0 and w.communication_s >= 0 and w.waiting_s >= 0
        assert w.bytes_in >= w.rows * ds.n_features * 8  # its shards were shipped to it
        assert w.bytes_out >= 2 * w.rows * 8  # two maps returned one float per row
    assert report.steps["load"].calls == 1
    assert report.steps["k_index"].calls == 1 and report.steps["again"].calls == 1
    assert report.steps["k_read_args"].bytes_in >= big.nbytes
    assert report.bytes_moved == sum(w.bytes_in + w.bytes_out for w in report.workers)
    assert all(s.wall_s >= 0 for s in report.steps.values())
    assert held_keys(eng) == [[]] * eng.n_workers


def test_reduce_bit_identical(any_session):
    X, ds = _dataset(seed=3)
    parts = [X[int(ds.boundaries[i]):int(ds.boundaries[i + 1])].sum(axis=0)
             for i in range(ds.n_shards)]
    expected = parts[0].copy()
    for p in parts[1:]:
        expected = _order_sensitive(expected, p)
    other = parts[-1].copy()
    for p in parts[-2::-1]:
        other = _order_sensitive(other, p)
    assert other.tobytes() != expected.tobytes(), "the test data must be order-sensitive"
    plain = parts[0].copy()
    for p in parts[1:]:
        plain = plain + p
    with Coordinator(ds) as coord:
        got = coord.reduce(k_column_sums, combine=_order_sensitive)
        default = coord.reduce(k_column_sums)
        again = coord.reduce(k_column_sums, combine=_order_sensitive)
    # The same bits as a shard-ordered fold on the driver, on any engine and worker count.
    assert got.tobytes() == expected.tobytes()
    assert again.tobytes() == expected.tobytes()
    assert default.tobytes() == plain.tobytes()


def test_state_persists_and_is_released(any_session):
    _, ds = _dataset(n_shards=5)
    eng = any_session.engine
    with Coordinator(ds, name="stateful") as coord:
        coord.map(k_set_state, "a")
        assert coord.map(k_get_state) == [(("a", i), 1) for i in range(5)]
        coord.map(k_set_state, "b")
        assert coord.map(k_get_state) == [(("b", i), 2) for i in range(5)]
        keys = held_keys(eng)
        for w, ids in enumerate(coord.placement):
            assert keys[w] == ([coord.key] if ids else [])
        # A second fit on the same data has its own, empty state.
        with Coordinator(ds, name="other") as other:
            assert other.key != coord.key
            assert other.map(k_get_state) == [(None, None)] * 5
        assert coord.map(k_get_state) == [(("b", i), 2) for i in range(5)]
    assert held_keys(eng) == [[]] * eng.n_workers
    if eng.name == "local":
        assert all(core.held_keys() == [] for core in eng.cores)
        assert all(core.states == {} for core in eng.cores)


def test_kernel_error_names_step_worker_shard_and_releases(any_session):
    _, ds = _dataset(n_shards=6)
    eng = any_session.engine
    with pytest.raises(KernelError) as info:
        with Coordinator(ds) as coord:
            owner = coord.owner[4]
            coord.map(k_fail_on, 4, step="risky")
    err = info.value
    assert err.step == "risky" and err.worker == owner and err.shard == 4
    assert "ZeroDivisionError" in err.cause and "boom on shard 4" in err.cause
    assert "'risky'" in str(err) and f"worker {owner}" in str(err) and "shard 4" in str(err)
    assert held_keys(eng) == [[]] * eng.n_workers
    # The workers survive a kernel error: the next fit runs.
    with Coordinator(ds) as coord:
        assert coord.map(k_fail_on, -1) == list(range(6))
        with pytest.raises(KernelError, match="k_fail_on"):
            coord.map(k_fail_on, 0)
    assert held_keys(eng) == [[]] * eng.n_workers


def test_map_needs_open_coordinator(local_session):
    _, ds = _dataset()
    coord = Coordinator(ds)
    with pytest.raises(RuntimeError, match="context manager"):
        coord.map(k_index)
    with coord:
        coord.map(k_index)
    with pytest.raises(RuntimeError, match="not open"):
        coord.map(k_index)


def test_more_workers_than_shards():
    _, ds = _dataset(n_rows=20, n_shards=2)
    with session("local", n_workers=3) as s:
        with Coordinator(ds) as coord:
            assert sorted(len(ids) for ids in coord.placement) == [0, 1, 1]
            assert coord.map(k_index) == [0, 1]
            idle = [w for w, ids in enumerate(coord.placement) if not ids][0]
            assert coord.report.workers[idle].rows == 0
        assert all(core.held_keys() == [] for core in s.engine.cores)


# -- sessions -------------------------------------------------------------------------
def test_init_context_manager_shuts_down():
    with shardlearn.init("local", n_workers=2) as s:
        assert current_session() is s and s.n_workers == 2 and not s.closed
        cores = s.engine.cores
        assert len(cores) == 2
    assert s.closed and current_session() is None
    assert s.engine.cores == []
    assert all(p._shutdown for p in s.engine._pools)


def test_init_twice_replaces_session():
    a = shardlearn.init("local", n_workers=1)
    b = shardlearn.init("local", n_workers=3)
    assert a.closed and not b.closed
    assert current_session() is b and get_session() is b
    _, ds = _dataset(n_shards=3)
    with Coordinator(ds) as coord:
        assert coord.engine is b.engine and coord.report.n_workers == 3
    shardlearn.shutdown()
    assert b.closed and current_session() is None
    shardlearn.shutdown()  # no-op


def test_get_session_starts_local_when_none():
    shardlearn.shutdown()
    s = get_session()
    assert s.auto and s.engine_name == "local" and current_session() is s


@pytest.mark.parametrize("kwargs, match", [
    ({"engine": "local", "address": "ray://head:10001"}, "address= is only for engine='ray'"),
    ({"engine": "spark"}, "Unknown engine 'spark'"),
    ({"engine": "local", "n_workers": 0}, "positive integer"),
    ({"engine": "local", "n_workers": 2.0}, "positive integer"),
])
def test_init_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shardlearn.init(**kwargs)
    assert current_session() is None


@pytest.mark.timeout(120)
def test_ray_reuses_running_cluster(ray_cluster):
    ray = ray_cluster
    node = ray.get_runtime_context().get_node_id()
    with shardlearn.init("ray", n_workers=2) as s:
        eng = s.engine
        assert eng.name == "ray" and not eng.started_ray
        assert ray.cluster_resources()["CPU"] == TEST_CLUSTER_CPUS
        assert ray.get_runtime_context().get_node_id() == node
        assert len(set(eng.pids)) == 2 and os.getpid() not in eng.pids
        assert eng.describe()["address"] == "existing"
    assert ray.is_initialized(), "a session must not stop a cluster it did not start"
    assert ray.get_runtime_context().get_node_id() == node


@pytest.mark.timeout(120)
def test_ray_actors_start_their_numba_runtime_in_the_background(ray_cluster):
    # A fresh actor loads numba and initialises LLVM on a thread of its own at start,
    # not inside the first kernel it runs.
    ray = ray_cluster
    with shardlearn.init("ray", n_workers=2) as s:
        eng = s.engine
        assert ray.get([a.numba_warm.remote(60.0) for a in eng.actors]) == [True, True]
    from shardlearn.runtime import warmup

    t = warmup.start_in_background()
    t.join(60)
    assert warmup.is_warm() and "numba" in sys.modules


def test_ray_clusters_we_start_inline_results_up_to_a_mebibyte(monkeypatch):
    from shardlearn.runtime.engines import ray_engine

    monkeypatch.delenv("RAY_max_direct_call_object_size", raising=False)
    assert ray_engine.system_config() == {"max_direct_call_object_size": 1 << 20}
    monkeypatch.setenv("RAY_max_direct_call_object_size", "5000")
    assert ray_engine.system_config() == {}       # the user's setting is left alone


def _rows_times(shard, state, n):
    return np.full(n, float(shard.n_rows)) * np.arange(n)


@pytest.mark.timeout(120)
def test_results_under_and_over_the_inline_size_come_back_from_ray_intact(ray_cluster):
    # 0.5 MiB is inlined in the task reply, 2 MiB goes through the object store.
    X = np.zeros((3000, 2))
    with shardlearn.init("ray", n_workers=2), Coordinator(Dataset.from_arrays(X, n_shards=3)) as c:
        for n in (65536, 262144):
            out = c.map(_rows_times, n)
            for got, rows in zip(out, (1000, 1000, 1000)):
                np.testing.assert_array_equal(got, rows * np.arange(n, dtype=np.float64))


@pytest.mark.timeout(120)
def test_ray_too_many_workers_clear_error_and_cluster_survives(ray_cluster):
    ray = ray_cluster
    node = ray.get_runtime_context().get_node_id()
    with pytest.raises(ValueError) as info:
        shardlearn.init("ray", n_workers=TEST_CLUSTER_CPUS + 1)
    msg = str(info.value)
    assert f"of {TEST_CLUSTER_CPUS:g}" in msg and f"{TEST_CLUSTER_CPUS + 1} workers" in msg
    assert "fewer workers" in msg
    assert current_session() is None
    assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node
    # The cluster still works, with every CPU. Back-to-back sessions get them all: the
    # actors of a session that just ended free their CPUs asynchronously, and a new
    # session waits for them instead of calling the cluster full.
    _, ds = _dataset(n_shards=5)
    for _ in range(2):
        with shardlearn.init("ray", n_workers=TEST_CLUSTER_CPUS) as s:
            with Coordinator(ds) as coord:
                assert coord.map(k_index) == list(range(5))
        assert s.closed and ray.is_initialized()
