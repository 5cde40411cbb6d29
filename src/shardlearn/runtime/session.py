"""Starting and stopping workers: ``shardlearn.init`` / ``shardlearn.shutdown``."""

from __future__ import annotations

import threading

from .engines import Engine, make_engine

_lock = threading.RLock()
_current: Session | None = None


class Session:
    """A running group of workers. Also a context manager that shuts it down on exit."""

    def __init__(self, engine: Engine, *, auto: bool = False, max_failures: int = 3,
                 step_timeout: float | None = None, rebalance=True):
        self.engine = engine
        self.rebalance = rebalance
        self.auto = auto
        self.closed = False
        self.max_failures = max_failures
        self.step_timeout = step_timeout

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def n_workers(self) -> int:
        return self.engine.n_workers

    def describe(self) -> dict:
        return self.engine.describe()

    def shutdown(self) -> None:
        global _current
        with _lock:
            if not self.closed:
                self.closed = True
                self.engine.shutdown()
            if _current is self:
                _current = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False

    def __repr__(self):
        return f"Session(engine={self.engine_name!r}, n_workers={self.n_workers})"


def init(engine: str = "local", n_workers: int | None = None, address: str | None = None, *,
         max_failures: int = 3, step_timeout: float | None = None, rebalance=True,
         **engine_kwargs) -> Session:
    """Start (or connect to) workers and make them the current session.

    Parameters
    ----------
    engine : {"local", "ray"}
        ``"local"``: in-process worker threads, zero setup, no copies.
        ``"ray"``: one Ray actor per worker; starts a local Ray cluster when
        ``address`` is None and none is running, else joins ``address``
        (e.g. ``"auto"`` or ``"ray://head:10001"``).
    n_workers : int, optional
        Defaults to the number of CPUs (local) or of cluster CPUs (ray).
    address : str, optional
        Address of an existing Ray cluster.
    max_failures : int, default=3
        Worker failures one fit may recover from (worker replaced, its shards
        reloaded, its state restored, the step re-run); one more raises
        :class:`~shardlearn.runtime.WorkerFailedError` naming worker, shards and step.
    step_timeout : float, optional
        Seconds after which a silent worker counts as hung. By default derived per
        step: 10x the slowest call of that step so far (at least 30 s; 600 s for a
        step's first call). See :class:`~shardlearn.runtime.policies.StepTimeoutPolicy`.
    **engine_kwargs
        Ray only: ``worker_cpus`` (CPUs reserved per actor, default 1) and
        ``ray_init_kwargs`` (passed to ``ray.init``).

    Returns
    -------
    Session
        Usable as a context manager: ``with shardlearn.init("ray", 2): ...``.
    """
    global _current
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}.")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max_failures must be an integer >= 0, got {max_failures!r}.")
    if step_timeout is not None and not step_timeout > 0:
        raise ValueError(f"step_timeout must be a positive number of seconds, got {step_timeout!r}.")
    with _lock:
        if _current is not None:
            _current.shutdown()
        _current = Session(make_engine(engine, n_workers, address, **engine_kwargs),
                           max_failures=max_failures, step_timeout=step_timeout,
                           rebalance=rebalance)
        return _current


def shutdown() -> None:
    """Stop the current session's workers (no-op when none is running)."""
    with _lock:
        if _current is not None:
            _current.shutdown()


def get_session() -> Session:
    """The current session; starts an in-process one (all CPUs) if none is running."""
    global _current
    with _lock:
        if _current is None or _current.closed:
            _current = Session(make_engine("local"), auto=True)
        return _current


def current_session() -> Session | None:
    return _current
