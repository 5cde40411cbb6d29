"""Level-wise growth of several trees at once over sharded, binned data.

The coordinator keeps the trees; each level is one pass over the data:

1. workers move their rows to the children of the previous level's splits
   (``pending``), then build histograms for the nodes of the new level that are
   the smaller child of their parent (the larger one is the parent's histogram
   minus its sibling's: the subtraction trick);
2. the best split of every node is found (on the coordinator from histograms
   summed in shard order, or, feature-parallel, on the workers over the
   features each holds, and the coordinator keeps the best);
3. the coordinator decides which nodes split and broadcasts the splits.

A node of few rows (at most :attr:`Grower.row_limit`) is searched by its rows
instead (:mod:`._row_search`): data-parallel workers send its rows, binned, with
their channel values (fewer bytes than its dense histogram), and feature-parallel
workers search their own. The trees are the same either way.

Two backends run step 1-2: :class:`DataParallel` (shards are row blocks) and
:class:`FeatureParallel` (shards are column blocks of the binned matrix holding
every row; the winning worker sends the row partition as a bitmask). Both give
the same trees bit for bit.

With ``max_leaves`` set, trees grow best-first (leaf-wise) instead: each pass
splits, in every tree still growing, the leaf whose best split has the largest
gain (ties: the lower node id), until the tree has ``max_leaves`` leaves or no
leaf can split. A split whose children cannot split (too small, too deep, or the
tree full) needs no pass, so several of them may go with the pass of the next
split that does. The histograms of frontier leaves are held, by (tree, node),
across passes (on the coordinator, or feature-parallel on the workers) within
:data:`HIST_BUDGET_BYTES`, so a split leaf's larger child is still its parent's
histogram minus the smaller child's; a leaf whose histogram was not held gets
both children built.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import _kernels as K
from ._packed_hist import FoldCarry
from ._row_search import gather_rows, merge_rows, row_best_splits
from ._scratch import POOL
from .exact import narrow_if_exact
from .node_values import NodeValueIndex
from .splitting import (
    CAT_WORDS,
    BestSplits,
    SplitParams,
    added_best_splits,
    find_best_splits,
    fuses_with_search,
    impurity,
    subtracted_best_splits,
    unheld_best_splits,
    with_siblings,
)

#: Histogram bytes of one level above which the level is built in several passes
#: without keeping parent histograms (no subtraction trick at the next level);
#: best-first growth holds at most this many bytes of frontier histograms.
HIST_BUDGET_BYTES = 128 * 1024 * 1024
#: Nodes with at most this many rows send their rows instead of their histograms
#: (squared error), where rows are the fewer bytes (see :meth:`Grower._row_limit`).
#: Measured on 2 cores, a regression forest of fully grown trees (20,000 x 20 rows,
#: 20 trees, in-process) took 3.9 s at 128 or 256 rows, 4.0 s at 64, 4.2 s at 512,
#: 14.7 s with histograms only (scikit-learn: 1.9 s).
ROW_SEARCH_MAX_ROWS = 128
#: The same for the other criteria (class counts, gradients), whose histograms are
#: narrower and searched by vectorised kernels: a classification forest (160,000 x
#: 28, depth 10, 50 trees) took 1.35-1.4 s with histograms only or at 16 rows, 1.45 s
#: at 32, 1.48 s at 64.
ROW_SEARCH_MAX_ROWS_OTHER = 16


@dataclass
class GrowConfig:
    split: SplitParams
    max_depth: int | None = None
    #: None: level-wise growth; else best-first growth up to this many leaves per tree.
    max_leaves: int | None = None
    min_samples_split: int = 2
    min_impurity_decrease: float = 0.0
    check_purity: bool = True
    max_features: int | None = None
    seed: int = 0
    hist_budget: int | None = None          # None: HIST_BUDGET_BYTES at fit time
    #: Nodes of at most this many rows are searched by their rows (:mod:`._row_search`)
    #: instead of histograms; None: :data:`ROW_SEARCH_MAX_ROWS` (squared error) or
    #: :data:`ROW_SEARCH_MAX_ROWS_OTHER`, 0: never. The trees are the same either way.
    row_search_rows: int | None = None


@dataclass
class TreeBuild:
    """A tree under construction (node arrays as lists)."""

    feature: list = field(default_factory=list)
    bin: list = field(default_factory=list)
    threshold: list = field(default_factory=list)
    missing_left: list = field(default_factory=list)
    left: list = field(default_factory=list)
    right: list = field(default_factory=list)
    depth: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    gain: list = field(default_factory=list)
    #: categorical split nodes: node -> left set of bins, (CAT_WORDS,) uint64 bitset
    cat_bits: dict = field(default_factory=dict)
    #: categorical split nodes: node -> sorted raw category values going left
    cat_values: dict = field(default_factory=dict)

    def add(self, depth, stats) -> int:
        self.feature.append(-1)
        self.bin.append(0)
        self.threshold.append(np.nan)
        self.missing_left.append(False)
        self.left.append(-1)
        self.right.append(-1)
        self.depth.append(depth)
        self.stats.append(np.asarray(stats, dtype=np.float64))
        self.gain.append(0.0)
        return len(self.feature) - 1

    def add_children(self, depth, left_stats, right_stats) -> int:
        """Two leaves (:meth:`add`) for float64 stats rows the tree may keep (no copy);
        returns the first one's index."""
        self.feature += (-1, -1)
        self.bin += (0, 0)
        self.threshold += (np.nan, np.nan)
        self.missing_left += (False, False)
        self.left += (-1, -1)
        self.right += (-1, -1)
        self.depth += (depth, depth)
        self.stats += (left_stats, right_stats)
        self.gain += (0.0, 0.0)
        return len(self.feature) - 2

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def n_leaves(self) -> int:
        return sum(1 for f in self.feature if f < 0)


def _table(trees, nodes_by_tree):
    """This level's splits for the workers: ``(feat, sbin, mleft, left, right, cat_idx,
    cat_bits)``; (T, max_nodes) int32 arrays, and for categorical splits a compact
    table: ``cat_idx[t, v]`` indexes the row of ``cat_bits`` (n_categorical_splits,
    CAT_WORDS) uint64 holding node v's left set of bins (-1: not categorical)."""
    T = len(trees)
    n = max(t.n_nodes for t in trees)
    feat = np.full((T, n), -1, np.int32)
    sbin = np.zeros((T, n), np.int32)
    mleft = np.zeros((T, n), np.int32)
    left = np.full((T, n), -1, np.int32)
    right = np.full((T, n), -1, np.int32)
    cat_idx = np.full((T, n), -1, np.int32)
    cat_rows = []
    for t, nodes in nodes_by_tree.items():
        tr = trees[t]
        for v in nodes:
            feat[t, v] = tr.feature[v]
            sbin[t, v] = tr.bin[v]
            mleft[t, v] = int(tr.missing_left[v])
            left[t, v] = tr.left[v]
            right[t, v] = tr.right[v]
            if v in tr.cat_bits:
                cat_idx[t, v] = len(cat_rows)
                cat_rows.append(tr.cat_bits[v])
    cat_bits = (np.array(cat_rows, np.uint64) if cat_rows
                else np.zeros((0, CAT_WORDS), np.uint64))
    return feat, sbin, mleft, left, right, cat_idx, cat_bits


_EPS = float(np.finfo(float).eps)


def _impurity_many(stats, criterion):
    """Impurity of each node from its stats (rows): :func:`.splitting.impurity`, but
    gini summed over the classes in order, whatever their number."""
    if criterion != "gini":
        return impurity(stats, criterion)
    vals = stats[:, :-1]
    w = np.zeros(len(stats))
    for c in range(vals.shape[1]):
        w = w + vals[:, c]
    acc = np.zeros(len(stats))
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in range(vals.shape[1]):
            p = vals[:, c] / w
            acc = acc + p * p
    return np.where(w <= 0, 0.0, 1.0 - acc)


def _hash_keys(seed, tree_ids, node_ids, n_features):
    """Random uint64 keys per (node, feature) from (seed, tree, node, feature): splitmix64.

    Sorting a node's keys gives its random feature order, the same whatever the
    batching or the parallel mode.
    """
    with np.errstate(over="ignore"):
        f = np.arange(n_features, dtype=np.uint64)[None, :]
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             ^ tree_ids[:, None] * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ node_ids[:, None] * np.uint64(0x165667B19E3779F9)
             ^ f * np.uint64(0x27D4EB2F165667C5))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Grower:
    """Grows ``n_trees`` trees in the same passes over the data through ``backend``."""

    def __init__(self, backend, n_trees: int, cfg: GrowConfig, edges, n_features: int,
                 n_channels: int, tree_ids=None, tree_masks=None):
        self.backend = backend
        self.T = n_trees
        self.cfg = cfg
        self.edges = edges
        self.F = n_features
        self.C = n_channels
        self.tree_ids = list(range(n_trees)) if tree_ids is None else list(tree_ids)
        self.tree_masks = tree_masks
        self.budget = cfg.hist_budget if cfg.hist_budget is not None else HIST_BUDGET_BYTES
        # Per-node feature sampling: histograms hold only each node's candidate
        # features (no subtraction trick: a child samples other features).
        self.compact = cfg.max_features is not None and cfg.max_features < n_features
        width = cfg.max_features if self.compact else n_features
        itemsize = np.dtype(getattr(backend, "hist_dtype", "float64")).itemsize
        self.node_bytes = width * edges.hist_bins * n_channels * itemsize
        self._split_tables = None     # edges.split_tables(), on first use
        # Features constant in a node (one bin in the training data, or narrowed to
        # one by the splits above it) are never drawn as its candidates: as in
        # scikit-learn, where a constant feature does not count towards
        # max_features. Otherwise a node could draw only such features and stay a
        # leaf (columns of zeros left most trees of a forest a single leaf).
        self._values = NodeValueIndex(edges, n_trees) if self.compact else None
        self.row_limit = self._row_limit()

    def _row_limit(self) -> int:
        """Most rows of a node searched by its rows (0: none): up to
        ``row_search_rows``, and only where its rows are fewer bytes than its histogram
        (a binned row and its value channels against the node's histogram)."""
        cfg = self.cfg
        cat = cfg.split.categorical
        if cat is not None and np.any(cat):     # the row search makes threshold splits
            return 0
        cap = cfg.row_search_rows
        if cap is None:
            cap = ROW_SEARCH_MAX_ROWS if cfg.split.criterion == "mse" else ROW_SEARCH_MAX_ROWS_OTHER
        return int(min(cap, self.node_bytes // (self.F + 8 * (self.C - 1))))

    # -- node eligibility --------------------------------------------------------------
    def _may_split(self, tree: TreeBuild, v: int) -> bool:
        return bool(self._may_split_many(tree.stats[v][None, :], np.array([tree.depth[v]]))[0])

    def _feature_mask(self, nodes):
        """``(mask, feats)``: a (S, F) bool mask of candidate features (or None), or in
        compact mode a (S, max_features) int32 array of sorted candidate ids (-1 pads)."""
        cfg = self.cfg
        if not self.compact:
            if self.tree_masks is None:
                return None, None
            return np.array([self.tree_masks[t] for t, _ in nodes], bool), None
        k = cfg.max_features
        t_ids = np.array([self.tree_ids[t] for t, _ in nodes], np.uint64)
        v_ids = np.array([v for _, v in nodes], np.uint64)
        keys = _hash_keys(cfg.seed, t_ids, v_ids, self.F)
        allowed = ~self._values.constant(nodes)
        if self.tree_masks is not None:
            allowed = allowed & np.array([self.tree_masks[t] for t, _ in nodes], bool)
        keys[~allowed] = np.iinfo(np.uint64).max
        order = np.argsort(keys, axis=1, kind="stable")[:, :k]
        feats = np.sort(order, axis=1).astype(np.int32)
        n_ok = allowed.sum(axis=1)
        if (n_ok < k).any():          # fewer allowed features than k: pad with -1
            ok = np.take_along_axis(allowed, feats.astype(np.int64), axis=1)
            big = np.iinfo(np.int32).max
            feats = np.sort(np.where(ok, feats, big), axis=1)
            feats = np.where(feats == big, -1, feats).astype(np.int32)
        return None, np.ascontiguousarray(feats)

    # -- the loop -----------------------------------------------------------------------
    def grow(self, prologue=None):
        """Grow the trees; return ``(trees, prologue_result)``.

        ``prologue=(fn, args)`` runs ``fn(shard, state, *args)`` on every shard in
        the first pass, before the roots' histograms are built (e.g. gradients of
        the previous round's model); its per-shard results are returned.
        """
        T = self.T
        roots = [(t, 0) for t in range(T)]
        res = self.backend.evaluate(None, roots, [], None, self._feature_mask(roots),
                                    T * self.node_bytes <= self.budget and not self.compact,
                                    n_trees=T, width=1, root=True, prologue=prologue)
        trees = []
        for t in range(T):
            tb = TreeBuild()
            tb.add(0, res.totals[t])
            trees.append(tb)
        extra = res.extra
        root_w = np.array([self._weight(tr.stats[0]) for tr in trees])
        if self.cfg.max_leaves is not None:
            self._grow_best_first(trees, roots, res.best, root_w)
            return trees, extra
        frontier = roots
        best = res.best
        while True:
            accepted = self._decide(trees, frontier, best, root_w)
            if not accepted:
                self.backend.set_pending(None)
                break
            split_nodes, next_frontier, pairs = self._split_level(trees, accepted, best)
            table = _table(trees, split_nodes)
            if not next_frontier:
                self.backend.set_pending(table)
                break
            best = self._evaluate_level(trees, table, pairs, next_frontier)
            frontier = next_frontier
        return trees, extra

    def _grow_best_first(self, trees, frontier, best, root_w):
        """Best-first growth from the evaluated ``frontier`` (the roots) to ``max_leaves``.

        Each tree's choices depend only on its own leaves' best splits (a node's best
        split never changes once its histogram is known), so a tree comes out the same
        whichever trees it grows with, and whatever histograms the budget lets us hold.
        """
        cap = self.cfg.max_leaves
        heaps: list[list] = [[] for _ in range(self.T)]   # per tree: (-gain, node)
        cand: dict = {}                                    # (t, v) -> (BestSplits, row)
        pending: dict[int, list] = {}                      # splits not yet sent to workers
        while True:
            for idx, (t, v) in enumerate(frontier):
                if self._splittable(trees, t, v, best, idx, root_w):
                    cand[(t, v)] = (best, idx)
                    heapq.heappush(heaps[t], (-float(best.gain[idx]), v))
            frontier, pairs = [], []
            split_now = []                      # [((t, v), (best, row), (lc, rc))]
            for t, tr in enumerate(trees):
                # Split this tree's best leaves until one has children to evaluate.
                while heaps[t] and (tr.n_nodes + 1) // 2 < cap:
                    v = heapq.heappop(heaps[t])[1]
                    how = cand.pop((t, v))
                    lc, rc = self._split(tr, v, *how)
                    split_now.append(((t, v), how, (lc, rc)))
                    pending.setdefault(t, []).append(v)
                    full = (tr.n_nodes + 1) // 2 >= cap
                    need = [] if full else [c for c in (lc, rc) if self._may_split(tr, c)]
                    if need:
                        frontier += [(t, c) for c in need]
                        pairs.append((t, v, lc, rc, need))
                        break
                if (tr.n_nodes + 1) // 2 >= cap:
                    for _, v in heaps[t]:
                        del cand[(t, v)]
                    heaps[t] = []
            table = _table(trees, pending) if pending else None
            pending = {}
            if not frontier:
                self.backend.set_pending(table)
                return
            if self._values is not None:
                self._values.split(*(list(c) for c in zip(*split_now)))
                self._values.keep_only(list(cand) + frontier)
            # Hold on (beyond this pass) to the histograms of leaves that may still split.
            retain = [k for k in sorted(self.backend.held) if k in cand]
            best = self._evaluate_level(trees, table, pairs, frontier, retain=retain)

    def _split(self, tr, v, best, idx):
        """Split node ``v`` of ``tr`` by row ``idx`` of ``best``; return the children."""
        f, b = int(best.feature[idx]), int(best.bin[idx])
        left_stats = best.left[idx].copy()
        right_stats = tr.stats[v] - left_stats
        tr.feature[v] = f
        tr.bin[v] = b
        tr.missing_left[v] = bool(best.missing_left[idx])
        if best.categorical[idx]:
            self._record_categorical(tr, v, f, best.cat_bits[idx])
        else:
            tr.threshold[v] = self.edges.split_threshold(f, b, int(best.bin_hi[idx]))
        tr.gain[v] = float(best.gain[idx])
        lc = tr.add(tr.depth[v] + 1, left_stats)
        rc = tr.add(tr.depth[v] + 1, right_stats)
        tr.left[v], tr.right[v] = lc, rc
        return lc, rc

    def _split_level(self, trees, accepted, best):
        """Split every node of ``accepted`` (``[(row of best, (tree, node))]``) at once:
        :meth:`_split` and :meth:`_may_split` per node, with the arithmetic done on
        arrays (a forest's deep levels split tens of thousands of nodes, and per-node
        numpy calls were most of the coordinator's time). Returns
        ``(split nodes by tree, next frontier, pairs)`` as the level loop wants them."""
        rows = np.array([i for i, _ in accepted], np.int64)
        nodes = [tv for _, tv in accepted]
        left = best.left[rows]
        parent = np.array([trees[t].stats[v] for t, v in nodes])
        children = np.empty((2 * len(nodes), left.shape[1]))
        children[0::2] = left
        children[1::2] = parent - left
        depth = np.repeat([trees[t].depth[v] + 1 for t, v in nodes], 2)
        may = self._may_split_many(children, depth).tolist()
        feats, bins = best.feature[rows], best.bin[rows]
        cats = best.categorical[rows]
        if self._split_tables is None:
            self._split_tables = self.edges.split_tables()
        thresholds = self.edges.split_thresholds(np.where(cats, 0, feats), bins,
                                                 best.bin_hi[rows], self._split_tables).tolist()
        feats, bins, cats = feats.tolist(), bins.tolist(), cats.tolist()
        mlefts, gains = best.missing_left[rows].tolist(), best.gain[rows].tolist()
        depth = depth[0::2].tolist()
        split_nodes: dict[int, list] = {}
        next_frontier, pairs, kid_rows = [], [], []
        for k, (t, v) in enumerate(nodes):
            tr = trees[t]
            f = feats[k]
            tr.feature[v] = f
            tr.bin[v] = bins[k]
            tr.missing_left[v] = bool(mlefts[k])
            if cats[k]:
                self._record_categorical(tr, v, f, best.cat_bits[rows[k]])
            else:
                tr.threshold[v] = thresholds[k]
            tr.gain[v] = gains[k]
            lc = tr.add_children(depth[k], children[2 * k], children[2 * k + 1])
            rc = lc + 1
            tr.left[v], tr.right[v] = lc, rc
            if t in split_nodes:
                split_nodes[t].append(v)
            else:
                split_nodes[t] = [v]
            ml, mr = may[2 * k], may[2 * k + 1]
            need = [lc, rc] if ml and mr else [lc] if ml else [rc] if mr else []
            for c in need:
                next_frontier.append((t, c))
                kid_rows.append(2 * k + (c == rc))
            pairs.append((t, v, lc, rc, need))
        if self._values is not None:
            self._values.advance(nodes, best, rows, next_frontier, kid_rows)
        return split_nodes, next_frontier, pairs

    def _may_split_many(self, stats, depth):
        """Whether nodes with these ``stats`` (rows) and depths may split."""
        cfg = self.cfg
        crit = cfg.split.criterion
        ok = ~(stats[:, -1] < max(cfg.min_samples_split, 2 * max(1, cfg.split.min_samples_leaf)))
        if cfg.max_depth is not None:
            ok &= ~(depth >= cfg.max_depth)
        if crit == "gh":
            ok &= ~(stats[:, 1] < 2 * cfg.split.min_child_weight)
        if cfg.check_purity:
            ok &= ~(_impurity_many(stats, crit) <= _EPS)
        return ok

    def _record_categorical(self, tr, v, f, bits):
        """A categorical split: its left set of bins and of raw category values."""
        bits = np.array(bits, dtype=np.uint64)
        # Bit b & 63 of word b >> 6 <-> bin b (little-endian bytes, whatever the machine).
        bins = np.flatnonzero(np.unpackbits(bits.astype("<u8").view(np.uint8), bitorder="little"))
        tr.cat_bits[v] = bits
        tr.cat_values[v] = np.asarray(self.edges.categories(f), np.float64)[bins - 1]
        tr.bin[v] = -1
        tr.missing_left[v] = False
        tr.threshold[v] = np.nan

    def _weight(self, st):
        crit = self.cfg.split.criterion
        if crit in ("gh", "mse"):
            return float(st[1])
        return float(st[:-1].sum())

    def _splittable(self, trees, t, v, best, idx, root_w) -> bool:
        """Whether node ``v`` of tree ``t`` may split by its best split (row ``idx``)."""
        cfg = self.cfg
        g = best.gain[idx]
        # Children entered the frontier only if they may split; roots are checked here.
        if not np.isfinite(g) or (v == 0 and not self._may_split(trees[t], v)):
            return False
        if cfg.split.criterion == "gh":
            return g > 0.0
        scale = root_w[t] * (np.log(2.0) if cfg.split.criterion == "entropy" else 1.0)
        return not g / scale + _EPS < cfg.min_impurity_decrease

    def _decide(self, trees, frontier, best, root_w):
        """Level-wise growth: every node of the level that may split does
        (:meth:`_splittable` of each, on arrays)."""
        cfg = self.cfg
        g = best.gain[:len(frontier)]
        ok = np.isfinite(g)
        if cfg.split.criterion == "gh":
            ok &= g > 0.0
        else:
            ts = np.array([t for t, _ in frontier], np.int64)
            scale = root_w[ts] * (np.log(2.0) if cfg.split.criterion == "entropy" else 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                ok &= ~(g / scale + _EPS < cfg.min_impurity_decrease)
        for i, (t, v) in enumerate(frontier):
            if v == 0 and ok[i]:            # roots: checked here, children on entry
                ok[i] = self._may_split(trees[t], v)
        return [(i, frontier[i]) for i in np.flatnonzero(ok).tolist()]

    def _evaluate_level(self, trees, table, pairs, frontier, retain=None):
        """Histograms and best splits of ``frontier`` (children of this pass's splits).

        Level-wise (``retain`` None) the histograms of this pass are held for the next
        one if they fit in the budget. Best-first, ``retain`` lists the held histograms
        to keep holding (the others are released), and this pass's are added while the
        total fits.
        """
        in_front = set(frontier)
        # The last level's histograms serve no subtraction: its children are leaves.
        last = self.cfg.max_depth is not None and all(
            trees[t].depth[v] + 1 >= self.cfg.max_depth for t, v in frontier)
        held = self.backend.held if retain is not None else None
        built, derived, rowed = [], [], []
        limit = self.row_limit
        for t, v, lc, rc, need in pairs:
            few = [c for c in need if trees[t].stats[c][-1] <= limit]
            if (len(need) == 2 and len(few) < 2
                    and (self.backend.has_parents if held is None else (t, v) in held)):
                small, large = (lc, rc) if trees[t].stats[lc][-1] <= trees[t].stats[rc][-1] else (rc, lc)
                built.append((t, small))
                derived.append(((t, large), (t, v), (t, small)))
            else:
                rowed += [(t, c) for c in few]
                built += [(t, c) for c in need if c not in few]
        hist_order = built + [d[0] for d in derived]
        order = hist_order + rowed
        assert set(order) == in_front
        totals = np.array([trees[t].stats[v] for t, v in order])
        width = max(tr.n_nodes for tr in trees)
        fits = len(hist_order) * self.node_bytes <= self.budget
        keep = fits and not self.compact and not last
        if retain is not None:     # best-first: (release, hold) (nothing held when compact)
            drop = tuple(sorted(held - set(retain)))
            room = max(0, self.budget // self.node_bytes - len(retain))
            keep = False if self.compact else (drop, tuple(hist_order[:room]) if fits else ())
        if fits:
            res = self.backend.evaluate(table, built, derived, totals, self._feature_mask(order),
                                        keep, n_trees=self.T, width=width, rowed=rowed)
            return _reorder(res.best, order, frontier)
        # Too many histograms for one pass: several passes, none of them held (the
        # nodes searched by rows go with the first).
        keep = False if retain is None or self.compact else (drop, ())
        per_pass = max(1, self.budget // self.node_bytes)
        acc = BestSplits.empty(len(frontier), self.C)
        pos = {node: i for i, node in enumerate(frontier)}
        n_hist = len(hist_order)
        for a in range(0, n_hist, per_pass):
            b = min(a + per_pass, n_hist)
            chunk = hist_order[a:b]
            extra = rowed if a == 0 else []
            sel = np.r_[a:b, n_hist:len(order)] if a == 0 else np.arange(a, b)
            res = self.backend.evaluate(table if a == 0 else None, chunk, [], totals[sel],
                                        self._feature_mask(chunk + extra), keep, n_trees=self.T,
                                        width=width, rowed=extra)
            keep = keep if keep is False else ((), ())
            idx = np.array([pos[n] for n in chunk + extra])
            acc.put(idx, res.best)
        return acc


def _rows(a, lo, hi):
    """``a[lo:hi]`` (rows of a per-node array), or None for None."""
    return None if a is None else a[lo:hi]


def _reorder(best: BestSplits, order, frontier):
    pos = {node: i for i, node in enumerate(order)}
    idx = np.array([pos[n] for n in frontier])
    return best.take(idx)


@dataclass
class LevelResult:
    best: BestSplits
    totals: np.ndarray | None
    extra: list | None


# ---------------------------------------------------------------------------------------
# Worker side (shared by both backends). Per-shard state keys:
#   "Xb" uint8 (n, F_block), "col_offset", "vals" (Tv, n, Cv), "w" (Tw, n), "pos" (T, n),
#   "row_bounds" (row blocks whose order defines the summation), "parents" (feature-
#   parallel: the held histograms of frontier nodes, a dict (tree, node) -> (F_block, B, C),
#   see _hold).
# ---------------------------------------------------------------------------------------
def _run_prologue(shard, state, prologue, moves=None):
    if prologue is None:
        return None
    fn, args = prologue
    if moves is not None:
        return fn(shard, state, *args, moves=moves)
    return fn(shard, state, *args)


def _build(state, slots, n_slots, n_bins, n_channels, feats=None, into=None, moves=None,
           at_root=False, dtype="float64", carry=None):
    """This shard's histograms and node totals, added to ``into=(hist, tot)`` if given.

    ``moves``: pending splits (a :func:`_table`) applied to the rows in the same pass
    (data-parallel only: every feature of the row is in this block). ``dtype``: of the
    histograms (float32 only where every value and sum is an integer below 2**24,
    see ``TreeFit.hist_dtype``); totals are float64. ``carry``: the fold's
    :class:`._packed_hist.FoldCarry`, for the packed loops.
    """
    Xb = state["Xb"]
    width = feats.shape[1] if feats is not None else Xb.shape[1]
    if into is None:
        shape = (n_slots, width, n_bins, n_channels)
        if carry is not None and K.takes_packed_loops(state.get("pack"), state["vals"],
                                                      state["pos"], feats, n_channels, dtype):
            # The packed loops write each node's first block: no zeros needed (where
            # they are not taken after all, the float loops zero it first).
            hist = POOL.empty(shape, dtype)
            carry.mark_fresh(n_slots)
        else:
            hist = POOL.zeros(shape, dtype)
        tot = np.zeros((n_slots, n_channels))
    else:
        hist, tot = into
    vals, w, pos = state["vals"], state["w"], state["pos"]
    pack = state.get("pack")
    if moves is not None:
        feat, sbin, mleft, left, right, _, _ = moves
        K.split_and_build(Xb, vals, w, pos, feat, sbin, mleft, left, right, slots, hist, tot,
                          feats, pack, carry)
    elif feats is not None:
        K.build_histograms_subset(Xb, vals, w, pos, slots, feats, state["col_offset"], hist, tot)
    else:
        K.build_histograms(Xb, vals, w, pos, slots, hist, tot, at_root, pack, carry)
    return hist, tot


def data_level_kernel(shard, state, acc, pending, slots, n_slots, n_bins, n_channels, root,
                      prologue, feats=None, dtype="float64", narrow=False, rslots=None,
                      n_rslots=0):
    """Apply pending splits, run the prologue, add this shard's histograms to ``acc``.

    A fold over a worker's shards (``Coordinator.map(fold=True)``): ``acc`` is
    ``(hist, totals, [(shard index, prologue result), ...], FoldCarry, narrow,
    [gathered rows, ...])`` or None; :func:`_finish_level` ends it (the worker sends
    the first three, the histograms narrowed if ``narrow`` and that is exact, and the
    gathered rows as one). The sums are exact
    (.exact), so how shards are grouped on workers does not matter. ``n_slots``:
    the nodes built, ``slots.max() + 1`` (counted by the coordinator: a numpy max
    per shard was 3% of a worker's time). ``rslots``: the row slots of the ``n_rslots``
    nodes searched by their rows (:mod:`._row_search`), whose rows the fold gathers.
    """
    # Rows move to their children in the histogram pass itself, unless a prologue
    # must see where they ended (the previous round's leaves) first.
    threshold_only = pending is not None and pending[6].shape[0] == 0   # no categorical
    fuse = threshold_only and prologue is None and not root and n_slots > 0
    # A prologue marked ``applies_moves`` applies them in its own pass over the rows.
    to_prologue = (threshold_only and prologue is not None
                   and getattr(prologue[0], "applies_moves", False))
    if pending is not None and not fuse and not to_prologue:
        K.apply_splits(state["Xb"], state["pos"], *pending, 0)
    extra = (shard.index, _run_prologue(shard, state, prologue,
                                        pending if to_prologue else None))
    if root:
        state["pos"][:] = 0
    if acc is None:
        acc = (None, None, [], FoldCarry(), narrow, [])
    hist, tot, extras, carry, _, rows = acc
    extras.append(extra)
    if n_slots > 0:
        hist, tot = _build(state, slots, n_slots, n_bins, n_channels, feats,
                           None if hist is None else (hist, tot), pending if fuse else None,
                           at_root=root, dtype=dtype, carry=carry)
    if n_rslots:
        rows.append(gather_rows(state["Xb"], state["vals"], state["w"], state["pos"], rslots,
                                n_rslots))
    return hist, tot, extras, carry, narrow, rows


def _finish_level(acc):
    """The end of a worker's fold: the packed blocks its shards left, into its histograms."""
    hist, tot, extras, carry, narrow, rows = acc
    rows = merge_rows(rows, len(rows[0][0]) - 1, rows[0][2].shape[1]) if rows else None
    if hist is not None:
        carry.finish(hist, tot)
        if narrow:
            # float32 histograms hold whole numbers from +0 only (TreeFit.hist_dtype):
            # their largest (numpy's max: 0.15 ns a value) says which type holds them.
            # The largest node total was a bound too loose (most deep levels uint16).
            whole = float(hist.max(initial=0.0)) if hist.dtype == np.float32 else None
            hist = narrow_if_exact(hist, POOL, whole)
    return hist, tot, extras, rows


data_level_kernel.fold_finish = _finish_level


def feature_level_kernel(shard, state, pending, slots, derived, totals, fmask, params,
                         n_bins, n_channels, keep, root, prologue, dtype="float64", rslots=None,
                         n_rslots=0):
    """Feature-parallel: apply pending (bitmask), build and derive this block's
    histograms, and return the best split per node among the features held here
    (the built and derived nodes, then the ``n_rslots`` searched by their rows)."""
    if pending is not None:
        packed, (feat, _, _, left, right, _, _) = pending
        n = state["pos"].shape[1]
        bits = np.unpackbits(packed, axis=1, count=n)
        K.apply_bits(state["pos"], feat, left, right, bits)
    extra = _run_prologue(shard, state, prologue)
    if root:
        state["pos"][:] = 0
    n_built = int(slots.max()) + 1 if slots.size else 0
    n_hist = n_built + len(derived)
    fmask, feats = fmask
    offset = state["col_offset"]
    width = state["Xb"].shape[1]
    found = []
    tot = None
    if n_hist:
        hist, tot = _build(state, slots, n_built, n_bins, n_channels, _rows(feats, 0, n_built),
                           dtype=dtype)
        node_tot = tot if root else totals[:n_hist]
        if derived:
            parents = state["parents"]
            hist = with_siblings(hist, [parents[tuple(d[1])] for d in derived],
                                 [d[2] for d in derived])
        if feats is not None:
            fs = feats[:n_hist]
            held = (fs >= offset) & (fs < offset + width)
            found.append(_compact_best(hist, node_tot, params, fs, held))
        else:
            mask = None if fmask is None else fmask[:n_hist, offset:offset + width]
            found.append(find_best_splits(hist, node_tot, params, mask, offset))
        state["parents"] = _hold(state.get("parents"),
                                 _pass_keys(slots, derived) if keep else [], hist, keep)
    else:
        state["parents"] = _hold(state.get("parents"), [], (), keep)
    if n_rslots:
        rows = gather_rows(state["Xb"], state["vals"], state["w"], state["pos"], rslots, n_rslots)
        mask = None if fmask is None else fmask[n_hist:, offset:offset + width]
        found.append(row_best_splits(rows, totals[n_hist:], params, mask,
                                     _rows(feats, n_hist, None), offset))
    if not found:
        return None, None, extra
    best = found[0] if len(found) == 1 else _concat_best(found)
    return best, tot if root else None, extra


def feature_bits_kernel(shard, state, table):
    """Bitmask (packed, per tree) of rows going left at splits on features held here."""
    feat, sbin, mleft, _, _, cat_idx, cat_bits = table
    Xb, pos = state["Xb"], state["pos"]
    off = state["col_offset"]
    mine = (feat >= off) & (feat < off + Xb.shape[1])
    if not mine.any():
        return None
    bits = np.zeros(pos.shape, np.uint8)
    K.split_bits(Xb, pos, feat, sbin, mleft, cat_idx, cat_bits, off, bits)
    return np.packbits(bits, axis=1)


def finish_kernel(shard, state, pending, bits_mode, prologue):
    """Apply the last pending splits and run ``prologue`` (e.g. leaf values, OOB)."""
    if pending is not None:
        if bits_mode:
            packed, (feat, _, _, left, right, _, _) = pending
            bits = np.unpackbits(packed, axis=1, count=state["pos"].shape[1])
            K.apply_bits(state["pos"], feat, left, right, bits)
        else:
            K.apply_splits(state["Xb"], state["pos"], *pending, 0)
    return _run_prologue(shard, state, prologue)


# ---------------------------------------------------------------------------------------
# Backends (coordinator side)
# ---------------------------------------------------------------------------------------
class DataParallel:
    """Row shards: per-shard histograms summed in shard order; splits found here."""

    bits_mode = False

    def __init__(self, coord, params: SplitParams, n_bins: int, n_channels: int,
                 hist_dtype: str = "float64"):
        self.coord = coord
        self.params = params
        self.B = n_bins
        self.C = n_channels
        self.hist_dtype = hist_dtype
        # Where results cross processes, histograms travel in a narrower type when
        # that is exact (float32 for most nodes below the root, uint8/uint16 for
        # counts: see exact.narrow_if_exact).
        self.narrow = coord.engine.moves_results
        self.pending = None
        self._held = {}          # (tree, node) -> summed histogram of a frontier node

    @property
    def has_parents(self):
        return bool(self._held)

    @property
    def held(self) -> frozenset:
        """(tree, node) keys of the histograms held for the next pass's subtractions."""
        return frozenset(self._held)

    def set_pending(self, table):
        self.pending = table

    def evaluate(self, table, built, derived, totals, fmask, keep, *, n_trees, width, root=False,
                 prologue=None, rowed=()):
        """Best splits of ``built + derived`` nodes by histograms, then of ``rowed`` by
        their rows; ``totals`` and ``fmask`` rows follow that order."""
        pending = table if table is not None else self.pending
        self.pending = None
        slots = _slots_from(built, n_trees, width)
        fmask, feats = fmask
        n_hist = len(built) + len(derived)
        rslots = _slots_from(rowed, n_trees, width) if rowed else None
        # The split table goes as an argument: the coordinator sends a small one inline
        # and puts a large one in the object store once for all workers.
        out = self.coord.map(data_level_kernel, pending, slots, len(built), self.B, self.C,
                             root, prologue, None if feats is None else feats[:len(built)],
                             self.hist_dtype, self.narrow, rslots, len(rowed), step="tree_level",
                             restore=True, fold=True)
        extra = [e for _, e in sorted((e for o in out for e in o[2]), key=lambda e: e[0])]
        tot = _sum_parts([o[1] for o in out])
        if root:
            totals = tot
        best = self._hist_best([o[0] for o in out], built, derived, totals[:n_hist],
                               _rows(fmask, 0, n_hist), _rows(feats, 0, n_hist), keep)
        if rowed:
            gathered = merge_rows([o[3] for o in out], len(rowed), self.C - 1)
            best = _concat_best([best, _rows_in_parallel(gathered, totals[n_hist:], self.params,
                                                         _rows(fmask, n_hist, None),
                                                         _rows(feats, n_hist, None))])
        return LevelResult(best, tot if root else None, extra)

    def _hist_best(self, parts, built, derived, totals, fmask, feats, keep):
        """Best splits of the nodes with histograms (built, then derived); holds them
        for the next pass as ``keep`` says."""
        if not built:
            self._held = _hold(self._held, [], (), keep)
            return BestSplits.empty(0, self.C)
        siblings = None
        first = parts[0]
        if keep is False and feats is None and _pairs_apply(parts, self.params):
            # Nothing of this level is held for the next: no histogram is written.
            bidx = {node: i for i, node in enumerate(built)}
            best = _search_unheld(parts, [self._held[p] for _, p, _ in derived],
                                  [bidx[s] for _, _, s in derived], totals, self.params,
                                  fmask, self.hist_dtype)
            self._held = {}
            return best
        if first is None or (not derived and _usable_as_is(parts, self.hist_dtype)):
            hist, parts = first, None          # nothing to add up
        else:
            # The larger siblings go after the built nodes in one array; the workers'
            # parts are summed straight into it, and the subtractions are done with
            # the search, on its threads (see _search_in_parallel).
            n = first.shape[0]
            hist = POOL.empty(
                (n + len(derived),) + first.shape[1:], self.hist_dtype)
            if derived:
                bidx = {node: i for i, node in enumerate(built)}
                siblings = (n, [self._held[p] for _, p, _ in derived],
                            [bidx[s] for _, _, s in derived])
        order = built + [d[0] for d in derived]
        best = _search_in_parallel(hist, totals, self.params, fmask, feats, siblings, parts)
        self._held = _hold(self._held, order, hist, keep)
        return best

    def finish(self, prologue=None):
        pending, self.pending = self.pending, None
        return self.coord.map(finish_kernel, pending, False, prologue, step="tree_finish",
                              restore=True)


class FeatureParallel:
    """Column shards holding every row: each finds the best split among its features;
    the coordinator keeps the best; the winner's row partition travels as a bitmask."""

    bits_mode = True

    def __init__(self, coord, params: SplitParams, n_bins: int, n_channels: int,
                 hist_dtype: str = "float64"):
        self.coord = coord
        self.params = params
        self.B = n_bins
        self.C = n_channels
        self.hist_dtype = hist_dtype
        self.pending = None
        self._held = frozenset()   # keys of the histograms the workers hold (_hold)

    @property
    def has_parents(self):
        return bool(self._held)

    @property
    def held(self) -> frozenset:
        """(tree, node) keys of the histograms the workers hold for the next pass."""
        return self._held

    def set_pending(self, table):
        self.pending = None if table is None else self._bits(table)

    def _bits(self, table):
        parts = [p for p in self.coord.map(feature_bits_kernel, self.coord.broadcast(table),
                                           step="tree_bits") if p is not None]
        packed = parts[0].copy()
        for p in parts[1:]:
            packed |= p
        return packed, table

    def evaluate(self, table, built, derived, totals, fmask, keep, *, n_trees, width, root=False,
                 prologue=None, rowed=()):
        pending = self._bits(table) if table is not None else self.pending
        self.pending = None
        slots = _slots_from(built, n_trees, width)
        bidx = {node: i for i, node in enumerate(built)}
        der = [(d[0], d[1], bidx[d[2]]) for d in derived]   # parents by (tree, node) key
        rslots = _slots_from(rowed, n_trees, width) if rowed else None
        out = self.coord.map(feature_level_kernel, pending, slots, der, totals, fmask, self.params,
                             self.B, self.C, keep, root, prologue, self.hist_dtype, rslots,
                             len(rowed), step="tree_level",
                             restore=True)
        best = None
        for o in out:
            if o[0] is None:
                continue
            if best is None:
                best = o[0].copy()   # results may be read-only (Ray object store)
            else:
                best.take_better(o[0])
        self._held = _held_keys(self._held, built + [d[0] for d in derived], keep)
        return LevelResult(best, out[0][1] if root else None, [o[2] for o in out])

    def finish(self, prologue=None):
        pending, self.pending = self.pending, None
        return self.coord.map(finish_kernel, pending, True, prologue, step="tree_finish",
                              restore=True)


def _sum_parts(parts, out=None, dtype=None):
    """Sum of per-worker histograms (exact: the order does not matter), into ``out``
    if given, else into a new array of ``dtype`` (default: the first part's); parts
    may be narrower (exact.narrow_if_exact)."""
    if parts[0] is None:
        return None
    first = parts[0]
    if out is None:
        if _usable_as_is(parts, first.dtype if dtype is None else dtype):
            return first
        out = np.empty(first.shape, dtype=first.dtype if dtype is None else dtype)
    if len(parts) == 1:
        out[...] = first
        return out
    _add_widened(first, parts[1], out)
    for p in parts[2:]:
        _add_widened(out, p, out)
    return out


def _usable_as_is(parts, dtype) -> bool:
    """One part, of ``dtype`` and writable (Ray hands back read-only views of its
    object store): it is the sum already."""
    return len(parts) == 1 and parts[0].dtype == np.dtype(dtype) and parts[0].flags.writeable


def _add_widened(a, b, out):
    # Each part widened to out's type before the add: two float32 parts must be
    # added in float64, not added and then cast.
    if all(x.flags.c_contiguous for x in (a, b, out)) and a.shape == b.shape == out.shape:
        K.add_into(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    else:
        np.add(a, b, out=out, dtype=out.dtype)


#: Nodes per chunk below which the coordinator's merge and split search stay on one
#: thread. Measured on 2 cores with 28 features: threads start to pay at 128 nodes
#: (a forest's deep levels: 2.16 s against 2.59 s a fit, medians of 3, with the
#: parts added up in the chunks too); with 4, boosting's levels of 2-32 nodes
#: took longer on the coordinator (0.70 s against 0.60 s a fit).
PARALLEL_SEARCH_MIN_NODES = 64
#: Most threads for it (the pool's size; the chunks share the memory bandwidth).
PARALLEL_SEARCH_MAX_THREADS = 4
_CPUS = os.cpu_count() or 1
_search_pool: list = []


def _search_threads(n_nodes, per_thread) -> int:
    """Threads for a search of ``n_nodes`` nodes, at least ``per_thread`` each
    (below 2: the calling thread alone)."""
    return min(PARALLEL_SEARCH_MAX_THREADS, _CPUS, n_nodes // per_thread)


def _search_in_parallel(hist, totals, params, fmask, feats, siblings=None, parts=None):
    """Best splits of every node, the nodes cut in chunks searched on several threads
    (the numba kernels release the GIL; each node's answer does not depend on the
    others). The workers wait for the answer, so the cores are free.

    ``parts``: the workers' histograms of the first rows of ``hist``, still to be
    added up into it (each chunk adds its rows first). ``siblings=(n, parents,
    small_rows)``: rows ``n + k`` of ``hist`` are still to be filled with
    ``parents[k] - hist[small_rows[k]]`` (:func:`.splitting.with_siblings`); each
    chunk fills its own once every chunk has added its rows (a sibling's smaller
    child may be another chunk's). Every chunk takes a share of the built rows and
    one of the siblings: with the siblings in a chunk of their own, that chunk did
    all the subtractions and the others waited for it.
    """
    S = hist.shape[0]
    n_built = S if siblings is None else siblings[0]
    # Adding up (or subtracting) and searching in one pass where the kernels allow it:
    # each feature's bins are searched while in cache (splitting.added_best_splits).
    fused = feats is None and fuses_with_search(params, hist) and (
        parts is None or (len(parts) == 2 and all(
            isinstance(p, np.ndarray) and p.flags.c_contiguous and p.shape == parts[0].shape
            for p in parts)))

    def rows_mask(a, b):
        return None if fmask is None else fmask[a:b]

    def merge(a, b):
        if parts is not None and a < b:
            _sum_parts([p[a:b] for p in parts], out=hist[a:b])

    def built_best(a, b, merged=False):
        """Best splits of built rows a..b, their parts added up first unless ``merged``."""
        if fused and parts is not None and not merged and a < b:
            return added_best_splits(parts[0][a:b], parts[1][a:b], hist[a:b], totals[a:b],
                                     params, rows_mask(a, b))
        if not merged:
            merge(a, b)
        return search(a, b)

    def sibling_best(c, d):
        """Best splits of sibling rows c..d (every built row they need is added up)."""
        if fused and c < d:
            n, parents, small = siblings
            return subtracted_best_splits([parents[k - n] for k in range(c, d)], hist[c:d],
                                          [hist[small[k - n]] for k in range(c, d)],
                                          totals[c:d], params, rows_mask(c, d))
        return search(c, d)

    def search(a, b):
        if a >= b:
            return BestSplits.empty(0, hist.shape[-1])
        if siblings is not None:
            n, parents, small = siblings
            for k in range(max(a, n) - n, max(b - n, 0)):
                K.subtract_into(parents[k], hist[small[k]], hist[n + k])
        if feats is not None:
            return _compact_best(hist[a:b], totals[a:b], params, feats[a:b], feats[a:b] >= 0)
        return find_best_splits(hist[a:b], totals[a:b], params, rows_mask(a, b))

    n_threads = _search_threads(S, PARALLEL_SEARCH_MIN_NODES)
    if n_threads < 2:
        return _concat_best([built_best(0, n_built), sibling_best(n_built, S)])
    built = np.linspace(0, n_built, n_threads + 1).astype(int)
    small = np.asarray(siblings[2] if siblings is not None else [], np.int64)
    # Siblings in the order of their smaller children (as level-wise growth makes
    # them): a chunk's siblings need only its own built rows, so each chunk adds,
    # subtracts and searches in one go, one hand-off a level. Otherwise every chunk
    # adds its rows before any chunk subtracts.
    in_order = small.size == 0 or bool(np.all(small[1:] >= small[:-1]))
    if in_order:
        derived = n_built + np.searchsorted(small, built)
        derived[-1] = S
    else:
        derived = np.linspace(n_built, S, n_threads + 1).astype(int)
        if parts is not None:
            _on_threads(merge, list(zip(built[:-1], built[1:])))

    def chunk(a, b, c, d):
        return built_best(a, b, merged=not in_order), sibling_best(c, d)

    found = _on_threads(chunk, list(zip(built[:-1], built[1:], derived[:-1], derived[1:])))
    # Back in row order: every chunk's built rows, then every chunk's siblings.
    return _concat_best([f[0] for f in found] + [f[1] for f in found])


#: Row-searched nodes per thread below which their search stays on one thread.
PARALLEL_ROW_SEARCH_MIN_NODES = 512


def _rows_in_parallel(gathered, totals, params, fmask, feats):
    """:func:`._row_search.row_best_splits`, the nodes cut in chunks searched on the
    search threads (the kernel releases the GIL; each node's answer is its own)."""
    S = totals.shape[0]
    n_threads = _search_threads(S, PARALLEL_ROW_SEARCH_MIN_NODES)
    if n_threads < 2:
        return row_best_splits(gathered, totals, params, fmask, feats)
    offsets, rows, values = gathered
    edges = np.linspace(0, S, n_threads + 1).astype(int)

    def chunk(a, b):
        # offsets index the rows themselves: a chunk's slice needs no rebasing.
        return row_best_splits((offsets[a:b + 1], rows, values), totals[a:b], params,
                               _rows(fmask, a, b), _rows(feats, a, b))

    return _concat_best(_on_threads(chunk, list(zip(edges[:-1], edges[1:]))))


def _pairs_apply(parts, params) -> bool:
    """Whether :func:`.splitting.unheld_best_splits` serves these workers' parts."""
    return (len(parts) == 2 and all(isinstance(p, np.ndarray) and p.flags.c_contiguous
                                    for p in parts)
            and parts[0].shape == parts[1].shape and fuses_with_search(params, parts[0]))


def _search_unheld(parts, parents, small, totals, params, fmask, dtype):
    """:func:`.splitting.unheld_best_splits`, its node pairs on the search threads when a
    level has enough nodes (as :func:`_search_in_parallel`)."""
    n = parts[0].shape[0]
    S = n + len(parents)
    n_threads = _search_threads(S, PARALLEL_SEARCH_MIN_NODES)
    if n_threads < 2:
        return unheld_best_splits(parts, parents, small, totals, params, fmask, dtype)
    edges = np.linspace(0, n, n_threads + 1).astype(int)
    return unheld_best_splits(parts, parents, small, totals, params, fmask, dtype,
                              chunks=list(zip(edges[:-1], edges[1:])), run=_on_threads)


def _concat_best(found) -> BestSplits:
    return BestSplits(*(np.concatenate([getattr(p, f.name) for p in found])
                        for f in dataclasses.fields(BestSplits)))


def _on_threads(fn, chunks):
    """``[fn(*chunk) for chunk in chunks]``, the first on the calling thread (one
    hand-off fewer), the others on the pool. No task waits for another, so calls
    from several threads at once cannot starve the pool."""
    if not _search_pool:
        _search_pool.append(ThreadPoolExecutor(PARALLEL_SEARCH_MAX_THREADS - 1,
                                               thread_name_prefix="shardlearn-split"))
    futures = [_search_pool[0].submit(fn, *c) for c in chunks[1:]]
    try:
        first = fn(*chunks[0])
    finally:
        rest = [f.result() for f in futures]
    return [first, *rest]


def _compact_best(hist, totals, params, feats, usable):
    """Best splits over a compact (S, k, B, C) histogram whose axis 1 follows ``feats``."""
    best = find_best_splits(hist, totals, params, usable, feature_ids=feats)
    found = best.feature >= 0
    rows = np.flatnonzero(found)
    best.feature[found] = feats[rows, best.feature[found]]
    return best


def _slots_from(built, n_trees, width):
    n = max(width, 1 + max(v for _, v in built) if built else 1)
    slots = np.full((n_trees, n), -1, np.int32)
    for i, (t, v) in enumerate(built):
        slots[t, v] = i
    return slots


# -- held frontier histograms (coordinator, data-parallel; workers, feature-parallel) ----
def _hold(store, order, hist, keep):
    """The histograms held after a pass: a dict (tree, node) -> (F, B, C) histogram.

    ``hist`` rows are this pass's nodes ``order``. ``keep``: True, every node of
    this pass and nothing held before (level-wise growth); False, nothing; or
    ``(drop, add)`` (best-first growth): release the held nodes ``drop`` and hold
    this pass's nodes ``add`` too (copied out of ``hist``, so that a node
    dropped later frees its own memory). Updated in place, in call order, so
    replaying the calls on a replacement worker rebuilds the same store.
    """
    if isinstance(keep, (bool, np.bool_)):
        return dict(zip(order, hist)) if keep else {}
    drop, add = keep
    store = {} if store is None else store
    for node in drop:
        del store[tuple(node)]
    if add:
        row = {node: i for i, node in enumerate(order)}
        for node in map(tuple, add):
            store[node] = np.array(hist[row[node]])
    return store


def _pass_keys(slots, derived):
    """(tree, node) of each histogram row of a pass: built nodes by slot, then derived."""
    t, v = np.nonzero(slots >= 0)
    keys = [None] * len(t)
    for a, b, s in zip(t.tolist(), v.tolist(), slots[t, v].tolist()):
        keys[s] = (a, b)
    return keys + [tuple(d[0]) for d in derived]


def _held_keys(held, order, keep):
    """The keys :func:`_hold` holds after a pass (for a coordinator holding no histograms)."""
    if isinstance(keep, (bool, np.bool_)):
        return frozenset(order) if keep else frozenset()
    drop, add = keep
    return (held - frozenset(map(tuple, drop))) | frozenset(map(tuple, add))
