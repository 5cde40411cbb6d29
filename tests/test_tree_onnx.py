"""ONNX export of the histogram trees, forests and boosting: onnxruntime agrees with predict.

Every export variant is run by onnxruntime on held-out rows with NaN (the training
rows have NaN too, so learned missing directions are exercised) and compared with
the estimator on the same values:

* labels: identical;
* probabilities / regression outputs: within 1e-12 for ``ml_opset=5`` float64 (the
  ``TreeEnsemble`` operator computes in float64; only the order of the sums
  differs), 1e-6 for ``ml_opset=3`` float64 (float64 thresholds and sums but a
  float32 output, as that operator defines), 1e-4 for the float32 exports (compared
  with ``predict`` on the same values cast to float32).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.exceptions import NotFittedError

import shardlearn
from shardlearn.algorithms.tree import model as M
from shardlearn.algorithms.tree.onnx_export import forest_to_onnx
from shardlearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from shardlearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

pytestmark = [pytest.mark.usefixtures("local_two_workers"), pytest.mark.timeout(120)]

#: (ml_opset, dtype) -> tolerance on probabilities / regression outputs.
VARIANTS = {(5, np.float64): 1e-12, (3, np.float64): 1e-6,
            (5, np.float32): 1e-4, (3, np.float32): 1e-4}


def _data(seed=0, n=500, n_test=300, d=5):
    rng = np.random.default_rng(seed)

    def X_of(m):
        X = rng.normal(size=(m, d))
        X[rng.random((m, d)) < 0.15] = np.nan
        return X

    X, Xt = X_of(n), X_of(n_test)
    z = np.nan_to_num(X[:, 0]) + np.where(np.isnan(X[:, 1]), 1.5, X[:, 1]) - np.isnan(X[:, 2])
    return X, Xt, z + 0.3 * rng.normal(size=n)


def _run(model, X):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": X})


def _check_classifier(est, Xt, variants=VARIANTS):
    for (ml_opset, dtype), tol in variants.items():
        model = est.to_onnx(dtype=dtype, ml_opset=ml_opset)
        onnx.checker.check_model(model)
        Xi = Xt.astype(dtype)
        Xo = Xi.astype(np.float64)              # the same values, for predict
        label, proba = _run(model, Xi)
        assert [o.name for o in model.graph.output] == ["label", "probabilities"]
        assert label.shape == (Xt.shape[0],)
        assert proba.shape == (Xt.shape[0], len(est.classes_))
        assert proba.dtype == (np.float64 if (ml_opset, dtype) == (5, np.float64) else np.float32)
        np.testing.assert_array_equal(label, est.predict(Xo), err_msg=f"{ml_opset}, {dtype}")
        np.testing.assert_allclose(proba, est.predict_proba(Xo), rtol=0, atol=tol,
                                   err_msg=f"{ml_opset}, {dtype}")


def _check_regressor(est, Xt, variants=VARIANTS):
    for (ml_opset, dtype), tol in variants.items():
        model = est.to_onnx(dtype=dtype, ml_opset=ml_opset)
        onnx.checker.check_model(model)
        Xi = Xt.astype(dtype)
        (out,) = _run(model, Xi)
        assert [o.name for o in model.graph.output] == ["variable"]
        assert out.shape == (Xt.shape[0], 1)
        np.testing.assert_allclose(out[:, 0], est.predict(Xi.astype(np.float64)), rtol=0,
                                   atol=tol, err_msg=f"{ml_opset}, {dtype}")


CLASSIFIERS = {
    "tree": lambda: DecisionTreeClassifier(max_depth=6, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3,
                                                   min_samples_leaf=5),
}
REGRESSORS = {
    "tree": lambda: DecisionTreeRegressor(max_depth=6, random_state=0),
    "forest": lambda: RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0),
    "boosting": lambda: GradientBoostingRegressor(n_estimators=15, max_depth=3,
                                                  min_samples_leaf=5),
}


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_classifier_matches_onnxruntime(kind, n_classes):
    X, Xt, z = _data(1)
    y = np.digitize(z, np.quantile(z, np.linspace(0, 1, n_classes + 1)[1:-1])) * 3 + 1
    est = CLASSIFIERS[kind]().fit(X, y)          # classes 1, 4 (, 7): labels, not indices
    assert est.classes_.tolist() == [1, 4, 7][:n_classes]
    _check_classifier(est, Xt)


@pytest.mark.parametrize("kind", ["forest", "boosting"])
def test_string_labels(kind):
    X, Xt, z = _data(2)
    y = np.where(z > 0.8, "high", np.where(z > -0.5, "mid", "low"))
    est = CLASSIFIERS[kind]().fit(X, y if kind == "forest" else (y == "high").astype(str))
    _check_classifier(est, Xt, {(5, np.float64): 1e-12, (3, np.float32): 1e-4})
    label, _ = _run(est.to_onnx(), Xt)
    assert label.dtype == object and set(label) <= set(est.classes_.tolist())


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_regressor_matches_onnxruntime(kind):
    X, Xt, z = _data(3)
    est = REGRESSORS[kind]().fit(X, z)
    splits = est.forest_["feature"] >= 0
    assert set(est.forest_["missing_left"][splits].tolist()) == {0, 1}   # NaN goes both ways
    _check_regressor(est, Xt)


def _categorical_data(top_code, seed=4, n=600, n_test=400):
    rng = np.random.default_rng(seed)
    codes = np.array([0, 1, 2, 3, 5, 8, 13, 40, top_code])
    effect = dict(zip(codes.tolist(), rng.normal(size=codes.size)))

    def X_of(m, pool):
        c = rng.choice(pool, m).astype(float)
        c[rng.random(m) < 0.1] = np.nan
        return np.column_stack([rng.normal(size=m), c, rng.choice(codes[:5], m)])

    X = X_of(n, codes)
    z = np.array([1.5 if np.isnan(v) else effect[v] for v in X[:, 1]]) + 0.3 * X[:, 0]
    # Held out: unseen categories, negative, non-integer and huge values, NaN.
    Xt = X_of(n_test, np.r_[codes, [4, 7, 100, -1, -0.5, 2.5, 0.5, 1e30]])
    Xt[:40, 2] = np.r_[[6, 9, -3, 1.5, 2.25, 0.999, np.nan, 1e9]].repeat(5)
    return X, Xt, z


@pytest.mark.parametrize("kind", ["forest-classifier", "boosting-classifier", "tree-regressor",
                                  "boosting-regressor"])
def test_categorical_splits(kind):
    # Regressors see category 2**25 (float32 cannot hold it exactly), classifiers 90.
    X, Xt, z = _categorical_data(90 if kind.endswith("classifier") else 2 ** 25)
    est = {"forest-classifier": CLASSIFIERS["forest"], "boosting-classifier": CLASSIFIERS["boosting"],
           "tree-regressor": REGRESSORS["tree"],
           "boosting-regressor": REGRESSORS["boosting"]}[kind]()
    est.set_params(categorical_features=[1, 2])
    classifier = kind.endswith("classifier")
    est.fit(X, np.where(z > 0.7, "a", np.where(z > -0.3, "b", "c")) if classifier else z)
    assert (est.forest_["cat_size"] > 0).sum() > 0
    check = _check_classifier if classifier else _check_regressor
    check(est, Xt, {(5, np.float64): 1e-12})
    # ml_opset 3 has no set-membership split.
    with pytest.raises(ValueError, match="categor.*ml_opset=5"):
        est.to_onnx(ml_opset=3)
    if classifier:
        check(est, Xt, {(5, np.float32): 1e-4})
    else:
        assert (est.forest_["cat_values"] == 2 ** 25).any()
        with pytest.raises(ValueError, match="float32 cannot hold"):
            est.to_onnx(dtype=np.float32)


def _hand_forest():
    """Tree 0: categorical root (missing_left=1: the set {1, 4} goes right, the rest and
    NaN left), a numeric split with NaN going left; tree 1: a single leaf."""
    return {
        "offsets": np.array([0, 5, 6]),
        "feature": np.array([1, 0, -1, -1, -1, -1], np.int32),
        "threshold": np.array([np.nan, 0.25, 0, 0, 0, 0]),
        "missing_left": np.array([1, 1, 0, 0, 0, 0], np.uint8),
        "left": np.array([1, 3, -1, -1, -1, -1], np.int32),
        "right": np.array([2, 4, -1, -1, -1, -1], np.int32),
        "value": np.array([[0.0], [0.0], [10.0], [-1.0], [2.0], [0.5]]),
        "n_samples": np.ones(6), "gain": np.zeros(6), "depth": np.array([0, 1, 1, 2, 2, 0]),
        "cat_size": np.array([2, 0, 0, 0, 0, 0], np.int32),
        "cat_values": np.array([1.0, 4.0]),
    }


def test_hand_built_forest_missing_left_category_and_single_leaf_tree():
    forest = _hand_forest()
    X = np.array([[v0, v1] for v0 in (-1.0, 0.25, np.nextafter(0.25, 1), np.nan)
                  for v1 in (0, 1, 4, 2, 1.5, -1, np.nan, 1e20)])
    for dtype in (np.float64, np.float32):
        leaf_vals = M.leaf_outputs(forest, X.astype(dtype).astype(np.float64))[:, :, 0]
        (mean,) = _run(forest_to_onnx(forest, n_features=2, kind="mean", dtype=dtype),
                       X.astype(dtype))
        np.testing.assert_allclose(mean[:, 0], leaf_vals.mean(axis=1), atol=1e-12)
        (raw,) = _run(forest_to_onnx(forest, n_features=2, kind="boost", baseline=[0.125],
                                     dtype=dtype), X.astype(dtype))
        np.testing.assert_allclose(raw[:, 0], 0.125 + leaf_vals.sum(axis=1), atol=1e-12)


def test_float32_thresholds_round_down():
    """A float32 export routes every float32 value exactly as the float64 model does."""
    forest = _hand_forest()
    forest.update(cat_size=np.zeros(6, np.int32), cat_values=np.empty(0),
                  threshold=np.array([0.1, 0.3, 0, 0, 0, 0]))    # neither is a float32
    around = [np.nextafter(np.float32(t), np.float32(s)) for t in (0.1, 0.3) for s in (-1, 1)]
    grid = np.array(around + [np.float32(0.1), np.float32(0.3)], np.float32)
    X = np.array([[a, b] for a in grid for b in grid], np.float32)
    (out,) = _run(forest_to_onnx(forest, n_features=2, kind="mean", dtype=np.float32), X)
    expected = M.leaf_outputs(forest, X.astype(np.float64))[:, :, 0].mean(axis=1)
    np.testing.assert_array_equal(out[:, 0], expected.astype(np.float32))


def test_single_leaf_tree():
    X, Xt, _ = _data(5, n=100)
    est = DecisionTreeRegressor().fit(X, np.full(100, 3.5))
    assert est.get_n_leaves() == 1
    _check_regressor(est, Xt)


def test_reference_evaluator_agrees():
    """onnx's reference implementation runs the TreeEnsemble graph as onnxruntime does."""
    from onnx.reference import ReferenceEvaluator

    X, Xt, z = _data(6, n=300, n_test=60)
    est = GradientBoostingClassifier(n_estimators=4, max_depth=3).fit(X, z > 0)
    label, proba = ReferenceEvaluator(est.to_onnx()).run(None, {"X": Xt})
    np.testing.assert_array_equal(label, est.predict(Xt))
    np.testing.assert_allclose(proba, est.predict_proba(Xt), rtol=0, atol=1e-12)


def test_path_writes_a_model_onnxruntime_loads(tmp_path):
    import pandas as pd

    X, Xt, z = _data(7, n=300)
    cols = [f"f{i}" for i in range(X.shape[1])]
    est = RandomForestClassifier(n_estimators=4, max_depth=4, random_state=0)
    est.fit(pd.DataFrame(X, columns=cols), z > 0)
    path = tmp_path / "forest.onnx"
    model = est.to_onnx(path)
    assert path.stat().st_size > 0
    assert onnx.load(path).SerializeToString() == model.SerializeToString()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"X": Xt})
    frame = pd.DataFrame(Xt, columns=cols)
    np.testing.assert_array_equal(label, est.predict(frame))
    np.testing.assert_allclose(proba, est.predict_proba(frame), rtol=0, atol=1e-12)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["estimator"] == "RandomForestClassifier" and '"f0"' in meta["feature_names"]
    assert model.producer_name == "shardlearn"
    # A model saved and loaded (no cluster) exports the same graph.
    est.save(tmp_path / "saved")
    again = shardlearn.load(tmp_path / "saved")
    assert again.to_onnx().SerializeToString() == model.SerializeToString()


def test_bad_arguments():
    X, _, z = _data(8, n=100)
    with pytest.raises(NotFittedError):
        DecisionTreeRegressor().to_onnx()
    est = DecisionTreeRegressor(max_depth=2).fit(X, z)
    with pytest.raises(ValueError, match="dtype"):
        est.to_onnx(dtype=np.int32)
    with pytest.raises(ValueError, match="ml_opset"):
        est.to_onnx(ml_opset=4)


def test_missing_onnx_gives_install_hint(monkeypatch):
    X, _, z = _data(9, n=100)
    est = DecisionTreeRegressor(max_depth=2).fit(X, z)
    monkeypatch.setitem(sys.modules, "onnx", None)     # `import onnx` now fails
    with pytest.raises(ImportError, match=r"shardlearn\[onnx\]"):
        est.to_onnx()


def test_import_does_not_need_onnx():
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['onnxruntime'] = None\n"
            "import shardlearn, shardlearn.tree, shardlearn.ensemble\n"
            "import shardlearn.algorithms.tree.onnx_export\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
