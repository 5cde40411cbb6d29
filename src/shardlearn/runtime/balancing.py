"""Straggler handling: a pure policy deciding which shards to move between workers.

The Coordinator measures, for every step, each worker's seconds per row relative
to the other workers in that same step (so cheap and expensive steps mix
fairly), keeps the last few samples, and asks :class:`RebalancePolicy` whether
moving shards would shorten the predicted step time enough to pay for the move.
Moving shards never changes results: reductions run in shard order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Move:
    shard: int
    source: int
    target: int


def relative_costs(seconds: Sequence[float], rows: Sequence[int]) -> dict[int, float]:
    """Seconds per row of each busy worker in one step, divided by their mean."""
    per_row = {w: s / r for w, (s, r) in enumerate(zip(seconds, rows)) if r > 0 and s > 0}
    if len(per_row) < 2:
        return {}
    mean = sum(per_row.values()) / len(per_row)
    return {w: v / mean for w, v in per_row.items()}


class RebalancePolicy:
    """Decide shard moves from measured per-worker costs.

    Parameters
    ----------
    min_gain : float
        Move only if the predicted step time drops by at least this fraction.
    min_samples : int
        Steps measured (since the last move) before deciding anything; each
        rebalance of a fit doubles it for the next one (backing off when moves
        keep chasing noise). 8: with 4, fits of 2 Ray workers on a 2-core VM moved
        a shard to a worker that was not slower (4 shards against 4 became 5
        against 3, and the fit took 7.2-10.6 s instead of 5.4-6.6 s), on the
        noise of a fresh actor's first steps.
    min_step_s : float
        Steps whose slowest worker computes for less than this are not used to
        judge speed: on tiny steps, timer noise and per-call overhead dominate.
    """

    def __init__(self, min_gain: float = 0.25, min_samples: int = 8, min_step_s: float = 0.005):
        self.min_gain = min_gain
        self.min_samples = min_samples
        self.min_step_s = min_step_s

    def samples_needed(self, rebalances_so_far: int) -> int:
        """Measured steps required before the next decision, after that many rebalances."""
        return self.min_samples * 2 ** rebalances_so_far

    def decide(self, placement: Sequence[Sequence[int]], shard_rows: Sequence[int],
               cost: Sequence[float]) -> list[Move]:
        """Moves (shard, from, to) that shorten ``max_w cost[w] * rows(w)``; [] if not worth it.

        ``cost[w]`` is worker w's relative seconds per row (1.0 = average).
        Greedy and deterministic: repeatedly move the shard off the slowest worker
        that most reduces the predicted makespan.
        """
        n = len(placement)
        owned = [list(p) for p in placement]
        load = [cost[w] * sum(shard_rows[i] for i in owned[w]) for w in range(n)]
        start = max(load)
        if start <= 0:
            return []
        origin = {i: w for w in range(n) for i in owned[w]}
        while True:
            slow = max(range(n), key=lambda w: (load[w], -w))
            best = None
            # A worker keeps at least one shard: it stays measured, so shards can
            # come back when it was only slow for a while.
            candidates = sorted(owned[slow]) if len(owned[slow]) > 1 else []
            for i in candidates:
                for t in range(n):
                    if t == slow:
                        continue
                    new_slow = load[slow] - cost[slow] * shard_rows[i]
                    new_t = load[t] + cost[t] * shard_rows[i]
                    span = max([new_slow, new_t] + [load[k] for k in range(n) if k not in (slow, t)])
                    if span < max(load) - 1e-12 and (best is None or span < best[0]):
                        best = (span, i, t)
            if best is None:
                break
            _, i, t = best
            owned[slow].remove(i)
            owned[t].append(i)
            load[slow] -= cost[slow] * shard_rows[i]
            load[t] += cost[t] * shard_rows[i]
        if (start - max(load)) / start < self.min_gain:
            return []
        final = {i: w for w in range(n) for i in owned[w]}
        return [Move(i, origin[i], final[i]) for i in sorted(final) if final[i] != origin[i]]
