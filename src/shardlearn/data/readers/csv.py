"""CSV: shards are byte ranges of whole lines; each worker parses its own range.

Planning (driver), per file: the header line and the column types (inferred from
the first block, ~1 MiB), then one streaming pass over the bytes that counts
lines and records cut points: a shard is ``shard_rows`` lines (or as many lines
as make ``shard_bytes`` once loaded), cut at a line start. The driver holds one
8 MiB block at a time and keeps only the cut offsets and row counts; it never
parses the values. (Parquet needs no such pass: its footer has the row counts.)

Loading (worker): :class:`CsvByteRangeSource` reads bytes ``[start, stop)`` of its
file, prepends the header, parses with pyarrow (features as float64, so every
shard parses a column the same way), checks the row count against the plan, then
checks values like the Parquet reader.

Not supported: newlines inside quoted values (pyarrow's default), and compressed
CSV (a compressed file cannot be split by byte ranges; convert it to Parquet).
Blank lines are skipped, as pyarrow does.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...io.storage import FileLocation, storage_error
from ._common import (
    FileDataError,
    TableShardSource,
    map_files,
    resolve_features,
    row_nbytes,
    target_rows,
)

CSV_SUFFIXES = (".csv",)
_HEAD_BYTES = 1 << 20
_MAX_HEADER_BYTES = 16 << 20
_SCAN_BYTES = 8 << 20


def _read_options(use_threads=True):
    import pyarrow.csv as pacsv

    return pacsv.ReadOptions(use_threads=use_threads)


@dataclass
class CsvHead:
    location: FileLocation
    header: bytes
    schema: dict


def read_head(loc: FileLocation, delimiter: str) -> CsvHead:
    """Header line and column types (from the first block) of one CSV file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if loc.size == 0:
        raise FileDataError(f"{loc.url} is empty (0 bytes); a CSV file needs a header line and rows.")
    try:
        with loc.open("rb") as f:
            head = f.read(_HEAD_BYTES)
            at_eof = len(head) < _HEAD_BYTES
            while b"\n" not in head and not at_eof and len(head) < _MAX_HEADER_BYTES:
                more = f.read(_HEAD_BYTES)
                at_eof = len(more) < _HEAD_BYTES
                head += more
    except FileDataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(loc.url, exc) from None
    if head.lower().startswith(b"\x1f\x8b") or head.startswith(b"PK\x03\x04"):
        raise FileDataError(f"{loc.url} looks compressed; shardlearn reads plain CSV only "
                            "(it splits files by byte ranges). Decompress it or convert it to Parquet.")
    nl = head.find(b"\n")
    header = head[:nl + 1] if nl >= 0 else head
    body = head if at_eof else head[:head.rfind(b"\n") + 1]
    if not body[len(header):].strip():
        raise FileDataError(f"{loc.url} has a header line but no data rows.")
    try:
        table = pacsv.read_csv(io.BytesIO(body), read_options=_read_options(False),
                               parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except pa.ArrowException as exc:
        raise FileDataError(f"{loc.url} is not a readable CSV file: {str(exc).splitlines()[0]}") from None
    names = table.column_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FileDataError(f"{loc.url}: the header names column(s) {dup} more than once; rename them.")
    return CsvHead(loc, header, {f.name: f.type for f in table.schema})


def scan_ranges(loc: FileLocation, start: int, rows_per_shard: int) -> list[tuple[int, int, int]]:
    """Byte ranges ``(start, stop, rows)`` of ``rows_per_shard`` non-blank lines each.

    One streaming pass over the file from ``start`` (the first data line): only
    newline positions are looked at. The last range holds the remaining rows.
    """
    ranges: list[tuple[int, int, int]] = []
    shard_start, rows = start, 0
    prev_nl = start - 1          # absolute position of the last newline seen
    pos = start                  # absolute position of the next byte to read
    last_byte = 10
    try:
        with loc.open("rb") as f:
            f.seek(start)
            while True:
                chunk = f.read(_SCAN_BYTES)
                if not chunk:
                    break
                arr = np.frombuffer(chunk, dtype=np.uint8)
                nl = np.flatnonzero(arr == 10)
                if nl.size:
                    ends = nl + pos
                    starts = np.empty_like(ends)
                    starts[0] = prev_nl + 1
                    starts[1:] = ends[:-1] + 1
                    length = ends - starts
                    before = np.where(nl > 0, arr[np.maximum(nl - 1, 0)], last_byte)
                    blank = (length == 0) | ((length == 1) & (before == 13))
                    cum = np.cumsum(~blank) + rows
                    j = 1
                    while cum[-1] >= j * rows_per_shard:
                        k = int(np.searchsorted(cum, j * rows_per_shard, side="left"))
                        stop = int(ends[k]) + 1
                        ranges.append((shard_start, stop, rows_per_shard))
                        shard_start = stop
                        j += 1
                    rows = int(cum[-1]) - (j - 1) * rows_per_shard
                    prev_nl = int(ends[-1])
                pos += len(chunk)
                last_byte = int(arr[-1])
    except FileDataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise storage_error(loc.url, exc) from None
    tail = pos - (prev_nl + 1)
    if tail > 1 or (tail == 1 and last_byte != 13):
        rows += 1
    if rows > 0:
        ranges.append((shard_start, pos, rows))
    elif ranges:
        a, _, r = ranges[-1]
        ranges[-1] = (a, pos, r)
    return ranges


def _column_types(schema: dict, features, label, weight, label_type):
    import pyarrow as pa

    types = {}
    for c in list(features) + ([weight] if weight else []):
        types[c] = pa.bool_() if pa.types.is_boolean(schema.get(c, pa.null())) else pa.float64()
    if label is not None:
        types[label] = label_type
    return types


@dataclass(frozen=True)
class CsvByteRangeSource(TableShardSource):
    """Bytes ``[start, stop)`` (whole lines) of one CSV file: rebuilds one shard on a worker."""

    location: FileLocation
    header: bytes
    start: int
    stop: int
    first_row: int
    n_rows: int
    features: tuple[str, ...]
    label: str | None
    weight: str | None
    dtype: str
    label_type: str | None
    bool_columns: tuple[str, ...] = ()
    delimiter: str = ","
    #: NaN features pass (estimators that treat them as missing); see TableShardSource.
    allow_missing: bool = False
    load_on_worker: ClassVar[bool] = True

    @property
    def columns(self) -> list[str]:
        return list(self.features) + [c for c in (self.label, self.weight) if c is not None]

    def _types(self, columns):
        import pyarrow as pa

        out = {}
        for c in columns:
            if c == self.label:
                out[c] = pa.type_for_alias(self.label_type)
            else:
                out[c] = pa.bool_() if c in self.bool_columns else pa.float64()
        return out

    def _read(self, columns):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        url = self.location.url
        try:
            with self.location.open("rb") as f:
                f.seek(self.start)
                data = f.read(self.stop - self.start)
        except Exception as exc:  # noqa: BLE001
            raise storage_error(url, exc) from None
        if len(data) != self.stop - self.start:
            raise FileDataError(f"{url} changed since the data was planned (it is shorter now). "
                                "Do not modify files while they are being trained on.")
        rows = f"data rows {self.first_row}..{self.first_row + self.n_rows - 1}"
        try:
            table = pacsv.read_csv(
                io.BytesIO(self.header + data), read_options=_read_options(True),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
                convert_options=pacsv.ConvertOptions(column_types=self._types(columns),
                                                     include_columns=columns),
            )
        except pa.ArrowException as exc:
            msg = str(exc).splitlines()[0]
            m = re.search(r"column #(\d+)", str(exc))
            names = pacsv.read_csv(io.BytesIO(self.header), parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter)).column_names if m else []
            col = names[int(m.group(1))] if m and int(m.group(1)) < len(names) else None
            what = f"column {col!r} has a value that is not a number" if col and "conversion" in msg \
                else "the rows could not be parsed"
            raise FileDataError(f"{url}: {what} in {rows} ({msg}). Fix or drop those rows.") from None
        if table.num_rows != self.n_rows:
            raise FileDataError(
                f"{url}: {rows} parsed into {table.num_rows} rows instead of {self.n_rows}; the "
                "file has newlines inside quoted values (not supported) or changed since planning."
            )
        return table

    row_unit = "data row"

    def _bytes_read(self, table) -> int:
        return self.stop - self.start    # the byte range parsed, whatever columns were kept

    def describe(self) -> str:
        return (f"data rows {self.first_row}:{self.first_row + self.n_rows} (bytes "
                f"{self.start}:{self.stop}) of {self.location.url}")


def _unify_label_type(heads, label):
    import pyarrow as pa

    types = [h.schema[label] for h in heads]
    if any(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
        return "string"
    if any(pa.types.is_floating(t) or pa.types.is_null(t) for t in types):
        return "double"
    if all(pa.types.is_boolean(t) for t in types):
        return "bool"
    if any(pa.types.is_boolean(t) for t in types):
        return "double"
    return "int64"


def plan_csv(locations: list[FileLocation], *, features, label, weight, dtype, shard_rows,
             shard_bytes, delimiter=","):
    """Check every header and cut the files into byte-range sources: ``(sources, features)``."""
    import pyarrow as pa

    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be one character, got {delimiter!r}.")
    heads = map_files(lambda loc: read_head(loc, delimiter), locations)
    features = resolve_features(heads, features, label, weight)
    label_type = _unify_label_type(heads, label) if label is not None else None
    bool_columns = tuple(c for c in features if all(pa.types.is_boolean(h.schema[c]) for h in heads))
    per_row = row_nbytes(len(features), np.dtype(dtype).itemsize, label is not None, weight is not None)
    rows_target = target_rows(shard_rows, shard_bytes, per_row)
    ranges = map_files(lambda h: scan_ranges(h.location, len(h.header), rows_target), heads)
    sources = []
    for h, rr in zip(heads, ranges):
        if not rr:
            raise FileDataError(f"{h.location.url} has a header line but no data rows.")
        first = 0
        for a, b, n in rr:
            sources.append(CsvByteRangeSource(
                h.location, h.header, a, b, first, n, tuple(features), label, weight,
                np.dtype(dtype).name, label_type, bool_columns, delimiter,
            ))
            first += n
    return sources, list(features)
