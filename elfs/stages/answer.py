"""What a practitioner acts on: the selection files of a run, written from one :class:`~elfs.handback.answer.Answer`
(elfs/handback/selection_report.py writes them)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from elfs.data import Dataset, image_ids, is_streamed
from elfs.handback.answer import Answer, NearCopies

log = logging.getLogger(__name__)


def answer_names(ds: Dataset) -> tuple[list[str], list[str] | None]:
    """Each training image's id (:func:`elfs.data.image_ids`) and absolute path (None for in-memory images)."""
    ids = image_ids(ds.train)
    if not is_streamed(ds.train):
        return ids, None
    root = Path(ds.train.root).absolute()
    return ids, [str(root / p) for p in ids]


def thumbnail_loader(ds: Dataset) -> Callable[[int], np.ndarray]:
    """Image i of the training set as the contact sheet and report.html show it."""
    if is_streamed(ds.train):
        return lambda i: ds.train.load_rgb(i, 96)
    return lambda i: ds.train.images[i]


def write_answer(
    run_dir: Path, ds: Dataset, method: str, answer: Answer | None, near_copies: NearCopies | None = None
) -> list[Path]:
    """selection.csv (one row per image), the list to annotate per budget in priority order, a contact sheet, the
    score histogram with the cuts, per-cluster coverage, the exports, report.html and the skipped files, for a
    method that ranks by a score (``answer``); random and full rank nothing (``answer`` None), so then only the
    near-copies (duplicates.csv) are written when there are any."""
    from elfs.handback.selection_report import near_copy_outputs, write_selection_outputs

    load = thumbnail_loader(ds)
    if answer is not None:
        return write_selection_outputs(run_dir, answer, load_image=load)
    log.info("selection.method=%s ranks nothing: no selection.csv / annotate lists are written", method)
    if near_copies is None:
        return []
    ids, filepaths = answer_names(ds)
    return near_copy_outputs(run_dir, near_copies, ids, filepaths or ids, load)[0]
