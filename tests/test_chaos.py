"""A bounded chaos run: workers SIGKILLed at random steps across several estimators.

Every fit must end with the fault-free model, and nothing may leak afterwards:
no actor process and no worker thread outlives its session.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from shardlearn.data import Dataset
from shardlearn.runtime import FaultSpec
from shardlearn.testing import inject_faults, make_logistic, session


def _estimators():
    from shardlearn.cluster import KMeans
    from shardlearn.decomposition import PCA
    from shardlearn.linear_model import LogisticRegression

    return [
        (lambda: LogisticRegression(tol=1e-8, max_iter=100), "coef_"),
        (lambda: KMeans(n_clusters=4, n_init=1, random_state=1), "cluster_centers_"),
        (lambda: PCA(n_components=3, svd_solver="randomized", random_state=2), "components_"),
    ]


def _random_kills(rng, n_workers, max_kills=3, max_call=12):
    """Up to ``max_kills`` kills: a worker, which of its incarnations, and at which call."""
    specs, attempts = [], {}
    for _ in range(int(rng.integers(1, max_kills + 1))):
        w = int(rng.integers(n_workers))
        specs.append(FaultSpec(w, "kill", step=None, call=int(rng.integers(0, max_call)),
                               attempt=attempts.get(w, 0)))
        attempts[w] = attempts.get(w, 0) + 1
    return specs


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_dead(pids, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_random_kills_change_no_model_and_leak_nothing(ray_cluster):
    X, y = make_logistic(4000, 8, random_state=21)
    ds = Dataset.from_arrays(X, y, n_shards=8)
    with session("local", n_workers=1):
        reference = [getattr(make().fit(ds), attr) for make, attr in _estimators()]
    rng = np.random.default_rng(2026)
    recovered = 0
    started_pids = []
    for round_ in range(3):
        with session("ray", n_workers=3) as s:
            for (make, attr), ref in zip(_estimators(), reference):
                specs = _random_kills(rng, 3)
                with inject_faults(*specs):
                    model = make().fit(ds)
                assert np.array_equal(getattr(model, attr), ref), (round_, specs)
                assert model.fit_report_.failures_recovered <= len(specs)
                recovered += model.fit_report_.failures_recovered
            started_pids += s.engine.all_pids
    assert recovered >= 3, "the chaos run killed almost nothing"
    assert _wait_dead(started_pids) == []                      # no actor process leaked
    # In-process workers: a chaos round on threads leaves no thread behind either.
    with session("local", n_workers=3):
        for (make, attr), ref in zip(_estimators(), reference):
            with inject_faults(*_random_kills(rng, 3)):
                assert np.array_equal(getattr(make().fit(ds), attr), ref)
    deadline = time.monotonic() + 10
    while any(t.name.startswith("shardlearn-w") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "worker threads leaked"
        time.sleep(0.1)
