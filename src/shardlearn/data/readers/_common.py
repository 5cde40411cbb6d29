"""What the Parquet and CSV readers share: column rules, conversion, checks, a read log."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from ...io.storage import FileLocation
from ..validation import _first_nonfinite

#: Bytes of the row-major matrix filled per block from the columns: small enough
#: that the block stays in the L2 cache while every column is copied into it.
_BLOCK_BYTES = 512 * 2**10

#: pandas writes its index as these columns; they are never features.
_INDEX_PREFIX = "__index_level_"


class FileDataError(ValueError):
    """A data file cannot be used as it is: names the file, and the column or row."""


# -- a record of every read, per process (tests and diagnostics) -----------------------
_READS: deque = deque(maxlen=10_000)
_READS_LOCK = threading.Lock()


def record_read(url: str, kind: str, n_rows: int, columns, nbytes: int) -> None:
    entry = {"pid": os.getpid(), "thread": threading.current_thread().name, "url": url,
             "kind": kind, "rows": int(n_rows), "columns": list(columns), "nbytes": int(nbytes),
             "time": time.time()}
    with _READS_LOCK:
        _READS.append(entry)


def read_log() -> list[dict]:
    """Reads done by this process: one dict per read (pid, thread, url, kind, rows, columns).

    ``kind`` is ``"rows"`` for a shard's rows (features, labels, weights; done by
    workers) or ``"labels"`` for the label column alone (done on the driver).
    """
    with _READS_LOCK:
        return list(_READS)


def clear_read_log() -> None:
    with _READS_LOCK:
        _READS.clear()


# -- columns ------------------------------------------------------------------------------
def is_numeric_type(t) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_null(t))


def is_label_type(t) -> bool:
    import pyarrow as pa

    return bool(is_numeric_type(t) or pa.types.is_string(t) or pa.types.is_large_string(t))


def check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}.")
    return dt


def check_column_args(label, features, weight) -> tuple[list[str] | None, str | None, str | None]:
    for name, v in (("label", label), ("weight", weight)):
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{name} must be a column name (str), got {v!r}.")
    if features is not None:
        if isinstance(features, str):
            features = [features]
        features = list(features)
        bad = [f for f in features if not isinstance(f, str)]
        if bad:
            raise ValueError(f"features must be column names (str); got {bad[:3]}.")
        if not features:
            raise ValueError("features is empty; name at least one feature column, or pass None for all.")
        dup = sorted({f for f in features if features.count(f) > 1})
        if dup:
            raise ValueError(f"features lists {dup} more than once; name each column once.")
        for name, v in (("label", label), ("weight", weight)):
            if v is not None and v in features:
                raise ValueError(f"column {v!r} is both a feature and the {name}; use it as one of them.")
    if label is not None and label == weight:
        raise ValueError(f"column {label!r} cannot be both the label and the weight.")
    return features, label, weight


def default_features(names, label, weight) -> list[str]:
    return [n for n in names if n not in (label, weight) and not n.startswith(_INDEX_PREFIX)]


def check_schema(url: str, schema: dict, ref_url: str, ref_schema: dict, *, features, label,
                 weight, all_columns: bool) -> None:
    """Raise FileDataError when ``schema`` (name -> arrow type) does not fit the plan.

    ``all_columns``: features were not named, so every file must have exactly the
    reference file's columns (an extra or missing column means the files differ).
    """
    names = [n for n in schema if not n.startswith(_INDEX_PREFIX)]
    if all_columns and url != ref_url:
        ref_names = [n for n in ref_schema if not n.startswith(_INDEX_PREFIX)]
        missing = [n for n in ref_names if n not in schema]
        extra = [n for n in names if n not in ref_schema]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks column(s) {_show(missing)}")
            if extra:
                parts.append(f"has extra column(s) {_show(extra)}")
            raise FileDataError(
                f"Schemas differ between files: {url} {' and '.join(parts)} compared with "
                f"{ref_url}. Make the files share one schema, or name the columns to use "
                "with features=[...]."
            )
    if label is not None and label not in schema:
        # Checked before the features: with features=None a misspelt label leaves the
        # real label among the features, where it could be reported as non-numeric.
        raise FileDataError(
            f"{url} has no label column {label!r} (its columns: {_show(names)}). "
            "Name the label column with label=..."
        )
    for col in features:
        if col not in schema:
            raise FileDataError(
                f"{url} has no feature column {col!r} (its columns: {_show(names)}). "
                "Every file needs every feature column."
            )
        t = schema[col]
        if not is_numeric_type(t):
            raise FileDataError(
                f"{url}: feature column {col!r} has non-numeric type {t}. Encode it as numbers "
                "(e.g. one-hot or ordinal codes), or leave it out with features=[...]."
            )
    if label is not None:
        if label not in schema:
            raise FileDataError(
                f"{url} has no label column {label!r} (its columns: {_show(names)}). "
                "Name the label column with label=..."
            )
        t = schema[label]
        if not is_label_type(t):
            raise FileDataError(
                f"{url}: label column {label!r} has type {t}; labels must be numbers, "
                "booleans or strings."
            )
        rt = ref_schema.get(label)
        if rt is not None and _label_kind(t) != _label_kind(rt):
            raise FileDataError(
                f"Schemas differ between files: label column {label!r} is {t} in {url} "
                f"but {rt} in {ref_url}. Store the labels with one type in every file."
            )
    if weight is not None:
        if weight not in schema:
            raise FileDataError(f"{url} has no weight column {weight!r} (its columns: {_show(names)}).")
        if not is_numeric_type(schema[weight]):
            raise FileDataError(f"{url}: weight column {weight!r} has non-numeric type {schema[weight]}.")


def _label_kind(t) -> str:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    return "number"


def _show(names, limit=10) -> str:
    names = [str(n) for n in names]
    return "[" + ", ".join(repr(n) for n in names[:limit]) + (", ...]" if len(names) > limit else "]")


# -- conversion ---------------------------------------------------------------------------
def _chunk_to_numpy(chunk) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = chunk.type
    if chunk.null_count or not (pa.types.is_floating(t) or pa.types.is_integer(t)
                                or pa.types.is_boolean(t)):
        # Missing values become NaN (then the finiteness check names their row).
        chunk = pc.cast(chunk, pa.float64(), safe=False)
    return chunk.to_numpy(zero_copy_only=False)


def columns_to_matrix(table, names, dtype) -> np.ndarray:
    """The named numeric columns of an arrow table as a C-contiguous (rows, columns) array.

    Column chunks are viewed as numpy arrays (no copy for floats without nulls) and
    copied into the matrix in row blocks that fit the L2 cache. Values are cast by
    numpy (the same rounding as ``np.asarray(X, dtype)``), so a file dataset holds
    the same bits as the in-memory array of the same rows.
    """
    import pyarrow as pa

    n, d = table.num_rows, len(names)
    X = np.empty((n, d), dtype=dtype)
    if n == 0 or d == 0:
        return X
    cols = [table.column(c) for c in names]
    layout = [len(ch) for ch in cols[0].chunks]
    if any([len(ch) for ch in col.chunks] != layout for col in cols[1:]):
        cols = [pa.chunked_array([col.combine_chunks()]) for col in cols]
        layout = [n]
    block = max(64, _BLOCK_BYTES // (d * X.itemsize))
    row = 0
    for k, m in enumerate(layout):
        if not m:
            continue
        arrays = [_chunk_to_numpy(col.chunk(k)) for col in cols]
        for a in range(0, m, block):
            b = min(m, a + block)
            Xb = X[row + a:row + b]
            for j, arr in enumerate(arrays):
                Xb[:, j] = arr[a:b]
        row += m
    return X


def column_to_labels(col) -> np.ndarray:
    """Labels as numpy: int64 / float64 / bool as stored; strings as an object array of str."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.array(col.to_pylist(), dtype=object)
    if pa.types.is_null(t):
        return np.full(len(col), np.nan)
    return np.concatenate([_chunk_to_numpy(c) for c in col.chunks]) if col.num_chunks else (
        np.empty(0, dtype=np.float64))


def first_null(col) -> int | None:
    if not col.null_count:
        return None
    import pyarrow.compute as pc

    mask = pc.is_null(col).to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True)
class RowNamer:
    """Turns a row of a shard into words naming it in its file."""

    url: str
    first_row: int
    unit: str = "row"

    def __call__(self, row: int) -> str:
        return f"{self.unit} {self.first_row + int(row)} of {self.url}"


def check_labels(y: np.ndarray, col, label: str, where: RowNamer) -> None:
    row = first_null(col)
    if row is not None:
        raise FileDataError(
            f"Label column {label!r} has a missing value at {where(row)}. Drop or fill the "
            "rows without a label before training."
        )
    if y.dtype.kind == "f":
        pos = _first_nonfinite(y)
        if pos is not None:
            kind = "NaN" if np.isnan(y[pos]) else "infinity (inf)"
            raise FileDataError(f"Label column {label!r} has {kind} at {where(pos)}. Drop or fix those rows.")


def check_shard_values(X, y, ycol, w, *, features, label, weight, where: RowNamer,
                       allow_nan: bool = False) -> None:
    """NaN/inf in features (NaN allowed with ``allow_nan``), missing labels, bad weights:
    names the file, column and row."""
    pos = _first_nonfinite(X, allow_nan)
    if pos is not None:
        row, c = divmod(pos, X.shape[1])
        value = X.reshape(-1)[pos]
        kind = "NaN (or a missing value)" if np.isnan(value) else "infinity (inf)"
        fix = ("Missing values (NaN) are allowed here: replace inf with a finite value or "
               "leave the field empty, or drop those rows." if allow_nan else
               "Remove or impute non-finite values (e.g. drop those rows, or "
               "sklearn.impute.SimpleImputer), or use an estimator that handles missing "
               "values (the trees).")
        raise FileDataError(f"Feature column {features[c]!r} has {kind} at {where(row)}. {fix}")
    if y is not None:
        check_labels(y, ycol, label, where)
    if w is not None:
        pos = _first_nonfinite(w)
        if pos is not None:
            raise FileDataError(f"Weight column {weight!r} has NaN or inf at {where(pos)}.")
        if (w < 0).any():
            raise FileDataError(
                f"Weight column {weight!r} has a negative value at {where(int(np.flatnonzero(w < 0)[0]))}; "
                "weights must be >= 0."
            )


def table_to_shard_arrays(table, features, label, weight, dtype, where: RowNamer,
                          allow_nan: bool = False):
    """(X, y, w) from an arrow table, checked: the worker's half of validation."""
    X = columns_to_matrix(table, features, dtype)
    y = w = ycol = None
    if label is not None:
        ycol = table.column(label)
        y = column_to_labels(ycol)
    if weight is not None:
        w = columns_to_matrix(table, [weight], np.float64)[:, 0].copy()
    check_shard_values(X, y, ycol, w, features=features, label=label, weight=weight, where=where,
                       allow_nan=allow_nan)
    return X, y, w


def row_nbytes(n_features: int, itemsize: int, has_label: bool, has_weight: bool) -> int:
    """Bytes one row takes in a loaded shard (features, label, weight)."""
    return n_features * itemsize + 8 * int(has_label) + 8 * int(has_weight)


def group_rows(sizes: list[int], target_rows: int) -> list[tuple[int, int, int]]:
    """Cut consecutive units (row groups, line blocks) into ranges of about ``target_rows``.

    Returns ``(start, stop, rows)`` unit ranges; a range closes before the unit that
    would take it past ``target_rows`` (a single larger unit is a range of its own).
    Units with no rows join the range before them. Depends on the data only.
    """
    out: list[tuple[int, int, int]] = []
    start, rows = 0, 0
    for u, m in enumerate(sizes):
        if rows > 0 and m > 0 and rows + m > target_rows:
            out.append((start, u, rows))
            start, rows = u, 0
        rows += m
    if rows > 0:
        out.append((start, len(sizes), rows))
    elif out:
        s, _, r = out[-1]
        out[-1] = (s, len(sizes), r)
    return out


def target_rows(shard_rows, shard_bytes, nbytes_per_row) -> int:
    if shard_rows is not None:
        if not isinstance(shard_rows, (int, np.integer)) or shard_rows < 1:
            raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}.")
        return int(shard_rows)
    if not isinstance(shard_bytes, (int, np.integer)) or shard_bytes < 1:
        raise ValueError(f"shard_bytes must be a positive integer, got {shard_bytes!r}.")
    return max(1, int(shard_bytes) // max(1, nbytes_per_row))


def map_files(fn, locations: list[FileLocation], max_threads: int = 16) -> list:
    """``[fn(loc) for loc in locations]`` with a few threads (metadata round trips overlap)."""
    if len(locations) <= 1:
        return [fn(loc) for loc in locations]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(max_threads, len(locations)),
                            thread_name_prefix="shardlearn-plan") as pool:
        return list(pool.map(fn, locations))


class TableShardSource:
    """``load`` / ``load_labels`` for shard sources that read their rows as an Arrow table.

    A subclass provides ``_read(columns)`` and the fields ``location``, ``first_row``,
    ``features``, ``label``, ``weight``, ``dtype``, ``columns`` and ``allow_missing``
    (NaN features pass: see :meth:`Dataset.allowing_missing`); ``row_unit`` names its
    rows in messages, ``_bytes_read(table)`` what a read cost.
    """

    row_unit = "row"
    allow_missing = False       # the subclasses' dataclass field overrides it

    def allowing_missing(self):
        """This source, letting NaN features through."""
        import dataclasses

        return self if self.allow_missing else dataclasses.replace(self, allow_missing=True)

    def _bytes_read(self, table) -> int:
        return table.nbytes

    def _rows_named(self) -> RowNamer:
        return RowNamer(self.location.url, self.first_row, unit=self.row_unit)

    def load(self, index: int):
        from ..shard import Shard

        table = self._read(self.columns)
        X, y, w = table_to_shard_arrays(table, list(self.features), self.label, self.weight,
                                        np.dtype(self.dtype), self._rows_named(),
                                        allow_nan=self.allow_missing)
        record_read(self.location.url, "rows", table.num_rows, self.columns,
                    self._bytes_read(table))
        return Shard(index=index, X=X, y=y, sample_weight=w)

    def load_labels(self) -> np.ndarray:
        """Only the label column of these rows (one value per row), checked."""
        if self.label is None:
            raise ValueError("this data has no label column.")
        table = self._read([self.label])
        col = table.column(self.label)
        y = column_to_labels(col)
        check_labels(y, col, self.label, self._rows_named())
        record_read(self.location.url, "labels", table.num_rows, [self.label],
                    self._bytes_read(table))
        return y


def resolve_features(described, features, label, weight):
    """The feature columns, checked in every file against the first one.

    ``described``: objects with ``location`` and ``schema`` (Parquet footers, CSV
    heads). ``features=None`` takes every column but the label and weight.
    """
    ref = described[0]
    all_columns = features is None
    if all_columns:
        features = default_features(list(ref.schema), label, weight)
        if not features:
            raise FileDataError(f"{ref.location.url} has no feature columns besides the label/weight.")
    for item in described:
        check_schema(item.location.url, item.schema, ref.location.url, ref.schema,
                     features=features, label=label, weight=weight, all_columns=all_columns)
    return features
