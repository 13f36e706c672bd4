"""ELFS double-end pruning (method.md §6.1): keep a contiguous window of hardness ranks."""

from __future__ import annotations

import numpy as np

from elfs.select.ordering import as_kept, check_hardness, easy_to_hard_order, subset_sizes


def double_end(
    hardness: np.ndarray, budget: float, beta: float = 0.0, *, contains: np.ndarray | None = None
) -> np.ndarray:
    """Drop the round(beta*N) hardest, then the easiest until round(budget*N) remain; return kept indices.

    Unlike the reference ``sorted[mis_num:-chop]`` slice, this slices by explicit end index, so it is
    correct for beta + budget == 1 (keeps the easiest-side window ending just below the hard cut) and beta == 0.
    ``contains``: a smaller window of the same ranking (an earlier budget's coreset) that the result must hold;
    the window is shifted, by the fewest ranks, until it does (nested budgets: :func:`nested_beta_range`).
    """
    h = check_hardness(hardness)
    n_keep, n_hard = subset_sizes(h.size, budget, beta)
    order = easy_to_hard_order(h)  # easiest first
    stop = h.size - n_hard
    if contains is not None:
        pos = np.empty(h.size, dtype=np.int64)
        pos[order] = np.arange(h.size)
        inner = pos[as_kept(contains)]
        first, end = (int(inner.min()), int(inner.max()) + 1) if inner.size else (stop - n_keep, stop - n_keep)
        if end - first != inner.size or inner.size > n_keep:
            raise ValueError(f"contains must be a window of at most {n_keep} consecutive ranks of this hardness")
        stop = min(max(stop, end), first + n_keep)
    return as_kept(order[stop - n_keep : stop])


def nested_beta_range(prev_beta: float, prev_budget: float, budget: float) -> tuple[float, float]:
    """The betas whose window at ``budget`` contains the window (prev_beta, prev_budget) of a smaller budget:
    beta <= prev_beta (the hard cut does not move past the inner window) and beta + budget >= prev_beta +
    prev_budget (nor does the easy end), within [0, 1 - budget]."""
    if not 0 < prev_budget <= budget <= 1:
        raise ValueError(f"need 0 < prev_budget <= budget <= 1, got {prev_budget} and {budget}")
    lo = max(0.0, prev_beta + prev_budget - budget)
    return lo, max(lo, min(prev_beta, 1.0 - budget))


__all__ = ["double_end", "nested_beta_range"]
