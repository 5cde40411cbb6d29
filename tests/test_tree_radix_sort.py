"""The binning summaries' radix sort gives numpy's sorted array."""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.algorithms.tree._radix_sort import sort_finite


@pytest.mark.parametrize("case", ["normal", "exponential", "integers", "extremes", "tiny",
                                  "with NaN", "float32", "int64", "constant"])
def test_sort_finite_equals_numpy(case):
    rng = np.random.default_rng(4)
    n = 5000
    x = {
        "normal": lambda: rng.normal(size=n) * 1e3,
        "exponential": lambda: rng.exponential(size=n),
        "integers": lambda: rng.integers(-5, 6, n).astype(np.float64),
        "extremes": lambda: rng.choice([-np.inf, np.inf, -1e308, 1e308, 5e-324, -5e-324, 0.0,
                                        1.0, -1.0], n),
        "tiny": lambda: rng.normal(size=3),
        "with NaN": lambda: np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "float32": lambda: rng.normal(size=n).astype(np.float32),
        "int64": lambda: rng.integers(-100, 100, n),
        "constant": lambda: np.full(n, 2.5),
    }[case]()
    got, n_missing = sort_finite(x)
    want = np.sort(x[~np.isnan(x)] if x.dtype.kind == "f" else x)
    assert n_missing == (int(np.isnan(x).sum()) if x.dtype.kind == "f" else 0)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_negative_zero_sorts_before_zero_and_input_is_untouched():
    x = np.array([0.0, -0.0, 1.0, -1.0, -0.0])
    before = x.copy()
    got, _ = sort_finite(x)
    assert np.array_equal(np.signbit(got), [True, True, True, False, False])
    np.testing.assert_array_equal(x, before)
    assert np.array_equal(np.signbit(x), np.signbit(before))
