"""Which images to annotate, from a notebook or the shell: `select_images(...)` and the `elfs-select` command.

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

import argparse
import csv
import math
import numbers
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from elfs.errors import ConfigError, DataError, UserError


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
    from elfs.overrides import user_overrides

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
    """The best encoder whose weights are already on this machine (elfs.backbones.choose_encoder), unless the user
    chose one; prints one line saying which (and, on the EfficientNet-Lite0 fallback, how to get a better one)."""
    from elfs.backbones import choose_encoder, local_encoder
    from elfs.overrides import override_key

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
    from elfs.train import run

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


#: a Hydra override, wherever it stands on the command line: [+|++|~]key=value, or ~key (delete a key)
_OVERRIDE = re.compile(r"(\+\+|\+|~)?[A-Za-z_][\w.\-@/]*=.*|~[A-Za-z_][\w.\-@/]*", re.DOTALL)
#: a token that continues the values after --budget: a number, or numbers joined by commas
_BUDGET_MORE = re.compile(r"[+-]?\.?\d[\d.,eE+\-]*")
_INTEGER = re.compile(r"[+-]?\d+")
_VALUE_OPTIONS = ("--out", "--clusters")
_BUDGET_VALID = "give a fraction in (0, 1] of the images to keep (e.g. 0.1) or a whole number of images >= 2 (e.g. 500)"
_EXAMPLES = """\
config overrides (key=value, +key=value, ++key=value, ~key, group=option) may stand anywhere on the line.

examples:
  elfs-select /data/photos --budget 0.1 0.2 --clusters 20 --out picks
  elfs-select /data/photos --budget 0.05,0.1 --budget 500      # fractions kept, or image counts
  elfs-select /data/photos --budget 0.1 --method zcore         # ZCore: embeddings only, no training
  elfs-select list.txt --budget 0.1 backbone=dino_vits16 paths.cache_dir=/scratch/elfs
  elfs-select backbone=dino_vits16 /data/photos --budget 0.1   # an override before the folder
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line, `elfs-select: error: ...`, with exit code 2."""

    def error(self, message: str) -> NoReturn:
        """One line naming the bad value and what is valid (instead of usage + error)."""
        _fail(_with_hint(message))


def _fail(message: str) -> NoReturn:
    """Print ``message`` as one line `elfs-select: error: ...` on stderr and exit with code 2."""
    print("elfs-select: error: " + " ".join(message.splitlines()), file=sys.stderr)
    raise SystemExit(2)


def _with_hint(message: str) -> str:
    """An argparse message completed with what would be valid."""
    if "unrecognized arguments" in message:
        return (
            f"{message} (expected one folder or .txt list of images, the options --budget, --clusters, --out, and "
            "config overrides such as key=value, +key=value or ~key; see elfs-select --help)"
        )
    if "the following arguments are required" in message:
        return "no images given; name a folder of images or a .txt file listing image paths (elfs-select /data/photos)"
    if "expected one argument" in message:
        return f"{message} (see elfs-select --help)"
    return message


def _is_override(token: str) -> bool:
    """Whether a command-line token is a Hydra override (and not the name of an existing file or folder)."""
    return _OVERRIDE.fullmatch(token) is not None and not os.path.exists(token)


def _budget_tokens(tokens: list[str], i: int, option: str) -> tuple[list[str], int]:
    """The values of one --budget starting at ``tokens[i]`` (space separated), and the index after them."""
    values = [option.partition("=")[2]] if "=" in option else []
    if not values and i < len(tokens) and (not tokens[i].startswith("-") or _BUDGET_MORE.fullmatch(tokens[i])):
        values, i = [tokens[i]], i + 1
    while values and i < len(tokens) and _BUDGET_MORE.fullmatch(tokens[i]) and not os.path.exists(tokens[i]):
        values, i = [*values, tokens[i]], i + 1
    return values, i


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """argparse's tokens (each --budget's values joined into one) and the Hydra overrides, found anywhere."""
    tokens, rest, tail, overrides = list(argv), [], [], []
    i, options_done = 0, False
    while i < len(tokens):
        tok, i = tokens[i], i + 1
        if options_done or not tok.startswith("-") or _BUDGET_MORE.fullmatch(tok):
            (overrides if _is_override(tok) else tail if options_done else rest).append(tok)
        elif tok == "--":
            options_done = True
        elif tok in _VALUE_OPTIONS and i < len(tokens) and not tokens[i].startswith("--"):
            rest, i = [*rest, tok, tokens[i]], i + 1
        elif tok == "--budget" or tok.startswith("--budget="):
            values, i = _budget_tokens(tokens, i, tok)
            rest.append("--budget=" + ",".join(values) if values else "--budget")
        else:
            rest.append(tok)
    return rest + (["--", *tail] if tail else []), overrides


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


def _budget_arg(text: str) -> list[float | int]:
    """argparse type of --budget: comma-separated budgets."""
    pieces = [s for s in text.split(",") if s.strip()]
    if not pieces:
        raise argparse.ArgumentTypeError(f"expected a value; {_BUDGET_VALID}")
    try:
        return [_budget_value(s) for s in pieces]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _clusters_arg(text: str) -> int:
    """argparse type of --clusters: a whole number >= 2."""
    if not _INTEGER.fullmatch(text.strip()) or int(text) < 2:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number >= 2; give the number of pseudo-label clusters, e.g. --clusters 20"
        )
    return int(text)


def _sorted_unique(values: Iterable[float | int]) -> list[float | int]:
    """Budgets without duplicates: the fractions ascending, then the image counts ascending."""
    return sorted(set(values), key=lambda v: (isinstance(v, int), v))


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


def _holds_an_image(root: Path) -> bool:
    """Whether a folder holds an image file, nested or not (hidden files and folders ignored, as when listing)."""
    from elfs.data.folder import IMAGE_EXTENSIONS

    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in filenames):
            return True
    return False


def _lists_a_path(list_file: Path) -> bool:
    """Whether a .txt list names at least one path (blank lines and '#' comments ignored)."""
    with open(list_file, encoding="utf-8", errors="replace") as f:
        return any(line.strip() and not line.strip().startswith("#") for line in f)


def _check_input(images: str) -> None:
    """Refuse a missing path, a folder without images or an empty .txt list (cheap; before torch is imported)."""
    from elfs.data.folder import IMAGE_EXTENSIONS

    p, valid = Path(images).expanduser(), "give a folder of images or a .txt file listing image paths"
    if not p.exists():
        raise DataError(f"{images!r} does not exist; {valid}")
    if p.is_file() and p.suffix.lower() != ".txt":
        raise DataError(f"{images!r} is a file but not a .txt list; {valid}")
    try:
        if p.is_file() and not _lists_a_path(p):
            raise DataError(f"{images!r} lists no image path (one path per line; blank and '#' lines are ignored)")
    except OSError as e:
        raise DataError(f"{images!r} cannot be read ({e.strerror}); {valid}") from None
    if p.is_dir() and not _holds_an_image(p):
        raise DataError(f"{images!r} holds no image file ({', '.join(IMAGE_EXTENSIONS)}), in sub-folders or not")


def _parser() -> argparse.ArgumentParser:
    """The argparse parser of elfs-select (overrides are taken out before it sees the line)."""
    from elfs.version import package_version

    p = _Parser(
        prog="elfs-select",
        usage="%(prog)s IMAGES [--budget B [B ...]] [--clusters K] [--method {elfs,zcore}] [--nested] "
        "[--exclude FILE] [--keep-duplicates] [--out DIR] [key=value ...]",
        description="Choose which images of a folder to annotate, without any label (ELFS).\n"
        "Writes selection.csv, annotate_<budget>.txt, a contact sheet and plots into the output folder.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("images", metavar="IMAGES", help="a folder of images (nested), or a .txt file listing image paths")
    p.add_argument(
        "--budget",
        metavar="B",
        type=_budget_arg,
        action="append",
        help="what to keep: fractions in (0, 1] and/or image counts (whole numbers >= 2); several as --budget 0.1 0.3, "
        "--budget 0.1,0.3 or --budget 0.1 --budget 0.3 (default 0.1)",
    )
    p.add_argument("--clusters", metavar="K", type=_clusters_arg, default=10, help="pseudo-label clusters (default 10)")
    p.add_argument(
        "--method",
        choices=sorted(METHODS),
        default="elfs",
        help="elfs: pseudo-labels and a proxy's training dynamics (default); zcore: ZCore's coverage and redundancy "
        "scores of the embeddings alone, no training (--clusters unused)",
    )
    p.add_argument(
        "--nested", action="store_true", help="sets that grow: each larger budget's images include the smaller one's"
    )
    p.add_argument(
        "--exclude",
        metavar="FILE",
        default=None,
        help="images already labelled (one path a line, e.g. an earlier annotate list): never proposed again; "
        "budgets count new images",
    )
    p.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="propose near-copies of one picture too (by default each group of near-copies offers one image; "
        "the others are listed in duplicates.csv)",
    )
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default outputs/select/<date>_<time>)")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    return p


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as images, budget (sorted fractions), clusters, out, overrides; a mistake exits 2."""
    rest, overrides = _split_argv(argv)
    args = _parser().parse_args(rest)
    args.overrides = overrides
    values = _sorted_unique(v for given in (args.budget or [[0.1]]) for v in given)
    try:
        _check_input(args.images)
        if args.exclude is not None and not Path(args.exclude).expanduser().is_file():
            raise ConfigError(f"--exclude {args.exclude!r} is not a file; give a text file of labelled images")
        n = _count_images(args.images) if any(isinstance(v, int) for v in values) else 0
        args.budget, note = _to_fractions(values, n, repr(args.images))
    except UserError as e:
        _fail(str(e))
    if note:
        print(f"elfs-select: --budget {note}", file=sys.stderr)
    return args


def cli(argv: Sequence[str] | None = None) -> None:
    """`elfs-select IMAGES [--budget B ...] [--clusters K] [--out DIR] [key=value ...]`."""
    args = _parse(sys.argv[1:] if argv is None else argv)  # before torch: a typo'd path answers at once

    from elfs.train import run_guarded

    def go() -> None:
        from elfs.train import run

        out = Path(args.out) if args.out else _default_out()
        extra = _growth_overrides(args.nested, args.exclude, args.keep_duplicates)
        cfg = compose_selection(
            args.images,
            budget=args.budget,
            num_clusters=args.clusters,
            out=out.resolve(),
            overrides=args.overrides + extra,
            method=args.method,
        )
        run(cfg)

    run_guarded(go)


if __name__ == "__main__":
    cli()
