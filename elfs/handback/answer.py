"""The answer of one selection run as one typed record: which images, by what score, kept at which budget and in
what order to label them. Checked and computed once (:class:`Answer`), then handed whole to selection.csv, the
annotate lists, the exports (exports.py) and report.html (report_html.py)."""

from __future__ import annotations

import numbers
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from elfs.handback.output_files import budget_tag
from elfs.select.ordering import check_hardness, easy_to_hard_order, validate_budget_beta

#: Methods whose coreset is chosen from the EASY end: their annotate lists start at the easiest kept image. Every other
#: method (double_end, ccs, hard, prototypicality, d2, ...) prefers hard examples, so its lists start at the hardest.
EASY_FIRST_METHODS = frozenset({"easy"})


@dataclass(frozen=True)
class NearCopies:
    """The near-copy groups of a run: each image's group (-1 = none), each image's group representative, and the
    cosine similarity above which two images are near-copies."""

    groups: np.ndarray
    representative: np.ndarray
    threshold: float


@dataclass
class Answer:
    """One run's answer for the labelling team. ``ids`` (one per image: a path relative to the folder, or ``#i``),
    ``filepaths`` (absolute; None for in-memory images), ``clusters`` (pseudo-label per image in
    [0, num_clusters)), the raw ``score`` named ``score_name`` and its ``hardness`` (higher = harder), ``kept``
    (budget -> kept indices) and ``beta`` (budget -> the beta used, or None), the selection ``method`` ("easy"
    orders its lists easiest first), whether the budgets are ``nested``, how many images were ``excluded`` as
    already labelled, the files ``skipped`` as unreadable, the ``embeddings`` to export and the ``near_copies``.

    Every input is checked when the record is made (plain ValueError naming the problem), before any file is
    written; budgets come out sorted ascending, and ``order`` holds each budget's kept images in priority order."""

    ids: Sequence[str]
    clusters: np.ndarray
    num_clusters: int
    score_name: str
    score: np.ndarray
    hardness: np.ndarray
    kept: Mapping[float, np.ndarray]
    beta: Mapping[float, float | None] = field(default_factory=dict)
    filepaths: Sequence[str] | None = None
    method: str | None = None
    nested: bool = False
    excluded: int = 0
    skipped: Sequence[tuple[str, str]] = ()
    embeddings: np.ndarray | None = None
    near_copies: NearCopies | None = None
    order: dict[float, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_clusters = _check_num_clusters(self.num_clusters)
        self.ids = _check_ids(self.ids)
        n = len(self.ids)
        self.hardness, self.score = _check_scores(self.hardness, self.score_name, self.score, n)
        self.clusters = _check_clusters(self.clusters, n, self.num_clusters)
        self.kept, self.beta = _check_kept(self.kept, self.beta, n)
        self.filepaths = _check_filepaths(self.filepaths, n)
        self.embeddings = _check_embeddings(self.embeddings, n)
        for j, row in enumerate(self.skipped):
            if len(row) != 2 or not all(isinstance(x, str) for x in row):
                raise ValueError(f"skipped[{j}]={row!r} must be a (path, reason) pair of strings")
        self.skipped = [tuple(row) for row in self.skipped]
        if self.method is not None and (not isinstance(self.method, str) or not self.method):
            raise ValueError(f"method={self.method!r} must be a non-empty string or None")
        self.nested = bool(self.nested)
        easy = self.easy_first
        self.order = {b: priority_order(self.clusters, self.hardness, k, easy_first=easy) for b, k in self.kept.items()}

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def easy_first(self) -> bool:
        """Whether the lists start at the easiest kept image (methods in :data:`EASY_FIRST_METHODS`)."""
        return self.method in EASY_FIRST_METHODS

    @property
    def shown(self) -> list[str]:
        """What a person opens for each image: its absolute path, or the id of an in-memory image."""
        return list(self.filepaths) if self.filepaths is not None else list(self.ids)


def hardness_ranks(hardness: np.ndarray) -> np.ndarray:
    """Rank per item, 1 = hardest: the selectors' easy-to-hard order reversed (equal hardness: higher index harder)."""
    h = check_hardness(hardness)
    order = easy_to_hard_order(h)
    rank = np.empty(h.size, dtype=np.int64)
    rank[order] = np.arange(h.size, 0, -1, dtype=np.int64)
    return rank


def priority_order(
    pseudo_labels: np.ndarray, hardness: np.ndarray, kept: np.ndarray, *, easy_first: bool = False
) -> np.ndarray:
    """The kept indices in annotation priority order: any prefix is spread over the clusters.

    Round robin over the clusters (``pseudo_labels`` groups) that have kept images, visited largest kept count
    first, ties by the smaller cluster id; each visit takes the cluster's next image in the method's own ranking:
    hardest first (hardness rank 1 = hardest, :func:`hardness_ranks`, so ties in hardness go to the higher index),
    or easiest first when ``easy_first`` (methods in :data:`EASY_FIRST_METHODS`). Pure and deterministic; returns
    a permutation of ``kept`` as int64.
    """
    pl = np.asarray(pseudo_labels, dtype=np.int64)
    k = np.asarray(kept, dtype=np.int64)
    if k.size == 0:
        return k.copy()
    rank = hardness_ranks(hardness)[k]  # 1 = hardest
    within = k[np.argsort(-rank if easy_first else rank, kind="stable")]  # the method's preference, best first
    labels = pl[within]
    clusters, counts = np.unique(labels, return_counts=True)
    visit = np.lexsort((clusters, -counts))  # largest kept count first, ties by cluster id
    visit_pos = np.empty(clusters.size, dtype=np.int64)
    visit_pos[visit] = np.arange(clusters.size)
    slot = np.searchsorted(clusters, labels)  # labels -> position in `clusters`
    # place of each image within its own cluster, in preference order (a stable sort by cluster keeps that order)
    by_cluster = np.argsort(slot, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    place = np.empty(within.size, dtype=np.int64)
    place[by_cluster] = np.arange(within.size) - np.repeat(starts, counts)
    return within[np.lexsort((visit_pos[slot], place))]  # round `place`, clusters in visit order within a round


def _check_num_clusters(num_clusters: Any) -> int:
    if isinstance(num_clusters, (bool, np.bool_)) or not isinstance(num_clusters, numbers.Integral):
        raise ValueError(f"num_clusters={num_clusters!r} must be a positive integer")
    if int(num_clusters) < 1:
        raise ValueError(f"num_clusters={num_clusters!r} must be a positive integer")
    return int(num_clusters)


def _check_ids(ids: Sequence[str]) -> list[str]:
    """At least one id, each a non-empty string without line breaks, all distinct."""
    ids = list(ids)
    if not ids:
        raise ValueError("ids is empty: need at least one image")
    for i, s in enumerate(ids):
        if not isinstance(s, str) or not s:
            raise ValueError(f"ids[{i}]={s!r} must be a non-empty string")
        if "\n" in s or "\r" in s:
            raise ValueError(f"ids[{i}]={s!r} contains a line break; annotate files list one id per line")
    if len(set(ids)) != len(ids):
        dup = next(s for s, count in Counter(ids).items() if count > 1)
        raise ValueError(f"ids must be unique (one per image); {dup!r} appears more than once")
    return ids


def _check_clusters(pseudo_labels: np.ndarray, n: int, num_clusters: int) -> np.ndarray:
    """One integer cluster id in [0, num_clusters) per image, as int64."""
    pl = np.asarray(pseudo_labels)
    if pl.ndim != 1 or pl.size != n:
        raise ValueError(f"pseudo_labels has shape {pl.shape} but there are {n} ids; it must be 1-D with {n} entries")
    if pl.dtype == np.bool_ or not np.issubdtype(pl.dtype, np.integer):
        raise ValueError(f"pseudo_labels must be integer cluster ids, got dtype {pl.dtype}")
    bad = (pl < 0) | (pl >= num_clusters)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"pseudo_labels has {int(bad.sum())} value(s) outside [0, num_clusters={num_clusters}) "
            f"(first at index {first}: {int(pl[first])})"
        )
    return pl.astype(np.int64)


def _check_scores(hardness: np.ndarray, score_name: str, score: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hardness and the raw score, one real number per image, and a one-line score name."""
    h = check_hardness(hardness, name="hardness")
    if h.size != n:
        raise ValueError(f"hardness has {h.size} entries but there are {n} ids; they must match")
    if not isinstance(score_name, str) or not score_name.strip():
        raise ValueError(f"score_name={score_name!r} must be a non-empty string")
    if "\n" in score_name or "\r" in score_name:
        raise ValueError(f"score_name={score_name!r} contains a line break")
    try:
        sc = np.asarray(score, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"score must be a 1-D array of real numbers, got {type(score).__name__}") from err
    if sc.ndim != 1 or sc.size != n:
        raise ValueError(f"score has shape {sc.shape} but there are {n} ids; it must be 1-D with {n} entries")
    return h, sc


def _check_kept(
    kept: Mapping[float, np.ndarray], beta: Mapping[float, float | None], n: int
) -> tuple[dict[float, np.ndarray], dict[float, float | None]]:
    """Budgets sorted ascending, each with sorted distinct indices in [0, n) and its beta (None: none used)."""
    if not kept:
        raise ValueError("kept is empty: give at least one budget -> kept indices")
    extra = set(beta) - set(kept)
    if extra:
        raise ValueError(f"beta has budget(s) {sorted(extra)} that are not in kept (budgets {sorted(kept)})")
    kept_out: dict[float, np.ndarray] = {}
    beta_out: dict[float, float | None] = {}
    tags: dict[str, float] = {}
    for b in sorted(kept):
        be = beta.get(b)
        bf, bef = validate_budget_beta(b, 0.0 if be is None else be)
        tag = budget_tag(bf)
        if tag in tags:
            raise ValueError(f"budgets {tags[tag]!r} and {b!r} both print as {tag!r}; column names would collide")
        tags[tag] = b
        kept_out[bf] = _check_indices(kept[b], b, n)
        beta_out[bf] = None if be is None else bef
    return kept_out, beta_out


def _check_indices(kept: np.ndarray, b: float, n: int) -> np.ndarray:
    """One budget's kept indices: 1-D integers in [0, n), distinct; returned sorted as int64."""
    k = np.asarray(kept)
    if k.ndim != 1:
        raise ValueError(f"kept[{b!r}] must be 1-D indices, got shape {k.shape}")
    if k.size and (k.dtype == np.bool_ or not np.issubdtype(k.dtype, np.integer)):
        raise ValueError(f"kept[{b!r}] must hold integer indices, got dtype {k.dtype}")
    k = np.sort(k.astype(np.int64))
    if k.size and (k[0] < 0 or k[-1] >= n):
        oob = k[(k < 0) | (k >= n)]
        raise ValueError(
            f"kept[{b!r}] has {oob.size} index(es) out of range [0, {n}) (e.g. {int(oob[0])}); "
            f"indices must refer to the {n} images"
        )
    if np.any(np.diff(k) == 0):
        raise ValueError(f"kept[{b!r}] has duplicate indices (e.g. {int(k[np.flatnonzero(np.diff(k) == 0)[0]])})")
    return k


def _check_filepaths(filepaths: Sequence[str] | None, n: int) -> list[str] | None:
    """None (an in-memory dataset), or ``n`` distinct absolute paths without line breaks (existence not required)."""
    if filepaths is None:
        return None
    if isinstance(filepaths, (str, os.PathLike)):
        raise ValueError("filepaths must be a list of paths (one per image), not a single path")
    fps = [os.fspath(p) if isinstance(p, os.PathLike) else p for p in filepaths]
    if len(fps) != n:
        raise ValueError(f"filepaths has {len(fps)} entries but there are {n} ids; they must match")
    for i, p in enumerate(fps):
        if not isinstance(p, str) or not p:
            raise ValueError(f"filepaths[{i}]={p!r} must be a non-empty string")
        if "\n" in p or "\r" in p:
            raise ValueError(f"filepaths[{i}]={p!r} contains a line break; annotate files list one path per line")
        if not os.path.isabs(p):
            raise ValueError(f"filepaths[{i}]={p!r} is not absolute; give absolute paths (e.g. root / id)")
    if len(set(fps)) != n:
        dup = next(s for s, count in Counter(fps).items() if count > 1)
        raise ValueError(f"filepaths must be unique (one per image); {dup!r} appears more than once")
    return fps


def _check_embeddings(embeddings: np.ndarray | None, n: int) -> np.ndarray | None:
    """None, or a 2-D real array with one row per image."""
    if embeddings is None:
        return None
    e = np.asanyarray(embeddings)  # a memory map stays one: embeddings.npy links to its file
    if e.ndim != 2 or e.shape[0] != n:
        raise ValueError(f"embeddings has shape {e.shape}; it must be 2-D with one row per image ({n} rows)")
    if e.dtype == np.bool_ or not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ValueError(f"embeddings must be real numbers, got dtype {e.dtype}")
    return e
