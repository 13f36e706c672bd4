"""Selecting one coreset: cheap, so not cached, but saved in the run folder (coresets.npz)."""

from __future__ import annotations

import time

import numpy as np

from elfs.cache import Artifact
from elfs.config import SelectionConfig
from elfs.stages.context import Context


def hardness_of(dyn: Artifact, score: str) -> np.ndarray:
    """The chosen score turned into 'higher = harder' by its declared hard end."""
    from elfs.dynamics import HARD_END
    from elfs.select import to_hardness

    return to_hardness(dyn[score], HARD_END[score])


def select_coreset(
    ctx: Context,
    s: SelectionConfig,
    method: str,
    hardness: np.ndarray | None,
    embeddings: np.ndarray | None,
    n: int,
    budget: float,
    beta: float,
    seed: int,
) -> np.ndarray:
    """Kept indices (sorted int64) of ``method`` at ``budget``: ``hardness`` (higher = harder) is what it ranks by
    (None for random and full), ``embeddings`` the raw features D2 builds its graphs over (None for the others)."""
    from elfs.select import select
    from elfs.select.d2 import d2_select

    t0 = time.perf_counter()
    if method == "full":
        kept = np.arange(n, dtype=np.int64)
    elif method == "d2":
        kept = d2_select(
            hardness,
            embeddings,
            budget,
            s.d2_beta,
            mode=s.d2_mode,
            strata=s.d2_strata,
            gamma=s.d2_gamma,
            k=s.d2_k,
            seed=seed,
        )
    elif method == "prototypicality":  # keep the farthest from their centroid (the hardest), as the reference does
        kept = select("hard", hardness, n=n, budget=budget, seed=seed)
    else:
        kept = select(method, hardness, n=n, budget=budget, beta=beta, seed=seed, strata=s.strata)
    ctx.timings["select"] = ctx.timings.get("select", 0.0) + time.perf_counter() - t0
    return kept
