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
``elfs.select.ordering.easy_to_hard_order``) reversed, so among equal hardness the HIGHER index ranks harder, and a
``double_end`` coreset is exactly one contiguous block of ranks.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from elfs.handback.answer import EASY_FIRST_METHODS, Answer, NearCopies, hardness_ranks, priority_order
from elfs.handback.output_files import atomic_write, budget_tag, thumbnail
from elfs.handback.output_files import write_text as _write_text
from elfs.select.ordering import easy_to_hard_order

log = logging.getLogger(__name__)

#: Thumbnail edge in pixels on the contact sheet.
THUMB = 64
#: Kept images shown per cluster row on the contact sheet.
PER_ROW = 8
#: Most cluster rows on the contact sheet; the title says when more clusters had kept images.
MAX_ROWS = 40


# ---------------------------------------------------------------------------------------------------------- writing


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


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
    answer: Answer,
    *,
    load_image: Callable[[int], np.ndarray] | None = None,
    sections: Sequence[str] = (),
) -> list[Path]:
    """Write selection.csv, annotate_<budget>.txt, skipped.csv, duplicates.csv (with near-copies), the PNGs, the
    exports and report.html into ``run_dir`` from one checked :class:`Answer`; return their paths
    (``selected_<budget>`` folders included). ``load_image(i)`` gives image i for the thumbnails (None: none);
    ``sections`` (HTML) are added at the end of report.html. Every file is written atomically."""
    from elfs.handback.exports import write_exports
    from elfs.handback.report_html import cluster_size_note, write_report_html

    note = cluster_size_note(answer.clusters, answer.num_clusters)
    if note is not None:  # also at the top of report.html
        log.warning("%s", note)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = [_write_selection_csv(run_dir / "selection.csv", answer)]
    out += _write_annotate_lists(run_dir, answer)
    out.append(_write_text(run_dir / "skipped.csv", lambda f: _fill_skipped(f, answer.skipped)))
    sections = list(sections)
    if answer.near_copies is not None:
        paths, section = near_copy_outputs(run_dir, answer.near_copies, answer.ids, answer.shown, load_image)
        out += paths
        sections.insert(0, section)
    a, kept = answer, answer.kept
    if load_image is not None:
        smallest = min(kept)
        sheet = run_dir / "contact_sheet.png"
        out.append(
            plot_contact_sheet(sheet, a.clusters, a.hardness, kept[smallest], smallest, a.num_clusters, load_image)
        )
    out.append(plot_score_histogram(run_dir / "score_histogram.png", a.hardness, a.score_name, kept, a.beta))
    out.append(plot_cluster_coverage(run_dir / "cluster_coverage.png", a.clusters, kept, a.num_clusters))
    out += write_exports(run_dir, answer)
    out.append(write_report_html(run_dir, answer, load_image=load_image, sections=sections))
    return out


def near_copy_outputs(
    run_dir: Path,
    near: NearCopies,
    ids: Sequence[str],
    names: Sequence[str],
    load_image: Callable[[int], np.ndarray] | None,
) -> tuple[list[Path], str]:
    """duplicates.csv (each group of near-copies, listed by ``names``) and report.html's section on them."""
    from elfs.handback.near_copies import duplicates_html, write_duplicates_csv
    from elfs.handback.report_html import thumbnail_uri

    csv_path = write_duplicates_csv(run_dir / "duplicates.csv", near.groups, near.representative, names)
    thumb = (lambda i: thumbnail_uri(load_image(i), i)) if load_image is not None else None
    return [csv_path], duplicates_html(near.groups, near.representative, ids, thumb, threshold=near.threshold)


def _write_selection_csv(path: Path, a: Answer) -> Path:
    """selection.csv: one row per image (see the module docstring)."""
    rank = hardness_ranks(a.hardness)
    prio = {b: priorities(o, a.n) for b, o in a.order.items()}
    masks = {}
    for b, k in a.kept.items():
        m = np.zeros(a.n, dtype=np.int8)
        m[k] = 1
        masks[b] = m

    def fill(f: IO[str]) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(
            ["index", "id", "filepath", "pseudo_label", "score_name", "score", "hardness", "rank"]
            + [f"kept_{budget_tag(b)}" for b in masks]
            + [f"priority_{budget_tag(b)}" for b in prio]
        )
        for i in range(a.n):
            w.writerow(
                [i, a.ids[i], "" if a.filepaths is None else a.filepaths[i], int(a.clusters[i]), a.score_name]
                + [_float_cell(a.score[i]), _float_cell(a.hardness[i]), int(rank[i])]
                + [int(m[i]) for m in masks.values()]
                + [int(p[i]) if p[i] else "" for p in prio.values()]
            )

    return _write_text(path, fill)


def _write_annotate_lists(run_dir: Path, a: Answer) -> list[Path]:
    """annotate_<budget>.txt in priority order; with nested budgets also what each adds (annotate_<budget>_new)."""
    out, shown = [], a.shown
    for b, o in a.order.items():
        lines = "".join(shown[int(i)] + "\n" for i in o)
        out.append(_write_text(run_dir / f"annotate_{budget_tag(b)}.txt", lambda f, s=lines: f.write(s)))
    if a.nested:  # sets that grow: what each budget adds to the one before, in its priority order
        ordered = sorted(a.order)
        for small, b in zip(ordered, ordered[1:], strict=False):
            before = set(a.kept[small].tolist())
            lines = "".join(shown[int(i)] + "\n" for i in a.order[b] if int(i) not in before)
            out.append(_write_text(run_dir / f"annotate_{budget_tag(b)}_new.txt", lambda f, s=lines: f.write(s)))
    return out


def _fill_skipped(f: IO[str], skipped: Sequence[tuple[str, str]]) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["path", "reason"])
    w.writerows([list(row) for row in skipped])


__all__ = [
    "EASY_FIRST_METHODS",
    "Answer",
    "NearCopies",
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
