"""One classifier training on a coreset (an evaluation, or a beta-search candidate), and several of them at once in
worker processes (``evaluate.concurrent``): one small training leaves a GPU idle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elfs import distributed
from elfs.config import EvaluateConfig
from elfs.runtime import Runtime

if TYPE_CHECKING:  # the classifier (and Lightning) load when a training runs, not to check a config
    from elfs.dynamics.classifier import ImageFacts, TestSet


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
    from elfs.dynamics.classifier import train_classifier

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
    from elfs.dynamics.classifier import evaluate_accuracy

    res = fit(data, e, kept, seed, steps, None)
    acc = evaluate_accuracy(res.module, data.x_train, data.y_train, indices=val, num_workers=data.runtime.num_workers)
    return float(acc)


_WORKER_DATA: EvaluationData | None = None  # a concurrent-training worker's data, sent once per worker


def _worker_init(data: EvaluationData, threads: int) -> None:
    import torch

    global _WORKER_DATA
    torch.set_num_threads(threads)
    _WORKER_DATA = data


def _worker_call(job: tuple[Callable[..., Any], tuple]) -> Any:
    fn, args = job
    return fn(_WORKER_DATA, *args)


def in_workers(fn: Callable[..., Any], jobs: list[tuple], data: EvaluationData, k: int) -> list[Any]:
    """``[fn(data, *args) for args in jobs]``, k at a time, each in its own worker process on the training device
    (spawned: a CUDA context cannot be forked). ``data`` reaches each worker once; the host's CPU threads are
    shared out among the workers rather than oversubscribed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    workers = max(1, min(int(k), len(jobs)))
    threads = max(1, torch.get_num_threads() // workers)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_worker_init, initargs=(data, threads)) as pool:
        return list(pool.map(_worker_call, [(fn, tuple(args)) for args in jobs]))


def concurrent_trainings(e: EvaluateConfig) -> int:
    """How many independent trainings run at once: ``evaluate.concurrent``, except under DDP (its ranks train one
    model together)."""
    return 1 if distributed.world_size() > 1 else int(e.concurrent)
