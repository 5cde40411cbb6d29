"""Same data + same seed -> bit-identical linear models on every engine and worker count.

References are fitted once on the in-process engine with one worker; every
session of ``any_session`` (local and Ray, 1, 2 and 3 workers) must reproduce
them exactly (``np.array_equal``). The datasets have 7 shards, so which worker
holds which shard differs between worker counts: only the shard-ordered
reduction keeps the bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.data import Dataset
from shardlearn.linear_model import LinearRegression, LinearSVC, LogisticRegression, Ridge
from shardlearn.testing import make_linear_regression, make_logistic, session

N_SHARDS = 7


def _datasets():
    rng = np.random.default_rng(0)
    Xb, yb = make_logistic(2100, 6, n_classes=2, random_state=1)
    Xm, ym = make_logistic(2100, 6, n_classes=3, random_state=2)
    sw = rng.uniform(0.5, 2.0, size=2100)
    Xr, yr = make_linear_regression(2100, 6, 2, random_state=3)
    return {
        "binary": Dataset.from_arrays(Xb, yb, sw, n_shards=N_SHARDS),
        "multi": Dataset.from_arrays(Xm, ym, n_shards=N_SHARDS),
        "regression": Dataset.from_arrays(Xr, yr, sw, n_shards=N_SHARDS, multi_target=True),
    }


CASES = {
    "logistic-binary-lbfgs": ("binary", lambda: LogisticRegression(C=0.5)),
    "logistic-binary-trust-ncg": ("binary", lambda: LogisticRegression(C=0.5, solver="trust-ncg")),
    "logistic-multi-lbfgs": ("multi", lambda: LogisticRegression(class_weight="balanced")),
    "logistic-multi-trust-ncg": ("multi", lambda: LogisticRegression(solver="trust-ncg")),
    "svc-binary": ("binary", lambda: LinearSVC(intercept_scaling=2.0)),
    "svc-multi": ("multi", lambda: LinearSVC(solver="trust-ncg", class_weight="balanced")),
    "ridge": ("regression", lambda: Ridge(alpha=1.5)),
    "linear-regression": ("regression", lambda: LinearRegression()),
}


def _fit_all(datasets):
    out = {}
    for name, (data, make) in CASES.items():
        est = make().fit(datasets[data])
        out[name] = (est.coef_, est.intercept_, est.fit_report_.objective_history)
    return out


@pytest.fixture(scope="module")
def reference():
    """Every case fitted once on the in-process engine with one worker."""
    datasets = _datasets()
    with session("local", n_workers=1):
        return datasets, _fit_all(datasets)


@pytest.mark.timeout(600)
def test_bit_identical_on_every_engine_and_worker_count(reference, any_session):
    datasets, ref = reference
    got = _fit_all(datasets)
    where = f"{any_session.engine_name} with {any_session.n_workers} workers"
    for name, (coef, intercept, history) in got.items():
        rcoef, rintercept, rhistory = ref[name]
        assert np.array_equal(coef, rcoef), f"{name}: coef_ differs on {where}"
        assert np.array_equal(intercept, rintercept), f"{name}: intercept_ differs on {where}"
        assert history == rhistory, f"{name}: objective history differs on {where}"


def test_placement_really_differs_between_worker_counts(reference):
    # Guard for the test above: with 7 shards, 2 and 3 workers hold different shard sets.
    from shardlearn.runtime import place_by_rows

    rows = [s.n_rows for s in reference[0]["multi"].shards]
    assert place_by_rows(rows, 2) != place_by_rows(rows, 3)
    assert all(len(ids) > 1 for ids in place_by_rows(rows, 3))
