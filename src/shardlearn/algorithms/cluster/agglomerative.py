"""Functional core of agglomerative (hierarchical) clustering, exact or on micro-clusters.

Exact mode runs scipy's linkage on all rows at the coordinator (data that fits).

Distributed mode summarises every shard on its worker into weighted
micro-clusters (a many-centre k-means of the shard: k-means++ seeding, Lloyd
iterations), returning only centres, row counts and within-cluster sums of
squares; the coordinator runs an exact *weighted* linkage on the summaries and
each worker labels its rows through their micro-cluster (one map).

The weighted linkage treats each micro-cluster as an atom of weight ``w`` (its
row count) at its centre:

* ward: ``d(A, B) = sqrt(2 w_A w_B / (w_A + w_B)) ||c_A - c_B||`` (scipy's
  scale: the increase of the total within-cluster sum of squares is d^2 / 2),
  updated by the weighted Lance-Williams formula, so merges above the
  micro-cluster level are exactly Ward's on the weighted atoms;
* average: size-weighted mean of the atom distances (UPGMA);
* complete / single: largest / smallest atom-to-atom distance.

It runs the nearest-neighbour-chain algorithm (all four linkages are
reducible) on the dense distance matrix of the summaries, then sorts the merges
by height and numbers clusters as scipy does, giving a valid scipy linkage
matrix over the micro-cluster leaves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ...runtime import Coordinator, FitReport, RuntimeReport
from .kmeans import kmeans_plusplus, local_kmeans

LINKAGES = ("ward", "complete", "average", "single")


@dataclass
class AgglomerativeFit:
    labels: np.ndarray
    linkage: np.ndarray
    n_leaves: int
    micro_centers: np.ndarray | None
    micro_counts: np.ndarray | None
    micro_inertia: np.ndarray | None
    report: FitReport


# -- worker kernels ------------------------------------------------------------------------
def micro_clusters(shard, state, n_micro, n_rows, seed, max_iter):
    """Summarise the shard into about ``n_micro * shard_rows / n_rows`` micro-clusters.

    Returns ``(centres, counts, sse)`` of the non-empty micro-clusters and keeps
    each row's micro-cluster (local index) in ``state["micro"]``. Deterministic
    given the shard and the seed (a restore step).
    """
    if sp.issparse(shard.X):
        raise ValueError("AgglomerativeClustering needs dense rows; this shard is sparse.")
    X = np.ascontiguousarray(shard.X, dtype=np.float64)
    n = shard.n_rows
    m = int(min(n, max(1, round(n_micro * n / n_rows))))
    w = np.ones(n)
    if m >= n:
        state["micro"] = np.arange(n, dtype=np.int64)
        return X.copy(), np.ones(n), np.zeros(n)
    rng = np.random.default_rng([int(seed), int(shard.index)])
    C = kmeans_plusplus(X, w, m, rng, n_local_trials=1)
    C, labels, counts, sse = local_kmeans(X, w, C, max_iter=max_iter)
    keep = counts > 0
    new_id = np.cumsum(keep) - 1
    state["micro"] = new_id[labels].astype(np.int64)
    return C[keep], counts[keep], sse[keep]


def micro_labels(shard, state, label_of_micro, offsets):
    """Cluster label of every row: the label of its micro-cluster."""
    return label_of_micro[offsets[shard.index] + state["micro"]].astype(np.int64)


# -- weighted linkage on summaries -----------------------------------------------------------
def _pairwise(C):
    sq = np.einsum("ij,ij->i", C, C)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (C @ C.T)
    np.maximum(D2, 0.0, out=D2)
    return np.sqrt(D2)


def weighted_linkage(C, weights, method):
    """scipy-format linkage matrix of weighted atoms (centres ``C``, weights ``weights``).

    Nearest-neighbour chain on a dense matrix: O(m^2) memory and time for m atoms.
    """
    C = np.asarray(C, dtype=np.float64)
    W = np.asarray(weights, dtype=np.float64).copy()
    m = len(C)
    if m < 2:
        return np.zeros((0, 4))
    D = _pairwise(C)
    if method == "ward":
        D *= np.sqrt(2.0 * np.outer(W, W) / (W[:, None] + W[None, :]))
    np.fill_diagonal(D, np.inf)
    active = np.ones(m, dtype=bool)
    merges = []
    chain: list[int] = []
    while len(merges) < m - 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        row = D[a]
        b = int(np.argmin(row))
        if len(chain) > 1 and row[chain[-2]] <= row[b]:
            b = chain[-2]  # prefer the previous element on ties: the chain cannot cycle
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            i, j = min(a, b), max(a, b)
            dij = float(D[i, j])
            merges.append((i, j, dij))
            _lance_williams(D, W, i, j, dij, method, active)
            W[i] += W[j]
            active[j] = False
            D[j, :] = np.inf
            D[:, j] = np.inf
        else:
            chain.append(b)
    return _to_scipy(merges, m)


def _lance_williams(D, W, i, j, dij, method, active):
    """Distances from the merged cluster (kept in slot i) to every other active cluster."""
    others = active.copy()
    others[i] = others[j] = False
    k = np.flatnonzero(others)
    dik, djk = D[i, k], D[j, k]
    if method == "ward":
        wk = W[k]
        new = np.sqrt(np.maximum(
            ((W[i] + wk) * dik**2 + (W[j] + wk) * djk**2 - wk * dij**2) / (W[i] + W[j] + wk), 0.0))
    elif method == "average":
        new = (W[i] * dik + W[j] * djk) / (W[i] + W[j])
    elif method == "complete":
        new = np.maximum(dik, djk)
    else:
        new = np.minimum(dik, djk)
    D[i, k] = new
    D[k, i] = new


def _to_scipy(merges, m):
    """Sort merges by height (stable) and number clusters as scipy: new cluster m + row."""
    order = sorted(range(len(merges)), key=lambda r: merges[r][2])
    parent = list(range(2 * m - 1))
    size = [1] * (2 * m - 1)

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    Z = np.zeros((m - 1, 4))
    for r, idx in enumerate(order):
        a, b, dist = merges[idx]
        x, y = find(a), find(b)
        new = m + r
        parent[x] = parent[y] = new
        size[new] = size[x] + size[y]
        Z[r] = (min(x, y), max(x, y), dist, size[new])
    return Z


def cut_tree(Z, n_leaves, n_clusters):
    """Labels of the leaves after undoing the top ``n_clusters - 1`` merges.

    Clusters are numbered in order of their first leaf.
    """
    parent = np.arange(2 * n_leaves - 1)
    for r in range(n_leaves - n_clusters):
        a, b = int(Z[r, 0]), int(Z[r, 1])
        parent[a] = parent[b] = n_leaves + r
    root = parent.copy()
    for v in range(2 * n_leaves - 2, -1, -1):  # parents have higher ids: one pass top-down
        root[v] = root[parent[v]] if parent[v] != v else v
    _, first, inv = np.unique(root[:n_leaves], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv]


def n_clusters_for(Z, n_clusters, distance_threshold):
    if distance_threshold is None:
        return int(n_clusters)
    return int(np.count_nonzero(Z[:, 2] >= distance_threshold)) + 1


# -- fits ------------------------------------------------------------------------------------
def fit_exact(dataset, *, linkage, n_clusters, distance_threshold,
              estimator="AgglomerativeClustering") -> AgglomerativeFit:
    """scipy's exact linkage on all rows, gathered at the coordinator."""
    from scipy.cluster import hierarchy

    t0 = time.perf_counter()
    X = np.ascontiguousarray(dataset.to_arrays()[0], dtype=np.float64)
    n = len(X)
    if n < 2:
        Z = np.zeros((0, 4))
    elif linkage == "ward":
        Z = hierarchy.ward(X)
    else:
        Z = hierarchy.linkage(X, method=linkage, metric="euclidean")
    k = n_clusters_for(Z, n_clusters, distance_threshold)
    labels = cut_tree(Z, n, k) if n > 1 else np.zeros(n, dtype=np.int64)
    rt = RuntimeReport(engine="driver", n_workers=0, n_shards=dataset.n_shards, n_rows=n,
                       workers=[])
    report = FitReport.from_runtime(estimator, rt, wall_s=time.perf_counter() - t0,
                                    n_iter=max(0, n - 1), converged=True,
                                    objective_history=list(Z[:, 2]),
                                    extra={"mode": "exact", "linkage": linkage})
    return AgglomerativeFit(labels, Z, n, None, None, None, report)


def fit_distributed(dataset, *, linkage, n_clusters, distance_threshold, n_micro_clusters,
                    max_iter=20, random_state=None, estimator="AgglomerativeClustering",
                    session=None) -> AgglomerativeFit:
    """Micro-clusters on the workers, exact weighted linkage on them at the coordinator."""
    t0 = time.perf_counter()
    rs = random_state if isinstance(random_state, np.random.RandomState) else \
        np.random.RandomState(random_state)
    seed = int(rs.randint(np.iinfo(np.int32).max))
    with Coordinator(dataset, session=session, name=estimator) as coord:
        parts = coord.map(micro_clusters, n_micro_clusters, dataset.n_rows, seed, max_iter,
                          step="micro-clusters", restore=True)
        centers = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts])
        sse = np.concatenate([p[2] for p in parts])
        offsets = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])])
        tl = time.perf_counter()
        Z = weighted_linkage(centers, counts, linkage)
        linkage_s = time.perf_counter() - tl
        m = len(centers)
        k = n_clusters_for(Z, n_clusters, distance_threshold)
        if k > m:
            raise ValueError(
                f"n_clusters={k} is larger than the number of micro-clusters ({m}); "
                "raise n_micro_clusters or use mode='exact'.")
        label_of_micro = cut_tree(Z, m, k) if m > 1 else np.zeros(m, dtype=np.int64)
        labels = np.concatenate(coord.map(micro_labels, label_of_micro, offsets, step="labels"))
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=max(0, m - 1),
            converged=True, objective_history=list(Z[:, 2]),
            extra={"mode": "distributed", "linkage": linkage, "n_micro_clusters": m,
                   "micro_inertia": float(sse.sum()), "linkage_s": linkage_s},
        )
    return AgglomerativeFit(labels, Z, m, centers, counts, sse, report)


__all__ = ["LINKAGES", "cut_tree", "fit_distributed", "fit_exact", "weighted_linkage"]
