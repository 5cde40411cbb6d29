"""The machine's own limits, measured where they are quoted (benchmarks, ``shardlearn bench``)."""

from __future__ import annotations

import time

import numpy as np


def best_of(fn, repeat=3):
    """Smallest wall time of ``repeat`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def memory_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes per second of a numpy sum over an array much larger than the caches."""
    a = np.ones(nbytes // 8)
    a.sum()
    return a.nbytes / best_of(a.sum)


def matmul_rate(n: int = 2048, threads: int | None = None) -> float:
    """FLOP per second of a float64 numpy matmul (n x n), with ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    with threadpool_limits(limits=threads):
        A @ B
        return 2 * n**3 / best_of(lambda: A @ B)
