"""Saving and loading fitted models: JSON + npz, no pickle, no cluster needed."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import shardlearn
from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge
from shardlearn.runtime import FitReport, current_session
from shardlearn.testing import make_linear_regression, make_logistic

CLASSIFIERS = [
    (LogisticRegression, {}),
    (LogisticRegression, {"C": 0.3, "fit_intercept": False}),
    (LinearSVC, {"C": 0.5}),
]
REGRESSORS = [(LinearRegression, {}), (Ridge, {"alpha": 2.0})]


def _outputs(model, X):
    out = {"predict": model.predict(X)}
    if hasattr(model, "decision_function"):
        out["decision_function"] = model.decision_function(X)
    if hasattr(model, "predict_proba"):
        out["predict_proba"] = model.predict_proba(X)
    return out


def _assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if a[k].dtype.kind in "fiub":
            assert a[k].tobytes() == b[k].tobytes(), k
        else:
            assert np.array_equal(a[k], b[k]), k


def _round_trip(model, X, path):
    before = _outputs(model, X)
    model.save(path)
    shardlearn.shutdown()
    assert current_session() is None
    loaded = shardlearn.load(path)
    assert type(loaded) is type(model)
    after = _outputs(loaded, X)
    _assert_bit_equal(before, after)
    assert current_session() is None, "predicting a loaded model must not start workers"
    return loaded


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("est, params", CLASSIFIERS, ids=lambda p: getattr(p, "__name__", str(p)))
def test_classifier_round_trip(local_session, tmp_path, est, params, n_classes):
    X, y = make_logistic(300, 4, n_classes=n_classes, random_state=n_classes)
    model = est(**params).fit(X, y)
    loaded = _round_trip(model, X, tmp_path / "model")
    assert loaded.get_params() == model.get_params()
    for name in ("coef_", "intercept_", "classes_", "n_iter_"):
        a, b = getattr(model, name), getattr(loaded, name)
        assert type(a) is type(b) and np.asarray(a).dtype == np.asarray(b).dtype, name
        assert np.array_equal(a, b), name
    assert loaded.n_features_in_ == 4
    assert isinstance(loaded.fit_report_, FitReport)
    assert loaded.fit_report_.to_dict() == model.fit_report_.to_dict()
    assert loaded.fit_report_.summary() == model.fit_report_.summary()


@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("est, params", REGRESSORS, ids=lambda p: getattr(p, "__name__", str(p)))
def test_regressor_round_trip(local_session, tmp_path, est, params, n_targets):
    X, y = make_linear_regression(200, 5, n_targets=n_targets)
    model = est(**params).fit(X, y)
    loaded = _round_trip(model, X, tmp_path / "model")
    assert loaded.get_params() == model.get_params()
    assert np.array_equal(np.asarray(loaded.coef_), np.asarray(model.coef_))
    assert type(loaded.intercept_) is type(model.intercept_)
    assert loaded.rank_ == model.rank_
    assert np.array_equal(loaded.singular_, model.singular_)


def test_ridge_array_alpha_round_trip(local_session, tmp_path):
    X, y = make_linear_regression(200, 5, n_targets=2)
    model = Ridge(alpha=np.array([0.5, 3.0])).fit(X, y)
    loaded = _round_trip(model, X, tmp_path / "ridge")
    assert isinstance(loaded.alpha, np.ndarray) and np.array_equal(loaded.alpha, model.alpha)


@pytest.mark.parametrize("labels", [
    np.array(["cat", "dog", "eel"]),
    np.array(["cat", "dog", "eel"], dtype=object),
    np.array(["no", "yes"]),
    np.array([-3, 7]),
    np.array([0.5, 2.0], dtype=object),
    np.array([-3, 7], dtype=object),
    np.array([False, True], dtype=object),
], ids=["str3", "object3", "str2", "int2", "object-float", "object-int", "object-bool"])
@pytest.mark.parametrize("est", [LogisticRegression, LinearSVC])
def test_class_labels_survive(local_session, tmp_path, est, labels):
    X, idx = make_logistic(240, 3, n_classes=len(labels), random_state=1)
    y = labels[idx]
    model = est().fit(X, y)
    loaded = _round_trip(model, X, tmp_path / "m")
    assert loaded.classes_.dtype.kind == model.classes_.dtype.kind
    assert list(loaded.classes_) == list(model.classes_) == sorted(labels.tolist())
    # Labels keep their type (numbers held in an object array do not come back as text).
    assert [type(c) for c in loaded.classes_.tolist()] == [type(c) for c in labels.tolist()]
    pred = loaded.predict(X)
    assert set(pred.tolist()) <= set(labels.tolist())
    assert np.array_equal(pred, model.predict(X))


def test_feature_names_and_class_weight_survive(local_session, tmp_path):
    X, y = make_logistic(200, 3, random_state=2)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    model = LogisticRegression(class_weight={0: 1.0, 1: 3.0}).fit(df, y)
    loaded = _round_trip(model, df, tmp_path / "m")
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    # Integer keys stay integers: refitting the loaded estimator works.
    assert loaded.class_weight == {0: 1.0, 1: 3.0}
    assert all(type(k) is int for k in loaded.class_weight)
    refit = loaded.fit(df, y)
    assert np.array_equal(refit.coef_, model.coef_)
    with pytest.raises(ValueError, match="feature names"):
        loaded.predict(df[["c", "b", "a"]])


def test_no_pickle_in_files(local_session, tmp_path):
    X, y = make_logistic(200, 3, n_classes=3, random_state=4)
    model = LogisticRegression().fit(X, np.array(["x", "y", "z"])[y])
    path = tmp_path / "m"
    model.save(path)
    assert sorted(os.listdir(path)) == ["arrays.npz", "model.json"]

    def no_constants(name):
        raise AssertionError(f"model.json holds {name}, which is not valid JSON")

    with open(path / "model.json") as f:
        meta = json.loads(f.read(), parse_constant=no_constants)
    assert meta["format"] == "shardlearn-model"
    assert meta["class"] == "shardlearn.linear_model._logistic.LogisticRegression"
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert arrays, "numeric attributes live in the npz"
    assert all(a.dtype.kind in "biuf" for a in arrays.values())
    coef_key = meta["attributes"]["coef_"]["__array__"]
    assert np.array_equal(arrays[coef_key], model.coef_)
    # model.json is plain text: no pickle stream (protocol 2+ starts with 0x80).
    raw = (path / "model.json").read_bytes()
    assert raw.decode("utf-8") and b"\x80" not in raw


def test_overwrite_existing_model_dir(local_session, tmp_path):
    X, y = make_logistic(200, 3, random_state=5)
    path = tmp_path / "m"
    first = LogisticRegression(C=100.0).fit(X, y)
    second = LogisticRegression(C=0.01).fit(X, y)
    assert not np.array_equal(first.coef_, second.coef_)
    first.save(path)
    shardlearn.save(second, path)
    loaded = shardlearn.load(path)
    assert loaded.C == 0.01 and np.array_equal(loaded.coef_, second.coef_)
    assert sorted(os.listdir(tmp_path)) == ["m"], "no temporary or old directories left behind"


def test_refuses_to_overwrite_non_model_dir(local_session, tmp_path):
    X, y = make_logistic(100, 3, random_state=6)
    model = LogisticRegression().fit(X, y)
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a shardlearn model directory; refusing"):
        model.save(target)
    assert (target / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(target)) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["precious"]
    # A plain file in the way is refused too.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("cls", [
    "os.system",
    "sklearn.linear_model._logistic.LogisticRegression",
    "shardlearn_evil.Model",
    "shardlearn.runtime.session.Session",
    "shardlearn.linear_model.NoSuchModel",
])
def test_load_refuses_foreign_classes(local_session, tmp_path, cls):
    X, y = make_logistic(100, 3, random_state=7)
    path = tmp_path / "m"
    LogisticRegression().fit(X, y).save(path)
    meta = json.loads((path / "model.json").read_text())
    meta["class"] = cls
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="refusing to load|not a shardlearn estimator"):
        shardlearn.load(path)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a shardlearn model directory"):
        shardlearn.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a shardlearn model file"):
        shardlearn.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "shardlearn-model",
                                                     "format_version": 99}))
    with pytest.raises(ValueError, match="newer shardlearn"):
        shardlearn.load(tmp_path)


@pytest.mark.parametrize("est", [LogisticRegression, LinearSVC, LinearRegression, Ridge])
def test_unfitted_save_raises(tmp_path, est):
    with pytest.raises(NotFittedError):
        est().save(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert os.listdir(tmp_path) == []
