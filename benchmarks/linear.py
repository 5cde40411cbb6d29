"""Distributed logistic regression vs scikit-learn, in one run on one machine.

    python benchmarks/linear.py [--rows 800000] [--features 50] [--workers 2]

Fit time is what a user waits for: from ``fit`` to its return, including moving
the data to the workers (the Ray cluster is started before timing). Prints:
fit times and their ratios to scikit-learn's lbfgs, the final objectives,
per-iteration time against the machine's scan floor (bytes of X / numpy-sum
bandwidth measured in this run), and the coordination overhead of one step
on Ray measured with a no-op kernel.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _machine import best_of, memory_bandwidth
from scipy.special import expit
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import shardlearn
from shardlearn.data import Dataset
from shardlearn.linear_model import LogisticRegression
from shardlearn.runtime import Coordinator


def objective(X, y, coef, intercept, C):
    """scikit-learn's logistic objective at (coef, intercept)."""
    z = X @ coef.ravel() + intercept[0]
    loss = np.logaddexp(0.0, z) - y * z
    return float(loss.mean() + coef.ravel() @ coef.ravel() / (2 * C * len(y)))


def make_data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d) / np.sqrt(d) * 2
    y = (rng.random(n) < expit(X @ w)).astype(np.int64)
    return X, y


def _noop(shard, state):
    return None


def step_overhead(n_steps=300):
    """Seconds per Coordinator.map of a kernel that does nothing (all shards)."""
    X = np.zeros((4096, 4))
    ds = Dataset.from_arrays(X, n_shards=8)
    with Coordinator(ds) as c:
        for _ in range(20):
            c.map(_noop)
        t = time.perf_counter()
        for _ in range(n_steps):
            c.map(_noop)
        return (time.perf_counter() - t) / n_steps


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=800_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args()

    X, y = make_data(args.rows, args.features)
    bw = memory_bandwidth()
    scan_floor = X.nbytes / bw
    print(f"data: {args.rows} x {args.features} float64 = {X.nbytes / 1e6:.0f} MB; "
          f"memory bandwidth (numpy sum) {bw / 1e9:.1f} GB/s -> scan floor {scan_floor * 1e3:.1f} ms")

    rows = []
    t = time.perf_counter()
    sk = SkLogisticRegression(C=args.C, tol=args.tol, max_iter=1000).fit(X, y)
    t_sk = time.perf_counter() - t
    f_sk = objective(X, y, sk.coef_, sk.intercept_, args.C)
    rows.append(("scikit-learn lbfgs", t_sk, int(sk.n_iter_[0]), None, f_sk))

    for engine in ("local", "ray"):
        with shardlearn.init(engine, n_workers=args.workers):
            with warnings.catch_warnings():   # a 5-iteration fit warms imports and JIT caches
                warnings.simplefilter("ignore")
                LogisticRegression(C=args.C, tol=args.tol, max_iter=5).fit(X[:5000], y[:5000])
            # Ray: the first large fit on a fresh cluster also pays the object store's
            # first touch of its shared memory (a one-off per cluster); the second fit
            # is what a long-running cluster gives.
            for label in (["first fit", "warm cluster"] if engine == "ray" else [""]):
                t = time.perf_counter()
                m = LogisticRegression(C=args.C, tol=args.tol, max_iter=1000).fit(X, y)
                t_fit = time.perf_counter() - t
                rep = m.fit_report_
                evals = rep.extra["function_evaluations"]
                per_eval = rep.workers_s / max(1, evals)
                f = objective(X, y, m.coef_, m.intercept_, args.C)
                name = f"shardlearn {engine} x{args.workers}" + (f" ({label})" if label else "")
                rows.append((name, t_fit, rep.n_iter, (per_eval, rep), f))
            if engine == "ray":
                overhead = step_overhead()

    print(f"\n{'solver':<38}{'fit s':>8}{'x sklearn':>11}{'iters':>7}{'s/pass':>9}"
          f"{'x floor':>9}{'objective':>22}{'rel diff':>10}")
    for name, t_fit, iters, extra, f in rows:
        per = extra[0] if extra else None
        print(f"{name:<38}{t_fit:>8.3f}{t_fit / t_sk:>11.2f}{iters:>7}"
              f"{'' if per is None else f'{per * 1e3:.1f}ms':>9}"
              f"{'' if per is None else f'{per / scan_floor:.2f}':>9}{f:>22.15g}"
              f"{abs(f - f_sk) / abs(f_sk):>10.1e}")
    for name, _, _, extra, _ in rows[1:]:
        rep = extra[1]
        print(f"\n{name}: load {rep.load_s:.3f} s, worker steps {rep.workers_s:.3f} s, "
              f"driver {rep.driver_s:.3f} s, {rep.bytes_moved / 1e6:.1f} MB moved")
        for w in rep.workers:
            print(f"  worker {w.worker}: compute {w.compute_s:.3f} s, communication "
                  f"{w.communication_s:.3f} s, waiting {w.waiting_s:.3f} s")
    print(f"\ncoordination overhead per step on Ray ({args.workers} workers, no-op kernel): "
          f"{overhead * 1e3:.2f} ms")
    print(f"single-thread numpy X @ w: {X.nbytes / best_of(lambda: X @ sk.coef_.ravel()) / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
