"""Distributed histogram boosting and random forests vs scikit-learn, XGBoost, LightGBM.

    python benchmarks/trees.py [--rows 400000] [--test-rows 100000] [--trees 100]
                               [--depth 6] [--rf-rows 160000] [--rf-trees 50]
                               [--rf-depth 10] [--workers 2] [--rounds 3] [--no-ray]
                               [--no-rf] [--no-gbt]

Data: synthetic Higgs-like binary classification (28 features: 21 "low-level"
kinematics-like columns and 7 nonlinear "high-level" combinations; labels from a
noisy nonlinear score, AUC around 0.8 like the real Higgs data).

Fit time is what a user waits for, from ``fit`` to its return: binning, moving
the data to the workers and training (a Ray cluster is started before timing).
AUC is measured on held-out rows. Throughput = rows x features x levels x trees
per second of fit time (the histogram work a level-wise booster does).

Every fit runs once a round (``--rounds``, default 3), all in the same order, so
that a slow minute of a shared machine weighs on both sides of a ratio. The
closing summary prints, from this run: fit time as a multiple of XGBoost's
(boosting) and scikit-learn's (forest), each ratio taken within a round, their
median and each round's; the AUC differences; and fit time as a multiple of the
scan floor: one read of the uint8 binned matrix per level (and per tree for
forests), split over the workers, at the memory bandwidth of a numpy sum
measured here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import memory_bandwidth
from sklearn.metrics import roc_auc_score


def make_higgs_like(n, seed=0):
    rng = np.random.default_rng(seed)
    pt = rng.exponential(1.0, size=(n, 7)) + 0.2           # transverse momenta
    eta = rng.normal(0, 1.2, size=(n, 7))                   # pseudorapidities
    phi = rng.uniform(-np.pi, np.pi, size=(n, 7))            # angles
    low = np.concatenate([pt, eta, phi], axis=1)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = pt * np.cosh(eta)

    def mass(idx):
        E, X, Y, Z = (a[:, idx].sum(1) for a in (e, px, py, pz))
        return np.sqrt(np.maximum(E * E - X * X - Y * Y - Z * Z, 0.0))

    high = np.column_stack([mass([0, 1]), mass([2, 3]), mass([0, 1, 2]), mass([3, 4, 5]),
                            mass([1, 4, 6]), mass([0, 2, 4, 6]), mass(list(range(7)))])
    X = np.concatenate([low, high], axis=1)
    score = (0.8 * np.log1p(high[:, 0]) - 0.6 * np.abs(np.log1p(high[:, 2]) - 1.2)
             + 0.5 * np.tanh(pt[:, 0] - pt[:, 1]) + 0.4 * np.cos(phi[:, 0] - phi[:, 1])
             - 0.3 * np.abs(eta[:, 2]) + 0.3 * np.log1p(high[:, 5]) - 0.4)
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * score))).astype(np.int64)
    return X, y


def warmup(X, y, n_workers):
    """A small dataset of one shard per worker, for the warm-up fits."""
    from shardlearn.data import Dataset

    return Dataset.from_arrays(X[:5000], y[:5000], n_shards=n_workers)


def timed(fit):
    t = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--test-rows", type=int, default=100_000)
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--bins", type=int, default=255)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rf-rows", type=int, default=160_000)
    p.add_argument("--rf-trees", type=int, default=50)
    p.add_argument("--rf-depth", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of every fit in turn; ratios are taken within a round")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--no-rf", action="store_true")
    p.add_argument("--no-gbt", action="store_true")
    args = p.parse_args()

    X, y = make_higgs_like(args.rows + args.test_rows)
    Xtr, ytr, Xte, yte = X[:args.rows], y[:args.rows], X[args.rows:], y[args.rows:]
    engines = [("local", args.workers)] + ([] if args.no_ray else [("ray", args.workers)])
    bw = memory_bandwidth()
    print(f"memory bandwidth (numpy sum, 1 core): {bw / 1e9:.1f} GB/s")
    # times[name][round] = (seconds, auc). Every round fits everything once, in the
    # same order, so a slower minute of a shared machine weighs on both sides of a
    # ratio; each ratio is taken within a round, and the summary gives their median.
    times: dict = {}
    for r in range(args.rounds):
        print(f"== round {r + 1} of {args.rounds} ==", flush=True)
        if not args.no_gbt:
            _boosting_round(args, engines, Xtr, ytr, Xte, yte, times)
        if not args.no_rf:
            _forest_round(args, engines, Xtr, ytr, Xte, yte, times)
    _print_ratios(args, times, bw, X.shape[1])


def _settle(engine):
    """After a Ray session: wait for its processes to exit, then a little more. A fit
    right after ray.shutdown ran 15-20% slower on a 2-core VM (measured: 3.9-4.0 s
    against 3.3-3.4 s five seconds later), which would fall on whichever fit came next."""
    if engine != "ray":
        return
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and _ray_processes():
        time.sleep(0.5)
    time.sleep(3.0)


def _ray_processes() -> int:
    """Processes of a Ray cluster still running (Linux /proc; 0 elsewhere)."""
    import glob

    names = (b"raylet", b"gcs_server", b"ray::", b"dashboard", b"log_monitor")
    count = 0
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        count += any(n in cmd for n in names)
    return count


def _report(times, name, seconds, auc, work=None):
    times.setdefault(name, []).append((seconds, auc))
    thr = f"   {work / seconds / 1e6:9.1f} M rows*features*levels/s" if work else ""
    print(f"{name:<40s} fit {seconds:8.2f} s   AUC {auc:.4f}{thr}", flush=True)


def _fit_ours(times, label, engines, cls, params, X, y, auc, work, details=False):
    """shardlearn's fits of one round: per engine, a warm-up, then one timed fit
    (Ray: the first on fresh actors, a new cluster every round, then a warm one:
    fresh processes pay for first touches of memory, more on VMs)."""
    import shardlearn

    for engine, n in engines:
        with shardlearn.init(engine, n_workers=n):
            # Warm-up on every worker (one shard each): numba compilation is cached
            # on disk, but each Ray worker imports the modules and loads the kernels.
            cls(n_estimators=2, max_depth=2).fit(warmup(X, y, n))
            for run in (["first fit", "warm"] if engine == "ray" else [""]):
                m, s = timed(lambda: cls(**params).fit(X, y))
                _report(times, f"{label} {engine}" + (f" {run}" if run else ""), s, auc(m), work)
                if details:
                    rep = m.fit_report_
                    print(f"    load {rep.load_s:.2f} s, worker steps {rep.workers_s:.2f} s, "
                          f"driver {rep.driver_s:.2f} s, {rep.bytes_moved / 1e6:.1f} MB moved",
                          flush=True)
        _settle(engine)


def _auc_on(Xte, yte):
    def auc(model):
        return roc_auc_score(yte, model.predict_proba(Xte)[:, 1])

    return auc


def _boosting_round(args, engines, Xtr, ytr, Xte, yte, times):
    from shardlearn.ensemble import GradientBoostingClassifier

    work = args.rows * Xtr.shape[1] * args.trees * args.depth
    auc = _auc_on(Xte, yte)
    _fit_ours(times, "GBT", engines, GradientBoostingClassifier,
              dict(n_estimators=args.trees, max_depth=args.depth, learning_rate=args.lr,
                   max_bins=args.bins, random_state=0),
              Xtr, ytr, auc, work, details=True)
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.workers):
        m, s = timed(lambda: HistGradientBoostingClassifier(
            max_iter=args.trees, max_depth=args.depth, max_leaf_nodes=None,
            learning_rate=args.lr, max_bins=args.bins, early_stopping=False).fit(Xtr, ytr))
    _report(times, "sklearn HistGradientBoosting", s, auc(m), work)
    try:
        import xgboost as xgb

        m, s = timed(lambda: xgb.XGBClassifier(
            n_estimators=args.trees, max_depth=args.depth, learning_rate=args.lr,
            tree_method="hist", max_bin=args.bins + 1, n_jobs=args.workers).fit(Xtr, ytr))
        _report(times, "XGBoost hist", s, auc(m), work)
    except ImportError:
        print("xgboost not installed")
    try:
        import lightgbm as lgb

        m, s = timed(lambda: lgb.LGBMClassifier(
            n_estimators=args.trees, max_depth=args.depth, num_leaves=2 ** args.depth,
            learning_rate=args.lr, max_bin=args.bins, n_jobs=args.workers,
            verbose=-1).fit(Xtr, ytr))
        _report(times, "LightGBM", s, auc(m), work)
    except ImportError:
        print("lightgbm not installed")


def _forest_round(args, engines, Xtr, ytr, Xte, yte, times):
    from sklearn.ensemble import RandomForestClassifier as SkRF

    from shardlearn.ensemble import RandomForestClassifier

    n = args.rf_rows
    Xr, yr = Xtr[:n], ytr[:n]
    auc = _auc_on(Xte, yte)
    _fit_ours(times, "RF", engines, RandomForestClassifier,
              dict(n_estimators=args.rf_trees, max_depth=args.rf_depth, max_bins=args.bins,
                   random_state=0),
              Xr, yr, auc, n * Xtr.shape[1] * args.rf_depth * args.rf_trees)
    m, s = timed(lambda: SkRF(n_estimators=args.rf_trees, max_depth=args.rf_depth,
                              n_jobs=args.workers, random_state=0).fit(Xr, yr))
    _report(times, "sklearn RandomForest", s, auc(m))


def _print_ratios(args, times, bw, d):
    print(f"== ratios ({args.workers} workers / threads everywhere; median of the "
          f"{args.rounds} rounds' own ratios, then each round's) ==")
    gbt_floor = args.trees * args.depth * args.rows * d / (bw * args.workers)
    rf_floor = args.rf_trees * args.rf_depth * args.rf_rows * d / (bw * args.workers)
    for ours, ref, floor in (("GBT local", "XGBoost hist", gbt_floor),
                             ("GBT ray first fit", "XGBoost hist", gbt_floor),
                             ("GBT ray warm", "XGBoost hist", gbt_floor),
                             ("GBT local", "LightGBM", None),
                             ("GBT local", "sklearn HistGradientBoosting", None),
                             ("RF local", "sklearn RandomForest", rf_floor),
                             ("RF ray first fit", "sklearn RandomForest", rf_floor),
                             ("RF ray warm", "sklearn RandomForest", rf_floor)):
        if ours not in times or ref not in times:
            continue
        pairs = list(zip(times[ours], times[ref]))
        ratios = [t / tr for (t, _), (tr, _) in pairs]
        auc_gap = float(np.median([a - ar for (_, a), (_, ar) in pairs]))
        t_med = float(np.median([t for t, _ in times[ours]]))
        extra = f"   {t_med / floor:6.1f}x the binned scan floor" if floor else ""
        each = " ".join(f"{x:.2f}" for x in ratios)
        print(f"{ours:<17s} / {ref:<28s} time {np.median(ratios):5.2f}x ({each})   "
              f"AUC {auc_gap:+.4f}{extra}")


if __name__ == "__main__":
    main()
