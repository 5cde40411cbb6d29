"""Compiled inner loops of the clustering kernels (numba, one thread, GIL released).

Every loop visits rows in order and accumulates in float64, so a shard gives the
same bits whichever worker or engine runs it. ``nogil=True`` lets the in-process
engine's worker threads run them in parallel; ``cache=True`` keeps the compiled
code on disk so Ray workers load it instead of compiling again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True)


# -- k-means: assignment after a GEMM ----------------------------------------------------
@njit(**_JIT)
def lloyd_dense(X, G, b, xn, w, labels, sums, wsum):
    """Assign each row of a dense chunk and accumulate its cluster's weighted sums.

    ``G[i, j] + b[j] + xn[i]`` is the squared distance of row i to centre j
    (``G = X @ (-2 C'^T)`` from a GEMM). Updates ``labels`` in place; returns the
    chunk's inertia (from the same expansion) and how many labels changed.
    """
    m, d = X.shape
    k = G.shape[1]
    inertia = 0.0
    changed = 0
    for i in range(m):
        best = G[i, 0] + b[0]
        j = 0
        for c in range(1, k):
            v = G[i, c] + b[c]
            if v < best:
                best = v
                j = c
        dist = best + xn[i]
        if dist < 0.0:
            dist = 0.0
        wi = w[i]
        inertia += wi * dist
        if labels[i] != j:
            changed += 1
            labels[i] = j
        wsum[j] += wi
        for f in range(d):
            sums[j, f] += wi * X[i, f]
    return inertia, changed


@njit(**_JIT)
def lloyd_csr(indptr, indices, data, G, b, xn, w, labels, sums, wsum):
    """:func:`lloyd_dense` for a CSR chunk."""
    m = G.shape[0]
    k = G.shape[1]
    inertia = 0.0
    changed = 0
    for i in range(m):
        best = G[i, 0] + b[0]
        j = 0
        for c in range(1, k):
            v = G[i, c] + b[c]
            if v < best:
                best = v
                j = c
        dist = best + xn[i]
        if dist < 0.0:
            dist = 0.0
        wi = w[i]
        inertia += wi * dist
        if labels[i] != j:
            changed += 1
            labels[i] = j
        wsum[j] += wi
        for p in range(indptr[i], indptr[i + 1]):
            sums[j, indices[p]] += wi * data[p]
    return inertia, changed


@njit(**_JIT)
def assign_dense(X, G, b, C, w, labels):
    """Nearest centre of each row (from the GEMM expansion) and the exact weighted inertia.

    The inertia is summed from direct squared differences ``||x - c||^2`` to the
    chosen centre, as scikit-learn reports ``inertia_``.
    """
    m, d = X.shape
    k = G.shape[1]
    inertia = 0.0
    for i in range(m):
        best = G[i, 0] + b[0]
        j = 0
        for c in range(1, k):
            v = G[i, c] + b[c]
            if v < best:
                best = v
                j = c
        labels[i] = j
        s = 0.0
        for f in range(d):
            t = X[i, f] - C[j, f]
            s += t * t
        inertia += w[i] * s
    return inertia


@njit(**_JIT)
def assign_csr(indptr, indices, data, G, b, C, cnorm, w, labels):
    """:func:`assign_dense` for a CSR chunk (``||x - c||^2`` from the row's non-zeros)."""
    m = G.shape[0]
    k = G.shape[1]
    inertia = 0.0
    for i in range(m):
        best = G[i, 0] + b[0]
        j = 0
        for c in range(1, k):
            v = G[i, c] + b[c]
            if v < best:
                best = v
                j = c
        labels[i] = j
        s = cnorm[j]
        for p in range(indptr[i], indptr[i + 1]):
            x = data[p]
            cf = C[j, indices[p]]
            s += x * x - 2.0 * x * cf
        if s < 0.0:
            s = 0.0
        inertia += w[i] * s
    return inertia


# -- bisecting k-means: many 2-means problems in one pass ---------------------------------
@njit(**_JIT)
def _sq_dense(X, i, c):
    s = 0.0
    for f in range(X.shape[1]):
        t = X[i, f] - c[f]
        s += t * t
    return s


@njit(**_JIT)
def _sq_csr(indptr, indices, data, xn, i, c, cn):
    p = 0.0
    for q in range(indptr[i], indptr[i + 1]):
        p += data[q] * c[indices[q]]
    s = xn[i] - 2.0 * p + cn
    return s if s > 0.0 else 0.0


@njit(**_JIT)
def sq_norms(C):
    """``||c||^2`` of every row of a 2-D array, summed in feature order."""
    out = np.zeros(C.shape[0])
    for r in range(C.shape[0]):
        s = 0.0
        for f in range(C.shape[1]):
            s += C[r, f] * C[r, f]
        out[r] = s
    return out


@njit(**_JIT)
def descend_dense(X, node, children, centers):
    """Move every row down the split tree to a leaf: nearer child centre, ties to child 0."""
    for i in range(X.shape[0]):
        v = node[i]
        while children[v, 0] >= 0:
            c0 = children[v, 0]
            c1 = children[v, 1]
            v = c1 if _sq_dense(X, i, centers[c1]) < _sq_dense(X, i, centers[c0]) else c0
        node[i] = v


@njit(**_JIT)
def descend_csr(indptr, indices, data, xn, node, children, centers, cnorm):
    """:func:`descend_dense` for CSR rows (norm expansion, as in :func:`bisect_csr`)."""
    for i in range(xn.shape[0]):
        v = node[i]
        while children[v, 0] >= 0:
            c0 = children[v, 0]
            c1 = children[v, 1]
            d0 = _sq_csr(indptr, indices, data, xn, i, centers[c0], cnorm[c0])
            d1 = _sq_csr(indptr, indices, data, xn, i, centers[c1], cnorm[c1])
            v = c1 if d1 < d0 else c0
        node[i] = v


@njit(**_JIT)
def bisect_dense(X, node, slot_of_node, C, active, w, lab, sums, wsum, count, inertia, changed,
                 fdist, fidx, update, base):
    """One Lloyd pass of every (leaf slot, trial) 2-means problem over a dense chunk.

    Row i belongs to problem slot ``s = slot_of_node[node[i]]`` (skipped when -1);
    for each active trial t it goes to the nearer of ``C[s, t, 0]`` and
    ``C[s, t, 1]`` (ties to 0), by direct squared differences. ``lab[i, t]`` keeps
    the assignment (changes are counted). Per child: weighted inertia, weight and
    row count; with ``update`` also weighted sums and each problem's farthest
    positive-weight row (to re-seed an empty child; ``base + i`` in ``fidx``).
    """
    m, d = X.shape
    T = C.shape[1]
    for i in range(m):
        s = slot_of_node[node[i]]
        if s < 0:
            continue
        wi = w[i]
        for t in range(T):
            if not active[s, t]:
                continue
            d0 = _sq_dense(X, i, C[s, t, 0])
            d1 = _sq_dense(X, i, C[s, t, 1])
            j = 0
            dist = d0
            if d1 < d0:
                j = 1
                dist = d1
            if lab[i, t] != j:
                changed[s, t] += 1
                lab[i, t] = j
            inertia[s, t, j] += wi * dist
            wsum[s, t, j] += wi
            count[s, t, j] += 1
            if update:
                for f in range(d):
                    sums[s, t, j, f] += wi * X[i, f]
                if wi > 0.0 and dist > fdist[s, t]:
                    fdist[s, t] = dist
                    fidx[s, t] = base + i


@njit(**_JIT)
def bisect_csr(indptr, indices, data, xn, node, slot_of_node, C, active, w, lab, sums, wsum,
               count, inertia, changed, fdist, fidx, update, base):
    """:func:`bisect_dense` for a CSR chunk (distances from the norm expansion)."""
    m = xn.shape[0]
    S, T = active.shape
    cnorm = np.zeros((S, T, 2))
    for s in range(S):
        for t in range(T):
            for j in range(2):
                cnorm[s, t, j] = sq_norms(C[s, t, j:j + 1])[0]
    for i in range(m):
        s = slot_of_node[node[i]]
        if s < 0:
            continue
        wi = w[i]
        for t in range(T):
            if not active[s, t]:
                continue
            d0 = _sq_csr(indptr, indices, data, xn, i, C[s, t, 0], cnorm[s, t, 0])
            d1 = _sq_csr(indptr, indices, data, xn, i, C[s, t, 1], cnorm[s, t, 1])
            j = 0
            dist = d0
            if d1 < d0:
                j = 1
                dist = d1
            if lab[i, t] != j:
                changed[s, t] += 1
                lab[i, t] = j
            inertia[s, t, j] += wi * dist
            wsum[s, t, j] += wi
            count[s, t, j] += 1
            if update:
                for q in range(indptr[i], indptr[i + 1]):
                    sums[s, t, j, indices[q]] += wi * data[q]
                if wi > 0.0 and dist > fdist[s, t]:
                    fdist[s, t] = dist
                    fidx[s, t] = base + i


@njit(**_JIT)
def bisect_first_dist_dense(X, node, slot_of_node, C0, out):
    """``out[i, t] = d^2(x_i, C0[s, t])`` for rows in a problem slot s (else 0)."""
    for i in range(X.shape[0]):
        s = slot_of_node[node[i]]
        if s < 0:
            continue
        for t in range(C0.shape[1]):
            out[i, t] = _sq_dense(X, i, C0[s, t])


@njit(**_JIT)
def bisect_first_dist_csr(indptr, indices, data, xn, node, slot_of_node, C0, out):
    S, T = C0.shape[0], C0.shape[1]
    cn = np.zeros((S, T))
    for s in range(S):
        cn[s] = sq_norms(C0[s])
    for i in range(xn.shape[0]):
        s = slot_of_node[node[i]]
        if s < 0:
            continue
        for t in range(T):
            out[i, t] = _sq_csr(indptr, indices, data, xn, i, C0[s, t], cn[s, t])


@njit(**_JIT)
def top2_per_problem(node, slot_of_node, keys, best_key, best_idx, offset):
    """Keep, per (slot, trial), the two rows of largest key (ties: lower row index).

    ``keys`` has shape (n_rows, n_trials); ``best_key``/``best_idx`` have shape
    (n_slots, n_trials, 2) and are updated in place with global row indices.
    """
    m = node.shape[0]
    T = keys.shape[1]
    for i in range(m):
        s = slot_of_node[node[i]]
        if s < 0:
            continue
        g = offset + i
        for t in range(T):
            kv = keys[i, t]
            if kv == -np.inf:
                continue
            if kv > best_key[s, t, 0]:
                best_key[s, t, 1] = best_key[s, t, 0]
                best_idx[s, t, 1] = best_idx[s, t, 0]
                best_key[s, t, 0] = kv
                best_idx[s, t, 0] = g
            elif kv > best_key[s, t, 1]:
                best_key[s, t, 1] = kv
                best_idx[s, t, 1] = g
