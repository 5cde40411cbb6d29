"""Runtime: sessions, engines, the Coordinator, placement and metrics."""

from .coordinator import Broadcast, Coordinator, steps_started
from .errors import KernelError, ShardlearnRuntimeError, WorkerFailedError, WorkerLostError
from .faults import FaultSpec
from .metrics import FitReport, RuntimeReport
from .placement import place_by_rows
from .session import Session, current_session, get_session, init, shutdown

__all__ = [
    "Broadcast", "Coordinator", "FaultSpec", "WorkerFailedError", "FitReport", "KernelError", "RuntimeReport", "Session",
    "ShardlearnRuntimeError", "WorkerLostError", "current_session", "get_session", "init",
    "place_by_rows", "shutdown", "steps_started",
]
