"""Dataset construction, shard planning and shard sources."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from shardlearn.data import (
    ArraySliceSource,
    Dataset,
    Shard,
    plan_shard_count,
    row_boundaries,
)
from shardlearn.data.planning import MIN_SHARD_ROWS, MIN_SPLIT_SHARDS
from shardlearn.testing import session


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- construction from each input type ------------------------------------------------
def test_from_ndarray_views_caller_memory():
    X = _rng().normal(size=(103, 4))
    y = _rng(1).integers(0, 3, size=103)
    w = _rng(2).uniform(0.5, 2.0, size=103)
    ds = Dataset.from_arrays(X, y, w, n_shards=4)
    assert ds.n_shards == 4 and ds.n_rows == 103 and ds.n_features == 4
    assert ds.dtype == np.float64 and ds.has_labels and ds.has_weights
    assert ds.feature_names is None
    for i in range(ds.n_shards):
        a, b = int(ds.boundaries[i]), int(ds.boundaries[i + 1])
        shard = ds.load_shard(i)
        assert isinstance(shard, Shard) and shard.index == i
        assert np.shares_memory(shard.X, X), "a C-contiguous float64 shard must be a view"
        assert np.shares_memory(shard.y, y) and np.shares_memory(shard.sample_weight, w)
        assert np.array_equal(shard.X, X[a:b])
        assert np.array_equal(shard.y, y[a:b])
        assert np.array_equal(shard.sample_weight, w[a:b])
        assert shard.X.flags.c_contiguous


def test_from_dataframe_keeps_feature_names():
    X = _rng().normal(size=(40, 3))
    df = pd.DataFrame(X, columns=["alpha", "beta", "gamma"])
    ds = Dataset.from_arrays(df, pd.Series(np.arange(40) % 2), n_shards=3)
    assert list(ds.feature_names) == ["alpha", "beta", "gamma"]
    Xb, yb, wb = ds.to_arrays()
    assert np.array_equal(Xb, X)
    assert np.array_equal(yb, np.arange(40) % 2)
    assert wb is None
    # Non-string column names are not feature names (as in scikit-learn).
    assert Dataset.from_arrays(pd.DataFrame(X)).feature_names is None


def test_from_dataframe_mixed_numeric_columns():
    df = pd.DataFrame({"i": np.arange(6), "f": np.linspace(0, 1, 6), "b": [True, False] * 3})
    ds = Dataset.from_arrays(df, n_shards=2)
    Xb = ds.to_arrays()[0]
    assert Xb.dtype == np.float64
    assert np.array_equal(Xb, df.to_numpy(dtype=np.float64))


def test_from_csr():
    X = sp.random(60, 7, density=0.3, format="csr", random_state=0, dtype=np.float64)
    y = np.arange(60) % 3
    ds = Dataset.from_arrays(X, y, n_shards=4)
    for i in range(ds.n_shards):
        shard = ds.load_shard(i)
        assert sp.issparse(shard.X) and shard.X.format == "csr" and shard.is_sparse
        a, b = int(ds.boundaries[i]), int(ds.boundaries[i + 1])
        assert (shard.X != X[a:b]).nnz == 0
    Xb, yb, _ = ds.to_arrays()
    assert sp.issparse(Xb) and (Xb != X).nnz == 0 and np.array_equal(yb, y)
    assert ds.nbytes == X.data.nbytes + X.indices.nbytes + sum(
        X[int(ds.boundaries[i]):int(ds.boundaries[i + 1])].indptr.nbytes
        for i in range(ds.n_shards)) + y.nbytes


def test_from_int_csr_converted_to_float():
    X = sp.csr_matrix(np.arange(12).reshape(4, 3))
    ds = Dataset.from_arrays(X)
    assert ds.dtype == np.float64
    assert ds.load_shard(0).X.dtype == np.float64
    assert X.dtype.kind == "i", "the caller's matrix keeps its dtype"


def test_float32_kept_float32():
    X = _rng().normal(size=(30, 2)).astype(np.float32)
    ds = Dataset.from_arrays(X, n_shards=3)
    assert ds.dtype == np.float32
    for shard in ds.iter_shards():
        assert shard.X.dtype == np.float32
        assert np.shares_memory(shard.X, X)
    assert np.array_equal(ds.to_arrays()[0], X)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.float16])
def test_other_numeric_dtypes_converted_to_float64(dtype):
    X = (np.arange(20).reshape(10, 2) % 5).astype(dtype)
    before = X.copy()
    ds = Dataset.from_arrays(X, n_shards=2)
    assert ds.dtype == np.float64
    Xb = ds.to_arrays()[0]
    assert Xb.dtype == np.float64
    assert np.array_equal(Xb, X.astype(np.float64))
    assert not np.shares_memory(Xb, X)
    assert X.dtype == dtype and np.array_equal(X, before)


def test_fortran_or_strided_input_gives_c_contiguous_shards():
    X = np.asfortranarray(_rng().normal(size=(20, 3)))
    ds = Dataset.from_arrays(X, n_shards=2)
    assert all(s.X.flags.c_contiguous for s in ds.iter_shards())
    assert np.array_equal(ds.to_arrays()[0], X)
    Xs = _rng().normal(size=(40, 3))[::2]
    assert np.array_equal(Dataset.from_arrays(Xs, n_shards=3).to_arrays()[0], Xs)


# -- how many shards ------------------------------------------------------------------
def test_shard_count_follows_data_size():
    # 20,000 rows x 2 float64 = 320,000 bytes; 20,000-byte shards -> 16 shards.
    X = _rng().normal(size=(20_000, 2))
    ds = Dataset.from_arrays(X, shard_bytes=20_000)
    assert ds.n_shards == math.ceil(X.nbytes / 20_000) == 16
    assert ds.n_shards == plan_shard_count(20_000, X.nbytes / 20_000, shard_bytes=20_000)
    # Twice the rows, twice the shards.
    X2 = _rng().normal(size=(40_000, 2))
    assert Dataset.from_arrays(X2, shard_bytes=20_000).n_shards == 2 * ds.n_shards
    # A little more than one shard's worth: MIN_SPLIT_SHARDS shards, so that workers
    # can be kept evenly busy.
    assert Dataset.from_arrays(X, shard_bytes=X.nbytes // 3).n_shards == MIN_SPLIT_SHARDS
    # Small data: one shard.
    assert Dataset.from_arrays(X[:500]).n_shards == 1


def test_plan_shard_count_rules():
    # By bytes.
    assert plan_shard_count(1_000_000, 800.0, shard_bytes=16 * 2**20) == math.ceil(8e8 / 2**24)
    # At least MIN_SPLIT_SHARDS once the data needs more than one.
    assert plan_shard_count(100_000, 8.0, shard_bytes=400_000) == MIN_SPLIT_SHARDS
    assert plan_shard_count(100_000, 8.0, shard_bytes=800_000) == 1
    # Never shards smaller than MIN_SHARD_ROWS rows (unless the data is smaller).
    assert plan_shard_count(5 * MIN_SHARD_ROWS, 10_000.0, shard_bytes=1000) == 5
    assert plan_shard_count(MIN_SHARD_ROWS - 1, 10_000.0, shard_bytes=1000) == 1
    assert plan_shard_count(1, 8.0) == 1
    with pytest.raises(ValueError, match="empty"):
        plan_shard_count(0, 8.0)


def test_shard_count_never_depends_on_workers():
    X = _rng().normal(size=(5000, 3))
    y = np.arange(5000) % 2
    seen = []
    for engine, n in [("local", 1), ("local", 3), ("local", 2)]:
        with session(engine, n_workers=n):
            for kw in ({}, {"n_shards": 7}, {"shard_bytes": 20_000}):
                ds = Dataset.from_arrays(X, y, **kw)
                seen.append((repr(kw), ds.boundaries.tolist()))
    by_kw = {}
    for kw, b in seen:
        by_kw.setdefault(kw, []).append(b)
    for kw, bounds in by_kw.items():
        assert all(b == bounds[0] for b in bounds), kw
    assert len(by_kw["{'n_shards': 7}"][0]) == 8


def test_explicit_n_shards():
    X = _rng().normal(size=(11, 2))
    for n in (1, 2, 5, 11):
        ds = Dataset.from_arrays(X, n_shards=n)
        assert ds.n_shards == n
        assert ds.n_rows == 11
        assert np.array_equal(ds.to_arrays()[0], X)
    assert Dataset.from_arrays(X, n_shards=np.int64(3)).n_shards == 3


@pytest.mark.parametrize("n_shards, match", [
    (12, "larger than the number of rows"),
    (0, "positive integer"),
    (-1, "positive integer"),
    (2.5, "positive integer"),
    ("3", "positive integer"),
])
def test_bad_n_shards(n_shards, match):
    X = _rng().normal(size=(11, 2))
    with pytest.raises(ValueError, match=match):
        Dataset.from_arrays(X, n_shards=n_shards)


def test_row_boundaries_errors():
    with pytest.raises(ValueError, match="n_shards must be >= 1"):
        row_boundaries(10, 0)
    with pytest.raises(ValueError, match="at least one row"):
        row_boundaries(3, 4)


@settings(max_examples=100, deadline=None)
@given(n_rows=st.integers(1, 100_000), data=st.data())
def test_row_boundaries_near_equal_and_contiguous(n_rows, data):
    n_shards = data.draw(st.integers(1, min(n_rows, 500)))
    b = row_boundaries(n_rows, n_shards)
    assert b[0] == 0 and b[-1] == n_rows and len(b) == n_shards + 1
    sizes = np.diff(b)
    assert sizes.min() >= 1
    assert sizes.max() - sizes.min() <= 1
    # Larger shards first: a fixed, data-only rule.
    assert np.all(np.diff(sizes) <= 0)


# -- sources rebuild shards -----------------------------------------------------------
def test_each_source_rebuilds_exactly_its_rows():
    X = _rng().normal(size=(57, 3))
    y = _rng(1).normal(size=57)
    w = _rng(2).uniform(0.1, 1.0, size=57)
    ds = Dataset.from_arrays(X, y, w, n_shards=5)
    covered = []
    for i, info in enumerate(ds.shards):
        assert info.index == i
        src = info.source
        assert isinstance(src, ArraySliceSource) and not src.load_on_worker
        assert f"rows {src.start}:{src.stop}" in src.describe()
        first, again = src.load(i), ds.load_shard(i)
        for a, b in ((first.X, again.X), (first.y, again.y),
                     (first.sample_weight, again.sample_weight)):
            assert np.array_equal(a, b)
        assert np.array_equal(first.X, X[src.start:src.stop])
        assert np.array_equal(first.y, y[src.start:src.stop])
        assert np.array_equal(first.sample_weight, w[src.start:src.stop])
        assert info.n_rows == first.n_rows == src.stop - src.start
        assert info.nbytes == first.nbytes
        covered.extend(range(src.start, src.stop))
    assert covered == list(range(57))
    assert ds.nbytes == X.nbytes + y.nbytes + w.nbytes


def test_to_arrays_round_trip_and_labels():
    X = _rng().normal(size=(29, 4))
    y = np.array(["a", "b", "c"])[np.arange(29) % 3]
    w = np.linspace(0.5, 1.5, 29)
    ds = Dataset.from_arrays(X, y, w, n_shards=4)
    Xb, yb, wb = ds.to_arrays()
    assert np.array_equal(Xb, X) and np.array_equal(yb, y) and np.array_equal(wb, w)
    assert np.array_equal(ds.labels(), y)
    assert ds.labels() is ds.labels()  # cached
    nolab = Dataset.from_arrays(X, n_shards=2)
    assert nolab.to_arrays()[1] is None
    with pytest.raises(ValueError, match="no labels"):
        nolab.labels()


def test_multi_target_labels():
    X = _rng().normal(size=(12, 2))
    Y = _rng(1).normal(size=(12, 3))
    ds = Dataset.from_arrays(X, Y, n_shards=3, multi_target=True)
    assert ds.labels().shape == (12, 3) and np.array_equal(ds.labels(), Y)
    # Without multi_target, a column vector is flattened.
    ds1 = Dataset.from_arrays(X, Y[:, :1], n_shards=3)
    assert ds1.labels().shape == (12,)


def test_scalar_sample_weight_expanded():
    X = _rng().normal(size=(10, 2))
    ds = Dataset.from_arrays(X, np.arange(10) % 2, 2.5, n_shards=2)
    assert np.array_equal(ds.to_arrays()[2], np.full(10, 2.5))
    with pytest.raises(ValueError, match="negative"):
        Dataset.from_arrays(X, np.arange(10) % 2, -1.0)
    with pytest.raises(ValueError, match="sums to zero"):
        Dataset.from_arrays(X, np.arange(10) % 2, 0)
    with pytest.raises(ValueError, match="NaN"):
        Dataset.from_arrays(X, np.arange(10) % 2, float("nan"))


def test_dataset_ids_and_repr():
    X = _rng().normal(size=(8, 2))
    a, b = Dataset.from_arrays(X), Dataset.from_arrays(X)
    assert a.id != b.id
    assert "n_rows=8" in repr(a) and "n_shards=1" in repr(a)
    with pytest.raises(ValueError, match="at least one shard"):
        Dataset([], 2, has_labels=False, has_weights=False)


def test_from_arrays_does_not_modify_input():
    X = _rng().normal(size=(30, 3))
    y = (np.arange(30) % 2).astype(float)
    w = np.ones(30)
    copies = [a.copy() for a in (X, y, w)]
    flags = [a.flags.writeable for a in (X, y, w)]
    ds = Dataset.from_arrays(X, y, w, n_shards=3)
    ds.to_arrays()
    for a, c, f in zip((X, y, w), copies, flags):
        assert a.tobytes() == c.tobytes() and a.flags.writeable == f
