"""``shardlearn demo``: four linear models on a generated dataset, next to scikit-learn."""

from __future__ import annotations

import sys
import time

import click

from ._common import ENGINES, console, user_errors

#: (shardlearn.linear_model class, scikit-learn class, its parameters, task)
DEMO_MODELS = (
    ("LogisticRegression", "sklearn.linear_model:LogisticRegression", {}, "classification"),
    ("LinearSVC", "sklearn.svm:LinearSVC", {"dual": False}, "classification"),
    ("Ridge", "sklearn.linear_model:Ridge", {}, "regression"),
    ("LinearRegression", "sklearn.linear_model:LinearRegression", {}, "regression"),
)


def make_demo_data(rows: int, features: int, seed: int):
    """A classification problem and a regression target on the same features."""
    import numpy as np
    from sklearn.datasets import make_classification

    informative = max(2, (3 * features) // 5)
    X, y_cls = make_classification(
        n_samples=rows, n_features=features, n_informative=informative,
        n_redundant=min(2, features - informative), n_clusters_per_class=1,
        flip_y=0.02, random_state=seed,
    )
    rng = np.random.default_rng(seed + 1)
    w = rng.normal(size=features)
    y_reg = X @ w + 3.0 + 0.5 * rng.normal(size=rows)
    return X, y_cls, y_reg


def _sklearn_model(spec: str, kwargs: dict):
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def report_line(name: str, report) -> str:
    """One line from ``fit_report_``: iterations, where the time went, bytes moved."""
    status = ("" if report.converged is None
              else " (converged)" if report.converged else " (not converged)")
    recovered = getattr(report, "failures_recovered", 0)
    failures = f"; {recovered} worker failure(s) recovered" if recovered else ""
    return (
        f"{name}: {report.n_iter} iteration{'' if report.n_iter == 1 else 's'}{status}; wall {report.wall_s:.3f} s = "
        f"load data {report.load_s:.3f} s + worker steps {report.workers_s:.3f} s + "
        f"driver {report.driver_s:.3f} s; {report.bytes_moved / 1e6:.2f} MB moved; "
        f"{report.n_shards} shard{'' if report.n_shards == 1 else 's'} on {report.n_workers} workers"
        f"{failures}"
    )


@click.command()
@click.option("--rows", type=click.IntRange(min=100), default=200_000, show_default=True,
              help="Rows of generated data (75% train, 25% test).")
@click.option("--features", type=click.IntRange(min=2), default=20, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="ray", show_default=True,
              help="ray: starts a local Ray cluster; local: worker threads in this process.")
@click.option("--n-shards", type=click.IntRange(min=1), default=None,
              help="Shards per dataset (default: from the data size).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: when stdout is a terminal).")
def demo(rows, features, workers, engine, n_shards, seed, progress):
    """Train LogisticRegression, LinearSVC, Ridge and LinearRegression on generated data
    with a group of workers, and compare with scikit-learn on the same split."""
    import numpy as np
    from rich import box
    from rich.table import Table
    from sklearn.model_selection import train_test_split

    import shardlearn
    from shardlearn import linear_model
    from shardlearn.data import Dataset

    con = console()
    if progress is None:
        progress = sys.stdout.isatty()
    shardlearn.set_progress("always" if progress else "never")

    with user_errors():
        t0 = time.perf_counter()
        X, y_cls, y_reg = make_demo_data(rows, features, seed)
        Xtr, Xte, ctr, cte, rtr, rte = train_test_split(
            X, y_cls, y_reg, test_size=0.25, random_state=seed)
        shards = Dataset.from_arrays(Xtr, ctr, n_shards=n_shards).n_shards
        con.print(f"data: {rows:,} rows x {features} features (train {Xtr.shape[0]:,}, "
                  f"test {Xte.shape[0]:,}), {shards} shards, "
                  f"generated in {time.perf_counter() - t0:.2f} s")

        t0 = time.perf_counter()
        con.print(f"starting {workers} workers on the {engine} engine ...")
        session = shardlearn.init(engine, n_workers=workers)
        try:
            desc = ", ".join(f"{k}={v}" for k, v in session.describe().items())
            con.print(f"session ready in {time.perf_counter() - t0:.2f} s: {desc}")
            rows_out, reports = [], []
            for name, sk_spec, sk_kwargs, task in DEMO_MODELS:
                y_train, y_test = (ctr, cte) if task == "classification" else (rtr, rte)
                con.print(f"fitting {name} ...")
                model = getattr(linear_model, name)()
                t = time.perf_counter()
                # Timed like scikit-learn's fit: input validation and sharding included.
                model.fit(Dataset.from_arrays(Xtr, y_train, n_shards=n_shards))
                sl_time = time.perf_counter() - t
                sl_score = model.score(Xte, y_test)

                sk = _sklearn_model(sk_spec, sk_kwargs)
                t = time.perf_counter()
                sk.fit(Xtr, y_train)
                sk_time = time.perf_counter() - t
                sk_score = sk.score(Xte, y_test)
                agree = (np.mean(model.predict(Xte) == sk.predict(Xte)) if task == "classification"
                         else np.max(np.abs(model.predict(Xte) - sk.predict(Xte))))
                rows_out.append((name, task, sl_score, sl_time, sk_score, sk_time, agree))
                reports.append((name, model.fit_report_))
        finally:
            t = time.perf_counter()
            session.shutdown()
            shutdown_s = time.perf_counter() - t

    table = Table(
        title=f"shardlearn ({engine}, {workers} workers) vs scikit-learn, {Xte.shape[0]:,} test rows",
        caption="agree: same test predictions (classifiers), max |difference| (regressors)",
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
    )
    table.add_column("model", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    for header in ("shardlearn\nscore", "shardlearn\nfit (s)", "sklearn\nscore",
                   "sklearn\nfit (s)", "agree"):
        table.add_column(header, justify="right", no_wrap=True)
    for name, task, sl_score, sl_time, sk_score, sk_time, agree in rows_out:
        metric = "accuracy" if task == "classification" else "R^2"
        agreement = f"{agree:.2%}" if task == "classification" else f"{agree:.1e}"
        table.add_row(name, metric, f"{sl_score:.4f}", f"{sl_time:.3f}", f"{sk_score:.4f}",
                      f"{sk_time:.3f}", agreement)
    con.print()
    con.print(table)
    con.print("fit reports (fit_report_):")
    for name, rep in reports:
        con.print("  " + report_line(name, rep), soft_wrap=True)
    con.print(f"workers shut down in {shutdown_s:.2f} s.")
