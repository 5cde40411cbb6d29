"""Errors the runtime raises, each naming what failed and where."""

from __future__ import annotations


class ShardlearnRuntimeError(RuntimeError):
    """Base class for runtime failures."""


class KernelError(ShardlearnRuntimeError):
    """A worker kernel raised: names the step, worker and shard, and keeps the cause."""

    def __init__(self, step: str, worker: int | None, shard: int | None, cause: str):
        self.step, self.worker, self.shard, self.cause = step, worker, shard, cause
        super().__init__(
            f"step {step!r} failed on worker {worker}, shard {shard}: {cause}"
        )

    def __reduce__(self):
        return (KernelError, (self.step, self.worker, self.shard, self.cause))


class WorkerLostError(ShardlearnRuntimeError):
    """A worker died or stopped answering."""

    def __init__(self, step: str, worker: int, cause: str):
        self.step, self.worker, self.cause = step, worker, cause
        super().__init__(f"worker {worker} was lost during step {step!r}: {cause}")

    def __reduce__(self):
        return (WorkerLostError, (self.step, self.worker, self.cause))


class WorkerFailedError(ShardlearnRuntimeError):
    """Workers failed more often than the retry budget allows; the fit is abandoned."""

    def __init__(self, step: str, worker: int, shards: list[int], cause: str, failures: int,
                 max_failures: int):
        self.step, self.worker, self.shards, self.cause = step, worker, list(shards), cause
        self.failures, self.max_failures = failures, max_failures
        super().__init__(
            f"worker {worker} (shards {self.shards}) failed during step {step!r}: {cause}. "
            f"That is failure {failures} of this fit, over the retry budget max_failures="
            f"{max_failures}; raise it with shardlearn.init(..., max_failures=N) if failures "
            "are expected, or look at the worker's logs."
        )

    def __reduce__(self):
        return (WorkerFailedError, (self.step, self.worker, self.shards, self.cause,
                                    self.failures, self.max_failures))
