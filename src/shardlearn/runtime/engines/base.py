"""The engine contract: run a named WorkerCore method on a worker; knows nothing of ML."""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass


@dataclass
class Completed:
    """One finished worker call: its value, or the exception it raised, and when it finished."""

    worker: int
    value: object = None
    error: BaseException | None = None
    done_at: float = 0.0


class Engine(abc.ABC):
    """Hosts ``n_workers`` WorkerCores and calls their methods."""

    name: str = "abstract"
    n_workers: int
    #: Whether results cross a process boundary, so that their size costs time
    #: (an algorithm may then send a compact form of the same values).
    moves_results: bool = False
    #: Fault specs (tests only) installed into each worker an engine creates.
    fault_plan: tuple = ()

    def incarnation(self, worker: int) -> int:
        """0 for a slot's original worker, 1 after its first replacement, ..."""
        return self._incarnations[worker] if hasattr(self, "_incarnations") else 0

    def _bump_incarnation(self, worker: int) -> None:
        if not hasattr(self, "_incarnations"):
            self._incarnations = [0] * self.n_workers
        self._incarnations[worker] += 1

    def faults_for(self, worker: int) -> list:
        base = getattr(self, "_fault_base", [0] * self.n_workers)[worker]
        return [f for f in self.fault_plan
                if f.worker == worker and f.attempt == self.incarnation(worker) - base]

    def set_fault_plan(self, specs) -> None:
        """Arm fault injection (tests). A spec's ``attempt`` counts replacements of its
        worker since this call (0: the worker running now)."""
        self.fault_plan = tuple(specs)
        self._fault_base = [self.incarnation(w) for w in range(self.n_workers)]
        for w in range(self.n_workers):
            self._install_faults(w)

    @abc.abstractmethod
    def _install_faults(self, worker: int) -> None:
        """Send ``faults_for(worker)`` to the worker."""

    @abc.abstractmethod
    def replace_worker(self, worker: int) -> None:
        """Stop ``worker`` (if still running) and start a fresh, empty one in its slot."""

    def is_worker_loss(self, error: BaseException) -> bool:
        """Whether ``error`` means the worker is gone or hung (as opposed to a kernel bug)."""
        from ..errors import WorkerLostError
        from ..faults import SimulatedWorkerDeath

        return isinstance(error, (WorkerLostError, TimeoutError, SimulatedWorkerDeath))

    @abc.abstractmethod
    def submit(self, worker: int, method: str, *args):
        """Start ``WorkerCore.method(*args)`` on ``worker``; return a pending handle."""

    def submit_many(self, calls: list) -> list:
        """``[submit(*c) for c in calls]``, each ``c`` being ``(worker, method, *args)``:
        the coordinator's steps. An engine may send these another way than ``submit``
        (the Ray engine: over a direct channel), with the same results."""
        return [self.submit(*c) for c in calls]

    @abc.abstractmethod
    def gather(self, pending: list, timeout: float | None = None) -> list[Completed]:
        """Wait for all handles; return one Completed per handle, in the given order."""

    def put(self, value):
        """A handle workers resolve to ``value`` when passed as a top-level call argument."""
        return value

    def fit_scope(self):
        """Context held for the duration of one fit (e.g. BLAS thread limits)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop the workers and free their memory."""

    def describe(self) -> dict:
        return {"engine": self.name, "n_workers": self.n_workers}
