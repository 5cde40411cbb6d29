"""Datasets from local Parquet/CSV files: shard plans, bit-identical models, workers read, bad input."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shardlearn
from shardlearn.data import Dataset
from shardlearn.data.readers import (
    CsvByteRangeSource,
    FileDataError,
    ParquetRowGroupSource,
    clear_read_log,
    predict_to_parquet,
    read_log,
    score_dataset,
)
from shardlearn.io.storage import StorageError
from shardlearn.linear_model import LogisticRegression
from shardlearn.runtime import Coordinator, steps_started
from shardlearn.runtime.memory import (
    InsufficientMemoryError,
    check_fits,
    plan_worker_bytes,
)
from shardlearn.testing import make_logistic, session
from shardlearn.testing.storage import (
    digest_shard,
    local_snapshot,
    shard_digest,
    worker_read_log,
)

COLS = [f"f{j}" for j in range(5)]
#: Three files of uneven sizes, each cut into row groups of its own size.
FILE_ROWS = [1000, 700, 1300]
ROW_GROUPS = [250, 300, 400]


def _frame(X, y, w=None):
    df = pd.DataFrame(X, columns=COLS)
    df["y"] = y
    if w is not None:
        df["w"] = w
    return df


def _write_parquet_parts(root, df, sizes=FILE_ROWS, row_groups=ROW_GROUPS, prefix="part"):
    os.makedirs(root, exist_ok=True)
    a = 0
    for k, (n, rg) in enumerate(zip(sizes, row_groups)):
        table = pa.Table.from_pandas(df.iloc[a:a + n], preserve_index=False)
        pq.write_table(table, os.path.join(root, f"{prefix}-{k}.parquet"), row_group_size=rg)
        a += n
    return root


@pytest.fixture(scope="module")
def data():
    X, y = make_logistic(sum(FILE_ROWS), len(COLS), random_state=3)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    return X, y, w


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory, data):
    X, y, w = data
    root = str(tmp_path_factory.mktemp("pq") / "data")
    _write_parquet_parts(root, _frame(X, y, w))
    # Markers and hidden files that Spark/Hadoop leave next to the data are skipped.
    open(os.path.join(root, "_SUCCESS"), "w").close()
    open(os.path.join(root, ".part-0.parquet.crc"), "w").close()
    return root


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory, data):
    X, y, _ = data
    root = tmp_path_factory.mktemp("csv")
    df = _frame(X, y)
    df.iloc[:1800].to_csv(root / "a.csv", index=False)       # repr floats: exact round trip
    df.iloc[1800:].to_csv(root / "b.csv", index=False, lineterminator="\r\n")
    return str(root)


def _expected_bounds(shard_rows):
    """Shard boundaries from the file layout: whole row groups, at most shard_rows rows."""
    bounds, total = [0], 0
    for n, rg in zip(FILE_ROWS, ROW_GROUPS):
        groups = [min(rg, n - a) for a in range(0, n, rg)]
        cur = 0
        for g in groups:
            if cur and cur + g > shard_rows:
                total += cur
                bounds.append(total)
                cur = 0
            cur += g
        total += cur
        bounds.append(total)
    return np.array(bounds)


# -- planning ----------------------------------------------------------------------------
def test_parquet_plan_is_row_group_ranges_from_metadata(parquet_dir, data):
    X, y, _ = data
    before = local_snapshot(parquet_dir)
    clear_read_log()
    ds = shardlearn.read_parquet(parquet_dir, label="y", weight="w", shard_rows=600)
    assert ds.n_rows == X.shape[0] and ds.n_features == len(COLS)
    assert list(ds.feature_names) == COLS
    np.testing.assert_array_equal(ds.boundaries, _expected_bounds(600))
    for info in ds.shards:
        src = info.source
        assert isinstance(src, ParquetRowGroupSource) and src.load_on_worker
        assert len(pickle.dumps(src)) < 1000          # small: a URL, a range, column names
    assert read_log() == []                            # planning read footers only, no rows
    # The plan depends on the files only: another shard size gives another plan, same rows.
    ds2 = shardlearn.read_parquet(parquet_dir, label="y", weight="w", shard_rows=10**6)
    assert ds2.n_shards == len(FILE_ROWS) and ds2.n_rows == ds.n_rows
    assert local_snapshot(parquet_dir) == before


def test_directory_glob_list_and_from_files_agree(parquet_dir):
    files = sorted(os.path.join(parquet_dir, f) for f in os.listdir(parquet_dir)
                   if f.endswith(".parquet"))
    a = shardlearn.read_parquet(parquet_dir, label="y", shard_rows=600)
    b = shardlearn.read_parquet(os.path.join(parquet_dir, "*.parquet"), label="y", shard_rows=600)
    c = Dataset.from_files(files, label="y", shard_rows=600)
    d = shardlearn.read_parquet("file://" + parquet_dir, label="y", shard_rows=600)
    for other in (b, c, d):
        np.testing.assert_array_equal(other.boundaries, a.boundaries)
        assert [s.source.location.path for s in other.shards] == [s.source.location.path for s in a.shards]
    assert "w" in a.feature_names                      # not named as weight: a feature


# -- models equal the in-memory ones, bit for bit ------------------------------------------
@pytest.mark.timeout(240)
@pytest.mark.slow
def test_parquet_model_bit_identical_to_in_memory_on_both_engines(parquet_dir, data, ray_cluster):
    X, y, w = data
    ds = shardlearn.read_parquet(parquet_dir, label="y", weight="w", shard_rows=600)
    mem = Dataset.from_arrays(X, y, w, boundaries=ds.boundaries)
    coefs = {}
    for engine, n in (("local", 2), ("ray", 3)):
        with session(engine, n_workers=n):
            f = LogisticRegression(C=0.5).fit(ds)
            m = LogisticRegression(C=0.5).fit(mem)
        assert np.array_equal(f.coef_, m.coef_) and np.array_equal(f.intercept_, m.intercept_)
        assert f.n_iter_[0] == m.n_iter_[0] > 1
        coefs[engine] = f.coef_
    assert np.array_equal(coefs["local"], coefs["ray"])
    # Against scikit-learn on the same rows (same objective).
    from sklearn.linear_model import LogisticRegression as SkLR

    sk = SkLR(C=0.5, tol=1e-10, max_iter=1000).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(coefs["local"], sk.coef_, rtol=1e-3, atol=1e-3)


def test_csv_model_bit_identical_to_in_memory(csv_dir, data, local_session):
    X, y, _ = data
    before = local_snapshot(csv_dir)
    ds = shardlearn.read_csv(os.path.join(csv_dir, "*.csv"), label="y", shard_rows=500)
    assert all(isinstance(s.source, CsvByteRangeSource) for s in ds.shards)
    # 1800 rows -> 500, 500, 500, 300; 1200 rows -> 500, 500, 200 (CRLF file included).
    np.testing.assert_array_equal(np.diff(ds.boundaries), [500, 500, 500, 300, 500, 500, 200])
    mem = Dataset.from_arrays(X, y, boundaries=ds.boundaries)
    for i in range(ds.n_shards):
        assert digest_shard(ds.load_shard(i)) == digest_shard(mem.load_shard(i))
    f = LogisticRegression().fit(ds)
    m = LogisticRegression().fit(mem)
    assert np.array_equal(f.coef_, m.coef_) and np.array_equal(f.intercept_, m.intercept_)
    assert local_snapshot(csv_dir) == before


def test_float32_and_column_projection(parquet_dir, data, local_session):
    X, y, _ = data
    ds = shardlearn.read_parquet(parquet_dir, label="y", features=["f3", "f1"], dtype=np.float32,
                                 shard_rows=600)
    assert ds.n_features == 2 and ds.dtype == np.float32
    clear_read_log()
    sh = ds.load_shard(1)
    assert read_log()[0]["columns"] == ["f3", "f1", "y"]   # only the named columns are read
    a, b = ds.boundaries[1], ds.boundaries[2]
    assert sh.X.dtype == np.float32 and sh.X.flags.c_contiguous
    np.testing.assert_array_equal(sh.X, X[a:b][:, [3, 1]].astype(np.float32))
    mem = Dataset.from_arrays(X[:, [3, 1]].astype(np.float32), y, boundaries=ds.boundaries)
    f = LogisticRegression().fit(ds)
    m = LogisticRegression().fit(mem)
    assert np.array_equal(f.coef_, m.coef_)
    assert list(f.feature_names_in_) == ["f3", "f1"]


# -- the driver does not load the data ------------------------------------------------------
def _source_bytes(ds):
    return sum(len(pickle.dumps(info.source)) for info in ds.shards)


def test_local_engine_workers_read_rows_driver_reads_labels_only(parquet_dir, local_session):
    ds = shardlearn.read_parquet(parquet_dir, label="y", shard_rows=600)
    clear_read_log()
    model = LogisticRegression().fit(ds)
    log = read_log()
    rows = [e for e in log if e["kind"] == "rows"]
    assert sum(e["rows"] for e in rows) == ds.n_rows          # every shard read once...
    assert all(e["thread"].startswith("shardlearn-w") for e in rows)   # ...by a worker thread
    driver = [e for e in log if not e["thread"].startswith("shardlearn-w")]
    assert driver and all(e["kind"] == "labels" and e["columns"] == ["y"] for e in driver)
    load = next(s for s in model.fit_report_.steps if s.name == "load")
    assert load.bytes_in == _source_bytes(ds) < 0.02 * ds.nbytes  # only the sources travelled


@pytest.mark.timeout(240)
def test_ray_workers_read_their_own_shards_and_rebuild_same_bytes(parquet_dir, data, ray_cluster):
    X, y, w = data
    ds = shardlearn.read_parquet(parquet_dir, label="y", weight="w", shard_rows=600)
    mem = Dataset.from_arrays(X, y, w, boundaries=ds.boundaries)
    expected = [digest_shard(mem.load_shard(i)) for i in range(mem.n_shards)]
    # Rebuild: a source pickled (as shipped) and loaded twice gives the same bytes.
    for i, info in enumerate(ds.shards):
        src = pickle.loads(pickle.dumps(info.source))
        assert digest_shard(src.load(i)) == digest_shard(src.load(i)) == expected[i]
    clear_read_log()
    for n in (1, 2):   # different workers, different placements: the same rows each time
        with session("ray", n_workers=n):
            with Coordinator(ds) as coord:
                assert coord.map(shard_digest) == expected
                logs = coord.map(worker_read_log)
                load = coord.report.steps["load"]
            per_process = {pid: log for pid, _t, log in logs}
            assert os.getpid() not in per_process and len(per_process) == n
            # Each worker process read exactly its own shards' rows, once.
            assert sum(e["rows"] for log in per_process.values() for e in log) == ds.n_rows
            assert load.bytes_in == _source_bytes(ds) < 0.02 * ds.nbytes
    assert read_log() == []             # the driver read nothing, not even labels


# -- bad input: clear errors naming the file, nothing changed ----------------------------------
def _copy_good(parquet_dir, dst):
    shutil.copytree(parquet_dir, dst)
    return str(dst)


def _rewrite(path, fn):
    t = pq.read_table(path)
    pq.write_table(fn(t), path, row_group_size=300)


BAD_PLANS = {
    "missing column": (lambda p: _rewrite(p, lambda t: t.drop_columns(["f2"])), "part-1.parquet", "'f2'"),
    "extra column": (lambda p: _rewrite(p, lambda t: t.append_column("z", pa.array(np.zeros(t.num_rows)))),
                     "part-1.parquet", "'z'"),
    "no label": (lambda p: _rewrite(p, lambda t: t.drop_columns(["y"])), "part-1.parquet", "'y'"),
    "non-numeric": (lambda p: _rewrite(p, lambda t: t.set_column(
        t.schema.get_field_index("f1"), "f1", pa.array(["a"] * t.num_rows))), "part-1.parquet", "'f1'"),
    "label type differs": (lambda p: _rewrite(p, lambda t: t.set_column(
        t.schema.get_field_index("y"), "y", pa.array(["c"] * t.num_rows))), "part-1.parquet", "'y'"),
    "empty file": (lambda p: open(p, "wb").close(), "part-1.parquet", "empty"),
    "no rows": (lambda p: _rewrite(p, lambda t: t.slice(0, 0)), "part-1.parquet", "no rows"),
    "truncated": (lambda p: _truncate(p), "part-1.parquet", "corrupt or truncated"),
    "not parquet": (lambda p: open(p, "wb").write(b"id,x\n1,2\n" * 50), "part-1.parquet", "not a readable Parquet"),
}


def _truncate(p):
    data = open(p, "rb").read()
    with open(p, "wb") as f:
        f.write(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("case", list(BAD_PLANS))
def test_bad_files_rejected_before_any_work(case, parquet_dir, tmp_path):
    damage, fname, words = BAD_PLANS[case]
    root = _copy_good(parquet_dir, tmp_path / "d")
    damage(os.path.join(root, "part-1.parquet"))
    before = local_snapshot(root)
    steps = steps_started()
    clear_read_log()
    with pytest.raises(FileDataError) as err:
        LogisticRegression().fit(shardlearn.read_parquet(root, label="y"))
    msg = str(err.value)
    assert os.path.join(root, fname) in msg and words in msg, msg
    assert steps_started() == steps and read_log() == []
    assert local_snapshot(root) == before


def test_unreadable_urls_are_named(tmp_path):
    missing = str(tmp_path / "nope" / "data.parquet")
    with pytest.raises(StorageError, match="does not exist") as err:
        shardlearn.read_parquet(missing, label="y")
    assert missing in str(err.value)
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(ValueError, match="No data files match") as err:
        shardlearn.read_parquet(pattern, label="y")
    assert pattern in str(err.value)
    with pytest.raises(ValueError, match="Cannot tell the format"):
        (tmp_path / "x.bin").write_bytes(b"1")
        shardlearn.Dataset.from_files(str(tmp_path / "x.bin"))
    with pytest.raises(ValueError, match="listed more than once"):
        (tmp_path / "a.csv").write_text("x,y\n1,2\n")
        shardlearn.read_csv([str(tmp_path / "a.csv"), str(tmp_path / "a.csv")])


def _put_value(path, row, col, value):
    t = pq.read_table(path).to_pandas()
    t[col] = t[col].astype(object if isinstance(value, str) else float)
    t.loc[row, col] = value
    pq.write_table(pa.Table.from_pandas(t, preserve_index=False), path, row_group_size=300)


@pytest.mark.parametrize("case", ["nan feature", "inf feature", "negative weight", "corrupt page"])
def test_bad_values_found_by_workers_in_the_load_step(case, parquet_dir, tmp_path, local_session):
    """Values are checked where they are read: the load step, before any training step."""
    root = _copy_good(parquet_dir, tmp_path / "d")
    p = os.path.join(root, "part-2.parquet")
    if case == "nan feature":
        _put_value(p, 123, "f3", np.nan)
        words = ["'f3'", "NaN", f"row 123 of {p}"]
    elif case == "inf feature":
        _put_value(p, 7, "f0", np.inf)
        words = ["'f0'", "inf", f"row 7 of {p}"]
    elif case == "negative weight":
        _put_value(p, 1000, "w", -1.0)
        words = ["'w'", "negative", f"row 1000 of {p}"]
    else:
        data = bytearray(open(p, "rb").read())
        data[4:60] = b"\x00" * 56           # the first page header; the footer is intact
        open(p, "wb").write(bytes(data))
        words = [p, "row groups 0..0", "could not be read"]
    ds = shardlearn.read_parquet(root, label="y", weight="w", shard_rows=600)
    before = local_snapshot(root)
    steps = steps_started()
    with pytest.raises(ValueError) as err:
        LogisticRegression().fit(ds)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert steps_started() == steps + 1          # the load step only: no kernel ran
    assert local_snapshot(root) == before


def test_missing_label_value_named_before_any_step(parquet_dir, tmp_path):
    root = _copy_good(parquet_dir, tmp_path / "d")
    p = os.path.join(root, "part-0.parquet")
    t = pq.read_table(p)
    y = t.column("y").to_pylist()
    y[321] = None
    pq.write_table(t.set_column(t.schema.get_field_index("y"), "y", pa.array(y, pa.int64())), p)
    steps = steps_started()
    with pytest.raises(FileDataError, match=f"missing value at row 321 of {p}"):
        LogisticRegression().fit(shardlearn.read_parquet(root, label="y"))
    assert steps_started() == steps


BAD_CSV = {
    "header differs": (lambda d: (d / "b.csv").write_text("f0,f1,g2,f3,f4,y\n1,2,3,4,5,0\n"), "b.csv", "'f2'"),
    "empty": (lambda d: (d / "b.csv").write_bytes(b""), "b.csv", "empty"),
    "header only": (lambda d: (d / "b.csv").write_text("f0,f1,f2,f3,f4,y\n"), "b.csv", "no data rows"),
    "text column": (lambda d: (d / "b.csv").write_text("f0,f1,f2,f3,f4,y\n1,2,x,4,5,0\n"), "b.csv", "'f2'"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_rejected_at_planning(case, csv_dir, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(csv_dir, root)
    damage, fname, words = BAD_CSV[case]
    damage(root)
    before = local_snapshot(root)
    with pytest.raises(FileDataError) as err:
        shardlearn.read_csv(str(root), label="y")
    assert str(root / fname) in str(err.value) and words in str(err.value), str(err.value)
    assert local_snapshot(root) == before


def test_bad_csv_values_deep_in_a_file_named_by_the_worker(csv_dir, tmp_path, local_session,
                                                           monkeypatch):
    from shardlearn.data.readers import csv as csv_reader

    monkeypatch.setattr(csv_reader, "_HEAD_BYTES", 2048)    # types come from the first ~18 rows
    root = tmp_path / "d"
    shutil.copytree(csv_dir, root)
    lines = (root / "a.csv").read_text().splitlines()
    f = lines[1501].split(",")
    f[4] = "oops"                             # data row 1500: the fourth shard, past the type sample
    lines[1501] = ",".join(f)
    f = lines[1701].split(",")
    f[2] = ""                                 # data row 1700: a missing value
    lines[1701] = ",".join(f)
    (root / "a.csv").write_text("\n".join(lines) + "\n")
    ds = shardlearn.read_csv(str(root), label="y", shard_rows=500)
    with pytest.raises(FileDataError) as err:
        ds.load_shard(3)
    msg = str(err.value)
    assert str(root / "a.csv") in msg and "'f4'" in msg and "data rows 1500..1799" in msg, msg
    lines[1501] = lines[1502]
    (root / "a.csv").write_text("\n".join(lines) + "\n")
    ds = shardlearn.read_csv(str(root), label="y", shard_rows=500)
    with pytest.raises(ValueError, match=f"'f2' has NaN .* at data row 1700 of {root / 'a.csv'}"):
        LogisticRegression().fit(ds)


# -- memory ------------------------------------------------------------------------------
def test_memory_plan_and_check_are_pure_functions():
    # 2 workers: shards of 1000 and 3000 bytes; 10 rows each; 4 bytes/row of state.
    need = plan_worker_bytes([1000, 3000, 1000], [10, 10, 10], [[0, 2], [1]],
                             state_bytes_per_row=4)
    assert need == [1000 + 1000 + 80 + 1000, 3000 + 40 + 3000]
    info = {"host": "h1", "available": 12_000}          # same host: 9120 <= 80% of 12000
    check_fits(need, [info, info])
    with pytest.raises(InsufficientMemoryError, match="'h1'"):
        check_fits(need, [dict(info, available=11_000), dict(info, available=11_000)])
    # Workers on different hosts are judged separately.
    check_fits(need, [{"host": "a", "available": 5000}, {"host": "b", "available": 8000}])
    with pytest.raises(InsufficientMemoryError, match=r"worker\(s\) \[1\]"):
        check_fits(need, [{"host": "a", "available": 5000}, {"host": "b", "available": 7000}])
    check_fits(need, [None, {"host": "b", "available": None}])   # unknown: no verdict


def test_fit_fails_early_when_shards_would_not_fit(parquet_dir, monkeypatch, local_session):
    ds = shardlearn.read_parquet(parquet_dir, label="y", shard_rows=600)
    monkeypatch.setenv("SHARDLEARN_MEMORY_LIMIT", "64K")
    clear_read_log()
    with pytest.raises(InsufficientMemoryError, match="do not fit in memory") as err:
        LogisticRegression().fit(ds)
    assert "Nothing was read" in str(err.value)
    assert [e for e in read_log() if e["kind"] == "rows"] == []      # nothing was read
    monkeypatch.setenv("SHARDLEARN_MEMORY_LIMIT", "1G")
    assert LogisticRegression().fit(ds).coef_.shape == (1, ds.n_features)


# -- models and predictions to storage URLs -----------------------------------------------------
def test_model_and_predictions_to_file_urls(parquet_dir, data, tmp_path, local_session):
    X, y, _ = data
    model = LogisticRegression().fit(shardlearn.read_parquet(parquet_dir, label="y", weight="w"))
    url = "file://" + str(tmp_path / "models" / "m1")
    shardlearn.save(model, url)
    assert sorted(os.listdir(tmp_path / "models")) == ["m1"]          # no temp dir left
    loaded = shardlearn.load(url)
    assert np.array_equal(loaded.coef_, model.coef_)
    before = local_snapshot(parquet_dir)
    out = str(tmp_path / "pred.parquet")
    n = predict_to_parquet(loaded, parquet_dir, out, label="y", proba=True)
    got = pq.read_table(out).to_pandas()
    assert n == len(got) == len(y)
    frame = pd.DataFrame(X, columns=COLS)               # the model's features, w left out
    np.testing.assert_array_equal(got["prediction"].to_numpy(), model.predict(frame))
    np.testing.assert_allclose(got["proba_1"].to_numpy(), model.predict_proba(frame)[:, 1])
    # Scored where the shards live (workers read them), equal to scoring on the driver.
    ds = shardlearn.read_parquet(parquet_dir, label="y", weight="w")
    assert score_dataset(loaded, ds) == pytest.approx(model.score(frame, y), abs=1e-12)
    assert local_snapshot(parquet_dir) == before


def test_from_arrays_explicit_boundaries_are_checked(data):
    X, y, _ = data
    ds = Dataset.from_arrays(X, y, boundaries=[0, 10, len(y)])
    assert [s.n_rows for s in ds.shards] == [10, len(y) - 10]
    for bad in ([0, 10, len(y) - 1], [0, 10, 10, len(y)], [5, len(y)]):
        with pytest.raises(ValueError, match="boundaries must start at 0"):
            Dataset.from_arrays(X, y, boundaries=bad)
    with pytest.raises(ValueError, match="not both"):
        Dataset.from_arrays(X, y, n_shards=2, boundaries=[0, 10, len(y)])


def test_oversized_row_group_is_split_into_shards(tmp_path, local_session):
    """One 10,000-row row group and a 2,000-row shard target: five shards of one group,
    each holding its own rows, and the model equals the in-memory one."""
    from shardlearn.linear_model import LogisticRegression
    from shardlearn.testing import make_logistic

    X, y = make_logistic(10_000, 4, random_state=4)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)}, "y": y})
    path = tmp_path / "one_group.parquet"
    pq.write_table(table, path, row_group_size=10_000)
    ds = shardlearn.read_parquet(str(path), label="y", shard_rows=2_000)
    assert ds.n_shards == 5 and [s.n_rows for s in ds.shards] == [2_000] * 5
    for i in range(ds.n_shards):
        shard = ds.load_shard(i)
        assert np.array_equal(shard.X, X[2_000 * i:2_000 * (i + 1)])
    mem = Dataset.from_arrays(X, y, boundaries=ds.boundaries)
    assert np.array_equal(LogisticRegression().fit(ds).coef_, LogisticRegression().fit(mem).coef_)
