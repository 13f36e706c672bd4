"""What a practitioner acts on: the selection files of a run (elfs/handback/selection_report.py writes them)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from elfs.data import Dataset, image_ids, is_streamed

log = logging.getLogger(__name__)


def write_answer(
    run_dir: Path,
    ds: Dataset,
    method: str,
    scored: tuple[str, np.ndarray, np.ndarray] | None,
    groups: tuple[np.ndarray, int],
    kept_at: dict[float, np.ndarray],
    beta_at: dict[float, float | None],
    skipped: list,
    *,
    embeddings: np.ndarray | None = None,
    nested: bool = False,
    duplicates: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> list[Path]:
    """selection.csv (one row per image), the list to annotate per budget in priority order, a contact sheet, the
    score histogram with the cuts, per-cluster coverage, the exports, report.html and the skipped files, for a
    method that ranks by a score (``scored``: name, raw score, hardness); random and full rank nothing, so none.
    ``groups`` are the clusters (labels, count) the priority order and the coverage plot go round. ``duplicates``
    (near-duplicate group per image, each group's representative, the threshold) adds duplicates.csv and a section
    of report.html."""
    from elfs.handback.selection_report import write_selection_outputs

    ids = image_ids(ds.train)
    if is_streamed(ds.train):
        root = Path(ds.train.root).absolute()
        filepaths: list[str] | None = [str(root / p) for p in ids]

        def load(i: int) -> np.ndarray:
            return ds.train.load_rgb(i, 96)
    else:
        filepaths = None

        def load(i: int) -> np.ndarray:
            return ds.train.images[i]

    sections, out = [], []
    if duplicates is not None:
        from elfs.duplicates import duplicates_html, write_duplicates_csv
        from elfs.handback.report_html import thumbnail_uri

        dup, rep, threshold = duplicates
        names = filepaths if filepaths is not None else ids
        out.append(write_duplicates_csv(run_dir / "duplicates.csv", dup, rep, names))
        sections.append(duplicates_html(dup, rep, ids, lambda i: thumbnail_uri(load(i), i), threshold=threshold))
    if scored is None:
        log.info("selection.method=%s ranks nothing: no selection.csv / annotate lists are written", method)
        return out
    score_name, score, hardness = scored
    return out + write_selection_outputs(
        run_dir,
        ids=ids,
        pseudo_labels=groups[0],
        hardness=hardness,
        score_name=score_name,
        score=score,
        kept=kept_at,
        beta=beta_at,
        num_clusters=int(groups[1]),
        load_image=load,
        skipped=skipped,
        filepaths=filepaths,
        embeddings=embeddings,
        nested=nested,
        method=method,
        report_sections=sections,
    )
