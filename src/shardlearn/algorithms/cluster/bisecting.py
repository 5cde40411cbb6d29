"""Functional core of distributed bisecting k-means (divisive hierarchical clustering).

The coordinator keeps the tree of splits; every worker keeps, for each row of
its shards, the tree node the row sits in. A *level* splits a batch of leaves
at once: every pass over the data runs the 2-means of all of them (and of all
``n_init`` trials), each row touching only the two centres of its own leaf.

Which leaves are split follows scikit-learn's sequential rule exactly: repeatedly
split the leaf with the highest score (its SSE for ``"biggest_inertia"``, its
row count for ``"largest_cluster"``; ties to the first leaf in depth-first
order). Splits are computed level by level for the best remaining leaves
(as many as splits are still needed) and *committed* in that greedy order; a
computed split whose leaf is never chosen is simply not committed (at most one
level's worth of extra work). A leaf's split depends only on its rows and on
the random draws of the level that computes it (keyed by seed, level and
shard), so the result is the same on any engine and worker count.

Worker state is self-healing: a kernel that finds the row->node map older than
the tree it is given (or missing, when a shard moved to a new worker) moves
the rows down the tree first; per-trial labels (used to count label changes)
are recomputed from the previous centres when their tag does not match.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from ...comm.reduce import ordered_reduce
from ...progress import progress_bar
from ...runtime import Coordinator, FitReport
from . import _blocks as B
from . import _loops as L
from .kmeans import tolerance

PHASE_FIRST, PHASE_SECOND = 10, 11


# -- worker kernels ------------------------------------------------------------------------
def prepare(shard, state, offsets):
    """Cache weights (and row norms for CSR); every row starts at the root (node 0)."""
    X = shard.X
    mean, _, xn, m2 = B.moments(X)
    w = np.ascontiguousarray(shard.weights(), dtype=np.float64)
    state.clear()
    state.update(w=w, xn=xn if sp.issparse(X) else None, offset=int(offsets[shard.index]),
                 node=np.zeros(shard.n_rows, dtype=np.int32), tree_version=0)
    wx = np.asarray(X.T @ w, dtype=np.float64).ravel()
    return float(shard.n_rows), mean, m2, float(w.sum()), wx


def _merge_prepare(a, b):
    return B.merge_moments(a[:4], b[:4]) + (a[4] + b[4],)


def _ensure_tree(shard, state, tree):
    """Move rows down to the deepest computed node of ``tree = (children, centres, version)``."""
    children, centers, version = tree
    if state["tree_version"] == version:
        return
    X, node = shard.X, state["node"]
    n, d = X.shape
    cnorm = L.sq_norms(centers) if sp.issparse(X) else None
    for a, e in B.chunks(n, d):
        Xc = B.block(X, a, e)
        if sp.issparse(Xc):
            L.descend_csr(Xc.indptr, Xc.indices, Xc.data, state["xn"][a:e], node[a:e], children,
                          centers, cnorm)
        else:
            L.descend_dense(Xc, node[a:e], children, centers)
    state["tree_version"] = version


def _pass(shard, state, slot_of_node, C, active, update):
    """Run every active (slot, trial) 2-means over the shard; see :func:`_loops.bisect_dense`."""
    X, w, node, lab = shard.X, state["w"], state["node"], state["lab"]
    n, d = X.shape
    S, T = active.shape
    sums = np.zeros((S, T, 2, d if update else 1))
    wsum = np.zeros((S, T, 2))
    count = np.zeros((S, T, 2), dtype=np.int64)
    inertia = np.zeros((S, T, 2))
    changed = np.zeros((S, T), dtype=np.int64)
    fdist = np.full((S, T), -1.0)
    fidx = np.full((S, T), -1, dtype=np.int64)
    for a, e in B.chunks(n, d):
        Xc = B.block(X, a, e)
        if sp.issparse(Xc):
            L.bisect_csr(Xc.indptr, Xc.indices, Xc.data, state["xn"][a:e], node[a:e], slot_of_node,
                         C, active, w[a:e], lab[a:e], sums, wsum, count, inertia, changed, fdist,
                         fidx, update, a)
        else:
            L.bisect_dense(Xc, node[a:e], slot_of_node, C, active, w[a:e], lab[a:e], sums, wsum,
                           count, inertia, changed, fdist, fidx, update, a)
    return sums, wsum, count, inertia, changed, fdist, fidx


def _ensure_lab(shard, state, slot_of_node, active, tag, C):
    """Per-trial labels of the rows in the slots: the assignment to ``C`` (-1 when None)."""
    T = active.shape[1]
    lab = state.get("lab")
    if lab is None or lab.shape[1] != T:
        state["lab"] = lab = np.full((shard.n_rows, T), -1, dtype=np.int8)
        state["lab_tag"] = None
    if state.get("lab_tag") == tag:
        return
    if C is None:
        lab.fill(-1)
    else:
        _pass(shard, state, slot_of_node, C, active, False)
    state["lab_tag"] = tag


def lloyd_step(shard, state, tree, slot_of_node, C, active, tag, prev_tag, C_prev):
    """One Lloyd pass of all active 2-means problems on this shard.

    Returns ``(sums, weights, counts, inertia, changed, far)``; ``far`` is each
    problem's farthest positive-weight row as (distance, global index, row,
    weight, child) arrays.
    """
    _ensure_tree(shard, state, tree)
    _ensure_lab(shard, state, slot_of_node, active, prev_tag, C_prev)
    sums, wsum, count, inertia, changed, fdist, fidx = _pass(shard, state, slot_of_node, C,
                                                             active, True)
    state["lab_tag"] = tag
    S, T = active.shape
    rows = np.zeros((S, T, shard.n_features))
    fw = np.zeros((S, T))
    flab = np.zeros((S, T), dtype=np.int64)
    has = fidx >= 0
    if has.any():
        s_, t_ = np.nonzero(has)
        li = fidx[has]
        rows[has] = B.rows_dense(shard.X, li)
        fw[has] = state["w"][li]
        flab[has] = state["lab"][li, t_]
    gidx = np.where(has, fidx + state["offset"], -1)
    return sums, wsum, count, inertia, changed, (fdist, gidx, rows, fw, flab)


def finish(shard, state, tree, slot_of_node, C):
    """Final E-step of every problem: per child ``(weights, counts, inertia)``."""
    _ensure_tree(shard, state, tree)
    active = np.ones(C.shape[:2], dtype=bool)
    _ensure_lab(shard, state, slot_of_node, active, None, None)
    _, wsum, count, inertia, _, _, _ = _pass(shard, state, slot_of_node, C, active, False)
    state["lab_tag"] = None
    return wsum, count, inertia


def sample_centers(shard, state, tree, slot_of_node, n_trials, seed, phase, level, C0):
    """Per (slot, trial), this shard's two best rows of a weighted sample (ES keys).

    Weights are the row weights, or ``w * d^2(x, C0[slot, trial])`` when ``C0``
    is given (the second k-means++ centre). Returns ``(keys, global_idx, rows)``
    of shapes (S, T, 2), (S, T, 2), (S, T, 2, d).
    """
    _ensure_tree(shard, state, tree)
    X, w, node = shard.X, state["w"], state["node"]
    n, d = X.shape
    S = int(slot_of_node.max()) + 1
    if C0 is None:
        omega = np.repeat(w[:, None], n_trials, axis=1)
    else:
        dist = np.zeros((n, n_trials))
        for a, e in B.chunks(n, d):
            Xc = B.block(X, a, e)
            if sp.issparse(Xc):
                L.bisect_first_dist_csr(Xc.indptr, Xc.indices, Xc.data, state["xn"][a:e], node[a:e],
                                        slot_of_node, C0, dist[a:e])
            else:
                L.bisect_first_dist_dense(Xc, node[a:e], slot_of_node, C0, dist[a:e])
        omega = w[:, None] * dist
    rng = np.random.default_rng([int(seed), int(phase), int(level), int(shard.index)])
    u = 1.0 - rng.random((n, n_trials))
    keys = np.full((n, n_trials), -np.inf)
    pos = omega > 0
    keys[pos] = np.log(u[pos]) / omega[pos]
    best_key = np.full((S, n_trials, 2), -np.inf)
    best_idx = np.full((S, n_trials, 2), -1, dtype=np.int64)
    L.top2_per_problem(node, slot_of_node, keys, best_key, best_idx, state["offset"])
    rows = np.zeros((S, n_trials, 2, d))
    has = best_idx >= 0
    if has.any():
        rows[has] = B.rows_dense(X, best_idx[has] - state["offset"])
    return best_key, best_idx, rows


def potentials(shard, state, tree, slot_of_node, C0, cands):
    """k-means++ greedy step: ``sum w min(d^2(x, C0), d^2(x, cand_q))`` per (slot, trial, q)."""
    _ensure_tree(shard, state, tree)
    X, w, node = shard.X, state["w"], state["node"]
    n, d = X.shape
    S, T = C0.shape[:2]
    slot = slot_of_node[node]
    inside = slot >= 0
    out = np.zeros((S, T, 2))
    dists = []
    for C in (C0, cands[:, :, 0], cands[:, :, 1]):
        dist = np.zeros((n, T))
        C = np.ascontiguousarray(C)
        for a, e in B.chunks(n, d):
            Xc = B.block(X, a, e)
            if sp.issparse(Xc):
                L.bisect_first_dist_csr(Xc.indptr, Xc.indices, Xc.data, state["xn"][a:e], node[a:e],
                                        slot_of_node, C, dist[a:e])
            else:
                L.bisect_first_dist_dense(Xc, node[a:e], slot_of_node, C, dist[a:e])
        dists.append(dist)
    for q in range(2):
        m = np.minimum(dists[0], dists[q + 1]) * w[:, None]
        for t in range(T):
            out[:, t, q] = np.bincount(slot[inside], weights=m[inside, t], minlength=S)
    return out


def final_labels(shard, state, tree, label_of_node, centers):
    """Cluster label of every row, and the exact weighted inertia against ``centers``."""
    _ensure_tree(shard, state, tree)
    labels = label_of_node[state["node"]].astype(np.int32)
    inertia = B.assign_inertia(shard.X, state["w"], labels, centers)
    return labels, inertia


# -- coordinator ---------------------------------------------------------------------------
@dataclass
class _Tree:
    """All computed nodes; ``children[v] = (-1, -1)`` until v's split is computed."""

    d: int
    parent: list = field(default_factory=list)
    children: list = field(default_factory=list)
    centers: list = field(default_factory=list)
    sse: list = field(default_factory=list)
    count: list = field(default_factory=list)
    weight: list = field(default_factory=list)
    path: list = field(default_factory=list)
    divisible: list = field(default_factory=list)
    version: int = 0

    def add(self, parent, center, sse, count, weight, path):
        self.parent.append(parent)
        self.children.append((-1, -1))
        self.centers.append(np.asarray(center, dtype=np.float64))
        self.sse.append(float(sse))
        self.count.append(int(count))
        self.weight.append(float(weight))
        self.path.append(path)
        self.divisible.append(int(count) >= 2)
        return len(self.parent) - 1

    def arrays(self):
        return (np.array(self.children, dtype=np.int32).reshape(-1, 2),
                np.array(self.centers, dtype=np.float64).reshape(-1, self.d), self.version)


@dataclass
class BisectFit:
    labels: np.ndarray
    centers: np.ndarray
    inertia: float
    tree: dict
    report: FitReport


def _combine(a, b):
    sums, wsum, count, inertia, changed, far_a = a
    far_b = b[5]
    fd, gi = far_a[0], far_a[1]
    better = (far_b[0] > fd) | ((far_b[0] == fd) & (far_b[1] >= 0) & ((gi < 0) | (far_b[1] < gi)))
    far = tuple(np.where(better if x.ndim == 2 else better[..., None], y, x)
                for x, y in zip(far_a, far_b))
    return (sums + b[0], wsum + b[1], count + b[2], inertia + b[3], changed + b[4], far)


def fit_bisecting_kmeans(dataset, *, n_clusters, init="random", n_init=1, max_iter=300, tol=1e-4,
                         random_state=None, bisecting_strategy="biggest_inertia",
                         estimator="BisectingKMeans", session=None) -> BisectFit:
    """Fit bisecting k-means on a sharded dataset (validated; ``n_clusters <= n_rows``)."""
    t0 = time.perf_counter()
    rs = random_state if isinstance(random_state, np.random.RandomState) else \
        np.random.RandomState(random_state)
    seed = int(rs.randint(np.iinfo(np.int32).max))
    k = n_clusters
    with Coordinator(dataset, session=session, name=estimator) as coord:
        n, _, m2, wtot, wx = ordered_reduce(
            coord.map(prepare, dataset.boundaries, step="prepare", restore=True), _merge_prepare)
        tol_abs = tolerance(n, m2, tol)
        tree = _Tree(dataset.n_features)
        tree.add(-1, wx / wtot, np.inf, n, wtot, ())
        leaves = {0}
        split_order = {}
        history, passes, level = [], 0, 0

        def score(v):
            return tree.sse[v] if bisecting_strategy == "biggest_inertia" else tree.count[v]

        def ranked(nodes):
            return sorted(nodes, key=lambda v: (-score(v), tree.path[v]))

        with progress_bar(f"{estimator} (k={k})", total=k - 1) as bar:
            while len(split_order) < k - 1:
                # Commit computed splits in scikit-learn's greedy order.
                while len(split_order) < k - 1:
                    cand = ranked(v for v in leaves if tree.divisible[v])
                    if not cand or tree.children[cand[0]][0] < 0:
                        break
                    v = cand[0]
                    split_order[v] = len(split_order)
                    leaves.remove(v)
                    leaves.update(tree.children[v])
                    history.append(float(sum(tree.sse[u] for u in leaves)))
                    bar.advance(1)
                if len(split_order) >= k - 1:
                    break
                todo = ranked(v for v in leaves if tree.divisible[v] and tree.children[v][0] < 0)
                todo = todo[: k - 1 - len(split_order)]
                if not todo:
                    warnings.warn(
                        f"BisectingKMeans found only {len(leaves)} clusters that can be split "
                        f"apart, fewer than n_clusters={k} (too few distinct rows).",
                        ConvergenceWarning, stacklevel=3)
                    break
                passes += _split_level(coord, tree, todo, init, n_init, max_iter, tol_abs, seed,
                                       level)
                level += 1
        # Leaves in depth-first order get labels 0..k-1; speculative nodes below a leaf map to it.
        order = sorted(leaves, key=lambda v: tree.path[v])
        label_of_node = np.full(len(tree.parent), -1, dtype=np.int64)
        for lab, v in enumerate(order):
            label_of_node[v] = lab
        for v in range(len(tree.parent)):
            u = v
            while label_of_node[u] < 0 and tree.parent[u] >= 0 and u not in split_order:
                u = tree.parent[u]
            if u not in split_order:
                label_of_node[v] = label_of_node[u]
        centers = np.array([tree.centers[v] for v in order])
        out = coord.map(final_labels, coord.broadcast(tree.arrays()), label_of_node, centers,
                        step="labels")
        labels = np.concatenate([o[0] for o in out])
        inertia = float(ordered_reduce([o[1] for o in out]))
        split_tree = _committed_tree(tree, split_order, order)
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=passes,
            converged=True, objective_history=history,
            extra={"levels": level, "splits_computed": sum(c[0] >= 0 for c in tree.children),
                   "splits_committed": len(split_order), "tol": tol_abs},
        )
    return BisectFit(labels, centers, inertia, split_tree, report)


def _split_level(coord, tree, todo, init, n_init, max_iter, tol, seed, level):
    """Compute the splits of the leaves ``todo`` in shared passes; returns the Lloyd passes."""
    S, T = len(todo), n_init
    slot_of_node = np.full(len(tree.parent), -1, dtype=np.int32)
    slot_of_node[todo] = np.arange(S, dtype=np.int32)
    tree_h = coord.broadcast(tree.arrays())
    C = _init_centers(coord, tree_h, slot_of_node, init, T, seed, level)
    active = np.ones((S, T), dtype=bool)
    C_prev = None
    it = 0
    for it in range(max_iter):
        sums, wsum, _, _, changed, far = ordered_reduce(
            coord.map(lloyd_step, tree_h, slot_of_node, C, active, (level, it), (level, it - 1),
                      C_prev, step="bisect-lloyd"), _combine)
        fdist, _, frows, fw, flab = far
        for s, t, j in zip(*np.nonzero((wsum <= 0) & active[..., None])):
            if fdist[s, t] < 0:
                continue
            old = int(flab[s, t])
            sums[s, t, old] -= fw[s, t] * frows[s, t]
            wsum[s, t, old] -= fw[s, t]
            sums[s, t, j] = fw[s, t] * frows[s, t]
            wsum[s, t, j] = fw[s, t]
        new = C.copy()
        upd = active[..., None] & (wsum > 0)
        new[upd] = sums[upd] / wsum[upd][:, None]
        shift = ((new - C) ** 2).sum(axis=(2, 3))
        done = active & ((changed == 0) | (shift <= tol))
        C_prev, C = C, new
        active = active & ~done
        if not active.any():
            break
    wsum, count, inertia = ordered_reduce(coord.map(finish, tree_h, slot_of_node, C,
                                                    step="bisect-finish"))
    total = inertia.sum(axis=2)
    for s, v in enumerate(todo):
        bt = 0
        for t in range(1, T):
            # As scikit-learn: a later trial wins only if clearly better.
            if total[s, t] < total[s, bt] * (1 - 1e-6):
                bt = t
        # A child may be empty (a leaf of identical rows): kept, as scikit-learn does.
        kids = tuple(tree.add(v, C[s, bt, j], inertia[s, bt, j], count[s, bt, j], wsum[s, bt, j],
                              tree.path[v] + (j,)) for j in range(2))
        tree.children[v] = kids
    tree.version += 1
    return it + 1


def _init_centers(coord, tree_h, slot_of_node, init, T, seed, level):
    parts = coord.map(sample_centers, tree_h, slot_of_node, T, seed, PHASE_FIRST, level, None,
                      step="bisect-init")
    keys, idx, rows = _merge_top2(parts)
    if init == "random":
        # Fewer than two drawable rows: both centres on the one row (the split then fails).
        return np.where((idx[..., 1:2] < 0)[..., None], rows[:, :, :1], rows)
    C0 = np.ascontiguousarray(rows[:, :, 0])
    parts = coord.map(sample_centers, tree_h, slot_of_node, T, seed, PHASE_SECOND, level, C0,
                      step="bisect-init")
    _, idx2, cands = _merge_top2(parts)
    pot = ordered_reduce(coord.map(potentials, tree_h, slot_of_node, C0, cands,
                                   step="bisect-init"))
    pick = np.where((idx2[..., 1] >= 0) & (pot[..., 1] < pot[..., 0]), 1, 0)
    second = np.take_along_axis(cands, pick[..., None, None], axis=2)[:, :, 0]
    second = np.where((idx2[..., 0] < 0)[..., None], C0, second)
    return np.stack([C0, second], axis=2)


def _merge_top2(parts):
    """Global top-2 keys per (slot, trial), ties to the lower row index."""
    keys = np.concatenate([p[0] for p in parts], axis=2)
    idx = np.concatenate([p[1] for p in parts], axis=2)
    rows = np.concatenate([p[2] for p in parts], axis=2)
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(idx < 0, big, idx), -keys), axis=2)[..., :2]
    take = np.take_along_axis
    return (take(keys, order, axis=2), take(idx, order, axis=2),
            take(rows, order[..., None], axis=2))


def _committed_tree(tree, split_order, leaf_order):
    """The committed tree as arrays, nodes renumbered in creation order (root = 0)."""
    keep = sorted({0} | {c for v in split_order for c in tree.children[v]})
    new_id = {v: i for i, v in enumerate(keep)}
    m = len(keep)
    children = np.full((m, 2), -1, dtype=np.int64)
    for v in split_order:
        children[new_id[v]] = [new_id[c] for c in tree.children[v]]
    label = np.full(m, -1, dtype=np.int64)
    for lab, v in enumerate(leaf_order):
        label[new_id[v]] = lab
    order = np.full(m, -1, dtype=np.int64)
    for v, o in split_order.items():
        order[new_id[v]] = o
    return {
        "parent": np.array([new_id.get(tree.parent[v], -1) for v in keep], dtype=np.int64),
        "children": children,
        "centers": np.array([tree.centers[v] for v in keep]),
        "inertia": np.array([tree.sse[v] for v in keep]),
        "n_samples": np.array([tree.count[v] for v in keep], dtype=np.int64),
        "weight": np.array([tree.weight[v] for v in keep]),
        "split_order": order,
        "label": label,
    }
