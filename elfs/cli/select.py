"""The `elfs-select` command: `elfs-select IMAGES [--budget B ...] [--clusters K] [--out DIR] [key=value ...]` parsed
into the selection :mod:`elfs.api` composes and :func:`elfs.run.run` runs; a mistake is one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from elfs.api import (
    _BUDGET_VALID,
    _INTEGER,
    METHODS,
    _budget_value,
    _count_images,
    _default_out,
    _growth_overrides,
    _to_fractions,
    compose_selection,
)
from elfs.errors import ConfigError, DataError, UserError

#: a Hydra override, wherever it stands on the command line: [+|++|~]key=value, or ~key (delete a key)
_OVERRIDE = re.compile(r"(\+\+|\+|~)?[A-Za-z_][\w.\-@/]*=.*|~[A-Za-z_][\w.\-@/]*", re.DOTALL)
#: a token that continues the values after --budget: a number, or numbers joined by commas
_BUDGET_MORE = re.compile(r"[+-]?\.?\d[\d.,eE+\-]*")
_VALUE_OPTIONS = ("--out", "--clusters")
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
    from elfs.infra.version import package_version

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

    from elfs.cli.main import run_guarded

    def go() -> None:
        from elfs.run import run

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
