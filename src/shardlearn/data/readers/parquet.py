"""Parquet: the driver reads footers only; each worker reads its own row groups.

Planning (driver): for every file, the footer (schema, row count of each row group).
Shards are ranges of consecutive row groups of one file, about ``shard_rows`` rows
(or ``shard_bytes`` bytes once loaded) each; a row group is never split, so a file
with one huge row group is one shard. The plan depends on the files only, never
on the number of workers.

Loading (worker): :class:`ParquetRowGroupSource` opens its file, checks that the
row groups still hold the planned rows, reads only the needed columns of its row
groups, converts them to a C-contiguous float array, and checks values (NaN/inf,
missing labels, bad weights) naming the file, column and row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...io.storage import FileLocation, StorageError, storage_error
from ..planning import row_boundaries
from ._common import (
    FileDataError,
    TableShardSource,
    group_rows,
    map_files,
    resolve_features,
    row_nbytes,
    target_rows,
)

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def _open_parquet(loc: FileLocation):
    """(ParquetFile, file handle or None) for a location; errors name the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle = None
    try:
        if loc.is_local:
            # Memory-mapped: pages are decoded straight from the page cache (no read copy).
            return pq.ParquetFile(loc.path, memory_map=True), None
        handle = loc.open("rb")
        # Remote: coalesce the column-chunk reads of a row group into few ranged GETs.
        return pq.ParquetFile(handle, pre_buffer=True), handle
    except StorageError:
        raise
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        if handle is not None:
            handle.close()
        if isinstance(exc, (FileNotFoundError, PermissionError)) or (
                isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException)
                and not loc.is_local):
            raise storage_error(loc.url, exc) from None
        raise FileDataError(
            f"{loc.url} is not a readable Parquet file (corrupt or truncated?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "Rewrite it, or leave it out of the file list."
        ) from None


@dataclass
class ParquetFooter:
    location: FileLocation
    schema: dict
    row_group_rows: list[int]

    @property
    def n_rows(self) -> int:
        return int(sum(self.row_group_rows))


def read_footer(loc: FileLocation) -> ParquetFooter:
    """Schema and row-group sizes of one file (its footer; no data pages are read)."""
    if loc.size == 0:
        raise FileDataError(f"{loc.url} is empty (0 bytes); it is not a Parquet file. "
                            "Remove it or rewrite it.")
    pf, handle = _open_parquet(loc)
    try:
        md = pf.metadata
        schema = {f.name: f.type for f in pf.schema_arrow}
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    finally:
        if handle is not None:
            handle.close()
    if sum(sizes) == 0:
        raise FileDataError(f"{loc.url} has no rows (an empty Parquet file). Remove it from the "
                            "file list, or write the data into it.")
    return ParquetFooter(loc, schema, sizes)


@dataclass(frozen=True)
class ParquetRowGroupSource(TableShardSource):
    """Row groups ``[rg_start, rg_stop)`` of one Parquet file: rebuilds one shard on a worker.

    Small and picklable (a URL, a range, column names and storage options);
    loading it twice, anywhere, gives the same bytes.
    """

    location: FileLocation
    rg_start: int
    rg_stop: int
    first_row: int
    n_rows: int
    features: tuple[str, ...]
    label: str | None
    weight: str | None
    dtype: str
    #: Rows of the row-group range skipped before this shard's rows: an oversized
    #: row group is split into several shards that each keep one slice of it.
    skip: int = 0
    #: NaN features pass (estimators that treat them as missing); see TableShardSource.
    allow_missing: bool = False
    #: Rows in the whole row-group range (-1: the same as ``n_rows``).
    range_rows: int = -1
    load_on_worker: ClassVar[bool] = True

    @property
    def columns(self) -> list[str]:
        return list(self.features) + [c for c in (self.label, self.weight) if c is not None]

    def _read(self, columns):
        import pyarrow as pa

        pf, handle = _open_parquet(self.location)
        try:
            md = pf.metadata
            rows = [md.row_group(i).num_rows for i in range(min(md.num_row_groups, self.rg_stop))]
            expected = self.n_rows if self.range_rows < 0 else self.range_rows
            if md.num_row_groups < self.rg_stop or sum(rows[self.rg_start:self.rg_stop]) != expected:
                raise FileDataError(
                    f"{self.location.url} changed since the data was planned: row groups "
                    f"{self.rg_start}..{self.rg_stop - 1} no longer hold {expected} rows. "
                    "Do not modify files while they are being trained on; open the dataset again."
                )
            try:
                table = pf.read_row_groups(range(self.rg_start, self.rg_stop), columns=columns,
                                           use_threads=True)
                if self.range_rows >= 0:
                    table = table.slice(self.skip, self.n_rows)
                return table
            except (pa.ArrowException, OSError) as exc:
                if isinstance(exc, (FileNotFoundError, PermissionError)):
                    raise storage_error(self.location.url, exc) from None
                raise FileDataError(
                    f"{self.location.url}: row groups {self.rg_start}..{self.rg_stop - 1} could not "
                    f"be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                    "the file is corrupt or truncated, or the storage stopped answering."
                ) from None
        finally:
            if handle is not None:
                handle.close()

    def describe(self) -> str:
        return (f"rows {self.first_row}:{self.first_row + self.n_rows} (row groups "
                f"{self.rg_start}..{self.rg_stop - 1}) of {self.location.url}")


def plan_parquet(locations: list[FileLocation], *, features, label, weight, dtype,
                 shard_rows, shard_bytes):
    """Check every footer and cut the files into row-group-range sources.

    Returns ``(sources, features)``.
    """
    footers = map_files(read_footer, locations)
    features = resolve_features(footers, features, label, weight)
    per_row = row_nbytes(len(features), np.dtype(dtype).itemsize, label is not None, weight is not None)
    rows_target = target_rows(shard_rows, shard_bytes, per_row)
    sources = []
    for ft in footers:
        offsets = np.concatenate([[0], np.cumsum(ft.row_group_rows)])
        for a, b, rows in group_rows(ft.row_group_rows, rows_target):
            # A row group far larger than a shard is split into slices, so no worker
            # holds an oversized shard (the whole group is read, then sliced).
            pieces = max(1, int(rows) // rows_target) if b - a == 1 else 1
            bounds = row_boundaries(int(rows), pieces)
            for k in range(pieces):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                sources.append(ParquetRowGroupSource(
                    ft.location, a, b, int(offsets[a]) + lo, hi - lo, tuple(features), label,
                    weight, np.dtype(dtype).name, skip=lo,
                    range_rows=-1 if pieces == 1 else int(rows),
                ))
    return sources, list(features)
