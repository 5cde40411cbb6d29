"""The vectorised exp of the boosting row pass against the C library's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shardlearn.algorithms.tree._fast_exp import LOWEST, exp_nonpositive

pytestmark = pytest.mark.timeout(120)


def _ulps(got, want):
    return np.abs(got - want) / np.spacing(want)


def test_exp_of_nonpositive_values_is_within_one_ulp_of_the_c_library():
    rng = np.random.default_rng(0)
    ln2 = math.log(2.0)
    edges = [0.0, -0.0, -1e-300, -5e-324, -1e-17, -1e-8, -0.5 * ln2, -ln2, -1.5 * ln2,
             -20 * ln2 - 1e-12, -36.7, -100.0, -699.999, LOWEST]
    x = np.concatenate([edges, -rng.random(200_000) * 700.0,
                        -np.abs(rng.normal(size=200_000)) * 3.0])
    got, scratch = np.empty_like(x), np.empty_like(x)
    exp_nonpositive(x, got, scratch, x.size)
    assert _ulps(got, np.exp(x)).max() <= 1.0
    assert got[0] == 1.0 and got[1] == 1.0


def test_exp_clamps_below_lowest_and_writes_only_the_first_n_values():
    x = np.array([-700.5, -745.2, -1e6, -np.inf, -3.0, -4.0])
    got = np.full(6, 7.0)
    exp_nonpositive(x, got, np.empty(6), 4)
    assert np.all(got[:4] == got[0])                        # all clamped to LOWEST
    assert _ulps(got[:1], np.exp([LOWEST])).max() <= 1.0
    assert np.all(got[4:] == 7.0)                            # past n: untouched
