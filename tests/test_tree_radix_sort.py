"""The binning summaries' sorts (numpy's and the radix sort) give the same sorted array."""

from __future__ import annotations

import numpy as np
import pytest

from shardlearn.algorithms.tree._radix_sort import chosen_sort, sort_finite

METHODS = ["numpy", "radix", None]  # None: the one this process timed faster


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ["normal", "exponential", "integers", "extremes", "tiny",
                                  "with NaN", "float32", "int64", "constant", "strided",
                                  "zeros and NaN", "all NaN", "empty"])
def test_sort_finite_equals_numpy(case, method):
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
        "strided": lambda: rng.normal(size=(n, 3))[:, 1],
        "zeros and NaN": lambda: rng.choice([0.0, -0.0, np.nan, 1.0, -2.0], n),
        "all NaN": lambda: np.full(n, np.nan),
        "empty": lambda: np.empty(0),
    }[case]()
    before = x.copy()
    got, n_missing = sort_finite(x, method)
    want = np.sort(x[~np.isnan(x)] if x.dtype.kind == "f" else x)
    assert n_missing == (int(np.isnan(x).sum()) if x.dtype.kind == "f" else 0)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    # Bit for bit the same whichever sort ran (the zeros' signs included).
    other, _ = sort_finite(x, "radix" if method == "numpy" else "numpy")
    assert np.array_equal(got.view(np.uint8), other.view(np.uint8))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("method", METHODS)
def test_negative_zero_sorts_before_zero_and_input_is_untouched(method):
    x = np.array([0.0, -0.0, 1.0, -1.0, -0.0, 0.0, -0.0])
    before = x.copy()
    got, _ = sort_finite(x, method)
    assert np.array_equal(np.signbit(got), [True, True, True, True, False, False, False])
    np.testing.assert_array_equal(x, before)
    assert np.array_equal(np.signbit(x), np.signbit(before))


def test_the_process_keeps_one_sort():
    assert chosen_sort() in ("numpy", "radix")
    assert chosen_sort() == chosen_sort()
