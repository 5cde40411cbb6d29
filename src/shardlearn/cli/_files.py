"""What the CLI knows about data locations and file formats.

Two kinds of ``--data``:

- **file datasets** (:func:`data_kind` ``"files"``): ``.csv`` / ``.parquet`` files,
  directories and globs of them, on local paths or storage URLs (``s3://``,
  ``gs://``, ``hdfs://``, ``file://``). They go through
  :func:`shardlearn.data.readers.open_dataset`: the driver reads metadata only and
  each worker reads its own shards.
- **.npz** files (arrays ``X`` and a label array, read with ``allow_pickle=False``)
  on local paths: read into memory here (:func:`read_table`).

:func:`read_table` also reads one local csv/parquet file into memory, for
``shardlearn predict`` writing ``.csv`` / ``.npz`` predictions.

Every problem raises :class:`DataFileError` (a ``ValueError``) that names the
file, what is wrong and how to fix it. Nothing here starts workers.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}

#: The feature array's name inside an ``.npz`` file.
NPZ_FEATURES = "X"
#: The label array's name inside an ``.npz`` file when ``--label`` is not given.
NPZ_DEFAULT_LABEL = "y"


class DataFileError(ValueError):
    """A data file is missing, unreadable, or does not hold what the command needs."""


@dataclass
class Table:
    """Features (a float64 DataFrame with string column names, or a 2-D ndarray) and labels."""

    path: object  # a Path, or the --data text for file datasets (may be a URL)
    format: str
    X: object
    y: np.ndarray | None
    label: str | None

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def feature_names(self) -> list[str] | None:
        return [str(c) for c in self.X.columns] if hasattr(self.X, "columns") else None


def _format_of(path: Path, formats: dict, what: str) -> str:
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise DataFileError(
            f"{what} {path}: unsupported file type {path.suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(formats))}."
        )
    return fmt


def _local_path(path) -> Path:
    from ..io.storage import is_local, local_path

    text = os.fspath(path)
    if not is_local(text):
        raise DataFileError(
            f"{text}: this file type is read from local paths only; copy it to a local "
            "path first (or use Parquet/CSV, which are read from storage URLs)."
        )
    return Path(local_path(text))


def data_kind(data) -> str:
    """``"npz"`` (a local .npz file, read into memory) or ``"files"`` (csv/parquet files,
    directories, globs and storage URLs, read by the workers). Checks names only."""
    from ..data.readers import looks_like_files
    from ..io.storage import has_glob, is_local

    text = os.fspath(data)
    if text.lower().endswith(".npz"):
        if not is_local(text):
            raise DataFileError(
                f"data file {text}: .npz files are read from local paths only; copy it to a "
                "local path, or convert it to Parquet (which workers read from storage)."
            )
        return "npz"
    if looks_like_files(text):
        return "files"
    p = _local_path(text)
    if not p.exists() and not has_glob(text):
        raise DataFileError(f"data file {p} does not exist; check the path.")
    input_format(p)  # raises: unsupported file type
    return "files"


def column_names(data, storage_options: dict | None = None) -> list[str]:
    """The columns of the first file of a file dataset (its footer / header only)."""
    from ..data.readers.csv import CSV_SUFFIXES, read_head
    from ..data.readers.parquet import PARQUET_SUFFIXES, read_footer
    from ..io.storage import expand_files

    first = expand_files(data, storage_options, suffixes=PARQUET_SUFFIXES + CSV_SUFFIXES)[0]
    if first.path.lower().endswith(PARQUET_SUFFIXES):
        schema = read_footer(first).schema
    else:
        schema = read_head(first, ",").schema
    return [c for c in schema if not c.startswith("__index_level_")]


def require_label(data, label, storage_options: dict | None = None) -> None:
    """Training needs ``--label``: say so, listing the columns, before anything else is read."""
    if label is None:
        cols = column_names(data, storage_options)
        raise DataFileError(
            f"{os.fspath(data)}: pass --label COLUMN to name the label column "
            f"(columns: {_show(cols)})."
        )


def prediction_format(out) -> str:
    """Format of ``shardlearn predict --out``: csv/parquet/npz locally, Parquet to storage URLs."""
    from ..io.storage import is_local

    text = os.fspath(out)
    if is_local(text):
        return output_format(_local_path(text))
    if not text.lower().endswith((".parquet", ".pq")):
        raise DataFileError(
            f"output {text}: predictions are written to storage URLs as Parquet; end the "
            "name in .parquet (e.g. s3://bucket/predictions/part-0.parquet)."
        )
    return "parquet"


def read_dataset_table(data, label, features, storage_options: dict | None = None, *,
                       allow_nan: bool = False) -> Table:
    """All rows of a file dataset in memory (for predictions written as csv/npz);
    ``allow_nan``: missing feature values are kept as NaN (for models that take them)."""
    import pandas as pd

    from ..data.readers import open_dataset

    ds = open_dataset(data, label=label, features=features, storage_options=storage_options)
    if allow_nan:
        ds = ds.allowing_missing()
    shards = [ds.load_shard(i) for i in range(ds.n_shards)]
    names = [str(c) for c in ds.feature_names]
    X = pd.DataFrame(np.concatenate([s.X for s in shards]), columns=names)
    y = np.concatenate([np.asarray(s.y) for s in shards]) if label is not None else None
    return Table(Path(os.fspath(data)), "files", X, y, label)


def input_format(path) -> str:
    """The format of an input file, checked from its name only (no reading)."""
    return _format_of(_local_path(path), INPUT_FORMATS, "data file")


def output_format(path) -> str:
    """The format of an output file from its extension; checks its folder exists."""
    p = _local_path(path)
    fmt = _format_of(p, OUTPUT_FORMATS, "output file")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise DataFileError(f"output file {p}: folder {parent} does not exist; create it first.")
    if p.is_dir():
        raise DataFileError(f"output file {p} is a directory; give a file name such as {p / 'predictions.csv'}.")
    return fmt


def read_table(path, label: str | None = None, *, require_label: bool = False,
               allow_nan: bool = False) -> Table:
    """Read features and (optionally) labels from a local csv/parquet/npz file.

    Parameters
    ----------
    path : str or Path
    label : str, optional
        The label column (csv/parquet) or array name (npz). For npz it defaults
        to ``"y"`` when ``require_label`` is set.
    require_label : bool
        Raise when no label can be found (training); otherwise a missing label is
        only an error if ``label`` was named explicitly.
    allow_nan : bool
        Keep missing feature values as NaN (for models that take them, the trees)
        instead of refusing them; inf is refused either way.
    """
    p = _local_path(path)
    fmt = input_format(p)
    if not p.exists():
        raise DataFileError(f"data file {p} does not exist; check the path.")
    if p.is_dir():
        raise DataFileError(f"data file {p} is a directory; pass a {fmt} file.")
    if fmt == "npz":
        return _read_npz(p, label, require_label, allow_nan)
    return _read_frame(p, fmt, label, require_label, allow_nan)


def _read_frame(p: Path, fmt: str, label, require_label, allow_nan=False) -> Table:
    import pandas as pd

    try:
        if fmt == "csv":
            # The floats read are exactly those written: the same model as fitting in-process.
            df = pd.read_csv(p, **_csv_exact_floats())
        else:
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {p} is empty; it needs a header row and data rows.") from None
    except Exception as exc:  # noqa: BLE001 - parser errors come in many types
        raise DataFileError(f"could not read {p} as {fmt}: {exc}") from None
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataFileError(f"{p}: duplicate column names {dup}; rename them.")
    if require_label and label is None:
        raise DataFileError(
            f"{p}: pass --label COLUMN to name the label column (columns: {_show(columns)})."
        )
    y = None
    if label is not None:
        if label not in columns:
            raise DataFileError(
                f"{p}: no column named {label!r} for --label; the columns are {_show(columns)}."
            )
        ycol = df[label]
        missing = np.flatnonzero(ycol.isna().to_numpy())
        if missing.size:
            raise DataFileError(
                f"{p}: label column {label!r} has a missing value at data row {int(missing[0])} "
                f"({missing.size} missing in all); drop or fill those rows."
            )
        y = ycol.to_numpy()
        if y.dtype.kind == "O":
            y = np.asarray(ycol.astype(str).to_numpy(), dtype=object)
        df = df.drop(columns=[label])
    if df.shape[0] == 0:
        raise DataFileError(f"{p} has no data rows.")
    if df.shape[1] == 0:
        raise DataFileError(f"{p} has no feature columns besides the label {label!r}.")
    bad = [c for c in df.columns if not _numeric(df[c].dtype)]
    if bad:
        raise DataFileError(
            f"{p}: non-numeric feature column(s) {_show(bad)}. Encode them as numbers "
            "(e.g. one-hot or ordinal codes) or drop them"
            + ("" if label is not None else ", or name the label column with --label")
            + "."
        )
    try:
        X = df.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataFileError(f"{p}: could not convert the features to numbers: {exc}") from None
    _check_finite(p, X.to_numpy(), list(X.columns), allow_nan)
    return Table(p, fmt, X, y, label)


def _csv_exact_floats() -> dict:
    """read_csv options that parse each float exactly as written (as Python's float() does)."""
    import pandas as pd

    # pandas >= 3 parses exactly by default and deprecates the option.
    return {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _read_npz(p: Path, label, require_label, allow_nan=False) -> Table:
    try:
        with np.load(p, allow_pickle=False) as npz:
            names = list(npz.files)
            if NPZ_FEATURES not in names:
                raise DataFileError(
                    f"{p}: no array named {NPZ_FEATURES!r} (the features); arrays in the file: "
                    f"{_show(names)}. Save with np.savez(path, X=X, y=y)."
                )
            X = npz[NPZ_FEATURES]
            name = label if label is not None else (NPZ_DEFAULT_LABEL if require_label else None)
            y = None
            if name is not None:
                if name not in names:
                    raise DataFileError(
                        f"{p}: no label array named {name!r}; arrays in the file: {_show(names)}. "
                        "Name it with --label."
                    )
                y = npz[name]
    except DataFileError:
        raise
    except ValueError as exc:
        raise DataFileError(
            f"could not read {p} without pickle ({exc}); save plain numeric arrays "
            "(np.savez(path, X=X.astype(float), y=y))."
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors
        raise DataFileError(f"could not read {p} as npz: {exc}") from None
    if X.ndim != 2:
        raise DataFileError(f"{p}: array {NPZ_FEATURES!r} must be 2-D (rows, features), got shape {X.shape}.")
    if X.dtype.kind not in "biuf":
        raise DataFileError(f"{p}: array {NPZ_FEATURES!r} has dtype {X.dtype}; features must be numeric.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataFileError(f"{p}: array {NPZ_FEATURES!r} is empty (shape {X.shape}).")
    if y is not None:
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataFileError(
                f"{p}: label array has shape {y.shape}; expected ({X.shape[0]},), one label per row of X."
            )
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            row = int(np.flatnonzero(~np.isfinite(y))[0])
            raise DataFileError(f"{p}: label array has a NaN or inf at row {row}; drop or fill those rows.")
    Xf = np.asarray(X, dtype=np.float64)
    _check_finite(p, Xf, None, allow_nan)
    return Table(p, "npz", Xf, y, label if y is not None else None)


def _check_finite(p: Path, arr: np.ndarray, columns, allow_nan: bool = False) -> None:
    if np.isfinite(arr.sum()):
        return
    bad = np.argwhere(np.isinf(arr) if allow_nan else ~np.isfinite(arr))
    if not bad.size:
        return
    row, col = (int(v) for v in bad[0])
    colname = repr(columns[col]) if columns is not None else str(col)
    if allow_nan:
        raise DataFileError(
            f"{p}: feature column {colname} has an infinite value at data row {row} "
            f"({len(bad)} such values in all); missing values are fine for this model, "
            "inf is not: replace it or drop those rows.")
    raise DataFileError(
        f"{p}: feature column {colname} has a missing or infinite value at data row {row} "
        f"({len(bad)} such values in all); drop or impute them before training or predicting."
    )


def _numeric(dtype) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def _show(names, limit=12) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}]"


def write_columns(path, columns: dict[str, np.ndarray]) -> Path:
    """Write named 1-D columns to csv/parquet/npz, atomically (temp file + rename)."""
    p = _local_path(path)
    fmt = output_format(p)
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
    os.close(tmp_fd)
    try:
        if fmt == "npz":
            arrays = {k: (v.astype(str) if v.dtype.kind == "O" else v) for k, v in columns.items()}
            with open(tmp_name, "wb") as f:
                np.savez(f, **arrays)
        else:
            import pandas as pd

            df = pd.DataFrame(columns)
            if fmt == "csv":
                df.to_csv(tmp_name, index=False)
            else:
                df.to_parquet(tmp_name, index=False)
        os.replace(tmp_name, p)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return p
