"""Cluster stage: TEMI deep clustering of frozen embeddings into label-free pseudo-labels (method.md §4),
plus the k-means baseline it is compared against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from elfs.cluster.metrics import cluster_metrics, hungarian_accuracy
from elfs.cluster.pseudo_labels import PSEUDO_LABEL_RULES, head_assignments, pseudo_labels

__all__ = [
    "TEMIResult",
    "fit_temi",
    "kmeans_labels",
    "head_assignments",
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
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    num_heads: int,
    hidden_dim: int,
    bottleneck_dim: int,
    beta: float,
    student_temp: float,
    teacher_temp: float,
    teacher_momentum: float,
    probs_momentum: float,
    lr: float,
    min_lr: float,
    warmup_epochs: int,
    weight_decay: float,
    freeze_last_layer_epochs: int,
    knn_k: int,
    rule: str,
    head_impl: str,
    embed_norm: bool,
    trainer_kwargs: dict | None = None,
    logger=None,
    teacher_momentum_end: float | None = None,
) -> TEMIResult:
    """Train TEMI heads on frozen ``embeddings`` [N, D] with neighbours ``knn_idx`` [N, k] and return
    label-free pseudo-labels chosen by ``rule`` ("best_head" or "ensemble"); deterministic given ``seed``.

    ``trainer_kwargs`` override the Trainer defaults (accelerator "auto", 1 device, no checkpointing/summary,
    ``deterministic="warn"``). ``teacher_momentum_end`` (default: constant) gives a cosine EMA schedule.
    """
    from elfs.cluster.module import validate_temi_args

    emb = np.asarray(embeddings)
    knn = np.asarray(knn_idx)
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"embeddings must be a float array, got dtype {emb.dtype}")
    if not np.issubdtype(knn.dtype, np.integer):
        raise ValueError(f"knn_idx must be an integer array, got dtype {knn.dtype}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"rule must be one of {PSEUDO_LABEL_RULES}, got {rule!r}")
    validate_temi_args(
        embeddings_shape=emb.shape, knn_shape=knn.shape, num_clusters=num_clusters, num_heads=num_heads,
        hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, beta=beta, student_temp=student_temp,
        teacher_temp=teacher_temp, teacher_momentum=teacher_momentum, teacher_momentum_end=teacher_momentum_end,
        probs_momentum=probs_momentum, lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs,
        weight_decay=weight_decay, freeze_last_layer_epochs=freeze_last_layer_epochs, knn_k=knn_k,
        batch_size=batch_size, head_impl=head_impl,
    )
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or inf")

    import lightning as L

    from elfs.cluster.module import TEMIModule

    L.seed_everything(seed, workers=True, verbose=False)
    module = TEMIModule(
        emb, knn, num_clusters, num_heads=num_heads, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
        beta=beta, student_temp=student_temp, teacher_temp=teacher_temp, teacher_momentum=teacher_momentum,
        teacher_momentum_end=teacher_momentum_end, probs_momentum=probs_momentum, lr=lr, min_lr=min_lr,
        warmup_epochs=warmup_epochs, weight_decay=weight_decay, freeze_last_layer_epochs=freeze_last_layer_epochs,
        knn_k=knn_k, batch_size=batch_size, embed_norm=embed_norm, head_impl=head_impl, seed=seed,
    )
    kwargs = dict(
        accelerator="auto", devices=1, max_epochs=epochs, logger=logger if logger is not None else False,
        enable_checkpointing=False, enable_model_summary=False, deterministic="warn",
        enable_progress_bar=False,
    )
    kwargs.update(trainer_kwargs or {})
    trainer = L.Trainer(**kwargs)
    trainer.fit(module)

    losses = module.head_losses.detach().cpu().numpy().astype(np.float64)
    assign = head_assignments(module, emb.astype(np.float32, copy=False))
    labels = pseudo_labels(assign, losses, rule)
    return TEMIResult(
        pseudo_labels=labels,
        head_assignments=assign,
        head_losses=losses,
        best_head=int(module.best_head),
        loss_curve=list(module.loss_curve),
    )


def kmeans_labels(embeddings: np.ndarray, num_clusters: int, seed: int, *, l2_normalize: bool = True) -> np.ndarray:
    """k-means baseline (sklearn, n_init=10) on L2-normalised (default) or raw embeddings -> int64 [N]."""
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {x.shape}")
    if not 2 <= num_clusters <= x.shape[0]:
        raise ValueError(f"num_clusters must be in [2, N={x.shape[0]}], got {num_clusters}")
    if l2_normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed)
    return km.fit_predict(x).astype(np.int64)
