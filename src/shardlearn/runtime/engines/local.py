"""In-process engine: each worker is a single-thread executor over a WorkerCore.

Zero setup and zero copies: shards are views of the caller's arrays. One thread
per worker gives actor semantics (a worker runs its calls one at a time); numpy
and BLAS release the GIL, so workers compute in parallel.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

from threadpoolctl import ThreadpoolController

from ..worker import WorkerCore
from .base import Completed, Engine

_controller = None


def _blas_controller():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


class LocalEngine(Engine):
    name = "local"

    def __init__(self, n_workers: int | None = None):
        self.n_workers = int(n_workers or os.cpu_count() or 1)
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}.")
        self.cores = [WorkerCore(i) for i in range(self.n_workers)]
        self._pools = [self._new_pool(i) for i in range(self.n_workers)]
        # Set at shutdown: lets threads hung by fault injection return.
        self._release = threading.Event()

    @staticmethod
    def _new_pool(worker):
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"shardlearn-w{worker}")

    def _install_faults(self, worker):
        self.cores[worker].install_faults(self.faults_for(worker), hard_kill=False,
                                          release=self._release)

    def replace_worker(self, worker):
        # A hung thread cannot be killed: abandon it (it exits at shutdown) and
        # give the slot a fresh thread and an empty WorkerCore.
        self._pools[worker].shutdown(wait=False, cancel_futures=True)
        self._bump_incarnation(worker)
        self.cores[worker] = WorkerCore(worker)
        self._pools[worker] = self._new_pool(worker)
        self._install_faults(worker)

    def submit(self, worker, method, *args):
        fn = getattr(self.cores[worker], method)
        fut = self._pools[worker].submit(fn, *args)
        fut.add_done_callback(_stamp)
        return worker, fut

    def gather(self, pending, timeout=None):
        futs = [f for _, f in pending]
        done, not_done = wait_futures(futs, timeout=timeout)
        out = []
        for worker, fut in pending:
            if fut in not_done:
                out.append(Completed(worker, error=TimeoutError(f"no answer within {timeout} s")))
                continue
            err = fut.exception()
            out.append(Completed(worker, None if err else fut.result(), err,
                                 getattr(fut, "_shardlearn_done", time.perf_counter())))
        return out

    def fit_scope(self):
        # Kernels must give the same bits on every engine: one BLAS thread per
        # worker, as in a Ray actor (and no oversubscription of the cores).
        return _blas_controller().limit(limits=1)

    def shutdown(self):
        self._release.set()
        for p in self._pools:
            p.shutdown(wait=True, cancel_futures=True)
        self.cores = []


def _stamp(fut):
    fut._shardlearn_done = time.perf_counter()
