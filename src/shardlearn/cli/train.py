"""``shardlearn train``: fit a model on a data file and save it (JSON + npz, no pickle)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    MODELS,
    address_option,
    build_estimator,
    configure_progress,
    console,
    engine_option,
    progress_option,
    start_session,
    user_errors,
    workers_option,
)


def check_model_dir(out: Path) -> None:
    """Refuse, before any work, to overwrite something that is not a model directory."""
    from ..io.model_files import _META

    if out.exists() and not (out.is_dir() and (out / _META).exists()):
        raise click.UsageError(
            f"--out {out} exists and is not a shardlearn model directory; choose a new path "
            "(an existing model directory is replaced)."
        )


def check_labels(task: str, y, path) -> None:
    """Label checks that the fit would do later, done now (before starting workers)."""
    import numpy as np

    from ..data.validation import check_classification_target

    if task == "classification":
        try:
            check_classification_target(y)
        except ValueError as exc:
            raise click.ClickException(f"{path}: labels are not usable by a classifier: {exc}") from None
    elif np.asarray(y).dtype.kind not in "biuf":
        raise click.ClickException(
            f"{path}: a regressor needs numeric targets, but the label column holds "
            f"{np.asarray(y).dtype} values; pick a numeric column with --label or use a classifier."
        )


@click.command()
@click.option("--model", "model_name", required=True, type=click.Choice(list(MODELS)),
              help="logistic: LogisticRegression, linear-svc: LinearSVC, ridge: Ridge, "
                   "linear: LinearRegression.")
@click.option("--data", required=True, metavar="FILE",
              help="Training data: .csv, .parquet, or .npz with arrays X and y.")
@click.option("--label", default=None, metavar="COL",
              help="Label column (csv/parquet; required) or label array name (npz; default 'y').")
@click.option("--out", required=True, type=click.Path(path_type=Path), metavar="MODEL_DIR",
              help="Directory to save the fitted model in (model.json + arrays.npz).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Model parameter, repeatable, e.g. --param C=0.5 --param max_iter=200.")
@click.option("--n-shards", type=click.IntRange(min=1), default=None,
              help="Number of shards (default: from the data size; never from the worker count).")
@workers_option
@engine_option
@address_option
@progress_option
def train(model_name, data, label, out, params, n_shards, workers, engine, address, progress):
    """Fit a model on a data file with a group of workers and save it.

    \b
    Example:
      shardlearn train --model logistic --data train.csv --label target \\
          --workers 2 --engine ray --out model/ --param C=0.5
    """
    from shardlearn.data import Dataset

    from . import _files

    out_con = console()
    with user_errors():
        # Everything that can be wrong with the input is found before any worker starts.
        _files.input_format(data)
        check_model_dir(out)
        estimator = build_estimator(model_name, params)
        task = MODELS[model_name][2]
        table = _files.read_table(data, label, require_label=True)
        check_labels(task, table.y, table.path)
        dataset = Dataset.from_arrays(table.X, table.y, n_shards=n_shards)
        configure_progress(progress)

        session = start_session(engine, workers, address)
        try:
            estimator.fit(dataset)
            estimator.save(out)
        finally:
            session.shutdown()
        score = estimator.score(table.X, table.y)

    metric = "accuracy" if task == "classification" else "R^2"
    out_con.print(estimator.fit_report_.summary())
    out_con.print(f"training {metric}: {score:.4f}")
    out_con.print(f"saved {type(estimator).__name__} to {out}")
    report = estimator.fit_report_
    if report.n_shards < report.n_workers:
        out_con.print(f"note: the data made {report.n_shards} shard(s) for {report.n_workers} "
                      "workers, so some workers had nothing to do; pass --n-shards to split it finer.")
