"""Readers: datasets over Parquet and CSV files in storage, read by the workers.

``read_parquet`` / ``read_csv`` / ``open_dataset`` plan shards from metadata on the
driver (Parquet footers; CSV headers and line offsets); each shard's source is a
small picklable description (file URL, row-group or byte range, columns, dtype,
storage options) that a worker turns into rows when a fit starts.

Validation, before any training work:

- on the driver, from metadata only, when the dataset is opened: files that
  cannot be listed or read (missing, access denied, no credentials), empty,
  corrupt or truncated files, schemas that differ between files, missing label /
  feature / weight columns, non-numeric columns — each error names the file and
  column (``FileDataError``, a ValueError; ``StorageError``, an OSError);
- on the driver, when an estimator asks for ``dataset.labels()``: the label
  column alone (one value per row) — missing labels, NaN, a single class;
- on the workers, in the load step (``Coordinator`` entry), right after each
  worker reads its rows and before the first kernel runs: NaN/inf features,
  missing values, negative or non-finite weights, naming the file, column and
  row. Checking values needs the values, and only the workers read them.

Reading never writes or deletes anything in storage.
"""

from ._common import FileDataError, clear_read_log, read_log
from .api import (
    is_file_dataset,
    looks_like_files,
    open_dataset,
    read_csv,
    read_parquet,
    source_files,
)
from .csv import CsvByteRangeSource
from .parquet import ParquetRowGroupSource
from .predictions import predict_to_parquet, score_dataset, write_parquet_columns

__all__ = [
    "CsvByteRangeSource", "FileDataError", "ParquetRowGroupSource", "clear_read_log",
    "is_file_dataset", "looks_like_files", "open_dataset", "predict_to_parquet", "read_csv",
    "read_log", "read_parquet", "score_dataset", "source_files", "write_parquet_columns",
]
