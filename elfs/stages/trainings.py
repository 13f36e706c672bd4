"""One classifier training on a coreset (an evaluation, or a beta-search candidate), and several of them at once in
worker processes (``evaluate.concurrent``): one small training leaves a GPU idle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elfs.config import EvaluateConfig
from elfs.infra import distributed
from elfs.infra.runtime import Runtime

if TYPE_CHECKING:  # the classifier (and Lightning) load when a training runs, not to check a config
    from elfs.training.classifier import ImageFacts, TestSet


@dataclass
class EvaluationData:
    """What a training reads besides its coreset and seed (picklable: worker processes get it once)."""

    x_train: Any
    y_train: np.ndarray
    x_test: Any
    y_test: np.ndarray | None
    num_classes: int
    runtime: Runtime
    images: ImageFacts


def fit(data: EvaluationData, e: EvaluateConfig, kept: np.ndarray, seed: int, steps: int, test: TestSet | None) -> Any:
    """Train ``e.model`` from scratch on ``kept`` with ``data``'s labels for ``steps`` (TrainResult)."""
    from elfs.training.classifier import train_classifier

    return train_classifier(
        data.x_train,
        data.y_train,
        kept,
        e,
        num_classes=data.num_classes,
        steps=steps,
        seed=seed,
        images=data.images,
        runtime=data.runtime,
        test=test,
    )


def validate_candidate(
    data: EvaluationData, e: EvaluateConfig, steps: int, seed: int, kept: np.ndarray, val: np.ndarray
) -> float:
    """One beta-search candidate: train ``e.model`` on ``kept`` with ``data``'s (pseudo-)labels for ``steps``;
    its accuracy on the held-out ``val`` indices against the same labels."""
    from elfs.training.classifier import evaluate_accuracy

    res = fit(data, e, kept, seed, steps, None)
    acc = evaluate_accuracy(res.module, data.x_train, data.y_train, indices=val, num_workers=data.runtime.num_workers)
    return float(acc)


def in_workers(fn: Callable[..., Any], jobs: list[tuple], data: EvaluationData, k: int) -> list[Any]:
    """``[fn(data, *args) for args in jobs]``, k at a time, on the run's long-lived training workers
    (elfs/infra/workers.py: one process per slot, spread over the visible GPUs, kept across calls). ``data`` reaches
    each worker once per call; the host's CPU threads are shared out among the k workers rather than oversubscribed."""
    import torch

    from elfs.infra.workers import training_workers, visible_gpus

    k = max(1, int(k))
    threads = max(1, torch.get_num_threads() // k)
    gpus = visible_gpus(data.runtime.trainer_kwargs.get("accelerator", "auto"))
    return training_workers(k, threads, gpus).map(fn, jobs, data)


def concurrent_trainings(e: EvaluateConfig) -> int:
    """How many independent trainings run at once: ``evaluate.concurrent``, except under DDP (its ranks train one
    model together)."""
    return 1 if distributed.world_size() > 1 else int(e.concurrent)
