"""Selecting one coreset: cheap, so not cached, but saved in the run folder (coresets.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elfs.cache import Artifact
from elfs.config import SelectionConfig


def hardness_of(dyn: Artifact, score: str) -> np.ndarray:
    """The chosen score turned into 'higher = harder' by its declared hard end."""
    from elfs.infra.names import HARD_END
    from elfs.select import to_hardness

    return to_hardness(dyn[score], HARD_END[score])


def select_coreset(
    s: SelectionConfig,
    method: str,
    hardness: np.ndarray | None,
    embeddings: np.ndarray | None,
    n: int,
    budget: float,
    beta: float,
    seed: int,
    *,
    contains: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Kept indices (sorted int64) of ``method`` at ``budget``: ``hardness`` (higher = harder) is what it ranks by
    (None for random and full), ``embeddings`` the raw features D2 builds its graphs over (None for the others).
    ``contains``: an earlier budget's coreset this one must hold (nested budgets). ``candidates``: the images that
    may be chosen (the others are already labelled); the budget and beta still count in images of the whole set,
    so ``budget`` asks for round(budget * n) new images."""
    if candidates is not None:
        return _among(s, method, hardness, embeddings, n, budget, beta, seed, contains, candidates)
    return _select(s, method, hardness, embeddings, n, budget, beta, seed, contains)


def _among(s, method, hardness, embeddings, n, budget, beta, seed, contains, candidates) -> np.ndarray:
    """select_coreset restricted to ``candidates``, with the counts of the whole set turned into fractions of them."""
    from elfs.errors import DataError

    m = len(candidates)
    want, hard = round(budget * n), round(beta * n)
    if want > m:
        raise DataError(
            f"budget {budget:g} asks for {want} new images, but only {m} of the {n} can be chosen (the others are in "
            "selection.exclude, or near-copies of another image: selection.dedup, elfs-select --keep-duplicates)"
        )
    sub_budget = want / m
    sub_beta = min(hard / m, 1.0 - sub_budget)
    pos = np.full(n, -1, dtype=np.int64)
    pos[candidates] = np.arange(m)
    inner = None if contains is None else pos[contains]
    part = select_coreset(
        s,
        method,
        None if hardness is None else hardness[candidates],
        None if embeddings is None else embeddings[candidates],
        m,
        sub_budget,
        sub_beta,
        seed,
        contains=inner,
    )
    return np.sort(candidates[part]).astype(np.int64)


def _select(s, method, hardness, embeddings, n, budget, beta, seed, contains) -> np.ndarray:
    from elfs.select import select
    from elfs.select.d2 import d2_select
    from elfs.select.double_end import double_end

    if contains is not None and method == "double_end":
        return double_end(hardness, budget, beta, contains=contains)
    if method == "full":
        kept = np.arange(n, dtype=np.int64)
    elif method == "d2":
        kept = d2_select(
            hardness,
            embeddings,
            budget,
            s.d2_beta_at(budget),
            mode=s.d2_mode,
            strata=s.d2_strata,
            gamma=s.d2_gamma,
            k=s.d2_k,
            seed=seed,
        )
    elif method in ("prototypicality", "zcore"):  # the farthest from their centroid; ZCore's highest scores
        kept = select("hard", hardness, n=n, budget=budget, seed=seed)
    else:
        kept = select(method, hardness, n=n, budget=budget, beta=beta, seed=seed, strata=s.strata)
    return kept


def read_exclude(path: str) -> list[str]:
    """The entries of a selection.exclude file: one image a line (a path, absolute or relative to the folder, or an
    id such as ``#12`` for in-memory images); blank lines and lines starting with '#' followed by a space skipped."""
    from elfs.errors import ConfigError

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"selection.exclude={path!r} is not a file; give a text file of labelled images, one a line")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("# ")]


def exclude_indices(entries: list[str], ids: list[str], root: Path | None) -> np.ndarray:
    """Indices of the images ``entries`` name, matched by id (relative path or ``#i``) or by absolute path under
    ``root``; an entry that names no image is refused, with the first few listed."""
    from elfs.errors import DataError

    index = {name: i for i, name in enumerate(ids)}
    if root is not None:
        base = root.absolute()
        index.update({str(base / name): i for i, name in enumerate(ids)})
    found, unknown = [], []
    for entry in entries:
        i = index.get(entry, index.get(str(Path(entry).expanduser().absolute()) if root is not None else entry))
        (found if i is not None else unknown).append(entry if i is None else i)
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DataError(
            f"selection.exclude names {len(unknown)} image(s) that are not in the data: "
            f"{', '.join(map(str, unknown[:3]))}{more}; give paths (absolute or relative to the folder) or ids"
        )
    return np.unique(np.asarray(found, dtype=np.int64))
