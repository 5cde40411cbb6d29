"""How many shards, and where their boundaries fall: a function of the data only.

The shard count never depends on the worker count, so the same data gives the
same shards (and the same model) on 1 worker or 64.
"""

from __future__ import annotations

import math

import numpy as np

#: Default target size of one shard. Small enough that several shards keep 2-16
#: workers balanced and a shard's working set stays near the last-level cache;
#: large enough that per-shard overhead (a few microseconds per call) is noise.
DEFAULT_SHARD_BYTES = 16 * 2**20

#: Never cut shards smaller than this many rows unless the data is smaller.
MIN_SHARD_ROWS = 1024

#: Data too large for one shard gets at least this many. With a handful of shards,
#: whole shards cannot be spread evenly (3 shards on 2 workers leave one worker
#: idle a third of the time); 8 divide evenly over 2, 4 or 8 workers and leave
#: 3 workers at 3:3:2.
MIN_SPLIT_SHARDS = 8


def plan_shard_count(n_rows: int, row_nbytes: float, *, shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Number of shards for ``n_rows`` rows of ``row_nbytes`` bytes each: one per
    ``shard_bytes``, at least :data:`MIN_SPLIT_SHARDS` once there is more than one,
    and none under :data:`MIN_SHARD_ROWS` rows."""
    if n_rows <= 0:
        raise ValueError(f"cannot plan shards for {n_rows} rows; the data is empty.")
    by_bytes = math.ceil(n_rows * max(row_nbytes, 1.0) / shard_bytes)
    if by_bytes > 1:
        by_bytes = max(by_bytes, MIN_SPLIT_SHARDS)
    by_rows = max(1, n_rows // MIN_SHARD_ROWS)
    return int(max(1, min(by_bytes, by_rows)))


def row_boundaries(n_rows: int, n_shards: int) -> np.ndarray:
    """Offsets ``[0, ..., n_rows]`` of ``n_shards`` contiguous blocks of near-equal size."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}.")
    if n_shards > n_rows:
        raise ValueError(
            f"n_shards={n_shards} is larger than the number of rows ({n_rows}); "
            "every shard needs at least one row. Use fewer shards."
        )
    base, extra = divmod(n_rows, n_shards)
    sizes = np.full(n_shards, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])
