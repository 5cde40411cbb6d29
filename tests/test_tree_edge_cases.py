"""Tree estimators at the edges a scikit-learn user reaches: tiny or lopsided samples,
early stopping on few rows, labels with holes, damaged model files, big predictions."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shardlearn
from shardlearn.algorithms.tree import model as M
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = pytest.mark.timeout(120)


def _data(n=600, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


# -- saved classifiers --------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: DecisionTreeClassifier(max_depth=4),
    lambda: RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0),
    lambda: GradientBoostingClassifier(n_estimators=4, max_depth=3),
], ids=["dt", "rf", "gb"])
def test_loaded_classifier_predicts_its_labels(make, tmp_path):
    X, y = _data()
    labels = np.array(["no", "yes", "maybe"])[y + (X[:, 2] > 1)]
    est = make().fit(X, labels)
    est.save(tmp_path / "m")
    back = shardlearn.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(back.classes_, est.classes_)
    assert back.n_classes_ == est.n_classes_ == 3
    assert back.score(X, labels) == est.score(X, labels)


# -- empty bootstrap samples --------------------------------------------------------------
def test_trees_whose_bootstrap_drew_no_row_are_left_out():
    # One row: each tree draws it Poisson(1) times, none at all with probability 1/e.
    # scikit-learn's forest predicts the row's target exactly; so must this one.
    est = RandomForestRegressor(n_estimators=50, random_state=0).fit([[0.0]], [11.0])
    assert 0 < M.n_trees(est.forest_) < 50          # some trees drew nothing...
    np.testing.assert_array_equal(est.predict([[0.0], [5.0]]), [11.0, 11.0])  # ...and count not
    assert est.apply([[0.0]]).shape == (1, M.n_trees(est.forest_))
    clf = RandomForestClassifier(n_estimators=100, random_state=0).fit([[0.0], [1.0]], [0, 1])
    np.testing.assert_allclose(clf.predict_proba([[0.0], [1.0]]).sum(axis=1), 1.0)


def test_few_weighted_rows_keep_probabilities_and_out_of_bag_scores_sound():
    X, y = _data(3000)
    sw = np.zeros(len(y))
    sw[:4] = 1.0                           # 4 rows carry all the weight
    y[:4] = [0, 1, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # rows no tree left out
        est = RandomForestClassifier(n_estimators=40, random_state=0, oob_score=True).fit(
            X, y, sample_weight=sw)
    np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1.0)
    dec = est.oob_decision_function_
    seen = ~np.isnan(dec[:, 0])
    np.testing.assert_allclose(dec[seen].sum(axis=1), 1.0)


def test_the_report_counts_the_trees_kept():
    est = RandomForestRegressor(n_estimators=6, trees_per_pass=2, random_state=1,
                                oob_score=True).fit([[0.0], [1.0], [2.0]], [1.0, 2.0, 3.0])
    assert est.fit_report_.extra["n_trees"] == M.n_trees(est.forest_) < 6


def test_a_forest_of_only_empty_bootstraps_is_refused():
    outcomes = set()
    for seed in range(30):
        try:
            est = RandomForestRegressor(n_estimators=1, random_state=seed).fit([[0.0]], [3.0])
        except ValueError as exc:
            assert "bootstrap sample of every one of the 1 trees came out empty" in str(exc)
            outcomes.add("refused")
        else:
            assert est.predict([[0.0]])[0] == 3.0
            outcomes.add("fitted")
    assert outcomes == {"refused", "fitted"}


def test_out_of_bag_warns_about_rows_no_tree_left_out():
    X, y = _data(300)
    with pytest.warns(UserWarning, match="no out-of-bag prediction"):
        est = RandomForestClassifier(n_estimators=2, random_state=0, oob_score=True).fit(X, y)
    assert np.isnan(est.oob_decision_function_[:, 0]).any()
    assert 0.0 <= est.oob_score_ <= 1.0


# -- early stopping on small data ----------------------------------------------------------
def test_early_stopping_with_no_held_out_row_is_refused():
    X, _ = _data(50, 3)
    est = GradientBoostingRegressor(n_estimators=50, early_stopping=True,
                                    validation_fraction=0.01, min_samples_leaf=1, random_state=0)
    with pytest.raises(ValueError, match="held out no row with a positive weight"):
        est.fit(X, 3 * X[:, 0])


@pytest.mark.parametrize("cls", [GradientBoostingRegressor, GradientBoostingClassifier])
def test_early_stopping_with_no_training_row_is_refused(cls):
    X, y = _data(200, 3)
    est = cls(n_estimators=5, early_stopping=True, validation_fraction=0.999, random_state=0)
    with pytest.raises(ValueError, match="no training rows left"):
        est.fit(X, y)


def test_validation_frame_columns_are_checked_by_name():
    X, y = _data(400, 3)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    est = GradientBoostingClassifier(n_estimators=5, early_stopping=True, random_state=0)
    with pytest.raises(ValueError, match=r"X_val's columns \['c', 'b', 'a'\] are not X's"):
        est.fit(df, y, X_val=df[["c", "b", "a"]], y_val=y)
    est.fit(df, y, X_val=df, y_val=y)                   # the same columns: fine
    assert est.n_iter_ >= 1
    with warnings.catch_warnings():                     # X without names: no check, no warning
        warnings.simplefilter("error")
        est.fit(X, y, X_val=df, y_val=y)


def test_regression_targets_held_as_objects_are_numbers_in_y_val_too():
    X, _ = _data(300, 3)
    y = 2 * X[:, 0]
    est = GradientBoostingRegressor(n_estimators=3, early_stopping=True, random_state=0)
    a = est.fit(X, pd.Series(y, dtype=object), X_val=X, y_val=pd.Series(y, dtype=object))
    np.testing.assert_array_equal(a.validation_score_, est.fit(X, y, X_val=X, y_val=y)
                                  .validation_score_)


def test_rows_of_no_weight_at_all_are_refused_without_talk_of_bootstraps():
    X = np.arange(10.0)[:, None]
    y = np.array([0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match="every row has weight 0"):
        DecisionTreeClassifier(class_weight={0: 0, 1: 1}).fit(X, y, sample_weight=[1] * 5 + [0] * 5)


def test_validation_set_messages_name_the_validation_arrays():
    X, y = _data(100, 3)
    est = GradientBoostingRegressor(n_estimators=3, early_stopping=True)
    with pytest.raises(ValueError, match="sample_weight_val has 9 values but X_val has 10 rows"):
        est.fit(X, y, X_val=X[:10], y_val=y[:10], sample_weight_val=np.ones(9))
    with pytest.raises(ValueError, match="y_val has dtype"):
        est.fit(X, y, X_val=X[:3], y_val=np.array(["x", "y", "z"]))


# -- labels with holes ---------------------------------------------------------------------
@pytest.mark.parametrize("hole,message", [
    (np.nan, "Input y contains NaN at row 1100"),
    (None, r"Input y contains a missing label \(None\) at row 1100"),
    (pd.NA, "Input y contains a missing label"),
])
def test_a_missing_label_far_down_an_object_column_is_refused(hole, message):
    X, y = _data(3000, 2)
    labels = (y + 1).astype(object)
    labels[1100] = hole
    with pytest.raises(ValueError, match=message):
        DecisionTreeClassifier(max_depth=2).fit(X, labels)


def test_numpy_and_python_scalars_of_one_sort_are_one_label_type():
    X, y = _data(2000, 2)
    labels = np.where(y == 1, "b", "a").astype(object)
    labels[1600] = np.str_(labels[1600])          # past any sample of the first rows
    est = DecisionTreeClassifier(max_depth=2).fit(X, labels)
    np.testing.assert_array_equal(est.classes_, ["a", "b"])
    mixed = labels.copy()
    mixed[1700] = 3
    with pytest.raises(ValueError, match=r"y mixes label types \['int', 'str'\]"):
        DecisionTreeClassifier(max_depth=2).fit(X, mixed)


def test_inf_at_predict_says_nan_is_allowed():
    X, y = _data()
    est = DecisionTreeRegressor(max_depth=3).fit(X, y.astype(float))
    Xt = X[:5].copy()
    Xt[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN is allowed here"):
        est.predict(Xt)


# -- predictions --------------------------------------------------------------------------
def test_staged_and_final_predictions_agree_to_the_bit():
    X, _ = _data(500)
    y = 1e6 + 3 * X[:, 0] + np.sin(X[:, 1])
    reg = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(X, y)
    *_, last = reg.staged_predict(X)
    np.testing.assert_array_equal(last, reg.predict(X))
    Xc, yc = _data(500, seed=1)
    clf = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(Xc, yc + (Xc[:, 2] > 1))
    *_, last = clf.staged_decision_function(Xc)
    np.testing.assert_array_equal(last, clf.decision_function(Xc))


@pytest.mark.parametrize("make", [
    lambda: DecisionTreeRegressor(max_depth=5),
    lambda: RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0),
    lambda: GradientBoostingClassifier(n_estimators=5, max_depth=3),
], ids=["dt", "rf", "gb"])
def test_predictions_in_row_blocks_equal_one_block(make, monkeypatch):
    X, y = _data(1000)
    y = y + (X[:, 3] > 0.8)
    est = make().fit(X, y)
    out = getattr(est, "predict_proba", est.predict)
    whole, leaves = out(X), M.leaves(est.forest_, X)
    monkeypatch.setattr(M, "PREDICT_ROWS", 7)
    np.testing.assert_array_equal(out(X), whole)
    np.testing.assert_array_equal(out(sp.csr_matrix(X)), whole)
    np.testing.assert_array_equal(M.leaves(est.forest_, sp.csr_matrix(X)), leaves)


# -- damaged model files ----------------------------------------------------------------
def _saved(tmp_path):
    X, y = _data(400)
    DecisionTreeClassifier(max_depth=4).fit(X, y).save(tmp_path / "m")
    return tmp_path / "m"


def _rewrite_arrays(path, change):
    with np.load(path / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(path / "arrays.npz", **arrays)
    meta = json.loads((path / "model.json").read_text())
    meta.pop("arrays_sha256")            # as if written before checksums were kept
    (path / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("change,message", [
    (lambda a: a.__setitem__("forest_.left", a["forest_.left"] + 10**6), "links a node outside"),
    (lambda a: a.__setitem__("forest_.feature", np.where(a["forest_.feature"] >= 0, 40, -1)
                             .astype(np.int32)), r"feature outside 0\.\.4"),
    (lambda a: a.__setitem__("forest_.value", a["forest_.value"][:-1]), "rows where the trees"),
    (lambda a: a.__setitem__("forest_.value", a["forest_.value"][:, 0]), "not a 2-D array"),
    (lambda a: a.__setitem__("forest_.offsets", a["forest_.offsets"].astype(float)),
     "offsets'\\] has dtype float64"),
], ids=["children", "features", "values", "value-1d", "offsets-float"])
def test_a_structurally_damaged_forest_is_refused_at_load(tmp_path, change, message):
    path = _saved(tmp_path)
    _rewrite_arrays(path, change)
    with pytest.raises(ValueError, match=message):
        shardlearn.load(path)


def test_a_decision_tree_classifier_saved_without_classes_is_refused_at_load(tmp_path):
    path = _saved(tmp_path)            # as files written before classes_ was saved
    _rewrite_arrays(path, lambda a: a.pop("classes_"))
    meta = json.loads((path / "model.json").read_text())
    del meta["attributes"]["classes_"], meta["attributes"]["n_classes_"]
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="classes_ were not saved .*refit it"):
        shardlearn.load(path)


def test_arrays_of_another_model_are_refused(tmp_path):
    path = _saved(tmp_path)
    X, y = _data(400, seed=3)
    DecisionTreeClassifier(max_depth=2).fit(X, y).save(tmp_path / "other")
    (path / "arrays.npz").write_bytes((tmp_path / "other" / "arrays.npz").read_bytes())
    with pytest.raises(ValueError, match="checksum differs"):
        shardlearn.load(path)


@pytest.mark.parametrize("text,message", [
    ('{"format": "shardl', "is not valid JSON"),
    ("[]", "is not a shardlearn model file"),
    ('{"format": "shardlearn-model", "format_version": "2"}', "expected an integer"),
    ('{"format": "shardlearn-model", "params": {}, "attributes": {}}', "no valid 'class'"),
])
def test_a_damaged_model_json_is_refused_clearly(tmp_path, text, message):
    path = _saved(tmp_path)
    (path / "model.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        shardlearn.load(path)


def test_a_truncated_arrays_file_is_refused_clearly(tmp_path):
    path = _saved(tmp_path)
    data = (path / "arrays.npz").read_bytes()
    (path / "arrays.npz").write_bytes(data[: len(data) // 2])
    meta = json.loads((path / "model.json").read_text())
    meta.pop("arrays_sha256")
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="arrays.npz cannot be read"):
        shardlearn.load(path)


# -- missing values read from files ------------------------------------------------------
def _files_with_nan(tmp_path):
    X, y = _data(1500, 3, seed=4)
    X[np.random.default_rng(1).random(X.shape) < 0.1] = np.nan
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["y"] = y
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    return df[["a", "b", "c"]], y


def test_labels_of_a_file_dataset_are_read_once_for_many_tree_fits(tmp_path, monkeypatch):
    from shardlearn.data.readers import CsvByteRangeSource

    _files_with_nan(tmp_path)
    reads = []
    original = CsvByteRangeSource.load_labels
    monkeypatch.setattr(CsvByteRangeSource, "load_labels",
                        lambda self: reads.append(1) or original(self))
    ds = shardlearn.read_csv(str(tmp_path / "d.csv"), label="y")
    for _ in range(3):
        DecisionTreeClassifier(max_depth=2).fit(ds)
    assert len(reads) == ds.n_shards


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_trees_take_missing_values_from_files(tmp_path, fmt):
    from shardlearn.data.readers import predict_to_parquet, score_dataset
    from shardlearn.linear_model import LogisticRegression

    X, y = _files_with_nan(tmp_path)
    read = shardlearn.read_csv if fmt == "csv" else shardlearn.read_parquet
    ds = read(str(tmp_path / f"d.{fmt}"), label="y")
    est = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(ds)
    in_memory = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), in_memory.predict_proba(X))
    np.testing.assert_array_equal(est.predict(ds), est.predict(X))
    assert score_dataset(est, ds) == est.score(X, y)
    n = predict_to_parquet(est, str(tmp_path / f"d.{fmt}"), str(tmp_path / "p.parquet"), label="y")
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "p.parquet")["prediction"],
                                  est.predict(X))
    assert n == len(y)
    # A model that cannot take NaN still refuses it, naming the file and row.
    with pytest.raises(Exception, match=r"Feature column 'a' has NaN .* at .*row"):
        LogisticRegression().fit(ds)


def test_inf_in_a_file_is_still_refused_for_trees(tmp_path):
    X, y = _data(200, 2)
    X[7, 1] = np.inf
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": y}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(Exception, match="infinity .*Missing values \\(NaN\\) are allowed"):
        DecisionTreeClassifier().fit(shardlearn.read_parquet(str(tmp_path / "d.parquet"),
                                                             label="y"))


@pytest.mark.parametrize("data", ["d.csv", "d.parquet"])
def test_cli_predict_with_a_tree_model_takes_missing_values(tmp_path, data):
    from shardlearn.testing.cli import run_cli_in_process

    X, y = _files_with_nan(tmp_path)
    est = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    est.save(tmp_path / "m")
    proc = run_cli_in_process("predict", "--model", tmp_path / "m", "--data", tmp_path / data,
                              "--label", "y", "--out", tmp_path / "p.csv")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "p.csv")["prediction"], est.predict(X))


def test_xgboost_export_keeps_an_infinite_threshold():
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = X[:, 0].copy()
    gone = rng.random(2000) < 0.3
    X[gone, 1] = np.nan
    y[gone] += 3                         # a present-or-missing split: threshold +inf
    est = GradientBoostingRegressor(n_estimators=3, max_depth=2).fit(X, y)
    assert np.isinf(est.forest_["threshold"]).any()
    booster = xgb.Booster()
    booster.load_model(bytearray(est.export_xgboost().encode()))
    top = float(np.finfo(np.float32).max)
    Xt = np.array([[0.0, 1.0, 0.0], [0.0, np.nan, 0.0], [0.0, top, 0.0]])
    np.testing.assert_allclose(booster.predict(xgb.DMatrix(Xt, missing=np.nan)), est.predict(Xt),
                               rtol=1e-6)


def test_xgboost_export_carries_the_column_names():
    xgb = pytest.importorskip("xgboost")
    X, y = _data(500, 3)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    booster = xgb.Booster()
    est = GradientBoostingClassifier(n_estimators=3).fit(df, y)
    booster.load_model(bytearray(est.export_xgboost().encode()))
    assert booster.feature_names == ["a", "b", "c"]
    np.testing.assert_allclose(booster.predict(xgb.DMatrix(df)), est.predict_proba(df)[:, 1],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="feature_names mismatch"):
        booster.predict(xgb.DMatrix(df[["c", "b", "a"]]))
    unnamed = xgb.Booster()
    unnamed.load_model(bytearray(GradientBoostingClassifier(n_estimators=3).fit(X, y)
                                 .export_xgboost().encode()))
    assert unnamed.feature_names is None
