"""Worker kernels of distributed k-means: ``kernel(shard, state, *args)`` on one shard.

Per-shard ``state`` (kept on the worker for the whole fit): row weights ``w``,
the shift ``mu`` (the shard's column mean, zero for CSR), squared norms
``xn = ||x - mu||^2`` (all from :func:`prepare`, a restore step), the current
``labels``, and during seeding the squared distance ``mind`` of each row to the
nearest candidate so far (``near``: which one). The evolving parts carry a tag;
a kernel that finds its tag missing (the shard was moved to another worker)
recomputes them from its arguments, so results never depend on placement.
Randomness comes from ``numpy.random.default_rng([seed, phase, round, shard])``,
so draws depend on the data and the seed, never on the worker count.
"""

from __future__ import annotations

import numpy as np

from . import _blocks as B


def prepare(shard, state, offsets):
    """Cache weights, shift and row norms; return (count, mean, M2, total weight)."""
    mean, mu, xn, m2 = B.moments(shard.X)
    w = np.ascontiguousarray(shard.weights(), dtype=np.float64)
    state.clear()
    state.update(w=w, mu=mu, xn=xn, offset=int(offsets[shard.index]),
                 labels=np.full(shard.n_rows, -1, dtype=np.int32))
    return float(shard.n_rows), mean, m2, float(w.sum())


#: Randomness phases (mixed into every per-shard seed).
PHASE_FIRST, PHASE_PARALLEL, PHASE_PLUSPLUS, PHASE_RANDOM = 0, 1, 2, 3


def _rng(seed, phase, rnd, shard):
    return np.random.default_rng([int(seed), int(phase), int(rnd), int(shard.index)])


def _es_keys(omega, u):
    """Efraimidis-Spirakis keys ``log(u) / omega``: the top m are a weighted sample of m rows."""
    keys = np.full(omega.shape[0], -np.inf)
    pos = omega > 0
    keys[pos] = np.log(u[pos]) / omega[pos]
    return keys


# -- seeding state: distance of every row to the nearest candidate so far -----------------
def _ensure_potential(shard, state, tag, cands, n_old):
    """Make ``mind``/``near`` reflect all of ``cands``.

    The state is tagged ``(tag, number of candidates applied)``. When it holds the
    first ``n_old`` candidates of this run, only the new ones are applied; when it
    does not (another run, or the shard was moved to a new worker and its state
    rebuilt), it is recomputed from all candidates. Either way the bits are the same.
    """
    start = n_old
    if state.get("mind_tag") != (tag, n_old):
        state["mind"] = np.full(shard.n_rows, np.inf)
        state["near"] = np.zeros(shard.n_rows, dtype=np.int32)
        start = 0
    if len(cands) > start:
        B.min_update(shard.X, state["xn"], state["mu"], cands[start:], state["mind"],
                     state["near"], start)
    state["mind_tag"] = (tag, len(cands))


def update_potential(shard, state, tag, cands, n_old):
    """Apply the candidates; return the shard's potential ``sum w * mind``."""
    _ensure_potential(shard, state, tag, cands, n_old)
    return float(state["w"] @ state["mind"])


def sample_rows(shard, state, m, seed, phase, rnd, potential_of=None, exclude=None):
    """This shard's ``m`` best rows of a weighted sample without replacement.

    Weights are the row weights, or ``w * d^2`` to the candidates ``cands`` when
    ``potential_of = (tag, cands, n_old)`` (D^2 sampling; the state already holds the
    first ``n_old`` of them unless it was lost). Rows whose global index is in
    ``exclude`` are never drawn. Returns ``(keys, global_indices, rows)``; the
    coordinator keeps the global top ``m`` keys, an exact weighted sample over
    all shards (Efraimidis and Spirakis, 2006).
    """
    w = state["w"]
    n = shard.n_rows
    if potential_of is not None:
        _ensure_potential(shard, state, *potential_of)
        omega = w * state["mind"]
    else:
        omega = w
    u = 1.0 - _rng(seed, phase, rnd, shard).random(n)
    keys = _es_keys(omega, u)
    off = state["offset"]
    if exclude is not None and len(exclude):
        local = np.asarray(exclude, dtype=np.int64) - off
        keys[local[(local >= 0) & (local < n)]] = -np.inf
    top = B.top_by_key(keys, m)
    return keys[top], top + off, B.rows_dense(shard.X, top)


def kmeans_parallel_round(shard, state, tag, cands, n_old, ell, seed, rnd):
    """One k-means|| round (Bahmani et al. 2012) on this shard.

    First applies the candidates chosen in the previous round. Row x is to be
    kept with probability ``min(1, ell * w d^2(x) / phi)``, phi the global
    potential. With ``u`` uniform that is ``w d^2 / u > phi / ell``; the shard
    returns every row with ``w d^2 / u > phi_shard / ell`` (a superset, since
    phi >= phi_shard, of expected size <= ell) and the coordinator applies the
    global threshold. Returns ``(phi_shard, scores, global_indices, rows)``.
    """
    phi = update_potential(shard, state, tag, cands, n_old)
    u = 1.0 - _rng(seed, PHASE_PARALLEL, rnd, shard).random(shard.n_rows)
    if phi <= 0:
        sel = np.zeros(0, dtype=np.int64)
    else:
        sel = np.flatnonzero(state["w"] * state["mind"] / u > phi / ell)
    scores = state["w"][sel] * state["mind"][sel] / u[sel]
    return phi, scores, sel + state["offset"], B.rows_dense(shard.X, sel)


def candidate_weights(shard, state, tag, cands, n_old):
    """Apply the last candidates; return the row weight nearest to each candidate."""
    _ensure_potential(shard, state, tag, cands, n_old)
    return np.bincount(state["near"], weights=state["w"], minlength=len(cands))


def potentials(shard, state, tag, cands, trials):
    """``sum_x w min(d^2(x, cands), d^2(x, t))`` for each trial centre t (greedy k-means++)."""
    _ensure_potential(shard, state, tag, cands, len(cands))
    D = B.sq_distances(shard.X, state["xn"], state["mu"], trials)
    np.minimum(D, state["mind"][:, None], out=D)
    return state["w"] @ D


# -- Lloyd ---------------------------------------------------------------------------------
def _ensure_labels(shard, state, tag, C):
    """Make ``labels`` the assignment to centres ``C`` (tagged ``tag``); -1s when C is None."""
    if state.get("labels_tag") == tag:
        return
    if C is None:
        state["labels"].fill(-1)
    else:
        B.assign_pass(shard.X, state["mu"], state["w"], state["labels"], C)
    state["labels_tag"] = tag


def lloyd_step(shard, state, C, tag, prev_tag, C_prev):
    """One Lloyd pass: ``(sums, weights, inertia, labels changed)`` per centre for this shard.

    Labels changed are counted against the assignment to ``C_prev`` (none on the
    first pass of a run); if this shard's state does not hold it (a shard moved
    to a new worker), it is recomputed first, so the count never depends on where
    the shard ran.
    """
    _ensure_labels(shard, state, prev_tag, C_prev)
    out = B.lloyd_pass(shard.X, state["xn"], state["mu"], state["w"], state["labels"], C)
    state["labels_tag"] = tag
    return out


def farthest(shard, state, C, tag, m):
    """The ``m`` positive-weight rows farthest from their centre in ``C`` (to re-seed empties).

    Returns ``(distances, global_indices, rows, weights, labels)``.
    """
    _ensure_labels(shard, state, tag, C)
    X, labels, w = shard.X, state["labels"], state["w"]
    n, d = X.shape
    dist = np.empty(n)
    for a, e in B.chunks(n, d):
        Xc = B.block(X, a, e)
        if hasattr(Xc, "toarray"):
            Xc = Xc.toarray()
        diff = Xc - C[labels[a:e]]
        dist[a:e] = np.einsum("ij,ij->i", diff, diff)
    dist[w <= 0] = -np.inf
    top = B.top_by_key(dist, m)
    return (dist[top], top + state["offset"], B.rows_dense(X, top), w[top], labels[top])


def assign(shard, state, C, return_labels):
    """Final E-step: labels for ``C`` and the exact inertia (labels returned on request)."""
    inertia = B.assign_pass(shard.X, state["mu"], state["w"], state["labels"], C)
    state["labels_tag"] = None
    return inertia, (state["labels"].copy() if return_labels else None)
