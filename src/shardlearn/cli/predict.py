"""``shardlearn predict``: apply a saved model (local or storage URL) to data files or
storage URLs and write the predictions (Parquet to any URL; csv/npz locally). No cluster needed."""

from __future__ import annotations

import click
import numpy as np

from ._common import console, parse_storage_options, storage_option, user_errors


def align_features(model, table):
    """The model's feature columns, by name and in its order; other columns are left out
    (as the storage readers do). A clear error when one of them is missing."""
    names = getattr(model, "feature_names_in_", None)
    X = table.X
    if not hasattr(X, "columns"):
        return X
    if names is None:
        # Fitted on unnamed features (npz): use the columns by position.
        return X.to_numpy()
    names = [str(n) for n in names]
    missing = [n for n in names if n not in set(X.columns)]
    if missing:
        raise click.ClickException(
            f"{table.path}: missing column(s) the model was trained on: {missing[:10]} "
            f"(the data has {list(X.columns)[:12]})."
        )
    return X[names]


def prediction_columns(model, X) -> dict[str, np.ndarray]:
    cols = {"prediction": np.asarray(model.predict(X))}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        for j, c in enumerate(model.classes_):
            cols[f"proba_{c}"] = proba[:, j]
    return cols


@click.command()
@click.option("--model", "model_url", required=True, metavar="MODEL_URL",
              help="A model saved by `shardlearn train` or model.save(): a local directory or "
                   "a storage URL (s3://bucket/models/m1).")
@click.option("--data", required=True, metavar="URL",
              help="Rows to predict: a .csv/.parquet file, a directory or glob of them, local or "
                   "a storage URL; or a local .npz with array X.")
@click.option("--label", default=None, metavar="COL",
              help="Label column to drop from the features (its values are used to print a score).")
@click.option("--out", required=True, metavar="URL",
              help="Where to write predictions: a .parquet file (local or a storage URL), or a "
                   "local .csv/.npz. Classifiers with predict_proba add one proba_<class> column "
                   "per class.")
@storage_option
def predict(model_url, data, label, out, storage_options):
    """Predict with a saved model on this machine (no cluster needed).

    Parquet output from csv/parquet data: rows are read and predicted one shard at
    a time, in file order, and the score (with --label) is computed by in-process
    workers. csv/npz output: the rows are read into memory.

    \b
    Examples:
      shardlearn predict --model model/ --data test.csv --label target --out pred.csv
      shardlearn predict --model s3://bucket/models/m1 \\
          --data 's3://bucket/test/*.parquet' --label y --out s3://bucket/pred/p.parquet
    """
    import shardlearn

    from ..data.readers.predictions import handles_missing
    from . import _files

    con = console()
    opts = parse_storage_options(storage_options)
    with user_errors():
        kind = _files.data_kind(data)
        out_format = _files.prediction_format(out)
        model = shardlearn.load(model_url, storage_options=opts)
        names = getattr(model, "feature_names_in_", None)
        features = None if names is None else [str(n) for n in names]
        proba = hasattr(model, "predict_proba")
        score = None
        if kind == "files" and out_format == "parquet":
            from shardlearn.data.readers import open_dataset, predict_to_parquet

            # Checked (metadata only) before anything is written.
            scored = (None if label is None else
                      open_dataset(data, label=label, features=features, storage_options=opts))
            n_rows = predict_to_parquet(model, data, out, label=label, proba=proba,
                                        storage_options=opts)
            columns = ["prediction"] + ([f"proba_{c}" for c in model.classes_] if proba else [])
            where = out
            if scored is not None:
                score = _score_files(model, scored)
        else:
            missing_ok = handles_missing(model)
            if kind == "npz" or _single_local_file(data):
                table = _files.read_table(data, label, allow_nan=missing_ok)
            else:
                table = _files.read_dataset_table(data, label, features, opts,
                                                  allow_nan=missing_ok)
            X = align_features(model, table)
            cols = prediction_columns(model, X)
            if _is_remote(out):
                from shardlearn.data.readers import write_parquet_columns

                where = write_parquet_columns(out, cols, opts)
            else:
                where = _files.write_columns(out, cols)
            if table.y is not None:
                score = model.score(X, table.y)
            n_rows, columns = table.n_rows, list(cols)
    con.print(f"wrote {n_rows} predictions of {type(model).__name__} to {where} "
              f"(columns: {', '.join(columns)})")
    if score is not None:
        metric = "accuracy" if hasattr(model, "classes_") else "R^2"
        con.print(f"{metric} against column {label!r}: {score:.4f}")


def _is_remote(url) -> bool:
    from ..io.storage import is_local

    return not is_local(url)


def _single_local_file(data) -> bool:
    """One existing local csv/parquet file (read in memory for csv/npz output, as before)."""
    import os

    from ..io.storage import has_glob, is_local, local_path

    text = os.fspath(data)
    return is_local(text) and not has_glob(text) and os.path.isfile(local_path(text))


def _score_files(model, dataset) -> float:
    """Accuracy / R^2 on a file dataset, computed by in-process workers that read the rows."""
    from shardlearn.data.readers import score_dataset

    from ._common import start_session

    session = start_session("local", None)
    try:
        return score_dataset(model, dataset, session=session)
    finally:
        session.shutdown()
