"""Export fitted histogram trees, forests and boosted forests to ONNX.

The functional core behind ``to_onnx`` on the tree estimators: a packed forest
(see :mod:`.model`) becomes an ``onnx.ModelProto`` whose outputs follow
skl2onnx's conventions: classifiers give ``label`` (shape ``(N,)``: the class
labels themselves, int64 for integer (or integer-valued float) classes, strings
for string classes, float64 for other float classes) and
``probabilities`` (``(N, n_classes)``); regressors give ``variable`` (``(N, 1)``).
The input is ``X``, ``(N, n_features)`` of the export ``dtype``.

Two operator sets:

* ``ml_opset=5`` (default): the ``ai.onnx.ml`` ``TreeEnsemble`` operator (onnx
  1.16, onnxruntime 1.20 and later). Inputs, thresholds, leaf values and outputs
  all have the export dtype, so a float64 export reproduces shardlearn's
  predictions to float64 rounding (only the order of the sums differs).
  Categorical splits are ``BRANCH_MEMBER`` nodes: the node's set of categories
  takes the true branch, every other value the false branch, with NaN, which is
  shardlearn's rule (unseen categories go where missing values go). onnxruntime
  tests membership exactly for integers and NaN only (it truncates 2.5 to 2 for
  some sets), so the graph first turns the values of categorical columns that
  cannot be categories (negative, non-integer, above the column's largest
  category) into NaN, which routes them as shardlearn does. ``TreeEnsemble`` gives each leaf one target, so a classification tree
  with ``C`` class probabilities per leaf is written ``C`` times (copy ``k``
  holding class ``k``'s probabilities).
* ``ml_opset=3``: ``TreeEnsembleRegressor`` (deprecated in ``ai.onnx.ml`` 5 but
  run by every onnxruntime), with ``*_as_tensor`` double attributes for a float64
  export so the thresholds keep full precision. Its output is float32 whatever
  the input, so scores and probabilities carry float32 rounding (about 6e-8
  relative). It has no set-membership split: a model with categorical splits
  raises ``ValueError``.

Both build the raw scores with one tree operator and the rest with standard
operators: the mean over trees (forests, single trees), the baseline, then a
sigmoid (binary boosting, ``[1 - p, p]``) or softmax (multiclass boosting; tree
``k`` of each round adds to class ``k``), and ``label`` as the first
``ArgMax`` of the probabilities mapped to the classes with ``Gather`` — what
``predict`` does. (``TreeEnsembleClassifier`` is not used: onnxruntime picks a
binary model's label by a rule that depends on the signs of the leaf weights,
and does not apply the logistic to a single score.)

Splits: a row goes to the true branch when ``x <= threshold`` (``BRANCH_LEQ``;
true = shardlearn's left child), NaN to the side ``missing_left`` names
(``nodes_missing_value_tracks_true``). A float32 export rounds each threshold
*down* to the largest float32 not above it, so for every float32 input the
routing is exactly shardlearn's routing of that value; float64 inputs cast to
float32 can route differently only when they lie within float32 rounding of a
threshold.
"""

from __future__ import annotations

import json

import numpy as np

#: ``ai.onnx.ml`` opset -> (``ai.onnx`` opset, IR version) of the exported model
#: (the pairs onnx 1.12 and 1.16 shipped).
_OPSETS = {3: (17, 8), 5: (21, 10)}
#: float32 holds every integer below this exactly.
_MAX_CAT32 = 1 << 24
_BRANCH_LEQ, _BRANCH_MEMBER = 0, 6

INSTALL_HINT = ("ONNX export needs the onnx package (and onnxruntime to run the model): "
                "pip install 'shardlearn[onnx]'.")


def import_onnx():
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return onnx


def _round_down_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 ``c <= t`` (so ``x <= t`` <=> ``x <= c`` for float32 ``x``)."""
    t = np.asarray(t, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        c = t.astype(np.float32)
        above = c.astype(np.float64) > t
    return np.where(above, np.nextafter(c, np.float32(-np.inf)), c).astype(np.float32)


class _Layout:
    """Global node arrays of a packed forest, children as global indices."""

    def __init__(self, forest):
        offs = np.asarray(forest["offsets"], np.int64)
        self.n_trees = len(offs) - 1
        self.offsets = offs
        self.feature = np.asarray(forest["feature"], np.int64)
        n = self.feature.shape[0]
        self.tree = np.repeat(np.arange(self.n_trees), np.diff(offs))
        self.leaf = self.feature < 0
        base = offs[:-1][self.tree]
        self.left = np.where(self.leaf, -1, np.asarray(forest["left"], np.int64) + base)
        self.right = np.where(self.leaf, -1, np.asarray(forest["right"], np.int64) + base)
        self.threshold = np.asarray(forest["threshold"], np.float64)
        self.missing_left = np.asarray(forest["missing_left"]).astype(bool)
        size = forest.get("cat_size")
        self.cat_size = np.zeros(n, np.int64) if size is None else np.asarray(size, np.int64)
        self.cat_start = np.concatenate([[0], np.cumsum(self.cat_size)])
        self.cat_values = np.asarray(forest.get("cat_values", np.empty(0)), np.float64)
        self.is_cat = (self.cat_size > 0) & ~self.leaf
        self.value = np.asarray(forest["value"], np.float64)

    def cat_set(self, k) -> np.ndarray:
        return self.cat_values[self.cat_start[k]:self.cat_start[k + 1]]

    def preorder(self, first, second) -> np.ndarray:
        """Reachable nodes, tree after tree, each tree in depth-first preorder visiting
        ``first[k]`` before ``second[k]`` (global child arrays, -1 at leaves)."""
        n = self.feature.shape[0]
        levels = []
        frontier = self.offsets[:-1]
        seen = np.zeros(n, bool)
        while frontier.size:
            if seen[frontier].any():
                raise ValueError("The forest's child links do not form trees.")
            seen[frontier] = True
            levels.append(frontier)
            inner = frontier[~self.leaf[frontier]]
            frontier = np.concatenate([first[inner], second[inner]])
        size = np.ones(n, np.int64)
        for level in reversed(levels):
            inner = level[~self.leaf[level]]
            size[inner] = 1 + size[first[inner]] + size[second[inner]]
        pre = np.zeros(n, np.int64)
        for level in levels:
            inner = level[~self.leaf[level]]
            pre[first[inner]] = pre[inner] + 1
            pre[second[inner]] = pre[inner] + 1 + size[first[inner]]
        nodes = np.flatnonzero(seen)
        return nodes[np.argsort(self.offsets[self.tree[nodes]] + pre[nodes], kind="stable")]


def _leaf_columns(lay: _Layout, kind: str, n_targets: int):
    """(per-leaf weights (n_nodes, V), target of column v of tree t: fn) for the tree op.

    ``kind="mean"``: ``V`` = the forest's value columns (class probabilities or
    one mean), column ``v`` adds to target ``v``. ``kind="boost"``: one column;
    tree ``t`` adds to target ``t % n_targets``.
    """
    if kind == "boost":
        return lay.value[:, :1], lambda t, v: t % n_targets
    return lay.value, lambda t, v: np.full_like(t, v)


def _tree_ensemble_v5(lay: _Layout, kind, n_targets, np_dtype, x_name, out_name):
    """One ``ai.onnx.ml`` ``TreeEnsemble`` node (SUM, no post transform)."""
    from onnx import helper, numpy_helper

    weights, target_of = _leaf_columns(lay, kind, n_targets)
    n_cols = weights.shape[1]
    # True branch: left child for numeric splits; for categorical ones the side the
    # set goes to (left unless missing_left), the false branch taking the rest.
    swap = lay.is_cat & lay.missing_left
    true_child = np.where(swap, lay.right, lay.left)
    false_child = np.where(swap, lay.left, lay.right)
    order = lay.preorder(true_child, false_child)
    is_leaf = lay.leaf[order]
    inner, leaves = order[~is_leaf], order[is_leaf]
    single = lay.tree[leaves][lay.offsets[lay.tree[leaves]] == leaves]   # root-only trees
    # Interior node ids: the tree's nodes in preorder, one dummy root per root-only tree.
    pos = np.full(lay.feature.shape[0], -1, np.int64)
    trees_inner = np.concatenate([lay.tree[inner], single])
    by_tree = np.argsort(trees_inner, kind="stable")
    inner_all = np.concatenate([inner, -1 - single])[by_tree]    # < 0: dummy of tree -1-v
    real = inner_all >= 0
    pos[inner_all[real]] = np.flatnonzero(real)
    leaf_pos = np.full(lay.feature.shape[0], -1, np.int64)
    leaf_pos[leaves] = np.arange(leaves.size)
    n_inner, n_leaves = inner_all.size, leaves.size

    node = np.where(real, inner_all, 0)
    dummy_leaf = np.zeros(n_inner, np.int64)
    dummy_leaf[~real] = leaf_pos[lay.offsets[-1 - inner_all[~real]]]

    def child(arr):
        c = arr[node]
        c_leaf = np.where(real, lay.leaf[np.maximum(c, 0)], True)
        idx = np.where(c_leaf, leaf_pos[np.maximum(c, 0)], pos[np.maximum(c, 0)])
        return np.where(real, idx, dummy_leaf), c_leaf.astype(np.int64)

    t_ids, t_leaf = child(true_child)
    f_ids, f_leaf = child(false_child)
    cat = real & lay.is_cat[node]
    feat = np.where(real, lay.feature[node], 0)
    modes = np.where(cat, _BRANCH_MEMBER, _BRANCH_LEQ).astype(np.uint8)
    thr = np.where(real & ~cat, lay.threshold[node], 0.0)
    splits = thr if np_dtype == np.float64 else _round_down_f32(thr)
    mtt = np.where(real & ~cat, lay.missing_left[node], False).astype(np.int64)
    members = []
    for k in node[cat]:
        members.append(lay.cat_set(k))
        members.append([np.nan])
    members = np.concatenate(members).astype(np.float64) if members else None
    if members is not None and np_dtype == np.float32:
        finite = members[~np.isnan(members)]
        if finite.size and finite.max() >= _MAX_CAT32:
            raise ValueError(
                f"A categorical split uses category {finite.max():g}, which float32 cannot "
                f"hold exactly (categories must be below {_MAX_CAT32}); export with "
                "dtype=np.float64 or re-encode the categories as 0..k-1.")
    roots = np.flatnonzero(np.r_[True, np.diff(trees_inner[by_tree]) != 0])
    tree_of_leaf = lay.tree[leaves]

    # Copy v of the ensemble carries value column v (one copy unless mean-of-classes).
    def tile(a, step):
        return np.concatenate([a + v * step for v in range(n_cols)])

    attrs = dict(
        n_targets=int(n_targets), aggregate_function=1, post_transform=0,
        tree_roots=tile(roots, n_inner).tolist(),
        nodes_featureids=np.tile(feat, n_cols).tolist(),
        nodes_modes=numpy_helper.from_array(np.tile(modes, n_cols), "nodes_modes"),
        nodes_splits=numpy_helper.from_array(np.tile(splits, n_cols).astype(np_dtype),
                                             "nodes_splits"),
        nodes_truenodeids=np.concatenate(
            [np.where(t_leaf == 1, t_ids + v * n_leaves, t_ids + v * n_inner)
             for v in range(n_cols)]).tolist(),
        nodes_trueleafs=np.tile(t_leaf, n_cols).tolist(),
        nodes_falsenodeids=np.concatenate(
            [np.where(f_leaf == 1, f_ids + v * n_leaves, f_ids + v * n_inner)
             for v in range(n_cols)]).tolist(),
        nodes_falseleafs=np.tile(f_leaf, n_cols).tolist(),
        nodes_missing_value_tracks_true=np.tile(mtt, n_cols).tolist(),
        leaf_targetids=np.concatenate(
            [target_of(tree_of_leaf, v) for v in range(n_cols)]).astype(np.int64).tolist(),
        leaf_weights=numpy_helper.from_array(
            np.concatenate([weights[leaves, v] for v in range(n_cols)]).astype(np_dtype),
            "leaf_weights"),
    )
    if members is not None:
        attrs["membership_values"] = numpy_helper.from_array(
            np.tile(members, n_cols).astype(np_dtype), "membership_values")
    return helper.make_node("TreeEnsemble", [x_name], [out_name], domain="ai.onnx.ml",
                            name="trees", **attrs)


def _tree_ensemble_v3(lay: _Layout, kind, n_targets, np_dtype, base_values, x_name,
                      out_name):
    """One ``ai.onnx.ml`` opset 3 ``TreeEnsembleRegressor`` node (float32 output)."""
    from onnx import helper, numpy_helper

    if lay.is_cat.any():
        k = int(np.flatnonzero(lay.is_cat)[0])
        raise ValueError(
            f"Tree {int(lay.tree[k])} splits feature {int(lay.feature[k])} by a set of "
            "categories; ai.onnx.ml opset 3's tree operators cannot express set splits. "
            "Export with ml_opset=5 (the TreeEnsemble operator, BRANCH_MEMBER nodes).")
    weights, target_of = _leaf_columns(lay, kind, n_targets)
    local = np.arange(lay.feature.shape[0]) - lay.offsets[lay.tree]
    leaf = lay.leaf
    thr = np.where(leaf, 0.0, lay.threshold)
    leaves = np.flatnonzero(leaf)
    n_cols = weights.shape[1]
    attrs = dict(
        n_targets=int(n_targets), post_transform="NONE",
        aggregate_function="AVERAGE" if kind == "mean" else "SUM",
        nodes_treeids=lay.tree.tolist(), nodes_nodeids=local.tolist(),
        nodes_featureids=np.where(leaf, 0, lay.feature).tolist(),
        nodes_modes=["LEAF" if lf else "BRANCH_LEQ" for lf in leaf],
        nodes_truenodeids=np.where(leaf, 0, lay.left - lay.offsets[lay.tree]).tolist(),
        nodes_falsenodeids=np.where(leaf, 0, lay.right - lay.offsets[lay.tree]).tolist(),
        nodes_missing_value_tracks_true=np.where(leaf, 0, lay.missing_left).astype(int).tolist(),
        target_treeids=np.repeat(lay.tree[leaves], n_cols).tolist(),
        target_nodeids=np.repeat(local[leaves], n_cols).tolist(),
        target_ids=np.stack([target_of(lay.tree[leaves], v) for v in range(n_cols)],
                            axis=1).ravel().astype(np.int64).tolist(),
    )
    w = weights[leaves].ravel()
    if np_dtype == np.float64:
        attrs["nodes_values_as_tensor"] = numpy_helper.from_array(thr, "nodes_values")
        attrs["target_weights_as_tensor"] = numpy_helper.from_array(w, "target_weights")
        if base_values is not None:
            attrs["base_values_as_tensor"] = numpy_helper.from_array(
                np.asarray(base_values, np.float64), "base_values")
    else:
        attrs["nodes_values"] = _round_down_f32(thr).tolist()
        attrs["target_weights"] = w.astype(np.float32).tolist()
        if base_values is not None:
            attrs["base_values"] = np.asarray(base_values, np.float32).tolist()
    return helper.make_node("TreeEnsembleRegressor", [x_name], [out_name],
                            domain="ai.onnx.ml", name="trees", **attrs)


def _categories_or_nan(lay: _Layout, n_features, np_dtype, nodes, inits) -> str:
    """Graph nodes giving ``X`` with NaN in categorical columns where a value cannot be
    one of the column's categories (negative, not an integer, above the largest).

    shardlearn sends such values, like unseen categories, to the missing side of
    a categorical split, which is where NaN goes. onnxruntime's ``BRANCH_MEMBER``
    is exact on integers and NaN but truncates other values (2.5 can count as 2),
    so they are made NaN first. Returns the name of the cleaned input.
    """
    from onnx import helper, numpy_helper

    cat_feats = np.unique(lay.feature[lay.is_cat])
    num_feats = np.unique(lay.feature[~lay.leaf & ~lay.is_cat])
    both = np.intersect1d(cat_feats, num_feats)
    if both.size:
        raise ValueError(f"Feature {int(both[0])} has both categorical and numeric splits; "
                         "the ONNX export cannot express that.")
    mask = np.zeros((1, n_features), bool)
    mask[0, cat_feats] = True
    top = np.full((1, n_features), np.inf)
    for f in cat_feats:
        ks = np.flatnonzero(lay.is_cat & (lay.feature == f))
        top[0, f] = max(lay.cat_set(k).max() for k in ks)
    for name, value in (("cat_columns", mask), ("cat_max", top.astype(np_dtype)),
                        ("zero", np.zeros((), np_dtype)), ("nan", np.full((), np.nan, np_dtype))):
        inits.append(numpy_helper.from_array(value, name))
    mk = helper.make_node
    nodes += [
        mk("Floor", ["X"], ["x_floor"]),
        mk("Equal", ["X", "x_floor"], ["x_is_int"]),
        mk("Not", ["x_is_int"], ["x_not_int"]),
        mk("Less", ["X", "zero"], ["x_negative"]),
        mk("Greater", ["X", "cat_max"], ["x_above"]),
        mk("Or", ["x_not_int", "x_negative"], ["x_bad0"]),
        mk("Or", ["x_bad0", "x_above"], ["x_bad1"]),
        mk("And", ["x_bad1", "cat_columns"], ["x_not_category"]),
        mk("Where", ["x_not_category", "nan", "X"], ["X_categories"], name="not_a_category_as_nan"),
    ]
    return "X_categories"


def _label_tensor(classes):
    """(numpy array for the Gather constant, onnx element type) of ``classes``."""
    from onnx import TensorProto

    c = np.asarray(classes)
    if c.dtype.kind in "US" or (c.dtype.kind == "O" and all(isinstance(v, str) for v in c)):
        return np.array([str(v) for v in c], dtype=object), TensorProto.STRING
    if c.dtype.kind == "O":
        try:
            c = c.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "ONNX labels must be integers, floats or strings; the classes are "
                f"{classes[:5]!r}...") from None
    if c.dtype.kind in "biu" or (c.dtype.kind == "f" and np.all(c == np.round(c))
                                 and np.all(np.abs(c) < 2.0 ** 63)):
        return c.astype(np.int64), TensorProto.INT64
    if c.dtype.kind == "f":
        return c.astype(np.float64), TensorProto.DOUBLE
    raise ValueError(f"ONNX labels must be integers, floats or strings; classes_ has dtype "
                     f"{c.dtype}.")


def forest_to_onnx(forest, *, n_features: int, kind: str, classes=None, baseline=None,
                   dtype=np.float64, ml_opset: int = 5, name: str = "shardlearn",
                   feature_names=None, producer_version: str = ""):
    """An ``onnx.ModelProto`` predicting as the packed ``forest`` does.

    Parameters
    ----------
    forest : dict of ndarray
        Packed trees (:func:`.model.pack_forest`).
    n_features : int
    kind : {"mean", "boost"}
        ``"mean"``: the prediction is the mean over trees of the leaf values
        (class probabilities or a mean target; a single tree is a forest of one).
        ``"boost"``: raw scores ``baseline + sum of leaf values``, tree ``t``
        adding to score ``t % len(baseline)``; classifiers apply the sigmoid (one
        score) or the softmax.
    classes : ndarray or None
        The classes (classifier) or None (regressor).
    baseline : array-like or None
        The boosting baseline (one value per score).
    dtype : np.float64 or np.float32
        Type of the input, thresholds, leaf values and (``ml_opset=5``) outputs.
    ml_opset : {5, 3}
        ``ai.onnx.ml`` opset: 5 uses ``TreeEnsemble`` (categorical splits, outputs
        of ``dtype``); 3 uses ``TreeEnsembleRegressor`` (float32 outputs; no
        categorical splits).
    name, feature_names, producer_version :
        Graph name, the column names (recorded in ``metadata_props``), and the
        version recorded as the producer's.
    """
    import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    np_dtype = np.dtype(dtype).type
    if np_dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be np.float64 or np.float32, got {dtype!r}.")
    if ml_opset not in _OPSETS:
        raise ValueError(f"ml_opset must be 5 (TreeEnsemble) or 3 (TreeEnsembleRegressor), "
                         f"got {ml_opset!r}.")
    if kind not in ("mean", "boost"):
        raise ValueError(f"kind must be 'mean' or 'boost', got {kind!r}.")
    lay = _Layout(forest)
    classifier = classes is not None
    if kind == "boost":
        base = np.asarray(baseline, np.float64).ravel()
        n_targets = base.size
    else:
        base = None
        n_targets = lay.value.shape[1]
    if classifier and kind == "mean" and n_targets != len(classes):
        raise ValueError(f"The forest's leaves hold {n_targets} values, not one per class "
                         f"({len(classes)} classes).")
    elem = TensorProto.DOUBLE if np_dtype == np.float64 else TensorProto.FLOAT
    # Scores come out of the tree operator in the export dtype (ml_opset 5) or float32.
    s_dtype, s_elem = (np_dtype, elem) if ml_opset == 5 else (np.float32, TensorProto.FLOAT)

    nodes, inits = [], []

    def const(cname, value, dt=None):
        inits.append(numpy_helper.from_array(np.asarray(value, dt or s_dtype), cname))
        return cname

    score_out = "scores" if classifier else "variable"
    if ml_opset == 5:
        x_in = _categories_or_nan(lay, n_features, np_dtype, nodes, inits) if lay.is_cat.any() \
            else "X"
        nodes.append(_tree_ensemble_v5(lay, kind, n_targets, np_dtype, x_in, "tree_sums"))
        if kind == "mean" and lay.n_trees > 1:
            nodes.append(helper.make_node("Div", ["tree_sums", const("n_trees", lay.n_trees)],
                                          [score_out], name="mean_over_trees"))
        elif kind == "boost":
            nodes.append(helper.make_node("Add", ["tree_sums", const("baseline", base)],
                                          [score_out], name="add_baseline"))
        else:
            nodes.append(helper.make_node("Identity", ["tree_sums"], [score_out]))
    else:
        nodes.append(_tree_ensemble_v3(lay, kind, n_targets, np_dtype, base, "X",
                                       score_out))

    outputs = []
    if classifier:
        n_classes = len(classes)
        if kind == "boost" and n_targets == 1:
            nodes.append(helper.make_node("Sigmoid", ["scores"], ["p1"], name="logistic"))
            nodes.append(helper.make_node("Sub", [const("one", 1.0), "p1"], ["p0"]))
            nodes.append(helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1))
        elif kind == "boost":
            nodes.append(helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1,
                                          name="softmax"))
        else:
            nodes.append(helper.make_node("Identity", ["scores"], ["probabilities"]))
        labels, l_elem = _label_tensor(classes)
        if l_elem == TensorProto.STRING:
            inits.append(helper.make_tensor("classes", TensorProto.STRING, [n_classes],
                                            [s.encode("utf-8") for s in labels]))
        else:
            inits.append(numpy_helper.from_array(labels, "classes"))
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["class_index"], axis=1,
                                      keepdims=0, select_last_index=0))
        nodes.append(helper.make_node("Gather", ["classes", "class_index"], ["label"], axis=0))
        outputs = [helper.make_tensor_value_info("label", l_elem, [None]),
                   helper.make_tensor_value_info("probabilities", s_elem, [None, n_classes])]
    else:
        outputs = [helper.make_tensor_value_info("variable", s_elem, [None, n_targets])]

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("X", elem, [None, int(n_features)])],
        outputs, initializer=inits)
    opset, ir = _OPSETS[ml_opset]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("ai.onnx.ml", ml_opset)])
    model.ir_version = ir
    model.producer_name = "shardlearn"
    model.producer_version = str(producer_version)
    model.doc_string = (f"{name}: {lay.n_trees} trees; input X ({np.dtype(np_dtype).name}, "
                        f"N x {n_features}); outputs "
                        + ("label, probabilities" if classifier else "variable") + ".")
    meta = {"estimator": name, "n_features": str(int(n_features))}
    if feature_names is not None:
        meta["feature_names"] = json.dumps([str(f) for f in feature_names])
    helper.set_model_props(model, meta)
    return model
