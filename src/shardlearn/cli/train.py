"""``shardlearn train``: fit a model on data files or storage URLs and save it (JSON + npz,
no pickle) to a local directory or a storage URL."""

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
    parse_storage_options,
    progress_option,
    start_session,
    storage_option,
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


#: Protocols whose first path component is a bucket that must exist before writing.
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs")


def check_out(out: str, storage_options: dict | None) -> None:
    """``--out`` checks done before any worker starts: local folder, or storage URL.

    For a storage URL this lists the prefix (so missing credentials or a wrong
    endpoint fail now, not after the fit), refuses a prefix that holds something
    other than a model, and checks that the bucket exists.
    """
    from ..io import storage
    from ..io.model_files import _META

    if storage.is_local(out):
        check_model_dir(Path(storage.local_path(out)))
        return
    names = storage.list_names(out, storage_options)
    if names and _META not in names:
        raise click.UsageError(
            f"--out {out} exists and is not a shardlearn model ({', '.join(names[:5])} inside, "
            f"no {_META}); choose a new URL (an existing model is replaced)."
        )
    proto, rest = storage.split_protocol(out)
    bucket = rest.split("/", 1)[0]
    if proto in _BUCKET_PROTOCOLS and not storage.exists(f"{proto}://{bucket}", storage_options):
        raise click.ClickException(
            f"--out {out}: the bucket {bucket!r} does not exist (or these credentials cannot "
            "see it); create it first or check the URL."
        )


def check_labels(task: str, y, path, min_classes: int = 2) -> None:
    """Label checks that the fit would do later, done now (before starting workers)."""
    import numpy as np

    from ..data.validation import check_classification_target

    if task == "classification":
        try:
            check_classification_target(y, min_classes=min_classes)
        except ValueError as exc:
            raise click.ClickException(f"{path}: labels are not usable by a classifier: {exc}") from None
    elif np.asarray(y).dtype.kind not in "biuf":
        raise click.ClickException(
            f"{path}: a regressor needs numeric targets, but the label column holds "
            f"{np.asarray(y).dtype} values; pick a numeric column with --label or use a classifier."
        )


@click.command()
@click.option("--model", "model_name", required=True, type=click.Choice(list(MODELS)),
              help=", ".join(f"{name}: {cls}" for name, (_, cls, _) in MODELS.items())
              + ". The trees take missing values (NaN, empty CSV fields).")
@click.option("--data", required=True, metavar="URL",
              help="Training data: a .csv/.parquet file, a directory or glob of them, local or "
                   "a storage URL (s3://bucket/prefix/*.parquet, gs://, hdfs://); the workers "
                   "read their own shards. Or a local .npz with arrays X and y.")
@click.option("--label", default=None, metavar="COL",
              help="Label column (csv/parquet; required) or label array name (npz; default 'y').")
@click.option("--out", required=True, metavar="MODEL_URL",
              help="Where to save the fitted model (model.json + arrays.npz): a local "
                   "directory or a storage URL such as s3://bucket/models/m1.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Model parameter, repeatable, e.g. --param C=0.5 --param max_iter=200.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=None,
              help="csv/parquet: rows per shard (Parquet row groups stay whole, so a shard may "
                   "hold more). Default: about 16 MiB of features per shard.")
@click.option("--n-shards", type=click.IntRange(min=1), default=None,
              help=".npz: number of shards (default: from the data size; never from the "
                   "worker count).")
@storage_option
@workers_option
@engine_option
@address_option
@progress_option
def train(model_name, data, label, out, params, shard_rows, n_shards, storage_options, workers,
          engine, address, progress):
    """Fit a model on data files or storage URLs with a group of workers and save it.

    \b
    Examples:
      shardlearn train --model logistic --data train.csv --label target \\
          --workers 2 --engine ray --out model/ --param C=0.5
      shardlearn train --model logistic --data 's3://bucket/prefix/*.parquet' \\
          --label y --workers 4 --out s3://bucket/models/m1
    """
    from shardlearn.data import Dataset

    from . import _files

    out_con = console()
    opts = parse_storage_options(storage_options)
    with user_errors():
        # Everything that can be wrong with the input is found before any worker starts
        # (values inside csv/parquet files are checked by the workers that read them).
        kind = _files.data_kind(data)
        if kind == "files" and n_shards is not None:
            raise click.UsageError("--n-shards is for .npz data; for csv/parquet files and "
                                   "storage URLs set the shard size with --shard-rows ROWS.")
        if kind == "npz" and shard_rows is not None:
            raise click.UsageError("--shard-rows is for csv/parquet data; for .npz data use "
                                   "--n-shards.")
        check_out(out, opts)
        estimator = build_estimator(model_name, params)
        task = MODELS[model_name][2]
        min_classes = getattr(estimator, "_min_classes", 2)
        if kind == "files":
            from shardlearn.data.readers import open_dataset, score_dataset

            _files.require_label(data, label, opts)
            # Metadata only on this process; the workers read the rows.
            dataset = open_dataset(data, label=label, storage_options=opts, shard_rows=shard_rows)
            check_labels(task, dataset.labels(), data, min_classes)
        else:
            from shardlearn.data.readers.predictions import handles_missing

            # Models that take missing values (the trees) get NaN kept, as from files.
            missing_ok = handles_missing(estimator)
            table = _files.read_table(data, label, require_label=True, allow_nan=missing_ok)
            check_labels(task, table.y, table.path, min_classes)
            dataset = Dataset.from_arrays(table.X, table.y, n_shards=n_shards,
                                          allow_nan=missing_ok)
        configure_progress(progress)

        session = start_session(engine, workers, address)
        try:
            estimator.fit(dataset)
            estimator.save(out, storage_options=opts)
            if kind == "files":
                score = score_dataset(estimator, dataset)   # on the workers
        finally:
            session.shutdown()
        if kind != "files":
            score = estimator.score(table.X, table.y)

    metric = "accuracy" if task == "classification" else "R^2"
    out_con.print(estimator.fit_report_.summary())
    out_con.print(f"training {metric}: {score:.4f}")
    out_con.print(f"saved {type(estimator).__name__} to {out}")
    report = estimator.fit_report_
    if report.n_shards < report.n_workers:
        finer = "--shard-rows (fewer rows per shard)" if kind == "files" else "--n-shards"
        out_con.print(f"note: the data made {report.n_shards} shard(s) for {report.n_workers} "
                      f"workers, so some workers had nothing to do; pass {finer} to split it finer.")
