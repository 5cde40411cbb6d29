"""``shardlearn bench``: one model on generated data, timed against its reference
(scikit-learn, and XGBoost for boosting) on this machine, in the same run."""

from __future__ import annotations

import json
import os
import statistics
import time

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

#: Rows of the warm-up fit before the timed rounds (numba kernels load on every worker).
WARMUP_ROWS = 2000


@click.command()
@click.option("--model", "model_name", type=click.Choice(list(MODELS)), default="boosting",
              show_default=True, help="The model to time (as for train --model).")
@click.option("--rows", type=click.IntRange(min=WARMUP_ROWS), default=100_000, show_default=True,
              help="Rows of generated data (80% train, 20% held out for the score).")
@click.option("--features", type=click.IntRange(min=2), default=20, show_default=True)
@engine_option
@workers_option
@address_option
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Each round fits ours, then each reference; a ratio is taken within a "
                   "round, so a slow minute of a shared machine weighs on both sides.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of our model (repeatable); the references get the settings "
                   "that mean the same for them.")
@click.option("--n-shards", type=click.IntRange(min=1), default=None,
              help="Shards of the training data (default: from the data size, as fit(X, y) "
                   "cuts them; a small dataset is one shard, on one worker).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data, and random_state of the models unless --param sets it.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the results to this JSON file.")
@progress_option
def bench(model_name, rows, features, engine, workers, address, rounds, params, n_shards, seed,
          json_out, progress):
    """Time a model against scikit-learn (and XGBoost for boosting) on generated data.

    Our fit time is what a user waits for: from fit() to its return, sharding, moving
    the data to the workers and binning included, after a small warm-up fit (the
    workers load their compiled kernels once). The references use as many threads
    as we have workers. Prints each round's times, the median of the rounds' ratios
    (ours / reference), the held-out scores, and the memory bandwidth of this machine
    (a numpy sum) as a yardstick for the throughput.
    """
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    from ..data import Dataset
    from ..runtime.machine import memory_bandwidth
    from . import _references as R
    from .demo import make_demo_data, report_line

    con = console()
    configure_progress(progress)
    with user_errors():
        ours = build_estimator(model_name, params)
        if "random_state" in ours.get_params() and not any(
                p.partition("=")[0].strip() == "random_state" for p in params):
            ours.set_params(random_state=seed)
        n_workers = workers or os.cpu_count() or 1
        refs = R.references(model_name, ours, n_workers)
        task = MODELS[model_name][2]
        X, y_cls, y_reg = make_demo_data(rows, features, seed)
        y = y_cls if task == "classification" else y_reg
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed)
        bandwidth = memory_bandwidth(256 << 20)
        metric = "accuracy" if task == "classification" else "R^2"
        con.print(f"data: {rows:,} rows x {features} features (train {Xtr.shape[0]:,}, held out "
                  f"{Xte.shape[0]:,}); memory bandwidth {bandwidth / 1e9:.1f} GB/s (numpy sum, "
                  "1 core)")
        names = [f"shardlearn {type(ours).__name__} ({engine}, {n_workers} workers)"]
        names += [label for label, _ in refs]
        times = {n: [] for n in names}
        scores = {}
        session = start_session(engine, n_workers, address)
        try:
            warm = clone(ours)
            if "n_estimators" in warm.get_params():
                warm.set_params(n_estimators=min(2, warm.get_params()["n_estimators"]))
            warm.fit(Dataset.from_arrays(Xtr[:WARMUP_ROWS], ytr[:WARMUP_ROWS],
                                         n_shards=n_workers))
            for r in range(rounds):
                fitted = clone(ours)
                # Timed like the references' fit: sharding and validation included.
                times[names[0]].append(_timed(_fit_on_shards, fitted, Xtr, ytr, n_shards))
                scores[names[0]] = float(fitted.score(Xte, yte))
                report = fitted.fit_report_
                for label, ref in refs:
                    est = clone(ref)
                    with threadpool_limits(limits=n_workers):
                        times[label].append(_timed(est.fit, Xtr, ytr))
                    scores[label] = float(est.score(Xte, yte))
                each = ", ".join(f"{n.split(' (')[0]} {times[n][-1]:.3f} s" for n in names)
                con.print(f"round {r + 1} of {rounds}: {each}")
        finally:
            session.shutdown()

    results = _results(names, times, scores, Xtr.shape)
    _print_table(con, results, metric, engine, n_workers)
    con.print("our last fit: " + report_line(type(ours).__name__, report), soft_wrap=True)
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"model": model_name, "engine": engine, "workers": n_workers,
                       "rows": rows, "features": features, "rounds": rounds,
                       "n_shards": report.n_shards,
                       "memory_bandwidth": bandwidth, "metric": metric,
                       "results": results}, f, indent=1)


def _timed(fn, *args) -> float:
    """Seconds of ``fn(*args)``."""
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _fit_on_shards(est, X, y, n_shards):
    # The shards are cut inside the timing, as a reference's fit validates its arrays.
    from ..data import Dataset

    est.fit(Dataset.from_arrays(X, y, n_shards=n_shards))


def _results(names, times, scores, train_shape) -> list[dict]:
    """Per estimator: its times, median, score, throughput, and (the references) each
    round's ratio ours / it and their median."""
    ours = times[names[0]]
    out = []
    for n in names:
        median = statistics.median(times[n])
        row = {"name": n, "times": times[n], "median_s": median, "score": scores[n],
               "rows_features_per_s": train_shape[0] * train_shape[1] / median}
        if n != names[0]:
            ratios = [a / b for a, b in zip(ours, times[n])]
            row.update(ratios=ratios, median_ratio=statistics.median(ratios))
        out.append(row)
    return out


def _print_table(con, results, metric, engine, n_workers):
    from rich import box
    from rich.table import Table

    table = Table(title=f"fit time on this machine ({n_workers} workers / threads each)",
                  caption="ours / it: our fit time over its, per round (median first)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for header in ("estimator", f"held-out\n{metric}", "fit (s)\nmedian",
                   "M rows x features\nper s", "ours / it"):
        table.add_column(header, justify="left" if header == "estimator" else "right",
                         no_wrap=True)
    for row in results:
        ratio = ("" if "ratios" not in row else f"{row['median_ratio']:.2f}x ("
                 + " ".join(f"{x:.2f}" for x in row["ratios"]) + ")")
        table.add_row(row["name"], f"{row['score']:.4f}", f"{row['median_s']:.3f}",
                      f"{row['rows_features_per_s'] / 1e6:.1f}", ratio)
    con.print()
    con.print(table)
