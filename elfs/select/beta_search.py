"""The paper's label-free beta search (method.md §6.4).

Split the (pseudo-labelled) training set 90/10. For each beta on the grid, select a coreset with the same
budget fraction from the 90% part only, let the caller train on it with pseudo-labels and report
pseudo-label accuracy on the 10% part, and keep the beta with the best validation accuracy. This module
never sees labels; the final coreset is then selected from the whole set with ``best_beta``.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from elfs.select import METHODS_USING_BETA, select
from elfs.select.ordering import (
    SUM_TOLERANCE,
    as_real,
    check_hardness,
    validate_budget_beta,
    validate_n,
    validate_seed,
)

log = logging.getLogger(__name__)


def validation_size(n: int, val_fraction: float, min_val: int = 0) -> int:
    """Images the search holds out of ``n``: round(val_fraction * n), but at least min_val (and never more than half
    of n for that floor, so that a small set keeps as many images to select from as it validates on)."""
    return max(int(round(val_fraction * n)), min(int(min_val), n // 2))


@dataclass(frozen=True)
class Holdout:
    """The pseudo-labelled validation split of the search: ``fraction`` of the set (selection.val_fraction), at
    least ``minimum`` images (selection.min_val; see :func:`validation_size`)."""

    fraction: float = 0.1
    minimum: int = 0


def split_train_val(n: int, val_fraction: float, seed: int, min_val: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) into (train_idx, val_idx): sorted int64, disjoint, covering range(n).

    The validation part has validation_size(n, val_fraction, min_val) examples; both parts must be non-empty.
    """
    n = validate_n(n)
    vf = as_real("val_fraction", val_fraction)
    if not (0.0 < vf < 1.0):
        raise ValueError(f"val_fraction={vf!r} is outside (0, 1)")
    n_val = validation_size(n, vf, min_val)
    if not (1 <= n_val <= n - 1):
        raise ValueError(
            f"val_fraction={vf!r} of n={n} gives {n_val} validation examples; need between 1 and n-1={n - 1}"
        )
    perm = np.random.default_rng(validate_seed(seed)).permutation(n).astype(np.int64)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def pick_beta(accs: list[float], n_val: int, se_tolerance: float = 0.0) -> int:
    """Index of the chosen candidate (betas ascending): the smallest beta whose validation accuracy is within
    ``se_tolerance`` standard errors, sqrt(p (1 - p) / n_val) at the best accuracy p, of the best; 0 = the best
    (ties keep the smaller beta). 1 is the one-standard-error rule (Breiman et al., 1984): a larger beta, which
    drops more of the hardest images, is taken only when it is better by more than the noise of n_val images."""
    top = max(accs)
    p = min(max(top, 0.0), 1.0)
    margin = se_tolerance * math.sqrt(p * (1.0 - p) / max(int(n_val), 1))
    return next(i for i, a in enumerate(accs) if a >= top - margin)


def beta_grid_for(budget: float, grid: Iterable[float]) -> list[float]:
    """The valid part of a beta grid for ``budget``: betas with beta + budget <= 1, sorted and deduplicated.

    Negative or NaN betas raise; a grid with no valid beta raises ValueError naming the grid and the limit.
    """
    budget, _ = validate_budget_beta(budget, 0.0)
    values = [as_real("beta", b) for b in grid]
    if not values:
        raise ValueError("grid is empty: give at least one beta")
    bad = [b for b in values if not (b >= 0.0)]
    if bad:
        raise ValueError(f"grid={values} contains invalid beta(s) {bad}: every beta must be >= 0")
    valid = sorted({b for b in values if b + budget <= 1.0 + SUM_TOLERANCE})
    if not valid:
        raise ValueError(
            f"grid={values} has no beta with beta + budget <= 1 for budget={budget!r}: "
            f"beta may be at most {1.0 - budget:.6g}"
        )
    return valid


@dataclass
class BetaSearchResult:
    """Outcome of :func:`search_beta`: the whole beta -> validation-accuracy curve and the chosen beta."""

    best_beta: float
    betas: list[float]
    val_acc: list[float]
    at_edge: bool  # best is the largest valid beta of a grid with more than one entry
    train_idx: np.ndarray
    val_idx: np.ndarray
    budget: float = 0.0
    method: str = "double_end"
    coreset_sizes: list[int] = field(default_factory=list)


def search_beta(
    hardness: np.ndarray,
    budget: float,
    grid: Iterable[float],
    *,
    train_and_validate: Callable[[np.ndarray, np.ndarray], float],
    train_and_validate_many: Callable[[list[tuple[np.ndarray, np.ndarray]]], list[float]] | None = None,
    method: str = "double_end",
    holdout: Holdout = Holdout(),
    se_tolerance: float = 0.0,
    seed: int = 0,
    strata: int = 50,
) -> BetaSearchResult:
    """Pick beta by pseudo-label validation accuracy on a held-out split (paper's search, method.md §6.4).

    For each valid beta, selects with ``method`` from the train part (hardness restricted to it), maps the
    kept positions to global indices, and calls ``train_and_validate(kept_global, val_global)`` (disjoint
    index sets) which must return a finite accuracy. Highest accuracy wins, ties -> smaller beta. Warns when
    the winner is the largest valid beta (the monotonic-rise failure mode of poor pseudo-labels).
    ``train_and_validate_many``, when given, receives every candidate's (kept, val) at once instead (to train
    them concurrently) and returns their accuracies in the same order.
    """
    if method not in METHODS_USING_BETA:
        raise ValueError(f"method={method!r} has no beta to search; use one of {sorted(METHODS_USING_BETA)}")
    if not callable(train_and_validate):
        raise ValueError(f"train_and_validate={train_and_validate!r} is not callable")
    h = check_hardness(hardness)
    budget, _ = validate_budget_beta(budget, 0.0)
    betas = beta_grid_for(budget, grid)
    seed = validate_seed(seed)
    train_idx, val_idx = split_train_val(h.size, holdout.fraction, seed, holdout.minimum)
    h_train = h[train_idx]

    kept_sets = [
        train_idx[select(method, h_train, n=h_train.size, budget=budget, beta=beta, seed=seed, strata=strata)]
        for beta in betas
    ]
    if train_and_validate_many is not None:
        raw = list(train_and_validate_many([(kept, val_idx.copy()) for kept in kept_sets]))
        if len(raw) != len(betas):
            raise ValueError(f"train_and_validate_many returned {len(raw)} accuracies for {len(betas)} candidates")
    else:
        raw = [None] * len(betas)
    accs: list[float] = []
    sizes: list[int] = []
    for beta, kept_global, acc_raw in zip(betas, kept_sets, raw, strict=True):
        if train_and_validate_many is None:
            acc_raw = train_and_validate(kept_global, val_idx.copy())
        if (
            isinstance(acc_raw, (bool, np.bool_))
            or not isinstance(acc_raw, numbers.Real)
            or not math.isfinite(float(acc_raw))
        ):
            raise ValueError(f"train_and_validate returned {acc_raw!r} for beta={beta!r}; expected a finite number")
        accs.append(float(acc_raw))
        sizes.append(int(kept_global.size))
        log.info("beta search: method=%s budget=%g beta=%g -> val acc %.6g", method, budget, beta, accs[-1])

    best = pick_beta(accs, val_idx.size, se_tolerance)
    best_beta = betas[best]
    at_edge = len(betas) > 1 and best == len(betas) - 1
    if at_edge:
        curve = dict(zip(betas, accs, strict=True))
        limit = 1.0 - budget
        if best_beta + budget >= 1.0 - SUM_TOLERANCE:
            # the grid reaches as far as beta can go: nothing to change in it; the run's end lists this label-free
            # sign of weak pseudo-labels beside the others, with what to try (pipeline.warn_weak_labels)
            log.info("beta search: the curve rises to beta=%g = 1 - budget, the grid's limit: %s", best_beta, curve)
        else:
            warnings.warn(
                f"beta search picked the largest beta on the grid (beta={best_beta:g}, val acc {accs[best]:.4g}; "
                f"curve {curve}): validation accuracy may be rising monotonically with beta, the failure mode of "
                f"poor pseudo-labels; extend the grid towards beta={limit:g} (= 1 - budget) and inspect the whole "
                "curve",
                UserWarning,
                stacklevel=2,
            )
    return BetaSearchResult(
        best_beta=best_beta,
        betas=betas,
        val_acc=accs,
        at_edge=at_edge,
        train_idx=train_idx,
        val_idx=val_idx,
        budget=budget,
        method=method,
        coreset_sizes=sizes,
    )


__all__ = [
    "Holdout",
    "validation_size",
    "split_train_val",
    "pick_beta",
    "beta_grid_for",
    "search_beta",
    "BetaSearchResult",
]
