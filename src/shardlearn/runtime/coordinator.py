"""The Coordinator: places shards on workers and offers map / reduce / broadcast to algorithms."""

from __future__ import annotations

import itertools
import pickle
import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable

from ..comm.accounting import payload_nbytes
from ..comm.reduce import ordered_reduce
from ..data.dataset import Dataset
from .balancing import Move, RebalancePolicy, relative_costs
from .errors import KernelError, WorkerFailedError
from .memory import check_worker_memory
from .metrics import RuntimeReport, WorkerTotals
from .placement import place_by_rows
from .policies import RetryPolicy, StepTimeoutPolicy

#: Arguments larger than this are stored once (Ray object store) and read by
#: every worker, instead of being serialised once per worker.
BROADCAST_THRESHOLD_BYTES = 64 * 1024

_step_counter = itertools.count()


class _FoldReplay:
    """A fold kernel replayed shard by shard to rebuild state (its result is not used)."""

    def __init__(self, kernel: Callable):
        self.kernel = kernel

    def __call__(self, shard, state, *args):
        # Nothing back: the accumulator may hold a level's histograms.
        self.kernel(shard, state, None, *args)


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
    state_bytes_per_row : int, optional
        Per-row fit state the algorithm keeps on workers, for the memory check
        run before workers read file shards (see :mod:`shardlearn.runtime.memory`).
    """

    def __init__(self, dataset: Dataset, session=None, name: str = "fit",
                 state_bytes_per_row: int | None = None):
        from .session import get_session

        self.dataset = dataset
        self.session = session or get_session()
        self.engine = self.session.engine
        self.name = name
        self.state_bytes_per_row = state_bytes_per_row
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
        self.retry = RetryPolicy(self.session.max_failures)
        self.timeouts = StepTimeoutPolicy(self.session.step_timeout)
        self.failures = 0
        rebalance = self.session.rebalance
        self.balancer = (rebalance if isinstance(rebalance, RebalancePolicy)
                         else RebalancePolicy() if rebalance else None)
        self._cost_samples = [deque(maxlen=64) for _ in range(self.engine.n_workers)]
        # (samples taken, moves made) when the balancer last looked: it decides from
        # those alone, so it is asked again only once one of them has changed.
        self._samples_taken = 0
        self._balanced_at = None
        # Steps that rebuild per-shard state on a replacement worker, in order:
        # (name, kernel, call_args); "latest" entries are replaced by their next call.
        self._restore_log: list[tuple[str, Callable, tuple, str]] = []
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
        # Shards that workers read from storage: fail before reading if they cannot fit.
        check_worker_memory(self, self.state_bytes_per_row)
        self._open = True
        todo = [w for w, ids in enumerate(self.placement) if ids]
        sent = {}
        while todo:
            lost = self._ship(todo, sent)
            todo = []
            for w, cause in lost:
                self._handle_loss(w, "load", cause, reship=False)
                todo.append(w)
        wall = time.perf_counter() - t0
        self.report.load_s += wall
        self.report.record("load", wall, {w: (0.0, wall, 0.0, b, 0) for w, b in sent.items()})

    def _ship_ids(self, worker, ids) -> list[tuple[int, str]]:
        return self._ship([worker], {}, only=ids)

    def _ship(self, workers, sent, only=None) -> list[tuple[int, str]]:
        """Load the shards of ``workers``; return the workers lost meanwhile, with causes."""
        pending = []
        for w in workers:
            ids = self.placement[w] if only is None else only
            on_worker = [i for i in ids if self.dataset.shards[i].source.load_on_worker]
            on_driver = [i for i in ids if not self.dataset.shards[i].source.load_on_worker]
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
                nbytes += sum(len(pickle.dumps(src)) for _, src in srcs)  # only sources travel
                pending.append(self.engine.submit(w, "load_sources", self.key, *srcs))
            sent[w] = sent.get(w, 0) + nbytes
        done = self.engine.gather(pending, timeout=self.timeouts.timeout("load"))
        return self._split_losses("load", done)

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

    def map(self, kernel: Callable, *args, step: str | None = None,
            restore: bool | str = False, fold: bool = False) -> list:
        """``[kernel(shard, state, *args) for shard in shards]``, run where each shard lives.

        Results come back in shard order whatever order workers finish in. A worker
        that dies or stops answering is replaced, its shards are reloaded from their
        sources, the steps marked ``restore`` are replayed on them, and only its
        shards' part of the step is re-run: each shard's result counts exactly once.

        Parameters
        ----------
        restore : bool or "latest", default=False
            Mark a step that builds per-shard state another step reads later.
            ``True``: replay every such call on a replacement worker, in order.
            ``"latest"``: replay only the most recent call of this step name.
        fold : bool, default=False
            ``kernel(shard, state, acc, *args)`` folds the shards of each worker
            (``acc`` is None for its first shard, then the previous return value);
            the call returns one value per worker holding shards, in worker order
            (after ``kernel.fold_finish(acc)`` on the worker, if the kernel has one).
            Only for folds whose result does not depend on how shards are grouped
            (exact integer-valued sums): otherwise it would depend on the placement.
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
        results: list = [None] * self.dataset.n_shards
        by_worker: dict = {}
        todo = [w for w, ids in enumerate(self.placement) if ids]
        method = "run_fold" if fold else "run"
        while todo:
            t0 = time.perf_counter()
            pending = self.engine.submit_many(
                [(w, method, self.key, name, kernel, self.placement[w], *call_args)
                 for w in todo])
            done = self.engine.gather(pending, timeout=self.timeouts.timeout(name))
            t_end = time.perf_counter()
            lost = self._split_losses(name, done)
            per_worker = {}
            for c in done:
                if c.error is not None:
                    continue
                values, times, _ = c.value
                if fold:
                    by_worker[c.worker] = values[0]
                for i, v in zip(self.placement[c.worker], values):
                    results[i] = v
                round_trip = c.done_at - t0
                compute = float(sum(times))
                per_worker[c.worker] = (
                    compute, max(0.0, round_trip - compute), max(0.0, (t_end - t0) - round_trip),
                    arg_bytes, payload_nbytes(values),
                )
            self.report.record(name, t_end - t0, per_worker)
            if not lost:
                self.timeouts.observe(name, t_end - t0)
                if len(todo) == len(self.placement):
                    self._observe_costs(done)
            todo = []
            for w, cause in lost:
                self._handle_loss(w, name, cause, detect_s=t_end - t0)
                todo.append(w)
        if restore:
            self._remember(name, _FoldReplay(kernel) if fold else kernel, tuple(call_args),
                           "latest" if restore == "latest" else "all")
        self._maybe_rebalance()
        if fold:
            return [by_worker[w] for w in sorted(by_worker)]
        return results

    def reduce(self, kernel: Callable, *args, combine: Callable | None = None,
               step: str | None = None):
        """Run ``kernel`` on every shard and fold the results in shard order.

        ``combine(a, b)`` defaults to elementwise addition of arrays, scalars and
        tuples/lists/dicts of them.
        """
        return ordered_reduce(self.map(kernel, *args, step=step), combine)

    # -- stragglers ---------------------------------------------------------------
    def _observe_costs(self, done):
        if self.balancer is None:
            return
        rows = [sum(self.dataset.shards[i].n_rows for i in ids) for ids in self.placement]
        seconds = [0.0] * len(self.placement)
        for c in done:
            seconds[c.worker] = float(sum(c.value[1]))
        if max(seconds) < self.balancer.min_step_s:
            return  # timer noise and call overhead dominate: nothing worth moving for
        for w, cost in relative_costs(seconds, rows).items():
            self._cost_samples[w].append(cost)
        self._samples_taken += 1

    def _maybe_rebalance(self):
        if self.balancer is None or len(self.placement) < 2:
            return
        seen = (self._samples_taken, len(self.report.moves))
        if seen == self._balanced_at:
            return          # the same samples and placement: the same answer as last time
        self._balanced_at = seen
        samples = self._cost_samples
        need = self.balancer.samples_needed(len(self.report.moves))
        if any(len(samples[w]) < need for w, ids in enumerate(self.placement) if ids):
            return
        cost = [statistics.median(s) if s else 1.0 for s in samples]
        moves = self.balancer.decide(self.placement, [s.n_rows for s in self.dataset.shards], cost)
        if moves:
            self._apply_moves(moves)

    def _apply_moves(self, moves: list[Move]) -> None:
        """Load moved shards on their targets, rebuild their state, then drop them at the source."""
        t0 = time.perf_counter()
        for m in moves:
            self.placement[m.source].remove(m.shard)
            self.placement[m.target] = sorted(self.placement[m.target] + [m.shard])
            self.owner[m.shard] = m.target
        targets = sorted({m.target for m in moves})
        for t in targets:
            ids = [m.shard for m in moves if m.target == t]
            lost = self._ship_ids(t, ids) or self._replay_restore(t, ids)
            for w, cause in lost:
                self._handle_loss(w, "rebalance", cause)
        for s in sorted({m.source for m in moves}):
            ids = [m.shard for m in moves if m.source == s]
            self.engine.gather([self.engine.submit(s, "drop_shards", self.key, ids)],
                               timeout=self.timeouts.timeout("load"))
        for w in range(len(self.placement)):
            self.report.workers[w].shards = len(self.placement[w])
            self.report.workers[w].rows = sum(self.dataset.shards[i].n_rows
                                              for i in self.placement[w])
        self.report.moves.append({"moves": [(m.shard, m.source, m.target) for m in moves],
                                  "seconds": time.perf_counter() - t0})
        for s in self._cost_samples:
            s.clear()

    # -- failures -----------------------------------------------------------------
    def _remember(self, name, kernel, call_args, mode):
        entry = (name, kernel, call_args, mode)
        if mode == "latest":
            for k, (n, *_rest) in enumerate(self._restore_log):
                if n == name:
                    self._restore_log[k] = entry
                    return
        self._restore_log.append(entry)

    def _split_losses(self, step, done) -> list[tuple[int, str]]:
        """Raise kernel errors at once; return (worker, cause) for workers lost or hung."""
        lost = []
        for c in done:
            err = c.error
            if err is None:
                continue
            if isinstance(err, KernelError):
                raise err
            if self.engine.is_worker_loss(err):
                lost.append((c.worker, f"{type(err).__name__}: {err}"))
                continue
            if step == "load" and isinstance(err, (ValueError, OSError)):
                raise err  # bad data or unreadable storage: the message names the file and row
            raise KernelError(step, c.worker, None, f"{type(err).__name__}: {err}") from err
        return lost

    def _handle_loss(self, worker: int, step: str, cause: str, reship: bool = True,
                     detect_s: float = 0.0) -> None:
        """Replace a lost worker and rebuild its shards and state, within the retry budget.

        Each failure is recorded with ``detect_s`` (the failed attempt's wall time,
        e.g. the timeout a hung worker cost) and ``recovery_s`` (replacing the
        worker, reloading its shards, replaying restore steps).
        """
        while True:
            self.failures += 1
            if not self.retry.should_retry(self.failures):
                raise WorkerFailedError(step, worker, self.placement[worker], cause,
                                        self.failures, self.retry.max_failures)
            t0 = time.perf_counter()
            try:
                self.engine.replace_worker(worker)
                if reship:
                    lost = self._ship([worker], {})
                    if lost:
                        cause = lost[0][1]
                        continue
                    lost = self._replay_restore(worker)
                    if lost:
                        cause = lost[0][1]
                        continue
            finally:
                self.report.failures.append({
                    "step": step, "worker": worker, "shards": list(self.placement[worker]),
                    "cause": cause, "detect_s": detect_s,
                    "recovery_s": time.perf_counter() - t0,
                })
                detect_s = 0.0
            self.report.failures_recovered += 1
            return

    def _replay_restore(self, worker: int, ids=None) -> list[tuple[int, str]]:
        ids = self.placement[worker] if ids is None else ids
        for name, kernel, call_args, _mode in self._restore_log:
            pending = [self.engine.submit(worker, "run", self.key, name, kernel, ids, *call_args)]
            done = self.engine.gather(pending, timeout=self.timeouts.timeout(name))
            lost = self._split_losses(name, done)
            if lost:
                return lost
        return []
