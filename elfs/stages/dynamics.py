"""The proxy stage: a classifier trained on pseudo-labels, whose per-example training dynamics give the scores."""

from __future__ import annotations

import logging
import shutil

import numpy as np

from elfs.cache import Artifact
from elfs.config import DynamicsConfig
from elfs.data import UnlabelledData
from elfs.infra import distributed
from elfs.stages.context import Context
from elfs.stages.inputs import Labels, augmentation_key, embed_input, image_facts, model_inputs
from elfs.stages.keys import stage_key

log = logging.getLogger(__name__)


def stage_dynamics(
    ctx: Context, d: DynamicsConfig, ds: UnlabelledData, emb: Artifact | None, labels: Labels
) -> Artifact:
    """Train the proxy on ``labels`` (pseudo-labels, or ground truth for the supervised reference) and record AUM,
    forgetting, EL2N per example. The dataset view ``ds`` carries no targets; the labels arrive only here."""
    from elfs.dynamics import record_dynamics

    x = model_inputs(d.model, ds, emb, "train")
    config = stage_key("dynamics", {"dynamics": d, "trainer": ctx.trainer}, seed=ctx.seed, **augmentation_key(ds))
    inputs = {**labels.key, "images": ds.train.fingerprint(), **embed_input(d.model, emb)}
    # epoch checkpoints of this very computation: a run killed mid-stage resumes here, with the same result
    key = ctx.cache.key("dynamics", config, inputs, module=__name__)
    work = ctx.cache.entry("dynamics", key).with_name(f".work-{key}")

    def compute():
        resumed = (work / "last.ckpt").is_file()
        if resumed:
            log.info("dynamics: resuming from the epoch checkpoint in %s", work)
        logger = ctx.loggers.for_stage("dynamics" if labels.source == "pseudo" else "dynamics_gt")
        runtime = ctx.runtime(progress=True, stage="dynamics", logger=logger, checkpoint_dir=str(work))
        scores = record_dynamics(
            x, labels.values, d, num_classes=labels.num_classes, seed=ctx.seed, images=image_facts(ds), runtime=runtime
        )
        return {k: np.asarray(v) for k, v in scores.items()}, {"resumed": resumed, "labels": labels.source}

    label = None if labels.source == "pseudo" else "labels=gt"
    art = ctx.cache.run("dynamics", config, inputs, compute, label=label, every_rank=True, module=__name__)
    if distributed.is_zero():  # the artifact is complete (every rank has it): its checkpoints are no longer needed
        shutil.rmtree(work, ignore_errors=True)
    return ctx.timed("dynamics", art)
