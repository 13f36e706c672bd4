"""ELFS double-end pruning (method.md §6.1): keep a contiguous window of hardness ranks."""

from __future__ import annotations

import numpy as np

from elfs.select.validate import as_kept, check_hardness, easy_to_hard_order, subset_sizes


def double_end(hardness: np.ndarray, budget: float, beta: float = 0.0) -> np.ndarray:
    """Drop the round(beta*N) hardest, then the easiest until round(budget*N) remain; return kept indices.

    Unlike the reference ``sorted[mis_num:-chop]`` slice, this slices by explicit end index, so it is
    correct for beta + budget == 1 (keeps the easiest-side window ending just below the hard cut) and beta == 0.
    """
    h = check_hardness(hardness)
    n_keep, n_hard = subset_sizes(h.size, budget, beta)
    order = easy_to_hard_order(h)  # easiest first
    stop = h.size - n_hard
    return as_kept(order[stop - n_keep : stop])


__all__ = ["double_end"]
