"""Cluster stage: TEMI deep clustering of frozen embeddings into label-free pseudo-labels (method.md §4),
plus the k-means baseline it is compared against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from elfs.cluster.metrics import cluster_metrics, hungarian_accuracy
from elfs.cluster.pseudo_labels import PSEUDO_LABEL_RULES, aligned_mean_labels, head_assignments, pseudo_labels
from elfs.config import ClusterConfig
from elfs.infra.names import CLUSTER_METHODS
from elfs.infra.runtime import DEFAULT_RUNTIME, Runtime, build_trainer

__all__ = [
    "CLUSTER_METHODS",
    "TEMIResult",
    "fit_temi",
    "kmeans_labels",
    "head_assignments",
    "aligned_mean_labels",
    "pseudo_labels",
    "PSEUDO_LABEL_RULES",
    "cluster_metrics",
    "hungarian_accuracy",
]


@dataclass
class TEMIResult:
    """Output of :func:`fit_temi`: pseudo-labels [N], every head's teacher assignment [H, N], the per-head
    epoch-mean losses of the last epoch [H], the chosen head and the epoch-mean total loss per epoch."""

    pseudo_labels: np.ndarray
    head_assignments: np.ndarray
    head_losses: np.ndarray
    best_head: int
    loss_curve: list[float] = field(default_factory=list)


def fit_temi(
    embeddings: np.ndarray,
    knn_idx: np.ndarray,
    num_clusters: int,
    cfg: ClusterConfig,
    *,
    seed: int,
    runtime: Runtime = DEFAULT_RUNTIME,
) -> TEMIResult:
    """Train TEMI heads (settings: ``cfg``, read whole) on frozen ``embeddings`` [N, D] with neighbours
    ``knn_idx`` [N, k] for ``cfg.epochs`` (at most ``cfg.max_steps`` steps) and return label-free pseudo-labels
    chosen by ``cfg.rule``; deterministic given ``seed``.

    ``runtime.trainer_kwargs`` override the Trainer defaults (elfs.infra.runtime.TRAINER_DEFAULTS: accelerator "auto",
    1 device, no checkpointing/summary/progress bar; here ``deterministic="warn"``); ``runtime.logger`` gets the
    metrics (num_workers and checkpoint_dir are not used: the embeddings are in memory, one run is short).
    """
    from elfs.cluster.module import check_temi_inputs

    emb = np.asarray(embeddings)
    knn = np.asarray(knn_idx)
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"embeddings must be a float array, got dtype {emb.dtype}")
    if not np.issubdtype(knn.dtype, np.integer):
        raise ValueError(f"knn_idx must be an integer array, got dtype {knn.dtype}")
    if cfg.rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"cluster.rule must be one of {PSEUDO_LABEL_RULES}, got {cfg.rule!r}")
    check_temi_inputs(emb.shape, knn.shape, num_clusters, cfg)
    if not all(np.isfinite(emb[s : s + 16384]).all() for s in range(0, len(emb), 16384)):  # in blocks: no N x D mask
        raise ValueError("embeddings contain NaN or inf")

    import lightning as L

    from elfs.cluster.module import TEMIModule

    L.seed_everything(seed, workers=True, verbose=False)
    module = TEMIModule(emb, knn, num_clusters, cfg, seed=seed)
    trainer = build_trainer(
        runtime,
        # TEMI has always run with deterministic="warn" (the classifier: True, TRAINER_DEFAULTS): kept as a default
        # of its own, which runtime.trainer_kwargs (the pipeline's trainer.deterministic) still override
        defaults={"deterministic": "warn"},
        max_epochs=cfg.epochs,
        max_steps=-1 if cfg.max_steps is None else cfg.max_steps,  # a large set ends mid-epoch
        use_distributed_sampler=False,  # the index loader deals its (seed, epoch) order to the ranks itself
    )
    trainer.fit(module, train_dataloaders=module.index_loader(trainer.world_size))
    # Lightning's teardown left the module on the CPU: the assignment passes run the teacher heads on the training
    # device (the GPU) and stream the embeddings to it batch by batch; the stored embedding buffers stay on the host
    module.teacher.to(trainer.strategy.root_device)

    losses = module.head_losses.detach().cpu().numpy().astype(np.float64)
    # the stored embeddings (float16 from the cache, read through its map) are streamed in batches, each converted
    # to float32 by the module (`TEMIModule.embed`): never a whole float32 copy
    assign = head_assignments(module, emb)
    if cfg.rule == "aligned_mean":  # needs the heads' probabilities: a second, streamed pass over the embeddings
        labels = aligned_mean_labels(module, emb, assign, losses)
    else:
        labels = pseudo_labels(assign, losses, cfg.rule)
    return TEMIResult(
        pseudo_labels=labels,
        head_assignments=assign,
        head_losses=losses,
        best_head=int(module.best_head),
        loss_curve=list(module.loss_curve),
    )


def kmeans_labels(
    embeddings: np.ndarray, num_clusters: int, seed: int, *, l2_normalize: bool = True, backend: str = "sklearn"
) -> np.ndarray:
    """k-means baseline (n_init=10; scikit-learn, or torch on the GPU: elfs/method/kmeans.py) on L2-normalised (default)
    or raw embeddings -> int64 [N]."""
    from elfs.method.kmeans import kmeans

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not 2 <= num_clusters <= x.shape[0]:
        raise ValueError(f"num_clusters must be in [2, N={x.shape[0]}], got {num_clusters}")
    if l2_normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return kmeans(x, num_clusters, seed, n_init=10, backend=backend)[0]
