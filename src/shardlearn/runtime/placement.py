"""Which worker holds which shard: a pure decision, unit-tested without a cluster."""

from __future__ import annotations

from collections.abc import Sequence


def place_by_rows(shard_rows: Sequence[int], n_workers: int,
                  speeds: Sequence[float] | None = None) -> list[list[int]]:
    """Assign shards to workers so that rows (divided by speed) are balanced.

    Greedy longest-processing-time: shards taken largest first (ties by index)
    go to the worker whose load would end lowest (ties by worker id). The result
    lists each worker's shard indices in ascending order. Deterministic.

    Parameters
    ----------
    shard_rows : sequence of int
        Rows per shard, in shard order.
    n_workers : int
    speeds : sequence of float, optional
        Relative throughput of each worker (rows per second, any unit); equal when omitted.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}.")
    speeds = [1.0] * n_workers if speeds is None else [float(s) for s in speeds]
    if len(speeds) != n_workers or min(speeds) <= 0:
        raise ValueError("speeds needs one positive value per worker.")
    order = sorted(range(len(shard_rows)), key=lambda i: (-shard_rows[i], i))
    load = [0.0] * n_workers
    owned: list[list[int]] = [[] for _ in range(n_workers)]
    for i in order:
        w = min(range(n_workers), key=lambda k: ((load[k] + shard_rows[i]) / speeds[k], k))
        load[w] += shard_rows[i]
        owned[w].append(i)
    return [sorted(o) for o in owned]
