"""Uniform random coreset (method.md §6.3/§8.1), seeded unlike the reference ``randperm``."""

from __future__ import annotations

import numpy as np

from elfs.select.ordering import as_kept, subset_sizes, validate_seed


def random_subset(n: int, budget: float, *, seed: int) -> np.ndarray:
    """Keep a uniformly random round(budget*n)-subset of range(n), drawn with ``np.random.default_rng(seed)``."""
    n_keep, _ = subset_sizes(n, budget)
    rng = np.random.default_rng(validate_seed(seed))
    return as_kept(rng.choice(n, size=n_keep, replace=False))


__all__ = ["random_subset"]
