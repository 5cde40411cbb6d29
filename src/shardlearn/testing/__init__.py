"""Testing helpers shipped with the package (data generators, cluster fixtures).

Reused by every backend's tests and by the benchmarks.
"""

from .cluster import TEST_CLUSTER_CPUS, local_ray_cluster, session
from .data import (
    make_integer_tree_data,
    make_linear_regression,
    make_logistic,
    make_separable,
    make_sparse_logistic,
)
from .faults import inject_faults, kill_worker_process
from .models import assert_same_forest

__all__ = [
    "TEST_CLUSTER_CPUS", "assert_same_forest", "inject_faults", "make_integer_tree_data", "kill_worker_process", "local_ray_cluster", "make_linear_regression", "make_logistic",
    "make_separable", "make_sparse_logistic", "session",
]
