"""Coordinator loops of the tree family: decision trees, random forests, boosting."""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass

import numpy as np

from ...data.dataset import Dataset, ShardInfo
from ...data.shard import Shard
from ...progress import progress_bar
from ...runtime import Coordinator, FitReport
from . import kernels
from . import model as M
from ._packed_hist import pack_grid
from .binning import merge_summaries
from .exact import grid
from .grower import DataParallel, FeatureParallel, GrowConfig, Grower
from .splitting import SplitParams, leaf_values

#: Feature-parallel mode: at most this many column blocks (each holds every row).
MAX_FEATURE_BLOCKS = 8

#: float32 holds every integer below this exactly.
FLOAT32_EXACT_LIMIT = 2.0**24


@dataclass(frozen=True)
class ColumnBlockSource:
    """Columns ``[start, stop)`` of the binned matrix, every row (feature-parallel shards)."""

    Xb: np.ndarray
    y: np.ndarray | None
    sample_weight: np.ndarray | None
    start: int
    stop: int
    load_on_worker: bool = False

    def load(self, index: int) -> Shard:
        return Shard(index, np.ascontiguousarray(self.Xb[:, self.start:self.stop]), self.y,
                     self.sample_weight)

    def describe(self) -> str:
        return f"binned columns {self.start}:{self.stop}, all rows"


def _binned_and_weights(shard, state):
    return state["Xb"], shard.sample_weight


def feature_blocks(n_features: int) -> list[tuple[int, int]]:
    """Column blocks of the feature-parallel layout (a function of the data only)."""
    width = max(1, math.ceil(n_features / MAX_FEATURE_BLOCKS))
    return [(a, min(n_features, a + width)) for a in range(0, n_features, width)]


class TreeFit:
    """Opens the workers for one fit: bin edges, per-shard state, and a growth backend.

    ``parallel="data"``: the dataset's row shards. ``parallel="feature"``: the rows
    are binned on their row shards, gathered (uint8) on the driver and re-sharded
    by column blocks, each holding every row.
    """

    def __init__(self, dataset: Dataset, spec: dict, params: SplitParams, n_channels: int, *,
                 max_bins: int, parallel: str, name: str, state_bytes_per_row: int,
                 session=None):
        self.dataset = dataset
        self.spec = spec
        self.params = params
        self.C = n_channels
        self.max_bins = max_bins
        self.hist_dtype = "float64"     # float32 where that is exact (_set_grids)
        self.parallel = parallel
        self.name = name
        self.session = session
        # Per-row worker state for the memory check (runtime/memory.py): binned row
        # (d bytes), node positions, weights, value channels, labels...
        self.state_bytes = int(dataset.n_features + state_bytes_per_row)
        self.coords = []

    def __enter__(self):
        self.t0 = time.perf_counter()
        # Python's cyclic garbage collector is off for the fit, then as it was. Deep
        # levels add tens of thousands of nodes, each a few small lists and tuples,
        # and every so many allocations the collector walked all the trees' node
        # lists again: a fully grown regression forest (20,000 x 20, 20 trees,
        # in-process) took 3.7-4.4 s with it and 2.8-2.9 s without. A fit makes no
        # reference cycles that must be freed before it ends (reference counting
        # frees the rest at once).
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        ds = self.dataset
        coord = Coordinator(ds, session=self.session, name=self.name,
                            state_bytes_per_row=self.state_bytes)
        coord.__enter__()
        self.coords.append(coord)
        try:
            cat = self.params.categorical
            summaries = coord.map(kernels.summaries_kernel, self.max_bins, cat,
                                  step="bin_summaries")
            self.edges = merge_summaries(summaries, self.max_bins, cat)
            self._set_grids(coord)
            edges_b = coord.broadcast(self.edges)
            init = coord.map(kernels.init_state, edges_b, self.spec, None, None, 0,
                             step="bin_and_init", restore=True)
            self.block_sums = [b for shard_out in init for b in shard_out]
            if self.parallel == "feature":
                parts = coord.map(_binned_and_weights, step="gather_binned")
                coord.__exit__(None, None, None)
                self.coords.pop()
                Xb = np.concatenate([p[0] for p in parts])
                sw = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
                y = ds.labels()
                infos = []
                for j, (a, b) in enumerate(feature_blocks(ds.n_features)):
                    src = ColumnBlockSource(Xb, y, sw, a, b)
                    infos.append(ShardInfo(j, ds.n_rows, Xb.shape[0] * (b - a), src))
                cds = Dataset(infos, ds.n_features, has_labels=True, has_weights=sw is not None)
                coord = Coordinator(cds, session=self.session, name=self.name,
                                    state_bytes_per_row=self.state_bytes)
                coord.__enter__()
                self.coords.append(coord)
                coord.map(kernels.init_state, None, self.spec, ds.boundaries,
                          list(range(ds.n_shards)), 0, step="init_columns", restore=True)
                coord.map(_set_offsets, [a for a, _ in feature_blocks(ds.n_features)],
                          step="init_columns", restore=True)
                self.backend = FeatureParallel(coord, self.params, self.edges.hist_bins, self.C,
                                               self.hist_dtype)
            else:
                self.backend = DataParallel(coord, self.params, self.edges.hist_bins, self.C,
                                            self.hist_dtype)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.coord = coord
        return self

    def _set_grids(self, coord):
        """Weight and target bounds -> the power-of-two grids of the value channels.

        ``max_sw`` is the largest row weight, class weight included.
        """
        b = np.array(coord.map(kernels.bounds_kernel, self.spec.get("classes"),
                               self.spec.get("class_weight"), step="target_bounds"))
        self.max_sw = float(b[:, 0].max())
        self.y_range = (float(b[:, 1].min()), float(b[:, 2].max()))
        integral = self.whole_weights = bool(b[:, 3].all())
        n = self.dataset.n_rows
        # Bootstrap multiplies rows by Poisson(1) counts, whose sum stays below 2n + 64.
        terms = 2 * n + 64 if self.spec.get("bootstrap") else n
        self.terms = terms
        ym = max(abs(self.y_range[0]), abs(self.y_range[1]))
        sw = self.max_sw
        if self.spec["kind"] == "class":
            self.spec["grids"] = (grid(sw, terms),)
            # Whole-number row weights (no sample or class weights, bootstrap counts):
            # every histogram value and sum is an integer below 2**24, which float32
            # holds exactly. Half the bytes to zero, fill, move, add and search, and
            # the same sums bit for bit.
            if integral and not self.spec.get("per_tree_weights") and terms * sw < FLOAT32_EXACT_LIMIT:
                self.hist_dtype = "float32"
        elif self.spec["kind"] == "mse":
            self.spec["grids"] = (grid(sw * ym, terms), grid(sw, terms), grid(sw * ym * ym, terms))

    def __exit__(self, *exc):
        try:
            while self.coords:
                self.coords.pop().__exit__(None, None, None)
        finally:
            if self._gc_was_enabled:
                gc.enable()
        return False

    def report(self, estimator, n_iter, history, extra=None, converged=None) -> FitReport:
        return FitReport.from_runtime(
            estimator, self.coord.report, wall_s=time.perf_counter() - self.t0, n_iter=n_iter,
            converged=converged, objective_history=history,
            extra={"parallel": self.parallel, "max_bins": self.max_bins,
                   "hist_dtype": self.hist_dtype, **(extra or {})})


def _set_offsets(shard, state, offsets):
    state["col_offset"] = int(offsets[shard.index])


def _leaf_table(trees, values):
    """(T, max_nodes, V) leaf outputs, zero-padded (for the workers)."""
    n = max(t.n_nodes for t in trees)
    V = values[0].shape[1]
    out = np.zeros((len(trees), n, V))
    for t, v in enumerate(values):
        out[t, : v.shape[0]] = v
    return out


# -- decision trees and random forests -----------------------------------------------------
@dataclass
class ForestFit:
    forest: dict
    edges: object
    oob: tuple | None
    report: FitReport


#: Default of ``trees_per_pass``: trees grown together in the same passes.
TREES_PER_PASS = 16


def fit_forest(dataset, *, task, classes=None, criterion, n_estimators=1, bootstrap=False,
               max_depth=None, min_samples_split=2, min_samples_leaf=1,
               min_impurity_decrease=0.0, max_features=None, max_leaf_nodes=None, seed=0,
               max_bins=255, parallel="data", oob_score=False, trees_per_pass=None,
               estimator="DecisionTree", session=None, categorical=None,
               class_weight=None) -> ForestFit:
    """Grow ``n_estimators`` trees (several per pass over the data).

    ``task``: "class" (criterion gini/entropy; leaves hold class probabilities) or
    "regression" (squared error; leaves hold means). ``class_weight``: None, per-class
    multipliers of the row weights (in the order of ``classes``), or
    ``"balanced_subsample"`` (with ``bootstrap``: computed per tree).
    """
    kind = "class" if task == "class" else "mse"
    crit = criterion if task == "class" else "mse"
    n_ch = (len(classes) if task == "class" else 3) + 1
    per_tree_cw = isinstance(class_weight, str)
    if per_tree_cw and not bootstrap:
        raise ValueError('class_weight="balanced_subsample" needs bootstrap=True.')
    spec = {"kind": kind, "classes": classes, "n_trees": 1, "bootstrap": bool(bootstrap),
            "class_weight": None if per_tree_cw else class_weight,
            "per_tree_weights": per_tree_cw}
    params = SplitParams(crit, 0.0, min_samples_leaf, 0.0, categorical)
    cfg = GrowConfig(params, max_depth=max_depth, max_leaves=max_leaf_nodes,
                     min_samples_split=min_samples_split,
                     min_impurity_decrease=min_impurity_decrease, check_purity=True,
                     max_features=max_features, seed=seed)
    # Up to 16 trees a pass: a deep level of 50 trees at once held ~1 GB of histograms
    # a fit, new memory each level; with 16, a first fit on fresh Ray workers took
    # 2.9-3.1 s against 3.8-4.7 s (160,000 x 28, depth 10, 2 workers), warm fits the
    # same. Each tree draws its own rows and features: the forest does not change.
    batch = trees_per_pass or max(1, min(n_estimators, TREES_PER_PASS))
    forests, oob = [], None
    n_vals = n_ch - 1
    per_row = 4 * batch + (8 * batch if bootstrap else 8) + 8 * n_vals + 17
    if per_tree_cw:     # class channels per tree
        per_row += 8 * batch * n_vals
    if oob_score:
        per_row += 8 * n_vals + 8
    with TreeFit(dataset, spec, params, n_ch, max_bins=max_bins, parallel=parallel,
                 name=estimator, state_bytes_per_row=per_row, session=session) as tf, \
            progress_bar(estimator, total=n_estimators) as bar:
        for a in range(0, n_estimators, batch):
            ids = list(range(a, min(n_estimators, a + batch)))
            grower = Grower(tf.backend, len(ids), cfg, tf.edges, dataset.n_features, n_ch,
                            tree_ids=ids)
            tree_cw = _subsample_class_weights(tf, ids, seed, n_vals) if per_tree_cw else None
            trees, _ = grower.grow(prologue=(kernels.rf_prologue,
                                             (ids, seed, bootstrap, tree_cw)))
            values = [leaf_values(np.array(t.stats), crit) for t in trees]
            # A Poisson bootstrap draws no row at all with probability e^-n (n rows of
            # positive weight): such a tree learned nothing and would pull the forest's
            # mean towards 0, so it is left out (as if never grown).
            drawn = np.array([t.stats[0][-1] > 0 for t in trees])
            if drawn.any():
                forests.append(M.pack_forest([t for t, d in zip(trees, drawn) if d],
                                             [v for v, d in zip(values, drawn) if d]))
            if oob_score and bootstrap:
                out = tf.backend.finish((kernels.rf_oob_prologue,
                                         (_leaf_table(trees, values), drawn)))
                oob = out
            else:
                tf.backend.set_pending(None)
            bar.advance(len(ids))
        if oob is not None:
            if tf.parallel == "feature":
                oob = out[0]
            else:
                oob = (np.concatenate([o[0] for o in oob]), np.concatenate([o[1] for o in oob]))
        if not forests and bootstrap:
            raise ValueError(
                f"{estimator}: the bootstrap sample of every one of the {n_estimators} trees "
                f"came out empty (each row is drawn a Poisson(1) number of times, and few "
                f"rows have a positive weight). Use more trees (n_estimators) or "
                f"bootstrap=False.")
        if not forests:
            raise _no_weight(estimator)
        forest = M.concat_forests(forests)
        report = tf.report(estimator, n_estimators, [],
                           extra={"n_trees": M.n_trees(forest),
                                  "n_nodes": int(forest["offsets"][-1])})
    return ForestFit(forest, tf.edges, oob, report)


def _subsample_class_weights(tf, tree_ids, seed, n_classes):
    """"balanced_subsample": each tree's class weights from the class counts of its
    bootstrap sample, and the grid of its class channels. ``(cw (T, K), q (T,))``.

    The counts are integer-valued, so their sum over shards is exact and the same
    on any worker count. As scikit-learn's ``compute_sample_weight("balanced",
    indices=...)``: ``n_t / (K_t * n_tk)`` with ``K_t`` the classes drawn at all,
    and 0 for a class the tree did not draw (it has no rows to weigh).
    """
    parts = [p for p in tf.coord.map(kernels.rf_class_counts, tree_ids, seed, n_classes,
                                     step="bootstrap_class_counts") if p is not None]
    counts = _fold(parts)
    drawn = counts > 0
    with np.errstate(divide="ignore"):
        cw = np.where(drawn, counts.sum(axis=1, keepdims=True)
                      / (drawn.sum(axis=1, keepdims=True) * counts), 0.0)
    q = np.array([grid(tf.max_sw * w.max(), tf.terms) for w in cw])
    return cw, q


# -- gradient boosting --------------------------------------------------------------------
@dataclass
class BoostFit:
    forest: dict
    baseline: np.ndarray
    n_iter: int
    train_score: list
    validation_score: list
    report: FitReport


def _no_weight(estimator) -> ValueError:
    return ValueError(f"{estimator}: every row has weight 0 (sample_weight times "
                      "class_weight); give some rows a positive weight.")


def _check_split(estimator, train_weight, held_weight, held_out, fraction, n_rows):
    """Refuse a fit whose training or early-stopping rows came out empty (the rows are
    held out one by one at random, so a small dataset may keep none on one side)."""
    if not train_weight > 0 and held_out:
        raise ValueError(
            f"{estimator}: no training rows left to fit: the rows not held out for early "
            f"stopping (validation_fraction={fraction} of {n_rows} rows, drawn row by row) "
            "have no weight. Lower validation_fraction, pass X_val and y_val to fit, or "
            "check sample_weight / class_weight.")
    if not train_weight > 0:
        raise _no_weight(estimator)
    if held_out and not held_weight > 0:
        raise ValueError(
            f"{estimator}: early stopping held out no row with a positive weight "
            f"(validation_fraction={fraction} of {n_rows} rows, drawn row by row). "
            "Raise validation_fraction, pass X_val and y_val to fit, or set "
            "early_stopping=False.")


def _fold(blocks):
    acc = blocks[0].copy()
    for b in blocks[1:]:
        acc = acc + b
    return acc


def fit_boosting(dataset, *, loss, classes=None, n_estimators=100, learning_rate=0.1,
                 max_depth=6, max_leaves=None, min_samples_leaf=20, min_child_weight=1e-3,
                 reg_lambda=0.0, subsample=1.0, colsample=1.0, max_bins=255,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-7,
                 validation_data=None, seed=0, parallel="data", estimator="GradientBoosting",
                 session=None, categorical=None, class_weight=None) -> BoostFit:
    """Second-order gradient boosting with histogram trees grown level-wise (best-first
    up to ``max_leaves`` leaves when that is set).

    ``loss``: "squared_error", "binary" or "multiclass" (one tree per class per round,
    grown in the same passes). ``validation_data=(X_val, y_index_or_values, sw)`` is
    scored on the driver; otherwise with ``early_stopping`` a ``validation_fraction``
    of the rows (drawn on the workers) is held out. ``class_weight``: per-class
    multipliers of the training rows' weights (None: all 1).
    """
    Kt = len(classes) if loss == "multiclass" else 1
    n_classes = len(classes) if classes is not None else 1
    held_out = early_stopping and validation_data is None and validation_fraction
    spec = {"kind": "gbt_class" if loss != "squared_error" else "gbt_reg", "classes": classes,
            "n_trees": Kt, "loss": loss, "n_classes": n_classes, "seed": seed,
            "subsample": float(subsample), "class_weight": class_weight,
            "validation_fraction": float(validation_fraction) if held_out else None}
    params = SplitParams("gh", float(reg_lambda), int(min_samples_leaf), float(min_child_weight),
                         categorical)
    cfg = GrowConfig(params, max_depth=max_depth, max_leaves=max_leaves, check_purity=False,
                     seed=seed)
    F = dataset.n_features
    n_col = max(1, int(round(colsample * F))) if colsample < 1.0 else F
    forests, train_hist, val_hist = [], [], []
    # positions, gradients/hessians, raw scores, loss temporaries per tree; labels (and
    # as floats, for the one-tree row pass)...
    per_row = 4 * Kt + 16 * Kt + 8 * Kt + 24 * Kt + 8 + 8 + 25
    with TreeFit(dataset, spec, params, 3, max_bins=max_bins, parallel=parallel,
                 name=estimator, state_bytes_per_row=per_row, session=session) as tf:
        sums = _fold(tf.block_sums)
        sums, held_weight = sums[:-1], sums[-1]
        _check_split(estimator, sums[0] if loss == "squared_error" else sums.sum(),
                     held_weight, held_out, validation_fraction, dataset.n_rows)
        if loss == "squared_error":
            baseline = np.array([sums[1] / sums[0]])
        else:
            p = np.clip(sums / sums.sum(), 1e-15, 1.0)
            baseline = (np.array([np.log(p[1] / p[0])]) if loss == "binary" else np.log(p))
        spec["baseline"] = baseline
        n_rows, sw_max = dataset.n_rows, tf.max_sw
        if loss == "squared_error":
            # |baseline - y| in the first round; then from each round's largest residual.
            g_bound = max(abs(tf.y_range[0] - baseline[0]), abs(tf.y_range[1] - baseline[0]))
            h_bound = 1.0
        else:
            g_bound, h_bound = 1.0, 0.25
        if validation_data is not None:
            Xv, yv, swv = validation_data
            raw_v = np.tile(baseline, (Xv.shape[0], 1))
        leaf_table = None
        n_iter = 0
        stop = False
        with progress_bar(estimator, total=n_estimators) as bar:
            for r in range(n_estimators + 1):
                last = r == n_estimators
                masks = None
                if n_col < F:
                    rng = np.random.default_rng([seed, r, 13])
                    masks = np.zeros((Kt, F), bool)
                    for k in range(Kt):
                        masks[k, rng.choice(F, n_col, replace=False)] = True
                packed = Kt == 1 and _packing_fits(loss, tf.whole_weights, g_bound,
                                                   train_hist)
                if packed:
                    # One tree a round: gradients and hessians to 15 bits of their
                    # bounds, for one-add-per-feature histograms (._packed_hist). Not
                    # of the bounds times the weights: a weight k must give what k
                    # copies of the row give. Finer only if float64 sums need it.
                    grids = (max(pack_grid(g_bound), grid(g_bound * sw_max, n_rows)),
                             max(pack_grid(h_bound), grid(h_bound * sw_max, n_rows)))
                else:
                    grids = (grid(g_bound * sw_max, n_rows), grid(h_bound * sw_max, n_rows))
                prologue = (kernels.gbt_prologue, (leaf_table, spec, r, not last, grids,
                                                   packed))
                if last:
                    extras = tf.backend.finish(prologue)
                    trees = None
                else:
                    grower = Grower(tf.backend, Kt, cfg, tf.edges, F, 3,
                                    tree_ids=[r * Kt + k for k in range(Kt)], tree_masks=masks)
                    trees, extras = grower.grow(prologue=prologue)
                blocks = extras[0] if tf.parallel == "feature" else [b for e in extras for b in e]
                s = _fold([b[:4] for b in blocks])          # losses and weights: sums
                g_max = max(float(b[4]) for b in blocks)   # a max: any order gives it
                train_hist.append(s[0] / max(s[1], 1e-300))
                if validation_data is not None:
                    val_hist.append(_driver_loss(loss, raw_v, yv, swv))
                elif held_out:
                    val_hist.append(s[2] / max(s[3], 1e-300))
                stop = False
                if early_stopping and len(val_hist) > n_iter_no_change:
                    ref = val_hist[-(n_iter_no_change + 1)]
                    stop = not any(ref - v > tol for v in val_hist[-n_iter_no_change:])
                if last or stop:
                    break
                values = [leaf_values(np.array(t.stats), "gh", reg_lambda) * learning_rate
                          for t in trees]
                forests.append(M.pack_forest(trees, values))
                leaf_table = _leaf_table(trees, values)[:, :, 0]
                if loss == "squared_error":
                    # Next round's |raw - y| <= this round's largest + its largest leaf.
                    g_bound = g_max + float(np.abs(leaf_table).max())
                if validation_data is not None:
                    raw_v += M.leaf_outputs(forests[-1], Xv)[:, :, 0]
                n_iter = r + 1
                bar.advance(1, info=f"loss {train_hist[-1]:.5g}")
        if not forests:
            raise RuntimeError("boosting produced no tree")  # pragma: no cover
        forest = M.concat_forests(forests)
        # Early stopping's criterion met or not; no criterion without it.
        report = tf.report(estimator, n_iter, train_hist,
                           extra={"validation_loss": val_hist, "n_trees": M.n_trees(forest)},
                           converged=bool(stop) if early_stopping else None)
    return BoostFit(forest, baseline, n_iter, train_hist, val_hist, report)


#: Squared error packs its gradients only while their bound is at most this many
#: times their root mean square: a 2**-15 step of the bound is then below 2**-11 of
#: a typical gradient. One far outlier (y = 1e5 among values near 1) made the step
#: about 3, rounding every other residual to 0 or +-4.
PACK_MAX_BOUND_TO_RMS = 16.0


def _packing_fits(loss, whole_weights, g_bound, train_hist) -> bool:
    """Whether this round's gradients may go on the coarse packing grid (a step of
    2**-15 of their bound, rounded to before the weight multiplies).

    Only for whole-number row weights: a fractional weight multiplies a value already
    on that grid, and the product is rounded to it again (weights of 1e-4 gave every
    row 0). Logistic gradients lie in [-1, 1] and their hessians in [0, 1/4]: always
    fine otherwise. Squared error: while the bound is within
    :data:`PACK_MAX_BOUND_TO_RMS` of the residuals' root mean square, known from the
    last round's training loss (mean of half squared residuals); never in the first
    round, which has no loss yet. A decision from bounds and exactly folded sums, so
    the same on every engine and worker count.
    """
    if not whole_weights:
        return False
    if loss != "squared_error":
        return True
    if not train_hist:
        return False
    rms = math.sqrt(2.0 * max(train_hist[-1], 0.0))
    return g_bound <= PACK_MAX_BOUND_TO_RMS * rms


def _driver_loss(loss, raw, y, sw):
    lo, _, _ = kernels._loss_grad(loss, raw, y, raw.shape[1])
    return float((sw * lo).sum() / sw.sum())
