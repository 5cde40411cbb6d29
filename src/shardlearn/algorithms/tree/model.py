"""Fitted trees as flat arrays, and their prediction on the driver (numba traversal).

A *forest* is a dict of arrays (saved as-is, no pickle): node arrays of all trees
concatenated, and ``offsets`` (n_trees + 1) giving each tree's first node. Child
indices are local to their tree; leaves have ``feature == -1``.

Categorical splits: ``cat_size[k]`` (> 0 only at a categorical split node) counts
the raw category values going left, stored sorted in ``cat_values`` (node after
node, so each node's run starts at the cumulative sum of the previous sizes). At
such a node ``threshold`` is NaN and ``missing_left`` is 0: a value in the set
goes left; NaN, categories unseen in training (or absent from the node) and
values that are not non-negative integers go right, with the missing values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import _kernels as K

FOREST_KEYS = ("offsets", "feature", "threshold", "missing_left", "left", "right", "value",
               "n_samples", "gain", "depth", "cat_size", "cat_values")


def pack_forest(trees, values) -> dict:
    """Concatenate TreeBuilds; ``values[t]`` is the (n_nodes_t, V) output of tree t."""
    offsets = np.zeros(len(trees) + 1, np.int64)
    offsets[1:] = np.cumsum([t.n_nodes for t in trees])
    cat = lambda key, dt: np.concatenate([np.asarray(getattr(t, key), dtype=dt) for t in trees])  # noqa: E731
    cat_size = []
    for t in trees:
        size = np.zeros(t.n_nodes, np.int32)
        for v, vals in t.cat_values.items():
            size[v] = len(vals)
        cat_size.append(size)
    cat_values = [np.asarray(t.cat_values[v], np.float64) for t in trees
                  for v in sorted(t.cat_values)]
    return {
        "offsets": offsets,
        "feature": cat("feature", np.int32),
        "threshold": cat("threshold", np.float64),
        "missing_left": cat("missing_left", np.uint8),
        "left": cat("left", np.int32),
        "right": cat("right", np.int32),
        "value": np.ascontiguousarray(np.concatenate(values), dtype=np.float64),
        "n_samples": np.concatenate([[s[-1] for s in t.stats] for t in trees]).astype(np.float64),
        "gain": cat("gain", np.float64),
        "depth": cat("depth", np.int32),
        "cat_size": np.concatenate(cat_size),
        "cat_values": np.concatenate([np.empty(0)] + cat_values),
    }


def check_forest(forest, n_features: int) -> None:
    """Raise ``ValueError`` unless ``forest`` is a well-formed forest of ``n_features``
    inputs: the traversal kernels index with its arrays unchecked, so a damaged file
    would read outside them."""
    if not isinstance(forest, dict):
        raise ValueError("forest_ is not a dict of arrays.")
    missing = [k for k in FOREST_KEYS[:8] if k not in forest]
    if missing:
        raise ValueError(f"forest_ lacks the arrays {missing}.")
    kinds = {"offsets": "iu", "feature": "iu", "left": "iu", "right": "iu", "threshold": "f",
             "value": "f", "missing_left": "biu", "cat_size": "iu", "cat_values": "f"}
    for k, allowed in kinds.items():
        if k in forest and np.asarray(forest[k]).dtype.kind not in allowed:
            raise ValueError(f"forest_[{k!r}] has dtype {np.asarray(forest[k]).dtype}.")
    if np.asarray(forest["value"]).ndim != 2:
        raise ValueError("forest_['value'] is not a 2-D array (nodes x outputs).")
    offs = np.asarray(forest["offsets"])
    if offs.ndim != 1 or offs.size < 1 or offs[0] != 0 or (np.diff(offs) < 1).any():
        raise ValueError("forest_['offsets'] is not an increasing list of tree starts from 0.")
    n = int(offs[-1])
    for k in FOREST_KEYS[1:]:
        if k in forest and k != "cat_values" and np.asarray(forest[k]).shape[:1] != (n,):
            raise ValueError(f"forest_[{k!r}] has {np.asarray(forest[k]).shape[:1]} rows "
                             f"where the trees have {n} nodes.")
    feature = np.asarray(forest["feature"])
    if ((feature < -1) | (feature >= n_features)).any():
        raise ValueError(f"forest_ splits on a feature outside 0..{n_features - 1}.")
    size = np.repeat(np.diff(offs), np.diff(offs))          # each node's tree size
    local = np.arange(n) - np.repeat(offs[:-1], np.diff(offs))
    inner = feature >= 0
    for side in ("left", "right"):
        child = np.asarray(forest[side])[inner]
        # Children come after their parent within its tree: no cycles, no way out.
        if ((child <= local[inner]) | (child >= size[inner])).any():
            raise ValueError(f"forest_[{side!r}] links a node outside its tree.")
    cat_size = np.asarray(forest.get("cat_size", np.zeros(n, np.int32)))
    cat_values = np.asarray(forest.get("cat_values", np.empty(0)))
    if (cat_size < 0).any() or int(cat_size.sum()) != cat_values.shape[0]:
        raise ValueError("forest_['cat_size'] does not add up to forest_['cat_values'].")


def concat_forests(forests) -> dict:
    """Join forests grown in separate batches into one."""
    if len(forests) == 1:
        return forests[0]
    out = {k: np.concatenate([f[k] for f in forests]) for k in FOREST_KEYS
           if k != "offsets" and k in forests[0]}
    sizes = [np.diff(f["offsets"]) for f in forests]
    offs = np.zeros(sum(len(s) for s in sizes) + 1, np.int64)
    offs[1:] = np.cumsum(np.concatenate(sizes))
    out["offsets"] = offs
    return out


def n_trees(forest) -> int:
    return len(forest["offsets"]) - 1


def leaves(forest, X) -> np.ndarray:
    """(n_samples, n_trees) local leaf index of every row in every tree."""
    if sp.issparse(X):          # densified a block of rows at a time
        X = sp.csr_matrix(X)
        blocks = [leaves(forest, X[a:a + PREDICT_ROWS].toarray())
                  for a in range(0, X.shape[0], PREDICT_ROWS)]
        return (np.concatenate(blocks) if blocks
                else np.empty((0, n_trees(forest)), np.int32))
    X = np.ascontiguousarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], n_trees(forest)), np.int32)
    size = forest.get("cat_size")
    if size is None:            # a forest saved before categorical splits existed
        size = np.zeros(forest["feature"].shape[0], np.int32)
    values = np.ascontiguousarray(forest.get("cat_values", np.empty(0)), dtype=np.float64)
    start = np.zeros(size.shape[0], np.int64)
    np.cumsum(size[:-1], out=start[1:])
    row, bitmap = _category_bitmaps(size, values)
    K.forest_leaves(X, forest["feature"], forest["threshold"], forest["missing_left"],
                    forest["left"], forest["right"], forest["offsets"], start,
                    np.ascontiguousarray(size, dtype=np.int32), values, row, bitmap, out)
    return out


#: Largest category value (+1) for which prediction uses per-node bitmaps.
BITMAP_CATEGORIES = 1 << 14


def _category_bitmaps(size, values):
    """Per categorical node a bitmap of its set (``(row per node, bitmaps)``), or an
    empty table (binary search instead) when categories reach ``BITMAP_CATEGORIES``."""
    row = np.full(size.shape[0], -1, np.int32)
    if values.size == 0 or values.max() >= BITMAP_CATEGORIES:
        return row, np.zeros((1, 0), np.uint64)
    nodes = np.flatnonzero(size)
    row[nodes] = np.arange(nodes.size, dtype=np.int32)
    words = int(values.max()) // 64 + 1
    bitmap = np.zeros((nodes.size, words), np.uint64)
    r = np.repeat(np.arange(nodes.size), size[nodes])
    c = values.astype(np.int64)
    np.bitwise_or.at(bitmap, (r, c >> 6), np.left_shift(np.uint64(1), (c & 63).astype(np.uint64)))
    return row, bitmap


def leaf_outputs(forest, X) -> np.ndarray:
    """(n_samples, n_trees, V) output of the leaf each row reaches in each tree."""
    lv = leaves(forest, X)
    glob = lv + forest["offsets"][:-1][None, :]
    return forest["value"][glob]


#: Rows predicted at a time by :func:`reduced_outputs`: the (rows, trees, outputs)
#: temporaries stay small (a 400-tree 4-class model predicting 100,000 rows at once
#: peaked at 763 MiB for a 3 MiB answer).
PREDICT_ROWS = 16384


def reduced_outputs(forest, X, reduce, width: int) -> np.ndarray:
    """``reduce(leaf_outputs(forest, rows))`` (-> (rows, width)) over blocks of rows of
    ``X`` (dense or sparse: only a block is densified). Each row's answer depends on
    that row alone, so it is the same whatever the block size."""
    n = X.shape[0]
    out = np.empty((n, width))
    for a in range(0, n, PREDICT_ROWS):
        b = min(n, a + PREDICT_ROWS)
        out[a:b] = reduce(leaf_outputs(forest, X[a:b]))
    return out


def feature_importances(forest, n_features, per_tree_normalise=True, tree_slice=None):
    """Total split gain per feature, normalised to sum to one (0s if no split).

    ``per_tree_normalise``: normalise each tree's importances first and average
    (scikit-learn's forests); otherwise sum raw gains (boosting).
    """
    offs = forest["offsets"]
    T = len(offs) - 1
    total = np.zeros(n_features)
    for t in range(T) if tree_slice is None else tree_slice:
        a, b = offs[t], offs[t + 1]
        f = forest["feature"][a:b]
        m = f >= 0
        imp = np.bincount(f[m], weights=forest["gain"][a:b][m], minlength=n_features)
        if per_tree_normalise:
            s = imp.sum()
            if s > 0:
                imp = imp / s
        total += imp
    s = total.sum()
    return total / s if s > 0 else total
