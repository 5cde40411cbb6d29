"""Fault injection for tests of every backend: kill, hang or slow a worker, deterministically."""

from __future__ import annotations

import contextlib
import os
import signal

from ..runtime.faults import FaultSpec
from ..runtime.session import get_session


@contextlib.contextmanager
def inject_faults(*specs: FaultSpec, session=None):
    """Arm ``specs`` on the session's engine for the block, then disarm them.

    Example: kill worker 1 (a real SIGKILL of its process on Ray) on its third
    ``loss_grad`` call, and its replacement on its first::

        with inject_faults(FaultSpec(1, "kill", step="loss_grad", call=2),
                           FaultSpec(1, "kill", step="loss_grad", call=0, attempt=1)):
            model.fit(X, y)
    """
    engine = (session or get_session()).engine
    engine.set_fault_plan(specs)
    try:
        yield engine
    finally:
        if not getattr(session or get_session(), "closed", False):
            engine.set_fault_plan(())


def kill_worker_process(worker: int, session=None) -> int:
    """SIGKILL a Ray worker's process from outside (as an OOM killer would). Returns its pid."""
    engine = (session or get_session()).engine
    if engine.name != "ray":
        raise ValueError("kill_worker_process needs the Ray engine; use inject_faults on 'local'.")
    pid = engine.worker_pid(worker)
    os.kill(pid, signal.SIGKILL)
    return pid
