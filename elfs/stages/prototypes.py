"""The prototypicality stage (method.md §8.2): k-means on the raw embeddings, each image's distance to its centroid."""

from __future__ import annotations

from elfs.cache import Artifact
from elfs.stages.context import Context
from elfs.stages.keys import stage_key


def stage_prototypes(ctx: Context, emb: Artifact, num_clusters: int) -> Artifact:
    """Each image's distance to its k-means centroid (the prototypicality and D2 node score), and its cluster."""
    from elfs.select.prototypicality import prototypicality_distance

    backend = ctx.kmeans_backend()
    config = stage_key("prototypes", {}, num_clusters=num_clusters, seed=ctx.seed, kmeans_backend=backend)

    def compute():
        x = emb["train"]
        dist, assign = prototypicality_distance(x, num_clusters, ctx.seed, return_labels=True, backend=backend)
        return {"distance": dist, "labels": assign}, {"num_clusters": num_clusters}

    art = ctx.cache.run("prototypes", config, {"embed": emb.key}, compute, module=__name__)
    return ctx.timed("prototypes", art)
