"""Decisions the runtime acts on, as small pure classes (unit-tested without a cluster)."""

from __future__ import annotations


class RetryPolicy:
    """Retry a lost worker's step while the fit's failures stay within ``max_failures``."""

    def __init__(self, max_failures: int = 3):
        if max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {max_failures}.")
        self.max_failures = int(max_failures)

    def should_retry(self, failures_so_far: int) -> bool:
        """``failures_so_far`` counts the failure being decided on."""
        return failures_so_far <= self.max_failures


class StepTimeoutPolicy:
    """How long to wait for a step before calling a silent worker hung.

    A fixed ``step_timeout`` wins. Otherwise the first call of a step gets
    ``first_s`` (it may compile code, read storage, warm caches); later calls get
    ``factor`` times the slowest successful call of that step seen so far, but at
    least ``floor_s``, so a worker that is merely slower than usual is not killed
    while one that stopped answering is detected within seconds to minutes.
    """

    def __init__(self, step_timeout: float | None = None, *, first_s: float = 600.0,
                 factor: float = 10.0, floor_s: float = 30.0):
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be > 0 seconds, got {step_timeout}.")
        self.fixed = step_timeout
        self.first_s, self.factor, self.floor_s = first_s, factor, floor_s
        self.slowest: dict[str, float] = {}

    def timeout(self, step: str) -> float:
        if self.fixed is not None:
            return float(self.fixed)
        seen = self.slowest.get(step)
        if seen is None:
            return self.first_s
        return max(self.floor_s, self.factor * seen)

    def observe(self, step: str, seconds: float) -> None:
        self.slowest[step] = max(self.slowest.get(step, 0.0), float(seconds))
