"""Ray engine: one actor per worker, each wrapping a WorkerCore.

With no address it starts a local Ray cluster (or reuses one already running in
this process); with an address it joins an existing cluster.
"""

from __future__ import annotations

import os
import time

from ..errors import KernelError, WorkerLostError
from ..worker import WorkerCore
from .base import Completed, Engine

ACTOR_START_TIMEOUT_S = 120.0
#: How long to wait for CPUs that killed actors are still releasing.
RESOURCE_WAIT_S = 10.0


def _wait_for_cpus(ray, need: float, total: float, wait_s: float) -> float:
    """Free CPUs, polled until ``need`` fit or ``wait_s`` passes (no wait if they never can)."""
    deadline = time.monotonic() + wait_s
    while True:
        available = ray.available_resources().get("CPU", 0)
        if need <= available + 1e-9 or need > total + 1e-9 or time.monotonic() >= deadline:
            return available
        time.sleep(0.05)


class _ActorBody:
    """The actor's class body (decorated with ``ray.remote`` at engine start)."""

    def __init__(self, worker_id: int):
        # One BLAS thread per worker: the same bits as the in-process engine and
        # no oversubscription when several actors share a node.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        self.core = WorkerCore(worker_id)

    def call(self, method: str, *args):
        return getattr(self.core, method)(*args)

    def pid(self) -> int:
        return os.getpid()


class RayEngine(Engine):
    name = "ray"

    def __init__(self, n_workers: int | None = None, address: str | None = None,
                 worker_cpus: float = 1.0, ray_init_kwargs: dict | None = None):
        import ray

        self._ray = ray
        self.started_ray = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False,
                          ignore_reinit_error=True)
            if address is None:
                want = int(n_workers or os.cpu_count() or 1)
                kwargs["num_cpus"] = max(want * worker_cpus, os.cpu_count() or 1)
            else:
                kwargs["address"] = address
            kwargs.update(ray_init_kwargs or {})
            ray.init(**kwargs)
            self.started_ray = True
        total = ray.cluster_resources().get("CPU", 0)
        self.n_workers = int(n_workers or max(1, int(total // max(worker_cpus, 1e-9))))
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}.")
        need = worker_cpus * self.n_workers
        # Actors of a session that just shut down are killed asynchronously: their
        # CPUs come back a moment later, so wait briefly before calling the cluster full.
        available = _wait_for_cpus(ray, need, total, RESOURCE_WAIT_S)
        if need > available + 1e-9:
            self._shutdown_ray()
            raise ValueError(
                f"The Ray cluster has {available:g} free CPUs (of {total:g}) but {self.n_workers} "
                f"workers x {worker_cpus:g} CPU each need {need:g}. Ask for fewer "
                "workers (n_workers=...), lower worker_cpus, or add nodes to the cluster."
            )
        self.address = address
        self._remote_cls = ray.remote(_ActorBody).options(
            num_cpus=worker_cpus, scheduling_strategy="SPREAD", max_concurrency=1
        )
        self.actors = [self._remote_cls.remote(i) for i in range(self.n_workers)]
        try:
            self.pids = ray.get([a.pid.remote() for a in self.actors], timeout=ACTOR_START_TIMEOUT_S)
        except Exception as exc:
            self.shutdown()
            raise RuntimeError(f"Ray workers did not start within {ACTOR_START_TIMEOUT_S:.0f} s: {exc}") from exc
        #: Every actor process this engine started, replacements included (leak checks).
        self.all_pids = list(self.pids)

    def submit(self, worker, method, *args):
        return worker, self.actors[worker].call.remote(method, *args)

    def _install_faults(self, worker):
        try:
            self._ray.get(self.actors[worker].call.remote(
                "install_faults", self.faults_for(worker), True), timeout=ACTOR_START_TIMEOUT_S)
        except self._ray.exceptions.RayActorError:
            pass  # a dead worker gets its faults when it is replaced

    def replace_worker(self, worker):
        ray = self._ray
        try:
            ray.kill(self.actors[worker], no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass
        self._bump_incarnation(worker)
        actor = self._remote_cls.remote(worker)
        try:
            self.pids[worker] = ray.get(actor.pid.remote(), timeout=ACTOR_START_TIMEOUT_S)
        except Exception as exc:
            from ..errors import WorkerLostError

            raise WorkerLostError("restart", worker, f"replacement actor did not start: {exc}") from exc
        self.actors[worker] = actor
        self.all_pids.append(self.pids[worker])
        if self.faults_for(worker):
            self._install_faults(worker)

    def worker_pid(self, worker: int) -> int:
        """Process id of a worker's actor (tests use it to SIGKILL a worker from outside)."""
        return self.pids[worker]

    def put(self, value):
        return self._ray.put(value)

    def gather(self, pending, timeout=None):
        ray = self._ray
        refs = [r for _, r in pending]
        done_at = {}
        remaining = list(refs)
        deadline = None if timeout is None else time.perf_counter() + timeout
        while remaining:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, remaining = ray.wait(remaining, num_returns=1, timeout=left)
            if not ready:
                break
            now = time.perf_counter()
            for r in ready:
                done_at[r] = now
        out = []
        for worker, ref in pending:
            if ref not in done_at:
                out.append(Completed(worker, error=TimeoutError(f"no answer within {timeout} s")))
                continue
            try:
                out.append(Completed(worker, ray.get(ref), None, done_at[ref]))
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                out.append(Completed(worker, error=cause, done_at=done_at[ref]))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                out.append(Completed(worker, error=WorkerLostError("?", worker, str(exc).splitlines()[0]),
                                     done_at=done_at[ref]))
        return out

    def shutdown(self):
        for a in getattr(self, "actors", []):
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead is fine
                pass
        self.actors = []
        self._shutdown_ray()

    def _shutdown_ray(self):
        if self.started_ray and self._ray.is_initialized():
            self._ray.shutdown()
            self.started_ray = False

    def describe(self):
        d = super().describe()
        d["address"] = self.address or "local (started here)" if self.started_ray else (self.address or "existing")
        d["ray_version"] = self._ray.__version__
        return d


__all__ = ["RayEngine", "KernelError"]
