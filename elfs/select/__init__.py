"""Coreset selection: every selector returns the KEPT indices as a sorted np.int64 array.

``budget`` = fraction kept in (0, 1] (pruning rate = 1 - budget); ``beta`` = fraction of the WHOLE set dropped
as too hard (double_end, ccs only); hardness is higher = harder (see :func:`to_hardness`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from elfs.select.ccs import ccs
from elfs.select.double_end import double_end
from elfs.select.monotonic import easiest, hardest
from elfs.select.ordering import (
    check_hardness,
    subset_sizes,
    to_hardness,
    validate_budget_beta,
    validate_n,
    validate_seed,
)
from elfs.select.random import random_subset


def _double_end(hardness: np.ndarray, n: int, budget: float, beta: float, seed: int, strata: int) -> np.ndarray:
    return double_end(hardness, budget, beta)


def _ccs(hardness: np.ndarray, n: int, budget: float, beta: float, seed: int, strata: int) -> np.ndarray:
    return ccs(hardness, budget, beta, strata=strata, seed=seed)


def _random(hardness: np.ndarray | None, n: int, budget: float, beta: float, seed: int, strata: int) -> np.ndarray:
    return random_subset(n, budget, seed=seed)


def _easy(hardness: np.ndarray, n: int, budget: float, beta: float, seed: int, strata: int) -> np.ndarray:
    return easiest(hardness, budget)


def _hard(hardness: np.ndarray, n: int, budget: float, beta: float, seed: int, strata: int) -> np.ndarray:
    return hardest(hardness, budget)


#: method name -> adapter(hardness, n, budget, beta, seed, strata) returning kept indices.
SELECTORS: dict[str, Callable[..., np.ndarray]] = {
    "double_end": _double_end,
    "ccs": _ccs,
    "random": _random,
    "easy": _easy,
    "hard": _hard,
}
#: Every selection method and what it ranks by, besides n, budget and seed: "score" (the proxy's training dynamics:
#: pseudo-labels, or ground truth for the supervised reference), "prototypes" (distance to the own k-means centroid
#: of the embeddings, method.md §8.2), "graph" (those distances over the kNN graph: D2, §8.3), "zcore" (ZCore's
#: coverage and redundancy scores of the embeddings, elfs/select/zcore.py) or "none".
#: "full" keeps every example (the full-data reference); prototypicality, d2 and zcore are dispatched by the pipeline.
METHOD_INPUTS: dict[str, str] = {
    "double_end": "score",
    "ccs": "score",
    "easy": "score",
    "hard": "score",
    "random": "none",
    "full": "none",
    "prototypicality": "prototypes",
    "d2": "graph",
    "zcore": "zcore",
}
#: Methods that take a hard cut ``beta``; the others require beta == 0.
METHODS_USING_BETA = frozenset({"double_end", "ccs"})
#: Methods that ignore the score (hardness may be None).
METHODS_WITHOUT_SCORE = frozenset({"random"})


def select(
    method: str,
    hardness: np.ndarray | None,
    *,
    n: int,
    budget: float,
    beta: float = 0.0,
    seed: int = 0,
    strata: int = 50,
) -> np.ndarray:
    """Select a coreset of ``n`` examples with ``method``; return the kept indices (sorted int64).

    All arguments are validated before any work; ``beta`` must be 0 for methods not in METHODS_USING_BETA.
    """
    if method not in SELECTORS:
        raise ValueError(f"method={method!r} is unknown; valid methods: {sorted(SELECTORS)}")
    n = validate_n(n)
    budget, beta = validate_budget_beta(budget, beta)
    seed = validate_seed(seed)
    if method not in METHODS_USING_BETA and beta != 0.0:
        raise ValueError(
            f"beta={beta!r} given for method={method!r}, which has no hard cut; "
            f"beta must be 0 unless method is one of {sorted(METHODS_USING_BETA)}"
        )
    if hardness is None:
        if method not in METHODS_WITHOUT_SCORE:
            raise ValueError(f"method={method!r} needs a hardness score, got hardness=None")
    else:
        h = check_hardness(hardness)
        if h.size != n:
            raise ValueError(f"hardness has {h.size} entries but n={n}; they must match")
        hardness = h
    return SELECTORS[method](hardness, n, budget, beta, seed, strata)


__all__ = [
    "SELECTORS",
    "METHOD_INPUTS",
    "METHODS_USING_BETA",
    "METHODS_WITHOUT_SCORE",
    "select",
    "to_hardness",
    "validate_budget_beta",
    "subset_sizes",
    "double_end",
    "ccs",
    "random_subset",
    "easiest",
    "hardest",
]
