"""Monotonic selection (method.md §6.3 ``coreset`` mode): keep the easiest or the hardest examples."""

from __future__ import annotations

import numpy as np

from elfs.select.ordering import as_kept, check_hardness, easy_to_hard_order, subset_sizes


def easiest(hardness: np.ndarray, budget: float) -> np.ndarray:
    """Keep the round(budget*N) easiest examples (lowest (hardness, index)); return kept indices."""
    h = check_hardness(hardness)
    n_keep, _ = subset_sizes(h.size, budget)
    return as_kept(easy_to_hard_order(h)[:n_keep])


def hardest(hardness: np.ndarray, budget: float) -> np.ndarray:
    """Keep the round(budget*N) hardest examples (highest (hardness, index)); return kept indices."""
    h = check_hardness(hardness)
    n_keep, _ = subset_sizes(h.size, budget)
    return as_kept(easy_to_hard_order(h)[h.size - n_keep :])


__all__ = ["easiest", "hardest"]
