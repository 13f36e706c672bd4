"""Prototypicality baseline (Sorscher et al. 2022, as run by ELFS; method.md §8.2).

Score = Euclidean distance of each example to its own k-means centroid on the RAW embeddings; the selection keeps
the round(budget*N) farthest (most atypical = "hardest") examples, with no class balancing.
"""

from __future__ import annotations

import numbers
from typing import Literal, overload

import numpy as np

from elfs.select.monotonic import hardest
from elfs.select.ordering import validate_budget_beta, validate_seed


def _check_embeddings(embeddings: object) -> np.ndarray:
    try:
        x = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"embeddings must be a 2-D array of real numbers, got {type(embeddings).__name__}") from err
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array [N, D], got shape {x.shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(
            f"embeddings has {int(bad.sum())} non-finite value(s) (first in row {row}); embeddings must be finite"
        )
    return x


def _check_num_clusters(num_clusters: object, n: int) -> int:
    if isinstance(num_clusters, (bool, np.bool_)) or not isinstance(num_clusters, numbers.Integral):
        raise ValueError(f"num_clusters={num_clusters!r} must be an integer in [2, N={n}]")
    if not (2 <= int(num_clusters) <= n):
        raise ValueError(f"num_clusters={num_clusters!r} is outside [2, N={n}] (N = number of embeddings)")
    return int(num_clusters)


@overload
def prototypicality_distance(
    embeddings: np.ndarray,
    num_clusters: int,
    seed: int,
    *,
    return_labels: Literal[False] = ...,
    backend: str = ...,
) -> np.ndarray: ...
@overload
def prototypicality_distance(
    embeddings: np.ndarray, num_clusters: int, seed: int, *, return_labels: Literal[True], backend: str = ...
) -> tuple[np.ndarray, np.ndarray]: ...
def prototypicality_distance(
    embeddings: np.ndarray, num_clusters: int, seed: int, *, return_labels: bool = False, backend: str = "sklearn"
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Float64 [N] Euclidean distance of each example to its own centroid of k-means (n_init=10; scikit-learn, or
    torch on the GPU with ``backend="torch"``: elfs/method/kmeans.py).

    Runs on the raw embeddings (no normalisation), as ELFS's ``generate_importance_score.py`` does. Higher = harder.
    With ``return_labels`` also returns the int64 [N] cluster of each example.
    """
    from elfs.method.kmeans import kmeans  # local: keeps `import elfs.select` light

    x = _check_embeddings(embeddings)
    k = _check_num_clusters(num_clusters, x.shape[0])
    s = validate_seed(seed)
    labels, centres, _ = kmeans(x, k, s, n_init=10, backend=backend)
    dist = np.linalg.norm(x - centres[labels], axis=1)
    return (dist, labels) if return_labels else dist


def prototypicality_select(embeddings: np.ndarray, budget: float, *, num_clusters: int, seed: int) -> np.ndarray:
    """Keep the round(budget*N) examples farthest from their k-means centroid; return kept indices (sorted int64)."""
    validate_budget_beta(budget)  # fail before the (slow) k-means
    return hardest(prototypicality_distance(embeddings, num_clusters, seed), budget)


__all__ = ["prototypicality_distance", "prototypicality_select"]
