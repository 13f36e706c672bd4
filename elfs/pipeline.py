"""The stage graph: embed -> knn -> cluster -> dynamics -> (beta search -> select -> evaluate) per budget.

Each stage is a function of its own typed config (a dataclass from elfs/config.py, handed over whole) and the
artifacts before it, run through the content-addressed cache (elfs/cache.py); the whole dataclass is part of
the cache key, so a new hyperparameter invalidates exactly the stages that read it. Ground-truth labels reach
exactly two places here: the `evaluate` stage (kept indices only) and the clustering diagnostics, which are
logged and feed no decision.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elfs.cache import Artifact, ArtifactCache, array_hash
from elfs.config import (
    BackboneConfig,
    ClassifierTrainingConfig,
    ClusterConfig,
    DatasetConfig,
    DynamicsConfig,
    ElfsConfig,
    EvaluateConfig,
    KnnConfig,
    SelectionConfig,
)
from elfs.data import Dataset, UnlabelledData, is_streamed, load_dataset

log = logging.getLogger(__name__)


def _key_config(cfg: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stage config as cache-key data: every field but those in ``drop`` (fields known not to change this
    artifact), so a new hyperparameter is part of the key by default."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in drop}


@dataclass
class Context:
    """What every stage needs besides its inputs: the typed config, cache, run folder, loggers, Trainer settings."""

    cfg: ElfsConfig
    cache: ArtifactCache
    run_dir: Path
    loggers: Any  # elfs.logging.RunLoggers
    timings: dict[str, float] = field(default_factory=dict)

    def trainer_kwargs(self, *, progress: bool, stage: str | None = None) -> dict[str, Any]:
        """Trainer settings; a long stage (``progress``) shows Lightning's bar on a terminal and, writing to a log
        file, one plain line per epoch at most every ``progress_every_s`` seconds (elfs/progress.py)."""
        from elfs.progress import EpochProgress, is_terminal

        t = self.cfg.trainer
        show = bool(progress and self.cfg.progress)
        callbacks = [EpochProgress(stage, self.cfg.progress_every_s)] if show and stage and not is_terminal() else []
        return {
            "callbacks": callbacks,
            "accelerator": t.accelerator,
            "devices": t.devices,
            "strategy": t.strategy,
            "num_nodes": t.num_nodes,
            "precision": t.precision,
            "deterministic": t.deterministic,
            "log_every_n_steps": 10,
            # Lightning's bar redraws per step: only on a terminal, never into a log file
            "enable_progress_bar": bool(show and t.enable_progress_bar and is_terminal()),
        }

    def timed(self, stage: str, art: Artifact) -> Artifact:
        self.timings[stage] = self.timings.get(stage, 0.0) + (0.0 if art.cached else art.seconds)
        return art


# ------------------------------------------------------------------------------------------------ data


def load_data(d: DatasetConfig) -> Dataset:
    """Load the configured dataset, apply max_train and the augmentation overrides."""
    ds = load_dataset(
        d.name, path=d.path, root=d.root, download=d.download, test_fraction=d.test_fraction, split_seed=d.split_seed
    )
    if d.max_train is not None and d.max_train < len(ds.train):
        from elfs.data import GroundTruth, ImageSet

        n = int(d.max_train)
        train = ds.train.subset(np.arange(n)) if is_streamed(ds.train) else ImageSet(ds.train.images[:n], ds.train.name)
        truth = None if ds.truth is None else GroundTruth(ds.truth.train[:n], ds.truth.test, ds.truth.num_classes)
        ds = dataclasses.replace(ds, train=train, truth=truth)
    if d.hflip is not None:
        ds = dataclasses.replace(ds, hflip=bool(d.hflip))
    if d.crop_padding is not None:
        ds = dataclasses.replace(ds, crop_padding=int(d.crop_padding))
    return ds


# ---------------------------------------------------------------------------------------- label-free stages


def stage_embed(ctx: Context, b: BackboneConfig, ds: UnlabelledData) -> Artifact:
    """Embed train (and test) images with the frozen backbone (images only; no labels exist here).

    A streamed source is decoded in DataLoader workers batch by batch; its artifact also holds `valid`, the
    indices of the decodable files, and lists the others under meta["failed"]."""
    from elfs.embed import embed_folder, embed_images

    config = {"name": b.name, "image_size": b.image_size, "pretrained": b.pretrained}
    inputs = {"train": ds.train.fingerprint()}
    if ds.test is not None:
        inputs["test"] = ds.test.fingerprint()
    kw = dict(
        progress_every_s=ctx.cfg.progress_every_s,
        image_size=b.image_size,
        batch_size=b.batch_size,
        device=b.device,
        pretrained=b.pretrained,
        progress=ctx.cfg.progress,
    )

    def compute():
        if ds.streamed:
            train, valid, failed = embed_folder(ds.train, b.name, num_workers=ctx.cfg.dataset.num_workers, **kw)
            arrays = {"train": train, "valid": valid}
            extra = {"failed": [[ds.train.paths[i], why] for i, why in failed]}
        else:
            arrays, extra = {"train": embed_images(ds.train.images, b.name, **kw)}, {}
        if ds.test is not None and is_streamed(ds.test):  # a streamed test split (imagefolder)
            test, test_valid, failed = embed_folder(ds.test, b.name, num_workers=ctx.cfg.dataset.num_workers, **kw)
            arrays.update(test=test, test_valid=test_valid)
            extra["failed"] = extra.get("failed", []) + [[f"(test) {ds.test.paths[i]}", why] for i, why in failed]
        elif ds.test is not None:
            arrays["test"] = embed_images(ds.test.images, b.name, **kw)
        return arrays, {**extra, "n_train": len(arrays["train"]), "dim": arrays["train"].shape[1]}

    return ctx.timed("embed", ctx.cache.run("embed", config, inputs, compute))


def decodable_only(ds: Dataset, emb: Artifact) -> Dataset:
    """A streamed dataset cut down to the images its embedding stage could decode (labels cut alike)."""
    from elfs.data import GroundTruth

    train_idx = emb["valid"]
    test_idx = emb.arrays.get("test_valid")
    changes: dict[str, Any] = {}
    if len(train_idx) < len(ds.train):
        changes["train"] = ds.train.subset(train_idx)
    if test_idx is not None and len(test_idx) < len(ds.test):
        changes["test"] = ds.test.subset(test_idx)
    if changes and ds.truth is not None:
        y_te = ds.truth.test if test_idx is None else ds.truth.test[test_idx]
        changes["truth"] = GroundTruth(ds.truth.train[train_idx], y_te, ds.truth.num_classes)
    return dataclasses.replace(ds, **changes) if changes else ds


def stage_knn(ctx: Context, k: KnnConfig, emb: Artifact) -> Artifact:
    """Cosine kNN among training embeddings, self excluded (k < N was checked when the data loaded)."""
    from elfs.knn import knn

    config = {"k": k.k, "backend": k.backend}
    if k.backend == "faiss_ivf":  # the exact backends do not depend on these
        config.update(nlist=k.nlist, nprobe=k.nprobe)

    def compute():
        idx, sims = knn(emb["train"], k.k, backend=k.backend, chunk_size=k.chunk_size, nlist=k.nlist, nprobe=k.nprobe)
        return {"idx": idx, "sims": sims}, {}

    return ctx.timed("knn", ctx.cache.run("knn", config, {"embed": emb.key}, compute))


def stage_cluster(ctx: Context, c: ClusterConfig, emb: Artifact, nn: Artifact, num_clusters: int) -> Artifact:
    """TEMI pseudo-labels (or k-means), chosen by a label-free rule; k-means kept beside it for comparison."""
    from elfs.cluster import fit_temi, kmeans_labels

    config = {
        **_key_config(c),
        "num_clusters": num_clusters,
        "seed": ctx.cfg.seed,
        "precision": ctx.cfg.trainer.precision,
    }
    x = emb["train"]

    def compute():
        arrays: dict[str, np.ndarray] = {}
        extra: dict[str, Any] = {"num_clusters": num_clusters}
        if c.method == "temi":
            res = fit_temi(
                x,
                nn["idx"],
                num_clusters,
                c,
                seed=ctx.cfg.seed,
                trainer_kwargs=ctx.trainer_kwargs(progress=True, stage="cluster"),
                logger=ctx.loggers.for_stage("cluster"),
            )
            arrays.update(
                pseudo_labels=res.pseudo_labels,
                head_assignments=res.head_assignments,
                head_losses=res.head_losses,
                loss_curve=np.asarray(res.loss_curve, dtype=np.float64),
            )
            extra["best_head"] = int(res.best_head)
        if c.kmeans_baseline or c.method == "kmeans":
            km = kmeans_labels(x, num_clusters, seed=ctx.cfg.seed)
            arrays["kmeans_labels"] = km
            if c.method == "kmeans":
                arrays["pseudo_labels"] = km
        return arrays, extra

    return ctx.timed("cluster", ctx.cache.run("cluster", config, {"embed": emb.key, "knn": nn.key}, compute))


def _model_inputs(model: str, ds: Dataset | UnlabelledData, emb: Artifact, split: str) -> Any:
    """What `model` trains on for `split`: the embeddings, the in-memory uint8 images, or, for a streamed source
    (a folder), the source itself, which train_classifier decodes batch by batch at the config's image_size."""
    from elfs.models import MODEL_INPUTS

    if MODEL_INPUTS[model] == "embeddings":
        return emb[split]
    images = ds.train if split == "train" else ds.test
    if is_streamed(images):  # never read whole
        return images
    return images.images


def _image_kwargs(ds: Dataset | UnlabelledData) -> dict[str, Any]:
    """What train_classifier needs to know about the images: augmentation and channel statistics (label-free)."""
    mean, std = ds.train.channel_stats()
    return dict(crop_padding=ds.crop_padding, hflip=ds.hflip, mean=mean, std=std)


def _train_key(
    t: ClassifierTrainingConfig, ds: Dataset | UnlabelledData, ctx: Context, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Cache-key data of one classifier training: its config (less ``drop``) plus the image settings."""
    return {
        **_key_config(t, drop),
        "crop_padding": ds.crop_padding,
        "hflip": ds.hflip,
        "precision": ctx.cfg.trainer.precision,
    }


def stage_dynamics(ctx: Context, d: DynamicsConfig, ds: UnlabelledData, emb: Artifact, clus: Artifact) -> Artifact:
    """Train the proxy on pseudo-labels and record AUM, forgetting, EL2N per example (no ground truth)."""
    from elfs.dynamics import record_dynamics

    pseudo = clus["pseudo_labels"]
    x = _model_inputs(d.model, ds, emb, "train")
    config = {**_train_key(d, ds, ctx), "seed": ctx.cfg.seed}
    inputs = {"cluster": clus.key, "images": ds.train.fingerprint(), "embed": emb.key}
    # epoch checkpoints of this very computation: a run killed mid-stage resumes here, with the same result
    key = ctx.cache.key("dynamics", config, inputs)
    work = ctx.cache.entry("dynamics", key).with_name(f".work-{key}")

    def compute():
        resumed = (work / "last.ckpt").is_file()
        if resumed:
            log.info("dynamics: resuming from the epoch checkpoint in %s", work)
        scores = record_dynamics(
            x,
            pseudo,
            d,
            num_classes=int(clus.meta["num_clusters"]),
            seed=ctx.cfg.seed,
            trainer_kwargs=ctx.trainer_kwargs(progress=True, stage="dynamics"),
            logger=ctx.loggers.for_stage("dynamics"),
            num_workers=ctx.cfg.trainer.num_workers,
            checkpoint_dir=str(work),
            **_image_kwargs(ds),
        )
        return {k: np.asarray(v) for k, v in scores.items()}, {"resumed": resumed}

    art = ctx.cache.run("dynamics", config, inputs, compute)
    shutil.rmtree(work, ignore_errors=True)  # the artifact is complete: its checkpoints are no longer needed
    return ctx.timed("dynamics", art)


def hardness_of(dyn: Artifact, score: str) -> np.ndarray:
    """The chosen score turned into 'higher = harder' by its declared hard end."""
    from elfs.dynamics import HARD_END
    from elfs.select import to_hardness

    return to_hardness(dyn[score], HARD_END[score])


def stage_beta_search(
    ctx: Context,
    s: SelectionConfig,
    e: EvaluateConfig,
    ds: UnlabelledData,
    emb: Artifact,
    clus: Artifact,
    dyn: Artifact,
    budget: float,
) -> Artifact:
    """Choose beta on a 90/10 split of the pseudo-labelled train set (method.md §6.4), touching no ground truth.

    Each candidate trains the evaluation network (``e``) on pseudo-labels for ``s.search_steps`` steps."""
    from elfs.dynamics.classifier import evaluate_accuracy, train_classifier
    from elfs.select.beta_search import search_beta

    pseudo = clus["pseudo_labels"]
    num_classes = int(clus.meta["num_clusters"])
    x = _model_inputs(e.model, ds, emb, "train")
    steps = int(s.search_steps or e.steps)
    config = {
        "method": s.method,
        "score": s.score,
        "grid": [float(b) for b in s.beta_grid],
        "budget": budget,
        "val_fraction": s.val_fraction,
        "strata": s.strata,
        "steps": steps,
        "seed": ctx.cfg.seed,
        # the candidates train for `steps` on pseudo-labels: the evaluation's own steps and seeds do not matter
        "train": _train_key(e, ds, ctx, drop=("steps", "test_every", "seeds")),
    }
    inputs = {"dynamics": dyn.key, "cluster": clus.key, "embed": emb.key, "images": ds.train.fingerprint()}
    hardness = hardness_of(dyn, s.score)

    def train_and_validate(kept: np.ndarray, val: np.ndarray) -> float:
        res = train_classifier(
            x,
            pseudo,
            kept,
            e,
            num_classes=num_classes,
            steps=steps,
            seed=ctx.cfg.seed,
            trainer_kwargs=ctx.trainer_kwargs(progress=False),
            logger=False,
            num_workers=ctx.cfg.trainer.num_workers,
            **_image_kwargs(ds),
        )
        acc = evaluate_accuracy(res.module, x, pseudo, indices=val, num_workers=ctx.cfg.trainer.num_workers)
        return float(acc)

    def compute():
        res = search_beta(
            hardness,
            budget,
            [float(b) for b in s.beta_grid],
            train_and_validate=train_and_validate,
            method=s.method,
            val_fraction=s.val_fraction,
            seed=ctx.cfg.seed,
            strata=s.strata,
        )
        arrays = {
            "betas": np.asarray(res.betas, dtype=np.float64),
            "val_acc": np.asarray(res.val_acc),
            "best_beta": np.asarray(res.best_beta),
            "val_idx": res.val_idx,
        }
        return arrays, {"at_edge": bool(res.at_edge)}

    art = ctx.cache.run("beta_search", config, inputs, compute, label=f"budget={budget}")
    return ctx.timed("beta_search", art)


def select_coreset(
    ctx: Context, s: SelectionConfig, method: str, dyn: Artifact, n: int, budget: float, beta: float, seed: int
) -> np.ndarray:
    """Kept indices (sorted int64) for one method; cheap, so not cached, but saved in the run folder."""
    from elfs.select import select

    t0 = time.perf_counter()
    hardness = hardness_of(dyn, s.score) if method != "random" else None
    kept = select(method, hardness, n=n, budget=budget, beta=beta, seed=seed, strata=s.strata)
    ctx.timings["select"] = ctx.timings.get("select", 0.0) + time.perf_counter() - t0
    return kept


# ------------------------------------------------------------------------------------ the labelled stage


def stage_evaluate(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact, kept: np.ndarray, seed: int, label: str
) -> Artifact:
    """Train from scratch on the kept indices with their GROUND-TRUTH labels for a fixed number of steps; test."""
    from elfs.dynamics.classifier import train_classifier

    x_tr = _model_inputs(e.model, ds, emb, "train")
    x_te = _model_inputs(e.model, ds, emb, "test")
    config = {**_train_key(e, ds, ctx, drop=("seeds",)), "seed": seed}  # one entry per seed
    inputs = {
        "kept": array_hash(kept),
        "images": ds.train.fingerprint(),
        "test": ds.test.fingerprint(),
        "labels": array_hash(ds.truth.train),
        "test_labels": array_hash(ds.truth.test),
        "embed": emb.key,
    }

    def compute():
        res = train_classifier(
            x_tr,
            ds.truth.train,
            kept,
            e,
            num_classes=ds.num_classes,
            steps=e.steps,
            seed=seed,
            trainer_kwargs=ctx.trainer_kwargs(progress=False),
            logger=False,
            num_workers=ctx.cfg.trainer.num_workers,
            test_inputs=x_te,
            test_labels=ds.truth.test,
            test_every=e.test_every,
            **_image_kwargs(ds),
        )
        best = np.nan if res.best_test_acc is None else res.best_test_acc
        return {"final_acc": np.asarray(res.final_test_acc), "best_acc": np.asarray(best)}, {"n_kept": len(kept)}

    return ctx.timed("evaluate", ctx.cache.run("evaluate", config, inputs, compute, label=label))


def write_answer(
    ctx: Context,
    ds: Dataset,
    clus: Artifact,
    dyn: Artifact,
    kept_at: dict[float, np.ndarray],
    beta_at: dict[float, float | None],
    num_clusters: int,
    skipped: list,
) -> list[Path]:
    """What a practitioner acts on: selection.csv (one row per image), the list to annotate per budget, a contact
    sheet, the score histogram with the cuts, per-cluster coverage, and the skipped files (elfs/selection_report.py)."""
    from elfs.selection_report import write_selection_outputs

    score = ctx.cfg.selection.score
    if is_streamed(ds.train):
        ids = list(ds.train.paths)

        def load(i: int) -> np.ndarray:
            return ds.train.load_rgb(i, 96)
    else:
        ids = [f"#{i}" for i in range(len(ds.train))]

        def load(i: int) -> np.ndarray:
            return ds.train.images[i]

    return write_selection_outputs(
        ctx.run_dir,
        ids=ids,
        pseudo_labels=clus["pseudo_labels"],
        hardness=hardness_of(dyn, score),
        score_name=score,
        score=dyn[score],
        kept=kept_at,
        beta=beta_at,
        num_clusters=num_clusters,
        load_image=load,
        skipped=skipped,
    )


def clustering_diagnostics(ds: Dataset, clus: Artifact) -> dict[str, Any]:
    """ACC (Hungarian), NMI, ARI of the pseudo-labels and of k-means against ground truth: logged, never used."""
    from elfs.cluster.metrics import cluster_metrics

    out: dict[str, Any] = {"pseudo_labels": cluster_metrics(clus["pseudo_labels"], ds.truth.train)}
    if "kmeans_labels" in clus.arrays:
        out["kmeans"] = cluster_metrics(clus["kmeans_labels"], ds.truth.train)
    if "best_head" in clus.meta:
        out["best_head"] = clus.meta["best_head"]
    return out


# ---------------------------------------------------------------------------------------------- the graph


def prepare_data(cfg: ElfsConfig) -> tuple[Dataset, int, float]:
    """Load the data and run every check that needs it, before any expensive stage (or any run output).

    Returns the dataset, the number of clusters to use, and the seconds it took."""
    from elfs.preflight import check_data

    t0 = time.perf_counter()
    ds = load_data(cfg.dataset)
    num_clusters = check_data(cfg, ds)
    return ds, num_clusters, time.perf_counter() - t0


def run_pipeline(ctx: Context, ds: Dataset, num_clusters: int) -> dict[str, Any]:
    """Run every stage on the loaded, checked data; return the results dict that report.py writes and prints."""
    from elfs.progress import progress_bar
    from elfs.select import METHODS_USING_BETA

    cfg = ctx.cfg
    t_start = time.perf_counter() - ctx.timings.get("data", 0.0)

    free = ds.unlabelled()  # the label-free stages get this view: it has no targets at all
    emb = stage_embed(ctx, cfg.backbone, free)
    skipped = [tuple(x) for x in ds.notes.get("skipped", [])] + [tuple(x) for x in emb.meta.get("failed", [])]
    if free.streamed:  # from here on, only the images that could be decoded
        from elfs.preflight import check_data

        ds = decodable_only(ds, emb)
        free = ds.unlabelled()
        num_clusters = check_data(cfg, ds)
    nn = stage_knn(ctx, cfg.knn, emb)
    clus = stage_cluster(ctx, cfg.cluster, emb, nn, num_clusters)
    diag = clustering_diagnostics(ds, clus) if ds.labelled else {}
    ctx.loggers.log_metrics(
        {f"diagnostics/{k}/{m}": v for k, d in diag.items() if isinstance(d, Mapping) for m, v in d.items()}
    )
    dyn = stage_dynamics(ctx, cfg.dynamics, free, emb, clus)

    s, e = cfg.selection, cfg.evaluate
    n = len(ds.train)
    kept_at: dict[float, np.ndarray] = {}
    beta_at: dict[float, float | None] = {}
    fixed_beta = s.fixed_beta
    methods = [s.method] + [b for b in s.baselines if b != s.method]
    rows = []
    coresets: dict[str, np.ndarray] = {}
    for budget in s.budgets:
        row: dict[str, Any] = {"budget": budget, "pruning_rate": round(1.0 - budget, 6), "methods": {}}
        if s.method in METHODS_USING_BETA:
            if fixed_beta is None:
                search = stage_beta_search(ctx, s, e, free, emb, clus, dyn, budget)
                beta = float(search["best_beta"])
                row.update(
                    beta=beta,
                    beta_source="search",
                    beta_at_edge=bool(search.meta["at_edge"]),
                    beta_curve={"betas": search["betas"].tolist(), "val_acc": search["val_acc"].tolist()},
                )
            else:
                beta = fixed_beta
                row.update(beta=beta, beta_source="fixed")
        else:
            beta = 0.0
            row.update(beta=None, beta_source="n/a")
        kept_at[budget] = select_coreset(ctx, s, s.method, dyn, n, budget, beta, cfg.seed)
        beta_at[budget] = row["beta"]
        row["n_kept"] = int(len(kept_at[budget]))
        if not ds.labelled:  # nothing to evaluate against: the kept set is the answer
            coresets[f"{s.method}_budget{budget:g}"] = kept_at[budget]
            rows.append(row)
            continue
        for method in methods:
            accs, bests = [], []
            bar = progress_bar(
                len(e.seeds),
                f"evaluate {method} @ {budget:g}",
                unit="run",
                enabled=cfg.progress,
                every_s=cfg.progress_every_s,
                leave=False,
            )
            for seed in e.seeds:
                kept = select_coreset(
                    ctx, s, method, dyn, n, budget, beta if method in METHODS_USING_BETA else 0.0, int(seed)
                )
                coresets[f"{method}_budget{budget:g}_seed{seed}"] = kept
                art = stage_evaluate(ctx, e, ds, emb, kept, int(seed), label=f"{method} budget={budget} seed={seed}")
                accs.append(float(art["final_acc"]))
                best = float(art["best_acc"])
                bests.append(None if np.isnan(best) else best)  # None, not NaN: results.json stays strict JSON
                bar.update(1)
            bar.close()
            row["methods"][method] = {
                "final_acc": accs,
                "acc_mean": float(np.mean(accs)),
                "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                "best_acc_secondary": bests,
                "n_kept": int(len(kept)),
            }
        rows.append(row)

    np.savez(ctx.run_dir / "coresets.npz", **coresets)
    np.savez(ctx.run_dir / "scores.npz", pseudo_labels=clus["pseudo_labels"], **dyn.arrays)
    selection_files = write_answer(ctx, ds, clus, dyn, kept_at, beta_at, num_clusters, skipped)
    return {
        "dataset": ds.name,
        "dataset_source": ds.notes.get("source"),
        "labelled": ds.labelled,
        "n_train": n,
        "n_skipped": len(skipped),
        "n_test": None if ds.test is None else len(ds.test),
        "num_classes": ds.num_classes,
        "num_clusters": int(num_clusters),
        "selection_files": [str(p) for p in selection_files],
        "backbone": cfg.backbone.name,
        "pretrained": bool(cfg.backbone.pretrained),
        "selection": {"method": s.method, "score": s.score, "baselines": list(s.baselines)},
        "evaluate": {"model": e.model, "steps": e.steps, "seeds": list(e.seeds)},
        "clustering": diag,
        "results": rows,
        "stage_seconds": {k: round(v, 2) for k, v in ctx.timings.items()},
        "cache": ctx.cache.events,
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "artifacts": {"embed": emb.key, "knn": nn.key, "cluster": clus.key, "dynamics": dyn.key},
    }
