"""The kNN stage: cosine nearest neighbours among the training embeddings, self excluded."""

from __future__ import annotations

from elfs.cache import Artifact
from elfs.config import KnnConfig
from elfs.stages.context import Context
from elfs.stages.keys import stage_key


def stage_knn(ctx: Context, k: KnnConfig, emb: Artifact) -> Artifact:
    """Cosine kNN among training embeddings, self excluded (k < N was checked when the data loaded)."""
    from elfs.method.knn import ivf_storage, knn, resolve_backend

    config = stage_key("knn", {"knn": k})
    x = emb["train"]
    backend = resolve_backend(k.backend, len(x), k.approx_above)
    config["knn"]["backend"] = backend  # "auto" keys as what it resolves to
    if backend == "faiss_ivf":  # the exact backends do not read these
        config["knn"].update(nlist=k.nlist, nprobe=k.nprobe, storage=ivf_storage(len(x)))  # sq8 above a size

    def compute():
        idx, sims = knn(x, k.k, backend=backend, chunk_size=k.chunk_size, nlist=k.nlist, nprobe=k.nprobe)
        return {"idx": idx, "sims": sims}, {}

    return ctx.timed("knn", ctx.cache.run("knn", config, {"embed": emb.key}, compute, module=__name__))
