"""The beta-search stage: beta chosen on a 90/10 split of the train set labelled with the proxy's labels."""

from __future__ import annotations

import numpy as np

from elfs.cache import Artifact
from elfs.config import EvaluateConfig, SelectionConfig
from elfs.data import UnlabelledData
from elfs.stages.context import Context
from elfs.stages.inputs import Labels, augmentation_key, embed_input, image_facts, model_inputs
from elfs.stages.keys import stage_key
from elfs.stages.select import hardness_of
from elfs.stages.trainings import EvaluationData, concurrent_trainings, in_workers, validate_candidate


def stage_beta_search(
    ctx: Context,
    s: SelectionConfig,
    e: EvaluateConfig,
    ds: UnlabelledData,
    emb: Artifact | None,
    labels: Labels,
    dyn: Artifact,
    budget: float,
    betas: list[float],
) -> Artifact:
    """Choose beta among ``betas`` (the grid, or the part of it nested budgets allow) on a 90/10 split of the train
    set labelled with ``labels`` (method.md §6.4): pseudo-labels for ELFS, which touches no ground truth; ground
    truth only for the supervised reference.

    Each candidate trains the evaluation network (``e``) on those labels for ``s.search_steps`` steps."""
    from elfs.select.beta_search import Holdout, search_beta

    x = model_inputs(e.model, ds, emb, "train")
    steps = int(s.search_steps or e.steps)
    groups = {"selection": s, "evaluate": e, "trainer": ctx.trainer}
    betas = [float(b) for b in betas]
    config = stage_key(
        "beta_search", groups, budget=budget, betas=betas, steps=steps, seed=ctx.seed, **augmentation_key(ds)
    )
    inputs = {"dynamics": dyn.key, **labels.key, **embed_input(e.model, emb), "images": ds.train.fingerprint()}
    hardness = hardness_of(dyn, s.score)

    k = concurrent_trainings(e)
    data = EvaluationData(
        x_train=x,
        y_train=labels.values,
        x_test=None,
        y_test=None,
        num_classes=labels.num_classes,
        runtime=ctx.runtime(progress=False),
        images=image_facts(ds),
    )

    def train_and_validate(kept: np.ndarray, val: np.ndarray) -> float:
        return validate_candidate(data, e, steps, ctx.seed, kept, val)

    def train_and_validate_many(jobs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """evaluate.concurrent > 1: the candidates at once, each in its own worker (results as one by one)."""
        return in_workers(validate_candidate, [(e, steps, ctx.seed, kept, val) for kept, val in jobs], data, k)

    def compute():
        res = search_beta(
            hardness,
            budget,
            betas,
            train_and_validate=train_and_validate,
            train_and_validate_many=train_and_validate_many if k > 1 else None,
            method=s.method,
            holdout=Holdout(s.val_fraction, s.min_val),
            se_tolerance=s.search_se,
            seed=ctx.seed,
            strata=s.strata,
        )
        arrays = {
            "betas": np.asarray(res.betas, dtype=np.float64),
            "val_acc": np.asarray(res.val_acc),
            "best_beta": np.asarray(res.best_beta),
            "val_idx": res.val_idx,
        }
        return arrays, {"at_edge": bool(res.at_edge)}

    label = f"budget={budget}"
    art = ctx.cache.run("beta_search", config, inputs, compute, label=label, every_rank=True, module=__name__)
    return ctx.timed("beta_search", art)
