"""What one coordinator step costs beyond the work itself, measured in one run.

    python benchmarks/steps.py [--workers 2] [--steps 200]

A step here is ``Coordinator.map`` of a kernel that does nothing but return an
array of a given size from each worker (a fold: one array per worker, like a
tree level's histograms). For each size: milliseconds per step on the
in-process engine, on Ray over the direct channel, and on Ray as actor tasks
(``SHARDLEARN_RAY_CHANNEL=0``), the ratio of the last two, and the bytes moved
per second of step compared with the machine's memory bandwidth measured here.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import shardlearn
from shardlearn.data import Dataset
from shardlearn.runtime import Coordinator
from shardlearn.testing.kernels import array_of

SIZES = (8, 170_000, 1_400_000, 2_750_000, 9_000_000, 24_000_000, 72_000_000)


def _per_step(engine: str, n_workers: int, steps: int) -> dict:
    ds = Dataset.from_arrays(np.zeros((8000, 2)), n_shards=8)
    out = {}
    with shardlearn.init(engine, n_workers=n_workers), Coordinator(ds) as c:
        # Fresh Ray actors warm numba up on a thread for their first second or so:
        # steps timed then would measure that thread, not the step.
        t_end = time.perf_counter() + 3.0
        while time.perf_counter() < t_end:
            c.map(array_of, 8, fold=True, step="bench")
        for nbytes in SIZES:
            n = steps if nbytes < 10_000_000 else max(10, steps // 10)
            for _ in range(5):
                c.map(array_of, nbytes, fold=True, step="bench")
            t = time.perf_counter()
            for _ in range(n):
                c.map(array_of, nbytes, fold=True, step="bench")
            out[nbytes] = (time.perf_counter() - t) / n
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    from _machine import memory_bandwidth

    bandwidth = memory_bandwidth() / 1e9
    local = _per_step("local", args.workers, args.steps)
    channel = _per_step("ray", args.workers, args.steps)
    os.environ["SHARDLEARN_RAY_CHANNEL"] = "0"
    try:
        tasks = _per_step("ray", args.workers, args.steps)
    finally:
        del os.environ["SHARDLEARN_RAY_CHANNEL"]
    print(f"== one step: {args.workers} workers each return one array ==")
    print(f"{'bytes/worker':>13} {'local ms':>9} {'ray channel ms':>15} {'ray tasks ms':>13} "
          f"{'tasks/channel':>14} {'channel GB/s':>13} {'of memory bw':>13}")
    for nbytes in SIZES:
        moved = nbytes * args.workers / channel[nbytes] / 1e9
        print(f"{nbytes:>13,} {local[nbytes] * 1e3:>9.2f} {channel[nbytes] * 1e3:>15.2f} "
              f"{tasks[nbytes] * 1e3:>13.2f} {tasks[nbytes] / channel[nbytes]:>13.1f}x "
              f"{moved:>13.2f} {moved / bandwidth:>12.1%}")
    print(f"memory bandwidth (numpy sum, 1 core): {bandwidth:.1f} GB/s")


if __name__ == "__main__":
    main()
