"""The Coordinator: places shards on workers and offers map / reduce / broadcast to algorithms."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable

from ..comm.accounting import payload_nbytes
from ..comm.reduce import ordered_reduce
from ..data.dataset import Dataset
from .errors import KernelError, WorkerLostError
from .metrics import RuntimeReport, WorkerTotals
from .placement import place_by_rows

#: Arguments larger than this are stored once (Ray object store) and read by
#: every worker, instead of being serialised once per worker.
BROADCAST_THRESHOLD_BYTES = 64 * 1024

_step_counter = itertools.count()


def steps_started() -> int:
    """How many worker steps (data loads included) any Coordinator has started.

    Tests read it to prove that validation fails before any worker runs.
    """
    return _steps_started[0]


_steps_started = [0]


class Broadcast:
    """A value stored once and read by every worker (a Ray object ref, or a shared reference)."""

    def __init__(self, handle, nbytes: int):
        self.handle = handle
        self.nbytes = nbytes


class Coordinator:
    """Runs worker kernels over the shards of one dataset for one fit.

    Use as a context manager: entering places and ships the shards; leaving
    (normally or on error) frees the shards and per-shard state on every worker.

    Parameters
    ----------
    dataset : Dataset
    session : Session, optional
        Defaults to the current session (an in-process one is started if none).
    name : str
        Used in reports and error messages.
    """

    def __init__(self, dataset: Dataset, session=None, name: str = "fit"):
        from .session import get_session

        self.dataset = dataset
        self.session = session or get_session()
        self.engine = self.session.engine
        self.name = name
        self.key = f"{name}-{dataset.id}-{uuid.uuid4().hex[:8]}"
        rows = [s.n_rows for s in dataset.shards]
        self.placement = place_by_rows(rows, self.engine.n_workers)
        self.owner = {i: w for w, ids in enumerate(self.placement) for i in ids}
        self.report = RuntimeReport(
            engine=self.engine.name, n_workers=self.engine.n_workers,
            n_shards=dataset.n_shards, n_rows=dataset.n_rows,
            workers=[WorkerTotals(w, shards=len(ids), rows=sum(rows[i] for i in ids))
                     for w, ids in enumerate(self.placement)],
        )
        self._scope = None
        self._open = False

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> Coordinator:
        self._scope = self.engine.fit_scope()
        self._scope.__enter__()
        try:
            self._ship_shards()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _ship_shards(self):
        _steps_started[0] += 1
        t0 = time.perf_counter()
        pending, sent = [], {}
        for w, ids in enumerate(self.placement):
            if not ids:
                continue
            on_worker = [i for i in ids if self.dataset.shards[i].source.load_on_worker]
            on_driver = [i for i in ids if i not in set(on_worker)]
            nbytes = 0
            if on_driver:
                handles = []
                for i in on_driver:
                    shard = self.dataset.load_shard(i)
                    nbytes += shard.nbytes
                    handles.append(self.engine.put(shard))
                pending.append(self.engine.submit(w, "load", self.key, *handles))
            if on_worker:
                srcs = [(i, self.dataset.shards[i].source) for i in on_worker]
                pending.append(self.engine.submit(w, "load_sources", self.key, *srcs))
            sent[w] = nbytes
        self._open = True
        done = self.engine.gather(pending)
        self._raise_errors("load", done)
        wall = time.perf_counter() - t0
        self.report.load_s += wall
        self.report.record("load", wall, {w: (0.0, wall, 0.0, b, 0) for w, b in sent.items()})

    def close(self):
        if self._open:
            self._open = False
            try:
                self.engine.gather([self.engine.submit(w, "release", self.key)
                                    for w in range(self.engine.n_workers)], timeout=30)
            except Exception:  # noqa: BLE001 - a dead worker has nothing left to free
                pass
        if self._scope is not None:
            self._scope.__exit__(None, None, None)
            self._scope = None

    # -- verbs --------------------------------------------------------------------
    def broadcast(self, value) -> Broadcast:
        """Store ``value`` once for all workers; pass the result to :meth:`map`."""
        return Broadcast(self.engine.put(value), payload_nbytes(value))

    def map(self, kernel: Callable, *args, step: str | None = None) -> list:
        """``[kernel(shard, state, *args) for shard in shards]``, run where each shard lives.

        Results come back in shard order whatever order workers finish in.
        """
        if not self._open:
            raise RuntimeError("Coordinator is not open; use it as a context manager.")
        name = step or getattr(kernel, "__name__", "step")
        _steps_started[0] += 1
        call_args, arg_bytes = [], 0
        for a in args:
            if isinstance(a, Broadcast):
                call_args.append(a.handle)
                arg_bytes += a.nbytes
                continue
            nb = payload_nbytes(a)
            arg_bytes += nb
            call_args.append(self.engine.put(a) if nb > BROADCAST_THRESHOLD_BYTES else a)
        t0 = time.perf_counter()
        pending = [self.engine.submit(w, "run", self.key, name, kernel, ids, *call_args)
                   for w, ids in enumerate(self.placement) if ids]
        done = self.engine.gather(pending)
        t_end = time.perf_counter()
        self._raise_errors(name, done)
        results: list = [None] * self.dataset.n_shards
        per_worker = {}
        for c in done:
            values, times, in_worker = c.value
            for i, v in zip(self.placement[c.worker], values):
                results[i] = v
            round_trip = c.done_at - t0
            compute = float(sum(times))
            per_worker[c.worker] = (
                compute, max(0.0, round_trip - compute), max(0.0, (t_end - t0) - round_trip),
                arg_bytes, payload_nbytes(values),
            )
        self.report.record(name, t_end - t0, per_worker)
        return results

    def reduce(self, kernel: Callable, *args, combine: Callable | None = None,
               step: str | None = None):
        """Run ``kernel`` on every shard and fold the results in shard order.

        ``combine(a, b)`` defaults to elementwise addition of arrays, scalars and
        tuples/lists/dicts of them.
        """
        return ordered_reduce(self.map(kernel, *args, step=step), combine)

    # -- errors -------------------------------------------------------------------
    def _raise_errors(self, step, done):
        for c in done:
            if c.error is None:
                continue
            err = c.error
            if isinstance(err, KernelError):
                raise err
            if isinstance(err, WorkerLostError):
                raise WorkerLostError(step, c.worker, err.cause) from None
            if isinstance(err, TimeoutError):
                raise WorkerLostError(step, c.worker, str(err)) from None
            raise KernelError(step, c.worker, None, f"{type(err).__name__}: {err}") from err
