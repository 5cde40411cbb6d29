"""Functional core of distributed k-means: seeding and Lloyd iterations on a coordinator.

The coordinator keeps only centres (k x d) and per-centre sums; every pass over
the data runs on the workers (:mod:`.kmeans_kernels`) and is folded in shard
order, so the same data and seed give the same bits on any engine and worker count.

Seeding
-------
``"k-means||"`` (Bahmani et al., 2012): one centre drawn by weight, then
``init_rounds`` rounds that each keep every row independently with probability
``min(1, l * w d^2 / phi)`` (``l = oversampling_factor * k``), one pass per
round; a last pass weighs each candidate by the rows nearest to it, and the
coordinator reduces the candidates to k centres with weighted greedy k-means++
followed by weighted Lloyd iterations.

``"k-means++"``: exact greedy k-means++ (as scikit-learn: ``2 + ln k`` local
trials per centre), distributed: per centre one pass draws the trials (D^2
sampling, exact across shards through Efraimidis-Spirakis keys) and one pass
evaluates their potentials: 2k passes, fine for small k.

``"random"``: k distinct rows drawn by weight (one pass). An array: used as is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ...comm.reduce import ordered_reduce
from ...progress import progress_bar
from ...runtime import Coordinator, FitReport
from . import _blocks as B
from . import kmeans_kernels as K
from .kmeans_kernels import PHASE_FIRST, PHASE_PLUSPLUS, PHASE_RANDOM

#: k-means||: restarts of weighted k-means++ + Lloyd on the candidates (coordinator only).
CANDIDATE_RESTARTS = 10



@dataclass
class KMeansFit:
    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    report: FitReport


def tolerance(n, m2, tol):
    """scikit-learn's tolerance: ``tol`` times the mean per-feature variance of X."""
    return 0.0 if tol == 0 else float(np.mean(m2 / n)) * tol


def fit_kmeans(dataset, *, n_clusters, init="k-means||", n_init=1, max_iter=300, tol=1e-4,
               random_state=None, oversampling_factor=2.0, init_rounds=5,
               estimator="KMeans", session=None, checkpoint=None, resume=None) -> KMeansFit:
    """Fit k-means on a sharded dataset (already validated; ``n_clusters <= n_rows``).

    ``checkpoint`` / ``resume`` (:class:`~shardlearn.runtime.checkpoint.CheckpointStore`):
    the coordinator's state after every ``every`` Lloyd passes (run, pass, centres,
    the RNG that draws each run's seed, the best run so far); a resumed fit ends
    bit-identical to an uninterrupted one.
    """
    t0 = time.perf_counter()
    rs = random_state if isinstance(random_state, np.random.RandomState) else \
        np.random.RandomState(random_state)
    with Coordinator(dataset, session=session, name=estimator) as coord:
        n, _, m2, _ = ordered_reduce(coord.map(K.prepare, dataset.boundaries, step="prepare",
                                               restore=True), B.merge_moments)
        tol_abs = tolerance(n, m2, tol)
        best = None
        histories, seeding_s = [], 0.0
        saved = _unpack_checkpoint(resume.load(), rs) if resume is not None else None
        if saved is not None:
            best, histories = saved["best"], saved["histories"]
        with progress_bar(f"{estimator} (k={n_clusters})", total=n_init * max_iter) as bar:
            for run in range(saved["run"] if saved else 0, n_init):
                if saved is not None and run == saved["run"]:
                    seed, C, start = saved["seed"], saved["C"], saved["start"]
                    done = saved["done"]
                else:
                    seed = int(rs.randint(np.iinfo(np.int32).max))
                    ts = time.perf_counter()
                    C = initial_centers(coord, init, n_clusters, seed, oversampling_factor,
                                        init_rounds, tag=run)
                    seeding_s += time.perf_counter() - ts
                    start, done = None, None
                on_iteration = None
                if checkpoint is not None:
                    def on_iteration(n_done, C_, C_prev, history, converged, run=run, seed=seed,
                                     best=best):
                        checkpoint.maybe_save(
                            sum(len(h) for h in histories) + n_done,
                            lambda: _pack_checkpoint(run, seed, rs, n_done, C_, C_prev, history,
                                                     converged, converged or n_done == max_iter,
                                                     best, histories))
                if done is not None:       # the checkpoint was taken after the run ended
                    n_iter, history, converged = done
                else:
                    C, n_iter, history, converged = lloyd(coord, C, max_iter, tol_abs, bar,
                                                          tag=run, start=start,
                                                          on_iteration=on_iteration)
                histories.append(history)
                inertia = None
                if n_init > 1:
                    inertia = ordered_reduce([r[0] for r in coord.map(K.assign, C, False,
                                                                      step="assign")])
                if best is None or inertia < best[0]:
                    best = (inertia, C, n_iter, converged, len(histories) - 1)
        _, C, n_iter, converged, run = best
        out = coord.map(K.assign, C, True, step="assign")
        inertia = float(ordered_reduce([r[0] for r in out]))
        labels = np.concatenate([r[1] for r in out])
        report = FitReport.from_runtime(
            estimator, coord.report, wall_s=time.perf_counter() - t0, n_iter=n_iter,
            converged=converged, objective_history=histories[run],
            extra={"init": init if isinstance(init, str) else "array", "n_init": n_init,
                   "best_run": run, "seeding_s": seeding_s, "tol": tol_abs,
                   "inertia_histories": histories},
        )
    return KMeansFit(C, labels, inertia, n_iter, report)


# -- checkpoints ----------------------------------------------------------------------------
def _pack_checkpoint(run, seed, rs, n_done, C, C_prev, history, converged, run_done, best,
                     histories):
    """Arrays and JSON meta of the coordinator's state after ``n_done`` passes of ``run``."""
    _, keys, pos, has_gauss, cached = rs.get_state()
    arrays = {"C": C, "C_prev": C if C_prev is None else C_prev,
              "history": np.asarray(history, dtype=np.float64), "rs_keys": keys,
              "histories": np.asarray([v for h in histories for v in h], dtype=np.float64)}
    meta = {"run": run, "seed": seed, "n_done": n_done, "run_done": bool(run_done),
            "converged": bool(converged),
            "has_prev": C_prev is not None, "rs": [int(pos), int(has_gauss), float(cached)],
            "history_lengths": [len(h) for h in histories], "best": None}
    if best is not None:
        inertia, bC, b_iter, b_conv, b_run = best
        arrays["best_C"] = bC
        meta["best"] = [None if inertia is None else float(inertia), int(b_iter), bool(b_conv),
                        int(b_run)]
    return arrays, meta


def _unpack_checkpoint(loaded, rs):
    _, arrays, meta = loaded
    pos, has_gauss, cached = meta["rs"]
    rs.set_state(("MT19937", arrays["rs_keys"], pos, has_gauss, cached))
    flat, histories, k = arrays["histories"], [], 0
    for n in meta["history_lengths"]:
        histories.append([float(v) for v in flat[k:k + n]])
        k += n
    best = None
    if meta["best"] is not None:
        inertia, b_iter, b_conv, b_run = meta["best"]
        best = (inertia, arrays["best_C"], b_iter, b_conv, b_run)
    history = [float(v) for v in arrays["history"]]
    C_prev = arrays["C_prev"] if meta["has_prev"] else None
    return {"run": meta["run"], "seed": meta["seed"], "C": arrays["C"], "best": best,
            "histories": histories, "start": (meta["n_done"], C_prev, history),
            "done": (meta["n_done"], history, meta["converged"]) if meta["run_done"] else None}


# -- Lloyd ---------------------------------------------------------------------------------
def lloyd(coord, C, max_iter, tol, bar=None, tag=0, *, start=None, on_iteration=None):
    """Lloyd iterations from centres ``C`` with scikit-learn's stopping rules.

    Stops when no label changed (strict convergence) or when the squared centre
    shift is ``<= tol``. Empty clusters take the farthest rows from their
    centres (deterministic order), as scikit-learn does. Returns
    ``(centres, n_iter, inertia_history, converged)``; the history holds the
    inertia of the centres each pass started from.

    ``start = (n_done, C_prev, history)`` continues a run from a checkpoint (``C``
    being the centres after ``n_done`` passes); ``on_iteration(n_done, C, C_prev,
    history, converged)`` runs after every pass.
    """
    C = np.array(C, dtype=np.float64)
    it0, C_prev, history = start if start is not None else (0, None, [])
    history = list(history)
    converged = False
    it = it0 - 1
    for it in range(it0, max_iter):
        sums, wsum, inertia, changed = coord.reduce(K.lloyd_step, C, (tag, it), (tag, it - 1),
                                                    C_prev, step="lloyd")
        history.append(float(inertia))
        empty = np.flatnonzero(wsum <= 0)
        if empty.size:
            relocate_empty(coord, C, (tag, it), sums, wsum, empty)
        C_prev = C
        new = C.copy()
        full = wsum > 0
        new[full] = sums[full] / wsum[full, None]
        shift = float(((new - C) ** 2).sum())
        C = new
        if bar is not None:
            bar.advance(1, info=f"inertia {inertia:.6g}")
        converged = changed == 0 or shift <= tol
        if on_iteration is not None:
            on_iteration(it + 1, C, C_prev, history, converged)
        if converged:
            break
    return C, it + 1, history, converged


def relocate_empty(coord, C, tag, sums, wsum, empty):
    """Give each empty cluster one of the rows farthest from their centres (in place)."""
    parts = coord.map(K.farthest, C, tag, len(empty), step="relocate")
    dist, _, rows, w, old = B.merge_top(parts, len(empty))
    for new_id, row, wi, old_id in zip(empty, rows, w, old):
        sums[old_id] -= wi * row
        wsum[old_id] -= wi
        sums[new_id] = wi * row
        wsum[new_id] = wi


# -- seeding -------------------------------------------------------------------------------
def initial_centers(coord, init, k, seed, oversampling_factor=2.0, rounds=5, tag=0):
    if not isinstance(init, str):
        return np.array(init, dtype=np.float64)
    if init == "random":
        return _sample(coord, k, seed, PHASE_RANDOM, 0)
    if init == "k-means++":
        return _kmeans_plusplus(coord, k, seed, tag)
    if init == "k-means||":
        return _kmeans_parallel(coord, k, seed, oversampling_factor, rounds, tag)
    raise ValueError(f"unknown init {init!r}")


def _sample(coord, m, seed, phase, rnd, potential_of=None, exclude=None):
    parts = coord.map(K.sample_rows, m, seed, phase, rnd, potential_of, exclude, step="seed")
    return B.merge_top(parts, m)[2]


def _kmeans_plusplus(coord, k, seed, tag):
    n_trials = 2 + int(np.log(k))
    C = _sample(coord, 1, seed, PHASE_FIRST, 0)
    for j in range(1, k):
        trials = _sample(coord, n_trials, seed, PHASE_PLUSPLUS, j,
                         potential_of=(tag, C, len(C) - 1))
        if len(trials) == 0:  # every row sits on a centre already: any row will do
            trials = _sample(coord, 1, seed, PHASE_PLUSPLUS, j)
        if len(trials) > 1:
            pot = ordered_reduce(coord.map(K.potentials, tag, C, trials, step="seed"))
            trials = trials[[int(np.argmin(pot))]]
        C = np.concatenate([C, trials[:1]])
    return C


def _kmeans_parallel(coord, k, seed, oversampling_factor, rounds, tag):
    ell = oversampling_factor * k
    parts = coord.map(K.sample_rows, 1, seed, PHASE_FIRST, 0, None, None, step="seed")
    _, idx, cands = B.merge_top(parts, 1)
    n_old = 0
    for r in range(1, rounds + 1):
        parts = coord.map(K.kmeans_parallel_round, tag, cands, n_old, ell, seed, r, step="seed")
        n_old = len(cands)
        phi = ordered_reduce([p[0] for p in parts])
        if phi <= 0:
            break
        keep = np.concatenate([p[1] for p in parts]) > phi / ell
        cands = np.concatenate([cands, np.concatenate([p[3] for p in parts])[keep]])
        idx = np.concatenate([idx, np.concatenate([p[2] for p in parts])[keep]])
    weights = ordered_reduce(coord.map(K.candidate_weights, tag, cands, n_old, step="seed"))
    if len(cands) < k:
        # Too few distinct candidates (tiny or heavily duplicated data): add rows drawn by weight.
        extra = _sample(coord, k - len(cands), seed, PHASE_RANDOM, 0, exclude=idx)
        cands = np.concatenate([cands, extra])
        weights = np.concatenate([weights, np.zeros(len(extra))])
        if len(cands) <= k:
            return cands[:k]
    # Reduce the weighted candidates to k centres: greedy k-means++ then Lloyd, a few
    # times (cheap: candidates are few), keeping the lowest weighted inertia.
    rng = np.random.default_rng([int(seed), 99])
    best = None
    for _ in range(CANDIDATE_RESTARTS):
        C, _, _, sse = local_kmeans(cands, weights, kmeans_plusplus(cands, weights, k, rng),
                                    max_iter=100)
        if best is None or sse.sum() < best[0]:
            best = (sse.sum(), C)
    return best[1]


# -- small in-memory k-means (candidates, micro-clusters) -------------------------------------
def kmeans_plusplus(X, w, k, rng, n_local_trials=None):
    """Weighted greedy k-means++ on a dense in-memory array (rows drawn by ``w d^2``).

    Rows of zero weight are never chosen while a positive-weight row is left.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = len(X)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(k))
    mean, mu, xn, _ = B.moments(X)
    idx = np.empty(k, dtype=np.int64)
    idx[0] = _draw(np.cumsum(w if w.sum() > 0 else np.ones(n)), rng, 1)[0]
    mind = B.sq_distances(X, xn, mu, X[idx[:1]])[:, 0]
    for j in range(1, k):
        pot = w * mind
        total = pot.sum()
        base = pot if total > 0 else (w if w.sum() > 0 else np.ones(n))
        cand = _draw(np.cumsum(base), rng, n_local_trials)
        D = B.sq_distances(X, xn, mu, X[cand])
        np.minimum(D, mind[:, None], out=D)
        best = int(np.argmin(w @ D)) if n_local_trials > 1 else 0
        idx[j] = cand[best]
        mind = D[:, best]
    return X[idx].copy()


def _draw(cum, rng, m):
    r = rng.random(m) * cum[-1]
    return np.minimum(np.searchsorted(cum, r, side="right"), len(cum) - 1)


def local_kmeans(X, w, C, max_iter=100, tol=0.0):
    """Weighted Lloyd on a dense in-memory array; returns (centres, labels, weights, sse).

    ``sse`` is each centre's weighted within-cluster sum of squares. A centre
    that loses all its rows keeps its position (weight 0).
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    _, mu, xn, _ = B.moments(X)
    labels = np.full(len(X), -1, dtype=np.int32)
    C = np.array(C, dtype=np.float64)
    for _ in range(max_iter):
        sums, wsum, _, changed = B.lloyd_pass(X, xn, mu, w, labels, C)
        new = C.copy()
        full = wsum > 0
        new[full] = sums[full] / wsum[full, None]
        shift = float(((new - C) ** 2).sum())
        C = new
        if changed == 0 or shift <= tol:
            break
    B.assign_pass(X, mu, w, labels, C)
    diff = X - C[labels]
    sse = np.bincount(labels, weights=w * np.einsum("ij,ij->i", diff, diff), minlength=len(C))
    weights = np.bincount(labels, weights=w, minlength=len(C))
    return C, labels, weights, sse
