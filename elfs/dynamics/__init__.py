"""Proxy training dynamics: a classifier trained on pseudo-labels; its per-example logits give AUM, forgetting, EL2N."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from elfs.config import DynamicsConfig
from elfs.training.classifier import (
    ClassifierModule,
    ImageFacts,
    TestSet,
    TrainResult,
    cosine_lr,
    evaluate_accuracy,
    train_classifier,
)
from elfs.training.recorder import HARD_END, TrainingDynamicsRecorder

log = logging.getLogger(__name__)


def record_dynamics(
    inputs: np.ndarray, pseudo_labels: np.ndarray, cfg: DynamicsConfig, **train_kwargs: Any
) -> dict[str, np.ndarray]:
    """Train the proxy (``cfg``, read whole) on all examples with their pseudo-labels for ``cfg.epochs`` (fewer
    when ``cfg.max_steps`` caps a large set: :meth:`DynamicsConfig.epochs_for`) and return per-example scores.

    `train_kwargs` are :func:`train_classifier`'s keywords (num_classes, seed, images, runtime).
    Keys: aum, aum_prob_sum, forgetting, el2n, correctness (directions in HARD_END), never_learned, num_records.
    """
    everything = np.arange(len(inputs), dtype=np.int64)
    epochs = cfg.epochs_for(len(inputs))
    if epochs < cfg.epochs:
        log.info("dynamics: %d epochs instead of %d over %d examples (dynamics.max_steps=%d)", epochs, cfg.epochs,
                 len(inputs), cfg.max_steps)  # fmt: skip
    result = train_classifier(inputs, pseudo_labels, everything, cfg, epochs=epochs, record=True, **train_kwargs)
    assert result.scores is not None
    return result.scores


__all__ = [
    "HARD_END",
    "ClassifierModule",
    "ImageFacts",
    "TestSet",
    "TrainResult",
    "TrainingDynamicsRecorder",
    "cosine_lr",
    "evaluate_accuracy",
    "record_dynamics",
    "train_classifier",
]
