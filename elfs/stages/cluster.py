"""The clustering stage: TEMI pseudo-labels (or k-means), chosen by a label-free rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from elfs.cache import Artifact
from elfs.config import ClusterConfig
from elfs.infra import distributed
from elfs.stages.context import Context
from elfs.stages.keys import stage_key


def stage_cluster(ctx: Context, c: ClusterConfig, emb: Artifact, nn: Artifact, num_clusters: int) -> Artifact:
    """TEMI pseudo-labels (or k-means), chosen by a label-free rule; k-means kept beside it for comparison."""
    from elfs.cluster import fit_temi, kmeans_labels

    config = stage_key("cluster", {"cluster": c, "trainer": ctx.trainer}, num_clusters=num_clusters, seed=ctx.seed)
    kmeans_backend = ctx.kmeans_backend()
    if c.kmeans_baseline or c.method == "kmeans":  # the implementation decides the result: it is part of the key
        config["kmeans_backend"] = kmeans_backend
    x = emb["train"]

    def compute():
        arrays: dict[str, np.ndarray] = {}
        extra: dict[str, Any] = {"num_clusters": num_clusters}
        if c.method == "temi":
            runtime = ctx.runtime(progress=True, stage="cluster", logger=ctx.loggers.for_stage("cluster"))
            res = fit_temi(x, nn["idx"], num_clusters, c, seed=ctx.seed, runtime=runtime)
            arrays.update(
                pseudo_labels=res.pseudo_labels,
                head_assignments=res.head_assignments,
                head_losses=res.head_losses,
                loss_curve=np.asarray(res.loss_curve, dtype=np.float64),
            )
            extra["best_head"] = int(res.best_head)
        # under DDP the baseline is rank 0's alone (every rank receives rank 0's arrays); TEMI trains on every rank
        if (c.kmeans_baseline and distributed.is_zero()) or c.method == "kmeans":
            km = kmeans_labels(x, num_clusters, seed=ctx.seed, backend=kmeans_backend)
            arrays["kmeans_labels"] = km
            if c.method == "kmeans":
                arrays["pseudo_labels"] = km
        return arrays, extra

    inputs = {"embed": emb.key, "knn": nn.key}
    art = ctx.cache.run("cluster", config, inputs, compute, every_rank=c.method == "temi", module=__name__)
    return ctx.timed("cluster", art)
