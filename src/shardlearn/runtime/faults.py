"""Faults a worker can be told to suffer, for tests: die, hang or slow down at a given call.

The engine keeps a fault plan and installs the matching specs into each worker it
creates (``attempt`` 0 is the original worker of a slot, 1 its first replacement...).
On Ray, "kill" is a real SIGKILL of the actor's process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultSpec:
    """Make worker ``worker`` fail on its ``call``-th run of step ``step`` (0-based).

    kind: "kill" (the process dies; in-process workers die by raising and refusing
    every later call), "hang" (never answers), or "slow" (from its ``call``-th
    matching call on, every kernel takes ``factor`` times as long, as on a slower
    machine). ``step=None`` matches every step.
    """

    worker: int
    kind: str
    step: str | None = None
    call: int = 0
    attempt: int = 0
    factor: float = 1.0

    def __post_init__(self):
        if self.kind not in ("kill", "hang", "slow"):
            raise ValueError(f"fault kind must be 'kill', 'hang' or 'slow', got {self.kind!r}.")


class SimulatedWorkerDeath(RuntimeError):
    """Raised by an in-process worker told to die (threads cannot be SIGKILLed)."""


class FaultState:
    """Installed in a WorkerCore: counts matching calls and fires the faults."""

    def __init__(self, specs, hard_kill: bool, release: threading.Event | None):
        self.specs = list(specs)
        self.counts = [0] * len(self.specs)
        self.hard_kill = hard_kill
        self.release = release
        self.dead = False
        self.slow_factor = 1.0

    def after_kernel(self, step: str, seconds: float) -> None:
        if self.slow_factor > 1.0:
            time.sleep((self.slow_factor - 1.0) * seconds)

    def before_run(self, step: str) -> None:
        if self.dead:
            raise SimulatedWorkerDeath("this in-process worker was killed by fault injection")
        for k, spec in enumerate(self.specs):
            if spec.step is not None and spec.step != step:
                continue
            n = self.counts[k]
            self.counts[k] += 1
            if spec.kind == "slow":
                self.slow_factor = spec.factor if n >= spec.call else 1.0
            elif n == spec.call and spec.kind == "kill":
                if self.hard_kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                self.dead = True
                raise SimulatedWorkerDeath("this in-process worker was killed by fault injection")
            elif n == spec.call and spec.kind == "hang":
                if self.release is not None:
                    self.release.wait()
                else:
                    while True:
                        time.sleep(3600)
