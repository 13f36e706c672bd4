"""results.json's schema: what identifies a selection arm, an arm's entry, and the run's results dict (report.py
writes and prints it, elfs/tables/aggregate.py groups a sweep's by arm)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from elfs.config import ElfsConfig
from elfs.infra.names import uses_embeddings
from elfs.infra.no_effect import changes_a_result
from elfs.infra.runtime import resolve_precision


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


def encoder_name(cfg: ElfsConfig) -> str:
    """The encoder as tables show it: the backbone's name, with the timm model for backbone=timm."""
    b = cfg.backbone
    return f"timm:{b.model}" if b.name == "timm" and b.model else b.name


def arm_of(cfg: ElfsConfig, method: str) -> dict[str, Any]:
    """What identifies one selection arm for the sweep summary: the method, whose labels scored it, the score,
    the clustering and the encoder it depends on (None where it depends on none), and every setting upstream of
    its coreset (``settings``), so that two jobs of the same arm group together and two different arms never do."""
    from elfs.select import METHOD_INPUTS, METHODS_USING_BETA

    s, need = cfg.selection, METHOD_INPUTS[method]
    scored = need == "score"
    gt = scored and s.uses_ground_truth
    mixed = scored and s.labels == "mixed"  # the diagnostic: labels of a controlled accuracy
    groups: list[str] = []
    if need in ("prototypes", "graph", "zcore"):
        groups = ["backbone"]  # D2 builds its own graphs over the embeddings (elfs/select/d2.py)
    elif scored:
        groups = ["dynamics"] + ([] if gt else ["backbone", "knn", "cluster"])
        if gt and uses_embeddings(cfg.dynamics.model):
            groups.append("backbone")
    settings: dict[str, Any] = {}
    for g in groups:
        settings.update(_flat(f"{g}.", getattr(cfg, g)))
    if scored or need in ("prototypes", "graph", "zcore"):
        settings["seed"] = cfg.seed
    sel_keys = {
        "score": ("score", "labels", "strata", "beta", "beta_grid", "val_fraction", "min_val", "reference_beta"),
        "prototypes": (),
        "graph": ("d2_mode", "d2_k", "d2_gamma", "d2_beta", "d2_reference_beta", "d2_strata"),
        "zcore": ("zcore_samples", "zcore_dim", "zcore_neighbours", "zcore_exponent", "zcore_rand_init"),
        "none": (),
    }[need]
    if mixed:
        sel_keys = sel_keys + ("mixed_replaced",)
    if method in METHODS_USING_BETA and s.searched:
        sel_keys = sel_keys + ("search_steps", "search_se")
    settings.update({f"selection.{k}": getattr(s, k) for k in sel_keys})
    settings = {k: v for k, v in settings.items() if changes_a_result(k)}  # the one list (elfs/infra/no_effect.py)
    uses_encoder = need in ("prototypes", "graph", "zcore") or (scored and not gt) or "backbone.name" in settings
    return {
        "arm": f"supervised_{method}" if gt else (f"diagnostic_{method}" if mixed else method),
        "method": method,
        "score": s.score if scored else {"none": None, "zcore": "zcore"}.get(need, "prototype_distance"),
        "labels": ("ground_truth" if gt else s.labels) if scored else None,
        "uses_ground_truth": bool(gt or mixed),
        "cluster": cfg.cluster.method if scored and not gt else None,
        "backbone": encoder_name(cfg) if uses_encoder else None,
        "settings": settings,
    }


def arm_entry(
    arm: Mapping[str, Any],
    beta: float | None,
    accs: list[float],
    bests: list[float | None],
    seeds: list[int],
    keys: list[str],
    n_kept: int,
) -> dict[str, Any]:
    """One arm's results at one budget: its identity (:func:`arm_of`), beta, the final and best-of-run test accuracy
    per evaluation seed with their mean and standard deviation, and the evaluations' cache keys."""
    found = [b for b in bests if b is not None]
    return {
        **arm,
        "beta": beta,
        "final_acc": accs,
        "acc_mean": float(np.mean(accs)),
        "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        "best_acc": bests,
        "best_mean": float(np.mean(found)) if found else None,
        "best_std": (float(np.std(found, ddof=1)) if len(found) > 1 else 0.0) if found else None,
        "seeds": [int(x) for x in seeds],
        "eval_keys": keys,
        "n_kept": int(n_kept),
    }


def run_results(
    ctx: Any,
    ds: Any,
    *,
    num_clusters: int,
    n_skipped: int,
    rows: list[dict[str, Any]],
    full: dict[str, Any] | None,
    diagnostics: dict[str, Any],
    selection_files: list[Any],
    total_seconds: float,
    artifacts: Mapping[str, str],
) -> dict[str, Any]:
    """results.json of one run from its stage Context (config, stage timings, cache events) and what the pipeline
    computed (elfs/run.py adds the run folder, overrides, versions and the config)."""
    cfg, timings, cache_events = ctx.cfg, ctx.timings, ctx.cache.events
    s, e = cfg.selection, cfg.evaluate
    return {
        "dataset": ds.name,
        "dataset_source": ds.notes.get("source"),
        "labelled": ds.labelled,
        "n_train": len(ds.train),
        "n_skipped": n_skipped,
        "n_test": None if ds.test is None else len(ds.test),
        "num_classes": ds.num_classes,
        "num_clusters": int(num_clusters),
        "selection_files": [str(p) for p in selection_files],
        "backbone": encoder_name(cfg),
        "pretrained": bool(cfg.backbone.pretrained),
        "selection": {
            "method": s.method,
            "arm": arm_of(cfg, s.method)["arm"],
            "score": s.score,
            "labels": s.labels,
            "uses_ground_truth": s.uses_ground_truth,
            "baselines": list(s.baselines),
        },
        "evaluate": {
            "model": e.model,
            "steps": e.steps,
            "seeds": list(e.seeds),
            "test_every": e.test_every,
            "precision": resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),  # auto, as resolved
        },
        "clustering": diagnostics,
        "results": rows,
        "full_data": full,
        "stage_seconds": {k: round(v, 2) for k, v in timings.items()},
        "cache": cache_events,
        "total_seconds": round(total_seconds, 2),
        "artifacts": dict(artifacts),
    }
