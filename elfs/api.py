"""Which images to annotate, from Python: `select_images(...)` (the `elfs-select` command, elfs/cli/select.py, parses
its command line into the same call).

Both compose the packaged configs with `experiment=folder_select` (embeddings -> kNN -> TEMI pseudo-labels ->
an MLP proxy's AUM -> double-end pruning with the label-free beta search) and run the same pipeline as `elfs`;
no label is used or needed. Every stage is cached, so asking again with another budget reruns only the
selection (seconds).

    from elfs.api import select_images
    sel = select_images("/data/photos", budget=[0.1, 0.2], num_clusters=20)
    sel.paths(0.1)          # the images to annotate at a 10 % budget
    sel.table[0]            # one row of selection.csv: id, pseudo_label, score, rank, kept_<budget>...
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elfs.errors import ConfigError, DataError


@dataclass
class Selection:
    """The answer of one selection run: ids (paths relative to the folder, or '#<index>'), the absolute file paths
    (None for in-memory images), the kept indices per budget, selection.csv's rows, the files skipped as
    unreadable, and the run folder with the plots, the exports and report.html."""

    run_dir: Path
    ids: list[str]
    kept: dict[float, np.ndarray]
    table: list[dict[str, str]] = field(repr=False)
    skipped: list[tuple[str, str]]
    results: dict = field(repr=False)
    filepaths: list[str] | None = field(default=None, repr=False)
    order: dict[float, np.ndarray] = field(default_factory=dict, repr=False)

    def _kept(self, budget: float) -> np.ndarray:
        if budget not in self.kept:
            raise KeyError(f"budget {budget} was not run; run budgets: {sorted(self.kept)}")
        return self.kept[budget]

    def paths(self, budget: float, *, by_priority: bool = False) -> list[str]:
        """The images to annotate at ``budget``: absolute paths (the ids '#<index>' for in-memory images).

        In the folder's order, or with ``by_priority=True`` in annotate_<budget>.txt's priority order (round robin
        over the clusters, so any prefix covers them all)."""
        idx = self.priority(budget) if by_priority else self._kept(budget)
        names = self.filepaths if self.filepaths is not None else self.ids
        return [names[i] for i in idx.tolist()]

    def priority(self, budget: float) -> np.ndarray:
        """The kept indices at ``budget`` in priority order (selection.csv's ``priority_<budget>``)."""
        kept = self._kept(budget)
        return self.order.get(budget, kept)


def _source_overrides(images, work: Path) -> list[str]:
    """Dataset overrides for a folder / .txt list, a list of image paths, or an in-memory uint8 array."""
    if isinstance(images, (str, os.PathLike)):
        return [f"dataset.path={_quote(Path(images).expanduser().resolve())}"]
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ConfigError(
                f"images: an array must be uint8 N x H x W (x C), got {images.dtype} with shape {images.shape}"
            )
        work.mkdir(parents=True, exist_ok=True)
        np.savez(work / "images.npz", x_train=images)  # no y_train: a label-free source
        return ["dataset=npz", f"dataset.path={_quote(work / 'images.npz')}", "dataset.hflip=true"]
    paths = [str(Path(p).expanduser().resolve()) for p in images]
    if not paths:
        raise ConfigError("images: the list of image paths is empty")
    work.mkdir(parents=True, exist_ok=True)
    (work / "images.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
    return [f"dataset.path={_quote(work / 'images.txt')}"]


def _quote(p: Path) -> str:
    """A path as a Hydra override value (quoted, so spaces, commas and '=' survive)."""
    return "'" + str(p).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default_out() -> Path:
    """outputs/select/<date>_<time> under the current directory."""
    return Path("outputs") / "select" / time.strftime("%Y-%m-%d_%H-%M-%S")


#: what elfs-select --method names -> the selection config it runs (conf/selection/)
METHODS = {"elfs": [], "zcore": ["selection=zcore"]}


def compose_selection(
    images,
    *,
    budget: float | Sequence[float],
    num_clusters: int,
    out: Path,
    overrides: Sequence[str] = (),
    method: str = "elfs",
) -> object:
    """The composed config of a label-free selection run by ``method`` (elfs or zcore) writing into ``out``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs
    from elfs.infra.overrides import user_overrides

    budgets = [float(budget)] if isinstance(budget, (int, float)) else [float(b) for b in budget]
    register_configs()
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not valid; choose one of {sorted(METHODS)}")
    base = [
        *METHODS[method],
        "experiment=folder_select",
        f"selection.budget=[{','.join(repr(b) for b in budgets)}]",  # full precision: a count / N stays exact
        f"cluster.num_clusters={int(num_clusters)}",
        "logger=none",
        f"paths.root_dir={_quote(Path.cwd())}",
        f"paths.output_dir={_quote(out)}",
        *_default_encoder(overrides),
    ]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="elfs.conf", version_base="1.3"):
        cfg = compose(
            "config", overrides=user_overrides([*base, *_source_overrides(images, out / "input"), *overrides])
        )
    GlobalHydra.instance().clear()
    return cfg


#: overrides that choose the encoder themselves: then elfs-select does not pick one
_ENCODER_KEYS = {"backbone", "backbone.name", "backbone.model", "backbone.weights", "backbone.pretrained"}


def _default_encoder(overrides: Sequence[str]) -> list[str]:
    """The best encoder whose weights are already on this machine (method.backbones.choose_encoder), unless the user
    chose one; prints one line saying which (and, on the EfficientNet-Lite0 fallback, how to get a better one)."""
    from elfs.infra.overrides import override_key
    from elfs.method.backbones import choose_encoder, local_encoder

    if any(override_key(o) in _ENCODER_KEYS for o in overrides):
        return []
    chosen, line = choose_encoder(local_encoder)
    print(line, file=sys.stderr)
    return chosen


def select_images(
    images,
    *,
    budget: float | int | Sequence[float | int] = 0.1,
    num_clusters: int = 10,
    out: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    nested: bool = False,
    exclude: str | os.PathLike | None = None,
    method: str = "elfs",
    keep_duplicates: bool = False,
) -> Selection:
    """Choose which images to annotate, without any label.

    ``images`` is a folder (nested, any common format), a .txt file listing image paths, a list of paths, or a
    uint8 array N x H x W (x C). ``budget`` is the fraction kept or a whole number of images >= 2 (one or several;
    a count becomes count / number of images); ``num_clusters`` sizes the pseudo-labels (roughly the number of
    kinds of images you expect). ``nested``: each larger budget's images include the smaller one's. ``exclude``: a
    file of images already labelled (one path a line), never proposed again (nor their near-copies).
    ``method``: "elfs" (pseudo-labels and a proxy's training dynamics) or "zcore" (ZCore's scores of the
    embeddings alone: no training, ``num_clusters`` unused). ``keep_duplicates``: propose near-copies of one
    picture too (by default only one image of each group of near-copies can be chosen; the others are listed in
    duplicates.csv). ``overrides`` are any `elfs` config
    overrides, e.g.
    ``["backbone=dino_vits16", "paths.cache_dir=/scratch/elfs"]``. Bad input raises a
    :class:`~elfs.errors.UserError` naming the setting, before any work.
    """
    from elfs.run import run

    if not isinstance(images, (str, os.PathLike, np.ndarray)):
        images = list(images)  # counted for an image-count budget, then listed
    budget = _api_fractions(budget, images)
    out = Path(out) if out is not None else _default_out()
    cfg = compose_selection(
        images,
        budget=budget,
        num_clusters=num_clusters,
        out=out.resolve(),
        overrides=[
            *overrides,
            *_growth_overrides(nested, exclude, keep_duplicates),
            f"progress={str(progress).lower()}",
        ],
        method=method,
    )
    run(cfg)
    return load_selection(out)


def _growth_overrides(nested: bool, exclude: str | os.PathLike | None, keep_duplicates: bool = False) -> list[str]:
    """The overrides of --nested, --exclude FILE (the file's absolute path: the run may start elsewhere) and
    --keep-duplicates."""
    out = ["selection.nested=true"] if nested else []
    if keep_duplicates:
        out.append("selection.dedup=false")
    if exclude is not None:
        out.append(f"selection.exclude={_quote(Path(exclude).expanduser().resolve())}")
    return out


def load_selection(run_dir: str | os.PathLike) -> Selection:
    """Read a finished selection run folder back (results.json, selection.csv, skipped.csv)."""
    import json

    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    with open(run_dir / "selection.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    with open(run_dir / "skipped.csv", newline="", encoding="utf-8") as f:
        skipped = [(r["path"], r["reason"]) for r in csv.DictReader(f)]
    ids = [r["id"] for r in table]
    # runs written before the filepath column have ids relative to the folder: no absolute paths to give
    filepaths = [r["filepath"] for r in table] if table and all(r.get("filepath") for r in table) else None
    kept, order = {}, {}
    for row in results["results"]:
        tag = f"{row['budget']:g}"
        b = float(row["budget"])
        kept[b] = np.asarray([i for i, r in enumerate(table) if r[f"kept_{tag}"] == "1"], dtype=np.int64)
        if table and f"priority_{tag}" in table[0]:
            prio = np.asarray([int(table[i][f"priority_{tag}"]) for i in kept[b].tolist()], dtype=np.int64)
            order[b] = kept[b][np.argsort(prio, kind="stable")]
    return Selection(
        run_dir=run_dir,
        ids=ids,
        kept=kept,
        table=table,
        skipped=skipped,
        results=results,
        filepaths=filepaths,
        order=order,
    )


_INTEGER = re.compile(r"[+-]?\d+")
_BUDGET_VALID = "give a fraction in (0, 1] of the images to keep (e.g. 0.1) or a whole number of images >= 2 (e.g. 500)"


def _budget_value(text: str) -> float | int:
    """One budget as written: a fraction in (0, 1] (float; '1' is 1.0) or a whole image count >= 2 (int)."""
    s = text.strip()
    try:
        value = int(s) if _INTEGER.fullmatch(s) else float(s)
    except ValueError:
        raise ValueError(f"{text!r} is not a number; {_BUDGET_VALID}") from None
    return _budget_kind(value, text)


def _budget_kind(value: object, shown: str) -> float | int:
    """``value`` as a fraction (float) or an image count (int >= 2); ValueError naming ``shown`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{shown} is not a number; {_BUDGET_VALID}")
    if value <= 0:
        raise ValueError(f"{shown} is not positive; {_BUDGET_VALID}")
    if isinstance(value, numbers.Integral):
        return int(value) if value >= 2 else 1.0
    if value <= 1:
        return float(value)
    raise ValueError(f"{shown} is above 1 but not a whole number (a count has no decimal point); {_BUDGET_VALID}")


def _to_fractions(values: Sequence[float | int], n: int, source: object) -> tuple[list[float], str | None]:
    """Budgets as sorted unique fractions (an image count c becomes c / n), and a note on the counts converted."""
    counts = [v for v in values if isinstance(v, int)]
    if counts and n < 1:
        raise DataError(f"{source} holds no image, so an image count cannot be a budget")
    if counts and max(counts) > n:
        raise DataError(
            f"budget {max(counts)} is more images than the {n:,} in {source}; "
            f"give at most {n:,} or a fraction in (0, 1]"
        )
    fractions = sorted({v / n if isinstance(v, int) else float(v) for v in values})
    note = ", ".join(f"{c} = {c / n:.4g}" for c in counts) + f" of {n:,} images" if counts else None
    return fractions, note


def _count_images(images: object) -> int:
    """How many images the pipeline will see: image files in a folder / .txt list or a list of paths, array rows."""
    from elfs.data.folder import IMAGE_EXTENSIONS, scan_folder

    if isinstance(images, (str, os.PathLike)):
        return len(scan_folder(images)[0])
    if isinstance(images, np.ndarray):
        return int(images.shape[0])
    paths = [Path(p).expanduser() for p in images]
    return sum(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in paths)


def _api_fractions(budget: object, images: object) -> list[float]:
    """select_images' ``budget`` (fractions and/or image counts) as sorted unique fractions."""
    values = [budget] if isinstance(budget, (str, numbers.Real)) else list(budget)
    try:
        parsed = [_budget_value(v) if isinstance(v, str) else _budget_kind(v, repr(v)) for v in values]
    except ValueError as e:
        raise ConfigError(f"budget: {e}") from None
    if not parsed:
        raise ConfigError(f"budget is empty; {_BUDGET_VALID}")
    n = _count_images(images) if any(isinstance(v, int) for v in parsed) else 0
    return _to_fractions(parsed, n, "the images given")[0]
