"""Datasets from files in storage: ``read_parquet``, ``read_csv``, ``open_dataset``."""

from __future__ import annotations

import os

import numpy as np

from ...io.storage import FileLocation, expand_files
from ..dataset import Dataset, ShardInfo
from ..planning import DEFAULT_SHARD_BYTES
from ._common import FileDataError, check_column_args, check_dtype, row_nbytes
from .csv import CSV_SUFFIXES, plan_csv
from .parquet import PARQUET_SUFFIXES, plan_parquet

FORMATS = {"parquet": PARQUET_SUFFIXES, "csv": CSV_SUFFIXES}


def _format_of(loc: FileLocation) -> str | None:
    name = loc.path.lower()
    for fmt, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _build(sources, features, *, label, weight, dtype) -> Dataset:
    per_row = row_nbytes(len(features), dtype.itemsize, label is not None, weight is not None)
    infos = [ShardInfo(i, src.n_rows, src.n_rows * per_row, src) for i, src in enumerate(sources)]
    return Dataset(infos, len(features), has_labels=label is not None,
                   has_weights=weight is not None,
                   feature_names=np.asarray(features, dtype=object), dtype=dtype)


def open_dataset(url, *, label: str | None = None, features=None, weight: str | None = None,
                 format: str | None = None, dtype=np.float64, storage_options: dict | None = None,
                 shard_rows: int | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 delimiter: str = ",") -> Dataset:
    """A :class:`~shardlearn.data.Dataset` over Parquet or CSV files in storage.

    The driver reads only metadata (Parquet footers; CSV headers and line
    offsets), checks every file, and plans shards; each worker then reads its own
    shards' rows straight from storage when a fit starts. No data is written or
    deleted.

    Parameters
    ----------
    url : str, path, or list of them
        A file, a directory (searched recursively for ``.parquet``/``.pq``/``.parq``
        or ``.csv`` files, skipping hidden files and ``_SUCCESS``-style markers), a
        glob (``s3://bucket/prefix/*.parquet``), or a list of these. Local paths,
        ``file://``, ``s3://``, ``gs://`` (with gcsfs) and ``hdfs://`` (pyarrow).
    label : str, optional
        The label column (read on the driver, alone, by ``Dataset.labels()``).
    features : list of str, optional
        Feature columns, in this order (only these are read). Default: every
        column except ``label`` and ``weight``; all files must then share one schema.
    weight : str, optional
        A sample-weight column.
    format : {"parquet", "csv"}, optional
        Default: from the file names.
    dtype : numpy.float64 or numpy.float32
        Features are converted to this type on the workers.
    storage_options : dict, optional
        File-system options (e.g. S3 ``endpoint_url``, ``key``, ``secret``,
        ``client_kwargs``). They travel with the shard sources to the workers;
        without them each process uses its own environment's configuration.
    shard_rows : int, optional
        Rows per shard (Parquet: whole row groups are kept together, so a shard
        may hold more when a row group is larger). Default: as many rows as make
        ``shard_bytes`` once loaded.
    shard_bytes : int
        Target loaded size of a shard when ``shard_rows`` is not given.
    delimiter : str
        CSV only.

    Returns
    -------
    Dataset
        Shards whose sources are file ranges (``load_on_worker=True``).

    Raises
    ------
    FileDataError (a ValueError)
        Naming the file (and column): schemas that differ, a missing label or
        feature column, non-numeric columns, empty, corrupt or truncated files.
    StorageError (an OSError)
        A URL that cannot be listed or read (missing, access denied, no credentials).
    """
    dtype = check_dtype(dtype)
    features, label, weight = check_column_args(label, features, weight)
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}.")
    suffixes = FORMATS[format] if format else PARQUET_SUFFIXES + CSV_SUFFIXES
    locations = expand_files(url, storage_options, suffixes=suffixes)
    if format is None:
        kinds = {}
        for loc in locations:
            fmt = _format_of(loc)
            if fmt is None:
                raise ValueError(
                    f"Cannot tell the format of {loc.url} from its name; pass format='parquet' "
                    "or format='csv'."
                )
            kinds.setdefault(fmt, loc)
        if len(kinds) > 1:
            raise FileDataError(
                f"The files mix formats ({kinds['parquet'].url} is Parquet, {kinds['csv'].url} is "
                "CSV); read one format at a time."
            )
        format = next(iter(kinds))
    common = dict(features=features, label=label, weight=weight, dtype=dtype,
                  shard_rows=shard_rows, shard_bytes=shard_bytes)
    if format == "parquet":
        sources, features = plan_parquet(locations, **common)
    else:
        sources, features = plan_csv(locations, delimiter=delimiter, **common)
    return _build(sources, features, label=label, weight=weight, dtype=dtype)


def read_parquet(url, label: str | None = None, features=None, weight: str | None = None,
                 dtype=np.float64, storage_options: dict | None = None,
                 shard_rows: int | None = None, *, shard_bytes: int = DEFAULT_SHARD_BYTES) -> Dataset:
    """A Dataset over Parquet files; shards are row-group ranges read by the workers.

    See :func:`open_dataset` for the parameters. Example::

        ds = shardlearn.read_parquet("s3://bucket/prefix/*.parquet", label="y")
        LogisticRegression().fit(ds)
    """
    return open_dataset(url, label=label, features=features, weight=weight, format="parquet",
                        dtype=dtype, storage_options=storage_options, shard_rows=shard_rows,
                        shard_bytes=shard_bytes)


def read_csv(url, label: str | None = None, features=None, weight: str | None = None,
             dtype=np.float64, storage_options: dict | None = None,
             shard_rows: int | None = None, *, shard_bytes: int = DEFAULT_SHARD_BYTES,
             delimiter: str = ",") -> Dataset:
    """A Dataset over CSV files (with a header line); shards are byte ranges of whole lines.

    See :func:`open_dataset` for the parameters.
    """
    return open_dataset(url, label=label, features=features, weight=weight, format="csv",
                        dtype=dtype, storage_options=storage_options, shard_rows=shard_rows,
                        shard_bytes=shard_bytes, delimiter=delimiter)


def is_file_dataset(dataset: Dataset) -> bool:
    """True when every shard of ``dataset`` is read from storage by the workers."""
    return all(getattr(s.source, "load_on_worker", False) for s in dataset.shards)


def source_files(dataset: Dataset) -> list[str]:
    """The file URLs a file dataset reads, in shard order, each once."""
    seen: dict[str, None] = {}
    for s in dataset.shards:
        loc = getattr(s.source, "location", None)
        if loc is not None:
            seen.setdefault(loc.url, None)
    return list(seen)


def looks_like_files(url) -> bool:
    """Whether a CLI ``--data`` value should go through these readers.

    True for storage URLs, globs, directories, lists, and ``.parquet``/``.csv`` names.
    """
    if isinstance(url, (list, tuple)):
        return True
    text = os.fspath(url)
    if "://" in text or any(ch in text for ch in "*?["):
        return True
    if os.path.isdir(text):
        return True
    return text.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)


__all__ = ["FileDataError", "is_file_dataset", "looks_like_files", "open_dataset",
           "read_csv", "read_parquet", "source_files"]
