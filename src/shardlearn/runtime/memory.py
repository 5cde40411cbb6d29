"""Will the planned shards fit the workers' memory? Checked before any shard is read.

Memory a fit needs on one worker, per row it holds (``d`` features, ``K`` classes,
``b`` = 8 bytes for float64 features or 4 for float32):

================================  =================================================
what                              bytes per row
================================  =================================================
the shard: features               ``d * b``
the shard: label, sample weight   8 each when present (object labels: ~8 + the strings)
LogisticRegression, binary        +24: encoded label, row weight, curvature (Hessian)
LogisticRegression, K classes     +16 + 8 K: class index, row weight, probabilities
LinearSVC (one-vs-rest, K)        +8 K (+/-1 targets) + 8 K (weights) + K (active set)
LinearRegression / Ridge          +0 per row: one pass of Gram sums (d x d per shard)
================================  =================================================

Plus, while a shard is read from storage, its Arrow columns (about the shard's
size again) until the conversion ends, so the largest shard of each worker is
counted twice. Kernels work in L2-sized row chunks, so their temporaries do not
grow with the rows.

Example: 10 million rows x 50 float64 features with binary labels, logistic
regression on 4 workers: (50 x 8 + 8 + 24) x 2.5e6 = 1.08 GB per worker, plus
the read buffer of its largest shard (16 MiB by default).

The Coordinator calls :func:`check_worker_memory` before shipping shards that
workers read themselves (file datasets): it asks each worker for the memory
available on its host (``MemAvailable``, bounded by the container's cgroup limit;
``SHARDLEARN_MEMORY_LIMIT`` overrides it, in bytes or with a K/M/G suffix),
adds up the planned bytes of the workers sharing a host, and raises
:class:`InsufficientMemoryError` when they exceed 80 % of it, before reading.
"""

from __future__ import annotations

import os
import socket

from .errors import ShardlearnRuntimeError

#: Per-row fit state assumed when the algorithm does not say (binary logistic: 24).
DEFAULT_STATE_BYTES_PER_ROW = 32

#: Share of the available memory the planned shards may take (the rest: Python,
#: Arrow buffers, the OS, other processes).
USABLE_FRACTION = 0.8

ENV_LIMIT = "SHARDLEARN_MEMORY_LIMIT"


class InsufficientMemoryError(ShardlearnRuntimeError, MemoryError):
    """The planned shards would not fit the workers' memory (raised before reading)."""


def _parse_bytes(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _cgroup_available() -> int | None:
    """What the container's memory limit leaves (cgroup v2 or v1), if there is a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                raw = f.read().strip()
            if raw == "max":
                return None
            limit = int(raw)
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 1 << 60:  # "no limit" in cgroup v1
            return None
        return max(0, limit - usage)
    return None


def available_memory() -> int | None:
    """Bytes this process's host can still give (None when it cannot be told)."""
    override = os.environ.get(ENV_LIMIT)
    if override:
        return _parse_bytes(override)
    values = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(values) if values else None


def host_memory_info() -> dict:
    """What a worker reports: its host, process and available memory."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "available": available_memory()}


def plan_worker_bytes(shard_nbytes, shard_rows, placement, *, state_bytes_per_row: int,
                      read_here=None) -> list[int]:
    """Bytes each worker needs for its shards: data, per-row fit state, one read buffer.

    ``read_here[i]``: shard ``i`` is read from storage on the worker (its data is
    new memory there, plus a read buffer). Other shards count their state only.
    """
    read_here = read_here if read_here is not None else [True] * len(shard_nbytes)
    out = []
    for ids in placement:
        data = sum(shard_nbytes[i] for i in ids if read_here[i])
        state = sum(shard_rows[i] for i in ids) * state_bytes_per_row
        buffer = max((shard_nbytes[i] for i in ids if read_here[i]), default=0)
        out.append(int(data + state + buffer))
    return out


def check_fits(need: list[int], infos: list[dict | None], *, usable_fraction: float = USABLE_FRACTION,
               detail: str = "") -> None:
    """Raise InsufficientMemoryError when the workers of a host need more than it has.

    ``need[w]``: planned bytes of worker ``w``; ``infos[w]``: its
    :func:`host_memory_info` (None or an unknown ``available`` skips that worker).
    """
    hosts: dict[str, dict] = {}
    for w, info in enumerate(infos):
        if not info or info.get("available") is None:
            continue
        h = hosts.setdefault(info["host"], {"need": 0, "workers": [], "available": info["available"]})
        h["need"] += need[w]
        h["workers"].append(w)
        h["available"] = min(h["available"], info["available"])
    for host, h in hosts.items():
        usable = h["available"] * usable_fraction
        if h["need"] > usable:
            raise InsufficientMemoryError(
                f"The planned shards do not fit in memory: worker(s) {h['workers']} on host "
                f"{host!r} need about {_gb(h['need'])} ({detail}) but {_gb(h['available'])} is "
                f"available there ({usable_fraction:.0%} of it usable). Nothing was read. Use more "
                "workers or nodes, float32 features (dtype=numpy.float32), fewer feature columns "
                "(features=[...]) or fewer files; see shardlearn.runtime.memory for the bytes per "
                f"row of each estimator (override the measured memory with {ENV_LIMIT})."
            )


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_worker_memory(coord, state_bytes_per_row: int | None = None) -> None:
    """The Coordinator's check before shipping: only for shards the workers read themselves."""
    ds = coord.dataset
    read_here = [bool(getattr(s.source, "load_on_worker", False)) for s in ds.shards]
    if not any(read_here):
        return
    per_row = DEFAULT_STATE_BYTES_PER_ROW if state_bytes_per_row is None else int(state_bytes_per_row)
    need = plan_worker_bytes([s.nbytes for s in ds.shards], [s.n_rows for s in ds.shards],
                             coord.placement, state_bytes_per_row=per_row, read_here=read_here)
    engine = coord.engine
    workers = [w for w, ids in enumerate(coord.placement) if ids]
    try:
        done = engine.gather([engine.submit(w, "memory_info") for w in workers], timeout=60)
    except Exception:  # noqa: BLE001 - no answer: the load step will report the worker
        return
    infos: list[dict | None] = [None] * len(coord.placement)
    for w, c in zip(workers, done):
        infos[w] = c.value if c.error is None and isinstance(c.value, dict) else None
    itemsize = ds.dtype.itemsize
    detail = (f"{ds.n_rows} rows x {ds.n_features} features x {itemsize} bytes plus labels/"
              f"weights, {per_row} bytes/row of fit state, and a read buffer per worker")
    check_fits(need, infos, detail=detail)
