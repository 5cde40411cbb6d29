"""``shardlearn predict``: apply a saved model to a data file (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ._common import console, user_errors


def align_features(model, table):
    """Features in the order the model was fitted on; a clear error when columns differ."""
    names = getattr(model, "feature_names_in_", None)
    X = table.X
    if not hasattr(X, "columns"):
        return X
    if names is None:
        # Fitted on unnamed features (npz): use the columns by position.
        return X.to_numpy()
    names = [str(n) for n in names]
    have = list(X.columns)
    missing = [n for n in names if n not in have]
    extra = [c for c in have if c not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) the model was trained on: {missing[:10]}")
        if extra:
            parts.append(f"column(s) the model does not know: {extra[:10]}"
                         + ("" if table.label is not None else
                            " (if one of them is the label, drop it with --label COL)"))
        raise click.ClickException(f"{table.path}: " + "; ".join(parts) + ".")
    return X[names]


def prediction_columns(model, X) -> dict[str, np.ndarray]:
    cols = {"prediction": np.asarray(model.predict(X))}
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        for j, c in enumerate(model.classes_):
            cols[f"proba_{c}"] = proba[:, j]
    return cols


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              metavar="MODEL_DIR", help="A directory written by `shardlearn train` or model.save().")
@click.option("--data", required=True, metavar="FILE",
              help="Rows to predict: .csv, .parquet, or .npz with array X.")
@click.option("--label", default=None, metavar="COL",
              help="Label column to drop from the features (its values are used to print a score).")
@click.option("--out", required=True, metavar="FILE",
              help="Where to write predictions: .csv, .parquet or .npz. Classifiers with "
                   "predict_proba add one proba_<class> column per class.")
def predict(model_dir, data, label, out):
    """Predict with a saved model; runs on this machine, no workers started.

    \b
    Example:
      shardlearn predict --model model/ --data test.csv --label target --out pred.csv
    """
    import shardlearn

    from . import _files

    con = console()
    with user_errors():
        _files.input_format(data)
        _files.output_format(out)
        model = shardlearn.load(model_dir)
        table = _files.read_table(data, label)
        X = align_features(model, table)
        cols = prediction_columns(model, X)
        path = _files.write_columns(out, cols)
        score = None
        if table.y is not None:
            score = model.score(X, table.y)
    con.print(f"wrote {table.n_rows} predictions of {type(model).__name__} to {path} "
              f"(columns: {', '.join(cols)})")
    if score is not None:
        metric = "accuracy" if hasattr(model, "classes_") else "R^2"
        con.print(f"{metric} against column {table.label!r}: {score:.4f}")
