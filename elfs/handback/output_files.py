"""Writing a run's answer files safely: atomic writes (a crash leaves the old file or none, never half of one),
the budget as it appears in file names, and checked thumbnails. Shared by selection_report, exports, report_html."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def budget_tag(budget: float) -> str:
    """The budget as it appears in column and file names: ``f"{budget:g}"`` (0.1 -> "0.1")."""
    return f"{budget:g}"


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` on a fresh temp file beside ``path``, then ``os.replace`` it into place.

    If ``write`` raises, the temp file is removed and any existing ``path`` is left untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: Path, fill: Callable[[IO[str]], None]) -> Path:
    """Write a text file atomically: ``fill(f)`` writes into a temp file that then replaces ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            fill(f)

    return atomic_write(path, write)


def thumbnail(img: object, index: int, size: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB thumbnail of ``load_image(index)``'s result (aspect kept, padded white), after
    checking it is a uint8 HxW or HxWx3/4 image (a ValueError naming the index otherwise)."""
    from PIL import Image, ImageOps

    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"load_image({index}) returned dtype {a.dtype}; expected a uint8 image")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"load_image({index}) returned shape {a.shape}; expected HxW or HxWx3 uint8")
    pil = Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
    pil = ImageOps.pad(pil, (size, size), method=Image.Resampling.BILINEAR, color=(255, 255, 255))
    return np.asarray(pil, dtype=np.uint8)
