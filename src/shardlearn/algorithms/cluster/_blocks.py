"""Block-wise building blocks shared by the clustering kernels (dense or CSR rows).

A shard (or a small in-memory array on the coordinator) is processed in row
chunks that fit in a core's L2 cache: one GEMM gives ``X @ C^T`` for a chunk,
then a compiled loop assigns rows and accumulates. Squared distances use the
expansion ``||x - mu||^2 - 2 (x - mu).(c - mu) + ||c - mu||^2`` with ``mu`` the
shard's own column mean (zero for sparse data), which keeps precision when the
data sits far from the origin.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import _loops

#: Bytes of X per chunk: about a core's L2 cache (measured best for the Lloyd pass).
CHUNK_BYTES = 1024 * 1024


def chunk_rows(n_features: int) -> int:
    return int(min(16384, max(256, CHUNK_BYTES // (8 * max(1, n_features)))))


def chunks(n_rows: int, n_features: int):
    step = chunk_rows(n_features)
    for a in range(0, n_rows, step):
        yield a, min(n_rows, a + step)


def block(X, a: int, b: int):
    """Rows ``a:b`` as a float64 C-contiguous array, or a float64 CSR matrix."""
    Xc = X[a:b]
    if sp.issparse(Xc):
        return Xc if Xc.dtype == np.float64 else Xc.astype(np.float64)
    return np.ascontiguousarray(Xc, dtype=np.float64)


def rows_dense(X, idx) -> np.ndarray:
    """Rows ``idx`` as a dense float64 array (small: a few candidate rows)."""
    idx = np.asarray(idx, dtype=np.int64)
    if sp.issparse(X):
        return np.asarray(X[idx].toarray(), dtype=np.float64).reshape(len(idx), X.shape[1])
    return np.array(X[idx], dtype=np.float64).reshape(len(idx), X.shape[1])


def moments(X):
    """Column mean, squared deviations per row ``||x - mean||^2`` and per column (M2)."""
    n, d = X.shape
    if sp.issparse(X):
        Xd = X if X.dtype == np.float64 else X.astype(np.float64)
        mean = np.asarray(Xd.sum(axis=0)).ravel() / n
        sq = Xd.multiply(Xd)
        xn = np.asarray(sq.sum(axis=1)).ravel()
        m2 = np.maximum(np.asarray(sq.sum(axis=0)).ravel() - n * mean * mean, 0.0)
        return mean, np.zeros(d), xn, m2
    mean = np.asarray(X.mean(axis=0, dtype=np.float64))
    xn = np.empty(n)
    m2 = np.zeros(d)
    for a, b in chunks(n, d):
        D = block(X, a, b) - mean
        xn[a:b] = np.einsum("ij,ij->i", D, D)
        m2 += np.einsum("ij,ij->j", D, D)
    # Dense rows are shifted by the mean; sparse rows are not (mu = 0).
    return mean, mean, xn, m2


def merge_moments(a, b):
    """Combine (count, mean, M2, total weight) of two row sets exactly (Chan et al.)."""
    na, ma, m2a, wa = a
    nb, mb, m2b, wb = b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta * delta * (na * nb / n), wa + wb


def shifted(C, mu):
    """GEMM operand ``-2 (C - mu)^T`` and offsets ``b`` so that ``X @ Ct + b + xn = d^2``."""
    Cp = np.asarray(C, dtype=np.float64) - mu
    Ct = np.ascontiguousarray(-2.0 * Cp.T)
    b = 2.0 * (Cp @ mu) + np.einsum("ij,ij->i", Cp, Cp)
    return Ct, b


def gemm(Xc, Ct, out=None):
    if sp.issparse(Xc):
        return np.ascontiguousarray(Xc @ Ct)
    if out is None:
        return Xc @ Ct
    return np.matmul(Xc, Ct, out=out[: Xc.shape[0]])


def sq_distances(X, xn, mu, C):
    """Squared distances (n, len(C)) of all rows to the centres ``C`` (small C)."""
    n, d = X.shape
    Ct, b = shifted(C, mu)
    out = np.empty((n, len(C)))
    for a, e in chunks(n, d):
        out[a:e] = gemm(block(X, a, e), Ct) + b + xn[a:e, None]
    np.maximum(out, 0.0, out=out)
    return out


def min_update(X, xn, mu, C, mind, near=None, near_offset=0):
    """``mind = min(mind, d^2(x, C))`` in place; ``near`` gets the index of the closer centre."""
    if len(C) == 0:
        return
    n, d = X.shape
    Ct, b = shifted(C, mu)
    for a, e in chunks(n, d):
        D = gemm(block(X, a, e), Ct) + b + xn[a:e, None]
        j = D.argmin(axis=1)
        v = np.maximum(D[np.arange(e - a), j], 0.0)
        better = v < mind[a:e]
        mind[a:e] = np.where(better, v, mind[a:e])
        if near is not None:
            near[a:e] = np.where(better, j + near_offset, near[a:e])


def lloyd_pass(X, xn, mu, w, labels, C):
    """Assign every row to its nearest centre and sum rows per centre.

    Returns ``(sums, weight_per_centre, inertia, n_labels_changed)``; ``labels``
    is updated in place.
    """
    n, d = X.shape
    k = len(C)
    Ct, b = shifted(C, mu)
    sums = np.zeros((k, d))
    wsum = np.zeros(k)
    inertia = 0.0
    changed = 0
    buf = np.empty((chunk_rows(d), k))
    for a, e in chunks(n, d):
        Xc = block(X, a, e)
        G = gemm(Xc, Ct, buf)
        if sp.issparse(Xc):
            i, c = _loops.lloyd_csr(Xc.indptr, Xc.indices, Xc.data, G, b, xn[a:e], w[a:e],
                                    labels[a:e], sums, wsum)
        else:
            i, c = _loops.lloyd_dense(Xc, G, b, xn[a:e], w[a:e], labels[a:e], sums, wsum)
        inertia += i
        changed += c
    return sums, wsum, inertia, changed


def assign_pass(X, mu, w, labels, C):
    """Nearest centre of every row (into ``labels``) and the exact weighted inertia."""
    n, d = X.shape
    C = np.ascontiguousarray(C, dtype=np.float64)
    Ct, b = shifted(C, mu)
    cnorm = np.einsum("ij,ij->i", C, C)
    inertia = 0.0
    buf = np.empty((chunk_rows(d), len(C)))
    for a, e in chunks(n, d):
        Xc = block(X, a, e)
        G = gemm(Xc, Ct, buf)
        if sp.issparse(Xc):
            inertia += _loops.assign_csr(Xc.indptr, Xc.indices, Xc.data, G, b, C, cnorm,
                                         w[a:e], labels[a:e])
        else:
            inertia += _loops.assign_dense(Xc, G, b, C, w[a:e], labels[a:e])
    return inertia


def top_by_key(keys, m, offset=0):
    """Local indices of the ``m`` largest finite keys, ordered by (key desc, index asc)."""
    finite = np.flatnonzero(np.isfinite(keys))
    if finite.size > m:
        part = np.argpartition(-keys[finite], m - 1)[:m]
        # Include every row tied with the m-th key so the order below is exact.
        cut = keys[finite[part]].min()
        finite = finite[keys[finite] >= cut]
    order = np.lexsort((finite, -keys[finite]))
    return finite[order[:m]]


def merge_top(parts, m):
    """Merge per-shard ``(keys, global_idx, rows, *extra)`` and keep the top ``m`` keys.

    Order is (key desc, global index asc): the same on any engine and worker count.
    """
    keys = np.concatenate([p[0] for p in parts])
    idx = np.concatenate([p[1] for p in parts]).astype(np.int64)
    order = np.lexsort((idx, -keys))[:m]
    out = [keys[order], idx[order]]
    for j in range(2, len(parts[0])):
        out.append(np.concatenate([p[j] for p in parts])[order])
    return out


def assign_inertia(X, w, labels, C):
    """Exact weighted inertia ``sum w ||x - C[label]||^2`` for given labels."""
    n, d = X.shape
    C = np.ascontiguousarray(C, dtype=np.float64)
    total = 0.0
    for a, e in chunks(n, d):
        Xc = block(X, a, e)
        Cl = C[labels[a:e]]
        if sp.issparse(Xc):
            sq = (np.asarray(Xc.multiply(Xc).sum(axis=1)).ravel()
                  - 2.0 * np.asarray(Xc.multiply(Cl).sum(axis=1)).ravel()
                  + np.einsum("ij,ij->i", Cl, Cl))
            sq = np.maximum(sq, 0.0)
        else:
            diff = Xc - Cl
            sq = np.einsum("ij,ij->i", diff, diff)
        total += float(w[a:e] @ sq)
    return total
