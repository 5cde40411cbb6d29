"""Distributed setup and teardown for tests, as context managers."""

from __future__ import annotations

import contextlib
import os

#: CPUs the shared test cluster advertises: enough for 3-4 one-CPU actors even
#: on a 2-core machine (actors mostly wait; Ray only counts reservations).
TEST_CLUSTER_CPUS = 4


@contextlib.contextmanager
def local_ray_cluster(num_cpus: int = TEST_CLUSTER_CPUS, pythonpath=()):
    """Start one local Ray cluster for the duration of the block and shut it down after.

    Sessions created inside with ``engine="ray"`` reuse it instead of starting their own.
    ``pythonpath`` lists extra import directories for the workers (e.g. the tests
    folder, so kernels defined in test modules can be imported by the actors).
    """
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = False
    if not ray.is_initialized():
        runtime_env = None
        if pythonpath:
            paths = [str(p) for p in pythonpath] + [os.environ.get("PYTHONPATH", "")]
            runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}}
        from ..runtime.engines.ray_engine import system_config

        # The settings the Ray engine gives a cluster it starts, so tests run as users do.
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=runtime_env, _system_config=system_config())
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def session(engine: str = "local", n_workers: int = 2, **kwargs):
    """``shardlearn.init`` for a block; the workers are stopped when it exits."""
    from ..runtime import init

    s = init(engine, n_workers=n_workers, **kwargs)
    try:
        yield s
    finally:
        s.shutdown()
