"""Kernels for timing the runtime itself (benchmarks/steps.py, tests)."""

from __future__ import annotations

import numpy as np


def array_of(shard, state, acc, nbytes):
    """A fold whose result is one array of ``nbytes`` per worker, made on its first
    shard, as a tree level returns its histograms. It lives in an importable module:
    a kernel defined in ``__main__`` travels by value with every call."""
    if acc is None:
        acc = np.ones(max(1, int(nbytes) // 8))
    return acc
