"""Where a fit's time and bytes went, per worker and per step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class WorkerTotals:
    """Totals for one worker over a fit.

    ``compute_s`` is time inside kernels; ``communication_s`` is the rest of each
    call's round trip (serialisation, transport, dispatch); ``waiting_s`` is time
    the worker sat idle while a step waited for slower workers.
    """

    worker: int
    shards: int = 0
    rows: int = 0
    compute_s: float = 0.0
    communication_s: float = 0.0
    waiting_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class StepTotals:
    name: str
    calls: int = 0
    wall_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class RuntimeReport:
    """Filled by the Coordinator as steps run."""

    engine: str
    n_workers: int
    n_shards: int
    n_rows: int
    workers: list[WorkerTotals]
    steps: dict[str, StepTotals] = field(default_factory=dict)
    load_s: float = 0.0
    failures_recovered: int = 0
    failures: list[dict] = field(default_factory=list)
    moves: list[dict] = field(default_factory=list)

    def record(self, name, wall, per_worker):
        """Add one step; ``per_worker`` maps worker -> (compute, comm, wait, bytes_in, bytes_out)."""
        st = self.steps.setdefault(name, StepTotals(name))
        st.calls += 1
        st.wall_s += wall
        for w, (comp, comm, wait, bin_, bout) in per_worker.items():
            t = self.workers[w]
            t.compute_s += comp
            t.communication_s += comm
            t.waiting_s += wait
            t.bytes_in += bin_
            t.bytes_out += bout
            st.bytes_in += bin_
            st.bytes_out += bout

    @property
    def steps_wall_s(self) -> float:
        return sum(s.wall_s for s in self.steps.values() if s.name != "load")

    @property
    def bytes_moved(self) -> int:
        return sum(w.bytes_in + w.bytes_out for w in self.workers)

    @property
    def time_lost_s(self) -> float:
        """Seconds lost to failures: failed attempts plus recoveries."""
        return sum(f["detect_s"] + f["recovery_s"] for f in self.failures)


@dataclass
class FitReport:
    """What every fitted estimator exposes as ``fit_report_``."""

    estimator: str
    engine: str
    n_workers: int
    n_shards: int
    n_rows: int
    n_iter: int
    #: Whether an iterative fit met its stopping criterion (a tolerance, early
    #: stopping); None for fits without one (trees, forests, a fixed number of
    #: boosting rounds).
    converged: bool | None
    objective_history: list[float]
    wall_s: float
    load_s: float
    workers_s: float
    driver_s: float
    bytes_moved: int
    workers: list[WorkerTotals]
    steps: list[StepTotals]
    failures_recovered: int = 0
    failures: list[dict] = field(default_factory=list)
    moves: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def time_lost_s(self) -> float:
        """Seconds lost to worker failures: failed attempts plus recoveries."""
        return sum(f.get("detect_s", 0.0) + f.get("recovery_s", 0.0) for f in self.failures)

    @classmethod
    def from_runtime(cls, estimator: str, rt: RuntimeReport, *, wall_s: float, n_iter: int,
                     converged: bool | None, objective_history, extra=None) -> FitReport:
        steps_wall = rt.steps_wall_s
        return cls(
            estimator=estimator, engine=rt.engine, n_workers=rt.n_workers, n_shards=rt.n_shards,
            n_rows=rt.n_rows, n_iter=int(n_iter),
            converged=None if converged is None else bool(converged),
            objective_history=[float(v) for v in objective_history], wall_s=wall_s,
            load_s=rt.load_s, workers_s=steps_wall,
            driver_s=max(0.0, wall_s - rt.load_s - steps_wall), bytes_moved=rt.bytes_moved,
            workers=list(rt.workers), steps=list(rt.steps.values()),
            failures_recovered=rt.failures_recovered, failures=list(rt.failures),
            moves=list(rt.moves), extra=dict(extra or {}),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"{self.estimator} on {self.engine} engine: {self.n_workers} workers, "
            f"{self.n_shards} shards, {self.n_rows} rows",
            f"  {self.n_iter} iterations, "
            + ("" if self.converged is None else f"converged={self.converged}, ") +
            f"final objective={self.objective_history[-1] if self.objective_history else float('nan'):.10g}",
            f"  wall {self.wall_s:.3f} s = load data {self.load_s:.3f} s + worker steps "
            f"{self.workers_s:.3f} s + driver {self.driver_s:.3f} s; "
            f"{self.bytes_moved / 1e6:.2f} MB moved",
        ]
        for w in self.workers:
            lines.append(
                f"  worker {w.worker}: {w.shards} shards/{w.rows} rows, compute {w.compute_s:.3f} s, "
                f"communication {w.communication_s:.3f} s, waiting {w.waiting_s:.3f} s, "
                f"in {w.bytes_in / 1e6:.2f} MB, out {w.bytes_out / 1e6:.2f} MB"
            )
        for s in self.steps:
            lines.append(f"  step {s.name}: {s.calls} calls, {s.wall_s:.3f} s")
        for m in self.moves:
            lines.append(f"  rebalanced: moved (shard, from, to) {m['moves']} in {m['seconds']:.3f} s")
        for f in self.failures:
            lines.append(f"  failure: worker {f['worker']} in step {f['step']!r} ({f['cause']}); "
                         f"detected after {f['detect_s']:.3f} s, recovered in "
                         f"{f['recovery_s']:.3f} s")
        return "\n".join(lines)

    __str__ = summary
