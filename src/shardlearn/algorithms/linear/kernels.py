"""Worker kernels for linear models: ``kernel(shard, state, *args)`` on one shard.

Dense shards are processed in row chunks that fit the core's L2 cache, so the
two passes a gradient needs (X @ w, then X.T @ r) read each chunk from memory
once. Kernels return unnormalised sums; the coordinator adds shards in order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from ._rowwise import logistic_binary_terms

#: Bytes of X per chunk: about half a core's L2 cache.
CHUNK_BYTES = 512 * 1024

#: The binary logistic pass works on larger chunks: fewer Python-level steps (the
#: GIL is shared by the in-process workers) while the chunk still sits in the
#: last-level cache for its second product. Measured on 800,000 x 50 with two
#: worker threads: 512 KiB 20.3 ms per pass, 2 MiB 19.0 ms, 8 MiB 27.1 ms.
BINARY_CHUNK_BYTES = 2 * 2**20


def _chunk_rows(X, chunk_bytes=None) -> int:
    return max(64, (chunk_bytes or CHUNK_BYTES) // max(1, X.shape[1] * X.itemsize))


def _chunks(shard):
    X = shard.X
    n = X.shape[0]
    if sp.issparse(X):
        yield 0, n
        return
    step = _chunk_rows(X)
    for a in range(0, n, step):
        yield a, min(n, a + step)


# -- targets -------------------------------------------------------------------------
def class_weight_sums(shard, state, classes):
    """Summed row weight of each class in the shard (for ``class_weight="balanced"``)."""
    idx = np.searchsorted(classes, shard.y)
    return np.bincount(idx, weights=shard.weights(), minlength=len(classes)).astype(np.float64)


def prepare_targets(shard, state, classes, class_weight, mode):
    """Encode the shard's labels once per fit and keep them (and row weights) in ``state``.

    mode "binary": y in {0, 1}, weights (n,); "index": class index, weights (n,);
    "ovr": +/-1 matrix (n, K) with K = 1 for two classes (positive class
    ``classes[1]``) and weights (n, K). For one-vs-rest with more than two classes
    the class weight of problem k multiplies only the rows of class k (the other
    rows keep their sample weight), as liblinear does.
    Returns the summed row weight (sample weight times class weight) of the shard.
    """
    idx = np.searchsorted(classes, shard.y)
    sw = shard.weights().astype(np.float64, copy=True)
    cw = None if class_weight is None else np.asarray(class_weight, dtype=np.float64)
    total = float(sw @ cw[idx]) if cw is not None else float(sw.sum())
    if mode in ("binary", "index"):
        if cw is not None:
            sw *= cw[idx]
        state["y"] = idx.astype(np.float64) if mode == "binary" else idx
        state["sw"] = sw
    elif mode == "ovr":
        rows = np.arange(shard.n_rows)
        if len(classes) == 2:
            Y = np.where(idx == 1, 1.0, -1.0)[:, None]
            SW = (sw if cw is None else sw * cw[idx])[:, None]
        else:
            Y = -np.ones((shard.n_rows, len(classes)), dtype=np.float64)
            Y[rows, idx] = 1.0
            SW = np.repeat(sw[:, None], len(classes), axis=1)
            if cw is not None:
                SW[rows, idx] *= cw[idx]
        state["y"] = Y
        state["sw"] = np.ascontiguousarray(SW)
    else:  # pragma: no cover - programming error
        raise ValueError(mode)
    return total


def _linear(Xc, W, fit_intercept):
    """Z = Xc @ coef.T + intercept for W of shape (K, d + fit_intercept)."""
    d = Xc.shape[1]
    Z = Xc @ W[:, :d].T
    if sp.issparse(Z):
        Z = Z.toarray()
    if fit_intercept:
        Z = Z + W[:, d]
    return np.asarray(Z)


def _accumulate_grad(G, Xc, R, fit_intercept):
    d = Xc.shape[1]
    G[:, :d] += np.asarray(Xc.T @ R).T
    if fit_intercept:
        G[:, d] += R.sum(axis=0)


# -- logistic ------------------------------------------------------------------------
def logistic_loss_grad(shard, state, w, n_classes, fit_intercept):
    """Summed weighted log-loss and its gradient for the shard.

    ``w`` is flat: (d + fit_intercept) for binary, K * (d + fit_intercept) for
    multinomial. Also stores in ``state`` what a Hessian-vector product at ``w`` needs.
    """
    X, y, sw = shard.X, state["y"], state["sw"]
    K = 1 if n_classes == 2 else n_classes
    W = w.reshape(K, -1)
    G = np.zeros_like(W)
    loss = 0.0
    curv = np.empty((shard.n_rows,) if K == 1 else (shard.n_rows, K))
    if K == 1 and not sp.issparse(X):
        loss = _logistic_binary_dense(X, y, sw, W[0], fit_intercept, G[0], curv)
        state["curvature"] = curv
        return loss, G.ravel()
    for a, b in _chunks(shard):
        Xc = X[a:b]
        Z = _linear(Xc, W, fit_intercept)
        s = sw[a:b]
        if K == 1:
            z = Z[:, 0]
            yc = y[a:b]
            loss += float(s @ (np.logaddexp(0.0, z) - yc * z))
            p = expit(z)
            R = (s * (p - yc))[:, None]
            curv[a:b] = s * p * (1.0 - p)
        else:
            zmax = Z.max(axis=1, keepdims=True)
            E = np.exp(Z - zmax)
            sumE = E.sum(axis=1, keepdims=True)
            lse = (np.log(sumE) + zmax)[:, 0]
            rows = np.arange(b - a)
            loss += float(s @ (lse - Z[rows, y[a:b]]))
            P = E / sumE
            curv[a:b] = P
            P[rows, y[a:b]] -= 1.0
            R = P * s[:, None]
        _accumulate_grad(G, Xc, R, fit_intercept)
    state["curvature"] = curv
    return loss, G.ravel()


def _logistic_binary_dense(X, y, sw, w, fit_intercept, g, curv):
    """Binary log-loss and gradient of a dense shard, chunk by chunk (each chunk read once
    from memory: the second product finds it in cache)."""
    d = X.shape[1]
    coef = w[:d]
    b = w[d] if fit_intercept else 0.0
    gc = np.zeros(d)
    loss = 0.0
    bias_grad = 0.0
    step = _chunk_rows(X, BINARY_CHUNK_BYTES)
    m = min(step, X.shape[0])
    r, ebuf, lbuf = np.empty(m), np.empty(m), np.empty(m)
    for a in range(0, X.shape[0], step):
        e = min(X.shape[0], a + step)
        Xc = X[a:e]
        z = Xc @ coef
        if fit_intercept:
            z += b
        k = e - a
        rc, ez, lz = r[:k], ebuf[:k], lbuf[:k]
        np.abs(z, out=ez)
        np.negative(ez, out=ez)
        np.exp(ez, out=ez)
        np.log1p(ez, out=lz)
        loss += logistic_binary_terms(z, ez, lz, y[a:e], sw[a:e], rc, curv, a)
        gc += rc @ Xc
        bias_grad += rc.sum()
    g[:d] += gc
    if fit_intercept:
        g[d] += bias_grad
    return loss


def logistic_hessp(shard, state, v, n_classes, fit_intercept):
    """Summed weighted Hessian of the log-loss times ``v``, at the last ``logistic_loss_grad`` point."""
    X, sw, curv = shard.X, state["sw"], state["curvature"]
    K = 1 if n_classes == 2 else n_classes
    V = v.reshape(K, -1)
    H = np.zeros_like(V)
    for a, b in _chunks(shard):
        Xc = X[a:b]
        U = _linear(Xc, V, fit_intercept)
        if K == 1:
            R = curv[a:b, None] * U
        else:
            P = curv[a:b]
            # Softmax Hessian: diag(p) - p p^T, applied row-wise.
            R = P * (U - (P * U).sum(axis=1, keepdims=True)) * sw[a:b, None]
        _accumulate_grad(H, Xc, R, fit_intercept)
    return H.ravel()


# -- squared hinge (LinearSVC) --------------------------------------------------------
def squared_hinge_loss_grad(shard, state, w, n_problems, fit_intercept):
    """Summed weighted squared hinge over ``n_problems`` one-vs-rest problems and its gradient.

    Row weights in ``state["sw"]`` have shape (n_rows, n_problems) (see :func:`prepare_targets`).
    """
    X, Y, sw = shard.X, state["y"], state["sw"]
    W = w.reshape(n_problems, -1)
    G = np.zeros_like(W)
    loss = 0.0
    active = np.empty((shard.n_rows, n_problems), dtype=bool)
    for a, b in _chunks(shard):
        Xc = X[a:b]
        Z = _linear(Xc, W, fit_intercept)
        Yc = Y[a:b]
        margin = 1.0 - Yc * Z
        act = margin > 0
        active[a:b] = act
        m = np.where(act, margin, 0.0)
        s = sw[a:b]
        loss += float((s * m * m).sum())
        R = -2.0 * Yc * m * s
        _accumulate_grad(G, Xc, R, fit_intercept)
    state["active"] = active
    return loss, G.ravel()


def squared_hinge_hessp(shard, state, v, n_problems, fit_intercept):
    """Generalised Hessian (2 X_A^T S X_A) times ``v`` at the last gradient point."""
    X, sw, active = shard.X, state["sw"], state["active"]
    V = v.reshape(n_problems, -1)
    H = np.zeros_like(V)
    for a, b in _chunks(shard):
        Xc = X[a:b]
        U = _linear(Xc, V, fit_intercept)
        R = 2.0 * U * active[a:b] * sw[a:b]
        _accumulate_grad(H, Xc, R, fit_intercept)
    return H.ravel()


# -- least squares -------------------------------------------------------------------
def gram_stats(shard, state, fit_intercept):
    """Weighted sufficient statistics of the shard for least squares.

    Returns ``(S, mean_x, mean_y, Cxx, Cxy, Cyy)``: total weight, weighted means
    (zeros when not centring), and the (centred) cross-product matrices, all float64.
    Centring by the shard's own mean keeps the sums well conditioned; shards are
    merged exactly with :func:`merge_gram_stats`.
    """
    X = shard.X
    y = shard.y.astype(np.float64, copy=False)
    Y = y[:, None] if y.ndim == 1 else y
    sw = shard.weights().astype(np.float64, copy=False)
    S = float(sw.sum())
    if fit_intercept and S > 0:
        mx = np.asarray(X.T @ sw).ravel() / S
        my = (Y.T @ sw) / S
    else:
        mx = np.zeros(X.shape[1])
        my = np.zeros(Y.shape[1])
    Yc = Y - my
    if sp.issparse(X):
        Xw = sp.csr_matrix(X.multiply(sw[:, None]))
        Cxx = np.asarray((X.T @ Xw).toarray(), dtype=np.float64) - S * np.outer(mx, mx)
        Cxy = np.asarray(Xw.T @ Y) - S * np.outer(mx, my)
    else:
        Xc = np.asarray(X, dtype=np.float64) - mx
        Xcw = Xc * sw[:, None]
        Cxx = Xc.T @ Xcw
        Cxy = Xcw.T @ Yc
    Cyy = (Yc * sw[:, None]).T @ Yc
    return S, mx, my, Cxx, Cxy, Cyy


def merge_gram_stats(a, b):
    """Combine two shards' statistics exactly (pairwise update of means and co-moments)."""
    Sa, mxa, mya, Cxxa, Cxya, Cyya = a
    Sb, mxb, myb, Cxxb, Cxyb, Cyyb = b
    S = Sa + Sb
    if Sa == 0:
        # A shard whose rows all weigh zero adds nothing (and has no mean).
        return (S, mxb, myb, Cxxa + Cxxb, Cxya + Cxyb, Cyya + Cyyb)
    if Sb == 0:
        return (S, mxa, mya, Cxxa + Cxxb, Cxya + Cxyb, Cyya + Cyyb)
    dx = mxb - mxa
    dy = myb - mya
    f = Sa * Sb / S
    return (
        S,
        mxa + dx * (Sb / S),
        mya + dy * (Sb / S),
        Cxxa + Cxxb + f * np.outer(dx, dx),
        Cxya + Cxyb + f * np.outer(dx, dy),
        Cyya + Cyyb + f * np.outer(dy, dy),
    )
