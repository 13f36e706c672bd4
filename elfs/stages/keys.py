"""One rule for cache keys: every field of each config group a stage receives enters its key, unless it is listed
here with the reason it cannot change the artifact. A new hyperparameter is therefore part of every key that could
depend on it, by default; tests/test_cache_keys.py walks every field of every group of every stage to hold this."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: trainer settings that change where or how fast a training runs, or how it reports, but not what it computes
#: (a CPU, a GPU and a DDP run of the same settings share entries: batch sizes are global, BatchNorm is synced)
TRAINER_NOT_IN_KEY: dict[str, str] = {
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

#: a classifier training's settings that decide neither its network nor its optimisation
_TRAINING_NOT_IN_KEY: dict[str, str] = {
    "concurrent": "how many trainings run at once; each is seeded on its own",
}

#: the run's own fields (ElfsConfig outside the groups) that no stage receives, so no key holds; ``seed`` alone is
#: keyed (the Context hands it to every stage)
RUN_NOT_IN_KEY: dict[str, str] = {
    "name": "the run's name: where its folder and W&B run are",
    "progress": "display only",
    "progress_every_s": "display only",
    "debug": "a mode that rewrites the groups before they are read; the groups are keyed",
    "plan": "plan=true exits before any stage",
    "plan_rates": "the rates a plan prices trainings at: read by the plan, never by a stage",
    "optimized_metric": "which result a sweeper reads",
    "recompute": "computes a stage afresh under the same key",
}

_ZCORE = ("zcore_samples", "zcore_dim", "zcore_neighbours", "zcore_exponent", "zcore_rand_init")
#: ZCore scores the embeddings with its own zcore_* settings only; the other selection fields choose among them
_NOT_ZCORE: dict[str, str] = {
    f: "a selection setting other than ZCore's own: it picks among the scores, never computes them"
    for f in (
        "method", "score", "labels", "mixed_replaced", "budget", "beta", "reference_beta", "beta_grid",
        "val_fraction", "min_val", "search_se", "strata", "baselines", "search_steps", "d2_mode", "d2_k",
        "d2_gamma", "d2_beta", "d2_reference_beta", "d2_strata", "nested", "exclude",
    )
}  # fmt: skip

#: stage -> {config group -> {field left out of the key: why it cannot change the artifact}}
NOT_IN_KEY: dict[str, dict[str, dict[str, str]]] = {
    "embed": {
        "backbone": {
            "batch_size": "inference batching: each image's features are computed on their own",
            "device": "where it runs; where images are resized, which changes pixels, is keyed as `resize`",
        },
    },
    "knn": {
        "knn": {
            "chunk_size": "exact search in blocks of this many queries: the same neighbours",
            "nlist": "read by backend=faiss_ivf only, and keyed then",
            "nprobe": "read by backend=faiss_ivf only, and keyed then",
            "approx_above": "backend=auto keys the backend it resolved to (faiss or faiss_ivf)",
        },
    },
    "cluster": {"cluster": {}, "trainer": TRAINER_NOT_IN_KEY},
    "prototypes": {},
    "zcore": {"selection": _NOT_ZCORE},
    "dynamics": {"dynamics": {}, "trainer": TRAINER_NOT_IN_KEY},
    "beta_search": {
        "selection": {
            "labels": "the labels enter as an input key (pseudo-labels or ground truth)",
            "mixed_replaced": "the mixed labels enter as an input key, which holds it",
            "budget": "the one budget searched is keyed as `budget`",
            "beta": "the search runs only for beta=auto",
            "reference_beta": "read only with beta=reference, where no search runs",
            "baselines": "the other arms of the run",
            "search_steps": "keyed as the resolved `steps`",
            "beta_grid": "keyed as `betas`, the candidates searched (nested budgets search part of the grid)",
            "nested": "its effect, the candidates searched, is keyed as `betas`",
            "exclude": "the search runs over every image; excluded ones are left out when the coreset is chosen",
            "dedup": "the search runs over every image; near-copies are left out when the coreset is chosen",
            "dedup_threshold": "as dedup: it decides the candidate pool, not the search",
            "d2_k": "D2's own setting; D2 searches no beta",
            "d2_gamma": "D2's own setting; D2 searches no beta",
            "d2_beta": "D2's own setting; D2 searches no beta",
            "d2_reference_beta": "D2's own setting; D2 searches no beta",
            "d2_strata": "D2's own setting; D2 searches no beta",
            "d2_mode": "D2's own setting; D2 searches no beta",
            **{f: "ZCore's own setting; ZCore searches no beta" for f in _ZCORE},
        },
        "evaluate": {
            "steps": "candidates train for selection.search_steps (keyed as `steps`)",
            "test_every": "candidates are validated on the held-out tenth, never tested",
            "seeds": "candidates train with the run's seed",
            **_TRAINING_NOT_IN_KEY,
        },
        "trainer": TRAINER_NOT_IN_KEY,
    },
    "evaluate": {
        "evaluate": {"seeds": "one entry per seed, keyed as `seed`", **_TRAINING_NOT_IN_KEY},
        "trainer": TRAINER_NOT_IN_KEY,
    },
}


def group_key(stage: str, group: str, cfg: Any) -> dict[str, Any]:
    """The fields of ``cfg`` (the stage's ``group`` config, a dataclass) that enter ``stage``'s key."""
    drop = NOT_IN_KEY[stage][group]
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in drop}


def stage_key(stage: str, groups: Mapping[str, Any], **derived: Any) -> dict[str, Any]:
    """A stage's key config: each of its groups by the rule (``groups`` must be exactly the stage's), plus the
    ``derived`` values it also depends on (the seed, a resolved backend, the images' augmentation ...)."""
    if set(groups) != set(NOT_IN_KEY[stage]):
        raise ValueError(f"stage {stage!r} keys the groups {sorted(NOT_IN_KEY[stage])}, got {sorted(groups)}")
    return {**{g: group_key(stage, g, c) for g, c in groups.items()}, **derived}
