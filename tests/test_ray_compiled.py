"""The Ray engine's compiled-graph path (``SHARDLEARN_RAY_COMPILED=1``): used for
repeated calls, same answers, and a killed, hung or failing worker handled as on
ordinary actor tasks."""

from __future__ import annotations

import numpy as np
import pytest

import shardlearn
from shardlearn.data import Dataset
from shardlearn.runtime import Coordinator, FaultSpec
from shardlearn.runtime.engines import ray_engine
from shardlearn.testing import inject_faults, session

N_STEPS = ray_engine.COMPILED_AFTER_CALLS + 8


@pytest.fixture(autouse=True)
def compiled_on(monkeypatch):
    monkeypatch.setenv(ray_engine.COMPILED_ENV, "1")


def remember_column_sums(shard, state):
    state["sums"] = shard.X.sum(axis=0)
    state["rows"] = shard.n_rows
    return shard.n_rows


def scaled_sums(shard, state, k):
    # Changes per-shard state too: a call run twice would show in the answers.
    state["calls"] = state.get("calls", 0) + 1
    return state["sums"] * k + state["rows"] + state["calls"]


def fails_at_seven(shard, state, k):
    if k == 7:
        raise ValueError("boom at seven")
    return shard.n_rows


def _data():
    X = np.random.default_rng(3).normal(size=(4000, 3))
    return Dataset.from_arrays(X, n_shards=6)


def _run():
    with Coordinator(_data()) as c:
        rows = c.map(remember_column_sums, restore=True)
        out = [c.map(scaled_sums, float(k), restore=True) for k in range(N_STEPS)]
        return rows, out, c.report


def _reference():
    with session("local", n_workers=1):
        return _run()


def _same(a, b):
    return all(np.array_equal(x, y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


@pytest.mark.timeout(240)
def test_repeated_calls_go_through_the_compiled_graph_with_the_same_answers(ray_cluster):
    ref_rows, ref_out, _ = _reference()
    with session("ray", n_workers=2) as s:
        rows, out, _ = _run()
        assert s.engine.compiled_calls >= 2 * (N_STEPS - ray_engine.COMPILED_AFTER_CALLS)
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_compiled_graph_is_off_unless_asked_for(ray_cluster, monkeypatch):
    monkeypatch.delenv(ray_engine.COMPILED_ENV)
    with session("ray", n_workers=2) as s:
        _run()
        assert s.engine.compiled_calls == 0


@pytest.mark.timeout(240)
def test_sigkill_during_a_compiled_call_recovers_the_same_answers(ray_cluster):
    ref_rows, ref_out, _ = _reference()
    call = ray_engine.COMPILED_AFTER_CALLS + 3
    with session("ray", n_workers=2) as s:
        pid = s.engine.pids[1]
        with inject_faults(FaultSpec(1, "kill", step="scaled_sums", call=call)):
            rows, out, report = _run()
        assert s.engine.pids[1] != pid
        assert s.engine.compiled_calls > 0
    assert report.failures_recovered == 1
    # The surviving worker had run the call already: it must not run it twice.
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_hung_worker_in_a_compiled_call_is_replaced(ray_cluster):
    ref_rows, ref_out, _ = _reference()
    call = ray_engine.COMPILED_AFTER_CALLS + 3
    with session("ray", n_workers=2, step_timeout=3.0) as s:
        with inject_faults(FaultSpec(0, "hang", step="scaled_sums", call=call)):
            rows, out, report = _run()
        assert s.engine.compiled_calls > 0
    assert report.failures_recovered == 1
    assert rows == ref_rows and _same(out, ref_out)


@pytest.mark.timeout(240)
def test_kernel_error_in_a_compiled_call_is_the_kernel_error(ray_cluster):
    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            for k in range(7):
                c.map(fails_at_seven, k)
            assert s.engine.compiled_calls == 0 or k < ray_engine.COMPILED_AFTER_CALLS
            for k in range(8, 8 + ray_engine.COMPILED_AFTER_CALLS):
                c.map(fails_at_seven, k)
            assert s.engine.compiled_calls > 0
            with pytest.raises(shardlearn.runtime.KernelError, match="boom at seven"):
                c.map(fails_at_seven, 7)
            assert c.failures == 0
            assert sum(c.map(fails_at_seven, 9)) == 4000      # the graph still works


def big_result(shard, state, n):
    return np.zeros(n)


@pytest.mark.timeout(240)
def test_calls_with_large_results_stay_on_actor_tasks(ray_cluster):
    # The object store moves tens of MB faster than graph channels.
    big = ray_engine.COMPILED_MAX_RESULT_BYTES // 8 + 1
    with session("ray", n_workers=2) as s:
        with Coordinator(_data()) as c:
            for _ in range(ray_engine.COMPILED_AFTER_CALLS + 4):
                c.map(big_result, 10)
            small = s.engine.compiled_calls
            assert small > 0
            for _ in range(4):
                out = c.map(big_result, big)
            assert s.engine.compiled_calls == small + 2       # only the first big call
            assert all(o.shape == (big,) for o in out)


@pytest.mark.timeout(240)
def test_the_compiled_graph_ends_with_the_fit(ray_cluster):
    # Its channels busy-poll: idle actors between fits must not keep a core busy.
    with session("ray", n_workers=2) as s:
        _run()
        assert s.engine.compiled_calls > 0
        assert s.engine._compiled is None and not s.engine._stale
        before = s.engine.compiled_calls
        _run()                                  # a new fit compiles its own graph
        assert s.engine.compiled_calls > before
