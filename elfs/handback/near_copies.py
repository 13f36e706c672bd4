"""The near-copies in the hand-back: duplicates.csv (each copy left out of the pool, with its group's
representative) and report.html's section on them, from the groups elfs/method/duplicates.py finds."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from elfs.handback.output_files import atomic_write

__all__ = ["duplicates_html", "write_duplicates_csv"]


def write_duplicates_csv(path: Path, groups: np.ndarray, rep: np.ndarray, names: Sequence[str]) -> Path:
    """duplicates.csv: one row per near-copy left out of the pool (group, path, representative), by group."""
    import csv

    def fill(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["group", "path", "representative"])
            for i in np.argsort(groups, kind="stable").tolist():
                g = int(groups[i])
                if g >= 0 and i != rep[g]:
                    w.writerow([g, names[i], names[int(rep[g])]])

    return atomic_write(Path(path), fill)


def duplicates_html(
    groups: np.ndarray,
    rep: np.ndarray,
    names: Sequence[str],
    thumb: Callable[[int], str] | None,
    *,
    threshold: float,
    shown: int = 30,
    members_shown: int = 12,
) -> str:
    """report.html's section on near-duplicates: each of the first ``shown`` groups as a row, its representative
    first and at most ``members_shown`` images (with ``thumb``, a function giving an image's data: URI, as
    thumbnails; without, as names): the report stays small however large a group is."""
    esc = html.escape
    n_groups = int(len(rep))
    n_dups = int((np.asarray(groups) >= 0).sum()) - n_groups
    out = [
        f"<h2>Near-duplicates: {n_groups:,} group(s), {n_dups:,} copies never proposed</h2>",
        f"<p class='note'>Images whose pixels match (thumbnail cosine similarity &ge; {threshold:g}, or higher once a "
        "slightly cropped copy is aligned) form a group; "
        "only the first image of each row (the one the method ranks best) can be proposed. The full list is "
        "<a href='duplicates.csv'>duplicates.csv</a>; <code>--keep-duplicates</code> turns this off.</p>",
    ]
    for g in range(min(n_groups, shown)):
        members = [int(rep[g]), *[int(i) for i in np.flatnonzero(groups == g) if i != rep[g]]]
        out.append(f"<div class='cluster'><div class='head'><b>group {g}</b> — {len(members)} images</div>")
        more = len(members) - members_shown
        members = members[:members_shown]
        if thumb is not None:
            out.append("<div class='thumbs'>")
            for j, i in enumerate(members):
                label = esc(Path(names[i]).name) + (" (kept in the pool)" if j == 0 else "")
                out.append(f"<figure title='{esc(names[i])}'><img src='{thumb(i)}' alt='{label}'>")
                out.append(f"<figcaption>{label}</figcaption></figure>")
            out.append("</div>")
        else:
            out.append("<ol class='names'>" + "".join(f"<li>{esc(names[i])}</li>" for i in members) + "</ol>")
        if more > 0:
            out.append(f"<p class='note'>{more:,} more image(s) of this group in duplicates.csv.</p>")
        out.append("</div>")
    if n_groups > shown:
        out.append(f"<p class='note'>{n_groups - shown:,} more group(s) in duplicates.csv.</p>")
    return "".join(out)
