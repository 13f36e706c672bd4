"""What every selector shares: how a budget and beta become subset sizes, how a score becomes the easy-to-hard order
(ties by index), and the checks of those inputs.

Conventions (design.md "Explicit semantics"): ``budget`` is the fraction of the dataset KEPT, in (0, 1];
``beta`` is the fraction of the WHOLE dataset dropped as too hard, with 0 <= beta and beta + budget <= 1.
Hardness arrays are 1-D, higher = harder; ties are broken by index (the order is the stable sort of
(hardness, index)).
"""

from __future__ import annotations

import numbers

import numpy as np

#: Slack for float noise in ``beta + budget <= 1`` (e.g. 0.30000000000000004 + 0.7 from ``np.arange``).
SUM_TOLERANCE = 1e-9

HARD_ENDS = ("low", "high")


def as_real(name: str, value: object) -> float:
    """Return ``value`` as a Python float, or raise ValueError naming it if it is not a real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r} is not a real number")
    return float(value)


def validate_budget_beta(budget: float, beta: float = 0.0) -> tuple[float, float]:
    """Check 0 < budget <= 1, beta >= 0 and beta + budget <= 1; return them as floats.

    Raises ValueError whose message names the bad values and the valid range.
    """
    b = as_real("budget", budget)
    if not (0.0 < b <= 1.0):  # also catches NaN
        raise ValueError(f"budget={b!r} is outside (0, 1]: budget is the fraction of the dataset kept")
    be = as_real("beta", beta)
    if not (be >= 0.0):  # also catches NaN
        raise ValueError(f"beta={be!r} is outside [0, 1 - budget] = [0, {1.0 - b:.6g}]: beta must be >= 0")
    if be + b > 1.0 + SUM_TOLERANCE:
        raise ValueError(
            f"beta={be!r} + budget={b!r} = {be + b:.6g} > 1: beta may be at most {1.0 - b:.6g} for this budget"
        )
    return b, be


def validate_n(n: object) -> int:
    """Check that the dataset size ``n`` is a positive integer and return it as int."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise ValueError(f"n={n!r} must be a positive integer (the dataset size)")
    return int(n)


def validate_seed(seed: object) -> int:
    """Check that ``seed`` is a non-negative integer (numpy Generator seed) and return it as int."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return int(seed)


def subset_sizes(n: int, budget: float, beta: float = 0.0) -> tuple[int, int]:
    """Return ``(n_keep, n_hard)`` for a dataset of size ``n``.

    n_keep = max(1, round(budget*n)) is always honoured; n_hard = round(beta*n), lowered if rounding would
    make n_hard + n_keep exceed n (e.g. n=5, budget=0.7, beta=0.3 rounds to 4 + 2 = 6 > 5).
    """
    n = validate_n(n)
    budget, beta = validate_budget_beta(budget, beta)
    n_keep = min(n, max(1, int(round(budget * n))))
    n_hard = min(int(round(beta * n)), n - n_keep)
    return n_keep, n_hard


def check_hardness(hardness: object, *, name: str = "hardness", finite: bool = False) -> np.ndarray:
    """Return ``hardness`` as a 1-D non-empty float64 array; NaN (and, if ``finite``, +-inf) raises ValueError."""
    try:
        h = np.asarray(hardness, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D array of real numbers, got {type(hardness).__name__}") from err
    if h.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per example), got shape {h.shape}")
    if h.size == 0:
        raise ValueError(f"{name} is empty: need at least one example")
    bad = np.isnan(h) if not finite else ~np.isfinite(h)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        kind = "NaN" if not finite else "non-finite"
        raise ValueError(
            f"{name} has {int(bad.sum())} {kind} value(s) (first at index {first}: {float(h[first])!r}); "
            f"scores must be {'finite' if finite else 'non-NaN'}"
        )
    return h


def to_hardness(score: np.ndarray, hard_end: str) -> np.ndarray:
    """Convert a score to hardness (higher = harder) given which end of the score is hard.

    ``hard_end="low"`` (AUM: low margin = hard) negates; ``"high"`` (forgetting, EL2N) keeps the values.
    """
    if hard_end not in HARD_ENDS:
        raise ValueError(f"hard_end={hard_end!r} is not one of {HARD_ENDS}")
    s = check_hardness(score, name="score")
    return -s if hard_end == "low" else s.copy()


def easy_to_hard_order(hardness: np.ndarray) -> np.ndarray:
    """Indices sorted from easiest to hardest: ascending (hardness, index), a strict total order."""
    return np.argsort(hardness, kind="stable").astype(np.int64, copy=False)


def as_kept(indices: np.ndarray) -> np.ndarray:
    """Return kept indices in the canonical form: sorted np.int64."""
    return np.sort(np.asarray(indices, dtype=np.int64))


__all__ = [
    "SUM_TOLERANCE",
    "as_real",
    "HARD_ENDS",
    "validate_budget_beta",
    "validate_n",
    "validate_seed",
    "subset_sizes",
    "check_hardness",
    "to_hardness",
    "easy_to_hard_order",
    "as_kept",
]
