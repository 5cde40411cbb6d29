"""The ``shardlearn`` command line, run as a subprocess (``python -m shardlearn.cli``), or
in this process where a test only needs the command (shardlearn.testing.cli)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import shardlearn
from shardlearn.cli._files import _csv_exact_floats
from shardlearn.data import Dataset
from shardlearn.linear_model import LinearSVC, LogisticRegression, Ridge
from shardlearn.testing import make_linear_regression, make_logistic
from shardlearn.testing.cli import WORKERS_STARTED, run_cli_in_process

CLI = [sys.executable, "-m", "shardlearn.cli"]
#: Hang guard for one CLI run (not a speed requirement).
HANG_GUARD_S = 280
RAY_STARTED = "Started a local Ray instance"
DEMO_MODELS = ("LogisticRegression", "LinearSVC", "Ridge", "LinearRegression")


def run_cli(*args):
    env = {**os.environ, "SHARDLEARN_PROGRESS": "never", "COLUMNS": "160"}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env=env)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


# -- demo ---------------------------------------------------------------------------------
def table_rows(stdout):
    """{model: [shardlearn score, shardlearn time, sklearn score, sklearn time]} from the table."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in DEMO_MODELS:
            rows[cells[0]] = [float(c) for c in cells[2:6]]
    return rows


def check_demo_output(stdout, engine):
    rows = table_rows(stdout)
    assert set(rows) == set(DEMO_MODELS), stdout
    for name in ("LogisticRegression", "LinearSVC"):
        sl, _, sk, _ = rows[name]
        # Same objective as scikit-learn: at most a couple of 750 test rows differ.
        assert abs(sl - sk) <= 0.005, (name, sl, sk)
        assert sl > 0.7, (name, sl)
    for name in ("Ridge", "LinearRegression"):
        sl, _, sk, _ = rows[name]
        assert sl == pytest.approx(sk, abs=1e-4), (name, sl, sk)
        assert sl > 0.9, (name, sl)
    assert f"engine={engine}" in stdout
    for name in DEMO_MODELS:
        line = next(ln for ln in stdout.splitlines() if ln.strip().startswith(f"{name}:"))
        n_iter = int(re.search(r"(\d+) iterations?", line).group(1))
        assert n_iter >= 1
        assert "worker steps" in line and "MB moved" in line and "on 2 workers" in line


@pytest.mark.timeout(300)
def test_demo_local_engine():
    proc = ok(run_cli("demo", "--engine", "local", "--rows", 3000, "--features", 6,
                      "--workers", 2, "--n-shards", 3))
    check_demo_output(proc.stdout, "local")
    assert "3 shards on 2 workers" in proc.stdout
    assert RAY_STARTED not in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_ray_engine():
    proc = ok(run_cli("demo", "--engine", "ray", "--rows", 3000, "--features", 6, "--workers", 2,
                      "--n-shards", 2))
    check_demo_output(proc.stdout, "ray")
    assert "workers shut down" in proc.stdout


# -- train / predict round trip --------------------------------------------------------------
def _classification_frame(label_name):
    X, y = make_logistic(300, 4, n_classes=3, random_state=1)
    names = np.array(["cat", "dog", "eel"], dtype=object)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)])
    df[label_name] = names[y]
    return df


def _binary_frame(label_name):
    X, y = make_logistic(300, 4, n_classes=2, random_state=2)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df.insert(2, label_name, y)  # label in the middle: features are found by name
    return df


def _read_predictions(path):
    if path.suffix == ".csv":
        return pd.read_csv(path, **_csv_exact_floats())
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    with np.load(path, allow_pickle=False) as npz:
        return pd.DataFrame({k: npz[k] for k in npz.files})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", ["csv", "parquet", "npz"])
def test_train_predict_round_trip(fmt, tmp_path, local_session):
    """csv/parquet: a file dataset read by the workers (--shard-rows); npz: in memory (--n-shards)."""
    data = tmp_path / f"train.{fmt}"
    pred = tmp_path / f"pred.{fmt}"
    model_dir = tmp_path / "model"
    if fmt == "csv":
        df = _classification_frame("target")
        df.to_csv(data, index=False)
        model, label, params = "logistic", "target", ["--param", "C=0.5"]
        reference = LogisticRegression(C=0.5)
    elif fmt == "parquet":
        df = _binary_frame("label")
        df.to_parquet(data, index=False, row_group_size=100)
        model, label, params = "linear-svc", "label", ["--param", "C=2", "--param", "tol=1e-6"]
        reference = LinearSVC(C=2.0, tol=1e-6)
    else:
        X, y = make_linear_regression(300, 4, random_state=3)
        np.savez(data, X=X, y=y)
        model, label, params = "ridge", None, ["--param", "alpha=0.3"]
        reference = Ridge(alpha=0.3)
    shards = ["--n-shards", 3] if fmt == "npz" else ["--shard-rows", 100]
    train_args = ["train", "--model", model, "--data", data, "--out", model_dir,
                  "--engine", "local", "--workers", 2, *shards, *params]
    if label:
        train_args += ["--label", label]
    proc = ok(run_cli(*train_args))
    assert "3 shards" in proc.stdout and "iterations" in proc.stdout
    assert (model_dir / "model.json").exists() and (model_dir / "arrays.npz").exists()

    # The saved model is bit-identical to fitting the same rows in-process with the same
    # shard boundaries (any worker count).
    if fmt == "npz":
        X_feat, y_true = X, y
    else:
        X_feat, y_true = df.drop(columns=[label]), df[label].to_numpy()
    reference.fit(Dataset.from_arrays(X_feat, y_true, boundaries=[0, 100, 200, 300]))
    metric = "accuracy" if fmt != "npz" else "R^2"
    assert f"training {metric}: {reference.score(X_feat, y_true):.4f}" in proc.stdout
    loaded = shardlearn.load(model_dir)
    assert type(loaded) is type(reference)
    np.testing.assert_array_equal(loaded.coef_, reference.coef_)
    np.testing.assert_array_equal(loaded.intercept_, reference.intercept_)

    predict_args = ["predict", "--model", model_dir, "--data", data, "--out", pred]
    if label:
        predict_args += ["--label", label]
    ok(run_cli(*predict_args))
    out = _read_predictions(pred)
    assert len(out) == len(X_feat)
    expected = loaded.predict(X_feat)
    if fmt == "npz":
        np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
        assert list(out.columns) == ["prediction"]
    else:
        assert list(out["prediction"].astype(str)) == [str(v) for v in expected]
    if fmt == "csv":
        proba = loaded.predict_proba(X_feat)
        assert list(out.columns) == ["prediction", "proba_cat", "proba_dog", "proba_eel"]
        np.testing.assert_array_equal(out[["proba_cat", "proba_dog", "proba_eel"]].to_numpy(), proba)
    if fmt == "parquet":
        assert list(out.columns) == ["prediction"]  # LinearSVC has no predict_proba


TREE_CASES = {
    # model, file type, --param values, reference
    "boosting": ("parquet", ["n_estimators=30", "max_depth=3", "learning_rate=0.2"],
                 dict(n_estimators=30, max_depth=3, learning_rate=0.2)),
    "forest-regressor": ("csv", ["n_estimators=8", "max_depth=5", "random_state=3"],
                         dict(n_estimators=8, max_depth=5, random_state=3)),
    "tree": ("npz", ["max_depth=4", "criterion='entropy'"],
             dict(max_depth=4, criterion="entropy")),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", list(TREE_CASES))
def test_train_tree_models_round_trip(model, tmp_path):
    """Trees from the command line: missing values (NaN) in the files and string labels
    for the classifiers; the saved model predicts exactly as an in-process fit on the
    same shard boundaries, and ``predict`` writes those predictions."""
    from shardlearn.cli._common import model_class

    fmt, params, kwargs = TREE_CASES[model]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    signal = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) ** 2
    data, pred, model_dir = tmp_path / f"train.{fmt}", tmp_path / "pred.parquet", tmp_path / "m"
    if model == "forest-regressor":
        y = signal + 0.1 * rng.normal(size=300)
    else:
        y = np.array(["no", "yes"], dtype=object)[(signal > -0.5).astype(int)]
    if fmt == "npz":
        np.savez(data, X=X, y=(y == "yes").astype(np.int64))
        y = (y == "yes").astype(np.int64)
        X_feat, label, shards = X, [], ["--n-shards", 3]
    else:
        X_feat = pd.DataFrame(X, columns=["a", "b", "c", "d"])
        df = X_feat.assign(target=y)
        if fmt == "csv":
            df.to_csv(data, index=False)
        else:
            df.to_parquet(data, index=False, row_group_size=100)
        label, shards = ["--label", "target"], ["--shard-rows", 100]
    args = ["train", "--model", model, "--data", data, "--out", model_dir, "--engine", "local",
            "--workers", 2, *shards, *label]
    for p in params:
        args += ["--param", p]
    proc = ok(run_cli_in_process(*args))
    assert "3 shards" in proc.stdout and "tree_level" in proc.stdout

    reference = model_class(model)(**kwargs)
    reference.fit(Dataset.from_arrays(X_feat, y, boundaries=[0, 100, 200, 300], allow_nan=True))
    loaded = shardlearn.load(model_dir)
    assert type(loaded) is type(reference)
    assert {k: loaded.get_params()[k] for k in kwargs} == kwargs
    expected = reference.predict(X_feat)
    np.testing.assert_array_equal(loaded.predict(X_feat), expected)
    metric = "R^2" if model == "forest-regressor" else "accuracy"
    assert f"training {metric}: {reference.score(X_feat, y):.4f}" in proc.stdout
    assert reference.score(X_feat, y) > 0.8

    ok(run_cli_in_process("predict", "--model", model_dir, "--data", data, *label, "--out", pred))
    out = pd.read_parquet(pred)
    if model == "forest-regressor":
        np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    else:
        assert list(out["prediction"].astype(str)) == [str(v) for v in expected]
        proba = reference.predict_proba(X_feat)
        names = [f"proba_{c}" for c in reference.classes_]
        np.testing.assert_array_equal(out[names].to_numpy(), proba)
    if fmt == "npz":
        # A model that takes no missing values still refuses them, before any work.
        proc = run_cli_in_process("train", "--model", "logistic", "--data", data, "--out",
                                  tmp_path / "lin", forbid_workers=True)
        assert proc.returncode == 1 and "missing or infinite value" in proc.stderr
        assert not (tmp_path / "lin").exists()



@pytest.mark.timeout(300)
def test_train_single_class(tmp_path):
    """One class in the labels: a tree learns it (as scikit-learn's); a linear model and
    boosting refuse it before any worker starts, and write nothing."""
    data = tmp_path / "one.csv"
    pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 3, "y": ["only"] * 40}
                 ).to_csv(data, index=False)
    ok(run_cli_in_process("train", "--model", "tree", "--data", data, "--label", "y",
                          "--out", tmp_path / "tree", "--engine", "local"))
    zeros = pd.DataFrame({"a": [0.0, 1.0], "b": [0.0, 1.0]})
    assert list(shardlearn.load(tmp_path / "tree").predict(zeros)) == ["only"] * 2
    for model in ("logistic", "boosting"):
        proc = run_cli_in_process("train", "--model", model, "--data", data, "--label", "y",
                                  "--out", tmp_path / model, forbid_workers=True)
        assert proc.returncode == 1 and "only one class" in proc.stderr, proc.stderr
        assert not (tmp_path / model).exists()

@pytest.mark.timeout(300)
def test_predict_matches_columns_by_name(tmp_path):
    """Features are matched by name, in any order; other columns (an unnamed label, ids)
    are left out; a missing feature column is a clear error. Same for every output type
    (csv: read in memory; parquet: predicted shard by shard from the files). In this
    process: the round trips above run the command as a subprocess."""
    df = _binary_frame("label")
    data = tmp_path / "train.csv"
    df.to_csv(data, index=False)
    model_dir = tmp_path / "m"
    ok(run_cli_in_process("train", "--model", "logistic", "--data", data, "--label", "label",
                          "--out", model_dir, "--engine", "local", "--workers", 1))
    shuffled = tmp_path / "shuffled.parquet"
    df.assign(row_id=np.arange(len(df)))[["d", "label", "b", "row_id", "a", "c"]].to_parquet(
        shuffled, index=False)
    holes = tmp_path / "no_b.parquet"
    df.drop(columns=["b"]).to_parquet(holes, index=False)
    loaded = shardlearn.load(model_dir)
    X = df.drop(columns=["label"])
    expected = loaded.predict(X)
    for suffix in ("csv", "parquet"):
        pred = tmp_path / f"p.{suffix}"
        proc = ok(run_cli_in_process("predict", "--model", model_dir, "--data", shuffled,
                                     "--label", "label", "--out", pred))
        assert f"accuracy against column 'label': {loaded.score(X, df['label']):.4f}" in proc.stdout
        np.testing.assert_array_equal(_read_predictions(pred)["prediction"].to_numpy(), expected)
        unlabelled = tmp_path / f"q.{suffix}"
        ok(run_cli_in_process("predict", "--model", model_dir, "--data", shuffled, "--out",
                              unlabelled))
        np.testing.assert_array_equal(_read_predictions(unlabelled)["prediction"].to_numpy(),
                                      expected)

        bad = tmp_path / f"bad.{suffix}"
        proc = run_cli_in_process("predict", "--model", model_dir, "--data", holes, "--out", bad)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "'b'" in proc.stderr and str(holes) in proc.stderr
        assert not bad.exists()


# -- bad input ------------------------------------------------------------------------------
@pytest.fixture
def good_csv(tmp_path):
    df = _binary_frame("label")
    df["city"] = ["x", "y", "z"] * 100
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", [
    "missing-file", "missing-label", "no-label-given", "non-numeric", "unknown-model",
    "unknown-param", "bad-param-value", "malformed-param", "out-not-a-model",
    "n-shards-for-files", "bad-storage-option", "unsupported-type",
])
def test_train_bad_input_fails_before_workers_start(case, good_csv, tmp_path):
    out = tmp_path / "model"
    base = ["train", "--engine", "ray", "--workers", 2, "--out", out]
    drop_city = ["--data", good_csv]
    args, expected, code = {
        "missing-file": (["--model", "logistic", "--data", tmp_path / "nope.csv", "--label", "label"],
                         ["nope.csv", "does not exist"], 1),
        "missing-label": (["--model", "logistic", *drop_city, "--label", "target"],
                          ["no label column 'target'", "'label'", "'city'",
                           "with --label COL"], 1),
        "no-label-given": (["--model", "logistic", *drop_city], ["--label", "'label'"], 1),
        "non-numeric": (["--model", "logistic", *drop_city, "--label", "label"],
                        ["non-numeric", "'city'"], 1),
        "unknown-model": (["--model", "deep-forest", *drop_city, "--label", "label"],
                          ["'deep-forest'", "logistic", "linear-svc", "ridge", "boosting"], 2),
        "unknown-param": (["--model", "ridge", *drop_city, "--label", "label", "--param", "C=1"],
                          ["no parameter 'C'", "alpha"], 2),
        "bad-param-value": (["--model", "logistic", *drop_city, "--label", "label",
                             "--param", "C=-1"], ["'C'", "-1"], 2),
        "malformed-param": (["--model", "logistic", *drop_city, "--label", "label",
                             "--param", "C"], ["KEY=VALUE"], 2),
        "out-not-a-model": (["--model", "logistic", *drop_city, "--label", "label"],
                            ["not a shardlearn model directory"], 2),
        "n-shards-for-files": (["--model", "logistic", *drop_city, "--label", "label",
                                "--n-shards", 3], ["--n-shards", "--shard-rows"], 2),
        "bad-storage-option": (["--model", "logistic", *drop_city, "--label", "label",
                                "--storage-option", "endpoint_url"], ["--storage-option",
                                                                      "key=value"], 2),
        "unsupported-type": (["--model", "logistic", "--data", tmp_path / "data.xlsx",
                              "--label", "label"], ["'.xlsx'", ".parquet"], 1),
    }[case]
    if case == "unsupported-type":
        (tmp_path / "data.xlsx").write_bytes(b"not a table")
    if case == "out-not-a-model":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = good_csv.read_bytes()
    # In this process (no 2.5 s of imports per case), where starting a worker fails.
    proc = run_cli_in_process(*base, *args, forbid_workers=True)
    assert proc.returncode == code, proc.stderr
    assert "Error" in proc.stderr and "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert WORKERS_STARTED not in proc.stderr  # failed before any worker was started
    assert good_csv.read_bytes() == before
    if case == "out-not-a-model":
        assert (out / "keep.txt").read_text() == "mine" and not (out / "model.json").exists()
    else:
        assert not out.exists()


def test_the_in_process_runner_catches_a_command_that_starts_workers(tmp_path):
    # What makes "failed before any worker was started" above mean something.
    data = tmp_path / "train.csv"
    _binary_frame("label").to_csv(data, index=False)
    out = tmp_path / "model"
    proc = run_cli_in_process("train", "--model", "logistic", "--data", data, "--label",
                              "label", "--engine", "local", "--workers", 1, "--param", "C=1",
                              "--out", out, forbid_workers=True)
    assert proc.returncode == 1 and WORKERS_STARTED in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.timeout(300)
def test_train_reports_missing_values_with_row_and_column(tmp_path):
    # Values inside Parquet/CSV files are checked by the workers that read them (the driver
    # reads metadata only), so this error comes from the load step, still as a clean Error.
    df = _binary_frame("label")
    df.loc[7, "c"] = np.nan
    path = tmp_path / "holes.parquet"
    df.to_parquet(path, index=False)
    before = path.read_bytes()
    proc = run_cli("train", "--model", "linear", "--data", path, "--label", "label",
                   "--engine", "local", "--workers", 2, "--out", tmp_path / "m")
    assert proc.returncode == 1
    assert "Error" in proc.stderr and "Traceback" not in proc.stderr
    assert "'c'" in proc.stderr and "row 7" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "m").exists() and path.read_bytes() == before


@pytest.mark.timeout(300)
def test_predict_bad_model_dir_and_output_type(tmp_path, good_csv):
    proc = run_cli("predict", "--model", tmp_path / "nomodel", "--data", good_csv,
                   "--out", tmp_path / "p.csv")
    assert proc.returncode == 1 and "not a shardlearn model directory" in proc.stderr
    proc = run_cli("predict", "--model", tmp_path / "nomodel", "--data", good_csv,
                   "--out", tmp_path / "p.xlsx")
    assert proc.returncode == 1 and "'.xlsx'" in proc.stderr and ".parquet" in proc.stderr


# -- info -----------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_info_prints_versions_and_engine():
    import scipy
    import sklearn

    proc = ok(run_cli("info", "--engine", "local", "--workers", 3))
    out = proc.stdout
    for name, version in [("shardlearn", shardlearn.__version__), ("numpy", np.__version__),
                          ("scipy", scipy.__version__), ("scikit-learn", sklearn.__version__),
                          ("pandas", pd.__version__)]:
        assert re.search(rf"{re.escape(name)}\s*[│|]\s*{re.escape(version)}\b", out), (name, out)
    assert re.search(r"ray\s*[│|]\s*\d+\.\d+", out)
    assert re.search(r"python\s*[│|]\s*" + re.escape(".".join(map(str, sys.version_info[:3]))), out)
    assert re.search(rf"CPUs\s*[│|]\s*{os.cpu_count()}\b", out)
    assert re.search(r"n_workers\s*[│|]\s*3\b", out)
    assert re.search(r"engine\s*[│|]\s*local\b", out)
