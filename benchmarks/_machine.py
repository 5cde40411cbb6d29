"""The machine's own limits, measured in the same run as a benchmark (shared with
``shardlearn bench``)."""

from shardlearn.runtime.machine import best_of, matmul_rate, memory_bandwidth

__all__ = ["best_of", "matmul_rate", "memory_bandwidth"]
