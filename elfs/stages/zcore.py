"""The ZCore stage (elfs/select/zcore.py): each image's ZCore score over the run's embeddings, on the GPU if any."""

from __future__ import annotations

from elfs.cache import Artifact
from elfs.config import SelectionConfig
from elfs.stages.context import Context
from elfs.stages.keys import stage_key


def stage_zcore(ctx: Context, s: SelectionConfig, emb: Artifact) -> Artifact:
    """ZCore's scores (higher = keep first) from the selection's zcore_* settings and the run's seed."""
    from elfs.method.kmeans import kmeans_backend
    from elfs.select.zcore import zcore_scores

    config = stage_key("zcore", {"selection": s}, seed=ctx.seed)
    device = "cuda" if kmeans_backend(ctx.trainer.accelerator) == "torch" else "cpu"

    def compute():
        scores = zcore_scores(
            emb["train"],
            samples=s.zcore_samples,
            dim=s.zcore_dim,
            neighbours=s.zcore_neighbours,
            exponent=s.zcore_exponent,
            rand_init=s.zcore_rand_init,
            seed=ctx.seed,
            device=device,
        )
        return {"score": scores}, {"device": device}

    art = ctx.cache.run("zcore", config, {"embed": emb.key}, compute, module=__name__)
    return ctx.timed("zcore", art)
