"""The one declaration of the settings that cannot change a result: where a run goes, how fast, on what, how it
shows itself. Read by the cache keys (elfs/stages/keys.py leaves these out of every key) and by the results
table (elfs/tables/results.py leaves them out of what tells two sweep arms apart). Every other field changes some
result and is keyed, directly or as what it resolves to; tests/test_cache_keys.py walks every field to hold this."""

from __future__ import annotations

#: trainer settings that change where or how fast a training runs, or how it reports, but not what it computes
#: (a CPU, a GPU and a DDP run of the same settings share entries: batch sizes are global, BatchNorm is synced)
_TRAINER: dict[str, str] = {
    "accelerator": "the device changes float rounding, not the computation",
    "devices": "batch sizes are global and BatchNorm is synced: the process count changes rounding only",
    "num_nodes": "as devices: the global batch is split over every node alike",
    "strategy": "how the ranks are joined",
    "deterministic": "whether reruns are bit-identical, not what is computed",
    "benchmark": "which cuDNN kernels compute the same convolution",
    "enable_progress_bar": "display only: a bar on a terminal",
    "num_workers": "data-loader processes: the same batches in the same order",
    "ddp_timeout_min": "how long a rank waits for the others",
}

_WHERE = "where files are read or written; the data enters every key by its content's fingerprint"

#: 'group.field' (or a run's own 'field') -> why it cannot change any artifact or any result
NO_EFFECT: dict[str, str] = {
    **{f"trainer.{k}": why for k, why in _TRAINER.items()},
    "dataset.num_workers": "decoding processes: the same images in the same order",
    "dataset.root": _WHERE,
    "dataset.download": "whether a missing dataset is fetched; the data enters every key by its fingerprint",
    "backbone.batch_size": "inference batching: each image's features are computed on their own",
    "backbone.device": "where it runs; where images are resized, which changes pixels, is keyed as `resize`",
    "knn.chunk_size": "exact search in blocks of this many queries: the same neighbours",
    "evaluate.concurrent": "how many trainings run at once; each is seeded on its own",
    **{
        f"logger.{k}": "where and how the run is logged"
        for k in (
            "name",
            "project",
            "entity",
            "group",
            "job_type",
            "mode",
            "tags",
        )
    },  # fmt: skip
    **{f"paths.{k}": _WHERE for k in ("root_dir", "data_dir", "cache_dir", "output_dir")},
    "name": "the run's name: where its folder and W&B run are",
    "progress": "display only",
    "progress_every_s": "display only",
    "plan": "plan=true exits before any stage",
    "plan_rates": "the rates a plan prices trainings at: read by the plan, never by a stage",
    "optimized_metric": "which result a sweeper reads",
    "recompute": "computes a stage afresh under the same key",
}


def no_effect_in(group: str) -> dict[str, str]:
    """The fields of config ``group`` (or "" for the run's own fields) that cannot change a result, with why."""
    out: dict[str, str] = {}
    for dotted, why in NO_EFFECT.items():
        g, _, name = dotted.rpartition(".")
        if g == group:
            out[name] = why
    return out


def changes_a_result(dotted: str) -> bool:
    """Whether the setting 'group.field' (or a run's own 'field') can change a result."""
    return dotted not in NO_EFFECT
