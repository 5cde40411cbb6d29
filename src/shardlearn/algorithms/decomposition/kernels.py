"""Worker kernels for PCA and TruncatedSVD: ``kernel(shard, state, *args)`` on one shard.

Every kernel accumulates in float64 whatever the shard's dtype, and returns
unnormalised sums that the coordinator merges in shard order:

- :func:`centred_gram`: row count, mean and centred Gram matrix ``(X - m)^T (X - m)``
  of the shard in one pass (merged exactly with :func:`merge_moments`).
- :func:`column_moments`: row count, column means and centred column sums of squares.
- :func:`gram_times`: ``A^T (A Q)`` for a block of vectors ``Q``, where ``A`` is the
  shard centred by a given (global) mean, or the raw shard; the product ``A Q`` never
  leaves the worker.
- :func:`projection_moments`: mean and centred sum of squares of ``A V^T`` (the
  explained variance of given components).

Dense shards are processed in row chunks of about a core's L2 cache: each chunk is
read from memory once, centred into a float64 buffer, and multiplied by BLAS while
it is still in cache.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._blas import syr_upper, syrk_upper

#: Bytes of float64 per dense chunk: about one core's L2 cache.
CHUNK_BYTES = 1 << 20
#: Fewer rows than this per chunk makes BLAS calls too small to be efficient.
MIN_CHUNK_ROWS = 256


def _chunk_rows(n_features: int) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (8 * max(1, n_features)))


def _row_chunks(n_rows: int, n_features: int):
    step = _chunk_rows(n_features)
    for a in range(0, n_rows, step):
        yield a, min(n_rows, a + step)


def _symmetrize_upper(C: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from the upper triangle of ``C`` (C-ordered copy)."""
    U = np.triu(C)
    return np.ascontiguousarray(U + np.triu(U, 1).T)


# -- the centred Gram matrix (PCA, "gram" solver) -------------------------------------
def centred_gram(shard, state):
    """``(n, mean, C)`` of the shard: rows, column means and centred Gram matrix, float64.

    Dense shards, in one read of the data: each chunk is shifted by its first row
    (so the values are small whatever their offset), its mean ``s`` and Gram matrix
    ``B^T B - k s s^T`` are formed with BLAS ``syrk``/``syr`` in place, and chunks are
    merged exactly by the pairwise update of Chan, Golub & LeVeque (a rank-one
    ``syr`` correction). The result is correctly centred with no cancellation
    however far the data lie from the origin. CSR shards: ``X^T X - n m m^T``
    (sparse product).
    """
    X = shard.X
    n, d = X.shape
    if sp.issparse(X):
        mean = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / n
        G = (X.T @ X).toarray().astype(np.float64, copy=False)
        C = G - n * np.outer(mean, mean)
        return n, mean, 0.5 * (C + C.T)
    buf = np.empty((min(_chunk_rows(d), n), d), dtype=np.float64)
    C = np.zeros((d, d), dtype=np.float64, order="F")
    mean = np.zeros(d, dtype=np.float64)
    count = 0
    for a, b in _row_chunks(n, d):
        k = b - a
        chunk = X[a:b]
        shift = chunk[0].astype(np.float64)
        B = buf[:k]
        np.subtract(chunk, shift, out=B)
        s = B.mean(axis=0)
        # C += B^T B - k s s^T: the chunk's centred Gram matrix (upper triangle), in place.
        syrk_upper(C, B)
        syr_upper(C, s, -float(k))
        m_chunk = shift + s
        if count:
            delta = m_chunk - mean
            total = count + k
            syr_upper(C, delta, count * k / total)
            mean += delta * (k / total)
        else:
            mean[:] = m_chunk
        count += k
    return n, mean, _symmetrize_upper(C)


def merge_moments(a, b):
    """Merge two ``(n, mean, M)`` triples exactly, ``M`` a centred Gram matrix or column sums of squares.

    Chan, Golub & LeVeque's pairwise update: ``M = Ma + Mb + na nb / n (mb - ma)(mb - ma)^T``
    (elementwise square for 1-D ``M``).
    """
    na, ma, Ma = a
    nb, mb, Mb = b
    n = na + nb
    delta = mb - ma
    f = na * nb / n
    if np.ndim(Ma) == 2:
        M = Ma + Mb + f * np.outer(delta, delta)
    else:
        M = Ma + Mb + f * delta * delta
    return n, ma + delta * (nb / n), M


# -- column moments -------------------------------------------------------------------
def column_moments(shard, state):
    """``(n, mean, M2)``: rows, column means and centred column sums of squares (float64)."""
    X = shard.X
    n, d = X.shape
    if sp.issparse(X):
        mean = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / n
        diff = X.data.astype(np.float64) - mean[X.indices]
        M2 = np.bincount(X.indices, weights=diff * diff, minlength=d)
        nnz = np.bincount(X.indices, minlength=d)
        M2 += (n - nnz) * mean * mean
        return n, mean, M2
    mean = X.mean(axis=0, dtype=np.float64)
    M2 = np.zeros(d, dtype=np.float64)
    buf = np.empty((min(_chunk_rows(d), n), d), dtype=np.float64)
    for a, b in _row_chunks(n, d):
        c = buf[: b - a]
        np.subtract(X[a:b], mean, out=c)
        M2 += np.einsum("ij,ij->j", c, c)
    return n, mean, M2


# -- block products for the randomized range finder -------------------------------------
def _float64_chunk(X, a, b, mean, buf):
    """Rows ``a:b`` of dense ``X`` as float64, minus ``mean`` when given (in ``buf`` if a copy is needed)."""
    chunk = X[a:b]
    if mean is None and chunk.dtype == np.float64:
        return chunk
    c = buf[: b - a]
    if mean is None:
        c[...] = chunk
    else:
        np.subtract(chunk, mean, out=c)
    return c


def gram_times(shard, state, Q, mean):
    """``A^T (A Q)`` for the shard, float64, with ``A = X - mean`` (or ``X`` when ``mean`` is None).

    ``Q`` has shape (n_features, l). Dense chunks are centred explicitly; CSR shards
    are centred implicitly (``A Q = X Q - 1 (mean^T Q)``), so they stay sparse.
    """
    X = shard.X
    n, d = X.shape
    Q = np.asarray(Q, dtype=np.float64)
    if sp.issparse(X):
        Y = np.asarray(X @ Q, dtype=np.float64)
        if mean is None:
            return np.asarray(X.T @ Y, dtype=np.float64)
        Y -= mean @ Q
        return np.asarray(X.T @ Y, dtype=np.float64) - np.outer(mean, Y.sum(axis=0))
    out = np.zeros((d, Q.shape[1]), dtype=np.float64)
    buf = np.empty((min(_chunk_rows(d), n), d), dtype=np.float64)
    for a, b in _row_chunks(n, d):
        c = _float64_chunk(X, a, b, mean, buf)
        out += c.T @ (c @ Q)
    return out


def projection_moments(shard, state, V, mean):
    """``(n, mean, M2)`` of the columns of ``T = A V^T``, with ``A = X - mean`` (or ``X``).

    Gives the variance of each component's scores (TruncatedSVD's explained variance)
    without sending the scores to the coordinator.
    """
    X = shard.X
    n, d = X.shape
    Vt = np.ascontiguousarray(np.asarray(V, dtype=np.float64).T)
    if sp.issparse(X):
        T = np.asarray(X @ Vt, dtype=np.float64)
        if mean is not None:
            T -= mean @ Vt
    else:
        T = np.empty((n, Vt.shape[1]), dtype=np.float64)
        buf = np.empty((min(_chunk_rows(d), n), d), dtype=np.float64)
        for a, b in _row_chunks(n, d):
            T[a:b] = _float64_chunk(X, a, b, mean, buf) @ Vt
    mT = T.mean(axis=0)
    D = T - mT
    return n, mT, np.einsum("ij,ij->j", D, D)
