"""Which images to annotate, from a notebook or the shell: `select_images(...)` and the `elfs-select` command.

Both compose the packaged configs with `+experiment=folder_select` (embeddings -> kNN -> TEMI pseudo-labels ->
an MLP proxy's AUM -> double-end pruning with the label-free beta search) and run the same pipeline as `elfs`;
no label is used or needed. Every stage is cached, so asking again with another budget reruns only the
selection (seconds).

    from elfs.api import select_images
    sel = select_images("/data/photos", budget=[0.1, 0.2], num_clusters=20)
    sel.paths(0.1)          # the images to annotate at a 10 % budget
    sel.table[0]            # one row of selection.csv: id, pseudo_label, score, rank, kept_<budget>...
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elfs.errors import ConfigError


@dataclass
class Selection:
    """The answer of one selection run: ids (paths relative to the folder, or '#<index>'), the kept indices per
    budget, selection.csv's rows, the files skipped as unreadable, and the run folder with the plots."""

    run_dir: Path
    ids: list[str]
    kept: dict[float, np.ndarray]
    table: list[dict[str, str]] = field(repr=False)
    skipped: list[tuple[str, str]]
    results: dict = field(repr=False)

    def paths(self, budget: float) -> list[str]:
        """The ids to annotate at ``budget`` (in the folder's order)."""
        if budget not in self.kept:
            raise KeyError(f"budget {budget} was not run; run budgets: {sorted(self.kept)}")
        return [self.ids[i] for i in self.kept[budget].tolist()]


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


def compose_selection(
    images, *, budget: float | Sequence[float], num_clusters: int, out: Path, overrides: Sequence[str] = ()
) -> object:
    """The composed config of a label-free selection run writing into ``out``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs

    budgets = [float(budget)] if isinstance(budget, (int, float)) else [float(b) for b in budget]
    register_configs()
    base = [
        "+experiment=folder_select",
        f"selection.budget=[{','.join(f'{b:g}' for b in budgets)}]",
        f"cluster.num_clusters={int(num_clusters)}",
        "logger=none",
        f"paths.root_dir={_quote(Path.cwd())}",
        f"paths.output_dir={_quote(out)}",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="elfs.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*base, *_source_overrides(images, out / "input"), *overrides])
    GlobalHydra.instance().clear()
    return cfg


def select_images(
    images,
    *,
    budget: float | Sequence[float] = 0.1,
    num_clusters: int = 10,
    out: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> Selection:
    """Choose which images to annotate, without any label.

    ``images`` is a folder (nested, any common format), a .txt file listing image paths, a list of paths, or a
    uint8 array N x H x W (x C). ``budget`` is the fraction kept (one or several); ``num_clusters`` sizes the
    pseudo-labels (roughly the number of kinds of images you expect). ``overrides`` are any `elfs` config
    overrides, e.g. ``["backbone=dino_vits16", "paths.cache_dir=/scratch/elfs"]``. Bad input raises a
    :class:`~elfs.errors.UserError` naming the setting, before any work.
    """
    from elfs.train import run

    out = Path(out) if out is not None else _default_out()
    cfg = compose_selection(
        images,
        budget=budget,
        num_clusters=num_clusters,
        out=out.resolve(),
        overrides=[*overrides, f"progress={str(progress).lower()}"],
    )
    run(cfg)
    return load_selection(out)


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
    kept = {}
    for row in results["results"]:
        col = f"kept_{row['budget']:g}"
        kept[float(row["budget"])] = np.asarray([i for i, r in enumerate(table) if r[col] == "1"], dtype=np.int64)
    return Selection(run_dir=run_dir, ids=ids, kept=kept, table=table, skipped=skipped, results=results)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="elfs-select",
        description="Choose which images of a folder to annotate, without any label (ELFS). Writes selection.csv, "
        "annotate_<budget>.txt, a contact sheet and plots into the output folder.",
        epilog="Extra arguments are elfs config overrides, e.g. backbone=dino_vits16 paths.cache_dir=/scratch.",
    )
    p.add_argument("images", help="a folder of images (nested), or a .txt file listing image paths")
    p.add_argument("--budget", type=float, nargs="+", default=[0.1], help="fraction(s) of the images to keep")
    p.add_argument("--clusters", type=int, default=10, help="number of pseudo-label clusters (default 10)")
    p.add_argument("--out", default=None, help="output folder (default outputs/select/<date>_<time>)")
    p.add_argument("overrides", nargs="*", help="elfs config overrides (key=value)")
    return p.parse_intermixed_args(list(argv))


def cli(argv: Sequence[str] | None = None) -> None:
    """`elfs-select IMAGES [--budget B ...] [--clusters K] [--out DIR] [key=value ...]`."""
    from elfs.train import run_guarded

    args = _parse(sys.argv[1:] if argv is None else argv)

    def go() -> None:
        from elfs.train import run

        out = Path(args.out) if args.out else _default_out()
        cfg = compose_selection(
            args.images, budget=args.budget, num_clusters=args.clusters, out=out.resolve(), overrides=args.overrides
        )
        run(cfg)

    run_guarded(go)


if __name__ == "__main__":
    cli()
