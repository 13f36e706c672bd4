"""The evaluation stage, the only one that reads ground truth: a fresh network trained on a coreset's images with
their true labels for a fixed number of steps, then tested."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from elfs.cache import Artifact, array_hash
from elfs.config import EvaluateConfig
from elfs.data import Dataset
from elfs.infra import distributed
from elfs.stages.context import Context
from elfs.stages.inputs import augmentation_key, embed_input, image_facts, model_inputs
from elfs.stages.keys import stage_key
from elfs.stages.trainings import EvaluationData, concurrent_trainings, fit, in_workers

log = logging.getLogger(__name__)


def evaluate_key(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, kept: np.ndarray, seed: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """(config, inputs) of one evaluation's cache entry: one entry per seed; how many run at once is no part of it."""
    config = stage_key("evaluate", {"evaluate": e, "trainer": ctx.trainer}, seed=seed, **augmentation_key(ds))
    inputs = {
        "kept": array_hash(kept),
        "images": ds.train.fingerprint(),
        "test": ds.test.fingerprint(),
        "labels": array_hash(ds.truth.train),
        "test_labels": array_hash(ds.truth.test),
        **embed_input(e.model, emb),  # a model on images: the same for every encoder (random is computed once)
    }
    return config, inputs


def evaluation_data(ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None) -> EvaluationData:
    """The ground-truth training and test data of the evaluations."""
    return EvaluationData(
        model_inputs(e.model, ds, emb, "train"),
        ds.truth.train,
        model_inputs(e.model, ds, emb, "test"),
        ds.truth.test,
        int(ds.num_classes),
        ctx.runtime(progress=False),
        image_facts(ds),
    )


def train_and_test(data: EvaluationData, e: EvaluateConfig, kept: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Train ``e.model`` from scratch on ``kept`` with the GROUND-TRUTH labels for ``e.steps``; test accuracies, and
    the training's curves (loss by step, test accuracy by step), stored with the entry so that a run that finds it
    in the cache still shows them."""
    from elfs.training.classifier import TestSet

    res = fit(data, e, kept, seed, e.steps, TestSet(data.x_test, data.y_test, e.test_every))
    best = np.nan if res.best_test_acc is None else res.best_test_acc
    loss, test = np.asarray(res.loss_history, float).reshape(-1, 2), np.asarray(res.test_history, float).reshape(-1, 2)
    return {
        "final_acc": np.asarray(res.final_test_acc),
        "best_acc": np.asarray(best),
        "loss_steps": loss[:, 0].astype(np.int64),
        "loss": loss[:, 1],
        "test_steps": test[:, 0].astype(np.int64),
        "test_acc": test[:, 1],
    }


def stage_evaluate(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, kept: np.ndarray, seed: int, label: str
) -> Artifact:
    """Train from scratch on the kept indices with their GROUND-TRUTH labels for a fixed number of steps; test."""
    config, inputs = evaluate_key(ctx, e, ds, emb, kept, seed)

    def compute():
        return train_and_test(evaluation_data(ctx, e, ds, emb), e, kept, seed), {"n_kept": len(kept)}

    distributed.check_same(inputs["kept"], f"the coreset of {label}")  # one subset, or DDP averages two trainings
    art = ctx.cache.run("evaluate", config, inputs, compute, label=label, every_rank=True, module=__name__)
    return ctx.timed("evaluate", art)


def prefetch_evaluations(
    ctx: Context, e: EvaluateConfig, ds: Dataset, emb: Artifact | None, jobs: list[tuple[np.ndarray, int, str]]
) -> None:
    """With ``evaluate.concurrent`` = K > 1, train the evaluations in ``jobs`` (kept, seed, label) that the cache
    lacks K at a time (:func:`in_workers`: one small training leaves a GPU idle) and store them in the cache, where
    stage_evaluate then finds them. Each training is seeded on its own and deterministic, so the results are those
    of running them one by one."""
    k = concurrent_trainings(e)
    if k <= 1:  # one by one: stage_evaluate trains each (and hashes its key) itself
        return
    todo: dict[str, tuple[dict, dict, np.ndarray, int, str]] = {}
    for kept, seed, label in jobs:
        config, inputs = evaluate_key(ctx, e, ds, emb, kept, seed)
        key = ctx.cache.key("evaluate", config, inputs, module=__name__)
        if key not in todo and not ctx.cache.has("evaluate", key):
            todo[key] = (config, inputs, kept, seed, label)
    if len(todo) < 2:
        return
    log.info("evaluate: %d trainings, %d at a time in worker processes", len(todo), min(k, len(todo)))
    t0 = time.perf_counter()
    data = evaluation_data(ctx, e, ds, emb)
    results = in_workers(train_and_test, [(e, kept, seed) for _, _, kept, seed, _ in todo.values()], data, k)
    for (config, inputs, kept, _, label), arrays in zip(todo.values(), results, strict=True):
        extra = {"n_kept": len(kept), "concurrent": min(k, len(todo))}
        compute = lambda a=arrays, x=extra: (a, x)  # noqa: E731 - trained above, stored now
        ctx.cache.run("evaluate", config, inputs, compute, label=label, module=__name__)
    ctx.timings["evaluate"] = ctx.timings.get("evaluate", 0.0) + time.perf_counter() - t0
