"""The reference estimators ``shardlearn bench`` times ours against, set up as ours is.

Each model of :data:`._common.MODELS` has a scikit-learn counterpart; boosting also
XGBoost's ``hist`` booster when it is installed. Settings that mean the same on both
sides are copied from our estimator (so ``--param max_depth=8`` changes both);
threads are limited to the number of workers, so both sides get the same cores.
"""

from __future__ import annotations

import importlib

#: model -> (scikit-learn class, our parameters copied under the same name, fixed settings)
_SKLEARN = {
    "logistic": ("sklearn.linear_model:LogisticRegression",
                 ("C", "fit_intercept", "max_iter", "tol", "class_weight"), {}),
    "linear-svc": ("sklearn.svm:LinearSVC",
                   ("C", "fit_intercept", "max_iter", "tol", "class_weight"), {"dual": False}),
    "ridge": ("sklearn.linear_model:Ridge", ("alpha", "fit_intercept"), {}),
    "linear": ("sklearn.linear_model:LinearRegression", ("fit_intercept",), {}),
}
_TREE_PARAMS = ("criterion", "max_depth", "min_samples_split", "min_samples_leaf",
                "min_impurity_decrease", "max_features", "max_leaf_nodes", "random_state")
for _name, _cls in (("tree", "DecisionTreeClassifier"), ("tree-regressor", "DecisionTreeRegressor")):
    _extra = ("class_weight",) if _name == "tree" else ()
    _SKLEARN[_name] = (f"sklearn.tree:{_cls}", _TREE_PARAMS + _extra, {})
for _name, _cls in (("forest", "RandomForestClassifier"),
                    ("forest-regressor", "RandomForestRegressor")):
    _extra = ("class_weight",) if _name == "forest" else ()
    _SKLEARN[_name] = (f"sklearn.ensemble:{_cls}",
                       _TREE_PARAMS + ("n_estimators", "bootstrap") + _extra, {})
for _name, _cls in (("boosting", "HistGradientBoostingClassifier"),
                    ("boosting-regressor", "HistGradientBoostingRegressor")):
    _extra = ("class_weight",) if _name == "boosting" else ()
    _SKLEARN[_name] = (f"sklearn.ensemble:{_cls}",
                       ("learning_rate", "max_depth", "min_samples_leaf", "random_state",
                        "validation_fraction", "n_iter_no_change", "tol") + _extra,
                       {})


def _make(spec: str, kwargs: dict):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def references(model: str, ours, workers: int) -> list[tuple[str, object]]:
    """``[(label, unfitted estimator)]`` to time against ``ours`` (a ``model`` of MODELS)."""
    spec, copied, fixed = _SKLEARN[model]
    params = ours.get_params(deep=False)
    kwargs = {k: params[k] for k in copied} | fixed
    if model.startswith("forest"):
        kwargs["n_jobs"] = workers
    if model.startswith("boosting"):
        # Our boosting stops only when told to; its trees are as deep as max_depth
        # unless max_leaves caps them; scikit-learn's max_bins excludes the NaN bin.
        kwargs.update(max_iter=params["n_estimators"], max_leaf_nodes=params["max_leaves"],
                      l2_regularization=params["reg_lambda"], max_bins=min(params["max_bins"], 255),
                      early_stopping=bool(params["early_stopping"]))
    out = [(f"scikit-learn {spec.split(':')[1]}", _make(spec, kwargs))]
    if model.startswith("boosting"):
        xgb = _xgboost(model, params, workers)
        if xgb is not None:
            out.append(("XGBoost hist", xgb))
    return out


def _xgboost(model: str, params: dict, workers: int):
    try:
        import xgboost
    except ImportError:
        return None
    cls = xgboost.XGBClassifier if model == "boosting" else xgboost.XGBRegressor
    return cls(n_estimators=params["n_estimators"], learning_rate=params["learning_rate"],
               max_depth=params["max_depth"] or 0, max_leaves=params["max_leaves"] or 0,
               reg_lambda=params["reg_lambda"], min_child_weight=params["min_child_weight"],
               subsample=params["subsample"], colsample_bytree=params["colsample"],
               # XGBoost's max_bin counts the missing-value bin, ours does not.
               max_bin=params["max_bins"] + 1, tree_method="hist", n_jobs=workers,
               random_state=0 if params["random_state"] is None else params["random_state"])

