"""One rule for cache keys: every field of each config group a stage receives enters its key, unless it is listed
here with the reason it cannot change the artifact (the settings that change no result at all are declared once,
in elfs/infra/no_effect.py, and read from there). A new hyperparameter is therefore part of every key that could
depend on it, by default; tests/test_cache_keys.py walks every field of every group of every stage to hold this."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from elfs.infra.no_effect import no_effect_in

#: trainer settings that change where or how fast a training runs, or how it reports, but not what it computes
TRAINER_NOT_IN_KEY: dict[str, str] = no_effect_in("trainer")

#: a classifier training's settings that decide neither its network nor its optimisation
_TRAINING_NOT_IN_KEY: dict[str, str] = no_effect_in("evaluate")

#: the run's own fields (ElfsConfig outside the groups) that no stage receives, so no key holds; ``seed`` alone is
#: keyed (the Context hands it to every stage)
RUN_NOT_IN_KEY: dict[str, str] = {
    **no_effect_in(""),
    "debug": "a mode that rewrites the groups before they are read; the groups are keyed",
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
            **no_effect_in("backbone"),
        },
    },
    "knn": {
        "knn": {
            **no_effect_in("knn"),
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
            "dedup_crop_threshold": "as dedup: it decides the candidate pool, not the search",
            "dedup_crop_gate": "as dedup: it decides the candidate pool, not the search",
            "dedup_crop_candidates": "as dedup: it decides the candidate pool, not the search",
            "dedup_max_crop": "as dedup: it decides the candidate pool, not the search",
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


_IMAGES = "decides the images or their split: every stage keys the images by their content's fingerprint"
_CORESET = "decides which images a coreset keeps: each evaluation keys its kept images (`kept`)"

#: 'group.field' -> how a field that changes a result, yet enters no stage's key by the rule, is keyed all the same
#: (as an input, or as the value it resolves to). Every other field is in some stage's key or in
#: elfs/infra/no_effect.py's NO_EFFECT; tests/test_cache_keys.py walks every field to hold this.
KEYED_AS: dict[str, str] = {
    **{f"dataset.{k}": _IMAGES for k in ("name", "path", "max_train", "split_seed", "synthetic", "test_fraction")},
    "dataset.hflip": "the training augmentation: keyed as `hflip` by the stages that train (augmentation_key)",
    "dataset.crop_padding": "the training augmentation: keyed as `crop_padding` (augmentation_key)",
    "debug": "a mode that rewrites the groups before they are read; the groups are keyed",
    "evaluate.seeds": "one evaluation entry per seed, keyed as `seed`",
    "knn.approx_above": "backend=auto keys the backend it resolved to (faiss or faiss_ivf)",
    "knn.nlist": "read by backend=faiss_ivf only, and keyed then",
    "knn.nprobe": "read by backend=faiss_ivf only, and keyed then",
    "selection.labels": "the labels enter as an input key (pseudo-labels or ground truth)",
    "selection.mixed_replaced": "the mixed labels enter as an input key, which holds it",
    "selection.search_steps": "keyed by the beta search as the resolved `steps`",
    "selection.budget": "keyed by the beta search as `budget`; " + _CORESET,
    **{
        f"selection.{k}": _CORESET
        for k in ("baselines", "beta", "beta_grid", "reference_beta", "nested", "exclude")
        + ("d2_beta", "d2_gamma", "d2_k", "d2_mode", "d2_reference_beta", "d2_strata")
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
