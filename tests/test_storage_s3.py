"""Training from and saving to a real S3-protocol server (moto's standalone server on 127.0.0.1).

The code under test talks HTTP to the server through s3fs exactly as it would to AWS
or MinIO; only the endpoint differs. No client is patched.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardlearn
from shardlearn.data import Dataset
from shardlearn.data.readers import FileDataError, clear_read_log, predict_to_parquet, read_log
from shardlearn.io.storage import StorageError
from shardlearn.linear_model import LogisticRegression
from shardlearn.runtime import Coordinator, steps_started
from shardlearn.testing import make_logistic, session
from shardlearn.testing.storage import moto_s3_server, worker_read_log

COLS = ["a", "b", "c", "d"]
FILE_ROWS = [900, 500, 1100]
ROW_GROUP = 300


@pytest.fixture(scope="module")
def s3():
    """A moto server with partitioned Parquet under s3://<bucket>/data/ (and a _SUCCESS marker)."""
    X, y = make_logistic(sum(FILE_ROWS), len(COLS), random_state=5)
    with moto_s3_server() as srv:
        fs = srv.filesystem()
        a = 0
        for k, n in enumerate(FILE_ROWS):
            df = pd.DataFrame(X[a:a + n], columns=COLS).assign(y=y[a:a + n])
            with fs.open(f"{srv.bucket}/data/part-{k:05d}.parquet", "wb") as f:
                pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f,
                               row_group_size=ROW_GROUP)
            a += n
        fs.pipe_file(f"{srv.bucket}/data/_SUCCESS", b"")
        srv.X, srv.y = X, y
        yield srv


def _reference(srv, ds):
    """The model trained from the same rows as an in-memory array with the same shards."""
    mem = Dataset.from_arrays(srv.X, srv.y, boundaries=ds.boundaries)
    with session("local", n_workers=2):
        return LogisticRegression().fit(mem)


@pytest.mark.timeout(180)
def test_train_from_s3_with_environment_credentials_and_save_model_back(s3):
    before = s3.snapshot("data")
    # Endpoint and credentials come from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / ... only.
    assert os.environ["AWS_ENDPOINT_URL"] == s3.endpoint
    ds = shardlearn.read_parquet(s3.url("data/*.parquet"), label="y", shard_rows=600)
    assert ds.n_rows == len(s3.y) and list(ds.feature_names) == COLS
    assert all(s.source.location.url.startswith(f"s3://{s3.bucket}/data/part-") for s in ds.shards)
    ref = _reference(s3, ds)
    clear_read_log()
    with session("local", n_workers=2):
        model = LogisticRegression().fit(ds)
    assert np.array_equal(model.coef_, ref.coef_) and np.array_equal(model.intercept_, ref.intercept_)
    rows = [e for e in read_log() if e["kind"] == "rows"]
    assert sum(e["rows"] for e in rows) == ds.n_rows
    assert all(e["thread"].startswith("shardlearn-w") for e in rows)

    url = s3.url("models/m1")
    model.save(url)
    fs = s3.filesystem()
    assert sorted(fs.ls(f"{s3.bucket}/models/m1")) == [f"{s3.bucket}/models/m1/arrays.npz",
                                                      f"{s3.bucket}/models/m1/model.json"]
    loaded = shardlearn.load(url)
    assert np.array_equal(loaded.coef_, model.coef_)
    frame = pd.DataFrame(s3.X, columns=COLS)
    np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
    assert s3.snapshot("data") == before              # reading wrote and deleted nothing


@pytest.mark.timeout(240)
def test_train_from_s3_on_ray_workers_that_read_their_own_shards(s3, ray_cluster):
    # Ray workers run in their own processes (started before this server): they get the
    # endpoint and credentials from storage_options, which travel with each shard source.
    opts = s3.storage_options
    ds = shardlearn.read_parquet(s3.url("data/"), label="y", shard_rows=600, storage_options=opts)
    ref = _reference(s3, ds)
    clear_read_log()
    with session("ray", n_workers=2):
        model = LogisticRegression().fit(ds)
        with Coordinator(ds) as coord:
            logs = coord.map(worker_read_log)
            load_bytes = coord.report.steps["load"].bytes_in
    assert np.array_equal(model.coef_, ref.coef_) and np.array_equal(model.intercept_, ref.intercept_)
    per_process = {pid: log for pid, _thread, log in logs}
    assert os.getpid() not in per_process and len(per_process) == 2
    # Each worker process read its own shards' rows: once for the fit, once for this Coordinator.
    assert sum(e["rows"] for log in per_process.values() for e in log) == 2 * ds.n_rows
    assert all(e["url"].startswith("s3://") for log in per_process.values() for e in log)
    assert [e["kind"] for e in read_log()] == ["labels"] * ds.n_shards   # driver: labels only
    assert 0 < load_bytes < 0.05 * ds.nbytes
    url = s3.url("models/ray")
    shardlearn.save(model, url, storage_options=opts)
    assert np.array_equal(shardlearn.load(url, storage_options=opts).coef_, model.coef_)


def test_predictions_written_to_s3_as_parquet(s3, local_session):
    ds = shardlearn.read_parquet(s3.url("data/*.parquet"), label="y")
    model = LogisticRegression().fit(ds)
    out = s3.url("predictions/p.parquet")
    n = predict_to_parquet(model, s3.url("data/*.parquet"), out, label="y")
    table = pq.read_table(io.BytesIO(s3.filesystem().cat_file(out[len("s3://"):])))
    assert n == table.num_rows == len(s3.y)
    np.testing.assert_array_equal(table.column("prediction").to_numpy(),
                                  model.predict(pd.DataFrame(s3.X, columns=COLS)))


def test_bad_s3_inputs_name_the_url_and_change_nothing(s3):
    fs = s3.filesystem()
    fs.pipe_file(f"{s3.bucket}/bad/part-0.parquet", fs.cat_file(f"{s3.bucket}/data/part-00000.parquet"))
    fs.pipe_file(f"{s3.bucket}/bad/part-1.parquet", b"PAR1 this is not a parquet file")
    before = s3.snapshot()
    steps = steps_started()
    with pytest.raises(FileDataError, match="not a readable Parquet") as err:
        shardlearn.read_parquet(s3.url("bad/*.parquet"), label="y")
    assert s3.url("bad/part-1.parquet") in str(err.value)
    with pytest.raises(StorageError, match="does not exist") as err:
        shardlearn.read_parquet(s3.url("data/part-99999.parquet"), label="y")
    assert s3.url("data/part-99999.parquet") in str(err.value)
    with pytest.raises(ValueError, match="No data files match s3://no-such-bucket/"):
        shardlearn.read_parquet("s3://no-such-bucket/data/*.parquet", label="y")
    with pytest.raises(FileDataError, match="no label column 'label'") as err:
        shardlearn.read_parquet(s3.url("data/"), label="label")
    assert s3.url("data/part-00000.parquet") in str(err.value)
    assert steps_started() == steps and s3.snapshot() == before


def test_wrong_credentials_get_a_clear_error(s3):
    before = s3.snapshot()
    wrong = dict(s3.storage_options, key="not-a-key", secret="not-a-secret")
    with s3.checking_credentials():
        for url in (s3.url("data/*.parquet"), s3.url("data/part-00000.parquet")):
            with pytest.raises(StorageError, match="access denied or missing credentials") as err:
                shardlearn.read_parquet(url, label="y", storage_options=wrong)
            assert url in str(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value)
        with pytest.raises(StorageError, match="access denied"):
            shardlearn.load(s3.url("models/m1"), storage_options=wrong)
    assert s3.snapshot() == before


def test_s3_model_writes_are_safe(s3, local_session):
    model = LogisticRegression().fit(shardlearn.read_parquet(s3.url("data/"), label="y"))
    fs = s3.filesystem()
    # A prefix holding something else is never overwritten.
    fs.pipe_file(f"{s3.bucket}/notamodel/readme.txt", b"keep me")
    with pytest.raises(FileExistsError, match="not a shardlearn model"):
        model.save(s3.url("notamodel"))
    assert fs.cat_file(f"{s3.bucket}/notamodel/readme.txt") == b"keep me"
    # model.json is written last and carries the arrays' checksum: a reader never
    # accepts arrays from another write.
    url = s3.url("models/safe")
    model.save(url)
    other = LogisticRegression(C=0.01).fit(shardlearn.read_parquet(s3.url("data/"), label="y"))
    other.save(s3.url("models/other"))
    fs.pipe_file(f"{s3.bucket}/models/safe/arrays.npz",
                 fs.cat_file(f"{s3.bucket}/models/other/arrays.npz"))
    with pytest.raises(ValueError, match="checksum differs"):
        shardlearn.load(url)
    model.save(url)                                   # overwriting a model is allowed
    assert np.array_equal(shardlearn.load(url).coef_, model.coef_)
    with pytest.raises(FileNotFoundError, match="no model.json"):
        shardlearn.load(s3.url("models/nothing-here"))


def test_csv_from_s3_in_byte_ranges(s3):
    fs = s3.filesystem()
    df = pd.DataFrame(s3.X, columns=COLS).assign(y=s3.y)
    for k, (a, b) in enumerate([(0, 1300), (1300, len(df))]):
        fs.pipe_file(f"{s3.bucket}/csv/part-{k}.csv", df.iloc[a:b].to_csv(index=False).encode())
    before = s3.snapshot("csv")
    ds = shardlearn.read_csv(s3.url("csv/*.csv"), label="y", shard_rows=400)
    np.testing.assert_array_equal(np.diff(ds.boundaries), [400, 400, 400, 100, 400, 400, 400])
    mem = Dataset.from_arrays(s3.X, s3.y, boundaries=ds.boundaries)
    for i in range(ds.n_shards):
        got, want = ds.load_shard(i), mem.load_shard(i)
        assert np.array_equal(got.X, want.X) and np.array_equal(got.y, want.y)
    np.testing.assert_array_equal(ds.labels(), s3.y)
    assert s3.snapshot("csv") == before
