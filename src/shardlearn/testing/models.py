"""Assertions on fitted models, shared by the tests of every backend."""

from __future__ import annotations

import numpy as np


def assert_same_forest(a: dict, b: dict) -> None:
    """Two fitted forests (``estimator.forest_``) are the same, array for array, bit for bit."""
    assert a.keys() == b.keys(), f"different node arrays: {sorted(a)} vs {sorted(b)}"
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
