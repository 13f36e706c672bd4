"""What a label-free run on a folder of unlabeled images hands back: which images to label, and why.

:func:`write_selection_outputs` writes into the run folder, every file atomically (temp name, then ``os.replace``):

* ``selection.csv`` - one row per image: index, id, ``filepath`` (absolute; empty for an in-memory dataset),
  pseudo-label, ``score_name`` and the raw ``score`` (fixed column names, whatever the score), hardness, hardness
  rank, a 0/1 ``kept_<budget>`` column per budget and a ``priority_<budget>`` column per budget (1-based place in
  that budget's annotate list, empty when not kept);
* ``annotate_<budget>.txt`` - the kept images in PRIORITY order (see :func:`priority_order`), one per line: absolute
  paths when they are known, else the ids. Stopping after any prefix still covers the clusters evenly;
* ``skipped.csv`` - the files that could not be read (always written, possibly header only);
* ``contact_sheet.png`` - kept thumbnails, one row per pseudo-label cluster (only with ``load_image``);
* ``score_histogram.png`` - the hardness distribution with each budget's cuts;
* ``cluster_coverage.png`` - each cluster's share of the whole set vs of each coreset;
* the exports of :mod:`exports` (selection.json, Label Studio / CVAT / FiftyOne files, ``selected_<budget>/``
  symlinks, embeddings) and ``report.html`` (:mod:`report_html`), the page to open first.

Rank 1 is the hardest image. Ranks follow the selectors' total order (ascending (hardness, index), see
``elfs.select.validate.easy_to_hard_order``) reversed, so among equal hardness the HIGHER index ranks harder, and a
``double_end`` coreset is exactly one contiguous block of ranks.
"""

from __future__ import annotations

import csv
import logging
import numbers
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from elfs.handback.output_files import atomic_write, budget_tag, thumbnail
from elfs.handback.output_files import write_text as _write_text
from elfs.select.validate import check_hardness, easy_to_hard_order, validate_budget_beta

log = logging.getLogger(__name__)

#: Thumbnail edge in pixels on the contact sheet.
THUMB = 64
#: Kept images shown per cluster row on the contact sheet.
PER_ROW = 8
#: Most cluster rows on the contact sheet; the title says when more clusters had kept images.
MAX_ROWS = 40

#: Methods whose coreset is chosen from the EASY end: their annotate lists start at the easiest kept image. Every other
#: method (double_end, ccs, hard, prototypicality, d2, ...) prefers hard examples, so its lists start at the hardest.
EASY_FIRST_METHODS = frozenset({"easy"})


# ---------------------------------------------------------------------------------------------------------- checks


def _check_inputs(
    ids: Sequence[str],
    pseudo_labels: np.ndarray,
    hardness: np.ndarray,
    score_name: str,
    score: np.ndarray,
    kept: Mapping[float, np.ndarray],
    beta: Mapping[float, float | None],
    num_clusters: int,
    skipped: Sequence[tuple[str, str]],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[float, np.ndarray], dict[float, float | None]]:
    """Validate everything before any file is written; return normalised copies (budgets sorted ascending)."""
    if isinstance(num_clusters, (bool, np.bool_)) or not isinstance(num_clusters, numbers.Integral):
        raise ValueError(f"num_clusters={num_clusters!r} must be a positive integer")
    if int(num_clusters) < 1:
        raise ValueError(f"num_clusters={num_clusters!r} must be a positive integer")
    num_clusters = int(num_clusters)

    ids = list(ids)
    n = len(ids)
    if n == 0:
        raise ValueError("ids is empty: need at least one image")
    for i, s in enumerate(ids):
        if not isinstance(s, str) or not s:
            raise ValueError(f"ids[{i}]={s!r} must be a non-empty string")
        if "\n" in s or "\r" in s:
            raise ValueError(f"ids[{i}]={s!r} contains a line break; annotate files list one id per line")
    if len(set(ids)) != n:
        dup = next(s for s, count in Counter(ids).items() if count > 1)
        raise ValueError(f"ids must be unique (one per image); {dup!r} appears more than once")

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
    pl = pl.astype(np.int64)

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
        k = np.asarray(kept[b])
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
        kept_out[bf] = k
        beta_out[bf] = None if be is None else bef

    for j, row in enumerate(skipped):
        if len(row) != 2 or not all(isinstance(x, str) for x in row):
            raise ValueError(f"skipped[{j}]={row!r} must be a (path, reason) pair of strings")
    return ids, pl, h, sc, kept_out, beta_out


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
    e = np.asarray(embeddings)
    if e.ndim != 2 or e.shape[0] != n:
        raise ValueError(f"embeddings has shape {e.shape}; it must be 2-D with one row per image ({n} rows)")
    if e.dtype == np.bool_ or not (np.issubdtype(e.dtype, np.floating) or np.issubdtype(e.dtype, np.integer)):
        raise ValueError(f"embeddings must be real numbers, got dtype {e.dtype}")
    return e


# ---------------------------------------------------------------------------------------------------------- writing


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


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


def priorities(order: np.ndarray, n: int) -> np.ndarray:
    """1-based priority per image (0 where not kept) from :func:`priority_order`'s output."""
    p = np.zeros(n, dtype=np.int64)
    p[np.asarray(order, dtype=np.int64)] = np.arange(1, len(order) + 1)
    return p


def _float_cell(x: float) -> str:
    return repr(float(x))  # shortest text that reads back to the same float


# ---------------------------------------------------------------------------------------------------------- cuts


def budget_cuts(
    hardness: np.ndarray, kept: np.ndarray, beta: float | None
) -> tuple[float | None, int, float | None, int]:
    """``(beta_cut, n_hard, easy_cut, n_easy)`` for one budget, as hardness thresholds between sorted neighbours.

    The beta cut separates the ``round(beta*N)`` hardest (at most ``N - len(kept)``) from the rest; the easy-end
    cut separates the ``n_easy`` images easier than every kept one from the kept set. A cut is None when nothing
    was dropped on that side (or beta is None).
    """
    n = hardness.size
    order = easy_to_hard_order(hardness)
    hs = hardness[order]
    beta_cut, n_hard = None, 0
    if beta is not None:
        n_hard = min(int(round(beta * n)), n - kept.size)
        if n_hard > 0:
            beta_cut = float((hs[n - n_hard - 1] + hs[n - n_hard]) / 2)
    easy_cut, n_easy = None, 0
    if kept.size:
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n)
        n_easy = int(pos[kept].min())
        if n_easy > 0:
            easy_cut = float((hs[n_easy - 1] + hs[n_easy]) / 2)
    return beta_cut, n_hard, easy_cut, n_easy


# ---------------------------------------------------------------------------------------------------------- plots


def _pyplot():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def contact_sheet_rows(
    pseudo_labels: np.ndarray, hardness: np.ndarray, kept: np.ndarray, num_clusters: int
) -> tuple[list[tuple[int, np.ndarray, int, int]], int]:
    """The contact sheet's rows and how many clusters had kept images.

    Each row is ``(cluster, shown indices, n_kept, n_total)`` for a cluster with at least one kept image, in
    cluster order, capped at :data:`MAX_ROWS`; the shown images are up to :data:`PER_ROW` of the cluster's kept
    ones spread evenly from easiest to hardest (ties by index), so the pick is deterministic.
    """
    totals = np.bincount(pseudo_labels, minlength=num_clusters)
    kl = pseudo_labels[kept]
    counts = np.bincount(kl, minlength=num_clusters)
    present = np.flatnonzero(counts)
    rows = []
    for c in present[:MAX_ROWS]:
        members = kept[kl == c]
        members = members[easy_to_hard_order(hardness[members])]
        m = members.size
        pick = members if m <= PER_ROW else members[np.round(np.linspace(0, m - 1, PER_ROW)).astype(np.int64)]
        rows.append((int(c), pick, int(counts[c]), int(totals[c])))
    return rows, int(present.size)


def plot_contact_sheet(
    path: Path,
    pseudo_labels: np.ndarray,
    hardness: np.ndarray,
    kept: np.ndarray,
    budget: float,
    num_clusters: int,
    load_image: Callable[[int], np.ndarray],
) -> Path:
    """A grid of kept thumbnails: one row per cluster (easiest left, hardest right), labelled kept/total."""
    plt = _pyplot()
    rows, n_present = contact_sheet_rows(pseudo_labels, hardness, kept, num_clusters)
    gap = 4
    cell = THUMB + gap
    n_rows = max(1, len(rows))
    sheet = np.full((n_rows * cell + gap, PER_ROW * cell + gap, 3), 255, dtype=np.uint8)
    for r, (_, pick, _, _) in enumerate(rows):
        for j, i in enumerate(pick):
            y, x = gap + r * cell, gap + j * cell
            sheet[y : y + THUMB, x : x + THUMB] = thumbnail(load_image(int(i)), int(i), THUMB)
    # ~1 figure pixel per sheet pixel at dpi 100, plus room for the labels and title
    fig, ax = plt.subplots(figsize=(sheet.shape[1] / 100 + 1.6, sheet.shape[0] / 100 + 0.8))
    ax.imshow(sheet, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([gap + r * cell + THUMB / 2 for r in range(len(rows))])
    ax.set_yticklabels([f"cluster {c}\n{k}/{t} kept" for c, _, k, t in rows], fontsize=7)
    ax.tick_params(axis="y", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    title = f"kept images at budget {budget_tag(budget)}, up to {PER_ROW} per cluster (easy → hard)"
    if not rows:
        title = f"no kept images at budget {budget_tag(budget)}"
    elif n_present > len(rows):
        title += f"\nshowing the first {len(rows)} of {n_present} clusters with kept images"
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_score_histogram(
    path: Path,
    hardness: np.ndarray,
    score_name: str,
    kept: Mapping[float, np.ndarray],
    beta: Mapping[float, float | None],
) -> Path:
    """Histogram of hardness over all images with each budget's beta cut (dashed) and easy-end cut (dotted)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    finite = hardness[np.isfinite(hardness)]
    bins = int(min(60, max(10, np.sqrt(max(finite.size, 1)))))
    ax.hist(finite, bins=bins, color="0.7", edgecolor="0.5", label=f"all images (N={hardness.size})")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (b, k) in enumerate(kept.items()):
        color = colors[j % len(colors)]
        beta_cut, n_hard, easy_cut, n_easy = budget_cuts(hardness, k, beta.get(b))
        tag = budget_tag(b)
        if beta_cut is not None and np.isfinite(beta_cut):
            ax.axvline(
                beta_cut,
                color=color,
                ls="--",
                label=f"budget {tag}: β={beta[b]:g} cut (drop {n_hard} hardest)",
            )
        if easy_cut is not None and np.isfinite(easy_cut):
            ax.axvline(easy_cut, color=color, ls=":", label=f"budget {tag}: easy-end cut (drop {n_easy} easiest)")
    ax.set_xlabel(f"hardness from {score_name} (higher = harder)")
    ax.set_ylabel("images")
    ax.set_title(f"{score_name} hardness (higher = harder) and the selection cuts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_cluster_coverage(
    path: Path, pseudo_labels: np.ndarray, kept: Mapping[float, np.ndarray], num_clusters: int
) -> Path:
    """Per cluster: share of the whole set (bars) vs share of each budget's coreset (markers)."""
    plt = _pyplot()
    c = np.arange(num_clusters)
    whole = np.bincount(pseudo_labels, minlength=num_clusters) / pseudo_labels.size
    width = float(min(24.0, max(6.0, 0.22 * num_clusters + 2)))
    fig, ax = plt.subplots(figsize=(width, 4))
    ax.bar(c, 100 * whole, color="0.8", edgecolor="0.5", label="whole set")
    markers = "osD^v<>ph*"
    for j, (b, k) in enumerate(kept.items()):
        share = np.bincount(pseudo_labels[k], minlength=num_clusters) / max(k.size, 1)
        ax.plot(c, 100 * share, ls="none", marker=markers[j % len(markers)], ms=5, label=f"coreset, budget {b:g}")
    step = max(1, int(np.ceil(num_clusters / 40)))
    ax.set_xticks(c[::step])
    ax.set_xlim(-0.6, num_clusters - 0.4)
    ax.set_xlabel("pseudo-label cluster")
    ax.set_ylabel("share of images (%)")
    ax.set_title("cluster coverage\n(a marker below its bar = cluster under-represented in the coreset)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------- entry


def write_selection_outputs(
    run_dir: Path,
    *,
    ids: Sequence[str],
    pseudo_labels: np.ndarray,
    hardness: np.ndarray,
    score_name: str,
    score: np.ndarray,
    kept: Mapping[float, np.ndarray],
    beta: Mapping[float, float | None],
    num_clusters: int,
    load_image: Callable[[int], np.ndarray] | None,
    skipped: Sequence[tuple[str, str]] = (),
    filepaths: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    nested: bool = False,
    method: str | None = None,
    report_sections: Sequence[str] = (),
) -> list[Path]:
    """Write selection.csv, annotate_<budget>.txt, skipped.csv, the PNGs, the exports and report.html into
    ``run_dir``; return their paths (``selected_<budget>`` folders included).

    ``ids`` has one id per image; ``pseudo_labels`` are cluster ids in [0, num_clusters); ``hardness`` is higher =
    harder; ``score`` is the raw score named ``score_name``; ``kept`` maps budget -> kept indices and ``beta`` maps
    budget -> the beta used (or None; a missing budget counts as None). ``filepaths`` are the images' absolute paths
    (None for an in-memory dataset: the lists then hold the ids ``#i``); ``embeddings`` (N x D) are saved as
    embeddings.npy with embeddings_ids.txt; ``nested`` (the coresets of the budgets are nested) and ``method`` (the
    selection method; "easy" orders its lists easiest first, any other hardest first) are recorded in
    selection.json; ``report_sections`` (HTML) are added at the end of report.html. Inputs are checked before
    anything is written (plain ValueError naming the problem); every file is written atomically.
    """
    from elfs.handback.exports import write_exports
    from elfs.handback.report_html import cluster_size_note, write_report_html

    ids, pl, h, sc, kept_s, beta_s = _check_inputs(
        ids, pseudo_labels, hardness, score_name, score, kept, beta, num_clusters, skipped
    )
    n = len(ids)
    fps = _check_filepaths(filepaths, n)
    emb = _check_embeddings(embeddings, n)
    if method is not None and (not isinstance(method, str) or not method):
        raise ValueError(f"method={method!r} must be a non-empty string or None")
    num_clusters = int(num_clusters)
    note = cluster_size_note(pl, num_clusters)
    if note is not None:  # also at the top of report.html
        log.warning("%s", note)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = hardness_ranks(h)
    easy_first = method in EASY_FIRST_METHODS
    order = {b: priority_order(pl, h, k, easy_first=easy_first) for b, k in kept_s.items()}
    prio = {b: priorities(o, n) for b, o in order.items()}
    masks = {}
    for b, k in kept_s.items():
        m = np.zeros(n, dtype=np.int8)
        m[k] = 1
        masks[b] = m
    shown = fps if fps is not None else ids  # what a person opens: absolute paths, or the ids of in-memory images
    out: list[Path] = []

    def fill_selection(f: IO[str]) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            ["index", "id", "filepath", "pseudo_label", "score_name", "score", "hardness", "rank"]
            + [f"kept_{budget_tag(b)}" for b in masks]
            + [f"priority_{budget_tag(b)}" for b in prio]
        )
        for i in range(n):
            w.writerow(
                [i, ids[i], "" if fps is None else fps[i], int(pl[i]), score_name]
                + [_float_cell(sc[i]), _float_cell(h[i]), int(rank[i])]
                + [int(m[i]) for m in masks.values()]
                + [int(p[i]) if p[i] else "" for p in prio.values()]
            )

    out.append(_write_text(run_dir / "selection.csv", fill_selection))

    for b, o in order.items():
        lines = "".join(shown[int(i)] + "\n" for i in o)
        out.append(_write_text(run_dir / f"annotate_{budget_tag(b)}.txt", lambda f, s=lines: f.write(s)))
    if nested:  # sets that grow: what each budget adds to the one before, in its priority order
        ordered = sorted(order)
        for small, b in zip(ordered, ordered[1:], strict=False):
            before = set(kept_s[small].tolist())
            lines = "".join(shown[int(i)] + "\n" for i in order[b] if int(i) not in before)
            out.append(_write_text(run_dir / f"annotate_{budget_tag(b)}_new.txt", lambda f, s=lines: f.write(s)))

    def fill_skipped(f: IO[str]) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "reason"])
        w.writerows([list(row) for row in skipped])

    out.append(_write_text(run_dir / "skipped.csv", fill_skipped))

    if load_image is not None:
        smallest = min(kept_s)
        out.append(
            plot_contact_sheet(
                run_dir / "contact_sheet.png", pl, h, kept_s[smallest], smallest, num_clusters, load_image
            )
        )
    out.append(plot_score_histogram(run_dir / "score_histogram.png", h, score_name, kept_s, beta_s))
    out.append(plot_cluster_coverage(run_dir / "cluster_coverage.png", pl, kept_s, num_clusters))
    out += write_exports(
        run_dir,
        ids=ids,
        filepaths=fps,
        pseudo_labels=pl,
        order=order,
        beta=beta_s,
        score_name=score_name,
        method=method,
        nested=bool(nested),
        embeddings=emb,
    )
    out.append(
        write_report_html(
            run_dir,
            ids=ids,
            filepaths=fps,
            pseudo_labels=pl,
            order=order,
            beta=beta_s,
            score_name=score_name,
            method=method,
            num_clusters=num_clusters,
            n_skipped=len(skipped),
            load_image=load_image,
            sections=report_sections,
        )
    )
    return out


__all__ = [
    "EASY_FIRST_METHODS",
    "MAX_ROWS",
    "PER_ROW",
    "THUMB",
    "atomic_write",
    "budget_cuts",
    "budget_tag",
    "contact_sheet_rows",
    "hardness_ranks",
    "plot_cluster_coverage",
    "plot_contact_sheet",
    "plot_score_histogram",
    "priorities",
    "priority_order",
    "write_selection_outputs",
]
