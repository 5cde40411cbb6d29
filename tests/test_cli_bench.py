"""``shardlearn bench``: the references are set up as our model is, the ratios are
those of the times it measured, and the scores are those of the fits it timed."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest
from sklearn import ensemble as ske
from sklearn.base import is_classifier
from sklearn.model_selection import train_test_split

from shardlearn.cli._common import MODELS, build_estimator
from shardlearn.cli._references import references
from shardlearn.cli.demo import make_demo_data
from shardlearn.data import Dataset
from shardlearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from shardlearn.testing.cli import WORKERS_STARTED, run_cli_in_process
from test_cli import ok

pytestmark = pytest.mark.timeout(300)


def test_bench_boosting_times_scores_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = ok(run_cli_in_process(
        "bench", "--model", "boosting", "--rows", 4000, "--features", 6, "--rounds", 2,
        "--engine", "local", "--workers", 2, "--n-shards", 2, "--param", "n_estimators=5",
        "--param", "max_depth=3", "--json", out))
    res = json.loads(out.read_text())
    rows = {r["name"].split(" (")[0]: r for r in res["results"]}
    ours = rows.pop("shardlearn GradientBoostingClassifier")
    expected = {"scikit-learn HistGradientBoostingClassifier"}
    try:
        import xgboost  # noqa: F401

        expected.add("XGBoost hist")
    except ImportError:
        pass
    assert set(rows) == expected
    assert res["n_shards"] == 2 and res["workers"] == 2 and res["memory_bandwidth"] > 1e8
    assert len(ours["times"]) == 2 and all(t > 0 for t in ours["times"])
    for name, row in rows.items():
        assert row["ratios"] == [a / b for a, b in zip(ours["times"], row["times"])]
        assert row["median_ratio"] == statistics.median(row["ratios"])
        assert name in proc.stdout and f"{row['median_ratio']:.2f}x" in proc.stdout

    # The scores are those of fits made as the command says it makes them.
    X, y, _ = make_demo_data(4000, 6, 0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
    model = GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0)
    model.fit(Dataset.from_arrays(Xtr, ytr, n_shards=2))
    assert ours["score"] == model.score(Xte, yte)
    ref = ske.HistGradientBoostingClassifier(max_iter=5, max_depth=3, max_leaf_nodes=None,
                                             early_stopping=False, l2_regularization=0.0,
                                             random_state=0).fit(Xtr, ytr)
    assert rows["scikit-learn HistGradientBoostingClassifier"]["score"] == ref.score(Xte, yte)
    assert "accuracy" in proc.stdout and "our last fit: GradientBoostingClassifier" in proc.stdout


@pytest.mark.slow
def test_bench_on_ray_workers_scores_as_in_process(tmp_path):
    """The command as a user runs it (a subprocess starting its own Ray cluster): the
    model it times on Ray workers is the in-process one, bit for bit, so its score is."""
    out = tmp_path / "ray.json"
    env = {**os.environ, "SHARDLEARN_PROGRESS": "never", "COLUMNS": "160"}
    proc = subprocess.run(
        [sys.executable, "-m", "shardlearn.cli", "bench", "--engine", "ray", "--workers", "2",
         "--model", "boosting", "--rows", "4000", "--features", "6", "--rounds", "1",
         "--n-shards", "2", "--param", "n_estimators=5", "--param", "max_depth=3",
         "--json", str(out)], capture_output=True, text=True, timeout=280, env=env)
    ok(proc)
    res = json.loads(out.read_text())
    assert res["engine"] == "ray" and res["results"][0]["name"].endswith("(ray, 2 workers)")
    X, y, _ = make_demo_data(4000, 6, 0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
    model = GradientBoostingClassifier(n_estimators=5, max_depth=3, random_state=0)
    model.fit(Dataset.from_arrays(Xtr, ytr, n_shards=2))
    assert res["results"][0]["score"] == model.score(Xte, yte)


def test_every_model_has_a_reference_set_up_as_ours():
    for name in MODELS:
        ours = build_estimator(name, ())
        refs = references(name, ours, 2)
        assert refs, name
        for _, ref in refs:
            assert is_classifier(ref) == (MODELS[name][2] == "classification"), (name, ref)
        # The same model: scikit-learn's class of that name (histogram boosting for ours).
        want = type(ours).__name__.replace("GradientBoosting", "HistGradientBoosting")
        assert type(refs[0][1]).__name__ == want
    forest = RandomForestRegressor(n_estimators=7, max_depth=3, max_features=2, bootstrap=False)
    (_, ref), = references("forest-regressor", forest, 3)
    assert {k: ref.get_params()[k] for k in ("n_estimators", "max_depth", "max_features",
                                               "bootstrap", "n_jobs")} == {
        "n_estimators": 7, "max_depth": 3, "max_features": 2, "bootstrap": False, "n_jobs": 3}
    boost = build_estimator("boosting", ("n_estimators=9", "max_depth=4", "learning_rate=0.3",
                                         "reg_lambda=2.0", "max_bins=63"))
    refs = dict(references("boosting", boost, 2))
    hgb = refs["scikit-learn HistGradientBoostingClassifier"].get_params()
    assert (hgb["max_iter"], hgb["max_depth"], hgb["learning_rate"], hgb["l2_regularization"],
            hgb["max_bins"], hgb["early_stopping"]) == (9, 4, 0.3, 2.0, 63, False)
    if "XGBoost hist" in refs:
        xgb = refs["XGBoost hist"].get_params()
        # XGBoost counts the missing-value bin in max_bin.
        assert (xgb["n_estimators"], xgb["max_depth"], xgb["reg_lambda"], xgb["max_bin"],
                xgb["n_jobs"]) == (9, 4, 2.0, 64, 2)


def test_bench_linear_model_on_one_round():
    proc = ok(run_cli_in_process("bench", "--model", "ridge", "--rows", 3000, "--rounds", 1,
                                 "--engine", "local", "--workers", 2))
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("scikit-learn Ridge"))
    r2 = float(line.split()[2])
    assert 0.9 < r2 <= 1.0 and "R^2" in proc.stdout and "round 1 of 1" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (("--param", "nosuch=1"), "has no parameter 'nosuch'"),
    (("--param", "max_depth=-3"), "max_depth"),
    (("--rows", 10), "--rows"),
    (("--model", "deep-forest"), "--model"),
])
def test_bench_bad_input_fails_before_any_worker(args, message):
    proc = run_cli_in_process("bench", *args, forbid_workers=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and WORKERS_STARTED not in proc.stderr
