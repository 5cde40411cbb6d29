"""Data layer: datasets, shards, planning and validation."""

from .dataset import Dataset, ShardInfo
from .planning import DEFAULT_SHARD_BYTES, plan_shard_count, row_boundaries
from .shard import ArraySliceSource, Shard, ShardSource

__all__ = [
    "ArraySliceSource",
    "DEFAULT_SHARD_BYTES",
    "Dataset",
    "Shard",
    "ShardInfo",
    "ShardSource",
    "plan_shard_count",
    "row_boundaries",
]
