"""Ray engine: one actor per worker, each wrapping a WorkerCore.

With no address it starts a local Ray cluster (or reuses one already running in
this process); with an address it joins an existing cluster.
"""

from __future__ import annotations

import contextlib
import os
import time

from ...comm.accounting import payload_nbytes
from ..errors import KernelError, WorkerLostError
from ..worker import WorkerCore
from .base import Completed, Engine

ACTOR_START_TIMEOUT_S = 120.0
#: Calls of one kind (``repeat_key``) before the engine compiles a graph for them.
COMPILED_AFTER_CALLS = 8
#: A kind of call whose last results were larger than this (per worker) goes back
#: to actor tasks: the object store moves large arrays faster than graph channels
#: (tens of MB: measured 2-3x slower through the graph).
COMPILED_MAX_RESULT_BYTES = 4 * 2**20
#: Set to "1" to send repeated calls through a compiled graph (off by default: its
#: channels busy-poll, which on a 2-core machine costs the workers as much CPU as
#: the shorter round trips save; see ``submit_many``).
COMPILED_ENV = "SHARDLEARN_RAY_COMPILED"
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


#: Task results up to this size travel inside the reply instead of through the
#: object store (Ray's default: 100 KB). Measured on a 2-core VM (Ray 2.60), a
#: round trip to 2 actors returning 170-340 KB each: 2.3 ms inlined vs 4-6 ms
#: through the store; 1 MB: about even; 1.4 MB and up: the store is faster. Tree
#: levels return 0.2-3 MB: boosting 400k x 28 on 2 workers, 8.0-8.6 s -> 6.4-7.7 s.
INLINE_RESULT_BYTES = 1 << 20


def system_config() -> dict:
    """Ray system settings for a cluster this engine starts (an existing cluster keeps
    its own); ``RAY_max_direct_call_object_size`` in the environment wins."""
    if os.environ.get("RAY_max_direct_call_object_size"):
        return {}
    return {"max_direct_call_object_size": INLINE_RESULT_BYTES}


class _ActorBody:
    """The actor's class body (decorated with ``ray.remote`` at engine start)."""

    def __init__(self, worker_id: int):
        import threading

        # One BLAS thread per worker: the same bits as the in-process engine and
        # no oversubscription when several actors share a node.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
        from .. import warmup

        warmup.start_in_background()      # numba's runtime, while the cluster starts
        self.core = WorkerCore(worker_id)
        self._lock = threading.Lock()
        self._last = None      # (call id, outcome) of the last numbered call

    def call(self, method: str, *args):
        return getattr(self.core, method)(*args)

    # Numbered calls: the compiled graph runs them on a background thread; if the
    # graph breaks, ``collect`` fetches the outcome of a call that already ran
    # instead of running it twice (kernels change per-shard state).
    def call_compiled(self, payload):
        call_id, method, args = payload
        return self._run_once(call_id, method, args)

    def collect(self, call_id: int, method: str, *args):
        kind, value = self._run_once(call_id, method, args)
        if kind == "error":
            raise value
        return value

    def _run_once(self, call_id, method, args):
        import ray

        with self._lock:
            if self._last is not None and self._last[0] == call_id:
                return self._last[1]
            self._last = None
            try:
                args = [ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args]
                out = ("ok", getattr(self.core, method)(*args))
            except Exception as exc:  # noqa: BLE001 - travels back as the call's error
                out = ("error", exc)
            self._last = (call_id, out)
            return out

    def pid(self) -> int:
        return os.getpid()

    def numba_warm(self, timeout: float) -> bool:
        from .. import warmup

        return warmup.is_warm(timeout)


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
                kwargs["_system_config"] = system_config()
            else:
                kwargs["address"] = address
            user = dict(ray_init_kwargs or {})
            if "_system_config" in user and "_system_config" in kwargs:
                user["_system_config"] = {**kwargs["_system_config"], **user["_system_config"]}
            kwargs.update(user)
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
        self._compiled = None          # the compiled graph over self.actors, once built
        self._stale: list = []         # graphs with a call still running (see gather)
        self._compiled_off = os.environ.get(COMPILED_ENV, "0") != "1"
        self._repeats: dict = {}
        self._result_bytes: dict = {}  # repeat_key -> largest result of its last call
        self._current_key = None
        self._call_id = 0
        #: Calls sent through the compiled graph (observability, tests).
        self.compiled_calls = 0

    def submit(self, worker, method, *args):
        return worker, self.actors[worker].call.remote(method, *args)

    def submit_many(self, calls, repeat_key=None):
        """With ``SHARDLEARN_RAY_COMPILED=1``, calls to every worker at once, of a kind
        seen often, go through a compiled graph: shared-memory channels instead of an
        actor task each. Measured on a 2-core VM with Ray 2.60, two workers: 0.35 ms
        a round trip instead of 3.4 ms, 1.6 ms instead of 7.3 ms with 2.8 MB back from
        each. But the channels busy-poll (the driver while it waits, an actor while
        idle): there, boosting 400k x 28 on 2 workers took as long either way. Made
        for nodes with cores to spare. Same values either way."""
        if repeat_key is not None:
            self._repeats[repeat_key] = self._repeats.get(repeat_key, 0) + 1
        self._current_key = repeat_key
        workers = [c[0] for c in calls]
        if (self._compiled_off or repeat_key is None
                or self._repeats[repeat_key] <= COMPILED_AFTER_CALLS
                or self._result_bytes.get(repeat_key, 0) > COMPILED_MAX_RESULT_BYTES
                or sorted(workers) != list(range(self.n_workers))
                or not self._ensure_compiled()):
            return [self.submit(*c) for c in calls]
        self._call_id += 1
        payloads = [None] * self.n_workers
        for w, method, *args in calls:
            payloads[w] = (self._call_id, method, args)
        try:
            refs = self._compiled.execute(*payloads)
        except Exception:  # noqa: BLE001 - a broken graph: ordinary tasks, which report why
            self._drop_compiled()
            return [self._collect(w, self._call_id, method, args) for w, method, *args in calls]
        self.compiled_calls += len(calls)
        return [_CompiledCall(w, refs[w], self._call_id, method, args)
                for w, method, *args in calls]

    def _ensure_compiled(self) -> bool:
        if self._stale:
            return False
        if self._compiled is None:
            try:
                from ray.dag import InputNode, MultiOutputNode

                with InputNode() as inp:
                    dag = MultiOutputNode([a.call_compiled.bind(inp[i])
                                           for i, a in enumerate(self.actors)])
                self._compiled = dag.experimental_compile()
            except Exception:  # noqa: BLE001 - e.g. an older Ray: stay on actor tasks
                self._compiled_off = True
                return False
        return True

    def _drop_compiled(self) -> None:
        graphs = self._stale + ([self._compiled] if self._compiled is not None else [])
        self._stale, self._compiled = [], None
        self._repeats.clear()          # a new graph only after the calls repeat again
        for cg in graphs:
            try:
                cg.teardown()
            except Exception:  # noqa: BLE001 - a dead actor's channels fail to close
                pass

    @contextlib.contextmanager
    def fit_scope(self):
        """A fit's compiled graph ends with the fit: its channels busy-poll (the
        driver while it waits, each actor while idle), which a finished fit must
        not leave burning a core per worker."""
        try:
            yield
        finally:
            self._drop_compiled()

    def _collect(self, worker, call_id, method, args):
        return worker, self.actors[worker].collect.remote(call_id, method, *args)

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
        self._drop_compiled()      # after the kill: a hung actor cannot hold up teardown
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
        done = self._gather(pending, timeout)
        if self._current_key is not None and not self._compiled_off:
            self._result_bytes[self._current_key] = max(
                (payload_nbytes(c.value) for c in done if c.error is None), default=0)
        self._current_key = None
        return done

    def _gather(self, pending, timeout):
        compiled = [p for p in pending if isinstance(p, _CompiledCall)]
        if not compiled:
            return self._gather_tasks(pending, timeout)
        assert len(compiled) == len(pending), "submit_many sends a batch one way"
        ray = self._ray
        deadline = None if timeout is None else time.perf_counter() + timeout
        out, retry, timed_out = {}, [], False
        for p in compiled:
            if timed_out:
                # Once one output timed out the graph's later outputs cannot be read:
                # ask those workers for their outcome over ordinary tasks.
                retry.append(p)
                continue
            # Always a timeout: without one a graph's get gives up after
            # RAY_CGRAPH_get_timeout (10 s), and long kernels are fine.
            left = 1e7 if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                kind, value = ray.get(p.ref, timeout=left)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayChannelTimeoutError):
                out[p.worker] = Completed(p.worker, error=TimeoutError(
                    f"no answer within {timeout} s"))
                timed_out = True
                continue
            except Exception:  # noqa: BLE001 - the graph broke (e.g. an actor died)
                retry.append(p)
                continue
            now = time.perf_counter()
            value = _owned(value)
            out[p.worker] = (Completed(p.worker, value, None, now) if kind == "ok"
                             else Completed(p.worker, error=value, done_at=now))
        if timed_out:
            self._forget_compiled()      # torn down once the hung worker is killed
        elif retry:
            self._drop_compiled()
        if retry:
            # Ordinary tasks tell a dead worker from a live one, and a live one hands
            # back the outcome of the call it already ran (or runs it now).
            left = None if deadline is None else max(1.0, deadline - time.perf_counter())
            again = self._gather_tasks([self._collect(p.worker, p.call_id, p.method, p.args)
                                        for p in retry], left)
            out.update((c.worker, c) for c in again)
        return [out[p.worker] for p in pending]

    def _forget_compiled(self) -> None:
        # A call is still running in the graph (hung or slow): tear it down only once
        # that worker has been killed (replace_worker), or teardown would wait for it;
        # until then no new graph (an actor is in one graph at a time).
        if self._compiled is not None:
            self._stale.append(self._compiled)
        self._compiled = None
        self._repeats.clear()

    def _gather_tasks(self, pending, timeout):
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
        self._drop_compiled()      # after the kills: a hung actor cannot hold it up
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


def _owned(value):
    """``value`` with every array copied out of the graph's channel buffer: a reader
    still holding a view would keep the writer from the next call."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_owned(v) for v in value)
    if isinstance(value, dict):
        return {k: _owned(v) for k, v in value.items()}
    return value


class _CompiledCall:
    """A call in flight through the compiled graph: enough to ask for it again."""

    __slots__ = ("worker", "ref", "call_id", "method", "args")

    def __init__(self, worker, ref, call_id, method, args):
        self.worker, self.ref, self.call_id, self.method, self.args = (
            worker, ref, call_id, method, args)


__all__ = ["RayEngine", "KernelError"]
