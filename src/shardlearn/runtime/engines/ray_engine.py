"""Ray engine: one actor per worker, each wrapping a WorkerCore.

With no address it starts a local Ray cluster (or reuses one already running in
this process); with an address it joins an existing cluster.
"""

from __future__ import annotations

import os
import time

from ..errors import KernelError, WorkerLostError
from ..worker import WorkerCore
from . import direct_channel
from .base import Completed, Engine

ACTOR_START_TIMEOUT_S = 120.0
#: Set to "0" to send the coordinator's steps as actor tasks instead of over the
#: direct channel (see ``submit_many``).
CHANNEL_ENV = "SHARDLEARN_RAY_CHANNEL"
#: Set to "0" to have large replies of actors on the driver's machine come over the
#: channel's socket too, not through shared memory (see :mod:`.shared_replies`).
SHARED_MEMORY_ENV = "SHARDLEARN_RAY_SHM"
#: Results with more bytes than this that do not come through shared memory (a
#: driver on another machine, replies over ``direct_channel.DEFAULT_SHARED_BYTES``,
#: ``SHARDLEARN_RAY_SHM=0``) come back through the object store (the channel says
#: so and the driver collects them as a task). Measured on a 2-core VM, 2 workers:
#: random-forest levels of 48 MB per worker, 1.85 s through the store vs 2.1 s over
#: the channel's socket; boosting levels of 0.2-2.8 MB, faster over the socket.
CHANNEL_MAX_REPLY_BYTES = 8 << 20
#: How long a call retried as a task after its channel broke (or its result was
#: too large for it) may take, even past the step's deadline: it has already run.
RETRY_WAIT_S = 60.0
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

        _one_thread_per_library()
        from .. import warmup

        warmup.start_in_background()      # numba's runtime, while the cluster starts
        self.core = WorkerCore(worker_id)
        self._lock = threading.Lock()
        self._last = None      # (call id, outcome) of the last numbered call
        self._channel = None

    def call(self, method: str, *args):
        # After a channel call the driver gave up on (it timed out while another
        # worker failed), a task waits for it as it would behind a queued task.
        with self._lock:
            # A plain call comes only once the driver is past its last numbered
            # call (collected within gather): that outcome need not be kept.
            self._last = None
            return getattr(self.core, method)(*args)

    def open_channel(self, secret: bytes) -> tuple:
        """Start (once) this actor's end of the direct channel; its address."""
        import ray

        if self._channel is None:
            self._channel = direct_channel.ChannelServer(
                self._run_once, secret, CHANNEL_MAX_REPLY_BYTES,
                on_thread_start=_one_thread_per_library)
        return self._channel.start(ray.util.get_node_ip_address())

    # Numbered calls: the channel's thread runs them; if the channel breaks,
    # ``collect`` fetches the outcome of a call that already ran instead of
    # running it twice (kernels change per-shard state).
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
            except BaseException as exc:
                # E.g. SystemExit from a kernel: it ends the channel's thread, and the
                # driver's collect must get this, not run the call again.
                self._last = (call_id, ("error", RuntimeError(
                    f"{method!r} ended the worker's thread with {exc!r}")))
                raise
            self._last = (call_id, out)
            return out

    def pid(self) -> int:
        return os.getpid()

    def numba_warm(self, timeout: float) -> bool:
        from .. import warmup

        return warmup.is_warm(timeout)


def _one_thread_per_library() -> None:
    # One BLAS/OpenMP thread per worker: the same bits as the in-process engine and
    # no oversubscription when several actors share a node. OpenMP's count is per
    # calling thread, so the actor's __init__ and each channel thread call this.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


class RayEngine(Engine):
    name = "ray"
    moves_results = True

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
        self._channel_off = os.environ.get(CHANNEL_ENV, "1") == "0"
        self._shared_memory = os.environ.get(SHARED_MEMORY_ENV, "1") != "0"
        self._secret = direct_channel.new_secret()
        self._channels: list = [None] * self.n_workers
        # A worker whose channel failed to open is not asked again until replaced:
        # each try can wait for a connection timeout.
        self._no_channel = [False] * self.n_workers
        self._call_id = 0
        #: Calls sent over the direct channel, and those of them answered through
        #: the object store (too large: CHANNEL_MAX_REPLY_BYTES); observability, tests.
        self.channel_calls = 0
        self.stored_replies = 0
        self._closed_shared_replies = 0

    def submit(self, worker, method, *args):
        return worker, self.actors[worker].call.remote(method, *args)

    def submit_many(self, calls):
        """Each call goes over the worker's direct channel (see :mod:`.direct_channel`):
        measured on a 2-core VM with Ray 2.60, two workers, a round trip of 0.15 ms
        instead of 2 ms as actor tasks. A call with an object-store handle among its
        arguments, or to a worker whose channel cannot open, is an actor task.
        Same values either way."""
        pending = []
        shared = self._shared_args(calls)
        # The shared arguments hold no handle (else no SharedArgs): only each call's
        # own are looked through (the shared ones took about 30 us a call in tree fits).
        skip = frozenset(shared.positions) if shared is not None else frozenset()
        for worker, method, *args in calls:
            own = [a for k, a in enumerate(args) if k not in skip] if skip else args
            client = None if _holds_object_refs(self._ray, own) else self._channel(worker)
            if client is None:
                pending.append(self.submit(worker, method, *args))
                continue
            self._call_id += 1
            try:
                parts = client.request(self._call_id, method, tuple(args), shared)
            except Exception:  # noqa: BLE001 - Ray's own pickling says what is wrong
                pending.append(self.submit(worker, method, *args))
                continue
            call = _ChannelCall(worker, client, self._call_id, method, args)
            try:
                client.send(parts)
            except OSError:
                self._close_channel(worker)
                pending.append(self._collect(worker, call.call_id, method, args))
                continue
            self.channel_calls += 1
            pending.append(call)
        return pending

    def _shared_args(self, calls):
        """The arguments every call passes (the same objects), pickled once for all
        channels; None if there are none, or they do not pickle (then each call
        finds out for itself, and goes as a task if it must)."""
        if self._channel_off:
            return None
        positions = direct_channel.shared_positions([c[2:] for c in calls])
        if not positions:
            return None
        first = calls[0][2:]
        values = tuple(first[k] for k in positions)
        if _holds_object_refs(self._ray, values):
            return None         # every call goes as an actor task: nothing to pickle here
        try:
            return direct_channel.SharedArgs(positions, values)
        except Exception:  # noqa: BLE001 - e.g. a lock: Ray's pickling reports it
            return None

    def _channel(self, worker: int):
        """The worker's channel, opened on first use; None when off or it cannot open."""
        if self._channel_off or self._no_channel[worker]:
            return None
        if self._channels[worker] is None:
            try:
                address = self._ray.get(self.actors[worker].open_channel.remote(self._secret),
                                        timeout=ACTOR_START_TIMEOUT_S)
                self._channels[worker] = direct_channel.ChannelClient(
                    address, self._secret, shared_memory=self._shared_memory)
            except Exception:  # noqa: BLE001 - e.g. a firewall between nodes: actor tasks
                self._no_channel[worker] = True
                return None
        return self._channels[worker]

    def _close_channel(self, worker: int) -> None:
        client, self._channels[worker] = self._channels[worker], None
        if client is not None:
            if client.shared is not None:
                self._closed_shared_replies += client.shared.replies
            client.close()

    @property
    def shared_replies(self) -> int:
        """Channel replies whose arrays came through shared memory (observability, tests)."""
        return self._closed_shared_replies + sum(
            c.shared.replies for c in self._channels if c is not None and c.shared is not None)

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
        self._close_channel(worker)
        self._no_channel[worker] = False
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
        deadline = None if timeout is None else time.perf_counter() + timeout
        out = {}
        channel = [p for p in pending if isinstance(p, _ChannelCall)]
        tasks = [p for p in pending if not isinstance(p, _ChannelCall)]
        retry = []
        if channel:
            out, retry = self._gather_channel(channel, deadline, timeout)
        if retry:
            # Ordinary tasks tell a dead worker from a live one, and a live one hands
            # back the outcome of the call it already ran (or runs it now).
            tasks += [self._collect(p.worker, p.call_id, p.method, p.args) for p in retry]
        if tasks:
            # Retried calls have run (or their actor is gone): what is left to wait for
            # is a transfer or Ray's word on a dead actor, not the step's deadline.
            left = None if deadline is None else max(RETRY_WAIT_S if retry else 0.0,
                                                     deadline - time.perf_counter())
            out.update((c.worker, c) for c in self._gather_tasks(tasks, left))
        return [out[p[0] if isinstance(p, tuple) else p.worker] for p in pending]

    def _gather_channel(self, calls, deadline, timeout):
        out, retry = {}, []
        waiting = list(calls)
        while waiting:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready = direct_channel.readable([p.client for p in waiting], left)
            if not ready:
                break
            for p in [p for p in waiting if p.client in ready]:
                waiting.remove(p)
                try:
                    kind, value = p.client.read(p.call_id, direct_channel.FRAME_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - a broken channel (e.g. the actor died)
                    self._close_channel(p.worker)
                    retry.append(p)
                    continue
                if kind == direct_channel.TOO_LARGE:
                    self.stored_replies += 1
                    retry.append(p)       # the actor kept the outcome: collected as a task
                    continue
                now = time.perf_counter()
                out[p.worker] = (Completed(p.worker, value, None, now) if kind == "ok"
                                 else Completed(p.worker, error=value, done_at=now))
        for p in waiting:
            # Its reply may still come: closing the channel keeps it from being read
            # as the reply to a later call.
            self._close_channel(p.worker)
            out[p.worker] = Completed(p.worker, error=TimeoutError(f"no answer within {timeout} s"))
        return out, retry

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
        for w in range(len(getattr(self, "_channels", []))):
            self._close_channel(w)
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
        if self._channel_off:
            d["transport"] = "actor tasks"
        else:
            shared = [c is not None and c.shared is not None for c in self._channels]
            d["transport"] = ("direct channel (actor tasks for broadcasts and large results"
                              + (f"; shared memory for replies of {sum(shared)} worker(s) on this"
                                 " machine" if any(shared) else "") + ")")
        return d


def _holds_object_refs(ray, args) -> bool:
    """Whether an object-store handle is among ``args`` (a channel frame cannot carry one)."""
    for a in args:
        if isinstance(a, ray.ObjectRef):
            return True
        if isinstance(a, (list, tuple)) and _holds_object_refs(ray, a):
            return True
        if isinstance(a, dict) and _holds_object_refs(ray, a.values()):
            return True
    return False


class _ChannelCall:
    """A call in flight over a direct channel: enough to ask for it again."""

    __slots__ = ("worker", "client", "call_id", "method", "args")

    def __init__(self, worker, client, call_id, method, args):
        self.worker, self.client, self.call_id, self.method, self.args = (
            worker, client, call_id, method, args)


__all__ = ["RayEngine", "KernelError"]
