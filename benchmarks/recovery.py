"""Cost of fault tolerance, measured in one run on Ray (real SIGKILL of a worker process).

    python benchmarks/recovery.py [--rows 200000] [--features 20] [--workers 3]

For each estimator: fit time without faults, then with one worker killed half-way
through the fit; the overhead in seconds and as a multiple of the fault-free fit,
with the report's split (time to detect + time to recover), and a check that
the model is bit-identical. Then the straggler experiment: one worker made 4x
slower; per-step time before and after rebalancing, against a balanced run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import shardlearn
from shardlearn.data import Dataset
from shardlearn.runtime import Coordinator, FaultSpec
from shardlearn.testing import inject_faults, make_logistic


def _estimators():
    from shardlearn.decomposition import PCA
    from shardlearn.linear_model import LogisticRegression

    out = {
        "LogisticRegression": (lambda: LogisticRegression(tol=1e-6, max_iter=200), "loss_grad",
                               "coef_"),
        "PCA (gram)": (lambda: PCA(n_components=5), "gram", "components_"),
        "PCA (randomized)": (lambda: PCA(n_components=5, svd_solver="randomized",
                                         random_state=0), "power", "components_"),
    }
    try:
        from shardlearn.cluster import KMeans

        out["KMeans"] = (lambda: KMeans(n_clusters=8, n_init=1, random_state=0, max_iter=30,
                                        tol=0.0), "lloyd", "cluster_centers_")
    except ImportError:
        pass
    try:
        from shardlearn.ensemble import GradientBoostingClassifier

        out["GradientBoosting"] = (lambda: GradientBoostingClassifier(n_estimators=20,
                                                                      random_state=0),
                                   None, "predict_proba")
    except ImportError:
        pass
    return out


def _sleepy(shard, state, seconds_per_row):
    time.sleep(seconds_per_row * shard.n_rows)
    return shard.n_rows


def straggler(n_workers):
    ds = Dataset.from_arrays(np.zeros((24_000, 2)), n_shards=24)

    def run(slow):
        with shardlearn.init("ray", n_workers=n_workers):
            specs = [FaultSpec(1, "slow", factor=4.0)] if slow else []
            with inject_faults(*specs), Coordinator(ds) as c:
                times = []
                for _ in range(15):
                    t = time.perf_counter()
                    c.map(_sleepy, 2e-6)
                    times.append(time.perf_counter() - t)
                return times, c.report

    balanced, _ = run(False)
    slowed, report = run(True)
    ref = statistics.median(balanced[-5:])
    print(f"\nstraggler ({n_workers} workers, one 4x slower, 24 equal shards):")
    print(f"  balanced run: {ref * 1e3:.1f} ms/step")
    print(f"  before rebalancing: {statistics.median(slowed[:3]) * 1e3:.1f} ms/step "
          f"({statistics.median(slowed[:3]) / ref:.2f}x balanced)")
    print(f"  after rebalancing:  {statistics.median(slowed[-5:]) * 1e3:.1f} ms/step "
          f"({statistics.median(slowed[-5:]) / ref:.2f}x balanced)")
    for m in report.moves:
        print(f"  moved (shard, from, to): {m['moves']} in {m['seconds'] * 1e3:.1f} ms")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--workers", type=int, default=3)
    args = p.parse_args()
    X, y = make_logistic(args.rows, args.features, random_state=0)
    ds = Dataset.from_arrays(X, y, n_shards=12)
    print(f"data: {args.rows} x {args.features}, 12 shards, Ray with {args.workers} workers")
    print(f"{'estimator':<22}{'fault-free s':>13}{'1 kill s':>10}{'overhead s':>12}{'x':>7}"
          f"{'detect s':>10}{'recover s':>11}{'identical':>11}")
    with shardlearn.init("ray", n_workers=args.workers):
        for name, (make, step, attr) in _estimators().items():
            make().fit(ds)                                   # warm the workers
            t = time.perf_counter()
            clean = make().fit(ds)
            t_clean = time.perf_counter() - t
            steps = [s for s in clean.fit_report_.steps if s.name not in ("load",)]
            if step is None:                                 # the estimator's busiest step
                step = max(steps, key=lambda s: s.calls).name
            calls = next(s.calls for s in steps if s.name == step)
            with inject_faults(FaultSpec(1, "kill", step=step, call=calls // 2)):
                t = time.perf_counter()
                faulty = make().fit(ds)
                t_fault = time.perf_counter() - t
            rep = faulty.fit_report_
            a = getattr(clean, attr)
            b = getattr(faulty, attr)
            same = np.array_equal(a(X[:1000]), b(X[:1000])) if callable(a) else np.array_equal(a, b)
            det = sum(f["detect_s"] for f in rep.failures)
            rec = sum(f["recovery_s"] for f in rep.failures)
            print(f"{name:<22}{t_clean:>13.3f}{t_fault:>10.3f}{t_fault - t_clean:>12.3f}"
                  f"{t_fault / t_clean:>7.2f}{det:>10.3f}{rec:>11.3f}{str(same):>11}")
    straggler(args.workers)
    print("\nstep timeout default: 600 s for a step's first call, then max(30 s, 10 x the "
          "slowest successful call of that step) (runtime/policies.py StepTimeoutPolicy)")


if __name__ == "__main__":
    main()
