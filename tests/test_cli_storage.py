"""``shardlearn train`` / ``predict`` on storage URLs, run as subprocesses.

S3: moto's standalone server on 127.0.0.1 (``shardlearn.testing.storage``); the CLI talks
HTTP to it through s3fs exactly as it would to AWS or MinIO, with the endpoint and
credentials from ``--storage-option`` or from the standard AWS_* environment of the
subprocess. No client is patched.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardlearn
from shardlearn.cli._files import _csv_exact_floats
from shardlearn.data import Dataset
from shardlearn.ensemble import GradientBoostingClassifier
from shardlearn.linear_model import LogisticRegression, Ridge
from shardlearn.testing import make_linear_regression, make_logistic, session
from shardlearn.testing.cli import WORKERS_STARTED, run_cli_in_process
from shardlearn.testing.storage import local_snapshot, moto_s3_server

CLI = [sys.executable, "-m", "shardlearn.cli"]
#: Hang guard for one CLI run (not a speed requirement).
HANG_GUARD_S = 280
RAY_STARTED = "Started a local Ray instance"
COLS = ["a", "b", "c", "d"]
FILE_ROWS = [260, 140, 330]          # uneven files, several row groups each
ROW_GROUP = 100
SHARD_ROWS = 200
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION", "AWS_REGION")


def _cli_env(aws_env: bool, extra_env: dict | None = None) -> dict:
    """The variables a CLI run sets (None: unsets); ``aws_env=False`` removes every
    AWS_* setting (options must say it all)."""
    env = {"SHARDLEARN_PROGRESS": "never", "COLUMNS": "160",
           "AWS_EC2_METADATA_DISABLED": "true", **(extra_env or {})}
    if not aws_env:
        env.update(dict.fromkeys(AWS_VARS))
    return env


def run_cli(*args, aws_env: bool, extra_env: dict | None = None):
    """Run the CLI as a subprocess, with :func:`_cli_env`."""
    env = {**os.environ, **_cli_env(aws_env, extra_env)}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env=env)


def run_cli_here(*args):
    """:func:`run_cli` with ``aws_env=False``, in this process, where starting a worker
    fails (for commands that must fail before they start any)."""
    return run_cli_in_process(*args, env=_cli_env(aws_env=False), forbid_workers=True)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def failed(proc, code=1):
    assert proc.returncode == code, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Error" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # Failed before any worker was started.
    assert RAY_STARTED not in proc.stderr and WORKERS_STARTED not in proc.stderr
    return proc.stderr


def option_args(opts: dict) -> list[str]:
    """storage_options as --storage-option flags (dotted keys for nested dicts)."""
    out = []
    for k, v in opts.items():
        if isinstance(v, dict):
            out += [a for kk, vv in v.items() for a in ("--storage-option", f"{k}.{kk}={vv}")]
        else:
            out += ["--storage-option", f"{k}={v}"]
    return out


def _frame(X, y):
    return pd.DataFrame(X, columns=COLS).assign(y=y)


def _write_parts(write, X, y):
    """Partitioned Parquet: one file per FILE_ROWS entry, row groups of ROW_GROUP rows."""
    a = 0
    for k, n in enumerate(FILE_ROWS):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(_frame(X[a:a + n], y[a:a + n]), preserve_index=False),
                       buf, row_group_size=ROW_GROUP)
        write(f"part-{k:05d}.parquet", buf.getvalue())
        a += n


@pytest.fixture(scope="module")
def s3():
    X, y = make_logistic(sum(FILE_ROWS), len(COLS), random_state=11)
    with moto_s3_server() as srv:
        fs = srv.filesystem()
        _write_parts(lambda name, data: fs.pipe_file(f"{srv.bucket}/data/{name}", data), X, y)
        fs.pipe_file(f"{srv.bucket}/data/_SUCCESS", b"")
        srv.X, srv.y = X, y
        yield srv


def _reference(cls, X, y, boundaries, **params):
    """The model trained in-process from the same rows as arrays, same shard boundaries."""
    with session("local", n_workers=2):
        return cls(**params).fit(Dataset.from_arrays(X, y, boundaries=boundaries))


def _boundaries(url, storage_options=None):
    """The shard boundaries the readers plan for ``url`` (metadata only)."""
    return shardlearn.read_parquet(url, label="y", shard_rows=SHARD_ROWS,
                                   storage_options=storage_options).boundaries


def _read_s3_parquet(srv, url) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(srv.filesystem().cat_file(url[len("s3://"):]))).to_pandas()


@pytest.mark.timeout(300)
def test_s3_round_trip_with_storage_options(s3):
    """train from s3://.../*.parquet to s3://.../models/m1, predict s3 -> s3 Parquet; the
    subprocess has no AWS_* environment: endpoint and credentials come from --storage-option."""
    before = s3.snapshot("data")
    opts = option_args(s3.storage_options)
    data, model_url = s3.url("data/*.parquet"), s3.url("models/m1")
    proc = ok(run_cli("train", "--model", "logistic", "--data", data, "--label", "y",
                      "--engine", "local", "--workers", 2, "--shard-rows", SHARD_ROWS,
                      "--param", "C=0.5", "--out", model_url, *opts, aws_env=False))
    cuts = _boundaries(data, s3.storage_options)
    # Whole row groups of 100 rows, at most 200 rows per shard, never across files.
    np.testing.assert_array_equal(np.diff(cuts), [200, 60, 140, 200, 130])
    assert f"{len(cuts) - 1} shards" in proc.stdout, proc.stdout
    fs = s3.filesystem()
    fs.invalidate_cache()
    assert sorted(fs.ls(f"{s3.bucket}/models/m1")) == [f"{s3.bucket}/models/m1/arrays.npz",
                                                      f"{s3.bucket}/models/m1/model.json"]
    model = shardlearn.load(model_url, storage_options=s3.storage_options)
    ref = _reference(LogisticRegression, _frame(s3.X, s3.y)[COLS], s3.y, cuts, C=0.5)
    np.testing.assert_array_equal(model.coef_, ref.coef_)
    np.testing.assert_array_equal(model.intercept_, ref.intercept_)
    frame = pd.DataFrame(s3.X, columns=COLS)
    assert f"training accuracy: {ref.score(frame, s3.y):.4f}" in proc.stdout

    out = s3.url("predictions/p.parquet")
    proc = ok(run_cli("predict", "--model", model_url, "--data", data, "--label", "y",
                      "--out", out, *opts, aws_env=False))
    got = _read_s3_parquet(s3, out)
    assert list(got.columns) == ["prediction", "proba_0", "proba_1"]
    np.testing.assert_array_equal(got["prediction"].to_numpy(), ref.predict(frame))
    np.testing.assert_allclose(got[["proba_0", "proba_1"]].to_numpy(), ref.predict_proba(frame),
                               rtol=1e-12, atol=0)
    assert f"accuracy against column 'y': {ref.score(frame, s3.y):.4f}" in proc.stdout
    assert s3.snapshot("data") == before             # reading wrote and deleted nothing


@pytest.mark.timeout(300)
def test_s3_with_environment_credentials_to_local_outputs(s3, tmp_path):
    """Endpoint and credentials from the subprocess's AWS_* environment only; a regressor;
    S3 data with a local model directory and local .csv predictions."""
    X, y = make_linear_regression(sum(FILE_ROWS), len(COLS), random_state=12)
    fs = s3.filesystem()
    _write_parts(lambda name, data: fs.pipe_file(f"{s3.bucket}/reg/{name}", data), X, y)
    assert os.environ["AWS_ENDPOINT_URL"] == s3.endpoint     # set by moto_s3_server
    model_dir = tmp_path / "ridge"
    proc = ok(run_cli("train", "--model", "ridge", "--data", s3.url("reg/"), "--label", "y",
                      "--engine", "local", "--workers", 3, "--shard-rows", SHARD_ROWS,
                      "--param", "alpha=0.3", "--out", model_dir, aws_env=True))
    ref = _reference(Ridge, pd.DataFrame(X, columns=COLS), y, _boundaries(s3.url("reg/")),
                     alpha=0.3)
    model = shardlearn.load(model_dir)
    np.testing.assert_array_equal(model.coef_, ref.coef_)
    np.testing.assert_array_equal(model.intercept_, ref.intercept_)
    frame = pd.DataFrame(X, columns=COLS)
    assert f"training R^2: {ref.score(frame, y):.4f}" in proc.stdout

    pred = tmp_path / "pred.csv"
    ok(run_cli("predict", "--model", model_dir, "--data", s3.url("reg/*.parquet"), "--label", "y",
               "--out", pred, aws_env=True))
    got = pd.read_csv(pred, **_csv_exact_floats())
    assert list(got.columns) == ["prediction"]
    np.testing.assert_allclose(got["prediction"].to_numpy(), ref.predict(frame), rtol=1e-13,
                               atol=1e-12)


@pytest.mark.timeout(300)
def test_local_parquet_directory_round_trip(tmp_path):
    """A directory of Parquet files (uneven, several row groups, a _SUCCESS marker)."""
    X, y = make_logistic(sum(FILE_ROWS), len(COLS), n_classes=3, random_state=13)
    labels = np.array(["ant", "bee", "cow"], dtype=object)[y]
    root = tmp_path / "data"
    (root / "year=2024").mkdir(parents=True)
    _write_parts(lambda name, data: (root / "year=2024" / name).write_bytes(data), X, labels)
    (root / "_SUCCESS").write_bytes(b"")
    before = local_snapshot(root)
    model_dir = tmp_path / "m"
    proc = ok(run_cli("train", "--model", "logistic", "--data", root, "--label", "y",
                      "--engine", "local", "--workers", 2, "--shard-rows", SHARD_ROWS,
                      "--out", model_dir, aws_env=False))
    ref = _reference(LogisticRegression, pd.DataFrame(X, columns=COLS), labels, _boundaries(root))
    model = shardlearn.load(model_dir)
    np.testing.assert_array_equal(model.coef_, ref.coef_)
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    frame = pd.DataFrame(X, columns=COLS)
    assert f"training accuracy: {ref.score(frame, labels):.4f}" in proc.stdout

    out = tmp_path / "pred.parquet"
    ok(run_cli("predict", "--model", f"file://{model_dir}", "--data", root, "--label", "y",
               "--out", out, aws_env=False))
    got = pd.read_parquet(out)
    assert list(got.columns) == ["prediction", "proba_ant", "proba_bee", "proba_cow"]
    assert list(got["prediction"]) == list(ref.predict(frame))
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), ref.predict_proba(frame),
                               rtol=1e-12, atol=0)
    assert local_snapshot(root) == before


@pytest.mark.timeout(300)
def test_shards_that_do_not_fit_memory_stop_with_a_clear_error(tmp_path):
    """The workers' memory check (SHARDLEARN_MEMORY_LIMIT stands in for a small machine)."""
    X, y = make_logistic(sum(FILE_ROWS), len(COLS), random_state=14)
    root = tmp_path / "data"
    root.mkdir()
    _write_parts(lambda name, data: (root / name).write_bytes(data), X, y)
    env_limit = {"SHARDLEARN_MEMORY_LIMIT": "20K"}
    proc = run_cli("train", "--model", "logistic", "--data", root, "--label", "y",
                   "--engine", "local", "--workers", 2, "--out", tmp_path / "m", aws_env=False,
                   extra_env=env_limit)
    err = failed(proc)
    assert "do not fit in memory" in err and "Nothing was read" in err
    assert not (tmp_path / "m").exists()


# -- bad URLs and credentials: Error before any worker starts; storage unchanged -------------
@pytest.mark.timeout(300)
def test_bad_urls_fail_before_workers_start(s3, tmp_path):
    fs = s3.filesystem()
    fs.pipe_file(f"{s3.bucket}/notamodel/readme.txt", b"keep me")
    before = s3.snapshot()
    opts = option_args(s3.storage_options)
    train = ["train", "--model", "logistic", "--label", "y", "--engine", "ray", "--workers", 2]
    good_data = ["--data", s3.url("data/*.parquet")]
    cases = [
        (train + ["--data", s3.url("nothing/*.parquet"), "--out", tmp_path / "m"],
         1, ["No data files match", s3.url("nothing/*.parquet")]),
        (train + ["--data", s3.url("data/part-00099.parquet"), "--out", tmp_path / "m"],
         1, ["does not exist", s3.url("data/part-00099.parquet")]),
        (train + good_data + ["--out", "s3://no-such-bucket/models/m1"],
         1, ["bucket 'no-such-bucket' does not exist"]),
        (train + good_data + ["--out", s3.url("notamodel")],
         2, ["not a shardlearn model", "readme.txt"]),
        (train + ["--data", "nosuch://bucket/x.parquet", "--out", tmp_path / "m"],
         1, ["nosuch://bucket/x.parquet"]),
        (train + ["--data", s3.url("data/train.npz"), "--out", tmp_path / "m"],
         1, [".npz files are read from local paths only"]),
        (["predict", "--model", s3.url("models/nothing"), "--data", s3.url("data/"),
          "--out", tmp_path / "p.parquet"], 1, ["not a shardlearn model", s3.url("models/nothing")]),
        (["predict", "--model", s3.url("models/nothing"), "--data", s3.url("data/"),
          "--out", s3.url("p.csv")], 1, ["as Parquet", ".parquet"]),
    ]
    for args, code, expected in cases:
        err = failed(run_cli_here(*args, *opts), code)
        for text in expected:
            assert text in err, (args, text, err)
    assert not (tmp_path / "m").exists() and not (tmp_path / "p.parquet").exists()
    assert s3.snapshot() == before


@pytest.mark.timeout(300)
def test_wrong_credentials_fail_with_a_clear_message(s3, tmp_path):
    ok(run_cli("train", "--model", "logistic", "--data", s3.url("data/"), "--label", "y",
               "--engine", "local", "--workers", 1, "--out", s3.url("models/cred"),
               *option_args(s3.storage_options), aws_env=False))
    before = s3.snapshot()
    wrong = option_args(dict(s3.storage_options, key="not-a-key", secret="not-a-secret"))
    with s3.checking_credentials():
        # Data, the model output and the model input each need the credentials.
        for args, url in [
            (["train", "--data", s3.url("data/*.parquet"), "--out", tmp_path / "m"],
             s3.url("data/*.parquet")),
            (["train", "--data", tmp_path / "none.parquet", "--out", s3.url("models/new")],
             s3.url("models/new")),
            (["predict", "--data", s3.url("data/"), "--out", tmp_path / "p.parquet"],
             s3.url("models/cred")),
        ]:
            if args[0] == "train":
                args = args + ["--model", "logistic", "--label", "y", "--engine", "ray"]
            else:
                args = args + ["--model", s3.url("models/cred")]
            err = failed(run_cli_here(*args, *wrong))
            assert "access denied or missing credentials" in err and url in err, err
            assert "--storage-option" in err, err           # the command-line spelling
    assert not (tmp_path / "m").exists() and not (tmp_path / "p.parquet").exists()
    assert s3.snapshot() == before


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_s3_train_on_ray_workers(s3):
    """Ray workers (their own processes) read their shards from S3 with --storage-option;
    the model equals the local engine's bit for bit."""
    model_url = s3.url("models/ray")
    ok(run_cli("train", "--model", "logistic", "--data", s3.url("data/*.parquet"), "--label", "y",
               "--engine", "ray", "--workers", 2, "--shard-rows", SHARD_ROWS, "--out", model_url,
               *option_args(s3.storage_options), aws_env=False))
    model = shardlearn.load(model_url, storage_options=s3.storage_options)
    ref = _reference(LogisticRegression, pd.DataFrame(s3.X, columns=COLS), s3.y,
                     _boundaries(s3.url("data/*.parquet"), s3.storage_options))
    np.testing.assert_array_equal(model.coef_, ref.coef_)
    np.testing.assert_array_equal(model.intercept_, ref.intercept_)
    # Boosting: each Ray worker bins the shards it reads; the same trees as in-process.
    model_url = s3.url("models/ray-boosting")
    ok(run_cli("train", "--model", "boosting", "--data", s3.url("data/*.parquet"), "--label", "y",
               "--engine", "ray", "--workers", 2, "--shard-rows", SHARD_ROWS, "--out", model_url,
               "--param", "n_estimators=20", "--param", "max_depth=3",
               *option_args(s3.storage_options), aws_env=False))
    model = shardlearn.load(model_url, storage_options=s3.storage_options)
    ref = _reference(GradientBoostingClassifier, pd.DataFrame(s3.X, columns=COLS), s3.y,
                     _boundaries(s3.url("data/*.parquet"), s3.storage_options),
                     n_estimators=20, max_depth=3)
    np.testing.assert_array_equal(model.predict_proba(s3.X), ref.predict_proba(s3.X))
