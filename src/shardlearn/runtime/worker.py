"""What a worker does, whatever engine hosts it: hold shards, keep per-fit state, run kernels."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from ..data.shard import Shard


class WorkerCore:
    """Shards and per-shard state living on one worker.

    The in-process engine holds one per thread; the Ray engine wraps one in each
    actor. ``state`` dicts are keyed by (fit, shard): a kernel finds there what it
    left on the previous step (binned features, predictions, optimizer state).
    """

    def __init__(self, worker_id: int):
        self.worker_id = worker_id
        self.shards: dict[str, dict[int, Shard]] = {}
        self.states: dict[str, dict[int, dict]] = {}
        self.faults = None  # a runtime.faults.FaultState, installed by tests only

    def ping(self) -> int:
        return self.worker_id

    def memory_info(self) -> dict:
        """Host and available memory, for the coordinator's check before reading file shards."""
        from .memory import host_memory_info

        return host_memory_info()

    def load(self, key: str, *shards: Shard) -> int:
        """Take shards built on the driver (zero-copy views on the in-process engine)."""
        held = self.shards.setdefault(key, {})
        for s in shards:
            held[s.index] = s
        self.states.setdefault(key, {})
        return sum(s.n_rows for s in shards)

    def load_sources(self, key: str, *indexed_sources) -> int:
        """Build shards here from their sources (storage readers): the driver never holds them."""
        built = [src.load(i) for i, src in indexed_sources]
        return self.load(key, *built)

    def run(self, key: str, step: str, kernel: Callable, shard_ids: list[int], *args):
        """Run ``kernel(shard, state, *args)`` on each listed shard, in order.

        Returns ``(results, compute_seconds_per_shard, seconds_in_worker)``.
        """
        t0 = time.perf_counter()
        if self.faults is not None:
            self.faults.before_run(step)
        held = self.shards[key]
        states = self.states[key]
        results, times = [], []
        for i in shard_ids:
            state = states.setdefault(i, {})
            t = time.perf_counter()
            try:
                results.append(kernel(held[i], state, *args))
                if self.faults is not None:
                    self.faults.after_kernel(step, time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - re-raised with its location
                raise self._kernel_error(step, i, exc) from exc
            times.append(time.perf_counter() - t)
        return results, times, time.perf_counter() - t0

    def run_fold(self, key: str, step: str, kernel: Callable, shard_ids: list[int], *args):
        """``acc = kernel(shard, state, acc, *args)`` over the listed shards (``acc`` starts
        as None); one value, the last ``acc``, leaves the worker, passed first through
        ``kernel.fold_finish(acc)`` if the kernel has one (work left for the end of the
        fold, e.g. flushing an accumulator the shards shared).

        Only for folds whose result does not depend on how shards are grouped
        (exact sums), so the answer is the same whichever worker holds which shards.
        """
        acc = [None]

        def one(shard, state, *a):
            acc[0] = kernel(shard, state, acc[0], *a)

        _, times, elapsed = self.run(key, step, one, shard_ids, *args)
        finish = getattr(kernel, "fold_finish", None)
        if finish is not None and acc[0] is not None:
            t = time.perf_counter()
            try:
                acc[0] = finish(acc[0])
            except Exception as exc:  # noqa: BLE001 - re-raised with its location
                raise self._kernel_error(step, shard_ids[-1], exc) from exc
            spent = time.perf_counter() - t
            times[-1] += spent
            elapsed += spent
        return [acc[0]], times, elapsed

    def _kernel_error(self, step: str, shard: int, exc: Exception):
        """A kernel's exception as a KernelError naming the step, worker and shard."""
        from .errors import KernelError

        cause = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return KernelError(step, self.worker_id, shard, cause)

    def drop_shards(self, key: str, shard_ids: list[int]) -> None:
        """Forget some shards of a fit (they moved to another worker)."""
        for i in shard_ids:
            self.shards.get(key, {}).pop(i, None)
            self.states.get(key, {}).pop(i, None)

    def release(self, key: str) -> None:
        """Drop the shards and state of one fit (called when it ends or fails)."""
        self.shards.pop(key, None)
        self.states.pop(key, None)

    def install_faults(self, specs, hard_kill: bool, release=None) -> None:
        """Arm fault injection (tests only); see :mod:`shardlearn.runtime.faults`."""
        from .faults import FaultState

        self.faults = FaultState(specs, hard_kill, release) if specs else None

    def shard_rows(self, key: str) -> dict[int, int]:
        """Rows of each shard held for ``key`` (lets tests prove nothing was lost or duplicated)."""
        return {i: s.n_rows for i, s in self.shards.get(key, {}).items()}

    def held_keys(self) -> list[str]:
        return sorted(self.shards)
