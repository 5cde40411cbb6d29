"""Shared fixtures: one local Ray cluster per test session, sessions per engine."""

from __future__ import annotations

from pathlib import Path

import pytest

import shardlearn
from shardlearn.testing import local_ray_cluster, session


@pytest.fixture(scope="session")
def ray_cluster():
    """The one local Ray cluster of this test session (started on first use)."""
    # Kernels defined in test modules must be importable by the Ray workers.
    with local_ray_cluster(pythonpath=[Path(__file__).parent]) as ray:
        yield ray


@pytest.fixture(autouse=True)
def _no_leftover_session():
    yield
    shardlearn.shutdown()


@pytest.fixture(params=[("local", 1), ("local", 2), ("local", 3), ("ray", 1), ("ray", 2), ("ray", 3)],
                ids=lambda p: f"{p[0]}-{p[1]}w")
def any_session(request):
    """A session on each engine with 1, 2 and 3 workers."""
    engine, n = request.param
    if engine == "ray":
        request.getfixturevalue("ray_cluster")
    with session(engine, n_workers=n) as s:
        yield s


@pytest.fixture
def ray_session(ray_cluster):
    """Two Ray workers on the shared cluster."""
    with session("ray", n_workers=2) as s:
        yield s


@pytest.fixture
def local_session():
    with session("local", n_workers=2) as s:
        yield s


@pytest.fixture
def local_two_workers():
    """Two in-process workers, with reference libraries (scikit-learn, XGBoost) held to
    one thread each: their OpenMP pools would oversubscribe a shared machine."""
    from threadpoolctl import threadpool_limits

    with session("local", n_workers=2) as s, threadpool_limits(limits=1):
        yield s
