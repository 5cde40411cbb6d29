"""Data layer: datasets, shards, planning and validation."""

from .dataset import Dataset, ShardInfo
from .planning import DEFAULT_SHARD_BYTES, plan_shard_count, row_boundaries
from .readers import open_dataset, read_csv, read_parquet
from .shard import ArraySliceSource, Shard, ShardSource

__all__ = [
    "ArraySliceSource",
    "DEFAULT_SHARD_BYTES",
    "Dataset",
    "Shard",
    "ShardInfo",
    "ShardSource",
    "open_dataset",
    "plan_shard_count",
    "read_csv",
    "read_parquet",
    "row_boundaries",
]
