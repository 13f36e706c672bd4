"""Proxy training dynamics: a classifier trained on pseudo-labels; its per-example logits give AUM, forgetting, EL2N."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from elfs.dynamics.classifier import ClassifierModule, TrainResult, cosine_lr, evaluate_accuracy, train_classifier
from elfs.dynamics.recorder import HARD_END, TrainingDynamicsRecorder


def record_dynamics(
    inputs: np.ndarray,
    pseudo_labels: np.ndarray,
    *,
    epochs: int,
    num_classes: int,
    model: str,
    width: int,
    batch_size: int,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
    min_lr: float,
    crop_padding: int,
    hflip: bool,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    seed: int,
    el2n_epochs: int = 10,
    trainer_kwargs: dict | None = None,
    logger: Any = None,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """Train the proxy on all examples with their pseudo-labels for `epochs` and return per-example scores.

    Keys: aum, aum_prob_sum, forgetting, el2n, correctness (directions in HARD_END), never_learned, num_records.
    """
    n = len(inputs)
    result = train_classifier(
        inputs, pseudo_labels, np.arange(n, dtype=np.int64), num_classes=num_classes, model=model, width=width,
        epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, min_lr=min_lr, crop_padding=crop_padding, hflip=hflip, mean=mean, std=std,
        seed=seed, record=True, el2n_epochs=el2n_epochs, trainer_kwargs=trainer_kwargs, logger=logger,
        num_workers=num_workers,
    )
    assert result.scores is not None
    return result.scores


__all__ = [
    "HARD_END",
    "ClassifierModule",
    "TrainResult",
    "TrainingDynamicsRecorder",
    "cosine_lr",
    "evaluate_accuracy",
    "record_dynamics",
    "train_classifier",
]
