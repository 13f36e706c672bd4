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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elfs import distributed
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
            "strategy": self._strategy(),
            "num_nodes": t.num_nodes,
            "precision": t.precision,
            "deterministic": t.deterministic,
            "benchmark": t.benchmark,
            "log_every_n_steps": 10,
            # Lightning's bar redraws per step: only on a terminal, never into a log file
            "enable_progress_bar": bool(show and t.enable_progress_bar and is_terminal()),
            **self._batchnorm_sync(),
        }

    def kmeans_backend(self) -> str:
        """Where k-means runs (elfs/kmeans.py): torch on the GPU when the trainer may use one, else scikit-learn."""
        from elfs.kmeans import kmeans_backend

        return kmeans_backend(self.cfg.trainer.accelerator)

    def _strategy(self) -> str:
        """Lightning's "ddp" joins the ranks of an open session (elfs/distributed.py); on one process, no DDP at all
        (Lightning's would open a 1-process group and set launch variables that outlive the run)."""
        t = self.cfg.trainer.strategy
        if distributed.world_size() > 1:
            return "ddp" if t == "auto" else t
        return "auto" if t.startswith("ddp") else t

    def _batchnorm_sync(self) -> dict[str, Any]:
        """Under DDP with trainer.sync_batchnorm: torch's SyncBatchNorm on GPUs, GlobalBatchNorm elsewhere (torch's
        refuses CPU tensors); either way the batch statistics are the global batch's."""
        if distributed.world_size() == 1 or not self.cfg.trainer.sync_batchnorm:
            return {}
        if distributed.device_type() == "cuda":
            return {"sync_batchnorm": True}
        from elfs.models.global_batchnorm import GlobalBatchNormSync

        return {"plugins": [GlobalBatchNormSync()]}

    def timed(self, stage: str, art: Artifact) -> Artifact:
        self.timings[stage] = self.timings.get(stage, 0.0) + (0.0 if art.cached else art.seconds)
        return art


# ------------------------------------------------------------------------------------------------ data


def load_data(d: DatasetConfig) -> Dataset:
    """Load the configured dataset (or its synthetic stand-in), apply max_train and the augmentation overrides."""
    if d.synthetic is not None:
        from elfs.data.synthetic import load_synthetic_like

        ds = load_synthetic_like(d.name, d.synthetic, root=d.root, split_seed=d.split_seed)
    else:
        ds = load_dataset(
            d.name,
            path=d.path,
            root=d.root,
            download=d.download,
            test_fraction=d.test_fraction,
            split_seed=d.split_seed,
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
    indices of the decodable files, and lists the others under meta["failed"]. Under DDP each rank embeds a
    contiguous 1/W of every split and rank 0 gathers the parts in order."""
    from elfs.embed import resize_placement, resolve_device

    # where the images are resized changes the pixels by up to 2 grey levels (elfs/embed.py): part of the key
    config = {"name": b.name, "image_size": b.image_size, "pretrained": b.pretrained}
    config["resize"] = resize_placement(resolve_device(b.device))
    inputs = {"train": ds.train.fingerprint()}
    if ds.test is not None:
        inputs["test"] = ds.test.fingerprint()

    def compute():
        arrays: dict[str, np.ndarray] = {}
        failed: list[list[str]] = []
        for split, images in (("train", ds.train), ("test", ds.test)):
            if images is None:
                continue
            emb, valid, bad = _embed_split(ctx, b, images)
            arrays[split] = emb
            if is_streamed(images):  # which files decoded; the others are reported, by path
                arrays["valid" if split == "train" else "test_valid"] = valid
                tag = "" if split == "train" else "(test) "
                failed += [[f"{tag}{images.paths[i]}", why] for i, why in bad]
        extra = {"failed": failed} if is_streamed(ds.train) or failed else {}
        return arrays, {**extra, "n_train": len(arrays["train"]), "dim": arrays["train"].shape[1]}

    art = ctx.cache.run("embed", config, inputs, compute, every_rank=distributed.world_size() > 1)
    return ctx.timed("embed", art)


def _embed_split(ctx: Context, b: BackboneConfig, images: Any) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(features of the decodable images, their indices, (index, reason) of the others) for one split; under DDP
    this rank embeds its contiguous share and rank 0 receives every rank's (the others get their own part only)."""
    from elfs.data import ImageSet
    from elfs.embed import embed_folder, embed_images

    kw = dict(
        progress_every_s=ctx.cfg.progress_every_s,
        image_size=b.image_size,
        batch_size=b.batch_size,
        device=b.device,
        pretrained=b.pretrained,
        progress=ctx.cfg.progress,
    )
    share = np.array_split(np.arange(len(images)), distributed.world_size())[distributed.rank()]
    if is_streamed(images):
        part = images if len(share) == len(images) else images.subset(share)
        emb, valid, bad = embed_folder(part, b.name, num_workers=ctx.cfg.dataset.num_workers, **kw)
    else:
        part = images if len(share) == len(images) else ImageSet(images.images[share], images.name)
        emb, valid, bad = embed_images(part.images, b.name, **kw), np.arange(len(share)), []
    mine = (emb, share[valid], [(int(share[i]), why) for i, why in bad])
    parts = distributed.gather_to_zero(mine)  # [mine] outside DDP; rank order = index order (contiguous shares)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]).astype(np.int64),
        sorted(x for p in parts for x in p[2]),
    )


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
    from elfs.knn import knn, resolve_backend

    config = {"k": k.k, "backend": resolve_backend(k.backend)}
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
    kmeans_backend = ctx.kmeans_backend()
    if c.kmeans_baseline or c.method == "kmeans":  # the implementation decides the result: it is part of the key
        config["kmeans_backend"] = kmeans_backend
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
        # under DDP the baseline is rank 0's alone (every rank receives rank 0's arrays); TEMI trains on every rank
        if (c.kmeans_baseline and distributed.is_zero()) or c.method == "kmeans":
            km = kmeans_labels(x, num_clusters, seed=ctx.cfg.seed, backend=kmeans_backend)
            arrays["kmeans_labels"] = km
            if c.method == "kmeans":
                arrays["pseudo_labels"] = km
        return arrays, extra

    inputs = {"embed": emb.key, "knn": nn.key}
    return ctx.timed("cluster", ctx.cache.run("cluster", config, inputs, compute, every_rank=c.method == "temi"))


@dataclass(frozen=True)
class Labels:
    """The labels a proxy or a beta-search candidate trains on, and what identifies them in a cache key.

    ``source`` is "pseudo" (TEMI / k-means clusters: label-free) or "ground_truth" (only with the explicit opt-in
    selection.labels=ground_truth, the supervised reference)."""

    values: np.ndarray
    num_classes: int
    source: str
    key: dict[str, Any]

    @classmethod
    def pseudo(cls, clus: Artifact) -> Labels:
        return cls(clus["pseudo_labels"], int(clus.meta["num_clusters"]), "pseudo", {"cluster": clus.key})

    @classmethod
    def ground_truth(cls, ds: Dataset) -> Labels:
        return cls(ds.truth.train, int(ds.num_classes), "ground_truth", {"ground_truth": array_hash(ds.truth.train)})


def uses_embeddings(model: str) -> bool:
    """Whether a classifier of this kind trains on the embeddings (an MLP) rather than on the images."""
    from elfs.models import MODEL_INPUTS

    return MODEL_INPUTS[model] == "embeddings"


def _model_inputs(model: str, ds: Dataset | UnlabelledData, emb: Artifact | None, split: str) -> Any:
    """What `model` trains on for `split`: the embeddings, the in-memory uint8 images, or, for a streamed source
    (a folder), the source itself, which train_classifier decodes batch by batch at the config's image_size."""
    if uses_embeddings(model):
        return emb[split]
    images = ds.train if split == "train" else ds.test
    if is_streamed(images):  # never read whole
        return images
    return images.images


def _embed_input(model: str, emb: Artifact | None) -> dict[str, str]:
    """The embedding's key as a cache input, only for a model that trains on embeddings: a classifier on images
    does not depend on the encoder, so (e.g.) random's evaluation is computed once for every encoder."""
    return {"embed": emb.key} if uses_embeddings(model) else {}


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


def stage_dynamics(
    ctx: Context, d: DynamicsConfig, ds: UnlabelledData, emb: Artifact | None, labels: Labels
) -> Artifact:
    """Train the proxy on ``labels`` (pseudo-labels, or ground truth for the supervised reference) and record AUM,
    forgetting, EL2N per example. The dataset view ``ds`` carries no targets; the labels arrive only here."""
    from elfs.dynamics import record_dynamics

    x = _model_inputs(d.model, ds, emb, "train")
    config = {**_train_key(d, ds, ctx), "seed": ctx.cfg.seed}
    inputs = {**labels.key, "images": ds.train.fingerprint(), **_embed_input(d.model, emb)}
    # epoch checkpoints of this very computation: a run killed mid-stage resumes here, with the same result
    key = ctx.cache.key("dynamics", config, inputs)
    work = ctx.cache.entry("dynamics", key).with_name(f".work-{key}")

    def compute():
        resumed = (work / "last.ckpt").is_file()
        if resumed:
            log.info("dynamics: resuming from the epoch checkpoint in %s", work)
        scores = record_dynamics(
            x,
            labels.values,
            d,
            num_classes=labels.num_classes,
            seed=ctx.cfg.seed,
            trainer_kwargs=ctx.trainer_kwargs(progress=True, stage="dynamics"),
            logger=ctx.loggers.for_stage("dynamics" if labels.source == "pseudo" else "dynamics_gt"),
            num_workers=ctx.cfg.trainer.num_workers,
            checkpoint_dir=str(work),
            **_image_kwargs(ds),
        )
        return {k: np.asarray(v) for k, v in scores.items()}, {"resumed": resumed, "labels": labels.source}

    label = None if labels.source == "pseudo" else "labels=gt"
    art = ctx.cache.run("dynamics", config, inputs, compute, label=label, every_rank=True)
    if distributed.is_zero():  # the artifact is complete (every rank has it): its checkpoints are no longer needed
        shutil.rmtree(work, ignore_errors=True)
    return ctx.timed("dynamics", art)


def stage_prototypes(ctx: Context, emb: Artifact, num_clusters: int) -> Artifact:
    """Prototypicality (method.md §8.2): k-means on the raw embeddings, each image's distance to its centroid."""
    from elfs.select.prototypicality import prototypicality_distance

    backend = ctx.kmeans_backend()
    config = {"num_clusters": num_clusters, "seed": ctx.cfg.seed, "kmeans_backend": backend}

    def compute():
        x = emb["train"]
        dist, assign = prototypicality_distance(x, num_clusters, ctx.cfg.seed, return_labels=True, backend=backend)
        return {"distance": dist, "labels": assign}, {"num_clusters": num_clusters}

    return ctx.timed("prototypes", ctx.cache.run("prototypes", config, {"embed": emb.key}, compute))


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
    emb: Artifact | None,
    labels: Labels,
    dyn: Artifact,
    budget: float,
) -> Artifact:
    """Choose beta on a 90/10 split of the train set labelled with ``labels`` (method.md §6.4): pseudo-labels for
    ELFS, which touches no ground truth; ground truth only for the supervised reference.

    Each candidate trains the evaluation network (``e``) on those labels for ``s.search_steps`` steps."""
    from elfs.select.beta_search import search_beta

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
        "train": _train_key(e, ds, ctx, drop=("steps", "test_every", "seeds", "concurrent")),
    }
    inputs = {"dynamics": dyn.key, **labels.key, **_embed_input(e.model, emb), "images": ds.train.fingerprint()}
    hardness = hardness_of(dyn, s.score)

    k = concurrent_trainings(e)
    data = EvaluationData(
        x_train=x,
        y_train=labels.values,
        x_test=None,
        y_test=None,
        num_classes=labels.num_classes,
        trainer_kwargs=ctx.trainer_kwargs(progress=False),
        num_workers=int(ctx.cfg.trainer.num_workers),
        image_kwargs=_image_kwargs(ds),
    )

    def train_and_validate(kept: np.ndarray, val: np.ndarray) -> float:
        return validate_candidate(data, e, steps, ctx.cfg.seed, kept, val)

    def train_and_validate_many(jobs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """evaluate.concurrent > 1: the candidates at once, each in its own worker (results as one by one)."""
        return in_workers(validate_candidate, [(e, steps, ctx.cfg.seed, kept, val) for kept, val in jobs], data, k)

    def compute():
        res = search_beta(
            hardness,
            budget,
            [float(b) for b in s.beta_grid],
            train_and_validate=train_and_validate,
            train_and_validate_many=train_and_validate_many if k > 1 else None,
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

    art = ctx.cache.run("beta_search", config, inputs, compute, label=f"budget={budget}", every_rank=True)
    return ctx.timed("beta_search", art)


class Signals:
    """The inputs the selectors read, each computed (through the cache) the first time a method asks for it, so a
    run only pays for what its methods need: random needs nothing, prototypicality the embeddings, D2 the kNN graph
    too, ELFS and CCS the clustering and the proxy's dynamics, the supervised reference a proxy on ground truth."""

    def __init__(self, ctx: Context, ds: Dataset, num_clusters: int, emb: Artifact | None = None) -> None:
        self.ctx, self.ds, self.num_clusters = ctx, ds, num_clusters
        self.free = ds.unlabelled()  # the label-free stages get this view: it has no targets at all
        self._emb, self._nn, self._clus, self._proto = emb, None, None, None
        self._labels: Labels | None = None
        self._dyn: dict[str, Artifact] = {}
        self._search: dict[tuple[str, float], Artifact] = {}

    @property
    def emb(self) -> Artifact:
        if self._emb is None:
            self._emb = stage_embed(self.ctx, self.ctx.cfg.backbone, self.free)
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

    def computed(self) -> dict[str, Artifact]:
        """The artifacts this run has computed (or read from the cache) so far, by stage name."""
        out = {"embed": self._emb, "knn": self._nn, "cluster": self._clus, "prototypes": self._proto}
        out.update({"dynamics" if k == "pseudo" else "dynamics_gt": v for k, v in self._dyn.items()})
        return {k: v for k, v in out.items() if v is not None}

    def labels(self) -> Labels:
        """Whose labels the score methods' proxy and beta search use: pseudo-labels unless the opt-in says so
        (built once: the ground-truth key hashes every training label)."""
        if self._labels is None:
            gt = self.ctx.cfg.selection.uses_ground_truth
            self._labels = Labels.ground_truth(self.ds) if gt else Labels.pseudo(self.clus)
        return self._labels

    def dyn(self) -> Artifact:
        labels = self.labels()
        if labels.source not in self._dyn:
            d = self.ctx.cfg.dynamics
            self._dyn[labels.source] = stage_dynamics(self.ctx, d, self.free, self.emb_if(d.model), labels)
        return self._dyn[labels.source]

    def beta_search(self, budget: float) -> Artifact:
        s, e = self.ctx.cfg.selection, self.ctx.cfg.evaluate
        labels = self.labels()
        if (labels.source, budget) not in self._search:
            self._search[(labels.source, budget)] = stage_beta_search(
                self.ctx, s, e, self.free, self.emb_if(e.model), labels, self.dyn(), budget
            )
        return self._search[(labels.source, budget)]

    def hardness(self, method: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """(score name, raw score, hardness: higher = harder) that ``method`` ranks by, or None (random, full)."""
        from elfs.select import METHOD_INPUTS

        need = METHOD_INPUTS[method]
        if need == "none":
            return None
        if need in ("prototypes", "graph"):
            dist = self.proto["distance"]
            return "prototype_distance", dist, dist
        score = self.ctx.cfg.selection.score
        return score, self.dyn()[score], hardness_of(self.dyn(), score)


def select_coreset(
    ctx: Context, s: SelectionConfig, method: str, sig: Signals, n: int, budget: float, beta: float, seed: int
) -> np.ndarray:
    """Kept indices (sorted int64) for one method; cheap, so not cached, but saved in the run folder."""
    from elfs.select import select
    from elfs.select.d2 import d2_select

    scored = sig.hardness(method)  # computes the stages the method needs (cached) before the clock starts
    graph = sig.nn if method == "d2" else None
    t0 = time.perf_counter()
    if method == "full":
        kept = np.arange(n, dtype=np.int64)
    elif method == "d2":
        kept = d2_select(
            scored[2],
            graph["idx"],
            graph["sims"],
            budget,
            s.d2_beta,
            strata=s.d2_strata,
            gamma=s.d2_gamma,
            k=s.d2_k,
            seed=seed,
        )
    elif method == "prototypicality":  # keep the farthest from their centroid (the hardest), as the reference does
        kept = select("hard", scored[2], n=n, budget=budget, seed=seed)
    else:
        kept = select(
            method, None if scored is None else scored[2], n=n, budget=budget, beta=beta, seed=seed, strata=s.strata
        )
    ctx.timings["select"] = ctx.timings.get("select", 0.0) + time.perf_counter() - t0
    return kept


# ------------------------------------------------------------------------------------ the labelled stage


def _evaluate_key(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, kept: np.ndarray, seed: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config, inputs) of one evaluation's cache entry: one entry per seed; how many run at once is no part of it."""
    config = {**_train_key(e, ds, ctx, drop=("seeds", "concurrent")), "seed": seed}
    inputs = {
        "kept": array_hash(kept),
        "images": ds.train.fingerprint(),
        "test": ds.test.fingerprint(),
        "labels": array_hash(ds.truth.train),
        "test_labels": array_hash(ds.truth.test),
        **_embed_input(e.model, emb),  # a model on images: the same for every encoder (random is computed once)
    }
    return config, inputs


@dataclass
class EvaluationData:
    """What an evaluation training reads besides its coreset and seed (picklable: worker processes get it once)."""

    x_train: Any
    y_train: np.ndarray
    x_test: Any
    y_test: np.ndarray
    num_classes: int
    trainer_kwargs: dict[str, Any]
    num_workers: int
    image_kwargs: dict[str, Any]

    @classmethod
    def of(cls, ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None) -> EvaluationData:
        return cls(
            _model_inputs(e.model, ds, emb, "train"),
            ds.truth.train,
            _model_inputs(e.model, ds, emb, "test"),
            ds.truth.test,
            int(ds.num_classes),
            ctx.trainer_kwargs(progress=False),
            int(ctx.cfg.trainer.num_workers),
            _image_kwargs(ds),
        )


def _fit(data: EvaluationData, e: EvaluateConfig, kept: np.ndarray, seed: int, steps: int, **test: Any) -> Any:
    """Train ``e.model`` from scratch on ``kept`` with ``data``'s labels for ``steps`` (TrainResult)."""
    from elfs.dynamics.classifier import train_classifier

    return train_classifier(
        data.x_train,
        data.y_train,
        kept,
        e,
        num_classes=data.num_classes,
        steps=steps,
        seed=seed,
        trainer_kwargs=dict(data.trainer_kwargs),
        logger=False,
        num_workers=data.num_workers,
        **test,
        **data.image_kwargs,
    )


def train_and_test(data: EvaluationData, e: EvaluateConfig, kept: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Train ``e.model`` from scratch on ``kept`` with the GROUND-TRUTH labels for ``e.steps``; test accuracies."""
    test = dict(test_inputs=data.x_test, test_labels=data.y_test, test_every=e.test_every)
    res = _fit(data, e, kept, seed, e.steps, **test)
    best = np.nan if res.best_test_acc is None else res.best_test_acc
    return {"final_acc": np.asarray(res.final_test_acc), "best_acc": np.asarray(best)}


def validate_candidate(
    data: EvaluationData, e: EvaluateConfig, steps: int, seed: int, kept: np.ndarray, val: np.ndarray
) -> float:
    """One beta-search candidate: train ``e.model`` on ``kept`` with ``data``'s (pseudo-)labels for ``steps``;
    its accuracy on the held-out ``val`` indices against the same labels."""
    from elfs.dynamics.classifier import evaluate_accuracy

    res = _fit(data, e, kept, seed, steps)
    acc = evaluate_accuracy(res.module, data.x_train, data.y_train, indices=val, num_workers=data.num_workers)
    return float(acc)


def stage_evaluate(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, kept: np.ndarray, seed: int, label: str
) -> Artifact:
    """Train from scratch on the kept indices with their GROUND-TRUTH labels for a fixed number of steps; test."""
    config, inputs = _evaluate_key(ctx, e, ds, emb, kept, seed)

    def compute():
        return train_and_test(EvaluationData.of(ctx, e, ds, emb), e, kept, seed), {"n_kept": len(kept)}

    distributed.check_same(inputs["kept"], f"the coreset of {label}")  # one subset, or DDP averages two trainings
    return ctx.timed("evaluate", ctx.cache.run("evaluate", config, inputs, compute, label=label, every_rank=True))


_WORKER_DATA: EvaluationData | None = None  # a concurrent-training worker's data, sent once per worker


def _worker_init(data: EvaluationData, threads: int) -> None:
    import torch

    global _WORKER_DATA
    torch.set_num_threads(threads)
    _WORKER_DATA = data


def _worker_call(job: tuple[Callable[..., Any], tuple]) -> Any:
    fn, args = job
    return fn(_WORKER_DATA, *args)


def in_workers(fn: Callable[..., Any], jobs: list[tuple], data: EvaluationData, k: int) -> list[Any]:
    """``[fn(data, *args) for args in jobs]``, k at a time, each in its own worker process on the training device
    (spawned: a CUDA context cannot be forked). ``data`` reaches each worker once; the host's CPU threads are
    shared out among the workers rather than oversubscribed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    workers = max(1, min(int(k), len(jobs)))
    threads = max(1, torch.get_num_threads() // workers)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_init, initargs=(data, threads)) as pool:
        return list(pool.map(_worker_call, [(fn, tuple(args)) for args in jobs]))


def concurrent_trainings(e: EvaluateConfig) -> int:
    """How many independent trainings run at once: ``evaluate.concurrent``, except under DDP (its ranks train one
    model together)."""
    return 1 if distributed.world_size() > 1 else int(e.concurrent)


def prefetch_evaluations(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, jobs: list[tuple[np.ndarray, int, str]]
) -> None:
    """With ``evaluate.concurrent`` = K > 1, train the evaluations in ``jobs`` (kept, seed, label) that the cache
    lacks K at a time (:func:`in_workers`: one small training leaves a GPU idle) and store them in the cache, where
    stage_evaluate then finds them. Each training is seeded on its own and deterministic, so the results are those
    of running them one by one."""
    k = concurrent_trainings(e)
    if k <= 1:  # one by one: stage_evaluate trains each (and hashes its key) itself
        return
    todo: dict[str, tuple[dict, dict, np.ndarray, int, str]] = {}
    for kept, seed, label in jobs:
        config, inputs = _evaluate_key(ctx, e, ds, emb, kept, seed)
        key = ctx.cache.key("evaluate", config, inputs)
        if key not in todo and not ctx.cache.entry("evaluate", key).exists():
            todo[key] = (config, inputs, kept, seed, label)
    if len(todo) < 2:
        return
    log.info("evaluate: %d trainings, %d at a time in worker processes", len(todo), min(k, len(todo)))
    t0 = time.perf_counter()
    data = EvaluationData.of(ctx, e, ds, emb)
    results = in_workers(train_and_test, [(e, kept, seed) for _, _, kept, seed, _ in todo.values()], data, k)
    for (config, inputs, kept, _, label), arrays in zip(todo.values(), results, strict=True):
        extra = {"n_kept": len(kept), "concurrent": min(k, len(todo))}
        ctx.cache.run("evaluate", config, inputs, lambda a=arrays, x=extra: (a, x), label=label)
    ctx.timings["evaluate"] = ctx.timings.get("evaluate", 0.0) + time.perf_counter() - t0


def write_answer(
    ctx: Context,
    ds: Dataset,
    sig: Signals,
    kept_at: dict[float, np.ndarray],
    beta_at: dict[float, float | None],
    skipped: list,
) -> list[Path]:
    """What a practitioner acts on: selection.csv (one row per image), the list to annotate per budget, a contact
    sheet, the score histogram with the cuts, per-cluster coverage, and the skipped files (elfs/selection_report.py).
    Written for every method that ranks by a score; random and full data rank nothing, so they write none."""
    from elfs.select import METHOD_INPUTS
    from elfs.selection_report import write_selection_outputs

    method = ctx.cfg.selection.method
    scored = sig.hardness(method)
    if scored is None:
        log.info("selection.method=%s ranks nothing: no selection.csv / annotate lists are written", method)
        return []
    score_name, score, hardness = scored
    if METHOD_INPUTS[method] in ("prototypes", "graph"):
        groups, num_groups = sig.proto["labels"], int(sig.proto.meta["num_clusters"])
    elif ctx.cfg.selection.uses_ground_truth:
        groups, num_groups = ds.truth.train, int(ds.num_classes)
    else:
        groups, num_groups = sig.clus["pseudo_labels"], int(sig.clus.meta["num_clusters"])
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
        pseudo_labels=groups,
        hardness=hardness,
        score_name=score_name,
        score=score,
        kept=kept_at,
        beta=beta_at,
        num_clusters=num_groups,
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


def _flat(prefix: str, d: Any) -> dict[str, Any]:
    """{'group.key': value} for a (nested) config dict; lists become tuples-as-lists (JSON-safe)."""
    if dataclasses.is_dataclass(d):
        d = dataclasses.asdict(d)
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: settings that never change a result (where files go, how it is shown, how many workers decode)
_NOT_RESULT = ("num_workers", "device", "progress", "chunk_size", "root", "download", "path", "concurrent")


def arm_of(cfg: ElfsConfig, method: str) -> dict[str, Any]:
    """What identifies one selection arm for the sweep summary: the method, whose labels scored it, the score,
    the clustering and the encoder it depends on (None where it depends on none), and every setting upstream of
    its coreset (``settings``), so that two jobs of the same arm group together and two different arms never do."""
    from elfs.select import METHOD_INPUTS, METHODS_USING_BETA

    s, need = cfg.selection, METHOD_INPUTS[method]
    scored = need == "score"
    gt = scored and s.uses_ground_truth
    groups: list[str] = []
    if need in ("prototypes", "graph"):
        groups = ["backbone"] + (["knn"] if need == "graph" else [])
    elif scored:
        groups = ["dynamics"] + ([] if gt else ["backbone", "knn", "cluster"])
        if gt and uses_embeddings(cfg.dynamics.model):
            groups.append("backbone")
    settings: dict[str, Any] = {}
    for g in groups:
        settings.update(_flat(f"{g}.", getattr(cfg, g)))
    if scored or need in ("prototypes", "graph"):
        settings["seed"] = cfg.seed
    sel_keys = {
        "score": ("score", "labels", "strata", "beta", "beta_grid", "val_fraction"),
        "prototypes": (),
        "graph": ("d2_k", "d2_gamma", "d2_beta", "d2_strata"),
        "none": (),
    }[need]
    if method in METHODS_USING_BETA and s.fixed_beta is None:
        sel_keys = sel_keys + ("search_steps",)
    settings.update({f"selection.{k}": getattr(s, k) for k in sel_keys})
    settings = {k: v for k, v in settings.items() if k.rsplit(".", 1)[-1] not in _NOT_RESULT}
    uses_encoder = need in ("prototypes", "graph") or (scored and not gt) or "backbone.name" in settings
    return {
        "arm": f"supervised_{method}" if gt else method,
        "method": method,
        "score": s.score if scored else ("prototype_distance" if need != "none" else None),
        "labels": ("ground_truth" if gt else "pseudo") if scored else None,
        "uses_ground_truth": bool(gt),
        "cluster": cfg.cluster.method if scored and not gt else None,
        "backbone": cfg.backbone.name if uses_encoder else None,
        "settings": settings,
    }


def run_pipeline(ctx: Context, ds: Dataset, num_clusters: int) -> dict[str, Any]:
    """Run the stages the configured methods need on the loaded, checked data; return the results dict that
    report.py writes and prints."""
    from elfs.progress import progress_bar
    from elfs.select import METHOD_INPUTS, METHODS_USING_BETA

    cfg = ctx.cfg
    t_start = time.perf_counter() - ctx.timings.get("data", 0.0)
    s, e = cfg.selection, cfg.evaluate
    skipped = [tuple(x) for x in ds.notes.get("skipped", [])]
    if is_streamed(ds.train):  # a folder: embed first, then only the images that could be decoded
        from elfs.preflight import check_data

        emb = stage_embed(ctx, cfg.backbone, ds.unlabelled())
        skipped += [tuple(x) for x in emb.meta.get("failed", [])]
        ds = decodable_only(ds, emb)
        num_clusters = check_data(cfg, ds)
        sig = Signals(ctx, ds, num_clusters, emb)
    else:
        sig = Signals(ctx, ds, num_clusters)

    methods = [m for m in dict.fromkeys([s.method, *s.baselines]) if m != "full"]
    evaluate_full = ds.labelled and (s.method == "full" or "full" in s.baselines)
    if any(METHOD_INPUTS[m] == "score" for m in methods) and not s.uses_ground_truth:
        sig.clus  # noqa: B018 - the clustering first, so its diagnostics are logged before the long stages
    diag = clustering_diagnostics(ds, sig.clus) if ds.labelled and "cluster" in sig.computed() else {}
    ctx.loggers.log_metrics(
        {f"diagnostics/{k}/{m}": v for k, d in diag.items() if isinstance(d, Mapping) for m, v in d.items()}
    )

    n = len(ds.train)
    kept_at: dict[float, np.ndarray] = {}
    beta_at: dict[float, float | None] = {}
    fixed_beta = s.fixed_beta
    rows = []
    coresets: dict[str, np.ndarray] = {}
    uses_beta = s.method in METHODS_USING_BETA

    pending: list[tuple[np.ndarray, int, str]] = []  # every evaluation training, for evaluate.concurrent

    def plan_arm(method: str, budget: float, beta: float | None) -> dict[str, Any]:
        """Select with ``method`` once per evaluation seed; the arm's coresets, trained after every arm is planned."""
        kept = {}
        for seed in e.seeds:
            kept[int(seed)] = select_coreset(ctx, s, method, sig, n, budget, beta or 0.0, int(seed))
            pending.append((kept[int(seed)], int(seed), f"{method} budget={budget} seed={seed}"))
        return {"method": method, "budget": budget, "beta": beta, "kept": kept}

    def evaluate_arm(plan: dict[str, Any]) -> dict[str, Any]:
        """Train on the planned coresets once per evaluation seed; the arm's results entry."""
        method, budget = plan["method"], plan["budget"]
        arm = arm_of(cfg, method)
        accs, bests, keys = [], [], []
        bar = progress_bar(
            len(e.seeds),
            f"evaluate {method} @ {budget:g}",
            unit="run",
            enabled=cfg.progress,
            every_s=cfg.progress_every_s,
            leave=False,
        )
        kept = np.empty(0, dtype=np.int64)
        for seed, kept in plan["kept"].items():
            coresets[f"{arm['arm']}_budget{budget:g}_seed{seed}"] = kept
            art = stage_evaluate(ctx, e, ds, sig.emb_if(e.model), kept, seed, f"{method} budget={budget} seed={seed}")
            accs.append(float(art["final_acc"]))
            best = float(art["best_acc"])
            bests.append(None if np.isnan(best) else best)  # None, not NaN: results.json stays strict JSON
            keys.append(art.key)
            bar.update(1)
        bar.close()
        found = [b for b in bests if b is not None]
        return {
            **arm,
            "beta": plan["beta"],
            "final_acc": accs,
            "acc_mean": float(np.mean(accs)),
            "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "best_acc": bests,
            "best_mean": float(np.mean(found)) if found else None,
            "best_std": (float(np.std(found, ddof=1)) if len(found) > 1 else 0.0) if found else None,
            "seeds": [int(x) for x in e.seeds],
            "eval_keys": keys,
            "n_kept": int(len(kept)),
        }

    budgets = [] if s.method == "full" else s.feasible_budgets()
    for budget in [b for b in s.budgets if b not in budgets and s.method != "full"]:
        log.warning("selection.beta=%s leaves no room for budget %s (beta + budget > 1): skipped", s.beta, budget)
    for budget in budgets:
        row: dict[str, Any] = {"budget": budget, "pruning_rate": round(1.0 - budget, 6), "methods": {}}
        if uses_beta:
            if fixed_beta is None:
                search = sig.beta_search(budget)
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
            beta = s.d2_beta if s.method == "d2" else None
            row.update(beta=beta, beta_source="fixed" if s.method == "d2" else "n/a")
        kept_at[budget] = select_coreset(ctx, s, s.method, sig, n, budget, beta or 0.0, cfg.seed)
        distributed.check_same(array_hash(kept_at[budget]), f"the {s.method} coreset at budget {budget}")
        beta_at[budget] = row["beta"]
        row["n_kept"] = int(len(kept_at[budget]))
        if not ds.labelled:  # nothing to evaluate against: the kept set is the answer
            coresets[f"{s.method}_budget{budget:g}"] = kept_at[budget]
            rows.append(row)
            continue
        # a score baseline with a hard cut (ccs beside double_end) uses the method's beta; beside a method without
        # one (random, d2, ...) it takes a fixed selection.beta, else none
        cut = beta if uses_beta else (fixed_beta or 0.0)
        for method in methods:
            arm_beta = s.d2_beta if method == "d2" else (cut if method in METHODS_USING_BETA else None)
            row["methods"][arm_of(cfg, method)["arm"]] = plan_arm(method, budget, arm_beta)
        rows.append(row)
    full = plan_arm("full", 1.0, None) if evaluate_full else None
    prefetch_evaluations(ctx, e, ds, sig.emb_if(e.model), pending)  # evaluate.concurrent > 1: several at a time
    for row in rows:
        row["methods"] = {name: evaluate_arm(plan) for name, plan in row["methods"].items()}
    full = evaluate_arm(full) if full is not None else None

    done = sig.computed()
    score_arrays = {}
    if "cluster" in done:
        score_arrays["pseudo_labels"] = done["cluster"]["pseudo_labels"]
    for stage, suffix in (("dynamics", ""), ("dynamics_gt", "_gt")):
        if stage in done:
            score_arrays.update({f"{k}{suffix}": v for k, v in done[stage].arrays.items()})
    if "prototypes" in done:
        score_arrays["prototype_distance"] = done["prototypes"]["distance"]
    selection_files = []
    if distributed.is_zero():  # the run folder is rank 0's
        np.savez(ctx.run_dir / "coresets.npz", **coresets)
        np.savez(ctx.run_dir / "scores.npz", **score_arrays)
        selection_files = write_answer(ctx, ds, sig, kept_at, beta_at, skipped) if kept_at else []
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
        "selection": {
            "method": s.method,
            "arm": arm_of(cfg, s.method)["arm"],
            "score": s.score,
            "labels": s.labels,
            "uses_ground_truth": s.uses_ground_truth,
            "baselines": list(s.baselines),
        },
        "evaluate": {"model": e.model, "steps": e.steps, "seeds": list(e.seeds), "test_every": e.test_every},
        "clustering": diag,
        "results": rows,
        "full_data": full,
        "stage_seconds": {k: round(v, 2) for k, v in ctx.timings.items()},
        "cache": ctx.cache.events,
        "total_seconds": round(time.perf_counter() - t_start, 2),
        "artifacts": {k: v.key for k, v in done.items()},
    }
