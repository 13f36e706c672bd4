"""The stage graph: embed -> knn -> cluster -> dynamics -> (beta search -> select -> evaluate) per budget.

The stages themselves live in elfs/stages/, one per module, each a function of its typed config and the artifacts
before it, run through the content-addressed cache. This module decides which of them a run needs (:class:`StageResults`
computes each the first time a method asks), chosen every budget's coresets (:func:`choose_budget`), then trains
their evaluations (:func:`evaluate_arm`). Under DDP every rank runs this same sequence, so the collectives inside
the stages meet in the same order: the label-free stages, then per budget in order the beta search and the
coresets' agreement checks, then the evaluations row by row, then the full-data reference. Ground-truth labels
reach exactly two places: the evaluations (kept indices only) and the clustering diagnostics, which are logged
and feed no decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elfs.cache import Artifact, array_hash
from elfs.data import Dataset, image_ids, is_streamed
from elfs.infra import distributed
from elfs.stages.beta_search import stage_beta_search
from elfs.stages.cluster import stage_cluster
from elfs.stages.context import Context
from elfs.stages.data import decodable_only, load_data, prepare_data
from elfs.stages.diagnostics import clustering_diagnostics
from elfs.stages.dynamics import stage_dynamics
from elfs.stages.embed import stage_embed
from elfs.stages.evaluate import prefetch_evaluations, stage_evaluate
from elfs.stages.inputs import Labels, uses_embeddings
from elfs.stages.knn import stage_knn
from elfs.stages.prototypes import stage_prototypes
from elfs.stages.select import hardness_of, select_coreset
from elfs.stages.zcore import stage_zcore
from elfs.tables.results import arm_entry, arm_of, run_results

log = logging.getLogger(__name__)

__all__ = ["Context", "StageResults", "load_data", "prepare_data", "run_pipeline"]


class StageResults:
    """A lazy graph of stage results: the inputs the selectors read, each computed (through the cache) the first
    time a method asks for it, so a run only pays for what its methods need: random needs nothing, prototypicality,
    D2 and ZCore the embeddings, ELFS and CCS the kNN graph, the clustering and the proxy's dynamics, the supervised
    reference a proxy on ground truth."""

    def __init__(self, ctx: Context, ds: Dataset, num_clusters: int, emb: Artifact | None = None) -> None:
        self.ctx, self.ds, self.num_clusters = ctx, ds, num_clusters
        self.free = ds.unlabelled()  # the label-free stages get this view: it has no targets at all
        self._emb, self._nn, self._clus, self._proto, self._zcore = emb, None, None, None, None
        self._labels: Labels | None = None
        self._dyn: dict[str, Artifact] = {}
        self._search: dict[tuple[str, float, tuple[float, ...]], Artifact] = {}
        self.candidates = candidates(ds)
        self._dup_pairs: tuple[np.ndarray, ...] | None = None
        self._pools: dict[str, tuple[tuple[np.ndarray, np.ndarray], np.ndarray | None]] = {}

    @property
    def emb(self) -> Artifact:
        if self._emb is None:
            cfg = self.ctx.cfg
            self._emb = stage_embed(self.ctx, cfg.backbone, self.free, num_workers=cfg.dataset.num_workers)
        return self._emb

    def emb_if(self, model: str) -> Artifact | None:
        """The embeddings when ``model`` trains on them, else None (and no embedding stage is run for it)."""
        return self.emb if uses_embeddings(model) else None

    @property
    def nn(self) -> Artifact:
        if self._nn is None:
            self._nn = stage_knn(self.ctx, self.ctx.cfg.knn, self.emb)
        return self._nn

    @property
    def clus(self) -> Artifact:
        if self._clus is None:
            self._clus = stage_cluster(self.ctx, self.ctx.cfg.cluster, self.emb, self.nn, self.num_clusters)
        return self._clus

    @property
    def proto(self) -> Artifact:
        if self._proto is None:
            self._proto = stage_prototypes(self.ctx, self.emb, self.num_clusters)
        return self._proto

    @property
    def zcore(self) -> Artifact:
        if self._zcore is None:
            self._zcore = stage_zcore(self.ctx, self.ctx.cfg.selection, self.emb)
        return self._zcore

    def computed(self) -> dict[str, Artifact]:
        """The artifacts this run has computed (or read from the cache) so far, by stage name."""
        out = {"embed": self._emb, "knn": self._nn, "cluster": self._clus, "prototypes": self._proto}
        out["zcore"] = self._zcore
        stage = {"pseudo": "dynamics", "ground_truth": "dynamics_gt", "mixed": "dynamics_mixed"}
        out.update({stage[k]: v for k, v in self._dyn.items()})
        return {k: v for k, v in out.items() if v is not None}

    def labels(self) -> Labels:
        """Whose labels the score methods' proxy and beta search use: pseudo-labels unless the opt-in says so
        (built once: the ground-truth key hashes every training label)."""
        if self._labels is None:
            s = self.ctx.cfg.selection
            if s.labels == "mixed":  # the diagnostic: labels of a controlled accuracy
                self._labels = Labels.mixed(self.ds, self.clus, s.mixed_replaced, self.ctx.seed)
                log.info("mixed labels: %.0f %% replaced, accuracy %.4f", 100 * s.mixed_replaced, self._labels.accuracy)
            else:
                self._labels = Labels.ground_truth(self.ds) if s.uses_ground_truth else Labels.pseudo(self.clus)
        return self._labels

    def dyn(self) -> Artifact:
        labels = self.labels()
        if labels.source not in self._dyn:
            d = self.ctx.cfg.dynamics
            self._dyn[labels.source] = stage_dynamics(self.ctx, d, self.free, self.emb_if(d.model), labels)
        return self._dyn[labels.source]

    def beta_search(self, budget: float, betas: list[float]) -> Artifact:
        s, e = self.ctx.cfg.selection, self.ctx.cfg.evaluate
        labels = self.labels()
        at = (labels.source, budget, tuple(betas))
        if at not in self._search:
            self._search[at] = stage_beta_search(
                self.ctx, s, e, self.free, self.emb_if(e.model), labels, self.dyn(), budget, betas
            )
        return self._search[at]

    def hardness(self, method: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """(score name, raw score, hardness: higher = harder) that ``method`` ranks by, or None (random, full)."""
        from elfs.select import METHOD_INPUTS

        need = METHOD_INPUTS[method]
        if need == "none":
            return None
        if need in ("prototypes", "graph"):
            dist = self.proto["distance"]
            return "prototype_distance", dist, dist
        if need == "zcore":  # higher = kept first, as the hardest are for the selectors
            return "zcore", self.zcore["score"], self.zcore["score"]
        score = self.ctx.cfg.selection.score
        return score, self.dyn()[score], hardness_of(self.dyn(), score)

    def groups(self, method: str) -> tuple[np.ndarray, int]:
        """The clusters ``method``'s answer files go round (labels, count): prototypicality's k-means for the
        embedding baselines, one group for ZCore (it clusters nothing), the classes for the supervised reference,
        else the pseudo-labels."""
        from elfs.select import METHOD_INPUTS

        if METHOD_INPUTS[method] == "zcore":
            return np.zeros(len(self.ds.train), dtype=np.int64), 1
        if METHOD_INPUTS[method] in ("prototypes", "graph"):
            return self.proto["labels"], int(self.proto.meta["num_clusters"])
        if self.ctx.cfg.selection.uses_ground_truth:
            return self.ds.truth.train, int(self.ds.num_classes)
        return self.clus["pseudo_labels"], int(self.clus.meta["num_clusters"])

    # ---- near-duplicates (selection.dedup): one representative per group of near-copies in the candidate pool
    def near_copy_pairs(self) -> tuple[np.ndarray, ...]:
        """The near-copy pairs (a, b, similarity) from the kNN graph (elfs/method/duplicates.py)."""
        if self._dup_pairs is None:
            from elfs.method.duplicates import near_copy_pairs

            s = self.ctx.cfg.selection
            if "signature" not in self.emb.arrays:
                raise RuntimeError("selection.dedup needs the embedding stage's pixel signatures; recompute=[embed]")
            self._dup_pairs = near_copy_pairs(
                self.nn["idx"],
                self.emb["signature"],
                s.dedup_threshold,
                s.dedup_crop_threshold,
                crop_gate=s.dedup_crop_gate,
                crop_candidates=s.dedup_crop_candidates,
                max_crop=s.dedup_max_crop,
            )
        return self._dup_pairs

    def near_copies(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """(group per image, representative per group) of the near-copies for ``method``: around the images it
        ranks best (elfs/method/duplicates.py)."""
        self.pool(method)
        return self._pools[method][0]

    def pool(self, method: str) -> np.ndarray | None:
        """The images ``method`` may choose: all (None); those not excluded; with selection.dedup, of each group of
        near-copies only its representative, and neither an excluded (labelled) image's group nor its copies."""
        s = self.ctx.cfg.selection
        if not s.dedup:
            return self.candidates
        if method not in self._pools:
            from elfs.method.duplicates import groups_around_representatives, pool, preference

            a, b, w = self.near_copy_pairs()
            scored = self.hardness(method)
            hardness = None if scored is None else scored[2]
            n = len(self.ds.train)
            order = preference(n, hardness, hardest=method in _KEEPS_HARDEST)
            groups, rep = groups_around_representatives(n, a, b, w, order)
            excluded = None
            if self.candidates is not None:
                excluded = np.setdiff1d(np.arange(n), self.candidates)
            self._pools[method] = ((groups, rep), pool(groups, rep, excluded, (a, b)))
            log.info(
                "selection.dedup: %d near-copy pairs (signature cosine >= %g, aligned >= %g): %d groups, %d left out",
                len(a),
                s.dedup_threshold,
                s.dedup_crop_threshold,
                len(rep),
                int((groups >= 0).sum()) - len(rep),
            )
        return self._pools[method][1]

    def select(
        self, method: str, budget: float, beta: float, seed: int, contains: np.ndarray | None = None
    ) -> np.ndarray:
        """``method``'s coreset at ``budget`` (computing the stages it needs, through the cache, first), among the
        images not excluded, holding ``contains`` (an earlier budget's coreset) when given."""
        scored = self.hardness(method)
        embeddings = self.emb["train"] if method == "d2" else None
        hardness = None if scored is None else scored[2]
        n, s, pool = len(self.ds.train), self.ctx.cfg.selection, self.pool(method)
        t0 = time.perf_counter()
        kept = select_coreset(
            s,
            method,
            hardness,
            embeddings,
            n,
            budget,
            beta,
            seed,
            contains=contains,
            candidates=pool,
        )
        timings = self.ctx.timings
        timings["select"] = timings.get("select", 0.0) + time.perf_counter() - t0
        return kept


#: methods whose best image is the hardest (they keep the hard end; ZCore its highest scores): a group of
#: near-copies keeps its hardest
_KEEPS_HARDEST = frozenset({"hard", "prototypicality", "zcore"})


def candidates(ds: Dataset) -> np.ndarray | None:
    """The images a coreset may take: all (None), or those not in ``ds.excluded`` (selection.exclude, read when the
    data loaded; an excluded image that did not decode is simply gone)."""
    if not ds.excluded:
        return None
    keep = [i for i, name in enumerate(image_ids(ds.train)) if name not in ds.excluded]
    log.info("selection.exclude: %d already-labelled images are never proposed", len(ds.train) - len(keep))
    return np.asarray(keep, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- chosen


@dataclass
class ArmCoresets:
    """One arm at one budget: its coreset per evaluation seed, selected before any evaluation trains."""

    method: str
    budget: float
    beta: float | None
    kept: dict[int, np.ndarray]

    def jobs(self) -> list[tuple[np.ndarray, int, str]]:
        """(kept, seed, label) of each evaluation this arm needs."""
        return [(k, seed, f"{self.method} budget={self.budget} seed={seed}") for seed, k in self.kept.items()]


@dataclass
class BudgetCoresets:
    """One budget: the results row (beta and how it was chosen), the method's own coreset, the arms to evaluate."""

    row: dict[str, Any]
    kept: np.ndarray
    arms: dict[str, ArmCoresets] = field(default_factory=dict)


def choose_arm(sig: StageResults, method: str, budget: float, beta: float | None) -> ArmCoresets:
    """Select with ``method`` once per evaluation seed."""
    seeds = [int(x) for x in sig.ctx.cfg.evaluate.seeds]
    return ArmCoresets(method, budget, beta, {seed: sig.select(method, budget, beta or 0.0, seed) for seed in seeds})


def choose_beta(sig: StageResults, budget: float, prev: BudgetCoresets | None = None) -> dict[str, Any]:
    """The method's beta at ``budget`` and where it came from: the label-free search, a fixed value, or n/a. With
    nested budgets (``prev``: the next smaller budget's coresets) only the betas whose window holds prev's are
    searched."""
    from elfs.select import METHODS_USING_BETA
    from elfs.select.beta_search import beta_grid_for
    from elfs.select.double_end import nested_beta_range

    s = sig.ctx.cfg.selection
    if s.method not in METHODS_USING_BETA:
        d2 = s.method == "d2"
        return {"beta": s.d2_beta_at(budget) if d2 else None, "beta_source": _d2_source(s) if d2 else "n/a"}
    if not s.searched:
        return {"beta": s.beta_at(budget), "beta_source": "reference" if s.fixed_beta is None else "fixed"}
    betas = beta_grid_for(budget, s.beta_grid)
    window = {}
    if prev is not None:
        lo, hi = nested_beta_range(float(prev.row["beta"]), float(prev.row["budget"]), budget)
        betas = [b for b in betas if lo - 1e-9 <= b <= hi + 1e-9] or [lo]
        window = {"beta_window": [lo, hi]}
    search = sig.beta_search(budget, betas)
    acc = 100 * np.asarray(search["val_acc"], float)  # the curve of this budget's search, also when it was cached
    sig.ctx.loggers.log_curve(f"beta_search/{budget:g}", "beta", {"val_acc": (search["betas"], acc)})
    return {
        **window,
        "beta": float(search["best_beta"]),
        "beta_source": "search",
        "beta_at_edge": bool(search.meta["at_edge"]),
        "beta_curve": {"betas": search["betas"].tolist(), "val_acc": search["val_acc"].tolist()},
    }


def _d2_source(s: Any) -> str:
    return "reference" if isinstance(s.d2_beta, str) else "fixed"


def choose_budget(
    sig: StageResults, budget: float, methods: list[str], prev: BudgetCoresets | None = None
) -> BudgetCoresets:
    """Choose beta, select the method's coreset (the answer; holding ``prev``'s with nested budgets), and, on
    labelled data, choose every arm's coresets."""
    from elfs.select import METHODS_USING_BETA

    cfg = sig.ctx.cfg
    s = cfg.selection
    row: dict[str, Any] = {"budget": budget, "pruning_rate": round(1.0 - budget, 6), "methods": {}}
    row.update(choose_beta(sig, budget, prev))
    beta = row["beta"]
    kept = sig.select(s.method, budget, beta or 0.0, cfg.seed, contains=None if prev is None else prev.kept)
    row["nested"] = bool(s.nested)
    distributed.check_same(array_hash(kept), f"the {s.method} coreset at budget {budget}")
    row["n_kept"] = int(len(kept))
    budget_sets = BudgetCoresets(row, kept)
    if not sig.ds.labelled:  # nothing to evaluate against: the kept set is the answer
        return budget_sets
    # a score baseline with a hard cut (ccs beside double_end) uses the method's beta; beside a method without one
    # (random, d2, ...) it takes a fixed selection.beta, else none
    cut = beta if s.method in METHODS_USING_BETA else ((None if s.searched else s.beta_at(budget)) or 0.0)
    for method in methods:
        arm_beta = s.d2_beta_at(budget) if method == "d2" else (cut if method in METHODS_USING_BETA else None)
        budget_sets.arms[arm_of(cfg, method)["arm"]] = choose_arm(sig, method, budget, arm_beta)
    return budget_sets


def evaluate_arm(sig: StageResults, arm_sets: ArmCoresets, coresets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Train on the arm's coresets once per evaluation seed (through the cache); its results entry."""
    from elfs.infra.progress import progress_bar

    ctx, e = sig.ctx, sig.ctx.cfg.evaluate
    arm = arm_of(ctx.cfg, arm_sets.method)
    accs, bests, keys, arts = [], [], [], []
    bar = progress_bar(
        len(arm_sets.kept),
        f"evaluate {arm_sets.method} @ {arm_sets.budget:g}",
        unit="run",
        enabled=ctx.progress,
        every_s=ctx.progress_every_s,
        leave=False,
    )
    for kept, seed, label in arm_sets.jobs():
        coresets[f"{arm['arm']}_budget{arm_sets.budget:g}_seed{seed}"] = kept
        art = stage_evaluate(ctx, e, sig.ds, sig.emb_if(e.model), kept, seed, label)
        accs.append(float(art["final_acc"]))
        best = float(art["best_acc"])
        bests.append(None if np.isnan(best) else best)  # None, not NaN: results.json stays strict JSON
        keys.append(art.key)
        arts.append(art)
        bar.update(1)
    bar.close()
    ctx.loggers.log_curve(f"evaluate/{arm_sets.budget:g}/{arm['arm']}", "step", _mean_curves(arts))
    n_kept = len(next(iter(arm_sets.kept.values())))
    return arm_entry(arm, arm_sets.beta, accs, bests, list(arm_sets.kept), keys, n_kept)


def _mean_curves(arts: list[Artifact]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An arm's evaluation curves, from the cache entries of its seeds: training loss and test accuracy (percent)
    by step, the mean over the seeds that share the first seed's steps (an entry without curves gives none)."""
    out = {}
    series = (("train_loss", "loss_steps", "loss", 1.0), ("test_acc", "test_steps", "test_acc", 100.0))
    for name, steps_key, values_key, scale in series:
        have = [a for a in arts if steps_key in a.arrays and len(a[steps_key])]
        if not have:
            continue
        steps = np.asarray(have[0][steps_key])
        same = [np.asarray(a[values_key], float) for a in have if np.array_equal(a[steps_key], steps)]
        out[name] = (steps, scale * np.mean(same, axis=0))
    return out


# ---------------------------------------------------------------------------------------------- the run


def _stage_results(ctx: Context, ds: Dataset, num_clusters: int) -> tuple[StageResults, Dataset, int, list]:
    """The run's StageResults; a folder is embedded first and cut down to the images that decode, then checked again."""
    skipped = [tuple(x) for x in ds.notes.get("skipped", [])]
    if not is_streamed(ds.train):
        return StageResults(ctx, ds, num_clusters), ds, num_clusters, skipped
    from elfs.preflight import check_data

    cfg = ctx.cfg
    emb = stage_embed(ctx, cfg.backbone, ds.unlabelled(), num_workers=cfg.dataset.num_workers)
    skipped += [tuple(x) for x in emb.meta.get("failed", [])]
    ds = decodable_only(ds, emb)
    num_clusters = check_data(cfg, ds)
    return StageResults(ctx, ds, num_clusters, emb), ds, num_clusters, skipped


def warn_weak_labels(sig: StageResults, chosen: list[BudgetCoresets]) -> list[str]:
    """Log the label-free signs of weak pseudo-labels this run shows (empty or tiny clusters, heads that disagree,
    a beta curve still rising at the grid's edge), then one line of what to try; return the signs."""
    from elfs.cluster.signals import WHAT_TO_TRY, weak_label_signals

    done = sig.computed()
    signs = []
    if "cluster" in done and not sig.ctx.cfg.selection.reads_ground_truth:
        clus = done["cluster"]
        heads = clus["head_assignments"] if "head_assignments" in clus.arrays else None
        signs += weak_label_signals(
            clus["pseudo_labels"], int(clus.meta["num_clusters"]), heads, clus.meta.get("best_head")
        )
    edge = [p.row["budget"] for p in chosen if p.row.get("beta_at_edge")]
    if edge:
        signs.append(f"the beta search's validation accuracy still rises at the grid's edge (budget {edge})")
    for sign in signs:
        log.warning("weak pseudo-labels? %s", sign)
    if signs:
        log.warning(WHAT_TO_TRY)
    return signs


def _score_arrays(done: Mapping[str, Artifact]) -> dict[str, np.ndarray]:
    """scores.npz: the pseudo-labels and every score the run computed (ground-truth proxy's with a _gt suffix)."""
    out = {}
    if "cluster" in done:
        out["pseudo_labels"] = done["cluster"]["pseudo_labels"]
    for stage, suffix in (("dynamics", ""), ("dynamics_gt", "_gt"), ("dynamics_mixed", "_mixed")):
        if stage in done:
            out.update({f"{k}{suffix}": v for k, v in done[stage].arrays.items()})
    if "prototypes" in done:
        out["prototype_distance"] = done["prototypes"]["distance"]
    if "zcore" in done:
        out["zcore"] = done["zcore"]["score"]
    return out


def _answer(sig: StageResults, chosen: list[BudgetCoresets], skipped: list, near: Any) -> Any:
    """The run's answer for the labelling team, computed once (None for a method that ranks nothing)."""
    from elfs.handback.answer import Answer
    from elfs.stages.answer import answer_names

    s, ds, done = sig.ctx.cfg.selection, sig.ds, sig.computed()
    scored = sig.hardness(s.method)
    if scored is None:
        return None
    score_name, score, hardness = scored
    clusters, num_clusters = sig.groups(s.method)
    ids, filepaths = answer_names(ds)
    return Answer(
        ids=ids,
        filepaths=filepaths,
        clusters=clusters,
        num_clusters=int(num_clusters),
        score_name=score_name,
        score=score,
        hardness=hardness,
        kept={p.row["budget"]: p.kept for p in chosen},
        beta={p.row["budget"]: p.row["beta"] for p in chosen},
        method=s.method,
        nested=s.nested,
        excluded=len(ds.excluded),
        skipped=skipped,
        embeddings=done["embed"]["train"] if "embed" in done else None,
        near_copies=near,
    )


def run_pipeline(ctx: Context, ds: Dataset, num_clusters: int) -> dict[str, Any]:
    """Run the stages the configured methods need on the loaded, checked data; return the results dict that
    report.py writes and prints."""
    from elfs.handback.answer import NearCopies
    from elfs.select import METHOD_INPUTS
    from elfs.stages.answer import write_answer

    cfg = ctx.cfg
    t_start = time.perf_counter() - ctx.timings.get("data", 0.0)
    s = cfg.selection
    sig, ds, num_clusters, skipped = _stage_results(ctx, ds, num_clusters)

    methods = [m for m in dict.fromkeys([s.method, *s.baselines]) if m != "full"]
    evaluate_full = ds.labelled and (s.method == "full" or "full" in s.baselines)
    if any(METHOD_INPUTS[m] == "score" for m in methods) and not s.uses_ground_truth:
        sig.clus  # noqa: B018 - the clustering first, so its diagnostics are logged before the long stages
    diag = clustering_diagnostics(ds, sig.clus) if ds.labelled and "cluster" in sig.computed() else {}
    ctx.loggers.log_metrics(
        {f"diagnostics/{k}/{m}": v for k, d in diag.items() if isinstance(d, Mapping) for m, v in d.items()}
    )

    budgets = [] if s.method == "full" else s.feasible_budgets()
    for budget in [b for b in s.budgets if b not in budgets and s.method != "full"]:
        log.warning("selection.beta=%s leaves no room for budget %s (beta + budget > 1): skipped", s.beta, budget)
    chosen: list[BudgetCoresets] = []
    for budget in sorted(budgets) if s.nested else budgets:  # nested: each larger set holds the one before
        chosen.append(choose_budget(sig, budget, methods, chosen[-1] if s.nested and chosen else None))
    full = choose_arm(sig, "full", 1.0, None) if evaluate_full else None
    jobs = [job for p in chosen for arm in p.arms.values() for job in arm.jobs()] + (full.jobs() if full else [])
    prefetch_evaluations(ctx, cfg.evaluate, ds, sig.emb_if(cfg.evaluate.model), jobs)  # concurrent > 1: K at once

    coresets: dict[str, np.ndarray] = {}
    rows = []
    for p in chosen:
        if not ds.labelled:
            coresets[f"{s.method}_budget{p.row['budget']:g}"] = p.kept
        rows.append({**p.row, "methods": {name: evaluate_arm(sig, arm, coresets) for name, arm in p.arms.items()}})
    full_entry = evaluate_arm(sig, full, coresets) if full is not None else None
    warn_weak_labels(sig, chosen)
    if s.labels == "mixed" and any(METHOD_INPUTS[m] == "score" for m in methods):
        labels = sig.labels()
        diag["mixed_labels"] = {"replaced": float(s.mixed_replaced), "accuracy": labels.accuracy}

    done = sig.computed()
    selection_files = []
    if distributed.is_zero():  # the run folder is rank 0's
        np.savez(ctx.run_dir / "coresets.npz", **coresets)
        np.savez(ctx.run_dir / "scores.npz", **_score_arrays(done))
        if chosen:
            near = NearCopies(*sig.near_copies(s.method), s.dedup_threshold) if s.dedup else None
            answer = _answer(sig, chosen, skipped, near)
            selection_files = write_answer(ctx.run_dir, ds, s.method, answer, near)
    return run_results(
        ctx,
        ds,
        num_clusters=num_clusters,
        n_skipped=len(skipped),
        rows=rows,
        full=full_entry,
        diagnostics=diag,
        selection_files=selection_files,
        total_seconds=time.perf_counter() - t_start,
        artifacts={k: v.key for k, v in done.items()},
    )
