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

    @abc.abstractmethod
    def submit(self, worker: int, method: str, *args):
        """Start ``WorkerCore.method(*args)`` on ``worker``; return a pending handle."""

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
