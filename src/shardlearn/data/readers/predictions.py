"""Writing predictions to storage as Parquet, atomically."""

from __future__ import annotations

import numpy as np

from ...io.storage import write_bytes_atomic


def write_parquet_columns(url, columns: dict, storage_options: dict | None = None) -> str:
    """Write named 1-D columns as one Parquet file at ``url`` (local or remote), atomically.

    Local: a temporary file in the same folder renamed into place; object stores:
    a single put. Strings and objects are written as strings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    n = None
    for name, values in columns.items():
        v = np.asarray(values)
        if v.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {v.shape}.")
        if n is not None and len(v) != n:
            raise ValueError(f"column {name!r} has {len(v)} values but the others have {n}.")
        n = len(v)
        arrays[str(name)] = pa.array(v.astype(str) if v.dtype.kind == "O" else v)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(arrays), sink)
    return write_bytes_atomic(url, sink.getvalue().to_pybytes(), storage_options)


def handles_missing(model) -> bool:
    """Whether ``model`` takes NaN features as missing values (scikit-learn's
    ``allow_nan`` input tag: the trees do)."""
    try:
        return bool(model.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False


def predict_to_parquet(model, data_url, out_url, *, features=None, label: str | None = None,
                       proba: bool = False, storage_options: dict | None = None,
                       out_storage_options: dict | None = None, format: str | None = None,
                       delimiter: str = ",") -> int:
    """Predict every row of Parquet/CSV files and write the predictions as one Parquet file.

    The data is read one shard (a few row groups / one byte range) at a time on
    this process, so memory stays bounded by a shard plus one value per row.
    Rows keep the order of the files.

    Parameters
    ----------
    model : fitted shardlearn estimator
    data_url : str, path or list
        As for :func:`~shardlearn.data.readers.open_dataset`.
    out_url : str
        The Parquet file to write (local path, ``file://``, ``s3://``, ...).
    features : list of str, optional
        Default: the model's ``feature_names_in_`` when it has them, else every
        column except ``label``.
    label : str, optional
        A column to leave out of the features (e.g. the label in labelled data).
    proba : bool
        Also write ``proba_<class>`` columns (classifiers with ``predict_proba``).
    storage_options, out_storage_options : dict, optional
        For reading the data and for writing the output (default: the same).

    Returns
    -------
    int
        Rows written. Columns: ``prediction`` (and ``proba_<class>``).
    """
    import pandas as pd

    from .api import open_dataset

    names = getattr(model, "feature_names_in_", None)
    if features is None and names is not None:
        features = [str(c) for c in names]
    opts = dict(format=format, storage_options=storage_options, delimiter=delimiter)
    if features is None and label is not None:
        # Metadata only: the columns other than the label, then read without it.
        features = [str(c) for c in open_dataset(data_url, label=label, **opts).feature_names]
    ds = open_dataset(data_url, features=features, **opts)
    if handles_missing(model):
        ds = ds.allowing_missing()
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and ds.n_features != n_in:
        raise ValueError(
            f"The data has {ds.n_features} feature columns but the model expects {n_in}; name "
            "the feature columns (features=[...]) or the label column to leave out (label=...)."
        )
    preds, probs = [], []
    cols = [str(c) for c in ds.feature_names]
    for i in range(ds.n_shards):
        X = ds.load_shard(i).X
        frame = pd.DataFrame(X, columns=cols, copy=False) if names is not None else X
        preds.append(np.asarray(model.predict(frame)))
        if proba:
            probs.append(np.asarray(model.predict_proba(frame)))
    out = {"prediction": np.concatenate(preds)}
    if proba:
        P = np.concatenate(probs)
        for k, c in enumerate(getattr(model, "classes_", range(P.shape[1]))):
            out[f"proba_{c}"] = P[:, k]
    write_parquet_columns(out_url, out, out_storage_options if out_storage_options is not None
                          else storage_options)
    return int(out["prediction"].shape[0])


def _score_kernel(shard, state, model, columns):
    """Per shard: (rows, correct) for a classifier; (rows, sum y, sum y^2, SSE) for a regressor."""
    X = shard.X
    if columns is not None:
        import pandas as pd

        X = pd.DataFrame(X, columns=columns, copy=False)
    pred = np.asarray(model.predict(X))
    y = np.asarray(shard.y)
    if hasattr(model, "classes_"):
        return np.array([len(y), float(np.sum(pred == y))])
    yf = y.astype(np.float64)
    return np.array([len(y), yf.sum(), yf @ yf, float(((yf - pred) ** 2).sum())])


def score_dataset(model, dataset, session=None) -> float:
    """Accuracy (classifiers) or R^2 (regressors) of ``model`` on a labelled dataset.

    Runs on the workers where the shards live (a file dataset is read by them);
    only a few numbers per shard come back. Sample weights are not applied.
    """
    from ...runtime import Coordinator

    if not dataset.has_labels:
        raise ValueError("score_dataset needs a dataset with labels (label=...).")
    names = getattr(model, "feature_names_in_", None)
    columns = None if names is None else [str(c) for c in names]
    if handles_missing(model):
        dataset = dataset.allowing_missing()
    with Coordinator(dataset, session=session, name="score") as coord:
        parts = coord.map(_score_kernel, model, columns, step="score")
    total = np.sum(parts, axis=0)
    if hasattr(model, "classes_"):
        return float(total[1] / total[0])
    n, s, ss, sse = total
    sst = ss - s * s / n
    return float(1.0 - sse / sst) if sst > 0 else 0.0
