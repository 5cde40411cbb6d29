"""Bad input: a clear ValueError (what, where, how to fix) before any worker runs.

The caller's arrays are never modified, and no worker step starts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardlearn.data import Dataset
from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge
from shardlearn.runtime import steps_started

CLASSIFIERS = (LogisticRegression, LinearSVC)
REGRESSORS = (LinearRegression, Ridge)
ESTIMATORS = CLASSIFIERS + REGRESSORS


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % 2
    return X, y


# -- NaN / inf ------------------------------------------------------------------------
@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf")])
def test_nonfinite_X_names_row_shard_column(value, kind):
    X, y = _data(40, 3)
    X[27, 2] = value
    # 4 shards of 10 rows: row 27 is in shard 2, row 7 there.
    with pytest.raises(ValueError, match=kind) as exc:
        Dataset.from_arrays(X, y, n_shards=4)
    msg = str(exc.value)
    assert "Input X" in msg
    assert "row 27" in msg and "shard 2" in msg and "row 7 within the shard" in msg
    assert "column 2" in msg
    assert "impute" in msg or "drop" in msg


def test_first_nonfinite_is_reported():
    X, y = _data(40, 3)
    X[30, 0] = np.inf
    X[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN at row 5 .*column 1"):
        Dataset.from_arrays(X, y, n_shards=2)


def test_nonfinite_float32_and_sparse():
    X, y = _data(40, 3)
    X32 = X.astype(np.float32)
    X32[11, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN at row 11 .*column 1"):
        Dataset.from_arrays(X32, y)
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    r, c = Xs.nonzero()
    Xs.data[Xs.indptr[r[-1]]] = np.inf  # first stored value of the last non-empty row
    row = r[-1]
    col = Xs.indices[Xs.indptr[row]]
    with pytest.raises(ValueError, match=rf"inf.* at row {row} .*column {col}"):
        Dataset.from_arrays(Xs, y, n_shards=4)


def test_nonfinite_survives_overflowing_sum():
    # Finite values whose sum overflows are valid: no error, and no overflow warning.
    X = np.full((4, 2), 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Dataset.from_arrays(X)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 3.*column 1"):
        Dataset.from_arrays(X)


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("est", REGRESSORS)
def test_nonfinite_y_regressor(est, value):
    X, _ = _data(40, 3)
    y = X[:, 0].copy()
    y[33] = value
    before = steps_started()
    with pytest.raises(ValueError, match=r"Input y contains .* row 33") as exc:
        est().fit(X, y)
    assert "impute" in str(exc.value) or "drop" in str(exc.value)
    assert steps_started() == before


def test_nonfinite_y_classifier():
    X, y = _data(40, 3)
    yf = y.astype(float)
    yf[4] = np.nan
    with pytest.raises(ValueError, match=r"Input y contains NaN at row 4"):
        LogisticRegression().fit(X, yf)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_sample_weight(value):
    X, y = _data(40, 3)
    w = np.ones(40)
    w[20] = value
    with pytest.raises(ValueError, match=r"sample_weight contains .* at row 20 \(shard 1, row 0"):
        Dataset.from_arrays(X, y, w, n_shards=2)


def test_pandas_missing_values_named():
    df = pd.DataFrame({"a": pd.array([1, 2, None, 4], dtype="Int64"), "b": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ValueError, match=r"NaN at row 2 .*column 0"):
        Dataset.from_arrays(df)


# -- shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape, what", [((0, 3), "0 sample"), ((5, 0), "0 feature")])
def test_empty_X(shape, what):
    with pytest.raises(ValueError, match=what) as exc:
        Dataset.from_arrays(np.empty(shape))
    assert "minimum of 1 is required" in str(exc.value)
    with pytest.raises(ValueError, match=what):
        Dataset.from_arrays(sp.csr_matrix(shape))
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match=what):
            est().fit(np.empty(shape), np.zeros(shape[0]))


def test_1d_X_says_reshape():
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match=r"1-D.*Reshape your data.*reshape\(-1, 1\)"):
            est().fit(np.arange(10.0), np.arange(10) % 2)


def test_3d_X():
    with pytest.raises(ValueError, match=r"must be 2-D .* got 3-D"):
        Dataset.from_arrays(np.zeros((4, 2, 2)))
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="3-D"):
            est().fit(np.zeros((4, 2, 2)), np.arange(4) % 2)


def test_X_none():
    with pytest.raises(ValueError, match="None"):
        Dataset.from_arrays(None)


@pytest.mark.parametrize("n_y", [39, 41, 1])
def test_mismatched_X_y(n_y):
    X, _ = _data(40, 3)
    with pytest.raises(ValueError, match=rf"inconsistent numbers of samples: X has 40 rows but y has {n_y}"):
        Dataset.from_arrays(X, np.arange(n_y) % 2)
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="inconsistent numbers of samples"):
            est().fit(X, np.arange(n_y) % 2)


def test_mismatched_X_sample_weight():
    X, y = _data(40, 3)
    with pytest.raises(ValueError, match="sample_weight has 39 values but X has 40 rows"):
        Dataset.from_arrays(X, y, np.ones(39))
    with pytest.raises(ValueError, match=r"sample_weight must be 1-D .* shape \(40, 1\)"):
        Dataset.from_arrays(X, y, np.ones((40, 1)))
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="one weight per row"):
            est().fit(X, y, sample_weight=np.ones(41))


def test_negative_weights_named():
    X, y = _data(40, 3)
    w = np.ones(40)
    w[25] = -0.5
    with pytest.raises(ValueError, match=r"negative value at row 25 \(shard 2, row 5 within the shard\).*>= 0"):
        Dataset.from_arrays(X, y, w, n_shards=4)
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="negative"):
            est().fit(X, y, sample_weight=w)


def test_all_zero_weights():
    X, y = _data(40, 3)
    for w in (np.zeros(40), 0.0):
        with pytest.raises(ValueError, match="sums to zero.*positive weight"):
            Dataset.from_arrays(X, y, w)
        for est in ESTIMATORS:
            with pytest.raises(ValueError, match="sums to zero"):
                est().fit(X, y, sample_weight=w)


def test_non_numeric_weights():
    X, y = _data(40, 3)
    with pytest.raises(ValueError, match="sample_weight has dtype"):
        Dataset.from_arrays(X, y, np.array(["a"] * 40))
    with pytest.raises(ValueError, match="sample_weight has dtype complex"):
        Dataset.from_arrays(X, y, np.ones(40) + 1j)
    with pytest.raises(ValueError, match="sample_weight has dtype complex"):
        Dataset.from_arrays(X, y, 1 + 1j)


# -- dtypes ---------------------------------------------------------------------------
def test_non_numeric_dataframe_column_named():
    df = pd.DataFrame({"age": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "c"],
                       "when": pd.date_range("2020-01-01", periods=4)})
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['city', 'when'\].*Encode"):
        Dataset.from_arrays(df)
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="'city'"):
            est().fit(df, np.arange(4) % 2)


def test_categorical_column_named():
    df = pd.DataFrame({"x": [1.0, 2.0], "cat": pd.Categorical(["u", "v"])})
    with pytest.raises(ValueError, match=r"\['cat'\]"):
        Dataset.from_arrays(df)


def test_object_and_complex_X():
    X, y = _data(10, 2)
    Xo = X.astype(object)
    Xo[3, 1] = "oops"
    with pytest.raises(ValueError, match="dtype object with values that are not numbers.*Encode"):
        Dataset.from_arrays(Xo, y)
    # Object arrays of numbers are fine.
    assert Dataset.from_arrays(X.astype(object)).dtype == np.float64
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        Dataset.from_arrays(X + 1j, y)
    with pytest.raises(ValueError, match="Complex data not supported in X"):
        Dataset.from_arrays(sp.csr_matrix(X + 1j), y)
    with pytest.raises(ValueError, match="not numeric"):
        Dataset.from_arrays(X.astype(str), y)
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="Complex"):
            est().fit(X + 1j, y)
        with pytest.raises(ValueError, match="not numbers"):
            est().fit(Xo, y)


def test_complex_y():
    X, y = _data(10, 2)
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match="Complex data not supported in y"):
            est().fit(X, y + 1j)


def test_regressor_needs_numeric_y():
    X, _ = _data(10, 2)
    for est in REGRESSORS:
        with pytest.raises(ValueError, match=r"regressor needs numeric targets.*astype\(float\)"):
            est().fit(X, np.array(["a", "b"] * 5))


# -- targets --------------------------------------------------------------------------
def test_y_wrong_shape():
    X, y = _data(10, 2)
    for est in CLASSIFIERS:
        with pytest.raises(ValueError, match=r"y has shape \(10, 2\); expected \(n_samples,\)"):
            est().fit(X, np.c_[y, y])
    for est in ESTIMATORS:
        with pytest.raises(ValueError, match=r"y has shape \(10, 2, 1\)"):
            est().fit(X, np.zeros((10, 2, 1)))
        with pytest.raises(ValueError, match=r"y has shape \(\)"):
            est().fit(X, np.float64(1.0))
    # A column vector is accepted by classifiers (flattened, with scikit-learn's warning).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert LogisticRegression().fit(X, y[:, None]).coef_.shape == (1, 2)


def test_single_class():
    X, _ = _data(10, 2)
    for est in CLASSIFIERS:
        for y in (np.zeros(10, dtype=int), np.array(["only"] * 10)):
            with pytest.raises(ValueError, match=r"only one class: .*single class"):
                est().fit(X, y)


def test_continuous_labels_for_classifier():
    X, _ = _data(10, 2)
    with pytest.raises(ValueError, match="continuous"):
        LogisticRegression().fit(X, np.linspace(0, 1, 10))


def test_mixed_label_types():
    X, _ = _data(4, 2)
    with pytest.raises(ValueError, match="mixes label types"):
        LogisticRegression().fit(X, np.array([0, "a", 0, "a"], dtype=object))
    # Mixed types far down the array (past any sample of the first rows).
    X, _ = _data(2000, 2)
    y = np.array([0, 1] * 999 + ["a", "b"], dtype=object)
    with pytest.raises(ValueError, match=r"mixes label types \['int', 'str'\]"):
        LogisticRegression().fit(X, y)


def test_nan_in_object_float_labels():
    # NaN must not become a class when float labels come in an object array.
    X, _ = _data(2000, 2)
    y = np.array([0.0, 1.0] * 999 + [np.nan, 1.0], dtype=object)
    for est in CLASSIFIERS:
        with pytest.raises(ValueError, match="Input y contains NaN at row 1998"):
            est().fit(X, y)


def test_dataset_with_y_again():
    X, y = _data(10, 2)
    ds = Dataset.from_arrays(X, y)
    with pytest.raises(ValueError, match="carries its own labels"):
        LogisticRegression().fit(ds, y)


# -- property test: any invalid input, any estimator ----------------------------------
CASES = ["nan_X", "inf_X", "nan_y", "inf_y", "nan_w", "negative_w", "zero_w", "empty_rows",
         "empty_cols", "len_y", "len_w", "single_class", "complex_X", "complex_y", "string_X",
         "ndim1", "ndim3", "y_3d", "nan_X_f32", "nan_y_object"]


@st.composite
def invalid_inputs(draw):
    case = draw(st.sampled_from(CASES))
    n = draw(st.integers(2, 60))
    d = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % 2
    w = None if draw(st.booleans()) else rng.uniform(0.1, 2.0, size=n)
    row = draw(st.integers(0, n - 1))
    col = draw(st.integers(0, d - 1))
    if case in ("nan_X", "inf_X", "nan_X_f32"):
        if case == "nan_X_f32":
            X = X.astype(np.float32)
        X[row, col] = np.nan if case != "inf_X" else draw(st.sampled_from([np.inf, -np.inf]))
    elif case in ("nan_y", "inf_y"):
        y = y.astype(np.float64)
        y[row] = np.nan if case == "nan_y" else np.inf
    elif case == "nan_w":
        w = np.ones(n)
        w[row] = draw(st.sampled_from([np.nan, np.inf]))
    elif case == "negative_w":
        w = np.ones(n)
        w[row] = -draw(st.floats(1e-6, 1e6))
    elif case == "zero_w":
        w = np.zeros(n)
    elif case == "empty_rows":
        X, y, w = X[:0], y[:0], None
    elif case == "empty_cols":
        X = X[:, :0]
    elif case == "len_y":
        y = np.arange(n + draw(st.sampled_from([-1, 1, 5]))) % 2
    elif case == "len_w":
        w = np.ones(n + draw(st.sampled_from([-1, 1])))
    elif case == "single_class":
        y = np.full(n, draw(st.sampled_from([0, 3, -1])))
    elif case == "complex_X":
        X = X + 1j * (rng.random(X.shape) > 0.5)
    elif case == "complex_y":
        y = y + 1j
    elif case == "string_X":
        X = X.astype(object)
        X[row, col] = draw(st.sampled_from(["abc", "", "1,5", "nan?"]))
    elif case == "ndim1":
        X = X[:, 0].copy()
    elif case == "ndim3":
        X = X.reshape(n, d, 1)
    elif case == "y_3d":
        y = np.zeros((n, 1, 2))
    elif case == "nan_y_object":
        y = y.astype(np.float64).astype(object)
        y[row] = np.nan
    return case, X, y, w


def _snapshot(a):
    if a is None:
        return None
    if a.dtype == object:
        return (a.dtype, a.shape, [repr(v) for v in a.ravel()])
    return (a.dtype, a.shape, a.tobytes(), a.flags.writeable)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invalid_inputs())
def test_invalid_input_raises_before_any_work(local_session, inp):
    case, X, y, w = inp
    saved = [_snapshot(a) for a in (X, y, w)]
    estimators = CLASSIFIERS if case == "single_class" else ESTIMATORS
    for est in estimators:
        before = steps_started()
        with pytest.raises(ValueError):
            est().fit(X, y, sample_weight=w)
        assert steps_started() == before, f"{est.__name__}: a worker ran on {case}"
        assert [_snapshot(a) for a in (X, y, w)] == saved, f"{est.__name__} modified input"
    # The data layer alone rejects it too (what labels may be depends on the estimator).
    if case not in ("single_class", "nan_y_object"):
        with pytest.raises(ValueError):
            Dataset.from_arrays(X, y, w)
    assert [_snapshot(a) for a in (X, y, w)] == saved


def test_valid_input_does_run_workers(local_session):
    # The counter the property test relies on does move when work happens.
    X, y = _data(40, 3)
    for est in ESTIMATORS:
        before = steps_started()
        est().fit(X, y)
        assert steps_started() > before
