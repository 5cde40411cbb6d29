"""Export boosted forests to XGBoost's JSON model format (loadable by ``xgboost.Booster``).

Differences bridged here:

* XGBoost sends a row left when ``float32(x) < split_condition``; shardlearn when
  ``x <= threshold``. The condition is the next float32 above the threshold, so
  both agree except for values within float32 rounding of a threshold (thresholds
  sit between training values, so this is rare).
* The initial score is folded into the leaves of the first round's trees and
  ``base_score`` is set to the objective's neutral value (margin 0).
* Categorical splits become XGBoost categorical splits (``split_type`` 1). XGBoost
  sends the categories listed for a node to the *right* child and every other
  value (unlisted or invalid categories) left, missing values to the default
  child (checked with xgboost 3.2). shardlearn sends its listed categories to the
  non-missing side and everything else with the missing values, so the export
  lists the same categories, puts the missing-side child on XGBoost's left and
  sets ``default_left``: predictions agree for integer values, unseen categories,
  negative values and NaN. (A non-integer value is missing for shardlearn but
  truncated to an integer category by XGBoost.)
"""

from __future__ import annotations

import json

import numpy as np

_INT_MAX = 2147483647
#: XGBoost's largest category value + 1 (categories are read as float32).
_MAX_CAT = 1 << 24


def _cond(threshold: np.ndarray) -> np.ndarray:
    t = np.asarray(threshold, dtype=np.float64)
    t32 = t.astype(np.float32)
    # Smallest float32 c with c > t (as float64): x <= t  <=>  x < c for float32 x.
    below = t32.astype(np.float64) <= t
    # A threshold of +inf (present values left, missing right) stays inf: XGBoost reads
    # the JSON token Infinity, and FLT_MAX in its place sent x == FLT_MAX the other way.
    return np.where(below, np.nextafter(t32, np.float32(np.inf)), t32).astype(np.float32)


def _cat_layout(forest):
    """Per-node category counts and the start of each node's run in ``cat_values``."""
    size = forest.get("cat_size")
    n = len(forest["feature"])
    size = np.zeros(n, np.int64) if size is None else np.asarray(size, np.int64)
    return size, np.concatenate([[0], np.cumsum(size)])


def _tree_json(forest, t, leaf_offset, n_features, cat_layout):
    a, b = int(forest["offsets"][t]), int(forest["offsets"][t + 1])
    feat = forest["feature"][a:b]
    leaf = feat < 0
    left = np.where(leaf, -1, forest["left"][a:b]).astype(int)
    right = np.where(leaf, -1, forest["right"][a:b]).astype(int)
    default_left = np.where(leaf, 0, forest["missing_left"][a:b]).astype(int)
    size, start = cat_layout
    is_cat = (size[a:b] > 0) & ~leaf
    cats, cat_nodes, cat_segments, cat_sizes = [], [], [], []
    for v in np.flatnonzero(is_cat):
        values = forest["cat_values"][start[a + v]:start[a + v + 1]]
        if values.size and (values.max() >= _MAX_CAT or (values != np.floor(values)).any()):
            raise ValueError(
                f"Tree {t}, node {v} splits on category values up to {values.max():g}; "
                f"XGBoost only takes integer categories below {_MAX_CAT}. Re-encode the "
                "categories as 0..k-1 (e.g. with sklearn.preprocessing.OrdinalEncoder).")
        # XGBoost: listed categories right, the rest (and default_left) left.
        if not forest["missing_left"][a + v]:
            left[v], right[v] = right[v], left[v]
        default_left[v] = 1
        cat_nodes.append(int(v))
        cat_segments.append(len(cats))
        cat_sizes.append(int(values.size))
        cats += [int(c) for c in values]
    parents = np.full(b - a, _INT_MAX, dtype=np.int64)
    for v in np.flatnonzero(~leaf):
        parents[left[v]] = v
        parents[right[v]] = v
    value = forest["value"][a:b, 0] + leaf_offset
    cond = np.where(leaf, value.astype(np.float32),
                    np.where(is_cat, np.float32(0.0), _cond(forest["threshold"][a:b])))
    return {
        "base_weights": [float(v) if lf else 0.0 for v, lf in zip(value, leaf)],
        "categories": cats, "categories_nodes": cat_nodes, "categories_segments": cat_segments,
        "categories_sizes": cat_sizes,
        "default_left": [int(x) for x in default_left],
        "id": int(t),
        "left_children": left.tolist(),
        "loss_changes": [float(g) for g in forest["gain"][a:b]],
        "parents": parents.tolist(),
        "right_children": right.tolist(),
        "split_conditions": [float(c) for c in cond],
        "split_indices": np.where(leaf, 0, feat).astype(int).tolist(),
        "split_type": [int(c) for c in is_cat],
        "sum_hessian": [float(n) for n in forest["n_samples"][a:b]],
        "tree_param": {"num_deleted": "0", "num_feature": str(n_features),
                       "num_nodes": str(b - a), "size_leaf_vector": "1"},
    }


def to_xgboost_json(forest, baseline, objective: str, n_features: int,
                    feature_names=None) -> str:
    """XGBoost JSON for a forest of ``len(baseline)`` trees per round.

    ``objective``: "binary:logistic", "multi:softprob" or "reg:squarederror".
    ``feature_names``: the columns the model was fitted on, if named (XGBoost then
    checks a DMatrix's names, as for its own models fitted on a DataFrame).
    """
    K = len(baseline)
    n_trees = len(forest["offsets"]) - 1
    layout = _cat_layout(forest)
    trees = [_tree_json(forest, t, float(baseline[t % K]) if t < K else 0.0, n_features, layout)
             for t in range(n_trees)]
    if objective == "binary:logistic":
        obj = {"name": objective, "reg_loss_param": {"scale_pos_weight": "1"}}
        base = "5E-1"
    elif objective == "multi:softprob":
        obj = {"name": objective, "softmax_multiclass_param": {"num_class": str(K)}}
        base = "0E0"        # added to each class's margin as it is (no link function)
    else:
        obj = {"name": objective, "reg_loss_param": {"scale_pos_weight": "1"}}
        base = "0E0"
    model = {
        "learner": {
            "attributes": {},
            "feature_names": [] if feature_names is None else [str(c) for c in feature_names],
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(n_trees)},
                    "iteration_indptr": list(range(0, n_trees + 1, K)),
                    "tree_info": [t % K for t in range(n_trees)],
                    "trees": trees,
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": base, "boost_from_average": "1",
                "num_class": str(K if objective == "multi:softprob" else 0),
                "num_feature": str(n_features), "num_target": "1",
            },
            "objective": obj,
        },
        "version": [2, 0, 0],
    }
    return json.dumps(model)
