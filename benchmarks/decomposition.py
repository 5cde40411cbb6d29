"""Distributed PCA and TruncatedSVD vs scikit-learn, in one run on one machine.

    python benchmarks/decomposition.py                       # full sizes (minutes)
    python benchmarks/decomposition.py --rows 200000 --svd-rows 100000 --svd-features 5000

PCA: 1,000,000 x 100 -> 10 components (dense float64, decaying spectrum, mean far
from the origin): shardlearn's default ("gram") solver and its randomized solver
against scikit-learn's ``svd_solver="randomized"``, ``"full"`` and (for reference)
``"covariance_eigh"``. The Gram step is compared with the matmul floor,
``2 n d^2`` FLOP divided by the float64 matmul rate measured in this run with numpy
(square 2048 x 2048 matmul, one BLAS thread and all threads; the floor quoted in the
ratio uses all threads, i.e. the whole machine, which is what the workers share).

TruncatedSVD: CSR 1,000,000 x 20,000, about 20 non-zeros per row with Zipf-like
column popularity (a term-document matrix), k=20, against scikit-learn's randomized
TruncatedSVD with the same n_iter and n_oversamples.

Fit time is what a user waits for: from ``fit`` to its return, including moving the
data to the workers (``shardlearn.init`` runs before timing, so starting the
cluster is not counted). scikit-learn uses all cores; each shardlearn worker uses
one BLAS thread. Timings on a shared machine are noisy: compare ratios within a run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import scipy.sparse as sp
from _machine import best_of, matmul_rate
from sklearn.decomposition import PCA as SkPCA
from sklearn.decomposition import TruncatedSVD as SkTruncatedSVD
from threadpoolctl import threadpool_limits

import shardlearn
from shardlearn.algorithms.decomposition.kernels import centred_gram
from shardlearn.data import Dataset
from shardlearn.data.shard import Shard
from shardlearn.decomposition import PCA, TruncatedSVD


def make_pca_data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    scales = 10.0 * 0.8 ** np.arange(d)
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = rng.standard_normal(size=(n, d))
    X *= scales
    X = X @ R
    X += 50.0 * rng.normal(size=d)
    return X


def make_term_document(n, d, nnz_per_row, seed=0):
    """CSR counts-like matrix: Zipf column popularity, positive weights, ~nnz_per_row per row."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(d) + 10.0) ** 1.1
    p /= p.sum()
    cols = rng.choice(d, size=n * nnz_per_row, p=p).astype(np.int32)
    rows = np.repeat(np.arange(n, dtype=np.int32), nnz_per_row)
    vals = rng.random(n * nnz_per_row) + 0.5
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, d))
    X.sum_duplicates()
    X.sort_indices()
    return X


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def step_wall(report, name):
    return sum(s.wall_s for s in report.steps if s.name == name)


def sign_aligned_error(A, B):
    """max |A - B| after flipping each row of A to B's sign."""
    s = np.sign(np.sum(A * B, axis=1))[:, None]
    return float(np.abs(A * s - B).max())


def bench_pca(args, rates):
    n, d, k = args.rows, args.features, args.components
    X = make_pca_data(n, d)
    print(f"\n== PCA {n} x {d} -> {k} components ({X.nbytes / 1e6:.0f} MB float64) ==")
    floor_all = 2 * n * d * d / rates["all"]
    floor_1 = 2 * n * d * d / rates["one"]
    print(f"matmul floor 2nd^2/rate: {floor_all:.3f} s (all threads), {floor_1:.3f} s (1 thread)")

    results = {}
    t, ref_full = timed(lambda: SkPCA(k, svd_solver="full").fit(X))
    results["sklearn full"] = t
    t, sk_rand = timed(lambda: SkPCA(k, svd_solver="randomized", random_state=0).fit(X))
    results["sklearn randomized"] = t
    t, _ = timed(lambda: SkPCA(k, svd_solver="covariance_eigh").fit(X))
    results["sklearn covariance_eigh"] = t
    for name, est in results.items():
        print(f"  {name:32s} {est:8.3f} s")
    err_sk = sign_aligned_error(sk_rand.components_, ref_full.components_)
    print(f"  sklearn randomized: max |components - full| = {err_sk:.1e}")

    for engine in args.engines:
        with shardlearn.init(engine, n_workers=args.workers):
            # Warm-up on small data so every worker has imported the kernels; not timed.
            warm = Dataset.from_arrays(X[:8000], n_shards=2 * args.workers)
            PCA(2).fit(warm)
            PCA(2, svd_solver="randomized").fit(warm)
            for solver in ("gram", "randomized"):
                est = PCA(k, svd_solver=solver, random_state=0)
                t, model = timed(lambda est=est: est.fit(X))
                rep = model.fit_report_
                err = sign_aligned_error(model.components_, ref_full.components_)
                ev = np.abs(model.explained_variance_ / ref_full.explained_variance_ - 1).max()
                line = (f"  shardlearn {solver:10s} {engine} {args.workers}w {t:8.3f} s "
                        f"= {t / results['sklearn randomized']:.2f}x sklearn randomized, "
                        f"{t / results['sklearn full']:.2f}x full "
                        f"(load {rep.load_s:.3f} s; max|dcomp| {err:.1e}, ev rel {ev:.1e})")
                print(line)
                if solver == "gram":
                    g = step_wall(rep, "gram")
                    print(f"      gram step {g:.3f} s = {g / floor_all:.2f}x the all-threads "
                          f"matmul floor ({g / floor_1:.2f}x the 1-thread floor)")

    # The raw-Gram shortcut (one dgemm, centre afterwards) vs the centred chunked kernel.
    m = min(n, 200_000)
    Xs = X[:m]
    exact_mean = np.array([math.fsum(c) / m for c in Xs.T])
    Xc = Xs - exact_mean
    ref = Xc.T @ Xc
    del Xc
    with threadpool_limits(limits=1):
        t_raw = best_of(lambda: Xs.T @ Xs)
        t_ker = best_of(lambda: centred_gram(Shard(0, Xs), {}))
        raw = Xs.T @ Xs - m * np.outer(exact_mean, exact_mean)
        ours = centred_gram(Shard(0, Xs), {})[2]
    scale = np.abs(ref).max()
    print(f"  Gram of {m} rows, 1 thread: raw X^T X (syrk) {t_raw:.3f} s, centred chunked kernel "
          f"{t_ker:.3f} s ({t_ker / t_raw:.2f}x); max error / max |C|: raw-then-centre "
          f"{np.abs(raw - ref).max() / scale:.1e}, centred kernel {np.abs(ours - ref).max() / scale:.1e}")


def bench_svd(args):
    n, d, nnz, k = args.svd_rows, args.svd_features, args.nnz, args.svd_components
    t, X = timed(lambda: make_term_document(n, d, nnz))
    mb = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 1e6
    print(f"\n== TruncatedSVD CSR {n} x {d}, {X.nnz / n:.1f} nnz/row ({mb:.0f} MB) -> {k} ==")
    t_sk, sk = timed(lambda: SkTruncatedSVD(k, algorithm="randomized", n_iter=5,
                                            random_state=0).fit(X))
    print(f"  sklearn randomized (n_iter=5)    {t_sk:8.3f} s")
    for engine in args.engines:
        with shardlearn.init(engine, n_workers=args.workers):
            TruncatedSVD(2).fit(Dataset.from_arrays(X[:8000], n_shards=2 * args.workers))
            t, model = timed(lambda: TruncatedSVD(k, n_iter=5, random_state=0).fit(X))
            rep = model.fit_report_
            sv = np.abs(model.singular_values_ / sk.singular_values_ - 1).max()
            print(f"  shardlearn {engine} {args.workers}w (n_iter=5)   {t:8.3f} s = "
                  f"{t / t_sk:.2f}x sklearn (load {rep.load_s:.3f} s, power steps "
                  f"{step_wall(rep, 'power'):.3f} s; singular values vs sklearn rel {sv:.1e})")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--features", type=int, default=100)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--svd-rows", type=int, default=1_000_000)
    p.add_argument("--svd-features", type=int, default=20_000)
    p.add_argument("--nnz", type=int, default=20, help="non-zeros per row of the CSR matrix")
    p.add_argument("--svd-components", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--engines", default="local,ray")
    p.add_argument("--skip-pca", action="store_true")
    p.add_argument("--skip-svd", action="store_true")
    args = p.parse_args()
    args.engines = [e for e in args.engines.split(",") if e]
    shardlearn.set_progress("never")

    rates = {"one": matmul_rate(threads=1), "all": matmul_rate(threads=None)}
    print(f"float64 matmul (2048^3, numpy): {rates['one'] / 1e9:.1f} GFLOP/s on 1 thread, "
          f"{rates['all'] / 1e9:.1f} GFLOP/s on all threads")
    if not args.skip_pca:
        bench_pca(args, rates)
    if not args.skip_svd:
        bench_svd(args)


if __name__ == "__main__":
    main()
