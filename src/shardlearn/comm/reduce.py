"""Combining per-shard results in shard order: deterministic whatever order they arrive in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def add(a, b):
    """Default combine: elementwise sum of arrays, scalars, or tuples/lists of them."""
    if isinstance(a, tuple):
        return tuple(add(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, list):
        return [add(x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, dict):
        return {k: add(a[k], b[k]) for k in a}
    return a + b


def ordered_reduce(results: Sequence, combine: Callable | None = None):
    """Left fold of ``results`` (already in shard order) with ``combine``.

    A fixed order makes floating-point sums bit-identical whatever the number
    of workers, the placement, or the arrival order.
    """
    if not results:
        raise ValueError("nothing to reduce: the step returned no shard results.")
    combine = combine or add
    acc = _copy(results[0])
    for r in results[1:]:
        acc = combine(acc, r)
    return acc


def _copy(x):
    # The first result may be a worker-owned or read-only buffer; folding into
    # it in place would alias worker state on the in-process engine.
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, tuple):
        return tuple(_copy(v) for v in x)
    if isinstance(x, list):
        return [_copy(v) for v in x]
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    return x
