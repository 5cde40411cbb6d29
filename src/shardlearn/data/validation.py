"""Input validation done once, before any work: what is wrong, where, how to fix it.

Every check reads the caller's arrays and never writes to them.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

FLOAT_DTYPES = (np.float64, np.float32)


class NotNumericError(ValueError, TypeError):
    """Input values that cannot be read as numbers.

    A ValueError like every other validation error, and also a TypeError, which
    is what scikit-learn raises (and its estimator checks expect) for such input.
    """


def _where(row: int, boundaries: np.ndarray | None) -> str:
    if boundaries is None or len(boundaries) < 2:
        return f"row {row}"
    shard = int(np.searchsorted(boundaries, row, side="right") - 1)
    return f"row {row} (shard {shard}, row {row - int(boundaries[shard])} within the shard)"


def _first_nonfinite(values: np.ndarray, allow_nan: bool = False) -> int | None:
    """Flat index of the first NaN/inf (only inf when ``allow_nan``) in ``values``.

    Scans in blocks to bound memory.
    """
    flat = values.reshape(-1)
    block = 1 << 20
    for start in range(0, flat.size, block):
        chunk = flat[start : start + block]
        # Summing is much cheaper than isfinite over the whole block; only a
        # non-finite sum needs the exact position.
        with np.errstate(over="ignore", invalid="ignore"):  # large finite values may overflow
            total = chunk.sum(dtype=np.float64)
        if np.isfinite(total):
            continue
        bad = np.flatnonzero(np.isinf(chunk) if allow_nan else ~np.isfinite(chunk))
        if bad.size:
            return start + int(bad[0])
    return None


def check_finite(
    X, *, name: str = "X", boundaries: np.ndarray | None = None, source: str | None = None,
    allow_nan: bool = False,
) -> None:
    """Raise ``ValueError`` naming the first NaN or inf entry (row, column, shard).

    With ``allow_nan=True`` (estimators that handle missing values) only inf is an error.
    """
    origin = f" in {source}" if source else ""
    if sp.issparse(X):
        X = X.tocsr()
        pos = _first_nonfinite(X.data, allow_nan)
        if pos is None:
            return
        row = int(np.searchsorted(X.indptr, pos, side="right") - 1)
        col = int(X.indices[pos])
        value = X.data[pos]
    else:
        arr = np.asarray(X)
        if arr.dtype.kind not in "fc":
            return
        pos = _first_nonfinite(arr, allow_nan)
        if pos is None:
            return
        if arr.ndim == 1:
            row, col = pos, None
        else:
            row, col = divmod(pos, arr.shape[1])
        value = arr.reshape(-1)[pos]
    kind = "NaN" if np.isnan(value) else "infinity (inf)"
    column = "" if col is None else f", column {col}"
    if allow_nan:
        fix = ("NaN is allowed here (a missing value): replace inf with NaN or a finite "
               "value, or drop the rows.")
    else:
        fix = ("Remove or impute the non-finite values (e.g. sklearn.impute.SimpleImputer), "
               "or drop the rows.")
    raise ValueError(f"Input {name}{origin} contains {kind} at {_where(row, boundaries)}{column}. {fix}")


def check_features(X, *, name: str = "X", dtype=None):
    """Return ``X`` as a 2-D float ndarray or CSR matrix without modifying the input.

    Accepts ndarray, array-like, pandas DataFrame and scipy sparse matrices. A copy
    is made only when the dtype or layout must change.
    """
    if X is None:
        raise ValueError(f"Input {name} is None; pass a 2-D array of shape (n_samples, n_features).")
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        bad = [str(c) for c, dt in zip(X.columns, X.dtypes) if not _is_numeric_dtype(dt)]
        if bad:
            raise ValueError(
                f"Input {name} has non-numeric column(s) {bad[:5]}{' ...' if len(bad) > 5 else ''}. "
                "Encode them as numbers first (e.g. sklearn.preprocessing.OneHotEncoder or "
                "OrdinalEncoder), or drop them."
            )
        if any(not isinstance(dt, np.dtype) for dt in X.dtypes):
            # pandas nullable dtypes (Int64, Float64, boolean): missing values become
            # NaN, so the finiteness check names their row and column.
            X = X.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            X = X.to_numpy()
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"Input {name} must be 2-D, got {X.ndim}-D.")
        X = X.tocsr()
        if X.dtype.kind == "c":
            raise ValueError(f"Complex data not supported in {name}; pass real numbers.")
        if X.dtype not in FLOAT_DTYPES or (dtype is not None and X.dtype != dtype):
            X = X.astype(dtype or np.float64)
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        _check_nonempty(X.shape, name)
        return X
    arr = np.asarray(X)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported in {name}; pass real numbers.")
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise NotNumericError(
                    f"Input {name} has dtype object with values that are not numbers ({exc}). "
                    "Encode categorical columns as numbers before fitting."
                ) from None
        else:
            raise ValueError(
                f"Input {name} has dtype {arr.dtype}, which is not numeric. "
                "Convert it to float (e.g. X.astype(float)) or encode it first."
            )
    if arr.ndim == 1:
        raise ValueError(
            f"Expected a 2-D array for {name}, got a 1-D array of shape {arr.shape}. "
            "Reshape your data either using array.reshape(-1, 1) if your data has a "
            "single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if arr.ndim != 2:
        raise ValueError(f"Input {name} must be 2-D (n_samples, n_features), got {arr.ndim}-D.")
    _check_nonempty(arr.shape, name)
    target = dtype or (arr.dtype if arr.dtype in FLOAT_DTYPES else np.float64)
    # Same dtype and C order: a view of the caller's memory, never written.
    return np.ascontiguousarray(arr, dtype=target)


def _is_numeric_dtype(dt) -> bool:
    kind = getattr(dt, "kind", None)
    return kind in ("b", "i", "u", "f")


def _check_nonempty(shape, name):
    if shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(shape)}) in {name}, while a minimum "
            "of 1 is required. Pass at least one row."
        )
    if shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            f"required (input {name}). Pass at least one column."
        )


def check_target(y, n_rows: int, *, name: str = "y", allow_2d: bool = False):
    """Return ``y`` as an ndarray of length ``n_rows`` (1-D, or 2-D when allowed)."""
    if y is None:
        raise ValueError(f"{name} is None; this estimator needs targets. Pass y with {n_rows} values.")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1 and not allow_2d:
        arr = arr[:, 0]
    if arr.ndim == 0 or arr.ndim > (2 if allow_2d else 1):
        expected = "(n_samples,) or (n_samples, n_targets)" if allow_2d else "(n_samples,)"
        raise ValueError(f"{name} has shape {arr.shape}; expected {expected}. Pass a column vector of labels, e.g. y.ravel().")
    if arr.shape[0] != n_rows:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: X has {n_rows} rows "
            f"but {name} has {arr.shape[0]}. Pass one target per row."
        )
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported in {name}.")
    return arr


def check_sample_weight(sample_weight, n_rows: int, dtype=np.float64, boundaries=None, *,
                        name: str = "sample_weight", rows_of: str = "X"):
    """Return weights as a float ndarray of length ``n_rows``; None stays None.

    ``name`` / ``rows_of``: what the messages call the weights and their rows' array.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        # A scalar weight gets the same checks as an array (finite, >= 0, not zero).
        sample_weight = np.full(n_rows, sample_weight)
    sw = np.asarray(sample_weight)
    if sw.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one weight per row, got shape {sw.shape}.")
    if sw.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {sw.shape[0]} values but {rows_of} has {n_rows} rows; pass one weight per row."
        )
    if sw.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {sw.dtype}; pass numbers.")
    sw = np.asarray(sw, dtype=dtype)
    check_finite(sw, name=name, boundaries=boundaries)
    if (sw < 0).any():
        row = int(np.flatnonzero(sw < 0)[0])
        raise ValueError(
            f"{name} has a negative value at {_where(row, boundaries)}; weights must be >= 0."
        )
    if not (sw > 0).any():
        raise ValueError(f"{name} sums to zero; at least one row needs a positive weight.")
    return sw


def _label_kind(t: type) -> str:
    """What sort of label a Python or numpy scalar type is (``str`` and ``np.str_``,
    ``int`` and ``np.int64`` are one sort: they sort together)."""
    for base, kind in ((bool, "bool"), (np.bool_, "bool"), (str, "str"), (bytes, "bytes"),
                       (numbers.Integral, "int"), (numbers.Real, "float")):
        if issubclass(t, base):
            return kind
    return t.__name__


def _missing_labels(arr: np.ndarray) -> np.ndarray:
    """Which entries of an object array are NaN, None or pandas' NA / NaT."""
    import pandas as pd

    return np.asarray(pd.isna(arr), bool)


def check_classification_target(y, *, boundaries=None, min_classes=2):
    """Labels for a classifier: finite, and at least ``min_classes`` classes (a tree
    learns from one class, as scikit-learn's do: it predicts it). Returns ``classes_``."""
    arr = np.asarray(y)
    if arr.dtype.kind == "f":
        check_finite(arr, name="y", boundaries=boundaries)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                "Unknown label type: y has continuous values. A classifier needs discrete "
                "class labels (integers or strings); use a regressor for continuous targets."
            )
    if arr.dtype.kind == "O":
        # Every label, not a sample: a NaN or None far down must not become a class.
        missing = _missing_labels(arr)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            what = "NaN" if isinstance(arr[row], float) else f"a missing label ({arr[row]!r})"
            raise ValueError(
                f"Input y contains {what} at {_where(row, boundaries)}. "
                "A classifier needs a label for every row: drop those rows or fill them in.")
        kinds = {_label_kind(t) for t in set(map(type, arr))}
        if len(kinds) > 1:
            raise ValueError(f"y mixes label types {sorted(kinds)}; use one type.")
        if kinds == {"float"}:
            # Float labels in an object array: inf must not become a class.
            try:
                as_float = arr.astype(np.float64)
            except (TypeError, ValueError):
                as_float = None
            if as_float is not None:
                check_finite(as_float, name="y", boundaries=boundaries)
    try:
        classes = np.unique(arr)
    except TypeError:  # mixed types past the rows sampled above
        kinds = sorted({type(v).__name__ for v in arr.ravel()})
        raise ValueError(f"y mixes label types {kinds}; use one type.") from None
    if classes.shape[0] < min_classes:
        raise ValueError(
            f"This solver needs samples of at least 2 classes in the data, but the data "
            f"contains only one class: {classes[0]!r}. A classifier cannot learn from a single class."
        )
    return classes


def as_numeric_target(y):
    """Regression targets held as Python objects (numbers in an object array, as
    pandas gives) become float64, so that NaN/inf checks see them; anything else,
    including values that are not numbers, is returned unchanged for the caller to
    reject with its own message."""
    if y is None:
        return None
    arr = y.to_numpy() if hasattr(y, "to_numpy") else np.asarray(y)
    if arr.dtype.kind == "O":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            return arr
    return y
